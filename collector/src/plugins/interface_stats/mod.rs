//! Retina's `interface_stats{interface_name, statistic_name}`: every interface's
//! kernel counters (`/sys/class/net/<if>/statistics/<name>`: rx_bytes, tx_packets,
//! rx_dropped, …) read at scrape time.

use std::path::{Path, PathBuf};

use super::{GaugeFamily, Plugin, Roots, Source};

/// The metric and label names it contributes (Retina's, without the prefix).
pub mod names {
    pub const INTERFACE_STATS: &str = "interface_stats";
    pub use crate::plugins::source::STATISTIC_NAME;
    pub const INTERFACE_NAME: &str = "interface_name";
}

#[derive(Debug)]
pub struct InterfaceStats {
    /// Root of the sys filesystem.
    pub sys_root: PathBuf,
}

/// `(interface, statistic, value)` of every interface under `sys_root`, sorted.
pub fn read(sys_root: &Path) -> std::io::Result<Vec<(String, String, i64)>> {
    let mut out = Vec::new();
    for iface in std::fs::read_dir(sys_root.join("class/net"))? {
        let iface = iface?;
        let name = iface.file_name().to_string_lossy().into_owned();
        let Ok(stats) = std::fs::read_dir(iface.path().join("statistics")) else {
            continue;
        };
        for stat in stats.flatten() {
            let value = std::fs::read_to_string(stat.path())
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok());
            if let Some(v) = value {
                let stat = stat.file_name().to_string_lossy().into_owned();
                out.push((name.clone(), stat, v));
            }
        }
    }
    out.sort();
    Ok(out)
}

impl Source for InterfaceStats {
    fn read(&self) -> Result<Vec<GaugeFamily>, String> {
        let stats = read(&self.sys_root)
            .map_err(|e| format!("{}/class/net: {e}", self.sys_root.display()))?;
        let samples = stats
            .into_iter()
            .map(|(i, s, v)| {
                (
                    vec![(names::INTERFACE_NAME, i), (names::STATISTIC_NAME, s)],
                    v,
                )
            })
            .collect();
        Ok(vec![GaugeFamily {
            name: names::INTERFACE_STATS,
            help: "Kernel counters of every interface (/sys/class/net/*/statistics)",
            samples,
        }])
    }
}

/// The `interface_stats` plugin.
#[derive(Debug)]
pub struct InterfaceStatsPlugin;

impl Plugin for InterfaceStatsPlugin {
    fn name(&self) -> &'static str {
        "interface_stats"
    }

    fn about(&self) -> &'static str {
        "Retina's `interface_stats` from /sys/class/net/*/statistics at scrape time"
    }

    fn source(&self, roots: &Roots) -> Option<Box<dyn Source>> {
        Some(Box::new(InterfaceStats {
            sys_root: roots.sys.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_interface_statistic() {
        let dir = tempfile::tempdir().unwrap();
        for (iface, stat, v) in [
            ("eth0", "rx_bytes", "1500\n"),
            ("eth0", "tx_packets", "7\n"),
            ("lo", "rx_bytes", "0\n"),
        ] {
            let d = dir.path().join("class/net").join(iface).join("statistics");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(stat), v).unwrap();
        }
        // An entry without statistics (bonding_masters is a file) is skipped.
        std::fs::write(dir.path().join("class/net/bonding_masters"), "").unwrap();
        let got = read(dir.path()).unwrap();
        let want = [
            ("eth0", "rx_bytes", 1500),
            ("eth0", "tx_packets", 7),
            ("lo", "rx_bytes", 0),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), *c))
            .collect();
        assert_eq!(got, want);
        let s = InterfaceStats {
            sys_root: dir.path().into(),
        };
        assert_eq!(s.read().unwrap()[0].samples.len(), 3);
        let missing = InterfaceStats {
            sys_root: dir.path().join("nope"),
        };
        assert!(missing.read().is_err());
    }
}
