//! End-to-end tests of the `flowlake` binary.

mod capture_upload;
mod collector_check;
mod dashboards_prometheus;
mod deploy_chart;
mod export_kill;
mod gen_cli;
mod ingester_crash;
mod ingester_faults;
mod ingester_tls;
mod losses;
mod pipeline;
mod podman;
mod standalone;

use std::ffi::OsStr;
use std::process::Command;

/// The `flowlake` binary under test.
fn flowlake() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flowlake"))
}

/// Runs `flowlake` with `args` to completion and returns its stdout; fails the test
/// with its stderr when it exits unsuccessfully.
fn flowlake_ok<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> String {
    let out = flowlake().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
