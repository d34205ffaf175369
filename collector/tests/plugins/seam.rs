//! The seam: two plugins defined here, registered beside the built-in ones
//! without touching any of them — an eBPF one (the benchmark's packet
//! counter object, loaded through the datapath's loader) and a scrape-time
//! source — each reporting its state like the built-in plugins do.

use std::sync::Arc;

use aya::programs::SchedClassifier;
use aya::{Ebpf, EbpfLoader};
use flowlake_collector::datapath::{Loads, objects};
use flowlake_collector::enrich::system_clock;
use flowlake_collector::plugins::{
    BpfPlugin, Capability, GaugeFamily, LoadContext, Plugin, PluginRegistry, Roots, Source,
    error_chain,
};
use flowlake_collector::retina::{LossSources, RetinaConfig, RetinaMetrics, encode};
use flowlake_collector::{DatapathConfig, preflight};
use prometheus_client::registry::Registry;

use crate::datapath::harness::privileged;

/// `ebpf/counter.bpf.c`'s classifier, loaded (never attached).
struct Counter;

impl Plugin for Counter {
    fn name(&self) -> &'static str {
        "counter"
    }
    fn about(&self) -> &'static str {
        "test: the benchmark's packet counter"
    }
    fn capabilities(&self) -> &'static [Capability] {
        &[Capability {
            name: "packet_count",
            programs: &["count_packets"],
        }]
    }
    fn bpf(&self) -> Option<&dyn BpfPlugin> {
        Some(self)
    }
}

impl BpfPlugin for Counter {
    fn load(&self, _cx: &LoadContext, loads: &mut Loads<'_>) -> Option<Ebpf> {
        let loaded = EbpfLoader::new()
            .load(objects::COUNTER)
            .map_err(|e| error_chain(&e));
        let mut bpf = match loaded {
            Ok(b) => b,
            Err(e) => {
                loads.note("count_packets", Err(e));
                return None;
            }
        };
        let prog: &mut SchedClassifier = bpf
            .program_mut("count_packets")
            .expect("in the object")
            .try_into()
            .expect("a classifier");
        let r = prog.load().map_err(|e| error_chain(&e));
        let ok = r.is_ok();
        loads.note("count_packets", r);
        ok.then_some(bpf)
    }
}

/// A source answering 42.
#[derive(Debug)]
struct Answer;

impl Source for Answer {
    fn read(&self) -> Result<Vec<GaugeFamily>, String> {
        Ok(vec![GaugeFamily {
            name: "test_answer",
            help: "The answer",
            samples: vec![(vec![("of", "everything".into())], 42)],
        }])
    }
}

struct Fixed;

impl Plugin for Fixed {
    fn name(&self) -> &'static str {
        "fixed"
    }
    fn about(&self) -> &'static str {
        "test: a constant gauge"
    }
    fn source(&self, _roots: &Roots) -> Option<Box<dyn Source>> {
        Some(Box::new(Answer))
    }
}

fn registry() -> PluginRegistry {
    PluginRegistry::builtin()
        .register(Arc::new(Counter))
        .register(Arc::new(Fixed))
}

#[test]
fn a_source_plugin_registered_in_a_test_is_scraped_with_its_status() {
    let r = registry();
    assert_eq!(&r.names()[8..], ["counter", "fixed"]);
    let mut metrics = Registry::default();
    let cfg = RetinaConfig {
        plugins: r.select(&["fixed", "flows"]).unwrap(),
        ..RetinaConfig::for_tests("/nonexistent".into())
    };
    RetinaMetrics::register(&mut metrics, &cfg, LossSources::default(), system_clock());
    let text = encode(&metrics).unwrap();
    for line in [
        r#"networkobservability_test_answer{of="everything"} 42"#,
        r#"flowlake_collector_plugin_status{plugin="fixed",state="enabled"} 1"#,
        r#"flowlake_collector_plugin_status{plugin="counter",state="disabled"} 1"#,
        r#"flowlake_collector_plugin_status{plugin="conntrack",state="disabled"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    // Unknown to the built-in registry: refused there.
    assert!(PluginRegistry::builtin().select(&["fixed"]).is_err());
}

#[test]
fn a_bpf_plugin_registered_in_a_test_loads_through_the_datapath() {
    if !privileged() {
        return;
    }
    let config = DatapathConfig {
        plugins: registry().select(&["counter"]).unwrap(),
        ..DatapathConfig::for_tests()
    };
    let found = preflight::check(&config);
    let report = found.render();
    assert_eq!(found.programs.len(), 1, "{report}");
    assert_eq!(found.programs[0].program, "count_packets");
    assert!(found.programs[0].running, "{report}");
    assert_eq!(found.capabilities.len(), 1, "{report}");
    assert!(found.capabilities[0].observed, "{report}");
    assert!(found.ok && !found.flows, "{report}");
    let counter = found
        .plugins
        .iter()
        .find(|p| p.plugin == "counter")
        .unwrap();
    assert_eq!(counter.state.as_str(), "enabled", "{report}");
    assert!(
        report.contains("verdict: the enabled plugins run (flows plugin disabled)"),
        "{report}"
    );
}
