//! The node's network state when a capture starts (Retina's extra context,
//! kept): addresses, routes and rules, neighbours, nftables and iptables
//! rules, and sockets, taken in the pods' network namespace and stored next
//! to the node's pcapng (`<node>.snapshot.txt`).
//!
//! Each part is the output of the tool an operator would run (`ip`, `nft`,
//! `iptables-save`, `ss`); a tool that is missing or fails is said in its
//! section, and the kernel's own tables under `/proc/thread-self/net` are
//! added so the file is never empty of routes and sockets.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::error::{CaptureError, Result};
use super::socket::in_netns;

/// Where the snapshot of capture `id` on `node` is kept under `dir`.
pub fn file_path(dir: &Path, id: &str, node: &str) -> PathBuf {
    dir.join(id).join(format!("{node}.snapshot.txt"))
}

/// The commands, in the order they appear.
pub const COMMANDS: &[&[&str]] = &[
    &["ip", "-d", "address", "show"],
    &["ip", "-4", "route", "show", "table", "all"],
    &["ip", "-6", "route", "show", "table", "all"],
    &["ip", "rule", "show"],
    &["ip", "neighbour", "show"],
    &["nft", "list", "ruleset"],
    &["iptables-save"],
    &["ip6tables-save"],
    &["ss", "-tuanpe"],
];

/// The kernel's tables read as files (in the namespace of the reading thread).
const PROC_TABLES: &[&str] = &[
    "dev",
    "route",
    "ipv6_route",
    "if_inet6",
    "tcp",
    "tcp6",
    "udp",
    "udp6",
];

/// Longest output kept of one part.
const PART_MAX: usize = 8 << 20;
/// How long one tool may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(10);

/// Takes the snapshot in `netns` (None: ours); `when` heads the text.
pub fn take(netns: Option<&Path>, node: &str, when: &str) -> Result<String> {
    let head = format!("# flowlake network snapshot of node {node} at {when}\n");
    in_netns(netns, move || {
        let mut out = head;
        for argv in COMMANDS {
            out.push_str(&format!("\n### {}\n", argv.join(" ")));
            match run(argv) {
                Ok(text) => out.push_str(&text),
                Err(why) => out.push_str(&format!("(not available: {why})\n")),
            }
        }
        for table in PROC_TABLES {
            out.push_str(&format!("\n### /proc/net/{table}\n"));
            match std::fs::read_to_string(format!("/proc/thread-self/net/{table}")) {
                Ok(text) => out.push_str(&cut(text)),
                Err(e) => out.push_str(&format!("(not available: {e})\n")),
            }
        }
        Ok(out)
    })
}

/// Takes the snapshot and writes it to its file.
pub fn save(netns: Option<&Path>, dir: &Path, id: &str, node: &str, when: &str) -> Result<()> {
    let text = take(netns, node, when)?;
    let path = file_path(dir, id, node);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| CaptureError::io(format!("creating {}", parent.display()), e))?;
    }
    std::fs::write(&path, text)
        .map_err(|e| CaptureError::io(format!("writing {}", path.display()), e))
}

fn cut(mut text: String) -> String {
    if text.len() > PART_MAX {
        let mut end = PART_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("\n(cut)\n");
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// A tool's standard output, or why there is none.
fn run(argv: &[&str]) -> std::result::Result<String, String> {
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + TOOL_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {}s", TOOL_TIMEOUT.as_secs()));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        return Err(format!("{status}: {}", err.trim()));
    }
    Ok(cut(String::from_utf8_lossy(&out).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_has_its_section_and_a_missing_tool_is_said() {
        let text = take(None, "node-a", "2026-12-07T00:00:00Z").unwrap();
        assert!(text.starts_with("# flowlake network snapshot of node node-a at 2026"));
        for argv in COMMANDS {
            assert!(
                text.contains(&format!("### {}\n", argv.join(" "))),
                "{argv:?}"
            );
        }
        assert!(text.contains("### /proc/net/route\nIface"), "{text}");
        assert!(
            run(&["no-such-tool-flowlake"])
                .unwrap_err()
                .contains("No such file")
        );
        assert!(run(&["false"]).unwrap_err().contains("exit status: 1"));
    }
}
