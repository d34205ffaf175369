//! The ingester under faults and hostile input, as an operator's bad day goes:
//! the table's store full or unreachable, the WAL's disk full, poisoned values,
//! kill -9 at random instants under concurrent posters, slow clients and
//! maximum-size bodies under a small memory budget. Each case ends with the
//! table read by an independent reader (Python deltalake) and compared with the
//! acknowledged batches: rows and sum of `bytes` per batch id (each batch's rows
//! carry its id in `cluster`). Nothing acknowledged may be missing or doubled.

mod disk;
mod input;
mod kills;
mod limits;
mod replicas;
mod start_order;
mod store;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One client batch: its id, encoded body, and what it must add to the table.
#[derive(Clone)]
pub struct Batch {
    pub id: String,
    pub body: Arc<Vec<u8>>,
    pub rows: u64,
    pub bytes: u64,
    /// `interval_start` of the first row, in microseconds.
    pub start_micros: i64,
}

/// `count` batches of `rows` generated flows each (2026-01-01, two hours), the
/// rows of each tagged with its id in `cluster`.
pub fn batches(prefix: &str, count: usize, rows: usize) -> Vec<Batch> {
    batches_named(count, rows, |i| format!("{prefix}-{i:05}"))
}

/// [`batches`] with the ids `name(i)`.
pub fn batches_named(count: usize, rows: usize, name: impl Fn(usize) -> String) -> Vec<Batch> {
    let mut cfg = flowlake_gen::GenConfig::for_tests(std::env::temp_dir());
    cfg.rate = (count * rows) as f64 / 7200.0 + 1.0;
    let records = flowlake_gen::records(&cfg);
    assert!(records.len() >= count * rows, "{} records", records.len());
    records
        .chunks(rows)
        .take(count)
        .enumerate()
        .map(|(i, chunk)| {
            let id = name(i);
            let mut chunk = chunk.to_vec();
            let cluster: Arc<str> = id.as_str().into();
            for r in &mut chunk {
                r.cluster = Arc::clone(&cluster);
            }
            let batch = flowlake_schemas::records_to_batch(&chunk);
            Batch {
                body: Arc::new(flowlake_ingester::encode_ipc(&[batch], None).unwrap()),
                rows: chunk.len() as u64,
                bytes: chunk.iter().map(|r| r.bytes).sum(),
                start_micros: chunk[0].interval_start.timestamp_micros(),
                id,
            }
        })
        .collect()
}

pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// An HTTP answer: status, `Retry-After`, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: String,
}

/// A minimal HTTP/1.1 client: the answer, or an I/O error if the server died.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Answer> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response {text:?}")))?;
    let retry_after = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("retry-after:")
            .map(|v| v.trim().to_string())
    });
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// A `Transfer-Encoding: chunked` body as its content.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16);
        let Ok(size) = size else { break };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap_or(&after[size..]);
    }
    out
}

pub fn post(addr: SocketAddr, b: &Batch) -> std::io::Result<Answer> {
    request(
        addr,
        "POST",
        "/api/v1/flows",
        &[("Flowlake-Batch-Id", &b.id)],
        &b.body,
    )
}

/// Posts `b` until it is acknowledged, retrying (same id) whatever is not a
/// 200: a dead server, 503, 408. A 4xx that is not retryable fails the test.
pub fn post_until_acked(addr: SocketAddr, b: &Batch, within: Duration) {
    post_until_acked_at(|| addr, b, within);
}

/// [`post_until_acked`] to wherever `addr` says the server is now.
pub fn post_until_acked_at(addr: impl Fn() -> SocketAddr, b: &Batch, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        match post(addr(), b) {
            Ok(a) if a.status == 200 => return,
            Ok(a) if a.status >= 500 || a.status == 408 => {}
            Ok(a) => panic!("batch {}: {} {}", b.id, a.status, a.body),
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "batch {} never acknowledged",
            b.id
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn ready(addr: SocketAddr) -> bool {
    request(addr, "GET", "/readyz", &[], &[]).is_ok_and(|a| a.status == 200)
}

/// `args` with quick age flushes unless they set the age.
fn with_defaults(args: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    if !args.contains(&"--flush-age") {
        out.extend(["--flush-age".to_string(), "300ms".to_string()]);
    }
    out
}

/// A `flowlake ingester` process with its WAL and table, restartable.
pub struct Server {
    pub addr: SocketAddr,
    pub wal: PathBuf,
    pub table: String,
    pub args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// Starts an ingester on `dir/wal` (unless `wal` is given) and `table`.
    pub fn start(dir: &Path, table: &str, args: &[&str]) -> Server {
        let mut s = Server {
            addr: free_addr(),
            wal: dir.join("wal"),
            table: table.to_string(),
            args: with_defaults(args),
            log: dir.join("ingester.log"),
            child: None,
        };
        s.spawn_and_wait();
        s
    }

    pub fn with_wal(dir: &Path, wal: &Path, table: &str, args: &[&str]) -> Server {
        let mut s = Server {
            addr: free_addr(),
            wal: wal.to_path_buf(),
            table: table.to_string(),
            args: with_defaults(args),
            log: dir.join("ingester.log"),
            child: None,
        };
        s.spawn_and_wait();
        s
    }

    fn spawn_and_wait(&mut self) {
        let _ = std::fs::create_dir_all(&self.wal);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = crate::flowlake()
            .args(["ingester", "--listen", &self.addr.to_string()])
            .args(["--table", &self.table])
            .arg("--wal-dir")
            .arg(&self.wal)
            .args(["--log", "info"])
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if ready(self.addr) {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ingester exited at start ({status}): {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ingester never became ready: {}", self.log_text());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the ingester first");
        self.spawn_and_wait();
    }

    /// SIGKILL: nothing runs after it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM; waits for the exit and returns its status and how long it took.
    pub fn sigterm(&mut self) -> (ExitStatus, Duration) {
        let mut c = self.child.take().unwrap();
        let started = Instant::now();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let status = c.wait().unwrap();
        (status, started.elapsed())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Rows and sum of `bytes` per batch id, as Python deltalake reads the table.
pub fn table_by_batch(
    table: &str,
    storage_options: &[(&str, &str)],
) -> Option<BTreeMap<String, (u64, u64)>> {
    let mut python = flowlake_testkit::python_with("deltalake, pyarrow")?;
    let script = r#"
import sys, json
from deltalake import DeltaTable
dt = DeltaTable(sys.argv[1], storage_options=json.loads(sys.argv[2]))
t = dt.to_pyarrow_table(columns=["cluster", "bytes"])
g = t.group_by("cluster").aggregate([("bytes", "count"), ("bytes", "sum")])
out = {c: [n, s] for c, n, s in zip(g["cluster"].to_pylist(), g["bytes_count"].to_pylist(), g["bytes_sum"].to_pylist())}
print(json.dumps(out))
"#;
    let options: serde_json::Map<String, serde_json::Value> = storage_options
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let json = flowlake_testkit::json_output(
        python
            .args(["-c", &flowlake_testkit::exiting_after(script), table])
            .arg(serde_json::Value::Object(options).to_string()),
    );
    Some(by_batch(&json))
}

/// `{"<batch id>": [rows, sum of bytes], …}` as a map.
pub fn by_batch(json: &serde_json::Value) -> BTreeMap<String, (u64, u64)> {
    json.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), (v[0].as_u64().unwrap(), v[1].as_u64().unwrap())))
        .collect()
}

/// The table's configuration for `location` and object-store `options`.
pub fn table_config(location: &str, options: &[(&str, &str)]) -> flowlake_ingester::TableConfig {
    flowlake_ingester::TableConfig {
        location: location.to_string(),
        storage_options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Rows in the table by its own statistics (quick, for waiting).
pub fn table_rows(table: &str, storage_options: &[(&str, &str)]) -> Option<u64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let t = flowlake_ingester::Table::open(&table_config(table, storage_options))
            .await
            .ok()?;
        Some(
            t.files()
                .ok()?
                .iter()
                .map(|f| f.rows.unwrap_or(0) as u64)
                .sum(),
        )
    })
}

/// Waits until the table holds every acknowledged row, then checks with the
/// independent reader that each batch is there exactly once.
pub fn assert_table_holds(table: &str, storage_options: &[(&str, &str)], acked: &[Batch]) {
    let want: u64 = acked.iter().map(|b| b.rows).sum();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = None;
    while Instant::now() < deadline {
        seen = table_rows(table, storage_options);
        if seen >= Some(want) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let Some(found) = table_by_batch(table, storage_options) else {
        assert_eq!(seen, Some(want), "rows in the table vs acknowledged");
        return;
    };
    let expected: BTreeMap<String, (u64, u64)> = acked
        .iter()
        .map(|b| (b.id.clone(), (b.rows, b.bytes)))
        .collect();
    let missing: Vec<_> = expected
        .iter()
        .filter(|(id, v)| found.get(*id) != Some(v))
        .collect();
    let unknown: Vec<_> = found
        .keys()
        .filter(|id| !expected.contains_key(*id))
        .collect();
    let wrong: Vec<String> = missing
        .iter()
        .map(|(id, v)| format!("{id}: want {v:?}, found {:?}", found.get(*id)))
        .collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "{} rows in the table, {want} acknowledged; {} batches missing or doubled \
         (rows, bytes): {wrong:?}; in the table but never acknowledged: {unknown:?}",
        seen.unwrap_or(0),
        wrong.len(),
    );
    assert_eq!(
        seen,
        Some(want),
        "rows in the table (its statistics) vs acknowledged"
    );
    eprintln!(
        "table checked by Python deltalake: {} batches, {want} rows, each exactly once",
        expected.len()
    );
}

/// moto's S3-protocol server on loopback with a bucket `flowlake`.
pub struct Moto(Child);

impl Moto {
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, signal) };
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn start_moto() -> Option<(Moto, String)> {
    start_moto_at(free_addr())
}

/// [`start_moto`] listening on `addr`.
pub fn start_moto_at(addr: SocketAddr) -> Option<(Moto, String)> {
    let mut python = flowlake_testkit::python_with("moto.server, flask")?;
    let child = python
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
        .arg(addr.port().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let moto = Moto(child);
    for _ in 0..400 {
        if request(addr, "PUT", "/flowlake", &[], &[]).is_ok_and(|a| a.status == 200) {
            return Some((moto, format!("http://{addr}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("moto server did not start on {addr}");
}

/// object_store's options for the moto server at `endpoint`.
pub fn s3_options(endpoint: &str) -> [(&'static str, &str); 5] {
    [
        ("aws_endpoint", endpoint),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
        ("aws_region", "us-east-1"),
    ]
}

/// `--storage-option k=v` arguments for `options`.
pub fn storage_args(options: &[(&str, &str)]) -> Vec<String> {
    options
        .iter()
        .flat_map(|(k, v)| ["--storage-option".to_string(), format!("{k}={v}")])
        .collect()
}

/// A tmpfs mounted for the test (root only), unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `16m`) at `at`, or `None` after printing
    /// why not (not root); fails instead under FLOWLAKE_REQUIRE_PRIVILEGED=1.
    pub fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let mounted = root
            && std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(at)
                .status()
                .is_ok_and(|s| s.success());
        if mounted {
            return Some(Tmpfs(at.to_path_buf()));
        }
        let why = "mounting a tmpfs needs root";
        assert!(!flowlake_testkit::required(), "{why}");
        eprintln!("skipping: {why}");
        None
    }

    /// Fills the file system but `leave` bytes with a filler file.
    pub fn fill(&self, leave: u64) {
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        loop {
            if f.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = f.sync_all();
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(leave)).unwrap();
    }

    /// Deletes the filler: the space is back.
    pub fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
