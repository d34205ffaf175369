//! The `flows` plugin: `flows.bpf.c` (committed object `ebpf/obj/flows.bpf.o`,
//! and `flows_compat.bpf.o` for kernels that refuse atomic OR) — the tc
//! classifiers `flow_ingress` and `flow_egress` attached first on every pod
//! and node interface ([`attach`]), and `clock_sample`, run by
//! userspace to calibrate flow times. Its maps are read by the datapath's
//! eviction (`crate::collector`): the flow hash, its per-CPU cache, the clock.

pub mod attach;

use aya::programs::SchedClassifier;
use aya::{Ebpf, EbpfLoader};

use super::load::{Loads, objects};
use super::{BpfPlugin, Capability, LoadContext, LossSlot, Plugin, error_chain, prog_err};
use crate::abi;
use crate::error::{CollectorError, Result};
use crate::metrics::LossKind;

/// The flow programs (every capability of this plugin needs both).
pub const PROGRAMS: &[&str] = &["flow_ingress", "flow_egress"];

/// The `flows` plugin.
#[derive(Debug)]
pub struct Flows;

impl Plugin for Flows {
    fn name(&self) -> &'static str {
        "flows"
    }

    fn about(&self) -> &'static str {
        "flow records: packets, bytes, TCP flags, handshake and resets per flow, from tc on every pod and node interface"
    }

    fn capabilities(&self) -> &'static [Capability] {
        &[
            Capability {
                name: "flows",
                programs: PROGRAMS,
            },
            Capability {
                name: "handshake",
                programs: PROGRAMS,
            },
            Capability {
                name: "resets",
                programs: PROGRAMS,
            },
        ]
    }

    fn loss_slots(&self) -> &'static [LossSlot] {
        &[
            LossSlot {
                object: "flows",
                slot: abi::LOSS_FLOW_MAP_FULL,
                kind: LossKind::FlowMapFull,
                bytes: false,
            },
            LossSlot {
                object: "flows",
                slot: abi::LOSS_FLOW_MAP_FULL_BYTES,
                kind: LossKind::FlowMapFull,
                bytes: true,
            },
        ]
    }

    fn bpf(&self) -> Option<&dyn BpfPlugin> {
        Some(self)
    }
}

impl BpfPlugin for Flows {
    /// The flow object, else the one without atomic OR (kernels before 5.12
    /// refuse that instruction anywhere in a program). Older kernels try the
    /// latter first: one verification less (seconds in an emulator).
    fn load(&self, cx: &LoadContext, loads: &mut Loads<'_>) -> Option<Ebpf> {
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
            match load_flows(bytes, cx.flow_map_entries) {
                Ok(bpf) => {
                    if object == "flows_compat" {
                        loads.degrade("flows", "kernel without atomic OR (before 5.12): a TCP flag may be missed when two CPUs update one flow at once; packets and bytes stay exact".into());
                    }
                    flows = Some(bpf);
                    break;
                }
                Err(e) => failed = e,
            }
        }
        for name in PROGRAMS {
            let r = match flows {
                Some(_) => Ok(()),
                None => Err(failed
                    .iter()
                    .find(|(p, _)| p == name)
                    .or(failed.first())
                    .map_or_else(|| "not loaded".to_string(), |(_, e)| e.clone())),
            };
            loads.note(name, r);
        }
        flows
    }
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
