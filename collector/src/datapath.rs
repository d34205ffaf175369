//! Loading the eBPF objects, attaching them, and reading their maps.
//!
//! Each enabled plugin's object (flows, drops, tcp: see `crate::plugins`) and
//! each program in it loads on its own: one that fails is logged and exported
//! (`flowlake_collector_program_loaded` = 0) while the others run. Dropping a
//! [`Programs`] detaches every link and unloads every program and map.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, BorrowedFd};

use aya::Ebpf;
use aya::maps::{Array, Map, MapData, PerCpuArray, RingBuf};
use aya::programs::SchedClassifier;
use tracing::warn;

use crate::abi::{ClockSample, FlowKey, FlowStats};
use crate::attach::{Attachments, TcMode};
use crate::error::{CollectorError, Result};
use crate::flowcache::{self, FlowCache};
use crate::l3::L3Interfaces;
use crate::metrics::DatapathMetrics;
use crate::plugins::report::LoadReport;
use crate::plugins::{LoadContext, PluginSet};

pub use crate::plugins::load::{Loads, objects};

/// The loaded objects, one per enabled eBPF plugin that loaded. Maps the
/// datapath reads are taken out of their object at load.
pub struct Programs {
    objects: BTreeMap<&'static str, Ebpf>,
    plugins: PluginSet,
    flow_map: Option<Map>,
    drop_map: Option<Map>,
    tcp_map: Option<Map>,
    dns: Option<RingBuf<MapData>>,
    /// The flow programs' per-CPU cache in front of `flow_map`.
    cache: Option<FlowCache>,
    /// `clock_sample`'s output map (jiffies and boot time at one instant).
    clock: Option<Array<MapData, ClockSample>>,
    /// The flow programs' tc attachments (see attach.rs).
    attached: Attachments,
    /// Loss counters already exported, per (object, slot).
    exported: HashMap<(&'static str, u32), u64>,
    /// Every program's load result and this kernel's degradations.
    report: LoadReport,
    /// The flow programs' interfaces without a link-layer header.
    l3: Option<L3Interfaces>,
}

fn fd_of(map: &Option<Map>) -> Option<BorrowedFd<'_>> {
    match map.as_ref()? {
        Map::HashMap(d) | Map::LruHashMap(d) | Map::PerCpuHashMap(d) => Some(d.fd().as_fd()),
        _ => None,
    }
}

/// Makes sure tracefs is mounted (aya reads tracepoint ids from it).
fn ensure_tracefs() {
    let events = std::path::Path::new("/sys/kernel/tracing/events");
    if events.exists() || std::path::Path::new("/sys/kernel/debug/tracing/events").exists() {
        return;
    }
    // SAFETY: plain mount(2) with static NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        warn!(error = %std::io::Error::last_os_error(), "cannot mount tracefs");
    }
}

impl Programs {
    /// Loads every built-in plugin's object; fails only when none of them loads.
    pub fn load(
        flow_map_entries: u32,
        min_drop_reason: u32,
        metrics: &DatapathMetrics,
    ) -> Result<Self> {
        let cx = LoadContext {
            flow_map_entries,
            min_drop_reason,
        };
        Self::load_plugins(&PluginSet::default(), cx, metrics).0
    }

    /// Loads the objects of the enabled plugins of `plugins`, with what it
    /// found also when nothing loads (the preflight's view); sets every
    /// plugin's state. Fails when plugins with objects are enabled and none
    /// of them loads.
    pub fn load_plugins(
        plugins: &PluginSet,
        cx: LoadContext,
        metrics: &DatapathMetrics,
    ) -> (Result<Self>, LoadReport) {
        let mut report = LoadReport::default();
        let r = Self::load_inner(plugins, cx, metrics, &mut report);
        crate::plugins::status::derive(plugins, &report);
        (
            r.map(|mut p| {
                p.report = report.clone();
                p
            }),
            report,
        )
    }

    fn load_inner(
        plugins: &PluginSet,
        cx: LoadContext,
        metrics: &DatapathMetrics,
        report: &mut LoadReport,
    ) -> Result<Self> {
        ensure_tracefs();
        let mut loads = Loads::new(report, metrics);
        let mut objects = BTreeMap::new();
        let mut with_objects = 0;
        for p in plugins.enabled_plugins() {
            let Some(bpf) = p.bpf() else { continue };
            with_objects += 1;
            if let Some(o) = bpf.load(&cx, &mut loads) {
                objects.insert(p.name(), o);
            }
        }
        if with_objects > 0 && objects.is_empty() {
            return Err(CollectorError::NothingLoaded(loads.errors().join("; ")));
        }
        let mut flows = objects.remove("flows");
        let l3 = flows.as_mut().and_then(L3Interfaces::take);
        let flow_map = flows.as_mut().and_then(|b| b.take_map("flows"));
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| CollectorError::io(what, e))?;
        // Taken (and drained) also without the dns plugin: the flow programs
        // copy DNS messages whatever userspace does with them.
        let dns = flows
            .as_mut()
            .and_then(|b| b.take_map("dns_events"))
            .and_then(|m| RingBuf::try_from(m).ok());
        let cache = match flows.as_mut().map(|b| {
            (
                b.take_map("cache_bank").map(Array::try_from),
                b.take_map("flow_cache").map(PerCpuArray::try_from),
            )
        }) {
            Some((Some(Ok(bank)), Some(Ok(slots)))) => Some(
                FlowCache::new(bank, slots, cpus)
                    .map_err(|e| CollectorError::io("flow cache", e))?,
            ),
            Some(_) => return Err(CollectorError::Config("flow cache maps missing".into())),
            None => None,
        };
        let clock = flows
            .as_mut()
            .and_then(|b| b.take_map("clock"))
            .and_then(|m| Array::try_from(m).ok());
        if let Some(f) = flows {
            objects.insert("flows", f);
        }
        let drop_map = objects.get_mut("drops").and_then(|b| b.take_map("drops"));
        let tcp_map = objects
            .get_mut("tcp")
            .and_then(|b| b.take_map("tcp_health"));
        Ok(Programs {
            objects,
            plugins: plugins.clone(),
            flow_map,
            drop_map,
            tcp_map,
            dns,
            cache,
            clock,
            attached: Attachments::new(TcMode::Auto),
            exported: HashMap::new(),
            report: LoadReport::default(),
            l3,
        })
    }

    /// The objects loaded, by plugin name.
    pub fn loaded(&self) -> Vec<&'static str> {
        self.objects.keys().copied().collect()
    }

    /// The kernel ids of every program loaded, with their names (what
    /// `bpftool prog` lists).
    pub fn program_ids(&self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for bpf in self.objects.values() {
            for (name, prog) in bpf.programs() {
                if let Ok(info) = prog.info() {
                    out.push((name.to_string(), info.id()));
                }
            }
        }
        out
    }

    /// The plugins this datapath was loaded with.
    pub fn plugins(&self) -> &PluginSet {
        &self.plugins
    }
}

impl Programs {
    /// How the flow programs attach to tc (call before the first attach).
    pub fn set_tc_mode(&mut self, mode: TcMode) {
        if self.attached.is_empty() {
            self.attached = Attachments::new(mode);
        }
    }

    /// TCX or clsact (resolved for this kernel).
    pub fn tc_mode(&self) -> TcMode {
        self.attached.mode()
    }

    /// Attaches the flow programs first on both tc hooks of an interface
    /// (TCX on kernels >= 6.6, clsact otherwise; see attach.rs).
    pub fn attach(&mut self, ifindex: u32, name: &str) -> Result<()> {
        if let Some(l3) = self.l3.as_mut() {
            l3.mark(ifindex, name);
        }
        match self.objects.get_mut("flows") {
            Some(bpf) => self.attached.attach(bpf, ifindex, name),
            None => Ok(()),
        }
    }

    /// Detaches from an interface (gone or no longer wanted).
    pub fn detach(&mut self, ifindex: u32) {
        if let Some(bpf) = self.objects.get_mut("flows") {
            self.attached.detach(bpf, ifindex);
        }
        if let Some(l3) = self.l3.as_mut() {
            l3.forget(ifindex);
        }
    }

    /// Attaches again ahead of any program that took the first place on a
    /// hook since; returns how many hooks moved.
    pub fn keep_first(&mut self) -> usize {
        match self.objects.get_mut("flows") {
            Some(bpf) => self.attached.keep_first(bpf),
            None => 0,
        }
    }

    /// [`Programs::keep_first`] on one interface (its tc set-up changed).
    pub fn keep_first_on(&mut self, ifindex: u32) -> usize {
        match self.objects.get_mut("flows") {
            Some(bpf) => self.attached.keep_first_on(bpf, ifindex),
            None => 0,
        }
    }

    /// Number of interfaces attached.
    pub fn attached_count(&self) -> usize {
        self.attached.len()
    }

    /// Every program's load result and this kernel's degradations.
    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    /// Whether the flow programs are running.
    pub fn has_flows(&self) -> bool {
        self.objects.contains_key("flows")
    }

    /// The flows hash and its copies per key: one (shared by the CPUs; the
    /// per-CPU counting happens in the flow cache in front of it).
    pub fn flow_map(&self) -> Option<(BorrowedFd<'_>, usize)> {
        fd_of(&self.flow_map).map(|fd| (fd, 1))
    }

    /// Switches the flow cache's bank and returns the packets of the old one
    /// (see [`FlowCache::take`]); empty without flow programs.
    pub fn take_cached(&mut self) -> std::io::Result<Vec<(FlowKey, FlowStats)>> {
        match self.cache.as_mut() {
            Some(c) => c.take(),
            None => Ok(Vec::new()),
        }
    }

    /// Jiffies and boot time at one instant (None without flow programs).
    pub fn clock_sample(&self) -> Option<std::io::Result<ClockSample>> {
        let prog: &SchedClassifier = self
            .objects
            .get("flows")?
            .program("clock_sample")?
            .try_into()
            .ok()?;
        let fd = match prog.fd() {
            Ok(fd) => fd.as_fd(),
            Err(e) => return Some(Err(std::io::Error::other(e))),
        };
        Some(flowcache::sample_clock(fd, self.clock.as_ref()?))
    }

    pub fn drop_map_fd(&self) -> Option<BorrowedFd<'_>> {
        fd_of(&self.drop_map)
    }

    pub fn tcp_map_fd(&self) -> Option<BorrowedFd<'_>> {
        fd_of(&self.tcp_map)
    }

    /// The DNS ring buffer (to poll its fd and read events).
    pub fn dns_ring(&mut self) -> Option<&mut RingBuf<MapData>> {
        self.dns.as_mut()
    }

    /// Adds the kernel-side loss counters' growth since the last call to the
    /// metrics: the slots of every enabled plugin ([`crate::plugins::LossSlot`]).
    pub fn export_losses(&mut self, metrics: &DatapathMetrics) {
        let slots: Vec<_> = self
            .plugins
            .enabled_plugins()
            .flat_map(|p| p.loss_slots().iter().copied())
            .collect();
        for s in slots {
            let Some(map) = self.objects.get(s.object).and_then(|b| b.map("losses")) else {
                continue;
            };
            let Ok(arr) = PerCpuArray::<_, u64>::try_from(map) else {
                continue;
            };
            let Ok(values) = arr.get(&s.slot, 0) else {
                continue;
            };
            let total: u64 = values.iter().sum();
            let prev = self.exported.insert((s.object, s.slot), total).unwrap_or(0);
            let counter = if s.bytes {
                metrics.lost_bytes(s.kind)
            } else {
                metrics.lost(s.kind)
            };
            counter.inc_by(total.saturating_sub(prev));
        }
    }
}

#[cfg(test)]
mod tests {
    /// The committed objects in ebpf/obj were built from the current sources:
    /// rebuild them with `FLOWLAKE_EBPF_UPDATE=1 cargo build -p flowlake-collector`.
    #[test]
    fn committed_objects_are_current() {
        let recorded = include_str!("../../ebpf/obj/SOURCE_HASH").trim();
        assert_eq!(
            recorded,
            super::objects::SOURCE_HASH,
            "ebpf/obj is stale: run FLOWLAKE_EBPF_UPDATE=1 cargo build -p flowlake-collector"
        );
    }
}
