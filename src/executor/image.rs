//! Unikernel images on their way in and out: streamed or inline images are written to a
//! temporary file under `<state>/tmp/` as they arrive (never held whole in memory),
//! bounded, SHA-256 hashed on the way, zlib-inflated with the same bound, and only then
//! committed to `<state>/images/<file>.img` by a rename (DESIGN.md items 4, 5).
//!
//! Images are kept uncompressed: the digest reported by `info` is the SHA-256 of the
//! uncompressed image, and `get` compresses on demand.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::executor::api::{InputChunk, InputReceiver};
use crate::executor::persist::FILE_MODE;
use crate::store::{self, StoreError};

/// Size of the buffer used while inflating or hashing a file: 64 KiB keeps the number of
/// system calls per image low (a few hundred for a typical 20 MB image) while the memory
/// one create holds stays negligible.
pub const COPY_BUFFER: usize = 64 * 1024;

/// Largest zlib level of `get` (spec §8.5: 0 = uncompressed, 1..9).
pub const MAX_COMPRESSION_LEVEL: i64 = 9;

/// SHA-256 of an uncompressed image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageDigest(pub [u8; 32]);

/// Why an image could not be received, stored or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The configuration carries no image and no stream was sent.
    #[error("no image: the configuration's image is empty and no image stream follows")]
    Missing,
    /// The stream broke (disconnect, idle timeout, limit in the server).
    #[error("image stream broken: {0}")]
    Stream(String),
    /// The stream ended without its terminator.
    #[error("image stream ended before its terminator")]
    StreamClosed,
    /// The image (as sent) exceeds the limit.
    #[error("image exceeds the limit of {0} octets")]
    TooLarge(u64),
    /// Inflating failed (albatross's prefix), or the inflated image exceeds the limit.
    #[error("failed to uncompress: {0}")]
    Uncompress(String),
    /// `get` with a level outside 0..=9.
    #[error("invalid compression level {0} (0 to 9)")]
    Level(i64),
    /// A file operation failed. The text does not name the file: clients see it, and the
    /// host's layout (or a temporary file's name) is of no use to them.
    #[error("could not {op} the image: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Committing the image failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking worker doing the file work failed.
    #[error("image worker failed: {0}")]
    Worker(String),
}

/// A temporary file that is removed unless it was committed.
#[derive(Debug)]
pub struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    /// A fresh, not yet created temporary file name in `tmp_dir`.
    pub fn new(tmp_dir: &Path, what: &str) -> Self {
        Self {
            path: Some(store::temp_path(&tmp_dir.join(what))),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Renames the (written and synced) file over `target` and syncs the directory.
    pub fn commit(mut self, target: &Path) -> Result<(), StoreError> {
        if let Some(path) = self.path.take() {
            if let Err(e) = store::commit(&path, target) {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// An uncompressed image in a temporary file, with its digest.
#[derive(Debug)]
pub struct TempImage {
    /// The file (removed when dropped uncommitted).
    pub file: TempFile,
    /// SHA-256 of its content.
    pub digest: ImageDigest,
}

/// Receives the image of a create: `inline` (from the certificate) if it is not empty,
/// else the `input` stream; inflated if `compressed`. At most `limit` octets are
/// accepted before and after inflation. Whatever fails, no file is left behind.
pub async fn receive(
    tmp_dir: &Path,
    inline: Vec<u8>,
    compressed: bool,
    input: Option<InputReceiver>,
    limit: u64,
) -> Result<TempImage, ImageError> {
    if !inline.is_empty() {
        if u64::try_from(inline.len()).unwrap_or(u64::MAX) > limit {
            return Err(ImageError::TooLarge(limit));
        }
        let file = TempFile::new(tmp_dir, "image");
        let path = file.path().to_owned();
        let digest = blocking(move || {
            if compressed {
                inflate(&mut inline.as_slice(), &path, limit)
            } else {
                write_hashed(&inline, &path)
            }
        })
        .await?;
        return Ok(TempImage { file, digest });
    }
    let mut input = input.ok_or(ImageError::Missing)?;
    let raw = TempFile::new(tmp_dir, "image");
    let digest = receive_stream(&mut input, raw.path(), limit).await?;
    if !compressed {
        return Ok(TempImage { file: raw, digest });
    }
    let file = TempFile::new(tmp_dir, "image");
    let (src, dst) = (raw.path().to_owned(), file.path().to_owned());
    let digest = blocking(move || {
        let mut compressed = File::open(&src).map_err(io_error("open", &src))?;
        inflate(&mut compressed, &dst, limit)
    })
    .await?;
    drop(raw);
    Ok(TempImage { file, digest })
}

/// SHA-256 of the file at `path`.
pub async fn digest_of(path: &Path) -> Result<ImageDigest, ImageError> {
    let path = path.to_owned();
    blocking(move || {
        let mut file = File::open(&path).map_err(io_error("open", &path))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0; COPY_BUFFER];
        loop {
            let n = file.read(&mut buf).map_err(io_error("read", &path))?;
            if n == 0 {
                break;
            }
            hasher.update(buf.get(..n).unwrap_or_default());
        }
        Ok(ImageDigest(hasher.finalize().into()))
    })
    .await
}

/// The image at `path` for `get`: as stored (uncompressed) for level 0, compressed with
/// zlib at `level` for 1..9. Returns `(compressed, octets)`.
pub async fn for_get(path: &Path, level: i64, limit: u64) -> Result<(bool, Vec<u8>), ImageError> {
    if !(0..=MAX_COMPRESSION_LEVEL).contains(&level) {
        return Err(ImageError::Level(level));
    }
    let path = path.to_owned();
    blocking(move || {
        let image = store::read_bounded(&path, limit)?.ok_or_else(|| ImageError::Io {
            op: "read",
            path: path.clone(),
            source: io::ErrorKind::NotFound.into(),
        })?;
        let Ok(level) = u32::try_from(level) else {
            return Err(ImageError::Level(level));
        };
        if level == 0 {
            return Ok((false, image));
        }
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::new(level));
        encoder
            .write_all(&image)
            .and_then(|()| encoder.finish())
            .map(|out| (true, out))
            .map_err(io_error("compress", &path))
    })
    .await
}

/// Writes the stream to `path` (created new, mode 0600) until its terminator, hashing on
/// the way; refuses more than `limit` octets.
async fn receive_stream(
    input: &mut InputReceiver,
    path: &Path,
    limit: u64,
) -> Result<ImageDigest, ImageError> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .await
        .map_err(io_error("create", path))?;
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    loop {
        match input.recv().await {
            Some(InputChunk::Data(chunk)) => {
                total = total.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
                if total > limit {
                    return Err(ImageError::TooLarge(limit));
                }
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(io_error("write", path))?;
            }
            Some(InputChunk::End) => break,
            Some(InputChunk::Failed(reason)) => return Err(ImageError::Stream(reason)),
            None => return Err(ImageError::StreamClosed),
        }
    }
    file.flush().await.map_err(io_error("write", path))?;
    file.sync_all().await.map_err(io_error("sync", path))?;
    Ok(ImageDigest(hasher.finalize().into()))
}

/// Writes `data` to the new file `path` and returns its digest.
fn write_hashed(data: &[u8], path: &Path) -> Result<ImageDigest, ImageError> {
    let mut file = create(path)?;
    file.write_all(data).map_err(io_error("write", path))?;
    file.sync_all().map_err(io_error("sync", path))?;
    Ok(ImageDigest(Sha256::digest(data).into()))
}

/// Inflates the zlib stream `src` into the new file `dst`, at most `limit` octets, and
/// returns the digest of the inflated content.
fn inflate(src: &mut dyn Read, dst: &Path, limit: u64) -> Result<ImageDigest, ImageError> {
    let mut decoder = ZlibDecoder::new(src);
    let mut file = create(dst)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; COPY_BUFFER];
    let mut total: u64 = 0;
    loop {
        let n = decoder
            .read(&mut buf)
            .map_err(|e| ImageError::Uncompress(e.to_string()))?;
        if n == 0 {
            break;
        }
        total = total.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        if total > limit {
            return Err(ImageError::Uncompress(format!(
                "image exceeds the limit of {limit} octets"
            )));
        }
        let piece = buf.get(..n).unwrap_or_default();
        hasher.update(piece);
        file.write_all(piece).map_err(io_error("write", dst))?;
    }
    file.sync_all().map_err(io_error("sync", dst))?;
    Ok(ImageDigest(hasher.finalize().into()))
}

fn create(path: &Path) -> Result<File, ImageError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(io_error("create", path))
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, ImageError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(ImageError::Worker(e.to_string())))
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::new(6));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    async fn stream(chunks: Vec<InputChunk>) -> InputReceiver {
        let (tx, rx) = mpsc::channel(chunks.len().max(1));
        for c in chunks {
            tx.send(c).await.unwrap();
        }
        rx
    }

    #[tokio::test]
    async fn inline_and_streamed_plain_and_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"hello unikernel".repeat(1000);
        let digest = ImageDigest(Sha256::digest(&data).into());
        let cases = [
            (data.clone(), false, None),
            (zlib(&data), true, None),
            (
                Vec::new(),
                false,
                Some(vec![
                    InputChunk::Data(data[..100].to_vec()),
                    InputChunk::Data(data[100..].to_vec()),
                    InputChunk::End,
                ]),
            ),
            (
                Vec::new(),
                true,
                Some(vec![InputChunk::Data(zlib(&data)), InputChunk::End]),
            ),
        ];
        for (inline, compressed, chunks) in cases {
            let input = match chunks {
                Some(c) => Some(stream(c).await),
                None => None,
            };
            let image = receive(dir.path(), inline, compressed, input, 1 << 20)
                .await
                .unwrap();
            assert_eq!(image.digest, digest);
            assert_eq!(fs::read(image.file.path()).unwrap(), data);
            let target = dir.path().join("committed.img");
            image.file.commit(&target).unwrap();
            assert_eq!(fs::read(&target).unwrap(), data);
            assert_eq!(files(dir.path()), vec![target.clone()]);
            fs::remove_file(target).unwrap();
        }
    }

    #[tokio::test]
    async fn failures_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 5000];
        type Case = (Vec<u8>, bool, Option<Vec<InputChunk>>, String);
        let cases: Vec<Case> = vec![
            (
                Vec::new(),
                false,
                None,
                "no image: the configuration's image is empty and no image stream follows".into(),
            ),
            (
                Vec::new(),
                false,
                Some(vec![
                    InputChunk::Data(data.clone()),
                    InputChunk::Failed("peer disconnected".into()),
                ]),
                "image stream broken: peer disconnected".into(),
            ),
            (
                Vec::new(),
                false,
                Some(vec![InputChunk::Data(data.clone())]),
                "image stream ended before its terminator".into(),
            ),
            (
                Vec::new(),
                false,
                Some(vec![
                    InputChunk::Data(data.clone()),
                    InputChunk::Data(data.clone()),
                    InputChunk::End,
                ]),
                "image exceeds the limit of 8000 octets".into(),
            ),
            (
                data.repeat(2),
                false,
                None,
                "image exceeds the limit of 8000 octets".into(),
            ),
            (
                zlib(&data.repeat(2)),
                true,
                None,
                "failed to uncompress: image exceeds the limit of 8000 octets".into(),
            ),
            (
                Vec::new(),
                true,
                Some(vec![
                    InputChunk::Data(zlib(&data.repeat(2))),
                    InputChunk::End,
                ]),
                "failed to uncompress: image exceeds the limit of 8000 octets".into(),
            ),
            (
                b"not zlib at all".to_vec(),
                true,
                None,
                "failed to uncompress: corrupt deflate stream".into(),
            ),
        ];
        for (inline, compressed, chunks, text) in cases {
            let input = match chunks {
                Some(c) => Some(stream(c).await),
                None => None,
            };
            let err = receive(dir.path(), inline, compressed, input, 8000)
                .await
                .unwrap_err();
            assert_eq!(err.to_string(), text);
            assert_eq!(files(dir.path()), Vec::<PathBuf>::new(), "{text}");
        }
    }

    #[tokio::test]
    async fn get_levels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.img");
        let data = b"abc".repeat(100);
        fs::write(&path, &data).unwrap();
        assert_eq!(
            for_get(&path, 0, 1000).await.unwrap(),
            (false, data.clone())
        );
        let (compressed, out) = for_get(&path, 9, 1000).await.unwrap();
        assert!(compressed);
        let mut inflated = Vec::new();
        ZlibDecoder::new(out.as_slice())
            .read_to_end(&mut inflated)
            .unwrap();
        assert_eq!(inflated, data);
        assert_eq!(
            for_get(&path, 10, 1000).await.unwrap_err().to_string(),
            "invalid compression level 10 (0 to 9)"
        );
        assert_eq!(
            digest_of(&path).await.unwrap(),
            ImageDigest(Sha256::digest(&data).into())
        );
    }
}
