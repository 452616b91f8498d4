//! The resource core: policies, unikernels and block devices in one label trie, with the
//! usage of every subtree aggregated in its node (`spec/names-and-policies.md` §7, §9).
//! Pure: no I/O, no clock, no threads.
//!
//! Every path node holds the policy stored at that path, the unikernels and block devices
//! labelled directly in that path, and the [`Usage`] of its whole subtree. Creating or
//! removing a unikernel or block device updates the aggregates on the way from the root to
//! its path, so every check reads one aggregate per policy on that way: a create or block
//! add costs O(depth), whatever the number of tenants and unikernels.
//!
//! Where petrel differs from albatross (DESIGN.md, "Where petrel deliberately differs"):
//! - a create or block add is checked against **every** policy from the root (the host)
//!   down to its own path, not only the one exactly at its path (Note N2); the policy at
//!   the own path is checked first and refuses with albatross's texts, the ones above
//!   with petrel's ("policy of a: would be exceeded: unikernels (2 allowed, 2 running)");
//! - a policy add is checked against every policy above it, the root's included (N4);
//! - a chain's policies are applied top-down as one transaction ([`Resources::apply_policies`]);
//! - `foo:` and `:foo` are distinct (N5); a path name cannot create anything (N6);
//! - the root policy, the host's resources, is always present: it is set with
//!   [`Resources::set_root_policy`] and cannot be removed or changed by a policy add.

mod error;
mod usage;

use std::collections::BTreeMap;

use crate::name::{Label, Name, Path};
use crate::policy::{Policy, WithinError};
use crate::trie::Trie;

pub use error::{ChainPolicyError, Exceeded, PolicyError, ResourceError};
pub use usage::{BlockState, Multiset, UnikernelUsage, Usage};

/// Largest block device, in MB: its size in bytes (MB × 2^20) must fit an `i64`, as in
/// albatross, which refuses larger ones with "overflow while computing bytes".
pub const MAX_BLOCK_MB: i64 = i64::MAX >> 20;

/// What a policy add did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyOutcome {
    /// The policy was stored (new, or replacing a different one): "added policy".
    Added,
    /// An equal policy was already stored: "no modification of policy".
    Unchanged,
}

impl PolicyOutcome {
    /// albatross's reply text for this outcome.
    pub fn text(self) -> &'static str {
        match self {
            Self::Added => "added policy",
            Self::Unchanged => "no modification of policy",
        }
    }
}

/// Policies, unikernels and block devices of the host, with aggregated usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    trie: Trie<Entry>,
}

/// What one path node holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Entry {
    /// The policy stored at this path (always present at the root).
    policy: Option<Policy>,
    /// Unikernels labelled directly in this path.
    unikernels: BTreeMap<Label, UnikernelUsage>,
    /// Block devices labelled directly in this path.
    blocks: BTreeMap<Label, BlockState>,
    /// Usage of the whole subtree, this node's own unikernels and block devices included.
    usage: Usage,
}

impl Resources {
    /// An empty host whose root policy is `root` (its CPUs, memory, bridges and disk).
    pub fn new(root: Policy) -> Self {
        Self {
            trie: Trie::new(Entry {
                policy: Some(root),
                ..Entry::default()
            }),
        }
    }

    /// Replaces the root policy after checking that it contains every policy stored
    /// below it and everything in use (the checks of §7.1, without "above").
    pub fn set_root_policy(&mut self, policy: Policy) -> Result<PolicyOutcome, PolicyError> {
        let root = Path::root();
        if self.trie.root().policy.as_ref() == Some(&policy) {
            return Ok(PolicyOutcome::Unchanged);
        }
        self.check_below(&root, &policy)?;
        check_usage(&self.trie.root().usage, &policy)?;
        if let Some(entry) = self.trie.value_mut(&root) {
            entry.policy = Some(policy);
        }
        Ok(PolicyOutcome::Added)
    }

    /// The policy stored exactly at `path`.
    pub fn policy(&self, path: &Path) -> Option<&Policy> {
        self.trie.value(path)?.policy.as_ref()
    }

    /// Stores `policy` at `path` (§7.1): `Unchanged` if an equal one is stored; otherwise
    /// every policy above (the root's included) must contain it, it must contain every
    /// policy below, and everything in use in its subtree must fit it.
    pub fn add_policy(
        &mut self,
        path: &Path,
        policy: Policy,
    ) -> Result<PolicyOutcome, PolicyError> {
        self.add_policy_ref(path, &policy, Above::WithRoot)
            .map(|previous| match previous {
                Some(_) => PolicyOutcome::Added,
                None => PolicyOutcome::Unchanged,
            })
    }

    /// Restores a policy read from the state file at start-up: as
    /// [`Resources::add_policy`], except that the root policy is not consulted. The root
    /// policy is the host as discovered at this start, and a host can shrink under its
    /// tenants (a CPU or a bridge gone, less memory) or come with an albatross state file
    /// whose first-level policies were never checked against the host (Note N4); refusing
    /// the policy would mean refusing to start at all. The policy is kept, and the root
    /// policy is still enforced on every create and block add below it. Returns how the
    /// policy exceeds the root policy, if it does, for the caller to report.
    pub fn restore_stored_policy(
        &mut self,
        path: &Path,
        policy: Policy,
    ) -> Result<Option<WithinError>, PolicyError> {
        let beyond_root = self
            .trie
            .root()
            .policy
            .as_ref()
            .and_then(|root| root.contains(&policy).err());
        self.add_policy_ref(path, &policy, Above::WithoutRoot)?;
        Ok(beyond_root)
    }

    /// Applies the policies of a certificate chain, given top-down (the one closest to the
    /// trust anchor first), as one transaction: each is checked and stored in turn, and if
    /// one is refused, every policy stored by this call is put back as it was.
    pub fn apply_policies(
        &mut self,
        chain: &[(Path, Policy)],
    ) -> Result<Vec<PolicyOutcome>, ChainPolicyError> {
        let mut undo: Vec<(&Path, Option<Policy>)> = Vec::new();
        let mut outcomes = Vec::with_capacity(chain.len());
        for (index, (path, policy)) in chain.iter().enumerate() {
            match self.add_policy_ref(path, policy, Above::WithRoot) {
                Ok(Some(previous)) => {
                    undo.push((path, previous));
                    outcomes.push(PolicyOutcome::Added);
                }
                Ok(None) => outcomes.push(PolicyOutcome::Unchanged),
                Err(source) => {
                    for (path, previous) in undo.into_iter().rev() {
                        self.restore_policy(path, previous);
                    }
                    return Err(ChainPolicyError {
                        index,
                        path: path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(outcomes)
    }

    /// Removes the policy at `path` (§7.2: no check of what is below or running) and
    /// returns it.
    pub fn remove_policy(&mut self, path: &Path) -> Result<Policy, PolicyError> {
        if path.is_root() {
            return Err(PolicyError::RootNotRemovable);
        }
        let removed = self
            .trie
            .value_mut(path)
            .and_then(|entry| entry.policy.take())
            .ok_or(PolicyError::Unknown)?;
        self.trie.prune(path, Entry::is_unused);
        Ok(removed)
    }

    /// Every policy in the subtree of `path`, `path`'s own included, named relative to
    /// `path` (§7.3): the one at `path` is `:`, one at `path:x` is `x:`. Sorted by name.
    pub fn policies_below(&self, path: &Path) -> Vec<(Name, Policy)> {
        self.trie
            .subtree(path)
            .into_iter()
            .filter_map(|(rel, entry)| Some((Name::of_path(rel), entry.policy.clone()?)))
            .collect()
    }

    /// Checks whether the unikernel `name` may be created (§7.4): against every policy
    /// from the root down to its path (its own path's first, with albatross's texts), then
    /// its block devices (they must exist in its path and be detached), then its name.
    pub fn check_create(&self, name: &Name, u: &UnikernelUsage) -> Result<(), ResourceError> {
        self.check_unikernel(name, u, Mode::Create)
    }

    /// As [`Resources::check_create`], as if the unikernel of that name (if any) were gone:
    /// for force-create and restart, which replace it.
    pub fn check_replace(&self, name: &Name, u: &UnikernelUsage) -> Result<(), ResourceError> {
        self.check_unikernel(name, u, Mode::Replace)
    }

    /// Checks as [`Resources::check_create`], then records the unikernel and attaches its
    /// block devices.
    pub fn insert_unikernel(
        &mut self,
        name: &Name,
        u: UnikernelUsage,
    ) -> Result<(), ResourceError> {
        self.check_create(name, &u)?;
        let label = labelled(name)?;
        let mut own = None;
        for entry in self.trie.along_mut_creating(name.path()) {
            entry.usage.add_unikernel(&u);
            own = Some(entry);
        }
        if let Some(entry) = own {
            for device in &u.block_devices {
                if let Some(block) = entry.blocks.get_mut(device) {
                    block.attached_to = Some(label.clone());
                }
            }
            entry.unikernels.insert(label.clone(), u);
        }
        Ok(())
    }

    /// Removes the unikernel `name`, frees exactly what [`Resources::insert_unikernel`]
    /// took and detaches its block devices; `None` if there is no such unikernel.
    pub fn remove_unikernel(&mut self, name: &Name) -> Option<UnikernelUsage> {
        let label = name.label()?;
        let path = name.path();
        let entry = self.trie.value_mut(path)?;
        let u = entry.unikernels.remove(label)?;
        for block in entry.blocks.values_mut() {
            if block.attached_to.as_ref() == Some(label) {
                block.attached_to = None;
            }
        }
        for entry in self.trie.along_mut(path) {
            entry.usage.remove_unikernel(&u);
        }
        self.trie.prune(path, Entry::is_unused);
        Some(u)
    }

    /// The unikernel `name`, if recorded.
    pub fn unikernel(&self, name: &Name) -> Option<&UnikernelUsage> {
        self.trie.value(name.path())?.unikernels.get(name.label()?)
    }

    /// Every unikernel in the subtree of `path`, named relative to `path` (one directly
    /// in `path` labelled `x` is `:x`, one in `path:a` is `a:x`). Sorted by name.
    pub fn unikernels_below(&self, path: &Path) -> Vec<(Name, &UnikernelUsage)> {
        self.trie
            .subtree(path)
            .into_iter()
            .flat_map(|(rel, entry)| {
                entry
                    .unikernels
                    .iter()
                    .map(move |(label, u)| (Name::labelled(rel.clone(), label.clone()), u))
            })
            .collect()
    }

    /// Checks whether a block device `name` of `size_mb` MB may be added (§7.5): the size
    /// must be positive and at most [`MAX_BLOCK_MB`], the name free, and every policy from
    /// the root down to its path must leave room (its own path's first, albatross's texts).
    pub fn check_block_add(&self, name: &Name, size_mb: i64) -> Result<(), ResourceError> {
        if size_mb <= 0 || size_mb > MAX_BLOCK_MB {
            return Err(ResourceError::BlockSize(size_mb));
        }
        let label = labelled(name)?;
        let path = name.path();
        let own = self.trie.value(path);
        if own.is_some_and(|entry| entry.blocks.contains_key(label)) {
            return Err(ResourceError::BlockExists);
        }
        if let Some(entry) = own {
            if let Some(policy) = &entry.policy {
                check_block(policy, entry.usage.block, size_mb).map_err(Exceeded::at_own_path)?;
            }
        }
        for (depth, entry) in self.trie.along(path).enumerate().take(path.labels().len()) {
            if let Some(policy) = &entry.policy {
                check_block(policy, entry.usage.block, size_mb)
                    .map_err(|e| e.above(prefix(path, depth)))?;
            }
        }
        Ok(())
    }

    /// Checks as [`Resources::check_block_add`], then records the (detached) block device.
    pub fn insert_block(&mut self, name: &Name, size_mb: i64) -> Result<(), ResourceError> {
        self.check_block_add(name, size_mb)?;
        let label = labelled(name)?;
        let mut own = None;
        for entry in self.trie.along_mut_creating(name.path()) {
            entry.usage.block = entry.usage.block.saturating_add(size_mb);
            own = Some(entry);
        }
        if let Some(entry) = own {
            let state = BlockState {
                size_mb,
                attached_to: None,
            };
            entry.blocks.insert(label.clone(), state);
        }
        Ok(())
    }

    /// Removes the block device `name` unless a unikernel uses it; returns its size.
    pub fn remove_block(&mut self, name: &Name) -> Result<i64, ResourceError> {
        let label = labelled(name)?;
        let path = name.path();
        let entry = self
            .trie
            .value_mut(path)
            .ok_or(ResourceError::RemoveBlockNotFound)?;
        match entry.blocks.get(label) {
            None => return Err(ResourceError::RemoveBlockNotFound),
            Some(block) if block.is_attached() => return Err(ResourceError::RemoveBlockInUse),
            Some(_) => {}
        }
        let size_mb = entry.blocks.remove(label).map_or(0, |block| block.size_mb);
        for entry in self.trie.along_mut(path) {
            entry.usage.block = entry.usage.block.saturating_sub(size_mb);
        }
        self.trie.prune(path, Entry::is_unused);
        Ok(size_mb)
    }

    /// The block device `name`, if recorded.
    pub fn block(&self, name: &Name) -> Option<BlockState> {
        self.trie
            .value(name.path())?
            .blocks
            .get(name.label()?)
            .cloned()
    }

    /// Every block device in the subtree of `path`, named relative to `path`. Sorted by
    /// name.
    pub fn blocks_below(&self, path: &Path) -> Vec<(Name, BlockState)> {
        self.trie
            .subtree(path)
            .into_iter()
            .flat_map(|(rel, entry)| {
                entry.blocks.iter().map(move |(label, block)| {
                    (Name::labelled(rel.clone(), label.clone()), block.clone())
                })
            })
            .collect()
    }

    /// The usage aggregated over the subtree of `path` (empty if nothing is there).
    pub fn usage(&self, path: &Path) -> Usage {
        self.trie
            .value(path)
            .map(|entry| entry.usage.clone())
            .unwrap_or_default()
    }

    /// The checks of a policy add; on success stores the policy and returns
    /// `Some(previous)`, or `None` if an equal policy was already stored.
    fn add_policy_ref(
        &mut self,
        path: &Path,
        policy: &Policy,
        above: Above,
    ) -> Result<Option<Option<Policy>>, PolicyError> {
        let skip = match above {
            Above::WithRoot => 0,
            Above::WithoutRoot => 1,
        };
        let own = self.trie.value(path);
        if own.and_then(|entry| entry.policy.as_ref()) == Some(policy) {
            return Ok(None);
        }
        if path.is_root() {
            return Err(PolicyError::RootNotChangeable);
        }
        // Above: from the parent up to the root (albatross's order, but with the root).
        let above: Vec<&Entry> = self.trie.along(path).take(path.labels().len()).collect();
        for (depth, entry) in above.iter().enumerate().skip(skip).rev() {
            if let Some(stored) = &entry.policy {
                stored
                    .contains(policy)
                    .map_err(|source| PolicyError::Above {
                        path: prefix(path, depth),
                        source,
                    })?;
            }
        }
        self.check_below(path, policy)?;
        if let Some(entry) = own {
            check_usage(&entry.usage, policy)?;
        }
        let entry = self.trie.along_mut_creating(path).last();
        Ok(entry.map(|entry| entry.policy.replace(policy.clone())))
    }

    /// Every policy stored strictly below `path` must be within `policy`.
    fn check_below(&self, path: &Path, policy: &Policy) -> Result<(), PolicyError> {
        for (rel, entry) in self.trie.subtree(path).into_iter().skip(1) {
            if let Some(below) = &entry.policy {
                policy
                    .contains(below)
                    .map_err(|source| PolicyError::Below {
                        path: Path::from_labels([path.labels(), rel.labels()].concat()),
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// Puts the policy at `path` back to `previous` (rollback of a chain; no checks, the
    /// state being restored was consistent).
    fn restore_policy(&mut self, path: &Path, previous: Option<Policy>) {
        let removed = previous.is_none();
        if let Some(entry) = self.trie.value_mut(path) {
            entry.policy = previous;
        }
        if removed {
            self.trie.prune(path, Entry::is_unused);
        }
    }

    fn check_unikernel(
        &self,
        name: &Name,
        u: &UnikernelUsage,
        mode: Mode,
    ) -> Result<(), ResourceError> {
        let label = labelled(name)?;
        if u.memory < 0 {
            return Err(ResourceError::NegativeMemory(u.memory));
        }
        let path = name.path();
        let own = self.trie.value(path);
        let existing = own.and_then(|entry| entry.unikernels.get(label));
        // What the unikernel being replaced takes is counted as free.
        let freed = match (mode, existing) {
            (Mode::Replace, Some(old)) => (1, old.memory),
            _ => (0, 0),
        };
        if let Some(entry) = own {
            if let Some(policy) = &entry.policy {
                check_unikernel_policy(policy, &entry.usage, freed, u)
                    .map_err(Exceeded::at_own_path)?;
            }
        }
        for (depth, entry) in self.trie.along(path).enumerate().take(path.labels().len()) {
            if let Some(policy) = &entry.policy {
                check_unikernel_policy(policy, &entry.usage, freed, u)
                    .map_err(|e| e.above(prefix(path, depth)))?;
            }
        }
        for device in &u.block_devices {
            let block = own.and_then(|entry| entry.blocks.get(device));
            let block_name = || Name::labelled(path.clone(), device.clone());
            match block {
                None => return Err(ResourceError::BlockNotFound(block_name())),
                Some(BlockState {
                    attached_to: Some(user),
                    ..
                }) if !(mode == Mode::Replace && user == label) => {
                    return Err(ResourceError::BlockInUse(block_name()));
                }
                Some(_) => {}
            }
        }
        if mode == Mode::Create && existing.is_some() {
            return Err(ResourceError::UnikernelExists);
        }
        Ok(())
    }
}

impl Entry {
    /// True if the node may be pruned (when it also has no children).
    fn is_unused(&self) -> bool {
        self.policy.is_none() && self.unikernels.is_empty() && self.blocks.is_empty()
    }
}

/// Whether the unikernel of the same name is taken as gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A new unikernel: the name must be free.
    Create,
    /// Force-create or restart: the existing one (if any) is replaced.
    Replace,
}

/// Which policies above a new policy must contain it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Above {
    /// Every one, the root policy (the host) included.
    WithRoot,
    /// Every one but the root policy (restoring the state file at start-up).
    WithoutRoot,
}

/// The policy checks of a create against one policy, in albatross's order: unikernels,
/// memory, CPU ids, bridges. `usage` is the subtree's; `freed` (count, memory) is taken off
/// it. Compared in `i128`, so no input can overflow.
fn check_unikernel_policy(
    policy: &Policy,
    usage: &Usage,
    freed: (i64, i64),
    u: &UnikernelUsage,
) -> Result<(), Exceeded> {
    let running = usage.unikernels.saturating_sub(freed.0);
    if i128::from(running) + 1 > i128::from(policy.unikernels) {
        return Err(Exceeded::Unikernels {
            allowed: policy.unikernels,
            running,
        });
    }
    let used = usage.memory.saturating_sub(freed.1);
    if i128::from(used) + i128::from(u.memory) > i128::from(policy.memory) {
        return Err(Exceeded::Memory {
            allowed: policy.memory,
            used,
            requested: u.memory,
        });
    }
    if !u.cpuids.is_subset(&policy.cpuids) {
        return Err(Exceeded::Cpuid(
            u.cpuids.difference(&policy.cpuids).copied().collect(),
        ));
    }
    if !u.bridges.is_subset(&policy.bridges) {
        return Err(Exceeded::Bridge(
            u.bridges.difference(&policy.bridges).cloned().collect(),
        ));
    }
    Ok(())
}

/// The block check of a block add against one policy.
fn check_block(policy: &Policy, used: i64, requested: i64) -> Result<(), Exceeded> {
    let allowed = policy.block.ok_or(Exceeded::NoBlock)?;
    if i128::from(used) + i128::from(requested) > i128::from(allowed) {
        return Err(Exceeded::Block {
            allowed,
            used,
            requested,
        });
    }
    Ok(())
}

/// Step 4 of §7.1: everything in use in the subtree fits `policy`, in albatross's order.
fn check_usage(usage: &Usage, policy: &Policy) -> Result<(), PolicyError> {
    let extra = usage.cpuids.not_in(&policy.cpuids);
    if !extra.is_empty() {
        return Err(PolicyError::UsedCpuids(extra));
    }
    if !usage.bridges.not_in(&policy.bridges).is_empty() {
        return Err(PolicyError::UsedBridges {
            allowed: policy.bridges.clone(),
            used: usage.bridges.distinct().cloned().collect(),
        });
    }
    if usage.unikernels > policy.unikernels {
        return Err(PolicyError::UsedUnikernels {
            limit: policy.unikernels,
            running: usage.unikernels,
        });
    }
    if usage.memory > policy.memory {
        return Err(PolicyError::UsedMemory {
            limit: policy.memory,
            used: usage.memory,
        });
    }
    let block = policy.block.unwrap_or(0);
    if usage.block > block {
        return Err(PolicyError::UsedBlock {
            limit: block,
            used: usage.block,
        });
    }
    Ok(())
}

/// The label of a unikernel or block device name; a path name is refused (N6).
fn labelled(name: &Name) -> Result<&Label, ResourceError> {
    name.label()
        .ok_or_else(|| ResourceError::PathName(name.clone()))
}

/// The first `depth` labels of `path`.
fn prefix(path: &Path, depth: usize) -> Path {
    Path::from_labels(path.labels().iter().take(depth).cloned().collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn host() -> Policy {
        Policy {
            unikernels: 100,
            cpuids: BTreeSet::from([0, 1, 2, 3]),
            memory: 4096,
            block: Some(1000),
            bridges: BTreeSet::from(["br0".to_string()]),
        }
    }

    fn small(memory: i64) -> UnikernelUsage {
        UnikernelUsage {
            memory,
            ..UnikernelUsage::default()
        }
    }

    #[test]
    fn aggregates_follow_inserts_and_removals() {
        let mut r = Resources::new(host());
        r.insert_unikernel(&name("a:b:x"), small(10)).unwrap();
        r.insert_unikernel(&name("a:y"), small(20)).unwrap();
        r.insert_block(&name("a:b:d"), 5).unwrap();
        let memory = |p: &str| r.usage(&Path::parse(p).unwrap()).memory;
        assert_eq!((memory(""), memory("a"), memory("a:b")), (30, 30, 10));
        assert_eq!(r.usage(&Path::root()).block, 5);
        assert_eq!(r.usage(&Path::root()).unikernels, 2);
        assert_eq!(r.remove_unikernel(&name("a:b:x")), Some(small(10)));
        assert_eq!(r.remove_block(&name("a:b:d")), Ok(5));
        assert_eq!(r.usage(&Path::parse("a:b").unwrap()), Usage::default());
        assert_eq!(
            r.trie
                .node(&Path::parse("a").unwrap())
                .unwrap()
                .child_count(),
            0
        );
    }

    #[test]
    fn label_and_path_are_distinct() {
        let mut r = Resources::new(host());
        r.insert_unikernel(&name(":foo"), small(10)).unwrap();
        assert_eq!(r.usage(&Path::parse("foo").unwrap()), Usage::default());
        assert_eq!(r.remove_unikernel(&name("foo:")), None);
        assert_eq!(r.unikernel(&name(":foo")), Some(&small(10)));
    }

    #[test]
    fn stored_policies_are_restored_beyond_the_host_but_not_beyond_their_parent() {
        let mut r = Resources::new(host());
        let wide = Policy {
            cpuids: BTreeSet::from([0, 5]),
            memory: 8192,
            ..host()
        };
        let a = Path::parse("a").unwrap();
        assert_eq!(
            r.restore_stored_policy(&a, wide.clone())
                .unwrap()
                .map(|e| e.to_string()),
            Some("policy above allows 4096 MB memory, which is fewer than 8192 MB".to_owned())
        );
        assert_eq!(r.policy(&a), Some(&wide));
        // The host still limits every create below it.
        let pinned = UnikernelUsage {
            cpuids: BTreeSet::from([5]),
            ..small(10)
        };
        assert_eq!(
            r.check_create(&name("a:x"), &pinned)
                .unwrap_err()
                .to_string(),
            "policy of : would be exceeded: cpuid (5 not allowed)"
        );
        // A stored policy still has to fit the stored policies above it.
        let b = Path::parse("a:b").unwrap();
        let wider = Policy {
            memory: 9000,
            ..wide.clone()
        };
        assert_eq!(
            r.restore_stored_policy(&b, wider).unwrap_err().to_string(),
            "policy above allows 8192 MB memory, which is fewer than 9000 MB"
        );
        assert_eq!(
            r.restore_stored_policy(&b, wide).unwrap(),
            Some(WithinError::Memory {
                above: 4096,
                below: 8192
            })
        );
        // Outside a restore, the host is checked as always.
        let c = Path::parse("c").unwrap();
        assert!(
            r.add_policy(
                &c,
                Policy {
                    memory: 8192,
                    ..host()
                }
            )
            .is_err()
        );
    }
}
