//! `--csr`: a request for any command, to be signed later by a CA with `petrel sign`
//! (`spec/tls-endpoint.md` §4.2). Writes `<cn>.key` (mode 0600, reused if present, as
//! albatross-client does) and `<cn>.req` (PEM) with subject CN `<cn>` and one
//! extensionRequest holding only the albatross extension (non-critical).

use std::path::{Path, PathBuf};

use super::ClientError;
use super::ca::key_file_name;
use super::request::request_common_name;
use crate::codec::{self, Command};
use crate::name::Name;
use crate::pki::KeyType;
use crate::pki::cert::chain_file_name;
use crate::pki::csr::create_csr;
use crate::pki::keys::{self, KeyOrigin};

/// The files `--csr` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFiles {
    /// The request's common name.
    pub common_name: String,
    /// The key file, and whether it was made now or reused.
    pub key: (PathBuf, KeyOrigin),
    /// The request file.
    pub request: PathBuf,
}

/// Writes the key and the request for `command` on `name` into `dir`.
pub fn write_request(
    dir: &Path,
    name: &Name,
    command: &Command,
    key_type: KeyType,
) -> Result<RequestFiles, ClientError> {
    let common_name = request_common_name(command, name)?;
    let key_path = dir.join(key_file_name(&common_name)?);
    let request_path = dir.join(request_file_name(&common_name)?);
    let (key, origin) = keys::load_or_generate_key_file(&key_path, key_type)?;
    let extension = codec::encode_extension(command);
    let csr = create_csr(&common_name, Some(&extension), &key)?;
    std::fs::write(&request_path, csr.pem()).map_err(|e| ClientError::io(&request_path, e))?;
    Ok(RequestFiles {
        common_name,
        key: (key_path, origin),
        request: request_path,
    })
}

/// `<cn>.req`, refusing names that are not plain file names.
fn request_file_name(common_name: &str) -> Result<String, ClientError> {
    let pem = chain_file_name(common_name)?;
    Ok(format!(
        "{}.req",
        pem.strip_suffix(".pem").unwrap_or(common_name)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{PolicyCmd, UnikernelCmd};
    use crate::pki::ParsedCsr;
    use crate::policy::Policy;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_key_and_request() {
        let dir = tempfile::tempdir().unwrap();
        let command = Command::Unikernel(UnikernelCmd::Info);
        let files = write_request(dir.path(), &Name::root(), &command, KeyType::Ed25519).unwrap();
        assert_eq!(files.common_name, ".");
        assert_eq!(files.key, (dir.path().join("..key"), KeyOrigin::Generated));
        assert_eq!(files.request, dir.path().join("..req"));
        let mode = std::fs::metadata(&files.key.0)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let csr = ParsedCsr::parse(&std::fs::read(&files.request).unwrap())
            .unwrap()
            .verify()
            .unwrap();
        assert_eq!(csr.name().unwrap(), ".");
        let ext = csr.albatross().unwrap();
        assert!(!ext.critical);
        assert_eq!(
            codec::decode_extension(&ext.value).unwrap().command,
            command
        );

        // The key is reused on a second request with the same name.
        let again = write_request(dir.path(), &Name::root(), &command, KeyType::P256).unwrap();
        assert_eq!(again.key.1, KeyOrigin::Loaded);
    }

    #[test]
    fn policy_requests_are_named_by_their_label() {
        let dir = tempfile::tempdir().unwrap();
        let command = Command::Policy(PolicyCmd::Add(Policy::default()));
        let name = Name::parse("user:").unwrap();
        let files = write_request(dir.path(), &name, &command, KeyType::Ed25519).unwrap();
        assert_eq!(files.request, dir.path().join("user.req"));
        let refused = write_request(
            dir.path(),
            &Name::parse("a:web").unwrap(),
            &Command::Unikernel(UnikernelCmd::Destroy),
            KeyType::Ed25519,
        );
        assert_eq!(refused.unwrap_err().to_string(), "non-empty path");
    }
}
