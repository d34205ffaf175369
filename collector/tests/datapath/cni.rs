//! A CNI in front: programs that end the tc chain on the pod veths (pass,
//! redirect to the peer as Cilium's host routing does, plain redirect),
//! attached before or after the collector, in TCX and clsact. The flow
//! programs run first, so their counts still equal tcpdump's exactly.
//! The CNI stand-ins are collector/tests/fixtures/cni.bpf.c, compiled here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aya::programs::links::LinkOrder;
use aya::programs::tc::{NlOptions, TcAttachOptions, TcHandle, qdisc_add_clsact};
use aya::programs::{SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use flowlake_collector::attach::TcMode;
use flowlake_collector::{Datapath, DatapathConfig, DatapathMetrics};
use flowlake_schemas::{FlowRecord, ObservationPoint};
use prometheus_client::registry::Registry;

use super::harness::*;
use super::talkers::tcp_transfer;

/// The fixture object, compiled once per test run; None (reason printed) without clang.
fn fixture() -> Option<&'static [u8]> {
    static OBJECT: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    let object = OBJECT.get_or_init(|| {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cni.bpf.c");
        let out = tempfile::Builder::new()
            .suffix(".o")
            .tempfile()
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(std::env::var("CLANG").unwrap_or_else(|_| "clang".into()));
        cmd.args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"]);
        for multiarch in [
            "/usr/include/x86_64-linux-gnu",
            "/usr/include/aarch64-linux-gnu",
        ] {
            cmd.args(["-idirafter", multiarch]);
        }
        let status = cmd.arg("-c").arg(&src).arg("-o").arg(out.path()).output();
        match status {
            Ok(o) if o.status.success() => std::fs::read(out.path()).map_err(|e| e.to_string()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).into_owned()),
            Err(e) => Err(format!("no clang: {e}")),
        }
    });
    match object {
        Ok(o) => Some(o),
        Err(e) if std::env::var("FLOWLAKE_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") => {
            panic!("cannot compile the CNI fixture: {e}")
        }
        Err(e) => {
            eprintln!("skipped: cannot compile the CNI fixture: {e}");
            None
        }
    }
}

/// One fixture program on one hook of a host-side veth, like a CNI puts it
/// there: TCX at the head of the chain, or clsact at priority 1, handle 1
/// (Cilium's). Detached (in the node namespace) on drop.
struct CniProgram {
    bpf: Option<Ebpf>,
    node: PathBuf,
}

impl CniProgram {
    fn attach(
        t: &Topology,
        program: &'static str,
        pod: usize,
        hook: TcAttachType,
        target_pod: usize,
        mode: TcMode,
    ) -> CniProgram {
        let object = fixture().expect("fixture checked by the test");
        let (dev, target) = (
            t.pods[pod].host_if.clone(),
            t.pods[target_pod].host_if.clone(),
        );
        let node = t.node_ns_path();
        let bpf = in_netns(node.clone(), move || {
            let ifindex = ifindex(&target);
            let mut bpf = EbpfLoader::new()
                .override_global("target_ifindex", &ifindex, true)
                .load(object)
                .expect("load the CNI fixture");
            let prog: &mut SchedClassifier = bpf.program_mut(program).unwrap().try_into().unwrap();
            prog.load().expect("load the CNI program");
            let options = match mode {
                TcMode::Clsact => {
                    let _ = qdisc_add_clsact(&dev);
                    TcAttachOptions::Netlink(NlOptions {
                        priority: 1,
                        handle: TcHandle::new(0, 1),
                        classid: None,
                    })
                }
                _ => TcAttachOptions::TcxOrder(LinkOrder::first()),
            };
            prog.attach_with_options(&dev, hook, options)
                .expect("attach the CNI program");
            bpf
        })
        .join()
        .unwrap();
        CniProgram {
            bpf: Some(bpf),
            node,
        }
    }
}

impl Drop for CniProgram {
    fn drop(&mut self) {
        // Netlink detaches by interface index: in the node namespace only.
        if let Some(bpf) = self.bpf.take() {
            let _ = in_netns(self.node.clone(), move || drop(bpf)).join();
        }
    }
}

fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a valid NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name}");
    i
}

/// A datapath on the node namespace attaching in `mode`, checking its place
/// in each hook every `check_every`.
fn collector(
    t: &Topology,
    mode: TcMode,
    check_every: Duration,
) -> (
    Datapath,
    tokio::sync::mpsc::Receiver<Vec<FlowRecord>>,
    DatapathMetrics,
) {
    let metrics = DatapathMetrics::new(&mut Registry::default());
    let config = DatapathConfig {
        netns: Some(t.node_ns_path()),
        active_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
        tc_mode: mode,
        attach_check_every: check_every,
        ..DatapathConfig::for_tests()
    };
    let (dp, rx) = Datapath::start(config, metrics.clone()).expect("start datapath");
    (dp, rx, metrics)
}

/// Pod-to-pod traffic both ways (TCP, then ICMP), then the collector's totals
/// against the captures of both host-side veths, in both directions: every
/// captured tuple and every counted one must match. Returns the packets
/// compared per observation point.
fn transfer_and_compare(
    t: &Topology,
    caps: Vec<(ObservationPoint, Capture)>,
    dp: Datapath,
    rx: tokio::sync::mpsc::Receiver<Vec<FlowRecord>>,
) -> HashMap<ObservationPoint, u64> {
    let (a, b) = (t.pods[0].v4, t.pods[1].v4);
    let to = SocketAddr::new(b, 5201);
    assert_eq!(tcp_transfer(t, 0, t.pod_ns_path(1), to, 300_000), 300_000);
    ping(t, 1, a, 3);
    let ours = |ip: &std::net::IpAddr| t.pods.iter().any(|p| p.v4 == *ip || p.v6 == *ip);
    let records = finish(dp, rx);
    let got: HashMap<_, _> = totals(&records)
        .into_iter()
        .filter(|((tuple, _), _)| ours(&tuple.0) && ours(&tuple.1))
        .collect();
    let mut captured: HashMap<(Tuple, ObservationPoint), (u64, u64)> = HashMap::new();
    for (point, cap) in caps {
        for (tuple, (p, b)) in cap.stop() {
            if ours(&tuple.0) && ours(&tuple.1) {
                let e = captured.entry((tuple, point)).or_default();
                e.0 += p;
                e.1 += b;
            }
        }
    }
    assert_eq!(got, captured, "collector vs tcpdump, per (tuple, point)");
    let mut per_point = HashMap::new();
    for ((_, point), (packets, _)) in got {
        *per_point.entry(point).or_default() += packets;
    }
    per_point
}

/// `cni_pass` on both hooks of both pod veths.
fn passing_everywhere(t: &Topology, mode: TcMode) -> Vec<CniProgram> {
    let mut cni = Vec::new();
    for pod in 0..2 {
        for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
            cni.push(CniProgram::attach(t, "cni_pass", pod, hook, pod, mode));
        }
    }
    cni
}

/// Asserts that more than a handful of packets were compared at `point`.
fn assert_seen(seen: &HashMap<ObservationPoint, u64>, point: ObservationPoint) {
    assert!(
        seen.get(&point).is_some_and(|n| *n > 10),
        "{point}: {seen:?}"
    );
}

/// A CNI program on every hook of both pod veths, then the collector.
fn chain_ended_before_collector(subnet: u8, mode: TcMode) {
    if !privileged() || fixture().is_none() {
        return;
    }
    let t = Topology::new(subnet, 2);
    let _cni = passing_everywhere(&t, mode);
    let dir = tempfile::tempdir().unwrap();
    let caps = t.capture_pods(dir.path(), "c");
    let (dp, rx, _metrics) = collector(&t, mode, Duration::from_millis(200));
    let seen = transfer_and_compare(&t, caps, dp, rx);
    assert_seen(&seen, ObservationPoint::FromPod);
    assert_seen(&seen, ObservationPoint::ToPod);
}

#[test]
fn cni_ending_the_chain_before_the_collector_tcx() {
    chain_ended_before_collector(41, TcMode::Tcx);
}

#[test]
fn cni_ending_the_chain_before_the_collector_clsact() {
    chain_ended_before_collector(42, TcMode::Clsact);
}

/// The collector first, then a CNI program on every hook ahead of it: the
/// collector attaches ahead again (counted in its metric) before traffic.
fn chain_ended_after_collector(subnet: u8, mode: TcMode, check_every: Duration) {
    if !privileged() || fixture().is_none() {
        return;
    }
    let t = Topology::new(subnet, 2);
    let dir = tempfile::tempdir().unwrap();
    let caps = t.capture_pods(dir.path(), "c");
    let (dp, rx, metrics) = collector(&t, mode, check_every);
    assert_eq!(metrics.reattachments.get(), 0);
    let _cni = passing_everywhere(&t, mode);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics.reattachments.get() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metrics.reattachments.get(), 4, "each of the 4 hooks once");
    let seen = transfer_and_compare(&t, caps, dp, rx);
    assert_seen(&seen, ObservationPoint::FromPod);
    assert_seen(&seen, ObservationPoint::ToPod);
    assert_eq!(
        metrics.reattachments.get(),
        4,
        "no fight over the first place"
    );
}

#[test]
fn cni_attaching_after_the_collector_tcx() {
    // TCX has no notifications: the periodic check finds it.
    chain_ended_after_collector(43, TcMode::Tcx, Duration::from_millis(200));
}

#[test]
fn cni_attaching_after_the_collector_clsact() {
    // The filter's netlink notification, long before any periodic check.
    chain_ended_after_collector(44, TcMode::Clsact, Duration::from_secs(3600));
}

/// Each pod veth's ingress hands packets straight to the other pod: with
/// `bpf_redirect_peer` the host veth's egress hook never runs (nothing to
/// see there for the collector or tcpdump), so the ingress side counts it;
/// with `bpf_redirect` the packet leaves through the other veth's egress.
fn redirected(subnet: u8, program: &'static str) -> HashMap<ObservationPoint, u64> {
    let t = Topology::new(subnet, 2);
    let mode = TcMode::Auto;
    let _cni = [
        CniProgram::attach(&t, program, 0, TcAttachType::Ingress, 1, mode),
        CniProgram::attach(&t, program, 1, TcAttachType::Ingress, 0, mode),
    ];
    let dir = tempfile::tempdir().unwrap();
    let caps = t.capture_pods(dir.path(), "r");
    let (dp, rx, _metrics) = collector(&t, mode, Duration::from_millis(200));
    transfer_and_compare(&t, caps, dp, rx)
}

#[test]
fn cni_redirecting_to_the_peer() {
    if !privileged() || fixture().is_none() {
        return;
    }
    let seen = redirected(45, "cni_redirect_peer");
    assert_seen(&seen, ObservationPoint::FromPod);
    assert_eq!(
        seen.get(&ObservationPoint::ToPod),
        None,
        "egress skipped: {seen:?}"
    );
}

#[test]
fn cni_redirecting_to_the_other_veth() {
    if !privileged() || fixture().is_none() {
        return;
    }
    let seen = redirected(46, "cni_redirect");
    assert_seen(&seen, ObservationPoint::FromPod);
    assert_seen(&seen, ObservationPoint::ToPod);
}
