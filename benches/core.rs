//! Cost of the resource checks as the number of tenants grows: it must stay flat.
//!
//! Each tenant is a first-level path `tN:` with a policy and three unikernels; every
//! fourth tenant also has a second level `tN:team:` with a policy and two unikernels.
//! Run with `cargo bench --bench core`; figures are in docs/PERFORMANCE.md.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

use petrel::name::{Label, Name, Path};
use petrel::policy::Policy;
use petrel::resources::{Resources, UnikernelUsage};

/// Tenant counts measured.
const TENANTS: [usize; 3] = [10, 1_000, 100_000];

fn label(s: &str) -> Label {
    Label::parse(s).expect("valid label")
}

fn policy(unikernels: i64, cpus: i64, memory: i64, block: i64) -> Policy {
    Policy {
        unikernels,
        cpuids: (0..cpus).collect(),
        memory,
        block: Some(block),
        bridges: BTreeSet::from(["br0".to_string(), "br1".to_string()]),
    }
}

fn unikernel(cpu: i64) -> UnikernelUsage {
    UnikernelUsage {
        cpuids: BTreeSet::from([cpu]),
        memory: 256,
        bridges: BTreeSet::from(["br0".to_string()]),
        block_devices: BTreeSet::new(),
    }
}

fn tenant(i: usize) -> Path {
    Path::from_labels(vec![label(&format!("t{i}"))])
}

fn build(tenants: usize) -> Resources {
    let mut r = Resources::new(policy(i64::MAX, 16, i64::MAX >> 1, i64::MAX >> 21));
    for i in 0..tenants {
        let t = tenant(i);
        r.add_policy(&t, policy(16, 4, 8192, 10_000))
            .expect("tenant policy");
        for u in 0..3i64 {
            r.insert_unikernel(
                &Name::labelled(t.clone(), label(&format!("u{u}"))),
                unikernel(u),
            )
            .expect("tenant unikernel");
        }
        if i % 4 == 0 {
            let team = t.child(label("team"));
            r.add_policy(&team, policy(4, 2, 2048, 1_000))
                .expect("team policy");
            for u in 0..2 {
                r.insert_unikernel(
                    &Name::labelled(team.clone(), label(&format!("u{u}"))),
                    unikernel(0),
                )
                .expect("team unikernel");
            }
        }
    }
    r
}

fn checks(c: &mut Criterion) {
    let mut group = c.benchmark_group("check_create");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for tenants in TENANTS {
        let mut r = build(tenants);
        // A tenant in the middle; a multiple of 4, so it has a second level.
        let t = tenant(tenants / 8 * 4);
        let first = Name::labelled(t.clone(), label("new"));
        let second = Name::labelled(t.child(label("team")), label("new"));
        let u = unikernel(1);
        assert_eq!(r.check_create(&first, &u), Ok(()));
        assert_eq!(r.check_create(&second, &u), Ok(()));
        group.bench_with_input(
            BenchmarkId::new("first_level", tenants),
            &first,
            |b, name| b.iter(|| r.check_create(black_box(name), black_box(&u))),
        );
        group.bench_with_input(
            BenchmarkId::new("second_level", tenants),
            &second,
            |b, name| b.iter(|| r.check_create(black_box(name), black_box(&u))),
        );
        group.bench_with_input(
            BenchmarkId::new("insert_remove_second_level", tenants),
            &second,
            |b, name| {
                b.iter(|| {
                    let inserted = r.insert_unikernel(black_box(name), u.clone());
                    (inserted, r.remove_unikernel(name))
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, checks);
criterion_main!(benches);
