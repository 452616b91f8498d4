//! Fault injection against the real `petrel-endpoint` over real TLS: a full disk (the
//! state directory on a small tmpfs), a missing tender and tenders failing at start, a
//! bridge removed under a running unikernel, and `kill -9` of the endpoint during image
//! uploads, CRL uploads and operator CRL reloads. Afterwards the state is consistent and
//! every failure was reported. Tests that need root (namespaces, mounts, taps) say so and
//! are skipped without it.

mod common;
mod hardening;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use petrel::codec::{
    BlockCmd, BlockData, Command, Data, NetDeviceSpec, Payload, Success, UnikernelCmd,
    UnikernelConfig,
};
use petrel::executor::manifest::Device;
use rand::{Rng, RngCore, SeedableRng};

use common::pki::{Ca, policy};
use hardening::{
    Host, HostOptions, Raw, config, create_waiting, files, image, skip_without_root, stored,
    temp_files, wait_until,
};

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Requests `command` for `cn` with a leaf of `ca`; the reply texts.
fn ask(host: &Host, ca: &Ca, cn: &str, command: &Command) -> Vec<String> {
    host.texts(&ca.leaf(Some(cn), command))
}

/// A chain of `ca` re-presenting its path with `probe` as policy: succeeds only if what
/// runs below the path fits it (the usage check of a policy change).
fn usage_fits(host: &Host, cn: &str, probe: &petrel::policy::Policy) -> Vec<String> {
    let ca = host.ca.intermediate(cn, probe);
    ask(host, &ca, ".", &Command::Unikernel(UnikernelCmd::Info))
}

/// A tender script: `--version` and ordinary starts are the stand-in's; a unikernel
/// argument `--fail-at-start` makes it print a solo5-like error and exit 1 at once,
/// `--segv-at-start` makes it die of SIGSEGV.
fn failing_tender(dir: &Path) -> PathBuf {
    let path = dir.join("solo5-hvt");
    let script = format!(
        "#!/bin/sh\n\
         for arg in \"$@\"; do\n\
           case \"$arg\" in\n\
             --fail-at-start) echo 'solo5-hvt: KVM: no such device' >&2; exit 1;;\n\
             --segv-at-start) echo 'about to crash' >&2; kill -SEGV $$;;\n\
           esac\n\
         done\n\
         exec {} \"$@\"\n",
        common::server::stand_in_tender()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

// ---------------------------------------------------------------------------------------
// Tenders

#[test]
fn a_missing_tender_fails_the_create_and_leaks_nothing() {
    let host = Host::start_with(HostOptions {
        tender: Some(PathBuf::from("/nonexistent/solo5-hvt")),
        ..HostOptions::default()
    });
    let alice = host
        .ca
        .intermediate("alice", &policy(2, &[0], 128, None, &[]));
    assert_eq!(
        ask(&host, &alice, "web", &create_waiting(32)),
        strings(&[
            "failure: could not execute tender /nonexistent/solo5-hvt: No such file or directory \
             (os error 2)"
        ])
    );
    assert_eq!(host.unikernels(), Vec::<String>::new());
    // Nothing is accounted: a policy allowing nothing fits.
    assert_eq!(
        usage_fits(&host, "alice", &policy(0, &[0], 0, None, &[])),
        strings(&["Success(UnikernelInfo([]))"])
    );
    let state = host.state_dir();
    assert_eq!(files(&state.join("images")), Vec::<String>::new());
    assert_eq!(files(&state.join("run")), Vec::<String>::new());
    assert_eq!(temp_files(&state), Vec::<String>::new());
    let (unikernels, _, _) = stored(&state);
    assert!(unikernels.is_empty(), "{unikernels:?}");
    host.assert_served();
}

#[test]
fn a_tender_failing_at_start_fails_the_command_and_leaks_nothing() {
    let root = skip_without_root().is_none();
    if !root {
        eprintln!("without root: no network namespace, the unikernels get no tap");
    }
    let scripts = tempfile::tempdir().unwrap();
    let host = Host::start_with(HostOptions {
        tender: Some(failing_tender(scripts.path())),
        // Generous, so that a loaded machine does not turn a failing start into a late
        // exit; tenders that keep running make their create wait this long.
        extra: strings(&["--start-check-ms", "2000"]),
        netns_bridges: root.then(|| strings(&["br0"])),
        ..HostOptions::default()
    });
    let alice = host
        .ca
        .intermediate("alice", &policy(3, &[0], 128, None, &["br0"]));
    let with_args = |args: &[&str]| {
        let mut config = config(args, 32);
        if root {
            config.image = image(&[Device::net("service")]);
            config.bridges = vec![NetDeviceSpec {
                netif: "service".into(),
                bridge: Some("br0".into()),
                mac: None,
            }];
        }
        config
    };
    let create = |args: &[&str]| Command::Unikernel(UnikernelCmd::Create(with_args(args)));
    assert_eq!(
        ask(&host, &alice, "keeper", &create(&["--wait"])),
        strings(&["success: created unikernel"])
    );
    let interfaces_before = host.interfaces();
    assert_eq!(
        ask(&host, &alice, "web", &create(&["--fail-at-start"])),
        strings(&[
            "failure: the tender failed at start (exited with 1): solo5-hvt: KVM: no such device"
        ])
    );
    assert_eq!(
        ask(&host, &alice, "web", &create(&["--segv-at-start"])),
        strings(&["failure: the tender failed at start (killed by signal 11): about to crash"])
    );
    // force-create and restart of a running unikernel into a failing start: reported,
    // and the old instance is gone (it was stopped first).
    let force = Command::Unikernel(UnikernelCmd::ForceCreate(with_args(&["--fail-at-start"])));
    assert_eq!(
        ask(&host, &alice, "keeper", &force),
        strings(&[
            "failure: the tender failed at start (exited with 1): solo5-hvt: KVM: no such device"
        ])
    );
    // A unikernel that finishes its job at once is no failure.
    assert_eq!(
        ask(&host, &alice, "job", &create(&["--print=done"])),
        strings(&["success: created unikernel"])
    );
    wait_until("the job has exited", || host.tenders().is_empty());

    // Nothing leaked: no tender, tap, image, run record, temporary file or usage.
    assert_eq!(host.unikernels(), Vec::<String>::new());
    if root {
        assert!(interfaces_before.iter().any(|i| i == "vmmtap0"));
        assert_eq!(host.interfaces(), strings(&["br0", "lo"]));
    }
    assert_eq!(
        usage_fits(&host, "alice", &policy(0, &[0], 0, None, &[])),
        strings(&["Success(UnikernelInfo([]))"])
    );
    let state = host.state_dir();
    assert_eq!(files(&state.join("images")), Vec::<String>::new());
    assert_eq!(files(&state.join("run")), Vec::<String>::new());
    assert_eq!(temp_files(&state), Vec::<String>::new());
    assert!(stored(&state).0.is_empty());
    host.assert_served();
}

#[test]
fn a_bridge_removed_under_a_running_unikernel() {
    if let Some(why) = skip_without_root() {
        eprintln!("skipped: {why}");
        return;
    }
    let host = Host::start_with(HostOptions {
        netns_bridges: Some(strings(&["br0"])),
        ..HostOptions::default()
    });
    let alice = host
        .ca
        .intermediate("alice", &policy(3, &[0], 128, None, &["br0"]));
    let on_br0 = || UnikernelConfig {
        image: image(&[Device::net("service")]),
        bridges: vec![NetDeviceSpec {
            netif: "service".into(),
            bridge: Some("br0".into()),
            mac: None,
        }],
        ..config(&["--wait"], 32)
    };
    let create = Command::Unikernel(UnikernelCmd::Create(on_br0()));
    assert_eq!(
        ask(&host, &alice, "web", &create),
        strings(&["success: created unikernel"])
    );
    assert_eq!(host.interfaces(), strings(&["br0", "lo", "vmmtap0"]));
    let pid = host.tenders()[0].pid;

    host.in_netns(&["ip", "link", "del", "br0"]);
    assert_eq!(host.interfaces(), strings(&["lo", "vmmtap0"]));
    // It keeps running; new starts on the bridge are refused, naming it; a force-create
    // is refused before the running one is touched.
    assert_eq!(host.unikernels(), strings(&["alice:web"]));
    assert_eq!(
        ask(&host, &alice, "web2", &create),
        strings(&["failure: interface br0 does not exist"])
    );
    let force = Command::Unikernel(UnikernelCmd::ForceCreate(on_br0()));
    assert_eq!(
        ask(&host, &alice, "web", &force),
        strings(&["failure: interface br0 does not exist"])
    );
    assert_eq!(host.tenders()[0].pid, pid);
    // destroy still works and removes the tap, without an error.
    assert_eq!(
        ask(
            &host,
            &alice,
            "web",
            &Command::Unikernel(UnikernelCmd::Destroy)
        ),
        strings(&["success: destroyed unikernel"])
    );
    assert_eq!(host.interfaces(), strings(&["lo"]));
    assert_eq!(host.tenders(), Vec::new());
    assert_eq!(host.log_count(" ERROR "), 0, "{}", host.log_text());
    host.assert_served();
}

// ---------------------------------------------------------------------------------------
// A full disk

/// `size` octets of incompressible data.
fn random(size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size];
    rand::thread_rng().fill_bytes(&mut data);
    data
}

/// Streams `data` in chunks of 60 000 octets and the terminator; the reply texts.
fn stream(host: &Host, ca: &Ca, cn: &str, command: &Command, data: &[u8]) -> Vec<String> {
    let mut client = Raw::connect(host, &ca.leaf(Some(cn), command));
    for chunk in data.chunks(60_000) {
        if client.chunk(chunk).is_err() {
            break;
        }
    }
    let _ = client.end();
    client.texts()
}

/// The content of block device `cn` of `ca`.
fn dump(host: &Host, ca: &Ca, cn: &str) -> Vec<u8> {
    let frames = host
        .request(&ca.leaf(Some(cn), &Command::Block(BlockCmd::Dump(0))))
        .unwrap();
    assert_eq!(
        frames.first().map(|f| &f.payload),
        Some(&Payload::Success(Success::BlockDeviceImage(false)))
    );
    let mut content = Vec::new();
    for frame in &frames[1..] {
        match &frame.payload {
            Payload::Data(Data::Block(BlockData::SomeData(piece))) => {
                content.extend_from_slice(piece)
            }
            Payload::Data(Data::Block(BlockData::NoData)) => {}
            other => panic!("{other:?}"),
        }
    }
    content
}

#[test]
fn a_full_disk_fails_uploads_cleanly_and_the_server_recovers() {
    if let Some(why) = skip_without_root() {
        eprintln!("skipped: {why}");
        return;
    }
    let host = Host::start_with(HostOptions {
        extra: strings(&["--max-image-size", "67108864"]),
        tmpfs_kib: Some(8 * 1024),
        ..HostOptions::default()
    });
    let state = host.state_view();
    let alice = host
        .ca
        .intermediate("alice", &policy(4, &[0], 256, Some(64), &[]));
    assert_eq!(
        ask(&host, &alice, "small", &create_waiting(32)),
        strings(&["success: created unikernel"])
    );
    // 5 MiB of the 8 MiB hold block data.
    assert_eq!(
        ask(&host, &alice, "filler", &Command::Block(BlockCmd::Add(7))),
        strings(&["success: added block device"])
    );
    let set = Command::Block(BlockCmd::Set(false));
    assert_eq!(
        stream(&host, &alice, "filler", &set, &random(5 * 1024 * 1024)),
        strings(&["success: set block device"])
    );

    // An image upload that does not fit.
    let mut big_image = image(&[]);
    big_image.extend(random(4 * 1024 * 1024));
    let streamed = Command::Unikernel(UnikernelCmd::Create(UnikernelConfig {
        image: Vec::new(),
        ..config(&["--wait"], 32)
    }));
    assert_eq!(
        stream(&host, &alice, "big", &streamed, &big_image),
        strings(&["failure: could not write the image: No space left on device (os error 28)"])
    );
    // A block set that does not fit keeps the old content.
    assert_eq!(
        ask(&host, &alice, "disk", &Command::Block(BlockCmd::Add(4))),
        strings(&["success: added block device"])
    );
    assert_eq!(
        stream(&host, &alice, "disk", &set, &random(3 * 1024 * 1024)),
        strings(&["failure: write alice:disk: No space left on device (os error 28)"])
    );
    assert_eq!(dump(&host, &alice, "disk"), vec![0u8; 4 * 1024 * 1024]);

    // Nothing half-written remains, the state and records parse.
    assert_eq!(temp_files(&state), Vec::<String>::new());
    assert_eq!(files(&state.join("images")), strings(&["alice:small.img"]));
    let (unikernels, _, records) = stored(&state);
    assert_eq!(unikernels, hardening::set(&["alice:small"]));
    assert_eq!(
        records.blocks.keys().cloned().collect::<Vec<_>>(),
        strings(&["alice:disk", "alice:filler"])
    );

    // With the disk completely full even the state cannot be written: a command that
    // changes it fails, and changes nothing.
    let ballast = state.join("ballast");
    {
        let mut file = std::fs::File::create(&ballast).unwrap();
        let block = vec![0xBAu8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let _ = file.write_all(&block[..1]);
    }
    assert_eq!(
        ask(&host, &alice, "extra", &Command::Block(BlockCmd::Add(1))),
        strings(&["failure: could not save the state: No space left on device (os error 28)"])
    );
    assert_eq!(
        ask(&host, &alice, "tiny", &create_waiting(32)),
        strings(&["failure: could not write the image: No space left on device (os error 28)"])
    );
    assert_eq!(
        host.blocks(),
        vec![
            ("alice:disk".to_owned(), 4, false),
            ("alice:filler".to_owned(), 7, false)
        ]
    );
    assert_eq!(host.unikernels(), strings(&["alice:small"]));
    host.assert_served();
    std::fs::remove_file(&ballast).unwrap();

    // Space freed: uploads work again.
    assert_eq!(
        ask(&host, &alice, "filler", &Command::Block(BlockCmd::Remove)),
        strings(&["success: removed block"])
    );
    assert_eq!(
        stream(&host, &alice, "big", &streamed, &big_image),
        strings(&["success: created unikernel"])
    );
    assert_eq!(
        ask(&host, &alice, "after", &create_waiting(32)),
        strings(&["success: created unikernel"])
    );
    assert_eq!(
        host.unikernels(),
        strings(&["alice:after", "alice:big", "alice:small"])
    );
    assert_eq!(temp_files(&state), Vec::<String>::new());
    let (unikernels, _, _) = stored(&state);
    assert_eq!(
        unikernels,
        hardening::set(&["alice:after", "alice:big", "alice:small"])
    );
    host.assert_served();
}

// ---------------------------------------------------------------------------------------
// kill -9 of the endpoint

/// A seeded generator; the seed is printed so that a failure can be repeated.
fn seeded(test: &str) -> rand::rngs::StdRng {
    let seed: u64 = std::env::var("PETREL_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{test}: seed {seed} (set PETREL_FAULT_SEED to repeat)");
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// Writes `ca`'s chain and key for the `petrel` client; returns (`--ca`, `--ca-key`).
fn ca_files(dir: &Path, name: &str, ca: &Ca) -> (String, String) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let chain: String = ca.issuer.chain().iter().map(|c| c.pem()).collect();
    std::fs::write(&cert, chain).unwrap();
    std::fs::write(&key, ca.issuer.key().to_pem()).unwrap();
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}

/// After a restart: the state and records parse, no temporary file is left, every image
/// belongs to a unikernel of the state file, what runs is exactly what the state file
/// lists (each once, each a child of the new endpoint), and run records match.
fn assert_consistent(host: &Host) -> std::collections::BTreeSet<String> {
    let state = host.state_dir();
    let (unikernels, _, records) = stored(&state);
    assert_eq!(temp_files(&state), Vec::<String>::new());
    let images: std::collections::BTreeSet<String> = files(&state.join("images"))
        .into_iter()
        .map(|f| f.trim_end_matches(".img").to_owned())
        .collect();
    assert_eq!(images, unikernels);
    let runs: std::collections::BTreeSet<String> = files(&state.join("run"))
        .into_iter()
        .map(|f| f.trim_end_matches(".json").to_owned())
        .collect();
    assert_eq!(runs, unikernels);
    for name in records.unikernels.keys() {
        assert!(unikernels.contains(name), "records name {name}");
    }
    // Every tender of this state directory is a child of the new endpoint, once.
    let marker = format!("{}/images/", state.display());
    let mut tenders = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if let Some(at) = cmdline.find(&marker) {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let Some(stat) = hardening::parse_stat(&stat) else {
                continue;
            };
            if stat.state == 'Z' {
                continue;
            }
            assert_eq!(
                stat.ppid,
                host.pid(),
                "a tender of another process: {cmdline}"
            );
            let image = cmdline[at + marker.len()..].split(".img").next().unwrap();
            tenders.push(image.to_owned());
        }
    }
    tenders.sort();
    let listed: Vec<String> = unikernels.iter().cloned().collect();
    assert_eq!(tenders, listed);
    assert_eq!(host.unikernels(), listed);
    unikernels
}

#[test]
fn kill_9_during_image_uploads_loses_nothing_and_lies_about_nothing() {
    let mut rng = seeded("image uploads");
    let mut host = Host::start(&[]);
    let alice = host
        .ca
        .intermediate("alice", &policy(64, &[0], 4096, None, &[]));
    let files_dir = tempfile::tempdir().unwrap();
    let (ca, ca_key) = ca_files(files_dir.path(), "alice", &alice);
    let server_ca = host.dir().join("cacert.pem");
    let mut big = image(&[]);
    big.extend(random(8 * 1024 * 1024));
    let image_file = files_dir.path().join("big.hvt");
    std::fs::write(&image_file, &big).unwrap();

    let mut promised = std::collections::BTreeSet::new();
    let mut outcomes = std::collections::BTreeMap::new();
    for round in 0..5 {
        let destination = host.addr.to_string();
        // Clients start at different times; the kill comes anywhere from before the first
        // connects to after the last has its reply.
        let starts: Vec<u64> = (0..3).map(|_| rng.gen_range(0..1500)).collect();
        let kill_at = rng.gen_range(0..3000);
        let started = std::time::Instant::now();
        let clients: Vec<(String, std::process::Child)> = starts
            .iter()
            .enumerate()
            .map(|(i, start)| {
                let name = format!("r{round}u{i}");
                let wait = Duration::from_millis(*start).saturating_sub(started.elapsed());
                std::thread::sleep(wait);
                let child = std::process::Command::new(env!("CARGO_BIN_EXE_petrel"))
                    .args(["create", &name])
                    .arg(&image_file)
                    .args(["--compression-level", "0", "--arg=--wait"])
                    .args([
                        "--destination",
                        &destination,
                        "--ca",
                        &ca,
                        "--ca-key",
                        &ca_key,
                    ])
                    .arg("--server-ca")
                    .arg(&server_ca)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                (name, child)
            })
            .collect();
        let wait = Duration::from_millis(kill_at).saturating_sub(started.elapsed());
        std::thread::sleep(wait);
        host.kill9();
        for (name, child) in clients {
            let output = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            let outcome = format!("{:?} {}", output.status.code(), stderr.trim());
            *outcomes.entry(outcome).or_insert(0) += 1;
            match output.status.code() {
                Some(0) => {
                    assert_eq!(stdout, "created unikernel\n");
                    promised.insert(format!("alice:{name}"));
                }
                // A cut connection (or none at all): never a false success.
                Some(121) | Some(122) => {}
                other => panic!("{name}: exit {other:?}: {stdout}{stderr}"),
            }
        }
        host.spawn();
        let running = assert_consistent(&host);
        for name in &promised {
            assert!(
                running.contains(name),
                "{name} was reported created: {running:?}"
            );
        }
        host.assert_served();
    }
    eprintln!("{outcomes:#?}");
}

/// A CRL of `ca` numbered `number` revoking `serials` and `padding` more made-up serials
/// (so that it takes a while to upload).
fn crl(ca: &Ca, number: u64, serials: &[petrel::pki::Serial], padding: usize) -> Vec<u8> {
    let now = time::OffsetDateTime::now_utc();
    let mut revoked: Vec<petrel::pki::RevokedEntry> = serials
        .iter()
        .map(|serial| petrel::pki::RevokedEntry {
            serial: serial.clone(),
            revoked_at: now.unix_timestamp(),
            reason: None,
            invalidity_date: None,
        })
        .collect();
    for i in 0..padding {
        let mut octets = [0x11u8; 10];
        octets[2..10].copy_from_slice(&(i as u64).to_be_bytes());
        revoked.push(petrel::pki::RevokedEntry {
            serial: petrel::pki::Serial::from_random_octets(octets),
            revoked_at: now.unix_timestamp(),
            reason: None,
            invalidity_date: None,
        });
    }
    let template = petrel::pki::CrlTemplate {
        this_update: now,
        next_update: None,
        number: petrel::pki::CrlNumber::from_u64(number),
        revoked,
    };
    petrel::pki::crl::create_crl(&template, &ca.issuer)
        .unwrap()
        .der()
        .to_vec()
}

/// The CRL number stored for uploads of `ca`'s leaves, if any.
fn stored_crl_number(host: &Host, ca: &Ca) -> Option<String> {
    let dir = host.state_dir().join("revocation");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let crls: Vec<petrel::pki::ParsedCrl> = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "crl"))
        .map(|f| petrel::pki::ParsedCrl::parse(&std::fs::read(f).unwrap()).unwrap())
        .collect();
    assert!(crls.len() <= 1, "{files:?}");
    let subject = ca.cert().facts().unwrap().subject;
    crls.iter()
        .filter(|c| c.issuer().der() == subject.der())
        .map(|c| c.number().map(|n| n.to_string()).unwrap_or_default())
        .next()
}

#[test]
fn kill_9_during_crl_uploads_keeps_the_old_or_the_new_list() {
    let mut rng = seeded("CRL uploads");
    let mut host = Host::start(&[]);
    let alice = host
        .ca
        .intermediate("alice", &policy(64, &[0], 4096, None, &[]));
    let uploader = alice.leaf(
        Some("."),
        &Command::Revocation(petrel::codec::RevocationCmd::Upload),
    );
    let mut stored: Option<u64> = None;
    let mut outcomes = std::collections::BTreeMap::new();
    for round in 1..=5u64 {
        // A victim created by a leaf the new list revokes.
        let victim = alice.leaf(Some(&format!("v{round}")), &create_waiting(32));
        assert_eq!(
            host.texts(&victim),
            strings(&["success: created unikernel"])
        );
        let serial = victim.cert.facts().unwrap().serial;
        let list = crl(&alice, round, &[serial], 20_000);
        let kill_at = rng.gen_range(0..1500);
        let started = std::time::Instant::now();
        let upload = {
            let mut client = Raw::connect(&host, &uploader);
            std::thread::spawn(move || {
                for chunk in list.chunks(16 * 1024) {
                    if client.chunk(chunk).is_err() {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                if client.end().is_err() {
                    return None;
                }
                let (frames, _) = client.frames();
                frames.first().map(|f| hardening::text(&f.payload))
            })
        };
        std::thread::sleep(Duration::from_millis(kill_at).saturating_sub(started.elapsed()));
        host.kill9();
        let reply = upload.join().unwrap();
        host.spawn();
        let number = stored_crl_number(&host, &alice);
        let new = number.as_deref() == Some(&round.to_string());
        match &reply {
            Some(text) if text.starts_with("success: stored CRL number") => {
                assert!(new, "{text}, but the list stored is {number:?}");
            }
            Some(other) => panic!("round {round}: {other}"),
            None => {}
        }
        // The old list or the new one, nothing else.
        assert!(
            new || number.as_deref().map(|n| n.parse::<u64>().unwrap()) == stored,
            "round {round}: {number:?} after {stored:?}"
        );
        if new {
            stored = Some(round);
        }
        let running = assert_consistent(&host);
        assert_eq!(
            running.contains(&format!("alice:v{round}")),
            !new,
            "{running:?}"
        );
        if !new {
            // The victim lives on; its CRL comes in the next round's list only if the
            // test says so: destroy it to keep the rounds apart.
            let destroy = alice.leaf(
                Some(&format!("v{round}")),
                &Command::Unikernel(UnikernelCmd::Destroy),
            );
            assert_eq!(
                host.texts(&destroy),
                strings(&["success: destroyed unikernel"])
            );
        }
        *outcomes
            .entry(format!("{} / {}", reply.is_some(), new))
            .or_insert(0) += 1;
        host.assert_served();
    }
    eprintln!("reply received / new list stored: {outcomes:#?}");
}

#[test]
fn kill_9_during_operator_crl_reloads_restores_nothing_revoked() {
    let mut rng = seeded("operator CRL reloads");
    let mut host = Host::start(&[]);
    let alice = host
        .ca
        .intermediate("alice", &policy(64, &[0], 4096, None, &[]));
    let crls = host.state_dir().join("crls");
    let mut outcomes = std::collections::BTreeMap::new();
    for round in 1..=4u64 {
        // Victims created by leaves the new list revokes, and a survivor.
        let mut serials = Vec::new();
        for i in 0..3 {
            let victim = alice.leaf(Some(&format!("v{round}x{i}")), &create_waiting(16));
            assert_eq!(
                host.texts(&victim),
                strings(&["success: created unikernel"])
            );
            serials.push(victim.cert.facts().unwrap().serial);
        }
        let survivor = alice.leaf(Some(&format!("s{round}")), &create_waiting(16));
        assert_eq!(
            host.texts(&survivor),
            strings(&["success: created unikernel"])
        );
        // The operator replaces the file atomically, then signals.
        let list = crl(&alice, round, &serials, 1000);
        let temp = crls.join(".alice.crl.new");
        std::fs::write(&temp, &list).unwrap();
        std::fs::rename(&temp, crls.join("alice.crl")).unwrap();
        host.signal(libc::SIGHUP);
        let kill_at = rng.gen_range(0..250);
        std::thread::sleep(Duration::from_millis(kill_at));
        let reloaded = host.log_line("operator CRLs reloaded").is_some();
        host.kill9();
        host.spawn();
        let running = assert_consistent(&host);
        for i in 0..3 {
            assert!(
                !running.contains(&format!("alice:v{round}x{i}")),
                "round {round}: a revoked unikernel was restored: {running:?}"
            );
        }
        assert!(running.contains(&format!("alice:s{round}")), "{running:?}");
        // The operator's file is untouched.
        assert_eq!(std::fs::read(crls.join("alice.crl")).unwrap(), list);
        *outcomes.entry(reloaded).or_insert(0) += 1;
        host.assert_served();
    }
    eprintln!("reload done before the kill: {outcomes:?}");
}
