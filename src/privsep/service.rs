//! The executor process's side: control channels in, request sockets served. The TLS side
//! is not trusted: every request socket's chain is verified again against the trust
//! anchors at the current time, the request is derived from it again and checked against
//! the executor's own revocation store, and only then does the executor see an
//! [`ExecRequest`]. A compromised TLS side can therefore replay chains it was shown, and
//! nothing more. Every read is bounded; garbage closes the socket it came on.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::timeout;

use super::control::{ControlChannel, ControlError, ControlMessage};
use super::request::{self, Preamble, SocketError};
use super::{EXECUTOR_IDLE_FACTOR, PREAMBLE_TIMEOUT, WorkerLink, sys};
use crate::audit::{AuditCert, AuditEvent, AuditLog, AuditRecord, AuditSource};
use crate::auth;
use crate::chain::{self, InputKind};
use crate::codec::Payload;
use crate::executor::api::{
    CHANNEL_DEPTH, ExecRequest, Handler, InputChunk, OutputFrame, OutputReceiver,
};
use crate::limits::Limits;
use crate::name::Name;
use crate::revocation::SharedRevocations;
use crate::server::{RequestError, StreamError, failure_text};
use crate::verify::TrustAnchors;

/// Serves request sockets for the executor.
pub struct ExecutorService {
    handler: Arc<dyn Handler>,
    anchors: TrustAnchors,
    revocations: Arc<SharedRevocations>,
    limits: Limits,
    sockets: Arc<Semaphore>,
    preambles: Semaphore,
    audit: AuditLog,
}

impl std::fmt::Debug for ExecutorService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorService")
            .field("anchors", &self.anchors)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ExecutorService {
    /// A service that verifies chains against `anchors` at the current time, checks them
    /// against `revocations` (the executor's, current at each request), and hands the
    /// requests to `handler` within `limits`: at most `limits.max_connections` request
    /// sockets at once (the TLS side cannot legitimately have more), at most
    /// `limits.max_handshakes` chains being read at once, chains of at most
    /// `max_chain_size`, chunks of at most `max_frame_size`, images and CRLs within their
    /// limits. `audit` records every request passed on a control channel (marked
    /// [`AuditSource::Executor`]); what the TLS side refuses itself reaches the audit log
    /// through [`super::audit_relay`].
    pub fn new(
        handler: Arc<dyn Handler>,
        anchors: TrustAnchors,
        revocations: Arc<SharedRevocations>,
        limits: Limits,
        audit: AuditLog,
    ) -> Arc<Self> {
        let sockets = Arc::new(Semaphore::new(
            limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
        ));
        // Chains being read at once: as many as handshakes may be in progress on the TLS
        // side, so that a compromised TLS side cannot make the executor hold more chain
        // octets than the handshake limit lets unauthenticated peers make the TLS side hold.
        let preambles = Semaphore::new(limits.max_handshakes.clamp(1, Semaphore::MAX_PERMITS));
        Arc::new(Self {
            handler,
            anchors,
            revocations,
            limits,
            sockets,
            preambles,
            audit,
        })
    }

    /// Serves `control` until the peer closes it or sends garbage: each request socket is
    /// served in a task of its own. With a `link` (the TLS worker's channel), `ready` and
    /// `figures` messages go to it; without one they are garbage.
    pub async fn serve_control(
        self: Arc<Self>,
        control: Arc<ControlChannel>,
        link: Option<Arc<WorkerLink>>,
    ) {
        let audit = self.audit.clone();
        loop {
            let message = match control.recv().await {
                Ok(Some(message)) => message,
                Ok(None) => {
                    tracing::debug!("control channel closed");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "closing the control channel");
                    return;
                }
            };
            match (message, &link) {
                (ControlMessage::Request(fd), _) => self.accept(fd, audit.clone()),
                (ControlMessage::Ready, Some(link)) => link.ready(),
                (ControlMessage::Figures(json), Some(link)) => link.deliver(json),
                (other, _) => {
                    let e = ControlError::Garbage("unexpected message");
                    tracing::warn!(error = %e, message = other.name(), "closing the control channel");
                    return;
                }
            }
        }
    }

    /// Takes a request socket received on a control channel.
    fn accept(self: &Arc<Self>, fd: std::os::fd::OwnedFd, audit: AuditLog) {
        let Ok(permit) = Arc::clone(&self.sockets).try_acquire_owned() else {
            tracing::warn!(
                limit = self.limits.max_connections,
                "request socket refused: too many at once"
            );
            return;
        };
        let stream = std::os::unix::net::UnixStream::from(fd);
        let stream = match stream
            .set_nonblocking(true)
            .and_then(|()| UnixStream::from_std(stream))
        {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "request socket refused");
                return;
            }
        };
        let service = Arc::clone(self);
        tokio::spawn(async move {
            service.serve_request(stream, &audit).await;
            drop(permit);
        });
    }

    /// Serves one request socket to its end (see [`super::request`]); refusals and
    /// executed requests are recorded in `audit`.
    pub async fn serve_request(&self, stream: UnixStream, audit: &AuditLog) {
        let (mut rd, mut wr) = stream.into_split();
        let limits = &self.limits;
        let preamble = timeout(PREAMBLE_TIMEOUT, async {
            let _reading = self
                .preambles
                .acquire()
                .await
                .map_err(|_| SocketError::Closed)?;
            request::read_preamble(&mut rd, limits.max_chain_size).await
        })
        .await;
        let Preamble { chain, peer } = match preamble {
            Ok(Ok(preamble)) => preamble,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "request socket closed");
                return;
            }
            Err(_) => {
                tracing::warn!(
                    timeout = PREAMBLE_TIMEOUT.as_secs(),
                    "request socket closed: no chain in time"
                );
                return;
            }
        };
        let verified = match self.anchors.verify(&chain, unix_now()) {
            Ok(verified) => verified,
            Err(e) => {
                let text = e.to_string();
                refuse(&mut wr, &peer, &Name::root(), &text, self.idle()).await;
                let mut record = AuditRecord::now(AuditEvent::Handshake);
                record.source = Some(AuditSource::Executor);
                record.chain = chain.iter().map(AuditCert::of).collect();
                record.outcome = format!("refused: {text}");
                record.peer = peer;
                audit.record(record);
                return;
            }
        };
        drop(chain);
        let audit_chain: Vec<AuditCert> = verified
            .certificates()
            .iter()
            .chain(Some(verified.anchor()).filter(|a| verified.certificates().last() != Some(*a)))
            .map(AuditCert::of)
            .collect();
        let authorized = match auth::authorize(&verified, &self.revocations.current()) {
            Ok(authorized) => authorized,
            Err(e) => {
                let decoded = chain::decode_request(&verified).ok();
                let name = decoded
                    .as_ref()
                    .map_or_else(Name::root, |request| request.name.clone());
                let text = failure_text(&RequestError::Auth(e));
                refuse(&mut wr, &peer, &name, &text, self.idle()).await;
                let mut record = AuditRecord::now(AuditEvent::Refused);
                record.source = Some(AuditSource::Executor);
                record.name = decoded.as_ref().map(|r| r.name.text());
                record.command = decoded.map(|r| r.command.to_string());
                record.chain = audit_chain;
                record.outcome = format!("refused: {text}");
                record.peer = peer;
                audit.record(record);
                return;
            }
        };
        drop(verified);
        let request = authorized.get();
        let name = request.name.clone();
        let command = request.command.to_string();
        let serial = request
            .leaf()
            .map(|leaf| leaf.id.serial.clone())
            .unwrap_or_default();
        let kind = request.input();
        let subscription = crate::server::is_subscription(&request.command);
        let (input, input_rx) = match kind {
            Some(kind) => {
                let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
                (Some((kind, tx)), Some(rx))
            }
            None => (None, None),
        };
        let output = self.handler.handle(ExecRequest {
            request: authorized,
            input: input_rx,
            peer: peer.clone(),
        });
        let outcome = self.exchange(rd, wr, input, output, subscription).await;
        tracing::info!(%peer, name = %name, command = %command, serial = %serial, outcome = %outcome, "executed");
        let mut record = AuditRecord::now(AuditEvent::Request);
        record.source = Some(AuditSource::Executor);
        record.name = Some(name.text());
        record.command = Some(command);
        record.chain = audit_chain;
        record.outcome = outcome;
        record.peer = peer;
        audit.record(record);
    }

    /// How long the executor waits for the TLS side between two chunks or to take a
    /// frame: longer than the idle timeout the TLS side applies to its client, so that it
    /// never fires first for a legitimate client.
    fn idle(&self) -> Duration {
        self.limits
            .idle_timeout
            .saturating_mul(EXECUTOR_IDLE_FACTOR)
    }

    /// Feeds the input stream (if any) to the executor while writing its frames to the
    /// socket; returns the outcome for the log.
    async fn exchange(
        &self,
        mut rd: OwnedReadHalf,
        mut wr: OwnedWriteHalf,
        input: Option<(InputKind, mpsc::Sender<InputChunk>)>,
        mut output: OutputReceiver,
        subscription: bool,
    ) -> String {
        let idle = self.idle();
        let reader = async {
            if let Some((kind, tx)) = input {
                match self.pump(&mut rd, kind, tx, idle).await {
                    Ok(()) => {}
                    Err(Some(text)) => return format!("failure: {text}"),
                    Err(None) => {
                        // The executor refused early: the TLS side learns it on its next
                        // write, and nothing more is read.
                        let stream: &UnixStream = rd.as_ref();
                        let _ = sys::shutdown_read(stream.as_raw_fd());
                        return std::future::pending().await;
                    }
                }
            }
            // Nothing more is expected: the TLS side closing (or sending anything) means
            // the client is gone, which ends a subscription.
            let mut octet = [0u8; 1];
            let _ = rd.read(&mut octet).await;
            // The words of the TLS side's own outcomes (`crate::server::Outcome`).
            if subscription {
                "ended by the client".to_owned()
            } else {
                "client gone".to_owned()
            }
        };
        let writer = async {
            let mut last = None;
            while let Some(frame) = output.recv().await {
                let kind = crate::server::reply_kind(&frame.payload).map(|end| match end {
                    Ok(()) => "ok".to_owned(),
                    Err(text) => format!("failure: {text}"),
                });
                match timeout(idle, request::write_frame(&mut wr, &frame)).await {
                    Ok(Ok(_)) => last = Some(kind),
                    Ok(Err(_)) | Err(_) => return "client gone".to_owned(),
                }
            }
            // The TLS side answers a stream without a final reply, or no reply at all,
            // with a failure of its own.
            match last {
                Some(Some(outcome)) => outcome,
                Some(None) => format!(
                    "failure: {}",
                    failure_text(&RequestError::StreamWithoutReply)
                ),
                None => format!("failure: {}", failure_text(&RequestError::NoReply)),
            }
        };
        tokio::select! {
            gone = reader => gone,
            last = writer => last,
        }
    }

    /// Reads the input stream's chunks into `tx` until the terminator. `Err(None)`: the
    /// executor dropped its receiver; `Err(Some(text))`: the stream broke, and the
    /// executor was told so with [`InputChunk::Failed`].
    async fn pump(
        &self,
        rd: &mut OwnedReadHalf,
        kind: InputKind,
        tx: mpsc::Sender<InputChunk>,
        idle: Duration,
    ) -> Result<(), Option<String>> {
        let limits = &self.limits;
        let max_total = match kind {
            InputKind::Image => limits.max_image_size,
            InputKind::Crl => limits.max_crl_size,
            // The executor bounds block data by the device's size.
            InputKind::BlockData => u64::MAX,
        };
        let mut total: u64 = 0;
        let error = loop {
            let chunk = match timeout(idle, request::read_chunk(rd, limits.max_frame_size)).await {
                Err(_) => break StreamError::Idle(idle),
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => {
                    return tx.send(InputChunk::End).await.map_err(|_| None);
                }
                Ok(Err(SocketError::ChunkTooLarge { len, max })) => {
                    break StreamError::ChunkTooLarge { len, max };
                }
                Ok(Err(SocketError::Closed)) => break StreamError::Closed,
                Ok(Err(e)) => break StreamError::Tls(e.to_string()),
            };
            total = total.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
            if total > max_total {
                break StreamError::TooLarge {
                    kind,
                    max: max_total,
                };
            }
            if tx.send(InputChunk::Data(chunk)).await.is_err() {
                return Err(None);
            }
        };
        let text = failure_text(&RequestError::Stream(error));
        let _ = timeout(idle, tx.send(InputChunk::Failed(text.clone()))).await;
        Err(Some(text))
    }
}

/// The TLS side showed a chain that does not authorize a request: one failure frame, then
/// the socket closes.
async fn refuse(wr: &mut OwnedWriteHalf, peer: &str, name: &Name, text: &str, idle: Duration) {
    let frame = OutputFrame {
        name: name.clone(),
        payload: Payload::failure(text),
    };
    let _ = timeout(idle, request::write_frame(wr, &frame)).await;
    tracing::info!(%peer, name = %name, outcome = %format_args!("refused: {text}"), "executed");
}

/// Seconds since the Unix epoch now.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
