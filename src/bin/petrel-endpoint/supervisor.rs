//! The privileged side of `--user`: this process keeps the executor and serves the TLS
//! worker's control channel; the worker is a re-execution of this binary with the hidden
//! `--tls-worker` flag, started with its descriptors (`WorkerFds`), restarted with a
//! back-off when it dies, and stopped (SIGTERM, then SIGKILL) when this process stops.

use std::fs::OpenOptions;
use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use petrel::audit::AuditLog;
use petrel::privsep::audit_relay;
use petrel::privsep::control::ControlChannel;
use petrel::privsep::service::ExecutorService;
use petrel::privsep::{
    Credentials, CurrentWorker, RestartBackoff, WORKER_FLAG, WORKER_STOP_TIMEOUT, WorkerFds,
    WorkerLink,
};

use super::{Args, LOG_FILE, one_line};

/// The empty directory under the state directory that the TLS worker changes root to.
pub(crate) const WORKER_ROOT: &str = "tls-root";

/// Mode of [`WORKER_ROOT`]: nobody may write into it.
const WORKER_ROOT_MODE: u32 = 0o555;

/// How long a stopped worker's last audit records may take to arrive.
const AUDIT_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// What every TLS worker is started with.
pub(crate) struct Worker {
    /// The listening socket.
    pub(crate) listener: std::net::TcpListener,
    /// The audit log, which the worker's records are relayed into.
    pub(crate) audit: AuditLog,
    /// CA, certificate and key.
    pub(crate) credentials: Credentials,
    /// The empty directory the worker changes root to.
    pub(crate) root: PathBuf,
}

/// `<state>/tls-root`, created if needed: a directory owned by this process's user, mode
/// 0555, and empty (refused otherwise).
pub(crate) fn empty_root(state_dir: &Path) -> Result<PathBuf> {
    let root = std::path::absolute(state_dir.join(WORKER_ROOT))
        .with_context(|| format!("{}", state_dir.display()))?;
    match std::fs::DirBuilder::new()
        .mode(WORKER_ROOT_MODE)
        .create(&root)
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", root.display())),
    }
    let meta = std::fs::symlink_metadata(&root).with_context(|| format!("{}", root.display()))?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != euid {
        bail!(
            "{} must be a directory owned by uid {euid} (the TLS worker's empty root)",
            root.display()
        );
    }
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(WORKER_ROOT_MODE))
        .with_context(|| format!("{}", root.display()))?;
    let mut entries = std::fs::read_dir(&root).with_context(|| format!("{}", root.display()))?;
    if entries.next().is_some() {
        bail!(
            "{} must be empty (the TLS worker's root directory)",
            root.display()
        );
    }
    Ok(root)
}

/// Runs TLS workers, one at a time, until `stop` completes; returns what stopped it.
pub(crate) async fn run(
    args: &Args,
    worker: Worker,
    service: Arc<ExecutorService>,
    current: &CurrentWorker,
    stop: impl Future<Output = &'static str>,
) -> &'static str {
    tokio::pin!(stop);
    let mut backoff = RestartBackoff::default();
    loop {
        let started = Instant::now();
        match spawn(args, &worker) {
            Ok((mut child, control, audit)) => {
                let link = Arc::new(WorkerLink::new(Arc::clone(&control)));
                current.set(Some(Arc::clone(&link)));
                let served = tokio::spawn(Arc::clone(&service).serve_control(control, Some(link)));
                let relayed = tokio::spawn(audit_relay::relay(audit, worker.audit.clone()));
                tracing::info!(pid = child.id(), user = ?args.user, "TLS worker started");
                let status = tokio::select! {
                    status = child.wait() => status,
                    signal = &mut stop => {
                        stop_worker(&mut child).await;
                        current.set(None);
                        served.abort();
                        drain(relayed).await;
                        return signal;
                    }
                };
                current.set(None);
                served.abort();
                drain(relayed).await;
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                let delay = backoff.after(started.elapsed());
                tracing::warn!(
                    %status,
                    delay_ms = delay.as_millis(),
                    "the TLS worker exited; restarting it"
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    signal = &mut stop => return signal,
                }
            }
            Err(e) => {
                let delay = backoff.after(started.elapsed());
                tracing::error!(
                    error = %one_line(&e),
                    delay_ms = delay.as_millis(),
                    "cannot start the TLS worker; retrying"
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    signal = &mut stop => return signal,
                }
            }
        }
    }
}

/// Waits for the audit relay of a worker that exited to write its last records: it ends
/// by itself when the worker's end closes, which is at once unless a descendant holds it.
async fn drain(relayed: tokio::task::JoinHandle<std::io::Result<()>>) {
    let abort = relayed.abort_handle();
    match tokio::time::timeout(AUDIT_DRAIN, relayed).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "audit relay from the TLS worker failed"),
        Ok(Err(_)) => {}
        Err(_) => {
            abort.abort();
            tracing::warn!("audit relay from the TLS worker still open; closed");
        }
    }
}

/// Starts one worker: a fresh control channel and audit relay, the descriptors moved to
/// 3..=6, and `/proc/self/exe` with this process's arguments plus `--tls-worker ROOT`.
/// Returns the child, the control channel and this process's end of the audit relay.
fn spawn(
    args: &Args,
    worker: &Worker,
) -> Result<(tokio::process::Child, Arc<ControlChannel>, OwnedFd)> {
    let (mine, theirs) = ControlChannel::pair().context("control channel")?;
    let control = Arc::new(ControlChannel::new(mine).context("control channel")?);
    let (audit, audit_theirs) = audit_relay::pair().context("audit relay")?;
    let fds = WorkerFds {
        listener: OwnedFd::from(worker.listener.try_clone().context("listening socket")?),
        control: theirs,
        audit: audit_theirs,
        credentials: worker.credentials.memfd()?,
    };
    let high = fds.high_duplicates().context("duplicating descriptors")?;
    drop(fds);
    let raw: [RawFd; 4] = high.each_ref().map(AsRawFd::as_raw_fd);
    let mut command = std::process::Command::new("/proc/self/exe");
    command
        .args(std::env::args_os().skip(1))
        .arg(WORKER_FLAG)
        .arg(&worker.root)
        .stdin(Stdio::null());
    if args.log_file {
        let state_dir = worker.root.parent().unwrap_or(Path::new("."));
        let log = OpenOptions::new()
            .append(true)
            .create(true)
            .open(state_dir.join(LOG_FILE))
            .context("opening the log file for the TLS worker")?;
        command.stdout(Stdio::null()).stderr(log);
    }
    // SAFETY: the hook only calls dup2, which is async-signal-safe, on descriptors that
    // stay open (`high`) until spawn returns.
    unsafe {
        command.pre_exec(move || WorkerFds::pre_exec(&raw));
    }
    let child = tokio::process::Command::from(command)
        .kill_on_drop(true)
        .spawn()
        .context("starting /proc/self/exe")?;
    drop(high);
    Ok((child, control, audit))
}

/// SIGTERM, then SIGKILL if the worker has not exited within [`WORKER_STOP_TIMEOUT`].
async fn stop_worker(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok()) {
        // SAFETY: signalling our own child process, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    if tokio::time::timeout(WORKER_STOP_TIMEOUT, child.wait())
        .await
        .is_err()
    {
        tracing::warn!("the TLS worker did not stop; killing it");
        let _ = child.kill().await;
    }
    tracing::info!("TLS worker stopped");
}
