//! `petrel-endpoint --inetd` through a long-running endpoint's executor socket: a
//! long-running endpoint with `--executor-socket`, and one `--inetd` process per TCP
//! connection, fed the accepted connection on its standard input as inetd does. The
//! unikernels live in the long-running executor: a create through one inetd connection
//! is the same running unikernel (the same stand-in tender) that later connections see,
//! and it outlives the inetd process. As root the long-running endpoint runs split and
//! the inetd processes drop privileges (`--user nobody`); otherwise both run as the
//! test's user.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::pki::{Ca, Leaf};
use common::procs::{self, RECORD_DIR_VAR, status};
use common::server::{Endpoint, endpoint_binary, free_port, server_certificate, stand_in_tender};
use common::tls_client::{self, Client};
use petrel::codec::{
    Command, ConsoleCmd, Data, Payload, PolicyCmd, SinceCount, Success, Timestamp, UnikernelCmd,
    UnikernelConfig, Wire,
};
use petrel::executor::manifest::{Target, build_test_image};

/// A safety net for what happens asynchronously (a tender starting or exiting), not a
/// measurement.
const SETTLE: Duration = Duration::from_secs(60);

/// The user inetd processes drop to when the test runs as root.
const USER: &str = "nobody";

/// What `--inetd` without `--executor-socket-path` prints.
const NEEDS_SOCKET: &str = "petrel-endpoint: --inetd needs --executor-socket-path PATH: an \
     inetd connection is served through the executor of a running `petrel-endpoint \
     --executor-socket` (PATH is its <state-dir>/executor.sock); petrel no longer runs an \
     executor per connection\n";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A long-running endpoint with `--executor-socket` in a fresh directory holding the CA
/// certificate, the server certificate and key; stand-in tenders write their launch
/// records into `tenders/`.
struct Site {
    tmp: tempfile::TempDir,
    ca: Ca,
    extra: Vec<String>,
    endpoint: Option<Endpoint>,
}

impl Site {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`Site::start`] with `extra` arguments for the long-running endpoint.
    fn start_with(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let ca = Ca::root_now("test-ca");
        let (cert, key) = server_certificate(&ca);
        std::fs::write(tmp.path().join("cacert.pem"), ca.cert_pem()).unwrap();
        std::fs::write(tmp.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(tmp.path().join("server.key"), key.to_pem()).unwrap();
        std::fs::create_dir(tmp.path().join("tenders")).unwrap();
        let mut site = Self {
            tmp,
            ca,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            endpoint: None,
        };
        site.restart();
        site
    }

    fn restart(&mut self) {
        assert!(self.endpoint.is_none());
        let port = free_port();
        let mut args: Vec<String> = [
            "cacert.pem",
            "server.pem",
            "server.key",
            "--ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--state-dir",
            "state",
            "--tender",
            stand_in_tender(),
            "--cpus",
            "0,1",
            "--memory",
            "1024",
            "--block-storage",
            "100",
            "--executor-socket",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.extra.iter().cloned());
        let records = self.records();
        let endpoint =
            Endpoint::spawn_with_env(self.tmp.path(), &args, port, &[(RECORD_DIR_VAR, &records)]);
        endpoint.wait_for_log("executor socket listening");
        self.endpoint = Some(endpoint);
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn records(&self) -> PathBuf {
        self.tmp.path().join("tenders")
    }

    fn socket(&self) -> PathBuf {
        self.tmp.path().join("state/executor.sock")
    }

    fn endpoint(&self) -> &Endpoint {
        self.endpoint.as_ref().unwrap()
    }

    /// The arguments of an inetd process: the executor socket, the CA file `cacert`, the
    /// server certificate and key, and `--user nobody` as root.
    fn inetd_args(&self, cacert: &str) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--inetd".into(),
            "--executor-socket-path".into(),
            self.socket().to_str().unwrap().into(),
            cacert.into(),
            "server.pem".into(),
            "server.key".into(),
        ];
        if is_root() {
            args.extend(["--user".into(), USER.into()]);
        }
        args
    }

    /// An inetd connection served with the site's CA file.
    fn inetd(&self) -> Inetd {
        Inetd::listen(self.dir(), self.inetd_args("cacert.pem"))
    }

    /// One request through its own inetd process: every frame the client reads, and
    /// the process's output once it exited.
    fn request(&self, leaf: &Leaf) -> (Vec<Wire>, Output) {
        let inetd = self.inetd();
        let frames = tls_client::request(inetd.addr, &leaf.chain, &leaf.key, self.ca.cert());
        let output = inetd.finish();
        (frames.unwrap(), output)
    }

    /// The one live stand-in tender, waiting for its launch record.
    fn only_tender(&self) -> procs::Tender {
        let start = Instant::now();
        loop {
            let live = procs::live_tenders(&self.records());
            assert!(live.len() <= 1, "{live:?}");
            if let [tender] = live.as_slice() {
                return tender.clone();
            }
            assert!(start.elapsed() < SETTLE, "no tender");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A loopback listener whose one accepted connection becomes the standard input of
/// `petrel-endpoint ARGS`, as inetd does.
struct Inetd {
    addr: SocketAddr,
    spawned: JoinHandle<Child>,
}

impl Inetd {
    fn listen(dir: &Path, args: Vec<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let dir = dir.to_path_buf();
        let spawned = std::thread::spawn(move || {
            let (socket, _) = listener.accept().unwrap();
            Process::new(endpoint_binary())
                .args(&args)
                .current_dir(&dir)
                .stdin(Stdio::from(OwnedFd::from(socket)))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        });
        Self { addr, spawned }
    }

    /// The inetd process (once a client connected).
    fn process(self) -> Child {
        self.spawned.join().unwrap()
    }

    /// Waits for the inetd process to exit.
    fn finish(self) -> Output {
        self.process().wait_with_output().unwrap()
    }
}

/// A create of `web` with an embedded image of the stand-in that prints a line and
/// waits.
fn create_web() -> Command {
    let image = build_test_image(Target::Hvt, 2, &[]);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(9));
    std::io::Write::write_all(&mut z, &image).unwrap();
    Command::Unikernel(UnikernelCmd::Create(UnikernelConfig {
        compressed: true,
        image: z.finish().unwrap(),
        arguments: Some(vec!["--print=hello from web".into(), "--wait".into()]),
        ..UnikernelConfig::default()
    }))
}

fn assert_clean_exit(output: &Output) {
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
}

/// The single reply of a request: its payload.
fn only_payload(frames: &[Wire]) -> &Payload {
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].header.sequence, 0);
    &frames[0].payload
}

/// The one unikernel an info reply lists: its name, arguments and start time.
fn info_of(frames: &[Wire]) -> (String, Option<Vec<String>>, Timestamp) {
    match only_payload(frames) {
        Payload::Success(Success::UnikernelInfo(entries)) => {
            assert_eq!(entries.len(), 1, "{entries:?}");
            let entry = &entries[0];
            (
                entry.name.to_string(),
                entry.info.arguments.clone(),
                entry.info.started,
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn inetd_connections_share_the_long_running_executor() {
    let site = Site::start();
    let ca = &site.ca;

    // The socket: a socket file of the endpoint's user, mode 0600.
    let meta = std::fs::symlink_metadata(site.socket()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o7777, 0o600);
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(meta.uid(), euid);

    // A create through one inetd connection; its process exits.
    let (frames, output) = site.request(&ca.leaf(Some("web"), &create_web()));
    assert_eq!(
        only_payload(&frames),
        &Payload::success_string("created unikernel")
    );
    assert_eq!(frames[0].header.name.to_string(), ":web");
    assert_clean_exit(&output);
    let tender = site.only_tender();
    // The executor saw the inetd process connect, with its credentials at the time (before
    // any --user drop).
    let line = site
        .endpoint()
        .wait_for_log("executor socket: client connected");
    assert!(line.contains(&format!(" uid={euid} ")), "{line}");

    // The unikernel outlives that process: an info through a second sees it, and the
    // same tender still runs.
    let info = ca.leaf(Some("web"), &Command::Unikernel(UnikernelCmd::Info));
    let (frames, output) = site.request(&info);
    assert_clean_exit(&output);
    let (name, arguments, started) = info_of(&frames);
    assert_eq!(name, ":web");
    assert_eq!(
        arguments,
        Some(vec![
            "--print=hello from web".to_owned(),
            "--wait".to_owned()
        ])
    );
    assert_eq!(site.only_tender(), tender);

    // The console through a third, kept open while a fourth asks for the info: two
    // inetd connections at the same time.
    let console_leaf = ca.leaf(
        Some("web"),
        &Command::Console(ConsoleCmd::Subscribe(SinceCount::Count(10))),
    );
    let console = site.inetd();
    let mut client = Client::connect(
        console.addr,
        &console_leaf.chain,
        &console_leaf.key,
        ca.cert(),
    )
    .unwrap();
    assert_eq!(
        client.read_frame().unwrap().unwrap().payload,
        Payload::success_string("subscribed")
    );
    let console = console.process();
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l == "hello from web") {
        match client.read_frame().unwrap().unwrap().payload {
            Payload::Data(Data::Console { line, .. }) => lines.push(line),
            other => panic!("{other:?}"),
        }
    }
    if is_root() {
        // The inetd process serving the console dropped its privileges.
        let nobody = petrel::privsep::privileges::Identity::resolve(USER, None).unwrap();
        let uid = nobody.uid.to_string();
        assert_eq!(status(console.id(), "Uid"), [uid.as_str(); 4]);
        for caps in ["CapPrm", "CapEff", "CapAmb"] {
            assert_eq!(status(console.id(), caps), ["0000000000000000"], "{caps}");
        }
        assert_eq!(status(console.id(), "NoNewPrivs"), ["1"]);
        assert_eq!(status(console.id(), "Seccomp"), ["2"]);
        let root = std::fs::read_link(format!("/proc/{}/root", console.id())).unwrap();
        assert_eq!(root, site.dir().join("state/tls-root"));
    }
    let (frames, output) = site.request(&info);
    assert_clean_exit(&output);
    assert_eq!(info_of(&frames), (name, arguments, started));
    client.drop_connection();
    let output = console.wait_with_output().unwrap();
    assert_clean_exit(&output);
    assert_eq!(site.only_tender(), tender);

    // A destroy through a fifth: the tender stops.
    let (frames, output) =
        site.request(&ca.leaf(Some("web"), &Command::Unikernel(UnikernelCmd::Destroy)));
    assert_eq!(
        only_payload(&frames),
        &Payload::success_string("destroyed unikernel")
    );
    assert_clean_exit(&output);
    let start = Instant::now();
    while !procs::live_tenders(&site.records()).is_empty() {
        assert!(start.elapsed() < SETTLE, "the tender still runs");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The executor audited what the inetd processes (which write nothing) asked for.
    let requests: Vec<(String, String, String)> = audit_records(&site, "request", 5)
        .iter()
        .filter(|r| r["event"] == "request")
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (field("name"), field("command"), field("outcome"))
        })
        .collect();
    let created = (
        ":web".to_owned(),
        "unikernel create".to_owned(),
        "ok".to_owned(),
    );
    let destroyed = (
        ":web".to_owned(),
        "unikernel destroy".to_owned(),
        "ok".to_owned(),
    );
    assert_eq!(requests.first(), Some(&created), "{requests:?}");
    assert_eq!(requests.last(), Some(&destroyed), "{requests:?}");
    assert_eq!(requests.len(), 5, "{requests:?}");
}

/// The records of the audit log once there are `count` of event `event` (the log is
/// written off the request path), or whatever is there after [`SETTLE`].
fn audit_records(site: &Site, event: &str, count: usize) -> Vec<serde_json::Value> {
    let path = site.dir().join("state").join(petrel::audit::AUDIT_FILE);
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let events = records.iter().filter(|r| r["event"] == event).count();
        if events >= count || start.elapsed() > SETTLE {
            return records;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_executor_refuses_a_forged_chain_an_inetd_process_accepted() {
    let site = Site::start();
    // A CA of the same name with another key: an inetd process given it as its CA file
    // (a compromised TLS side) completes the handshake; the executor does not trust it.
    let forger = Ca::root_now("test-ca");
    std::fs::write(site.dir().join("forged-ca.pem"), forger.cert_pem()).unwrap();
    let inetd = Inetd::listen(site.dir(), site.inetd_args("forged-ca.pem"));
    let leaf = forger.leaf(Some("."), &Command::Policy(PolicyCmd::Info));
    let frames = tls_client::request(inetd.addr, &leaf.chain, &leaf.key, site.ca.cert()).unwrap();
    assert_eq!(
        only_payload(&frames),
        &Payload::failure("certificate verification failed: certificate signature failure")
    );
    assert_clean_exit(&inetd.finish());
    assert!(procs::live_tenders(&site.records()).is_empty());
    let records = audit_records(&site, "handshake", 1);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["event"], "handshake");
    assert_eq!(
        records[0]["outcome"],
        "refused: certificate verification failed: certificate signature failure"
    );
}

#[test]
fn inetd_without_the_executor_socket_path_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = Process::new(endpoint_binary())
        .args(["--inetd", "cacert.pem", "server.pem", "server.key"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stderr), NEEDS_SOCKET);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    // It made nothing: no state directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn inetd_without_a_running_endpoint_says_so() {
    let site_dir = tempfile::tempdir().unwrap();
    let ca = Ca::root_now("test-ca");
    let (cert, key) = server_certificate(&ca);
    std::fs::write(site_dir.path().join("cacert.pem"), ca.cert_pem()).unwrap();
    std::fs::write(site_dir.path().join("server.pem"), cert.pem()).unwrap();
    std::fs::write(site_dir.path().join("server.key"), key.to_pem()).unwrap();
    let socket = site_dir.path().join("state/executor.sock");
    let (stdin, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let output = Process::new(endpoint_binary())
        .args(["--inetd", "--executor-socket-path"])
        .arg(&socket)
        .args(["cacert.pem", "server.pem", "server.key"])
        .current_dir(site_dir.path())
        .stdin(Stdio::from(OwnedFd::from(stdin)))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.ends_with(&format!(
            " ERROR petrel_endpoint: connecting to the executor socket {} (is petrel-endpoint \
             running with --executor-socket?): No such file or directory (os error 2)\n",
            socket.display()
        )),
        "{stderr}"
    );
    assert!(!site_dir.path().join("state").exists());
}

#[test]
fn sigterm_removes_the_socket_and_a_restart_replaces_a_stale_one() {
    let mut site = Site::start();
    assert!(site.socket().exists());
    let endpoint = site.endpoint.take().unwrap();
    assert!(endpoint.stop().success());
    assert!(!site.socket().exists());

    // A stale socket file (its listener gone) where the next run binds.
    drop(std::os::unix::net::UnixListener::bind(site.socket()).unwrap());
    assert!(site.socket().exists());
    site.restart();
    let leaf = site.ca.leaf(Some("."), &Command::Policy(PolicyCmd::Info));
    let (frames, output) = site.request(&leaf);
    assert!(
        matches!(
            only_payload(&frames),
            Payload::Success(Success::Policies(_))
        ),
        "{frames:?}"
    );
    assert_clean_exit(&output);
}

#[test]
fn control_channels_beyond_the_bound_are_closed() {
    let site = Site::start_with(&["--max-executor-clients", "1"]);
    let leaf = site.ca.leaf(Some("."), &Command::Policy(PolicyCmd::Info));
    // This test holds the one slot with a control channel of its own.
    let held = petrel::privsep::executor_socket::connect(&site.socket()).unwrap();
    site.endpoint()
        .wait_for_log("executor socket: client connected");
    // The next inetd process finds its channel closed: the client gets a failure.
    let (frames, output) = site.request(&leaf);
    assert_eq!(
        only_payload(&frames),
        &Payload::failure("error reading from fd")
    );
    assert_clean_exit(&output);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot reach the executor"),
        "{output:?}"
    );
    site.endpoint()
        .wait_for_log("executor socket: peer refused: too many clients at once");
    // Once the slot is free, inetd connections are served again (the executor notices
    // the closed channel asynchronously: retried).
    drop(held);
    let start = Instant::now();
    loop {
        let (frames, output) = site.request(&leaf);
        assert_clean_exit(&output);
        if matches!(
            frames.as_slice(),
            [Wire {
                payload: Payload::Success(Success::Policies(_)),
                ..
            }]
        ) {
            break;
        }
        assert!(start.elapsed() < SETTLE, "{frames:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn peers_of_other_users_are_refused() {
    if !is_root() {
        eprintln!("skipped: connecting as another user needs root");
        return;
    }
    let site = Site::start();
    // Open the way for another user (the endpoint made the directory 0700 and the socket
    // 0600): the executor's own check on the peer's credentials is what is left.
    let nobody = petrel::privsep::privileges::Identity::resolve(USER, None).unwrap();
    for (path, mode) in [
        (site.dir().to_path_buf(), 0o755),
        (site.dir().join("state"), 0o711),
        (site.socket(), 0o666),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let (stdin, peer) = std::os::unix::net::UnixStream::pair().unwrap();
    drop(peer);
    // Without --user: it connects as nobody.
    let _ = Process::new(endpoint_binary())
        .args(site.inetd_args("cacert.pem").iter().take(6))
        .current_dir(site.dir())
        .uid(nobody.uid)
        .gid(nobody.gid)
        .stdin(Stdio::from(OwnedFd::from(stdin)))
        .output()
        .unwrap();
    let line = site
        .endpoint()
        .wait_for_log("executor socket: peer refused (uid neither 0 nor the endpoint's)");
    assert!(
        line.contains(&format!(" uid={} gid={}", nobody.uid, nobody.gid)),
        "{line}"
    );
}
