//! Replicas start in any order: `flowlake query` started before the table exists,
//! before its object store (moto S3) listens and while it does not answer
//! (SIGSTOP), starts anyway,
//! answers over an empty `flows` of the table's schema, says why it is not ready
//! in `/readyz` and its log, and serves the table once the first ingester commit
//! lands — without a restart.

use std::time::Duration;

use super::replicas::wait_for_rows_within;
use super::*;

const WITHIN: Duration = Duration::from_secs(60);

/// A `flowlake query` process on `table`, its log in `log`.
struct Query {
    addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl Query {
    fn start(dir: &Path, table: &str, options: &[(&str, &str)]) -> Query {
        let addr = free_addr();
        let log = dir.join("query.log");
        let child = crate::flowlake()
            .args(["query", "--listen", &addr.to_string(), "--table", table])
            .args(storage_args(options))
            .args(["--snapshot-max-age", "200ms", "--log", "info"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut q = Query { addr, child, log };
        let deadline = Instant::now() + WITHIN;
        while request(addr, "GET", "/healthz", &[], &[]).is_err() {
            if let Some(status) = q.child.try_wait().unwrap() {
                panic!("query exited at start ({status}): {}", q.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "query never listened: {}",
                q.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        q
    }

    fn readyz(&self) -> (u16, String) {
        let a = request(self.addr, "GET", "/readyz", &[], &[]).unwrap();
        (a.status, a.body)
    }

    /// Waits until `/readyz` answers `status` with a body containing `text`.
    fn wait_readyz(&self, status: u16, text: &str) {
        let deadline = Instant::now() + WITHIN;
        loop {
            let (s, body) = self.readyz();
            if s == status && body.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz stayed {s} {body:?}, expected {status} with {text:?}: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The answer of `sql` as CSV lines (a header line first).
    fn csv(&self, sql: &str) -> Vec<String> {
        let body = serde_json::json!({ "sql": sql, "format": "csv" }).to_string();
        let headers = [("content-type", "application/json")];
        let a = request(self.addr, "POST", "/api/v1/sql", &headers, body.as_bytes())
            .unwrap_or_else(|e| panic!("{sql}: {e}: {}", self.log_text()));
        assert_eq!(a.status, 200, "{sql}: {}", a.body);
        a.body.lines().map(str::to_string).collect()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Query {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn query_starts_before_the_table_and_while_the_store_is_down() {
    if flowlake_testkit::python_with("moto.server, flask").is_none() {
        return;
    }
    let store = free_addr();
    let endpoint = format!("http://{store}");
    let options = s3_options(&endpoint);
    let table = "s3://flowlake/start-order";
    let dir = tempfile::tempdir().unwrap();
    let count = "select count(*) as n, coalesce(sum(bytes), 0) as b from flows";

    // Nothing listens at the store's address yet: the service starts anyway.
    let query = Query::start(dir.path(), table, &options);
    query.wait_readyz(
        503,
        "not ready: the table s3://flowlake/start-order could not be read",
    );
    assert_eq!(query.csv(count), ["n,b", "0,0"]);

    // The store listens but does not answer (SIGSTOP): still serving, still saying why.
    let (moto, _) = start_moto_at(store).unwrap();
    moto.signal(libc::SIGSTOP);
    query.wait_readyz(503, "its store did not answer within");
    assert_eq!(query.csv(count), ["n,b", "0,0"]);
    moto.signal(libc::SIGCONT);

    // The store answers, the table is not there yet: empty answers of its schema.
    query.wait_readyz(503, "does not exist yet");
    // The columns of the empty table, as `describe` lists them (a header line first).
    let columns = query.csv("describe flows");
    assert_eq!(
        columns.len() - 1,
        flowlake_schemas::flow_schema().fields().len(),
        "{columns:?}"
    );
    assert_eq!(query.csv(count), ["n,b", "0,0"]);

    // The first ingester creates the table and commits: the same process serves it.
    let mut args = storage_args(&options);
    args.extend(["--flush-age".into(), "200ms".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut ingester = Server::start(&dir.path().join("ingester"), table, &args);
    let all = batches("start-order", 6, 100);
    for b in &all {
        post_until_acked(ingester.addr, b, WITHIN);
    }
    let rows: u64 = all.iter().map(|b| b.rows).sum();
    let bytes: u64 = all.iter().map(|b| b.bytes).sum();
    wait_for_rows_within(table, &options, rows, WITHIN);
    query.wait_readyz(200, "ok");
    // The independent reader (Python deltalake) and the service agree.
    assert_table_holds(table, &options, &all);
    let deadline = Instant::now() + WITHIN;
    loop {
        let got = query.csv(count);
        if got == ["n,b".to_string(), format!("{rows},{bytes}")] {
            break;
        }
        assert!(Instant::now() < deadline, "query answered {got:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(query.csv("describe flows"), columns, "the table's columns");
    let log = query.log_text();
    assert!(log.contains("serving an empty flows table"), "{log}");
    assert!(log.contains("does not exist yet"), "{log}");
    assert!(log.contains("flows table loaded"), "{log}");
    let (status, _) = ingester.sigterm();
    assert!(status.success(), "{}", ingester.log_text());
}
