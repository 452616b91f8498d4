//! Privilege separation (`petrel-endpoint --user USER`): the TLS side, which parses
//! unauthenticated input with OpenSSL, runs as an unprivileged child process (the *TLS
//! worker*); the executor stays in the privileged parent and is reached over a control
//! channel ([`control`]) on which the worker passes one fresh request socket per request
//! ([`request`]).
//!
//! - The parent starts the executor, binds the listening socket, opens the audit log and
//!   reads the CA, certificate and key; then it re-executes its own binary with
//!   [`WORKER_FLAG`] and hands it [`WorkerFds`] (descriptors 3 to 6: the listening
//!   socket, its end of the control channel, its end of the audit relay
//!   ([`audit_relay`]), a memfd with the [`Credentials`]). It serves the control channel with an [`service::ExecutorService`]
//!   and restarts the worker (with a back-off, [`RestartBackoff`]) if it dies.
//! - The worker reads its descriptors, builds the TLS acceptor, drops every privilege for
//!   good ([`privileges::drop_privileges`]: an empty chroot, no groups, the user's ids,
//!   `PR_SET_NO_NEW_PRIVS`), installs its system call filter ([`seccomp`]), checks that
//!   nothing is left ([`privileges::check_dropped`], [`seccomp::check_filtered`]) and only
//!   then serves, with a [`remote::RemoteHandler`] as the server's handler.
//! - The executor process never trusts the worker: it verifies each chain again, derives
//!   the request again and checks it against its own revocation store
//!   ([`service::ExecutorService`]).

pub mod audit_relay;
pub mod control;
pub mod executor_socket;
pub mod figures;
pub mod privileges;
pub mod remote;
pub mod request;
pub mod seccomp;
pub mod service;
pub mod sys;

use std::io::{self, Read};
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use crate::codec::{self, FrameLength};
use crate::metrics::ServerFigures;
use control::{ControlChannel, ControlMessage};

/// The hidden command line flag that makes `petrel-endpoint` a TLS worker; its value is
/// the empty directory the worker changes root to.
pub const WORKER_FLAG: &str = "--tls-worker";

/// How long the executor process waits for a request socket's chain and peer address.
/// The TLS side writes them at once after its handshake, from memory, so anything slower
/// than this is a stuck or hostile worker; 10 s leaves room for a loaded machine.
pub const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The executor process waits this many times the idle timeout for the TLS side (between
/// two input chunks, or to take a frame): the TLS side applies the idle timeout to its
/// client, so the executor's own bound never fires first for a legitimate client.
pub const EXECUTOR_IDLE_FACTOR: u32 = 2;

/// How long the TLS worker holds back the answer to a request whose socket the executor
/// process closed without a final reply. That happens when the executor process dies;
/// the worker then dies too (its parent-death signal) within this time, and the client
/// sees no reply, as with one process. 1 s is far above the time a signal takes.
pub const EXECUTOR_GONE_GRACE: Duration = Duration::from_secs(1);

/// Largest credentials memfd the worker reads: the CA file is bounded by
/// [`crate::verify::MAX_CA_FILE_SIZE`]; a certificate chain and a key are a few KiB, so
/// 4 MiB more is ample.
pub const MAX_CREDENTIALS_SIZE: usize = crate::verify::MAX_CA_FILE_SIZE + 4 * 1024 * 1024;

/// How long a figures query waits for the worker's answer before the scrape goes on
/// without the server's counters (the worker answers from memory at once).
pub const FIGURES_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the parent waits for the worker to exit after SIGTERM before it kills it:
/// the worker stops accepting at once and only waits for its audit writer.
pub const WORKER_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why privilege separation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrivsepError {
    /// `--user` names no user.
    #[error("--user {0}: no such user")]
    UnknownUser(String),
    /// `--group` names no group.
    #[error("--group {0}: no such group")]
    UnknownGroup(String),
    /// `--user` or `--group` is root.
    #[error("--user {0}: the TLS worker must not run as root (uid or gid 0)")]
    RootIdentity(String),
    /// The user or group database could not be read.
    #[error("looking up {0}: {1}")]
    Lookup(String, String),
    /// A step of dropping privileges failed.
    #[error("dropping privileges: {0}: {1}")]
    Drop(&'static str, String),
    /// After the drop, the process still holds a privilege.
    #[error("still privileged: {0}")]
    StillPrivileged(String),
    /// A descriptor the worker expects is missing or of the wrong kind.
    #[error("descriptor {0}: {1}")]
    Descriptor(RawFd, &'static str),
    /// The credentials memfd does not hold what the parent wrote.
    #[error("credentials: {0}")]
    Credentials(String),
}

/// The descriptors the TLS worker inherits, at these fixed numbers.
#[derive(Debug)]
pub struct WorkerFds {
    /// The listening TCP socket (descriptor 3).
    pub listener: OwnedFd,
    /// The worker's end of the control channel (descriptor 4).
    pub control: OwnedFd,
    /// The worker's end of the audit relay, a `SOCK_SEQPACKET` socket (descriptor 5).
    pub audit: OwnedFd,
    /// A memfd with the [`Credentials`] (descriptor 6).
    pub credentials: OwnedFd,
}

impl WorkerFds {
    /// Descriptor numbers in the worker, in the order of the fields.
    pub const NUMBERS: [RawFd; 4] = [3, 4, 5, 6];

    /// Takes descriptors 3 to 6 of this process (the worker), checking their kinds.
    ///
    /// # Safety
    /// Only in a process started by [`WorkerFds::pre_exec`]'s caller: descriptors 3 to 6
    /// must have been handed over and be owned by nothing else in the process.
    pub unsafe fn inherited() -> Result<Self, PrivsepError> {
        let [listener, control, audit, credentials] = Self::NUMBERS;
        for fd in [listener, control, audit] {
            if !sys::is_kind(fd, libc::S_IFSOCK) {
                return Err(PrivsepError::Descriptor(fd, "not a socket"));
            }
        }
        if !sys::is_kind(credentials, libc::S_IFREG) {
            return Err(PrivsepError::Descriptor(credentials, "not a regular file"));
        }
        // SAFETY: the caller guarantees the descriptors were handed over to this process
        // and nothing else owns them; each is open (checked above).
        let take = |fd| unsafe { OwnedFd::from_raw_fd(fd) };
        let fds = Self {
            listener: take(listener),
            control: take(control),
            audit: take(audit),
            credentials: take(credentials),
        };
        for fd in Self::NUMBERS {
            // SAFETY: F_SETFD on a descriptor this process owns.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        Ok(fds)
    }

    /// Duplicates of the four descriptors numbered 100 or above (so that moving them to
    /// 3..=6 in the child cannot clobber one another), close-on-exec.
    pub fn high_duplicates(&self) -> io::Result<[OwnedFd; 4]> {
        let high = |fd: &OwnedFd| sys::dup_at_least(fd.as_fd(), 100);
        Ok([
            high(&self.listener)?,
            high(&self.control)?,
            high(&self.audit)?,
            high(&self.credentials)?,
        ])
    }

    /// In the child between fork and exec: moves `high` (from
    /// [`WorkerFds::high_duplicates`]) to descriptors 3 to 6 (without close-on-exec).
    /// Only calls `dup2`, which is async-signal-safe.
    pub fn pre_exec(high: &[RawFd; 4]) -> io::Result<()> {
        for (from, to) in high.iter().zip(Self::NUMBERS) {
            // SAFETY: dup2 between descriptors; async-signal-safe.
            if unsafe { libc::dup2(*from, to) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// What the worker needs to terminate TLS, handed over in a memfd so that it needs no
/// file access: the CA certificate(s), the server certificate (and chain) and the key,
/// each PEM, each as one length-prefixed chunk ([`crate::codec::frame`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The CA certificate(s) client chains are verified against.
    pub ca_pem: Vec<u8>,
    /// The server certificate, optionally followed by its chain.
    pub cert_pem: Vec<u8>,
    /// The server's private key.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("ca_pem", &self.ca_pem.len())
            .field("cert_pem", &self.cert_pem.len())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The three chunks, framed.
    pub fn encode(&self) -> Result<Vec<u8>, PrivsepError> {
        let mut out = Vec::new();
        for part in [&self.ca_pem, &self.cert_pem, &self.key_pem] {
            let framed =
                codec::frame(part).map_err(|e| PrivsepError::Credentials(e.to_string()))?;
            out.extend_from_slice(&framed);
        }
        Ok(out)
    }

    /// Reads what [`Credentials::encode`] made; nothing may follow.
    pub fn decode(bytes: &[u8]) -> Result<Self, PrivsepError> {
        let bad = |what: &str| PrivsepError::Credentials(what.to_owned());
        let mut rest = bytes;
        let mut parts = Vec::with_capacity(3);
        for _ in 0..3 {
            let (header, tail) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| bad("truncated"))?;
            let len = match codec::decode_frame_header(*header, MAX_CREDENTIALS_SIZE) {
                Ok(FrameLength::Body(len)) => len,
                Ok(FrameLength::EndOfStream) => return Err(bad("empty part")),
                Err(e) => return Err(PrivsepError::Credentials(e.to_string())),
            };
            let body = tail.get(..len).ok_or_else(|| bad("truncated"))?;
            parts.push(body.to_vec());
            rest = tail.get(len..).unwrap_or_default();
        }
        if !rest.is_empty() {
            return Err(bad("trailing octets"));
        }
        let mut parts = parts.into_iter();
        let mut next = || parts.next().unwrap_or_default();
        Ok(Self {
            ca_pem: next(),
            cert_pem: next(),
            key_pem: next(),
        })
    }

    /// A memfd holding the encoded credentials.
    pub fn memfd(&self) -> Result<OwnedFd, PrivsepError> {
        sys::memfd_with(c"petrel-credentials", &self.encode()?)
            .map_err(|e| PrivsepError::Credentials(e.to_string()))
    }

    /// Reads the credentials from `fd` (at most [`MAX_CREDENTIALS_SIZE`] octets), which is
    /// closed afterwards.
    pub fn read(fd: OwnedFd) -> Result<Self, PrivsepError> {
        let file = std::fs::File::from(fd);
        let mut bytes = Vec::new();
        let limit = u64::try_from(MAX_CREDENTIALS_SIZE.saturating_add(1)).unwrap_or(u64::MAX);
        file.take(limit)
            .read_to_end(&mut bytes)
            .map_err(|e| PrivsepError::Credentials(e.to_string()))?;
        if bytes.len() > MAX_CREDENTIALS_SIZE {
            return Err(PrivsepError::Credentials("too large".to_owned()));
        }
        Self::decode(&bytes)
    }
}

/// The executor process's view of one TLS worker: whether it said `ready`, and its
/// answers to figures queries.
#[derive(Debug)]
pub struct WorkerLink {
    control: std::sync::Arc<ControlChannel>,
    ready: Notify,
    is_ready: std::sync::atomic::AtomicBool,
    query: tokio::sync::Mutex<()>,
    pending: Mutex<Option<oneshot::Sender<Vec<u8>>>>,
}

impl WorkerLink {
    /// A link over `control` (the parent's end of the worker's control channel).
    pub fn new(control: std::sync::Arc<ControlChannel>) -> Self {
        Self {
            control,
            ready: Notify::new(),
            is_ready: std::sync::atomic::AtomicBool::new(false),
            query: tokio::sync::Mutex::new(()),
            pending: Mutex::new(None),
        }
    }

    /// The worker said `ready`.
    pub fn ready(&self) {
        self.is_ready
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.ready.notify_waiters();
    }

    /// Waits until the worker said `ready`.
    pub async fn wait_ready(&self) {
        loop {
            let notified = self.ready.notified();
            if self.is_ready.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// The worker's answer to a figures query; unasked answers are dropped.
    pub fn deliver(&self, json: Vec<u8>) {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(pending) = pending {
            let _ = pending.send(json);
        }
    }

    /// Asks the worker for the server's counters; `None` if it does not answer within
    /// [`FIGURES_TIMEOUT`] or its answer does not decode.
    pub async fn figures(&self) -> Option<ServerFigures> {
        let _one_at_a_time = self.query.lock().await;
        let (tx, rx) = oneshot::channel();
        *self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tx);
        self.control
            .send(&ControlMessage::FiguresQuery)
            .await
            .ok()?;
        let json = tokio::time::timeout(FIGURES_TIMEOUT, rx).await.ok()?.ok()?;
        match figures::decode(&json) {
            Ok(figures) => Some(figures),
            Err(e) => {
                tracing::warn!(error = %e, "the TLS worker's figures");
                None
            }
        }
    }
}

/// The TLS worker running now, if any: the parent's source of the server's counters for
/// `--metrics` and `--influx`.
#[derive(Debug, Default)]
pub struct CurrentWorker(Mutex<Option<std::sync::Arc<WorkerLink>>>);

impl CurrentWorker {
    /// `link` is the worker now (`None`: there is none).
    pub fn set(&self, link: Option<std::sync::Arc<WorkerLink>>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = link;
    }

    fn link(&self) -> Option<std::sync::Arc<WorkerLink>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl crate::metrics::RemoteFigures for CurrentWorker {
    fn figures(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<ServerFigures>> + Send + '_>>
    {
        let link = self.link();
        Box::pin(async move {
            match link {
                Some(link) => link.figures().await,
                None => None,
            }
        })
    }
}

/// The delay before restarting a worker that died: doubling from
/// [`RestartBackoff::FIRST`] up to [`RestartBackoff::MAX`], back to the first after a
/// worker that ran for [`RestartBackoff::STABLE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartBackoff {
    next: Duration,
}

impl Default for RestartBackoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl RestartBackoff {
    /// The first delay: short, so that a crash costs clients little.
    pub const FIRST: Duration = Duration::from_millis(100);
    /// The longest delay: a worker that cannot start is retried every 10 s without
    /// filling the log.
    pub const MAX: Duration = Duration::from_secs(10);
    /// A worker that ran this long was healthy; its death restarts the back-off.
    pub const STABLE: Duration = Duration::from_secs(60);

    /// The delay after a worker that ran for `ran`.
    pub fn after(&mut self, ran: Duration) -> Duration {
        if ran >= Self::STABLE {
            self.next = Self::FIRST;
        }
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(Self::MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_through_a_memfd() {
        let credentials = Credentials {
            ca_pem: b"ca".to_vec(),
            cert_pem: b"cert".to_vec(),
            key_pem: b"key".to_vec(),
        };
        let fd = credentials.memfd().unwrap();
        assert_eq!(Credentials::read(fd).unwrap(), credentials);
        let encoded = credentials.encode().unwrap();
        assert_eq!(
            Credentials::decode(&encoded[..encoded.len() - 1]),
            Err(PrivsepError::Credentials("truncated".to_owned()))
        );
        let mut longer = encoded.clone();
        longer.push(0);
        assert_eq!(
            Credentials::decode(&longer),
            Err(PrivsepError::Credentials("trailing octets".to_owned()))
        );
        assert_eq!(
            Credentials::decode(&[0, 0, 0, 0]),
            Err(PrivsepError::Credentials("empty part".to_owned()))
        );
    }

    #[test]
    fn the_backoff_doubles_and_resets() {
        let mut backoff = RestartBackoff::default();
        let short = Duration::from_secs(1);
        let delays: Vec<u128> = (0..9).map(|_| backoff.after(short).as_millis()).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
        assert_eq!(backoff.after(RestartBackoff::STABLE), RestartBackoff::FIRST);
        assert_eq!(backoff.after(short), Duration::from_millis(200));
    }

    #[tokio::test]
    async fn figures_queries_are_answered_over_the_link() {
        let (a, b) = ControlChannel::pair().unwrap();
        let parent = std::sync::Arc::new(ControlChannel::new(a).unwrap());
        let worker = ControlChannel::new(b).unwrap();
        let link = std::sync::Arc::new(WorkerLink::new(std::sync::Arc::clone(&parent)));
        let metrics = crate::metrics::ServerMetrics::default();
        metrics.connection_refused();
        let expected = metrics.snapshot();
        let answer = figures::encode(&expected);
        let serve = {
            let link = std::sync::Arc::clone(&link);
            tokio::spawn(async move {
                while let Ok(Some(message)) = parent.recv().await {
                    match message {
                        ControlMessage::Figures(json) => link.deliver(json),
                        ControlMessage::Ready => link.ready(),
                        other => panic!("{other:?}"),
                    }
                }
            })
        };
        let answering = tokio::spawn(async move {
            worker.send(&ControlMessage::Ready).await.unwrap();
            assert!(matches!(
                worker.recv().await.unwrap(),
                Some(ControlMessage::FiguresQuery)
            ));
            worker.send(&ControlMessage::Figures(answer)).await.unwrap();
            worker
        });
        link.wait_ready().await;
        assert_eq!(link.figures().await, Some(expected));
        drop(answering.await.unwrap());
        serve.await.unwrap();
    }
}
