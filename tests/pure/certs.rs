//! The fixtures in `certs/example/`, made with the OpenSSL command line by `certs/make.sh`
//! (not by petrel): a root CA, a tenant CA "arc" with a policy, a client certificate
//! "foo.bar" with a console command, and two CRLs made by `openssl ca -gencrl`. petrel
//! verifies the chain, derives the request the spec's worked examples 2 and 3 describe, and
//! validates the CRLs.

use crate::common;

use std::time::SystemTime;

use petrel::chain::decode_request;
use petrel::codec::{Command, ConsoleCmd, SinceCount};
use petrel::pki::{
    CRL_CLOCK_SKEW, Certificate, CertificateFacts, CrlError, CrlNumber, ParsedCrl,
    RevocationReason, crl::validate_crl,
};
use petrel::verify::{TrustAnchors, VerifyError};
use time::OffsetDateTime;

use common::pki::policy;

fn fixture(name: &str) -> String {
    let path = format!("{}/certs/example/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn now() -> i64 {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_secs()).unwrap()
}

fn facts(name: &str) -> CertificateFacts {
    let chain = Certificate::from_pem_chain(&fixture(name)).unwrap();
    CertificateFacts::from_der(chain[0].der()).unwrap()
}

#[test]
fn an_openssl_made_chain_names_arc_foo_bar_with_arcs_policy() {
    let anchors = TrustAnchors::from_pem(fixture("root.pem").as_bytes()).unwrap();
    let chain = Certificate::from_pem_chain(&fixture("chain.pem")).unwrap();
    assert_eq!(chain.len(), 2);
    let verified = anchors.verify(&chain, now()).unwrap();
    let request = decode_request(&verified).unwrap();
    assert_eq!(request.name.text(), "arc:foo.bar");
    assert_eq!(
        request.command,
        Command::Console(ConsoleCmd::Subscribe(SinceCount::Count(20)))
    );
    assert_eq!(request.policies.len(), 1);
    assert_eq!(request.policies[0].path.text(), "arc");
    assert_eq!(request.policies[0].policy, policy(1, &[0], 512, None, &[]));
    let cns: Vec<&str> = request
        .chain
        .iter()
        .map(|link| link.common_name.as_str())
        .collect();
    assert_eq!(cns, ["foo.bar", "arc", "petrel example root"]);
}

#[test]
fn the_albatross_extension_is_not_critical_in_the_fixtures() {
    for name in ["arc.pem", "foo.bar.pem"] {
        let facts = facts(name);
        assert_eq!(facts.albatross.len(), 1, "{name}");
        assert!(!facts.albatross[0].critical, "{name}");
    }
    assert!(facts("root.pem").albatross.is_empty());
}

#[test]
fn the_server_certificate_is_refused_as_a_client_certificate() {
    let anchors = TrustAnchors::from_pem(fixture("root.pem").as_bytes()).unwrap();
    let chain = Certificate::from_pem_chain(&fixture("server.pem")).unwrap();
    let error = anchors.verify(&chain, now()).unwrap_err();
    assert_eq!(
        error,
        VerifyError::Rejected("unsuitable certificate purpose".into())
    );
}

#[test]
fn openssl_ca_crls_validate_and_revoke_what_they_list() {
    let root = facts("root.pem");
    let arc = facts("arc.pem");
    let at = OffsetDateTime::now_utc();

    let crl = ParsedCrl::parse(fixture("root.crl.pem").as_bytes()).unwrap();
    let validated = validate_crl(crl, &root, at, CRL_CLOCK_SKEW).unwrap();
    assert_eq!(validated.number(), &CrlNumber::from_u64(1));
    assert_eq!(validated.revoked().len(), 1);
    assert!(validated.is_revoked(&arc.serial));
    assert_eq!(
        validated.revoked()[0].reason,
        Some(RevocationReason::KeyCompromise)
    );

    let crl = ParsedCrl::parse(fixture("arc.crl.pem").as_bytes()).unwrap();
    let validated = validate_crl(crl, &arc, at, CRL_CLOCK_SKEW).unwrap();
    assert!(validated.revoked().is_empty());
    assert!(!validated.is_revoked(&facts("foo.bar.pem").serial));

    // arc's list presented as the root's: its issuer is not the root.
    let crl = ParsedCrl::parse(fixture("arc.crl.pem").as_bytes()).unwrap();
    let error = validate_crl(crl, &root, at, CRL_CLOCK_SKEW).unwrap_err();
    assert!(
        matches!(error, CrlError::IssuerMismatch { .. }),
        "{error:?}"
    );
}
