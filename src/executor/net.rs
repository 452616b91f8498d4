//! Tap devices attached to bridges (`spec/unikernel-and-executor.md` §3.3.7, §4.3).
//!
//! [`Network`] is the executor's view of the host network; [`HostNetwork`] implements it
//! with ioctls and sysfs reads only (no `ip`, no shell):
//! - a tap is created with `TUNSETIFF` (`IFF_TAP | IFF_NO_PI | IFF_TUN_EXCL`) on
//!   `/dev/net/tun` and kept with `TUNSETPERSIST`, brought up with
//!   `SIOCGIFFLAGS`/`SIOCSIFFLAGS` and attached with `SIOCBRADDIF`;
//! - it is removed by attaching to it again and clearing `TUNSETPERSIST`;
//! - taps are named `vmmtap<N>` with the smallest unused N, as albatross names them;
//! - a bridge exists if `/sys/class/net/<bridge>/bridge` does.
//!
//! [`FakeNetwork`] records calls for executor tests without root.
//!
//! Interface names from certificates (bridges) become [`InterfaceName`]s, checked before
//! any syscall sees them.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Longest interface name: `IFNAMSIZ` (16) less the terminating NUL.
pub const MAX_INTERFACE_NAME_LEN: usize = 15;

/// Prefix of the taps petrel creates (albatross's `vmmtap<N>`).
pub const TAP_PREFIX: &str = "vmmtap";

/// Attempts at creating a tap when the chosen name is taken between listing and
/// creation (another process creating taps at the same time).
pub const MAX_TAP_ATTEMPTS: usize = 16;

/// Where sysfs shows the network interfaces of the current network namespace.
pub const SYSFS_NET: &str = "/sys/class/net";

/// The tun/tap clone device.
pub const TUN_DEVICE: &str = "/dev/net/tun";

/// `SIOCBRADDIF` from `linux/sockios.h` (missing from the libc crate on Linux).
const SIOCBRADDIF: libc::Ioctl = 0x89a2;

/// Network errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// An interface name that is not a valid Linux interface name.
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The interface does not exist (albatross's text for a missing bridge).
    #[error("interface {0} does not exist")]
    NoSuchInterface(InterfaceName),
    /// The interface exists but is not a bridge.
    #[error("interface {0} is not a bridge")]
    NotABridge(InterfaceName),
    /// The tap to remove does not exist.
    #[error("tap {0} does not exist")]
    NoSuchTap(InterfaceName),
    /// No tap name could be allocated.
    #[error("could not allocate a tap name after {attempts} attempts", attempts = MAX_TAP_ATTEMPTS)]
    NoFreeTap,
    /// A system call failed.
    #[error("{op} {name}: {source}")]
    Syscall {
        /// What was attempted.
        op: &'static str,
        /// The interface (or device) concerned.
        name: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// [`FakeNetwork`] was told to fail this operation.
    #[error("injected failure of {0}")]
    Injected(NetOp),
}

/// A valid Linux interface name: 1 to 15 octets, no `/`, NUL, whitespace or `:`, not `.`
/// or `..`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterfaceName(String);

impl InterfaceName {
    /// Checks a name (typically a bridge named in a certificate).
    pub fn parse(name: &str) -> Result<Self, NetError> {
        let invalid = |reason| NetError::InvalidName {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("empty"));
        }
        if name.len() > MAX_INTERFACE_NAME_LEN {
            return Err(invalid("longer than 15 octets"));
        }
        if name == "." || name == ".." {
            return Err(invalid("'.' and '..' are not interface names"));
        }
        if name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
        {
            return Err(invalid("contains '/', ':', NUL or whitespace"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The tap name `vmmtap<n>`.
    pub fn tap(n: u32) -> Self {
        Self(format!("{TAP_PREFIX}{n}"))
    }

    /// N if this is `vmmtap<N>` (any digits after the prefix, as albatross parses them).
    pub fn tap_number(&self) -> Option<u32> {
        let digits = self.0.strip_prefix(TAP_PREFIX)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn c_string(&self) -> CString {
        // parse() refuses NUL, so this cannot fail; fall back to an empty name anyway.
        CString::new(self.0.as_str()).unwrap_or_default()
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The host network as the executor needs it.
pub trait Network: Send + Sync {
    /// Ok if `bridge` exists and is a bridge; `interface <br> does not exist` otherwise.
    fn check_bridge(&self, bridge: &InterfaceName) -> Result<(), NetError>;

    /// Creates a tap `vmmtap<N>` (smallest unused N), up and attached to `bridge`. On
    /// failure nothing is left behind.
    fn create_tap(&self, bridge: &InterfaceName) -> Result<InterfaceName, NetError>;

    /// Removes a tap created by [`Network::create_tap`]. Fails while a process (a running
    /// tender) still holds it open.
    fn remove_tap(&self, tap: &InterfaceName) -> Result<(), NetError>;

    /// The `vmmtap<N>` interfaces that exist, ordered by N.
    fn taps(&self) -> Result<Vec<InterfaceName>, NetError>;

    /// Every bridge of the host (the root policy's bridges), sorted by name.
    fn bridges(&self) -> Result<BTreeSet<InterfaceName>, NetError>;
}

/// The real host network of the current network namespace.
#[derive(Debug, Clone)]
pub struct HostNetwork {
    sysfs: PathBuf,
}

impl Default for HostNetwork {
    fn default() -> Self {
        Self::new()
    }
}

impl HostNetwork {
    /// Reads sysfs at [`SYSFS_NET`].
    pub fn new() -> Self {
        Self::with_sysfs(SYSFS_NET)
    }

    /// Reads sysfs at `sysfs` instead of [`SYSFS_NET`] (for a sysfs mounted from another
    /// network namespace).
    pub fn with_sysfs(sysfs: impl Into<PathBuf>) -> Self {
        Self {
            sysfs: sysfs.into(),
        }
    }

    fn try_create(&self, tap: &InterfaceName, bridge: &InterfaceName) -> Result<(), NetError> {
        let fd = open_tun(tap)?;
        let mut req = ifreq(tap);
        req.ifr_ifru.ifru_flags = tap_flags(true);
        ioctl(&fd, libc::TUNSETIFF, &mut req, "create tap", tap)?;
        // From here on the tap exists; remove it if any later step fails.
        let rest = (|| {
            // SAFETY: TUNSETPERSIST takes an integer argument.
            let rc =
                unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) };
            check(rc, "make persistent", tap)?;
            set_up(tap)?;
            attach(tap, bridge)
        })();
        if let Err(e) = rest {
            if let Err(cleanup) = unpersist(&fd, tap) {
                tracing::warn!(tap = %tap, error = %cleanup, "could not remove tap after failed creation");
            }
            return Err(e);
        }
        Ok(())
    }
}

impl Network for HostNetwork {
    fn check_bridge(&self, bridge: &InterfaceName) -> Result<(), NetError> {
        let dir = self.sysfs.join(bridge.as_str());
        if !exists(&dir, bridge)? {
            return Err(NetError::NoSuchInterface(bridge.clone()));
        }
        if !exists(&dir.join("bridge"), bridge)? {
            return Err(NetError::NotABridge(bridge.clone()));
        }
        Ok(())
    }

    fn create_tap(&self, bridge: &InterfaceName) -> Result<InterfaceName, NetError> {
        self.check_bridge(bridge)?;
        let mut used: BTreeSet<u32> = self.taps()?.iter().filter_map(|t| t.tap_number()).collect();
        for _ in 0..MAX_TAP_ATTEMPTS {
            let n = smallest_unused(&used).ok_or(NetError::NoFreeTap)?;
            let tap = InterfaceName::tap(n);
            match self.try_create(&tap, bridge) {
                Ok(()) => return Ok(tap),
                // IFF_TUN_EXCL: somebody created this name since we listed; try the next.
                Err(NetError::Syscall {
                    op: "create tap",
                    source,
                    ..
                }) if source.raw_os_error() == Some(libc::EBUSY) => {
                    used.insert(n);
                }
                Err(e) => return Err(e),
            }
        }
        Err(NetError::NoFreeTap)
    }

    fn remove_tap(&self, tap: &InterfaceName) -> Result<(), NetError> {
        if interface_index(tap) == 0 {
            return Err(NetError::NoSuchTap(tap.clone()));
        }
        let fd = open_tun(tap)?;
        let mut req = ifreq(tap);
        req.ifr_ifru.ifru_flags = tap_flags(false);
        ioctl(&fd, libc::TUNSETIFF, &mut req, "open tap", tap)?;
        unpersist(&fd, tap)
        // Closing `fd` now destroys the interface.
    }

    fn taps(&self) -> Result<Vec<InterfaceName>, NetError> {
        let mut taps: Vec<(u32, InterfaceName)> = interface_names()?
            .into_iter()
            .filter_map(|name| InterfaceName::parse(&name).ok())
            .filter_map(|name| name.tap_number().map(|n| (n, name)))
            .collect();
        taps.sort();
        Ok(taps.into_iter().map(|(_, name)| name).collect())
    }

    fn bridges(&self) -> Result<BTreeSet<InterfaceName>, NetError> {
        let syscall = |source| NetError::Syscall {
            op: "list",
            name: self.sysfs.display().to_string(),
            source,
        };
        let mut bridges = BTreeSet::new();
        for entry in std::fs::read_dir(&self.sysfs).map_err(syscall)? {
            let entry = entry.map_err(syscall)?;
            let Ok(name) = InterfaceName::parse(&entry.file_name().to_string_lossy()) else {
                continue;
            };
            if exists(&entry.path().join("bridge"), &name)? {
                bridges.insert(name);
            }
        }
        Ok(bridges)
    }
}

/// Opens the existing tap `tap` as a tender does (solo5's `tap_attach` on Linux): it
/// must exist and be up; the descriptor is attached with `TUNSETIFF`
/// (`IFF_TAP | IFF_NO_PI`). Used by the stand-in tender to prove a tap is usable.
pub fn open_tap(tap: &InterfaceName) -> Result<OwnedFd, NetError> {
    if interface_index(tap) == 0 {
        return Err(NetError::NoSuchTap(tap.clone()));
    }
    if !is_up(tap)? {
        return Err(NetError::Syscall {
            op: "open tap",
            name: tap.to_string(),
            source: io::Error::from_raw_os_error(libc::ENETDOWN),
        });
    }
    let fd = open_tun(tap)?;
    let mut req = ifreq(tap);
    req.ifr_ifru.ifru_flags = tap_flags(false);
    ioctl(&fd, libc::TUNSETIFF, &mut req, "open tap", tap)?;
    Ok(fd)
}

/// True if the interface has `IFF_UP` set.
pub fn is_up(name: &InterfaceName) -> Result<bool, NetError> {
    let sock = control_socket(name)?;
    let mut req = ifreq(name);
    ioctl(&sock, libc::SIOCGIFFLAGS, &mut req, "read flags of", name)?;
    // SAFETY: SIOCGIFFLAGS filled in the flags member.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    Ok(flags & (libc::IFF_UP as libc::c_short) != 0)
}

fn smallest_unused(used: &BTreeSet<u32>) -> Option<u32> {
    (0..=u32::MAX).find(|n| !used.contains(n)).filter(|&n| {
        // vmmtap + at most 9 digits fits in 15 octets.
        InterfaceName::tap(n).as_str().len() <= MAX_INTERFACE_NAME_LEN
    })
}

fn exists(path: &Path, name: &InterfaceName) -> Result<bool, NetError> {
    path.try_exists().map_err(|source| NetError::Syscall {
        op: "look up",
        name: name.to_string(),
        source,
    })
}

fn tap_flags(exclusive: bool) -> libc::c_short {
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
    if exclusive {
        flags |= libc::IFF_TUN_EXCL;
    }
    // The flags are below 0x10000; ifr_flags is a C short holding them bit for bit.
    flags as u16 as libc::c_short
}

fn open_tun(name: &InterfaceName) -> Result<OwnedFd, NetError> {
    let file: File = OpenOptions::new()
        .read(true)
        .write(true)
        .open(TUN_DEVICE)
        .map_err(|source| NetError::Syscall {
            op: "open",
            name: format!("{TUN_DEVICE} for {name}"),
            source,
        })?;
    Ok(file.into())
}

fn control_socket(name: &InterfaceName) -> Result<OwnedFd, NetError> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd: RawFd =
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(fd, "open control socket for", name)?;
    // SAFETY: fd is a freshly created descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &InterfaceName) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in req
        .ifr_name
        .iter_mut()
        .zip(name.as_str().bytes().take(MAX_INTERFACE_NAME_LEN))
    {
        *slot = byte as libc::c_char;
    }
    req
}

fn ioctl(
    fd: &OwnedFd,
    request: libc::Ioctl,
    req: &mut libc::ifreq,
    op: &'static str,
    name: &InterfaceName,
) -> Result<(), NetError> {
    // SAFETY: every request used here takes a pointer to a struct ifreq.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, req as *mut libc::ifreq) };
    check(rc, op, name)
}

fn check(rc: libc::c_int, op: &'static str, name: &InterfaceName) -> Result<(), NetError> {
    if rc < 0 {
        Err(NetError::Syscall {
            op,
            name: name.to_string(),
            source: io::Error::last_os_error(),
        })
    } else {
        Ok(())
    }
}

fn unpersist(fd: &OwnedFd, tap: &InterfaceName) -> Result<(), NetError> {
    // SAFETY: TUNSETPERSIST takes an integer argument.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, 0 as libc::c_ulong) };
    check(rc, "remove tap", tap)
}

fn set_up(name: &InterfaceName) -> Result<(), NetError> {
    let sock = control_socket(name)?;
    let mut req = ifreq(name);
    ioctl(&sock, libc::SIOCGIFFLAGS, &mut req, "read flags of", name)?;
    // SAFETY: SIOCGIFFLAGS filled in the flags member.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    ioctl(&sock, libc::SIOCSIFFLAGS, &mut req, "bring up", name)
}

fn attach(tap: &InterfaceName, bridge: &InterfaceName) -> Result<(), NetError> {
    let index = interface_index(tap);
    if index == 0 {
        return Err(NetError::NoSuchTap(tap.clone()));
    }
    let sock = control_socket(bridge)?;
    let mut req = ifreq(bridge);
    req.ifr_ifru.ifru_ifindex = libc::c_int::try_from(index).unwrap_or(0);
    ioctl(&sock, SIOCBRADDIF, &mut req, "attach tap to bridge", bridge)
}

fn interface_index(name: &InterfaceName) -> libc::c_uint {
    let c = name.c_string();
    // SAFETY: `c` is a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// Names of all interfaces of the current network namespace (`if_nameindex`, which asks
/// the kernel over netlink, so it sees the namespace of the calling thread).
fn interface_names() -> Result<Vec<String>, NetError> {
    // SAFETY: if_nameindex returns an array terminated by a zero entry, or NULL.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Err(NetError::Syscall {
            op: "list",
            name: "interfaces".to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    let mut names = Vec::new();
    let mut entry = list;
    // SAFETY: walking the array up to its terminating entry, then freeing it once.
    unsafe {
        while (*entry).if_index != 0 && !(*entry).if_name.is_null() {
            names.push(
                CStr::from_ptr((*entry).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
    }
    Ok(names)
}

/// One [`Network`] operation, for [`FakeNetwork::fail_on`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NetOp {
    /// [`Network::check_bridge`].
    CheckBridge,
    /// [`Network::create_tap`].
    CreateTap,
    /// [`Network::remove_tap`].
    RemoveTap,
    /// [`Network::taps`].
    Taps,
    /// [`Network::bridges`].
    Bridges,
}

impl fmt::Display for NetOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CheckBridge => "check_bridge",
            Self::CreateTap => "create_tap",
            Self::RemoveTap => "remove_tap",
            Self::Taps => "taps",
            Self::Bridges => "bridges",
        })
    }
}

/// A call recorded by [`FakeNetwork`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetCall {
    /// `check_bridge(bridge)`.
    CheckBridge(InterfaceName),
    /// `create_tap(bridge)`.
    CreateTap(InterfaceName),
    /// `remove_tap(tap)`.
    RemoveTap(InterfaceName),
    /// `taps()`.
    Taps,
    /// `bridges()`.
    Bridges,
}

/// A recording [`Network`] for tests: it knows the bridges it is told about, allocates
/// tap names as the host does, records every call and fails the operations it is told
/// to fail.
#[derive(Debug, Default)]
pub struct FakeNetwork {
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    bridges: BTreeSet<InterfaceName>,
    taps: BTreeMap<u32, InterfaceName>,
    calls: Vec<NetCall>,
    failing: BTreeSet<NetOp>,
}

impl FakeNetwork {
    /// A fake with these bridges.
    ///
    /// # Panics
    /// On an invalid bridge name.
    pub fn with_bridges(bridges: &[&str]) -> Self {
        let fake = Self::default();
        for bridge in bridges {
            fake.add_bridge(bridge);
        }
        fake
    }

    /// Makes `bridge` exist.
    ///
    /// # Panics
    /// On an invalid bridge name.
    #[allow(clippy::expect_used)]
    pub fn add_bridge(&self, bridge: &str) {
        let bridge = InterfaceName::parse(bridge).expect("valid bridge name");
        self.lock().bridges.insert(bridge);
    }

    /// Makes every later call of `op` fail with [`NetError::Injected`].
    pub fn fail_on(&self, op: NetOp) {
        self.lock().failing.insert(op);
    }

    /// Stops failing `op`.
    pub fn stop_failing(&self, op: NetOp) {
        self.lock().failing.remove(&op);
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<NetCall> {
        self.lock().calls.clone()
    }

    /// The bridge `tap` is attached to, if the tap exists.
    pub fn bridge_of(&self, tap: &InterfaceName) -> Option<InterfaceName> {
        let n = tap.tap_number()?;
        self.lock().taps.get(&n).cloned()
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl FakeState {
    fn enter(&mut self, call: NetCall, op: NetOp) -> Result<(), NetError> {
        self.calls.push(call);
        if self.failing.contains(&op) {
            Err(NetError::Injected(op))
        } else {
            Ok(())
        }
    }

    fn check_bridge(&self, bridge: &InterfaceName) -> Result<(), NetError> {
        if self.bridges.contains(bridge) {
            Ok(())
        } else {
            Err(NetError::NoSuchInterface(bridge.clone()))
        }
    }
}

impl Network for FakeNetwork {
    fn check_bridge(&self, bridge: &InterfaceName) -> Result<(), NetError> {
        let mut state = self.lock();
        state.enter(NetCall::CheckBridge(bridge.clone()), NetOp::CheckBridge)?;
        state.check_bridge(bridge)
    }

    fn create_tap(&self, bridge: &InterfaceName) -> Result<InterfaceName, NetError> {
        let mut state = self.lock();
        state.enter(NetCall::CreateTap(bridge.clone()), NetOp::CreateTap)?;
        state.check_bridge(bridge)?;
        let used: BTreeSet<u32> = state.taps.keys().copied().collect();
        let n = smallest_unused(&used).ok_or(NetError::NoFreeTap)?;
        state.taps.insert(n, bridge.clone());
        Ok(InterfaceName::tap(n))
    }

    fn remove_tap(&self, tap: &InterfaceName) -> Result<(), NetError> {
        let mut state = self.lock();
        state.enter(NetCall::RemoveTap(tap.clone()), NetOp::RemoveTap)?;
        let removed = tap.tap_number().and_then(|n| state.taps.remove(&n));
        match removed {
            Some(_) => Ok(()),
            None => Err(NetError::NoSuchTap(tap.clone())),
        }
    }

    fn taps(&self) -> Result<Vec<InterfaceName>, NetError> {
        let mut state = self.lock();
        state.enter(NetCall::Taps, NetOp::Taps)?;
        Ok(state.taps.keys().map(|&n| InterfaceName::tap(n)).collect())
    }

    fn bridges(&self) -> Result<BTreeSet<InterfaceName>, NetError> {
        let mut state = self.lock();
        state.enter(NetCall::Bridges, NetOp::Bridges)?;
        Ok(state.bridges.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> InterfaceName {
        InterfaceName::parse(s).unwrap()
    }

    #[test]
    fn interface_names_validated() {
        for good in ["br0", "a", "service-net.1", "123456789012345", "vmmtap0"] {
            assert_eq!(InterfaceName::parse(good).unwrap().as_str(), good);
        }
        let cases = [
            ("", "invalid interface name \"\": empty"),
            (
                "1234567890123456",
                "invalid interface name \"1234567890123456\": longer than 15 octets",
            ),
            (
                ".",
                "invalid interface name \".\": '.' and '..' are not interface names",
            ),
            (
                "..",
                "invalid interface name \"..\": '.' and '..' are not interface names",
            ),
            (
                "a/b",
                "invalid interface name \"a/b\": contains '/', ':', NUL or whitespace",
            ),
            (
                "a:b",
                "invalid interface name \"a:b\": contains '/', ':', NUL or whitespace",
            ),
            (
                "a b",
                "invalid interface name \"a b\": contains '/', ':', NUL or whitespace",
            ),
            (
                "a\tb",
                "invalid interface name \"a\\tb\": contains '/', ':', NUL or whitespace",
            ),
            (
                "a\0b",
                "invalid interface name \"a\\0b\": contains '/', ':', NUL or whitespace",
            ),
            // 5 characters but 16 octets.
            (
                "ééééééé€",
                "invalid interface name \"ééééééé€\": longer than 15 octets",
            ),
        ];
        for (input, text) in cases {
            assert_eq!(InterfaceName::parse(input).unwrap_err().to_string(), text);
        }
    }

    #[test]
    fn tap_names_and_numbers() {
        assert_eq!(InterfaceName::tap(0).as_str(), "vmmtap0");
        assert_eq!(InterfaceName::tap(42).tap_number(), Some(42));
        assert_eq!(name("vmmtap007").tap_number(), Some(7));
        assert_eq!(name("vmmtap").tap_number(), None);
        assert_eq!(name("vmmtapx").tap_number(), None);
        assert_eq!(name("vmmtap-1").tap_number(), None);
        assert_eq!(name("tap0").tap_number(), None);
        assert_eq!(name("vmmtap999999999").tap_number(), Some(999_999_999));
    }

    #[test]
    fn smallest_unused_fills_gaps() {
        assert_eq!(smallest_unused(&BTreeSet::new()), Some(0));
        assert_eq!(smallest_unused(&[0, 1, 3].into()), Some(2));
        assert_eq!(smallest_unused(&[1, 2].into()), Some(0));
    }

    #[test]
    fn tap_flags_are_the_kernel_values() {
        assert_eq!(tap_flags(false), 0x1002);
        assert_eq!(tap_flags(true) as u16, 0x9002);
    }

    #[test]
    fn fake_allocates_records_and_fails() {
        let fake = FakeNetwork::with_bridges(&["br0"]);
        let br0 = name("br0");
        assert_eq!(fake.check_bridge(&br0).unwrap(), ());
        assert_eq!(
            fake.check_bridge(&name("br1")).unwrap_err().to_string(),
            "interface br1 does not exist"
        );
        assert_eq!(fake.create_tap(&br0).unwrap(), name("vmmtap0"));
        assert_eq!(fake.create_tap(&br0).unwrap(), name("vmmtap1"));
        assert_eq!(fake.bridge_of(&name("vmmtap1")), Some(br0.clone()));
        fake.remove_tap(&name("vmmtap0")).unwrap();
        assert_eq!(fake.taps().unwrap(), vec![name("vmmtap1")]);
        assert_eq!(fake.create_tap(&br0).unwrap(), name("vmmtap0"));
        assert_eq!(
            fake.remove_tap(&name("vmmtap5")).unwrap_err().to_string(),
            "tap vmmtap5 does not exist"
        );
        fake.fail_on(NetOp::CreateTap);
        assert_eq!(
            fake.create_tap(&br0).unwrap_err().to_string(),
            "injected failure of create_tap"
        );
        fake.stop_failing(NetOp::CreateTap);
        assert_eq!(
            fake.create_tap(&name("nope")).unwrap_err().to_string(),
            "interface nope does not exist"
        );
        assert_eq!(
            fake.calls(),
            vec![
                NetCall::CheckBridge(br0.clone()),
                NetCall::CheckBridge(name("br1")),
                NetCall::CreateTap(br0.clone()),
                NetCall::CreateTap(br0.clone()),
                NetCall::RemoveTap(name("vmmtap0")),
                NetCall::Taps,
                NetCall::CreateTap(br0.clone()),
                NetCall::RemoveTap(name("vmmtap5")),
                NetCall::CreateTap(br0.clone()),
                NetCall::CreateTap(name("nope")),
            ]
        );
    }

    #[test]
    fn host_network_missing_bridge_from_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("br0/bridge")).unwrap();
        std::fs::create_dir_all(dir.path().join("eth0")).unwrap();
        let net = HostNetwork::with_sysfs(dir.path());
        net.check_bridge(&name("br0")).unwrap();
        assert_eq!(
            net.check_bridge(&name("br9")).unwrap_err().to_string(),
            "interface br9 does not exist"
        );
        assert_eq!(
            net.check_bridge(&name("eth0")).unwrap_err().to_string(),
            "interface eth0 is not a bridge"
        );
        // create_tap checks the bridge first, before any ioctl.
        assert_eq!(
            net.create_tap(&name("br9")).unwrap_err().to_string(),
            "interface br9 does not exist"
        );
    }
}
