//! Privilege separation (`--user`): the TLS worker runs unprivileged, requests still work,
//! the executor process re-verifies what the worker hands it, a killed worker is restarted
//! and SIGTERM stops both. The process tests need root (they are skipped with a message
//! otherwise); the request-socket tests run as anyone.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cli::{Running, ok, petrel, refused};
use common::handler::{Behaviour, Event, FakeHandler};
use common::pki::{Ca, Leaf};
use common::procs::status;
use common::server::{Endpoint, free_port, stand_in_tender, tls_workers, wait_gone};
use petrel::audit::AuditLog;
use petrel::codec::{Command, Payload, PolicyCmd};
use petrel::executor::api::OutputFrame;
use petrel::executor::manifest::{Device, Target, build_test_image};
use petrel::limits::Limits;
use petrel::name::Name;
use petrel::privsep::request;
use petrel::privsep::service::ExecutorService;
use petrel::revocation::{RevocationStore, SharedRevocations};
use petrel::verify::TrustAnchors;

/// The user the TLS worker runs as.
const USER: &str = "nobody";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// An operator directory with `petrel generate`'s CA and server certificate, a tenant
/// `alice` signed by it, and an endpoint with `--user nobody`.
struct Site {
    tmp: tempfile::TempDir,
    op: PathBuf,
    alice: PathBuf,
    alice_serial: String,
    port: u16,
    args: Vec<String>,
    endpoint: Option<Endpoint>,
}

impl Site {
    fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let op = tmp.path().join("op");
        std::fs::create_dir(&op).unwrap();
        ok(&op, &["generate", "myca", "db.txt"]);
        let alice = tmp.path().join("alice");
        std::fs::create_dir(&alice).unwrap();
        std::fs::copy(op.join("cacert.pem"), alice.join("cacert.pem")).unwrap();
        ok(
            &alice,
            &[
                "add-policy",
                "alice",
                "2",
                "--mem",
                "128",
                "--size",
                "20",
                "--csr",
            ],
        );
        std::fs::copy(alice.join("alice.req"), op.join("alice.req")).unwrap();
        let signed = ok(
            &op,
            &["sign", "cacert.pem", "db.txt", "myca.key", "alice.req"],
        );
        let alice_serial = signed
            .stdout
            .split("serial ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .to_owned();
        std::fs::copy(op.join("alice.pem"), alice.join("alice.pem")).unwrap();
        let port = free_port();
        let state = tmp.path().join("state");
        let args: Vec<String> = [
            "cacert.pem",
            "server.pem",
            "server.key",
            "--ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--state-dir",
            state.to_str().unwrap(),
            "--tender",
            stand_in_tender(),
            "--cpus",
            "0,1",
            "--memory",
            "1024",
            "--block-storage",
            "1000",
            "--bridges",
            "br0",
            "--user",
            USER,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut site = Self {
            tmp,
            op,
            alice,
            alice_serial,
            port,
            args,
            endpoint: None,
        };
        site.restart();
        site
    }

    fn restart(&mut self) {
        assert!(self.endpoint.is_none());
        self.endpoint = Some(Endpoint::spawn(&self.op, &self.args, self.port));
    }

    fn endpoint(&self) -> &Endpoint {
        self.endpoint.as_ref().unwrap()
    }

    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// `petrel ARGS` as `alice` (or the operator with `admin`), with the request options.
    fn remote(&self, admin: bool, args: &[&str]) -> (PathBuf, Vec<String>) {
        let (dir, chain, key) = if admin {
            (&self.op, "cacert.pem", "myca.key")
        } else {
            (&self.alice, "alice.pem", "alice.key")
        };
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let destination = format!("localhost:{}", self.port);
        all.extend(
            [
                "--destination",
                &destination,
                "--ca",
                chain,
                "--ca-key",
                key,
                "--server-ca",
                "cacert.pem",
            ]
            .map(str::to_owned),
        );
        (dir.clone(), all)
    }

    fn ok(&self, admin: bool, args: &[&str]) -> String {
        let (dir, all) = self.remote(admin, args);
        ok(&dir, &all.iter().map(String::as_str).collect::<Vec<_>>()).stdout
    }

    fn refused(&self, admin: bool, args: &[&str], text: &str) {
        let (dir, all) = self.remote(admin, args);
        refused(
            &dir,
            &all.iter().map(String::as_str).collect::<Vec<_>>(),
            text,
        );
    }

    fn spawn(&self, args: &[&str]) -> Running {
        let (dir, all) = self.remote(false, args);
        Running::start(&dir, &all.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

/// The first record of the audit log at `path` whose line contains `needle`, once there.
fn wait_for_audit_line(path: &Path, needle: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return serde_json::from_str(line).unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no audit record with {needle}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_tls_worker_runs_unprivileged_and_requests_work() {
    if !is_root() {
        eprintln!("skipped: privilege separation needs root");
        return;
    }
    let site = Site::start();
    let parent = site.endpoint().pid();
    let worker = site.endpoint().tls_worker();

    // The executor process is root; the TLS worker holds nothing.
    assert_eq!(status(parent, "Uid"), ["0", "0", "0", "0"]);
    assert_eq!(status(worker, "Name"), ["petrel-tls"]);
    let nobody = petrel::privsep::privileges::Identity::resolve(USER, None).unwrap();
    let uid = nobody.uid.to_string();
    let gid = nobody.gid.to_string();
    assert_eq!(status(worker, "Uid"), [uid.as_str(); 4]);
    assert_eq!(status(worker, "Gid"), [gid.as_str(); 4]);
    assert_eq!(status(worker, "Groups"), Vec::<String>::new());
    for caps in ["CapPrm", "CapEff", "CapAmb", "CapInh"] {
        assert_eq!(status(worker, caps), ["0000000000000000"], "{caps}");
    }
    assert_eq!(status(worker, "NoNewPrivs"), ["1"]);
    // Its system call filter is installed (mode 2) on every thread, and the executor
    // process has none.
    assert_eq!(status(worker, "Seccomp"), ["2"]);
    assert_eq!(status(parent, "Seccomp"), ["0"]);
    let threads: Vec<u32> = std::fs::read_dir(format!("/proc/{worker}/task"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
        .collect();
    assert!(threads.len() > 1, "{threads:?}");
    for thread in threads {
        let text = std::fs::read_to_string(format!("/proc/{worker}/task/{thread}/status")).unwrap();
        assert!(
            text.lines().any(|l| l == "Seccomp:\t2"),
            "thread {thread}: {text}"
        );
    }

    // Its root is an empty directory it cannot write: neither the state directory nor
    // /dev/net/tun exists for it.
    let root = std::fs::read_link(format!("/proc/{worker}/root")).unwrap();
    assert_eq!(root, site.state().join("tls-root"));
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    assert!(!Path::new(&format!("/proc/{worker}/root/dev/net/tun")).exists());
    // With its ids, writing into its root or the state directory fails.
    for dir in [root.clone(), site.state()] {
        let probe = dir.join("probe");
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg("echo x > \"$0\"")
            .arg(&probe)
            .uid(nobody.uid)
            .gid(nobody.gid)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "{}", probe.display());
        assert!(!probe.exists());
    }
    // Its descriptors: the listening socket, the control channel and the audit relay
    // (sockets all three), and nothing under the state directory, not even the audit log.
    let fds: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{worker}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .filter(|target| target.starts_with(site.state()))
        .collect();
    assert_eq!(fds, Vec::<PathBuf>::new());

    // A create with a streamed image, its console, a block device set and dumped.
    std::fs::write(
        site.alice.join("hello.hvt"),
        build_test_image(Target::Hvt, 2, &[]),
    )
    .unwrap();
    assert_eq!(
        site.ok(
            false,
            &[
                "create",
                "web",
                "hello.hvt",
                "--arg=--print=hello from web",
                "--arg=--wait"
            ]
        ),
        "created unikernel\n"
    );
    let mut console = site.spawn(&["console", "web"]);
    let lines = console.wait_for_line_ending(" hello from web").to_vec();
    console.stop();
    assert!(lines.last().unwrap().ends_with(" hello from web"));

    std::fs::write(
        site.alice.join("db.hvt"),
        build_test_image(Target::Hvt, 2, &[Device::block("storage")]),
    )
    .unwrap();
    let content: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(site.alice.join("data.img"), &content).unwrap();
    assert_eq!(
        site.ok(false, &["block-add", "disk", "1"]),
        "added block device\n"
    );
    assert_eq!(
        site.ok(false, &["block-set", "disk", "data.img"]),
        "set block device\n"
    );
    site.ok(false, &["block-dump", "disk", "dumped.img"]);
    assert!(std::fs::read(site.alice.join("dumped.img")).unwrap() == content);

    // The operator revokes alice: the worker's store is empty, the executor's re-check
    // refuses her.
    site.ok(true, &["revoke", "--cert", "alice.pem"]);
    site.refused(
        false,
        &["info"],
        &format!(
            "certificate alice (serial {}) is revoked",
            site.alice_serial
        ),
    );
    // The executor process writes the audit records of what it was passed, the refusal
    // among them, marked as its own.
    let path = site.state().join(petrel::audit::AUDIT_FILE);
    let refusal = wait_for_audit_line(&path, "is revoked");
    assert_eq!(refusal["event"], "refused", "{refusal}");
    assert_eq!(refusal["source"], "executor", "{refusal}");
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let created = records
        .iter()
        .find(|r| r["command"] == "unikernel create")
        .expect("a record of the create");
    assert_eq!(created["source"], "executor", "{created}");
    assert_eq!(created["outcome"], "ok", "{created}");
    let console = records
        .iter()
        .find(|r| r["command"] == "console subscribe")
        .expect("a record of the console");
    assert_eq!(console["outcome"], "ended by the client", "{console}");

    // A handshake the worker refuses (a chain from another CA) reaches the audit log
    // through the executor, marked as the worker's.
    let stranger = Ca::root_now("strangerca");
    let leaf = stranger.leaf(Some("x"), &Command::Policy(PolicyCmd::Info));
    let server_ca = std::fs::read_to_string(site.op.join("cacert.pem")).unwrap();
    let server_ca = &petrel::pki::Certificate::from_pem_chain(&server_ca).unwrap()[0];
    let refused = common::tls_client::Client::connect(
        site.endpoint().addr,
        &leaf.chain,
        &leaf.key,
        server_ca,
    )
    .and_then(|mut client| client.read_frame());
    assert!(refused.is_err(), "{refused:?}");
    let handshake = wait_for_audit_line(&path, "\"event\":\"handshake\"");
    assert_eq!(handshake["source"], "tls-worker", "{handshake}");
    assert_eq!(handshake["chain"][0]["cn"], "x", "{handshake}");
}

#[test]
fn a_killed_worker_is_restarted_and_sigterm_stops_both_keeping_the_state() {
    if !is_root() {
        eprintln!("skipped: privilege separation needs root");
        return;
    }
    let mut site = Site::start();
    std::fs::write(
        site.alice.join("hello.hvt"),
        build_test_image(Target::Hvt, 2, &[]),
    )
    .unwrap();
    assert_eq!(
        site.ok(false, &["create", "web", "hello.hvt", "--arg=--wait"]),
        "created unikernel\n"
    );
    let parent = site.endpoint().pid();
    let first = site.endpoint().tls_worker();
    // SAFETY: signalling a process of this test.
    unsafe { libc::kill(libc::pid_t::try_from(first).unwrap(), libc::SIGKILL) };
    site.endpoint()
        .wait_for_log("the TLS worker exited; restarting it");
    let start = Instant::now();
    let second = loop {
        match tls_workers(parent).first() {
            Some(pid) if *pid != first => break *pid,
            _ => {
                assert!(start.elapsed() < Duration::from_secs(60), "no new worker");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    assert_eq!(status(second, "NoNewPrivs"), ["1"]);
    assert_eq!(status(second, "Seccomp"), ["2"]);
    // Requests work again (retried while the new worker comes up) and the unikernel
    // kept running.
    let start = Instant::now();
    let info = loop {
        let (dir, all) = site.remote(false, &["info"]);
        let run = petrel(&dir, &all.iter().map(String::as_str).collect::<Vec<_>>());
        if run.code == 0 {
            break run.stdout;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{run:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(info.contains(":web"), "{info}");

    // SIGTERM: both processes stop, the state file keeps the unikernel.
    let endpoint = site.endpoint.take().unwrap();
    assert!(endpoint.stop().success());
    wait_gone(&[second]);
    let state = std::fs::read(site.state().join("state")).unwrap();
    assert!(
        state.windows(b"web".len()).any(|w| w == b"web"),
        "the state file lost the unikernel"
    );
    site.restart();
    assert!(site.ok(false, &["info"]).contains(":web"));
}

/// The executor's side of a request socket, with a recording handler.
fn service(ca: &Ca) -> (Arc<ExecutorService>, std::sync::mpsc::Receiver<Event>) {
    service_with(ca, Limits::default())
}

fn service_with(
    ca: &Ca,
    limits: Limits,
) -> (Arc<ExecutorService>, std::sync::mpsc::Receiver<Event>) {
    let (handler, events) =
        FakeHandler::new(Behaviour::Frames(vec![Payload::success_string("done")]));
    let anchors = TrustAnchors::from_pem(ca.cert_pem().as_bytes()).unwrap();
    let revocations = Arc::new(SharedRevocations::new(RevocationStore::new()));
    let service = ExecutorService::new(
        Arc::new(handler),
        anchors,
        revocations,
        limits,
        AuditLog::disabled(),
    );
    (service, events)
}

/// Plays a (possibly compromised) TLS side: writes `chain` and a peer on a fresh request
/// socket served by `service`, and reads every frame the executor sends.
async fn fake_tls_side(service: &Arc<ExecutorService>, chain: &[&[u8]]) -> Vec<OutputFrame> {
    let (mine, theirs) = tokio::net::UnixStream::pair().unwrap();
    let served = {
        let service = Arc::clone(service);
        tokio::spawn(async move { service.serve_request(theirs, &AuditLog::disabled()).await })
    };
    let (mut rd, mut wr) = mine.into_split();
    request::write_preamble(&mut wr, chain, "127.0.0.1:4242")
        .await
        .unwrap();
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = request::read_frame(&mut rd).await {
        frames.push(frame);
    }
    served.await.unwrap();
    frames
}

fn ders(leaf: &Leaf) -> Vec<&[u8]> {
    leaf.chain.iter().map(|c| c.der()).collect()
}

#[tokio::test]
async fn chains_are_read_no_more_at_once_than_handshakes_may_run() {
    use tokio::io::AsyncWriteExt;

    let ca = Ca::root_now("ca");
    let limits = Limits {
        max_handshakes: 1,
        ..Limits::default()
    };
    let (service, _events) = service_with(&ca, limits);

    // A TLS side announces a 1000-octet certificate, sends 10 and stalls: it holds the
    // only slot for reading chains.
    let (stalled, theirs) = tokio::net::UnixStream::pair().unwrap();
    let first = {
        let service = Arc::clone(&service);
        tokio::spawn(async move { service.serve_request(theirs, &AuditLog::disabled()).await })
    };
    let (_stalled_rd, mut stalled_wr) = stalled.into_split();
    stalled_wr.write_all(&1000i32.to_be_bytes()).await.unwrap();
    stalled_wr.write_all(&[0x30; 10]).await.unwrap();

    // A genuine request meanwhile waits for the slot: its chain is not read.
    let leaf = ca.leaf(Some("."), &Command::Policy(PolicyCmd::Info));
    let second = {
        let service = Arc::clone(&service);
        tokio::spawn(async move { fake_tls_side(&service, &ders(&leaf)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "a second chain was read at once");

    // The stalled side goes away: its socket ends, the genuine request is served.
    drop(stalled_wr);
    first.await.unwrap();
    let frames = second.await.unwrap();
    assert_eq!(
        frames,
        [OutputFrame {
            name: Name::root(),
            payload: Payload::success_string("done"),
        }]
    );
}

#[tokio::test]
async fn the_executor_refuses_chains_its_anchors_do_not_verify() {
    let ca = Ca::root_now("ca");
    let (service, events) = service(&ca);
    let info = Command::Policy(PolicyCmd::Info);

    // A genuine chain reaches the handler.
    let leaf = ca.leaf(Some("."), &info);
    let frames = fake_tls_side(&service, &ders(&leaf)).await;
    assert_eq!(
        frames,
        [OutputFrame {
            name: Name::root(),
            payload: Payload::success_string("done"),
        }]
    );
    match events.recv_timeout(Duration::from_secs(60)).unwrap() {
        Event::Request { command, peer, .. } => {
            assert_eq!((*command, peer.as_str()), (info.clone(), "127.0.0.1:4242"));
        }
        other => panic!("{other:?}"),
    }

    // A leaf from another CA of the same name (a forged chain), and one from an unknown
    // CA: one failure frame each, the handler sees nothing.
    for (issuer, text) in [
        ("ca", "certificate signature failure"),
        ("other", "unable to get local issuer certificate"),
    ] {
        let forged = Ca::root_now(issuer).leaf(Some("."), &info);
        let frames = fake_tls_side(&service, &ders(&forged)).await;
        assert_eq!(
            frames,
            [OutputFrame {
                name: Name::root(),
                payload: Payload::failure(format!("certificate verification failed: {text}")),
            }]
        );
    }
    // Garbage instead of a certificate: refused the same way.
    let frames = fake_tls_side(&service, &[b"not a certificate"]).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(matches!(frames[0].payload, Payload::Failure(_)));
    assert!(
        events.try_recv().is_err(),
        "the handler saw a forged request"
    );
}

#[tokio::test]
async fn garbage_on_a_request_socket_closes_it_without_an_answer() {
    let ca = Ca::root_now("ca");
    let (service, events) = service(&ca);
    for bytes in [
        // A chunk longer than the chain size limit.
        vec![0x7f, 0xff, 0xff, 0xff],
        // A negative length.
        vec![0xff, 0xff, 0xff, 0xfe],
        // No certificate at all, then a peer.
        [vec![0, 0, 0, 0], petrel::codec::frame(b"peer").unwrap()].concat(),
        // Closed in the middle of a chunk.
        vec![0, 0, 0, 9, 1, 2],
    ] {
        let (mine, theirs) = tokio::net::UnixStream::pair().unwrap();
        let served = {
            let service = Arc::clone(&service);
            tokio::spawn(async move { service.serve_request(theirs, &AuditLog::disabled()).await })
        };
        let (mut rd, mut wr) = mine.into_split();
        tokio::io::AsyncWriteExt::write_all(&mut wr, &bytes)
            .await
            .unwrap();
        drop(wr);
        // Closed (or reset: the executor left input unread), never answered.
        let answer = request::read_frame(&mut rd).await;
        assert!(!matches!(answer, Ok(Some(_))), "{bytes:?}: {answer:?}");
        served.await.unwrap();
    }
    assert!(events.try_recv().is_err());
}

#[test]
fn without_user_the_endpoint_stays_one_process() {
    let ca = Ca::root_now("ca");
    let endpoint = Endpoint::start_single_process(&ca, &[]);
    let leaf = ca.leaf(Some("."), &Command::Policy(PolicyCmd::Info));
    let frames =
        common::tls_client::request(endpoint.addr, &leaf.chain, &leaf.key, ca.cert()).unwrap();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(
        matches!(frames[0].payload, Payload::Success(_)),
        "{frames:?}"
    );
    assert_eq!(tls_workers(endpoint.pid()), Vec::<u32>::new());
    assert!(!endpoint.state_dir().join("tls-root").exists());
}
