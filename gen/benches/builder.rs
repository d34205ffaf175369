//! Records → RecordBatch builder throughput on one core, with `flowlake gen` records.
//!
//! `cargo bench -p flowlake-gen --bench builder`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowlake_gen::{GenConfig, records};
use flowlake_schemas::FlowBatchBuilder;

fn builder(c: &mut Criterion) {
    let mut cfg = GenConfig::for_tests(std::env::temp_dir());
    cfg.duration = chrono::Duration::minutes(10);
    cfg.rate = 200.0;
    let rows = records(&cfg);
    let batch = 65_536.min(rows.len());
    let mut group = c.benchmark_group("builder");
    group.throughput(Throughput::Elements(batch as u64));
    let mut b = FlowBatchBuilder::with_capacity(batch);
    group.bench_function("records_to_batch_64k", |bench| {
        bench.iter(|| {
            b.extend(&rows[..batch]);
            std::hint::black_box(b.finish())
        })
    });
    group.finish();
}

criterion_group!(benches, builder);
criterion_main!(benches);
