//! Private and public keys: generation (Ed25519, ECDSA P-256/P-384 with ring, RSA with
//! OpenSSL), PEM PKCS#8 files, and the public-key facts certificates are built from.
//!
//! Key material never appears in `Debug` output or error texts.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;

use serde::{Serialize, Serializer};
use sha1::{Digest, Sha1};
use sha2::Sha256;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey as X509PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::PkiError;

/// PEM label of a PKCS#8 private key.
pub const PRIVATE_KEY_PEM: &str = "PRIVATE KEY";

/// Mode of a private key file: readable and writable by its owner only.
pub const KEY_FILE_MODE: u32 = 0o600;

/// Largest private key file read (an RSA 8192 PKCS#8 PEM is about 6.5 KiB).
pub const MAX_KEY_FILE_SIZE: u64 = 64 * 1024;

const OID_ED25519: &str = "1.3.101.112";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_P521: &str = "1.3.132.0.35";
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";

/// A key type petrel can generate (albatross-client's `--key-type`, without `p521`, which
/// ring cannot sign with).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// Ed25519 (the default, as in albatross-client).
    #[default]
    Ed25519,
    /// ECDSA on NIST P-256, signing with SHA-256.
    P256,
    /// ECDSA on NIST P-384, signing with SHA-384.
    P384,
    /// RSA with a 2048-bit modulus, signing with PKCS#1 v1.5 and SHA-256.
    Rsa2048,
    /// RSA with a 4096-bit modulus, signing with PKCS#1 v1.5 and SHA-256.
    Rsa4096,
}

impl KeyType {
    /// albatross-client's name of the key type.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ed25519 => "ed25519",
            Self::P256 => "p256",
            Self::P384 => "p384",
            Self::Rsa2048 => "rsa2048",
            Self::Rsa4096 => "rsa4096",
        }
    }
}

impl FromStr for KeyType {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, PkiError> {
        match s {
            "ed25519" => Ok(Self::Ed25519),
            "p256" => Ok(Self::P256),
            "p384" => Ok(Self::P384),
            "rsa2048" => Ok(Self::Rsa2048),
            "rsa4096" => Ok(Self::Rsa4096),
            other => Err(PkiError::UnsupportedKeyType(other.to_owned())),
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The algorithm of a public key, as found in a SubjectPublicKeyInfo.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// Ed25519.
    Ed25519,
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// ECDSA on P-521 (read, verified by others, but not generated or used to sign here).
    EcdsaP521,
    /// RSA with a modulus of `bits` bits.
    Rsa {
        /// Modulus length in bits.
        bits: usize,
    },
    /// Anything else: the dotted OID of the algorithm (and curve, for other EC keys).
    Other(String),
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ed25519 => f.write_str("ed25519"),
            Self::EcdsaP256 => f.write_str("p256"),
            Self::EcdsaP384 => f.write_str("p384"),
            Self::EcdsaP521 => f.write_str("p521"),
            Self::Rsa { bits } => write!(f, "rsa{bits}"),
            Self::Other(oid) => f.write_str(oid),
        }
    }
}

impl Serialize for KeyAlgorithm {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A public key: the DER SubjectPublicKeyInfo it came in, its algorithm and key octets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    spki: Vec<u8>,
    algorithm: KeyAlgorithm,
    key: Vec<u8>,
}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo (all of `der`); `None` if it is not one.
    pub fn from_spki_der(der: &[u8]) -> Option<Self> {
        match SubjectPublicKeyInfo::from_der(der) {
            Ok(([], spki)) => Self::from_x509(&spki),
            _ => None,
        }
    }

    /// The public key of a parsed SubjectPublicKeyInfo; `None` if an RSA key's
    /// RSAPublicKey does not parse.
    pub(crate) fn from_x509(spki: &SubjectPublicKeyInfo<'_>) -> Option<Self> {
        let oid = spki.algorithm.algorithm.to_id_string();
        let algorithm = match oid.as_str() {
            OID_ED25519 => KeyAlgorithm::Ed25519,
            OID_RSA_ENCRYPTION => match spki.parsed() {
                Ok(X509PublicKey::RSA(rsa)) => KeyAlgorithm::Rsa {
                    bits: rsa.key_size(),
                },
                _ => return None,
            },
            OID_EC_PUBLIC_KEY => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|c| c.to_id_string());
                match curve.as_deref() {
                    Some(OID_P256) => KeyAlgorithm::EcdsaP256,
                    Some(OID_P384) => KeyAlgorithm::EcdsaP384,
                    Some(OID_P521) => KeyAlgorithm::EcdsaP521,
                    Some(other) => KeyAlgorithm::Other(format!("{oid}/{other}")),
                    None => KeyAlgorithm::Other(oid),
                }
            }
            _ => KeyAlgorithm::Other(oid),
        };
        Some(Self {
            spki: spki.raw.to_vec(),
            algorithm,
            key: spki.subject_public_key.data.to_vec(),
        })
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> &KeyAlgorithm {
        &self.algorithm
    }

    /// The subjectPublicKey octets: the raw 32 octets for Ed25519, the EC point for
    /// ECDSA, the DER RSAPublicKey for RSA.
    pub fn key_octets(&self) -> &[u8] {
        &self.key
    }

    /// The key identifier of RFC 5280 §4.2.1.2 method 1 (SHA-1 over the subjectPublicKey
    /// octets), as albatross puts it in SKI and AKI.
    pub fn key_id(&self) -> [u8; 20] {
        Sha1::digest(&self.key).into()
    }

    /// SHA-256 of the whole DER SubjectPublicKeyInfo (the key under which petrel stores
    /// a CA's CRL).
    pub fn spki_sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.spki).into()
    }

    /// Whether `other` is the same key (same algorithm and key octets), however its
    /// SubjectPublicKeyInfo was encoded.
    pub fn same_key(&self, other: &PublicKey) -> bool {
        self.algorithm == other.algorithm && self.key == other.key
    }
}

/// A private key with its public key. `Debug` never shows the key material.
pub struct PrivateKey {
    pair: rcgen::KeyPair,
    public: PublicKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.public.algorithm)
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Generates a fresh key of type `key_type` (RSA with OpenSSL, the others with ring).
    pub fn generate(key_type: KeyType) -> Result<Self, PkiError> {
        let pair = match key_type {
            KeyType::Ed25519 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519),
            KeyType::P256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyType::P384 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyType::Rsa2048 => return Self::generate_rsa(2048),
            KeyType::Rsa4096 => return Self::generate_rsa(4096),
        }
        .map_err(|e| PkiError::KeyGeneration(e.to_string()))?;
        Self::from_pair(pair)
    }

    fn generate_rsa(bits: u32) -> Result<Self, PkiError> {
        let generation = |e: openssl::error::ErrorStack| PkiError::KeyGeneration(e.to_string());
        let rsa = openssl::rsa::Rsa::generate(bits).map_err(generation)?;
        let pkey = openssl::pkey::PKey::from_rsa(rsa).map_err(generation)?;
        let pkcs8 = pkey.private_key_to_pkcs8().map_err(generation)?;
        Self::from_pkcs8_der(&pkcs8)
    }

    /// Reads a PEM PKCS#8 private key (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem(pem_text: &str) -> Result<Self, PkiError> {
        let block = pem::parse(pem_text).map_err(|e| PkiError::InvalidKey(e.to_string()))?;
        if block.tag() != PRIVATE_KEY_PEM {
            return Err(PkiError::InvalidKey(format!(
                "expected a PEM {PRIVATE_KEY_PEM:?} (PKCS#8) block, found {:?}",
                block.tag()
            )));
        }
        Self::from_pkcs8_der(block.contents())
    }

    /// Reads a DER PKCS#8 private key of a supported type (Ed25519, ECDSA P-256/P-384,
    /// RSA 2048–8192 bits).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, PkiError> {
        let pair = rcgen::KeyPair::try_from(der).map_err(|_| {
            PkiError::InvalidKey(
                "not a PKCS#8 Ed25519, ECDSA P-256/P-384 or RSA (2048-8192 bits) key".to_owned(),
            )
        })?;
        Self::from_pair(pair)
    }

    fn from_pair(pair: rcgen::KeyPair) -> Result<Self, PkiError> {
        let spki = rcgen::PublicKeyData::subject_public_key_info(&pair);
        let public = PublicKey::from_spki_der(&spki).ok_or(PkiError::InvalidPublicKey)?;
        Ok(Self { pair, public })
    }

    /// The key as PEM PKCS#8, in the form OpenSSL writes (for Ed25519 the RFC 8410
    /// version-1 structure without the public key: ring produces version 2, which the
    /// OpenSSL 3.0 command line cannot read). Falls back to ring's form if OpenSSL
    /// cannot re-encode the key.
    pub fn to_pem(&self) -> String {
        openssl::pkey::PKey::private_key_from_pkcs8(&self.pair.serialize_der())
            .and_then(|key| key.private_key_to_pem_pkcs8())
            .ok()
            .and_then(|pem| String::from_utf8(pem).ok())
            .unwrap_or_else(|| self.pair.serialize_pem())
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> &KeyAlgorithm {
        &self.public.algorithm
    }

    /// The rcgen key pair (signs with the key's own algorithm: Ed25519, ECDSA with the
    /// curve's hash, RSA PKCS#1 v1.5 with SHA-256).
    pub(crate) fn pair(&self) -> &rcgen::KeyPair {
        &self.pair
    }

    /// A stand-in that lets rcgen lay out a structure for this key without signing it;
    /// the structure is signed after its issuer is put in (see the module docs).
    pub(crate) fn unsigned(&self) -> Unsigned<'_> {
        Unsigned(&self.pair)
    }

    /// Signs `message` with this key.
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, PkiError> {
        rcgen::SigningKey::sign(&self.pair, message).map_err(|e| PkiError::Signing(e.to_string()))
    }
}

/// An rcgen signer that produces an empty signature (see [`PrivateKey::unsigned`]).
pub(crate) struct Unsigned<'a>(&'a rcgen::KeyPair);

impl rcgen::PublicKeyData for Unsigned<'_> {
    fn der_bytes(&self) -> &[u8] {
        rcgen::PublicKeyData::der_bytes(self.0)
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        rcgen::PublicKeyData::algorithm(self.0)
    }
}

impl rcgen::SigningKey for Unsigned<'_> {
    fn sign(&self, _message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(Vec::new())
    }
}

/// Where the key returned by [`load_or_generate_key_file`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// The file existed and was reused (as albatross-client does).
    Loaded,
    /// The file did not exist; a new key was generated and written.
    Generated,
}

/// Reads a PEM PKCS#8 private key file.
pub fn load_key_file(path: &Path) -> Result<PrivateKey, PkiError> {
    let size = std::fs::metadata(path)
        .map_err(|e| PkiError::io(path, e))?
        .len();
    if size > MAX_KEY_FILE_SIZE {
        return Err(PkiError::InvalidKey(format!(
            "{}: file too large ({size} octets)",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| PkiError::io(path, e))?;
    PrivateKey::from_pem(&text)
}

/// Writes `key` as PEM PKCS#8 to a new file with mode 0600. An existing file is never
/// overwritten (the error is `AlreadyExists`).
pub fn write_key_file(path: &Path, key: &PrivateKey) -> Result<(), PkiError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(KEY_FILE_MODE)
        .open(path)
        .map_err(|e| PkiError::io(path, e))?;
    let written = file
        .write_all(key.to_pem().as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        // Do not leave a truncated key behind; the file is ours, we just created it.
        let _ = std::fs::remove_file(path);
        return Err(PkiError::io(path, e));
    }
    Ok(())
}

/// Reuses the key in `path` if the file exists (whatever its type, as albatross-client
/// does), otherwise generates a key of `key_type` and writes it there (mode 0600).
pub fn load_or_generate_key_file(
    path: &Path,
    key_type: KeyType,
) -> Result<(PrivateKey, KeyOrigin), PkiError> {
    if path.exists() {
        return Ok((load_key_file(path)?, KeyOrigin::Loaded));
    }
    let key = PrivateKey::generate(key_type)?;
    match write_key_file(path, &key) {
        Ok(()) => Ok((key, KeyOrigin::Generated)),
        // Someone else created it in the meantime: use theirs.
        Err(PkiError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok((load_key_file(path)?, KeyOrigin::Loaded))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_type_names_round_trip() {
        for t in [
            KeyType::Ed25519,
            KeyType::P256,
            KeyType::P384,
            KeyType::Rsa2048,
            KeyType::Rsa4096,
        ] {
            assert_eq!(t.name().parse::<KeyType>().unwrap(), t);
        }
        assert_eq!(
            "p521".parse::<KeyType>().unwrap_err().to_string(),
            "unsupported key type \"p521\" (expected ed25519, p256, p384, rsa2048 or rsa4096)"
        );
        assert_eq!(KeyType::default(), KeyType::Ed25519);
    }

    #[test]
    fn generated_keys_round_trip_through_pem() {
        for (t, alg) in [
            (KeyType::Ed25519, KeyAlgorithm::Ed25519),
            (KeyType::P256, KeyAlgorithm::EcdsaP256),
            (KeyType::P384, KeyAlgorithm::EcdsaP384),
        ] {
            let key = PrivateKey::generate(t).unwrap();
            assert_eq!(key.algorithm(), &alg);
            let again = PrivateKey::from_pem(&key.to_pem()).unwrap();
            assert_eq!(again.public_key(), key.public_key());
        }
    }

    #[test]
    fn debug_hides_key_material() {
        let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
        assert_eq!(format!("{key:?}"), "PrivateKey { algorithm: Ed25519, .. }");
    }

    #[test]
    fn refuses_other_pem_blocks() {
        let text = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(
            PrivateKey::from_pem(text).unwrap_err().to_string(),
            "invalid private key: expected a PEM \"PRIVATE KEY\" (PKCS#8) block, found \"RSA PRIVATE KEY\""
        );
    }
}
