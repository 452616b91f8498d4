//! Streams a file after the handshake (`spec/wire.md` §7.2, §8.2–8.3): raw chunks with the
//! 4-octet length prefix, each at most [`CHUNK_SIZE`] octets, then the zero-length
//! terminator; optionally one zlib stream over the whole file. The file is read and
//! compressed piece by piece, so memory does not grow with its size.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::ZlibEncoder;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::ClientError;
use crate::codec::{END_OF_STREAM, frame_header};

/// Largest raw chunk sent. albatross-client sends 4 KiB; larger chunks cost less framing
/// and fewer TLS records, and 64 KiB stays far below the endpoint's frame limit (1 MiB).
pub const CHUNK_SIZE: usize = 64 * 1024;

/// A file to stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The file.
    pub path: PathBuf,
    /// zlib level; 0 sends the file as is.
    pub level: u32,
    /// Print a progress line on stderr.
    pub progress: ProgressMode,
}

/// Whether a progress line is printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ProgressMode {
    /// When stderr is a terminal.
    #[default]
    Auto,
    /// Always (`--progress`).
    Always,
}

impl ProgressMode {
    fn enabled(self) -> bool {
        match self {
            Self::Auto => io::stderr().is_terminal(),
            Self::Always => true,
        }
    }
}

/// What was sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uploaded {
    /// Octets read from the file.
    pub read: u64,
    /// Octets sent in chunks (after compression).
    pub sent: u64,
    /// Number of non-empty chunks.
    pub chunks: u64,
}

/// Why an upload stopped.
#[derive(Debug)]
pub enum UploadError {
    /// The file could not be read.
    Read(ClientError),
    /// The connection refused a write.
    Write(io::Error),
}

/// Streams `upload` to `w` and ends the stream with the terminator.
pub async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    upload: &Upload,
) -> Result<Uploaded, UploadError> {
    let path = &upload.path;
    let read_error = |e| UploadError::Read(ClientError::io(path, e));
    let mut file = File::open(path).map_err(read_error)?;
    let total = file.metadata().map_err(read_error)?.len();
    let mut progress = Progress::new(upload.progress.enabled(), path, total);
    let mut encoder =
        (upload.level > 0).then(|| ZlibEncoder::new(Vec::new(), Compression::new(upload.level)));
    let mut chunks = Chunks::new(w);
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut read = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        let data = buf.get(..n).unwrap_or_default();
        read += u64::try_from(n).unwrap_or(u64::MAX);
        match &mut encoder {
            Some(z) => {
                z.write_all(data).map_err(read_error)?;
                let out = std::mem::take(z.get_mut());
                chunks.push(&out).await?;
            }
            None => chunks.push(data).await?,
        }
        progress.update(read);
    }
    if let Some(z) = encoder {
        let rest = z.finish().map_err(read_error)?;
        chunks.push(&rest).await?;
    }
    let (sent, count) = chunks.finish().await?;
    progress.done();
    Ok(Uploaded {
        read,
        sent,
        chunks: count,
    })
}

/// Cuts a byte stream into framed chunks of exactly [`CHUNK_SIZE`] octets (the last one
/// shorter) and ends it with the terminator.
struct Chunks<'a, W> {
    w: &'a mut W,
    pending: Vec<u8>,
    sent: u64,
    count: u64,
}

impl<'a, W: AsyncWrite + Unpin> Chunks<'a, W> {
    fn new(w: &'a mut W) -> Self {
        Self {
            w,
            pending: Vec::with_capacity(CHUNK_SIZE),
            sent: 0,
            count: 0,
        }
    }

    async fn push(&mut self, mut data: &[u8]) -> Result<(), UploadError> {
        while !data.is_empty() {
            let room = CHUNK_SIZE - self.pending.len();
            let (now, later) = data.split_at(room.min(data.len()));
            self.pending.extend_from_slice(now);
            data = later;
            if self.pending.len() == CHUNK_SIZE {
                self.flush_chunk().await?;
            }
        }
        Ok(())
    }

    async fn flush_chunk(&mut self) -> Result<(), UploadError> {
        let header = frame_header(self.pending.len())
            .map_err(|e| UploadError::Write(io::Error::other(e)))?;
        self.w
            .write_all(&header)
            .await
            .map_err(UploadError::Write)?;
        self.w
            .write_all(&self.pending)
            .await
            .map_err(UploadError::Write)?;
        self.sent += u64::try_from(self.pending.len()).unwrap_or(u64::MAX);
        self.count += 1;
        self.pending.clear();
        Ok(())
    }

    async fn finish(mut self) -> Result<(u64, u64), UploadError> {
        if !self.pending.is_empty() {
            self.flush_chunk().await?;
        }
        self.w
            .write_all(&END_OF_STREAM)
            .await
            .map_err(UploadError::Write)?;
        self.w.flush().await.map_err(UploadError::Write)?;
        Ok((self.sent, self.count))
    }
}

/// A progress line on stderr, rewritten in place whenever the percentage changes.
struct Progress {
    enabled: bool,
    name: String,
    total: u64,
    percent: Option<u64>,
}

impl Progress {
    fn new(enabled: bool, path: &Path, total: u64) -> Self {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Self {
            enabled,
            name,
            total,
            percent: None,
        }
    }

    fn update(&mut self, read: u64) {
        if !self.enabled {
            return;
        }
        let percent = (read.saturating_mul(100))
            .checked_div(self.total)
            .unwrap_or(100)
            .min(100);
        if self.percent == Some(percent) {
            return;
        }
        self.percent = Some(percent);
        eprint!(
            "\rsending {}: {} of {} ({percent}%)",
            self.name,
            mebibytes(read),
            mebibytes(self.total)
        );
    }

    fn done(&mut self) {
        if self.enabled {
            self.update(self.total);
            eprintln!();
        }
    }
}

/// `12.3 MiB`.
fn mebibytes(octets: u64) -> String {
    let tenths = octets.saturating_mul(10) / (1024 * 1024);
    format!("{}.{} MiB", tenths / 10, tenths % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits a chunk stream back into its chunks; the terminator must come last.
    fn unframe(mut stream: &[u8]) -> Vec<Vec<u8>> {
        let mut chunks = Vec::new();
        loop {
            let (len, rest) = stream.split_at(4);
            let len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
            if len == 0 {
                assert!(rest.is_empty(), "data after the terminator");
                return chunks;
            }
            chunks.push(rest[..len].to_vec());
            stream = &rest[len..];
        }
    }

    fn upload(data: &[u8], level: u32) -> (Vec<Vec<u8>>, Uploaded) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image");
        std::fs::write(&path, data).unwrap();
        let mut out = Vec::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let stats = runtime
            .block_on(send(
                &mut out,
                &Upload {
                    path,
                    level,
                    progress: ProgressMode::Auto,
                },
            ))
            .map_err(|e| format!("{e:?}"))
            .unwrap();
        (unframe(&out), stats)
    }

    #[test]
    fn raw_chunks_and_terminator() {
        let data: Vec<u8> = (0..CHUNK_SIZE * 2 + 100).map(|i| (i % 251) as u8).collect();
        let (chunks, stats) = upload(&data, 0);
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(sizes, [CHUNK_SIZE, CHUNK_SIZE, 100]);
        assert_eq!(chunks.concat(), data);
        assert_eq!(
            stats,
            Uploaded {
                read: data.len() as u64,
                sent: data.len() as u64,
                chunks: 3
            }
        );
    }

    #[test]
    fn empty_file_is_just_the_terminator() {
        let (chunks, stats) = upload(&[], 0);
        assert!(chunks.is_empty());
        assert_eq!(stats, Uploaded::default());
    }

    #[test]
    fn compressed_stream_is_one_zlib_stream() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i / 7).to_le_bytes())
            .collect();
        let (chunks, stats) = upload(&data, 9);
        assert!(
            chunks
                .iter()
                .all(|c| c.len() <= CHUNK_SIZE && !c.is_empty())
        );
        let stream = chunks.concat();
        assert_eq!(stats.sent, stream.len() as u64);
        assert_eq!(stats.read, data.len() as u64);
        let mut inflated = Vec::new();
        flate2::read::ZlibDecoder::new(stream.as_slice())
            .read_to_end(&mut inflated)
            .unwrap();
        assert_eq!(inflated, data);
    }

    #[test]
    fn sizes_in_mebibytes() {
        assert_eq!(mebibytes(0), "0.0 MiB");
        assert_eq!(mebibytes(1024 * 1024 * 3 / 2), "1.5 MiB");
    }
}
