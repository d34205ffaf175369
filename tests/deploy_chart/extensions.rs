//! What issue #18 added to the chart: the collector's plugins and sinks, and the
//! query service's Flight SQL port.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::Value;

use super::{check_all, container, env_matches_flags, env_values, find, render, renderer, typed};

/// `FLOWLAKE_COLLECTOR_PLUGINS` of the collector's container.
fn collector_plugins(docs: &[Value]) -> Option<String> {
    let ds: DaemonSet = typed(find(docs, "DaemonSet", "flowlake-collector"));
    let pod = ds.spec.template.spec.unwrap();
    env_values(container(&pod.containers, "collector"))
        .get("FLOWLAKE_COLLECTOR_PLUGINS")
        .cloned()
}

#[test]
fn chart_enables_collector_plugins_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(bin) = renderer(tmp.path()) else {
        return;
    };
    // Default: every plugin the collector knows, in its order.
    let all = flowlake_collector::plugins::PluginRegistry::builtin()
        .names()
        .join(",");
    assert_eq!(collector_plugins(&render(&bin, None)), Some(all));
    let values = tmp.path().join("plugins.yaml");
    std::fs::write(&values, "collector:\n  plugins: [flows, dns, conntrack]\n").unwrap();
    let docs = render(&bin, Some(&values));
    env_matches_flags(&docs);
    let chosen = collector_plugins(&docs).unwrap();
    assert_eq!(chosen, "flows,dns,conntrack");
    // The collector accepts what the chart sets (a typo would be refused).
    let out = crate::flowlake()
        .args(["collector", "--check", "--check-json"])
        .env("FLOWLAKE_COLLECTOR_PLUGINS", "flows,dnss")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown plugin \"dnss\"; known plugins: flows,"),
        "{err}"
    );
    let parsed =
        flowlake_collector::plugins::PluginSet::select(&chosen.split(',').collect::<Vec<_>>());
    assert!(parsed.is_ok_and(|p| p.enabled("conntrack") && !p.enabled("drops")));
}

/// The Flight SQL port (`query.flightPort`) of the query container, its Service and
/// the NetworkPolicy's open rule: `port` everywhere, or nowhere when 0.
fn check_flight_port(docs: &[Value], query: &Container, port: Option<i32>) {
    let listen = env_values(query)
        .get("FLOWLAKE_QUERY_FLIGHT_LISTEN")
        .cloned();
    assert_eq!(listen, port.map(|p| format!("0.0.0.0:{p}")));
    let container_port = query
        .ports
        .clone()
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.name.as_deref() == Some("flight"))
        .map(|p| p.container_port);
    assert_eq!(container_port, port);
    let svc: Service = typed(find(docs, "Service", "flowlake-query"));
    let svc_port = svc
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .find(|p| p.name.as_deref() == Some("flight"));
    assert_eq!(svc_port.as_ref().map(|p| p.port), port);
    if let Some(p) = svc_port {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        assert_eq!(p.target_port, Some(IntOrString::String("flight".into())));
        assert_eq!(p.app_protocol.as_deref(), Some("grpc"));
    }
    if docs.iter().any(|d| d["kind"] == "NetworkPolicy") {
        let np: NetworkPolicy = typed(find(docs, "NetworkPolicy", "flowlake-ingest"));
        let open: Vec<_> = np.spec.unwrap().ingress.unwrap()[1]
            .ports
            .clone()
            .unwrap()
            .into_iter()
            .filter_map(|p| p.port)
            .collect();
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int;
        let mut expected = vec![Int(8082)];
        expected.extend(port.map(Int));
        assert_eq!(open, expected, "the query ports are open to clients");
    }
}

#[test]
fn flight_sql_port_exposed_unless_off() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(bin) = renderer(tmp.path()) else {
        return;
    };
    let values = tmp.path().join("values.yaml");
    // Default (8083), another port with the NetworkPolicy (query beside the ingester),
    // and off with an object store (query in a Deployment of its own).
    for (yaml, port) in [
        (None, Some(8083)),
        (
            Some("networkPolicy: {enabled: true}\nquery: {flightPort: 9443}\n"),
            Some(9443),
        ),
        (
            Some(
                "objectStore: {url: s3://flows/x}\nnetworkPolicy: {enabled: true}\nquery: {flightPort: 0}\n",
            ),
            None,
        ),
    ] {
        if let Some(y) = yaml {
            std::fs::write(&values, y).unwrap();
        }
        let docs = render(&bin, yaml.map(|_| values.as_path()));
        check_all(&docs);
        env_matches_flags(&docs);
        let pod = match docs.iter().any(|d| d["kind"] == "Deployment") {
            true => typed::<Deployment>(find(&docs, "Deployment", "flowlake-query"))
                .spec
                .template
                .spec
                .unwrap(),
            false => typed::<StatefulSet>(find(&docs, "StatefulSet", "flowlake-ingester"))
                .spec
                .template
                .spec
                .unwrap(),
        };
        check_flight_port(&docs, container(&pod.containers, "query"), port);
    }
}

/// The collector's pod spec.
fn collector_pod(docs: &[Value]) -> k8s_openapi::api::core::v1::PodSpec {
    let ds: DaemonSet = typed(find(docs, "DaemonSet", "flowlake-collector"));
    ds.spec.template.spec.unwrap()
}

#[test]
fn chart_sets_the_collector_sinks() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(bin) = renderer(tmp.path()) else {
        return;
    };
    // Default: the ingester only, no flow log volume.
    let pod = collector_pod(&render(&bin, None));
    let env = env_values(container(&pod.containers, "collector"));
    assert_eq!(env["FLOWLAKE_COLLECTOR_SINKS"], "ingester");
    assert!(!env.contains_key("FLOWLAKE_COLLECTOR_IPFIX_TARGET"));
    assert!(!env.contains_key("FLOWLAKE_COLLECTOR_JSONL_PATH"));
    let volumes = pod.volumes.unwrap_or_default();
    assert!(!volumes.iter().any(|v| v.name == "flow-log"));

    // All three: IPFIX over TCP and the flow log in the node's /var/log/flows.
    let values = tmp.path().join("sinks.yaml");
    std::fs::write(
        &values,
        "collector:\n  sinks: [ingester, ipfix, jsonl]\n  sinkQueueBatches: 16\n  \
         ipfix: {target: \"nfcapd.monitoring:4739\", transport: tcp}\n  \
         jsonl: {hostPath: /var/log/flows, maxBytes: 1048576, maxFiles: 3}\n",
    )
    .unwrap();
    let docs = render(&bin, Some(&values));
    check_all(&docs);
    env_matches_flags(&docs);
    let pod = collector_pod(&docs);
    let c = container(&pod.containers, "collector");
    let env = env_values(c);
    // The collector's own sink flags parse the chart's values.
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        sinks: flowlake_collector::sink::SinkArgs,
    }
    let flag = |flag: &str, var: &str| format!("--{flag}={}", env[var]);
    let cli = <Cli as clap::Parser>::try_parse_from([
        "collector".to_string(),
        flag("sinks", "FLOWLAKE_COLLECTOR_SINKS"),
        flag(
            "sink-queue-batches",
            "FLOWLAKE_COLLECTOR_SINK_QUEUE_BATCHES",
        ),
        flag("ipfix-target", "FLOWLAKE_COLLECTOR_IPFIX_TARGET"),
        flag("ipfix-transport", "FLOWLAKE_COLLECTOR_IPFIX_TRANSPORT"),
        flag("jsonl-path", "FLOWLAKE_COLLECTOR_JSONL_PATH"),
        flag("jsonl-max-bytes", "FLOWLAKE_COLLECTOR_JSONL_MAX_BYTES"),
        flag("jsonl-max-files", "FLOWLAKE_COLLECTOR_JSONL_MAX_FILES"),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    use flowlake_collector::sink::{SinkConfig, SinkKind, ipfix::Transport};
    let cfg = SinkConfig::from(cli.sinks);
    assert_eq!(
        cfg.sinks,
        [SinkKind::Ingester, SinkKind::Ipfix, SinkKind::Jsonl]
    );
    assert_eq!(cfg.queue_batches, 16);
    let ipfix = cfg.ipfix.unwrap();
    assert_eq!(ipfix.target, "nfcapd.monitoring:4739");
    assert_eq!(ipfix.transport, Transport::Tcp);
    assert_eq!((cfg.jsonl.max_bytes, cfg.jsonl.max_files), (1 << 20, 3));
    // The flow log lands in the node's directory (the root filesystem is read-only).
    let mount = c
        .volume_mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.name == "flow-log")
        .expect("the flow log is mounted");
    assert!(cfg.jsonl.path.starts_with(&mount.mount_path), "{mount:?}");
    assert_ne!(mount.read_only, Some(true));
    let volume = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "flow-log");
    let host = volume.and_then(|v| v.host_path).expect("a hostPath volume");
    assert_eq!(host.path, "/var/log/flows");

    // IPFIX without a target is refused when rendering, not when the pod starts.
    std::fs::write(&values, "collector:\n  sinks: [ingester, ipfix]\n").unwrap();
    let out = std::process::Command::new(&bin)
        .arg(super::root().join("deploy/helm/flowlake"))
        .arg("-f")
        .arg(&values)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("set collector.ipfix.target"), "{err}");
}
