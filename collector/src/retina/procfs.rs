//! Retina's linuxutil metrics from the proc filesystem, read at scrape time:
//! `tcp_state{state}` (sockets per state in `net/tcp` and `net/tcp6`),
//! `tcp_connection_stats{statistic_name}` (`Tcp:` of `net/snmp`, `TcpExt:` of
//! `net/netstat`), `ip_connection_stats{statistic_name}` (`Ip:` and `IpExt:`),
//! `udp_connection_stats{statistic_name}` (`Udp:`).
//!
//! These are gauges, as in Retina: they mirror the kernel's values, and some of
//! them (`CurrEstab`, `MaxConn`, `Forwarding`, `DefaultTTL`) are not totals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;

use super::names;

/// `Section: Name …` / `Section: value …` line pairs, as in `net/snmp` and `net/netstat`.
pub type Sections = BTreeMap<String, Vec<(String, i64)>>;

/// Parses the paired header/value lines of `net/snmp` or `net/netstat`. Malformed
/// pairs are skipped.
pub fn parse_pairs(text: &str) -> Sections {
    let mut out = Sections::new();
    let mut lines = text.lines();
    while let (Some(head), Some(vals)) = (lines.next(), lines.next()) {
        let (Some((section, keys)), Some((section2, values))) =
            (head.split_once(':'), vals.split_once(':'))
        else {
            continue;
        };
        if section != section2 {
            continue;
        }
        let pairs = keys
            .split_whitespace()
            .zip(values.split_whitespace())
            .filter_map(|(k, v)| Some((k.to_string(), v.parse::<i64>().ok()?)))
            .collect();
        out.insert(section.to_string(), pairs);
    }
    out
}

/// The TCP state names of Retina (go-netstat's), by kernel state number.
pub fn tcp_state_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0x01 => "ESTABLISHED",
        0x02 => "SYN_SENT",
        0x03 => "SYN_RECV",
        0x04 => "FIN_WAIT1",
        0x05 => "FIN_WAIT2",
        0x06 => "TIME_WAIT",
        0x07 => "CLOSE",
        0x08 => "CLOSE_WAIT",
        0x09 => "LAST_ACK",
        0x0A => "LISTEN",
        0x0B => "CLOSING",
        _ => return None,
    })
}

/// Counts sockets per state in the text of `net/tcp` or `net/tcp6`.
pub fn count_tcp_states(text: &str, counts: &mut BTreeMap<&'static str, i64>) {
    for line in text.lines().skip(1) {
        let state = line
            .split_whitespace()
            .nth(3)
            .and_then(|s| u8::from_str_radix(s, 16).ok())
            .and_then(tcp_state_name);
        if let Some(state) = state {
            *counts.entry(state).or_default() += 1;
        }
    }
}

/// Everything read from one proc root in one scrape.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProcStats {
    pub tcp_state: BTreeMap<&'static str, i64>,
    pub tcp: Vec<(String, i64)>,
    pub ip: Vec<(String, i64)>,
    pub udp: Vec<(String, i64)>,
}

impl ProcStats {
    /// Reads `net/snmp`, `net/netstat`, `net/tcp` and `net/tcp6` under `root`; returns
    /// the stats and how many of the files could not be read.
    pub fn read(root: &Path) -> (Self, u64) {
        let mut missing = 0;
        let mut read = |name: &str| {
            std::fs::read_to_string(root.join("net").join(name))
                .inspect_err(|e| {
                    tracing::debug!(file = name, root = %root.display(), error = %e, "proc file unreadable");
                    missing += 1;
                })
                .unwrap_or_default()
        };
        let snmp = parse_pairs(&read("snmp"));
        let netstat = parse_pairs(&read("netstat"));
        let mut tcp_state = BTreeMap::new();
        count_tcp_states(&read("tcp"), &mut tcp_state);
        count_tcp_states(&read("tcp6"), &mut tcp_state);
        let section = |s: &Sections, name: &str| s.get(name).cloned().unwrap_or_default();
        let mut tcp = section(&snmp, "Tcp");
        tcp.extend(section(&netstat, "TcpExt"));
        let mut ip = section(&snmp, "Ip");
        ip.extend(section(&netstat, "IpExt"));
        let stats = ProcStats {
            tcp_state,
            tcp,
            ip,
            udp: section(&snmp, "Udp"),
        };
        (stats, missing)
    }
}

/// Reads the proc files on each scrape.
#[derive(Debug)]
pub struct ProcCollector {
    root: PathBuf,
    /// `flowlake_collector_retina_proc_read_errors_total`.
    pub errors: Counter,
}

impl ProcCollector {
    pub fn new(root: PathBuf, errors: Counter) -> Self {
        ProcCollector { root, errors }
    }
}

fn encode_family<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    key: &'static str,
    values: impl Iterator<Item = (&'a str, i64)>,
) -> Result<(), std::fmt::Error> {
    let name = format!("{}_{name}", names::PREFIX);
    let mut family = encoder.encode_descriptor(&name, help, None, MetricType::Gauge)?;
    for (label, v) in values {
        let labels = [(key, label)];
        ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn pairs(v: &[(String, i64)]) -> impl Iterator<Item = (&str, i64)> {
    v.iter().map(|(k, v)| (k.as_str(), *v))
}

impl Collector for ProcCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (stats, missing) = ProcStats::read(&self.root);
        self.errors.inc_by(missing);
        // Registered at the root: the error count of this very scrape is reported with it.
        let errors = ConstCounter::new(self.errors.get());
        errors.encode(encoder.encode_descriptor(
            &format!("{}_proc_read_errors", names::SELF_PREFIX),
            "Proc files that could not be read at scrape time",
            None,
            MetricType::Counter,
        )?)?;
        encode_family(
            &mut encoder,
            names::TCP_STATE,
            "TCP sockets by state",
            names::STATE,
            stats.tcp_state.iter().map(|(k, v)| (*k, *v)),
        )?;
        encode_family(
            &mut encoder,
            names::TCP_CONNECTION_STATS,
            "TCP statistics from /proc/net/snmp and /proc/net/netstat",
            names::STATISTIC_NAME,
            pairs(&stats.tcp),
        )?;
        encode_family(
            &mut encoder,
            names::IP_CONNECTION_STATS,
            "IP statistics from /proc/net/snmp and /proc/net/netstat",
            names::STATISTIC_NAME,
            pairs(&stats.ip),
        )?;
        encode_family(
            &mut encoder,
            names::UDP_CONNECTION_STATS,
            "UDP statistics from /proc/net/snmp",
            names::STATISTIC_NAME,
            pairs(&stats.udp),
        )
    }
}
