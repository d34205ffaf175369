//! Interfaces without a link-layer header (tun, wireguard, netkit in L3
//! mode, IP-in-IP): their packets start at the IP header. The flow programs
//! read the header length per interface from the `l3_ifaces` map, filled here
//! from each interface's ARPHRD type as it is attached (flows.bpf.c
//! `link_header_len`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use aya::Ebpf;
use aya::maps::{Array, HashMap, MapData};
use tracing::{info, warn};

/// ARPHRD types whose packets carry no link-layer header at tc.
const NO_LINK_HEADER: &[u16] = &[
    65534, // ARPHRD_NONE: tun, wireguard, netkit (L3)
    519,   // ARPHRD_RAWIP
    512,   // ARPHRD_PPP
    768,   // ARPHRD_TUNNEL (ipip)
    769,   // ARPHRD_TUNNEL6
    776,   // ARPHRD_SIT
];

/// Whether packets on an interface of this ARPHRD type start at the IP header.
pub fn has_no_link_header(hw_type: u16) -> bool {
    NO_LINK_HEADER.contains(&hw_type)
}

/// The ARPHRD type of an interface of the calling thread's network namespace.
pub fn hw_type(name: &str) -> std::io::Result<u16> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: plain socket(2).
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: raw was just opened and is owned here.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills ifr_hwaddr of a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the ioctl succeeded, so the union holds ifr_hwaddr.
    Ok(unsafe { req.ifr_ifru.ifru_hwaddr.sa_family })
}

/// The flow object's `l3_ifaces` and `l3_count` maps.
pub struct L3Interfaces {
    ifaces: HashMap<MapData, u32, u32>,
    count: Array<MapData, u32>,
    marked: usize,
}

impl L3Interfaces {
    /// Takes the maps out of the flow object (None when it has none).
    pub fn take(bpf: &mut Ebpf) -> Option<Self> {
        let ifaces = HashMap::try_from(bpf.take_map("l3_ifaces")?).ok()?;
        let count = Array::try_from(bpf.take_map("l3_count")?).ok()?;
        Some(L3Interfaces {
            ifaces,
            count,
            marked: 0,
        })
    }

    /// Records an interface about to be attached when it has no link-layer
    /// header.
    pub fn mark(&mut self, ifindex: u32, name: &str) {
        let hw = match hw_type(name) {
            Ok(hw) => hw,
            Err(e) => {
                warn!(interface = name, error = %e, "link type unknown: parsed as Ethernet");
                return;
            }
        };
        if !has_no_link_header(hw) || self.ifaces.get(&ifindex, 0).is_ok() {
            return;
        }
        match self.ifaces.insert(ifindex, u32::from(hw), 0) {
            Ok(()) => {
                self.marked += 1;
                self.publish_count();
                info!(
                    interface = name,
                    ifindex,
                    hw_type = hw,
                    "no link-layer header: parsed from the IP header"
                );
            }
            Err(e) => warn!(interface = name, error = %e, "cannot record an L3 interface"),
        }
    }

    /// Forgets a detached interface.
    pub fn forget(&mut self, ifindex: u32) {
        if self.ifaces.remove(&ifindex).is_ok() {
            self.marked = self.marked.saturating_sub(1);
            self.publish_count();
        }
    }

    fn publish_count(&mut self) {
        if let Err(e) = self.count.set(0, self.marked as u32, 0) {
            warn!(error = %e, "cannot update the L3 interface count");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_ethernet_have_link_headers() {
        assert!(!has_no_link_header(1));
        assert!(has_no_link_header(65534));
        // The calling thread's loopback: ARPHRD_LOOPBACK.
        assert_eq!(hw_type("lo").unwrap(), 772);
        assert!(hw_type("no-such-if-x").is_err());
    }
}
