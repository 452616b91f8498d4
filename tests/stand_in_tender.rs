//! Spawning the stand-in tender through `ProcessTender`: the exact command line, CPU
//! pinning, the console pipe, exit classification, signals, and the `--version` check.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use petrel::executor::console_lines::LineSplitter;
use petrel::executor::mac::Mac;
use petrel::executor::manifest::{Device, Target, build_test_image};
use petrel::executor::net::InterfaceName;
use petrel::executor::tender::{
    BlockArg, ExitReason, NetArg, ProcessTender, StopSignal, Tender, TenderCommand, TenderError,
    TenderProcess, available_cpus, should_restart, tender_abi_version,
};
use petrel::name::Name;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::unix::pipe::Receiver;

const STAND_IN: &str = env!("CARGO_BIN_EXE_petrel-stand-in-tender");

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let setup = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(setup.records()).unwrap();
        std::fs::create_dir(setup.path("block")).unwrap();
        setup
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn records(&self) -> PathBuf {
        self.path("records")
    }

    /// A script that sets the stand-in's environment and execs it (same pid), so the
    /// test process's own environment stays untouched.
    fn wrapper(&self, name: &str, env: &[(&str, &str)]) -> PathBuf {
        let mut script = String::from("#!/bin/sh\n");
        for (key, value) in env {
            script.push_str(&format!("export {key}='{value}'\n"));
        }
        script.push_str(&format!("exec '{STAND_IN}' \"$@\"\n"));
        self.script(name, &script)
    }

    fn script(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// The recording stand-in, taps skipped.
    fn tender(&self) -> PathBuf {
        let records = self.records();
        self.wrapper(
            "solo5-hvt",
            &[
                ("PETREL_STAND_IN_RECORD_DIR", records.to_str().unwrap()),
                ("PETREL_STAND_IN_SKIP_TAPS", "1"),
            ],
        )
    }

    fn image(&self, devices: &[Device]) -> PathBuf {
        let path = self.path("foo:web.img");
        std::fs::write(&path, build_test_image(Target::Hvt, 2, devices)).unwrap();
        path
    }

    fn block(&self, name: &str) -> PathBuf {
        let path = self.path("block").join(name);
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        path
    }

    fn record(&self, pid: u32) -> Value {
        let text = std::fs::read_to_string(self.records().join(format!("{pid}.json"))).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn record_count(&self) -> usize {
        std::fs::read_dir(self.records()).unwrap().count()
    }
}

fn command(tender: PathBuf, image: PathBuf) -> TenderCommand {
    TenderCommand {
        tender,
        memory_mb: 64,
        nets: vec![],
        blocks: vec![],
        image,
        name_arg: None,
        argv: vec![],
        cpus: BTreeSet::new(),
    }
}

/// Spawns, retrying while the freshly written wrapper script is still open for writing
/// in a child forked by another test thread (ETXTBSY).
fn spawn(command: &TenderCommand) -> Result<TenderProcess, TenderError> {
    let mut attempts = 0;
    loop {
        match ProcessTender.spawn(command) {
            Err(TenderError::Exec { source, .. })
                if source.raw_os_error() == Some(libc::ETXTBSY) && attempts < 50 =>
            {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

async fn abi_check(tender: &Path, expected: u32) -> Result<(), TenderError> {
    let mut attempts = 0;
    loop {
        match tender_abi_version(tender, expected).await {
            Err(TenderError::Exec { source, .. })
                if source.raw_os_error() == Some(libc::ETXTBSY) && attempts < 50 =>
            {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

async fn read_all(console: OwnedFd) -> String {
    let mut receiver = Receiver::from_owned_fd(console).unwrap();
    let mut out = Vec::new();
    receiver.read_to_end(&mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn spawn_passes_exact_argv_pins_cpu_and_captures_console() {
    let setup = Setup::new();
    let image = setup.image(&[Device::net("service"), Device::block("storage")]);
    let block = setup.block("foo:data");
    let cpu = *available_cpus().unwrap().iter().next_back().unwrap();
    let name = Name::parse("foo:web").unwrap();
    let mut cmd = command(setup.tender(), image.clone());
    cmd.nets = vec![NetArg {
        netif: "service".into(),
        tap: InterfaceName::parse("vmmtap0").unwrap(),
        mac: Mac::deterministic("service", &name),
    }];
    cmd.blocks = vec![BlockArg {
        name: "storage".into(),
        path: block.clone(),
        sector_size: Some(4096),
    }];
    cmd.name_arg = Some("web".into());
    cmd.argv = vec![
        "--print=hello".into(),
        "--print=world".into(),
        "--exit=3".into(),
    ];
    cmd.cpus = [cpu].into();

    let process = spawn(&cmd).unwrap();
    let console = read_all(process.console).await;
    assert_eq!(process.exit.await, ExitReason::Exited(3));
    assert_eq!(
        console,
        "Solo5: Bindings version v0.9.0-petrel-stand-in\nhello\nworld\n"
    );

    let record = setup.record(process.pid.get());
    let mut expected = vec![STAND_IN.to_owned()];
    expected.extend([
        "--mem=64".to_owned(),
        "--net:service=vmmtap0".to_owned(),
        format!("--net-mac:service={}", Mac::deterministic("service", &name)),
        format!("--block:storage={}", block.display()),
        "--block-sector-size:storage=4096".to_owned(),
        "--".to_owned(),
        image.display().to_string(),
        "--name=web".to_owned(),
        "--print=hello".to_owned(),
        "--print=world".to_owned(),
        "--exit=3".to_owned(),
    ]);
    assert_eq!(strings(&record["argv"]), expected);
    assert_eq!(record["affinity"], serde_json::json!([cpu]));
    assert_eq!(record["pid"], serde_json::json!(process.pid.get()));
    assert_eq!(record["ppid"], serde_json::json!(std::process::id()));
    // Its own process group.
    assert_eq!(record["pgid"], serde_json::json!(process.pid.get()));
    assert_eq!(record["stdin"], "/dev/null");
    let stdout = record["stdout"].as_str().unwrap();
    assert!(stdout.starts_with("pipe:["), "{stdout}");
    assert_eq!(record["stderr"], stdout, "stdout and stderr are one pipe");
    assert_eq!(
        record["cwd"],
        serde_json::json!(std::env::current_dir().unwrap())
    );
}

#[tokio::test]
async fn pinning_to_every_available_cpu() {
    let setup = Setup::new();
    let cpus = available_cpus().unwrap();
    let mut cmd = command(setup.tender(), setup.image(&[]));
    cmd.cpus = cpus.clone();
    let process = spawn(&cmd).unwrap();
    read_all(process.console).await;
    assert_eq!(process.exit.await, ExitReason::Exited(0));
    let record = setup.record(process.pid.get());
    assert_eq!(
        record["affinity"],
        serde_json::json!(cpus.into_iter().collect::<Vec<_>>())
    );
}

#[tokio::test]
async fn unavailable_cpu_is_refused_before_spawning() {
    let setup = Setup::new();
    let mut cmd = command(setup.tender(), setup.image(&[]));
    cmd.cpus = [0, 1024].into();
    let err = spawn(&cmd).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("CPU 1024 is not available on this host (available: "),
        "{err}"
    );
    assert_eq!(setup.record_count(), 0);
}

#[tokio::test]
async fn exec_failure_is_its_own_error() {
    let cmd = command("/nonexistent/solo5-hvt".into(), "/nonexistent.img".into());
    let err = spawn(&cmd).unwrap_err();
    assert!(matches!(err, TenderError::Exec { .. }));
    assert_eq!(
        err.to_string(),
        "could not execute tender /nonexistent/solo5-hvt: No such file or directory (os error 2)"
    );
}

#[tokio::test]
async fn sigterm_ends_it_like_solo5() {
    let setup = Setup::new();
    let mut cmd = command(setup.tender(), setup.image(&[]));
    cmd.argv = vec!["--print=up".into(), "--wait".into()];
    let process = spawn(&cmd).unwrap();
    let mut lines = BufReader::new(Receiver::from_owned_fd(process.console).unwrap()).lines();
    assert_eq!(
        lines.next_line().await.unwrap().unwrap(),
        "Solo5: Bindings version v0.9.0-petrel-stand-in"
    );
    assert_eq!(lines.next_line().await.unwrap().unwrap(), "up");
    ProcessTender.signal(process.pid, StopSignal::Term);
    assert_eq!(
        lines.next_line().await.unwrap().unwrap(),
        "petrel-stand-in-tender: Exiting on signal 15"
    );
    assert_eq!(lines.next_line().await.unwrap(), None);
    let reason = process.exit.await;
    assert_eq!(reason, ExitReason::Exited(1));
    assert!(!should_restart(reason, Some(&BTreeSet::new())));
}

#[tokio::test]
async fn sigkill_after_ignored_sigterm() {
    let setup = Setup::new();
    let mut cmd = command(setup.tender(), setup.image(&[]));
    cmd.argv = vec!["--ignore-sigterm".into(), "--wait".into()];
    let process = spawn(&cmd).unwrap();
    let mut lines = BufReader::new(Receiver::from_owned_fd(process.console).unwrap()).lines();
    // The start line is printed after the signal dispositions are set.
    lines.next_line().await.unwrap().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", process.pid)).unwrap();
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:\t"))
        .unwrap();
    let mask = u64::from_str_radix(ignored, 16).unwrap();
    assert_ne!(mask & (1 << (libc::SIGTERM - 1)), 0, "SIGTERM ignored");
    ProcessTender.signal(process.pid, StopSignal::Term);
    ProcessTender.signal(process.pid, StopSignal::Kill);
    assert_eq!(process.exit.await, ExitReason::Signaled(libc::SIGKILL));
}

#[tokio::test]
async fn unikernel_refusing_name_exits_64() {
    let setup = Setup::new();
    let mut cmd = command(setup.tender(), setup.image(&[]));
    cmd.name_arg = Some("web".into());
    cmd.argv = vec!["--refuse-name".into()];
    let process = spawn(&cmd).unwrap();
    let console = read_all(process.console).await;
    let reason = process.exit.await;
    assert_eq!(reason, ExitReason::Exited(64));
    assert_eq!(
        console,
        "stand-in unikernel: unknown argument '--name=web'\n"
    );
    assert!(!should_restart(reason, Some(&BTreeSet::new())));
    // Without --name it runs.
    cmd.name_arg = None;
    let process = spawn(&cmd).unwrap();
    read_all(process.console).await;
    assert_eq!(process.exit.await, ExitReason::Exited(0));
}

#[tokio::test]
async fn manifest_mismatch_fails_like_solo5() {
    let setup = Setup::new();
    let cmd = command(
        setup.tender(),
        setup.image(&[Device::net("service"), Device::block("storage")]),
    );
    let process = spawn(&cmd).unwrap();
    let console = read_all(process.console).await;
    assert_eq!(process.exit.await, ExitReason::Exited(1));
    assert_eq!(
        console,
        "petrel-stand-in-tender: Device 'service' of type NET_BASIC declared but not attached.\n\
         petrel-stand-in-tender: Device 'storage' of type BLOCK_BASIC declared but not attached.\n\
         petrel-stand-in-tender: All declared devices must be attached. See --help for syntax.\n"
    );
}

#[tokio::test]
async fn lines_and_block_writes() {
    let setup = Setup::new();
    let block = setup.block("foo:data");
    let mut cmd = command(setup.tender(), setup.image(&[Device::block("storage")]));
    cmd.blocks = vec![BlockArg {
        name: "storage".into(),
        path: block.clone(),
        sector_size: None,
    }];
    cmd.argv = vec![
        "--lines=3".into(),
        "--write-block=storage:HELLO".into(),
        "--alloc-mb=4".into(),
        "--sleep-ms=1".into(),
        "--exit=0".into(),
    ];
    let process = spawn(&cmd).unwrap();
    let console = read_all(process.console).await;
    assert_eq!(process.exit.await, ExitReason::Exited(0));
    let mut splitter = LineSplitter::new();
    assert_eq!(
        splitter.push(console.as_bytes()),
        [
            "Solo5: Bindings version v0.9.0-petrel-stand-in",
            "line 1",
            "line 2",
            "line 3"
        ]
    );
    let content = std::fs::read(&block).unwrap();
    assert_eq!(&content[..6], b"HELLO\0");
    assert_eq!(content.len(), 1 << 20);
}

#[tokio::test]
async fn abi_version_good_wrong_and_missing() {
    let setup = Setup::new();
    abi_check(Path::new(STAND_IN), 2).await.unwrap();
    assert_eq!(
        abi_check(Path::new(STAND_IN), 3)
            .await
            .unwrap_err()
            .to_string(),
        "unexpected solo5 tender --version output, expected one line with 'ABI version 3', \
         got petrel-stand-in-tender tender, version v0.9.0-petrel-stand-in\nABI version 2"
    );
    let abi3 = setup.wrapper("abi3", &[("PETREL_STAND_IN_ABI_VERSION", "3")]);
    abi_check(&abi3, 3).await.unwrap();
    assert_eq!(
        abi_check(&abi3, 2).await.unwrap_err().to_string(),
        "unexpected solo5 tender --version output, expected one line with 'ABI version 2', \
         got petrel-stand-in-tender tender, version v0.9.0-petrel-stand-in\nABI version 3"
    );
    let chatty = setup.script(
        "chatty",
        "#!/bin/sh\necho hello\necho 'ABI version: 2' >&2\n",
    );
    assert_eq!(
        abi_check(&chatty, 2).await.unwrap_err().to_string(),
        "unexpected solo5 tender --version output, expected one line with 'ABI version 2', \
         got hello\nABI version: 2"
    );
    let err = abi_check(Path::new("/nonexistent/solo5-hvt"), 2)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "could not execute tender /nonexistent/solo5-hvt: No such file or directory (os error 2)"
    );
}

#[tokio::test]
async fn abi_version_output_is_bounded() {
    let setup = Setup::new();
    // Endless output without the line: read up to the bound, then the tender is killed.
    let endless = setup.script("endless", "#!/bin/sh\nwhile :; do echo noise; done\n");
    let err = abi_check(&endless, 2).await.unwrap_err();
    match err {
        TenderError::VersionOutput { expected, output } => {
            assert_eq!(expected, 2);
            // 682 lines "noise" and the first 4 octets of the next one.
            assert_eq!(output, format!("{}nois", "noise\n".repeat(682)));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn stand_in_rejects_unknown_tender_options_like_solo5() {
    let out = std::process::Command::new(STAND_IN)
        .args(["--mem=32", "--bogus", "--", "/nonexistent.img"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(
            "petrel-stand-in-tender: Invalid option: `--bogus'\n\
             usage: petrel-stand-in-tender [ CORE OPTIONS ] [ MODULE OPTIONS ] [ -- ] KERNEL [ ARGS ]\n"
        ),
        "{stderr}"
    );
    let out = std::process::Command::new(STAND_IN)
        .args(["--mem=0", "/nonexistent.img"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "petrel-stand-in-tender: Malformed argument to --mem\n"
    );
    let out = std::process::Command::new(STAND_IN)
        .args(["--mem=32", "--", "/nonexistent.img"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "petrel-stand-in-tender: /nonexistent.img: Could not open: No such file or directory (os error 2)\n"
    );
}
