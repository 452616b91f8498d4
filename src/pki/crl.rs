//! Certificate revocation lists: made and extended with rcgen for a CA petrel holds the
//! key of, parsed with x509-parser (PEM or DER, whatever tool made them), and validated
//! against the issuing CA's certificate by the pure [`validate_crl`].
//!
//! A CRL petrel makes names the CA's subject as issuer byte for byte, carries a CRL
//! number and an authority key identifier, and has a nextUpdate only if asked to.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]

use std::cmp::Ordering;
use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use serde::{Serialize, Serializer};
use time::OffsetDateTime;
use x509_parser::extensions::{ParsedExtension, X509Extension};
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::cert::{CaIssuer, Serial, offset, pem_block};
use super::facts::{
    CertificateFacts, DistinguishedName, ExtensionInfo, MAX_EXTENSIONS, SignatureAlgorithm,
    extension_info,
};
use super::verify::{SignatureError, verify_signature};
use super::{PEM_EXPANSION, PemProblem, PkiError, der, pem_or_der, rfc3339, sign_edited};
use crate::limits::MAX_CRL_SIZE;

/// PEM label of a CRL.
pub const CRL_PEM: &str = "X509 CRL";

/// Longest CRL number accepted, in octets of its value (RFC 5280 §5.2.3: verifiers must
/// handle 20 octets, issuers must not use more).
pub const MAX_CRL_NUMBER_LEN: usize = 20;

const OID_CRL_NUMBER: &str = "2.5.29.20";
const OID_REASON_CODE: &str = "2.5.29.21";
const OID_INVALIDITY_DATE: &str = "2.5.29.24";
const OID_AUTHORITY_KEY_ID: &str = "2.5.29.35";

/// Position of the issuer and nextUpdate in a TBSCertList whose version is present (as
/// rcgen always writes it).
const TBS_ISSUER: usize = 2;
const TBS_NEXT_UPDATE: usize = 4;

/// Why a CRL did not parse or validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CrlError {
    /// Larger than [`MAX_CRL_SIZE`] (as DER, or its PEM larger than twice that).
    #[error("CRL too large ({0} octets, at most {max} allowed)", max = MAX_CRL_SIZE)]
    TooLarge(usize),
    /// PEM input that does not parse or has another label.
    #[error("invalid PEM CRL: {0}")]
    Pem(String),
    /// Not a DER CRL.
    #[error("malformed CRL: {0}")]
    Malformed(String),
    /// The CRL number extension does not hold a non-negative INTEGER of at most
    /// [`MAX_CRL_NUMBER_LEN`] octets.
    #[error("invalid CRL number")]
    BadCrlNumber,
    /// An extension (dotted OID) present twice.
    #[error("duplicate CRL extension {0}")]
    DuplicateExtension(String),
    /// A critical extension petrel does not implement (dotted OID), e.g. a delta CRL
    /// indicator or an issuing distribution point: the CRL cannot be used as a full CRL.
    #[error("unsupported critical CRL extension {0}")]
    UnsupportedCriticalExtension(String),
    /// More than [`MAX_EXTENSIONS`] extensions on the CRL or one entry.
    #[error("too many CRL extensions ({0}, at most {max} allowed)", max = MAX_EXTENSIONS)]
    TooManyExtensions(usize),
    /// An entry with an invalid reason code or invalidity date.
    #[error("invalid CRL entry for serial {0}")]
    BadEntry(String),
    /// The CRL's issuer is not the certificate's subject.
    #[error("CRL issuer {crl_issuer} does not match CA {ca_subject}")]
    IssuerMismatch {
        /// The CRL's issuer.
        crl_issuer: String,
        /// The CA certificate's subject.
        ca_subject: String,
    },
    /// The CA certificate's keyUsage does not allow signing CRLs.
    #[error("CA {0} may not sign CRLs (keyUsage without cRLSign)")]
    NotCrlSigner(String),
    /// The signature does not verify with the CA's key.
    #[error("CRL signature verification failed")]
    BadSignature,
    /// The signature algorithm is not supported (SHA-1, P-521, unknown, RSA keys outside
    /// 2048–8192 bits).
    #[error("unsupported CRL signature algorithm {0}")]
    UnsupportedSignatureAlgorithm(String),
    /// No CRL number extension (petrel needs it against replays).
    #[error("CRL without CRL number")]
    NoCrlNumber,
    /// thisUpdate lies further in the future than the allowed clock skew.
    #[error("CRL thisUpdate {} is in the future (now {})", rfc3339(*this_update), rfc3339(*now))]
    NotYetValid {
        /// thisUpdate, Unix seconds.
        this_update: i64,
        /// The time of validation, Unix seconds.
        now: i64,
    },
    /// nextUpdate has passed.
    #[error("CRL nextUpdate {} has passed (now {})", rfc3339(*next_update), rfc3339(*now))]
    Expired {
        /// nextUpdate, Unix seconds.
        next_update: i64,
        /// The time of validation, Unix seconds.
        now: i64,
    },
}

/// A CRL number: a non-negative integer of at most [`MAX_CRL_NUMBER_LEN`] octets, kept
/// as its minimal big-endian octets. Ordered numerically; displayed in decimal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CrlNumber(Vec<u8>);

impl CrlNumber {
    /// The number `n`.
    pub fn from_u64(n: u64) -> Self {
        Self::minimal(&n.to_be_bytes())
    }

    /// The number with big-endian octets `octets` (leading zeros ignored).
    pub fn from_be_bytes(octets: &[u8]) -> Result<Self, CrlError> {
        let number = Self::minimal(octets);
        if number.0.len() > MAX_CRL_NUMBER_LEN {
            return Err(CrlError::BadCrlNumber);
        }
        Ok(number)
    }

    fn minimal(octets: &[u8]) -> Self {
        let start = octets.iter().position(|&b| b != 0).unwrap_or(octets.len());
        match octets.get(start..) {
            Some(rest) if !rest.is_empty() => Self(rest.to_vec()),
            _ => Self(vec![0]),
        }
    }

    /// The minimal big-endian octets (`[0]` for zero).
    pub fn as_be_bytes(&self) -> &[u8] {
        &self.0
    }

    /// This number plus one; fails past [`MAX_CRL_NUMBER_LEN`] octets.
    pub fn next(&self) -> Result<Self, CrlError> {
        let mut octets = self.0.clone();
        let mut carry = true;
        for octet in octets.iter_mut().rev() {
            let (sum, overflow) = octet.overflowing_add(1);
            *octet = sum;
            if !overflow {
                carry = false;
                break;
            }
        }
        if carry {
            octets.insert(0, 1);
        }
        Self::from_be_bytes(&octets)
    }
}

impl Ord for CrlNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for CrlNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for CrlNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Long division by ten over the big-endian octets.
        let mut value = self.0.clone();
        let mut digits = Vec::new();
        while value.iter().any(|&b| b != 0) {
            let mut remainder = 0u16;
            for octet in &mut value {
                let current = remainder * 256 + u16::from(*octet);
                *octet = u8::try_from(current / 10).unwrap_or(u8::MAX);
                remainder = current % 10;
            }
            digits.push(char::from_digit(u32::from(remainder), 10).unwrap_or('?'));
        }
        if digits.is_empty() {
            digits.push('0');
        }
        f.write_str(&digits.iter().rev().collect::<String>())
    }
}

impl Serialize for CrlNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Why a certificate was revoked (RFC 5280 §5.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevocationReason {
    /// unspecified (0); rcgen, like RFC 5280 recommends, does not write it.
    Unspecified,
    /// keyCompromise (1).
    KeyCompromise,
    /// cACompromise (2).
    CaCompromise,
    /// affiliationChanged (3).
    AffiliationChanged,
    /// superseded (4).
    Superseded,
    /// cessationOfOperation (5).
    CessationOfOperation,
    /// certificateHold (6).
    CertificateHold,
    /// removeFromCRL (8).
    RemoveFromCrl,
    /// privilegeWithdrawn (9).
    PrivilegeWithdrawn,
    /// aACompromise (10).
    AaCompromise,
}

impl RevocationReason {
    /// The reason of CRLReason code `code`, if it is one.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Unspecified,
            1 => Self::KeyCompromise,
            2 => Self::CaCompromise,
            3 => Self::AffiliationChanged,
            4 => Self::Superseded,
            5 => Self::CessationOfOperation,
            6 => Self::CertificateHold,
            8 => Self::RemoveFromCrl,
            9 => Self::PrivilegeWithdrawn,
            10 => Self::AaCompromise,
            _ => return None,
        })
    }

    /// RFC 5280's name of the reason.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "keyCompromise",
            Self::CaCompromise => "cACompromise",
            Self::AffiliationChanged => "affiliationChanged",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessationOfOperation",
            Self::CertificateHold => "certificateHold",
            Self::RemoveFromCrl => "removeFromCRL",
            Self::PrivilegeWithdrawn => "privilegeWithdrawn",
            Self::AaCompromise => "aACompromise",
        }
    }

    const fn to_rcgen(self) -> rcgen::RevocationReason {
        match self {
            Self::Unspecified => rcgen::RevocationReason::Unspecified,
            Self::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            Self::CaCompromise => rcgen::RevocationReason::CaCompromise,
            Self::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            Self::Superseded => rcgen::RevocationReason::Superseded,
            Self::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            Self::CertificateHold => rcgen::RevocationReason::CertificateHold,
            Self::RemoveFromCrl => rcgen::RevocationReason::RemoveFromCrl,
            Self::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
            Self::AaCompromise => rcgen::RevocationReason::AaCompromise,
        }
    }
}

impl Serialize for RevocationReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct RevokedEntry {
    /// Its serial number.
    pub serial: Serial,
    /// When it was revoked, Unix seconds.
    pub revoked_at: i64,
    /// Why, if said.
    pub reason: Option<RevocationReason>,
    /// Since when the key is known or suspected to be compromised, Unix seconds, if said.
    pub invalidity_date: Option<i64>,
}

/// What a new CRL says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlTemplate {
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate, if any (must lie after thisUpdate).
    pub next_update: Option<OffsetDateTime>,
    /// The CRL number.
    pub number: CrlNumber,
    /// The revoked certificates.
    pub revoked: Vec<RevokedEntry>,
}

/// A DER CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl(Vec<u8>);

impl Crl {
    /// The DER octets.
    pub fn der(&self) -> &[u8] {
        &self.0
    }

    /// The CRL as PEM (`X509 CRL`).
    pub fn pem(&self) -> String {
        pem_block(CRL_PEM, &self.0)
    }
}

/// Makes and signs a CRL for `issuer`: issuer name = the CA's subject, AKI = the CA's
/// key identifier, the CRL number, and the entries in order.
pub fn create_crl(template: &CrlTemplate, issuer: &CaIssuer) -> Result<Crl, PkiError> {
    let this_update = in_range(template.this_update)?;
    let next_update = match template.next_update {
        Some(next) => in_range(next)?,
        // rcgen always writes nextUpdate: lay one out and take it away again.
        None => offset(this_update, Duration::from_secs(1), true)?,
    };
    let revoked_certs = template
        .revoked
        .iter()
        .map(|entry| {
            Ok(rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(entry.serial.as_bytes()),
                revocation_time: from_unix(entry.revoked_at)?,
                reason_code: entry.reason.map(RevocationReason::to_rcgen),
                invalidity_date: entry.invalidity_date.map(from_unix).transpose()?,
            })
        })
        .collect::<Result<Vec<_>, PkiError>>()?;
    let params = rcgen::CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: rcgen::SerialNumber::from_slice(template.number.as_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: rcgen::KeyIdMethod::PreSpecified(issuer.authority_key_id().to_vec()),
    };
    let mut issuer_params = rcgen::CertificateParams::default();
    issuer_params.distinguished_name = rcgen::DistinguishedName::new();
    let rc_issuer = rcgen::Issuer::new(issuer_params, issuer.key().unsigned());
    let laid_out = params
        .signed_by(&rc_issuer)
        .map_err(|e| PkiError::build("CRL", e))?;
    let mut edits = vec![(TBS_ISSUER, Some(issuer.facts().subject.der()))];
    if template.next_update.is_none() {
        edits.push((TBS_NEXT_UPDATE, None));
    }
    sign_edited(laid_out.der(), der::TAG_INTEGER, &edits, issuer.key()).map(Crl)
}

/// Extends `existing`, which must be `issuer`'s (same issuer name, signature verifies):
/// keeps its entries, adds each of `additions` whose serial is not yet revoked, sets
/// thisUpdate/nextUpdate as given and the CRL number to the old one plus one (0 if the
/// old CRL had none, as albatross's `vmm_revoke` did), and signs with the CA's key.
pub fn extend_crl(
    existing: &ParsedCrl,
    issuer: &CaIssuer,
    this_update: OffsetDateTime,
    next_update: Option<OffsetDateTime>,
    additions: &[RevokedEntry],
) -> Result<Crl, PkiError> {
    check_issuer_and_signature(existing, issuer.facts())?;
    let number = match &existing.number {
        Some(n) => n.next()?,
        None => CrlNumber::from_u64(0),
    };
    let mut revoked = existing.revoked.clone();
    for entry in additions {
        if !revoked.iter().any(|r| r.serial == entry.serial) {
            revoked.push(entry.clone());
        }
    }
    let template = CrlTemplate {
        this_update,
        next_update,
        number,
        revoked,
    };
    create_crl(&template, issuer)
}

fn in_range(t: OffsetDateTime) -> Result<OffsetDateTime, PkiError> {
    offset(t, Duration::ZERO, true)
}

fn from_unix(seconds: i64) -> Result<OffsetDateTime, PkiError> {
    OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|_| PkiError::ValidityOutOfRange)
        .and_then(in_range)
}

/// A CRL as read (signature and times not yet checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCrl {
    der: Vec<u8>,
    issuer: DistinguishedName,
    number: Option<CrlNumber>,
    this_update: i64,
    next_update: Option<i64>,
    revoked: Vec<RevokedEntry>,
    signature_algorithm: SignatureAlgorithm,
    authority_key_id: Option<Vec<u8>>,
    extensions: Vec<ExtensionInfo>,
}

impl ParsedCrl {
    /// Parses a CRL, PEM (`X509 CRL`) or DER, of at most [`MAX_CRL_SIZE`] octets of DER.
    /// Refuses duplicate extensions, critical extensions other than none (petrel
    /// implements no critical CRL extension) and malformed CRL numbers or entries.
    pub fn parse(input: &[u8]) -> Result<Self, CrlError> {
        if exceeds(input.len(), MAX_CRL_SIZE.saturating_mul(pem_expansion())) {
            return Err(CrlError::TooLarge(input.len()));
        }
        let der = pem_or_der(input, &[CRL_PEM]).map_err(|p| match p {
            PemProblem::Invalid(e) => CrlError::Pem(e),
            PemProblem::WrongLabel(label) => {
                CrlError::Pem(format!("expected {CRL_PEM:?}, found {label:?}"))
            }
        })?;
        if exceeds(der.len(), MAX_CRL_SIZE) {
            return Err(CrlError::TooLarge(der.len()));
        }
        let (rest, crl) = CertificateRevocationList::from_der(&der)
            .map_err(|e| CrlError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CrlError::Malformed("trailing data".to_owned()));
        }
        let issuer = DistinguishedName::from_x509(crl.issuer())
            .map_err(|e| CrlError::Malformed(e.to_string()))?;
        let (number, authority_key_id, extensions) = crl_extensions(crl.extensions())?;
        let revoked = crl
            .iter_revoked_certificates()
            .map(|entry| {
                let serial = Serial::from_der_content(entry.raw_serial());
                let (reason, invalidity_date) = entry_extensions(entry.extensions(), &serial)?;
                Ok(RevokedEntry {
                    revoked_at: entry.revocation_date.timestamp(),
                    serial,
                    reason,
                    invalidity_date,
                })
            })
            .collect::<Result<Vec<_>, CrlError>>()?;
        Ok(Self {
            issuer,
            number,
            this_update: crl.last_update().timestamp(),
            next_update: crl.next_update().map(|t| t.timestamp()),
            revoked,
            signature_algorithm: SignatureAlgorithm::from_x509(&crl.signature_algorithm),
            authority_key_id,
            extensions,
            der: der.into_owned(),
        })
    }

    /// The DER octets.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The issuer name.
    pub fn issuer(&self) -> &DistinguishedName {
        &self.issuer
    }

    /// The CRL number, if present.
    pub fn number(&self) -> Option<&CrlNumber> {
        self.number.as_ref()
    }

    /// thisUpdate, Unix seconds.
    pub fn this_update(&self) -> i64 {
        self.this_update
    }

    /// nextUpdate, Unix seconds, if present.
    pub fn next_update(&self) -> Option<i64> {
        self.next_update
    }

    /// The revoked certificates, in order.
    pub fn revoked(&self) -> &[RevokedEntry] {
        &self.revoked
    }

    /// Whether `serial` is revoked by this CRL.
    pub fn is_revoked(&self, serial: &Serial) -> bool {
        self.revoked.iter().any(|r| &r.serial == serial)
    }

    /// The signature algorithm.
    pub fn signature_algorithm(&self) -> &SignatureAlgorithm {
        &self.signature_algorithm
    }

    /// The authority key identifier's key id, if present.
    pub fn authority_key_id(&self) -> Option<&[u8]> {
        self.authority_key_id.as_deref()
    }

    /// Every CRL extension, in order.
    pub fn extensions(&self) -> &[ExtensionInfo] {
        &self.extensions
    }
}

fn pem_expansion() -> u64 {
    u64::try_from(PEM_EXPANSION).unwrap_or(u64::MAX)
}

fn exceeds(len: usize, limit: u64) -> bool {
    u64::try_from(len).map_or(true, |len| len > limit)
}

type CrlExtensions = (Option<CrlNumber>, Option<Vec<u8>>, Vec<ExtensionInfo>);

fn crl_extensions(extensions: &[X509Extension<'_>]) -> Result<CrlExtensions, CrlError> {
    if extensions.len() > MAX_EXTENSIONS {
        return Err(CrlError::TooManyExtensions(extensions.len()));
    }
    let mut number = None;
    let mut authority_key_id = None;
    let mut infos: Vec<ExtensionInfo> = Vec::new();
    for ext in extensions {
        let info = extension_info(ext);
        if infos.iter().any(|i| i.oid == info.oid) {
            return Err(CrlError::DuplicateExtension(info.oid));
        }
        match info.oid.as_str() {
            OID_CRL_NUMBER => {
                let octets =
                    der::unsigned_integer(ext.value).map_err(|_| CrlError::BadCrlNumber)?;
                number = Some(CrlNumber::from_be_bytes(octets)?);
            }
            OID_AUTHORITY_KEY_ID => match ext.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    authority_key_id = aki.key_identifier.as_ref().map(|id| id.0.to_vec());
                }
                _ => {
                    return Err(CrlError::Malformed(
                        "invalid authority key identifier".to_owned(),
                    ));
                }
            },
            _ if ext.critical => return Err(CrlError::UnsupportedCriticalExtension(info.oid)),
            _ => {}
        }
        infos.push(info);
    }
    Ok((number, authority_key_id, infos))
}

fn entry_extensions(
    extensions: &[X509Extension<'_>],
    serial: &Serial,
) -> Result<(Option<RevocationReason>, Option<i64>), CrlError> {
    if extensions.len() > MAX_EXTENSIONS {
        return Err(CrlError::TooManyExtensions(extensions.len()));
    }
    let bad = || CrlError::BadEntry(serial.hex());
    let mut reason = None;
    let mut invalidity = None;
    let mut seen: Vec<String> = Vec::new();
    for ext in extensions {
        let oid = ext.oid.to_id_string();
        if seen.contains(&oid) {
            return Err(CrlError::DuplicateExtension(oid));
        }
        match (oid.as_str(), ext.parsed_extension()) {
            (OID_REASON_CODE, ParsedExtension::ReasonCode(code)) => {
                reason = Some(RevocationReason::from_code(code.0).ok_or_else(bad)?);
            }
            (OID_INVALIDITY_DATE, ParsedExtension::InvalidityDate(date)) => {
                invalidity = Some(date.timestamp());
            }
            (OID_REASON_CODE | OID_INVALIDITY_DATE, _) => return Err(bad()),
            _ if ext.critical => return Err(CrlError::UnsupportedCriticalExtension(oid)),
            _ => {}
        }
        seen.push(oid);
    }
    Ok((reason, invalidity))
}

/// A CRL that [`validate_crl`] accepted: issued and signed by the given CA, with a CRL
/// number, current at the time of validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedCrl {
    crl: ParsedCrl,
    number: CrlNumber,
}

impl ValidatedCrl {
    /// The CRL number (always present in a validated CRL).
    pub fn number(&self) -> &CrlNumber {
        &self.number
    }

    /// The parsed CRL.
    pub fn into_inner(self) -> ParsedCrl {
        self.crl
    }
}

impl Deref for ValidatedCrl {
    type Target = ParsedCrl;

    fn deref(&self) -> &ParsedCrl {
        &self.crl
    }
}

/// Validates `crl` against the CA certificate `issuer` at `now`, allowing `skew` (petrel
/// uses [`super::CRL_CLOCK_SKEW`]) for a thisUpdate in the future. Checks, in this
/// order: the issuer name equals the CA's subject byte for byte; the CA may sign CRLs
/// (keyUsage, if present, has cRLSign); the signature verifies with the CA's key
/// (Ed25519, ECDSA P-256/P-384, RSA PKCS#1 v1.5 or PSS with SHA-2, any salt length); the CRL has a CRL
/// number; thisUpdate ≤ now + skew; nextUpdate, if any, ≥ now.
pub fn validate_crl(
    crl: ParsedCrl,
    issuer: &CertificateFacts,
    now: OffsetDateTime,
    skew: Duration,
) -> Result<ValidatedCrl, CrlError> {
    let validated = verify_crl(crl, issuer)?;
    let crl = &validated.crl;
    let now = now.unix_timestamp();
    let skew = i64::try_from(skew.as_secs()).unwrap_or(i64::MAX);
    if crl.this_update > now.saturating_add(skew) {
        return Err(CrlError::NotYetValid {
            this_update: crl.this_update,
            now,
        });
    }
    if let Some(next_update) = crl.next_update {
        if next_update < now {
            return Err(CrlError::Expired { next_update, now });
        }
    }
    Ok(validated)
}

/// The checks of [`validate_crl`] that do not depend on the time: issuer name, cRLSign,
/// signature, CRL number. For a CRL accepted once already (stored after an upload and
/// read again at start-up), and for an operator's CRL whose nextUpdate has passed (its
/// entries still revoke: an old list is never a reason to trust again).
pub fn verify_crl(crl: ParsedCrl, issuer: &CertificateFacts) -> Result<ValidatedCrl, CrlError> {
    check_issuer_and_signature(&crl, issuer)?;
    let number = crl.number.clone().ok_or(CrlError::NoCrlNumber)?;
    Ok(ValidatedCrl { crl, number })
}

fn check_issuer_and_signature(crl: &ParsedCrl, issuer: &CertificateFacts) -> Result<(), CrlError> {
    if crl.issuer.der() != issuer.subject.der() {
        return Err(CrlError::IssuerMismatch {
            crl_issuer: crl.issuer.text().to_owned(),
            ca_subject: issuer.subject.text().to_owned(),
        });
    }
    if issuer.key_usage.is_some_and(|ku| !ku.crl_sign()) {
        return Err(CrlError::NotCrlSigner(issuer.subject.text().to_owned()));
    }
    let (_, parsed) = CertificateRevocationList::from_der(&crl.der)
        .map_err(|e| CrlError::Malformed(e.to_string()))?;
    let (_, spki) = SubjectPublicKeyInfo::from_der(issuer.public_key.spki_der())
        .map_err(|_| CrlError::BadSignature)?;
    verify_signature(
        &spki,
        &parsed.signature_algorithm,
        &parsed.signature_value,
        parsed.tbs_cert_list.as_ref(),
    )
    .map_err(|e| match e {
        SignatureError::Unsupported => {
            CrlError::UnsupportedSignatureAlgorithm(crl.signature_algorithm.to_string())
        }
        SignatureError::Bad => CrlError::BadSignature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crl_numbers_count_and_compare() {
        assert_eq!(CrlNumber::from_u64(0).as_be_bytes(), &[0]);
        assert_eq!(
            CrlNumber::from_u64(0).next().unwrap(),
            CrlNumber::from_u64(1)
        );
        assert_eq!(
            CrlNumber::from_u64(255).next().unwrap().as_be_bytes(),
            &[1, 0]
        );
        assert_eq!(
            CrlNumber::from_u64(0x01ff).next().unwrap(),
            CrlNumber::from_u64(0x0200)
        );
        assert!(CrlNumber::from_u64(256) > CrlNumber::from_u64(255));
        assert!(CrlNumber::from_be_bytes(&[0, 0, 5]).unwrap() < CrlNumber::from_u64(6));
        assert_eq!(CrlNumber::from_u64(1234567890).to_string(), "1234567890");
        assert_eq!(CrlNumber::from_u64(0).to_string(), "0");
        assert_eq!(
            CrlNumber::from_be_bytes(&[0xff; 9]).unwrap().to_string(),
            "4722366482869645213695"
        );
        let max = CrlNumber::from_be_bytes(&[0xff; 20]).unwrap();
        assert_eq!(max.next(), Err(CrlError::BadCrlNumber));
        assert_eq!(
            CrlNumber::from_be_bytes(&[1; 21]),
            Err(CrlError::BadCrlNumber)
        );
    }

    #[test]
    fn reasons_round_trip() {
        for code in 0..=11u8 {
            match RevocationReason::from_code(code) {
                Some(r) => assert_eq!(r.to_rcgen() as u8, code),
                None => assert!(code == 7 || code == 11),
            }
        }
    }
}
