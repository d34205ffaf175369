//! The preflight (`flowlake collector --check`) on the running kernel: every
//! program loads, flows are observable, and the degradations are the ones
//! this kernel calls for. In the kernel matrix, its findings go to
//! `$FLOWLAKE_MATRIX_OUT/preflight.json` for docs/compatibility.md.

use flowlake_collector::DatapathConfig;
use flowlake_collector::btf::kernel_has_drop_reasons;
use flowlake_collector::preflight;

use super::harness::privileged;

#[test]
fn verdict_and_capabilities() {
    if !privileged() {
        return;
    }
    let found = preflight::check(&DatapathConfig::for_tests());
    if let Ok(dir) = std::env::var("FLOWLAKE_MATRIX_OUT") {
        std::fs::write(format!("{dir}/preflight.json"), found.to_json()).unwrap();
    }
    let report = found.render();
    assert!(found.flows, "{report}");
    assert!(found.btf, "{report}");
    for p in &found.programs {
        assert!(p.running, "{} not running:\n{report}", p.program);
    }
    for c in &found.capabilities {
        assert!(c.observed, "{} not observed:\n{report}", c.name);
    }
    let drops = found
        .capabilities
        .iter()
        .find(|c| c.name == "drops")
        .unwrap();
    assert_eq!(
        drops.degraded.is_some(),
        !kernel_has_drop_reasons(),
        "drops degraded exactly where the kernel has no drop reasons:\n{report}"
    );
}
