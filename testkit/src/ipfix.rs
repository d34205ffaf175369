//! A small IPFIX (RFC 7011) reader written from the RFC, not from Flowlake's
//! encoder: template sets (with the enterprise bit and its Private Enterprise
//! Number), data sets read by their template, variable-length fields (one length
//! octet, or 255 and two). Tests read the IPFIX sink's messages back with it.

use std::collections::HashMap;

/// A big-endian u16 at the start of `b`.
pub fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// A big-endian u32 at the start of `b`.
pub fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

/// A big-endian unsigned number of any length up to 8 octets.
pub fn unsigned(b: &[u8]) -> u64 {
    b.iter().fold(0, |n, &o| (n << 8) | u64::from(o))
}

/// One data record: (element id, enterprise number or 0) → value bytes.
pub type DataRecord = HashMap<(u16, u32), Vec<u8>>;

/// The templates seen so far, by template id: (element id, length, enterprise).
#[derive(Debug, Default)]
pub struct Reader {
    pub templates: HashMap<u16, Vec<(u16, u16, u32)>>,
}

impl Reader {
    /// Reads one message: its sequence number and its data records (templates are
    /// remembered for later messages).
    ///
    /// # Panics
    /// On a malformed message or a data set of an unknown template.
    pub fn read(&mut self, m: &[u8]) -> (u32, Vec<DataRecord>) {
        assert_eq!(be16(m), 10, "version");
        assert_eq!(be16(&m[2..]) as usize, m.len(), "message length");
        let seq = be32(&m[8..]);
        let mut out = Vec::new();
        let mut at = 16;
        while at < m.len() {
            let (id, len) = (be16(&m[at..]), be16(&m[at + 2..]) as usize);
            let set = &m[at + 4..at + len];
            at += len;
            if id == 2 {
                self.read_templates(set);
            } else {
                out.extend(self.read_data(id, set));
            }
        }
        (seq, out)
    }

    fn read_templates(&mut self, set: &[u8]) {
        let mut p = 0;
        while p + 4 <= set.len() {
            let (tid, n) = (be16(&set[p..]), be16(&set[p + 2..]));
            p += 4;
            let mut fields = Vec::new();
            for _ in 0..n {
                let (raw, flen) = (be16(&set[p..]), be16(&set[p + 2..]));
                p += 4;
                let pen = if raw & 0x8000 != 0 {
                    p += 4;
                    be32(&set[p - 4..])
                } else {
                    0
                };
                fields.push((raw & 0x7fff, flen, pen));
            }
            self.templates.insert(tid, fields);
        }
    }

    fn read_data(&self, id: u16, set: &[u8]) -> Vec<DataRecord> {
        let fields = &self.templates[&id];
        let mut out = Vec::new();
        let mut p = 0;
        while p < set.len() {
            let mut rec = HashMap::new();
            for &(fid, flen, pen) in fields {
                let len = if flen == 0xFFFF {
                    let l = set[p] as usize;
                    p += 1;
                    if l == 255 {
                        p += 2;
                        be16(&set[p - 2..]) as usize
                    } else {
                        l
                    }
                } else {
                    flen as usize
                };
                rec.insert((fid, pen), set[p..p + len].to_vec());
                p += len;
            }
            out.push(rec);
        }
        out
    }
}
