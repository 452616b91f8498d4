//! `petrel inspect` on inputs made elsewhere: certificates, CSRs and a CRL made with the
//! `openssl` command line (extension values from the spec's upstream test vectors), every
//! codec vector framed and unframed, and garbage. Runs the real binary.

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use serde_json::{Value, json};

use crate::common::cli::petrel;

/// Extension value of the upstream test leaf (`spec/wire.md` §12 example 2): console
/// subscribe, count 20.
const CONSOLE_SUBSCRIBE_20: &str = "300C020105A007A205A103020114";

/// Extension value of the upstream intermediate "arc" (example 3): a policy.
const POLICY_ARC: &str = "3017020105A412A110300E30030201000201010202020030 00";

/// `petrel inspect FILE` (JSON): the documents printed, one per line.
fn inspect(dir: &Path, file: &str) -> Vec<Value> {
    let run = petrel(dir, &["inspect", file]);
    assert_eq!(run.code, 0, "{file}: {}", run.stderr);
    assert_eq!(run.stderr, "");
    run.stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Process::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "openssl {args:?}: {output:?}");
}

fn der_ext(value: &str) -> String {
    format!("1.3.6.1.4.1.49836.42=DER:{}", value.replace(' ', ""))
}

#[test]
fn certificates_made_by_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(d, &["genpkey", "-algorithm", "ed25519", "-out", "k.pem"]);
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "k.pem",
            "-subj",
            "/CN=foo",
            "-days",
            "1",
            "-addext",
            &der_ext(CONSOLE_SUBSCRIBE_20),
            "-out",
            "foo.pem",
        ],
    );
    openssl(
        d,
        &[
            "x509", "-in", "foo.pem", "-outform", "DER", "-out", "foo.der",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "k.pem",
            "-subj",
            "/CN=arc",
            "-days",
            "1",
            "-addext",
            &der_ext(POLICY_ARC),
            "-out",
            "arc.pem",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "k.pem",
            "-subj",
            "/CN=crit",
            "-days",
            "1",
            "-addext",
            &format!("1.3.6.1.4.1.49836.42=critical,DER:{CONSOLE_SUBSCRIBE_20}"),
            "-out",
            "crit.pem",
        ],
    );

    let expected = json!({
        "critical": false,
        "value_hex": CONSOLE_SUBSCRIBE_20.to_lowercase(),
        "version": 5,
        "command": {"console": {"subscribe": {"count": 20}}},
        "summary": "console subscribe"
    });
    for file in ["foo.pem", "foo.der"] {
        let items = inspect(d, file);
        assert_eq!(items.len(), 1);
        let cert = &items[0];
        assert_eq!(cert["kind"], "certificate");
        assert_eq!(cert["subject"], "CN=foo");
        assert_eq!(cert["common_name"], "foo");
        assert_eq!(cert["key_type"], "ed25519");
        assert_eq!(cert["albatross"], json!([expected]));
    }

    let items = inspect(d, "arc.pem");
    assert_eq!(
        items[0]["albatross"][0]["command"],
        json!({"policy": {"add": {
            "unikernels": 1, "cpuids": [0], "memory": 512, "block": null, "bridges": []
        }}})
    );
    assert_eq!(items[0]["albatross"][0]["summary"], "policy add");

    let items = inspect(d, "crit.pem");
    assert_eq!(items[0]["albatross"][0]["critical"], true);
    assert_eq!(items[0]["albatross"][0]["command"], expected["command"]);

    // A chain file: every certificate, in order.
    let chain = std::fs::read_to_string(d.join("foo.pem")).unwrap()
        + &std::fs::read_to_string(d.join("arc.pem")).unwrap();
    std::fs::write(d.join("chain.pem"), chain).unwrap();
    let items = inspect(d, "chain.pem");
    let subjects: Vec<&Value> = items.iter().map(|i| &i["subject"]).collect();
    assert_eq!(subjects, ["CN=foo", "CN=arc"]);

    // Readable text.
    let run = petrel(d, &["inspect", "foo.pem", "--text"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.starts_with("kind: certificate\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            "    command:\n      console:\n        subscribe:\n          count: 20\n    critical: false\n    summary: console subscribe\n"
        ),
        "{}",
        run.stdout
    );
}

#[test]
fn csr_made_by_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(d, &["genpkey", "-algorithm", "ed25519", "-out", "k.pem"]);
    openssl(
        d,
        &[
            "req",
            "-new",
            "-key",
            "k.pem",
            "-subj",
            "/CN=arc",
            "-addext",
            &der_ext(POLICY_ARC),
            "-out",
            "arc.req",
        ],
    );
    let items = inspect(d, "arc.req");
    assert_eq!(items.len(), 1);
    let csr = &items[0];
    assert_eq!(csr["kind"], "csr");
    assert_eq!(csr["subject"], "CN=arc");
    assert_eq!(csr["signature_valid"], true);
    assert_eq!(csr["albatross"]["critical"], false);
    assert_eq!(csr["albatross"]["summary"], "policy add");
    assert_eq!(csr["albatross"]["command"]["policy"]["add"]["memory"], 512);
    openssl(
        d,
        &[
            "req",
            "-in",
            "arc.req",
            "-outform",
            "DER",
            "-out",
            "arc.req.der",
        ],
    );
    assert_eq!(inspect(d, "arc.req.der"), items);
}

#[test]
fn crl_made_by_openssl_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("ca.cnf"),
        "[ca]\ndefault_ca = test\n\n[test]\ndatabase = index.txt\ncrlnumber = crlnumber\n\
         default_md = sha256\ndefault_crl_days = 30\n",
    )
    .unwrap();
    std::fs::write(d.join("index.txt"), "").unwrap();
    std::fs::write(d.join("crlnumber"), "07\n").unwrap();
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ca.key",
        ],
    );
    openssl(
        d,
        &[
            "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=test", "-days", "10", "-out",
            "ca.pem",
        ],
    );
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "leaf.key",
        ],
    );
    openssl(
        d,
        &[
            "req", "-new", "-key", "leaf.key", "-subj", "/CN=leaf", "-out", "leaf.req",
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.req",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "0x1234abcd",
            "-days",
            "1",
            "-out",
            "leaf.pem",
        ],
    );
    openssl(
        d,
        &[
            "ca", "-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.pem", "-revoke",
            "leaf.pem",
        ],
    );
    openssl(
        d,
        &[
            "ca", "-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.pem", "-gencrl", "-out",
            "crl.pem",
        ],
    );
    let items = inspect(d, "crl.pem");
    assert_eq!(items.len(), 1);
    let crl = &items[0];
    assert_eq!(crl["kind"], "crl");
    assert_eq!(crl["issuer"], "CN=test");
    assert_eq!(crl["number"], "7");
    assert_eq!(crl["signature_algorithm"], "ecdsa-with-SHA256");
    assert_eq!(crl["revoked"].as_array().unwrap().len(), 1);
    assert_eq!(crl["revoked"][0]["serial"], "1234abcd");
    assert!(crl["next_update"].is_string());
    openssl(
        d,
        &[
            "crl", "-in", "crl.pem", "-outform", "DER", "-out", "crl.der",
        ],
    );
    assert_eq!(inspect(d, "crl.der"), items);
}

/// Every `.der` file below `tests/codec`, sorted.
fn codec_vectors() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for sub in ["albatross", "constructed"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/codec")
            .join(sub);
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "der") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_codec_vector_framed_and_unframed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vectors = codec_vectors();
    assert!(vectors.len() >= 30, "{} vectors", vectors.len());
    let mut framed = Vec::new();
    let mut wires = Vec::new();
    for path in &vectors {
        let file = path.file_name().unwrap().to_str().unwrap();
        let kind = file.split('.').next().unwrap();
        let items = inspect(d, path.to_str().unwrap());
        assert_eq!(items.len(), 1, "{file}");
        assert_eq!(items[0]["kind"], kind, "{file}");
        if kind == "wire" {
            let der = std::fs::read(path).unwrap();
            framed.extend((der.len() as u32).to_be_bytes());
            framed.extend(der);
            wires.push(items.into_iter().next().unwrap());
        }
    }
    framed.extend([0, 0, 0, 0]);
    std::fs::write(d.join("frames.bin"), &framed).unwrap();
    let items = inspect(d, "frames.bin");
    assert_eq!(items.len(), wires.len() + 1);
    assert_eq!(items[..wires.len()], wires[..]);
    assert_eq!(items[wires.len()], json!({"kind": "end-of-stream"}));

    // A few decoded values, exactly.
    let vector = |name: &str| {
        let path = vectors.iter().find(|p| p.ends_with(name)).unwrap();
        inspect(d, path.to_str().unwrap()).remove(0)
    };
    assert_eq!(
        vector("wire.console-subscribe-count-20.der"),
        json!({
            "kind": "wire",
            "header": {"version": 5, "sequence": 0, "name": ":foo"},
            "payload": {"command": {"console": {"subscribe": {"count": 20}}}}
        })
    );
    assert_eq!(
        vector("wire.failure-destroy-not-found.der")["payload"],
        json!({"failure": "destroy: not found"})
    );
    assert_eq!(
        vector("extension.revocation-upload.der"),
        json!({
            "kind": "extension",
            "version": 5,
            "command": {"revocation": "upload"},
            "summary": "revocation upload"
        })
    );
    let state = vector("state.v6-hello.der");
    assert_eq!(state["unikernels"][0]["name"], ":hello");
    assert_eq!(state["unikernels"][0]["value"]["memory"], 64);
    assert_eq!(state["policies"][1]["name"], "user:");
    assert_eq!(state["policies"][1]["value"]["unikernels"], 16);
}

#[test]
fn garbage_is_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let unrecognised =
        "not a certificate, CSR, CRL, albatross extension, wire message or state file";
    let cases: [(&str, &[u8], &str); 6] = [
        ("text", b"hello, world\n", unrecognised),
        ("binary", &[0xde, 0xad, 0xbe, 0xef], unrecognised),
        ("empty", b"", "empty input"),
        (
            "key.pem",
            b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
            "unsupported PEM block \"PRIVATE KEY\"",
        ),
        (
            "frame",
            &[0, 0, 0, 3, 0x30, 0x01, 0x00, 0, 0, 0, 9],
            "frame 1: ",
        ),
        (
            "der",
            &[0x30, 0x03, 0x02, 0x01, 0x05],
            "unrecognised DER: not an albatross extension (",
        ),
    ];
    for (file, content, text) in cases {
        std::fs::write(d.join(file), content).unwrap();
        let run = petrel(d, &["inspect", file]);
        assert_eq!(run.code, 1, "{file}");
        assert_eq!(run.stdout, "", "{file}");
        let prefix = format!("petrel inspect: {file}: {text}");
        assert!(run.stderr.starts_with(&prefix), "{file}: {:?}", run.stderr);
        assert_eq!(
            run.stderr.matches('\n').count(),
            1,
            "{file}: {:?}",
            run.stderr
        );
        assert!(run.stderr.ends_with('\n'));
    }
    let run = petrel(d, &["inspect", "missing"]);
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (
            1,
            "petrel inspect: missing: No such file or directory (os error 2)\n"
        )
    );
}
