//! Userspace side of the flow programs' per-CPU cache and jiffies clock
//! (ebpf/flows.bpf.c).
//!
//! **Cache.** Each CPU keeps the packets of recent keys in one of two banks
//! of `flow_cache` slots, flushed to the `flows` hash only when another key
//! takes the slot. [`FlowCache::take`] switches the programs to the other bank
//! (`cache_bank`), waits until no program can still be writing the old one
//! (a map-in-map update returns only after an RCU grace period: the kernel's
//! `maybe_wait_bpf_programs`), then reads and empties the old bank. Every
//! packet is so counted exactly once: in the hash, in a bank taken here, or in
//! the current bank (taken at the next switch).
//!
//! **Clock.** Flow times are jiffies (`bpf_jiffies64`, inlined by the verifier
//! into one load). [`JiffiesClock`] turns durations into ticks from samples of
//! jiffies and boot time taken at one instant by the `clock_sample` program, run with
//! `BPF_PROG_TEST_RUN`.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use aya::maps::{Array, MapData, PerCpuArray, PerCpuValues};

use crate::abi::{CACHE_SLOTS, ClockSample, FlowCacheSlot, FlowKey, FlowStats};
use crate::batch::{ElemAttr, sys_bpf, sys_bpf_ret};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
}

fn create_map(attr: &mut MapCreateAttr) -> io::Result<OwnedFd> {
    let fd = sys_bpf_ret(BPF_MAP_CREATE, attr)?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits for every running BPF program to finish: updating an array of maps
/// returns after an RCU grace period (`maybe_wait_bpf_programs`).
pub struct Fence {
    outer: OwnedFd,
    inner: OwnedFd,
}

impl Fence {
    pub fn new() -> io::Result<Self> {
        let inner = create_map(&mut MapCreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            ..Default::default()
        })?;
        let outer = create_map(&mut MapCreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY_OF_MAPS,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            inner_map_fd: inner.as_raw_fd() as u32,
            ..Default::default()
        })?;
        Ok(Fence { outer, inner })
    }

    /// Returns once no BPF program that started before the call still runs.
    pub fn wait(&self) -> io::Result<()> {
        let key = 0u32;
        let value = self.inner.as_raw_fd() as u32;
        let mut attr = ElemAttr {
            map_fd: self.outer.as_raw_fd() as u32,
            key: (&key as *const u32) as u64,
            value: (&value as *const u32) as u64,
            ..Default::default()
        };
        sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr)
    }
}

/// The per-CPU flow cache's maps (see the module docs).
pub struct FlowCache {
    bank: Array<MapData, u32>,
    slots: PerCpuArray<MapData, FlowCacheSlot>,
    fence: Fence,
    current: u32,
    cpus: usize,
}

fn map_err(e: aya::maps::MapError) -> io::Error {
    io::Error::other(e)
}

impl FlowCache {
    pub fn new(
        bank: Array<MapData, u32>,
        slots: PerCpuArray<MapData, FlowCacheSlot>,
        cpus: usize,
    ) -> io::Result<Self> {
        let current = bank.get(&0, 0).map_err(map_err)? & 1;
        Ok(FlowCache {
            bank,
            slots,
            fence: Fence::new()?,
            current,
            cpus,
        })
    }

    /// Switches banks and returns the packets counted in the old one, one
    /// entry per key (copies of all CPUs and slots merged), emptying it.
    pub fn take(&mut self) -> io::Result<Vec<(FlowKey, FlowStats)>> {
        let old = self.current;
        self.current = old ^ 1;
        self.bank.set(0, self.current, 0).map_err(map_err)?;
        self.fence.wait()?;
        let mut out: HashMap<FlowKey, FlowStats> = HashMap::new();
        for i in old * CACHE_SLOTS..(old + 1) * CACHE_SLOTS {
            let values = self.slots.get(&i, 0).map_err(map_err)?;
            let mut used = false;
            for slot in values.iter().filter(|s| s.stats.packets > 0) {
                used = true;
                merge_into(&mut out, slot.key, slot.stats);
            }
            if used {
                let empty = PerCpuValues::try_from(vec![FlowCacheSlot::default(); self.cpus])?;
                self.slots.set(i, empty, 0).map_err(map_err)?;
            }
        }
        Ok(out.into_iter().collect())
    }
}

/// Adds `stats` to the entry of `key` ([`FlowStats::merge`] rules).
pub fn merge_into(into: &mut HashMap<FlowKey, FlowStats>, key: FlowKey, stats: FlowStats) {
    into.entry(key)
        .and_modify(|s| *s = FlowStats::merge(&[*s, stats]))
        .or_insert(stats);
}

/// Jiffies ↔ time: the latest sample, and a tick length
/// measured between the first and the latest sample (snapped to 1 s / HZ of
/// the usual CONFIG_HZ values when it is that close).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JiffiesClock {
    first: ClockSample,
    latest: ClockSample,
}

/// CONFIG_HZ choices of x86 and arm64.
const USUAL_HZ: [u64; 4] = [100, 250, 300, 1000];

impl JiffiesClock {
    pub fn new(first: ClockSample) -> Self {
        JiffiesClock {
            first,
            latest: first,
        }
    }

    /// Records a newer sample.
    pub fn update(&mut self, s: ClockSample) {
        if s.jiffies >= self.latest.jiffies && s.boot_ns >= self.latest.boot_ns {
            self.latest = s;
        }
    }

    /// Nanoseconds per jiffy; None until the samples are 10 ticks apart.
    pub fn tick_ns(&self) -> Option<f64> {
        let dj = self.latest.jiffies.checked_sub(self.first.jiffies)?;
        if dj < 10 {
            return None;
        }
        let db = self.latest.boot_ns.saturating_sub(self.first.boot_ns) as f64;
        // The jiffies difference is exact to one tick either way.
        let snapped = USUAL_HZ
            .iter()
            .map(|hz| 1e9 / *hz as f64)
            .find(|t| (db / t - dj as f64).abs() <= 1.5);
        Some(snapped.unwrap_or(db / dj as f64))
    }

    /// Jiffies value before which a flow has been idle for `idle` at the
    /// latest sample (None before calibration).
    pub fn idle_cutoff(&self, idle: Duration) -> Option<u64> {
        let t = self.tick_ns()?;
        let ticks = (idle.as_nanos() as f64 / t).ceil() as u64;
        Some(self.latest.jiffies.saturating_sub(ticks))
    }
}

/// Samples both clocks at one instant by running the `clock_sample` program
/// once and reading what it wrote.
pub fn sample_clock(
    prog: BorrowedFd<'_>,
    map: &Array<MapData, ClockSample>,
) -> io::Result<ClockSample> {
    // A classifier test run needs at least an Ethernet header.
    let data = [0u8; 64];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_fd().as_raw_fd() as u32,
        data_size_in: data.len() as u32,
        data_in: data.as_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    sys_bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    map.get(&0, 0).map_err(map_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(jiffies: u64, boot_ns: u64) -> ClockSample {
        ClockSample { jiffies, boot_ns }
    }

    #[test]
    fn tick_length_snaps_to_hz() {
        let mut c = JiffiesClock::new(s(1_000, 5_000_000_000));
        assert_eq!(c.tick_ns(), None, "one sample: no rate");
        // 250 Hz, 2.5 s later, sampled 1.6 ms into a tick: 625 or 626 ticks.
        c.update(s(1_625, 7_501_600_000));
        assert_eq!(c.tick_ns(), Some(4_000_000.0));
        // 5 s idle = 1250 ticks before the latest sample.
        assert_eq!(c.idle_cutoff(Duration::from_secs(5)), Some(375));
        // An unusual HZ keeps the measured rate.
        let mut odd = JiffiesClock::new(s(0, 0));
        odd.update(s(640, 2_500_000_000));
        assert_eq!(odd.tick_ns(), Some(2_500_000_000.0 / 640.0));
    }

    #[test]
    fn older_samples_are_ignored() {
        let mut c = JiffiesClock::new(s(100, 1_000_000_000));
        c.update(s(200, 1_400_000_000));
        c.update(s(150, 1_200_000_000));
        assert_eq!(c.latest, s(200, 1_400_000_000));
    }

    #[test]
    fn cached_packets_merge_with_their_key() {
        let k = FlowKey {
            src_port: 1,
            ..FlowKey::default()
        };
        let a = FlowStats {
            packets: 2,
            bytes: 100,
            first_jiffies: 10,
            last_jiffies: 20,
            handshake_us: 0,
            tcp_flags: 0x10,
            ..FlowStats::default()
        };
        let b = FlowStats {
            packets: 1,
            bytes: 60,
            first_jiffies: 5,
            last_jiffies: 30,
            handshake_us: 9,
            tcp_flags: 0x01,
            ..FlowStats::default()
        };
        let mut m = HashMap::new();
        merge_into(&mut m, k, a);
        merge_into(&mut m, k, b);
        merge_into(&mut m, FlowKey::default(), a);
        assert_eq!(m.len(), 2);
        assert_eq!(m[&k], FlowStats::merge(&[a, b]));
        assert_eq!(m[&k].packets, 3);
        assert_eq!(m[&k].first_jiffies, 5);
        assert_eq!(m[&k].last_jiffies, 30);
    }
}
