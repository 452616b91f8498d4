//! Servers for tests: an in-process [`petrel::server::Server`] with any handler, and the
//! real `petrel-endpoint` binary, both on loopback with a fresh PKI.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use petrel::audit::{AUDIT_FILE, AuditLog};
use petrel::executor::api::Handler;
use petrel::limits::Limits;
use petrel::pki::{
    self, AltName, Certificate, CertificateTemplate, Criticality, KeyType, PrivateKey, Profile,
    Serial, Subject, Validity,
};
use petrel::revocation::RevocationStore;
use petrel::server::{Server, SharedRevocations};
use petrel::tls::Acceptor;
use petrel::verify::TrustAnchors;

use super::pki::Ca;

/// How long a test waits for a server to start or for a record to appear (a safety net,
/// not a measurement).
pub const WAIT: Duration = Duration::from_secs(60);

/// A server certificate for `localhost`/`127.0.0.1` issued by `ca`, and its key.
pub fn server_certificate(ca: &Ca) -> (Certificate, PrivateKey) {
    let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
    let alt = [
        AltName::Dns("localhost".to_owned()),
        AltName::Ip("127.0.0.1".parse().unwrap()),
    ];
    let template = CertificateTemplate {
        profile: Profile::Server,
        subject: Subject::CommonName("localhost"),
        public_key: key.public_key(),
        albatross: None,
        albatross_criticality: Criticality::NonCritical,
        alt_names: &alt,
        validity: Validity::for_profile(ca.now, Profile::Server),
        serial: Serial::random(&mut rand::thread_rng()),
    };
    (pki::cert::issue(&template, &ca.issuer).unwrap(), key)
}

/// An in-process server on a loopback port, running in its own thread and runtime.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The CA client chains are verified against (it also issued the server certificate).
    pub ca: Ca,
    /// The audit log file.
    pub audit_path: PathBuf,
    _dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with `handler` and `limits`.
    pub fn start(handler: Arc<dyn Handler>, limits: Limits) -> Self {
        let revocations = Arc::new(SharedRevocations::new(RevocationStore::new()));
        Self::start_with(handler, limits, revocations)
    }

    /// Starts a server with `handler`, `limits` and a revocation store the test controls.
    pub fn start_with(
        handler: Arc<dyn Handler>,
        limits: Limits,
        revocations: Arc<SharedRevocations>,
    ) -> Self {
        let ca = Ca::root_now("test-ca");
        let (cert, key) = server_certificate(&ca);
        let anchors = TrustAnchors::from_pem(ca.cert_pem().as_bytes()).unwrap();
        let acceptor = Acceptor::new(
            &anchors,
            cert.pem().as_bytes(),
            key.to_pem().as_bytes(),
            limits.max_chain_size,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let audit_path = dir.path().join(AUDIT_FILE);
        let audit = AuditLog::open(&audit_path, 64).unwrap();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let server = Server::new(acceptor, handler, revocations, audit.clone(), limits);
                server
                    .serve(listener, async {
                        let _ = shutdown_rx.await;
                    })
                    .await;
                let _ = tokio::task::spawn_blocking(move || audit.close()).await;
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        Self {
            addr,
            ca,
            audit_path,
            _dir: dir,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// The audit log's records once there are at least `n`.
    pub fn audit(&self, n: usize) -> Vec<serde_json::Value> {
        wait_for_audit(&self.audit_path, n)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The records of the audit log at `path`, once there are at least `n`.
pub fn wait_for_audit(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if records.len() >= n {
            return records;
        }
        assert!(
            start.elapsed() < WAIT,
            "audit log has {} records, expected {n}:\n{text}",
            records.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real `petrel-endpoint` binary, stopped with SIGTERM when dropped.
pub struct Endpoint {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its working directory (PKI files; the state directory is `state/` below it).
    pub dir: PathBuf,
    _owned: Option<tempfile::TempDir>,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
}

/// A cgroup parent no other endpoint of any test uses: `petrel-test-<pid>-<n>`.
pub fn cgroup_parent() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "petrel-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Set (to anything) to run every test endpoint as one process even as root.
pub const SINGLE_PROCESS_ENV: &str = "PETREL_TEST_SINGLE_PROCESS";

/// The user test endpoints run their TLS side as when split.
pub const TEST_USER: &str = "nobody";

/// Whether test endpoints run split (`--user nobody`): as root, unless
/// [`SINGLE_PROCESS_ENV`] is set.
pub fn split_mode() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && std::env::var_os(SINGLE_PROCESS_ENV).is_none()
}

/// The arguments that make an endpoint run split, if [`split_mode`] and `args` do not
/// choose already (`--user`, `--inetd`).
pub fn split_args(args: &[String]) -> Vec<String> {
    if split_mode() && !args.iter().any(|a| a == "--user" || a == "--inetd") {
        vec!["--user".to_owned(), TEST_USER.to_owned()]
    } else {
        Vec::new()
    }
}

/// The TLS workers (`petrel-tls` children) of process `pid`.
pub fn tls_workers(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...
            let Some((comm, rest)) = stat.split_once(") ") else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
            comm.ends_with("(petrel-tls") && ppid == Some(pid) && state != Some("Z")
        })
        .collect()
}

/// Waits until the processes `pids` are gone (a TLS worker killed by its parent's death
/// still holds the listening socket for a moment).
pub fn wait_gone(pids: &[u32]) {
    let start = Instant::now();
    while pids
        .iter()
        .any(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
    {
        assert!(start.elapsed() < WAIT, "processes {pids:?} still there");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The endpoint binary.
pub fn endpoint_binary() -> &'static str {
    env!("CARGO_BIN_EXE_petrel-endpoint")
}

/// The stand-in tender binary.
pub fn stand_in_tender() -> &'static str {
    env!("CARGO_BIN_EXE_petrel-stand-in-tender")
}

impl Endpoint {
    /// Starts the binary with a CA file holding `ca`'s certificate, a server certificate
    /// issued by `ca`, a temporary state directory, the stand-in tender, a cgroup parent
    /// of its own (tests run in parallel; unikernels of the same name must not share a
    /// cgroup), and `extra` arguments; waits until it listens.
    pub fn start(ca: &Ca, extra: &[&str]) -> Self {
        Self::start_mode(ca, extra, true)
    }

    /// [`Endpoint::start`] as one process, whatever [`split_mode`] says (so that the
    /// single-process mode stays covered).
    pub fn start_single_process(ca: &Ca, extra: &[&str]) -> Self {
        Self::start_mode(ca, extra, false)
    }

    fn start_mode(ca: &Ca, extra: &[&str], may_split: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = server_certificate(ca);
        std::fs::write(dir.path().join("cacert.pem"), ca.cert_pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.to_pem()).unwrap();
        let port = free_port();
        let mut args: Vec<String> = vec![
            "cacert.pem".into(),
            "server.pem".into(),
            "server.key".into(),
            "--ip".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--state-dir".into(),
            "state".into(),
            "--tender".into(),
            stand_in_tender().into(),
            "--log-level".into(),
            "info".into(),
            "--cgroup-parent".into(),
            cgroup_parent(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut endpoint = Self::spawn_full(dir.path(), &args, port, &[], may_split);
        endpoint._owned = Some(dir);
        endpoint
    }

    /// Starts the binary with `args` in `dir` and waits for `listening` on `port`.
    pub fn spawn(dir: &Path, args: &[String], port: u16) -> Self {
        Self::spawn_with_env(dir, args, port, &[])
    }

    /// [`Endpoint::spawn`] with extra environment variables (inherited by its tenders).
    /// Unless `args` say otherwise, the endpoint gets a cgroup parent of its own.
    /// In [`split_mode`], the TLS side runs as [`TEST_USER`].
    pub fn spawn_with_env(dir: &Path, args: &[String], port: u16, env: &[(&str, &Path)]) -> Self {
        Self::spawn_full(dir, args, port, env, true)
    }

    fn spawn_full(
        dir: &Path,
        args: &[String],
        port: u16,
        env: &[(&str, &Path)],
        may_split: bool,
    ) -> Self {
        let mut args = args.to_vec();
        if may_split {
            let split = split_args(&args);
            args.extend(split);
        }
        if !args
            .iter()
            .any(|a| a == "--cgroup-parent" || a == "--no-cgroups")
        {
            args.extend(["--cgroup-parent".into(), cgroup_parent()]);
        }
        let mut child = Command::new(endpoint_binary())
            .args(&args)
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = collect(child.stderr.take().unwrap());
        let stdout = collect(child.stdout.take().unwrap());
        let endpoint = Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            dir: dir.to_path_buf(),
            _owned: None,
            child,
            log,
            stdout,
        };
        endpoint.wait_for_listening(port)
    }

    /// Waits for the `listening` log line; fails at once if the process exits first.
    fn wait_for_listening(mut self, port: u16) -> Self {
        let needle = format!("listening address=127.0.0.1:{port}");
        let start = Instant::now();
        loop {
            if self.log.lock().unwrap().iter().any(|l| l.contains(&needle)) {
                return self;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader threads collect the last lines.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "the endpoint exited ({status}) before listening:\n{}",
                    self.log()
                );
            }
            assert!(start.elapsed() < WAIT, "not listening:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first log line containing `needle`, waiting for it.
    pub fn wait_for_log(&self, needle: &str) -> String {
        wait_for_line(&self.log, needle, "log")
    }

    /// The first line of standard output containing `needle`, waiting for it.
    pub fn wait_for_stdout(&self, needle: &str) -> String {
        wait_for_line(&self.stdout, needle, "stdout")
    }

    /// Everything printed on standard output so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// The audit log's records once there are at least `n`.
    pub fn audit(&self, n: usize) -> Vec<serde_json::Value> {
        wait_for_audit(&self.state_dir().join(AUDIT_FILE), n)
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to the endpoint.
    pub fn signal(&self, signal: i32) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(pid, signal) };
    }

    /// Everything logged on standard error so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the endpoint with SIGKILL (no clean-up of any kind) and reaps it; waits for
    /// its TLS worker (if split) to die with it.
    pub fn kill(mut self) {
        let workers = tls_workers(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        wait_gone(&workers);
    }

    /// The pid of its TLS worker (split mode), waiting for one to run.
    pub fn tls_worker(&self) -> u32 {
        let start = Instant::now();
        loop {
            if let Some(pid) = tls_workers(self.child.id()).first() {
                return *pid;
            }
            assert!(start.elapsed() < WAIT, "no TLS worker:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the endpoint with SIGTERM and returns its exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status;
        }
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// Collects the lines of `stream` (a child's output) as they come, on a thread of its own.
pub fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
    lines
}

fn wait_for_line(lines: &Mutex<Vec<String>>, needle: &str, what: &str) -> String {
    let start = Instant::now();
    loop {
        if let Some(line) = lines.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        assert!(
            start.elapsed() < WAIT,
            "no {what} line with {needle:?}:\n{}",
            lines.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
