//! `HostNetwork` against the real kernel, inside a private network namespace (and a
//! private mount namespace with its own sysfs) per test, so the host's interfaces are
//! never touched. Needs root and `/dev/net/tun`; skipped with a message otherwise.

mod common;

use std::ffi::CString;
use std::path::Path;

use petrel::executor::manifest::{Device, Target, build_test_image};
use petrel::executor::net::{HostNetwork, InterfaceName, Network, is_up};
use petrel::executor::tender::{ExitReason, ProcessTender, StopSignal, Tender, TenderCommand};
use tokio::io::AsyncBufReadExt;

use common::netns::in_netns;

const STAND_IN: &str = env!("CARGO_BIN_EXE_petrel-stand-in-tender");

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root");
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing");
    }
    None
}

macro_rules! require_root {
    () => {
        if let Some(reason) = skip_reason() {
            eprintln!("SKIPPED host network test: {reason}");
            return;
        }
    };
}

/// Creates a bridge with `SIOCBRADDBR` (the test may use any tool; this needs none).
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

fn name(s: &str) -> InterfaceName {
    InterfaceName::parse(s).unwrap()
}

fn sys(path: &str) -> String {
    std::fs::read_to_string(format!("/sys/class/net/{path}"))
        .unwrap()
        .trim()
        .to_owned()
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
fn tap_created_up_attached_and_removed() {
    require_root!();
    in_netns(|| {
        add_bridge("br0");
        let net = HostNetwork::new();
        net.check_bridge(&name("br0")).unwrap();
        assert_eq!(net.taps().unwrap(), Vec::<InterfaceName>::new());

        let tap = net.create_tap(&name("br0")).unwrap();
        assert_eq!(tap, name("vmmtap0"));
        assert!(exists("vmmtap0"));
        // IFF_TAP | IFF_NO_PI | IFF_PERSIST.
        assert_eq!(sys("vmmtap0/tun_flags"), "0x1802");
        let flags = u32::from_str_radix(sys("vmmtap0/flags").trim_start_matches("0x"), 16).unwrap();
        assert_ne!(flags & libc::IFF_UP as u32, 0, "tap is up");
        assert!(is_up(&tap).unwrap());
        assert_eq!(master("vmmtap0"), "br0");

        assert_eq!(net.create_tap(&name("br0")).unwrap(), name("vmmtap1"));
        assert_eq!(net.taps().unwrap(), vec![name("vmmtap0"), name("vmmtap1")]);

        net.remove_tap(&name("vmmtap0")).unwrap();
        assert!(!exists("vmmtap0"));
        assert_eq!(net.taps().unwrap(), vec![name("vmmtap1")]);
        // The smallest unused number is taken again.
        assert_eq!(net.create_tap(&name("br0")).unwrap(), name("vmmtap0"));
        assert_eq!(master("vmmtap0"), "br0");

        net.remove_tap(&name("vmmtap0")).unwrap();
        net.remove_tap(&name("vmmtap1")).unwrap();
        assert!(!exists("vmmtap0") && !exists("vmmtap1"));
        assert_eq!(net.taps().unwrap(), Vec::<InterfaceName>::new());
        assert_eq!(
            net.remove_tap(&name("vmmtap0")).unwrap_err().to_string(),
            "tap vmmtap0 does not exist"
        );
    });
}

#[test]
fn taps_on_two_bridges_and_foreign_interfaces_counted() {
    require_root!();
    in_netns(|| {
        add_bridge("br0");
        add_bridge("br1");
        // A bridge that happens to be called vmmtap0 occupies that name.
        add_bridge("vmmtap0");
        let net = HostNetwork::new();
        assert_eq!(
            net.bridges().unwrap(),
            [name("br0"), name("br1"), name("vmmtap0")].into()
        );
        assert_eq!(net.create_tap(&name("br1")).unwrap(), name("vmmtap1"));
        assert_eq!(net.create_tap(&name("br0")).unwrap(), name("vmmtap2"));
        assert_eq!(master("vmmtap1"), "br1");
        assert_eq!(master("vmmtap2"), "br0");
    });
}

#[test]
fn missing_bridge_exact_error_and_nothing_left() {
    require_root!();
    in_netns(|| {
        let net = HostNetwork::new();
        assert_eq!(
            net.check_bridge(&name("br9")).unwrap_err().to_string(),
            "interface br9 does not exist"
        );
        assert_eq!(
            net.create_tap(&name("br9")).unwrap_err().to_string(),
            "interface br9 does not exist"
        );
        assert_eq!(
            net.create_tap(&name("lo")).unwrap_err().to_string(),
            "interface lo is not a bridge"
        );
        assert_eq!(net.taps().unwrap(), Vec::<InterfaceName>::new());
        assert!(!exists("vmmtap0"));
    });
}

#[test]
fn failed_attach_leaves_no_tap_behind() {
    require_root!();
    in_netns(|| {
        // A sysfs that claims br5 is a bridge, while the kernel has no br5: the tap is
        // created, attaching it fails, and it must be removed again.
        let fake_sysfs = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(fake_sysfs.path().join("br5/bridge")).unwrap();
        let net = HostNetwork::with_sysfs(fake_sysfs.path());
        assert_eq!(
            net.create_tap(&name("br5")).unwrap_err().to_string(),
            "attach tap to bridge br5: No such device (os error 19)"
        );
        assert!(!exists("vmmtap0"));
        assert_eq!(net.taps().unwrap(), Vec::<InterfaceName>::new());
    });
}

#[test]
fn invalid_bridge_name_refused_before_any_syscall() {
    // Names are checked when they become InterfaceNames: a Network method cannot be
    // called with an invalid one.
    for (input, text) in [
        (
            "br0/../x",
            "invalid interface name \"br0/../x\": contains '/', ':', NUL or whitespace",
        ),
        (
            "bridge-for-tenants",
            "invalid interface name \"bridge-for-tenants\": longer than 15 octets",
        ),
        (
            "../x",
            "invalid interface name \"../x\": contains '/', ':', NUL or whitespace",
        ),
        (
            "..",
            "invalid interface name \"..\": '.' and '..' are not interface names",
        ),
        (
            "br 0",
            "invalid interface name \"br 0\": contains '/', ':', NUL or whitespace",
        ),
        ("", "invalid interface name \"\": empty"),
    ] {
        assert_eq!(InterfaceName::parse(input).unwrap_err().to_string(), text);
    }
}

#[test]
fn stand_in_tender_opens_the_tap_which_cannot_be_removed_while_held() {
    require_root!();
    in_netns(|| {
        add_bridge("br0");
        let net = HostNetwork::new();
        let tap = net.create_tap(&name("br0")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("net.img");
        std::fs::write(
            &image,
            build_test_image(Target::Hvt, 2, &[Device::net("service")]),
        )
        .unwrap();
        let command = TenderCommand {
            tender: STAND_IN.into(),
            memory_mb: 32,
            nets: vec![petrel::executor::tender::NetArg {
                netif: "service".into(),
                tap: tap.clone(),
                mac: "00:80:41:cd:8a:eb".parse().unwrap(),
            }],
            blocks: vec![],
            image,
            name_arg: None,
            argv: vec!["--wait".into()],
            cpus: Default::default(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let process = ProcessTender.spawn(&command).unwrap();
            let receiver =
                tokio::net::unix::pipe::Receiver::from_owned_fd(process.console).unwrap();
            let mut lines = tokio::io::BufReader::new(receiver).lines();
            // The start line comes after the tap was opened.
            assert_eq!(
                lines.next_line().await.unwrap().unwrap(),
                "Solo5: Bindings version v0.9.0-petrel-stand-in"
            );
            assert_eq!(
                net.remove_tap(&tap).unwrap_err().to_string(),
                "open tap vmmtap0: Device or resource busy (os error 16)"
            );
            ProcessTender.signal(process.pid, StopSignal::Term);
            assert_eq!(process.exit.await, ExitReason::Exited(1));
        });
        net.remove_tap(&tap).unwrap();
        assert!(!exists("vmmtap0"));
    });
}

#[test]
fn stand_in_tender_refuses_a_missing_tap() {
    require_root!();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("net.img");
        std::fs::write(
            &image,
            build_test_image(Target::Hvt, 2, &[Device::net("service")]),
        )
        .unwrap();
        let out = std::process::Command::new(STAND_IN)
            .arg("--net:service=vmmtap7")
            .arg("--")
            .arg(&image)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            String::from_utf8(out.stderr).unwrap(),
            "petrel-stand-in-tender: Could not attach interface: vmmtap7: tap vmmtap7 does not exist\n"
        );
    });
}
