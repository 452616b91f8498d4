//! Revocation end to end (DESIGN.md, "Revocation"): the real `petrel-endpoint` with the
//! stand-in tender, the real `petrel` client for the PKI, `revoke` and uploads, and an
//! OpenSSL test client for crafted streams — all over real TLS on loopback.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use petrel::codec::{Command, ConsoleCmd, Data, Payload, RevocationCmd, SinceCount, Success};
use petrel::executor::manifest::{Target, build_test_image};
use petrel::pki::cert::root_ca;
use petrel::pki::crl::create_crl;
use petrel::pki::{
    CaIssuer, Certificate, CrlNumber, CrlTemplate, RevokedEntry, Serial, Validity, keys,
};
use serde_json::Value;
use time::OffsetDateTime;

use common::pki::{Ca, Leaf};
use common::server::{Endpoint, free_port, stand_in_tender};
use common::tls_client::Client;

/// The outcome of one `petrel` run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A PKI made with the `petrel` binary in a temporary directory (root CA `root`, server
/// certificate for localhost and 127.0.0.1), the stub image, and the endpoint serving
/// from that directory (state in `state/`).
struct World {
    dir: tempfile::TempDir,
    port: u16,
    extra: Vec<String>,
    endpoint: Option<Endpoint>,
}

impl World {
    fn new(extra: &[&str]) -> Self {
        let world = Self {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            endpoint: None,
        };
        world.ok(&["generate", "root", "db.txt"]);
        std::fs::write(
            world.path("hello.hvt"),
            build_test_image(Target::Hvt, 2, &[]),
        )
        .unwrap();
        world
    }

    fn d(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, file: &str) -> PathBuf {
        self.d().join(file)
    }

    fn dest(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (or restarts) the endpoint with the world's extra arguments.
    fn start(&mut self) {
        let mut args: Vec<String> = [
            "cacert.pem",
            "server.pem",
            "server.key",
            "--ip",
            "127.0.0.1",
            "--port",
            &self.port.to_string(),
            "--state-dir",
            "state",
            "--tender",
            stand_in_tender(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.extra.iter().cloned());
        self.endpoint = Some(Endpoint::spawn(self.d(), &args, self.port));
    }

    fn endpoint(&self) -> &Endpoint {
        self.endpoint.as_ref().unwrap()
    }

    /// Stops the endpoint (SIGTERM: unikernels are stopped and restored at the next
    /// start).
    fn stop(&mut self) {
        let endpoint = self.endpoint.take().unwrap();
        assert!(endpoint.stop().success());
    }

    fn petrel(&self, args: &[&str]) -> Run {
        let output = Process::new(env!("CARGO_BIN_EXE_petrel"))
            .args(args)
            .current_dir(self.d())
            .output()
            .unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }

    fn ok(&self, args: &[&str]) -> Run {
        let run = self.petrel(args);
        assert_eq!(run.code, 0, "petrel {args:?}: {}{}", run.stdout, run.stderr);
        run
    }

    /// `args` sent to the endpoint with a leaf issued by `ca` (`root` is the root CA).
    fn remote(&self, ca: &str, args: &[&str]) -> Run {
        let (cert, key) = files_of(ca);
        let dest = self.dest();
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "-d",
            &dest,
            "--ca",
            &cert,
            "--ca-key",
            &key,
            "--server-ca",
            "cacert.pem",
        ]);
        self.petrel(&all)
    }

    fn remote_ok(&self, ca: &str, args: &[&str]) -> String {
        let run = self.remote(ca, args);
        assert_eq!(
            run.code, 0,
            "{ca}: petrel {args:?}: {}{}",
            run.stdout, run.stderr
        );
        run.stdout
    }

    /// A tenant CA `name` with a policy, delegated by `issuer` (`root` or a tenant).
    fn tenant(&self, name: &str, issuer: &str, unikernels: &str, mem: &str, size: &str) {
        self.ok(&[
            "add-policy",
            name,
            unikernels,
            "--mem",
            mem,
            "--cpu",
            "0",
            "--size",
            size,
            "--csr",
        ]);
        let (cert, key) = files_of(issuer);
        self.ok(&["sign", &cert, "db.txt", &key, &format!("{name}.req")]);
    }

    /// A client certificate `cn` from `petrel sign`, issued by `issuer`, creating a
    /// waiting unikernel.
    fn signed_create_leaf(&self, cn: &str, issuer: &str) {
        self.ok(&[
            "create",
            cn,
            "hello.hvt",
            "--arg=--print=hello",
            "--arg=--wait",
            "--csr",
        ]);
        let (cert, key) = files_of(issuer);
        self.ok(&["sign", &cert, "db.txt", &key, &format!("{cn}.req")]);
    }

    /// Creates the waiting unikernel `name` with a fresh leaf of `ca`.
    fn create(&self, ca: &str, name: &str) {
        let out = self.remote_ok(
            ca,
            &[
                "create",
                name,
                "hello.hvt",
                "--arg=--print=hello",
                "--arg=--wait",
            ],
        );
        assert_eq!(out, "created unikernel\n");
    }

    /// The unikernels running, as the root CA sees them.
    fn unikernels(&self) -> Vec<String> {
        names(&self.root_json(&["info"]), "unikernelInfo")
    }

    /// The policies installed, as the root CA sees them.
    fn policies(&self) -> Vec<String> {
        names(&self.root_json(&["policy"]), "policies")
    }

    /// The block devices, as the root CA sees them.
    fn blocks(&self) -> Vec<String> {
        names(&self.root_json(&["block-info"]), "blockDevices")
    }

    fn root_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(self.remote_ok("root", &all).trim_end()).unwrap()
    }

    /// The pid of the tender of `name`, from its run record.
    fn pid(&self, name: &str) -> u32 {
        let file = self.path(&format!("state/run/{name}.json"));
        let record: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        u32::try_from(record["pid"].as_u64().unwrap()).unwrap()
    }

    /// The serial (hex) of the first certificate of `file`.
    fn serial(&self, file: &str) -> String {
        certificates(&self.path(file))[0]
            .facts()
            .unwrap()
            .serial
            .hex()
    }

    /// A fixture CA from the world's files (`root` or a tenant), issuing now.
    fn ca(&self, name: &str) -> Ca {
        let (cert, key) = files_of(name);
        let issuer = CaIssuer::new(
            certificates(&self.path(&cert)),
            keys::load_key_file(&self.path(&key)).unwrap(),
        )
        .unwrap();
        Ca::from_issuer(issuer, OffsetDateTime::now_utc())
    }

    fn root_cert(&self) -> Certificate {
        certificates(&self.path("cacert.pem")).remove(0)
    }

    /// Connects with `leaf` (the OpenSSL test client).
    fn connect(&self, leaf: &Leaf) -> Client {
        Client::connect(
            self.endpoint().addr,
            &leaf.chain,
            &leaf.key,
            &self.root_cert(),
        )
        .unwrap()
    }
}

/// The certificate and key files of CA `name` (`root`: cacert.pem and root.key).
fn files_of(name: &str) -> (String, String) {
    if name == "root" {
        ("cacert.pem".to_owned(), "root.key".to_owned())
    } else {
        (format!("{name}.pem"), format!("{name}.key"))
    }
}

fn certificates(path: &Path) -> Vec<Certificate> {
    Certificate::from_pem_chain(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The names of a `--json` reply's success list `kind`.
fn names(json: &Value, kind: &str) -> Vec<String> {
    let list = json["payload"]["success"][kind]
        .as_array()
        .unwrap_or_else(|| panic!("no {kind} in {json}"));
    let mut names: Vec<String> = list
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The text of a frame's failure or success string.
fn text(payload: &Payload) -> String {
    match payload {
        Payload::Failure(text) => format!("failure: {text}"),
        Payload::Success(Success::String(text)) => format!("success: {text}"),
        other => format!("{other:?}"),
    }
}

#[test]
fn a_tenant_revokes_one_of_its_leaves() {
    let mut world = World::new(&[]);
    world.tenant("alice", "root", "4", "512", "100");
    world.signed_create_leaf("web", "alice");
    world.start();
    world.ok(&[
        "certificate",
        "web.pem",
        "web.key",
        "-d",
        &world.dest(),
        "--server-ca",
        "cacert.pem",
    ]);
    world.create("alice", "other");
    assert_eq!(world.unikernels(), strings(&["alice:other", "alice:web"]));
    let web_pid = world.pid("alice:web");
    let other_pid = world.pid("alice:other");
    let serial = world.serial("web.pem");

    let run = world.remote(
        "alice",
        &["revoke", "--cert", "web.pem", "--reason", "keyCompromise"],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        format!(
            "wrote {} (CRL number 1, 1 revoked, 1 new: {serial})\n\
             stored CRL number 1 of CN=alice; 1 certificate newly revoked; destroyed 1 \
             unikernel (alice:web), 0 block devices; removed 0 policies; closed 0 console \
             subscriptions\n",
            Path::new(".").join("alice.crl").display()
        )
    );
    assert!(!process_exists(web_pid), "the tender of alice:web is gone");
    assert!(!world.path("state/run/alice:web.json").exists());
    assert!(process_exists(other_pid));
    assert_eq!(world.unikernels(), strings(&["alice:other"]));

    // Every later request with the leaf is refused, naming it.
    for _ in 0..2 {
        let run = world.petrel(&[
            "certificate",
            "web.pem",
            "web.key",
            "-d",
            &world.dest(),
            "--server-ca",
            "cacert.pem",
        ]);
        assert_eq!(run.code, 117);
        assert_eq!(
            run.stderr,
            format!("petrel: certificate web (serial {serial}) is revoked\n")
        );
    }
    assert_eq!(world.unikernels(), strings(&["alice:other"]));
    // The tenant's other leaves still work.
    world.remote_ok("alice", &["info"]);

    // The CRL file, as `inspect` shows it, and what the server holds.
    let inspected: Value =
        serde_json::from_str(world.ok(&["inspect", "alice.crl"]).stdout.trim_end()).unwrap();
    assert_eq!(inspected["issuer"], "CN=alice");
    assert_eq!(inspected["number"], "1");
    assert_eq!(inspected["revoked"][0]["serial"], serial.as_str());
    assert_eq!(inspected["revoked"][0]["reason"], "keyCompromise");
    let info: Value =
        serde_json::from_str(world.remote_ok("alice", &["revoke", "--info"]).trim_end()).unwrap();
    assert_eq!(info["crls"].as_array().unwrap().len(), 1, "{info}");
    assert_eq!(info["crls"][0]["subject"], "CN=alice");
    assert_eq!(info["crls"][0]["crl_number"], "1");
    assert_eq!(info["crls"][0]["origin"], "uploaded");
    assert_eq!(info["crls"][0]["next_update"], Value::Null);
    assert_eq!(info["crls"][0]["revoked"], serde_json::json!([serial]));

    // Revoking it again: nothing new, CRL number 2.
    let run = world.remote("alice", &["revoke", "--serial", &serial]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stderr, format!("petrel: already revoked: {serial}\n"));
    assert!(run.stdout.contains(
        "stored CRL number 2 of CN=alice; 0 certificates newly revoked; destroyed 0 unikernels"
    ));
}

#[test]
fn the_root_revokes_an_intermediate() {
    let mut world = World::new(&[]);
    world.tenant("alice", "root", "4", "512", "100");
    world.tenant("carol", "alice", "2", "128", "10");
    world.tenant("bob", "root", "2", "256", "10");
    world.start();
    world.create("alice", "web");
    world.remote_ok("alice", &["block-add", "disk", "10"]);
    world.create("carol", "app");
    world.create("bob", "svc");
    assert_eq!(
        world.unikernels(),
        strings(&["alice:carol:app", "alice:web", "bob:svc"])
    );
    assert_eq!(world.blocks(), strings(&["alice:disk"]));
    assert_eq!(
        world.policies(),
        strings(&[":", "alice:", "alice:carol:", "bob:"])
    );
    let pids = [world.pid("alice:web"), world.pid("alice:carol:app")];
    let alice = world.serial("alice.pem");

    let run = world.remote("root", &["revoke", "--cert", "alice.pem"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout.lines().nth(1),
        Some(
            "stored CRL number 1 of CN=root; 1 certificate newly revoked; destroyed 2 \
             unikernels (alice:carol:app, alice:web), 1 block device (alice:disk); removed 2 \
             policies (alice:, alice:carol:); closed 0 console subscriptions"
        ),
        "{}",
        run.stdout
    );
    for pid in pids {
        assert!(!process_exists(pid));
    }
    assert_eq!(world.unikernels(), strings(&["bob:svc"]));
    assert_eq!(world.blocks(), Vec::<String>::new());
    assert!(!world.path("state/block/alice:disk").exists());
    assert_eq!(world.policies(), strings(&[":", "bob:"]));

    // The intermediate and its sub-tenants are locked out; the old intermediate cannot
    // re-install its policy.
    let refused = format!("petrel: certificate alice (serial {alice}) is revoked\n");
    for (ca, args) in [
        ("alice", vec!["info"]),
        (
            "alice",
            vec!["create", "again", "hello.hvt", "--arg=--wait"],
        ),
        ("carol", vec!["info"]),
        ("carol", vec!["block-add", "d2", "1"]),
    ] {
        let run = world.remote(ca, &args);
        assert_eq!(
            (run.code, run.stderr.as_str()),
            (117, refused.as_str()),
            "{ca} {args:?}"
        );
    }
    assert_eq!(world.policies(), strings(&[":", "bob:"]));
    assert_eq!(world.unikernels(), strings(&["bob:svc"]));
    // The sibling is untouched.
    world.remote_ok("bob", &["info"]);
}

/// Uploads `crl` (in chunks) with `uploader`, and reads the answer.
fn upload(world: &World, uploader: &Leaf, crl: &[u8]) -> Vec<String> {
    let mut client = world.connect(uploader);
    for chunk in crl.chunks(1000) {
        if client.send_chunk(chunk).is_err() {
            break;
        }
    }
    let _ = client.send_end();
    client
        .read_all()
        .unwrap()
        .iter()
        .map(|w| text(&w.payload))
        .collect()
}

fn crl_of(ca: &CaIssuer, number: u64, serials: &[&[u8]], this: i64, next: Option<i64>) -> Vec<u8> {
    let at = |t: i64| OffsetDateTime::from_unix_timestamp(t).unwrap();
    let template = CrlTemplate {
        this_update: at(this),
        next_update: next.map(at),
        number: CrlNumber::from_u64(number),
        revoked: serials
            .iter()
            .map(|s| RevokedEntry {
                serial: Serial::from_der_content(s),
                revoked_at: this,
                reason: None,
                invalidity_date: None,
            })
            .collect(),
    };
    create_crl(&template, ca).unwrap().der().to_vec()
}

#[test]
fn refused_uploads_change_nothing() {
    let mut world = World::new(&["--max-crl-size", "4096"]);
    world.tenant("alice", "root", "4", "512", "100");
    world.tenant("bob", "root", "2", "256", "10");
    world.start();
    let alice = world.ca("alice");
    let bob = world.ca("bob");
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let uploader = alice.leaf(Some("."), &Command::Revocation(RevocationCmd::Upload));
    let victim = alice.leaf(
        Some("victim"),
        &Command::Unikernel(petrel::codec::UnikernelCmd::Info),
    );
    let victim_serial = victim.cert.facts().unwrap().serial;

    let stored = crl_of(&alice.issuer, 5, &[&[0x42]], now, None);
    assert_eq!(
        upload(&world, &uploader, &stored),
        vec![
            "success: stored CRL number 5 of CN=alice; 1 certificate newly revoked; destroyed 0 \
             unikernels, 0 block devices; removed 0 policies; closed 0 console subscriptions"
        ]
    );
    let file = std::fs::read_dir(world.path("state/revocation"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "crl"))
        .unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), stored);
    let info_leaf = alice.leaf(Some("."), &Command::Revocation(RevocationCmd::Info));
    let info = || {
        let frames = world.connect(&info_leaf).read_all().unwrap();
        text(&frames[0].payload)
    };
    let info_before = info();
    assert!(
        info_before.contains("\"crl_number\":\"5\""),
        "{info_before}"
    );

    // A CRL naming alice but signed with the key of bob, a sibling tenant's CA.
    let forged = {
        let bob_key = bob.issuer.key();
        let validity = Validity {
            now: OffsetDateTime::now_utc(),
            duration: std::time::Duration::from_secs(86400),
        };
        let fake = root_ca("alice", bob_key, validity, Serial::from_der_content(&[7])).unwrap();
        let fake = CaIssuer::new(
            vec![fake],
            keys::PrivateKey::from_pem(&bob_key.to_pem()).unwrap(),
        )
        .unwrap();
        crl_of(&fake, 9, &[victim_serial.as_bytes()], now, None)
    };
    let mut bad_signature = crl_of(&alice.issuer, 9, &[victim_serial.as_bytes()], now, None);
    *bad_signature.last_mut().unwrap() ^= 0x01;
    let not_signed = "failure: CRL not signed by the uploading certificate's issuer alice";
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        ("signed by a sibling's CA", forged, not_signed.to_owned()),
        (
            "another issuer",
            crl_of(&bob.issuer, 9, &[victim_serial.as_bytes()], now, None),
            "failure: CRL issuer CN=bob is not the uploading certificate's issuer CN=alice"
                .to_owned(),
        ),
        (
            "replayed",
            stored.clone(),
            "failure: CRL number 5 is not greater than the stored 5".to_owned(),
        ),
        (
            "lower number",
            crl_of(&alice.issuer, 3, &[victim_serial.as_bytes()], now, None),
            "failure: CRL number 3 is not greater than the stored 5".to_owned(),
        ),
        ("bad signature", bad_signature, not_signed.to_owned()),
        (
            "thisUpdate in the future",
            crl_of(&alice.issuer, 9, &[], now + 3600, None),
            "failure: invalid CRL: CRL thisUpdate".to_owned(),
        ),
        (
            "oversized stream",
            vec![0x30; 5000],
            "failure: reading tls chunk: CRL exceeds the limit of 4096 octets".to_owned(),
        ),
        (
            "truncated CRL",
            stored[..stored.len() / 2].to_vec(),
            "failure: invalid CRL: malformed CRL".to_owned(),
        ),
    ];
    for (case, crl, expected) in cases {
        let answer = upload(&world, &uploader, &crl);
        assert_eq!(answer.len(), 1, "{case}: {answer:?}");
        assert!(answer[0].starts_with(&expected), "{case}: {answer:?}");
    }
    // Expired: nextUpdate an hour ago.
    let expired = crl_of(
        &alice.issuer,
        9,
        &[victim_serial.as_bytes()],
        now - 7200,
        Some(now - 3600),
    );
    let answer = upload(&world, &uploader, &expired);
    let rfc3339 = |t: i64| {
        OffsetDateTime::from_unix_timestamp(t)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    assert!(
        answer[0].starts_with(&format!(
            "failure: CRL expired: nextUpdate {} has passed (now ",
            rfc3339(now - 3600)
        )),
        "{answer:?}"
    );
    // A stream cut before its end (no terminator, connection dropped).
    let mut client = world.connect(&uploader);
    client.send_chunk(&stored[..100]).unwrap();
    client.drop_connection();

    // Nothing changed: the stored file, what the server reports, and the victim is
    // served.
    assert_eq!(std::fs::read(&file).unwrap(), stored);
    assert_eq!(info(), info_before);
    let frames = world.connect(&victim).read_all().unwrap();
    assert!(
        matches!(frames[0].payload, Payload::Success(_)),
        "{frames:?}"
    );
}

#[test]
fn restart_keeps_crls_and_sighup_applies_operator_crls() {
    let mut world = World::new(&[]);
    world.tenant("alice", "root", "4", "512", "100");
    world.tenant("bob", "root", "2", "256", "10");
    world.signed_create_leaf("old", "alice");
    world.start();
    world.create("alice", "web");
    world.create("bob", "svc");
    let old = world.serial("old.pem");
    world.remote_ok("alice", &["revoke", "--cert", "old.pem"]);
    let info_before = world.remote_ok("alice", &["revoke", "--info"]);

    world.stop();
    world.start();
    let refused = world.petrel(&[
        "certificate",
        "old.pem",
        "old.key",
        "-d",
        &world.dest(),
        "--server-ca",
        "cacert.pem",
    ]);
    assert_eq!(
        (refused.code, refused.stderr),
        (
            117,
            format!("petrel: certificate old (serial {old}) is revoked\n")
        )
    );
    assert_eq!(world.remote_ok("alice", &["revoke", "--info"]), info_before);
    assert_eq!(world.unikernels(), strings(&["alice:web", "bob:svc"]));

    // Open consoles: bob's and alice's.
    let console = Command::Console(ConsoleCmd::Subscribe(SinceCount::Count(10)));
    let bob_leaf = world.ca("bob").leaf(Some("svc"), &console);
    let alice_leaf = world.ca("alice").leaf(Some("web"), &console);
    let mut bob_console = world.connect(&bob_leaf);
    let mut alice_console = world.connect(&alice_leaf);
    for client in [&mut bob_console, &mut alice_console] {
        assert!(matches!(
            client.read_frame().unwrap().unwrap().payload,
            Payload::Success(_)
        ));
        assert_console_line(client, "hello");
    }

    // The root's CRL revoking alice, dropped into the state directory's crls/ folder.
    world.ok(&[
        "revoke",
        "--ca",
        "cacert.pem",
        "--ca-key",
        "root.key",
        "--cert",
        "alice.pem",
        "--crl",
        "state/crls/root.crl",
    ]);
    world.endpoint().signal(libc::SIGHUP);
    world.endpoint().wait_for_log("operator CRLs reloaded");
    let alice = world.serial("alice.pem");
    let run = world.remote("alice", &["info"]);
    assert_eq!(
        (run.code, run.stderr),
        (
            117,
            format!("petrel: certificate alice (serial {alice}) is revoked\n")
        )
    );
    assert_eq!(world.unikernels(), strings(&["bob:svc"]));
    assert_eq!(world.policies(), strings(&[":", "bob:"]));
    // alice's console was closed, naming the revoked certificate.
    assert_eq!(
        alice_console
            .read_all()
            .unwrap()
            .iter()
            .map(|w| text(&w.payload))
            .collect::<Vec<_>>(),
        vec![format!(
            "failure: certificate with serial {alice} is revoked"
        )]
    );
    // bob's is still open: it shows the line of the restarted unikernel.
    assert_eq!(
        world.remote_ok("bob", &["restart", "svc"]),
        "created unikernel\n"
    );
    assert_console_line(&mut bob_console, "hello");
    bob_console.close();

    // The root sees what it holds; after a restart it still holds it.
    let info = world.remote_ok("root", &["revoke", "--info"]);
    assert!(info.contains("\"origin\":\"operator "), "{info}");
    world.stop();
    world.start();
    let run = world.remote("alice", &["info"]);
    assert_eq!(run.code, 117);
    assert_eq!(world.unikernels(), strings(&["bob:svc"]));
}

/// Reads console lines (the stand-in's banner first) until `expected`.
fn assert_console_line(client: &mut Client, expected: &str) {
    let mut seen = Vec::new();
    while seen.len() < 20 {
        match client.read_frame().unwrap().map(|w| w.payload) {
            Some(Payload::Data(Data::Console { line, .. })) if line == expected => return,
            Some(Payload::Data(Data::Console { line, .. })) => seen.push(line),
            other => panic!("expected the console line {expected:?}, got {other:?} after {seen:?}"),
        }
    }
    panic!("no console line {expected:?} in {seen:?}");
}

#[test]
fn crls_made_by_openssl_are_operator_crls() {
    let mut world = World::new(&[]);
    world.tenant("alice", "root", "4", "512", "100");
    world.tenant("bob", "root", "2", "256", "10");
    world.start();
    world.create("alice", "web");
    world.create("bob", "svc");
    world.stop();

    // `openssl ca` with the key petrel wrote revokes alice and makes the CRL.
    std::fs::write(world.path("index.txt"), "").unwrap();
    std::fs::write(world.path("crlnumber"), "01\n").unwrap();
    std::fs::write(
        world.path("ca.cnf"),
        "[ ca ]\ndefault_ca = test\n[ test ]\ndatabase = index.txt\ncrlnumber = crlnumber\n\
         default_md = default\ndefault_crl_days = 7\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let out = Process::new("openssl")
            .args(args)
            .current_dir(world.d())
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ca = [
        "-config",
        "ca.cnf",
        "-keyfile",
        "root.key",
        "-cert",
        "cacert.pem",
    ];
    openssl(&[&["ca"][..], &ca, &["-revoke", "alice.pem"]].concat());
    openssl(&[&["ca"][..], &ca, &["-gencrl", "-out", "root.crl"]].concat());

    world.extra = strings(&["--crl", "root.crl"]);
    world.start();
    world.endpoint().wait_for_log("operator CRL loaded");
    let alice = world.serial("alice.pem");
    let run = world.remote("alice", &["info"]);
    assert_eq!(
        (run.code, run.stderr),
        (
            117,
            format!("petrel: certificate alice (serial {alice}) is revoked\n")
        )
    );
    // Nothing alice created was restored.
    assert_eq!(world.unikernels(), strings(&["bob:svc"]));
    assert_eq!(world.policies(), strings(&[":", "bob:"]));
    let info: Value =
        serde_json::from_str(world.remote_ok("root", &["revoke", "--info"]).trim_end()).unwrap();
    assert_eq!(info["crls"][0]["crl_number"], "1");
    assert_eq!(info["crls"][0]["revoked"], serde_json::json!([alice]));
    assert_eq!(
        info["crls"][0]["origin"],
        format!("operator {}", world.path("root.crl").display())
    );
}

#[test]
fn on_revoke_keep_blocks_access_and_keeps_work() {
    let mut world = World::new(&["--on-revoke", "keep"]);
    world.tenant("alice", "root", "4", "512", "100");
    world.start();
    world.create("alice", "web");
    let pid = world.pid("alice:web");
    let run = world.remote("root", &["revoke", "--cert", "alice.pem"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout.lines().nth(1),
        Some(
            "stored CRL number 1 of CN=root; 1 certificate newly revoked; kept 1 unikernel \
             (alice:web), 0 block devices and 1 policy (alice:) (--on-revoke keep); closed 0 \
             console subscriptions"
        )
    );
    assert!(process_exists(pid));
    assert_eq!(world.unikernels(), strings(&["alice:web"]));
    assert_eq!(world.policies(), strings(&[":", "alice:"]));
    let alice = world.serial("alice.pem");
    let run = world.remote("alice", &["destroy", "web"]);
    assert_eq!(
        (run.code, run.stderr),
        (
            117,
            format!("petrel: certificate alice (serial {alice}) is revoked\n")
        )
    );

    // Kept unikernels are restored after a restart; access stays blocked.
    world.stop();
    world.start();
    assert_eq!(world.unikernels(), strings(&["alice:web"]));
    assert_eq!(world.remote("alice", &["info"]).code, 117);
}

#[test]
fn an_operator_crl_of_an_unknown_issuer_waits_for_its_chain() {
    let mut world = World::new(&[]);
    world.tenant("alice", "root", "4", "512", "100");
    world.signed_create_leaf("web", "alice");
    // alice's CRL, before the endpoint has ever seen alice's certificate.
    world.ok(&[
        "revoke",
        "--ca",
        "alice.pem",
        "--ca-key",
        "alice.key",
        "--cert",
        "web.pem",
        "--crl",
        "alice.crl",
    ]);
    world.extra = strings(&["--crl", "alice.crl"]);
    world.start();
    world
        .endpoint()
        .wait_for_log("operator CRL pending: its issuer is not known yet");
    let info: Value =
        serde_json::from_str(world.remote_ok("root", &["revoke", "--info"]).trim_end()).unwrap();
    assert_eq!(info["crls"], serde_json::json!([]));

    // The first chain presenting alice is the revoked leaf itself: the CRL is verified
    // and applied before its command runs.
    let web = world.serial("web.pem");
    let run = world.petrel(&[
        "certificate",
        "web.pem",
        "web.key",
        "-d",
        &world.dest(),
        "--server-ca",
        "cacert.pem",
    ]);
    assert_eq!(
        (run.code, run.stderr),
        (
            117,
            format!("petrel: certificate web (serial {web}) is revoked\n")
        )
    );
    world
        .endpoint()
        .wait_for_log("pending operator CRLs applied");
    assert_eq!(world.unikernels(), Vec::<String>::new());
    let info: Value =
        serde_json::from_str(world.remote_ok("alice", &["revoke", "--info"]).trim_end()).unwrap();
    assert_eq!(info["crls"][0]["subject"], "CN=alice");
    assert_eq!(info["crls"][0]["revoked"], serde_json::json!([web]));
}
