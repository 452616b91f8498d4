//! Certificates, CSRs and CRLs: keys, the certificate profiles of albatross-client
//! (`spec/tls-endpoint.md` §4), PKCS#10 requests, CRLs, and the typed facts the chain
//! decoder and `petrel inspect` read from a certificate.
//!
//! Everything is built with rcgen and parsed with x509-parser; no x509-parser or rcgen
//! type leaves this module. The pure parts take `now` as a parameter; the only clock read
//! is [`now_utc`]. File I/O is confined to the functions that say so
//! ([`keys::load_or_generate_key_file`], [`cert::append_database`],
//! [`cert::write_chain_file`]).
//!
//! ## Building on rcgen
//!
//! rcgen encodes a certificate's or CRL's issuer from its own model of a distinguished
//! name, which cannot represent every name another tool may have put in a CA certificate
//! (multi-valued RDNs, repeated attribute types). petrel therefore lets rcgen build the
//! to-be-signed structure, then puts the issuing CA's subject (and, when signing a CSR,
//! the request's subject and public key) in byte for byte, and only then signs. The
//! issuer of everything petrel signs is thus exactly the issuing CA's subject, whatever
//! tool made the CA.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]

pub mod cert;
pub mod crl;
pub mod csr;
mod der;
pub mod describe;
pub mod facts;
pub mod keys;
mod verify;

use std::time::Duration;

use time::OffsetDateTime;

pub use cert::{
    AltName, CaIssuer, Certificate, CertificateTemplate, Criticality, Profile, Serial, Subject,
    Validity,
};
pub use crl::{Crl, CrlError, CrlNumber, CrlTemplate, ParsedCrl, RevocationReason, RevokedEntry};
pub use csr::{Csr, ParsedCsr, VerifiedCsr};
pub use facts::{CertificateFacts, CommonName, DistinguishedName, FactsError};
pub use keys::{KeyAlgorithm, KeyType, PrivateKey, PublicKey};

/// OID of the albatross extension (`1.3.6.1.4.1.49836.42`), dotted.
pub const ALBATROSS_OID: &str = "1.3.6.1.4.1.49836.42";

/// OID of the albatross extension as rcgen wants it.
pub(crate) const ALBATROSS_OID_ARCS: &[u64] = &[1, 3, 6, 1, 4, 1, 49836, 42];

/// How far before `now` a new certificate's notBefore lies (albatross-client: 10 s), so
/// that a verifier whose clock is slightly behind accepts it.
pub const NOT_BEFORE_BACKDATE: Duration = Duration::from_secs(10);

/// Clock skew allowed for a CRL's thisUpdate (DESIGN.md, "Revocation": 5 minutes): a CRL
/// made on a host whose clock is a little ahead is still accepted.
pub const CRL_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// PEM text is at most this many times as long as the DER it carries (base64 is 4/3,
/// plus line breaks and the armour), so PEM input is refused above this multiple of a
/// DER limit before it is decoded.
pub const PEM_EXPANSION: usize = 2;

/// Text of a key/certificate mismatch (albatross-client's words, exit code 124).
pub const KEY_MISMATCH: &str = "Public key of certificate doesn't match private key";

/// Text when a CSR has no common name (albatross's words).
pub const CSR_WITHOUT_CN: &str = "couldn't find name (no common name in CSR subject)";

/// Errors of the PKI layer: keys, building and signing certificates, CSRs and CRLs, and
/// the files `generate` and `sign` write.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A private key is not PEM PKCS#8 of a supported type.
    #[error("invalid private key: {0}")]
    InvalidKey(String),
    /// A key type name is not one petrel can generate.
    #[error("unsupported key type {0:?} (expected ed25519, p256, p384, rsa2048 or rsa4096)")]
    UnsupportedKeyType(String),
    /// Key generation failed in the crypto library.
    #[error("key generation failed: {0}")]
    KeyGeneration(String),
    /// A public key (SubjectPublicKeyInfo) did not parse.
    #[error("invalid public key")]
    InvalidPublicKey,
    /// The private key does not belong to the certificate.
    #[error("{}", KEY_MISMATCH)]
    KeyMismatch,
    /// A subject alternative name is not a valid DNS name or IP address.
    #[error("invalid subject alternative name {0:?}")]
    InvalidAltName(String),
    /// A common name that rcgen cannot encode or that is empty.
    #[error("invalid common name {0:?}")]
    InvalidCommonName(String),
    /// rcgen refused to build a structure.
    #[error("building {what} failed: {reason}")]
    Build {
        /// What was being built ("certificate", "CSR", "CRL").
        what: &'static str,
        /// rcgen's reason.
        reason: String,
    },
    /// Signing failed in the crypto library.
    #[error("signing failed: {0}")]
    Signing(String),
    /// A validity period that cannot be represented (before 1950 or after 9999).
    #[error("validity period out of range")]
    ValidityOutOfRange,
    /// PEM input without the expected block.
    #[error("no {0} found in PEM input")]
    NoPem(&'static str),
    /// PEM input that does not parse.
    #[error("invalid PEM: {0}")]
    InvalidPem(String),
    /// A CSR that does not parse.
    #[error("invalid CSR: {0}")]
    InvalidCsr(String),
    /// A CSR larger than [`csr::MAX_CSR_SIZE`].
    #[error("CSR too large ({0} octets, at most {max} allowed)", max = csr::MAX_CSR_SIZE)]
    CsrTooLarge(usize),
    /// A CSR whose self-signature does not verify.
    #[error("CSR signature verification failed")]
    CsrBadSignature,
    /// A CSR with several albatross extensions or several extension requests.
    #[error("CSR carries more than one albatross extension")]
    CsrDuplicateExtension,
    /// A CSR without a subject common name.
    #[error("{}", CSR_WITHOUT_CN)]
    CsrWithoutCommonName,
    /// A CSR with several subject common names.
    #[error("CSR subject has several common names")]
    CsrSeveralCommonNames,
    /// A common name that cannot be used as a file name (`<CN>.pem`).
    #[error("common name {0:?} cannot be used as a file name")]
    UnsafeFileName(String),
    /// A certificate that does not parse.
    #[error(transparent)]
    Facts(#[from] FactsError),
    /// A CRL that does not parse or validate.
    #[error(transparent)]
    Crl(#[from] CrlError),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl PkiError {
    fn build(what: &'static str, error: rcgen::Error) -> Self {
        Self::Build {
            what,
            reason: error.to_string(),
        }
    }

    fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The current time, for the command-line tools. This is the only clock read in `pki`;
/// everything else takes `now` as a parameter.
pub fn now_utc() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Finishes a structure rcgen laid out with [`keys::Unsigned`]: replaces (or, for
/// `None`, removes) the to-be-signed elements at the given positions, then signs the
/// result with `key` and assembles `SEQUENCE { tbs, algorithm, BIT STRING signature }`.
/// `first_tag` is the tag the TBS must start with (a sanity check of the layout).
pub(crate) fn sign_edited(
    laid_out: &[u8],
    first_tag: u8,
    edits: &[(usize, Option<&[u8]>)],
    key: &keys::PrivateKey,
) -> Result<Vec<u8>, PkiError> {
    let layout = |_| PkiError::Signing("unexpected layout of rcgen's output".to_owned());
    let outer = der::read_one(laid_out, der::TAG_SEQUENCE).map_err(layout)?;
    let [tbs, algorithm, _signature] = der::elements(outer.content)
        .map_err(layout)?
        .try_into()
        .map_err(|_| layout(der::Malformed))?;
    let fields = der::elements(tbs.content).map_err(layout)?;
    if tbs.tag != der::TAG_SEQUENCE || fields.first().map(|f| f.tag) != Some(first_tag) {
        return Err(layout(der::Malformed));
    }
    let mut content = Vec::with_capacity(tbs.content.len());
    for (index, field) in fields.iter().enumerate() {
        match edits.iter().find(|(at, _)| *at == index) {
            Some((_, Some(replacement))) => content.extend_from_slice(replacement),
            Some((_, None)) => {}
            None => content.extend_from_slice(field.raw),
        }
    }
    let tbs = der::write(der::TAG_SEQUENCE, &content);
    let signature = key.sign(&tbs)?;
    let mut bits = Vec::with_capacity(signature.len() + 1);
    bits.push(0);
    bits.extend_from_slice(&signature);
    let mut signed = tbs;
    signed.extend_from_slice(algorithm.raw);
    signed.extend(der::write(der::TAG_BIT_STRING, &bits));
    Ok(der::write(der::TAG_SEQUENCE, &signed))
}

/// Why [`pem_or_der`] could not find DER.
#[derive(Debug)]
pub(crate) enum PemProblem {
    /// The input is PEM but does not parse.
    Invalid(String),
    /// The PEM block has another label.
    WrongLabel(String),
}

/// DER input as is (it starts with a SEQUENCE), or the contents of the first PEM block,
/// whose label must be one of `labels`.
pub(crate) fn pem_or_der<'a>(
    input: &'a [u8],
    labels: &[&str],
) -> Result<std::borrow::Cow<'a, [u8]>, PemProblem> {
    if input.first() == Some(&der::TAG_SEQUENCE) {
        return Ok(std::borrow::Cow::Borrowed(input));
    }
    let block = pem::parse(input).map_err(|e| PemProblem::Invalid(e.to_string()))?;
    if !labels.contains(&block.tag()) {
        return Err(PemProblem::WrongLabel(block.tag().to_owned()));
    }
    Ok(std::borrow::Cow::Owned(block.into_contents()))
}

/// RFC 3339 text of Unix seconds (the number itself if out of range).
pub(crate) fn rfc3339(seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| seconds.to_string())
}
