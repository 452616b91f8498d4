//! The control channel between the TLS worker and the executor process: a
//! `SOCK_SEQPACKET` Unix socket, one message per packet, the first octet saying which:
//!
//! | octet | direction | rest of the packet | descriptors |
//! |---|---|---|---|
//! | 1 `request` | worker → executor | nothing | exactly one: a `SOCK_STREAM` Unix socket |
//! | 2 `ready` | worker → executor | nothing | none |
//! | 3 `figures?` | executor → worker | nothing | none |
//! | 4 `figures` | worker → executor | the server's counters, JSON ([`super::figures`]) | none |
//!
//! Anything else — an unknown octet, a payload where none belongs, a missing or extra
//! descriptor, a descriptor that is not a Unix stream socket, a truncated packet — is
//! [`ControlError::Garbage`], and the receiver closes the channel.

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
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::sys;

/// Largest control packet: the `figures` message is the only one with a payload, a few
/// KiB of JSON for the at most [`crate::metrics::MAX_COMMAND_LABELS`] commands; 64 KiB is
/// ample and stays below the default socket buffer.
pub const MAX_CONTROL_MESSAGE: usize = 64 * 1024;

const TAG_REQUEST: u8 = 1;
const TAG_READY: u8 = 2;
const TAG_FIGURES_QUERY: u8 = 3;
const TAG_FIGURES: u8 = 4;

/// One control message.
#[derive(Debug)]
pub enum ControlMessage {
    /// Worker → executor: one end of a fresh request socket.
    Request(OwnedFd),
    /// Worker → executor: privileges are dropped and the worker serves.
    Ready,
    /// Executor → worker: asks for the server's counters.
    FiguresQuery,
    /// Worker → executor: the server's counters (JSON, see [`super::figures`]).
    Figures(Vec<u8>),
}

impl ControlMessage {
    /// The message's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Request(_) => "request",
            Self::Ready => "ready",
            Self::FiguresQuery => "figures query",
            Self::Figures(_) => "figures",
        }
    }
}

/// Why the control channel failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The socket failed.
    #[error("control channel: {0}")]
    Io(#[from] io::Error),
    /// The peer sent something that is not a control message.
    #[error("control channel: garbage: {0}")]
    Garbage(&'static str),
}

/// One end of the control channel.
#[derive(Debug)]
pub struct ControlChannel {
    socket: AsyncFd<OwnedFd>,
    /// The receive buffer, allocated once: a packet may be as long as
    /// [`MAX_CONTROL_MESSAGE`], and most are one octet.
    buf: tokio::sync::Mutex<Vec<u8>>,
}

impl ControlChannel {
    /// A connected pair of control channel ends (close-on-exec, blocking until wrapped
    /// with [`ControlChannel::new`]).
    pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
        sys::socket_pair(libc::SOCK_SEQPACKET)
    }

    /// Wraps `socket`, which must be a Unix `SOCK_SEQPACKET` socket. Must be called inside
    /// a tokio runtime.
    pub fn new(socket: OwnedFd) -> io::Result<Self> {
        let kind = sys::socket_kind(socket.as_raw_fd())?;
        if kind != (libc::AF_UNIX, libc::SOCK_SEQPACKET) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the control channel must be a Unix SOCK_SEQPACKET socket",
            ));
        }
        sys::set_nonblocking(socket.as_raw_fd())?;
        // SAFETY: an OwnedFd is a valid open descriptor, owned by the AsyncFd for its whole
        // lifetime, and always reports the same number.
        let socket = unsafe {
            AsyncFd::register_with_interest(socket, Interest::READABLE | Interest::WRITABLE)
        }
        .map_err(io::Error::from)?;
        Ok(Self {
            socket,
            buf: tokio::sync::Mutex::new(vec![0u8; MAX_CONTROL_MESSAGE]),
        })
    }

    /// Sends `message`.
    pub async fn send(&self, message: &ControlMessage) -> io::Result<()> {
        let (bytes, attach) = match message {
            ControlMessage::Request(fd) => (vec![TAG_REQUEST], Some(fd.as_fd())),
            ControlMessage::Ready => (vec![TAG_READY], None),
            ControlMessage::FiguresQuery => (vec![TAG_FIGURES_QUERY], None),
            ControlMessage::Figures(json) => {
                let mut bytes = Vec::with_capacity(json.len().saturating_add(1));
                bytes.push(TAG_FIGURES);
                bytes.extend_from_slice(json);
                (bytes, None)
            }
        };
        if bytes.len() > MAX_CONTROL_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "control message too large",
            ));
        }
        loop {
            let mut guard = self.socket.writable().await?;
            match guard.try_io(|socket| sys::send_packet(socket.as_raw_fd(), &bytes, attach)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives the next message; `None` when the peer closed the channel.
    pub async fn recv(&self) -> Result<Option<ControlMessage>, ControlError> {
        let mut buf = self.buf.lock().await;
        loop {
            let mut guard = self.socket.readable().await?;
            match guard.try_io(|socket| sys::recv_packet(socket.as_raw_fd(), &mut buf)) {
                Ok(packet) => return decode(packet?, &buf),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Interprets a received packet whose payload is at the start of `buf`.
fn decode(packet: sys::Packet, buf: &[u8]) -> Result<Option<ControlMessage>, ControlError> {
    let sys::Packet {
        len,
        truncated,
        mut fds,
    } = packet;
    if len == 0 && fds.is_empty() && !truncated {
        return Ok(None);
    }
    if truncated {
        return Err(ControlError::Garbage("truncated packet"));
    }
    let body = buf
        .get(..len)
        .ok_or(ControlError::Garbage("truncated packet"))?;
    let (&tag, rest) = body
        .split_first()
        .ok_or(ControlError::Garbage("empty packet"))?;
    match tag {
        TAG_REQUEST => {
            if !rest.is_empty() {
                return Err(ControlError::Garbage("payload on a request message"));
            }
            let fd = match (fds.pop(), fds.is_empty()) {
                (Some(fd), true) => fd,
                _ => {
                    return Err(ControlError::Garbage(
                        "a request message carries exactly one socket",
                    ));
                }
            };
            match sys::socket_kind(fd.as_raw_fd()) {
                Ok((libc::AF_UNIX, libc::SOCK_STREAM)) => Ok(Some(ControlMessage::Request(fd))),
                _ => Err(ControlError::Garbage(
                    "a request socket must be a Unix stream socket",
                )),
            }
        }
        TAG_READY | TAG_FIGURES_QUERY | TAG_FIGURES if !fds.is_empty() => {
            Err(ControlError::Garbage("descriptor on a message without one"))
        }
        TAG_READY if rest.is_empty() => Ok(Some(ControlMessage::Ready)),
        TAG_FIGURES_QUERY if rest.is_empty() => Ok(Some(ControlMessage::FiguresQuery)),
        TAG_FIGURES => Ok(Some(ControlMessage::Figures(rest.to_vec()))),
        TAG_READY | TAG_FIGURES_QUERY => Err(ControlError::Garbage("unexpected payload")),
        _ => Err(ControlError::Garbage("unknown message")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (ControlChannel, OwnedFd) {
        let (a, b) = ControlChannel::pair().unwrap();
        (ControlChannel::new(a).unwrap(), b)
    }

    fn raw_send(fd: &OwnedFd, bytes: &[u8], attach: Option<&OwnedFd>) {
        sys::send_packet(fd.as_raw_fd(), bytes, attach.map(AsFd::as_fd)).unwrap();
    }

    async fn garbage(bytes: &[u8], attach: Option<&OwnedFd>) -> String {
        let (channel, raw) = pair();
        raw_send(&raw, bytes, attach);
        match channel.recv().await {
            Err(ControlError::Garbage(text)) => text.to_owned(),
            other => panic!("{bytes:?}: {other:?}"),
        }
    }

    #[tokio::test]
    async fn messages_round_trip() {
        let (a, b) = ControlChannel::pair().unwrap();
        let (a, b) = (
            ControlChannel::new(a).unwrap(),
            ControlChannel::new(b).unwrap(),
        );
        let (stream, _peer) = sys::socket_pair(libc::SOCK_STREAM).unwrap();
        a.send(&ControlMessage::Request(stream)).await.unwrap();
        a.send(&ControlMessage::Ready).await.unwrap();
        b.send(&ControlMessage::FiguresQuery).await.unwrap();
        a.send(&ControlMessage::Figures(b"{}".to_vec()))
            .await
            .unwrap();
        let names: Vec<&str> = [b.recv().await, b.recv().await]
            .into_iter()
            .map(|m| m.unwrap().unwrap().name())
            .collect();
        assert_eq!(names, ["request", "ready"]);
        assert!(matches!(
            a.recv().await.unwrap(),
            Some(ControlMessage::FiguresQuery)
        ));
        match b.recv().await.unwrap() {
            Some(ControlMessage::Figures(json)) => assert_eq!(json, b"{}"),
            other => panic!("{other:?}"),
        }
        drop(a);
        assert!(b.recv().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn garbage_is_named() {
        let (stream, _peer) = sys::socket_pair(libc::SOCK_STREAM).unwrap();
        let (packet, _other) = sys::socket_pair(libc::SOCK_SEQPACKET).unwrap();
        assert_eq!(garbage(&[9], None).await, "unknown message");
        assert_eq!(
            garbage(&[TAG_REQUEST], None).await,
            "a request message carries exactly one socket"
        );
        assert_eq!(
            garbage(&[TAG_REQUEST, 0], Some(&stream)).await,
            "payload on a request message"
        );
        assert_eq!(
            garbage(&[TAG_REQUEST], Some(&packet)).await,
            "a request socket must be a Unix stream socket"
        );
        let file = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        assert_eq!(
            garbage(&[TAG_REQUEST], Some(&file)).await,
            "a request socket must be a Unix stream socket"
        );
        assert_eq!(
            garbage(&[TAG_READY], Some(&stream)).await,
            "descriptor on a message without one"
        );
        assert_eq!(garbage(&[TAG_READY, 1], None).await, "unexpected payload");
        assert_eq!(
            garbage(&vec![TAG_FIGURES; MAX_CONTROL_MESSAGE + 1], None).await,
            "truncated packet"
        );
    }

    #[test]
    fn only_seqpacket_sockets_are_control_channels() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let (stream, _peer) = sys::socket_pair(libc::SOCK_STREAM).unwrap();
        assert_eq!(
            ControlChannel::new(stream).unwrap_err().to_string(),
            "the control channel must be a Unix SOCK_SEQPACKET socket"
        );
    }
}
