//! Real receivers: nfcapd (IPFIX over UDP) read back with `nfdump -o json` and a TCP
//! front for it (both in `flowlake_testkit::nfcapd`), and DuckDB over the flow log.
//! Missing tools skip the test with the reason, or fail it when
//! FLOWLAKE_REQUIRE_PRIVILEGED=1.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub use flowlake_testkit::nfcapd::{Messages, Nfcapd, tcp_front};

/// None when the tools are there; otherwise skips (printing why) or panics under
/// FLOWLAKE_REQUIRE_PRIVILEGED=1.
pub fn missing(tools: &[&str]) -> bool {
    let mut absent: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    let duckdb = Command::new("python3")
        .args(["-c", "import duckdb"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !duckdb {
        absent.push("python3 duckdb");
    }
    if absent.is_empty() {
        return false;
    }
    let reason = format!("missing {absent:?} (scripts/test.sh installs them)");
    if std::env::var("FLOWLAKE_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
        panic!("{reason}");
    }
    eprintln!("skipped: {reason} (set FLOWLAKE_REQUIRE_PRIVILEGED=1 to fail instead)");
    true
}

/// DuckDB over files matching `glob`: one row of JSON values per query.
pub fn duckdb(sql: &str) -> Vec<serde_json::Value> {
    let script = format!(
        "import duckdb, json\nrows = duckdb.sql({sql:?}).fetchall()\nprint(json.dumps([list(r) for r in rows], default=str))"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Files in `dir`, sorted.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}
