//! A stand-in for `solo5-hvt`, for tests: it accepts the tender command line petrel
//! produces (`spec/unikernel-and-executor.md` §4.2) and validates it as solo5 does, then
//! behaves as its unikernel arguments ask instead of running a unikernel.
//!
//! Tender side (before `--` or the image):
//! - `--version`: a solo5-like first line and `ABI version <v>` on stderr, exit 0; `<v>`
//!   is 2 or the value of `PETREL_STAND_IN_ABI_VERSION`;
//! - `--mem=N`, `--net:NAME=TAP`, `--net-mac:NAME=MAC`, `--block:NAME=PATH`,
//!   `--block-sector-size:NAME=SIZE`; anything else: `Invalid option`, usage, exit 1;
//! - the image must exist; if it parses as a solo5 image, its target must be hvt, its ABI
//!   version the one above, and its manifest must match the `--net:`/`--block:` options;
//! - every `--net:` tap is opened with `TUNSETIFF` (skipped if `PETREL_STAND_IN_SKIP_TAPS`
//!   is set), every `--block:` file opened read-write;
//! - SIGTERM and SIGINT end it as they end solo5: `<prog>: Exiting on signal N` on
//!   stderr, exit status 1.
//!
//! Unikernel side (after the image), executed in order: `--name=X` (accepted, unless
//! `--refuse-name` is also given: then exit 64 like a unikernel that does not know it),
//! `--print=TEXT`, `--lines=N` (`line 1` … `line N`), `--write-block=NAME:TEXT` (at the
//! start of that block device's file), `--alloc-mb=N` (allocated and touched),
//! `--sleep-ms=MS`, `--exit=CODE`, `--wait` (until a signal), `--ignore-sigterm`,
//! `--net-drain` (from then on, a thread per tap reads and discards every frame, as a
//! unikernel's network stack would, so the tap's transmit counters move).
//! Any other argument: exit 64. Without `--exit` or `--wait` it exits 0 at the end.
//!
//! If `PETREL_STAND_IN_RECORD_DIR` is set, before anything else it writes
//! `<dir>/<pid>.json`: argv, pid, ppid, process group, CPU affinity, working directory
//! and what its stdin, stdout and stderr are.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use petrel::executor::mac::Mac;
use petrel::executor::manifest::{self, DeviceKind, DeviceName, Target};
use petrel::executor::net::{self, InterfaceName};
use petrel::executor::tender::available_cpus;

/// Where to write the launch record.
const RECORD_DIR: &str = "PETREL_STAND_IN_RECORD_DIR";
/// Overrides the ABI version reported and required.
const ABI_VERSION_VAR: &str = "PETREL_STAND_IN_ABI_VERSION";
/// If set, taps are not opened.
const SKIP_TAPS: &str = "PETREL_STAND_IN_SKIP_TAPS";
/// solo5's ABI version for hvt.
const DEFAULT_ABI_VERSION: u32 = 2;
/// The version this stand-in claims.
const VERSION: &str = "v0.9.0-petrel-stand-in";
/// Largest `--alloc-mb`, so an odd argument cannot make it thrash the test machine.
const MAX_ALLOC_MB: u64 = 16 * 1024;
/// Longest tap name solo5 accepts in `--net:` (its `iface[20]` buffer).
const MAX_TAP_ARG: usize = 19;
/// Exit code of a unikernel that does not understand its arguments (cmdliner's).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .map(|a: OsString| a.to_string_lossy().into_owned())
        .collect();
    if let Some(dir) = std::env::var_os(RECORD_DIR) {
        if let Err(e) = record(Path::new(&dir), &args) {
            eprintln!("petrel-stand-in-tender: could not write the launch record: {e}");
            return ExitCode::from(1);
        }
    }
    let prog = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "solo5-hvt".to_owned());
    match run(&prog, args.get(1..).unwrap_or_default()) {
        Ok(code) => ExitCode::from(code),
        Err(Failure(code)) => ExitCode::from(code),
    }
}

/// An exit with this status, after its message was printed.
struct Failure(u8);

fn fail(prog: &str, message: impl std::fmt::Display) -> Failure {
    eprintln!("{prog}: {message}");
    Failure(1)
}

fn usage(prog: &str) -> Failure {
    eprintln!("usage: {prog} [ CORE OPTIONS ] [ MODULE OPTIONS ] [ -- ] KERNEL [ ARGS ]");
    eprintln!("KERNEL is the filename of the unikernel to run.");
    eprintln!("ARGS are optional arguments passed to the unikernel.");
    eprintln!("Core options:");
    eprintln!("  [ --mem=512 ] (guest memory in MB)");
    eprintln!("    --help (display this help)");
    eprintln!("    --version (display version information)");
    eprintln!("Compiled-in modules: net block");
    eprintln!("Compiled-in module options:");
    eprintln!("    [ --net:NAME=IFACE | @NN ] [ --net-mac:NAME=HWADDR ]");
    eprintln!("    [ --block:NAME=PATH ] [ --block-sector-size:NAME=SIZE ]");
    Failure(1)
}

fn abi_version() -> u32 {
    std::env::var(ABI_VERSION_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ABI_VERSION)
}

#[derive(Default)]
struct TenderOptions {
    nets: Vec<(String, String)>,
    macs: Vec<(String, Mac)>,
    blocks: BTreeMap<String, PathBuf>,
}

fn run(prog: &str, args: &[String]) -> Result<u8, Failure> {
    // First pass, as solo5: terminal options and the image.
    let mut image_index = None;
    for (i, arg) in args.iter().enumerate() {
        if arg == "--" {
            image_index = Some(i + 1);
            break;
        }
        if !arg.starts_with('-') {
            image_index = Some(i);
            break;
        }
        if arg == "--help" {
            return Err(usage(prog));
        }
        if arg == "--version" {
            eprintln!("{prog} tender, version {VERSION}");
            eprintln!("ABI version {}", abi_version());
            return Ok(0);
        }
    }
    let Some(image) = image_index.and_then(|i| args.get(i)) else {
        eprintln!("{prog}: Missing KERNEL operand");
        return Err(usage(prog));
    };
    let options = parse_options(
        prog,
        args.get(..image_index.unwrap_or(0)).unwrap_or_default(),
    )?;
    let unikernel = args.get(image_index.unwrap_or(0) + 1..).unwrap_or_default();

    if let Err(e) = File::open(image) {
        return Err(fail(prog, format!("{image}: Could not open: {e}")));
    }
    check_image(prog, image, &options)?;
    let taps = open_taps(prog, &options)?;
    let blocks = open_blocks(prog, &options)?;
    let actions = parse_unikernel_args(unikernel, &blocks)?;

    install_signal_handlers(
        prog,
        actions.iter().any(|a| matches!(a, Action::IgnoreSigterm)),
    );
    println!("Solo5: Bindings version {VERSION}");
    run_actions(prog, actions, &blocks, &taps)
}

fn parse_options(prog: &str, options: &[String]) -> Result<TenderOptions, Failure> {
    let mut parsed = TenderOptions::default();
    for arg in options {
        if arg == "--" {
            break;
        }
        let invalid = || {
            eprintln!("{prog}: Invalid option: `{arg}'");
            usage(prog)
        };
        if let Some(mem) = arg.strip_prefix("--mem=") {
            match mem.parse::<u64>() {
                Ok(m) if m > 0 => {}
                _ => return Err(fail(prog, "Malformed argument to --mem")),
            }
        } else if let Some(rest) = arg.strip_prefix("--net:") {
            let (name, tap) = device_option(rest).ok_or_else(invalid)?;
            if tap.is_empty() || tap.len() > MAX_TAP_ARG || tap.contains(char::is_whitespace) {
                return Err(invalid());
            }
            parsed.nets.push((name.to_owned(), tap.to_owned()));
        } else if let Some(rest) = arg.strip_prefix("--net-mac:") {
            let (name, mac) = device_option(rest).ok_or_else(invalid)?;
            let mac = mac.parse::<Mac>().map_err(|_| {
                eprintln!("{prog}: Malformed argument to --net-mac");
                Failure(1)
            })?;
            parsed.macs.push((name.to_owned(), mac));
        } else if let Some(rest) = arg.strip_prefix("--block:") {
            let (name, path) = device_option(rest).ok_or_else(invalid)?;
            if path.is_empty() {
                return Err(invalid());
            }
            parsed.blocks.insert(name.to_owned(), PathBuf::from(path));
        } else if let Some(rest) = arg.strip_prefix("--block-sector-size:") {
            let (_, size) = device_option(rest).ok_or_else(invalid)?;
            match size.parse::<u16>() {
                Ok(s) if s >= 512 && s.is_power_of_two() => {}
                _ => {
                    return Err(fail(
                        prog,
                        "Malformed argument to --block-sector-size: must be a power of two >= 512",
                    ));
                }
            }
        } else {
            return Err(invalid());
        }
    }
    Ok(parsed)
}

/// `NAME=VALUE` with a solo5 device name.
fn device_option(rest: &str) -> Option<(&str, &str)> {
    let (name, value) = rest.split_once('=')?;
    DeviceName::is_valid(name.as_bytes()).then_some((name, value))
}

/// The manifest checks of solo5-hvt, when the image parses as a solo5 image.
fn check_image(prog: &str, image: &str, options: &TenderOptions) -> Result<(), Failure> {
    let Ok(parsed) = manifest::read_image_file(Path::new(image)) else {
        return Ok(());
    };
    if parsed.abi.target != Target::Hvt {
        return Err(fail(
            prog,
            format!("{image}: Executable is not for the solo5-hvt target"),
        ));
    }
    if parsed.abi.version != abi_version() {
        return Err(fail(
            prog,
            format!(
                "{image}: Executable requests unsupported ABI version {}",
                parsed.abi.version
            ),
        ));
    }
    let declared = |name: &str, kind: DeviceKind| {
        parsed
            .manifest
            .devices()
            .iter()
            .any(|d| d.kind == kind && d.name.as_str() == name)
    };
    let given = options
        .nets
        .iter()
        .map(|(n, _)| (n, DeviceKind::NetBasic))
        .chain(options.macs.iter().map(|(n, _)| (n, DeviceKind::NetBasic)))
        .chain(options.blocks.keys().map(|n| (n, DeviceKind::BlockBasic)));
    for (name, kind) in given {
        if !declared(name, kind) {
            eprintln!("{prog}: Resource not declared in manifest: '{name}'");
            return Err(usage(prog));
        }
    }
    let mut missing = false;
    for device in parsed.manifest.devices() {
        let attached = match device.kind {
            DeviceKind::NetBasic => options.nets.iter().any(|(n, _)| n == device.name.as_str()),
            DeviceKind::BlockBasic => options.blocks.contains_key(device.name.as_str()),
        };
        if !attached {
            let kind = match device.kind {
                DeviceKind::NetBasic => "NET_BASIC",
                DeviceKind::BlockBasic => "BLOCK_BASIC",
            };
            eprintln!(
                "{prog}: Device '{}' of type {kind} declared but not attached.",
                device.name
            );
            missing = true;
        }
    }
    if missing {
        return Err(fail(
            prog,
            "All declared devices must be attached. See --help for syntax.",
        ));
    }
    Ok(())
}

fn open_taps(prog: &str, options: &TenderOptions) -> Result<Vec<OwnedFd>, Failure> {
    if std::env::var_os(SKIP_TAPS).is_some() {
        return Ok(Vec::new());
    }
    let mut fds = Vec::new();
    for (_, tap) in &options.nets {
        let opened = InterfaceName::parse(tap).and_then(|name| net::open_tap(&name));
        match opened {
            Ok(fd) => fds.push(fd),
            Err(e) => {
                return Err(fail(
                    prog,
                    format!("Could not attach interface: {tap}: {e}"),
                ));
            }
        }
    }
    Ok(fds)
}

fn open_blocks(prog: &str, options: &TenderOptions) -> Result<BTreeMap<String, File>, Failure> {
    let mut files = BTreeMap::new();
    for (name, path) in &options.blocks {
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => {
                files.insert(name.clone(), file);
            }
            Err(e) => {
                return Err(fail(
                    prog,
                    format!("{}: Could not open: {e}", path.display()),
                ));
            }
        }
    }
    Ok(files)
}

enum Action {
    Print(String),
    Lines(u64),
    WriteBlock(String, String),
    AllocMb(u64),
    SleepMs(u64),
    Exit(u8),
    Wait,
    IgnoreSigterm,
    NetDrain,
}

fn parse_unikernel_args(
    args: &[String],
    blocks: &BTreeMap<String, File>,
) -> Result<Vec<Action>, Failure> {
    let refuse_name = args.iter().any(|a| a == "--refuse-name");
    let unknown = |arg: &str| {
        eprintln!("stand-in unikernel: unknown argument '{arg}'");
        Failure(EXIT_USAGE)
    };
    let number = |arg: &str, value: &str| value.parse::<u64>().map_err(|_| unknown(arg));
    let mut actions = Vec::new();
    for arg in args {
        let action = if let Some(_name) = arg.strip_prefix("--name=") {
            if refuse_name {
                return Err(unknown(arg));
            }
            continue;
        } else if arg == "--refuse-name" {
            continue;
        } else if let Some(text) = arg.strip_prefix("--print=") {
            Action::Print(text.to_owned())
        } else if let Some(n) = arg.strip_prefix("--lines=") {
            Action::Lines(number(arg, n)?)
        } else if let Some(spec) = arg.strip_prefix("--write-block=") {
            let (name, text) = spec.split_once(':').ok_or_else(|| unknown(arg))?;
            if !blocks.contains_key(name) {
                eprintln!("stand-in unikernel: no block device '{name}'");
                return Err(Failure(1));
            }
            Action::WriteBlock(name.to_owned(), text.to_owned())
        } else if let Some(n) = arg.strip_prefix("--alloc-mb=") {
            let mb = number(arg, n)?;
            if mb > MAX_ALLOC_MB {
                return Err(unknown(arg));
            }
            Action::AllocMb(mb)
        } else if let Some(ms) = arg.strip_prefix("--sleep-ms=") {
            Action::SleepMs(number(arg, ms)?)
        } else if let Some(code) = arg.strip_prefix("--exit=") {
            Action::Exit(code.parse::<u8>().map_err(|_| unknown(arg))?)
        } else if arg == "--wait" {
            Action::Wait
        } else if arg == "--ignore-sigterm" {
            Action::IgnoreSigterm
        } else if arg == "--net-drain" {
            Action::NetDrain
        } else {
            return Err(unknown(arg));
        };
        actions.push(action);
    }
    Ok(actions)
}

fn run_actions(
    prog: &str,
    actions: Vec<Action>,
    blocks: &BTreeMap<String, File>,
    taps: &[OwnedFd],
) -> Result<u8, Failure> {
    let mut out = io::stdout().lock();
    let mut held: Vec<Vec<u8>> = Vec::new();
    for action in actions {
        match action {
            Action::Print(text) => {
                let _ = writeln!(out, "{text}");
            }
            Action::Lines(n) => {
                for i in 1..=n {
                    let _ = writeln!(out, "line {i}");
                }
            }
            Action::WriteBlock(name, text) => {
                if let Some(file) = blocks.get(&name) {
                    file.write_all_at(text.as_bytes(), 0)
                        .and_then(|()| file.sync_data())
                        .map_err(|e| fail(prog, format!("writing block {name}: {e}")))?;
                }
            }
            Action::AllocMb(mb) => held.push(allocate(prog, mb)?),
            Action::SleepMs(ms) => {
                let _ = out.flush();
                std::thread::sleep(Duration::from_millis(ms));
            }
            Action::Exit(code) => {
                let _ = out.flush();
                return Ok(code);
            }
            Action::Wait => {
                let _ = out.flush();
                loop {
                    // SAFETY: pause(2) only waits for a signal.
                    unsafe { libc::pause() };
                }
            }
            Action::IgnoreSigterm => {}
            Action::NetDrain => {
                for tap in taps {
                    let tap = tap
                        .try_clone()
                        .map_err(|e| fail(prog, format!("duplicating a tap: {e}")))?;
                    std::thread::spawn(move || drain(tap));
                }
            }
        }
    }
    let _ = out.flush();
    Ok(0)
}

/// Reads frames from a tap and discards them until it fails.
fn drain(tap: OwnedFd) {
    let mut file = File::from(tap);
    let mut frame = vec![0u8; 65536];
    while let Ok(n) = io::Read::read(&mut file, &mut frame) {
        if n == 0 {
            break;
        }
    }
}

/// Allocates `mb` MiB and writes to every page so that it is resident.
fn allocate(prog: &str, mb: u64) -> Result<Vec<u8>, Failure> {
    let size = usize::try_from(mb.saturating_mul(1 << 20))
        .map_err(|_| fail(prog, "allocation too large"))?;
    let mut memory = Vec::new();
    memory
        .try_reserve_exact(size)
        .map_err(|e| fail(prog, format!("could not allocate {mb} MB: {e}")))?;
    memory.resize(size, 0);
    for page in memory.chunks_mut(4096) {
        if let Some(first) = page.first_mut() {
            *first = 1;
        }
    }
    Ok(memory)
}

/// The messages the signal handler writes, prepared before it is installed.
static SIGNAL_MESSAGES: OnceLock<[Vec<u8>; 2]> = OnceLock::new();

fn install_signal_handlers(prog: &str, ignore_sigterm: bool) {
    SIGNAL_MESSAGES.get_or_init(|| {
        [libc::SIGINT, libc::SIGTERM]
            .map(|signal| format!("{prog}: Exiting on signal {signal}\n").into_bytes())
    });
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only calls async-signal-safe functions (write, _exit).
    unsafe {
        libc::signal(libc::SIGINT, handler);
        if ignore_sigterm {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        } else {
            libc::signal(libc::SIGTERM, handler);
        }
    }
}

/// solo5-hvt's behaviour: `Exiting on signal N` on stderr, exit status 1.
extern "C" fn on_signal(signal: libc::c_int) {
    if let Some([int, term]) = SIGNAL_MESSAGES.get() {
        let message = if signal == libc::SIGINT { int } else { term };
        // SAFETY: write(2) is async-signal-safe; the buffer is valid and never freed.
        unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
    }
    // SAFETY: _exit(2) is async-signal-safe.
    unsafe { libc::_exit(1) };
}

/// The launch record, written atomically (temporary file, then rename).
fn record(dir: &Path, args: &[String]) -> io::Result<()> {
    let pid = std::process::id();
    let link = |fd: u32| {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let affinity: Vec<u32> = available_cpus()?.into_iter().collect();
    let cwd = std::env::current_dir()?;
    let record = serde_json::json!({
        "argv": args,
        "pid": pid,
        // SAFETY: getppid and getpgid(0) have no preconditions.
        "ppid": unsafe { libc::getppid() },
        "pgid": unsafe { libc::getpgid(0) },
        "affinity": affinity,
        "cwd": cwd,
        "stdin": link(0),
        "stdout": link(1),
        "stderr": link(2),
    });
    let tmp = dir.join(format!("{pid}.json.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&record)?)?;
    std::fs::rename(&tmp, dir.join(format!("{pid}.json")))
}
