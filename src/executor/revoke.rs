//! Revocation in the executor (DESIGN.md, "Revocation"): CRL uploads, `revocation
//! info`, operator CRLs (start-up, SIGHUP, issuers that become known later), and what
//! happens to work a revoked certificate created.
//!
//! The executor keeps the [`CrlBook`] and publishes the [`RevocationStore`] made of it
//! to [`SharedRevocations`], which the TLS side reads for every new connection; it also
//! checks every request against it itself (defence in depth, and the only check once
//! the executor runs in a process of its own).
//!
//! **Upload.** The CRL streamed after the handshake (at most `max_crl_size` octets, in
//! memory) must be issued and signed by the uploading leaf's issuer `X` (the nearest
//! CA), carry a CRL number greater than `X`'s effective CRL, have a thisUpdate no
//! further than [`CRL_CLOCK_SKEW`] in the future and a nextUpdate (if any) not passed.
//! It is written atomically to `revocation/<key of X>.crl` before anything else
//! changes; a refused or broken upload changes nothing.
//!
//! **Operator CRLs** (`--crl FILE`, `crls/`) are read at start-up and on
//! [`Executor::reload_crls`](super::Executor::reload_crls). A CRL is verified against
//! every known CA certificate with its issuer's name (trust anchors and the CA
//! certificates of accepted chains); one whose issuer is not known yet waits and is
//! verified the first time a chain presents that issuer. An operator CRL whose
//! nextUpdate has passed still applies (with a warning): an old list is never a reason
//! to trust a certificate again.
//!
//! **Consequences** for the newly revoked certificates: consoles subscribed by a chain
//! containing one are closed; with [`OnRevoke::Destroy`] the unikernels and block
//! devices whose creating chain contains one are destroyed and the policies whose
//! installing chain contains one are removed ([`Records::affected_by`]); with
//! [`OnRevoke::Keep`] work stays and only access is refused. At start-up, in destroy
//! mode, nothing a revoked chain created is restored.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use time::OffsetDateTime;

use crate::chain::{CertId, ChainLink, Request};
use crate::codec::{RevocationCmd, Success};
use crate::executor::api::{InputChunk, InputReceiver};
use crate::executor::persist::{Affected, FILE_MODE, Records, StateDir};
use crate::executor::state::Inner;
use crate::executor::unikernel::UnikernelError;
use crate::executor::{ExecError, OnRevoke};
use crate::name::{Name, Path as NamePath};
use crate::pki::crl::{validate_crl, verify_crl};
use crate::pki::{
    CRL_CLOCK_SKEW, Certificate, CertificateFacts, CrlError, PEM_EXPANSION, ParsedCrl,
};
use crate::revocation::{
    CrlBook, CrlOrigin, IssuerCrl, NotNewer, RevocationStore, SharedRevocations,
};
use crate::store::{self, StoreError};

/// At most this many names are listed per kind in an upload's one-line summary (the
/// counts are always complete): the line stays readable when an intermediate CA with
/// hundreds of unikernels is revoked.
pub const MAX_SUMMARY_NAMES: usize = 8;

/// What the executor needs for revocation beyond [`super::ExecutorConfig`].
#[derive(Debug, Clone, Default)]
pub struct RevocationSetup {
    /// The trust anchors (`CACERT`): operator CRLs of these CAs are verified at once.
    pub trust_anchors: Vec<Certificate>,
    /// Operator CRL files (`--crl FILE`), PEM or DER, read at start-up and on reload.
    pub crl_files: Vec<PathBuf>,
}

/// Why a CRL upload was refused; the text is the failure sent to the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// The stream broke (the text says how).
    #[error("{0}")]
    Stream(String),
    /// The stream exceeded the CRL size limit.
    #[error("CRL exceeds the limit of {0} octets")]
    TooLarge(u64),
    /// The chain has no issuer for the leaf (cannot happen with a verified chain).
    #[error("revocation upload needs a leaf certificate issued by a CA")]
    NoIssuer,
    /// The uploading leaf's issuer certificate does not parse.
    #[error("the uploading certificate's issuer cannot be read: {0}")]
    IssuerUnreadable(String),
    /// The CRL names another issuer than the uploading leaf's.
    #[error("CRL issuer {crl_issuer} is not the uploading certificate's issuer {ca_subject}")]
    IssuerMismatch {
        /// The CRL's issuer.
        crl_issuer: String,
        /// The uploading leaf's issuer.
        ca_subject: String,
    },
    /// The signature does not verify with the issuer's key.
    #[error("CRL not signed by the uploading certificate's issuer {0}")]
    NotSigned(String),
    /// nextUpdate has passed.
    #[error("CRL expired: nextUpdate {next_update} has passed (now {now})")]
    Expired {
        /// nextUpdate, RFC 3339.
        next_update: String,
        /// The time of the upload, RFC 3339.
        now: String,
    },
    /// Replay: the number does not exceed the stored one.
    #[error(transparent)]
    NotNewer(#[from] NotNewer),
    /// Anything else wrong with the CRL (malformed, no CRL number, thisUpdate in the
    /// future, …).
    #[error("invalid CRL: {0}")]
    Invalid(CrlError),
    /// The CRL could not be stored.
    #[error("could not store the CRL: {}", .0.reason())]
    Persist(StoreError),
}

impl UploadError {
    /// Maps a validation error of a CRL against the uploading leaf's issuer `issuer`
    /// (displayed as `issuer_name`).
    fn validation(error: CrlError, issuer_name: &str) -> Self {
        match error {
            CrlError::IssuerMismatch {
                crl_issuer,
                ca_subject,
            } => Self::IssuerMismatch {
                crl_issuer,
                ca_subject,
            },
            CrlError::BadSignature => Self::NotSigned(issuer_name.to_owned()),
            CrlError::Expired { next_update, now } => Self::Expired {
                next_update: crate::pki::rfc3339(next_update),
                now: crate::pki::rfc3339(now),
            },
            other => Self::Invalid(other),
        }
    }
}

/// The executor's revocation state.
pub(crate) struct Revocation {
    /// Anchors and operator files.
    setup: RevocationSetup,
    /// The store new connections are checked against.
    shared: Arc<SharedRevocations>,
    /// CRLs and pending operator CRLs; held while a change is applied, so changes happen
    /// one after the other.
    state: tokio::sync::Mutex<CrlState>,
    /// True while operator CRLs wait for their issuer (requests then look at their
    /// chain's CA certificates).
    has_pending: AtomicBool,
    /// Certificates newly revoked since start-up (for metrics).
    applied: AtomicU64,
}

impl Revocation {
    /// The revocation state as start-up found it.
    pub(crate) fn new(setup: RevocationSetup, loaded: CrlState) -> Self {
        let shared = Arc::new(SharedRevocations::new(loaded.book.store()));
        let has_pending = AtomicBool::new(!loaded.pending.is_empty());
        Self {
            setup,
            shared,
            state: tokio::sync::Mutex::new(loaded),
            has_pending,
            applied: AtomicU64::new(0),
        }
    }

    /// The store published to the TLS side.
    pub(crate) fn shared(&self) -> Arc<SharedRevocations> {
        Arc::clone(&self.shared)
    }

    /// The store in force now.
    pub(crate) fn current(&self) -> Arc<RevocationStore> {
        self.shared.current()
    }

    /// Certificates newly revoked since start-up.
    pub(crate) fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }
}

/// CRLs in force and operator CRLs waiting for their issuer.
#[derive(Debug, Default)]
pub(crate) struct CrlState {
    /// Accepted CRLs.
    pub(crate) book: CrlBook,
    /// Operator CRLs whose issuer is not known yet.
    pub(crate) pending: Vec<PendingCrl>,
}

/// An operator CRL waiting for its issuer's certificate.
#[derive(Debug, Clone)]
pub(crate) struct PendingCrl {
    path: PathBuf,
    crl: ParsedCrl,
}

/// What a reload of the operator CRLs found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Operator CRLs verified and in the book.
    pub loaded: usize,
    /// Operator CRLs waiting for their issuer.
    pub pending: usize,
    /// Files that could not be used (each logged).
    pub refused: usize,
    /// The consequences, as one line.
    pub consequences: String,
}

/// What newly revoked certificates led to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Consequences {
    /// How many certificates became revoked.
    pub(crate) newly_revoked: usize,
    /// Whether work was kept (`--on-revoke keep`).
    pub(crate) kept: bool,
    /// Unikernels destroyed (or kept).
    pub(crate) unikernels: Vec<Name>,
    /// Block devices removed (or kept).
    pub(crate) blocks: Vec<Name>,
    /// Policies removed (or kept).
    pub(crate) policies: Vec<NamePath>,
    /// Console subscriptions closed.
    pub(crate) consoles: usize,
}

impl fmt::Display for Consequences {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let newly = self.newly_revoked;
        write!(
            f,
            "{newly} {} newly revoked; ",
            plural(newly, "certificate", "certificates")
        )?;
        let unikernels = listed(&self.unikernels, Name::text, "unikernel", "unikernels");
        let blocks = listed(&self.blocks, Name::text, "block device", "block devices");
        let policies = listed(
            &self.policies,
            |p| Name::of_path(p.clone()).text(),
            "policy",
            "policies",
        );
        if self.kept {
            write!(
                f,
                "kept {unikernels}, {blocks} and {policies} (--on-revoke keep); "
            )?;
        } else {
            write!(f, "destroyed {unikernels}, {blocks}; removed {policies}; ")?;
        }
        write!(
            f,
            "closed {} {}",
            self.consoles,
            plural(
                self.consoles,
                "console subscription",
                "console subscriptions"
            )
        )
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// `2 unikernels (a:x, a:y)`, at most [`MAX_SUMMARY_NAMES`] names.
fn listed<T>(items: &[T], text: impl Fn(&T) -> String, one: &str, many: &str) -> String {
    let mut out = format!("{} {}", items.len(), plural(items.len(), one, many));
    if !items.is_empty() {
        let mut names: Vec<String> = items.iter().take(MAX_SUMMARY_NAMES).map(text).collect();
        if items.len() > MAX_SUMMARY_NAMES {
            names.push("…".to_owned());
        }
        out.push_str(&format!(" ({})", names.join(", ")));
    }
    out
}

/// The id a console subscription's tag holds for a certificate of its chain.
pub(crate) fn console_tag_id(id: &CertId) -> String {
    format!("{}/{}", id.issuer_key, id.serial)
}

/// Reads what start-up needs: every uploaded CRL (one that does not parse or verify
/// refuses start-up, as a damaged state file does) and the operator CRLs.
pub(crate) fn load(
    dir: &StateDir,
    setup: &RevocationSetup,
    records: &Records,
    max_crl_size: u64,
    now: OffsetDateTime,
) -> Result<CrlState, ExecError> {
    let cas = known_cas(setup, records);
    let mut state = CrlState::default();
    for path in crl_files_in(&dir.revocation()).map_err(ExecError::Store)? {
        let refuse = |reason: String| ExecError::Crl {
            path: path.clone(),
            reason,
        };
        let key = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|key| dir.uploaded_crl(key).as_ref() == Some(&path))
            .ok_or_else(|| refuse("not named <issuer key>.crl".to_owned()))?
            .to_owned();
        let data = store::read_bounded(&path, max_crl_size.max(crate::limits::MAX_CRL_SIZE))?
            .ok_or_else(|| refuse("vanished".to_owned()))?;
        let crl = ParsedCrl::parse(&data).map_err(|e| refuse(e.to_string()))?;
        let issuer = cas
            .iter()
            .find(|ca| hex::encode(ca.spki_sha256()) == key)
            .ok_or_else(|| {
                refuse("its issuer is not among the known CA certificates".to_owned())
            })?;
        let crl = verify_crl(crl, issuer).map_err(|e| refuse(e.to_string()))?;
        tracing::info!(
            path = %path.display(),
            issuer = %crl.issuer(),
            number = %crl.number(),
            revoked = crl.revoked().len(),
            "uploaded CRL loaded"
        );
        state.book.insert_uploaded(IssuerCrl {
            issuer_key: key,
            crl,
            origin: CrlOrigin::Uploaded,
        });
    }
    read_operator_crls(&mut state, dir, setup, &cas, max_crl_size, now);
    Ok(state)
}

/// Reads the operator CRL files into `state` (its operator CRLs and pending list are
/// replaced); returns how many were loaded, pending and refused. Every file gets a log
/// line.
fn read_operator_crls(
    state: &mut CrlState,
    dir: &StateDir,
    setup: &RevocationSetup,
    cas: &[CertificateFacts],
    max_crl_size: u64,
    now: OffsetDateTime,
) -> (usize, usize) {
    state.book.clear_operator();
    state.pending.clear();
    let mut files = setup.crl_files.clone();
    match crl_files_in(&dir.crls()) {
        Ok(found) => files.extend(found),
        Err(e) => tracing::error!(error = %e, "cannot list the operator CRL folder"),
    }
    let limit = max_crl_size.saturating_mul(u64::try_from(PEM_EXPANSION).unwrap_or(2));
    let (mut loaded, mut refused) = (0, 0);
    for path in files {
        let parsed = store::read_bounded(&path, limit)
            .map_err(|e| e.to_string())
            .and_then(|data| data.ok_or_else(|| "no such file".to_owned()))
            .and_then(|data| ParsedCrl::parse(&data).map_err(|e| e.to_string()));
        let crl = match parsed {
            Ok(crl) => crl,
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "operator CRL refused");
                refused += 1;
                continue;
            }
        };
        let candidates: Vec<&CertificateFacts> = cas
            .iter()
            .filter(|ca| ca.subject.der() == crl.issuer().der())
            .collect();
        if candidates.is_empty() {
            tracing::warn!(
                path = %path.display(),
                issuer = %crl.issuer(),
                "operator CRL pending: its issuer is not known yet"
            );
            state.pending.push(PendingCrl { path, crl });
            continue;
        }
        match verify_operator(&path, crl, &candidates, now) {
            Ok(accepted) => {
                state.book.insert_operator(accepted);
                loaded += 1;
            }
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "operator CRL refused");
                refused += 1;
            }
        }
    }
    (loaded, refused)
}

/// Verifies an operator CRL against the CA certificates with its issuer's name.
fn verify_operator(
    path: &Path,
    crl: ParsedCrl,
    candidates: &[&CertificateFacts],
    now: OffsetDateTime,
) -> Result<IssuerCrl, CrlError> {
    let mut last = CrlError::BadSignature;
    for ca in candidates {
        let validated = match validate_crl(crl.clone(), ca, now, CRL_CLOCK_SKEW) {
            Err(CrlError::Expired { next_update, .. }) => {
                let validated = verify_crl(crl.clone(), ca);
                if validated.is_ok() {
                    tracing::warn!(
                        path = %path.display(),
                        next_update = %crate::pki::rfc3339(next_update),
                        "operator CRL past its nextUpdate: applied anyway, ask its CA for a new one"
                    );
                }
                validated
            }
            other => other,
        };
        match validated {
            Ok(crl) => {
                tracing::info!(
                    path = %path.display(),
                    issuer = %crl.issuer(),
                    number = %crl.number(),
                    revoked = crl.revoked().len(),
                    "operator CRL loaded"
                );
                return Ok(IssuerCrl {
                    issuer_key: hex::encode(ca.spki_sha256()),
                    crl,
                    origin: CrlOrigin::Operator(path.to_owned()),
                });
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The CA certificates CRLs can be verified against: the trust anchors and the CA
/// certificates of accepted chains.
fn known_cas(setup: &RevocationSetup, records: &Records) -> Vec<CertificateFacts> {
    let anchors = setup.trust_anchors.iter().filter_map(|c| c.facts().ok());
    let seen = records
        .ca_certificates
        .values()
        .filter_map(|der| hex::decode(der).ok())
        .filter_map(|der| CertificateFacts::from_der(&der).ok());
    anchors.chain(seen).collect()
}

/// The regular files in `dir` whose name does not start with `.` (editors' and
/// petrel's own temporary files), sorted; none if `dir` does not exist.
fn crl_files_in(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StoreError::Io {
                op: "list",
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}

/// Receives the CRL stream, at most `limit` octets.
async fn receive(input: Option<InputReceiver>, limit: u64) -> Result<Vec<u8>, UploadError> {
    let closed = || UploadError::Stream("connection closed before the end of the stream".into());
    let mut input = input.ok_or_else(closed)?;
    let mut data: Vec<u8> = Vec::new();
    loop {
        match input.recv().await {
            Some(InputChunk::Data(chunk)) => {
                let total = data.len().saturating_add(chunk.len());
                if u64::try_from(total).map_or(true, |total| total > limit) {
                    return Err(UploadError::TooLarge(limit));
                }
                data.extend_from_slice(&chunk);
            }
            Some(InputChunk::End) => return Ok(data),
            Some(InputChunk::Failed(text)) => return Err(UploadError::Stream(text)),
            None => return Err(closed()),
        }
    }
}

impl Inner {
    /// The store in force now (the executor's own check).
    pub(crate) fn revocations(&self) -> Arc<RevocationStore> {
        self.revocation.current()
    }

    /// `revocation upload` and `revocation info`.
    pub(crate) async fn revocation_command(
        self: &Arc<Self>,
        request: &Request,
        command: &RevocationCmd,
        input: Option<InputReceiver>,
    ) -> Result<Success, String> {
        match command {
            RevocationCmd::Upload => self
                .upload(request, input)
                .await
                .map(Success::String)
                .map_err(|e| e.to_string()),
            RevocationCmd::Info => {
                let info = self.revocation.state.lock().await.book.info(&request.chain);
                let json = serde_json::json!({ "crls": info });
                Ok(Success::String(json.to_string()))
            }
        }
    }

    /// `revocation upload` (see the module documentation); the one-line summary.
    async fn upload(
        self: &Arc<Self>,
        request: &Request,
        input: Option<InputReceiver>,
    ) -> Result<String, UploadError> {
        let data = receive(input, self.config.limits.max_crl_size).await?;
        let crl = ParsedCrl::parse(&data).map_err(UploadError::Invalid)?;
        let issuer = request.chain.get(1).ok_or(UploadError::NoIssuer)?;
        let facts = CertificateFacts::from_der(&issuer.der)
            .map_err(|e| UploadError::IssuerUnreadable(e.to_string()))?;
        let issuer_name = if issuer.common_name.is_empty() {
            issuer.subject.clone()
        } else {
            issuer.common_name.clone()
        };
        let crl = validate_crl(crl, &facts, OffsetDateTime::now_utc(), CRL_CLOCK_SKEW)
            .map_err(|e| UploadError::validation(e, &issuer_name))?;
        let issuer_key = hex::encode(facts.spki_sha256());
        let path = self
            .dir
            .uploaded_crl(&issuer_key)
            .ok_or(UploadError::NoIssuer)?;

        let mut state = self.revocation.state.lock().await;
        state.book.check_newer(&issuer_key, crl.number())?;
        let der = crl.der().to_vec();
        tokio::task::spawn_blocking(move || store::write_atomic(&path, &der, FILE_MODE))
            .await
            .map_err(|e| {
                UploadError::Persist(StoreError::Io {
                    op: "write",
                    path: self.dir.revocation(),
                    source: std::io::Error::other(e.to_string()),
                })
            })?
            .map_err(UploadError::Persist)?;
        let summary = format!(
            "stored CRL number {} of {}",
            crl.number(),
            crl.issuer().text()
        );
        state.book.insert_uploaded(IssuerCrl {
            issuer_key,
            crl,
            origin: CrlOrigin::Uploaded,
        });
        let consequences = self.publish(&state).await;
        drop(state);
        tracing::info!(%summary, %consequences, "CRL uploaded");
        Ok(format!("{summary}; {consequences}"))
    }

    /// Reads the operator CRLs again (SIGHUP) and applies what changed.
    pub(crate) async fn reload_crls(self: &Arc<Self>) -> ReloadSummary {
        let mut state = self.revocation.state.lock().await;
        let cas = known_cas(&self.revocation.setup, &self.global().records);
        let (dir, setup, max) = (
            self.dir.clone(),
            self.revocation.setup.clone(),
            self.config.limits.max_crl_size,
        );
        let now = OffsetDateTime::now_utc();
        let mut scratch = CrlState {
            book: state.book.clone(),
            pending: Vec::new(),
        };
        let read = tokio::task::spawn_blocking(move || {
            let counts = read_operator_crls(&mut scratch, &dir, &setup, &cas, max, now);
            (scratch, counts)
        })
        .await;
        let (loaded, refused) = match read {
            Ok((scratch, counts)) => {
                *state = scratch;
                counts
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the operator CRLs failed; nothing changed");
                return ReloadSummary::default();
            }
        };
        self.revocation
            .has_pending
            .store(!state.pending.is_empty(), Ordering::SeqCst);
        let consequences = self.publish(&state).await;
        let summary = ReloadSummary {
            loaded,
            pending: state.pending.len(),
            refused,
            consequences: consequences.to_string(),
        };
        tracing::info!(
            loaded,
            pending = summary.pending,
            refused,
            %consequences,
            "operator CRLs reloaded"
        );
        summary
    }

    /// Verifies the operator CRLs waiting for an issuer that `chain` presents, and
    /// applies those that verify.
    pub(crate) async fn resolve_pending(self: &Arc<Self>, chain: &[ChainLink]) {
        if !self.revocation.has_pending.load(Ordering::SeqCst) {
            return;
        }
        let cas: Vec<CertificateFacts> = chain
            .iter()
            .filter(|link| link.is_ca)
            .filter_map(|link| CertificateFacts::from_der(&link.der).ok())
            .collect();
        let mut state = self.revocation.state.lock().await;
        let now = OffsetDateTime::now_utc();
        let mut resolved = 0;
        for pending in std::mem::take(&mut state.pending) {
            let candidates: Vec<&CertificateFacts> = cas
                .iter()
                .filter(|ca| ca.subject.der() == pending.crl.issuer().der())
                .collect();
            if candidates.is_empty() {
                state.pending.push(pending);
                continue;
            }
            match verify_operator(&pending.path, pending.crl, &candidates, now) {
                Ok(accepted) => {
                    state.book.insert_operator(accepted);
                    resolved += 1;
                }
                Err(error) => {
                    tracing::error!(path = %pending.path.display(), %error, "operator CRL refused");
                }
            }
        }
        self.revocation
            .has_pending
            .store(!state.pending.is_empty(), Ordering::SeqCst);
        if resolved > 0 {
            let consequences = self.publish(&state).await;
            tracing::info!(resolved, %consequences, "pending operator CRLs applied");
        }
    }

    /// After a command: if its chain has become revoked meanwhile (the CRL arrived while
    /// the command ran), what it created is handled like the rest of the revoked work.
    pub(crate) async fn recheck(self: &Arc<Self>, chain: &[ChainLink]) {
        let store = self.revocations();
        let revoked: BTreeSet<CertId> = chain
            .iter()
            .map(|link| link.id.clone())
            .filter(|id| store.is_revoked(id))
            .collect();
        if revoked.is_empty() {
            return;
        }
        let _state = self.revocation.state.lock().await;
        let consequences = self.apply_consequences(&revoked).await;
        tracing::warn!(%consequences, "a chain was revoked while its command ran");
    }

    /// Publishes the store of `state` and applies the consequences of what became
    /// revoked. The caller holds the state's lock.
    async fn publish(self: &Arc<Self>, state: &CrlState) -> Consequences {
        let store = state.book.store();
        let previous = self.revocation.current();
        let newly = store.newly_revoked_since(&previous);
        self.revocation.shared.replace(store);
        self.apply_consequences(&newly).await
    }

    /// Closes the consoles of `revoked` chains and, unless work is kept, destroys what
    /// they created and removes the policies they installed.
    async fn apply_consequences(self: &Arc<Self>, revoked: &BTreeSet<CertId>) -> Consequences {
        self.revocation.applied.fetch_add(
            u64::try_from(revoked.len()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let mut consequences = Consequences {
            newly_revoked: revoked.len(),
            kept: self.config.on_revoke == OnRevoke::Keep,
            ..Consequences::default()
        };
        if revoked.is_empty() {
            return consequences;
        }
        for id in revoked {
            let tag = console_tag_id(id);
            let reason = format!("certificate with serial {} is revoked", id.serial);
            consequences.consoles += self.console.close_where(|t| t.contains(&tag), &reason);
        }
        let affected = self.global().records.affected_by(revoked);
        if consequences.kept {
            let Affected {
                unikernels,
                blocks,
                policies,
            } = affected;
            consequences.unikernels = unikernels;
            consequences.blocks = blocks;
            consequences.policies = policies;
            return consequences;
        }
        for name in affected.unikernels {
            match self.destroy(&name).await {
                Ok(_) => {}
                Err(UnikernelError::DestroyNotFound) => {
                    self.global().records.remove_unikernel(&name);
                }
                Err(e) => {
                    tracing::error!(%name, error = %e, "could not destroy a revoked unikernel");
                    continue;
                }
            }
            self.console.forget(&name);
            tracing::info!(%name, "destroyed: created through a revoked certificate");
            consequences.unikernels.push(name);
        }
        for name in affected.blocks {
            match self.block_remove(&name).await {
                Ok(_) => {
                    tracing::info!(%name, "block device removed: created through a revoked certificate");
                    consequences.blocks.push(name);
                }
                Err(e) => {
                    tracing::error!(%name, error = %e, "could not remove a revoked block device")
                }
            }
        }
        let mut policies = affected.policies;
        policies.sort_by_key(|p| std::cmp::Reverse(p.labels().len()));
        for path in policies {
            let removed = {
                let mut global = self.global();
                let removed = global.resources.remove_policy(&path);
                global.records.remove_policy(&path);
                removed
            };
            match removed {
                Ok(_) => {
                    tracing::info!(path = %Name::of_path(path.clone()), "policy removed: installed through a revoked certificate");
                    consequences.policies.push(path);
                }
                Err(e) => {
                    tracing::warn!(path = %Name::of_path(path.clone()), error = %e, "revoked policy not removed")
                }
            }
        }
        consequences.policies.sort();
        if let Err(e) = self.persist().await {
            tracing::error!(error = %e, "could not save the state after a revocation");
        }
        consequences
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<Name> {
        v.iter().map(|n| Name::parse(n).unwrap()).collect()
    }

    #[test]
    fn summaries() {
        let mut c = Consequences {
            newly_revoked: 1,
            unikernels: names(&["alice:web"]),
            ..Consequences::default()
        };
        assert_eq!(
            c.to_string(),
            "1 certificate newly revoked; destroyed 1 unikernel (alice:web), 0 block devices; \
             removed 0 policies; closed 0 console subscriptions"
        );
        c.newly_revoked = 2;
        c.blocks = names(&["alice:disk"]);
        c.policies = vec![
            NamePath::parse("alice").unwrap(),
            NamePath::parse("alice:bob").unwrap(),
        ];
        c.consoles = 1;
        assert_eq!(
            c.to_string(),
            "2 certificates newly revoked; destroyed 1 unikernel (alice:web), 1 block device \
             (alice:disk); removed 2 policies (alice:, alice:bob:); closed 1 console subscription"
        );
        c.kept = true;
        assert_eq!(
            c.to_string(),
            "2 certificates newly revoked; kept 1 unikernel (alice:web), 1 block device \
             (alice:disk) and 2 policies (alice:, alice:bob:) (--on-revoke keep); closed 1 \
             console subscription"
        );
        let many: Vec<String> = (0..10).map(|i| format!("a:u{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let c = Consequences {
            unikernels: names(&many),
            ..Consequences::default()
        };
        assert_eq!(
            c.to_string(),
            "0 certificates newly revoked; destroyed 10 unikernels (a:u0, a:u1, a:u2, a:u3, \
             a:u4, a:u5, a:u6, a:u7, …), 0 block devices; removed 0 policies; closed 0 \
             console subscriptions"
        );
    }

    #[test]
    fn upload_errors_name_the_issuer() {
        let cases = [
            (
                UploadError::validation(CrlError::BadSignature, "alice"),
                "CRL not signed by the uploading certificate's issuer alice",
            ),
            (
                UploadError::validation(
                    CrlError::IssuerMismatch {
                        crl_issuer: "CN=bob".into(),
                        ca_subject: "CN=alice".into(),
                    },
                    "alice",
                ),
                "CRL issuer CN=bob is not the uploading certificate's issuer CN=alice",
            ),
            (
                UploadError::validation(
                    CrlError::Expired {
                        next_update: 1_748_779_200,
                        now: 1_748_779_260,
                    },
                    "alice",
                ),
                "CRL expired: nextUpdate 2025-06-01T12:00:00Z has passed (now 2025-06-01T12:01:00Z)",
            ),
            (
                UploadError::validation(CrlError::NoCrlNumber, "alice"),
                "invalid CRL: CRL without CRL number",
            ),
            (
                UploadError::TooLarge(10),
                "CRL exceeds the limit of 10 octets",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }

    #[test]
    fn operator_files_skip_hidden_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.crl"), b"x").unwrap();
        std::fs::write(dir.path().join("a.pem"), b"x").unwrap();
        std::fs::write(dir.path().join(".a.crl.tmp"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(
            crl_files_in(dir.path()).unwrap(),
            vec![dir.path().join("a.pem"), dir.path().join("b.crl")]
        );
        assert_eq!(
            crl_files_in(&dir.path().join("none")).unwrap(),
            Vec::<PathBuf>::new()
        );
    }
}
