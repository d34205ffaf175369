//! Disabling plugins by name, on the real kernel where it loads programs.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use clap::Parser;
use flowlake_collector::agent::AgentArgs;
use flowlake_collector::datapath::Programs;
use flowlake_collector::enrich::system_clock;
use flowlake_collector::plugins::{LoadContext, PluginSet, PluginState};
use flowlake_collector::retina::{LossSources, RetinaConfig, RetinaMetrics, encode};
use flowlake_collector::{DatapathConfig, DatapathMetrics, preflight};
use flowlake_schemas::Verdict;
use prometheus_client::registry::Registry;

use crate::datapath::harness::{Topology, finish, in_netns, privileged};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    agent: AgentArgs,
}

#[test]
fn unknown_plugin_is_refused_with_the_known_names() {
    let err = Cli::try_parse_from(["flowlake", "--plugins", "flows,drop"])
        .err()
        .expect("refused");
    assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    let text = err.to_string();
    assert!(
        text.contains(
            "unknown plugin \"drop\"; known plugins: flows, drops, dns, tcp, conntrack, \
             interface_stats, tcp_connection_remote, apiserver"
        ),
        "{text}"
    );
    // The default is every plugin; the agent's datapath and metrics share one set.
    let cli = Cli::try_parse_from(["flowlake", "--plugins", "flows,conntrack"]).unwrap();
    let config: flowlake_collector::agent::AgentConfig = cli.agent.into();
    assert!(config.datapath.plugins.enabled("conntrack"));
    assert!(!config.metrics.plugins.enabled("drops"));
    config
        .datapath
        .plugins
        .board()
        .set("flows", PluginState::Failed, Some("x".into()));
    let seen = config.metrics.plugins.statuses();
    assert_eq!(seen[0].state, PluginState::Failed, "one board: {seen:?}");
}

/// `bpftool prog show id <id>` names the program (it is loaded in the kernel).
fn bpftool_name(id: u32) -> Option<String> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show", "id", &id.to_string()])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["name"].as_str().map(String::from)
}

#[test]
fn disabled_plugins_load_nothing_and_report_disabled() {
    if !privileged() {
        return;
    }
    let plugins = PluginSet::select(&["flows", "dns"]).unwrap();
    let config = DatapathConfig {
        plugins: plugins.clone(),
        ..DatapathConfig::for_tests()
    };

    // The preflight (what --check-json prints): no drop or TCP program tried.
    let found = preflight::check(&config);
    let json: serde_json::Value = serde_json::from_str(&found.to_json()).unwrap();
    let programs: Vec<&str> = json["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["program"].as_str().unwrap())
        .collect();
    assert_eq!(programs, ["flow_ingress", "flow_egress"], "{json}");
    let state = |name: &str| {
        json["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["plugin"] == name)
            .unwrap_or_else(|| panic!("{name} in {json}"))["state"]
            .clone()
    };
    for (plugin, expected) in [
        ("flows", "enabled"),
        ("dns", "enabled"),
        ("drops", "disabled"),
        ("tcp", "disabled"),
        ("conntrack", "disabled"),
        ("apiserver", "disabled"),
    ] {
        assert_eq!(state(plugin), expected, "{plugin}: {json}");
    }
    let caps: Vec<&str> = json["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(caps, ["flows", "handshake", "resets", "dns"], "{json}");
    assert_eq!(json["ok"], true);

    // Loaded: only the flow object; every program id is in the kernel
    // (bpftool), none of them a drop or TCP program.
    let mut registry = Registry::default();
    let metrics = DatapathMetrics::new(&mut registry);
    let cx = LoadContext {
        flow_map_entries: 1024,
        min_drop_reason: 0,
    };
    let programs = Programs::load_plugins(&plugins, cx, &metrics).0.unwrap();
    assert_eq!(programs.loaded(), ["flows"]);
    let ids = programs.program_ids();
    let mut names: Vec<&str> = ids.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["clock_sample", "flow_egress", "flow_ingress"]);
    for (name, id) in &ids {
        assert_eq!(bpftool_name(*id).as_deref(), Some(name.as_str()), "id {id}");
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(r#"program_loaded{program="flow_ingress"} 1"#),
        "{text}"
    );
    for absent in ["kfree_skb", "tcp_probe", "tcp_retransmit"] {
        assert!(!text.contains(absent), "{absent} in\n{text}");
    }
    drop(programs);
    for (_, id) in &ids {
        assert_eq!(
            bpftool_name(*id),
            None,
            "program {id} unloaded with its plugin"
        );
    }
}

#[test]
fn without_the_drops_plugin_no_drop_rows() {
    if !privileged() {
        return;
    }
    let t = Topology::new(69, 2);
    t.drop_input_in_pod(1, &["udp", "dport", "9999"]);
    let plugins = PluginSet::select(&["flows", "dns", "tcp"]).unwrap();
    let (dp, rx, m) = t.collector_configured(|c| c.plugins = plugins.clone());
    assert_eq!(m.program_status("flow_ingress"), 1);
    let b = t.pods[1].v4;
    in_netns(t.pod_ns_path(0), move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..5 {
            s.send_to(&[7; 100], SocketAddr::new(b, 9999)).unwrap();
        }
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let records = finish(dp, rx);
    // The flows are there (the packets crossed the veths before the drop)...
    let sent: u64 = records
        .iter()
        .filter(|r| r.dst.ip == b && r.dst.port == Some(9999) && r.verdict == Verdict::Forwarded)
        .map(|r| r.packets)
        .sum();
    assert!(sent >= 5, "{records:#?}");
    // ...the drops are not: the plugin that reports them is off.
    assert!(
        !records.iter().any(|r| r.verdict == Verdict::Dropped),
        "{records:#?}"
    );
    let (state, _) = plugins.board().get("drops").unwrap();
    assert_eq!(state, PluginState::Disabled);
}

#[test]
fn disabled_metric_plugins_leave_no_series() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("net")).unwrap();
    std::fs::write(dir.path().join("net/nf_conntrack"), "").unwrap();
    let text = |names: &[&str]| {
        let mut registry = Registry::default();
        let cfg = RetinaConfig {
            plugins: PluginSet::select(names).unwrap(),
            apiserver_ips: vec!["10.0.0.1".parse().unwrap()],
            ..RetinaConfig::for_tests(dir.path().into())
        };
        RetinaMetrics::register(&mut registry, &cfg, LossSources::default(), system_clock());
        encode(&registry).unwrap()
    };
    let all = text(&["flows", "conntrack", "apiserver"]);
    assert!(all.contains("networkobservability_conntrack_total_connections 0"));
    assert!(all.contains("networkobservability_adv_node_apiserver_latency"));
    assert!(
        all.contains(r#"flowlake_collector_plugin_status{plugin="apiserver",state="enabled"} 1"#)
    );
    let none = text(&["flows"]);
    for absent in [
        "networkobservability_conntrack",
        "apiserver_latency",
        "apiserver_no_response",
    ] {
        assert!(!none.contains(absent), "{absent} in\n{none}");
    }
    for line in [
        r#"flowlake_collector_plugin_status{plugin="conntrack",state="disabled"} 1"#,
        r#"flowlake_collector_plugin_status{plugin="apiserver",state="disabled"} 1"#,
        r#"flowlake_collector_plugin_status{plugin="flows",state="enabled"} 1"#,
    ] {
        assert!(none.lines().any(|l| l == line), "{line} in\n{none}");
    }
}
