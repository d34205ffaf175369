//! Writes the seed corpus of the `ipc_decode` fuzz target: a few small valid
//! bodies (plain, IPC zstd, IPC lz4, zstd Content-Encoding, two batches, string
//! and label-map columns dictionary-encoded as collectors send them) and one with
//! the wrong schema, each prefixed by the target's encoding byte.
//!
//! `cargo run -p flowlake-wire --example fuzz_seeds -- fuzz/corpus/ipc_decode`

use std::path::PathBuf;

use arrow::ipc::CompressionType;
use arrow::record_batch::RecordBatch;
use flowlake_wire::encode_ipc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus/ipc_decode".into()),
    );
    std::fs::create_dir_all(&dir)?;
    let mut cfg = flowlake_gen::GenConfig::for_tests(std::env::temp_dir());
    cfg.duration = chrono::Duration::hours(1);
    cfg.rate = 8.0 / 3600.0;
    let batch = flowlake_schemas::records_to_batch(&flowlake_gen::records(&cfg));
    let one = std::slice::from_ref(&batch);
    let plain = encode_ipc(one, None)?;
    let narrow = RecordBatch::try_new(
        batch.schema(),
        batch.columns().iter().map(|c| c.slice(0, 1)).collect(),
    )?
    .project(&[0, 1, 2])?;
    let dictionary = flowlake_schemas::dictionary_encode(&batch)?;
    let seeds: [(&str, u8, Vec<u8>); 8] = [
        ("plain", 0, plain.clone()),
        ("ipc_zstd", 0, encode_ipc(one, Some(CompressionType::ZSTD))?),
        (
            "ipc_lz4",
            0,
            encode_ipc(one, Some(CompressionType::LZ4_FRAME))?,
        ),
        ("content_zstd", 1, zstd::encode_all(&plain[..], 3)?),
        (
            "two_batches",
            0,
            encode_ipc(&[batch.slice(0, 3), batch.slice(3, 5)], None)?,
        ),
        ("wrong_schema", 0, encode_ipc(&[narrow], None)?),
        // What collectors send: string and label-map columns dictionary-encoded.
        (
            "dictionary",
            0,
            encode_ipc(std::slice::from_ref(&dictionary), None)?,
        ),
        (
            "dictionary_zstd_two_batches",
            0,
            encode_ipc(
                &[dictionary.slice(0, 3), dictionary.slice(3, 5)],
                Some(CompressionType::ZSTD),
            )?,
        ),
    ];
    for (name, encoding, body) in seeds {
        let mut input = vec![encoding];
        input.extend_from_slice(&body);
        std::fs::write(dir.join(name), &input)?;
        println!("{name}: {} bytes", input.len());
    }
    Ok(())
}
