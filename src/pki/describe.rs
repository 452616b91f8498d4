//! Serializable descriptions of certificates, CSRs and CRLs for `petrel inspect`.
//!
//! Times are RFC 3339 text, octet strings lower-case hex. The albatross extension is shown
//! as its critical flag and value in hex; the decoded command is added by `inspect`,
//! which owns the codec.

use serde::Serialize;

use super::crl::{ParsedCrl, RevokedEntry};
use super::csr::ParsedCsr;
use super::facts::{
    AlbatrossExtension, BasicConstraints, CertificateFacts, CommonName, ExtendedKeyUsage,
    ExtensionInfo, KeyUsage,
};
use super::rfc3339;

/// A certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateDescription {
    /// Always `"certificate"`.
    pub kind: &'static str,
    /// Subject, RFC 4514-like.
    pub subject: String,
    /// Subject commonName(s): `null`, a string, or a list.
    pub common_name: Option<CommonName>,
    /// Issuer, RFC 4514-like.
    pub issuer: String,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// Validity period.
    pub validity: ValidityDescription,
    /// Subject key type (`ed25519`, `p256`, `rsa2048`, …).
    pub key_type: String,
    /// SHA-256 of the subject public key info, hex.
    pub spki_sha256: String,
    /// Signature algorithm.
    pub signature_algorithm: String,
    /// basicConstraints.
    pub basic_constraints: Option<BasicConstraints>,
    /// keyUsage.
    pub key_usage: Option<KeyUsageDescription>,
    /// extKeyUsage.
    pub extended_key_usage: Option<ExtendedKeyUsage>,
    /// Subject key identifier, hex.
    pub subject_key_id: Option<String>,
    /// Authority key identifier's key id, hex.
    pub authority_key_id: Option<String>,
    /// Subject alternative names.
    pub alt_names: Vec<String>,
    /// Every extension with its critical flag.
    pub extensions: Vec<ExtensionInfo>,
    /// Every albatross extension.
    pub albatross: Vec<AlbatrossDescription>,
}

/// notBefore and notAfter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidityDescription {
    /// notBefore, RFC 3339.
    pub not_before: String,
    /// notAfter, RFC 3339.
    pub not_after: String,
}

/// keyUsage with the names of its bits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyUsageDescription {
    /// Marked critical.
    pub critical: bool,
    /// The usages, RFC 5280 names.
    pub usages: Vec<&'static str>,
}

/// One albatross extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlbatrossDescription {
    /// Marked critical.
    pub critical: bool,
    /// The DER value, hex.
    pub value_hex: String,
}

/// A PKCS#10 request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CsrDescription {
    /// Always `"csr"`.
    pub kind: &'static str,
    /// Subject, RFC 4514-like.
    pub subject: String,
    /// Subject commonName(s).
    pub common_name: Option<CommonName>,
    /// Key type.
    pub key_type: String,
    /// SHA-256 of the subject public key info, hex.
    pub spki_sha256: String,
    /// Signature algorithm.
    pub signature_algorithm: String,
    /// Whether the self-signature verifies.
    pub signature_valid: bool,
    /// The albatross extension of the extensionRequest.
    pub albatross: Option<AlbatrossDescription>,
}

/// A CRL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrlDescription {
    /// Always `"crl"`.
    pub kind: &'static str,
    /// Issuer, RFC 4514-like.
    pub issuer: String,
    /// CRL number, decimal.
    pub number: Option<String>,
    /// thisUpdate, RFC 3339.
    pub this_update: String,
    /// nextUpdate, RFC 3339.
    pub next_update: Option<String>,
    /// Signature algorithm.
    pub signature_algorithm: String,
    /// Authority key identifier's key id, hex.
    pub authority_key_id: Option<String>,
    /// Every CRL extension with its critical flag.
    pub extensions: Vec<ExtensionInfo>,
    /// The revoked certificates.
    pub revoked: Vec<RevokedDescription>,
}

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevokedDescription {
    /// Serial, lower-case hex.
    pub serial: String,
    /// Revocation time, RFC 3339.
    pub revoked_at: String,
    /// Reason, RFC 5280 name.
    pub reason: Option<&'static str>,
    /// Invalidity date, RFC 3339.
    pub invalidity_date: Option<String>,
}

/// Describes a certificate.
pub fn describe_certificate(facts: &CertificateFacts) -> CertificateDescription {
    CertificateDescription {
        kind: "certificate",
        subject: facts.subject.text().to_owned(),
        common_name: common_name(&facts.common_name),
        issuer: facts.issuer.text().to_owned(),
        serial: facts.serial.hex(),
        validity: ValidityDescription {
            not_before: rfc3339(facts.not_before),
            not_after: rfc3339(facts.not_after),
        },
        key_type: facts.public_key.algorithm().to_string(),
        spki_sha256: hex::encode(facts.spki_sha256()),
        signature_algorithm: facts.signature_algorithm.to_string(),
        basic_constraints: facts.basic_constraints,
        key_usage: facts.key_usage.as_ref().map(key_usage),
        extended_key_usage: facts.extended_key_usage.clone(),
        subject_key_id: facts.subject_key_id.as_ref().map(hex::encode),
        authority_key_id: facts.authority_key_id.as_ref().map(hex::encode),
        alt_names: facts.alt_names.clone(),
        extensions: facts.extensions.clone(),
        albatross: facts.albatross.iter().map(albatross).collect(),
    }
}

/// Describes a request (its signature is checked).
pub fn describe_csr(csr: &ParsedCsr) -> CsrDescription {
    CsrDescription {
        kind: "csr",
        subject: csr.subject().text().to_owned(),
        common_name: common_name(csr.common_name()),
        key_type: csr.public_key().algorithm().to_string(),
        spki_sha256: hex::encode(csr.public_key().spki_sha256()),
        signature_algorithm: csr.signature_algorithm().to_string(),
        signature_valid: csr.check_signature().is_ok(),
        albatross: csr.albatross().map(albatross),
    }
}

/// Describes a CRL (not validated: that needs the issuer's certificate).
pub fn describe_crl(crl: &ParsedCrl) -> CrlDescription {
    CrlDescription {
        kind: "crl",
        issuer: crl.issuer().text().to_owned(),
        number: crl.number().map(ToString::to_string),
        this_update: rfc3339(crl.this_update()),
        next_update: crl.next_update().map(rfc3339),
        signature_algorithm: crl.signature_algorithm().to_string(),
        authority_key_id: crl.authority_key_id().map(hex::encode),
        extensions: crl.extensions().to_vec(),
        revoked: crl.revoked().iter().map(revoked).collect(),
    }
}

fn common_name(cn: &CommonName) -> Option<CommonName> {
    match cn {
        CommonName::Absent => None,
        other => Some(other.clone()),
    }
}

fn key_usage(ku: &KeyUsage) -> KeyUsageDescription {
    KeyUsageDescription {
        critical: ku.critical,
        usages: ku.names(),
    }
}

fn albatross(ext: &AlbatrossExtension) -> AlbatrossDescription {
    AlbatrossDescription {
        critical: ext.critical,
        value_hex: hex::encode(&ext.value),
    }
}

fn revoked(entry: &RevokedEntry) -> RevokedDescription {
    RevokedDescription {
        serial: entry.serial.hex(),
        revoked_at: rfc3339(entry.revoked_at),
        reason: entry.reason.map(|r| r.name()),
        invalidity_date: entry.invalidity_date.map(rfc3339),
    }
}
