//! The HTTP/1.1 server loop: every connection on its own task (its TLS handshake
//! there too, under a timeout, so a slow client holds up no one else), a timeout on
//! each request head (slow and idle clients are closed), and a shutdown that finishes
//! requests in progress for at most a grace period and then closes what is left.

use std::time::Duration;

use axum::Router;
use flowlake_service::tls::{TlsAcceptor, handshake};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::IngesterConfig;
use crate::error::Result;

/// The TLS acceptor of the configured certificate and key (reloaded when the files
/// change), or `None` for plain HTTP.
pub fn tls_acceptor(config: &IngesterConfig) -> Result<Option<TlsAcceptor>> {
    let Some(files) = &config.tls else {
        return Ok(None);
    };
    let tls = flowlake_service::tls::server_config(files.clone(), config.reload_every)?;
    tracing::info!(cert = %files.cert.display(), "ingester serves HTTPS");
    Ok(Some(TlsAcceptor::from(tls)))
}

/// How the server treats connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// A request head must arrive whole within this time.
    pub header_timeout: Duration,
}

/// Serves one connection until it ends or `closing` fires (then gracefully).
async fn serve_connection<I>(io: I, app: Router, limits: ServeLimits, closing: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(app);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = closing.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Serves `app` on `listener` (over TLS with `tls`) until `stop` is cancelled; then
/// stops accepting, lets requests in progress finish until `grace` (read when `stop`
/// fires) is over, and closes the connections still open.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: ServeLimits,
    stop: CancellationToken,
    grace: impl FnOnce() -> Duration,
) {
    let mut connections = JoinSet::new();
    let closing = CancellationToken::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause, not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (app, closing, tls) = (app.clone(), closing.clone(), tls.clone());
        connections.spawn(async move {
            let Some(acceptor) = tls else {
                return serve_connection(stream, app, limits, closing).await;
            };
            let stream = tokio::select! {
                tls = handshake(&acceptor, stream, peer) => tls,
                () = closing.cancelled() => None,
            };
            if let Some(stream) = stream {
                serve_connection(stream, app, limits, closing).await;
            }
        });
    }
    drop(listener);
    let grace = grace();
    closing.cancel();
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            ?grace,
            "requests still in progress after the shutdown grace; closing their connections"
        );
        connections.shutdown().await;
    }
}
