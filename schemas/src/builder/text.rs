//! Utf8 columns built per row: shared texts (`Arc<str>`) interned by address, fixed
//! names by index, and addresses (which rarely repeat) copied as they come, IPv4
//! formatted from a table instead of through `Display`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use arrow::array::StringArray;

use super::dict::{Dict, NULL_ID, offset, utf8_array};

/// Hashes an address: one multiplication, enough for pointers (distinct, aligned).
#[derive(Default)]
pub(super) struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Maps shared values (`Arc`s) to the id they were given, by address. Keeps a clone
/// of each `Arc` until `clear`, so no address can be freed and reused by another value
/// while its id is remembered.
pub(super) struct Interner<T: ?Sized> {
    /// Direct-mapped cache in front of `ids`: most lookups end here.
    recent: Box<[(usize, u32); RECENT]>,
    ids: HashMap<usize, u32, BuildHasherDefault<AddrHasher>>,
    kept: Vec<Arc<T>>,
}

/// Slots of an [`Interner`]'s cache.
const RECENT_BITS: u32 = 8;
const RECENT: usize = 1 << RECENT_BITS;

impl<T: ?Sized> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            recent: Box::new([(0, NULL_ID); RECENT]),
            ids: HashMap::default(),
            kept: Vec::new(),
        }
    }
}

impl<T: ?Sized> Interner<T> {
    /// The id of `value`, calling `assign` to create one the first time it is seen.
    #[inline]
    pub(super) fn id(&mut self, value: &Arc<T>, assign: impl FnOnce(&T) -> u32) -> u32 {
        let addr = Arc::as_ptr(value).cast::<u8>() as usize;
        // Fibonacci hashing: the top bits of the product mix every bit of the address.
        let slot = (addr as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - RECENT_BITS);
        let (cached, id) = self.recent[slot as usize];
        if cached == addr {
            return id;
        }
        self.id_uncached(value, addr, slot as usize, assign)
    }

    #[cold]
    #[inline(never)]
    fn id_uncached(
        &mut self,
        value: &Arc<T>,
        addr: usize,
        slot: usize,
        assign: impl FnOnce(&T) -> u32,
    ) -> u32 {
        let id = match self.ids.entry(addr) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                self.kept.push(Arc::clone(value));
                *e.insert(assign(value))
            }
        };
        self.recent[slot] = (addr, id);
        id
    }

    pub(super) fn clear(&mut self) {
        self.recent.fill((0, NULL_ID));
        self.ids.clear();
        self.kept.clear();
    }
}

/// The texts of a Utf8 column of shared texts (`Arc<str>`), such as cluster, node
/// and interface names; rows keep the ids it gives.
#[derive(Default)]
pub(super) struct SharedTexts {
    interner: Interner<str>,
    dict: Dict<1>,
}

impl SharedTexts {
    /// The id of `text` in this batch (`NULL_ID` for `None`).
    #[inline]
    pub(super) fn id(&mut self, text: Option<&Arc<str>>) -> u32 {
        match text {
            Some(t) => self.interner.id(t, |s| self.dict.push([Some(s)])),
            None => NULL_ID,
        }
    }

    /// The column of `rows` (ids from `id`); forgets the texts.
    pub(super) fn finish(&mut self, rows: &[u32]) -> StringArray {
        let array = self.dict.column(rows);
        self.dict.clear();
        self.interner.clear();
        array
    }
}

/// The texts of a Utf8 column over a fixed set of names.
pub(super) struct Names {
    dict: Dict<1>,
}

impl Names {
    /// Names whose id `i + 1` is `names[i]`.
    pub(super) fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Names {
            dict: Dict::with_texts(names),
        }
    }

    /// Adds a name and returns its id.
    pub(super) fn add(&mut self, name: &str) -> u32 {
        self.dict.push([Some(name)])
    }

    /// The column of `rows` (ids of names); the names stay for the next batch.
    pub(super) fn column(&self, rows: &[u32]) -> StringArray {
        self.dict.column(rows)
    }
}

/// Decimal digits of every octet followed by a dot, four bytes each, and their count.
const OCTETS: [([u8; 4], usize); 256] = {
    let mut t = [([0u8; 4], 0usize); 256];
    let mut i = 0;
    while i < 256 {
        let o = i as u8;
        let (digits, n) = if o >= 100 {
            (
                [b'0' + o / 100, b'0' + (o / 10) % 10, b'0' + o % 10, b'.'],
                3,
            )
        } else if o >= 10 {
            ([b'0' + o / 10, b'0' + o % 10, b'.', 0], 2)
        } else {
            ([b'0' + o, b'.', 0, 0], 1)
        };
        t[i] = (digits, n);
        i += 1;
    }
    t
};

/// A Utf8 column of IP addresses in canonical text.
pub(super) struct IpColumn {
    values: Vec<u8>,
    offsets: Vec<i32>,
}

impl IpColumn {
    pub(super) fn with_capacity(n: usize) -> Self {
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        IpColumn {
            values: Vec::with_capacity(n * 14),
            offsets,
        }
    }

    /// Appends an address in canonical text.
    pub(super) fn append(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => {
                let mut buf = [0u8; 16];
                let mut n = 0;
                for o in v4.octets() {
                    let (digits, len) = &OCTETS[usize::from(o)];
                    buf[n..n + 4].copy_from_slice(digits);
                    n += len + 1;
                }
                // Write all 16 bytes, keep the address (the last octet's dot is not
                // part of it): one fixed-size copy instead of a `memcpy` call.
                self.values.reserve(buf.len());
                let at = self.values.len();
                // SAFETY: `reserve` made room for 16 bytes after `at`; the first `n - 1`
                // of them are initialised by the copy before `set_len` exposes them.
                unsafe {
                    let to = self.values.as_mut_ptr().add(at);
                    std::ptr::copy_nonoverlapping(buf.as_ptr(), to, buf.len());
                    self.values.set_len(at + n - 1);
                }
            }
            IpAddr::V6(v6) => self.values.extend_from_slice(v6.to_string().as_bytes()),
        }
        self.offsets.push(offset(self.values.len()));
    }

    /// The column; the builder keeps its capacity.
    pub(super) fn finish(&mut self) -> StringArray {
        let (n, bytes) = (self.offsets.capacity(), self.values.capacity());
        let values = std::mem::replace(&mut self.values, Vec::with_capacity(bytes));
        let mut offsets = Vec::with_capacity(n);
        offsets.push(0);
        let offsets = std::mem::replace(&mut self.offsets, offsets);
        utf8_array(offsets, values, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interner_gives_one_id_per_shared_value_and_forgets_on_clear() {
        let mut texts = SharedTexts::default();
        let x: Arc<str> = "x".into();
        let y: Arc<str> = "y".into();
        let x_again: Arc<str> = "x".into(); // same text, another allocation
        let rows: Vec<u32> = [Some(&x), Some(&y), Some(&x), Some(&x_again), Some(&y), None]
            .into_iter()
            .map(|t| texts.id(t))
            .collect();
        assert_eq!(texts.dict.len(), 4, "null entry + x, y, x_again");
        let array = texts.finish(&rows);
        let got: Vec<_> = array.iter().collect();
        assert_eq!(
            got,
            [Some("x"), Some("y"), Some("x"), Some("x"), Some("y"), None]
        );
        assert!(texts.interner.kept.is_empty() && texts.dict.len() == 1);
    }

    #[test]
    fn addresses_are_canonical() {
        let mut c = IpColumn::with_capacity(2);
        c.append("2001:db8:0:0:0:0:0:1".parse().unwrap());
        c.append("::ffff:10.0.0.1".parse().unwrap());
        c.append("10.200.3.255".parse().unwrap());
        c.append("0.0.0.0".parse().unwrap());
        let a = c.finish();
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            [
                Some("2001:db8::1"),
                Some("::ffff:10.0.0.1"),
                Some("10.200.3.255"),
                Some("0.0.0.0")
            ]
        );
        c.append("1.2.3.4".parse().unwrap());
        assert_eq!(c.finish().value(0), "1.2.3.4");
    }
}
