//! Batch map operations (`BPF_MAP_LOOKUP_AND_DELETE_BATCH`, `BPF_MAP_LOOKUP_BATCH`)
//! and the atomic single-entry `BPF_MAP_LOOKUP_AND_DELETE_ELEM`, straight
//! through bpf(2): aya 0.14 exposes neither.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;

/// Entries fetched per syscall.
const CHUNK: usize = 4096;

#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
pub(crate) struct ElemAttr {
    pub(crate) map_fd: u32,
    pub(crate) _pad: u32,
    pub(crate) key: u64,
    pub(crate) value: u64,
    pub(crate) flags: u64,
}

pub(crate) fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<()> {
    sys_bpf_ret(cmd, attr).map(|_| ())
}

/// bpf(2) returning the syscall's value (a new fd for the create commands).
pub(crate) fn sys_bpf_ret<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: attr points at a live, correctly laid out bpf_attr prefix of size_of::<T>().
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            size_of::<T>() as u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Reads (and with `delete`, removes) every entry of a hash map, appending to `out`.
pub fn drain<K: aya::Pod + Default, V: aya::Pod + Default>(
    fd: BorrowedFd<'_>,
    delete: bool,
    out: &mut Vec<(K, V)>,
) -> io::Result<()> {
    drain_percpu(fd, delete, 1, |v: &[V]| v[0], out)
}

/// `drain` for a per-CPU hash map: the kernel returns `cpus` (possible CPUs)
/// copies of each value, folded into one by `merge`. With `cpus == 1` it reads
/// an ordinary map. Per-CPU values must be a multiple of 8 bytes (the kernel's
/// per-copy stride).
pub fn drain_percpu<K: aya::Pod + Default, V: aya::Pod + Default>(
    fd: BorrowedFd<'_>,
    delete: bool,
    cpus: usize,
    merge: impl Fn(&[V]) -> V,
    out: &mut Vec<(K, V)>,
) -> io::Result<()> {
    check_stride::<V>(cpus)?;
    let cmd = if delete {
        BPF_MAP_LOOKUP_AND_DELETE_BATCH
    } else {
        BPF_MAP_LOOKUP_BATCH
    };
    let mut chunk = CHUNK;
    let mut keys = vec![K::default(); chunk];
    let mut values = vec![V::default(); chunk * cpus];
    let mut token = [0u64; 2];
    let mut first = true;
    loop {
        let mut next = [0u64; 2];
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token.as_ptr() as u64 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        let res = sys_bpf(cmd, &mut attr);
        let n = (attr.count as usize).min(chunk);
        out.extend(
            keys[..n]
                .iter()
                .copied()
                .zip(values[..n * cpus].chunks_exact(cpus).map(&merge)),
        );
        match res {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && n == 0 => {
                // One bucket holds more entries than fit: grow and retry.
                chunk *= 2;
                keys.resize(chunk, K::default());
                values.resize(chunk * cpus, V::default());
                continue;
            }
            Err(e) => return Err(e),
        }
        token = next;
        first = false;
    }
}

fn check_stride<V>(cpus: usize) -> io::Result<()> {
    if cpus == 0 || (cpus > 1 && !size_of::<V>().is_multiple_of(8)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "per-CPU values must be a multiple of 8 bytes, for at least one CPU",
        ));
    }
    Ok(())
}

/// Atomically reads and removes one entry; `None` when it is gone.
pub fn take<K: aya::Pod, V: aya::Pod + Default>(
    fd: BorrowedFd<'_>,
    key: &K,
) -> io::Result<Option<V>> {
    take_percpu(fd, key, 1, |v: &[V]| v[0])
}

/// `take` for a per-CPU hash map (see `drain_percpu`).
pub fn take_percpu<K: aya::Pod, V: aya::Pod + Default>(
    fd: BorrowedFd<'_>,
    key: &K,
    cpus: usize,
    merge: impl Fn(&[V]) -> V,
) -> io::Result<Option<V>> {
    check_stride::<V>(cpus)?;
    let mut values = vec![V::default(); cpus];
    let mut attr = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: (key as *const K) as u64,
        value: values.as_mut_ptr() as u64,
        ..Default::default()
    };
    match sys_bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut attr) {
        Ok(()) => Ok(Some(merge(&values))),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}
