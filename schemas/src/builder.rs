//! Records → `RecordBatch`: one typed Arrow builder per column, appended in place.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int8Builder, Int16Builder, Int32Builder, Int64Builder, ListBuilder, MapBuilder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::record_batch::RecordBatch;

use crate::partition::PartitionPath;
use crate::record::{Endpoint, FlowRecord};
use crate::schema::flow_schema;

/// Builders for the identity columns of one end (`src_*` or `dst_*`).
struct EndpointColumns {
    namespace: StringBuilder,
    pod: StringBuilder,
    workload: StringBuilder,
    workload_kind: StringBuilder,
    labels: MapBuilder<StringBuilder, StringBuilder>,
    node: StringBuilder,
    service: StringBuilder,
    zone: StringBuilder,
}

impl EndpointColumns {
    fn with_capacity(n: usize) -> Self {
        EndpointColumns {
            namespace: StringBuilder::with_capacity(n, n * 8),
            pod: StringBuilder::with_capacity(n, n * 24),
            workload: StringBuilder::with_capacity(n, n * 12),
            workload_kind: StringBuilder::with_capacity(n, n * 10),
            labels: MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()),
            node: StringBuilder::with_capacity(n, n * 12),
            service: StringBuilder::with_capacity(n, n * 12),
            zone: StringBuilder::with_capacity(n, n * 8),
        }
    }

    fn append(&mut self, end: &Endpoint) {
        let Some(id) = end.identity.as_deref() else {
            self.namespace.append_null();
            self.pod.append_null();
            self.workload.append_null();
            self.workload_kind.append_null();
            self.labels
                .append(false)
                .expect("map builder accepts a null");
            self.node.append_null();
            self.service.append_null();
            self.zone.append_null();
            return;
        };
        self.namespace.append_option(id.namespace.as_deref());
        self.pod.append_option(id.pod.as_deref());
        self.workload.append_option(id.workload.as_deref());
        self.workload_kind
            .append_option(id.workload_kind.as_deref());
        for (k, v) in &id.labels {
            self.labels.keys().append_value(k);
            self.labels.values().append_value(v);
        }
        self.labels
            .append(true)
            .expect("keys and values are balanced");
        self.node.append_option(id.node.as_deref());
        self.service.append_option(id.service.as_deref());
        self.zone.append_option(id.zone.as_deref());
    }

    fn finish_into(&mut self, out: &mut Vec<ArrayRef>) {
        out.push(Arc::new(self.namespace.finish()));
        out.push(Arc::new(self.pod.finish()));
        out.push(Arc::new(self.workload.finish()));
        out.push(Arc::new(self.workload_kind.finish()));
        out.push(Arc::new(self.labels.finish()));
        out.push(Arc::new(self.node.finish()));
        out.push(Arc::new(self.service.finish()));
        out.push(Arc::new(self.zone.finish()));
    }
}

/// The partition values of the last record, reused while records stay in its hour.
struct PartitionCache {
    start_us: i64,
    end_us: i64,
    date: String,
    hour: String,
}

/// Appends [`FlowRecord`]s column by column and produces `RecordBatch`es of the
/// flow schema. Reusable: `finish` resets it.
pub struct FlowBatchBuilder {
    rows: usize,
    interval_start: TimestampMicrosecondBuilder,
    interval_end: TimestampMicrosecondBuilder,
    cluster: StringBuilder,
    node: StringBuilder,
    observation_point: StringBuilder,
    interface: StringBuilder,
    direction: StringBuilder,
    ip_version: Int8Builder,
    protocol: StringBuilder,
    src_ip: StringBuilder,
    dst_ip: StringBuilder,
    src_port: Int32Builder,
    dst_port: Int32Builder,
    icmp_type: Int16Builder,
    icmp_code: Int16Builder,
    packets: Int64Builder,
    bytes: Int64Builder,
    tcp_flags: Int16Builder,
    verdict: StringBuilder,
    drop_reason: StringBuilder,
    tcp_retransmits: Int32Builder,
    tcp_resets: Int32Builder,
    tcp_srtt_us: Int64Builder,
    tcp_handshake_us: Int64Builder,
    dns_id: Int32Builder,
    dns_query: StringBuilder,
    dns_qtype: StringBuilder,
    dns_rcode: StringBuilder,
    dns_answers: ListBuilder<StringBuilder>,
    dns_latency_us: Int64Builder,
    src: EndpointColumns,
    dst: EndpointColumns,
    date: StringBuilder,
    hour: StringBuilder,
    partition: Option<PartitionCache>,
}

/// Appends an address in canonical text. IPv4 (nearly every row) is formatted by
/// hand: `Display` goes through the formatting machinery four times per address
/// and was a third of the builder's cost.
fn append_ip(b: &mut StringBuilder, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut buf = [0u8; 15];
            let mut n = 0;
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if o >= 100 {
                    buf[n] = b'0' + o / 100;
                    n += 1;
                }
                if o >= 10 {
                    buf[n] = b'0' + (o / 10) % 10;
                    n += 1;
                }
                buf[n] = b'0' + o % 10;
                n += 1;
            }
            b.append_value(std::str::from_utf8(&buf[..n]).expect("ASCII digits and dots"));
        }
        IpAddr::V6(_) => {
            write!(b, "{ip}").expect("writing to a builder cannot fail");
            b.append_value("");
        }
    }
}

fn ts_builder(n: usize) -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC")
}

fn opt_u64(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn saturating_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

impl Default for FlowBatchBuilder {
    fn default() -> Self {
        Self::with_capacity(1024)
    }
}

impl FlowBatchBuilder {
    /// A builder with room for `n` records before it reallocates.
    pub fn with_capacity(n: usize) -> Self {
        FlowBatchBuilder {
            rows: 0,
            interval_start: ts_builder(n),
            interval_end: ts_builder(n),
            cluster: StringBuilder::with_capacity(n, n * 8),
            node: StringBuilder::with_capacity(n, n * 12),
            observation_point: StringBuilder::with_capacity(n, n * 8),
            interface: StringBuilder::with_capacity(n, n * 12),
            direction: StringBuilder::with_capacity(n, n * 7),
            ip_version: Int8Builder::with_capacity(n),
            protocol: StringBuilder::with_capacity(n, n * 3),
            src_ip: StringBuilder::with_capacity(n, n * 14),
            dst_ip: StringBuilder::with_capacity(n, n * 14),
            src_port: Int32Builder::with_capacity(n),
            dst_port: Int32Builder::with_capacity(n),
            icmp_type: Int16Builder::with_capacity(n),
            icmp_code: Int16Builder::with_capacity(n),
            packets: Int64Builder::with_capacity(n),
            bytes: Int64Builder::with_capacity(n),
            tcp_flags: Int16Builder::with_capacity(n),
            verdict: StringBuilder::with_capacity(n, n * 9),
            drop_reason: StringBuilder::with_capacity(n, n),
            tcp_retransmits: Int32Builder::with_capacity(n),
            tcp_resets: Int32Builder::with_capacity(n),
            tcp_srtt_us: Int64Builder::with_capacity(n),
            tcp_handshake_us: Int64Builder::with_capacity(n),
            dns_id: Int32Builder::with_capacity(n),
            dns_query: StringBuilder::with_capacity(n, n),
            dns_qtype: StringBuilder::with_capacity(n, n),
            dns_rcode: StringBuilder::with_capacity(n, n),
            dns_answers: ListBuilder::new(StringBuilder::new()),
            dns_latency_us: Int64Builder::with_capacity(n),
            src: EndpointColumns::with_capacity(n),
            dst: EndpointColumns::with_capacity(n),
            date: StringBuilder::with_capacity(n, n * 10),
            hour: StringBuilder::with_capacity(n, n * 2),
            partition: None,
        }
    }

    /// Records appended since the last `finish`.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one record.
    pub fn append(&mut self, r: &FlowRecord) {
        self.rows += 1;
        let start_us = r.interval_start.timestamp_micros();
        self.interval_start.append_value(start_us);
        self.interval_end
            .append_value(r.interval_end.timestamp_micros());
        self.cluster.append_value(&r.cluster);
        self.node.append_value(&r.node);
        self.observation_point
            .append_value(r.observation_point.as_str());
        self.interface.append_option(r.interface.as_deref());
        self.direction.append_value(r.direction().as_str());
        self.ip_version.append_value(r.ip_version() as i8);
        self.protocol.append_value(r.protocol.name());
        append_ip(&mut self.src_ip, r.src.ip);
        append_ip(&mut self.dst_ip, r.dst.ip);
        self.src_port.append_option(r.src.port.map(i32::from));
        self.dst_port.append_option(r.dst.port.map(i32::from));
        self.icmp_type
            .append_option(r.icmp.map(|(t, _)| i16::from(t)));
        self.icmp_code
            .append_option(r.icmp.map(|(_, c)| i16::from(c)));
        self.packets.append_value(saturating_i64(r.packets));
        self.bytes.append_value(saturating_i64(r.bytes));
        self.tcp_flags.append_option(r.tcp_flags.map(|f| f as i16));
        self.verdict.append_value(r.verdict.as_str());
        self.drop_reason.append_option(r.drop_reason.as_deref());
        self.append_tcp(r);
        self.append_dns(r);
        self.src.append(&r.src);
        self.dst.append(&r.dst);
        self.append_partition(start_us);
    }

    fn append_tcp(&mut self, r: &FlowRecord) {
        match &r.tcp {
            Some(t) => {
                self.tcp_retransmits
                    .append_value(saturating_i32(t.retransmits));
                self.tcp_resets.append_value(saturating_i32(t.resets));
                self.tcp_srtt_us.append_option(opt_u64(t.srtt_us));
                self.tcp_handshake_us.append_option(opt_u64(t.handshake_us));
            }
            None => {
                self.tcp_retransmits.append_null();
                self.tcp_resets.append_null();
                self.tcp_srtt_us.append_null();
                self.tcp_handshake_us.append_null();
            }
        }
    }

    fn append_dns(&mut self, r: &FlowRecord) {
        match &r.dns {
            Some(d) => {
                self.dns_id.append_value(i32::from(d.id));
                self.dns_query.append_option(d.query.as_deref());
                self.dns_qtype.append_option(d.qtype.as_deref());
                self.dns_rcode.append_option(d.rcode.as_deref());
                for a in &d.answers {
                    self.dns_answers.values().append_value(a);
                }
                self.dns_answers.append(true);
                self.dns_latency_us.append_option(opt_u64(d.latency_us));
            }
            None => {
                self.dns_id.append_null();
                self.dns_query.append_null();
                self.dns_qtype.append_null();
                self.dns_rcode.append_null();
                self.dns_answers.append(false);
                self.dns_latency_us.append_null();
            }
        }
    }

    fn append_partition(&mut self, start_us: i64) {
        let hit =
            matches!(&self.partition, Some(c) if c.start_us <= start_us && start_us < c.end_us);
        if !hit {
            let p = PartitionPath::for_micros(start_us);
            self.partition = Some(PartitionCache {
                start_us: p.start().timestamp_micros(),
                end_us: p.end().timestamp_micros(),
                date: p.date_value(),
                hour: p.hour_value(),
            });
        }
        let c = self.partition.as_ref().expect("set above");
        self.date.append_value(&c.date);
        self.hour.append_value(&c.hour);
    }

    /// Appends every record of an iterator.
    pub fn extend<'a>(&mut self, records: impl IntoIterator<Item = &'a FlowRecord>) {
        for r in records {
            self.append(r);
        }
    }

    /// The batch of everything appended so far; the builder is empty afterwards.
    pub fn finish(&mut self) -> RecordBatch {
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(flow_schema().fields().len());
        cols.push(Arc::new(self.interval_start.finish()));
        cols.push(Arc::new(self.interval_end.finish()));
        cols.push(Arc::new(self.cluster.finish()));
        cols.push(Arc::new(self.node.finish()));
        cols.push(Arc::new(self.observation_point.finish()));
        cols.push(Arc::new(self.interface.finish()));
        cols.push(Arc::new(self.direction.finish()));
        cols.push(Arc::new(self.ip_version.finish()));
        cols.push(Arc::new(self.protocol.finish()));
        cols.push(Arc::new(self.src_ip.finish()));
        cols.push(Arc::new(self.dst_ip.finish()));
        cols.push(Arc::new(self.src_port.finish()));
        cols.push(Arc::new(self.dst_port.finish()));
        cols.push(Arc::new(self.icmp_type.finish()));
        cols.push(Arc::new(self.icmp_code.finish()));
        cols.push(Arc::new(self.packets.finish()));
        cols.push(Arc::new(self.bytes.finish()));
        cols.push(Arc::new(self.tcp_flags.finish()));
        cols.push(Arc::new(self.verdict.finish()));
        cols.push(Arc::new(self.drop_reason.finish()));
        cols.push(Arc::new(self.tcp_retransmits.finish()));
        cols.push(Arc::new(self.tcp_resets.finish()));
        cols.push(Arc::new(self.tcp_srtt_us.finish()));
        cols.push(Arc::new(self.tcp_handshake_us.finish()));
        cols.push(Arc::new(self.dns_id.finish()));
        cols.push(Arc::new(self.dns_query.finish()));
        cols.push(Arc::new(self.dns_qtype.finish()));
        cols.push(Arc::new(self.dns_rcode.finish()));
        cols.push(Arc::new(self.dns_answers.finish()));
        cols.push(Arc::new(self.dns_latency_us.finish()));
        self.src.finish_into(&mut cols);
        self.dst.finish_into(&mut cols);
        cols.push(Arc::new(self.date.finish()));
        cols.push(Arc::new(self.hour.finish()));
        self.rows = 0;
        RecordBatch::try_new(flow_schema(), cols)
            .expect("builder columns follow the flow schema (checked by tests)")
    }
}

/// Builds one batch from a slice of records.
pub fn records_to_batch(records: &[FlowRecord]) -> RecordBatch {
    let mut b = FlowBatchBuilder::with_capacity(records.len());
    b.extend(records);
    b.finish()
}
