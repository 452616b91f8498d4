//! The request socket: one `SOCK_STREAM` Unix socket per request, with albatross's
//! local-socket framing (every chunk and message preceded by its length as a 4-octet
//! signed big-endian integer, a length of 0 ending a stream; [`crate::codec::frame`]).
//!
//! The TLS side writes, in order:
//! 1. the client's chain, one DER certificate per chunk (leaf first), then the zero-length
//!    terminator;
//! 2. the peer's address as one chunk (UTF-8 text);
//! 3. if the command has an input stream, its raw chunks exactly as the client sent them
//!    and the terminator — or it closes the socket if the client's stream broke.
//!
//! The executor answers with framed `Wire` messages, header `(5, 0, name)` — the
//! [`OutputFrame`]s, the last being the final reply — and closes. Either side closing
//! ends the request: the TLS side closing ends a subscription.
//!
//! Everything read here is bounded; the executor does not trust the TLS side.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec::{self, FrameLength, Header, MAX_FRAMEABLE, Wire};
use crate::executor::api::OutputFrame;
use crate::limits::MAX_CHAIN_LEN;
use crate::pki::Certificate;

/// Most certificates a request socket's chain may hold: chains of [`MAX_CHAIN_LEN`]
/// certificates or more are refused anyway ("certificate chain too long"), so the
/// executor reads at most that many before giving up on the socket.
pub const MAX_CHAIN_CERTIFICATES: usize = MAX_CHAIN_LEN;

/// Longest peer address text: `[` IPv6 with a zone `]:port` is under 70 octets.
pub const MAX_PEER_LEN: usize = 256;

/// What a request socket carries before any input stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preamble {
    /// The client's certificates, leaf first.
    pub chain: Vec<Certificate>,
    /// The peer's address, as the TLS side reports it.
    pub peer: String,
}

/// Why a request socket was given up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SocketError {
    /// The socket closed before what was expected arrived.
    #[error("the request socket closed early")]
    Closed,
    /// Reading or writing failed.
    #[error("request socket: {0}")]
    Io(String),
    /// A chunk announced more octets than allowed.
    #[error("chunk of {len} octets exceeds the limit of {max} octets")]
    ChunkTooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The certificates together exceed the chain size limit.
    #[error("the certificate chain exceeds the limit of {max} octets")]
    ChainTooLarge {
        /// The limit (`--max-chain-size`).
        max: usize,
    },
    /// More certificates than [`MAX_CHAIN_CERTIFICATES`].
    #[error("more than {MAX_CHAIN_CERTIFICATES} certificates")]
    TooManyCertificates,
    /// The chain has no certificate.
    #[error("no certificate")]
    EmptyChain,
    /// The peer address chunk is missing (a terminator instead).
    #[error("no peer address")]
    NoPeer,
    /// The peer address is longer than [`MAX_PEER_LEN`].
    #[error("peer address longer than {MAX_PEER_LEN} octets")]
    PeerTooLong,
    /// The peer address is not UTF-8.
    #[error("peer address is not UTF-8")]
    PeerNotUtf8,
    /// A reply message does not decode.
    #[error("reply does not decode: {0}")]
    BadReply(String),
}

impl From<io::Error> for SocketError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Self::Closed
        } else {
            Self::Io(e.to_string())
        }
    }
}

/// Writes the preamble: the chain (`chain`, DER, leaf first), the terminator, the peer.
pub async fn write_preamble<W: AsyncWrite + Unpin>(
    w: &mut W,
    chain: &[&[u8]],
    peer: &str,
) -> io::Result<()> {
    for der in chain {
        write_chunk(w, der).await?;
    }
    write_end(w).await?;
    write_chunk(w, peer.as_bytes()).await?;
    w.flush().await
}

/// Reads the preamble: at most [`MAX_CHAIN_CERTIFICATES`] certificates of together at
/// most `max_chain_size` octets, then a peer address of at most [`MAX_PEER_LEN`].
pub async fn read_preamble<R: AsyncRead + Unpin>(
    r: &mut R,
    max_chain_size: usize,
) -> Result<Preamble, SocketError> {
    let mut chain = Vec::new();
    let mut total: usize = 0;
    loop {
        let left = max_chain_size.saturating_sub(total);
        let Some(der) = read_chunk(r, left).await.map_err(|e| match e {
            SocketError::ChunkTooLarge { .. } => SocketError::ChainTooLarge {
                max: max_chain_size,
            },
            other => other,
        })?
        else {
            break;
        };
        if chain.len() == MAX_CHAIN_CERTIFICATES {
            return Err(SocketError::TooManyCertificates);
        }
        total = total.saturating_add(der.len());
        chain.push(Certificate::from_der(der));
    }
    if chain.is_empty() {
        return Err(SocketError::EmptyChain);
    }
    let peer = read_chunk(r, MAX_PEER_LEN)
        .await
        .map_err(|e| match e {
            SocketError::ChunkTooLarge { .. } => SocketError::PeerTooLong,
            other => other,
        })?
        .ok_or(SocketError::NoPeer)?;
    let peer = String::from_utf8(peer).map_err(|_| SocketError::PeerNotUtf8)?;
    Ok(Preamble { chain, peer })
}

/// Writes one raw chunk (length prefix and `data`, which must not be empty).
pub async fn write_chunk<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> io::Result<()> {
    let header = codec::frame_header(data.len())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    w.write_all(&header).await?;
    w.write_all(data).await
}

/// Writes the zero-length terminator.
pub async fn write_end<W: AsyncWrite + Unpin>(w: &mut W) -> io::Result<()> {
    w.write_all(&codec::END_OF_STREAM).await
}

/// Reads one raw chunk of at most `max` octets; `None` for the terminator.
pub async fn read_chunk<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, SocketError> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header).await?;
    match codec::decode_frame_header(header, max) {
        Ok(FrameLength::EndOfStream) => Ok(None),
        Ok(FrameLength::Body(len)) => {
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).await?;
            Ok(Some(body))
        }
        Err(codec::FrameError::TooLarge { len, max }) => {
            Err(SocketError::ChunkTooLarge { len, max })
        }
        Err(e) => Err(SocketError::Io(e.to_string())),
    }
}

/// Writes `frame` as a framed `Wire` message with header `(5, 0, name)`; the octets
/// written.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &OutputFrame) -> io::Result<u64> {
    let wire = Wire::new(Header::new(0, frame.name.clone()), frame.payload.clone());
    let framed = codec::frame(&codec::encode_wire(&wire))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    w.write_all(&framed).await?;
    w.flush().await?;
    Ok(u64::try_from(framed.len()).unwrap_or(u64::MAX))
}

/// Reads the next reply frame; `None` when the socket closed between frames (or a
/// length of 0 or less ended the stream). Replies come from the executor, which the TLS
/// side trusts: they are bounded only by what a length prefix can say (a `unikernel get`
/// reply carries a whole image).
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<OutputFrame>, SocketError> {
    let mut header = [0u8; 4];
    let first = r.read(&mut header).await?;
    if first == 0 {
        return Ok(None);
    }
    let rest = header.get_mut(first..).unwrap_or_default();
    r.read_exact(rest).await?;
    match codec::decode_frame_header(header, MAX_FRAMEABLE) {
        Ok(FrameLength::EndOfStream) => Ok(None),
        Ok(FrameLength::Body(len)) => {
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).await?;
            let wire =
                codec::decode_wire(&body).map_err(|e| SocketError::BadReply(e.to_string()))?;
            Ok(Some(OutputFrame {
                name: wire.header.name,
                payload: wire.payload,
            }))
        }
        Err(e) => Err(SocketError::BadReply(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Payload;
    use crate::name::Name;

    async fn preamble_of(bytes: &[u8], max: usize) -> Result<Preamble, SocketError> {
        let mut input = bytes;
        read_preamble(&mut input, max).await
    }

    fn chunk(data: &[u8]) -> Vec<u8> {
        codec::frame(data).unwrap()
    }

    #[tokio::test]
    async fn the_preamble_round_trips() {
        let mut out = Vec::new();
        write_preamble(&mut out, &[b"leaf", b"ca"], "127.0.0.1:4000")
            .await
            .unwrap();
        let mut expected = [chunk(b"leaf"), chunk(b"ca")].concat();
        expected.extend_from_slice(&[0, 0, 0, 0]);
        expected.extend_from_slice(&chunk(b"127.0.0.1:4000"));
        assert_eq!(out, expected);
        let preamble = preamble_of(&out, 6).await.unwrap();
        assert_eq!(
            preamble,
            Preamble {
                chain: vec![
                    Certificate::from_der(b"leaf".to_vec()),
                    Certificate::from_der(b"ca".to_vec())
                ],
                peer: "127.0.0.1:4000".to_owned(),
            }
        );
    }

    #[tokio::test]
    async fn preambles_are_bounded() {
        let end = [0u8, 0, 0, 0];
        let peer = chunk(b"p");
        // The chain size counts every certificate.
        let two = [chunk(b"abc"), chunk(b"def"), end.to_vec(), peer.clone()].concat();
        assert_eq!(
            preamble_of(&two, 5).await,
            Err(SocketError::ChainTooLarge { max: 5 })
        );
        assert!(preamble_of(&two, 6).await.is_ok());
        let mut many = Vec::new();
        for _ in 0..=MAX_CHAIN_CERTIFICATES {
            many.extend_from_slice(&chunk(b"x"));
        }
        assert_eq!(
            preamble_of(&many, 1000).await,
            Err(SocketError::TooManyCertificates)
        );
        let empty = [end.to_vec(), peer.clone()].concat();
        assert_eq!(preamble_of(&empty, 100).await, Err(SocketError::EmptyChain));
        let no_peer = [chunk(b"x"), end.to_vec(), end.to_vec()].concat();
        assert_eq!(preamble_of(&no_peer, 100).await, Err(SocketError::NoPeer));
        let long_peer = [chunk(b"x"), end.to_vec(), chunk(&[b'a'; MAX_PEER_LEN + 1])].concat();
        assert_eq!(
            preamble_of(&long_peer, 100).await,
            Err(SocketError::PeerTooLong)
        );
        let binary_peer = [chunk(b"x"), end.to_vec(), chunk(&[0xff])].concat();
        assert_eq!(
            preamble_of(&binary_peer, 100).await,
            Err(SocketError::PeerNotUtf8)
        );
        let cut = [chunk(b"x"), vec![0, 0, 0, 9, 1]].concat();
        assert_eq!(preamble_of(&cut, 100).await, Err(SocketError::Closed));
        assert_eq!(preamble_of(&[], 100).await, Err(SocketError::Closed));
    }

    #[tokio::test]
    async fn frames_round_trip_and_end_at_a_clean_close() {
        let frame = OutputFrame {
            name: Name::parse("a:b").unwrap(),
            payload: Payload::success_string("created unikernel"),
        };
        let mut out = Vec::new();
        let n = write_frame(&mut out, &frame).await.unwrap();
        assert_eq!(n, u64::try_from(out.len()).unwrap());
        let wire = codec::encode_wire(&Wire::new(
            Header::new(0, frame.name.clone()),
            frame.payload.clone(),
        ));
        assert_eq!(out, chunk(&wire));
        let mut input = out.as_slice();
        assert_eq!(read_frame(&mut input).await, Ok(Some(frame)));
        assert_eq!(read_frame(&mut input).await, Ok(None));
        let mut cut: &[u8] = &[0, 0];
        assert_eq!(read_frame(&mut cut).await, Err(SocketError::Closed));
        let mut garbage: &[u8] = &[0, 0, 0, 1, 5];
        assert!(matches!(
            read_frame(&mut garbage).await,
            Err(SocketError::BadReply(_))
        ));
    }
}
