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
        wal.note_appended(WalSeq(i));
    }
    // 64-byte segments: every append after the first rotated.
    let seal = wal.rotate().unwrap();
    assert_eq!(seal, SegmentId(5));
    let mut framed = Vec::new();
    record(5, None, b"after").encode(&mut framed);
    wal.append_durable(&framed).unwrap();
    wal.note_appended(WalSeq(5));
    // Nothing noted as appended is removed before a commit covers it.
    assert_eq!(wal.remove_covered(WalSeq(0)).unwrap(), 0);
    drop(wal);
    // Reopened, the log knows each segment's highest sequence number.
    let (mut wal, replay) = Wal::open(dir.path(), 64).unwrap();
    assert_eq!(replay.records.len(), 5);
    assert_eq!(wal.remove_covered(WalSeq(3)).unwrap(), 3);
    drop(wal);
    let (mut wal, replay) = Wal::open(dir.path(), 64).unwrap();
    assert_eq!(
        replay.records.iter().map(|r| r.seq.0).collect::<Vec<_>>(),
        [4, 5]
    );
    // Segments 4 and 5, and the empty one the first reopen started.
    assert_eq!(wal.remove_covered(WalSeq(5)).unwrap(), 3);
    drop(wal);
    let (_, replay) = Wal::open(dir.path(), 64).unwrap();
    assert!(replay.records.is_empty());
}

/// A group that fails is cut off: what is appended next follows the last whole
/// record, and replay reads every record written before and after.
#[test]
fn undone_group_leaves_no_partial_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 1 << 20).unwrap();
    let mut framed = Vec::new();
    record(1, Some("a"), b"first").encode(&mut framed);
    wal.append_durable(&framed).unwrap();
    // A group written in part (as a full disk leaves it), then undone.
    let mark = wal.mark();
    let mut partial = Vec::new();
    record(2, Some("b"), &[7; 500]).encode(&mut partial);
    wal.current.write_all(&partial[..100]).unwrap();
    wal.current_bytes += 100;
    wal.undo(mark);
    let mut framed = Vec::new();
    record(3, Some("c"), b"third").encode(&mut framed);
    wal.append_durable(&framed).unwrap();
    drop(wal);
    let (_, replay) = Wal::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(replay.torn_segments, 0);
    assert_eq!(
        replay.records,
        vec![
            record(1, Some("a"), b"first"),
            record(3, Some("c"), b"third")
        ]
    );
}
