//! `flowlake collector`: the node agent assembled from its parts — the eBPF
//! datapath, Kubernetes enrichment, shipping to the ingester, and an HTTP endpoint
//! for metrics and health.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use flowlake_schemas::FlowRecord;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::collector::Datapath;
use crate::config::{CollectorArgs, DatapathConfig};
use crate::enrich::{EnrichArgs, EnrichConfig, EnrichMetrics, Enricher, system_clock};
use crate::error::{CollectorError, Result};
use crate::metrics::DatapathMetrics;
use crate::plugins::{PluginSet, PluginState};
use crate::retina::{self, LossSources, RetinaArgs, RetinaConfig, RetinaMetrics};
use crate::ship::{LossReport, ShipArgs, ShipConfig, ShipMetrics, Shipper};

/// Every flag of `flowlake collector`.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub datapath: CollectorArgs,
    #[command(flatten)]
    pub enrich: EnrichArgs,
    #[command(flatten)]
    pub ship: ShipArgs,
    /// Where flow records go (`--sinks`, docs/exporters.md).
    #[command(flatten)]
    pub sinks: crate::sink::SinkArgs,
    /// Retina-compatible metrics, served with `/healthz` and `/readyz` on their address.
    #[command(flatten)]
    pub metrics: RetinaArgs,
    /// Preflight: load every program (attaching none), print what this node
    /// will and will not observe, and exit; non-zero when flows cannot be observed.
    #[arg(long)]
    pub check: bool,
    /// With --check: print the findings as JSON.
    #[arg(long, requires = "check")]
    pub check_json: bool,
}

/// The agent's configuration, resolved.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub datapath: DatapathConfig,
    pub enrich: EnrichConfig,
    pub ship: ShipConfig,
    pub sinks: crate::sink::SinkConfig,
    pub metrics: RetinaConfig,
}

impl From<AgentArgs> for AgentConfig {
    fn from(a: AgentArgs) -> Self {
        let datapath: DatapathConfig = a.datapath.into();
        let mut metrics: RetinaConfig = a.metrics.into();
        // One selection, one set of states for the datapath and the metrics.
        metrics.plugins = datapath.plugins.clone();
        AgentConfig {
            datapath,
            enrich: a.enrich.into(),
            ship: a.ship.into(),
            sinks: a.sinks.into(),
            metrics,
        }
    }
}

/// Forwards datapath batches to the shipper, naming both ends on the way (and
/// counting them in the Retina-compatible metrics, when given).
pub async fn forward<O: crate::sink::Outlet>(
    mut flows: mpsc::Receiver<Vec<FlowRecord>>,
    enricher: Enricher,
    shipper: O,
    metrics: Option<RetinaMetrics>,
) {
    while let Some(mut records) = flows.recv().await {
        enricher.enrich_all(&mut records);
        if let Some(m) = &metrics {
            m.observe(&records);
        }
        if !shipper.deliver(records).await {
            break;
        }
    }
}

/// `/metrics` (Retina-compatible), `/healthz` and `/readyz` over a registry:
/// ready while the flow programs run (`datapath`'s program status) or, with
/// the flows plugin disabled, while no enabled plugin has failed.
pub fn metrics_router(
    registry: Arc<Registry>,
    datapath: DatapathMetrics,
    plugins: PluginSet,
) -> Router {
    retina::router(registry)
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let running = if plugins.enabled("flows") {
                    crate::plugins::flows::PROGRAMS
                        .iter()
                        .all(|p| datapath.program_status(p) == 1)
                } else {
                    !plugins
                        .statuses()
                        .iter()
                        .any(|s| s.state == PluginState::Failed)
                };
                async move {
                    if running {
                        (axum::http::StatusCode::OK, "ok")
                    } else {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "flow programs not running",
                        )
                    }
                }
            }),
        )
}

/// Runs the agent until `shutdown`: programs attached, flows enriched and shipped.
/// On shutdown the datapath reports its last interval, the shipper drains (or
/// spools) and the programs are removed.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<()> {
    let mut registry = Registry::default();
    let datapath_metrics = DatapathMetrics::new(&mut registry);
    let (enricher, watch) =
        Enricher::from_config(&config.enrich, &mut registry, shutdown.clone()).await?;
    let ship_metrics = ShipMetrics::register(&mut registry);
    let losses = LossSources {
        datapath: Some(datapath_metrics.clone()),
        ship: Some(ship_metrics.clone()),
    };
    let retina = RetinaMetrics::register(
        &mut registry,
        &config.metrics,
        losses.clone(),
        system_clock(),
    );
    let expiry = tokio::spawn(retina.clone().run_expiry(shutdown.clone()));
    // The API server's addresses (apiserver plugin): the hand-set list, or
    // discovered from the cluster.
    let discovery = match &retina.apiserver {
        Some(a) if config.metrics.apiserver_ips.is_empty() => {
            crate::enrich::apiserver::start_from_config(
                &config.enrich,
                a.addresses().clone(),
                shutdown.clone(),
            )
            .await?
        }
        _ => None,
    };
    // Records the ingester sink drops never reach the shipper: in the loss report too.
    let sink_metrics = crate::sink::SinkMetrics::register(&mut registry);
    let ingester_sink = config.sinks.has(crate::sink::SinkKind::Ingester);
    let shipper = Shipper::start_with_losses(
        &config.ship,
        Enricher::disabled(EnrichMetrics::register(&mut Registry::default())),
        ship_metrics,
        system_clock(),
        Some(LossReport {
            cluster: config.datapath.cluster.clone(),
            node: config.datapath.node.clone(),
            sources: losses,
            sinks: ingester_sink.then(|| sink_metrics.clone()),
            every: config.ship.loss_report_every,
        }),
    )?;
    let sinks = Arc::new(crate::sink::SinkSet::start(
        crate::sink::open(&config.sinks, Some(shipper.sender()))?,
        config.sinks.queue_batches,
        sink_metrics,
        system_clock(),
    )?);
    let datapath_config = config.datapath.clone();
    let readiness = datapath_metrics.clone();
    let (datapath, flows) =
        tokio::task::spawn_blocking(move || Datapath::start(datapath_config, datapath_metrics))
            .await
            .map_err(|e| CollectorError::Task(e.to_string()))??;
    tracing::info!(interfaces = ?datapath.interfaces(), "datapath attached");

    let listen = config.metrics.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CollectorError::io(format!("binding {listen}"), e))?;
    let app = metrics_router(
        Arc::new(registry),
        readiness,
        config.datapath.plugins.clone(),
    );
    let http = tokio::spawn(retina::serve(listener, app, shutdown.clone()));
    let captures = tokio::spawn(crate::capture::control::run_in_agent(
        &config.ship,
        &config.datapath,
        enricher.index(),
        shutdown.clone(),
    )?);
    let forwarder = tokio::spawn(forward(flows, enricher, Arc::clone(&sinks), Some(retina)));

    shutdown.cancelled().await;
    tracing::info!("stopping: last interval, drain, detach");
    tokio::task::spawn_blocking(move || datapath.stop())
        .await
        .map_err(|e| CollectorError::Task(e.to_string()))??;
    let _ = forwarder.await;
    if let Ok(sinks) = Arc::try_unwrap(sinks) {
        let _ = tokio::task::spawn_blocking(move || sinks.close()).await;
    }
    shipper.shutdown().await;
    if let Some(w) = watch {
        w.join().await;
    }
    let _ = http.await;
    let _ = expiry.await;
    let _ = captures.await;
    if let Some(d) = discovery {
        let _ = d.await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    #[tokio::test]
    async fn ready_only_while_the_flow_programs_run() {
        let mut registry = Registry::default();
        let datapath = DatapathMetrics::new(&mut registry);
        let plugins = PluginSet::default();
        let cfg = RetinaConfig {
            plugins: plugins.clone(),
            ..RetinaConfig::for_tests("/nonexistent".into())
        };
        RetinaMetrics::register(&mut registry, &cfg, LossSources::default(), system_clock());
        let app = metrics_router(Arc::new(registry), datapath.clone(), plugins.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let http = tokio::spawn(retina::serve(listener, app, shutdown.clone()));

        // Before the datapath starts, and with one flow program failed.
        assert_eq!(get(addr, "/readyz").await.0, 503);
        datapath.set_program("flow_ingress", true);
        datapath.set_program("flow_egress", false);
        assert_eq!(get(addr, "/readyz").await.0, 503);
        datapath.set_program("flow_egress", true);
        assert_eq!(get(addr, "/readyz").await, (200, "ok".to_string()));
        assert_eq!(get(addr, "/healthz").await.0, 200);

        plugins
            .board()
            .set("drops", PluginState::Degraded, Some("old kernel".into()));
        let (_, metrics) = get(addr, "/metrics").await;
        for line in [
            r#"flowlake_collector_plugin_status{plugin="drops",state="degraded"} 1"#,
            r#"flowlake_collector_plugin_status{plugin="drops",state="enabled"} 0"#,
            r#"flowlake_collector_plugin_status{plugin="flows",state="enabled"} 1"#,
            // The sources' reads under a missing root fail, with their state.
            r#"flowlake_collector_plugin_status{plugin="conntrack",state="failed"} 1"#,
            r#"flowlake_collector_program_loaded{program="flow_egress"} 1"#,
        ] {
            assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
        }
        shutdown.cancel();
        http.await.unwrap().unwrap();
    }
}
