//! Per-unikernel cgroups with the real stand-in tender and the host's cgroup hierarchy
//! (v1 controllers or the v2 unified hierarchy, whichever `Cgroups::setup` picks): the
//! limits while a unikernel runs, the group gone after destroy, a tender over its memory
//! limit stopped by the kernel and not restarted, leftover groups removed at start-up,
//! and the v2 mechanics (join, usage, removal) on a unified mount.
//!
//! Needs root and a cgroup hierarchy; skipped with a message otherwise. Every test uses
//! a parent group of its own (`petrel-test-<pid>-<n>`), removed at the end.
//!
//! Timeouts only keep a broken test from hanging; nothing asserts on timing.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use petrel::auth::{self, Authorized};
use petrel::chain::Request;
use petrel::codec::{
    self, Command, Data, FailBehaviour, Payload, StatsCmd, UnikernelCmd, UnikernelConfig,
};
use petrel::executor::api::{ExecRequest, Handler, OutputFrame};
use petrel::executor::cgroup::{
    CgroupParent, Cgroups, Controller, GroupLimits, Hierarchy, MOUNTS, PIDS_MAX,
    TENDER_OVERHEAD_MB, parse_mounts,
};
use petrel::executor::manifest::{Target, build_test_image};
use petrel::executor::net::FakeNetwork;
use petrel::executor::tender::{ProcessTender, TenderCommand, available_cpus, spawn_tender_in};
use petrel::executor::{
    Event, EventStream, Executor, ExecutorConfig, HostOverrides, OnRevoke, Received,
};
use petrel::limits::Limits;
use petrel::name::Name;
use petrel::revocation::RevocationStore;
use petrel::verify::TrustAnchors;

use common::pki::{Ca, FIXED_NOW};

const STAND_IN: &str = env!("CARGO_BIN_EXE_petrel-stand-in-tender");

/// Guard against a hanging test (not a timing assertion).
const GUARD: Duration = Duration::from_secs(60);

const MIB: u64 = 1024 * 1024;

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A parent group no other test (or process) uses.
fn unique_parent() -> CgroupParent {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    CgroupParent::parse(&format!(
        "petrel-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
    .unwrap()
}

/// The host's cgroups with a fresh parent, or why the test is skipped.
fn host_cgroups() -> Result<Cgroups, &'static str> {
    if !root() {
        return Err("not root");
    }
    let cgroups = Cgroups::setup(unique_parent());
    if cgroups.version().is_none() {
        return Err("no usable cgroup hierarchy");
    }
    Ok(cgroups)
}

/// Removes a test's parent groups (and anything left in them) when dropped.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for parent in &self.0 {
            if let Ok(entries) = fs::read_dir(parent) {
                for entry in entries.flatten().filter(|e| e.path().is_dir()) {
                    kill_all(&entry.path());
                    let _ = fs::remove_dir(entry.path());
                }
            }
            let _ = fs::remove_dir(parent);
        }
    }
}

fn kill_all(dir: &Path) {
    for pid in procs(dir) {
        // SAFETY: killing a leftover test process in a test's own group.
        unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGKILL) };
    }
}

fn procs(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

struct Fixture {
    dir: tempfile::TempDir,
    root: Ca,
    anchors: TrustAnchors,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tender = dir.path().join("solo5-hvt");
        fs::write(
            &tender,
            format!("#!/bin/sh\nexport PETREL_STAND_IN_SKIP_TAPS=1\nexec '{STAND_IN}' \"$@\"\n"),
        )
        .unwrap();
        fs::set_permissions(&tender, fs::Permissions::from_mode(0o755)).unwrap();
        let root = Ca::root("root");
        let anchors = TrustAnchors::from_pem(root.cert_pem().as_bytes()).unwrap();
        Self { dir, root, anchors }
    }

    fn config(&self) -> ExecutorConfig {
        ExecutorConfig {
            state_dir: self.dir.path().join("state"),
            tender: self.dir.path().join("solo5-hvt"),
            limits: Limits {
                restart_backoff_initial: Duration::from_millis(20),
                stats_interval: Duration::from_millis(100),
                ..Limits::default()
            },
            host: HostOverrides {
                cpuids: None,
                memory: Some(4096),
                block: Some(100),
                bridges: Some(BTreeSet::new()),
            },
            on_revoke: OnRevoke::Destroy,
        }
    }

    async fn start(&self, cgroups: Cgroups) -> Executor {
        Executor::start_with_cgroups(
            self.config(),
            Arc::new(FakeNetwork::with_bridges(&[])),
            Arc::new(ProcessTender),
            cgroups,
        )
        .await
        .unwrap()
    }

    fn request(&self, cn: &str, command: Command) -> Authorized<Request> {
        let leaf = self.root.leaf(Some(cn), &command);
        let verified = self.anchors.verify(&leaf.chain, FIXED_NOW).unwrap();
        auth::authorize(&verified, &RevocationStore::new()).unwrap()
    }

    /// The final reply to a request.
    async fn ask(&self, exec: &Executor, cn: &str, command: Command) -> Payload {
        let mut out = exec.handle(ExecRequest {
            request: self.request(cn, command),
            input: None,
            peer: "test".into(),
        });
        let mut last = None;
        while let Some(frame) = tokio::time::timeout(GUARD, out.recv()).await.unwrap() {
            last = Some(frame.payload);
        }
        last.unwrap()
    }
}

fn create(memory: i64, cpu: i64, fail: FailBehaviour, args: &[&str]) -> Command {
    Command::Unikernel(UnikernelCmd::Create(UnikernelConfig {
        image: build_test_image(Target::Hvt, 2, &[]),
        memory,
        cpuids: BTreeSet::from([cpu]),
        fail_behaviour: fail,
        arguments: Some(args.iter().map(ToString::to_string).collect()),
        ..UnikernelConfig::default()
    }))
}

async fn next(events: &mut EventStream) -> Event {
    match tokio::time::timeout(GUARD, events.recv()).await.unwrap() {
        Some(Received::Event(event)) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// The highest CPU this process may use (so that pinning is visible: not always 0).
fn last_cpu() -> u32 {
    *available_cpus().unwrap().iter().next_back().unwrap()
}

#[tokio::test]
async fn a_unikernel_runs_in_its_cgroup_with_its_limits_until_destroyed() {
    let cgroups = match host_cgroups() {
        Ok(c) => c,
        Err(reason) => {
            eprintln!("SKIPPED cgroup test: {reason}");
            return;
        }
    };
    let _cleanup = Cleanup(cgroups.parent_dirs());
    let fx = Fixture::new();
    let exec = fx.start(cgroups.clone()).await;
    let mut events = exec.events();
    let cpu = last_cpu();
    assert_eq!(
        fx.ask(
            &exec,
            "web",
            create(64, i64::from(cpu), FailBehaviour::Quit, &["--wait"])
        )
        .await,
        Payload::success_string("created unikernel")
    );
    let pid = match next(&mut events).await {
        Event::Started { pid, .. } => pid.get(),
        other => panic!("{other:?}"),
    };
    let name = Name::parse(":web").unwrap();
    let group = exec.cgroup(&name).expect("the unikernel runs in a cgroup");
    assert_eq!(group.label(), format!("{}/:web", parent_label(&cgroups)));
    let limit = (64 + TENDER_OVERHEAD_MB) * MIB;
    assert_eq!(group.memory_limit_bytes(), Some(limit));
    for dir in group.dirs() {
        assert!(dir.is_dir(), "{}", dir.display());
        assert_eq!(procs(dir), [pid], "{}", dir.display());
        assert!(
            cgroups
                .parent_dirs()
                .iter()
                .any(|p| dir.parent() == Some(p)),
            "{}",
            dir.display()
        );
    }
    let memory = group.dir_of(Controller::Memory).unwrap();
    match cgroups.version().unwrap() {
        petrel::executor::cgroup::CgroupVersion::V1 => {
            assert_eq!(
                read(&memory.join("memory.limit_in_bytes")),
                limit.to_string()
            );
            if memory.join("memory.memsw.limit_in_bytes").exists() {
                assert_eq!(
                    read(&memory.join("memory.memsw.limit_in_bytes")),
                    limit.to_string()
                );
            }
            let cpuset = group.dir_of(Controller::Cpuset).unwrap();
            assert_eq!(read(&cpuset.join("cpuset.cpus")), cpu.to_string());
            let parent_mems = read(&cpuset.parent().unwrap().join("cpuset.mems"));
            assert_eq!(read(&cpuset.join("cpuset.mems")), parent_mems);
        }
        petrel::executor::cgroup::CgroupVersion::V2 => {
            assert_eq!(read(&memory.join("memory.max")), limit.to_string());
            if let Some(cpuset) = group.dir_of(Controller::Cpuset) {
                assert_eq!(read(&cpuset.join("cpuset.cpus")), cpu.to_string());
            }
        }
    }
    if let Some(pids) = group.dir_of(Controller::Pids) {
        assert_eq!(read(&pids.join("pids.max")), PIDS_MAX.to_string());
    }

    // Its statistics carry the cgroup's figures.
    let mut out = exec.handle(ExecRequest {
        request: fx.request(".", Command::Statistics(StatsCmd::Subscribe)),
        input: None,
        peer: "test".into(),
    });
    let reply = tokio::time::timeout(GUARD, out.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.payload, Payload::success_string("subscribed"));
    let frame: OutputFrame = tokio::time::timeout(GUARD, out.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(frame.name, name);
    let Payload::Data(Data::Statistics(stats)) = frame.payload else {
        panic!("{frame:?}");
    };
    let vmm: Vec<String> = stats
        .vmm_stats
        .unwrap()
        .iter()
        .map(|s| s.key.clone())
        .collect();
    let mut expected = vec![
        "rss_bytes",
        "cgroup_memory_bytes",
        "cgroup_memory_limit_bytes",
    ];
    if cgroups.controllers().contains(&Controller::Cpuacct)
        || cgroups.version() == Some(petrel::executor::cgroup::CgroupVersion::V2)
    {
        expected.push("cgroup_cpu_usec");
    }
    assert_eq!(vmm, expected);
    drop(out);

    assert_eq!(
        fx.ask(&exec, "web", Command::Unikernel(UnikernelCmd::Destroy))
            .await,
        Payload::success_string("destroyed unikernel")
    );
    for dir in group.dirs() {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    assert_eq!(exec.cgroup(&name), None);
    exec.shutdown().await;
    for parent in cgroups.parent_dirs() {
        assert!(!parent.exists(), "{} is left", parent.display());
    }
}

fn parent_label(cgroups: &Cgroups) -> String {
    let dir = &cgroups.parent_dirs()[0];
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

#[tokio::test]
async fn a_tender_over_its_memory_limit_is_killed_by_the_kernel_and_not_restarted() {
    let cgroups = match host_cgroups() {
        Ok(c) => c,
        Err(reason) => {
            eprintln!("SKIPPED cgroup test: {reason}");
            return;
        }
    };
    if !cgroups.controllers().contains(&Controller::Memory) {
        eprintln!("SKIPPED OOM test: no memory controller");
        return;
    }
    let _cleanup = Cleanup(cgroups.parent_dirs());
    let fx = Fixture::new();
    let exec = fx.start(cgroups.clone()).await;
    let mut events = exec.events();
    // 32 MB of memory: a limit of 64 MB; the tender touches 256 MB. Restart on any exit
    // code: only the signal keeps it from being restarted.
    assert_eq!(
        fx.ask(
            &exec,
            "hog",
            create(
                32,
                0,
                FailBehaviour::Restart(BTreeSet::new()),
                &["--alloc-mb=256", "--wait"]
            )
        )
        .await,
        Payload::success_string("created unikernel")
    );
    assert!(matches!(next(&mut events).await, Event::Started { .. }));
    let name = Name::parse(":hog").unwrap();
    assert_eq!(
        next(&mut events).await,
        Event::OomKilled {
            name: name.clone(),
            limit_mb: 32 + TENDER_OVERHEAD_MB,
        }
    );
    // The restart decision was taken before the event: nothing is pending.
    assert_eq!(exec.running(), 0);
    assert_eq!(
        fx.ask(&exec, "hog", Command::Unikernel(UnikernelCmd::Destroy))
            .await,
        Payload::failure("destroy: not found")
    );
    assert_eq!(events.try_recv(), None, "no restart was scheduled");
    // The state file is rewritten right after the event.
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let state =
            codec::decode_state(&fs::read(fx.dir.path().join("state/state")).unwrap()).unwrap();
        if state.unikernels.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{state:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for parent in cgroups.parent_dirs() {
        let left: Vec<_> = fs::read_dir(&parent)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
    exec.shutdown().await;
}

#[tokio::test]
async fn leftover_groups_are_removed_at_start_up_and_busy_ones_kept() {
    let cgroups = match host_cgroups() {
        Ok(c) => c,
        Err(reason) => {
            eprintln!("SKIPPED cgroup test: {reason}");
            return;
        }
    };
    let _cleanup = Cleanup(cgroups.parent_dirs());
    let limits = GroupLimits::for_unikernel(32, &BTreeSet::from([0]));
    let ghost = cgroups
        .create(&Name::parse(":ghost").unwrap(), &limits)
        .unwrap()
        .unwrap();
    let busy = cgroups
        .create(&Name::parse(":busy").unwrap(), &limits)
        .unwrap()
        .unwrap();
    let command = TenderCommand {
        tender: STAND_IN.into(),
        memory_mb: 32,
        nets: vec![],
        blocks: vec![],
        image: STAND_IN.into(),
        name_arg: None,
        argv: vec!["--wait".into()],
        cpus: BTreeSet::new(),
    };
    let process = spawn_tender_in(&command, Some(&busy.join())).unwrap();
    assert_eq!(busy.processes(), [process.pid.get()]);
    // A name that exists with a process in it is not taken over.
    assert_eq!(
        cgroups
            .create(&Name::parse(":busy").unwrap(), &limits)
            .unwrap_err()
            .to_string(),
        format!(
            "cgroup {}/:busy is in use by other processes (another petrel-endpoint with the \
             same --cgroup-parent?)",
            parent_label(&cgroups)
        )
    );

    let fx = Fixture::new();
    let exec = fx.start(cgroups.clone()).await;
    for dir in ghost.dirs() {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    for dir in busy.dirs() {
        assert!(dir.exists(), "{} was removed", dir.display());
    }
    // SAFETY: killing the process this test started.
    unsafe { libc::kill(i32::try_from(process.pid.get()).unwrap(), libc::SIGKILL) };
    let _ = tokio::time::timeout(GUARD, process.exit).await.unwrap();
    busy.remove().await.unwrap();
    for dir in busy.dirs() {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    exec.shutdown().await;
}

#[tokio::test]
async fn a_v2_group_is_joined_before_exec_and_removed() {
    if !root() {
        eprintln!("SKIPPED cgroup v2 test: not root");
        return;
    }
    let mounts = parse_mounts(&fs::read_to_string(MOUNTS).unwrap());
    let Some(root) = mounts.v2 else {
        eprintln!("SKIPPED cgroup v2 test: no cgroup2 mount");
        return;
    };
    // Whatever controllers it offers (on a hybrid host: none), the mechanics are the same.
    let cgroups = Cgroups::setup_with(Hierarchy::V2 { root }, unique_parent()).unwrap();
    let _cleanup = Cleanup(cgroups.parent_dirs());
    let group = cgroups
        .create(
            &Name::parse("a:web").unwrap(),
            &GroupLimits::for_unikernel(32, &BTreeSet::new()),
        )
        .unwrap()
        .unwrap();
    assert_eq!(group.dirs().len(), 1);
    let command = TenderCommand {
        tender: STAND_IN.into(),
        memory_mb: 32,
        nets: vec![],
        blocks: vec![],
        image: STAND_IN.into(),
        name_arg: None,
        argv: vec!["--wait".into()],
        cpus: BTreeSet::new(),
    };
    let process = spawn_tender_in(&command, Some(&group.join())).unwrap();
    assert_eq!(group.processes(), [process.pid.get()]);
    let own = fs::read_to_string(format!("/proc/{}/cgroup", process.pid)).unwrap();
    let v2_line = own
        .lines()
        .find(|l| l.starts_with("0::"))
        .unwrap()
        .to_owned();
    assert_eq!(v2_line, format!("0::/{}/a:web", parent_label(&cgroups)));
    assert!(group.usage_files().read().cpu_ns.is_some());
    // SAFETY: killing the process this test started.
    unsafe { libc::kill(i32::try_from(process.pid.get()).unwrap(), libc::SIGKILL) };
    let _ = tokio::time::timeout(GUARD, process.exit).await.unwrap();
    group.remove().await.unwrap();
    assert!(!group.dirs()[0].exists());
    cgroups.release();
    for parent in cgroups.parent_dirs() {
        assert!(!parent.exists(), "{} is left", parent.display());
    }
}
