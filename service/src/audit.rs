//! The audit log: one structured line per request (target `flowlake::audit`) with the
//! token name, method, path, status, outcome, bytes sent and duration, written when
//! the response body ends (streamed results included), plus the SQL a handler ran —
//! as a SHA-256 hash, the text, or not at all ([`AuditSql`]).

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;

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
    let mut line = Line {
        token: ext
            .get::<TokenName>()
            .map_or_else(|| "-".to_string(), |t| t.0.clone()),
        method,
        path,
        status: resp.status().as_u16(),
        outcome,
        sql,
        bytes: 0,
        started,
    };
    let (parts, body) = resp.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        if let Ok(bytes) = &chunk {
            line.count(bytes.len());
        }
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}
