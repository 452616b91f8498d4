//! The adversarial suite: the real `petrel-endpoint` with the stand-in tender, attacked
//! over real TLS on loopback — slow and stalled peers, floods, oversized and malformed
//! streams, names that try to escape, odd certificates, policy escalation at every level.
//! Every case asserts its exact outcome (failure text, handshake alert or a cut
//! connection), and after each group a legitimate client is still served.
//!
//! Limits are small so that the suite stays quick: handshakes time out after 2 s, streams
//! after 2 s without data, idle connections after 3 s, frames above 64 KiB and images
//! above 1 MiB are refused.

mod common;
mod hardening;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use petrel::codec::{
    self, BlockCmd, BlockData, Command, Data, NetDeviceSpec, Payload, PolicyCmd, RestartArgs,
    Success, UnikernelCmd, UnikernelConfig,
};
use petrel::executor::manifest::Device;

use common::pki::{Ca, Leaf, Opts, policy};
use common::tls_client::ClientError;
use hardening::certs::{Basic, Signer, Spec, Usage};
use hardening::{
    End, Host, Raw, config, create_streamed, create_waiting, ext, failure, files, image, success,
    temp_files, text, wait_until,
};

/// Small limits for every endpoint of this suite.
const LIMITS: [&str; 12] = [
    "--handshake-timeout",
    "2",
    "--idle-timeout",
    "2",
    "--first-byte-timeout",
    "3",
    "--max-handshakes",
    "4",
    "--max-frame-size",
    "65536",
    "--max-image-size",
    "1048576",
];

fn host() -> Host {
    Host::start(&LIMITS)
}

fn policy_info() -> Command {
    Command::Policy(PolicyCmd::Info)
}

fn info() -> Command {
    Command::Unikernel(UnikernelCmd::Info)
}

fn texts(frames: &[codec::Wire]) -> Vec<String> {
    frames.iter().map(|w| text(&w.payload)).collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------
// Slow, idle and flooding peers

/// The first flight of a real client (its ClientHello), captured on a socket of ours.
fn client_hello(host: &Host) -> Vec<u8> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let leaf = host.ca.leaf(Some("."), &policy_info());
    let server_ca = host.ca.cert().clone();
    let client = std::thread::spawn(move || {
        let _ = hardening::Raw::try_connect(addr, &leaf, &server_ca);
    });
    let (mut socket, _) = listener.accept().unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut hello = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.read(&mut buf) {
        if n == 0 {
            break;
        }
        hello.extend_from_slice(&buf[..n]);
    }
    drop(socket);
    client.join().unwrap();
    assert_eq!(hello[0], 0x16, "a handshake record");
    hello
}

/// Sends `hello` one octet every 300 ms until the server closes the connection; returns
/// how many octets went out.
fn slowloris(addr: std::net::SocketAddr, hello: &[u8]) -> usize {
    let mut stream = TcpStream::connect(addr).unwrap();
    for (sent, octet) in hello.iter().enumerate() {
        if stream.write_all(&[*octet]).is_err() {
            return sent;
        }
        std::thread::sleep(Duration::from_millis(300));
        stream.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        match stream.read(&mut buf) {
            Ok(0) => return sent + 1,
            Ok(n) => panic!("the server answered an incomplete hello with {n} octets"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return sent + 1,
        }
        stream.set_nonblocking(false).unwrap();
    }
    panic!("the whole hello went out at a slowloris pace");
}

#[test]
fn slowloris_handshakes_are_cut_and_a_legitimate_client_gets_through() {
    let host = host();
    let hello = client_hello(&host);
    // More slow peers than handshake slots.
    let peers: Vec<_> = (0..6)
        .map(|_| {
            let (addr, hello) = (host.addr, hello.clone());
            std::thread::spawn(move || slowloris(addr, &hello))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    host.assert_served();
    for peer in peers {
        let sent = peer.join().unwrap();
        assert!(
            sent < hello.len(),
            "cut after {sent} of {} octets",
            hello.len()
        );
    }
    host.wait_for_log("outcome=handshake error: handshake timeout (2 s)");
    host.assert_served();
}

#[test]
fn idle_connections_are_dropped_and_a_flood_leaks_nothing() {
    let host = host();
    host.assert_served();
    // The connection just served may still be closing on the server's side.
    std::thread::sleep(Duration::from_millis(500));
    let baseline = host.fds();

    // 300 peers that connect and say nothing hold no handshake slot, and are dropped
    // after the first-byte timeout.
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(host.addr).unwrap())
        .collect();
    host.assert_served();
    for mut socket in idle {
        socket.set_read_timeout(Some(hardening::WAIT)).unwrap();
        let mut octet = [0u8; 1];
        assert_eq!(socket.read(&mut octet).unwrap(), 0, "closed without a word");
    }

    // A flood: connections opened and closed in a tight loop from several threads,
    // closing at once, after garbage, or after half a TLS record header.
    let flooders: Vec<_> = (0..4)
        .map(|t| {
            let addr = host.addr;
            std::thread::spawn(move || {
                for i in 0..250 {
                    let Ok(mut socket) = TcpStream::connect(addr) else {
                        continue;
                    };
                    let _ = match (t + i) % 3 {
                        0 => Ok(()),
                        1 => socket.write_all(b"GET / HTTP/1.0\r\n\r\n"),
                        _ => socket.write_all(&[0x16, 0x03]),
                    };
                }
            })
        })
        .collect();
    for flooder in flooders {
        flooder.join().unwrap();
    }
    host.assert_served();
    // Every connection of the flood is closed on the server's side too.
    wait_until(
        "the endpoint's descriptors are back to their number before",
        || host.fds() <= baseline,
    );
    host.assert_served();
}

// ---------------------------------------------------------------------------------------
// Streams

#[test]
fn stalled_streams_are_cut_with_a_failure_and_leave_nothing_behind() {
    let host = host();
    let idle = "failure: reading tls chunk: no data for 2 s (idle timeout)";

    // An image upload that stops in the middle of a length prefix.
    let leaf = host.ca.leaf(Some("stall1"), &create_streamed(&["--wait"]));
    let mut client = Raw::connect(&host, &leaf);
    client.chunk(&[1u8; 100]).unwrap();
    client.send(&[0, 0]).unwrap();
    assert_eq!(client.texts(), strings(&[idle]));

    // One that stops in the middle of a chunk.
    let leaf = host.ca.leaf(Some("stall2"), &create_streamed(&["--wait"]));
    let mut client = Raw::connect(&host, &leaf);
    client.send(&[0, 0, 0x03, 0xE8]).unwrap();
    client.send(&[7u8; 10]).unwrap();
    assert_eq!(client.texts(), strings(&[idle]));

    // A block set that stops mid-chunk.
    let add = host
        .ca
        .leaf(Some("disk"), &Command::Block(BlockCmd::Add(1)));
    assert_eq!(host.texts(&add), strings(&["success: added block device"]));
    let set = host
        .ca
        .leaf(Some("disk"), &Command::Block(BlockCmd::Set(false)));
    let mut client = Raw::connect(&host, &set);
    client.send(&[0, 0, 0x10, 0]).unwrap();
    client.send(&[9u8; 100]).unwrap();
    assert_eq!(client.texts(), strings(&[idle]));

    wait_until("the stream's temporary files are removed", || {
        temp_files(&host.state_dir()).is_empty()
    });
    assert_eq!(host.unikernels(), Vec::<String>::new());
    assert!(
        files(&host.state_dir().join("images")).is_empty(),
        "{:?}",
        files(&host.state_dir())
    );
    host.assert_served();
}

/// A zlib stream of `size` zeros: small, inflating far beyond the image limit.
fn zlib_bomb(size: usize) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1024 * 1024];
    for _ in 0..size / zeros.len() {
        z.write_all(&zeros).unwrap();
    }
    z.finish().unwrap()
}

#[test]
fn oversized_frames_images_and_zlib_bombs_are_refused_with_their_limit() {
    let host = host();

    // A chunk announcing more than --max-frame-size.
    let leaf = host.ca.leaf(Some("big1"), &create_streamed(&[]));
    let mut client = Raw::connect(&host, &leaf);
    client.send(&[0, 1, 0, 1]).unwrap();
    assert_eq!(
        client.texts(),
        strings(&[
            "failure: reading tls chunk: chunk of 65537 octets exceeds the limit of 65536 octets"
        ])
    );

    // Chunks within the frame limit that together exceed --max-image-size.
    let leaf = host.ca.leaf(Some("big2"), &create_streamed(&[]));
    let mut client = Raw::connect(&host, &leaf);
    let chunk = vec![0x5Au8; 65536];
    for _ in 0..17 {
        if client.chunk(&chunk).is_err() {
            break;
        }
    }
    assert_eq!(
        client.texts(),
        strings(&["failure: reading tls chunk: image exceeds the limit of 1048576 octets"])
    );

    // A compressed image, streamed, that inflates beyond the limit.
    let bomb = zlib_bomb(64 * 1024 * 1024);
    assert!(bomb.len() < 1024 * 1024, "{}", bomb.len());
    let streamed_bomb = Command::Unikernel(UnikernelCmd::Create(UnikernelConfig {
        compressed: true,
        image: Vec::new(),
        ..config(&[], 32)
    }));
    let leaf = host.ca.leaf(Some("bomb1"), &streamed_bomb);
    let mut client = Raw::connect(&host, &leaf);
    for piece in bomb.chunks(60000) {
        client.chunk(piece).unwrap();
    }
    client.end().unwrap();
    let uncompress = "failure: failed to uncompress: image exceeds the limit of 1048576 octets";
    assert_eq!(client.texts(), strings(&[uncompress]));

    // The same bomb embedded in the certificate, as albatross-client sends images.
    let inline_bomb = Command::Unikernel(UnikernelCmd::Create(UnikernelConfig {
        compressed: true,
        image: bomb,
        ..config(&[], 32)
    }));
    let leaf = host.ca.leaf(Some("bomb2"), &inline_bomb);
    assert_eq!(host.texts(&leaf), strings(&[uncompress]));

    wait_until("temporary files are removed", || {
        temp_files(&host.state_dir()).is_empty()
    });
    assert_eq!(host.unikernels(), Vec::<String>::new());
    host.assert_served();
}

#[test]
fn images_that_never_finish_are_refused() {
    let host = host();

    // Chunks keep coming, each well within the idle timeout, without a terminator:
    // the image limit ends it.
    let leaf = host.ca.leaf(Some("endless"), &create_streamed(&[]));
    let mut client = Raw::connect(&host, &leaf);
    let chunk = vec![1u8; 32 * 1024];
    for _ in 0..64 {
        if client.chunk(&chunk).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        client.texts(),
        strings(&["failure: reading tls chunk: image exceeds the limit of 1048576 octets"])
    );

    // The client ends its side (close_notify) before the terminator.
    let leaf = host.ca.leaf(Some("closed"), &create_streamed(&[]));
    let mut client = Raw::connect(&host, &leaf);
    client.chunk(&[1u8; 1000]).unwrap();
    client.close_notify();
    assert_eq!(
        client.texts(),
        strings(&["failure: reading tls chunk: connection closed before the end of the stream"])
    );

    // The client shuts its TCP side down without a close_notify.
    let leaf = host.ca.leaf(Some("halfclosed"), &create_streamed(&[]));
    let mut client = Raw::connect(&host, &leaf);
    client.chunk(&[1u8; 1000]).unwrap();
    client.half_close();
    assert_eq!(
        client.texts(),
        strings(&["failure: reading tls chunk: connection closed before the end of the stream"])
    );

    // The client vanishes; nobody is left to tell, and nothing is left behind.
    let leaf = host.ca.leaf(Some("vanished"), &create_streamed(&[]));
    let mut client = Raw::connect(&host, &leaf);
    client.chunk(&[1u8; 1000]).unwrap();
    client.cut();
    host.wait_for_log("name=:vanished command=unikernel create");

    wait_until("temporary files are removed", || {
        temp_files(&host.state_dir()).is_empty()
    });
    assert_eq!(host.unikernels(), Vec::<String>::new());
    host.assert_served();
}

/// The content of block device `name` below `ca` (dump at level 0); the dump ends with
/// `noData` as its final reply.
fn dump(host: &Host, ca: &Ca, name: &str) -> Vec<u8> {
    let leaf = ca.leaf(Some(name), &Command::Block(BlockCmd::Dump(0)));
    let frames = host.request(&leaf).unwrap();
    let mut content = Vec::new();
    let (first, rest) = frames.split_first().unwrap();
    assert_eq!(
        first.payload,
        Payload::Success(Success::BlockDeviceImage(false))
    );
    let (last, data) = rest.split_last().unwrap();
    assert_eq!(last.payload, Payload::Data(Data::Block(BlockData::NoData)));
    for frame in data {
        match &frame.payload {
            Payload::Data(Data::Block(BlockData::SomeData(piece))) => {
                content.extend_from_slice(piece)
            }
            other => panic!("{other:?}"),
        }
    }
    content
}

/// Waits until the executor has finished with block device `name` below `ca` (a set
/// whose client vanished is torn down after the server logged it): until a dump is not
/// refused as "in use".
fn wait_idle(host: &Host, ca: &Ca, name: &str) {
    let leaf = ca.leaf(Some(name), &Command::Block(BlockCmd::Dump(0)));
    wait_until("the block device is no longer in use", || {
        let frames = host.request(&leaf).unwrap();
        frames[0].payload != Payload::failure("dump block: is in use")
    });
}

/// `data` padded with zeros to 1 MiB.
fn device(data: &[u8]) -> Vec<u8> {
    let mut content = data.to_vec();
    content.resize(1024 * 1024, 0);
    content
}

#[test]
fn block_set_streams_cut_off_keep_the_old_content() {
    let host = host();
    let add = host
        .ca
        .leaf(Some("disk"), &Command::Block(BlockCmd::Add(1)));
    assert_eq!(host.texts(&add), strings(&["success: added block device"]));
    let set = host
        .ca
        .leaf(Some("disk"), &Command::Block(BlockCmd::Set(false)));
    let old = b"the old content, intact".repeat(100);
    let mut client = Raw::connect(&host, &set);
    client.chunk(&old).unwrap();
    client.end().unwrap();
    assert_eq!(client.texts(), strings(&["success: set block device"]));
    assert_eq!(dump(&host, &host.ca, "disk"), device(&old));

    // Cut mid-chunk: the connection vanishes.
    let mut client = Raw::connect(&host, &set);
    client.chunk(&[0xEEu8; 5000]).unwrap();
    client.send(&[0, 0, 0x10, 0, 1, 2, 3]).unwrap();
    client.cut();
    wait_idle(&host, &host.ca, "disk");
    // Cut between chunks with a close_notify: the client reads the failure.
    let mut client = Raw::connect(&host, &set);
    client.chunk(&[0xEEu8; 5000]).unwrap();
    client.close_notify();
    assert_eq!(
        client.texts(),
        strings(&["failure: reading tls chunk: connection closed before the end of the stream"])
    );
    wait_idle(&host, &host.ca, "disk");
    // A compressed set whose zlib stream is cut before its end.
    let compressed_set = host
        .ca
        .leaf(Some("disk"), &Command::Block(BlockCmd::Set(true)));
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&[0xAB; 100_000]).unwrap();
    let zlib = z.finish().unwrap();
    let mut client = Raw::connect(&host, &compressed_set);
    client.chunk(&zlib[..zlib.len() / 2]).unwrap();
    client.end().unwrap();
    assert_eq!(
        client.texts(),
        strings(&[
            "failure: error writing to file descriptor: invalid zlib stream (the stream is truncated)"
        ])
    );
    // More data than the device holds.
    let mut client = Raw::connect(&host, &set);
    let chunk = vec![0xCDu8; 65536];
    for _ in 0..17 {
        if client.chunk(&chunk).is_err() {
            break;
        }
    }
    let _ = client.end();
    assert_eq!(client.texts(), strings(&["failure: stream exceeds size"]));

    wait_until("temporary files are removed", || {
        temp_files(&host.state_dir()).is_empty()
    });
    assert_eq!(dump(&host, &host.ca, "disk"), device(&old));

    // A negative length prefix mid-stream ends the stream (spec wire §7.1: a length
    // <= 0 is the end): what came before it is the new content.
    let mut client = Raw::connect(&host, &set);
    client.chunk(b"new").unwrap();
    client.send(&[0xFF, 0xFF, 0xFF, 0xF0]).unwrap();
    client.send(b"ignored after the end").unwrap();
    assert_eq!(client.texts(), strings(&["success: set block device"]));
    assert_eq!(dump(&host, &host.ca, "disk"), device(b"new"));
    host.assert_served();
    // A dump's final reply is its `noData` frame: audited as a success.
    let records = host.audit(11);
    let dumps: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["command"] == "block dump")
        .filter(|r| r["outcome"] != "failure: dump block: is in use")
        .collect();
    assert!(dumps.len() >= 3, "{records:#?}");
    for record in dumps {
        assert_eq!(record["outcome"], "ok", "{record}");
    }
}

#[test]
fn garbage_after_a_valid_frame_or_after_the_terminator() {
    let host = host();

    // After the terminator: ignored, the create goes through.
    let leaf = host.ca.leaf(Some("ok"), &create_streamed(&["--wait"]));
    let mut client = Raw::connect(&host, &leaf);
    let stub = image(&[]);
    let (a, b) = stub.split_at(100);
    client.chunk(a).unwrap();
    client.chunk(b).unwrap();
    client.end().unwrap();
    client.send(&[0xFFu8; 1000]).unwrap();
    assert_eq!(client.texts(), strings(&["success: created unikernel"]));
    assert_eq!(host.unikernels(), strings(&[":ok"]));
    assert_eq!(
        std::fs::read(host.state_dir().join("images/:ok.img")).unwrap(),
        stub
    );

    // Garbage right after a valid chunk, read as a length prefix.
    let leaf = host.ca.leaf(Some("garbage"), &create_streamed(&["--wait"]));
    let mut client = Raw::connect(&host, &leaf);
    client.chunk(a).unwrap();
    client.send(b"\x7fgarbage that is not a chunk").unwrap();
    assert_eq!(
        client.texts(),
        strings(&[
            "failure: reading tls chunk: chunk of 2137481586 octets exceeds the limit of 65536 octets"
        ])
    );

    // A negative length prefix after a valid chunk ends the stream: the image is what
    // came before, which is not a whole ELF image.
    let leaf = host
        .ca
        .leaf(Some("negative"), &create_streamed(&["--wait"]));
    let mut client = Raw::connect(&host, &leaf);
    client.chunk(a).unwrap();
    client.send(&[0x80, 0, 0, 0]).unwrap();
    client.chunk(b).unwrap();
    assert_eq!(
        client.texts(),
        strings(&[
            "failure: image truncated: program header table extends beyond the end of the file"
        ])
    );

    // Garbage after the handshake of a request that has no stream.
    let leaf = host.ca.leaf(Some("."), &info());
    let mut client = Raw::connect(&host, &leaf);
    client.send(b"unexpected octets").unwrap();
    let (frames, end) = client.frames();
    assert_eq!(end, End::CloseNotify);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(
        matches!(&frames[0].payload, Payload::Success(Success::UnikernelInfo(e)) if e.len() == 1),
        "{frames:?}"
    );

    assert_eq!(host.unikernels(), strings(&[":ok"]));
    host.assert_served();
}

// ---------------------------------------------------------------------------------------
// Names

#[test]
fn names_that_try_to_escape_are_refused_or_stay_inside_the_state_directory() {
    let host = host();
    let invalid = "failure: invalid label (only [a-zA-Z0-9-.] allowed, 1 to 63 chars)";
    let long = "x".repeat(64);
    let refused = [
        "a/b",
        "../../etc/passwd",
        "a\u{0}b",
        long.as_str(),
        // Cyrillic "е" (U+0435), a look-alike of "e".
        "w\u{435}b",
        "a:b",
        "web ",
    ];
    for cn in refused {
        let leaf = host.ca.leaf(Some(cn), &create_waiting(32));
        let frames = host.request(&leaf).unwrap();
        assert_eq!(frames, vec![failure(":", &invalid[9..])], "{cn:?}");
    }
    // An intermediate whose common name is not a label.
    let slash = host
        .ca
        .intermediate("a/b", &policy(2, &[0], 128, Some(10), &[]));
    let leaf = slash.leaf(Some("web"), &create_waiting(32));
    assert_eq!(
        host.request(&leaf).unwrap(),
        vec![failure(":", &invalid[9..])]
    );

    // Upper case is folded; `..` and `...` are labels like any other.
    for (cn, name) in [("WEB", ":web"), ("..", ":.."), ("...", ":...")] {
        let leaf = host.ca.leaf(Some(cn), &create_waiting(32));
        assert_eq!(
            host.request(&leaf).unwrap(),
            vec![success(name, "created unikernel")],
            "{cn}"
        );
    }
    // An intermediate `..` and its unikernel and block device `..`.
    let dots = host
        .ca
        .intermediate("..", &policy(2, &[0], 128, Some(10), &[]));
    let leaf = dots.leaf(Some(".."), &create_waiting(32));
    assert_eq!(
        host.request(&leaf).unwrap(),
        vec![success("..:..", "created unikernel")]
    );
    let leaf = dots.leaf(Some(".."), &Command::Block(BlockCmd::Add(1)));
    assert_eq!(
        host.request(&leaf).unwrap(),
        vec![success("..:..", "added block device")]
    );
    // An intermediate `.` adds the label `.` (spec N1); its leaf `.` is its path.
    let dot = host.ca.intermediate(".", &policy(2, &[0], 128, None, &[]));
    let leaf = dot.leaf(Some("x"), &create_waiting(32));
    assert_eq!(
        host.request(&leaf).unwrap(),
        vec![success(".:x", "created unikernel")]
    );
    let leaf = dot.leaf(Some("."), &create_waiting(32));
    assert_eq!(
        host.request(&leaf).unwrap(),
        vec![failure(
            ".:",
            "unikernel create needs a unikernel name, but .: is a path"
        )]
    );
    assert_eq!(
        host.unikernels(),
        strings(&["..:..", ".:x", ":..", ":...", ":web"])
    );

    // Every file is where it belongs, named through `Name::file_name` (`.` → `_`), and
    // nothing was written beside the state directory.
    assert_eq!(
        files(&host.state_dir()),
        strings(&[
            "audit.log",
            "block/__:__",
            "images/:__.img",
            "images/:___.img",
            "images/:web.img",
            "images/_:x.img",
            "images/__:__.img",
            "lock",
            "records",
            "run/:__.json",
            "run/:___.json",
            "run/:web.json",
            "run/_:x.json",
            "run/__:__.json",
            "state",
        ])
    );
    let beside: Vec<String> = files(host.dir())
        .into_iter()
        .filter(|f| !f.starts_with("state/"))
        .collect();
    assert_eq!(beside, strings(&["cacert.pem", "server.key", "server.pem"]));

    // The names address what they created, case-insensitively.
    let destroy = Command::Unikernel(UnikernelCmd::Destroy);
    for (cn, name) in [("Web", ":web"), ("..", ":..")] {
        let leaf = host.ca.leaf(Some(cn), &destroy);
        assert_eq!(
            host.request(&leaf).unwrap(),
            vec![success(name, "destroyed unikernel")]
        );
    }
    assert_eq!(host.unikernels(), strings(&["..:..", ".:x", ":..."]));
    host.assert_served();
}

// ---------------------------------------------------------------------------------------
// Certificates

/// What a client sees.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// The handshake failed with this reason (the server's alert).
    Alert(String),
    /// These frames (texts), then close_notify.
    Replies(Vec<String>),
}

/// What the client sees, and for a handshake failure the server's reason.
type Expected = (Seen, Option<String>);

fn seen(host: &Host, leaf: &Leaf) -> Seen {
    match host.request(leaf) {
        Ok(frames) => Seen::Replies(texts(&frames)),
        Err(ClientError(reason)) => Seen::Alert(reason),
    }
}

#[test]
fn odd_certificates_are_refused_in_the_handshake_or_with_a_failure() {
    let host = host();
    let root = Signer::of(&host.ca);
    let info_ext = ext(&info());
    let alice_policy = ext(&Command::Policy(PolicyCmd::Add(policy(
        2,
        &[0],
        128,
        Some(10),
        &[],
    ))));
    let alice = root.issue(&Spec::ca("alice", alice_policy.clone()));

    let duplicate_leaf = root.leaf(&Spec {
        albatross: vec![
            (false, info_ext.clone().unwrap()),
            (false, info_ext.clone().unwrap()),
        ],
        ..Spec::leaf("dup", None)
    });
    let duplicate_ca = root
        .issue(&Spec {
            albatross: vec![
                (false, alice_policy.clone().unwrap()),
                (false, alice_policy.clone().unwrap()),
            ],
            ..Spec::ca("alice", None)
        })
        .leaf(&Spec::leaf("x", info_ext.clone()));
    let critical_leaf = root.leaf(&Spec {
        albatross: vec![(true, info_ext.clone().unwrap())],
        ..Spec::leaf("crit", None)
    });
    let critical_ca = root
        .issue(&Spec {
            albatross: vec![(true, alice_policy.clone().unwrap())],
            ..Spec::ca("alice", None)
        })
        .leaf(&Spec::leaf("x", info_ext.clone()));
    let ca_as_leaf = root.leaf(&Spec {
        basic: Basic::Ca,
        usage: Usage::Ca,
        ..Spec::leaf("calike", info_ext.clone())
    });
    let ca_as_leaf_with_leaf_usage = root.leaf(&Spec {
        basic: Basic::Ca,
        ..Spec::leaf("calike", info_ext.clone())
    });
    let no_basic = root
        .issue(&Spec {
            basic: Basic::Absent,
            ..Spec::ca("alice", alice_policy.clone())
        })
        .leaf(&Spec::leaf("x", info_ext.clone()));
    let not_ca = root
        .issue(&Spec {
            basic: Basic::NotCa,
            ..Spec::ca("alice", alice_policy.clone())
        })
        .leaf(&Spec::leaf("x", info_ext.clone()));
    let no_cert_sign = root
        .issue(&Spec {
            usage: Usage::CaWithoutCertSign,
            ..Spec::ca("alice", alice_policy.clone())
        })
        .leaf(&Spec::leaf("x", info_ext.clone()));
    let expired_ca = root
        .issue(&Spec {
            start: -7200,
            duration: 3600,
            ..Spec::ca("alice", alice_policy.clone())
        })
        .leaf(&Spec::leaf("x", info_ext.clone()));
    // Two CAs that issued each other, and a leaf of one of them.
    let loop_leaf = {
        let (key_a, key_b) = (
            openssl::pkey::PKey::generate_ed25519().unwrap(),
            openssl::pkey::PKey::generate_ed25519().unwrap(),
        );
        let b0 = Signer::self_signed(&Spec::ca("loop-b", None), key_b.clone());
        let a = b0.issue_with_key(&Spec::ca("loop-a", alice_policy.clone()), key_a.clone());
        let a_alone = Signer {
            cert: a.cert.clone(),
            key: key_a,
            chain: vec![a.chain[0].clone()],
        };
        let b = a_alone.issue_with_key(&Spec::ca("loop-b", alice_policy.clone()), key_b);
        let mut leaf = a_alone.leaf(&Spec::leaf("x", info_ext.clone()));
        leaf.chain.push(b.chain[0].clone());
        leaf
    };
    // An intermediate of another root.
    let other = Ca::root_now("other-ca");
    let foreign = other
        .intermediate("alice", &policy(2, &[0], 128, Some(10), &[]))
        .leaf(Some("x"), &info());
    let mut foreign_with_root = other
        .intermediate("alice", &policy(2, &[0], 128, Some(10), &[]))
        .leaf(Some("x"), &info());
    foreign_with_root.chain.push(other.cert().clone());
    let expired_leaf = alice.leaf(&Spec {
        start: -7200,
        duration: 3600,
        ..Spec::leaf("x", info_ext.clone())
    });

    // What the client sees, and for handshake failures what the server logged.
    let alert = |s: &str, server: &str| (Seen::Alert(s.to_owned()), Some(server.to_owned()));
    let refused = |s: &str| (Seen::Replies(vec![format!("failure: {s}")]), None);
    let unknown_ca = "tlsv1 alert unknown ca";
    let invalid_ca = "invalid CA certificate";
    let no_issuer = "unable to get local issuer certificate";
    let cases: Vec<(&str, Leaf, Expected)> = vec![
        (
            "duplicate extension in the leaf",
            duplicate_leaf,
            refused("certificate dup carries more than one albatross extension"),
        ),
        (
            "duplicate extension in a CA",
            duplicate_ca,
            refused("certificate alice carries more than one albatross extension"),
        ),
        (
            "critical extension in the leaf",
            critical_leaf,
            alert(
                "ssl/tls alert certificate unknown",
                "unhandled critical extension",
            ),
        ),
        (
            "critical extension in a CA",
            critical_ca,
            alert(
                "ssl/tls alert certificate unknown",
                "unhandled critical extension",
            ),
        ),
        (
            "leaf that is a CA",
            ca_as_leaf,
            refused("leaf certificate calike must not be a CA certificate"),
        ),
        (
            "leaf that is a CA, leaf key usage",
            ca_as_leaf_with_leaf_usage,
            refused("leaf certificate calike must not be a CA certificate"),
        ),
        (
            "CA without basic constraints",
            no_basic,
            alert(unknown_ca, invalid_ca),
        ),
        ("CA with cA FALSE", not_ca, alert(unknown_ca, invalid_ca)),
        (
            "CA without keyCertSign",
            no_cert_sign,
            alert(unknown_ca, invalid_ca),
        ),
        (
            "expired CA",
            expired_ca,
            alert(
                "ssl/tls alert certificate expired",
                "certificate has expired",
            ),
        ),
        (
            "expired leaf",
            expired_leaf,
            alert(
                "ssl/tls alert certificate expired",
                "certificate has expired",
            ),
        ),
        (
            "CAs issuing each other",
            loop_leaf,
            alert(unknown_ca, no_issuer),
        ),
        (
            "intermediate of another root",
            foreign,
            alert(unknown_ca, no_issuer),
        ),
        (
            "another root sent along",
            foreign_with_root,
            alert(unknown_ca, "self-signed certificate in certificate chain"),
        ),
    ];
    let mut failed = Vec::new();
    let mut audited = 0;
    for (case, leaf, (expected, server)) in cases {
        let got = seen(&host, &leaf);
        if got != expected {
            failed.push(format!("{case}: {got:?}"));
        }
        // One audit record for the refusal, one for the legitimate request. With
        // `--user` the two come from different processes (the TLS worker's refusal over
        // the audit relay), so the refusal is found by its leaf, not by its position.
        host.assert_served();
        audited += 2;
        let records = host.audit(audited);
        let serial = leaf.cert.facts().unwrap().serial.hex();
        let Some(record) = records[audited - 2..]
            .iter()
            .find(|r| r["chain"][0]["serial"] == serial.as_str())
        else {
            panic!("{case}: no audit record of the refusal: {records:#?}");
        };
        if let Some(server) = server {
            let outcome = format!("handshake error: certificate verify failed: {server}");
            if record["outcome"] != outcome.as_str() {
                failed.push(format!("{case}: audited {}", record["outcome"]));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn chains_in_the_wrong_order_or_with_repeats_are_read_along_the_verified_path() {
    let host = host();
    let outer = host
        .ca
        .intermediate("outer", &policy(2, &[0], 128, Some(10), &[]));
    let inner = outer.intermediate("inner", &policy(1, &[0], 64, Some(5), &[]));
    let leaf = inner.leaf(Some("x"), &info());
    assert_eq!(leaf.chain.len(), 3);
    let expected = Seen::Replies(strings(&["Success(UnikernelInfo([]))"]));

    let mut wrong_order = copy(&leaf);
    wrong_order.chain.swap(1, 2);
    let mut repeated = copy(&leaf);
    let again = repeated.chain[1..].to_vec();
    repeated.chain.extend(again.iter().cloned());
    repeated.chain.extend(again);
    let mut with_root = copy(&leaf);
    with_root.chain.push(host.ca.cert().clone());
    with_root.chain.insert(1, host.ca.cert().clone());
    for (case, leaf) in [
        ("in order", copy(&leaf)),
        ("wrong order", wrong_order),
        ("repeated", repeated),
        ("root sent twice", with_root),
    ] {
        let frames = host.request(&leaf).unwrap();
        assert_eq!(Seen::Replies(texts(&frames)), expected, "{case}");
        assert_eq!(frames[0].header.name.text(), "outer:inner:x", "{case}");
    }
    assert_eq!(
        host.policies(),
        vec![
            (":".to_owned(), host_policy()),
            ("outer:".to_owned(), policy(2, &[0], 128, Some(10), &[])),
            ("outer:inner:".to_owned(), policy(1, &[0], 64, Some(5), &[])),
        ]
    );
    host.assert_served();
}

/// The root policy of every endpoint of this suite ([`hardening::HOST_FLAGS`]).
fn host_policy() -> petrel::policy::Policy {
    policy(
        0x3FFF_FFFF_FFFF_FFFF,
        &[0, 1],
        4096,
        Some(1024),
        &["br0", "br1"],
    )
}

fn copy(leaf: &Leaf) -> Leaf {
    Leaf {
        cert: leaf.cert.clone(),
        key: petrel::pki::PrivateKey::from_pem(&leaf.key_pem()).unwrap(),
        chain: leaf.chain.clone(),
    }
}

// ---------------------------------------------------------------------------------------
// Policy escalation

fn create_with(config: UnikernelConfig) -> Command {
    Command::Unikernel(UnikernelCmd::Create(config))
}

/// Requests `command` for `cn` with a leaf of `ca`; the reply texts.
fn ask(host: &Host, ca: &Ca, cn: &str, command: &Command) -> Vec<String> {
    host.texts(&ca.leaf(Some(cn), command))
}

#[test]
fn a_leaf_cannot_take_more_than_its_ca_allows() {
    let host = host();
    let alice_policy = policy(2, &[0], 128, Some(10), &["br0"]);
    let alice = host.ca.intermediate("alice", &alice_policy);
    let with_net = |bridge: &str| UnikernelConfig {
        image: image(&[Device::net("service")]),
        bridges: vec![NetDeviceSpec {
            netif: "service".into(),
            bridge: Some(bridge.into()),
            mac: None,
        }],
        ..config(&["--wait"], 32)
    };
    let cases: Vec<(&str, Command, &str)> = vec![
        (
            "big",
            create_waiting(256),
            "failure: maximum allowed memory (128, used 0) would be exceeded (requesting 256)",
        ),
        (
            "cpu1",
            create_with(UnikernelConfig {
                cpuids: [1].into(),
                ..config(&["--wait"], 32)
            }),
            "failure: CPUids 1 are not allowed by policy",
        ),
        (
            "net1",
            create_with(with_net("br1")),
            "failure: bridges br1 not allowed by policy",
        ),
        (
            "net0",
            create_with(with_net("br0")),
            "failure: interface br0 does not exist",
        ),
        (
            "disk",
            Command::Block(BlockCmd::Add(20)),
            "failure: block device policy limit of 10 MB (used 0 MB) would be exceeded by the request (20 MB)",
        ),
        ("u1", create_waiting(64), "success: created unikernel"),
        ("u2", create_waiting(64), "success: created unikernel"),
        (
            "u3",
            create_waiting(1),
            "failure: maximum amount of unikernels (2) reached",
        ),
        (
            "disk",
            Command::Block(BlockCmd::Add(10)),
            "success: added block device",
        ),
        (
            "disk2",
            Command::Block(BlockCmd::Add(1)),
            "failure: block device policy limit of 10 MB (used 10 MB) would be exceeded by the request (1 MB)",
        ),
    ];
    for (cn, command, expected) in cases {
        assert_eq!(
            ask(&host, &alice, cn, &command),
            strings(&[expected]),
            "{cn}"
        );
    }
    // A force-create cannot take more than the one it replaces leaves.
    let force = Command::Unikernel(UnikernelCmd::ForceCreate(config(&["--wait"], 65)));
    assert_eq!(
        ask(&host, &alice, "u2", &force),
        strings(&[
            "failure: maximum allowed memory (128, used 64) would be exceeded (requesting 65)"
        ])
    );
    assert_eq!(host.unikernels(), strings(&["alice:u1", "alice:u2"]));
    assert_eq!(host.tenders().len(), 2);
    assert_eq!(host.blocks(), vec![("alice:disk".to_owned(), 10, false)]);

    // A tenant CA claiming more than the host has is refused, naming the host's policy.
    let greedy = host
        .ca
        .intermediate("greedy", &policy(1, &[0, 1, 2], 64, None, &[]));
    assert_eq!(
        ask(&host, &greedy, "x", &create_waiting(32)),
        strings(&[
            "failure: expected success when adding policy, got: policy of greedy: not applied: \
             policy above does not allow CPUids 2"
        ])
    );
    host.assert_served();
}

#[test]
fn an_intermediate_cannot_escalate_above_any_policy_over_it() {
    let host = host();
    let alice_policy = policy(3, &[0], 128, Some(10), &[]);
    let alice = host.ca.intermediate("alice", &alice_policy);

    // A sub-CA asking for more than its parent.
    let bob_big = alice.intermediate("bob", &policy(4, &[0], 64, None, &[]));
    assert_eq!(
        ask(&host, &bob_big, "x", &info()),
        strings(&[
            "failure: expected success when adding policy, got: policy of alice:bob: not \
             applied: policy above allows 3 unikernels, which is fewer than 4"
        ])
    );
    // A sub-sub-CA above its grandparent while its parent is within.
    let bob = alice.intermediate("bob", &policy(2, &[0], 64, None, &[]));
    let carol_big = bob.intermediate("carol", &policy(3, &[0], 32, None, &[]));
    assert_eq!(
        ask(&host, &carol_big, "x", &info()),
        strings(&[
            "failure: expected success when adding policy, got: policy of alice:bob:carol: not \
             applied: policy above allows 2 unikernels, which is fewer than 3"
        ])
    );
    // The same through a CA without a policy in between (it adds no label).
    let relay = alice.intermediate_with("relay", None, Opts::default());
    let dave_big = relay.intermediate("dave", &policy(1, &[0], 256, None, &[]));
    assert_eq!(
        ask(&host, &dave_big, "x", &info()),
        strings(&[
            "failure: expected success when adding policy, got: policy of alice:dave: not \
             applied: policy above allows 128 MB memory, which is fewer than 256 MB"
        ])
    );
    // None of the refused chains left anything installed (one transaction).
    assert_eq!(host.policies(), vec![(":".to_owned(), host_policy())]);

    // Siblings within their parent cannot together exceed it.
    let carol = alice.intermediate("carol", &policy(2, &[0], 128, None, &[]));
    assert_eq!(
        ask(&host, &bob, "b1", &create_waiting(32)),
        strings(&["success: created unikernel"])
    );
    assert_eq!(
        ask(&host, &carol, "c1", &create_waiting(64)),
        strings(&["success: created unikernel"])
    );
    assert_eq!(
        ask(&host, &carol, "c2", &create_waiting(48)),
        strings(&[
            "failure: policy of alice: would be exceeded: memory (128 MB allowed, 96 MB used, 48 \
             MB requested)"
        ])
    );
    assert_eq!(
        ask(&host, &bob, "b2", &create_waiting(1)),
        strings(&["success: created unikernel"])
    );
    assert_eq!(
        ask(&host, &carol, "c3", &create_waiting(1)),
        strings(&[
            "failure: policy of alice: would be exceeded: unikernels (3 allowed, 3 running)"
        ])
    );
    assert_eq!(
        host.unikernels(),
        strings(&["alice:bob:b1", "alice:bob:b2", "alice:carol:c1"])
    );
    assert_eq!(host.tenders().len(), 3);
    assert_eq!(
        host.policies(),
        vec![
            (":".to_owned(), host_policy()),
            ("alice:".to_owned(), alice_policy.clone()),
            ("alice:bob:".to_owned(), policy(2, &[0], 64, None, &[])),
            ("alice:carol:".to_owned(), policy(2, &[0], 128, None, &[])),
        ]
    );
    host.assert_served();
}

#[test]
fn a_path_only_leaf_cannot_act_on_names() {
    let host = host();
    let alice = host
        .ca
        .intermediate("alice", &policy(2, &[0], 128, Some(10), &[]));
    assert_eq!(
        ask(&host, &alice, "disk", &Command::Block(BlockCmd::Add(1))),
        strings(&["success: added block device"])
    );
    let cases: Vec<(Command, &str)> = vec![
        (
            create_waiting(32),
            "failure: unikernel create needs a unikernel name, but alice: is a path",
        ),
        (
            Command::Unikernel(UnikernelCmd::ForceCreate(config(&["--wait"], 32))),
            "failure: unikernel force create needs a unikernel name, but alice: is a path",
        ),
        (
            Command::Unikernel(UnikernelCmd::Destroy),
            "failure: unikernel destroy needs a unikernel name, but alice: is a path",
        ),
        (
            Command::Unikernel(UnikernelCmd::Restart(RestartArgs::NoArguments)),
            "failure: unikernel restart needs a unikernel name, but alice: is a path",
        ),
        (
            Command::Unikernel(UnikernelCmd::Get(0)),
            "failure: unikernel get needs a unikernel name, but alice: is a path",
        ),
        (
            Command::Block(BlockCmd::Add(1)),
            "failure: block add needs a block device name, but alice: is a path",
        ),
        (
            Command::Block(BlockCmd::Remove),
            "failure: block remove needs a block device name, but alice: is a path",
        ),
        (
            Command::Block(BlockCmd::Dump(0)),
            "failure: block dump needs a block device name, but alice: is a path",
        ),
        (
            Command::Console(codec::ConsoleCmd::Subscribe(codec::SinceCount::Count(5))),
            "failure: console subscribe needs a unikernel name, but alice: is a path",
        ),
    ];
    for (command, expected) in &cases {
        assert_eq!(
            ask(&host, &alice, ".", command),
            strings(&[expected]),
            "{command}"
        );
    }
    // A block set with a path: refused, and the stream it sends is not taken.
    let set = alice.leaf(Some("."), &Command::Block(BlockCmd::Set(false)));
    let mut client = Raw::connect(&host, &set);
    let _ = client.chunk(b"overwrite");
    let _ = client.end();
    assert_eq!(
        client.texts(),
        strings(&["failure: block set needs a block device name, but alice: is a path"])
    );
    assert_eq!(host.unikernels(), Vec::<String>::new());
    assert_eq!(host.blocks(), vec![("alice:disk".to_owned(), 1, false)]);
    assert_eq!(dump(&host, &alice, "disk"), device(&[]));
    host.assert_served();
}

/// Unikernel names (relative) that `ca`'s path-only leaf sees with `info`.
fn seen_by(host: &Host, ca: &Ca) -> Vec<String> {
    let frames = host.request(&ca.leaf(Some("."), &info())).unwrap();
    match &frames[..] {
        [frame] => match &frame.payload {
            Payload::Success(Success::UnikernelInfo(entries)) => {
                let mut names: Vec<String> = entries.iter().map(|e| e.name.text()).collect();
                names.sort();
                names
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_tenant_cannot_address_another_tenants_names() {
    let host = host();
    let tenant = policy(3, &[0], 128, Some(10), &[]);
    let alice = host.ca.intermediate("alice", &tenant);
    let bob = host.ca.intermediate("bob", &tenant);
    for (ca, cn) in [
        (&alice, "web"),
        (&bob, "web"),
        (&bob, "alice"),
        (&bob, ".."),
    ] {
        assert_eq!(
            ask(&host, ca, cn, &create_waiting(32)),
            strings(&["success: created unikernel"]),
            "{cn}"
        );
    }
    assert_eq!(
        host.unikernels(),
        strings(&["alice:web", "bob:..", "bob:alice", "bob:web"])
    );
    // Each tenant's path shows only its own subtree, named relative to it.
    assert_eq!(seen_by(&host, &alice), strings(&[":web"]));
    assert_eq!(seen_by(&host, &bob), strings(&[":..", ":alice", ":web"]));
    let policies = |ca: &Ca| {
        let frames = host
            .request(&ca.leaf(Some("."), &Command::Policy(PolicyCmd::Info)))
            .unwrap();
        texts(&frames)
    };
    assert_eq!(
        policies(&bob),
        vec![format!(
            "{:?}",
            Payload::Success(Success::Policies(vec![codec::PolicyEntry {
                name: petrel::name::Name::root(),
                policy: tenant.clone(),
            }]))
        )]
    );
    // A leaf label naming the other tenant stays in its own path.
    let destroy = Command::Unikernel(UnikernelCmd::Destroy);
    assert_eq!(
        ask(&host, &bob, "alice", &destroy),
        strings(&["success: destroyed unikernel"])
    );
    assert_eq!(
        ask(&host, &bob, "..", &destroy),
        strings(&["success: destroyed unikernel"])
    );
    assert_eq!(
        ask(&host, &bob, "web", &destroy),
        strings(&["success: destroyed unikernel"])
    );
    assert_eq!(
        ask(&host, &bob, "web", &destroy),
        strings(&["failure: destroy: not found"])
    );
    assert_eq!(host.unikernels(), strings(&["alice:web"]));
    assert_eq!(host.tenders().len(), 1);
    host.assert_served();
}

#[test]
fn an_old_larger_policy_certificate_after_a_smaller_one_was_installed() {
    let host = host();
    let big_policy = policy(4, &[0], 256, None, &[]);
    let small_policy = policy(1, &[0], 64, None, &[]);
    let big = host.ca.intermediate("alice", &big_policy);
    let small = host.ca.intermediate("alice", &small_policy);
    for cn in ["a1", "a2"] {
        assert_eq!(
            ask(&host, &big, cn, &create_waiting(32)),
            strings(&["success: created unikernel"])
        );
    }
    // The smaller policy does not fit what runs: refused, the larger one stays.
    assert_eq!(
        ask(&host, &small, ".", &info()),
        strings(&[
            "failure: expected success when adding policy, got: policy of alice: not applied: \
             unikernel would exceed running unikernel limit set by policy to 1, running 2"
        ])
    );
    assert_eq!(
        host.policies()[1],
        ("alice:".to_owned(), big_policy.clone())
    );
    assert_eq!(
        ask(
            &host,
            &big,
            "a2",
            &Command::Unikernel(UnikernelCmd::Destroy)
        ),
        strings(&["success: destroyed unikernel"])
    );
    // Now it fits, and is installed.
    assert_eq!(seen_by(&host, &small), strings(&[":a1"]));
    assert_eq!(
        host.policies()[1],
        ("alice:".to_owned(), small_policy.clone())
    );
    assert_eq!(
        ask(&host, &small, "a2", &create_waiting(32)),
        strings(&["failure: maximum amount of unikernels (1) reached"])
    );
    // The old certificate, still valid, installs its policy again (albatross's rule:
    // the newest presented policy wins) ...
    assert_eq!(
        ask(&host, &big, "a2", &create_waiting(32)),
        strings(&["success: created unikernel"])
    );
    assert_eq!(
        host.policies()[1],
        ("alice:".to_owned(), big_policy.clone())
    );
    // ... until its issuer revokes it: then it is refused, and what it created is gone.
    let big_facts = big.cert().facts().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let crl = petrel::pki::crl::create_crl(
        &petrel::pki::CrlTemplate {
            this_update: now,
            next_update: None,
            number: petrel::pki::CrlNumber::from_u64(1),
            revoked: vec![petrel::pki::RevokedEntry {
                serial: big_facts.serial.clone(),
                revoked_at: now.unix_timestamp(),
                reason: None,
                invalidity_date: None,
            }],
        },
        &host.ca.issuer,
    )
    .unwrap();
    let upload = host.ca.leaf(
        Some("."),
        &Command::Revocation(codec::RevocationCmd::Upload),
    );
    let mut client = Raw::connect(&host, &upload);
    client.chunk(crl.der()).unwrap();
    client.end().unwrap();
    assert_eq!(
        client.texts(),
        strings(&[
            "success: stored CRL number 1 of CN=test-ca; 1 certificate newly revoked; destroyed \
             2 unikernels (alice:a1, alice:a2), 0 block devices; removed 1 policy (alice:); \
             closed 0 console subscriptions"
        ])
    );
    assert_eq!(
        ask(&host, &big, "a3", &create_waiting(32)),
        strings(&[&format!(
            "failure: certificate alice (serial {}) is revoked",
            big_facts.serial.hex()
        )])
    );
    assert_eq!(host.unikernels(), Vec::<String>::new());
    assert_eq!(host.tenders().len(), 0);
    assert_eq!(seen_by(&host, &small), Vec::<String>::new());
    assert_eq!(host.policies()[1], ("alice:".to_owned(), small_policy));
    host.assert_served();
}
