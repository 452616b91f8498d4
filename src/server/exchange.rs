//! The exchange after a successful handshake: the raw chunk stream from the client to the
//! handler, the handler's frames to the client, and the closing of the connection.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_openssl::SslStream;

use super::{Outcome, RequestError, StreamError, failure_text};
use crate::chain::InputKind;
use crate::codec::{self, FrameLength, Header, Payload, Wire};
use crate::executor::api::{InputChunk, OutputReceiver};
use crate::limits::{LINGER_TIMEOUT, Limits};
use crate::metrics::ServerMetrics;
use crate::name::Name;

/// A server-side TLS connection.
pub(super) type Tls = SslStream<TcpStream>;

/// The input stream of a request: what it carries and where its chunks go.
pub(super) type Input = (InputKind, mpsc::Sender<InputChunk>);

/// How the reading side ended.
#[derive(Debug)]
enum ReaderEnd {
    /// The terminator arrived and `End` was handed over.
    Done,
    /// The handler dropped the input receiver (it refused early); nothing more is read.
    HandlerGone,
    /// The stream broke; `Failed` was handed over.
    Failed(StreamError),
    /// The client of a subscription closed or sent something.
    ClientSpoke,
}

/// How the writing side ended.
#[derive(Debug)]
enum WriterEnd {
    /// The handler closed its channel; the last frame forwarded, if any.
    Finished(Option<Last>),
    /// Stopped because the reading side ended the exchange.
    Stopped,
    /// Writing to the client failed or timed out.
    ClientGone(String),
}

/// The kind of the last frame forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Last {
    Success,
    Failure(String),
    Data,
}

/// Runs the exchange: feeds the input stream (if any) to the handler while forwarding its
/// output, then closes the connection. Returns what the client was told.
pub(super) async fn run(
    tls: Tls,
    name: &Name,
    input: Option<Input>,
    mut output: OutputReceiver,
    subscription: bool,
    limits: &Limits,
    metrics: &ServerMetrics,
) -> Outcome {
    let expects_input = input.is_some();
    let (mut rd, mut wr) = tokio::io::split(tls);
    let (reader_end, writer_end) = {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let mut stop_tx = Some(stop_tx);
        let reader = async {
            match input {
                Some((kind, tx)) => pump_input(&mut rd, kind, tx, limits, metrics).await,
                None if subscription => watch_client(&mut rd).await,
                None => std::future::pending().await,
            }
        };
        let writer = forward_output(&mut wr, &mut output, stop_rx, limits.idle_timeout, metrics);
        tokio::pin!(reader, writer);
        let mut reader_end = None;
        let writer_end = loop {
            tokio::select! {
                end = &mut reader, if reader_end.is_none() => {
                    if matches!(end, ReaderEnd::Failed(_) | ReaderEnd::ClientSpoke) {
                        if let Some(stop) = stop_tx.take() {
                            let _ = stop.send(());
                        }
                    }
                    reader_end = Some(end);
                }
                end = &mut writer => break end,
            }
        };
        (reader_end, writer_end)
    };
    // The handler learns that nobody reads its answer any more.
    drop(output);
    let mut tls = rd.unsplit(wr);

    let linger = expects_input && !matches!(reader_end, Some(ReaderEnd::Done));
    let (closing, outcome) = match (reader_end, writer_end) {
        (_, WriterEnd::ClientGone(reason)) => (None, Outcome::ClientGone(reason)),
        (Some(ReaderEnd::ClientSpoke), _) => (None, Outcome::Ended),
        (Some(ReaderEnd::Failed(e)), _) => {
            let text = failure_text(&RequestError::Stream(e));
            (Some(text.clone()), Outcome::Failure(text))
        }
        (_, WriterEnd::Finished(Some(Last::Success))) => (None, Outcome::Ok),
        (_, WriterEnd::Finished(Some(Last::Failure(text)))) => (None, Outcome::Failure(text)),
        (_, WriterEnd::Finished(Some(Last::Data))) => {
            let text = failure_text(&RequestError::StreamWithoutReply);
            (Some(text.clone()), Outcome::Failure(text))
        }
        (_, WriterEnd::Finished(None) | WriterEnd::Stopped) => {
            let text = failure_text(&RequestError::NoReply);
            (Some(text.clone()), Outcome::Failure(text))
        }
    };
    let mut outcome = outcome;
    if let Some(text) = closing {
        match write_frame(&mut tls, name, Payload::failure(text), limits.idle_timeout).await {
            Ok(n) => metrics.add_bytes_out(n),
            Err(e) => outcome = Outcome::ClientGone(e),
        }
    }
    close(tls, linger, limits).await;
    outcome
}

/// Answers a refused request: one failure frame, close_notify, and a short linger so that
/// a client still sending (an image after a refused create) reads the answer.
pub(super) async fn refuse(
    mut tls: Tls,
    name: &Name,
    text: &str,
    limits: &Limits,
    metrics: &ServerMetrics,
) {
    if let Ok(n) = write_frame(&mut tls, name, Payload::failure(text), limits.idle_timeout).await {
        metrics.add_bytes_out(n);
    }
    close(tls, true, limits).await;
}

/// Feeds the client's raw chunks to the handler until the terminator, the handler going
/// away, or an error (which is handed to the handler as `Failed`).
async fn pump_input<R: AsyncRead + Unpin>(
    rd: &mut R,
    kind: InputKind,
    tx: mpsc::Sender<InputChunk>,
    limits: &Limits,
    metrics: &ServerMetrics,
) -> ReaderEnd {
    let max_total = match kind {
        InputKind::Image => limits.max_image_size,
        InputKind::Crl => limits.max_crl_size,
        // The executor bounds block data by the device's size.
        InputKind::BlockData => u64::MAX,
    };
    let mut total: u64 = 0;
    let error = loop {
        let chunk = match read_chunk(rd, limits.max_frame_size, limits.idle_timeout).await {
            Ok(Some(chunk)) => {
                metrics.add_bytes_in(
                    u64::try_from(chunk.len())
                        .unwrap_or(u64::MAX)
                        .saturating_add(4),
                );
                chunk
            }
            Ok(None) => {
                metrics.add_bytes_in(4);
                return match tx.send(InputChunk::End).await {
                    Ok(()) => ReaderEnd::Done,
                    Err(_) => ReaderEnd::HandlerGone,
                };
            }
            Err(e) => break e,
        };
        total = total.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
        if total > max_total {
            break StreamError::TooLarge {
                kind,
                max: max_total,
            };
        }
        if tx.send(InputChunk::Data(chunk)).await.is_err() {
            return ReaderEnd::HandlerGone;
        }
    };
    let text = failure_text(&RequestError::Stream(error.clone()));
    // The handler should be reading; do not wait for it forever.
    let _ = timeout(limits.idle_timeout, tx.send(InputChunk::Failed(text))).await;
    ReaderEnd::Failed(error)
}

/// Reads one raw chunk (`spec/wire.md` §7.2): `None` for the terminator.
async fn read_chunk<R: AsyncRead + Unpin>(
    rd: &mut R,
    max: usize,
    idle: Duration,
) -> Result<Option<Vec<u8>>, StreamError> {
    let mut header = [0u8; 4];
    read_exact_idle(rd, &mut header, idle).await?;
    match codec::decode_frame_header(header, max) {
        Ok(FrameLength::EndOfStream) => Ok(None),
        Ok(FrameLength::Body(len)) => {
            let mut body = vec![0u8; len];
            read_exact_idle(rd, &mut body, idle).await?;
            Ok(Some(body))
        }
        Err(codec::FrameError::TooLarge { len, max }) => {
            Err(StreamError::ChunkTooLarge { len, max })
        }
        Err(e) => Err(StreamError::Tls(e.to_string())),
    }
}

/// Fills `buf`, failing if no octet arrives for `idle`.
async fn read_exact_idle<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut [u8],
    idle: Duration,
) -> Result<(), StreamError> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        match timeout(idle, rd.read(rest)).await {
            Err(_) => return Err(StreamError::Idle(idle)),
            Ok(Ok(0)) => return Err(StreamError::Closed),
            Ok(Ok(n)) => filled += n,
            Ok(Err(e)) => return Err(StreamError::Tls(e.to_string())),
        }
    }
    Ok(())
}

/// Waits until the client of a subscription closes or sends anything.
async fn watch_client<R: AsyncRead + Unpin>(rd: &mut R) -> ReaderEnd {
    let mut octet = [0u8; 1];
    let _ = rd.read(&mut octet).await;
    ReaderEnd::ClientSpoke
}

/// Forwards the handler's frames until its channel closes or `stop` fires (checked
/// between frames, so a frame is never cut).
async fn forward_output<W: AsyncWrite + Unpin>(
    wr: &mut W,
    output: &mut OutputReceiver,
    mut stop: oneshot::Receiver<()>,
    idle: Duration,
    metrics: &ServerMetrics,
) -> WriterEnd {
    let mut last = None;
    loop {
        let frame = tokio::select! {
            biased;
            _ = &mut stop => return WriterEnd::Stopped,
            frame = output.recv() => frame,
        };
        let Some(frame) = frame else {
            return WriterEnd::Finished(last);
        };
        let kind = match super::reply_kind(&frame.payload) {
            Some(Ok(())) => Last::Success,
            Some(Err(text)) => Last::Failure(text),
            None => Last::Data,
        };
        match write_frame(wr, &frame.name, frame.payload, idle).await {
            Ok(n) => metrics.add_bytes_out(n),
            Err(e) => return WriterEnd::ClientGone(e),
        }
        last = Some(kind);
    }
}

/// Writes one framed `Wire` message with header `(5, 0, name)`, within `idle`; the
/// octets written.
async fn write_frame<W: AsyncWrite + Unpin>(
    wr: &mut W,
    name: &Name,
    payload: Payload,
    idle: Duration,
) -> Result<u64, String> {
    let wire = Wire::new(Header::new(0, name.clone()), payload);
    let framed = codec::frame(&codec::encode_wire(&wire)).map_err(|e| e.to_string())?;
    let write = async {
        wr.write_all(&framed).await?;
        wr.flush().await
    };
    match timeout(idle, write).await {
        Ok(Ok(())) => Ok(u64::try_from(framed.len()).unwrap_or(u64::MAX)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("write timeout ({} s)", idle.as_secs())),
    }
}

/// Sends close_notify and closes. With `linger`, keeps reading (and discarding) what the
/// client still sends for at most [`LINGER_TIMEOUT`], so that unread data does not make
/// the kernel reset the connection before the client has read our last frame.
async fn close(mut tls: Tls, linger: bool, limits: &Limits) {
    let _ = timeout(limits.idle_timeout, tls.shutdown()).await;
    if !linger {
        return;
    }
    let tcp = tls.get_mut();
    let drain = async {
        let mut scratch = vec![0u8; 16 * 1024];
        loop {
            match tcp.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = timeout(LINGER_TIMEOUT, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_are_read_until_the_terminator() {
        let mut input: &[u8] = &[0, 0, 0, 2, 7, 8, 0, 0, 0, 1, 9, 0, 0, 0, 0, 0xAA];
        let idle = Duration::from_secs(5);
        assert_eq!(read_chunk(&mut input, 4, idle).await, Ok(Some(vec![7, 8])));
        assert_eq!(read_chunk(&mut input, 4, idle).await, Ok(Some(vec![9])));
        assert_eq!(read_chunk(&mut input, 4, idle).await, Ok(None));
        // What follows the terminator is not read.
        assert_eq!(input, &[0xAA]);
    }

    #[tokio::test]
    async fn chunk_errors() {
        let idle = Duration::from_secs(5);
        let mut oversized: &[u8] = &[0, 0, 0, 5, 1, 2, 3, 4, 5];
        assert_eq!(
            read_chunk(&mut oversized, 4, idle).await,
            Err(StreamError::ChunkTooLarge { len: 5, max: 4 })
        );
        let mut truncated: &[u8] = &[0, 0, 0, 3, 1];
        assert_eq!(
            read_chunk(&mut truncated, 4, idle).await,
            Err(StreamError::Closed)
        );
        let mut negative: &[u8] = &[0xFF, 0xFF, 0xFF, 0xFE];
        assert_eq!(read_chunk(&mut negative, 4, idle).await, Ok(None));
    }

    #[tokio::test]
    async fn a_stalled_client_hits_the_idle_timeout() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(&[0, 0, 0, 4, 1]).await.unwrap();
        let idle = Duration::from_millis(50);
        assert_eq!(
            read_chunk(&mut server, 8, idle).await,
            Err(StreamError::Idle(idle))
        );
    }

    #[tokio::test]
    async fn pump_hands_over_chunks_and_failures() {
        let limits = Limits {
            max_image_size: 3,
            ..Limits::default()
        };
        let (tx, mut rx) = mpsc::channel(8);
        let mut input: &[u8] = &[0, 0, 0, 2, 1, 2, 0, 0, 0, 2, 3, 4];
        let end = pump_input(
            &mut input,
            InputKind::Image,
            tx,
            &limits,
            &ServerMetrics::default(),
        )
        .await;
        assert!(matches!(
            end,
            ReaderEnd::Failed(StreamError::TooLarge {
                kind: InputKind::Image,
                max: 3
            })
        ));
        assert_eq!(rx.recv().await, Some(InputChunk::Data(vec![1, 2])));
        assert_eq!(
            rx.recv().await,
            Some(InputChunk::Failed(
                "reading tls chunk: image exceeds the limit of 3 octets".to_owned()
            ))
        );
        assert_eq!(rx.recv().await, None);

        let (tx, rx) = mpsc::channel(8);
        drop(rx);
        let mut input: &[u8] = &[0, 0, 0, 1, 1];
        let metrics = ServerMetrics::default();
        let end = pump_input(&mut input, InputKind::BlockData, tx, &limits, &metrics).await;
        assert_eq!(metrics.snapshot().bytes_in, 5);
        assert!(matches!(end, ReaderEnd::HandlerGone));
    }
}
