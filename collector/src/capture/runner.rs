//! A capture on one node: the selection resolved against the pods the node
//! runs, again every `refresh_every` while the capture runs (a matching pod
//! that starts mid-capture is captured from then on), written to
//! `<dir>/<id>/<node>.pcapng` for the uploader.

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::bridge::BridgePorts;
use super::engine::{self, CaptureSpec, EngineConfig, Summary, Target};
use super::error::{CaptureError, Result};
use super::resolve;
use super::select::{PodInfo, Selector};
use super::socket::in_netns;
use crate::enrich::Clock;
use flowlake_schemas::capture::check_id;

/// Where a node's file of capture `id` is written under `dir`.
pub fn file_path(dir: &Path, id: &str, node: &str) -> PathBuf {
    dir.join(id).join(format!("{node}.pcapng"))
}

/// Fills in the host-side interface of every pod that has none, looking
/// routes up in `netns` (None: ours).
pub fn resolve_interfaces(netns: Option<&Path>, mut pods: Vec<PodInfo>) -> Vec<PodInfo> {
    let lookup = pods.clone();
    let found: Vec<Option<String>> = in_netns(netns, move || {
        let mut bridges = BridgePorts::default();
        Ok(lookup
            .iter()
            .map(|p| {
                p.interface
                    .clone()
                    .or_else(|| resolve::pod_interface(&p.ips, &mut bridges))
            })
            .collect())
    })
    .unwrap_or_else(|_| vec![None; pods.len()]);
    for (p, f) in pods.iter_mut().zip(found) {
        p.interface = f;
    }
    pods
}

/// The capture targets among `pods`: those `selector` matches that have a
/// known interface.
pub fn targets(selector: &Selector, pods: &[PodInfo]) -> Vec<Target> {
    pods.iter()
        .filter(|p| selector.matches(p))
        .filter_map(|p| {
            Some(Target {
                interface: p.interface.clone()?,
                namespace: p.namespace.clone(),
                pod: p.name.clone(),
                node: p.node.clone(),
            })
        })
        .collect()
}

/// Runs this node's part of a capture; None when the selector leaves this
/// node out. `pods` lists the pods running on the node, asked again on
/// every refresh.
#[allow(clippy::too_many_arguments)]
pub fn run_on_node(
    spec: &CaptureSpec,
    selector: &Selector,
    config: &EngineConfig,
    node: &str,
    pods: &dyn Fn() -> Vec<PodInfo>,
    dir: &Path,
    clock: Clock,
    stop: &AtomicBool,
) -> Result<Option<(Summary, PathBuf)>> {
    check_id(&spec.id)?;
    if !selector.selects_node(node) {
        return Ok(None);
    }
    let path = file_path(dir, &spec.id, node);
    let parent = path.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent)
        .map_err(|e| CaptureError::io(format!("creating {}", parent.display()), e))?;
    let file = std::fs::File::create(&path)
        .map_err(|e| CaptureError::io(format!("creating {}", path.display()), e))?;
    let netns = config.netns.clone();
    let mut targets = || {
        let candidates: Vec<PodInfo> = pods().into_iter().filter(|p| selector.matches(p)).collect();
        targets(selector, &resolve_interfaces(netns.as_deref(), candidates))
    };
    let (summary, out) = engine::run(
        spec,
        config,
        node,
        &mut targets,
        BufWriter::new(file),
        clock,
        stop,
    )?;
    out.into_inner()
        .map_err(|e| CaptureError::io(format!("writing {}", path.display()), e.into_error()))?
        .sync_all()
        .map_err(|e| CaptureError::io(format!("syncing {}", path.display()), e))?;
    Ok(Some((summary, path)))
}
