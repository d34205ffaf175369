//! The receive ring of a packet socket (TPACKET_V3): the kernel writes
//! packets into blocks of a buffer shared with this process and hands a block
//! over when it is full or `RETIRE` has passed, so reading costs a few
//! syscalls per block instead of one per packet (libpcap reads the same way).

use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{Ordering, fence};
use std::time::Duration;

use super::pcapng::Direction;
use super::socket::{Received, setopt};

/// Bytes of ring per socket (the same 8 MiB the socket's buffer had).
const RING_BYTES: usize = 8 << 20;
/// Smallest block; a block holds at least one packet cut to the snaplen.
const MIN_BLOCK: usize = 1 << 20;
/// How long the kernel keeps a partly filled block before handing it over.
pub const RETIRE: Duration = Duration::from_millis(50);
/// Frame size the V3 request must name (V3 packs packets of any size).
const FRAME: usize = 2048;
const PACKET_OUTGOING: u8 = 4;

/// The mapped ring and the reader's place in it.
#[derive(Debug)]
pub struct Ring {
    map: NonNull<u8>,
    block_size: usize,
    blocks: usize,
    /// Block being read.
    current: usize,
    /// Within the current block, once handed over: offset of the next
    /// packet and packets left.
    cursor: Option<(usize, u32)>,
}

// SAFETY: the mapping belongs to this value alone; the kernel's side is
// synchronised by the block status words.
unsafe impl Send for Ring {}

/// Block size and count for packets cut to `snaplen` bytes.
fn geometry(snaplen: u32) -> (usize, usize) {
    let need = snaplen as usize + libc::TPACKET3_HDRLEN + 64;
    let block = need.max(MIN_BLOCK).next_power_of_two();
    (block, (RING_BYTES / block).max(4))
}

impl Ring {
    /// Switches `fd` (a packet socket not bound yet) to TPACKET_V3 and maps
    /// its receive ring.
    pub fn new(fd: RawFd, snaplen: u32) -> io::Result<Ring> {
        let version = libc::tpacket_versions::TPACKET_V3 as i32;
        setopt(fd, libc::SOL_PACKET, libc::PACKET_VERSION, &version)?;
        let (block_size, blocks) = geometry(snaplen);
        let request = libc::tpacket_req3 {
            tp_block_size: block_size as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: FRAME as u32,
            tp_frame_nr: (block_size / FRAME * blocks) as u32,
            tp_retire_blk_tov: RETIRE.as_millis() as u32,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setopt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &request)?;
        // SAFETY: maps the ring the kernel just allocated for `fd`.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                block_size * blocks,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Ring {
            map: NonNull::new(map.cast()).expect("mmap returned a mapping"),
            block_size,
            blocks,
            current: 0,
            cursor: None,
        })
    }

    fn block(&self) -> *mut libc::tpacket_block_desc {
        // SAFETY: `current` < `blocks`, so the offset is inside the mapping.
        unsafe { self.map.as_ptr().add(self.current * self.block_size).cast() }
    }

    /// The next packet, copied into `buf` (cut to its length); None when the
    /// kernel has handed over nothing more.
    pub fn next(&mut self, buf: &mut [u8]) -> Option<Received> {
        loop {
            let block = self.block();
            let (offset, left) = match self.cursor {
                Some(c) => c,
                None => {
                    // SAFETY: the block's header lies in the mapping; the
                    // status word is written by the kernel, hence volatile.
                    let header = unsafe { &raw mut (*block).hdr.bh1 };
                    let status = unsafe { (&raw const (*header).block_status).read_volatile() };
                    if status & libc::TP_STATUS_USER == 0 {
                        return None;
                    }
                    fence(Ordering::Acquire);
                    // SAFETY: the block is ours until handed back.
                    unsafe { ((*header).offset_to_first_pkt as usize, (*header).num_pkts) }
                }
            };
            if left == 0 {
                fence(Ordering::Release);
                // SAFETY: hands the block back to the kernel.
                unsafe {
                    (&raw mut (*block).hdr.bh1.block_status).write_volatile(libc::TP_STATUS_KERNEL);
                }
                self.current = (self.current + 1) % self.blocks;
                self.cursor = None;
                continue;
            }
            // SAFETY: the kernel placed a tpacket3_hdr at `offset` of this
            // block, its sockaddr_ll after the aligned header, and
            // `tp_snaplen` bytes at `tp_mac`, all inside the block.
            let got = unsafe {
                let base = block.cast::<u8>().add(offset);
                let h: libc::tpacket3_hdr = base.cast::<libc::tpacket3_hdr>().read_unaligned();
                let sll_at = libc::TPACKET_ALIGN(size_of::<libc::tpacket3_hdr>());
                let sll: libc::sockaddr_ll = base
                    .add(sll_at)
                    .cast::<libc::sockaddr_ll>()
                    .read_unaligned();
                let captured = (h.tp_snaplen as usize).min(buf.len());
                std::ptr::copy_nonoverlapping(
                    base.add(usize::from(h.tp_mac)),
                    buf.as_mut_ptr(),
                    captured,
                );
                self.cursor = Some((offset + h.tp_next_offset as usize, left - 1));
                Received {
                    captured,
                    original: h.tp_len,
                    ts_ns: u64::from(h.tp_sec) * 1_000_000_000 + u64::from(h.tp_nsec),
                    direction: if sll.sll_pkttype == PACKET_OUTGOING {
                        Direction::Outbound
                    } else {
                        Direction::Inbound
                    },
                }
            };
            return Some(got);
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `new`, once.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.block_size * self.blocks) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_hold_a_packet_cut_to_the_snaplen() {
        assert_eq!(geometry(128), (1 << 20, 8));
        assert_eq!(geometry(262_144), (1 << 20, 8));
        let (block, blocks) = geometry(4 << 20);
        assert!(block >= (4 << 20) + libc::TPACKET3_HDRLEN);
        assert_eq!(blocks, 4);
        assert_eq!(block % FRAME, 0);
    }
}
