//! Benchmark loader (collector/bench/*.sh): runs the collector datapath in a
//! network namespace, optionally with the minimal packet counter
//! (ebpf/counter.bpf.c) attached beside it on the same interfaces, until
//! SIGINT/SIGTERM. Prints one `ready pid=.. progs=name:id,..` line once
//! attached (ids for `bpftool prog show id N`), `records_total=N` after each
//! batch of flow records, and `records=N` at exit.
//!
//! `cargo run -p flowlake-collector --example bench_attach -- --netns /var/run/netns/X --counter vethA`

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use aya::EbpfLoader;
use aya::programs::tc::TcAttachOptions;
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use clap::Parser;
use flowlake_collector::datapath::objects;
use flowlake_collector::{Datapath, DatapathConfig, DatapathMetrics};
use prometheus_client::registry::Registry;

#[derive(Parser, Debug)]
struct Args {
    /// Network namespace to observe (a bind-mounted netns file).
    #[arg(long)]
    netns: PathBuf,
    /// Interfaces (in that namespace) that also get the minimal counter, both hooks.
    #[arg(long)]
    counter: Vec<String>,
    /// Attach the counter before the flow programs on each hook instead of
    /// after them (the fairness check of the cost comparison).
    #[arg(long)]
    counter_first: bool,
    /// Run only the counter, not the collector datapath.
    #[arg(long)]
    no_datapath: bool,
    /// In-kernel flow map capacity.
    #[arg(long, default_value_t = 1 << 17)]
    flow_map_entries: u32,
    /// Active timeout of the datapath.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    active_timeout: Duration,
    /// Idle timeout of the datapath.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    // Block the stop signals in every thread; the main thread waits for them.
    // SAFETY: sigset manipulation on a local set, then masking this thread.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    enter_netns(&args.netns)?;

    let datapath = if args.no_datapath {
        None
    } else {
        let mut registry = Registry::default();
        let metrics = DatapathMetrics::new(&mut registry);
        let config = DatapathConfig {
            netns: Some(args.netns.clone()),
            node_interfaces: vec!["-".into()],
            active_timeout: args.active_timeout,
            idle_timeout: args.idle_timeout,
            flow_map_entries: args.flow_map_entries,
            ..DatapathConfig::default()
        };
        let (dp, mut rx) = Datapath::start(config, metrics)?;
        let consumer = std::thread::spawn(move || {
            let mut n = 0u64;
            while let Some(batch) = rx.blocking_recv() {
                n += batch.len() as u64;
                println!("records_total={n}");
            }
            n
        });
        Some((dp, consumer))
    };

    // By default the counter runs after the flow programs on each hook (TCX
    // appends); `--counter-first` puts it in front, so it meets the skb first.
    let mut counter = EbpfLoader::new().load(objects::COUNTER)?;
    if !args.counter.is_empty() {
        let prog: &mut SchedClassifier = counter
            .program_mut("count_packets")
            .ok_or("count_packets missing")?
            .try_into()?;
        prog.load()?;
        for iface in &args.counter {
            for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
                if args.counter_first {
                    prog.attach_with_options(
                        iface,
                        hook,
                        TcAttachOptions::TcxOrder(LinkOrder::first()),
                    )?;
                } else {
                    prog.attach(iface, hook)?;
                }
            }
        }
    }

    let progs: Vec<String> = own_programs()
        .into_iter()
        .map(|(id, name)| format!("{name}:{id}"))
        .collect();
    let attached = datapath
        .as_ref()
        .map(|(dp, _)| dp.interfaces().join(","))
        .unwrap_or_default();
    println!(
        "ready pid={} progs={} attached={attached}",
        std::process::id(),
        progs.join(",")
    );

    let mut sig = 0;
    // SAFETY: waiting on the signal set blocked above.
    unsafe { libc::sigwait(&set, &mut sig) };
    drop(counter);
    if let Some((dp, consumer)) = datapath {
        dp.stop()?;
        let n = consumer.join().map_err(|_| "consumer panicked")?;
        println!("records={n}");
    }
    Ok(())
}

fn enter_netns(path: &std::path::Path) -> Result<(), BoxError> {
    let f = std::fs::File::open(path)?;
    // SAFETY: setns on a valid netns fd; threads spawned later inherit it.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// (id, name) of every BPF program this process holds an fd of.
fn own_programs() -> Vec<(u32, String)> {
    let mut ids: Vec<u32> = std::fs::read_dir("/proc/self/fdinfo")
        .into_iter()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .filter(|p| ids.contains(&p.id()))
        .map(|p| (p.id(), p.name_as_str().unwrap_or("?").to_string()))
        .collect()
}
