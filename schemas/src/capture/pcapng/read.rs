//! Reads what `Writer` writes (little-endian pcapng, nanosecond timestamps):
//! section comments, interfaces, packets with direction, statistics.

use super::{
    Direction, EPB, IDB, IF_DESCRIPTION, IF_NAME, ISB, ISB_OSDROP, InterfaceInfo, OPT_COMMENT, SHB,
};

/// A packet read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub interface: u32,
    pub ts_ns: u64,
    pub original: u32,
    pub data: Vec<u8>,
    pub direction: Option<Direction>,
}

/// A whole file read back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct File {
    pub comments: Vec<String>,
    pub interfaces: Vec<InterfaceInfo>,
    pub packets: Vec<Packet>,
    /// Per interface: (comment, kernel drops).
    pub statistics: Vec<(u32, String, u64)>,
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

/// Options from `b` as (code, value) pairs.
fn options(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while let (Some(code), Some(len)) = (u16_at(b, 0), u16_at(b, 2)) {
        if code == 0 {
            break;
        }
        let len = usize::from(len);
        let Some(v) = b.get(4..4 + len) else { break };
        out.push((code, v));
        b = b.get(4 + len.next_multiple_of(4)..).unwrap_or_default();
    }
    out
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// Parses a file; None when it is not a little-endian pcapng section.
pub fn parse(data: &[u8]) -> Option<File> {
    let mut f = File::default();
    let mut off = 0;
    while off + 12 <= data.len() {
        let kind = u32_at(data, off)?;
        let len = u32_at(data, off + 4)? as usize;
        if len < 12 || off + len > data.len() {
            return None;
        }
        let body = &data[off + 8..off + len - 4];
        match kind {
            SHB => {
                if u32_at(body, 0)? != super::BYTE_ORDER_MAGIC {
                    return None;
                }
                for (code, v) in options(body.get(16..)?) {
                    if code == OPT_COMMENT {
                        f.comments.push(text(v));
                    }
                }
            }
            IDB => {
                let mut info = InterfaceInfo {
                    name: String::new(),
                    description: String::new(),
                    snaplen: u32_at(body, 4)?,
                };
                for (code, v) in options(body.get(8..)?) {
                    match code {
                        IF_NAME => info.name = text(v),
                        IF_DESCRIPTION => info.description = text(v),
                        _ => {}
                    }
                }
                f.interfaces.push(info);
            }
            EPB => {
                let caplen = u32_at(body, 12)? as usize;
                let data = body.get(20..20 + caplen)?.to_vec();
                let opts = options(body.get(20 + caplen.next_multiple_of(4)..)?);
                let direction = opts
                    .iter()
                    .find(|(c, _)| *c == super::EPB_FLAGS)
                    .and_then(|(_, v)| u32_at(v, 0))
                    .and_then(|flags| match flags & 3 {
                        1 => Some(Direction::Inbound),
                        2 => Some(Direction::Outbound),
                        _ => None,
                    });
                f.packets.push(Packet {
                    interface: u32_at(body, 0)?,
                    ts_ns: (u64::from(u32_at(body, 4)?) << 32) | u64::from(u32_at(body, 8)?),
                    original: u32_at(body, 16)?,
                    data,
                    direction,
                });
            }
            ISB => {
                let opts = options(body.get(12..)?);
                let comment = opts
                    .iter()
                    .find(|(c, _)| *c == OPT_COMMENT)
                    .map(|(_, v)| text(v))
                    .unwrap_or_default();
                let drops = opts
                    .iter()
                    .find(|(c, _)| *c == ISB_OSDROP)
                    .and_then(|(_, v)| Some(u64::from_le_bytes((*v).try_into().ok()?)))
                    .unwrap_or(0);
                f.statistics.push((u32_at(body, 0)?, comment, drops));
            }
            _ => {}
        }
        off += len;
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::super::{InterfaceStats, Writer};
    use super::*;

    #[test]
    fn what_is_written_reads_back() {
        let mut w = Writer::new(Vec::new(), &["capture c1".into(), "filter: tcp".into()]).unwrap();
        let a = w
            .interface(&InterfaceInfo {
                name: "shop/web-0@node-a".into(),
                description: "namespace=shop pod=web-0 node=node-a interface=veth1".into(),
                snaplen: 128,
            })
            .unwrap();
        let n = w
            .packet(
                a,
                1_700_000_000_123_456_789,
                60,
                &[7u8; 57],
                Direction::Outbound,
            )
            .unwrap();
        assert_eq!(n, Writer::<Vec<u8>>::packet_block_len(57));
        w.packet(a, 5, 1500, &[1, 2, 3, 4], Direction::Inbound)
            .unwrap();
        let stats = InterfaceStats {
            start_ns: 1,
            end_ns: 9,
            received: 3,
            dropped: 1,
        };
        let before = w.bytes_written();
        w.statistics(a, stats, "kernel dropped 1").unwrap();
        let written = w.bytes_written();
        assert_eq!(
            written - before,
            Writer::<Vec<u8>>::statistics_block_len("kernel dropped 1")
        );
        let bytes = w.into_inner();
        assert_eq!(written, bytes.len() as u64);
        assert_eq!(bytes.len() % 4, 0);
        let f = parse(&bytes).unwrap();
        assert_eq!(f.comments, ["capture c1", "filter: tcp"]);
        assert_eq!(f.interfaces[0].name, "shop/web-0@node-a");
        assert_eq!(f.interfaces[0].snaplen, 128);
        assert_eq!(f.packets.len(), 2);
        assert_eq!(f.packets[0].ts_ns, 1_700_000_000_123_456_789);
        assert_eq!(f.packets[0].data, vec![7u8; 57]);
        assert_eq!(f.packets[0].original, 60);
        assert_eq!(f.packets[0].direction, Some(Direction::Outbound));
        assert_eq!(f.packets[1].direction, Some(Direction::Inbound));
        assert_eq!(f.statistics, [(0, "kernel dropped 1".to_string(), 1)]);
    }
}
