//! The TLS endpoint over real TLS on loopback: an in-process server with a fake handler
//! for the server's own behaviour (streams, replies, subscriptions, revocation), and the
//! real `petrel-endpoint` binary for refusals, the audit log, `--dev` and systemd socket
//! activation (`--inetd` is in `tests/inetd.rs`).

mod common;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use common::handler::{Behaviour, EVENT_TIMEOUT, Event, FakeHandler, name};
use common::pki::{Ca, Leaf, Opts};
use common::server::{Endpoint, TestServer, endpoint_binary, free_port, stand_in_tender};
use common::tls_client::{Client, ClientError, request};
use petrel::codec::{
    self, BlockCmd, Command, ConsoleCmd, Data, Header, Payload, PolicyCmd, SinceCount, Timestamp,
    UnikernelCmd, UnikernelConfig, Wire,
};
use petrel::executor::api::InputChunk;
use petrel::executor::manifest::{self, Target};
use petrel::limits::Limits;
use petrel::pki::Criticality;
use petrel::revocation::RevocationStore;
use petrel::server::SharedRevocations;
use petrel::verify::TrustAnchors;
use rand::RngCore;

// ---------------------------------------------------------------------------------------
// Helpers

fn reply(name_text: &str, payload: Payload) -> Wire {
    Wire::new(Header::new(0, name(name_text)), payload)
}

fn failure(name_text: &str, text: &str) -> Wire {
    reply(name_text, Payload::failure(text))
}

fn next(events: &Receiver<Event>) -> Event {
    events.recv_timeout(EVENT_TIMEOUT).expect("handler event")
}

fn no_more(events: &Receiver<Event>) {
    assert_eq!(
        events.recv_timeout(Duration::from_millis(200)).ok(),
        None,
        "unexpected handler event"
    );
}

fn create_streamed() -> Command {
    Command::Unikernel(UnikernelCmd::Create(UnikernelConfig::default()))
}

fn policy_info() -> Command {
    Command::Policy(PolicyCmd::Info)
}

fn console_subscribe() -> Command {
    Command::Console(ConsoleCmd::Subscribe(SinceCount::Count(5)))
}

fn in_process(behaviour: Behaviour, limits: Limits) -> (TestServer, Receiver<Event>) {
    let (handler, events) = FakeHandler::new(behaviour);
    (TestServer::start(Arc::new(handler), limits), events)
}

fn connect(server: &TestServer, leaf: &Leaf) -> Client {
    Client::connect(server.addr, &leaf.chain, &leaf.key, server.ca.cert()).unwrap()
}

fn expect_request(events: &Receiver<Event>, name_text: &str, command: &Command, input: bool) {
    match next(events) {
        Event::Request {
            name,
            command: got,
            input: got_input,
            peer,
        } => {
            assert_eq!(name, name_text);
            assert_eq!(&*got, command);
            assert_eq!(got_input, input);
            assert!(peer.starts_with("127.0.0.1:"), "{peer}");
        }
        other => panic!("expected a request, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// In-process server with a fake handler

#[test]
fn streamed_image_reaches_the_handler_in_order_and_garbage_after_it_is_ignored() {
    let (server, events) = in_process(Behaviour::Echo, Limits::default());
    let leaf = server.ca.leaf(Some("hello"), &create_streamed());
    let mut client = connect(&server, &leaf);
    let chunks = [vec![1u8; 100], vec![2u8; 5000], vec![3u8; 1]];
    for chunk in &chunks {
        client.send_chunk(chunk).unwrap();
    }
    client.send_end().unwrap();
    client.send_raw(b"garbage after the terminator").unwrap();
    assert_eq!(
        client.read_all().unwrap(),
        vec![reply(
            ":hello",
            Payload::success_string("received 5101 octets")
        )]
    );
    expect_request(&events, ":hello", &create_streamed(), true);
    for chunk in chunks {
        assert_eq!(next(&events), Event::Input(InputChunk::Data(chunk)));
    }
    assert_eq!(next(&events), Event::Input(InputChunk::End));
    no_more(&events);

    let records = server.audit(1);
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record["event"], "request");
    assert_eq!(record["name"], ":hello");
    assert_eq!(record["command"], "unikernel create");
    assert_eq!(record["outcome"], "ok");
    assert!(record["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    let facts = leaf.cert.facts().unwrap();
    let ca_facts = server.ca.cert().facts().unwrap();
    assert_eq!(
        record["chain"],
        serde_json::json!([
            {"cn": "hello", "serial": facts.serial.hex()},
            {"cn": "test-ca", "serial": ca_facts.serial.hex()},
        ])
    );
    // RFC 3339 in UTC.
    let time = record["time"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).is_ok(),
        "{time}"
    );
}

#[test]
fn leaf_embedding_a_2_mib_compressed_image_reaches_the_handler_intact() {
    let (server, events) = in_process(Behaviour::Echo, Limits::default());
    let mut image = manifest::build_test_image(Target::Hvt, 2, &[]);
    let mut padding = vec![0u8; 2 * 1024 * 1024];
    rand::thread_rng().fill_bytes(&mut padding);
    image.extend_from_slice(&padding);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(9));
    z.write_all(&image).unwrap();
    let compressed = z.finish().unwrap();
    assert!(compressed.len() > 2 * 1024 * 1024, "{}", compressed.len());
    let command = Command::Unikernel(UnikernelCmd::Create(UnikernelConfig {
        compressed: true,
        image: compressed,
        ..UnikernelConfig::default()
    }));
    let leaf = server.ca.leaf(Some("big"), &command);
    assert!(leaf.cert.der().len() > 2 * 1024 * 1024);
    let frames = request(server.addr, &leaf.chain, &leaf.key, server.ca.cert()).unwrap();
    assert_eq!(
        frames,
        vec![reply(":big", Payload::success_string("received 0 octets"))]
    );
    // The request carries the image exactly as embedded, and no input stream follows.
    expect_request(&events, ":big", &command, false);
    no_more(&events);
}

#[test]
fn a_client_disconnecting_mid_stream_fails_the_input() {
    let (server, events) = in_process(Behaviour::Echo, Limits::default());
    let leaf = server.ca.leaf(Some("hello"), &create_streamed());
    let mut client = connect(&server, &leaf);
    client.send_chunk(b"first").unwrap();
    client.send_raw(&[0, 0, 0, 10, 1, 2]).unwrap();
    expect_request(&events, ":hello", &create_streamed(), true);
    assert_eq!(
        next(&events),
        Event::Input(InputChunk::Data(b"first".to_vec()))
    );
    client.drop_connection();
    assert_eq!(
        next(&events),
        Event::Input(InputChunk::Failed(
            "reading tls chunk: connection closed before the end of the stream".to_owned()
        ))
    );
}

#[test]
fn an_oversized_chunk_is_answered_with_a_failure_frame() {
    let limits = Limits {
        max_frame_size: 1024,
        ..Limits::default()
    };
    let (server, events) = in_process(Behaviour::Echo, limits);
    let leaf = server.ca.leaf(Some("hello"), &create_streamed());
    let mut client = connect(&server, &leaf);
    client.send_chunk(&[7u8; 2000]).unwrap();
    let text = "reading tls chunk: chunk of 2000 octets exceeds the limit of 1024 octets";
    assert_eq!(client.read_all().unwrap(), vec![failure(":hello", text)]);
    expect_request(&events, ":hello", &create_streamed(), true);
    assert_eq!(
        next(&events),
        Event::Input(InputChunk::Failed(text.to_owned()))
    );
    let records = server.audit(1);
    assert_eq!(records[0]["outcome"], format!("failure: {text}"));
}

#[test]
fn an_image_over_the_size_limit_is_answered_with_a_failure_frame() {
    let limits = Limits {
        max_image_size: 10,
        ..Limits::default()
    };
    let (server, events) = in_process(Behaviour::Echo, limits);
    let leaf = server.ca.leaf(Some("hello"), &create_streamed());
    let mut client = connect(&server, &leaf);
    client.send_chunk(&[1u8; 8]).unwrap();
    client.send_chunk(&[2u8; 8]).unwrap();
    client.send_end().unwrap();
    let text = "reading tls chunk: image exceeds the limit of 10 octets";
    assert_eq!(client.read_all().unwrap(), vec![failure(":hello", text)]);
    expect_request(&events, ":hello", &create_streamed(), true);
    assert_eq!(next(&events), Event::Input(InputChunk::Data(vec![1u8; 8])));
    assert_eq!(
        next(&events),
        Event::Input(InputChunk::Failed(text.to_owned()))
    );
}

#[test]
fn a_client_stalling_past_the_idle_timeout_is_cut() {
    let limits = Limits {
        idle_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let (server, events) = in_process(Behaviour::Echo, limits);
    let command = Command::Block(BlockCmd::Set(false));
    let leaf = server.ca.leaf(Some("disk"), &command);
    let mut client = connect(&server, &leaf);
    client.send_chunk(b"some data").unwrap();
    let text = "reading tls chunk: no data for 1 s (idle timeout)";
    assert_eq!(client.read_all().unwrap(), vec![failure(":disk", text)]);
    expect_request(&events, ":disk", &command, true);
    assert_eq!(
        next(&events),
        Event::Input(InputChunk::Data(b"some data".to_vec()))
    );
    assert_eq!(
        next(&events),
        Event::Input(InputChunk::Failed(text.to_owned()))
    );
}

#[test]
fn a_handler_refusing_early_is_answered_while_the_client_is_still_sending() {
    let (server, events) = in_process(Behaviour::RefuseEarly, Limits::default());
    let leaf = server.ca.leaf(Some("hello"), &create_streamed());
    let mut client = connect(&server, &leaf);
    // Far more than socket buffers hold: the server must keep draining while it answers.
    let chunk = vec![5u8; 64 * 1024];
    for _ in 0..128 {
        client.send_chunk(&chunk).unwrap();
    }
    client.send_end().unwrap();
    assert_eq!(
        client.read_all().unwrap(),
        vec![failure(":hello", "refused early")]
    );
    expect_request(&events, ":hello", &create_streamed(), true);
    no_more(&events);
}

#[test]
fn a_subscription_ends_when_the_client_closes_or_sends_anything() {
    let (server, events) = in_process(Behaviour::Subscribe, Limits::default());
    let leaf = server.ca.leaf(Some("hello"), &console_subscribe());

    let mut client = connect(&server, &leaf);
    assert_eq!(
        client.read_frame().unwrap(),
        Some(reply(":hello", Payload::success_string("subscribed")))
    );
    let line = Payload::Data(Data::Console {
        timestamp: Timestamp::from_unix_seconds(1_748_779_200).unwrap(),
        line: "line 1".to_owned(),
    });
    assert_eq!(client.read_frame().unwrap(), Some(reply(":hello", line)));
    client.close();
    expect_request(&events, ":hello", &console_subscribe(), false);
    assert_eq!(next(&events), Event::OutputClosed);

    let mut client = connect(&server, &leaf);
    assert_eq!(
        client.read_frame().unwrap(),
        Some(reply(":hello", Payload::success_string("subscribed")))
    );
    client.send_raw(b"x").unwrap();
    expect_request(&events, ":hello", &console_subscribe(), false);
    assert_eq!(next(&events), Event::OutputClosed);
    // The server closes after the last whole frame, without a final failure.
    let frames = client.read_all().unwrap();
    assert!(
        frames
            .iter()
            .all(|f| matches!(f.payload, Payload::Data(Data::Console { .. }))),
        "{frames:?}"
    );

    let records = server.audit(2);
    assert_eq!(records[0]["outcome"], "ended by the client");
    assert_eq!(records[0]["command"], "console subscribe");
    assert_eq!(records[1]["outcome"], "ended by the client");
}

#[test]
fn a_missing_final_reply_is_replaced_by_a_failure() {
    let leaf_command = Command::Unikernel(UnikernelCmd::Info);

    let (server, _events) = in_process(Behaviour::Frames(Vec::new()), Limits::default());
    let leaf = server.ca.leaf(Some("hello"), &leaf_command);
    let frames = request(server.addr, &leaf.chain, &leaf.key, server.ca.cert()).unwrap();
    assert_eq!(frames, vec![failure(":hello", "error reading from fd")]);

    let data = Payload::Data(Data::Block(codec::BlockData::SomeData(vec![1, 2, 3])));
    let (server, _events) = in_process(Behaviour::Frames(vec![data.clone()]), Limits::default());
    let leaf = server.ca.leaf(Some("hello"), &leaf_command);
    let frames = request(server.addr, &leaf.chain, &leaf.key, server.ca.cert()).unwrap();
    assert_eq!(
        frames,
        vec![
            reply(":hello", data),
            failure(":hello", "exception while reading from fd")
        ]
    );
    assert_eq!(
        server.audit(1)[0]["outcome"],
        "failure: exception while reading from fd"
    );

    // Streamed frames keep their own names; the final reply is forwarded as is.
    let console = Payload::Data(Data::Console {
        timestamp: Timestamp::from_unix_seconds(1_748_779_200).unwrap(),
        line: "hi".to_owned(),
    });
    let frames_in = vec![
        Payload::success_string("dumping"),
        console.clone(),
        Payload::failure("broke"),
    ];
    let (server, _events) = in_process(Behaviour::Frames(frames_in), Limits::default());
    let leaf = server.ca.leaf(Some("hello"), &leaf_command);
    let frames = request(server.addr, &leaf.chain, &leaf.key, server.ca.cert()).unwrap();
    assert_eq!(
        frames,
        vec![
            reply(":hello", Payload::success_string("dumping")),
            reply(":hello", console),
            failure(":hello", "broke"),
        ]
    );
    assert_eq!(server.audit(1)[0]["outcome"], "failure: broke");
}

#[test]
fn a_revoked_chain_is_refused_with_its_name_and_a_new_store_applies_to_the_next_connection() {
    let (handler, events) = FakeHandler::new(Behaviour::Echo);
    let revocations = Arc::new(SharedRevocations::new(RevocationStore::new()));
    let server = TestServer::start_with(
        Arc::new(handler),
        Limits::default(),
        Arc::clone(&revocations),
    );
    let leaf = server.ca.leaf(Some("hello"), &policy_info());
    let frames = request(server.addr, &leaf.chain, &leaf.key, server.ca.cert()).unwrap();
    assert_eq!(
        frames,
        vec![reply(
            ":hello",
            Payload::success_string("received 0 octets")
        )]
    );
    expect_request(&events, ":hello", &policy_info(), false);

    let anchors = TrustAnchors::from_pem(server.ca.cert_pem().as_bytes()).unwrap();
    let verified = anchors
        .verify(
            &leaf.chain,
            time::OffsetDateTime::now_utc().unix_timestamp(),
        )
        .unwrap();
    let id = petrel::chain::decode_request(&verified).unwrap().chain[0]
        .id
        .clone();
    let mut store = RevocationStore::new();
    store.set(id.issuer_key.clone(), [id.serial.clone()].into());
    revocations.replace(store);

    let frames = request(server.addr, &leaf.chain, &leaf.key, server.ca.cert()).unwrap();
    let text = format!("certificate hello (serial {}) is revoked", id.serial);
    assert_eq!(frames, vec![failure(":hello", &text)]);
    no_more(&events);
    let records = server.audit(2);
    assert_eq!(records[1]["event"], "refused");
    assert_eq!(records[1]["name"], ":hello");
    assert_eq!(records[1]["command"], "policy info");
    assert_eq!(records[1]["outcome"], format!("refused: {text}"));
}

// ---------------------------------------------------------------------------------------
// The real binary

/// A request the endpoint answers whatever the executor says: one final frame about `:`.
fn assert_served(endpoint: &Endpoint, ca: &Ca) {
    let leaf = ca.leaf(Some("."), &policy_info());
    let frames = request(endpoint.addr, &leaf.chain, &leaf.key, ca.cert()).unwrap();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].header, Header::new(0, name(":")));
}

#[test]
fn handshake_refusals_and_the_server_keeps_serving() {
    let ca = Ca::root_now("test-ca");
    let endpoint = Endpoint::start(&ca, &[]);
    let stranger = Ca::root_now("stranger");
    let chain_of = |depth: usize| {
        let mut issuer = ca.intermediate_with("i0", None, Opts::default());
        for i in 1..depth {
            issuer = issuer.intermediate_with(&format!("i{i}"), None, Opts::default());
        }
        issuer.leaf(Some("deep"), &policy_info())
    };
    let cases: Vec<(&str, Leaf, &str, &str)> = vec![
        (
            "unknown CA",
            stranger.leaf(Some("x"), &policy_info()),
            "tlsv1 alert unknown ca",
            "certificate verify failed: unable to get local issuer certificate",
        ),
        (
            "expired",
            ca.leaf_with(
                Some("x"),
                Some(codec::encode_extension(&policy_info())),
                Opts {
                    start_offset: -7200,
                    ..Opts::default()
                },
            ),
            "ssl/tls alert certificate expired",
            "certificate verify failed: certificate has expired",
        ),
        (
            "not yet valid",
            ca.leaf_with(
                Some("x"),
                Some(codec::encode_extension(&policy_info())),
                Opts {
                    start_offset: 3600,
                    ..Opts::default()
                },
            ),
            "ssl/tls alert bad certificate",
            "certificate verify failed: certificate is not yet valid or the system clock is incorrect",
        ),
        (
            "critical albatross extension",
            ca.leaf_with(
                Some("x"),
                Some(codec::encode_extension(&policy_info())),
                Opts {
                    criticality: Criticality::Critical,
                    ..Opts::default()
                },
            ),
            "ssl/tls alert certificate unknown",
            "certificate verify failed: unhandled critical extension",
        ),
        (
            "deeper than the verify depth",
            chain_of(9),
            "tlsv1 alert unknown ca",
            "certificate verify failed: certificate chain too long",
        ),
    ];
    let mut expected_audit = Vec::new();
    for (case, leaf, alert, server_text) in cases {
        let result = request(endpoint.addr, &leaf.chain, &leaf.key, ca.cert());
        assert_eq!(result, Err(ClientError(alert.to_owned())), "{case}");
        expected_audit.push((leaf, server_text));
        assert_served(&endpoint, &ca);
    }
    // With `--user` the refusals (the TLS worker's, over the audit relay) and the
    // requests (the executor's) are written by different tasks: each kind is in order,
    // the two may interleave.
    let records = endpoint.audit(expected_audit.len() * 2);
    let (refusals, served): (Vec<_>, Vec<_>) =
        records.iter().partition(|r| r["event"] == "handshake");
    assert_eq!(refusals.len(), expected_audit.len(), "{records:#?}");
    for (refused, (leaf, text)) in refusals.iter().zip(&expected_audit) {
        assert_eq!(refused["outcome"], format!("handshake error: {text}"));
        let facts = leaf.cert.facts().unwrap();
        assert_eq!(refused["chain"][0]["serial"], facts.serial.hex());
    }
    for served in served {
        assert_eq!(served["event"], "request");
        assert_eq!(served["command"], "policy info");
    }
}

#[test]
fn refusals_after_the_handshake_are_failure_frames() {
    let ca = Ca::root_now("test-ca");
    let endpoint = Endpoint::start(&ca, &[]);
    let ext = |c: &Command| Some(codec::encode_extension(c));
    let mut truncated = codec::encode_extension(&policy_info());
    truncated.truncate(truncated.len() - 2);
    let chain_of_ten = {
        let mut issuer = ca.intermediate_with("i0", None, Opts::default());
        for i in 1..8 {
            issuer = issuer.intermediate_with(&format!("i{i}"), None, Opts::default());
        }
        let mut leaf = issuer.leaf(Some("deep"), &policy_info());
        leaf.chain.push(ca.cert().clone());
        assert_eq!(leaf.chain.len(), 10);
        leaf
    };
    let cases: Vec<(Leaf, &str)> = vec![
        (
            ca.leaf_with(Some("x"), None, Opts::default()),
            "leaf certificate does not contain an albatross extension",
        ),
        (
            ca.leaf_with(
                Some("x"),
                Some(vec![0xde, 0xad, 0xbe, 0xef]),
                Opts::default(),
            ),
            "couldn't parse albatross extension: expected SEQUENCE, found tag 0xDE",
        ),
        (
            ca.leaf_with(Some("x"), Some(truncated), Opts::default()),
            "couldn't parse albatross extension: truncated input",
        ),
        (
            ca.leaf_with(
                Some("x"),
                ext(&Command::Policy(PolicyCmd::Add(common::pki::policy(
                    1,
                    &[0],
                    64,
                    None,
                    &[],
                )))),
                Opts::default(),
            ),
            "unexpected command",
        ),
        (chain_of_ten, "certificate chain too long"),
        (
            ca.leaf_with(Some("in valid"), ext(&policy_info()), Opts::default()),
            "invalid label (only [a-zA-Z0-9-.] allowed, 1 to 63 chars)",
        ),
    ];
    let count = cases.len();
    for (leaf, text) in &cases {
        let frames = request(endpoint.addr, &leaf.chain, &leaf.key, ca.cert()).unwrap();
        assert_eq!(frames, vec![failure(":", text)], "{text}");
    }
    assert_served(&endpoint, &ca);
    let records = endpoint.audit(count + 1);
    // The request may come before the refusals (see above).
    let (records, served): (Vec<_>, Vec<_>) = records.iter().partition(|r| r["event"] == "refused");
    assert_eq!((records.len(), served.len()), (count, 1));
    for (record, (leaf, text)) in records.iter().zip(&cases) {
        assert_eq!(record["outcome"], format!("refused: {text}"));
        assert_eq!(
            record["chain"][0]["serial"],
            leaf.cert.facts().unwrap().serial.hex()
        );
        assert!(record.get("name").is_none(), "{record}");
    }
    assert_eq!(served[0]["event"], "request");
    assert_eq!(served[0]["name"], ":");
    assert_eq!(served[0]["chain"][1]["cn"], "test-ca", "{}", served[0]);
    endpoint.wait_for_log("command=- serial=");
    endpoint.wait_for_log("outcome=refused: certificate chain too long");
}

#[test]
fn dev_mode_creates_once_and_prints_the_next_commands() {
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port();
    let args: Vec<String> = vec![
        "--dev".into(),
        "--port".into(),
        port.to_string(),
        "--tender".into(),
        stand_in_tender().into(),
    ];
    let endpoint = Endpoint::spawn(cwd.path(), &args, port);
    let dev = cwd.path().join("petrel-dev");
    endpoint.wait_for_stdout("petrel info --destination 127.0.0.1:");
    let printed = endpoint.stdout();
    assert!(printed.contains("(created)"), "{printed}");
    assert!(
        printed.contains(&format!(
            "petrel info --destination 127.0.0.1:{port} --ca petrel-dev/cacert.pem \
             --ca-key petrel-dev/ca.key --server-ca petrel-dev/cacert.pem"
        )),
        "{printed}"
    );
    assert!(
        printed.contains(
            "petrel create hello petrel-dev/hello.hvt --arg=--print=hello --arg=--wait \
             --destination"
        ),
        "{printed}"
    );
    assert!(printed.contains("petrel policy --destination"), "{printed}");
    let mode = |f: &str| std::fs::metadata(dev.join(f)).unwrap().permissions().mode() & 0o777;
    for key in ["ca.key", "server.key", "admin.key"] {
        assert_eq!(mode(key), 0o600, "{key}");
    }
    assert_eq!(mode("cacert.pem"), 0o644);
    assert_eq!(mode("hello.hvt"), 0o644);
    let stub = std::fs::read(dev.join("hello.hvt")).unwrap();
    let image = petrel::executor::manifest::read_image_bytes(&stub).unwrap();
    assert!(
        image.manifest.devices().is_empty(),
        "the stub image has no devices"
    );
    assert_eq!(mode("server.pem"), 0o644);
    assert_eq!(mode("state"), 0o700);
    assert_eq!(mode("state/audit.log"), 0o600);

    // A client signed by the development CA is served, and audited.
    let ca_cert = petrel::pki::Certificate::from_pem_chain(
        &std::fs::read_to_string(dev.join("cacert.pem")).unwrap(),
    )
    .unwrap();
    let ca_key = petrel::pki::keys::load_key_file(&dev.join("ca.key")).unwrap();
    let ca = Ca::from_issuer(
        petrel::pki::CaIssuer::new(ca_cert, ca_key).unwrap(),
        time::OffsetDateTime::now_utc(),
    );
    assert_served(&endpoint, &ca);
    let audit_path = dev.join("state").join(petrel::audit::AUDIT_FILE);
    let record = &common::server::wait_for_audit(&audit_path, 1)[0];
    assert_eq!(record["event"], "request");
    assert_eq!(record["chain"][1]["cn"], "petrel-dev-ca");
    let ca_before = std::fs::read(dev.join("cacert.pem")).unwrap();
    assert!(endpoint.stop().success());

    // The second run reuses everything.
    let port = free_port();
    let args: Vec<String> = vec![
        "--dev".into(),
        "--port".into(),
        port.to_string(),
        "--tender".into(),
        stand_in_tender().into(),
    ];
    let endpoint = Endpoint::spawn(cwd.path(), &args, port);
    endpoint.wait_for_stdout("petrel destroy hello --destination");
    assert!(
        endpoint.stdout().contains("(reused)"),
        "{}",
        endpoint.stdout()
    );
    assert_eq!(std::fs::read(dev.join("cacert.pem")).unwrap(), ca_before);
    assert_served(&endpoint, &ca);
    assert!(endpoint.stop().success());
}

#[test]
fn systemd_socket_activation_serves_the_passed_socket() {
    let ca = Ca::root_now("test-ca");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::server::server_certificate(&ca);
    std::fs::write(dir.path().join("cacert.pem"), ca.cert_pem()).unwrap();
    std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("server.key"), key.to_pem()).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    let mut child = Process::new("sh");
    child
        .arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$@\"")
        .arg("sh")
        .arg(endpoint_binary())
        .args([
            "cacert.pem",
            "server.pem",
            "server.key",
            "--systemd-socket-activation",
        ])
        .args(["--state-dir", "state", "--tender", stand_in_tender()])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls in the child between fork and exec, on a
    // descriptor we own. The listener must arrive as descriptor 3 without close-on-exec.
    unsafe {
        child.pre_exec(move || {
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = child.spawn().unwrap();
    drop(listener);
    let leaf = ca.leaf(Some("."), &policy_info());
    let frames = request(addr, &leaf.chain, &leaf.key, ca.cert()).unwrap();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].header, Header::new(0, name(":")));
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn start_up_errors_are_one_line_and_a_failure_exit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("garbage.pem"), "not a certificate").unwrap();
    let run = |args: &[&str]| {
        Process::new(endpoint_binary())
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let output = run(&[
        "missing.pem",
        "server.pem",
        "server.key",
        "--state-dir",
        "state",
    ]);
    assert!(!output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "petrel-endpoint: reading CA certificate missing.pem: missing.pem: No such file or \
         directory (os error 2)\n"
    );
    let output = run(&[
        "garbage.pem",
        "server.pem",
        "server.key",
        "--state-dir",
        "state",
    ]);
    assert!(!output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "petrel-endpoint: CA certificate garbage.pem: no CA certificate found\n"
    );
}
