//! A pod's port on a bridge (flannel, the bridge plugin, Azure CNI's bridge
//! mode): the veth enslaved to the bridge whose peer, in the pod's network
//! namespace, holds the pod's address. Found from rtnetlink alone, without
//! entering the pod's namespace or waiting for its traffic: each port's peer
//! namespace id and peer index (RTM_GETLINK), then the addresses of that
//! namespace (RTM_GETADDR with IFA_TARGET_NETNSID, kernel 4.20 and later).

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::OwnedFd;

use crate::error::Result;
use crate::netlink::dump::{dump, strict_socket};
use crate::netlink::{attrs, u32_at};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINK_NETNSID: u16 = 37;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_TARGET_NETNSID: u16 = 10;

/// A port of a bridge: its index here, and its peer's namespace id and index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Port {
    index: u32,
    netnsid: i32,
    peer: u32,
}

/// Bridge ports and their peers' addresses, each listed from the kernel at
/// most once per value: one value serves a round of lookups (every pod of a
/// refresh), so a node with many pods on a bridge costs one link dump per
/// bridge and one address dump per pod namespace, not one of each per pod.
#[derive(Default)]
pub struct BridgePorts {
    sock: Option<OwnedFd>,
    /// Ports per bridge index.
    ports: HashMap<u32, Vec<Port>>,
    /// RTM_NEWADDR bodies per (namespace id, address family).
    addresses: HashMap<(i32, u8), Vec<Vec<u8>>>,
}

impl BridgePorts {
    fn sock(&mut self) -> Result<&OwnedFd> {
        if self.sock.is_none() {
            self.sock = Some(strict_socket()?);
        }
        Ok(self.sock.as_ref().expect("just opened"))
    }

    /// The index of the port of `bridge` whose peer holds `ip`, in the calling
    /// thread's network namespace; None when no port's peer has it.
    pub fn port(&mut self, bridge: u32, ip: IpAddr) -> Result<Option<u32>> {
        if !self.ports.contains_key(&bridge) {
            let mut ports = Vec::new();
            dump(
                self.sock()?,
                RTM_GETLINK,
                &ifinfomsg_request(),
                |kind, body| {
                    if kind == RTM_NEWLINK
                        && let Some(port) = parse_port(body, bridge)
                    {
                        ports.push(port);
                    }
                },
            )?;
            self.ports.insert(bridge, ports);
        }
        let ports = self.ports[&bridge].clone();
        for p in &ports {
            let key = (p.netnsid, family(ip));
            if !self.addresses.contains_key(&key) {
                let mut bodies = Vec::new();
                let request = ifaddrmsg_request(ip, p.netnsid);
                dump(self.sock()?, RTM_GETADDR, &request, |kind, body| {
                    if kind == RTM_NEWADDR {
                        bodies.push(body.to_vec());
                    }
                })?;
                self.addresses.insert(key, bodies);
            }
            let holds = self.addresses[&key]
                .iter()
                .any(|body| address_holder(body, ip) == Some(p.peer));
            if holds {
                return Ok(Some(p.index));
            }
        }
        Ok(None)
    }
}

fn family(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

/// A port of `bridge` from an RTM_NEWLINK body, when its peer is in another
/// namespace (a veth whose other end was moved into a pod).
fn parse_port(body: &[u8], bridge: u32) -> Option<Port> {
    let index = u32_at(body.get(..IFINFOMSG_LEN)?, 4);
    let (mut master, mut netnsid, mut peer) = (None, None, None);
    for (kind, value) in attrs(&body[IFINFOMSG_LEN..]) {
        let value = (value.len() >= 4).then(|| u32_at(value, 0));
        match kind {
            IFLA_MASTER => master = value,
            IFLA_LINK_NETNSID => netnsid = value.map(|v| v as i32),
            IFLA_LINK => peer = value,
            _ => {}
        }
    }
    (master? == bridge).then_some(Port {
        index,
        netnsid: netnsid?,
        peer: peer?,
    })
}

/// The interface index of an RTM_NEWADDR body when its address is `ip`.
fn address_holder(body: &[u8], ip: IpAddr) -> Option<u32> {
    let want: Vec<u8> = match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let index = u32_at(body.get(..IFADDRMSG_LEN)?, 4);
    attrs(&body[IFADDRMSG_LEN..])
        .any(|(kind, value)| matches!(kind, IFA_ADDRESS | IFA_LOCAL) && value == want.as_slice())
        .then_some(index)
}

fn ifinfomsg_request() -> Vec<u8> {
    let mut body = vec![0u8; IFINFOMSG_LEN];
    body[0] = libc::AF_UNSPEC as u8;
    body
}

fn ifaddrmsg_request(ip: IpAddr, netnsid: i32) -> Vec<u8> {
    let mut body = vec![0u8; IFADDRMSG_LEN + 8];
    body[0] = family(ip);
    let a = IFADDRMSG_LEN;
    body[a..a + 2].copy_from_slice(&8u16.to_ne_bytes());
    body[a + 2..a + 4].copy_from_slice(&IFA_TARGET_NETNSID.to_ne_bytes());
    body[a + 4..a + 8].copy_from_slice(&netnsid.to_ne_bytes());
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(a.len().next_multiple_of(4), 0);
        a
    }

    #[test]
    fn a_port_is_a_link_of_the_bridge_with_a_peer_elsewhere() {
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body[4..8].copy_from_slice(&7u32.to_ne_bytes());
        body.extend(attr(3, b"veth1\0"));
        body.extend(attr(IFLA_MASTER, &4u32.to_ne_bytes()));
        body.extend(attr(IFLA_LINK, &2u32.to_ne_bytes()));
        let local = body.clone();
        body.extend(attr(IFLA_LINK_NETNSID, &5i32.to_ne_bytes()));
        let port = Port {
            index: 7,
            netnsid: 5,
            peer: 2,
        };
        assert_eq!(parse_port(&body, 4), Some(port));
        assert_eq!(parse_port(&body, 9), None, "another bridge's port");
        assert_eq!(parse_port(&local, 4), None, "no peer namespace");
    }

    #[test]
    fn the_holder_of_an_address_is_its_interface() {
        let mut body = vec![0u8; IFADDRMSG_LEN];
        body[4..8].copy_from_slice(&2u32.to_ne_bytes());
        body.extend(attr(IFA_LOCAL, &[10, 1, 0, 5]));
        assert_eq!(address_holder(&body, "10.1.0.5".parse().unwrap()), Some(2));
        assert_eq!(address_holder(&body, "10.1.0.6".parse().unwrap()), None);
    }
}
