//! Console ring buffers and subscriptions: albatross's console daemon
//! (`spec/unikernel-and-executor.md` §13) inside the executor, with Notes E8 and E9 fixed.
//!
//! Each unikernel name has one ring buffer of the last `lines` console lines, each with
//! the time of the read that produced it. [`ConsoleHub::attach`] starts a task that reads
//! a tender's console pipe (reads of at most [`READ_SIZE`] octets, split by
//! [`LineSplitter`]) into the buffer and forwards each new line to the name's live
//! subscribers. Buffers survive restarts of the unikernel and its destruction (as in
//! albatross, so that `listInactive` and late subscribers see the last output); the
//! number of inactive buffers is bounded by [`MAX_INACTIVE_CONSOLES`] (or the value given
//! to [`ConsoleHub::with_options`]), the oldest inactive one being dropped first.
//!
//! # Subscribers
//! Every subscription has its own queue of [`SUBSCRIBER_LAG`] frames beyond the history,
//! drained into the subscriber's channel by a task of its own. The pipe reader only ever
//! `try_send`s into these queues, so neither a slow subscriber nor a small output channel
//! can block the reader or other subscribers. A subscriber whose queue is full — it fell
//! more than [`SUBSCRIBER_LAG`] lines behind — is closed with a final failure frame
//! ([`SLOW_SUBSCRIBER`]): a console stream with silently missing lines would be
//! misleading, and the client can resubscribe with `since`. A subscriber whose receiver
//! was dropped is removed. At most `max_subscribers` subscriptions per name exist at once
//! (E9: exactly that many); one more closes the oldest with a failure frame.
//!
//! Everything the hub sends on a subscriber's channel, including the `success` reply, goes
//! through that queue in order: success, history, live lines, and possibly a final
//! failure.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

use crate::codec::{Data, Payload, SinceCount, Timestamp};
use crate::executor::api::OutputFrame;
use crate::executor::console_lines::{LineSplitter, READ_SIZE};
use crate::name::{Name, Path};

/// Inactive console buffers kept (consoles of unikernels that exited or were destroyed).
/// albatross keeps n+1 per path, n being the path's unikernel limit; petrel bounds them
/// globally instead so that memory cannot grow with the number of distinct names ever
/// run: 64 buffers of 1024 lines of at most 524 octets stay below 40 MB.
pub const MAX_INACTIVE_CONSOLES: usize = 64;

/// Largest ring buffer, in lines, whatever the configuration asks: 64 times albatross's
/// 1024, so that one full buffer of maximal lines stays below 40 MB.
pub const MAX_BUFFER_LINES: usize = 64 * 1024;

/// Live lines a subscriber may fall behind the console before it is closed. Boot output
/// comes in bursts of a few dozen lines per read; 256 absorbs them while bounding each
/// subscriber's queue.
pub const SUBSCRIBER_LAG: usize = 256;

/// Failure text sent to a subscriber closed because it fell behind.
pub const SLOW_SUBSCRIBER: &str =
    "console subscription closed: the subscriber fell too far behind (resubscribe with since)";

/// Success text of a subscription to a console that has a buffer (albatross's).
pub const SUBSCRIBED: &str = "subscribed";

/// Success text of a subscription to a console without a buffer yet (albatross's).
pub const WAITING_FOR_VM: &str = "waiting for VM";

/// Errors of console operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    /// Consoles belong to unikernels: the name needs a label (albatross's text).
    #[error("path used instead of name")]
    PathName,
    /// A negative `count` (spec E8: albatross loops forever on it).
    #[error("invalid console count {0}: must not be negative")]
    NegativeCount(i64),
    /// The console could not be read: not the read end of a pipe, or `fcntl` failed.
    #[error("opening console: {0}")]
    Open(io::Error),
}

/// What the caller attaches to a subscription to find it again in
/// [`ConsoleHub::close_where`]: the ids of the subscribing chain's certificates (e.g.
/// issuer and serial in hex), so that a revoked certificate's subscriptions can be
/// closed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SubscriberTag(pub Vec<String>);

impl SubscriberTag {
    /// True if `id` is one of the tag's ids.
    pub fn contains(&self, id: &str) -> bool {
        self.0.iter().any(|i| i == id)
    }
}

/// Where console timestamps come from.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's real-time clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok());
        millis
            .and_then(Timestamp::from_millis)
            .unwrap_or(Timestamp::EPOCH)
    }
}

/// The console buffers and subscriptions of all unikernels. Cheap to clone (the clones
/// share everything); `Send + Sync`. [`ConsoleHub::attach`] and
/// [`ConsoleHub::subscribe`] spawn tasks and must be called within a tokio runtime.
#[derive(Clone)]
pub struct ConsoleHub {
    shared: Arc<Shared>,
}

struct Shared {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

struct State {
    lines: usize,
    max_subscribers: usize,
    max_inactive: usize,
    consoles: BTreeMap<Name, Console>,
    /// Source of subscriber ids, reader generations and the inactivity order.
    counter: u64,
}

#[derive(Default)]
struct Console {
    /// `None` until the first attach: subscribers are then "waiting for VM".
    buffer: Option<VecDeque<(Timestamp, String)>>,
    /// The generation of the attached reader while the console is active.
    reader: Option<u64>,
    /// When the console became inactive (a counter value), for dropping the oldest.
    inactive_since: u64,
    /// Oldest first.
    subscribers: Vec<Subscriber>,
}

struct Subscriber {
    tag: SubscriberTag,
    queue: mpsc::Sender<OutputFrame>,
    close: oneshot::Sender<String>,
}

impl ConsoleHub {
    /// A hub keeping `lines` lines per console (at most [`MAX_BUFFER_LINES`]) and
    /// allowing `max_subscribers` subscriptions per console (at least one), with
    /// [`MAX_INACTIVE_CONSOLES`] and the system clock.
    pub fn new(lines: usize, max_subscribers: usize) -> Self {
        Self::with_options(
            lines,
            max_subscribers,
            MAX_INACTIVE_CONSOLES,
            Arc::new(SystemClock),
        )
    }

    /// Like [`ConsoleHub::new`], with the bound on inactive buffers and the clock given.
    pub fn with_options(
        lines: usize,
        max_subscribers: usize,
        max_inactive: usize,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                clock,
                state: Mutex::new(State {
                    lines: lines.min(MAX_BUFFER_LINES),
                    max_subscribers: max_subscribers.max(1),
                    max_inactive,
                    consoles: BTreeMap::new(),
                    counter: 0,
                }),
            }),
        }
    }

    /// A tender started: reads its console (the read end of the one pipe its stdout and
    /// stderr go to) line by line into the name's ring buffer (created if missing, kept
    /// if it exists), timestamping each read, and forwards new lines to the name's
    /// subscribers, including those waiting for the unikernel. The console is active
    /// until the pipe reaches end of file, so the caller must close its copies of the
    /// write end after spawning the tender. An incomplete last line is kept at end of
    /// file (petrel's choice, see [`LineSplitter::finish`]). Attaching again while a
    /// previous reader still runs makes the new one the console's reader; the old one
    /// keeps adding lines until its end of file but no longer marks the console.
    pub fn attach(&self, name: &Name, console: OwnedFd) -> Result<(), ConsoleError> {
        if name.is_path() {
            return Err(ConsoleError::PathName);
        }
        let pipe = pipe::Receiver::from_owned_fd(console).map_err(ConsoleError::Open)?;
        let generation = {
            let mut state = self.shared.lock();
            let generation = state.next();
            let console = state.consoles.entry(name.clone()).or_default();
            console.buffer.get_or_insert_with(VecDeque::new);
            console.reader = Some(generation);
            generation
        };
        tokio::spawn(read_console(
            Arc::clone(&self.shared),
            name.clone(),
            generation,
            pipe,
        ));
        Ok(())
    }

    /// Subscribes `out` to the console of `name`: `count n` sends the last min(n,
    /// `lines`) buffered lines (negative counts are refused, spec E8), `since t` every
    /// buffered line with a timestamp at or after `t`; then every new line. If the
    /// console has no buffer yet, the subscription waits and becomes live when the
    /// unikernel starts.
    ///
    /// On success the hub itself sends, in order on `out`: `success string` with the
    /// returned text ([`SUBSCRIBED`] or [`WAITING_FOR_VM`]) — the caller must not send
    /// it again —, the history, then live lines, each `data console (timestamp, line)`,
    /// all with `name` in the header. The subscription ends when `out`'s receiver is
    /// dropped, or with a final failure frame when it is replaced, falls too far behind,
    /// is closed by [`ConsoleHub::close_where`] or its buffer is dropped. On `Err`
    /// nothing was sent.
    pub fn subscribe(
        &self,
        name: &Name,
        since: &SinceCount,
        out: mpsc::Sender<OutputFrame>,
        tag: SubscriberTag,
    ) -> Result<&'static str, ConsoleError> {
        if name.is_path() {
            return Err(ConsoleError::PathName);
        }
        if let SinceCount::Count(n) = since {
            if *n < 0 {
                return Err(ConsoleError::NegativeCount(*n));
            }
        }
        let (text, close_rx, queue_rx) = {
            let mut state = self.shared.lock();
            state.prune();
            let (lines, max) = (state.lines, state.max_subscribers);
            let console = state.consoles.entry(name.clone()).or_default();
            let text = if console.buffer.is_some() {
                SUBSCRIBED
            } else {
                WAITING_FOR_VM
            };
            while console.subscribers.len() >= max {
                let oldest = console.subscribers.remove(0);
                oldest.close(format!(
                    "subscription replaced by a newer one (at most {max} subscribers per console)"
                ));
            }
            // Room for the reply, a whole buffer of history and the allowed lag.
            let (queue, queue_rx) = mpsc::channel(1 + lines + SUBSCRIBER_LAG);
            let frame = |payload| OutputFrame {
                name: name.clone(),
                payload,
            };
            let mut frames = vec![frame(Payload::success_string(text))];
            if let Some(buffer) = &console.buffer {
                frames.extend(
                    history(buffer, since).map(|(t, line)| frame(console_data(*t, line.clone()))),
                );
            }
            for f in frames {
                // Cannot fail: the queue is new and holds more than a whole buffer.
                let _ = queue.try_send(f);
            }
            let (close, close_rx) = oneshot::channel();
            console.subscribers.push(Subscriber {
                tag,
                queue: queue.clone(),
                close,
            });
            (text, close_rx, queue_rx)
        };
        tokio::spawn(forward(queue_rx, close_rx, out, name.clone()));
        Ok(text)
    }

    /// Names of the consoles at or below `path` that have a buffer but no running
    /// unikernel, relative to `path`, sorted.
    pub fn list_inactive(&self, path: &Path) -> Vec<Name> {
        let state = self.shared.lock();
        state
            .consoles
            .iter()
            .filter(|(_, c)| c.buffer.is_some() && c.reader.is_none())
            .filter_map(|(name, _)| name.relative_to(path))
            .collect()
    }

    /// Closes every subscription whose tag matches `pred`: each gets a final failure
    /// frame with `reason`, then its channel is dropped. Returns how many were closed.
    pub fn close_where(&self, pred: impl Fn(&SubscriberTag) -> bool, reason: &str) -> usize {
        let mut state = self.shared.lock();
        let mut closed = 0;
        for console in state.consoles.values_mut() {
            let (matching, kept) = std::mem::take(&mut console.subscribers)
                .into_iter()
                .partition::<Vec<_>, _>(|s| pred(&s.tag));
            console.subscribers = kept;
            closed += matching.len();
            for s in matching {
                s.close(reason.to_owned());
            }
        }
        state.prune();
        closed
    }

    /// Drops the buffer of `name` and closes its subscriptions with a failure frame
    /// (`console of <name> removed`). Returns whether there was anything to drop.
    ///
    /// The hub never calls this itself: buffers of destroyed unikernels are kept (as in
    /// albatross) until [`MAX_INACTIVE_CONSOLES`] pushes them out. It is for callers that
    /// must forget a console at once, e.g. when revocation destroys the unikernel. If the
    /// console is still active, its remaining output is discarded until the next
    /// [`ConsoleHub::attach`].
    pub fn forget(&self, name: &Name) -> bool {
        let removed = self.shared.lock().consoles.remove(name);
        let Some(console) = removed else {
            return false;
        };
        for s in console.subscribers {
            s.close(format!("console of {name} removed"));
        }
        true
    }

    /// True while a reader is attached to the console of `name` (between
    /// [`ConsoleHub::attach`] and the end of file of its pipe).
    pub fn is_active(&self, name: &Name) -> bool {
        self.shared
            .lock()
            .consoles
            .get(name)
            .is_some_and(|c| c.reader.is_some())
    }

    /// The number of live subscriptions to the console of `name` (subscribers whose
    /// receiver is gone are removed first).
    pub fn subscriber_count(&self, name: &Name) -> usize {
        let mut state = self.shared.lock();
        state.consoles.get_mut(name).map_or(0, |c| {
            c.subscribers.retain(|s| !s.queue.is_closed());
            c.subscribers.len()
        })
    }
}

impl std::fmt::Debug for ConsoleHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("ConsoleHub")
            .field("lines", &state.lines)
            .field("max_subscribers", &state.max_subscribers)
            .field("consoles", &state.consoles.len())
            .finish()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends the lines of one read (all with timestamp `at`) to the buffer of `name`
    /// and offers them to its subscribers.
    fn publish(&self, name: &Name, at: Timestamp, lines: Vec<String>) {
        if lines.is_empty() {
            return;
        }
        let mut state = self.lock();
        let capacity = state.lines;
        let Some(console) = state.consoles.get_mut(name) else {
            return;
        };
        let Some(buffer) = console.buffer.as_mut() else {
            return;
        };
        let frames: Vec<OutputFrame> = lines
            .iter()
            .map(|line| OutputFrame {
                name: name.clone(),
                payload: console_data(at, line.clone()),
            })
            .collect();
        for line in lines {
            if capacity == 0 {
                break;
            }
            if buffer.len() >= capacity {
                buffer.pop_front();
            }
            buffer.push_back((at, line));
        }
        let mut kept = Vec::with_capacity(console.subscribers.len());
        for s in std::mem::take(&mut console.subscribers) {
            match s.offer(&frames) {
                Ok(()) => kept.push(s),
                Err(mpsc::error::TrySendError::Full(_)) => s.close(SLOW_SUBSCRIBER.to_owned()),
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        console.subscribers = kept;
    }

    /// The reader of generation `generation` reached end of file.
    fn detach(&self, name: &Name, generation: u64) {
        let mut state = self.lock();
        let order = state.next();
        if let Some(console) = state.consoles.get_mut(name) {
            if console.reader == Some(generation) {
                console.reader = None;
                console.inactive_since = order;
            }
        }
        state.bound_inactive();
    }
}

impl State {
    fn next(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        self.counter
    }

    /// Removes subscribers whose receiver is gone and consoles that hold nothing.
    fn prune(&mut self) {
        self.consoles.retain(|_, c| {
            c.subscribers.retain(|s| !s.queue.is_closed());
            c.buffer.is_some() || c.reader.is_some() || !c.subscribers.is_empty()
        });
    }

    /// Drops the oldest inactive buffers beyond `max_inactive`.
    fn bound_inactive(&mut self) {
        let mut inactive: Vec<(u64, Name)> = self
            .consoles
            .iter()
            .filter(|(_, c)| c.buffer.is_some() && c.reader.is_none())
            .map(|(name, c)| (c.inactive_since, name.clone()))
            .collect();
        if inactive.len() <= self.max_inactive {
            return;
        }
        inactive.sort();
        let excess = inactive.len() - self.max_inactive;
        for (_, name) in inactive.into_iter().take(excess) {
            if let Some(console) = self.consoles.remove(&name) {
                tracing::info!(%name, "console: dropping the oldest inactive buffer");
                for s in console.subscribers {
                    s.close(format!(
                        "console of {name} removed (more than {} inactive consoles)",
                        self.max_inactive
                    ));
                }
            }
        }
    }
}

impl Subscriber {
    /// Queues `frames` without waiting.
    fn offer(&self, frames: &[OutputFrame]) -> Result<(), mpsc::error::TrySendError<()>> {
        for frame in frames {
            self.queue.try_send(frame.clone()).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => mpsc::error::TrySendError::Full(()),
                mpsc::error::TrySendError::Closed(_) => mpsc::error::TrySendError::Closed(()),
            })?;
        }
        Ok(())
    }

    /// Ends the subscription with a final failure frame carrying `reason`; frames still
    /// queued are discarded.
    fn close(self, reason: String) {
        let _ = self.close.send(reason);
    }
}

/// The buffered lines a subscription starts with, oldest first.
fn history<'a>(
    buffer: &'a VecDeque<(Timestamp, String)>,
    since: &SinceCount,
) -> Box<dyn Iterator<Item = &'a (Timestamp, String)> + 'a> {
    match *since {
        SinceCount::Count(n) => {
            let n = usize::try_from(n).unwrap_or(0).min(buffer.len());
            Box::new(buffer.iter().skip(buffer.len() - n))
        }
        SinceCount::Since(t) => Box::new(buffer.iter().filter(move |(at, _)| *at >= t)),
    }
}

fn console_data(timestamp: Timestamp, line: String) -> Payload {
    Payload::Data(Data::Console { timestamp, line })
}

/// Reads one console pipe until end of file.
async fn read_console(shared: Arc<Shared>, name: Name, generation: u64, mut pipe: pipe::Receiver) {
    let mut splitter = LineSplitter::new();
    let mut buf = [0u8; READ_SIZE];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                let at = shared.clock.now();
                let lines = splitter.push(buf.get(..n).unwrap_or_default());
                shared.publish(&name, at, lines);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(%name, error = %e, "console: read failed, treating as end of file");
                break;
            }
        }
    }
    if let Some(last) = splitter.finish() {
        shared.publish(&name, shared.clock.now(), vec![last]);
    }
    shared.detach(&name, generation);
}

/// Drains one subscriber's queue into its channel, waiting for the client as needed.
async fn forward(
    mut queue: mpsc::Receiver<OutputFrame>,
    mut close: oneshot::Receiver<String>,
    out: mpsc::Sender<OutputFrame>,
    name: Name,
) {
    // The success reply always comes first, even if the subscription is closed at once.
    if let Some(reply) = queue.recv().await {
        if out.send(reply).await.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            biased;
            reason = &mut close => {
                if let Ok(reason) = reason {
                    let failure = OutputFrame { name, payload: Payload::failure(reason) };
                    let _ = out.send(failure).await;
                }
                return;
            }
            frame = queue.recv() => match frame {
                Some(frame) => {
                    if out.send(frame).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            () = out.closed() => return,
        }
    }
}
