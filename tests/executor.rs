//! The executor end to end: requests authorized the real way (certificate chains from
//! the test PKI, verified with OpenSSL), the real stand-in tender spawned through
//! `ProcessTender` (it records its command line), `FakeNetwork` for taps and bridges, a
//! temporary state directory.
//!
//! Timeouts below only keep a broken test from hanging; nothing asserts on timing.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flate2::Compression;
use flate2::write::ZlibEncoder;
use petrel::auth::{self, Authorized};
use petrel::chain::{CertId, Request};
use petrel::codec::{
    self, BlockCmd, BlockData, BlockDevice, BlockDeviceSpec, BlockInfo, Command, ConsoleCmd, Data,
    FailBehaviour, InfoEntry, MacAddr, NetDeviceSpec, NetInfo, Payload, PolicyCmd, PolicyEntry,
    RestartArgs, SinceCount, State, Success, TrieEntry, Typ, UnikernelArguments, UnikernelCmd,
    UnikernelConfig, UnikernelInfo,
};
use petrel::executor::api::{CHANNEL_DEPTH, ExecRequest, Handler, InputChunk, OutputFrame};
use petrel::executor::mac::Mac;
use petrel::executor::manifest::{Device, Target, build_test_image};
use petrel::executor::net::{FakeNetwork, InterfaceName, NetCall, NetOp, Network};
use petrel::executor::persist::{Records, RunRecord, StateDir};
use petrel::executor::tender::{Pid, ProcessTender, available_cpus};
use petrel::executor::{
    Event, EventStream, Executor, ExecutorConfig, HostOverrides, OnRevoke, Received,
};
use petrel::limits::Limits;
use petrel::name::Name;
use petrel::policy::Policy;
use petrel::resources::Usage;
use petrel::revocation::RevocationStore;
use petrel::verify::TrustAnchors;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use common::pki::{Ca, FIXED_NOW, policy};

const STAND_IN: &str = env!("CARGO_BIN_EXE_petrel-stand-in-tender");

/// Guard against a hanging test (not a timing assertion).
const GUARD: Duration = Duration::from_secs(60);

/// What the stand-in prints first (its solo5-like banner).
const BANNER: &str = "Solo5: Bindings version v0.9.0-petrel-stand-in";

struct Fixture {
    dir: tempfile::TempDir,
    net: Arc<FakeNetwork>,
    root: Ca,
    anchors: TrustAnchors,
    limits: Limits,
    host: HostOverrides,
}

impl Fixture {
    fn new() -> Self {
        Self::with_limits(Limits {
            restart_backoff_initial: Duration::from_millis(20),
            restart_backoff_max: Duration::from_millis(80),
            ..Limits::default()
        })
    }

    fn with_limits(limits: Limits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("launches")).unwrap();
        let root = Ca::root("root");
        let anchors = TrustAnchors::from_pem(root.cert_pem().as_bytes()).unwrap();
        let fixture = Self {
            dir,
            net: Arc::new(FakeNetwork::with_bridges(&["service", "br0"])),
            root,
            anchors,
            limits,
            host: HostOverrides {
                cpuids: Some(BTreeSet::from([0, 1, 2, 3, 1000])),
                memory: Some(4096),
                block: Some(1000),
                // br9 is allowed but does not exist on the (fake) host.
                bridges: Some(
                    ["service", "br0", "br9", "br-iface"]
                        .map(String::from)
                        .into(),
                ),
            },
        };
        fixture.write_tender("");
        fixture
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.state_dir().join(relative)
    }

    fn tender(&self) -> PathBuf {
        self.dir.path().join("solo5-hvt")
    }

    /// The tender: a script that runs `extra` (shell), then execs the recording stand-in
    /// (same pid), taps skipped.
    fn write_tender(&self, extra: &str) {
        let launches = self.dir.path().join("launches");
        let script = format!(
            "#!/bin/sh\n{extra}\nexport PETREL_STAND_IN_RECORD_DIR='{}'\n\
             export PETREL_STAND_IN_SKIP_TAPS=1\nexec '{STAND_IN}' \"$@\"\n",
            launches.display()
        );
        let path = self.tender();
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn config(&self) -> ExecutorConfig {
        ExecutorConfig {
            state_dir: self.state_dir(),
            tender: self.tender(),
            limits: self.limits.clone(),
            host: self.host.clone(),
            on_revoke: OnRevoke::Destroy,
        }
    }

    async fn start(&self) -> Executor {
        Executor::start(self.config(), self.net.clone(), Arc::new(ProcessTender))
            .await
            .unwrap()
    }

    /// A request from a leaf issued by `issuer` with common name `cn` ("." for a path).
    fn request(&self, issuer: &Ca, cn: &str, command: Command) -> Authorized<Request> {
        let leaf = issuer.leaf(Some(cn), &command);
        let verified = self.anchors.verify(&leaf.chain, FIXED_NOW).unwrap();
        auth::authorize(&verified, &RevocationStore::new()).unwrap()
    }

    /// The final reply to a request without input.
    async fn ask(&self, exec: &Executor, issuer: &Ca, cn: &str, command: Command) -> Payload {
        let frames = call(exec, self.request(issuer, cn, command), None).await;
        assert_eq!(frames.len(), 1, "{frames:?}");
        frames.into_iter().next().unwrap().payload
    }

    /// A request from a root-level leaf.
    async fn root_ask(&self, exec: &Executor, cn: &str, command: Command) -> Payload {
        self.ask(exec, &self.root, cn, command).await
    }

    /// Every tender launch the stand-in recorded (not the `--version` checks), by pid.
    fn launches(&self) -> Vec<Value> {
        let mut launches: Vec<Value> = fs::read_dir(self.dir.path().join("launches"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .map(|p| serde_json::from_slice(&fs::read(p).unwrap()).unwrap())
            .filter(|v: &Value| !argv(v).iter().any(|a| a == "--version"))
            .collect();
        launches.sort_by_key(|v| v["pid"].as_u64());
        launches
    }

    /// The launches of `name` once there are `count` of them (a tender writes its record
    /// when it starts, which may be after the executor reported the start).
    async fn wait_launches(&self, name: &str, count: usize) -> Vec<Value> {
        eventually(&format!("{count} launches of {name}"), || {
            self.launches_of(name).len() >= count
        })
        .await;
        let launches = self.launches_of(name);
        assert_eq!(launches.len(), count, "launches of {name}");
        launches
    }

    /// Launches whose command line names the image of `name`.
    fn launches_of(&self, name: &str) -> Vec<Value> {
        let image = self.image_path(name);
        self.launches()
            .into_iter()
            .filter(|v| argv(v).contains(&image.display().to_string()))
            .collect()
    }

    fn image_path(&self, name: &str) -> PathBuf {
        StateDir::new(self.state_dir()).image(&n(name)).unwrap()
    }

    fn state(&self) -> State {
        codec::decode_state(&fs::read(self.path("state")).unwrap()).unwrap()
    }

    fn state_names(&self) -> Vec<String> {
        self.state()
            .unikernels
            .iter()
            .map(|e| e.name.text())
            .collect()
    }

    fn files(&self, sub: &str) -> Vec<String> {
        let mut files: Vec<String> = fs::read_dir(self.path(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        files
    }

    fn records(&self) -> Records {
        Records::load(&self.path("records")).unwrap()
    }

    /// Nothing of a failed create is left: no tap, no image, no temporary file, no run
    /// record, the usage as before, no tender started.
    fn assert_clean(&self, exec: &Executor, usage: &Usage, launches: usize, case: &str) {
        assert_eq!(self.net.taps().unwrap(), vec![], "taps after {case}");
        assert_eq!(
            self.files("images"),
            Vec::<String>::new(),
            "images after {case}"
        );
        assert_eq!(self.files("tmp"), Vec::<String>::new(), "tmp after {case}");
        assert_eq!(self.files("run"), Vec::<String>::new(), "run after {case}");
        assert_eq!(
            &exec.usage(&petrel::name::Path::root()),
            usage,
            "usage after {case}"
        );
        assert_eq!(self.launches().len(), launches, "launches after {case}");
    }
}

fn n(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn iface(s: &str) -> InterfaceName {
    InterfaceName::parse(s).unwrap()
}

fn argv(launch: &Value) -> Vec<String> {
    launch["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

fn pid_of(launch: &Value) -> Pid {
    Pid::new(u32::try_from(launch["pid"].as_u64().unwrap()).unwrap())
}

fn alive(pid: Pid) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

fn ok(text: &str) -> Payload {
    Payload::success_string(text)
}

fn fail(text: &str) -> Payload {
    Payload::failure(text)
}

fn image(devices: &[Device]) -> Vec<u8> {
    build_test_image(Target::Hvt, 2, devices)
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

/// A unikernel without devices running the stand-in with `args`.
fn unikernel(image: &[u8], args: &[&str]) -> UnikernelConfig {
    UnikernelConfig {
        image: image.to_vec(),
        arguments: Some(args.iter().map(ToString::to_string).collect()),
        ..UnikernelConfig::default()
    }
}

fn create(config: UnikernelConfig) -> Command {
    Command::Unikernel(UnikernelCmd::Create(config))
}

fn force_create(config: UnikernelConfig) -> Command {
    Command::Unikernel(UnikernelCmd::ForceCreate(config))
}

fn destroy() -> Command {
    Command::Unikernel(UnikernelCmd::Destroy)
}

fn info() -> Command {
    Command::Unikernel(UnikernelCmd::Info)
}

fn restart(args: RestartArgs) -> Command {
    Command::Unikernel(UnikernelCmd::Restart(args))
}

fn block(command: BlockCmd) -> Command {
    Command::Block(command)
}

/// Sends a request and collects every frame until the executor closes the channel.
async fn call(
    exec: &Executor,
    request: Authorized<Request>,
    input: Option<Vec<InputChunk>>,
) -> Vec<OutputFrame> {
    let input = input.map(|chunks| {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        tokio::spawn(async move {
            for chunk in chunks {
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
        });
        rx
    });
    let mut out = exec.handle(ExecRequest {
        request,
        input,
        peer: "test".into(),
    });
    let mut frames = Vec::new();
    while let Some(frame) = tokio::time::timeout(GUARD, out.recv()).await.unwrap() {
        frames.push(frame);
    }
    frames
}

async fn next(events: &mut EventStream) -> Event {
    match tokio::time::timeout(GUARD, events.recv()).await.unwrap() {
        Some(Received::Event(event)) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Waits (bounded by [`GUARD`]) until `check` holds; for effects that follow an event
/// asynchronously (a state file written after the event was sent).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + GUARD;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The events of a unikernel `:p` that exits 2 at once and waits for its restart.
async fn pend(events: &mut EventStream) {
    started(next(events).await, ":p");
    assert!(matches!(next(events).await, Event::Exited { code: 2, .. }));
    assert!(matches!(
        next(events).await,
        Event::RestartScheduled { attempt: 1, .. }
    ));
}

/// The exit of a tender stopped by SIGTERM: the stand-in exits 1 as solo5 does, or, if
/// the signal came before it installed its handler, it is killed by it.
fn stopped(event: Event, name: &str) {
    match event {
        Event::Exited { name: n, code: 1 }
        | Event::Signaled {
            name: n,
            signal: 15,
        } if n.text() == name => {}
        other => panic!("expected {name} stopped, got {other:?}"),
    }
}

fn started(event: Event, name: &str) -> Pid {
    match event {
        Event::Started { name: n, pid } if n.text() == name => pid,
        other => panic!("expected {name} started, got {other:?}"),
    }
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// A CPU id this host has: `wanted` if available, else the highest available one.
fn cpu(wanted: u32) -> i64 {
    let available = available_cpus().unwrap();
    let id = if available.contains(&wanted) {
        wanted
    } else {
        *available.iter().next_back().unwrap()
    };
    i64::from(id)
}

#[tokio::test]
async fn create_info_get_destroy() {
    let fx = Fixture::new();
    let exec = fx.start().await;
    let mut events = exec.events();
    let img = image(&[Device::net("service")]);
    let config = UnikernelConfig {
        bridges: vec![NetDeviceSpec::named("service".into())],
        ..unikernel(&img, &["--wait"])
    };
    let before = now_ms();
    assert_eq!(
        fx.root_ask(&exec, "hello", create(config.clone())).await,
        ok("created unikernel")
    );
    let after = now_ms();
    let pid = started(next(&mut events).await, ":hello");

    // The tender's command line (spec §4.2), pinned to CPU 0.
    let image_path = fx.path("images/:hello.img");
    let mac = Mac::deterministic("service", &n(":hello"));
    let launches = fx.wait_launches(":hello", 1).await;
    assert_eq!(
        argv(&launches[0]),
        [
            STAND_IN.to_owned(),
            "--mem=32".into(),
            "--net:service=vmmtap0".into(),
            format!("--net-mac:service={mac}"),
            "--".into(),
            image_path.display().to_string(),
            "--name=hello".into(),
            "--wait".into(),
        ]
    );
    assert_eq!(pid_of(&launches[0]), pid);
    assert_eq!(launches[0]["affinity"], serde_json::json!([0]));
    assert!(alive(pid));

    // On the host: the tap on its bridge, the image, the run record, the state file.
    assert_eq!(fx.net.taps().unwrap(), vec![iface("vmmtap0")]);
    assert_eq!(fx.net.bridge_of(&iface("vmmtap0")), Some(iface("service")));
    assert_eq!(fs::read(&image_path).unwrap(), img);
    let record = RunRecord::read(&fx.path("run/:hello.json")).unwrap();
    assert_eq!(
        (
            record.name.as_str(),
            record.pid,
            &record.image,
            &record.taps
        ),
        (
            ":hello",
            pid.get(),
            &image_path,
            &vec!["vmmtap0".to_owned()]
        )
    );
    assert_eq!(
        fx.state().unikernels,
        vec![TrieEntry::new(
            n(":hello"),
            UnikernelConfig {
                image: vec![],
                ..config.clone()
            }
        )]
    );
    for (dir, mode) in [
        ("", 0o700),
        ("images", 0o700),
        ("run", 0o700),
        ("tmp", 0o700),
    ] {
        let meta = fs::metadata(fx.path(dir)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{dir}");
    }
    for file in ["state", "records", "images/:hello.img", "run/:hello.json"] {
        let meta = fs::metadata(fx.path(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file}");
    }

    // info by name, by path (relative names), of an absent name; old formats.
    let expected = |started| UnikernelInfo {
        typ: Typ::Solo5,
        startup: None,
        fail_behaviour: FailBehaviour::Quit,
        cpuids: BTreeSet::from([0]),
        memory: 32,
        digest: sha256(&img),
        blocks: vec![],
        bridges: vec![NetInfo {
            unikernel_device: "service".into(),
            host_device: "service".into(),
            mac: MacAddr::new(mac.octets()),
        }],
        arguments: Some(vec!["--wait".into()]),
        started,
        cpus: 1,
        linux_boot_partition: None,
    };
    let Payload::Success(Success::UnikernelInfo(entries)) =
        fx.root_ask(&exec, "hello", info()).await
    else {
        panic!("no info");
    };
    let started_at = entries[0].info.started;
    assert!((before..=after).contains(&started_at.millis()));
    assert_eq!(
        entries,
        vec![InfoEntry {
            name: n(":hello"),
            info: expected(started_at)
        }]
    );
    assert_eq!(
        fx.root_ask(&exec, ".", info()).await,
        Payload::Success(Success::UnikernelInfo(entries.clone()))
    );
    assert_eq!(
        fx.root_ask(&exec, "other", info()).await,
        Payload::Success(Success::UnikernelInfo(vec![]))
    );
    let Payload::Success(Success::OldUnikernelInfo5(old)) = fx
        .root_ask(&exec, "hello", Command::Unikernel(UnikernelCmd::InfoOld5))
        .await
    else {
        panic!("no old info");
    };
    assert_eq!((old[0].info.cpuid, old[0].info.memory), (0, 32));
    let Payload::Success(Success::OldUnikernelInfo4(old)) = fx
        .root_ask(&exec, "hello", Command::Unikernel(UnikernelCmd::InfoOld4))
        .await
    else {
        panic!("no old info");
    };
    assert_eq!(old[0].info.digest, sha256(&img));

    // get: the uncompressed image, or compressed; nothing for an absent name.
    assert_eq!(
        fx.root_ask(&exec, "hello", Command::Unikernel(UnikernelCmd::Get(0)))
            .await,
        Payload::Success(Success::UnikernelImage {
            compressed: false,
            image: img.clone()
        })
    );
    let Payload::Success(Success::UnikernelImage {
        compressed: true,
        image: packed,
    }) = fx
        .root_ask(&exec, "hello", Command::Unikernel(UnikernelCmd::Get(9)))
        .await
    else {
        panic!("no compressed image");
    };
    let mut inflated = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::ZlibDecoder::new(packed.as_slice()),
        &mut inflated,
    )
    .unwrap();
    assert_eq!(inflated, img);
    assert_eq!(
        fx.root_ask(&exec, "other", Command::Unikernel(UnikernelCmd::Get(0)))
            .await,
        fail("get: no unikernel found")
    );

    // A second create of the same name.
    assert_eq!(
        fx.root_ask(&exec, "hello", create(config.clone())).await,
        fail("Unikernel with same name is already running")
    );

    // destroy: SIGTERM (the stand-in exits 1, as solo5 does), everything cleaned up.
    assert_eq!(
        fx.root_ask(&exec, "hello", destroy()).await,
        ok("destroyed unikernel")
    );
    stopped(next(&mut events).await, ":hello");
    assert_eq!(
        next(&mut events).await,
        Event::Destroyed { name: n(":hello") }
    );
    assert!(!alive(pid));
    assert_eq!(fx.net.taps().unwrap(), vec![]);
    assert_eq!(fx.files("images"), Vec::<String>::new());
    assert_eq!(fx.files("run"), Vec::<String>::new());
    assert_eq!(fx.state_names(), Vec::<String>::new());
    assert_eq!(exec.usage(&petrel::name::Path::root()), Usage::default());
    assert_eq!(fx.records().unikernels.len(), 0);
    // E7: nothing stale answers "removed from restarting".
    assert_eq!(
        fx.root_ask(&exec, "hello", destroy()).await,
        fail("destroy: not found")
    );
    // A path cannot be destroyed.
    assert_eq!(
        fx.root_ask(&exec, ".", destroy()).await,
        fail("unikernel destroy needs a unikernel name, but : is a path")
    );
    exec.shutdown().await;
}

#[tokio::test]
async fn several_cpus_and_old_info_formats() {
    let available = available_cpus().unwrap();
    if available.len() < 2 {
        eprintln!("SKIPPED: needs two CPUs");
        return;
    }
    let fx = Fixture::new();
    let exec = fx.start().await;
    let ids: BTreeSet<i64> = available.iter().take(2).map(|&c| i64::from(c)).collect();
    let config = UnikernelConfig {
        cpuids: ids.clone(),
        ..unikernel(&image(&[]), &["--wait"])
    };
    assert_eq!(
        fx.root_ask(&exec, "two", create(config)).await,
        ok("created unikernel")
    );
    let pinned: Vec<i64> = fx.wait_launches(":two", 1).await[0]["affinity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(pinned, ids.iter().copied().collect::<Vec<_>>());
    // Note W7: the old formats cannot carry two CPU ids; a clean failure.
    for command in [UnikernelCmd::InfoOld5, UnikernelCmd::InfoOld4] {
        assert_eq!(
            fx.root_ask(&exec, "two", Command::Unikernel(command)).await,
            fail("expected a single CPUid, got 2")
        );
    }
    exec.shutdown().await;
}

#[tokio::test]
async fn streamed_images_and_broken_streams() {
    let fx = Fixture::with_limits(Limits {
        max_image_size: 64 * 1024,
        ..Limits::default()
    });
    let exec = fx.start().await;
    let img = image(&[]);
    let streamed = |compressed| UnikernelConfig {
        compressed,
        ..unikernel(&[], &["--wait"])
    };
    // A compressed image streamed in pieces: stored uncompressed, digest of the
    // uncompressed image.
    let packed = zlib(&img);
    let mut chunks: Vec<InputChunk> = packed
        .chunks(100)
        .map(|c| InputChunk::Data(c.to_vec()))
        .collect();
    chunks.push(InputChunk::End);
    let request = fx.request(&fx.root, "s", create(streamed(true)));
    let frames = call(&exec, request, Some(chunks)).await;
    assert_eq!(frames[0].payload, ok("created unikernel"));
    assert_eq!(fs::read(fx.path("images/:s.img")).unwrap(), img);
    let Payload::Success(Success::UnikernelInfo(entries)) = fx.root_ask(&exec, "s", info()).await
    else {
        panic!()
    };
    assert_eq!(entries[0].info.digest, sha256(&img));

    let usage = exec.usage(&petrel::name::Path::root());
    let launches = fx.wait_launches(":s", 1).await.len();
    let big = vec![0u8; 40 * 1024];
    let cases: Vec<(bool, Vec<InputChunk>, &str)> = vec![
        (
            false,
            vec![
                InputChunk::Data(img.clone()),
                InputChunk::Failed("connection reset by peer".into()),
            ],
            "image stream broken: connection reset by peer",
        ),
        (
            false,
            vec![InputChunk::Data(img.clone())],
            "image stream ended before its terminator",
        ),
        (
            true,
            vec![InputChunk::Data(b"garbage".to_vec()), InputChunk::End],
            "failed to uncompress: corrupt deflate stream",
        ),
        (
            false,
            vec![
                InputChunk::Data(big.clone()),
                InputChunk::Data(big.clone()),
                InputChunk::End,
            ],
            "image exceeds the limit of 65536 octets",
        ),
        (
            true,
            vec![
                InputChunk::Data(zlib(&[big.clone(), big].concat())),
                InputChunk::End,
            ],
            "failed to uncompress: image exceeds the limit of 65536 octets",
        ),
    ];
    for (compressed, chunks, text) in cases {
        let request = fx.request(&fx.root, "broken", create(streamed(compressed)));
        let frames = call(&exec, request, Some(chunks)).await;
        assert_eq!(frames[0].payload, fail(text));
        assert_eq!(fx.files("tmp"), Vec::<String>::new(), "{text}");
        assert_eq!(fx.files("images"), vec![":s.img"], "{text}");
        assert_eq!(exec.usage(&petrel::name::Path::root()), usage, "{text}");
        assert_eq!(fx.launches().len(), launches, "{text}");
    }
    // An empty image and no stream (a local request).
    let request = fx.request(&fx.root, "none", create(streamed(false)));
    assert_eq!(
        call(&exec, request, None).await[0].payload,
        fail("no image: the configuration's image is empty and no image stream follows")
    );
    exec.shutdown().await;
}

#[tokio::test]
async fn failed_creates_leak_nothing() {
    let fx = Fixture::new();
    let exec = fx.start().await;
    let usage = exec.usage(&petrel::name::Path::root());
    let net_image = image(&[Device::net("service")]);
    let with_net = |bridge: Option<&str>| UnikernelConfig {
        bridges: vec![NetDeviceSpec {
            bridge: bridge.map(str::to_owned),
            ..NetDeviceSpec::named("service".into())
        }],
        ..unikernel(&net_image, &["--wait"])
    };
    let block_image = image(&[Device::block("storage")]);
    let version_banner = "petrel-stand-in-tender tender, version v0.9.0-petrel-stand-in";
    let cases: Vec<(UnikernelConfig, String)> = vec![
        (with_net(Some("br9")), "interface br9 does not exist".into()),
        (
            with_net(Some("br7")),
            "bridges br7 not allowed by policy".into(),
        ),
        (
            unikernel(&block_image, &[]),
            "specified block device(s) does not match with manifest. \
             Devices present in manifest: block \"storage\""
                .into(),
        ),
        (
            UnikernelConfig {
                bridges: vec![NetDeviceSpec {
                    bridge: Some("service".into()),
                    ..NetDeviceSpec::named("admin".into())
                }],
                ..unikernel(&net_image, &[])
            },
            "specified bridge(s) does not match with the manifest. \
             Devices present in manifest: net \"service\""
                .into(),
        ),
        (
            unikernel(&build_test_image(Target::Virtio, 2, &[]), &[]),
            "unsupported solo5 target virtio".into(),
        ),
        (
            unikernel(&build_test_image(Target::Spt, 2, &[]), &[]),
            "unsupported solo5 target spt (this host runs hvt unikernels)".into(),
        ),
        (
            unikernel(&build_test_image(Target::Hvt, 3, &[]), &[]),
            format!(
                "unexpected solo5 tender --version output, expected one line with \
                 'ABI version 3', got {version_banner}\nABI version 2"
            ),
        ),
        (unikernel(b"hello", &[]), "not an ELF image".into()),
        (
            UnikernelConfig {
                bridges: vec![
                    NetDeviceSpec::named("service".into()),
                    NetDeviceSpec {
                        bridge: Some("br0".into()),
                        ..NetDeviceSpec::named("service".into())
                    },
                ],
                ..unikernel(&net_image, &[])
            },
            "Bridge names must be a set".into(),
        ),
        (
            UnikernelConfig {
                blocks: vec![
                    BlockDeviceSpec::named("storage".into()),
                    BlockDeviceSpec::named("storage".into()),
                ],
                ..unikernel(&block_image, &[])
            },
            "Block devices must be a set".into(),
        ),
        (
            UnikernelConfig {
                cpuids: BTreeSet::new(),
                ..unikernel(&net_image, &[])
            },
            "no CPU id given: a unikernel needs at least one CPU".into(),
        ),
        (
            UnikernelConfig {
                blocks: vec![BlockDeviceSpec {
                    device_name: Some("data".into()),
                    ..BlockDeviceSpec::named("storage".into())
                }],
                ..unikernel(&block_image, &[])
            },
            "block device :data not found".into(),
        ),
        (
            UnikernelConfig {
                memory: 5000,
                ..unikernel(&net_image, &[])
            },
            "maximum allowed memory (4096, used 0) would be exceeded (requesting 5000)".into(),
        ),
        (
            UnikernelConfig {
                cpuids: BTreeSet::from([7]),
                ..unikernel(&net_image, &[])
            },
            "CPUids 7 are not allowed by policy".into(),
        ),
        (
            UnikernelConfig {
                cpuids: BTreeSet::from([1000]),
                ..unikernel(&net_image, &[])
            },
            format!(
                "CPU 1000 is not available on this host (available: {})",
                available_cpus()
                    .unwrap()
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    ];
    for (config, text) in cases {
        assert_eq!(fx.root_ask(&exec, "bad", create(config)).await, fail(&text));
        fx.assert_clean(&exec, &usage, 0, &text);
    }
    // A tap that cannot be created: the reservation is released.
    fx.net.fail_on(NetOp::CreateTap);
    assert_eq!(
        fx.root_ask(&exec, "bad", create(with_net(None))).await,
        fail("injected failure of create_tap")
    );
    fx.net.stop_failing(NetOp::CreateTap);
    fx.assert_clean(&exec, &usage, 0, "tap failure");

    // E2: a tender that cannot be executed is reported as such, and the tap created for
    // it is removed again.
    assert_eq!(
        fx.root_ask(&exec, "good", create(with_net(None))).await,
        ok("created unikernel")
    );
    let moved = fx.dir.path().join("moved");
    fs::rename(fx.tender(), &moved).unwrap();
    assert_eq!(
        fx.root_ask(&exec, "bad", create(with_net(None))).await,
        fail(&format!(
            "could not start the tender: could not execute tender {}: \
             No such file or directory (os error 2)",
            fx.tender().display()
        ))
    );
    fs::rename(&moved, fx.tender()).unwrap();
    assert_eq!(fx.net.taps().unwrap(), vec![iface("vmmtap0")]);
    assert_eq!(fx.files("images"), vec![":good.img"]);
    assert_eq!(fx.files("tmp"), Vec::<String>::new());
    assert_eq!(fx.state_names(), vec![":good"]);
    exec.shutdown().await;
}

#[tokio::test]
async fn force_create_replaces_or_leaves_the_old_one() {
    let fx = Fixture::new();
    let exec = fx.start().await;
    let mut events = exec.events();
    let img = image(&[]);
    assert_eq!(
        fx.root_ask(
            &exec,
            "web",
            create(unikernel(&img, &["--print=one", "--wait"]))
        )
        .await,
        ok("created unikernel")
    );
    let first = started(next(&mut events).await, ":web");

    // Refused before anything is touched: the old one keeps running.
    let too_big = UnikernelConfig {
        memory: 5000,
        ..unikernel(&img, &["--wait"])
    };
    assert_eq!(
        fx.root_ask(&exec, "web", force_create(too_big)).await,
        // Checked as if the old one were gone (it would be replaced).
        fail("maximum allowed memory (4096, used 0) would be exceeded (requesting 5000)")
    );
    let bad_image = unikernel(&build_test_image(Target::Virtio, 2, &[]), &["--wait"]);
    assert_eq!(
        fx.root_ask(&exec, "web", force_create(bad_image)).await,
        fail("unsupported solo5 target virtio")
    );
    assert!(alive(first));

    // Replaced: the old one is stopped and waited for, then the new one starts.
    assert_eq!(
        fx.root_ask(
            &exec,
            "web",
            force_create(unikernel(&img, &["--print=two", "--wait"]))
        )
        .await,
        ok("created unikernel")
    );
    stopped(next(&mut events).await, ":web");
    let second = started(next(&mut events).await, ":web");
    assert!(!alive(first));
    assert!(alive(second));
    let Payload::Success(Success::UnikernelInfo(entries)) = fx.root_ask(&exec, "web", info()).await
    else {
        panic!()
    };
    assert_eq!(
        entries[0].info.arguments,
        Some(vec!["--print=two".to_owned(), "--wait".to_owned()])
    );
    fx.wait_launches(":web", 2).await;
    // force-create of a name that does not run is a create.
    assert_eq!(
        fx.root_ask(&exec, "fresh", force_create(unikernel(&img, &["--wait"])))
            .await,
        ok("created unikernel")
    );
    assert_eq!(fx.state_names(), vec![":fresh", ":web"]);
    exec.shutdown().await;
}

#[tokio::test]
async fn restart_with_and_without_arguments() {
    let fx = Fixture::new();
    let exec = fx.start().await;
    let mut events = exec.events();
    let img = image(&[]);
    assert_eq!(
        fx.root_ask(&exec, "r", create(unikernel(&img, &["--wait"])))
            .await,
        ok("created unikernel")
    );
    let first = started(next(&mut events).await, ":r");
    assert_eq!(
        fx.root_ask(&exec, "r", restart(RestartArgs::NoArguments))
            .await,
        ok("created unikernel")
    );
    stopped(next(&mut events).await, ":r");
    let second = started(next(&mut events).await, ":r");
    assert!(!alive(first));
    let launches = fx.wait_launches(":r", 2).await;
    assert_eq!(argv(&launches[0]), argv(&launches[1]));

    let arguments = UnikernelArguments {
        fail_behaviour: FailBehaviour::Quit,
        startup: Some(7),
        add_name: false,
        cpuids: BTreeSet::from([0]),
        memory: 64,
        blocks: vec![],
        bridges: vec![],
        arguments: Some(vec!["--print=new".into(), "--wait".into()]),
        cpus: 1,
        linux_boot_partition: None,
    };
    assert_eq!(
        fx.root_ask(&exec, "r", restart(RestartArgs::Arguments(arguments)))
            .await,
        ok("created unikernel")
    );
    stopped(next(&mut events).await, ":r");
    let third = started(next(&mut events).await, ":r");
    assert!(!alive(second) && alive(third));
    let last = fx.wait_launches(":r", 3).await.pop().unwrap();
    assert_eq!(
        argv(&last)[1..],
        [
            "--mem=64".to_owned(),
            "--".into(),
            fx.image_path(":r").display().to_string(),
            "--print=new".into(),
            "--wait".into()
        ]
    );
    let stored = &fx.state().unikernels[0].value;
    assert_eq!(
        (stored.memory, stored.startup, stored.add_name),
        (64, Some(7), false)
    );
    // A restart with arguments that do not fit is refused before the old one stops.
    let too_big = UnikernelArguments {
        fail_behaviour: FailBehaviour::Quit,
        startup: None,
        add_name: true,
        cpuids: BTreeSet::from([0]),
        memory: 5000,
        blocks: vec![],
        bridges: vec![],
        arguments: None,
        cpus: 1,
        linux_boot_partition: None,
    };
    assert_eq!(
        fx.root_ask(&exec, "r", restart(RestartArgs::Arguments(too_big)))
            .await,
        fail("maximum allowed memory (4096, used 0) would be exceeded (requesting 5000)")
    );
    assert!(alive(third));
    assert_eq!(
        fx.root_ask(&exec, "r", destroy()).await,
        ok("destroyed unikernel")
    );
    // E13: restart of a unikernel that does not run is not answered like a destroy.
    assert_eq!(
        fx.root_ask(&exec, "r", restart(RestartArgs::NoArguments))
            .await,
        fail("restart: not running")
    );
    exec.shutdown().await;
}

#[tokio::test]
async fn restart_on_failure_follows_the_exit_codes() {
    let fx = Fixture::new();
    let exec = fx.start().await;
    let mut events = exec.events();
    let img = image(&[]);
    // Exit code 2, restart only on 3: gone.
    let config = UnikernelConfig {
        fail_behaviour: FailBehaviour::Restart(BTreeSet::from([3])),
        ..unikernel(&img, &["--exit=2"])
    };
    assert_eq!(
        fx.root_ask(&exec, "no", create(config)).await,
        ok("created unikernel")
    );
    started(next(&mut events).await, ":no");
    assert_eq!(
        next(&mut events).await,
        Event::Exited {
            name: n(":no"),
            code: 2
        }
    );
    assert_eq!(
        fx.root_ask(&exec, "no", destroy()).await,
        fail("destroy: not found")
    );
    assert_eq!(fx.files("images"), Vec::<String>::new());
    eventually("the state file drops :no", || fx.state_names().is_empty()).await;

    // Exit code 3, restart on 3: restarted after the back-off.
    let config = UnikernelConfig {
        fail_behaviour: FailBehaviour::Restart(BTreeSet::from([3])),
        ..unikernel(&img, &["--exit=3"])
    };
    assert_eq!(
        fx.root_ask(&exec, "yes", create(config)).await,
        ok("created unikernel")
    );
    started(next(&mut events).await, ":yes");
    assert_eq!(
        next(&mut events).await,
        Event::Exited {
            name: n(":yes"),
            code: 3
        }
    );
    assert_eq!(
        next(&mut events).await,
        Event::RestartScheduled {
            name: n(":yes"),
            attempt: 1,
            delay: Duration::from_millis(20)
        }
    );
    assert!(matches!(next(&mut events).await, Event::Restarted { name, .. } if name == n(":yes")));
    assert_eq!(fx.state_names(), vec![":yes"]);
    exec.shutdown().await;
}

#[tokio::test]
async fn crash_loop_is_spaced_out_by_the_back_off() {
    let fx = Fixture::new();
    let exec = fx.start().await;
    let mut events = exec.events();
    let config = UnikernelConfig {
        fail_behaviour: FailBehaviour::Restart(BTreeSet::new()),
        ..unikernel(&image(&[]), &["--exit=2"])
    };
    assert_eq!(
        fx.root_ask(&exec, "loop", create(config)).await,
        ok("created unikernel")
    );
    let mut observed = Vec::new();
    loop {
        let event = next(&mut events).await;
        let done = matches!(event, Event::RestartScheduled { attempt: 6, .. });
        observed.push(event);
        if done {
            break;
        }
    }
    let name = n(":loop");
    let mut expected = Vec::new();
    for (attempt, ms) in [(1, 20), (2, 40), (3, 80), (4, 80), (5, 80), (6, 80)] {
        expected.push(Event::Exited {
            name: name.clone(),
            code: 2,
        });
        expected.push(Event::RestartScheduled {
            name: name.clone(),
            attempt,
            delay: Duration::from_millis(ms),
        });
    }
    // Starts carry pids; compare the rest exactly, and that starts alternate with exits.
    let mut starts = 0;
    let rest: Vec<Event> = observed
        .into_iter()
        .filter(|e| match e {
            Event::Started { name: n, .. } if starts == 0 && *n == name => {
                starts += 1;
                false
            }
            Event::Restarted { name: n, .. } if *n == name => {
                starts += 1;
                false
            }
            _ => true,
        })
        .collect();
    assert_eq!(rest, expected);
    assert_eq!(starts, 6);
    // (More may have started since.)
    eventually("six launches", || fx.launches_of(":loop").len() >= 6).await;
    // Still meant to run: in the state file.
    assert_eq!(fx.state_names(), vec![":loop"]);
    exec.shutdown().await;
}

#[tokio::test]
async fn add_name_fallback_restarts_without_name() {
    let fx = Fixture::new();
    let exec = fx.start().await;
    let mut events = exec.events();
    let config = UnikernelConfig {
        add_name: true,
        ..unikernel(&image(&[]), &["--refuse-name", "--wait"])
    };
    assert_eq!(
        fx.root_ask(&exec, "old", create(config)).await,
        ok("created unikernel")
    );
    started(next(&mut events).await, ":old");
    assert_eq!(
        next(&mut events).await,
        Event::Exited {
            name: n(":old"),
            code: 64
        }
    );
    assert_eq!(
        next(&mut events).await,
        Event::RestartScheduled {
            name: n(":old"),
            attempt: 1,
            delay: Duration::from_millis(20)
        }
    );
    let Event::Restarted { pid, .. } = next(&mut events).await else {
        panic!("not restarted")
    };
    assert!(alive(pid));
    let launches = fx.wait_launches(":old", 2).await;
    assert!(argv(&launches[0]).contains(&"--name=old".to_owned()));
    assert!(!argv(&launches[1]).iter().any(|a| a.starts_with("--name=")));
    // The changed configuration is what the state file keeps.
    eventually("addName false persisted", || {
        fx.state()
            .unikernels
            .first()
            .is_some_and(|e| !e.value.add_name)
    })
    .await;
    exec.shutdown().await;
}

#[tokio::test]
async fn pending_restart_destroy_force_create_and_restart() {
    // A back-off long enough that the restart is pending for the whole test.
    let fx = Fixture::with_limits(Limits {
        restart_backoff_initial: Duration::from_secs(3600),
        restart_backoff_max: Duration::from_secs(3600),
        ..Limits::default()
    });
    let exec = fx.start().await;
    let mut events = exec.events();
    let img = image(&[]);
    let crashing = UnikernelConfig {
        fail_behaviour: FailBehaviour::Restart(BTreeSet::new()),
        ..unikernel(&img, &["--exit=2"])
    };
    assert_eq!(
        fx.root_ask(&exec, "p", create(crashing.clone())).await,
        ok("created unikernel")
    );
    pend(&mut events).await;
    assert_eq!(
        fx.root_ask(&exec, "p", create(crashing.clone())).await,
        fail("Unikernel with same name is waiting to be restarted (destroy or force-create it)")
    );
    assert_eq!(
        fx.root_ask(&exec, "p", info()).await,
        Payload::Success(Success::UnikernelInfo(vec![]))
    );
    assert_eq!(fx.state_names(), vec![":p"]);
    assert_eq!(
        fx.root_ask(&exec, "p", destroy()).await,
        ok("destroyed: removed from restarting")
    );
    assert_eq!(next(&mut events).await, Event::Destroyed { name: n(":p") });
    // E7.
    assert_eq!(
        fx.root_ask(&exec, "p", destroy()).await,
        fail("destroy: not found")
    );
    assert_eq!(fx.state_names(), Vec::<String>::new());
    assert_eq!(fx.files("images"), Vec::<String>::new());

    // E5: force-create cancels a pending restart.
    assert_eq!(
        fx.root_ask(&exec, "p", create(crashing.clone())).await,
        ok("created unikernel")
    );
    pend(&mut events).await;
    assert_eq!(
        fx.root_ask(&exec, "p", force_create(unikernel(&img, &["--wait"])))
            .await,
        ok("created unikernel")
    );
    started(next(&mut events).await, ":p");
    assert_eq!(
        fx.root_ask(&exec, "p", destroy()).await,
        ok("destroyed unikernel")
    );
    stopped(next(&mut events).await, ":p");
    assert_eq!(next(&mut events).await, Event::Destroyed { name: n(":p") });
    assert_eq!(
        fx.root_ask(&exec, "p", destroy()).await,
        fail("destroy: not found")
    );

    // restart of a pending unikernel restarts it now (with the new arguments).
    assert_eq!(
        fx.root_ask(&exec, "p", create(crashing)).await,
        ok("created unikernel")
    );
    pend(&mut events).await;
    let arguments = UnikernelArguments {
        fail_behaviour: FailBehaviour::Quit,
        startup: None,
        add_name: true,
        cpuids: BTreeSet::from([0]),
        memory: 32,
        blocks: vec![],
        bridges: vec![],
        arguments: Some(vec!["--wait".into()]),
        cpus: 1,
        linux_boot_partition: None,
    };
    assert_eq!(
        fx.root_ask(&exec, "p", restart(RestartArgs::Arguments(arguments)))
            .await,
        ok("created unikernel")
    );
    let pid = started(next(&mut events).await, ":p");
    assert!(alive(pid));
    exec.shutdown().await;
}

#[tokio::test]
async fn slow_subscriber_gets_a_lost_marker_and_never_blocks() {
    // 90 cycles of 3 events each (started, exited, destroyed), nobody reading `slow`:
    // every request still completes.
    const CYCLES: usize = 90;
    let fx = Fixture::new();
    let exec = fx.start().await;
    let mut slow = exec.events();
    let mut fast = exec.events();
    // A subscriber that keeps up, reading concurrently.
    let reader = tokio::spawn(async move {
        let mut seen = 0;
        while seen < 3 * CYCLES {
            match fast.recv().await {
                Some(Received::Event(_)) => seen += 1,
                other => panic!("the fast subscriber lost events: {other:?}"),
            }
        }
        seen
    });
    let config = unikernel(&image(&[]), &["--wait"]);
    for _ in 0..CYCLES {
        assert_eq!(
            fx.root_ask(&exec, "cycle", create(config.clone())).await,
            ok("created unikernel")
        );
        assert_eq!(
            fx.root_ask(&exec, "cycle", destroy()).await,
            ok("destroyed unikernel")
        );
    }
    assert_eq!(
        tokio::time::timeout(GUARD, reader).await.unwrap().unwrap(),
        3 * CYCLES
    );
    let lost = u64::try_from(3 * CYCLES - petrel::executor::events::EVENT_CAPACITY).unwrap();
    assert_eq!(slow.recv().await, Some(Received::Lost(lost)));
    // The oldest event kept is the 15th: the destroy of the fifth cycle.
    assert_eq!(
        slow.recv().await,
        Some(Received::Event(Event::Destroyed { name: n(":cycle") }))
    );
    let mut rest = 0;
    while let Some(received) = slow.try_recv() {
        assert!(matches!(received, Received::Event(_)));
        rest += 1;
    }
    assert_eq!(rest, petrel::executor::events::EVENT_CAPACITY - 1);
    exec.shutdown().await;
}

fn policy_info() -> Command {
    Command::Policy(PolicyCmd::Info)
}

fn policies(payload: Payload) -> Vec<(String, Policy)> {
    match payload {
        Payload::Success(Success::Policies(entries)) => entries
            .into_iter()
            .map(|PolicyEntry { name, policy }| (name.text(), policy))
            .collect(),
        other => panic!("expected policies, got {other:?}"),
    }
}

#[tokio::test]
async fn chain_policies_are_one_transaction() {
    let fx = Fixture::new();
    let exec = fx.start().await;
    let img = image(&[]);
    let a1 = policy(2, &[0], 256, None, &["service"]);
    let a = fx.root.intermediate("a", &a1);
    let request = fx.request(&a, "web", create(unikernel(&img, &["--wait"])));
    let a_cert: CertId = request.get().policies[0].cert.clone();
    assert_eq!(
        call(&exec, request, None).await[0].payload,
        ok("created unikernel")
    );
    assert_eq!(
        policies(fx.ask(&exec, &a, ".", policy_info()).await),
        vec![(":".to_owned(), a1.clone())]
    );
    assert_eq!(fx.records().policies.get("a:"), Some(&a_cert));
    assert_eq!(
        fx.records().unikernels.get("a:web").map(Vec::len),
        Some(3),
        "leaf, a, root"
    );
    assert!(fx.records().ca_certificates.len() >= 2);

    // A chain whose lower policy does not fit its upper one: nothing of it stays (a's
    // re-issued policy is rolled back).
    let a2 = policy(3, &[0], 512, None, &["service"]);
    let a_again = fx.root.intermediate("a", &a2);
    let b = a_again.intermediate("b", &policy(4, &[0], 128, None, &["service"]));
    assert_eq!(
        fx.ask(&exec, &b, "x", create(unikernel(&img, &["--wait"])))
            .await,
        fail(
            "expected success when adding policy, got: policy of a:b: not applied: \
             policy above allows 3 unikernels, which is fewer than 4"
        )
    );
    assert_eq!(
        policies(fx.root_ask(&exec, ".", policy_info()).await),
        vec![
            (":".to_owned(), fx.config_root_policy()),
            ("a:".to_owned(), a1.clone())
        ]
    );
    assert_eq!(fx.records().policies.get("a:"), Some(&a_cert));

    // A policy below what runs under it.
    let small = fx
        .root
        .intermediate("a", &policy(2, &[0], 16, None, &["service"]));
    assert_eq!(
        fx.ask(&exec, &small, "y", info()).await,
        fail(
            "expected success when adding policy, got: policy of a: not applied: \
             unikernel would exceed running memory limit set by policy to 16 MB, used 32 MB"
        )
    );

    // Top-down (Note N3): a larger upper policy is in place before the lower one that
    // uses it is checked.
    let b2 = policy(3, &[0], 128, None, &["service"]);
    let b = a_again.intermediate("b", &b2);
    assert_eq!(
        fx.ask(&exec, &b, "x", create(unikernel(&img, &["--wait"])))
            .await,
        ok("created unikernel")
    );
    assert_eq!(
        policies(fx.root_ask(&exec, ".", policy_info()).await),
        vec![
            (":".to_owned(), fx.config_root_policy()),
            ("a:".to_owned(), a2),
            ("a:b:".to_owned(), b2)
        ]
    );
    // Console and statistics requests do not install the chain's policies (as in
    // albatross, whose TLS endpoint forwards them only with albatrossd's commands).
    let huge = fx
        .root
        .intermediate("h", &policy(1, &[0], 100_000, None, &["service"]));
    assert_eq!(
        fx.ask(
            &exec,
            &huge,
            ".",
            Command::Console(ConsoleCmd::ListInactive)
        )
        .await,
        Payload::Success(Success::Consoles(vec![]))
    );
    assert_eq!(
        fx.ask(&exec, &huge, "x", info()).await,
        fail(
            "expected success when adding policy, got: policy of h: not applied: \
             policy above allows 4096 MB memory, which is fewer than 100000 MB"
        )
    );
    // The state file holds them (root policy included).
    let stored: Vec<String> = fx.state().policies.iter().map(|e| e.name.text()).collect();
    assert_eq!(stored, [":", "a:", "a:b:"]);
    exec.shutdown().await;
}

impl Fixture {
    /// The root policy the fixture's overrides make.
    fn config_root_policy(&self) -> Policy {
        Policy {
            unikernels: (1 << 62) - 1,
            cpuids: self.host.cpuids.clone().unwrap(),
            memory: self.host.memory.unwrap(),
            block: self.host.block,
            bridges: self.host.bridges.clone().unwrap(),
        }
    }
}

#[tokio::test]
async fn resource_refusals_reach_the_reply() {
    let fx = Fixture::new();
    let exec = fx.start().await;
    let img = image(&[]);
    let net_image = image(&[Device::net("service")]);
    let block_image = image(&[Device::block("storage")]);
    let run = |memory| UnikernelConfig {
        memory,
        ..unikernel(&img, &["--wait"])
    };
    let a = fx
        .root
        .intermediate("a", &policy(1, &[0], 64, None, &["service"]));
    let b = fx
        .root
        .intermediate("b", &policy(5, &[0], 64, None, &["service"]));
    let c = fx
        .root
        .intermediate("c", &policy(2, &[0], 512, None, &["service"]));
    let c_d = c.intermediate("d", &policy(2, &[0], 512, None, &["service"]));
    let c_e = c.intermediate("e", &policy(2, &[0], 512, None, &["service"]));
    for (issuer, cn) in [(&a, "u1"), (&c_d, "x"), (&c_e, "y")] {
        assert_eq!(
            fx.ask(&exec, issuer, cn, create(run(32))).await,
            ok("created unikernel")
        );
    }
    let usage = exec.usage(&petrel::name::Path::root());
    let taps = fx.net.taps().unwrap();
    let cases: Vec<(&Ca, &str, Command, &str)> = vec![
        (
            &a,
            "u2",
            create(run(32)),
            "maximum amount of unikernels (1) reached",
        ),
        (
            &b,
            "big",
            create(run(128)),
            "maximum allowed memory (64, used 0) would be exceeded (requesting 128)",
        ),
        (
            &b,
            "cpu",
            create(UnikernelConfig {
                cpuids: BTreeSet::from([1]),
                ..run(32)
            }),
            "CPUids 1 are not allowed by policy",
        ),
        (
            &b,
            "br",
            create(UnikernelConfig {
                bridges: vec![NetDeviceSpec {
                    bridge: Some("br0".into()),
                    ..NetDeviceSpec::named("service".into())
                }],
                ..unikernel(&net_image, &["--wait"])
            }),
            "bridges br0 not allowed by policy",
        ),
        (
            &b,
            "blk",
            create(UnikernelConfig {
                blocks: vec![BlockDeviceSpec::named("storage".into())],
                ..unikernel(&block_image, &["--wait"])
            }),
            "block device b:storage not found",
        ),
        // N2 fixed: the policy of c: bounds its sub-domains together.
        (
            &c_d,
            "z",
            create(run(32)),
            "policy of c: would be exceeded: unikernels (2 allowed, 2 running)",
        ),
        (
            &b,
            "disk",
            block(BlockCmd::Add(10)),
            "no block devices are allowed by policy",
        ),
        (
            &b,
            ".",
            create(run(32)),
            "unikernel create needs a unikernel name, but b: is a path",
        ),
    ];
    for (issuer, cn, command, text) in cases {
        assert_eq!(fx.ask(&exec, issuer, cn, command).await, fail(text));
        assert_eq!(exec.usage(&petrel::name::Path::root()), usage, "{text}");
        assert_eq!(fx.net.taps().unwrap(), taps, "{text}");
        assert_eq!(fx.files("tmp"), Vec::<String>::new(), "{text}");
    }
    assert_eq!(fx.files("images"), ["a:u1.img", "c:d:x.img", "c:e:y.img"]);
    exec.shutdown().await;
}

fn block_devices(payload: Payload) -> Vec<BlockDevice> {
    match payload {
        Payload::Success(Success::BlockDevices(devices)) => devices,
        other => panic!("expected block devices, got {other:?}"),
    }
}

#[tokio::test]
async fn block_devices_with_unikernels() {
    let fx = Fixture::new();
    let exec = fx.start().await;
    let mut events = exec.events();
    assert_eq!(
        fx.root_ask(&exec, "data", block(BlockCmd::Add(10))).await,
        ok("added block device")
    );
    assert_eq!(
        fx.root_ask(&exec, "data", block(BlockCmd::Add(10))).await,
        fail("block device with same name already exists")
    );
    assert_eq!(
        block_devices(fx.root_ask(&exec, ".", block(BlockCmd::Info)).await),
        vec![BlockDevice {
            name: n(":data"),
            size: 10,
            active: false
        }]
    );
    assert!(fx.records().blocks.contains_key(":data"));
    assert_eq!(exec.usage(&petrel::name::Path::root()).block, 10);

    let config = UnikernelConfig {
        blocks: vec![BlockDeviceSpec {
            device_name: Some("data".into()),
            sector_size: Some(4096),
            ..BlockDeviceSpec::named("storage".into())
        }],
        ..unikernel(
            &image(&[Device::block("storage")]),
            &["--write-block=storage:hello", "--wait"],
        )
    };
    assert_eq!(
        fx.root_ask(&exec, "db", create(config.clone())).await,
        ok("created unikernel")
    );
    started(next(&mut events).await, ":db");
    let launch = &fx.wait_launches(":db", 1).await[0];
    let args = argv(launch);
    assert!(args.contains(&format!(
        "--block:storage={}",
        fx.path("block/:data").display()
    )));
    assert!(args.contains(&"--block-sector-size:storage=4096".to_owned()));
    assert_eq!(
        block_devices(fx.root_ask(&exec, "data", block(BlockCmd::Info)).await),
        vec![BlockDevice {
            name: n(":data"),
            size: 10,
            active: true
        }]
    );
    let Payload::Success(Success::UnikernelInfo(entries)) = fx.root_ask(&exec, "db", info()).await
    else {
        panic!()
    };
    assert_eq!(
        entries[0].info.blocks,
        vec![BlockInfo {
            unikernel_device: "storage".into(),
            host_device: "data".into(),
            sector_size: 4096,
            size: 10
        }]
    );
    // In use: not removable, not overwritten, not dumped, not used twice.
    for (command, text) in [
        (BlockCmd::Remove, "remove block: is in use"),
        (
            BlockCmd::SetOld {
                compress: false,
                data: b"x".to_vec(),
            },
            "set block: is in use",
        ),
        (BlockCmd::Dump(0), "dump block: is in use"),
    ] {
        assert_eq!(fx.root_ask(&exec, "data", block(command)).await, fail(text));
    }
    assert_eq!(
        fx.root_ask(&exec, "db2", create(config)).await,
        fail("block device :data already in use")
    );

    assert_eq!(
        fx.root_ask(&exec, "db", destroy()).await,
        ok("destroyed unikernel")
    );
    assert!(!block_devices(fx.root_ask(&exec, "data", block(BlockCmd::Info)).await)[0].active);
    // The dump streams what the unikernel wrote.
    let frames = call(
        &exec,
        fx.request(&fx.root, "data", block(BlockCmd::Dump(0))),
        None,
    )
    .await;
    assert_eq!(
        frames[0].payload,
        Payload::Success(Success::BlockDeviceImage(false))
    );
    assert_eq!(
        frames.last().unwrap().payload,
        Payload::Data(Data::Block(BlockData::NoData))
    );
    let content: Vec<u8> = frames[1..frames.len() - 1]
        .iter()
        .flat_map(|f| match &f.payload {
            Payload::Data(Data::Block(BlockData::SomeData(chunk))) => chunk.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(content.len(), 10 << 20);
    assert_eq!(&content[..5], b"hello");
    // A streamed set, then remove.
    let request = fx.request(&fx.root, "data", block(BlockCmd::Set(false)));
    let frames = call(
        &exec,
        request,
        Some(vec![InputChunk::Data(b"new".to_vec()), InputChunk::End]),
    )
    .await;
    assert_eq!(frames[0].payload, ok("set block device"));
    assert_eq!(&fs::read(fx.path("block/:data")).unwrap()[..5], b"new\0\0");
    assert_eq!(
        fx.root_ask(&exec, "data", block(BlockCmd::Remove)).await,
        ok("removed block")
    );
    assert_eq!(
        fx.root_ask(&exec, "data", block(BlockCmd::Remove)).await,
        fail("remove block: not found")
    );
    assert_eq!(
        fx.root_ask(&exec, "data", block(BlockCmd::Dump(0))).await,
        fail("dump block: not found")
    );
    assert_eq!(
        block_devices(fx.root_ask(&exec, ".", block(BlockCmd::Info)).await),
        vec![]
    );
    assert!(!fx.records().blocks.contains_key(":data"));
    assert_eq!(exec.usage(&petrel::name::Path::root()).block, 0);
    assert_eq!(
        fx.root_ask(&exec, ".", block(BlockCmd::Add(1))).await,
        fail("block add needs a block device name, but : is a path")
    );
    exec.shutdown().await;
}

#[tokio::test]
async fn console_of_a_unikernel() {
    let fx = Fixture::new();
    let exec = fx.start().await;
    assert_eq!(
        fx.root_ask(
            &exec,
            "talk",
            create(unikernel(&image(&[]), &["--lines=3", "--wait"]))
        )
        .await,
        ok("created unikernel")
    );
    let request = fx.request(
        &fx.root,
        "talk",
        Command::Console(ConsoleCmd::Subscribe(SinceCount::Count(10))),
    );
    let mut out = exec.handle(ExecRequest {
        request,
        input: None,
        peer: "test".into(),
    });
    let first = tokio::time::timeout(GUARD, out.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.payload, ok("subscribed"));
    let mut lines = Vec::new();
    while lines.len() < 4 {
        let frame = tokio::time::timeout(GUARD, out.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(frame.name, n(":talk"));
        match frame.payload {
            Payload::Data(Data::Console { line, .. }) => lines.push(line),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(lines, [BANNER, "line 1", "line 2", "line 3"]);
    drop(out);
    assert_eq!(
        fx.root_ask(&exec, "talk", destroy()).await,
        ok("destroyed unikernel")
    );
    let inactive = |fx: &Fixture, exec: &Executor| {
        let request = fx.request(&fx.root, ".", Command::Console(ConsoleCmd::ListInactive));
        let exec = exec.clone();
        async move { call(&exec, request, None).await.remove(0).payload }
    };
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let payload = inactive(&fx, &exec).await;
        if payload == Payload::Success(Success::Consoles(vec![n(":talk")])) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{payload:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        fx.root_ask(
            &exec,
            ".",
            Command::Console(ConsoleCmd::Subscribe(SinceCount::Count(1)))
        )
        .await,
        fail("console subscribe needs a unikernel name, but : is a path")
    );
    assert_eq!(
        fx.root_ask(&exec, "talk", Command::Console(ConsoleCmd::ListInactive))
            .await,
        fail("console list inactive needs a path, but :talk is a unikernel name")
    );
    exec.shutdown().await;
}

#[tokio::test]
async fn a_restarted_executor_restores_the_same_unikernels() {
    let fx = Fixture::new();
    let exec = fx.start().await;
    let img = image(&[]);
    let net_image = image(&[Device::net("service")]);
    assert_eq!(
        fx.root_ask(
            &exec,
            "one",
            create(UnikernelConfig {
                bridges: vec![NetDeviceSpec::named("service".into())],
                ..unikernel(&net_image, &["--wait"])
            })
        )
        .await,
        ok("created unikernel")
    );
    let two = UnikernelConfig {
        startup: Some(10),
        fail_behaviour: FailBehaviour::Restart(BTreeSet::new()),
        ..unikernel(&img, &["--wait"])
    };
    assert_eq!(
        fx.root_ask(&exec, "two", create(two)).await,
        ok("created unikernel")
    );
    let a = fx
        .root
        .intermediate("a", &policy(2, &[0], 256, None, &["service"]));
    assert_eq!(
        fx.ask(&exec, &a, "three", create(unikernel(&img, &["--wait"])))
            .await,
        ok("created unikernel")
    );
    let mut pids = Vec::new();
    for name in [":one", ":two", "a:three"] {
        pids.push(pid_of(&fx.wait_launches(name, 1).await[0]));
    }
    let state = fs::read(fx.path("state")).unwrap();
    let records = fx.records();
    // One executor per state directory: a second would run everything twice.
    let err = Executor::start(fx.config(), fx.net.clone(), Arc::new(ProcessTender))
        .await
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "the state directory {} is in use by another petrel process",
            fx.state_dir().display()
        )
    );
    assert!(pids.iter().all(|&pid| alive(pid)));

    // SIGTERM of the endpoint: tenders stopped, taps removed, the state file kept.
    exec.shutdown().await;
    assert!(pids.iter().all(|&pid| !alive(pid)));
    assert_eq!(fx.net.taps().unwrap(), vec![]);
    assert_eq!(fx.files("run"), Vec::<String>::new());
    assert_eq!(fs::read(fx.path("state")).unwrap(), state);
    assert_eq!(fx.files("images"), [":one.img", ":two.img", "a:three.img"]);
    assert_eq!(
        fx.root_ask(&exec, "x", info()).await,
        fail("the executor is shutting down")
    );

    let exec = fx.start().await;
    assert_eq!(fs::read(fx.path("state.started")).unwrap(), state);
    let Payload::Success(Success::UnikernelInfo(entries)) = fx.root_ask(&exec, ".", info()).await
    else {
        panic!()
    };
    let names: Vec<String> = entries.iter().map(|e| e.name.text()).collect();
    assert_eq!(names, [":one", ":two", "a:three"]);
    for (name, old) in [":one", ":two", "a:three"].into_iter().zip(&pids) {
        let launches = fx.wait_launches(name, 2).await;
        assert!(alive(pid_of(&launches[1])) && pid_of(&launches[1]) != *old);
    }
    assert_eq!(fx.net.taps().unwrap(), vec![iface("vmmtap0")]);
    assert_eq!(
        policies(fx.root_ask(&exec, ".", policy_info()).await),
        vec![
            (":".to_owned(), fx.config_root_policy()),
            ("a:".to_owned(), policy(2, &[0], 256, None, &["service"]))
        ]
    );
    assert_eq!(fx.records(), records);
    assert_eq!(fs::read(fx.path("state")).unwrap(), state);
    exec.shutdown().await;
}

#[tokio::test]
async fn unparsable_state_refuses_to_start() {
    let fx = Fixture::new();
    StateDir::new(fx.state_dir()).create().unwrap();
    fs::write(fx.path("state"), b"\xA6\x03\x30\x01").unwrap();
    let err = Executor::start(fx.config(), fx.net.clone(), Arc::new(ProcessTender))
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string().starts_with(&format!(
            "cannot parse the state file {}: ",
            fx.path("state").display()
        )),
        "{err}"
    );
    // The file is left as it was.
    assert_eq!(fs::read(fx.path("state")).unwrap(), b"\xA6\x03\x30\x01");

    // A stored policy that no longer fits its stored parent refuses start-up, naming it.
    let state = State {
        unikernels: vec![],
        policies: vec![
            TrieEntry::new(n("a:"), policy(1, &[0], 100, None, &["service"])),
            TrieEntry::new(n("a:big:"), policy(1, &[0], 200, None, &["service"])),
        ],
    };
    fs::write(fx.path("state"), codec::encode_state(&state)).unwrap();
    let err = Executor::start(fx.config(), fx.net.clone(), Arc::new(ProcessTender))
        .await
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "the stored policy a:big: cannot be restored: policy above allows 100 MB memory, \
         which is fewer than 200 MB"
    );

    // One beyond the host (which can shrink, and which albatross never checked first-level
    // policies against) is kept; the host still limits what runs below it.
    let big = policy(1, &[0], 100_000, None, &["service"]);
    let state = State {
        unikernels: vec![],
        policies: vec![TrieEntry::new(n("big:"), big.clone())],
    };
    fs::write(fx.path("state"), codec::encode_state(&state)).unwrap();
    let exec = Executor::start(fx.config(), fx.net.clone(), Arc::new(ProcessTender))
        .await
        .unwrap();
    assert_eq!(
        policies(fx.root_ask(&exec, ".", policy_info()).await),
        vec![
            (":".to_owned(), fx.config_root_policy()),
            ("big:".to_owned(), big)
        ]
    );
    exec.shutdown().await;
}

/// Writes `state` and the images of its unikernels (taken from their `image` fields,
/// which are then emptied) into a fresh state directory, as petrel would have.
fn seed_state(fx: &Fixture, mut state: State) {
    StateDir::new(fx.state_dir()).create().unwrap();
    for entry in &mut state.unikernels {
        let img = std::mem::take(&mut entry.value.image);
        fs::write(fx.image_path(&entry.name.text()), img).unwrap();
    }
    fs::write(fx.path("state"), codec::encode_state(&state)).unwrap();
}

#[tokio::test]
async fn a_failed_start_does_not_drop_untried_unikernels() {
    let fx = Fixture::new();
    let snapshots = fx.dir.path().join("snapshots");
    fs::create_dir(&snapshots).unwrap();
    // The tender copies the state file as it is when each unikernel is started.
    fx.write_tender(&format!(
        "case \"$*\" in *--version*) ;; *) cp '{}' '{}'/$$ ;; esac",
        fx.path("state").display(),
        snapshots.display()
    ));
    let img = image(&[]);
    let net_image = image(&[Device::net("service")]);
    let with = |startup, config: UnikernelConfig| UnikernelConfig {
        startup: Some(startup),
        ..config
    };
    // File order c, a, b; start-up order a (10), b (20), c (30). a cannot start: its
    // bridge is missing.
    let a = with(
        10,
        UnikernelConfig {
            bridges: vec![NetDeviceSpec {
                bridge: Some("br9".into()),
                ..NetDeviceSpec::named("service".into())
            }],
            ..unikernel(&net_image, &["--wait"])
        },
    );
    seed_state(
        &fx,
        State {
            unikernels: vec![
                TrieEntry::new(n(":c"), with(30, unikernel(&img, &["--wait"]))),
                TrieEntry::new(n(":a"), a),
                TrieEntry::new(n(":b"), with(20, unikernel(&img, &["--wait"]))),
            ],
            policies: vec![],
        },
    );
    let exec = fx.start().await;
    let snapshot = |name: &str| {
        let pid = pid_of(&fx.launches_of(name)[0]);
        let state =
            codec::decode_state(&fs::read(snapshots.join(pid.to_string())).unwrap()).unwrap();
        state
            .unikernels
            .iter()
            .map(|e| e.name.text())
            .collect::<Vec<_>>()
    };
    fx.wait_launches(":b", 1).await;
    fx.wait_launches(":c", 1).await;
    assert_eq!(fx.launches_of(":a"), Vec::<Value>::new());
    // When b starts, a was tried (and dropped) but c, not tried yet, is still there.
    assert_eq!(snapshot(":b"), [":b", ":c"]);
    assert_eq!(snapshot(":c"), [":b", ":c"]);
    assert_eq!(fx.state_names(), [":b", ":c"]);
    assert_eq!(fx.files("images"), [":b.img", ":c.img"]);
    exec.shutdown().await;
}

/// DER of one TLV (short or long length form).
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap());
    } else {
        let octets: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | u8::try_from(octets.len()).unwrap());
        out.extend(octets);
    }
    out.extend_from_slice(content);
    out
}

#[tokio::test]
async fn imports_the_current_state_example() {
    // spec/wire.md example 13, rebuilt with a valid image (the example's 4 octets are not
    // one) and arguments the stand-in understands; it needs the block device hello-data.
    let fx = Fixture::new();
    let img = image(&[Device::block("storage"), Device::net("service")]);
    let hello = UnikernelConfig {
        typ: Typ::Solo5,
        compressed: false,
        image: img.clone(),
        startup: None,
        add_name: true,
        fail_behaviour: FailBehaviour::Restart(BTreeSet::new()),
        cpuids: BTreeSet::from([cpu(1)]),
        memory: 64,
        blocks: vec![BlockDeviceSpec {
            device_name: Some("hello-data".into()),
            ..BlockDeviceSpec::named("storage".into())
        }],
        bridges: vec![NetDeviceSpec::named("service".into())],
        arguments: Some(vec!["--print=--hello=hi".into(), "--wait".into()]),
        cpus: 1,
        linux_boot_partition: None,
    };
    let root_in_file = Policy {
        unikernels: (1 << 62) - 1,
        cpuids: BTreeSet::from([0, 1, 2, 3]),
        memory: 7936,
        block: Some(100_000),
        bridges: ["br0", "service"].map(String::from).into(),
    };
    let user = policy(16, &[0, 1], 1024, None, &["service"]);
    let file = codec::encode_state(&State {
        unikernels: vec![TrieEntry::new(n(":hello"), hello.clone())],
        policies: vec![
            TrieEntry::new(n(":"), root_in_file),
            TrieEntry::new(n("user:"), user.clone()),
        ],
    });
    assert_eq!(&file[..1], [0xA6]);
    StateDir::new(fx.state_dir()).create().unwrap();
    fs::File::create(fx.path("block/:hello-data"))
        .unwrap()
        .set_len(10 << 20)
        .unwrap();
    fs::write(fx.path("state"), &file).unwrap();

    let exec = fx.start().await;
    assert_eq!(fs::read(fx.path("state.started")).unwrap(), file);
    assert_eq!(fs::read(fx.path("images/:hello.img")).unwrap(), img);
    // Rewritten without the image; the root policy is the host's.
    assert_eq!(
        fx.state().unikernels,
        vec![TrieEntry::new(
            n(":hello"),
            UnikernelConfig {
                image: vec![],
                ..hello.clone()
            }
        )]
    );
    assert_eq!(
        policies(fx.root_ask(&exec, ".", policy_info()).await),
        vec![
            (":".to_owned(), fx.config_root_policy()),
            ("user:".to_owned(), user)
        ]
    );
    let Payload::Success(Success::UnikernelInfo(entries)) =
        fx.root_ask(&exec, "hello", info()).await
    else {
        panic!()
    };
    let info = &entries[0].info;
    assert_eq!(info.digest, sha256(&img));
    assert_eq!(
        info.blocks,
        vec![BlockInfo {
            unikernel_device: "storage".into(),
            host_device: "hello-data".into(),
            sector_size: 512,
            size: 10
        }]
    );
    let mac = Mac::deterministic("service", &n(":hello"));
    assert_eq!(
        argv(&fx.wait_launches(":hello", 1).await[0])[1..],
        [
            "--mem=64".to_owned(),
            "--net:service=vmmtap0".into(),
            format!("--net-mac:service={mac}"),
            format!("--block:storage={}", fx.path("block/:hello-data").display()),
            "--".into(),
            fx.image_path(":hello").display().to_string(),
            "--name=hello".into(),
            "--print=--hello=hi".into(),
            "--wait".into(),
        ]
    );
    exec.shutdown().await;
}

#[tokio::test]
async fn imports_the_legacy_state_example() {
    // spec/wire.md example 14 (legacy [3], V3 configurations, no policies), first entry,
    // rebuilt: a valid image (compressed, as albatross-client sends them), the bridge
    // renamed from "bridge-interface" (16 octets, too long for a Linux interface) to
    // "br-iface", a CPU this host has, and an argument that keeps the stand-in running.
    let fx = Fixture::new();
    fx.net.add_bridge("br-iface");
    let img = image(&[Device::net("service")]);
    let cpuid = u8::try_from(cpu(2)).unwrap();
    let config_v3 = der(
        0x30,
        &[
            der(0xA0, &der(0x05, &[])),
            der(0x01, &[0xFF]),
            der(0x04, &zlib(&img)),
            der(0xA0, &der(0x05, &[])),
            der(0x02, &[cpuid]),
            der(0x02, &[0x0A]),
            der(
                0xA1,
                &der(
                    0x31,
                    &der(
                        0x30,
                        &[
                            der(0x0C, b"service"),
                            der(0x0C, b"br-iface"),
                            der(0x04, &[0x00, 0xDE, 0xAD, 0xBE, 0xEF, 0x00]),
                        ]
                        .concat(),
                    ),
                ),
            ),
            der(0xA2, &der(0x30, &der(0x0C, b"--wait"))),
        ]
        .concat(),
    );
    let file = der(
        0xA3,
        &der(
            0x30,
            &der(0x30, &[der(0x0C, b"bar:hello"), config_v3].concat()),
        ),
    );
    let decoded = codec::decode_state(&file).unwrap();
    assert_eq!(decoded.unikernels[0].name, n("bar:hello"));
    assert!(decoded.unikernels[0].value.add_name);
    StateDir::new(fx.state_dir()).create().unwrap();
    fs::write(fx.path("state"), &file).unwrap();

    let exec = fx.start().await;
    assert_eq!(fs::read(fx.image_path("bar:hello")).unwrap(), img);
    let rewritten = fs::read(fx.path("state")).unwrap();
    assert_eq!(rewritten[0], 0xA6, "written in the current format");
    let stored = &fx.state().unikernels[0];
    assert_eq!(stored.name, n("bar:hello"));
    assert_eq!(
        (
            stored.value.image.is_empty(),
            stored.value.compressed,
            &stored.value.cpuids,
            stored.value.memory,
            stored.value.cpus,
            stored.value.add_name
        ),
        (
            true,
            false,
            &BTreeSet::from([i64::from(cpuid)]),
            10,
            1,
            true
        )
    );
    assert_eq!(
        argv(&fx.wait_launches("bar:hello", 1).await[0])[1..],
        [
            "--mem=10".to_owned(),
            "--net:service=vmmtap0".into(),
            "--net-mac:service=00:de:ad:be:ef:00".into(),
            "--".into(),
            fx.image_path("bar:hello").display().to_string(),
            "--name=hello".into(),
            "--wait".into(),
        ]
    );
    assert_eq!(fx.net.bridge_of(&iface("vmmtap0")), Some(iface("br-iface")));
    exec.shutdown().await;
}

#[tokio::test]
async fn start_up_cleans_up_after_a_crashed_instance() {
    let fx = Fixture::new();
    let img = image(&[]);
    seed_state(
        &fx,
        State {
            unikernels: vec![TrieEntry::new(
                n(":ghost"),
                UnikernelConfig {
                    image: img.clone(),
                    ..unikernel(&[], &["--wait"])
                },
            )],
            policies: vec![],
        },
    );
    let image_path = fx.image_path(":ghost");
    // The crashed instance's tender, still running (started here, so not recorded as a
    // launch), its tap, and its run record.
    let mut leftover = std::process::Command::new(STAND_IN)
        .arg("--")
        .arg(&image_path)
        .arg("--wait")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let leftover_pid = Pid::new(leftover.id());
    eventually("the leftover runs", || alive(leftover_pid)).await;
    let tap = fx.net.create_tap(&iface("service")).unwrap();
    RunRecord::new(
        &n(":ghost"),
        leftover_pid,
        &image_path,
        std::slice::from_ref(&tap),
    )
    .write(&fx.path("run/:ghost.json"))
    .unwrap();
    // A stale record: its process is long gone.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    RunRecord {
        name: ":dead".into(),
        pid: gone_pid,
        start_time: Some(1),
        image: fx.image_path(":dead"),
        taps: vec![],
    }
    .write(&fx.path("run/:dead.json"))
    .unwrap();
    // A tap no record names (a crash between creating it and writing the record).
    let orphan = fx.net.create_tap(&iface("br0")).unwrap();
    // Temporary files of interrupted streams and writes.
    fs::write(fx.path("tmp/.image.1.2.tmp"), b"partial").unwrap();
    fs::write(fx.path("tmp/junk"), b"x").unwrap();
    fs::write(fx.path(".state.999.0.tmp"), b"torn").unwrap();

    let exec = fx.start().await;
    // The leftover was killed, not adopted, and the unikernel runs exactly once again.
    let status = leftover.wait().unwrap();
    assert_eq!(status.signal(), Some(9));
    let launches = fx.wait_launches(":ghost", 1).await;
    let pid = pid_of(&launches[0]);
    assert!(alive(pid) && pid != leftover_pid);
    let Payload::Success(Success::UnikernelInfo(entries)) =
        fx.root_ask(&exec, "ghost", info()).await
    else {
        panic!()
    };
    assert_eq!(entries.len(), 1);
    assert_eq!(fx.files("run"), [":ghost.json"]);
    assert_eq!(
        RunRecord::read(&fx.path("run/:ghost.json")).unwrap().pid,
        pid.get()
    );
    assert_eq!(fx.files("tmp"), Vec::<String>::new());
    assert!(!fx.path(".state.999.0.tmp").exists());
    assert_eq!(fx.net.taps().unwrap(), vec![]);
    let removed: Vec<InterfaceName> = fx
        .net
        .calls()
        .into_iter()
        .filter_map(|call| match call {
            NetCall::RemoveTap(tap) => Some(tap),
            _ => None,
        })
        .collect();
    assert_eq!(removed, [tap, orphan]);
    exec.shutdown().await;
}

#[tokio::test]
async fn destroy_kills_a_tender_that_ignores_sigterm() {
    let fx = Fixture::with_limits(Limits {
        stop_timeout: Duration::from_millis(200),
        ..Limits::default()
    });
    let exec = fx.start().await;
    let mut events = exec.events();
    assert_eq!(
        fx.root_ask(
            &exec,
            "stubborn",
            create(unikernel(&image(&[]), &["--ignore-sigterm", "--wait"]))
        )
        .await,
        ok("created unikernel")
    );
    let pid = started(next(&mut events).await, ":stubborn");
    // The banner comes after the stand-in set up its signal handling.
    let request = fx.request(
        &fx.root,
        "stubborn",
        Command::Console(ConsoleCmd::Subscribe(SinceCount::Count(1))),
    );
    let mut console = exec.handle(ExecRequest {
        request,
        input: None,
        peer: "test".into(),
    });
    loop {
        let frame = tokio::time::timeout(GUARD, console.recv())
            .await
            .unwrap()
            .unwrap();
        if let Payload::Data(Data::Console { line, .. }) = frame.payload {
            assert_eq!(line, BANNER);
            break;
        }
    }
    assert_eq!(
        fx.root_ask(&exec, "stubborn", destroy()).await,
        ok("destroyed unikernel")
    );
    assert_eq!(
        next(&mut events).await,
        Event::Signaled {
            name: n(":stubborn"),
            signal: 9
        }
    );
    assert!(!alive(pid));
    exec.shutdown().await;
}

#[tokio::test]
async fn shutdown_keeps_a_pending_restart_for_the_next_start() {
    let fx = Fixture::with_limits(Limits {
        restart_backoff_initial: Duration::from_secs(3600),
        restart_backoff_max: Duration::from_secs(3600),
        ..Limits::default()
    });
    let exec = fx.start().await;
    let mut events = exec.events();
    let crashing = UnikernelConfig {
        fail_behaviour: FailBehaviour::Restart(BTreeSet::new()),
        ..unikernel(&image(&[]), &["--exit=2"])
    };
    assert_eq!(
        fx.root_ask(&exec, "p", create(crashing)).await,
        ok("created unikernel")
    );
    pend(&mut events).await;
    let state = fs::read(fx.path("state")).unwrap();
    exec.shutdown().await;
    assert_eq!(fs::read(fx.path("state")).unwrap(), state);
    assert_eq!(fx.files("images"), [":p.img"]);

    let exec = fx.start().await;
    fx.wait_launches(":p", 2).await;
    assert_eq!(fx.state_names(), [":p"]);
    exec.shutdown().await;
}
