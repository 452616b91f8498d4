//! A tiny HTTP/1.1 responder for `--metrics`: `GET /metrics` (or `HEAD`) answers the
//! Prometheus text format, anything else a short error; one request per connection
//! (`Connection: close`).
//!
//! It reads at most [`MAX_REQUEST_HEAD`] octets of request head within
//! [`REQUEST_TIMEOUT`], serves at most [`MAX_METRICS_CONNECTIONS`] connections at once
//! (more wait in the kernel's backlog), and never reads a request body.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use super::{MetricsSource, render_prometheus};

/// Largest request head read (request line and headers). A scraper sends a few hundred
/// octets.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Time a client has to send its request head, and to read the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once: scrapers come every few seconds, so a handful suffices,
/// and the bound keeps a flood of slow clients from holding memory and tasks.
pub const MAX_METRICS_CONNECTIONS: usize = 16;

/// The content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The path served.
pub const METRICS_PATH: &str = "/metrics";

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics`.
    Metrics,
    /// `HEAD /metrics`.
    MetricsHead,
    /// Another path.
    NotFound,
    /// Another method.
    MethodNotAllowed,
    /// Not an HTTP/1.x request line.
    BadRequest,
}

/// Routes a request head (only its first line matters). A query string is ignored.
pub fn route(head: &[u8]) -> Route {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Some(line) = head.get(..line_end) else {
        return Route::BadRequest;
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return Route::BadRequest;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    match (method, path == METRICS_PATH) {
        ("GET", true) => Route::Metrics,
        ("HEAD", true) => Route::MetricsHead,
        ("GET" | "HEAD", false) => Route::NotFound,
        _ => Route::MethodNotAllowed,
    }
}

/// A complete response.
pub fn response(status: &str, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// Serves `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, source: Arc<MetricsSource>) {
    let slots = Arc::new(Semaphore::new(MAX_METRICS_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(crate::server::ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let source = Arc::clone(&source);
        tokio::spawn(async move {
            if let Err(e) = timeout(REQUEST_TIMEOUT, handle(stream, &source)).await {
                tracing::debug!(%peer, error = %e, "metrics: request timed out");
            }
            drop(permit);
        });
    }
}

/// Reads one request head and answers it.
async fn handle(mut stream: TcpStream, source: &MetricsSource) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let complete = loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break false,
            Ok(n) => head.extend_from_slice(buf.get(..n).unwrap_or_default()),
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break true;
        }
        if head.len() > MAX_REQUEST_HEAD {
            break false;
        }
    };
    let answer = if !complete {
        if head.len() > MAX_REQUEST_HEAD {
            response(
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request head too large\n",
                false,
            )
        } else {
            return;
        }
    } else {
        match route(&head) {
            route @ (Route::Metrics | Route::MetricsHead) => {
                let body = render_prometheus(&source.collect().await);
                response(
                    "200 OK",
                    CONTENT_TYPE,
                    body.as_bytes(),
                    route == Route::MetricsHead,
                )
            }
            Route::NotFound => response(
                "404 Not Found",
                "text/plain",
                b"not found: the metrics are at /metrics\n",
                false,
            ),
            Route::MethodNotAllowed => response(
                "405 Method Not Allowed",
                "text/plain",
                b"method not allowed\n",
                false,
            ),
            Route::BadRequest => response("400 Bad Request", "text/plain", b"bad request\n", false),
        }
    };
    let _ = stream.write_all(&answer).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let cases: [(&[u8], Route); 9] = [
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", Route::Metrics),
            (b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n", Route::Metrics),
            (b"HEAD /metrics HTTP/1.1\r\n\r\n", Route::MetricsHead),
            (b"GET / HTTP/1.1\r\n\r\n", Route::NotFound),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", Route::NotFound),
            (b"POST /metrics HTTP/1.1\r\n\r\n", Route::MethodNotAllowed),
            (b"GET /metrics\r\n\r\n", Route::BadRequest),
            (b"GET /metrics HTTP/2\r\n\r\n", Route::BadRequest),
            (b"GET  /metrics HTTP/1.1\r\n\r\n", Route::BadRequest),
        ];
        for (head, expected) in cases {
            assert_eq!(route(head), expected, "{}", String::from_utf8_lossy(head));
        }
        assert_eq!(route(b"\xff\xfe"), Route::BadRequest);
    }

    #[test]
    fn responses() {
        assert_eq!(
            response("200 OK", CONTENT_TYPE, b"a 1\n", false),
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
              Content-Length: 4\r\nConnection: close\r\n\r\na 1\n"
        );
        assert_eq!(
            response("200 OK", "text/plain", b"a 1\n", true),
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\
              Connection: close\r\n\r\n"
        );
        assert_eq!(
            response("405 Method Not Allowed", "text/plain", b"", false),
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\
              Connection: close\r\nAllow: GET, HEAD\r\n\r\n"
        );
    }
}
