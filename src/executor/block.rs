//! Block device files (`spec/unikernel-and-executor.md` §11, `spec/wire.md` §8.3–8.5).
//!
//! A [`BlockStore`] owns one directory (`<state>/block`, mode 0700). Each block device is
//! one sparse file of `size × 2^20` octets (mode 0600) named by [`Name::file_name`], the
//! only name → file mapping; path-only names are refused.
//!
//! New content never overwrites a device in place (DESIGN.md item 5, spec E10): a set
//! writes to a temporary file in the same directory while the stream arrives (inflating a
//! zlib stream in bounded pieces), and only when the stream ended properly is the file
//! padded to the device size, synced and renamed over the old one. A stream that breaks,
//! exceeds the device or is not valid zlib leaves the old content untouched. A dump
//! streams from the file in bounded pieces.
//!
//! The caller owns the registry of devices and the resource trie: it checks policies,
//! existence and whether a device is attached to a running unikernel ("is in use") before
//! calling [`BlockStore::set`], [`BlockStore::remove`] or [`BlockStore::dump`]; this
//! module only handles the files. It does keep set and remove consistent with each other:
//! a set whose device was removed meanwhile does not bring the file back.
//!
//! The synchronous methods do blocking file I/O (the inline ones on up to a whole
//! device); call them from `spawn_blocking` when on the runtime.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::sync::mpsc;

use crate::codec::{BlockData, Data, Payload, Success};
use crate::executor::api::{InputChunk, InputReceiver, OutputFrame};
use crate::name::{Name, NameError};
use crate::store::{self, StoreError};

/// Octets per MB: albatross sizes block devices in MB of 2^20 octets.
pub const MB: u64 = 1 << 20;

/// Largest piece of file content in one `data block someData` frame of an uncompressed
/// dump, and the largest piece of the zlib stream of a compressed one (albatross sends
/// chunks of at most 4096 octets, spec wire §8.4).
pub const DUMP_CHUNK_SIZE: usize = 4096;

/// Octets read from a device file, or inflated from a set stream, at a time. Bounds the
/// memory one set or dump holds besides its channel (64 KiB keeps the number of blocking
/// calls per GiB low while staying far below any frame limit).
pub const IO_BUFFER_SIZE: usize = 64 * 1024;

/// Largest device the legacy `dumpOld` returns: its whole content is held in memory (twice
/// while compressing) and sent as one frame. 16 MiB matches the largest single message
/// petrel otherwise accepts (`limits::MAX_CHAIN_SIZE`); larger devices need the streamed
/// dump.
pub const MAX_INLINE_DUMP_SIZE: u64 = 16 * MB;

/// Highest zlib compression level (spec wire §8.5: 0 = uncompressed, 1..9).
pub const MAX_COMPRESSION_LEVEL: i64 = 9;

/// Mode of the block directory (spec §1).
const DIR_MODE: u32 = 0o700;

/// Mode of the block device files (spec §1).
const FILE_MODE: u32 = 0o600;

/// Errors of block device file operations. The texts are albatross's where §11 gives
/// them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The size is zero, negative, or its octet count overflows (spec E12: checked before
    /// anything is created).
    #[error("overflow while computing bytes")]
    Overflow,
    /// A file for the device exists already.
    #[error("file already exists")]
    Exists,
    /// The device's file does not exist; the operation is named (`set block`,
    /// `remove block`, `dump block`).
    #[error("{0}: not found")]
    NotFound(&'static str),
    /// A streamed set carried more (decompressed) data than the device holds.
    #[error("stream exceeds size")]
    StreamExceedsSize,
    /// Inline data of a legacy add or set does not fit the device.
    #[error("data exceeds block size")]
    DataExceedsSize,
    /// The data of a compressed set is not one valid zlib stream. The text starts with
    /// albatross's words for this failure.
    #[error("error writing to file descriptor: invalid zlib stream ({0})")]
    BadZlib(String),
    /// The set stream broke before its terminator (disconnect, idle timeout, limit); the
    /// old content is kept (spec E10).
    #[error("set block: stream interrupted ({0}), old content kept")]
    Interrupted(String),
    /// Block devices need a labelled name.
    #[error("block device names need a label, {0} is a path")]
    PathName(Name),
    /// The name cannot become a file name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A compression level outside 0..=9.
    #[error("invalid compression level {0} (0 to 9 allowed)")]
    Level(i64),
    /// The device is too large for a legacy inline dump.
    #[error(
        "block device of {size_mb} MB is too large for an inline dump (at most {max} MB), use the streamed dump",
        max = MAX_INLINE_DUMP_SIZE / MB
    )]
    TooLargeForInline {
        /// The device's size in MB.
        size_mb: u64,
    },
    /// An I/O operation on a device file failed.
    #[error("{op} {file}: {source}")]
    Io {
        /// What was being done (`create`, `write`, `read`, …).
        op: &'static str,
        /// The device's file name (not the host path).
        file: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Creating the directory or committing a file failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a streamed dump ended after its first frame was sent.
#[derive(Debug)]
#[non_exhaustive]
pub enum DumpEnd {
    /// Every chunk and the final `noData` frame were sent.
    Complete,
    /// The receiver was dropped (the client went away); the dump stopped quietly.
    ReceiverGone,
    /// Reading or compressing failed midway; a `failure` frame with this error's text was
    /// sent instead of `noData` (albatross stalls here, spec wire §8.4).
    Failed(BlockError),
}

/// The block device files under one directory. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct BlockStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// Serialises the commit of a set with remove, so that a set whose device was removed
    /// meanwhile fails instead of recreating the file.
    commit_lock: Mutex<()>,
}

impl BlockStore {
    /// Opens `dir` (created if missing, mode 0700) and registers every device file in it:
    /// a regular file whose name parses as a labelled name ([`Name::from_file_name`]) and
    /// whose size is a non-zero multiple of 1 MiB. Other entries are skipped with a
    /// warning. Temporary files left by an interrupted set are removed. Files named in
    /// albatross's form (`foo:my.disk`) are renamed to petrel's ([`Name::file_name`],
    /// `foo:my_disk`), unless that name exists too, in which case the albatross one is
    /// skipped as a duplicate. Returns the devices and their sizes in MB, sorted by name.
    pub fn open(dir: PathBuf) -> Result<(Self, Vec<(Name, i64)>), BlockError> {
        store::ensure_dir(&dir, DIR_MODE)?;
        let entries = fs::read_dir(&dir).map_err(io_err("read directory", &dir))?;
        let mut canonical = BTreeMap::new();
        let mut foreign = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("read directory", &dir))?;
            let Some(file) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(file = ?entry.file_name(), "block: skipping non-UTF-8 file name");
                continue;
            };
            if is_temp_name(&file) {
                tracing::warn!(%file, "block: removing temporary file of an interrupted set");
                if let Err(e) = fs::remove_file(entry.path()) {
                    tracing::warn!(%file, error = %e, "block: could not remove temporary file");
                }
                continue;
            }
            let Some((name, size_mb)) = device_entry(&entry, &file) else {
                continue;
            };
            match name.file_name() {
                Ok(own) if own == file => {
                    canonical.insert(name, size_mb);
                }
                Ok(own) => foreign.push((file, own, name, size_mb)),
                Err(e) => tracing::warn!(%file, error = %e, "block: skipping file"),
            }
        }
        for (file, own, name, size_mb) in foreign {
            if canonical.contains_key(&name) {
                tracing::warn!(%file, "block: block device with name {name} already exists");
                continue;
            }
            match fs::rename(dir.join(&file), dir.join(&own)) {
                Ok(()) => {
                    tracing::info!(from = %file, to = %own, "block: renamed to petrel's file name");
                    canonical.insert(name, size_mb);
                }
                Err(e) => tracing::warn!(%file, error = %e, "block: could not rename, skipped"),
            }
        }
        store::sync_dir(&dir)?;
        let store = Self {
            inner: Arc::new(Inner {
                dir,
                commit_lock: Mutex::new(()),
            }),
        };
        Ok((store, canonical.into_iter().collect()))
    }

    /// The directory holding the device files.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The file of the block device `name`: the directory joined with
    /// [`Name::file_name`]. Path-only names are refused.
    pub fn path(&self, name: &Name) -> Result<PathBuf, BlockError> {
        if name.is_path() {
            return Err(BlockError::PathName(name.clone()));
        }
        Ok(self.inner.dir.join(name.file_name()?))
    }

    /// Creates the empty (sparse) device `name` of `size_mb` MB. The size is checked
    /// before anything is created; an existing file is `file already exists`; a failure
    /// leaves no file behind.
    pub fn add(&self, name: &Name, size_mb: i64) -> Result<(), BlockError> {
        let target = self.path(name)?;
        let size = device_bytes(size_mb)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&target)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => BlockError::Exists,
                _ => io_err("create", &target)(e),
            })?;
        let sized = file
            .set_len(size)
            .and_then(|()| file.sync_all())
            .map_err(io_err("truncate", &target));
        if let Err(e) = sized {
            drop(file);
            let _ = fs::remove_file(&target);
            return Err(e);
        }
        store::sync_dir(&self.inner.dir)?;
        Ok(())
    }

    /// Deletes the device `name`'s file. The caller must have checked that the device is
    /// not attached to a running unikernel.
    pub fn remove(&self, name: &Name) -> Result<(), BlockError> {
        let target = self.path(name)?;
        let _guard = self.inner.lock();
        match fs::remove_file(&target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BlockError::NotFound("remove block"));
            }
            Err(e) => return Err(io_err("remove", &target)(e)),
        }
        store::sync_dir(&self.inner.dir)?;
        Ok(())
    }

    /// Replaces the content of the device `name` (`size_mb` MB) with the stream `input`,
    /// a zlib stream if `compressed` (spec wire §8.3).
    ///
    /// The data goes to a temporary file as it arrives; only on [`InputChunk::End`] is it
    /// padded to the device size, synced and renamed over the old file. More than
    /// `size_mb` MB of (decompressed) data, invalid zlib, [`InputChunk::Failed`] or the
    /// channel closing before `End` fail and keep the old content. Memory stays bounded
    /// (one chunk plus [`IO_BUFFER_SIZE`]). The caller must have checked that the device
    /// exists and is not attached to a running unikernel. Dropping the future removes the
    /// temporary file.
    pub async fn set(
        &self,
        name: &Name,
        size_mb: i64,
        compressed: bool,
        mut input: InputReceiver,
    ) -> Result<(), BlockError> {
        let target = self.path(name)?;
        let size = device_bytes(size_mb)?;
        if !exists(&target)? {
            return Err(BlockError::NotFound("set block"));
        }
        let temp = TempFile::new(store::temp_path(&target));
        let mut writer = ContentWriter::create(temp, file_label(&target), size, compressed)?;
        loop {
            match input.recv().await {
                Some(InputChunk::Data(data)) => {
                    writer = blocking(move || {
                        let mut w = writer;
                        w.write(&data).map(|()| w)
                    })
                    .await?;
                }
                Some(InputChunk::End) => break,
                Some(InputChunk::Failed(reason)) => return Err(BlockError::Interrupted(reason)),
                None => {
                    return Err(BlockError::Interrupted(
                        "the stream ended without its terminator".to_owned(),
                    ));
                }
            }
        }
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            let temp = writer.finish()?;
            inner.replace(temp, &target, "set block")
        })
        .await
    }

    /// Streams the content of the device `name` to `out` (spec wire §8.4): first
    /// `success blockDeviceImage <level ≠ 0>`, then `data block someData` frames (at most
    /// [`DUMP_CHUNK_SIZE`] octets of file content each, or with `level` 1..9 one zlib
    /// stream cut into pieces of at most that size), then `data block noData`. Every frame
    /// carries `name`.
    ///
    /// An `Err` means nothing was sent (the caller replies with a failure). Once the
    /// first frame is sent the outcome is a [`DumpEnd`]: a read error midway sends a
    /// `failure` frame instead of `noData`; a dropped receiver stops the dump quietly.
    /// The caller must have checked that the device is not attached to a running
    /// unikernel.
    pub async fn dump(
        &self,
        name: &Name,
        level: i64,
        out: mpsc::Sender<OutputFrame>,
    ) -> Result<DumpEnd, BlockError> {
        let target = self.path(name)?;
        let compression = compression(level)?;
        let file = open_device(&target, "dump block")?;
        let frame = |payload| OutputFrame {
            name: name.clone(),
            payload,
        };
        let start = Payload::Success(Success::BlockDeviceImage(compression.is_some()));
        if out.send(frame(start)).await.is_err() {
            return Ok(DumpEnd::ReceiverGone);
        }
        let mut reader = DumpReader::new(file, file_label(&target), compression);
        loop {
            let (back, pieces) = blocking(move || {
                let mut r = reader;
                let pieces = r.next_pieces();
                Ok((r, pieces))
            })
            .await?;
            reader = back;
            let pieces = match pieces {
                Ok(Some(pieces)) => pieces,
                Ok(None) => break,
                Err(e) => {
                    let failure = Payload::failure(e.to_string());
                    // The receiver may be gone too; the dump failed either way.
                    let _ = out.send(frame(failure)).await;
                    return Ok(DumpEnd::Failed(e));
                }
            };
            for piece in pieces {
                let data = Payload::Data(Data::Block(BlockData::SomeData(piece)));
                if out.send(frame(data)).await.is_err() {
                    return Ok(DumpEnd::ReceiverGone);
                }
            }
        }
        let end = Payload::Data(Data::Block(BlockData::NoData));
        if out.send(frame(end)).await.is_err() {
            return Ok(DumpEnd::ReceiverGone);
        }
        Ok(DumpEnd::Complete)
    }

    /// Legacy `addOld` (spec §11): creates the device `name` of `size_mb` MB, with
    /// `data` (zlib-compressed if `compressed`) as its initial content if given. The data
    /// must fit (`data exceeds block size`). Nothing is left behind on failure; the
    /// device appears only complete.
    pub fn add_inline(
        &self,
        name: &Name,
        size_mb: i64,
        compressed: bool,
        data: Option<&[u8]>,
    ) -> Result<(), BlockError> {
        let Some(data) = data else {
            return self.add(name, size_mb);
        };
        let target = self.path(name)?;
        let size = device_bytes(size_mb)?;
        if exists(&target)? {
            return Err(BlockError::Exists);
        }
        let temp = write_inline(&target, size, compressed, data)?;
        let _guard = self.inner.lock();
        // A hard link creates the name only if it does not exist yet.
        fs::hard_link(&temp.path, &target).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => BlockError::Exists,
            _ => io_err("link", &target)(e),
        })?;
        drop(temp);
        store::sync_dir(&self.inner.dir)?;
        Ok(())
    }

    /// Legacy `setOld` (spec §11): replaces the content of the device `name`
    /// (`size_mb` MB) with `data` (zlib-compressed if `compressed`), which must fit
    /// (`data exceeds block size`). Atomic like [`BlockStore::set`]; the same caller
    /// checks apply.
    pub fn set_inline(
        &self,
        name: &Name,
        size_mb: i64,
        compressed: bool,
        data: &[u8],
    ) -> Result<(), BlockError> {
        let target = self.path(name)?;
        let size = device_bytes(size_mb)?;
        if !exists(&target)? {
            return Err(BlockError::NotFound("set block"));
        }
        let temp = write_inline(&target, size, compressed, data)?;
        self.inner.replace(temp, &target, "set block")
    }

    /// Legacy `dumpOld` (spec §11): the whole content of the device `name`, compressed
    /// with `level` if it is not 0. Returns `(compressed, content)` for the
    /// `oldBlockDeviceImage` reply. Devices larger than [`MAX_INLINE_DUMP_SIZE`] are
    /// refused.
    pub fn dump_inline(&self, name: &Name, level: i64) -> Result<(bool, Vec<u8>), BlockError> {
        let target = self.path(name)?;
        let compression = compression(level)?;
        let file = open_device(&target, "dump block")?;
        let len = file.metadata().map_err(io_err("stat", &target))?.len();
        if len > MAX_INLINE_DUMP_SIZE {
            return Err(BlockError::TooLargeForInline { size_mb: len / MB });
        }
        let mut content = Vec::new();
        file.take(MAX_INLINE_DUMP_SIZE)
            .read_to_end(&mut content)
            .map_err(io_err("read", &target))?;
        match compression {
            None => Ok((false, content)),
            Some(level) => {
                let mut z = Compress::new(level, true);
                let mut packed = Vec::with_capacity(content.len() / 2 + DUMP_CHUNK_SIZE);
                deflate(&mut z, &content, FlushCompress::Finish, &mut packed)
                    .map_err(io_err("compress", &target))?;
                Ok((true, packed))
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, ()> {
        self.commit_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Renames the finished `temp` over `target` if `target` still exists.
    fn replace(&self, temp: TempFile, target: &Path, op: &'static str) -> Result<(), BlockError> {
        let _guard = self.lock();
        if !exists(target)? {
            return Err(BlockError::NotFound(op));
        }
        store::commit(&temp.path, target)?;
        temp.keep();
        Ok(())
    }
}

/// Octets of a device of `size_mb` MB; zero, negative and overflowing sizes are refused.
fn device_bytes(size_mb: i64) -> Result<u64, BlockError> {
    u64::try_from(size_mb)
        .ok()
        .filter(|&mb| mb > 0)
        .and_then(|mb| mb.checked_mul(MB))
        .filter(|&bytes| i64::try_from(bytes).is_ok())
        .ok_or(BlockError::Overflow)
}

/// `None` for level 0, the zlib level for 1..=9.
fn compression(level: i64) -> Result<Option<Compression>, BlockError> {
    match u32::try_from(level) {
        Ok(0) => Ok(None),
        Ok(l) if i64::from(l) <= MAX_COMPRESSION_LEVEL => Ok(Some(Compression::new(l))),
        _ => Err(BlockError::Level(level)),
    }
}

fn exists(path: &Path) -> Result<bool, BlockError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("stat", path)(e)),
    }
}

fn open_device(path: &Path, op: &'static str) -> Result<File, BlockError> {
    File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => BlockError::NotFound(op),
        _ => io_err("open", path)(e),
    })
}

/// The file name of `path`, for error texts (the host path is not shown to clients).
fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BlockError {
    let file = file_label(path);
    move |source| BlockError::Io { op, file, source }
}

/// True for the names [`store::temp_path`] gives temporary files in the block directory:
/// `.<file>.<pid>.<n>.tmp`, where `<file>` comes from [`Name::file_name`] and so holds no
/// dot. ([`Name::file_name`] never starts with a dot, so no petrel device matches.)
fn is_temp_name(file: &str) -> bool {
    let Some(inner) = file.strip_prefix('.').and_then(|f| f.strip_suffix(".tmp")) else {
        return false;
    };
    let mut parts = inner.rsplitn(3, '.');
    let numeric =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    numeric(parts.next()) && numeric(parts.next()) && parts.next().is_some_and(|f| !f.contains('.'))
}

/// The device a directory entry holds, or `None` (with a warning) if it is not one.
fn device_entry(entry: &fs::DirEntry, file: &str) -> Option<(Name, i64)> {
    let name = match Name::from_file_name(file) {
        Ok(name) if !name.is_path() => name,
        Ok(_) => {
            tracing::warn!(%file, "block: skipping file named by a path, not a block device name");
            return None;
        }
        Err(e) => {
            tracing::warn!(%file, error = %e, "block: skipping file whose name does not parse");
            return None;
        }
    };
    // `DirEntry::metadata` does not follow symbolic links: links are skipped.
    let meta = match entry.metadata() {
        Ok(meta) if meta.is_file() => meta,
        Ok(_) => {
            tracing::warn!(%file, "block: skipping entry that is not a regular file");
            return None;
        }
        Err(e) => {
            tracing::warn!(%file, error = %e, "block: skipping unreadable entry");
            return None;
        }
    };
    let len = meta.len();
    if len == 0 || len % MB != 0 {
        tracing::warn!(%file, size = len, "block: skipping file whose size is not a non-zero multiple of 1 MiB");
        return None;
    }
    match i64::try_from(len / MB) {
        Ok(size_mb) => Some((name, size_mb)),
        Err(_) => None,
    }
}

/// Runs blocking file work off the runtime's threads.
async fn blocking<T, F>(work: F) -> Result<T, BlockError>
where
    F: FnOnce() -> Result<T, BlockError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(BlockError::Io {
            op: "run blocking task",
            file: String::new(),
            source: io::Error::other(e.to_string()),
        })
    })
}

/// Writes the inline data of a legacy add or set to a finished temporary file.
fn write_inline(
    target: &Path,
    size: u64,
    compressed: bool,
    data: &[u8],
) -> Result<TempFile, BlockError> {
    let temp = TempFile::new(store::temp_path(target));
    let mut writer = ContentWriter::create(temp, file_label(target), size, compressed)?;
    let over = |e| match e {
        BlockError::StreamExceedsSize => BlockError::DataExceedsSize,
        e => e,
    };
    writer.write(data).map_err(over)?;
    writer.finish().map_err(over)
}

/// A temporary file that is removed when dropped, unless kept.
#[derive(Debug)]
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    fn new(path: PathBuf) -> Self {
        Self { path, keep: false }
    }

    /// The file was renamed into place: nothing to remove.
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Writes new device content to a temporary file, inflating if asked, refusing more than
/// `limit` octets of (decompressed) content.
#[derive(Debug)]
struct ContentWriter {
    temp: TempFile,
    file: File,
    label: String,
    limit: u64,
    written: u64,
    inflate: Option<Inflate>,
}

#[derive(Debug)]
struct Inflate {
    z: Decompress,
    done: bool,
    buf: Vec<u8>,
}

impl ContentWriter {
    fn create(
        temp: TempFile,
        label: String,
        limit: u64,
        compressed: bool,
    ) -> Result<Self, BlockError> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&temp.path)
            .map_err(|source| BlockError::Io {
                op: "create temporary file for",
                file: label.clone(),
                source,
            })?;
        let inflate = compressed.then(|| Inflate {
            z: Decompress::new(true),
            done: false,
            buf: vec![0; IO_BUFFER_SIZE],
        });
        Ok(Self {
            temp,
            file,
            label,
            limit,
            written: 0,
            inflate,
        })
    }

    /// Appends the next piece of the stream.
    fn write(&mut self, mut input: &[u8]) -> Result<(), BlockError> {
        let Some(mut inflate) = self.inflate.take() else {
            return self.emit(input);
        };
        let result = (|| {
            while !input.is_empty() {
                if inflate.done {
                    return Err(BlockError::BadZlib(
                        "data after the end of the stream".to_owned(),
                    ));
                }
                let (consumed, produced, status) = inflate.step(input, FlushDecompress::None)?;
                self.emit(inflate.buf.get(..produced).unwrap_or_default())?;
                input = input.get(consumed..).unwrap_or_default();
                if status == Status::StreamEnd {
                    inflate.done = true;
                } else if consumed == 0 && produced == 0 {
                    // No progress possible with more input available cannot happen with
                    // an empty output buffer; refuse rather than loop.
                    return Err(BlockError::BadZlib("no progress".to_owned()));
                }
            }
            // Drain output still held back because the buffer was full.
            while !inflate.done {
                let (_, produced, status) = inflate.step(&[], FlushDecompress::None)?;
                self.emit(inflate.buf.get(..produced).unwrap_or_default())?;
                inflate.done = status == Status::StreamEnd;
                if produced == 0 {
                    break;
                }
            }
            Ok(())
        })();
        self.inflate = Some(inflate);
        result
    }

    /// Ends the stream: checks that a zlib stream is complete, pads the file to the
    /// device size and syncs it.
    fn finish(mut self) -> Result<TempFile, BlockError> {
        if let Some(mut inflate) = self.inflate.take() {
            while !inflate.done {
                let (_, produced, status) = inflate.step(&[], FlushDecompress::Finish)?;
                self.emit(inflate.buf.get(..produced).unwrap_or_default())?;
                inflate.done = status == Status::StreamEnd;
                if !inflate.done && produced == 0 {
                    return Err(BlockError::BadZlib("the stream is truncated".to_owned()));
                }
            }
        }
        let label = self.label;
        self.file
            .set_len(self.limit)
            .and_then(|()| self.file.sync_all())
            .map_err(|source| BlockError::Io {
                op: "write",
                file: label,
                source,
            })?;
        Ok(self.temp)
    }

    fn emit(&mut self, data: &[u8]) -> Result<(), BlockError> {
        let len = u64::try_from(data.len()).map_err(|_| BlockError::StreamExceedsSize)?;
        let total = self
            .written
            .checked_add(len)
            .filter(|&t| t <= self.limit)
            .ok_or(BlockError::StreamExceedsSize)?;
        self.file.write_all(data).map_err(|source| BlockError::Io {
            op: "write",
            file: self.label.clone(),
            source,
        })?;
        self.written = total;
        Ok(())
    }
}

impl Inflate {
    /// One inflate call into the buffer: `(input consumed, output produced, status)`.
    fn step(
        &mut self,
        input: &[u8],
        flush: FlushDecompress,
    ) -> Result<(usize, usize, Status), BlockError> {
        let (in_before, out_before) = (self.z.total_in(), self.z.total_out());
        let status = self
            .z
            .decompress(input, &mut self.buf, flush)
            .map_err(|e| BlockError::BadZlib(e.to_string()))?;
        let delta = |after: u64, before: u64| usize::try_from(after.saturating_sub(before));
        match (
            delta(self.z.total_in(), in_before),
            delta(self.z.total_out(), out_before),
        ) {
            (Ok(consumed), Ok(produced)) => Ok((consumed, produced, status)),
            _ => Err(BlockError::BadZlib("progress out of range".to_owned())),
        }
    }
}

/// Reads a device file in bounded pieces for a streamed dump, compressing if asked.
struct DumpReader {
    file: File,
    label: String,
    deflate: Option<Compress>,
    buf: Vec<u8>,
    finished: bool,
}

impl DumpReader {
    fn new(file: File, label: String, compression: Option<Compression>) -> Self {
        Self {
            file,
            label,
            deflate: compression.map(|level| Compress::new(level, true)),
            buf: vec![0; IO_BUFFER_SIZE],
            finished: false,
        }
    }

    /// The next pieces of at most [`DUMP_CHUNK_SIZE`] octets (possibly none while a
    /// compressor holds data back), or `None` at the end.
    fn next_pieces(&mut self) -> Result<Option<Vec<Vec<u8>>>, BlockError> {
        if self.finished {
            return Ok(None);
        }
        let read = loop {
            match self.file.read(&mut self.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(BlockError::Io {
                        op: "read",
                        file: self.label.clone(),
                        source,
                    });
                }
            }
        };
        let input = self.buf.get(..read).unwrap_or_default();
        let Some(z) = self.deflate.as_mut() else {
            if read == 0 {
                self.finished = true;
                return Ok(None);
            }
            return Ok(Some(
                input.chunks(DUMP_CHUNK_SIZE).map(<[u8]>::to_vec).collect(),
            ));
        };
        let flush = if read == 0 {
            self.finished = true;
            FlushCompress::Finish
        } else {
            FlushCompress::None
        };
        let mut packed = Vec::with_capacity(read / 2 + DUMP_CHUNK_SIZE);
        deflate(z, input, flush, &mut packed).map_err(|source| BlockError::Io {
            op: "compress",
            file: self.label.clone(),
            source,
        })?;
        Ok(Some(
            packed.chunks(DUMP_CHUNK_SIZE).map(<[u8]>::to_vec).collect(),
        ))
    }
}

/// Compresses all of `input` into `out` (growing it as needed); with
/// [`FlushCompress::Finish`] also ends the stream.
fn deflate(
    z: &mut Compress,
    mut input: &[u8],
    flush: FlushCompress,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    loop {
        if out.capacity() - out.len() < DUMP_CHUNK_SIZE {
            out.reserve(DUMP_CHUNK_SIZE.max(input.len() / 2));
        }
        let (in_before, out_len) = (z.total_in(), out.len());
        let status = z
            .compress_vec(input, out, flush)
            .map_err(io::Error::other)?;
        let consumed =
            usize::try_from(z.total_in().saturating_sub(in_before)).map_err(io::Error::other)?;
        input = input.get(consumed..).unwrap_or_default();
        let done = match flush {
            FlushCompress::Finish => status == Status::StreamEnd,
            _ => input.is_empty(),
        };
        if done {
            return Ok(());
        }
        if consumed == 0 && out.len() == out_len && out.capacity() > out.len() {
            return Err(io::Error::other("zlib compression made no progress"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(device_bytes(1).unwrap(), MB);
        assert_eq!(device_bytes(3).unwrap(), 3 * MB);
        for bad in [0, -1, i64::MIN, i64::MAX, 1 << 43] {
            assert!(
                matches!(device_bytes(bad), Err(BlockError::Overflow)),
                "{bad}"
            );
        }
        assert_eq!(device_bytes((1 << 43) - 1).unwrap(), ((1 << 43) - 1) * MB);
    }

    #[test]
    fn levels() {
        assert!(compression(0).unwrap().is_none());
        assert_eq!(compression(9).unwrap(), Some(Compression::new(9)));
        assert_eq!(compression(1).unwrap(), Some(Compression::new(1)));
        for bad in [-1, 10, i64::MAX] {
            assert_eq!(
                compression(bad).unwrap_err().to_string(),
                format!("invalid compression level {bad} (0 to 9 allowed)")
            );
        }
    }

    #[test]
    fn temp_names() {
        assert!(is_temp_name(".foo:disk.123.0.tmp"));
        assert!(is_temp_name(".:disk.1.22.tmp"));
        assert!(!is_temp_name("foo:disk.123.0.tmp"));
        assert!(!is_temp_name(".foo:disk.tmp"));
        assert!(!is_temp_name(".foo:d.isk.1.2.tmp"));
        assert!(!is_temp_name(".foo:disk.1.x.tmp"));
        assert!(!is_temp_name(".:disk"));
    }

    #[test]
    fn deflate_round_trip() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut z = Compress::new(Compression::new(6), true);
        let mut out = Vec::new();
        deflate(&mut z, &data[..100_000], FlushCompress::None, &mut out).unwrap();
        deflate(&mut z, &data[100_000..], FlushCompress::None, &mut out).unwrap();
        deflate(&mut z, &[], FlushCompress::Finish, &mut out).unwrap();
        let mut back = Vec::new();
        flate2::read::ZlibDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }
}
