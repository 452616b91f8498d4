//! The solo5 note reader and the manifest check against vectors written by an independent
//! encoder (`tests/manifest/make_vectors.py`), images from `build_test_image`, and
//! arbitrary bytes.

use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::path::PathBuf;

use petrel::executor::manifest::{
    Abi, Device, Machine, Manifest, ManifestError, Solo5Image, Target, build_test_image,
    build_test_image_for, check_manifest, read_image, read_image_bytes, read_image_file,
};
use proptest::prelude::*;

fn vector(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/manifest")
        .join(name)
}

fn read_vector(name: &str) -> Result<Solo5Image, ManifestError> {
    read_image_file(&vector(name))
}

fn error_of(name: &str) -> String {
    match read_vector(name) {
        Ok(image) => panic!("{name} read as {image:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn good_vectors() {
    assert_eq!(
        read_vector("hvt-x86_64.net-service.block-storage.hvt").unwrap(),
        Solo5Image {
            machine: Machine::X86_64,
            abi: Abi {
                target: Target::Hvt,
                version: 2
            },
            manifest: Manifest::new(vec![Device::net("service"), Device::block("storage")]),
        }
    );
    assert_eq!(
        read_vector("spt-aarch64.no-devices.spt").unwrap(),
        Solo5Image {
            machine: Machine::Aarch64,
            abi: Abi {
                target: Target::Spt,
                version: 2
            },
            manifest: Manifest::new(vec![]),
        }
    );
    let many = read_vector("hvt-x86_64.63-devices.hvt").unwrap();
    let expected: Vec<Device> = (0..63)
        .map(|i| {
            let name = format!("dev{i}");
            if i % 2 == 1 {
                Device::net(&name)
            } else {
                Device::block(&name)
            }
        })
        .collect();
    assert_eq!(many.manifest, Manifest::new(expected));
    let virtio = read_vector("virtio-x86_64.virtio.hvt").unwrap();
    assert_eq!(
        virtio.abi,
        Abi {
            target: Target::Virtio,
            version: 1
        }
    );
    assert_eq!(
        virtio.abi.target.tender_name().unwrap_err().to_string(),
        "unsupported solo5 target virtio"
    );
}

#[test]
fn corrupted_vectors_exact_errors() {
    let cases = [
        (
            "bad.truncated-in-manifest.hvt",
            "image truncated: manifest note extends beyond the end of the file",
        ),
        (
            "bad.truncated-in-header.hvt",
            "image truncated: ELF header extends beyond the end of the file",
        ),
        (
            "bad.phnum-65535.hvt",
            "too many program headers (65535, at most 256)",
        ),
        (
            "bad.phoff-beyond-end.hvt",
            "image truncated: program header table extends beyond the end of the file",
        ),
        (
            "bad.manifest-entries-65.hvt",
            "solo5 manifest has 65 entries, at most 64 allowed",
        ),
        (
            "bad.manifest-entries-4.hvt",
            "solo5 manifest size 320 does not match its 4 entries",
        ),
        (
            "bad.manifest-descsz-huge.hvt",
            "solo5 manifest note has invalid size 4294967295",
        ),
        (
            "bad.manifest-version-2.hvt",
            "unsupported solo5 manifest version 2 (expected 1)",
        ),
        ("bad.abi-descsz-0.hvt", "solo5 ABI note has invalid size 0"),
        ("bad.abi-descsz-8.hvt", "solo5 ABI note has invalid size 8"),
        (
            "bad.device-name-dash.hvt",
            "solo5 manifest entry 1: device name is not 1 to 67 ASCII alphanumeric characters",
        ),
        (
            "bad.device-name-unterminated.hvt",
            "solo5 manifest entry 1: device name is not 1 to 67 ASCII alphanumeric characters",
        ),
        (
            "bad.device-type-3.hvt",
            "solo5 manifest entry 1: unknown device type 3",
        ),
        (
            "bad.device-attached.hvt",
            "solo5 manifest entry 1 is marked attached",
        ),
        (
            "bad.no-reserved-entry.hvt",
            "solo5 manifest does not start with its reserved entry",
        ),
        (
            "bad.no-manifest-note.hvt",
            "no solo5 manifest note found (not a solo5 image?)",
        ),
        (
            "bad.note-segment-8-octets.hvt",
            "program header 1: note segment smaller than a note header",
        ),
        ("bad.elf32.hvt", "not a 64-bit ELF image"),
        ("bad.big-endian.hvt", "not a little-endian ELF image"),
        (
            "bad.machine-riscv.hvt",
            "unsupported ELF machine 243 (x86_64 and aarch64 are supported)",
        ),
        (
            "bad.shared-object.hvt",
            "not an executable ELF image (type 3)",
        ),
        ("bad.not-elf.hvt", "not an ELF image"),
    ];
    for (name, text) in cases {
        assert_eq!(error_of(name), text, "{name}");
    }
}

#[test]
fn every_vector_is_covered() {
    let mut names: Vec<String> = std::fs::read_dir(vector(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".hvt") || n.ends_with(".spt"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 26, "{names:?}");
}

#[test]
fn built_images_round_trip() {
    for machine in [Machine::X86_64, Machine::Aarch64] {
        for target in [Target::Hvt, Target::Spt] {
            let devices = vec![
                Device::block("storage"),
                Device::net("service"),
                Device::net("admin0"),
            ];
            let image = build_test_image_for(machine, target, 7, &devices);
            assert_eq!(
                read_image_bytes(&image).unwrap(),
                Solo5Image {
                    machine,
                    abi: Abi { target, version: 7 },
                    manifest: Manifest::new(devices),
                }
            );
        }
    }
    let name67 = "a".repeat(67);
    let image = build_test_image(Target::Hvt, 2, &[Device::net(&name67)]);
    assert_eq!(
        read_image_bytes(&image).unwrap().manifest,
        Manifest::new(vec![Device::net(&name67)])
    );
}

#[test]
fn every_prefix_of_a_built_image_is_an_error() {
    let image = build_test_image(Target::Hvt, 2, &[Device::net("service")]);
    read_image_bytes(&image).unwrap();
    for len in 0..image.len() {
        let err = read_image_bytes(&image[..len]).unwrap_err();
        assert!(
            matches!(err, ManifestError::Truncated(_)),
            "prefix {len}: {err}"
        );
    }
}

/// Offsets in `build_test_image` output (documented on `build_test_image_for`).
const ABI_NOTE: usize = 176;
const MFT_NOTE: usize = 216;
const MFT: usize = 240;
const FIRST_DEVICE: usize = 248 + 104;

fn patched(image: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut out = image.to_vec();
    out[at..at + bytes.len()].copy_from_slice(bytes);
    out
}

#[test]
fn hand_corrupted_built_images() {
    let image = build_test_image(Target::Hvt, 2, &[Device::net("service")]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // Manifest descriptor larger than its segment.
        (
            patched(&image, MFT_NOTE + 4, &(12 + 2 * 104 + 8u32).to_le_bytes()),
            "solo5 manifest note extends beyond its segment",
        ),
        // Descriptor of only the padding.
        (
            patched(&image, MFT_NOTE + 4, &4u32.to_le_bytes()),
            "solo5 manifest note has invalid size 4",
        ),
        // Largest descriptor solo5 accepts, but larger than the segment.
        (
            patched(&image, MFT_NOTE + 4, &6668u32.to_le_bytes()),
            "solo5 manifest note extends beyond its segment",
        ),
        (
            patched(&image, MFT_NOTE + 4, &6669u32.to_le_bytes()),
            "solo5 manifest note has invalid size 6669",
        ),
        (
            patched(&image, ABI_NOTE + 4, &33u32.to_le_bytes()),
            "solo5 ABI note has invalid size 33",
        ),
        // Zero entries.
        (
            patched(
                &patched(&image, MFT + 4, &0u32.to_le_bytes()),
                MFT_NOTE + 4,
                &12u32.to_le_bytes(),
            ),
            "solo5 manifest does not start with its reserved entry",
        ),
        // Reserved entry with a name.
        (
            patched(&image, MFT + 8, b"x"),
            "solo5 manifest does not start with its reserved entry",
        ),
        // Empty device name.
        (
            patched(&image, FIRST_DEVICE, &[0; 8]),
            "solo5 manifest entry 1: device name is not 1 to 67 ASCII alphanumeric characters",
        ),
        // A second reserved entry.
        (
            patched(&image, FIRST_DEVICE + 68, &(1u32 << 30).to_le_bytes()),
            "solo5 manifest entry 1: unknown device type 1073741824",
        ),
        // Note name "Solo6": not a solo5 note, so the ABI note is missing.
        (
            patched(&image, ABI_NOTE + 12, b"Solo6"),
            "no solo5 ABI note found (not a solo5 image?)",
        ),
        // e_phnum 0.
        (patched(&image, 56, &[0, 0]), "no program headers"),
        // e_phentsize 32.
        (
            patched(&image, 54, &[32, 0]),
            "unexpected ELF program header size 32",
        ),
        (
            patched(&image, 52, &[63, 0]),
            "unexpected ELF header size 63",
        ),
        (
            patched(&image, 20, &[2, 0, 0, 0]),
            "unsupported ELF version 2",
        ),
        (patched(&image, 6, &[0]), "unsupported ELF version 0"),
    ];
    for (i, (bytes, text)) in cases.into_iter().enumerate() {
        assert_eq!(
            read_image_bytes(&bytes).unwrap_err().to_string(),
            text,
            "case {i}"
        );
    }
}

#[test]
fn unknown_target_number_is_read_and_refused_by_name() {
    let image = build_test_image(Target::Unknown(42), 2, &[]);
    let read = read_image_bytes(&image).unwrap();
    assert_eq!(read.abi.target, Target::Unknown(42));
    assert_eq!(
        read.abi.target.tender_name().unwrap_err().to_string(),
        "unsupported solo5 target 42"
    );
}

/// Counts the octets read, to show that the reader touches only headers and notes.
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl<R: Seek> Seek for Counting<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[test]
fn reads_only_headers_and_notes_of_a_large_image() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.hvt");
    let good = std::fs::read(vector("hvt-x86_64.net-service.block-storage.hvt")).unwrap();
    std::fs::write(&path, &good).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(1 << 30).unwrap(); // 1 GiB, sparse
    drop(file);
    let mut counting = Counting {
        inner: std::fs::File::open(&path).unwrap(),
        read: 0,
    };
    let image = read_image(&mut counting).unwrap();
    assert_eq!(image.abi.target, Target::Hvt);
    // ELF header 64, 5 program headers 280, three note headers 60, ABI 16, manifest 320.
    assert_eq!(counting.read, 64 + 280 + 60 + 16 + 320);
}

#[test]
fn check_manifest_texts() {
    let manifest = Manifest::new(vec![Device::net("service"), Device::block("storage")]);
    let none: [&str; 0] = [];
    check_manifest(&manifest, ["storage"], ["service"]).unwrap();
    // Duplicates collapse, order is irrelevant.
    check_manifest(&manifest, ["storage", "storage"], ["service", "service"]).unwrap();
    let two = Manifest::new(vec![Device::net("a"), Device::net("b")]);
    check_manifest(&two, none, ["b", "a"]).unwrap();

    let block_text = "specified block device(s) does not match with manifest. \
                      Devices present in manifest: net \"service\", block \"storage\"";
    let net_text = "specified bridge(s) does not match with the manifest. \
                    Devices present in manifest: net \"service\", block \"storage\"";
    let cases: [(&[&str], &[&str], &str); 6] = [
        (&[], &["service"], block_text),
        (&["storage", "extra"], &["service"], block_text),
        (&["other"], &["service"], block_text),
        // Both wrong: the block check comes first, as in albatross.
        (&[], &[], block_text),
        (&["storage"], &[], net_text),
        (&["storage"], &["service", "admin"], net_text),
    ];
    for (blocks, nets, text) in cases {
        assert_eq!(
            check_manifest(&manifest, blocks, nets)
                .unwrap_err()
                .to_string(),
            text,
            "{blocks:?} {nets:?}"
        );
    }
    assert_eq!(
        check_manifest(&Manifest::new(vec![]), none, ["service"])
            .unwrap_err()
            .to_string(),
        "specified bridge(s) does not match with the manifest. Devices present in manifest: "
    );
    // A name declared as net does not satisfy a block device of the same name.
    let net_only = Manifest::new(vec![Device::net("x")]);
    assert_eq!(
        check_manifest(&net_only, ["x"], ["x"])
            .unwrap_err()
            .to_string(),
        "specified block device(s) does not match with manifest. Devices present in manifest: net \"x\""
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = read_image_bytes(&bytes);
    }

    #[test]
    fn mutated_images_never_panic(
        mutations in proptest::collection::vec((0usize..600, any::<u8>()), 1..8),
        cut in 0usize..700,
    ) {
        let mut image = build_test_image(Target::Hvt, 2, &[Device::net("service"), Device::block("disk")]);
        for (at, byte) in mutations {
            if let Some(slot) = image.get_mut(at) {
                *slot = byte;
            }
        }
        let _ = read_image(&mut Cursor::new(&image));
        image.truncate(cut);
        let _ = read_image_bytes(&image);
    }
}
