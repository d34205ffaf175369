//! Whole-path ingest benchmark: HTTP body → WAL → sorted Parquet → Delta commit,
//! with `flowlake gen` data, and the peer (Python `deltalake` + pyarrow writing the
//! same rows to a partitioned Delta table) measured in the same run.
//!
//! `cargo bench -p flowlake-ingester --bench ingest -- [ROWS] [zstd] [inflight=N] [warm]`
//!
//! `inflight=N`: the client keeps N requests in flight (as several collectors
//! do), default 1 (send one body, wait for its ack, send the next). `warm`: the
//! same rows go through another ingester in the process first, so the measured
//! one starts with the allocator and thread pools of a running ingester rather
//! than a new process's.

use std::time::{Duration, Instant};

use futures::StreamExt;

use flowlake_ingester::{FlushPolicy, Ingester, IngesterConfig, Table, encode_ipc, routes};

/// The allocator the `flowlake` binary ships with, so the bench measures what runs.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// CPU time of this whole process (every thread: server and client), and its
/// minor page faults.
struct Usage {
    user: Duration,
    sys: Duration,
    faults: u64,
}

fn usage() -> Usage {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Usage {
        user: tv(u.ru_utime),
        sys: tv(u.ru_stime),
        faults: u.ru_minflt as u64,
    }
}

fn main() {
    let rows: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    // `zstd`: request bodies as the collector ships them (Arrow IPC with ZSTD
    // buffers, string and label-map columns dictionary-encoded); `plain-zstd`: ZSTD buffers with
    // plain string columns (the collector's bodies before dictionaries); the
    // default is uncompressed plain bodies; `lz4`: dictionary-encoded with LZ4
    // buffers (cheaper to inflate, larger).
    let arg = |name: &str| std::env::args().any(|a| a == name);
    let compression = if arg("lz4") {
        Some(arrow::ipc::CompressionType::LZ4_FRAME)
    } else {
        (arg("zstd") || arg("plain-zstd")).then_some(arrow::ipc::CompressionType::ZSTD)
    };
    let dictionaries = arg("zstd") || arg("lz4");
    let warm = arg("warm");
    let inflight: usize = std::env::args()
        .find_map(|a| a.strip_prefix("inflight=").map(|n| n.parse().unwrap()))
        .unwrap_or(1);
    let dir = tempfile::tempdir().unwrap();
    let mut gen_cfg = flowlake_gen::GenConfig::for_tests(dir.path().join("gen"));
    gen_cfg.topology.nodes = 10;
    gen_cfg.topology.namespaces = 6;
    gen_cfg.topology.workloads_per_namespace = 6;
    gen_cfg.topology.max_replicas = 5;
    gen_cfg.duration = chrono::Duration::hours(2);
    gen_cfg.rate = rows as f64 / 7200.0;
    let records = flowlake_gen::records(&gen_cfg);
    let batch = flowlake_schemas::records_to_batch(&records);
    drop(records);
    let per = 50_000;
    let encoding = std::time::Instant::now();
    let bodies: Vec<Vec<u8>> = (0..batch.num_rows().div_ceil(per))
        .map(|i| {
            let n = per.min(batch.num_rows() - i * per);
            let body = batch.slice(i * per, n);
            let body = match dictionaries {
                true => flowlake_schemas::dictionary_encode(&body).unwrap(),
                false => body,
            };
            encode_ipc(&[body], compression).unwrap()
        })
        .collect();
    let body_bytes: usize = bodies.iter().map(Vec::len).sum();
    // What encoding the bodies costs the sender (collectors, one core each).
    println!(
        "client: {} bodies encoded in {:.2?} ({})",
        bodies.len(),
        encoding.elapsed(),
        match (dictionaries, compression.is_some()) {
            (true, _) if arg("lz4") => "string and label-map columns dictionary-encoded, IPC lz4",
            (true, _) => "string and label-map columns dictionary-encoded, IPC zstd",
            (false, true) => "plain string columns, IPC zstd",
            (false, false) => "plain, uncompressed",
        }
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (elapsed, cpu, table_bytes, files, ack_to_query) = rt.block_on(async {
        // The flush policy an ingester runs with by default (flush at 1 M rows or
        // 256 MiB), but no age flushes during the run.
        let config = |name: &str| {
            let mut cfg = IngesterConfig::for_tests(&dir.path().join(name));
            cfg.flush = FlushPolicy {
                max_age: Duration::from_secs(60),
                ..FlushPolicy::default()
            };
            cfg.max_buffer_bytes = 4 << 30;
            cfg.max_body_bytes = 256 << 20;
            cfg
        };
        let client = reqwest::Client::new();
        if warm {
            // The same bodies once through another ingester first: the process's
            // allocator and thread pools then start as a running ingester's are.
            let ing = Ingester::start(config("warm-up")).await.unwrap();
            let url = format!("http://{}{}", ing.addr(), routes::FLOWS);
            for body in &bodies {
                let r = client.post(&url).body(body.clone()).send().await.unwrap();
                assert!(r.status().is_success());
            }
            ing.shutdown().await.unwrap();
        }
        let cfg = config("ingest");
        let ing = Ingester::start(cfg.clone()).await.unwrap();
        let url = format!("http://{}{}", ing.addr(), routes::FLOWS);
        println!("measuring: {} bodies to a new ingester", bodies.len());
        let started = Instant::now();
        let before = usage();
        let posts = bodies.iter().map(|body| {
            let post = client.post(&url).body(body.clone()).send();
            async move { post.await.unwrap().status() }
        });
        let statuses: Vec<_> = futures::stream::iter(posts)
            .buffer_unordered(inflight)
            .collect()
            .await;
        assert!(statuses.iter().all(|s| s.is_success()));
        ing.shutdown().await.unwrap();
        let elapsed = started.elapsed();
        let after = usage();
        let cpu = (
            after.user - before.user,
            after.sys - before.sys,
            after.faults - before.faults,
        );
        let table = Table::open(&cfg.table).await.unwrap();
        let files = table.files().unwrap();
        let committed: usize = files.iter().map(|f| f.rows.unwrap()).sum();
        assert_eq!(committed as u64, rows);
        let bytes: i64 = files.iter().map(|f| f.size).sum();

        // Ack-to-queryable with the default 15 s age flush shortened to 1 s.
        let mut cfg2 = config("fresh");
        cfg2.flush.max_age = Duration::from_secs(1);
        let ing = Ingester::start(cfg2.clone()).await.unwrap();
        let url = format!("http://{}{}", ing.addr(), routes::FLOWS);
        let r = client
            .post(&url)
            .body(bodies[0].clone())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let acked = Instant::now();
        let mut table = Table::open(&cfg2.table).await.unwrap();
        loop {
            table.refresh().await.unwrap();
            if !table.files().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ack_to_query = acked.elapsed();
        ing.shutdown().await.unwrap();
        (elapsed, cpu, bytes, files.len(), ack_to_query)
    });
    let rps = rows as f64 / elapsed.as_secs_f64();
    println!(
        "flowlake ingester: {rows} rows in {elapsed:.2?} = {rps:.0} rows/s (2-core machine, server+client in one process, {inflight} request(s) in flight)"
    );
    let (user, sys, faults) = cpu;
    let cpu = user + sys;
    let per_cpu = rows as f64 / cpu.as_secs_f64();
    println!(
        "  CPU {cpu:.2?} (user {user:.2?} + sys {sys:.2?}, server and client threads) = {per_cpu:.0} rows per CPU-second; {:.2} cores busy",
        cpu.as_secs_f64() / elapsed.as_secs_f64()
    );
    println!(
        "  {faults} minor page faults = {:.3} per row",
        faults as f64 / rows as f64
    );
    println!(
        "  request bodies {body_bytes} B; table {table_bytes} B in {files} files = {:.1} B/row",
        table_bytes as f64 / rows as f64
    );
    println!("  ack-to-queryable with 1 s flush age: {ack_to_query:.2?}");

    // The peer's input is written only now, so its writeback does not fall in the
    // ingester's measured window.
    let ipc_path = dir.path().join("all.arrows");
    std::fs::write(
        &ipc_path,
        encode_ipc(std::slice::from_ref(&batch), None).unwrap(),
    )
    .unwrap();
    let peer = std::process::Command::new("python3")
        .arg("-c")
        .arg(PEER)
        .arg(&ipc_path)
        .arg(dir.path().join("peer"))
        .output();
    match peer {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            print!("{text}");
            let field = |name: &str| -> Option<f64> {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().parse().unwrap())
            };
            if let Some(secs) = field("peer_seconds=") {
                println!(
                    "  ratio: flowlake {:.2}x the peer's rows/s",
                    secs / elapsed.as_secs_f64()
                );
            }
            if let Some(cpu_secs) = field("peer_cpu_seconds=") {
                println!(
                    "  ratio per CPU-second: flowlake {:.2}x the peer's rows per CPU-second",
                    cpu_secs / cpu.as_secs_f64()
                );
            }
        }
        Ok(out) => println!("peer failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => println!("peer skipped: python3 not runnable ({e})"),
    }
}

/// Python deltalake + pyarrow: the same rows (already decoded in memory, no HTTP,
/// no WAL) written as a date/hour-partitioned Delta table with ZSTD.
const PEER: &str = r#"
import sys, time, os, pyarrow as pa, pyarrow.ipc as ipc
from deltalake import write_deltalake, WriterProperties
src, out = sys.argv[1], sys.argv[2]
t = ipc.open_stream(pa.memory_map(src)).read_all()
t0, c0 = time.perf_counter(), time.process_time()
write_deltalake(out, t, partition_by=["date", "hour"], writer_properties=WriterProperties(compression="ZSTD"))
s, c = time.perf_counter() - t0, time.process_time() - c0
size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs if f.endswith(".parquet"))
print(f"peer python deltalake {__import__('deltalake').__version__}: {t.num_rows} rows in {s:.2f}s = {t.num_rows/s:.0f} rows/s; {size} B = {size/t.num_rows:.1f} B/row")
print(f"  peer CPU {c:.2f}s (user+sys, all threads) = {t.num_rows/c:.0f} rows per CPU-second; {c/s:.2f} cores busy")
print(f"peer_seconds={s}")
print(f"peer_cpu_seconds={c}")
"#;
