//! podman as the tests run it: its own storage in ~/.cache/flowlake-podman, runc,
//! no default ulimits; the base image from debootstrap, the image from the
//! Dockerfile's last stage.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The base image's name; its tag names the packages it holds (those the
/// Dockerfile's runtime stage installs), so a change of them builds a new one.
fn base_name() -> String {
    format!("localhost/flowlake-base:bookworm-{}", packages().join("-"))
}

/// The packages the Dockerfile's runtime stage installs with apt-get.
pub fn packages() -> Vec<String> {
    let dockerfile = dockerfile();
    let stage = dockerfile
        .rsplit_once("\nFROM ")
        .expect("a multi-stage Dockerfile")
        .1;
    let line = stage
        .lines()
        .find_map(|l| l.split_once("apt-get install ").map(|(_, rest)| rest))
        .expect("the runtime stage installs packages with apt-get");
    let mut out: Vec<String> = line
        .split_whitespace()
        .filter(|w| !w.starts_with('-') && *w != "\\" && *w != "&&")
        .map(String::from)
        .collect();
    out.sort();
    out
}

fn dockerfile() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap()
}
/// The image under test.
pub const IMAGE: &str = "localhost/flowlake:podman-test";

/// podman with its own storage under the cache directory, runc, and no
/// default ulimits (this machine refuses podman's).
pub struct Podman {
    cache: PathBuf,
}

impl Podman {
    pub fn new() -> Podman {
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
        let cache = PathBuf::from(home).join(".cache/flowlake-podman");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(
            cache.join("containers.conf"),
            "[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = \"runc\"\n\
             cgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
        Podman { cache }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", self.cache.join("containers.conf"))
            .arg("--root")
            .arg(self.cache.join("storage"))
            .arg("--runroot")
            .arg(self.cache.join("runroot"));
        c
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("podman");
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The base image: Debian's minimal bookworm with the packages the
    /// Dockerfile's runtime stage installs, built once per package list.
    pub fn base(&self) {
        let base = base_name();
        let exists = self.cmd().args(["image", "exists", &base]).status();
        if exists.is_ok_and(|s| s.success()) {
            return;
        }
        let rootfs = self.cache.join("rootfs");
        let _ = std::fs::remove_dir_all(&rootfs);
        // The Debian archive this machine's apt uses.
        let mirror =
            Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/debian-mirror.sh"))
                .output()
                .expect("scripts/debian-mirror.sh");
        assert!(
            mirror.status.success(),
            "debian-mirror.sh: {}",
            String::from_utf8_lossy(&mirror.stderr)
        );
        let mirror = String::from_utf8_lossy(&mirror.stdout).trim().to_string();
        let out = Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", packages().join(",")))
            .arg("bookworm")
            .arg(&rootfs)
            .arg(mirror)
            .output()
            .expect("debootstrap");
        assert!(
            out.status.success(),
            "debootstrap: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let import = self
            .cmd()
            .args(["import", "-", &base])
            .stdin(tar.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(tar.wait().unwrap().success());
        assert!(
            import.status.success(),
            "podman import: {}",
            String::from_utf8_lossy(&import.stderr)
        );
        let _ = std::fs::remove_dir_all(&rootfs);
    }

    /// The image: the Dockerfile's last stage on the base, its binary the one
    /// cargo built for this test.
    pub fn image(&self, dir: &Path) {
        let ctx = dir.join("image");
        std::fs::create_dir_all(&ctx).unwrap();
        let bin = Path::new(env!("CARGO_BIN_EXE_flowlake"));
        if std::fs::hard_link(bin, ctx.join("flowlake")).is_err() {
            std::fs::copy(bin, ctx.join("flowlake")).unwrap();
        }
        std::fs::write(
            ctx.join("Containerfile"),
            last_stage(&dockerfile(), &base_name()),
        )
        .unwrap();
        self.run(&[
            "build",
            "--pull=never",
            "-q",
            "-t",
            IMAGE,
            ctx.to_str().unwrap(),
        ]);
        // The images of earlier binaries (untagged now) would fill the cache.
        self.run(&["image", "prune", "-f"]);
    }
}

/// The Dockerfile's last stage on `base`: its package installation is the
/// base's `--include`, and its binary comes from the build context.
fn last_stage(dockerfile: &str, base: &str) -> String {
    let stage = dockerfile
        .rsplit_once("\nFROM ")
        .map(|(_, s)| s)
        .expect("a multi-stage Dockerfile");
    let mut out = format!("FROM {base}\n");
    let mut in_run = false;
    let mut copied = false;
    for line in stage.lines().skip(1) {
        let l = line.trim();
        if in_run || l.starts_with("RUN ") {
            in_run = l.ends_with('\\');
            assert!(
                l.contains("apt-get") || l.starts_with("&&") || l.starts_with("rm "),
                "the runtime stage runs more than apt-get: {l} (teach tests/podman.rs)"
            );
            continue;
        }
        if let Some(rest) = l.strip_prefix("COPY --from=build ") {
            let (_, to) = rest.split_once(' ').unwrap();
            assert_eq!(to, "/usr/local/bin/flowlake", "{l}");
            out.push_str(&format!("COPY flowlake {to}\n"));
            copied = true;
        } else if !l.is_empty() && !l.starts_with('#') {
            out.push_str(l);
            out.push('\n');
        }
    }
    assert!(
        copied,
        "the Dockerfile's last stage copies no flowlake binary"
    );
    out
}

/// Skips (or fails in CI) without a tool.
pub fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if flowlake_testkit::required() {
            panic!("{tool} is required (scripts/test.sh installs it)");
        }
        eprintln!("skipping: {tool} is not installed");
    }
    ok
}

/// A running container, removed when dropped (also when the test fails).
pub struct Container<'a> {
    pub podman: &'a Podman,
    pub name: String,
}

impl Container<'_> {
    /// SIGTERM (the collector reports its last interval), then its logs.
    pub fn stop(&self) -> String {
        let _ = self
            .podman
            .cmd()
            .args(["stop", "-t", "30", &self.name])
            .output();
        let logs = self
            .podman
            .cmd()
            .args(["logs", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&logs.stderr).into_owned() + &String::from_utf8_lossy(&logs.stdout)
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.podman.cmd().args(["rm", "-f", &self.name]).output();
    }
}
