//! What loading the plugins' objects found: each program's result in plain
//! words and the reduced forms chosen for this kernel (the preflight's and
//! the plugins' states' input).

use serde::Serialize;

/// One program's load (and, for tracepoints, attach) result.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramStatus {
    pub program: String,
    pub running: bool,
    /// Why it is not running, in plain words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The loader's own error (with the verifier's last lines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ProgramStatus {
    pub fn new(program: &str, result: &std::result::Result<(), String>) -> Self {
        ProgramStatus {
            program: program.to_string(),
            running: result.is_ok(),
            reason: result.as_ref().err().map(|e| plain_words(e)),
            detail: result.as_ref().err().map(|e| last_lines(e, 6)),
        }
    }
}

/// A capability that runs in a reduced form on this kernel, by design.
#[derive(Debug, Clone, Serialize)]
pub struct Degraded {
    /// The plugin (and its capability of the same name).
    pub feature: &'static str,
    pub reason: String,
}

/// What loading the objects found: every program's status and the
/// degradations chosen for this kernel.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    pub programs: Vec<ProgramStatus>,
    pub degraded: Vec<Degraded>,
}

/// A loader error in plain words: the first known cause found in it.
pub fn plain_words(error: &str) -> String {
    const CAUSES: &[(&str, &str)] = &[
        (
            "Operation not permitted",
            "not permitted: the collector needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), CAP_NET_ADMIN, and a seccomp profile that allows bpf and perf_event_open",
        ),
        (
            "uses reserved fields",
            "this kernel refuses an instruction of the program (atomic operations older than the kernel)",
        ),
        (
            "CO-RE relocation",
            "a kernel structure the program reads is missing from this kernel",
        ),
        (
            "0xbad2310",
            "a kernel structure the program reads is missing from this kernel",
        ),
        (
            "tracefs",
            "tracefs is not mounted or not readable (mount it at /sys/kernel/tracing)",
        ),
        (
            "No such file or directory",
            "the kernel has no such tracepoint or file",
        ),
        (
            "Permission denied",
            "the kernel's verifier rejected the program",
        ),
        ("Invalid argument", "the kernel rejected the program"),
        (
            "BTF",
            "the kernel's BTF (/sys/kernel/btf/vmlinux) is missing or unreadable",
        ),
    ];
    CAUSES
        .iter()
        .find(|(needle, _)| error.contains(needle))
        .map_or_else(
            || "failed to load".to_string(),
            |(_, words)| words.to_string(),
        )
}

/// The last `n` non-empty lines of a (verifier) message.
fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
