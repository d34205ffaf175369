//! Drop reason names from the running kernel's BTF (`enum skb_drop_reason`),
//! read from `/sys/kernel/btf/vmlinux` with a small BTF type-section walker.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{CollectorError, Result};

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

/// Value → name (without the `SKB_DROP_REASON_` prefix) of the kernel's drop reasons.
#[derive(Debug, Clone, Default)]
pub struct DropReasons {
    names: HashMap<u32, String>,
}

impl DropReasons {
    /// Reads `enum skb_drop_reason` from a BTF file such as `/sys/kernel/btf/vmlinux`.
    pub fn from_btf_file(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).map_err(|source| CollectorError::Io {
            what: format!("read {}", path.display()),
            source,
        })?;
        Self::from_btf(&data)
    }

    /// Parses raw (little-endian) BTF.
    pub fn from_btf(data: &[u8]) -> Result<Self> {
        let variants = enum_variants(data, "skb_drop_reason")?;
        let names = variants
            .into_iter()
            .map(|(name, value)| {
                let short = name.strip_prefix("SKB_DROP_REASON_").unwrap_or(&name);
                (value as u32, short.to_string())
            })
            .collect();
        Ok(DropReasons { names })
    }

    /// The reason name for a value, or its number when the kernel has no name
    /// for it; `UNKNOWN` on kernels without drop reasons (drops.bpf.c).
    pub fn name(&self, value: u32) -> String {
        if value == crate::abi::DROP_REASON_UNKNOWN {
            return "UNKNOWN".to_string();
        }
        self.names
            .get(&value)
            .cloned()
            .unwrap_or_else(|| value.to_string())
    }

    /// The value of a name (without prefix).
    pub fn value(&self, name: &str) -> Option<u32> {
        self.names.iter().find(|(_, n)| *n == name).map(|(v, _)| *v)
    }

    /// Smallest reason counted as a drop: everything after NOT_SPECIFIED
    /// (`SKB_CONSUMED` and `NOT_SPECIFIED` are ordinary frees).
    pub fn min_counted(&self) -> u32 {
        self.value("NOT_SPECIFIED").map_or(3, |v| v + 1)
    }
}

/// Whether the running kernel has drop reasons (`enum skb_drop_reason`,
/// 5.17 on): without them kfree_skb records carry no reason.
pub fn kernel_has_drop_reasons() -> bool {
    std::fs::read("/sys/kernel/btf/vmlinux")
        .is_ok_and(|data| enum_variants(&data, "skb_drop_reason").is_ok())
}

fn btf_err(msg: &str) -> CollectorError {
    CollectorError::Btf(msg.to_string())
}

fn u32_at(d: &[u8], off: usize) -> Result<u32> {
    d.get(off..off + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| btf_err("truncated"))
}

fn str_at(strings: &[u8], off: u32) -> &str {
    let s = strings.get(off as usize..).unwrap_or_default();
    let end = s.iter().position(|b| *b == 0).unwrap_or(s.len());
    std::str::from_utf8(&s[..end]).unwrap_or_default()
}

/// The (name, value) pairs of the named enum (ENUM or ENUM64).
pub fn enum_variants(data: &[u8], enum_name: &str) -> Result<Vec<(String, i64)>> {
    if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != BTF_MAGIC {
        return Err(btf_err("not little-endian BTF"));
    }
    let hdr_len = u32_at(data, 4)? as usize;
    let type_off = u32_at(data, 8)? as usize;
    let type_len = u32_at(data, 12)? as usize;
    let str_off = u32_at(data, 16)? as usize;
    let str_len = u32_at(data, 20)? as usize;
    let types = data
        .get(hdr_len + type_off..hdr_len + type_off + type_len)
        .ok_or_else(|| btf_err("type section out of bounds"))?;
    let strings = data
        .get(hdr_len + str_off..hdr_len + str_off + str_len)
        .ok_or_else(|| btf_err("string section out of bounds"))?;

    let mut off = 0;
    while off + 12 <= types.len() {
        let name_off = u32_at(types, off)?;
        let info = u32_at(types, off + 4)?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let body = off + 12;
        let extra = match kind {
            KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
            KIND_ARRAY => 12,
            KIND_STRUCT | KIND_UNION | KIND_DATASEC => 12 * vlen,
            KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
            KIND_ENUM64 => 12 * vlen,
            _ => 0,
        };
        if (kind == KIND_ENUM || kind == KIND_ENUM64) && str_at(strings, name_off) == enum_name {
            let step = if kind == KIND_ENUM { 8 } else { 12 };
            let mut out = Vec::with_capacity(vlen);
            for i in 0..vlen {
                let v = body + i * step;
                let name = str_at(strings, u32_at(types, v)?).to_string();
                let lo = u32_at(types, v + 4)?;
                let value = if kind == KIND_ENUM {
                    i64::from(lo as i32)
                } else {
                    (i64::from(u32_at(types, v + 8)?) << 32) | i64::from(lo)
                };
                out.push((name, value));
            }
            return Ok(out);
        }
        off = body + extra;
    }
    Err(CollectorError::Btf(format!("enum {enum_name} not found")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_drop_reasons_from_running_kernel() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            eprintln!("skipped: no /sys/kernel/btf/vmlinux");
            return;
        }
        let r = DropReasons::from_btf_file(path).unwrap();
        let nf = r.value("NETFILTER_DROP").expect("NETFILTER_DROP");
        assert_eq!(r.name(nf), "NETFILTER_DROP");
        assert!(r.value("NO_SOCKET").is_some());
        assert!(r.min_counted() > r.value("NOT_SPECIFIED").unwrap());
        assert_eq!(r.name(1_000_000), "1000000");
        assert_eq!(r.name(crate::abi::DROP_REASON_UNKNOWN), "UNKNOWN");
        assert!(kernel_has_drop_reasons());
    }

    #[test]
    fn rejects_garbage() {
        assert!(DropReasons::from_btf(b"not btf at all, not btf at all").is_err());
    }
}
