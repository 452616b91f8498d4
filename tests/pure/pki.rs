//! PKI: certificate profiles against the spec's table, chains checked by OpenSSL's
//! verifier, CAs and CRLs made by the `openssl` command line, CSR and CRL round trips,
//! every CRL validation error, and certificate facts on hostile input.
//!
//! Everything runs at one fixed clock ([`now`]), except where an `openssl` command sets
//! the time itself; those tests take their clock from what OpenSSL wrote.

use std::path::Path;
use std::process::Command;

use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyParam;
use openssl::x509::{X509, X509StoreContext};
use petrel::pki::cert::{self, RequestedCommand};
use petrel::pki::crl::{self, ValidatedCrl};
use petrel::pki::csr::{self, ParsedCsr};
use petrel::pki::describe;
use petrel::pki::facts::{self, AlbatrossExtension, KeyPurpose};
use petrel::pki::keys::{self, KeyOrigin};
use petrel::pki::{
    AltName, CRL_CLOCK_SKEW, CaIssuer, Certificate, CertificateFacts, CertificateTemplate,
    CommonName, Criticality, CrlError, CrlNumber, CrlTemplate, FactsError, KeyAlgorithm, KeyType,
    ParsedCrl, PkiError, PrivateKey, Profile, RevocationReason, RevokedEntry, Serial, Subject,
    Validity,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use sha1::{Digest, Sha1};
use time::OffsetDateTime;
use time::macros::datetime;
use x509_parser::prelude::FromDer;

/// The fixed clock.
fn now() -> OffsetDateTime {
    datetime!(2024-05-01 12:00:00 UTC)
}

fn now_unix() -> i64 {
    now().unix_timestamp()
}

/// Extension value of the spec's worked example: policy add (cpu 0, 1 unikernel,
/// 512 MB, no block, no bridges).
const POLICY_EXT: &[u8] = &[
    0x30, 0x17, 0x02, 0x01, 0x05, 0xa4, 0x12, 0xa1, 0x10, 0x30, 0x0e, 0x30, 0x03, 0x02, 0x01, 0x00,
    0x02, 0x01, 0x01, 0x02, 0x02, 0x02, 0x00, 0x30, 0x00,
];

/// Extension value of the spec's worked example: console subscribe, count 20.
const CONSOLE_EXT: &[u8] = &[
    0x30, 0x0c, 0x02, 0x01, 0x05, 0xa0, 0x07, 0xa2, 0x05, 0xa1, 0x03, 0x02, 0x01, 0x14,
];

/// An upload leaf's extension value (DESIGN.md, revocation details).
const UPLOAD_EXT: &[u8] = &[
    0x30, 0x09, 0x02, 0x01, 0x05, 0xa6, 0x04, 0xa0, 0x02, 0x05, 0x00,
];

const OID_ALBATROSS: &str = "1.3.6.1.4.1.49836.42";
const OID_SKI: &str = "2.5.29.14";
const OID_KU: &str = "2.5.29.15";
const OID_SAN: &str = "2.5.29.17";
const OID_BC: &str = "2.5.29.19";
const OID_AKI: &str = "2.5.29.35";
const OID_EKU: &str = "2.5.29.37";

const BC_CA: &[u8] = &[0x30, 0x03, 0x01, 0x01, 0xff];
const BC_END_ENTITY: &[u8] = &[0x30, 0x00];
const KU_CA: &[u8] = &[0x03, 0x02, 0x01, 0xc6];
const KU_END_ENTITY: &[u8] = &[0x03, 0x02, 0x05, 0xa0];
const EKU_SERVER: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01,
];
const EKU_CLIENT: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02,
];

// ---------------------------------------------------------------------------------------
// Fixtures

fn rng() -> StdRng {
    StdRng::seed_from_u64(0x5eed)
}

fn key(key_type: KeyType) -> PrivateKey {
    PrivateKey::generate(key_type).unwrap()
}

fn root(cn: &str, key: PrivateKey) -> CaIssuer {
    let cert = cert::root_ca(
        cn,
        &key,
        Validity::for_profile(now(), Profile::RootCa),
        Serial::random(&mut rng()),
    )
    .unwrap();
    CaIssuer::new(vec![cert], key).unwrap()
}

fn template<'a>(
    profile: Profile,
    cn: &'a str,
    key: &'a PrivateKey,
    albatross: Option<&'a [u8]>,
    criticality: Criticality,
) -> CertificateTemplate<'a> {
    CertificateTemplate {
        profile,
        subject: Subject::CommonName(cn),
        public_key: key.public_key(),
        albatross,
        albatross_criticality: criticality,
        alt_names: &[],
        validity: Validity::for_profile(now(), profile),
        serial: Serial::random(&mut rng()),
    }
}

/// root (no extension) → intermediate "arc" (policy) → leaf "foo.bar" (console).
struct Chain {
    root: CaIssuer,
    intermediate: CaIssuer,
    leaf: Certificate,
}

fn chain(key_type: KeyType, inter_crit: Criticality, leaf_crit: Criticality) -> Chain {
    let root = root("test", key(key_type));
    let inter_key = key(key_type);
    let inter = cert::issue(
        &template(
            Profile::IntermediateCa,
            "arc",
            &inter_key,
            Some(POLICY_EXT),
            inter_crit,
        ),
        &root,
    )
    .unwrap();
    let intermediate = CaIssuer::new(vec![inter, root.certificate().clone()], inter_key).unwrap();
    let leaf_key = key(key_type);
    let leaf = cert::issue(
        &template(
            Profile::Leaf,
            "foo.bar",
            &leaf_key,
            Some(CONSOLE_EXT),
            leaf_crit,
        ),
        &intermediate,
    )
    .unwrap();
    Chain {
        root,
        intermediate,
        leaf,
    }
}

/// (OID, critical, value) of every extension, in order, read with x509-parser.
fn extensions(der: &[u8]) -> Vec<(String, bool, Vec<u8>)> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    assert!(rest.is_empty());
    cert.extensions()
        .iter()
        .map(|e| (e.oid.to_id_string(), e.critical, e.value.to_vec()))
        .collect()
}

fn x509(der: &[u8]) -> x509_parser::certificate::X509Certificate<'_> {
    x509_parser::parse_x509_certificate(der).unwrap().1
}

fn sha1_of_key(der: &[u8]) -> Vec<u8> {
    let cert = x509(der);
    Sha1::digest(&cert.public_key().subject_public_key.data).to_vec()
}

fn ski(key_id: &[u8]) -> Vec<u8> {
    let mut v = vec![0x04, 0x14];
    v.extend_from_slice(key_id);
    v
}

fn aki(key_id: &[u8]) -> Vec<u8> {
    let mut v = vec![0x30, 0x16, 0x80, 0x14];
    v.extend_from_slice(key_id);
    v
}

/// Verifies `leaf` with `intermediates` against the trust anchor `root` with OpenSSL's
/// verifier at `at`; the verify error on failure.
fn openssl_verify(
    root: &[u8],
    intermediates: &[&[u8]],
    leaf: &[u8],
    at: i64,
) -> Result<(), (i32, String)> {
    let mut store = X509StoreBuilder::new().unwrap();
    store.add_cert(X509::from_der(root).unwrap()).unwrap();
    let mut param = X509VerifyParam::new().unwrap();
    param.set_time(at);
    store.set_param(&param).unwrap();
    let store = store.build();
    let mut chain = Stack::new().unwrap();
    for der in intermediates {
        chain.push(X509::from_der(der).unwrap()).unwrap();
    }
    let leaf = X509::from_der(leaf).unwrap();
    let mut context = X509StoreContext::new().unwrap();
    context
        .init(&store, &leaf, &chain, |c| {
            let ok = c.verify_cert()?;
            Ok(if ok {
                Ok(())
            } else {
                Err((c.error().as_raw(), c.error().error_string().to_owned()))
            })
        })
        .unwrap()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .env_remove("OPENSSL_CONF")
        .output()
        .expect("the openssl command line is installed");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const CA_CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no
string_mask = STRING_MASK
x509_extensions = v3_ca
[dn]
C = DE
O = Example Org
CN = Test CA
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[ca]
default_ca = CA_default
[CA_default]
database = index.txt
CRLNUMBER
certificate = ca.pem
private_key = ca.key
default_md = default
default_crl_days = 7
";

/// Makes a CA with `openssl req -x509` in `dir` (`ca.pem`, `ca.key`, `ca.cnf`).
fn openssl_ca(dir: &Path, string_mask: &str, key_args: &[&str], subject: Option<&str>) {
    openssl_ca_config(dir, string_mask, true);
    let mut args = vec!["req", "-x509", "-config", "ca.cnf", "-nodes"];
    args.extend_from_slice(key_args);
    args.extend_from_slice(&["-keyout", "ca.key", "-out", "ca.pem", "-days", "30"]);
    if let Some(subject) = subject {
        args.extend_from_slice(&["-subj", subject, "-multivalue-rdn"]);
    }
    openssl(dir, &args);
}

fn openssl_ca_config(dir: &Path, string_mask: &str, crl_number: bool) {
    let config = CA_CONFIG.replace("STRING_MASK", string_mask).replace(
        "CRLNUMBER",
        if crl_number {
            "crlnumber = crlnumber"
        } else {
            ""
        },
    );
    std::fs::write(dir.join("ca.cnf"), config).unwrap();
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("crlnumber"), "01\n").unwrap();
}

fn openssl_issuer(dir: &Path) -> CaIssuer {
    let key = keys::load_key_file(&dir.join("ca.key")).unwrap();
    CaIssuer::from_pem(&std::fs::read_to_string(dir.join("ca.pem")).unwrap(), key).unwrap()
}

// ---------------------------------------------------------------------------------------
// Profiles

#[test]
fn root_ca_profile() {
    let key = key(KeyType::Ed25519);
    let serial = Serial::from_random_octets([0x9a, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let cert = cert::root_ca(
        "test",
        &key,
        Validity::for_profile(now(), Profile::RootCa),
        serial,
    )
    .unwrap();
    let parsed = x509(cert.der());
    assert_eq!(parsed.version().0, 2);
    assert_eq!(
        parsed.raw_serial(),
        &[0x00, 0x9a, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    );
    assert_eq!(parsed.subject().as_raw(), parsed.issuer().as_raw());
    assert_eq!(
        parsed.subject().as_raw(),
        &[
            0x30, 0x0f, 0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x04, b't',
            b'e', b's', b't'
        ]
    );
    assert_eq!(parsed.validity().not_before.timestamp(), now_unix() - 10);
    assert_eq!(
        parsed.validity().not_after.timestamp(),
        now_unix() + 3650 * 86_400
    );
    assert_eq!(
        parsed.signature_algorithm.algorithm.to_id_string(),
        "1.3.101.112"
    );
    assert!(parsed.signature_algorithm.parameters.is_none());
    assert_eq!(
        extensions(cert.der()),
        vec![
            (OID_KU.into(), true, KU_CA.to_vec()),
            (OID_BC.into(), true, BC_CA.to_vec()),
        ]
    );
    parsed.verify_signature(None).unwrap();
}

#[test]
fn server_profile_with_names() {
    let root = root("test", key(KeyType::Ed25519));
    let server_key = key(KeyType::P256);
    let names = [
        AltName::parse("albatross.example.org").unwrap(),
        AltName::parse("192.0.2.7").unwrap(),
    ];
    let mut t = template(
        Profile::Server,
        "server",
        &server_key,
        None,
        Criticality::NonCritical,
    );
    t.alt_names = &names;
    let cert = cert::issue(&t, &root).unwrap();
    let parsed = x509(cert.der());
    assert_eq!(parsed.issuer().as_raw(), root.facts().subject.der());
    assert_eq!(parsed.validity().not_before.timestamp(), now_unix() - 10);
    assert_eq!(
        parsed.validity().not_after.timestamp(),
        now_unix() + 365 * 86_400
    );
    let exts = extensions(cert.der());
    let names: Vec<(&str, bool)> = exts.iter().map(|(o, c, _)| (o.as_str(), *c)).collect();
    assert_eq!(
        names,
        vec![
            (OID_SAN, false),
            (OID_SKI, false),
            (OID_KU, true),
            (OID_BC, true),
            (OID_AKI, false),
            (OID_EKU, true),
        ]
    );
    assert_eq!(exts[1].2, ski(&sha1_of_key(cert.der())));
    assert_eq!(exts[2].2, KU_END_ENTITY);
    assert_eq!(exts[3].2, BC_END_ENTITY);
    // AKI = SHA-1 of the root's key, although the root has no SKI.
    assert_eq!(exts[4].2, aki(&sha1_of_key(root.certificate().der())));
    assert_eq!(exts[5].2, EKU_SERVER);
    let facts = cert.facts().unwrap();
    assert_eq!(
        facts.alt_names,
        vec!["DNS:albatross.example.org", "IP:192.0.2.7"]
    );
    // Signed by the root's Ed25519 key, whatever the subject's key.
    assert_eq!(
        parsed.signature_algorithm.algorithm.to_id_string(),
        "1.3.101.112"
    );
    parsed
        .verify_signature(Some(x509(root.certificate().der()).public_key()))
        .unwrap();
}

#[test]
fn intermediate_leaf_and_destination_profiles() {
    let c = chain(
        KeyType::Ed25519,
        Criticality::NonCritical,
        Criticality::NonCritical,
    );
    let inter = c.intermediate.certificate();
    let root_id = sha1_of_key(c.root.certificate().der());
    let inter_id = sha1_of_key(inter.der());
    assert_eq!(
        extensions(inter.der()),
        vec![
            (OID_ALBATROSS.into(), false, POLICY_EXT.to_vec()),
            (OID_SKI.into(), false, ski(&inter_id)),
            (OID_KU.into(), true, KU_CA.to_vec()),
            (OID_BC.into(), true, BC_CA.to_vec()),
            (OID_AKI.into(), false, aki(&root_id)),
        ]
    );
    let parsed = x509(inter.der());
    assert_eq!(
        parsed.validity().not_after.timestamp() - parsed.validity().not_before.timestamp(),
        365 * 86_400 + 10
    );

    let leaf_id = sha1_of_key(c.leaf.der());
    assert_eq!(
        extensions(c.leaf.der()),
        vec![
            (OID_ALBATROSS.into(), false, CONSOLE_EXT.to_vec()),
            (OID_SKI.into(), false, ski(&leaf_id)),
            (OID_KU.into(), true, KU_END_ENTITY.to_vec()),
            (OID_BC.into(), true, BC_END_ENTITY.to_vec()),
            (OID_AKI.into(), false, aki(&inter_id)),
            (OID_EKU.into(), true, EKU_CLIENT.to_vec()),
        ]
    );
    let parsed = x509(c.leaf.der());
    assert_eq!(parsed.validity().not_before.timestamp(), now_unix() - 10);
    assert_eq!(parsed.validity().not_after.timestamp(), now_unix() + 86_400);
    assert_eq!(
        parsed.issuer().as_raw(),
        x509(inter.der()).subject().as_raw()
    );

    let key = key(KeyType::Ed25519);
    let dest = cert::issue(
        &template(
            Profile::DestinationLeaf,
            ".",
            &key,
            Some(UPLOAD_EXT),
            Criticality::NonCritical,
        ),
        &c.intermediate,
    )
    .unwrap();
    let parsed = x509(dest.der());
    assert_eq!(parsed.validity().not_before.timestamp(), now_unix() - 10);
    assert_eq!(parsed.validity().not_after.timestamp(), now_unix() + 300);
    let exts = extensions(dest.der());
    assert_eq!(exts[0], (OID_ALBATROSS.into(), false, UPLOAD_EXT.to_vec()));
    assert_eq!(exts[5], (OID_EKU.into(), true, EKU_CLIENT.to_vec()));
}

#[test]
fn signature_algorithm_follows_the_signer() {
    for (key_type, oid) in [
        (KeyType::Ed25519, "1.3.101.112"),
        (KeyType::P256, "1.2.840.10045.4.3.2"),
        (KeyType::P384, "1.2.840.10045.4.3.3"),
        (KeyType::Rsa2048, "1.2.840.113549.1.1.11"),
    ] {
        let root = root("ca", key(key_type));
        let subject = key(KeyType::Ed25519);
        let leaf = cert::issue(
            &template(
                Profile::Leaf,
                "x",
                &subject,
                Some(CONSOLE_EXT),
                Criticality::NonCritical,
            ),
            &root,
        )
        .unwrap();
        let parsed = x509(leaf.der());
        assert_eq!(parsed.signature_algorithm.algorithm.to_id_string(), oid);
        assert_eq!(parsed.tbs_certificate.signature, parsed.signature_algorithm);
        assert_eq!(
            leaf.facts().unwrap().public_key.algorithm(),
            &KeyAlgorithm::Ed25519
        );
    }
}

#[test]
fn serials_come_from_the_given_randomness() {
    let root = root("ca", key(KeyType::Ed25519));
    let subject = key(KeyType::Ed25519);
    let mut t = template(Profile::Leaf, "x", &subject, None, Criticality::NonCritical);
    t.serial = Serial::from_random_octets([0x00, 0x10, 2, 3, 4, 5, 6, 7, 8, 9]);
    let leaf = cert::issue(&t, &root).unwrap();
    assert_eq!(
        x509(leaf.der()).raw_serial(),
        &[0x7f, 0x00, 0x10, 2, 3, 4, 5, 6, 7, 8, 9]
    );
    assert_eq!(leaf.facts().unwrap().serial.hex(), "7f00100203040506070809");

    let (mut a, mut b) = (rng(), rng());
    assert_eq!(Serial::random(&mut a), Serial::random(&mut b));
    assert_ne!(Serial::random(&mut a), Serial::random(&mut rng()));
}

// ---------------------------------------------------------------------------------------
// OpenSSL's verifier

#[test]
fn openssl_accepts_chains_made_here() {
    for key_type in [KeyType::Ed25519, KeyType::P256, KeyType::Rsa2048] {
        let c = chain(key_type, Criticality::NonCritical, Criticality::NonCritical);
        assert_eq!(
            openssl_verify(
                c.root.certificate().der(),
                &[c.intermediate.certificate().der()],
                c.leaf.der(),
                now_unix() + 60,
            ),
            Ok(()),
            "{key_type}"
        );
        // The same chain an hour and a day later: the leaf (1 day) has expired.
        assert_eq!(
            openssl_verify(
                c.root.certificate().der(),
                &[c.intermediate.certificate().der()],
                c.leaf.der(),
                now_unix() + 86_400 + 1,
            ),
            Err((10, "certificate has expired".to_owned()))
        );
    }
}

#[test]
fn openssl_rejects_a_critical_albatross_extension() {
    for (inter, leaf) in [
        (Criticality::NonCritical, Criticality::Critical),
        (Criticality::Critical, Criticality::NonCritical),
    ] {
        let c = chain(KeyType::Ed25519, inter, leaf);
        assert_eq!(
            openssl_verify(
                c.root.certificate().der(),
                &[c.intermediate.certificate().der()],
                c.leaf.der(),
                now_unix() + 60,
            ),
            Err((34, "unhandled critical extension".to_owned()))
        );
        let facts = if leaf == Criticality::Critical {
            c.leaf.facts().unwrap()
        } else {
            c.intermediate.facts().clone()
        };
        assert!(facts.albatross[0].critical);
    }
}

#[test]
fn cas_made_by_the_openssl_command_line_sign_csrs() {
    let cases: [(&str, &[&str], Option<&str>, u8); 3] = [
        (
            "default",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            None,
            0x13, // PrintableString
        ),
        ("utf8only", &["-newkey", "rsa:2048"], None, 0x0c), // UTF8String
        (
            "utf8only",
            &["-newkey", "ed25519"],
            Some("/C=DE/O=Example+OU=Ops/CN=Multi CA"),
            0x0c,
        ),
    ];
    for (mask, key_args, subject, cn_tag) in cases {
        let dir = tempfile::tempdir().unwrap();
        openssl_ca(dir.path(), mask, key_args, subject);
        let issuer = openssl_issuer(dir.path());
        let ca_der = issuer.certificate().der().to_vec();
        let ca = x509(&ca_der);
        let cn = ca.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.attr_value().header.tag().0, u32::from(cn_tag));

        let leaf_key = key(KeyType::Ed25519);
        let request = csr::create_csr("alice", Some(CONSOLE_EXT), &leaf_key).unwrap();
        let verified = ParsedCsr::parse(request.pem().as_bytes())
            .unwrap()
            .verify()
            .unwrap();
        let at = ca.validity().not_before.timestamp() + 3600;
        let issued_at = OffsetDateTime::from_unix_timestamp(at).unwrap();
        let leaf = cert::issue(
            &verified.template(
                Profile::Leaf,
                Some(CONSOLE_EXT),
                Validity::for_profile(issued_at, Profile::Leaf),
                Serial::random(&mut rng()),
            ),
            &issuer,
        )
        .unwrap();
        let parsed = x509(leaf.der());
        assert_eq!(parsed.issuer().as_raw(), ca.subject().as_raw(), "{mask}");
        assert_eq!(parsed.subject().as_raw(), verified.subject().der());
        assert_eq!(
            openssl_verify(&ca_der, &[], leaf.der(), at + 60),
            Ok(()),
            "{mask} {key_args:?}"
        );
        // The CA's SKI (OpenSSL's) is what the leaf's AKI names.
        let facts = leaf.facts().unwrap();
        assert_eq!(
            facts.authority_key_id,
            issuer.facts().subject_key_id.clone()
        );
        assert!(issuer.is_self_signed());
        assert_eq!(issuer.chain_pem(&leaf), leaf.pem());
    }
}

// ---------------------------------------------------------------------------------------
// CSRs, sign, database and chain files

#[test]
fn csr_round_trip() {
    for key_type in [KeyType::Ed25519, KeyType::P384, KeyType::Rsa2048] {
        let key = key(key_type);
        let request = csr::create_csr("arc", Some(POLICY_EXT), &key).unwrap();
        for input in [request.der().to_vec(), request.pem().into_bytes()] {
            let parsed = ParsedCsr::parse(&input).unwrap();
            assert_eq!(parsed.common_name(), &CommonName::One("arc".into()));
            assert_eq!(parsed.subject().text(), "CN=arc");
            assert_eq!(parsed.public_key(), key.public_key());
            assert_eq!(
                parsed.albatross(),
                Some(&AlbatrossExtension {
                    critical: false,
                    value: POLICY_EXT.to_vec()
                })
            );
            let verified = parsed.verify().unwrap();
            assert_eq!(verified.name().unwrap(), "arc");
        }
    }
}

#[test]
fn csr_holds_only_the_albatross_extension() {
    let key = key(KeyType::Ed25519);
    let request = csr::create_csr("x", Some(CONSOLE_EXT), &key).unwrap();
    let (_, parsed) =
        x509_parser::certification_request::X509CertificationRequest::from_der(request.der())
            .unwrap();
    let attributes = parsed.certification_request_info.attributes();
    assert_eq!(attributes.len(), 1);
    assert_eq!(attributes[0].oid.to_id_string(), "1.2.840.113549.1.9.14");
    let x509_parser::cri_attributes::ParsedCriAttribute::ExtensionRequest(request) =
        attributes[0].parsed_attribute()
    else {
        panic!("not an extension request");
    };
    let exts: Vec<_> = request
        .extensions
        .iter()
        .map(|e| (e.oid.to_id_string(), e.critical, e.value.to_vec()))
        .collect();
    assert_eq!(
        exts,
        vec![(OID_ALBATROSS.into(), false, CONSOLE_EXT.to_vec())]
    );

    let without = csr::create_csr("server", None, &key).unwrap();
    let (_, raw) =
        x509_parser::certification_request::X509CertificationRequest::from_der(without.der())
            .unwrap();
    assert!(raw.certification_request_info.attributes().is_empty());
    let parsed = ParsedCsr::parse(without.der()).unwrap();
    assert_eq!(parsed.albatross(), None);
}

#[test]
fn csrs_made_elsewhere() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let request = |exts: Vec<rcgen::CustomExtension>| {
        let mut params = rcgen::CertificateParams::default();
        params.custom_extensions = exts;
        params.serialize_request(&key).unwrap().der().to_vec()
    };
    let twice = request(vec![
        albatross_ext(CONSOLE_EXT, false),
        albatross_ext(POLICY_EXT, false),
    ]);
    let error = ParsedCsr::parse(&twice).unwrap_err();
    assert!(matches!(error, PkiError::CsrDuplicateExtension));
    assert_eq!(
        error.to_string(),
        "CSR carries more than one albatross extension"
    );
    let critical = ParsedCsr::parse(&request(vec![albatross_ext(CONSOLE_EXT, true)])).unwrap();
    assert_eq!(
        critical.albatross(),
        Some(&AlbatrossExtension {
            critical: true,
            value: CONSOLE_EXT.to_vec()
        })
    );
    assert_eq!(critical.subject().text(), "CN=rcgen self signed cert");
}

#[test]
fn tampered_csr_fails_verification() {
    let key = key(KeyType::Ed25519);
    let request = csr::create_csr("alice", Some(CONSOLE_EXT), &key).unwrap();
    let mut der = request.der().to_vec();
    let at = der.windows(5).position(|w| w == b"alice").unwrap();
    der[at] = b'm';
    let parsed = ParsedCsr::parse(&der).unwrap();
    assert_eq!(parsed.common_name(), &CommonName::One("mlice".into()));
    let error = parsed.verify().unwrap_err();
    assert!(matches!(error, PkiError::CsrBadSignature));
    assert_eq!(error.to_string(), "CSR signature verification failed");
}

#[test]
fn csr_without_common_name() {
    let dir = tempfile::tempdir().unwrap();
    openssl_ca_config(dir.path(), "utf8only", false);
    openssl(
        dir.path(),
        &[
            "req",
            "-new",
            "-config",
            "ca.cnf",
            "-newkey",
            "ed25519",
            "-nodes",
            "-keyout",
            "k.key",
            "-out",
            "r.csr",
            "-subj",
            "/O=nobody",
        ],
    );
    let text = std::fs::read(dir.path().join("r.csr")).unwrap();
    let verified = ParsedCsr::parse(&text).unwrap().verify().unwrap();
    assert_eq!(verified.common_name(), &CommonName::Absent);
    assert_eq!(verified.albatross(), None);
    assert_eq!(
        verified.name().unwrap_err().to_string(),
        "couldn't find name (no common name in CSR subject)"
    );
    assert_eq!(
        Profile::for_csr(verified.albatross().map(|_| RequestedCommand::Other)),
        Profile::Server
    );
}

#[test]
fn sign_writes_database_and_chain_files() {
    let dir = tempfile::tempdir().unwrap();
    let c = chain(
        KeyType::Ed25519,
        Criticality::NonCritical,
        Criticality::NonCritical,
    );
    let db = dir.path().join("db");

    // Signed by the self-signed root: the chain file holds only the new certificate.
    let key = key(KeyType::Ed25519);
    let request = csr::create_csr("arc2", Some(POLICY_EXT), &key).unwrap();
    let verified = ParsedCsr::parse(request.der()).unwrap().verify().unwrap();
    let serial = Serial::from_random_octets([0xab, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    let profile = Profile::for_csr(Some(RequestedCommand::Policy));
    assert_eq!(profile, Profile::IntermediateCa);
    let cert = cert::issue(
        &verified.template(
            profile,
            Some(POLICY_EXT),
            Validity::for_profile(now(), profile),
            serial.clone(),
        ),
        &c.root,
    )
    .unwrap();
    cert::append_database(&db, &serial, verified.name().unwrap()).unwrap();
    let path = cert::write_chain_file(dir.path(), "arc2", &c.root.chain_pem(&cert)).unwrap();
    assert_eq!(path, dir.path().join("arc2.pem"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), cert.pem());

    // Signed by the intermediate: the chain file continues with the CA's file.
    let serial2 = Serial::from_random_octets([0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0x42]);
    let leaf = cert::issue(
        &verified.template(
            Profile::Leaf,
            Some(CONSOLE_EXT),
            Validity::for_profile(now(), Profile::Leaf),
            serial2.clone(),
        ),
        &c.intermediate,
    )
    .unwrap();
    cert::append_database(&db, &serial2, "arc2").unwrap();
    let path =
        cert::write_chain_file(dir.path(), "arc2", &c.intermediate.chain_pem(&leaf)).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!(
            "{}{}{}",
            leaf.pem(),
            c.intermediate.certificate().pem(),
            c.root.certificate().pem()
        )
    );
    assert_eq!(
        std::fs::read_to_string(&db).unwrap(),
        "ab000102030405060708 arc2\n01000000000000000042 arc2\n"
    );
    assert_eq!(
        Certificate::from_pem_chain(&std::fs::read_to_string(&path).unwrap())
            .unwrap()
            .len(),
        3
    );
    assert!(matches!(
        cert::append_database(&db, &serial2, "a\nb"),
        Err(PkiError::InvalidCommonName(_))
    ));
}

// ---------------------------------------------------------------------------------------
// Keys

#[test]
fn key_files_are_private_and_never_overwritten() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.key");
    let (generated, origin) = keys::load_or_generate_key_file(&path, KeyType::P256).unwrap();
    assert_eq!(origin, KeyOrigin::Generated);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"));

    // An existing key is reused, whatever type is asked for.
    let (loaded, origin) = keys::load_or_generate_key_file(&path, KeyType::Ed25519).unwrap();
    assert_eq!(origin, KeyOrigin::Loaded);
    assert_eq!(loaded.public_key(), generated.public_key());
    assert_eq!(loaded.algorithm(), &KeyAlgorithm::EcdsaP256);

    let other = key(KeyType::Ed25519);
    match keys::write_key_file(&path, &other) {
        Err(PkiError::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists)
        }
        other => panic!("overwrote an existing key: {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn rsa_keys_from_openssl() {
    for (key_type, bits) in [(KeyType::Rsa2048, 2048), (KeyType::Rsa4096, 4096)] {
        let key = key(key_type);
        assert_eq!(key.algorithm(), &KeyAlgorithm::Rsa { bits });
        let again = PrivateKey::from_pem(&key.to_pem()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
    }
    // A key written by the openssl command line loads.
    let dir = tempfile::tempdir().unwrap();
    openssl(
        dir.path(),
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            "k.pem",
        ],
    );
    let key = keys::load_key_file(&dir.path().join("k.pem")).unwrap();
    assert_eq!(key.algorithm(), &KeyAlgorithm::EcdsaP384);
}

#[test]
fn key_must_match_certificate() {
    let root = root("test", key(KeyType::Ed25519));
    let other = key(KeyType::Ed25519);
    let error = CaIssuer::new(vec![root.certificate().clone()], other).unwrap_err();
    assert_eq!(
        error.to_string(),
        "Public key of certificate doesn't match private key"
    );
    assert_eq!(
        facts::check_key_matches(&key(KeyType::P256), root.certificate().der())
            .unwrap_err()
            .to_string(),
        "Public key of certificate doesn't match private key"
    );
    facts::check_key_matches(root.key(), root.certificate().der()).unwrap();
}

// ---------------------------------------------------------------------------------------
// CRLs

fn entry(serial: &[u8], at: i64, reason: Option<RevocationReason>) -> RevokedEntry {
    RevokedEntry {
        serial: Serial::from_der_content(serial),
        revoked_at: at,
        reason,
        invalidity_date: None,
    }
}

fn crl_template(number: u64, revoked: Vec<RevokedEntry>) -> CrlTemplate {
    CrlTemplate {
        this_update: now(),
        next_update: Some(now() + time::Duration::days(7)),
        number: CrlNumber::from_u64(number),
        revoked,
    }
}

fn validate(crl: &ParsedCrl, issuer: &CertificateFacts, at: i64) -> Result<ValidatedCrl, CrlError> {
    crl::validate_crl(
        crl.clone(),
        issuer,
        OffsetDateTime::from_unix_timestamp(at).unwrap(),
        CRL_CLOCK_SKEW,
    )
}

#[test]
fn crl_create_parse_validate() {
    for key_type in [KeyType::Ed25519, KeyType::P256, KeyType::Rsa2048] {
        let ca = root("test", key(key_type));
        let revoked = vec![
            entry(
                &[0x00, 0x9a, 1, 2, 3, 4, 5, 6, 7, 8, 9],
                now_unix() - 3600,
                None,
            ),
            entry(
                &[0x42],
                now_unix() - 60,
                Some(RevocationReason::KeyCompromise),
            ),
        ];
        let made = crl::create_crl(&crl_template(7, revoked.clone()), &ca).unwrap();
        for input in [made.der().to_vec(), made.pem().into_bytes()] {
            let parsed = ParsedCrl::parse(&input).unwrap();
            assert_eq!(parsed.issuer().der(), ca.facts().subject.der());
            assert_eq!(parsed.number(), Some(&CrlNumber::from_u64(7)));
            assert_eq!(parsed.this_update(), now_unix());
            assert_eq!(parsed.next_update(), Some(now_unix() + 7 * 86_400));
            assert_eq!(parsed.revoked(), revoked.as_slice());
            assert_eq!(parsed.authority_key_id(), Some(ca.authority_key_id()));
            assert!(parsed.is_revoked(&Serial::from_der_content(&[0x42])));
            assert!(!parsed.is_revoked(&Serial::from_der_content(&[0x43])));
            let valid = validate(&parsed, ca.facts(), now_unix()).unwrap();
            assert_eq!(valid.number(), &CrlNumber::from_u64(7));
        }
    }
}

#[test]
fn crl_without_next_update() {
    let ca = root("test", key(KeyType::Ed25519));
    let mut t = crl_template(1, vec![]);
    t.next_update = None;
    let parsed = ParsedCrl::parse(crl::create_crl(&t, &ca).unwrap().der()).unwrap();
    assert_eq!(parsed.next_update(), None);
    assert!(parsed.revoked().is_empty());
    // Without nextUpdate it never expires.
    validate(&parsed, ca.facts(), now_unix() + 10 * 365 * 86_400).unwrap();
}

#[test]
fn crl_extend_keeps_entries_and_increments_the_number() {
    let ca = root("test", key(KeyType::P256));
    let first = entry(
        &[0x10],
        now_unix() - 100,
        Some(RevocationReason::Superseded),
    );
    let made = crl::create_crl(&crl_template(41, vec![first.clone()]), &ca).unwrap();
    let old = ParsedCrl::parse(made.der()).unwrap();
    let later = now() + time::Duration::hours(1);
    let second = entry(&[0x00, 0x80], later.unix_timestamp(), None);
    let extended =
        crl::extend_crl(&old, &ca, later, None, &[first.clone(), second.clone()]).unwrap();
    let new = ParsedCrl::parse(extended.der()).unwrap();
    assert_eq!(new.number(), Some(&CrlNumber::from_u64(42)));
    assert_eq!(new.revoked(), &[first, second]);
    assert_eq!(new.this_update(), later.unix_timestamp());
    assert_eq!(new.next_update(), None);
    validate(&new, ca.facts(), later.unix_timestamp()).unwrap();

    // Someone else's CRL cannot be extended.
    let other = root("other", key(KeyType::P256));
    assert!(matches!(
        crl::extend_crl(&old, &other, later, None, &[]),
        Err(PkiError::Crl(CrlError::IssuerMismatch { .. }))
    ));
}

#[test]
fn crl_validation_errors() {
    let ca = root("test", key(KeyType::Ed25519));
    let good = ParsedCrl::parse(
        crl::create_crl(&crl_template(3, vec![]), &ca)
            .unwrap()
            .der(),
    )
    .unwrap();

    // Same name, other key: the signature does not verify.
    let impostor = root("test", key(KeyType::Ed25519));
    let error = validate(&good, impostor.facts(), now_unix()).unwrap_err();
    assert_eq!(error, CrlError::BadSignature);
    assert_eq!(error.to_string(), "CRL signature verification failed");

    // Other name.
    let other = root("other", key(KeyType::Ed25519));
    let error = validate(&good, other.facts(), now_unix()).unwrap_err();
    assert_eq!(
        error,
        CrlError::IssuerMismatch {
            crl_issuer: "CN=test".into(),
            ca_subject: "CN=other".into()
        }
    );
    assert_eq!(
        error.to_string(),
        "CRL issuer CN=test does not match CA CN=other"
    );

    // thisUpdate in the future: accepted within the skew, refused beyond.
    let skew = i64::try_from(CRL_CLOCK_SKEW.as_secs()).unwrap();
    assert_eq!(skew, 300);
    validate(&good, ca.facts(), now_unix() - skew).unwrap();
    let error = validate(&good, ca.facts(), now_unix() - skew - 1).unwrap_err();
    assert_eq!(
        error,
        CrlError::NotYetValid {
            this_update: now_unix(),
            now: now_unix() - 301
        }
    );
    assert_eq!(
        error.to_string(),
        "CRL thisUpdate 2024-05-01T12:00:00Z is in the future (now 2024-05-01T11:54:59Z)"
    );

    // nextUpdate passed.
    let next = now_unix() + 7 * 86_400;
    validate(&good, ca.facts(), next).unwrap();
    let error = validate(&good, ca.facts(), next + 1).unwrap_err();
    assert_eq!(
        error,
        CrlError::Expired {
            next_update: next,
            now: next + 1
        }
    );
    assert_eq!(
        error.to_string(),
        "CRL nextUpdate 2024-05-08T12:00:00Z has passed (now 2024-05-08T12:00:01Z)"
    );

    // A tampered CRL.
    let mut der = good.der().to_vec();
    let at = der.windows(4).position(|w| w == b"test").unwrap();
    der[at] = b'T';
    let tampered = ParsedCrl::parse(&der).unwrap();
    assert!(matches!(
        validate(&tampered, ca.facts(), now_unix()),
        Err(CrlError::IssuerMismatch { .. })
    ));
    let mut der = good.der().to_vec();
    let last = der.len() - 1;
    der[last] ^= 1;
    assert_eq!(
        validate(&ParsedCrl::parse(&der).unwrap(), ca.facts(), now_unix()),
        Err(CrlError::BadSignature)
    );

    // A "CA" whose keyUsage does not allow CRL signing.
    let server = cert::issue(
        &template(
            Profile::Server,
            "test",
            ca.key(),
            None,
            Criticality::NonCritical,
        ),
        &other,
    )
    .unwrap();
    let error = validate(&good, &server.facts().unwrap(), now_unix()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "CA CN=test may not sign CRLs (keyUsage without cRLSign)"
    );
}

#[test]
fn crl_parse_errors() {
    assert!(matches!(ParsedCrl::parse(b""), Err(CrlError::Pem(_))));
    assert!(matches!(
        ParsedCrl::parse(&[0x30, 0x03, 0x02, 0x01, 0x00]),
        Err(CrlError::Malformed(_))
    ));
    let ca = root("test", key(KeyType::Ed25519));
    let good = crl::create_crl(&crl_template(3, vec![]), &ca).unwrap();
    let mut trailing = good.der().to_vec();
    trailing.push(0);
    assert_eq!(
        ParsedCrl::parse(&trailing),
        Err(CrlError::Malformed("trailing data".into()))
    );
    let too_large = vec![0x30; 8 * 1024 * 1024 + 1];
    assert_eq!(
        ParsedCrl::parse(&too_large).unwrap_err().to_string(),
        "CRL too large (8388609 octets, at most 8388608 allowed)"
    );
    let cert_pem = ca.certificate().pem();
    assert_eq!(
        ParsedCrl::parse(cert_pem.as_bytes())
            .unwrap_err()
            .to_string(),
        "invalid PEM CRL: expected \"X509 CRL\", found \"CERTIFICATE\""
    );
}

/// `openssl ca -gencrl` in `dir` with the CA made there; revokes `revoke` (a PEM file
/// name) first if given. Returns the PEM CRL.
fn openssl_gencrl(dir: &Path, revoke: Option<&str>, sigopt: &[&str]) -> Vec<u8> {
    if let Some(file) = revoke {
        openssl(
            dir,
            &[
                "ca",
                "-config",
                "ca.cnf",
                "-revoke",
                file,
                "-crl_reason",
                "keyCompromise",
            ],
        );
    }
    let mut args = vec!["ca", "-config", "ca.cnf", "-gencrl", "-out", "crl.pem"];
    args.extend_from_slice(sigopt);
    openssl(dir, &args);
    std::fs::read(dir.join("crl.pem")).unwrap()
}

#[test]
fn crls_made_by_openssl_parse_and_validate() {
    let cases: [(&[&str], &[&str], &str); 5] = [
        // OpenSSL's default PSS salt is as long as possible (ring cannot verify that).
        (
            &["-newkey", "rsa:3072"],
            &["-sigopt", "rsa_padding_mode:pss", "-md", "sha384"],
            "rsassaPss",
        ),
        (&["-newkey", "rsa:2048"], &[], "sha256WithRSAEncryption"),
        (
            &["-newkey", "rsa:2048"],
            &[
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:digest",
            ],
            "rsassaPss",
        ),
        (
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
            &[],
            "ecdsa-with-SHA256",
        ),
        (&["-newkey", "ed25519"], &[], "ed25519"),
    ];
    for (key_args, sigopt, algorithm) in cases {
        let dir = tempfile::tempdir().unwrap();
        openssl_ca(dir.path(), "utf8only", key_args, None);
        let issuer = openssl_issuer(dir.path());
        let at = issuer.facts().not_before + 3600;
        // A leaf issued here by the OpenSSL CA, then revoked by OpenSSL.
        let leaf_key = key(KeyType::Ed25519);
        let leaf = cert::issue(
            &CertificateTemplate {
                validity: Validity::for_profile(
                    OffsetDateTime::from_unix_timestamp(at).unwrap(),
                    Profile::Leaf,
                ),
                ..template(
                    Profile::Leaf,
                    "victim",
                    &leaf_key,
                    Some(CONSOLE_EXT),
                    Criticality::NonCritical,
                )
            },
            &issuer,
        )
        .unwrap();
        std::fs::write(dir.path().join("leaf.pem"), leaf.pem()).unwrap();
        let pem = openssl_gencrl(dir.path(), Some("leaf.pem"), sigopt);
        openssl(
            dir.path(),
            &[
                "crl", "-in", "crl.pem", "-outform", "DER", "-out", "crl.der",
            ],
        );
        let der = std::fs::read(dir.path().join("crl.der")).unwrap();
        for input in [pem.clone(), der] {
            let parsed = ParsedCrl::parse(&input).unwrap();
            assert_eq!(parsed.signature_algorithm().to_string(), algorithm);
            assert_eq!(parsed.issuer().der(), issuer.facts().subject.der());
            assert_eq!(parsed.number(), Some(&CrlNumber::from_u64(1)));
            assert_eq!(parsed.revoked().len(), 1);
            let revoked = &parsed.revoked()[0];
            assert_eq!(revoked.serial, leaf.facts().unwrap().serial);
            assert_eq!(revoked.reason, Some(RevocationReason::KeyCompromise));
            let now = parsed.this_update() + 60;
            let valid = validate(&parsed, issuer.facts(), now).unwrap();
            assert_eq!(valid.number().to_string(), "1");
            assert_eq!(
                parsed.next_update(),
                Some(parsed.this_update() + 7 * 86_400)
            );
        }
        // We can extend what OpenSSL made, with the same CA key.
        let parsed = ParsedCrl::parse(&pem).unwrap();
        let later = OffsetDateTime::from_unix_timestamp(parsed.this_update() + 120).unwrap();
        let extended = crl::extend_crl(
            &parsed,
            &issuer,
            later,
            Some(later + time::Duration::days(1)),
            &[entry(&[0x05], later.unix_timestamp(), None)],
        )
        .unwrap();
        let new = ParsedCrl::parse(extended.der()).unwrap();
        assert_eq!(new.number(), Some(&CrlNumber::from_u64(2)));
        assert_eq!(new.revoked().len(), 2);
        assert_eq!(new.revoked()[0], parsed.revoked()[0]);
        validate(&new, issuer.facts(), later.unix_timestamp()).unwrap();
        // And OpenSSL reads ours.
        std::fs::write(dir.path().join("ours.pem"), extended.pem()).unwrap();
        openssl(
            dir.path(),
            &["crl", "-in", "ours.pem", "-CAfile", "ca.pem", "-noout"],
        );
    }
}

#[test]
fn openssl_crl_without_number_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    openssl_ca(dir.path(), "utf8only", &["-newkey", "ed25519"], None);
    openssl_ca_config(dir.path(), "utf8only", false);
    let issuer = openssl_issuer(dir.path());
    let parsed = ParsedCrl::parse(&openssl_gencrl(dir.path(), None, &[])).unwrap();
    assert_eq!(parsed.number(), None);
    let error = validate(&parsed, issuer.facts(), parsed.this_update()).unwrap_err();
    assert_eq!(error, CrlError::NoCrlNumber);
    assert_eq!(error.to_string(), "CRL without CRL number");
}

#[test]
fn sha1_crls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    openssl_ca(dir.path(), "utf8only", &["-newkey", "rsa:2048"], None);
    let issuer = openssl_issuer(dir.path());
    let parsed = ParsedCrl::parse(&openssl_gencrl(dir.path(), None, &["-md", "sha1"])).unwrap();
    let error = validate(&parsed, issuer.facts(), parsed.this_update()).unwrap_err();
    assert_eq!(
        error,
        CrlError::UnsupportedSignatureAlgorithm("sha1WithRSAEncryption".into())
    );
    assert_eq!(
        error.to_string(),
        "unsupported CRL signature algorithm sha1WithRSAEncryption"
    );
}

// ---------------------------------------------------------------------------------------
// Facts

/// A certificate built with rcgen directly, with whatever extensions the test wants.
fn raw_certificate(cn: Option<&str>, extensions: Vec<rcgen::CustomExtension>) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    if let Some(cn) = cn {
        dn.push(rcgen::DnType::CommonName, cn);
    }
    params.distinguished_name = dn;
    params.custom_extensions = extensions;
    params.self_signed(&key).unwrap().der().to_vec()
}

fn albatross_ext(value: &[u8], critical: bool) -> rcgen::CustomExtension {
    let mut ext =
        rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 49836, 42], value.to_vec());
    ext.set_criticality(critical);
    ext
}

#[test]
fn facts_report_every_albatross_extension() {
    let der = raw_certificate(
        Some("dup"),
        vec![
            albatross_ext(CONSOLE_EXT, false),
            albatross_ext(POLICY_EXT, true),
        ],
    );
    let facts = CertificateFacts::from_der(&der).unwrap();
    assert_eq!(
        facts.albatross,
        vec![
            AlbatrossExtension {
                critical: false,
                value: CONSOLE_EXT.to_vec()
            },
            AlbatrossExtension {
                critical: true,
                value: POLICY_EXT.to_vec()
            },
        ]
    );
    assert_eq!(facts.extensions.len(), 2);
    assert_eq!(facts.common_name, CommonName::One("dup".into()));
}

#[test]
fn facts_refuse_duplicate_standard_extensions() {
    let ku = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 15], KU_CA.to_vec());
    let der = raw_certificate(Some("x"), vec![ku.clone(), ku]);
    assert_eq!(
        CertificateFacts::from_der(&der),
        Err(FactsError::DuplicateExtension("2.5.29.15".into()))
    );
    let bad = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x04, 0x00]);
    let der = raw_certificate(Some("x"), vec![bad]);
    assert_eq!(
        CertificateFacts::from_der(&der).unwrap_err().to_string(),
        "invalid extension 2.5.29.19"
    );
}

#[test]
fn facts_of_common_names() {
    let none = CertificateFacts::from_der(&raw_certificate(None, vec![])).unwrap();
    assert_eq!(none.common_name, CommonName::Absent);
    assert_eq!(none.subject.text(), "");

    // Two commonName attributes in two RDNs, made with OpenSSL.
    let dir = tempfile::tempdir().unwrap();
    openssl_ca(
        dir.path(),
        "utf8only",
        &["-newkey", "ed25519"],
        Some("/CN=one/CN=two"),
    );
    let pem = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    let facts = Certificate::from_pem_chain(&pem).unwrap()[0]
        .facts()
        .unwrap();
    assert_eq!(
        facts.common_name,
        CommonName::Several(vec!["one".into(), "two".into()])
    );
    assert_eq!(facts.subject.text(), "CN=two,CN=one");
}

#[test]
fn facts_of_a_leaf() {
    let c = chain(
        KeyType::Ed25519,
        Criticality::NonCritical,
        Criticality::NonCritical,
    );
    let facts = c.leaf.facts().unwrap();
    let parsed = x509(c.leaf.der());
    assert_eq!(facts.subject.text(), "CN=foo.bar");
    assert_eq!(facts.issuer.text(), "CN=arc");
    assert_eq!(facts.issuer.der(), c.intermediate.facts().subject.der());
    assert_eq!(facts.common_name, CommonName::One("foo.bar".into()));
    assert_eq!(facts.serial.as_bytes(), parsed.raw_serial());
    assert_eq!(facts.not_before, now_unix() - 10);
    assert_eq!(facts.not_after, now_unix() + 86_400);
    let bc = facts.basic_constraints.unwrap();
    assert!(bc.critical && !bc.ca && bc.path_len.is_none());
    let ku = facts.key_usage.unwrap();
    assert!(ku.critical);
    assert_eq!(ku.names(), vec!["digitalSignature", "keyEncipherment"]);
    let eku = facts.extended_key_usage.clone().unwrap();
    assert!(eku.critical);
    assert_eq!(eku.purposes, vec![KeyPurpose::ClientAuth]);
    assert_eq!(
        facts.subject_key_id.as_deref(),
        Some(&sha1_of_key(c.leaf.der())[..])
    );
    assert_eq!(
        facts.authority_key_id.as_deref(),
        Some(&sha1_of_key(c.intermediate.certificate().der())[..])
    );
    assert_eq!(
        facts.spki_sha256().to_vec(),
        <sha2::Sha256 as sha2::Digest>::digest(parsed.public_key().raw).to_vec()
    );
    assert_eq!(facts.signature_algorithm.to_string(), "ed25519");
    assert_eq!(facts.albatross.len(), 1);
    assert!(!facts.is_self_issued());
    assert!(facts.is_valid_at(now_unix()));
    assert!(!facts.is_valid_at(now_unix() + 86_401));

    let root = c.root.facts();
    assert!(root.is_self_issued());
    assert!(root.subject_key_id.is_none() && root.authority_key_id.is_none());
    assert!(root.basic_constraints.unwrap().ca);
}

#[test]
fn facts_refuse_truncated_and_trailing_der() {
    let c = chain(
        KeyType::Ed25519,
        Criticality::NonCritical,
        Criticality::NonCritical,
    );
    let der = c.leaf.der();
    for len in 0..der.len() {
        assert!(
            CertificateFacts::from_der(&der[..len]).is_err(),
            "truncated to {len}"
        );
    }
    let mut trailing = der.to_vec();
    trailing.push(0);
    assert_eq!(
        CertificateFacts::from_der(&trailing),
        Err(FactsError::TrailingData)
    );
}

#[test]
fn inspect_descriptions() {
    let c = chain(
        KeyType::Ed25519,
        Criticality::NonCritical,
        Criticality::NonCritical,
    );
    let facts = c.leaf.facts().unwrap();
    let json = serde_json::to_value(describe::describe_certificate(&facts)).unwrap();
    assert_eq!(json["kind"], "certificate");
    assert_eq!(json["subject"], "CN=foo.bar");
    assert_eq!(json["common_name"], "foo.bar");
    assert_eq!(json["issuer"], "CN=arc");
    assert_eq!(json["serial"], facts.serial.hex());
    assert_eq!(json["validity"]["not_before"], "2024-05-01T11:59:50Z");
    assert_eq!(json["validity"]["not_after"], "2024-05-02T12:00:00Z");
    assert_eq!(json["key_type"], "ed25519");
    assert_eq!(json["signature_algorithm"], "ed25519");
    assert_eq!(
        json["key_usage"],
        serde_json::json!({"critical": true, "usages": ["digitalSignature", "keyEncipherment"]})
    );
    assert_eq!(
        json["extended_key_usage"],
        serde_json::json!({"critical": true, "purposes": ["clientAuth"]})
    );
    assert_eq!(
        json["basic_constraints"],
        serde_json::json!({"critical": true, "ca": false, "path_len": null})
    );
    assert_eq!(
        json["albatross"],
        serde_json::json!([{"critical": false, "value_hex": "300c020105a007a205a103020114"}])
    );
    assert_eq!(
        json["extensions"][0],
        serde_json::json!({"oid": OID_ALBATROSS, "name": "albatross", "critical": false})
    );

    let key = key(KeyType::P256);
    let request = csr::create_csr("arc", Some(POLICY_EXT), &key).unwrap();
    let json = serde_json::to_value(describe::describe_csr(
        &ParsedCsr::parse(request.der()).unwrap(),
    ))
    .unwrap();
    assert_eq!(json["kind"], "csr");
    assert_eq!(json["subject"], "CN=arc");
    assert_eq!(json["key_type"], "p256");
    assert_eq!(json["signature_algorithm"], "ecdsa-with-SHA256");
    assert_eq!(json["signature_valid"], true);

    let revoked = vec![entry(
        &[0x42],
        now_unix() - 60,
        Some(RevocationReason::KeyCompromise),
    )];
    let made = crl::create_crl(&crl_template(9, revoked), &c.root).unwrap();
    let json = serde_json::to_value(describe::describe_crl(
        &ParsedCrl::parse(made.der()).unwrap(),
    ))
    .unwrap();
    assert_eq!(json["kind"], "crl");
    assert_eq!(json["issuer"], "CN=test");
    assert_eq!(json["number"], "9");
    assert_eq!(json["this_update"], "2024-05-01T12:00:00Z");
    assert_eq!(json["next_update"], "2024-05-08T12:00:00Z");
    assert_eq!(
        json["revoked"],
        serde_json::json!([{
            "serial": "42",
            "revoked_at": "2024-05-01T11:59:00Z",
            "reason": "keyCompromise",
            "invalidity_date": null
        }])
    );
}

// ---------------------------------------------------------------------------------------
// Hostile input: errors, never panics

fn sample_inputs() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let c = chain(
        KeyType::P256,
        Criticality::NonCritical,
        Criticality::NonCritical,
    );
    let crl = crl::create_crl(
        &crl_template(
            1,
            vec![entry(&[1], now_unix(), Some(RevocationReason::Superseded))],
        ),
        &c.root,
    )
    .unwrap();
    let request = csr::create_csr("x", Some(CONSOLE_EXT), &key(KeyType::Ed25519)).unwrap();
    (
        c.leaf.der().to_vec(),
        crl.der().to_vec(),
        request.der().to_vec(),
    )
}

fn mutate(mut input: Vec<u8>, position: usize, value: u8, cut: usize) -> Vec<u8> {
    if !input.is_empty() {
        let at = position % input.len();
        input[at] = value;
        input.truncate(input.len() - cut % input.len());
    }
    input
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = CertificateFacts::from_der(&bytes);
        let _ = ParsedCrl::parse(&bytes);
        let _ = ParsedCsr::parse(&bytes).map(|c| c.check_signature());
        let mut sequence = vec![0x30, 0x82];
        sequence.extend_from_slice(&u16::try_from(bytes.len()).unwrap().to_be_bytes());
        sequence.extend_from_slice(&bytes);
        prop_assert!(CertificateFacts::from_der(&sequence).is_err());
    }

    #[test]
    fn mutated_inputs_never_panic(
        position in any::<usize>(),
        value in any::<u8>(),
        cut in any::<usize>(),
    ) {
        let (cert, crl, csr) = SAMPLES.with(|s| s.clone());
        let _ = CertificateFacts::from_der(&mutate(cert, position, value, cut));
        let _ = ParsedCrl::parse(&mutate(crl, position, value, cut));
        let _ = ParsedCsr::parse(&mutate(csr, position, value, cut)).map(|c| c.check_signature());
    }
}

thread_local! {
    static SAMPLES: (Vec<u8>, Vec<u8>, Vec<u8>) = sample_inputs();
}

/// Keys petrel writes are readable by the system's OpenSSL command line (3.0 on Debian
/// cannot read ring's PKCS#8 v2 Ed25519 form), so operators can use them with `openssl ca`.
#[test]
fn written_keys_are_readable_by_the_openssl_command_line() {
    let dir = tempfile::tempdir().unwrap();
    for key_type in [KeyType::Ed25519, KeyType::P256, KeyType::Rsa2048] {
        let key = PrivateKey::generate(key_type).unwrap();
        let path = dir.path().join(format!("{key_type:?}.key"));
        std::fs::write(&path, key.to_pem()).unwrap();
        let out = Command::new("openssl")
            .args(["pkey", "-noout", "-in"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{key_type:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let again = PrivateKey::from_pem(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(again.public_key().same_key(key.public_key()));
    }
}
