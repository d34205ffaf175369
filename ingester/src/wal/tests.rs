use super::*;

fn record(seq: u64, id: Option<&str>, body: &[u8]) -> WalRecord {
    WalRecord {
        seq: WalSeq(seq),
        batch_id: id.map(|s| BatchId::parse(s).unwrap()),
        encoding: BodyEncoding::Identity,
        body: Bytes::copy_from_slice(body),
    }
}

#[test]
fn segment_names_round_trip() {
    let id = SegmentId(42);
    assert_eq!(id.file_name(), "00000000000000000042.wal");
    assert_eq!(SegmentId::parse(&id.file_name()), Some(id));
    assert_eq!(SegmentId::parse("42.wal"), None);
    assert_eq!(SegmentId::parse("0000000000000000004x.wal"), None);
    assert!(BatchId::parse("").is_err());
    assert!(BatchId::parse("has space").is_err());
    assert!(BatchId::parse(&"x".repeat(129)).is_err());
}

#[test]
fn replay_after_torn_tail_keeps_every_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, replay) = Wal::open(dir.path(), 1 << 20).unwrap();
    assert!(replay.records.is_empty());
    let records: Vec<WalRecord> = (1..=5)
        .map(|i| {
            record(
                i,
                (i % 2 == 0).then_some("batch-x"),
                &vec![i as u8; 100 * i as usize],
            )
        })
        .collect();
    for r in &records {
        let mut framed = Vec::new();
        r.encode(&mut framed);
        wal.append_durable(&framed).unwrap();
    }
    drop(wal);
    let seg = dir.path().join(SegmentId(1).file_name());
    let full = std::fs::read(&seg).unwrap();
    // Cut the file at every length: replay never fails and returns a prefix.
    let mut prev = 0;
    for cut in (0..=full.len()).step_by(7).chain([full.len()]) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(SegmentId(1).file_name()), &full[..cut]).unwrap();
        let (_, replay) = Wal::open(d.path(), 1 << 20).unwrap();
        let n = replay.records.len();
        assert!(n >= prev || cut == full.len());
        assert_eq!(replay.records[..], records[..n], "cut at {cut}");
        prev = n;
    }
    let (_, replay) = Wal::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(replay.records, records);
    assert_eq!(replay.torn_segments, 0);
}

#[test]
fn rotation_and_removal_keep_newer_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 64).unwrap();
    for i in 1..=4 {
        let mut framed = Vec::new();
        record(i, None, &[0; 80]).encode(&mut framed);
        wal.append_durable(&framed).unwrap();
    }
    // 64-byte segments: every append after the first rotated.
    let seal = wal.rotate().unwrap();
    assert_eq!(seal, SegmentId(5));
    let mut framed = Vec::new();
    record(5, None, b"after").encode(&mut framed);
    wal.append_durable(&framed).unwrap();
    assert_eq!(Wal::remove_before(dir.path(), seal).unwrap(), 4);
    drop(wal);
    let (_, replay) = Wal::open(dir.path(), 64).unwrap();
    assert_eq!(replay.records, vec![record(5, None, b"after")]);
}
