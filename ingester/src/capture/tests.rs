//! The capture store on a local directory: chunks in order, checksums,
//! resumption by a new store over the same directory (an ingester restart),
//! completion joining and checking the file.

use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path;

use super::CaptureUploadError;
use super::store::{CaptureStore, FileDescription};

fn store(dir: &std::path::Path) -> CaptureStore {
    let fs = LocalFileSystem::new_with_prefix(dir).unwrap();
    CaptureStore::new(Arc::new(fs), Path::from("table"))
}

fn describe(data: &[u8]) -> FileDescription {
    FileDescription {
        size: data.len() as u64,
        crc32c: crc32c::crc32c(data),
        filter: "tcp".into(),
        requested_by: "alice".into(),
        stop_reason: "duration".into(),
        interfaces: Vec::new(),
        object_path: String::new(),
    }
}

#[tokio::test]
async fn chunks_resume_after_a_restart_and_complete_into_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    let (a, b) = data.split_at(4096);
    let s = store(dir.path());
    assert_eq!(s.progress("c1", "node-a").await.unwrap().received, 0);
    let n = s
        .put_chunk(
            "c1",
            "node-a",
            0,
            crc32c::crc32c(a),
            Bytes::copy_from_slice(a),
        )
        .await
        .unwrap();
    assert_eq!(n, 4096);
    // A chunk with a bad checksum or at the wrong place is refused, nothing kept.
    let e = s
        .put_chunk("c1", "node-a", 4096, 1, Bytes::copy_from_slice(b))
        .await
        .unwrap_err();
    assert!(matches!(e, CaptureUploadError::Checksum { .. }), "{e}");
    let e = s
        .put_chunk(
            "c1",
            "node-a",
            0,
            crc32c::crc32c(b),
            Bytes::copy_from_slice(b),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, CaptureUploadError::WrongOffset { received: 4096, .. }),
        "{e}"
    );
    // Completing early is refused.
    let e = s
        .complete("c1", "node-a", describe(&data))
        .await
        .unwrap_err();
    assert!(matches!(e, CaptureUploadError::Incomplete { .. }), "{e}");
    // The ingester restarts: a new store over the same directory resumes.
    let s = store(dir.path());
    let p = s.progress("c1", "node-a").await.unwrap();
    assert_eq!((p.received, p.complete), (4096, false));
    s.put_chunk(
        "c1",
        "node-a",
        4096,
        crc32c::crc32c(b),
        Bytes::copy_from_slice(b),
    )
    .await
    .unwrap();
    let d = s.complete("c1", "node-a", describe(&data)).await.unwrap();
    assert_eq!(d.object_path, "table/_captures/c1/node-a.pcapng");
    let on_disk = std::fs::read(dir.path().join("table/_captures/c1/node-a.pcapng")).unwrap();
    assert_eq!(on_disk, data);
    assert!(
        !dir.path()
            .join("table/_captures/c1/node-a.pcapng.parts")
            .exists()
            || std::fs::read_dir(dir.path().join("table/_captures/c1/node-a.pcapng.parts"))
                .unwrap()
                .count()
                == 0
    );
    // Completing again answers the same; the progress says complete.
    assert_eq!(
        s.complete("c1", "node-a", describe(&data)).await.unwrap(),
        d
    );
    let p = s.progress("c1", "node-a").await.unwrap();
    assert_eq!((p.received, p.complete), (10_000, true));
}

#[tokio::test]
async fn a_wrong_whole_file_checksum_is_refused_and_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let data = b"pcapng bytes".to_vec();
    s.put_chunk(
        "c2",
        "n1",
        0,
        crc32c::crc32c(&data),
        Bytes::from(data.clone()),
    )
    .await
    .unwrap();
    let mut d = describe(&data);
    d.crc32c ^= 1;
    let e = s.complete("c2", "n1", d).await.unwrap_err();
    assert!(matches!(e, CaptureUploadError::FileChecksum { .. }), "{e}");
    assert!(!dir.path().join("table/_captures/c2/n1.pcapng").exists());
    for bad in ["", "../x", "A", ".hidden", "a/b"] {
        assert!(s.progress(bad, "n1").await.is_err(), "{bad:?}");
        assert!(s.progress("c2", bad).await.is_err(), "{bad:?}");
    }
}
