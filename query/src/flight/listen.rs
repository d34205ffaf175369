//! The Flight SQL listener: gRPC over HTTP/2 (TLS with the HTTP listener's certificate
//! files, reloaded the same way, when they are set) behind the same authentication
//! (a bearer token with the `read` scope in the `authorization` metadata) and the same
//! audit line as the HTTP API. A draining service stops accepting and lets running
//! calls finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use flowlake_service::audit::{ErrorCode, audit};
use flowlake_service::auth::TokenName;
use flowlake_service::tls::{TlsFiles, TlsListener};
use flowlake_service::{AuditConfig, Auth, Scope, ServiceError};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::call::CallAudit;
use super::service::FlightSql;
use super::status::{error_code_of, status_of};
use crate::error::{QueryError, Result};

/// Largest request message (a statement is at most [`crate::admission::MAX_SQL_BYTES`]).
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// The Flight SQL service behind authentication and the audit line.
pub fn router(service: FlightSql, auth: Auth, audit_config: AuditConfig) -> Router {
    let grpc = FlightServiceServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES);
    Router::new()
        .fallback_service(grpc)
        .layer(from_fn_with_state(auth, authenticate))
        .layer(from_fn_with_state(audit_config, audit))
}

/// Middleware: the call needs a token with the `read` scope; the caller and an audit
/// slot go into the request's extensions (see [`super::call`]). Refusals are gRPC
/// statuses (`UNAUTHENTICATED`, `PERMISSION_DENIED`).
async fn authenticate(State(auth): State<Auth>, mut req: Request, next: Next) -> Response {
    match auth.authorize(req.headers(), Scope::Read) {
        Ok(principal) => {
            let name = TokenName(principal.name.clone());
            let slot = CallAudit::default();
            req.extensions_mut().insert(principal);
            req.extensions_mut().insert(slot.clone());
            let mut resp = next.run(req).await;
            let code = error_code_of(resp.headers());
            let ext = resp.extensions_mut();
            slot.into_extensions(ext);
            ext.insert(name);
            if let Some(code) = code {
                ext.insert(ErrorCode(code));
            }
            resp
        }
        Err(e) => {
            let token = match &e {
                ServiceError::Forbidden { token, .. } => token.clone(),
                _ => "-".into(),
            };
            let error = QueryError::Service(e);
            let mut resp = status_of(&error).into_http::<Body>();
            resp.extensions_mut().insert(TokenName(token));
            resp.extensions_mut()
                .insert(ErrorCode(error.code().to_string()));
            resp
        }
    }
}

/// A started listener.
pub struct FlightListener {
    pub addr: SocketAddr,
    pub task: JoinHandle<std::io::Result<()>>,
}

/// Binds `addr` and serves `app` until `shutdown`, over TLS when `tls` is set (its
/// files re-read when they change, looked at most every `recheck`).
pub async fn start(
    addr: SocketAddr,
    app: Router,
    tls: Option<TlsFiles>,
    recheck: Duration,
    shutdown: CancellationToken,
) -> Result<FlightListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| QueryError::Bind { addr, source })?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, tls = tls.is_some(), "Flight SQL listening");
    let task = match tls {
        Some(files) => {
            let mut config =
                Arc::unwrap_or_clone(flowlake_service::tls::server_config(files, recheck)?);
            // gRPC is HTTP/2 only.
            config.alpn_protocols = vec![b"h2".to_vec()];
            let listener = TlsListener::new(listener, Arc::new(config))?;
            tokio::spawn(serve(listener, app, shutdown))
        }
        None => tokio::spawn(serve(listener, app, shutdown)),
    };
    Ok(FlightListener { addr, task })
}

/// Accepts HTTP/2 connections until `shutdown`, then lets them finish their calls.
async fn serve<L>(mut listener: L, app: Router, shutdown: CancellationToken) -> std::io::Result<()>
where
    L: axum::serve::Listener,
{
    let connections = TaskTracker::new();
    loop {
        let (io, _peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(io), service);
            let mut conn = std::pin::pin!(conn);
            let served = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "Flight SQL connection ended");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}
