//! Helpers of the hardening suites (`adversarial`, `concurrency`, `faults`, `soak`): the
//! real `petrel-endpoint` binary as a process the test owns (its pid, `kill -9`, a
//! restart on the same state directory, extra environment), requests over real TLS with
//! the OpenSSL test client, reply texts, the processes and files an endpoint holds.

#![allow(dead_code)]

pub mod certs;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use petrel::codec::{
    self, BlockCmd, Command, Header, Payload, PolicyCmd, Success, UnikernelCmd, UnikernelConfig,
    Wire,
};
use petrel::executor::manifest::{Device, Target, build_test_image};
use petrel::executor::persist::{RECORDS_FILE, Records, STATE_FILE};
use petrel::name::Name;
use petrel::policy::Policy;

use crate::common::pki::{Ca, Leaf};
use crate::common::server::{endpoint_binary, free_port, server_certificate, stand_in_tender};
use crate::common::tls_client::{Client, ClientError, request};

/// How long a test waits for something that must happen (a safety net against a hang,
/// not a measurement).
pub const WAIT: Duration = Duration::from_secs(60);

/// Host resources every hardening endpoint is started with, so that outcomes do not
/// depend on the machine: two CPUs (0 and 1), 4 GiB, 1 GiB of block storage, bridges
/// `br0` and `br1` (which do not exist: creates using them are refused after the policy
/// checks, with "interface … does not exist").
pub const HOST_FLAGS: [&str; 8] = [
    "--cpus",
    "0,1",
    "--memory",
    "4096",
    "--block-storage",
    "1024",
    "--bridges",
    "br0,br1",
];

/// The real endpoint binary, stopped with SIGTERM (or killed) when dropped.
pub struct Host {
    /// The root CA client chains are verified against (it also issued the server
    /// certificate).
    pub ca: Ca,
    /// Where it listens.
    pub addr: SocketAddr,
    dir: PathBuf,
    _owned: Option<tempfile::TempDir>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    isolation: Isolation,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

/// Namespaces and mounts a [`Host`] runs in.
#[derive(Default)]
struct Isolation {
    /// The listening socket handed over (with a network namespace).
    listener: Option<std::net::TcpListener>,
    /// Bridges to create in a private network namespace.
    bridges: Option<Vec<String>>,
    /// Size of the state directory's tmpfs in KiB.
    tmpfs_kib: Option<u64>,
}

/// Why a test that needs root cannot run here, if it cannot.
pub fn skip_without_root() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root");
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing");
    }
    None
}

/// How a [`Host`] is started.
#[derive(Default)]
pub struct HostOptions {
    /// Flags after the defaults (limits, `--crl`, …).
    pub extra: Vec<String>,
    /// The tender (default: the stand-in tender).
    pub tender: Option<PathBuf>,
    /// Extra environment of the endpoint (and so of its tenders).
    pub env: Vec<(String, String)>,
    /// The state directory (default: `state/` in the host's directory).
    pub state_dir: Option<PathBuf>,
    /// Run in private network and mount namespaces (sysfs remounted) with these bridges
    /// (root only): the host's interfaces are never touched. The listening socket is made
    /// by the test and handed over as with systemd socket activation.
    pub netns_bridges: Option<Vec<String>>,
    /// Mount a tmpfs of this many KiB on the state directory, in a private mount
    /// namespace (root only): it disappears with the process.
    pub tmpfs_kib: Option<u64>,
}

impl HostOptions {
    /// Options with these extra flags.
    pub fn flags(extra: &[&str]) -> Self {
        Self {
            extra: extra.iter().map(|s| s.to_string()).collect(),
            ..Self::default()
        }
    }
}

impl Host {
    /// An endpoint with a fresh root CA, the stand-in tender, [`HOST_FLAGS`] and `extra`.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with(HostOptions::flags(extra))
    }

    /// An endpoint with a fresh root CA and `options`.
    pub fn start_with(options: HostOptions) -> Self {
        let owned = tempfile::tempdir().unwrap();
        let dir = owned.path().to_path_buf();
        let ca = Ca::root_now("test-ca");
        let (cert, key) = server_certificate(&ca);
        std::fs::write(dir.join("cacert.pem"), ca.cert_pem()).unwrap();
        std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.to_pem()).unwrap();
        let listener = options
            .netns_bridges
            .as_ref()
            .map(|_| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap());
        let port = match &listener {
            Some(listener) => listener.local_addr().unwrap().port(),
            None => free_port(),
        };
        let tender = options
            .tender
            .unwrap_or_else(|| PathBuf::from(stand_in_tender()));
        let state_dir = options.state_dir.unwrap_or_else(|| dir.join("state"));
        let listen: Vec<String> = match &listener {
            Some(_) => vec!["--systemd-socket-activation".into()],
            None => vec![
                "--ip".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
            ],
        };
        if options.tmpfs_kib.is_some() {
            std::fs::create_dir_all(&state_dir).unwrap();
        }
        let mut args: Vec<String> = vec![
            "cacert.pem".into(),
            "server.pem".into(),
            "server.key".into(),
        ];
        args.extend(listen);
        args.extend([
            "--state-dir".to_owned(),
            state_dir.to_string_lossy().into_owned(),
            "--tender".to_owned(),
            tender.to_string_lossy().into_owned(),
            "--log-level".to_owned(),
            "info".to_owned(),
        ]);
        args.extend(HOST_FLAGS.iter().map(|s| s.to_string()));
        args.extend(options.extra);
        let split = crate::common::server::split_args(&args);
        args.extend(split);
        let mut host = Self {
            ca,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            dir,
            _owned: Some(owned),
            args,
            env: options.env,
            isolation: Isolation {
                listener,
                bridges: options.netns_bridges,
                tmpfs_kib: options.tmpfs_kib,
            },
            child: None,
            log: Arc::new(Mutex::new(Vec::new())),
        };
        host.spawn();
        host
    }

    /// (Re)starts the process with the same arguments and waits until it listens.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut command = if self.isolation.listener.is_some() {
            // systemd's protocol: LISTEN_PID must be the endpoint's pid, which `exec` keeps.
            let mut command = Process::new("sh");
            command
                .arg("-c")
                .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$@\"")
                .arg("sh")
                .arg(endpoint_binary());
            command
        } else {
            Process::new(endpoint_binary())
        };
        self.isolate(&mut command);
        command
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        self.log = crate::common::server::collect(child.stderr.take().unwrap());
        self.child = Some(child);
        self.wait_for_log(&format!("listening address={}", self.addr));
    }

    /// Sets up the namespaces and mounts of [`HostOptions::netns_bridges`] and
    /// [`HostOptions::tmpfs_kib`] in the child before it executes.
    fn isolate(&self, command: &mut Process) {
        use std::ffi::CString;
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;

        let isolation = &self.isolation;
        if isolation.bridges.is_none() && isolation.tmpfs_kib.is_none() {
            return;
        }
        let listener = isolation.listener.as_ref().map(|l| l.as_raw_fd());
        let netns = isolation.bridges.is_some();
        let bridges: Vec<CString> = isolation
            .bridges
            .iter()
            .flatten()
            .map(|b| CString::new(b.as_str()).unwrap())
            .collect();
        let tmpfs = isolation.tmpfs_kib.map(|kib| {
            (
                CString::new(self.state_dir().to_string_lossy().into_owned()).unwrap(),
                CString::new(format!("size={kib}k,mode=0700")).unwrap(),
            )
        });
        let c = |s: &str| CString::new(s).unwrap();
        let (root, sys, sysfs, tmpfs_type) = (c("/"), c("/sys"), c("sysfs"), c("tmpfs"));
        // SAFETY: only system calls (dup2, fcntl, unshare, mount, socket, ioctl, close) on
        // values prepared before the fork, in the child before it executes.
        unsafe {
            command.pre_exec(move || {
                let fail = || Err(std::io::Error::last_os_error());
                if let Some(fd) = listener {
                    let rc = if fd == 3 {
                        libc::fcntl(3, libc::F_SETFD, 0)
                    } else {
                        libc::dup2(fd, 3)
                    };
                    if rc < 0 {
                        return fail();
                    }
                }
                let flags = libc::CLONE_NEWNS | if netns { libc::CLONE_NEWNET } else { 0 };
                if libc::unshare(flags) != 0 {
                    return fail();
                }
                let null = std::ptr::null();
                let private = libc::MS_REC | libc::MS_PRIVATE;
                if libc::mount(null, root.as_ptr(), null, private, std::ptr::null()) != 0 {
                    return fail();
                }
                if netns {
                    if libc::mount(sysfs.as_ptr(), sys.as_ptr(), sysfs.as_ptr(), 0, null.cast())
                        != 0
                    {
                        return fail();
                    }
                    const SIOCBRADDBR: libc::Ioctl = 0x89a0;
                    for bridge in &bridges {
                        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                        if sock < 0 || libc::ioctl(sock, SIOCBRADDBR, bridge.as_ptr()) != 0 {
                            return fail();
                        }
                        libc::close(sock);
                    }
                }
                if let Some((dir, options)) = &tmpfs {
                    let data = options.as_ptr().cast();
                    if libc::mount(
                        tmpfs_type.as_ptr(),
                        dir.as_ptr(),
                        tmpfs_type.as_ptr(),
                        0,
                        data,
                    ) != 0
                    {
                        return fail();
                    }
                }
                Ok(())
            });
        }
    }

    /// The state directory as the endpoint sees it (through `/proc/<pid>/root` when it
    /// lives on a tmpfs of the endpoint's own mount namespace).
    pub fn state_view(&self) -> PathBuf {
        if self.isolation.tmpfs_kib.is_some() {
            let state = self.state_dir();
            PathBuf::from(format!("/proc/{}/root", self.pid()))
                .join(state.strip_prefix("/").unwrap())
        } else {
            self.state_dir()
        }
    }

    /// The network interfaces the endpoint sees (its network namespace), sorted.
    pub fn interfaces(&self) -> Vec<String> {
        let text = std::fs::read_to_string(format!("/proc/{}/net/dev", self.pid())).unwrap();
        let mut names: Vec<String> = text
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|n| n.trim().to_owned())
            .collect();
        names.sort();
        names
    }

    /// Runs `args` in the endpoint's network namespace (`nsenter`); must succeed.
    pub fn in_netns(&self, args: &[&str]) {
        let pid = self.pid().to_string();
        let output = Process::new("nsenter")
            .args(["-t", &pid, "-n"])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
    }

    /// The endpoint's working directory (PKI files, `state/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        let i = self.args.iter().position(|a| a == "--state-dir").unwrap();
        self.dir.join(&self.args[i + 1])
    }

    /// The endpoint's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        let workers = crate::common::server::tls_workers(child.id());
        let _ = child.kill();
        let _ = child.wait();
        crate::common::server::wait_gone(&workers);
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        signal(child.id(), libc::SIGTERM);
        child.wait().unwrap()
    }

    /// Sends `sig` to the endpoint.
    pub fn signal(&self, sig: i32) {
        signal(self.pid(), sig);
    }

    /// The first log line containing `needle`, waiting for it.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.log_line(needle) {
                return line;
            }
            if let Some(child) = &self.child {
                // A process that died will not log it.
                if let Ok(Some(status)) = unsafe_try_wait(child) {
                    panic!("endpoint exited ({status}):\n{}", self.log_text());
                }
            }
            assert!(
                start.elapsed() < WAIT,
                "no log line with {needle:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first log line containing `needle`, if there is one yet.
    pub fn log_line(&self, needle: &str) -> Option<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Everything logged so far (by the current process).
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The audit log's records once there are at least `n`.
    pub fn audit(&self, n: usize) -> Vec<serde_json::Value> {
        crate::common::server::wait_for_audit(&self.state_dir().join(petrel::audit::AUDIT_FILE), n)
    }

    /// Connects with `leaf` and reads every frame until the server closes.
    pub fn request(&self, leaf: &Leaf) -> Result<Vec<Wire>, ClientError> {
        request(self.addr, &leaf.chain, &leaf.key, self.ca.cert())
    }

    /// [`Host::request`] that must succeed, as reply texts.
    pub fn texts(&self, leaf: &Leaf) -> Vec<String> {
        let frames = self.request(leaf).unwrap();
        frames.iter().map(|w| text(&w.payload)).collect()
    }

    /// Connects with `leaf` (the handshake completed).
    pub fn connect(&self, leaf: &Leaf) -> Client {
        Client::connect(self.addr, &leaf.chain, &leaf.key, self.ca.cert()).unwrap()
    }

    /// A legitimate client is served: a `policy info` by a leaf of the root CA completes
    /// with one success frame about `:` listing the root policy.
    pub fn assert_served(&self) {
        let leaf = self.ca.leaf(Some("."), &Command::Policy(PolicyCmd::Info));
        let frames = self.request(&leaf).unwrap();
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0].header, Header::new(0, Name::root()));
        match &frames[0].payload {
            Payload::Success(Success::Policies(policies)) => {
                assert!(
                    policies.iter().any(|p| p.name == Name::root()),
                    "{policies:?}"
                );
            }
            other => panic!("policy info answered {other:?}"),
        }
    }

    /// The unikernels running, as the root CA sees them (sorted names).
    pub fn unikernels(&self) -> Vec<String> {
        let leaf = self
            .ca
            .leaf(Some("."), &Command::Unikernel(UnikernelCmd::Info));
        let frames = self.request(&leaf).unwrap();
        assert_eq!(frames.len(), 1, "{frames:?}");
        match &frames[0].payload {
            Payload::Success(Success::UnikernelInfo(entries)) => {
                let mut names: Vec<String> = entries.iter().map(|e| e.name.text()).collect();
                names.sort();
                names
            }
            other => panic!("info answered {other:?}"),
        }
    }

    /// The policies stored, as the root CA sees them (path → policy).
    pub fn policies(&self) -> Vec<(String, Policy)> {
        let leaf = self.ca.leaf(Some("."), &Command::Policy(PolicyCmd::Info));
        let frames = self.request(&leaf).unwrap();
        match &frames[0].payload {
            Payload::Success(Success::Policies(entries)) => {
                let mut all: Vec<(String, Policy)> = entries
                    .iter()
                    .map(|e| (e.name.text(), e.policy.clone()))
                    .collect();
                all.sort_by(|a, b| a.0.cmp(&b.0));
                all
            }
            other => panic!("policy info answered {other:?}"),
        }
    }

    /// The block devices, as the root CA sees them: (name, size MB, attached).
    pub fn blocks(&self) -> Vec<(String, i64, bool)> {
        let leaf = self.ca.leaf(Some("."), &Command::Block(BlockCmd::Info));
        let frames = self.request(&leaf).unwrap();
        match &frames[0].payload {
            Payload::Success(Success::BlockDevices(devices)) => {
                let mut all: Vec<(String, i64, bool)> = devices
                    .iter()
                    .map(|d| (d.name.text(), d.size, d.active))
                    .collect();
                all.sort();
                all
            }
            other => panic!("block info answered {other:?}"),
        }
    }

    /// The endpoint's live children that are tenders (not zombies).
    pub fn tenders(&self) -> Vec<Proc> {
        children(self.pid())
    }

    /// Open file descriptors of the endpoint.
    pub fn fds(&self) -> usize {
        fd_count(self.pid())
    }

    /// Resident memory of the endpoint in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                signal(child.id(), libc::SIGTERM);
            }
            let _ = child.wait();
        }
    }
}

fn unsafe_try_wait(child: &Child) -> std::io::Result<Option<String>> {
    // A child we may not reap here (we hold only a shared reference): look at /proc.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id()))?;
    Ok(parse_stat(&stat)
        .filter(|s| s.state == 'Z')
        .map(|_| "zombie".to_owned()))
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: i32) {
    let pid = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: kill(2) on a process this test started.
    unsafe { libc::kill(pid, sig) };
}

// ---------------------------------------------------------------------------------------
// Processes

/// A process as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// Its pid.
    pub pid: u32,
    /// Its command line.
    pub args: Vec<String>,
}

impl Proc {
    /// The unikernel this tender runs: the image's file stem (`alice:web` for
    /// `images/alice:web.img`).
    pub fn image_stem(&self) -> Option<String> {
        self.args
            .iter()
            .find(|a| a.ends_with(".img"))
            .and_then(|a| Path::new(a).file_stem())
            .map(|s| s.to_string_lossy().into_owned())
    }
}

/// What `/proc/<pid>/stat` says.
pub struct Stat {
    /// State letter (`R`, `S`, `Z`, …).
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
}

/// Parses `/proc/<pid>/stat`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(Stat { state, ppid })
}

/// Live (not zombie) children of `parent`, but not its TLS worker.
pub fn children(parent: u32) -> Vec<Proc> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(stat) = parse_stat(&stat) else {
            continue;
        };
        if stat.ppid != parent || stat.state == 'Z' {
            continue;
        }
        let args = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<String>>();
        // The TLS worker of a split endpoint is not a tender.
        if args.iter().any(|a| a == "--tls-worker") {
            continue;
        }
        found.push(Proc { pid, args });
    }
    found.sort_by_key(|p| p.pid);
    found
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident memory of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Interfaces named `vmmtap<N>` in the current network namespace.
pub fn taps() -> Vec<String> {
    let mut taps: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("vmmtap"))
                .collect()
        })
        .unwrap_or_default();
    taps.sort();
    taps
}

/// Waits until `condition` holds (a safety net, not a timing assertion).
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < WAIT, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// Requests and replies

/// A reply as one line: `success: <text>`, `failure: <text>`, or the debug form of other
/// successes.
pub fn text(payload: &Payload) -> String {
    match payload {
        Payload::Failure(text) => format!("failure: {text}"),
        Payload::Success(Success::String(text)) => format!("success: {text}"),
        other => format!("{other:?}"),
    }
}

/// A frame with header `(5, 0, name)`.
pub fn wire(name: &str, payload: Payload) -> Wire {
    Wire::new(Header::new(0, Name::parse(name).unwrap()), payload)
}

/// A failure frame about `name`.
pub fn failure(name: &str, text: &str) -> Wire {
    wire(name, Payload::failure(text))
}

/// A success string frame about `name`.
pub fn success(name: &str, text: &str) -> Wire {
    wire(name, Payload::success_string(text))
}

/// The stub solo5 image (hvt, ABI 2) with the given manifest devices.
pub fn image(devices: &[Device]) -> Vec<u8> {
    build_test_image(Target::Hvt, 2, devices)
}

/// A unikernel configuration: the stub image inline, the stand-in's `args` (e.g.
/// `--wait`), memory `mb`, CPU 0.
pub fn config(args: &[&str], mb: i64) -> UnikernelConfig {
    UnikernelConfig {
        image: image(&[]),
        memory: mb,
        arguments: Some(args.iter().map(|s| s.to_string()).collect()),
        ..UnikernelConfig::default()
    }
}

/// `create` of a unikernel that waits until it is stopped, `mb` MB, image inline.
pub fn create_waiting(mb: i64) -> Command {
    Command::Unikernel(UnikernelCmd::Create(config(&["--wait"], mb)))
}

/// `create` whose image is streamed after the handshake.
pub fn create_streamed(args: &[&str]) -> Command {
    Command::Unikernel(UnikernelCmd::Create(UnikernelConfig {
        image: Vec::new(),
        ..config(args, 32)
    }))
}

/// The configuration's leaf command as DER extension value.
pub fn ext(command: &Command) -> Option<Vec<u8>> {
    Some(codec::encode_extension(command))
}

// ---------------------------------------------------------------------------------------
// The state directory

/// Every file (not directory) below `dir`, relative, sorted.
pub fn files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                walk(base, &path, out);
            } else {
                out.push(
                    path.strip_prefix(base)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Temporary files anywhere below `dir` (names ending in `.tmp`, or anything in
/// `tmp/`).
pub fn temp_files(dir: &Path) -> Vec<String> {
    files(dir)
        .into_iter()
        .filter(|f| f.ends_with(".tmp") || f.starts_with("tmp/"))
        .collect()
}

/// The state file's unikernel names and policy paths, and the records, which must parse.
pub fn stored(state_dir: &Path) -> (BTreeSet<String>, BTreeSet<String>, Records) {
    let state = match std::fs::read(state_dir.join(STATE_FILE)) {
        Ok(der) => codec::decode_state(&der).unwrap(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => codec::State::default(),
        Err(e) => panic!("reading the state file: {e}"),
    };
    let records = Records::load(&state_dir.join(RECORDS_FILE)).unwrap();
    (
        state.unikernels.iter().map(|e| e.name.text()).collect(),
        state.policies.iter().map(|e| e.name.text()).collect(),
        records,
    )
}

/// A set of strings.
pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------
// A raw TLS client

/// How the server ended a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// close_notify after the last frame.
    CloseNotify,
    /// The connection was cut (no close_notify); the reason as the client saw it.
    Cut(String),
}

/// A TLS client that can misbehave: raw octets, half-closes, its own close_notify, and
/// reading every frame with how the connection ended.
pub struct Raw {
    stream: openssl::ssl::SslStream<std::net::TcpStream>,
}

impl Raw {
    /// Connects with `leaf` and completes the handshake.
    pub fn connect(host: &Host, leaf: &Leaf) -> Self {
        Self::try_connect(host.addr, leaf, host.ca.cert()).unwrap()
    }

    /// Connects to `addr` with `leaf`, verifying the server against `server_ca`.
    pub fn try_connect(
        addr: SocketAddr,
        leaf: &Leaf,
        server_ca: &petrel::pki::Certificate,
    ) -> Result<Self, String> {
        let tcp = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        tcp.set_write_timeout(Some(WAIT)).unwrap();
        let context = crate::common::tls_client::context(&leaf.chain, &leaf.key, server_ca);
        let ssl = openssl::ssl::Ssl::new(&context).unwrap();
        let stream = ssl.connect(tcp).map_err(|e| format!("handshake: {e}"))?;
        Ok(Self { stream })
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Sends one raw chunk (length prefix + data).
    pub fn chunk(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.send(&codec::frame(data).unwrap())
    }

    /// Sends the zero-length terminator.
    pub fn end(&mut self) -> std::io::Result<()> {
        self.send(&codec::END_OF_STREAM)
    }

    /// Shuts the TCP connection down for writing, without a close_notify: the server
    /// reads an unexpected end of file, and can still answer.
    pub fn half_close(&mut self) {
        let _ = self.stream.get_ref().shutdown(std::net::Shutdown::Write);
    }

    /// Sends our close_notify (the server reads a clean end of the stream) and keeps the
    /// connection open for reading.
    pub fn close_notify(&mut self) {
        let _ = self.stream.shutdown();
    }

    /// Closes the TCP connection at once.
    pub fn cut(self) {
        let _ = self.stream.get_ref().shutdown(std::net::Shutdown::Both);
    }

    /// Reads every frame until the server closes, and how it closed.
    pub fn frames(&mut self) -> (Vec<Wire>, End) {
        let mut frames = Vec::new();
        loop {
            let mut header = [0u8; 4];
            match self.read_exact(&mut header) {
                Ok(true) => {}
                Ok(false) => return (frames, End::CloseNotify),
                Err(e) => return (frames, End::Cut(e)),
            }
            match codec::decode_frame_header(header, 64 * 1024 * 1024) {
                Ok(codec::FrameLength::Body(len)) => {
                    let mut body = vec![0u8; len];
                    match self.read_exact(&mut body) {
                        Ok(true) => {}
                        Ok(false) => return (frames, End::Cut("closed inside a frame".into())),
                        Err(e) => return (frames, End::Cut(e)),
                    }
                    frames.push(codec::decode_wire(&body).unwrap());
                }
                other => panic!("unexpected frame header {header:?}: {other:?}"),
            }
        }
    }

    /// Reads the next frame; `None` when the server closed (close_notify).
    pub fn frame(&mut self) -> Result<Option<Wire>, String> {
        let mut header = [0u8; 4];
        if !self.read_exact(&mut header)? {
            return Ok(None);
        }
        match codec::decode_frame_header(header, 64 * 1024 * 1024) {
            Ok(codec::FrameLength::Body(len)) => {
                let mut body = vec![0u8; len];
                if !self.read_exact(&mut body)? {
                    return Err("closed inside a frame".into());
                }
                codec::decode_wire(&body)
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
            other => Err(format!("unexpected frame header {header:?}: {other:?}")),
        }
    }

    /// Reads the frames, which must end with a close_notify; returns their texts.
    pub fn texts(&mut self) -> Vec<String> {
        let (frames, end) = self.frames();
        assert_eq!(end, End::CloseNotify, "{frames:?}");
        frames.iter().map(|w| text(&w.payload)).collect()
    }

    /// `Ok(false)` on a clean close before the first octet.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<bool, String> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.stream.ssl_read(&mut buf[filled..]) {
                Ok(0) => return Err("closed".into()),
                Ok(n) => filled += n,
                Err(e) if e.code() == openssl::ssl::ErrorCode::ZERO_RETURN && filled == 0 => {
                    return Ok(false);
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(true)
    }
}
