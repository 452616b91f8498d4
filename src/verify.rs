//! Client chain verification with OpenSSL against the configured CA certificates.
//!
//! The TLS acceptor lets OpenSSL verify the client's chain during the handshake (with
//! [`TrustAnchors::store`]); [`from_ssl`] then turns the verified path into a
//! [`VerifiedChain`]. [`TrustAnchors::verify`] runs the same verification offline, at a
//! given time, for the executor's re-verification and for tests. These are the only ways
//! to obtain a [`VerifiedChain`].

use openssl::ssl::SslRef;
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyParam;
use openssl::x509::{X509, X509PurposeId, X509StoreContext};

use crate::chain::VerifiedChain;
use crate::limits::MAX_CHAIN_LEN;
use crate::pki::Certificate;

/// Largest CA file accepted (a few CA certificates in PEM).
pub const MAX_CA_FILE_SIZE: usize = 1024 * 1024;

/// Errors loading trust anchors or verifying a chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The CA file holds no certificate.
    #[error("no CA certificate found")]
    NoAnchor,
    /// The CA file is not PEM certificates, or a certificate is not a CA.
    #[error("bad CA certificate: {0}")]
    BadAnchor(String),
    /// The chain was empty.
    #[error("no client certificate")]
    Empty,
    /// OpenSSL refused the chain.
    #[error("certificate verification failed: {0}")]
    Rejected(String),
    /// An OpenSSL call failed.
    #[error("openssl: {0}")]
    OpenSsl(String),
}

fn ossl(e: openssl::error::ErrorStack) -> VerifyError {
    VerifyError::OpenSsl(e.to_string())
}

/// The CA certificates client chains are verified against (petrel accepts several;
/// albatross exactly one).
#[derive(Clone)]
pub struct TrustAnchors {
    certs: Vec<X509>,
}

impl std::fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustAnchors")
            .field("count", &self.certs.len())
            .finish()
    }
}

impl TrustAnchors {
    /// Reads one or more PEM certificates; each must be a CA certificate.
    pub fn from_pem(pem: &[u8]) -> Result<Self, VerifyError> {
        if pem.len() > MAX_CA_FILE_SIZE {
            return Err(VerifyError::BadAnchor(format!(
                "CA file larger than {MAX_CA_FILE_SIZE} octets"
            )));
        }
        let certs = X509::stack_from_pem(pem).map_err(|e| VerifyError::BadAnchor(e.to_string()))?;
        if certs.is_empty() {
            return Err(VerifyError::NoAnchor);
        }
        for cert in &certs {
            let der = cert.to_der().map_err(ossl)?;
            let facts = Certificate::from_der(der)
                .facts()
                .map_err(|e| VerifyError::BadAnchor(e.to_string()))?;
            if !facts.basic_constraints.is_some_and(|bc| bc.ca) {
                return Err(VerifyError::BadAnchor(format!(
                    "{} is not a CA certificate",
                    facts.subject
                )));
            }
        }
        Ok(Self { certs })
    }

    /// The anchors as DER certificates.
    pub fn certificates(&self) -> Vec<Certificate> {
        self.certs
            .iter()
            .filter_map(|c| c.to_der().ok())
            .map(Certificate::from_der)
            .collect()
    }

    /// The anchors' subject names, for the TLS CertificateRequest's CA list.
    pub fn x509(&self) -> &[X509] {
        &self.certs
    }

    /// An OpenSSL store for client verification: the anchors, the SSL-client purpose,
    /// and a depth that admits chains shorter than [`MAX_CHAIN_LEN`] (neither the leaf
    /// nor the anchor counts against OpenSSL's depth). With `now`, verification happens
    /// at that time (Unix seconds) instead of the current time.
    pub fn store(&self, now: Option<i64>) -> Result<X509Store, VerifyError> {
        let mut builder = X509StoreBuilder::new().map_err(ossl)?;
        for cert in &self.certs {
            builder.add_cert(cert.clone()).map_err(ossl)?;
        }
        let mut param = X509VerifyParam::new().map_err(ossl)?;
        param.set_depth(verify_depth());
        param.set_purpose(X509PurposeId::SSL_CLIENT).map_err(ossl)?;
        if let Some(now) = now {
            param.set_time(now);
        }
        builder.set_param(&param).map_err(ossl)?;
        Ok(builder.build())
    }

    /// Verifies `chain` (leaf first, as a client would send it) at `now` (Unix seconds).
    pub fn verify(&self, chain: &[Certificate], now: i64) -> Result<VerifiedChain, VerifyError> {
        let (leaf, rest) = chain.split_first().ok_or(VerifyError::Empty)?;
        let store = self.store(Some(now))?;
        let leaf = X509::from_der(leaf.der()).map_err(|e| VerifyError::Rejected(e.to_string()))?;
        let mut untrusted = Stack::new().map_err(ossl)?;
        for cert in rest {
            let cert =
                X509::from_der(cert.der()).map_err(|e| VerifyError::Rejected(e.to_string()))?;
            untrusted.push(cert).map_err(ossl)?;
        }
        let mut ctx = X509StoreContext::new().map_err(ossl)?;
        let path = ctx
            .init(&store, &leaf, &untrusted, |ctx| {
                if ctx.verify_cert()? {
                    Ok(Ok(ctx.chain().map(to_certificates).unwrap_or_default()))
                } else {
                    Ok(Err(ctx.error().error_string().to_owned()))
                }
            })
            .map_err(ossl)?
            .map_err(VerifyError::Rejected)?;
        let anchor_sent = path.last().is_some_and(|anchor| chain.contains(anchor));
        VerifiedChain::from_verified_path(path, anchor_sent).ok_or(VerifyError::Empty)
    }
}

/// OpenSSL's verify depth for [`MAX_CHAIN_LEN`]: the number of intermediates allowed.
pub fn verify_depth() -> i32 {
    i32::try_from(MAX_CHAIN_LEN.saturating_sub(2)).unwrap_or(8)
}

fn to_certificates(stack: &openssl::stack::StackRef<X509>) -> Vec<Certificate> {
    stack
        .iter()
        .filter_map(|c| c.to_der().ok())
        .map(Certificate::from_der)
        .collect()
}

/// The chain OpenSSL verified during the handshake on `ssl` (server side), or `None` if
/// the peer presented no certificate or verification did not produce a path.
pub fn from_ssl(ssl: &SslRef) -> Option<VerifiedChain> {
    let path = to_certificates(ssl.verified_chain()?);
    let leaf = ssl.peer_certificate()?.to_der().ok()?;
    if path.first().map(Certificate::der) != Some(leaf.as_slice()) {
        return None;
    }
    // On the server side the peer chain holds what the client sent after its leaf.
    let sent: Vec<Certificate> = ssl
        .peer_cert_chain()
        .map(to_certificates)
        .unwrap_or_default();
    let anchor_sent = path.last().is_some_and(|anchor| sent.contains(anchor));
    VerifiedChain::from_verified_path(path, anchor_sent)
}
