//! The compiled eBPF objects and what a plugin's loader notes while loading.

use tracing::{info, warn};

use super::report::{Degraded, LoadReport, ProgramStatus};
use crate::metrics::DatapathMetrics;

/// The compiled objects (built by build.rs from `ebpf/`, or the committed copies).
pub mod objects {
    pub static FLOWS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flows.bpf.o"));
    /// The flow object for kernels that refuse atomic OR (before 5.12).
    pub static FLOWS_COMPAT: &[u8] =
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flows_compat.bpf.o"));
    pub static DROPS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/drops.bpf.o"));
    pub static TCP: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcp.bpf.o"));
    /// The benchmark's minimal packet counter.
    pub static COUNTER: &[u8] =
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/counter.bpf.o"));
    /// Hash of the C sources the objects were built from (see build.rs).
    pub const SOURCE_HASH: &str = env!("FLOWLAKE_EBPF_SOURCE_HASH");
}

/// What the plugins' loaders note while loading: each program's result (logged
/// and exported as `flowlake_collector_program_loaded`) and the reduced forms
/// chosen for this kernel.
pub struct Loads<'a> {
    report: &'a mut LoadReport,
    metrics: &'a DatapathMetrics,
    errors: Vec<String>,
}

impl<'a> Loads<'a> {
    pub fn new(report: &'a mut LoadReport, metrics: &'a DatapathMetrics) -> Self {
        Loads {
            report,
            metrics,
            errors: Vec::new(),
        }
    }

    /// The errors noted so far (`program: error`).
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// Program `name` runs (Ok) or not (the loader's error).
    pub fn note(&mut self, name: &str, r: std::result::Result<(), String>) {
        self.report.programs.push(ProgramStatus::new(name, &r));
        self.metrics.set_program(name, r.is_ok());
        match r {
            Ok(()) => info!(program = name, "eBPF program running"),
            Err(e) => {
                warn!(program = name, error = %e, "eBPF program not running");
                self.errors.push(format!("{name}: {e}"));
            }
        }
    }

    /// Plugin `plugin` runs in a reduced form on this kernel.
    pub fn degrade(&mut self, plugin: &'static str, reason: String) {
        self.report.degraded.push(Degraded {
            feature: plugin,
            reason,
        });
    }
}
