//! `petrel-endpoint --inetd --executor-socket-path PATH CACERT CERT KEY [--user USER]`:
//! serves the one TCP connection on standard input through a running endpoint's executor.
//! It connects to the executor socket (`--executor-socket` of the long-running endpoint),
//! drops privileges with `--user` exactly as the TLS worker does, and serves the
//! connection with a [`RemoteHandler`]: the executor verifies the chain again and runs the
//! request, as it does for the TLS worker. This process writes nothing: no state, no audit
//! log (the executor logs every request it runs); its own log (handshake refusals) goes to
//! standard error, or with `--log-file` to `petrel-endpoint.log` beside the socket.

use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tokio::signal::unix::{SignalKind, signal};

use petrel::audit::AuditLog;
use petrel::privsep::control::ControlChannel;
use petrel::privsep::executor_socket;
use petrel::privsep::privileges::{self, Identity};
use petrel::privsep::remote::RemoteHandler;
use petrel::privsep::seccomp;
use petrel::revocation::{RevocationStore, SharedRevocations};
use petrel::server::Server;
use petrel::tls::Acceptor;
use petrel::verify::TrustAnchors;

use super::supervisor::WORKER_ROOT;
use super::{Args, LOG_FILE};

/// Mode of the log file if this process creates it.
const LOG_MODE: u32 = 0o600;

/// What `--inetd` without `--executor-socket-path` says.
pub(crate) const NEEDS_SOCKET: &str = "--inetd needs --executor-socket-path PATH: an inetd \
     connection is served through the executor of a running `petrel-endpoint \
     --executor-socket` (PATH is its <state-dir>/executor.sock); petrel no longer runs an \
     executor per connection";

/// Serves the connection on standard input to its end. `socket` is the executor socket.
pub(crate) fn run(args: &Args, socket: &Path) -> Result<()> {
    let dir = socket
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    init_logging(args, &dir)?;
    let limits = args.limits();
    let (cacert, cert, key) = match (&args.cacert, &args.cert, &args.key) {
        (Some(ca), Some(cert), Some(key)) => (ca, cert, key),
        _ => bail!("CACERT, CERT and KEY are required"),
    };
    let ca_pem = petrel::tls::read_pem_file(cacert)
        .with_context(|| format!("reading CA certificate {}", cacert.display()))?;
    let anchors = TrustAnchors::from_pem(&ca_pem)
        .with_context(|| format!("CA certificate {}", cacert.display()))?;
    let acceptor = Acceptor::from_files(&anchors, cert, key, limits.max_chain_size)
        .context("server certificate and key")?;
    drop(anchors);
    let stream = super::inetd_stream()?;
    let control = executor_socket::connect(socket).with_context(|| {
        format!(
            "connecting to the executor socket {} (is petrel-endpoint running with \
             --executor-socket?)",
            socket.display()
        )
    })?;
    if let Some(user) = &args.user {
        let identity = Identity::resolve(user, args.group.as_deref())?;
        let root = empty_root(&dir)?;
        // Opened now: after the change of root there is no /proc.
        let mut status = File::open("/proc/self/status").context("opening /proc/self/status")?;
        privileges::drop_privileges(&identity, &root)?;
        let filtered = seccomp::restrict()?;
        let mut text = String::new();
        status
            .rewind()
            .and_then(|()| status.read_to_string(&mut text))
            .context("reading /proc/self/status")?;
        drop(status);
        privileges::check_dropped(&text)?;
        if filtered {
            seccomp::check_filtered(&text)?;
        }
        tracing::debug!(
            user = %identity.user,
            uid = identity.uid,
            gid = identity.gid,
            seccomp = filtered,
            "inetd: privileges dropped"
        );
    }
    // SAFETY: prctl with a NUL-terminated name.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"petrel-inetd".as_ptr(), 0, 0, 0) };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(stream, control, acceptor, limits))
}

async fn serve(
    stream: std::net::TcpStream,
    control: OwnedFd,
    acceptor: Acceptor,
    limits: petrel::limits::Limits,
) -> Result<()> {
    let control = Arc::new(ControlChannel::new(control).context("executor socket")?);
    stream.set_nonblocking(true).context("--inetd socket")?;
    let stream = tokio::net::TcpStream::from_std(stream).context("--inetd socket")?;
    let peer = stream
        .peer_addr()
        .context("--inetd: standard input is not a connected socket")?;
    // The executor checks revocation for real; this store stays empty.
    let revocations = Arc::new(SharedRevocations::new(RevocationStore::new()));
    let server = Server::new(
        acceptor,
        Arc::new(RemoteHandler::new(control)),
        revocations,
        AuditLog::disabled(),
        limits,
    );
    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        () = server.serve_one(stream, peer) => {}
        _ = terminate.recv() => tracing::info!("inetd: SIGTERM"),
    }
    Ok(())
}

/// The empty directory the process changes root to with `--user`: `tls-root` beside the
/// executor socket, which the long-running endpoint makes with `--executor-socket`. It
/// must be a directory owned by root (or this user), writable by nobody, and empty.
fn empty_root(dir: &Path) -> Result<PathBuf> {
    let root =
        std::path::absolute(dir.join(WORKER_ROOT)).with_context(|| format!("{}", dir.display()))?;
    let meta = std::fs::symlink_metadata(&root).with_context(|| {
        format!(
            "--user: {} (the empty root made by petrel-endpoint --executor-socket)",
            root.display()
        )
    })?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let owner_ok = meta.uid() == 0 || meta.uid() == euid;
    if !meta.is_dir() || !owner_ok || meta.mode() & 0o222 != 0 {
        bail!(
            "--user: {} must be a directory owned by root and writable by nobody",
            root.display()
        );
    }
    let mut entries = std::fs::read_dir(&root).with_context(|| format!("{}", root.display()))?;
    if entries.next().is_some() {
        bail!("--user: {} must be empty", root.display());
    }
    Ok(root)
}

/// Logs go to `--log-file` (`petrel-endpoint.log` in `dir`, the state directory), else to
/// standard error unless standard error is the connection itself (classic inetd), where
/// nothing may be written: then nowhere.
fn init_logging(args: &Args, dir: &Path) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .map_err(|e| anyhow::anyhow!("--log-level {}: {e}", args.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    if args.log_file {
        let path = dir.join(LOG_FILE);
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(LOG_MODE)
            .open(&path)
            .with_context(|| format!("opening the log file {}", path.display()))?;
        builder.with_writer(std::sync::Mutex::new(file)).init();
    } else if stderr_is_the_connection() {
        builder.with_writer(std::io::sink).init();
    } else {
        builder.with_writer(std::io::stderr).init();
    }
    Ok(())
}

/// Whether standard error is the same open file as standard input (inetd hands the
/// connection as descriptors 0, 1 and 2).
pub(crate) fn stderr_is_the_connection() -> bool {
    let stat = |fd: std::os::fd::RawFd| -> Option<(u64, u64)> {
        // SAFETY: an all-zero stat buffer is valid for fstat to fill.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat writes into the buffer it is given.
        (unsafe { libc::fstat(fd, &mut stat) } == 0).then_some((stat.st_dev, stat.st_ino))
    };
    let stdin = stat(std::io::stdin().as_fd().as_raw_fd());
    let stderr = stat(std::io::stderr().as_fd().as_raw_fd());
    stdin.is_some() && stdin == stderr
}
