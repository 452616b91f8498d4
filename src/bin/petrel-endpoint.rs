//! `petrel-endpoint`: the TLS 1.3 endpoint in front of the executor.
//!
//! ```text
//! petrel-endpoint CACERT CERT KEY [--ip IP] [--port PORT] [--state-dir DIR] [--tender PATH]
//!                 [--crl FILE]... [--on-revoke destroy|keep] [--systemd-socket-activation]
//!                 [--executor-socket [--max-executor-clients N]]
//!                 [--log-level L] [--log-file] [--stats-interval S]
//!                 [--metrics ADDR] [--influx HOST:PORT] [--cgroup-parent P] [--no-cgroups]
//!                 [--user USER [--group GROUP]] [limits...] [host overrides...]
//! petrel-endpoint --inetd --executor-socket-path PATH CACERT CERT KEY
//!                 [--user USER [--group GROUP]] [--log-level L] [--log-file] [limits...]
//! petrel-endpoint --dev
//! ```

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, ValueEnum};
use tokio::net::{TcpListener, TcpSocket};
use tokio::signal::unix::{SignalKind, signal};

use petrel::audit::{AUDIT_FILE, AuditLog};
use petrel::dev::{self, DEV_ADDR, DEV_DIR};
use petrel::executor::cgroup::{CgroupParent, Cgroups};
use petrel::executor::console::MAX_BUFFER_LINES;
use petrel::executor::net::HostNetwork;
use petrel::executor::tender::ProcessTender;
use petrel::executor::{Executor, ExecutorConfig, HostOverrides, OnRevoke, RevocationSetup};
use petrel::limits::{self, Limits};
use petrel::metrics::{self, MetricsSource};
use petrel::privsep::executor_socket::{self, ExecutorSocket};
use petrel::privsep::privileges::Identity;
use petrel::privsep::service::ExecutorService;
use petrel::privsep::{Credentials, CurrentWorker};
use petrel::server::Server;
use petrel::tls::Acceptor;
use petrel::verify::TrustAnchors;

#[path = "petrel-endpoint/inetd.rs"]
mod inetd;
#[path = "petrel-endpoint/supervisor.rs"]
mod supervisor;
#[path = "petrel-endpoint/worker.rs"]
mod worker;

/// Default TCP port (albatross's).
const DEFAULT_PORT: u16 = 1025;

/// Default state directory.
const DEFAULT_STATE_DIR: &str = "/var/lib/petrel";

/// Default tender, looked up in PATH.
const DEFAULT_TENDER: &str = "solo5-hvt";

/// The stand-in tender `--dev` falls back to, next to this executable.
const STAND_IN_TENDER: &str = "petrel-stand-in-tender";

/// Log file name in the state directory (`--log-file`).
const LOG_FILE: &str = "petrel-endpoint.log";

/// Listen backlog (albatross: 10; a larger one absorbs bursts of connections).
const BACKLOG: u32 = 128;

/// systemd passes the first socket as this descriptor (`SD_LISTEN_FDS_START`).
const SD_LISTEN_FDS_START: i32 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "petrel-endpoint",
    version,
    about = "TLS 1.3 endpoint that runs MirageOS/Solo5 unikernels for clients \
             authorized by their X.509 certificate chain (albatross compatible)"
)]
struct Args {
    /// PEM file with the CA certificate(s) client chains are verified against.
    #[arg(required_unless_present = "dev")]
    cacert: Option<PathBuf>,
    /// PEM file with the server certificate, optionally followed by its chain.
    #[arg(required_unless_present = "dev")]
    cert: Option<PathBuf>,
    /// PEM file with the server's private key (PKCS#8 or traditional).
    #[arg(required_unless_present = "dev")]
    key: Option<PathBuf>,

    /// Development mode: make (once) a CA, a server certificate for localhost and an admin
    /// key under ./petrel-dev, use ./petrel-dev/state, listen on 127.0.0.1:1025 and print
    /// the client commands to try.
    #[arg(long, conflicts_with_all = ["cacert", "inetd", "systemd_socket_activation"])]
    dev: bool,

    /// Address to listen on [default: [::] (IPv6 and IPv4), 127.0.0.1 with --dev].
    #[arg(long)]
    ip: Option<IpAddr>,
    /// TCP port to listen on.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Use the listening socket systemd passes (LISTEN_FDS/LISTEN_PID, descriptor 3).
    #[arg(long, conflicts_with = "inetd")]
    systemd_socket_activation: bool,
    /// Serve the one connection on standard input (inetd) through the executor of a
    /// running endpoint (see --executor-socket-path); logs go to --log-file, or to
    /// standard error unless that is the connection.
    #[arg(long, conflicts_with_all = [
        "state_dir", "tender", "crls", "metrics", "influx", "no_cgroups", "executor_socket",
    ])]
    inetd: bool,
    /// With --inetd: the executor socket of the running endpoint (its
    /// <state-dir>/executor.sock, made with --executor-socket).
    #[arg(long, value_name = "PATH", requires = "inetd")]
    executor_socket_path: Option<PathBuf>,
    /// Also serve the executor over <state-dir>/executor.sock (mode 0600), for
    /// `petrel-endpoint --inetd` processes.
    #[arg(long)]
    executor_socket: bool,
    /// Most --inetd processes served through the executor socket at once; more are
    /// closed at once.
    #[arg(long, value_name = "N", requires = "executor_socket",
          default_value_t = executor_socket::MAX_EXECUTOR_CLIENTS)]
    max_executor_clients: usize,

    /// Privilege separation: run the TLS side (which parses unauthenticated input) as this
    /// unprivileged user (a name or a uid) in a child process without capabilities (with
    /// --inetd: this process, after it connected to the executor socket); the executor
    /// stays in this privileged process.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// The TLS side's group with --user [default: the user's primary group].
    #[arg(long, value_name = "GROUP", requires = "user")]
    group: Option<String>,
    /// Internal: this process is the TLS worker of a --user endpoint; ROOT is the empty
    /// directory it changes root to.
    #[arg(
        long = "tls-worker",
        hide = true,
        value_name = "ROOT",
        requires = "user"
    )]
    tls_worker: Option<PathBuf>,

    /// State directory: unikernel state, audit log, everything petrel writes [default:
    /// /var/lib/petrel, ./petrel-dev/state with --dev].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// solo5-hvt compatible tender (a path, or a name looked up in PATH) [default:
    /// solo5-hvt].
    #[arg(long)]
    tender: Option<PathBuf>,
    /// Operator CRL file (PEM or DER), loaded at start-up and on SIGHUP (may be
    /// repeated).
    #[arg(long = "crl", value_name = "FILE")]
    crls: Vec<PathBuf>,
    /// What happens to running unikernels, block devices and policies created through a
    /// certificate that becomes revoked.
    #[arg(long, value_enum, default_value_t = OnRevokeArg::Destroy)]
    on_revoke: OnRevokeArg,

    /// Log level (error, warn, info, debug, trace, or a tracing filter directive).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Write logs to petrel-endpoint.log in the state directory instead of standard error.
    #[arg(long)]
    log_file: bool,

    /// Seconds between two samples of the unikernels' statistics (for `stats subscribe`,
    /// --metrics and --influx; nothing is sampled while nobody asks).
    #[arg(long, value_name = "SECONDS", default_value_t = limits::STATS_INTERVAL.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    stats_interval: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics: PORT (on 127.0.0.1), IP:PORT, or an
    /// IPv6 address in brackets and :PORT (default: off).
    #[arg(long, value_name = "ADDR", value_parser = metrics::parse_listen_address)]
    metrics: Option<SocketAddr>,
    /// Push the metrics as Influx line protocol over TCP to HOST:PORT every stats
    /// interval, e.g. to Telegraf's socket_listener (default: off).
    #[arg(long, value_name = "HOST:PORT")]
    influx: Option<String>,
    /// Parent cgroup of the tenders' cgroups, relative to each cgroup hierarchy's root
    /// (give each endpoint on a host its own).
    #[arg(long, value_name = "PATH", default_value = petrel::executor::cgroup::DEFAULT_PARENT,
          value_parser = |s: &str| CgroupParent::parse(s).map_err(|e| e.to_string()))]
    cgroup_parent: CgroupParent,
    /// Run tenders as plain processes, without per-unikernel cgroups.
    #[arg(long)]
    no_cgroups: bool,

    /// Most connections open at once; more are closed right after accept.
    #[arg(long, default_value_t = limits::MAX_CONNECTIONS)]
    max_connections: usize,
    /// Most TLS handshakes in progress at once.
    #[arg(long, default_value_t = limits::MAX_HANDSHAKES)]
    max_handshakes: usize,
    /// Seconds a new connection has to send its first octet.
    #[arg(long, value_name = "SECONDS", default_value_t = limits::FIRST_BYTE_TIMEOUT.as_secs())]
    first_byte_timeout: u64,
    /// Seconds a connection may wait for a handshake slot.
    #[arg(long, value_name = "SECONDS", default_value_t = limits::HANDSHAKE_QUEUE_TIMEOUT.as_secs())]
    handshake_queue_timeout: u64,
    /// Seconds a client has to complete the TLS handshake.
    #[arg(long, value_name = "SECONDS", default_value_t = limits::HANDSHAKE_TIMEOUT.as_secs())]
    handshake_timeout: u64,
    /// Seconds without data between chunks (or to write a frame) before a connection is
    /// dropped.
    #[arg(long, value_name = "SECONDS", default_value_t = limits::IDLE_TIMEOUT.as_secs())]
    idle_timeout: u64,
    /// Milliseconds a tender started by a command must keep running before the command
    /// reports success; one that fails sooner (status 1 or a signal) fails the command.
    #[arg(long, value_name = "MS", default_value_t = limits::START_CHECK.as_millis().try_into().unwrap_or(u64::MAX))]
    start_check_ms: u64,
    /// Console history kept per unikernel, in lines (1 to 65536).
    #[arg(long, value_name = "LINES", default_value_t = limits::CONSOLE_LINES, value_parser = console_lines)]
    console_lines: usize,
    /// Console subscribers per unikernel at once.
    #[arg(long, value_name = "N", default_value_t = limits::MAX_CONSOLE_SUBSCRIBERS, value_parser = at_least_one)]
    max_console_subscribers: usize,
    /// Seconds a tender has to exit after SIGTERM (destroy, force-create, shutdown)
    /// before it is killed with SIGKILL.
    #[arg(long, value_name = "SECONDS", default_value_t = limits::STOP_TIMEOUT.as_secs())]
    stop_timeout: u64,
    /// Seconds before the first automatic restart of a failed unikernel; doubles with
    /// every further quick failure.
    #[arg(long, value_name = "SECONDS", default_value_t = limits::RESTART_BACKOFF_INITIAL.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    restart_backoff: u64,
    /// Longest delay in seconds between automatic restarts of a unikernel in a crash loop.
    #[arg(long, value_name = "SECONDS", default_value_t = limits::RESTART_BACKOFF_MAX.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    restart_backoff_max: u64,
    /// Seconds a unikernel must have run for its earlier failures to be forgotten.
    #[arg(long, value_name = "SECONDS", default_value_t = limits::RESTART_BACKOFF_RESET.as_secs())]
    restart_backoff_reset: u64,
    /// Largest client certificate chain (TLS Certificate message) in octets.
    #[arg(long, value_name = "OCTETS", default_value_t = limits::MAX_CHAIN_SIZE)]
    max_chain_size: usize,
    /// Largest frame or raw chunk in octets.
    #[arg(long, value_name = "OCTETS", default_value_t = limits::MAX_FRAME_SIZE)]
    max_frame_size: usize,
    /// Largest unikernel image in octets (streamed or embedded, before and after
    /// inflation).
    #[arg(long, value_name = "OCTETS", default_value_t = limits::MAX_IMAGE_SIZE)]
    max_image_size: u64,
    /// Largest CRL in octets.
    #[arg(long, value_name = "OCTETS", default_value_t = limits::MAX_CRL_SIZE)]
    max_crl_size: u64,

    /// CPU ids unikernels may use, comma separated [default: the host's].
    #[arg(long, value_delimiter = ',', value_name = "ID,...")]
    cpus: Option<Vec<i64>>,
    /// Memory for unikernels in MB [default: the host's].
    #[arg(long, value_name = "MB")]
    memory: Option<i64>,
    /// Block storage for block devices in MB [default: the state directory's free space].
    #[arg(long, value_name = "MB")]
    block_storage: Option<i64>,
    /// Bridges unikernels may attach to, comma separated [default: the host's bridges].
    #[arg(long, value_delimiter = ',', value_name = "BRIDGE,...")]
    bridges: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnRevokeArg {
    /// Destroy them and remove the policies.
    Destroy,
    /// Keep them; only block future access.
    Keep,
}

/// `--console-lines`: 1 to [`MAX_BUFFER_LINES`].
fn console_lines(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_BUFFER_LINES).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a number of lines from 1 to {MAX_BUFFER_LINES}"
        )),
    }
}

/// A count of at least 1.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a number of at least 1".to_owned()),
    }
}

impl Args {
    fn limits(&self) -> Limits {
        Limits {
            start_check: Duration::from_millis(self.start_check_ms),
            max_connections: self.max_connections,
            max_handshakes: self.max_handshakes,
            first_byte_timeout: Duration::from_secs(self.first_byte_timeout),
            handshake_queue_timeout: Duration::from_secs(self.handshake_queue_timeout),
            handshake_timeout: Duration::from_secs(self.handshake_timeout),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            max_chain_size: self.max_chain_size,
            max_frame_size: self.max_frame_size,
            max_image_size: self.max_image_size,
            max_crl_size: self.max_crl_size,
            stats_interval: Duration::from_secs(self.stats_interval),
            console_lines: self.console_lines,
            max_console_subscribers: self.max_console_subscribers,
            stop_timeout: Duration::from_secs(self.stop_timeout),
            restart_backoff_initial: Duration::from_secs(self.restart_backoff),
            restart_backoff_max: Duration::from_secs(
                self.restart_backoff_max.max(self.restart_backoff),
            ),
            restart_backoff_reset: Duration::from_secs(self.restart_backoff_reset),
            ..Limits::default()
        }
    }

    fn host(&self) -> HostOverrides {
        HostOverrides {
            cpuids: self.cpus.as_ref().map(|c| c.iter().copied().collect()),
            memory: self.memory,
            block: self.block_storage,
            bridges: self
                .bridges
                .as_ref()
                .map(|b| b.iter().cloned().collect::<BTreeSet<String>>()),
        }
    }
}

/// Where connections come from.
enum Source {
    /// Bind a listening socket to this address (or `[::]` when `None`) and port.
    Bind(Option<IpAddr>, u16),
    /// A listening socket systemd passed.
    Listener(std::net::TcpListener),
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(root) = &args.tls_worker {
        return match worker::run(&args, root) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("TLS worker: {}", one_line(&e));
                eprintln!("petrel-endpoint: TLS worker: {}", one_line(&e));
                ExitCode::FAILURE
            }
        };
    }
    if args.inetd {
        return run_inetd(&args);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&args, &e),
    }
}

/// `--inetd`: standard output (and standard error, if it is the connection too) must not
/// be written: they usually are the connection itself.
fn run_inetd(args: &Args) -> ExitCode {
    let stderr_free = !inetd::stderr_is_the_connection();
    let result = silence_stdio(!stderr_free).and_then(|()| match &args.executor_socket_path {
        Some(path) => inetd::run(args, path),
        None => Err(anyhow!(inetd::NEEDS_SOCKET)),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = one_line(&e);
            tracing::error!("{text}");
            // Unless logging wrote it there already.
            if stderr_free && (args.log_file || !tracing::dispatcher::has_been_set()) {
                eprintln!("petrel-endpoint: {text}");
            }
            ExitCode::FAILURE
        }
    }
}

fn fail(args: &Args, error: &anyhow::Error) -> ExitCode {
    let text = one_line(error);
    if args.log_file {
        tracing::error!("{text}");
    }
    eprintln!("petrel-endpoint: {text}");
    ExitCode::FAILURE
}

/// The error and its causes on one line, without repeating a cause that its context
/// already ends with.
fn one_line(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn run(args: &Args) -> Result<()> {
    let dev = if args.dev {
        Some(dev::prepare(Path::new(DEV_DIR), petrel::pki::now_utc()).context("--dev")?)
    } else {
        None
    };
    let state_dir = match (&args.state_dir, &dev) {
        (Some(dir), _) => dir.clone(),
        (None, Some(setup)) => setup.files.state_dir.clone(),
        (None, None) => PathBuf::from(DEFAULT_STATE_DIR),
    };
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating state directory {}", state_dir.display()))?;
    init_logging(args, &state_dir)?;
    raise_fd_limit();

    let (cacert, cert, key) = match (&dev, &args.cacert, &args.cert, &args.key) {
        (Some(setup), ..) => (
            setup.files.cacert.clone(),
            setup.files.server_cert.clone(),
            setup.files.server_key.clone(),
        ),
        (None, Some(ca), Some(cert), Some(key)) => (ca.clone(), cert.clone(), key.clone()),
        _ => bail!("CACERT, CERT and KEY are required"),
    };
    let limits = args.limits();
    let ca_pem = petrel::tls::read_pem_file(&cacert)
        .with_context(|| format!("reading CA certificate {}", cacert.display()))?;
    let anchors = TrustAnchors::from_pem(&ca_pem)
        .with_context(|| format!("CA certificate {}", cacert.display()))?;
    let acceptor = Acceptor::from_files(&anchors, &cert, &key, limits.max_chain_size)
        .context("server certificate and key")?;
    let split = match &args.user {
        Some(user) => {
            // Checked here so that a bad --user fails before anything starts; the worker
            // looks it up again.
            Identity::resolve(user, args.group.as_deref())?;
            let read = |path: &Path| {
                petrel::tls::read_pem_file(path)
                    .with_context(|| format!("reading {}", path.display()))
            };
            Some(Credentials {
                ca_pem: ca_pem.clone(),
                cert_pem: read(&cert)?,
                key_pem: read(&key)?,
            })
        }
        None => None,
    };

    // Sockets are taken before the runtime starts threads (systemd's environment is
    // cleared while the process is still single-threaded).
    let source = if args.systemd_socket_activation {
        Source::Listener(systemd_listener()?)
    } else {
        let ip = match (args.ip, &dev) {
            (Some(ip), _) => Some(ip),
            (None, Some(_)) => Some(DEV_ADDR.ip()),
            (None, None) => None,
        };
        Source::Bind(ip, args.port)
    };

    let tender = resolve_tender(args)?;
    let revocation = RevocationSetup {
        trust_anchors: anchors.certificates(),
        crl_files: args
            .crls
            .iter()
            .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
            .collect(),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let config = ExecutorConfig {
        state_dir,
        tender,
        limits: limits.clone(),
        host: args.host(),
        on_revoke: match args.on_revoke {
            OnRevokeArg::Destroy => OnRevoke::Destroy,
            OnRevokeArg::Keep => OnRevoke::Keep,
        },
    };
    runtime.block_on(serve(
        args,
        source,
        (acceptor, anchors),
        config,
        revocation,
        split,
        dev.as_ref(),
    ))
}

async fn serve(
    args: &Args,
    source: Source,
    (acceptor, anchors): (Acceptor, TrustAnchors),
    config: ExecutorConfig,
    revocation: RevocationSetup,
    split: Option<Credentials>,
    dev: Option<&dev::DevSetup>,
) -> Result<()> {
    // Bind first: a port in use fails before anything else starts.
    let listener = match source {
        Source::Bind(ip, port) => bind(ip, port)?,
        Source::Listener(listener) => listener,
    };
    let metrics_listener = match args.metrics {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics: listening on {addr}"))?,
        ),
        None => None,
    };
    let audit_path = config.state_dir.join(AUDIT_FILE);
    let limits = config.limits.clone();
    // Only this process writes the audit log, also with a TLS worker: the executor
    // audits the requests it is passed, and relays what the worker refuses itself.
    let audit = AuditLog::open(&audit_path, limits::AUDIT_QUEUE)
        .with_context(|| format!("opening the audit log {}", audit_path.display()))?;
    // With --user the TLS side runs in a worker process; this one keeps the executor.
    let (listener, worker) = match split {
        Some(credentials) => {
            let worker = supervisor::Worker {
                listener,
                audit: audit.clone(),
                credentials,
                root: supervisor::empty_root(&config.state_dir)?,
            };
            (None, Some(worker))
        }
        None => (Some(listener), None),
    };
    let state_dir = config.state_dir.clone();
    let cgroups = if args.no_cgroups {
        tracing::info!("--no-cgroups: tenders run as plain processes");
        Cgroups::disabled()
    } else {
        Cgroups::setup(args.cgroup_parent.clone())
    };
    let executor = Executor::start_full(
        config,
        Arc::new(HostNetwork::new()),
        Arc::new(ProcessTender),
        revocation,
        cgroups,
    )
    .await
    .context("starting the executor")?;
    let server = Server::new(
        acceptor,
        Arc::new(executor.clone()),
        executor.revocations(),
        audit.clone(),
        limits.clone(),
    );
    let current_worker = Arc::new(CurrentWorker::default());
    let mut exporters = Vec::new();
    if metrics_listener.is_some() || args.influx.is_some() {
        let source = Arc::new(if worker.is_some() {
            MetricsSource::with_remote(
                server.metrics(),
                Some(executor.clone()),
                Arc::clone(&current_worker) as Arc<dyn metrics::RemoteFigures>,
            )
        } else {
            MetricsSource::new(server.metrics(), Some(executor.clone()))
        });
        if let Some(listener) = metrics_listener {
            if let Ok(local) = listener.local_addr() {
                tracing::info!(address = %local, "metrics listening");
            }
            exporters.push(tokio::spawn(metrics::http::serve(
                listener,
                Arc::clone(&source),
            )));
        }
        if let Some(target) = args.influx.clone() {
            exporters.push(tokio::spawn(metrics::influx::push(
                target,
                source,
                limits.stats_interval,
            )));
        }
    }

    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let stop = async {
        loop {
            tokio::select! {
                _ = terminate.recv() => break "SIGTERM",
                _ = interrupt.recv() => break "SIGINT",
                _ = hangup.recv() => reload_crls(&executor).await,
            }
        }
    };

    // The service for control channels: the TLS worker's and the executor socket's.
    let service = ExecutorService::new(
        Arc::new(executor.clone()),
        anchors,
        executor.revocations(),
        limits.clone(),
        audit.clone(),
    );
    let executor_socket = if args.executor_socket {
        // The empty root of `--inetd --user` processes.
        supervisor::empty_root(&state_dir)?;
        let socket = Arc::new(ExecutorSocket::bind(&state_dir)?);
        tracing::info!(path = %socket.path().display(), "executor socket listening");
        let serving = {
            let socket = Arc::clone(&socket);
            let service = Arc::clone(&service);
            let max = args.max_executor_clients;
            tokio::spawn(async move { socket.serve(service, max).await })
        };
        Some((socket, serving))
    } else {
        None
    };

    let stop_tenders = match (listener, worker) {
        (_, Some(worker)) => {
            if let (Some(setup), Ok(local)) = (dev, worker.listener.local_addr()) {
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(dev::instructions(setup, local).as_bytes());
                let _ = stdout.flush();
            }
            let signal = supervisor::run(args, worker, service, &current_worker, stop).await;
            tracing::info!(signal, "stopping");
            true
        }
        (None, None) => false,
        (Some(listener), None) => {
            listener.set_nonblocking(true).context("listening socket")?;
            let listener = TcpListener::from_std(listener).context("listening socket")?;
            let local = listener.local_addr().context("listening socket")?;
            tracing::info!(address = %local, "listening");
            if let Some(setup) = dev {
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(dev::instructions(setup, local).as_bytes());
                let _ = stdout.flush();
            }
            let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel();
            let stop = async move {
                let signal = stop.await;
                let _ = stopped_tx.send(signal);
            };
            server.serve(listener, stop).await;
            if let Ok(signal) = stopped_rx.await {
                tracing::info!(signal, "stopping: no new connections");
            }
            true
        }
    };
    for exporter in exporters {
        exporter.abort();
    }
    if let Some((socket, serving)) = executor_socket {
        // No new inetd connections; the socket file goes away.
        serving.abort();
        let _ = serving.await;
        drop(socket);
    }
    if stop_tenders {
        executor.shutdown().await;
    }
    let _ = tokio::task::spawn_blocking(move || audit.close()).await;
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP: reads the operator's CRLs again; connections stay open (the executor logs
/// what it loaded and what it destroyed).
async fn reload_crls(executor: &Executor) {
    tracing::info!("SIGHUP: reloading the operator CRLs");
    executor.reload_crls().await;
}

fn init_logging(args: &Args, state_dir: &Path) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .map_err(|e| anyhow!("--log-level {}: {e}", args.log_level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if args.log_file {
        let path = state_dir.join(LOG_FILE);
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .with_context(|| format!("opening the log file {}", path.display()))?;
        builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .init();
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init();
    }
    Ok(())
}

/// `--tender`, or `solo5-hvt` from PATH; with `--dev` and no `solo5-hvt`, the stand-in
/// tender next to this executable.
fn resolve_tender(args: &Args) -> Result<PathBuf> {
    if let Some(tender) = &args.tender {
        return Ok(tender.clone());
    }
    if !args.dev || in_path(DEFAULT_TENDER) {
        return Ok(PathBuf::from(DEFAULT_TENDER));
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    let stand_in = exe.with_file_name(STAND_IN_TENDER);
    if !stand_in.is_file() {
        bail!(
            "--dev: {DEFAULT_TENDER} is not in PATH and {} does not exist; give --tender",
            stand_in.display()
        );
    }
    let warning = format!(
        "WARNING: {DEFAULT_TENDER} is not in PATH; --dev uses the stand-in tender {}, which \
         does NOT run unikernels (it only pretends to). Install solo5 or give --tender.",
        stand_in.display()
    );
    if args.log_file {
        tracing::warn!("{warning}");
    }
    eprintln!("\n{warning}\n");
    Ok(stand_in)
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Binds the listening socket: `ip` or `[::]` (dual stack, as albatross; `0.0.0.0` if the
/// host has no IPv6), with SO_REUSEADDR. Must run inside the runtime.
fn bind(ip: Option<IpAddr>, port: u16) -> Result<std::net::TcpListener> {
    let listen = |addr: SocketAddr| -> std::io::Result<std::net::TcpListener> {
        let socket = if addr.is_ipv6() {
            let socket = TcpSocket::new_v6()?;
            set_v6only(&socket, false)?;
            socket
        } else {
            TcpSocket::new_v4()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(BACKLOG)?;
        listener.into_std()
    };
    match ip {
        Some(ip) => {
            let addr = SocketAddr::new(ip, port);
            listen(addr).with_context(|| format!("listening on {addr}"))
        }
        None => {
            let addr = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
            match listen(addr) {
                Ok(listener) => Ok(listener),
                Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                    let addr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port);
                    listen(addr).with_context(|| format!("listening on {addr}"))
                }
                Err(e) => Err(e).with_context(|| format!("listening on {addr}")),
            }
        }
    }
}

fn set_v6only(socket: &TcpSocket, only: bool) -> std::io::Result<()> {
    let value = libc::c_int::from(only);
    // SAFETY: setsockopt on a valid socket with a pointer to a c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            std::ptr::from_ref(&value).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The listening socket systemd passed (`sd_listen_fds`).
fn systemd_listener() -> Result<std::net::TcpListener> {
    let pid = std::env::var("LISTEN_PID").context("--systemd-socket-activation: LISTEN_PID")?;
    let fds = std::env::var("LISTEN_FDS").context("--systemd-socket-activation: LISTEN_FDS")?;
    if pid.trim() != std::process::id().to_string() {
        bail!("--systemd-socket-activation: LISTEN_PID {pid} is not this process");
    }
    if fds.trim().parse::<u32>().unwrap_or(0) < 1 {
        bail!("--systemd-socket-activation: LISTEN_FDS is {fds}, expected at least 1");
    }
    // SAFETY: still single-threaded (no runtime yet), so nothing reads the environment
    // concurrently; the variables are cleared so that tenders do not inherit them.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    check_socket(SD_LISTEN_FDS_START).context("--systemd-socket-activation: descriptor 3")?;
    // SAFETY: systemd hands descriptor 3 to this process (LISTEN_PID matched), it is a
    // socket (checked above), and nothing else in the process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(SD_LISTEN_FDS_START) };
    Ok(std::net::TcpListener::from(fd))
}

/// The connection inetd passed as standard input.
fn inetd_stream() -> Result<std::net::TcpStream> {
    let stdin = std::io::stdin();
    check_socket(stdin.as_fd().as_raw_fd()).context("--inetd: standard input")?;
    let fd = stdin
        .as_fd()
        .try_clone_to_owned()
        .context("--inetd: standard input")?;
    Ok(std::net::TcpStream::from(fd))
}

fn check_socket(fd: i32) -> Result<()> {
    // SAFETY: fstat writes into the zeroed stat buffer it is given.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `stat` is a valid, writable stat buffer.
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        bail!("not a socket");
    }
    Ok(())
}

/// Points standard output (and with `stderr`, standard error) at /dev/null (`--inetd`).
fn silence_stdio(stderr: bool) -> Result<()> {
    let null = File::options()
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    let fds: &[i32] = if stderr {
        &[libc::STDOUT_FILENO, libc::STDERR_FILENO]
    } else {
        &[libc::STDOUT_FILENO]
    };
    for &fd in fds {
        // SAFETY: dup2 of a valid descriptor onto a standard descriptor.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error()).context("redirecting standard output");
        }
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard limit: each connection and each
/// tender needs descriptors, and the default soft limit (often 1024) is below
/// `--max-connections` plus what the executor holds.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit buffer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                tracing::debug!("could not raise the open file limit");
            }
        }
    }
}
