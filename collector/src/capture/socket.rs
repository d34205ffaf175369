//! One AF_PACKET socket on one interface, both directions, with the capture
//! filter attached in the kernel before the socket starts receiving (it is
//! created with protocol 0, which receives nothing, and bound to ETH_P_ALL
//! only after the filter is in place). Packets are read from a TPACKET_V3
//! ring (`ring`) with the kernel's timestamps and original lengths; drops
//! from PACKET_STATISTICS.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::error::{CaptureError, Result};
use super::filter::{Filter, Insn};
use super::pcapng::Direction;
use super::ring::Ring;

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const Insn,
}

#[repr(C)]
#[derive(Default)]
struct TpacketStats {
    tp_packets: u32,
    tp_drops: u32,
}

/// A packet received: how much landed in the buffer and what it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub captured: usize,
    pub original: u32,
    pub ts_ns: u64,
    pub direction: Direction,
}

/// A packet socket bound to one interface.
#[derive(Debug)]
pub struct PacketSocket {
    ring: Ring,
    fd: OwnedFd,
    pub ifindex: u32,
}

pub(super) fn setopt<T>(fd: RawFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs `f` on a thread inside the network namespace at `netns` (the
/// calling thread's own namespace when None). Sockets keep the namespace
/// they were created in.
pub fn in_netns<T: Send + 'static>(
    netns: Option<&Path>,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let Some(path) = netns.map(PathBuf::from) else {
        return f();
    };
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path)
            .map_err(|e| CaptureError::io(format!("opening netns {}", path.display()), e))?;
        // SAFETY: setns on a valid namespace fd affects this thread only.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(CaptureError::io(
                format!("entering netns {}", path.display()),
                io::Error::last_os_error(),
            ));
        }
        f()
    })
    .join()
    .unwrap_or_else(|_| {
        Err(CaptureError::io(
            "netns thread",
            io::Error::other("panicked"),
        ))
    })
}

impl PacketSocket {
    /// Opens a capture of `ifname` (in `netns`, else here) through `filter`,
    /// which cuts packets to `snaplen` bytes.
    pub fn open(
        netns: Option<&Path>,
        ifname: &str,
        filter: &Filter,
        snaplen: u32,
    ) -> Result<PacketSocket> {
        let name = ifname.to_string();
        let program = filter.program.clone();
        in_netns(netns, move || Self::open_here(&name, &program, snaplen))
    }

    fn open_here(ifname: &str, program: &[Insn], snaplen: u32) -> Result<PacketSocket> {
        let err = |what: &str| {
            CaptureError::io(format!("{what} on {ifname}"), io::Error::last_os_error())
        };
        let cname = std::ffi::CString::new(ifname)
            .map_err(|_| CaptureError::io("interface name", io::Error::other("NUL byte")))?;
        // SAFETY: a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(err("no such interface"));
        }
        // SAFETY: plain socket(2); protocol 0 receives nothing until bound.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if raw < 0 {
            return Err(err("AF_PACKET socket"));
        }
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let fprog = SockFprog {
            len: program.len() as u16,
            filter: program.as_ptr(),
        };
        setopt(raw, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
            .map_err(|e| CaptureError::io(format!("attaching the filter on {ifname}"), e))?;
        let ring = Ring::new(raw, snaplen)
            .map_err(|e| CaptureError::io(format!("the receive ring on {ifname}"), e))?;
        // SAFETY: zeroed sockaddr_ll, then filled.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: a valid sockaddr_ll and its length.
        let rc = unsafe {
            libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(err("binding"));
        }
        Ok(PacketSocket { ring, fd, ifindex })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The next packet the kernel handed over, copied into `buf`, without
    /// blocking; None when none is waiting. An error once the socket has
    /// one (the interface went down or away).
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        if let Some(got) = self.ring.next(buf) {
            return Ok(Some(got));
        }
        let mut error: i32 = 0;
        let mut len = size_of::<i32>() as libc::socklen_t;
        // SAFETY: an i32 and its length.
        let rc = unsafe {
            libc::getsockopt(
                self.raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut error as *mut i32).cast(),
                &mut len,
            )
        };
        match (rc, error) {
            (0, 0) => Ok(None),
            (0, e) => Err(io::Error::from_raw_os_error(e)),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Packets accepted by the filter and, of those, dropped by the kernel,
    /// since the last call (the kernel resets its counters on each read).
    pub fn statistics(&self) -> io::Result<(u64, u64)> {
        let mut st = TpacketStats::default();
        let mut len = size_of::<TpacketStats>() as libc::socklen_t;
        // SAFETY: a TpacketStats and its length.
        let rc = unsafe {
            libc::getsockopt(
                self.raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut TpacketStats).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((u64::from(st.tp_packets), u64::from(st.tp_drops)))
    }
}
