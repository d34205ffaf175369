//! The `dns` plugin: DNS messages copied by the flow programs (`flows.bpf.c`
//! writes them to the `dns_events` ring buffer), read by the datapath and
//! parsed by `crate::dns` into the `dns` fields of flow records (query, type,
//! rcode, answers, latency) — so it needs the `flows` plugin.
//!
//! Disabled, the collector still drains the ring (the C has no switch of its
//! own; the programs keep copying) but parses nothing and puts no `dns` fields
//! on records, and the ring's losses are not counted.

use super::{Capability, LossSlot, Plugin};
use crate::abi;
use crate::metrics::LossKind;

/// The `dns` plugin.
#[derive(Debug)]
pub struct Dns;

impl Plugin for Dns {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn about(&self) -> &'static str {
        "DNS queries and answers on flow records (from the flow programs' ring buffer)"
    }

    fn needs(&self) -> &'static [&'static str] {
        &["flows"]
    }

    fn capabilities(&self) -> &'static [Capability] {
        &[Capability {
            name: "dns",
            programs: super::flows::PROGRAMS,
        }]
    }

    fn loss_slots(&self) -> &'static [LossSlot] {
        &[LossSlot {
            object: "flows",
            slot: abi::LOSS_DNS_RINGBUF_FULL,
            kind: LossKind::DnsRingbufFull,
            bytes: false,
        }]
    }
}
