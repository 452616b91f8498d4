//! What a unikernel or block device takes, and usage aggregated over a subtree.

use std::collections::{BTreeMap, BTreeSet};

use crate::name::Label;

/// The resources one unikernel takes, as far as policies are concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnikernelUsage {
    /// CPU ids the unikernel is pinned to.
    pub cpuids: BTreeSet<i64>,
    /// Memory in MB; a negative value is refused.
    pub memory: i64,
    /// Host bridges it uses: the bridge of each network device, or the device's name when
    /// it names no bridge (albatross's "bridges used").
    pub bridges: BTreeSet<String>,
    /// Labels of the block devices it uses; a unikernel `p:u` uses the block devices
    /// `p:<label>` of its own path.
    pub block_devices: BTreeSet<Label>,
}

/// A block device: its size and the unikernel (of the same path) it is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockState {
    /// Size in MB (always positive).
    pub size_mb: i64,
    /// Label of the unikernel in the same path that uses it, if any.
    pub attached_to: Option<Label>,
}

impl BlockState {
    /// True if a unikernel uses the block device (albatross: "active").
    pub fn is_attached(&self) -> bool {
        self.attached_to.is_some()
    }
}

/// Usage aggregated over a subtree: every unikernel and block device whose name lies in
/// the subtree of a path, the path's own ones included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Number of running unikernels.
    pub unikernels: i64,
    /// Sum of their memory, in MB.
    pub memory: i64,
    /// Sum of the sizes of all block devices, attached or not, in MB.
    pub block: i64,
    /// CPU ids in use, each counted once per unikernel pinned to it.
    pub cpuids: Multiset<i64>,
    /// Bridges in use, each counted once per unikernel using it.
    pub bridges: Multiset<String>,
}

impl Usage {
    /// True if nothing is in use.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Adds one unikernel. The checks before keep every sum within the root policy,
    /// itself an `i64`, so the saturation never happens.
    pub(super) fn add_unikernel(&mut self, u: &UnikernelUsage) {
        self.unikernels = self.unikernels.saturating_add(1);
        self.memory = self.memory.saturating_add(u.memory);
        u.cpuids.iter().for_each(|id| self.cpuids.insert(*id));
        u.bridges
            .iter()
            .for_each(|b| self.bridges.insert(b.clone()));
    }

    /// Takes away exactly what [`Usage::add_unikernel`] added.
    pub(super) fn remove_unikernel(&mut self, u: &UnikernelUsage) {
        self.unikernels = self.unikernels.saturating_sub(1);
        self.memory = self.memory.saturating_sub(u.memory);
        u.cpuids.iter().for_each(|id| self.cpuids.remove(id));
        u.bridges.iter().for_each(|b| self.bridges.remove(b));
    }
}

/// A multiset: each distinct element with how many times it is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multiset<T: Ord>(BTreeMap<T, u64>);

impl<T: Ord> Default for Multiset<T> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

impl<T: Ord> Multiset<T> {
    /// Adds one occurrence of `item`.
    pub fn insert(&mut self, item: T) {
        let count = self.0.entry(item).or_insert(0);
        *count = count.saturating_add(1);
    }

    /// Removes one occurrence of `item`, if present.
    pub fn remove(&mut self, item: &T) {
        if let Some(count) = self.0.get_mut(item) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.0.remove(item);
            }
        }
    }

    /// How many times `item` is present.
    pub fn count(&self, item: &T) -> u64 {
        self.0.get(item).copied().unwrap_or(0)
    }

    /// The distinct elements, ascending.
    pub fn distinct(&self) -> impl Iterator<Item = &T> {
        self.0.keys()
    }

    /// The distinct elements that are not in `allowed`, ascending.
    pub fn not_in(&self, allowed: &BTreeSet<T>) -> BTreeSet<T>
    where
        T: Clone,
    {
        self.distinct()
            .filter(|item| !allowed.contains(item))
            .cloned()
            .collect()
    }

    /// True if nothing is present.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T: Ord> FromIterator<T> for Multiset<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut set = Self::default();
        iter.into_iter().for_each(|item| set.insert(item));
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiset_counts() {
        let mut m: Multiset<i64> = [3, 1, 3].into_iter().collect();
        assert_eq!((m.count(&3), m.count(&1), m.count(&2)), (2, 1, 0));
        m.remove(&3);
        m.remove(&2);
        assert_eq!(m.distinct().copied().collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(m.not_in(&BTreeSet::from([1])), BTreeSet::from([3]));
        m.remove(&3);
        m.remove(&1);
        assert!(m.is_empty());
        assert_eq!(m, Multiset::default());
    }

    #[test]
    fn add_and_remove_are_inverse() {
        let u = UnikernelUsage {
            cpuids: BTreeSet::from([0, 2]),
            memory: 64,
            bridges: BTreeSet::from(["br0".to_string()]),
            block_devices: BTreeSet::new(),
        };
        let mut usage = Usage::default();
        usage.add_unikernel(&u);
        usage.add_unikernel(&u);
        assert_eq!(
            (usage.unikernels, usage.memory, usage.cpuids.count(&2)),
            (2, 128, 2)
        );
        usage.remove_unikernel(&u);
        usage.remove_unikernel(&u);
        assert!(usage.is_empty());
    }
}
