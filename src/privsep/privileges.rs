//! Dropping root for good: the TLS worker's identity (`--user`, `--group`), the drop itself,
//! and the check that nothing is left before it serves.

use std::ffi::{CStr, CString};
use std::io;
use std::path::Path;

use super::PrivsepError;

/// Size of the buffer `getpwnam_r`/`getgrnam_r` fill; grown on `ERANGE` up to
/// [`MAX_NSS_BUFFER`].
const NSS_BUFFER: usize = 4096;

/// Largest buffer tried for one passwd or group entry (a group with thousands of members).
pub const MAX_NSS_BUFFER: usize = 1024 * 1024;

/// Who the TLS worker runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user's name (or the number given).
    pub user: String,
    /// Its user id (never 0).
    pub uid: u32,
    /// The group id (never 0): `--group`, or the user's primary group.
    pub gid: u32,
}

impl Identity {
    /// Looks up `user` (a name or a number) and `group` (a name or a number; default the
    /// user's primary group). Root (uid or gid 0) is refused: the point is to drop it.
    pub fn resolve(user: &str, group: Option<&str>) -> Result<Self, PrivsepError> {
        let (uid, primary) = match lookup_user(user)? {
            Some(found) => found,
            None => match user.parse::<u32>() {
                Ok(uid) => (uid, uid),
                Err(_) => return Err(PrivsepError::UnknownUser(user.to_owned())),
            },
        };
        let gid = match group {
            None => primary,
            Some(group) => match lookup_group(group)? {
                Some(gid) => gid,
                None => group
                    .parse::<u32>()
                    .map_err(|_| PrivsepError::UnknownGroup(group.to_owned()))?,
            },
        };
        if uid == 0 || gid == 0 {
            return Err(PrivsepError::RootIdentity(user.to_owned()));
        }
        Ok(Self {
            user: user.to_owned(),
            uid,
            gid,
        })
    }
}

fn lookup_user(name: &str) -> Result<Option<(u32, u32)>, PrivsepError> {
    // SAFETY: the arguments are those `nss_lookup` promises: valid pointers and the
    // buffer's length.
    nss_lookup(
        name,
        |c_name, entry: &mut libc::passwd, buf, len, result| unsafe {
            libc::getpwnam_r(c_name, entry, buf, len, result)
        },
    )
    .map(|found| found.map(|entry| (entry.pw_uid, entry.pw_gid)))
}

fn lookup_group(name: &str) -> Result<Option<u32>, PrivsepError> {
    // SAFETY: as in `lookup_user`.
    nss_lookup(
        name,
        |c_name, entry: &mut libc::group, buf, len, result| unsafe {
            libc::getgrnam_r(c_name, entry, buf, len, result)
        },
    )
    .map(|found| found.map(|entry| entry.gr_gid))
}

/// Calls a reentrant NSS lookup (`getpwnam_r`, `getgrnam_r`) for `name` with a buffer
/// grown on `ERANGE` up to [`MAX_NSS_BUFFER`]. The entry is returned only for its numeric
/// fields: its string pointers point into a buffer that is gone afterwards.
fn nss_lookup<E>(
    name: &str,
    call: impl Fn(*const libc::c_char, &mut E, *mut libc::c_char, usize, *mut *mut E) -> libc::c_int,
) -> Result<Option<E>, PrivsepError> {
    let Ok(c_name) = CString::new(name) else {
        return Ok(None);
    };
    let mut size = NSS_BUFFER;
    loop {
        let mut buf: Vec<libc::c_char> = vec![0; size];
        // SAFETY: `E` is `passwd` or `group`, plain C structs for which all-zero is a valid
        // value for the lookup to fill.
        let mut entry: E = unsafe { std::mem::zeroed() };
        let mut result: *mut E = std::ptr::null_mut();
        let rc = call(
            c_name.as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        match rc {
            0 if result.is_null() => return Ok(None),
            0 => return Ok(Some(entry)),
            libc::ERANGE if size < MAX_NSS_BUFFER => size *= 2,
            e => {
                return Err(PrivsepError::Lookup(
                    name.to_owned(),
                    io::Error::from_raw_os_error(e).to_string(),
                ));
            }
        }
    }
}

/// Drops every privilege of this (single-threaded) process for good: empties the
/// capability bounding set (where permitted), changes root to the empty directory `root`,
/// clears the supplementary groups, sets real, effective and saved group and user ids
/// to `identity` (which clears the permitted, effective and ambient capabilities), then
/// sets `PR_SET_NO_NEW_PRIVS` and makes the process non-dumpable. Call it before any
/// thread starts: the ids change only for the calling thread's process while no other
/// thread exists.
pub fn drop_privileges(identity: &Identity, root: &Path) -> Result<(), PrivsepError> {
    let fail =
        |what: &'static str| PrivsepError::Drop(what, io::Error::last_os_error().to_string());
    drop_bounding_set();
    let root = CString::new(root.as_os_str().as_encoded_bytes())
        .map_err(|_| PrivsepError::Drop("chroot", "NUL in the path".to_owned()))?;
    // SAFETY: chroot and chdir with NUL-terminated paths.
    unsafe {
        if libc::chroot(root.as_ptr()) != 0 {
            return Err(fail("chroot"));
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            return Err(fail("chdir"));
        }
    }
    // SAFETY: plain system calls with integer arguments (setgroups with an empty list).
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(fail("setgroups"));
        }
        if libc::setresgid(identity.gid, identity.gid, identity.gid) != 0 {
            return Err(fail("setresgid"));
        }
        if libc::setresuid(identity.uid, identity.uid, identity.uid) != 0 {
            return Err(fail("setresuid"));
        }
        // Cleared by the uid change already; said explicitly.
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ) != 0
        {
            return Err(fail("clearing the ambient capabilities"));
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(fail("PR_SET_NO_NEW_PRIVS"));
        }
        // Other processes of the same user may not ptrace it or read its memory.
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            return Err(fail("PR_SET_DUMPABLE"));
        }
    }
    Ok(())
}

/// Removes every capability from the bounding set, so that not even an exec of a
/// set-uid-root binary could regain one (`PR_SET_NO_NEW_PRIVS` already forbids it).
/// Needs `CAP_SETPCAP`; without it (a container that lacks it) the set stays as it was.
fn drop_bounding_set() {
    let mut cap: libc::c_ulong = 0;
    // Capability numbers are small; the kernel answers EINVAL past the last one.
    while cap < 64 {
        // SAFETY: prctl with integer arguments.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            break;
        }
        cap += 1;
    }
}

/// Checks `/proc/self/status` text after the drop: every user and group id non-zero, no
/// permitted, effective or ambient capability, `NoNewPrivs: 1`. The worker refuses to
/// serve otherwise.
pub fn check_dropped(status: &str) -> Result<(), PrivsepError> {
    let field = |name: &str| -> Result<&str, PrivsepError> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .ok_or_else(|| PrivsepError::StillPrivileged(format!("no {name} in /proc/self/status")))
    };
    for ids in ["Uid", "Gid"] {
        let value = field(ids)?;
        if value.split_whitespace().any(|id| id == "0") || value.is_empty() {
            return Err(PrivsepError::StillPrivileged(format!("{ids}: {value}")));
        }
    }
    for caps in ["CapPrm", "CapEff", "CapAmb"] {
        let value = field(caps)?;
        if u64::from_str_radix(value, 16) != Ok(0) {
            return Err(PrivsepError::StillPrivileged(format!("{caps}: {value}")));
        }
    }
    let value = field("NoNewPrivs")?;
    if value != "1" {
        return Err(PrivsepError::StillPrivileged(format!(
            "NoNewPrivs: {value}"
        )));
    }
    // SAFETY: getuid and geteuid have no preconditions.
    let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    if uid == 0 || euid == 0 {
        return Err(PrivsepError::StillPrivileged(format!(
            "uid {uid}, euid {euid}"
        )));
    }
    Ok(())
}

/// The name of the current user id, for messages (`None` if it has none).
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf: Vec<libc::c_char> = vec![0; NSS_BUFFER];
    // SAFETY: an all-zero passwd is a valid buffer for getpwuid_r to fill.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` has its length.
    let rc = unsafe { libc::getpwuid_r(uid, &mut entry, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_name points at a NUL-terminated string in `buf`.
    Some(
        unsafe { CStr::from_ptr(entry.pw_name) }
            .to_string_lossy()
            .into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DROPPED: &str = "Name:\tpetrel-endpoint\nUmask:\t0022\nState:\tS (sleeping)\n\
        Uid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\n\
        Groups:\t\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\n\
        CapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\n\
        NoNewPrivs:\t1\nSeccomp:\t0\n";

    #[test]
    fn status_checks() {
        // The ids are checked against the status text; the process's own (root in CI or
        // not) is checked last, so only the text cases are asserted for every caller.
        let check = |text: &str| match check_dropped(text) {
            Err(PrivsepError::StillPrivileged(what)) => what,
            other => format!("{other:?}"),
        };
        assert_eq!(
            check(&DROPPED.replace("Uid:\t65534\t65534\t65534", "Uid:\t65534\t0\t65534")),
            "Uid: 65534\t0\t65534\t65534"
        );
        assert_eq!(
            check(&DROPPED.replace("Gid:\t65534", "Gid:\t0")),
            "Gid: 0\t65534\t65534\t65534"
        );
        assert_eq!(
            check(&DROPPED.replace("CapEff:\t0000000000000000", "CapEff:\t0000000000001000")),
            "CapEff: 0000000000001000"
        );
        assert_eq!(
            check(&DROPPED.replace("CapPrm:\t0000000000000000", "CapPrm:\t000001ffffffffff")),
            "CapPrm: 000001ffffffffff"
        );
        assert_eq!(
            check(&DROPPED.replace("CapAmb:\t0000000000000000", "CapAmb:\t0000000000000400")),
            "CapAmb: 0000000000000400"
        );
        assert_eq!(
            check(&DROPPED.replace("NoNewPrivs:\t1", "NoNewPrivs:\t0")),
            "NoNewPrivs: 0"
        );
        assert_eq!(
            check(&DROPPED.replace("CapAmb", "Cap")),
            "no CapAmb in /proc/self/status"
        );
        // SAFETY: getuid has no preconditions.
        let root = unsafe { libc::getuid() } == 0;
        let own = check_dropped(DROPPED);
        if root {
            assert_eq!(
                own.unwrap_err().to_string(),
                "still privileged: uid 0, euid 0"
            );
        } else {
            assert!(own.is_ok());
        }
    }

    #[test]
    fn identities() {
        let nobody = Identity::resolve("nobody", None);
        if let Ok(nobody) = &nobody {
            assert_ne!(nobody.uid, 0);
            assert_eq!(user_name(nobody.uid).as_deref(), Some("nobody"));
            // Debian's group of nobody, looked up by name.
            if let Ok(with_group) = Identity::resolve("nobody", Some("nogroup")) {
                assert_eq!(with_group.uid, nobody.uid);
                assert_eq!(with_group.gid, 65534);
            }
        }
        assert_eq!(
            Identity::resolve("nobody", Some("no-such-group-here"))
                .unwrap_err()
                .to_string()
                .contains("no-such-group-here"),
            nobody.is_ok()
        );
        assert_eq!(
            Identity::resolve("4242", Some("4343")),
            Ok(Identity {
                user: "4242".to_owned(),
                uid: 4242,
                gid: 4343
            })
        );
        assert_eq!(
            Identity::resolve("root", None).unwrap_err().to_string(),
            "--user root: the TLS worker must not run as root (uid or gid 0)"
        );
        assert_eq!(
            Identity::resolve("4242", Some("0"))
                .unwrap_err()
                .to_string(),
            "--user 4242: the TLS worker must not run as root (uid or gid 0)"
        );
        assert_eq!(
            Identity::resolve("no-such-user-here", None)
                .unwrap_err()
                .to_string(),
            "--user no-such-user-here: no such user"
        );
        assert_eq!(
            Identity::resolve("4242", Some("no-such-group-here"))
                .unwrap_err()
                .to_string(),
            "--group no-such-group-here: no such group"
        );
    }
}
