//! Resource policies and the static sub-policy rule
//! (`spec/names-and-policies.md` §5–6).
//!
//! ```text
//! Policy ::= SEQUENCE {
//!     cpuids      SEQUENCE OF Int,         -- allowed CPU ids, ascending, no duplicates
//!     unikernels  Int,                     -- max. number of running unikernels
//!     memory      Int,                     -- MB
//!     block       Int OPTIONAL,            -- MB of block storage; absent = none allowed
//!     bridges     SEQUENCE OF UTF8String } -- allowed host bridges, sorted, no duplicates
//! ```

use std::collections::BTreeSet;
use std::fmt::Display;

use serde::Serialize;

/// A resource policy attached to a path. Integers are kept as the wire's 63-bit signed
/// values so that whatever a certificate carries round-trips unchanged; the checks treat
/// negative limits as "nothing allowed".
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Policy {
    /// Maximum number of simultaneously running unikernels in the subtree.
    pub unikernels: i64,
    /// CPU ids unikernels in the subtree may be pinned to.
    pub cpuids: BTreeSet<i64>,
    /// Memory in MB for all unikernels of the subtree together.
    pub memory: i64,
    /// Block storage in MB for the whole subtree; `None` = no block storage allowed.
    pub block: Option<i64>,
    /// Host bridges unikernels in the subtree may use.
    pub bridges: BTreeSet<String>,
}

/// A violation of the static rule "sub is within super", or of usability.
/// The display texts are albatross's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WithinError {
    /// `super.unikernels < sub.unikernels`.
    #[error("policy above allows {above} unikernels, which is fewer than {below}")]
    Unikernels {
        /// The super policy's value.
        above: i64,
        /// The sub policy's value.
        below: i64,
    },
    /// `super.memory < sub.memory`.
    #[error("policy above allows {above} MB memory, which is fewer than {below} MB")]
    Memory {
        /// The super policy's value.
        above: i64,
        /// The sub policy's value.
        below: i64,
    },
    /// `sub.cpuids ⊄ super.cpuids`; carries `sub ∖ super`.
    #[error("policy above does not allow CPUids {}", join(.0))]
    Cpuids(BTreeSet<i64>),
    /// `sub.bridges ⊄ super.bridges`.
    #[error(
        "policy above allows bridge(s) {}, which is not a superset of {}",
        join(.above),
        join(.below)
    )]
    Bridges {
        /// The super policy's bridges.
        above: BTreeSet<String>,
        /// The sub policy's bridges.
        below: BTreeSet<String>,
    },
    /// Block storage of sub exceeds super (`None` printed as 0).
    #[error("policy above allows {above} MB block storage, which is fewer than {below} MB")]
    Block {
        /// The super policy's value (0 for none).
        above: i64,
        /// The sub policy's value.
        below: i64,
    },
}

/// Why a policy is unusable (checked by clients before signing; the daemon does not).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsabilityError {
    /// `unikernels <= 0`.
    #[error("Unusable policy with no unikernels")]
    NoUnikernels,
    /// Empty CPU id set.
    #[error("Unusable policy with no CPUids")]
    NoCpuids,
    /// `memory <= 16`.
    #[error("Unusable policy with memory {0} MB <= 16 MB")]
    Memory(i64),
    /// Negative block storage.
    #[error("Unusable policy with block {0} MB < 0 MB")]
    Block(i64),
}

/// Joins displayable items with `", "` (albatross's list rendering).
pub fn join<T: Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Policy {
    /// The static rule: succeeds iff `sub` is within `self`, checked in albatross's order
    /// (unikernels, memory, CPU ids, bridges, block); the first failure is reported.
    pub fn contains(&self, sub: &Policy) -> Result<(), WithinError> {
        if self.unikernels < sub.unikernels {
            return Err(WithinError::Unikernels {
                above: self.unikernels,
                below: sub.unikernels,
            });
        }
        if self.memory < sub.memory {
            return Err(WithinError::Memory {
                above: self.memory,
                below: sub.memory,
            });
        }
        if !sub.cpuids.is_subset(&self.cpuids) {
            return Err(WithinError::Cpuids(
                sub.cpuids.difference(&self.cpuids).copied().collect(),
            ));
        }
        if !sub.bridges.is_subset(&self.bridges) {
            return Err(WithinError::Bridges {
                above: self.bridges.clone(),
                below: sub.bridges.clone(),
            });
        }
        match (self.block, sub.block) {
            (_, None) => Ok(()),
            (Some(above), Some(below)) if above >= below => Ok(()),
            (above, Some(below)) => Err(WithinError::Block {
                above: above.unwrap_or(0),
                below,
            }),
        }
    }

    /// Usability (names doc §5.2), as `albatross-client` checks before signing.
    pub fn usable(&self) -> Result<(), UsabilityError> {
        if self.unikernels <= 0 {
            return Err(UsabilityError::NoUnikernels);
        }
        if self.cpuids.is_empty() {
            return Err(UsabilityError::NoCpuids);
        }
        if self.memory <= 16 {
            return Err(UsabilityError::Memory(self.memory));
        }
        match self.block {
            Some(b) if b < 0 => Err(UsabilityError::Block(b)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(
        unikernels: i64,
        cpuids: &[i64],
        memory: i64,
        block: Option<i64>,
        bridges: &[&str],
    ) -> Policy {
        Policy {
            unikernels,
            cpuids: cpuids.iter().copied().collect(),
            memory,
            block,
            bridges: bridges.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn within_table() {
        let sup = policy(4, &[0, 1], 1024, Some(100), &["br0", "service"]);
        let cases: Vec<(Policy, Option<&str>)> = vec![
            (
                policy(4, &[0, 1], 1024, Some(100), &["br0", "service"]),
                None,
            ),
            (policy(1, &[], 0, None, &[]), None),
            (
                policy(5, &[0], 16, None, &[]),
                Some("policy above allows 4 unikernels, which is fewer than 5"),
            ),
            (
                policy(1, &[0], 2048, None, &[]),
                Some("policy above allows 1024 MB memory, which is fewer than 2048 MB"),
            ),
            (
                policy(1, &[0, 2, 3], 16, None, &[]),
                Some("policy above does not allow CPUids 2, 3"),
            ),
            (
                policy(1, &[0], 16, None, &["br1", "service"]),
                Some(
                    "policy above allows bridge(s) br0, service, which is not a superset of br1, service",
                ),
            ),
            (
                policy(1, &[0], 16, Some(101), &[]),
                Some("policy above allows 100 MB block storage, which is fewer than 101 MB"),
            ),
        ];
        for (sub, expected) in cases {
            assert_eq!(
                sup.contains(&sub).err().map(|e| e.to_string()).as_deref(),
                expected
            );
        }
        let no_block = policy(4, &[0], 1024, None, &[]);
        assert_eq!(
            no_block
                .contains(&policy(1, &[0], 16, Some(1), &[]))
                .unwrap_err()
                .to_string(),
            "policy above allows 0 MB block storage, which is fewer than 1 MB"
        );
    }

    #[test]
    fn usability_table() {
        let cases = [
            (
                policy(0, &[0], 32, None, &[]),
                Some("Unusable policy with no unikernels"),
            ),
            (
                policy(1, &[], 32, None, &[]),
                Some("Unusable policy with no CPUids"),
            ),
            (
                policy(1, &[0], 16, None, &[]),
                Some("Unusable policy with memory 16 MB <= 16 MB"),
            ),
            (
                policy(1, &[0], 17, Some(-1), &[]),
                Some("Unusable policy with block -1 MB < 0 MB"),
            ),
            (policy(1, &[0], 17, Some(0), &[]), None),
        ];
        for (p, expected) in cases {
            assert_eq!(p.usable().err().map(|e| e.to_string()).as_deref(), expected);
        }
    }
}
