//! The state directory (`docs/state-directory.md`): its layout, petrel's own records
//! (provenance, known CA certificates), the run records of running tenders, and the
//! start-up reconciliation that makes a crash of petrel harmless.
//!
//! Every file is replaced atomically ([`crate::store::write_atomic`]); directories are
//! mode 0700 and files 0600; every name becomes a file name only through
//! [`Name::file_name`].
//!
//! **Crashes.** Tenders are started with `PR_SET_PDEATHSIG` and die with petrel. Should
//! one survive anyway, its run record (`run/<file>.json`: pid, the process's start time
//! from `/proc/<pid>/stat`, the image path, the taps) lets the next start identify it
//! (pid, start time *and* image path on its command line must match, so a recycled pid is
//! never killed) and kill it before anything is restored: tenders of a crashed instance
//! are stopped and restarted from the state file, never adopted, so no unikernel ever runs
//! twice. Their taps are removed, `tmp/` is emptied, and images no state entry refers to
//! are deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chain::{CertId, ChainLink};
use crate::executor::net::{InterfaceName, NetError, Network};
use crate::executor::tender::Pid;
use crate::name::{Name, NameError, Path as NamePath};
use crate::store::{self, StoreError};

/// The state file (albatross's format, `spec/wire.md` §11).
pub const STATE_FILE: &str = "state";
/// The copy of the state file taken at every start.
pub const STATE_STARTED_FILE: &str = "state.started";
/// petrel's own records (provenance, CA certificates).
pub const RECORDS_FILE: &str = "records";
/// Unikernel images, uncompressed, `<file>.img`.
pub const IMAGES_DIR: &str = "images";
/// Block device files.
pub const BLOCK_DIR: &str = "block";
/// Run records of running tenders, `<file>.json`.
pub const RUN_DIR: &str = "run";
/// Temporary files of streams in progress (emptied at start-up).
pub const TMP_DIR: &str = "tmp";
/// Operator CRLs (PEM or DER), read at start-up and on SIGHUP; petrel never writes
/// here.
pub const CRLS_DIR: &str = "crls";
/// Uploaded CRLs, `<issuer key hex>.crl` (DER), one per issuer.
pub const REVOCATION_DIR: &str = "revocation";
/// The audit log, written by the server.
pub const AUDIT_LOG: &str = "audit.log";
/// The lock file: one executor per state directory.
pub const LOCK_FILE: &str = "lock";

/// Mode of every directory petrel creates: only its owner may look inside.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file petrel writes.
pub const FILE_MODE: u32 = 0o600;

/// Format version of the records file's JSON body.
pub const RECORDS_VERSION: u32 = 1;

/// Largest state file read. petrel's own holds configurations only (a few hundred
/// octets per unikernel), but an imported albatross file embeds every image: 2 GiB holds
/// about a hundred typical compressed images and bounds what a damaged file can make us
/// allocate.
pub const MAX_STATE_SIZE: u64 = 2 * 1024 * 1024 * 1024;

/// Largest run record read (it holds a name, a pid, a path and a few tap names).
pub const MAX_RUN_RECORD_SIZE: u64 = 64 * 1024;

/// How long start-up waits for a leftover tender to die after SIGKILL (the kernel
/// tears a process down in milliseconds; a process stuck in uninterruptible I/O may
/// take longer, and then start-up refuses to go on rather than run it twice).
pub const LEFTOVER_KILL_WAIT: Duration = Duration::from_secs(10);

/// How long start-up waits for the state directory's lock. A process that has just died
/// can hold it for a moment longer through a child that was between `fork` and `exec`
/// (the child shares the lock until `exec` closes it or `PR_SET_PDEATHSIG` kills it);
/// a live executor holds it for good, and then start-up fails after this wait.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Interval at which the lock is tried again while start-up waits for it.
const LOCK_POLL: Duration = Duration::from_millis(20);

/// Interval at which a leftover's `/proc` entry is polled while it dies.
const KILL_POLL: Duration = Duration::from_millis(10);

/// The state directory and the paths in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Creates the directory and its sub-directories (mode 0700, also correcting the
    /// mode of existing ones).
    pub fn create(&self) -> Result<(), StoreError> {
        store::ensure_dir(&self.root, DIR_MODE)?;
        for dir in [
            IMAGES_DIR,
            BLOCK_DIR,
            RUN_DIR,
            TMP_DIR,
            CRLS_DIR,
            REVOCATION_DIR,
        ] {
            store::ensure_dir(&self.root.join(dir), DIR_MODE)?;
        }
        Ok(())
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `state`.
    pub fn state_file(&self) -> PathBuf {
        self.root.join(STATE_FILE)
    }

    /// `state.started`.
    pub fn state_started_file(&self) -> PathBuf {
        self.root.join(STATE_STARTED_FILE)
    }

    /// `records`.
    pub fn records_file(&self) -> PathBuf {
        self.root.join(RECORDS_FILE)
    }

    /// `images/`.
    pub fn images(&self) -> PathBuf {
        self.root.join(IMAGES_DIR)
    }

    /// `block/`.
    pub fn block(&self) -> PathBuf {
        self.root.join(BLOCK_DIR)
    }

    /// `run/`.
    pub fn run(&self) -> PathBuf {
        self.root.join(RUN_DIR)
    }

    /// `tmp/`.
    pub fn tmp(&self) -> PathBuf {
        self.root.join(TMP_DIR)
    }

    /// `crls/`: the operator's CRL files.
    pub fn crls(&self) -> PathBuf {
        self.root.join(CRLS_DIR)
    }

    /// `revocation/`: uploaded CRLs.
    pub fn revocation(&self) -> PathBuf {
        self.root.join(REVOCATION_DIR)
    }

    /// `revocation/<issuer key>.crl`: the CRL last uploaded for the issuer whose
    /// SubjectPublicKeyInfo hashes to `issuer_key` (SHA-256, hex); `None` unless the key
    /// is 64 lower-case hex digits.
    pub fn uploaded_crl(&self, issuer_key: &str) -> Option<PathBuf> {
        let valid = issuer_key.len() == 64
            && issuer_key
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| self.revocation().join(format!("{issuer_key}.crl")))
    }

    /// `images/<file>.img`: the uncompressed image of unikernel `name`.
    pub fn image(&self, name: &Name) -> Result<PathBuf, NameError> {
        Ok(self.images().join(format!("{}.img", name.file_name()?)))
    }

    /// `run/<file>.json`: the run record of unikernel `name`.
    pub fn run_record(&self, name: &Name) -> Result<PathBuf, NameError> {
        Ok(self.run().join(format!("{}.json", name.file_name()?)))
    }

    /// Takes the state directory's exclusive lock (`flock` on `lock`), held until the
    /// returned value is dropped or the process ends (even by `kill -9`). A second
    /// executor on the same directory (another endpoint) would restore every unikernel a
    /// second time.
    pub fn lock(&self) -> Result<DirLock, LockError> {
        let path = self.root.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|source| LockError::Io {
                path: path.clone(),
                source,
            })?;
        // SAFETY: flock(2) on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let source = io::Error::last_os_error();
            if source.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(LockError::InUse(self.root.clone()));
            }
            return Err(LockError::Io { path, source });
        }
        Ok(DirLock { _file: file })
    }

    /// [`StateDir::lock`], waiting up to [`LOCK_WAIT`] while the lock is held.
    pub async fn lock_waiting(&self) -> Result<DirLock, LockError> {
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            match self.lock() {
                Err(LockError::InUse(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(LOCK_POLL).await;
                }
                result => return result,
            }
        }
    }

    /// `block/<file>`: the file of block device `name`.
    pub fn block_file(&self, name: &Name) -> Result<PathBuf, NameError> {
        Ok(self.block().join(name.file_name()?))
    }
}

/// The exclusive lock of a state directory (see [`StateDir::lock`]): the open lock
/// file; closing it releases the lock.
#[derive(Debug)]
pub struct DirLock {
    _file: fs::File,
}

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds the lock.
    #[error("the state directory {} is in use by another petrel process", .0.display())]
    InUse(PathBuf),
    /// The lock file could not be opened or locked.
    #[error("locking {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Why petrel's records could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordsError {
    /// The file could not be read or its envelope is damaged.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The envelope holds a version this build does not read.
    #[error("{path}: unsupported records version {version}")]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        version: u32,
    },
    /// The body is not the expected JSON.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// petrel's own records, beside the state file: who created what (for revocation) and
/// the CA certificates seen in accepted chains (to verify CRLs of those CAs). Keys are
/// textual names (`a:b:` for a policy's path, `a:web` for a unikernel or block device).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records {
    /// For each policy path, the certificate that last presented that policy.
    pub policies: BTreeMap<String, CertId>,
    /// For each policy path, the chain that last installed it: the certificate carrying
    /// the policy, then its issuers up to the trust anchor (revoking any of them removes
    /// the policy). Absent in records written before petrel enforced revocation: then
    /// only the certificate in `policies` counts.
    #[serde(default)]
    pub policy_chains: BTreeMap<String, Vec<CertId>>,
    /// For each unikernel, every certificate of the chain of the request that last gave
    /// its configuration (create, force-create, restart with arguments), leaf first.
    pub unikernels: BTreeMap<String, Vec<CertId>>,
    /// For each block device, every certificate of the chain that created it.
    pub blocks: BTreeMap<String, Vec<CertId>>,
    /// CA certificates seen in accepted chains: hex SHA-256 of the DER → hex DER.
    pub ca_certificates: BTreeMap<String, String>,
}

impl Records {
    /// Reads the records file; an absent file is empty records.
    pub fn load(path: &Path) -> Result<Self, RecordsError> {
        let Some(data) = store::read_bounded(path, store::MAX_RECORD_SIZE)? else {
            return Ok(Self::default());
        };
        let (version, body) = store::open_envelope(path, &data)?;
        if version != RECORDS_VERSION {
            return Err(RecordsError::Version {
                path: path.to_owned(),
                version,
            });
        }
        serde_json::from_slice(body).map_err(|source| RecordsError::Json {
            path: path.to_owned(),
            source,
        })
    }

    /// The file content: the JSON body in petrel's envelope.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing maps of strings cannot fail.
        let body = serde_json::to_vec_pretty(self).unwrap_or_default();
        store::envelope(RECORDS_VERSION, &body)
    }

    /// Records that `cert` presented the policy at `path`, its issuers unknown (prefer
    /// [`Records::set_policy_chain`]); true if that changed anything.
    pub fn set_policy(&mut self, path: &NamePath, cert: &CertId) -> bool {
        let key = Name::of_path(path.clone()).text();
        let had_chain = self.policy_chains.remove(&key).is_some();
        self.policies.insert(key, cert.clone()).as_ref() != Some(cert) || had_chain
    }

    /// Records that the chain `installed_by` (the policy's certificate first, then its
    /// issuers) installed the policy at `path`; true if that changed anything.
    pub fn set_policy_chain(&mut self, path: &NamePath, installed_by: &[CertId]) -> bool {
        let key = Name::of_path(path.clone()).text();
        let mut changed = match installed_by.first() {
            Some(cert) => self.policies.insert(key.clone(), cert.clone()).as_ref() != Some(cert),
            None => false,
        };
        changed |= self
            .policy_chains
            .insert(key, installed_by.to_vec())
            .as_deref()
            != Some(installed_by);
        changed
    }

    /// Forgets the policy at `path`.
    pub fn remove_policy(&mut self, path: &NamePath) {
        let key = Name::of_path(path.clone()).text();
        self.policies.remove(&key);
        self.policy_chains.remove(&key);
    }

    /// What a chain containing any of `revoked` created or installed: unikernels and
    /// block devices whose creating chain contains one, policies whose installing chain
    /// does (each list sorted; keys that are not valid names are skipped).
    pub fn affected_by(&self, revoked: &BTreeSet<CertId>) -> Affected {
        let hit = |ids: &[CertId]| ids.iter().any(|id| revoked.contains(id));
        let names = |map: &BTreeMap<String, Vec<CertId>>| -> Vec<Name> {
            map.iter()
                .filter(|(_, ids)| hit(ids))
                .filter_map(|(name, _)| Name::parse(name).ok())
                .collect()
        };
        let policies = self
            .policies
            .iter()
            .filter(|(key, cert)| match self.policy_chains.get(*key) {
                Some(chain) => hit(chain),
                None => revoked.contains(*cert),
            })
            .filter_map(|(key, _)| Name::parse(key).ok())
            .map(|name| name.path().clone())
            .collect();
        Affected {
            unikernels: names(&self.unikernels),
            blocks: names(&self.blocks),
            policies,
        }
    }

    /// Records the chain that configured unikernel `name`.
    pub fn set_unikernel(&mut self, name: &Name, chain: &[ChainLink]) {
        let ids = chain.iter().map(|link| link.id.clone()).collect();
        self.unikernels.insert(name.text(), ids);
    }

    /// Forgets unikernel `name`.
    pub fn remove_unikernel(&mut self, name: &Name) {
        self.unikernels.remove(&name.text());
    }

    /// Records the chain that created block device `name`.
    pub fn set_block(&mut self, name: &Name, chain: &[ChainLink]) {
        let ids = chain.iter().map(|link| link.id.clone()).collect();
        self.blocks.insert(name.text(), ids);
    }

    /// Forgets block device `name`.
    pub fn remove_block(&mut self, name: &Name) {
        self.blocks.remove(&name.text());
    }

    /// Remembers every CA certificate of `chain`; true if one was new.
    pub fn add_ca_certificates(&mut self, chain: &[ChainLink]) -> bool {
        let mut changed = false;
        for link in chain.iter().filter(|link| link.is_ca) {
            let key = hex::encode(Sha256::digest(&link.der));
            if let std::collections::btree_map::Entry::Vacant(entry) =
                self.ca_certificates.entry(key)
            {
                entry.insert(hex::encode(&link.der));
                changed = true;
            }
        }
        changed
    }

    /// Drops the provenance of unikernels, policies and block devices that do not exist
    /// (records written just before a crash that lost the state update, block files
    /// removed by hand).
    pub fn retain(
        &mut self,
        unikernels: &BTreeSet<String>,
        policies: &BTreeSet<String>,
        blocks: &BTreeSet<String>,
    ) {
        self.unikernels.retain(|name, _| unikernels.contains(name));
        self.policies.retain(|path, _| policies.contains(path));
        self.policy_chains.retain(|path, _| policies.contains(path));
        self.blocks.retain(|name, _| blocks.contains(name));
    }
}

/// What a set of revoked certificates created or installed ([`Records::affected_by`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Affected {
    /// Unikernels whose creating chain contains a revoked certificate.
    pub unikernels: Vec<Name>,
    /// Block devices whose creating chain contains one.
    pub blocks: Vec<Name>,
    /// Policies whose installing chain contains one.
    pub policies: Vec<NamePath>,
}

impl Affected {
    /// True if nothing is affected.
    pub fn is_empty(&self) -> bool {
        self.unikernels.is_empty() && self.blocks.is_empty() && self.policies.is_empty()
    }
}

/// What the run record of a running tender says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The unikernel (textual name).
    pub name: String,
    /// The tender's pid.
    pub pid: u32,
    /// The tender's start time (`/proc/<pid>/stat` field 22, clock ticks after boot), if
    /// it could be read.
    pub start_time: Option<u64>,
    /// The image on the tender's command line.
    pub image: PathBuf,
    /// Its taps.
    pub taps: Vec<String>,
}

impl RunRecord {
    /// The record of tender `pid` running `image` with `taps`.
    pub fn new(name: &Name, pid: Pid, image: &Path, taps: &[InterfaceName]) -> Self {
        Self {
            name: name.text(),
            pid: pid.get(),
            start_time: process_start_time(pid.get()),
            image: image.to_owned(),
            taps: taps.iter().map(|t| t.as_str().to_owned()).collect(),
        }
    }

    /// Writes the record atomically.
    pub fn write(&self, path: &Path) -> Result<(), StoreError> {
        let body = serde_json::to_vec_pretty(self).unwrap_or_default();
        store::write_atomic(path, &body, FILE_MODE)
    }

    /// Reads a record; `None` if it is missing or not a run record.
    pub fn read(path: &Path) -> Option<Self> {
        let data = store::read_bounded(path, MAX_RUN_RECORD_SIZE).ok()??;
        serde_json::from_slice(&data).ok()
    }
}

/// The start time of process `pid` (`/proc/<pid>/stat` field 22), if it exists.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text).map(|(_, start)| start)
}

/// State letter and start time from the text of `/proc/<pid>/stat`. The command name
/// (field 2) is in parentheses and may itself contain spaces and parentheses, so fields
/// are counted after the last `)`: state is field 3, start time field 22.
pub fn parse_stat(text: &str) -> Option<(char, u64)> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(22 - 3)?.parse().ok()?;
    Some((state, start))
}

/// True if `record` describes a process that is alive now: same pid, same start time,
/// the record's image on its command line, and not a zombie.
pub fn is_alive(record: &RunRecord) -> bool {
    let Some(start) = record.start_time else {
        return false;
    };
    let Ok(text) = fs::read_to_string(format!("/proc/{}/stat", record.pid)) else {
        return false;
    };
    match parse_stat(&text) {
        Some((state, started)) if started == start && state != 'Z' && state != 'X' => {}
        _ => return false,
    }
    let Ok(cmdline) = fs::read(format!("/proc/{}/cmdline", record.pid)) else {
        return false;
    };
    let image = record.image.as_os_str().as_bytes();
    cmdline.split(|&b| b == 0).any(|arg| arg == image)
}

/// What start-up found left over from a previous instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Unikernels whose tender was still running and has been killed, with its pid.
    pub killed: Vec<(String, u32)>,
    /// Run records whose tender was gone.
    pub stale: Vec<String>,
    /// Taps removed.
    pub taps: Vec<String>,
    /// Temporary files removed.
    pub temp_files: usize,
}

/// Why start-up reconciliation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// A leftover tender did not die within [`LEFTOVER_KILL_WAIT`].
    #[error(
        "tender {pid} of {name} left over from a previous run did not exit after SIGKILL; \
         refusing to start a second instance"
    )]
    StillRunning {
        /// The unikernel.
        name: String,
        /// The process.
        pid: u32,
    },
    /// A directory could not be read or cleaned.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The taps could not be listed.
    #[error("could not list the taps: {0}")]
    Taps(#[source] NetError),
}

/// Cleans up after a previous instance (crashed or not): kills tenders that are still
/// running according to their run records, removes their taps and records, then removes
/// every tap that is not in use (a crash between creating a tap and writing the run
/// record leaves one behind; petrel assumes, as albatross does, that `vmmtap<N>` names
/// on this host are its own), empties `tmp/`, and removes temporary files of interrupted
/// atomic writes.
pub async fn reconcile(dir: &StateDir, network: &dyn Network) -> Result<Leftovers, ReconcileError> {
    let mut leftovers = Leftovers::default();
    for path in files_in(&dir.run())? {
        let record = RunRecord::read(&path);
        if let Some(record) = &record {
            if is_alive(record) {
                kill_leftover(record).await?;
                leftovers.killed.push((record.name.clone(), record.pid));
            } else {
                leftovers.stale.push(record.name.clone());
            }
            for tap in &record.taps {
                let Ok(tap) = InterfaceName::parse(tap) else {
                    continue;
                };
                match network.remove_tap(&tap) {
                    Ok(()) => leftovers.taps.push(tap.to_string()),
                    Err(NetError::NoSuchTap(_)) => {}
                    Err(e) => tracing::warn!(%tap, error = %e, "could not remove leftover tap"),
                }
            }
        }
        store::remove_durably(&path)?;
    }
    for tap in network.taps().map_err(ReconcileError::Taps)? {
        match network.remove_tap(&tap) {
            Ok(()) => leftovers.taps.push(tap.to_string()),
            Err(e) => tracing::info!(%tap, error = %e, "tap in use or gone, left alone"),
        }
    }
    for path in files_in(&dir.tmp())? {
        store::remove_durably(&path)?;
        leftovers.temp_files += 1;
    }
    for sub in [
        dir.root().to_owned(),
        dir.images(),
        dir.run(),
        dir.revocation(),
    ] {
        for path in files_in(&sub)? {
            let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
            if file.is_some_and(|f| f.starts_with('.') && f.ends_with(".tmp")) {
                store::remove_durably(&path)?;
                leftovers.temp_files += 1;
            }
        }
    }
    Ok(leftovers)
}

/// Removes every image in `images/` that is not `keep`.
pub fn remove_unreferenced_images(
    dir: &StateDir,
    keep: &BTreeSet<PathBuf>,
) -> Result<Vec<PathBuf>, StoreError> {
    let mut removed = Vec::new();
    for path in files_in(&dir.images())? {
        if !keep.contains(&path) {
            store::remove_durably(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Kills a leftover tender and waits until it is gone (or a zombie of another parent).
async fn kill_leftover(record: &RunRecord) -> Result<(), ReconcileError> {
    tracing::warn!(name = %record.name, pid = record.pid, "killing a tender left over from a previous run");
    if let Ok(pid) = libc::pid_t::try_from(record.pid) {
        // SAFETY: kill(2) on a positive pid we just identified by start time and image.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let deadline = tokio::time::Instant::now() + LEFTOVER_KILL_WAIT;
    while is_alive(record) {
        if tokio::time::Instant::now() >= deadline {
            return Err(ReconcileError::StillRunning {
                name: record.name.clone(),
                pid: record.pid,
            });
        }
        tokio::time::sleep(KILL_POLL).await;
    }
    Ok(())
}

/// The regular files directly in `dir` (none if it does not exist), sorted.
fn files_in(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StoreError::Io {
                op: "list",
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| StoreError::Io {
            op: "list",
            path: dir.to_owned(),
            source,
        })?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing() {
        let text = "1234 (solo5 (hvt) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 \
                    987654 1000 10 18446744073709551615";
        assert_eq!(parse_stat(text), Some(('S', 987_654)));
        assert_eq!(parse_stat("1 (x) Z 0"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat(&own).is_some());
        assert_eq!(
            process_start_time(std::process::id()),
            parse_stat(&own).map(|(_, s)| s)
        );
    }

    #[test]
    fn liveness_needs_pid_start_time_and_image() {
        let own = std::process::id();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let cmdline = std::fs::read("/proc/self/cmdline").unwrap();
        let argv0 = PathBuf::from(std::ffi::OsStr::from_bytes(
            cmdline.split(|&b| b == 0).next().unwrap(),
        ));
        let record = RunRecord {
            name: ":x".into(),
            pid: own,
            start_time: process_start_time(own),
            image: argv0.clone(),
            taps: vec![],
        };
        assert!(is_alive(&record));
        let other_image = RunRecord {
            image: exe.with_extension("not-this"),
            ..record.clone()
        };
        assert!(!is_alive(&other_image));
        let other_start = RunRecord {
            start_time: record.start_time.map(|s| s + 1),
            ..record.clone()
        };
        assert!(!is_alive(&other_start));
        let unknown = RunRecord {
            start_time: None,
            ..record
        };
        assert!(!is_alive(&unknown));
    }

    #[test]
    fn records_round_trip_and_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records");
        assert_eq!(Records::load(&path).unwrap(), Records::default());
        let id = CertId {
            issuer_key: "ab".into(),
            serial: "01".into(),
        };
        let mut records = Records::default();
        let a = NamePath::parse("a").unwrap();
        assert!(records.set_policy(&a, &id));
        assert!(!records.set_policy(&a, &id));
        let link = ChainLink {
            id: id.clone(),
            common_name: "a".into(),
            subject: "CN=a".into(),
            is_ca: true,
            der: vec![1, 2, 3],
        };
        assert!(records.add_ca_certificates(std::slice::from_ref(&link)));
        assert!(!records.add_ca_certificates(std::slice::from_ref(&link)));
        records.set_unikernel(&Name::parse("a:web").unwrap(), &[link]);
        store::write_atomic(&path, &records.to_bytes(), FILE_MODE).unwrap();
        let loaded = Records::load(&path).unwrap();
        assert_eq!(loaded, records);
        assert_eq!(
            loaded
                .ca_certificates
                .get(&hex::encode(Sha256::digest([1, 2, 3]))),
            Some(&"010203".to_owned())
        );
        assert_eq!(loaded.policies.get("a:"), Some(&id));
        assert_eq!(loaded.unikernels.get("a:web"), Some(&vec![id]));

        let mut damaged = records.to_bytes();
        *damaged.last_mut().unwrap() ^= 1;
        std::fs::write(&path, damaged).unwrap();
        assert!(matches!(
            Records::load(&path),
            Err(RecordsError::Store(StoreError::Checksum(_)))
        ));
        std::fs::write(&path, store::envelope(2, b"{}")).unwrap();
        assert_eq!(
            Records::load(&path).unwrap_err().to_string(),
            format!("{}: unsupported records version 2", path.display())
        );
    }

    #[test]
    fn what_a_revocation_affects() {
        let id = |issuer: &str, serial: &str| CertId {
            issuer_key: issuer.into(),
            serial: serial.into(),
        };
        let link = |id: &CertId| ChainLink {
            id: id.clone(),
            common_name: String::new(),
            subject: String::new(),
            is_ca: false,
            der: Vec::new(),
        };
        // root (r) signs alice (a); alice signs bob (b) and the leaves l1, l2; bob signs l3.
        let (root, alice, bob) = (id("r", "01"), id("r", "0a"), id("a", "0b"));
        let (l1, l2, l3) = (id("a", "11"), id("a", "12"), id("b", "13"));
        let mut records = Records::default();
        let path = |p: &str| NamePath::parse(p).unwrap();
        records.set_policy_chain(&path("alice"), &[alice.clone(), root.clone()]);
        records.set_policy_chain(
            &path("alice:bob"),
            &[bob.clone(), alice.clone(), root.clone()],
        );
        let chain = |ids: &[&CertId]| ids.iter().map(|i| link(i)).collect::<Vec<_>>();
        records.set_unikernel(
            &Name::parse("alice:web").unwrap(),
            &chain(&[&l1, &alice, &root]),
        );
        records.set_unikernel(
            &Name::parse("alice:db").unwrap(),
            &chain(&[&l2, &alice, &root]),
        );
        records.set_unikernel(
            &Name::parse("alice:bob:app").unwrap(),
            &chain(&[&l3, &bob, &alice, &root]),
        );
        records.set_block(
            &Name::parse("alice:disk").unwrap(),
            &chain(&[&l2, &alice, &root]),
        );
        // An old record without installing chain: only its certificate counts.
        records.policies.insert("carol:".into(), id("r", "0c"));

        fn affected(records: &Records, ids: &[&CertId]) -> Affected {
            records.affected_by(&ids.iter().map(|i| (*i).clone()).collect())
        }
        let names = |v: &[&str]| {
            v.iter()
                .map(|n| Name::parse(n).unwrap())
                .collect::<Vec<_>>()
        };

        let leaf = affected(&records, &[&l1]);
        assert_eq!(leaf.unikernels, names(&["alice:web"]));
        assert!(leaf.blocks.is_empty() && leaf.policies.is_empty());

        let intermediate = affected(&records, &[&alice]);
        assert_eq!(
            intermediate.unikernels,
            names(&["alice:bob:app", "alice:db", "alice:web"])
        );
        assert_eq!(intermediate.blocks, names(&["alice:disk"]));
        assert_eq!(
            intermediate.policies,
            vec![path("alice"), path("alice:bob")]
        );

        let sub = affected(&records, &[&bob]);
        assert_eq!(sub.unikernels, names(&["alice:bob:app"]));
        assert_eq!(sub.policies, vec![path("alice:bob")]);

        assert_eq!(
            affected(&records, &[&id("r", "0c")]).policies,
            vec![path("carol")]
        );
        assert!(affected(&records, &[&id("x", "01")]).is_empty());

        // Re-installed by another certificate since: no longer affected.
        let alice2 = id("r", "0d");
        assert!(records.set_policy_chain(&path("alice"), &[alice2.clone(), root.clone()]));
        assert!(!records.set_policy_chain(&path("alice"), &[alice2, root]));
        assert_eq!(
            affected(&records, &[&alice]).policies,
            vec![path("alice:bob")]
        );
        records.remove_policy(&path("alice:bob"));
        assert!(affected(&records, &[&alice]).policies.is_empty());
    }

    #[test]
    fn one_lock_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let held = state.lock().unwrap();
        assert_eq!(
            state.lock().unwrap_err().to_string(),
            format!(
                "the state directory {} is in use by another petrel process",
                dir.path().display()
            )
        );
        drop(held);
        state.lock().unwrap();
    }

    #[test]
    fn layout() {
        let dir = StateDir::new("/s");
        let name = Name::parse("my.app:web").unwrap();
        assert_eq!(
            dir.image(&name).unwrap(),
            Path::new("/s/images/my_app:web.img")
        );
        assert_eq!(
            dir.run_record(&name).unwrap(),
            Path::new("/s/run/my_app:web.json")
        );
        assert_eq!(
            dir.block_file(&name).unwrap(),
            Path::new("/s/block/my_app:web")
        );
        assert_eq!(dir.state_file(), Path::new("/s/state"));
        assert_eq!(dir.records_file(), Path::new("/s/records"));
    }
}
