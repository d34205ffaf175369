//! Namespaces, veths, captures and collector runs for the datapath tests.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flowlake_collector::{Datapath, DatapathConfig, DatapathMetrics};
use flowlake_schemas::{FlowRecord, ObservationPoint, Verdict};
use prometheus_client::registry::Registry;

// A child module, so that every test binary including this file (the root
// tests/ include it by path) gets the capture reader with it.
#[path = "pcap.rs"]
mod pcap;

/// True when the test may run; prints why not otherwise (or panics in CI).
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let reason = if !root {
        Some("not root")
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("no kernel BTF")
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("no iproute2")
    } else {
        None
    };
    match reason {
        None => true,
        Some(r) => {
            if std::env::var("FLOWLAKE_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
                panic!("privileged test cannot run: {r}");
            }
            eprintln!("skipped: {r} (set FLOWLAKE_REQUIRE_PRIVILEGED=1 to fail instead)");
            false
        }
    }
}

pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect(args[0]);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A node namespace with a bridge and pods attached to it, removed on drop.
pub struct Topology {
    pub id: String,
    pub subnet: u8,
    pub pods: Vec<Pod>,
}

pub struct Pod {
    pub ns: String,
    pub host_if: String,
    pub v4: IpAddr,
    pub v6: IpAddr,
}

impl Topology {
    /// `subnet` picks 10.77.<subnet>.0/24 and fd77:<subnet>::/64, unique per test.
    pub fn new(subnet: u8, pods: usize) -> Topology {
        let id = format!("flk{}s{subnet}", std::process::id() % 10000);
        let mut t = Topology {
            id,
            subnet,
            pods: Vec::new(),
        };
        let node = t.node_ns();
        sh(&["ip", "netns", "add", &node]);
        t.node(&["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"]);
        t.node(&["ip", "link", "add", "br0", "type", "bridge"]);
        t.node(&["ip", "link", "set", "br0", "up"]);
        t.node(&["ip", "link", "set", "lo", "up"]);
        for i in 0..pods {
            t.add_pod(i);
        }
        t
    }

    pub fn node_ns(&self) -> String {
        format!("{}n", self.id)
    }

    pub fn node_ns_path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.node_ns()))
    }

    pub fn node(&self, args: &[&str]) {
        let ns = self.node_ns();
        let mut v = vec!["ip", "netns", "exec", ns.as_str()];
        v.extend_from_slice(args);
        sh(&v);
    }

    pub fn in_pod(&self, i: usize, args: &[&str]) {
        let mut v = vec!["ip", "netns", "exec", self.pods[i].ns.as_str()];
        v.extend_from_slice(args);
        sh(&v);
    }

    /// An nftables rule in pod `i` that drops input packets matching `rule` (nft
    /// syntax, e.g. `["udp", "dport", "9999"]`): drops with a netfilter reason.
    pub fn drop_input_in_pod(&self, i: usize, rule: &[&str]) {
        self.in_pod(i, &["nft", "add", "table", "inet", "flk"]);
        let chain = "{ type filter hook input priority 0; }";
        self.in_pod(i, &["nft", "add", "chain", "inet", "flk", "in", chain]);
        let mut add = vec!["nft", "add", "rule", "inet", "flk", "in"];
        add.extend_from_slice(rule);
        add.push("drop");
        self.in_pod(i, &add);
    }

    /// Adds pod `i`: its namespace, a veth with the host side on the bridge.
    pub fn add_pod(&mut self, i: usize) -> &Pod {
        let ns = format!("{}p{i}", self.id);
        let host_if = format!("{}v{i}", self.id);
        let node = self.node_ns();
        sh(&["ip", "netns", "add", &ns]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.accept_dad=0",
        ]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.default.accept_dad=0",
        ]);
        sh(&[
            "ip", "link", "add", &host_if, "netns", &node, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ]);
        let v4 = format!("10.77.{}.{}", self.subnet, i + 2);
        let v6 = format!("fd77:{}::{}", self.subnet, i + 2);
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("{v4}/24"),
            "dev",
            "eth0",
        ]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        sh(&[
            "ip", "netns", "exec", &ns, "ip", "link", "set", "eth0", "up",
        ]);
        sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        self.node(&["ip", "link", "set", &host_if, "master", "br0"]);
        self.node(&["ip", "link", "set", &host_if, "up"]);
        self.pods.push(Pod {
            ns,
            host_if,
            v4: v4.parse().unwrap(),
            v6: v6.parse().unwrap(),
        });
        self.pods.last().unwrap()
    }

    pub fn pod_ns_path(&self, i: usize) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.pods[i].ns))
    }

    /// Captures of both directions of every pod's host-side veth, in `dir`
    /// (file names start with `prefix`): ingress is `from_pod`, egress `to_pod`.
    pub fn capture_pods(&self, dir: &Path, prefix: &str) -> Vec<(ObservationPoint, Capture)> {
        let node = self.node_ns();
        let mut caps = Vec::new();
        for (i, p) in self.pods.iter().enumerate() {
            for (q, point) in [
                ("in", ObservationPoint::FromPod),
                ("out", ObservationPoint::ToPod),
            ] {
                let file = dir.join(format!("{prefix}{i}{q}.pcap"));
                caps.push((point, Capture::start(&node, &p.host_if, q, file)));
            }
        }
        caps
    }

    /// Starts a datapath observing the node namespace (timeouts long enough
    /// that only the stop evicts).
    pub fn collector(
        &self,
    ) -> (
        Datapath,
        tokio::sync::mpsc::Receiver<Vec<FlowRecord>>,
        DatapathMetrics,
    ) {
        self.collector_with(Duration::from_secs(60), Duration::from_secs(60))
    }

    /// `collector` with the given active and idle timeouts.
    pub fn collector_with(
        &self,
        active_timeout: Duration,
        idle_timeout: Duration,
    ) -> (
        Datapath,
        tokio::sync::mpsc::Receiver<Vec<FlowRecord>>,
        DatapathMetrics,
    ) {
        self.collector_configured(|c| {
            c.active_timeout = active_timeout;
            c.idle_timeout = idle_timeout;
        })
    }

    /// `collector` with its configuration changed by `f` first.
    pub fn collector_configured(
        &self,
        f: impl FnOnce(&mut DatapathConfig),
    ) -> (
        Datapath,
        tokio::sync::mpsc::Receiver<Vec<FlowRecord>>,
        DatapathMetrics,
    ) {
        let mut registry = Registry::default();
        let metrics = DatapathMetrics::new(&mut registry);
        let mut config = DatapathConfig {
            netns: Some(self.node_ns_path()),
            active_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            ..DatapathConfig::for_tests()
        };
        f(&mut config);
        let (dp, rx) = Datapath::start(config, metrics.clone()).expect("start datapath");
        (dp, rx, metrics)
    }

    /// A counter of the kernel's SNMP MIB (`/proc/net/snmp`, e.g. `Tcp`
    /// `RetransSegs`) in the namespace `ns`: nstat's source.
    pub fn snmp(ns: &str, group: &str, field: &str) -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "cat", "/proc/net/snmp"])
            .output()
            .expect("ip netns exec cat");
        let text = String::from_utf8_lossy(&out.stdout);
        let prefix = format!("{group}:");
        let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
        let (names, values) = (lines.next().expect(group), lines.next().expect(group));
        let i = names
            .split_whitespace()
            .position(|n| n == field)
            .unwrap_or_else(|| panic!("{group} {field} not in /proc/net/snmp"));
        values.split_whitespace().nth(i).unwrap().parse().unwrap()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for p in &self.pods {
            let _ = Command::new("ip").args(["netns", "del", &p.ns]).output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.node_ns()])
            .output();
    }
}

/// Runs `f` on a thread inside the network namespace at `path`.
pub fn in_netns<T: Send + 'static>(
    path: PathBuf,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a valid netns fd, this thread only.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        f()
    })
}

/// Stops the datapath and collects every record it reported.
pub fn finish(
    dp: Datapath,
    mut rx: tokio::sync::mpsc::Receiver<Vec<FlowRecord>>,
) -> Vec<FlowRecord> {
    dp.stop().expect("stop");
    let mut all = Vec::new();
    while let Ok(batch) = rx.try_recv() {
        all.extend(batch);
    }
    all
}

/// Flow identity used to compare with captures.
pub type Tuple = (IpAddr, IpAddr, u16, u16, u8);

/// Stops the captures and asserts that packets and bytes of every captured
/// tuple `keep` selects equal the collector's totals at the same observation
/// point; returns how many were compared.
pub fn assert_equal_captures(
    caps: Vec<(ObservationPoint, Capture)>,
    got: &HashMap<(Tuple, ObservationPoint), (u64, u64)>,
    keep: impl Fn(&Tuple) -> bool,
) -> usize {
    let mut compared = 0;
    for (point, cap) in caps {
        for (tuple, want) in cap.stop().into_iter().filter(|(t, _)| keep(t)) {
            let have = got.get(&(tuple, point)).copied().unwrap_or_default();
            assert_eq!(
                have, want,
                "{tuple:?} at {point}: collector vs capture (packets, bytes)"
            );
            compared += 1;
        }
    }
    compared
}

/// Packets and bytes per (tuple, observation point) of forwarded rows.
pub fn totals(records: &[FlowRecord]) -> HashMap<(Tuple, ObservationPoint), (u64, u64)> {
    let mut m: HashMap<_, (u64, u64)> = HashMap::new();
    for r in records.iter().filter(|r| r.verdict == Verdict::Forwarded) {
        let t = (
            r.src.ip,
            r.dst.ip,
            r.src.port.unwrap_or(0),
            r.dst.port.unwrap_or(0),
            r.protocol.number(),
        );
        let e = m.entry((t, r.observation_point)).or_default();
        e.0 += r.packets;
        e.1 += r.bytes;
    }
    m
}

/// A tcpdump capture of one interface in one direction.
pub struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    pub fn start(ns: &str, iface: &str, direction: &str, file: PathBuf) -> Capture {
        let mut child = Command::new("ip")
            .args([
                "netns", "exec", ns, "tcpdump", "-i", iface, "-Q", direction, "-U", "-B", "8192",
                "-w",
            ])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        // Wait for "listening on".
        use std::io::Read;
        let mut err = child.stderr.take().unwrap();
        let mut buf = [0u8; 256];
        let _ = err.read(&mut buf);
        std::thread::sleep(Duration::from_millis(500));
        Capture { child, file }
    }

    /// Stops tcpdump and sums packets / L3 bytes per tuple (pcap.rs).
    pub fn stop(self) -> HashMap<Tuple, (u64, u64)> {
        pcap::tuples(&self.stop_file())
    }

    /// Stops tcpdump and counts the TCP segments with RST per tuple (pcap.rs).
    pub fn stop_resets(self) -> HashMap<Tuple, u64> {
        pcap::resets(&self.stop_file())
    }

    fn stop_file(mut self) -> PathBuf {
        // Let tcpdump read what the kernel buffered before it is interrupted (a
        // loaded machine delays it).
        std::thread::sleep(Duration::from_millis(1000));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        self.file
    }
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `count` ICMP / ICMPv6 echo requests from pod `pod` to `dst` (raw
/// socket) and waits for each reply.
pub fn ping(t: &Topology, pod: usize, dst: IpAddr, count: u16) {
    ping_from(t.pod_ns_path(pod), dst, count);
}

/// `ping` from the namespace at `ns`.
pub fn ping_from(ns: PathBuf, dst: IpAddr, count: u16) {
    in_netns(ns, move || {
        let (domain, proto, ty) = match dst {
            IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP, 8u8),
            IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128u8),
        };
        let sock = socket2_raw(domain, proto);
        let addr: std::net::SocketAddr = (dst, 0).into();
        for seq in 0..count {
            let mut pkt = vec![ty, 0, 0, 0, 0x12, 0x34, (seq >> 8) as u8, seq as u8];
            pkt.extend_from_slice(&[0xab; 32]);
            if dst.is_ipv4() {
                let c = checksum(&pkt);
                pkt[2..4].copy_from_slice(&c.to_be_bytes());
            }
            sock.send_to(&pkt, addr);
            sock.wait_reply(if dst.is_ipv4() { 0 } else { 129 }, dst.is_ipv4());
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .join()
    .unwrap();
}

struct RawSock(i32);

fn socket2_raw(domain: i32, proto: i32) -> RawSock {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(domain, libc::SOCK_RAW, proto) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    let tv = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: valid option pointer and length.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as u32,
        )
    };
    RawSock(fd)
}

impl RawSock {
    fn send_to(&self, pkt: &[u8], addr: std::net::SocketAddr) {
        let rc = match addr {
            std::net::SocketAddr::V4(a) => {
                // SAFETY: zeroed sockaddr_in then filled.
                let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                sa.sin_family = libc::AF_INET as u16;
                sa.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                // SAFETY: valid buffer and address.
                unsafe {
                    libc::sendto(
                        self.0,
                        pkt.as_ptr().cast(),
                        pkt.len(),
                        0,
                        (&sa as *const libc::sockaddr_in).cast(),
                        size_of::<libc::sockaddr_in>() as u32,
                    )
                }
            }
            std::net::SocketAddr::V6(a) => {
                // SAFETY: zeroed sockaddr_in6 then filled.
                let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
                sa.sin6_family = libc::AF_INET6 as u16;
                sa.sin6_addr.s6_addr = a.ip().octets();
                // SAFETY: valid buffer and address.
                unsafe {
                    libc::sendto(
                        self.0,
                        pkt.as_ptr().cast(),
                        pkt.len(),
                        0,
                        (&sa as *const libc::sockaddr_in6).cast(),
                        size_of::<libc::sockaddr_in6>() as u32,
                    )
                }
            }
        };
        assert!(rc > 0, "sendto: {}", std::io::Error::last_os_error());
    }

    /// Waits for an echo reply (IPv4 raw sockets include the IP header).
    fn wait_reply(&self, ty: u8, v4: bool) {
        let mut buf = [0u8; 1500];
        for _ in 0..20 {
            // SAFETY: valid buffer.
            let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
            assert!(n > 0, "no echo reply: {}", std::io::Error::last_os_error());
            let off = if v4 { usize::from(buf[0] & 0xf) * 4 } else { 0 };
            if buf[off] == ty {
                return;
            }
        }
        panic!("no echo reply");
    }
}

impl Drop for RawSock {
    fn drop(&mut self) {
        // SAFETY: closing our own fd.
        unsafe { libc::close(self.0) };
    }
}
