//! The `tcp` plugin: `tcp.bpf.c` (committed object `ebpf/obj/tcp.bpf.o`) —
//! `tcp_retransmit` (tracepoint `tcp:tcp_retransmit_skb`) and `tcp_probe`
//! (`tcp:tcp_probe`, smoothed RTT), keyed by the socket's 4-tuple in the
//! `tcp_health` map; the datapath's eviction puts them on the sending row of
//! each TCP flow (the record's `tcp` fields).

use aya::{Ebpf, EbpfLoader};

use super::load::{Loads, objects};
use super::{BpfPlugin, Capability, LoadContext, LossSlot, Plugin, attach_tracepoint, error_chain};
use crate::abi;
use crate::metrics::LossKind;

/// tcp.bpf.c's programs and their tracepoints.
const PROGRAMS: &[(&str, &str)] = &[
    ("tcp_retransmit", "tcp_retransmit_skb"),
    ("tcp_probe", "tcp_probe"),
];

/// The `tcp` plugin.
#[derive(Debug)]
pub struct Tcp;

impl Plugin for Tcp {
    fn name(&self) -> &'static str {
        "tcp"
    }

    fn about(&self) -> &'static str {
        "TCP health on flow records: retransmitted segments and smoothed RTT (tcp tracepoints)"
    }

    fn capabilities(&self) -> &'static [Capability] {
        &[
            Capability {
                name: "rtt",
                programs: &["tcp_probe"],
            },
            Capability {
                name: "retransmits",
                programs: &["tcp_retransmit"],
            },
        ]
    }

    fn loss_slots(&self) -> &'static [LossSlot] {
        &[LossSlot {
            object: "tcp",
            slot: abi::LOSS_TCP_MAP_FULL,
            kind: LossKind::TcpMapFull,
            bytes: false,
        }]
    }

    fn bpf(&self) -> Option<&dyn BpfPlugin> {
        Some(self)
    }
}

impl BpfPlugin for Tcp {
    fn load(&self, _cx: &LoadContext, loads: &mut Loads<'_>) -> Option<Ebpf> {
        match EbpfLoader::new().load(objects::TCP) {
            Ok(mut bpf) => {
                let mut any = false;
                for (prog, tp) in PROGRAMS {
                    let r = attach_tracepoint(&mut bpf, prog, "tcp", tp);
                    any |= r.is_ok();
                    loads.note(prog, r.map_err(|e| error_chain(&e)));
                }
                any.then_some(bpf)
            }
            Err(e) => {
                for (prog, _) in PROGRAMS {
                    loads.note(prog, Err(error_chain(&e)));
                }
                None
            }
        }
    }
}
