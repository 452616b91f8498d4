//! Private network namespaces for tests that need root: real bridges and taps that never
//! touch the host's interfaces.

use std::ffi::CString;
use std::path::Path;

/// Why a test that needs a network namespace cannot run here, if it cannot.
pub fn skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root");
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing");
    }
    None
}

/// Runs `f` on a thread of its own in fresh network and mount namespaces, with sysfs
/// remounted so `/sys/class/net` shows the new namespace; everything in them disappears
/// when the thread ends (and tenders spawned from it die with it).
pub fn in_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: unshare and mount affect only this thread (CLONE_NEWNS implies
                // CLONE_FS, so it gets its own filesystem context).
                unsafe {
                    assert_eq!(libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS), 0);
                    let root = CString::new("/").unwrap();
                    assert_eq!(
                        libc::mount(
                            std::ptr::null(),
                            root.as_ptr(),
                            std::ptr::null(),
                            libc::MS_REC | libc::MS_PRIVATE,
                            std::ptr::null()
                        ),
                        0
                    );
                    let sysfs = CString::new("sysfs").unwrap();
                    let sys = CString::new("/sys").unwrap();
                    assert_eq!(
                        libc::mount(
                            sysfs.as_ptr(),
                            sys.as_ptr(),
                            sysfs.as_ptr(),
                            0,
                            std::ptr::null()
                        ),
                        0
                    );
                }
                f()
            })
            .join()
            .unwrap()
    })
}
