//! Retina's conntrack metrics from the kernel's own conntrack table
//! (`/proc/net/nf_conntrack`, read at scrape time): `conntrack_total_connections`
//! (entries), `conntrack_packets_tx`/`_bytes_tx` (the original direction, summed
//! over entries) and `conntrack_packets_rx`/`_bytes_rx` (the reply direction).
//! Packet and byte counts need the kernel's accounting
//! (`net.netfilter.nf_conntrack_acct=1`); without it they read 0.

use std::path::PathBuf;

use super::{GaugeFamily, Plugin, Roots, Source};

/// The metric and label names it contributes (Retina's, without the prefix).
pub mod names {
    pub const CONNTRACK_PACKETS_TX: &str = "conntrack_packets_tx";
    pub const CONNTRACK_PACKETS_RX: &str = "conntrack_packets_rx";
    pub const CONNTRACK_BYTES_TX: &str = "conntrack_bytes_tx";
    pub const CONNTRACK_BYTES_RX: &str = "conntrack_bytes_rx";
    pub const CONNTRACK_TOTAL_CONNECTIONS: &str = "conntrack_total_connections";
}

#[derive(Debug)]
pub struct Conntrack {
    /// Root of the proc filesystem.
    pub proc_root: PathBuf,
}

/// Totals over the conntrack table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub connections: i64,
    pub packets_tx: i64,
    pub bytes_tx: i64,
    pub packets_rx: i64,
    pub bytes_rx: i64,
}

/// Sums `/proc/net/nf_conntrack`: each line holds the original tuple then the
/// reply tuple, each followed by `packets=` and `bytes=` when accounting is on.
pub fn parse(text: &str) -> Totals {
    let mut t = Totals::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        t.connections += 1;
        let mut packets = Vec::new();
        let mut bytes = Vec::new();
        for field in line.split_whitespace() {
            if let Some(v) = field.strip_prefix("packets=") {
                packets.push(v.parse::<i64>().unwrap_or(0));
            } else if let Some(v) = field.strip_prefix("bytes=") {
                bytes.push(v.parse::<i64>().unwrap_or(0));
            }
        }
        t.packets_tx += packets.first().copied().unwrap_or(0);
        t.packets_rx += packets.get(1).copied().unwrap_or(0);
        t.bytes_tx += bytes.first().copied().unwrap_or(0);
        t.bytes_rx += bytes.get(1).copied().unwrap_or(0);
    }
    t
}

impl Source for Conntrack {
    fn read(&self) -> Result<Vec<GaugeFamily>, String> {
        let path = self.proc_root.join("net/nf_conntrack");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let t = parse(&text);
        let one = |name, help, v| GaugeFamily {
            name,
            help,
            samples: vec![(Vec::new(), v)],
        };
        Ok(vec![
            one(
                names::CONNTRACK_PACKETS_TX,
                "Packets of tracked connections, original direction",
                t.packets_tx,
            ),
            one(
                names::CONNTRACK_PACKETS_RX,
                "Packets of tracked connections, reply direction",
                t.packets_rx,
            ),
            one(
                names::CONNTRACK_BYTES_TX,
                "Bytes of tracked connections, original direction",
                t.bytes_tx,
            ),
            one(
                names::CONNTRACK_BYTES_RX,
                "Bytes of tracked connections, reply direction",
                t.bytes_rx,
            ),
            one(
                names::CONNTRACK_TOTAL_CONNECTIONS,
                "Entries in the kernel's conntrack table",
                t.connections,
            ),
        ])
    }
}

/// The `conntrack` plugin.
#[derive(Debug)]
pub struct ConntrackPlugin;

impl Plugin for ConntrackPlugin {
    fn name(&self) -> &'static str {
        "conntrack"
    }

    fn about(&self) -> &'static str {
        "Retina's conntrack metrics (`networkobservability_conntrack_*`) from /proc/net/nf_conntrack at scrape time"
    }

    fn source(&self, roots: &Roots) -> Option<Box<dyn Source>> {
        Some(Box::new(Conntrack {
            proc_root: roots.proc.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_both_directions() {
        let text = "\
ipv4     2 tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=80 packets=10 bytes=15000 src=10.0.0.2 dst=10.0.0.1 sport=80 dport=40000 packets=6 bytes=400 [ASSURED] mark=0 zone=0 use=2
ipv4     2 udp      17 20 src=10.0.0.1 dst=10.0.0.3 sport=5353 dport=53 packets=1 bytes=60 src=10.0.0.3 dst=10.0.0.1 sport=53 dport=5353 packets=1 bytes=120 mark=0 zone=0 use=2
ipv6     10 tcp      6 60 SYN_SENT src=fd00::1 dst=fd00::2 sport=1 dport=2 [UNREPLIED] src=fd00::2 dst=fd00::1 sport=2 dport=1 mark=0 zone=0 use=2
";
        let t = parse(text);
        assert_eq!(
            t,
            Totals {
                connections: 3,
                packets_tx: 11,
                bytes_tx: 15060,
                packets_rx: 7,
                bytes_rx: 520
            }
        );
        assert_eq!(parse(""), Totals::default());
    }
}
