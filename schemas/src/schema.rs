//! The Arrow schema of one flow record, version 1.
//!
//! Column meanings and units are documented in `docs/schema.md`; this file is the
//! machine-readable source of truth. Types are chosen so the table is a plain Delta
//! Lake table: Delta has no unsigned integers, so ports, counters and latencies use
//! signed types wide enough for every value they carry.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Version of the flow-record schema written into Arrow and Parquet metadata.
pub const SCHEMA_VERSION: u32 = 1;
/// Metadata key that carries [`SCHEMA_VERSION`].
pub const SCHEMA_VERSION_KEY: &str = "flowlake.schema_version";

/// Column names, one constant each, so no crate spells a column by hand.
pub mod col {
    pub const INTERVAL_START: &str = "interval_start";
    pub const INTERVAL_END: &str = "interval_end";
    pub const CLUSTER: &str = "cluster";
    pub const NODE: &str = "node";
    pub const OBSERVATION_POINT: &str = "observation_point";
    pub const INTERFACE: &str = "interface";
    pub const DIRECTION: &str = "direction";
    pub const IP_VERSION: &str = "ip_version";
    pub const PROTOCOL: &str = "protocol";
    pub const SRC_IP: &str = "src_ip";
    pub const DST_IP: &str = "dst_ip";
    pub const SRC_PORT: &str = "src_port";
    pub const DST_PORT: &str = "dst_port";
    pub const ICMP_TYPE: &str = "icmp_type";
    pub const ICMP_CODE: &str = "icmp_code";
    pub const PACKETS: &str = "packets";
    pub const BYTES: &str = "bytes";
    pub const WIRE_PACKETS: &str = "wire_packets";
    pub const TCP_FLAGS: &str = "tcp_flags";
    pub const VERDICT: &str = "verdict";
    pub const DROP_REASON: &str = "drop_reason";
    pub const TCP_RETRANSMITS: &str = "tcp_retransmits";
    pub const TCP_RESETS: &str = "tcp_resets";
    pub const TCP_SRTT_US: &str = "tcp_srtt_us";
    pub const TCP_HANDSHAKE_US: &str = "tcp_handshake_us";
    pub const DNS_ID: &str = "dns_id";
    pub const DNS_QUERY: &str = "dns_query";
    pub const DNS_QTYPE: &str = "dns_qtype";
    pub const DNS_RCODE: &str = "dns_rcode";
    pub const DNS_ANSWERS: &str = "dns_answers";
    pub const DNS_LATENCY_US: &str = "dns_latency_us";
    pub const DATE: &str = "date";
    pub const HOUR: &str = "hour";

    /// The per-end identity columns, without their `src_` / `dst_` prefix.
    pub const END_NAMESPACE: &str = "namespace";
    pub const END_POD: &str = "pod";
    pub const END_WORKLOAD: &str = "workload";
    pub const END_WORKLOAD_KIND: &str = "workload_kind";
    pub const END_LABELS: &str = "labels";
    pub const END_NODE: &str = "node";
    pub const END_SERVICE: &str = "service";
    pub const END_ZONE: &str = "zone";

    pub const SRC_NAMESPACE: &str = "src_namespace";
    pub const SRC_POD: &str = "src_pod";
    pub const SRC_WORKLOAD: &str = "src_workload";
    pub const SRC_WORKLOAD_KIND: &str = "src_workload_kind";
    pub const SRC_LABELS: &str = "src_labels";
    pub const SRC_NODE: &str = "src_node";
    pub const SRC_SERVICE: &str = "src_service";
    pub const SRC_ZONE: &str = "src_zone";
    pub const DST_NAMESPACE: &str = "dst_namespace";
    pub const DST_POD: &str = "dst_pod";
    pub const DST_WORKLOAD: &str = "dst_workload";
    pub const DST_WORKLOAD_KIND: &str = "dst_workload_kind";
    pub const DST_LABELS: &str = "dst_labels";
    pub const DST_NODE: &str = "dst_node";
    pub const DST_SERVICE: &str = "dst_service";
    pub const DST_ZONE: &str = "dst_zone";
}

/// Partition columns of the table, outermost first.
pub const PARTITION_COLUMNS: [&str; 2] = [col::DATE, col::HOUR];

/// Every numeric column of the flow record.
pub const NUMERIC_COLUMNS: [&str; 17] = [
    col::INTERVAL_START,
    col::INTERVAL_END,
    col::SRC_PORT,
    col::PACKETS,
    col::BYTES,
    col::WIRE_PACKETS,
    col::TCP_SRTT_US,
    col::DNS_LATENCY_US,
    col::IP_VERSION,
    col::DST_PORT,
    col::ICMP_TYPE,
    col::ICMP_CODE,
    col::TCP_FLAGS,
    col::TCP_RETRANSMITS,
    col::TCP_RESETS,
    col::TCP_HANDSHAKE_US,
    col::DNS_ID,
];

/// Timestamps are microseconds since the Unix epoch in UTC (Delta's `timestamp`).
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `Map<Utf8, Utf8>` used for Kubernetes labels.
pub fn labels_type() -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", DataType::Utf8, true),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

/// `List<Utf8>` used for DNS answers.
pub fn string_list_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

fn endpoint_fields(prefix: &str) -> Vec<Field> {
    let name = |c: &str| format!("{prefix}_{c}");
    vec![
        Field::new(name(col::END_NAMESPACE), DataType::Utf8, true),
        Field::new(name(col::END_POD), DataType::Utf8, true),
        Field::new(name(col::END_WORKLOAD), DataType::Utf8, true),
        Field::new(name(col::END_WORKLOAD_KIND), DataType::Utf8, true),
        Field::new(name(col::END_LABELS), labels_type(), true),
        Field::new(name(col::END_NODE), DataType::Utf8, true),
        Field::new(name(col::END_SERVICE), DataType::Utf8, true),
        Field::new(name(col::END_ZONE), DataType::Utf8, true),
    ]
}

fn build_schema() -> Schema {
    let mut fields = vec![
        Field::new(col::INTERVAL_START, timestamp_type(), false),
        Field::new(col::INTERVAL_END, timestamp_type(), false),
        Field::new(col::CLUSTER, DataType::Utf8, false),
        Field::new(col::NODE, DataType::Utf8, false),
        Field::new(col::OBSERVATION_POINT, DataType::Utf8, false),
        Field::new(col::INTERFACE, DataType::Utf8, true),
        Field::new(col::DIRECTION, DataType::Utf8, false),
        Field::new(col::IP_VERSION, DataType::Int8, false),
        Field::new(col::PROTOCOL, DataType::Utf8, false),
        Field::new(col::SRC_IP, DataType::Utf8, false),
        Field::new(col::DST_IP, DataType::Utf8, false),
        Field::new(col::SRC_PORT, DataType::Int32, true),
        Field::new(col::DST_PORT, DataType::Int32, true),
        Field::new(col::ICMP_TYPE, DataType::Int16, true),
        Field::new(col::ICMP_CODE, DataType::Int16, true),
        Field::new(col::PACKETS, DataType::Int64, false),
        Field::new(col::BYTES, DataType::Int64, false),
        // Added after version 1's first tables: nullable (validate.rs rule).
        Field::new(col::WIRE_PACKETS, DataType::Int64, true),
        Field::new(col::TCP_FLAGS, DataType::Int16, true),
        Field::new(col::VERDICT, DataType::Utf8, false),
        Field::new(col::DROP_REASON, DataType::Utf8, true),
        Field::new(col::TCP_RETRANSMITS, DataType::Int32, true),
        Field::new(col::TCP_RESETS, DataType::Int32, true),
        Field::new(col::TCP_SRTT_US, DataType::Int64, true),
        Field::new(col::TCP_HANDSHAKE_US, DataType::Int64, true),
        Field::new(col::DNS_ID, DataType::Int32, true),
        Field::new(col::DNS_QUERY, DataType::Utf8, true),
        Field::new(col::DNS_QTYPE, DataType::Utf8, true),
        Field::new(col::DNS_RCODE, DataType::Utf8, true),
        Field::new(col::DNS_ANSWERS, string_list_type(), true),
        Field::new(col::DNS_LATENCY_US, DataType::Int64, true),
    ];
    fields.extend(endpoint_fields("src"));
    fields.extend(endpoint_fields("dst"));
    fields.push(Field::new(col::DATE, DataType::Utf8, false));
    fields.push(Field::new(col::HOUR, DataType::Utf8, false));
    let metadata = [(SCHEMA_VERSION_KEY.to_string(), SCHEMA_VERSION.to_string())]
        .into_iter()
        .collect();
    Schema::new_with_metadata(fields, metadata)
}

static FLOW_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| Arc::new(build_schema()));

/// The flow-record schema (an immutable value, built once).
pub fn flow_schema() -> SchemaRef {
    Arc::clone(&FLOW_SCHEMA)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_has_version_and_unique_columns() {
        let schema = flow_schema();
        assert_eq!(
            schema
                .metadata()
                .get(SCHEMA_VERSION_KEY)
                .map(String::as_str),
            Some("1")
        );
        let mut names: Vec<_> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let total = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), total, "column names are unique");
        assert_eq!(total, 49);
    }

    #[test]
    fn partition_columns_are_last_and_required() {
        let schema = flow_schema();
        let n = schema.fields().len();
        for (i, name) in PARTITION_COLUMNS.iter().enumerate() {
            let field = schema.field(n - PARTITION_COLUMNS.len() + i);
            assert_eq!(field.name(), name);
            assert!(!field.is_nullable());
        }
    }

    #[test]
    fn no_unsigned_types_so_delta_round_trips() {
        for field in flow_schema().fields() {
            assert!(
                !field.data_type().is_unsigned_integer(),
                "{} is unsigned",
                field.name()
            );
        }
    }
}
