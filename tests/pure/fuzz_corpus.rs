//! Replays every fuzz corpus file and every saved crash (`fuzz/corpus/<target>/*`,
//! `fuzz/artifacts/<target>/*`) through the function its target drives, on the stable
//! toolchain, so that a crash found once stays fixed.

use std::fs;
use std::path::Path;

fn drive(target: &str, data: &[u8]) {
    match target {
        "decode_extension" => drop(petrel::codec::decode_extension(data)),
        "decode_wire" => drop(petrel::codec::decode_wire(data)),
        "decode_state" => drop(petrel::codec::decode_state(data)),
        "decode_chain" => drop(petrel::chain::decode_concatenated(data)),
        "decode_crl" => validate_crl(data),
        "parse_name" => drop(petrel::name::Name::parse(&String::from_utf8_lossy(data))),
        "read_manifest" => drop(petrel::executor::manifest::read_image_bytes(data)),
        "roundtrip_wire" => petrel::codec::check_roundtrip(data),
        other => panic!("fuzz/{other}: no such target in this replay test"),
    }
}

/// What the `decode_crl` target does: parse, then validate against certs/example/root.pem.
fn validate_crl(data: &[u8]) {
    use petrel::pki::{CRL_CLOCK_SKEW, Certificate, CertificateFacts, ParsedCrl};
    let Ok(crl) = ParsedCrl::parse(data) else {
        return;
    };
    let pem = include_str!("../../certs/example/root.pem");
    let chain = Certificate::from_pem_chain(pem).unwrap();
    let root = CertificateFacts::from_der(chain[0].der()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    drop(petrel::pki::crl::validate_crl(
        crl,
        &root,
        now,
        CRL_CLOCK_SKEW,
    ));
}

fn replay(dir: &Path) -> usize {
    let Ok(targets) = fs::read_dir(dir) else {
        return 0;
    };
    let mut files = 0;
    for target in targets {
        let target = target.unwrap().path();
        let name = target.file_name().unwrap().to_string_lossy().into_owned();
        for file in fs::read_dir(&target).unwrap() {
            let file = file.unwrap().path();
            if file.is_file() {
                drive(&name, &fs::read(&file).unwrap());
                files += 1;
            }
        }
    }
    files
}

#[test]
fn every_corpus_file_and_saved_crash_replays_without_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let corpus = replay(&root.join("corpus"));
    replay(&root.join("artifacts"));
    assert!(
        corpus >= 60,
        "expected the seed corpora, found {corpus} files"
    );
}

#[test]
fn every_target_has_a_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for target in fs::read_dir(root.join("fuzz_targets")).unwrap() {
        let name = target.unwrap().path();
        let stem = name.file_stem().unwrap().to_string_lossy().into_owned();
        let seeds = fs::read_dir(root.join("corpus").join(&stem))
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(seeds > 0, "fuzz target {stem} has no seed corpus");
        drive(&stem, b"");
    }
}
