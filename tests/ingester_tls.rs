//! A collector ships to an ingester over TLS with a token: with the CA that signed the
//! ingester's certificate rows land; with another CA (or a token the ingester does not
//! know) it is refused with a clear error and the batches wait in the spool until the
//! CA or token file is fixed (read again without a restart); a renewed certificate is
//! served without a restart and the collector keeps shipping.
//!
//! Certificates come from the `openssl` command (a CA and a leaf it signs, as
//! cert-manager writes them: `flowlake_testkit::tls`); without it the test skips, and
//! fails when FLOWLAKE_REQUIRE_PRIVILEGED=1.

use std::path::Path;
use std::time::Duration;

use flowlake_collector::enrich::{EnrichMetrics, Enricher, system_clock};
use flowlake_collector::ship::{
    DropReason, IngestClient, Outcome, ShipConfig, ShipMetrics, Shipper,
};
use flowlake_ingester::{Ingester, IngesterConfig, Table};
use flowlake_service::tls::TlsFiles;
use flowlake_testkit::tls::{ca, der, leaf, openssl_available};

/// The certificate the ingester serves now, as a client trusting `ca` sees it.
async fn served(port: u16, ca: &Path) -> Vec<u8> {
    let pem = std::fs::read(ca).unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_info(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let resp = client
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let info = resp.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    info.peer_certificate().unwrap().to_vec()
}

fn write_atomic(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

fn token_file(path: &Path, tokens: &[(&str, &str)]) {
    let entries: Vec<_> = tokens
        .iter()
        .map(|(name, token)| {
            serde_json::json!({
                "name": name, "sha256": flowlake_service::hash_token(token), "scopes": ["ingest"],
            })
        })
        .collect();
    write_atomic(
        path,
        serde_json::json!({ "tokens": entries })
            .to_string()
            .as_bytes(),
    );
}

fn records(n: usize) -> Vec<flowlake_schemas::FlowRecord> {
    let mut cfg = flowlake_gen::GenConfig::for_tests(std::env::temp_dir());
    cfg.rate = 50.0;
    let mut all = flowlake_gen::records(&cfg);
    assert!(all.len() >= n, "workload too small");
    all.truncate(n);
    all
}

async fn table_rows(cfg: &IngesterConfig) -> usize {
    match Table::open(&cfg.table).await {
        Ok(t) => t.files().unwrap().iter().map(|f| f.rows.unwrap()).sum(),
        Err(_) => 0,
    }
}

/// Polls `ok` until it holds (a generous bound, not a timing assertion).
async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, mut ok: impl FnMut() -> F) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ok().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_ships_over_tls_keeps_its_spool_when_refused_and_follows_a_rotation() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let trusted = ca(&certs, "trusted");
    let stranger = ca(&certs, "stranger");
    let files = TlsFiles {
        cert: certs.join("tls.crt"),
        key: certs.join("tls.key"),
    };
    leaf(&certs, "trusted", &files.cert, &files.key);

    // The ingester: TLS and a token file, both re-read at every look.
    let tokens = dir.path().join("tokens.json");
    token_file(&tokens, &[("node-a", "collector-s3cret")]);
    let mut icfg = IngesterConfig::for_tests(dir.path());
    icfg.tls = Some(files.clone());
    icfg.token_file = Some(tokens.clone());
    icfg.reload_every = Duration::ZERO;
    let ingester = Ingester::start(icfg.clone()).await.unwrap();
    let port = ingester.addr().port();

    // The collector: a CA file that is not the ingester's CA, its own token.
    let ca_file = dir.path().join("ca.crt");
    write_atomic(&ca_file, &std::fs::read(&stranger).unwrap());
    let collector_token = dir.path().join("token");
    write_atomic(&collector_token, b"collector-s3cret\n");
    let mut scfg = ShipConfig::for_tests(
        format!("https://localhost:{port}"),
        dir.path().join("spool"),
    );
    scfg.ingester_ca_file = Some(ca_file.clone());
    scfg.ingester_token_file = Some(collector_token.clone());

    // Refused, with an error that names the CA file.
    let client = IngestClient::new(&scfg).unwrap();
    let probe = flowlake_collector::ship::EncodedBatch {
        kind: Default::default(),
        seq: flowlake_collector::ship::BatchSeq(0),
        id: flowlake_collector::ship::BatchId::random(),
        records: 0,
        created: chrono::Utc::now(),
        ipc: Default::default(),
    };
    match client.post(&probe).await {
        Outcome::Unavailable { why, .. } => {
            assert!(why.contains("not trusted by the CA file"), "{why}");
            assert!(why.contains(&ca_file.display().to_string()), "{why}");
        }
        other => panic!("a certificate of another CA was not refused: {other:?}"),
    }

    let metrics = ShipMetrics::default();
    let shipper = Shipper::start(
        &scfg,
        Enricher::disabled(EnrichMetrics::default()),
        metrics.clone(),
        system_clock(),
    )
    .unwrap();
    let first = records(600);
    shipper.send(first.clone()).await.unwrap();
    wait_for("batches spooled after the TLS refusal", || async {
        metrics.batches_failed.get() > 0 && metrics.spool_batches.get() > 0
    })
    .await;
    assert_eq!(table_rows(&icfg).await, 0);
    assert_eq!(metrics.batches_shipped.get(), 0);

    // The right CA: the spool drains into the table, nothing lost.
    write_atomic(&ca_file, &std::fs::read(&trusted).unwrap());
    wait_for("the spooled rows in the table", || async {
        table_rows(&icfg).await == first.len()
    })
    .await;
    assert_eq!(shipper.pending(), 0);

    // The ingester forgets the collector's token: refused (401) and kept, not dropped.
    token_file(&tokens, &[("node-b", "another-s3cret")]);
    let failed = metrics.batches_failed.get();
    shipper.send(records(300)).await.unwrap();
    wait_for("batches refused for the token", || async {
        metrics.batches_failed.get() > failed
    })
    .await;
    // The collector's Secret is updated: its token file is read again.
    write_atomic(&collector_token, b"another-s3cret");
    wait_for("rows after the token update", || async {
        table_rows(&icfg).await == first.len() + 300
    })
    .await;

    // cert-manager renews the certificate: served at the next handshake, no restart.
    let before = served(port, &trusted).await;
    assert_eq!(before, der(&files.cert));
    leaf(&certs, "trusted", &files.cert, &files.key);
    let renewed = der(&files.cert);
    assert_ne!(before, renewed);
    assert_eq!(served(port, &trusted).await, renewed);
    shipper.send(records(200)).await.unwrap();
    wait_for("rows after the renewal", || async {
        table_rows(&icfg).await == first.len() + 500
    })
    .await;

    shipper.shutdown().await;
    let dropped: u64 = [
        DropReason::SpoolFull,
        DropReason::SpoolError,
        DropReason::Rejected,
    ]
    .iter()
    .map(|r| {
        let reason = flowlake_collector::ship::metrics::Reason { reason: r.as_str() };
        metrics.records_dropped.get_or_create(&reason).get()
    })
    .sum();
    assert_eq!(dropped, 0, "records dropped");
    ingester.shutdown().await.unwrap();
    assert_eq!(table_rows(&icfg).await, first.len() + 500);
}
