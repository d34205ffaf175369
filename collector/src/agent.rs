//! `flowlake collector`: the node agent assembled from its parts — the eBPF
//! datapath, Kubernetes enrichment, shipping to the ingester, and an HTTP endpoint
//! for metrics and health.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
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
use crate::ship::{ShipArgs, ShipConfig, ShipMetrics, Shipper};

/// Every flag of `flowlake collector`.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub datapath: CollectorArgs,
    #[command(flatten)]
    pub enrich: EnrichArgs,
    #[command(flatten)]
    pub ship: ShipArgs,
    /// Address of the metrics and health endpoint (`/metrics`, `/healthz`, `/readyz`).
    #[arg(
        long,
        env = "FLOWLAKE_COLLECTOR_METRICS_ADDR",
        default_value = "0.0.0.0:10093"
    )]
    pub metrics_addr: SocketAddr,
}

/// The agent's configuration, resolved.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub datapath: DatapathConfig,
    pub enrich: EnrichConfig,
    pub ship: ShipConfig,
    pub metrics_addr: SocketAddr,
}

impl From<AgentArgs> for AgentConfig {
    fn from(a: AgentArgs) -> Self {
        AgentConfig {
            datapath: a.datapath.into(),
            enrich: a.enrich.into(),
            ship: a.ship.into(),
            metrics_addr: a.metrics_addr,
        }
    }
}

/// Forwards datapath batches to the shipper, naming both ends on the way.
pub async fn forward(
    mut flows: mpsc::Receiver<Vec<FlowRecord>>,
    enricher: Enricher,
    shipper: mpsc::Sender<Vec<FlowRecord>>,
) {
    while let Some(mut records) = flows.recv().await {
        enricher.enrich_all(&mut records);
        if shipper.send(records).await.is_err() {
            break;
        }
    }
}

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `/metrics`, `/healthz` and `/readyz` over a registry.
pub fn metrics_router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .with_state(registry)
}

/// Runs the agent until `shutdown`: programs attached, flows enriched and shipped.
/// On shutdown the datapath reports its last interval, the shipper drains (or
/// spools) and the programs are removed.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<()> {
    let mut registry = Registry::with_prefix("flowlake_collector");
    let datapath_metrics = DatapathMetrics::new(&mut registry);
    let (enricher, watch) =
        Enricher::from_config(&config.enrich, &mut registry, shutdown.clone()).await?;
    let ship_metrics = ShipMetrics::register(&mut registry);
    let shipper = Shipper::start(
        &config.ship,
        Enricher::disabled(EnrichMetrics::register(&mut Registry::default())),
        ship_metrics,
        system_clock(),
    )?;
    let datapath_config = config.datapath.clone();
    let (datapath, flows) =
        tokio::task::spawn_blocking(move || Datapath::start(datapath_config, datapath_metrics))
            .await
            .map_err(|e| CollectorError::Task(e.to_string()))??;
    tracing::info!(interfaces = ?datapath.interfaces(), "datapath attached");

    let listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .map_err(|e| CollectorError::io(format!("binding {}", config.metrics_addr), e))?;
    let app = metrics_router(Arc::new(registry));
    let stop_http = shutdown.clone();
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop_http.cancelled().await })
            .await
    });
    let forwarder = tokio::spawn(forward(flows, enricher, shipper.sender()));

    shutdown.cancelled().await;
    tracing::info!("stopping: last interval, drain, detach");
    tokio::task::spawn_blocking(move || datapath.stop())
        .await
        .map_err(|e| CollectorError::Task(e.to_string()))??;
    let _ = forwarder.await;
    shipper.shutdown().await;
    if let Some(w) = watch {
        w.join().await;
    }
    let _ = http.await;
    Ok(())
}
