//! Debian's `nfcapd` as an IPFIX receiver, read back with `nfdump`, and a TCP
//! front for it (nfcapd listens on UDP only). Callers check that the tools exist
//! (and skip or fail as [`crate::required`] says) before starting one.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `nfcapd` writing into its own directory.
pub struct Nfcapd {
    child: Child,
    dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl Nfcapd {
    /// Starts nfcapd on a free loopback UDP port and waits until it is bound.
    ///
    /// # Panics
    /// When nfcapd does not start or bind within 10 s.
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
    ///
    /// # Panics
    /// When nfcapd or nfdump fail, or nfdump's output is not JSON objects.
    pub fn stop_and_dump(mut self) -> Vec<serde_json::Value> {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(killed.is_ok_and(|s| s.success()), "kill -TERM nfcapd");
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

/// The largest UDP payload over IPv4: [`tcp_front`] forwards each message as one
/// datagram, so exporters behind it keep their messages at most this long (over TCP
/// an IPFIX message may be up to 65,535 bytes).
pub const LARGEST_DATAGRAM: usize = 65_507;

/// The IPFIX messages a [`tcp_front`] passed on, in order.
pub type Messages = Arc<Mutex<Vec<Vec<u8>>>>;

/// A TCP IPFIX receiver in front of nfcapd: it splits the stream at each message's
/// length field and forwards every message, unchanged, as one datagram (paced, so
/// nfcapd's socket buffer never overflows), keeping a copy. Returns its address and
/// the copies.
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
                assert!(
                    len <= LARGEST_DATAGRAM,
                    "a {len}-byte message does not fit one datagram: configure the exporter for at most {LARGEST_DATAGRAM}"
                );
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
