//! Sends a node's capture file to the ingester (no object-store credentials
//! on nodes): asks where the file stands, sends the rest in checksummed
//! chunks, then completes it with its description. The file stays in the
//! local spool until the ingester has completed it, so a restart of either
//! side resumes; while the ingester is away the upload waits and retries.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::sync::CancellationToken;

pub use flowlake_schemas::capture::{FileDescription, InterfaceRow};

/// The description of a finished node capture whose file is `size` bytes
/// long with checksum `crc32c`.
pub fn describe(
    summary: &super::Summary,
    spec: &super::CaptureSpec,
    size: u64,
    crc32c: u32,
) -> FileDescription {
    {
        FileDescription {
            size,
            crc32c,
            filter: spec.filter.source.clone(),
            requested_by: spec.requested_by.clone(),
            stop_reason: summary.reason.as_str().to_string(),
            interfaces: summary
                .interfaces
                .iter()
                .map(|i| InterfaceRow {
                    namespace: i.target.namespace.clone(),
                    pod: i.target.pod.clone(),
                    interface: i.target.interface.clone(),
                    start: i.start.to_rfc3339(),
                    end: i.end.to_rfc3339(),
                    packets: i.packets_in + i.packets_out,
                    bytes: i.bytes_in + i.bytes_out,
                    lost: i.lost,
                })
                .collect(),
            object_path: String::new(),
        }
    }
}

#[derive(Deserialize)]
struct Progress {
    received: u64,
    complete: bool,
}

/// Where and how uploads go.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// The ingester's base URL (`http://ingester:8081`).
    pub ingester: String,
    /// The HTTP client (the agent's trusts the ingester CA file).
    pub client: reqwest::Client,
    pub token: Option<String>,
    pub chunk_bytes: usize,
    /// Wait between attempts while the ingester is away.
    pub retry_every: Duration,
}

/// Why an upload did not finish.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the ingester refused the upload: {0}")]
    Refused(String),
    #[error("cancelled")]
    Cancelled,
}

enum Attempt {
    Done(FileDescription),
    /// The ingester is away or answered 5xx: wait and try again.
    Retry(String),
}

/// crc32c of a whole file.
pub async fn file_crc32c(path: &Path) -> std::io::Result<(u64, u32)> {
    let mut f = tokio::fs::File::open(path).await?;
    let (mut crc, mut size, mut buf) = (0u32, 0u64, vec![0u8; 1 << 20]);
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok((size, crc));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        size += n as u64;
    }
}

/// Uploads `path` as (`id`, `node`) until it is complete, `cancel` fires,
/// or the ingester refuses it (4xx).
pub async fn upload(
    config: &UploadConfig,
    id: &str,
    node: &str,
    path: &Path,
    description: &FileDescription,
    cancel: &CancellationToken,
) -> Result<FileDescription, UploadError> {
    let client = &config.client;
    loop {
        match attempt(client, config, id, node, path, description).await? {
            Attempt::Done(d) => return Ok(d),
            Attempt::Retry(why) => {
                tracing::info!(capture = id, %why, "capture upload waits for the ingester");
                tokio::select! {
                    _ = cancel.cancelled() => return Err(UploadError::Cancelled),
                    _ = tokio::time::sleep(config.retry_every) => {}
                }
            }
        }
    }
}

/// Sends the network snapshot at `path` for (`id`, `node`) in one request
/// (`PUT /api/v1/captures/<id>/nodes/<node>/snapshot`), waiting out an
/// ingester outage as [`upload`] does.
pub async fn upload_snapshot(
    config: &UploadConfig,
    id: &str,
    node: &str,
    path: &Path,
    cancel: &CancellationToken,
) -> Result<(), UploadError> {
    let body = tokio::fs::read(path)
        .await
        .map_err(|source| UploadError::Read {
            path: path.display().to_string(),
            source,
        })?;
    let url = format!(
        "{}/api/v1/captures/{id}/nodes/{node}/snapshot",
        config.ingester.trim_end_matches('/')
    );
    loop {
        let put = request(&config.client, config, reqwest::Method::PUT, url.clone())
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.clone())
            .send()
            .await;
        match judge(put).await? {
            Ok(_) => return Ok(()),
            Err(why) => {
                tracing::info!(capture = id, %why, "capture snapshot waits for the ingester");
                tokio::select! {
                    _ = cancel.cancelled() => return Err(UploadError::Cancelled),
                    _ = tokio::time::sleep(config.retry_every) => {}
                }
            }
        }
    }
}

fn request(
    client: &reqwest::Client,
    config: &UploadConfig,
    method: reqwest::Method,
    url: String,
) -> reqwest::RequestBuilder {
    let r = client.request(method, url);
    match &config.token {
        Some(t) => r.bearer_auth(t),
        None => r,
    }
}

/// A 4xx is final; anything else (no connection, 5xx) is retried.
async fn judge(
    r: reqwest::Result<reqwest::Response>,
) -> Result<Result<reqwest::Response, String>, UploadError> {
    match r {
        Err(e) => Ok(Err(e.to_string())),
        Ok(resp) if resp.status().is_success() => Ok(Ok(resp)),
        Ok(resp)
            if resp.status().is_client_error()
                && resp.status() != reqwest::StatusCode::CONFLICT =>
        {
            Err(UploadError::Refused(resp.text().await.unwrap_or_default()))
        }
        Ok(resp) => Ok(Err(format!(
            "{}: {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        ))),
    }
}

async fn attempt(
    client: &reqwest::Client,
    config: &UploadConfig,
    id: &str,
    node: &str,
    path: &Path,
    description: &FileDescription,
) -> Result<Attempt, UploadError> {
    let base = format!(
        "{}/api/v1/captures/{id}/files/{node}",
        config.ingester.trim_end_matches('/')
    );
    let read_err = |source| UploadError::Read {
        path: path.display().to_string(),
        source,
    };
    let resp = match judge(
        request(client, config, reqwest::Method::GET, base.clone())
            .send()
            .await,
    )
    .await?
    {
        Ok(r) => r,
        Err(why) => return Ok(Attempt::Retry(why)),
    };
    let Ok(progress) = resp
        .bytes()
        .await
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<Progress>(&b).map_err(|e| e.to_string()))
    else {
        return Ok(Attempt::Retry("unreadable progress".into()));
    };
    let mut offset = progress.received;
    if !progress.complete {
        let mut f = tokio::fs::File::open(path).await.map_err(read_err)?;
        f.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(read_err)?;
        let mut buf = vec![0u8; config.chunk_bytes];
        while offset < description.size {
            let n = f.read(&mut buf).await.map_err(read_err)?;
            if n == 0 {
                break;
            }
            let chunk = buf[..n].to_vec();
            let crc = format!("{:08x}", crc32c::crc32c(&chunk));
            let put = request(
                client,
                config,
                reqwest::Method::PUT,
                format!("{base}?offset={offset}"),
            )
            .header("flowlake-crc32c", crc)
            .body(chunk)
            .send()
            .await;
            match judge(put).await? {
                Ok(_) => offset += n as u64,
                Err(why) => return Ok(Attempt::Retry(why)),
            }
        }
    }
    let done = request(
        client,
        config,
        reqwest::Method::POST,
        format!("{base}/complete"),
    )
    .header("content-type", "application/json")
    .body(serde_json::to_vec(description).unwrap_or_default())
    .send()
    .await;
    match judge(done).await? {
        Ok(resp) => {
            match resp.bytes().await.map_err(|e| e.to_string()).and_then(|b| {
                serde_json::from_slice::<FileDescription>(&b).map_err(|e| e.to_string())
            }) {
                Ok(d) => Ok(Attempt::Done(d)),
                Err(e) => Ok(Attempt::Retry(e.to_string())),
            }
        }
        Err(why) => Ok(Attempt::Retry(why)),
    }
}
