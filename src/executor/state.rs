//! The executor's state and its locks.
//!
//! - [`Global`] (resources, running instances, pending restarts, records) sits behind one
//!   `std::sync::Mutex` that is only ever held for a few map operations and syscalls —
//!   never across an `await`, a process exit or a stream.
//! - Operations on one unikernel name are serialized by a per-name async lock
//!   ([`NameLocks`]): racing create / force-create / destroy / restart on one name run
//!   one after the other, so a unikernel can never be started twice.
//! - Writes of the state and records files are serialized by an async lock and each
//!   writes a snapshot taken after the previous write, so the file never goes back in
//!   time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::{OwnedMutexGuard, oneshot};
use tokio::task::AbortHandle;

use crate::codec::{self, NetInfo, State, Timestamp, TrieEntry, UnikernelConfig};
use crate::executor::ExecutorConfig;
use crate::executor::block::BlockStore;
use crate::executor::cgroup::{Cgroup, Cgroups};
use crate::executor::console::ConsoleHub;
use crate::executor::events::Events;
use crate::executor::image::ImageDigest;
use crate::executor::net::{InterfaceName, Network};
use crate::executor::persist::{DirLock, FILE_MODE, Records, StateDir};
use crate::executor::revoke::Revocation;
use crate::executor::stats::{StatsHandle, StatsHub};
use crate::executor::tender::{ExitReason, Pid, Tender};
use crate::name::{Name, Path};
use crate::resources::Resources;
use crate::store::{self, StoreError};

/// Everything the executor owns, shared by its tasks.
pub(crate) struct Inner {
    /// How it was set up.
    pub(crate) config: ExecutorConfig,
    /// The state directory.
    pub(crate) dir: StateDir,
    /// Taps and bridges.
    pub(crate) network: Arc<dyn Network>,
    /// Tender processes.
    pub(crate) tender: Arc<dyn Tender>,
    /// The event stream.
    pub(crate) events: Events,
    /// Block device files.
    pub(crate) blocks: BlockStore,
    /// Console buffers and subscriptions.
    pub(crate) console: ConsoleHub,
    /// CRLs, the published revocation store, operator CRLs waiting for their issuer.
    pub(crate) revocation: Revocation,
    /// Per-unikernel cgroups (or none).
    pub(crate) cgroups: Cgroups,
    /// Statistics subscriptions and the latest round; closed when this is dropped.
    pub(crate) stats: StatsHandle,
    global: Mutex<Global>,
    names: NameLocks,
    persisted: tokio::sync::Mutex<Persisted>,
    /// The state directory's lock; `None` once shut down (nothing is written then).
    lock: Mutex<Option<DirLock>>,
    abi_checked: Mutex<HashSet<(PathBuf, u32)>>,
    next_id: AtomicU64,
}

/// The state behind the global lock.
pub(crate) struct Global {
    /// Policies, unikernels (running or reserved by a create in progress), block devices.
    pub(crate) resources: Resources,
    /// Running tenders.
    pub(crate) running: BTreeMap<Name, Instance>,
    /// Unikernels waiting for an automatic restart.
    pub(crate) pending: BTreeMap<Name, Pending>,
    /// Unikernels of the state file not yet tried at start-up (spec E4).
    pub(crate) startup: BTreeMap<Name, UnikernelConfig>,
    /// Provenance and CA certificates.
    pub(crate) records: Records,
    /// Block devices with a set or dump in progress: not to be attached meanwhile.
    pub(crate) busy_blocks: BTreeSet<Name>,
    /// Set by shutdown: nothing new starts, nothing is persisted on exit.
    pub(crate) shutting_down: bool,
}

/// A running tender.
pub(crate) struct Instance {
    /// Distinguishes successive instances of one name.
    pub(crate) id: u64,
    /// Its configuration (image empty: the image is in `images/`).
    pub(crate) config: UnikernelConfig,
    /// The tender's pid.
    pub(crate) pid: Pid,
    /// Its taps, in configuration order.
    pub(crate) taps: Vec<InterfaceName>,
    /// Its network devices as `info` reports them (the MAC actually used).
    pub(crate) nets: Vec<NetInfo>,
    /// SHA-256 of the uncompressed image.
    pub(crate) digest: ImageDigest,
    /// Wall-clock start, for `info`.
    pub(crate) started: Timestamp,
    /// Monotonic start, for the back-off reset.
    pub(crate) started_at: Instant,
    /// Consecutive quick automatic restarts that led to this instance (0: started by a
    /// command or at start-up).
    pub(crate) attempt: u32,
    /// Set when a command stops it: receives the exit instead of the restart logic.
    pub(crate) stop: Option<oneshot::Sender<ExitReason>>,
    /// Its cgroup, if tenders run in cgroups.
    pub(crate) cgroup: Option<Cgroup>,
}

/// A unikernel waiting for its automatic restart.
pub(crate) struct Pending {
    /// The configuration it restarts with.
    pub(crate) config: UnikernelConfig,
    /// Its image's digest.
    pub(crate) digest: ImageDigest,
    /// The attempt the restart will be.
    pub(crate) attempt: u32,
    /// Identifies this pending restart (a stale timer must not act on a newer one).
    pub(crate) generation: u64,
    /// The timer task, aborted when the restart is cancelled.
    pub(crate) task: Option<AbortHandle>,
}

impl Pending {
    /// Stops the timer.
    pub(crate) fn cancel(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Global {
    /// The state file's content: every policy (the root's included) and the configuration
    /// of every unikernel that runs, waits for a restart, or has not been tried yet at
    /// start-up, in albatross's trie order. Images are not embedded (they are in
    /// `images/`).
    pub(crate) fn state(&self) -> State {
        let configs = self
            .running
            .iter()
            .map(|(name, i)| (name, &i.config))
            .chain(self.pending.iter().map(|(name, p)| (name, &p.config)))
            .chain(self.startup.iter());
        let mut state = State {
            unikernels: configs
                .map(|(name, config)| TrieEntry::new(name.clone(), config.clone()))
                .collect(),
            policies: self
                .resources
                .policies_below(&Path::root())
                .into_iter()
                .map(|(name, policy)| TrieEntry::new(name, policy))
                .collect(),
        };
        state.sort();
        state
    }
}

/// The last content written, so unchanged files are not rewritten.
#[derive(Default)]
struct Persisted {
    state: Option<Vec<u8>>,
    records: Option<Vec<u8>>,
}

/// Everything [`Inner::new`] assembles the executor from.
pub(crate) struct Parts {
    /// The configuration.
    pub(crate) config: ExecutorConfig,
    /// Taps.
    pub(crate) network: Arc<dyn Network>,
    /// Tender processes.
    pub(crate) tender: Arc<dyn Tender>,
    /// Per-unikernel cgroups (or none).
    pub(crate) cgroups: Cgroups,
    /// Block device files.
    pub(crate) blocks: BlockStore,
    /// The state directory lock.
    pub(crate) lock: DirLock,
    /// The restored global state.
    pub(crate) global: Global,
    /// CRLs and the published revocation store.
    pub(crate) revocation: Revocation,
}

impl Inner {
    /// The executor's state, ready to accept requests.
    pub(crate) fn new(parts: Parts) -> Self {
        let Parts {
            config,
            network,
            tender,
            cgroups,
            blocks,
            lock,
            global,
            revocation,
        } = parts;
        Self {
            cgroups,
            stats: StatsHandle(Arc::new(StatsHub::new(config.limits.stats_interval))),
            dir: StateDir::new(config.state_dir.clone()),
            console: ConsoleHub::new(
                config.limits.console_lines,
                config.limits.max_console_subscribers,
            ),
            blocks,
            revocation,
            config,
            network,
            tender,
            events: Events::new(),
            global: Mutex::new(global),
            names: NameLocks::default(),
            persisted: tokio::sync::Mutex::new(Persisted::default()),
            lock: Mutex::new(Some(lock)),
            abi_checked: Mutex::new(HashSet::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// The global state (held briefly: never across an await).
    pub(crate) fn global(&self) -> MutexGuard<'_, Global> {
        self.global.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for exclusive use of `name`.
    pub(crate) async fn lock_name(&self, name: &Name) -> NameGuard<'_> {
        self.names.lock(name).await
    }

    /// Waits until every operation on a name that is in progress now has finished.
    pub(crate) async fn quiesce(&self) {
        for lock in self.names.all() {
            drop(lock.lock_owned().await);
        }
    }

    /// Releases the state directory after shutdown: later writes are refused.
    pub(crate) async fn release(&self) {
        // Taken with the persist lock: no write is in progress.
        let _persisted = self.persisted.lock().await;
        self.lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// A fresh identifier for an instance or a pending restart.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// True if the tender at `tender` already reported ABI version `version`.
    pub(crate) fn abi_known(&self, tender: &std::path::Path, version: u32) -> bool {
        self.abi_checked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&(tender.to_owned(), version))
    }

    /// Remembers that the tender at `tender` reports ABI version `version`.
    pub(crate) fn abi_confirmed(&self, tender: &std::path::Path, version: u32) {
        self.abi_checked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((tender.to_owned(), version));
    }

    /// Writes the records and the state file (in that order: a unikernel in the state
    /// file always has its provenance), each atomically, if they changed since the last
    /// write. Returns once both are durable.
    pub(crate) async fn persist(&self) -> Result<(), StoreError> {
        let mut persisted = self.persisted.lock().await;
        if self
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
        {
            // Shut down: the directory may belong to the next executor already.
            return Err(StoreError::Io {
                op: "persist",
                path: self.dir.state_file(),
                source: std::io::Error::other("the executor has shut down"),
            });
        }
        let (state, records) = {
            let global = self.global();
            (
                codec::encode_state(&global.state()),
                global.records.to_bytes(),
            )
        };
        let write_records = persisted.records.as_ref() != Some(&records);
        let write_state = persisted.state.as_ref() != Some(&state);
        if !write_records && !write_state {
            return Ok(());
        }
        let (state_file, records_file) = (self.dir.state_file(), self.dir.records_file());
        let (state, records) = tokio::task::spawn_blocking(move || {
            if write_records {
                store::write_atomic(&records_file, &records, FILE_MODE)?;
            }
            if write_state {
                store::write_atomic(&state_file, &state, FILE_MODE)?;
            }
            Ok::<_, StoreError>((state, records))
        })
        .await
        .map_err(|e| StoreError::Io {
            op: "persist",
            path: self.dir.state_file(),
            source: std::io::Error::other(e.to_string()),
        })??;
        persisted.state = Some(state);
        persisted.records = Some(records);
        Ok(())
    }
}

/// Per-name async locks; an entry lives while somebody holds or waits for it.
#[derive(Default)]
struct NameLocks(Mutex<HashMap<Name, Arc<tokio::sync::Mutex<()>>>>);

/// Exclusive use of one name, released when dropped.
pub(crate) struct NameGuard<'a> {
    locks: &'a NameLocks,
    name: Name,
    guard: Option<OwnedMutexGuard<()>>,
}

impl NameLocks {
    fn map(&self) -> MutexGuard<'_, HashMap<Name, Arc<tokio::sync::Mutex<()>>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn lock(&self, name: &Name) -> NameGuard<'_> {
        let lock = Arc::clone(self.map().entry(name.clone()).or_default());
        NameGuard {
            locks: self,
            name: name.clone(),
            guard: Some(lock.lock_owned().await),
        }
    }

    fn all(&self) -> Vec<Arc<tokio::sync::Mutex<()>>> {
        self.map().values().cloned().collect()
    }
}

impl Drop for NameGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.map();
        // The map's reference and ours: nobody else waits, the entry can go.
        if map
            .get(&self.name)
            .is_some_and(|lock| Arc::strong_count(lock) <= 2)
        {
            map.remove(&self.name);
        }
        self.guard.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn name_locks_serialize_and_clean_up() {
        let locks = NameLocks::default();
        let a = Name::parse(":a").unwrap();
        let first = locks.lock(&a).await;
        let other = locks.lock(&Name::parse(":b").unwrap()).await;
        let held = Arc::clone(locks.map().get(&a).unwrap());
        assert!(held.try_lock().is_err(), "the same name is exclusive");
        drop(held);
        drop(other);
        assert_eq!(locks.map().len(), 1);
        drop(first);
        assert!(locks.map().is_empty());
        drop(locks.lock(&a).await);
        assert!(locks.map().is_empty());
    }
}
