//! The flow table: a Delta Lake table partitioned by `date`/`hour` on any
//! object_store URL (local directory, `s3://`, `gs://`, `az://`).
//!
//! Data files are written first (invisible until committed) and then added in one
//! Delta commit, retried on conflicts with other writers (optimistic concurrency).
//! Each commit carries an application transaction (`txn`) with the writer's id and
//! WAL sequence number, so a replay after a crash can skip what is already in.

use std::sync::Arc;
use std::time::Instant;

use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake_core::kernel::{Action, Add, StructType, Transaction};
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::writer::RecordBatchWriter;
use deltalake_core::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use flowlake_schemas::{PARTITION_COLUMNS, flow_schema};
use url::Url;

use crate::config::TableConfig;
use crate::error::{IngestError, Result};
use crate::parquet::{PartitionRun, StatsColumns, add_stats, write_file, writer_properties};

/// Commit attempts against concurrent writers before giving up (the flush is then
/// retried as a whole).
pub const COMMIT_RETRIES: usize = 30;

/// How long an application transaction not updated counts (the table's
/// `delta.setTransactionRetentionDuration`, set when it is created).
pub const TXN_RETENTION: &str = "interval 7 days";

/// An open flow table.
#[derive(Debug, Clone)]
pub struct Table {
    delta: DeltaTable,
    url: Url,
    /// The store settings it was opened with (for the tables beside it).
    storage_options: std::collections::HashMap<String, String>,
}

/// One data file of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFile {
    pub path: String,
    pub size: i64,
    pub rows: Option<usize>,
    pub date: String,
    pub hour: String,
}

/// A data file encoded in memory, not yet uploaded.
pub struct EncodedFile {
    pub path: object_store::path::Path,
    pub bytes: bytes::Bytes,
    pub add: Add,
}

/// Result of one append commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub version: u64,
    pub files: usize,
    pub bytes: i64,
}

/// Resolves a location (URL or local path) to a URL; local directories are created.
pub fn table_url(location: &str) -> Result<Url> {
    if location.contains("://") {
        return Url::parse(location).map_err(|source| IngestError::Location {
            location: location.into(),
            source,
        });
    }
    let path = std::path::Path::new(location);
    std::fs::create_dir_all(path).map_err(|source| IngestError::Wal {
        path: path.to_path_buf(),
        source,
    })?;
    let abs = std::fs::canonicalize(path).map_err(|source| IngestError::Wal {
        path: path.to_path_buf(),
        source,
    })?;
    Url::from_directory_path(&abs)
        .map_err(|()| IngestError::Config(format!("not an absolute path: {}", abs.display())))
}

fn builder(cfg: &TableConfig) -> Result<(DeltaTableBuilder, Url)> {
    flowlake_storage::register_cloud_schemes();
    let url = table_url(&cfg.location)?;
    let b =
        DeltaTableBuilder::from_url(url.clone())?.with_storage_options(cfg.storage_options.clone());
    Ok((b, url))
}

/// The capture files of the table: under `_captures/` of its root, on its object store.
pub fn capture_store(cfg: &TableConfig) -> Result<crate::capture::CaptureStore> {
    let (b, _) = builder(cfg)?;
    let store = b.build_storage()?.object_store(None);
    Ok(crate::capture::CaptureStore::new(
        store,
        object_store::path::Path::default(),
    ))
}

impl Table {
    /// Opens an existing table.
    pub async fn open(cfg: &TableConfig) -> Result<Table> {
        let (b, url) = builder(cfg)?;
        Ok(Table {
            delta: b.load().await?,
            url,
            storage_options: cfg.storage_options.clone(),
        })
    }

    /// The Delta table in the directory `dir` under this table's root (the
    /// `losses` table: `_losses`), with the same store settings; `None` when
    /// there is none.
    pub async fn beside(&self, dir: &str) -> Result<Option<Table>> {
        let location = format!("{}/{dir}", self.url.as_str().trim_end_matches('/'));
        let cfg = TableConfig {
            location,
            storage_options: self.storage_options.clone(),
        };
        match Table::open(&cfg).await {
            Ok(t) => Ok(Some(t)),
            Err(IngestError::Table(DeltaTableError::NotATable(_))) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens the table, creating it with the flow schema if it does not exist. Safe
    /// when several ingesters start at once: losing the create race just opens.
    pub async fn open_or_create(cfg: &TableConfig) -> Result<Table> {
        let (b, url) = builder(cfg)?;
        let mut delta = b.build()?;
        match delta.load().await {
            Ok(()) => {
                let delta = add_missing_columns(delta, cfg).await?;
                let storage_options = cfg.storage_options.clone();
                return Ok(Table {
                    delta,
                    url,
                    storage_options,
                });
            }
            Err(DeltaTableError::NotATable(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let schema: StructType = flow_schema().as_ref().try_into_kernel()?;
        let created = delta
            .create()
            .with_table_name("flows")
            .with_comment("Flowlake network flows, schema version 1")
            .with_columns(schema.fields().cloned())
            .with_partition_columns(PARTITION_COLUMNS)
            .with_configuration_property(
                deltalake_core::TableProperty::CheckpointInterval,
                Some("20"),
            )
            // Batch `txn`s of collectors that are gone expire (exactly_once.rs).
            .with_configuration_property(
                deltalake_core::TableProperty::SetTransactionRetentionDuration,
                Some(TXN_RETENTION),
            )
            .with_save_mode(SaveMode::Ignore)
            .await;
        match created {
            Ok(delta) => Ok(Table {
                delta,
                url,
                storage_options: cfg.storage_options.clone(),
            }),
            Err(e) => {
                tracing::info!(error = %e, "table create raced with another writer; opening it");
                Table::open(cfg).await
            }
        }
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn delta(&self) -> &DeltaTable {
        &self.delta
    }

    pub fn version(&self) -> Option<u64> {
        self.delta.version()
    }

    /// Loads commits made since this handle last looked.
    pub async fn refresh(&mut self) -> Result<()> {
        self.delta.update_state().await?;
        Ok(())
    }

    /// Highest WAL sequence number this writer has committed, from the table's `txn`.
    pub async fn app_version(&self, app_id: &str) -> Result<Option<i64>> {
        let snapshot = self.delta.snapshot()?;
        Ok(snapshot
            .transaction_version(self.delta.log_store().as_ref(), app_id)
            .await?)
    }

    /// Writes one Parquet file per partition run and commits them atomically, with
    /// the application transaction `(app_id, version)` when given.
    pub async fn append(
        &mut self,
        runs: Vec<PartitionRun>,
        txn: Option<(&str, i64)>,
    ) -> Result<Appended> {
        let mut adds = Vec::new();
        for run in runs {
            adds.extend(self.write_run(run).await?);
        }
        self.commit_adds(adds, txn).await
    }

    /// Writes one partition's rows as a Parquet data file of the table, invisible
    /// until its `Add` action is committed ([`Table::commit_adds`]). Several runs
    /// may be written at once from clones of this handle.
    pub async fn write_run(&self, run: PartitionRun) -> Result<Vec<Add>> {
        let Some(file) = self.encode_run(run)? else {
            return Ok(Vec::new());
        };
        upload(self.delta.object_store(), &file.path, file.bytes).await?;
        Ok(vec![file.add])
    }

    /// The Parquet file of one partition's rows and its `Add` action, in memory:
    /// everything of [`Table::write_run`] but the upload. Its errors come from the
    /// rows, never from the store.
    pub fn encode_run(&self, run: PartitionRun) -> Result<Option<EncodedFile>> {
        if run.num_rows() == 0 {
            return Ok(None);
        }
        let partition = PartitionValues::new(&run.date, &run.hour)?;
        let target = RecordBatchWriter::for_table(&self.delta)?.arrow_schema();
        let (schema, columns) = run.file_columns(&target, &PARTITION_COLUMNS)?;
        let written = write_file(&schema, &columns, writer_properties())?;
        let path = partition.data_file(uuid::Uuid::new_v4());
        let size = written.bytes.len() as i64;
        let columns = StatsColumns::from_config(self.delta.snapshot()?.metadata().configuration());
        let stats = add_stats(&written.metadata, &columns)
            .map_err(|e| IngestError::Internal(format!("statistics of {path}: {e}")))?;
        let add = Add {
            path: path.to_string(),
            size,
            partition_values: partition.into_map(),
            modification_time: chrono::Utc::now().timestamp_millis(),
            data_change: true,
            stats: Some(stats),
            tags: None,
            deletion_vector: None,
            base_row_id: None,
            default_row_commit_version: None,
            clustering_provider: None,
        };
        Ok(Some(EncodedFile {
            path,
            bytes: written.bytes,
            add,
        }))
    }

    /// Commits written data files in one Delta commit, with the application
    /// transaction `(app_id, version)` when given.
    pub async fn commit_adds(
        &mut self,
        adds: Vec<Add>,
        txn: Option<(&str, i64)>,
    ) -> Result<Appended> {
        let txns = txn
            .map(|(app_id, version)| Transaction::new(app_id, version))
            .into_iter()
            .collect();
        self.commit_adds_with(adds, txns).await
    }

    /// Commits written data files in one Delta commit carrying the application
    /// transactions `txns`. A concurrent commit of one of the same app ids makes
    /// it fail with a `ConcurrentTransaction` conflict ([`is_txn_conflict`]).
    pub async fn commit_adds_with(
        &mut self,
        adds: Vec<Add>,
        txns: Vec<Transaction>,
    ) -> Result<Appended> {
        let files = adds.len();
        let bytes = adds.iter().map(|a| a.size).sum();
        let actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
        let version = self.commit(actions, txns, append_operation()).await?;
        Ok(Appended {
            version,
            files,
            bytes,
        })
    }

    /// Commits actions, retrying against concurrent writers; refreshes this handle.
    pub async fn commit(
        &mut self,
        actions: Vec<Action>,
        txns: Vec<Transaction>,
        operation: DeltaOperation,
    ) -> Result<u64> {
        let props = CommitProperties::default()
            .with_max_retries(COMMIT_RETRIES)
            .with_application_transactions(txns);
        let started = Instant::now();
        let finalized = CommitBuilder::from(props)
            .with_actions(actions)
            .build(
                Some(self.delta.snapshot()?),
                self.delta.log_store(),
                operation,
            )
            .await?;
        let version = finalized.version();
        tracing::debug!(version, elapsed = ?started.elapsed(), "committed");
        self.delta.update_state().await?;
        Ok(version)
    }

    /// Every active data file with its partition.
    pub fn files(&self) -> Result<Vec<TableFile>> {
        let snapshot = self.delta.snapshot()?;
        Ok(snapshot
            .log_data()
            .into_iter()
            .map(|f| {
                let pv = f.partition_values_map();
                let get = |k: &str| pv.get(k).cloned().flatten().unwrap_or_default();
                TableFile {
                    path: f.path().to_string(),
                    size: f.size(),
                    rows: f.num_records(),
                    date: get(PARTITION_COLUMNS[0]),
                    hour: get(PARTITION_COLUMNS[1]),
                }
            })
            .collect())
    }

    pub fn into_delta(self) -> DeltaTable {
        self.delta
    }
}

/// Whether a commit failed because a concurrent commit wrote one of its
/// application transactions' app ids (read the table again and plan again).
pub fn is_txn_conflict(e: &IngestError) -> bool {
    use deltalake_core::kernel::transaction::{CommitConflictError, TransactionError};
    matches!(
        e,
        IngestError::Table(DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction)
        })
    )
}

/// Upload part size: files up to this size are one PUT, larger ones a multipart
/// upload of parts this size (as deltalake's writer uploads).
const UPLOAD_PART: usize = 5 << 20;

/// Writes a data file; nothing is visible under `path` until the upload completes.
async fn upload(
    store: Arc<dyn object_store::ObjectStore>,
    path: &object_store::path::Path,
    bytes: bytes::Bytes,
) -> object_store::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut writer =
        object_store::buffered::BufWriter::with_capacity(store, path.clone(), UPLOAD_PART);
    writer.put(bytes).await?;
    writer
        .shutdown()
        .await
        .map_err(|e| object_store::Error::Generic {
            store: "upload",
            source: Box::new(e),
        })
}

/// The `date`/`hour` partition of a data file.
struct PartitionValues {
    date: String,
    hour: String,
}

impl PartitionValues {
    /// Partition values become a directory name: only digits and `-` are taken
    /// (the values are derived from the flow's start time).
    fn new(date: &str, hour: &str) -> Result<Self> {
        let plain = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'-');
        if !plain(date) || !plain(hour) {
            return Err(IngestError::Internal(format!(
                "partition value not a date/hour: {date:?}/{hour:?}"
            )));
        }
        Ok(PartitionValues {
            date: date.into(),
            hour: hour.into(),
        })
    }

    /// `date=…/hour=…/part-00000-{id}-c000.zstd.parquet`, as Delta writers name files.
    fn data_file(&self, id: uuid::Uuid) -> object_store::path::Path {
        object_store::path::Path::from(format!(
            "{}={}/{}={}/part-00000-{id}-c000.zstd.parquet",
            PARTITION_COLUMNS[0], self.date, PARTITION_COLUMNS[1], self.hour
        ))
    }

    fn into_map(self) -> std::collections::HashMap<String, Option<String>> {
        [
            (PARTITION_COLUMNS[0].to_string(), Some(self.date)),
            (PARTITION_COLUMNS[1].to_string(), Some(self.hour)),
        ]
        .into_iter()
        .collect()
    }
}

/// Adds the columns of this build's flow schema that the table lacks, in one
/// metadata commit (a table created by an older version: schema evolution
/// only adds nullable columns, `check_evolution`); their values in older
/// files read as null. Another replica adding them first is fine.
async fn add_missing_columns(delta: DeltaTable, cfg: &TableConfig) -> Result<DeltaTable> {
    let old = RecordBatchWriter::for_table(&delta)?.arrow_schema();
    flowlake_schemas::check_evolution(&old, &flow_schema())
        .map_err(|e| IngestError::Internal(format!("flow table schema: {e}")))?;
    let want: StructType = flow_schema().as_ref().try_into_kernel()?;
    let missing: Vec<_> = want
        .fields()
        .filter(|f| old.field_with_name(f.name()).is_err())
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(delta);
    }
    let names: Vec<String> = missing.iter().map(|f| f.name().clone()).collect();
    match delta.add_columns().with_fields(missing).await {
        Ok(delta) => {
            tracing::info!(columns = ?names, "flow table: columns added");
            Ok(delta)
        }
        Err(e) => {
            tracing::info!(error = %e, "adding columns raced with another writer; reopening");
            let table = Table::open(cfg).await?;
            let now = RecordBatchWriter::for_table(&table.delta)?.arrow_schema();
            match names.iter().find(|n| now.field_with_name(n).is_err()) {
                None => Ok(table.delta),
                Some(n) => Err(IngestError::Internal(format!(
                    "flow table: column {n} could not be added: {e}"
                ))),
            }
        }
    }
}

/// The run's columns in the data file's schema: the table's fields without the
/// partition columns, nested columns cast to the table's field names (Delta names
/// map entries `key_value{key,value}` and list items `element`; the flow schema
/// uses Arrow's defaults); dictionary columns stay dictionaries, for the
/// dictionary writer, with only their distinct values cast.
fn append_operation() -> DeltaOperation {
    DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: Some(PARTITION_COLUMNS.iter().map(|s| s.to_string()).collect()),
        predicate: None,
    }
}

#[cfg(test)]
mod tests {
    use deltalake_core::writer::{DeltaWriter, WriteMode};

    use super::*;
    use crate::parquet::sort_into_partitions;

    /// The `Add` action of a file written from dictionaries carries the same
    /// statistics deltalake's own writer derives from the same rows.
    #[tokio::test]
    async fn add_statistics_equal_deltalakes() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TableConfig {
            location: dir.path().to_str().unwrap().into(),
            storage_options: Default::default(),
        };
        let table = Table::open_or_create(&cfg).await.unwrap();
        let batch = crate::testdata::flows(5000, 2);
        for run in sort_into_partitions(&[batch]) {
            let plain = run.plain_batch().unwrap();
            let date = run.date.clone();
            let partition = [
                (PARTITION_COLUMNS[0].to_string(), run.date.clone().into()),
                (PARTITION_COLUMNS[1].to_string(), run.hour.clone().into()),
            ];
            let ours = table.write_run(run).await.unwrap().remove(0);
            let mut writer = RecordBatchWriter::for_table(table.delta())
                .unwrap()
                .with_writer_properties(writer_properties());
            let target = writer.arrow_schema();
            // The table's columns (its nested field names), partition columns last.
            let (mut fields, partitions): (Vec<_>, Vec<_>) = target
                .fields()
                .iter()
                .cloned()
                .partition(|f| !PARTITION_COLUMNS.contains(&f.name().as_str()));
            fields.extend(partitions);
            let columns = fields
                .iter()
                .map(|f| {
                    let c = plain.column_by_name(f.name()).unwrap();
                    arrow::compute::cast(c, f.data_type()).unwrap()
                })
                .collect();
            let full = arrow::record_batch::RecordBatch::try_new(
                Arc::new(arrow::datatypes::Schema::new(fields)),
                columns,
            )
            .unwrap();
            writer
                .write_partition(full, &partition.into_iter().collect(), WriteMode::Default)
                .await
                .unwrap();
            let theirs = writer.flush().await.unwrap().remove(0);
            let json = |a: &Add| -> serde_json::Value {
                serde_json::from_str(a.stats.as_deref().unwrap()).unwrap()
            };
            assert_eq!(json(&ours), json(&theirs));
            assert_eq!(ours.partition_values, theirs.partition_values);
            assert!(ours.path.starts_with(&format!("date={date}/hour=")));
        }
    }

    #[test]
    fn partition_values_are_plain() {
        assert!(PartitionValues::new("2026-11-25", "07").is_ok());
        assert!(PartitionValues::new("2026/11", "07").is_err());
        assert!(PartitionValues::new("2026-11-25", "").is_err());
    }
}
