//! The TLS server: the accept loop, per-connection handling, limits, logs and the audit
//! log (`spec/tls-endpoint.md` §3 with petrel's fixes, DESIGN.md).
//!
//! One connection carries one request:
//!
//! 1. **Admission.** Beyond [`Limits::max_connections`] open connections a new one is
//!    closed at once. An admitted connection must send its first octet within
//!    [`Limits::first_byte_timeout`]; only then does it queue (first come, first served,
//!    for at most [`Limits::handshake_queue_timeout`]) for one of
//!    [`Limits::max_handshakes`] handshake slots, so idle peers never hold a slot and the
//!    memory OpenSSL may buffer for unauthenticated peers stays bounded.
//! 2. **Handshake** ([`crate::tls`]) within [`Limits::handshake_timeout`]; the client's
//!    chain is verified by OpenSSL against the CA certificates.
//! 3. **Authorization** of the verified chain ([`crate::auth::authorize`], with the
//!    revocation store current at that moment). Every refusal from here on is answered
//!    with a `failure` frame, header `(5, 0, name)` (`:` when no name could be derived),
//!    then close_notify (spec Note T1, fixed).
//! 4. **Exchange** with the [`Handler`]: the request, and if the command has one the raw
//!    chunk stream that follows the handshake, fed chunk by chunk with backpressure; at the
//!    same time the handler's output frames are forwarded as framed `Wire` messages with
//!    header `(5, 0, frame name)`. The last frame is the final reply; close_notify ends
//!    the connection.
//!
//! Every request gets one log line (peer, name, command, leaf serial, outcome) and one
//! audit record.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]

mod connection;
mod exchange;
mod failure;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::audit::AuditLog;
use crate::executor::api::Handler;
use crate::limits::Limits;
use crate::metrics::ServerMetrics;
pub use crate::revocation::SharedRevocations;
use crate::tls::Acceptor;

pub use failure::{
    NO_REPLY, RequestError, STREAM_WITHOUT_REPLY, StreamError, failure_text, input_name,
};

/// Pause after a failed `accept` (for instance when the process is out of file
/// descriptors), so that the loop does not spin while connections close.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Console and statistics subscriptions: streams the client ends by closing or by
/// sending anything.
pub(crate) fn is_subscription(command: &crate::codec::Command) -> bool {
    use crate::codec::{Command, ConsoleCmd, StatsCmd};
    matches!(
        command,
        Command::Console(ConsoleCmd::Subscribe(_)) | Command::Statistics(StatsCmd::Subscribe)
    )
}

/// What a frame of the handler's answer is: a final reply (success, or failure with its
/// text) or a data frame that more frames follow. The end of a block dump, its `noData`
/// frame, is its final reply (spec tls-endpoint §3 step 8).
pub(crate) fn reply_kind(payload: &crate::codec::Payload) -> Option<Result<(), String>> {
    use crate::codec::{BlockData, Data, Payload};
    match payload {
        Payload::Failure(text) => Some(Err(text.clone())),
        Payload::Data(Data::Block(BlockData::NoData)) => Some(Ok(())),
        Payload::Data(_) => None,
        Payload::Success(_) | Payload::Command(_) => Some(Ok(())),
    }
}

/// How a request ended, as logged and audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The final reply was a success.
    Ok,
    /// The final reply was a failure with this text (from the executor or the server).
    Failure(String),
    /// The request was refused before its command ran; the client got this failure text.
    Refused(String),
    /// The client ended a subscription (closed or sent data).
    Ended,
    /// The client went away before the final reply; the reason.
    ClientGone(String),
}

impl Outcome {
    /// The outcome as the metrics label it: `ok`, `failure`, `refused`, `ended`,
    /// `client_gone`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failure(_) => "failure",
            Self::Refused(_) => "refused",
            Self::Ended => "ended",
            Self::ClientGone(_) => "client_gone",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok => f.write_str("ok"),
            Self::Failure(text) => write!(f, "failure: {text}"),
            Self::Refused(text) => write!(f, "refused: {text}"),
            Self::Ended => f.write_str("ended by the client"),
            Self::ClientGone(reason) => write!(f, "client gone: {reason}"),
        }
    }
}

/// The server: cheap to clone, one per process.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

struct Shared {
    acceptor: Acceptor,
    handler: Arc<dyn Handler>,
    revocations: Arc<SharedRevocations>,
    audit: AuditLog,
    limits: Limits,
    connections: Arc<Semaphore>,
    handshakes: Semaphore,
    refused: AtomicU64,
    metrics: Arc<ServerMetrics>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server that accepts TLS with `acceptor`, authorizes against `revocations` and
    /// hands requests to `handler`, within `limits`.
    pub fn new(
        acceptor: Acceptor,
        handler: Arc<dyn Handler>,
        revocations: Arc<SharedRevocations>,
        audit: AuditLog,
        limits: Limits,
    ) -> Self {
        let permits = |n: usize| n.min(Semaphore::MAX_PERMITS);
        Self {
            shared: Arc::new(Shared {
                connections: Arc::new(Semaphore::new(permits(limits.max_connections))),
                handshakes: Semaphore::new(permits(limits.max_handshakes)),
                acceptor,
                handler,
                revocations,
                audit,
                limits,
                refused: AtomicU64::new(0),
                metrics: Arc::new(ServerMetrics::default()),
            }),
        }
    }

    /// The server's counters (connections, handshakes, commands, octets streamed), for
    /// the metrics exporter.
    pub fn metrics(&self) -> Arc<ServerMetrics> {
        Arc::clone(&self.shared.metrics)
    }

    /// Accepts connections on `listener` until `shutdown` completes, each handled in its
    /// own task. Connections in progress are not waited for.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            self.admit(tcp, peer);
        }
    }

    /// Handles one connection to its end (`--inetd`).
    pub async fn serve_one(&self, tcp: TcpStream, peer: SocketAddr) {
        connection::handle(&self.shared, tcp, peer).await;
    }

    fn admit(&self, tcp: TcpStream, peer: SocketAddr) {
        let Ok(permit) = Arc::clone(&self.shared.connections).try_acquire_owned() else {
            self.shared.metrics.connection_refused();
            let refused = self.shared.refused.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::debug!(%peer, "connection refused: connection limit reached");
            if refused.is_power_of_two() {
                tracing::warn!(
                    limit = self.shared.limits.max_connections,
                    refused,
                    "connections refused at the connection limit"
                );
            }
            drop(tcp);
            return;
        };
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            connection::handle(&shared, tcp, peer).await;
            drop(permit);
        });
    }
}
