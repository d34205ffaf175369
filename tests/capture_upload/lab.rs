//! The lab of the two-node capture test: node namespaces with pods (the
//! datapath tests' harness, compiled once in this binary by `pipeline`),
//! pods named by the protocol-faithful fake Kubernetes API, one real
//! `flowlake collector` process per node, UDP exchanges between pods and
//! per-direction sums of pcapng files.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use flowlake_schemas::capture::pcapng::{Direction, read};
use serde_json::{Value, json};

use crate::pipeline::fake_kube::FakeKube;
use crate::pipeline::harness::{Topology, Tuple, in_netns};

/// A Kubernetes pod of namespace `shop` on `node`, labelled `app=<app>`.
pub(crate) fn pod(name: &str, node: &str, app: &str, ip: IpAddr) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop",
                     "labels": {"app": app, "pod-template-hash": "7d9f"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}],
                   "startTime": "2026-01-01T00:00:00Z"}
    })
}

/// Lists pod `i` of `t` in `kube` and routes its address through its veth in
/// the node namespace (a routed CNI's layout; the bridge still carries the
/// lab's traffic).
pub(crate) fn list(kube: &FakeKube, t: &Topology, i: usize, name: &str, node: &str, app: &str) {
    let ip = t.pods[i].v4;
    let host_if = t.pods[i].host_if.clone();
    t.node(&["ip", "route", "add", &format!("{ip}/32"), "dev", &host_if]);
    kube.apply(pod(name, node, app, ip));
}

/// A kubeconfig naming the fake API server at `addr`.
pub(crate) fn kubeconfig(dir: &Path, addr: SocketAddr) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: http://{addr}\n\
         contexts:\n- name: lab\n  context:\n    cluster: lab\n    user: lab\n\
         current-context: lab\nusers:\n- name: lab\n  user: {{}}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A `flowlake collector` process observing one node namespace; stopped
/// (SIGTERM, then waited for) on drop.
pub(crate) struct Agent {
    child: Child,
}

impl Agent {
    pub(crate) fn start(
        t: &Topology,
        node: &str,
        ingester: SocketAddr,
        kubeconfig: &Path,
        dir: &Path,
    ) -> Agent {
        let spool = dir.join(format!("spool-{node}"));
        let netns = t.node_ns_path();
        let child = crate::flowlake()
            .args(["collector", "--node", node, "--enrich", "kube"])
            .arg("--netns")
            .arg(&netns)
            .args(["--pod-prefixes", &format!("{}v", t.id)])
            .args(["--ingester-url", &format!("http://{ingester}")])
            .arg("--spool-dir")
            .arg(&spool)
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(["--active-timeout", "2s", "--idle-timeout", "1s"])
            .args(["--batch-age", "500ms", "--backoff-max", "1s"])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{node}.log"))).unwrap())
            .spawn()
            .expect("flowlake collector");
        Agent { child }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP socket bound to `port` on pod `i`'s address, inside its namespace.
pub(crate) fn udp_socket(t: &Topology, i: usize, port: u16) -> UdpSocket {
    let at = SocketAddr::new(t.pods[i].v4, port);
    let s = in_netns(t.pod_ns_path(i), move || UdpSocket::bind(at).unwrap())
        .join()
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// `rounds` datagrams of `size` bytes from `client` to `server` and each
/// one's reply, one at a time.
pub(crate) fn exchange(client: &UdpSocket, server: &UdpSocket, rounds: usize, size: usize) {
    let (to_server, to_client) = (server.local_addr().unwrap(), client.local_addr().unwrap());
    let mut buf = vec![0u8; 65_536];
    for i in 0..rounds {
        let payload = vec![(i % 251) as u8; size];
        client.send_to(&payload, to_server).unwrap();
        assert_eq!(server.recv(&mut buf).unwrap(), size);
        server.send_to(&payload[..size / 2], to_client).unwrap();
        assert_eq!(client.recv(&mut buf).unwrap(), size / 2);
    }
}

/// Protocol and IP length (the IP header on) of an Ethernet frame.
fn l3(frame: &[u8]) -> Option<(u8, u64)> {
    let be16 = |o: usize| {
        Some(u64::from(u16::from_be_bytes(
            frame.get(o..o + 2)?.try_into().ok()?,
        )))
    };
    match be16(12)? {
        0x0800 => Some((*frame.get(14 + 9)?, be16(14 + 2)?)),
        0x86dd => Some((*frame.get(14 + 6)?, 40 + be16(14 + 4)?)),
        _ => None,
    }
}

/// (packets, IP bytes) of protocol `proto` per direction on the interface
/// of `file` whose name starts with `name`.
pub(crate) fn per_direction(
    file: &read::File,
    name: &str,
    proto: u8,
) -> HashMap<Direction, (u64, u64)> {
    let index = file
        .interfaces
        .iter()
        .position(|i| i.name.starts_with(name))
        .unwrap_or_else(|| panic!("no interface {name} in {:?}", file.interfaces));
    let mut m: HashMap<Direction, (u64, u64)> = HashMap::new();
    for p in file
        .packets
        .iter()
        .filter(|p| p.interface as usize == index)
    {
        let Some((got, len)) = l3(&p.data) else {
            continue;
        };
        if got != proto {
            continue;
        }
        let e = m.entry(p.direction.expect("a direction")).or_default();
        e.0 += 1;
        e.1 += len;
    }
    m
}

/// Packets and bytes of protocol `proto` in a tcpdump's per-tuple sums.
pub(crate) fn of_protocol(sums: &HashMap<Tuple, (u64, u64)>, proto: u8) -> (u64, u64) {
    sums.iter()
        .filter(|(t, _)| t.4 == proto)
        .fold((0, 0), |a, (_, v)| (a.0 + v.0, a.1 + v.1))
}

/// Packets of every protocol but `proto` in `file`.
pub(crate) fn others(file: &read::File, proto: u8) -> usize {
    file.packets
        .iter()
        .filter(|p| l3(&p.data).is_none_or(|(got, _)| got != proto))
        .count()
}

/// Gives node `t` state its network snapshot must show: an nftables table
/// `flowlake_lab` (when nft is installed) and a TCP listener on `port`.
pub(crate) fn node_state(t: &Topology, port: u16) -> std::net::TcpListener {
    if has_nft() {
        t.node(&["nft", "add", "table", "inet", "flowlake_lab"]);
    }
    in_netns(t.node_ns_path(), move || {
        std::net::TcpListener::bind(("0.0.0.0", port)).unwrap()
    })
    .join()
    .unwrap()
}

fn has_nft() -> bool {
    std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A snapshot of node `t`: the routes and veths of its first `pods` pods,
/// the nftables table and the listener of [`node_state`].
pub(crate) fn check_snapshot(t: &Topology, pods: usize, text: &str, port: u16) {
    for p in &t.pods[..pods] {
        let route = format!("{} dev {}", p.v4, p.host_if);
        assert!(text.contains(&route), "no route {route:?} in\n{text}");
        assert!(
            text.contains(&format!(" {}@", p.host_if)),
            "no {} in\n{text}",
            p.host_if
        );
    }
    if has_nft() {
        assert!(text.contains("table inet flowlake_lab"), "{text}");
    }
    let listening = format!("0.0.0.0:{port}");
    assert!(
        text.lines()
            .any(|l| l.contains("LISTEN") && l.contains(&listening)),
        "no listener {listening} in\n{text}"
    );
}
