//! Length- and CRC32C-framed records, shared by WAL segments and the dedup journal.
//!
//! A record is `len: u32 LE | crc32c(payload): u32 LE | payload`. Reading stops at
//! the first record that is cut short or whose checksum does not match: that is a
//! torn tail from a crash and is reported, never a panic.

/// Bytes of framing before each payload.
pub const HEADER_BYTES: usize = 8;
/// Largest payload a frame may carry (a guard against garbage lengths).
pub const MAX_PAYLOAD: usize = 1 << 30;

/// Appends one framed record to `out`.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&header(&[payload]));
    out.extend_from_slice(payload);
}

/// The frame header of a payload given in pieces (written after the header in
/// this order), so large payloads are framed without being copied together.
pub fn header(pieces: &[&[u8]]) -> [u8; HEADER_BYTES] {
    let len: usize = pieces.iter().map(|p| p.len()).sum();
    let crc = pieces
        .iter()
        .fold(0, |crc, p| crc32c::crc32c_append(crc, p));
    let mut h = [0; HEADER_BYTES];
    h[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The records of a file, and where a torn tail starts if there is one.
#[derive(Debug, Default)]
pub struct Decoded<'a> {
    pub records: Vec<&'a [u8]>,
    /// Offset of the first byte that is not part of a valid record.
    pub torn_at: Option<usize>,
}

/// Splits `bytes` into records, stopping at a torn or corrupt tail.
pub fn decode(bytes: &[u8]) -> Decoded<'_> {
    let mut out = Decoded::default();
    let mut at = 0;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + HEADER_BYTES) else {
            out.torn_at = Some(at);
            break;
        };
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let start = at + HEADER_BYTES;
        let payload = match bytes.get(start..start.saturating_add(len)) {
            Some(p) if len <= MAX_PAYLOAD && crc32c::crc32c(p) == crc => p,
            _ => {
                out.torn_at = Some(at);
                break;
            }
        };
        out.records.push(payload);
        at = start + len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_torn_tails() {
        let mut file = Vec::new();
        encode(b"one", &mut file);
        encode(b"", &mut file);
        encode(b"three", &mut file);
        let d = decode(&file);
        assert_eq!(d.records, vec![&b"one"[..], b"", b"three"]);
        assert_eq!(d.torn_at, None);
        // Every truncation keeps the whole records before the cut.
        for cut in 0..file.len() {
            let d = decode(&file[..cut]);
            let whole = [11, 19, 32].iter().filter(|&&end| end <= cut).count();
            assert_eq!(d.records.len(), whole, "cut at {cut}");
            assert_eq!(
                d.torn_at.is_some(),
                ![0, 11, 19].contains(&cut),
                "cut at {cut}"
            );
        }
        // A flipped bit in the last payload is detected.
        let mut bad = file.clone();
        *bad.last_mut().unwrap() ^= 1;
        let d = decode(&bad);
        assert_eq!(d.records.len(), 2);
        assert_eq!(d.torn_at, Some(19));
    }

    #[test]
    fn header_of_pieces_frames_their_concatenation() {
        let mut joined = Vec::new();
        encode(b"head and body", &mut joined);
        let mut pieces = header(&[b"head", b" and ", b"body"]).to_vec();
        pieces.extend_from_slice(b"head and body");
        assert_eq!(pieces, joined);
        assert_eq!(decode(&pieces).records, vec![&b"head and body"[..]]);
    }
}
