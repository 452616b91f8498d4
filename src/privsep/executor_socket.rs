//! The executor socket (`petrel-endpoint --executor-socket`): the long-running endpoint's
//! executor process also listens on `<state-dir>/executor.sock`, a `SOCK_SEQPACKET` Unix
//! socket (mode 0600, owned by the endpoint's user, root). Every accepted connection is a
//! control channel ([`super::control`]) served exactly like the TLS worker's, by the same
//! [`ExecutorService`]: each request socket passed on it has its chain verified again,
//! its request derived again and checked against the executor's revocation store. This is
//! how `petrel-endpoint --inetd` reaches the executor: one inetd process per TCP
//! connection, one control channel per inetd process.
//!
//! Who may connect: the socket file's mode lets only its owner (root) in, the state
//! directory (mode 0700) lets only root reach it, and each accepted peer's credentials
//! (`SO_PEERCRED`) are checked again: a uid other than 0 or the endpoint's own is refused.
//! At most a bounded number of control channels are served at once; more are closed at
//! once.

use std::ffi::OsStr;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Semaphore;

use super::control::ControlChannel;
use super::service::ExecutorService;

/// The executor socket's file name in the state directory.
pub const SOCKET_FILE: &str = "executor.sock";

/// The name the socket is bound to before it is renamed to [`SOCKET_FILE`], so that the
/// final name never shows a socket with another mode, and a stale one is replaced in one
/// step.
pub const BINDING_FILE: &str = "executor.sock.new";

/// Mode of the socket file: connecting needs write permission, so only its owner may.
pub const SOCKET_MODE: u32 = 0o600;

/// Default bound on control channels served at once (`--max-executor-clients`). Each is
/// one `--inetd` process serving one TCP connection, so this is the number of inetd
/// connections in progress at once; 64 is systemd's default `MaxConnections=` for
/// `Accept=yes` sockets, and every request socket is bounded again by the service
/// (`--max-connections`).
pub const MAX_EXECUTOR_CLIENTS: usize = 64;

/// Listen backlog of the executor socket: inetd processes that connect while the
/// executor is busy wait here. As large as the default bound on clients.
pub const BACKLOG: libc::c_int = 64;

/// Pause after a failed `accept` (e.g. out of descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why the executor socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorSocketError {
    /// A system call on the socket or its file failed.
    #[error("executor socket {path}: {what}: {source}")]
    Io {
        /// The socket file.
        path: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// Something other than a socket is in the way.
    #[error("executor socket {0}: exists and is not a socket (remove it)")]
    NotASocket(PathBuf),
    /// The path does not fit in a Unix socket address.
    #[error("executor socket {0}: path too long for a Unix socket (at most 107 octets)")]
    PathTooLong(PathBuf),
}

/// The credentials of a connected peer (`SO_PEERCRED`: as they were when it connected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Its process id.
    pub pid: i32,
    /// Its effective user id.
    pub uid: u32,
    /// Its effective group id.
    pub gid: u32,
}

/// Whether a peer with user id `peer_uid` may use the executor socket of an endpoint
/// running as `own_uid`: root, or the endpoint's own user.
pub fn peer_allowed(peer_uid: u32, own_uid: u32) -> bool {
    peer_uid == 0 || peer_uid == own_uid
}

/// The credentials of the peer of the connected Unix socket `fd`.
pub fn peer_credentials(fd: BorrowedFd<'_>) -> io::Result<PeerCredentials> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = libc::socklen_t::try_from(size_of::<libc::ucred>())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: getsockopt writes at most `len` octets into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::from_mut(&mut cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCredentials {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// Connects to the executor socket at `path` (blocking, close-on-exec): the `--inetd`
/// side's control channel.
pub fn connect(path: &Path) -> io::Result<OwnedFd> {
    let (addr, len) = address(path.as_os_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path too long"))?;
    let socket = seqpacket_socket(0)?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` octets.
    let rc = unsafe { libc::connect(socket.as_raw_fd(), std::ptr::from_ref(&addr).cast(), len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

/// The listening executor socket. Dropping it removes the socket file (if it is still
/// the one this process bound).
#[derive(Debug)]
pub struct ExecutorSocket {
    listener: AsyncFd<OwnedFd>,
    path: PathBuf,
    inode: (u64, u64),
    own_uid: u32,
}

impl ExecutorSocket {
    /// Binds `<state_dir>/executor.sock`: bound under [`BINDING_FILE`], given mode
    /// [`SOCKET_MODE`], listening, then renamed over [`SOCKET_FILE`] (replacing a stale
    /// socket of an earlier run; anything else in the way is an error). Must be called
    /// inside a tokio runtime, by the process holding the state directory's lock.
    pub fn bind(state_dir: &Path) -> Result<Self, ExecutorSocketError> {
        let path = state_dir.join(SOCKET_FILE);
        let binding = state_dir.join(BINDING_FILE);
        let io = |path: &Path, what: &'static str| {
            let path = path.to_path_buf();
            move |source| ExecutorSocketError::Io { path, what, source }
        };
        for existing in [&path, &binding] {
            match std::fs::symlink_metadata(existing) {
                Ok(meta) if meta.file_type().is_socket() => {}
                Ok(_) => return Err(ExecutorSocketError::NotASocket(existing.clone())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(existing, "inspecting")(e)),
            }
        }
        match std::fs::remove_file(&binding) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&binding, "removing a stale socket")(e)),
        }
        let (addr, len) = address(binding.as_os_str())
            .ok_or_else(|| ExecutorSocketError::PathTooLong(binding.clone()))?;
        let socket = seqpacket_socket(libc::SOCK_NONBLOCK).map_err(io(&path, "socket"))?;
        // SAFETY: `addr` is a valid sockaddr_un of `len` octets.
        let rc = unsafe { libc::bind(socket.as_raw_fd(), std::ptr::from_ref(&addr).cast(), len) };
        if rc != 0 {
            return Err(io(&binding, "bind")(io::Error::last_os_error()));
        }
        // Nobody can connect before `listen`, so the mode is right before anyone can.
        std::fs::set_permissions(&binding, std::fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(io(&binding, "chmod"))?;
        // SAFETY: listen on a bound socket.
        if unsafe { libc::listen(socket.as_raw_fd(), BACKLOG) } != 0 {
            return Err(io(&binding, "listen")(io::Error::last_os_error()));
        }
        std::fs::rename(&binding, &path).map_err(io(&path, "renaming into place"))?;
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path, "inspecting"))?;
        // SAFETY: an OwnedFd is a valid open descriptor, owned by the AsyncFd for its whole
        // lifetime, and always reports the same number.
        let listener = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(|e| io(&path, "registering with the runtime")(io::Error::from(e)))?;
        // SAFETY: geteuid has no preconditions.
        let own_uid = unsafe { libc::geteuid() };
        Ok(Self {
            listener,
            path,
            inode: (meta.dev(), meta.ino()),
            own_uid,
        })
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts control channels for ever, serving each with `service` in a task of its
    /// own, at most `max_clients` at once (more are closed at once). Peers whose uid is
    /// neither 0 nor this process's are closed at once. Stop it by dropping the future
    /// (the channels already accepted are served on).
    pub async fn serve(&self, service: Arc<ExecutorService>, max_clients: usize) {
        let clients = Arc::new(Semaphore::new(max_clients.clamp(1, Semaphore::MAX_PERMITS)));
        loop {
            let accepted = match self.accept().await {
                Ok(fd) => fd,
                Err(e) => {
                    tracing::warn!(error = %e, "executor socket: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            self.admit(accepted, &service, &clients);
        }
    }

    async fn accept(&self) -> io::Result<OwnedFd> {
        loop {
            let mut guard = self.listener.readable().await?;
            match guard.try_io(|listener| accept(listener.as_raw_fd())) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    fn admit(&self, fd: OwnedFd, service: &Arc<ExecutorService>, clients: &Arc<Semaphore>) {
        let peer = match peer_credentials(std::os::fd::AsFd::as_fd(&fd)) {
            Ok(peer) => peer,
            Err(e) => {
                tracing::warn!(error = %e, "executor socket: no peer credentials; closed");
                return;
            }
        };
        if !peer_allowed(peer.uid, self.own_uid) {
            tracing::warn!(
                pid = peer.pid,
                uid = peer.uid,
                gid = peer.gid,
                "executor socket: peer refused (uid neither 0 nor the endpoint's)"
            );
            return;
        }
        let Ok(permit) = Arc::clone(clients).try_acquire_owned() else {
            tracing::warn!(
                pid = peer.pid,
                uid = peer.uid,
                "executor socket: peer refused: too many clients at once \
                 (--max-executor-clients)"
            );
            return;
        };
        let control = match ControlChannel::new(fd) {
            Ok(control) => Arc::new(control),
            Err(e) => {
                tracing::warn!(error = %e, "executor socket: peer refused");
                return;
            }
        };
        tracing::info!(
            pid = peer.pid,
            uid = peer.uid,
            gid = peer.gid,
            "executor socket: client connected"
        );
        let service = Arc::clone(service);
        tokio::spawn(async move {
            service.serve_control(control, None).await;
            drop(permit);
        });
    }
}

impl Drop for ExecutorSocket {
    fn drop(&mut self) {
        // Only the file this process bound: never one a later process put there.
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.inode);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "removing the executor socket");
            }
        }
    }
}

/// `socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | flags)`.
fn seqpacket_socket(flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket with integer arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | flags,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `accept4(fd, SOCK_CLOEXEC)`.
fn accept(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: accept4 without an address buffer.
    let new = unsafe {
        libc::accept4(
            fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The `sockaddr_un` for `path` and its length; `None` if the path (with its NUL) does
/// not fit or holds a NUL.
fn address(path: &OsStr) -> Option<(libc::sockaddr_un, libc::socklen_t)> {
    let bytes = path.as_bytes();
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.is_empty() || bytes.contains(&0) || bytes.len() >= addr.sun_path.len() {
        return None;
    }
    addr.sun_family = libc::sa_family_t::try_from(libc::AF_UNIX).ok()?;
    for (slot, byte) in addr.sun_path.iter_mut().zip(bytes) {
        *slot = libc::c_char::from_ne_bytes([*byte]);
    }
    let len = size_of::<libc::sa_family_t>()
        .checked_add(bytes.len())?
        .checked_add(1)?;
    Some((addr, libc::socklen_t::try_from(len).ok()?))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use crate::privsep::control::ControlMessage;
    use crate::privsep::sys;

    #[test]
    fn only_root_and_the_endpoints_own_user_may_connect() {
        assert!(peer_allowed(0, 0));
        assert!(peer_allowed(0, 1000));
        assert!(peer_allowed(1000, 1000));
        assert!(!peer_allowed(1000, 0));
        assert!(!peer_allowed(65534, 1000));
    }

    #[test]
    fn addresses_fit_sun_path() {
        let (addr, len) = address(OsStr::new("/a/b")).unwrap();
        assert_eq!(
            usize::try_from(len).unwrap(),
            size_of::<libc::sa_family_t>() + 5
        );
        assert_eq!(
            &addr.sun_path[..5],
            &[47, 97, 47, 98, 0].map(|b| b as libc::c_char)
        );
        assert!(address(OsStr::new(&"x".repeat(107))).is_some());
        assert!(address(OsStr::new(&"x".repeat(108))).is_none());
        assert!(address(OsStr::new("")).is_none());
        assert!(address(OsStr::from_bytes(b"a\0b")).is_none());
    }

    #[tokio::test]
    async fn the_socket_is_private_replaces_a_stale_one_and_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SOCKET_FILE);
        // A stale socket of an earlier run (bound, then its process gone).
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        let socket = ExecutorSocket::bind(dir.path()).unwrap();
        assert_eq!(socket.path(), path);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o7777, SOCKET_MODE);
        assert!(!dir.path().join(BINDING_FILE).exists());

        // A client connects; its credentials are ours.
        let client = connect(&path).unwrap();
        let accepted = socket.accept().await.unwrap();
        assert_eq!(
            sys::socket_kind(accepted.as_raw_fd()).unwrap(),
            (libc::AF_UNIX, libc::SOCK_SEQPACKET)
        );
        let peer = peer_credentials(accepted.as_fd()).unwrap();
        // SAFETY: getpid, geteuid and getegid have no preconditions.
        let own = unsafe { (libc::getpid(), libc::geteuid(), libc::getegid()) };
        assert_eq!((peer.pid, peer.uid, peer.gid), own);
        // It is a control channel.
        let theirs = ControlChannel::new(client).unwrap();
        let ours = ControlChannel::new(accepted).unwrap();
        theirs.send(&ControlMessage::Ready).await.unwrap();
        assert_eq!(ours.recv().await.unwrap().unwrap().name(), "ready");

        drop(socket);
        assert!(!path.exists());
        assert_eq!(connect(&path).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn something_else_in_the_way_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SOCKET_FILE);
        std::fs::write(&path, b"not a socket").unwrap();
        assert_eq!(
            ExecutorSocket::bind(dir.path()).unwrap_err().to_string(),
            format!(
                "executor socket {}: exists and is not a socket (remove it)",
                path.display()
            )
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
    }

    #[tokio::test]
    async fn dropping_leaves_a_socket_another_process_put_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SOCKET_FILE);
        let socket = ExecutorSocket::bind(dir.path()).unwrap();
        std::fs::remove_file(&path).unwrap();
        let other = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(socket);
        assert!(path.exists());
        drop(other);
    }
}
