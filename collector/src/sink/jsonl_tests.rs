use std::io::Read;

use super::*;

fn records(n: usize) -> Vec<FlowRecord> {
    let mut cfg = flowlake_gen::GenConfig::for_tests(std::env::temp_dir());
    cfg.rate = 50.0;
    let mut all = flowlake_gen::records(&cfg);
    all.truncate(n);
    assert_eq!(all.len(), n);
    all
}

fn lines_of(path: &Path) -> Vec<serde_json::Value> {
    let mut text = String::new();
    let f = File::open(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(f)
            .read_to_string(&mut text)
            .unwrap();
    } else {
        std::io::BufReader::new(f)
            .read_to_string(&mut text)
            .unwrap();
    }
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn one_object_per_record_with_the_table_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows.jsonl");
    let mut s = JsonlSink::open(JsonlConfig {
        path: path.clone(),
        max_bytes: 1 << 30,
        max_files: 3,
        compress: true,
    })
    .unwrap();
    let recs = records(50);
    assert!(s.write(&recs, Utc::now()).is_empty());
    s.close(Utc::now());
    let lines = lines_of(&path);
    assert_eq!(lines.len(), 50);
    for (l, r) in lines.iter().zip(&recs) {
        assert_eq!(l["bytes"], r.bytes);
        assert_eq!(l["packets"], r.packets);
        assert_eq!(l["src_ip"], r.src.ip.to_string());
        assert_eq!(l["protocol"], r.protocol.name().as_ref());
        assert_eq!(l["observation_point"], r.observation_point.as_str());
        let ns = r.src.identity.as_ref().and_then(|i| i.namespace.clone());
        assert_eq!(
            l.get("src_namespace").and_then(|v| v.as_str()),
            ns.as_deref()
        );
        assert_eq!(
            l["interval_start"],
            r.interval_start
                .to_rfc3339_opts(SecondsFormat::Micros, true)
        );
    }
}

#[test]
fn rotates_by_size_compresses_and_keeps_max_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows.jsonl");
    let mut s = JsonlSink::open(JsonlConfig {
        path: path.clone(),
        max_bytes: 4096,
        max_files: 3,
        compress: true,
    })
    .unwrap();
    let recs = records(400);
    let t0 = Utc::now();
    for (i, chunk) in recs.chunks(20).enumerate() {
        assert!(
            s.write(chunk, t0 + chrono::Duration::seconds(i as i64))
                .is_empty()
        );
    }
    s.close(Utc::now());
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p != &path)
        .collect();
    rotated.sort();
    assert_eq!(rotated.len(), 3, "{rotated:?}");
    assert!(
        rotated
            .iter()
            .all(|p| p.to_string_lossy().ends_with(".jsonl.gz"))
    );
    // No file passes the limit by more than one line; the newest lines survive.
    let mut kept = Vec::new();
    for p in rotated.iter().chain([&path]) {
        let lines = lines_of(p);
        assert!(!lines.is_empty());
        kept.extend(lines.into_iter().map(|l| l["bytes"].as_u64().unwrap()));
    }
    let tail: Vec<u64> = recs[recs.len() - kept.len()..]
        .iter()
        .map(|r| r.bytes)
        .collect();
    assert_eq!(
        kept, tail,
        "rotated files hold the newest records, in order"
    );
    assert!(kept.len() < recs.len(), "older files were removed");
}

#[test]
fn a_removed_directory_is_a_counted_write_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("flows.jsonl");
    let mut s = JsonlSink::open(JsonlConfig {
        path: path.clone(),
        max_bytes: 10,
        max_files: 1,
        compress: false,
    })
    .unwrap();
    let recs = records(2);
    assert!(s.write(&recs[..1], Utc::now()).is_empty());
    std::fs::remove_dir_all(dir.path().join("sub")).unwrap();
    // The next write must rotate the (removed) file: that fails and is counted.
    assert_eq!(
        s.write(&recs[1..], Utc::now()),
        vec![(SinkLoss::WriteError, 1)]
    );
}
