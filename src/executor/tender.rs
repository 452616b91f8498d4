//! Tender processes: the solo5-hvt command line, spawning with CPU pinning and one
//! console pipe, exit classification, the restart table, the tender's `--version` check
//! and signals (`spec/unikernel-and-executor.md` §4, §8, §10).
//!
//! [`Tender`] is what the executor uses; [`ProcessTender`] spawns real processes with
//! `tokio::process`, [`FakeTender`] records what it is asked for executor tests.
//!
//! Differences from albatross, deliberate: CPU pinning is done with `sched_setaffinity`
//! in the child before `exec` (no `taskset` process), CPU ids the host does not have are
//! refused before spawning, the console is a pipe rather than a fifo, the tender runs in
//! its own process group and is killed by the kernel when petrel dies
//! (`PR_SET_PDEATHSIG`), with cgroups it joins its unikernel's group before `exec`
//! ([`Tender::spawn_in`], [`crate::executor::cgroup`]), and an exec failure is its own
//! error (Note E2).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

use crate::executor::cgroup::CgroupJoin;
use crate::executor::mac::Mac;
use crate::executor::net::InterfaceName;

/// Time a tender has to answer `--version`; solo5 prints two lines and exits at once.
pub const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Most output of `<tender> --version` read (solo5's is under 100 octets).
pub const MAX_VERSION_OUTPUT: u64 = 4096;

/// The exit code a failed `waitpid` is treated as (albatross's choice, §8).
pub const WAIT_ERROR_EXIT_CODE: i32 = 23;

/// Exit codes that never cause a restart: 1 (solo5 error) and 60–64 (argument and
/// usage errors), §8.
pub const NEVER_RESTART_CODES: [i32; 6] = [1, 60, 61, 62, 63, 64];

/// Largest CPU id that can be pinned (`CPU_SETSIZE` of glibc's fixed-size `cpu_set_t`).
pub const MAX_CPU_ID: u32 = 1023;

/// Tender errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TenderError {
    /// The tender could not be executed (not found, not executable, ...).
    #[error("could not execute tender {}: {source}", tender.display())]
    Exec {
        /// The program.
        tender: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A CPU id the host does not have (or petrel may not use).
    #[error("CPU {cpu} is not available on this host (available: {available})")]
    CpuUnavailable {
        /// The CPU id asked for.
        cpu: u32,
        /// The CPU ids available, joined by `, `.
        available: String,
    },
    /// Creating the console pipe or reading it failed.
    #[error("console pipe: {0}")]
    Pipe(#[source] io::Error),
    /// `<tender> --version` did not finish in time.
    #[error("{} --version did not finish within {} seconds", tender.display(), VERSION_TIMEOUT.as_secs())]
    VersionTimeout {
        /// The program.
        tender: PathBuf,
    },
    /// `<tender> --version` has no line `ABI version <expected>` (albatross's text).
    #[error(
        "unexpected solo5 tender --version output, expected one line with 'ABI version {expected}', got {output}"
    )]
    VersionOutput {
        /// The ABI version of the image.
        expected: u32,
        /// What the tender printed (stdout and stderr, bounded, trimmed).
        output: String,
    },
    /// Sending a signal failed.
    #[error("could not send {signal} to process {pid}: {source}")]
    Signal {
        /// The process.
        pid: Pid,
        /// The signal.
        signal: StopSignal,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading this process's CPU affinity failed.
    #[error("could not read the CPU affinity: {0}")]
    Affinity(#[source] io::Error),
    /// [`FakeTender`] was told to fail.
    #[error("injected failure: {0}")]
    Injected(String),
}

/// One `--net:` device: unikernel-side name, tap, MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetArg {
    /// The unikernel-side device name (as in the solo5 manifest).
    pub netif: String,
    /// The host tap.
    pub tap: InterfaceName,
    /// The MAC (configured or deterministic).
    pub mac: Mac,
}

/// One `--block:` device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockArg {
    /// The unikernel-side device name.
    pub name: String,
    /// The backing file.
    pub path: PathBuf,
    /// Sector size, if configured.
    pub sector_size: Option<u32>,
}

/// Everything needed to start a tender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenderCommand {
    /// The tender program (absolute path, or a bare name looked up in `PATH`).
    pub tender: PathBuf,
    /// `--mem=` in MB.
    pub memory_mb: u64,
    /// Network devices, in configuration order.
    pub nets: Vec<NetArg>,
    /// Block devices, in configuration order.
    pub blocks: Vec<BlockArg>,
    /// The unikernel image.
    pub image: PathBuf,
    /// The `--name=` value, if `addName`.
    pub name_arg: Option<String>,
    /// Extra unikernel arguments.
    pub argv: Vec<String>,
    /// CPU ids to pin to; empty means no pinning.
    pub cpus: BTreeSet<u32>,
}

impl TenderCommand {
    /// The tender's arguments in the order of §4.2 (without the `taskset` prefix):
    /// `--mem=`, every `--net:`, every `--net-mac:`, every `--block:`, every
    /// `--block-sector-size:`, `--`, the image, `--name=…`, the argv.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![format!("--mem={}", self.memory_mb).into()];
        for net in &self.nets {
            args.push(format!("--net:{}={}", net.netif, net.tap).into());
        }
        for net in &self.nets {
            args.push(format!("--net-mac:{}={}", net.netif, net.mac).into());
        }
        for block in &self.blocks {
            let mut arg = OsString::from(format!("--block:{}=", block.name));
            arg.push(&block.path);
            args.push(arg);
        }
        for block in &self.blocks {
            if let Some(size) = block.sector_size {
                args.push(format!("--block-sector-size:{}={size}", block.name).into());
            }
        }
        args.push("--".into());
        args.push(self.image.clone().into());
        if let Some(name) = &self.name_arg {
            args.push(format!("--name={name}").into());
        }
        args.extend(self.argv.iter().map(OsString::from));
        args
    }
}

/// A process id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pid(u32);

impl Pid {
    /// A pid from its number.
    pub fn new(pid: u32) -> Self {
        Self(pid)
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The signals petrel sends to tenders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: the tender exits (solo5: status 1, "Exiting on signal 15").
    Term,
    /// SIGKILL, after [`crate::limits::STOP_TIMEOUT`].
    Kill,
}

impl StopSignal {
    fn number(self) -> libc::c_int {
        match self {
            Self::Term => libc::SIGTERM,
            Self::Kill => libc::SIGKILL,
        }
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Term => "SIGTERM",
            Self::Kill => "SIGKILL",
        })
    }
}

/// How a tender ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// It exited with this code.
    Exited(i32),
    /// It was killed (or stopped) by this signal.
    Signaled(i32),
}

impl From<ExitStatus> for ExitReason {
    fn from(status: ExitStatus) -> Self {
        if let Some(code) = status.code() {
            Self::Exited(code)
        } else if let Some(signal) = status.signal().or(status.stopped_signal()) {
            Self::Signaled(signal)
        } else {
            Self::Exited(WAIT_ERROR_EXIT_CODE)
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(code) => write!(f, "exited with {code}"),
            Self::Signaled(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

/// The restart table of §8. `restart_on` is `None` for the quit behaviour (never
/// restart) and the set of exit codes for `restart` (empty: any code but the excluded
/// ones).
pub fn should_restart(reason: ExitReason, restart_on: Option<&BTreeSet<i64>>) -> bool {
    let Some(codes) = restart_on else {
        return false;
    };
    match reason {
        ExitReason::Signaled(_) => false,
        ExitReason::Exited(code) if NEVER_RESTART_CODES.contains(&code) => false,
        ExitReason::Exited(code) => codes.is_empty() || codes.contains(&i64::from(code)),
    }
}

/// A started tender.
pub struct TenderProcess {
    /// Its pid (also its process group id).
    pub pid: Pid,
    /// The read end of the pipe that is the tender's stdout and stderr.
    pub console: OwnedFd,
    /// Completes when the tender has exited (and has been reaped).
    pub exit: ExitWaiter,
}

impl fmt::Debug for TenderProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenderProcess")
            .field("pid", &self.pid)
            .field("console", &self.console)
            .finish_non_exhaustive()
    }
}

/// A future resolving to the [`ExitReason`] of a tender.
pub struct ExitWaiter(Pin<Box<dyn Future<Output = ExitReason> + Send>>);

impl ExitWaiter {
    /// Wraps a future.
    pub fn new(future: impl Future<Output = ExitReason> + Send + 'static) -> Self {
        Self(Box::pin(future))
    }
}

impl Future for ExitWaiter {
    type Output = ExitReason;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ExitReason> {
        self.0.as_mut().poll(cx)
    }
}

/// Starting and signalling tenders.
pub trait Tender: Send + Sync {
    /// Starts `command`. Must be called inside a tokio runtime.
    fn spawn(&self, command: &TenderCommand) -> Result<TenderProcess, TenderError>;

    /// Starts `command` inside a cgroup: the process joins it before `exec`. The default
    /// ignores the cgroup (for fakes, whose processes are not real).
    fn spawn_in(
        &self,
        command: &TenderCommand,
        cgroup: &CgroupJoin,
    ) -> Result<TenderProcess, TenderError> {
        let _ = cgroup;
        self.spawn(command)
    }

    /// Checks that `tender --version` reports ABI version `expected` (§4.1).
    fn check_abi_version<'a>(
        &'a self,
        tender: &'a Path,
        expected: u32,
    ) -> Pin<Box<dyn Future<Output = Result<(), TenderError>> + Send + 'a>>;

    /// Sends `signal` to `pid`; errors are logged, not returned (albatross: "kill errors
    /// are only logged"). Only signal a tender whose exit has not been observed yet.
    fn signal(&self, pid: Pid, signal: StopSignal);
}

/// Spawns real tender processes.
#[derive(Debug, Clone, Default)]
pub struct ProcessTender;

impl Tender for ProcessTender {
    fn spawn(&self, command: &TenderCommand) -> Result<TenderProcess, TenderError> {
        spawn_tender(command)
    }

    fn spawn_in(
        &self,
        command: &TenderCommand,
        cgroup: &CgroupJoin,
    ) -> Result<TenderProcess, TenderError> {
        spawn_tender_in(command, Some(cgroup))
    }

    fn check_abi_version<'a>(
        &'a self,
        tender: &'a Path,
        expected: u32,
    ) -> Pin<Box<dyn Future<Output = Result<(), TenderError>> + Send + 'a>> {
        Box::pin(tender_abi_version(tender, expected))
    }

    fn signal(&self, pid: Pid, signal: StopSignal) {
        if let Err(e) = send_signal(pid, signal) {
            tracing::warn!(%pid, %signal, error = %e, "signal failed");
        }
    }
}

/// Starts a tender: stdin `/dev/null`, stdout and stderr the write end of one pipe
/// (whose read end is returned), its own process group, pinned to `command.cpus` with
/// `sched_setaffinity` before `exec`, and killed by the kernel (`PR_SET_PDEATHSIG`,
/// SIGKILL) if the spawning thread ends, so that a crashed petrel leaves no tender
/// running; environment and working directory inherited. Must be called inside a tokio
/// runtime, from a thread that lives as long as the tender should.
pub fn spawn_tender(command: &TenderCommand) -> Result<TenderProcess, TenderError> {
    spawn_tender_in(command, None)
}

/// [`spawn_tender`], the child joining `cgroup` (if any) first: it writes `0` to each of
/// the group's `cgroup.procs` files before anything else, so the tender never runs
/// outside its group. A failure to join fails the spawn like an exec failure.
pub fn spawn_tender_in(
    command: &TenderCommand,
    cgroup: Option<&CgroupJoin>,
) -> Result<TenderProcess, TenderError> {
    let cpus = cpu_set(&command.cpus)?;
    let join: Vec<std::ffi::CString> = cgroup.map(|c| c.files().to_vec()).unwrap_or_default();
    let (console, write) = pipe().map_err(TenderError::Pipe)?;
    let write2 = write.try_clone().map_err(TenderError::Pipe)?;
    let mut process = tokio::process::Command::new(&command.tender);
    process
        .args(command.args())
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(write2))
        .process_group(0)
        .kill_on_drop(false);
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure only calls open(2), write(2), close(2), prctl(2), getppid(2) and
    // sched_setaffinity(2), which are async-signal-safe, on values prepared before the
    // fork; it allocates nothing.
    unsafe {
        process.pre_exec(move || {
            for file in &join {
                let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                let error = io::Error::last_os_error();
                libc::close(fd);
                if written != 1 {
                    return Err(error);
                }
            }
            // The tender dies with the thread that spawned it (PR_SET_PDEATHSIG follows the
            // parent *thread*): spawn only from threads that live as long as the executor,
            // such as tokio's worker threads, never from a blocking-pool thread.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl: then nobody would kill us.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            if let Some(cpus) = &cpus {
                let size = std::mem::size_of::<libc::cpu_set_t>();
                if libc::sched_setaffinity(0, size, cpus) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = process.spawn().map_err(|source| TenderError::Exec {
        tender: command.tender.clone(),
        source,
    })?;
    // Close our copies of the pipe's write end, so the console sees EOF at exit.
    drop(process);
    let pid = Pid(child.id().unwrap_or_default());
    let exit = ExitWaiter::new(async move {
        match child.wait().await {
            Ok(status) => ExitReason::from(status),
            Err(e) => {
                tracing::warn!(error = %e, "waiting for tender failed");
                ExitReason::Exited(WAIT_ERROR_EXIT_CODE)
            }
        }
    });
    Ok(TenderProcess { pid, console, exit })
}

/// Runs `<tender> --version` (stdout and stderr together, at most
/// [`MAX_VERSION_OUTPUT`] octets, within [`VERSION_TIMEOUT`]) and checks that one line
/// is exactly `ABI version <expected>` (§4.1).
pub async fn tender_abi_version(tender: &Path, expected: u32) -> Result<(), TenderError> {
    let output = tokio::time::timeout(VERSION_TIMEOUT, version_output(tender))
        .await
        .map_err(|_| TenderError::VersionTimeout {
            tender: tender.to_owned(),
        })??;
    check_version_output(&output, expected)
}

/// The pure part of [`tender_abi_version`]: does `output` have a line that is exactly
/// `ABI version <expected>`?
pub fn check_version_output(output: &[u8], expected: u32) -> Result<(), TenderError> {
    let text = String::from_utf8_lossy(output);
    let wanted = format!("ABI version {expected}");
    if text.split('\n').any(|line| line == wanted) {
        Ok(())
    } else {
        Err(TenderError::VersionOutput {
            expected,
            output: text.trim().to_owned(),
        })
    }
}

/// Largest part of a tender's output [`early_output`] reads.
pub const MAX_EARLY_OUTPUT: usize = 4096;

/// What a tender that exited at once wrote before exiting: the last non-empty line of
/// the first [`MAX_EARLY_OUTPUT`] octets waiting in its console pipe (its error message),
/// without blocking — a tender forked meanwhile may briefly hold the pipe's write end.
pub fn early_output(console: &OwnedFd) -> String {
    let fd = console.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return String::new();
        }
    }
    let mut output = vec![0u8; MAX_EARLY_OUTPUT];
    let mut filled = 0;
    while let Some(rest) = output.get_mut(filled..).filter(|r| !r.is_empty()) {
        // SAFETY: read(2) into the unfilled part of our buffer.
        let n = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
        match usize::try_from(n) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    output.truncate(filled);
    String::from_utf8_lossy(&output)
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())
        .unwrap_or_default()
        .to_owned()
}

/// Sends `signal` to `pid`.
pub fn send_signal(pid: Pid, signal: StopSignal) -> Result<(), TenderError> {
    let raw = libc::pid_t::try_from(pid.0)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| TenderError::Signal {
            pid,
            signal,
            source: io::Error::from_raw_os_error(libc::ESRCH),
        })?;
    // SAFETY: kill(2) with a positive pid signals exactly that process.
    if unsafe { libc::kill(raw, signal.number()) } != 0 {
        return Err(TenderError::Signal {
            pid,
            signal,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The CPU ids this process may run on (`sched_getaffinity`), which are the ids a
/// tender can be pinned to.
pub fn available_cpus() -> io::Result<BTreeSet<u32>> {
    // SAFETY: cpu_set_t is plain old data; sched_getaffinity fills it in.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a valid cpu_set_t of `size` octets.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..=MAX_CPU_ID)
        // SAFETY: the index is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu as usize, &set) })
        .collect())
}

/// The affinity mask for `cpus`, or `None` for no pinning; refuses ids not in
/// [`available_cpus`].
fn cpu_set(cpus: &BTreeSet<u32>) -> Result<Option<libc::cpu_set_t>, TenderError> {
    if cpus.is_empty() {
        return Ok(None);
    }
    let available = available_cpus().map_err(TenderError::Affinity)?;
    // SAFETY: cpu_set_t is plain old data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        if !available.contains(&cpu) {
            let available: Vec<String> = available.iter().map(u32::to_string).collect();
            return Err(TenderError::CpuUnavailable {
                cpu,
                available: available.join(", "),
            });
        }
        // SAFETY: cpu <= MAX_CPU_ID < CPU_SETSIZE (it is in `available`).
        unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    }
    Ok(Some(set))
}

/// A pipe, both ends close-on-exec: (read, write).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

async fn version_output(tender: &Path) -> Result<Vec<u8>, TenderError> {
    let (read, write) = pipe().map_err(TenderError::Pipe)?;
    let write2 = write.try_clone().map_err(TenderError::Pipe)?;
    let mut process = tokio::process::Command::new(tender);
    process
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(write2))
        .kill_on_drop(true);
    let mut child = process.spawn().map_err(|source| TenderError::Exec {
        tender: tender.to_owned(),
        source,
    })?;
    drop(process);
    let receiver =
        tokio::net::unix::pipe::Receiver::from_owned_fd(read).map_err(TenderError::Pipe)?;
    let mut output = Vec::new();
    receiver
        .take(MAX_VERSION_OUTPUT)
        .read_to_end(&mut output)
        .await
        .map_err(TenderError::Pipe)?;
    // Output beyond the bound is not read; do not wait for a tender that keeps writing.
    let _ = child.start_kill();
    let _ = child.wait().await;
    Ok(output)
}

/// A recorded [`FakeTender`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenderCall {
    /// `spawn(command)`, and the pid it was given.
    Spawn(TenderCommand, Pid),
    /// `check_abi_version(tender, expected)`.
    CheckAbi(PathBuf, u32),
    /// `signal(pid, signal)`.
    Signal(Pid, StopSignal),
}

/// A recording [`Tender`] for executor tests: spawning hands out fake pids (from 1000
/// up), a console pipe whose write end the test holds through [`FakeTender::console`],
/// and an exit the test triggers with [`FakeTender::exit`]. SIGTERM and SIGKILL are
/// recorded; the fake exits on them only if told to with [`FakeTender::exit_on_signal`].
#[derive(Debug, Default)]
pub struct FakeTender {
    state: Mutex<FakeTenderState>,
}

#[derive(Debug, Default)]
struct FakeTenderState {
    calls: Vec<TenderCall>,
    next_pid: u32,
    running: BTreeMap<Pid, FakeRunning>,
    fail_spawn: Option<String>,
    abi_error: Option<String>,
    exit_on_signal: Option<ExitReason>,
}

#[derive(Debug)]
struct FakeRunning {
    console: OwnedFd,
    exit: oneshot::Sender<ExitReason>,
}

impl FakeTender {
    /// A fake whose spawns and ABI checks succeed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<TenderCall> {
        self.lock().calls.clone()
    }

    /// Makes later spawns fail with [`TenderError::Injected`] (`None`: succeed again).
    pub fn fail_spawn(&self, message: Option<&str>) {
        self.lock().fail_spawn = message.map(str::to_owned);
    }

    /// Makes later ABI checks fail with [`TenderError::Injected`] (`None`: succeed).
    pub fn fail_abi_check(&self, message: Option<&str>) {
        self.lock().abi_error = message.map(str::to_owned);
    }

    /// Makes a signalled fake tender exit with `reason` (`None`: signals only recorded).
    pub fn exit_on_signal(&self, reason: Option<ExitReason>) {
        self.lock().exit_on_signal = reason;
    }

    /// The write end of `pid`'s console (a duplicate), while it runs.
    pub fn console(&self, pid: Pid) -> Option<OwnedFd> {
        self.lock()
            .running
            .get(&pid)
            .and_then(|r| r.console.try_clone().ok())
    }

    /// Pids of fake tenders that have not exited.
    pub fn running(&self) -> Vec<Pid> {
        self.lock().running.keys().copied().collect()
    }

    /// Makes `pid` exit with `reason`; false if it is not running.
    pub fn exit(&self, pid: Pid, reason: ExitReason) -> bool {
        match self.lock().running.remove(&pid) {
            Some(running) => running.exit.send(reason).is_ok(),
            None => false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, FakeTenderState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Tender for FakeTender {
    fn spawn(&self, command: &TenderCommand) -> Result<TenderProcess, TenderError> {
        let mut state = self.lock();
        if let Some(message) = &state.fail_spawn {
            return Err(TenderError::Injected(message.clone()));
        }
        let pid = Pid(1000 + state.next_pid);
        state.next_pid += 1;
        state.calls.push(TenderCall::Spawn(command.clone(), pid));
        let (console, write) = pipe().map_err(TenderError::Pipe)?;
        let (tx, rx) = oneshot::channel();
        state.running.insert(
            pid,
            FakeRunning {
                console: write,
                exit: tx,
            },
        );
        let exit =
            ExitWaiter::new(
                async move { rx.await.unwrap_or(ExitReason::Exited(WAIT_ERROR_EXIT_CODE)) },
            );
        Ok(TenderProcess { pid, console, exit })
    }

    fn check_abi_version<'a>(
        &'a self,
        tender: &'a Path,
        expected: u32,
    ) -> Pin<Box<dyn Future<Output = Result<(), TenderError>> + Send + 'a>> {
        let mut state = self.lock();
        state
            .calls
            .push(TenderCall::CheckAbi(tender.to_owned(), expected));
        let result = match &state.abi_error {
            Some(message) => Err(TenderError::Injected(message.clone())),
            None => Ok(()),
        };
        Box::pin(std::future::ready(result))
    }

    fn signal(&self, pid: Pid, signal: StopSignal) {
        let mut state = self.lock();
        state.calls.push(TenderCall::Signal(pid, signal));
        if let Some(reason) = state.exit_on_signal {
            if let Some(running) = state.running.remove(&pid) {
                let _ = running.exit.send(reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn args_in_spec_order() {
        let command = TenderCommand {
            tender: "solo5-hvt".into(),
            memory_mb: 64,
            nets: vec![
                NetArg {
                    netif: "service".into(),
                    tap: InterfaceName::parse("vmmtap0").unwrap(),
                    mac: "00:80:41:0c:85:fb".parse().unwrap(),
                },
                NetArg {
                    netif: "admin".into(),
                    tap: InterfaceName::parse("vmmtap3").unwrap(),
                    mac: "02:00:00:00:00:01".parse().unwrap(),
                },
            ],
            blocks: vec![
                BlockArg {
                    name: "storage".into(),
                    path: "/var/lib/albatross/block/foo:data".into(),
                    sector_size: None,
                },
                BlockArg {
                    name: "log".into(),
                    path: "/var/lib/albatross/block/foo:log".into(),
                    sector_size: Some(4096),
                },
            ],
            image: "/run/albatross/foo:web.img".into(),
            name_arg: Some("web".into()),
            argv: vec!["--x=1".into(), "--y".into()],
            cpus: [2].into(),
        };
        assert_eq!(
            strings(command.args()),
            [
                "--mem=64",
                "--net:service=vmmtap0",
                "--net:admin=vmmtap3",
                "--net-mac:service=00:80:41:0c:85:fb",
                "--net-mac:admin=02:00:00:00:00:01",
                "--block:storage=/var/lib/albatross/block/foo:data",
                "--block:log=/var/lib/albatross/block/foo:log",
                "--block-sector-size:log=4096",
                "--",
                "/run/albatross/foo:web.img",
                "--name=web",
                "--x=1",
                "--y",
            ]
        );
    }

    #[test]
    fn args_without_devices_name_or_argv() {
        let command = TenderCommand {
            tender: "solo5-hvt".into(),
            memory_mb: 32,
            nets: vec![],
            blocks: vec![],
            image: "/run/petrel/:hello.img".into(),
            name_arg: None,
            argv: vec![],
            cpus: BTreeSet::new(),
        };
        assert_eq!(
            strings(command.args()),
            ["--mem=32", "--", "/run/petrel/:hello.img"]
        );
    }

    #[test]
    fn exit_classification() {
        assert_eq!(
            ExitReason::from(ExitStatus::from_raw(0)),
            ExitReason::Exited(0)
        );
        assert_eq!(
            ExitReason::from(ExitStatus::from_raw(64 << 8)),
            ExitReason::Exited(64)
        );
        assert_eq!(
            ExitReason::from(ExitStatus::from_raw(255 << 8)),
            ExitReason::Exited(255)
        );
        assert_eq!(
            ExitReason::from(ExitStatus::from_raw(libc::SIGKILL)),
            ExitReason::Signaled(9)
        );
        // Killed by SIGSEGV with a core dump.
        assert_eq!(
            ExitReason::from(ExitStatus::from_raw(libc::SIGSEGV | 0x80)),
            ExitReason::Signaled(11)
        );
        // Stopped by SIGSTOP (0x7f in the low byte).
        assert_eq!(
            ExitReason::from(ExitStatus::from_raw((libc::SIGSTOP << 8) | 0x7f)),
            ExitReason::Signaled(libc::SIGSTOP)
        );
        assert_eq!(ExitReason::Exited(3).to_string(), "exited with 3");
        assert_eq!(ExitReason::Signaled(15).to_string(), "killed by signal 15");
    }

    #[test]
    fn restart_table() {
        let empty = BTreeSet::new();
        let some: BTreeSet<i64> = [2, 64, 255].into();
        let cases: [(ExitReason, Option<&BTreeSet<i64>>, bool); 20] = [
            // quit: never.
            (ExitReason::Exited(0), None, false),
            (ExitReason::Exited(2), None, false),
            (ExitReason::Signaled(9), None, false),
            // signals: never.
            (ExitReason::Signaled(9), Some(&empty), false),
            (ExitReason::Signaled(15), Some(&some), false),
            // 1 and 60-64: never, even when listed.
            (ExitReason::Exited(1), Some(&empty), false),
            (ExitReason::Exited(60), Some(&empty), false),
            (ExitReason::Exited(61), Some(&empty), false),
            (ExitReason::Exited(62), Some(&empty), false),
            (ExitReason::Exited(63), Some(&empty), false),
            (ExitReason::Exited(64), Some(&empty), false),
            (ExitReason::Exited(64), Some(&some), false),
            // empty set: any other code.
            (ExitReason::Exited(0), Some(&empty), true),
            (ExitReason::Exited(2), Some(&empty), true),
            (ExitReason::Exited(59), Some(&empty), true),
            (ExitReason::Exited(65), Some(&empty), true),
            (ExitReason::Exited(255), Some(&empty), true),
            // non-empty set: iff listed.
            (ExitReason::Exited(2), Some(&some), true),
            (ExitReason::Exited(255), Some(&some), true),
            (ExitReason::Exited(0), Some(&some), false),
        ];
        for (reason, set, expected) in cases {
            assert_eq!(should_restart(reason, set), expected, "{reason:?} {set:?}");
        }
    }

    #[test]
    fn version_output_parsing() {
        let good = b"solo5-hvt tender, version v0.9.0\nABI version 2\n";
        check_version_output(good, 2).unwrap();
        assert_eq!(
            check_version_output(good, 3).unwrap_err().to_string(),
            "unexpected solo5 tender --version output, expected one line with 'ABI version 3', \
             got solo5-hvt tender, version v0.9.0\nABI version 2"
        );
        // The line must be exactly the three words.
        for bad in [
            &b"ABI version 2 \n"[..],
            b" ABI version 2",
            b"ABI  version 2",
            b"ABI version 22",
            b"abi version 2",
            b"ABI version 2\r\n",
            b"",
        ] {
            assert!(check_version_output(bad, 2).is_err(), "{bad:?}");
        }
        check_version_output(b"ABI version 2", 2).unwrap();
        assert_eq!(
            check_version_output(b"", 2).unwrap_err().to_string(),
            "unexpected solo5 tender --version output, expected one line with 'ABI version 2', got "
        );
    }

    #[test]
    fn unavailable_cpu_refused_before_spawning() {
        let err = cpu_set(&[MAX_CPU_ID + 1].into()).unwrap_err();
        let available: Vec<String> = available_cpus()
            .unwrap()
            .iter()
            .map(u32::to_string)
            .collect();
        assert_eq!(
            err.to_string(),
            format!(
                "CPU 1024 is not available on this host (available: {})",
                available.join(", ")
            )
        );
        assert!(cpu_set(&BTreeSet::new()).unwrap().is_none());
    }

    #[tokio::test]
    async fn fake_tender_records_and_exits() {
        let fake = FakeTender::new();
        let command = TenderCommand {
            tender: "solo5-hvt".into(),
            memory_mb: 32,
            nets: vec![],
            blocks: vec![],
            image: "/x.img".into(),
            name_arg: None,
            argv: vec![],
            cpus: BTreeSet::new(),
        };
        let process = fake.spawn(&command).unwrap();
        assert_eq!(process.pid, Pid::new(1000));
        fake.signal(process.pid, StopSignal::Term);
        assert_eq!(fake.running(), vec![Pid::new(1000)]);
        assert!(fake.exit(process.pid, ExitReason::Exited(1)));
        assert_eq!(process.exit.await, ExitReason::Exited(1));
        assert!(!fake.exit(Pid::new(1000), ExitReason::Exited(0)));
        fake.check_abi_version(Path::new("solo5-hvt"), 2)
            .await
            .unwrap();
        fake.fail_spawn(Some("boom"));
        assert_eq!(
            fake.spawn(&command).unwrap_err().to_string(),
            "injected failure: boom"
        );
        assert_eq!(
            fake.calls(),
            vec![
                TenderCall::Spawn(command.clone(), Pid::new(1000)),
                TenderCall::Signal(Pid::new(1000), StopSignal::Term),
                TenderCall::CheckAbi("solo5-hvt".into(), 2),
            ]
        );
    }
}
