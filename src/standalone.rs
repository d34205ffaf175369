//! `flowlake standalone`: ingester, query service and a flow source in one process,
//! on a local table — the newcomer's first run. The collector's sinks (`--sinks
//! ipfix,jsonl` and their flags, docs/exporters.md) get the same flows beside the
//! local table. What this machine's collector loses (kernel maps, its channel, its
//! spool) becomes rows of the local `losses` table, as a node's collector reports
//! it to an ingester (docs/schema.md, "Losses").

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use flowlake_collector::enrich::{EnrichMetrics, Enricher, system_clock};
use flowlake_collector::retina::LossSources;
use flowlake_collector::ship::{LossReport, ShipConfig, ShipMetrics, Shipper};
use flowlake_collector::sink::{SinkArgs, SinkConfig, SinkKind, SinkMetrics, SinkSet};
use flowlake_collector::{Datapath, DatapathConfig, DatapathMetrics};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Where standalone's flows come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// eBPF on this machine when privileged, synthetic traffic otherwise.
    Auto,
    /// eBPF on this machine (needs root and BPF).
    Ebpf,
    /// `flowlake gen` traffic of a synthetic cluster.
    Gen,
}

#[derive(Debug, clap::Args)]
pub struct StandaloneArgs {
    /// Directory for the table, the WAL and the spool.
    #[arg(long, default_value = "flowlake-data", env = "FLOWLAKE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address of the query service (SQL, per-pod questions, Grafana).
    #[arg(
        long,
        default_value = "127.0.0.1:8080",
        env = "FLOWLAKE_STANDALONE_LISTEN"
    )]
    pub listen: SocketAddr,
    #[arg(
        long,
        value_enum,
        default_value = "auto",
        env = "FLOWLAKE_STANDALONE_SOURCE"
    )]
    pub source: Source,
    /// Synthetic flow records per second (with `--source gen`).
    #[arg(long, default_value_t = 200.0, env = "FLOWLAKE_STANDALONE_GEN_RATE")]
    pub gen_rate: f64,
    /// How often buffered rows are committed to the table.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, env = "FLOWLAKE_STANDALONE_FLUSH_AGE")]
    pub flush_age: Duration,
    /// Sinks beside the local table (which is always written: `ingester` is implied).
    #[command(flatten)]
    pub sinks: SinkArgs,
}

/// The sinks of `args` with the local table's ingester always among them.
fn sink_config(args: SinkArgs) -> SinkConfig {
    let mut config = SinkConfig::from(args);
    if !config.has(SinkKind::Ingester) {
        config.sinks.insert(0, SinkKind::Ingester);
    }
    config
}

/// Runs until Ctrl-C (or SIGTERM).
pub fn run(args: StandaloneArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async { serve(args, flowlake_service::shutdown_signal()).await })
}

/// A flow source feeding the shipper.
enum Feed {
    Ebpf(Datapath, tokio::task::JoinHandle<()>),
    Gen(tokio::task::JoinHandle<()>),
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The cluster name of standalone's rows (flows and losses).
const CLUSTER: &str = "standalone";

/// Starts the eBPF datapath on this machine's interfaces, or says why it cannot.
/// Its losses are counted in `metrics`, which the shipper's loss report reads.
fn start_ebpf(sinks: &Arc<SinkSet>, metrics: &DatapathMetrics) -> anyhow::Result<Feed> {
    let config = DatapathConfig {
        cluster: CLUSTER.into(),
        node: hostname(),
        ..DatapathConfig::default()
    };
    let (datapath, flows) = Datapath::start(config, metrics.clone())?;
    let enricher = Enricher::disabled(EnrichMetrics::register(&mut Registry::default()));
    let forward = tokio::spawn(flowlake_collector::agent::forward(
        flows,
        enricher,
        Arc::clone(sinks),
        None,
    ));
    println!(
        "observing this machine's traffic on {:?}",
        datapath.interfaces()
    );
    Ok(Feed::Ebpf(datapath, forward))
}

fn start_gen(sinks: &Arc<SinkSet>, rate: f64, stop: CancellationToken) -> Feed {
    let mut cfg = flowlake_gen::GenConfig::for_tests(PathBuf::new());
    cfg.topology = flowlake_gen::TopologyConfig::default();
    cfg.rate = rate;
    cfg.drop_share = 0.005;
    let feed = flowlake_gen::LiveFeed::new(cfg);
    let sinks = Arc::clone(sinks);
    let task = tokio::spawn(async move {
        let mut next = feed.interval_start(chrono::Utc::now());
        loop {
            let wait = (next + chrono::Duration::seconds(10) - chrono::Utc::now())
                .to_std()
                .unwrap_or_default();
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            // An interval is reported when it ends, like the collector does.
            sinks.send(feed.interval(next));
            next += chrono::Duration::seconds(10);
        }
    });
    println!("feeding synthetic traffic of a demo cluster ({rate} flow records/s)");
    Feed::Gen(task)
}

async fn serve(args: StandaloneArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let data = &args.data_dir;
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let table = data.join("table");
    let table_location = table.to_string_lossy().into_owned();

    let mut ingest = flowlake_ingester::IngesterConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        wal_dir: data.join("wal"),
        ..Default::default()
    };
    ingest.table.location = table_location.clone();
    ingest.flush.max_age = args.flush_age;
    let ingester = flowlake_ingester::Ingester::start(ingest)
        .await
        .context("starting the ingester")?;

    let mut query = flowlake_query::QueryConfig {
        listen: args.listen,
        ..Default::default()
    };
    query.table.location = table_location;
    query.snapshot_max_age = Duration::from_secs(1);
    let query = flowlake_query::QueryService::start(query)
        .await
        .with_context(|| format!("starting the query service on {}", args.listen))?;

    let ship = ShipConfig {
        ingester_url: format!("http://{}", ingester.addr()),
        spool_dir: data.join("spool"),
        ..ShipConfig::default()
    };
    // The collector's loss counters, read by the shipper's loss report into the
    // local `losses` table (as `flowlake collector` does).
    let mut registry = Registry::default();
    let datapath_metrics = DatapathMetrics::new(&mut registry);
    let ship_metrics = ShipMetrics::register(&mut registry);
    // The local table's ingester sink is always there.
    let sink_metrics = SinkMetrics::register(&mut registry);
    let report = LossReport {
        cluster: CLUSTER.into(),
        node: hostname(),
        sources: LossSources {
            datapath: Some(datapath_metrics.clone()),
            ship: Some(ship_metrics.clone()),
        },
        sinks: Some(sink_metrics.clone()),
        every: ship.loss_report_every,
    };
    let shipper = Shipper::start_with_losses(
        &ship,
        Enricher::disabled(EnrichMetrics::register(&mut Registry::default())),
        ship_metrics,
        system_clock(),
        Some(report),
    )?;
    let sink_config = sink_config(args.sinks);
    let sinks = Arc::new(SinkSet::start(
        flowlake_collector::sink::open(&sink_config, Some(shipper.sender()))?,
        sink_config.queue_batches,
        sink_metrics,
        system_clock(),
    )?);

    let feed = match args.source {
        Source::Gen => start_gen(&sinks, args.gen_rate, shutdown.clone()),
        Source::Ebpf => start_ebpf(&sinks, &datapath_metrics)?,
        Source::Auto => match start_ebpf(&sinks, &datapath_metrics) {
            Ok(feed) => feed,
            Err(e) => {
                println!(
                    "cannot observe this machine with eBPF ({:#}); run as root with BPF for real traffic",
                    e
                );
                start_gen(&sinks, args.gen_rate, shutdown.clone())
            }
        },
    };

    let base = format!("http://{}", query.addr());
    println!("flowlake standalone: table in {}", table.display());
    if sink_config.has(SinkKind::Jsonl) {
        println!("  flow log:  {}", sink_config.jsonl.path.display());
    }
    if let Some(ipfix) = &sink_config.ipfix {
        println!("  IPFIX:     {} ({:?})", ipfix.target, ipfix.transport);
    }
    println!(
        "  SQL:       curl -s {base}/api/v1/sql -H 'content-type: application/json' -d '{{\"sql\": \"select count(*) from flows\"}}'"
    );
    println!("  questions: {base}/api/v1/questions/drops?by=pod");
    println!("  Grafana:   {base}/grafana (JSON datasource), OpenAPI: {base}/api/v1/openapi.json");
    println!(
        "rows become queryable about {:?} after they are observed; Ctrl-C stops",
        args.flush_age + Duration::from_secs(10)
    );

    shutdown.cancelled().await;
    println!("stopping…");
    match feed {
        Feed::Ebpf(datapath, forward) => {
            tokio::task::spawn_blocking(move || datapath.stop()).await??;
            let _ = forward.await;
        }
        Feed::Gen(task) => {
            let _ = task.await;
        }
    }
    // Every sink writes what it holds before the shipper drains into the table.
    if let Ok(sinks) = Arc::try_unwrap(sinks) {
        tokio::task::spawn_blocking(move || sinks.close()).await?;
    }
    shipper.shutdown().await;
    ingester.shutdown().await.context("stopping the ingester")?;
    query.stop().await.context("stopping the query service")?;
    Ok(())
}
