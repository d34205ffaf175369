//! The capture engine on the real kernel: an AF_PACKET capture of a pod's
//! veth against tcpdump on the same veth in the same window (packets and
//! bytes per direction), tshark reading the pcapng back, the filter honoured,
//! limits stopping the capture, and a pod that starts mid-capture joining it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowlake_collector::capture::engine::{self, CaptureSpec, EngineConfig, Target};
use flowlake_collector::capture::pcapng::{Direction, read};
use flowlake_collector::capture::{Filter, Limits, StopReason, Summary};

use super::harness::*;

/// Packets and wire bytes per direction of IPv4 packets between `a` and `b`.
type Totals = HashMap<Direction, (u64, u64)>;

fn between(frame: &[u8], a: IpAddr, b: IpAddr) -> bool {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return false;
    }
    let ip = |o: usize| IpAddr::from(<[u8; 4]>::try_from(&frame[o..o + 4]).unwrap());
    let (s, d) = (ip(26), ip(30));
    (s == a && d == b) || (s == b && d == a)
}

/// A tcpdump of one direction of `iface` into a classic pcap file.
struct Tcpdump {
    child: Child,
    file: PathBuf,
    _stderr: std::io::BufReader<std::process::ChildStderr>,
}

impl Tcpdump {
    fn start(ns: &str, iface: &str, direction: &str, filter: &str, file: PathBuf) -> Tcpdump {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns", "exec", ns, "tcpdump", "-Z", "root", "-i", iface, "-Q", direction,
        ])
        .args(["--immediate-mode", "-U", "-B", "8192", "-w"])
        .arg(&file);
        if !filter.is_empty() {
            cmd.arg(filter);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        // Wait for the whole "listening on" line (stderr comes in pieces), and
        // keep the pipe open so that tcpdump's last words do not kill it.
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut err, &mut line).unwrap();
        assert!(line.contains("listening on"), "tcpdump: {line}");
        std::thread::sleep(Duration::from_millis(500));
        Tcpdump {
            child,
            file,
            _stderr: err,
        }
    }

    /// Stops tcpdump and returns (frames, wire bytes) of what `keep` selects.
    fn stop(mut self, keep: impl Fn(&[u8]) -> bool) -> (u64, u64) {
        // Let tcpdump write what the kernel queued (a loaded machine delays
        // it): wait until its file has not grown for a second.
        let size = || std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0);
        let mut last = size();
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(1000));
            if size() == last && last > 24 {
                break;
            }
            last = size();
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        pcap_totals(&self.file, keep)
    }
}

/// Frames and wire bytes of a little-endian classic pcap file (tcpdump's).
fn pcap_totals(file: &Path, keep: impl Fn(&[u8]) -> bool) -> (u64, u64) {
    let data = std::fs::read(file).unwrap();
    let mut off = 24;
    let (mut n, mut bytes) = (0, 0);
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
    while off + 16 <= data.len() {
        let caught = u32_at(off + 8) as usize;
        let wire = u64::from(u32_at(off + 12));
        if keep(&data[off + 16..off + 16 + caught]) {
            n += 1;
            bytes += wire;
        }
        off += 16 + caught;
    }
    (n, bytes)
}

fn totals(file: &read::File, keep: impl Fn(&[u8]) -> bool) -> Totals {
    let mut m = Totals::new();
    for p in file.packets.iter().filter(|p| keep(&p.data)) {
        let e = m.entry(p.direction.expect("direction flag")).or_default();
        e.0 += 1;
        e.1 += u64::from(p.original);
    }
    m
}

fn target(t: &Topology, i: usize) -> Target {
    Target {
        interface: t.pods[i].host_if.clone(),
        namespace: "shop".into(),
        pod: format!("web-{i}"),
        node: "node-a".into(),
    }
}

fn spec(id: &str, filter: &str, limits: Limits) -> CaptureSpec {
    CaptureSpec {
        id: id.into(),
        filter: Filter::compile(filter, limits.snaplen).unwrap(),
        limits,
        requested_by: "alice".into(),
    }
}

/// A capture running on its own thread, stopped by `stop` or its limits.
struct Running {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(Summary, Vec<u8>)>,
}

impl Running {
    fn start(t: &Topology, spec: CaptureSpec, targets: Arc<Mutex<Vec<Target>>>) -> Running {
        Running::start_with(t, spec, move || targets.lock().unwrap().clone())
    }

    /// Runs the engine in the node namespace, asking `next` for its targets.
    fn start_with(
        t: &Topology,
        spec: CaptureSpec,
        mut next: impl FnMut() -> Vec<Target> + Send + 'static,
    ) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let config = EngineConfig {
            netns: Some(t.node_ns_path()),
            refresh_every: Duration::from_millis(100),
            ..EngineConfig::default()
        };
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let clock = flowlake_collector::enrich::system_clock();
            engine::run(
                &spec,
                &config,
                "node-a",
                &mut next,
                Vec::new(),
                clock,
                &flag,
            )
            .unwrap()
        });
        // The sockets are open once the engine has asked for its targets.
        std::thread::sleep(Duration::from_millis(500));
        Running { stop, handle }
    }

    fn finish(self) -> (Summary, read::File, Vec<u8>) {
        self.stop.store(true, Ordering::Relaxed);
        let (summary, bytes) = self.handle.join().unwrap();
        let file = read::parse(&bytes).expect("a pcapng file");
        (summary, file, bytes)
    }
}

/// `count` UDP datagrams of `size` bytes from pod `from` to `to` (nothing
/// listens: the ICMP port-unreachable answers are traffic too).
fn udp(t: &Topology, from: usize, to: SocketAddr, count: usize, size: usize) {
    in_netns(t.pod_ns_path(from), move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..count {
            let _ = s.send_to(&vec![9u8; size], to);
            std::thread::sleep(Duration::from_millis(2));
        }
    })
    .join()
    .unwrap();
}

/// A UDP capture of pod 0 under `limits` while it sends `count` datagrams to pod 1.
fn udp_capture(
    t: &Topology,
    id: &str,
    limits: Limits,
    count: usize,
    size: usize,
) -> (Summary, read::File, Vec<u8>) {
    let targets = Arc::new(Mutex::new(vec![target(t, 0)]));
    let cap = Running::start(t, spec(id, "udp", limits), targets);
    udp(t, 0, SocketAddr::new(t.pods[1].v4, 7003), count, size);
    cap.finish()
}

/// tcpdump of pod 0's veth, one per direction, through `filter`.
fn tcpdumps(t: &Topology, filter: &str, dir: &Path) -> [(Direction, Tcpdump); 2] {
    let (node, iface) = (t.node_ns(), &t.pods[0].host_if);
    let file = |d: &str| dir.join(format!("{d}.pcap"));
    [
        (
            Direction::Inbound,
            Tcpdump::start(&node, iface, "in", filter, file("in")),
        ),
        (
            Direction::Outbound,
            Tcpdump::start(&node, iface, "out", filter, file("out")),
        ),
    ]
}

/// A capture of `targets` for one second, on this thread.
fn one_second(t: &Topology, id: &str, targets: Vec<Target>) -> (Summary, Vec<u8>) {
    let limits = Limits {
        duration: Duration::from_secs(1),
        ..Limits::DEFAULT
    };
    let config = EngineConfig {
        netns: Some(t.node_ns_path()),
        ..EngineConfig::default()
    };
    let clock = flowlake_collector::enrich::system_clock();
    let stop = AtomicBool::new(false);
    let mut next = || targets.clone();
    let spec = spec(id, "", limits);
    engine::run(
        &spec,
        &config,
        "node-a",
        &mut next,
        Vec::new(),
        clock,
        &stop,
    )
    .unwrap()
}

fn long_limits() -> Limits {
    Limits {
        duration: Duration::from_secs(120),
        ..Limits::DEFAULT
    }
}

#[test]
fn capture_of_a_pod_veth_equals_tcpdump_per_direction() {
    if !privileged() {
        return;
    }
    let t = Topology::new(60, 2);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (t.pods[0].v4, t.pods[1].v4);
    let dumps = tcpdumps(&t, "", dir.path());
    let cap = Running::start(
        &t,
        spec("c-equal", "", long_limits()),
        Arc::new(Mutex::new(vec![target(&t, 0)])),
    );
    ping(&t, 0, b, 10);
    ping(&t, 1, a, 5);
    udp(&t, 0, SocketAddr::new(b, 7777), 200, 1200);
    udp(&t, 1, SocketAddr::new(a, 7778), 50, 100);
    let mut want = Totals::new();
    for (d, dump) in dumps {
        want.insert(d, dump.stop(|f| between(f, a, b)));
    }
    let (summary, file, _) = cap.finish();
    let got = totals(&file, |f| between(f, a, b));
    assert_eq!(
        got, want,
        "capture vs tcpdump per direction (packets, bytes)"
    );
    // 10 + 5 echo pairs and 250 datagrams at least crossed pod 0's veth.
    assert!(want[&Direction::Inbound].0 >= 215, "{want:?}");
    assert!(want[&Direction::Outbound].0 >= 15, "{want:?}");
    assert_eq!(summary.reason, StopReason::Stopped);
    assert_eq!(summary.lost, 0);
    let i = &summary.interfaces[0];
    assert_eq!(i.packets_in + i.packets_out, summary.packets);
    assert_eq!(summary.packets, file.packets.len() as u64);
    assert_eq!(file.interfaces.len(), 1);
    assert_eq!(file.interfaces[0].name, "shop/web-0@node-a");
    assert!(
        file.comments.iter().any(|c| c.contains("c-equal")),
        "{:?}",
        file.comments
    );
    assert!(
        file.comments
            .iter()
            .any(|c| c.contains("requested by: alice"))
    );
}

/// tshark's view of a file: per packet, the interface name and description.
fn tshark(file: &Path) -> Option<Vec<String>> {
    flowlake_testkit::tshark_fields(
        file,
        &["frame.interface_name", "frame.interface_description"],
    )
}

#[test]
fn a_pod_started_mid_capture_joins_and_tshark_names_both_pods() {
    if !privileged() {
        return;
    }
    let mut t = Topology::new(61, 1);
    let targets = Arc::new(Mutex::new(vec![target(&t, 0)]));
    let cap = Running::start(&t, spec("c-join", "icmp", long_limits()), targets.clone());
    // Pod 1 starts while the capture runs; the selection now includes it.
    t.add_pod(1);
    targets.lock().unwrap().push(target(&t, 1));
    std::thread::sleep(Duration::from_millis(500));
    ping(&t, 1, t.pods[0].v4, 4);
    let (summary, file, bytes) = cap.finish();
    assert_eq!(file.interfaces.len(), 2, "{:?}", file.interfaces);
    let per_if: Vec<usize> = (0..2)
        .map(|i| file.packets.iter().filter(|p| p.interface == i).count())
        .collect();
    // Each echo request and reply crosses both pods' veths.
    assert_eq!(per_if, [8, 8], "{summary:?}");
    let path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(path.path(), &bytes).unwrap();
    if let Some(lines) = tshark(path.path()) {
        assert_eq!(lines.len(), 16);
        for pod in ["web-0", "web-1"] {
            let want = format!("shop/{pod}@node-a\tnamespace=shop pod={pod} node=node-a");
            assert_eq!(
                lines.iter().filter(|l| l.starts_with(&want)).count(),
                8,
                "{lines:?}"
            );
        }
    }
}

#[test]
fn the_filter_is_applied_in_the_kernel_as_tcpdump_applies_it() {
    if !privileged() {
        return;
    }
    let t = Topology::new(62, 2);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (t.pods[0].v4, t.pods[1].v4);
    let filter = format!("udp dst port 7001 or (icmp and src host {b})");
    let dumps = tcpdumps(&t, &filter, dir.path());
    let cap = Running::start(
        &t,
        spec("c-filter", &filter, long_limits()),
        Arc::new(Mutex::new(vec![target(&t, 0)])),
    );
    udp(&t, 0, SocketAddr::new(b, 7001), 30, 300);
    udp(&t, 0, SocketAddr::new(b, 7002), 30, 300);
    ping(&t, 0, b, 3);
    let mut want = Totals::new();
    for (d, dump) in dumps {
        want.insert(d, dump.stop(|_| true));
    }
    let (summary, file, _) = cap.finish();
    assert_eq!(
        totals(&file, |_| true),
        want,
        "filtered capture vs tcpdump with the same filter"
    );
    // Only what the filter names: datagrams to 7001 and ICMP from pod 1.
    assert!(summary.packets >= 30 + 3, "{summary:?}");
    for p in &file.packets {
        let f = &p.data;
        assert!(between(f, a, b), "a packet between other hosts: {f:?}");
        let udp_7001 = f[23] == 17 && f[36..38] == 7001u16.to_be_bytes();
        let icmp_from_b = f[23] == 1 && IpAddr::from(<[u8; 4]>::try_from(&f[26..30]).unwrap()) == b;
        assert!(udp_7001 || icmp_from_b, "outside the filter: {f:?}");
    }
}

#[test]
fn limits_stop_the_capture_and_say_which() {
    if !privileged() {
        return;
    }
    let t = Topology::new(63, 2);
    // Bytes: a 20 KB file cannot hold 200 datagrams of 1200 bytes.
    let limits = Limits {
        max_bytes: 20_000,
        ..long_limits()
    };
    let (summary, file, bytes) = udp_capture(&t, "c-bytes", limits, 200, 1200);
    assert_eq!(summary.reason, StopReason::MaxBytes, "{summary:?}");
    assert_eq!(
        summary.file_bytes,
        bytes.len() as u64,
        "the summary counts the whole file"
    );
    assert!(
        summary.file_bytes <= 20_000,
        "the whole file within max_bytes: {}",
        summary.file_bytes
    );
    assert!(
        file.packets.len() >= 10 && file.packets.len() < 200,
        "{}",
        file.packets.len()
    );
    assert!(
        file.statistics[0].1.contains("stopped by max_bytes"),
        "{:?}",
        file.statistics
    );
    // Packets: exactly the limit.
    let limits = Limits {
        max_packets: 7,
        ..long_limits()
    };
    let (summary, file, _) = udp_capture(&t, "c-packets", limits, 20, 100);
    assert_eq!(summary.reason, StopReason::MaxPackets);
    assert_eq!(file.packets.len(), 7);
    // Duration: a 1 s capture ends by itself.
    let (summary, _) = one_second(&t, "c-time", vec![target(&t, 0)]);
    assert_eq!(summary.reason, StopReason::Duration);
    assert!(summary.end - summary.start >= chrono::Duration::seconds(1));
}

#[test]
fn an_interface_that_cannot_be_opened_is_reported_not_fatal() {
    if !privileged() {
        return;
    }
    let t = Topology::new(64, 1);
    let mut gone = target(&t, 0);
    gone.interface = "nosuchveth0".into();
    let (summary, bytes) = one_second(&t, "c-skip", vec![target(&t, 0), gone]);
    assert_eq!(summary.interfaces.len(), 1);
    assert_eq!(summary.skipped.len(), 1);
    assert!(
        summary.skipped[0].1.contains("no such interface"),
        "{:?}",
        summary.skipped
    );
    assert_eq!(read::parse(&bytes).unwrap().interfaces.len(), 1);
}

#[test]
fn packets_the_kernel_could_not_deliver_are_counted_in_the_summary_and_the_file() {
    if !privileged() {
        return;
    }
    let t = Topology::new(70, 2);
    let (a, b) = (t.pods[0].v4, t.pods[1].v4);
    // The engine opens its socket, then blocks in its next look for targets
    // until released: meanwhile nothing reads the socket and it overflows.
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let first = target(&t, 0);
    let mut asked = false;
    let next = move || {
        if asked {
            let _ = gate.recv();
        }
        asked = true;
        vec![first.clone()]
    };
    let running = Running::start_with(&t, spec("c-drops", "udp", long_limits()), next);
    // 12,000 datagrams of 1400 bytes: more than the socket's 8 MiB ring holds.
    // Paced so that none is lost before the veth (tcpdump with an 8 MiB
    // buffer is no truth here: it drops some itself).
    let sent = in_netns(t.pod_ns_path(0), move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        let mut sent = 0u64;
        for i in 0..12_000 {
            sent += u64::from(s.send_to(&[7u8; 1400], SocketAddr::new(b, 7005)).is_ok());
            if i % 50 == 49 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        sent
    })
    .join()
    .unwrap();
    drop(release);
    std::thread::sleep(Duration::from_secs(1));
    let (summary, file, _) = running.finish();
    let written = totals(&file, |f| between(f, a, b))[&Direction::Inbound].0;
    assert!(summary.lost > 0, "{summary:?}");
    assert_eq!(
        written + summary.lost,
        sent,
        "written + lost = the datagrams sent through the veth"
    );
    assert_eq!(summary.interfaces[0].lost, summary.lost);
    let (_, comment, dropped) = &file.statistics[0];
    assert_eq!(*dropped, summary.lost, "isb_osdrop");
    let said = format!("{} packets the kernel could not deliver", summary.lost);
    assert!(comment.contains(&said), "{comment}");
}
