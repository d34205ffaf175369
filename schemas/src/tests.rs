//! Round-trip and validation tests across the builder, decoder and validator.

use std::net::IpAddr;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use chrono::{TimeZone, Utc};

use crate::*;

fn pod(ns: &str, name: &str) -> Arc<Identity> {
    Arc::new(Identity {
        namespace: Some(ns.into()),
        pod: Some(name.into()),
        workload: Some("web".into()),
        workload_kind: Some("Deployment".into()),
        labels: vec![
            ("app".into(), "web".into()),
            ("tier".into(), "front".into()),
        ],
        node: Some("node-1".into()),
        service: None,
        zone: Some("zone-a".into()),
    })
}

fn tcp_record() -> FlowRecord {
    let start = Utc.with_ymd_and_hms(2026, 11, 25, 7, 59, 50).unwrap();
    FlowRecord {
        interval_start: start,
        interval_end: start + chrono::Duration::seconds(10),
        cluster: "prod".into(),
        node: "node-1".into(),
        observation_point: ObservationPoint::FromPod,
        interface: Some("veth1234".into()),
        protocol: Protocol::Tcp,
        src: Endpoint {
            ip: "10.0.0.5".parse().unwrap(),
            port: Some(43512),
            identity: Some(pod("shop", "web-1")),
        },
        dst: Endpoint::new("10.0.1.9".parse().unwrap(), Some(5432)),
        icmp: None,
        packets: 12,
        bytes: 4096,
        wire_packets: Some(40),
        tcp_flags: Some(0x1b),
        verdict: Verdict::Forwarded,
        drop_reason: None,
        tcp: Some(TcpHealth {
            retransmits: 2,
            resets: 0,
            srtt_us: Some(350),
            handshake_us: Some(120),
        }),
        dns: None,
    }
}

fn dns_record() -> FlowRecord {
    let mut r = tcp_record();
    r.protocol = Protocol::Udp;
    r.src.ip = "fd00::1:5".parse().unwrap();
    r.dst = Endpoint::new("fd00::a".parse().unwrap(), Some(53));
    r.tcp = None;
    r.tcp_flags = None;
    r.dns = Some(DnsInfo {
        id: 4242,
        query: Some("db.shop.svc.cluster.local".into()),
        qtype: Some("AAAA".into()),
        rcode: Some("NXDOMAIN".into()),
        answers: vec![],
        latency_us: Some(800),
    });
    r
}

fn drop_record() -> FlowRecord {
    let mut r = tcp_record();
    r.protocol = Protocol::Icmp;
    r.src.port = None;
    r.dst.port = None;
    r.icmp = Some((8, 0));
    r.tcp = None;
    r.tcp_flags = None;
    r.verdict = Verdict::Dropped;
    r.drop_reason = Some("NETFILTER_DROP".into());
    r.wire_packets = None;
    // Next hour: a second partition inside the same batch.
    r.interval_start = Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 0).unwrap();
    r.dst.identity = Some(Arc::new(Identity::default()));
    r
}

#[test]
fn builder_and_decoder_round_trip() {
    let records = vec![tcp_record(), dns_record(), drop_record()];
    let batch = records_to_batch(&records);
    assert_eq!(batch.schema(), flow_schema());
    assert_eq!(batch.num_rows(), 3);
    validate_batch(&batch).unwrap();
    let back = batch_to_records(&batch).unwrap();
    assert_eq!(back, records);

    let date = batch.column_by_name(col::DATE).unwrap();
    let hour = batch.column_by_name(col::HOUR).unwrap();
    let fmt = |a: &ArrayRef, i| arrow::util::display::array_value_to_string(a, i).unwrap();
    assert_eq!(fmt(date, 0), "2026-11-25");
    assert_eq!(fmt(hour, 0), "07");
    assert_eq!(fmt(hour, 2), "08");
    assert_eq!(
        fmt(batch.column_by_name(col::SRC_IP).unwrap(), 1),
        "fd00::1:5"
    );
    assert_eq!(
        fmt(batch.column_by_name(col::DIRECTION).unwrap(), 0),
        "egress"
    );
}

#[test]
fn ip_text_is_canonical() {
    let mut r = tcp_record();
    r.src.ip = "2001:0db8:0000:0000:0000:0000:0000:0001".parse().unwrap();
    r.dst.ip = IpAddr::from([192, 168, 0, 1]);
    let batch = records_to_batch(&[r]);
    let src = batch.column_by_name(col::SRC_IP).unwrap();
    let dst = batch.column_by_name(col::DST_IP).unwrap();
    assert_eq!(
        arrow::util::display::array_value_to_string(src, 0).unwrap(),
        "2001:db8::1"
    );
    assert_eq!(
        arrow::util::display::array_value_to_string(dst, 0).unwrap(),
        "192.168.0.1"
    );
}

#[test]
fn every_ipv4_octet_is_formatted_like_display() {
    let mut b = FlowBatchBuilder::with_capacity(256);
    let mut expected = Vec::new();
    for o in 0..=255u8 {
        let mut r = tcp_record();
        r.src.ip = IpAddr::from([o, 255 - o, o / 2, 10]);
        expected.push(r.src.ip.to_string());
        b.append(&r);
    }
    let batch = b.finish();
    let col = batch.column_by_name(col::SRC_IP).unwrap();
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(
            &arrow::util::display::array_value_to_string(col, i).unwrap(),
            want
        );
    }
}

#[test]
fn builder_is_reusable_after_finish() {
    let mut b = FlowBatchBuilder::with_capacity(2);
    b.append(&tcp_record());
    assert_eq!(b.len(), 1);
    assert_eq!(b.finish().num_rows(), 1);
    assert!(b.is_empty());
    b.extend(&[dns_record(), drop_record(), tcp_record()]);
    assert_eq!(b.finish().num_rows(), 3);
}

fn replace_column(batch: &RecordBatch, name: &str, field: Field, array: ArrayRef) -> RecordBatch {
    let schema = batch.schema();
    let i = schema.index_of(name).unwrap();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns = batch.columns().to_vec();
    fields[i] = field;
    columns[i] = array;
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

#[test]
fn wrong_type_is_refused_with_column_named() {
    let batch = records_to_batch(&[tcp_record()]);
    let bad = replace_column(
        &batch,
        col::DST_PORT,
        Field::new(col::DST_PORT, DataType::Int64, true),
        Arc::new(Int64Array::from(vec![5432])),
    );
    let err = validate_batch(&bad).unwrap_err();
    assert_eq!(
        err.to_string(),
        "column dst_port: expected Int32, got Int64"
    );
}

#[test]
fn missing_required_and_unknown_columns_are_refused() {
    let batch = records_to_batch(&[tcp_record()]);
    let without_bytes = batch
        .project(
            &(0..batch.num_columns())
                .filter(|&i| batch.schema().field(i).name() != col::BYTES)
                .collect::<Vec<_>>(),
        )
        .unwrap();
    assert_eq!(
        validate_batch(&without_bytes).unwrap_err().to_string(),
        "column bytes: required column is missing"
    );

    let extra = replace_column(
        &batch,
        col::TCP_RESETS,
        Field::new("tcp_window", DataType::Int64, true),
        Arc::new(Int64Array::from(vec![1])),
    );
    assert_eq!(
        validate_batch(&extra).unwrap_err().to_string(),
        "column tcp_window: not part of flow schema version 1"
    );
}

#[test]
fn nulls_in_required_column_are_refused() {
    let batch = records_to_batch(&[tcp_record(), dns_record()]);
    let bad = replace_column(
        &batch,
        col::PACKETS,
        Field::new(col::PACKETS, DataType::Int64, true),
        Arc::new(Int64Array::from(vec![Some(1), None])),
    );
    assert_eq!(
        validate_batch(&bad).unwrap_err().to_string(),
        "column packets: 1 null values in a non-nullable column"
    );
}

#[test]
fn newer_schema_version_is_refused() {
    let batch = records_to_batch(&[tcp_record()]);
    let mut meta = batch.schema().metadata().clone();
    meta.insert(SCHEMA_VERSION_KEY.into(), "2".into());
    let schema = Schema::new_with_metadata(batch.schema().fields().clone(), meta);
    let newer = RecordBatch::try_new(Arc::new(schema), batch.columns().to_vec()).unwrap();
    assert!(matches!(
        validate_batch(&newer),
        Err(SchemaError::UnsupportedVersion { .. })
    ));
}

#[test]
fn older_writer_batch_is_conformed() {
    // A writer that knows neither DNS columns, labels nor wire packets, with
    // columns reordered.
    let batch = records_to_batch(&[tcp_record(), drop_record()]);
    let schema = batch.schema();
    let mut keep: Vec<usize> = (0..batch.num_columns())
        .filter(|&i| {
            let n = schema.field(i).name();
            !n.starts_with("dns_") && !n.ends_with("_labels") && n != col::WIRE_PACKETS
        })
        .collect();
    keep.reverse();
    let old = batch.project(&keep).unwrap();
    validate_batch(&old).unwrap();
    let conformed = conform_batch(&old).unwrap();
    assert_eq!(conformed.schema(), flow_schema());
    assert_eq!(conformed.num_rows(), 2);
    assert_eq!(
        conformed
            .column_by_name(col::DNS_QUERY)
            .unwrap()
            .null_count(),
        2
    );
    let back = batch_to_records(&conformed).unwrap();
    assert_eq!(back[0].packets, 12);
    assert_eq!(back[0].wire_packets, None, "absent column: not counted");
    assert_eq!(
        back[0].src.identity.as_ref().unwrap().pod.as_deref(),
        Some("web-1")
    );
}

#[test]
fn nested_field_names_from_other_writers_are_accepted() {
    // Parquet/Delta writers name list items "element"; the shape is what matters.
    let other = DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)));
    assert!(validate::same_shape(&schema::string_list_type(), &other));
    assert!(!validate::same_shape(
        &schema::string_list_type(),
        &DataType::List(Arc::new(Field::new("item", DataType::Int32, true)))
    ));
}

#[test]
fn evolution_allows_only_new_nullable_columns() {
    let v1 = flow_schema();
    let mut fields: Vec<Field> = v1.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("capture_id", DataType::Utf8, true));
    check_evolution(&v1, &Schema::new(fields.clone())).unwrap();

    let mut required = fields.clone();
    required.push(Field::new("sampling", DataType::Int32, false));
    assert!(check_evolution(&v1, &Schema::new(required)).is_err());

    let removed: Vec<Field> = fields
        .iter()
        .filter(|f| f.name() != col::BYTES)
        .cloned()
        .collect();
    let err = check_evolution(&v1, &Schema::new(removed)).unwrap_err();
    assert!(
        err.to_string().contains("column bytes was removed"),
        "{err}"
    );

    let mut retyped = fields.clone();
    let i = retyped
        .iter()
        .position(|f| f.name() == col::SRC_PORT)
        .unwrap();
    retyped[i] = Field::new(col::SRC_PORT, DataType::Int64, true);
    assert!(check_evolution(&v1, &Schema::new(retyped)).is_err());
}

#[test]
fn conformed_batch_nulls_array_lengths_match() {
    let batch = records_to_batch(&[tcp_record()]);
    let conformed = conform_batch(&batch).unwrap();
    for c in conformed.columns() {
        assert_eq!(c.len(), 1);
    }
}

#[test]
fn identities_dropped_after_append_are_not_confused_with_new_ones() {
    // The builder remembers identities by address: a record appended and then
    // dropped must not let a new identity at a reused address take its place.
    let mut b = FlowBatchBuilder::with_capacity(4);
    let mut expected = Vec::new();
    for i in 0..200 {
        let mut r = tcp_record();
        r.src.identity = Some(pod("shop", &format!("web-{i}")));
        r.interface = Some(format!("veth{i}").into());
        b.append(&r);
        // Keep a copy in its own allocation; `r` and its identity are dropped at the
        // end of the iteration, so only the builder still refers to them.
        let mut copy = r.clone();
        copy.src.identity = Some(Arc::new(Identity::clone(
            r.src.identity.as_deref().unwrap(),
        )));
        copy.interface = Some(Arc::from(&*r.interface.unwrap()));
        expected.push(copy);
    }
    let batch = b.finish();
    assert_eq!(batch_to_records(&batch).unwrap(), expected);
}

#[test]
fn reused_builder_mixes_shared_and_missing_identities_across_batches() {
    let a = pod("shop", "web-1");
    let c = pod("billing", "api-7");
    let mut b = FlowBatchBuilder::with_capacity(8);
    for round in 0..3 {
        let mut records = Vec::new();
        for i in 0..50 {
            let mut r = match i % 3 {
                0 => tcp_record(),
                1 => dns_record(),
                _ => drop_record(),
            };
            r.src.identity = [Some(&a), Some(&c), None][(i + round) % 3].cloned();
            r.dst.identity = [None, Some(&c), Some(&a)][i % 3].cloned();
            if i % 7 == 0 {
                r.protocol = Protocol::Other(47);
            }
            records.push(r);
        }
        b.extend(&records);
        let batch = b.finish();
        validate_batch(&batch).unwrap();
        assert_eq!(batch_to_records(&batch).unwrap(), records, "round {round}");
    }
}
