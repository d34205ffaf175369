//! A capture selected by namespace and labels on a lab node: pods resolved
//! to their veths through the node's routes (a routed CNI) or through the
//! bridge they are ports of (a bridge CNI), a matching pod that starts
//! mid-capture included, unselected pods absent.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowlake_collector::capture::engine::{CaptureSpec, EngineConfig};
use flowlake_collector::capture::pcapng::read;
use flowlake_collector::capture::runner::{resolve_interfaces, run_on_node};
use flowlake_collector::capture::{Filter, Limits, PodInfo, Selector, StopReason};

use super::harness::*;

/// Pod `i` as Kubernetes would list it, with a /32 route to it through its
/// veth in the node namespace (a routed CNI's layout; the bridge still
/// carries the lab's traffic).
fn listed(t: &Topology, i: usize, app: &str) -> PodInfo {
    let ip = t.pods[i].v4;
    t.node(&[
        "ip",
        "route",
        "add",
        &format!("{ip}/32"),
        "dev",
        &t.pods[i].host_if,
    ]);
    PodInfo {
        namespace: "shop".into(),
        name: format!("{app}-{i}"),
        node: "node-a".into(),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        ips: vec![ip],
        interface: None,
    }
}

#[test]
fn pods_resolve_to_their_veths_through_the_routes() {
    if !privileged() {
        return;
    }
    let t = Topology::new(65, 2);
    let pods = vec![listed(&t, 0, "web"), listed(&t, 1, "db")];
    let mut unrouted = pods[0].clone();
    unrouted.ips = vec!["10.200.0.9".parse().unwrap()];
    let all = [pods, vec![unrouted]].concat();
    let got = resolve_interfaces(Some(&t.node_ns_path()), all);
    let names: Vec<Option<&str>> = got.iter().map(|p| p.interface.as_deref()).collect();
    assert_eq!(
        names,
        [
            Some(t.pods[0].host_if.as_str()),
            Some(t.pods[1].host_if.as_str()),
            None
        ],
        "a route to nowhere (or through a non-veth) resolves to no interface"
    );
}

#[test]
fn pods_on_a_bridge_resolve_to_their_ports_before_any_traffic() {
    if !privileged() {
        return;
    }
    let t = Topology::new(71, 3);
    // A bridge CNI's layout: the bridge is the pods' gateway, no per-pod
    // routes, and no packet has crossed it yet (no neighbour or FDB entry).
    t.node(&["ip", "addr", "add", "10.77.71.1/24", "dev", "br0"]);
    t.node(&["ip", "addr", "add", "fd77:71::1/64", "dev", "br0", "nodad"]);
    let pod = |i: usize, ips: Vec<std::net::IpAddr>| PodInfo {
        namespace: "shop".into(),
        name: format!("web-{i}"),
        node: "node-a".into(),
        labels: BTreeMap::new(),
        ips,
        interface: None,
    };
    let pods = vec![
        pod(2, vec![t.pods[2].v4]),
        pod(0, vec![t.pods[0].v4]),
        pod(1, vec![t.pods[1].v6]),
        pod(9, vec!["10.77.71.200".parse().unwrap()]),
    ];
    let got = resolve_interfaces(Some(&t.node_ns_path()), pods);
    let names: Vec<Option<&str>> = got.iter().map(|p| p.interface.as_deref()).collect();
    assert_eq!(
        names,
        [
            Some(t.pods[2].host_if.as_str()),
            Some(t.pods[0].host_if.as_str()),
            Some(t.pods[1].host_if.as_str()),
            None
        ],
        "each pod's own port of the bridge, by IPv4 or IPv6; an address no port's peer holds: none"
    );
}

#[test]
fn a_label_selected_capture_takes_matching_pods_including_one_started_mid_capture() {
    if !privileged() {
        return;
    }
    let mut t = Topology::new(66, 2);
    let running = Arc::new(Mutex::new(vec![listed(&t, 0, "web"), listed(&t, 1, "db")]));
    let limits = Limits {
        duration: Duration::from_secs(120),
        ..Limits::DEFAULT
    };
    let spec = CaptureSpec {
        id: "sel-1".into(),
        filter: Filter::compile("icmp", limits.snaplen).unwrap(),
        limits,
        requested_by: "alice".into(),
    };
    let selector = Selector::new("shop", "app=web", vec![], vec![]).unwrap();
    let config = EngineConfig {
        netns: Some(t.node_ns_path()),
        refresh_every: Duration::from_millis(100),
        ..EngineConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let (running, stop, dir) = (running.clone(), stop.clone(), dir.path().to_path_buf());
        std::thread::spawn(move || {
            let pods = move || running.lock().unwrap().clone();
            let clock = flowlake_collector::enrich::system_clock();
            run_on_node(
                &spec, &selector, &config, "node-a", &pods, &dir, clock, &stop,
            )
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // A web pod starts during the capture.
    t.add_pod(2);
    running.lock().unwrap().push(listed(&t, 2, "web"));
    std::thread::sleep(Duration::from_millis(500));
    // The db pod pings both web pods: 4 requests and replies on each web veth.
    ping(&t, 1, t.pods[0].v4, 4);
    ping(&t, 1, t.pods[2].v4, 4);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (summary, path) = handle
        .join()
        .unwrap()
        .unwrap()
        .expect("this node is selected");
    assert_eq!(summary.reason, StopReason::Stopped);
    assert_eq!(path, dir.path().join("sel-1").join("node-a.pcapng"));
    let file = read::parse(&std::fs::read(&path).unwrap()).unwrap();
    let names: Vec<&str> = file.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        ["shop/web-0@node-a", "shop/web-2@node-a"],
        "db-1 is not selected"
    );
    for i in 0..2 {
        let n = file.packets.iter().filter(|p| p.interface == i).count();
        assert_eq!(n, 8, "interface {i}: {summary:?}");
    }
    // A selector naming other nodes leaves this one out, writing nothing.
    let other = Selector::new("shop", "app=web", vec![], vec!["node-b".into()]).unwrap();
    let spec = CaptureSpec {
        id: "sel-2".into(),
        filter: Filter::compile("", 96).unwrap(),
        limits,
        requested_by: "alice".into(),
    };
    let none = run_on_node(
        &spec,
        &other,
        &EngineConfig::default(),
        "node-a",
        &Vec::new,
        dir.path(),
        flowlake_collector::enrich::system_clock(),
        &AtomicBool::new(false),
    )
    .unwrap();
    assert!(none.is_none());
    assert!(!dir.path().join("sel-2").exists());
}
