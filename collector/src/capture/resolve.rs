//! A pod's host-side interface from its address: the kernel's route to the
//! pod IP (RTM_GETROUTE) names the device, as on routed CNIs (Calico,
//! Cilium, AWS VPC CNI, Azure CNI, kindnet's ptp), where each pod has a /32
//! (/128) route through its veth. A route through a bridge (flannel, the
//! bridge plugin, Azure CNI's bridge mode) leads to the bridge's port whose
//! peer holds the pod's address (`bridge`).

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::bridge::BridgePorts;

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const NLMSG_ERROR: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const NLMSG_HDRLEN: usize = 16;
const RTMSG_LEN: usize = 12;

/// The interface index the kernel routes `ip` through, in the calling
/// thread's network namespace; None when there is no route.
pub fn route_oif(ip: IpAddr) -> io::Result<Option<u32>> {
    // SAFETY: plain socket(2); owned right after.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let (family, addr): (u8, Vec<u8>) = match ip {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    let len = NLMSG_HDRLEN + RTMSG_LEN + 4 + addr.len();
    let mut msg = vec![0u8; len];
    msg[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&RTM_GETROUTE.to_ne_bytes());
    msg[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    let r = NLMSG_HDRLEN;
    msg[r] = family;
    msg[r + 1] = (addr.len() * 8) as u8; // rtm_dst_len
    let a = r + RTMSG_LEN;
    msg[a..a + 2].copy_from_slice(&((4 + addr.len()) as u16).to_ne_bytes());
    msg[a + 2..a + 4].copy_from_slice(&RTA_DST.to_ne_bytes());
    msg[a + 4..].copy_from_slice(&addr);
    // SAFETY: sending a valid buffer on an owned socket.
    if unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 8192];
    // SAFETY: receiving into an owned buffer.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(parse_oif(&buf[..n as usize]))
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

/// RTA_OIF of the first RTM_NEWROUTE in `b` (None for an error reply).
fn parse_oif(b: &[u8]) -> Option<u32> {
    if u16_at(b, 4)? == NLMSG_ERROR || u16_at(b, 4)? != RTM_NEWROUTE {
        return None;
    }
    let end = (u32::from_ne_bytes(b.get(0..4)?.try_into().ok()?) as usize).min(b.len());
    let mut off = NLMSG_HDRLEN + RTMSG_LEN;
    while off + 4 <= end {
        let len = usize::from(u16_at(b, off)?);
        if len < 4 {
            return None;
        }
        if u16_at(b, off + 2)? == RTA_OIF {
            return Some(u32::from_ne_bytes(
                b.get(off + 4..off + 8)?.try_into().ok()?,
            ));
        }
        off += len.next_multiple_of(4);
    }
    None
}

/// The name of interface `index` in the calling thread's namespace.
pub fn interface_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: a buffer of IF_NAMESIZE bytes, as if_indextoname needs.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// The driver of interface `name` (ETHTOOL_GDRVINFO), e.g. `veth`, `bridge`.
pub fn driver(name: &str) -> Option<String> {
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 160],
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IF_NAMESIZE],
        data: *mut DrvInfo,
        _pad: [u8; 16],
    }
    if name.len() >= libc::IF_NAMESIZE {
        return None;
    }
    let mut info = DrvInfo {
        cmd: 3, // ETHTOOL_GDRVINFO
        driver: [0; 32],
        rest: [0; 160],
    };
    let mut req = IfReq {
        name: [0; libc::IF_NAMESIZE],
        data: &mut info,
        _pad: [0; 16],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: a datagram socket for the ioctl, owned right after.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return None;
    }
    // SAFETY: a fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: SIOCETHTOOL with an ifreq pointing at a live ethtool_drvinfo.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), 0x8946, &mut req) };
    if rc != 0 {
        return None;
    }
    let end = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// The host-side interface of a pod with addresses `ips`, in the calling
/// thread's namespace: the device the kernel routes the first of them
/// through, when that device is a veth or netkit; when it is a bridge, the
/// bridge's port whose peer holds the address (`bridges` lists each bridge's
/// ports once per round of lookups). Never the uplink.
pub fn pod_interface(ips: &[IpAddr], bridges: &mut BridgePorts) -> Option<String> {
    ips.iter().find_map(|ip| {
        let oif = route_oif(*ip).ok()??;
        let name = interface_name(oif)?;
        let name = match driver(&name)?.as_str() {
            "veth" | "netkit" => name,
            "bridge" => interface_name(bridges.port(oif, *ip).ok()??)?,
            _ => return None,
        };
        matches!(driver(&name)?.as_str(), "veth" | "netkit").then_some(name)
    })
}
