//! The CA tool of `spec/tls-endpoint.md` §4.1 and §4.3: `generate` makes a root CA and a
//! server certificate, `sign` turns a CSR into an intermediate CA (policy), a leaf
//! (command) or a server certificate, appends the serial database and writes the chain a
//! client presents.

use std::path::{Path, PathBuf};
use std::time::Duration;

use time::OffsetDateTime;

use super::request::{ca_policy, fits_policy};
use super::{ClientError, Refusal, read_bounded};
use crate::codec::{self, Command, PolicyCmd, UnikernelCmd};
use crate::pki::cert::{self, CERTIFICATE_PEM, chain_file_name};
use crate::pki::csr::MAX_CSR_SIZE;
use crate::pki::keys::{self, KeyOrigin};
use crate::pki::{
    AltName, CaIssuer, Certificate, CertificateTemplate, Criticality, KeyType, PEM_EXPANSION,
    ParsedCsr, PkiError, Profile, Serial, Subject, Validity,
};
use crate::policy::Policy;
use crate::verify::MAX_CA_FILE_SIZE;

/// File the root CA certificate is written to (albatross-client's name).
pub const CA_CERTIFICATE_FILE: &str = "cacert.pem";

/// Default validity of the root CA, in days (albatross-client `generate --days`).
pub const DEFAULT_CA_DAYS: u32 = 3650;

/// Default validity of the server certificate, in days (`--server-days`).
pub const DEFAULT_SERVER_DAYS: u32 = 365;

/// Default common name of the server certificate (`--server`).
pub const DEFAULT_SERVER_NAME: &str = "server";

/// Names every server certificate of `generate` carries besides its own name, so that a
/// client on the same host can connect by either (petrel's client checks the name).
pub const DEFAULT_ALT_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// Seconds per day.
const DAY: u64 = 86_400;

/// What `generate` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateOptions {
    /// Directory the keys and certificates are written to.
    pub dir: PathBuf,
    /// Common name of the root CA; its key is `<name>.key`.
    pub name: String,
    /// The serial database.
    pub db: PathBuf,
    /// Validity of the root CA in days.
    pub days: u32,
    /// Common name of the server certificate; files `<server>.key`, `<server>.pem`.
    pub server: String,
    /// Validity of the server certificate in days.
    pub server_days: u32,
    /// Type of newly generated keys.
    pub key_type: KeyType,
    /// Extra subject alternative names of the server certificate (`--server-name`).
    pub server_names: Vec<String>,
}

/// What `generate` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The CA key file and whether it was made now or reused.
    pub ca_key: (PathBuf, KeyOrigin),
    /// The CA certificate file.
    pub ca_certificate: PathBuf,
    /// The server key file and whether it was made now or reused.
    pub server_key: (PathBuf, KeyOrigin),
    /// The server certificate file.
    pub server_certificate: PathBuf,
    /// The server certificate's serial (the database line).
    pub server_serial: Serial,
    /// The server certificate's subject alternative names.
    pub alt_names: Vec<AltName>,
}

/// `generate NAME DB`: the key `NAME.key` (reused if present) and the self-signed root
/// CA `cacert.pem`; the key `S.key` and the server certificate `S.pem` (the certificate
/// only) with the alternative names `S`, `localhost`, `127.0.0.1` and every
/// `--server-name`; one database line for the server certificate.
pub fn generate(opts: &GenerateOptions, now: OffsetDateTime) -> Result<Generated, ClientError> {
    let ca_key_path = opts.dir.join(key_file_name(&opts.name)?);
    let server_key_path = opts.dir.join(key_file_name(&opts.server)?);
    let alt_names = server_alt_names(&opts.server, &opts.server_names)?;

    let (ca_key, ca_origin) = keys::load_or_generate_key_file(&ca_key_path, opts.key_type)?;
    let root = cert::root_ca(
        &opts.name,
        &ca_key,
        Validity {
            now,
            duration: days(opts.days),
        },
        Serial::random(&mut rand::thread_rng()),
    )?;
    let ca_certificate = cert::write_chain_file(&opts.dir, ca_file_stem(), &root.pem())?;
    let issuer = CaIssuer::new(vec![root], ca_key)?;

    let (server_key, server_origin) =
        keys::load_or_generate_key_file(&server_key_path, opts.key_type)?;
    let serial = Serial::random(&mut rand::thread_rng());
    let template = CertificateTemplate {
        profile: Profile::Server,
        subject: Subject::CommonName(&opts.server),
        public_key: server_key.public_key(),
        albatross: None,
        albatross_criticality: Criticality::NonCritical,
        alt_names: &alt_names,
        validity: Validity {
            now,
            duration: days(opts.server_days),
        },
        serial: serial.clone(),
    };
    let server = cert::issue(&template, &issuer)?;
    let server_certificate = cert::write_chain_file(&opts.dir, &opts.server, &server.pem())?;
    cert::append_database(&opts.db, &serial, &opts.server)?;
    Ok(Generated {
        ca_key: (ca_key_path, ca_origin),
        ca_certificate,
        server_key: (server_key_path, server_origin),
        server_certificate,
        server_serial: serial,
        alt_names,
    })
}

/// `cacert` (the stem of [`CA_CERTIFICATE_FILE`]).
fn ca_file_stem() -> &'static str {
    CA_CERTIFICATE_FILE
        .strip_suffix(".pem")
        .unwrap_or(CA_CERTIFICATE_FILE)
}

/// The server certificate's alternative names: `server` if it is a host name or
/// address, `localhost`, `127.0.0.1`, then `extra`; duplicates dropped.
fn server_alt_names(server: &str, extra: &[String]) -> Result<Vec<AltName>, ClientError> {
    let mut names = Vec::new();
    let mut push = |name: AltName| {
        if !names.contains(&name) {
            names.push(name);
        }
    };
    if let Ok(name) = AltName::parse(server) {
        push(name);
    }
    for name in DEFAULT_ALT_NAMES {
        push(AltName::parse(name)?);
    }
    for name in extra {
        push(AltName::parse(name)?);
    }
    Ok(names)
}

/// `<name>.key`, refusing names that are not plain file names.
pub fn key_file_name(name: &str) -> Result<String, ClientError> {
    let pem = chain_file_name(name)?;
    Ok(format!("{}.key", pem.strip_suffix(".pem").unwrap_or(name)))
}

fn days(n: u32) -> Duration {
    Duration::from_secs(u64::from(n) * DAY)
}

/// What `sign` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignOptions {
    /// The issuing CA's certificate (the first certificate of the file).
    pub ca_certificate: PathBuf,
    /// The serial database.
    pub db: PathBuf,
    /// The issuing CA's key.
    pub ca_key: PathBuf,
    /// The request.
    pub csr: PathBuf,
    /// Validity in days (default: the profile's).
    pub days: Option<u32>,
    /// Directory `<CN>.pem` is written to.
    pub dir: PathBuf,
}

/// What `sign` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The certificate's common name (from the CSR).
    pub common_name: String,
    /// The profile chosen from the CSR's command.
    pub profile: Profile,
    /// The command carried (re-encoded with version 5), if any.
    pub command: Option<Command>,
    /// The new certificate's serial.
    pub serial: Serial,
    /// The chain file written (`<CN>.pem`).
    pub chain_file: PathBuf,
}

/// `sign CACERT DB CAKEY CSR` (§4.3): verifies the request, decodes its albatross
/// extension, checks it against the CA's policy, issues the certificate of the matching
/// profile, appends `<serial> <CN>` to the database and writes `<CN>.pem` (the new
/// certificate followed by the CA's unless the CA is self-signed).
pub fn sign(opts: &SignOptions, now: OffsetDateTime) -> Result<Signed, ClientError> {
    let ca_text = read_bounded(&opts.ca_certificate, to_u64(MAX_CA_FILE_SIZE))?;
    let ca_text = String::from_utf8(ca_text)
        .map_err(|_| PkiError::NoPem(CERTIFICATE_PEM))
        .map_err(ClientError::from)?;
    let ca_key = keys::load_key_file(&opts.ca_key)?;
    let issuer = CaIssuer::from_pem(&ca_text, ca_key)?;

    let csr_bytes = read_bounded(
        &opts.csr,
        to_u64(MAX_CSR_SIZE.saturating_mul(PEM_EXPANSION)),
    )?;
    let csr = ParsedCsr::parse(&csr_bytes)?.verify()?;
    let common_name = csr.name()?.to_owned();

    let command = match csr.albatross() {
        Some(ext) => Some(
            codec::decode_extension(&ext.value)
                .map_err(|e| {
                    ClientError::usage(format!("couldn't parse albatross extension in CSR: {e}"))
                })?
                .command,
        ),
        None => None,
    };
    let policy = ca_policy(issuer.facts())?;
    let profile = profile_for(command.as_ref(), policy.as_ref())?;
    let extension = command.as_ref().map(codec::encode_extension);
    let validity = Validity {
        now,
        duration: opts.days.map_or(profile.default_validity(), days),
    };
    let serial = Serial::random(&mut rand::thread_rng());
    let template = csr.template(profile, extension.as_deref(), validity, serial.clone());
    let certificate = cert::issue(&template, &issuer)?;
    cert::append_database(&opts.db, &serial, &common_name)?;
    let chain_file =
        cert::write_chain_file(&opts.dir, &common_name, &issuer.chain_pem(&certificate))?;
    Ok(Signed {
        common_name,
        profile,
        command,
        serial,
        chain_file,
    })
}

/// The profile `sign` issues for a request carrying `command` under a CA delegating
/// `ca_policy` (§4.3 step 2): a policy add must be usable and within the CA's policy and
/// becomes an intermediate CA; a create must fit the CA's policy; any other command
/// makes a leaf; no command a server certificate.
pub fn profile_for(
    command: Option<&Command>,
    ca_policy: Option<&Policy>,
) -> Result<Profile, Refusal> {
    match command {
        None => Ok(Profile::Server),
        Some(Command::Policy(PolicyCmd::Add(policy))) => {
            policy.usable()?;
            if let Some(above) = ca_policy {
                above.contains(policy)?;
            }
            Ok(Profile::IntermediateCa)
        }
        Some(Command::Unikernel(
            UnikernelCmd::Create(config) | UnikernelCmd::ForceCreate(config),
        )) => {
            if let Some(policy) = ca_policy {
                fits_policy(policy, config)?;
            }
            Ok(Profile::Leaf)
        }
        Some(_) => Ok(Profile::Leaf),
    }
}

/// The certificates of a PEM file (an issuing CA with the rest of its chain, or a
/// client chain), bounded like a CA file.
pub fn read_certificates(path: &Path) -> Result<Vec<Certificate>, ClientError> {
    let text = read_bounded(path, to_u64(MAX_CA_FILE_SIZE))?;
    let text = String::from_utf8(text).map_err(|_| PkiError::NoPem(CERTIFICATE_PEM))?;
    Ok(Certificate::from_pem_chain(&text)?)
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{ConsoleCmd, SinceCount, UnikernelConfig};
    use crate::policy::{UsabilityError, WithinError};

    fn policy(unikernels: i64, cpuids: &[i64], memory: i64) -> Policy {
        Policy {
            unikernels,
            cpuids: cpuids.iter().copied().collect(),
            memory,
            block: None,
            bridges: Default::default(),
        }
    }

    #[test]
    fn profiles() {
        let ca = policy(2, &[0, 1], 1024);
        let add = |p: Policy| Command::Policy(PolicyCmd::Add(p));
        assert_eq!(profile_for(None, Some(&ca)), Ok(Profile::Server));
        assert_eq!(
            profile_for(Some(&add(policy(1, &[0], 512))), Some(&ca)),
            Ok(Profile::IntermediateCa)
        );
        assert_eq!(
            profile_for(Some(&add(policy(1, &[0], 4096))), None),
            Ok(Profile::IntermediateCa)
        );
        assert_eq!(
            profile_for(Some(&add(policy(0, &[0], 512))), None),
            Err(Refusal::Unusable(UsabilityError::NoUnikernels))
        );
        assert_eq!(
            profile_for(Some(&add(policy(3, &[0], 512))), Some(&ca)),
            Err(Refusal::NotWithin(WithinError::Unikernels {
                above: 2,
                below: 3
            }))
        );
        let create = |memory| {
            Command::Unikernel(UnikernelCmd::Create(UnikernelConfig {
                memory,
                ..UnikernelConfig::default()
            }))
        };
        assert_eq!(
            profile_for(Some(&create(1024)), Some(&ca)),
            Ok(Profile::Leaf)
        );
        assert_eq!(
            profile_for(Some(&create(1025)), Some(&ca))
                .unwrap_err()
                .to_string(),
            "1025 MB memory assigned to unikernel exceeds policy (1024MB)"
        );
        assert_eq!(profile_for(Some(&create(1 << 20)), None), Ok(Profile::Leaf));
        let console = Command::Console(ConsoleCmd::Subscribe(SinceCount::Count(20)));
        assert_eq!(profile_for(Some(&console), Some(&ca)), Ok(Profile::Leaf));
    }

    #[test]
    fn alt_names_and_key_files() {
        let names = server_alt_names("server", &["10.0.0.1".into(), "localhost".into()]).unwrap();
        let texts: Vec<String> = names
            .iter()
            .map(|n| match n {
                AltName::Dns(d) => d.clone(),
                AltName::Ip(ip) => ip.to_string(),
            })
            .collect();
        assert_eq!(texts, ["server", "localhost", "127.0.0.1", "10.0.0.1"]);
        assert_eq!(server_alt_names("my server", &[]).unwrap().len(), 2);
        assert_eq!(
            server_alt_names("s", &["a b".into()])
                .unwrap_err()
                .to_string(),
            "invalid subject alternative name \"a b\""
        );
        assert_eq!(key_file_name("ca").unwrap(), "ca.key");
        assert_eq!(
            key_file_name("../x").unwrap_err().to_string(),
            "common name \"../x\" cannot be used as a file name"
        );
        assert_eq!(ca_file_stem(), "cacert");
    }
}
