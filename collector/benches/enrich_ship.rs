//! Flow records enriched (static IP → identity index of the gen topology) and built
//! into Arrow, per second on one core; the peer in the same run builds the same
//! records into Arrow without enrichment. Also: memory of the identity index per
//! 100k cached pod addresses, measured with a counting global allocator.
//!
//! `cargo bench -p flowlake-collector --bench enrich_ship`

use std::alloc::{GlobalAlloc, Layout};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use flowlake_collector::enrich::index::{IpIndex, Owner};
use flowlake_collector::enrich::{EnrichMetrics, Enricher};
use flowlake_gen::{GenConfig, TopologyConfig, records};
use flowlake_schemas::{FlowRecord, Identity, records_to_batch};

/// Counts live heap bytes, allocating with the `flowlake` binary's allocator.
struct Counting;

const INNER: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { INNER.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { INNER.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// A batch of gen records with their identities removed, and an index that names
/// every address they use (pods, service IPs, nodes of the gen topology).
fn workload() -> (Vec<FlowRecord>, Enricher, usize) {
    let mut cfg = GenConfig::for_tests(std::env::temp_dir());
    cfg.topology = TopologyConfig::default();
    cfg.duration = chrono::Duration::minutes(10);
    cfg.rate = 200.0;
    let mut rows = records(&cfg);
    rows.truncate(8192);
    let mut index = IpIndex::new(chrono::Duration::zero());
    for r in &mut rows {
        for end in [&mut r.src, &mut r.dst] {
            if let Some(id) = end.identity.take() {
                index.upsert(end.ip, &Owner::Static, DateTime::<Utc>::MIN_UTC, id);
            }
        }
    }
    let addresses = index.len();
    let enricher = Enricher::with_index(Arc::new(RwLock::new(index)), EnrichMetrics::default());
    (rows, enricher, addresses)
}

fn enrich_ship(c: &mut Criterion) {
    let (rows, enricher, addresses) = workload();
    eprintln!(
        "records per batch: {}, addresses in the index: {addresses}",
        rows.len()
    );
    let mut g = c.benchmark_group("enrich_ship");
    g.throughput(Throughput::Elements(rows.len() as u64));
    g.bench_function("enrich_and_arrow", |b| {
        b.iter_batched(
            || rows.clone(),
            |mut batch| {
                enricher.enrich_all(&mut batch);
                records_to_batch(&batch)
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("arrow_only", |b| {
        b.iter_batched(
            || rows.clone(),
            |batch| records_to_batch(&batch),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// Live heap bytes of an index of `n` pod addresses, each with its own identity
/// (namespace, pod, workload, kind, two labels, node, zone, like a real pod).
fn index_bytes(n: u32) -> isize {
    let before = LIVE.load(Ordering::Relaxed);
    let mut index = IpIndex::new(chrono::Duration::minutes(2));
    for i in 0..n {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        let ns = format!("team-{}", i % 50);
        let workload = format!("service-{}", i % 2000);
        let identity = Arc::new(Identity {
            pod: Some(format!("{workload}-7d9f8c6b5-{i:05x}")),
            namespace: Some(ns),
            workload: Some(workload.clone()),
            workload_kind: Some("Deployment".into()),
            labels: vec![("app".into(), workload), ("tier".into(), "backend".into())],
            node: Some(format!("node-{}", i % 500)),
            service: None,
            zone: Some(format!("zone-{}", i % 3)),
        });
        index.upsert(
            ip,
            &Owner::Pod(format!("uid-{i:08x}")),
            DateTime::<Utc>::MIN_UTC,
            identity,
        );
    }
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    assert_eq!(index.len(), n as usize);
    drop(index);
    bytes
}

fn memory() {
    for n in [100_000u32, 200_000] {
        let bytes = index_bytes(n);
        println!(
            "enrich_ship/index_memory: {n} pod addresses -> {bytes} bytes ({:.1} MiB per 100k, {} bytes per address)",
            bytes as f64 * 100_000.0 / n as f64 / (1 << 20) as f64,
            bytes / n as isize
        );
    }
}

criterion_group!(benches, enrich_ship);

fn main() {
    memory();
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
