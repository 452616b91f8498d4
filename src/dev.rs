//! `petrel-endpoint --dev`: a development PKI and state directory under `./petrel-dev/`,
//! made once and reused, and the client commands a newcomer can paste next.
//!
//! Layout (keys mode 0600, written once and never overwritten):
//!
//! | file | content |
//! |---|---|
//! | `cacert.pem`, `ca.key` | a development root CA ([`DEV_CA_NAME`]) |
//! | `server.pem`, `server.key` | the server certificate for `localhost`, `127.0.0.1` and `::1` |
//! | `admin.key` | a client key for the operator's own certificates |
//! | `hello.hvt` | a stub solo5 image without devices, for trying `create` with the stand-in tender |
//! | `state/` | the endpoint's state directory (mode 0700) |

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rand::rngs::OsRng;
use time::OffsetDateTime;

use crate::pki::{
    self, AltName, CaIssuer, Certificate, CertificateTemplate, Criticality, KeyType, PkiError,
    PrivateKey, Profile, Serial, Subject, Validity, keys,
};

/// The directory `--dev` works in, relative to the working directory.
pub const DEV_DIR: &str = "petrel-dev";

/// Common name of the development CA.
pub const DEV_CA_NAME: &str = "petrel-dev-ca";

/// Common name of the development server certificate.
pub const DEV_SERVER_NAME: &str = "localhost";

/// Where `--dev` listens unless `--ip`/`--port` say otherwise.
pub const DEV_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1025);

/// Mode of the development and state directories.
pub const DEV_DIR_MODE: u32 = 0o700;

/// Mode of certificate files (public).
pub const CERT_FILE_MODE: u32 = 0o644;

/// Errors preparing the development directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// A certificate or key could not be made or read.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// One file of a pair exists without the other.
    #[error("{present} exists but {missing} does not; remove {dir} to start over")]
    Incomplete {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
        /// The development directory.
        dir: PathBuf,
    },
}

/// The files of a development directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevFiles {
    /// The directory itself.
    pub dir: PathBuf,
    /// The CA certificate (also the `--server-ca` of clients).
    pub cacert: PathBuf,
    /// The CA key.
    pub ca_key: PathBuf,
    /// The server certificate.
    pub server_cert: PathBuf,
    /// The server key.
    pub server_key: PathBuf,
    /// The admin client key.
    pub admin_key: PathBuf,
    /// The stub image for trying `create` with the stand-in tender.
    pub hello_image: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
}

impl DevFiles {
    /// The files under `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            cacert: dir.join("cacert.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            admin_key: dir.join("admin.key"),
            hello_image: dir.join("hello.hvt"),
            state_dir: dir.join("state"),
        }
    }
}

/// What [`prepare`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevSetup {
    /// The files.
    pub files: DevFiles,
    /// The files this run created (empty when everything was reused).
    pub created: Vec<PathBuf>,
}

/// Creates what is missing under `dir` (the CA, the server certificate, the admin key,
/// the state directory) and reuses what exists. Certificates are issued at `now`.
pub fn prepare(dir: &Path, now: OffsetDateTime) -> Result<DevSetup, DevError> {
    let files = DevFiles::new(dir);
    let mut created = Vec::new();
    make_dir(&files.dir)?;
    make_dir(&files.state_dir)?;

    let ca = match pair(&files, &files.cacert, &files.ca_key)? {
        true => {
            let key = keys::load_key_file(&files.ca_key)?;
            CaIssuer::from_pem(&read_text(&files.cacert)?, key)?
        }
        false => {
            let key = PrivateKey::generate(KeyType::Ed25519)?;
            let cert = pki::cert::root_ca(
                DEV_CA_NAME,
                &key,
                Validity::for_profile(now, Profile::RootCa),
                Serial::random(&mut OsRng),
            )?;
            keys::write_key_file(&files.ca_key, &key)?;
            write_new(&files.cacert, cert.pem().as_bytes())?;
            created.extend([files.cacert.clone(), files.ca_key.clone()]);
            CaIssuer::new(vec![cert], key)?
        }
    };

    if !pair(&files, &files.server_cert, &files.server_key)? {
        let key = PrivateKey::generate(KeyType::Ed25519)?;
        let alt_names = [
            AltName::Dns(DEV_SERVER_NAME.to_owned()),
            AltName::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            AltName::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ];
        let template = CertificateTemplate {
            profile: Profile::Server,
            subject: Subject::CommonName(DEV_SERVER_NAME),
            public_key: key.public_key(),
            albatross: None,
            albatross_criticality: Criticality::NonCritical,
            alt_names: &alt_names,
            validity: Validity::for_profile(now, Profile::Server),
            serial: Serial::random(&mut OsRng),
        };
        let cert: Certificate = pki::cert::issue(&template, &ca)?;
        keys::write_key_file(&files.server_key, &key)?;
        write_new(&files.server_cert, cert.pem().as_bytes())?;
        created.extend([files.server_cert.clone(), files.server_key.clone()]);
    }

    let (_, origin) = keys::load_or_generate_key_file(&files.admin_key, KeyType::Ed25519)?;
    if origin == keys::KeyOrigin::Generated {
        created.push(files.admin_key.clone());
    }
    if !files.hello_image.exists() {
        let image = crate::executor::manifest::build_test_image(
            crate::executor::manifest::Target::Hvt,
            STUB_ABI_VERSION,
            &[],
        );
        write_new(&files.hello_image, &image)?;
        created.push(files.hello_image.clone());
    }
    Ok(DevSetup { files, created })
}

/// ABI version of the stub image, the one the stand-in tender reports.
const STUB_ABI_VERSION: u32 = 2;

/// The text `--dev` prints once it listens on `addr`: where things are and the `petrel`
/// commands to try next.
pub fn instructions(setup: &DevSetup, addr: SocketAddr) -> String {
    let f = &setup.files;
    let remote = format!(
        "--destination {addr} --ca {} --ca-key {} --server-ca {}",
        f.cacert.display(),
        f.ca_key.display(),
        f.cacert.display()
    );
    let state = if setup.created.is_empty() {
        "reused"
    } else {
        "created"
    };
    let mut out = String::new();
    out.push_str(&format!(
        "petrel-endpoint --dev: development setup in {} ({state})\n",
        f.dir.display()
    ));
    out.push_str(&format!(
        "  CA certificate:     {} (key {})\n",
        f.cacert.display(),
        f.ca_key.display()
    ));
    out.push_str(&format!(
        "  server certificate: {} for localhost, 127.0.0.1, ::1 (key {})\n",
        f.server_cert.display(),
        f.server_key.display()
    ));
    out.push_str(&format!(
        "  admin client key:   {}\n",
        f.admin_key.display()
    ));
    out.push_str(&format!(
        "  state directory:    {} (audit log {})\n",
        f.state_dir.display(),
        f.state_dir.join(crate::audit::AUDIT_FILE).display()
    ));
    out.push_str(&format!("  listening on        {addr}\n\n"));
    out.push_str("Try, from this directory in another terminal:\n");
    out.push_str(&format!("  petrel info {remote}\n"));
    out.push_str(&format!("  petrel policy {remote}\n"));
    out.push_str(&format!(
        "  petrel create hello {} --arg=--print=hello --arg=--wait {remote}\n",
        f.hello_image.display()
    ));
    out.push_str(&format!("  petrel console hello --count 10 {remote}\n"));
    out.push_str(&format!("  petrel destroy hello {remote}\n"));
    out.push_str(&format!(
        "({}: a stub image that only the stand-in tender runs (its --print/--wait \
         arguments); with solo5-hvt use a real unikernel image. The development CA key \
         signs a short-lived client certificate for each command.)\n",
        f.hello_image.display()
    ));
    out
}

/// Whether both files of a pair exist (`true`), neither does (`false`), or only one
/// (an error).
fn pair(files: &DevFiles, cert: &Path, key: &Path) -> Result<bool, DevError> {
    match (cert.exists(), key.exists()) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        (present, _) => {
            let (present, missing) = if present { (cert, key) } else { (key, cert) };
            Err(DevError::Incomplete {
                present: present.to_path_buf(),
                missing: missing.to_path_buf(),
                dir: files.dir.clone(),
            })
        }
    }
}

fn make_dir(path: &Path) -> Result<(), DevError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DEV_DIR_MODE)
        .create(path)
        .map_err(|source| DevError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn read_text(path: &Path) -> Result<String, DevError> {
    std::fs::read_to_string(path).map_err(|source| DevError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a new file (never overwriting one) with [`CERT_FILE_MODE`].
fn write_new(path: &Path, data: &[u8]) -> Result<(), DevError> {
    let io = |source| DevError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(CERT_FILE_MODE)
        .open(path)
        .map_err(io)?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_once_then_reuses() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join(DEV_DIR);
        let now = OffsetDateTime::now_utc();
        let first = prepare(&dir, now).unwrap();
        let files = DevFiles::new(&dir);
        assert_eq!(
            first.created,
            vec![
                files.cacert.clone(),
                files.ca_key.clone(),
                files.server_cert.clone(),
                files.server_key.clone(),
                files.admin_key.clone(),
                files.hello_image.clone()
            ]
        );
        for key in [&files.ca_key, &files.server_key, &files.admin_key] {
            assert_eq!(mode(key), 0o600, "{}", key.display());
        }
        assert_eq!(mode(&files.cacert), 0o644);
        assert_eq!(mode(&files.state_dir), 0o700);
        let server = std::fs::read_to_string(&files.server_cert).unwrap();
        let facts = Certificate::from_pem_chain(&server).unwrap()[0]
            .facts()
            .unwrap();
        assert_eq!(
            facts.common_name,
            pki::CommonName::One("localhost".to_owned())
        );

        let ca_before = std::fs::read(&files.cacert).unwrap();
        let second = prepare(&dir, now).unwrap();
        assert_eq!(second.created, Vec::<PathBuf>::new());
        assert_eq!(std::fs::read(&files.cacert).unwrap(), ca_before);
        assert_eq!(std::fs::read_to_string(&files.server_cert).unwrap(), server);

        let text = instructions(&second, DEV_ADDR);
        assert!(text.contains(&format!(
            "petrel info --destination 127.0.0.1:1025 --ca {0}/cacert.pem --ca-key {0}/ca.key \
             --server-ca {0}/cacert.pem\n",
            dir.display()
        )));
        assert!(text.contains("(reused)"));
    }

    #[test]
    fn half_a_pair_is_an_error() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join(DEV_DIR);
        prepare(&dir, OffsetDateTime::now_utc()).unwrap();
        std::fs::remove_file(dir.join("server.key")).unwrap();
        let err = prepare(&dir, OffsetDateTime::now_utc()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{0}/server.pem exists but {0}/server.key does not; remove {0} to start over",
                dir.display()
            )
        );
    }
}
