//! The certificate profiles of albatross-client (`spec/tls-endpoint.md` §4), serial
//! numbers, issuing CAs, and the database and chain files of `generate` and `sign`.
//!
//! | profile | basicConstraints (c) | keyUsage (c) | extKeyUsage (c) | SKI/AKI | validity |
//! |---|---|---|---|---|---|
//! | root CA | cA | digitalSignature, contentCommitment, keyCertSign, cRLSign | – | none | 3650 d |
//! | server | not cA | digitalSignature, keyEncipherment | serverAuth | yes | 365 d |
//! | intermediate CA | cA | as root CA | – | yes | 365 d |
//! | leaf (`sign`) | not cA | digitalSignature, keyEncipherment | clientAuth | yes | 1 d |
//! | leaf (`--destination`) | not cA | digitalSignature, keyEncipherment | clientAuth | yes | 300 s |
//!
//! The albatross extension, when given, is non-critical. keyUsage is written in minimal
//! DER (`03 02 01 C6` and `03 02 05 A0`), where albatross writes the same bits with two
//! content octets; readers accept either.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::RngCore;
use serde::{Serialize, Serializer};
use time::OffsetDateTime;

use super::der;
use super::facts::CertificateFacts;
use super::keys::{PrivateKey, PublicKey};
use super::{NOT_BEFORE_BACKDATE, PkiError, sign_edited};
use crate::name::MAX_FILE_NAME_LEN;

/// PEM label of a certificate.
pub const CERTIFICATE_PEM: &str = "CERTIFICATE";

/// Random octets in a serial number (albatross-client: 10).
pub const SERIAL_RANDOM_OCTETS: usize = 10;

/// Default validity of a root CA (`generate --days`): 3650 days.
pub const ROOT_CA_VALIDITY: Duration = Duration::from_secs(3650 * 86_400);
/// Default validity of a server certificate (`--server-days`): 365 days.
pub const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 86_400);
/// Default validity of an intermediate CA (`sign --days` of a policy CSR): 365 days.
pub const INTERMEDIATE_CA_VALIDITY: Duration = Duration::from_secs(365 * 86_400);
/// Default validity of a leaf made by `sign`: 1 day.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(86_400);
/// Validity of a leaf made on the fly for `--destination`: 300 s.
pub const DESTINATION_LEAF_VALIDITY: Duration = Duration::from_secs(300);

const OID_SUBJECT_KEY_ID: &[u64] = &[2, 5, 29, 14];
const OID_KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const OID_BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const OID_AUTHORITY_KEY_ID: &[u64] = &[2, 5, 29, 35];
const OID_EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];

/// basicConstraints `cA TRUE`, no pathLen.
const BASIC_CONSTRAINTS_CA: &[u8] = &[0x30, 0x03, 0x01, 0x01, 0xff];
/// basicConstraints `cA FALSE` (the DEFAULT, so an empty SEQUENCE).
const BASIC_CONSTRAINTS_END_ENTITY: &[u8] = &[0x30, 0x00];
/// keyUsage digitalSignature, contentCommitment, keyCertSign, cRLSign.
const KEY_USAGE_CA: &[u8] = &[0x03, 0x02, 0x01, 0xc6];
/// keyUsage digitalSignature, keyEncipherment.
const KEY_USAGE_END_ENTITY: &[u8] = &[0x03, 0x02, 0x05, 0xa0];
/// extKeyUsage serverAuth.
const EXT_KEY_USAGE_SERVER: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01,
];
/// extKeyUsage clientAuth.
const EXT_KEY_USAGE_CLIENT: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02,
];

/// Positions of the fields petrel puts in itself in a TBSCertificate (after the explicit
/// version): issuer, subject, subjectPublicKeyInfo.
const TBS_ISSUER: usize = 3;
const TBS_SUBJECT: usize = 5;
const TBS_SPKI: usize = 6;

/// The empty Name (an empty RDNSequence).
const EMPTY_NAME: &[u8] = &[0x30, 0x00];

/// A certificate profile of `spec/tls-endpoint.md` §4: fixes the extensions and the
/// default validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Self-signed root CA made by `generate`.
    RootCa,
    /// Server certificate (`generate`, or `sign` of a CSR without albatross extension).
    Server,
    /// Intermediate CA carrying a policy (`sign` of a policy CSR).
    IntermediateCa,
    /// Leaf carrying a command (`sign` of a command CSR).
    Leaf,
    /// Leaf made on the fly for `--destination`.
    DestinationLeaf,
}

/// What the albatross extension of a CSR asks for, as far as the profile is concerned;
/// the caller decodes the command and says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestedCommand {
    /// `policy add`: the CSR becomes an intermediate CA.
    Policy,
    /// Any other command: the CSR becomes a leaf.
    Other,
}

impl Profile {
    /// The profile `sign` uses for a CSR whose albatross extension carries `command`
    /// (`None`: no extension, a server certificate).
    pub const fn for_csr(command: Option<RequestedCommand>) -> Self {
        match command {
            Some(RequestedCommand::Policy) => Self::IntermediateCa,
            Some(RequestedCommand::Other) => Self::Leaf,
            None => Self::Server,
        }
    }

    /// The profile's default validity.
    pub const fn default_validity(self) -> Duration {
        match self {
            Self::RootCa => ROOT_CA_VALIDITY,
            Self::Server => SERVER_VALIDITY,
            Self::IntermediateCa => INTERMEDIATE_CA_VALIDITY,
            Self::Leaf => LEAF_VALIDITY,
            Self::DestinationLeaf => DESTINATION_LEAF_VALIDITY,
        }
    }

    /// Whether certificates of this profile are CAs.
    pub const fn is_ca(self) -> bool {
        matches!(self, Self::RootCa | Self::IntermediateCa)
    }

    const fn key_usage(self) -> &'static [u8] {
        if self.is_ca() {
            KEY_USAGE_CA
        } else {
            KEY_USAGE_END_ENTITY
        }
    }

    const fn basic_constraints(self) -> &'static [u8] {
        if self.is_ca() {
            BASIC_CONSTRAINTS_CA
        } else {
            BASIC_CONSTRAINTS_END_ENTITY
        }
    }

    const fn ext_key_usage(self) -> Option<&'static [u8]> {
        match self {
            Self::RootCa | Self::IntermediateCa => None,
            Self::Server => Some(EXT_KEY_USAGE_SERVER),
            Self::Leaf | Self::DestinationLeaf => Some(EXT_KEY_USAGE_CLIENT),
        }
    }

    /// The self-signed root carries neither SKI nor AKI (as albatross's).
    const fn has_key_ids(self) -> bool {
        !matches!(self, Self::RootCa)
    }
}

/// A certificate serial number: the content octets of a positive DER INTEGER.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// The serial albatross-client makes from 10 random octets: a `00` octet is prepended
    /// if the first is ≥ 0x80, a `7F` octet if the first is `00` and the second ≤ 0x7F,
    /// so that the INTEGER is positive and minimal, of 10 or 11 octets.
    pub fn from_random_octets(octets: [u8; SERIAL_RANDOM_OCTETS]) -> Self {
        let mut serial = Vec::with_capacity(SERIAL_RANDOM_OCTETS + 1);
        match octets {
            [first, ..] if first >= 0x80 => serial.push(0x00),
            [0x00, second, ..] if second <= 0x7f => serial.push(0x7f),
            _ => {}
        }
        serial.extend_from_slice(&octets);
        Self(serial)
    }

    /// A fresh serial from `rng` (see [`Serial::from_random_octets`]).
    pub fn random<R: RngCore + ?Sized>(rng: &mut R) -> Self {
        let mut octets = [0u8; SERIAL_RANDOM_OCTETS];
        rng.fill_bytes(&mut octets);
        Self::from_random_octets(octets)
    }

    /// A serial from the content octets of a DER INTEGER, as found in a certificate or
    /// CRL (kept exactly, including a leading `00`).
    pub fn from_der_content(content: &[u8]) -> Self {
        Self(content.to_vec())
    }

    /// The INTEGER's content octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lower-case hex of the serial's value, without leading zero octets (at least two
    /// digits): the form of the database file and of petrel's messages.
    pub fn hex(&self) -> String {
        let start = self
            .0
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(self.0.len().saturating_sub(1));
        hex::encode(self.0.get(start..).unwrap_or_default())
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl Serialize for Serial {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.hex())
    }
}

/// Whether an extension is marked critical. The albatross extension must not be (a
/// verifier rejects a certificate with an unknown critical extension); `Critical` exists
/// to show exactly that in tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Criticality {
    /// Not critical (the only correct choice for the albatross extension).
    #[default]
    NonCritical,
    /// Critical.
    Critical,
}

/// The subject of a new certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// A single RDN with one commonName (UTF8String), as albatross-client writes.
    CommonName(&'a str),
    /// A DER Name taken as is (a CSR's subject), byte for byte; it must be one DER
    /// SEQUENCE.
    Der(&'a [u8]),
}

/// A subject alternative name of a server certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AltName {
    /// A DNS name (`*.` wildcard allowed as the first label).
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

/// Longest DNS name accepted as an alternative name (RFC 1035: 253 octets of text).
pub const MAX_DNS_NAME_LEN: usize = 253;

impl AltName {
    /// An IP address if `s` is one, otherwise a DNS name of letters, digits, `-` and `.`
    /// (optionally starting with `*.`).
    pub fn parse(s: &str) -> Result<Self, PkiError> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        let host = s.strip_prefix("*.").unwrap_or(s);
        let valid = !host.is_empty()
            && s.len() <= MAX_DNS_NAME_LEN
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if valid {
            Ok(Self::Dns(s.to_owned()))
        } else {
            Err(PkiError::InvalidAltName(s.to_owned()))
        }
    }

    fn to_rcgen(&self) -> Result<rcgen::SanType, PkiError> {
        match self {
            Self::Ip(ip) => Ok(rcgen::SanType::IpAddress(*ip)),
            Self::Dns(name) => rcgen::string::Ia5String::try_from(name.as_str())
                .map(rcgen::SanType::DnsName)
                .map_err(|_| PkiError::InvalidAltName(name.clone())),
        }
    }
}

/// The validity period of a new certificate: `now − 10 s` to `now + duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// The time of issuance.
    pub now: OffsetDateTime,
    /// How long after `now` the certificate stays valid.
    pub duration: Duration,
}

impl Validity {
    /// The profile's default validity from `now`.
    pub const fn for_profile(now: OffsetDateTime, profile: Profile) -> Self {
        Self {
            now,
            duration: profile.default_validity(),
        }
    }

    /// notBefore: `now − 10 s`.
    pub fn not_before(&self) -> Result<OffsetDateTime, PkiError> {
        offset(self.now, NOT_BEFORE_BACKDATE, false)
    }

    /// notAfter: `now + duration`.
    pub fn not_after(&self) -> Result<OffsetDateTime, PkiError> {
        offset(self.now, self.duration, true)
    }
}

/// `base ± delta`, refusing times that X.509 cannot carry (years outside 1–9999).
pub(crate) fn offset(
    base: OffsetDateTime,
    delta: Duration,
    forward: bool,
) -> Result<OffsetDateTime, PkiError> {
    let delta = time::Duration::try_from(delta).map_err(|_| PkiError::ValidityOutOfRange)?;
    let moved = if forward {
        base.checked_add(delta)
    } else {
        base.checked_sub(delta)
    };
    moved
        .filter(|t| (1..=9999).contains(&t.year()))
        .ok_or(PkiError::ValidityOutOfRange)
}

/// Everything a new certificate is made of, apart from its issuer.
#[derive(Debug, Clone)]
pub struct CertificateTemplate<'a> {
    /// The profile (extensions, CA or not).
    pub profile: Profile,
    /// The subject name.
    pub subject: Subject<'a>,
    /// The subject's public key.
    pub public_key: &'a PublicKey,
    /// The DER value of the albatross extension, if the certificate carries one.
    pub albatross: Option<&'a [u8]>,
    /// Criticality of the albatross extension (non-critical unless testing refusal).
    pub albatross_criticality: Criticality,
    /// Subject alternative names (server certificates: the names clients connect to).
    pub alt_names: &'a [AltName],
    /// The validity period.
    pub validity: Validity,
    /// The serial number.
    pub serial: Serial,
}

/// A DER certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Certificate(Vec<u8>);

impl Certificate {
    /// Wraps DER octets (not checked; see [`Certificate::facts`]).
    pub fn from_der(der: Vec<u8>) -> Self {
        Self(der)
    }

    /// All certificates of a PEM file, in order (`CERTIFICATE` blocks; other blocks are
    /// skipped). At least one is required.
    pub fn from_pem_chain(text: &str) -> Result<Vec<Self>, PkiError> {
        let blocks = pem::parse_many(text).map_err(|e| PkiError::InvalidPem(e.to_string()))?;
        let chain: Vec<Self> = blocks
            .into_iter()
            .filter(|b| b.tag() == CERTIFICATE_PEM)
            .map(|b| Self(b.into_contents()))
            .collect();
        if chain.is_empty() {
            return Err(PkiError::NoPem(CERTIFICATE_PEM));
        }
        Ok(chain)
    }

    /// The DER octets.
    pub fn der(&self) -> &[u8] {
        &self.0
    }

    /// The certificate as PEM.
    pub fn pem(&self) -> String {
        pem_block(CERTIFICATE_PEM, &self.0)
    }

    /// The typed facts of this certificate.
    pub fn facts(&self) -> Result<CertificateFacts, super::FactsError> {
        CertificateFacts::from_der(&self.0)
    }
}

/// PEM encoding with `\n` line endings.
pub(crate) fn pem_block(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// An issuing CA: its certificate (followed by the rest of its chain, if any) and its
/// private key, which is checked to belong to the certificate.
#[derive(Debug)]
pub struct CaIssuer {
    certificate: Certificate,
    chain: Vec<Certificate>,
    facts: CertificateFacts,
    key: PrivateKey,
    authority_key_id: Vec<u8>,
}

impl CaIssuer {
    /// An issuer from its chain (the issuing CA's certificate first, as in `--ca`) and
    /// its key. Fails with [`PkiError::KeyMismatch`] ("Public key of certificate doesn't
    /// match private key") if the key is not the certificate's.
    pub fn new(chain: Vec<Certificate>, key: PrivateKey) -> Result<Self, PkiError> {
        let first = chain.first().ok_or(PkiError::NoPem(CERTIFICATE_PEM))?;
        let facts = first.facts()?;
        if !facts.public_key.same_key(key.public_key()) {
            return Err(PkiError::KeyMismatch);
        }
        // AKI of what we issue: the CA's own SKI if it has one (a CA made by another tool
        // may use another key-id method), otherwise SHA-1 of its key (RFC 5280 method 1).
        let authority_key_id = facts
            .subject_key_id
            .clone()
            .unwrap_or_else(|| key.public_key().key_id().to_vec());
        Ok(Self {
            certificate: first.clone(),
            chain,
            facts,
            key,
            authority_key_id,
        })
    }

    /// An issuer from a PEM file's text (`--ca`, `CACERT`) and its key.
    pub fn from_pem(chain_pem: &str, key: PrivateKey) -> Result<Self, PkiError> {
        Self::new(Certificate::from_pem_chain(chain_pem)?, key)
    }

    /// The issuing CA's certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// The issuing CA's certificate followed by the rest of its chain.
    pub fn chain(&self) -> &[Certificate] {
        &self.chain
    }

    /// The facts of the issuing CA's certificate.
    pub fn facts(&self) -> &CertificateFacts {
        &self.facts
    }

    /// The issuing CA's private key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// The key identifier put in the AKI of certificates and CRLs this CA signs.
    pub fn authority_key_id(&self) -> &[u8] {
        &self.authority_key_id
    }

    /// Whether the CA's certificate is self-signed (its issuer equals its subject).
    pub fn is_self_signed(&self) -> bool {
        self.facts.subject.der() == self.facts.issuer.der()
    }

    /// The chain file a client presents (spec §4.3 step 6): `certificate`, then this CA's
    /// certificate(s) unless the CA is self-signed.
    pub fn chain_pem(&self, certificate: &Certificate) -> String {
        let mut out = certificate.pem();
        if !self.is_self_signed() {
            for ca in &self.chain {
                out.push_str(&ca.pem());
            }
        }
        out
    }
}

/// Issues a certificate from `template`, signed by `issuer`. Its issuer name is exactly
/// the CA's subject; its AKI is [`CaIssuer::authority_key_id`]. (With
/// [`Profile::RootCa`] this makes a CA certificate without key identifiers; the
/// self-signed root of `generate` is made by [`root_ca`].)
pub fn issue(
    template: &CertificateTemplate<'_>,
    issuer: &CaIssuer,
) -> Result<Certificate, PkiError> {
    build(
        template,
        issuer.facts.subject.der(),
        Some(issuer.authority_key_id()),
        issuer.key(),
    )
}

/// Makes the self-signed root CA of `generate`: subject and issuer CN `common_name`,
/// profile [`Profile::RootCa`].
pub fn root_ca(
    common_name: &str,
    key: &PrivateKey,
    validity: Validity,
    serial: Serial,
) -> Result<Certificate, PkiError> {
    let subject = common_name_der(common_name)?;
    let template = CertificateTemplate {
        profile: Profile::RootCa,
        subject: Subject::Der(&subject),
        public_key: key.public_key(),
        albatross: None,
        albatross_criticality: Criticality::NonCritical,
        alt_names: &[],
        validity,
        serial,
    };
    build(&template, &subject, None, key)
}

/// The DER Name albatross-client writes: one RDN with one commonName (UTF8String).
pub fn common_name_der(common_name: &str) -> Result<Vec<u8>, PkiError> {
    if common_name.is_empty() {
        return Err(PkiError::InvalidCommonName(common_name.to_owned()));
    }
    const OID_COMMON_NAME: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
    const TAG_UTF8_STRING: u8 = 0x0c;
    const TAG_SET: u8 = 0x31;
    let mut attribute = OID_COMMON_NAME.to_vec();
    attribute.extend(der::write(TAG_UTF8_STRING, common_name.as_bytes()));
    let rdn = der::write(TAG_SET, &der::write(der::TAG_SEQUENCE, &attribute));
    Ok(der::write(der::TAG_SEQUENCE, &rdn))
}

fn build(
    template: &CertificateTemplate<'_>,
    issuer_name: &[u8],
    authority_key_id: Option<&[u8]>,
    signer: &PrivateKey,
) -> Result<Certificate, PkiError> {
    let profile = template.profile;
    let mut params = rcgen::CertificateParams::default();
    params.not_before = template.validity.not_before()?;
    params.not_after = template.validity.not_after()?;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(template.serial.as_bytes()));
    let subject = match template.subject {
        Subject::CommonName(cn) => common_name_der(cn)?,
        Subject::Der(name) => {
            der::read_one(name, der::TAG_SEQUENCE).map_err(|_| PkiError::Build {
                what: "certificate",
                reason: "the subject is not a DER Name".to_owned(),
            })?;
            name.to_vec()
        }
    };
    // Name and key are put in after rcgen's layout (see the module docs of `pki`). rcgen
    // marks subjectAltName critical for an empty subject (RFC 5280 §4.2.1.6), so the
    // stand-in subject is empty exactly when the real one is.
    let mut stand_in = rcgen::DistinguishedName::new();
    if subject != EMPTY_NAME {
        stand_in.push(rcgen::DnType::CommonName, "stand-in");
    }
    params.distinguished_name = stand_in;
    params.is_ca = rcgen::IsCa::NoCa;
    params.subject_alt_names = template
        .alt_names
        .iter()
        .map(AltName::to_rcgen)
        .collect::<Result<_, _>>()?;

    // Emission order of albatross-client: albatross, SKI, keyUsage, basicConstraints,
    // AKI, extKeyUsage.
    let mut extensions = Vec::new();
    if let Some(value) = template.albatross {
        let critical = template.albatross_criticality == Criticality::Critical;
        extensions.push(extension(
            super::ALBATROSS_OID_ARCS,
            critical,
            value.to_vec(),
        ));
    }
    if profile.has_key_ids() {
        let ski = der::write(0x04, &template.public_key.key_id());
        extensions.push(extension(OID_SUBJECT_KEY_ID, false, ski));
    }
    extensions.push(extension(OID_KEY_USAGE, true, profile.key_usage().to_vec()));
    extensions.push(extension(
        OID_BASIC_CONSTRAINTS,
        true,
        profile.basic_constraints().to_vec(),
    ));
    if let (true, Some(key_id)) = (profile.has_key_ids(), authority_key_id) {
        let aki = der::write(der::TAG_SEQUENCE, &der::write(0x80, key_id));
        extensions.push(extension(OID_AUTHORITY_KEY_ID, false, aki));
    }
    if let Some(eku) = profile.ext_key_usage() {
        extensions.push(extension(OID_EXT_KEY_USAGE, true, eku.to_vec()));
    }
    params.custom_extensions = extensions;

    let mut issuer_params = rcgen::CertificateParams::default();
    issuer_params.distinguished_name = rcgen::DistinguishedName::new();
    let issuer = rcgen::Issuer::new(issuer_params, signer.unsigned());
    let laid_out = params
        .signed_by(&signer.unsigned(), &issuer)
        .map_err(|e| PkiError::build("certificate", e))?;

    let edits = [
        (TBS_ISSUER, Some(issuer_name)),
        (TBS_SUBJECT, Some(subject.as_slice())),
        (TBS_SPKI, Some(template.public_key.spki_der())),
    ];
    sign_edited(laid_out.der(), 0xa0, &edits, signer).map(Certificate)
}

fn extension(oid: &[u64], critical: bool, value: Vec<u8>) -> rcgen::CustomExtension {
    let mut ext = rcgen::CustomExtension::from_oid_content(oid, value);
    ext.set_criticality(critical);
    ext
}

/// One line of the database file: `<serial as lower-case hex> <CN>\n` (spec §4.4).
pub fn database_line(serial: &Serial, common_name: &str) -> String {
    format!("{} {common_name}\n", serial.hex())
}

/// Appends [`database_line`] to the database file `path` (created if missing). A common
/// name containing a line break is refused, as it would corrupt the file.
pub fn append_database(path: &Path, serial: &Serial, common_name: &str) -> Result<(), PkiError> {
    if common_name.contains(['\n', '\r']) {
        return Err(PkiError::InvalidCommonName(common_name.to_owned()));
    }
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| PkiError::io(path, e))?;
    file.write_all(database_line(serial, common_name).as_bytes())
        .map_err(|e| PkiError::io(path, e))
}

/// The file name `sign` writes a chain to: `<CN>.pem`. A CN that is empty, longer than
/// [`MAX_FILE_NAME_LEN`], or contains `/` or a control character is refused; the
/// `.pem` suffix keeps the result from ever being `.` or `..`.
pub fn chain_file_name(common_name: &str) -> Result<String, PkiError> {
    let safe = !common_name.is_empty()
        && common_name.len() <= MAX_FILE_NAME_LEN
        && !common_name.contains('/')
        && !common_name.chars().any(char::is_control);
    if safe {
        Ok(format!("{common_name}.pem"))
    } else {
        Err(PkiError::UnsafeFileName(common_name.to_owned()))
    }
}

/// Writes `pem` to `<dir>/<CN>.pem` (replacing an older file atomically) and returns the
/// path.
pub fn write_chain_file(dir: &Path, common_name: &str, pem: &str) -> Result<PathBuf, PkiError> {
    let file_name = chain_file_name(common_name)?;
    let path = dir.join(&file_name);
    let temp = dir.join(format!(".{file_name}.tmp"));
    let written = std::fs::write(&temp, pem).and_then(|()| std::fs::rename(&temp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(PkiError::io(&path, e));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_positive_and_minimal() {
        let s = Serial::from_random_octets([0x80, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(s.as_bytes(), &[0, 0x80, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(s.hex(), "80010203040506070809");
        let s = Serial::from_random_octets([0, 0x7f, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(s.as_bytes(), &[0x7f, 0, 0x7f, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(s.hex(), "7f007f0203040506070809");
        let s = Serial::from_random_octets([0, 0x80, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(s.as_bytes(), &[0, 0x80, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(s.hex(), "800203040506070809");
        let s = Serial::from_random_octets([0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(s.as_bytes().len(), 10);
        assert_eq!(Serial::from_der_content(&[0]).hex(), "00");
    }

    #[test]
    fn profiles_for_csrs() {
        assert_eq!(
            Profile::for_csr(Some(RequestedCommand::Policy)),
            Profile::IntermediateCa
        );
        assert_eq!(
            Profile::for_csr(Some(RequestedCommand::Other)),
            Profile::Leaf
        );
        assert_eq!(Profile::for_csr(None), Profile::Server);
    }

    #[test]
    fn alt_names() {
        assert_eq!(
            AltName::parse("10.0.0.1").unwrap(),
            AltName::Ip("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            AltName::parse("*.example.org").unwrap(),
            AltName::Dns("*.example.org".into())
        );
        for bad in ["", "a..b", "a b", "*.", "a/b", "é.org"] {
            assert_eq!(
                AltName::parse(bad).unwrap_err().to_string(),
                format!("invalid subject alternative name {bad:?}")
            );
        }
    }

    #[test]
    fn chain_file_names() {
        assert_eq!(chain_file_name("foo").unwrap(), "foo.pem");
        assert_eq!(chain_file_name("a:b").unwrap(), "a:b.pem");
        assert_eq!(chain_file_name(".").unwrap(), "..pem");
        for bad in ["", "../x", "a/b", "a\nb"] {
            assert_eq!(
                chain_file_name(bad).unwrap_err().to_string(),
                format!("common name {bad:?} cannot be used as a file name")
            );
        }
    }

    #[test]
    fn common_name_der_is_a_single_utf8_rdn() {
        assert_eq!(
            common_name_der("ab").unwrap(),
            vec![
                0x30, 0x0d, 0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x02, b'a',
                b'b'
            ]
        );
    }
}
