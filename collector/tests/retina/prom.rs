//! A real Prometheus server (Debian package, /usr/bin/prometheus) scraping one
//! target every second, queried over its HTTP API. Shared by the collector's
//! Retina test and the root dashboards test (included there by path).

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A Prometheus process, killed when dropped.
pub struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second, or says why it cannot.
    pub fn start(target: SocketAddr) -> Result<Self, String> {
        if !Path::new(PROMETHEUS).exists() {
            return Err(format!(
                "{PROMETHEUS} not installed (Debian package prometheus)"
            ));
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: flowlake\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        let port = free_port();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {PROMETHEUS}: {e}"))?;
        Ok(Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        })
    }

    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Option<serde_json::Value> {
        let resp = reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .query(query)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        serde_json::from_str(&resp.text().await.ok()?).ok()
    }

    /// The samples of an instant query of `promql`, or the error Prometheus gave.
    pub async fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let v = self
            .get("/api/v1/query", &[("query", promql)])
            .await
            .ok_or_else(|| format!("{promql}: no answer from Prometheus"))?;
        if v["status"] != "success" {
            return Err(format!("{promql}: {v}"));
        }
        v["data"]["result"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("{promql}: not a vector: {v}"))
    }

    /// The scalar value of a PromQL expression yielding one sample, if any.
    pub async fn value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql).await.ok()?;
        let [sample] = result.as_slice() else {
            return None;
        };
        sample["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `promql` evaluates to `want` (the scrape interval is 1 s).
    pub async fn wait_for(&self, promql: &str, want: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = None;
        while Instant::now() < deadline {
            last = self.value(promql).await;
            if last == Some(want) {
                return want;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("{promql}: wanted {want}, last value {last:?}");
    }
}
