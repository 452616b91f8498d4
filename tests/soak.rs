//! Soak: mixed clients against the real `petrel-endpoint` for a given time, sampling the
//! endpoint's (and, split with `--user`, its TLS worker's) resident memory, open file
//! descriptors, taps and state-directory files; at the end everything is destroyed and
//! nothing may be left over. Ignored by default (it runs for minutes); the figures of
//! 30-minute runs are in `docs/PERFORMANCE.md`:
//!
//! ```text
//! PETREL_SOAK_SECONDS=1800 cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! `PETREL_SOAK_SECONDS` (default 60), `PETREL_SOAK_CLIENTS` (default 8) and
//! `PETREL_SOAK_INTERVAL` (seconds between samples, default 5) tune it. As root, the
//! endpoint runs in a private network namespace with a bridge, and a third of the
//! unikernels get a tap on it.

mod common;
mod hardening;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use petrel::codec::{
    BlockCmd, Command, ConsoleCmd, NetDeviceSpec, Payload, PolicyCmd, RestartArgs, SinceCount,
    UnikernelCmd, UnikernelConfig,
};
use petrel::executor::manifest::Device;
use rand::{Rng, SeedableRng};

use common::pki::{Ca, Leaf, Opts, policy};
use hardening::{Host, HostOptions, Raw, config, files, image, skip_without_root, text};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One sample of the endpoint.
#[derive(Debug, Clone)]
struct Sample {
    seconds: u64,
    rss_kib: u64,
    fds: usize,
    /// The TLS worker's (with `--user`; 0 when the endpoint is one process).
    worker_rss_kib: u64,
    worker_fds: usize,
    taps: usize,
    files: usize,
    tenders: usize,
    requests: u64,
}

/// What a client does in one step.
#[derive(Debug, Clone, Copy)]
enum Step {
    Create,
    CreateStreamed,
    ForceCreate,
    Restart,
    Destroy,
    Info,
    PolicyInfo,
    Console,
    Block,
    Refused,
    Abandoned,
}

/// The mix: each step with its weight.
const MIX: [(Step, u32); 11] = [
    (Step::Create, 14),
    (Step::CreateStreamed, 8),
    (Step::ForceCreate, 8),
    (Step::Restart, 5),
    (Step::Destroy, 20),
    (Step::Info, 12),
    (Step::PolicyInfo, 6),
    (Step::Console, 10),
    (Step::Block, 10),
    (Step::Refused, 4),
    (Step::Abandoned, 3),
];

fn pick(rng: &mut impl Rng) -> Step {
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    let mut at = rng.gen_range(0..total);
    for (step, weight) in MIX {
        if at < weight {
            return step;
        }
        at -= weight;
    }
    unreachable!()
}

/// One client's world: the endpoint, its tenant CA and names.
struct Client<'a> {
    addr: std::net::SocketAddr,
    server_ca: &'a petrel::pki::Certificate,
    ca: Ca,
    id: usize,
    taps: bool,
}

impl Client<'_> {
    fn connect(&self, leaf: &Leaf) -> Raw {
        Raw::try_connect(self.addr, leaf, self.server_ca).unwrap()
    }

    fn request(&self, leaf: &Leaf) -> Result<Vec<petrel::codec::Wire>, String> {
        common::tls_client::request(self.addr, &leaf.chain, &leaf.key, self.server_ca)
            .map_err(|e| e.to_string())
    }

    fn name(&self, rng: &mut impl Rng) -> String {
        format!("c{}u{}", self.id, rng.gen_range(0..4))
    }

    fn config(&self, rng: &mut impl Rng) -> UnikernelConfig {
        let mut config = config(&["--lines=20", "--wait"], 16);
        if self.taps && rng.gen_ratio(1, 3) {
            config.image = image(&[Device::net("service")]);
            config.bridges = vec![NetDeviceSpec {
                netif: "service".into(),
                bridge: Some("br0".into()),
                mac: None,
            }];
        }
        config
    }

    /// Runs `command` for `cn`; the reply texts (a request must always get one).
    fn ask(&self, cn: &str, command: &Command) -> Vec<String> {
        let leaf = self.ca.leaf(Some(cn), command);
        let frames = self.request(&leaf).unwrap();
        assert_eq!(frames.len(), 1, "{command}: {frames:?}");
        frames.iter().map(|f| text(&f.payload)).collect()
    }

    fn step(&self, step: Step, rng: &mut impl Rng) {
        let name = self.name(rng);
        match step {
            Step::Create => {
                let command = Command::Unikernel(UnikernelCmd::Create(self.config(rng)));
                self.ask(&name, &command);
            }
            Step::CreateStreamed => {
                let mut config = self.config(rng);
                let image = std::mem::take(&mut config.image);
                let command = Command::Unikernel(UnikernelCmd::Create(config));
                let mut client = self.connect(&self.ca.leaf(Some(&name), &command));
                for chunk in image.chunks(97) {
                    client.chunk(chunk).unwrap();
                }
                client.end().unwrap();
                assert_eq!(client.texts().len(), 1);
            }
            Step::ForceCreate => {
                let command = Command::Unikernel(UnikernelCmd::ForceCreate(self.config(rng)));
                self.ask(&name, &command);
            }
            Step::Restart => {
                let command = Command::Unikernel(UnikernelCmd::Restart(RestartArgs::NoArguments));
                self.ask(&name, &command);
            }
            Step::Destroy => {
                self.ask(&name, &Command::Unikernel(UnikernelCmd::Destroy));
            }
            Step::Info => {
                self.ask(".", &Command::Unikernel(UnikernelCmd::Info));
            }
            Step::PolicyInfo => {
                self.ask(".", &Command::Policy(PolicyCmd::Info));
            }
            Step::Console => {
                // The history, then the client goes away while the stream is open.
                let command = Command::Console(ConsoleCmd::Subscribe(SinceCount::Count(5)));
                let mut client = self.connect(&self.ca.leaf(Some(&name), &command));
                let first = client.frame().unwrap().unwrap();
                if matches!(first.payload, Payload::Success(_))
                    && text(&first.payload) != "success: waiting for VM"
                {
                    for _ in 0..5 {
                        if client.frame().ok().flatten().is_none() {
                            break;
                        }
                    }
                }
                if rng.gen_bool(0.5) {
                    client.close_notify();
                    let _ = client.frames();
                } else {
                    client.cut();
                }
            }
            Step::Block => {
                let disk = format!("c{}disk", self.id);
                self.ask(&disk, &Command::Block(BlockCmd::Add(1)));
                let set = self
                    .ca
                    .leaf(Some(&disk), &Command::Block(BlockCmd::Set(false)));
                let mut client = self.connect(&set);
                client.chunk(&vec![rng.r#gen::<u8>(); 64 * 1024]).unwrap();
                client.end().unwrap();
                assert_eq!(client.texts().len(), 1);
                let dump = self
                    .ca
                    .leaf(Some(&disk), &Command::Block(BlockCmd::Dump(1)));
                let frames = self.request(&dump).unwrap();
                assert!(!frames.is_empty());
                self.ask(&disk, &Command::Block(BlockCmd::Remove));
            }
            Step::Refused => {
                // Expired: refused in the handshake.
                let expired = self.ca.leaf_with(
                    Some("late"),
                    hardening::ext(&Command::Unikernel(UnikernelCmd::Info)),
                    Opts {
                        start_offset: -7200,
                        ..Opts::default()
                    },
                );
                assert!(self.request(&expired).is_err());
            }
            Step::Abandoned => {
                // An upload that stops half-way and vanishes.
                let command = Command::Unikernel(UnikernelCmd::Create(UnikernelConfig {
                    image: Vec::new(),
                    ..config(&[], 16)
                }));
                let mut client = self.connect(&self.ca.leaf(Some(&name), &command));
                client.chunk(&[0u8; 1000]).unwrap();
                client.send(&[0, 0, 1]).unwrap();
                client.cut();
            }
        }
    }
}

/// Flat memory: the second half peaks no higher than the first half (after a warm-up of a
/// tenth of the run) plus 10 % and 4 MiB for allocator noise.
fn assert_flat(samples: &[Sample], what: &str, rss: fn(&Sample) -> u64) {
    let warm = samples.len() / 10;
    let half = samples.len() / 2;
    let first = samples[warm..half].iter().map(rss).max().unwrap_or(0);
    let second = samples[half..].iter().map(rss).max().unwrap_or(0);
    assert!(
        second <= first + first / 10 + 4096,
        "memory of {what} grows: {first} KiB, then {second} KiB"
    );
}

fn sample(host: &Host, start: Instant, requests: u64) -> Sample {
    let worker = common::server::tls_workers(host.pid()).first().copied();
    Sample {
        seconds: start.elapsed().as_secs(),
        rss_kib: host.rss_kib(),
        fds: host.fds(),
        worker_rss_kib: worker.map_or(0, hardening::rss_kib),
        worker_fds: worker.map_or(0, hardening::fd_count),
        taps: host
            .interfaces()
            .iter()
            .filter(|i| i.starts_with("vmmtap"))
            .count(),
        files: files(&host.state_dir()).len(),
        tenders: host.tenders().len(),
        requests,
    }
}

#[test]
#[ignore = "runs for PETREL_SOAK_SECONDS (default 60); see the module documentation"]
fn soak() {
    let seconds = env("PETREL_SOAK_SECONDS", 60);
    let clients = usize::try_from(env("PETREL_SOAK_CLIENTS", 8)).unwrap();
    let interval = Duration::from_secs(env("PETREL_SOAK_INTERVAL", 5));
    let taps = skip_without_root().is_none();
    let host = Host::start_with(HostOptions {
        extra: ["--idle-timeout", "5", "--handshake-timeout", "5"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        netns_bridges: taps.then(|| vec!["br0".to_owned()]),
        ..HostOptions::default()
    });
    let cas: Vec<Ca> = (0..clients)
        .map(|c| {
            host.ca.intermediate(
                &format!("tenant{c}"),
                &policy(4, &[0, 1], 256, Some(4), &["br0"]),
            )
        })
        .collect();
    host.assert_served();
    std::thread::sleep(Duration::from_millis(500));
    let baseline = sample(&host, Instant::now(), 0);
    let baseline_files = files(&host.state_dir());
    eprintln!("soak: {seconds} s, {clients} clients, taps: {taps}; baseline {baseline:?}");

    let (addr, server_ca) = (host.addr, host.ca.cert().clone());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let running = AtomicBool::new(true);
    let requests = AtomicU64::new(0);
    let samples = std::thread::scope(|scope| {
        for (id, ca) in cas.into_iter().enumerate() {
            let (server_ca, requests, running) = (&server_ca, &requests, &running);
            scope.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(id as u64);
                let client = Client {
                    addr,
                    server_ca,
                    ca,
                    id,
                    taps,
                };
                while running.load(Ordering::SeqCst) {
                    client.step(pick(&mut rng), &mut rng);
                    requests.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let mut samples = vec![sample(&host, start, 0)];
        while Instant::now() < deadline {
            std::thread::sleep(interval.min(deadline.saturating_duration_since(Instant::now())));
            let s = sample(&host, start, requests.load(Ordering::Relaxed));
            eprintln!(
                "t={:>5}s rss={:>7} KiB fds={:>4} worker rss={:>7} KiB fds={:>4} taps={:>3} \
                 files={:>4} tenders={:>3} requests={}",
                s.seconds,
                s.rss_kib,
                s.fds,
                s.worker_rss_kib,
                s.worker_fds,
                s.taps,
                s.files,
                s.tenders,
                s.requests
            );
            samples.push(s);
        }
        running.store(false, Ordering::SeqCst);
        samples
    });

    // Everything destroyed: nothing may be left over.
    for id in 0..clients {
        let ca = host.ca.intermediate(
            &format!("tenant{id}"),
            &policy(4, &[0, 1], 256, Some(4), &["br0"]),
        );
        for u in 0..4 {
            let leaf = ca.leaf(
                Some(&format!("c{id}u{u}")),
                &Command::Unikernel(UnikernelCmd::Destroy),
            );
            host.request(&leaf).unwrap();
        }
    }
    hardening::wait_until("every tender has exited", || host.tenders().is_empty());
    std::thread::sleep(Duration::from_secs(3));
    let end = sample(&host, start, requests.load(Ordering::Relaxed));
    let peak = |f: fn(&Sample) -> u64| samples.iter().map(f).max().unwrap_or(0);
    let summary = format!(
        "| | start | end (all destroyed) | peak |\n|---|---:|---:|---:|\n\
         | RSS (KiB) | {} | {} | {} |\n| open fds | {} | {} | {} |\n\
         | TLS worker RSS (KiB) | {} | {} | {} |\n| TLS worker open fds | {} | {} | {} |\n\
         | taps | {} | {} | {} |\n| files in the state dir | {} | {} | {} |\n\
         | tenders | {} | {} | {} |\n\nclient steps (a block step is four requests): {} in {} s",
        baseline.rss_kib,
        end.rss_kib,
        peak(|s| s.rss_kib),
        baseline.fds,
        end.fds,
        peak(|s| s.fds as u64),
        baseline.worker_rss_kib,
        end.worker_rss_kib,
        peak(|s| s.worker_rss_kib),
        baseline.worker_fds,
        end.worker_fds,
        peak(|s| s.worker_fds as u64),
        baseline.taps,
        end.taps,
        peak(|s| s.taps as u64),
        baseline.files,
        end.files,
        peak(|s| s.files as u64),
        baseline.tenders,
        end.tenders,
        peak(|s| s.tenders as u64),
        end.requests,
        seconds
    );
    eprintln!("{summary}");
    let by_minute: BTreeMap<u64, u64> = samples
        .iter()
        .map(|s| (s.seconds / 60, s.rss_kib))
        .collect();
    eprintln!("RSS (KiB) at the end of each minute: {by_minute:?}");

    assert_eq!(end.taps, 0);
    assert_eq!(end.tenders, 0);
    assert_eq!(files(&host.state_dir()), baseline_files);
    assert!(end.fds <= baseline.fds, "{end:?} after {baseline:?}");
    assert!(
        end.worker_fds <= baseline.worker_fds,
        "{end:?} after {baseline:?}"
    );
    assert_flat(&samples, "the endpoint", |s| s.rss_kib);
    assert_flat(&samples, "the TLS worker", |s| s.worker_rss_kib);
    host.assert_served();
}
