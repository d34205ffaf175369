//! One rtnetlink dump: a request, then its replies handed over message by
//! message until the kernel says it is done.

use std::os::fd::{AsRawFd, OwnedFd};

use super::{NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, align4, dump_header, route_socket, u32_at};
use crate::error::{CollectorError, Result};

const NETLINK_GET_STRICT_CHK: i32 = 12;

/// A `NETLINK_ROUTE` socket with strict checking: the kernel honours dump
/// filters in the request (such as `IFA_TARGET_NETNSID`) only then (4.20+).
pub fn strict_socket() -> Result<OwnedFd> {
    let fd = route_socket(0)?;
    let one: i32 = 1;
    // SAFETY: an i32 option and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_NETLINK,
            NETLINK_GET_STRICT_CHK,
            (&one as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(CollectorError::io(
            "netlink strict checking",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(fd)
}

/// Sends a dump request of type `ty` whose body (after the netlink header)
/// is `body`, and hands each reply's (type, body) to `each`.
pub fn dump(fd: &OwnedFd, ty: u16, body: &[u8], mut each: impl FnMut(u16, &[u8])) -> Result<()> {
    let err = |e| CollectorError::io("netlink dump", e);
    let mut msg = vec![0u8; NLMSG_HDRLEN + body.len()];
    dump_header(&mut msg, ty);
    msg[NLMSG_HDRLEN..].copy_from_slice(body);
    // SAFETY: sending a valid buffer on an owned socket.
    if unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: reading into an owned buffer of the given length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(err(e));
        }
        let mut b = &buf[..n as usize];
        while b.len() >= NLMSG_HDRLEN {
            let len = u32_at(b, 0) as usize;
            if len < NLMSG_HDRLEN || len > b.len() {
                return Err(err(std::io::Error::other("truncated netlink message")));
            }
            let ty = u16::from_ne_bytes([b[4], b[5]]);
            let body = &b[NLMSG_HDRLEN..len];
            b = &b[align4(len).min(b.len())..];
            match ty {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR if body.len() >= 4 => {
                    let errno = -(u32_at(body, 0) as i32);
                    return match errno {
                        0 => Ok(()),
                        e => Err(err(std::io::Error::from_raw_os_error(e))),
                    };
                }
                _ => each(ty, body),
            }
        }
    }
}
