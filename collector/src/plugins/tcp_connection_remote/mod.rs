//! Retina's `tcp_connection_remote{address, port}`: established TCP connections
//! per remote address and port, from `/proc/net/tcp` and `/proc/net/tcp6` at scrape
//! time. Bounded: the [`MAX_SERIES`] busiest remotes are kept.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use super::{GaugeFamily, Plugin, Roots, Source};

/// At most this many (address, port) series per scrape.
pub const MAX_SERIES: usize = 1000;
const ESTABLISHED: &str = "01";

/// The metric and label names it contributes (Retina's, without the prefix).
pub mod names {
    pub const TCP_CONNECTION_REMOTE: &str = "tcp_connection_remote";
    pub const ADDRESS: &str = "address";
    pub const PORT: &str = "port";
}

#[derive(Debug)]
pub struct TcpRemote {
    /// Root of the proc filesystem.
    pub proc_root: PathBuf,
}

/// The address of a `/proc/net/tcp{,6}` field (`0100007F:0050`: hex, in the
/// kernel's byte order per 32-bit word) and its port.
pub fn parse_endpoint(field: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // Each 32-bit word is printed as a number in the host's (little-endian) order.
    let words: Vec<[u8; 4]> = (0..addr.len() / 8)
        .map(|i| u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok())
        .map(|w| w.map(u32::to_le_bytes))
        .collect::<Option<_>>()?;
    let ip = match words.as_slice() {
        [a] => IpAddr::V4(Ipv4Addr::from(*a)),
        [_, _, _, _] => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(words.concat()).ok()?)),
        _ => return None,
    };
    Some((ip, port))
}

/// Counts established connections per remote (address, port) in the text of
/// `/proc/net/tcp` or `tcp6`.
pub fn count(text: &str, counts: &mut BTreeMap<(IpAddr, u16), i64>) {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(3) != Some(&ESTABLISHED) {
            continue;
        }
        if let Some(remote) = f.get(2).and_then(|r| parse_endpoint(r)) {
            *counts.entry(remote).or_default() += 1;
        }
    }
}

impl Source for TcpRemote {
    fn read(&self) -> Result<Vec<GaugeFamily>, String> {
        let mut counts = BTreeMap::new();
        let mut read_any = false;
        for file in ["tcp", "tcp6"] {
            if let Ok(text) = std::fs::read_to_string(self.proc_root.join("net").join(file)) {
                read_any = true;
                count(&text, &mut counts);
            }
        }
        if !read_any {
            return Err(format!(
                "{}/net/tcp and tcp6 unreadable",
                self.proc_root.display()
            ));
        }
        let mut rows: Vec<_> = counts.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        rows.truncate(MAX_SERIES);
        let samples = rows
            .into_iter()
            .map(|((ip, port), n)| {
                (
                    vec![
                        (names::ADDRESS, ip.to_string()),
                        (names::PORT, port.to_string()),
                    ],
                    n,
                )
            })
            .collect();
        Ok(vec![GaugeFamily {
            name: names::TCP_CONNECTION_REMOTE,
            help: "Established TCP connections per remote address and port",
            samples,
        }])
    }
}

/// The `tcp_connection_remote` plugin.
#[derive(Debug)]
pub struct TcpConnectionRemotePlugin;

impl Plugin for TcpConnectionRemotePlugin {
    fn name(&self) -> &'static str {
        "tcp_connection_remote"
    }

    fn about(&self) -> &'static str {
        "Retina's `tcp_connection_remote` from /proc/net/tcp and tcp6 at scrape time"
    }

    fn source(&self, roots: &Roots) -> Option<Box<dyn Source>> {
        Some(Box::new(TcpRemote {
            proc_root: roots.proc.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_established_by_remote() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0200000A:9C40 0300000A:01BB 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0200000A:9C41 0300000A:01BB 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
   3: 0200000A:9C42 0300000A:01BB 06 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 20 4 30 10 -1
";
        let v6 =
            "  sl  local_address                         remote_address                        st
   0: 000080FE00000000FF005450B6AD1DFE:9C40 0000000000000000FFFF00000100A8C0:0050 01 0
";
        let mut c = BTreeMap::new();
        count(v4, &mut c);
        count(v6, &mut c);
        let ip: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!(c.get(&(ip, 443)), Some(&2), "{c:?}");
        let mapped: IpAddr = "::ffff:192.168.0.1".parse().unwrap();
        assert_eq!(c.get(&(mapped, 80)), Some(&1), "{c:?}");
        assert_eq!(c.len(), 2, "LISTEN and TIME_WAIT are not counted: {c:?}");
    }
}
