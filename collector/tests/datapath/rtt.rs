//! RTT induced without sch_netem or sch_fq (neither is built into this kernel,
//! so neither `netem delay` nor an EDT `skb->tstamp` program can delay
//! packets): pod A routes its packets to pod B through a TUN device, and a
//! userspace relay holds each one 20 ms before putting it on A's eth0 (an
//! AF_PACKET socket) — netem's delay, done in userspace. The collector
//! observes A's host-side veth as usual.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flowlake_schemas::ObservationPoint;

use super::harness::*;
use super::talkers::tcp_transfer;

const DELAY: Duration = Duration::from_millis(20);

fn mac(ns: &str, dev: &str) -> [u8; 6] {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "cat"])
        .arg(format!("/sys/class/net/{dev}/address"))
        .output()
        .unwrap();
    let s = String::from_utf8(out.stdout).unwrap();
    let v: Vec<u8> = s
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

/// Opens TUN device `name` (no packet info) in the calling thread's netns.
pub fn open_tun(name: &str) -> OwnedFd {
    // SAFETY: open(2) on a constant path.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_NONBLOCK) };
    assert!(fd >= 0, "open tun: {}", std::io::Error::last_os_error());
    // SAFETY: fd was just opened and is owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = [0u8; 40];
    req[..name.len()].copy_from_slice(name.as_bytes());
    let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as u16;
    req[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF with an ifreq-sized buffer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, req.as_mut_ptr()) };
    assert_eq!(rc, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    fd
}

/// Relays IP packets read from `tun` to `eth0` (ifindex) after DELAY, until `stop`.
fn relay(tun: OwnedFd, ifindex: i32, src: [u8; 6], dst: [u8; 6], stop: Arc<AtomicBool>) {
    // SAFETY: plain socket(2).
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(
        raw >= 0,
        "packet socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: raw was just opened and is owned here.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: zeroed sockaddr_ll, then filled.
    let mut ll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    ll.sll_family = libc::AF_PACKET as u16;
    ll.sll_ifindex = ifindex;
    ll.sll_halen = 6;
    ll.sll_addr[..6].copy_from_slice(&dst);
    let mut queue: std::collections::VecDeque<(Instant, Vec<u8>)> = Default::default();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let wait = queue.front().map_or(10, |(due, _)| {
            due.saturating_duration_since(Instant::now()).as_millis() as i32
        });
        let mut pfd = libc::pollfd {
            fd: tun.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, wait.min(10)) };
        loop {
            // SAFETY: valid buffer; non-blocking fd.
            let n = unsafe { libc::read(tun.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let mut frame = Vec::with_capacity(14 + n as usize);
            frame.extend_from_slice(&dst);
            frame.extend_from_slice(&src);
            let ethertype: u16 = if buf[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
            frame.extend_from_slice(&ethertype.to_be_bytes());
            frame.extend_from_slice(&buf[..n as usize]);
            queue.push_back((Instant::now() + DELAY, frame));
        }
        while queue.front().is_some_and(|(due, _)| *due <= Instant::now()) {
            let (_, frame) = queue.pop_front().unwrap();
            // SAFETY: valid frame buffer and link-layer address.
            unsafe {
                libc::sendto(
                    sock.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&ll as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
        }
    }
}

#[test]
fn delayed_path_shows_in_srtt() {
    if !privileged() {
        return;
    }
    let t = Topology::new(17, 2);
    let (a, b) = (t.pods[0].v4, t.pods[1].v4);
    let (ns_a, ns_b) = (t.pods[0].ns.clone(), t.pods[1].ns.clone());
    let (mac_a, mac_b) = (mac(&ns_a, "eth0"), mac(&ns_b, "eth0"));
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stop2 = stop.clone();
    let _guard = StopOnDrop(stop.clone());
    let relay_thread = in_netns(t.pod_ns_path(0), move || {
        let tun = open_tun("dly0");
        // SAFETY: if_nametoindex on a constant NUL-terminated name.
        let eth0 = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) } as i32;
        ready_tx.send(()).unwrap();
        relay(tun, eth0, mac_a, mac_b, stop2);
    });
    ready_rx.recv().unwrap();
    for sysctl in [
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.eth0.rp_filter=0",
    ] {
        t.in_pod(0, &["sysctl", "-qw", sysctl]);
    }
    t.in_pod(0, &["ip", "link", "set", "dly0", "up"]);
    let (b_s, a_s) = (format!("{b}/32"), a.to_string());
    t.in_pod(0, &["ip", "route", "add", &b_s, "dev", "dly0", "src", &a_s]);

    let (dp, rx, _m) = t.collector();
    let sent = 200_000;
    let got = tcp_transfer(&t, 0, t.pod_ns_path(1), SocketAddr::new(b, 5301), sent);
    stop.store(true, Ordering::Relaxed);
    relay_thread.join().unwrap();
    assert_eq!(got, sent as u64);
    let records = finish(dp, rx);
    let rows: Vec<_> = records
        .iter()
        .filter(|r| {
            r.src.ip == a
                && r.dst.port == Some(5301)
                && r.observation_point == ObservationPoint::FromPod
        })
        .collect();
    let health: Vec<_> = rows.iter().filter_map(|r| r.tcp).collect();
    let srtt = health
        .iter()
        .filter_map(|h| h.srtt_us)
        .max()
        .unwrap_or_else(|| panic!("no srtt on the client's from_pod row: {rows:#?}"));
    eprintln!("srtt {srtt} us through the 20 ms relay");
    assert!(srtt >= 20_000, "srtt {srtt} us with a 20 ms one-way delay");
    assert!(srtt < 1_000_000, "srtt {srtt} us");
    // The delay is inside pod A, before its veth: the SYN -> SYN-ACK time seen
    // there is B's answer time, not the path's RTT.
    let hs = health.iter().filter_map(|h| h.handshake_us).max();
    assert!(hs.is_some_and(|hs| hs < 20_000), "handshake {hs:?} us");
}

/// Stops the relay when the test ends, passed or not.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
