//! A remote command (`spec/tls-endpoint.md` §5): check the request against the issuing
//! CA's policy, make a fresh key and a 300-second leaf carrying the command, validate the
//! chain locally against `--server-ca`, connect, stream the image or block data, read and
//! print the replies. [`run_certificate`] does the same with an existing signed chain.

use std::path::PathBuf;

use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::ca::{profile_for, read_certificates};
use super::reply::{self, Format, Printer};
use super::request::{
    DEFAULT_COMPRESSION_LEVEL, Destination, ReplyMode, StreamKind, ca_policy, request_common_name,
};
use super::upload::{self, ProgressMode, Upload, UploadError};
use super::{ClientError, read_bounded, tls};
use crate::codec::{self, Command};
use crate::limits::MAX_IMAGE_SIZE;
use crate::name::Name;
use crate::pki::cert::{self, CaIssuer, Certificate, CertificateTemplate, Criticality, Serial};
use crate::pki::{CommonName, KeyType, PrivateKey, Profile, Subject, Validity, keys};
use crate::verify::{MAX_CA_FILE_SIZE, TrustAnchors};

/// Largest leaf certificate made (albatross-client's limit: a TLS Certificate message
/// carries each certificate with a 24-bit length).
pub const MAX_LEAF_SIZE: usize = 1 << 24;

/// Text when the leaf would be larger than [`MAX_LEAF_SIZE`] (albatross-client's words).
pub const LEAF_TOO_BIG: &str = "certificate too big for TLS";

/// Destination that prints the chain instead of connecting (albatross-client's `-`).
pub const PRINT_ONLY: &str = "-";

/// The CA that issues the leaf (`--ca`, `--ca-key`) and the type of the leaf's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuing {
    /// The issuing CA's certificate, followed by the rest of its chain.
    pub ca: PathBuf,
    /// The issuing CA's key.
    pub ca_key: PathBuf,
    /// Type of the fresh key of the leaf.
    pub key_type: KeyType,
}

/// Where to connect and how to authenticate the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// `--destination`.
    pub destination: Destination,
    /// `--server-ca`: trust anchors for the server's certificate (and, as in
    /// albatross-client, for the local check of our own chain).
    pub server_ca: PathBuf,
    /// `--server-name`: the name the server's certificate must carry, instead of the
    /// destination's host.
    pub server_name: Option<String>,
}

/// How results are shown.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Output {
    /// Text or JSON.
    pub format: Format,
    /// Where a block dump goes (required for block dump).
    pub dump_to: Option<PathBuf>,
}

/// A request: what the leaf carries and what is streamed after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The name the command is about (relative to the issuing CA's path).
    pub name: Name,
    /// The command.
    pub command: Command,
    /// The file streamed after the handshake, for commands that stream.
    pub upload: Option<Upload>,
}

/// A leaf made for one request, with its key and the chain to present.
#[derive(Debug)]
pub struct PreparedChain {
    /// `[leaf, --ca certificates…]`.
    pub chain: Vec<Certificate>,
    /// The leaf's fresh key.
    pub key: PrivateKey,
}

/// Makes the leaf for `request` (§5 steps 1–3): the CA's key must match its certificate,
/// the command must pass the pre-checks against the CA's policy (§7.6), the leaf is a
/// [`Profile::DestinationLeaf`] valid for 300 s with CN as in §4.2, at most
/// [`MAX_LEAF_SIZE`] octets.
pub fn prepare(
    issuing: &Issuing,
    name: &Name,
    command: &Command,
    now: OffsetDateTime,
) -> Result<PreparedChain, ClientError> {
    let ca_chain = read_certificates(&issuing.ca)?;
    let ca_key = keys::load_key_file(&issuing.ca_key)?;
    let issuer = CaIssuer::new(ca_chain, ca_key)?;
    prepare_with(&issuer, name, command, issuing.key_type, now)
}

/// [`prepare`] with an issuer already at hand.
pub fn prepare_with(
    issuer: &CaIssuer,
    name: &Name,
    command: &Command,
    key_type: KeyType,
    now: OffsetDateTime,
) -> Result<PreparedChain, ClientError> {
    let policy = ca_policy(issuer.facts())?;
    profile_for(Some(command), policy.as_ref())?;
    let common_name = request_common_name(command, name)?;
    let key = PrivateKey::generate(key_type)?;
    let extension = codec::encode_extension(command);
    let template = CertificateTemplate {
        profile: Profile::DestinationLeaf,
        subject: Subject::CommonName(&common_name),
        public_key: key.public_key(),
        albatross: Some(&extension),
        albatross_criticality: Criticality::NonCritical,
        alt_names: &[],
        validity: Validity::for_profile(now, Profile::DestinationLeaf),
        serial: Serial::random(&mut rand::thread_rng()),
    };
    let leaf = cert::issue(&template, issuer)?;
    if leaf.der().len() > MAX_LEAF_SIZE {
        return Err(ClientError::usage(LEAF_TOO_BIG));
    }
    let mut chain = vec![leaf];
    chain.extend(issuer.chain().iter().cloned());
    Ok(PreparedChain { chain, key })
}

/// Runs `request` against the endpoint: prepare the leaf, validate the chain locally,
/// connect, stream, read and print the replies to stdout/stderr.
pub fn run(
    issuing: &Issuing,
    connection: &Connection,
    request: &Request,
    output: &Output,
) -> Result<(), ClientError> {
    let now = crate::pki::now_utc();
    let prepared = prepare(issuing, &request.name, &request.command, now)?;
    exchange(
        connection,
        &prepared,
        &request.command,
        request.upload.as_ref(),
        output,
        now,
    )
}

/// What `certificate CERT KEY` sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRequest {
    /// The chain file, leaf first (e.g. `<CN>.pem` from `sign`).
    pub chain: PathBuf,
    /// The leaf's key.
    pub key: PathBuf,
    /// The file streamed after the handshake, if the leaf's command streams one
    /// (compressed with level 9 if the command says the stream is compressed).
    pub data: Option<PathBuf>,
    /// Whether a progress line is printed while streaming.
    pub progress: ProgressMode,
}

/// `certificate CERT KEY`: connects with an existing chain (made by `sign`) and reads the
/// replies its leaf's command calls for (a block dump goes to `output.dump_to`, or to
/// [`default_dump_file`]).
pub fn run_certificate(
    connection: &Connection,
    request: &CertificateRequest,
    output: &Output,
) -> Result<(), ClientError> {
    let chain = read_certificates(&request.chain)?;
    let key = keys::load_key_file(&request.key)?;
    let leaf = chain
        .first()
        .ok_or_else(|| ClientError::usage("no certificate in the chain file"))?;
    let facts = leaf.facts().map_err(crate::pki::PkiError::from)?;
    if !facts.public_key.same_key(key.public_key()) {
        return Err(crate::pki::PkiError::KeyMismatch.into());
    }
    let Some(ext) = facts.albatross.first() else {
        return Err(ClientError::usage(
            "leaf certificate does not contain an albatross extension",
        ));
    };
    let command = codec::decode_extension(&ext.value)
        .map_err(|e| ClientError::usage(format!("couldn't parse albatross extension: {e}")))?
        .command;
    let compressed = match StreamKind::of(&command) {
        StreamKind::Image { compressed } | StreamKind::BlockData { compressed } => compressed,
        StreamKind::None | StreamKind::Crl => false,
    };
    let upload = request.data.as_ref().map(|path| Upload {
        path: path.clone(),
        level: if compressed {
            DEFAULT_COMPRESSION_LEVEL
        } else {
            0
        },
        progress: request.progress,
    });
    let now = crate::pki::now_utc();
    let mut output = output.clone();
    if ReplyMode::of(&command) == ReplyMode::Dump && output.dump_to.is_none() {
        let name = match &facts.common_name {
            CommonName::One(cn) => Name::parse(cn).unwrap_or_else(|_| Name::root()),
            _ => Name::root(),
        };
        output.dump_to = Some(default_dump_file(&name, now));
    }
    let prepared = PreparedChain { chain, key };
    exchange(
        connection,
        &prepared,
        &command,
        upload.as_ref(),
        &output,
        now,
    )
}

/// albatross-client's block dump file: `<temporary directory>/<name><RFC 3339 time>`.
pub fn default_dump_file(name: &Name, now: OffsetDateTime) -> PathBuf {
    let time = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    std::env::temp_dir().join(format!("{}{time}", name.text()))
}

/// The stream `command` calls for, checked against what the caller gives.
fn check_upload(command: &Command, upload: Option<&Upload>) -> Result<(), ClientError> {
    let expected = match StreamKind::of(command) {
        StreamKind::None => None,
        StreamKind::Image { compressed } => Some(("image", compressed)),
        StreamKind::BlockData { compressed } => Some(("block data", compressed)),
        StreamKind::Crl => Some(("CRL", false)),
    };
    match (expected, upload) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(ClientError::usage(format!(
            "the command {command} streams no data after the handshake"
        ))),
        (Some((what, _)), None) => Err(ClientError::usage(format!(
            "the command {command} streams the {what} after the handshake: give the file with --data"
        ))),
        (Some((what, compressed)), Some(u)) => {
            if compressed != (u.level > 0) {
                return Err(ClientError::Internal(format!(
                    "the {what} stream's compression does not match the command"
                )));
            }
            let size = std::fs::metadata(&u.path)
                .map_err(|e| ClientError::io(&u.path, e))?
                .len();
            if what == "image" && size > MAX_IMAGE_SIZE {
                return Err(ClientError::usage(format!(
                    "{}: image of {size} octets exceeds the limit of {MAX_IMAGE_SIZE} octets",
                    u.path.display()
                )));
            }
            Ok(())
        }
    }
}

fn exchange(
    connection: &Connection,
    prepared: &PreparedChain,
    command: &Command,
    upload: Option<&Upload>,
    output: &Output,
    now: OffsetDateTime,
) -> Result<(), ClientError> {
    check_upload(command, upload)?;
    let server_ca = read_bounded(
        &connection.server_ca,
        u64::try_from(MAX_CA_FILE_SIZE).unwrap_or(u64::MAX),
    )?;
    let anchors = TrustAnchors::from_pem(&server_ca)
        .map_err(|e| ClientError::usage(format!("{}: {e}", connection.server_ca.display())))?;
    anchors
        .verify(&prepared.chain, now.unix_timestamp())
        .map_err(|e| ClientError::LocalChain(e.to_string()))?;

    if connection.destination.host == PRINT_ONLY {
        let pem: String = prepared.chain.iter().map(Certificate::pem).collect();
        print!("{pem}");
        return Ok(());
    }

    let config = tls::client_config(&anchors.certificates(), &prepared.chain, &prepared.key)?;
    let name = tls::server_name(&connection.destination, connection.server_name.as_deref())?;
    let mode = ReplyMode::of(command);
    let mut printer = Printer::new(output.format, std::io::stdout(), std::io::stderr());
    printer.clear_between_tables(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if mode == ReplyMode::Dump {
        let path = output
            .dump_to
            .as_ref()
            .ok_or_else(|| ClientError::Internal("block dump without an output file".into()))?;
        printer.dump_to(path)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Internal(e.to_string()))?;
    let result = runtime.block_on(async {
        let mut stream = tls::connect(&connection.destination, config, name).await?;
        let result = talk(&mut stream, upload, mode, &mut printer).await;
        let _ = stream.shutdown().await;
        result
    });
    if result.is_err() {
        printer.discard_dump();
    }
    result
}

/// After the handshake: stream the upload, then read the replies.
async fn talk<S, W, E>(
    stream: &mut S,
    upload: Option<&Upload>,
    mode: ReplyMode,
    printer: &mut Printer<W, E>,
) -> Result<(), ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    W: std::io::Write,
    E: std::io::Write,
{
    if let Some(upload) = upload {
        match upload::send(stream, upload).await {
            Ok(_) => {}
            Err(UploadError::Read(e)) => return Err(e),
            Err(UploadError::Write(e)) => {
                // The server may have refused us (a TLS alert) or answered early with a
                // failure before closing; either explains the failed write better.
                return match reply::read_frame(stream).await {
                    Err(read) if read.exit() != super::Exit::Communication => Err(read),
                    Ok(Some(wire)) => match wire.payload {
                        codec::Payload::Failure(text) => Err(ClientError::RemoteFailure(text)),
                        _ => Err(tls::classify(&e, "sending data")),
                    },
                    _ => Err(tls::classify(&e, "sending data")),
                };
            }
        }
    }
    reply::read_replies(stream, mode, printer).await
}

/// The progress mode for `--progress`.
pub fn progress_mode(always: bool) -> ProgressMode {
    if always {
        ProgressMode::Always
    } else {
        ProgressMode::Auto
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{PolicyCmd, UnikernelCmd, UnikernelConfig};
    use crate::pki::cert::root_ca;
    use crate::policy::Policy;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_748_779_200).unwrap()
    }

    fn issuer_with_policy(policy: Option<&Policy>) -> CaIssuer {
        let root_key = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let validity = Validity::for_profile(now(), Profile::RootCa);
        let root = root_ca(
            "root",
            &root_key,
            validity,
            Serial::random(&mut rand::thread_rng()),
        )
        .unwrap();
        let root = CaIssuer::new(vec![root], root_key).unwrap();
        let Some(policy) = policy else {
            return root;
        };
        let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let ext = codec::encode_extension(&Command::Policy(PolicyCmd::Add(policy.clone())));
        let template = CertificateTemplate {
            profile: Profile::IntermediateCa,
            subject: Subject::CommonName("user"),
            public_key: key.public_key(),
            albatross: Some(&ext),
            albatross_criticality: Criticality::NonCritical,
            alt_names: &[],
            validity: Validity::for_profile(now(), Profile::IntermediateCa),
            serial: Serial::random(&mut rand::thread_rng()),
        };
        let cert = cert::issue(&template, &root).unwrap();
        CaIssuer::new(vec![cert], key).unwrap()
    }

    #[test]
    fn destination_leaf() {
        let issuer = issuer_with_policy(None);
        let command = Command::Unikernel(UnikernelCmd::Info);
        let prepared = prepare_with(
            &issuer,
            &Name::parse("web").unwrap(),
            &command,
            KeyType::P256,
            now(),
        )
        .unwrap();
        assert_eq!(prepared.chain.len(), 2);
        let facts = prepared.chain[0].facts().unwrap();
        assert_eq!(facts.common_name, crate::pki::CommonName::One("web".into()));
        assert_eq!(facts.not_after - facts.not_before, 310);
        assert_eq!(facts.not_after, now().unix_timestamp() + 300);
        assert!(facts.public_key.same_key(prepared.key.public_key()));
        assert_eq!(
            codec::decode_extension(&facts.albatross[0].value)
                .unwrap()
                .command,
            command
        );
        assert_eq!(prepared.chain[1], *issuer.certificate());
    }

    #[test]
    fn pre_checks_against_the_ca_policy() {
        let policy = Policy {
            unikernels: 1,
            cpuids: [0].into(),
            memory: 64,
            block: None,
            bridges: Default::default(),
        };
        let issuer = issuer_with_policy(Some(&policy));
        let create = Command::Unikernel(UnikernelCmd::Create(UnikernelConfig {
            memory: 128,
            ..UnikernelConfig::default()
        }));
        let name = Name::parse("web").unwrap();
        let error = prepare_with(&issuer, &name, &create, KeyType::Ed25519, now()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "128 MB memory assigned to unikernel exceeds policy (64MB)"
        );
        assert_eq!(error.exit().code(), 124);
        let error = prepare_with(
            &issuer,
            &Name::parse("a:web").unwrap(),
            &Command::Unikernel(UnikernelCmd::Destroy),
            KeyType::Ed25519,
            now(),
        )
        .unwrap_err();
        assert_eq!(error.to_string(), "non-empty path");
    }

    #[test]
    fn oversized_leaf_is_refused() {
        let issuer = issuer_with_policy(None);
        let create = Command::Unikernel(UnikernelCmd::Create(UnikernelConfig {
            image: vec![0x5a; MAX_LEAF_SIZE],
            ..UnikernelConfig::default()
        }));
        let error = prepare_with(
            &issuer,
            &Name::parse("big").unwrap(),
            &create,
            KeyType::Ed25519,
            now(),
        )
        .unwrap_err();
        assert_eq!(error.to_string(), LEAF_TOO_BIG);
    }

    #[test]
    fn default_dump_files() {
        let path = default_dump_file(&Name::parse("disk").unwrap(), now());
        assert_eq!(path, std::env::temp_dir().join(":disk2025-06-01T12:00:00Z"));
    }

    #[test]
    fn uploads_match_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        std::fs::write(&path, b"x").unwrap();
        let streamed = Command::Unikernel(UnikernelCmd::Create(UnikernelConfig {
            compressed: true,
            ..UnikernelConfig::default()
        }));
        let upload = |level| Upload {
            path: path.clone(),
            level,
            progress: ProgressMode::Auto,
        };
        assert!(check_upload(&streamed, Some(&upload(9))).is_ok());
        assert_eq!(
            check_upload(&streamed, Some(&upload(0)))
                .unwrap_err()
                .exit()
                .code(),
            125
        );
        assert_eq!(
            check_upload(&streamed, None).unwrap_err().to_string(),
            "the command unikernel create streams the image after the handshake: give the file with --data"
        );
        assert_eq!(
            check_upload(&Command::Unikernel(UnikernelCmd::Info), Some(&upload(0)))
                .unwrap_err()
                .to_string(),
            "the command unikernel info streams no data after the handshake"
        );
    }
}
