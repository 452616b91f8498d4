//! `petrel revoke`: creates or extends a CA's CRL and writes it; the binary then uploads
//! it with a `revocation upload` leaf of the same CA (DESIGN.md, "Revocation").
//!
//! The CRL file is `<CA common name>.crl` in the working directory unless `--crl` names
//! another; an existing file is extended (its entries kept, the CRL number increased by
//! one), a missing one is created with CRL number 1. The file is written atomically in
//! DER (`openssl crl -inform DER` reads it; PEM input is accepted when extending), and
//! never over the CA's certificate or key file.

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::ca::read_certificates;
use super::{ClientError, read_bounded};
use crate::limits::MAX_CRL_SIZE;
use crate::pki::cert::{CaIssuer, chain_file_name};
use crate::pki::crl::{create_crl, extend_crl};
use crate::pki::{
    CommonName, CrlNumber, CrlTemplate, ParsedCrl, PkiError, RevocationReason, RevokedEntry,
    Serial, keys,
};

/// Suffix of the default CRL file name (`<CA common name>.crl`).
pub const CRL_SUFFIX: &str = ".crl";

/// Mode of the CRL file: a CRL is public.
pub const CRL_FILE_MODE: u32 = 0o644;

/// Most serials one `--serial` may carry, in octets (RFC 5280 §4.1.2.2: at most 20).
pub const MAX_SERIAL_LEN: usize = 20;

/// What `petrel revoke` is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeOptions {
    /// The CA's certificate (`--ca`).
    pub ca: PathBuf,
    /// The CA's key (`--ca-key`).
    pub ca_key: PathBuf,
    /// The CRL file to extend and write (`--crl`; default `<CN>.crl` in `dir`).
    pub crl: Option<PathBuf>,
    /// Certificates to revoke (`--cert`), each issued by the CA.
    pub certificates: Vec<PathBuf>,
    /// Serials to revoke (`--serial`, hex).
    pub serials: Vec<String>,
    /// The reason recorded with every new entry (`--reason`).
    pub reason: Option<RevocationReason>,
    /// nextUpdate in days from now (`--next-update`); none without it.
    pub next_update_days: Option<u32>,
    /// The directory of the default CRL file.
    pub dir: PathBuf,
}

/// What `petrel revoke` wrote.
#[derive(Debug)]
pub struct RevokeOutcome {
    /// The CRL file.
    pub crl_file: PathBuf,
    /// Its CRL number.
    pub number: CrlNumber,
    /// Serials added (hex).
    pub added: Vec<String>,
    /// Serials asked for that the CRL already revoked (hex).
    pub already_revoked: Vec<String>,
    /// How many certificates the CRL revokes now.
    pub total: usize,
    /// The CA.
    pub issuer: CaIssuer,
}

/// Creates or extends the CA's CRL as `options` say and writes it.
pub fn revoke(options: &RevokeOptions, now: OffsetDateTime) -> Result<RevokeOutcome, ClientError> {
    let issuer = CaIssuer::new(
        read_certificates(&options.ca)?,
        keys::load_key_file(&options.ca_key)?,
    )?;
    let crl_file = match &options.crl {
        Some(path) => path.clone(),
        None => options.dir.join(crl_file_name(&issuer)?),
    };
    for protected in [&options.ca, &options.ca_key] {
        if same_file(&crl_file, protected) {
            return Err(ClientError::usage(format!(
                "{}: refusing to write the CRL over the CA's certificate or key",
                crl_file.display()
            )));
        }
    }
    let mut serials = Vec::new();
    for path in &options.certificates {
        serials.push(serial_of(path, &issuer)?);
    }
    for hex in &options.serials {
        serials.push(parse_serial(hex)?);
    }
    let existing = if crl_file.exists() {
        let data = read_bounded(&crl_file, MAX_CRL_SIZE.saturating_mul(2))?;
        Some(
            ParsedCrl::parse(&data)
                .map_err(|e| ClientError::usage(format!("{}: {e}", crl_file.display())))?,
        )
    } else {
        None
    };
    if serials.is_empty() && existing.is_none() {
        return Err(ClientError::usage(
            "nothing to revoke: give --cert CERT or --serial HEX",
        ));
    }
    let (already_revoked, added): (Vec<Serial>, Vec<Serial>) = serials
        .into_iter()
        .partition(|s| existing.as_ref().is_some_and(|crl| crl.is_revoked(s)));
    let mut entries: Vec<RevokedEntry> = Vec::new();
    for serial in added {
        if !entries.iter().any(|e| e.serial == serial) {
            entries.push(RevokedEntry {
                serial,
                revoked_at: now.unix_timestamp(),
                reason: options.reason,
                invalidity_date: None,
            });
        }
    }
    let next_update = options
        .next_update_days
        .map(|days| now + time::Duration::days(i64::from(days)));
    let crl = match &existing {
        Some(existing) => extend_crl(existing, &issuer, now, next_update, &entries)?,
        None => create_crl(
            &CrlTemplate {
                this_update: now,
                next_update,
                number: CrlNumber::from_u64(1),
                revoked: entries.clone(),
            },
            &issuer,
        )?,
    };
    let written = ParsedCrl::parse(crl.der()).map_err(PkiError::from)?;
    crate::store::write_atomic(&crl_file, crl.der(), CRL_FILE_MODE)
        .map_err(|e| ClientError::usage(e.to_string()))?;
    Ok(RevokeOutcome {
        crl_file,
        number: written.number().cloned().unwrap_or(CrlNumber::from_u64(0)),
        added: entries.iter().map(|e| e.serial.hex()).collect(),
        already_revoked: already_revoked.iter().map(Serial::hex).collect(),
        total: written.revoked().len(),
        issuer,
    })
}

/// The default CRL file name of a CA: `<common name>.crl`.
pub fn crl_file_name(issuer: &CaIssuer) -> Result<String, ClientError> {
    let cn = match &issuer.facts().common_name {
        CommonName::One(cn) => cn.clone(),
        _ => {
            return Err(ClientError::usage(
                "the CA has no single common name: name the CRL file with --crl",
            ));
        }
    };
    let pem = chain_file_name(&cn)?;
    Ok(format!("{}{CRL_SUFFIX}", pem.trim_end_matches(".pem")))
}

/// A serial given in hex (`0a1b`, `0x0A1B`, `0a:1b`), as the positive DER INTEGER
/// content a certificate carries.
pub fn parse_serial(text: &str) -> Result<Serial, ClientError> {
    let bad = || ClientError::usage(format!("--serial {text:?}: expected a serial in hex"));
    let digits: String = text
        .trim_start_matches("0x")
        .trim_start_matches("0X")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    if digits.is_empty() {
        return Err(bad());
    }
    let padded = if digits.len() % 2 == 1 {
        format!("0{digits}")
    } else {
        digits
    };
    let octets = hex::decode(padded).map_err(|_| bad())?;
    let start = octets.iter().position(|&b| b != 0).unwrap_or(octets.len());
    let value = octets.get(start..).unwrap_or_default();
    if value.len() > MAX_SERIAL_LEN {
        return Err(ClientError::usage(format!(
            "--serial {text:?}: longer than {MAX_SERIAL_LEN} octets"
        )));
    }
    let mut content = Vec::with_capacity(value.len() + 1);
    if value.first().is_none_or(|&b| b >= 0x80) {
        content.push(0);
    }
    content.extend_from_slice(value);
    Ok(Serial::from_der_content(&content))
}

/// A reason by its RFC 5280 name (any case): `keyCompromise`, `superseded`, …
pub fn parse_reason(text: &str) -> Result<RevocationReason, ClientError> {
    let all: Vec<RevocationReason> = (0..=10).filter_map(RevocationReason::from_code).collect();
    all.iter()
        .copied()
        .find(|r| r.name().eq_ignore_ascii_case(text))
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|r| r.name()).collect();
            ClientError::usage(format!(
                "--reason {text:?}: expected one of {}",
                names.join(", ")
            ))
        })
}

/// The serial of the certificate in `path`, which `issuer` must have issued.
fn serial_of(path: &Path, issuer: &CaIssuer) -> Result<Serial, ClientError> {
    let certs = read_certificates(path)?;
    let cert = certs
        .first()
        .ok_or_else(|| ClientError::usage(format!("{}: no certificate", path.display())))?;
    let facts = cert.facts().map_err(PkiError::from)?;
    let ca = issuer.facts();
    let same_key_id = match (&facts.authority_key_id, &ca.subject_key_id) {
        (Some(aki), Some(ski)) => aki == ski,
        _ => true,
    };
    if facts.issuer.der() != ca.subject.der() || !same_key_id {
        return Err(ClientError::usage(format!(
            "{}: issued by {}, not by the CA {}",
            path.display(),
            facts.issuer,
            ca.subject
        )));
    }
    Ok(facts.serial)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_in_hex() {
        let hex = |s: &str| parse_serial(s).unwrap();
        assert_eq!(hex("0a1b").as_bytes(), &[0x0a, 0x1b]);
        assert_eq!(hex("0xA1B").as_bytes(), &[0x0a, 0x1b]);
        assert_eq!(hex("00:80:01").as_bytes(), &[0x00, 0x80, 0x01]);
        assert_eq!(hex("8001").as_bytes(), &[0x00, 0x80, 0x01]);
        assert_eq!(hex("0").as_bytes(), &[0x00]);
        assert_eq!(hex("8001").hex(), "8001");
        for bad in ["", "xyz", "0x"] {
            assert_eq!(
                parse_serial(bad).unwrap_err().to_string(),
                format!("--serial {bad:?}: expected a serial in hex")
            );
        }
        assert_eq!(
            parse_serial(&"ab".repeat(21)).unwrap_err().to_string(),
            format!("--serial {:?}: longer than 20 octets", "ab".repeat(21))
        );
    }

    #[test]
    fn reasons_by_name() {
        assert_eq!(
            parse_reason("keycompromise").unwrap(),
            RevocationReason::KeyCompromise
        );
        assert_eq!(
            parse_reason("cACompromise").unwrap(),
            RevocationReason::CaCompromise
        );
        assert_eq!(
            parse_reason("lost").unwrap_err().to_string(),
            "--reason \"lost\": expected one of unspecified, keyCompromise, cACompromise, \
             affiliationChanged, superseded, cessationOfOperation, certificateHold, \
             removeFromCRL, privilegeWithdrawn, aACompromise"
        );
    }
}
