//! The server's errors and the one function that turns them into the text of the
//! `failure` frame a client receives.

use std::time::Duration;

use crate::auth::AuthError;
use crate::chain::InputKind;

/// Text when the executor closed its answer without any frame (albatross: the endpoint
/// could not read the daemon's reply).
pub const NO_REPLY: &str = "error reading from fd";

/// Text when a stream of data frames ended without a final reply (albatross sends this
/// when the daemon side of a subscription closes, Note W6).
pub const STREAM_WITHOUT_REPLY: &str = "exception while reading from fd";

/// Why a request was not carried out, as far as the server is concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The chain does not authorize a request.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The handshake finished without a verified client chain.
    #[error("no verified client certificate chain")]
    NoChain,
    /// The input stream after the handshake broke.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The executor closed its answer without a frame.
    #[error("the executor sent no reply")]
    NoReply,
    /// The executor's answer ended with data frames and no final reply.
    #[error("the executor's stream ended without a final reply")]
    StreamWithoutReply,
}

impl From<crate::chain::ChainError> for RequestError {
    fn from(e: crate::chain::ChainError) -> Self {
        Self::Auth(AuthError::Chain(e))
    }
}

/// Why the raw chunk stream a client sends after the handshake (`spec/wire.md` §7.2)
/// broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// A chunk announced more octets than the frame size limit.
    #[error("chunk of {len} octets exceeds the limit of {max} octets")]
    ChunkTooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream as a whole exceeded its limit.
    #[error("{} exceeds the limit of {max} octets", input_name(*.kind))]
    TooLarge {
        /// What the stream carries.
        kind: InputKind,
        /// The limit.
        max: u64,
    },
    /// Nothing arrived for the idle timeout.
    #[error("no data for {} s (idle timeout)", .0.as_secs())]
    Idle(Duration),
    /// The connection closed before the zero-length terminator.
    #[error("connection closed before the end of the stream")]
    Closed,
    /// TLS or the socket failed.
    #[error("{0}")]
    Tls(String),
}

/// What a stream of `kind` carries, in words.
pub fn input_name(kind: InputKind) -> &'static str {
    match kind {
        InputKind::Image => "image",
        InputKind::BlockData => "block data",
        InputKind::Crl => "CRL",
    }
}

/// The text of the `failure` frame sent to the client for `error`. Chain and name
/// errors carry albatross's own words; stream errors are prefixed with albatross's
/// "reading tls chunk".
pub fn failure_text(error: &RequestError) -> String {
    match error {
        RequestError::Auth(AuthError::Chain(e)) => e.to_string(),
        RequestError::Auth(AuthError::Revoked(e)) => e.to_string(),
        RequestError::NoChain => "no verified client certificate chain".to_owned(),
        RequestError::Stream(e) => format!("reading tls chunk: {e}"),
        RequestError::NoReply => NO_REPLY.to_owned(),
        RequestError::StreamWithoutReply => STREAM_WITHOUT_REPLY.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{CertId, ChainError};
    use crate::codec::DecodeError;
    use crate::name::NameError;
    use crate::revocation::Revoked;

    #[test]
    fn every_error_maps_to_its_text() {
        let revoked = Revoked {
            common_name: "alice".to_owned(),
            serial: "0a1b".to_owned(),
            id: CertId {
                issuer_key: "00".repeat(32),
                serial: "0a1b".to_owned(),
            },
        };
        let table: Vec<(RequestError, &str)> = vec![
            (ChainError::TooLong.into(), "certificate chain too long"),
            (
                ChainError::LeafWithoutExtension.into(),
                "leaf certificate does not contain an albatross extension",
            ),
            (
                ChainError::Extension(DecodeError::Truncated).into(),
                "couldn't parse albatross extension: truncated input",
            ),
            (
                ChainError::UnexpectedWire("unikernel info".to_owned()).into(),
                "unexpected wire unikernel info",
            ),
            (
                ChainError::PolicyWithoutName.into(),
                "policy add may not have an empty name",
            ),
            (
                ChainError::EmptyName("block add".to_owned()).into(),
                "block add may not have an empty name",
            ),
            (ChainError::UnexpectedCommand.into(), "unexpected command"),
            (
                ChainError::Name(NameError::InvalidLabel).into(),
                "invalid label (only [a-zA-Z0-9-.] allowed, 1 to 63 chars)",
            ),
            (
                ChainError::CriticalExtension("x".to_owned()).into(),
                "albatross extension of certificate x must not be critical",
            ),
            (
                ChainError::DuplicateExtension("x".to_owned()).into(),
                "certificate x carries more than one albatross extension",
            ),
            (
                ChainError::LeafIsCa("x".to_owned()).into(),
                "leaf certificate x must not be a CA certificate",
            ),
            (
                RequestError::Auth(AuthError::Revoked(revoked)),
                "certificate alice (serial 0a1b) is revoked",
            ),
            (
                RequestError::NoChain,
                "no verified client certificate chain",
            ),
            (
                StreamError::ChunkTooLarge {
                    len: 2000,
                    max: 1024,
                }
                .into(),
                "reading tls chunk: chunk of 2000 octets exceeds the limit of 1024 octets",
            ),
            (
                StreamError::TooLarge {
                    kind: InputKind::Image,
                    max: 4096,
                }
                .into(),
                "reading tls chunk: image exceeds the limit of 4096 octets",
            ),
            (
                StreamError::TooLarge {
                    kind: InputKind::Crl,
                    max: 10,
                }
                .into(),
                "reading tls chunk: CRL exceeds the limit of 10 octets",
            ),
            (
                StreamError::TooLarge {
                    kind: InputKind::BlockData,
                    max: 10,
                }
                .into(),
                "reading tls chunk: block data exceeds the limit of 10 octets",
            ),
            (
                StreamError::Idle(Duration::from_secs(2)).into(),
                "reading tls chunk: no data for 2 s (idle timeout)",
            ),
            (
                StreamError::Closed.into(),
                "reading tls chunk: connection closed before the end of the stream",
            ),
            (
                StreamError::Tls("decryption failed".to_owned()).into(),
                "reading tls chunk: decryption failed",
            ),
            (RequestError::NoReply, "error reading from fd"),
            (
                RequestError::StreamWithoutReply,
                "exception while reading from fd",
            ),
        ];
        for (error, text) in table {
            assert_eq!(failure_text(&error), text, "{error:?}");
        }
    }
}
