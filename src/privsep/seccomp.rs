//! The TLS worker's system call filter (seccomp-bpf): after the worker has dropped its
//! privileges, the system calls it never needs, and that widen what a compromised worker
//! could reach in the kernel, fail with `EPERM`.
//!
//! The filter is a deny list, not an allow list: the worker's system calls come from
//! tokio, OpenSSL and the C library, whose exact set changes between versions, and a
//! missing entry in an allow list would kill a legitimate worker. A denied call answers
//! `EPERM`, so code that tries one gets an error, never a crash. What is denied:
//!
//! - running other programs (`execve`, `execveat`);
//! - new sockets (`socket`; the worker serves its inherited listener and control channel,
//!   and makes request sockets with `socketpair`, which stays allowed): no outgoing
//!   connections, no netlink, packet or crypto sockets;
//! - other processes' memory (`ptrace`, `process_vm_readv`, `process_vm_writev`);
//! - namespaces, mounts and roots (`unshare`, `setns`, `mount`, `umount2`, `pivot_root`,
//!   `chroot`, and the new mount API);
//! - identities and capabilities (the `set*id` family, `setgroups`, `capset`);
//! - the kernel interfaces behind many local privilege escalations (`bpf`,
//!   `perf_event_open`, `userfaultfd`, `io_uring_*`, `keyctl` and the key calls,
//!   `open_by_handle_at`, `personality`, device nodes);
//! - host administration (modules, `kexec`, `reboot`, swap, `acct`, quotas, the clock, the
//!   host name, the kernel log).
//!
//! A system call made with another architecture's convention (x86's 32-bit `int 0x80`,
//! or the x32 ABI) could bypass a deny list by number; the filter kills the process on
//! any architecture but the one it was built for and denies every x32 call.

use std::io;

use super::PrivsepError;

// Classic BPF instruction fields (linux/bpf_common.h) and offsets into `struct
// seccomp_data` (linux/seccomp.h): kernel ABI constants.
const BPF_LD: u16 = 0x00;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_JMP: u16 = 0x05;
const BPF_JEQ: u16 = 0x10;
const BPF_JGE: u16 = 0x30;
const BPF_K: u16 = 0x00;
const BPF_RET: u16 = 0x06;
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

/// `AUDIT_ARCH_*` (linux/audit.h) of the architecture petrel was built for.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// The x32 ABI's system call numbers carry this bit (x86_64 only).
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Whether this build has a filter for its architecture.
pub const AVAILABLE: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// The denied system calls (see the module documentation).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn denied() -> Vec<libc::c_long> {
    let mut calls = vec![
        // Other programs.
        libc::SYS_execve,
        libc::SYS_execveat,
        // New sockets.
        libc::SYS_socket,
        // Other processes.
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        // Namespaces, mounts, roots.
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_fsconfig,
        libc::SYS_fspick,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_mount_setattr,
        // Identities and capabilities.
        libc::SYS_setuid,
        libc::SYS_setgid,
        libc::SYS_setreuid,
        libc::SYS_setregid,
        libc::SYS_setresuid,
        libc::SYS_setresgid,
        libc::SYS_setfsuid,
        libc::SYS_setfsgid,
        libc::SYS_setgroups,
        libc::SYS_capset,
        // Kernel interfaces behind many escalations.
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_personality,
        libc::SYS_mknodat,
        // Host administration.
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_sethostname,
        libc::SYS_setdomainname,
        libc::SYS_syslog,
        libc::SYS_vhangup,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        libc::SYS_mknod,
        libc::SYS_ioperm,
        libc::SYS_iopl,
        libc::SYS_modify_ldt,
        libc::SYS_uselib,
    ]);
    calls
}

fn statement(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The filter program: check the architecture, deny x32 calls (x86_64), deny each listed
/// call with `EPERM`, allow the rest.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn program() -> Vec<libc::sock_filter> {
    let deny = libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32 & libc::SECCOMP_RET_DATA);
    let mut prog = vec![
        statement(BPF_LD | BPF_W | BPF_ABS, DATA_ARCH),
        jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH, 1, 0),
        statement(BPF_RET | BPF_K, libc::SECCOMP_RET_KILL_PROCESS),
        statement(BPF_LD | BPF_W | BPF_ABS, DATA_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    prog.extend([
        jump(BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, 0, 1),
        statement(BPF_RET | BPF_K, deny),
    ]);
    for call in denied() {
        // System call numbers are small and non-negative.
        let nr = u32::try_from(call).unwrap_or(u32::MAX);
        prog.push(jump(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1));
        prog.push(statement(BPF_RET | BPF_K, deny));
    }
    prog.push(statement(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW));
    prog
}

/// Installs `program` for every thread of this process (`SECCOMP_FILTER_FLAG_TSYNC`).
/// Needs `PR_SET_NO_NEW_PRIVS` (set by [`super::privileges::drop_privileges`]) or
/// `CAP_SYS_ADMIN`. A filter cannot be removed; later filters can only deny more.
pub fn install(program: &[libc::sock_filter]) -> Result<(), PrivsepError> {
    let len = u16::try_from(program.len())
        .map_err(|_| PrivsepError::Drop("seccomp", "filter program too long".to_owned()))?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: the seccomp system call with a pointer to a filter program that outlives the
    // call; the kernel copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &raw const fprog,
        )
    };
    if rc != 0 {
        return Err(PrivsepError::Drop(
            "seccomp",
            io::Error::last_os_error().to_string(),
        ));
    }
    Ok(())
}

/// Installs the TLS worker's filter where this build has one for its architecture.
/// Returns whether a filter was installed.
pub fn restrict() -> Result<bool, PrivsepError> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        install(&program())?;
        Ok(true)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        Ok(false)
    }
}

/// Checks `/proc/self/status` text for an installed filter (`Seccomp: 2`).
pub fn check_filtered(status: &str) -> Result<(), PrivsepError> {
    let mode = status
        .lines()
        .find_map(|line| line.strip_prefix("Seccomp:"))
        .map(str::trim);
    match mode {
        Some("2") => Ok(()),
        Some(other) => Err(PrivsepError::StillPrivileged(format!(
            "seccomp mode {other}, not 2 (filter)"
        ))),
        None => Err(PrivsepError::StillPrivileged(
            "no Seccomp in /proc/self/status".to_owned(),
        )),
    }
}

#[cfg(all(test, any(target_arch = "x86_64", target_arch = "aarch64")))]
mod tests {
    use super::*;

    #[test]
    fn status_check() {
        assert!(check_filtered("Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t1\n").is_ok());
        assert!(check_filtered("Seccomp:\t0\n").is_err());
        assert!(check_filtered("Name:\tx\n").is_err());
    }

    #[test]
    fn program_shape() {
        let prog = program();
        // Architecture check first, allow last, one test and one return per denied call.
        assert_eq!(prog[0].k, DATA_ARCH);
        assert_eq!(prog[1].k, AUDIT_ARCH);
        assert_eq!(prog[2].k, libc::SECCOMP_RET_KILL_PROCESS);
        assert_eq!(prog.last().map(|s| s.k), Some(libc::SECCOMP_RET_ALLOW));
        let x32 = if cfg!(target_arch = "x86_64") { 2 } else { 0 };
        assert_eq!(prog.len(), 4 + x32 + 2 * denied().len() + 1);
        assert!(u16::try_from(prog.len()).is_ok());
    }

    /// In a forked child (the filter cannot be removed): after the filter, `socket` and
    /// `execve` fail with EPERM while `socketpair`, reads and writes still work.
    #[test]
    fn denies_in_a_child() {
        let prog = program();
        let path = c"/bin/true";
        let argv = [path.as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null::<libc::c_char>()];
        // SAFETY: the child only makes system calls (no allocation, no locks) and leaves
        // with _exit; the parent waits for it.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork");
            if pid == 0 {
                let errno = || *libc::__errno_location();
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    libc::_exit(10);
                }
                let fprog = libc::sock_fprog {
                    len: prog.len() as u16,
                    filter: prog.as_ptr().cast_mut(),
                };
                if libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &raw const fprog,
                ) != 0
                {
                    libc::_exit(11);
                }
                if libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) != -1 || errno() != libc::EPERM
                {
                    libc::_exit(12);
                }
                if libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, 0) != -1 || errno() != libc::EPERM
                {
                    libc::_exit(13);
                }
                let mut pair = [0; 2];
                if libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) != 0 {
                    libc::_exit(14);
                }
                if libc::write(pair[0], b"x".as_ptr().cast(), 1) != 1 {
                    libc::_exit(15);
                }
                if libc::unshare(libc::CLONE_NEWUSER) != -1 || errno() != libc::EPERM {
                    libc::_exit(16);
                }
                libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                if errno() != libc::EPERM {
                    libc::_exit(17);
                }
                libc::_exit(0);
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            assert!(libc::WIFEXITED(status), "child status {status:#x}");
            assert_eq!(
                libc::WEXITSTATUS(status),
                0,
                "failed step (see the exit codes)"
            );
        }
    }
}
