//! Per-sink cost in the collector (collector/bench/sinks.sh): synthetic flow
//! records at `--rate` flows/s through the sink layer with 0, 1, 2 and 3 sinks
//! (ingester; + IPFIX over UDP; + JSON-lines), one after the other in one run.
//! The receivers (an HTTP endpoint that takes `POST /api/v1/flows` and a UDP
//! socket that reads and discards) run in a child process (`recv` mode), so the
//! process CPU measured here is the collector side only. Prints one line per
//! configuration: sinks, records, wall seconds, CPU seconds, cores per 10k flows/s.
//!
//! `cargo run --release -p flowlake-collector --example bench_sinks -- --rate 10000 --secs 20`

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use flowlake_collector::enrich::{EnrichMetrics, Enricher, system_clock};
use flowlake_collector::ship::{ShipConfig, ShipMetrics, Shipper};
use flowlake_collector::sink::ipfix::{IpfixConfig, Transport};
use flowlake_collector::sink::{self, SinkConfig, SinkKind, SinkLoss, SinkMetrics, SinkSet};

#[derive(Parser, Debug)]
struct Args {
    /// `recv`: run the receivers and print their ports.
    #[arg(default_value = "run")]
    mode: String,
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// Records per batch handed to the sinks (the datapath hands one per eviction scan).
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills a zeroed rusage.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

async fn receive() {
    let app = axum::Router::new().route(
        "/api/v1/flows",
        axum::routing::post(|body: axum::body::Bytes| async move {
            std::hint::black_box(body.len());
            "ok"
        }),
    );
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    println!(
        "{} {}",
        http.local_addr().unwrap().port(),
        udp.local_addr().unwrap().port()
    );
    std::io::stdout().flush().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while udp.recv(&mut buf).await.is_ok() {}
    });
    axum::serve(http, app).await.unwrap();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = Args::parse();
    if a.mode == "recv" {
        return receive().await;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("recv")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ports: Vec<u16> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();

    let mut gen_cfg = flowlake_gen::GenConfig::for_tests(std::env::temp_dir());
    gen_cfg.rate = 200.0;
    let records = flowlake_gen::records(&gen_cfg);
    assert!(records.len() >= a.batch, "workload too small");
    let dir = tempfile::tempdir().unwrap();
    println!(
        "sinks\trecords\twall_s\tcpu_s\tcores_per_10k_flows_s\tdropped (rate {} flows/s, batches of {})",
        a.rate, a.batch
    );
    let configs: [&[SinkKind]; 4] = [
        &[],
        &[SinkKind::Ingester],
        &[SinkKind::Ingester, SinkKind::Ipfix],
        &[SinkKind::Ingester, SinkKind::Ipfix, SinkKind::Jsonl],
    ];
    for kinds in configs {
        let mut ship = ShipConfig::for_tests(
            format!("http://127.0.0.1:{}", ports[0]),
            dir.path().join(format!("spool{}", kinds.len())),
        );
        ship.flush = ShipConfig::default().flush;
        let shipper = Shipper::start(
            &ship,
            Enricher::disabled(EnrichMetrics::default()),
            ShipMetrics::default(),
            system_clock(),
        )
        .unwrap();
        let mut cfg = SinkConfig {
            sinks: kinds.to_vec(),
            ipfix: Some(IpfixConfig::new(
                format!("127.0.0.1:{}", ports[1]),
                Transport::Udp,
            )),
            ..SinkConfig::default()
        };
        cfg.jsonl.path = dir.path().join("flows.jsonl");
        let metrics = SinkMetrics::default();
        let set = SinkSet::start(
            sink::open(&cfg, Some(shipper.sender())).unwrap(),
            cfg.queue_batches,
            metrics.clone(),
            system_clock(),
        )
        .unwrap();
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let every = Duration::from_secs_f64(a.batch as f64 / a.rate as f64);
        let mut tick = tokio::time::interval(every);
        let (mut sent, mut at) = (0u64, 0usize);
        while t0.elapsed() < Duration::from_secs(a.secs) {
            tick.tick().await;
            if at + a.batch > records.len() {
                at = 0;
            }
            set.send(records[at..at + a.batch].to_vec());
            at += a.batch;
            sent += a.batch as u64;
        }
        tokio::task::spawn_blocking(move || set.close())
            .await
            .unwrap();
        shipper.shutdown().await;
        let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        let dropped: u64 = ["ingester", "ipfix", "jsonl"]
            .iter()
            .flat_map(|s| {
                [
                    SinkLoss::QueueFull,
                    SinkLoss::SendError,
                    SinkLoss::WriteError,
                ]
                .map(|w| metrics.dropped_count(s, w))
            })
            .sum();
        let name = kinds
            .iter()
            .map(|k| format!("{k:?}").to_lowercase())
            .collect::<Vec<_>>()
            .join(",");
        let rate = sent as f64 / wall;
        println!(
            "{}\t{sent}\t{wall:.1}\t{cpu:.2}\t{:.4}\t{dropped}",
            if name.is_empty() { "none" } else { &name },
            cpu / wall / (rate / 10_000.0)
        );
        let _ = std::fs::remove_dir_all(dir.path().join(format!("spool{}", kinds.len())));
    }
    let _ = child.kill();
    let _ = child.wait();
}
