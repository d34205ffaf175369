//! `RecordBatch` → records: the inverse of the builder, for tests, tools and
//! consumers that want typed rows.

use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Int16Array, Int32Array, Int64Array, MapArray, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{Int16Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};

use crate::error::{Result, SchemaError};
use crate::record::{
    DnsInfo, Endpoint, FlowRecord, Identity, ObservationPoint, Protocol, TcpHealth, Verdict,
};
use crate::schema::col;
use crate::validate::validate_batch;

/// Typed access to the columns of a validated flow batch.
struct Columns<'a> {
    batch: &'a RecordBatch,
}

impl<'a> Columns<'a> {
    fn column(&self, name: &str) -> &'a dyn Array {
        self.batch
            .column_by_name(name)
            .map(|c| c.as_ref())
            .unwrap_or_else(|| panic!("validated batch has column {name}"))
    }
    fn str(&self, name: &str) -> &'a StringArray {
        self.column(name).as_string::<i32>()
    }
    fn ts(&self, name: &str) -> &'a TimestampMicrosecondArray {
        self.column(name).as_primitive::<TimestampMicrosecondType>()
    }
    fn i16(&self, name: &str) -> &'a Int16Array {
        self.column(name).as_primitive::<Int16Type>()
    }
    fn i32(&self, name: &str) -> &'a Int32Array {
        self.column(name).as_primitive::<Int32Type>()
    }
    fn i64(&self, name: &str) -> &'a Int64Array {
        self.column(name).as_primitive::<Int64Type>()
    }
    fn map(&self, name: &str) -> &'a MapArray {
        self.column(name).as_map()
    }
}

fn opt_str(a: &StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_string())
}

fn opt<T: arrow::datatypes::ArrowPrimitiveType>(
    a: &arrow::array::PrimitiveArray<T>,
    i: usize,
) -> Option<T::Native> {
    a.is_valid(i).then(|| a.value(i))
}

fn time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

fn invalid(column: &'static str, value: impl ToString) -> SchemaError {
    SchemaError::InvalidValue {
        column,
        value: value.to_string(),
    }
}

fn identity(c: &Columns<'_>, prefix: &str, i: usize) -> Option<Arc<Identity>> {
    let name = |s: &str| format!("{prefix}_{s}");
    let labels_col = c.map(&name(col::END_LABELS));
    let labels = if labels_col.is_valid(i) {
        let entries = labels_col.value(i);
        let keys = entries.column(0).as_string::<i32>();
        let values = entries.column(1).as_string::<i32>();
        (0..entries.len())
            .map(|j| (keys.value(j).to_string(), values.value(j).to_string()))
            .collect()
    } else {
        Vec::new()
    };
    let id = Identity {
        namespace: opt_str(c.str(&name(col::END_NAMESPACE)), i),
        pod: opt_str(c.str(&name(col::END_POD)), i),
        workload: opt_str(c.str(&name(col::END_WORKLOAD)), i),
        workload_kind: opt_str(c.str(&name(col::END_WORKLOAD_KIND)), i),
        labels,
        node: opt_str(c.str(&name(col::END_NODE)), i),
        service: opt_str(c.str(&name(col::END_SERVICE)), i),
        zone: opt_str(c.str(&name(col::END_ZONE)), i),
    };
    (labels_col.is_valid(i) || id != Identity::default()).then(|| Arc::new(id))
}

fn port(a: &Int32Array, i: usize, column: &'static str) -> Result<Option<u16>> {
    opt(a, i)
        .map(|p| u16::try_from(p).map_err(|_| invalid(column, p)))
        .transpose()
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Decodes every row of a flow batch into records. The batch is validated first.
pub fn batch_to_records(batch: &RecordBatch) -> Result<Vec<FlowRecord>> {
    validate_batch(batch)?;
    let c = Columns { batch };
    let (start, end) = (c.ts(col::INTERVAL_START), c.ts(col::INTERVAL_END));
    let (cluster, node) = (c.str(col::CLUSTER), c.str(col::NODE));
    let (obs, iface) = (c.str(col::OBSERVATION_POINT), c.str(col::INTERFACE));
    let proto = c.str(col::PROTOCOL);
    let (src_ip, dst_ip) = (c.str(col::SRC_IP), c.str(col::DST_IP));
    let (src_port, dst_port) = (c.i32(col::SRC_PORT), c.i32(col::DST_PORT));
    let (icmp_type, icmp_code) = (c.i16(col::ICMP_TYPE), c.i16(col::ICMP_CODE));
    let (packets, bytes) = (c.i64(col::PACKETS), c.i64(col::BYTES));
    // Nullable and newer than version 1's first writers: may be absent.
    let wire = batch
        .column_by_name(col::WIRE_PACKETS)
        .map(|a| a.as_primitive::<Int64Type>());
    let flags = c.i16(col::TCP_FLAGS);
    let (verdict, reason) = (c.str(col::VERDICT), c.str(col::DROP_REASON));
    let (retrans, resets) = (c.i32(col::TCP_RETRANSMITS), c.i32(col::TCP_RESETS));
    let (srtt, handshake) = (c.i64(col::TCP_SRTT_US), c.i64(col::TCP_HANDSHAKE_US));
    let (dns_id, dns_query) = (c.i32(col::DNS_ID), c.str(col::DNS_QUERY));
    let (dns_qtype, dns_rcode) = (c.str(col::DNS_QTYPE), c.str(col::DNS_RCODE));
    let dns_answers = c.column(col::DNS_ANSWERS).as_list::<i32>();
    let dns_latency = c.i64(col::DNS_LATENCY_US);

    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let protocol = Protocol::parse(proto.value(i))?;
        let src = Endpoint {
            ip: src_ip
                .value(i)
                .parse()
                .map_err(|_| invalid(col::SRC_IP, src_ip.value(i)))?,
            port: port(src_port, i, col::SRC_PORT)?,
            identity: identity(&c, "src", i),
        };
        let dst = Endpoint {
            ip: dst_ip
                .value(i)
                .parse()
                .map_err(|_| invalid(col::DST_IP, dst_ip.value(i)))?,
            port: port(dst_port, i, col::DST_PORT)?,
            identity: identity(&c, "dst", i),
        };
        let icmp = match (opt(icmp_type, i), opt(icmp_code, i)) {
            (Some(t), Some(code)) => Some((t as u8, code as u8)),
            _ => None,
        };
        let tcp = opt(retrans, i).map(|r| TcpHealth {
            retransmits: u32::try_from(r).unwrap_or(0),
            resets: opt(resets, i).map_or(0, |v| u32::try_from(v).unwrap_or(0)),
            srtt_us: opt(srtt, i).map(unsigned),
            handshake_us: opt(handshake, i).map(unsigned),
        });
        let dns = opt(dns_id, i).map(|id| DnsInfo {
            id: id as u16,
            query: opt_str(dns_query, i),
            qtype: opt_str(dns_qtype, i),
            rcode: opt_str(dns_rcode, i),
            answers: if dns_answers.is_valid(i) {
                let v = dns_answers.value(i);
                let v = v.as_string::<i32>();
                (0..v.len()).map(|j| v.value(j).to_string()).collect()
            } else {
                Vec::new()
            },
            latency_us: opt(dns_latency, i).map(unsigned),
        });
        out.push(FlowRecord {
            interval_start: time(start.value(i)),
            interval_end: time(end.value(i)),
            cluster: Arc::from(cluster.value(i)),
            node: Arc::from(node.value(i)),
            observation_point: obs.value(i).parse::<ObservationPoint>()?,
            interface: iface.is_valid(i).then(|| Arc::from(iface.value(i))),
            protocol,
            src,
            dst,
            icmp,
            packets: unsigned(packets.value(i)),
            bytes: unsigned(bytes.value(i)),
            wire_packets: wire.and_then(|a| opt(a, i)).map(unsigned),
            tcp_flags: opt(flags, i).map(|f| f as u16),
            verdict: verdict.value(i).parse::<Verdict>()?,
            drop_reason: reason.is_valid(i).then(|| Arc::from(reason.value(i))),
            tcp,
            dns,
        });
    }
    Ok(out)
}
