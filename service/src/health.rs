//! `/healthz` (the process answers) and `/readyz` (it serves), open to everyone.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

pub const HEALTH: &str = "/healthz";
pub const READY: &str = "/readyz";

/// The health routes; `/readyz` answers 503 once `shutdown` is cancelled so load
/// balancers stop sending requests while the service drains.
pub fn routes<S: Clone + Send + Sync + 'static>(shutdown: CancellationToken) -> Router<S> {
    Router::new().route(HEALTH, get(|| async { "ok" })).route(
        READY,
        get(move || {
            let draining = shutdown.is_cancelled();
            async move {
                if draining {
                    (StatusCode::SERVICE_UNAVAILABLE, "draining")
                } else {
                    (StatusCode::OK, "ok")
                }
            }
        }),
    )
}
