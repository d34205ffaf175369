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
use deltalake_core::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake_core::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use flowlake_schemas::{PARTITION_COLUMNS, flow_schema};
use url::Url;

use crate::config::TableConfig;
use crate::error::{IngestError, Result};
use crate::parquet::{PartitionRun, writer_properties};

/// Commit attempts against concurrent writers before giving up (the flush is then
/// retried as a whole).
pub const COMMIT_RETRIES: usize = 30;

/// An open flow table.
#[derive(Debug, Clone)]
pub struct Table {
    delta: DeltaTable,
    url: Url,
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

impl Table {
    /// Opens an existing table.
    pub async fn open(cfg: &TableConfig) -> Result<Table> {
        let (b, url) = builder(cfg)?;
        Ok(Table {
            delta: b.load().await?,
            url,
        })
    }

    /// Opens the table, creating it with the flow schema if it does not exist. Safe
    /// when several ingesters start at once: losing the create race just opens.
    pub async fn open_or_create(cfg: &TableConfig) -> Result<Table> {
        let (b, url) = builder(cfg)?;
        let mut delta = b.build()?;
        match delta.load().await {
            Ok(()) => return Ok(Table { delta, url }),
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
            .with_save_mode(SaveMode::Ignore)
            .await;
        match created {
            Ok(delta) => Ok(Table { delta, url }),
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

    /// Writes one partition's rows as Parquet data files of the table, invisible
    /// until their `Add` actions are committed ([`Table::commit_adds`]). Several
    /// runs may be written at once from clones of this handle.
    pub async fn write_run(&self, run: PartitionRun) -> Result<Vec<Add>> {
        let mut writer =
            RecordBatchWriter::for_table(&self.delta)?.with_writer_properties(writer_properties());
        let target = writer.arrow_schema();
        // The run holds one partition: `write_partition` skips the writer's own
        // split by partition values (a second sort and copy of every row).
        let partition = [
            (PARTITION_COLUMNS[0].to_string(), run.date.into()),
            (PARTITION_COLUMNS[1].to_string(), run.hour.into()),
        ];
        writer
            .write_partition(
                to_table_types(&run.batch, &target)?,
                &partition.into_iter().collect(),
                WriteMode::Default,
            )
            .await?;
        Ok(writer.flush().await?)
    }

    /// Commits written data files in one Delta commit, with the application
    /// transaction `(app_id, version)` when given.
    pub async fn commit_adds(
        &mut self,
        adds: Vec<Add>,
        txn: Option<(&str, i64)>,
    ) -> Result<Appended> {
        let files = adds.len();
        let bytes = adds.iter().map(|a| a.size).sum();
        let actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
        let version = self.commit(actions, txn, append_operation()).await?;
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
        txn: Option<(&str, i64)>,
        operation: DeltaOperation,
    ) -> Result<u64> {
        let mut props = CommitProperties::default().with_max_retries(COMMIT_RETRIES);
        if let Some((app_id, version)) = txn {
            props = props.with_application_transaction(Transaction::new(app_id, version));
        }
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

/// Casts columns whose nested field names differ from the table's (Delta names map
/// entries `key_value{key,value}` and list items `element`; the flow schema uses
/// Arrow's defaults). Values are unchanged.
fn to_table_types(
    batch: &arrow::record_batch::RecordBatch,
    target: &arrow::datatypes::SchemaRef,
) -> Result<arrow::record_batch::RecordBatch> {
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        match target.field_with_name(field.name()) {
            Ok(want) if want.data_type() != column.data_type() => {
                columns.push(arrow::compute::cast(column, want.data_type())?);
                fields.push(
                    field
                        .as_ref()
                        .clone()
                        .with_data_type(want.data_type().clone()),
                );
            }
            _ => {
                columns.push(Arc::clone(column));
                fields.push(field.as_ref().clone());
            }
        }
    }
    let schema =
        arrow::datatypes::Schema::new_with_metadata(fields, batch.schema().metadata().clone());
    Ok(arrow::record_batch::RecordBatch::try_new(
        Arc::new(schema),
        columns,
    )?)
}

fn append_operation() -> DeltaOperation {
    DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: Some(PARTITION_COLUMNS.iter().map(|s| s.to_string()).collect()),
        predicate: None,
    }
}
