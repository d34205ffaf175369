//! Batches the table can never take, set aside so they never block the others.
//!
//! Everything a flush needs is checked before a request is acknowledged
//! ([`crate::validate`]), so this is a last line of defence: a WAL record that
//! does not decode or validate on replay (written by an older build, or damaged
//! on disk), or a record whose rows fail to encode at flush. Its body is written
//! to `<wal-dir>/quarantine/<seq>.arrows` (an Arrow IPC stream, or the record's
//! body as it arrived), fsynced, counted in
//! `flowlake_ingester_quarantined_batches_total`, logged at error level with
//! the batch id and the reason, and written to the `losses` table (kind
//! `quarantined`, its records per node); the records after it go on to the table.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;

use crate::decode::{BodyEncoding, encode_ipc};
use crate::error::{IngestError, Result, error_chain};
use crate::losses::LossTable;
use crate::metrics::Metrics;
use crate::wal::{BatchId, WalSeq, sync_dir};

/// Directory of quarantined bodies inside the WAL directory.
pub const DIR: &str = "quarantine";

/// Where quarantined bodies go.
#[derive(Debug, Clone)]
pub struct Quarantine {
    dir: PathBuf,
    metrics: Metrics,
    losses: Option<Arc<LossTable>>,
}

impl Quarantine {
    /// `losses`: where quarantined rows are recorded as lost (when open).
    pub fn new(wal_dir: &Path, metrics: Metrics, losses: Option<Arc<LossTable>>) -> Self {
        Quarantine {
            dir: wal_dir.join(DIR),
            metrics,
            losses,
        }
    }

    /// Sets aside a WAL record's body as it was written.
    pub async fn body(
        &self,
        seq: WalSeq,
        batch_id: Option<&BatchId>,
        encoding: BodyEncoding,
        body: &[u8],
        reason: &IngestError,
    ) -> Result<PathBuf> {
        let ext = match encoding {
            BodyEncoding::Zstd => "arrows.zst",
            _ => "arrows",
        };
        let path = self.write(seq, batch_id, ext, body, reason)?;
        if let Some(losses) = &self.losses {
            losses.record_quarantine(body, encoding, reason).await;
        }
        Ok(path)
    }

    /// Sets aside a buffered record's batches.
    pub async fn batches(
        &self,
        seq: WalSeq,
        batch_id: Option<&BatchId>,
        batches: &[RecordBatch],
        reason: &IngestError,
    ) -> Result<PathBuf> {
        let body = encode_ipc(batches, None)?;
        let path = self.write(seq, batch_id, "arrows", &body, reason)?;
        if let Some(losses) = &self.losses {
            losses
                .record_quarantine(&body, BodyEncoding::Identity, reason)
                .await;
        }
        Ok(path)
    }

    fn write(
        &self,
        seq: WalSeq,
        batch_id: Option<&BatchId>,
        ext: &str,
        body: &[u8],
        reason: &IngestError,
    ) -> Result<PathBuf> {
        let path = self.dir.join(format!("{:020}.{ext}", seq.0));
        let io = |source| IngestError::Wal {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(body).and_then(|()| f.sync_all()))
            .map_err(io)?;
        sync_dir(&self.dir)?;
        self.metrics.quarantined.inc();
        tracing::error!(
            seq = seq.0,
            batch_id = batch_id.map(BatchId::as_str),
            path = %path.display(),
            reason = %error_chain(reason),
            "batch can never be written to the table; quarantined"
        );
        Ok(path)
    }
}
