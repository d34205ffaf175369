//! Records → RecordBatch builder throughput on one core, with `flowlake gen` records,
//! in batches of 8k and 64k records.
//!
//! `cargo bench -p flowlake-gen --bench builder`
//!
//! Peers in the same run: the same rows decoded from NDJSON by arrow-json (the generic
//! row → columnar path), and a plain clone of the records (touching the data once).

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use arrow::json::ReaderBuilder;
use arrow::json::writer::LineDelimitedWriter;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowlake_gen::{GenConfig, records};
use flowlake_schemas::{FlowBatchBuilder, flow_schema, records_to_batch};

/// The `flowlake` binary's allocator.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn json_schema() -> SchemaRef {
    let fields: Vec<Field> = flow_schema()
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Timestamp(unit, Some(_)) => {
                let tz = DataType::Timestamp(*unit, Some("+00:00".into()));
                f.as_ref().clone().with_data_type(tz)
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

fn builder(c: &mut Criterion) {
    let mut cfg = GenConfig::for_tests(std::env::temp_dir());
    cfg.duration = chrono::Duration::minutes(10);
    cfg.rate = 200.0;
    let all = records(&cfg);
    // A collector ships a batch per second or per 64k records, whichever comes first:
    // 8k records is a node at 8k flows/s, 64k the largest batch.
    for n in [8_192, 65_536] {
        bench_batch(c, &all[..n.min(all.len())]);
    }
}

fn bench_batch(c: &mut Criterion, rows: &[flowlake_schemas::FlowRecord]) {
    let n = rows.len();
    // arrow-json knows offset time zones only (no chrono-tz): the peer reads and
    // writes the timestamps as "+00:00", the same instants.
    let json_schema = json_schema();
    let batch = records_to_batch(rows);
    let batch = RecordBatch::try_new(
        Arc::clone(&json_schema),
        batch
            .columns()
            .iter()
            .zip(json_schema.fields())
            .map(|(c, f)| cast(c, f.data_type()).unwrap())
            .collect(),
    )
    .unwrap();
    let mut ndjson = Vec::new();
    {
        let mut w = LineDelimitedWriter::new(&mut ndjson);
        w.write(&batch).unwrap();
        w.finish().unwrap();
    }

    let mut group = c.benchmark_group(format!("builder_{n}"));
    group.throughput(Throughput::Elements(n as u64));
    let mut b = FlowBatchBuilder::with_capacity(n);
    group.bench_function("flowlake_builder", |bench| {
        bench.iter(|| {
            b.extend(rows);
            std::hint::black_box(b.finish())
        })
    });
    group.bench_function("peer_arrow_json_decode", |bench| {
        bench.iter(|| {
            let reader = ReaderBuilder::new(Arc::clone(&json_schema))
                .with_batch_size(n)
                .build(Cursor::new(&ndjson))
                .unwrap();
            for batch in reader {
                std::hint::black_box(batch.unwrap());
            }
        })
    });
    group.bench_function("peer_clone_records", |bench| {
        bench.iter(|| std::hint::black_box(rows.to_vec()))
    });
    group.finish();
}

criterion_group!(benches, builder);
criterion_main!(benches);
