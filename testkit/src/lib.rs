//! Helpers for tests that use tools from the machine (Python with pyarrow, DuckDB,
//! deltalake, …). Without the tool a test skips with a printed reason; under
//! `FLOWLAKE_REQUIRE_PRIVILEGED=1` (CI) it fails instead. Also certificates from
//! `openssl` ([`tls`]), captured log lines ([`logs`]), an IPFIX reader ([`ipfix`]) and
//! nfcapd/nfdump as an IPFIX receiver ([`nfcapd`]).

pub mod ipfix;
pub mod logs;
pub mod nfcapd;
pub mod tls;

pub use logs::LogCapture;

use std::process::Command;

/// Whether the environment demands that every test really runs (CI).
pub fn required() -> bool {
    std::env::var("FLOWLAKE_REQUIRE_PRIVILEGED").as_deref() == Ok("1")
}

/// `python3` that can import `modules` (comma-separated, as in an `import`
/// statement), or `None` after printing why the test skips.
///
/// # Panics
/// When the modules are missing and [`required`] is true.
pub fn python_with(modules: &str) -> Option<Command> {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Some(Command::new("python3"))
    } else if required() {
        panic!("python3 with {modules} is required (run .ci/run or the README's set-up)");
    } else {
        eprintln!("skipping: python3 with {modules} is not installed");
        None
    }
}

/// `script` followed by a flush of standard output and `os._exit(0)`. Python
/// deltalake's runtime threads can abort an interpreter whose work is done at its
/// teardown ("terminate called without an active exception"); a script that has
/// printed its answer leaves before that teardown.
pub fn exiting_after(script: &str) -> String {
    format!("{script}\nimport os as _os, sys as _sys\n_sys.stdout.flush()\n_os._exit(0)\n")
}

/// Runs `command` and parses its standard output as JSON.
///
/// # Panics
/// When the command fails (its standard error is the message) or prints no JSON.
pub fn json_output(command: &mut Command) -> serde_json::Value {
    let out = command.output().expect("running the command");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on standard output")
}

/// tshark's fields of each packet of a capture file, one tab-separated line per
/// packet, or `None` after printing why the check skips (tshark missing).
///
/// # Panics
/// When tshark is missing and [`required`] is true, or when it cannot read the file.
pub fn tshark_fields(file: &std::path::Path, fields: &[&str]) -> Option<Vec<String>> {
    let mut command = Command::new("tshark");
    command.arg("-r").arg(file).args(["-T", "fields"]);
    for field in fields {
        command.args(["-e", field]);
    }
    let Ok(out) = command.output() else {
        assert!(!required(), "tshark is not installed");
        eprintln!("skipped the tshark check: tshark not installed");
        return None;
    };
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.lines().map(String::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_module_skips_unless_required() {
        if required() {
            let missing = std::panic::catch_unwind(|| python_with("flowlake_no_such_module"));
            assert!(missing.is_err(), "required: a missing module fails");
        } else {
            assert!(python_with("flowlake_no_such_module").is_none());
        }
    }
}
