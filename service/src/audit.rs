//! The audit log: one record per request with the token name, method, path, status,
//! outcome, rows, bytes received (where a handler says) and sent and duration, written
//! when the response body ends (streamed results included), plus the SQL a handler ran
//! — as a SHA-256 hash, the text, or not at all ([`AuditSql`]). Records go to an
//! [`AuditSink`]: by default [`TracingSink`], one structured line (target
//! `flowlake::audit`); tests give a [`CollectingSink`] and read the records back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// One request, as audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Name of the caller's token (`-`: none).
    pub token: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// `ok`, the error code, or the status.
    pub outcome: String,
    /// The SQL as configured ([`AuditSql`]).
    pub sql: Option<String>,
    pub rows: Option<u64>,
    pub bytes_in: Option<u64>,
    /// Bytes of the response body sent.
    pub bytes: u64,
    pub duration_ms: u64,
}

/// Where audit records go. A sink lives as long as the process (`&'static`: the
/// configuration stays `Copy`); a test leaks the one it reads.
pub trait AuditSink: std::fmt::Debug + Send + Sync {
    fn record(&self, record: AuditRecord);
}

/// The default sink: one structured `tracing` line per record (target `flowlake::audit`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

impl AuditSink for TracingSink {
    fn record(&self, r: AuditRecord) {
        tracing::info!(
            target: "flowlake::audit",
            token = %r.token,
            method = %r.method,
            path = %r.path,
            status = r.status,
            outcome = %r.outcome,
            sql = r.sql.as_deref().unwrap_or("-"),
            rows = r.rows,
            bytes_in = r.bytes_in,
            bytes = r.bytes,
            duration_ms = r.duration_ms,
            "request"
        );
    }
}

/// Keeps the records (for tests and tools that read them back).
#[derive(Debug, Default)]
pub struct CollectingSink(Mutex<Vec<AuditRecord>>);

impl CollectingSink {
    /// A sink for the rest of the process.
    pub fn leaked() -> &'static CollectingSink {
        Box::leak(Box::default())
    }

    /// The records so far, oldest first.
    pub fn records(&self) -> Vec<AuditRecord> {
        self.0.lock().expect("audit records lock").clone()
    }
}

impl AuditSink for CollectingSink {
    fn record(&self, record: AuditRecord) {
        self.0.lock().expect("audit records lock").push(record);
    }
}

#[derive(Debug, Clone, Copy)]
pub struct AuditConfig {
    pub sql: AuditSql,
    pub sink: &'static dyn AuditSink,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            sql: AuditSql::default(),
            sink: &TracingSink,
        }
    }
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

/// The record, written to `sink` when dropped (the body ended, failed or was abandoned).
struct Line {
    sink: &'static dyn AuditSink,
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
        self.sink.record(AuditRecord {
            token: std::mem::take(&mut self.token),
            method: std::mem::take(&mut self.method),
            path: std::mem::take(&mut self.path),
            status: self.status,
            outcome: std::mem::take(&mut self.outcome),
            sql: self.sql.take(),
            rows: self.rows.as_ref().map(|r| r.0.load(Ordering::Relaxed)),
            bytes_in: self.bytes_in,
            bytes: self.bytes,
            duration_ms: self.started.elapsed().as_millis() as u64,
        });
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
        sink: config.sink,
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
    use std::time::Duration;

    use axum::Router;
    use axum::middleware::from_fn_with_state;
    use axum::response::IntoResponse;
    use axum::routing::get;

    use super::*;
    use crate::auth::{Auth, Scope, TokenEntry, TokenStore, require};

    async fn data() -> Response {
        let rows = RowCount::default();
        rows.add(3);
        let mut resp = "hello".into_response();
        resp.extensions_mut().insert(rows);
        resp.extensions_mut().insert(SqlAudit("SELECT 1".into()));
        resp
    }

    #[tokio::test]
    async fn one_record_per_request_with_token_rows_bytes_and_sql_hash() {
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
        let sink = CollectingSink::leaked();
        let config = AuditConfig {
            sink,
            ..AuditConfig::default()
        };
        let app = Router::new()
            .route("/data", get(data))
            .route_layer(from_fn_with_state((auth, Scope::Read), require))
            .layer(from_fn_with_state(config, audit));
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
        // The record is written when the server drops the body.
        for _ in 0..100 {
            if sink.records().len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let records = sink.records();
        assert_eq!(records.len(), 2, "{records:#?}");
        let denied = &records[0];
        assert_eq!(
            (
                denied.token.as_str(),
                denied.status,
                denied.outcome.as_str()
            ),
            ("-", 401, "unauthorized")
        );
        let ok = &records[1];
        assert_eq!(
            (ok.token.as_str(), ok.method.as_str(), ok.path.as_str()),
            ("reader", "GET", "/data")
        );
        assert_eq!((ok.status, ok.outcome.as_str()), (200, "ok"));
        assert_eq!((ok.rows, ok.bytes, ok.bytes_in), (Some(3), 5, None));
        assert_eq!(ok.sql, Some(hash_token("SELECT 1")));
    }

    /// The default sink writes one line per record with every field.
    #[test]
    fn the_tracing_sink_writes_one_line() {
        let capture = flowlake_testkit::LogCapture::default();
        {
            let _guard = capture.set_default();
            AuditConfig::default().sink.record(AuditRecord {
                token: "reader".into(),
                method: "POST".into(),
                path: "/api/v1/sql".into(),
                status: 200,
                outcome: "ok".into(),
                sql: Some("abc".into()),
                rows: Some(3),
                bytes_in: None,
                bytes: 5,
                duration_ms: 7,
            });
        }
        let lines = capture.lines_with("flowlake::audit");
        assert_eq!(lines.len(), 1, "{lines:?}");
        for field in [
            "token=reader",
            "method=POST",
            "path=/api/v1/sql",
            "status=200",
            "outcome=ok",
            "sql=\"abc\"",
            "rows=3",
            "bytes=5",
            "duration_ms=7",
        ] {
            assert!(lines[0].contains(field), "{field} missing: {}", lines[0]);
        }
    }
}
