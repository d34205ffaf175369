//! Command-line interface of the `flowlake` binary.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

/// Network-flow history for Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "flowlake", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(
        long,
        global = true,
        default_value = "info,buoyant_kernel=warn,deltalake_core=warn",
        env = "FLOWLAKE_LOG"
    )]
    pub log: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a deterministic synthetic workload of flow records.
    Gen(flowlake_gen::GenArgs),
    /// Node agent: eBPF flows, drops, DNS and TCP health, shipped to the ingester.
    Collector(Box<flowlake_collector::agent::AgentArgs>),
    /// Receive Arrow batches over HTTP and store them as a Delta Lake table.
    Ingester(flowlake_ingester::IngesterArgs),
    /// SQL over HTTP, per-pod questions and the Grafana datasource.
    Query(flowlake_query::QueryArgs),
    /// Merge small files of closed partitions and apply retention.
    Compact(flowlake_ingester::CompactCommandArgs),
    /// Export a query or time range to Parquet or Delta on any object store.
    Export(flowlake_query::ExportArgs),
    /// Packet captures of selected pods through the query service: create, list, status, download, delete.
    Capture(flowlake_query::capture::client::CaptureArgs),
    /// Collector, ingester and query in one process on a local table.
    Standalone(crate::standalone::StandaloneArgs),
}

pub fn init_logging(args: &LogArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Gen(args) => {
            let cfg = args.into_config(chrono::Utc::now())?;
            let started = std::time::Instant::now();
            let summary = flowlake_gen::generate(&cfg)
                .with_context(|| format!("generating into {}", cfg.out.display()))?;
            println!(
                "wrote {} rows in {} files ({} bytes) to {} in {:.1?}",
                summary.rows,
                summary.files.len(),
                summary.bytes,
                cfg.out.display(),
                started.elapsed()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Collector(args) if args.check => {
            let found = flowlake_collector::preflight::check(&args.datapath.clone().into());
            if args.check_json {
                println!("{}", found.to_json());
            } else {
                print!("{}", found.render());
            }
            Ok(if found.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Collector(args) => {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(async {
                    let shutdown = flowlake_service::shutdown_signal();
                    flowlake_collector::agent::run((*args).into(), shutdown).await
                })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingester(args) => {
            let mut cfg = args.into_config()?;
            cfg.table = cfg.table.with_env(std::env::vars());
            flowlake_ingester::run_blocking(cfg)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Query(args) => {
            flowlake_query::query_main(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Compact(args) => {
            let table = args.table.into_location().with_env(std::env::vars());
            let summary = flowlake_ingester::compact_blocking(table, args.compact.into_config())?;
            println!("{summary:?}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Export(args) => {
            flowlake_query::export_main(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Capture(args) => {
            flowlake_query::capture::client::capture_main(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Standalone(args) => {
            crate::standalone::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
