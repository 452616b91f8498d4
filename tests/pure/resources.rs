//! Table tests of the resource core: every refusal with its exact text
//! (`spec/names-and-policies.md` §7, DESIGN.md "Where petrel deliberately differs" 2–3).

use std::collections::BTreeSet;

use petrel::name::{Label, Name, Path};
use petrel::policy::{Policy, WithinError};
use petrel::resources::{
    BlockState, ChainPolicyError, Exceeded, MAX_BLOCK_MB, PolicyError, PolicyOutcome,
    ResourceError, Resources, UnikernelUsage,
};

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn path(s: &str) -> Path {
    Path::parse(s).unwrap()
}

fn label(s: &str) -> Label {
    Label::parse(s).unwrap()
}

fn pol(
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
        bridges: bridges.iter().map(|b| b.to_string()).collect(),
    }
}

/// The host: 10 unikernels, CPUs 0–3, 4096 MB, 1000 MB disk, bridges br0 and br1.
fn host() -> Policy {
    pol(10, &[0, 1, 2, 3], 4096, Some(1000), &["br0", "br1"])
}

fn uni(memory: i64, cpuids: &[i64], bridges: &[&str], blocks: &[&str]) -> UnikernelUsage {
    UnikernelUsage {
        cpuids: cpuids.iter().copied().collect(),
        memory,
        bridges: bridges.iter().map(|b| b.to_string()).collect(),
        block_devices: blocks.iter().map(|b| label(b)).collect(),
    }
}

fn mem(memory: i64) -> UnikernelUsage {
    uni(memory, &[], &[], &[])
}

fn err_text<T: std::fmt::Debug, E: std::fmt::Display>(r: Result<T, E>) -> String {
    r.unwrap_err().to_string()
}

/// Host with `a:` (4 unikernels, CPUs 0–1, 1024 MB, 100 MB block, br0) and
/// `a:b:` (2 unikernels, CPU 0, 512 MB, 50 MB block, br0).
fn tenants() -> Resources {
    let mut r = Resources::new(host());
    let a = pol(4, &[0, 1], 1024, Some(100), &["br0"]);
    let ab = pol(2, &[0], 512, Some(50), &["br0"]);
    assert_eq!(r.add_policy(&path("a"), a), Ok(PolicyOutcome::Added));
    assert_eq!(r.add_policy(&path("a:b"), ab), Ok(PolicyOutcome::Added));
    r
}

#[test]
fn policy_add_outcomes() {
    let mut r = tenants();
    let a = pol(4, &[0, 1], 1024, Some(100), &["br0"]);
    assert_eq!(
        r.add_policy(&path("a"), a.clone()),
        Ok(PolicyOutcome::Unchanged)
    );
    assert_eq!(PolicyOutcome::Unchanged.text(), "no modification of policy");
    assert_eq!(PolicyOutcome::Added.text(), "added policy");
    let bigger = pol(5, &[0, 1], 1024, Some(100), &["br0"]);
    assert_eq!(
        r.add_policy(&path("a"), bigger.clone()),
        Ok(PolicyOutcome::Added)
    );
    assert_eq!(r.policy(&path("a")), Some(&bigger));
    assert_eq!(r.policy(&path("a:x")), None);
}

#[test]
fn policy_add_above() {
    let cases: Vec<(&str, Policy, &str, &str)> = vec![
        // The root (host) policy is enforced on first-level policies (unlike albatross, N4).
        (
            "c",
            pol(11, &[0], 16, None, &[]),
            "",
            "policy above allows 10 unikernels, which is fewer than 11",
        ),
        (
            "c",
            pol(1, &[0], 4097, None, &[]),
            "",
            "policy above allows 4096 MB memory, which is fewer than 4097 MB",
        ),
        (
            "c:d",
            pol(1, &[0, 4, 5], 16, None, &[]),
            "",
            "policy above does not allow CPUids 4, 5",
        ),
        (
            "a:c",
            pol(5, &[0], 16, None, &[]),
            "a",
            "policy above allows 4 unikernels, which is fewer than 5",
        ),
        // Checked from the parent upwards: a:b: (2) refuses before a: (4) would.
        (
            "a:b:c",
            pol(3, &[0], 16, None, &[]),
            "a:b",
            "policy above allows 2 unikernels, which is fewer than 3",
        ),
        (
            "a:c:d",
            pol(1, &[0], 16, None, &["br0", "br1"]),
            "a",
            "policy above allows bridge(s) br0, which is not a superset of br0, br1",
        ),
        (
            "a:b:c",
            pol(1, &[0], 600, None, &[]),
            "a:b",
            "policy above allows 512 MB memory, which is fewer than 600 MB",
        ),
        (
            "a:b:c",
            pol(1, &[0], 16, Some(51), &[]),
            "a:b",
            "policy above allows 50 MB block storage, which is fewer than 51 MB",
        ),
        ("a:x", pol(1, &[1], 16, None, &["br0"]), "", ""),
    ];
    for (at, policy, above, text) in cases {
        let mut r = tenants();
        let before = r.clone();
        let result = r.add_policy(&path(at), policy);
        if text.is_empty() {
            assert_eq!(result, Ok(PolicyOutcome::Added), "{at}");
            continue;
        }
        let err = result.unwrap_err();
        assert_eq!(err.to_string(), text, "{at}");
        assert!(
            matches!(&err, PolicyError::Above { path: p, .. } if p == &path(above)),
            "{at}: {err:?}"
        );
        assert_eq!(r, before, "a refused policy changes nothing");
    }
}

#[test]
fn policy_add_above_with_no_block_storage() {
    let mut r = Resources::new(pol(10, &[0], 4096, None, &[]));
    assert_eq!(
        err_text(r.add_policy(&path("a"), pol(1, &[0], 16, Some(1), &[]))),
        "policy above allows 0 MB block storage, which is fewer than 1 MB"
    );
}

#[test]
fn policy_add_below() {
    let cases = [
        (
            pol(1, &[0, 1], 1024, Some(100), &["br0"]),
            "policy above allows 1 unikernels, which is fewer than 2",
        ),
        (
            pol(4, &[0, 1], 500, Some(100), &["br0"]),
            "policy above allows 500 MB memory, which is fewer than 512 MB",
        ),
        (
            pol(4, &[1], 1024, Some(100), &["br0"]),
            "policy above does not allow CPUids 0",
        ),
        (
            pol(4, &[0, 1], 1024, Some(100), &[]),
            "policy above allows bridge(s) , which is not a superset of br0",
        ),
        (
            pol(4, &[0, 1], 1024, None, &["br0"]),
            "policy above allows 0 MB block storage, which is fewer than 50 MB",
        ),
    ];
    for (policy, text) in cases {
        let mut r = tenants();
        let before = r.clone();
        let err = r.add_policy(&path("a"), policy).unwrap_err();
        assert_eq!(err.to_string(), text);
        assert!(matches!(&err, PolicyError::Below { path: p, .. } if p == &path("a:b")));
        assert_eq!(r, before);
    }
    // A new policy in the middle must contain what is already below it.
    let mut r = tenants();
    assert_eq!(
        r.add_policy(&path("a:b:c"), pol(2, &[0], 100, None, &[])),
        Ok(PolicyOutcome::Added)
    );
    assert_eq!(
        r.remove_policy(&path("a:b")),
        Ok(pol(2, &[0], 512, Some(50), &["br0"]))
    );
    let err = r
        .add_policy(&path("a:b"), pol(1, &[0], 100, None, &[]))
        .unwrap_err();
    assert_eq!(
        err,
        PolicyError::Below {
            path: path("a:b:c"),
            source: WithinError::Unikernels { above: 1, below: 2 }
        }
    );
}

#[test]
fn policy_add_against_usage() {
    let mut r = tenants();
    r.insert_unikernel(&name("a:b:x"), uni(100, &[0], &["br0"], &[]))
        .unwrap();
    r.insert_block(&name("a:b:disk"), 30).unwrap();
    // A policy at a:b: (nothing stored below it) meets the usage of its subtree, in
    // albatross's order: CPU ids, bridges, unikernels, memory, block.
    let cases = [
        (
            pol(2, &[1], 16, None, &[]),
            "policy does not allow CPUids 0",
        ),
        (
            pol(2, &[0], 512, Some(50), &[]),
            "policy allows bridges , which is not a superset of br0",
        ),
        (
            pol(0, &[0], 16, None, &["br0"]),
            "unikernel would exceed running unikernel limit set by policy to 0, running 1",
        ),
        (
            pol(1, &[0], 99, None, &["br0"]),
            "unikernel would exceed running memory limit set by policy to 99 MB, used 100 MB",
        ),
        (
            pol(1, &[0], 100, Some(29), &["br0"]),
            "unikernel would exceed running block storage limit set by policy to 29 MB, used 30 MB",
        ),
        (
            pol(1, &[0], 100, None, &["br0"]),
            "unikernel would exceed running block storage limit set by policy to 0 MB, used 30 MB",
        ),
        (pol(1, &[0], 100, Some(30), &["br0"]), ""),
    ];
    for (policy, text) in cases {
        let mut r = r.clone();
        let before = r.clone();
        let result = r.add_policy(&path("a:b"), policy.clone());
        if text.is_empty() {
            assert_eq!(result, Ok(PolicyOutcome::Added));
            assert_eq!(r.policy(&path("a:b")), Some(&policy));
        } else {
            assert_eq!(err_text(result), text);
            assert_eq!(r, before);
        }
    }
    // The usage of a: is that of its whole subtree, a:b:'s included.
    r.insert_unikernel(&name("a:y"), uni(200, &[1], &["br0"], &[]))
        .unwrap();
    r.insert_block(&name("a:disk"), 20).unwrap();
    r.remove_policy(&path("a:b")).unwrap();
    let cases = [
        (
            pol(4, &[0], 1024, Some(100), &["br0"]),
            "policy does not allow CPUids 1",
        ),
        (
            pol(1, &[0, 1], 1024, Some(100), &["br0"]),
            "unikernel would exceed running unikernel limit set by policy to 1, running 2",
        ),
        (
            pol(2, &[0, 1], 299, Some(100), &["br0"]),
            "unikernel would exceed running memory limit set by policy to 299 MB, used 300 MB",
        ),
        (
            pol(2, &[0, 1], 300, Some(49), &["br0"]),
            "unikernel would exceed running block storage limit set by policy to 49 MB, used 50 MB",
        ),
        (pol(2, &[0, 1], 300, Some(50), &["br0"]), ""),
    ];
    for (policy, text) in cases {
        let mut r = r.clone();
        let result = r.add_policy(&path("a"), policy);
        if text.is_empty() {
            assert_eq!(result, Ok(PolicyOutcome::Added));
        } else {
            assert_eq!(err_text(result), text);
        }
    }
    // The bridges text lists every bridge in use in the subtree.
    let mut r = Resources::new(host());
    r.insert_unikernel(&name("c:x"), uni(1, &[0], &["br0"], &[]))
        .unwrap();
    r.insert_unikernel(&name("c:d:y"), uni(1, &[0], &["br1"], &[]))
        .unwrap();
    assert_eq!(
        err_text(r.add_policy(&path("c"), pol(2, &[0], 16, None, &["br1"]))),
        "policy allows bridges br1, which is not a superset of br0, br1"
    );
}

#[test]
fn policy_remove() {
    let mut r = tenants();
    assert_eq!(err_text(r.remove_policy(&path("x"))), "unknown policy");
    assert_eq!(err_text(r.remove_policy(&path("a:b:c"))), "unknown policy");
    assert_eq!(
        err_text(r.remove_policy(&Path::root())),
        "the root policy holds the host's resources and cannot be removed"
    );
    // No check of what is below or running (§7.2).
    r.insert_unikernel(&name("a:x"), mem(10)).unwrap();
    assert_eq!(
        r.remove_policy(&path("a")),
        Ok(pol(4, &[0, 1], 1024, Some(100), &["br0"]))
    );
    assert_eq!(r.policy(&path("a")), None);
    assert_eq!(
        r.policy(&path("a:b")),
        Some(&pol(2, &[0], 512, Some(50), &["br0"]))
    );
}

#[test]
fn root_policy() {
    let mut r = tenants();
    assert_eq!(r.policy(&Path::root()), Some(&host()));
    assert_eq!(
        r.add_policy(&Path::root(), host()),
        Ok(PolicyOutcome::Unchanged)
    );
    assert_eq!(
        err_text(r.add_policy(
            &Path::root(),
            pol(20, &[0, 1, 2, 3], 4096, Some(1000), &["br0"])
        )),
        "the root policy holds the host's resources and cannot be changed by a policy add"
    );
    assert_eq!(r.set_root_policy(host()), Ok(PolicyOutcome::Unchanged));
    assert_eq!(
        err_text(r.set_root_policy(pol(10, &[0, 1, 2, 3], 1000, Some(1000), &["br0"]))),
        "policy above allows 1000 MB memory, which is fewer than 1024 MB"
    );
    r.insert_unikernel(&name(":x"), uni(10, &[3], &["br1"], &[]))
        .unwrap();
    assert_eq!(
        err_text(r.set_root_policy(pol(10, &[0, 1, 2], 4096, Some(1000), &["br0", "br1"]))),
        "policy does not allow CPUids 3"
    );
    let bigger = pol(20, &[0, 1, 2, 3, 4], 8192, Some(1000), &["br0", "br1"]);
    assert_eq!(r.set_root_policy(bigger.clone()), Ok(PolicyOutcome::Added));
    assert_eq!(r.policy(&Path::root()), Some(&bigger));
}

#[test]
fn create_against_the_policy_at_its_own_path() {
    // albatross's texts and order: unikernels, memory, CPU ids, bridges.
    let mut r = tenants();
    r.insert_unikernel(&name("a:b:x"), uni(500, &[0], &["br0"], &[]))
        .unwrap();
    let cases = [
        (uni(12, &[0], &["br0"], &[]), ""),
        (
            uni(13, &[0], &["br0"], &[]),
            "maximum allowed memory (512, used 500) would be exceeded (requesting 13)",
        ),
        (
            uni(12, &[0, 1, 3], &["br0"], &[]),
            "CPUids 1, 3 are not allowed by policy",
        ),
        (
            uni(12, &[0], &["br0", "br1", "zz"], &[]),
            "bridges br1, zz not allowed by policy",
        ),
        (
            uni(13, &[7], &["zz"], &[]),
            "maximum allowed memory (512, used 500) would be exceeded (requesting 13)",
        ),
        (mem(-1), "memory request of -1 MB is negative"),
    ];
    for (u, text) in cases {
        let result = r.check_create(&name("a:b:y"), &u);
        if text.is_empty() {
            assert_eq!(result, Ok(()));
        } else {
            assert_eq!(err_text(result), text);
        }
    }
    r.insert_unikernel(&name("a:b:y"), mem(1)).unwrap();
    assert_eq!(
        err_text(r.check_create(&name("a:b:z"), &mem(1))),
        "maximum amount of unikernels (2) reached"
    );
    // A root-level unikernel is checked against the root policy with albatross's texts.
    assert_eq!(
        err_text(r.check_create(&name(":z"), &mem(4096))),
        "maximum allowed memory (4096, used 501) would be exceeded (requesting 4096)"
    );
    assert_eq!(
        err_text(r.check_create(&name(":z"), &uni(1, &[9], &[], &[]))),
        "CPUids 9 are not allowed by policy"
    );
}

#[test]
fn create_against_the_policies_above() {
    let mut r = tenants();
    r.insert_unikernel(&name("a:b:x"), mem(500)).unwrap();
    // No policy at a:c:, a:c:d: — a: and the root still apply (unlike albatross, N2).
    let cases = [
        (
            uni(600, &[0], &[], &[]),
            "policy of a: would be exceeded: memory (1024 MB allowed, 500 MB used, 600 MB requested)",
        ),
        (
            uni(10, &[2], &[], &[]),
            "policy of a: would be exceeded: cpuid (2 not allowed)",
        ),
        (
            uni(10, &[0], &["br1"], &[]),
            "policy of a: would be exceeded: bridge (br1 not allowed)",
        ),
        // Policies above are checked from the root down: the root refuses first.
        (
            uni(10, &[5], &["br7"], &[]),
            "policy of : would be exceeded: cpuid (5 not allowed)",
        ),
        (
            uni(5000, &[0], &[], &[]),
            "policy of : would be exceeded: memory (4096 MB allowed, 500 MB used, 5000 MB requested)",
        ),
        (uni(524, &[0, 1], &["br0"], &[]), ""),
    ];
    for (u, text) in cases {
        for at in ["a:c:x", "a:c:d:x"] {
            let result = r.check_create(&name(at), &u);
            if text.is_empty() {
                assert_eq!(result, Ok(()), "{at}");
            } else {
                let err = result.unwrap_err();
                assert_eq!(err.to_string(), text, "{at}");
            }
        }
    }
    // The exact path's policy comes first: albatross's text wins over the one above.
    assert_eq!(
        err_text(r.check_create(&name("a:b:y"), &uni(5000, &[5], &[], &[]))),
        "maximum allowed memory (512, used 500) would be exceeded (requesting 5000)"
    );
    // Siblings cannot together exceed their parent (N2).
    let mut r = Resources::new(host());
    r.add_policy(&path("a"), pol(2, &[0], 1024, None, &[]))
        .unwrap();
    r.add_policy(&path("a:b"), pol(2, &[0], 1024, None, &[]))
        .unwrap();
    r.add_policy(&path("a:c"), pol(2, &[0], 1024, None, &[]))
        .unwrap();
    r.insert_unikernel(&name("a:b:1"), mem(10)).unwrap();
    r.insert_unikernel(&name("a:b:2"), mem(10)).unwrap();
    let err = r.insert_unikernel(&name("a:c:1"), mem(10)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "policy of a: would be exceeded: unikernels (2 allowed, 2 running)"
    );
    assert_eq!(
        err,
        ResourceError::Exceeded {
            path: path("a"),
            exceeded: Exceeded::Unikernels {
                allowed: 2,
                running: 2
            }
        }
    );
    assert_eq!(
        Exceeded::Unikernels {
            allowed: 2,
            running: 2
        }
        .resource(),
        "unikernels"
    );
    // The root (host) limits every path, also those without any policy.
    let mut r = Resources::new(pol(1, &[0], 4096, None, &[]));
    r.insert_unikernel(&name("x:y:z"), mem(10)).unwrap();
    assert_eq!(
        err_text(r.check_create(&name("p:q"), &mem(10))),
        "policy of : would be exceeded: unikernels (1 allowed, 1 running)"
    );
}

#[test]
fn create_block_devices_and_name() {
    let mut r = tenants();
    r.insert_block(&name("a:b:d1"), 10).unwrap();
    r.insert_block(&name("a:b:d2"), 10).unwrap();
    r.insert_block(&name("a:d3"), 10).unwrap();
    r.insert_unikernel(&name("a:b:x"), uni(10, &[], &[], &["d1"]))
        .unwrap();
    assert_eq!(
        r.block(&name("a:b:d1")),
        Some(BlockState {
            size_mb: 10,
            attached_to: Some(label("x"))
        })
    );
    let cases = [
        ("a:b:y", &["d2"][..], ""),
        ("a:b:y", &["d2", "d9"][..], "block device a:b:d9 not found"),
        // A unikernel only sees the block devices of its own path.
        ("a:b:y", &["d3"][..], "block device a:b:d3 not found"),
        ("a:b:y", &["d1"][..], "block device a:b:d1 already in use"),
        ("a:b:x", &["d1"][..], "block device a:b:d1 already in use"),
        (
            "a:b:x",
            &["d2"][..],
            "unikernel with same name already exists",
        ),
    ];
    for (at, blocks, text) in cases {
        let result = r.check_create(&name(at), &uni(10, &[], &[], blocks));
        if text.is_empty() {
            assert_eq!(result, Ok(()));
        } else {
            assert_eq!(err_text(result), text, "{at} {blocks:?}");
        }
    }
    // Path names cannot create (N6).
    for at in ["a:b:", ":"] {
        assert_eq!(
            err_text(r.check_create(&name(at), &mem(1))),
            format!("{at} is a path name; a unikernel or block device name needs a label")
        );
    }
}

#[test]
fn replace_counts_the_old_unikernel_as_gone() {
    let mut r = tenants();
    r.insert_block(&name("a:b:d1"), 10).unwrap();
    r.insert_unikernel(&name("a:b:x"), uni(300, &[0], &[], &["d1"]))
        .unwrap();
    r.insert_unikernel(&name("a:b:y"), uni(200, &[0], &[], &[]))
        .unwrap();
    // At 2 of 2 unikernels and 500 of 512 MB, x may be replaced by a bigger one that keeps
    // its block device.
    let new = uni(312, &[0], &[], &["d1"]);
    assert_eq!(
        err_text(r.check_create(&name("a:b:x"), &new)),
        "maximum amount of unikernels (2) reached"
    );
    assert_eq!(r.check_replace(&name("a:b:x"), &new), Ok(()));
    assert_eq!(
        err_text(r.check_replace(&name("a:b:x"), &uni(313, &[0], &[], &[]))),
        "maximum allowed memory (512, used 200) would be exceeded (requesting 313)"
    );
    // y's replacement may not take x's block device.
    assert_eq!(
        err_text(r.check_replace(&name("a:b:y"), &uni(1, &[0], &[], &["d1"]))),
        "block device a:b:d1 already in use"
    );
    // Replacing a unikernel that does not exist is a create without the name check.
    assert_eq!(
        err_text(r.check_replace(&name("a:b:z"), &mem(1))),
        "maximum amount of unikernels (2) reached"
    );
    let old = r.remove_unikernel(&name("a:b:x")).unwrap();
    assert_eq!(old, uni(300, &[0], &[], &["d1"]));
    assert_eq!(
        r.block(&name("a:b:d1")).map(|b| b.is_attached()),
        Some(false)
    );
    assert_eq!(r.insert_unikernel(&name("a:b:x"), new), Ok(()));
}

#[test]
fn block_add() {
    let mut r = tenants();
    r.insert_block(&name("a:b:d1"), 30).unwrap();
    r.insert_block(&name("a:d2"), 40).unwrap();
    let cases = [
        ("a:b:d3", 20, ""),
        ("a:b:d1", 1, "block device with same name already exists"),
        (
            "a:b:d3",
            21,
            "block device policy limit of 50 MB (used 30 MB) would be exceeded by the request (21 MB)",
        ),
        // No policy at a:c: — the one at a: (30 + 40 used of 100) still applies.
        (
            "a:c:d3",
            31,
            "policy of a: would be exceeded: block (100 MB allowed, 70 MB used, 31 MB requested)",
        ),
        ("a:c:d3", 30, ""),
        (
            "x:d",
            931,
            "policy of : would be exceeded: block (1000 MB allowed, 70 MB used, 931 MB requested)",
        ),
        (
            ":d",
            931,
            "block device policy limit of 1000 MB (used 70 MB) would be exceeded by the request (931 MB)",
        ),
        ("a:b:d3", 0, "overflow while computing bytes"),
        ("a:b:d3", -5, "overflow while computing bytes"),
        ("a:b:d1", i64::MIN, "overflow while computing bytes"),
        ("a:b:d3", MAX_BLOCK_MB + 1, "overflow while computing bytes"),
        (
            "a:b:d3",
            MAX_BLOCK_MB,
            "block device policy limit of 50 MB (used 30 MB) would be exceeded by the request (8796093022207 MB)",
        ),
        (
            "a:b:",
            1,
            "a:b: is a path name; a unikernel or block device name needs a label",
        ),
    ];
    for (at, size, text) in cases {
        let mut r = r.clone();
        let before = r.clone();
        let result = r.insert_block(&name(at), size);
        if text.is_empty() {
            assert_eq!(result, Ok(()), "{at}");
            assert_eq!(
                r.block(&name(at)),
                Some(BlockState {
                    size_mb: size,
                    attached_to: None
                })
            );
        } else {
            assert_eq!(err_text(result), text, "{at} {size}");
            assert_eq!(r, before);
        }
    }
    // Without block storage in the policy.
    let mut r = Resources::new(host());
    r.add_policy(&path("a"), pol(1, &[0], 16, None, &[]))
        .unwrap();
    r.add_policy(&path("a:b"), pol(1, &[0], 16, None, &[]))
        .unwrap();
    assert_eq!(
        err_text(r.check_block_add(&name("a:b:d"), 1)),
        "no block devices are allowed by policy"
    );
    assert_eq!(
        err_text(r.check_block_add(&name("a:c:d"), 1)),
        "policy of a: would be exceeded: block (none allowed)"
    );
    let r = Resources::new(pol(1, &[0], 16, None, &[]));
    assert_eq!(
        err_text(r.check_block_add(&name(":d"), 1)),
        "no block devices are allowed by policy"
    );
}

#[test]
fn block_remove() {
    let mut r = tenants();
    r.insert_block(&name("a:b:d1"), 30).unwrap();
    r.insert_unikernel(&name("a:b:x"), uni(1, &[], &[], &["d1"]))
        .unwrap();
    assert_eq!(
        err_text(r.remove_block(&name("a:b:d2"))),
        "remove block: not found"
    );
    assert_eq!(
        err_text(r.remove_block(&name("q:d1"))),
        "remove block: not found"
    );
    assert_eq!(
        err_text(r.remove_block(&name("a:b:d1"))),
        "remove block: is in use"
    );
    assert_eq!(
        err_text(r.remove_block(&name("a:b:"))),
        "a:b: is a path name; a unikernel or block device name needs a label"
    );
    assert!(r.remove_unikernel(&name("a:b:x")).is_some());
    assert_eq!(r.usage(&path("a")).block, 30);
    assert_eq!(r.remove_block(&name("a:b:d1")), Ok(30));
    assert_eq!(r.usage(&Path::root()).block, 0);
    assert_eq!(r.block(&name("a:b:d1")), None);
}

#[test]
fn chain_is_applied_top_down() {
    // N3: the upper CA was re-issued with larger limits and the lower one uses them.
    let mut r = tenants();
    let chain = vec![
        (path("a"), pol(8, &[0, 1], 2048, Some(100), &["br0"])),
        (path("a:b"), pol(6, &[0], 512, Some(50), &["br0"])),
        (path("a:b:c"), pol(1, &[0], 16, None, &[])),
    ];
    assert_eq!(
        r.apply_policies(&chain),
        Ok(vec![
            PolicyOutcome::Added,
            PolicyOutcome::Added,
            PolicyOutcome::Added
        ])
    );
    assert_eq!(
        r.apply_policies(&chain),
        Ok(vec![PolicyOutcome::Unchanged; 3])
    );
    // Bottom-up (albatross's order) would have failed on the first policy.
    let mut s = tenants();
    assert_eq!(
        err_text(s.add_policy(&path("a:b"), pol(6, &[0], 512, Some(50), &["br0"]))),
        "policy above allows 4 unikernels, which is fewer than 6"
    );
}

#[test]
fn chain_rolls_back_on_failure() {
    let mut r = tenants();
    r.insert_unikernel(&name("a:b:x"), mem(100)).unwrap();
    let before = r.clone();
    let chain = vec![
        // Changes a: (bigger), adds a:b:c: (new node), then a:b:c:d: exceeds a:b:c:.
        (path("a"), pol(8, &[0, 1], 2048, Some(100), &["br0"])),
        (path("a:b"), pol(2, &[0], 512, Some(50), &["br0"])),
        (path("a:b:c"), pol(1, &[0], 16, None, &[])),
        (path("a:b:c:d"), pol(2, &[0], 16, None, &[])),
    ];
    let err = r.apply_policies(&chain).unwrap_err();
    assert_eq!(
        err,
        ChainPolicyError {
            index: 3,
            path: path("a:b:c:d"),
            source: PolicyError::Above {
                path: path("a:b:c"),
                source: WithinError::Unikernels { above: 1, below: 2 }
            }
        }
    );
    assert_eq!(
        err.to_string(),
        "policy of a:b:c:d: not applied: policy above allows 1 unikernels, which is fewer than 2"
    );
    assert_eq!(r, before, "every policy of the chain is restored");
    assert_eq!(
        r.policy(&path("a")),
        Some(&pol(4, &[0, 1], 1024, Some(100), &["br0"]))
    );
    assert_eq!(r.policy(&path("a:b:c")), None);
    assert!(r.policies_below(&path("a:b:c")).is_empty());
    // A failure on usage, first in the chain: nothing to undo.
    let chain = vec![(path("a:b"), pol(2, &[0], 99, Some(50), &["br0"]))];
    assert_eq!(
        err_text(r.apply_policies(&chain)),
        "policy of a:b: not applied: unikernel would exceed running memory limit set by policy to 99 MB, used 100 MB"
    );
    assert_eq!(r, before);
}

#[test]
fn listings_are_relative() {
    let mut r = tenants();
    r.insert_unikernel(&name("a:x"), mem(1)).unwrap();
    r.insert_unikernel(&name("a:b:y"), mem(2)).unwrap();
    r.insert_unikernel(&name(":a"), mem(3)).unwrap();
    r.insert_block(&name("a:b:d"), 5).unwrap();
    r.insert_block(&name("a:d"), 6).unwrap();
    let texts = |names: Vec<Name>| names.iter().map(Name::text).collect::<Vec<_>>();
    assert_eq!(
        texts(
            r.policies_below(&path("a"))
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        ),
        vec![":", "b:"]
    );
    assert_eq!(
        texts(
            r.policies_below(&Path::root())
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        ),
        vec![":", "a:", "a:b:"]
    );
    assert_eq!(
        r.policies_below(&path("a:b")),
        vec![(Name::root(), pol(2, &[0], 512, Some(50), &["br0"]))]
    );
    assert_eq!(
        texts(
            r.unikernels_below(&path("a"))
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        ),
        vec![":x", "b:y"]
    );
    assert_eq!(
        r.unikernels_below(&Path::root())
            .into_iter()
            .map(|(n, u)| (n.text(), u.memory))
            .collect::<Vec<_>>(),
        vec![
            (":a".to_string(), 3),
            ("a:x".to_string(), 1),
            ("a:b:y".to_string(), 2)
        ]
    );
    assert_eq!(
        texts(
            r.blocks_below(&path("a"))
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        ),
        vec![":d", "b:d"]
    );
    assert!(r.unikernels_below(&path("zz")).is_empty());
    // `:a` (root-level unikernel) is not in the subtree of `a:` (N5).
    let usage = r.usage(&path("a"));
    assert_eq!((usage.unikernels, usage.memory, usage.block), (2, 3, 11));
    let usage = r.usage(&Path::root());
    assert_eq!((usage.unikernels, usage.memory, usage.block), (3, 6, 11));
}

#[test]
fn usage_multisets() {
    let mut r = tenants();
    r.insert_unikernel(&name("a:x"), uni(1, &[0, 1], &["br0"], &[]))
        .unwrap();
    r.insert_unikernel(&name("a:b:y"), uni(1, &[0], &["br0"], &[]))
        .unwrap();
    let usage = r.usage(&path("a"));
    assert_eq!((usage.cpuids.count(&0), usage.cpuids.count(&1)), (2, 1));
    assert_eq!(usage.bridges.count(&"br0".to_string()), 2);
    r.remove_unikernel(&name("a:x"));
    let usage = r.usage(&path("a"));
    assert_eq!(
        usage.cpuids.distinct().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([0])
    );
    assert_eq!(usage.bridges.count(&"br0".to_string()), 1);
}

#[test]
fn extreme_values_do_not_overflow() {
    let huge = pol(i64::MAX, &[0], i64::MAX, Some(i64::MAX), &[]);
    let mut r = Resources::new(huge.clone());
    r.insert_unikernel(&name("a:x"), mem(i64::MAX)).unwrap();
    assert_eq!(
        err_text(r.check_create(&name(":y"), &mem(1))),
        format!(
            "maximum allowed memory ({0}, used {0}) would be exceeded (requesting 1)",
            i64::MAX
        )
    );
    r.insert_block(&name("a:d"), MAX_BLOCK_MB).unwrap();
    r.insert_block(&name("a:e"), MAX_BLOCK_MB).unwrap();
    let negative = pol(i64::MIN, &[0], i64::MIN, Some(i64::MIN), &[]);
    assert_eq!(
        r.add_policy(&path("b"), negative.clone()),
        Ok(PolicyOutcome::Added)
    );
    assert_eq!(
        err_text(r.check_create(&name("b:x"), &mem(0))),
        format!("maximum amount of unikernels ({}) reached", i64::MIN)
    );
    assert_eq!(
        err_text(r.check_block_add(&name("b:d"), MAX_BLOCK_MB)),
        format!(
            "block device policy limit of {} MB (used 0 MB) would be exceeded by the request ({} MB)",
            i64::MIN,
            MAX_BLOCK_MB
        )
    );
    assert_eq!(
        err_text(r.add_policy(&path("a"), negative)),
        format!(
            "unikernel would exceed running unikernel limit set by policy to {}, running 1",
            i64::MIN
        )
    );
    assert_eq!(
        err_text(r.check_create(&name("c:x"), &mem(i64::MIN))),
        format!("memory request of {} MB is negative", i64::MIN)
    );
}
