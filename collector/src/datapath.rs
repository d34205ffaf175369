//! Loading the eBPF objects, attaching them, and reading their maps.
//!
//! Each object (flows, drops, tcp) and each program in it loads on its own: one
//! that fails is logged and exported (`flowlake_collector_program_loaded` = 0)
//! while the others run. Dropping a [`Programs`] detaches every link and
//! unloads every program and map.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};

use aya::maps::{Array, Map, MapData, PerCpuArray, RingBuf};
use aya::programs::{SchedClassifier, TracePoint};
use aya::{Ebpf, EbpfLoader};
use tracing::{info, warn};

use crate::abi::{self, ClockSample, FlowKey, FlowStats};
use crate::attach::{Attachments, TcMode};
use crate::error::{CollectorError, Result};
use crate::flowcache::{self, FlowCache};
use crate::l3::L3Interfaces;
use crate::metrics::{DatapathMetrics, LossKind};
use crate::preflight::{Degraded, LoadReport, ProgramStatus};

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

/// tcp.bpf.c's programs and their tracepoints.
const TCP_PROGRAMS: &[(&str, &str)] = &[
    ("tcp_retransmit", "tcp_retransmit_skb"),
    ("tcp_probe", "tcp_probe"),
];

/// The loaded objects. Fields are None when their object failed to load.
pub struct Programs {
    flows: Option<Ebpf>,
    drops: Option<Ebpf>,
    tcp: Option<Ebpf>,
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
    /// Loads every object; fails only when none of them loads.
    pub fn load(
        flow_map_entries: u32,
        min_drop_reason: u32,
        metrics: &DatapathMetrics,
    ) -> Result<Self> {
        Self::load_with_report(flow_map_entries, min_drop_reason, metrics).0
    }

    /// [`Programs::load`], with what it found also when nothing loads (the
    /// preflight's view).
    pub fn load_with_report(
        flow_map_entries: u32,
        min_drop_reason: u32,
        metrics: &DatapathMetrics,
    ) -> (Result<Self>, LoadReport) {
        let mut report = LoadReport::default();
        let r = Self::load_inner(flow_map_entries, min_drop_reason, metrics, &mut report);
        for d in &report.degraded {
            metrics.set_degraded(d.feature, true);
        }
        (
            r.map(|mut p| {
                p.report = report.clone();
                p
            }),
            report,
        )
    }

    fn load_inner(
        flow_map_entries: u32,
        min_drop_reason: u32,
        metrics: &DatapathMetrics,
        report: &mut LoadReport,
    ) -> Result<Self> {
        ensure_tracefs();
        let mut errors = Vec::new();
        let mut statuses = Vec::new();
        let mut note = |name: &str, r: std::result::Result<(), String>| {
            statuses.push(ProgramStatus::new(name, &r));
            metrics.set_program(name, r.is_ok());
            match r {
                Ok(()) => info!(program = name, "eBPF program running"),
                Err(e) => {
                    warn!(program = name, error = %e, "eBPF program not running");
                    errors.push(format!("{name}: {e}"));
                }
            }
        };

        // The flow object, else the one without atomic OR (kernels before
        // 5.12 refuse that instruction anywhere in a program). Older kernels
        // try the latter first: one verification less (seconds in an emulator).
        let mut flows = None;
        let mut failed = Vec::new();
        let mut candidates = [
            ("flows", objects::FLOWS),
            ("flows_compat", objects::FLOWS_COMPAT),
        ];
        if aya::util::KernelVersion::current()
            .is_ok_and(|v| v < aya::util::KernelVersion::new(5, 12, 0))
        {
            candidates.reverse();
        }
        for (object, bytes) in candidates {
            match load_flows(bytes, flow_map_entries) {
                Ok(bpf) => {
                    if object == "flows_compat" {
                        report.degraded.push(Degraded {
                            feature: "flows",
                            reason: "kernel without atomic OR (before 5.12): a TCP flag may be missed when two CPUs update one flow at once; packets and bytes stay exact".into(),
                        });
                    }
                    flows = Some(bpf);
                    break;
                }
                Err(e) => failed = e,
            }
        }
        for name in ["flow_ingress", "flow_egress"] {
            let r = match flows {
                Some(_) => Ok(()),
                None => Err(failed
                    .iter()
                    .find(|(p, _)| *p == name)
                    .or(failed.first())
                    .map_or_else(|| "not loaded".to_string(), |(_, e)| e.clone())),
            };
            note(name, r);
        }
        if flows.is_some() && !crate::btf::kernel_has_drop_reasons() {
            report.degraded.push(Degraded {
                feature: "drops",
                reason: "kernel without drop reasons (before 5.17): every kfree_skb is reported, reason UNKNOWN, including some frees that are not drops".into(),
            });
        }

        let mut drops = match EbpfLoader::new()
            .override_global("min_reason", &min_drop_reason, true)
            .load(objects::DROPS)
        {
            Ok(mut bpf) => {
                let r = attach_tracepoint(&mut bpf, "kfree_skb", "skb", "kfree_skb");
                let ok = r.is_ok();
                note("kfree_skb", r.map_err(|e| error_chain(&e)));
                ok.then_some(bpf)
            }
            Err(e) => {
                note("kfree_skb", Err(error_chain(&e)));
                None
            }
        };

        let mut tcp = match EbpfLoader::new().load(objects::TCP) {
            Ok(mut bpf) => {
                let mut any = false;
                for (prog, tp) in TCP_PROGRAMS {
                    let r = attach_tracepoint(&mut bpf, prog, "tcp", tp);
                    any |= r.is_ok();
                    note(prog, r.map_err(|e| error_chain(&e)));
                }
                any.then_some(bpf)
            }
            Err(e) => {
                for (prog, _) in TCP_PROGRAMS {
                    note(prog, Err(error_chain(&e)));
                }
                None
            }
        };

        report.programs = statuses;
        if flows.is_none() && drops.is_none() && tcp.is_none() {
            return Err(CollectorError::NothingLoaded(errors.join("; ")));
        }
        let l3 = flows.as_mut().and_then(L3Interfaces::take);
        let flow_map = flows.as_mut().and_then(|b| b.take_map("flows"));
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| CollectorError::io(what, e))?;
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
        let drop_map = drops.as_mut().and_then(|b| b.take_map("drops"));
        let tcp_map = tcp.as_mut().and_then(|b| b.take_map("tcp_health"));
        Ok(Programs {
            flows,
            drops,
            tcp,
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
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Loads a flow object and its three classifiers; on failure, each failed
/// program's error (clock_sample's counted as flow_ingress's).
fn load_flows(
    bytes: &[u8],
    flow_map_entries: u32,
) -> std::result::Result<Ebpf, Vec<(&'static str, String)>> {
    let mut bpf = EbpfLoader::new()
        .map_max_entries("flows", flow_map_entries)
        .load(bytes)
        .map_err(|e| vec![("flow_ingress", error_chain(&e))])?;
    let mut failed = Vec::new();
    for (name, as_name) in [
        ("flow_ingress", "flow_ingress"),
        ("flow_egress", "flow_egress"),
        // Never attached: run by userspace to calibrate flow times.
        ("clock_sample", "flow_ingress"),
    ] {
        if let Err(e) = load_classifier(&mut bpf, name) {
            failed.push((as_name, error_chain(&e)));
        }
    }
    if failed.is_empty() {
        Ok(bpf)
    } else {
        Err(failed)
    }
}

fn load_classifier(bpf: &mut Ebpf, name: &str) -> Result<()> {
    let prog: &mut SchedClassifier = bpf
        .program_mut(name)
        .ok_or_else(|| CollectorError::Config(format!("program {name} missing")))?
        .try_into()
        .map_err(|e| prog_err(name, e))?;
    prog.load().map_err(|e| prog_err(name, e))
}

fn attach_tracepoint(bpf: &mut Ebpf, name: &str, category: &str, tp: &str) -> Result<()> {
    let prog: &mut TracePoint = bpf
        .program_mut(name)
        .ok_or_else(|| CollectorError::Config(format!("program {name} missing")))?
        .try_into()
        .map_err(|e| prog_err(name, e))?;
    prog.load().map_err(|e| prog_err(name, e))?;
    prog.attach(category, tp).map_err(|e| prog_err(name, e))?;
    Ok(())
}

fn prog_err(name: &str, e: aya::programs::ProgramError) -> CollectorError {
    CollectorError::Program {
        program: name.to_string(),
        source: Box::new(e),
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
        match self.flows.as_mut() {
            Some(bpf) => self.attached.attach(bpf, ifindex, name),
            None => Ok(()),
        }
    }

    /// Detaches from an interface (gone or no longer wanted).
    pub fn detach(&mut self, ifindex: u32) {
        if let Some(bpf) = self.flows.as_mut() {
            self.attached.detach(bpf, ifindex);
        }
        if let Some(l3) = self.l3.as_mut() {
            l3.forget(ifindex);
        }
    }

    /// Attaches again ahead of any program that took the first place on a
    /// hook since; returns how many hooks moved.
    pub fn keep_first(&mut self) -> usize {
        match self.flows.as_mut() {
            Some(bpf) => self.attached.keep_first(bpf),
            None => 0,
        }
    }

    /// [`Programs::keep_first`] on one interface (its tc set-up changed).
    pub fn keep_first_on(&mut self, ifindex: u32) -> usize {
        match self.flows.as_mut() {
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
        self.flows.is_some()
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
            .flows
            .as_ref()?
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

    /// Adds the kernel-side loss counters' growth since the last call to the metrics.
    pub fn export_losses(&mut self, metrics: &DatapathMetrics) {
        // (object, slot, kind, whether the slot counts bytes)
        let slots = [
            (
                "flows",
                abi::LOSS_FLOW_MAP_FULL,
                LossKind::FlowMapFull,
                false,
            ),
            (
                "flows",
                abi::LOSS_FLOW_MAP_FULL_BYTES,
                LossKind::FlowMapFull,
                true,
            ),
            (
                "flows",
                abi::LOSS_DNS_RINGBUF_FULL,
                LossKind::DnsRingbufFull,
                false,
            ),
            (
                "drops",
                abi::LOSS_DROP_MAP_FULL,
                LossKind::DropMapFull,
                false,
            ),
            ("tcp", abi::LOSS_TCP_MAP_FULL, LossKind::TcpMapFull, false),
        ];
        for (object, slot, kind, bytes) in slots {
            let bpf = match object {
                "flows" => self.flows.as_ref(),
                "drops" => self.drops.as_ref(),
                _ => self.tcp.as_ref(),
            };
            let Some(map) = bpf.and_then(|b| b.map("losses")) else {
                continue;
            };
            let Ok(arr) = PerCpuArray::<_, u64>::try_from(map) else {
                continue;
            };
            let Ok(values) = arr.get(&slot, 0) else {
                continue;
            };
            let total: u64 = values.iter().sum();
            let prev = self.exported.insert((object, slot), total).unwrap_or(0);
            let counter = if bytes {
                metrics.lost_bytes(kind)
            } else {
                metrics.lost(kind)
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
