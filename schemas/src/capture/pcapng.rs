//! A pcapng writer (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-02.html):
//! a section header carrying the capture's id and limits as comments, one
//! interface description per pod interface (name and description carry
//! namespace/pod/node; nanosecond timestamps), enhanced packet blocks with the
//! direction flag, and interface statistics with the kernel's drops. Little
//! endian. The reader beside it (`pcapng/read.rs`) serves tests and flow
//! filtering of downloads.

pub mod read;

use std::io::{self, Write};

const SHB: u32 = 0x0a0d_0d0a;
const IDB: u32 = 1;
const ISB: u32 = 5;
const EPB: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_DESCRIPTION: u16 = 3;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;
const ISB_STARTTIME: u16 = 2;
const ISB_ENDTIME: u16 = 3;
const ISB_IFRECV: u16 = 4;
const ISB_OSDROP: u16 = 7;
pub const LINKTYPE_ETHERNET: u16 = 1;

/// Which way a packet crossed the interface (`epb_flags` bits 0-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    fn flags(self) -> u32 {
        match self {
            Direction::Inbound => 1,
            Direction::Outbound => 2,
        }
    }
}

/// A block under construction: body, options, then the framing.
struct Block {
    kind: u32,
    body: Vec<u8>,
}

impl Block {
    fn new(kind: u32) -> Block {
        Block {
            kind,
            body: Vec::new(),
        }
    }

    fn u16(&mut self, v: u16) -> &mut Self {
        self.body.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn u32(&mut self, v: u32) -> &mut Self {
        self.body.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn pad(&mut self) {
        while !self.body.len().is_multiple_of(4) {
            self.body.push(0);
        }
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.body.extend_from_slice(b);
        self.pad();
        self
    }

    fn opt(&mut self, code: u16, value: &[u8]) -> &mut Self {
        self.u16(code).u16(value.len() as u16).bytes(value)
    }

    /// A timestamp in nanoseconds as the high and low 32 bits.
    fn ts(&mut self, ns: u64) -> &mut Self {
        self.u32((ns >> 32) as u32).u32(ns as u32)
    }

    fn ts_opt(&mut self, code: u16, ns: u64) -> &mut Self {
        let mut v = Vec::with_capacity(8);
        v.extend_from_slice(&((ns >> 32) as u32).to_le_bytes());
        v.extend_from_slice(&(ns as u32).to_le_bytes());
        self.opt(code, &v)
    }

    fn comment(&mut self, text: &str) -> &mut Self {
        // An option holds at most 65535 bytes; longer text is cut at a char boundary.
        let mut end = text.len().min(u16::MAX as usize - 3);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.opt(OPT_COMMENT, &text.as_bytes()[..end])
    }

    fn end_options(&mut self) -> &mut Self {
        self.u16(OPT_END).u16(0)
    }

    fn encode(&self) -> Vec<u8> {
        let total = (12 + self.body.len()) as u32;
        let mut out = Vec::with_capacity(total as usize);
        out.extend_from_slice(&self.kind.to_le_bytes());
        out.extend_from_slice(&total.to_le_bytes());
        out.extend_from_slice(&self.body);
        out.extend_from_slice(&total.to_le_bytes());
        out
    }
}

/// An interface as it is described in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// `if_name`.
    pub name: String,
    /// `if_description`.
    pub description: String,
    pub snaplen: u32,
}

/// The statistics closing an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InterfaceStats {
    pub start_ns: u64,
    pub end_ns: u64,
    /// Packets the kernel passed to the socket's filter and accepted.
    pub received: u64,
    /// Of those, packets the kernel could not deliver (socket buffer full).
    pub dropped: u64,
}

/// Writes a pcapng section to `W`, counting the bytes written.
pub struct Writer<W: Write> {
    out: W,
    written: u64,
    interfaces: u32,
}

impl<W: Write> Writer<W> {
    /// Writes the section header, with `comments` (capture id, filter, limits).
    pub fn new(out: W, comments: &[String]) -> io::Result<Self> {
        let mut w = Writer {
            out,
            written: 0,
            interfaces: 0,
        };
        let mut b = Block::new(SHB);
        b.u32(BYTE_ORDER_MAGIC).u16(1).u16(0);
        b.body.extend_from_slice(&(-1i64).to_le_bytes());
        for c in comments {
            b.comment(c);
        }
        b.opt(SHB_USERAPPL, b"flowlake collector");
        b.end_options();
        w.put(&b)?;
        Ok(w)
    }

    fn put(&mut self, b: &Block) -> io::Result<u64> {
        let bytes = b.encode();
        self.out.write_all(&bytes)?;
        self.written += bytes.len() as u64;
        Ok(bytes.len() as u64)
    }

    /// Describes an interface; returns its id for packets and statistics.
    pub fn interface(&mut self, info: &InterfaceInfo) -> io::Result<u32> {
        let mut b = Block::new(IDB);
        b.u16(LINKTYPE_ETHERNET).u16(0).u32(info.snaplen);
        b.opt(IF_NAME, info.name.as_bytes());
        b.opt(IF_DESCRIPTION, info.description.as_bytes());
        b.opt(IF_TSRESOL, &[9]);
        b.end_options();
        self.put(&b)?;
        self.interfaces += 1;
        Ok(self.interfaces - 1)
    }

    /// The size an enhanced packet block of `captured` bytes takes.
    pub fn packet_block_len(captured: usize) -> u64 {
        (12 + 20 + captured.next_multiple_of(4) + 8 + 4) as u64
    }

    /// The size the statistics block of an interface takes with `comment`.
    pub fn statistics_block_len(comment: &str) -> u64 {
        let comment = comment.len().min(u16::MAX as usize - 3);
        (12 + 12 + 4 + comment.next_multiple_of(4) + 2 * 12 + 2 * 12 + 4) as u64
    }

    /// Writes one packet (`data` as captured, `original` its length on the
    /// wire) at `ts_ns` nanoseconds since the epoch; returns the bytes written.
    pub fn packet(
        &mut self,
        interface: u32,
        ts_ns: u64,
        original: u32,
        data: &[u8],
        direction: Direction,
    ) -> io::Result<u64> {
        let mut b = Block::new(EPB);
        b.body.reserve(data.len() + 40);
        b.u32(interface)
            .ts(ts_ns)
            .u32(data.len() as u32)
            .u32(original)
            .bytes(data);
        b.opt(EPB_FLAGS, &direction.flags().to_le_bytes());
        b.end_options();
        self.put(&b)
    }

    /// Closes an interface's account: times, packets and kernel drops, with
    /// the drops also said in a comment.
    pub fn statistics(
        &mut self,
        interface: u32,
        stats: InterfaceStats,
        comment: &str,
    ) -> io::Result<()> {
        let mut b = Block::new(ISB);
        b.u32(interface).ts(stats.end_ns);
        b.comment(comment);
        b.ts_opt(ISB_STARTTIME, stats.start_ns);
        b.ts_opt(ISB_ENDTIME, stats.end_ns);
        b.opt(ISB_IFRECV, &stats.received.to_le_bytes());
        b.opt(ISB_OSDROP, &stats.dropped.to_le_bytes());
        b.end_options();
        self.put(&b)?;
        Ok(())
    }

    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}
