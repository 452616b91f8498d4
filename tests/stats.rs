//! Statistics: subscriptions to the executor (names relative to the subscriber's path,
//! only what the subscription covers), over TLS to the real endpoint in a private network
//! namespace with a bridge, where frames injected on the bridge move the tap's counters
//! in a later frame, and the real `petrel stats` client printing JSON lines and tables.
//!
//! The network test needs root and `/dev/net/tun` (skipped with a message otherwise).
//! Timeouts only keep a broken test from hanging; nothing asserts on timing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::time::Duration;

use petrel::auth::{self, Authorized};
use petrel::chain::Request;
use petrel::codec::{
    self, Command, Data, NetDeviceSpec, Payload, StatsCmd, StatsData, UnikernelCmd,
    UnikernelConfig, Wire,
};
use petrel::executor::api::{ExecRequest, Handler, OutputFrame, OutputReceiver};
use petrel::executor::mac::Mac;
use petrel::executor::manifest::{Device, Target, build_test_image};
use petrel::executor::net::FakeNetwork;
use petrel::executor::tender::ProcessTender;
use petrel::executor::{Executor, ExecutorConfig, HostOverrides, OnRevoke};
use petrel::limits::Limits;
use petrel::name::Name;
use petrel::pki::{self, CaIssuer, KeyType, PrivateKey, Serial, Validity};
use petrel::revocation::RevocationStore;
use petrel::verify::TrustAnchors;

use common::pki::{Ca, FIXED_NOW, policy};
use common::server::{Endpoint, free_port, server_certificate};
use common::tls_client::Client;

const STAND_IN: &str = env!("CARGO_BIN_EXE_petrel-stand-in-tender");

/// Guard against a hanging test (not a timing assertion).
const GUARD: Duration = Duration::from_secs(60);

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn create(image: &[u8], nets: &[&str], args: &[&str]) -> Command {
    Command::Unikernel(UnikernelCmd::Create(UnikernelConfig {
        image: image.to_vec(),
        bridges: nets
            .iter()
            .map(|n| NetDeviceSpec::named((*n).to_owned()))
            .collect(),
        arguments: Some(args.iter().map(ToString::to_string).collect()),
        ..UnikernelConfig::default()
    }))
}

fn subscribe() -> Command {
    Command::Statistics(StatsCmd::Subscribe)
}

struct Fixture {
    dir: tempfile::TempDir,
    root: Ca,
    anchors: TrustAnchors,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = Ca::root("root");
        let anchors = TrustAnchors::from_pem(root.cert_pem().as_bytes()).unwrap();
        Self { dir, root, anchors }
    }

    async fn start(&self) -> Executor {
        let tender = self.dir.path().join("solo5-hvt");
        std::fs::write(
            &tender,
            format!("#!/bin/sh\nexport PETREL_STAND_IN_SKIP_TAPS=1\nexec '{STAND_IN}' \"$@\"\n"),
        )
        .unwrap();
        std::fs::set_permissions(&tender, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = ExecutorConfig {
            state_dir: self.dir.path().join("state"),
            tender,
            limits: Limits {
                stats_interval: Duration::from_millis(50),
                ..Limits::default()
            },
            host: HostOverrides {
                cpuids: Some(BTreeSet::from([0])),
                memory: Some(4096),
                block: Some(100),
                bridges: Some(BTreeSet::from(["service".to_owned()])),
            },
            on_revoke: OnRevoke::Destroy,
        };
        Executor::start(
            config,
            Arc::new(FakeNetwork::with_bridges(&["service"])),
            Arc::new(ProcessTender),
        )
        .await
        .unwrap()
    }

    fn request(&self, issuer: &Ca, cn: &str, command: Command) -> Authorized<Request> {
        let leaf = issuer.leaf(Some(cn), &command);
        let verified = self.anchors.verify(&leaf.chain, FIXED_NOW).unwrap();
        auth::authorize(&verified, &RevocationStore::new()).unwrap()
    }

    fn open(&self, exec: &Executor, issuer: &Ca, cn: &str, command: Command) -> OutputReceiver {
        exec.handle(ExecRequest {
            request: self.request(issuer, cn, command),
            input: None,
            peer: "test".into(),
        })
    }

    async fn ask(&self, exec: &Executor, issuer: &Ca, cn: &str, command: Command) -> Payload {
        let mut out = self.open(exec, issuer, cn, command);
        let mut last = None;
        while let Some(frame) = tokio::time::timeout(GUARD, out.recv()).await.unwrap() {
            last = Some(frame.payload);
        }
        last.unwrap()
    }
}

async fn recv(out: &mut OutputReceiver) -> OutputFrame {
    tokio::time::timeout(GUARD, out.recv())
        .await
        .unwrap()
        .expect("the subscription ended")
}

/// The statistics of the next frame (which must be statistics), with its name; checks
/// that it survives the wire (encoded and decoded as a frame).
async fn stats_frame(out: &mut OutputReceiver) -> (Name, StatsData) {
    let frame = recv(out).await;
    let wire = Wire::new(codec::Header::new(0, frame.name.clone()), frame.payload);
    let decoded = codec::decode_wire(&codec::encode_wire(&wire)).unwrap();
    assert_eq!(decoded, wire);
    match decoded.payload {
        Payload::Data(Data::Statistics(stats)) => (frame.name, *stats),
        other => panic!("{other:?}"),
    }
}

/// Reads frames until one round has been seen twice over: the names of the last
/// complete round, sorted, with their statistics.
async fn round(out: &mut OutputReceiver) -> BTreeMap<String, StatsData> {
    let mut seen: BTreeMap<String, StatsData> = BTreeMap::new();
    loop {
        let (name, stats) = stats_frame(out).await;
        if seen.contains_key(&name.text()) {
            // The next round started: what came before is one round.
            let mut again = BTreeMap::from([(name.text(), stats)]);
            loop {
                let (name, stats) = stats_frame(out).await;
                if again.contains_key(&name.text()) {
                    return again;
                }
                again.insert(name.text(), stats);
            }
        }
        seen.insert(name.text(), stats);
    }
}

fn vmm(stats: &StatsData, key: &str) -> Option<i64> {
    stats
        .vmm_stats
        .as_ref()?
        .iter()
        .find(|s| s.key == key)
        .map(|s| s.value)
}

#[tokio::test]
async fn subscribers_see_the_unikernels_below_their_name_relative_to_their_path() {
    let fx = Fixture::new();
    let exec = fx.start().await;
    let team = fx
        .root
        .intermediate("a", &policy(4, &[0], 256, None, &["service"]));
    let image = build_test_image(Target::Hvt, 2, &[]);
    let net_image = build_test_image(Target::Hvt, 2, &[Device::net("service")]);
    for (issuer, cn, command) in [
        (&fx.root, "top", create(&image, &[], &["--wait"])),
        (&team, "web", create(&net_image, &["service"], &["--wait"])),
        (&team, "db", create(&image, &[], &["--wait"])),
    ] {
        assert_eq!(
            fx.ask(&exec, issuer, cn, command).await,
            Payload::success_string("created unikernel"),
            "{cn}"
        );
    }

    // At the team's path: its two unikernels, named relative to it.
    let mut team_view = fx.open(&exec, &team, ".", subscribe());
    let reply = recv(&mut team_view).await;
    assert_eq!(
        (reply.name, reply.payload),
        (name("a:"), Payload::success_string("subscribed"))
    );
    let seen = round(&mut team_view).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), [":db", ":web"]);
    let web = &seen[":web"];
    assert_eq!(
        web.ifdata
            .iter()
            .map(|i| i.bridge.as_str())
            .collect::<Vec<_>>(),
        ["service"]
    );
    assert!(seen[":db"].ifdata.is_empty());
    for stats in seen.values() {
        let kinfo = stats.kinfo_mem.expect("kinfo_mem is filled on Linux");
        assert!(kinfo.rss > 0, "{stats:?}");
        assert!(stats.resource_usage.maxrss > 0, "{stats:?}");
        assert!(vmm(stats, "rss_bytes").unwrap() > 0, "{stats:?}");
        // No cgroups in this executor.
        assert_eq!(vmm(stats, "cgroup_memory_bytes"), None);
    }

    // At the root: everything; at one unikernel: that one.
    let mut everything = fx.open(&exec, &fx.root, ".", subscribe());
    assert_eq!(
        recv(&mut everything).await.payload,
        Payload::success_string("subscribed")
    );
    assert_eq!(
        round(&mut everything).await.keys().collect::<Vec<_>>(),
        [":top", "a:db", "a:web"]
    );
    let mut one = fx.open(&exec, &team, "db", subscribe());
    assert_eq!(
        recv(&mut one).await.payload,
        Payload::success_string("subscribed")
    );
    let (first, _) = stats_frame(&mut one).await;
    assert_eq!(first, name(":db"));

    // A destroyed unikernel leaves later rounds.
    assert_eq!(
        fx.ask(
            &exec,
            &team,
            "db",
            Command::Unikernel(UnikernelCmd::Destroy)
        )
        .await,
        Payload::success_string("destroyed unikernel")
    );
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let seen = round(&mut team_view).await;
        if seen.keys().collect::<Vec<_>>() == [":web"] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{seen:?}");
    }
    exec.shutdown().await;
    // Shutdown ends the subscriptions.
    loop {
        match tokio::time::timeout(GUARD, team_view.recv()).await.unwrap() {
            None => break,
            Some(frame) => assert!(
                matches!(frame.payload, Payload::Data(Data::Statistics(_))),
                "{frame:?}"
            ),
        }
    }
}

// The real endpoint in a network namespace.

fn netns_skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root");
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing");
    }
    None
}

/// Runs `f` in fresh namespaces ([`common::netns::in_netns`]) with loopback up and IPv6
/// off (so that no interface sends anything by itself). Processes started from the thread
/// share the namespaces.
fn in_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    common::netns::in_netns(|| {
        for conf in ["all", "default"] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1");
        }
        set_up("lo");
        f()
    })
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = libc::c_char::try_from(byte).unwrap();
    }
    req
}

/// Sets `IFF_UP` on an interface.
fn set_up(name: &str) {
    let mut req = ifreq(name);
    // SAFETY: a datagram socket for SIOCGIFFLAGS/SIOCSIFFLAGS on a zero-initialised ifreq
    // holding the name, closed right after.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        assert!(sock >= 0);
        assert_eq!(libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req), 0);
        req.ifr_ifru.ifru_flags |= libc::c_short::try_from(libc::IFF_UP).unwrap();
        let rc = libc::ioctl(sock, libc::SIOCSIFFLAGS, &mut req);
        let err = std::io::Error::last_os_error();
        libc::close(sock);
        assert_eq!(rc, 0, "up {name}: {err}");
    }
}

/// Creates a bridge with `SIOCBRADDBR`.
fn add_bridge(name: &str) {
    const SIOCBRADDBR: libc::Ioctl = 0x89a0;
    let name = CString::new(name).unwrap();
    // SAFETY: a datagram socket for the ioctl, closed right after.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        assert!(sock >= 0);
        let rc = libc::ioctl(sock, SIOCBRADDBR, name.as_ptr());
        let err = std::io::Error::last_os_error();
        libc::close(sock);
        assert_eq!(rc, 0, "SIOCBRADDBR: {err}");
    }
}

/// Octets of each injected frame: the Ethernet minimum without FCS.
const FRAME_LEN: usize = 60;

/// Sends `count` Ethernet frames to `dst` out of `bridge` through a raw `AF_PACKET`
/// socket; the bridge forwards (floods) them to its ports, the unikernel's tap among them.
fn inject(bridge: &str, dst: [u8; 6], count: usize) {
    let ifname = CString::new(bridge).unwrap();
    let protocol = u16::try_from(libc::ETH_P_ALL).unwrap().to_be();
    let mut frame = Vec::with_capacity(FRAME_LEN);
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    // A local experimental EtherType, so nothing in the host interprets the frames.
    frame.extend_from_slice(&[0x88, 0xb5]);
    frame.resize(FRAME_LEN, 0);
    // SAFETY: a raw packet socket bound to the bridge's index, frames sent from a valid
    // buffer with a zero-initialised sockaddr_ll of the right size; closed at the end.
    unsafe {
        let index = libc::if_nametoindex(ifname.as_ptr());
        assert!(index > 0);
        let sock = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(protocol),
        );
        assert!(sock >= 0, "{}", std::io::Error::last_os_error());
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = u16::try_from(libc::AF_PACKET).unwrap();
        addr.sll_protocol = protocol;
        addr.sll_ifindex = i32::try_from(index).unwrap();
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&dst);
        let len = u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap();
        for _ in 0..count {
            let sent = libc::sendto(
                sock,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                std::ptr::from_ref(&addr).cast(),
                len,
            );
            assert_eq!(
                usize::try_from(sent).ok(),
                Some(FRAME_LEN),
                "{}",
                std::io::Error::last_os_error()
            );
        }
        libc::close(sock);
    }
}

/// Polls (bounded by [`GUARD`]) until `check` holds.
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + GUARD;
    while !check() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The tap counters of `:web`'s `service` interface in the next statistics frame about it.
fn next_web_ifdata(client: &mut Client) -> codec::IfData {
    let wire = client.read_frame().unwrap().expect("subscription ended");
    assert_eq!(wire.header.sequence, 0);
    let Payload::Data(Data::Statistics(stats)) = wire.payload else {
        panic!("{:?}", wire.payload);
    };
    assert_eq!(wire.header.name, name(":web"));
    assert_eq!(stats.ifdata.len(), 1);
    stats.ifdata.into_iter().next().unwrap()
}

#[test]
fn tap_counters_in_statistics_over_tls_move_when_frames_reach_the_tap() {
    if let Some(reason) = netns_skip_reason() {
        eprintln!("SKIPPED statistics network test: {reason}");
        return;
    }
    in_netns(|| {
        add_bridge("br0");
        // Without multicast snooping the bridge sends no IGMP report of its own (it would
        // reach the tap): only the injected frames do.
        std::fs::write("/sys/class/net/br0/bridge/multicast_snooping", "0").unwrap();
        set_up("br0");
        let ca = Ca::root_now("test-ca");
        let endpoint = Endpoint::start(&ca, &["--stats-interval", "1"]);
        let command = Command::Unikernel(UnikernelCmd::Create(UnikernelConfig {
            image: build_test_image(Target::Hvt, 2, &[Device::net("service")]),
            bridges: vec![NetDeviceSpec {
                bridge: Some("br0".into()),
                ..NetDeviceSpec::named("service".into())
            }],
            arguments: Some(vec!["--net-drain".into(), "--wait".into()]),
            ..UnikernelConfig::default()
        }));
        let leaf = ca.leaf(Some("web"), &command);
        let frames =
            common::tls_client::request(endpoint.addr, &leaf.chain, &leaf.key, ca.cert()).unwrap();
        assert_eq!(
            frames.last().unwrap().payload,
            Payload::success_string("created unikernel")
        );
        // The tender has the tap open (carrier) and the bridge forwards to it.
        eventually("the tap has a carrier", || {
            std::fs::read_to_string("/sys/class/net/vmmtap0/carrier").is_ok_and(|c| c.trim() == "1")
        });
        eventually("the bridge port forwards", || {
            std::fs::read_to_string("/sys/class/net/vmmtap0/brport/state")
                .is_ok_and(|s| s.trim() == "3")
        });

        let leaf = ca.leaf(Some("."), &subscribe());
        let mut client = Client::connect(endpoint.addr, &leaf.chain, &leaf.key, ca.cert()).unwrap();
        let reply = client.read_frame().unwrap().unwrap();
        assert_eq!(reply.header.name, name(":"));
        assert_eq!(reply.payload, Payload::success_string("subscribed"));
        let before = next_web_ifdata(&mut client);
        assert_eq!(before.bridge, "service");
        assert!(before.mtu > 0, "{before:?}");

        let mac = Mac::deterministic("service", &name(":web")).octets();
        inject("br0", mac, 10);
        let after = loop {
            let ifdata = next_web_ifdata(&mut client);
            if ifdata.output_packets >= before.output_packets + 10 {
                break ifdata;
            }
        };
        // Exactly the injected frames went out through the tap to the unikernel, which
        // sent nothing back.
        assert_eq!(after.output_packets, before.output_packets + 10);
        assert_eq!(
            after.output_bytes,
            before.output_bytes + 10 * i64::try_from(FRAME_LEN).unwrap()
        );
        assert_eq!(after.input_packets, before.input_packets);
        assert_eq!(after.output_dropped, 0);
        client.close();
        assert!(endpoint.stop().success());
    });
}

// The real client.

/// A root CA whose key is also written to `dir/ca.key` (for `petrel --ca-key`).
fn ca_with_key_file(dir: &Path) -> Ca {
    let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
    std::fs::write(dir.join("ca.key"), key.to_pem()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let validity = Validity {
        now,
        duration: Duration::from_secs(86400),
    };
    let cert = pki::cert::root_ca(
        "client-ca",
        &key,
        validity,
        Serial::random(&mut rand::thread_rng()),
    )
    .unwrap();
    std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
    Ca::from_issuer(CaIssuer::new(vec![cert], key).unwrap(), now)
}

#[test]
fn the_petrel_client_prints_statistics_as_json_lines_and_tables() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_with_key_file(dir.path());
    let (cert, key) = server_certificate(&ca);
    for (file, text) in [
        ("cacert.pem", ca.cert_pem()),
        ("server.pem", cert.pem()),
        ("server.key", key.to_pem()),
    ] {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let port = free_port();
    let args: Vec<String> = [
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
        STAND_IN,
        "--stats-interval",
        "1",
        "--no-cgroups",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let endpoint = Endpoint::spawn(dir.path(), &args, port);
    let image = build_test_image(Target::Hvt, 2, &[]);
    let leaf = ca.leaf(Some("web"), &create(&image, &[], &["--wait"]));
    let frames =
        common::tls_client::request(endpoint.addr, &leaf.chain, &leaf.key, ca.cert()).unwrap();
    assert_eq!(
        frames.last().unwrap().payload,
        Payload::success_string("created unikernel")
    );

    let run = |extra: &[&str]| {
        let destination = format!("127.0.0.1:{port}");
        let mut command = Process::new(env!("CARGO_BIN_EXE_petrel"));
        command
            .arg("stats")
            .args(extra)
            .args([
                "--destination",
                &destination,
                "--ca",
                "ca.pem",
                "--ca-key",
                "ca.key",
                "--server-ca",
                "cacert.pem",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.spawn().unwrap()
    };

    // JSON lines: the subscription's success, then one frame per unikernel and round.
    let mut json = run(&["--json"]);
    let mut lines = BufReader::new(json.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["header"]["name"], ":");
    assert_eq!(first["payload"]["success"]["string"], "subscribed");
    let data: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(data["header"]["name"], ":web");
    let stats = &data["payload"]["data"]["statistics"];
    assert!(
        stats["resourceUsage"]["maxrss"].as_i64().unwrap() > 0,
        "{data}"
    );
    assert_eq!(stats["ifdata"], serde_json::json!([]));
    let _ = json.kill();
    let _ = json.wait();

    // Text: a table per round.
    let mut text = run(&[]);
    let mut lines = BufReader::new(text.stdout.take().unwrap()).lines();
    let header = lines.next().unwrap().unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "NAME", "CPU", "S", "RSS", "CGROUP", "MEM", "IF", "RX", "BYTES", "RX", "PKTS", "TX",
            "BYTES", "TX", "PKTS"
        ]
    );
    // `:web  0.01  1.9 MiB  -  -  -  -  -  -`: no cgroup, no interface.
    let row = lines.next().unwrap().unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[0], ":web");
    assert!(cells[3].ends_with("iB"), "{row}");
    assert_eq!(&cells[4..], ["-", "-", "-", "-", "-", "-"], "{row}");
    // The next round prints the table again.
    assert_eq!(lines.next().unwrap().unwrap(), "");
    assert_eq!(lines.next().unwrap().unwrap(), header);
    let _ = text.kill();
    let _ = text.wait();
    assert!(endpoint.stop().success());
}
