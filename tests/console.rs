//! The console hub: real pipes fed by the test, ring buffers, history by count and since,
//! waiting and live subscriptions, the subscriber limit, slow and vanished subscribers,
//! inactive consoles and closing by tag (`spec/unikernel-and-executor.md` §13, E8, E9).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use petrel::codec::{Data, Payload, SinceCount, Success, Timestamp};
use petrel::executor::api::OutputFrame;
use petrel::executor::console::{
    Clock, ConsoleHub, SLOW_SUBSCRIBER, SUBSCRIBER_LAG, SubscriberTag,
};
use petrel::name::{Name, Path};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

/// 2025-08-22T13:04:43Z.
const T0: i64 = 1_755_867_883_000;

/// A clock the test sets.
#[derive(Default)]
struct ManualClock(AtomicI64);

impl ManualClock {
    fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst)).unwrap()
    }
}

fn hub_with(
    lines: usize,
    max_subscribers: usize,
    max_inactive: usize,
) -> (ConsoleHub, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::default());
    clock.set(T0);
    let hub = ConsoleHub::with_options(lines, max_subscribers, max_inactive, clock.clone());
    (hub, clock)
}

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms).unwrap()
}

/// Attaches a fresh pipe to `n` and returns its write end.
fn attach(hub: &ConsoleHub, n: &Name) -> pipe::Sender {
    let (tx, rx) = pipe::pipe().unwrap();
    hub.attach(n, rx.into_blocking_fd().unwrap()).unwrap();
    tx
}

fn subscribe(
    hub: &ConsoleHub,
    n: &Name,
    since: SinceCount,
    tag: &[&str],
) -> (&'static str, mpsc::Receiver<OutputFrame>) {
    let (tx, rx) = mpsc::channel(2048);
    let tag = SubscriberTag(tag.iter().map(|s| s.to_string()).collect());
    (hub.subscribe(n, &since, tx, tag).unwrap(), rx)
}

fn success(n: &Name, text: &str) -> OutputFrame {
    OutputFrame {
        name: n.clone(),
        payload: Payload::Success(Success::String(text.to_owned())),
    }
}

fn line(n: &Name, ms: i64, text: &str) -> OutputFrame {
    OutputFrame {
        name: n.clone(),
        payload: Payload::Data(Data::Console {
            timestamp: ts(ms),
            line: text.to_owned(),
        }),
    }
}

fn failure(n: &Name, text: &str) -> OutputFrame {
    OutputFrame {
        name: n.clone(),
        payload: Payload::failure(text),
    }
}

/// The next frame; fails instead of hanging if none comes.
async fn next(rx: &mut mpsc::Receiver<OutputFrame>) -> OutputFrame {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("no frame arrived")
        .expect("the channel closed")
}

async fn next_n(rx: &mut mpsc::Receiver<OutputFrame>, n: usize) -> Vec<OutputFrame> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(next(rx).await);
    }
    v
}

/// Asserts that the channel is closed with nothing more in it.
async fn closed(rx: &mut mpsc::Receiver<OutputFrame>) {
    let end = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the channel stayed open");
    assert_eq!(end, None);
}

/// Waits (bounded) until `cond` holds.
async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..4000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Lets the hub's tasks run (the tests run on tokio's single-threaded runtime, so this
/// is deterministic).
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// A fresh subscription to the buffered console `n` receives "subscribed", exactly
/// `expected`, and nothing more.
async fn assert_history(hub: &ConsoleHub, n: &Name, since: SinceCount, expected: &[OutputFrame]) {
    let (tx, mut rx) = mpsc::channel(4096);
    let text = hub
        .subscribe(n, &since, tx, SubscriberTag::default())
        .unwrap();
    assert_eq!(text, "subscribed");
    assert_eq!(next(&mut rx).await, success(n, "subscribed"));
    assert_eq!(next_n(&mut rx, expected.len()).await, expected);
    settle().await;
    assert_eq!(rx.try_recv(), Err(mpsc::error::TryRecvError::Empty));
}

#[tokio::test]
async fn pipe_is_split_into_exact_buffered_lines() {
    let (hub, clock) = hub_with(1024, 5, 64);
    let n = name("foo:web");
    let mut tx = attach(&hub, &n);
    assert!(hub.is_active(&n));
    let (text, mut live) = subscribe(&hub, &n, SinceCount::Count(0), &[]);
    assert_eq!(text, "subscribed");
    assert_eq!(next(&mut live).await, success(&n, "subscribed"));

    tx.write_all(b"first line\n").await.unwrap();
    assert_eq!(next(&mut live).await, line(&n, T0, "first line"));

    clock.set(T0 + 1);
    tx.write_all(b"par").await.unwrap();
    tx.write_all(b"tial\n\n\nnext\r\n").await.unwrap();
    assert_eq!(
        next_n(&mut live, 2).await,
        vec![line(&n, T0 + 1, "partial"), line(&n, T0 + 1, "next\r")]
    );

    // The previous data is consumed, so this write starts a read: the long line is cut
    // at 512 octets and the rest of it discarded.
    clock.set(T0 + 2);
    let mut long = vec![b'x'; 1000];
    long.extend_from_slice(b"\nafter\n");
    tx.write_all(&long).await.unwrap();
    let truncated = format!("{} [truncated]", "x".repeat(512));
    assert_eq!(
        next_n(&mut live, 2).await,
        vec![line(&n, T0 + 2, &truncated), line(&n, T0 + 2, "after")]
    );

    clock.set(T0 + 3);
    tx.write_all(b"\xffbad utf8\n").await.unwrap();
    assert_eq!(next(&mut live).await, line(&n, T0 + 3, "\u{fffd}bad utf8"));

    // An unterminated last line is kept at end of file.
    clock.set(T0 + 4);
    tx.write_all(b"no newline at the end").await.unwrap();
    drop(tx);
    assert_eq!(
        next(&mut live).await,
        line(&n, T0 + 4, "no newline at the end")
    );
    wait_until("the console is inactive", || !hub.is_active(&n)).await;

    let expected = vec![
        line(&n, T0, "first line"),
        line(&n, T0 + 1, "partial"),
        line(&n, T0 + 1, "next\r"),
        line(&n, T0 + 2, &truncated),
        line(&n, T0 + 2, "after"),
        line(&n, T0 + 3, "\u{fffd}bad utf8"),
        line(&n, T0 + 4, "no newline at the end"),
    ];
    assert_history(&hub, &n, SinceCount::Count(1024), &expected).await;
    // The live subscription stays open after the unikernel exited (as in albatross); the
    // history subscription is gone with its receiver.
    settle().await;
    assert_eq!(hub.subscriber_count(&n), 1);
}

#[tokio::test]
async fn count_zero_three_negative_and_clamped() {
    let (hub, _clock) = hub_with(1024, 5, 64);
    let n = name("foo:web");
    let mut tx = attach(&hub, &n);
    let text: String = (0..1100).map(|i| format!("line {i}\n")).collect();
    tx.write_all(text.as_bytes()).await.unwrap();
    drop(tx);
    wait_until("the console is inactive", || !hub.is_active(&n)).await;

    assert_history(&hub, &n, SinceCount::Count(0), &[]).await;
    assert_history(
        &hub,
        &n,
        SinceCount::Count(3),
        &[
            line(&n, T0, "line 1097"),
            line(&n, T0, "line 1098"),
            line(&n, T0, "line 1099"),
        ],
    )
    .await;
    // More than the ring holds: the whole ring, oldest first (E8 clamp).
    let want: Vec<OutputFrame> = (76..1100)
        .map(|i| line(&n, T0, &format!("line {i}")))
        .collect();
    assert_history(&hub, &n, SinceCount::Count(5000), &want).await;
    assert_history(&hub, &n, SinceCount::Count(i64::MAX), &want).await;

    // Negative counts are refused and nothing is sent.
    let (tx, mut rx) = mpsc::channel(4);
    let err = hub
        .subscribe(&n, &SinceCount::Count(-1), tx, SubscriberTag::default())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid console count -1: must not be negative"
    );
    closed(&mut rx).await;
    let (tx, _rx) = mpsc::channel(4);
    let err = hub
        .subscribe(
            &n,
            &SinceCount::Count(i64::MIN),
            tx,
            SubscriberTag::default(),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("invalid console count {}: must not be negative", i64::MIN)
    );
}

#[tokio::test]
async fn small_ring_keeps_the_last_lines() {
    let (hub, _clock) = hub_with(3, 5, 64);
    let n = name("web");
    let mut tx = attach(&hub, &n);
    tx.write_all(b"a\nb\nc\nd\ne\n").await.unwrap();
    drop(tx);
    wait_until("the console is inactive", || !hub.is_active(&n)).await;
    assert_history(
        &hub,
        &n,
        SinceCount::Count(10),
        &[line(&n, T0, "c"), line(&n, T0, "d"), line(&n, T0, "e")],
    )
    .await;
}

#[tokio::test]
async fn since_returns_lines_at_or_after_the_time() {
    let (hub, clock) = hub_with(1024, 5, 64);
    let n = name("foo:web");
    let mut tx = attach(&hub, &n);
    let (_, mut live) = subscribe(&hub, &n, SinceCount::Count(0), &[]);
    next(&mut live).await;
    for (i, text) in ["a", "b", "c"].iter().enumerate() {
        let at = T0 + 1000 * i64::try_from(i).unwrap();
        clock.set(at);
        tx.write_all(format!("{text}\n").as_bytes()).await.unwrap();
        assert_eq!(next(&mut live).await, line(&n, at, text));
    }
    let since = |ms| SinceCount::Since(ts(ms));
    let all = vec![
        line(&n, T0, "a"),
        line(&n, T0 + 1000, "b"),
        line(&n, T0 + 2000, "c"),
    ];
    assert_history(&hub, &n, since(T0), &all).await;
    assert_history(&hub, &n, since(0), &all).await;
    assert_history(&hub, &n, since(T0 + 1000), &all[1..]).await;
    assert_history(&hub, &n, since(T0 + 999), &all[1..]).await;
    assert_history(&hub, &n, since(T0 + 2000), &all[2..]).await;
    assert_history(&hub, &n, since(T0 + 2001), &[]).await;
    drop(tx);
}

#[tokio::test]
async fn waiting_for_vm_then_live_and_buffer_survives_restart() {
    let (hub, clock) = hub_with(1024, 5, 64);
    let n = name("foo:web");
    let (text, mut early) = subscribe(&hub, &n, SinceCount::Count(10), &[]);
    assert_eq!(text, "waiting for VM");
    assert_eq!(next(&mut early).await, success(&n, "waiting for VM"));
    assert!(hub.list_inactive(&Path::root()).is_empty());

    let mut tx = attach(&hub, &n);
    tx.write_all(b"hello\n").await.unwrap();
    assert_eq!(next(&mut early).await, line(&n, T0, "hello"));
    drop(tx);
    wait_until("the console is inactive", || !hub.is_active(&n)).await;
    assert_eq!(hub.list_inactive(&Path::root()), vec![n.clone()]);

    // The unikernel restarts: same buffer, same subscribers.
    clock.set(T0 + 5);
    let mut tx = attach(&hub, &n);
    assert!(hub.list_inactive(&Path::root()).is_empty());
    tx.write_all(b"again\n").await.unwrap();
    assert_eq!(next(&mut early).await, line(&n, T0 + 5, "again"));
    assert_history(
        &hub,
        &n,
        SinceCount::Count(10),
        &[line(&n, T0, "hello"), line(&n, T0 + 5, "again")],
    )
    .await;
    drop(tx);
}

#[tokio::test]
async fn subscriber_limit_closes_the_oldest() {
    let (hub, _clock) = hub_with(1024, 2, 64);
    let n = name("foo:web");
    let mut tx = attach(&hub, &n);
    let (_, mut first) = subscribe(&hub, &n, SinceCount::Count(0), &[]);
    let (_, mut second) = subscribe(&hub, &n, SinceCount::Count(0), &[]);
    assert_eq!(hub.subscriber_count(&n), 2);
    let (_, mut third) = subscribe(&hub, &n, SinceCount::Count(0), &[]);
    // Exactly max (E9: albatross allows max + 1).
    assert_eq!(hub.subscriber_count(&n), 2);
    assert_eq!(
        next_n(&mut first, 2).await,
        vec![
            success(&n, "subscribed"),
            failure(
                &n,
                "subscription replaced by a newer one (at most 2 subscribers per console)"
            ),
        ]
    );
    closed(&mut first).await;
    tx.write_all(b"x\n").await.unwrap();
    for rx in [&mut second, &mut third] {
        assert_eq!(
            next_n(rx, 2).await,
            vec![success(&n, "subscribed"), line(&n, T0, "x")]
        );
    }
}

#[tokio::test]
async fn slow_subscriber_does_not_block_others() {
    let (hub, _clock) = hub_with(4, 5, 64);
    let n = name("foo:web");
    let mut tx = attach(&hub, &n);
    // Never read until the end: its channel holds one frame.
    let (slow_tx, mut slow) = mpsc::channel(1);
    hub.subscribe(&n, &SinceCount::Count(0), slow_tx, SubscriberTag::default())
        .unwrap();
    let (_, mut fast) = subscribe(&hub, &n, SinceCount::Count(0), &[]);
    assert_eq!(next(&mut fast).await, success(&n, "subscribed"));

    // Batches below the allowed lag, each fully delivered to the fast subscriber.
    let total = 3 * SUBSCRIBER_LAG;
    let batch = SUBSCRIBER_LAG / 2;
    for start in (0..total).step_by(batch) {
        let text: String = (start..start + batch).map(|i| format!("l{i}\n")).collect();
        tx.write_all(text.as_bytes()).await.unwrap();
        for i in start..start + batch {
            assert_eq!(next(&mut fast).await, line(&n, T0, &format!("l{i}")));
        }
    }
    assert_eq!(hub.subscriber_count(&n), 1);

    // The slow one got the reply, a prefix of the lines, then the failure, then the end.
    assert_eq!(next(&mut slow).await, success(&n, "subscribed"));
    let mut i = 0;
    loop {
        let f = next(&mut slow).await;
        if f == failure(&n, SLOW_SUBSCRIBER) {
            break;
        }
        assert_eq!(f, line(&n, T0, &format!("l{i}")));
        i += 1;
    }
    assert!(i < total);
    closed(&mut slow).await;
    drop(tx);
}

#[tokio::test]
async fn vanished_subscriber_is_removed() {
    let (hub, _clock) = hub_with(1024, 5, 64);
    let n = name("foo:web");
    let mut tx = attach(&hub, &n);
    let (_, gone) = subscribe(&hub, &n, SinceCount::Count(0), &[]);
    let (_, mut kept) = subscribe(&hub, &n, SinceCount::Count(0), &[]);
    assert_eq!(hub.subscriber_count(&n), 2);
    drop(gone);
    wait_until("the subscriber is removed", || {
        hub.subscriber_count(&n) == 1
    })
    .await;
    tx.write_all(b"still here\n").await.unwrap();
    assert_eq!(
        next_n(&mut kept, 2).await,
        vec![success(&n, "subscribed"), line(&n, T0, "still here")]
    );
    drop(tx);
}

#[tokio::test]
async fn list_inactive_with_relative_names() {
    let (hub, _clock) = hub_with(1024, 5, 64);
    for s in ["foo:a", "foo:bar:b", "other:d", "top"] {
        let n = name(s);
        drop(attach(&hub, &n));
        wait_until("the console is inactive", || !hub.is_active(&n)).await;
    }
    let _running = attach(&hub, &name("foo:c"));
    let (_, _waiting) = subscribe(&hub, &name("foo:e"), SinceCount::Count(0), &[]);

    let path = |s: &str| Path::parse(s).unwrap();
    assert_eq!(
        hub.list_inactive(&path("foo")),
        vec![name(":a"), name("bar:b")]
    );
    assert_eq!(hub.list_inactive(&path("foo:bar")), vec![name(":b")]);
    assert_eq!(
        hub.list_inactive(&Path::root()),
        vec![
            name(":top"),
            name("foo:a"),
            name("foo:bar:b"),
            name("other:d")
        ]
    );
    assert!(hub.list_inactive(&path("nothing")).is_empty());
}

#[tokio::test]
async fn close_where_closes_only_matching_subscriptions() {
    let (hub, _clock) = hub_with(1024, 5, 64);
    let a = name("foo:a");
    let b = name("bar:b");
    let mut ta = attach(&hub, &a);
    let mut tb = attach(&hub, &b);
    let (_, mut s1) = subscribe(&hub, &a, SinceCount::Count(0), &["cert-1", "ca-1"]);
    let (_, mut s2) = subscribe(&hub, &b, SinceCount::Count(0), &["cert-2", "ca-1"]);
    let (_, mut s3) = subscribe(&hub, &a, SinceCount::Count(0), &["cert-3", "ca-2"]);

    let closed_count = hub.close_where(|t| t.contains("ca-1"), "certificate revoked");
    assert_eq!(closed_count, 2);
    for (rx, n) in [(&mut s1, &a), (&mut s2, &b)] {
        assert_eq!(
            next_n(rx, 2).await,
            vec![success(n, "subscribed"), failure(n, "certificate revoked")]
        );
        closed(rx).await;
    }
    ta.write_all(b"for a\n").await.unwrap();
    tb.write_all(b"for b\n").await.unwrap();
    assert_eq!(
        next_n(&mut s3, 2).await,
        vec![success(&a, "subscribed"), line(&a, T0, "for a")]
    );
    assert_eq!(hub.subscriber_count(&a), 1);
    assert_eq!(hub.subscriber_count(&b), 0);
    assert_eq!(hub.close_where(|t| t.contains("ca-1"), "again"), 0);
}

#[tokio::test]
async fn oldest_inactive_buffer_is_dropped_beyond_the_bound() {
    let (hub, _clock) = hub_with(1024, 5, 2);
    let a = name("a");
    let mut tx = attach(&hub, &a);
    tx.write_all(b"from a\n").await.unwrap();
    drop(tx);
    wait_until("a is inactive", || !hub.is_active(&a)).await;
    let (_, mut sub) = subscribe(&hub, &a, SinceCount::Count(5), &[]);
    assert_eq!(
        next_n(&mut sub, 2).await,
        vec![success(&a, "subscribed"), line(&a, T0, "from a")]
    );
    for s in ["b", "c"] {
        let n = name(s);
        drop(attach(&hub, &n));
        wait_until("the console is inactive", || !hub.is_active(&n)).await;
    }
    assert_eq!(hub.list_inactive(&Path::root()), vec![name("b"), name("c")]);
    assert_eq!(
        next(&mut sub).await,
        failure(&a, "console of :a removed (more than 2 inactive consoles)")
    );
    closed(&mut sub).await;
    // A new subscription to `a` waits for it again.
    let (text, _rx) = subscribe(&hub, &a, SinceCount::Count(5), &[]);
    assert_eq!(text, "waiting for VM");
}

#[tokio::test]
async fn forget_drops_buffer_and_closes_subscribers() {
    let (hub, _clock) = hub_with(1024, 5, 64);
    let n = name("foo:web");
    drop(attach(&hub, &n));
    wait_until("the console is inactive", || !hub.is_active(&n)).await;
    let (_, mut sub) = subscribe(&hub, &n, SinceCount::Count(5), &[]);
    assert!(hub.forget(&n));
    assert_eq!(
        next_n(&mut sub, 2).await,
        vec![
            success(&n, "subscribed"),
            failure(&n, "console of foo:web removed")
        ]
    );
    closed(&mut sub).await;
    assert!(hub.list_inactive(&Path::root()).is_empty());
    assert!(!hub.forget(&n));
}

#[tokio::test]
async fn paths_and_non_pipes_are_refused() {
    let (hub, _clock) = hub_with(1024, 5, 64);
    let (tx, mut rx) = mpsc::channel(4);
    let err = hub
        .subscribe(
            &name("foo:"),
            &SinceCount::Count(1),
            tx,
            SubscriberTag::default(),
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "path used instead of name");
    closed(&mut rx).await;

    let (_tx, rx) = pipe::pipe().unwrap();
    let err = hub
        .attach(&name("foo:"), rx.into_blocking_fd().unwrap())
        .unwrap_err();
    assert_eq!(err.to_string(), "path used instead of name");

    let file = tempfile::tempfile().unwrap();
    let err = hub.attach(&name("foo:web"), file.into()).unwrap_err();
    assert_eq!(err.to_string(), "opening console: not a pipe");
    assert!(!hub.is_active(&name("foo:web")));
}

#[test]
fn hub_is_send_sync_and_clone() {
    fn check<T: Send + Sync + Clone>() {}
    check::<ConsoleHub>();
}
