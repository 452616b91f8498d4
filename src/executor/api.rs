//! The executor's message boundary (DESIGN.md, "The executor boundary").
//!
//! The executor is driven only by messages: an [`Authorized`] request plus, where the
//! command has one, an input stream of raw chunks; it answers with a stream of output
//! frames whose last one is the final reply. Nothing here refers to the server's state,
//! so the same messages can later cross a socketpair (albatross's local-socket framing:
//! each [`OutputFrame`] becomes one framed `Wire` message, each [`InputChunk::Data`] one
//! raw chunk, [`InputChunk::End`] the zero-length terminator).

use tokio::sync::mpsc;

use crate::auth::Authorized;
use crate::chain::Request;
use crate::codec::Payload;
use crate::name::Name;

/// Depth of the input and output channels: a producer runs at most this many chunks or
/// frames ahead of its consumer (backpressure instead of buffering).
pub const CHANNEL_DEPTH: usize = 8;

/// One piece of an input stream (image, block data, CRL), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputChunk {
    /// The next octets.
    Data(Vec<u8>),
    /// The stream ended properly (the client sent the zero-length terminator).
    End,
    /// The stream broke: the client disconnected, stalled past the idle timeout, or
    /// exceeded a limit. The text says which; the executor discards what it received.
    Failed(String),
}

/// One frame of the answer. The header of the frame on the wire is
/// `(version 5, sequence 0, name)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFrame {
    /// The name in the frame's header: the request's name for replies, the unikernel's
    /// full name for console data.
    pub name: Name,
    /// The payload.
    pub payload: Payload,
}

/// The receiving end of an input stream, handed to the executor with the request.
pub type InputReceiver = mpsc::Receiver<InputChunk>;

/// The receiving end of the executor's answer: zero or more streamed frames, then the
/// final reply, then the channel closes. Dropping it tells the executor the client is
/// gone (a console subscription ends, a dump stops).
pub type OutputReceiver = mpsc::Receiver<OutputFrame>;

/// A request for the executor.
#[derive(Debug)]
pub struct ExecRequest {
    /// The authorized request.
    pub request: Authorized<Request>,
    /// The input stream, present iff [`Request::input`] says the command has one.
    pub input: Option<InputReceiver>,
    /// Who asked, for logs and the audit log (e.g. the peer's socket address).
    pub peer: String,
}

/// What the server hands requests to: the in-process executor today, a client of the
/// privileged executor process once the two are split. `handle` returns at once; the
/// work happens in a task of the implementation, which sends the answer on the returned
/// channel.
pub trait Handler: Send + Sync + 'static {
    /// Starts handling `request`.
    fn handle(&self, request: ExecRequest) -> OutputReceiver;

    /// Whether the handler writes the audit record of each request it is handed (the
    /// executor process does, behind [`crate::privsep::remote::RemoteHandler`]); the
    /// server then writes records only for what it refuses itself.
    fn records_requests(&self) -> bool {
        false
    }
}
