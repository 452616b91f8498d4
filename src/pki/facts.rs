//! The typed facts of one DER certificate: what the chain decoder and `petrel inspect`
//! read from it (`spec/names-and-policies.md` §4). Total and bounded: any input gives
//! facts or a [`FactsError`], never a panic.
//!
//! Every occurrence of the albatross extension is reported with its critical flag (the
//! decoder refuses duplicates and critical ones); a duplicate of any other extension is
//! an error here.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]

use std::fmt;

use serde::{Serialize, Serializer};
use x509_parser::asn1_rs::Tag;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension, X509Extension};
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AlgorithmIdentifier, AttributeTypeAndValue, X509Name};

use super::cert::Serial;
use super::keys::{PrivateKey, PublicKey};
use super::{ALBATROSS_OID, PkiError};
use crate::limits::MAX_CHAIN_SIZE;

/// Largest certificate accepted: one certificate cannot be larger than the TLS
/// Certificate message that carries it ([`MAX_CHAIN_SIZE`]); albatross-client embeds
/// whole unikernel images in leaves, so this is large.
pub const MAX_CERTIFICATE_SIZE: usize = MAX_CHAIN_SIZE;

/// Most extensions read from one certificate. albatross's certificates carry at most 6,
/// web PKI certificates rarely more than 12; 64 leaves room while bounding the work.
pub const MAX_EXTENSIONS: usize = 64;

/// Most attributes read from one distinguished name. albatross's names have one; CA
/// names made by other tools rarely more than 8.
pub const MAX_NAME_ATTRIBUTES: usize = 64;

const OID_SUBJECT_KEY_ID: &str = "2.5.29.14";
const OID_KEY_USAGE: &str = "2.5.29.15";
const OID_SUBJECT_ALT_NAME: &str = "2.5.29.17";
const OID_BASIC_CONSTRAINTS: &str = "2.5.29.19";
const OID_AUTHORITY_KEY_ID: &str = "2.5.29.35";
const OID_EXT_KEY_USAGE: &str = "2.5.29.37";

/// Why a certificate's facts could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FactsError {
    /// Larger than [`MAX_CERTIFICATE_SIZE`].
    #[error("certificate too large ({0} octets, at most {max} allowed)", max = MAX_CERTIFICATE_SIZE)]
    TooLarge(usize),
    /// Not a DER certificate.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// Octets after the certificate.
    #[error("trailing data after certificate")]
    TrailingData,
    /// More than [`MAX_EXTENSIONS`] extensions.
    #[error("too many extensions ({0}, at most {max} allowed)", max = MAX_EXTENSIONS)]
    TooManyExtensions(usize),
    /// More than [`MAX_NAME_ATTRIBUTES`] attributes in a name.
    #[error("too many name attributes ({0}, at most {max} allowed)", max = MAX_NAME_ATTRIBUTES)]
    TooManyNameAttributes(usize),
    /// A standard extension (dotted OID) present twice.
    #[error("duplicate extension {0}")]
    DuplicateExtension(String),
    /// A standard extension (dotted OID) whose value does not parse.
    #[error("invalid extension {0}")]
    BadExtension(String),
    /// A commonName whose value is not a character string.
    #[error("common name is not a string")]
    BadCommonName,
    /// The SubjectPublicKeyInfo does not parse.
    #[error("invalid subject public key")]
    InvalidPublicKey,
}

/// A distinguished name: its DER (compared byte for byte) and a readable RFC 4514-like
/// text (`CN=foo,O=Example`; most specific RDN first, non-string values as `#hex`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DistinguishedName {
    der: Vec<u8>,
    text: String,
}

impl DistinguishedName {
    /// The DER Name.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The readable text.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub(crate) fn from_x509(name: &X509Name<'_>) -> Result<Self, FactsError> {
        Ok(Self {
            der: name.as_raw().to_vec(),
            text: name_text(name)?,
        })
    }
}

impl fmt::Display for DistinguishedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for DistinguishedName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

/// The subject's commonName attributes: the decoder must tell "no CN" from one CN.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum CommonName {
    /// No commonName attribute.
    Absent,
    /// Exactly one.
    One(String),
    /// Several (albatross takes none of them as the name).
    Several(Vec<String>),
}

/// The basicConstraints extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct BasicConstraints {
    /// Marked critical.
    pub critical: bool,
    /// `cA`.
    pub ca: bool,
    /// `pathLenConstraint`, if present.
    pub path_len: Option<u32>,
}

/// The keyUsage extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyUsage {
    /// Marked critical.
    pub critical: bool,
    /// Bit `n` set means usage `n` of RFC 5280 §4.2.1.3 (0 = digitalSignature).
    pub bits: u16,
}

/// Names of the keyUsage bits, in bit order.
const KEY_USAGE_NAMES: [&str; 9] = [
    "digitalSignature",
    "contentCommitment",
    "keyEncipherment",
    "dataEncipherment",
    "keyAgreement",
    "keyCertSign",
    "cRLSign",
    "encipherOnly",
    "decipherOnly",
];

impl KeyUsage {
    /// digitalSignature.
    pub const fn digital_signature(&self) -> bool {
        self.bits & 1 != 0
    }

    /// keyCertSign.
    pub const fn key_cert_sign(&self) -> bool {
        self.bits & (1 << 5) != 0
    }

    /// cRLSign.
    pub const fn crl_sign(&self) -> bool {
        self.bits & (1 << 6) != 0
    }

    /// The names of the usages set, in bit order.
    pub fn names(&self) -> Vec<&'static str> {
        KEY_USAGE_NAMES
            .iter()
            .enumerate()
            .filter(|(bit, _)| (self.bits >> bit) & 1 != 0)
            .map(|(_, name)| *name)
            .collect()
    }
}

/// One purpose of an extKeyUsage extension.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyPurpose {
    /// anyExtendedKeyUsage.
    Any,
    /// id-kp-serverAuth.
    ServerAuth,
    /// id-kp-clientAuth.
    ClientAuth,
    /// id-kp-codeSigning.
    CodeSigning,
    /// id-kp-emailProtection.
    EmailProtection,
    /// id-kp-timeStamping.
    TimeStamping,
    /// id-kp-OCSPSigning.
    OcspSigning,
    /// Another purpose (dotted OID).
    Other(String),
}

impl fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Any => "anyExtendedKeyUsage",
            Self::ServerAuth => "serverAuth",
            Self::ClientAuth => "clientAuth",
            Self::CodeSigning => "codeSigning",
            Self::EmailProtection => "emailProtection",
            Self::TimeStamping => "timeStamping",
            Self::OcspSigning => "OCSPSigning",
            Self::Other(oid) => oid,
        })
    }
}

impl Serialize for KeyPurpose {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The extKeyUsage extension.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ExtendedKeyUsage {
    /// Marked critical.
    pub critical: bool,
    /// The purposes.
    pub purposes: Vec<KeyPurpose>,
}

/// One occurrence of the albatross extension.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AlbatrossExtension {
    /// Marked critical (the decoder refuses it).
    pub critical: bool,
    /// The DER value (the OCTET STRING's content).
    pub value: Vec<u8>,
}

/// Any extension, as listed by `petrel inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ExtensionInfo {
    /// Dotted OID.
    pub oid: String,
    /// Well-known name, if any.
    pub name: Option<&'static str>,
    /// Marked critical.
    pub critical: bool,
}

/// A signature algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureAlgorithm {
    /// Ed25519.
    Ed25519,
    /// ECDSA with SHA-256.
    EcdsaSha256,
    /// ECDSA with SHA-384.
    EcdsaSha384,
    /// ECDSA with SHA-512.
    EcdsaSha512,
    /// RSA PKCS#1 v1.5 with SHA-1.
    RsaPkcs1Sha1,
    /// RSA PKCS#1 v1.5 with SHA-256.
    RsaPkcs1Sha256,
    /// RSA PKCS#1 v1.5 with SHA-384.
    RsaPkcs1Sha384,
    /// RSA PKCS#1 v1.5 with SHA-512.
    RsaPkcs1Sha512,
    /// RSASSA-PSS (parameters not shown).
    RsaPss,
    /// Anything else (dotted OID).
    Other(String),
}

impl SignatureAlgorithm {
    pub(crate) fn from_x509(algorithm: &AlgorithmIdentifier<'_>) -> Self {
        let oid = algorithm.algorithm.to_id_string();
        match oid.as_str() {
            "1.3.101.112" => Self::Ed25519,
            "1.2.840.10045.4.3.2" => Self::EcdsaSha256,
            "1.2.840.10045.4.3.3" => Self::EcdsaSha384,
            "1.2.840.10045.4.3.4" => Self::EcdsaSha512,
            "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" => Self::RsaPkcs1Sha1,
            "1.2.840.113549.1.1.11" => Self::RsaPkcs1Sha256,
            "1.2.840.113549.1.1.12" => Self::RsaPkcs1Sha384,
            "1.2.840.113549.1.1.13" => Self::RsaPkcs1Sha512,
            "1.2.840.113549.1.1.10" => Self::RsaPss,
            _ => Self::Other(oid),
        }
    }
}

impl fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ed25519 => "ed25519",
            Self::EcdsaSha256 => "ecdsa-with-SHA256",
            Self::EcdsaSha384 => "ecdsa-with-SHA384",
            Self::EcdsaSha512 => "ecdsa-with-SHA512",
            Self::RsaPkcs1Sha1 => "sha1WithRSAEncryption",
            Self::RsaPkcs1Sha256 => "sha256WithRSAEncryption",
            Self::RsaPkcs1Sha384 => "sha384WithRSAEncryption",
            Self::RsaPkcs1Sha512 => "sha512WithRSAEncryption",
            Self::RsaPss => "rsassaPss",
            Self::Other(oid) => oid,
        })
    }
}

impl Serialize for SignatureAlgorithm {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The facts of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFacts {
    /// The subject.
    pub subject: DistinguishedName,
    /// The issuer.
    pub issuer: DistinguishedName,
    /// The subject's commonName(s).
    pub common_name: CommonName,
    /// The serial number.
    pub serial: Serial,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// The subject public key.
    pub public_key: PublicKey,
    /// The signature algorithm (outer `signatureAlgorithm`).
    pub signature_algorithm: SignatureAlgorithm,
    /// basicConstraints, if present.
    pub basic_constraints: Option<BasicConstraints>,
    /// keyUsage, if present.
    pub key_usage: Option<KeyUsage>,
    /// extKeyUsage, if present.
    pub extended_key_usage: Option<ExtendedKeyUsage>,
    /// Subject key identifier, if present.
    pub subject_key_id: Option<Vec<u8>>,
    /// Key identifier of the authority key identifier, if present.
    pub authority_key_id: Option<Vec<u8>>,
    /// Subject alternative names, as text (`DNS:host`, `IP:addr`, others as described).
    pub alt_names: Vec<String>,
    /// Every albatross extension, in order.
    pub albatross: Vec<AlbatrossExtension>,
    /// Every extension, in order.
    pub extensions: Vec<ExtensionInfo>,
}

impl CertificateFacts {
    /// Reads the facts of the DER certificate `der` (all of it).
    pub fn from_der(der: &[u8]) -> Result<Self, FactsError> {
        if der.len() > MAX_CERTIFICATE_SIZE {
            return Err(FactsError::TooLarge(der.len()));
        }
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| FactsError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(FactsError::TrailingData);
        }
        Self::from_x509(&cert)
    }

    fn from_x509(cert: &X509Certificate<'_>) -> Result<Self, FactsError> {
        let tbs = &cert.tbs_certificate;
        let public_key =
            PublicKey::from_x509(&tbs.subject_pki).ok_or(FactsError::InvalidPublicKey)?;
        let mut facts = Self {
            subject: DistinguishedName::from_x509(&tbs.subject)?,
            issuer: DistinguishedName::from_x509(&tbs.issuer)?,
            common_name: common_name(&tbs.subject)?,
            serial: Serial::from_der_content(tbs.raw_serial()),
            not_before: tbs.validity.not_before.timestamp(),
            not_after: tbs.validity.not_after.timestamp(),
            public_key,
            signature_algorithm: SignatureAlgorithm::from_x509(&cert.signature_algorithm),
            basic_constraints: None,
            key_usage: None,
            extended_key_usage: None,
            subject_key_id: None,
            authority_key_id: None,
            alt_names: Vec::new(),
            albatross: Vec::new(),
            extensions: Vec::new(),
        };
        let extensions = tbs.extensions();
        if extensions.len() > MAX_EXTENSIONS {
            return Err(FactsError::TooManyExtensions(extensions.len()));
        }
        for ext in extensions {
            facts.add_extension(ext)?;
        }
        Ok(facts)
    }

    fn add_extension(&mut self, ext: &X509Extension<'_>) -> Result<(), FactsError> {
        let oid = ext.oid.to_id_string();
        let name = extension_name(&oid);
        if oid == ALBATROSS_OID {
            self.albatross.push(AlbatrossExtension {
                critical: ext.critical,
                value: ext.value.to_vec(),
            });
        } else if self.extensions.iter().any(|e| e.oid == oid) {
            return Err(FactsError::DuplicateExtension(oid));
        }
        let bad = || FactsError::BadExtension(oid.clone());
        match oid.as_str() {
            OID_BASIC_CONSTRAINTS => match ext.parsed_extension() {
                ParsedExtension::BasicConstraints(bc) => {
                    self.basic_constraints = Some(BasicConstraints {
                        critical: ext.critical,
                        ca: bc.ca,
                        path_len: bc.path_len_constraint,
                    });
                }
                _ => return Err(bad()),
            },
            OID_KEY_USAGE => match ext.parsed_extension() {
                ParsedExtension::KeyUsage(ku) => {
                    self.key_usage = Some(KeyUsage {
                        critical: ext.critical,
                        bits: ku.flags,
                    });
                }
                _ => return Err(bad()),
            },
            OID_EXT_KEY_USAGE => match ext.parsed_extension() {
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    let mut purposes = Vec::new();
                    for (set, purpose) in [
                        (eku.any, KeyPurpose::Any),
                        (eku.server_auth, KeyPurpose::ServerAuth),
                        (eku.client_auth, KeyPurpose::ClientAuth),
                        (eku.code_signing, KeyPurpose::CodeSigning),
                        (eku.email_protection, KeyPurpose::EmailProtection),
                        (eku.time_stamping, KeyPurpose::TimeStamping),
                        (eku.ocsp_signing, KeyPurpose::OcspSigning),
                    ] {
                        if set {
                            purposes.push(purpose);
                        }
                    }
                    purposes.extend(
                        eku.other
                            .iter()
                            .map(|o| KeyPurpose::Other(o.to_id_string())),
                    );
                    self.extended_key_usage = Some(ExtendedKeyUsage {
                        critical: ext.critical,
                        purposes,
                    });
                }
                _ => return Err(bad()),
            },
            OID_SUBJECT_KEY_ID => match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => {
                    self.subject_key_id = Some(id.0.to_vec());
                }
                _ => return Err(bad()),
            },
            OID_AUTHORITY_KEY_ID => match ext.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    self.authority_key_id = aki.key_identifier.as_ref().map(|id| id.0.to_vec());
                }
                _ => return Err(bad()),
            },
            OID_SUBJECT_ALT_NAME => match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    self.alt_names = san.general_names.iter().map(general_name_text).collect();
                }
                _ => return Err(bad()),
            },
            _ => {}
        }
        self.extensions.push(ExtensionInfo {
            oid,
            name,
            critical: ext.critical,
        });
        Ok(())
    }

    /// Whether issuer and subject are the same name (byte for byte).
    pub fn is_self_issued(&self) -> bool {
        self.subject.der == self.issuer.der
    }

    /// SHA-256 of the subject public key info (the key under which petrel stores the
    /// CRL of a CA).
    pub fn spki_sha256(&self) -> [u8; 32] {
        self.public_key.spki_sha256()
    }

    /// Whether `now` (Unix seconds) lies within notBefore..=notAfter.
    pub fn is_valid_at(&self, now: i64) -> bool {
        (self.not_before..=self.not_after).contains(&now)
    }
}

/// Checks that `key` is the private key of the DER certificate `certificate`: fails with
/// [`PkiError::KeyMismatch`] ("Public key of certificate doesn't match private key").
pub fn check_key_matches(key: &PrivateKey, certificate: &[u8]) -> Result<(), PkiError> {
    let facts = CertificateFacts::from_der(certificate)?;
    if facts.public_key.same_key(key.public_key()) {
        Ok(())
    } else {
        Err(PkiError::KeyMismatch)
    }
}

fn extension_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        OID_SUBJECT_KEY_ID => "subjectKeyIdentifier",
        OID_KEY_USAGE => "keyUsage",
        OID_SUBJECT_ALT_NAME => "subjectAltName",
        OID_BASIC_CONSTRAINTS => "basicConstraints",
        OID_AUTHORITY_KEY_ID => "authorityKeyIdentifier",
        OID_EXT_KEY_USAGE => "extKeyUsage",
        "2.5.29.18" => "issuerAltName",
        "2.5.29.30" => "nameConstraints",
        "2.5.29.31" => "cRLDistributionPoints",
        "2.5.29.32" => "certificatePolicies",
        "1.3.6.1.5.5.7.1.1" => "authorityInfoAccess",
        "2.5.29.20" => "cRLNumber",
        "2.5.29.21" => "reasonCode",
        "2.5.29.24" => "invalidityDate",
        "2.5.29.28" => "issuingDistributionPoint",
        ALBATROSS_OID => "albatross",
        _ => return None,
    })
}

/// Public for the sibling parsers: the list form of [`ExtensionInfo`].
pub(crate) fn extension_info(ext: &X509Extension<'_>) -> ExtensionInfo {
    let oid = ext.oid.to_id_string();
    ExtensionInfo {
        name: extension_name(&oid),
        oid,
        critical: ext.critical,
    }
}

fn general_name_text(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(dns) => format!("DNS:{dns}"),
        GeneralName::IPAddress(octets) => match *octets {
            [a, b, c, d] => format!("IP:{}", std::net::Ipv4Addr::new(*a, *b, *c, *d)),
            _ => match <[u8; 16]>::try_from(*octets) {
                Ok(v6) => format!("IP:{}", std::net::Ipv6Addr::from(v6)),
                Err(_) => format!("IP:#{}", hex::encode(octets)),
            },
        },
        other => other.to_string(),
    }
}

/// The commonName attributes of `name`.
pub(crate) fn common_name(name: &X509Name<'_>) -> Result<CommonName, FactsError> {
    let mut names = Vec::new();
    for attribute in name.iter_common_name().take(MAX_NAME_ATTRIBUTES) {
        names.push(attribute_string(attribute).ok_or(FactsError::BadCommonName)?);
    }
    let mut names = names.into_iter();
    Ok(match (names.next(), names.next()) {
        (None, _) => CommonName::Absent,
        (Some(one), None) => CommonName::One(one),
        (Some(first), Some(second)) => {
            let mut all = vec![first, second];
            all.extend(names);
            CommonName::Several(all)
        }
    })
}

/// The value of a string-typed attribute (UTF8String, PrintableString, IA5String,
/// NumericString, VisibleString, TeletexString read as Latin-1, BMPString,
/// UniversalString); `None` for other types or invalid encodings.
pub(crate) fn attribute_string(attribute: &AttributeTypeAndValue<'_>) -> Option<String> {
    let value = attribute.attr_value();
    let data = value.data;
    match value.header.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(data).ok().map(str::to_owned),
        Tag::TeletexString => Some(data.iter().copied().map(char::from).collect()),
        Tag::BmpString => {
            let units = data.chunks_exact(2);
            if !units.remainder().is_empty() {
                return None;
            }
            let units: Vec<u16> = units
                .map(|u| <[u8; 2]>::try_from(u).ok().map(u16::from_be_bytes))
                .collect::<Option<_>>()?;
            String::from_utf16(&units).ok()
        }
        Tag::UniversalString => {
            let units = data.chunks_exact(4);
            if !units.remainder().is_empty() {
                return None;
            }
            units
                .map(|u| char::from_u32(u32::from_be_bytes(<[u8; 4]>::try_from(u).ok()?)))
                .collect()
        }
        _ => None,
    }
}

/// RFC 4514-like text of a name: RDNs most specific first, joined with `,`; attributes
/// of one RDN joined with `+`; special characters escaped with `\`.
fn name_text(name: &X509Name<'_>) -> Result<String, FactsError> {
    let count = name.iter_attributes().count();
    if count > MAX_NAME_ATTRIBUTES {
        return Err(FactsError::TooManyNameAttributes(count));
    }
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| rdn.iter().map(attribute_text).collect::<Vec<_>>().join("+"))
        .collect();
    Ok(rdns.into_iter().rev().collect::<Vec<_>>().join(","))
}

fn attribute_text(attribute: &AttributeTypeAndValue<'_>) -> String {
    let oid = attribute.attr_type().to_id_string();
    let key = match oid.as_str() {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => oid.as_str(),
    };
    let value = match attribute_string(attribute) {
        Some(s) => escape_value(&s),
        None => format!("#{}", hex::encode(attribute.as_slice())),
    };
    format!("{key}={value}")
}

fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_rfc4514() {
        assert_eq!(escape_value("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_value("#x "), "\\#x\\ ");
        assert_eq!(escape_value(" x#"), "\\ x#");
        assert_eq!(escape_value("a\nb"), "a\\0ab");
        assert_eq!(escape_value("plain.name"), "plain.name");
    }

    #[test]
    fn key_usage_names() {
        let ku = KeyUsage {
            critical: true,
            bits: 0b110_0011,
        };
        assert_eq!(
            ku.names(),
            vec![
                "digitalSignature",
                "contentCommitment",
                "keyCertSign",
                "cRLSign"
            ]
        );
        assert!(ku.key_cert_sign() && ku.crl_sign() && ku.digital_signature());
    }

    #[test]
    fn refuses_garbage() {
        assert!(matches!(
            CertificateFacts::from_der(&[]),
            Err(FactsError::Malformed(_))
        ));
        assert_eq!(
            CertificateFacts::from_der(&vec![0x30; MAX_CERTIFICATE_SIZE + 1]),
            Err(FactsError::TooLarge(MAX_CERTIFICATE_SIZE + 1))
        );
    }
}
