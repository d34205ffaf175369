//! Poisoned and inconsistent values mixed with valid batches: refused with a 422
//! naming the column and row before anything is acknowledged, and they never
//! stall the valid batches around them.

use std::time::Duration;

use super::*;

/// `body` with the first occurrence of `from` replaced by `to` (same length): a
/// value changed in place in the Arrow IPC stream, which stays well-formed.
fn patched(body: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = body
        .windows(from.len())
        .position(|w| w == from)
        .expect("value present in the body");
    let mut out = body.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

fn micros(rfc3339: &str) -> [u8; 8] {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_micros()
        .to_le_bytes()
}

#[test]
fn poisoned_partition_values_and_timestamps_are_refused_and_block_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let table = table.to_str().unwrap();
    let valid = batches("valid", 30, 150);
    let mut server = Server::start(dir.path(), table, &[]);
    let hour = 3_600_000_000;
    // (column refused, value replaced in row 0, by what): the bytes of a
    // `date` string, or of `interval_start` (little-endian microseconds).
    let poisons = |b: &Batch| -> [(&str, Vec<u8>, Vec<u8>); 6] {
        let start = b.start_micros;
        let at = |micros: i64| micros.to_le_bytes().to_vec();
        let date = |d: &[u8]| d.to_vec();
        [
            ("date", date(b"2026-01-01"), date(b"\"026-01-01")),
            ("date", date(b"2026-01-01"), date(b"9999-99-99")),
            ("date", date(b"2026-01-01"), date(b"2026-01-02")),
            (
                "interval_start",
                at(start),
                micros("1960-01-01T00:00:00Z").to_vec(),
            ),
            (
                "interval_start",
                at(start),
                micros("2200-01-01T00:00:00Z").to_vec(),
            ),
            ("hour", at(start), at(start + hour)),
        ]
    };
    let mut refused = 0;
    for (i, b) in valid.iter().enumerate() {
        post_until_acked(server.addr, b, Duration::from_secs(30));
        let (column, from, to) = poisons(b)[i % 6].clone();
        let poisoned = Batch {
            id: format!("poison-{i}"),
            body: Arc::new(patched(&b.body, &from, &to)),
            ..b.clone()
        };
        let a = post(server.addr, &poisoned).unwrap();
        assert_eq!(a.status, 422, "{column}: {}", a.body);
        assert!(
            a.body.contains(&format!("column {column}, row 0")),
            "the refusal names column and row: {}",
            a.body
        );
        refused += 1;
        if i == valid.len() / 2 {
            server.kill9();
            server.restart();
        }
    }
    assert_table_holds(table, &[], &valid);
    let metrics = request(server.addr, "GET", "/metrics", &[], &[])
        .unwrap()
        .body;
    let after_restart = refused - valid.len() / 2 - 1;
    assert!(
        metrics.contains(&format!(
            "flowlake_ingester_batches_rejected_total{{reason=\"invalid\"}} {after_restart}"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("flowlake_ingester_quarantined_batches_total 0"));
}
