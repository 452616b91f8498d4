//! The root policy: the host's resources, discovered at every start
//! (`spec/names-and-policies.md` §5.1, DESIGN.md "Smaller decisions").
//!
//! CPUs are the ones this process may run on (`sched_getaffinity`: exactly the ids a
//! tender can be pinned to), memory is `MemTotal` of `/proc/meminfo`, bridges are the
//! bridges the [`Network`] sees, block storage is the total size (not the free space) of
//! the file system holding the block directory. Each can be overridden.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::executor::HostOverrides;
use crate::executor::net::{NetError, Network};
use crate::executor::tender::available_cpus;
use crate::policy::Policy;

/// The root policy's unikernel count: albatross's "unlimited", the largest native OCaml
/// int (2^62 − 1), so that a state file written by petrel is what albatross writes.
pub const ROOT_UNIKERNELS: i64 = (1 << 62) - 1;

/// Where the memory size is read.
pub const MEMINFO: &str = "/proc/meminfo";

/// Why the host's resources could not be discovered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The CPU affinity could not be read.
    #[error("could not read the CPUs of this host: {0}")]
    Cpus(#[source] io::Error),
    /// `/proc/meminfo` could not be read or has no `MemTotal`.
    #[error("could not read the memory size from {MEMINFO}: {0}")]
    Memory(String),
    /// The bridges could not be listed.
    #[error("could not list the bridges of this host: {0}")]
    Bridges(#[source] NetError),
    /// The block storage size could not be read.
    #[error("could not read the size of the file system holding {path}: {source}")]
    Block {
        /// The block directory.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The root policy for this host: discovered values, each replaced by its override if
/// one is given (an overridden value is not discovered at all).
pub fn root_policy(
    block_dir: &Path,
    network: &dyn Network,
    overrides: &HostOverrides,
) -> Result<Policy, HostError> {
    let cpuids = match &overrides.cpuids {
        Some(ids) => ids.clone(),
        None => available_cpus()
            .map_err(HostError::Cpus)?
            .into_iter()
            .map(i64::from)
            .collect(),
    };
    let memory = match overrides.memory {
        Some(mb) => mb,
        None => {
            let text =
                std::fs::read_to_string(MEMINFO).map_err(|e| HostError::Memory(e.to_string()))?;
            mem_total_mb(&text).ok_or_else(|| HostError::Memory("no MemTotal line".into()))?
        }
    };
    let bridges = match &overrides.bridges {
        Some(bridges) => bridges.clone(),
        None => network
            .bridges()
            .map_err(HostError::Bridges)?
            .into_iter()
            .map(|b| b.as_str().to_owned())
            .collect::<BTreeSet<_>>(),
    };
    let block = match overrides.block {
        Some(mb) => mb,
        None => filesystem_mb(block_dir).map_err(|source| HostError::Block {
            path: block_dir.display().to_string(),
            source,
        })?,
    };
    Ok(Policy {
        unikernels: ROOT_UNIKERNELS,
        cpuids,
        memory,
        block: Some(block),
        bridges,
    })
}

/// `MemTotal` of a `/proc/meminfo` text, in MB (2^20 octets).
pub fn mem_total_mb(meminfo: &str) -> Option<i64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: i64 = words.next()?.parse().ok()?;
    let kb = match words.next() {
        Some("kB") | None => value,
        Some(_) => return None,
    };
    Some(kb / 1024)
}

/// Total size of the file system holding `path`, in MB.
pub fn filesystem_mb(path: &Path) -> io::Result<i64> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: statvfs is plain old data; statvfs(3) fills it in.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a valid statvfs buffer.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let bytes = u128::from(stat.f_blocks) * u128::from(stat.f_frsize);
    Ok(i64::try_from(bytes >> 20).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::net::FakeNetwork;

    #[test]
    fn meminfo() {
        let text = "MemTotal:       24683520 kB\nMemFree:         7740000 kB\n";
        assert_eq!(mem_total_mb(text), Some(24105));
        assert_eq!(mem_total_mb("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total_mb("MemTotal: x kB\n"), None);
        assert_eq!(mem_total_mb("MemTotal: 2048 MB\n"), None);
    }

    #[test]
    fn overrides_win() {
        let dir = tempfile::tempdir().unwrap();
        let net = FakeNetwork::with_bridges(&["br0", "service"]);
        let overrides = HostOverrides {
            cpuids: Some(BTreeSet::from([0, 5])),
            memory: Some(4096),
            block: Some(100),
            bridges: Some(BTreeSet::from(["x".to_owned()])),
        };
        let policy = root_policy(dir.path(), &net, &overrides).unwrap();
        assert_eq!(
            policy,
            Policy {
                unikernels: ROOT_UNIKERNELS,
                cpuids: BTreeSet::from([0, 5]),
                memory: 4096,
                block: Some(100),
                bridges: BTreeSet::from(["x".to_owned()]),
            }
        );
        assert!(net.calls().is_empty(), "overridden bridges are not listed");
    }

    #[test]
    fn discovered() {
        let dir = tempfile::tempdir().unwrap();
        let net = FakeNetwork::with_bridges(&["service", "br0"]);
        let policy = root_policy(dir.path(), &net, &HostOverrides::default()).unwrap();
        let cpus: BTreeSet<i64> = available_cpus()
            .unwrap()
            .into_iter()
            .map(i64::from)
            .collect();
        assert_eq!(policy.cpuids, cpus);
        assert_eq!(
            policy.bridges,
            BTreeSet::from(["br0".to_owned(), "service".to_owned()])
        );
        let meminfo = std::fs::read_to_string(MEMINFO).unwrap();
        assert_eq!(policy.memory, mem_total_mb(&meminfo).unwrap());
        assert_eq!(policy.block, Some(filesystem_mb(dir.path()).unwrap()));
        assert!(policy.block.unwrap() > 0);
        assert_eq!(policy.unikernels, 0x3FFF_FFFF_FFFF_FFFF);
    }
}
