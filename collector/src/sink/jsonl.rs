//! A JSON-lines flow log: one JSON object per flow record, for log shippers (like
//! Hubble's flow exporter). The fields are the table's column names
//! (docs/schema.md); absent values are left out. The file rotates by size: the full
//! file is renamed `<stem>-<UTC time>-<seq>.jsonl`, gzip-compressed (`.jsonl.gz`)
//! unless told not to, and the oldest rotated files beyond the limit are removed.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use flowlake_schemas::{Endpoint, FlowRecord};
use serde::Serialize;

use super::{Sink, SinkLoss};

/// Settings of the JSON-lines sink.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonlConfig {
    /// The file written now; rotated files go next to it.
    pub path: PathBuf,
    /// Rotate when the file reaches this size (bytes); lines are never split.
    pub max_bytes: u64,
    /// Rotated files kept (the oldest beyond are removed); 0 keeps none.
    pub max_files: usize,
    /// Gzip rotated files.
    pub compress: bool,
}

/// The running JSON-lines writer.
pub struct JsonlSink {
    cfg: JsonlConfig,
    out: Option<BufWriter<File>>,
    size: u64,
    seq: u64,
    line: Vec<u8>,
}

impl JsonlSink {
    /// Opens (appends to) the file, creating its directory.
    pub fn open(cfg: JsonlConfig) -> std::io::Result<Self> {
        let mut s = JsonlSink {
            cfg,
            out: None,
            size: 0,
            seq: 0,
            line: Vec::with_capacity(1024),
        };
        s.reopen()?;
        Ok(s)
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        if let Some(dir) = self.cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.cfg.path)?;
        self.size = f.metadata()?.len();
        self.out = Some(BufWriter::with_capacity(1 << 16, f));
        Ok(())
    }

    /// The file's name without `.jsonl` (or its extension), and its directory.
    fn stem(&self) -> (PathBuf, String) {
        let dir = self
            .cfg
            .path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let stem = self
            .cfg
            .path
            .file_stem()
            .map_or_else(|| "flows".into(), |s| s.to_string_lossy().into_owned());
        (dir, stem)
    }

    fn rotate(&mut self, now: DateTime<Utc>) -> std::io::Result<()> {
        if let Some(mut out) = self.out.take() {
            out.flush()?;
        }
        let (dir, stem) = self.stem();
        self.seq += 1;
        let rotated = dir.join(format!(
            "{stem}-{}-{:06}.jsonl",
            now.format("%Y%m%dT%H%M%S%.3fZ"),
            self.seq
        ));
        std::fs::rename(&self.cfg.path, &rotated)?;
        if self.cfg.compress
            && let Err(e) = gzip(&rotated)
        {
            tracing::warn!(error = %e, file = %rotated.display(), "cannot compress rotated flow log: kept as is");
        }
        self.prune(&dir, &stem)?;
        self.reopen()
    }

    /// Removes the oldest rotated files beyond `max_files` (names sort by time).
    fn prune(&self, dir: &Path, stem: &str) -> std::io::Result<()> {
        let prefix = format!("{stem}-");
        let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with(&prefix) && (n.ends_with(".jsonl") || n.ends_with(".jsonl.gz"))
                })
            })
            .collect();
        rotated.sort();
        let excess = rotated.len().saturating_sub(self.cfg.max_files);
        for p in &rotated[..excess] {
            std::fs::remove_file(p)?;
        }
        Ok(())
    }

    fn write_all(&mut self, records: &[FlowRecord], now: DateTime<Utc>) -> std::io::Result<()> {
        if self.out.is_none() {
            self.reopen()?;
        }
        for r in records {
            if self.size >= self.cfg.max_bytes && self.size > 0 {
                self.rotate(now)?;
            }
            self.line.clear();
            serde_json::to_writer(&mut self.line, &Line::from(r))?;
            self.line.push(b'\n');
            let out = self.out.as_mut().expect("opened above");
            out.write_all(&self.line)?;
            self.size += self.line.len() as u64;
        }
        self.out.as_mut().expect("opened above").flush()
    }
}

/// Compresses `path` to `path.gz` and removes `path`.
fn gzip(path: &Path) -> std::io::Result<()> {
    let mut gz_name = path.as_os_str().to_owned();
    gz_name.push(".gz");
    let tmp = PathBuf::from(format!("{}.tmp", gz_name.to_string_lossy()));
    let mut enc = flate2::write::GzEncoder::new(
        BufWriter::new(File::create(&tmp)?),
        flate2::Compression::default(),
    );
    std::io::copy(&mut File::open(path)?, &mut enc)?;
    enc.finish()?.into_inner().map_err(|e| e.into_error())?;
    std::fs::rename(&tmp, PathBuf::from(gz_name))?;
    std::fs::remove_file(path)
}

impl Sink for JsonlSink {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn write(&mut self, records: &[FlowRecord], now: DateTime<Utc>) -> Vec<(SinkLoss, u64)> {
        match self.write_all(records, now) {
            Ok(()) => Vec::new(),
            Err(e) => {
                tracing::error!(error = %e, file = %self.cfg.path.display(), records = records.len(),
                    "cannot write the flow log: batch lost");
                // Start from a fresh handle next time (the file may have gone).
                self.out = None;
                vec![(SinkLoss::WriteError, records.len() as u64)]
            }
        }
    }

    fn close(&mut self, _now: DateTime<Utc>) {
        if let Some(mut out) = self.out.take()
            && let Err(e) = out.flush()
        {
            tracing::error!(error = %e, "cannot flush the flow log");
        }
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// One line: the table's columns, absent values omitted.
#[derive(Serialize)]
struct Line<'a> {
    interval_start: String,
    interval_end: String,
    cluster: &'a str,
    node: &'a str,
    observation_point: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<&'a str>,
    direction: &'static str,
    ip_version: u8,
    protocol: std::borrow::Cow<'static, str>,
    #[serde(flatten)]
    src: End<'a, Src>,
    #[serde(flatten)]
    dst: End<'a, Dst>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_code: Option<u8>,
    packets: u64,
    bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp_flags: Option<u16>,
    verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    drop_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp_retransmits: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp_resets: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp_srtt_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp_handshake_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_id: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_query: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_qtype: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_rcode: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_answers: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_latency_us: Option<u64>,
}

impl<'a> From<&'a FlowRecord> for Line<'a> {
    fn from(r: &'a FlowRecord) -> Self {
        let tcp = r.tcp.as_ref();
        let dns = r.dns.as_ref();
        Line {
            interval_start: ts(r.interval_start),
            interval_end: ts(r.interval_end),
            cluster: &r.cluster,
            node: &r.node,
            observation_point: r.observation_point.as_str(),
            interface: r.interface.as_deref(),
            direction: r.direction().as_str(),
            ip_version: r.ip_version(),
            protocol: r.protocol.name(),
            src: End::new(&r.src),
            dst: End::new(&r.dst),
            icmp_type: r.icmp.map(|(t, _)| t),
            icmp_code: r.icmp.map(|(_, c)| c),
            packets: r.packets,
            bytes: r.bytes,
            tcp_flags: r.tcp_flags,
            verdict: r.verdict.as_str(),
            drop_reason: r.drop_reason.as_deref(),
            tcp_retransmits: tcp.map(|t| t.retransmits),
            tcp_resets: tcp.map(|t| t.resets),
            tcp_srtt_us: tcp.and_then(|t| t.srtt_us),
            tcp_handshake_us: tcp.and_then(|t| t.handshake_us),
            dns_id: dns.map(|d| d.id),
            dns_query: dns.and_then(|d| d.query.as_deref()),
            dns_qtype: dns.and_then(|d| d.qtype.as_deref()),
            dns_rcode: dns.and_then(|d| d.rcode.as_deref()),
            dns_answers: dns.map(|d| d.answers.as_slice()).filter(|a| !a.is_empty()),
            dns_latency_us: dns.and_then(|d| d.latency_us),
        }
    }
}

/// Field-name prefix of one end (`src_` or `dst_`).
trait Prefix {
    const NAMES: [&'static str; 9];
}
struct Src;
struct Dst;
impl Prefix for Src {
    const NAMES: [&'static str; 9] = [
        "src_ip",
        "src_port",
        "src_namespace",
        "src_pod",
        "src_workload",
        "src_workload_kind",
        "src_node",
        "src_service",
        "src_zone",
    ];
}
impl Prefix for Dst {
    const NAMES: [&'static str; 9] = [
        "dst_ip",
        "dst_port",
        "dst_namespace",
        "dst_pod",
        "dst_workload",
        "dst_workload_kind",
        "dst_node",
        "dst_service",
        "dst_zone",
    ];
}

/// One end's columns, serialized as a flat map under the end's prefix.
struct End<'a, P> {
    e: &'a Endpoint,
    _p: std::marker::PhantomData<P>,
}

impl<'a, P> End<'a, P> {
    fn new(e: &'a Endpoint) -> Self {
        End {
            e,
            _p: std::marker::PhantomData,
        }
    }
}

impl<P: Prefix> Serialize for End<'_, P> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let n = P::NAMES;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry(n[0], &self.e.ip.to_string())?;
        if let Some(p) = self.e.port {
            m.serialize_entry(n[1], &p)?;
        }
        if let Some(id) = self.e.identity.as_deref() {
            let fields = [
                &id.namespace,
                &id.pod,
                &id.workload,
                &id.workload_kind,
                &id.node,
                &id.service,
                &id.zone,
            ];
            for (name, v) in n[2..].iter().zip(fields) {
                if let Some(v) = v {
                    m.serialize_entry(name, v)?;
                }
            }
        }
        m.end()
    }
}

#[cfg(test)]
#[path = "jsonl_tests.rs"]
mod tests;
