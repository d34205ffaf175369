//! One node's part of a capture: a packet socket per selected pod interface
//! (interfaces are asked for again while the capture runs, so a pod that
//! starts mid-capture joins it), every packet written to one pcapng file, and
//! the capture stopped by its limits or by the caller, with the reason said.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::error::{CaptureError, Result};
use super::filter::Filter;
use super::limits::Limits;
use super::pcapng::{Direction, InterfaceInfo, InterfaceStats, Writer};
use super::ring;
use super::socket::PacketSocket;
use crate::enrich::Clock;
use flowlake_schemas::capture::InterfaceRow;

/// A pod interface to capture on, with whose it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Target {
    /// Host-side interface name.
    pub interface: String,
    pub namespace: String,
    pub pod: String,
    pub node: String,
}

/// What is captured and under which limits.
#[derive(Debug, Clone)]
pub struct CaptureSpec {
    pub id: String,
    pub filter: Filter,
    pub limits: Limits,
    pub requested_by: String,
}

/// Where and how the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Network namespace of the pod interfaces (bind-mounted netns file); None = ours.
    pub netns: Option<PathBuf>,
    /// How often the selection is asked for new interfaces.
    pub refresh_every: Duration,
    /// Counts while the capture runs, read by whoever reports its status.
    pub progress: Arc<Progress>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            netns: None,
            refresh_every: Duration::from_secs(1),
            progress: Arc::default(),
        }
    }
}

/// What a running capture has written so far (the kernel's drops are read
/// when it ends).
#[derive(Debug, Default)]
pub struct Progress {
    pub packets: AtomicU64,
    /// Bytes on the wire (original lengths).
    pub bytes: AtomicU64,
    /// The interfaces captured so far, in the order they joined, with their
    /// counts (updated after each read of a socket's queue; `end` is empty
    /// while the interface is open).
    pub interfaces: Mutex<Vec<InterfaceRow>>,
}

impl Progress {
    /// A copy of the interfaces captured so far.
    pub fn interfaces(&self) -> Vec<InterfaceRow> {
        self.rows().clone()
    }

    fn rows(&self) -> std::sync::MutexGuard<'_, Vec<InterfaceRow>> {
        self.interfaces.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Interface `index`'s row as `s` says, `end` when it closed.
    fn update(&self, index: usize, s: &InterfaceSummary, end: Option<DateTime<Utc>>) {
        if let Some(row) = self.rows().get_mut(index) {
            row.packets = s.packets_in + s.packets_out;
            row.bytes = s.bytes_in + s.bytes_out;
            row.lost = s.lost;
            if let Some(end) = end {
                row.end = end.to_rfc3339();
            }
        }
    }
}

/// Why a capture stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Duration,
    MaxBytes,
    MaxPackets,
    /// Stopped by the caller (capture deleted, agent shutting down).
    Stopped,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Duration => "duration",
            StopReason::MaxBytes => "max_bytes",
            StopReason::MaxPackets => "max_packets",
            StopReason::Stopped => "stopped",
        }
    }
}

/// One interface's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceSummary {
    pub target: Target,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Packets and bytes on the wire (original lengths), from the pod / to the pod.
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Packets the kernel accepted through the filter but could not deliver.
    pub lost: u64,
}

/// How a node's capture went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub id: String,
    pub reason: StopReason,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub packets: u64,
    /// Bytes of the pcapng file.
    pub file_bytes: u64,
    pub lost: u64,
    pub interfaces: Vec<InterfaceSummary>,
    /// Interfaces that could not be opened, with why.
    pub skipped: Vec<(Target, String)>,
}

struct Open {
    socket: PacketSocket,
    id: u32,
    summary: InterfaceSummary,
    received: u64,
    closed: bool,
}

fn ns(t: DateTime<Utc>) -> u64 {
    t.timestamp_nanos_opt().unwrap_or(0).max(0) as u64
}

/// The comments at the top of a node's file.
pub fn section_comments(spec: &CaptureSpec, node: &str) -> Vec<String> {
    let l = spec.limits;
    vec![
        format!("flowlake capture {} on node {node}", spec.id),
        format!("requested by: {}", spec.requested_by),
        format!(
            "filter: {}",
            if spec.filter.source.is_empty() {
                "(none)"
            } else {
                &spec.filter.source
            }
        ),
        format!(
            "limits: duration={} max_bytes={} max_packets={} snaplen={}",
            humantime::format_duration(l.duration),
            l.max_bytes,
            l.max_packets,
            l.snaplen
        ),
    ]
}

/// Runs a capture on this node until a limit is reached or `stop` is set.
/// `targets` is asked for the interfaces to capture at the start and every
/// `refresh_every`; interfaces are never dropped from a running capture.
pub fn run<W: Write>(
    spec: &CaptureSpec,
    config: &EngineConfig,
    node: &str,
    targets: &mut dyn FnMut() -> Vec<Target>,
    out: W,
    clock: Clock,
    stop: &AtomicBool,
) -> Result<(Summary, W)> {
    let start = clock();
    let deadline = start + spec.limits.duration;
    let mut w = Writer::new(out, &section_comments(spec, node))
        .map_err(|e| CaptureError::io("writing the capture file", e))?;
    let mut open: Vec<Open> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut skipped = Vec::new();
    let mut buf = vec![0u8; spec.limits.snaplen as usize];
    let mut packets = 0u64;
    let mut next_refresh = start;
    let reason = 'capture: loop {
        let now = clock();
        if stop.load(Ordering::Relaxed) {
            break StopReason::Stopped;
        }
        if now >= deadline {
            break StopReason::Duration;
        }
        if now >= next_refresh {
            next_refresh = now + config.refresh_every;
            for t in targets() {
                if !seen.insert(t.interface.clone()) {
                    continue;
                }
                match PacketSocket::open(
                    config.netns.as_deref(),
                    &t.interface,
                    &spec.filter,
                    spec.limits.snaplen,
                ) {
                    Ok(socket) => {
                        let id = w
                            .interface(&InterfaceInfo {
                                name: format!("{}/{}@{}", t.namespace, t.pod, t.node),
                                description: format!(
                                    "namespace={} pod={} node={} interface={}",
                                    t.namespace, t.pod, t.node, t.interface
                                ),
                                snaplen: spec.limits.snaplen,
                            })
                            .map_err(|e| CaptureError::io("writing the capture file", e))?;
                        tracing::info!(capture = %spec.id, interface = %t.interface, pod = %t.pod, "capturing");
                        let start = clock();
                        config.progress.rows().push(InterfaceRow {
                            namespace: t.namespace.clone(),
                            pod: t.pod.clone(),
                            interface: t.interface.clone(),
                            start: start.to_rfc3339(),
                            end: String::new(),
                            packets: 0,
                            bytes: 0,
                            lost: 0,
                        });
                        open.push(Open {
                            socket,
                            id,
                            summary: InterfaceSummary {
                                target: t,
                                start,
                                end: start,
                                packets_in: 0,
                                packets_out: 0,
                                bytes_in: 0,
                                bytes_out: 0,
                                lost: 0,
                            },
                            received: 0,
                            closed: false,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(capture = %spec.id, interface = %t.interface, error = %e, "cannot capture");
                        skipped.push((t, e.to_string()));
                    }
                }
            }
        }
        wait_readable(&open, Duration::from_millis(100));
        if let Some(r) = drain(
            spec,
            config,
            &mut open,
            &mut w,
            &mut buf,
            &mut packets,
            &clock,
        )? {
            break 'capture r;
        }
    };
    // What the kernel queued before the stop is still part of the window:
    // the ring hands over a partly filled block once `RETIRE` has passed.
    let reason = match reason {
        StopReason::Duration | StopReason::Stopped => {
            if !open.is_empty() {
                std::thread::sleep(ring::RETIRE * 2 + Duration::from_millis(10));
            }
            drain(
                spec,
                config,
                &mut open,
                &mut w,
                &mut buf,
                &mut packets,
                &clock,
            )?
            .unwrap_or(reason)
        }
        r => r,
    };
    let end = clock();
    let mut lost = 0;
    let mut interfaces = Vec::with_capacity(open.len());
    for mut o in open {
        if let Ok((accepted, dropped)) = o.socket.statistics() {
            o.received += accepted;
            o.summary.lost += dropped;
        }
        if !o.closed {
            o.summary.end = end;
        }
        lost += o.summary.lost;
        let stats = InterfaceStats {
            start_ns: ns(o.summary.start),
            end_ns: ns(o.summary.end),
            received: o.received,
            dropped: o.summary.lost,
        };
        let comment = statistics_comment(&spec.id, reason, o.summary.lost);
        w.statistics(o.id, stats, &comment)
            .map_err(|e| CaptureError::io("writing the capture file", e))?;
        interfaces.push(o.summary);
    }
    w.flush()
        .map_err(|e| CaptureError::io("writing the capture file", e))?;
    let summary = Summary {
        id: spec.id.clone(),
        reason,
        start,
        end,
        packets,
        file_bytes: w.bytes_written(),
        lost,
        interfaces,
        skipped,
    };
    Ok((summary, w.into_inner()))
}

/// The comment of an interface's closing statistics block.
fn statistics_comment(id: &str, reason: StopReason, lost: u64) -> String {
    format!(
        "capture {id} stopped by {}; {lost} packets the kernel could not deliver",
        reason.as_str()
    )
}

/// The room the closing statistics blocks of `open` interfaces take, at
/// their longest: packets stop before it is needed, so the whole file stays
/// within `max_bytes`.
fn closing_room<W: Write>(spec: &CaptureSpec, open: usize) -> u64 {
    let longest = statistics_comment(&spec.id, StopReason::MaxPackets, u64::MAX);
    open as u64 * Writer::<W>::statistics_block_len(&longest)
}

/// Reads every queued packet of every socket; Some when a limit stopped it.
fn drain<W: Write>(
    spec: &CaptureSpec,
    config: &EngineConfig,
    open: &mut [Open],
    w: &mut Writer<W>,
    buf: &mut [u8],
    packets: &mut u64,
    clock: &Clock,
) -> Result<Option<StopReason>> {
    let room = closing_room::<W>(spec, open.len());
    for o in open.iter_mut().filter(|o| !o.closed) {
        let stopped = read_queue(spec, config, o, w, buf, packets, clock, room)?;
        let end = o.closed.then_some(o.summary.end);
        config.progress.update(o.id as usize, &o.summary, end);
        if stopped.is_some() {
            return Ok(stopped);
        }
    }
    Ok(None)
}

/// Reads one socket's queued packets, leaving `room` bytes under the byte
/// limit; Some when a limit stopped it.
#[allow(clippy::too_many_arguments)]
fn read_queue<W: Write>(
    spec: &CaptureSpec,
    config: &EngineConfig,
    o: &mut Open,
    w: &mut Writer<W>,
    buf: &mut [u8],
    packets: &mut u64,
    clock: &Clock,
    room: u64,
) -> Result<Option<StopReason>> {
    let write_err = |e| CaptureError::io("writing the capture file", e);
    loop {
        let got = match o.socket.recv(buf) {
            Ok(Some(got)) => got,
            Ok(None) => break,
            Err(e) => {
                // The interface went away (its pod ended): its account closes.
                tracing::info!(capture = %spec.id, interface = %o.summary.target.interface, error = %e, "interface closed");
                if let Ok((accepted, dropped)) = o.socket.statistics() {
                    o.received += accepted;
                    o.summary.lost += dropped;
                }
                o.summary.end = clock();
                o.closed = true;
                return Ok(None);
            }
        };
        let block = Writer::<W>::packet_block_len(got.captured);
        if w.bytes_written() + block + room > spec.limits.max_bytes {
            return Ok(Some(StopReason::MaxBytes));
        }
        w.packet(
            o.id,
            got.ts_ns,
            got.original,
            &buf[..got.captured],
            got.direction,
        )
        .map_err(write_err)?;
        let s = &mut o.summary;
        match got.direction {
            Direction::Inbound => {
                s.packets_in += 1;
                s.bytes_in += u64::from(got.original);
            }
            Direction::Outbound => {
                s.packets_out += 1;
                s.bytes_out += u64::from(got.original);
            }
        }
        *packets += 1;
        config.progress.packets.fetch_add(1, Ordering::Relaxed);
        config
            .progress
            .bytes
            .fetch_add(u64::from(got.original), Ordering::Relaxed);
        if *packets >= spec.limits.max_packets {
            return Ok(Some(StopReason::MaxPackets));
        }
    }
    Ok(None)
}

/// Waits until a socket has something queued or `timeout` passes.
fn wait_readable(open: &[Open], timeout: Duration) {
    let mut fds: Vec<libc::pollfd> = open
        .iter()
        .filter(|o| !o.closed)
        .map(|o| libc::pollfd {
            fd: o.socket.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    if fds.is_empty() {
        std::thread::sleep(timeout);
        return;
    }
    // SAFETY: a valid array of pollfd and its length.
    unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            timeout.as_millis() as i32,
        )
    };
}
