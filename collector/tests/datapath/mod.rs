//! The eBPF datapath on the real kernel: "pods" are network namespaces joined by
//! veth pairs to a bridge in a "node" namespace, like a CNI builds them. Needs
//! root and BPF; skips with a reason otherwise, fails when
//! FLOWLAKE_REQUIRE_PRIVILEGED=1.

mod capture;
mod capture_select;
mod cni;
mod dns;
mod dnsmasq;
mod eviction;
mod gso;
pub(crate) mod harness;
mod health;
mod l3;
mod node;
mod preflight;
mod rtt;
mod talkers;
mod tests;
