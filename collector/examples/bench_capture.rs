//! Benchmark loader for a running capture (collector/bench/capture.sh): the
//! capture engine on one interface of a network namespace for `--secs`
//! seconds, writing the pcapng to `--out` (or nowhere: `-`). Prints
//! `ready` once started and, at the end, one line with packets, bytes on the
//! wire, kernel drops and the process's CPU seconds (user + system).
//!
//! `cargo run --release -p flowlake-collector --example bench_capture -- --netns /var/run/netns/X --interface vethA --secs 5`

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Parser;
use flowlake_collector::capture::engine::{self, CaptureSpec, EngineConfig, Target};
use flowlake_collector::capture::{Filter, Limits};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    netns: PathBuf,
    #[arg(long)]
    interface: String,
    #[arg(long, default_value_t = 5)]
    secs: u64,
    #[arg(long, default_value_t = 262_144)]
    snaplen: u32,
    #[arg(long, default_value = "")]
    filter: String,
    /// Where the pcapng goes; `-` discards it.
    #[arg(long, default_value = "-")]
    out: String,
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills a zeroed rusage.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn main() {
    let a = Args::parse();
    // No limit but time: the benchmark measures cost, not the limits.
    let limits = Limits {
        duration: Duration::from_secs(a.secs),
        max_bytes: u64::MAX,
        max_packets: u64::MAX,
        snaplen: a.snaplen,
    };
    let spec = CaptureSpec {
        id: "bench".into(),
        filter: Filter::compile(&a.filter, a.snaplen).expect("filter"),
        limits,
        requested_by: "bench".into(),
    };
    let config = EngineConfig {
        netns: Some(a.netns.clone()),
        ..EngineConfig::default()
    };
    let target = Target {
        interface: a.interface.clone(),
        namespace: "bench".into(),
        pod: "a".into(),
        node: "bench".into(),
    };
    let out: Box<dyn Write> = match a.out.as_str() {
        "-" => Box::new(std::io::sink()),
        path => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).expect("out"),
        )),
    };
    println!("ready");
    let cpu0 = cpu_seconds();
    let clock = flowlake_collector::enrich::system_clock();
    let stop = AtomicBool::new(false);
    let (s, _) = engine::run(
        &spec,
        &config,
        "bench",
        &mut || vec![target.clone()],
        out,
        clock,
        &stop,
    )
    .expect("capture");
    let i = &s.interfaces[0];
    println!(
        "packets={} wire_bytes={} file_bytes={} lost={} cpu_seconds={:.3}",
        s.packets,
        i.bytes_in + i.bytes_out,
        s.file_bytes,
        s.lost,
        cpu_seconds() - cpu0
    );
}
