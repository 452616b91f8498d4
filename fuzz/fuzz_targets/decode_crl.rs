#![no_main]

//! CRL parsing, then validation against a fixed CA (certs/example/root.pem, made by
//! OpenSSL): issuer comparison, cRLSign, signature verification, CRL number and times.
//! Inputs mutated from the root's own CRL reach the signature check.

use std::sync::OnceLock;

use petrel::pki::{CRL_CLOCK_SKEW, Certificate, CertificateFacts, ParsedCrl, crl::validate_crl};

fn root() -> Option<&'static CertificateFacts> {
    static ROOT: OnceLock<Option<CertificateFacts>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let pem = include_str!("../../certs/example/root.pem");
        let chain = Certificate::from_pem_chain(pem).ok()?;
        CertificateFacts::from_der(chain.first()?.der()).ok()
    })
    .as_ref()
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(crl) = ParsedCrl::parse(data) else {
        return;
    };
    if let Some(root) = root() {
        let _ = validate_crl(crl, root, time::OffsetDateTime::now_utc(), CRL_CLOCK_SKEW);
    }
});
