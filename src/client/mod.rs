//! The `petrel` command-line client (`spec/tls-endpoint.md` §4–5): a small CA tool
//! ([`ca::generate`], [`ca::sign`]), certificate signing requests for every command
//! ([`csr::write_request`]), and remote commands over TLS 1.3 with rustls
//! ([`remote::run`]): a fresh key and a 300-second leaf carrying the command, the image or
//! block data streamed after the handshake, the replies read and printed; and
//! [`revoke::revoke`], which creates or extends a CA's CRL for `petrel revoke`.
//!
//! The binary `src/bin/petrel.rs` only parses the command line into the plain option
//! structs of this module and maps a [`ClientError`] to its [`Exit`] code; everything
//! else lives here so that it can be tested.
//!
//! Where petrel differs from albatross-client: the server's certificate must match the
//! destination's host name or address (Note T4), a server that closes the connection
//! without a final reply is an error (Note T1), path-only requests use the common name
//! `.` (Note T3), and images are streamed after the handshake instead of being embedded
//! in the certificate (`--embed-image` restores albatross-client's behaviour).

pub mod ca;
pub mod csr;
pub mod remote;
pub mod reply;
pub mod request;
pub mod revoke;
pub mod tls;
pub mod upload;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::pki::PkiError;
use crate::policy::{UsabilityError, WithinError};
use request::{ConfigPolicyError, RequestError};

/// The exit codes of albatross-client (`spec/tls-endpoint.md` §5), which petrel keeps so
/// that scripts written for albatross-client work unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exit {
    /// 0: the command succeeded.
    Success,
    /// 116: the certificate chain could not be validated locally against `--server-ca`.
    LocalChain,
    /// 117: the server answered with a `failure`.
    RemoteFailure,
    /// 119: the server rejected our certificate (a TLS alert).
    CertificateRejected,
    /// 120: the server's certificate could not be authenticated.
    ServerAuthentication,
    /// 121: reading or writing failed, or the server closed without a final reply.
    Communication,
    /// 122: no TCP connection could be made.
    Connect,
    /// 124: a command-line error (bad arguments, unreadable files, refused pre-checks).
    CommandLine,
    /// 125: an internal error.
    Internal,
}

impl Exit {
    /// The process exit code.
    pub const fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::LocalChain => 116,
            Self::RemoteFailure => 117,
            Self::CertificateRejected => 119,
            Self::ServerAuthentication => 120,
            Self::Communication => 121,
            Self::Connect => 122,
            Self::CommandLine => 124,
            Self::Internal => 125,
        }
    }
}

/// A refusal by one of the client-side policy checks (`spec/names-and-policies.md` §5.2,
/// §6, §7.6); the texts are albatross's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The requested policy is unusable.
    #[error(transparent)]
    Unusable(#[from] UsabilityError),
    /// The requested policy is not within the issuing CA's policy.
    #[error(transparent)]
    NotWithin(#[from] WithinError),
    /// The unikernel configuration does not fit the issuing CA's policy.
    #[error(transparent)]
    Config(#[from] ConfigPolicyError),
}

/// Everything that can go wrong in the client; [`ClientError::exit`] gives the exit code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A bad argument or an impossible request (exit 124).
    #[error("{0}")]
    Usage(String),
    /// A command-line value or a request that cannot be made (exit 124).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A client-side policy check refused the request (exit 124).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Keys, certificates or CSRs could not be read, made or written (exit 124).
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// A file could not be read or written (exit 124).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The chain we would present does not validate against `--server-ca` (exit 116).
    #[error("TLS validation error of provided certificate chain: {0}")]
    LocalChain(String),
    /// The server answered with a `failure` frame carrying this text (exit 117).
    #[error("{0}")]
    RemoteFailure(String),
    /// The server rejected our certificate with this TLS alert (exit 119).
    #[error("the server rejected our certificate: {0}")]
    CertificateRejected(String),
    /// The server's certificate was not accepted (exit 120).
    #[error("server authentication failed: {0}")]
    ServerAuthentication(String),
    /// Reading or writing failed, or the server closed without a final reply (exit 121).
    #[error("{0}")]
    Communication(String),
    /// No connection could be made to the destination (exit 122).
    #[error("couldn't connect to {destination}: {reason}")]
    Connect {
        /// The destination as given.
        destination: String,
        /// Why.
        reason: String,
    },
    /// Something that should not happen (exit 125).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ClientError {
    /// The exit code albatross-client uses for this kind of error.
    pub fn exit(&self) -> Exit {
        match self {
            Self::Usage(_)
            | Self::Request(_)
            | Self::Refused(_)
            | Self::Pki(_)
            | Self::Io { .. } => Exit::CommandLine,
            Self::LocalChain(_) => Exit::LocalChain,
            Self::RemoteFailure(_) => Exit::RemoteFailure,
            Self::CertificateRejected(_) => Exit::CertificateRejected,
            Self::ServerAuthentication(_) => Exit::ServerAuthentication,
            Self::Communication(_) => Exit::Communication,
            Self::Connect { .. } => Exit::Connect,
            Self::Internal(_) => Exit::Internal,
        }
    }

    /// A usage error with this text.
    pub fn usage(text: impl fmt::Display) -> Self {
        Self::Usage(text.to_string())
    }

    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Reads a whole file of at most `max` octets (the limit keeps a wrong argument, such as
/// a disk image given as a certificate, from being read into memory).
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, ClientError> {
    let size = std::fs::metadata(path)
        .map_err(|e| ClientError::io(path, e))?
        .len();
    if size > max {
        return Err(ClientError::usage(format!(
            "{}: file too large ({size} octets, at most {max} read)",
            path.display()
        )));
    }
    std::fs::read(path).map_err(|e| ClientError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_albatross_clients() {
        let cases = [
            (ClientError::usage("x"), 124),
            (ClientError::LocalChain("x".into()), 116),
            (ClientError::RemoteFailure("x".into()), 117),
            (ClientError::CertificateRejected("x".into()), 119),
            (ClientError::ServerAuthentication("x".into()), 120),
            (ClientError::Communication("x".into()), 121),
            (
                ClientError::Connect {
                    destination: "h".into(),
                    reason: "r".into(),
                },
                122,
            ),
            (ClientError::Internal("x".into()), 125),
            (ClientError::Pki(PkiError::KeyMismatch), 124),
            (
                ClientError::Refused(Refusal::Unusable(UsabilityError::NoCpuids)),
                124,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.exit().code(), code, "{error}");
        }
        assert_eq!(Exit::Success.code(), 0);
    }

    #[test]
    fn refusals_keep_albatross_texts() {
        assert_eq!(
            ClientError::from(Refusal::Unusable(UsabilityError::Memory(16))).to_string(),
            "Unusable policy with memory 16 MB <= 16 MB"
        );
        assert_eq!(
            ClientError::Pki(PkiError::KeyMismatch).to_string(),
            "Public key of certificate doesn't match private key"
        );
    }

    #[test]
    fn bounded_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(read_bounded(&path, 5).unwrap(), b"12345");
        assert_eq!(
            read_bounded(&path, 4).unwrap_err().to_string(),
            format!(
                "{}: file too large (5 octets, at most 4 read)",
                path.display()
            )
        );
    }
}
