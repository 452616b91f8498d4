//! The audit log: one JSON line per authorized command and per refusal, appended to
//! `<state-dir>/audit.log`.
//!
//! The file is opened once with `O_APPEND` (and `O_NOFOLLOW`), mode 0600, and only ever
//! appended to. Records are written off the request path: [`AuditLog::record`] queues a
//! record on a bounded channel and returns at once; a writer thread turns each into one
//! line and writes it with a single `write`. If the queue is full the record is dropped
//! and counted, and the writer then appends a `dropped` record with the count (and logs a
//! warning), so a gap in the log is itself on the record.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::Serialize;

use crate::pki::{Certificate, CommonName};

/// File name of the audit log in the state directory.
pub const AUDIT_FILE: &str = "audit.log";

/// Mode of the audit log: it names peers and certificates, so only the operator reads it.
pub const AUDIT_FILE_MODE: u32 = 0o600;

/// What an audit record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// One certificate of a chain, as the audit log names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditCert {
    /// The subject's common name (empty if it has none).
    pub cn: String,
    /// The serial number, lower-case hex.
    pub serial: String,
}

impl AuditCert {
    /// The common name and serial of `cert` (`?` for either if it does not parse).
    pub fn of(cert: &Certificate) -> Self {
        match cert.facts() {
            Ok(facts) => Self {
                cn: match facts.common_name {
                    CommonName::Absent => String::new(),
                    CommonName::One(cn) => cn,
                    CommonName::Several(cns) => cns.join("+"),
                },
                serial: facts.serial.hex(),
            },
            Err(_) => Self {
                cn: "?".to_owned(),
                serial: "?".to_owned(),
            },
        }
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// When the request finished (RFC 3339, UTC).
    pub time: String,
    /// What happened.
    pub event: AuditEvent,
    /// The peer's address (`ip:port`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub peer: String,
    /// The request's name, if one was derived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The command (albatross's short description), if one was decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The chain, leaf first (the trust anchor last when it is known).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<AuditCert>,
    /// The outcome: `ok`, `failure: <text>`, `refused: <text>`, …
    #[serde(skip_serializing_if = "String::is_empty")]
    pub outcome: String,
    /// For [`AuditEvent::Dropped`]: how many records were lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl AuditRecord {
    /// A record of `event` at the current time.
    pub fn now(event: AuditEvent) -> Self {
        Self {
            time: now_rfc3339(),
            event,
            peer: String::new(),
            name: None,
            command: None,
            chain: Vec::new(),
            outcome: String::new(),
            count: None,
        }
    }
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

    /// Writes records to `file`, already open for appending (the TLS worker's inherited
    /// descriptor), with a queue of `queue` records.
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
