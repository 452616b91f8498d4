//! The TLS worker's [`Handler`]: every request becomes a fresh request socket passed to the
//! executor process over the control channel ([`super::request`] describes what flows on
//! it). The server (`crate::server`) does not know the difference.

use std::sync::Arc;

use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use super::EXECUTOR_GONE_GRACE;
use super::control::{ControlChannel, ControlMessage};
use super::request::{self, SocketError};
use crate::codec::Payload;
use crate::executor::api::{
    CHANNEL_DEPTH, ExecRequest, Handler, InputChunk, InputReceiver, OutputFrame, OutputReceiver,
};

/// Hands requests to the executor process.
#[derive(Debug, Clone)]
pub struct RemoteHandler {
    control: Arc<ControlChannel>,
}

impl RemoteHandler {
    /// A handler that passes request sockets over `control`.
    pub fn new(control: Arc<ControlChannel>) -> Self {
        Self { control }
    }
}

impl Handler for RemoteHandler {
    fn handle(&self, request: ExecRequest) -> OutputReceiver {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        tokio::spawn(forward(Arc::clone(&self.control), request, tx));
        rx
    }

    /// The executor process audits every request it is passed.
    fn records_requests(&self) -> bool {
        true
    }
}

/// How feeding the input stream to the request socket ended.
#[derive(Debug, PartialEq, Eq)]
enum Pump {
    /// The terminator was written (or there was no input).
    Done,
    /// The executor stopped reading (it refused early, or it finished).
    ExecutorGone,
    /// The client's stream broke, or the server stopped feeding: the socket must close
    /// without the terminator.
    Broken,
}

/// Runs one request: passes a request socket to the executor, writes the preamble and the
/// input stream, and forwards the executor's frames to `tx`. When this returns the
/// request socket closes; a closed `tx` (the client is gone) ends it early.
async fn forward(
    control: Arc<ControlChannel>,
    request: ExecRequest,
    tx: mpsc::Sender<OutputFrame>,
) {
    let ExecRequest {
        request,
        input,
        peer,
    } = request;
    let request = request.into_inner();
    // What the client sent, leaf first: every link but the trust anchor that closes the
    // chain (if the client sent the anchor too, it is the link before).
    let sent = request.chain.len().saturating_sub(1);
    let chain: Vec<&[u8]> = request
        .chain
        .iter()
        .take(sent)
        .map(|link| link.der.as_slice())
        .collect();
    let (local, remote) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(error = %e, "cannot make a request socket");
            return;
        }
    };
    let remote = match remote.into_std() {
        Ok(remote) => std::os::fd::OwnedFd::from(remote),
        Err(e) => {
            tracing::warn!(error = %e, "cannot make a request socket");
            return;
        }
    };
    if let Err(e) = control.send(&ControlMessage::Request(remote)).await {
        tracing::warn!(error = %e, "cannot reach the executor");
        return;
    }
    let (mut rd, mut wr) = local.into_split();
    if let Err(e) = request::write_preamble(&mut wr, &chain, &peer).await {
        tracing::debug!(error = %e, "the executor did not take the whole chain");
    }
    drop(chain);
    drop(request);

    let pump = feed(&mut wr, input);
    let replies = replies(&mut rd, &tx);
    tokio::pin!(pump, replies);
    let mut pumped = false;
    let ended = loop {
        tokio::select! {
            end = &mut pump, if !pumped => {
                pumped = true;
                if end == Pump::Broken {
                    break Replies::Final;
                }
            }
            ended = &mut replies => break ended,
        }
    };
    if ended == Replies::Abrupt {
        // The executor process closed the socket without a final reply: it is most likely
        // dying, and this worker with it (its parent-death signal). Hold the answer back
        // for a moment so that the client sees the connection end without a reply, as it
        // would with one process; the server answers for it if this worker lives on.
        tokio::select! {
            () = tokio::time::sleep(EXECUTOR_GONE_GRACE) => {}
            () = tx.closed() => {}
        }
    }
}

/// How the executor's answer on a request socket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replies {
    /// After a final reply (anything but streamed data), or the client went away.
    Final,
    /// The socket closed with no reply or after streamed data only.
    Abrupt,
}

/// Writes the input stream's chunks and terminator, if there is an input stream.
async fn feed(wr: &mut OwnedWriteHalf, input: Option<InputReceiver>) -> Pump {
    let Some(mut input) = input else {
        return Pump::Done;
    };
    loop {
        let written = match input.recv().await {
            Some(InputChunk::Data(data)) if data.is_empty() => continue,
            Some(InputChunk::Data(data)) => request::write_chunk(wr, &data).await,
            Some(InputChunk::End) => {
                return match request::write_end(wr).await {
                    Ok(()) => Pump::Done,
                    Err(_) => Pump::ExecutorGone,
                };
            }
            Some(InputChunk::Failed(_)) | None => return Pump::Broken,
        };
        if written.is_err() {
            // Dropping `input` tells the server the executor stopped reading.
            return Pump::ExecutorGone;
        }
    }
}

/// Forwards reply frames until the executor closes or the server stops listening.
async fn replies(rd: &mut OwnedReadHalf, tx: &mpsc::Sender<OutputFrame>) -> Replies {
    let mut last = Replies::Abrupt;
    loop {
        let frame = tokio::select! {
            () = tx.closed() => return Replies::Final,
            frame = request::read_frame(rd) => frame,
        };
        match frame {
            Ok(Some(frame)) => {
                last = if matches!(frame.payload, Payload::Data(_)) {
                    Replies::Abrupt
                } else {
                    Replies::Final
                };
                if tx.send(frame).await.is_err() {
                    return Replies::Final;
                }
            }
            Ok(None) => return last,
            // A reset after the last frame is the executor closing with input unread.
            Err(SocketError::Io(_) | SocketError::Closed) => return last,
            Err(e) => {
                tracing::warn!(error = %e, "bad reply from the executor");
                return last;
            }
        }
    }
}
