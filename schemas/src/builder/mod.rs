//! Records → `RecordBatch`. Numeric columns use Arrow's builders; text columns whose
//! values repeat (names, enums, identities, partitions) keep one id per row and the
//! distinct texts once, and are written column by column at `finish`.

mod dict;
mod dns;
mod endpoint;
mod num;
mod text;

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{Int8Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;

use crate::partition::PartitionPath;
use crate::record::{Direction, FlowRecord, ObservationPoint, Protocol, Verdict};
use crate::schema::flow_schema;
use dict::{Dict, NULL_ID};
use dns::DnsColumns;
use endpoint::EndpointColumns;
use num::Numbers;
use text::{IpColumn, NamedColumn, SharedTextColumn};

/// The `date` and `hour` columns. Each hour seen in the batch gets one entry in
/// both dictionaries, with the same id, so rows keep one id for both.
#[derive(Default)]
struct PartitionColumns {
    /// `[start, end)` in microseconds of every hour seen, with its id.
    hours: Vec<(i64, i64, u32)>,
    /// Date and hour texts of each hour seen.
    names: Dict<2>,
    rows: Vec<u32>,
}

impl PartitionColumns {
    fn with_capacity(n: usize) -> Self {
        PartitionColumns {
            rows: Vec::with_capacity(n),
            ..Default::default()
        }
    }

    fn append(&mut self, start_us: i64) {
        let known = self
            .hours
            .iter()
            .find(|(s, e, _)| *s <= start_us && start_us < *e);
        let id = match known {
            Some(&(_, _, id)) => id,
            None => {
                let p = PartitionPath::for_micros(start_us);
                let id = self
                    .names
                    .push([Some(&p.date_value()), Some(&p.hour_value())]);
                let span = (p.start().timestamp_micros(), p.end().timestamp_micros());
                self.hours.push((span.0, span.1, id));
                id
            }
        };
        self.rows.push(id);
    }

    fn finish_into(&mut self, out: &mut Vec<ArrayRef>) {
        let [date, hour] = self.names.columns(&self.rows);
        out.push(Arc::new(date));
        out.push(Arc::new(hour));
        self.hours.clear();
        self.names.clear();
        self.rows.clear();
    }
}

/// The `protocol` column: names are added the first time a protocol number is seen.
struct ProtocolColumn {
    names: NamedColumn,
    /// Id of each protocol number's name, `NULL_ID` until seen.
    ids: Box<[u32; 256]>,
}

impl ProtocolColumn {
    fn with_capacity(n: usize) -> Self {
        ProtocolColumn {
            names: NamedColumn::new([], n),
            ids: Box::new([NULL_ID; 256]),
        }
    }

    fn append(&mut self, p: Protocol) {
        let slot = &mut self.ids[usize::from(p.number())];
        if *slot == NULL_ID {
            *slot = self.names.add_name(&p.name());
        }
        self.names.append_id(*slot);
    }
}

/// Id of a named value in a [`NamedColumn`] built from its type's `ALL`.
fn name_id(index: usize) -> u32 {
    index as u32 + 1
}

/// Appends [`FlowRecord`]s column by column and produces `RecordBatch`es of the
/// flow schema. Reusable: `finish` resets it.
pub struct FlowBatchBuilder {
    rows: usize,
    interval_start: Numbers<TimestampMicrosecondType>,
    interval_end: Numbers<TimestampMicrosecondType>,
    cluster: SharedTextColumn,
    node: SharedTextColumn,
    observation_point: NamedColumn,
    interface: SharedTextColumn,
    direction: NamedColumn,
    ip_version: Numbers<Int8Type>,
    protocol: ProtocolColumn,
    src_ip: IpColumn,
    dst_ip: IpColumn,
    src_port: Numbers<Int32Type>,
    dst_port: Numbers<Int32Type>,
    icmp_type: Numbers<Int16Type>,
    icmp_code: Numbers<Int16Type>,
    packets: Numbers<Int64Type>,
    bytes: Numbers<Int64Type>,
    tcp_flags: Numbers<Int16Type>,
    verdict: NamedColumn,
    drop_reason: SharedTextColumn,
    tcp_retransmits: Numbers<Int32Type>,
    tcp_resets: Numbers<Int32Type>,
    tcp_srtt_us: Numbers<Int64Type>,
    tcp_handshake_us: Numbers<Int64Type>,
    dns: DnsColumns,
    src: EndpointColumns,
    dst: EndpointColumns,
    partition: PartitionColumns,
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
            interval_start: Numbers::with_capacity(n),
            interval_end: Numbers::with_capacity(n),
            cluster: SharedTextColumn::with_capacity(n),
            node: SharedTextColumn::with_capacity(n),
            observation_point: NamedColumn::new(
                ObservationPoint::ALL.iter().map(|p| p.as_str()),
                n,
            ),
            interface: SharedTextColumn::with_capacity(n),
            direction: NamedColumn::new(Direction::ALL.iter().map(|d| d.as_str()), n),
            ip_version: Numbers::with_capacity(n),
            protocol: ProtocolColumn::with_capacity(n),
            src_ip: IpColumn::with_capacity(n),
            dst_ip: IpColumn::with_capacity(n),
            src_port: Numbers::with_capacity(n),
            dst_port: Numbers::with_capacity(n),
            icmp_type: Numbers::with_capacity(n),
            icmp_code: Numbers::with_capacity(n),
            packets: Numbers::with_capacity(n),
            bytes: Numbers::with_capacity(n),
            tcp_flags: Numbers::with_capacity(n),
            verdict: NamedColumn::new(Verdict::ALL.iter().map(|v| v.as_str()), n),
            drop_reason: SharedTextColumn::with_capacity(n),
            tcp_retransmits: Numbers::with_capacity(n),
            tcp_resets: Numbers::with_capacity(n),
            tcp_srtt_us: Numbers::with_capacity(n),
            tcp_handshake_us: Numbers::with_capacity(n),
            dns: DnsColumns::default(),
            src: EndpointColumns::with_capacity(n),
            dst: EndpointColumns::with_capacity(n),
            partition: PartitionColumns::with_capacity(n),
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
        self.interval_start.push(start_us);
        self.interval_end.push(r.interval_end.timestamp_micros());
        self.cluster.append(Some(&r.cluster));
        self.node.append(Some(&r.node));
        self.observation_point
            .append_id(name_id(r.observation_point as usize));
        self.interface.append(r.interface.as_ref());
        self.direction.append_id(name_id(r.direction() as usize));
        self.ip_version.push(r.ip_version() as i8);
        self.protocol.append(r.protocol);
        self.src_ip.append(r.src.ip);
        self.dst_ip.append(r.dst.ip);
        self.src_port.push_option(r.src.port.map(i32::from));
        self.dst_port.push_option(r.dst.port.map(i32::from));
        self.icmp_type
            .push_option(r.icmp.map(|(t, _)| i16::from(t)));
        self.icmp_code
            .push_option(r.icmp.map(|(_, c)| i16::from(c)));
        self.packets.push(saturating_i64(r.packets));
        self.bytes.push(saturating_i64(r.bytes));
        self.tcp_flags.push_option(r.tcp_flags.map(|f| f as i16));
        self.verdict.append_id(name_id(r.verdict as usize));
        self.drop_reason.append(r.drop_reason.as_ref());
        self.append_tcp(r);
        if let Some(d) = &r.dns {
            self.dns.append(self.rows - 1, d);
        }
        self.src.append(&r.src);
        self.dst.append(&r.dst);
        self.partition.append(start_us);
    }

    fn append_tcp(&mut self, r: &FlowRecord) {
        match &r.tcp {
            Some(t) => {
                self.tcp_retransmits.push(saturating_i32(t.retransmits));
                self.tcp_resets.push(saturating_i32(t.resets));
                self.tcp_srtt_us.push_option(opt_u64(t.srtt_us));
                self.tcp_handshake_us.push_option(opt_u64(t.handshake_us));
            }
            None => {
                self.tcp_retransmits.push_null();
                self.tcp_resets.push_null();
                self.tcp_srtt_us.push_null();
                self.tcp_handshake_us.push_null();
            }
        }
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
        cols.push(Arc::new(self.interval_start.finish().with_timezone("UTC")));
        cols.push(Arc::new(self.interval_end.finish().with_timezone("UTC")));
        cols.push(Arc::new(self.cluster.finish()));
        cols.push(Arc::new(self.node.finish()));
        cols.push(Arc::new(self.observation_point.finish()));
        cols.push(Arc::new(self.interface.finish()));
        cols.push(Arc::new(self.direction.finish()));
        cols.push(Arc::new(self.ip_version.finish()));
        cols.push(Arc::new(self.protocol.names.finish()));
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
        self.dns.finish_into(self.rows, &mut cols);
        self.src.finish_into(&mut cols);
        self.dst.finish_into(&mut cols);
        self.partition.finish_into(&mut cols);
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
