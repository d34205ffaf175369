use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::CompressionType;
use arrow::record_batch::RecordBatch;
use flowlake_schemas::col;

use super::*;

/// `rows` flow records from the `flowlake gen` workload, spread over one hour.
fn flows(rows: u64) -> RecordBatch {
    let mut cfg = flowlake_gen::GenConfig::for_tests(std::env::temp_dir());
    cfg.duration = chrono::Duration::hours(1);
    cfg.rate = rows as f64 / 3600.0;
    let records = flowlake_gen::records(&cfg);
    assert_eq!(records.len() as u64, rows);
    flowlake_schemas::records_to_batch(&records)
}

#[test]
fn decodes_plain_ipc_compressed_and_content_encoded() {
    let batch = flows(500);
    for compression in [
        None,
        Some(CompressionType::ZSTD),
        Some(CompressionType::LZ4_FRAME),
    ] {
        let ipc = encode_ipc(&[batch.slice(0, 200), batch.slice(200, 300)], compression).unwrap();
        let d = decode_body(&ipc, BodyEncoding::Identity, 1 << 30).unwrap();
        assert_eq!(d.rows, 500);
        assert_eq!(d.batches[0].schema(), flowlake_schemas::flow_schema());
        let zstd = zstd::encode_all(&ipc[..], 3).unwrap();
        assert_eq!(
            decode_body(&zstd, BodyEncoding::Zstd, 1 << 30)
                .unwrap()
                .rows,
            500
        );
    }
}

/// WAL replay decodes with no limit (`usize::MAX`): `limit + 1` overflowed, which
/// panicked in debug builds and, wrapped to 0 in release builds, read nothing, so
/// every zstd-encoded WAL record was skipped on replay.
#[test]
fn zstd_body_without_a_limit() {
    let ipc = encode_ipc(&[flows(50)], None).unwrap();
    let zstd = zstd::encode_all(&ipc[..], 3).unwrap();
    let d = decode_bytes(Bytes::from(zstd), BodyEncoding::Zstd, usize::MAX).unwrap();
    assert_eq!(d.rows, 50);
}

#[test]
fn refuses_with_the_right_error() {
    let batch = flows(100);
    let ipc = encode_ipc(std::slice::from_ref(&batch), None).unwrap();
    assert!(matches!(
        decode_body(b"hello, not arrow", BodyEncoding::Identity, 1 << 20),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        decode_body(b"hello, not zstd", BodyEncoding::Zstd, 1 << 20),
        Err(DecodeError::Encoding { .. })
    ));
    assert!(matches!(
        decode_body(&ipc, BodyEncoding::Identity, 100),
        Err(DecodeError::TooLarge { .. })
    ));
    // A zstd bomb is cut off at the limit.
    let zstd = zstd::encode_all(&ipc[..], 3).unwrap();
    assert!(matches!(
        decode_body(&zstd, BodyEncoding::Zstd, 1000),
        Err(DecodeError::TooLarge { .. })
    ));
    // dst_port as Int64: a schema error with the column named.
    let wrong = retype(&batch, col::DST_PORT, DataType::Int64);
    let err = decode_body(
        &encode_ipc(&[wrong], None).unwrap(),
        BodyEncoding::Identity,
        1 << 30,
    )
    .unwrap_err();
    let DecodeError::Schema(cause) = &err else {
        panic!("{err:?}")
    };
    assert!(cause.to_string().contains("dst_port"), "{err:?}");
    assert!(matches!(
        BodyEncoding::from_header(Some("br")),
        Err(DecodeError::UnsupportedEncoding(_))
    ));
    assert_eq!(
        BodyEncoding::from_header(Some(" ZSTD ")).unwrap(),
        BodyEncoding::Zstd
    );
}

fn retype(batch: &RecordBatch, column: &str, to: DataType) -> RecordBatch {
    let schema = batch.schema();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            if f.name() == column {
                Field::new(f.name(), to.clone(), f.is_nullable())
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| {
            if f.name() == column {
                cast(c, &to).unwrap()
            } else {
                Arc::clone(c)
            }
        })
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

/// The fuzz target's property, run deterministically: truncated and bit-flipped
/// bodies never panic, and whatever is accepted conforms to the flow schema.
#[test]
fn mutated_bodies_never_panic() {
    let batch = flows(64);
    let mut seeds = vec![
        encode_ipc(std::slice::from_ref(&batch), None).unwrap(),
        encode_ipc(std::slice::from_ref(&batch), Some(CompressionType::ZSTD)).unwrap(),
        encode_ipc(
            std::slice::from_ref(&batch),
            Some(CompressionType::LZ4_FRAME),
        )
        .unwrap(),
    ];
    let extra = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)])),
        vec![Arc::new(Int64Array::from(vec![1, 2, 3]))],
    )
    .unwrap();
    seeds.push(encode_ipc(&[extra], None).unwrap());
    // What collectors send: string and label-map columns dictionary-encoded.
    let dictionary = flowlake_schemas::dictionary_encode(&batch).unwrap();
    for compression in [None, Some(CompressionType::ZSTD)] {
        seeds.push(encode_ipc(std::slice::from_ref(&dictionary), compression).unwrap());
    }
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut accepted = 0;
    for seed in &seeds {
        for cut in (0..seed.len()).step_by(seed.len() / 97 + 1) {
            check(&seed[..cut], &mut accepted);
        }
        for _ in 0..300 {
            let mut body = seed.clone();
            for _ in 0..(next() % 8 + 1) {
                let i = (next() as usize) % body.len();
                body[i] ^= 1 << (next() % 8);
            }
            check(&body, &mut accepted);
        }
    }
    assert!(accepted > 0, "some mutations keep a valid stream");
}

fn check(body: &[u8], accepted: &mut usize) {
    match decode_body(body, BodyEncoding::Identity, 1 << 24) {
        Ok(d) => {
            for b in &d.batches {
                assert!(
                    flowlake_schemas::is_conformed(&b.schema()),
                    "{}",
                    b.schema()
                );
                flowlake_schemas::validate_batch(b).unwrap();
            }
            *accepted += 1;
        }
        Err(DecodeError::ArrowPanic) => {
            let path = std::env::temp_dir().join("flowlake-wire-arrow-panic");
            std::fs::write(&path, body).unwrap();
            panic!(
                "arrow-ipc panicked on a body, written to {}",
                path.display()
            )
        }
        Err(_) => {}
    }
}

/// Inputs the `ipc_decode` fuzz target crashed on (its format: one encoding
/// byte, odd for zstd, then the body), each refused by a guard before arrow-ipc
/// could panic on it.
#[test]
fn fuzz_crashes_are_refused_by_a_guard() {
    let cases: [(&str, &[u8], &str); 4] = [
        (
            // The `wrong_schema` seed (a required column missing) with a batch
            // whose validity buffer is too short: arrow-ipc decoded the batch
            // (and panicked, see below) before the schema was checked.
            "batch_before_schema_check",
            include_bytes!("regressions/batch_before_schema_check"),
            "",
        ),
        (
            // A schema message without a fields vector: `fb_to_schema` unwrapped it.
            "schema_without_fields",
            include_bytes!("regressions/schema_without_fields"),
            "schema without fields",
        ),
        (
            // A dictionary batch message without its record batch: arrow-ipc
            // unwrapped it.
            "dictionary_batch_without_data",
            include_bytes!("regressions/dictionary_batch_without_data"),
            "dictionary batch without data",
        ),
        (
            // A batch declaring variadic buffers (view columns only; the flow
            // schema has none): arrow-ipc asserted they were all used.
            "variadic_counts_without_views",
            include_bytes!("regressions/variadic_counts_without_views"),
            "variadic buffer counts without view columns",
        ),
    ];
    for (name, input, why) in cases {
        let (encoding, body) = input.split_first().unwrap();
        let encoding = if encoding % 2 == 1 {
            BodyEncoding::Zstd
        } else {
            BodyEncoding::Identity
        };
        match decode_body(body, encoding, 16 << 20) {
            Err(DecodeError::Malformed(m)) => assert_eq!(m, why, "{name}"),
            Err(DecodeError::Schema(_)) => assert_eq!(why, "", "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// Fuzz inputs on which arrow-ipc 59 still panics past the guards: the panic is
/// caught and the body refused like any other malformed one (a 400), never a
/// crashed request or WAL replay.
///
/// `offsets_not_a_multiple_of_4`: a Utf8 offsets buffer whose length is not a
/// multiple of 4 (`Buffer::typed_data` asserts inside `ArrayData::validate`).
/// Not guarded: in an IPC-compressed batch the real length is only known after
/// inflating every offsets buffer, which would cost the ingest path.
#[test]
fn arrow_panics_past_the_guards_are_caught() {
    let input: &[u8] = include_bytes!("regressions/offsets_not_a_multiple_of_4");
    let (_, body) = input.split_first().unwrap();
    assert!(matches!(
        decode_body(body, BodyEncoding::Identity, 16 << 20),
        Err(DecodeError::ArrowPanic)
    ));
}

/// The `batch_before_schema_check` crash on a valid flow schema: a column claims nulls but its
/// validity buffer is empty. `ArrayDataBuilder::build` asserted on it
/// (apache/arrow-rs#7124) instead of returning an error.
#[test]
fn nulls_without_a_validity_buffer_are_refused() {
    for compression in [
        None,
        Some(CompressionType::ZSTD),
        Some(CompressionType::LZ4_FRAME),
    ] {
        let mut body = encode_ipc(&[flows(16)], compression).unwrap();
        // Second message (after the schema): continuation, length, metadata.
        let word = |b: &[u8], at: usize| i32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        let schema_end = 8 + word(&body, 4) as usize;
        let meta_start = schema_end + 8;
        let meta_end = meta_start + word(&body, schema_end + 4) as usize;
        let null_count_at = {
            let meta = &body[meta_start..meta_end];
            let message = arrow::ipc::root_as_message(meta).unwrap();
            let batch = message.header_as_record_batch().unwrap();
            let node = batch.nodes().unwrap().get(0);
            assert_eq!(node.null_count(), 0, "interval_start has no nulls");
            let at = std::ptr::from_ref(node) as usize - meta.as_ptr() as usize;
            meta_start + at + 8 // FieldNode { length: i64, null_count: i64 }
        };
        body[null_count_at..null_count_at + 8].copy_from_slice(&1i64.to_le_bytes());
        match decode_body(&body, BodyEncoding::Identity, 16 << 20) {
            Err(DecodeError::Malformed(m)) => {
                assert_eq!(
                    m, "validity buffer shorter than its column",
                    "{compression:?}"
                )
            }
            other => panic!("{compression:?}: {other:?}"),
        }
    }
}

/// Dictionary-encoded string and label-map columns (what collectors send) decode
/// to the same values, still dictionaries; compressed too, and several batches
/// per stream (each with its own dictionaries).
#[test]
fn decodes_dictionary_encoded_strings() {
    let batch = flows(600);
    let wire = [
        flowlake_schemas::dictionary_encode(&batch.slice(0, 250)).unwrap(),
        flowlake_schemas::dictionary_encode(&batch.slice(250, 350)).unwrap(),
    ];
    for compression in [None, Some(CompressionType::ZSTD)] {
        let ipc = encode_ipc(&wire, compression).unwrap();
        let plain = encode_ipc(std::slice::from_ref(&batch), compression).unwrap();
        assert!(
            ipc.len() < plain.len(),
            "{} vs {} bytes",
            ipc.len(),
            plain.len()
        );
        let d = decode_body(&ipc, BodyEncoding::Identity, 1 << 30).unwrap();
        assert_eq!(d.rows, 600);
        let got: Vec<RecordBatch> = d
            .batches
            .iter()
            .map(|b| {
                for c in [col::SRC_POD, col::SRC_LABELS, col::DST_LABELS] {
                    let column = b.column_by_name(c).unwrap();
                    assert!(
                        matches!(column.data_type(), DataType::Dictionary(..)),
                        "{c}"
                    );
                }
                flowlake_schemas::plain_columns(b).unwrap()
            })
            .collect();
        let got = arrow::compute::concat_batches(&flowlake_schemas::flow_schema(), &got).unwrap();
        assert_eq!(got, batch);
    }
}

/// A required string column whose dictionary holds a null is refused (422), like
/// a null in the plain column; a dictionary of numbers where strings belong too.
#[test]
fn dictionary_nulls_and_types_are_checked() {
    let batch = flowlake_schemas::dictionary_encode(&flows(20)).unwrap();
    let keys = arrow::array::Int16Array::from(vec![0; batch.num_rows()]);
    let values: ArrayRef = Arc::new(arrow::array::StringArray::from(vec![None::<&str>]));
    let nulls = arrow::array::DictionaryArray::try_new(keys, values).unwrap();
    let bad = with_column(&batch, col::CLUSTER, Arc::new(nulls));
    let ipc = encode_ipc(&[bad], None).unwrap();
    assert!(matches!(
        decode_body(&ipc, BodyEncoding::Identity, 1 << 20),
        Err(DecodeError::Schema(_))
    ));

    let numbers = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Int64));
    let plain = flows(20);
    let packets = plain.column_by_name(col::PACKETS).unwrap();
    let bad = with_column(&plain, col::PACKETS, cast(packets, &numbers).unwrap());
    let ipc = encode_ipc(&[bad], None).unwrap();
    assert!(matches!(
        decode_body(&ipc, BodyEncoding::Identity, 1 << 20),
        Err(DecodeError::Schema(_))
    ));
    let _ = Int64Array::from(vec![0i64]);

    // A dictionary of strings where label maps belong.
    let strings = DataType::Dictionary(Box::new(DataType::Int16), Box::new(DataType::Utf8));
    let texts = arrow::array::StringArray::from(vec!["app=web"; plain.num_rows()]);
    let bad = with_column(&plain, col::SRC_LABELS, cast(&texts, &strings).unwrap());
    let ipc = encode_ipc(&[bad], None).unwrap();
    match decode_body(&ipc, BodyEncoding::Identity, 1 << 20) {
        Err(DecodeError::Schema(e)) => assert!(e.to_string().contains("src_labels"), "{e}"),
        other => panic!("{other:?}"),
    }
}

/// `batch` with column `name` replaced by `column` (of any type).
fn with_column(batch: &RecordBatch, name: &str, column: ArrayRef) -> RecordBatch {
    let idx = batch.schema().index_of(name).unwrap();
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[idx] = fields[idx]
        .clone()
        .with_data_type(column.data_type().clone());
    let mut columns = batch.columns().to_vec();
    columns[idx] = column;
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}
