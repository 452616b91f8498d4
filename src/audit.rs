//! The audit log: one JSON line per authorized command and per refusal, appended to
//! `<state-dir>/audit.log`.
//!
//! The file is opened once with `O_APPEND` (and `O_NOFOLLOW`), mode 0600, and only ever
//! appended to. Records are written off the request path: [`AuditLog::record`] queues a
//! record on a bounded channel and returns at once; a writer thread turns each into one
//! line and writes it with a single `write`. If the queue is full the record is dropped
//! and counted, and the writer then appends a `dropped` record with the count (and logs a
//! warning), so a gap in the log is itself on the record.
//!
//! With privilege separation (`--user`) only the executor process writes the file. It
//! writes the records of the requests it serves itself (`"source": "executor"`); the TLS
//! worker sends the records of what never reaches the executor (handshakes refused, chains
//! refused before their request is passed on) as datagrams, which the executor checks with
//! [`worker_record`] and writes with `"source": "tls-worker"` and its own clock. A
//! compromised worker can therefore make up refusals, but no record that claims the
//! executor ran something.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use crate::pki::{Certificate, CommonName};

/// File name of the audit log in the state directory.
pub const AUDIT_FILE: &str = "audit.log";

/// Mode of the audit log: it names peers and certificates, so only the operator reads it.
pub const AUDIT_FILE_MODE: u32 = 0o600;

/// What an audit record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditEvent {
    /// An authorized command; `outcome` is what the client was answered.
    Request,
    /// A verified chain whose request was refused before its command ran.
    Refused,
    /// A handshake refused because the presented certificate did not verify.
    Handshake,
    /// Records lost because the queue was full (`count` says how many).
    Dropped,
}

/// Which process wrote a record, with privilege separation (absent in one process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditSource {
    /// The executor process, about a request it served.
    Executor,
    /// The TLS worker (or an `--inetd` process), about something that never reached the
    /// executor; written by the executor on its behalf.
    TlsWorker,
}

/// One certificate of a chain, as the audit log names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCert {
    /// The subject's common name (empty if it has none).
    pub cn: String,
    /// The serial number, lower-case hex.
    pub serial: String,
}

/// The longest common name an audit record carries, in characters: a chain refused in
/// the handshake is unauthenticated, and its names could otherwise make one record as
/// long as the chain size limit. Longer names are cut and end with `…`.
pub const MAX_AUDIT_CN: usize = 256;

impl AuditCert {
    /// A certificate named `cn` (cut to [`MAX_AUDIT_CN`]) with serial `serial`.
    pub fn new(cn: &str, serial: String) -> Self {
        let cn = match cn.char_indices().nth(MAX_AUDIT_CN) {
            Some((cut, _)) => format!("{}…", &cn[..cut]),
            None => cn.to_owned(),
        };
        Self { cn, serial }
    }

    /// The common name and serial of `cert` (`?` for either if it does not parse).
    pub fn of(cert: &Certificate) -> Self {
        match cert.facts() {
            Ok(facts) => Self::new(
                &match facts.common_name {
                    CommonName::Absent => String::new(),
                    CommonName::One(cn) => cn,
                    CommonName::Several(cns) => cns.join("+"),
                },
                facts.serial.hex(),
            ),
            Err(_) => Self {
                cn: "?".to_owned(),
                serial: "?".to_owned(),
            },
        }
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// When the request finished (RFC 3339, UTC).
    pub time: String,
    /// What happened.
    pub event: AuditEvent,
    /// Which process wrote it, with privilege separation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<AuditSource>,
    /// The peer's address (`ip:port`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer: String,
    /// The request's name, if one was derived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The command (albatross's short description), if one was decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The chain, leaf first (the trust anchor last when it is known).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<AuditCert>,
    /// The outcome: `ok`, `failure: <text>`, `refused: <text>`, …
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub outcome: String,
    /// For [`AuditEvent::Dropped`]: how many records were lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl AuditRecord {
    /// A record of `event` at the current time.
    pub fn now(event: AuditEvent) -> Self {
        Self {
            time: now_rfc3339(),
            event,
            source: None,
            peer: String::new(),
            name: None,
            command: None,
            chain: Vec::new(),
            outcome: String::new(),
            count: None,
        }
    }
}

/// The longest record the TLS worker may send ([`worker_record`]): far above a record of
/// a nine-certificate chain with 64-octet names and a long failure text.
pub const MAX_WORKER_RECORD: usize = 64 * 1024;

/// Why a record the TLS worker sent is not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerRecordError {
    /// Longer than [`MAX_WORKER_RECORD`].
    #[error("longer than {MAX_WORKER_RECORD} octets")]
    TooLong,
    /// Not one JSON audit record.
    #[error("not an audit record: {0}")]
    Malformed(String),
    /// An event only the executor reports.
    #[error("the TLS worker may not report {0:?} events")]
    NotItsEvent(AuditEvent),
}

/// Checks a record the TLS worker sent (one JSON line, as [`AuditLog`] writes it) and
/// returns it as the executor writes it: marked [`AuditSource::TlsWorker`], at the
/// executor's time. Only refused handshakes and requests, and the gaps of the worker's
/// own queue, are the worker's to report; executed requests are the executor's.
pub fn worker_record(line: &[u8]) -> Result<AuditRecord, WorkerRecordError> {
    if line.len() > MAX_WORKER_RECORD {
        return Err(WorkerRecordError::TooLong);
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut record: AuditRecord =
        serde_json::from_slice(line).map_err(|e| WorkerRecordError::Malformed(e.to_string()))?;
    match record.event {
        AuditEvent::Handshake | AuditEvent::Refused | AuditEvent::Dropped => {}
        other => return Err(WorkerRecordError::NotItsEvent(other)),
    }
    record.source = Some(AuditSource::TlsWorker);
    record.time = now_rfc3339();
    Ok(record)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A handle on the audit log; cheap to clone. [`AuditLog::disabled`] discards records.
#[derive(Clone, Default)]
pub struct AuditLog {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    sender: Mutex<Option<SyncSender<AuditRecord>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("enabled", &self.inner.is_some())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl AuditLog {
    /// Opens (creating if needed) `path` for appending, mode 0600, and starts the writer
    /// with a queue of `queue` records.
    pub fn open(path: &Path, queue: usize) -> io::Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(AUDIT_FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        // An existing file keeps the mode it had; make sure it is private.
        file.set_permissions(std::fs::Permissions::from_mode(AUDIT_FILE_MODE))?;
        Self::from_file(file, queue)
    }

    /// Writes records to `file`, already open for appending, or a socket that takes one
    /// record per write (the TLS worker's end of the audit relay), with a queue of
    /// `queue` records.
    pub fn from_file(file: File, queue: usize) -> io::Result<Self> {
        let (sender, receiver) = mpsc::sync_channel(queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = std::thread::Builder::new()
            .name("petrel-audit".to_owned())
            .spawn({
                let dropped = Arc::clone(&dropped);
                move || write_records(file, &receiver, &dropped)
            })?;
        Ok(Self {
            inner: Some(Arc::new(Inner {
                sender: Mutex::new(Some(sender)),
                writer: Mutex::new(Some(writer)),
                dropped,
            })),
        })
    }

    /// An audit log that discards every record.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Queues `record` without waiting; if the queue is full the record is dropped and
    /// counted.
    pub fn record(&self, record: AuditRecord) {
        let Some(inner) = &self.inner else {
            return;
        };
        let sender = inner.sender.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sender) = sender.as_ref() else {
            return;
        };
        match sender.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if inner.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!("audit log queue full: dropping audit records");
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records dropped and not yet reported in the log.
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |inner| inner.dropped.load(Ordering::Relaxed))
    }

    /// Stops accepting records, writes what is queued and waits for the writer. Blocks;
    /// later records are discarded.
    pub fn close(&self) {
        let Some(inner) = &self.inner else {
            return;
        };
        drop(
            inner
                .sender
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        let writer = inner
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

fn write_records(mut file: File, receiver: &Receiver<AuditRecord>, dropped: &AtomicU64) {
    let mut failing = false;
    for record in receiver {
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(count = lost, "audit records dropped (queue full)");
            let mut gap = AuditRecord::now(AuditEvent::Dropped);
            gap.count = Some(lost);
            write_line(&mut file, &gap, &mut failing);
        }
        write_line(&mut file, &record, &mut failing);
    }
}

fn write_line(file: &mut File, record: &AuditRecord, failing: &mut bool) {
    let mut line = match serde_json::to_vec(record) {
        Ok(line) => line,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode audit record");
            return;
        }
    };
    line.push(b'\n');
    match file.write_all(&line) {
        Ok(()) => *failing = false,
        Err(e) => {
            if !*failing {
                tracing::error!(error = %e, "cannot write the audit log");
            }
            *failing = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_json_lines_in_a_private_append_only_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        std::fs::write(&path, "earlier line\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let log = AuditLog::open(&path, 8).unwrap();
        let mut record = AuditRecord::now(AuditEvent::Request);
        record.time = "2025-06-01T12:00:00Z".to_owned();
        record.peer = "127.0.0.1:4000".to_owned();
        record.name = Some("a:b".to_owned());
        record.command = Some("unikernel info".to_owned());
        record.chain = vec![AuditCert {
            cn: "b".to_owned(),
            serial: "0a".to_owned(),
        }];
        record.outcome = "ok".to_owned();
        log.record(record);
        log.close();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "earlier line\n{\"time\":\"2025-06-01T12:00:00Z\",\"event\":\"request\",\
             \"peer\":\"127.0.0.1:4000\",\"name\":\"a:b\",\"command\":\"unikernel info\",\
             \"chain\":[{\"cn\":\"b\",\"serial\":\"0a\"}],\"outcome\":\"ok\"}\n"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // After close, records are discarded (and counted).
        log.record(AuditRecord::now(AuditEvent::Refused));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn a_full_queue_drops_and_reports_the_gap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        let (sender, receiver) = mpsc::sync_channel(1);
        let dropped = Arc::new(AtomicU64::new(0));
        // No writer yet: the second and third records do not fit.
        let log = AuditLog {
            inner: Some(Arc::new(Inner {
                sender: Mutex::new(Some(sender)),
                writer: Mutex::new(None),
                dropped: Arc::clone(&dropped),
            })),
        };
        for peer in ["a", "b", "c"] {
            let mut record = AuditRecord::now(AuditEvent::Refused);
            record.peer = peer.to_owned();
            log.record(record);
        }
        assert_eq!(log.dropped(), 2);
        log.close();
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .unwrap();
        write_records(file, &receiver, &dropped);
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "dropped");
        assert_eq!(lines[0]["count"], 2);
        assert_eq!(lines[1]["event"], "refused");
        assert_eq!(lines[1]["peer"], "a");
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn long_names_are_cut() {
        let long = "é".repeat(MAX_AUDIT_CN + 10);
        let cert = AuditCert::new(&long, "01".to_owned());
        assert_eq!(cert.cn.chars().count(), MAX_AUDIT_CN + 1);
        assert!(cert.cn.ends_with('…'));
        let short = AuditCert::new("foo", "01".to_owned());
        assert_eq!(short.cn, "foo");
    }

    #[test]
    fn worker_records_are_checked_and_marked() {
        let mut sent = AuditRecord::now(AuditEvent::Handshake);
        sent.time = "1999-01-01T00:00:00Z".to_owned();
        sent.peer = "192.0.2.1:4000".to_owned();
        sent.outcome = "handshake error: certificate expired".to_owned();
        let mut line = serde_json::to_vec(&sent).unwrap();
        line.push(b'\n');
        let got = worker_record(&line).unwrap();
        assert_eq!(got.source, Some(AuditSource::TlsWorker));
        assert_ne!(
            got.time, sent.time,
            "the executor's clock, not the worker's"
        );
        assert_eq!(
            (got.peer.as_str(), got.outcome.as_str()),
            (sent.peer.as_str(), sent.outcome.as_str())
        );
        let json = serde_json::to_value(&got).unwrap();
        assert_eq!(json["source"], "tls-worker");

        // A worker claiming the executor's records, or a source, or sending garbage.
        let request = serde_json::to_vec(&AuditRecord::now(AuditEvent::Request)).unwrap();
        assert_eq!(
            worker_record(&request),
            Err(WorkerRecordError::NotItsEvent(AuditEvent::Request))
        );
        let mut claimed = AuditRecord::now(AuditEvent::Refused);
        claimed.source = Some(AuditSource::Executor);
        let claimed = serde_json::to_vec(&claimed).unwrap();
        assert_eq!(
            worker_record(&claimed).map(|r| r.source),
            Ok(Some(AuditSource::TlsWorker))
        );
        for garbage in [
            &b"not json"[..],
            b"{}",
            b"{\"time\":\"t\",\"event\":\"refused\",\"extra\":1}",
            b"{\"time\":\"t\",\"event\":\"refused\"}\n{\"time\":\"t\",\"event\":\"refused\"}",
        ] {
            assert!(
                matches!(worker_record(garbage), Err(WorkerRecordError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(garbage)
            );
        }
        assert_eq!(
            worker_record(&vec![b' '; MAX_WORKER_RECORD + 1]),
            Err(WorkerRecordError::TooLong)
        );
    }

    #[test]
    fn refuses_to_follow_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "").unwrap();
        let link = dir.path().join(AUDIT_FILE);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = AuditLog::open(&link, 8).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
    }
}
