//! Records → `RecordBatch`. Each record's numbers and text ids are staged as one
//! struct per row; texts whose values repeat (names, enums, identities, partitions)
//! are kept once per batch. `finish` writes the batch column by column.

mod dict;
mod dns;
mod endpoint;
mod staged;
mod text;

use std::sync::Arc;

use arrow::array::{ArrayRef, PrimitiveArray};
use arrow::datatypes::{Int8Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;

use crate::partition::PartitionPath;
use crate::record::{Direction, FlowRecord, ObservationPoint, Protocol, Verdict};
use crate::schema::flow_schema;
use dict::{Dict, NULL_ID};
use dns::DnsColumns;
use endpoint::EndpointColumns;
use staged::{Fields, Staged, has, numbers, optional};
use text::{IpColumn, Names, SharedTexts};

/// The `date` and `hour` texts. Each hour seen in the batch gets one entry holding
/// both, so rows keep one id for the two columns.
#[derive(Default)]
struct Partitions {
    /// `[start, end)` in microseconds of every hour seen, with its id.
    hours: Vec<(i64, i64, u32)>,
    names: Dict<2>,
}

impl Partitions {
    fn id(&mut self, start_us: i64) -> u32 {
        let known = self
            .hours
            .iter()
            .find(|(s, e, _)| *s <= start_us && start_us < *e);
        if let Some(&(_, _, id)) = known {
            return id;
        }
        let p = PartitionPath::for_micros(start_us);
        let id = self
            .names
            .push([Some(&p.date_value()), Some(&p.hour_value())]);
        let span = (p.start().timestamp_micros(), p.end().timestamp_micros());
        self.hours.push((span.0, span.1, id));
        id
    }

    fn finish_into(&mut self, rows: &[u32], out: &mut Vec<ArrayRef>) {
        let [date, hour] = self.names.columns(rows);
        out.push(Arc::new(date));
        out.push(Arc::new(hour));
        self.hours.clear();
        self.names.clear();
    }
}

/// Protocol names, added the first time a protocol number is seen.
struct Protocols {
    names: Names,
    /// Id of each protocol number's name, `NULL_ID` until seen.
    ids: Box<[u32; 256]>,
}

impl Protocols {
    fn new() -> Self {
        Protocols {
            names: Names::new([]),
            ids: Box::new([NULL_ID; 256]),
        }
    }

    fn id(&mut self, p: Protocol) -> u32 {
        let slot = &mut self.ids[usize::from(p.number())];
        if *slot == NULL_ID {
            *slot = self.names.add(&p.name());
        }
        *slot
    }
}

/// Id of a named value in [`Names`] built from its type's `ALL`.
fn name_id(index: usize) -> u32 {
    index as u32 + 1
}

/// Appends [`FlowRecord`]s and produces `RecordBatch`es of the flow schema.
/// Reusable: `finish` resets it.
pub struct FlowBatchBuilder {
    staged: Vec<Staged>,
    cluster: SharedTexts,
    node: SharedTexts,
    observation_points: Names,
    interface: SharedTexts,
    directions: Names,
    protocols: Protocols,
    src_ip: IpColumn,
    dst_ip: IpColumn,
    verdicts: Names,
    drop_reason: SharedTexts,
    dns: DnsColumns,
    src: EndpointColumns,
    dst: EndpointColumns,
    partitions: Partitions,
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn saturating_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// `v`, or the default with its [`has`] bit left unset in `valid`.
#[inline]
fn or_null<T: Default>(v: Option<T>, bit: u16, valid: &mut u16) -> T {
    match v {
        Some(v) => {
            *valid |= bit;
            v
        }
        None => T::default(),
    }
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
            staged: Vec::with_capacity(n),
            cluster: SharedTexts::default(),
            node: SharedTexts::default(),
            observation_points: Names::new(ObservationPoint::ALL.iter().map(|p| p.as_str())),
            interface: SharedTexts::default(),
            directions: Names::new(Direction::ALL.iter().map(|d| d.as_str())),
            protocols: Protocols::new(),
            src_ip: IpColumn::with_capacity(n),
            dst_ip: IpColumn::with_capacity(n),
            verdicts: Names::new(Verdict::ALL.iter().map(|v| v.as_str())),
            drop_reason: SharedTexts::default(),
            dns: DnsColumns::default(),
            src: EndpointColumns::new(),
            dst: EndpointColumns::new(),
            partitions: Partitions::default(),
        }
    }

    /// Records appended since the last `finish`.
    pub fn len(&self) -> usize {
        self.staged.len()
    }

    pub fn is_empty(&self) -> bool {
        self.staged.is_empty()
    }

    /// Appends one record.
    pub fn append(&mut self, r: &FlowRecord) {
        let start_us = r.interval_start.timestamp_micros();
        let mut valid = 0;
        let tcp = r.tcp.as_ref();
        let (icmp_type, icmp_code) = or_null(r.icmp, has::ICMP, &mut valid);
        let staged = Staged {
            start_us,
            end_us: r.interval_end.timestamp_micros(),
            packets: saturating_i64(r.packets),
            bytes: saturating_i64(r.bytes),
            wire_packets: or_null(
                r.wire_packets.map(saturating_i64),
                has::WIRE_PACKETS,
                &mut valid,
            ),
            srtt_us: or_null(
                tcp.and_then(|t| t.srtt_us).map(saturating_i64),
                has::SRTT,
                &mut valid,
            ),
            handshake_us: or_null(
                tcp.and_then(|t| t.handshake_us).map(saturating_i64),
                has::HANDSHAKE,
                &mut valid,
            ),
            cluster: self.cluster.id(Some(&r.cluster)),
            node: self.node.id(Some(&r.node)),
            observation_point: name_id(r.observation_point as usize),
            interface: self.interface.id(r.interface.as_ref()),
            direction: name_id(r.direction() as usize),
            protocol: self.protocols.id(r.protocol),
            verdict: name_id(r.verdict as usize),
            drop_reason: self.drop_reason.id(r.drop_reason.as_ref()),
            src: self.src.id(&r.src),
            dst: self.dst.id(&r.dst),
            partition: self.partitions.id(start_us),
            src_port: or_null(r.src.port.map(i32::from), has::SRC_PORT, &mut valid),
            dst_port: or_null(r.dst.port.map(i32::from), has::DST_PORT, &mut valid),
            retransmits: or_null(
                tcp.map(|t| saturating_i32(t.retransmits)),
                has::TCP,
                &mut valid,
            ),
            resets: tcp.map_or(0, |t| saturating_i32(t.resets)),
            icmp_type: i16::from(icmp_type),
            icmp_code: i16::from(icmp_code),
            tcp_flags: or_null(r.tcp_flags.map(|f| f as i16), has::TCP_FLAGS, &mut valid),
            ip_version: r.ip_version() as i8,
            valid,
        };
        self.src_ip.append(r.src.ip);
        self.dst_ip.append(r.dst.ip);
        if let Some(d) = &r.dns {
            self.dns.append(self.staged.len(), d);
        }
        self.staged.push(staged);
    }

    /// Appends every record of an iterator.
    pub fn extend<'a>(&mut self, records: impl IntoIterator<Item = &'a FlowRecord>) {
        for r in records {
            self.append(r);
        }
    }

    /// The batch of everything appended so far; the builder is empty afterwards.
    pub fn finish(&mut self) -> RecordBatch {
        let f = Fields::from_rows(&self.staged);
        let n = self.staged.len();
        self.staged.clear();
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(flow_schema().fields().len());
        let utc = |a: PrimitiveArray<TimestampMicrosecondType>| Arc::new(a.with_timezone("UTC"));
        cols.push(utc(numbers(f.start_us)));
        cols.push(utc(numbers(f.end_us)));
        cols.push(Arc::new(self.cluster.finish(&f.cluster)));
        cols.push(Arc::new(self.node.finish(&f.node)));
        cols.push(Arc::new(
            self.observation_points.column(&f.observation_point),
        ));
        cols.push(Arc::new(self.interface.finish(&f.interface)));
        cols.push(Arc::new(self.directions.column(&f.direction)));
        cols.push(Arc::new(numbers::<Int8Type>(f.ip_version)));
        cols.push(Arc::new(self.protocols.names.column(&f.protocol)));
        cols.push(Arc::new(self.src_ip.finish()));
        cols.push(Arc::new(self.dst_ip.finish()));
        let valid = f.valid.as_slice();
        cols.push(Arc::new(optional::<Int32Type>(
            f.src_port,
            valid,
            has::SRC_PORT,
        )));
        cols.push(Arc::new(optional::<Int32Type>(
            f.dst_port,
            valid,
            has::DST_PORT,
        )));
        cols.push(Arc::new(optional::<Int16Type>(
            f.icmp_type,
            valid,
            has::ICMP,
        )));
        cols.push(Arc::new(optional::<Int16Type>(
            f.icmp_code,
            valid,
            has::ICMP,
        )));
        cols.push(Arc::new(numbers::<Int64Type>(f.packets)));
        cols.push(Arc::new(numbers::<Int64Type>(f.bytes)));
        cols.push(Arc::new(optional::<Int64Type>(
            f.wire_packets,
            valid,
            has::WIRE_PACKETS,
        )));
        cols.push(Arc::new(optional::<Int16Type>(
            f.tcp_flags,
            valid,
            has::TCP_FLAGS,
        )));
        cols.push(Arc::new(self.verdicts.column(&f.verdict)));
        cols.push(Arc::new(self.drop_reason.finish(&f.drop_reason)));
        cols.push(Arc::new(optional::<Int32Type>(
            f.retransmits,
            valid,
            has::TCP,
        )));
        cols.push(Arc::new(optional::<Int32Type>(f.resets, valid, has::TCP)));
        cols.push(Arc::new(optional::<Int64Type>(f.srtt_us, valid, has::SRTT)));
        cols.push(Arc::new(optional::<Int64Type>(
            f.handshake_us,
            valid,
            has::HANDSHAKE,
        )));
        self.dns.finish_into(n, &mut cols);
        self.src.finish_into(&f.src, &mut cols);
        self.dst.finish_into(&f.dst, &mut cols);
        self.partitions.finish_into(&f.partition, &mut cols);
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
