//! The image and the chart's collector under a real container runtime: podman
//! (Debian's) with runc runs the image with the security context, mounts and
//! seccomp profile of the rendered chart (not copied by hand) on the lab's node
//! namespace. Every program that loads on the host loads in the container, and
//! a pod-to-pod transfer reaches the table with tcpdump's packets and bytes.
//!
//! No registry is reachable, so the base image is `debootstrap --variant=minbase
//! bookworm` imported with `podman import`, cached in ~/.cache/flowlake-podman;
//! the image adds the host-built `flowlake` binary the way the Dockerfile's last
//! stage does. Needs root, BPF, podman, runc and debootstrap; skips with a reason
//! otherwise, fails when FLOWLAKE_REQUIRE_PRIVILEGED=1.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

// The lab of the datapath tests; pipeline.rs compiles its own private copy.
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../collector/tests/datapath/harness.rs"]
mod harness;

mod runtime;

use harness::{Capture, Topology, in_netns, privileged};
use runtime::{Container, IMAGE, Podman, have};

const INGEST_PORT: u16 = 18081;

/// `podman run` options for a rendered container's securityContext. Fails on
/// a field it does not know, so the chart cannot grow one the test ignores.
fn security_args(sc: &Value, profiles: &HashMap<String, PathBuf>) -> Vec<String> {
    let uid = sc["runAsUser"]
        .as_u64()
        .expect("the chart sets the collector's uid");
    let gid = sc["runAsGroup"].as_u64().unwrap_or(uid);
    let mut args = vec![format!("--user={uid}:{gid}")];
    for (key, v) in sc.as_object().unwrap() {
        match key.as_str() {
            "runAsUser" | "runAsGroup" => {}
            "runAsNonRoot" => assert_eq!(v, false, "the collector runs as root"),
            "privileged" => assert_eq!(v, false),
            "allowPrivilegeEscalation" if v == false => {
                args.push("--security-opt=no-new-privileges".into())
            }
            "readOnlyRootFilesystem" if v == true => {
                args.push("--read-only".into());
                args.push("--read-only-tmpfs=false".into());
            }
            "capabilities" => {
                let list = |k: &str| -> Vec<String> {
                    v[k].as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| c.as_str().unwrap().to_string())
                        .collect()
                };
                assert_eq!(list("drop"), ["ALL"]);
                args.push("--cap-drop=all".into());
                for c in list("add") {
                    args.push(format!("--cap-add=CAP_{c}"));
                }
            }
            "seccompProfile" => match v["type"].as_str().unwrap() {
                "Localhost" => {
                    let name = v["localhostProfile"].as_str().unwrap();
                    let file = &profiles[name];
                    args.push(format!("--security-opt=seccomp={}", file.display()));
                }
                "Unconfined" => args.push("--security-opt=seccomp=unconfined".into()),
                other => panic!("seccompProfile {other}"),
            },
            other => panic!("securityContext.{other}={v}: teach tests/podman.rs"),
        }
    }
    args
}

/// `flowlake_collector_program_loaded` per program in a metrics exposition.
fn programs_loaded(text: &str) -> HashMap<String, bool> {
    text.lines()
        .filter_map(|l| l.strip_prefix("flowlake_collector_program_loaded{program=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(p, v)| (p.to_string(), v.trim() == "1"))
        .collect()
}

fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// What loads on this host, outside any container.
fn host_programs() -> HashMap<String, bool> {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = flowlake_collector::DatapathMetrics::new(&mut registry);
    let programs = flowlake_collector::datapath::Programs::load(1024, 0, &metrics);
    drop(programs);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    programs_loaded(&text)
}

fn curl_in(ns: &str, url: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sf", "--max-time", "2", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A child process, stopped with SIGTERM (and waited for) when dropped.
struct Terminated(Child);

impl Drop for Terminated {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

#[test]
fn chart_collector_under_podman_loads_everything_and_counts_exactly() {
    if !privileged()
        || !["podman", "runc", "debootstrap", "curl"]
            .iter()
            .all(|t| have(t))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(render) = crate::deploy_chart::renderer(dir.path()) else {
        return;
    };
    let docs = crate::deploy_chart::render(&render, None);
    let ds = crate::deploy_chart::find(&docs, "DaemonSet", "flowlake-collector");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let container = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "collector")
        .unwrap();

    // Localhost profiles: the ConfigMap the init container installs.
    let mut profiles = HashMap::new();
    let cm = crate::deploy_chart::find(&docs, "ConfigMap", "flowlake-collector-seccomp");
    for (key, body) in cm["data"].as_object().unwrap() {
        let file = dir.path().join(key);
        std::fs::write(&file, body.as_str().unwrap()).unwrap();
        let name = container["securityContext"]["seccompProfile"]["localhostProfile"]
            .as_str()
            .unwrap_or_default();
        if name.ends_with(key.as_str()) {
            profiles.insert(name.to_string(), file);
        }
    }
    let mut args: Vec<String> = vec!["run".into(), "-d".into()];
    args.extend(security_args(&container["securityContext"], &profiles));

    // hostPath volumes at their mount points; the spool in a test directory.
    let volumes: HashMap<&str, &Value> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    for m in container["volumeMounts"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap();
        let path = volumes[name]["hostPath"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("volume {name} is not a hostPath"));
        let host = if name == "spool" {
            let d = dir.path().join("spool");
            std::fs::create_dir_all(&d).unwrap();
            d.to_string_lossy().into_owned()
        } else {
            path.to_string()
        };
        let ro = if m["readOnly"] == true { ":ro" } else { "" };
        args.push(format!(
            "--volume={host}:{}{ro}",
            m["mountPath"].as_str().unwrap()
        ));
    }
    // The chart's environment; what Kubernetes would fill in, here by hand.
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let value = match name {
            "FLOWLAKE_COLLECTOR_NODE" => "lab-node".to_string(),
            "FLOWLAKE_COLLECTOR_INGESTER_URL" => format!("http://127.0.0.1:{INGEST_PORT}"),
            _ => e["value"].as_str().unwrap().to_string(),
        };
        args.push(format!("--env={name}={value}"));
    }
    // No Kubernetes API in the lab.
    args.push("--env=FLOWLAKE_COLLECTOR_ENRICH=none".into());

    let podman = Podman::new();
    podman.base();
    podman.image(dir.path());
    // The tools of a capture's network snapshot run in the image.
    for (tool, arg) in [
        ("ip", "-V"),
        ("ss", "-V"),
        ("nft", "--version"),
        ("iptables-save", "--version"),
    ] {
        let entry = format!("--entrypoint={tool}");
        podman.run(&["run", "--rm", "--network=none", &entry, IMAGE, arg]);
    }
    let want = host_programs();
    assert!(
        want.values().any(|l| *l),
        "nothing loads on this host: {want:?}"
    );

    let t = Topology::new(47, 2);
    let node = t.node_ns();
    args.push(format!("--network=ns:{}", t.node_ns_path().display()));
    let name = format!("flowlake-collector-{}", std::process::id());
    args.push(format!("--name={name}"));
    args.push(IMAGE.into());
    args.extend(
        container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string()),
    );

    let table = dir.path().join("table");
    let ingester = Command::new("ip")
        .args(["netns", "exec", &node])
        .arg(env!("CARGO_BIN_EXE_flowlake"))
        .args(["ingester", "--listen", &format!("127.0.0.1:{INGEST_PORT}")])
        .arg("--table")
        .arg(&table)
        .arg("--wal-dir")
        .arg(dir.path().join("wal"))
        .args(["--flush-age", "1s"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let ingester = Terminated(ingester);
    let ready = format!("http://127.0.0.1:{INGEST_PORT}/readyz");
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl_in(&node, &ready).is_none() {
        assert!(Instant::now() < deadline, "the ingester did not get ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    podman.run(&refs);
    let running = Container {
        podman: &podman,
        name,
    };

    let metrics_url = "http://127.0.0.1:10093/metrics";
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = curl_in(&node, metrics_url).unwrap_or_default();
        if gauge(&text, "flowlake_collector_attached_interfaces") == Some(2.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if gauge(&text, "flowlake_collector_attached_interfaces") != Some(2.0) {
        let logs = running.stop();
        panic!("the collector in the container did not attach both pods:\n{logs}\n{text}");
    }
    let got = programs_loaded(&text);

    // A pod-to-pod transfer, captured where the collector counts it (from_pod).
    let (a, b) = (t.pods[0].v4, t.pods[1].v4);
    let capture = Capture::start(&node, &t.pods[0].host_if, "in", dir.path().join("a.pcap"));
    let to = SocketAddr::new(b, 5001);
    let listener = in_netns(t.pod_ns_path(1), move || TcpListener::bind(to).unwrap())
        .join()
        .unwrap();
    let sink = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut n = Vec::new();
        s.read_to_end(&mut n).unwrap();
        n.len()
    });
    in_netns(t.pod_ns_path(0), move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
        s.write_all(&[5u8; 200_000]).unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(sink.join().unwrap(), 200_000);
    let captured = capture.stop();
    // The chart's active timeout reports the transfer; wait until the ingester
    // has it (a batch in flight at SIGTERM can end up in the spool instead).
    let ingested = format!("http://127.0.0.1:{INGEST_PORT}/metrics");
    let deadline = Instant::now() + Duration::from_secs(40);
    while Instant::now() < deadline {
        let m = curl_in(&node, &ingested).unwrap_or_default();
        if gauge(&m, "flowlake_ingester_batches_accepted_total").is_some_and(|n| n >= 1.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs = running.stop();
    drop(running);
    drop(ingester);

    assert_eq!(
        got, want,
        "programs in the container vs on the host\n{logs}"
    );
    let (mut packets, mut bytes) = (0, 0);
    for ((src, dst, _, dport, proto), (p, by)) in &captured {
        if (*src, *dst, *dport, *proto) == (a, b, 5001, 6) {
            packets += p;
            bytes += by;
        }
    }
    assert!(packets > 10, "{captured:?}");
    let Some(mut python) = flowlake_testkit::python_with("deltalake") else {
        return;
    };
    let script = format!(
        "import json, deltalake\n\
         t = deltalake.DeltaTable({table:?}).to_pyarrow_table().to_pylist()\n\
         rows = [r for r in t if r['observation_point'] == 'from_pod' and r['src_ip'] == '{a}' \
         and r['dst_ip'] == '{b}' and r['dst_port'] == 5001]\n\
         print(json.dumps([sum(r['packets'] for r in rows), sum(r['bytes'] for r in rows)]))",
        table = table.to_string_lossy()
    );
    let counted = flowlake_testkit::json_output(
        python.args(["-c", &flowlake_testkit::exiting_after(&script)]),
    );
    assert_eq!(
        counted,
        serde_json::json!([packets, bytes]),
        "table vs tcpdump (packets, bytes)\n{logs}"
    );
}
