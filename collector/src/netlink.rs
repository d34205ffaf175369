//! rtnetlink link events on a raw `NETLINK_ROUTE` socket: an initial dump of
//! every link, then RTM_NEWLINK / RTM_DELLINK as they happen (no polling).

pub mod dump;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{CollectorError, Result};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWTFILTER: u16 = 44;
const RTM_GETTFILTER: u16 = 46;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_CHAIN: u16 = 11;
const TCA_BPF_ID: u16 = 11;
const TCMSG_LEN: usize = 20;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_LINK_NETNSID: u16 = 37;
const RTMGRP_LINK: u32 = 1;
const RTMGRP_TC: u32 = 8;
const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_DELTFILTER: u16 = 45;
const NLMSG_HDRLEN: usize = 16;
const IFINFO_LEN: usize = 16;

/// A link as rtnetlink describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` (`veth`, `bridge`, …); None for physical devices.
    pub kind: Option<String>,
    /// The link's peer lives in another network namespace (a pod's veth).
    pub peer_in_other_netns: bool,
    /// ARPHRD_* device type (1 = Ethernet, 772 = loopback).
    pub hw_type: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    New(Link),
    Removed {
        index: u32,
        name: String,
    },
    /// A tc filter or qdisc of the link was added or removed (someone may
    /// have got ahead of the flow programs: see attach.rs).
    TcChanged {
        index: u32,
    },
}

/// A `NETLINK_ROUTE` socket (`extra`: more `SOCK_*` flags).
fn route_socket(extra: i32) -> Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the fd is owned right after.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | extra,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(CollectorError::io(
            "netlink socket",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: raw is a fresh valid fd.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Writes the header of a dump request of type `ty` filling all of `msg`.
fn dump_header(msg: &mut [u8], ty: u16) {
    let len = msg.len() as u32;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg[4..6].copy_from_slice(&ty.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
}

/// A netlink socket subscribed to link and tc changes, non-blocking.
pub struct LinkWatcher {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl LinkWatcher {
    /// Opens the socket in the calling thread's network namespace and requests a dump.
    pub fn open() -> Result<Self> {
        let fd = route_socket(libc::SOCK_NONBLOCK)?;
        // SAFETY: zeroed sockaddr_nl is valid; fields set below.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = RTMGRP_LINK | RTMGRP_TC;
        // SAFETY: addr is a valid sockaddr_nl of the given size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(CollectorError::io(
                "netlink bind",
                std::io::Error::last_os_error(),
            ));
        }
        let w = LinkWatcher {
            fd,
            buf: vec![0; 64 * 1024],
        };
        w.request_dump()?;
        Ok(w)
    }

    fn request_dump(&self) -> Result<()> {
        let mut msg = [0u8; NLMSG_HDRLEN + IFINFO_LEN];
        dump_header(&mut msg, RTM_GETLINK);
        msg[NLMSG_HDRLEN] = libc::AF_UNSPEC as u8;
        // SAFETY: sending a valid buffer on an owned socket.
        let rc = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if rc < 0 {
            return Err(CollectorError::io(
                "netlink dump request",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Reads every pending message; returns the events (empty when none pending).
    /// An overrun (ENOBUFS) triggers a fresh dump so no link is missed.
    pub fn poll_events(&mut self) -> Result<Vec<LinkEvent>> {
        let mut out = Vec::new();
        loop {
            // SAFETY: reading into an owned buffer of the given length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(out),
                    Some(libc::ENOBUFS) => {
                        self.request_dump()?;
                        continue;
                    }
                    Some(libc::EINTR) => continue,
                    _ => return Err(CollectorError::io("netlink recv", err)),
                }
            }
            parse_messages(&self.buf[..n as usize], &mut out);
        }
    }
}

/// The clsact ingress hook (`tcm_parent` ffff:fff2).
pub const TC_INGRESS: u32 = 0xffff_fff2;
/// The clsact egress hook (`tcm_parent` ffff:fff3).
pub const TC_EGRESS: u32 = 0xffff_fff3;
/// `ETH_P_ALL`, the protocol of filters that see every packet.
pub const ETH_P_ALL: u16 = 3;

/// A tc filter on a clsact hook, as `tc filter show` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcFilter {
    pub priority: u16,
    pub handle: u32,
    /// Protocol in host byte order (`ETH_P_ALL` = 3).
    pub protocol: u16,
    /// `bpf`, `u32`, `flower`, …
    pub kind: String,
    /// The program of a `bpf` filter.
    pub prog_id: Option<u32>,
}

/// The filters of chain 0 on a clsact hook (`TC_INGRESS` / `TC_EGRESS`) in the
/// order the kernel runs them: by priority, and within a priority in list
/// order (cls_bpf puts a new handle first). Empty when the interface has no
/// clsact qdisc.
pub fn tc_filters(ifindex: u32, parent: u32) -> Result<Vec<TcFilter>> {
    let fd = route_socket(0)?;
    let mut tcm = [0u8; TCMSG_LEN];
    tcm[0] = libc::AF_UNSPEC as u8;
    tcm[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    tcm[12..16].copy_from_slice(&parent.to_ne_bytes());
    let mut out = Vec::new();
    let listed = dump::dump(&fd, RTM_GETTFILTER, &tcm, |ty, body| {
        if ty == RTM_NEWTFILTER {
            out.extend(parse_filter(body));
        }
    });
    match listed {
        Ok(()) => Ok(out),
        // No clsact qdisc (EINVAL) or no such device (ENODEV, ENOENT).
        Err(CollectorError::Io { source, .. })
            if matches!(
                source.raw_os_error(),
                Some(libc::EINVAL | libc::ENOENT | libc::ENODEV)
            ) =>
        {
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

/// One RTM_NEWTFILTER body as a filter of chain 0; `None` for other chains and
/// for the entry the kernel lists per priority for its classifier (handle 0).
fn parse_filter(msg: &[u8]) -> Option<TcFilter> {
    if msg.len() < TCMSG_LEN {
        return None;
    }
    let handle = u32_at(msg, 8);
    let info = u32_at(msg, 16);
    let mut f = TcFilter {
        priority: (info >> 16) as u16,
        handle,
        protocol: u16::from_be((info & 0xffff) as u16),
        kind: String::new(),
        prog_id: None,
    };
    let mut chain = 0;
    for (t, payload) in attrs(&msg[TCMSG_LEN..]) {
        match t {
            TCA_KIND => f.kind = cstr(payload),
            TCA_CHAIN if payload.len() >= 4 => chain = u32_at(payload, 0),
            TCA_OPTIONS => {
                for (ot, op) in attrs(payload) {
                    if ot == TCA_BPF_ID && op.len() >= 4 && f.kind == "bpf" {
                        f.prog_id = Some(u32_at(op, 0));
                    }
                }
            }
            _ => {}
        }
    }
    (handle != 0 && chain == 0).then_some(f)
}

impl AsRawFd for LinkWatcher {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Iterates `(type, payload)` of the rtattrs in `b`.
pub(crate) fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16_at(b, 0));
        if len < 4 || len > b.len() {
            return None;
        }
        let item = (u16_at(b, 2) & 0x3fff, &b[4..len]);
        b = &b[align4(len).min(b.len())..];
        Some(item)
    })
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Parses a buffer of netlink messages into link events.
pub fn parse_messages(mut b: &[u8], out: &mut Vec<LinkEvent>) {
    while b.len() >= NLMSG_HDRLEN {
        let len = u32_at(b, 0) as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            return;
        }
        let ty = u16_at(b, 4);
        let msg = &b[NLMSG_HDRLEN..len];
        b = &b[align4(len).min(b.len())..];
        if ty == NLMSG_DONE || ty == NLMSG_ERROR {
            continue;
        }
        if matches!(
            ty,
            RTM_NEWTFILTER | RTM_DELTFILTER | RTM_NEWQDISC | RTM_DELQDISC
        ) && msg.len() >= TCMSG_LEN
        {
            out.push(LinkEvent::TcChanged {
                index: u32_at(msg, 4),
            });
            continue;
        }
        if (ty != RTM_NEWLINK && ty != RTM_DELLINK) || msg.len() < IFINFO_LEN {
            continue;
        }
        let hw_type = u16_at(msg, 2);
        let index = u32_at(msg, 4);
        let mut link = Link {
            index,
            name: String::new(),
            kind: None,
            peer_in_other_netns: false,
            hw_type,
        };
        for (t, payload) in attrs(&msg[IFINFO_LEN..]) {
            match t {
                IFLA_IFNAME => link.name = cstr(payload),
                IFLA_LINK_NETNSID => link.peer_in_other_netns = true,
                IFLA_LINKINFO => {
                    for (it, ip) in attrs(payload) {
                        if it == IFLA_INFO_KIND {
                            link.kind = Some(cstr(ip));
                        }
                    }
                }
                _ => {}
            }
        }
        out.push(if ty == RTM_NEWLINK {
            LinkEvent::New(link)
        } else {
            LinkEvent::Removed {
                index,
                name: link.name,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn parses_newlink_with_kind_and_netnsid() {
        let mut body = vec![0u8; IFINFO_LEN];
        body[2..4].copy_from_slice(&1u16.to_ne_bytes());
        body[4..8].copy_from_slice(&7u32.to_ne_bytes());
        body.extend(attr(IFLA_IFNAME, b"vethab\0"));
        body.extend(attr(IFLA_LINKINFO, &attr(IFLA_INFO_KIND, b"veth\0")));
        body.extend(attr(IFLA_LINK_NETNSID, &3i32.to_ne_bytes()));
        let mut msg = Vec::new();
        msg.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend(body);
        let mut out = Vec::new();
        parse_messages(&msg, &mut out);
        assert_eq!(
            out,
            vec![LinkEvent::New(Link {
                index: 7,
                name: "vethab".into(),
                kind: Some("veth".into()),
                peer_in_other_netns: true,
                hw_type: 1,
            })]
        );
    }

    /// An RTM_NEWTFILTER message as the kernel dumps one.
    fn filter_msg(
        priority: u16,
        handle: u32,
        kind: &str,
        chain: Option<u32>,
        prog: u32,
    ) -> Vec<u8> {
        let mut body = vec![0u8; TCMSG_LEN];
        body[8..12].copy_from_slice(&handle.to_ne_bytes());
        let info = (u32::from(priority) << 16) | u32::from(ETH_P_ALL.to_be());
        body[16..20].copy_from_slice(&info.to_ne_bytes());
        body.extend(attr(TCA_KIND, format!("{kind}\0").as_bytes()));
        if let Some(c) = chain {
            body.extend(attr(TCA_CHAIN, &c.to_ne_bytes()));
        }
        body.extend(attr(TCA_OPTIONS, &attr(TCA_BPF_ID, &prog.to_ne_bytes())));
        let mut msg = Vec::new();
        msg.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&RTM_NEWTFILTER.to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend(body);
        msg
    }

    #[test]
    fn parses_filters_of_chain_zero_skipping_classifier_entries() {
        let msgs = [
            filter_msg(1, 0, "bpf", Some(0), 0),
            filter_msg(1, 0x464c_0001, "bpf", Some(0), 42),
            filter_msg(1, 1, "bpf", None, 7),
            filter_msg(2, 1, "bpf", Some(3), 8),
        ];
        let out: Vec<TcFilter> = msgs
            .iter()
            .filter_map(|m| parse_filter(&m[NLMSG_HDRLEN..]))
            .collect();
        let seen: Vec<(u16, u32, Option<u32>)> = out
            .iter()
            .map(|f| (f.priority, f.handle, f.prog_id))
            .collect();
        assert_eq!(seen, [(1, 0x464c_0001, Some(42)), (1, 1, Some(7))]);
        assert!(
            out.iter()
                .all(|f| f.protocol == ETH_P_ALL && f.kind == "bpf")
        );
        assert_eq!(parse_filter(&[0; 8]), None);
    }

    #[test]
    fn filter_notifications_name_their_link() {
        let mut msg = filter_msg(1, 1, "bpf", None, 7);
        msg[16 + 4..16 + 8].copy_from_slice(&9u32.to_ne_bytes());
        let mut out = Vec::new();
        parse_messages(&msg, &mut out);
        assert_eq!(out, vec![LinkEvent::TcChanged { index: 9 }]);
    }

    #[test]
    fn live_dump_lists_loopback() {
        let mut w = match LinkWatcher::open() {
            Ok(w) => w,
            Err(e) => {
                eprintln!("skipped: netlink unavailable: {e}");
                return;
            }
        };
        let mut events = Vec::new();
        for _ in 0..50 {
            events.extend(w.poll_events().unwrap());
            if !events.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            events
                .iter()
                .any(|e| matches!(e, LinkEvent::New(l) if l.name == "lo" && l.hw_type == 772))
        );
    }
}
