//! The object store unreachable for a while: an S3-protocol server (moto) on
//! loopback, stopped (SIGSTOP: connections hang) and started again (SIGCONT).

use std::time::Duration;

use super::*;

/// Outage one: flushes fail and are retried while requests are still
/// acknowledged; the store comes back and everything lands. Outage two: SIGTERM
/// during it ends within the grace and leaves the rows in the WAL; restarted
/// once the store is back, the table holds every batch once.
#[test]
fn object_store_unreachable_for_a_while() {
    let Some((moto, endpoint)) = start_moto() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let options = s3_options(&endpoint);
    let mut args = vec!["--shutdown-grace".to_string(), "3s".to_string()];
    args.extend(storage_args(&options));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let table = "s3://flowlake/flows";
    let all = batches("store-down", 40, 200);
    let within = Duration::from_secs(60);
    let mut server = Server::start(dir.path(), table, &args);
    for b in &all[..5] {
        post_until_acked(server.addr, b, within);
    }
    assert_table_holds(table, &options, &all[..5]);

    moto.signal(libc::SIGSTOP);
    for b in &all[5..15] {
        post_until_acked(server.addr, b, within);
    }
    std::thread::sleep(Duration::from_secs(2));
    moto.signal(libc::SIGCONT);
    for b in &all[15..20] {
        post_until_acked(server.addr, b, within);
    }
    assert_table_holds(table, &options, &all[..20]);

    moto.signal(libc::SIGSTOP);
    for b in &all[20..30] {
        post_until_acked(server.addr, b, within);
    }
    std::thread::sleep(Duration::from_millis(800));
    let (status, took) = server.sigterm();
    assert!(!status.success(), "{}", server.log_text());
    assert!(took < Duration::from_secs(6), "SIGTERM took {took:?}");
    moto.signal(libc::SIGCONT);
    server.restart();
    for b in &all[30..] {
        post_until_acked(server.addr, b, within);
    }
    assert_table_holds(table, &options, &all);
}
