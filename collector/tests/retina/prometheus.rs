//! A real Prometheus (Debian package, /usr/bin/prometheus) scrapes the collector's
//! `/metrics`; the values are checked with PromQL over its HTTP API.
//!
//! Skipped with a printed reason when Prometheus is not installed; fails instead
//! when FLOWLAKE_REQUIRE_PRIVILEGED=1.

use std::sync::Arc;

use flowlake_collector::enrich::system_clock;
use flowlake_collector::metrics::{DatapathMetrics, LossKind};
use flowlake_collector::retina::{LossSources, RetinaConfig, RetinaMetrics, router, serve};
use flowlake_collector::ship::ShipMetrics;
use flowlake_gen::GenConfig;
use flowlake_schemas::{FlowRecord, ObservationPoint, Verdict};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::prom::Prometheus;

fn records() -> Vec<FlowRecord> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = GenConfig::for_tests(dir.path().to_path_buf());
    cfg.duration = chrono::Duration::minutes(10);
    flowlake_gen::records(&cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_retina_metrics_and_promql_sees_the_flows() {
    let require = std::env::var("FLOWLAKE_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let target = listener.local_addr().expect("addr");
    let prom = match Prometheus::start(target) {
        Ok(p) => p,
        Err(reason) if !require => {
            eprintln!("skipped: {reason} (set FLOWLAKE_REQUIRE_PRIVILEGED=1 to fail instead)");
            return;
        }
        Err(reason) => panic!("{reason}"),
    };

    let mut registry = Registry::default();
    let datapath = DatapathMetrics::new(&mut registry);
    let ship = ShipMetrics::register(&mut registry);
    let mut cfg = RetinaConfig::for_tests("/proc".into());
    cfg.max_series = 1_000_000;
    let retina = RetinaMetrics::register(
        &mut registry,
        &cfg,
        LossSources {
            datapath: Some(datapath.clone()),
            ship: Some(ship.clone()),
        },
        system_clock(),
    );
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        router(Arc::new(registry)),
        shutdown.clone(),
    ));

    let recs = records();
    let dropped: u64 = recs
        .iter()
        .filter(|r| r.verdict == Verdict::Dropped)
        .map(|r| r.packets)
        .sum();
    let forwarded_on_node: u64 = recs
        .iter()
        .filter(|r| {
            r.verdict == Verdict::Forwarded
                && matches!(
                    r.observation_point,
                    ObservationPoint::FromNetwork | ObservationPoint::ToNetwork
                )
        })
        .map(|r| r.packets)
        .sum();
    let dns_requests = recs
        .iter()
        .filter(|r| r.dns.as_ref().is_some_and(|d| d.rcode.is_none()))
        .count() as f64;
    assert!(dropped > 0 && forwarded_on_node > 0 && dns_requests > 0.0);
    retina.observe(&recs);
    datapath.lost(LossKind::FlowMapFull).inc_by(4);

    let dropped = dropped as f64;
    prom.wait_for("sum(networkobservability_drop_count)", dropped)
        .await;
    assert_eq!(
        prom.value("sum(networkobservability_forward_count)").await,
        Some(forwarded_on_node as f64)
    );
    assert_eq!(
        prom.value("sum(networkobservability_adv_drop_count)").await,
        Some(dropped),
        "every drop of the gen workload has pod context"
    );
    assert_eq!(
        prom.value("networkobservability_dns_request_count").await,
        Some(dns_requests)
    );
    assert_eq!(
        prom.value(
            r#"networkobservability_lost_events_counter{type="kernel",reason="flow_map_full"}"#
        )
        .await,
        Some(4.0)
    );
    assert!(
        prom.value(r#"networkobservability_tcp_connection_stats{statistic_name="ActiveOpens"}"#)
            .await
            .is_some(),
        "proc statistics of the real /proc are scraped"
    );

    // Counters are counters: Prometheus's metadata says so, and rate() sees growth.
    let meta = prom
        .get(
            "/api/v1/metadata",
            &[("metric", "networkobservability_drop_count")],
        )
        .await
        .expect("metadata");
    assert_eq!(
        meta["data"]["networkobservability_drop_count"][0]["type"], "counter",
        "{meta}"
    );
    retina.observe(&recs);
    prom.wait_for("sum(networkobservability_drop_count)", 2.0 * dropped)
        .await;
    let rate = prom
        .value("sum(rate(networkobservability_drop_count[1m]))")
        .await
        .expect("rate over two scrapes");
    assert!(rate > 0.0, "rate {rate}");
    assert_eq!(
        prom.value("sum(resets(networkobservability_drop_count[1m]))")
            .await,
        Some(0.0)
    );

    shutdown.cancel();
    server.await.expect("join").expect("serve");
}
