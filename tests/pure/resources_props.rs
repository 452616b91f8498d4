//! Properties of the resource core under random sequences of policy add/remove, chain
//! application, create/replace/destroy and block add/remove. After every operation the
//! state is compared with a plain model and recomputed from scratch (never from the
//! aggregates): usage fits every policy on the way to the root, aggregates equal the
//! recomputation, what is freed is what was taken, and a refused operation changes nothing.
//! Every decision is also compared with a naive O(everything) oracle.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use petrel::name::{Label, Name, Path};
use petrel::policy::Policy;
use petrel::resources::{Multiset, PolicyOutcome, Resources, UnikernelUsage, Usage};

const LABELS: [&str; 3] = ["a", "b", "c"];
const BRIDGES: [&str; 2] = ["br0", "br1"];

#[derive(Debug, Clone)]
enum Op {
    AddPolicy(Path, Policy),
    RemovePolicy(Path),
    SetRoot(Policy),
    Chain(Vec<(Path, Policy)>),
    Create(Name, UnikernelUsage),
    Replace(Name, UnikernelUsage),
    /// Replace the n-th (modulo) unikernel present, if any.
    ReplaceNth(usize, UnikernelUsage),
    /// Replace the n-th (modulo) unikernel present by a copy of itself (same block
    /// devices) with this much more memory: succeeds only if its own share is freed.
    GrowNth(usize, i64),
    Destroy(Name),
    /// Destroy the n-th (modulo) unikernel present, if any.
    DestroyNth(usize),
    /// Remove the n-th (modulo) block device present, if any.
    RemoveBlockNth(usize),
    /// Remove the n-th (modulo) policy present (the root's included).
    RemovePolicyNth(usize),
    AddBlock(Name, i64),
    RemoveBlock(Name),
}

fn label() -> impl Strategy<Value = Label> {
    prop::sample::select(LABELS.to_vec()).prop_map(|l| Label::parse(l).unwrap())
}

fn path() -> impl Strategy<Value = Path> {
    prop::collection::vec(label(), 0..=2).prop_map(Path::from_labels)
}

/// Mostly labelled names, sometimes a path name (which must always be refused).
fn name() -> impl Strategy<Value = Name> {
    (path(), prop::option::weighted(0.9, label())).prop_map(|(p, l)| match l {
        Some(l) => Name::labelled(p, l),
        None => Name::of_path(p),
    })
}

fn policy(max_unikernels: i64, max_memory: i64, max_block: i64) -> impl Strategy<Value = Policy> {
    (
        0..=max_unikernels,
        prop::collection::btree_set(0..4i64, 0..=4),
        0..=max_memory,
        prop::option::of(0..=max_block),
        prop::collection::btree_set(prop::sample::select(BRIDGES.to_vec()), 0..=2),
    )
        .prop_map(|(unikernels, cpuids, memory, block, bridges)| Policy {
            unikernels,
            cpuids,
            memory,
            block,
            bridges: bridges.into_iter().map(String::from).collect(),
        })
}

fn usage() -> impl Strategy<Value = UnikernelUsage> {
    (
        prop::collection::btree_set(0..5i64, 0..=2),
        -1..=96i64,
        prop::collection::btree_set(prop::sample::select(vec!["br0", "br1", "br2"]), 0..=2),
        prop::collection::btree_set(label(), 0..=1),
    )
        .prop_map(|(cpuids, memory, bridges, block_devices)| UnikernelUsage {
            cpuids,
            memory,
            bridges: bridges.into_iter().map(String::from).collect(),
            block_devices,
        })
}

/// A chain: the policies of every prefix of a path, top-down.
fn chain() -> impl Strategy<Value = Vec<(Path, Policy)>> {
    prop::collection::vec((label(), policy(4, 256, 100)), 1..=3).prop_map(|links| {
        let mut at = Path::root();
        links
            .into_iter()
            .map(|(l, p)| {
                at = at.child(l);
                (at.clone(), p)
            })
            .collect()
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (path(), policy(5, 300, 120)).prop_map(|(p, pol)| Op::AddPolicy(p, pol)),
        1 => path().prop_map(Op::RemovePolicy),
        1 => policy(8, 600, 300).prop_map(Op::SetRoot),
        2 => chain().prop_map(Op::Chain),
        5 => (name(), usage()).prop_map(|(n, u)| Op::Create(n, u)),
        2 => (name(), usage()).prop_map(|(n, u)| Op::Replace(n, u)),
        2 => (any::<usize>(), usage()).prop_map(|(i, u)| Op::ReplaceNth(i, u)),
        2 => (any::<usize>(), -4..=48i64).prop_map(|(i, d)| Op::GrowNth(i, d)),
        1 => name().prop_map(Op::Destroy),
        2 => any::<usize>().prop_map(Op::DestroyNth),
        3 => (name(), -2..=60i64).prop_map(|(n, s)| Op::AddBlock(n, s)),
        1 => name().prop_map(Op::RemoveBlock),
        1 => any::<usize>().prop_map(Op::RemoveBlockNth),
        1 => any::<usize>().prop_map(Op::RemovePolicyNth),
    ]
}

/// What the state should hold, maintained by applying only the successful operations.
#[derive(Debug, Clone, Default)]
struct Model {
    policies: BTreeMap<Path, Policy>,
    unikernels: BTreeMap<Name, UnikernelUsage>,
    /// Block devices: size and the label of the unikernel using it.
    blocks: BTreeMap<Name, (i64, Option<Label>)>,
}

/// Usage recomputed from scratch, in `i128`.
#[derive(Debug, Default, PartialEq)]
struct Recomputed {
    unikernels: i128,
    memory: i128,
    block: i128,
    cpuids: BTreeMap<i64, u64>,
    bridges: BTreeMap<String, u64>,
}

impl Model {
    fn usage(&self, at: &Path) -> Recomputed {
        let mut r = Recomputed::default();
        for (_, u) in self.unikernels.iter().filter(|(n, _)| n.is_below(at)) {
            r.unikernels += 1;
            r.memory += i128::from(u.memory);
            for id in &u.cpuids {
                *r.cpuids.entry(*id).or_default() += 1;
            }
            for b in &u.bridges {
                *r.bridges.entry(b.clone()).or_default() += 1;
            }
        }
        for (_, (size, _)) in self.blocks.iter().filter(|(n, _)| n.is_below(at)) {
            r.block += i128::from(*size);
        }
        r
    }

    fn policies_on_the_way(&self, at: &Path) -> Vec<(&Path, &Policy)> {
        self.policies
            .iter()
            .filter(|(p, _)| at.starts_with(p))
            .collect()
    }

    /// Naive create decision: every policy from the root to the path, blocks, name.
    fn may_create(&self, n: &Name, u: &UnikernelUsage, replace: bool) -> bool {
        if n.is_path() || u.memory < 0 {
            return false;
        }
        let mut model = self.clone();
        if replace {
            model.destroy(n);
        }
        for (p, pol) in model.policies_on_the_way(n.path()) {
            let used = model.usage(p);
            if used.unikernels + 1 > i128::from(pol.unikernels)
                || used.memory + i128::from(u.memory) > i128::from(pol.memory)
                || !u.cpuids.is_subset(&pol.cpuids)
                || !u.bridges.is_subset(&pol.bridges)
            {
                return false;
            }
        }
        for d in &u.block_devices {
            match model
                .blocks
                .get(&Name::labelled(n.path().clone(), d.clone()))
            {
                Some((_, None)) => {}
                _ => return false,
            }
        }
        !model.unikernels.contains_key(n)
    }

    fn create(&mut self, n: &Name, u: UnikernelUsage) {
        let label = n.label().unwrap().clone();
        for d in &u.block_devices {
            let block = Name::labelled(n.path().clone(), d.clone());
            self.blocks.get_mut(&block).unwrap().1 = Some(label.clone());
        }
        self.unikernels.insert(n.clone(), u);
    }

    fn destroy(&mut self, n: &Name) -> Option<UnikernelUsage> {
        let u = self.unikernels.remove(n)?;
        for d in &u.block_devices {
            let block = Name::labelled(n.path().clone(), d.clone());
            self.blocks.get_mut(&block).unwrap().1 = None;
        }
        Some(u)
    }

    fn may_add_block(&self, n: &Name, size: i64) -> bool {
        if size <= 0 || n.is_path() || self.blocks.contains_key(n) {
            return false;
        }
        self.policies_on_the_way(n.path()).iter().all(|(p, pol)| {
            pol.block
                .is_some_and(|b| self.usage(p).block + i128::from(size) <= i128::from(b))
        })
    }

    /// Naive policy decision: `None` = refused, `Some(outcome)` otherwise.
    fn policy_outcome(&self, at: &Path, pol: &Policy) -> Option<PolicyOutcome> {
        if self.policies.get(at) == Some(pol) {
            return Some(PolicyOutcome::Unchanged);
        }
        if at.is_root() {
            return None;
        }
        let above_ok = self
            .policies
            .iter()
            .filter(|(p, _)| at.starts_with(p) && *p != at)
            .all(|(_, above)| above.contains(pol).is_ok());
        let below_ok = self
            .policies
            .iter()
            .filter(|(p, _)| p.starts_with(at) && *p != at)
            .all(|(_, below)| pol.contains(below).is_ok());
        (above_ok && below_ok && fits(&self.usage(at), pol)).then_some(PolicyOutcome::Added)
    }

    fn may_set_root(&self, pol: &Policy) -> bool {
        self.policies
            .iter()
            .filter(|(p, _)| !p.is_root())
            .all(|(_, below)| pol.contains(below).is_ok())
            && fits(&self.usage(&Path::root()), pol)
    }
}

fn fits(used: &Recomputed, pol: &Policy) -> bool {
    used.cpuids.keys().all(|id| pol.cpuids.contains(id))
        && used.bridges.keys().all(|b| pol.bridges.contains(b))
        && used.unikernels <= i128::from(pol.unikernels)
        && used.memory <= i128::from(pol.memory)
        && used.block <= i128::from(pol.block.unwrap_or(0))
}

fn as_recomputed(u: &Usage) -> Recomputed {
    let multiset = |m: &Multiset<i64>| m.distinct().map(|id| (*id, m.count(id))).collect();
    Recomputed {
        unikernels: i128::from(u.unikernels),
        memory: i128::from(u.memory),
        block: i128::from(u.block),
        cpuids: multiset(&u.cpuids),
        bridges: u
            .bridges
            .distinct()
            .map(|b| (b.clone(), u.bridges.count(b)))
            .collect(),
    }
}

/// Every path of depth 0..=3 over the labels (all nodes the operations can reach).
fn all_paths() -> Vec<Path> {
    let mut paths = vec![Path::root()];
    let mut frontier = vec![Path::root()];
    for _ in 0..3 {
        let mut next = Vec::new();
        for p in &frontier {
            for l in LABELS {
                next.push(p.child(Label::parse(l).unwrap()));
            }
        }
        paths.extend(next.iter().cloned());
        frontier = next;
    }
    paths
}

/// Compares the state with the model and checks every invariant from scratch.
fn check_invariants(r: &Resources, model: &Model, paths: &[Path]) -> Result<(), TestCaseError> {
    // Listings equal the model.
    let policies: BTreeMap<Path, Policy> = r
        .policies_below(&Path::root())
        .into_iter()
        .map(|(n, p)| (n.path().clone(), p))
        .collect();
    prop_assert_eq!(&policies, &model.policies);
    let unikernels: BTreeMap<Name, UnikernelUsage> = r
        .unikernels_below(&Path::root())
        .into_iter()
        .map(|(n, u)| (n, u.clone()))
        .collect();
    prop_assert_eq!(&unikernels, &model.unikernels);
    let blocks: BTreeMap<Name, (i64, Option<Label>)> = r
        .blocks_below(&Path::root())
        .into_iter()
        .map(|(n, b)| (n, (b.size_mb, b.attached_to)))
        .collect();
    prop_assert_eq!(&blocks, &model.blocks);

    for at in paths {
        let recomputed = model.usage(at);
        // Aggregates equal a recomputation from scratch.
        prop_assert_eq!(
            as_recomputed(&r.usage(at)),
            model.usage(at),
            "usage at {}",
            at
        );
        // Usage never exceeds a policy; each policy is within every policy above it.
        if let Some(pol) = model.policies.get(at) {
            prop_assert!(fits(&recomputed, pol), "usage at {} exceeds its policy", at);
            for (above_at, above) in model.policies_on_the_way(at) {
                if above_at != at {
                    prop_assert!(
                        above.contains(pol).is_ok(),
                        "{} not within {}",
                        at,
                        above_at
                    );
                }
            }
        }
        // Relative listings are the absolute ones below `at`.
        let below: Vec<Name> = r
            .unikernels_below(at)
            .into_iter()
            .map(|(n, _)| {
                let labels = [at.labels(), n.path().labels()].concat();
                Name::labelled(Path::from_labels(labels), n.label().unwrap().clone())
            })
            .collect();
        let expected: Vec<Name> = model
            .unikernels
            .keys()
            .filter(|n| n.is_below(at))
            .cloned()
            .collect();
        prop_assert_eq!(below, expected);
    }
    // Attachments agree both ways.
    for (n, u) in &model.unikernels {
        for d in &u.block_devices {
            let block = Name::labelled(n.path().clone(), d.clone());
            prop_assert_eq!(
                model.blocks.get(&block).and_then(|b| b.1.as_ref()),
                n.label()
            );
        }
    }
    for (b, (_, user)) in &model.blocks {
        if let Some(user) = user {
            let n = Name::labelled(b.path().clone(), user.clone());
            let u = model.unikernels.get(&n);
            prop_assert!(u.is_some_and(|u| u.block_devices.contains(b.label().unwrap())));
        }
    }
    Ok(())
}

/// Runs one operation against both, checking the decision and that refusals change nothing.
fn step(r: &mut Resources, model: &mut Model, op: Op) -> Result<(), TestCaseError> {
    fn nth<K: Clone, V>(map: &BTreeMap<K, V>, i: usize) -> Option<K> {
        map.keys().nth(i % map.len().max(1)).cloned()
    }
    let op = match op {
        Op::ReplaceNth(i, u) => match nth(&model.unikernels, i) {
            Some(n) => Op::Replace(n, u),
            None => return Ok(()),
        },
        Op::GrowNth(i, delta) => match nth(&model.unikernels, i) {
            Some(n) => {
                let mut u = model.unikernels[&n].clone();
                u.memory += delta;
                Op::Replace(n, u)
            }
            None => return Ok(()),
        },
        Op::DestroyNth(i) => match nth(&model.unikernels, i) {
            Some(n) => Op::Destroy(n),
            None => return Ok(()),
        },
        Op::RemoveBlockNth(i) => match nth(&model.blocks, i) {
            Some(n) => Op::RemoveBlock(n),
            None => return Ok(()),
        },
        Op::RemovePolicyNth(i) => match nth(&model.policies, i) {
            Some(p) => Op::RemovePolicy(p),
            None => return Ok(()),
        },
        op => op,
    };
    let before = r.clone();
    let ok = match op {
        Op::AddPolicy(at, pol) => {
            let expected = model.policy_outcome(&at, &pol);
            let result = r.add_policy(&at, pol.clone());
            prop_assert_eq!(result.as_ref().ok().copied(), expected, "{:?}", result);
            if expected == Some(PolicyOutcome::Added) {
                model.policies.insert(at, pol);
            }
            result.is_ok()
        }
        Op::RemovePolicy(at) => {
            let expected = if at.is_root() {
                None
            } else {
                model.policies.remove(&at)
            };
            let result = r.remove_policy(&at);
            prop_assert_eq!(result.as_ref().ok(), expected.as_ref(), "{:?}", result);
            expected.is_some()
        }
        Op::SetRoot(pol) => {
            let expected = model.may_set_root(&pol);
            let result = r.set_root_policy(pol.clone());
            prop_assert_eq!(result.is_ok(), expected, "{:?}", result);
            if expected {
                model.policies.insert(Path::root(), pol);
            }
            expected
        }
        Op::Chain(links) => {
            // Top-down, each checked against the ones applied before it.
            let mut trial = model.clone();
            let mut failed_at = None;
            let expected: Option<Vec<PolicyOutcome>> = links
                .iter()
                .enumerate()
                .map(|(index, (at, pol))| {
                    let outcome = trial.policy_outcome(at, pol);
                    match outcome {
                        Some(_) => {
                            trial.policies.insert(at.clone(), pol.clone());
                        }
                        None => failed_at = Some((index, at.clone())),
                    }
                    outcome
                })
                .collect();
            let result = r.apply_policies(&links);
            prop_assert_eq!(result.as_ref().ok(), expected.as_ref(), "{:?}", result);
            prop_assert_eq!(result.err().map(|e| (e.index, e.path)), failed_at);
            if expected.is_some() {
                *model = trial;
            }
            expected.is_some()
        }
        Op::Create(n, u) => {
            let expected = model.may_create(&n, &u, false);
            prop_assert_eq!(r.check_create(&n, &u).is_ok(), expected);
            let result = r.insert_unikernel(&n, u.clone());
            prop_assert_eq!(result.is_ok(), expected, "{:?}", result);
            if expected {
                // Destroying right away frees exactly what the create took.
                let mut undone = r.clone();
                prop_assert_eq!(undone.remove_unikernel(&n), Some(u.clone()));
                prop_assert_eq!(&undone, &before);
                model.create(&n, u);
            }
            expected
        }
        Op::Replace(n, u) => {
            let expected = model.may_create(&n, &u, true);
            let result = r.check_replace(&n, &u);
            prop_assert_eq!(result.is_ok(), expected, "{:?}", result);
            if expected {
                let old = r.remove_unikernel(&n);
                prop_assert_eq!(&old, &model.destroy(&n));
                prop_assert_eq!(r.insert_unikernel(&n, u.clone()), Ok(()));
                model.create(&n, u);
            }
            expected
        }
        Op::Destroy(n) => {
            let removed = r.remove_unikernel(&n);
            prop_assert_eq!(&removed, &model.destroy(&n));
            removed.is_some()
        }
        Op::ReplaceNth(..)
        | Op::GrowNth(..)
        | Op::DestroyNth(_)
        | Op::RemoveBlockNth(_)
        | Op::RemovePolicyNth(_) => {
            unreachable!("resolved above")
        }
        Op::AddBlock(n, size) => {
            let expected = model.may_add_block(&n, size);
            let result = r.insert_block(&n, size);
            prop_assert_eq!(result.is_ok(), expected, "{:?}", result);
            if expected {
                let mut undone = r.clone();
                prop_assert_eq!(undone.remove_block(&n), Ok(size));
                prop_assert_eq!(&undone, &before);
                model.blocks.insert(n, (size, None));
            }
            expected
        }
        Op::RemoveBlock(n) => {
            let expected = model.blocks.get(&n).is_some_and(|b| b.1.is_none());
            let result = r.remove_block(&n);
            prop_assert_eq!(result.is_ok(), expected, "{:?}", result);
            if expected {
                prop_assert_eq!(result.ok(), model.blocks.remove(&n).map(|b| b.0));
            }
            expected
        }
    };
    if !ok {
        prop_assert_eq!(&*r, &before, "a refused operation changes nothing");
    }
    Ok(())
}

fn host() -> Policy {
    Policy {
        unikernels: 6,
        cpuids: BTreeSet::from([0, 1, 2, 3]),
        memory: 512,
        block: Some(200),
        bridges: BRIDGES.iter().map(|b| b.to_string()).collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_every_invariant(ops in prop::collection::vec(op(), 1..60)) {
        let paths = all_paths();
        let mut r = Resources::new(host());
        let mut model = Model::default();
        model.policies.insert(Path::root(), host());
        for op in ops {
            step(&mut r, &mut model, op)?;
            check_invariants(&r, &model, &paths)?;
        }
    }
}
