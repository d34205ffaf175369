//! The agent's part of captures (docs/capture.md, "In the agent"): every
//! `poll_every` it asks the ingester for this node's requests
//! (`GET /api/v1/captures/requests?node=<node>`), starts each new one with
//! the node's pods from the Kubernetes watch (asked again while it runs, so a
//! pod that starts mid-capture joins), stops it when it is cancelled or no
//! longer served, at `created + duration` at the latest, reports where it
//! stands (`PUT /api/v1/captures/<id>/nodes/<node>/status`) and uploads the
//! file. Its progress is kept on disk (`state.rs`) so a restart neither
//! loses a finished file nor silently starts a capture again.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowlake_schemas::capture::{CaptureRequest, FileDescription, NodeStatus};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::engine::{CaptureSpec, EngineConfig, Progress, Summary};
use super::error::CaptureError;
use super::select::PodInfo;
use super::state::{self, Phase};
use super::upload::{self, UploadConfig, UploadError};
use super::{runner, snapshot};
use crate::enrich::Clock;

/// Where collectors ask for their node's requests.
pub const REQUESTS_PATH: &str = "/api/v1/captures/requests";

/// The pods running on this node now.
pub type PodSource = Arc<dyn Fn() -> Vec<PodInfo> + Send + Sync>;
/// The HTTP client and bearer token for the ingester, as the CA and token
/// files say now.
pub type HttpSource = Arc<dyn Fn() -> (reqwest::Client, Option<String>) + Send + Sync>;

/// How the control loop runs.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// The ingester's base URL (the one flows are shipped to).
    pub ingester: String,
    pub node: String,
    /// Capture files and their state (`<spool dir>/captures`).
    pub dir: PathBuf,
    pub poll_every: Duration,
    /// Network namespace of the pod interfaces; None = ours.
    pub netns: Option<PathBuf>,
    /// How often a running capture looks for new pods.
    pub refresh_every: Duration,
    pub chunk_bytes: usize,
    /// Wait between upload attempts while the ingester is away.
    pub retry_every: Duration,
}

impl ControlConfig {
    pub fn new(ingester: String, node: String, dir: PathBuf) -> Self {
        ControlConfig {
            ingester,
            node,
            dir,
            poll_every: Duration::from_secs(2),
            netns: None,
            refresh_every: Duration::from_secs(1),
            chunk_bytes: 4 << 20,
            retry_every: Duration::from_secs(5),
        }
    }
}

type RunResult = Result<Option<(Summary, PathBuf)>, CaptureError>;

struct Running {
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    task: JoinHandle<RunResult>,
    spec: CaptureSpec,
}

/// Statuses the ingester has not accepted yet, the latest per capture.
type Unsent = Arc<Mutex<HashMap<String, NodeStatus>>>;

struct Control {
    cfg: ControlConfig,
    http: HttpSource,
    pods: PodSource,
    clock: Clock,
    running: HashMap<String, Running>,
    /// Captures this node has started, finished or refused: never started again.
    handled: HashSet<String>,
    unsent: Unsent,
    uploads: JoinSet<()>,
    shutdown: CancellationToken,
}

/// Runs the control loop until `shutdown`. Running captures are then stopped
/// (their files are complete and are uploaded by the next start); uploads in
/// flight are left where they stand and resume on the next start.
pub async fn run(
    cfg: ControlConfig,
    http: HttpSource,
    pods: PodSource,
    clock: Clock,
    shutdown: CancellationToken,
) {
    let mut c = Control {
        cfg,
        http,
        pods,
        clock,
        running: HashMap::new(),
        handled: HashSet::new(),
        unsent: Arc::default(),
        uploads: JoinSet::new(),
        shutdown: shutdown.clone(),
    };
    c.recover();
    let mut tick = tokio::time::interval(c.cfg.poll_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => c.poll().await,
        }
    }
    for r in c.running.values() {
        r.stop.store(true, Ordering::Relaxed);
    }
    let running: Vec<_> = c.running.drain().collect();
    for (id, r) in running {
        let result = r.task.await;
        c.finished(&id, &r.spec, result).await;
    }
    c.send_statuses().await;
    while c.uploads.join_next().await.is_some() {}
}

impl Control {
    fn status(&self, id: &str, state: &str, error: String, d: Option<&FileDescription>) {
        let updated = (self.clock)().to_rfc3339();
        let s = node_status(&self.cfg.node, state, error, d, updated);
        set_status(&self.unsent, id, s);
    }

    fn save(&self, id: &str, phase: &Phase) {
        if let Err(e) = state::save(&self.cfg.dir, id, &self.cfg.node, phase) {
            tracing::warn!(capture = id, error = %e, "cannot save the capture's state");
        }
    }

    fn fail(&mut self, id: &str, error: String) {
        tracing::warn!(capture = id, %error, "capture failed");
        self.drop_snapshot(id);
        self.handled.insert(id.to_string());
        self.save(
            id,
            &Phase::Failed {
                error: error.clone(),
            },
        );
        self.status(id, "failed", error, None);
    }

    /// What an earlier run of the collector left: finished files are
    /// uploaded; a capture it was running when it died is reported failed.
    fn recover(&mut self) {
        for (id, phase) in state::load_all(&self.cfg.dir, &self.cfg.node) {
            self.handled.insert(id.clone());
            match phase {
                Phase::Running => {
                    let file = runner::file_path(&self.cfg.dir, &id, &self.cfg.node);
                    let _ = std::fs::remove_file(&file);
                    self.fail(
                        &id,
                        "the collector restarted during the capture: it is not started again \
                         and its incomplete file was removed"
                            .into(),
                    );
                }
                Phase::Finished { description } => self.upload(&id, description),
                Phase::Done { .. } | Phase::Skipped | Phase::Failed { .. } => {}
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<CaptureRequest>, String> {
        let (client, token) = (self.http)();
        let url = format!(
            "{}{REQUESTS_PATH}?node={}",
            self.cfg.ingester.trim_end_matches('/'),
            self.cfg.node
        );
        let mut req = client.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("{}", resp.status()));
        }
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    }

    async fn poll(&mut self) {
        match self.fetch().await {
            Ok(requests) => {
                let served: HashSet<&str> = requests
                    .iter()
                    .filter(|r| !r.cancelled)
                    .map(|r| r.id.as_str())
                    .collect();
                // A capture no longer served (cancelled, deleted) stops.
                for (id, r) in &self.running {
                    if !served.contains(id.as_str()) {
                        tracing::info!(capture = %id, "capture cancelled");
                        r.stop.store(true, Ordering::Relaxed);
                    }
                }
                for r in requests {
                    if !r.cancelled && !self.handled.contains(&r.id) {
                        self.start(r);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot ask the ingester for captures"),
        }
        self.reap().await;
        while self.uploads.try_join_next().is_some() {}
        for (id, r) in &self.running {
            let updated = (self.clock)().to_rfc3339();
            let mut s = node_status(&self.cfg.node, "running", String::new(), None, updated);
            s.packets = r.progress.packets.load(Ordering::Relaxed);
            s.bytes = r.progress.bytes.load(Ordering::Relaxed);
            s.interfaces = r.progress.interfaces();
            set_status(&self.unsent, id, s);
        }
        self.send_statuses().await;
    }

    fn start(&mut self, r: CaptureRequest) {
        self.handled.insert(r.id.clone());
        let checked = match r.check() {
            Ok(c) => c,
            Err(e) => return self.fail(&r.id, e.to_string()),
        };
        let now = (self.clock)();
        let end = chrono::DateTime::parse_from_rfc3339(&r.created)
            .map(|c| c.to_utc() + checked.limits.duration);
        let remaining = match end {
            Ok(end) => (end - now).to_std().unwrap_or_default(),
            Err(e) => return self.fail(&r.id, format!("bad created time {:?}: {e}", r.created)),
        };
        if remaining.is_zero() {
            return self.fail(
                &r.id,
                "the capture's window ended before this node saw it".into(),
            );
        }
        self.save(&r.id, &Phase::Running);
        let mut limits = checked.limits;
        limits.duration = remaining.min(limits.duration);
        let spec = CaptureSpec {
            id: r.id.clone(),
            filter: checked.filter,
            limits,
            requested_by: r.requested_by.clone(),
        };
        let progress = Arc::new(Progress::default());
        let engine = EngineConfig {
            netns: self.cfg.netns.clone(),
            refresh_every: self.cfg.refresh_every,
            progress: progress.clone(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, pods, clock) = (stop.clone(), self.pods.clone(), self.clock.clone());
        let (node, dir, selector, run_spec) = (
            self.cfg.node.clone(),
            self.cfg.dir.clone(),
            checked.selector,
            spec.clone(),
        );
        tracing::info!(capture = %r.id, ?limits, "capture starts");
        let task = tokio::task::spawn_blocking(move || {
            if selector.selects_node(&node) {
                let when = clock().to_rfc3339();
                let netns = engine.netns.as_deref();
                if let Err(e) = snapshot::save(netns, &dir, &run_spec.id, &node, &when) {
                    tracing::warn!(capture = %run_spec.id, error = %e, "no network snapshot");
                }
            }
            let list = move || pods();
            runner::run_on_node(
                &run_spec, &selector, &engine, &node, &list, &dir, clock, &flag,
            )
        });
        self.status(&r.id, "running", String::new(), None);
        self.running.insert(
            r.id,
            Running {
                stop,
                progress,
                task,
                spec,
            },
        );
    }

    /// Captures whose run ended: their file described and sent.
    async fn reap(&mut self) {
        let done: Vec<String> = self
            .running
            .iter()
            .filter(|(_, r)| r.task.is_finished())
            .map(|(id, _)| id.clone())
            .collect();
        for id in done {
            if let Some(r) = self.running.remove(&id) {
                let result = r.task.await;
                self.finished(&id, &r.spec, result).await;
            }
        }
    }

    async fn finished(
        &mut self,
        id: &str,
        spec: &CaptureSpec,
        result: Result<RunResult, tokio::task::JoinError>,
    ) {
        let (summary, path) = match result {
            Ok(Ok(Some(done))) => done,
            Ok(Ok(None)) => return self.skipped(id),
            Ok(Err(e)) => return self.fail(id, e.to_string()),
            Err(e) => return self.fail(id, format!("capture task: {e}")),
        };
        if summary.interfaces.is_empty() {
            let _ = std::fs::remove_file(&path);
            if summary.skipped.is_empty() {
                return self.skipped(id);
            }
            let why: Vec<String> = summary
                .skipped
                .iter()
                .map(|(t, e)| format!("{}: {e}", t.interface))
                .collect();
            return self.fail(
                id,
                format!("no interface could be opened: {}", why.join("; ")),
            );
        }
        let (size, crc) = match upload::file_crc32c(&path).await {
            Ok(v) => v,
            Err(e) => return self.fail(id, format!("reading {}: {e}", path.display())),
        };
        let description = upload::describe(&summary, spec, size, crc);
        tracing::info!(
            capture = id,
            packets = summary.packets,
            lost = summary.lost,
            reason = summary.reason.as_str(),
            "capture finished"
        );
        self.save(
            id,
            &Phase::Finished {
                description: description.clone(),
            },
        );
        self.upload(id, description);
    }

    /// Removes the network snapshot of a capture that stores no file.
    fn drop_snapshot(&self, id: &str) {
        let _ = std::fs::remove_file(snapshot::file_path(&self.cfg.dir, id, &self.cfg.node));
    }

    fn skipped(&mut self, id: &str) {
        self.drop_snapshot(id);
        self.save(id, &Phase::Skipped);
        self.status(id, "skipped", String::new(), None);
    }

    /// Uploads a finished file in the background, reporting as it goes.
    fn upload(&mut self, id: &str, description: FileDescription) {
        self.status(id, "uploading", String::new(), Some(&description));
        let (client, token) = (self.http)();
        let config = UploadConfig {
            ingester: self.cfg.ingester.clone(),
            client,
            token,
            chunk_bytes: self.cfg.chunk_bytes,
            retry_every: self.cfg.retry_every,
        };
        let (id, node, dir) = (id.to_string(), self.cfg.node.clone(), self.cfg.dir.clone());
        let (unsent, clock, cancel) = (
            self.unsent.clone(),
            self.clock.clone(),
            self.shutdown.clone(),
        );
        self.uploads.spawn(async move {
            if cancel.is_cancelled() {
                // Shutting down: the file stays `finished` for the next start.
                return;
            }
            let path = runner::file_path(&dir, &id, &node);
            let snap = snapshot::file_path(&dir, &id, &node);
            if snap.exists() {
                // A snapshot the ingester refuses (an older one) does not hold the file back.
                match upload::upload_snapshot(&config, &id, &node, &snap, &cancel).await {
                    Ok(()) => {}
                    Err(UploadError::Cancelled) => return,
                    Err(e) => {
                        tracing::warn!(capture = %id, error = %e, "network snapshot not stored")
                    }
                }
            }
            let result = upload::upload(&config, &id, &node, &path, &description, &cancel).await;
            let (phase, state, error) = match result {
                Ok(stored) => (
                    Phase::Done {
                        description: stored,
                    },
                    "done",
                    String::new(),
                ),
                Err(UploadError::Cancelled) => return,
                Err(e) => (
                    Phase::Failed {
                        error: e.to_string(),
                    },
                    "failed",
                    e.to_string(),
                ),
            };
            if let Err(e) = state::save(&dir, &id, &node, &phase) {
                tracing::warn!(capture = %id, error = %e, "cannot save the capture's state");
            }
            if state == "done" {
                // Stored by the ingester: the spool's copies go.
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(&snap);
            }
            let s = node_status(
                &node,
                state,
                error,
                Some(&description),
                clock().to_rfc3339(),
            );
            set_status(&unsent, &id, s);
        });
    }

    async fn send_statuses(&self) {
        let pending: Vec<(String, NodeStatus)> = lock(&self.unsent)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if pending.is_empty() {
            return;
        }
        let (client, token) = (self.http)();
        for (id, s) in pending {
            let url = format!(
                "{}/api/v1/captures/{id}/nodes/{}/status",
                self.cfg.ingester.trim_end_matches('/'),
                self.cfg.node
            );
            let mut req = client
                .put(url)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&s).unwrap_or_default());
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            let taken = match req.send().await {
                // A 4xx cannot be helped by sending again (a deleted capture).
                Ok(r) if r.status().is_success() || r.status().is_client_error() => true,
                Ok(r) => {
                    tracing::debug!(capture = %id, status = %r.status(), "status not taken");
                    false
                }
                Err(e) => {
                    tracing::debug!(capture = %id, error = %e, "status not sent");
                    false
                }
            };
            if taken {
                let mut unsent = lock(&self.unsent);
                if unsent.get(&id) == Some(&s) {
                    unsent.remove(&id);
                }
            }
        }
    }
}

fn lock(m: &Unsent) -> std::sync::MutexGuard<'_, HashMap<String, NodeStatus>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn set_status(unsent: &Unsent, id: &str, s: NodeStatus) {
    lock(unsent).insert(id.to_string(), s);
}

/// A status with the counts of a described file (none: zero).
fn node_status(
    node: &str,
    state: &str,
    error: String,
    d: Option<&FileDescription>,
    updated: String,
) -> NodeStatus {
    let interfaces = d.map(|d| d.interfaces.clone()).unwrap_or_default();
    NodeStatus {
        node: node.into(),
        state: state.into(),
        packets: interfaces.iter().map(|i| i.packets).sum(),
        bytes: interfaces.iter().map(|i| i.bytes).sum(),
        lost: interfaces.iter().map(|i| i.lost).sum(),
        interfaces,
        error,
        updated,
    }
}

/// The directory captures use under the shipper's spool directory.
pub fn capture_dir(spool_dir: &Path) -> PathBuf {
    spool_dir.join("captures")
}

/// The control loop as the agent runs it: the ingester, CA and token of flow
/// shipping, the node's pods from the Kubernetes watch (none without one),
/// files under the spool directory.
pub fn run_in_agent(
    ship: &crate::ship::ShipConfig,
    datapath: &crate::config::DatapathConfig,
    index: Option<Arc<std::sync::RwLock<crate::enrich::IpIndex>>>,
    shutdown: CancellationToken,
) -> Result<impl Future<Output = ()> + use<>, crate::ship::ShipError> {
    let client = crate::ship::client::IngestClient::new(ship)?;
    let node = datapath.node.clone();
    let pods: PodSource = {
        let node = node.clone();
        Arc::new(move || match &index {
            Some(i) => super::pods::on_node(&i.read().unwrap_or_else(|e| e.into_inner()), &node),
            None => Vec::new(),
        })
    };
    let cfg = ControlConfig {
        netns: datapath.netns.clone(),
        ..ControlConfig::new(
            ship.ingester_url.clone(),
            node,
            capture_dir(&ship.spool_dir),
        )
    };
    let http: HttpSource = Arc::new(move || client.http());
    Ok(run(
        cfg,
        http,
        pods,
        crate::enrich::system_clock(),
        shutdown,
    ))
}
