//! Crash-safe files under the state directory.
//!
//! Every file petrel persists is written the same way: a temporary file in the same
//! directory, `fsync`, `rename` over the target, `fsync` of the directory. A crash at any
//! point leaves either the old or the new content, never a torn file. Files are never
//! rewritten in place.
//!
//! petrel's own records (provenance, known CA certificates) use [`Envelope`]: a magic, a
//! format version, a length and a SHA-256 of the body, so that truncation or corruption is
//! detected instead of misread. The unikernel/policy state itself is albatross's DER state
//! file (see `codec`), written with [`write_atomic`] too.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// Largest record file [`read_envelope`] accepts. Records hold provenance for every
/// unikernel, block device and policy plus the CA certificates seen; 64 MiB is far beyond
/// any real host while bounding what a corrupted length field can make us allocate.
pub const MAX_RECORD_SIZE: u64 = 64 * 1024 * 1024;

/// Magic at the start of every petrel record file.
pub const ENVELOPE_MAGIC: [u8; 8] = *b"PETREL\0\x01";

const ENVELOPE_HEADER_LEN: usize = 8 + 4 + 8 + 32;

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An I/O operation on a path failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A record file is shorter than its header or its length says.
    #[error("{0}: truncated record file")]
    Truncated(PathBuf),
    /// A record file does not start with petrel's magic.
    #[error("{0}: not a petrel record file")]
    BadMagic(PathBuf),
    /// A record file has a format version this build does not read.
    #[error("{path}: unsupported record format version {version}")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
    /// The body does not match its checksum.
    #[error("{0}: record checksum mismatch")]
    Checksum(PathBuf),
    /// The file exceeds [`MAX_RECORD_SIZE`] (or the caller's limit).
    #[error("{path}: {size} octets exceeds the limit of {limit}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

impl StoreError {
    /// The reason without the file: what a client is told (the host's layout and the
    /// names of temporary files are none of its business; the operator's log has them).
    pub fn reason(&self) -> String {
        match self {
            Self::Io { source, .. } => source.to_string(),
            Self::Truncated(_) => "truncated record file".to_owned(),
            Self::BadMagic(_) => "not a petrel record file".to_owned(),
            Self::Version { version, .. } => {
                format!("unsupported record format version {version}")
            }
            Self::Checksum(_) => "record checksum mismatch".to_owned(),
            Self::TooLarge { size, limit, .. } => {
                format!("{size} octets exceeds the limit of {limit}")
            }
        }
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (and parents) if missing and sets its mode; existing directories get
/// their mode corrected too, so a state directory is never left world-readable.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), StoreError> {
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", dir))
}

/// `fsync`s a directory so that a rename or unlink inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

/// A temporary file name in the same directory as `target`, unique within this process
/// and distinct from every name [`crate::name::Name::file_name`] can produce (it starts
/// with a dot).
pub fn temp_path(target: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let file = target
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{file}.{}.{n}.tmp", std::process::id()))
}

/// Atomically replaces `target` with `data`: temp file (mode `mode`), fsync, rename,
/// fsync of the directory.
pub fn write_atomic(target: &Path, data: &[u8], mode: u32) -> Result<(), StoreError> {
    let tmp = temp_path(target);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        f.write_all(data).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("sync", &tmp))?;
        commit(&tmp, target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Renames a fully written and synced temporary file over `target` and syncs the
/// directory. Used for streamed content (images, block data, CRLs) whose temporary file
/// was written incrementally.
pub fn commit(tmp: &Path, target: &Path) -> Result<(), StoreError> {
    fs::rename(tmp, target).map_err(io_err("rename", target))?;
    match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// Removes a file and syncs its directory; a missing file is not an error.
pub fn remove_durably(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("remove", path)(e)),
    }
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => Ok(()),
    }
}

/// Wraps `body` in petrel's record envelope: magic, format version (u32 BE), body length
/// (u64 BE), SHA-256 of the body, body.
pub fn envelope(version: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENVELOPE_HEADER_LEN + body.len());
    out.extend_from_slice(&ENVELOPE_MAGIC);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    out.extend_from_slice(&Sha256::digest(body));
    out.extend_from_slice(body);
    out
}

/// Checks an envelope read from `path` and returns `(version, body)`.
pub fn open_envelope<'a>(path: &Path, data: &'a [u8]) -> Result<(u32, &'a [u8]), StoreError> {
    let (header, body) = data
        .split_at_checked(ENVELOPE_HEADER_LEN)
        .ok_or_else(|| StoreError::Truncated(path.to_path_buf()))?;
    let (magic, rest) = header.split_at(8);
    if magic != ENVELOPE_MAGIC {
        return Err(StoreError::BadMagic(path.to_path_buf()));
    }
    let (version, rest) = rest.split_at(4);
    let (len, digest) = rest.split_at(8);
    let version = u32::from_be_bytes(version.try_into().unwrap_or([0; 4]));
    let len = u64::from_be_bytes(len.try_into().unwrap_or([0; 8]));
    if u64::try_from(body.len()).ok() != Some(len) {
        return Err(StoreError::Truncated(path.to_path_buf()));
    }
    if Sha256::digest(body).as_slice() != digest {
        return Err(StoreError::Checksum(path.to_path_buf()));
    }
    Ok((version, body))
}

/// Reads a whole file, refusing files larger than `limit` without reading them.
/// `Ok(None)` if the file does not exist.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, StoreError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("stat", path)(e)),
    };
    if meta.len() > limit {
        return Err(StoreError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit,
        });
    }
    fs::read(path).map(Some).map_err(io_err("read", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_leave_the_path_out() {
        let path = PathBuf::from("/var/lib/petrel/.records.1.2.tmp");
        let cases = [
            (
                StoreError::Io {
                    op: "write",
                    path: path.clone(),
                    source: io::Error::from_raw_os_error(libc::ENOSPC),
                },
                "No space left on device (os error 28)",
            ),
            (StoreError::Truncated(path.clone()), "truncated record file"),
            (
                StoreError::BadMagic(path.clone()),
                "not a petrel record file",
            ),
            (
                StoreError::Version {
                    path: path.clone(),
                    version: 9,
                },
                "unsupported record format version 9",
            ),
            (
                StoreError::Checksum(path.clone()),
                "record checksum mismatch",
            ),
            (
                StoreError::TooLarge {
                    path,
                    size: 10,
                    limit: 5,
                },
                "10 octets exceeds the limit of 5",
            ),
        ];
        for (error, reason) in cases {
            assert_eq!(error.reason(), reason);
            assert!(error.to_string().contains("/var/lib/petrel/"), "{error}");
        }
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("state");
        write_atomic(&target, b"one", 0o600).unwrap();
        write_atomic(&target, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state")]);
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn envelope_detects_damage() {
        let p = Path::new("records");
        let data = envelope(1, b"{\"a\":1}");
        assert_eq!(open_envelope(p, &data).unwrap(), (1, &b"{\"a\":1}"[..]));
        assert!(matches!(
            open_envelope(p, &data[..data.len() - 1]),
            Err(StoreError::Truncated(_))
        ));
        assert!(matches!(
            open_envelope(p, &data[..10]),
            Err(StoreError::Truncated(_))
        ));
        let mut bad = data.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(
            open_envelope(p, &bad),
            Err(StoreError::Checksum(_))
        ));
        let mut magic = data.clone();
        magic[0] = b'X';
        assert!(matches!(
            open_envelope(p, &magic),
            Err(StoreError::BadMagic(_))
        ));
    }

    #[test]
    fn temp_names_are_hidden_and_unique() {
        let a = temp_path(Path::new("/s/state"));
        let b = temp_path(Path::new("/s/state"));
        assert_ne!(a, b);
        assert!(
            a.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".state.")
        );
        assert_eq!(a.parent(), Some(Path::new("/s")));
    }

    #[test]
    fn bounded_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        assert!(read_bounded(&p, 10).unwrap().is_none());
        fs::write(&p, b"12345678901").unwrap();
        assert!(matches!(
            read_bounded(&p, 10),
            Err(StoreError::TooLarge { size: 11, .. })
        ));
        assert_eq!(read_bounded(&p, 11).unwrap().unwrap().len(), 11);
    }
}
