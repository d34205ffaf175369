//! Test servers beyond the harness: a dnsmasq in a namespace, and a network
//! namespace of a test's own (the far side of a node interface).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::harness::{in_netns, sh};

/// A dnsmasq answering `--address=<address>` (`/name/ip`) on `listen` in the
/// namespace `ns`, stopped when dropped.
pub struct Dnsmasq(Child);

impl Dnsmasq {
    /// Starts it and sends `probe` (a DNS query) from the namespace at
    /// `client` until it answers (seconds in an emulated VM). `None` (skip,
    /// printed) without dnsmasq; a failure then under
    /// FLOWLAKE_REQUIRE_PRIVILEGED=1.
    pub fn start(
        ns: &str,
        listen: IpAddr,
        address: &str,
        client: PathBuf,
        probe: Vec<u8>,
    ) -> Option<Dnsmasq> {
        if Command::new("dnsmasq").arg("--version").output().is_err() {
            assert!(
                !std::env::var("FLOWLAKE_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1"),
                "dnsmasq missing"
            );
            eprintln!("skipped: no dnsmasq");
            return None;
        }
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "dnsmasq",
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
            ])
            .arg(format!("--listen-address={listen}"))
            .args(["--bind-interfaces", "--local=/test/", "--pid-file="])
            .arg(format!("--address={address}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = std::net::SocketAddr::new(listen, 53);
        in_netns(client, move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            for _ in 0..150 {
                let _ = s.send_to(&probe, server);
                if s.recv(&mut [0u8; 512]).is_ok() {
                    return;
                }
            }
            panic!("dnsmasq never answered");
        })
        .join()
        .unwrap();
        Some(Dnsmasq(child))
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A network namespace of a test beyond the harness's own, deleted when dropped.
pub struct ExtraNetns(pub String);

impl ExtraNetns {
    pub fn add(name: String) -> Self {
        sh(&["ip", "netns", "add", &name]);
        ExtraNetns(name)
    }

    pub fn run(&self, args: &[&str]) {
        let mut v = vec!["ip", "netns", "exec", self.0.as_str()];
        v.extend_from_slice(args);
        sh(&v);
    }
}

impl Drop for ExtraNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}
