//! The server's counters across the control channel: with `--user` the TLS server (and
//! its [`ServerMetrics`](crate::metrics::ServerMetrics)) lives in the TLS worker while
//! `--metrics` and `--influx` are served by the executor process, which asks the worker
//! for a snapshot on every scrape ([`WorkerLink`](super::WorkerLink)).
//!
//! The snapshot travels as JSON. The executor does not trust it further than to report
//! it: it is bounded by the control packet size, command labels are capped at
//! [`MAX_COMMAND_LABELS`] + 1 (`other`), outcome and handshake labels must be known ones.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metrics::{CommandFigures, LATENCY_BUCKETS, MAX_COMMAND_LABELS, ServerFigures};
use crate::tls::HandshakeRefusal;

/// Every outcome label [`crate::server::Outcome::label`] produces.
pub const OUTCOME_LABELS: [&str; 5] = ["ok", "failure", "refused", "ended", "client_gone"];

/// Why a snapshot was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FiguresError {
    /// Not the JSON of a snapshot.
    #[error("figures: {0}")]
    Json(String),
    /// More command labels than the server keeps.
    #[error("figures: too many commands")]
    TooManyCommands,
    /// A label the server never produces.
    #[error("figures: unknown label {0:?}")]
    UnknownLabel(String),
    /// A histogram without one count per bucket.
    #[error("figures: {0} latency buckets, expected {n}", n = LATENCY_BUCKETS.len() + 1)]
    Buckets(usize),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    connections_open: u64,
    connections_refused: u64,
    handshakes_ok: u64,
    handshakes_refused: BTreeMap<String, u64>,
    commands: BTreeMap<String, Command>,
    bytes_in: u64,
    bytes_out: u64,
    crls_stored: u64,
    revocations_applied: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Command {
    outcomes: BTreeMap<String, u64>,
    buckets: Vec<u64>,
    seconds: f64,
}

/// `figures` as JSON.
pub fn encode(figures: &ServerFigures) -> Vec<u8> {
    let snapshot = Snapshot {
        connections_open: figures.connections_open,
        connections_refused: figures.connections_refused,
        handshakes_ok: figures.handshakes_ok,
        handshakes_refused: figures
            .handshakes_refused
            .iter()
            .map(|(refusal, n)| (refusal.label().to_owned(), *n))
            .collect(),
        commands: figures
            .commands
            .iter()
            .map(|(name, c)| {
                let command = Command {
                    outcomes: c
                        .outcomes
                        .iter()
                        .map(|(label, n)| ((*label).to_owned(), *n))
                        .collect(),
                    buckets: c.buckets.to_vec(),
                    seconds: c.seconds,
                };
                (name.clone(), command)
            })
            .collect(),
        bytes_in: figures.bytes_in,
        bytes_out: figures.bytes_out,
        crls_stored: figures.crls_stored,
        revocations_applied: figures.revocations_applied,
    };
    serde_json::to_vec(&snapshot).unwrap_or_default()
}

/// Reads a snapshot [`encode`] made.
pub fn decode(json: &[u8]) -> Result<ServerFigures, FiguresError> {
    let snapshot: Snapshot =
        serde_json::from_slice(json).map_err(|e| FiguresError::Json(e.to_string()))?;
    if snapshot.commands.len() > MAX_COMMAND_LABELS.saturating_add(1) {
        return Err(FiguresError::TooManyCommands);
    }
    let mut refused: Vec<(HandshakeRefusal, u64)> =
        HandshakeRefusal::ALL.iter().map(|r| (*r, 0)).collect();
    for (label, n) in snapshot.handshakes_refused {
        let slot = refused
            .iter_mut()
            .find(|(r, _)| r.label() == label)
            .ok_or(FiguresError::UnknownLabel(label))?;
        slot.1 = n;
    }
    let mut commands = BTreeMap::new();
    for (name, command) in snapshot.commands {
        let mut outcomes = BTreeMap::new();
        for (label, n) in command.outcomes {
            let known = OUTCOME_LABELS
                .iter()
                .find(|known| **known == label)
                .ok_or(FiguresError::UnknownLabel(label))?;
            outcomes.insert(*known, n);
        }
        let buckets = <[u64; LATENCY_BUCKETS.len() + 1]>::try_from(command.buckets.as_slice())
            .map_err(|_| FiguresError::Buckets(command.buckets.len()))?;
        commands.insert(
            name,
            CommandFigures {
                outcomes,
                buckets,
                seconds: command.seconds,
            },
        );
    }
    Ok(ServerFigures {
        connections_open: snapshot.connections_open,
        connections_refused: snapshot.connections_refused,
        handshakes_ok: snapshot.handshakes_ok,
        handshakes_refused: refused,
        commands,
        bytes_in: snapshot.bytes_in,
        bytes_out: snapshot.bytes_out,
        crls_stored: snapshot.crls_stored,
        revocations_applied: snapshot.revocations_applied,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::ServerMetrics;
    use crate::server::Outcome;

    #[test]
    fn snapshots_round_trip() {
        let metrics = ServerMetrics::default();
        let _open = metrics.connection_opened();
        metrics.connection_refused();
        metrics.handshake(Ok(()));
        metrics.handshake(Err(HandshakeRefusal::Expired));
        metrics.command("policy info", "ok", Some(Duration::from_millis(3)));
        metrics.command("stat subscribe", "ended", None);
        metrics.add_bytes_in(10);
        metrics.add_bytes_out(20);
        let figures = metrics.snapshot();
        assert_eq!(decode(&encode(&figures)), Ok(figures));
    }

    #[test]
    fn every_outcome_label_is_known() {
        for outcome in [
            Outcome::Ok,
            Outcome::Failure(String::new()),
            Outcome::Refused(String::new()),
            Outcome::Ended,
            Outcome::ClientGone(String::new()),
        ] {
            assert!(OUTCOME_LABELS.contains(&outcome.label()), "{outcome:?}");
        }
    }

    #[test]
    fn strange_snapshots_are_refused() {
        let base = |commands: &str, refused: &str| {
            format!(
                "{{\"connections_open\":0,\"connections_refused\":0,\"handshakes_ok\":0,\
                 \"handshakes_refused\":{{{refused}}},\"commands\":{{{commands}}},\
                 \"bytes_in\":0,\"bytes_out\":0,\"crls_stored\":0,\"revocations_applied\":0}}"
            )
        };
        let buckets = vec!["0"; LATENCY_BUCKETS.len() + 1].join(",");
        assert!(decode(base("", "").as_bytes()).is_ok());
        assert_eq!(
            decode(base("", "\"nope\":1").as_bytes()),
            Err(FiguresError::UnknownLabel("nope".to_owned()))
        );
        let command =
            format!("\"x\":{{\"outcomes\":{{\"won\":1}},\"buckets\":[{buckets}],\"seconds\":0}}");
        assert_eq!(
            decode(base(&command, "").as_bytes()),
            Err(FiguresError::UnknownLabel("won".to_owned()))
        );
        let command = "\"x\":{\"outcomes\":{},\"buckets\":[1],\"seconds\":0}";
        assert_eq!(
            decode(base(command, "").as_bytes()),
            Err(FiguresError::Buckets(1))
        );
        assert_eq!(
            FiguresError::Buckets(1).to_string(),
            "figures: 1 latency buckets, expected 15"
        );
        let many: Vec<String> = (0..=MAX_COMMAND_LABELS + 1)
            .map(|i| {
                format!("\"c{i}\":{{\"outcomes\":{{}},\"buckets\":[{buckets}],\"seconds\":0}}")
            })
            .collect();
        assert_eq!(
            decode(base(&many.join(","), "").as_bytes()),
            Err(FiguresError::TooManyCommands)
        );
        assert!(matches!(decode(b"[]"), Err(FiguresError::Json(_))));
    }
}
