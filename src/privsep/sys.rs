//! The system calls privilege separation needs, each wrapped once: socket pairs,
//! descriptor passing (`SCM_RIGHTS`), socket kinds, memfds and descriptor duplication.
//! Nothing here interprets what it moves; [`super::control`] does.

use std::ffi::CStr;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Most descriptors one control packet may carry; a request carries one. Room for a few
/// more lets the receiver see (and close) descriptors a misbehaving sender attached
/// instead of having the kernel truncate silently.
pub const MAX_PASSED_FDS: usize = 4;

/// Control buffer for [`MAX_PASSED_FDS`] descriptors, 8-octet aligned as `cmsghdr`
/// requires (`CMSG_SPACE(4 * 4)` is 32 on 64-bit Linux; 64 leaves room everywhere).
type ControlBuffer = [u64; 8];

/// A packet received with [`recv_packet`].
#[derive(Debug)]
pub struct Packet {
    /// Octets of payload received (0 with no descriptors: the peer closed).
    pub len: usize,
    /// The payload or the descriptors did not fit (`MSG_TRUNC` / `MSG_CTRUNC`).
    pub truncated: bool,
    /// The descriptors attached (`SCM_RIGHTS`), now owned by the receiver.
    pub fds: Vec<OwnedFd>,
}

/// `socketpair(AF_UNIX, kind | SOCK_CLOEXEC)`.
pub fn socket_pair(kind: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [libc::c_int; 2] = [-1, -1];
    // SAFETY: socketpair writes two descriptors into the two-element array.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            kind | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let [a, b] = fds;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(a), OwnedFd::from_raw_fd(b)) })
}

/// Sends `bytes` as one packet on `socket`, with `attach` passed along (`SCM_RIGHTS`).
pub fn send_packet(socket: RawFd, bytes: &[u8], attach: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    let mut buffer: ControlBuffer = [0; 8];
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = attach {
        let fd_len = u32::try_from(size_of::<libc::c_int>()).unwrap_or(4);
        // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes.
        let (space, len) = unsafe { (libc::CMSG_SPACE(fd_len), libc::CMSG_LEN(fd_len)) };
        msg.msg_control = buffer.as_mut_ptr().cast();
        msg.msg_controllen = usize::try_from(space).unwrap_or(0);
        // SAFETY: the control buffer is aligned, zeroed and at least CMSG_SPACE(4) long,
        // so CMSG_FIRSTHDR returns a valid header inside it whose data has room for one
        // descriptor.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            if cmsg.is_null() {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = usize::try_from(len).unwrap_or(0);
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd.as_raw_fd());
        }
    }
    // SAFETY: `msg` points at the iovec and control buffer above, alive for the call.
    let sent = unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) };
    match usize::try_from(sent) {
        Ok(n) if n == bytes.len() => Ok(()),
        Ok(_) => Err(io::Error::new(io::ErrorKind::WriteZero, "short packet")),
        Err(_) => Err(io::Error::last_os_error()),
    }
}

/// Receives one packet from `socket` into `buf`, taking ownership of any descriptors
/// attached (close-on-exec).
pub fn recv_packet(socket: RawFd, buf: &mut [u8]) -> io::Result<Packet> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut buffer: ControlBuffer = [0; 8];
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buffer.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<ControlBuffer>();
    // SAFETY: `msg` points at `buf` and the control buffer, alive for the call.
    let received = unsafe { libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    let len = usize::try_from(received).map_err(|_| io::Error::last_os_error())?;
    let mut fds = Vec::new();
    // SAFETY: the kernel filled the control buffer; CMSG_FIRSTHDR/CMSG_NXTHDR walk it
    // within msg_controllen, and each SCM_RIGHTS payload holds cmsg_len - CMSG_LEN(0)
    // octets of descriptors, which now belong to this process.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let header = usize::try_from(libc::CMSG_LEN(0)).unwrap_or(usize::MAX);
                let payload = (*cmsg).cmsg_len.saturating_sub(header);
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                for i in 0..payload / size_of::<libc::c_int>() {
                    let fd = std::ptr::read_unaligned(data.add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Packet {
        len,
        truncated: msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0,
        fds,
    })
}

/// The domain (`AF_*`) and type (`SOCK_*`) of socket `fd`.
pub fn socket_kind(fd: RawFd) -> io::Result<(libc::c_int, libc::c_int)> {
    Ok((
        int_option(fd, libc::SO_DOMAIN)?,
        int_option(fd, libc::SO_TYPE)?,
    ))
}

fn int_option(fd: RawFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: getsockopt writes at most `len` octets into `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            std::ptr::from_mut(&mut value).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Puts `fd` in non-blocking mode.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `shutdown(fd, SHUT_RD)`: the peer's further writes fail (`EPIPE`).
pub fn shutdown_read(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown on a descriptor.
    if unsafe { libc::shutdown(fd, libc::SHUT_RD) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A duplicate of `fd` numbered `min` or above, close-on-exec.
pub fn dup_at_least(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor or -1.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// An anonymous memory file (close-on-exec) holding `contents`, positioned at its start.
pub fn memfd_with(name: &CStr, contents: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: memfd_create with a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, contents)?;
    std::io::Seek::rewind(&mut file)?;
    Ok(OwnedFd::from(file))
}

/// Whether `fd` is an open descriptor of the kind `S_IFMT` bits `kind` (e.g.
/// `libc::S_IFSOCK`).
pub fn is_kind(fd: RawFd, kind: libc::mode_t) -> bool {
    // SAFETY: an all-zero stat buffer is valid for fstat to fill.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into the buffer it is given.
    unsafe { libc::fstat(fd, &mut stat) == 0 && stat.st_mode & libc::S_IFMT == kind }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn packets_carry_one_descriptor() {
        let (a, b) = socket_pair(libc::SOCK_SEQPACKET).unwrap();
        let (x, _y) = socket_pair(libc::SOCK_STREAM).unwrap();
        send_packet(a.as_raw_fd(), &[1], Some(x.as_fd())).unwrap();
        let mut buf = [0u8; 8];
        let packet = recv_packet(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(
            (packet.len, packet.truncated, packet.fds.len()),
            (1, false, 1)
        );
        assert_eq!(buf[0], 1);
        assert_eq!(
            socket_kind(packet.fds[0].as_raw_fd()).unwrap(),
            (libc::AF_UNIX, libc::SOCK_STREAM)
        );
        // Close-on-exec, as everything this process holds.
        // SAFETY: F_GETFD on a descriptor we own.
        let flags = unsafe { libc::fcntl(packet.fds[0].as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);

        // An oversized packet is reported truncated; a closed peer reads as 0 octets.
        send_packet(a.as_raw_fd(), &[7; 16], None).unwrap();
        let packet = recv_packet(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!((packet.len, packet.truncated), (8, true));
        drop(a);
        let packet = recv_packet(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(
            (packet.len, packet.truncated, packet.fds.len()),
            (0, false, 0)
        );
    }

    #[test]
    fn memfds_read_back_from_the_start() {
        let fd = memfd_with(c"petrel-test", b"hello").unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut text).unwrap();
        assert_eq!(text, "hello");
    }

    #[test]
    fn duplicates_are_numbered_as_asked() {
        let (a, _b) = socket_pair(libc::SOCK_STREAM).unwrap();
        let high = dup_at_least(a.as_fd(), 100).unwrap();
        assert!(high.as_raw_fd() >= 100);
        assert!(is_kind(high.as_raw_fd(), libc::S_IFSOCK));
        assert!(!is_kind(-1, libc::S_IFSOCK));
    }
}
