//! Parquet's RLE / bit-packing hybrid encoding of small unsigned integers
//! (dictionary indices and definition levels), without a length prefix.
//!
//! Runs of eight or more equal values become RLE runs; everything else is
//! bit-packed in groups of eight, least significant bit first. Sorted columns are
//! mostly long runs, so this is a handful of instructions per value.

use arrow::buffer::BooleanBuffer;

/// Bits needed to store every value in `0..=max`.
pub fn bit_width(max: u32) -> u8 {
    (32 - max.leading_zeros()) as u8
}

/// Appends `values` (each `< 2^bit_width`) to `out`. A reader takes the value
/// count from the page header, so padding in the last bit-packed group is never
/// read as values.
pub fn encode(values: &[u32], bit_width: u8, out: &mut Vec<u8>) {
    debug_assert!(bit_width <= 32);
    let n = values.len();
    let mut i = 0;
    while i < n {
        let run = run_len(values, i);
        if run >= 8 {
            put_rle(values[i], run, bit_width, out);
            i += run;
            continue;
        }
        // A literal block: groups of eight until a group starts a long run.
        let start = i;
        loop {
            i += 8;
            if i >= n || run_len(values, i) >= 8 {
                break;
            }
        }
        put_bit_packed(&values[start..i.min(n)], bit_width, out);
    }
}

/// Appends one run of `count` copies of `value`.
pub fn encode_run(value: u32, count: usize, bit_width: u8, out: &mut Vec<u8>) {
    if count > 0 {
        put_rle(value, count, bit_width, out);
    }
}

/// Appends the bits of `bits` as levels of width 1 (a validity bitmap as
/// definition levels): as RLE runs of the set and unset stretches when they are
/// long, otherwise as the bitmap itself, one bit-packed run (Arrow's and Parquet's
/// bit order are the same, least significant bit first).
pub fn encode_bits(bits: &BooleanBuffer, out: &mut Vec<u8>) {
    let n = bits.len();
    let stretches = bits.set_slices().count();
    // Two runs per stretch of set bits, about two bytes each, against n / 8.
    if stretches * 4 < n / 8 {
        let mut at = 0;
        for (start, end) in bits.set_slices() {
            encode_run(0, start - at, 1, out);
            encode_run(1, end - start, 1, out);
            at = end;
        }
        encode_run(0, n - at, 1, out);
    } else if n > 0 {
        put_varint(((n.div_ceil(8) as u64) << 1) | 1, out);
        let packed = bits.sliced();
        out.extend_from_slice(&packed.as_slice()[..n.div_ceil(8)]);
    }
}

/// Length of the run of values equal to `values[i]` starting at `i`.
fn run_len(values: &[u32], i: usize) -> usize {
    let v = values[i];
    values[i..].iter().take_while(|&&x| x == v).count()
}

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_rle(value: u32, run: usize, bit_width: u8, out: &mut Vec<u8>) {
    put_varint((run as u64) << 1, out);
    let bytes = bit_width.div_ceil(8) as usize;
    out.extend_from_slice(&value.to_le_bytes()[..bytes]);
}

/// `values` bit-packed in groups of eight (the last group padded with zeros).
fn put_bit_packed(values: &[u32], bit_width: u8, out: &mut Vec<u8>) {
    let groups = values.len().div_ceil(8);
    put_varint(((groups as u64) << 1) | 1, out);
    let padding = std::iter::repeat_n(0, groups * 8 - values.len());
    let values = values.iter().map(|&v| u64::from(v)).chain(padding);
    bit_pack(values, u32::from(bit_width), out);
}

/// Appends `values` (each below `2^width`, `width <= 64`) bit-packed, least
/// significant bit first; their count times `width` must be a multiple of 8.
pub(super) fn bit_pack(values: impl IntoIterator<Item = u64>, width: u32, out: &mut Vec<u8>) {
    if width == 0 {
        return;
    }
    if width <= 32 {
        // Fewer than 32 bits wait in the accumulator, so a value always fits.
        let mut acc: u64 = 0;
        let mut bits = 0u32;
        for v in values {
            acc |= v << bits;
            bits += width;
            if bits >= 32 {
                out.extend_from_slice(&(acc as u32).to_le_bytes());
                acc >>= 32;
                bits -= 32;
            }
        }
        debug_assert_eq!(bits % 8, 0);
        out.extend_from_slice(&acc.to_le_bytes()[..bits as usize / 8]);
        return;
    }
    let mut acc: u128 = 0;
    let mut bits = 0u32;
    for v in values {
        acc |= u128::from(v) << bits;
        bits += width;
        if bits >= 64 {
            out.extend_from_slice(&(acc as u64).to_le_bytes());
            acc >>= 64;
            bits -= 64;
        }
    }
    debug_assert_eq!(bits % 8, 0);
    out.extend_from_slice(&(acc as u64).to_le_bytes()[..bits as usize / 8]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes the hybrid encoding back (the reference reader of the tests).
    fn decode(mut data: &[u8], bit_width: u8, n: usize) -> Vec<u32> {
        let varint = |data: &mut &[u8]| {
            let (mut v, mut shift) = (0u64, 0);
            loop {
                let b = data[0];
                *data = &data[1..];
                v |= u64::from(b & 0x7f) << shift;
                if b < 0x80 {
                    return v;
                }
                shift += 7;
            }
        };
        let mut out = Vec::new();
        while out.len() < n {
            let header = varint(&mut data);
            if header & 1 == 0 {
                let bytes = bit_width.div_ceil(8) as usize;
                let mut le = [0u8; 4];
                le[..bytes].copy_from_slice(&data[..bytes]);
                data = &data[bytes..];
                out.extend(std::iter::repeat_n(
                    u32::from_le_bytes(le),
                    (header >> 1) as usize,
                ));
            } else {
                let count = (header >> 1) as usize * 8;
                let (mut acc, mut bits, mut pos) = (0u64, 0u32, 0);
                for _ in 0..count {
                    while bits < u32::from(bit_width) {
                        acc |= u64::from(data[pos]) << bits;
                        pos += 1;
                        bits += 8;
                    }
                    out.push((acc & ((1u64 << bit_width) - 1)) as u32);
                    acc >>= bit_width;
                    bits -= u32::from(bit_width);
                }
                data = &data[pos..];
            }
        }
        out.truncate(n);
        out
    }

    #[test]
    fn widths() {
        assert_eq!(bit_width(0), 0);
        assert_eq!(bit_width(1), 1);
        assert_eq!(bit_width(2), 2);
        assert_eq!(bit_width(255), 8);
        assert_eq!(bit_width(256), 9);
        assert_eq!(bit_width(u32::MAX), 32);
    }

    #[test]
    fn round_trips_runs_literals_and_mixes() {
        let mut cases: Vec<Vec<u32>> = vec![
            vec![],
            vec![0],
            vec![5; 3],
            vec![5; 8],
            vec![7; 1000],
            (0..37).collect(),
            (0..1000).map(|i| (i * 7919) % 300).collect(),
        ];
        // Runs that start mid-group, short runs, and a long tail.
        let mut mixed = Vec::new();
        for r in 0..50u32 {
            mixed.extend(std::iter::repeat_n(r % 13, (r as usize * 3) % 17 + 1));
        }
        cases.push(mixed);
        for values in cases {
            let max = values.iter().copied().max().unwrap_or(0);
            for width in [bit_width(max), 17, 32] {
                if width < bit_width(max) {
                    continue;
                }
                let mut out = Vec::new();
                encode(&values, width, &mut out);
                assert_eq!(decode(&out, width, values.len()), values, "width {width}");
            }
        }
    }

    /// Validity bitmaps at any offset, sparse and dense, decode to their bits.
    #[test]
    fn bitmaps_as_levels() {
        let patterns: Vec<Vec<bool>> = vec![
            vec![],
            vec![true; 5],
            (0..1000).map(|i| i % 3 != 0).collect(),
            (0..5000).map(|i| (i / 700) % 2 == 0).collect(),
            (0..4096).map(|i| i == 17 || i == 4000).collect(),
        ];
        for bits in patterns {
            for offset in [0, 3] {
                if offset > bits.len() {
                    continue;
                }
                let buffer = BooleanBuffer::from(bits.clone()).slice(offset, bits.len() - offset);
                let mut out = Vec::new();
                encode_bits(&buffer, &mut out);
                let want: Vec<u32> = bits[offset..].iter().map(|&b| u32::from(b)).collect();
                assert_eq!(decode(&out, 1, want.len()), want);
            }
        }
    }

    /// Every width up to 64 packs eight values into `width` bytes, least
    /// significant bit first.
    #[test]
    fn bit_pack_every_width() {
        for width in 1..=64u32 {
            let mask = if width == 64 {
                u64::MAX
            } else {
                (1 << width) - 1
            };
            let values: Vec<u64> = (0..16u64)
                .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) & mask)
                .collect();
            let mut out = Vec::new();
            bit_pack(values.iter().copied(), width, &mut out);
            assert_eq!(out.len(), 2 * width as usize);
            for (i, &v) in values.iter().enumerate() {
                let got = (0..width).fold(0u64, |acc, bit| {
                    let at = i * width as usize + bit as usize;
                    acc | (u64::from(out[at / 8] >> (at % 8) & 1) << bit)
                });
                assert_eq!(got, v, "width {width} value {i}");
            }
        }
    }

    #[test]
    fn zero_width_is_runs_only() {
        let mut out = Vec::new();
        encode(&[0; 20], 0, &mut out);
        assert_eq!(out, vec![40]);
        assert_eq!(decode(&out, 0, 20), vec![0; 20]);
    }

    #[test]
    fn long_runs_are_short() {
        let mut values = vec![3u32; 10_000];
        values.extend(vec![9u32; 10_000]);
        let mut out = Vec::new();
        encode(&values, 4, &mut out);
        assert!(out.len() <= 8, "{} bytes", out.len());
    }
}
