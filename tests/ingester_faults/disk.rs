//! Full disks: the table's store (a tmpfs standing in for an object-store outage)
//! and the WAL's own disk.

use std::time::Duration;

use super::*;

const GRACE: Duration = Duration::from_secs(3);

/// The store fills up under flushes; SIGTERM gives up within its grace and says
/// the WAL keeps the data; a restart still full, then kill -9; then the space
/// comes back and every acknowledged batch is in the table once.
#[test]
fn table_store_full_sigterm_kill_9_then_space_freed() {
    let dir = tempfile::tempdir().unwrap();
    let table_dir = dir.path().join("table");
    let Some(fs) = Tmpfs::mount(&table_dir, "16m") else {
        return;
    };
    let table = table_dir.to_str().unwrap();
    let all = batches("store-full", 50, 200);
    let within = Duration::from_secs(30);
    let mut server = Server::start(dir.path(), table, &["--shutdown-grace", "3s"]);
    for b in &all[..10] {
        post_until_acked(server.addr, b, within);
    }
    assert_table_holds(table, &[], &all[..10]);

    fs.fill(0);
    for b in &all[10..25] {
        post_until_acked(server.addr, b, within);
    }
    std::thread::sleep(Duration::from_millis(800));
    let (status, took) = server.sigterm();
    let log = server.log_text();
    assert!(
        !status.success(),
        "a shutdown that left rows uncommitted must fail: {log}"
    );
    assert!(
        took < GRACE + Duration::from_secs(3),
        "SIGTERM took {took:?}"
    );
    assert!(
        log.contains("stay in the write-ahead log"),
        "shutdown must say where the rows are: {log}"
    );

    // Still full: the replayed rows wait; more are acknowledged; kill -9.
    server.restart();
    for b in &all[25..35] {
        post_until_acked(server.addr, b, within);
    }
    std::thread::sleep(Duration::from_millis(800));
    server.kill9();

    fs.free();
    server.restart();
    for b in &all[35..] {
        post_until_acked(server.addr, b, within);
    }
    assert_table_holds(table, &[], &all);
    let (status, _) = server.sigterm();
    assert!(status.success(), "{}", server.log_text());
}

/// The WAL's disk fills: requests get a retryable 503 with Retry-After and
/// `/readyz` fails; when space returns everything recovers, and after a kill -9
/// every acknowledged batch is in the table once, with no torn WAL record.
#[test]
fn wal_disk_full_then_freed_then_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = dir.path().join("wal");
    let Some(fs) = Tmpfs::mount(&wal_dir, "8m") else {
        return;
    };
    let table = dir.path().join("table");
    let table = table.to_str().unwrap();
    let all = batches("wal-full", 40, 200);
    let within = Duration::from_secs(30);
    let mut server = Server::with_wal(dir.path(), &wal_dir, table, &[]);
    for b in &all[..10] {
        post_until_acked(server.addr, b, within);
    }
    assert_table_holds(table, &[], &all[..10]);

    fs.fill(0);
    let refused = post(server.addr, &all[10]).unwrap();
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.retry_after.is_some(), "{refused:?}");
    assert!(
        refused.body.contains("\"retryable\":true"),
        "{}",
        refused.body
    );
    assert!(refused.body.contains("wal_full"), "{}", refused.body);
    assert!(!ready(server.addr), "/readyz while the WAL's disk is full");

    fs.free();
    let deadline = Instant::now() + within;
    while !ready(server.addr) {
        assert!(Instant::now() < deadline, "/readyz never recovered");
        std::thread::sleep(Duration::from_millis(100));
    }
    for b in &all[10..] {
        post_until_acked(server.addr, b, within);
    }
    server.kill9();
    server.restart();
    assert_table_holds(table, &[], &all);
    let metrics = request(server.addr, "GET", "/metrics", &[], &[])
        .unwrap()
        .body;
    assert!(
        metrics.contains("flowlake_ingester_wal_torn_segments_total 0"),
        "{metrics}"
    );
}
