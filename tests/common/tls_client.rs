//! A small blocking TLS 1.3 client built on OpenSSL (not petrel's rustls client), for
//! talking to an endpoint in tests: present a chain and key, send raw chunks, read and
//! decode frames.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use openssl::pkey::PKey;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslMethod, SslMode, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;
use petrel::codec::{self, FrameLength, Wire};
use petrel::pki::{Certificate, PrivateKey};

/// How long a test waits for the server before giving up (a safety net, not a
/// measurement).
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest frame the client reads.
pub const MAX_READ_FRAME: usize = 64 * 1024 * 1024;

/// A connected client.
pub struct Client {
    stream: SslStream<TcpStream>,
}

/// Why a client operation failed: the TLS reason (e.g. an alert the server sent) or the
/// I/O error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError(pub String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn ssl_error(e: &openssl::ssl::Error) -> ClientError {
    if let Some(reason) = e
        .ssl_error()
        .and_then(|s| s.errors().first())
        .and_then(|e| e.reason())
    {
        return ClientError(reason.to_owned());
    }
    if let Some(io) = e.io_error() {
        return ClientError(format!("io: {:?}", io.kind()));
    }
    match e.code() {
        ErrorCode::ZERO_RETURN | ErrorCode::SYSCALL => ClientError("closed".to_owned()),
        code => ClientError(format!("ssl error {}", code.as_raw())),
    }
}

/// The client context: TLS 1.3, the chain and key, the server verified against
/// `server_ca` (no host name check, as albatross-client).
pub fn context(chain: &[Certificate], key: &PrivateKey, server_ca: &Certificate) -> SslContext {
    let mut builder = SslContext::builder(SslMethod::tls_client()).unwrap();
    builder
        .set_min_proto_version(Some(SslVersion::TLS1_3))
        .unwrap();
    builder
        .set_max_proto_version(Some(SslVersion::TLS1_3))
        .unwrap();
    let (leaf, rest) = chain.split_first().unwrap();
    builder
        .set_certificate(&X509::from_der(leaf.der()).unwrap())
        .unwrap();
    for cert in rest {
        builder
            .add_extra_chain_cert(X509::from_der(cert.der()).unwrap())
            .unwrap();
    }
    builder
        .set_private_key(&PKey::private_key_from_pem(key.to_pem().as_bytes()).unwrap())
        .unwrap();
    let mut store = X509StoreBuilder::new().unwrap();
    store
        .add_cert(X509::from_der(server_ca.der()).unwrap())
        .unwrap();
    builder.set_cert_store(store.build());
    builder.set_verify(SslVerifyMode::PEER);
    // Send exactly the chain given, not one OpenSSL completes from the store.
    builder.set_mode(SslMode::NO_AUTO_CHAIN);
    builder.build()
}

impl Client {
    /// Connects to `addr` and completes the handshake. With TLS 1.3 the server's verdict
    /// on the client certificate arrives after this returns: a refusal shows on the
    /// first read.
    pub fn connect(
        addr: SocketAddr,
        chain: &[Certificate],
        key: &PrivateKey,
        server_ca: &Certificate,
    ) -> Result<Self, ClientError> {
        let tcp = TcpStream::connect(addr).map_err(|e| ClientError(format!("connect: {e}")))?;
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let ssl = Ssl::new(&context(chain, key, server_ca)).unwrap();
        let stream = ssl.connect(tcp).map_err(|e| match e {
            openssl::ssl::HandshakeError::Failure(mid) => ssl_error(mid.error()),
            openssl::ssl::HandshakeError::SetupFailure(e) => ClientError(e.to_string()),
            openssl::ssl::HandshakeError::WouldBlock(_) => ClientError("would block".into()),
        })?;
        Ok(Self { stream })
    }

    /// Writes octets as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush())
            .map_err(|e| ClientError(format!("write: {e}")))
    }

    /// Sends one raw chunk (length prefix + data).
    pub fn send_chunk(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.send_raw(&codec::frame(data).unwrap())
    }

    /// Sends the zero-length terminator.
    pub fn send_end(&mut self) -> Result<(), ClientError> {
        self.send_raw(&codec::END_OF_STREAM)
    }

    /// Reads exactly `buf.len()` octets; `Ok(false)` on a clean end before the first one.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<bool, ClientError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.stream.ssl_read(&mut buf[filled..]) {
                Ok(0) => return Err(ClientError("closed".to_owned())),
                Ok(n) => filled += n,
                Err(e) if e.code() == ErrorCode::ZERO_RETURN && filled == 0 => return Ok(false),
                Err(e) => return Err(ssl_error(&e)),
            }
        }
        Ok(true)
    }

    /// Reads the next frame; `None` when the server closed (close_notify).
    pub fn read_frame(&mut self) -> Result<Option<Wire>, ClientError> {
        let mut header = [0u8; 4];
        if !self.read_exact(&mut header)? {
            return Ok(None);
        }
        match codec::decode_frame_header(header, MAX_READ_FRAME) {
            Ok(FrameLength::EndOfStream) => Ok(None),
            Ok(FrameLength::Body(len)) => {
                let mut body = vec![0u8; len];
                if !self.read_exact(&mut body)? {
                    return Err(ClientError("closed inside a frame".to_owned()));
                }
                codec::decode_wire(&body)
                    .map(Some)
                    .map_err(|e| ClientError(format!("decode: {e}")))
            }
            Err(e) => Err(ClientError(format!("frame: {e}"))),
        }
    }

    /// Reads frames until the server closes.
    pub fn read_all(&mut self) -> Result<Vec<Wire>, ClientError> {
        let mut frames = Vec::new();
        while let Some(frame) = self.read_frame()? {
            frames.push(frame);
        }
        Ok(frames)
    }

    /// Sends close_notify.
    pub fn close(mut self) {
        let _ = self.stream.shutdown();
    }

    /// Closes the TCP connection abruptly (no close_notify).
    pub fn drop_connection(self) {
        let _ = self.stream.get_ref().shutdown(std::net::Shutdown::Both);
    }

    /// Reads raw octets (for checking that nothing more arrives).
    pub fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, ClientError> {
        self.stream
            .read(buf)
            .map_err(|e| ClientError(e.to_string()))
    }
}

/// Connects, sends nothing more, and reads every frame the server sends.
pub fn request(
    addr: SocketAddr,
    chain: &[Certificate],
    key: &PrivateKey,
    server_ca: &Certificate,
) -> Result<Vec<Wire>, ClientError> {
    let mut client = Client::connect(addr, chain, key, server_ca)?;
    client.read_all()
}
