//! Signature verification of CSRs and CRLs: Ed25519, ECDSA P-256/P-384 and RSA PKCS#1
//! v1.5 with SHA-2 through ring (x509-parser's `verify`), RSASSA-PSS through OpenSSL,
//! because ring only verifies PSS whose salt is as long as the hash, while OpenSSL's own
//! tools sign with the longest salt by default. SHA-1 is refused.

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Verifier};
use x509_parser::asn1_rs::BitString;
use x509_parser::error::X509Error;
use x509_parser::signature_algorithm::RsaSsaPssParams;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

use super::keys::{KeyAlgorithm, PublicKey};

/// Smallest and largest RSA modulus accepted for a signature (ring's bounds, applied to
/// PSS too so that every RSA signature meets the same rule).
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

const OID_RSASSA_PSS: &str = "1.2.840.113549.1.1.10";
const OID_SHA1_WITH_RSA: [&str; 2] = ["1.2.840.113549.1.1.5", "1.3.14.3.2.29"];
const OID_MGF1: &str = "1.2.840.113549.1.1.8";

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignatureError {
    /// The algorithm (or its parameters, or the key) is not one petrel verifies.
    Unsupported,
    /// The signature does not verify.
    Bad,
}

/// Verifies `signature` over `message` with the key `spki` under `algorithm`.
pub(crate) fn verify_signature(
    spki: &SubjectPublicKeyInfo<'_>,
    algorithm: &AlgorithmIdentifier<'_>,
    signature: &BitString<'_>,
    message: &[u8],
) -> Result<(), SignatureError> {
    let oid = algorithm.algorithm.to_id_string();
    if OID_SHA1_WITH_RSA.contains(&oid.as_str()) {
        return Err(SignatureError::Unsupported);
    }
    if oid == OID_RSASSA_PSS {
        return verify_pss(spki, algorithm, &signature.data, message);
    }
    match x509_parser::verify::verify_signature(spki, algorithm, signature, message) {
        Ok(()) => Ok(()),
        Err(X509Error::SignatureUnsupportedAlgorithm) => Err(SignatureError::Unsupported),
        Err(_) => Err(SignatureError::Bad),
    }
}

fn verify_pss(
    spki: &SubjectPublicKeyInfo<'_>,
    algorithm: &AlgorithmIdentifier<'_>,
    signature: &[u8],
    message: &[u8],
) -> Result<(), SignatureError> {
    use SignatureError::Unsupported;
    match PublicKey::from_x509(spki).map(|k| k.algorithm().clone()) {
        Some(KeyAlgorithm::Rsa { bits }) if RSA_BITS.contains(&bits) => {}
        _ => return Err(Unsupported),
    }
    let params = algorithm
        .parameters
        .as_ref()
        .and_then(|p| RsaSsaPssParams::try_from(p).ok())
        .ok_or(Unsupported)?;
    let digest = sha2_digest(&params.hash_algorithm_oid().to_id_string()).ok_or(Unsupported)?;
    let mask = params.mask_gen_algorithm().map_err(|_| Unsupported)?;
    if mask.mgf.to_id_string() != OID_MGF1 || params.trailer_field() != 1 {
        return Err(Unsupported);
    }
    let mgf1_digest = sha2_digest(&mask.hash.to_id_string()).ok_or(Unsupported)?;
    let salt = i32::try_from(params.salt_length()).map_err(|_| Unsupported)?;

    let key = PKey::public_key_from_der(spki.raw).map_err(|_| Unsupported)?;
    let mut verifier = Verifier::new(digest, &key).map_err(|_| Unsupported)?;
    verifier
        .set_rsa_padding(Padding::PKCS1_PSS)
        .and_then(|()| verifier.set_rsa_pss_saltlen(RsaPssSaltlen::custom(salt)))
        .and_then(|()| verifier.set_rsa_mgf1_md(mgf1_digest))
        .map_err(|_| Unsupported)?;
    match verifier.verify_oneshot(signature, message) {
        Ok(true) => Ok(()),
        _ => Err(SignatureError::Bad),
    }
}

fn sha2_digest(oid: &str) -> Option<MessageDigest> {
    match oid {
        "2.16.840.1.101.3.4.2.1" => Some(MessageDigest::sha256()),
        "2.16.840.1.101.3.4.2.2" => Some(MessageDigest::sha384()),
        "2.16.840.1.101.3.4.2.3" => Some(MessageDigest::sha512()),
        _ => None,
    }
}
