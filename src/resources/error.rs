//! Errors of the resource core. Texts are albatross's where albatross makes the same
//! refusal (`spec/names-and-policies.md` §7); petrel's own refusals (a policy above the
//! unikernel's own path would be exceeded, a path name where a label is needed) name the
//! policy path and the resource.

use std::collections::BTreeSet;
use std::fmt;

use crate::name::{Name, Path};
use crate::policy::{WithinError, join};

/// Why a policy could not be added, changed or removed (§7.1, §7.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy stored at the proper ancestor `path` does not contain the new one.
    #[error("{source}")]
    Above {
        /// Where the policy above is stored.
        path: Path,
        /// How the new policy exceeds it.
        source: WithinError,
    },
    /// The new policy does not contain the one stored below it at `path`.
    #[error("{source}")]
    Below {
        /// Where the policy below is stored.
        path: Path,
        /// How it exceeds the new policy.
        source: WithinError,
    },
    /// Running unikernels of the subtree are pinned to CPU ids the new policy lacks.
    #[error("policy does not allow CPUids {}", join(.0))]
    UsedCpuids(BTreeSet<i64>),
    /// Running unikernels of the subtree use bridges the new policy lacks.
    #[error(
        "policy allows bridges {}, which is not a superset of {}",
        join(.allowed),
        join(.used)
    )]
    UsedBridges {
        /// The new policy's bridges.
        allowed: BTreeSet<String>,
        /// Every bridge in use in the subtree.
        used: BTreeSet<String>,
    },
    /// More unikernels run in the subtree than the new policy allows.
    #[error(
        "unikernel would exceed running unikernel limit set by policy to {limit}, running {running}"
    )]
    UsedUnikernels {
        /// The new policy's limit.
        limit: i64,
        /// Unikernels running in the subtree.
        running: i64,
    },
    /// The unikernels of the subtree use more memory than the new policy allows.
    #[error(
        "unikernel would exceed running memory limit set by policy to {limit} MB, used {used} MB"
    )]
    UsedMemory {
        /// The new policy's limit.
        limit: i64,
        /// Memory in use in the subtree.
        used: i64,
    },
    /// The block devices of the subtree are larger than the new policy allows.
    #[error(
        "unikernel would exceed running block storage limit set by policy to {limit} MB, used {used} MB"
    )]
    UsedBlock {
        /// The new policy's limit (none = 0).
        limit: i64,
        /// Block storage in the subtree.
        used: i64,
    },
    /// No policy is stored at the path.
    #[error("unknown policy")]
    Unknown,
    /// The root policy (the host's resources) cannot be removed.
    #[error("the root policy holds the host's resources and cannot be removed")]
    RootNotRemovable,
    /// The root policy (the host's resources) is set by the operator, not by a policy add.
    #[error("the root policy holds the host's resources and cannot be changed by a policy add")]
    RootNotChangeable,
}

/// A policy of a certificate chain was refused; none of the chain's policies stay applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy of {}: not applied: {source}", .path)]
pub struct ChainPolicyError {
    /// Position of the refused policy in the chain (0 = closest to the trust anchor).
    pub index: usize,
    /// The path of the refused policy.
    pub path: Path,
    /// Why it was refused.
    pub source: PolicyError,
}

/// Why a unikernel could not be created or a block device added or removed
/// (§7.4, §7.5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResourceError {
    /// A path name (no label) where a unikernel or block device name is needed (N6).
    #[error("{0} is a path name; a unikernel or block device name needs a label")]
    PathName(Name),
    /// The unikernel asks for a negative amount of memory.
    #[error("memory request of {0} MB is negative")]
    NegativeMemory(i64),
    /// Policy at the unikernel's own path: no unikernel left.
    #[error("maximum amount of unikernels ({0}) reached")]
    MaxUnikernels(i64),
    /// Policy at the unikernel's own path: not enough memory left.
    #[error(
        "maximum allowed memory ({limit}, used {used}) would be exceeded (requesting {requested})"
    )]
    MaxMemory {
        /// The policy's memory.
        limit: i64,
        /// Memory in use in the subtree.
        used: i64,
        /// Memory requested.
        requested: i64,
    },
    /// Policy at the unikernel's own path: these CPU ids are not allowed.
    #[error("CPUids {} are not allowed by policy", join(.0))]
    Cpuids(BTreeSet<i64>),
    /// Policy at the unikernel's own path: these bridges are not allowed.
    #[error("bridges {} not allowed by policy", join(.0))]
    Bridges(BTreeSet<String>),
    /// Policy at the block device's own path allows no block storage.
    #[error("no block devices are allowed by policy")]
    NoBlockAllowed,
    /// Policy at the block device's own path: not enough block storage left.
    #[error(
        "block device policy limit of {limit} MB (used {used} MB) would be exceeded by the request ({requested} MB)"
    )]
    BlockLimit {
        /// The policy's block storage.
        limit: i64,
        /// Block storage in use in the subtree.
        used: i64,
        /// Size requested.
        requested: i64,
    },
    /// A policy above the own path (the root included) would be exceeded (petrel only).
    #[error("policy of {}: would be exceeded: {exceeded}", .path)]
    Exceeded {
        /// Where that policy is stored.
        path: Path,
        /// Which resource, by how much.
        exceeded: Exceeded,
    },
    /// A block device the unikernel uses does not exist.
    #[error("block device {0} not found")]
    BlockNotFound(Name),
    /// A block device the unikernel uses is attached to another unikernel.
    #[error("block device {0} already in use")]
    BlockInUse(Name),
    /// A unikernel with this name exists.
    #[error("unikernel with same name already exists")]
    UnikernelExists,
    /// A block device with this name exists.
    #[error("block device with same name already exists")]
    BlockExists,
    /// Block size not positive, or too large to count in bytes (albatross's text).
    #[error("overflow while computing bytes")]
    BlockSize(i64),
    /// No block device with this name.
    #[error("remove block: not found")]
    RemoveBlockNotFound,
    /// The block device is attached to a unikernel.
    #[error("remove block: is in use")]
    RemoveBlockInUse,
}

/// Which resource of a policy would be exceeded, and by how much.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exceeded {
    /// No unikernel left.
    Unikernels {
        /// The policy's limit.
        allowed: i64,
        /// Unikernels running in the subtree.
        running: i64,
    },
    /// Not enough memory left.
    Memory {
        /// The policy's memory.
        allowed: i64,
        /// Memory in use in the subtree.
        used: i64,
        /// Memory requested.
        requested: i64,
    },
    /// CPU ids not allowed.
    Cpuid(BTreeSet<i64>),
    /// Bridges not allowed.
    Bridge(BTreeSet<String>),
    /// Not enough block storage left.
    Block {
        /// The policy's block storage.
        allowed: i64,
        /// Block storage in use in the subtree.
        used: i64,
        /// Size requested.
        requested: i64,
    },
    /// The policy allows no block storage.
    NoBlock,
}

impl Exceeded {
    /// The resource's word: "unikernels", "memory", "cpuid", "bridge" or "block".
    pub fn resource(&self) -> &'static str {
        match self {
            Self::Unikernels { .. } => "unikernels",
            Self::Memory { .. } => "memory",
            Self::Cpuid(_) => "cpuid",
            Self::Bridge(_) => "bridge",
            Self::Block { .. } | Self::NoBlock => "block",
        }
    }

    /// The error for the policy at the request's own path: albatross's text.
    pub(super) fn at_own_path(self) -> ResourceError {
        match self {
            Self::Unikernels { allowed, .. } => ResourceError::MaxUnikernels(allowed),
            Self::Memory {
                allowed,
                used,
                requested,
            } => ResourceError::MaxMemory {
                limit: allowed,
                used,
                requested,
            },
            Self::Cpuid(ids) => ResourceError::Cpuids(ids),
            Self::Bridge(bridges) => ResourceError::Bridges(bridges),
            Self::Block {
                allowed,
                used,
                requested,
            } => ResourceError::BlockLimit {
                limit: allowed,
                used,
                requested,
            },
            Self::NoBlock => ResourceError::NoBlockAllowed,
        }
    }

    /// The error for a policy above the request's own path: petrel's text.
    pub(super) fn above(self, path: Path) -> ResourceError {
        ResourceError::Exceeded {
            path,
            exceeded: self,
        }
    }
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = self.resource();
        match self {
            Self::Unikernels { allowed, running } => {
                write!(f, "{word} ({allowed} allowed, {running} running)")
            }
            Self::Memory {
                allowed,
                used,
                requested,
            }
            | Self::Block {
                allowed,
                used,
                requested,
            } => write!(
                f,
                "{word} ({allowed} MB allowed, {used} MB used, {requested} MB requested)"
            ),
            Self::Cpuid(ids) => write!(f, "{word} ({} not allowed)", join(ids)),
            Self::Bridge(bridges) => write!(f, "{word} ({} not allowed)", join(bridges)),
            Self::NoBlock => write!(f, "{word} (none allowed)"),
        }
    }
}
