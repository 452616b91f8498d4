//! The cost of one statistics sampling round (docs/PERFORMANCE.md, "Statistics
//! sampling"):
//! - `sample/fake_1000`: 1 000 unikernels with one tap and a v1 cgroup each, read from a
//!   fake /proc, /sys and cgroup tree (regular files);
//! - `taps/proc_net_dev_1000` against `taps/sysfs_statistics_1000`: the counters of 1 000
//!   taps from one `/proc/net/dev` (what petrel reads) or from ten sysfs files per tap;
//! - `sample/real_N`, only with `PETREL_BENCH_TENDERS=N`: N real stand-in tenders
//!   (sleeping processes) sampled from the real /proc;
//! - `endpoint/policy_info_*_N`, only with `PETREL_BENCH_ENDPOINT_TENDERS=N`: the latency
//!   of one `policy info` request (TLS handshake included) to the real `petrel-endpoint`
//!   running N stand-in unikernels, without sampling and with every unikernel sampled
//!   every second (`--metrics` on, `--stats-interval 1`).
//!
//! Run: `cargo bench --bench stats` (and `PETREL_BENCH_TENDERS=1000 cargo bench --bench
//! stats -- real`, `PETREL_BENCH_ENDPOINT_TENDERS=1000 cargo bench --bench stats --
//! endpoint`). Besides criterion's wall-clock figures, the sampling benchmarks print the
//! CPU time of one round, which load from other processes does not inflate.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

use petrel::codec::Timestamp;
use petrel::executor::cgroup::{CpuUsageFile, UsageFiles};
use petrel::executor::stats::{
    Sources, Target, TargetNet, Units, parse_net_dev, sample, sample_with,
};
use petrel::name::Name;

const UNIKERNELS: usize = 1000;

const STAND_IN: &str = env!("CARGO_BIN_EXE_petrel-stand-in-tender");

const STATUS: &str = "Name:\tsolo5-hvt\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\n\
Ngid:\t0\nPid:\t4242\nPPid:\t1\nTracerPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n\
FDSize:\t64\nGroups:\t0\nVmPeak:\t  547612 kB\nVmSize:\t  547612 kB\nVmLck:\t       0 kB\n\
VmPin:\t       0 kB\nVmHWM:\t  135180 kB\nVmRSS:\t  135180 kB\nRssAnon:\t  133000 kB\n\
RssFile:\t    2180 kB\nRssShmem:\t       0 kB\nVmData:\t  540000 kB\nVmStk:\t     132 kB\n\
VmExe:\t     240 kB\nVmLib:\t    2000 kB\nVmPTE:\t     320 kB\nVmSwap:\t       0 kB\n\
Threads:\t1\nSigQ:\t0/95000\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n\
SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000004002\n\
CapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n\
Cpus_allowed:\t1\nCpus_allowed_list:\t0\nMems_allowed_list:\t0\n\
voluntary_ctxt_switches:\t1723\nnonvoluntary_ctxt_switches:\t12\n";

const STATISTICS: [&str; 10] = [
    "rx_bytes",
    "rx_packets",
    "rx_errors",
    "rx_dropped",
    "multicast",
    "tx_bytes",
    "tx_packets",
    "tx_errors",
    "tx_dropped",
    "collisions",
];

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// A fake tree of `n` unikernels: /proc entries, /proc/net/dev, sysfs tap `statistics/`
/// directories (for the comparison only), v1 cgroup usage files; and the targets. The
/// taps do not exist, so their MTU and flags ioctls fail (as fast as they succeed).
fn fake_tree(root: &Path, n: usize) -> (Sources, Vec<Target>) {
    let sources = Sources {
        proc: root.join("proc"),
    };
    let sys = root.join("sys");
    let mut net_dev = String::from(
        "Inter-|   Receive                                                |  Transmit\n \
         face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets \
         errs drop fifo colls carrier compressed\n    lo:       0       0    0    0    0     \
         0          0         0        0       0    0    0    0     0       0          0\n",
    );
    let mut targets = Vec::with_capacity(n);
    for i in 0..n {
        let pid = 100_000 + i;
        let tap = format!("vmmtap{i}");
        let dir = sources.proc.join(pid.to_string());
        write(
            &dir.join("stat"),
            &format!(
                "{pid} (solo5-hvt) S 1 {pid} {pid} 0 -1 4194560 33900 0 0 0 1234 567 0 0 20 0 \
                 1 0 98765 560754688 33795 18446744073709551615 1 1 0 0 0 0 0 4096 16386 0 0 \
                 0 17 0 0 0 0 0 0\n"
            ),
        );
        write(&dir.join("status"), STATUS);
        net_dev.push_str(&format!(
            "{tap}: {} {} 0 0 0 0 0 0 {} {} 0 0 0 0 0 0\n",
            i * 1000,
            i,
            i * 2000,
            i * 2
        ));
        for file in STATISTICS {
            write(
                &sys.join(&tap).join("statistics").join(file),
                &format!("{i}\n"),
            );
        }
        let cgroup = root.join("cg").join(i.to_string());
        write(&cgroup.join("memory.usage_in_bytes"), "140000000\n");
        write(&cgroup.join("cpuacct.usage"), "17989123456\n");
        targets.push(Target {
            name: Name::parse(&format!("tenant{}:vm{i}", i % 50)).unwrap(),
            pid: u32::try_from(pid).unwrap(),
            started: Timestamp::EPOCH,
            nets: vec![TargetNet {
                netif: "service".into(),
                tap,
            }],
            cgroup: Some(UsageFiles {
                memory: Some(cgroup.join("memory.usage_in_bytes")),
                cpu: Some(CpuUsageFile::Cpuacct(cgroup.join("cpuacct.usage"))),
            }),
            memory_limit: Some(168 * 1024 * 1024),
        });
    }
    write(&sources.proc.join("net/dev"), &net_dev);
    (sources, targets)
}

/// CPU time (user + system) of this thread.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed rusage it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut usage), 0);
        usage
    };
    let micros = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap())
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap())
    };
    micros(usage.ru_utime) + micros(usage.ru_stime)
}

/// Prints the CPU time one call of `f` takes on average over 20 calls: unlike the wall
/// time criterion reports, it does not grow when other processes load the machine.
fn report_cpu(what: &str, mut f: impl FnMut()) {
    const ROUNDS: u32 = 20;
    let start = thread_cpu();
    for _ in 0..ROUNDS {
        f();
    }
    println!(
        "{what}: {:?} CPU time per call",
        (thread_cpu() - start) / ROUNDS
    );
}

fn fake(c: &mut Criterion) {
    let root = tempfile::tempdir().unwrap();
    let (sources, targets) = fake_tree(root.path(), UNIKERNELS);
    let units = Units::host();
    assert_eq!(sample_with(&sources, units, &targets).len(), UNIKERNELS);
    report_cpu("sample/fake_1000", || {
        sample_with(&sources, units, &targets);
    });
    let mut group = c.benchmark_group("sample");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("fake_1000", |b| {
        b.iter(|| sample_with(&sources, units, &targets))
    });
    group.finish();

    let mut group = c.benchmark_group("taps");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("proc_net_dev_1000", |b| {
        b.iter(|| {
            let text = fs::read_to_string(sources.proc.join("net/dev")).unwrap();
            parse_net_dev(&text).len()
        })
    });
    group.bench_function("sysfs_statistics_1000", |b| {
        b.iter(|| {
            let mut total = 0u64;
            for target in &targets {
                let dir = root
                    .path()
                    .join("sys")
                    .join(&target.nets[0].tap)
                    .join("statistics");
                for file in STATISTICS {
                    let text = fs::read_to_string(dir.join(file)).unwrap();
                    total += text.trim().parse::<u64>().unwrap();
                }
            }
            total
        })
    });
    group.finish();
}

/// Stand-in tenders that sleep until dropped.
struct Tenders(Vec<Child>);

impl Drop for Tenders {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

fn real(c: &mut Criterion) {
    let Some(n) = std::env::var("PETREL_BENCH_TENDERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    let mut tenders = Tenders(Vec::with_capacity(n));
    for _ in 0..n {
        let child = Command::new(STAND_IN)
            .args(["--mem=32", "--", STAND_IN, "--wait"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        tenders.0.push(child);
    }
    let targets: Vec<Target> = tenders
        .0
        .iter()
        .enumerate()
        .map(|(i, child)| Target {
            name: Name::parse(&format!("tenant{}:vm{i}", i % 50)).unwrap(),
            pid: child.id(),
            started: Timestamp::EPOCH,
            nets: Vec::new(),
            cgroup: None,
            memory_limit: None,
        })
        .collect();
    let sources = Sources::default();
    assert_eq!(sample(&sources, &targets).len(), n);
    report_cpu(&format!("sample/real_{n}"), || {
        sample(&sources, &targets);
    });
    let mut group = c.benchmark_group("sample");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function(format!("real_{n}"), |b| {
        b.iter(|| sample(&sources, &targets))
    });
    group.finish();
}

/// The PKI of the endpoint benchmark: a root CA, the server's certificate and key (for
/// 127.0.0.1) in files, and the CA as an issuer for request leaves.
struct BenchPki {
    issuer: petrel::pki::CaIssuer,
    server_ca: petrel::pki::Certificate,
}

impl BenchPki {
    fn write(dir: &Path) -> Self {
        use petrel::pki::{self, AltName, Criticality, KeyType, PrivateKey, Profile, Serial};
        let now = pki::now_utc();
        let mut rng = rand::thread_rng();
        let ca_key = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let validity = pki::Validity {
            now,
            duration: Duration::from_secs(86400),
        };
        let ca =
            pki::cert::root_ca("bench-ca", &ca_key, validity, Serial::random(&mut rng)).unwrap();
        let issuer = pki::CaIssuer::new(vec![ca.clone()], ca_key).unwrap();
        let server_key = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let alt = [AltName::Ip("127.0.0.1".parse().unwrap())];
        let template = pki::cert::CertificateTemplate {
            profile: Profile::Server,
            subject: pki::Subject::CommonName("localhost"),
            public_key: server_key.public_key(),
            albatross: None,
            albatross_criticality: Criticality::NonCritical,
            alt_names: &alt,
            validity: pki::Validity::for_profile(now, Profile::Server),
            serial: Serial::random(&mut rng),
        };
        let server = pki::cert::issue(&template, &issuer).unwrap();
        fs::write(dir.join("cacert.pem"), ca.pem()).unwrap();
        fs::write(dir.join("server.pem"), server.pem()).unwrap();
        fs::write(dir.join("server.key"), server_key.to_pem()).unwrap();
        Self {
            issuer,
            server_ca: ca,
        }
    }

    /// A client configuration presenting a fresh 300-second leaf for `command` on `name`.
    fn client(
        &self,
        name: &Name,
        command: &petrel::codec::Command,
    ) -> std::sync::Arc<rustls::ClientConfig> {
        let prepared = petrel::client::remote::prepare_with(
            &self.issuer,
            name,
            command,
            petrel::pki::KeyType::Ed25519,
            petrel::pki::now_utc(),
        )
        .unwrap();
        petrel::client::tls::client_config(
            std::slice::from_ref(&self.server_ca),
            &prepared.chain,
            &prepared.key,
        )
        .unwrap()
    }
}

/// Connects, reads every frame until the server closes; the payload of the last one.
async fn exchange(
    port: u16,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> petrel::codec::Payload {
    let destination =
        petrel::client::request::Destination::parse(&format!("127.0.0.1:{port}")).unwrap();
    let name = petrel::client::tls::server_name(&destination, None).unwrap();
    let mut stream = petrel::client::tls::connect(&destination, config, name)
        .await
        .unwrap();
    let mut last = None;
    while let Some(wire) = petrel::client::reply::read_frame(&mut stream)
        .await
        .unwrap()
    {
        last = Some(wire.payload);
    }
    last.unwrap()
}

/// A running `petrel-endpoint`, stopped with SIGTERM (which stops its tenders) when
/// dropped.
struct RunningEndpoint(Child);

impl Drop for RunningEndpoint {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(i32::try_from(self.0.id()).unwrap(), libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn endpoint(c: &mut Criterion) {
    use petrel::codec::{Command as Cmd, Payload, PolicyCmd, UnikernelCmd, UnikernelConfig};
    let Some(n) = std::env::var("PETREL_BENCH_ENDPOINT_TENDERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let image = petrel::executor::manifest::build_test_image(
        petrel::executor::manifest::Target::Hvt,
        2,
        &[],
    );
    let mut group = c.benchmark_group("endpoint");
    group.sample_size(50);
    group.measurement_time(Duration::from_secs(20));
    for (label, sampling) in [("without_sampling", false), ("sampling_every_1s", true)] {
        let dir = tempfile::tempdir().unwrap();
        let pki = BenchPki::write(dir.path());
        let port = free_port();
        let metrics_port = free_port().to_string();
        let port_text = port.to_string();
        let memory = (n * 32 + 32).to_string();
        let mut args = vec![
            "cacert.pem",
            "server.pem",
            "server.key",
            "--ip",
            "127.0.0.1",
            "--port",
            &port_text,
            "--state-dir",
            "state",
            "--tender",
            STAND_IN,
            "--log-level",
            "warn",
            "--no-cgroups",
            "--stats-interval",
            "1",
            "--cpus",
            "0",
            "--memory",
            &memory,
        ];
        if sampling {
            args.extend(["--metrics", &metrics_port]);
        }
        let endpoint = RunningEndpoint(
            Command::new(env!("CARGO_BIN_EXE_petrel-endpoint"))
                .args(&args)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the endpoint did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        for i in 0..n {
            let command = Cmd::Unikernel(UnikernelCmd::Create(UnikernelConfig {
                image: image.clone(),
                arguments: Some(vec!["--wait".into()]),
                ..UnikernelConfig::default()
            }));
            let name = Name::parse(&format!(":vm{i}")).unwrap();
            let reply = runtime.block_on(exchange(port, pki.client(&name, &command)));
            assert_eq!(reply, Payload::success_string("created unikernel"));
        }
        // The endpoint's own CPU time while idle: what sampling costs it.
        let cpu_ms = || {
            let text = fs::read_to_string(format!("/proc/{}/stat", endpoint.0.id())).unwrap();
            let stat = petrel::executor::stats::parse_proc_stat(&text).unwrap();
            (stat.utime + stat.stime) * 1000 / Units::host().clock_ticks
        };
        let idle = Duration::from_secs(10);
        let before = cpu_ms();
        std::thread::sleep(idle);
        println!(
            "endpoint/{label}_{n}: {} ms of CPU per second while idle",
            (cpu_ms() - before) / idle.as_secs()
        );
        // One leaf for every request (valid for 300 s, longer than the measurement).
        let config = pki.client(&Name::root(), &Cmd::Policy(PolicyCmd::Info));
        group.bench_function(format!("policy_info_{label}_{n}"), |b| {
            b.iter(|| runtime.block_on(exchange(port, std::sync::Arc::clone(&config))))
        });
    }
    group.finish();
}

criterion_group!(benches, fake, real, endpoint);
criterion_main!(benches);
