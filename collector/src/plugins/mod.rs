//! Collector plugins: each data source of the collector is one folder here —
//! its eBPF object (the C stays in `ebpf/`, the objects are built by build.rs
//! or taken from `ebpf/obj`), its loader or reader, the capabilities or metrics
//! it contributes, and its tests. [`registry`] lists their constructors in one
//! place and enables them by name (`--plugins`, default all); [`status`] keeps
//! each plugin's state (enabled, disabled, degraded, failed, with the reason)
//! for the preflight (`flowlake collector --check`) and `/metrics`
//! (`flowlake_collector_plugin_status{plugin,state}`).
//!
//! A plugin implements [`Plugin`] and, depending on what it contributes:
//! - [`Plugin::bpf`]: an eBPF object loaded (and its tracepoints attached) by
//!   the datapath, with the programs each capability needs and the loss
//!   counters it keeps ([`LossSlot`]);
//! - [`Plugin::source`]: gauges read from the kernel at scrape time
//!   ([`source::Source`]);
//! - neither: a consumer of flow records (`apiserver`, `dns`) that the
//!   metrics or the datapath ask about by name ([`PluginSet::enabled`]).
//!
//! See docs/plugins.md ("Writing a plugin").

pub mod apiserver;
pub mod conntrack;
pub mod dns;
pub mod drops;
pub mod flows;
pub mod interface_stats;
pub mod load;
pub mod registry;
pub mod report;
pub mod source;
pub mod status;
pub mod tcp;
pub mod tcp_connection_remote;

use aya::Ebpf;

use crate::metrics::LossKind;

pub use load::Loads;
pub use registry::{PluginArgs, PluginRegistry, PluginSet};
pub use source::{GaugeFamily, Roots, Source};
pub use status::{PluginState, PluginStatus};

/// A capability a plugin gives this node (a row of the preflight's "this node
/// will observe") and the programs it needs running.
#[derive(Debug, Clone, Copy)]
pub struct Capability {
    pub name: &'static str,
    pub programs: &'static [&'static str],
}

/// A kernel-side loss counter: slot `slot` of the per-CPU `losses` array of
/// object `object` (a plugin name), exported as `kind`.
#[derive(Debug, Clone, Copy)]
pub struct LossSlot {
    pub object: &'static str,
    pub slot: u32,
    pub kind: LossKind,
    /// The slot counts bytes (`flowlake_collector_lost_bytes_total`).
    pub bytes: bool,
}

/// One collector plugin.
pub trait Plugin: Send + Sync + 'static {
    /// Its name in `--plugins` and in every status.
    fn name(&self) -> &'static str;
    /// One line for `--help` and docs.
    fn about(&self) -> &'static str;
    /// Plugins it needs enabled (its state is `failed` without them).
    fn needs(&self) -> &'static [&'static str] {
        &[]
    }
    /// The capabilities it gives and the programs each needs.
    fn capabilities(&self) -> &'static [Capability] {
        &[]
    }
    /// Its kernel-side loss counters.
    fn loss_slots(&self) -> &'static [LossSlot] {
        &[]
    }
    /// Its eBPF object, when it has one.
    fn bpf(&self) -> Option<&dyn BpfPlugin> {
        None
    }
    /// Its scrape-time metric source, when it has one.
    fn source(&self, _roots: &Roots) -> Option<Box<dyn Source>> {
        None
    }
}

/// What a loader may need from the datapath's settings.
#[derive(Debug, Clone, Copy)]
pub struct LoadContext {
    pub flow_map_entries: u32,
    /// The first drop reason counted (`DropReasons::min_counted`).
    pub min_drop_reason: u32,
}

/// A plugin with an eBPF object of its own.
pub trait BpfPlugin {
    /// Loads the object (and attaches its tracepoints), noting each program's
    /// result in `loads`; None when nothing of it runs.
    fn load(&self, cx: &LoadContext, loads: &mut load::Loads<'_>) -> Option<Ebpf>;
}

/// The full chain of an error's messages (`a: b: c`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Loads a tracepoint program of `bpf` and attaches it to `category:tp`.
pub fn attach_tracepoint(
    bpf: &mut Ebpf,
    name: &str,
    category: &str,
    tp: &str,
) -> crate::error::Result<()> {
    use crate::error::CollectorError;
    let prog: &mut aya::programs::TracePoint = bpf
        .program_mut(name)
        .ok_or_else(|| CollectorError::Config(format!("program {name} missing")))?
        .try_into()
        .map_err(|e| prog_err(name, e))?;
    prog.load().map_err(|e| prog_err(name, e))?;
    prog.attach(category, tp).map_err(|e| prog_err(name, e))?;
    Ok(())
}

/// A program error of program `name`.
pub fn prog_err(name: &str, e: aya::programs::ProgramError) -> crate::error::CollectorError {
    crate::error::CollectorError::Program {
        program: name.to_string(),
        source: Box::new(e),
    }
}
