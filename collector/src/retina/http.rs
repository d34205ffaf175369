//! `GET /metrics`: the registry in the Prometheus text format (0.0.4), with
//! Retina's counter names.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::names;

/// Route of the metrics endpoint.
pub const METRICS_PATH: &str = "/metrics";

/// The exposed name of a sample or descriptor line's metric, with prometheus-client's
/// `_total` removed for Retina's counters.
fn retina_name(name: &str) -> Option<&str> {
    let base = name.strip_suffix("_total")?;
    let short = base.strip_prefix(names::PREFIX)?.strip_prefix('_')?;
    names::RETINA_COUNTERS.contains(&short).then_some(base)
}

/// Encodes `registry`. Retina's counters keep Retina's names (`networkobservability_drop_count`,
/// typed `counter`): the 0.0.4 text format allows it, and dashboards written for Retina
/// query those names. Every other counter keeps its `_total`.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut raw = String::new();
    prometheus_text::encode(&mut raw, registry)?;
    let mut out = String::with_capacity(raw.len());
    for line in raw.lines() {
        let (head, rest) = match line
            .strip_prefix("# HELP ")
            .or(line.strip_prefix("# TYPE "))
        {
            Some(rest) => (&line[..7], rest),
            None => ("", line),
        };
        let end = rest.find(['{', ' ']).unwrap_or(rest.len());
        match retina_name(&rest[..end]) {
            Some(name) => {
                out.push_str(head);
                out.push_str(name);
                out.push_str(&rest[end..]);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    Ok(out)
}

async fn metrics(State(registry): State<Arc<Registry>>) -> Response {
    match encode(&registry) {
        Ok(body) => (
            [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics encoding failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The `/metrics` router over `registry` (register everything before wrapping it in `Arc`).
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route(METRICS_PATH, get(metrics))
        .with_state(registry)
}

/// Serves `router` on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), path = METRICS_PATH, "metrics endpoint");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
