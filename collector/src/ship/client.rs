//! One batch to the ingester: `POST /api/v1/flows` with the collector's bearer token,
//! over HTTPS verified against the CA file when one is given; answers classified,
//! retries with exponential backoff and jitter. The token and CA files are read again
//! when they change (a rotated Secret), without a restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flowlake_service::{Reloading, system_monotonic};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use tokio_util::sync::CancellationToken;

use super::config::ShipConfig;
use super::encode::{ARROW_STREAM_CONTENT_TYPE, BATCH_ID_HEADER, BatchKind, EncodedBatch};
use super::error::{Result, ShipError};

/// The ingester's write path.
pub const FLOWS_PATH: &str = "/api/v1/flows";
/// Where loss batches go.
pub const LOSSES_PATH: &str = "/api/v1/losses";

/// Exponential backoff with jitter: attempt n waits a random time in
/// `[d/2, d]` where `d = min(base · 2ⁿ, max)`.
#[derive(Debug)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    attempt: u32,
    rng: StdRng,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        // Seeded from a random uuid so collectors restarting together spread out.
        let seed = uuid::Uuid::new_v4().as_u64_pair().0;
        Backoff {
            base,
            max,
            attempt: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        let d = self
            .base
            .saturating_mul(1 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = d / 2;
        half + Duration::from_nanos(self.rng.random_range(0..=half.as_nanos() as u64))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        for (n, w) in waits.iter().enumerate() {
            let d = (Duration::from_millis(100) * (1 << n)).min(Duration::from_secs(1));
            assert!(
                *w >= d / 2 && *w <= d,
                "attempt {n}: {w:?} outside [{:?}, {d:?}]",
                d / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}

/// What the ingester made of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored durably (or already stored under this id).
    Sent,
    /// Unreachable, overloaded (503, 429) or failing (5xx): try again later.
    Unavailable {
        retry_after: Option<Duration>,
        why: String,
    },
    /// Bad input (4xx): retrying cannot help.
    Rejected { status: u16, message: String },
    /// Shutdown interrupted the send.
    Cancelled,
}

/// The HTTP client (trusting the CA file's certificates) and the token, as the files
/// say now.
#[derive(Debug)]
struct Transport {
    http: reqwest::Client,
    token: Option<String>,
}

/// Where the client's credentials come from.
#[derive(Debug, Clone)]
struct Credentials {
    ca_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
    timeout: Duration,
}

impl Credentials {
    fn load(&self) -> Result<Transport> {
        let mut builder = reqwest::Client::builder().timeout(self.timeout);
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path).map_err(ShipError::credentials(path))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(ShipError::credentials(path))?;
            if certs.is_empty() {
                return Err(ShipError::credentials(path)(
                    "no PEM certificate in the file",
                ));
            }
            // Only the CA file's certificates are trusted, not the system's.
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let token = match &self.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(ShipError::credentials(path))?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(ShipError::credentials(path)("the token file is empty"));
                }
                Some(token.to_string())
            }
            None => None,
        };
        let http = builder.build().map_err(ShipError::Http)?;
        Ok(Transport { http, token })
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.ca_file
            .iter()
            .chain(&self.token_file)
            .cloned()
            .collect()
    }
}

/// HTTP client of the ingester.
#[derive(Debug, Clone)]
pub struct IngestClient {
    url: reqwest::Url,
    losses_url: reqwest::Url,
    credentials: Arc<Credentials>,
    transport: Arc<Reloading<Transport>>,
}

impl IngestClient {
    /// A client posting to `<ingester_url>/api/v1/flows` (loss batches: `/api/v1/losses`); fails when the CA or token
    /// file cannot be read.
    pub fn new(cfg: &ShipConfig) -> Result<Self> {
        let base = &cfg.ingester_url;
        let join = |path| {
            reqwest::Url::parse(base)
                .and_then(|u| u.join(path))
                .map_err(|_| ShipError::BadUrl {
                    url: base.to_string(),
                })
        };
        let (url, losses_url) = (join(FLOWS_PATH)?, join(LOSSES_PATH)?);
        if cfg.ingester_ca_file.is_some() && url.scheme() != "https" {
            tracing::warn!(url = %url, "--ingester-ca-file is set but the ingester URL is not https: the CA is not used");
        }
        let credentials = Arc::new(Credentials {
            ca_file: cfg.ingester_ca_file.clone(),
            token_file: cfg.ingester_token_file.clone(),
            timeout: cfg.request_timeout,
        });
        let transport = Reloading::open(
            "ingester CA and token files",
            credentials.paths(),
            cfg.credentials_recheck,
            system_monotonic(),
            || credentials.load(),
        )?;
        Ok(IngestClient {
            url,
            losses_url,
            credentials,
            transport: Arc::new(transport),
        })
    }

    /// A certificate the CA file does not vouch for, said plainly.
    fn explain(&self, e: &reqwest::Error) -> String {
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        if text.contains("certificate") {
            let ca = match &self.credentials.ca_file {
                Some(path) => format!("the CA file {}", path.display()),
                None => "the system's CA certificates (no --ingester-ca-file)".into(),
            };
            text = format!(
                "the ingester's TLS certificate is not trusted by {ca}; batches stay in the spool until it is: {text}"
            );
        }
        text
    }

    /// The HTTP client and bearer token as the CA and token files say now
    /// (captures talk to the same ingester with them).
    pub fn http(&self) -> (reqwest::Client, Option<String>) {
        let t = self.transport.get(|| self.credentials.load());
        (t.http.clone(), t.token.clone())
    }

    /// One attempt.
    pub async fn post(&self, b: &EncodedBatch) -> Outcome {
        let transport = self.transport.get(|| self.credentials.load());
        let mut req = transport
            .http
            .post(match b.kind {
                BatchKind::Flows => self.url.clone(),
                BatchKind::Losses => self.losses_url.clone(),
            })
            .header(CONTENT_TYPE, ARROW_STREAM_CONTENT_TYPE)
            .header(BATCH_ID_HEADER, b.id.to_string());
        if let Some(token) = &transport.token {
            req = req.bearer_auth(token);
        }
        let resp = match req.body(b.ipc.clone()).send().await {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Unavailable {
                    retry_after: None,
                    why: self.explain(&e),
                };
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Outcome::Sent;
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // A token the ingester does not (yet) know or that lacks `ingest` is a
        // configuration to fix, not bad data: the batch waits in the spool.
        let retryable = status.is_server_error()
            || status == StatusCode::UNAUTHORIZED
            || status == StatusCode::FORBIDDEN
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || !status.is_client_error();
        let mut message = resp.text().await.unwrap_or_default();
        message.truncate(500);
        if retryable {
            Outcome::Unavailable {
                retry_after,
                why: format!("HTTP {status}: {message}"),
            }
        } else {
            Outcome::Rejected {
                status: status.as_u16(),
                message,
            }
        }
    }

    /// Up to `attempts` tries with backoff between them; stops early on success,
    /// rejection or shutdown.
    pub async fn send(
        &self,
        b: &EncodedBatch,
        attempts: u32,
        backoff: &mut Backoff,
        stop: &CancellationToken,
    ) -> Outcome {
        let mut last = Outcome::Cancelled;
        for attempt in 0..attempts.max(1) {
            if attempt > 0 {
                let wait = match &last {
                    Outcome::Unavailable {
                        retry_after: Some(r),
                        ..
                    } => (*r).min(backoff.max),
                    _ => backoff.next_delay(),
                };
                tokio::select! {
                    _ = stop.cancelled() => return Outcome::Cancelled,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            last = tokio::select! {
                _ = stop.cancelled() => return Outcome::Cancelled,
                o = self.post(b) => o,
            };
            if !matches!(last, Outcome::Unavailable { .. }) {
                return last;
            }
            tracing::debug!(batch = %b.id, attempt, outcome = ?last, "send failed");
        }
        last
    }
}
