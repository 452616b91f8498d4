//! The TLS side of the client: rustls with the ring provider, TLS 1.3 only, our chain
//! `[leaf, issuing CA…]` as client certificate, and the server authenticated against
//! `--server-ca` **and** the destination's name (Note T4 fixed). Errors are sorted into
//! albatross-client's exit codes by [`classify`].

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{AlertDescription, ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::ClientError;
use super::request::Destination;
use crate::pki::keys::PRIVATE_KEY_PEM;
use crate::pki::{Certificate, PrivateKey};

/// Time allowed for one TCP connection attempt (each resolved address gets this long).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Time allowed for the TLS handshake: the endpoint allows 60 s, enough for a chain
/// with an embedded multi-megabyte image over a slow link.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// Alerts a server sends when it does not accept our certificate (exit 119).
const CERTIFICATE_ALERTS: [AlertDescription; 8] = [
    AlertDescription::BadCertificate,
    AlertDescription::UnsupportedCertificate,
    AlertDescription::CertificateRevoked,
    AlertDescription::CertificateExpired,
    AlertDescription::CertificateUnknown,
    AlertDescription::UnknownCA,
    AlertDescription::AccessDenied,
    AlertDescription::CertificateRequired,
];

/// The rustls client configuration: TLS 1.3, server certificates verified against
/// `server_roots` (and, at connect time, the server name), `chain` presented with `key`.
pub fn client_config(
    server_roots: &[Certificate],
    chain: &[Certificate],
    key: &PrivateKey,
) -> Result<Arc<ClientConfig>, ClientError> {
    let mut roots = RootCertStore::empty();
    for cert in server_roots {
        roots
            .add(CertificateDer::from(cert.der().to_vec()))
            .map_err(|e| ClientError::usage(format!("--server-ca: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ClientError::usage(format!("--server-ca: {e}")))?;
    // rustls's `with_client_auth_cert` checks the key against the leaf by parsing the
    // leaf with webpki, which refuses certificates above 64 KiB — every leaf that embeds
    // an image. The key is checked with petrel's own parser instead.
    let leaf = chain
        .first()
        .ok_or_else(|| ClientError::usage("client certificate: empty chain".to_owned()))?;
    crate::pki::facts::check_key_matches(key, leaf.der())
        .map_err(|e| ClientError::usage(format!("client certificate: {e}")))?;
    let signing_key = provider
        .key_provider
        .load_private_key(pkcs8(key)?)
        .map_err(|e| ClientError::usage(format!("client certificate: {e}")))?;
    let chain = chain
        .iter()
        .map(|c| CertificateDer::from(c.der().to_vec()))
        .collect();
    let certified = SingleCertAndKey::from(CertifiedKey::new(chain, signing_key));
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Internal(e.to_string()))?
        .with_webpki_verifier(verifier)
        .with_client_cert_resolver(Arc::new(certified));
    Ok(Arc::new(config))
}

fn pkcs8(key: &PrivateKey) -> Result<PrivateKeyDer<'static>, ClientError> {
    let block = pem::parse(key.to_pem()).map_err(|e| ClientError::Internal(e.to_string()))?;
    if block.tag() != PRIVATE_KEY_PEM {
        return Err(ClientError::Internal("unexpected key encoding".to_owned()));
    }
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        block.into_contents(),
    )))
}

/// The name the server's certificate must carry: `--server-name` if given, otherwise the
/// destination's host (a DNS name or an IP address).
pub fn server_name(
    destination: &Destination,
    server_name: Option<&str>,
) -> Result<ServerName<'static>, ClientError> {
    let name = server_name.unwrap_or(&destination.host);
    ServerName::try_from(name.to_owned())
        .map_err(|_| ClientError::usage(format!("invalid server name {name:?}")))
}

/// Connects to `destination` (each resolved address in turn) and runs the handshake,
/// checking the server's certificate against `name`.
pub async fn connect(
    destination: &Destination,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> Result<TlsStream<TcpStream>, ClientError> {
    let connect_error = |reason: String| ClientError::Connect {
        destination: destination.to_string(),
        reason,
    };
    let addresses = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::lookup_host((destination.host.as_str(), destination.port)),
    )
    .await
    .map_err(|_| connect_error("name resolution timed out".to_owned()))?
    .map_err(|e| connect_error(e.to_string()))?;
    let mut last = "no address found".to_owned();
    let mut stream = None;
    for address in addresses {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(s)) => {
                stream = Some(s);
                break;
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "timed out".to_owned(),
        }
    }
    let stream = stream.ok_or_else(|| connect_error(last))?;
    // Small frames (chunk headers) should not wait for Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TlsConnector::from(config).connect(name, stream),
    )
    .await
    .map_err(|_| ClientError::Communication("TLS handshake timed out".to_owned()))?
    .map_err(|e| classify(&e, "TLS handshake"))
}

/// The client error for an I/O error on the TLS connection: a certificate problem of the
/// server (120), a TLS alert about our certificate (119), anything else a communication
/// failure (121) described with `context`.
pub fn classify(error: &io::Error, context: &str) -> ClientError {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => classify_tls(tls, context),
        None => ClientError::Communication(format!("{context}: {error}")),
    }
}

fn classify_tls(error: &rustls::Error, context: &str) -> ClientError {
    match error {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            ClientError::ServerAuthentication(error.to_string())
        }
        rustls::Error::AlertReceived(alert) if CERTIFICATE_ALERTS.contains(alert) => {
            ClientError::CertificateRejected(error.to_string())
        }
        other => ClientError::Communication(format!("{context}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Exit;

    #[test]
    fn classification() {
        let tls = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let cases = [
            (
                tls(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName,
                )),
                Exit::ServerAuthentication,
            ),
            (
                tls(rustls::Error::AlertReceived(AlertDescription::UnknownCA)),
                Exit::CertificateRejected,
            ),
            (
                tls(rustls::Error::AlertReceived(
                    AlertDescription::CertificateExpired,
                )),
                Exit::CertificateRejected,
            ),
            (
                tls(rustls::Error::AlertReceived(
                    AlertDescription::ProtocolVersion,
                )),
                Exit::Communication,
            ),
            (
                io::Error::from(io::ErrorKind::ConnectionReset),
                Exit::Communication,
            ),
        ];
        for (error, exit) in cases {
            assert_eq!(classify(&error, "reading").exit(), exit, "{error}");
        }
        assert_eq!(
            classify(&io::Error::from(io::ErrorKind::BrokenPipe), "writing").to_string(),
            "writing: broken pipe"
        );
        assert_eq!(
            classify(
                &tls(rustls::Error::AlertReceived(
                    AlertDescription::BadCertificate
                )),
                "reading"
            )
            .to_string(),
            "the server rejected our certificate: received fatal alert: BadCertificate"
        );
    }

    #[test]
    fn server_names() {
        let d = Destination::parse("127.0.0.1:1025").unwrap();
        assert_eq!(
            server_name(&d, None).unwrap(),
            ServerName::IpAddress("127.0.0.1".parse::<std::net::IpAddr>().unwrap().into())
        );
        assert_eq!(
            server_name(&d, Some("host.example")).unwrap(),
            ServerName::try_from("host.example").unwrap()
        );
        assert_eq!(
            server_name(&d, Some("a b")).unwrap_err().to_string(),
            "invalid server name \"a b\""
        );
    }

    #[test]
    fn a_leaf_above_64_kib_is_presented_and_a_foreign_key_refused() {
        use crate::pki::{
            CaIssuer, CertificateTemplate, Criticality, KeyType, Profile, Serial, Subject, Validity,
        };
        let now = time::OffsetDateTime::from_unix_timestamp(1_748_779_200).unwrap();
        let mut rng = rand::thread_rng();
        let ca_key = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let validity = Validity {
            now,
            duration: Duration::from_secs(3600),
        };
        let root =
            crate::pki::cert::root_ca("ca", &ca_key, validity, Serial::random(&mut rng)).unwrap();
        let issuer = CaIssuer::new(vec![root.clone()], ca_key).unwrap();
        let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
        // An embedded image makes the leaf larger than webpki parses.
        let extension = vec![0x42; 200 * 1024];
        let template = CertificateTemplate {
            profile: Profile::Leaf,
            subject: Subject::CommonName("big"),
            public_key: key.public_key(),
            albatross: Some(&extension),
            albatross_criticality: Criticality::NonCritical,
            alt_names: &[],
            validity,
            serial: Serial::random(&mut rng),
        };
        let leaf = crate::pki::cert::issue(&template, &issuer).unwrap();
        assert!(leaf.der().len() > 200 * 1024);
        let chain = [leaf];
        assert!(client_config(std::slice::from_ref(&root), &chain, &key).is_ok());
        let other = PrivateKey::generate(KeyType::Ed25519).unwrap();
        assert_eq!(
            client_config(&[root], &chain, &other)
                .unwrap_err()
                .to_string(),
            "client certificate: Public key of certificate doesn't match private key"
        );
    }
}
