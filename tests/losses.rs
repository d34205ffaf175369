//! Losses as data (#16): what a collector loses while the ingester is away (its
//! spool over the limit, also in its final spill at shutdown) and a batch the
//! ingester refuses come back as rows of
//! the `losses` table, equal to the shipper's and the ingester's own counters and
//! to the records missing from `flows`; `flowlake standalone` writes its own
//! losses (a damaged spool batch) to its local `losses` table the same way.

use std::time::Duration;

use flowlake_collector::enrich::{EnrichMetrics, Enricher, system_clock};
use flowlake_collector::metrics::DatapathMetrics;
use flowlake_collector::retina::LossSources;
use flowlake_collector::ship::{DropReason, LossReport, ShipConfig, ShipMetrics, Shipper};
use flowlake_schemas::FlowRecord;
use prometheus_client::registry::Registry;

use crate::pipeline::sql;

/// `n` generated records on node `node`.
fn records(n: usize, node: &str) -> Vec<FlowRecord> {
    let mut cfg = flowlake_gen::GenConfig::for_tests(std::env::temp_dir());
    cfg.rate = 50.0;
    let mut all = flowlake_gen::records(&cfg);
    assert!(all.len() >= n, "workload too small");
    all.truncate(n);
    for r in &mut all {
        r.node = node.into();
    }
    all
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback address nothing listens at (yet).
fn unused_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn as_u64(v: &serde_json::Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a count: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_overflow_and_refused_batches_are_rows_of_losses() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    // The ingester's address, nothing listening there yet.
    let addr = unused_addr();

    let mut registry = Registry::default();
    let ship = ShipMetrics::register(&mut registry);
    let datapath = DatapathMetrics::new(&mut registry);
    let mut cfg = ShipConfig::for_tests(format!("http://{addr}"), dir.path().join("spool"));
    cfg.spool_max_bytes = 96 << 10;
    let shipper = Shipper::start_with_losses(
        &cfg,
        Enricher::disabled(EnrichMetrics::default()),
        ship.clone(),
        system_clock(),
        Some(LossReport {
            cluster: "c1".into(),
            node: "n1".into(),
            sources: LossSources {
                datapath: Some(datapath),
                ship: Some(ship.clone()),
            },
            sinks: None,
            every: Duration::from_millis(200),
        }),
    )
    .unwrap();

    // The ingester is away: batches go to the spool, which overflows.
    let fed = 6000u64;
    for chunk in records(fed as usize, "n1").chunks(250) {
        shipper.send(chunk.to_vec()).await.unwrap();
    }
    wait_for("the spool to overflow", || {
        ship.dropped_count(DropReason::SpoolFull) > 0
    })
    .await;
    // Let a loss report or two be cut while it is still away.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let ingester = flowlake_ingester::Ingester::start(ingester_config(dir.path(), addr))
        .await
        .unwrap();
    wait_for("the spool to drain", || shipper.pending() == 0).await;
    shipper.shutdown().await;
    let spool_full = ship.dropped_count(DropReason::SpoolFull);
    assert!(spool_full > 0 && spool_full < fed, "{spool_full}");
    assert_eq!(ship.dropped_count(DropReason::Rejected), 0);

    // A batch the ingester refuses (intervals that end before they start).
    let mut bad = records(37, "node-bad");
    for r in &mut bad {
        r.interval_end = r.interval_start - chrono::Duration::seconds(1);
    }
    let body =
        flowlake_collector::ship::encode_ipc(&flowlake_schemas::records_to_batch(&bad)).unwrap();
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("http://{addr}/api/v1/flows"))
        .header("content-type", "application/vnd.apache.arrow.stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let metrics = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused: u64 = metrics
        .lines()
        .find(|l| l.starts_with("flowlake_ingester_batches_rejected_total{reason=\"invalid\"}"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| panic!("no rejection counter in\n{metrics}"));
    assert_eq!(refused, 1);
    ingester.shutdown().await.unwrap();

    let (query, base) = query_over(&table).await;

    // What reached `flows` plus what `losses` says was lost is what was fed.
    let stored = as_u64(&sql(&base, "select count(*) as n from flows").await[0]["n"]);
    let lost = sql(
        &base,
        "select component, unit, sum(lost) as lost, min(interval_start) <= max(interval_end) as ordered \
         from losses where node = 'n1' and cluster = 'c1' and kind = 'spool_full' group by 1, 2",
    )
    .await;
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0]["component"], "shipper");
    assert_eq!(lost[0]["unit"], "records");
    assert_eq!(
        as_u64(&lost[0]["lost"]),
        spool_full,
        "rows = the shipper's counter"
    );
    assert_eq!(stored + spool_full, fed, "flows + losses = records fed");

    // The refused batch: one row for its node, its records, the reason.
    let refusals = sql(
        &base,
        "select node, unit, kind, detail, sum(lost) as lost, count(*) as rows from losses \
         where component = 'ingester' group by 1, 2, 3, 4",
    )
    .await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    let r = &refusals[0];
    assert_eq!(
        (&r["node"], &r["unit"], &r["kind"], &r["detail"]),
        (
            &serde_json::json!("node-bad"),
            &serde_json::json!("records"),
            &serde_json::json!("rejected"),
            &serde_json::json!("invalid")
        )
    );
    assert_eq!(as_u64(&r["lost"]), bad.len() as u64);
    assert_eq!(
        as_u64(&r["rows"]),
        refused,
        "one row per refused batch and node"
    );

    // A per-pod question over the last hour says which nodes' hours miss what.
    let said = losses_header(&format!("{base}/api/v1/questions/talkers")).await;
    let of = |node: &str, kind: &str| -> u64 {
        said.iter()
            .filter(|l| l["node"] == node && l["kind"] == kind)
            .map(|l| as_u64(&l["lost"]))
            .sum()
    };
    assert_eq!(of("n1", "spool_full"), spool_full, "{said:?}");
    // (The refused batch's row lies at its records' generated times, outside.)
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said.iter()
            .all(|l| l["hour"].is_string() && l["unit"].is_string())
    );
    query.stop().await.unwrap();
}

/// A query service over the table at `table`, and its base URL.
async fn query_over(table: &std::path::Path) -> (flowlake_query::RunningQuery, String) {
    let query = flowlake_query::QueryService::start(flowlake_query::QueryConfig::for_tests(
        table.to_string_lossy(),
    ))
    .await
    .unwrap();
    let base = format!("http://{}", query.addr());
    (query, base)
}

/// The `flowlake-losses` header of a GET (empty when absent).
async fn losses_header(url: &str) -> Vec<serde_json::Value> {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-D", "-", url])
        .output()
        .await
        .unwrap();
    let head = String::from_utf8(out.stdout).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    head.lines()
        .find_map(|l| l.strip_prefix("flowlake-losses: "))
        .map(|v| serde_json::from_str::<Vec<serde_json::Value>>(v.trim()).unwrap())
        .unwrap_or_default()
}

/// What the spool deletes for room during the shipper's final spill (after the
/// batcher's last report) is a row of `losses` too: the shipper's last loss
/// batch, written to the spool and sent at the next start. Truth: the records
/// fed minus those in `flows`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_spill_deletions_are_rows_of_losses() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    // Where the ingester will be: for now the kernel takes connections and
    // nobody answers, so the first batch hangs and the rest wait in memory.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hole.local_addr().unwrap();

    let mut registry = Registry::default();
    let ship = ShipMetrics::register(&mut registry);
    let mut cfg = ShipConfig::for_tests(format!("http://{addr}"), dir.path().join("spool"));
    cfg.spool_max_bytes = 96 << 10;
    cfg.memory_max_bytes = 64 << 20;
    cfg.request_timeout = Duration::from_secs(120);
    cfg.drain_timeout = Duration::from_millis(300);
    let report = LossReport {
        cluster: "c1".into(),
        node: "n1".into(),
        sources: LossSources {
            datapath: None,
            ship: Some(ship.clone()),
        },
        sinks: None,
        every: Duration::from_secs(3600),
    };
    let shipper = Shipper::start_with_losses(
        &cfg,
        Enricher::disabled(EnrichMetrics::default()),
        ship.clone(),
        system_clock(),
        Some(report),
    )
    .unwrap();
    let fed = 6000u64;
    for chunk in records(fed as usize, "n1").chunks(250) {
        shipper.send(chunk.to_vec()).await.unwrap();
    }
    wait_for("the batches to be cut", || shipper.pending() >= 10).await;
    assert_eq!(
        ship.dropped_count(DropReason::SpoolFull),
        0,
        "nothing deleted before the final spill"
    );
    shipper.shutdown().await;
    let spool_full = ship.dropped_count(DropReason::SpoolFull);
    assert!(spool_full > 0 && spool_full < fed, "{spool_full}");
    drop(hole);

    // The next start, with the ingester there: the spool is sent.
    let ingester = flowlake_ingester::Ingester::start(ingester_config(dir.path(), addr))
        .await
        .unwrap();
    let ship2 = ShipMetrics::register(&mut Registry::default());
    let shipper = Shipper::start(
        &cfg,
        Enricher::disabled(EnrichMetrics::default()),
        ship2,
        system_clock(),
    )
    .unwrap();
    wait_for("the spool to drain", || shipper.pending() == 0).await;
    shipper.shutdown().await;
    ingester.shutdown().await.unwrap();

    let (query, base) = query_over(&table).await;
    let stored = as_u64(&sql(&base, "select count(*) as n from flows").await[0]["n"]);
    let lost = sql(
        &base,
        "select component, unit, sum(lost) as lost from losses \
         where node = 'n1' and kind = 'spool_full' group by 1, 2",
    )
    .await;
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(
        (&lost[0]["component"], &lost[0]["unit"]),
        (&serde_json::json!("shipper"), &serde_json::json!("records"))
    );
    assert_eq!(
        as_u64(&lost[0]["lost"]),
        spool_full,
        "rows = the shipper's counter"
    );
    assert_eq!(stored + spool_full, fed, "flows + losses = records fed");
    query.stop().await.unwrap();
}

/// An ingester at `addr` writing `<dir>/table`, WAL in `<dir>/wal`.
fn ingester_config(
    dir: &std::path::Path,
    addr: std::net::SocketAddr,
) -> flowlake_ingester::IngesterConfig {
    let mut ingest = flowlake_ingester::IngesterConfig {
        listen: addr,
        wal_dir: dir.join("wal"),
        ..Default::default()
    };
    ingest.table.location = dir.join("table").to_string_lossy().into_owned();
    ingest.flush.max_age = Duration::from_millis(200);
    ingest
}

/// `flowlake standalone` writes its own losses to its local `losses` table as a
/// node's collector reports them to an ingester: here a batch of its spool
/// damaged on disk (left by an earlier run whose ingester never answered, one
/// byte flipped), which standalone drops at start. Truth: the records the test
/// fed to the earlier run; the damaged file's own count of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_writes_its_losses_to_its_local_table() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    // The earlier run: every batch spooled (nothing listens at `addr`).
    let addr = unused_addr();
    let ship = ShipMetrics::register(&mut Registry::default());
    let mut cfg = ShipConfig::for_tests(format!("http://{addr}"), spool.clone());
    cfg.drain_timeout = Duration::from_millis(300);
    let shipper = Shipper::start(
        &cfg,
        Enricher::disabled(EnrichMetrics::default()),
        ship.clone(),
        system_clock(),
    )
    .unwrap();
    let fed = 2000u64;
    for chunk in records(fed as usize, "n-spooled").chunks(250) {
        shipper.send(chunk.to_vec()).await.unwrap();
    }
    shipper.shutdown().await;
    let mut files: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "batch"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "batches spooled: {files:?}");
    // Damage the oldest: the last byte of its Arrow stream. Its header (docs
    // in collector/src/ship/spool.rs) still says how many records it held.
    let mut data = std::fs::read(&files[0]).unwrap();
    let damaged = u64::from_le_bytes(data[36..44].try_into().unwrap());
    assert!(damaged > 0 && damaged < fed, "{damaged}");
    *data.last_mut().unwrap() ^= 0xff;
    std::fs::write(&files[0], &data).unwrap();

    let mut child = crate::flowlake()
        .args(["standalone", "--source", "gen", "--gen-rate", "1"])
        .args(["--listen", "127.0.0.1:0", "--flush-age", "1s", "--data-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = standalone_endpoint(child.stdout.take().unwrap());
    // The replayed spool in `flows`, the damaged batch in `losses` (the first
    // loss report is cut 10 s after the start).
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let (stored, lost) = loop {
        let stored = sql(
            &base,
            "select count(*) as n from flows where node = 'n-spooled'",
        )
        .await;
        let lost = sql(
            &base,
            "select cluster, node, component, unit, sum(lost) as lost from losses \
             where kind = 'corrupt' group by 1, 2, 3, 4",
        )
        .await;
        let stored = as_u64(&stored[0]["n"]);
        if (stored + damaged >= fed && !lost.is_empty()) || std::time::Instant::now() > deadline {
            break (stored, lost);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(lost.len(), 1, "one corrupt row: {lost:?}");
    let l = &lost[0];
    assert_eq!(
        (&l["cluster"], &l["node"], &l["component"], &l["unit"]),
        (
            &serde_json::json!("standalone"),
            &serde_json::json!(node.trim()),
            &serde_json::json!("shipper"),
            &serde_json::json!("records")
        )
    );
    assert_eq!(as_u64(&l["lost"]), damaged, "the damaged batch's records");
    assert_eq!(stored + damaged, fed, "flows + losses = records fed");

    let pid = child.id().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(child.wait().unwrap().success(), "clean exit on SIGTERM");
}

/// The base URL standalone prints on its `SQL:` line; the rest of its output
/// is read (and dropped) by a thread, so its prints never meet a closed pipe.
fn standalone_endpoint(stdout: std::process::ChildStdout) -> String {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let base = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find_map(|l| {
            let rest = l.trim().strip_prefix("SQL:")?.to_string();
            let url = rest.split_whitespace().find(|w| w.starts_with("http://"))?;
            Some(url.trim_end_matches("/api/v1/sql").to_string())
        })
        .expect("standalone printed its SQL endpoint");
    std::thread::spawn(move || lines.for_each(drop));
    base
}
