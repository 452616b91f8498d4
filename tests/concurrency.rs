//! Many clients racing over real TLS: create, force-create, destroy, restart and info on
//! the same tenant and the same few names, and on sibling tenants under a parent with a
//! tight policy. While they race, a sampler checks the tender processes the endpoint
//! actually runs (from `/proc`) and the `info` it reports against every policy; afterwards
//! what runs, what `info` says, and what the executor restores after a restart agree.

mod common;
mod hardening;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use petrel::codec::{Command, Payload, PolicyCmd, RestartArgs, Success, UnikernelCmd};
use rand::{Rng, SeedableRng};

use common::pki::{Ca, Leaf, policy};
use hardening::{Host, Proc, config, files, stored, temp_files, text};

/// Client threads.
const CLIENTS: usize = 24;

/// Requests per client thread.
const REQUESTS: usize = 14;

/// A policy as the checks need it: (path, unikernels, memory MB).
type Limit = (&'static str, usize, i64);

/// Every policy below the root, as installed by the chains.
const LIMITS: [Limit; 4] = [
    ("solo:", 2, 64),
    ("team:", 3, 96),
    ("team:a:", 2, 64),
    ("team:b:", 2, 64),
];

/// The names raced for: more than the policies allow.
const NAMES: [(&str, &str); 7] = [
    ("solo", "n0"),
    ("solo", "n1"),
    ("solo", "n2"),
    ("team:a", "n0"),
    ("team:a", "n1"),
    ("team:b", "n0"),
    ("team:b", "n1"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Create,
    ForceCreate,
    ForceCreateLarger,
    Destroy,
    Restart,
    Info,
}

const OPS: [Op; 6] = [
    Op::Create,
    Op::ForceCreate,
    Op::ForceCreateLarger,
    Op::Destroy,
    Op::Restart,
    Op::Info,
];

fn command(op: Op) -> Command {
    let unikernel = match op {
        Op::Create => UnikernelCmd::Create(config(&["--wait"], 32)),
        Op::ForceCreate => UnikernelCmd::ForceCreate(config(&["--wait"], 32)),
        Op::ForceCreateLarger => UnikernelCmd::ForceCreate(config(&["--wait"], 48)),
        Op::Destroy => UnikernelCmd::Destroy,
        Op::Restart => UnikernelCmd::Restart(RestartArgs::NoArguments),
        Op::Info => UnikernelCmd::Info,
    };
    Command::Unikernel(unikernel)
}

/// Whether `reply` is an answer `op` may truthfully give in this race.
fn plausible(op: Op, reply: &str) -> bool {
    let policy_refusal = reply.starts_with("failure: maximum amount of unikernels (")
        || reply.starts_with("failure: maximum allowed memory (")
        || reply.starts_with("failure: policy of team: would be exceeded: ");
    match op {
        Op::Create => {
            reply == "success: created unikernel"
                || reply == "failure: Unikernel with same name is already running"
                // Another create of the name has reserved it and is starting it.
                || reply == "failure: unikernel with same name already exists"
                || policy_refusal
        }
        Op::ForceCreate | Op::ForceCreateLarger | Op::Restart => {
            reply == "success: created unikernel"
                || (op == Op::Restart && reply == "failure: restart: not running")
                || policy_refusal
        }
        Op::Destroy => {
            reply == "success: destroyed unikernel" || reply == "failure: destroy: not found"
        }
        Op::Info => reply.starts_with("Success(UnikernelInfo("),
    }
}

/// The tenders' unikernel names, each with its memory; an error if one runs twice.
/// Children without an image argument are not tenders yet (forked, not yet executed) or
/// not tenders at all (`--version` checks).
fn running(procs: &[Proc]) -> Result<BTreeMap<String, i64>, String> {
    let mut names = BTreeMap::new();
    for proc in procs {
        let Some(name) = proc.image_stem() else {
            continue;
        };
        let memory = proc
            .args
            .iter()
            .find_map(|a| a.strip_prefix("--mem="))
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| format!("no --mem= in {proc:?}"))?;
        if names.insert(name.clone(), memory).is_some() {
            return Err(format!("{name} runs twice: {procs:?}"));
        }
    }
    Ok(names)
}

/// Every policy holds for `names` (unikernel → memory).
fn within_policies(names: &BTreeMap<String, i64>) -> Result<(), String> {
    for (path, unikernels, memory) in LIMITS {
        let below: Vec<(&String, &i64)> =
            names.iter().filter(|(n, _)| n.starts_with(path)).collect();
        let used: i64 = below.iter().map(|(_, m)| **m).sum();
        if below.len() > unikernels || used > memory {
            return Err(format!(
                "policy {path} ({unikernels} unikernels, {memory} MB) exceeded by {below:?}"
            ));
        }
    }
    Ok(())
}

/// What `info` by the root CA reports: unikernel → memory.
fn reported(host: &Host, leaf: &Leaf) -> BTreeMap<String, i64> {
    let frames = host.request(leaf).unwrap();
    assert_eq!(frames.len(), 1, "{frames:?}");
    match &frames[0].payload {
        Payload::Success(Success::UnikernelInfo(entries)) => entries
            .iter()
            .map(|e| (e.name.text(), e.info.memory))
            .collect(),
        other => panic!("info answered {other:?}"),
    }
}

struct Tenants {
    solo: Ca,
    a: Ca,
    b: Ca,
}

impl Tenants {
    fn of(&self, tenant: &str) -> &Ca {
        match tenant {
            "solo" => &self.solo,
            "team:a" => &self.a,
            "team:b" => &self.b,
            other => panic!("{other}"),
        }
    }
}

#[test]
fn racing_clients_never_exceed_a_policy_nor_run_a_unikernel_twice() {
    let seed: u64 = std::env::var("PETREL_RACE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (set PETREL_RACE_SEED to repeat)");
    let mut host = Host::start(&["--idle-timeout", "10"]);
    let team = host
        .ca
        .intermediate("team", &policy(3, &[0], 96, None, &[]));
    let tenants = Tenants {
        solo: host
            .ca
            .intermediate("solo", &policy(2, &[0], 64, None, &[])),
        a: team.intermediate("a", &policy(2, &[0], 64, None, &[])),
        b: team.intermediate("b", &policy(2, &[0], 64, None, &[])),
    };
    // One leaf per name and operation, presented as often as the race wants.
    let mut leaves: BTreeMap<(usize, Op), Leaf> = BTreeMap::new();
    for (i, (tenant, label)) in NAMES.iter().enumerate() {
        for op in OPS {
            leaves.insert((i, op), tenants.of(tenant).leaf(Some(label), &command(op)));
        }
    }
    let info_leaf = host.ca.leaf(Some("."), &command(Op::Info));
    let (addr, pid, server_ca) = (host.addr, host.pid(), host.ca.cert().clone());

    let racing = AtomicBool::new(true);
    let (replies, samples) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut samples = 0;
            while racing.load(Ordering::SeqCst) {
                let procs = hardening::children(pid);
                let names = running(&procs).unwrap();
                within_policies(&names).unwrap();
                let frames =
                    common::tls_client::request(addr, &info_leaf.chain, &info_leaf.key, &server_ca)
                        .unwrap();
                match &frames[..] {
                    [frame] => match &frame.payload {
                        Payload::Success(Success::UnikernelInfo(entries)) => {
                            let names: BTreeMap<String, i64> = entries
                                .iter()
                                .map(|e| (e.name.text(), e.info.memory))
                                .collect();
                            within_policies(&names).unwrap();
                        }
                        other => panic!("info answered {other:?}"),
                    },
                    other => panic!("info answered {other:?}"),
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            samples
        });
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (leaves, server_ca) = (&leaves, &server_ca);
                scope.spawn(move || {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ c as u64);
                    let mut replies = Vec::new();
                    for _ in 0..REQUESTS {
                        let i = rng.gen_range(0..NAMES.len());
                        let op = OPS[rng.gen_range(0..OPS.len())];
                        let leaf = &leaves[&(i, op)];
                        let frames =
                            common::tls_client::request(addr, &leaf.chain, &leaf.key, server_ca)
                                .unwrap_or_else(|e| panic!("{op:?} {:?}: {e}", NAMES[i]));
                        // Exactly one final frame, about the request's name.
                        assert_eq!(frames.len(), 1, "{op:?} {:?}: {frames:?}", NAMES[i]);
                        let name = format!("{}:{}", NAMES[i].0, NAMES[i].1);
                        assert_eq!(frames[0].header.name.text(), name);
                        replies.push((op, name, text(&frames[0].payload)));
                    }
                    replies
                })
            })
            .collect();
        let replies: Vec<(Op, String, String)> = clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        racing.store(false, Ordering::SeqCst);
        (replies, sampler.join().unwrap())
    });
    assert_eq!(replies.len(), CLIENTS * REQUESTS);
    assert!(samples > 0);
    let mut outcomes: BTreeMap<(Op, String), usize> = BTreeMap::new();
    for (op, name, reply) in &replies {
        assert!(plausible(*op, reply), "{op:?} {name}: {reply}");
        let kind = match op {
            Op::Info => "info".to_owned(),
            _ => reply.split(" (").next().unwrap_or(reply).to_owned(),
        };
        *outcomes.entry((*op, kind)).or_default() += 1;
    }
    eprintln!("{samples} samples; outcomes: {outcomes:#?}");
    // The race did race: every kind of operation succeeded at least once.
    for op in [Op::Create, Op::ForceCreate, Op::Destroy, Op::Restart] {
        assert!(
            replies
                .iter()
                .any(|(o, _, r)| *o == op && r.starts_with("success: ")),
            "no {op:?} succeeded: {outcomes:#?}"
        );
    }

    // Afterwards: what runs is what info reports, within every policy, once each.
    let procs = host.tenders();
    let names = running(&procs).unwrap();
    within_policies(&names).unwrap();
    assert_eq!(reported(&host, &info_leaf), names);
    let policies = {
        let leaf = host.ca.leaf(Some("."), &Command::Policy(PolicyCmd::Info));
        let frames = host.request(&leaf).unwrap();
        match &frames[0].payload {
            Payload::Success(Success::Policies(entries)) => entries
                .iter()
                .map(|e| (e.name.text(), (e.policy.unikernels, e.policy.memory)))
                .collect::<BTreeMap<_, _>>(),
            other => panic!("{other:?}"),
        }
    };
    for (path, unikernels, memory) in LIMITS {
        assert_eq!(
            policies.get(path),
            Some(&(i64::try_from(unikernels).unwrap(), memory)),
            "{policies:?}"
        );
    }
    let state_dir = host.state_dir();
    let (stored_names, _, records) = stored(&state_dir);
    let names_set: BTreeSet<String> = names.keys().cloned().collect();
    assert_eq!(stored_names, names_set);
    assert_eq!(
        records.unikernels.keys().cloned().collect::<BTreeSet<_>>(),
        names_set
    );
    let run_records: BTreeSet<String> = files(&state_dir.join("run"))
        .into_iter()
        .map(|f| f.trim_end_matches(".json").to_owned())
        .collect();
    assert_eq!(run_records, names_set);
    assert_eq!(temp_files(&state_dir), Vec::<String>::new());

    // The executor restores exactly what ran.
    assert!(host.stop().success());
    assert_eq!(hardening::children(pid), Vec::new());
    host.spawn();
    let procs = host.tenders();
    assert_eq!(running(&procs).unwrap(), names);
    assert_eq!(reported(&host, &info_leaf), names);
    host.assert_served();
}
