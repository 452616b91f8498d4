//! Statistics of running unikernels: albatross's statistics daemon
//! (`spec/unikernel-and-executor.md` §14) inside the executor, in albatross's data format
//! (`spec/wire.md` §6.2, §6.3).
//!
//! # Sampling
//! Every [`Limits::stats_interval`](crate::limits::Limits::stats_interval) a sampler task
//! reads, on a blocking thread, for each running unikernel ([`sample`]):
//! - its tender's `/proc/<pid>/stat` and `status`: the [`RUsage`] and [`KinfoMem`]
//!   albatross fills on Linux (times from clock ticks, `maxrss` from `VmHWM` in KiB as
//!   getrusage(2) reports it, sizes in pages);
//! - its cgroup's memory and CPU usage ([`UsageFiles`]);
//! - each tap's counters, from one read of `/proc/net/dev` for all taps (one file instead
//!   of ten per tap: docs/PERFORMANCE.md), and its MTU and flags from two ioctls on one
//!   socket per round (every file read costs a few syscalls, so fewer files). The
//!   counters are the host-side tap's, as albatross reports them: `input` is what the
//!   unikernel sent, `output` what it was sent. `IfData.bridge` is the unikernel-side
//!   device name (albatross's choice).
//!
//! Figures albatross has no field for travel in `vmmStats` as key/value pairs
//! ([`VMM_RSS_BYTES`], [`VMM_CGROUP_MEMORY_BYTES`], [`VMM_CGROUP_MEMORY_LIMIT_BYTES`],
//! [`VMM_CGROUP_CPU_USEC`]). A unikernel whose tender cannot be read (it just exited) is
//! left out of that round, as albatross does.
//!
//! Nothing is sampled while nobody subscribes and the endpoint's metrics are off; with
//! subscribers only, only the unikernels they cover are. Each round replaces the previous
//! one ([`StatsRound`]), which the metrics exporter reads.
//!
//! # Subscriptions
//! `stats subscribe` at name N is answered with `success string "subscribed"`, then, each
//! round, one `data statistics` frame per running unikernel whose label sequence starts
//! with N's, its header name relative to N's path (§6.3), until the client goes away.
//! A subscriber that arrives while a recent round exists gets it at once. Several
//! subscriptions may watch the same name (unlike albatross, which keeps one and closes the
//! older: two operators may watch one host), at most [`MAX_STATS_SUBSCRIBERS`]; one more
//! closes the oldest with a failure frame ([`SUBSCRIPTION_REPLACED`]). Each subscriber
//! reads the latest round at its own pace: a slow one skips rounds instead of buffering
//! them.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::codec::{
    Data, IfData, KinfoMem, Payload, RUsage, StatsData, Timestamp, Timeval, VmmStat,
};
use crate::executor::api::OutputFrame;
use crate::executor::cgroup::UsageFiles;
use crate::executor::state::Inner;
use crate::name::Name;

/// Subscriptions watching the same name at once (as many as console subscribers per
/// unikernel, albatross's `--max-subscribers` default). One more closes the oldest.
pub const MAX_STATS_SUBSCRIBERS: usize = 5;

/// Largest `/proc/<pid>/*` file read (`status` is about 1.5 KiB).
pub const MAX_PROC_FILE_SIZE: u64 = 64 * 1024;

/// Largest `/proc/net/dev` read: about 130 octets per interface, so 16 MiB covers
/// 100 000 interfaces.
pub const MAX_NET_DEV_SIZE: u64 = 16 * 1024 * 1024;

/// Where the kernel shows processes.
pub const PROC: &str = "/proc";

/// Success text of a statistics subscription (albatross's).
pub const SUBSCRIBED: &str = "subscribed";

/// Failure text sent to the oldest subscription of a name when one more arrives.
pub const SUBSCRIPTION_REPLACED: &str =
    "statistics subscription replaced by a newer one (at most 5 subscribers per name)";

/// `vmmStats` key: the tender's resident set size (`VmRSS`), in octets.
pub const VMM_RSS_BYTES: &str = "rss_bytes";

/// `vmmStats` key: memory charged to the unikernel's cgroup, in octets.
pub const VMM_CGROUP_MEMORY_BYTES: &str = "cgroup_memory_bytes";

/// `vmmStats` key: the memory limit of the unikernel's cgroup, in octets.
pub const VMM_CGROUP_MEMORY_LIMIT_BYTES: &str = "cgroup_memory_limit_bytes";

/// `vmmStats` key: CPU time of the unikernel's cgroup, in microseconds.
pub const VMM_CGROUP_CPU_USEC: &str = "cgroup_cpu_usec";

/// Where the sampler reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// procfs (`/proc`); `net/dev` below it gives the interface counters.
    pub proc: PathBuf,
}

impl Default for Sources {
    fn default() -> Self {
        Self { proc: PROC.into() }
    }
}

/// One network device of a [`Target`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetNet {
    /// The unikernel-side device name.
    pub netif: String,
    /// The host tap.
    pub tap: String,
}

/// A running unikernel to sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The unikernel.
    pub name: Name,
    /// Its tender's pid.
    pub pid: u32,
    /// When the tender was started.
    pub started: Timestamp,
    /// Its network devices, in configuration order.
    pub nets: Vec<TargetNet>,
    /// Its cgroup's usage files, if it runs in one.
    pub cgroup: Option<UsageFiles>,
    /// Its cgroup's memory limit in octets, if any.
    pub memory_limit: Option<u64>,
}

/// One unikernel in one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnikernelSample {
    /// The unikernel's full name.
    pub name: Name,
    /// The statistics as subscribers receive them.
    pub data: StatsData,
    /// CPU time in nanoseconds: the cgroup's if it runs in one, else the tender's user
    /// and system time.
    pub cpu_ns: u64,
    /// Memory in octets: charged to the cgroup if it runs in one, else the tender's
    /// resident set.
    pub memory_bytes: u64,
    /// The cgroup's memory limit in octets, if any.
    pub memory_limit_bytes: Option<u64>,
}

/// The result of one sampling round.
#[derive(Debug, Clone)]
pub struct StatsRound {
    /// Wall-clock time the round started.
    pub at: SystemTime,
    /// Monotonic time the round started.
    pub taken: Instant,
    /// How long reading took.
    pub duration: Duration,
    /// One entry per unikernel sampled, by name.
    pub samples: Vec<UnikernelSample>,
}

/// The fields of `/proc/<pid>/stat` petrel uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStat {
    /// Minor faults (field 10).
    pub minflt: u64,
    /// Major faults (field 12).
    pub majflt: u64,
    /// User time in clock ticks (field 14).
    pub utime: u64,
    /// System time in clock ticks (field 15).
    pub stime: u64,
    /// Virtual memory size in octets (field 23).
    pub vsize: u64,
    /// Resident set size in pages (field 24).
    pub rss: u64,
    /// Pages swapped (field 36, not maintained by Linux).
    pub nswap: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may contain
/// spaces and parentheses itself, so fields are counted after the last `)`.
pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field n (1-based) is at index n - 3 after the command name.
    let field = |n: usize| -> Option<u64> { fields.get(n.checked_sub(3)?)?.parse().ok() };
    Some(ProcStat {
        minflt: field(10)?,
        majflt: field(12)?,
        utime: field(14)?,
        stime: field(15)?,
        vsize: field(23)?,
        rss: field(24)?,
        nswap: field(36).unwrap_or(0),
    })
}

/// The fields of `/proc/<pid>/status` petrel uses (absent ones are 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStatus {
    /// Peak resident set size, KiB (`VmHWM`).
    pub vm_hwm_kib: u64,
    /// Resident set size, KiB (`VmRSS`).
    pub vm_rss_kib: u64,
    /// Stack size, KiB (`VmStk`).
    pub vm_stk_kib: u64,
    /// Text (code) size, KiB (`VmExe`).
    pub vm_exe_kib: u64,
    /// Data size, KiB (`VmData`).
    pub vm_data_kib: u64,
    /// Voluntary context switches.
    pub voluntary_ctxt_switches: u64,
    /// Involuntary context switches.
    pub nonvoluntary_ctxt_switches: u64,
}

/// Parses `/proc/<pid>/status` (`Key:\tvalue [kB]` lines).
pub fn parse_proc_status(text: &str) -> ProcStatus {
    let mut status = ProcStatus::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "VmHWM" => &mut status.vm_hwm_kib,
            "VmRSS" => &mut status.vm_rss_kib,
            "VmStk" => &mut status.vm_stk_kib,
            "VmExe" => &mut status.vm_exe_kib,
            "VmData" => &mut status.vm_data_kib,
            "voluntary_ctxt_switches" => &mut status.voluntary_ctxt_switches,
            "nonvoluntary_ctxt_switches" => &mut status.nonvoluntary_ctxt_switches,
            _ => continue,
        };
        if let Some(n) = value.split_whitespace().next().and_then(|v| v.parse().ok()) {
            *slot = n;
        }
    }
    status
}

/// The counters of one interface in `/proc/net/dev`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DevCounters {
    /// Octets received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Packets dropped on receive.
    pub rx_dropped: u64,
    /// Multicast packets received.
    pub rx_multicast: u64,
    /// Octets sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Send errors.
    pub tx_errors: u64,
    /// Packets dropped on send.
    pub tx_dropped: u64,
    /// Collisions.
    pub collisions: u64,
}

/// Parses `/proc/net/dev`: two header lines, then `name: 16 counters` per interface
/// (receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes
/// packets errs drop fifo colls carrier compressed). Malformed lines are skipped.
pub fn parse_net_dev(text: &str) -> HashMap<String, DevCounters> {
    let mut devices = HashMap::new();
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        let values: Option<Vec<u64>> = counters
            .split_whitespace()
            .map(|v| v.parse().ok())
            .collect();
        let Some(values) = values else {
            continue;
        };
        let at = |i: usize| values.get(i).copied();
        let (
            Some(rx_bytes),
            Some(rx_packets),
            Some(rx_errors),
            Some(rx_dropped),
            Some(rx_multicast),
            Some(tx_bytes),
            Some(tx_packets),
            Some(tx_errors),
            Some(tx_dropped),
            Some(collisions),
        ) = (
            at(0),
            at(1),
            at(2),
            at(3),
            at(7),
            at(8),
            at(9),
            at(10),
            at(11),
            at(13),
        )
        else {
            continue;
        };
        devices.insert(
            name.trim().to_owned(),
            DevCounters {
                rx_bytes,
                rx_packets,
                rx_errors,
                rx_dropped,
                rx_multicast,
                tx_bytes,
                tx_packets,
                tx_errors,
                tx_dropped,
                collisions,
            },
        );
    }
    devices
}

/// Clock ticks per second and the page size, as the kernel reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Units {
    /// `sysconf(_SC_CLK_TCK)`.
    pub clock_ticks: u64,
    /// `sysconf(_SC_PAGESIZE)`.
    pub page_size: u64,
}

impl Units {
    /// This host's.
    pub fn host() -> Self {
        // SAFETY: sysconf has no preconditions.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        Self {
            clock_ticks: u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100),
            page_size: u64::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096),
        }
    }

    fn timeval(self, ticks: u64) -> Timeval {
        let micros =
            u128::from(ticks % self.clock_ticks) * 1_000_000 / u128::from(self.clock_ticks);
        Timeval {
            seconds: int64(ticks / self.clock_ticks),
            microseconds: i64::try_from(micros).unwrap_or(0),
        }
    }

    fn nanos(self, ticks: u64) -> u64 {
        u64::try_from(u128::from(ticks) * 1_000_000_000 / u128::from(self.clock_ticks))
            .unwrap_or(u64::MAX)
    }
}

/// Everything read about one tender (pure inputs of [`stats_data`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenderFigures {
    /// `/proc/<pid>/stat`.
    pub stat: ProcStat,
    /// `/proc/<pid>/status`.
    pub status: ProcStatus,
}

/// The counters and settings of one tap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapFigures {
    /// From `/proc/net/dev`.
    pub counters: DevCounters,
    /// MTU (`SIOCGIFMTU`).
    pub mtu: u64,
    /// Interface flags (`SIOCGIFFLAGS`).
    pub flags: u64,
}

/// Builds the albatross statistics of one unikernel from what was read.
pub fn stats_data(
    units: Units,
    started: Timestamp,
    tender: &TenderFigures,
    taps: &[(String, TapFigures)],
    cgroup: Option<(crate::executor::cgroup::CgroupUsage, Option<u64>)>,
) -> StatsData {
    let stat = &tender.stat;
    let status = &tender.status;
    let resource_usage = RUsage {
        utime: units.timeval(stat.utime),
        stime: units.timeval(stat.stime),
        maxrss: int64(status.vm_hwm_kib),
        ixrss: 0,
        idrss: 0,
        isrss: 0,
        minflt: int64(stat.minflt),
        majflt: int64(stat.majflt),
        nswap: int64(stat.nswap),
        inblock: 0,
        outblock: 0,
        msgsnd: 0,
        msgrcv: 0,
        nsignals: 0,
        nvcsw: int64(status.voluntary_ctxt_switches),
        nivcsw: int64(status.nonvoluntary_ctxt_switches),
    };
    let millis = started.millis();
    let kinfo_mem = KinfoMem {
        vsize: int64(stat.vsize),
        rss: int64(stat.rss),
        tsize: int64(pages(units, status.vm_exe_kib)),
        dsize: int64(pages(units, status.vm_data_kib)),
        ssize: int64(pages(units, status.vm_stk_kib)),
        runtime: int64(units.nanos(stat.utime.saturating_add(stat.stime)) / 1000),
        cow: 0,
        start: Timeval {
            seconds: millis.div_euclid(1000),
            microseconds: millis.rem_euclid(1000).saturating_mul(1000),
        },
    };
    let ifdata = taps
        .iter()
        .map(|(netif, tap)| {
            let c = &tap.counters;
            IfData {
                bridge: netif.clone(),
                flags: i32::try_from(tap.flags).unwrap_or(i32::MAX),
                send_length: 0,
                max_send_length: 0,
                send_drops: 0,
                mtu: i32::try_from(tap.mtu).unwrap_or(i32::MAX),
                baudrate: 0,
                input_packets: int64(c.rx_packets),
                input_errors: int64(c.rx_errors),
                output_packets: int64(c.tx_packets),
                output_errors: int64(c.tx_errors),
                collisions: int64(c.collisions),
                input_bytes: int64(c.rx_bytes),
                output_bytes: int64(c.tx_bytes),
                input_mcast: int64(c.rx_multicast),
                output_mcast: 0,
                input_dropped: int64(c.rx_dropped),
                output_dropped: int64(c.tx_dropped),
            }
        })
        .collect();
    let mut vmm = vec![VmmStat {
        key: VMM_RSS_BYTES.to_owned(),
        value: int64(status.vm_rss_kib.saturating_mul(1024)),
    }];
    if let Some((usage, limit)) = cgroup {
        let pairs = [
            (VMM_CGROUP_MEMORY_BYTES, usage.memory_bytes),
            (VMM_CGROUP_MEMORY_LIMIT_BYTES, limit),
            (VMM_CGROUP_CPU_USEC, usage.cpu_ns.map(|ns| ns / 1000)),
        ];
        for (key, value) in pairs {
            if let Some(value) = value {
                vmm.push(VmmStat {
                    key: key.to_owned(),
                    value: int64(value),
                });
            }
        }
    }
    StatsData {
        resource_usage,
        ifdata,
        vmm_stats: Some(vmm),
        kinfo_mem: Some(kinfo_mem),
    }
}

/// KiB in pages.
fn pages(units: Units, kib: u64) -> u64 {
    kib.saturating_mul(1024) / units.page_size
}

fn int64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Samples `targets` (see the module documentation); blocking file reads.
pub fn sample(sources: &Sources, targets: &[Target]) -> Vec<UnikernelSample> {
    sample_with(sources, Units::host(), targets)
}

/// [`sample`] with the given units (for tests and fake trees).
pub fn sample_with(sources: &Sources, units: Units, targets: &[Target]) -> Vec<UnikernelSample> {
    let any_nets = targets.iter().any(|t| !t.nets.is_empty());
    let devices = if any_nets {
        read_bounded(&sources.proc.join("net/dev"), MAX_NET_DEV_SIZE)
            .map(|text| parse_net_dev(&text))
            .unwrap_or_default()
    } else {
        HashMap::new()
    };
    let settings = any_nets.then(InterfaceSettings::open).flatten();
    let mut samples = Vec::with_capacity(targets.len());
    for target in targets {
        let dir = sources.proc.join(target.pid.to_string());
        let Some(stat) = read_bounded(&dir.join("stat"), MAX_PROC_FILE_SIZE)
            .as_deref()
            .and_then(parse_proc_stat)
        else {
            continue;
        };
        let status = read_bounded(&dir.join("status"), MAX_PROC_FILE_SIZE)
            .map(|t| parse_proc_status(&t))
            .unwrap_or_default();
        let tender = TenderFigures { stat, status };
        let taps: Vec<(String, TapFigures)> = target
            .nets
            .iter()
            .map(|net| {
                let (mtu, flags) = settings.as_ref().map_or((0, 0), |s| s.of(&net.tap));
                (
                    net.netif.clone(),
                    TapFigures {
                        counters: devices.get(&net.tap).copied().unwrap_or_default(),
                        mtu,
                        flags,
                    },
                )
            })
            .collect();
        let usage = target.cgroup.as_ref().map(UsageFiles::read);
        let data = stats_data(
            units,
            target.started,
            &tender,
            &taps,
            usage.map(|u| (u, target.memory_limit)),
        );
        let tender_ns = units.nanos(stat.utime.saturating_add(stat.stime));
        samples.push(UnikernelSample {
            name: target.name.clone(),
            cpu_ns: usage.and_then(|u| u.cpu_ns).unwrap_or(tender_ns),
            memory_bytes: usage
                .and_then(|u| u.memory_bytes)
                .unwrap_or(status.vm_rss_kib.saturating_mul(1024)),
            memory_limit_bytes: target.memory_limit,
            data,
        });
    }
    samples
}

/// Reads interface settings with ioctls on one datagram socket (of this process's network
/// namespace, where the taps are).
struct InterfaceSettings(std::os::fd::OwnedFd);

impl InterfaceSettings {
    fn open() -> Option<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket(2); the result is checked before it is owned.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        // SAFETY: a fresh descriptor this function owns.
        (fd >= 0).then(|| Self(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    /// `(mtu, flags)` of interface `name`; zeros if it cannot be read.
    fn of(&self, name: &str) -> (u64, u64) {
        use std::os::fd::AsRawFd;
        if name.len() >= libc::IFNAMSIZ {
            return (0, 0);
        }
        // SAFETY: ifreq is plain old data; all-zero is valid.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, byte) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *slot = libc::c_char::from_ne_bytes([byte]);
        }
        let fd = self.0.as_raw_fd();
        // SAFETY: SIOCGIFMTU and SIOCGIFFLAGS read into the ifreq given, which holds a
        // NUL-terminated name (shorter than IFNAMSIZ, the rest zero).
        unsafe {
            let mtu = if libc::ioctl(fd, libc::SIOCGIFMTU, &mut req) == 0 {
                u64::try_from(req.ifr_ifru.ifru_mtu).unwrap_or(0)
            } else {
                0
            };
            let flags = if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) == 0 {
                u64::from(u16::from_ne_bytes(req.ifr_ifru.ifru_flags.to_ne_bytes()))
            } else {
                0
            };
            (mtu, flags)
        }
    }
}

fn read_bounded(path: &Path, max: u64) -> Option<String> {
    let mut text = String::new();
    fs::File::open(path)
        .ok()?
        .take(max)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// Whether a subscription at `subscription` covers unikernel `unikernel` (§14): a path
/// covers every unikernel below it; a labelled name covers that unikernel and, as in
/// albatross's trie, those below the path of the same labels (`a:web` covers `a:web:x`).
/// Unlike albatross's trie, `x:` does not cover `:x` (spec N5: they are distinct names).
pub fn covers(subscription: &Name, unikernel: &Name) -> bool {
    match subscription.label() {
        None => unikernel.path().starts_with(subscription.path()),
        Some(label) => {
            unikernel == subscription
                || unikernel
                    .path()
                    .starts_with(&subscription.path().child(label.clone()))
        }
    }
}

/// Which unikernels a round must sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Demand {
    /// Nobody wants statistics: no round.
    Nothing,
    /// Those covered by these subscriptions.
    Covered(Vec<Name>),
    /// Every unikernel (metrics are on).
    All,
}

impl Demand {
    /// Whether `name` is to be sampled.
    pub fn wants(&self, name: &Name) -> bool {
        match self {
            Self::Nothing => false,
            Self::All => true,
            Self::Covered(subscriptions) => subscriptions.iter().any(|s| covers(s, name)),
        }
    }
}

/// The subscriptions and the latest round; owned by the executor, shared with the
/// sampler and the subscribers' tasks.
#[derive(Debug)]
pub(crate) struct StatsHub {
    interval: Duration,
    state: Mutex<HubState>,
    rounds: watch::Sender<Option<Arc<StatsRound>>>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct HubState {
    subscribers: Vec<Subscriber>,
    next_id: u64,
    always: bool,
    closed: bool,
}

#[derive(Debug)]
struct Subscriber {
    id: u64,
    name: Name,
    /// Closes the subscription; with a text, a failure frame is sent first.
    close: oneshot::Sender<Option<String>>,
}

impl StatsHub {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new(HubState::default()),
            rounds: watch::channel(None).0,
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Subscribes `out` to the statistics of the unikernels `name` covers: the hub sends
    /// the success reply, then the rounds.
    pub(crate) fn subscribe(self: &Arc<Self>, name: &Name, out: mpsc::Sender<OutputFrame>) {
        let rounds = self.rounds.subscribe();
        let (close, close_rx) = oneshot::channel();
        let id = {
            let mut state = self.lock();
            let id = state.next_id;
            state.next_id += 1;
            if state.closed {
                drop(close);
            } else {
                let same: Vec<u64> = state
                    .subscribers
                    .iter()
                    .filter(|s| &s.name == name)
                    .map(|s| s.id)
                    .collect();
                if same.len() >= MAX_STATS_SUBSCRIBERS {
                    if let Some(oldest) = same.first() {
                        if let Some(i) = state.subscribers.iter().position(|s| s.id == *oldest) {
                            let old = state.subscribers.remove(i);
                            let _ = old.close.send(Some(SUBSCRIPTION_REPLACED.to_owned()));
                        }
                    }
                }
                state.subscribers.push(Subscriber {
                    id,
                    name: name.clone(),
                    close,
                });
            }
            id
        };
        self.changed.notify_waiters();
        tokio::spawn(forward(
            Arc::clone(self),
            id,
            name.clone(),
            out,
            close_rx,
            rounds,
        ));
    }

    /// What the next round must sample.
    pub(crate) fn demand(&self) -> Demand {
        let state = self.lock();
        if state.closed {
            Demand::Nothing
        } else if state.always {
            Demand::All
        } else if state.subscribers.is_empty() {
            Demand::Nothing
        } else {
            Demand::Covered(state.subscribers.iter().map(|s| s.name.clone()).collect())
        }
    }

    /// Samples every unikernel every interval, subscribers or not (metrics).
    pub(crate) fn set_always(&self, always: bool) {
        self.lock().always = always;
        self.changed.notify_waiters();
    }

    /// The latest round, if any.
    pub(crate) fn latest(&self) -> Option<Arc<StatsRound>> {
        self.rounds.borrow().clone()
    }

    /// Publishes a round to the subscribers.
    pub(crate) fn publish(&self, round: StatsRound) {
        self.rounds.send_replace(Some(Arc::new(round)));
    }

    /// Number of subscriptions now.
    #[cfg(test)]
    pub(crate) fn subscriber_count(&self) -> usize {
        self.lock().subscribers.len()
    }

    /// Ends every subscription and the sampler (shutdown).
    pub(crate) fn close(&self) {
        let subscribers = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.subscribers)
        };
        for subscriber in subscribers {
            let _ = subscriber.close.send(None);
        }
        self.changed.notify_waiters();
    }

    fn unsubscribe(&self, id: u64) {
        self.lock().subscribers.retain(|s| s.id != id);
    }

    /// Waits until a round is wanted (true) or the hub is closed (false).
    async fn wait_for_demand(&self) -> bool {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.demand() {
                Demand::Nothing if self.lock().closed => return false,
                Demand::Nothing => {}
                _ => return true,
            }
            notified.await;
        }
    }

    /// Waits for `duration`; false if the hub was closed meanwhile.
    async fn pause(&self, duration: Duration) -> bool {
        let sleep = tokio::time::sleep(duration);
        tokio::pin!(sleep);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().closed {
                return false;
            }
            tokio::select! {
                () = &mut sleep => return true,
                () = notified => {}
            }
        }
    }
}

/// Removes a subscription when its task ends.
struct Unsubscribe {
    hub: Arc<StatsHub>,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.id);
    }
}

/// A subscriber's task: the success reply, a recent round at once, then every new round,
/// until the client goes away or the subscription is closed.
async fn forward(
    hub: Arc<StatsHub>,
    id: u64,
    name: Name,
    out: mpsc::Sender<OutputFrame>,
    mut close: oneshot::Receiver<Option<String>>,
    mut rounds: watch::Receiver<Option<Arc<StatsRound>>>,
) {
    let interval = hub.interval;
    let _unsubscribe = Unsubscribe { hub, id };
    let reply = OutputFrame {
        name: name.clone(),
        payload: Payload::success_string(SUBSCRIBED),
    };
    if out.send(reply).await.is_err() {
        return;
    }
    let recent = rounds
        .borrow_and_update()
        .clone()
        .filter(|round| round.taken.elapsed() < interval);
    if let Some(round) = recent {
        if send_round(&out, &name, &round).await.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            closed = &mut close => {
                if let Ok(Some(text)) = closed {
                    let _ = out.send(OutputFrame { name: name.clone(), payload: Payload::failure(text) }).await;
                }
                return;
            }
            () = out.closed() => return,
            changed = rounds.changed() => {
                if changed.is_err() {
                    return;
                }
                let round = rounds.borrow_and_update().clone();
                if let Some(round) = round {
                    if send_round(&out, &name, &round).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Sends the frames of `round` that subscription `name` covers, named relative to its
/// path.
async fn send_round(
    out: &mpsc::Sender<OutputFrame>,
    name: &Name,
    round: &StatsRound,
) -> Result<(), ()> {
    for sample in round.samples.iter().filter(|s| covers(name, &s.name)) {
        let Some(relative) = sample.name.relative_to(name.path()) else {
            continue;
        };
        let frame = OutputFrame {
            name: relative,
            payload: Payload::Data(Data::Statistics(Box::new(sample.data.clone()))),
        };
        out.send(frame).await.map_err(|_| ())?;
    }
    Ok(())
}

/// Closes the hub when the executor's state goes away (ends the sampler).
#[derive(Debug)]
pub(crate) struct StatsHandle(pub(crate) Arc<StatsHub>);

impl Drop for StatsHandle {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Inner {
    /// The running unikernels `demand` wants, as sampling targets.
    fn stats_targets(&self, demand: &Demand) -> Vec<Target> {
        let global = self.global();
        global
            .running
            .iter()
            .filter(|(name, _)| demand.wants(name))
            .map(|(name, instance)| Target {
                name: name.clone(),
                pid: instance.pid.get(),
                started: instance.started,
                nets: instance
                    .nets
                    .iter()
                    .zip(&instance.taps)
                    .map(|(net, tap)| TargetNet {
                        netif: net.unikernel_device.clone(),
                        tap: tap.as_str().to_owned(),
                    })
                    .collect(),
                cgroup: instance.cgroup.as_ref().map(|c| c.usage_files()),
                memory_limit: instance
                    .cgroup
                    .as_ref()
                    .and_then(|c| c.memory_limit_bytes()),
            })
            .collect()
    }
}

/// Starts the sampler of `inner` (it ends when the executor's state is gone or closed).
pub(crate) fn spawn_sampler(inner: &Arc<Inner>, sources: Sources) {
    let hub = Arc::clone(&inner.stats.0);
    let weak = Arc::downgrade(inner);
    tokio::spawn(run_sampler(weak, hub, sources));
}

async fn run_sampler(inner: Weak<Inner>, hub: Arc<StatsHub>, sources: Sources) {
    loop {
        if !hub.wait_for_demand().await {
            return;
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let targets = strong.stats_targets(&hub.demand());
        drop(strong);
        let at = SystemTime::now();
        let taken = Instant::now();
        let reader = sources.clone();
        let samples = tokio::task::spawn_blocking(move || sample(&reader, &targets))
            .await
            .unwrap_or_default();
        let duration = taken.elapsed();
        tracing::trace!(unikernels = samples.len(), ?duration, "statistics sampled");
        hub.publish(StatsRound {
            at,
            taken,
            duration,
            samples,
        });
        if !hub.pause(hub.interval).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::cgroup::{CgroupUsage, CpuUsageFile};

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    const STAT: &str = "4242 (solo5-hvt (x) y) S 1 4242 4242 0 -1 4194560 1234 0 5 0 \
                        250 130 0 0 20 0 1 0 98765 541065216 3072 18446744073709551615 1 1 0 \
                        0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";

    const STATUS: &str = "Name:\tsolo5-hvt\nState:\tS (sleeping)\nVmPeak:\t  530000 kB\n\
                          VmHWM:\t   12344 kB\nVmRSS:\t   12288 kB\nVmData:\t    8192 kB\n\
                          VmStk:\t     132 kB\nVmExe:\t    1024 kB\n\
                          voluntary_ctxt_switches:\t17\nnonvoluntary_ctxt_switches:\t3\n";

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
petrelfake0: 123456     789    1    2    0     0          0         3   654321     987    4    5    0     6       0          0
 broken: 1 2 3
";

    #[test]
    fn proc_files() {
        assert_eq!(
            parse_proc_stat(STAT),
            Some(ProcStat {
                minflt: 1234,
                majflt: 5,
                utime: 250,
                stime: 130,
                vsize: 541_065_216,
                rss: 3072,
                nswap: 0,
            })
        );
        assert_eq!(parse_proc_stat("1 (x) S 1 2"), None);
        assert_eq!(parse_proc_stat("no parenthesis"), None);
        assert_eq!(
            parse_proc_status(STATUS),
            ProcStatus {
                vm_hwm_kib: 12344,
                vm_rss_kib: 12288,
                vm_stk_kib: 132,
                vm_exe_kib: 1024,
                vm_data_kib: 8192,
                voluntary_ctxt_switches: 17,
                nonvoluntary_ctxt_switches: 3,
            }
        );
        assert_eq!(parse_proc_status(""), ProcStatus::default());
        assert_eq!(
            parse_proc_status("VmRSS:\tlots kB\nVmHWM 5 kB\nVmStk:\t7 kB\n"),
            ProcStatus {
                vm_stk_kib: 7,
                ..ProcStatus::default()
            }
        );
    }

    #[test]
    fn interface_settings_by_ioctl() {
        let settings = InterfaceSettings::open().unwrap();
        let (mtu, flags) = settings.of("lo");
        assert!(mtu > 0);
        let loopback = u64::try_from(libc::IFF_LOOPBACK).unwrap();
        assert_eq!(flags & loopback, loopback);
        assert_eq!(settings.of("petrel-nothing"), (0, 0));
        assert_eq!(settings.of("a-name-longer-than-ifnamsiz"), (0, 0));
    }

    #[test]
    fn net_dev() {
        let devices = parse_net_dev(NET_DEV);
        assert_eq!(devices.len(), 2);
        assert_eq!(
            devices["petrelfake0"],
            DevCounters {
                rx_bytes: 123_456,
                rx_packets: 789,
                rx_errors: 1,
                rx_dropped: 2,
                rx_multicast: 3,
                tx_bytes: 654_321,
                tx_packets: 987,
                tx_errors: 4,
                tx_dropped: 5,
                collisions: 6,
            }
        );
        assert_eq!(devices["lo"].tx_packets, 10);
    }

    #[test]
    fn statistics_of_one_unikernel() {
        let units = Units {
            clock_ticks: 100,
            page_size: 4096,
        };
        let tender = TenderFigures {
            stat: parse_proc_stat(STAT).unwrap(),
            status: parse_proc_status(STATUS),
        };
        let tap = TapFigures {
            counters: parse_net_dev(NET_DEV)["petrelfake0"],
            mtu: 1500,
            flags: 0x1003,
        };
        let started = Timestamp::from_millis(1_700_000_000_250).unwrap();
        let usage = CgroupUsage {
            memory_bytes: Some(50_000_000),
            cpu_ns: Some(3_800_000_123),
        };
        let data = stats_data(
            units,
            started,
            &tender,
            &[("service".to_owned(), tap)],
            Some((usage, Some(100_663_296))),
        );
        assert_eq!(
            data.resource_usage,
            RUsage {
                utime: Timeval {
                    seconds: 2,
                    microseconds: 500_000
                },
                stime: Timeval {
                    seconds: 1,
                    microseconds: 300_000
                },
                maxrss: 12344,
                ixrss: 0,
                idrss: 0,
                isrss: 0,
                minflt: 1234,
                majflt: 5,
                nswap: 0,
                inblock: 0,
                outblock: 0,
                msgsnd: 0,
                msgrcv: 0,
                nsignals: 0,
                nvcsw: 17,
                nivcsw: 3,
            }
        );
        assert_eq!(
            data.kinfo_mem,
            Some(KinfoMem {
                vsize: 541_065_216,
                rss: 3072,
                tsize: 256,
                dsize: 2048,
                ssize: 33,
                runtime: 3_800_000,
                cow: 0,
                start: Timeval {
                    seconds: 1_700_000_000,
                    microseconds: 250_000
                },
            })
        );
        assert_eq!(
            data.ifdata,
            vec![IfData {
                bridge: "service".into(),
                flags: 0x1003,
                send_length: 0,
                max_send_length: 0,
                send_drops: 0,
                mtu: 1500,
                baudrate: 0,
                input_packets: 789,
                input_errors: 1,
                output_packets: 987,
                output_errors: 4,
                collisions: 6,
                input_bytes: 123_456,
                output_bytes: 654_321,
                input_mcast: 3,
                output_mcast: 0,
                input_dropped: 2,
                output_dropped: 5,
            }]
        );
        let vmm: Vec<(&str, i64)> = data
            .vmm_stats
            .as_ref()
            .unwrap()
            .iter()
            .map(|s| (s.key.as_str(), s.value))
            .collect();
        assert_eq!(
            vmm,
            [
                ("rss_bytes", 12_582_912),
                ("cgroup_memory_bytes", 50_000_000),
                ("cgroup_memory_limit_bytes", 100_663_296),
                ("cgroup_cpu_usec", 3_800_000),
            ]
        );
        // It encodes and decodes (vmmStats EXPLICIT [0], kinfoMem IMPLICIT [1]).
        let wire = crate::codec::Wire::new(
            crate::codec::Header::new(0, name(":web")),
            Payload::Data(Data::Statistics(Box::new(data.clone()))),
        );
        let decoded = crate::codec::decode_wire(&crate::codec::encode_wire(&wire)).unwrap();
        assert_eq!(decoded, wire);
    }

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn sampling_a_fake_tree() {
        let root = tempfile::tempdir().unwrap();
        let sources = Sources {
            proc: root.path().join("proc"),
        };
        write(&sources.proc.join("net/dev"), NET_DEV);
        write(&sources.proc.join("4242/stat"), STAT);
        write(&sources.proc.join("4242/status"), STATUS);
        write(&root.path().join("cg/memory.current"), "4096\n");
        write(&root.path().join("cg/cpu.stat"), "usage_usec 7\n");
        let units = Units {
            clock_ticks: 100,
            page_size: 4096,
        };
        let target = |n: &str, pid: u32, cgroup: bool| Target {
            name: name(n),
            pid,
            started: Timestamp::EPOCH,
            nets: vec![TargetNet {
                netif: "service".into(),
                tap: "petrelfake0".into(),
            }],
            cgroup: cgroup.then(|| UsageFiles {
                memory: Some(root.path().join("cg/memory.current")),
                cpu: Some(CpuUsageFile::Stat(root.path().join("cg/cpu.stat"))),
            }),
            memory_limit: cgroup.then_some(8192),
        };
        let samples = sample_with(
            &sources,
            units,
            &[
                target(":a", 4242, true),
                target(":gone", 4343, false),
                target("b:c", 4242, false),
            ],
        );
        let summary: Vec<(String, u64, u64, Option<u64>, i64)> = samples
            .iter()
            .map(|s| {
                (
                    s.name.text(),
                    s.cpu_ns,
                    s.memory_bytes,
                    s.memory_limit_bytes,
                    s.data.ifdata[0].output_packets,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (":a".to_owned(), 7000, 4096, Some(8192), 987),
                ("b:c".to_owned(), 3_800_000_000, 12_582_912, None, 987),
            ]
        );
        // No such interface here: MTU and flags unknown.
        assert_eq!(samples[0].data.ifdata[0].mtu, 0);
        assert_eq!(samples[0].data.ifdata[0].flags, 0);
    }

    #[test]
    fn coverage_follows_label_sequences() {
        let cases = [
            (":", ":a", true),
            (":", "x:y:a", true),
            ("x:", "x:a", true),
            ("x:", "x:y:a", true),
            ("x:", "y:a", false),
            ("x:", ":x", false),
            (":x", ":x", true),
            // albatross's trie: a labelled name also covers the path of the same labels.
            (":x", "x:a", true),
            ("x:a", "x:b", false),
            ("x:y:", "x:a", false),
        ];
        for (subscription, unikernel, expected) in cases {
            assert_eq!(
                covers(&name(subscription), &name(unikernel)),
                expected,
                "{subscription} {unikernel}"
            );
        }
        let demand = Demand::Covered(vec![name("x:"), name(":z")]);
        assert!(demand.wants(&name("x:a")));
        assert!(demand.wants(&name(":z")));
        assert!(!demand.wants(&name(":a")));
        assert!(Demand::All.wants(&name(":a")));
        assert!(!Demand::Nothing.wants(&name(":a")));
    }

    fn round(names: &[&str]) -> StatsRound {
        StatsRound {
            at: SystemTime::now(),
            taken: Instant::now(),
            duration: Duration::ZERO,
            samples: names
                .iter()
                .map(|n| UnikernelSample {
                    name: name(n),
                    data: StatsData {
                        resource_usage: stats_data(
                            Units {
                                clock_ticks: 100,
                                page_size: 4096,
                            },
                            Timestamp::EPOCH,
                            &TenderFigures::default(),
                            &[],
                            None,
                        )
                        .resource_usage,
                        ifdata: vec![],
                        vmm_stats: None,
                        kinfo_mem: None,
                    },
                    cpu_ns: 0,
                    memory_bytes: 0,
                    memory_limit_bytes: None,
                })
                .collect(),
        }
    }

    fn names_of(frames: &[OutputFrame]) -> Vec<String> {
        frames.iter().map(|f| f.name.text()).collect()
    }

    async fn recv_n(rx: &mut mpsc::Receiver<OutputFrame>, n: usize) -> Vec<OutputFrame> {
        let mut frames = Vec::new();
        for _ in 0..n {
            frames.push(rx.recv().await.unwrap());
        }
        frames
    }

    #[tokio::test]
    async fn subscribers_get_their_unikernels_relative_to_their_path() {
        let hub = Arc::new(StatsHub::new(Duration::from_secs(3600)));
        assert_eq!(hub.demand(), Demand::Nothing);
        let (tx, mut rx) = mpsc::channel(16);
        hub.subscribe(&name("x:"), tx);
        let first = recv_n(&mut rx, 1).await;
        assert_eq!(first[0].payload, Payload::success_string("subscribed"));
        assert_eq!(first[0].name, name("x:"));
        assert_eq!(hub.demand(), Demand::Covered(vec![name("x:")]));
        hub.publish(round(&[":a", "x:b", "x:y:c", "z:d"]));
        let frames = recv_n(&mut rx, 2).await;
        assert_eq!(names_of(&frames), [":b", "y:c"]);
        assert!(matches!(
            frames[0].payload,
            Payload::Data(Data::Statistics(_))
        ));

        // A late subscriber gets the recent round at once.
        let (tx2, mut rx2) = mpsc::channel(16);
        hub.subscribe(&name(":a"), tx2);
        let frames = recv_n(&mut rx2, 2).await;
        assert_eq!(names_of(&frames), [":a", ":a"]);

        // The client going away ends the subscription.
        drop(rx);
        hub.publish(round(&["x:b"]));
        for _ in 0..100 {
            if hub.subscriber_count() == 1 {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(hub.subscriber_count(), 1);
        assert_eq!(hub.demand(), Demand::Covered(vec![name(":a")]));
        hub.set_always(true);
        assert_eq!(hub.demand(), Demand::All);

        hub.close();
        assert_eq!(rx2.recv().await, None);
        assert_eq!(hub.demand(), Demand::Nothing);
    }

    #[tokio::test]
    async fn one_subscriber_too_many_closes_the_oldest() {
        let hub = Arc::new(StatsHub::new(Duration::from_secs(3600)));
        let mut receivers = Vec::new();
        for _ in 0..=MAX_STATS_SUBSCRIBERS {
            let (tx, mut rx) = mpsc::channel(16);
            hub.subscribe(&name("a:"), tx);
            assert_eq!(
                recv_n(&mut rx, 1).await[0].payload,
                Payload::success_string("subscribed")
            );
            receivers.push(rx);
        }
        let oldest = &mut receivers[0];
        assert_eq!(
            oldest.recv().await.unwrap().payload,
            Payload::failure(SUBSCRIPTION_REPLACED)
        );
        assert_eq!(oldest.recv().await, None);
        assert_eq!(hub.subscriber_count(), MAX_STATS_SUBSCRIBERS);
        assert_eq!(
            hub.demand(),
            Demand::Covered(vec![name("a:"); MAX_STATS_SUBSCRIBERS])
        );
    }

    #[tokio::test]
    async fn the_sampler_waits_for_demand_and_stops_when_closed() {
        let hub = Arc::new(StatsHub::new(Duration::from_millis(10)));
        let waiter = {
            let hub = Arc::clone(&hub);
            tokio::spawn(async move { hub.wait_for_demand().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        hub.set_always(true);
        assert!(waiter.await.unwrap());
        assert!(hub.pause(Duration::from_millis(1)).await);
        hub.close();
        assert!(!hub.wait_for_demand().await);
        assert!(!hub.pause(Duration::from_secs(3600)).await);
    }
}
