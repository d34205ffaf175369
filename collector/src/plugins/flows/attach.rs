//! The flow programs (the `flows` plugin, `crate::plugins::flows`) run first
//! in each tc hook, and stay first.
//!
//! A CNI's own program may end a hook's chain (return OK, drop, redirect): a
//! program after it never sees those packets. So the flow programs attach
//! ahead of everything: with TCX (kernels >= 6.6) before every other link;
//! with clsact at priority 1, where cls_bpf runs the newest filter of a
//! priority first (or, when a filter of another kind holds priority 1, at the
//! lowest priority that can be shared). [`Attachments::keep_first`] checks the
//! order of every hook and attaches again ahead of a program that took the
//! first place later (a CNI re-attaching when it regenerates an endpoint).
//! The programs never change a packet's fate (`TC_ACT_UNSPEC` / `TCX_NEXT`),
//! so running first hides nothing from the CNI.

use std::collections::HashMap;

use aya::Ebpf;
use aya::programs::links::LinkOrder;
use aya::programs::tc::{NlOptions, SchedClassifierLinkId, TcAttachOptions, TcHandle};
use aya::programs::{SchedClassifier, TcAttachType};
use tracing::{info, warn};

use crate::error::{CollectorError, Result};
use crate::netlink::{self, ETH_P_ALL, TcFilter};
use crate::plugins::prog_err;

/// How the flow programs attach to tc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TcMode {
    /// TCX on kernels >= 6.6, clsact before.
    #[default]
    Auto,
    /// TCX links (bpf_mprog).
    Tcx,
    /// Filters on the clsact qdisc (netlink).
    Clsact,
}

impl TcMode {
    /// `Auto` resolved for the running kernel.
    pub fn resolve(self) -> TcMode {
        match self {
            TcMode::Auto => {
                if aya::util::KernelVersion::current()
                    .is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
                {
                    TcMode::Tcx
                } else {
                    TcMode::Clsact
                }
            }
            m => m,
        }
    }
}

/// Handles of the clsact filters: "FL" and a slot, two so that a re-attach
/// adds a new filter (which runs first) before removing the old one.
const HANDLES: [u32; 2] = [0x464c_0001, 0x464c_0002];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    const BOTH: [Hook; 2] = [Hook::Ingress, Hook::Egress];

    fn program(self) -> &'static str {
        match self {
            Hook::Ingress => "flow_ingress",
            Hook::Egress => "flow_egress",
        }
    }

    fn tc(self) -> TcAttachType {
        match self {
            Hook::Ingress => TcAttachType::Ingress,
            Hook::Egress => TcAttachType::Egress,
        }
    }

    fn parent(self) -> u32 {
        match self {
            Hook::Ingress => netlink::TC_INGRESS,
            Hook::Egress => netlink::TC_EGRESS,
        }
    }

    /// `BPF_TCX_INGRESS` / `BPF_TCX_EGRESS`.
    fn tcx_attach_type(self) -> u32 {
        match self {
            Hook::Ingress => 46,
            Hook::Egress => 47,
        }
    }
}

/// One program on one hook: its link and, with clsact, its filter.
struct Slot {
    /// None once detached for a re-attach that has not succeeded yet.
    link: Option<SchedClassifierLinkId>,
    /// (priority, handle) of the clsact filter.
    filter: Option<(u16, u32)>,
    /// Already warned that a filter of another kind runs ahead.
    warned_blocked: bool,
}

struct Iface {
    name: String,
    ingress: Slot,
    egress: Slot,
}

impl Iface {
    fn slot(&mut self, hook: Hook) -> &mut Slot {
        match hook {
            Hook::Ingress => &mut self.ingress,
            Hook::Egress => &mut self.egress,
        }
    }
}

/// Where the flow program stands in a hook's chain.
#[derive(Debug, PartialEq, Eq)]
enum Position {
    /// First, or behind only filters it cannot share a priority with.
    First { blocked_by: Option<String> },
    /// Another program runs first and the flow program can go ahead of it.
    Behind,
    /// The attachment is gone (a CNI removed the filter or the qdisc).
    Missing,
}

/// The flow programs' attachments, per interface.
pub struct Attachments {
    mode: TcMode,
    ifaces: HashMap<u32, Iface>,
}

impl Attachments {
    pub fn new(mode: TcMode) -> Self {
        Attachments {
            mode: mode.resolve(),
            ifaces: HashMap::new(),
        }
    }

    /// TCX or clsact.
    pub fn mode(&self) -> TcMode {
        self.mode
    }

    pub fn len(&self) -> usize {
        self.ifaces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ifaces.is_empty()
    }

    /// Attaches both programs first on both hooks of an interface.
    pub fn attach(&mut self, bpf: &mut Ebpf, ifindex: u32, name: &str) -> Result<()> {
        if self.ifaces.contains_key(&ifindex) {
            return Ok(());
        }
        let ingress = self.attach_first(bpf, ifindex, name, Hook::Ingress, None)?;
        let egress = match self.attach_first(bpf, ifindex, name, Hook::Egress, None) {
            Ok(s) => s,
            Err(e) => {
                self.release(bpf, ifindex, Hook::Ingress, ingress);
                return Err(e);
            }
        };
        self.ifaces.insert(
            ifindex,
            Iface {
                name: name.to_string(),
                ingress,
                egress,
            },
        );
        Ok(())
    }

    /// Detaches from an interface (gone or no longer wanted).
    pub fn detach(&mut self, bpf: &mut Ebpf, ifindex: u32) {
        if let Some(i) = self.ifaces.remove(&ifindex) {
            self.release(bpf, ifindex, Hook::Ingress, i.ingress);
            self.release(bpf, ifindex, Hook::Egress, i.egress);
        }
    }

    /// Checks every hook and attaches again ahead of any program that took
    /// the first place, or where the attachment was removed. Returns how many
    /// hooks were re-attached.
    pub fn keep_first(&mut self, bpf: &mut Ebpf) -> usize {
        let indexes: Vec<u32> = self.ifaces.keys().copied().collect();
        indexes
            .into_iter()
            .map(|i| self.keep_first_on(bpf, i))
            .sum()
    }

    /// [`Attachments::keep_first`] for one interface (after a tc change on it).
    pub fn keep_first_on(&mut self, bpf: &mut Ebpf, ifindex: u32) -> usize {
        let mut moved = 0;
        for hook in Hook::BOTH {
            match self.reattach_if_needed(bpf, ifindex, hook) {
                Ok(true) => moved += 1,
                Ok(false) => {}
                Err(e) => {
                    let name = self.ifaces.get(&ifindex).map(|i| i.name.clone());
                    warn!(interface = ?name, ?hook, error = %e, "cannot keep the flow program first");
                }
            }
        }
        moved
    }

    fn reattach_if_needed(&mut self, bpf: &mut Ebpf, ifindex: u32, hook: Hook) -> Result<bool> {
        let ours = program_id(bpf, hook)?;
        let mode = self.mode;
        let Some(iface) = self.ifaces.get_mut(&ifindex) else {
            return Ok(false);
        };
        let name = iface.name.clone();
        let slot = iface.slot(hook);
        let previous = slot.filter;
        let position = position(mode, ifindex, hook, ours, previous)?;
        match &position {
            Position::First { blocked_by: None } => return Ok(false),
            Position::First {
                blocked_by: Some(other),
            } => {
                if !slot.warned_blocked {
                    slot.warned_blocked = true;
                    warn!(interface = %name, ?hook, blocking = %other,
                        "a tc filter of another kind holds the first priority: packets it ends are not observed");
                }
                return Ok(false);
            }
            Position::Behind | Position::Missing => {}
        }
        if mode == TcMode::Tcx && position == Position::Behind {
            // bpf_mprog holds a program once per hook: out, then in first.
            // Packets in between (microseconds) are not counted.
            if let Some(link) = slot.link.take()
                && let Ok(prog) = classifier(bpf, hook.program())
            {
                let _ = prog.detach(link);
            }
            let fresh = self.attach_first(bpf, ifindex, &name, hook, previous)?;
            let iface = self.ifaces.get_mut(&ifindex).expect("present above");
            *iface.slot(hook) = fresh;
        } else {
            // A new filter runs first; the old one goes after (a packet
            // between the two steps may be counted by both).
            let fresh = self.attach_first(bpf, ifindex, &name, hook, previous)?;
            let iface = self.ifaces.get_mut(&ifindex).expect("present above");
            let old = std::mem::replace(iface.slot(hook), fresh);
            self.release(bpf, ifindex, hook, old);
        }
        info!(interface = %name, ?hook, ?position, "flow program attached ahead again");
        Ok(true)
    }

    /// Attaches `hook`'s program ahead of every other one; `previous` is the
    /// clsact filter being replaced (its handle is not reused).
    fn attach_first(
        &self,
        bpf: &mut Ebpf,
        ifindex: u32,
        name: &str,
        hook: Hook,
        previous: Option<(u16, u32)>,
    ) -> Result<Slot> {
        let (options, filter) = match self.mode {
            TcMode::Clsact => {
                // The qdisc may already be there (EEXIST).
                let _ = aya::programs::tc::qdisc_add_clsact(name);
                let filters = netlink::tc_filters(ifindex, hook.parent())?;
                let priority = shared_priority(&filters);
                let handle = free_handle(&filters, priority, previous.map(|p| p.1));
                let options = NlOptions {
                    priority,
                    handle: TcHandle::from(handle),
                    classid: None,
                };
                (TcAttachOptions::Netlink(options), Some((priority, handle)))
            }
            _ => (TcAttachOptions::TcxOrder(LinkOrder::first()), None),
        };
        let prog = classifier(bpf, hook.program())?;
        let link = prog
            .attach_with_options(name, hook.tc(), options)
            .map_err(|e| prog_err(hook.program(), e))?;
        Ok(Slot {
            link: Some(link),
            filter,
            warned_blocked: false,
        })
    }

    /// Detaches a slot, unless its clsact filter no longer holds our program
    /// (then someone replaced it and deleting it would remove theirs).
    fn release(&self, bpf: &mut Ebpf, ifindex: u32, hook: Hook, slot: Slot) {
        let Some(link) = slot.link else {
            return;
        };
        if let Some((priority, handle)) = slot.filter {
            let ours = program_id(bpf, hook).ok();
            let still_ours = netlink::tc_filters(ifindex, hook.parent()).is_ok_and(|fs| {
                fs.iter().any(|f| {
                    f.priority == priority
                        && f.handle == handle
                        && f.prog_id.is_some()
                        && f.prog_id == ours
                })
            });
            if !still_ours {
                forget(bpf, hook, link);
                return;
            }
        }
        if let Ok(prog) = classifier(bpf, hook.program()) {
            let _ = prog.detach(link);
        }
    }
}

/// Drops aya's record of a link without detaching it (the kernel object is
/// gone or belongs to someone else now).
fn forget(bpf: &mut Ebpf, hook: Hook, link: SchedClassifierLinkId) {
    if let Ok(prog) = classifier(bpf, hook.program())
        && let Ok(link) = prog.take_link(link)
    {
        std::mem::forget(link);
    }
}

fn classifier<'a>(bpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier> {
    bpf.program_mut(name)
        .ok_or_else(|| CollectorError::Config(format!("program {name} missing")))?
        .try_into()
        .map_err(|e| prog_err(name, e))
}

fn program_id(bpf: &mut Ebpf, hook: Hook) -> Result<u32> {
    let prog = classifier(bpf, hook.program())?;
    Ok(prog.info().map_err(|e| prog_err(hook.program(), e))?.id())
}

/// A filter the flow program can share a priority with: cls_bpf for every
/// protocol (a new handle of that classifier runs before the others).
fn shareable(f: &TcFilter) -> bool {
    f.kind == "bpf" && f.protocol == ETH_P_ALL
}

/// The lowest priority whose filters (if any) can be shared.
fn shared_priority(filters: &[TcFilter]) -> u16 {
    (1..=u16::MAX)
        .find(|p| filters.iter().filter(|f| f.priority == *p).all(shareable))
        .unwrap_or(u16::MAX)
}

/// One of [`HANDLES`] not taken at `priority` and not `previous`.
fn free_handle(filters: &[TcFilter], priority: u16, previous: Option<u32>) -> u32 {
    let taken = |h: u32| {
        Some(h) == previous
            || filters
                .iter()
                .any(|f| f.priority == priority && f.handle == h)
    };
    HANDLES
        .into_iter()
        .find(|h| !taken(*h))
        .unwrap_or(HANDLES[0])
}

/// Where program `ours` stands on a hook.
fn position(
    mode: TcMode,
    ifindex: u32,
    hook: Hook,
    ours: u32,
    filter: Option<(u16, u32)>,
) -> Result<Position> {
    match (mode, filter) {
        (TcMode::Clsact, Some((priority, handle))) => {
            let filters = netlink::tc_filters(ifindex, hook.parent())?;
            Ok(clsact_position(&filters, ours, priority, handle))
        }
        _ => {
            let ids = tcx_programs(ifindex, hook.tcx_attach_type())
                .map_err(|e| CollectorError::io("query TCX programs", e))?;
            Ok(if ids.first() == Some(&ours) {
                Position::First { blocked_by: None }
            } else if ids.contains(&ours) {
                Position::Behind
            } else {
                Position::Missing
            })
        }
    }
}

fn clsact_position(filters: &[TcFilter], ours: u32, priority: u16, handle: u32) -> Position {
    let Some(at) = filters
        .iter()
        .position(|f| f.priority == priority && f.handle == handle && f.prog_id == Some(ours))
    else {
        return Position::Missing;
    };
    let ahead = &filters[..at];
    if ahead.iter().any(shareable) {
        return Position::Behind;
    }
    Position::First {
        blocked_by: ahead
            .first()
            .map(|f| format!("{} at priority {}", f.kind, f.priority)),
    }
}

/// The ids of the programs on a TCX hook, in the order they run
/// (`BPF_PROG_QUERY`; needs CAP_NET_ADMIN, not CAP_SYS_ADMIN).
pub fn tcx_programs(ifindex: u32, attach_type: u32) -> std::io::Result<Vec<u32>> {
    /// The `query` member of `union bpf_attr`.
    #[repr(C)]
    #[derive(Default)]
    struct Query {
        target_ifindex: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        count: u32,
        _pad: u32,
        prog_attach_flags: u64,
        link_ids: u64,
        link_attach_flags: u64,
        revision: u64,
    }
    const BPF_PROG_QUERY: libc::c_long = 16;
    let mut ids = vec![0u32; 64];
    loop {
        let mut q = Query {
            target_ifindex: ifindex,
            attach_type,
            prog_ids: ids.as_mut_ptr() as u64,
            count: ids.len() as u32,
            ..Default::default()
        };
        // SAFETY: bpf(2) with a valid attribute of the given size; the kernel
        // writes at most `count` ids into `ids`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_QUERY,
                &mut q as *mut Query,
                size_of::<Query>(),
            )
        };
        if rc == 0 {
            ids.truncate(q.count as usize);
            return Ok(ids);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOSPC) && (q.count as usize) > ids.len() {
            ids.resize(q.count as usize, 0);
            continue;
        }
        return Err(err);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(priority: u16, handle: u32, kind: &str, prog: Option<u32>) -> TcFilter {
        TcFilter {
            priority,
            handle,
            protocol: ETH_P_ALL,
            kind: kind.into(),
            prog_id: prog,
        }
    }

    #[test]
    fn priority_one_unless_another_kind_holds_it() {
        assert_eq!(shared_priority(&[]), 1);
        assert_eq!(shared_priority(&[f(1, 1, "bpf", Some(9))]), 1);
        assert_eq!(
            shared_priority(&[f(1, 1, "u32", None), f(2, 1, "bpf", Some(9))]),
            2
        );
        let mut ip_only = f(1, 1, "bpf", Some(9));
        ip_only.protocol = 0x0800;
        assert_eq!(shared_priority(&[ip_only, f(3, 1, "flower", None)]), 2);
    }

    #[test]
    fn handles_alternate_and_avoid_taken_ones() {
        assert_eq!(free_handle(&[], 1, None), HANDLES[0]);
        assert_eq!(free_handle(&[], 1, Some(HANDLES[0])), HANDLES[1]);
        let taken = [f(1, HANDLES[0], "bpf", Some(3))];
        assert_eq!(free_handle(&taken, 1, None), HANDLES[1]);
        assert_eq!(free_handle(&taken, 2, None), HANDLES[0]);
    }

    #[test]
    fn clsact_positions() {
        let (ours, h) = (7, HANDLES[0]);
        assert_eq!(
            clsact_position(
                &[f(1, h, "bpf", Some(ours)), f(1, 1, "bpf", Some(9))],
                ours,
                1,
                h
            ),
            Position::First { blocked_by: None }
        );
        assert_eq!(
            clsact_position(
                &[f(1, 1, "bpf", Some(9)), f(1, h, "bpf", Some(ours))],
                ours,
                1,
                h
            ),
            Position::Behind
        );
        assert_eq!(
            clsact_position(&[f(1, 1, "bpf", Some(9))], ours, 1, h),
            Position::Missing
        );
        // Replaced in place by someone else's program: missing, not ours.
        assert_eq!(
            clsact_position(&[f(1, h, "bpf", Some(9))], ours, 1, h),
            Position::Missing
        );
        assert_eq!(
            clsact_position(
                &[f(1, 1, "u32", None), f(2, h, "bpf", Some(ours))],
                ours,
                2,
                h
            ),
            Position::First {
                blocked_by: Some("u32 at priority 1".into())
            }
        );
    }
}
