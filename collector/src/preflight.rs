//! What this node will observe: each program's load result in plain words,
//! the capabilities that run in a reduced form on this kernel, and the
//! preflight behind `flowlake collector --check`.

use std::path::Path;

use serde::Serialize;

use crate::attach::TcMode;
use crate::btf::DropReasons;
use crate::config::DatapathConfig;
use crate::datapath::Programs;
use crate::metrics::DatapathMetrics;
pub use crate::plugins::report::{Degraded, LoadReport, ProgramStatus, plain_words};
use crate::plugins::{LoadContext, PluginSet, PluginState, PluginStatus};

impl LoadReport {
    /// Whether every named program runs.
    pub fn running(&self, programs: &[&str]) -> bool {
        programs
            .iter()
            .all(|p| self.programs.iter().any(|s| s.program == *p && s.running))
    }

    /// Each capability of the enabled plugins and whether this node observes it.
    pub fn capabilities(&self, plugins: &PluginSet) -> Vec<Capability> {
        plugins
            .enabled_plugins()
            .flat_map(|p| {
                let ok = p.needs().iter().all(|n| plugins.enabled(n));
                p.capabilities().iter().map(move |c| (p.name(), ok, c))
            })
            .map(|(plugin, ok, c)| Capability {
                name: c.name,
                plugin,
                observed: ok && self.running(c.programs),
                degraded: self
                    .degraded
                    .iter()
                    .find(|d| d.feature == c.name)
                    .map(|d| d.reason.clone()),
            })
            .collect()
    }
}

/// One capability on this node.
#[derive(Debug, Clone, Serialize)]
pub struct Capability {
    pub name: &'static str,
    /// The plugin giving it.
    pub plugin: &'static str,
    pub observed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
}

/// The preflight's findings.
#[derive(Debug, Clone, Serialize)]
pub struct Preflight {
    pub kernel: String,
    pub btf: bool,
    pub tc: String,
    pub programs: Vec<ProgramStatus>,
    pub capabilities: Vec<Capability>,
    /// Every plugin's state (disabled ones included).
    pub plugins: Vec<PluginStatus>,
    /// Flows can be observed.
    pub flows: bool,
    /// The verdict (non-zero exit otherwise): flows can be observed or, with
    /// the flows plugin disabled, no enabled plugin failed.
    pub ok: bool,
}

impl Preflight {
    /// Assembles the findings from a load report and the plugins' states.
    pub fn new(report: &LoadReport, plugins: &PluginSet, btf_path: &Path, tc: &str) -> Self {
        let capabilities = report.capabilities(plugins);
        let statuses = plugins.statuses();
        let flows = capabilities.iter().any(|c| c.name == "flows" && c.observed);
        let ok = if plugins.enabled("flows") {
            flows
        } else {
            !statuses.iter().any(|s| s.state == PluginState::Failed)
        };
        Preflight {
            kernel: kernel_release(),
            btf: btf_path.exists(),
            tc: tc.to_string(),
            programs: report.programs.clone(),
            flows,
            ok,
            capabilities,
            plugins: statuses,
        }
    }

    /// The findings as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut s = format!(
            "kernel {}\nBTF {}\ntc attach: {}\n\nprograms:\n",
            self.kernel,
            if self.btf { "present" } else { "MISSING" },
            self.tc
        );
        for p in &self.programs {
            match &p.reason {
                None => s.push_str(&format!("  {:<18} running\n", p.program)),
                Some(r) => s.push_str(&format!("  {:<18} NOT RUNNING: {r}\n", p.program)),
            }
        }
        s.push_str("\nplugins:\n");
        for p in &self.plugins {
            match &p.reason {
                None => s.push_str(&format!("  {:<22} {}\n", p.plugin, p.state.as_str())),
                Some(r) => s.push_str(&format!("  {:<22} {}: {r}\n", p.plugin, p.state.as_str())),
            }
        }
        s.push_str("\nthis node will observe:\n");
        for c in &self.capabilities {
            let state = match (c.observed, &c.degraded) {
                (false, _) => "no".to_string(),
                (true, None) => "yes".to_string(),
                (true, Some(d)) => format!("yes, degraded: {d}"),
            };
            s.push_str(&format!("  {:<12} {state}\n", c.name));
        }
        s.push_str(match (self.flows, self.ok) {
            (true, _) => "\nverdict: flows can be observed\n",
            (false, true) => "\nverdict: the enabled plugins run (flows plugin disabled)\n",
            (false, false) => "\nverdict: FLOWS CANNOT BE OBSERVED on this node\n",
        });
        s
    }
}

/// Loads every program as the collector would (nothing attached) and reports
/// what this node will observe. Maps and programs are removed on return.
pub fn check(config: &DatapathConfig) -> Preflight {
    let reasons = DropReasons::from_btf_file(&config.btf_path).unwrap_or_default();
    let metrics = DatapathMetrics::default();
    let cx = LoadContext {
        flow_map_entries: config.flow_map_entries,
        min_drop_reason: reasons.min_counted(),
    };
    let (programs, report) = Programs::load_plugins(&config.plugins, cx, &metrics);
    drop(programs);
    let tc = match config.tc_mode.resolve() {
        TcMode::Tcx => "tcx",
        _ => "clsact",
    };
    Preflight::new(&report, &config.plugins, &config.btf_path, tc)
}

/// `uname -r`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(running: &[&str], failed: &[&str]) -> LoadReport {
        let mut r = LoadReport::default();
        for p in running {
            r.programs.push(ProgramStatus::new(p, &Ok(())));
        }
        for p in failed {
            let e = Err("eBPF program x: the BPF_PROG_LOAD syscall failed: Operation not permitted (os error 1)".to_string());
            r.programs.push(ProgramStatus::new(p, &e));
        }
        r
    }

    #[test]
    fn capabilities_follow_their_programs() {
        let mut r = report(
            &["flow_ingress", "flow_egress", "tcp_probe", "kfree_skb"],
            &["tcp_retransmit"],
        );
        r.degraded.push(Degraded {
            feature: "drops",
            reason: "no drop reasons before 5.17".into(),
        });
        let plugins = PluginSet::default();
        crate::plugins::status::derive(&plugins, &r);
        let caps = r.capabilities(&plugins);
        let get = |n: &str| caps.iter().find(|c| c.name == n).unwrap();
        assert!(get("flows").observed && get("dns").observed && get("rtt").observed);
        assert!(!get("retransmits").observed && get("resets").observed);
        assert_eq!(
            get("drops").degraded.as_deref(),
            Some("no drop reasons before 5.17")
        );
        let p = Preflight::new(&r, &plugins, Path::new("/nonexistent"), "clsact");
        assert!(p.flows && p.ok && !p.btf);
        let state = |n: &str| p.plugins.iter().find(|s| s.plugin == n).unwrap().clone();
        assert_eq!(state("flows").state, PluginState::Enabled);
        assert_eq!(state("drops").state, PluginState::Degraded);
        assert_eq!(
            state("drops").reason.as_deref(),
            Some("no drop reasons before 5.17")
        );
        let tcp = state("tcp");
        assert_eq!(tcp.state, PluginState::Degraded);
        assert!(
            tcp.reason
                .as_deref()
                .unwrap()
                .starts_with("tcp_retransmit: not permitted"),
            "{tcp:?}"
        );
        let text = p.render();
        assert!(
            text.contains("tcp_retransmit     NOT RUNNING: not permitted"),
            "{text}"
        );
        assert!(text.contains("verdict: flows can be observed"), "{text}");
    }

    #[test]
    fn no_flow_programs_no_flows() {
        let plugins = PluginSet::default();
        let r = report(&["flow_ingress"], &["flow_egress"]);
        crate::plugins::status::derive(&plugins, &r);
        let p = Preflight::new(&r, &plugins, Path::new("/"), "tcx");
        assert!(!p.flows && !p.ok);
        assert!(p.render().contains("FLOWS CANNOT BE OBSERVED"));
        // Without the flows plugin: the verdict is the enabled plugins'.
        let plugins = PluginSet::select(&["drops"]).unwrap();
        let r = report(&["kfree_skb"], &[]);
        crate::plugins::status::derive(&plugins, &r);
        let p = Preflight::new(&r, &plugins, Path::new("/"), "tcx");
        assert!(!p.flows && p.ok);
        assert_eq!(p.capabilities.len(), 1);
        assert!(
            p.render().contains("flows plugin disabled"),
            "{}",
            p.render()
        );
    }

    #[test]
    fn plain_words_name_the_cause() {
        assert!(plain_words("x: BPF_STX uses reserved fields").contains("atomic"));
        assert!(plain_words("failed to resolve CO-RE relocation").contains("missing"));
        assert_eq!(plain_words("something new"), "failed to load");
    }
}
