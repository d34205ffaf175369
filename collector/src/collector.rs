//! The datapath's run loop and public handle: [`Datapath::start`] loads and
//! attaches the programs on a dedicated thread (inside the configured network
//! namespace), follows interfaces through rtnetlink, evicts flows on the
//! active and idle timeouts and sends `FlowRecord` batches on a bounded channel.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use flowlake_schemas::FlowRecord;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::abi::{self, DnsEvent, DropKey, DropStats, FlowKey, FlowStats, TcpKey, TcpStats};
use crate::batch;
use crate::btf::DropReasons;
use crate::config::DatapathConfig;
use crate::datapath::Programs;
use crate::dns::DnsTracker;
use crate::error::{CollectorError, Result};
use crate::flowcache::{self, JiffiesClock};
use crate::metrics::{DatapathMetrics, LossKind};
use crate::netlink::{LinkEvent, LinkWatcher};
use crate::records::{BootClock, Iface, RecordContext, local_addresses, observation_point};

/// A running datapath. Stop it with [`Datapath::stop`] (also done on drop):
/// the last interval is flushed, then programs and maps are removed.
pub struct Datapath {
    stop: Arc<AtomicBool>,
    interfaces: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Datapath {
    /// Starts the datapath; returns once the programs are loaded and the first
    /// interfaces attached. Records arrive on the returned receiver.
    pub fn start(
        config: DatapathConfig,
        metrics: DatapathMetrics,
    ) -> Result<(Datapath, mpsc::Receiver<Vec<FlowRecord>>)> {
        let (tx, rx) = mpsc::channel(config.channel_batches.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let interfaces = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop2, ifs2) = (stop.clone(), interfaces.clone());
        let thread = std::thread::Builder::new()
            .name("flowlake-datapath".into())
            .spawn(move || {
                let mut run = match Run::setup(config, metrics, tx, ifs2) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                };
                let _ = ready_tx.send(Ok(()));
                run.run(&stop2)
            })
            .map_err(|e| CollectorError::io("spawn datapath thread", e))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok((
                Datapath {
                    stop,
                    interfaces,
                    thread: Some(thread),
                },
                rx,
            )),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(CollectorError::Config("datapath thread died".into())),
        }
    }

    /// Names of the interfaces currently attached.
    pub fn interfaces(&self) -> Vec<String> {
        self.interfaces
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Flushes the current interval, detaches and unloads everything.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| CollectorError::Config("datapath thread panicked".into()))?,
            None => Ok(()),
        }
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Enters the network namespace at `path` (this thread only).
fn enter_netns(path: &std::path::Path) -> Result<()> {
    let f = std::fs::File::open(path)
        .map_err(|e| CollectorError::io(format!("open {}", path.display()), e))?;
    // SAFETY: setns on a valid namespace fd affects only the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(CollectorError::io("setns", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn own_netns_inode() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net").map_or(0, |m| m.ino() as u32)
}

struct Run {
    config: DatapathConfig,
    metrics: DatapathMetrics,
    tx: mpsc::Sender<Vec<FlowRecord>>,
    programs: Programs,
    links: LinkWatcher,
    reasons: DropReasons,
    reason_names: HashMap<u32, Arc<str>>,
    ifaces: HashMap<u32, Iface>,
    removed: Vec<u32>,
    published: Arc<Mutex<Vec<String>>>,
    dns: DnsTracker,
    netns: u32,
    cluster: Arc<str>,
    node: Arc<str>,
    interval_start: DateTime<Utc>,
    /// Packets taken from the flow cache by idle scans, per key, not yet
    /// evicted with their key's hash entry.
    pending: HashMap<FlowKey, FlowStats>,
    /// Flow times (jiffies) against boot time; None without flow programs.
    clock: Option<JiffiesClock>,
    /// The node's own addresses, read at each eviction (sending rows).
    local: HashSet<IpAddr>,
}

impl Run {
    fn setup(
        config: DatapathConfig,
        metrics: DatapathMetrics,
        tx: mpsc::Sender<Vec<FlowRecord>>,
        published: Arc<Mutex<Vec<String>>>,
    ) -> Result<Self> {
        if let Some(ns) = &config.netns {
            enter_netns(ns)?;
        }
        let reasons = match DropReasons::from_btf_file(&config.btf_path) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "no drop reason names: drops reported by number");
                DropReasons::default()
            }
        };
        let cx = crate::plugins::LoadContext {
            flow_map_entries: config.flow_map_entries,
            min_drop_reason: reasons.min_counted(),
        };
        let mut programs = Programs::load_plugins(&config.plugins, cx, &metrics).0?;
        programs.set_tc_mode(config.tc_mode);
        let links = LinkWatcher::open()?;
        let clock = match programs.clock_sample() {
            Some(Ok(s)) => Some(JiffiesClock::new(s)),
            Some(Err(e)) => return Err(CollectorError::io("sample the flow clock", e)),
            None => None,
        };
        let mut run = Run {
            cluster: config.cluster.as_str().into(),
            node: config.node.as_str().into(),
            config,
            metrics,
            tx,
            programs,
            links,
            reasons,
            reason_names: HashMap::new(),
            ifaces: HashMap::new(),
            removed: Vec::new(),
            published,
            dns: DnsTracker::default(),
            netns: own_netns_inode(),
            interval_start: Utc::now(),
            pending: HashMap::new(),
            clock,
            local: local_addresses(),
        };
        // The initial dump: attach before returning so callers can send traffic.
        for _ in 0..20 {
            if run.handle_links()? > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        run.handle_links()?;
        Ok(run)
    }

    fn run(&mut self, stop: &AtomicBool) -> Result<()> {
        let mut next_active = Instant::now() + self.config.active_timeout;
        let idle_every = (self.config.idle_timeout / 2).max(Duration::from_millis(100));
        let mut next_idle = Instant::now() + idle_every;
        let mut next_order_check = Instant::now() + self.config.attach_check_every;
        while !stop.load(Ordering::SeqCst) {
            self.wait(Duration::from_millis(100));
            self.handle_links()?;
            if Instant::now() >= next_order_check {
                let moved = self.programs.keep_first();
                self.metrics.reattachments.inc_by(moved as u64);
                next_order_check = Instant::now() + self.config.attach_check_every;
            }
            self.read_dns();
            let now = Instant::now();
            if now >= next_active {
                self.evict_all("active");
                next_active = now + self.config.active_timeout;
            } else if now >= next_idle && self.config.idle_timeout < self.config.active_timeout {
                self.evict_idle();
                next_idle = now + idle_every;
            }
        }
        self.read_dns();
        self.evict_all("shutdown");
        info!("datapath stopped; detaching");
        let ids: Vec<u32> = self.ifaces.keys().copied().collect();
        for i in ids {
            self.programs.detach(i);
        }
        Ok(())
    }

    /// Sleeps until a link event or DNS event arrives, or the timeout.
    fn wait(&mut self, timeout: Duration) {
        let mut fds = vec![libc::pollfd {
            fd: self.links.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(ring) = self.programs.dns_ring() {
            fds.push(libc::pollfd {
                fd: ring.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: fds is a valid array of pollfd of the given length.
        unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                timeout.as_millis() as i32,
            )
        };
    }

    /// Applies pending link events; returns how many there were.
    fn handle_links(&mut self) -> Result<usize> {
        let events = self.links.poll_events()?;
        let n = events.len();
        let mut tc_changed = Vec::new();
        for ev in events {
            match ev {
                LinkEvent::New(link) => {
                    let Some(role) = self.config.role(&link) else {
                        continue;
                    };
                    if self.ifaces.contains_key(&link.index) {
                        continue;
                    }
                    match self.programs.attach(link.index, &link.name) {
                        Ok(()) => {
                            info!(interface = %link.name, ifindex = link.index, ?role, "attached");
                            self.ifaces.insert(
                                link.index,
                                Iface {
                                    name: link.name.as_str().into(),
                                    role,
                                },
                            );
                            self.removed.retain(|i| *i != link.index);
                        }
                        Err(e) => {
                            self.metrics.attach_errors.inc();
                            warn!(interface = %link.name, error = %e, "attach failed");
                        }
                    }
                }
                LinkEvent::Removed { index, name } => {
                    if self.ifaces.contains_key(&index) {
                        info!(interface = %name, ifindex = index, "detached");
                        self.programs.detach(index);
                        // Kept until the next full eviction so its flows still get names.
                        self.removed.push(index);
                    }
                }
                LinkEvent::TcChanged { index } => tc_changed.push(index),
            }
        }
        // A CNI's filter may now run ahead of ours: checked at once, not at
        // the next --attach-check-every.
        tc_changed.sort_unstable();
        tc_changed.dedup();
        for index in tc_changed {
            if self.ifaces.contains_key(&index) && !self.removed.contains(&index) {
                let moved = self.programs.keep_first_on(index);
                self.metrics.reattachments.inc_by(moved as u64);
            }
        }
        if n > 0 {
            let mut names: Vec<String> = self
                .ifaces
                .iter()
                .filter(|(i, _)| !self.removed.contains(i))
                .map(|(_, f)| f.name.to_string())
                .collect();
            names.sort();
            self.metrics.attached_interfaces.set(names.len() as i64);
            if let Ok(mut p) = self.published.lock() {
                *p = names;
            }
        }
        Ok(n)
    }

    fn read_dns(&mut self) {
        let Some(ring) = self.programs.dns_ring() else {
            return;
        };
        let mut events = Vec::new();
        while let Some(item) = ring.next() {
            if let Some(ev) = DnsEvent::from_bytes(&item) {
                events.push(ev);
            }
        }
        // Without the dns plugin the ring is drained and nothing parsed.
        if !self.config.plugins.enabled("dns") {
            return;
        }
        for ev in events {
            let Some(iface) = self.ifaces.get(&ev.header.key.ifindex) else {
                continue;
            };
            let point = observation_point(iface.role, ev.header.key.direction);
            if let Some(loss) = self.dns.observe(&ev, point, &self.local) {
                self.metrics.dns_parse_errors.inc();
                self.metrics.lost(LossKind::from(loss)).inc();
            }
        }
    }

    fn context(&self, end: DateTime<Utc>) -> RecordContext<'_> {
        RecordContext {
            cluster: self.cluster.clone(),
            node: self.node.clone(),
            interval_start: self.interval_start,
            interval_end: end,
            ifaces: &self.ifaces,
            netns: self.netns,
            local: &self.local,
        }
    }

    fn reason_name(&mut self, v: u32) -> Arc<str> {
        let reasons = &self.reasons;
        self.reason_names
            .entry(v)
            .or_insert_with(|| reasons.name(v).into())
            .clone()
    }

    /// Evicts every entry of every map: the end of a reporting interval.
    fn evict_all(&mut self, reason: &'static str) {
        let end = Utc::now();
        let clock_cutoff =
            BootClock::boot_now_ns().saturating_sub(self.config.active_timeout.as_nanos() as u64);
        let mut flows: Vec<(FlowKey, FlowStats)> = Vec::new();
        let mut drops: Vec<(DropKey, DropStats)> = Vec::new();
        let mut health: Vec<(TcpKey, TcpStats)> = Vec::new();
        if let Some(fd) = self.programs.tcp_map_fd()
            && let Err(e) = batch::drain(fd, true, &mut health)
        {
            warn!(error = %e, "drain tcp_health");
        }
        // The cache bank first: packets counted after the switch go to the
        // hash (drained next) or the new bank (the next interval).
        let cached = self.programs.take_cached().unwrap_or_else(|e| {
            warn!(error = %e, "take flow cache");
            Vec::new()
        });
        if let Some((fd, cpus)) = self.programs.flow_map()
            && let Err(e) = batch::drain_percpu(fd, true, cpus, FlowStats::merge, &mut flows)
        {
            warn!(error = %e, "drain flows");
        }
        // Cached and pending packets are few keys (at most two banks per
        // CPU per scan): merged into the drained entries by lookup.
        let mut extra = std::mem::take(&mut self.pending);
        for (k, s) in cached {
            flowcache::merge_into(&mut extra, k, s);
        }
        if !extra.is_empty() {
            for (k, s) in flows.iter_mut() {
                if let Some(e) = extra.remove(k) {
                    *s = FlowStats::merge(&[*s, e]);
                }
            }
            flows.extend(extra);
        }
        if let Some(fd) = self.programs.drop_map_fd()
            && let Err(e) = batch::drain(fd, true, &mut drops)
        {
            warn!(error = %e, "drain drops");
        }
        self.read_dns();
        let mut health: HashMap<TcpKey, TcpStats> = health.into_iter().collect();
        let names: Vec<Arc<str>> = drops
            .iter()
            .map(|(k, _)| k.reason)
            .collect::<Vec<_>>()
            .into_iter()
            .map(|r| self.reason_name(r))
            .collect();
        let mut out = Vec::with_capacity(flows.len() + drops.len());
        let mut dns_infos: Vec<_> = flows.iter().map(|(k, _)| self.dns.take(k)).collect();
        let leftovers = self.dns.take_all(clock_cutoff);
        self.local = local_addresses();
        {
            let ctx = self.context(end);
            for ((k, s), infos) in flows.iter().zip(dns_infos.drain(..)) {
                ctx.flow(k, s, &mut health, infos, &mut out);
            }
            for ((k, s), name) in drops.iter().zip(names) {
                out.push(ctx.drop(k, s, name));
            }
            for (k, info) in leftovers {
                out.push(ctx.dns_only(&k, info));
            }
            // Retransmits of a flow without packets at its sending row in
            // this interval: on a row of their own, never dropped.
            for (k, h) in health.iter().filter(|(_, h)| h.retransmits > 0) {
                out.push(ctx.health_only(k, h));
            }
        }
        self.metrics
            .evicted(reason, (flows.len() + drops.len()) as u64);
        self.programs.export_losses(&self.metrics);
        for i in self.removed.drain(..) {
            self.ifaces.remove(&i);
        }
        self.interval_start = end;
        self.send(out);
    }

    /// Evicts flows idle for longer than the idle timeout, one atomic
    /// lookup-and-delete each, with their packets taken from the flow cache.
    fn evict_idle(&mut self) {
        if !self.programs.has_flows() {
            return;
        }
        match self.programs.take_cached() {
            Ok(cached) => {
                for (k, s) in cached {
                    flowcache::merge_into(&mut self.pending, k, s);
                }
            }
            Err(e) => warn!(error = %e, "take flow cache"),
        }
        let cutoff = match (self.programs.clock_sample(), self.clock.as_mut()) {
            (Some(Ok(sample)), Some(clock)) => {
                clock.update(sample);
                clock.idle_cutoff(self.config.idle_timeout)
            }
            (Some(Err(e)), _) => {
                warn!(error = %e, "sample the flow clock");
                None
            }
            _ => None,
        };
        // Not calibrated yet (the first ticks after start): no idle flow.
        let Some(cutoff) = cutoff else {
            return;
        };
        let Some((fd, cpus)) = self.programs.flow_map() else {
            return;
        };
        let mut all: Vec<(FlowKey, FlowStats)> = Vec::new();
        if let Err(e) = batch::drain_percpu(fd, false, cpus, FlowStats::merge, &mut all) {
            warn!(error = %e, "scan flows");
            return;
        }
        let mut taken = Vec::new();
        for (k, s) in all {
            // Pending packets are looked up only for flows idle in the hash.
            if s.last_jiffies >= cutoff
                || self
                    .pending
                    .get(&k)
                    .is_some_and(|p| p.last_jiffies >= cutoff)
            {
                continue;
            }
            let hash = match batch::take_percpu(fd, &k, cpus, FlowStats::merge) {
                Ok(v) => v,
                Err(e) => {
                    warn!(error = %e, "evict idle flow");
                    continue;
                }
            };
            let merged = match (hash, self.pending.remove(&k)) {
                (Some(h), Some(p)) => FlowStats::merge(&[h, p]),
                (Some(v), None) | (None, Some(v)) => v,
                (None, None) => continue,
            };
            taken.push((k, merged));
        }
        let idle: Vec<FlowKey> = self
            .pending
            .iter()
            .filter(|(_, s)| s.last_jiffies < cutoff)
            .map(|(k, _)| *k)
            .collect();
        for k in idle {
            if let Some(s) = self.pending.remove(&k) {
                taken.push((k, s));
            }
        }
        if taken.is_empty() {
            return;
        }
        self.read_dns();
        self.local = local_addresses();
        let infos: Vec<_> = taken.iter().map(|(k, _)| self.dns.take(k)).collect();
        let mut out = Vec::with_capacity(taken.len());
        {
            let ctx = self.context(Utc::now());
            // Health only of the sending rows taken: another row of the
            // same 4-tuple leaves it for its own.
            let mut health = HashMap::new();
            if let Some(tfd) = self.programs.tcp_map_fd() {
                for (k, _) in taken.iter().filter(|(k, _)| k.proto == 6 && ctx.sends(k)) {
                    let tk = abi::tcp_key_of(k);
                    if let Ok(Some(h)) = batch::take::<TcpKey, TcpStats>(tfd, &tk) {
                        health.insert(tk, h);
                    }
                }
            }
            for ((k, s), i) in taken.iter().zip(infos) {
                ctx.flow(k, s, &mut health, i, &mut out);
            }
        }
        self.metrics.evicted("idle", taken.len() as u64);
        self.send(out);
    }

    fn send(&self, out: Vec<FlowRecord>) {
        if out.is_empty() {
            return;
        }
        let n = out.len() as u64;
        match self.tx.try_send(out) {
            Ok(()) => {
                self.metrics.records.inc_by(n);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.lost(LossKind::ChannelFull).inc_by(n);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                debug!(records = n, "record channel closed");
            }
        }
    }
}
