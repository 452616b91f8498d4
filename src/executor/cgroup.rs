//! Per-unikernel cgroups: every tender runs in a control group of its own, named after its
//! unikernel ([`Name::file_name`]) below a parent group ([`DEFAULT_PARENT`] unless the
//! operator names another), with
//! - a memory limit of the unikernel's memory plus [`TENDER_OVERHEAD_MB`], and no swap
//!   beyond it (v2: `memory.swap.max` 0; v1: `memory.memsw.limit_in_bytes` equal to the
//!   limit, where the kernel accounts swap);
//! - at most [`PIDS_MAX`] processes;
//! - the cpuset of its CPU ids (v1: with the memory nodes of the parent group).
//!
//! The hierarchy is chosen once, at start-up ([`Cgroups::setup`]):
//! 1. the v2 unified hierarchy if its root offers the memory controller
//!    (`cgroup.controllers`);
//! 2. else the v1 hierarchies of `memory`, `pids`, `cpuset` and `cpuacct` that are
//!    mounted (`cpuacct` only for CPU accounting);
//! 3. else none: tenders run as plain processes, which one log line says.
//!
//! A unikernel's group is created before its tender is spawned, and the tender joins it in
//! the child before `exec` (it writes `0`, "myself", to each `cgroup.procs`), so it never
//! runs outside it ([`CgroupJoin`]). The group is removed once the tender has exited and
//! been reaped ([`Cgroup::remove`]); a process the tender left behind is killed first. At
//! start-up, after leftover tenders have been killed, every empty group below the parent
//! is removed ([`Cgroups::reconcile`]).
//!
//! The kernel's OOM killer stopping a tender is recognised from the group's counters
//! ([`Cgroup::oom_kills`]): `memory.events` `oom_kill` (v2), `memory.oom_control`
//! `oom_kill` (v1, Linux 4.13 and later) or, on older kernels, `memory.failcnt`.
//!
//! Several endpoints on one host need distinct parents (`--cgroup-parent`): a group that
//! exists with live processes in it is never taken over ([`CgroupError::InUse`]).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::name::{Name, NameError};

/// Memory a tender needs on top of its unikernel's memory, in MB. solo5-hvt maps the
/// guest memory (`--mem`) into its own address space, so the guest is charged to the
/// group in full; on top come the tender's own text, data and stack (under 2 MB), the
/// kernel memory charged for its KVM vCPU, page tables and the guest's extended page
/// tables (up to about 0.2 % of the guest memory, 2 MB for 1 GB), pipe and socket
/// buffers, and page cache of the image file read at start. 32 MB covers all of these
/// with room to spare, yet stays small next to typical unikernels (64–512 MB).
pub const TENDER_OVERHEAD_MB: u64 = 32;

/// Most processes (and threads) in a unikernel's group. solo5-hvt is one process with one
/// thread per vCPU (one); 16 leaves room for a wrapper script that execs the tender, while
/// a tender that starts forking is stopped long before it bothers the host.
pub const PIDS_MAX: u64 = 16;

/// The parent group of the unikernels' groups, relative to each hierarchy's root.
pub const DEFAULT_PARENT: &str = "petrel";

/// Where the kernel lists this process's mounts.
pub const MOUNTS: &str = "/proc/self/mounts";

/// Largest control file read (`cgroup.procs` of a group with [`PIDS_MAX`] processes is
/// under 200 octets, `memory.stat` under 2 KiB).
pub const MAX_CONTROL_FILE_SIZE: u64 = 64 * 1024;

/// Most levels in a parent group path (`petrel`, `system.slice/petrel`, …).
pub const MAX_PARENT_DEPTH: usize = 8;

/// Longest component of a parent group path (`NAME_MAX`).
pub const MAX_PARENT_COMPONENT: usize = 255;

/// Attempts at removing a group whose last process is still exiting, [`REMOVE_RETRY`]
/// apart: one second in all, far more than a reaped tender's group needs.
pub const REMOVE_ATTEMPTS: u32 = 100;

/// Pause between two attempts at removing a group.
pub const REMOVE_RETRY: Duration = Duration::from_millis(10);

const MIB: u64 = 1024 * 1024;

/// Errors of cgroup operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// `--cgroup-parent` is not a relative path of plain components.
    #[error("invalid cgroup parent {parent:?}: {reason}")]
    InvalidParent {
        /// The value given.
        parent: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No usable hierarchy.
    #[error("no cgroup hierarchy with the memory, pids or cpuset controller is mounted")]
    NotAvailable,
    /// The v2 hierarchy refused to delegate the memory controller to the parent group.
    #[error("the memory controller cannot be enabled in {}", .0.display())]
    NoMemoryController(PathBuf),
    /// A file operation in a cgroup file system failed.
    #[error("cgroup {op} {}: {source}", path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The group exists and has processes that are not ours.
    #[error(
        "cgroup {0} is in use by other processes (another petrel-endpoint with the same \
         --cgroup-parent?)"
    )]
    InUse(String),
    /// The unikernel's name cannot become a group name.
    #[error(transparent)]
    Name(#[from] NameError),
}

impl CgroupError {
    fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// The cgroup version in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CgroupVersion {
    /// One hierarchy per controller.
    V1,
    /// The unified hierarchy.
    V2,
}

impl fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        })
    }
}

/// The controllers petrel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Controller {
    /// Memory limit, usage and OOM kills.
    Memory,
    /// Process count limit.
    Pids,
    /// CPU (and memory node) placement.
    Cpuset,
    /// CPU accounting (v1 only; v2 accounts CPU in every group).
    Cpuacct,
}

impl Controller {
    /// Every controller, in the order groups are set up.
    pub const ALL: [Self; 4] = [Self::Memory, Self::Pids, Self::Cpuset, Self::Cpuacct];

    /// The kernel's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Pids => "pids",
            Self::Cpuset => "cpuset",
            Self::Cpuacct => "cpuacct",
        }
    }

    fn of(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// The cgroup file systems mounted, from `/proc/self/mounts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounts {
    /// The first `cgroup2` mount.
    pub v2: Option<PathBuf>,
    /// The first `cgroup` (v1) mount of each controller petrel uses.
    pub v1: BTreeMap<Controller, PathBuf>,
}

/// Parses the text of `/proc/self/mounts` (mount points with `\040`-style escapes).
pub fn parse_mounts(text: &str) -> Mounts {
    let mut mounts = Mounts::default();
    for line in text.lines() {
        let mut fields = line.split(' ');
        let (Some(_device), Some(point), Some(fstype), Some(options)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let point = PathBuf::from(unescape_mount(point));
        match fstype {
            "cgroup2" => {
                mounts.v2.get_or_insert(point);
            }
            "cgroup" => {
                for controller in options.split(',').filter_map(Controller::of) {
                    mounts.v1.entry(controller).or_insert_with(|| point.clone());
                }
            }
            _ => {}
        }
    }
    mounts
}

/// Undoes the octal escapes (`\040` for a space) of a mount point.
fn unescape_mount(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| b == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match octal {
            Some(value) => {
                out.push(value);
                i += 4;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A hierarchy petrel places tenders in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// The unified hierarchy mounted at `root`.
    V2 {
        /// Its mount point.
        root: PathBuf,
    },
    /// v1 hierarchies, one mount point per controller (several controllers may share one).
    V1 {
        /// The mount point of each controller used.
        mounts: BTreeMap<Controller, PathBuf>,
    },
}

impl Hierarchy {
    /// The version.
    pub fn version(&self) -> CgroupVersion {
        match self {
            Self::V2 { .. } => CgroupVersion::V2,
            Self::V1 { .. } => CgroupVersion::V1,
        }
    }
}

/// The hierarchy to use: v2 if it is mounted and `v2_controllers` (the text of its root's
/// `cgroup.controllers`) lists `memory`, else the v1 controllers that are mounted, else
/// none.
pub fn choose(mounts: &Mounts, v2_controllers: Option<&str>) -> Option<Hierarchy> {
    if let (Some(root), Some(controllers)) = (&mounts.v2, v2_controllers) {
        if controllers.split_whitespace().any(|c| c == "memory") {
            return Some(Hierarchy::V2 { root: root.clone() });
        }
    }
    let v1: BTreeMap<Controller, PathBuf> = mounts
        .v1
        .iter()
        .filter(|(c, _)| **c != Controller::Cpuacct)
        .map(|(c, p)| (*c, p.clone()))
        .collect();
    if v1.is_empty() {
        return None;
    }
    Some(Hierarchy::V1 {
        mounts: mounts.v1.clone(),
    })
}

/// The parent group's path below each hierarchy's root: one or more plain components
/// (`petrel`, `system.slice/petrel`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CgroupParent(Vec<String>);

impl CgroupParent {
    /// Checks a parent path: relative, at most [`MAX_PARENT_DEPTH`] components, each
    /// non-empty, at most [`MAX_PARENT_COMPONENT`] octets, not starting with a dot, without
    /// NUL or whitespace.
    pub fn parse(text: &str) -> Result<Self, CgroupError> {
        let invalid = |reason| CgroupError::InvalidParent {
            parent: text.to_owned(),
            reason,
        };
        if text.starts_with('/') {
            return Err(invalid("must be relative to the hierarchy's root"));
        }
        let components: Vec<String> = text.split('/').map(str::to_owned).collect();
        if components.len() > MAX_PARENT_DEPTH {
            return Err(invalid("too many components (at most 8)"));
        }
        for component in &components {
            if component.is_empty() {
                return Err(invalid("empty component"));
            }
            if component.starts_with('.') {
                return Err(invalid("a component starts with '.'"));
            }
            if component.len() > MAX_PARENT_COMPONENT {
                return Err(invalid("a component is longer than 255 octets"));
            }
            if component
                .chars()
                .any(|c| c == '\0' || c.is_whitespace() || c.is_control())
            {
                return Err(invalid("contains NUL, whitespace or a control character"));
            }
        }
        Ok(Self(components))
    }

    /// The directory of this parent below `root`.
    fn below(&self, root: &Path) -> PathBuf {
        let mut dir = root.to_owned();
        dir.extend(&self.0);
        dir
    }

    /// Every level from `root` down to the parent itself, `root` first.
    fn levels(&self, root: &Path) -> Vec<PathBuf> {
        let mut levels = vec![root.to_owned()];
        let mut dir = root.to_owned();
        for component in &self.0 {
            dir.push(component);
            levels.push(dir.clone());
        }
        levels
    }
}

impl Default for CgroupParent {
    fn default() -> Self {
        Self(vec![DEFAULT_PARENT.to_owned()])
    }
}

impl fmt::Display for CgroupParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

/// What a unikernel's group is limited to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLimits {
    /// `memory.max` / `memory.limit_in_bytes`.
    pub memory_bytes: u64,
    /// `pids.max`.
    pub pids: u64,
    /// `cpuset.cpus`; empty: the parent's.
    pub cpus: BTreeSet<u32>,
}

impl GroupLimits {
    /// The limits of a unikernel with `memory_mb` of memory pinned to `cpus`: memory plus
    /// [`TENDER_OVERHEAD_MB`], [`PIDS_MAX`] processes, exactly its CPUs.
    pub fn for_unikernel(memory_mb: u64, cpus: &BTreeSet<u32>) -> Self {
        Self {
            memory_bytes: memory_mb
                .saturating_add(TENDER_OVERHEAD_MB)
                .saturating_mul(MIB),
            pids: PIDS_MAX,
            cpus: cpus.clone(),
        }
    }
}

/// One value written to a control file when a group is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlWrite {
    /// The controller whose directory holds the file (v2: all share one).
    pub controller: Controller,
    /// The file.
    pub file: &'static str,
    /// The value.
    pub value: String,
    /// Whether the group is refused without it (optional ones may not exist: swap
    /// accounting is off on many hosts).
    pub required: bool,
}

/// The control files written for `limits`, in order, for the controllers in `available`.
/// `mems` is the parent's `cpuset.mems` (v1 needs it in every cpuset group).
pub fn limit_writes(
    version: CgroupVersion,
    limits: &GroupLimits,
    available: &BTreeSet<Controller>,
    mems: Option<&str>,
) -> Vec<ControlWrite> {
    let write = |controller, file, value: String, required| ControlWrite {
        controller,
        file,
        value,
        required,
    };
    let memory = limits.memory_bytes.to_string();
    let cpus: Vec<String> = limits.cpus.iter().map(u32::to_string).collect();
    let mut writes = Vec::new();
    if available.contains(&Controller::Memory) {
        match version {
            CgroupVersion::V2 => {
                writes.push(write(Controller::Memory, "memory.max", memory, true));
                writes.push(write(
                    Controller::Memory,
                    "memory.swap.max",
                    "0".to_owned(),
                    false,
                ));
            }
            CgroupVersion::V1 => {
                writes.push(write(
                    Controller::Memory,
                    "memory.limit_in_bytes",
                    memory.clone(),
                    true,
                ));
                writes.push(write(
                    Controller::Memory,
                    "memory.memsw.limit_in_bytes",
                    memory,
                    false,
                ));
            }
        }
    }
    if available.contains(&Controller::Pids) {
        writes.push(write(
            Controller::Pids,
            "pids.max",
            limits.pids.to_string(),
            true,
        ));
    }
    if available.contains(&Controller::Cpuset) {
        if !cpus.is_empty() {
            writes.push(write(
                Controller::Cpuset,
                "cpuset.cpus",
                cpus.join(","),
                true,
            ));
        }
        if version == CgroupVersion::V1 {
            if let Some(mems) = mems {
                writes.push(write(
                    Controller::Cpuset,
                    "cpuset.mems",
                    mems.to_owned(),
                    true,
                ));
            }
        }
    }
    writes
}

/// The `cgroup.procs` files a tender writes `0` to in the child, before `exec`: built
/// before the fork so that the child only makes system calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupJoin(Vec<CString>);

impl CgroupJoin {
    /// The files, as C strings.
    pub fn files(&self) -> &[CString] {
        &self.0
    }
}

/// Where a group's memory and CPU usage are read (cheap to clone, for the sampler).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageFiles {
    /// `memory.current` (v2) or `memory.usage_in_bytes` (v1).
    pub memory: Option<PathBuf>,
    /// The CPU usage file.
    pub cpu: Option<CpuUsageFile>,
}

/// A CPU usage file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuUsageFile {
    /// v2 `cpu.stat`: `usage_usec`.
    Stat(PathBuf),
    /// v1 `cpuacct.usage`: nanoseconds.
    Cpuacct(PathBuf),
}

/// A group's usage at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// Memory charged to the group (page cache included), in octets.
    pub memory_bytes: Option<u64>,
    /// CPU time of its processes, in nanoseconds.
    pub cpu_ns: Option<u64>,
}

impl UsageFiles {
    /// Reads the usage; a file that cannot be read gives `None` for its figure.
    pub fn read(&self) -> CgroupUsage {
        let memory_bytes = self
            .memory
            .as_deref()
            .and_then(|p| read_control(p).ok())
            .and_then(|t| t.trim().parse().ok());
        let cpu_ns = match &self.cpu {
            Some(CpuUsageFile::Stat(path)) => read_control(path)
                .ok()
                .and_then(|t| keyed_value(&t, "usage_usec"))
                .map(|us| us.saturating_mul(1000)),
            Some(CpuUsageFile::Cpuacct(path)) => {
                read_control(path).ok().and_then(|t| t.trim().parse().ok())
            }
            None => None,
        };
        CgroupUsage {
            memory_bytes,
            cpu_ns,
        }
    }
}

/// The value of the first line `key value` of a flat-keyed control file (`memory.events`,
/// `cpu.stat`, `memory.oom_control`).
pub fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(key))
            .then(|| words.next()?.parse().ok())
            .flatten()
    })
}

/// The cgroups of this endpoint: the hierarchy, the parent group and the controllers its
/// unikernels' groups get; or none (plain processes).
#[derive(Debug, Clone, Default)]
pub struct Cgroups {
    setup: Option<Setup>,
}

#[derive(Debug, Clone)]
struct Setup {
    hierarchy: Hierarchy,
    parent: CgroupParent,
    /// Controllers unikernel groups get.
    controllers: BTreeSet<Controller>,
}

impl Cgroups {
    /// No cgroups: tenders run as plain processes.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Finds the hierarchy (see the module documentation) and prepares `parent` in it;
    /// says in one log line what tenders run in. Never fails: without a usable hierarchy
    /// (or the right to use it) tenders run as plain processes.
    pub fn setup(parent: CgroupParent) -> Self {
        let mounts = fs::read_to_string(MOUNTS)
            .map(|text| parse_mounts(&text))
            .unwrap_or_default();
        let v2_controllers = mounts
            .v2
            .as_ref()
            .and_then(|root| read_control(&root.join("cgroup.controllers")).ok());
        let chosen = choose(&mounts, v2_controllers.as_deref()).ok_or(CgroupError::NotAvailable);
        match chosen.and_then(|hierarchy| Self::setup_with(hierarchy, parent.clone())) {
            Ok(cgroups) => {
                tracing::info!(
                    version = %cgroups.version().map_or("none".to_owned(), |v| v.to_string()),
                    parent = %parent,
                    controllers = %cgroups.controller_names(),
                    "tenders run in cgroups of their own"
                );
                cgroups
            }
            Err(e) => {
                tracing::warn!(
                    reason = %e,
                    "cgroups not available: tenders run as plain processes, without memory, \
                     process or cpuset limits"
                );
                Self::disabled()
            }
        }
    }

    /// Uses `hierarchy` (whatever its controllers) with `parent`, creating the parent
    /// group: on v2 the memory, pids and cpuset controllers are enabled for it and its
    /// children as far as offered, on v1 its cpuset gets the CPUs and memory nodes of the
    /// level above.
    pub fn setup_with(hierarchy: Hierarchy, parent: CgroupParent) -> Result<Self, CgroupError> {
        let controllers = match &hierarchy {
            Hierarchy::V2 { root } => prepare_v2(root, &parent)?,
            Hierarchy::V1 { mounts } => {
                for (controller, mount) in mounts {
                    prepare_v1(*controller, mount, &parent)?;
                }
                mounts.keys().copied().collect()
            }
        };
        Ok(Self {
            setup: Some(Setup {
                hierarchy,
                parent,
                controllers,
            }),
        })
    }

    /// The version in use; `None`: plain processes.
    pub fn version(&self) -> Option<CgroupVersion> {
        self.setup.as_ref().map(|s| s.hierarchy.version())
    }

    /// The controllers unikernel groups get.
    pub fn controllers(&self) -> BTreeSet<Controller> {
        self.setup
            .as_ref()
            .map(|s| s.controllers.clone())
            .unwrap_or_default()
    }

    fn controller_names(&self) -> String {
        let names: Vec<&str> = self
            .controllers()
            .into_iter()
            .map(Controller::as_str)
            .collect();
        names.join(",")
    }

    /// The directories of the parent group, one per distinct mount.
    pub fn parent_dirs(&self) -> Vec<PathBuf> {
        match &self.setup {
            None => Vec::new(),
            Some(setup) => setup.mount_dirs(|mount| setup.parent.below(mount)),
        }
    }

    /// Creates the group of unikernel `name` with `limits`; `Ok(None)` without cgroups. A
    /// leftover empty group of that name is replaced; one with processes is refused.
    pub fn create(&self, name: &Name, limits: &GroupLimits) -> Result<Option<Cgroup>, CgroupError> {
        let Some(setup) = &self.setup else {
            return Ok(None);
        };
        let file = name.file_name()?;
        // The parent may have been removed since start-up (by an operator, or by another
        // endpoint's shutdown with the same parent): make sure it is there again.
        match &setup.hierarchy {
            Hierarchy::V2 { root } => drop(prepare_v2(root, &setup.parent)?),
            Hierarchy::V1 { mounts } => {
                for (controller, mount) in mounts {
                    prepare_v1(*controller, mount, &setup.parent)?;
                }
            }
        }
        let label = format!("{}/{file}", setup.parent);
        let group = setup.group(&file, label.clone());
        for dir in &group.dirs {
            match fs::create_dir(&dir.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // A leftover of a crash: replaced if empty (its limits may differ).
                    let replaced = if processes(&dir.path).is_empty() {
                        remove_dir(&dir.path).and_then(|()| {
                            fs::create_dir(&dir.path)
                                .map_err(|e| CgroupError::io("create", &dir.path, e))
                        })
                    } else {
                        Err(CgroupError::InUse(label.clone()))
                    };
                    if let Err(e) = replaced {
                        group.remove_now();
                        return Err(e);
                    }
                }
                Err(e) => {
                    group.remove_now();
                    return Err(CgroupError::io("create", &dir.path, e));
                }
            }
        }
        let mems = match &setup.hierarchy {
            Hierarchy::V1 { mounts } => mounts
                .get(&Controller::Cpuset)
                .and_then(|m| read_control(&setup.parent.below(m).join("cpuset.mems")).ok())
                .map(|t| t.trim().to_owned()),
            Hierarchy::V2 { .. } => None,
        };
        let writes = limit_writes(
            setup.hierarchy.version(),
            limits,
            &setup.controllers,
            mems.as_deref(),
        );
        for write in writes {
            let Some(dir) = group.dir_of(write.controller) else {
                continue;
            };
            let path = dir.join(write.file);
            match write_control(&path, &write.value) {
                Ok(()) => {}
                Err(e) if !write.required => {
                    tracing::debug!(file = %path.display(), error = %e, "optional cgroup limit not set");
                }
                Err(e) => {
                    group.remove_now();
                    return Err(CgroupError::io("write", &path, e));
                }
            }
        }
        let mut group = group;
        group.memory_limit = setup
            .controllers
            .contains(&Controller::Memory)
            .then_some(limits.memory_bytes);
        Ok(Some(group))
    }

    /// Removes every group below the parent that has no process (left by a crashed
    /// endpoint, after its tenders were killed); groups with processes are left alone
    /// with a warning. Returns the names of the groups removed, sorted.
    pub fn reconcile(&self) -> Result<Vec<String>, CgroupError> {
        let mut removed = BTreeSet::new();
        for parent in self.parent_dirs() {
            let entries = match fs::read_dir(&parent) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(CgroupError::io("list", &parent, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| CgroupError::io("list", &parent, e))?;
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let dir = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if processes(&dir).is_empty() {
                    remove_dir(&dir)?;
                    removed.insert(name);
                } else {
                    tracing::warn!(group = %dir.display(), "cgroup with processes left alone");
                }
            }
        }
        Ok(removed.into_iter().collect())
    }

    /// Removes the parent group's levels created for this endpoint, deepest first, where
    /// they are empty (at shutdown; another endpoint's groups keep a shared parent).
    pub fn release(&self) {
        let Some(setup) = &self.setup else {
            return;
        };
        for levels in setup.mount_dirs(|mount| setup.parent.levels(mount)) {
            for dir in levels.iter().skip(1).rev() {
                if fs::remove_dir(dir).is_err() {
                    break;
                }
            }
        }
    }
}

impl Setup {
    /// `f(mount)` for each distinct mount point in use (v2: the root).
    fn mount_dirs<T: PartialEq>(&self, f: impl Fn(&Path) -> T) -> Vec<T> {
        let mut out: Vec<T> = Vec::new();
        match &self.hierarchy {
            Hierarchy::V2 { root } => out.push(f(root)),
            Hierarchy::V1 { mounts } => {
                for mount in mounts.values() {
                    let value = f(mount);
                    if !out.contains(&value) {
                        out.push(value);
                    }
                }
            }
        }
        out
    }

    /// The (not yet created) group `file` below the parent.
    fn group(&self, file: &str, label: String) -> Cgroup {
        let mut dirs: Vec<GroupDir> = Vec::new();
        match &self.hierarchy {
            Hierarchy::V2 { root } => dirs.push(GroupDir {
                controllers: self.controllers.iter().copied().collect(),
                path: self.parent.below(root).join(file),
            }),
            Hierarchy::V1 { mounts } => {
                for (controller, mount) in mounts {
                    let path = self.parent.below(mount).join(file);
                    match dirs.iter_mut().find(|d| d.path == path) {
                        Some(dir) => dir.controllers.push(*controller),
                        None => dirs.push(GroupDir {
                            controllers: vec![*controller],
                            path,
                        }),
                    }
                }
            }
        }
        Cgroup {
            label,
            version: self.hierarchy.version(),
            dirs,
            memory_limit: None,
        }
    }
}

/// Enables the controllers along the parent's levels of the unified hierarchy; returns
/// those its children get.
fn prepare_v2(root: &Path, parent: &CgroupParent) -> Result<BTreeSet<Controller>, CgroupError> {
    let wanted = [Controller::Memory, Controller::Pids, Controller::Cpuset];
    for level in parent.levels(root) {
        if level != root {
            create_dir_if_missing(&level)?;
        }
        let offered = read_control(&level.join("cgroup.controllers"))
            .map_err(|e| CgroupError::io("read", &level.join("cgroup.controllers"), e))?;
        let offered: BTreeSet<&str> = offered.split_whitespace().collect();
        for controller in wanted {
            if !offered.contains(controller.as_str()) {
                continue;
            }
            let file = level.join("cgroup.subtree_control");
            if let Err(e) = write_control(&file, &format!("+{}", controller.as_str())) {
                if controller == Controller::Memory {
                    return Err(CgroupError::io("write", &file, e));
                }
                tracing::debug!(file = %file.display(), %e, "controller not enabled");
            }
        }
    }
    let dir = parent.below(root);
    let file = dir.join("cgroup.subtree_control");
    let enabled = read_control(&file).map_err(|e| CgroupError::io("read", &file, e))?;
    let enabled: BTreeSet<Controller> = enabled
        .split_whitespace()
        .filter_map(Controller::of)
        .filter(|c| wanted.contains(c))
        .collect();
    Ok(enabled)
}

/// Creates the parent's levels in one v1 hierarchy; cpuset levels get the CPUs and memory
/// nodes of the level above (a new cpuset group has none).
fn prepare_v1(
    controller: Controller,
    mount: &Path,
    parent: &CgroupParent,
) -> Result<(), CgroupError> {
    let levels = parent.levels(mount);
    for pair in levels.windows(2) {
        let [above, level] = pair else {
            continue;
        };
        create_dir_if_missing(level)?;
        if controller == Controller::Cpuset {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let own = read_control(&level.join(file))
                    .map_err(|e| CgroupError::io("read", &level.join(file), e))?;
                if own.trim().is_empty() {
                    let inherited = read_control(&above.join(file))
                        .map_err(|e| CgroupError::io("read", &above.join(file), e))?;
                    write_control(&level.join(file), inherited.trim())
                        .map_err(|e| CgroupError::io("write", &level.join(file), e))?;
                }
            }
        }
    }
    Ok(())
}

/// One directory of a unikernel's group (v1: per mount; v2: the only one).
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupDir {
    controllers: Vec<Controller>,
    path: PathBuf,
}

/// A unikernel's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    label: String,
    version: CgroupVersion,
    dirs: Vec<GroupDir>,
    memory_limit: Option<u64>,
}

impl Cgroup {
    /// `<parent>/<file name>`, for logs.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The version.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Its directories (v1: one per mount).
    pub fn dirs(&self) -> Vec<&Path> {
        self.dirs.iter().map(|d| d.path.as_path()).collect()
    }

    /// The directory holding `controller`'s files.
    pub fn dir_of(&self, controller: Controller) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| d.controllers.contains(&controller))
            .map(|d| d.path.as_path())
    }

    /// The memory limit set, in octets (`None` without the memory controller).
    pub fn memory_limit_bytes(&self) -> Option<u64> {
        self.memory_limit
    }

    /// What a tender writes to join the group.
    pub fn join(&self) -> CgroupJoin {
        CgroupJoin(
            self.dirs
                .iter()
                .filter_map(|d| {
                    CString::new(d.path.join("cgroup.procs").as_os_str().as_bytes()).ok()
                })
                .collect(),
        )
    }

    /// Where its memory and CPU usage are read.
    pub fn usage_files(&self) -> UsageFiles {
        match self.version {
            CgroupVersion::V2 => {
                let dir = self.dirs.first().map(|d| d.path.clone());
                UsageFiles {
                    memory: self
                        .dir_of(Controller::Memory)
                        .map(|d| d.join("memory.current")),
                    cpu: dir.map(|d| CpuUsageFile::Stat(d.join("cpu.stat"))),
                }
            }
            CgroupVersion::V1 => UsageFiles {
                memory: self
                    .dir_of(Controller::Memory)
                    .map(|d| d.join("memory.usage_in_bytes")),
                cpu: self
                    .dir_of(Controller::Cpuacct)
                    .map(|d| CpuUsageFile::Cpuacct(d.join("cpuacct.usage"))),
            },
        }
    }

    /// How often the kernel's OOM killer killed a process of the group: v2
    /// `memory.events` `oom_kill`; v1 `memory.oom_control` `oom_kill`, or `memory.failcnt`
    /// (times the limit was hit) on kernels without that line. `None` without the memory
    /// controller or if the file cannot be read.
    pub fn oom_kills(&self) -> Option<u64> {
        let dir = self.dir_of(Controller::Memory)?;
        match self.version {
            CgroupVersion::V2 => {
                keyed_value(&read_control(&dir.join("memory.events")).ok()?, "oom_kill")
            }
            CgroupVersion::V1 => {
                let control = read_control(&dir.join("memory.oom_control")).ok()?;
                keyed_value(&control, "oom_kill").or_else(|| {
                    read_control(&dir.join("memory.failcnt"))
                        .ok()?
                        .trim()
                        .parse()
                        .ok()
                })
            }
        }
    }

    /// The processes in the group now.
    pub fn processes(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.dirs.iter().flat_map(|d| processes(&d.path)).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Removes the group once it is empty: processes still in it (a tender's leftover
    /// children) are killed with SIGKILL, and removal is retried up to
    /// [`REMOVE_ATTEMPTS`] times while they exit. A group already gone is fine.
    pub async fn remove(&self) -> Result<(), CgroupError> {
        let mut attempt = 0;
        loop {
            match self.try_remove() {
                Ok(()) => return Ok(()),
                Err(e) if attempt + 1 >= REMOVE_ATTEMPTS => return Err(e),
                Err(_) => {
                    for pid in self.processes() {
                        if let Ok(pid) = libc::pid_t::try_from(pid) {
                            // SAFETY: kill(2) of a process in a group petrel created for
                            // one tender; only leftovers of that tender are there.
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                        }
                    }
                    attempt += 1;
                    tokio::time::sleep(REMOVE_RETRY).await;
                }
            }
        }
    }

    /// One attempt at removing every directory of the group.
    fn try_remove(&self) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            remove_dir(&dir.path)?;
        }
        Ok(())
    }

    /// Best effort, at once, each directory on its own: after a failed create or spawn
    /// (a directory that is in use stays).
    pub fn remove_now(&self) {
        for dir in &self.dirs {
            if let Err(e) = remove_dir(&dir.path) {
                tracing::debug!(group = %self.label, error = %e, "cgroup directory not removed");
            }
        }
    }
}

/// The pids listed in `dir/cgroup.procs` (none if it cannot be read).
fn processes(dir: &Path) -> Vec<u32> {
    read_control(&dir.join("cgroup.procs"))
        .map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn create_dir_if_missing(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(CgroupError::io("create", dir, e)),
    }
}

/// `rmdir`; a directory already gone is fine.
fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CgroupError::io("remove", dir, e)),
    }
}

/// Reads a control file (at most [`MAX_CONTROL_FILE_SIZE`] octets).
pub fn read_control(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    fs::File::open(path)?
        .take(MAX_CONTROL_FILE_SIZE)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Writes `value` to an existing control file with a single `write`.
fn write_control(path: &Path, value: &str) -> io::Result<()> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new().write(true).open(path)?;
    file.write_all(value.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";

    const UNIFIED: &str = "\
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0
";

    const COMBINED: &str = "\
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/my\\040mem cgroup rw,memory 0 0
";

    fn v1(pairs: &[(Controller, &str)]) -> BTreeMap<Controller, PathBuf> {
        pairs.iter().map(|(c, p)| (*c, PathBuf::from(p))).collect()
    }

    #[test]
    fn mounts_of_a_hybrid_host() {
        let mounts = parse_mounts(HYBRID);
        assert_eq!(mounts.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(
            mounts.v1,
            v1(&[
                (Controller::Memory, "/sys/fs/cgroup/memory"),
                (Controller::Pids, "/sys/fs/cgroup/pids"),
                (Controller::Cpuset, "/sys/fs/cgroup/cpuset"),
                (Controller::Cpuacct, "/sys/fs/cgroup/cpuacct"),
            ])
        );
        // The unified hierarchy has no controllers here: v1.
        assert_eq!(
            choose(&mounts, Some("")),
            Some(Hierarchy::V1 {
                mounts: mounts.v1.clone()
            })
        );
        // With the memory controller on the unified hierarchy: v2.
        assert_eq!(
            choose(&mounts, Some("cpuset cpu io memory pids\n")),
            Some(Hierarchy::V2 {
                root: "/sys/fs/cgroup/unified".into()
            })
        );
    }

    #[test]
    fn mounts_of_a_unified_host_and_combined_v1_mounts() {
        let mounts = parse_mounts(UNIFIED);
        assert_eq!(mounts.v2, Some(PathBuf::from("/sys/fs/cgroup")));
        assert!(mounts.v1.is_empty());
        assert_eq!(
            choose(&mounts, Some("cpuset cpu io memory hugetlb pids rdma misc")),
            Some(Hierarchy::V2 {
                root: "/sys/fs/cgroup".into()
            })
        );
        assert_eq!(choose(&mounts, Some("cpu io pids")), None);
        assert_eq!(choose(&mounts, None), None);

        let mounts = parse_mounts(COMBINED);
        assert_eq!(
            mounts.v1,
            v1(&[
                (Controller::Memory, "/sys/fs/cgroup/my mem"),
                (Controller::Cpuacct, "/sys/fs/cgroup/cpu,cpuacct"),
            ])
        );
        // cpuacct alone is no isolation.
        let only_cpuacct = Mounts {
            v2: None,
            v1: v1(&[(Controller::Cpuacct, "/c")]),
        };
        assert_eq!(choose(&only_cpuacct, None), None);
        assert_eq!(choose(&Mounts::default(), None), None);
    }

    #[test]
    fn mount_point_escapes() {
        assert_eq!(unescape_mount("a\\040b\\011c\\134d"), "a b\tc\\d");
        assert_eq!(unescape_mount("a\\04"), "a\\04");
        assert_eq!(unescape_mount("a\\999"), "a\\999");
    }

    #[test]
    fn parent_paths() {
        let parent = CgroupParent::parse("system.slice/petrel").unwrap();
        assert_eq!(parent.to_string(), "system.slice/petrel");
        assert_eq!(
            parent.levels(Path::new("/cg")),
            [
                PathBuf::from("/cg"),
                "/cg/system.slice".into(),
                "/cg/system.slice/petrel".into()
            ]
        );
        assert_eq!(CgroupParent::default().to_string(), "petrel");
        let cases = [
            ("/petrel", "must be relative to the hierarchy's root"),
            ("", "empty component"),
            ("a//b", "empty component"),
            ("a/", "empty component"),
            ("..", "a component starts with '.'"),
            ("a/.hidden", "a component starts with '.'"),
            ("a b", "contains NUL, whitespace or a control character"),
            ("a/b/c/d/e/f/g/h/i", "too many components (at most 8)"),
        ];
        for (text, reason) in cases {
            assert_eq!(
                CgroupParent::parse(text).unwrap_err().to_string(),
                format!("invalid cgroup parent {text:?}: {reason}")
            );
        }
        let long = "x".repeat(256);
        assert_eq!(
            CgroupParent::parse(&long).unwrap_err().to_string(),
            format!("invalid cgroup parent {long:?}: a component is longer than 255 octets")
        );
    }

    #[test]
    fn limits_of_a_unikernel() {
        let limits = GroupLimits::for_unikernel(64, &BTreeSet::from([1, 3]));
        assert_eq!(
            limits,
            GroupLimits {
                memory_bytes: 96 * 1024 * 1024,
                pids: 16,
                cpus: BTreeSet::from([1, 3]),
            }
        );
        assert_eq!(
            GroupLimits::for_unikernel(u64::MAX, &BTreeSet::new()).memory_bytes,
            u64::MAX
        );
    }

    fn w(controller: Controller, file: &'static str, value: &str, required: bool) -> ControlWrite {
        ControlWrite {
            controller,
            file,
            value: value.to_owned(),
            required,
        }
    }

    #[test]
    fn control_files_written() {
        let limits = GroupLimits::for_unikernel(64, &BTreeSet::from([1, 3]));
        let all: BTreeSet<Controller> = Controller::ALL.into();
        assert_eq!(
            limit_writes(CgroupVersion::V1, &limits, &all, Some("0")),
            [
                w(
                    Controller::Memory,
                    "memory.limit_in_bytes",
                    "100663296",
                    true
                ),
                w(
                    Controller::Memory,
                    "memory.memsw.limit_in_bytes",
                    "100663296",
                    false
                ),
                w(Controller::Pids, "pids.max", "16", true),
                w(Controller::Cpuset, "cpuset.cpus", "1,3", true),
                w(Controller::Cpuset, "cpuset.mems", "0", true),
            ]
        );
        let v2: BTreeSet<Controller> =
            [Controller::Memory, Controller::Pids, Controller::Cpuset].into();
        assert_eq!(
            limit_writes(CgroupVersion::V2, &limits, &v2, None),
            [
                w(Controller::Memory, "memory.max", "100663296", true),
                w(Controller::Memory, "memory.swap.max", "0", false),
                w(Controller::Pids, "pids.max", "16", true),
                w(Controller::Cpuset, "cpuset.cpus", "1,3", true),
            ]
        );
        // Only what the hierarchy offers.
        let memory_only: BTreeSet<Controller> = [Controller::Memory].into();
        assert_eq!(
            limit_writes(CgroupVersion::V2, &limits, &memory_only, None).len(),
            2
        );
        assert_eq!(
            limit_writes(CgroupVersion::V2, &limits, &BTreeSet::new(), None),
            []
        );
    }

    #[test]
    fn keyed_control_files() {
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed_value(events, "oom_kill"), Some(1));
        assert_eq!(keyed_value(events, "max"), Some(12));
        assert_eq!(keyed_value(events, "oom_group"), None);
        let cpu = "usage_usec 2500123\nuser_usec 2000000\nsystem_usec 500123\n";
        assert_eq!(keyed_value(cpu, "usage_usec"), Some(2_500_123));
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed_value(oom_control, "oom_kill"), Some(3));
        assert_eq!(keyed_value("oom_kill x\n", "oom_kill"), None);
    }

    #[test]
    fn group_directories_and_join_files() {
        let setup = Setup {
            hierarchy: Hierarchy::V1 {
                mounts: v1(&[
                    (Controller::Memory, "/cg/memory"),
                    (Controller::Pids, "/cg/pids"),
                    (Controller::Cpuacct, "/cg/cpu,cpuacct"),
                    (Controller::Cpuset, "/cg/cpuset"),
                ]),
            },
            parent: CgroupParent::default(),
            controllers: Controller::ALL.into(),
        };
        let group = setup.group("a:web", "petrel/a:web".into());
        assert_eq!(
            group.dirs(),
            [
                Path::new("/cg/memory/petrel/a:web"),
                Path::new("/cg/pids/petrel/a:web"),
                Path::new("/cg/cpuset/petrel/a:web"),
                Path::new("/cg/cpu,cpuacct/petrel/a:web"),
            ]
        );
        let join = group.join();
        let files: Vec<&[u8]> = join.files().iter().map(|c| c.as_bytes()).collect();
        assert_eq!(
            files,
            [
                &b"/cg/memory/petrel/a:web/cgroup.procs"[..],
                b"/cg/pids/petrel/a:web/cgroup.procs",
                b"/cg/cpuset/petrel/a:web/cgroup.procs",
                b"/cg/cpu,cpuacct/petrel/a:web/cgroup.procs",
            ]
        );
        assert_eq!(
            group.usage_files(),
            UsageFiles {
                memory: Some("/cg/memory/petrel/a:web/memory.usage_in_bytes".into()),
                cpu: Some(CpuUsageFile::Cpuacct(
                    "/cg/cpu,cpuacct/petrel/a:web/cpuacct.usage".into()
                )),
            }
        );

        let setup = Setup {
            hierarchy: Hierarchy::V2 { root: "/cg".into() },
            parent: CgroupParent::parse("system.slice/petrel").unwrap(),
            controllers: [Controller::Memory, Controller::Pids].into(),
        };
        let group = setup.group(":hello", "system.slice/petrel/:hello".into());
        assert_eq!(group.dirs(), [Path::new("/cg/system.slice/petrel/:hello")]);
        assert_eq!(
            group.usage_files(),
            UsageFiles {
                memory: Some("/cg/system.slice/petrel/:hello/memory.current".into()),
                cpu: Some(CpuUsageFile::Stat(
                    "/cg/system.slice/petrel/:hello/cpu.stat".into()
                )),
            }
        );
        assert_eq!(group.dir_of(Controller::Cpuset), None);
    }

    #[test]
    fn usage_files_are_read_leniently() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("memory.current"), "1048576\n").unwrap();
        fs::write(
            dir.path().join("cpu.stat"),
            "usage_usec 1500\nuser_usec 1000\n",
        )
        .unwrap();
        fs::write(dir.path().join("cpuacct.usage"), "123456789\n").unwrap();
        let v2 = UsageFiles {
            memory: Some(dir.path().join("memory.current")),
            cpu: Some(CpuUsageFile::Stat(dir.path().join("cpu.stat"))),
        };
        assert_eq!(
            v2.read(),
            CgroupUsage {
                memory_bytes: Some(1_048_576),
                cpu_ns: Some(1_500_000)
            }
        );
        let v1 = UsageFiles {
            memory: Some(dir.path().join("missing")),
            cpu: Some(CpuUsageFile::Cpuacct(dir.path().join("cpuacct.usage"))),
        };
        assert_eq!(
            v1.read(),
            CgroupUsage {
                memory_bytes: None,
                cpu_ns: Some(123_456_789)
            }
        );
    }

    #[test]
    fn disabled_cgroups_create_nothing() {
        let cgroups = Cgroups::disabled();
        assert_eq!(cgroups.version(), None);
        assert!(cgroups.parent_dirs().is_empty());
        let name = Name::parse(":x").unwrap();
        assert_eq!(
            cgroups
                .create(&name, &GroupLimits::for_unikernel(32, &BTreeSet::new()))
                .unwrap(),
            None
        );
        assert_eq!(cgroups.reconcile().unwrap(), Vec::<String>::new());
    }
}
