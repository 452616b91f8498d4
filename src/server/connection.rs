//! One connection: admission, handshake, authorization, then the exchange with the
//! handler; one log line and one audit record per request.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_openssl::SslStream;

use super::exchange::{self, Tls};
use super::{Outcome, RequestError, Shared, failure_text, is_subscription};
use crate::audit::{AuditCert, AuditEvent, AuditRecord};
use crate::auth;
use crate::chain::{self, VerifiedChain};
use crate::executor::api::{CHANNEL_DEPTH, ExecRequest};
use crate::name::Name;
use crate::tls::{self, HandshakeRefusal};

/// Handles `tcp` from `peer` to its end.
pub(super) async fn handle(shared: &Shared, tcp: TcpStream, peer: SocketAddr) {
    let peer = peer.to_string();
    let limits = &shared.limits;
    let _open = shared.metrics.connection_opened();

    // Idle peers hold no handshake slot.
    let mut probe = [0u8; 1];
    match timeout(limits.first_byte_timeout, tcp.peek(&mut probe)).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(Ok(_)) => {
            tracing::debug!(%peer, "closed before sending anything");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection failed before the handshake");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "nothing sent within the first-byte timeout");
            return;
        }
    }

    let slot = match timeout(limits.handshake_queue_timeout, shared.handshakes.acquire()).await {
        Ok(Ok(slot)) => slot,
        Ok(Err(_)) | Err(_) => {
            shared.metrics.handshake(Err(HandshakeRefusal::NoSlot));
            tracing::info!(%peer, outcome = "handshake error: no handshake slot free", "request");
            return;
        }
    };
    let tls = match handshake(shared, tcp).await {
        Ok(tls) => tls,
        Err(failure) => {
            drop(slot);
            shared.metrics.handshake(Err(failure.refusal));
            handshake_failed(shared, &peer, failure);
            return;
        }
    };
    drop(slot);
    shared.metrics.handshake(Ok(()));

    let Some(chain) = crate::verify::from_ssl(tls.ssl()) else {
        refuse(shared, tls, &peer, None, RequestError::NoChain).await;
        return;
    };
    let revocations = shared.revocations.current();
    let authorized = match auth::authorize(&chain, &revocations) {
        Ok(authorized) => authorized,
        Err(e) => {
            refuse(shared, tls, &peer, Some(&chain), e.into()).await;
            return;
        }
    };

    let request = authorized.get();
    let name = request.name.clone();
    let command = request.command.to_string();
    let serial = request
        .leaf()
        .map(|leaf| leaf.id.serial.clone())
        .unwrap_or_default();
    let mut audit_chain: Vec<AuditCert> = request
        .chain
        .iter()
        .map(|link| AuditCert::new(&link.common_name, link.id.serial.clone()))
        .collect();
    // The anchor closes the chain; if the client sent it too, list it once.
    audit_chain.dedup();
    let input_kind = request.input();
    let subscription = is_subscription(&request.command);
    let (input, input_rx) = match input_kind {
        Some(kind) => {
            let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_DEPTH);
            (Some((kind, tx)), Some(rx))
        }
        None => (None, None),
    };
    let started = Instant::now();
    let output = shared.handler.handle(ExecRequest {
        request: authorized,
        input: input_rx,
        peer: peer.clone(),
    });
    let outcome = exchange::run(
        tls,
        &name,
        input,
        output,
        subscription,
        limits,
        &shared.metrics,
    )
    .await;
    shared.metrics.command(
        &command,
        outcome.label(),
        (!subscription).then(|| started.elapsed()),
    );

    tracing::info!(
        %peer,
        name = %name,
        command = %command,
        serial = %serial,
        outcome = %outcome,
        "request"
    );
    // Behind a handler that audits (the executor process), its record is the one that
    // counts: this process may be the compromised one.
    if !shared.handler.records_requests() {
        let mut record = AuditRecord::now(AuditEvent::Request);
        record.peer = peer;
        record.name = Some(name.text());
        record.command = Some(command);
        record.chain = audit_chain;
        record.outcome = outcome.to_string();
        shared.audit.record(record);
    }
}

/// A handshake that did not complete.
struct HandshakeFailure {
    text: String,
    refusal: HandshakeRefusal,
    /// What the client presented, if verification of it failed.
    refused_chain: Vec<crate::pki::Certificate>,
}

async fn handshake(shared: &Shared, tcp: TcpStream) -> Result<Tls, HandshakeFailure> {
    let internal = |e: tls::TlsError| HandshakeFailure {
        text: e.to_string(),
        refusal: HandshakeRefusal::Protocol,
        refused_chain: Vec::new(),
    };
    let (ssl, refused) = shared.acceptor.ssl().map_err(internal)?;
    let mut stream =
        SslStream::new(ssl, tcp).map_err(|e| internal(tls::TlsError::OpenSsl(e.to_string())))?;
    let limit = shared.limits.handshake_timeout;
    match timeout(limit, Pin::new(&mut stream).accept()).await {
        Ok(Ok(())) => Ok(stream),
        Ok(Err(e)) => Err(HandshakeFailure {
            text: tls::handshake_error_text(&e, stream.ssl()),
            refusal: tls::handshake_refusal(&e, stream.ssl()),
            refused_chain: refused.certificates(),
        }),
        Err(_) => Err(HandshakeFailure {
            text: format!("handshake timeout ({} s)", limit.as_secs()),
            refusal: HandshakeRefusal::Timeout,
            refused_chain: Vec::new(),
        }),
    }
}

/// Logs a failed handshake; one whose certificate was refused is also audited.
fn handshake_failed(shared: &Shared, peer: &str, failure: HandshakeFailure) {
    let leaf = failure.refused_chain.first().map(AuditCert::of);
    tracing::info!(
        %peer,
        serial = %leaf.as_ref().map_or("-", |l| l.serial.as_str()),
        outcome = %format_args!("handshake error: {}", failure.text),
        "request"
    );
    if !failure.refused_chain.is_empty() {
        let mut record = AuditRecord::now(AuditEvent::Handshake);
        record.peer = peer.to_owned();
        record.chain = failure.refused_chain.iter().map(AuditCert::of).collect();
        record.outcome = format!("handshake error: {}", failure.text);
        shared.audit.record(record);
    }
}

/// Answers a refused request with a failure frame, closes, logs and audits.
async fn refuse(
    shared: &Shared,
    tls: Tls,
    peer: &str,
    chain: Option<&VerifiedChain>,
    error: RequestError,
) {
    let text = failure_text(&error);
    // The name if the chain yields one despite the refusal (e.g. a revoked chain).
    let decoded = chain.and_then(|c| chain::decode_request(c).ok());
    let name = decoded
        .as_ref()
        .map_or_else(Name::root, |request| request.name.clone());
    exchange::refuse(tls, &name, &text, &shared.limits, &shared.metrics).await;

    let outcome = Outcome::Refused(text);
    let audit_chain: Vec<AuditCert> = chain
        .map(|c| {
            c.certificates()
                .iter()
                .chain(
                    // The anchor, unless the client sent it (then it is already listed).
                    Some(c.anchor()).filter(|a| c.certificates().last() != Some(*a)),
                )
                .map(AuditCert::of)
                .collect()
        })
        .unwrap_or_default();
    let serial = audit_chain
        .first()
        .map(|leaf| leaf.serial.clone())
        .unwrap_or_default();
    let command = decoded.as_ref().map(|r| r.command.to_string());
    shared
        .metrics
        .command(command.as_deref().unwrap_or("-"), outcome.label(), None);
    tracing::info!(
        %peer,
        name = %name,
        command = %command.as_deref().unwrap_or("-"),
        serial = %serial,
        outcome = %outcome,
        "request"
    );
    let mut record = AuditRecord::now(AuditEvent::Refused);
    record.peer = peer.to_owned();
    record.name = decoded.as_ref().map(|r| r.name.text());
    record.command = command;
    record.chain = audit_chain;
    record.outcome = outcome.to_string();
    shared.audit.record(record);
}
