//! The Helm chart renders into valid Kubernetes objects.
//!
//! No helm binary is available here, so `deploy/render` (Go's text/template with the
//! sprig functions Helm uses) renders the chart; every object is then parsed into the
//! Kubernetes API types of k8s-openapi and serialised back — a misspelt or misplaced
//! field does not survive the round trip and fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

mod extensions;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the renderer, or says why it cannot (Go and sprig come from Debian packages).
pub(crate) fn renderer(dir: &Path) -> Option<PathBuf> {
    let bin = dir.join("render");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(root().join("deploy/render"))
        .env("GOPATH", "/usr/share/gocode")
        .env("GO111MODULE", "off")
        .env("GOCACHE", dir.join("gocache"))
        .status();
    match status {
        Ok(s) if s.success() => Some(bin),
        other => {
            let why = format!("cannot build deploy/render with go and Debian's sprig: {other:?}");
            if std::env::var("FLOWLAKE_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
                panic!("{why}");
            }
            eprintln!("skipping: {why}");
            None
        }
    }
}

pub(crate) fn render(bin: &Path, values: Option<&Path>) -> Vec<Value> {
    let mut cmd = Command::new(bin);
    cmd.arg(root().join("deploy/helm/flowlake"));
    if let Some(v) = values {
        cmd.arg("-f").arg(v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Parses into the typed object and checks nothing was lost on the way back.
fn typed<T: DeserializeOwned + Serialize>(doc: &Value) -> T {
    let mut doc = doc.clone();
    let source = doc.as_object_mut().unwrap().remove("__source");
    let obj: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| {
        panic!(
            "{source:?}: not a valid {}: {e}",
            std::any::type_name::<T>()
        )
    });
    let back = serde_json::to_value(&obj).unwrap();
    if let Some(path) = lost(&doc, &back, String::new()) {
        panic!("{source:?}: {path} does not survive the round trip (misspelt or misplaced)");
    }
    obj
}

/// The first path of `original` that `round_trip` does not hold with the same value.
/// (The serialiser may add fields, such as apiVersion on embedded objects.)
fn lost(original: &Value, round_trip: &Value, path: String) -> Option<String> {
    match (original, round_trip) {
        (Value::Object(a), Value::Object(b)) => a.iter().find_map(|(k, v)| match b.get(k) {
            Some(w) => lost(v, w, format!("{path}.{k}")),
            None => Some(format!("{path}.{k}")),
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (v, w))| lost(v, w, format!("{path}[{i}]"))),
        (a, b) if a == b => None,
        _ => Some(path),
    }
}

fn check_all(docs: &[Value]) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap().to_string();
        match kind.as_str() {
            "DaemonSet" => drop(typed::<DaemonSet>(doc)),
            "StatefulSet" => drop(typed::<StatefulSet>(doc)),
            "Deployment" => drop(typed::<Deployment>(doc)),
            "Service" => drop(typed::<Service>(doc)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(doc)),
            "ClusterRole" => drop(typed::<ClusterRole>(doc)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(doc)),
            "NetworkPolicy" => drop(typed::<NetworkPolicy>(doc)),
            "ConfigMap" => drop(typed::<ConfigMap>(doc)),
            "Secret" => drop(typed::<Secret>(doc)),
            "ServiceMonitor" => {
                assert_eq!(doc["apiVersion"], "monitoring.coreos.com/v1");
                assert!(
                    doc["spec"]["endpoints"]
                        .as_array()
                        .is_some_and(|e| !e.is_empty())
                );
            }
            other => panic!("unexpected kind {other}"),
        }
        seen.push((kind, doc["metadata"]["name"].as_str().unwrap().to_string()));
    }
    seen
}

pub(crate) fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} not rendered"))
}

fn container<'a>(pod_spec: &'a [Container], name: &str) -> &'a Container {
    pod_spec.iter().find(|c| c.name == name).unwrap()
}

/// Every `FLOWLAKE_*` variable a container sets is a flag of its subcommand, so the
/// chart cannot drift from the binary.
fn env_matches_flags(docs: &[Value]) {
    let mut help = std::collections::HashMap::new();
    for doc in docs {
        let containers = doc["spec"]["template"]["spec"]["containers"].as_array();
        for c in containers.into_iter().flatten() {
            let role = c["args"][0].as_str().unwrap().to_string();
            let text = help.entry(role.clone()).or_insert_with(|| {
                let out = crate::flowlake()
                    .args([role.as_str(), "--help"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).into_owned()
            });
            for e in c["env"].as_array().into_iter().flatten() {
                let name = e["name"].as_str().unwrap();
                if name.starts_with("FLOWLAKE_") && name != "FLOWLAKE_LOG" {
                    // Secret-valued flags hide their value: `[env: NAME]`.
                    assert!(
                        text.contains(&format!("env: {name}="))
                            || text.contains(&format!("env: {name}]")),
                        "{role} has no flag for {name} set by the chart"
                    );
                }
            }
        }
    }
}

#[test]
fn default_chart_renders_valid_least_privilege_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(bin) = renderer(tmp.path()) else {
        return;
    };
    let docs = render(&bin, None);
    let kinds = check_all(&docs);
    assert!(kinds.len() >= 8, "{kinds:?}");
    env_matches_flags(&docs);

    let ds: DaemonSet = typed(find(&docs, "DaemonSet", "flowlake-collector"));
    let pod = ds.spec.template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    let c = container(&pod.containers, "collector");
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.privileged, Some(false));
    let caps = sc.capabilities.unwrap();
    assert_eq!(caps.drop.unwrap(), ["ALL"]);
    assert_eq!(
        caps.add.unwrap(),
        ["BPF", "PERFMON", "NET_ADMIN", "SYS_RESOURCE"]
    );
    let env = c.env.clone().unwrap();
    let node = env
        .iter()
        .find(|e| e.name == "FLOWLAKE_COLLECTOR_NODE")
        .unwrap();
    let field = node
        .value_from
        .clone()
        .unwrap()
        .field_ref
        .unwrap()
        .field_path;
    assert_eq!(field, "spec.nodeName", "node name from the downward API");
    let mounts: Vec<String> = c
        .volume_mounts
        .clone()
        .unwrap()
        .into_iter()
        .map(|m| m.mount_path)
        .collect();
    assert!(
        mounts.contains(&"/sys/fs/bpf".into()) && mounts.contains(&"/sys/kernel/tracing".into())
    );
    assert!(c.resources.clone().unwrap().requests.is_some());

    let role: ClusterRole = typed(find(&docs, "ClusterRole", "flowlake-collector"));
    for rule in role.rules.unwrap() {
        assert_eq!(
            rule.verbs,
            ["list", "watch"],
            "enrichment only lists and watches"
        );
    }

    // Local table: one ingester with the query service beside it on the table volume.
    let sts: StatefulSet = typed(find(&docs, "StatefulSet", "flowlake-ingester"));
    let spec = sts.spec;
    assert_eq!(spec.replicas, Some(1));
    let claims: Vec<String> = spec
        .volume_claim_templates
        .unwrap()
        .into_iter()
        .map(|c| c.metadata.name.unwrap())
        .collect();
    assert_eq!(claims, ["wal", "table"]);
    let pod = spec.template.spec.unwrap();
    // Compaction and retention settings with their documented defaults.
    let env = env_values(container(&pod.containers, "ingester"));
    for (name, value) in [
        ("FLOWLAKE_INGESTER_COMPACT_EVERY", "1h"),
        ("FLOWLAKE_COMPACT_RETENTION_DAYS", "30"),
        ("FLOWLAKE_COMPACT_GRACE", "10m"),
        ("FLOWLAKE_COMPACT_TARGET_BYTES", "268435456"),
        ("FLOWLAKE_COMPACT_VACUUM_AFTER", "1h"),
        ("FLOWLAKE_COMPACT_TXN_RETENTION", "7d"),
    ] {
        assert_eq!(env.get(name).map(String::as_str), Some(value), "{name}");
    }
    assert!(!env.contains_key("FLOWLAKE_COMPACT_RETENTION_HOURS"));
    let query = container(&pod.containers, "query");
    // The query service writes its hourly rollups under the table root.
    let table_mount = query
        .volume_mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.name == "table")
        .expect("query mounts the table");
    assert_ne!(table_mount.read_only, Some(true));
    assert!(!docs.iter().any(|d| d["kind"] == "Deployment"));
}

#[test]
fn chart_with_every_option_renders_valid_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(bin) = renderer(tmp.path()) else {
        return;
    };
    let docs = render(
        &bin,
        Some(&root().join("tests/fixtures/chart-everything.yaml")),
    );
    let kinds = check_all(&docs);
    env_matches_flags(&docs);
    for kind in [
        "Secret",
        "ServiceMonitor",
        "Deployment",
        "NetworkPolicy",
        "ConfigMap",
    ] {
        assert!(
            kinds.iter().any(|(k, _)| k == kind),
            "{kind} missing from {kinds:?}"
        );
    }
    let sts: StatefulSet = typed(find(&docs, "StatefulSet", "flowlake-ingester"));
    assert_eq!(sts.spec.replicas, Some(3));
    let dep: Deployment = typed(find(&docs, "Deployment", "flowlake-query"));
    let pod = dep.spec.template.spec.unwrap();
    let q = container(&pod.containers, "query");
    let url = q
        .env
        .clone()
        .unwrap()
        .into_iter()
        .find(|e| e.name == "FLOWLAKE_TABLE");
    assert_eq!(url.unwrap().value.as_deref(), Some("s3://flows/prod-eu"));
    assert_eq!(
        q.env_from.clone().unwrap()[0]
            .secret_ref
            .clone()
            .unwrap()
            .name,
        "flowlake-objectstore"
    );
    let np: NetworkPolicy = typed(find(&docs, "NetworkPolicy", "flowlake-ingest"));
    let rules = np.spec.unwrap().ingress.unwrap();
    let ingest_port = rules[0].ports.clone().unwrap()[0].port.clone();
    assert_eq!(
        ingest_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8081))
    );
    check_tls_and_tokens(&docs, q, "query", "FLOWLAKE_QUERY");
    let sts_pod = sts.spec.template.spec.unwrap();
    let env = env_values(container(&sts_pod.containers, "ingester"));
    for (name, value) in [
        ("FLOWLAKE_COMPACT_RETENTION_DAYS", "2"),
        ("FLOWLAKE_COMPACT_RETENTION_HOURS", "6"),
        ("FLOWLAKE_COMPACT_TXN_RETENTION", "14d"),
        ("FLOWLAKE_COMPACT_GRACE", "10m"),
    ] {
        assert_eq!(env.get(name).map(String::as_str), Some(value), "{name}");
    }
    check_tls_and_tokens(
        &docs,
        container(&sts_pod.containers, "ingester"),
        "ingester",
        "FLOWLAKE_INGESTER",
    );
    check_collector_trust(&docs);
    let monitor = find(&docs, "ServiceMonitor", "flowlake");
    let endpoints = monitor["spec"]["endpoints"].as_array().unwrap();
    for (port, component) in [("ingest", "ingester"), ("http", "query")] {
        let e = endpoints.iter().find(|e| e["port"] == port).unwrap();
        assert_eq!(e["scheme"], "https", "{e}");
        assert_eq!(
            e["tlsConfig"]["ca"]["secret"]["name"],
            format!("flowlake-{component}-tls")
        );
        assert_eq!(
            e["tlsConfig"]["serverName"],
            format!("flowlake-{component}.flowlake.svc")
        );
        assert_eq!(
            e["authorization"]["credentials"]["name"],
            "flowlake-prometheus-token"
        );
    }
    let sources: ConfigMap = typed(find(&docs, "ConfigMap", "flowlake-grafana-datasources"));
    let text = &sources.data.unwrap()["flowlake.yaml"];
    for line in [
        "url: https://flowlake-query.flowlake.svc:8082/grafana",
        "httpHeaderName1: Authorization",
        "httpHeaderValue1: \"Bearer ${FLOWLAKE_GRAFANA_TOKEN}\"",
        "tlsCACert: \"${FLOWLAKE_QUERY_CA}\"",
    ] {
        assert!(text.contains(line), "{line} missing: {text}");
    }
    let dashboards: ConfigMap = typed(find(&docs, "ConfigMap", "flowlake-grafana-dashboards"));
    let data = dashboards.data.unwrap_or_default();
    assert!(
        data.len() >= 5,
        "five dashboards provisioned: {:?}",
        data.keys()
    );
    for (name, json) in data {
        let d: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            d["panels"].as_array().is_some_and(|p| !p.is_empty()),
            "{name} has panels"
        );
    }
}

/// The container reads its certificate, key and token file from the mounted Secrets,
/// and its probes speak HTTPS.
fn check_tls_and_tokens(docs: &[Value], c: &Container, component: &str, prefix: &str) {
    let env = env_values(c);
    let dir = format!("/etc/flowlake/{component}");
    assert_eq!(
        env[&format!("{prefix}_TLS_CERT")],
        format!("{dir}-tls/tls.crt")
    );
    assert_eq!(
        env[&format!("{prefix}_TLS_KEY")],
        format!("{dir}-tls/tls.key")
    );
    assert_eq!(
        env[&format!("{prefix}_TOKEN_FILE")],
        format!("{dir}-tokens/tokens.json")
    );
    let mounts: Vec<(String, String)> = c
        .volume_mounts
        .clone()
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.mount_path))
        .collect();
    for (volume, secret) in [
        (
            format!("{component}-tls"),
            format!("flowlake-{component}-tls"),
        ),
        (
            format!("{component}-tokens"),
            format!("flowlake-{component}-tokens"),
        ),
    ] {
        assert!(
            mounts.iter().any(|(n, _)| *n == volume),
            "{volume}: {mounts:?}"
        );
        let v = pod_volume(docs, &volume);
        assert_eq!(v["secret"]["secretName"], secret.as_str(), "{v}");
    }
    for probe in [&c.readiness_probe, &c.liveness_probe] {
        let get = probe.clone().unwrap().http_get.unwrap();
        assert_eq!(get.scheme.as_deref(), Some("HTTPS"), "{component}");
    }
}

/// A container's environment variables with a literal value.
fn env_values(c: &Container) -> std::collections::HashMap<String, String> {
    let env = c.env.clone().unwrap_or_default();
    env.into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect()
}

/// A pod volume of that name in any workload.
fn pod_volume<'a>(docs: &'a [Value], name: &str) -> &'a Value {
    docs.iter()
        .filter_map(|d| d["spec"]["template"]["spec"]["volumes"].as_array())
        .flatten()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

/// Collectors connect over HTTPS, trust only the CA of the ingester's Secret (its
/// key is not mounted) and send their own token.
fn check_collector_trust(docs: &[Value]) {
    let ds: DaemonSet = typed(find(docs, "DaemonSet", "flowlake-collector"));
    let pod = ds.spec.template.spec.unwrap();
    let c = container(&pod.containers, "collector");
    let env = env_values(c);
    assert_eq!(
        env["FLOWLAKE_COLLECTOR_INGESTER_URL"],
        "https://flowlake-ingester.flowlake.svc:8081"
    );
    assert_eq!(
        env["FLOWLAKE_COLLECTOR_INGESTER_CA_FILE"],
        "/etc/flowlake/ingester-ca/ca.crt"
    );
    assert_eq!(
        env["FLOWLAKE_COLLECTOR_INGESTER_TOKEN_FILE"],
        "/etc/flowlake/collector-token/token"
    );
    let ca = pod_volume(docs, "ingester-ca");
    assert_eq!(ca["secret"]["secretName"], "flowlake-ingester-tls");
    assert_eq!(
        ca["secret"]["items"],
        serde_json::json!([{"key": "ca.crt", "path": "ca.crt"}]),
        "only the CA certificate"
    );
    let token = pod_volume(docs, "collector-token");
    assert_eq!(token["secret"]["secretName"], "flowlake-collector-token");
}

#[test]
fn tls_and_tokens_with_the_query_service_beside_the_ingester() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(bin) = renderer(tmp.path()) else {
        return;
    };
    let values = tmp.path().join("values.yaml");
    std::fs::write(
        &values,
        "tls:\n  ingester: {secretName: flowlake-ingester-tls}\n  query: {secretName: flowlake-query-tls}\n\
         auth:\n  ingester: {tokenFileSecret: {name: flowlake-ingester-tokens, key: tokens.json}}\n\
         \x20 query: {tokenFileSecret: {name: flowlake-query-tokens, key: tokens.json}}\n\
         \x20 collector: {tokenSecret: {name: flowlake-collector-token, key: token}}\n",
    )
    .unwrap();
    let docs = render(&bin, Some(&values));
    check_all(&docs);
    env_matches_flags(&docs);
    let sts: StatefulSet = typed(find(&docs, "StatefulSet", "flowlake-ingester"));
    let pod = sts.spec.template.spec.unwrap();
    let ingester = container(&pod.containers, "ingester");
    check_tls_and_tokens(&docs, ingester, "ingester", "FLOWLAKE_INGESTER");
    let query = container(&pod.containers, "query");
    check_tls_and_tokens(&docs, query, "query", "FLOWLAKE_QUERY");
    assert!(
        query
            .volume_mounts
            .clone()
            .unwrap()
            .iter()
            .any(|m| m.name == "table"),
        "the query service still mounts the table"
    );
    check_collector_trust(&docs);
}
