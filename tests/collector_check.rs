//! `flowlake collector --check`: the preflight's verdict as the exit code and
//! each program's reason in plain words, as root and as an unprivileged user.

use std::process::Command;

/// Root and kernel BTF, or None after printing why the test skips (panics
/// under FLOWLAKE_REQUIRE_PRIVILEGED=1).
fn privileged() -> Option<()> {
    // SAFETY: geteuid has no preconditions.
    let reason = if unsafe { libc::geteuid() } != 0 {
        "not root"
    } else if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        "no kernel BTF"
    } else if Command::new("setpriv").arg("--version").output().is_err() {
        "no setpriv"
    } else {
        return Some(());
    };
    assert!(
        !flowlake_testkit::required(),
        "privileged test cannot run: {reason}"
    );
    eprintln!("skipped: {reason}");
    None
}

#[test]
fn check_says_what_runs_and_exits_by_the_flow_verdict() {
    if privileged().is_none() {
        return;
    }
    let out = super::flowlake()
        .args(["collector", "--check"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("flow_ingress       running"), "{text}");
    assert!(text.contains("verdict: flows can be observed"), "{text}");

    // Without privileges nothing loads: said in plain words, exit 1. The
    // binary is copied where an unprivileged user may run it.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("flowlake");
    std::fs::copy(env!("CARGO_BIN_EXE_flowlake"), &bin).unwrap();
    Command::new("chmod")
        .args(["-R", "a+rx"])
        .arg(dir.path())
        .status()
        .unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["collector", "--check", "--check-json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{json}");
    assert_eq!(json["flows"], false, "{json}");
    let flow = &json["programs"][0];
    assert_eq!(flow["program"], "flow_ingress");
    assert_eq!(flow["running"], false);
    assert!(
        flow["reason"]
            .as_str()
            .unwrap()
            .starts_with("not permitted"),
        "{json}"
    );
}
