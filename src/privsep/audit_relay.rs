//! The TLS worker's audit records: the worker holds no descriptor of the audit log, only
//! its end of a `SOCK_SEQPACKET` socketpair (descriptor 5), on which its
//! [`crate::audit::AuditLog`] writes one record per packet. The executor process checks
//! each with [`crate::audit::worker_record`] and writes it into the audit log marked as
//! the worker's.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::sys;
use crate::audit::{self, AuditLog, MAX_WORKER_RECORD};

/// A connected pair for one worker: (the executor's end, the worker's end), close-on-exec
/// and blocking (the worker's writer thread blocks on its end; [`relay`] makes its own
/// end non-blocking).
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    sys::socket_pair(libc::SOCK_SEQPACKET)
}

/// Writes the records the worker sends on `socket` into `audit` until the worker closes
/// its end (it exited). Records that are too long or not the worker's to report are
/// logged and dropped; descriptors attached to a packet are closed. Must run inside a
/// tokio runtime.
pub async fn relay(socket: OwnedFd, audit: AuditLog) -> io::Result<()> {
    sys::set_nonblocking(socket.as_raw_fd())?;
    // SAFETY: an OwnedFd is a valid open descriptor, owned by the AsyncFd for its whole
    // lifetime, and always reports the same number.
    let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
        .map_err(io::Error::from)?;
    // One octet more than a record may have, so that a longer one shows as truncated.
    let mut buf = vec![0u8; MAX_WORKER_RECORD + 1];
    loop {
        let mut guard = socket.readable().await?;
        let packet = match guard.try_io(|s| sys::recv_packet(s.as_raw_fd(), &mut buf)) {
            Ok(packet) => packet?,
            Err(_would_block) => continue,
        };
        let sys::Packet {
            len,
            truncated,
            fds,
        } = packet;
        if len == 0 && fds.is_empty() && !truncated {
            return Ok(());
        }
        drop(fds);
        let record = if truncated {
            Err(audit::WorkerRecordError::TooLong)
        } else {
            audit::worker_record(buf.get(..len).unwrap_or_default())
        };
        match record {
            Ok(record) => audit.record(record),
            Err(e) => tracing::warn!(error = %e, "audit record from the TLS worker dropped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Write;

    use super::*;
    use crate::audit::{AuditEvent, AuditRecord};

    #[tokio::test]
    async fn worker_records_reach_the_log_marked_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(audit::AUDIT_FILE);
        let log = AuditLog::open(&path, 16).unwrap();
        let (mine, theirs) = pair().unwrap();
        let relaying = tokio::spawn(relay(mine, log.clone()));

        // The worker's side: its audit log writes into its end of the pair.
        let worker = AuditLog::from_file(File::from(theirs.try_clone().unwrap()), 16).unwrap();
        let mut refused = AuditRecord::now(AuditEvent::Refused);
        refused.peer = "192.0.2.7:1000".to_owned();
        worker.record(refused);
        worker.record(AuditRecord::now(AuditEvent::Request));
        tokio::task::spawn_blocking(move || worker.close())
            .await
            .unwrap();
        // Garbage and an oversized packet, written straight into the socket.
        let mut raw = File::from(theirs);
        raw.write_all(b"garbage").unwrap();
        raw.write_all(&vec![b'{'; MAX_WORKER_RECORD + 10]).unwrap();
        drop(raw);

        relaying.await.unwrap().unwrap();
        tokio::task::spawn_blocking(move || log.close())
            .await
            .unwrap();
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["event"], "refused");
        assert_eq!(lines[0]["source"], "tls-worker");
        assert_eq!(lines[0]["peer"], "192.0.2.7:1000");
    }
}
