//! kill -9 of a process hosting the executor, at random points of create, force-create and
//! destroy, many times: after each crash a new executor starts on the same state
//! directory and the state file parses, every unikernel whose create was reported runs,
//! every one whose destroy was reported does not, none runs twice, and no temporary
//! file, run record, image or usage is left over.
//!
//! The hosting process is this test binary itself, re-executed to run the ignored test
//! `crash_child` (it prints `start <op> <name>` before and `ok <op> <name>` after each
//! request). Taps are not part of this test: the fake network lives in the killed
//! process; tap clean-up after a crash is tested in `executor.rs`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::time::Duration;

use petrel::auth;
use petrel::codec::{Command, Payload, Success, UnikernelCmd, UnikernelConfig};
use petrel::executor::api::{ExecRequest, Handler};
use petrel::executor::manifest::{Target, build_test_image};
use petrel::executor::net::FakeNetwork;
use petrel::executor::tender::ProcessTender;
use petrel::executor::{Executor, ExecutorConfig, HostOverrides, OnRevoke};
use petrel::limits::Limits;
use petrel::name::Path as NamePath;
use petrel::revocation::RevocationStore;
use petrel::verify::TrustAnchors;
use rand::{Rng, SeedableRng};

use common::pki::{Ca, FIXED_NOW};

const STAND_IN: &str = env!("CARGO_BIN_EXE_petrel-stand-in-tender");

/// Where the child finds its directory (state, tender).
const CHILD_DIR: &str = "PETREL_CRASH_CHILD_DIR";

/// Crashes per run.
const ROUNDS: usize = 12;

/// Names the child works on.
const NAMES: usize = 4;

/// Guard against a hanging test (not a timing assertion).
const GUARD: Duration = Duration::from_secs(60);

fn config(dir: &Path) -> ExecutorConfig {
    ExecutorConfig {
        state_dir: dir.join("state"),
        tender: dir.join("solo5-hvt"),
        limits: Limits::default(),
        host: HostOverrides {
            cpuids: None,
            memory: Some(4096),
            block: Some(1000),
            bridges: None,
        },
        on_revoke: OnRevoke::Destroy,
    }
}

async fn ask(
    exec: &Executor,
    root: &Ca,
    anchors: &TrustAnchors,
    cn: &str,
    command: Command,
) -> Payload {
    let leaf = root.leaf(Some(cn), &command);
    let verified = anchors.verify(&leaf.chain, FIXED_NOW).unwrap();
    let request = auth::authorize(&verified, &RevocationStore::new()).unwrap();
    let mut out = exec.handle(ExecRequest {
        request,
        input: None,
        peer: "crash".into(),
    });
    tokio::time::timeout(GUARD, out.recv())
        .await
        .unwrap()
        .unwrap()
        .payload
}

fn running(payload: Payload) -> BTreeSet<String> {
    match payload {
        Payload::Success(Success::UnikernelInfo(entries)) => {
            entries.into_iter().map(|e| e.name.text()).collect()
        }
        other => panic!("{other:?}"),
    }
}

/// The child: an executor on the given directory doing create / force-create / destroy
/// until it is killed. Only meaningful when started by `kill_9_at_random_points`.
#[tokio::test]
#[ignore = "run by kill_9_at_random_points in a child process"]
async fn crash_child() {
    let dir = PathBuf::from(std::env::var_os(CHILD_DIR).expect("run by the crash test"));
    let exec = Executor::start(
        config(&dir),
        Arc::new(FakeNetwork::with_bridges(&["service"])),
        Arc::new(ProcessTender),
    )
    .await
    .unwrap();
    let root = Ca::root("root");
    let anchors = TrustAnchors::from_pem(root.cert_pem().as_bytes()).unwrap();
    let image = build_test_image(Target::Hvt, 2, &[]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(std::process::id()));
    let mut up = running(
        ask(
            &exec,
            &root,
            &anchors,
            ".",
            Command::Unikernel(UnikernelCmd::Info),
        )
        .await,
    );
    let mut stdout = std::io::stdout().lock();
    loop {
        let name = format!("u{}", rng.gen_range(0..NAMES));
        let full = format!(":{name}");
        let config = UnikernelConfig {
            image: image.clone(),
            arguments: Some(vec![
                format!("--print={}", rng.r#gen::<u32>()),
                "--wait".into(),
            ]),
            ..UnikernelConfig::default()
        };
        let (op, command) = if !up.contains(&full) {
            ("create", Command::Unikernel(UnikernelCmd::Create(config)))
        } else if rng.gen_bool(0.5) {
            (
                "force",
                Command::Unikernel(UnikernelCmd::ForceCreate(config)),
            )
        } else {
            ("destroy", Command::Unikernel(UnikernelCmd::Destroy))
        };
        writeln!(stdout, "start {op} {full}").unwrap();
        stdout.flush().unwrap();
        let reply = ask(&exec, &root, &anchors, &name, command).await;
        match reply {
            Payload::Success(_) => {
                if op == "destroy" {
                    up.remove(&full);
                } else {
                    up.insert(full.clone());
                }
                writeln!(stdout, "ok {op} {full}").unwrap();
            }
            other => writeln!(stdout, "fail {op} {full} {other:?}").unwrap(),
        }
        stdout.flush().unwrap();
    }
}

/// What the last lines said about a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Running,
    Gone,
    /// A request was in flight (or failed): either is right.
    Either,
}

/// Processes whose command line names an image under `images`, by image.
fn tenders_by_image(images: &Path) -> BTreeMap<String, usize> {
    let prefix = images.display().to_string();
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        {
            continue;
        }
        for arg in cmdline.split(|&b| b == 0) {
            let arg = String::from_utf8_lossy(arg);
            if arg.starts_with(&prefix) {
                *found.entry(arg.into_owned()).or_insert(0) += 1;
            }
        }
    }
    found
}

fn files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn kill_9_at_random_points() {
    let dir = tempfile::tempdir().unwrap();
    let tender = dir.path().join("solo5-hvt");
    std::fs::write(&tender, format!("#!/bin/sh\nexec '{STAND_IN}' \"$@\"\n")).unwrap();
    std::fs::set_permissions(&tender, std::fs::Permissions::from_mode(0o755)).unwrap();
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let root = Ca::root("root");
    let anchors = TrustAnchors::from_pem(root.cert_pem().as_bytes()).unwrap();
    let images = dir.path().join("state/images");
    let mut expected: BTreeMap<String, Expect> = BTreeMap::new();
    let mut confirmed = 0;

    for round in 0..ROUNDS {
        let mut child = Process::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Let it confirm a few requests, then kill it somewhere inside the next ones.
        let confirmations = rng.gen_range(1..=6);
        let mut seen = Vec::new();
        while seen
            .iter()
            .filter(|l: &&String| l.starts_with("ok "))
            .count()
            < confirmations
        {
            let line = lines.next().expect("the child runs").unwrap();
            seen.push(line);
        }
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..20_000)));
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGKILL) };
        child.wait().unwrap();
        seen.extend(lines.map_while(Result::ok));
        eprintln!("round {round}: killed after {:?}", seen.last());
        // (The test harness prints its own lines too.)
        for line in &seen {
            let words: Vec<&str> = line.split(' ').collect();
            if words.len() < 3 || !["start", "ok", "fail"].contains(&words[0]) {
                continue;
            }
            let (kind, op, name) = (words[0], words[1], words[2].to_owned());
            let expect = match (kind, op) {
                ("ok", "destroy") => Expect::Gone,
                ("ok", _) => Expect::Running,
                _ => Expect::Either,
            };
            if kind == "ok" {
                confirmed += 1;
            }
            expected.insert(name, expect);
        }

        // A new executor on the same directory.
        let exec = Executor::start(
            config(dir.path()),
            Arc::new(FakeNetwork::with_bridges(&["service"])),
            Arc::new(ProcessTender),
        )
        .await
        .unwrap_or_else(|e| panic!("round {round}: start after kill -9: {e}"));
        let up = running(
            ask(
                &exec,
                &root,
                &anchors,
                ".",
                Command::Unikernel(UnikernelCmd::Info),
            )
            .await,
        );
        for (name, expect) in &expected {
            match expect {
                Expect::Running => assert!(up.contains(name), "round {round}: {name} lost"),
                Expect::Gone => assert!(!up.contains(name), "round {round}: {name} back"),
                Expect::Either => {}
            }
        }
        // Every running unikernel has exactly one tender; no other tender is left.
        let deadline = tokio::time::Instant::now() + GUARD;
        loop {
            let tenders = tenders_by_image(&images);
            let want: BTreeMap<String, usize> = up
                .iter()
                .map(|name| (images.join(format!("{name}.img")).display().to_string(), 1))
                .collect();
            if tenders == want {
                break;
            }
            // The killed process's tenders die with it (PR_SET_PDEATHSIG), asynchronously.
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: tenders {tenders:?}, running {up:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let state = dir.path().join("state");
        assert_eq!(files(&state.join("tmp")), BTreeSet::new(), "round {round}");
        let want_images: BTreeSet<String> = up.iter().map(|n| format!("{n}.img")).collect();
        assert_eq!(files(&state.join("images")), want_images, "round {round}");
        let want_runs: BTreeSet<String> = up.iter().map(|n| format!("{n}.json")).collect();
        assert_eq!(files(&state.join("run")), want_runs, "round {round}");
        assert!(
            files(&state).iter().all(|f| !f.ends_with(".tmp")),
            "round {round}: {:?}",
            files(&state)
        );
        let usage = exec.usage(&NamePath::root());
        assert_eq!(
            usage.unikernels,
            i64::try_from(up.len()).unwrap(),
            "round {round}"
        );
        assert_eq!(usage.memory, 32 * usage.unikernels, "round {round}");
        exec.shutdown().await;
        // What runs now is the truth the next round starts from.
        expected = (0..NAMES)
            .map(|i| format!(":u{i}"))
            .map(|name| {
                let expect = if up.contains(&name) {
                    Expect::Running
                } else {
                    Expect::Gone
                };
                (name, expect)
            })
            .collect();
    }
    assert!(confirmed >= ROUNDS, "{confirmed} requests confirmed");
}
