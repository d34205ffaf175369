//! The real kube client against the fake API server: both ends named, owner chains,
//! host-network pods, headless services, delayed deletion, IP reuse by time, and a
//! re-list after `410 Gone` that notices a deletion missed while disconnected.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use flowlake_collector::enrich::{Clock, EnrichConfig, EnrichMetrics, Enricher};
use flowlake_schemas::{Endpoint, FlowRecord};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::fake_kube::FakeKube;

const BASE: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn at(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(BASE + s, 0).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pod(name: &str, addr: &str, owner: Option<(&str, &str)>, extra: Value) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": name.split('-').next().unwrap(), "pod-template-hash": "abc", "team": "x"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running", "podIP": addr, "podIPs": [{"ip": addr}], "startTime": "2026-01-01T00:00:00Z"}
    });
    if let Some((kind, owner)) = owner {
        p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": format!("uid-{owner}"), "controller": true}]);
    }
    merge(&mut p, extra);
    p
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn fixtures(k: &FakeKube) {
    k.apply(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "zone-a"}},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.1"}, {"type": "Hostname", "address": "n1"}]}}));
    k.apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}));
    // A ReplicaSet whose name does not follow the hash convention: only the cache can name its Deployment.
    k.apply(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-rs", "namespace": "shop",
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "uid-web", "controller": true}]},
        "spec": {"selector": {"matchLabels": {"app": "web"}}}}));
    k.apply(json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "backup-29000", "namespace": "shop",
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "backup", "uid": "uid-backup", "controller": true}]},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}], "restartPolicy": "Never"}}}}));
    k.apply(pod(
        "web-1",
        "10.1.0.5",
        Some(("ReplicaSet", "web-rs")),
        json!({}),
    ));
    k.apply(pod(
        "backup-29000-x",
        "10.1.0.6",
        Some(("Job", "backup-29000")),
        json!({}),
    ));
    k.apply(pod(
        "db-0",
        "10.1.0.7",
        Some(("StatefulSet", "db")),
        json!({}),
    ));
    k.apply(pod(
        "agent-1",
        "192.168.0.1",
        Some(("DaemonSet", "agent")),
        json!({"spec": {"hostNetwork": true}}),
    ));
    k.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "ports": [{"port": 80}]}}));
    k.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"port": 5432}]}}));
    k.apply(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": "db-x1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "db"}},
        "endpoints": [{"addresses": ["10.1.0.7"], "targetRef": {"kind": "Pod", "namespace": "shop", "name": "db-0", "uid": "u"}}]}));
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn flow(src: &str, dst: &str, end: DateTime<Utc>) -> FlowRecord {
    let mut cfg = flowlake_gen::GenConfig::for_tests(std::env::temp_dir());
    cfg.duration = chrono::Duration::seconds(60);
    let mut r = flowlake_gen::records(&cfg).remove(0);
    r.src = Endpoint::new(ip(src), Some(40000));
    r.dst = Endpoint::new(ip(dst), Some(80));
    r.interval_start = end - chrono::Duration::seconds(10);
    r.interval_end = end;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_enrichment_follows_the_cluster() {
    let kube = FakeKube::default();
    fixtures(&kube);
    let addr = kube.serve().await;
    let now = Arc::new(AtomicI64::new(BASE + 1000));
    let clock: Clock = {
        let now = Arc::clone(&now);
        Arc::new(move || DateTime::from_timestamp(now.load(Ordering::SeqCst), 0).unwrap())
    };
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    flowlake_collector::enrich::install_crypto_provider();
    let client = kube::Client::try_from(config).unwrap();
    let shutdown = CancellationToken::new();
    let metrics = EnrichMetrics::default();
    let (enricher, watch) = Enricher::kubernetes(
        client,
        &EnrichConfig::for_tests(),
        clock,
        metrics.clone(),
        shutdown.clone(),
    );
    let pod_at = |a: &str, t: i64| enricher.lookup(ip(a), at(t)).and_then(|i| i.pod.clone());

    // Initial list: both ends of a flow get their names.
    wait_for("initial sync", || {
        enricher
            .lookup(ip("10.1.0.7"), at(1000))
            .is_some_and(|i| i.service.as_deref() == Some("db"))
            && enricher.lookup(ip("10.96.0.10"), at(1000)).is_some()
    })
    .await;
    let mut r = flow("10.1.0.5", "10.96.0.10", at(1000));
    enricher.enrich(&mut r);
    let src = r.src.identity.as_deref().expect("src named");
    assert_eq!(src.namespace.as_deref(), Some("shop"));
    assert_eq!(src.pod.as_deref(), Some("web-1"));
    assert_eq!(
        (src.workload.as_deref(), src.workload_kind.as_deref()),
        (Some("web"), Some("Deployment"))
    );
    assert_eq!(
        src.labels,
        vec![("app".to_string(), "web".to_string())],
        "allow-list drops other labels"
    );
    assert_eq!(
        (src.node.as_deref(), src.zone.as_deref()),
        (Some("n1"), Some("zone-a"))
    );
    let dst = r.dst.identity.as_deref().expect("dst named");
    assert_eq!(
        (
            dst.namespace.as_deref(),
            dst.service.as_deref(),
            dst.pod.as_deref()
        ),
        (Some("shop"), Some("web"), None)
    );
    assert_eq!(metrics.records_enriched.get(), 1);

    let job = enricher.lookup(ip("10.1.0.6"), at(1000)).unwrap();
    assert_eq!(
        (job.workload.as_deref(), job.workload_kind.as_deref()),
        (Some("backup"), Some("CronJob"))
    );
    let db = enricher.lookup(ip("10.1.0.7"), at(1000)).unwrap();
    assert_eq!(
        (db.workload.as_deref(), db.workload_kind.as_deref()),
        (Some("db"), Some("StatefulSet"))
    );
    let host = enricher.lookup(ip("192.168.0.1"), at(1000)).unwrap();
    assert_eq!(
        (
            host.node.as_deref(),
            host.zone.as_deref(),
            host.pod.as_deref()
        ),
        (Some("n1"), Some("zone-a"), None)
    );

    // Delayed deletion: the pod's late flows keep its name for the grace period (30 s).
    kube.delete("Pod", "shop/web-1");
    wait_for("deletion seen", || pod_at("10.1.0.5", 1031).is_none()).await;
    assert_eq!(pod_at("10.1.0.5", 999).as_deref(), Some("web-1"));
    assert_eq!(pod_at("10.1.0.5", 1020).as_deref(), Some("web-1"));

    // IP reuse: a new pod takes the address at t=1005; each flow goes to its owner at its time.
    now.store(BASE + 1005, Ordering::SeqCst);
    kube.apply(pod(
        "web-2",
        "10.1.0.5",
        Some(("ReplicaSet", "web-rs")),
        json!({"status": {"startTime": "2026-01-01T00:16:45Z"}}),
    ));
    wait_for("new pod seen", || {
        pod_at("10.1.0.5", 1006).as_deref() == Some("web-2")
    })
    .await;
    assert_eq!(pod_at("10.1.0.5", 999).as_deref(), Some("web-1"));
    assert_eq!(pod_at("10.1.0.5", 5000).as_deref(), Some("web-2"));

    // API server restart plus compaction: watches resume from a version that is gone,
    // get 410, re-list; the deletion that happened meanwhile is noticed, nothing else lost.
    let lists_before = kube.lists("Pod");
    kube.restart();
    kube.delete("Pod", "shop/backup-29000-x");
    kube.compact();
    wait_for("re-list after 410", || kube.lists("Pod") > lists_before).await;
    wait_for("missed deletion noticed", || {
        enricher.lookup(ip("10.1.0.6"), at(1040)).is_none()
    })
    .await;
    assert!(
        enricher.lookup(ip("10.1.0.6"), at(1004)).is_some(),
        "still named within the grace period"
    );
    assert_eq!(pod_at("10.1.0.5", 1010).as_deref(), Some("web-2"));
    assert_eq!(pod_at("10.1.0.7", 1010).as_deref(), Some("db-0"));
    assert!(enricher.lookup(ip("10.96.0.10"), at(1010)).is_some());

    shutdown.cancel();
    watch.join().await;
}
