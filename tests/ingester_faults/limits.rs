//! Bounded resources: 1,000 slow clients (request heads and bodies trickled a
//! byte at a time) and 16 concurrent maximum-size bodies against a small memory
//! budget. The process's peak RSS stays under the budget plus a fixed margin,
//! slow clients are cut off by the read timeouts, valid clients keep being
//! served (a 503 with Retry-After when the budget is spent, then acknowledged),
//! and SIGTERM completes within its grace with the slow clients still there.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

const BUDGET: usize = 48 << 20;
const MAX_BODY: usize = 8 << 20;
/// The process's own memory beside the budget: code and runtime (an idle debug
/// build is ~84 MiB resident), 1,000 connections' buffers, the table's snapshot,
/// a flush's Parquet pages being encoded, allocator slack. Measured peak: 196 MiB
/// in all with the 48 MiB budget.
const MARGIN: usize = 192 << 20;
const SLOW_CLIENTS: usize = 1000;

fn rss_kib(pid: u32, field: &str) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Lets this process (and the ingester it starts) hold every connection.
fn raise_open_files() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain get/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Keeps `SLOW_CLIENTS` connections open, half trickling a request head and half
/// a declared 4 KiB body, a byte each every 200 ms; reconnects those the server
/// closes. Returns how many it had to reconnect.
fn slow_clients(addr: SocketAddr, stop: Arc<AtomicBool>) -> usize {
    let head = b"POST /api/v1/flows HTTP/1.1\r\nHost: x\r\nX-Slow: yes\r\n".to_vec();
    let body_head =
        b"POST /api/v1/flows HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n".to_vec();
    let open = |i: usize| -> Option<(TcpStream, Vec<u8>, usize)> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_nonblocking(true).ok()?;
        if i.is_multiple_of(2) {
            Some((s, head.clone(), 0))
        } else {
            let mut s = s;
            s.write_all(&body_head).ok()?;
            Some((s, vec![0x55; 4096], 0))
        }
    };
    let mut clients: Vec<Option<(TcpStream, Vec<u8>, usize)>> =
        (0..SLOW_CLIENTS).map(open).collect();
    let mut reconnects = 0;
    while !stop.load(Ordering::SeqCst) {
        for (i, c) in clients.iter_mut().enumerate() {
            let alive = c.as_mut().is_some_and(|(s, bytes, at)| {
                let b = bytes[*at % bytes.len()];
                *at += 1;
                s.write(&[b]).is_ok_and(|n| n == 1)
            });
            if !alive {
                reconnects += 1;
                *c = open(i);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    reconnects
}

#[test]
fn slow_clients_and_max_size_bodies_stay_within_the_memory_budget() {
    raise_open_files();
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let table = table.to_str().unwrap();
    let big = batches("big", 16, 15_000);
    let largest = big.iter().map(|b| b.body.len()).max().unwrap();
    assert!(largest <= MAX_BODY && largest > MAX_BODY / 2, "{largest}");
    let small = batches("small", 200, 100);
    let (budget, max_body) = (BUDGET.to_string(), MAX_BODY.to_string());
    let mut server = Server::start(
        dir.path(),
        table,
        &[
            "--max-buffer-bytes",
            &budget,
            "--max-body-bytes",
            &max_body,
            "--flush-bytes",
            &(16 << 20).to_string(),
            "--header-timeout",
            "2s",
            "--body-timeout",
            "3s",
            "--shutdown-grace",
            "4s",
        ],
    );
    let (addr, pid) = (server.addr, server.pid());
    let stop = Arc::new(AtomicBool::new(false));
    let slow = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || slow_clients(addr, stop))
    };
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(rss_kib(pid, "VmRSS:") << 10, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let within = Duration::from_secs(120);
    let posters: Vec<_> = big
        .iter()
        .cloned()
        .map(|b| std::thread::spawn(move || post_until_acked(addr, &b, within)))
        .chain(small.chunks(50).map(|mine| {
            let mine = mine.to_vec();
            std::thread::spawn(move || {
                for b in &mine {
                    post_until_acked(addr, b, within);
                }
            })
        }))
        .collect();
    for p in posters {
        p.join().unwrap();
    }
    let served_in = started.elapsed();
    let metrics = request(addr, "GET", "/metrics", &[], &[]).unwrap().body;
    let hwm = rss_kib(pid, "VmHWM:") << 10;
    let mut acked = big.clone();
    acked.extend(small);
    assert_table_holds(table, &[], &acked);
    // SIGTERM with the slow clients still connected.
    let (status, took) = server.sigterm();
    assert!(status.success(), "{}", server.log_text());
    assert!(took < Duration::from_secs(4 + 3), "SIGTERM took {took:?}");
    stop.store(true, Ordering::SeqCst);
    let reconnects = slow.join().unwrap();
    sampler.join().unwrap();
    let peak = peak.load(Ordering::SeqCst).max(hwm);
    eprintln!(
        "216 valid bodies (16 of {largest} bytes) served in {served_in:?} beside {SLOW_CLIENTS} slow clients \
         ({reconnects} cut off and reconnected); peak RSS {} MiB, budget {} MiB + margin {} MiB",
        peak >> 20,
        BUDGET >> 20,
        MARGIN >> 20
    );
    assert!(
        peak < BUDGET + MARGIN,
        "peak RSS {} MiB over budget + margin",
        peak >> 20
    );
    assert!(
        reconnects >= SLOW_CLIENTS / 2,
        "slow clients were not cut off: {reconnects}"
    );
    assert!(
        metrics.contains("flowlake_ingester_batches_rejected_total{reason=\"busy\"}"),
        "maximum-size bodies past the budget must be refused before they are read: {metrics}"
    );
    eprintln!("SIGTERM with {SLOW_CLIENTS} slow clients connected took {took:?}");
}
