//! API server discovery with the real kube client against the fake API server
//! (protocol-faithful: list then watch with resourceVersion, namespaced paths,
//! label and field selectors; there is no real API server here). The `kubernetes`
//! Service in `default` and its EndpointSlices name the addresses; a Service of the
//! same name elsewhere and other services' slices do not; the API server moving to
//! another address, and its slice going away, change the set without a restart;
//! the latency metrics follow the discovered set.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use flowlake_collector::enrich::{ApiServerAddresses, apiserver};
use flowlake_collector::retina::ApiServerLatency;
use flowlake_schemas::{Endpoint, FlowRecord, ObservationPoint, Protocol, TcpHealth, Verdict};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::fake_kube::FakeKube;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn service(ns: &str, cluster_ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": ns, "labels": {"component": "apiserver"}},
        "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "type": "ClusterIP",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}})
}

fn slice(ns: &str, name: &str, service: &str, addrs: &[&str]) -> Value {
    let endpoints: Vec<Value> = addrs
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": true}}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "endpoints": endpoints,
        "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]})
}

async fn until(addrs: &ApiServerAddresses, want: &[&str]) {
    let want: Vec<IpAddr> = want.iter().map(|s| ip(s)).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while addrs.get() != want {
        assert!(
            Instant::now() < deadline,
            "addresses {:?}, want {want:?}",
            addrs.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A node-level record of a connection to `dst` with a 2 ms handshake.
fn to(dst: &str) -> FlowRecord {
    let t = chrono::Utc::now();
    FlowRecord {
        interval_start: t,
        interval_end: t,
        cluster: "c".into(),
        node: "n1".into(),
        observation_point: ObservationPoint::ToNetwork,
        interface: Some("eth0".into()),
        protocol: Protocol::Tcp,
        src: Endpoint::new(ip("192.168.0.2"), Some(40000)),
        dst: Endpoint::new(ip(dst), Some(6443)),
        icmp: None,
        packets: 3,
        bytes: 180,
        wire_packets: None,
        tcp_flags: Some(0x12),
        verdict: Verdict::Forwarded,
        drop_reason: None,
        tcp: Some(TcpHealth {
            handshake_us: Some(2_000),
            ..TcpHealth::default()
        }),
        dns: None,
    }
}

/// Handshakes observed, as `/metrics` says.
fn handshakes(registry: &Registry) -> u64 {
    let text = flowlake_collector::retina::encode(registry).unwrap();
    let name = "networkobservability_adv_node_apiserver_tcp_handshake_latency_count ";
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{text}"))
}

#[tokio::test]
async fn discovers_the_apiserver_from_its_service_and_endpointslices() {
    flowlake_collector::enrich::install_crypto_provider();
    let kube = FakeKube::default();
    kube.apply(service("default", "10.96.0.1"));
    kube.apply(slice(
        "default",
        "kubernetes",
        "kubernetes",
        &["192.168.0.10"],
    ));
    // Decoys: the same name in another namespace, another service's slice.
    kube.apply(service("shop", "10.96.9.9"));
    kube.apply(slice("shop", "kubernetes", "kubernetes", &["10.0.0.6"]));
    kube.apply(slice("default", "web-x1", "web", &["10.0.0.5"]));
    let addr = kube.serve().await;
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
            .unwrap();

    let mut registry = Registry::default();
    let latency = ApiServerLatency::register(&mut registry, ApiServerAddresses::default());
    let shutdown = CancellationToken::new();
    let task = apiserver::start(client, latency.addresses().clone(), shutdown.clone());
    until(latency.addresses(), &["10.96.0.1", "192.168.0.10"]).await;

    // As kube-rs asks: namespaced, with the selectors, then watches.
    let requests = kube.requests();
    let asked = |path: &str, query: &str| {
        requests
            .iter()
            .any(|r| r.starts_with(path) && r.contains(query))
    };
    let services = "/api/v1/namespaces/default/services?";
    let slices = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?";
    assert!(
        asked(services, "fieldSelector=metadata.name%3Dkubernetes"),
        "{requests:#?}"
    );
    assert!(
        asked(
            slices,
            "labelSelector=kubernetes.io%2Fservice-name%3Dkubernetes"
        ),
        "{requests:#?}"
    );

    latency.observe(&to("192.168.0.10"));
    assert_eq!(handshakes(&registry), 1);

    // The API server moves: the slice names a new address, the old one stops counting.
    kube.apply(slice(
        "default",
        "kubernetes",
        "kubernetes",
        &["192.168.0.11"],
    ));
    until(latency.addresses(), &["10.96.0.1", "192.168.0.11"]).await;
    latency.observe(&to("192.168.0.10"));
    assert_eq!(handshakes(&registry), 1);
    latency.observe(&to("192.168.0.11"));
    assert_eq!(handshakes(&registry), 2);
    assert!(
        kube.requests()
            .iter()
            .any(|r| r.starts_with(slices) && r.contains("watch=true")),
        "the move came through a watch"
    );

    // The slice goes away: only the cluster IP is left.
    kube.delete("EndpointSlice", "default/kubernetes");
    until(latency.addresses(), &["10.96.0.1"]).await;

    shutdown.cancel();
    task.await.unwrap();
}
