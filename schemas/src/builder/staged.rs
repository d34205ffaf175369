//! The fixed-size part of each record, staged as one struct per row: one `Vec` push
//! per record instead of one per column (the pushes were a third of the builder's
//! instructions). `finish` transposes the rows into one `Vec` per field, a block of
//! rows at a time so each block is read from cache rather than memory.

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
    pub const WIRE_PACKETS: u16 = 1 << 7;
}

/// Rows transposed per block: 1024 staged rows are 128 KiB, well inside L2.
const BLOCK: usize = 1024;

/// Declares [`Staged`] (one record) and [`Fields`] (one `Vec` per field) from one
/// list of fields.
macro_rules! staged {
    ($($(#[$doc:meta])* $field:ident: $ty:ty),+ $(,)?) => {
        /// One record's numbers and the ids of its texts (see the text columns).
        #[derive(Clone, Copy, Default)]
        pub(super) struct Staged {
            $($(#[$doc])* pub $field: $ty,)+
        }

        /// The staged rows, one `Vec` per field.
        pub(super) struct Fields {
            $(pub $field: Vec<$ty>,)+
        }

        impl Fields {
            pub(super) fn from_rows(rows: &[Staged]) -> Self {
                let mut f = Fields {
                    $($field: Vec::with_capacity(rows.len()),)+
                };
                for block in rows.chunks(BLOCK) {
                    $(f.$field.extend(block.iter().map(|r| r.$field));)+
                }
                f
            }
        }
    };
}

staged! {
    start_us: i64,
    end_us: i64,
    packets: i64,
    bytes: i64,
    wire_packets: i64,
    srtt_us: i64,
    handshake_us: i64,
    cluster: u32,
    node: u32,
    observation_point: u32,
    interface: u32,
    direction: u32,
    protocol: u32,
    verdict: u32,
    drop_reason: u32,
    src: u32,
    dst: u32,
    partition: u32,
    src_port: i32,
    dst_port: i32,
    retransmits: i32,
    resets: i32,
    icmp_type: i16,
    icmp_code: i16,
    tcp_flags: i16,
    ip_version: i8,
    /// [`has`] bits.
    valid: u16,
}

/// A column without nulls.
pub(super) fn numbers<T: ArrowPrimitiveType>(values: Vec<T::Native>) -> PrimitiveArray<T> {
    PrimitiveArray::new(ScalarBuffer::from(values), None)
}

/// A column that is null in the rows whose `valid` lacks `bit` (see [`has`]).
pub(super) fn optional<T: ArrowPrimitiveType>(
    values: Vec<T::Native>,
    valid: &[u16],
    bit: u16,
) -> PrimitiveArray<T> {
    let nulls = valid.iter().any(|v| v & bit == 0).then(|| {
        NullBuffer::new(BooleanBuffer::collect_bool(valid.len(), |i| {
            valid[i] & bit != 0
        }))
    });
    PrimitiveArray::new(ScalarBuffer::from(values), nulls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;
    use arrow::datatypes::Int32Type;

    #[test]
    fn fields_follow_rows_across_blocks_and_nulls_follow_bits() {
        let rows: Vec<Staged> = (0..2 * BLOCK + 3)
            .map(|i| Staged {
                src_port: i as i32,
                packets: 2 * i as i64,
                valid: if i % 2 == 0 { has::SRC_PORT } else { 0 },
                ..Default::default()
            })
            .collect();
        let f = Fields::from_rows(&rows);
        assert_eq!(f.packets.len(), rows.len());
        assert!(
            f.packets
                .iter()
                .enumerate()
                .all(|(i, &p)| p == 2 * i as i64)
        );
        let ports = optional::<Int32Type>(f.src_port, &f.valid, has::SRC_PORT);
        assert_eq!(ports.null_count(), rows.len() / 2);
        assert_eq!(
            ports.iter().nth(2 * BLOCK + 2),
            Some(Some(2 * BLOCK as i32 + 2))
        );
        assert_eq!(ports.iter().nth(1), Some(None));
        let all = optional::<Int32Type>(vec![1, 2], &[has::TCP, has::TCP], has::TCP);
        assert!(all.nulls().is_none(), "no null, no null buffer");
    }
}
