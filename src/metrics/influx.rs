//! `--influx HOST:PORT`: pushes the metric families as Influx line protocol over TCP every
//! interval, as albatross 2.8's `albatross-influx` does (to Telegraf's
//! `socket_listener`, or InfluxDB's line protocol listener).
//!
//! It runs in a task of its own and never blocks the endpoint: connecting and writing are
//! bounded by [`CONNECT_TIMEOUT`] and [`WRITE_TIMEOUT`]; a lost or refused connection is
//! retried after a back-off from [`BACKOFF_INITIAL`] doubling to [`BACKOFF_MAX`] (one
//! warning when it is lost, one line when it is back). Rounds missed meanwhile are not
//! replayed: the next push carries the counters' current values.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::{MetricsSource, render_influx, unix_nanos};

/// Time allowed to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time allowed to write one round of lines.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// First delay before reconnecting.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);

/// Longest delay before reconnecting.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The delay after `failures` consecutive failed connections (1-based).
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_INITIAL
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX)
}

/// Pushes `source`'s families to `target` every `interval`, until the task is dropped.
pub async fn push(target: String, source: Arc<MetricsSource>, interval: Duration) {
    // Consecutive failures: connections refused or timed out, or a connection lost.
    let mut failures: u32 = 0;
    loop {
        if failures > 0 {
            tokio::time::sleep(backoff(failures)).await;
        }
        let mut stream = match timeout(CONNECT_TIMEOUT, TcpStream::connect(&target)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(%target, error = %e, "influx: cannot connect; retrying with back-off");
                }
                continue;
            }
            Err(_) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(%target, "influx: connect timed out; retrying with back-off");
                }
                continue;
            }
        };
        tracing::info!(%target, "influx: connected");
        loop {
            let lines = render_influx(&source.collect().await, unix_nanos(SystemTime::now()));
            match timeout(WRITE_TIMEOUT, stream.write_all(lines.as_bytes())).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(%target, error = %e, "influx: connection lost");
                    break;
                }
                Err(_) => {
                    tracing::warn!(%target, "influx: write timed out; reconnecting");
                    break;
                }
            }
            tokio::time::sleep(interval).await;
        }
        failures = 1;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncBufReadExt;

    use super::*;
    use crate::metrics::ServerMetrics;

    #[test]
    fn backoff_doubles_to_the_maximum() {
        let delays: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
        assert_eq!(backoff(0), BACKOFF_INITIAL);
    }

    #[tokio::test]
    async fn lines_reach_a_listener_and_the_pusher_reconnects() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(ServerMetrics::default());
        metrics.add_bytes_in(42);
        let source = Arc::new(MetricsSource::new(Arc::clone(&metrics), None));
        let task = tokio::spawn(push(addr.to_string(), source, Duration::from_millis(10)));
        for round in 0..2 {
            let (stream, _) = listener.accept().await.unwrap();
            let mut lines = tokio::io::BufReader::new(stream).lines();
            let mut seen = Vec::new();
            while seen.len() < 3 {
                let line = lines.next_line().await.unwrap().unwrap();
                if line.starts_with("petrel_stream_bytes_total")
                    || line.starts_with("petrel_connections_open ")
                {
                    seen.push(line.rsplit_once(' ').unwrap().0.to_owned());
                }
            }
            assert_eq!(
                seen,
                [
                    "petrel_connections_open value=0",
                    "petrel_stream_bytes_total,direction=in value=42",
                    "petrel_stream_bytes_total,direction=out value=0",
                ],
                "round {round}"
            );
            // Dropping the connection makes the pusher reconnect.
        }
        task.abort();
    }
}
