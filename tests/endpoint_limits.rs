//! Limits of the real `petrel-endpoint` binary over real TLS on loopback: the client
//! certificate size limit, stalled and idle peers, the connection limit, the console
//! limits.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::pki::Ca;
use common::server::Endpoint;
use common::tls_client::{Client, ClientError, request};
use petrel::codec::{
    Command, ConsoleCmd, Data, Header, Payload, PolicyCmd, SinceCount, UnikernelCmd,
    UnikernelConfig,
};
use petrel::executor::manifest::{Target, build_test_image};
use petrel::name::Name;
use rand::RngCore;

fn policy_info() -> Command {
    Command::Policy(PolicyCmd::Info)
}

/// A create whose leaf embeds `size` octets of incompressible image.
fn create_embedding(size: usize) -> Command {
    let mut image = vec![0u8; size];
    rand::thread_rng().fill_bytes(&mut image);
    Command::Unikernel(UnikernelCmd::Create(UnikernelConfig {
        image,
        ..UnikernelConfig::default()
    }))
}

/// A request the endpoint answers whatever the executor says: one final frame about `:`.
fn assert_served(endpoint: &Endpoint, ca: &Ca) {
    let leaf = ca.leaf(Some("."), &policy_info());
    let frames = request(endpoint.addr, &leaf.chain, &leaf.key, ca.cert()).unwrap();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].header, Header::new(0, Name::root()));
}

#[test]
fn chains_up_to_the_limit_pass_and_larger_ones_are_cut_from_the_message_header() {
    let ca = Ca::root_now("test-ca");
    let endpoint = Endpoint::start(&ca, &["--max-chain-size", "1048576"]);

    // Within the limit: a 600 KiB image embedded in the leaf reaches the executor.
    let leaf = ca.leaf(Some("fits"), &create_embedding(600 * 1024));
    let frames = request(endpoint.addr, &leaf.chain, &leaf.key, ca.cert()).unwrap();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(
        frames[0].header,
        Header::new(0, Name::parse(":fits").unwrap())
    );

    // Beyond it: OpenSSL refuses the Certificate message from its length, before reading
    // its body ("excessive message size"), so nothing of it is buffered.
    let leaf = ca.leaf(Some("big"), &create_embedding(4 * 1024 * 1024));
    let result = request(endpoint.addr, &leaf.chain, &leaf.key, ca.cert());
    assert!(result.is_err(), "{result:?}");
    endpoint.wait_for_log("outcome=handshake error: excessive message size");
    assert_served(&endpoint, &ca);
}

#[test]
fn the_default_limit_accepts_a_leaf_embedding_a_2_mib_image() {
    let ca = Ca::root_now("test-ca");
    let endpoint = Endpoint::start(&ca, &[]);
    let leaf = ca.leaf(Some("big"), &create_embedding(2 * 1024 * 1024));
    assert!(leaf.cert.der().len() > 2 * 1024 * 1024);
    let frames = request(endpoint.addr, &leaf.chain, &leaf.key, ca.cert()).unwrap();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(
        frames[0].header,
        Header::new(0, Name::parse(":big").unwrap())
    );
    let record = &endpoint.audit(1)[0];
    assert_eq!(record["command"], "unikernel create");
    assert_eq!(record["name"], ":big");
}

#[test]
fn idle_and_stalled_peers_do_not_keep_a_legitimate_client_out() {
    let ca = Ca::root_now("test-ca");
    let endpoint = Endpoint::start(
        &ca,
        &[
            "--max-handshakes",
            "4",
            "--handshake-timeout",
            "2",
            "--first-byte-timeout",
            "60",
        ],
    );
    // Hundreds of peers that connect and say nothing: they hold no handshake slot.
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(endpoint.addr).unwrap())
        .collect();
    assert_served(&endpoint, &ca);

    // Twice as many stalled handshakes as there are slots: the start of a TLS record,
    // then nothing. They time out two at a time per slot; the legitimate client, queued
    // behind them, gets its turn.
    let stalled: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(endpoint.addr).unwrap();
            s.write_all(&[0x16, 0x03, 0x01]).unwrap();
            s
        })
        .collect();
    assert_served(&endpoint, &ca);
    endpoint.wait_for_log("outcome=handshake error: handshake timeout (2 s)");
    drop(stalled);
    drop(idle);
}

#[test]
fn connections_beyond_the_limit_are_closed_at_once() {
    let ca = Ca::root_now("test-ca");
    let endpoint = Endpoint::start(
        &ca,
        &["--max-connections", "3", "--first-byte-timeout", "60"],
    );
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(endpoint.addr).unwrap())
        .collect();
    let mut extra = TcpStream::connect(endpoint.addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut octet = [0u8; 1];
    assert_eq!(extra.read(&mut octet).unwrap(), 0, "closed without a word");
    endpoint.wait_for_log("connections refused at the connection limit");

    // Once the held connections go, the server serves again.
    drop(held);
    let leaf = ca.leaf(Some("."), &policy_info());
    let mut attempts = 0;
    loop {
        match request(endpoint.addr, &leaf.chain, &leaf.key, ca.cert()) {
            Ok(frames) => {
                assert_eq!(frames.len(), 1, "{frames:?}");
                break;
            }
            Err(ClientError(e)) => {
                attempts += 1;
                assert!(attempts < 200, "still refused: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn console_history_and_subscribers_follow_their_flags() {
    let ca = Ca::root_now("test");
    let endpoint = Endpoint::start(
        &ca,
        &["--console-lines", "3", "--max-console-subscribers", "1"],
    );
    let create = Command::Unikernel(UnikernelCmd::Create(UnikernelConfig {
        image: build_test_image(Target::Hvt, 2, &[]),
        memory: 16,
        arguments: Some(vec!["--lines=10".to_owned(), "--wait".to_owned()]),
        ..UnikernelConfig::default()
    }));
    let leaf = ca.leaf(Some("talk"), &create);
    let frames = request(endpoint.addr, &leaf.chain, &leaf.key, ca.cert()).unwrap();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(
        frames[0].payload,
        Payload::success_string("created unikernel")
    );

    let subscribe = ca.leaf(
        Some("talk"),
        &Command::Console(ConsoleCmd::Subscribe(SinceCount::Count(10))),
    );
    let console_line = |client: &mut Client| match client.read_frame().unwrap().unwrap().payload {
        Payload::Data(Data::Console { line, .. }) => line,
        other => panic!("{other:?}"),
    };
    // The first subscriber follows until the tender has printed its ten lines.
    let mut first =
        Client::connect(endpoint.addr, &subscribe.chain, &subscribe.key, ca.cert()).unwrap();
    assert_eq!(
        first.read_frame().unwrap().unwrap().payload,
        Payload::success_string("subscribed")
    );
    while console_line(&mut first) != "line 10" {}

    // A second one gets the last three lines only (--console-lines 3) and replaces the
    // first (--max-console-subscribers 1), which is told so.
    let mut second =
        Client::connect(endpoint.addr, &subscribe.chain, &subscribe.key, ca.cert()).unwrap();
    assert_eq!(
        second.read_frame().unwrap().unwrap().payload,
        Payload::success_string("subscribed")
    );
    let history: Vec<String> = (0..3).map(|_| console_line(&mut second)).collect();
    assert_eq!(history, ["line 8", "line 9", "line 10"]);
    assert_eq!(
        first.read_frame().unwrap().unwrap().payload,
        Payload::failure(
            "subscription replaced by a newer one (at most 1 subscribers per console)"
        )
    );
    second.drop_connection();
}
