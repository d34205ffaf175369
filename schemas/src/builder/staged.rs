//! The fixed-size part of each record, staged as one struct per row: one `Vec` push
//! per record instead of one per column (the pushes were a third of the builder's
//! instructions). `finish` writes each column with one pass over the staged rows.

use arrow::array::PrimitiveArray;
use arrow::buffer::{BooleanBuffer, NullBuffer, ScalarBuffer};
use arrow::datatypes::ArrowPrimitiveType;

/// Bits of [`Staged::valid`]: which nullable numbers the record has.
pub(super) mod has {
    pub const SRC_PORT: u16 = 1 << 0;
    pub const DST_PORT: u16 = 1 << 1;
    pub const ICMP: u16 = 1 << 2;
    pub const TCP_FLAGS: u16 = 1 << 3;
    pub const TCP: u16 = 1 << 4;
    pub const SRTT: u16 = 1 << 5;
    pub const HANDSHAKE: u16 = 1 << 6;
}

/// One record's numbers and the ids of its texts (see the text columns for ids).
#[derive(Clone, Copy, Default)]
pub(super) struct Staged {
    pub start_us: i64,
    pub end_us: i64,
    pub packets: i64,
    pub bytes: i64,
    pub srtt_us: i64,
    pub handshake_us: i64,
    pub cluster: u32,
    pub node: u32,
    pub observation_point: u32,
    pub interface: u32,
    pub direction: u32,
    pub protocol: u32,
    pub verdict: u32,
    pub drop_reason: u32,
    pub src: u32,
    pub dst: u32,
    pub partition: u32,
    pub src_port: i32,
    pub dst_port: i32,
    pub retransmits: i32,
    pub resets: i32,
    pub icmp_type: i16,
    pub icmp_code: i16,
    pub tcp_flags: i16,
    pub ip_version: i8,
    /// [`has`] bits.
    pub valid: u16,
}

/// One id per row, read from the staged rows.
pub(super) fn ids(rows: &[Staged], id: impl Fn(&Staged) -> u32) -> Vec<u32> {
    rows.iter().map(id).collect()
}

/// A column without nulls.
pub(super) fn numbers<T: ArrowPrimitiveType>(
    rows: &[Staged],
    value: impl Fn(&Staged) -> T::Native,
) -> PrimitiveArray<T> {
    let values: Vec<T::Native> = rows.iter().map(value).collect();
    PrimitiveArray::new(ScalarBuffer::from(values), None)
}

/// A column that is null in the rows without the `bit` of [`has`].
pub(super) fn optional<T: ArrowPrimitiveType>(
    rows: &[Staged],
    bit: u16,
    value: impl Fn(&Staged) -> T::Native,
) -> PrimitiveArray<T> {
    let values: Vec<T::Native> = rows.iter().map(value).collect();
    let nulls = rows.iter().any(|r| r.valid & bit == 0).then(|| {
        NullBuffer::new(BooleanBuffer::collect_bool(rows.len(), |i| {
            rows[i].valid & bit != 0
        }))
    });
    PrimitiveArray::new(ScalarBuffer::from(values), nulls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;
    use arrow::datatypes::{Int32Type, Int64Type};

    #[test]
    fn optional_columns_are_null_where_the_bit_is_unset() {
        let rows = [
            Staged {
                src_port: 80,
                valid: has::SRC_PORT,
                ..Default::default()
            },
            Staged {
                src_port: 0,
                valid: has::DST_PORT,
                packets: 3,
                ..Default::default()
            },
        ];
        let ports = optional::<Int32Type>(&rows, has::SRC_PORT, |r| r.src_port);
        assert_eq!(ports.iter().collect::<Vec<_>>(), [Some(80), None]);
        let dst = optional::<Int32Type>(&rows[1..], has::DST_PORT, |r| r.dst_port);
        assert!(dst.nulls().is_none(), "no null, no null buffer");
        let packets = numbers::<Int64Type>(&rows, |r| r.packets);
        assert_eq!(packets.values().as_ref(), [0, 3]);
        assert_eq!(ids(&rows, |r| r.src_port as u32), [80, 0]);
    }
}
