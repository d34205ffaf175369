//! The write path shared by the table-location suites (local directory, S3, Azure):
//! two ingesters commit concurrently to one table (conditional puts on object
//! stores), then the table reads back whole, compacts and checkpoints there.

use std::process::Child;
use std::time::Duration;

use flowlake_ingester::{CompactConfig, Ingester, Table, compact_once};
use reqwest::StatusCode;

use crate::common::*;

/// A protocol server started by a test; killed when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (bound, then released for the server to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Spawns `cmd`, a server told to listen on loopback `port`, and waits (up to 10 s)
/// until it accepts connections: the server and its endpoint URL.
pub async fn spawn_server(cmd: &mut std::process::Command, port: u16) -> (Server, String) {
    let server = Server(cmd.spawn().unwrap());
    let endpoint = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (server, endpoint);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{cmd:?} did not start on {endpoint}");
}

/// Whether `program` runs (`--version`); else `None` after printing why the test
/// skips, or a panic under `FLOWLAKE_REQUIRE_PRIVILEGED=1`.
pub fn tool(program: &str) -> Option<()> {
    let ok = std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(())
    } else if flowlake_testkit::required() {
        panic!("{program} is required (run scripts/test.sh to install it)");
    } else {
        eprintln!("skipping: {program} is not installed (scripts/test.sh installs it)");
        None
    }
}

/// Python `deltalake` + pyarrow reading a table with object_store `options`: rows
/// and the sum of `bytes`.
const READ: &str = r#"
import json, sys
import pyarrow.compute as pc
from deltalake import DeltaTable
t = DeltaTable(sys.argv[1], storage_options=json.loads(sys.argv[2])).to_pyarrow_table()
print(json.dumps({"rows": t.num_rows, "bytes": pc.sum(t.column("bytes")).as_py()}))
"#;

/// Two ingesters write 6000 rows over two hours to `location` with `options`
/// (object_store keys); the table then holds every row once, from at least two
/// commits, compacts to one file per partition, and an independent reader (Python
/// `deltalake`, when installed) sees the rows and byte sums that were sent.
pub async fn two_ingesters_commit_to(location: &str, options: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut a_cfg = config(&dir.path().join("a"));
    a_cfg.table.location = location.into();
    a_cfg.table.storage_options = options
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut b_cfg = config(&dir.path().join("b"));
    b_cfg.table = a_cfg.table.clone();
    let (a, b) = tokio::join!(
        Ingester::start(a_cfg.clone()),
        Ingester::start(b_cfg.clone())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let batch = flows(6000, 2);
    let mut sends = Vec::new();
    for i in 0..12 {
        let part = batch.slice(i * 500, 500);
        let addr = if i % 2 == 0 { a.addr() } else { b.addr() };
        sends.push(tokio::spawn(
            async move { post(addr, ipc(&part), &[]).await },
        ));
        if i % 3 == 2 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for s in sends {
        let (status, _, text) = s.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{text}");
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    let mut table = Table::open(&a_cfg.table).await.unwrap();
    let rows = |t: &Table| -> usize { t.files().unwrap().iter().map(|f| f.rows.unwrap()).sum() };
    assert_eq!(rows(&table), 6000);
    assert!(table.version().unwrap() >= 2, "both writers committed");
    // Compaction and checkpoints work on this store too.
    let s = compact_once(&mut table, &CompactConfig::default(), chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(s.partitions_compacted, 2, "{s:?}");
    assert_eq!(table.files().unwrap().len(), 2);
    assert_eq!(rows(&table), 6000);
    // A fresh reader of the store sees the compacted table.
    let reopened = Table::open(&a_cfg.table).await.unwrap();
    assert_eq!(reopened.files().unwrap().len(), 2);
    assert_eq!(rows(&reopened), 6000);
    let Some(mut python) = flowlake_testkit::python_with("deltalake, pyarrow") else {
        return;
    };
    let options: serde_json::Map<_, _> = options
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let got = json_output(python.args([
        "-c",
        &flowlake_testkit::exiting_after(READ),
        location,
        &serde_json::to_string(&options).unwrap(),
    ]));
    assert_eq!(got["rows"], 6000, "{got}");
    assert_eq!(got["bytes"], sum_bytes(&batch), "{got}");
}
