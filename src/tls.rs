//! The server's TLS settings: an OpenSSL acceptor for TLS 1.3 with required client
//! certificates (`spec/tls-endpoint.md` §2, DESIGN.md "TLS stacks").
//!
//! - TLS 1.3 only (minimum = maximum), the library's default cipher suites and groups;
//! - the server presents the certificate chain of the CERT file (leaf first) and its key
//!   (PKCS#8 or the traditional RSA/EC PEM forms);
//! - a client certificate is required and verified during the handshake against the
//!   configured CA certificates ([`TrustAnchors::store`]: the SSL-client purpose, a verify
//!   depth that admits chains shorter than [`crate::limits::MAX_CHAIN_LEN`]); the
//!   CertificateRequest lists the anchors' subjects;
//! - a client Certificate message may be as large as `max_chain_size` (OpenSSL's
//!   `max_cert_list`; the default of 100 KiB cannot hold albatross-client's embedded
//!   images). OpenSSL refuses a larger message from its header, before buffering it;
//! - no session tickets and no session cache: one request per connection, a resumed
//!   session would skip client verification, and OpenSSL refuses to build a ticket around
//!   a large client certificate, which would break the handshake;
//! - an unhandled critical extension (such as a critical albatross extension) fails
//!   verification, so such a certificate is refused in the handshake.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openssl::pkey::PKey;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslRef,
    SslSessionCacheMode, SslVerifyMode, SslVersion,
};
use openssl::stack::Stack;
use openssl::x509::{X509, X509Name, X509StoreContextRef, X509VerifyResult};

use crate::pki::Certificate;
use crate::verify::{self, TrustAnchors, VerifyError};

/// Largest CERT or KEY file read (a server chain of a few certificates, or one key, in PEM).
pub const MAX_PEM_FILE_SIZE: u64 = 1024 * 1024;

/// OpenSSL's `SSL_CTRL_SET_MAX_CERT_LIST` (the `SSL_CTX_set_max_cert_list` macro), which
/// neither the `openssl` nor the `openssl-sys` crate wraps.
const SSL_CTRL_SET_MAX_CERT_LIST: libc::c_int = 51;

/// Errors setting up the acceptor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file is larger than [`MAX_PEM_FILE_SIZE`].
    #[error("{0}: file larger than {MAX_PEM_FILE_SIZE} octets")]
    TooLarge(PathBuf),
    /// The server certificate file holds no usable certificate.
    #[error("server certificate: {0}")]
    Certificate(String),
    /// The server key does not parse.
    #[error("server key: {0}")]
    Key(String),
    /// The key does not belong to the certificate.
    #[error("server key does not match the server certificate")]
    KeyMismatch,
    /// The CA certificates are not usable.
    #[error(transparent)]
    Anchors(#[from] VerifyError),
    /// An OpenSSL call failed.
    #[error("openssl: {0}")]
    OpenSsl(String),
}

fn ossl(e: openssl::error::ErrorStack) -> TlsError {
    TlsError::OpenSsl(e.to_string())
}

/// The server side of TLS: a configured OpenSSL context that makes one [`Ssl`] per
/// connection.
#[derive(Clone)]
pub struct Acceptor {
    context: SslContext,
    max_chain_size: usize,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("max_chain_size", &self.max_chain_size)
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    /// An acceptor presenting the chain in `cert_pem` (leaf first) with `key_pem`,
    /// verifying clients against `anchors` and accepting client Certificate messages of up
    /// to `max_chain_size` octets.
    pub fn new(
        anchors: &TrustAnchors,
        cert_pem: &[u8],
        key_pem: &[u8],
        max_chain_size: usize,
    ) -> Result<Self, TlsError> {
        let certs =
            X509::stack_from_pem(cert_pem).map_err(|e| TlsError::Certificate(first_reason(&e)))?;
        let mut certs = certs.into_iter();
        let leaf = certs
            .next()
            .ok_or_else(|| TlsError::Certificate("no certificate found".to_owned()))?;
        let key =
            PKey::private_key_from_pem(key_pem).map_err(|e| TlsError::Key(first_reason(&e)))?;

        let mut builder = SslContextBuilder::new(SslMethod::tls_server()).map_err(ossl)?;
        builder
            .set_min_proto_version(Some(SslVersion::TLS1_3))
            .map_err(ossl)?;
        builder
            .set_max_proto_version(Some(SslVersion::TLS1_3))
            .map_err(ossl)?;
        builder.set_certificate(&leaf).map_err(ossl)?;
        for cert in certs {
            builder.add_extra_chain_cert(cert).map_err(ossl)?;
        }
        let mismatch = |e: openssl::error::ErrorStack| {
            if first_reason(&e) == "key values mismatch" {
                TlsError::KeyMismatch
            } else {
                TlsError::Key(first_reason(&e))
            }
        };
        builder.set_private_key(&key).map_err(mismatch)?;
        builder.check_private_key().map_err(mismatch)?;

        builder.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        builder.set_cert_store(anchors.store(None)?);
        builder.set_verify_depth(u32::try_from(verify::verify_depth()).unwrap_or(0));
        let mut names = Stack::<X509Name>::new().map_err(ossl)?;
        for anchor in anchors.x509() {
            names
                .push(anchor.subject_name().to_owned().map_err(ossl)?)
                .map_err(ossl)?;
        }
        builder.set_client_ca_list(names);
        set_max_cert_list(&mut builder, max_chain_size);

        builder.set_num_tickets(0).map_err(ossl)?;
        builder.set_session_cache_mode(SslSessionCacheMode::OFF);
        builder.set_options(
            SslOptions::NO_TICKET
                | SslOptions::NO_RENEGOTIATION
                | SslOptions::IGNORE_UNEXPECTED_EOF,
        );
        // Idle connections do not keep read/write buffers.
        builder.set_mode(SslMode::RELEASE_BUFFERS);
        Ok(Self {
            context: builder.build(),
            max_chain_size,
        })
    }

    /// [`Acceptor::new`] with the chain and key read from files.
    pub fn from_files(
        anchors: &TrustAnchors,
        cert: &Path,
        key: &Path,
        max_chain_size: usize,
    ) -> Result<Self, TlsError> {
        let cert_pem = read_pem_file(cert)?;
        let key_pem = read_pem_file(key)?;
        Self::new(anchors, &cert_pem, &key_pem, max_chain_size)
    }

    /// A new server-side connection state, and where it records a refused client chain.
    pub fn ssl(&self) -> Result<(Ssl, RefusedChain), TlsError> {
        let mut ssl = Ssl::new(&self.context).map_err(ossl)?;
        ssl.set_accept_state();
        let refused = RefusedChain::default();
        let recorder = refused.clone();
        // The callback leaves OpenSSL's verdict unchanged; it only notes what was refused.
        ssl.set_verify_callback(
            SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
            move |ok, ctx| {
                if !ok {
                    recorder.record(ctx);
                }
                ok
            },
        );
        Ok((ssl, refused))
    }

    /// The largest client Certificate message accepted.
    pub fn max_chain_size(&self) -> usize {
        self.max_chain_size
    }
}

/// Sets OpenSSL's `max_cert_list` (the largest Certificate message accepted).
fn set_max_cert_list(builder: &mut SslContextBuilder, max: usize) {
    let max = libc::c_long::try_from(max).unwrap_or(libc::c_long::MAX);
    // SAFETY: `builder.as_ptr()` is a valid SSL_CTX for the duration of the call;
    // SSL_CTRL_SET_MAX_CERT_LIST takes its value in `larg` and no pointer argument.
    unsafe {
        openssl_sys::SSL_CTX_ctrl(
            builder.as_ptr(),
            SSL_CTRL_SET_MAX_CERT_LIST,
            max,
            std::ptr::null_mut(),
        );
    }
}

/// Reads a PEM file of at most [`MAX_PEM_FILE_SIZE`] octets.
pub fn read_pem_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read = |source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read)?;
    let mut buf = Vec::new();
    file.take(MAX_PEM_FILE_SIZE + 1)
        .read_to_end(&mut buf)
        .map_err(read)?;
    if u64::try_from(buf.len()).unwrap_or(u64::MAX) > MAX_PEM_FILE_SIZE {
        return Err(TlsError::TooLarge(path.to_path_buf()));
    }
    Ok(buf)
}

/// Why a handshake failed, in one short line: the certificate verification error if
/// verification failed, otherwise OpenSSL's reason ("excessive message size", "peer did
/// not return a certificate", …), the I/O error, or "connection closed".
pub fn handshake_error_text(error: &openssl::ssl::Error, ssl: &SslRef) -> String {
    let verify = ssl.verify_result();
    if verify != X509VerifyResult::OK {
        return format!("certificate verify failed: {}", verify.error_string());
    }
    if let Some(reason) = error
        .ssl_error()
        .and_then(|stack| stack.errors().first())
        .and_then(|e| e.reason())
    {
        return reason.to_owned();
    }
    if let Some(io) = error.io_error() {
        return io.to_string();
    }
    match error.code() {
        ErrorCode::SYSCALL | ErrorCode::ZERO_RETURN => "connection closed".to_owned(),
        code => format!("TLS error {}", code.as_raw()),
    }
}

/// Why a handshake was refused, as the metrics count it (`petrel_handshakes_total`'s
/// `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeRefusal {
    /// The chain does not lead to a configured CA (also a self-signed leaf).
    UnknownCa,
    /// A certificate has expired.
    Expired,
    /// A certificate is not valid yet.
    NotYetValid,
    /// A certificate has a critical extension OpenSSL does not handle (a critical
    /// albatross extension).
    CriticalExtension,
    /// A signature does not verify.
    BadSignature,
    /// The chain is longer than the verify depth.
    ChainTooLong,
    /// Any other certificate verification failure.
    BadCertificate,
    /// The client sent no certificate.
    NoCertificate,
    /// The client's Certificate message exceeded `--max-chain-size`.
    TooLarge,
    /// The handshake did not finish within the handshake timeout.
    Timeout,
    /// No handshake slot came free within the queue timeout.
    NoSlot,
    /// The connection closed or failed during the handshake.
    Closed,
    /// Any other TLS failure (protocol version, cipher suites, …).
    Protocol,
}

impl HandshakeRefusal {
    /// Every reason, in the order the metrics list them.
    pub const ALL: [Self; 13] = [
        Self::UnknownCa,
        Self::Expired,
        Self::NotYetValid,
        Self::CriticalExtension,
        Self::BadSignature,
        Self::ChainTooLong,
        Self::BadCertificate,
        Self::NoCertificate,
        Self::TooLarge,
        Self::Timeout,
        Self::NoSlot,
        Self::Closed,
        Self::Protocol,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::UnknownCa => "unknown_ca",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::CriticalExtension => "critical_extension",
            Self::BadSignature => "bad_signature",
            Self::ChainTooLong => "chain_too_long",
            Self::BadCertificate => "bad_certificate",
            Self::NoCertificate => "no_certificate",
            Self::TooLarge => "too_large",
            Self::Timeout => "timeout",
            Self::NoSlot => "no_slot",
            Self::Closed => "closed",
            Self::Protocol => "protocol",
        }
    }
}

/// Classifies a failed handshake: the certificate verification error if verification
/// failed, else OpenSSL's reason, else a closed connection.
pub fn handshake_refusal(error: &openssl::ssl::Error, ssl: &SslRef) -> HandshakeRefusal {
    let verify = ssl.verify_result();
    if verify != X509VerifyResult::OK {
        return verify_refusal(verify.as_raw());
    }
    let reason = error
        .ssl_error()
        .and_then(|stack| stack.errors().first())
        .and_then(|e| e.reason());
    match reason {
        Some("peer did not return a certificate") => HandshakeRefusal::NoCertificate,
        Some("excessive message size") => HandshakeRefusal::TooLarge,
        Some(_) => HandshakeRefusal::Protocol,
        None => HandshakeRefusal::Closed,
    }
}

/// The refusal of an OpenSSL certificate verification error code (`X509_V_ERR_*`).
pub fn verify_refusal(code: std::ffi::c_int) -> HandshakeRefusal {
    use openssl_sys as sys;
    match code {
        sys::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
        | sys::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        | sys::X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
        | sys::X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
        | sys::X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN => HandshakeRefusal::UnknownCa,
        sys::X509_V_ERR_CERT_HAS_EXPIRED => HandshakeRefusal::Expired,
        sys::X509_V_ERR_CERT_NOT_YET_VALID => HandshakeRefusal::NotYetValid,
        sys::X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION => HandshakeRefusal::CriticalExtension,
        sys::X509_V_ERR_CERT_SIGNATURE_FAILURE => HandshakeRefusal::BadSignature,
        sys::X509_V_ERR_CERT_CHAIN_TOO_LONG => HandshakeRefusal::ChainTooLong,
        _ => HandshakeRefusal::BadCertificate,
    }
}

/// What the client presented in a handshake whose certificate verification failed: the
/// chain as far as OpenSSL built it (leaf first), recorded by the verify callback because
/// OpenSSL keeps no peer certificate after a failed verification. For logs and the audit
/// log; empty when verification did not fail.
#[derive(Debug, Clone, Default)]
pub struct RefusedChain(Arc<Mutex<Vec<Certificate>>>);

impl RefusedChain {
    /// The recorded chain.
    pub fn certificates(&self) -> Vec<Certificate> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(&self, ctx: &X509StoreContextRef) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !slot.is_empty() {
            return;
        }
        let built: Vec<Certificate> = ctx
            .chain()
            .map(|chain| {
                chain
                    .iter()
                    .filter_map(|c| c.to_der().ok())
                    .map(Certificate::from_der)
                    .collect()
            })
            .unwrap_or_default();
        *slot = if built.is_empty() {
            ctx.current_cert()
                .and_then(|c| c.to_der().ok())
                .map(Certificate::from_der)
                .into_iter()
                .collect()
        } else {
            built
        };
    }
}

fn first_reason(stack: &openssl::error::ErrorStack) -> String {
    stack
        .errors()
        .first()
        .and_then(|e| e.reason())
        .map_or_else(|| stack.to_string(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::x509::X509Builder;
    use openssl::x509::extension::BasicConstraints;

    use super::*;

    /// A self-signed P-256 CA made with OpenSSL, and its key in the traditional
    /// `EC PRIVATE KEY` form.
    fn openssl_ca(cn: &str) -> (Vec<u8>, Vec<u8>) {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let ec = EcKey::generate(&group).unwrap();
        let traditional = ec.private_key_to_pem().unwrap();
        let key = PKey::from_ec_key(ec).unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut builder = X509Builder::new().unwrap();
        builder.set_version(2).unwrap();
        let serial = BigNum::from_u32(7).unwrap().to_asn1_integer().unwrap();
        builder.set_serial_number(&serial).unwrap();
        builder.set_subject_name(&name).unwrap();
        builder.set_issuer_name(&name).unwrap();
        builder.set_pubkey(&key).unwrap();
        builder
            .set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        builder
            .set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        builder
            .append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        builder.sign(&key, MessageDigest::sha256()).unwrap();
        (builder.build().to_pem().unwrap(), traditional)
    }

    #[test]
    fn accepts_traditional_keys_and_refuses_mismatches() {
        let (cert, key) = openssl_ca("server");
        let (other_cert, other_key) = openssl_ca("other");
        assert!(key.starts_with(b"-----BEGIN EC PRIVATE KEY-----"));
        let anchors = TrustAnchors::from_pem(&other_cert).unwrap();
        let acceptor = Acceptor::new(&anchors, &cert, &key, 4096).unwrap();
        assert_eq!(acceptor.max_chain_size(), 4096);
        assert!(acceptor.ssl().is_ok());

        let err = Acceptor::new(&anchors, &cert, &other_key, 4096).unwrap_err();
        assert_eq!(
            err.to_string(),
            "server key does not match the server certificate"
        );
        let err = Acceptor::new(&anchors, b"", &key, 4096).unwrap_err();
        assert_eq!(err.to_string(), "server certificate: no certificate found");
        let err = Acceptor::new(&anchors, &cert, b"garbage", 4096).unwrap_err();
        assert!(
            matches!(err, TlsError::Key(_)),
            "{err:?} should be a key error"
        );
    }

    #[test]
    fn pem_files_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.pem");
        let size = usize::try_from(MAX_PEM_FILE_SIZE).unwrap() + 1;
        std::fs::write(&big, vec![b'A'; size]).unwrap();
        assert_eq!(
            read_pem_file(&big).unwrap_err().to_string(),
            format!("{}: file larger than 1048576 octets", big.display())
        );
        let missing = dir.path().join("missing.pem");
        assert_eq!(
            read_pem_file(&missing).unwrap_err().to_string(),
            format!(
                "{}: No such file or directory (os error 2)",
                missing.display()
            )
        );
    }

    #[test]
    fn verification_errors_as_refusal_reasons() {
        use openssl_sys as sys;
        let cases = [
            (
                sys::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
                "unknown_ca",
            ),
            (sys::X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN, "unknown_ca"),
            (sys::X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, "unknown_ca"),
            (sys::X509_V_ERR_CERT_HAS_EXPIRED, "expired"),
            (sys::X509_V_ERR_CERT_NOT_YET_VALID, "not_yet_valid"),
            (
                sys::X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION,
                "critical_extension",
            ),
            (sys::X509_V_ERR_CERT_SIGNATURE_FAILURE, "bad_signature"),
            (sys::X509_V_ERR_CERT_CHAIN_TOO_LONG, "chain_too_long"),
            (sys::X509_V_ERR_INVALID_PURPOSE, "bad_certificate"),
        ];
        for (code, label) in cases {
            assert_eq!(verify_refusal(code).label(), label, "{code}");
        }
        let labels: std::collections::BTreeSet<&str> =
            HandshakeRefusal::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), HandshakeRefusal::ALL.len());
    }
}
