//! The endpoint's metrics: its own figures ([`ServerMetrics`], counted by the server as
//! connections come and go) and the unikernels' statistics (the executor's latest
//! [`StatsRound`]), as metric families ([`MetricsSource::families`]) rendered in the
//! Prometheus text exposition format ([`render_prometheus`], served by [`http`] on
//! `--metrics`) or as Influx line protocol ([`render_influx`], pushed by [`influx`] to
//! `--influx`).
//!
//! Families (see also docs/operations.md):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `petrel_connections_open` | gauge | |
//! | `petrel_connections_refused_total` | counter | (at the connection limit) |
//! | `petrel_handshakes_total` | counter | `result`: `ok` or a [`HandshakeRefusal`] label |
//! | `petrel_commands_total` | counter | `command`, `outcome` |
//! | `petrel_command_duration_seconds` | histogram | `command` (subscriptions excluded) |
//! | `petrel_stream_bytes_total` | counter | `direction`: `in`, `out` |
//! | `petrel_crls_stored` | gauge | |
//! | `petrel_revocations_applied_total` | counter | |
//! | `petrel_unikernels_running` | gauge | |
//! | `petrel_stats_sample_seconds` | gauge | (duration of the last sampling round) |
//! | `petrel_unikernel_cpu_seconds_total` | counter | `name` |
//! | `petrel_unikernel_memory_bytes` | gauge | `name` |
//! | `petrel_unikernel_memory_limit_bytes` | gauge | `name` (in a cgroup only) |
//! | `petrel_unikernel_network_{receive,transmit}_{bytes,packets,errors,drops}_total` | counter | `name`, `interface` |
//!
//! Network counters are the host-side tap's: `receive` is what the unikernel sent.
//! `petrel_crls_stored` (issuers with a CRL in force) and
//! `petrel_revocations_applied_total` (certificates newly revoked by uploads and operator
//! CRLs) are read from the executor at each scrape.

pub mod http;
pub mod influx;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::executor::Executor;
use crate::executor::stats::StatsRound;
use crate::tls::HandshakeRefusal;

/// Upper bounds (seconds) of the command latency histogram's buckets: from an `info`
/// answered in about a millisecond to a create that streams a large image over a slow
/// link or waits for a tender's stop timeout (10 s) and more.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Most distinct command labels counted (the command grammar has about 30); beyond it new
/// ones are counted as `other`, so the metrics cannot grow without bound.
pub const MAX_COMMAND_LABELS: usize = 64;

/// The server's own counters; cheap to update from any task.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    connections_open: AtomicU64,
    connections_refused: AtomicU64,
    handshakes_ok: AtomicU64,
    handshakes_refused: [AtomicU64; HandshakeRefusal::ALL.len()],
    commands: Mutex<BTreeMap<String, CommandFigures>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    crls_stored: AtomicU64,
    revocations_applied: AtomicU64,
}

/// Counts and latencies of one command.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandFigures {
    /// Requests by outcome label.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Requests per latency bucket ([`LATENCY_BUCKETS`], then `+Inf`), not cumulative.
    pub buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// Sum of the latencies, in seconds.
    pub seconds: f64,
}

impl CommandFigures {
    fn observe(&mut self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(count) = self.buckets.get_mut(bucket) {
            *count += 1;
        }
        self.seconds += seconds;
    }

    fn observed(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// Keeps `petrel_connections_open` counted while a connection is handled.
#[derive(Debug)]
pub struct OpenConnection<'a>(&'a ServerMetrics);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ServerMetrics {
    /// Counts an open connection until the guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection<'_> {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self)
    }

    /// A connection closed at once because of the connection limit.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A handshake that completed (`Ok`) or was refused.
    pub fn handshake(&self, result: Result<(), HandshakeRefusal>) {
        match result {
            Ok(()) => self.handshakes_ok.fetch_add(1, Ordering::Relaxed),
            Err(refusal) => {
                let i = HandshakeRefusal::ALL
                    .iter()
                    .position(|r| *r == refusal)
                    .unwrap_or(0);
                self.handshakes_refused
                    .get(i)
                    .map_or(0, |c| c.fetch_add(1, Ordering::Relaxed))
            }
        };
    }

    /// A request for `command` (its display text, `-` if none could be decoded) that
    /// ended with `outcome`, after `latency` (`None`: not observed, for subscriptions).
    pub fn command(&self, command: &str, outcome: &'static str, latency: Option<Duration>) {
        let mut commands = self.commands();
        let key = if commands.contains_key(command) || commands.len() < MAX_COMMAND_LABELS {
            command
        } else {
            "other"
        };
        let figures = commands.entry(key.to_owned()).or_default();
        *figures.outcomes.entry(outcome).or_default() += 1;
        if let Some(latency) = latency {
            figures.observe(latency);
        }
    }

    /// Octets of chunks received after the handshake (headers included).
    pub fn add_bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Octets of frames sent after the handshake (headers included).
    pub fn add_bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// The number of CRLs in the revocation store now.
    pub fn set_crls_stored(&self, n: u64) {
        self.crls_stored.store(n, Ordering::Relaxed);
    }

    /// `n` more revocations were applied (certificates newly revoked).
    pub fn add_revocations_applied(&self, n: u64) {
        self.revocations_applied.fetch_add(n, Ordering::Relaxed);
    }

    /// The number of revocations applied so far (certificates newly revoked), as the
    /// executor counts them.
    pub fn set_revocations_applied(&self, n: u64) {
        self.revocations_applied.store(n, Ordering::Relaxed);
    }

    fn commands(&self) -> MutexGuard<'_, BTreeMap<String, CommandFigures>> {
        self.commands.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The figures now.
    pub fn snapshot(&self) -> ServerFigures {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServerFigures {
            connections_open: load(&self.connections_open),
            connections_refused: load(&self.connections_refused),
            handshakes_ok: load(&self.handshakes_ok),
            handshakes_refused: HandshakeRefusal::ALL
                .iter()
                .zip(&self.handshakes_refused)
                .map(|(r, c)| (*r, load(c)))
                .collect(),
            commands: self.commands().clone(),
            bytes_in: load(&self.bytes_in),
            bytes_out: load(&self.bytes_out),
            crls_stored: load(&self.crls_stored),
            revocations_applied: load(&self.revocations_applied),
        }
    }
}

/// [`ServerMetrics`] at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerFigures {
    /// Connections being handled.
    pub connections_open: u64,
    /// Connections closed at the connection limit.
    pub connections_refused: u64,
    /// Handshakes completed.
    pub handshakes_ok: u64,
    /// Handshakes refused, by reason (every reason, in [`HandshakeRefusal::ALL`] order).
    pub handshakes_refused: Vec<(HandshakeRefusal, u64)>,
    /// Requests by command.
    pub commands: BTreeMap<String, CommandFigures>,
    /// Octets received after handshakes.
    pub bytes_in: u64,
    /// Octets sent after handshakes.
    pub bytes_out: u64,
    /// CRLs stored.
    pub crls_stored: u64,
    /// Revocations applied.
    pub revocations_applied: u64,
}

/// What a family measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// One series' value: `name` + `suffix` (`_bucket`, `_sum`, `_count` for histograms),
/// labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Appended to the family name.
    pub suffix: &'static str,
    /// Label names and values, in order.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: f64,
}

/// A metric family.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The metric name.
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Its series.
    pub samples: Vec<Sample>,
}

impl Family {
    fn new(name: &'static str, help: &'static str, kind: Kind) -> Self {
        Self {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn push(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push(Sample {
            suffix: "",
            labels,
            value,
        });
    }

    fn single(name: &'static str, help: &'static str, kind: Kind, value: f64) -> Self {
        let mut family = Self::new(name, help, kind);
        family.push(Vec::new(), value);
        family
    }
}

/// What the families are made of: the server's counters and, with an executor, its
/// unikernels.
#[derive(Clone)]
pub struct MetricsSource {
    server: Arc<ServerMetrics>,
    executor: Option<Executor>,
    remote: Option<Arc<dyn RemoteFigures>>,
}

/// The server's counters when the server runs in another process (the TLS worker of
/// `--user`, see [`crate::privsep`]).
pub trait RemoteFigures: Send + Sync + 'static {
    /// The counters now; `None` if the other process cannot say.
    fn figures(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<ServerFigures>> + Send + '_>>;
}

impl std::fmt::Debug for MetricsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsSource")
            .field("server", &self.server)
            .field("executor", &self.executor.is_some())
            .field("remote", &self.remote.is_some())
            .finish()
    }
}

impl MetricsSource {
    /// The server's counters and `executor`'s unikernels. With an executor, statistics
    /// are sampled every interval from now on (see
    /// [`Executor::sample_continuously`]).
    pub fn new(server: Arc<ServerMetrics>, executor: Option<Executor>) -> Self {
        if let Some(executor) = &executor {
            executor.sample_continuously(true);
        }
        Self {
            server,
            executor,
            remote: None,
        }
    }

    /// Like [`MetricsSource::new`], with the server's counters asked of `remote` at each
    /// [`MetricsSource::collect`] (the local `server` counters stand in when it cannot
    /// answer).
    pub fn with_remote(
        server: Arc<ServerMetrics>,
        executor: Option<Executor>,
        remote: Arc<dyn RemoteFigures>,
    ) -> Self {
        Self {
            remote: Some(remote),
            ..Self::new(server, executor)
        }
    }

    /// Every family now, asking the remote server for its counters first if there is one.
    pub async fn collect(&self) -> Vec<Family> {
        let remote = match &self.remote {
            Some(remote) => remote.figures().await,
            None => None,
        };
        self.families_with(remote)
    }

    /// Every family now, from the local counters.
    pub fn families(&self) -> Vec<Family> {
        self.families_with(None)
    }

    fn families_with(&self, remote: Option<ServerFigures>) -> Vec<Family> {
        if let Some(executor) = &self.executor {
            let stored = executor.revocations().current().issuers();
            self.server
                .set_crls_stored(u64::try_from(stored).unwrap_or(u64::MAX));
            self.server
                .set_revocations_applied(executor.revocations_applied());
        }
        let local = self.server.snapshot();
        let figures = match remote {
            Some(remote) => ServerFigures {
                crls_stored: local.crls_stored,
                revocations_applied: local.revocations_applied,
                ..remote
            },
            None => local,
        };
        let unikernels = self
            .executor
            .as_ref()
            .map(|e| (e.running(), e.statistics()));
        families(
            &figures,
            unikernels.as_ref().map(|(n, round)| (*n, round.as_deref())),
        )
    }
}

/// The families of `server` and, if given, the number of running unikernels and the
/// latest statistics round.
pub fn families(
    server: &ServerFigures,
    unikernels: Option<(usize, Option<&StatsRound>)>,
) -> Vec<Family> {
    let count = |n: u64| n as f64;
    let mut out = vec![
        Family::single(
            "petrel_connections_open",
            "Connections being handled.",
            Kind::Gauge,
            count(server.connections_open),
        ),
        Family::single(
            "petrel_connections_refused_total",
            "Connections closed at once because of the connection limit.",
            Kind::Counter,
            count(server.connections_refused),
        ),
    ];
    let mut handshakes = Family::new(
        "petrel_handshakes_total",
        "TLS handshakes by result: ok, or why they were refused.",
        Kind::Counter,
    );
    handshakes.push(
        vec![("result", "ok".to_owned())],
        count(server.handshakes_ok),
    );
    for (refusal, n) in &server.handshakes_refused {
        handshakes.push(vec![("result", refusal.label().to_owned())], count(*n));
    }
    out.push(handshakes);

    let mut commands = Family::new(
        "petrel_commands_total",
        "Requests after the handshake by command and outcome (ok, failure, refused, ended, client_gone).",
        Kind::Counter,
    );
    let mut latency = Family::new(
        "petrel_command_duration_seconds",
        "Time from the authorized request to the end of its exchange (subscriptions excluded).",
        Kind::Histogram,
    );
    for (command, figures) in &server.commands {
        for (outcome, n) in &figures.outcomes {
            commands.push(
                vec![
                    ("command", command.clone()),
                    ("outcome", (*outcome).to_owned()),
                ],
                count(*n),
            );
        }
        if figures.observed() == 0 {
            continue;
        }
        let mut cumulative = 0;
        for (i, n) in figures.buckets.iter().enumerate() {
            cumulative += n;
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| format_value(*b));
            latency.samples.push(Sample {
                suffix: "_bucket",
                labels: vec![("command", command.clone()), ("le", le)],
                value: count(cumulative),
            });
        }
        latency.samples.push(Sample {
            suffix: "_sum",
            labels: vec![("command", command.clone())],
            value: figures.seconds,
        });
        latency.samples.push(Sample {
            suffix: "_count",
            labels: vec![("command", command.clone())],
            value: count(figures.observed()),
        });
    }
    out.push(commands);
    out.push(latency);

    let mut bytes = Family::new(
        "petrel_stream_bytes_total",
        "Octets of frames and chunks after the handshake, by direction.",
        Kind::Counter,
    );
    bytes.push(vec![("direction", "in".to_owned())], count(server.bytes_in));
    bytes.push(
        vec![("direction", "out".to_owned())],
        count(server.bytes_out),
    );
    out.push(bytes);
    out.push(Family::single(
        "petrel_crls_stored",
        "CRLs in the revocation store.",
        Kind::Gauge,
        count(server.crls_stored),
    ));
    out.push(Family::single(
        "petrel_revocations_applied_total",
        "Certificates newly revoked by CRLs applied.",
        Kind::Counter,
        count(server.revocations_applied),
    ));
    if let Some((running, round)) = unikernels {
        out.push(Family::single(
            "petrel_unikernels_running",
            "Unikernels running.",
            Kind::Gauge,
            running as f64,
        ));
        if let Some(round) = round {
            out.push(Family::single(
                "petrel_stats_sample_seconds",
                "Duration of the last statistics sampling round.",
                Kind::Gauge,
                round.duration.as_secs_f64(),
            ));
            out.extend(unikernel_families(round));
        }
    }
    out
}

/// The per-unikernel families of `round`.
fn unikernel_families(round: &StatsRound) -> Vec<Family> {
    let mut cpu = Family::new(
        "petrel_unikernel_cpu_seconds_total",
        "CPU time of the unikernel's tender (its cgroup's if it runs in one).",
        Kind::Counter,
    );
    let mut memory = Family::new(
        "petrel_unikernel_memory_bytes",
        "Memory of the unikernel's tender (charged to its cgroup, else resident).",
        Kind::Gauge,
    );
    let mut limit = Family::new(
        "petrel_unikernel_memory_limit_bytes",
        "Memory limit of the unikernel's cgroup.",
        Kind::Gauge,
    );
    type Pick = fn(&crate::codec::IfData) -> i64;
    let network: [(&'static str, &'static str, Pick); 8] = [
        (
            "petrel_unikernel_network_receive_bytes_total",
            "Octets the host-side tap received (sent by the unikernel).",
            |i| i.input_bytes,
        ),
        (
            "petrel_unikernel_network_receive_packets_total",
            "Packets the host-side tap received (sent by the unikernel).",
            |i| i.input_packets,
        ),
        (
            "petrel_unikernel_network_receive_errors_total",
            "Receive errors of the host-side tap.",
            |i| i.input_errors,
        ),
        (
            "petrel_unikernel_network_receive_drops_total",
            "Packets the host-side tap dropped on receive.",
            |i| i.input_dropped,
        ),
        (
            "petrel_unikernel_network_transmit_bytes_total",
            "Octets the host-side tap sent (to the unikernel).",
            |i| i.output_bytes,
        ),
        (
            "petrel_unikernel_network_transmit_packets_total",
            "Packets the host-side tap sent (to the unikernel).",
            |i| i.output_packets,
        ),
        (
            "petrel_unikernel_network_transmit_errors_total",
            "Transmit errors of the host-side tap.",
            |i| i.output_errors,
        ),
        (
            "petrel_unikernel_network_transmit_drops_total",
            "Packets the host-side tap dropped on transmit (the unikernel did not read them).",
            |i| i.output_dropped,
        ),
    ];
    let mut nets: Vec<Family> = network
        .iter()
        .map(|(name, help, _)| Family::new(name, help, Kind::Counter))
        .collect();
    for sample in &round.samples {
        let name = sample.name.text();
        cpu.push(
            vec![("name", name.clone())],
            sample.cpu_ns as f64 / 1_000_000_000.0,
        );
        memory.push(vec![("name", name.clone())], sample.memory_bytes as f64);
        if let Some(bytes) = sample.memory_limit_bytes {
            limit.push(vec![("name", name.clone())], bytes as f64);
        }
        for ifdata in &sample.data.ifdata {
            for (family, (_, _, pick)) in nets.iter_mut().zip(&network) {
                family.push(
                    vec![("name", name.clone()), ("interface", ifdata.bridge.clone())],
                    pick(ifdata) as f64,
                );
            }
        }
    }
    let mut out = vec![cpu, memory];
    if !limit.samples.is_empty() {
        out.push(limit);
    }
    out.extend(nets.into_iter().filter(|f| !f.samples.is_empty()));
    out
}

/// A value as Prometheus and Influx read it (`+Inf`, `-Inf`, `NaN`, else Rust's shortest
/// round-trip decimal form).
pub fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{value}")
    }
}

/// The Prometheus text exposition format (version 0.0.4) of `families`.
pub fn render_prometheus(families: &[Family]) -> String {
    let mut out = String::new();
    for family in families {
        let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(family.help));
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
        for sample in &family.samples {
            out.push_str(family.name);
            out.push_str(sample.suffix);
            if !sample.labels.is_empty() {
                out.push('{');
                for (i, (key, value)) in sample.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{key}=\"{}\"", escape_label(value));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", format_value(sample.value));
        }
    }
    out
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Influx line protocol of `families` at `timestamp_ns` (nanoseconds since the epoch):
/// one line per series, the measurement being the series' name, its labels the tags
/// (sorted; empty values left out, the protocol has none), the value the field `value`.
pub fn render_influx(families: &[Family], timestamp_ns: u128) -> String {
    let mut out = String::new();
    for family in families {
        for sample in &family.samples {
            out.push_str(&escape_influx(family.name, false));
            out.push_str(sample.suffix);
            let mut tags: Vec<&(&'static str, String)> = sample
                .labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .collect();
            tags.sort_by_key(|(k, _)| *k);
            for (key, value) in tags {
                let _ = write!(
                    out,
                    ",{}={}",
                    escape_influx(key, true),
                    escape_influx(value, true)
                );
            }
            let _ = writeln!(out, " value={} {timestamp_ns}", format_value(sample.value));
        }
    }
    out
}

/// Escapes a measurement (`,` and space) or a tag key or value (also `=`).
fn escape_influx(text: &str, tag: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == ',' || c == ' ' || (tag && c == '=') || c == '\\' {
            out.push('\\');
        }
        if c == '\n' {
            out.push_str("\\n");
            continue;
        }
        out.push(c);
    }
    out
}

/// Nanoseconds since the epoch of `at`.
pub fn unix_nanos(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// `--metrics`: `PORT` (on 127.0.0.1), `IP:PORT` or `[IPv6]:PORT`.
pub fn parse_listen_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    text.parse::<SocketAddr>()
        .map_err(|_| format!("{text:?} is not PORT, IP:PORT or [IPv6]:PORT"))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::codec::{IfData, RUsage, StatsData, Timeval};
    use crate::executor::stats::UnikernelSample;
    use crate::name::Name;

    fn zero_rusage() -> RUsage {
        let t = Timeval {
            seconds: 0,
            microseconds: 0,
        };
        RUsage {
            utime: t,
            stime: t,
            maxrss: 0,
            ixrss: 0,
            idrss: 0,
            isrss: 0,
            minflt: 0,
            majflt: 0,
            nswap: 0,
            inblock: 0,
            outblock: 0,
            msgsnd: 0,
            msgrcv: 0,
            nsignals: 0,
            nvcsw: 0,
            nivcsw: 0,
        }
    }

    fn ifdata(netif: &str) -> IfData {
        IfData {
            bridge: netif.into(),
            flags: 0,
            send_length: 0,
            max_send_length: 0,
            send_drops: 0,
            mtu: 1500,
            baudrate: 0,
            input_packets: 2,
            input_errors: 0,
            output_packets: 3,
            output_errors: 0,
            collisions: 0,
            input_bytes: 200,
            output_bytes: 300,
            input_mcast: 0,
            output_mcast: 0,
            input_dropped: 0,
            output_dropped: 1,
        }
    }

    #[test]
    fn counters_and_rendering() {
        let metrics = ServerMetrics::default();
        {
            let _open = metrics.connection_opened();
            let _other = metrics.connection_opened();
            assert_eq!(metrics.snapshot().connections_open, 2);
        }
        let _open = metrics.connection_opened();
        metrics.connection_refused();
        metrics.handshake(Ok(()));
        metrics.handshake(Ok(()));
        metrics.handshake(Err(HandshakeRefusal::Expired));
        metrics.command("unikernel info", "ok", Some(Duration::from_millis(3)));
        metrics.command("unikernel info", "ok", Some(Duration::from_secs(100)));
        metrics.command(
            "unikernel destroy",
            "failure",
            Some(Duration::from_micros(500)),
        );
        metrics.command("stat subscribe", "ended", None);
        metrics.add_bytes_in(10);
        metrics.add_bytes_out(20);
        metrics.add_bytes_out(5);
        metrics.set_crls_stored(2);
        metrics.add_revocations_applied(3);
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.connections_open, 1);
        assert_eq!(
            snapshot.handshakes_refused[1],
            (HandshakeRefusal::Expired, 1)
        );

        let round = StatsRound {
            at: SystemTime::now(),
            taken: Instant::now(),
            duration: Duration::from_millis(250),
            samples: vec![UnikernelSample {
                name: Name::parse("a:web").unwrap(),
                data: StatsData {
                    resource_usage: zero_rusage(),
                    ifdata: vec![ifdata("service")],
                    vmm_stats: None,
                    kinfo_mem: None,
                },
                cpu_ns: 1_500_000_000,
                memory_bytes: 4096,
                memory_limit_bytes: Some(8192),
            }],
        };
        let text = render_prometheus(&families(&snapshot, Some((1, Some(&round)))));
        let expected = r#"# HELP petrel_connections_open Connections being handled.
# TYPE petrel_connections_open gauge
petrel_connections_open 1
# HELP petrel_connections_refused_total Connections closed at once because of the connection limit.
# TYPE petrel_connections_refused_total counter
petrel_connections_refused_total 1
# HELP petrel_handshakes_total TLS handshakes by result: ok, or why they were refused.
# TYPE petrel_handshakes_total counter
petrel_handshakes_total{result="ok"} 2
petrel_handshakes_total{result="unknown_ca"} 0
petrel_handshakes_total{result="expired"} 1
petrel_handshakes_total{result="not_yet_valid"} 0
petrel_handshakes_total{result="critical_extension"} 0
petrel_handshakes_total{result="bad_signature"} 0
petrel_handshakes_total{result="chain_too_long"} 0
petrel_handshakes_total{result="bad_certificate"} 0
petrel_handshakes_total{result="no_certificate"} 0
petrel_handshakes_total{result="too_large"} 0
petrel_handshakes_total{result="timeout"} 0
petrel_handshakes_total{result="no_slot"} 0
petrel_handshakes_total{result="closed"} 0
petrel_handshakes_total{result="protocol"} 0
# HELP petrel_commands_total Requests after the handshake by command and outcome (ok, failure, refused, ended, client_gone).
# TYPE petrel_commands_total counter
petrel_commands_total{command="stat subscribe",outcome="ended"} 1
petrel_commands_total{command="unikernel destroy",outcome="failure"} 1
petrel_commands_total{command="unikernel info",outcome="ok"} 2
# HELP petrel_command_duration_seconds Time from the authorized request to the end of its exchange (subscriptions excluded).
# TYPE petrel_command_duration_seconds histogram
petrel_command_duration_seconds_bucket{command="unikernel destroy",le="0.001"} 1
petrel_command_duration_seconds_bucket{command="unikernel destroy",le="0.005"} 1
petrel_command_duration_seconds_bucket{command="unikernel destroy",le="0.01"} 1
petrel_command_duration_seconds_bucket{command="unikernel destroy",le="0.025"} 1
petrel_command_duration_seconds_bucket{command="unikernel destroy",le="0.05"} 1
petrel_command_duration_seconds_bucket{command="unikernel destroy",le="0.1"} 1
petrel_command_duration_seconds_bucket{command="unikernel destroy",le="0.25"} 1
petrel_command_duration_seconds_bucket{command="unikernel destroy",le="0.5"} 1
petrel_command_duration_seconds_bucket{command="unikernel destroy",le="1"} 1
petrel_command_duration_seconds_bucket{command="unikernel destroy",le="2.5"} 1
petrel_command_duration_seconds_bucket{command="unikernel destroy",le="5"} 1
petrel_command_duration_seconds_bucket{command="unikernel destroy",le="10"} 1
petrel_command_duration_seconds_bucket{command="unikernel destroy",le="30"} 1
petrel_command_duration_seconds_bucket{command="unikernel destroy",le="60"} 1
petrel_command_duration_seconds_bucket{command="unikernel destroy",le="+Inf"} 1
petrel_command_duration_seconds_sum{command="unikernel destroy"} 0.0005
petrel_command_duration_seconds_count{command="unikernel destroy"} 1
petrel_command_duration_seconds_bucket{command="unikernel info",le="0.001"} 0
petrel_command_duration_seconds_bucket{command="unikernel info",le="0.005"} 1
petrel_command_duration_seconds_bucket{command="unikernel info",le="0.01"} 1
petrel_command_duration_seconds_bucket{command="unikernel info",le="0.025"} 1
petrel_command_duration_seconds_bucket{command="unikernel info",le="0.05"} 1
petrel_command_duration_seconds_bucket{command="unikernel info",le="0.1"} 1
petrel_command_duration_seconds_bucket{command="unikernel info",le="0.25"} 1
petrel_command_duration_seconds_bucket{command="unikernel info",le="0.5"} 1
petrel_command_duration_seconds_bucket{command="unikernel info",le="1"} 1
petrel_command_duration_seconds_bucket{command="unikernel info",le="2.5"} 1
petrel_command_duration_seconds_bucket{command="unikernel info",le="5"} 1
petrel_command_duration_seconds_bucket{command="unikernel info",le="10"} 1
petrel_command_duration_seconds_bucket{command="unikernel info",le="30"} 1
petrel_command_duration_seconds_bucket{command="unikernel info",le="60"} 1
petrel_command_duration_seconds_bucket{command="unikernel info",le="+Inf"} 2
petrel_command_duration_seconds_sum{command="unikernel info"} 100.003
petrel_command_duration_seconds_count{command="unikernel info"} 2
# HELP petrel_stream_bytes_total Octets of frames and chunks after the handshake, by direction.
# TYPE petrel_stream_bytes_total counter
petrel_stream_bytes_total{direction="in"} 10
petrel_stream_bytes_total{direction="out"} 25
# HELP petrel_crls_stored CRLs in the revocation store.
# TYPE petrel_crls_stored gauge
petrel_crls_stored 2
# HELP petrel_revocations_applied_total Certificates newly revoked by CRLs applied.
# TYPE petrel_revocations_applied_total counter
petrel_revocations_applied_total 3
# HELP petrel_unikernels_running Unikernels running.
# TYPE petrel_unikernels_running gauge
petrel_unikernels_running 1
# HELP petrel_stats_sample_seconds Duration of the last statistics sampling round.
# TYPE petrel_stats_sample_seconds gauge
petrel_stats_sample_seconds 0.25
# HELP petrel_unikernel_cpu_seconds_total CPU time of the unikernel's tender (its cgroup's if it runs in one).
# TYPE petrel_unikernel_cpu_seconds_total counter
petrel_unikernel_cpu_seconds_total{name="a:web"} 1.5
# HELP petrel_unikernel_memory_bytes Memory of the unikernel's tender (charged to its cgroup, else resident).
# TYPE petrel_unikernel_memory_bytes gauge
petrel_unikernel_memory_bytes{name="a:web"} 4096
# HELP petrel_unikernel_memory_limit_bytes Memory limit of the unikernel's cgroup.
# TYPE petrel_unikernel_memory_limit_bytes gauge
petrel_unikernel_memory_limit_bytes{name="a:web"} 8192
# HELP petrel_unikernel_network_receive_bytes_total Octets the host-side tap received (sent by the unikernel).
# TYPE petrel_unikernel_network_receive_bytes_total counter
petrel_unikernel_network_receive_bytes_total{name="a:web",interface="service"} 200
# HELP petrel_unikernel_network_receive_packets_total Packets the host-side tap received (sent by the unikernel).
# TYPE petrel_unikernel_network_receive_packets_total counter
petrel_unikernel_network_receive_packets_total{name="a:web",interface="service"} 2
# HELP petrel_unikernel_network_receive_errors_total Receive errors of the host-side tap.
# TYPE petrel_unikernel_network_receive_errors_total counter
petrel_unikernel_network_receive_errors_total{name="a:web",interface="service"} 0
# HELP petrel_unikernel_network_receive_drops_total Packets the host-side tap dropped on receive.
# TYPE petrel_unikernel_network_receive_drops_total counter
petrel_unikernel_network_receive_drops_total{name="a:web",interface="service"} 0
# HELP petrel_unikernel_network_transmit_bytes_total Octets the host-side tap sent (to the unikernel).
# TYPE petrel_unikernel_network_transmit_bytes_total counter
petrel_unikernel_network_transmit_bytes_total{name="a:web",interface="service"} 300
# HELP petrel_unikernel_network_transmit_packets_total Packets the host-side tap sent (to the unikernel).
# TYPE petrel_unikernel_network_transmit_packets_total counter
petrel_unikernel_network_transmit_packets_total{name="a:web",interface="service"} 3
# HELP petrel_unikernel_network_transmit_errors_total Transmit errors of the host-side tap.
# TYPE petrel_unikernel_network_transmit_errors_total counter
petrel_unikernel_network_transmit_errors_total{name="a:web",interface="service"} 0
# HELP petrel_unikernel_network_transmit_drops_total Packets the host-side tap dropped on transmit (the unikernel did not read them).
# TYPE petrel_unikernel_network_transmit_drops_total counter
petrel_unikernel_network_transmit_drops_total{name="a:web",interface="service"} 1
"#;
        assert_eq!(text, expected);
    }

    #[test]
    fn influx_lines() {
        let mut family = Family::new("petrel_x_total", "x", Kind::Counter);
        family.push(
            vec![
                ("name", "a:web".into()),
                ("interface", "with space,comma=eq".into()),
            ],
            3.0,
        );
        family.push(vec![("empty", String::new())], 0.5);
        assert_eq!(
            render_influx(&[family], 1_700_000_000_000_000_000),
            "petrel_x_total,interface=with\\ space\\,comma\\=eq,name=a:web value=3 1700000000000000000\n\
             petrel_x_total value=0.5 1700000000000000000\n"
        );
    }

    #[test]
    fn escapes_and_values() {
        let mut family = Family::new("petrel_x", "help with \\ and\nnewline", Kind::Gauge);
        family.push(vec![("name", "a\"b\\c\nd".into())], f64::INFINITY);
        assert_eq!(
            render_prometheus(&[family]),
            "# HELP petrel_x help with \\\\ and\\nnewline\n# TYPE petrel_x gauge\n\
             petrel_x{name=\"a\\\"b\\\\c\\nd\"} +Inf\n"
        );
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(-f64::INFINITY), "-Inf");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(1e21), "1000000000000000000000");
    }

    #[test]
    fn command_labels_are_bounded() {
        let metrics = ServerMetrics::default();
        for i in 0..MAX_COMMAND_LABELS + 3 {
            metrics.command(&format!("c{i}"), "ok", None);
        }
        let commands = metrics.snapshot().commands;
        assert_eq!(commands.len(), MAX_COMMAND_LABELS + 1);
        assert_eq!(commands["other"].outcomes["ok"], 3);
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen_address("9100").unwrap(),
            "127.0.0.1:9100".parse().unwrap()
        );
        assert_eq!(
            parse_listen_address("0.0.0.0:9100").unwrap(),
            "0.0.0.0:9100".parse().unwrap()
        );
        assert_eq!(
            parse_listen_address("[::1]:9100").unwrap(),
            "[::1]:9100".parse().unwrap()
        );
        assert_eq!(
            parse_listen_address("localhost:9100").unwrap_err(),
            "\"localhost:9100\" is not PORT, IP:PORT or [IPv6]:PORT"
        );
    }
}
