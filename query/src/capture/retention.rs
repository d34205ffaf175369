//! Captures expire: every object of a capture that ended more than the
//! retention ago (request, statuses, files, leftover chunks) is removed, with
//! an audit line. A capture whose request is gone or unreadable is judged by
//! the age of its newest object.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::create::ends;
use super::store::CaptureFiles;
use crate::error::Result;

/// Removes the captures that ended before `now - retention`; their ids.
pub async fn expire(
    files: &CaptureFiles,
    retention: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<String>> {
    let cutoff = now - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let mut removed = Vec::new();
    for id in files.ids().await? {
        let ended = match files.request(&id).await {
            Ok(Some(r)) => ends(&r),
            Ok(None) | Err(_) => files.newest(&id).await?,
        };
        if ended.is_some_and(|e| e < cutoff) {
            let objects = files.delete(&id).await?;
            tracing::info!(
                target: "flowlake::audit",
                token = "-",
                action = "expire",
                capture = %id,
                objects,
                "capture"
            );
            removed.push(id);
        }
    }
    Ok(removed)
}

/// Runs [`expire`] every `every` until `stop`; a failed pass is logged and retried.
pub async fn run(
    files: CaptureFiles,
    retention: Duration,
    every: Duration,
    clock: crate::http::Clock,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = expire(&files, retention, clock()).await {
            tracing::warn!(error = %e, "capture retention failed; retrying next pass");
        }
    }
}
