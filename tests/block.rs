//! Block device files: creation, removal, streamed and legacy set/dump, the name → file
//! mapping and registration at start-up (`spec/unikernel-and-executor.md` §11, `wire.md`
//! §8.3–8.5).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use petrel::codec::{BlockData, Data, Payload, Success};
use petrel::executor::api::{InputChunk, InputReceiver, OutputFrame};
use petrel::executor::block::{BlockStore, DUMP_CHUNK_SIZE, DumpEnd, MB};
use petrel::name::Name;
use tokio::sync::mpsc;

const MIB: usize = 1 << 20;

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn open_store() -> (tempfile::TempDir, BlockStore) {
    let tmp = tempfile::tempdir().unwrap();
    let (store, devices) = BlockStore::open(tmp.path().join("block")).unwrap();
    assert!(devices.is_empty());
    (tmp, store)
}

/// Deterministic, poorly compressible data (xorshift).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect()
}

fn zlib(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    ZlibDecoder::new(data).read_to_end(&mut out).unwrap();
    out
}

/// A finished input stream: every chunk queued, then the sender dropped.
fn stream(chunks: Vec<InputChunk>) -> InputReceiver {
    let (tx, rx) = mpsc::channel(chunks.len() + 1);
    for c in chunks {
        tx.try_send(c).unwrap();
    }
    rx
}

/// `data` cut into chunks of `size`, then `End`.
fn chunks_of(data: &[u8], size: usize) -> Vec<InputChunk> {
    let mut v: Vec<InputChunk> = data
        .chunks(size)
        .map(|c| InputChunk::Data(c.to_vec()))
        .collect();
    v.push(InputChunk::End);
    v
}

/// `data` padded with zeros to `size_mb` MB.
fn padded(data: &[u8], size_mb: usize) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(size_mb * MIB, 0);
    v
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Waits (bounded) until `dir` holds `n` entries; fails if it never does.
async fn wait_for_entries(dir: &Path, n: usize) {
    for _ in 0..2000 {
        if dir_entries(dir).len() == n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("{dir:?} holds {:?}, not {n} entries", dir_entries(dir));
}

async fn dump_frames(store: &BlockStore, n: &Name, level: i64) -> (DumpEnd, Vec<OutputFrame>) {
    let (tx, mut rx) = mpsc::channel(4);
    let collector = tokio::spawn(async move {
        let mut frames = Vec::new();
        while let Some(f) = rx.recv().await {
            frames.push(f);
        }
        frames
    });
    let end = store.dump(n, level, tx).await.unwrap();
    (end, collector.await.unwrap())
}

/// Checks the frame shape of a dump and returns the concatenated `someData` payloads.
fn dump_payload(n: &Name, frames: &[OutputFrame], compressed: bool) -> Vec<u8> {
    assert!(frames.len() >= 2, "{} frames", frames.len());
    assert!(frames.iter().all(|f| &f.name == n));
    assert_eq!(
        frames[0].payload,
        Payload::Success(Success::BlockDeviceImage(compressed))
    );
    assert_eq!(
        frames.last().unwrap().payload,
        Payload::Data(Data::Block(BlockData::NoData))
    );
    let mut content = Vec::new();
    for f in &frames[1..frames.len() - 1] {
        match &f.payload {
            Payload::Data(Data::Block(BlockData::SomeData(chunk))) => {
                assert!(!chunk.is_empty());
                assert!(chunk.len() <= DUMP_CHUNK_SIZE, "chunk of {}", chunk.len());
                content.extend_from_slice(chunk);
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    content
}

#[test]
fn add_creates_sparse_file_of_exact_size_and_mode() {
    let (tmp, store) = open_store();
    let n = name("foo:disk");
    store.add(&n, 64).unwrap();
    let path = tmp.path().join("block/foo:disk");
    assert_eq!(store.path(&n).unwrap(), path);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 64 * MB);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // Sparse: (almost) nothing allocated.
    assert!(
        meta.blocks() * 512 < MB,
        "{} blocks allocated",
        meta.blocks()
    );
    let dir_mode = fs::metadata(tmp.path().join("block"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
}

#[test]
fn add_refuses_existing_and_bad_sizes_without_leaving_files() {
    let (tmp, store) = open_store();
    let dir = tmp.path().join("block");
    let n = name("foo:disk");
    store.add(&n, 1).unwrap();
    assert_eq!(
        store.add(&n, 2).unwrap_err().to_string(),
        "file already exists"
    );
    assert_eq!(fs::metadata(dir.join("foo:disk")).unwrap().len(), MB);
    for size in [0, -1, i64::MAX, i64::MIN] {
        assert_eq!(
            store.add(&name("foo:other"), size).unwrap_err().to_string(),
            "overflow while computing bytes"
        );
    }
    assert_eq!(dir_entries(&dir), vec!["foo:disk"]);
}

#[test]
fn remove_deletes_the_file() {
    let (tmp, store) = open_store();
    let n = name("foo:disk");
    store.add(&n, 1).unwrap();
    store.remove(&n).unwrap();
    assert!(dir_entries(&tmp.path().join("block")).is_empty());
    assert_eq!(
        store.remove(&n).unwrap_err().to_string(),
        "remove block: not found"
    );
}

#[test]
fn names_map_to_files_only_through_file_name() {
    let (tmp, store) = open_store();
    let dir = tmp.path().join("block");
    assert_eq!(store.path(&name("foo:disk")).unwrap(), dir.join("foo:disk"));
    assert_eq!(
        store.path(&name("my.app:disk.img")).unwrap(),
        dir.join("my_app:disk_img")
    );
    assert_eq!(store.path(&name("disk")).unwrap(), dir.join(":disk"));
    assert_eq!(store.path(&name("a:b:..")).unwrap(), dir.join("a:b:__"));
    assert_eq!(
        store.path(&name("foo:")).unwrap_err().to_string(),
        "block device names need a label, foo: is a path"
    );
    assert_eq!(
        store.add(&name(":"), 1).unwrap_err().to_string(),
        "block device names need a label, : is a path"
    );
    store.add(&name("my.app:disk.img"), 1).unwrap();
    assert_eq!(dir_entries(&dir), vec!["my_app:disk_img"]);
}

#[tokio::test]
async fn set_uncompressed_pads_to_size() {
    let (tmp, store) = open_store();
    let n = name("foo:disk");
    store.add(&n, 2).unwrap();
    let data = noise(MIB + 12_345, 1);
    store
        .set(&n, 2, false, stream(chunks_of(&data, 4096)))
        .await
        .unwrap();
    let path = tmp.path().join("block/foo:disk");
    assert_eq!(fs::read(&path).unwrap(), padded(&data, 2));
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(dir_entries(&tmp.path().join("block")), vec!["foo:disk"]);
}

#[tokio::test]
async fn set_compressed_inflates_stream_cut_anywhere() {
    let (tmp, store) = open_store();
    let n = name("foo:disk");
    store.add(&n, 3).unwrap();
    let mut data = noise(700_000, 2);
    data.extend(std::iter::repeat_n(0x55, 1_500_000));
    let packed = zlib(&data, 9);
    store
        .set(&n, 3, true, stream(chunks_of(&packed, 1000)))
        .await
        .unwrap();
    assert_eq!(
        fs::read(tmp.path().join("block/foo:disk")).unwrap(),
        padded(&data, 3)
    );
}

#[tokio::test]
async fn set_of_exactly_the_device_size_succeeds() {
    let (tmp, store) = open_store();
    let n = name("foo:disk");
    store.add(&n, 1).unwrap();
    let data = noise(MIB, 3);
    store
        .set(&n, 1, true, stream(chunks_of(&zlib(&data, 1), 65536)))
        .await
        .unwrap();
    assert_eq!(fs::read(tmp.path().join("block/foo:disk")).unwrap(), data);
}

#[tokio::test]
async fn set_exceeding_size_fails_and_keeps_old_content() {
    let (tmp, store) = open_store();
    let n = name("foo:disk");
    store.add(&n, 1).unwrap();
    let old = noise(1000, 4);
    store
        .set(&n, 1, false, stream(chunks_of(&old, 4096)))
        .await
        .unwrap();
    let path = tmp.path().join("block/foo:disk");

    let too_much = noise(MIB + 1, 5);
    let err = store
        .set(&n, 1, false, stream(chunks_of(&too_much, 4096)))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "stream exceeds size");
    assert_eq!(fs::read(&path).unwrap(), padded(&old, 1));

    // A small zlib stream inflating to 64 MiB is stopped at the device size.
    let bomb = zlib(&vec![0; 64 * MIB], 9);
    assert!(bomb.len() < 100_000);
    let err = store
        .set(&n, 1, true, stream(chunks_of(&bomb, 4096)))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "stream exceeds size");
    assert_eq!(fs::read(&path).unwrap(), padded(&old, 1));
    assert_eq!(dir_entries(&tmp.path().join("block")), vec!["foo:disk"]);
}

#[tokio::test]
async fn set_with_bad_zlib_fails_and_keeps_old_content() {
    let (tmp, store) = open_store();
    let n = name("foo:disk");
    store.add(&n, 1).unwrap();
    let path = tmp.path().join("block/foo:disk");
    let good = zlib(b"hello block", 6);

    let garbage = noise(5000, 6);
    let err = store
        .set(&n, 1, true, stream(chunks_of(&garbage, 4096)))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("error writing to file descriptor: invalid zlib stream (deflate"),
        "{err}"
    );

    let truncated = &good[..good.len() - 3];
    let err = store
        .set(&n, 1, true, stream(chunks_of(truncated, 4096)))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "error writing to file descriptor: invalid zlib stream (the stream is truncated)"
    );

    let mut trailing = good.clone();
    trailing.extend_from_slice(b"more");
    let err = store
        .set(&n, 1, true, stream(chunks_of(&trailing, 4096)))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "error writing to file descriptor: invalid zlib stream (data after the end of the stream)"
    );

    assert_eq!(fs::read(&path).unwrap(), vec![0; MIB]);
    assert_eq!(dir_entries(&tmp.path().join("block")), vec!["foo:disk"]);
}

#[tokio::test]
async fn set_interrupted_by_failure_keeps_old_content() {
    let (tmp, store) = open_store();
    let n = name("foo:disk");
    store.add(&n, 1).unwrap();
    let old = noise(3000, 7);
    store
        .set(&n, 1, false, stream(chunks_of(&old, 4096)))
        .await
        .unwrap();
    let mut chunks = chunks_of(&noise(200_000, 8), 4096);
    chunks.pop();
    chunks.push(InputChunk::Failed("client disconnected".to_owned()));
    let err = store.set(&n, 1, false, stream(chunks)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "set block: stream interrupted (client disconnected), old content kept"
    );
    assert_eq!(
        fs::read(tmp.path().join("block/foo:disk")).unwrap(),
        padded(&old, 1)
    );
    assert_eq!(dir_entries(&tmp.path().join("block")), vec!["foo:disk"]);
}

#[tokio::test]
async fn set_interrupted_by_dropped_sender_keeps_old_content() {
    let (tmp, store) = open_store();
    let n = name("foo:disk");
    store.add(&n, 1).unwrap();
    let old = noise(3000, 9);
    store
        .set(&n, 1, true, stream(chunks_of(&zlib(&old, 9), 100)))
        .await
        .unwrap();
    // Half of a valid compressed stream, then the sender goes away without `End`.
    let packed = zlib(&noise(100_000, 10), 9);
    let mut chunks = chunks_of(&packed[..packed.len() / 2], 4096);
    chunks.pop();
    let err = store.set(&n, 1, true, stream(chunks)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "set block: stream interrupted (the stream ended without its terminator), old content kept"
    );
    assert_eq!(
        fs::read(tmp.path().join("block/foo:disk")).unwrap(),
        padded(&old, 1)
    );
    assert_eq!(dir_entries(&tmp.path().join("block")), vec!["foo:disk"]);
}

#[tokio::test]
async fn set_cancelled_removes_its_temporary_file() {
    let (tmp, store) = open_store();
    let dir = tmp.path().join("block");
    let n = name("foo:disk");
    store.add(&n, 1).unwrap();
    let (tx, rx) = mpsc::channel(4);
    let task = {
        let store = store.clone();
        let n = n.clone();
        tokio::spawn(async move { store.set(&n, 1, false, rx).await })
    };
    tx.send(InputChunk::Data(vec![1; 1000])).await.unwrap();
    // Wait until the set has created its temporary file.
    wait_for_entries(&dir, 2).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    wait_for_entries(&dir, 1).await;
    assert_eq!(dir_entries(&dir), vec!["foo:disk"]);
    assert_eq!(fs::read(dir.join("foo:disk")).unwrap(), vec![0; MIB]);
    drop(tx);
}

#[tokio::test]
async fn set_of_missing_device_and_removal_during_set() {
    let (tmp, store) = open_store();
    let dir = tmp.path().join("block");
    let n = name("foo:disk");
    let err = store
        .set(&n, 1, false, stream(chunks_of(b"x", 1)))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "set block: not found");

    // A device removed while its set streams does not come back.
    store.add(&n, 1).unwrap();
    let (tx, rx) = mpsc::channel(4);
    let task = {
        let store = store.clone();
        let n = n.clone();
        tokio::spawn(async move { store.set(&n, 1, false, rx).await })
    };
    tx.send(InputChunk::Data(vec![7; 100])).await.unwrap();
    wait_for_entries(&dir, 2).await;
    store.remove(&n).unwrap();
    tx.send(InputChunk::End).await.unwrap();
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "set block: not found");
    assert!(dir_entries(&dir).is_empty());
}

#[tokio::test]
async fn dump_uncompressed_frames_and_round_trip() {
    let (_tmp, store) = open_store();
    let n = name("foo:disk");
    store.add(&n, 1).unwrap();
    let data = noise(10_000, 11);
    store
        .set(&n, 1, false, stream(chunks_of(&data, 4096)))
        .await
        .unwrap();
    let (end, frames) = dump_frames(&store, &n, 0).await;
    assert!(matches!(end, DumpEnd::Complete));
    // 1 MiB in 4096-octet chunks, between the success and the noData frame.
    assert_eq!(frames.len(), MIB / DUMP_CHUNK_SIZE + 2);
    assert_eq!(dump_payload(&n, &frames, false), padded(&data, 1));
}

#[tokio::test]
async fn dump_compressed_round_trip() {
    let (_tmp, store) = open_store();
    let n = name("foo:disk");
    store.add(&n, 2).unwrap();
    let data = noise(MIB + 500, 12);
    store
        .set(&n, 2, false, stream(chunks_of(&data, 4096)))
        .await
        .unwrap();
    for level in [1, 9] {
        let (end, frames) = dump_frames(&store, &n, level).await;
        assert!(matches!(end, DumpEnd::Complete));
        let packed = dump_payload(&n, &frames, true);
        assert_eq!(inflate(&packed), padded(&data, 2));
    }
    // Set with the dump's own output restores the same content.
    let (_, frames) = dump_frames(&store, &n, 9).await;
    let packed = dump_payload(&n, &frames, true);
    let other = name("foo:copy");
    store.add(&other, 2).unwrap();
    store
        .set(&other, 2, true, stream(chunks_of(&packed, 4096)))
        .await
        .unwrap();
    let (_, frames) = dump_frames(&store, &other, 0).await;
    assert_eq!(dump_payload(&other, &frames, false), padded(&data, 2));
}

#[tokio::test]
async fn dump_errors() {
    let (tmp, store) = open_store();
    let n = name("foo:disk");
    let (tx, _rx) = mpsc::channel(4);
    assert_eq!(
        store.dump(&n, 0, tx.clone()).await.unwrap_err().to_string(),
        "dump block: not found"
    );
    store.add(&n, 1).unwrap();
    for level in [-1, 10] {
        assert_eq!(
            store
                .dump(&n, level, tx.clone())
                .await
                .unwrap_err()
                .to_string(),
            format!("invalid compression level {level} (0 to 9 allowed)")
        );
    }
    // The receiver is gone: the dump stops quietly.
    let (tx, rx) = mpsc::channel(4);
    drop(rx);
    assert!(matches!(
        store.dump(&n, 0, tx).await.unwrap(),
        DumpEnd::ReceiverGone
    ));
    // A read error after the stream started ends it with a failure frame, not noData.
    fs::create_dir(tmp.path().join("block/foo:bad")).unwrap();
    let bad = name("foo:bad");
    let (end, frames) = dump_frames(&store, &bad, 0).await;
    let text = "read foo:bad: Is a directory (os error 21)";
    match end {
        DumpEnd::Failed(e) => assert_eq!(e.to_string(), text),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        frames,
        vec![
            OutputFrame {
                name: bad.clone(),
                payload: Payload::Success(Success::BlockDeviceImage(false)),
            },
            OutputFrame {
                name: bad,
                payload: Payload::failure(text),
            },
        ]
    );
}

#[test]
fn legacy_inline_add_set_dump() {
    let (tmp, store) = open_store();
    let dir = tmp.path().join("block");
    let a = name("foo:a");
    let data = noise(5000, 13);

    store.add_inline(&a, 1, false, Some(&data)).unwrap();
    assert_eq!(fs::read(dir.join("foo:a")).unwrap(), padded(&data, 1));
    assert_eq!(
        fs::metadata(dir.join("foo:a"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        store
            .add_inline(&a, 1, false, Some(b"x"))
            .unwrap_err()
            .to_string(),
        "file already exists"
    );

    let b = name("foo:b");
    store
        .add_inline(&b, 2, true, Some(&zlib(&data, 9)))
        .unwrap();
    assert_eq!(fs::read(dir.join("foo:b")).unwrap(), padded(&data, 2));

    let c = name("foo:c");
    store.add_inline(&c, 1, false, None).unwrap();
    assert_eq!(fs::read(dir.join("foo:c")).unwrap(), vec![0; MIB]);

    let big = noise(MIB + 1, 14);
    for (compressed, payload) in [(false, big.clone()), (true, zlib(&big, 1))] {
        assert_eq!(
            store
                .add_inline(&name("foo:d"), 1, compressed, Some(&payload))
                .unwrap_err()
                .to_string(),
            "data exceeds block size"
        );
        assert_eq!(
            store
                .set_inline(&a, 1, compressed, &payload)
                .unwrap_err()
                .to_string(),
            "data exceeds block size"
        );
    }
    assert_eq!(
        store
            .add_inline(&name("foo:d"), 0, false, Some(b"x"))
            .unwrap_err()
            .to_string(),
        "overflow while computing bytes"
    );
    assert_eq!(dir_entries(&dir), vec!["foo:a", "foo:b", "foo:c"]);
    assert_eq!(fs::read(dir.join("foo:a")).unwrap(), padded(&data, 1));

    let new = noise(777, 15);
    store.set_inline(&a, 1, true, &zlib(&new, 5)).unwrap();
    assert_eq!(fs::read(dir.join("foo:a")).unwrap(), padded(&new, 1));
    assert_eq!(
        store
            .set_inline(&name("foo:none"), 1, false, b"x")
            .unwrap_err()
            .to_string(),
        "set block: not found"
    );

    assert_eq!(store.dump_inline(&a, 0).unwrap(), (false, padded(&new, 1)));
    let (compressed, packed) = store.dump_inline(&b, 9).unwrap();
    assert!(compressed);
    assert_eq!(inflate(&packed), padded(&data, 2));
    assert_eq!(
        store
            .dump_inline(&name("foo:none"), 0)
            .unwrap_err()
            .to_string(),
        "dump block: not found"
    );
    let huge = name("foo:huge");
    store.add(&huge, 17).unwrap();
    assert_eq!(
        store.dump_inline(&huge, 0).unwrap_err().to_string(),
        "block device of 17 MB is too large for an inline dump (at most 16 MB), use the streamed dump"
    );
    store.add(&name("foo:max"), 16).unwrap();
    assert_eq!(
        store.dump_inline(&name("foo:max"), 0).unwrap().1.len(),
        16 * MIB
    );
    assert_eq!(dir_entries(&dir).len(), 5);
}

#[test]
fn open_registers_valid_files_and_skips_others() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("block");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let file = |n: &str, len: u64| {
        let f = fs::File::create(dir.join(n)).unwrap();
        f.set_len(len).unwrap();
    };
    file("foo:disk", MB);
    file("bar:big", 2 * MB);
    file(":root", 3 * MB);
    file("foo:odd", 1000); // not a multiple of 1 MiB
    file("foo:empty", 0); // empty
    file("not-a-name", MB); // no `:`
    file("foo:", MB); // a path
    file("foo:bad label", MB); // invalid label
    file("foo:my.disk", MB); // albatross's file name of foo:my.disk
    file("foo:x.y", MB); // albatross's name of foo:x.y ...
    file("foo:x_y", 2 * MB); // ... which exists in petrel's form too
    file(".foo:disk.123.4.tmp", MB); // temporary file of an interrupted set
    fs::create_dir(dir.join("foo:dir")).unwrap();
    std::os::unix::fs::symlink(dir.join("foo:disk"), dir.join("foo:link")).unwrap();

    let (store, devices) = BlockStore::open(dir.clone()).unwrap();
    assert_eq!(
        devices,
        vec![
            (name(":root"), 3),
            (name("bar:big"), 2),
            (name("foo:disk"), 1),
            (name("foo:my.disk"), 1),
            (name("foo:x.y"), 2),
        ]
    );
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // The albatross file name was moved to petrel's; the duplicate and the rest stay.
    assert_eq!(
        dir_entries(&dir),
        vec![
            ":root",
            "bar:big",
            "foo:",
            "foo:bad label",
            "foo:dir",
            "foo:disk",
            "foo:empty",
            "foo:link",
            "foo:my_disk",
            "foo:odd",
            "foo:x.y",
            "foo:x_y",
            "not-a-name",
        ]
    );
    assert_eq!(
        store.path(&name("foo:my.disk")).unwrap(),
        dir.join("foo:my_disk")
    );
    assert_eq!(fs::metadata(dir.join("foo:x_y")).unwrap().len(), 2 * MB);
}

#[test]
fn store_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<BlockStore>();
}
