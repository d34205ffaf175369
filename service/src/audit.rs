//! The audit log: one structured line per request (target `flowlake::audit`) with the
//! token name, method, path, status, outcome, rows, bytes received (where a handler
//! says) and sent and duration, written when the response body ends (streamed results
//! included), plus the SQL a handler ran — as a SHA-256 hash, the text, or not at all
//! ([`AuditSql`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::{TokenName, hash_token};

/// How SQL appears in the audit log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuditSql {
    /// SHA-256 of the statement (default: the log carries no data values).
    #[default]
    Hash,
    /// The statement itself.
    Text,
    /// Nothing.
    None,
}

impl std::str::FromStr for AuditSql {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hash" => Ok(AuditSql::Hash),
            "text" => Ok(AuditSql::Text),
            "none" => Ok(AuditSql::None),
            other => Err(format!("expected hash, text or none, got {other:?}")),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct AuditConfig {
    pub sql: AuditSql,
}

/// The SQL a handler ran, left in the response's extensions for the audit line.
#[derive(Debug, Clone)]
pub struct SqlAudit(pub String);

/// Rows a handler sends, counted while its body streams; left in the response's
/// extensions.
#[derive(Debug, Clone, Default)]
pub struct RowCount(pub Arc<AtomicU64>);

impl RowCount {
    pub fn add(&self, rows: usize) {
        self.0.fetch_add(rows as u64, Ordering::Relaxed);
    }
}

/// Bytes of the request body a handler took in (the ingester's batches), left in the
/// response's extensions; logged as `bytes_in`.
#[derive(Debug, Clone, Copy)]
pub struct BytesIn(pub u64);

/// The error code of a failed request, left in the response's extensions.
#[derive(Debug, Clone)]
pub struct ErrorCode(pub String);

/// The line, logged when dropped (the body ended, failed or was abandoned).
struct Line {
    token: String,
    method: String,
    path: String,
    status: u16,
    outcome: String,
    sql: Option<String>,
    rows: Option<RowCount>,
    bytes_in: Option<u64>,
    bytes: u64,
    started: Instant,
}

impl Line {
    fn count(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        tracing::info!(
            target: "flowlake::audit",
            token = %self.token,
            method = %self.method,
            path = %self.path,
            status = self.status,
            outcome = %self.outcome,
            sql = self.sql.as_deref().unwrap_or("-"),
            rows = self.rows.as_ref().map(|r| r.0.load(Ordering::Relaxed)),
            bytes_in = self.bytes_in,
            bytes = self.bytes,
            duration_ms = self.started.elapsed().as_millis() as u64,
            "request"
        );
    }
}

/// Middleware writing the audit line of every request it wraps.
pub async fn audit(State(config): State<AuditConfig>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let ext = resp.extensions();
    let sql = ext.get::<SqlAudit>().and_then(|s| match config.sql {
        AuditSql::Hash => Some(hash_token(&s.0)),
        AuditSql::Text => Some(s.0.clone()),
        AuditSql::None => None,
    });
    let outcome = match ext.get::<ErrorCode>() {
        Some(code) => code.0.clone(),
        None if resp.status().is_success() => "ok".into(),
        None => resp.status().as_str().to_string(),
    };
    let line = Line {
        token: ext
            .get::<TokenName>()
            .map_or_else(|| "-".to_string(), |t| t.0.clone()),
        method,
        path,
        status: resp.status().as_u16(),
        outcome,
        sql,
        rows: ext.get::<RowCount>().cloned(),
        bytes_in: ext.get::<BytesIn>().map(|b| b.0),
        bytes: 0,
        started,
    };
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, Body::new(Counted { inner: body, line }))
}

/// A response body whose data frames are counted into its audit line; every frame
/// passes through as it is (trailers too: gRPC's status travels in them), and so do
/// the end-of-stream and size hints.
struct Counted {
    inner: Body,
    line: Line,
}

impl http_body::Body for Counted {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) {
            this.line.count(data.len());
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use axum::Router;
    use axum::middleware::from_fn_with_state;
    use axum::response::IntoResponse;
    use axum::routing::get;

    use super::*;
    use crate::auth::{Auth, Scope, TokenEntry, TokenStore, require};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    async fn data() -> Response {
        let rows = RowCount::default();
        rows.add(3);
        let mut resp = "hello".into_response();
        resp.extensions_mut().insert(rows);
        resp.extensions_mut().insert(SqlAudit("SELECT 1".into()));
        resp
    }

    #[tokio::test]
    async fn one_line_per_request_with_token_rows_bytes_and_sql_hash() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let entry = TokenEntry {
            name: "reader".into(),
            sha256: hash_token("s3cret"),
            scopes: vec![Scope::Read],
            namespaces: None,
        };
        std::fs::write(&path, serde_json::json!({"tokens": [entry]}).to_string()).unwrap();
        let auth = Auth::Tokens(Arc::new(TokenStore::open(&path, Duration::ZERO).unwrap()));
        let app = Router::new()
            .route("/data", get(data))
            .route_layer(from_fn_with_state((auth, Scope::Read), require))
            .layer(from_fn_with_state(AuditConfig::default(), audit));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let client = reqwest::Client::new();
        let denied = client.get(format!("{base}/data")).send().await.unwrap();
        assert_eq!(denied.status(), 401);
        denied.bytes().await.unwrap();
        let ok = client
            .get(format!("{base}/data"))
            .header("authorization", "Bearer s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(ok.bytes().await.unwrap(), "hello");
        // The line is written when the server drops the body.
        tokio::time::sleep(Duration::from_millis(100)).await;

        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("flowlake::audit"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("token=-") && lines[0].contains("status=401"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("outcome=unauthorized"), "{}", lines[0]);
        let ok = lines[1];
        for field in [
            "token=reader",
            "status=200",
            "outcome=ok",
            "rows=3",
            "bytes=5",
        ] {
            assert!(ok.contains(field), "{field} missing: {ok}");
        }
        assert!(
            ok.contains(&format!("sql=\"{}\"", hash_token("SELECT 1"))),
            "{ok}"
        );
    }
}
