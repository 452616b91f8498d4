//! PKCS#10 requests (`spec/tls-endpoint.md` §4.2–4.3): made with rcgen (subject CN, one
//! extensionRequest holding only the albatross extension, non-critical), parsed with
//! x509-parser (rcgen cannot read requests with unknown extensions).
//!
//! A parsed request becomes a [`VerifiedCsr`] only once its self-signature verifies;
//! only a verified request yields a certificate template.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]

use std::ops::Deref;

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::prelude::FromDer;

use super::cert::{
    CertificateTemplate, Criticality, Profile, Serial, Subject, Validity, pem_block,
};
use super::facts::{AlbatrossExtension, CommonName, DistinguishedName, SignatureAlgorithm};
use super::keys::{PrivateKey, PublicKey};
use super::verify::{SignatureError, verify_signature};
use super::{ALBATROSS_OID, ALBATROSS_OID_ARCS, PEM_EXPANSION, PemProblem, PkiError, pem_or_der};
use crate::limits::MAX_CHAIN_SIZE;

/// PEM label of a PKCS#10 request.
pub const CSR_PEM: &str = "CERTIFICATE REQUEST";

/// PEM label some tools use for requests.
pub const CSR_PEM_LEGACY: &str = "NEW CERTIFICATE REQUEST";

/// Largest CSR read: a request for a create command carries the whole (compressed)
/// unikernel image and becomes a certificate that must fit in the TLS Certificate
/// message, so the same bound ([`MAX_CHAIN_SIZE`]) applies.
pub const MAX_CSR_SIZE: usize = MAX_CHAIN_SIZE;

/// A PKCS#10 request made here (DER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csr(Vec<u8>);

impl Csr {
    /// The DER octets.
    pub fn der(&self) -> &[u8] {
        &self.0
    }

    /// The request as PEM (`CERTIFICATE REQUEST`).
    pub fn pem(&self) -> String {
        pem_block(CSR_PEM, &self.0)
    }
}

/// Makes a request for `key` with subject CN `common_name` and, if `albatross` is given,
/// one extensionRequest attribute holding only the albatross extension (non-critical)
/// with that DER value.
pub fn create_csr(
    common_name: &str,
    albatross: Option<&[u8]>,
    key: &PrivateKey,
) -> Result<Csr, PkiError> {
    if common_name.is_empty() {
        return Err(PkiError::InvalidCommonName(common_name.to_owned()));
    }
    let mut params = rcgen::CertificateParams::default();
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, common_name);
    params.distinguished_name = name;
    if let Some(value) = albatross {
        params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            ALBATROSS_OID_ARCS,
            value.to_vec(),
        )];
    }
    let request = params
        .serialize_request(key.pair())
        .map_err(|e| PkiError::build("CSR", e))?;
    Ok(Csr(request.der().to_vec()))
}

/// A request as read (its signature not yet checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCsr {
    der: Vec<u8>,
    subject: DistinguishedName,
    common_name: CommonName,
    public_key: PublicKey,
    albatross: Option<AlbatrossExtension>,
    signature_algorithm: SignatureAlgorithm,
}

impl ParsedCsr {
    /// Parses a request, PEM (`CERTIFICATE REQUEST`) or DER, of at most
    /// [`MAX_CSR_SIZE`] octets. More than one extensionRequest attribute or albatross
    /// extension is refused.
    pub fn parse(input: &[u8]) -> Result<Self, PkiError> {
        if input.len() > MAX_CSR_SIZE.saturating_mul(PEM_EXPANSION) {
            return Err(PkiError::CsrTooLarge(input.len()));
        }
        let der = pem_or_der(input, &[CSR_PEM, CSR_PEM_LEGACY]).map_err(|p| match p {
            PemProblem::Invalid(e) => PkiError::InvalidPem(e),
            PemProblem::WrongLabel(_) => PkiError::NoPem(CSR_PEM),
        })?;
        if der.len() > MAX_CSR_SIZE {
            return Err(PkiError::CsrTooLarge(der.len()));
        }
        let invalid = |e: &dyn std::fmt::Display| PkiError::InvalidCsr(e.to_string());
        let (rest, csr) = X509CertificationRequest::from_der(&der).map_err(|e| invalid(&e))?;
        if !rest.is_empty() {
            return Err(invalid(&"trailing data"));
        }
        let info = &csr.certification_request_info;
        let mut requests = 0usize;
        let mut albatross = None;
        for attribute in info.iter_attributes() {
            if let ParsedCriAttribute::ExtensionRequest(request) = attribute.parsed_attribute() {
                requests += 1;
                for ext in &request.extensions {
                    if ext.oid.to_id_string() == ALBATROSS_OID {
                        if albatross.is_some() {
                            return Err(PkiError::CsrDuplicateExtension);
                        }
                        albatross = Some(AlbatrossExtension {
                            critical: ext.critical,
                            value: ext.value.to_vec(),
                        });
                    }
                }
            }
        }
        if requests > 1 {
            return Err(invalid(&"several extensionRequest attributes"));
        }
        let public_key =
            PublicKey::from_x509(&info.subject_pki).ok_or(PkiError::InvalidPublicKey)?;
        Ok(Self {
            subject: DistinguishedName::from_x509(&info.subject)?,
            common_name: super::facts::common_name(&info.subject)?,
            public_key,
            albatross,
            signature_algorithm: SignatureAlgorithm::from_x509(&csr.signature_algorithm),
            der: der.into_owned(),
        })
    }

    /// Checks the request's self-signature.
    pub fn verify(self) -> Result<VerifiedCsr, PkiError> {
        self.check_signature()?;
        Ok(VerifiedCsr(self))
    }

    /// Whether the request's self-signature verifies (as [`ParsedCsr::verify`], without
    /// consuming the request).
    pub fn check_signature(&self) -> Result<(), PkiError> {
        let (_, csr) = X509CertificationRequest::from_der(&self.der)
            .map_err(|e| PkiError::InvalidCsr(e.to_string()))?;
        let info = &csr.certification_request_info;
        verify_signature(
            &info.subject_pki,
            &csr.signature_algorithm,
            &csr.signature_value,
            info.raw,
        )
        .map_err(|e| match e {
            SignatureError::Unsupported => PkiError::InvalidCsr(format!(
                "unsupported signature algorithm {}",
                self.signature_algorithm
            )),
            SignatureError::Bad => PkiError::CsrBadSignature,
        })
    }

    /// The DER octets.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The subject name.
    pub fn subject(&self) -> &DistinguishedName {
        &self.subject
    }

    /// The subject's commonName(s).
    pub fn common_name(&self) -> &CommonName {
        &self.common_name
    }

    /// The public key to be certified.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// The albatross extension of the extensionRequest, if any.
    pub fn albatross(&self) -> Option<&AlbatrossExtension> {
        self.albatross.as_ref()
    }

    /// The algorithm of the self-signature.
    pub fn signature_algorithm(&self) -> &SignatureAlgorithm {
        &self.signature_algorithm
    }
}

/// A request whose self-signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCsr(ParsedCsr);

impl Deref for VerifiedCsr {
    type Target = ParsedCsr;

    fn deref(&self) -> &ParsedCsr {
        &self.0
    }
}

impl VerifiedCsr {
    /// The certificate name (`sign` step 4): the single CN of the subject; no CN gives
    /// "couldn't find name (no common name in CSR subject)".
    pub fn name(&self) -> Result<&str, PkiError> {
        match &self.0.common_name {
            CommonName::One(cn) => Ok(cn),
            CommonName::Absent => Err(PkiError::CsrWithoutCommonName),
            CommonName::Several(_) => Err(PkiError::CsrSeveralCommonNames),
        }
    }

    /// The template `sign` issues for this request: subject (byte for byte) and public
    /// key from the request, `profile` and `albatross` as the caller decided from the
    /// decoded command (spec §4.3: the signer re-encodes the extension).
    pub fn template<'a>(
        &'a self,
        profile: Profile,
        albatross: Option<&'a [u8]>,
        validity: Validity,
        serial: Serial,
    ) -> CertificateTemplate<'a> {
        CertificateTemplate {
            profile,
            subject: Subject::Der(self.0.subject.der()),
            public_key: &self.0.public_key,
            albatross,
            albatross_criticality: Criticality::NonCritical,
            alt_names: &[],
            validity,
            serial,
        }
    }
}
