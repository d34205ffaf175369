//! The whole pipeline on the real kernel: "pods" are network namespaces on a bridge
//! (as a CNI builds them) named by a protocol-faithful fake Kubernetes API server;
//! the real eBPF collector observes them, enriches with the real kube client, ships
//! to a real ingester, which commits a Delta table that the real query service
//! answers SQL over. Talkers, drops and latency per pod come back with the right
//! names, and bytes equal an independent tcpdump capture.
//!
//! Needs root and BPF; skips with a reason otherwise, fails when
//! FLOWLAKE_REQUIRE_PRIVILEGED=1.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use flowlake_collector::enrich::{
    ClusterWatch, EnrichConfig, EnrichMetrics, Enricher, install_crypto_provider, system_clock,
};
use flowlake_collector::ship::{ShipConfig, ShipMetrics, Shipper};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[allow(dead_code)]
#[path = "../collector/tests/enrich/fake_kube.rs"]
pub(crate) mod fake_kube;
#[allow(dead_code)]
#[path = "../collector/tests/datapath/harness.rs"]
pub(crate) mod harness;

use fake_kube::FakeKube;
use harness::{Capture, Topology, in_netns, privileged};

const TRANSFER: usize = 300_000;

fn pod(name: &str, ip: IpAddr, owner: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": name.split('-').next().unwrap()},
                     "ownerReferences": [owner]},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}],
                   "startTime": "2026-01-01T00:00:00Z"}
    })
}

pub(crate) fn cluster(kube: &FakeKube, client: IpAddr, server: IpAddr) {
    kube.apply(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-1", "labels": {"topology.kubernetes.io/zone": "zone-a"}},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.77.40.1"}]}}));
    kube.apply(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "client-7d9f", "namespace": "shop",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "client", "uid": "u-client", "controller": true}]},
        "spec": {"selector": {"matchLabels": {"app": "client"}}}}));
    kube.apply(pod(
        "client-7d9f-x1",
        client,
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "client-7d9f", "uid": "u-rs", "controller": true}),
    ));
    kube.apply(pod(
        "server-0",
        server,
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "server", "uid": "u-server", "controller": true}),
    ));
}

/// An enricher watching `kube` (served on loopback) through the real kube client,
/// once it names every address of `ips`.
pub(crate) async fn enricher_of(
    kube: &FakeKube,
    ips: &[IpAddr],
    registry: &mut Registry,
    shutdown: &CancellationToken,
) -> (Enricher, ClusterWatch) {
    install_crypto_provider();
    let addr = kube.serve().await;
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
            .unwrap();
    let (enricher, watch) = Enricher::kubernetes(
        client,
        &EnrichConfig::for_tests(),
        system_clock(),
        EnrichMetrics::register(registry),
        shutdown.clone(),
    );
    let synced = async {
        while ips
            .iter()
            .any(|ip| enricher.lookup(*ip, chrono::Utc::now()).is_none())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), synced)
        .await
        .expect("initial sync");
    (enricher, watch)
}

pub(crate) async fn sql(base: &str, query: &str) -> Vec<Value> {
    let body = json!({ "sql": query }).to_string();
    let url = format!("{base}/api/v1/sql");
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-H",
            "content-type: application/json",
            "-d",
            &body,
            &url,
        ])
        .output()
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{query}: {}", String::from_utf8_lossy(&out.stdout)));
    v.as_array()
        .cloned()
        .unwrap_or_else(|| panic!("{query}: {v}"))
}

/// A listener on `to` in pod `i` reading one connection to its end; joins with
/// the bytes read.
pub(crate) fn tcp_sink(t: &Topology, i: usize, to: SocketAddr) -> std::thread::JoinHandle<usize> {
    let listener = in_netns(t.pod_ns_path(i), move || TcpListener::bind(to).unwrap())
        .join()
        .unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got.len()
    })
}

/// A TCP transfer from pod 0 to pod 1, and connection attempts that an nftables
/// rule in pod 1 drops. Returns the client's source port of the transfer.
fn traffic(t: &Topology, server: IpAddr) -> u16 {
    t.drop_input_in_pod(1, &["tcp", "dport", "5002"]);
    let to = SocketAddr::new(server, 5001);
    let sink = tcp_sink(t, 1, to);
    let port = in_netns(t.pod_ns_path(0), move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
        let port = s.local_addr().unwrap().port();
        s.write_all(&vec![7u8; TRANSFER]).unwrap();
        // Blocked by policy: the SYNs are dropped in the server pod.
        let blocked = SocketAddr::new(server, 5002);
        assert!(TcpStream::connect_timeout(&blocked, Duration::from_millis(1500)).is_err());
        port
    })
    .join()
    .unwrap();
    assert_eq!(sink.join().unwrap(), TRANSFER);
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebpf_to_sql_with_kubernetes_names() {
    if !privileged() {
        return;
    }
    let t = Topology::new(40, 2);
    let (client, server) = (t.pods[0].v4, t.pods[1].v4);
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();

    let kube = FakeKube::default();
    cluster(&kube, client, server);
    let mut registry = Registry::default();
    let (enricher, watch) = enricher_of(&kube, &[server], &mut registry, &shutdown).await;

    let table = dir.path().join("table");
    let mut ingest = flowlake_ingester::IngesterConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        wal_dir: dir.path().join("wal"),
        ..Default::default()
    };
    ingest.table.location = table.to_string_lossy().into_owned();
    ingest.flush.max_age = Duration::from_secs(1);
    let ingester = flowlake_ingester::Ingester::start(ingest).await.unwrap();
    let query = flowlake_query::QueryService::start(flowlake_query::QueryConfig::for_tests(
        table.to_string_lossy(),
    ))
    .await
    .unwrap();
    let base = format!("http://{}", query.addr());

    let (datapath, flows, _metrics) = t.collector();
    let shipper = Shipper::start(
        &ShipConfig::for_tests(
            format!("http://{}", ingester.addr()),
            dir.path().join("spool"),
        ),
        Enricher::disabled(EnrichMetrics::register(&mut Registry::default())),
        ShipMetrics::register(&mut registry),
        system_clock(),
    )
    .unwrap();
    let forward = tokio::spawn(flowlake_collector::agent::forward(
        flows,
        enricher.clone(),
        shipper.sender(),
        None,
    ));

    let capture = Capture::start(
        &t.node_ns(),
        &t.pods[1].host_if,
        "inout",
        dir.path().join("b.pcap"),
    );
    let t = tokio::task::spawn_blocking(move || {
        let port = traffic(&t, server);
        (t, port)
    });
    let (t, port) = t.await.unwrap();
    let captured = capture.stop();

    // The last interval is reported on stop; the ingester commits on shutdown.
    tokio::task::spawn_blocking(move || datapath.stop())
        .await
        .unwrap()
        .unwrap();
    forward.await.unwrap();
    shipper.shutdown().await;
    ingester.shutdown().await.unwrap();

    // Top talkers of the client pod, each packet counted once (docs/schema.md).
    let talkers = sql(&base, "select src_workload, src_workload_kind, dst_pod, dst_workload_kind, \
        sum(packets) as packets, sum(bytes) as bytes from flows \
        where src_namespace = 'shop' and src_pod = 'client-7d9f-x1' and dst_port = 5001 \
          and (observation_point = 'from_pod' or (observation_point = 'to_pod' and src_pod is null)) \
        group by 1, 2, 3, 4").await;
    assert_eq!(talkers.len(), 1, "{talkers:?}");
    let row = &talkers[0];
    assert_eq!(row["src_workload"], "client", "ReplicaSet → Deployment");
    assert_eq!(row["src_workload_kind"], "Deployment");
    assert_eq!(row["dst_pod"], "server-0");
    assert_eq!(row["dst_workload_kind"], "StatefulSet");
    let (packets, bytes) = captured[&(client, server, port, 5001, 6)];
    assert_eq!(
        row["packets"].as_u64(),
        Some(packets),
        "packets equal tcpdump's"
    );
    assert_eq!(row["bytes"].as_u64(), Some(bytes), "bytes equal tcpdump's");

    // Drops per pod by reason: the policy drop is attributed to the server pod.
    let drops = sql(
        &base,
        "select dst_pod, drop_reason, sum(packets) as packets from flows \
        where verdict = 'dropped' and dst_namespace = 'shop' and dst_port = 5002 group by 1, 2",
    )
    .await;
    assert!(
        drops.iter().any(|d| d["dst_pod"] == "server-0"
            && d["drop_reason"] == "NETFILTER_DROP"
            && d["packets"].as_u64() >= Some(1)),
        "{drops:?}"
    );

    // Latency per pod: the client's connection has a smoothed RTT and a handshake time.
    let latency = sql(
        &base,
        "select max(tcp_srtt_us) as srtt, max(tcp_handshake_us) as handshake from flows \
        where src_pod = 'client-7d9f-x1' and dst_port = 5001",
    )
    .await;
    assert!(
        latency[0]["srtt"].as_u64().is_some_and(|v| v > 0),
        "{latency:?}"
    );
    assert!(
        latency[0]["handshake"].as_u64().is_some_and(|v| v > 0),
        "{latency:?}"
    );

    query.stop().await.unwrap();
    shutdown.cancel();
    watch.join().await;
    drop(t);
}
