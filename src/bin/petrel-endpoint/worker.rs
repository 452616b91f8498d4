//! The TLS worker of `--user`: started by the supervisor with its descriptors, it builds
//! the TLS acceptor, drops every privilege for good, installs its system call filter,
//! checks `/proc/self/status`, and only then serves; requests go to the executor process
//! over the control channel.

use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use petrel::audit::AuditLog;
use petrel::limits::{self, Limits};
use petrel::metrics::ServerMetrics;
use petrel::privsep::control::{ControlChannel, ControlMessage};
use petrel::privsep::privileges::{self, Identity};
use petrel::privsep::remote::RemoteHandler;
use petrel::privsep::seccomp;
use petrel::privsep::{Credentials, WorkerFds, figures};
use petrel::revocation::{RevocationStore, SharedRevocations};
use petrel::server::Server;
use petrel::tls::Acceptor;
use petrel::verify::TrustAnchors;

use super::Args;

/// Runs the worker to its end. `root` is the empty directory it changes root to.
pub(crate) fn run(args: &Args, root: &Path) -> Result<()> {
    init_logging(args)?;
    // SAFETY: the hidden --tls-worker flag is only given by the supervisor, which hands
    // descriptors 3 to 6 over to this process.
    let fds = unsafe { WorkerFds::inherited() }?;
    let WorkerFds {
        listener,
        control,
        audit,
        credentials,
    } = fds;
    let credentials = Credentials::read(credentials)?;
    let limits = args.limits();
    let anchors = TrustAnchors::from_pem(&credentials.ca_pem).context("CA certificate")?;
    let acceptor = Acceptor::new(
        &anchors,
        &credentials.cert_pem,
        &credentials.key_pem,
        limits.max_chain_size,
    )
    .context("server certificate and key")?;
    drop(credentials);
    let user = args.user.as_deref().context("--tls-worker needs --user")?;
    let identity = Identity::resolve(user, args.group.as_deref())?;
    // Opened now: after the change of root there is no /proc.
    let mut status = File::open("/proc/self/status").context("opening /proc/self/status")?;
    privileges::drop_privileges(&identity, root)?;
    // Before any other thread exists; TSYNC would cover them anyway.
    let filtered = seccomp::restrict()?;
    // SAFETY: prctl with integer arguments and a NUL-terminated name. The parent-death
    // signal is set after the change of ids, which would clear it.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, c"petrel-tls".as_ptr(), 0, 0, 0);
    }
    let mut text = String::new();
    status
        .rewind()
        .and_then(|()| status.read_to_string(&mut text))
        .context("reading /proc/self/status")?;
    drop(status);
    privileges::check_dropped(&text)?;
    if filtered {
        seccomp::check_filtered(&text)?;
    } else {
        tracing::warn!("TLS worker: no system call filter for this architecture");
    }
    tracing::info!(
        user = %identity.user,
        uid = identity.uid,
        gid = identity.gid,
        seccomp = filtered,
        "TLS worker: privileges dropped"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(listener, control, audit, acceptor, limits))
}

fn init_logging(args: &Args) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .map_err(|e| anyhow::anyhow!("--log-level {}: {e}", args.log_level))?;
    // Standard error is the parent's, or its log file with --log-file.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(!args.log_file && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}

async fn serve(
    listener: OwnedFd,
    control: OwnedFd,
    audit: OwnedFd,
    acceptor: Acceptor,
    limits: Limits,
) -> Result<()> {
    let control = Arc::new(ControlChannel::new(control).context("control channel")?);
    // The audit relay: one record per packet, which the executor process checks and
    // writes into the audit log; this process has no descriptor of the log itself.
    let audit =
        AuditLog::from_file(File::from(audit), limits::AUDIT_QUEUE).context("audit relay")?;
    let listener = std::net::TcpListener::from(listener);
    listener.set_nonblocking(true).context("listening socket")?;
    let listener = TcpListener::from_std(listener).context("listening socket")?;
    let local = listener.local_addr().context("listening socket")?;
    // The executor process checks revocation for real; this store stays empty.
    let revocations = Arc::new(SharedRevocations::new(RevocationStore::new()));
    let server = Server::new(
        acceptor,
        Arc::new(RemoteHandler::new(Arc::clone(&control))),
        revocations,
        audit.clone(),
        limits,
    );
    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    // A terminal's ^C reaches the whole process group: the parent decides and stops the
    // worker. SIGHUP (CRL reload) is the parent's business too.
    let _interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let _hangup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    control
        .send(&ControlMessage::Ready)
        .await
        .context("control channel")?;
    tracing::info!(address = %local, "listening");
    let metrics = server.metrics();
    let stop = async {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("TLS worker: SIGTERM"),
            why = answer(&control, &metrics) => tracing::warn!("TLS worker stopping: {why}"),
        }
    };
    server.serve(listener, stop).await;
    let _ = tokio::task::spawn_blocking(move || audit.close()).await;
    Ok(())
}

/// Answers the executor process's figures queries until the control channel ends; why it
/// ended.
async fn answer(control: &ControlChannel, metrics: &ServerMetrics) -> String {
    loop {
        match control.recv().await {
            Ok(Some(ControlMessage::FiguresQuery)) => {
                let json = figures::encode(&metrics.snapshot());
                if let Err(e) = control.send(&ControlMessage::Figures(json)).await {
                    return format!("control channel: {e}");
                }
            }
            Ok(Some(other)) => {
                return format!("unexpected {} message on the control channel", other.name());
            }
            Ok(None) => return "the executor process closed the control channel".to_owned(),
            Err(e) => return e.to_string(),
        }
    }
}
