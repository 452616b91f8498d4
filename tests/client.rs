//! The `petrel` binary: the CA tool (`generate`, `sign`, `--csr`), the client-side checks,
//! and remote requests against a small rustls test server (`tests/common/tls_server.rs`).
//! Every test runs the real binary in a temporary directory.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use petrel::chain;
use petrel::codec::{
    self, BlockCmd, BlockData, Command, ConsoleCmd, Data, FailBehaviour, Header, InfoEntry,
    NetDeviceSpec, Payload, PolicyCmd, SinceCount, Success, Timestamp, UnikernelCmd,
    UnikernelConfig, UnikernelInfo, Wire,
};
use petrel::executor::manifest::{Device, Target, build_test_image};
use petrel::name::Name;
use petrel::pki::cert::{CaIssuer, Certificate, CertificateTemplate, Criticality, Serial};
use petrel::pki::csr::create_csr;
use petrel::pki::facts::{BasicConstraints, KeyPurpose};
use petrel::pki::keys::load_key_file;
use petrel::pki::{AltName, CommonName, KeyType, PrivateKey, Profile, Subject, Validity};
use petrel::policy::Policy;
use petrel::verify::TrustAnchors;

use common::cli::{ok, petrel};
use common::tls_server::{Identity, Observed, TestServer};

/// The solo5 image vector with a network device `service` and a block device `storage`.
const IMAGE_VECTOR: &str = "tests/manifest/hvt-x86_64.net-service.block-storage.hvt";

/// Text of a missing final reply (Note T1).
const NO_FINAL_REPLY: &str = "petrel: the server closed the connection without a final reply\n";

fn certificates(path: &Path) -> Vec<Certificate> {
    Certificate::from_pem_chain(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn command_of(cert: &Certificate) -> Command {
    let facts = cert.facts().unwrap();
    assert_eq!(facts.albatross.len(), 1);
    assert!(!facts.albatross[0].critical);
    codec::decode_extension(&facts.albatross[0].value)
        .unwrap()
        .command
}

fn user_policy() -> Policy {
    Policy {
        unikernels: 4,
        cpuids: [0, 1].into(),
        memory: 1024,
        block: Some(100),
        bridges: ["service".to_owned()].into(),
    }
}

/// A directory with `generate root db.txt` done and the intermediate CA `user`
/// (policy of [`user_policy`]) delegated through `add-policy --csr` and `sign`.
fn pki() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["generate", "root", "db.txt"]);
    ok(
        d,
        &[
            "add-policy",
            "user",
            "4",
            "--mem",
            "1024",
            "--cpu",
            "0",
            "--cpu",
            "1",
            "--bridge",
            "service",
            "--size",
            "100",
            "--csr",
        ],
    );
    ok(d, &["sign", "cacert.pem", "db.txt", "root.key", "user.req"]);
    dir
}

/// The server identity `generate` made, accepting clients of the same root.
fn identity(dir: &Path) -> Identity {
    Identity {
        cert_pem: std::fs::read_to_string(dir.join("server.pem")).unwrap(),
        key_pem: std::fs::read_to_string(dir.join("server.key")).unwrap(),
        client_ca_pem: std::fs::read_to_string(dir.join("cacert.pem")).unwrap(),
    }
}

/// The image vector followed by `extra` octets that do not compress.
fn image(dir: &Path, extra: usize) -> (PathBuf, Vec<u8>) {
    let mut bytes = std::fs::read(IMAGE_VECTOR).unwrap();
    let mut x: u32 = 0x1234_5678;
    for _ in 0..extra {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes.push(x as u8);
    }
    let path = dir.join("unikernel.hvt");
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn reply(name: &str, payload: Payload) -> Wire {
    Wire::new(Header::new(0, Name::parse(name).unwrap()), payload)
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Arguments that send a request issued by `user` to `server`.
fn remote<'a>(server: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["-d", server, "--ca", "user.pem", "--ca-key", "user.key"]);
    all
}

/// The leaf of an observed chain: a 300-second destination leaf with `command` and
/// common name `cn`, followed by the `user` CA certificate.
fn check_destination_leaf(dir: &Path, observed: &Observed, cn: &str) -> Command {
    assert_eq!(observed.handshake_error, None);
    let user = certificates(&dir.join("user.pem"));
    assert_eq!(observed.chain.len(), 2);
    assert_eq!(observed.chain[1], user[0].der());
    let leaf = Certificate::from_der(observed.chain[0].clone());
    let facts = leaf.facts().unwrap();
    assert_eq!(facts.common_name, CommonName::One(cn.to_owned()));
    assert_eq!(facts.issuer.text(), "CN=user");
    assert_eq!(facts.not_after - facts.not_before, 310);
    assert_eq!(
        facts.basic_constraints,
        Some(BasicConstraints {
            critical: true,
            ca: false,
            path_len: None
        })
    );
    assert_eq!(
        facts.extended_key_usage.unwrap().purposes,
        [KeyPurpose::ClientAuth]
    );
    command_of(&leaf)
}

#[test]
fn generate_writes_the_root_ca_and_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = ok(
        d,
        &[
            "generate",
            "root",
            "db.txt",
            "--server-name",
            "host.example",
            "--server-days",
            "30",
        ],
    );
    assert_eq!(
        run.stdout,
        format!(
            "wrote ./root.key (new key)\nwrote ./cacert.pem\nwrote ./server.key (new key)\nwrote ./server.pem (serial {})\n",
            certificates(&d.join("server.pem"))[0]
                .facts()
                .unwrap()
                .serial
        )
    );
    assert_eq!(mode(&d.join("root.key")), 0o600);
    assert_eq!(mode(&d.join("server.key")), 0o600);

    let root = certificates(&d.join("cacert.pem"));
    assert_eq!(root.len(), 1);
    let facts = root[0].facts().unwrap();
    assert_eq!(facts.subject.text(), "CN=root");
    assert_eq!(facts.issuer.text(), "CN=root");
    assert_eq!(facts.not_after - facts.not_before, 3650 * 86400 + 10);
    assert!(facts.basic_constraints.unwrap().ca);
    assert_eq!(
        facts.key_usage.unwrap().names(),
        [
            "digitalSignature",
            "contentCommitment",
            "keyCertSign",
            "cRLSign"
        ]
    );
    assert_eq!(facts.subject_key_id, None);
    assert_eq!(facts.authority_key_id, None);
    assert!(facts.albatross.is_empty());

    let server = certificates(&d.join("server.pem"));
    assert_eq!(server.len(), 1, "only the server certificate, no chain");
    let facts = server[0].facts().unwrap();
    assert_eq!(facts.subject.text(), "CN=server");
    assert_eq!(facts.issuer.text(), "CN=root");
    assert_eq!(facts.not_after - facts.not_before, 30 * 86400 + 10);
    assert!(!facts.basic_constraints.unwrap().ca);
    assert_eq!(
        facts.extended_key_usage.unwrap().purposes,
        [KeyPurpose::ServerAuth]
    );
    assert_eq!(
        facts.alt_names,
        [
            "DNS:server",
            "DNS:localhost",
            "IP:127.0.0.1",
            "DNS:host.example"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(d.join("db.txt")).unwrap(),
        format!("{} server\n", facts.serial.hex())
    );

    // Keys are reused, never overwritten.
    let key = std::fs::read(d.join("root.key")).unwrap();
    let run = ok(d, &["generate", "root", "db.txt"]);
    assert!(
        run.stdout.starts_with("reused ./root.key\n"),
        "{}",
        run.stdout
    );
    assert_eq!(std::fs::read(d.join("root.key")).unwrap(), key);
    assert_eq!(
        std::fs::read_to_string(d.join("db.txt"))
            .unwrap()
            .lines()
            .count(),
        2
    );
}

#[test]
fn delegation_and_create_through_csrs() {
    let dir = pki();
    let d = dir.path();
    assert_eq!(mode(&d.join("user.key")), 0o600);
    let user = certificates(&d.join("user.pem"));
    assert_eq!(
        user.len(),
        1,
        "the root is self-signed: the chain is the new certificate"
    );
    let facts = user[0].facts().unwrap();
    assert_eq!(facts.subject.text(), "CN=user");
    assert_eq!(facts.issuer.text(), "CN=root");
    assert!(facts.basic_constraints.unwrap().ca);
    assert_eq!(facts.not_after - facts.not_before, 365 * 86400 + 10);
    assert!(facts.subject_key_id.is_some());
    assert_eq!(
        command_of(&user[0]),
        Command::Policy(PolicyCmd::Add(user_policy()))
    );

    let (image, bytes) = image(d, 0);
    let image = image.to_str().unwrap();
    let run = ok(
        d,
        &[
            "create",
            "web",
            image,
            "--net",
            "service",
            "--block",
            "storage",
            "--mem",
            "64",
            "--arg=--hello=hi",
            "--restart-on-fail",
            "--exit-code",
            "3",
            "--csr",
        ],
    );
    assert_eq!(
        run.stdout,
        "wrote ./web.key (new key)\nwrote ./web.req (common name \"web\", unikernel create)\n"
    );
    let run = ok(d, &["sign", "user.pem", "db.txt", "user.key", "web.req"]);
    assert!(run.stdout.ends_with("wrote ./web.pem\n"), "{}", run.stdout);

    let chain = certificates(&d.join("web.pem"));
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], user[0]);
    let facts = chain[0].facts().unwrap();
    assert_eq!(facts.not_after - facts.not_before, 86400 + 10);
    assert_eq!(
        facts.extended_key_usage.unwrap().purposes,
        [KeyPurpose::ClientAuth]
    );
    let Command::Unikernel(UnikernelCmd::Create(config)) = command_of(&chain[0]) else {
        panic!("not a create");
    };
    assert!(config.compressed);
    assert_eq!(inflate(&config.image), bytes);
    assert_eq!(
        UnikernelConfig {
            image: Vec::new(),
            ..config
        },
        UnikernelConfig {
            compressed: true,
            memory: 64,
            bridges: vec![NetDeviceSpec::named("service".into())],
            blocks: vec![codec::BlockDeviceSpec::named("storage".into())],
            arguments: Some(vec!["--hello=hi".into()]),
            fail_behaviour: FailBehaviour::Restart([3].into()),
            ..UnikernelConfig::default()
        }
    );

    let db = std::fs::read_to_string(d.join("db.txt")).unwrap();
    let lines: Vec<&str> = db.lines().collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[1],
        format!("{} user", user[0].facts().unwrap().serial.hex())
    );
    assert_eq!(lines[2], format!("{} web", facts.serial.hex()));

    // The endpoint's view of this chain: name user:web under the policy of user.
    let anchors = TrustAnchors::from_pem(&std::fs::read(d.join("cacert.pem")).unwrap()).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let request = chain::decode_request(&anchors.verify(&chain, now).unwrap()).unwrap();
    assert_eq!(request.name.text(), "user:web");
    assert_eq!(request.policies.len(), 1);
    assert_eq!(request.policies[0].policy, user_policy());
}

/// A CSR for `command` with common name `cn`, made with petrel's own CSR builder.
fn write_csr(dir: &Path, cn: &str, command: &Command) -> String {
    let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
    let csr = create_csr(cn, Some(&codec::encode_extension(command)), &key).unwrap();
    let file = format!("{cn}.req");
    std::fs::write(dir.join(&file), csr.pem()).unwrap();
    file
}

#[test]
fn sign_refuses_what_the_ca_policy_does_not_allow() {
    let dir = pki();
    let d = dir.path();
    let add = |p: Policy| Command::Policy(PolicyCmd::Add(p));
    let policy = |unikernels, cpuids: &[i64], memory, block, bridges: &[&str]| Policy {
        unikernels,
        cpuids: cpuids.iter().copied().collect(),
        memory,
        block,
        bridges: bridges.iter().map(|b| b.to_string()).collect(),
    };
    let create = |cpuids: &[i64], memory, bridge: &str| {
        Command::Unikernel(UnikernelCmd::Create(UnikernelConfig {
            cpuids: cpuids.iter().copied().collect(),
            memory,
            bridges: vec![NetDeviceSpec {
                netif: "service".into(),
                bridge: Some(bridge.into()),
                mac: None,
            }],
            ..UnikernelConfig::default()
        }))
    };
    let cases = [
        (
            add(policy(0, &[0], 512, None, &[])),
            "Unusable policy with no unikernels",
        ),
        (
            add(policy(1, &[], 512, None, &[])),
            "Unusable policy with no CPUids",
        ),
        (
            add(policy(1, &[0], 16, None, &[])),
            "Unusable policy with memory 16 MB <= 16 MB",
        ),
        (
            add(policy(1, &[0], 512, Some(-1), &[])),
            "Unusable policy with block -1 MB < 0 MB",
        ),
        (
            add(policy(8, &[0], 512, None, &[])),
            "policy above allows 4 unikernels, which is fewer than 8",
        ),
        (
            add(policy(1, &[0], 2048, None, &[])),
            "policy above allows 1024 MB memory, which is fewer than 2048 MB",
        ),
        (
            add(policy(1, &[0, 2, 3], 512, None, &[])),
            "policy above does not allow CPUids 2, 3",
        ),
        (
            add(policy(1, &[0], 512, None, &["br1", "service"])),
            "policy above allows bridge(s) service, which is not a superset of br1, service",
        ),
        (
            add(policy(1, &[0], 512, Some(101), &[])),
            "policy above allows 100 MB block storage, which is fewer than 101 MB",
        ),
        (
            create(&[0, 5], 64, "service"),
            "the CPUids 5 requested by the unikernel are not allowed by policy",
        ),
        (
            create(&[1], 2048, "service"),
            "2048 MB memory assigned to unikernel exceeds policy (1024MB)",
        ),
        (
            create(&[0], 64, "br9"),
            "Bridge(s) br9 not allowed by policy (available: service)",
        ),
    ];
    for (i, (command, text)) in cases.iter().enumerate() {
        let csr = write_csr(d, &format!("c{i}"), command);
        let run = petrel(d, &["sign", "user.pem", "db.txt", "user.key", &csr]);
        assert_eq!(
            (run.code, run.stderr.as_str()),
            (124, format!("petrel: {text}\n").as_str())
        );
        assert!(!d.join(format!("c{i}.pem")).exists());
    }
    // Within the policy: signed.
    let csr = write_csr(
        d,
        "fine",
        &add(policy(2, &[1], 512, Some(50), &["service"])),
    );
    ok(d, &["sign", "user.pem", "db.txt", "user.key", &csr]);
    let csr = write_csr(d, "small", &create(&[1], 1024, "service"));
    ok(d, &["sign", "user.pem", "db.txt", "user.key", &csr]);
    // Only the three certificates of the fixture and these two were recorded.
    let db = std::fs::read_to_string(d.join("db.txt")).unwrap();
    assert_eq!(db.lines().count(), 4);

    // The client refuses an unusable policy before writing anything.
    let run = petrel(d, &["add-policy", "tiny", "1", "--mem", "16", "--csr"]);
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (124, "petrel: Unusable policy with memory 16 MB <= 16 MB\n")
    );
    assert!(!d.join("tiny.req").exists());
}

#[test]
fn sign_accepts_a_csr_made_by_openssl() {
    let dir = pki();
    let d = dir.path();
    let openssl = |args: &[&str]| {
        let status = Process::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .unwrap();
        assert!(status.status.success(), "openssl {args:?}: {status:?}");
    };
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", "foo.key"]);
    // Example 2 of spec/wire.md §12: console subscribe, count 20.
    openssl(&[
        "req",
        "-new",
        "-key",
        "foo.key",
        "-subj",
        "/CN=foo",
        "-addext",
        "1.3.6.1.4.1.49836.42=DER:300C020105A007A205A103020114",
        "-out",
        "foo.req",
    ]);
    let run = ok(d, &["sign", "user.pem", "db.txt", "user.key", "foo.req"]);
    assert!(run.stdout.contains("console subscribe"), "{}", run.stdout);
    let chain = certificates(&d.join("foo.pem"));
    assert_eq!(
        command_of(&chain[0]),
        Command::Console(ConsoleCmd::Subscribe(SinceCount::Count(20)))
    );
    assert_eq!(
        chain[0].facts().unwrap().albatross[0].value,
        hex::decode("300C020105A007A205A103020114").unwrap()
    );
    // Example 3: the policy of the upstream intermediate "arc" (1 unikernel, CPU 0,
    // 512 MB) fits user's policy and becomes an intermediate CA.
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", "arc.key"]);
    openssl(&[
        "req",
        "-new",
        "-key",
        "arc.key",
        "-subj",
        "/CN=arc",
        "-addext",
        "1.3.6.1.4.1.49836.42=DER:3017020105A412A110300E30030201000201010202020030 00"
            .replace(' ', "")
            .as_str(),
        "-out",
        "arc.req",
    ]);
    ok(d, &["sign", "user.pem", "db.txt", "user.key", "arc.req"]);
    let chain = certificates(&d.join("arc.pem"));
    assert!(chain[0].facts().unwrap().basic_constraints.unwrap().ca);
    assert_eq!(chain[1], certificates(&d.join("user.pem"))[0]);
}

#[test]
fn requests_refused_on_the_client() {
    let dir = pki();
    let d = dir.path();
    let (image, _) = image(d, 0);
    let image = image.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["destroy", "a:web", "--csr"], "non-empty path"),
        (&["info", "a:", "--csr"], "non-empty path"),
        (
            &["destroy", "web"],
            "one of --destination HOST[:PORT] or --csr is required",
        ),
        (
            &[
                "create", "web", image, "--net", "other", "--block", "storage", "--csr",
            ],
            "specified bridge(s) does not match with the manifest. Devices present in manifest: net \"service\", block \"storage\"",
        ),
        (
            &["create", "web", image, "--net", "service", "--csr"],
            "specified block device(s) does not match with manifest. Devices present in manifest: net \"service\", block \"storage\"",
        ),
        (
            &[
                "create",
                "web",
                image,
                "--net",
                "service",
                "--net",
                "service:br1",
                "--block",
                "storage",
                "--csr",
            ],
            "Bridge names must be a set",
        ),
    ];
    for (args, text) in cases {
        let run = petrel(d, args);
        assert_eq!(
            (run.code, run.stderr.as_str()),
            (124, format!("petrel: {text}\n").as_str()),
            "{args:?}"
        );
    }
    // Bad flag values are command-line errors too.
    let run = petrel(
        d,
        &["create", "web", image, "--block", "storage@1000", "--csr"],
    );
    assert_eq!(run.code, 124);
    assert!(
        run.stderr
            .contains("sector size must be a power of two greater than or equal 512"),
        "{}",
        run.stderr
    );

    // The CA key must belong to the CA certificate (checked before connecting).
    let run = petrel(
        d,
        &[
            "info",
            "-d",
            "127.0.0.1:9",
            "--ca",
            "user.pem",
            "--ca-key",
            "root.key",
        ],
    );
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (
            124,
            "petrel: Public key of certificate doesn't match private key\n"
        )
    );
    // A create exceeding the CA's policy is refused before connecting.
    let run = petrel(
        d,
        &remote(
            "127.0.0.1:9",
            &[
                "create", "web", image, "--net", "service", "--block", "storage", "--mem", "2048",
            ],
        ),
    );
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (
            124,
            "petrel: 2048 MB memory assigned to unikernel exceeds policy (1024MB)\n"
        )
    );
}

#[test]
fn info_presents_leaf_and_ca_and_prints_the_reply() {
    let dir = pki();
    let d = dir.path();
    let info = UnikernelInfo {
        typ: codec::Typ::Solo5,
        startup: None,
        fail_behaviour: FailBehaviour::Quit,
        cpuids: [1].into(),
        memory: 64,
        digest: vec![0x12; 32],
        blocks: Vec::new(),
        bridges: Vec::new(),
        arguments: Some(vec!["--hello=hi".into()]),
        started: Timestamp::from_unix_seconds(1_755_867_883).unwrap(),
        cpus: 1,
        linux_boot_partition: None,
    };
    let answer = reply(
        "user:",
        Payload::Success(Success::UnikernelInfo(vec![InfoEntry {
            name: Name::parse(":web").unwrap(),
            info,
        }])),
    );
    let server = TestServer::start(&identity(d), false, vec![answer.clone()]);
    let run = ok(d, &remote(&server.destination(), &["info"]));
    let observed = server.observed();
    assert_eq!(
        check_destination_leaf(d, &observed, "."),
        Command::Unikernel(UnikernelCmd::Info)
    );
    assert_eq!(
        run.stdout,
        "NAME  TYPE   CPUIDS  MEMORY  STARTED               ON EXIT  NETWORK  BLOCK  DIGEST            ARGUMENTS\n\
         :web  solo5  1       64 MB   2025-08-22T13:04:43Z  quit     -        -      1212121212121212  --hello=hi\n"
    );

    // The same with --json and a unikernel name: one JSON document per frame.
    let server = TestServer::start(&identity(d), false, vec![answer.clone()]);
    let run = ok(
        d,
        &remote(
            &server.destination(),
            &["info", "web", "--json", "--key-type", "p256"],
        ),
    );
    let observed = server.observed();
    assert_eq!(
        check_destination_leaf(d, &observed, "web"),
        Command::Unikernel(UnikernelCmd::Info)
    );
    let json: serde_json::Value = serde_json::from_str(run.stdout.trim_end()).unwrap();
    assert_eq!(json, serde_json::to_value(&answer).unwrap());
    assert_eq!(
        json["payload"]["success"]["unikernelInfo"][0]["info"]["memory"],
        64
    );
}

#[test]
fn create_streams_the_image_in_chunks() {
    let dir = pki();
    let d = dir.path();
    let (image, bytes) = image(d, 300_000);
    let image = image.to_str().unwrap();
    for level in ["9", "0"] {
        let server = TestServer::start(
            &identity(d),
            true,
            vec![reply(":web", Payload::success_string("created unikernel"))],
        );
        let run = ok(
            d,
            &remote(
                &server.destination(),
                &[
                    "create",
                    "web",
                    image,
                    "--net",
                    "service",
                    "--block",
                    "storage",
                    "--cpu",
                    "1",
                    "--compression-level",
                    level,
                    "--progress",
                ],
            ),
        );
        assert_eq!(run.stdout, "created unikernel\n");
        assert!(
            run.stderr.contains("sending unikernel.hvt: "),
            "{}",
            run.stderr
        );
        assert!(run.stderr.ends_with("(100%)\n"), "{}", run.stderr);
        let observed = server.observed();
        let Command::Unikernel(UnikernelCmd::Create(config)) =
            check_destination_leaf(d, &observed, "web")
        else {
            panic!("not a create");
        };
        assert!(
            config.image.is_empty(),
            "the image is streamed, not embedded"
        );
        assert_eq!(config.compressed, level == "9");
        assert_eq!(config.cpuids, [1].into());
        assert!(observed.terminated);
        assert!(observed.chunks.len() > 1);
        assert!(
            observed
                .chunks
                .iter()
                .all(|c| !c.is_empty() && c.len() <= 64 * 1024)
        );
        let stream = observed.chunks.concat();
        if level == "9" {
            assert_eq!(inflate(&stream), bytes);
        } else {
            assert_eq!(observed.chunks[0].len(), 64 * 1024);
            assert_eq!(stream, bytes);
        }
    }
}

#[test]
fn create_with_embedded_image() {
    let dir = pki();
    let d = dir.path();
    let (image, bytes) = image(d, 1000);
    let server = TestServer::start(
        &identity(d),
        false,
        vec![reply(":web", Payload::success_string("created unikernel"))],
    );
    ok(
        d,
        &remote(
            &server.destination(),
            &[
                "force-create",
                "web",
                image.to_str().unwrap(),
                "--net",
                "service",
                "--block",
                "storage",
                "--embed-image",
            ],
        ),
    );
    let observed = server.observed();
    let Command::Unikernel(UnikernelCmd::ForceCreate(config)) =
        check_destination_leaf(d, &observed, "web")
    else {
        panic!("not a force-create");
    };
    assert!(config.compressed);
    assert_eq!(inflate(&config.image), bytes);
    assert!(observed.chunks.is_empty());
}

#[test]
fn failure_frame_exits_117() {
    let dir = pki();
    let d = dir.path();
    let server = TestServer::start(
        &identity(d),
        false,
        vec![reply(":web", Payload::failure("destroy: not found"))],
    );
    let run = petrel(d, &remote(&server.destination(), &["destroy", "web"]));
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (117, "", "petrel: destroy: not found\n")
    );
    assert_eq!(
        check_destination_leaf(d, &server.observed(), "web"),
        Command::Unikernel(UnikernelCmd::Destroy)
    );
}

#[test]
fn silent_close_exits_121() {
    let dir = pki();
    let d = dir.path();
    let server = TestServer::start(&identity(d), false, Vec::new());
    let run = petrel(d, &remote(&server.destination(), &["restart", "web"]));
    assert_eq!((run.code, run.stderr.as_str()), (121, NO_FINAL_REPLY));
    assert_eq!(
        check_destination_leaf(d, &server.observed(), "web"),
        Command::Unikernel(UnikernelCmd::Restart(codec::RestartArgs::NoArguments))
    );
    // A reply cut in the middle.
    let bytes = codec::frame(&codec::encode_wire(&reply(
        ":web",
        Payload::success_string("x"),
    )))
    .unwrap();
    let server =
        TestServer::start_raw(&identity(d), false, vec![bytes[..bytes.len() - 2].to_vec()]);
    let run = petrel(d, &remote(&server.destination(), &["destroy", "web"]));
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (
            121,
            "petrel: the connection ended in the middle of a frame\n"
        )
    );
    server.observed();
}

#[test]
fn connection_refused_exits_122() {
    let dir = pki();
    let d = dir.path();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let destination = format!("127.0.0.1:{port}");
    let run = petrel(d, &remote(&destination, &["info"]));
    assert_eq!(run.code, 122, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with(&format!("petrel: couldn't connect to {destination}: ")),
        "{}",
        run.stderr
    );
}

/// A server certificate for `other.example` only, issued by the fixture's root.
fn other_name_identity(d: &Path) -> Identity {
    let root = CaIssuer::from_pem(
        &std::fs::read_to_string(d.join("cacert.pem")).unwrap(),
        load_key_file(&d.join("root.key")).unwrap(),
    )
    .unwrap();
    let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
    let alt_names = [AltName::parse("other.example").unwrap()];
    let template = CertificateTemplate {
        profile: Profile::Server,
        subject: Subject::CommonName("other.example"),
        public_key: key.public_key(),
        albatross: None,
        albatross_criticality: Criticality::NonCritical,
        alt_names: &alt_names,
        validity: Validity::for_profile(time::OffsetDateTime::now_utc(), Profile::Server),
        serial: Serial::random(&mut rand::thread_rng()),
    };
    let cert = petrel::pki::cert::issue(&template, &root).unwrap();
    Identity {
        cert_pem: cert.pem(),
        key_pem: key.to_pem(),
        client_ca_pem: std::fs::read_to_string(d.join("cacert.pem")).unwrap(),
    }
}

#[test]
fn server_name_is_verified() {
    let dir = pki();
    let d = dir.path();
    let identity = other_name_identity(d);
    let server = TestServer::start(&identity, false, Vec::new());
    let run = petrel(d, &remote(&server.destination(), &["info"]));
    assert_eq!(run.code, 120, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("petrel: server authentication failed: invalid peer certificate: "),
        "{}",
        run.stderr
    );
    assert!(server.observed().handshake_error.is_some());

    // The name checked can be given explicitly.
    let server = TestServer::start(
        &identity,
        false,
        vec![reply(":", Payload::Success(Success::Policies(Vec::new())))],
    );
    let run = ok(
        d,
        &remote(
            &server.destination(),
            &["policy", "--server-name", "other.example"],
        ),
    );
    assert_eq!(
        run.stdout,
        "NAME  UNIKERNELS  CPUIDS  MEMORY  BLOCK  BRIDGES\n"
    );
    assert_eq!(
        check_destination_leaf(d, &server.observed(), "."),
        Command::Policy(PolicyCmd::Info)
    );
}

#[test]
fn certificate_rejected_by_the_server_exits_119() {
    let dir = pki();
    let d = dir.path();
    let other = tempfile::tempdir().unwrap();
    ok(other.path(), &["generate", "other", "db.txt"]);
    let identity = Identity {
        client_ca_pem: std::fs::read_to_string(other.path().join("cacert.pem")).unwrap(),
        ..identity(d)
    };
    let server = TestServer::start(&identity, false, Vec::new());
    let run = petrel(d, &remote(&server.destination(), &["info"]));
    assert_eq!(run.code, 119, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("petrel: the server rejected our certificate: received fatal alert: "),
        "{}",
        run.stderr
    );
    assert!(server.observed().handshake_error.is_some());
}

#[test]
fn local_chain_validation_exits_116() {
    let dir = pki();
    let d = dir.path();
    let other = tempfile::tempdir().unwrap();
    ok(other.path(), &["generate", "other", "db.txt"]);
    let server_ca = other.path().join("cacert.pem");
    let mut args = remote("127.0.0.1:9", &["info"]);
    args.extend(["--server-ca", server_ca.to_str().unwrap()]);
    let run = petrel(d, &args);
    assert_eq!(run.code, 116, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("petrel: TLS validation error of provided certificate chain: "),
        "{}",
        run.stderr
    );
}

#[test]
fn console_prints_timestamped_lines() {
    let dir = pki();
    let d = dir.path();
    let line = |ms: i64, text: &str| {
        reply(
            "user:web",
            Payload::Data(Data::Console {
                timestamp: Timestamp::from_millis(ms).unwrap(),
                line: text.into(),
            }),
        )
    };
    let server = TestServer::start(
        &identity(d),
        false,
        vec![
            reply("user:web", Payload::success_string("subscribed")),
            line(1_755_867_883_000, "hello world"),
            line(1_755_867_884_500, "second line"),
            reply(
                "user:web",
                Payload::failure("exception while reading from fd"),
            ),
        ],
    );
    let run = petrel(
        d,
        &remote(&server.destination(), &["console", "web", "--count", "5"]),
    );
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (
            117,
            "2025-08-22T13:04:43Z hello world\n2025-08-22T13:04:44.500Z second line\n",
            "subscribed\npetrel: exception while reading from fd\n"
        )
    );
    assert_eq!(
        check_destination_leaf(d, &server.observed(), "web"),
        Command::Console(ConsoleCmd::Subscribe(SinceCount::Count(5)))
    );

    let server = TestServer::start(
        &identity(d),
        false,
        vec![
            reply("user:web", Payload::success_string("waiting for VM")),
            reply("user:web", Payload::success_string("end of console")),
        ],
    );
    let run = ok(
        d,
        &remote(
            &server.destination(),
            &["console", "web", "--since", "2025-08-22T13:04:43Z"],
        ),
    );
    assert_eq!(run.stdout, "end of console\n");
    assert_eq!(
        check_destination_leaf(d, &server.observed(), "web"),
        Command::Console(ConsoleCmd::Subscribe(SinceCount::Since(
            Timestamp::from_unix_seconds(1_755_867_883).unwrap()
        )))
    );
}

#[test]
fn block_set_streams_and_block_dump_writes_the_file() {
    let dir = pki();
    let d = dir.path();
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(d.join("disk.img"), &content).unwrap();
    let server = TestServer::start(
        &identity(d),
        true,
        vec![reply(":disk", Payload::success_string("set block device"))],
    );
    let run = ok(
        d,
        &remote(
            &server.destination(),
            &["set-block", "disk", "disk.img", "--compression-level", "0"],
        ),
    );
    assert_eq!(run.stdout, "set block device\n");
    let observed = server.observed();
    assert_eq!(
        check_destination_leaf(d, &observed, "disk"),
        Command::Block(BlockCmd::Set(false))
    );
    assert!(observed.terminated);
    assert_eq!(observed.chunks.concat(), content);

    // The dump arrives compressed in pieces and is written inflated.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(9));
    z.write_all(&content).unwrap();
    let compressed = z.finish().unwrap();
    let mut frames = vec![reply(
        ":disk",
        Payload::Success(Success::BlockDeviceImage(true)),
    )];
    for piece in compressed.chunks(4096) {
        frames.push(reply(
            ":disk",
            Payload::Data(Data::Block(BlockData::SomeData(piece.to_vec()))),
        ));
    }
    frames.push(reply(
        ":disk",
        Payload::Data(Data::Block(BlockData::NoData)),
    ));
    let server = TestServer::start(&identity(d), false, frames);
    let run = ok(
        d,
        &remote(&server.destination(), &["block-dump", "disk", "dumped.img"]),
    );
    assert_eq!(
        run.stderr,
        "receiving block device :disk (compressed)\ndumped to dumped.img\n"
    );
    assert_eq!(std::fs::read(d.join("dumped.img")).unwrap(), content);
    assert_eq!(
        check_destination_leaf(d, &server.observed(), "disk"),
        Command::Block(BlockCmd::Dump(9))
    );

    // An existing file is not overwritten (checked before connecting).
    let run = petrel(
        d,
        &remote("127.0.0.1:9", &["dump-block", "disk", "dumped.img"]),
    );
    assert_eq!(run.code, 124);
    assert_eq!(
        run.stderr,
        "petrel: dumped.img: File exists (os error 17)\n"
    );
}

#[test]
fn certificate_sends_a_signed_chain() {
    let dir = pki();
    let d = dir.path();
    ok(d, &["block-info", "--csr"]);
    ok(d, &["sign", "user.pem", "db.txt", "user.key", "..req"]);
    let chain = certificates(&d.join("..pem"));
    let server = TestServer::start(
        &identity(d),
        false,
        vec![reply(
            "user:",
            Payload::Success(Success::BlockDevices(vec![codec::BlockDevice {
                name: Name::parse("disk").unwrap(),
                size: 10,
                active: true,
            }])),
        )],
    );
    let run = ok(
        d,
        &["certificate", "..pem", "..key", "-d", &server.destination()],
    );
    assert_eq!(run.stdout, "NAME   SIZE   ACTIVE\n:disk  10 MB  yes\n");
    let observed = server.observed();
    let sent: Vec<Vec<u8>> = chain.iter().map(|c| c.der().to_vec()).collect();
    assert_eq!(observed.chain, sent);
    assert_eq!(command_of(&chain[0]), Command::Block(BlockCmd::Info));
}

#[test]
fn help_and_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = ok(dir.path(), &["--help"]);
    for command in [
        "generate",
        "sign",
        "inspect",
        "create",
        "force-create",
        "destroy",
        "restart",
        "info",
        "policy",
        "add-policy",
        "console",
        "block-add",
        "block-remove",
        "block-info",
        "block-set",
        "block-dump",
        "certificate",
    ] {
        assert!(run.stdout.contains(&format!("  {command} ")), "{command}");
    }
    let run = petrel(dir.path(), &["create"]);
    assert_eq!(run.code, 124);
    let run = petrel(dir.path(), &["info", "--csr", "-d", "h"]);
    assert_eq!(run.code, 124);
    assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
}

#[test]
fn generated_test_image_passes_the_manifest_check() {
    // The executor's own test image builder works as an image for the client too.
    let dir = pki();
    let d = dir.path();
    let image = build_test_image(Target::Hvt, 2, &[Device::net("service")]);
    std::fs::write(d.join("small.hvt"), image).unwrap();
    ok(
        d,
        &["create", "small", "small.hvt", "--net", "service", "--csr"],
    );
    assert!(d.join("small.req").exists());
}

#[test]
fn restart_with_new_arguments() {
    let dir = pki();
    let d = dir.path();
    let run = petrel(
        d,
        &remote("127.0.0.1:9", &["restart", "web", "--mem", "64"]),
    );
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (
            124,
            "petrel: unikernel settings are only sent with --replace-arguments\n"
        )
    );
    let server = TestServer::start(
        &identity(d),
        false,
        vec![reply(":web", Payload::success_string("created unikernel"))],
    );
    let run = ok(
        d,
        &remote(
            &server.destination(),
            &[
                "restart",
                "web",
                "--replace-arguments",
                "--mem",
                "64",
                "--cpu",
                "1",
                "--arg",
                "--x=1",
                "--net",
                "service:br0",
                "--startup",
                "3",
            ],
        ),
    );
    assert_eq!(run.stdout, "created unikernel\n");
    assert_eq!(
        check_destination_leaf(d, &server.observed(), "web"),
        Command::Unikernel(UnikernelCmd::Restart(codec::RestartArgs::Arguments(
            codec::UnikernelArguments {
                fail_behaviour: FailBehaviour::Quit,
                startup: Some(3),
                add_name: true,
                cpuids: [1].into(),
                memory: 64,
                blocks: Vec::new(),
                bridges: vec![NetDeviceSpec {
                    netif: "service".into(),
                    bridge: Some("br0".into()),
                    mac: None
                }],
                arguments: Some(vec!["--x=1".into()]),
                cpus: 1,
                linux_boot_partition: None,
            }
        )))
    );
}

#[test]
fn destination_dash_prints_the_chain() {
    let dir = pki();
    let d = dir.path();
    let run = ok(d, &remote("-", &["destroy", "web"]));
    let chain = Certificate::from_pem_chain(&run.stdout).unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], certificates(&d.join("user.pem"))[0]);
    assert_eq!(
        command_of(&chain[0]),
        Command::Unikernel(UnikernelCmd::Destroy)
    );
}

#[test]
fn certificate_streams_data_for_a_signed_block_set() {
    let dir = pki();
    let d = dir.path();
    let content: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
    std::fs::write(d.join("disk.img"), &content).unwrap();
    let run = ok(d, &["block-set", "disk", "disk.img", "--csr"]);
    assert_eq!(
        run.stderr,
        "petrel: the request does not contain disk.img; once signed, send it with `petrel certificate CERT KEY --data disk.img`\n"
    );
    ok(d, &["sign", "user.pem", "db.txt", "user.key", "disk.req"]);
    assert_eq!(
        command_of(&certificates(&d.join("disk.pem"))[0]),
        Command::Block(BlockCmd::Set(true))
    );
    // Without the data, nothing is sent.
    let run = petrel(
        d,
        &["certificate", "disk.pem", "disk.key", "-d", "127.0.0.1:9"],
    );
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (
            124,
            "petrel: the command block set streams the block data after the handshake: give the file with --data\n"
        )
    );
    let server = TestServer::start(
        &identity(d),
        true,
        vec![reply(":disk", Payload::success_string("set block device"))],
    );
    let run = ok(
        d,
        &[
            "certificate",
            "disk.pem",
            "disk.key",
            "-d",
            &server.destination(),
            "--data",
            "disk.img",
        ],
    );
    assert_eq!(run.stdout, "set block device\n");
    let observed = server.observed();
    assert!(observed.terminated);
    assert_eq!(inflate(&observed.chunks.concat()), content);
}
