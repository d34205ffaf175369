//! One batch to the ingester: `POST /api/v1/flows`, answers classified, retries with
//! exponential backoff and jitter.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use tokio_util::sync::CancellationToken;

use super::encode::{ARROW_STREAM_CONTENT_TYPE, BATCH_ID_HEADER, EncodedBatch};
use super::error::{Result, ShipError};

/// The ingester's write path.
pub const FLOWS_PATH: &str = "/api/v1/flows";

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

/// HTTP client of the ingester.
#[derive(Debug, Clone)]
pub struct IngestClient {
    http: reqwest::Client,
    url: reqwest::Url,
}

impl IngestClient {
    /// A client posting to `<base>/api/v1/flows`.
    pub fn new(base: &str, timeout: Duration) -> Result<Self> {
        let url = reqwest::Url::parse(base)
            .and_then(|u| u.join(FLOWS_PATH))
            .map_err(|_| ShipError::BadUrl {
                url: base.to_string(),
            })?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(ShipError::Http)?;
        Ok(IngestClient { http, url })
    }

    /// One attempt.
    pub async fn post(&self, b: &EncodedBatch) -> Outcome {
        let resp = self
            .http
            .post(self.url.clone())
            .header(CONTENT_TYPE, ARROW_STREAM_CONTENT_TYPE)
            .header(BATCH_ID_HEADER, b.id.to_string())
            .body(b.ipc.clone())
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Unavailable {
                    retry_after: None,
                    why: e.to_string(),
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
        let retryable = status.is_server_error()
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
