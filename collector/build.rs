//! Compiles `ebpf/*.bpf.c` with clang into OUT_DIR. Without clang (override with
//! `CLANG=/path/to/clang`), the committed objects in `ebpf/obj/` are used instead.
//! `FLOWLAKE_EBPF_UPDATE=1` also writes the fresh objects and the source hash to
//! `ebpf/obj/` (run it after editing the C code; a test checks the hash).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Each object: its name (`<name>.bpf.o`), its source (`ebpf/<source>.bpf.c`)
/// and extra clang flags. `flows_compat` is the flow object for kernels
/// before 5.12, which refuse atomic OR (the collector loads it when `flows`
/// does not load).
const OBJECTS: &[(&str, &str, &[&str])] = &[
    ("flows", "flows", &[]),
    ("flows_compat", "flows", &["-DFLK_NO_ATOMIC_OR"]),
    ("drops", "drops", &[]),
    ("tcp", "tcp", &[]),
    ("counter", "counter", &[]),
];

fn main() -> Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf = manifest.join("../ebpf");
    let committed = ebpf.join("obj");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut sources: Vec<PathBuf> = std::fs::read_dir(&ebpf)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c" || x == "h"))
        .collect();
    sources.sort();
    for s in &sources {
        println!("cargo:rerun-if-changed={}", s.display());
    }
    println!("cargo:rerun-if-changed={}", committed.display());
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=FLOWLAKE_EBPF_UPDATE");

    let hash = source_hash(&ebpf, &sources)?;
    println!("cargo:rustc-env=FLOWLAKE_EBPF_SOURCE_HASH={hash:016x}");

    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let have_clang = Command::new(&clang).arg("--version").output().is_ok();
    for (name, source, extra) in OBJECTS {
        let dst = out.join(format!("{name}.bpf.o"));
        if have_clang {
            compile(&clang, &ebpf, source, extra, &dst)?;
        } else {
            println!("cargo:warning=clang not found: using committed ebpf/obj/{name}.bpf.o");
            std::fs::copy(committed.join(format!("{name}.bpf.o")), &dst)
                .with_context(|| format!("copy committed {name}.bpf.o"))?;
        }
    }
    if have_clang && std::env::var("FLOWLAKE_EBPF_UPDATE").is_ok_and(|v| v == "1") {
        for (name, _, _) in OBJECTS {
            let file = format!("{name}.bpf.o");
            std::fs::copy(out.join(&file), committed.join(&file))?;
        }
        std::fs::write(committed.join("SOURCE_HASH"), format!("{hash:016x}\n"))?;
    }
    Ok(())
}

/// The clang flags; part of the source hash, so changing them marks the
/// committed objects stale too.
fn flags(ebpf: &Path) -> Vec<String> {
    let mut f: Vec<String> = [
        "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Debian/Ubuntu keep asm/ headers under the multiarch directory.
    for multiarch in [
        "/usr/include/x86_64-linux-gnu",
        "/usr/include/aarch64-linux-gnu",
    ] {
        if Path::new(multiarch).exists() {
            f.push("-idirafter".into());
            f.push(multiarch.into());
        }
    }
    f.push(format!("-I{}", ebpf.display()));
    f
}

fn compile(clang: &str, ebpf: &Path, source: &str, extra: &[&str], dst: &Path) -> Result<()> {
    let src = ebpf.join(format!("{source}.bpf.c"));
    let output = Command::new(clang)
        .args(flags(ebpf))
        .args(extra)
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(dst)
        .output()
        .with_context(|| format!("run {clang}"))?;
    if !output.status.success() {
        bail!(
            "clang failed on {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// FNV-1a over the names and contents of the C sources and headers (paths
/// relative to ebpf/, so the hash is the same in every checkout).
fn source_hash(ebpf: &Path, sources: &[PathBuf]) -> Result<u64> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for s in sources {
        let rel = s.strip_prefix(ebpf).unwrap_or(s);
        feed(rel.to_string_lossy().as_bytes());
        feed(&std::fs::read(s)?);
    }
    feed(b"-O2 -g -target bpf -mcpu=v3 -Wall -Werror");
    for (name, source, extra) in OBJECTS {
        feed(format!("{name}:{source}:{}", extra.join(" ")).as_bytes());
    }
    Ok(h)
}
