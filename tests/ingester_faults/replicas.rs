//! Three ingester replicas on one table on an S3-protocol server (moto), behind
//! a round-robin the test plays itself: a collector's batch (`<producer>/<seq>`)
//! committed by one replica, its acknowledgement lost, retried on the two others
//! — stored once, because every replica checks the table's `txn`s at commit, not
//! its own memory. The same with kill -9 of the first replica right after its
//! commit, and before it (its WAL replays the batch after another replica
//! stored it).

use std::time::Duration;

use super::*;

const REPLICAS: usize = 3;
const WITHIN: Duration = Duration::from_secs(60);

/// `count` batches of one collector, named as collectors name them.
fn collector_batches(producer: u64, count: usize, rows: usize) -> Vec<Batch> {
    batches_named(count, rows, |i| format!("{producer:016x}/{i}"))
}

fn replicas(dir: &Path, table: &str, args: &[String]) -> Vec<Server> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (0..REPLICAS)
        .map(|i| {
            let home = dir.join(format!("replica-{i}"));
            std::fs::create_dir_all(&home).unwrap();
            Server::start(&home, table, &args)
        })
        .collect()
}

/// Waits until the table holds at least `rows` rows.
fn wait_for_rows(table: &str, options: &[(&str, &str)], rows: u64) {
    let deadline = Instant::now() + WITHIN;
    while table_rows(table, options).unwrap_or(0) < rows {
        assert!(
            Instant::now() < deadline,
            "the table never held {rows} rows"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A counter of the ingester's `/metrics` (summed over its label sets matching `labels`).
fn metric(addr: SocketAddr, name: &str, labels: &str) -> u64 {
    let text = request(addr, "GET", "/metrics", &[], &[]).unwrap().body;
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// moto, and three replicas on `table` there flushing every 200 ms.
fn cluster(table: &str) -> Option<(Moto, String, tempfile::TempDir, Vec<Server>)> {
    let (moto, endpoint) = start_moto()?;
    let mut args = storage_args(&s3_options(&endpoint));
    args.extend(["--flush-age".into(), "200ms".into()]);
    let dir = tempfile::tempdir().unwrap();
    let servers = replicas(dir.path(), table, &args);
    Some((moto, endpoint, dir, servers))
}

#[test]
fn a_retry_on_other_replicas_is_stored_once() {
    let table = "s3://flowlake/replicas";
    let Some((_moto, endpoint, _dir, mut servers)) = cluster(table) else {
        return;
    };
    let options = s3_options(&endpoint);
    let all = collector_batches(0x00c0_ffee, 40, 50);

    // Committed by one replica (seen in the table), its answer dropped, the
    // retry sent to the next replica and then to the third.
    let mut rows = 0;
    for (i, b) in all[..12].iter().enumerate() {
        post_until_acked(servers[i % REPLICAS].addr, b, WITHIN);
        rows += b.rows;
        wait_for_rows(table, &options, rows);
        for next in 1..REPLICAS {
            post_until_acked(servers[(i + next) % REPLICAS].addr, b, WITHIN);
        }
    }
    // Retries racing the first commit: each batch on all three replicas at
    // once, so their flushes commit the same producer's `txn`s concurrently.
    let racing: Vec<_> = (0..REPLICAS)
        .map(|r| {
            let (addr, mine) = (servers[r].addr, all[12..].to_vec());
            std::thread::spawn(move || {
                for b in &mine {
                    post_until_acked(addr, b, WITHIN);
                }
            })
        })
        .collect();
    for t in racing {
        t.join().unwrap();
    }
    let total = all.iter().map(|b| b.rows).sum();
    wait_for_rows(table, &options, total);
    // Every batch went to every replica: two copies of each were left out.
    let deadline = Instant::now() + WITHIN;
    let left_out = loop {
        let n: u64 = servers
            .iter()
            .map(|s| metric(s.addr, "flowlake_ingester_exactly_once", "already_in_table"))
            .sum();
        if n >= 2 * all.len() as u64 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let conflicts: u64 = servers
        .iter()
        .map(|s| metric(s.addr, "flowlake_ingester_exactly_once", "txn_conflict"))
        .sum();
    for s in &mut servers {
        let (status, _) = s.sigterm();
        assert!(status.success(), "{}", s.log_text());
    }
    assert_eq!(left_out, 2 * all.len() as u64, "copies left out at commit");
    eprintln!(
        "{} batches each sent to {REPLICAS} replicas: {left_out} copies left out at commit, {conflicts} txn conflicts re-planned",
        all.len()
    );
    assert_table_holds(table, &options, &all);
}

#[test]
fn kill_9_of_the_committing_replica_then_retries_elsewhere() {
    let table = "s3://flowlake/replicas-kill";
    let Some((_moto, endpoint, _dir, mut servers)) = cluster(table) else {
        return;
    };
    let options = s3_options(&endpoint);
    let all = collector_batches(0x0bad_cafe, 16, 40);
    let mut rows = 0;
    for (i, b) in all.iter().enumerate() {
        let a = i % REPLICAS;
        post_until_acked(servers[a].addr, b, WITHIN);
        rows += b.rows;
        if i % 2 == 0 {
            // Killed right after its commit (its answer never reached the client).
            wait_for_rows(table, &options, rows);
            servers[a].kill9();
        } else {
            // Killed before its commit: the batch is only in its WAL.
            servers[a].kill9();
        }
        for next in 1..REPLICAS {
            post_until_acked(servers[(a + next) % REPLICAS].addr, b, WITHIN);
        }
        wait_for_rows(table, &options, rows);
        // Back: it replays its WAL, finds the batch in the table, leaves it out.
        servers[a].addr = free_addr();
        servers[a].restart();
    }
    for s in &mut servers {
        let (status, _) = s.sigterm();
        assert!(status.success(), "{}", s.log_text());
    }
    assert_table_holds(table, &options, &all);
}
