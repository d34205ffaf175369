//! Signal handling shared by the services (each drains for its own grace period).

use tokio_util::sync::CancellationToken;

/// A token cancelled on Ctrl-C or SIGTERM (Kubernetes stops pods with SIGTERM).
/// Must be called inside a Tokio runtime.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let signal = token.clone();
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate => {}
        }
        tracing::info!("shutdown signal received; draining");
        signal.cancel();
    });
    token
}
