//! The executor with the real `HostNetwork` and the real stand-in tender opening its tap,
//! inside a private network namespace (and mount namespace with its own sysfs), so the
//! host's interfaces are never touched. Needs root and `/dev/net/tun`; skipped with a
//! message otherwise.

mod common;

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use petrel::auth;
use petrel::codec::{
    Command, ConsoleCmd, Data, NetDeviceSpec, Payload, SinceCount, UnikernelCmd, UnikernelConfig,
};
use petrel::executor::api::{ExecRequest, Handler};
use petrel::executor::mac::Mac;
use petrel::executor::manifest::{Device, Target, build_test_image};
use petrel::executor::net::HostNetwork;
use petrel::executor::tender::ProcessTender;
use petrel::executor::{Executor, ExecutorConfig, HostOverrides, OnRevoke};
use petrel::limits::Limits;
use petrel::name::Name;
use petrel::revocation::RevocationStore;
use petrel::verify::TrustAnchors;
use serde_json::Value;

use common::netns::{in_netns, skip_reason};
use common::pki::{Ca, FIXED_NOW};

const STAND_IN: &str = env!("CARGO_BIN_EXE_petrel-stand-in-tender");

/// Guard against a hanging test (not a timing assertion).
const GUARD: Duration = Duration::from_secs(60);

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

fn exists(iface: &str) -> bool {
    Path::new(&format!("/sys/class/net/{iface}")).exists()
}

fn master(iface: &str) -> String {
    std::fs::read_link(format!("/sys/class/net/{iface}/master"))
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn tap_on_a_real_bridge_for_a_unikernel() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED executor network test: {reason}");
        return;
    }
    in_netns(|| {
        add_bridge("br0");
        let dir = tempfile::tempdir().unwrap();
        let launches = dir.path().join("launches");
        std::fs::create_dir(&launches).unwrap();
        // The stand-in opens its tap like solo5-hvt does (TUNSETIFF on the existing,
        // up tap); it fails if the tap is missing or down.
        let tender = dir.path().join("solo5-hvt");
        std::fs::write(
            &tender,
            format!(
                "#!/bin/sh\nexport PETREL_STAND_IN_RECORD_DIR='{}'\nexec '{STAND_IN}' \"$@\"\n",
                launches.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&tender, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = ExecutorConfig {
            state_dir: dir.path().join("state"),
            tender,
            limits: Limits::default(),
            host: HostOverrides {
                cpuids: None,
                memory: Some(4096),
                block: Some(1000),
                // Discovered from this namespace's sysfs: just br0.
                bridges: None,
            },
            on_revoke: OnRevoke::Destroy,
        };
        let root = Ca::root("root");
        let anchors = TrustAnchors::from_pem(root.cert_pem().as_bytes()).unwrap();
        let ask = |exec: &Executor, command: Command| {
            let leaf = root.leaf(Some("web"), &command);
            let verified = anchors.verify(&leaf.chain, FIXED_NOW).unwrap();
            let request = auth::authorize(&verified, &RevocationStore::new()).unwrap();
            let mut out = exec.handle(ExecRequest {
                request,
                input: None,
                peer: "netns".into(),
            });
            async move {
                let frame = tokio::time::timeout(GUARD, out.recv())
                    .await
                    .unwrap()
                    .unwrap();
                frame.payload
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let exec = Executor::start(
                config,
                Arc::new(HostNetwork::new()),
                Arc::new(ProcessTender),
            )
            .await
            .unwrap();
            let unikernel = UnikernelConfig {
                image: build_test_image(Target::Hvt, 2, &[Device::net("service")]),
                bridges: vec![NetDeviceSpec {
                    bridge: Some("br0".into()),
                    ..NetDeviceSpec::named("service".into())
                }],
                arguments: Some(vec!["--print=up".into(), "--wait".into()]),
                cpuids: BTreeSet::from([0]),
                ..UnikernelConfig::default()
            };
            assert_eq!(
                ask(&exec, Command::Unikernel(UnikernelCmd::Create(unikernel))).await,
                Payload::success_string("created unikernel")
            );
            assert!(exists("vmmtap0"));
            assert_eq!(master("vmmtap0"), "br0");

            // The stand-in got the tap and the deterministic MAC, and opened the tap.
            let deadline = tokio::time::Instant::now() + GUARD;
            let launch: Value = loop {
                let found = std::fs::read_dir(&launches)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|e| e == "json"))
                    .map(|p| serde_json::from_slice::<Value>(&std::fs::read(p).unwrap()).unwrap())
                    .find(|v| v["argv"].as_array().unwrap().iter().any(|a| a == "--wait"));
                if let Some(launch) = found {
                    break launch;
                }
                assert!(tokio::time::Instant::now() < deadline, "no launch");
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            let mac = Mac::deterministic("service", &Name::parse(":web").unwrap());
            let argv: Vec<&str> = launch["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            assert_eq!(
                argv[1..4],
                [
                    "--mem=32",
                    "--net:service=vmmtap0",
                    &format!("--net-mac:service={mac}")
                ]
            );
            // The stand-in prints only after it opened its tap (a failed attach exits 1
            // at once): its console line proves the tap is usable.
            let command = Command::Console(ConsoleCmd::Subscribe(SinceCount::Count(10)));
            let leaf = root.leaf(Some("web"), &command);
            let verified = anchors.verify(&leaf.chain, FIXED_NOW).unwrap();
            let mut console = exec.handle(ExecRequest {
                request: auth::authorize(&verified, &RevocationStore::new()).unwrap(),
                input: None,
                peer: "netns".into(),
            });
            loop {
                let frame = tokio::time::timeout(GUARD, console.recv())
                    .await
                    .unwrap()
                    .unwrap();
                match frame.payload {
                    Payload::Data(Data::Console { line, .. }) if line == "up" => break,
                    Payload::Data(_) | Payload::Success(_) => {}
                    other => panic!("{other:?}"),
                }
            }
            drop(console);
            assert_eq!(
                ask(&exec, Command::Unikernel(UnikernelCmd::Destroy)).await,
                Payload::success_string("destroyed unikernel")
            );
            assert!(!exists("vmmtap0"));
            assert!(exists("br0"));
            exec.shutdown().await;
        });
    });
}
