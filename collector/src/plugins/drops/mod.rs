//! The `drops` plugin: `drops.bpf.c` (committed object `ebpf/obj/drops.bpf.o`)
//! — `kfree_skb` on the `skb:kfree_skb` tracepoint, counting dropped packets
//! per reason in the `drops` map, drained by the datapath's eviction into
//! `dropped` rows with the kernel's reason names (BTF `enum skb_drop_reason`).

use aya::{Ebpf, EbpfLoader};

use super::load::{Loads, objects};
use super::{BpfPlugin, Capability, LoadContext, LossSlot, Plugin, attach_tracepoint, error_chain};
use crate::abi;
use crate::metrics::LossKind;

/// The `drops` plugin.
#[derive(Debug)]
pub struct Drops;

impl Plugin for Drops {
    fn name(&self) -> &'static str {
        "drops"
    }

    fn about(&self) -> &'static str {
        "dropped packets with the kernel's drop reason (kfree_skb tracepoint)"
    }

    fn capabilities(&self) -> &'static [Capability] {
        &[Capability {
            name: "drops",
            programs: &["kfree_skb"],
        }]
    }

    fn loss_slots(&self) -> &'static [LossSlot] {
        &[LossSlot {
            object: "drops",
            slot: abi::LOSS_DROP_MAP_FULL,
            kind: LossKind::DropMapFull,
            bytes: false,
        }]
    }

    fn bpf(&self) -> Option<&dyn BpfPlugin> {
        Some(self)
    }
}

impl BpfPlugin for Drops {
    fn load(&self, cx: &LoadContext, loads: &mut Loads<'_>) -> Option<Ebpf> {
        let loaded = EbpfLoader::new()
            .override_global("min_reason", &cx.min_drop_reason, true)
            .load(objects::DROPS);
        let bpf = match loaded {
            Ok(mut bpf) => {
                let r = attach_tracepoint(&mut bpf, "kfree_skb", "skb", "kfree_skb");
                let ok = r.is_ok();
                loads.note("kfree_skb", r.map_err(|e| error_chain(&e)));
                ok.then_some(bpf)
            }
            Err(e) => {
                loads.note("kfree_skb", Err(error_chain(&e)));
                None
            }
        };
        if bpf.is_some() && !crate::btf::kernel_has_drop_reasons() {
            loads.degrade("drops", "kernel without drop reasons (before 5.17): every kfree_skb is reported, reason UNKNOWN, including some frees that are not drops".into());
        }
        bpf
    }
}
