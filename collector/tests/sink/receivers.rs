//! Real receivers: nfcapd (IPFIX over UDP) read back with `nfdump -o json`, a TCP
//! front for it, and DuckDB over the flow log. Missing tools skip the test with
//! the reason, or fail it when FLOWLAKE_REQUIRE_PRIVILEGED=1.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// A running `nfcapd` writing into its own directory.
pub struct Nfcapd {
    child: Child,
    dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl Nfcapd {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("nfcapd")
            .args([
                "-b",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                "3600",
                "-w",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let hex = format!(":{port:04X} ");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string("/proc/net/udp")
            .unwrap()
            .contains(&hex)
        {
            assert!(Instant::now() < deadline, "nfcapd did not bind port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nfcapd {
            child,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// Stops nfcapd (it writes its last file) and returns `nfdump -o json` of all.
    pub fn stop_and_dump(mut self) -> Vec<serde_json::Value> {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err).unwrap();
        }
        assert!(status.success(), "nfcapd: {status} {err}");
        let out = Command::new("nfdump")
            .arg("-R")
            .arg(self.dir.path())
            .args(["-q", "-o", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nfdump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // nfdump 1.7 writes the objects one after another (with or without an array
        // and commas around them).
        let text = String::from_utf8(out.stdout).unwrap();
        let mut rest = text.as_str();
        let mut rows = Vec::new();
        loop {
            rest = rest.trim_start_matches(|c: char| c.is_whitespace() || "[],".contains(c));
            if rest.is_empty() {
                return rows;
            }
            let mut it = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
            match it.next() {
                Some(Ok(v)) => rows.push(v),
                other => panic!("nfdump json: {other:?}: {rest:.400}"),
            }
            rest = &rest[it.byte_offset()..];
        }
    }
}

/// The IPFIX messages a [`tcp_front`] passed on, in order.
pub type Messages = Arc<Mutex<Vec<Vec<u8>>>>;

/// A TCP IPFIX receiver in front of nfcapd (which listens on UDP only): it splits
/// the stream at each message's length field and forwards every message, unchanged,
/// as one datagram, keeping a copy. Returns its address and the copies.
pub fn tcp_front(to: SocketAddr) -> (SocketAddr, Messages) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Messages::default();
    let copies = Arc::clone(&seen);
    std::thread::spawn(move || {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut header = [0u8; 16];
            while conn.read_exact(&mut header).is_ok() {
                assert_eq!(u16::from_be_bytes([header[0], header[1]]), 10, "version");
                let len = u16::from_be_bytes([header[2], header[3]]) as usize;
                let mut msg = header.to_vec();
                msg.resize(len, 0);
                conn.read_exact(&mut msg[16..]).unwrap();
                udp.send_to(&msg, to).unwrap();
                copies.lock().unwrap().push(msg);
                // nfcapd reads datagrams one by one; do not outrun its socket buffer.
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    });
    (addr, seen)
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
