//! A small TLS 1.3 test server (rustls) standing in for the endpoint in the client's
//! tests: it accepts one connection, verifies the client's chain against a CA, records the
//! chain presented and the raw chunks streamed after the handshake, answers with scripted
//! frames and closes (with close_notify).

use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use petrel::codec::{Wire, encode_wire, frame};

/// How long the server waits for the client before giving up (a guard against a test
/// that never connects, not a timing assertion).
const ACCEPT_GUARD: Duration = Duration::from_secs(60);

/// Largest raw chunk the test server accepts.
const MAX_CHUNK: usize = 1024 * 1024;

/// What the server saw.
#[derive(Debug, Default)]
pub struct Observed {
    /// The certificates the client presented, leaf first (DER).
    pub chain: Vec<Vec<u8>>,
    /// The raw chunks streamed after the handshake (without the terminator).
    pub chunks: Vec<Vec<u8>>,
    /// Whether the zero-length terminator arrived.
    pub terminated: bool,
    /// Why the handshake failed, if it did.
    pub handshake_error: Option<String>,
}

/// The server's identity and whom it accepts.
pub struct Identity {
    /// The server certificate chain, PEM.
    pub cert_pem: String,
    /// The server's key, PEM PKCS#8.
    pub key_pem: String,
    /// The CA certificate client chains must verify against, PEM.
    pub client_ca_pem: String,
}

/// A running one-connection server.
pub struct TestServer {
    /// The port on 127.0.0.1.
    pub port: u16,
    thread: JoinHandle<Observed>,
}

impl TestServer {
    /// Starts the server: after the handshake it reads a chunk stream if `read_chunks`,
    /// then sends `replies` (each framed) and closes.
    pub fn start(identity: &Identity, read_chunks: bool, replies: Vec<Wire>) -> Self {
        let raw = replies
            .iter()
            .map(|w| frame(&encode_wire(w)).unwrap())
            .collect();
        Self::start_raw(identity, read_chunks, raw)
    }

    /// As [`TestServer::start`], with the bytes of each reply given as is.
    pub fn start_raw(identity: &Identity, read_chunks: bool, replies: Vec<Vec<u8>>) -> Self {
        let config = Arc::new(server_config(identity));
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(serve(listener, config, read_chunks, replies))
        });
        Self { port, thread }
    }

    /// The destination argument for the client.
    pub fn destination(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits for the connection to end and returns what the server saw.
    pub fn observed(self) -> Observed {
        self.thread.join().unwrap()
    }
}

fn server_config(identity: &Identity) -> ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in pem::parse_many(&identity.client_ca_pem).unwrap() {
        roots
            .add(CertificateDer::from(cert.into_contents()))
            .unwrap();
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let chain = pem::parse_many(&identity.cert_pem)
        .unwrap()
        .into_iter()
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        pem::parse(&identity.key_pem).unwrap().into_contents(),
    ));
    ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap()
}

async fn serve(
    listener: StdListener,
    config: Arc<ServerConfig>,
    read_chunks: bool,
    replies: Vec<Vec<u8>>,
) -> Observed {
    let listener = TcpListener::from_std(listener).unwrap();
    let mut observed = Observed::default();
    let Ok(Ok((tcp, _))) = tokio::time::timeout(ACCEPT_GUARD, listener.accept()).await else {
        observed.handshake_error = Some("no connection".to_owned());
        return observed;
    };
    let mut tls = match TlsAcceptor::from(config).accept(tcp).await {
        Ok(tls) => tls,
        Err(e) => {
            observed.handshake_error = Some(e.to_string());
            return observed;
        }
    };
    observed.chain = tls
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.to_vec())
        .collect();
    if read_chunks {
        loop {
            let mut header = [0u8; 4];
            if tls.read_exact(&mut header).await.is_err() {
                break;
            }
            let len = u32::from_be_bytes(header) as usize;
            if len == 0 {
                observed.terminated = true;
                break;
            }
            assert!(len <= MAX_CHUNK, "chunk of {len} octets");
            let mut chunk = vec![0u8; len];
            if tls.read_exact(&mut chunk).await.is_err() {
                break;
            }
            observed.chunks.push(chunk);
        }
    }
    for reply in replies {
        if tls.write_all(&reply).await.is_err() {
            break;
        }
    }
    let _ = tls.shutdown().await;
    observed
}
