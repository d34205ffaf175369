//! kill -9 at random instants under concurrent posters that retry every batch
//! not acknowledged with the same batch id: each batch is stored exactly once.

use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use super::*;

const POSTERS: usize = 4;
const KILLS: usize = 20;

#[test]
fn kill_9_at_random_instants_under_concurrent_retrying_posters() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let table = table.to_str().unwrap();
    let all = batches("kill", 1600, 25);
    let mut server = Server::start(
        dir.path(),
        table,
        &["--flush-age", "100ms", "--wal-segment-bytes", "65536"],
    );
    // Posters follow the server to its new port after each restart.
    let port = Arc::new(AtomicU16::new(server.addr.port()));
    let posters: Vec<_> = all
        .chunks(all.len() / POSTERS)
        .map(|mine| {
            let (mine, port) = (mine.to_vec(), Arc::clone(&port));
            std::thread::spawn(move || {
                for b in &mine {
                    let addr = || SocketAddr::from(([127, 0, 0, 1], port.load(Ordering::SeqCst)));
                    post_until_acked_at(addr, b, Duration::from_secs(120));
                    // Paced, so the kills fall among requests in flight.
                    std::thread::sleep(Duration::from_millis(15));
                }
            })
        })
        .collect();

    // Random instants from a fixed seed (xorshift), 50-400 ms apart.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut kills = 0;
    let mut in_flight = 0;
    while kills < KILLS {
        in_flight += usize::from(!posters.iter().all(|p| p.is_finished()));
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        std::thread::sleep(Duration::from_millis(50 + state % 350));
        server.kill9();
        kills += 1;
        server.addr = free_addr();
        server.restart();
        port.store(server.addr.port(), Ordering::SeqCst);
    }
    for p in posters {
        p.join().unwrap();
    }
    assert!(
        in_flight >= KILLS / 2,
        "only {in_flight} of {kills} kills came while posters were posting"
    );
    eprintln!(
        "{kills} kills ({in_flight} with posters posting) under {POSTERS} posters, {} batches",
        all.len()
    );
    assert_table_holds(table, &[], &all);
}
