//! Chain → request (names-and-policies.md §4), through petrel's own verifier at a fixed
//! clock: names from CNs, policies top-down, every refusal with its exact text.

use crate::common;

use common::pki::{Ca, FIXED_NOW, Opts, policy};
use petrel::chain::{ChainError, InputKind, decode_request};
use petrel::codec::{
    self, BlockCmd, Command, ConsoleCmd, PolicyCmd, SinceCount, StatsCmd, UnikernelCmd,
};
use petrel::pki::{Certificate, Criticality};
use petrel::verify::{TrustAnchors, VerifyError};

fn anchors(ca: &Ca) -> TrustAnchors {
    TrustAnchors::from_pem(ca.cert_pem().as_bytes()).unwrap()
}

fn decode(root: &Ca, chain: &[Certificate]) -> Result<petrel::chain::Request, ChainError> {
    let verified = anchors(root).verify(chain, FIXED_NOW).unwrap();
    decode_request(&verified)
}

fn console() -> Command {
    Command::Console(ConsoleCmd::Subscribe(SinceCount::Count(20)))
}

#[test]
fn leaf_directly_under_root_names_a_root_level_unikernel() {
    let root = Ca::root("test");
    let leaf = root.leaf(Some("foo"), &console());
    let req = decode(&root, &leaf.chain).unwrap();
    assert_eq!(req.name.text(), ":foo");
    assert!(req.policies.is_empty());
    assert_eq!(req.command, console());
    assert_eq!(req.chain.len(), 2, "leaf and anchor");
    assert_eq!(req.chain[0].common_name, "foo");
    assert_eq!(req.chain[1].common_name, "test");
}

#[test]
fn root_sent_along_is_ignored() {
    let root = Ca::root("test");
    let leaf = root.leaf(Some("foo"), &console());
    let mut chain = leaf.chain.clone();
    chain.push(root.cert().clone());
    let req = decode(&root, &chain).unwrap();
    assert_eq!(req.name.text(), ":foo");
}

#[test]
fn intermediates_build_the_path_and_policies_top_down() {
    let root = Ca::root("test");
    let p1 = policy(4, &[0, 1], 1024, Some(100), &["br0"]);
    let p2 = policy(2, &[0], 512, None, &[]);
    let arc = root.intermediate("arc", &p1);
    let sub = arc.intermediate("Sub", &p2);
    let leaf = sub.leaf(Some("foo.bar"), &console());
    let req = decode(&root, &leaf.chain).unwrap();
    assert_eq!(req.name.text(), "arc:sub:foo.bar");
    let paths: Vec<String> = req.policies.iter().map(|p| p.path.text()).collect();
    assert_eq!(paths, ["arc", "arc:sub"]);
    assert_eq!(req.policies[0].policy, p1);
    assert_eq!(req.policies[1].policy, p2);
    assert_eq!(req.policies[0].cert, req.chain[2].id);
    assert_eq!(req.policies[1].cert, req.chain[1].id);
    // arc and the root are both issued by the root key; the leaf by sub's.
    assert_eq!(req.chain[2].id.issuer_key, req.chain[3].id.issuer_key);
    assert_ne!(req.chain[0].id.issuer_key, req.chain[1].id.issuer_key);
    assert!(req.chain[1].is_ca && req.chain[2].is_ca && !req.chain[0].is_ca);
}

#[test]
fn intermediate_without_extension_is_skipped() {
    let root = Ca::root("test");
    let plain = root.intermediate_with("plain", None, Opts::default());
    let leaf = plain.leaf(Some("x"), &console());
    let req = decode(&root, &leaf.chain).unwrap();
    assert_eq!(req.name.text(), ":x");
    assert!(req.policies.is_empty());
}

#[test]
fn leaf_cn_dot_colon_or_absent_is_a_path_name() {
    let root = Ca::root("test");
    let tenant = root.intermediate("tenant", &policy(1, &[0], 64, None, &[]));
    let info = Command::Unikernel(UnikernelCmd::Info);
    for cn in [Some("."), Some(":"), None] {
        let leaf = tenant.leaf(cn, &info);
        assert_eq!(
            decode(&root, &leaf.chain).unwrap().name.text(),
            "tenant:",
            "{cn:?}"
        );
    }
}

#[test]
fn refusals_with_albatross_texts() {
    let root = Ca::root("test");
    let pol = policy(1, &[0], 64, None, &[]);
    let cases: Vec<(Vec<Certificate>, &str)> = vec![
        (
            root.leaf_with(Some("x"), None, Opts::default()).chain,
            "leaf certificate does not contain an albatross extension",
        ),
        (
            root.leaf(None, &Command::Block(BlockCmd::Add(10))).chain,
            "block add may not have an empty name",
        ),
        (
            root.leaf(None, &Command::Block(BlockCmd::DumpOld(0))).chain,
            "block dump may not have an empty name",
        ),
        (
            root.leaf(None, &Command::Policy(PolicyCmd::Remove)).chain,
            "policy remove may not have an empty name",
        ),
        (
            root.leaf(Some("x"), &Command::Policy(PolicyCmd::Add(pol.clone())))
                .chain,
            "unexpected command",
        ),
        (
            root.leaf(Some("x"), &Command::Console(ConsoleCmd::Add(3)))
                .chain,
            "unexpected command",
        ),
        (
            root.leaf(Some("x"), &Command::Statistics(StatsCmd::Initial))
                .chain,
            "unexpected command",
        ),
        (
            root.leaf(Some("a/b"), &console()).chain,
            "invalid label (only [a-zA-Z0-9-.] allowed, 1 to 63 chars)",
        ),
        (
            root.leaf_with(
                Some("x"),
                Some(vec![0x30, 0x03, 0x02, 0x01, 0x05]),
                Opts::default(),
            )
            .chain,
            "couldn't parse albatross extension: ",
        ),
        (
            root.intermediate_with(
                "t",
                Some(codec::encode_extension(&console())),
                Opts::default(),
            )
            .leaf(Some("x"), &console())
            .chain,
            "unexpected wire console subscribe",
        ),
        (
            root.intermediate("a:b", &pol)
                .leaf(Some("x"), &console())
                .chain,
            "invalid label (only [a-zA-Z0-9-.] allowed, 1 to 63 chars)",
        ),
    ];
    for (chain, expected) in cases {
        let err = decode(&root, &chain).unwrap_err().to_string();
        assert!(
            err.starts_with(expected),
            "{err:?} should start with {expected:?}"
        );
    }
}

#[test]
fn intermediate_without_cn_carrying_a_policy_is_refused() {
    let root = Ca::root("test");
    let anonymous = root.intermediate_without_cn(&policy(1, &[0], 64, None, &[]));
    let leaf = anonymous.leaf(Some("x"), &console());
    assert_eq!(
        decode(&root, &leaf.chain).unwrap_err().to_string(),
        "policy add may not have an empty name"
    );
}

#[test]
fn chain_of_ten_is_refused_nine_accepted() {
    let root = Ca::root("test");
    let pol = policy(1, &[0], 64, None, &[]);
    let mut ca = root.intermediate("l1", &pol);
    for i in 2..=8 {
        ca = ca.intermediate(&format!("l{i}"), &pol);
    }
    // leaf + 8 intermediates = 9 certificates sent.
    let leaf = ca.leaf(Some("x"), &console());
    assert_eq!(leaf.chain.len(), 9);
    assert_eq!(decode(&root, &leaf.chain).unwrap().policies.len(), 8);
    // Sending the root along makes 10.
    let mut ten = leaf.chain.clone();
    ten.push(root.cert().clone());
    assert_eq!(decode(&root, &ten).unwrap_err(), ChainError::TooLong);
    // A ninth intermediate exceeds OpenSSL's depth.
    let deeper = ca.intermediate("l9", &pol).leaf(Some("x"), &console());
    assert!(matches!(
        anchors(&root).verify(&deeper.chain, FIXED_NOW),
        Err(VerifyError::Rejected(_))
    ));
}

#[test]
fn critical_albatross_extension_fails_verification() {
    let root = Ca::root("test");
    let leaf = root.leaf_with(
        Some("x"),
        Some(codec::encode_extension(&console())),
        Opts {
            criticality: Criticality::Critical,
            ..Opts::default()
        },
    );
    let err = anchors(&root).verify(&leaf.chain, FIXED_NOW).unwrap_err();
    assert_eq!(
        err,
        VerifyError::Rejected("unhandled critical extension".into())
    );
}

#[test]
fn expired_and_not_yet_valid_leaves_fail_verification() {
    let root = Ca::root("test");
    let cmd = console();
    let old = root.leaf_with(
        Some("x"),
        Some(codec::encode_extension(&cmd)),
        Opts {
            start_offset: -7200,
            ..Opts::default()
        },
    );
    let future = root.leaf_with(
        Some("x"),
        Some(codec::encode_extension(&cmd)),
        Opts {
            start_offset: 7200,
            ..Opts::default()
        },
    );
    assert_eq!(
        anchors(&root).verify(&old.chain, FIXED_NOW).unwrap_err(),
        VerifyError::Rejected("certificate has expired".into())
    );
    assert_eq!(
        anchors(&root).verify(&future.chain, FIXED_NOW).unwrap_err(),
        VerifyError::Rejected(
            "certificate is not yet valid or the system clock is incorrect".into()
        )
    );
}

#[test]
fn unknown_ca_fails_verification() {
    let root = Ca::root("test");
    let other = Ca::root("other");
    let leaf = other.leaf(Some("x"), &console());
    assert!(matches!(
        anchors(&root).verify(&leaf.chain, FIXED_NOW),
        Err(VerifyError::Rejected(_))
    ));
}

#[test]
fn several_anchors_are_accepted() {
    let a = Ca::root("a");
    let b = Ca::root("b");
    let pem = format!("{}{}", a.cert_pem(), b.cert_pem());
    let anchors = TrustAnchors::from_pem(pem.as_bytes()).unwrap();
    for ca in [&a, &b] {
        let leaf = ca.leaf(Some("x"), &console());
        assert!(anchors.verify(&leaf.chain, FIXED_NOW).is_ok());
    }
}

#[test]
fn input_kinds() {
    let root = Ca::root("test");
    let mut config = codec::UnikernelConfig::default();
    let create = root.leaf(
        Some("x"),
        &Command::Unikernel(UnikernelCmd::Create(config.clone())),
    );
    assert_eq!(
        decode(&root, &create.chain).unwrap().input(),
        Some(InputKind::Image)
    );
    config.image = vec![1, 2, 3];
    let inline = root.leaf(
        Some("x"),
        &Command::Unikernel(UnikernelCmd::ForceCreate(config)),
    );
    assert_eq!(decode(&root, &inline.chain).unwrap().input(), None);
    let set = root.leaf(Some("x"), &Command::Block(BlockCmd::Set(false)));
    assert_eq!(
        decode(&root, &set.chain).unwrap().input(),
        Some(InputKind::BlockData)
    );
    let upload = root.leaf(
        Some("."),
        &Command::Revocation(codec::RevocationCmd::Upload),
    );
    assert_eq!(
        decode(&root, &upload.chain).unwrap().input(),
        Some(InputKind::Crl)
    );
}
