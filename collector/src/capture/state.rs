//! Where each of this node's captures stands, kept on disk beside its file
//! (`<dir>/<id>/<node>.state.json`) so a restarted collector knows what it
//! already did: a finished file is uploaded, a capture that was running when
//! the collector died is reported failed (not restarted from zero), and
//! nothing done is done again.

use std::path::{Path, PathBuf};

use flowlake_schemas::capture::FileDescription;
use serde::{Deserialize, Serialize};

/// A node's part of a capture, as far as it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// The capture was started; a collector that finds this after a restart
    /// died during it.
    Running,
    /// The file is complete and described; it waits for its upload.
    Finished {
        description: FileDescription,
    },
    /// Stored by the ingester.
    Done {
        description: FileDescription,
    },
    /// No selected pod ran on the node during the capture.
    Skipped,
    Failed {
        error: String,
    },
}

impl Phase {
    /// Nothing more happens to it on this node.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Phase::Done { .. } | Phase::Skipped | Phase::Failed { .. }
        )
    }
}

/// The state file of capture `id` on `node` under `dir`.
pub fn path(dir: &Path, id: &str, node: &str) -> PathBuf {
    dir.join(id).join(format!("{node}.state.json"))
}

/// Writes the state (to a temporary file renamed over the old one).
pub fn save(dir: &Path, id: &str, node: &str, phase: &Phase) -> std::io::Result<()> {
    let p = path(dir, id, node);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = p.with_extension("json.tmp");
    let body = serde_json::to_vec(phase).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, body)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &p)
}

/// Every capture of `node` with a state under `dir`, by id.
pub fn load_all(dir: &Path, node: &str) -> Vec<(String, Phase)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        let p = path(dir, &id, node);
        let Ok(bytes) = std::fs::read(&p) else {
            continue;
        };
        match serde_json::from_slice::<Phase>(&bytes) {
            Ok(phase) => out.push((id, phase)),
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "unreadable capture state");
                out.push((
                    id,
                    Phase::Failed {
                        error: format!("unreadable state file: {e}"),
                    },
                ));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_saved_and_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let d = FileDescription {
            size: 10,
            crc32c: 7,
            filter: String::new(),
            requested_by: "ops".into(),
            stop_reason: "duration".into(),
            interfaces: Vec::new(),
            object_path: String::new(),
        };
        save(dir.path(), "b", "n1", &Phase::Running).unwrap();
        save(dir.path(), "a", "n1", &Phase::Running).unwrap();
        save(
            dir.path(),
            "a",
            "n1",
            &Phase::Finished {
                description: d.clone(),
            },
        )
        .unwrap();
        save(dir.path(), "a", "n2", &Phase::Skipped).unwrap();
        std::fs::create_dir_all(dir.path().join("c")).unwrap();
        assert_eq!(
            load_all(dir.path(), "n1"),
            [
                ("a".to_string(), Phase::Finished { description: d }),
                ("b".to_string(), Phase::Running)
            ]
        );
        assert!(Phase::Skipped.is_final() && !Phase::Running.is_final());
    }
}
