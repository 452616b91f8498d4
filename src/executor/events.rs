//! The executor's event stream: what happened to which unikernel, for logs, the audit
//! trail and tests.
//!
//! Events are broadcast: the executor never waits for a subscriber. A subscriber that
//! falls more than [`EVENT_CAPACITY`] events behind loses the oldest ones and is told how
//! many with [`Received::Lost`] instead.

use std::fmt;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::executor::tender::Pid;
use crate::name::Name;

/// Events kept for a subscriber that has not read them yet. A start-up of a host with
/// a hundred unikernels produces about a hundred events at once; 256 leaves room for
/// that while bounding what a stalled subscriber costs.
pub const EVENT_CAPACITY: usize = 256;

/// Something that happened to a unikernel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A tender was started by a command or at start-up.
    Started {
        /// The unikernel.
        name: Name,
        /// Its tender's pid.
        pid: Pid,
    },
    /// A tender exited with a code.
    Exited {
        /// The unikernel.
        name: Name,
        /// The exit code.
        code: i32,
    },
    /// A tender was killed by a signal.
    Signaled {
        /// The unikernel.
        name: Name,
        /// The signal number.
        signal: i32,
    },
    /// The kernel's OOM killer killed the tender: its cgroup reached its memory limit (the
    /// exit is a SIGKILL, so the unikernel is never restarted, spec §8).
    OomKilled {
        /// The unikernel.
        name: Name,
        /// The cgroup's memory limit in MB (the unikernel's memory plus the tender
        /// overhead).
        limit_mb: u64,
    },
    /// A restart is scheduled (restart on failure, or the `--name` fallback).
    RestartScheduled {
        /// The unikernel.
        name: Name,
        /// 1 for the first restart after a stable run, then counting quick exits.
        attempt: u32,
        /// The back-off before the restart.
        delay: Duration,
    },
    /// A scheduled restart started a new tender.
    Restarted {
        /// The unikernel.
        name: Name,
        /// The new tender's pid.
        pid: Pid,
    },
    /// A scheduled restart failed; the unikernel is gone.
    RestartFailed {
        /// The unikernel.
        name: Name,
        /// Why (the failure text a create would have replied).
        reason: String,
    },
    /// A unikernel recorded in the state file could not be started at start-up; it is
    /// dropped from the state file.
    StartFailed {
        /// The unikernel.
        name: Name,
        /// Why.
        reason: String,
    },
    /// A unikernel was destroyed by a command (running, or with a pending restart).
    Destroyed {
        /// The unikernel.
        name: Name,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Started { name, pid } => write!(f, "{name}: started (pid {pid})"),
            Self::Exited { name, code } => write!(f, "{name}: exited with {code}"),
            Self::Signaled { name, signal } => write!(f, "{name}: killed by signal {signal}"),
            Self::OomKilled { name, limit_mb } => write!(
                f,
                "{name}: killed by the kernel's OOM killer (cgroup memory limit {limit_mb} MB)"
            ),
            Self::RestartScheduled {
                name,
                attempt,
                delay,
            } => write!(f, "{name}: restart {attempt} in {} ms", delay.as_millis()),
            Self::Restarted { name, pid } => write!(f, "{name}: restarted (pid {pid})"),
            Self::RestartFailed { name, reason } => write!(f, "{name}: restart failed: {reason}"),
            Self::StartFailed { name, reason } => write!(f, "{name}: start failed: {reason}"),
            Self::Destroyed { name } => write!(f, "{name}: destroyed"),
        }
    }
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// The next event.
    Event(Event),
    /// The subscriber fell behind: this many events were dropped before the next one.
    Lost(u64),
}

/// A subscription to the executor's events (see [`crate::executor::Executor::events`]).
#[derive(Debug)]
pub struct EventStream(broadcast::Receiver<Event>);

impl EventStream {
    pub(crate) fn new(receiver: broadcast::Receiver<Event>) -> Self {
        Self(receiver)
    }

    /// The next event, or how many were lost; `None` once the executor is gone.
    pub async fn recv(&mut self) -> Option<Received> {
        match self.0.recv().await {
            Ok(event) => Some(Received::Event(event)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Received::Lost(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// As [`EventStream::recv`], without waiting: `None` if nothing is there now.
    pub fn try_recv(&mut self) -> Option<Received> {
        match self.0.try_recv() {
            Ok(event) => Some(Received::Event(event)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Received::Lost(n)),
            Err(_) => None,
        }
    }
}

/// The sending side, owned by the executor.
#[derive(Debug, Clone)]
pub(crate) struct Events(broadcast::Sender<Event>);

impl Events {
    pub(crate) fn new() -> Self {
        Self(broadcast::channel(EVENT_CAPACITY).0)
    }

    /// Logs `event` and broadcasts it; never waits.
    pub(crate) fn emit(&self, event: Event) {
        tracing::info!(%event, "executor event");
        // No subscriber is not an error.
        let _ = self.0.send(event);
    }

    pub(crate) fn subscribe(&self) -> EventStream {
        EventStream::new(self.0.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    #[tokio::test]
    async fn slow_subscriber_gets_a_lost_marker() {
        let events = Events::new();
        let mut slow = events.subscribe();
        let total = EVENT_CAPACITY + 10;
        for code in 0..total {
            events.emit(Event::Exited {
                name: name(":a"),
                code: i32::try_from(code).unwrap(),
            });
        }
        assert_eq!(slow.recv().await, Some(Received::Lost(10)));
        assert_eq!(
            slow.recv().await,
            Some(Received::Event(Event::Exited {
                name: name(":a"),
                code: 10
            }))
        );
        assert_eq!(slow.try_recv().map(|_| ()), Some(()));
    }

    #[test]
    fn display() {
        let texts = [
            (
                Event::RestartScheduled {
                    name: name("a:b"),
                    attempt: 3,
                    delay: Duration::from_secs(4),
                },
                "a:b: restart 3 in 4000 ms",
            ),
            (
                Event::Started {
                    name: name(":x"),
                    pid: Pid::new(7),
                },
                ":x: started (pid 7)",
            ),
            (
                Event::Signaled {
                    name: name(":x"),
                    signal: 9,
                },
                ":x: killed by signal 9",
            ),
            (
                Event::OomKilled {
                    name: name("a:x"),
                    limit_mb: 96,
                },
                "a:x: killed by the kernel's OOM killer (cgroup memory limit 96 MB)",
            ),
        ];
        for (event, text) in texts {
            assert_eq!(event.to_string(), text);
        }
    }
}
