//! Export to data lakes: a SQL query or a time range of `flows`, written as
//! Hive-partitioned Parquet or as a Delta table at any object_store URL.
//!
//! Incremental mode reads the Delta version recorded by the previous export at the
//! destination (`_flowlake_export.json`) and exports only the data files committed
//! after it, so a nightly job neither duplicates nor misses rows. The state is written
//! only after the data, so a failed run is simply retried.

mod job;
mod policy;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::execution::memory_pool::MemoryLimit;
use datafusion::prelude::{SessionConfig, SessionContext};
use deltalake_core::DeltaTable;
use deltalake_core::protocol::SaveMode;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::config::{TableArgs, TableLocation};
use crate::error::{QueryError, Result};
use crate::questions::{TimeRange, VIEWS, parse_time};
use crate::storage::{location_url, object_store_for, open_table};

pub use job::{ExportJob, ExportJobs, JobState};
pub use policy::ExportPolicy;

/// Name of the state object written next to the exported data.
pub const STATE_FILE: &str = "_flowlake_export.json";
/// Parquet files are written below this directory of the destination, then moved into
/// place: an interrupted export leaves its partial files only there, where readers of
/// the destination (which skip `_`-prefixed directories) do not look.
pub const STAGING_DIR: &str = "_flowlake_staging";

/// Format of the destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// Parquet files below `date=YYYY-MM-DD/hour=HH/` (when the result has those columns).
    #[default]
    Parquet,
    /// A Delta table (created on first export, appended to afterwards).
    Delta,
}

/// `flowlake export`: a query or time range to Parquet or Delta on any object store.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub table: TableArgs,
    /// Destination directory or URL (`s3://…`, `gs://…`, `az://…`, `file://…`).
    #[arg(long, env = "FLOWLAKE_EXPORT_DESTINATION")]
    pub destination: String,
    /// Object-store options of the destination, `KEY=VALUE`.
    #[arg(long = "destination-option", value_parser = crate::config::parse_key_value, env = "FLOWLAKE_EXPORT_DESTINATION_OPTIONS", value_delimiter = ',')]
    pub destination_options: Vec<(String, String)>,
    /// SQL over `flows` (and the per-pod views); default `SELECT * FROM flows`.
    #[arg(long, env = "FLOWLAKE_EXPORT_SQL")]
    pub sql: Option<String>,
    /// Start of the time range (RFC 3339), applied to `interval_start`.
    #[arg(long, env = "FLOWLAKE_EXPORT_FROM")]
    pub from: Option<String>,
    /// End of the time range (RFC 3339, exclusive).
    #[arg(long, env = "FLOWLAKE_EXPORT_TO")]
    pub to: Option<String>,
    #[arg(
        long,
        value_enum,
        default_value = "parquet",
        env = "FLOWLAKE_EXPORT_FORMAT"
    )]
    pub format: ExportFormat,
    /// Export only what was committed since the last export to this destination.
    #[arg(long, env = "FLOWLAKE_EXPORT_INCREMENTAL")]
    pub incremental: bool,
    /// No progress bar.
    #[arg(long, env = "FLOWLAKE_EXPORT_QUIET")]
    pub quiet: bool,
}

/// What to export and where.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExportConfig {
    #[serde(skip)]
    pub source: TableLocation,
    pub destination: String,
    #[serde(default)]
    pub storage_options: HashMap<String, String>,
    #[serde(default)]
    pub sql: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub format: ExportFormat,
    #[serde(default)]
    pub incremental: bool,
    /// Memory pool (and disk manager) to run under; `None`: unbounded (the CLI).
    #[serde(skip)]
    pub runtime_env: Option<Arc<datafusion::execution::runtime_env::RuntimeEnv>>,
}

impl ExportArgs {
    pub fn into_config(self) -> ExportConfig {
        ExportConfig {
            source: self.table.into_location(),
            destination: self.destination,
            storage_options: self.destination_options.into_iter().collect(),
            sql: self.sql,
            from: self.from,
            to: self.to,
            format: self.format,
            incremental: self.incremental,
            runtime_env: None,
        }
    }
}

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportSummary {
    pub rows: u64,
    /// Delta version after which data was taken (exclusive); `None`: from the start.
    pub from_version: Option<u64>,
    /// Delta version exported up to (inclusive).
    pub to_version: u64,
    pub files_read: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct ExportState {
    source: String,
    table_version: u64,
}

/// Progress callback: rows written so far.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

fn time_range(cfg: &ExportConfig) -> Result<Option<TimeRange>> {
    match (&cfg.from, &cfg.to) {
        (None, None) => Ok(None),
        (from, to) => {
            let from = from
                .as_deref()
                .map(parse_time)
                .transpose()?
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
            let to = to
                .as_deref()
                .map(parse_time)
                .transpose()?
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
            if from >= to {
                return Err(QueryError::BadRequest(
                    "export `from` must be before `to`".into(),
                ));
            }
            Ok(Some(TimeRange { from, to }))
        }
    }
}

async fn read_state(cfg: &ExportConfig) -> Result<Option<ExportState>> {
    let url = location_url(&cfg.destination)?;
    let (store, prefix) = object_store_for(&url, &cfg.storage_options)?;
    let path = prefix.clone().join(STATE_FILE);
    match store.get(&path).await {
        Ok(r) => {
            let bytes = r.bytes().await?;
            let state: ExportState = serde_json::from_slice(&bytes)
                .map_err(|e| QueryError::Config(format!("{STATE_FILE} is corrupt: {e}")))?;
            Ok(Some(state))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn write_state(cfg: &ExportConfig, state: &ExportState) -> Result<()> {
    let url = location_url(&cfg.destination)?;
    let (store, prefix) = object_store_for(&url, &cfg.storage_options)?;
    let body = serde_json::to_vec_pretty(state).map_err(|e| QueryError::Config(e.to_string()))?;
    store
        .put(
            &prefix.join(STATE_FILE),
            PutPayload::from(Bytes::from(body)),
        )
        .await?;
    Ok(())
}

fn relative_files(table: &DeltaTable) -> Result<HashSet<String>> {
    Ok(table
        .snapshot()?
        .log_data()
        .into_iter()
        .map(|add| add.object_store_path().to_string())
        .collect())
}

/// Runs one export to completion.
pub async fn run_export(cfg: &ExportConfig, progress: Option<Progress>) -> Result<ExportSummary> {
    let range = time_range(cfg)?;
    let table = open_table(&cfg.source.location, &cfg.source.storage_options).await?;
    let version = table.version().unwrap_or(0);
    let previous = if cfg.incremental {
        read_state(cfg).await?
    } else {
        None
    };
    let from_version = previous.as_ref().map(|s| s.table_version);
    if let Some(v) = from_version.filter(|v| *v > version) {
        return Err(QueryError::Config(format!(
            "destination was exported up to version {v} but the table is at {version}"
        )));
    }

    // The files to read: all of them, or those added since the last export.
    let mut builder = table.table_provider();
    let files_read;
    if let Some(v) = from_version {
        let mut then = table.clone();
        then.load_version(v).await?;
        let old = relative_files(&then)?;
        let new: Vec<String> = relative_files(&table)?.difference(&old).cloned().collect();
        files_read = new.len();
        if new.is_empty() {
            write_state(
                cfg,
                &ExportState {
                    source: cfg.source.location.clone(),
                    table_version: version,
                },
            )
            .await?;
            return Ok(ExportSummary {
                rows: 0,
                from_version,
                to_version: version,
                files_read,
            });
        }
        builder = builder.with_file_paths(new);
    } else {
        files_read = table.snapshot()?.log_data().into_iter().count();
    }
    let provider = builder.build().await.map_err(QueryError::Execution)?;

    let ctx = match &cfg.runtime_env {
        Some(env) => {
            let ctx = crate::coop::session(SessionConfig::new(), Arc::clone(env));
            if let MemoryLimit::Finite(bytes) = env.memory_pool.memory_limit() {
                crate::bounded::register(&ctx, bytes);
            }
            ctx
        }
        None => SessionContext::new(),
    };
    table.update_datafusion_session(&ctx.state())?;
    ctx.register_table(crate::engine::FLOWS, Arc::new(provider))
        .map_err(QueryError::Execution)?;
    for (name, sql) in VIEWS {
        ctx.sql(&format!("CREATE VIEW {name} AS {sql}"))
            .await
            .map_err(QueryError::Execution)?;
    }
    let base = cfg
        .sql
        .clone()
        .unwrap_or_else(|| "SELECT * FROM flows".to_string());
    crate::admission::admit(&base)?;
    crate::sandbox::check(&base)?;
    let sql = match range {
        Some(r) => format!("SELECT * FROM ({base}) AS q WHERE {}", r.predicate()),
        None => base,
    };
    let df = ctx
        .sql(&sql)
        .await
        .map_err(|e| QueryError::from_datafusion(e, usize::MAX))?;
    crate::admission::check_plan(df.logical_plan())?;
    let names: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let partition_by: Vec<String> = flowlake_schemas::PARTITION_COLUMNS
        .iter()
        .filter(|c| names.iter().any(|n| n == *c))
        .map(|c| c.to_string())
        .collect();

    let dest = location_url(&cfg.destination)?;
    let rows = match cfg.format {
        ExportFormat::Parquet => {
            let (store, prefix) = object_store_for(&dest, &cfg.storage_options)?;
            ctx.register_object_store(&dest, Arc::clone(&store));
            let run = uuid::Uuid::new_v4().to_string();
            let staging = location_url(&format!(
                "{}/{STAGING_DIR}/{run}/",
                dest.as_str().trim_end_matches('/')
            ))?;
            let opts = DataFrameWriteOptions::new().with_partition_by(partition_by);
            let out = df
                .write_parquet(staging.as_str(), opts, None)
                .await
                .map_err(|e| QueryError::from_datafusion(e, usize::MAX))?;
            publish(store.as_ref(), &prefix, &run).await?;
            // Local stores leave the run's empty directories behind.
            if let Ok(dir) = dest.to_file_path() {
                let _ = std::fs::remove_dir_all(dir.join(STAGING_DIR).join(&run));
            }
            count_rows(&out)
        }
        ExportFormat::Delta => {
            crate::storage::register_cloud_schemes();
            if dest.scheme() == "file" {
                std::fs::create_dir_all(dest.to_file_path().map_err(|()| {
                    QueryError::Location {
                        location: cfg.destination.clone(),
                        reason: "not a local path".into(),
                    }
                })?)?;
            }
            let target = DeltaTable::try_from_url_with_storage_options(
                dest.clone(),
                cfg.storage_options.clone(),
            )
            .await?;
            let before = total_rows(&target);
            // One commit for the whole export, so a failed run leaves nothing behind; the
            // batches held for it are reserved in the memory pool.
            let batches = collect_reserved(df, &ctx).await?;
            let written = target
                .write(batches)
                .with_save_mode(SaveMode::Append)
                .with_partition_columns(partition_by)
                .await?;
            total_rows(&written).saturating_sub(before)
        }
    };
    if let Some(p) = &progress {
        p(rows);
    }
    write_state(
        cfg,
        &ExportState {
            source: cfg.source.location.clone(),
            table_version: version,
        },
    )
    .await?;
    tracing::info!(rows, from_version = ?from_version, to_version = version, destination = %cfg.destination, "export done");
    Ok(ExportSummary {
        rows,
        from_version,
        to_version: version,
        files_read,
    })
}

/// Moves the files of a staged run into place, then removes the run's directory.
async fn publish(
    store: &dyn object_store::ObjectStore,
    prefix: &object_store::path::Path,
    run: &str,
) -> Result<()> {
    use futures::TryStreamExt;
    let staged = prefix.clone().join(STAGING_DIR).join(run);
    let files: Vec<object_store::ObjectMeta> = store.list(Some(&staged)).try_collect().await?;
    for meta in files {
        let Some(rel) = meta.location.prefix_match(&staged) else {
            continue;
        };
        let mut target = prefix.clone();
        for part in rel {
            target = target.join(part.as_ref());
        }
        store.rename(&meta.location, &target).await?;
    }
    Ok(())
}

/// The result's batches (as plain types), each reserved in the session's memory pool
/// before it is kept: an export larger than the pool fails with the memory limit.
async fn collect_reserved(
    df: datafusion::dataframe::DataFrame,
    ctx: &SessionContext,
) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
    use datafusion::execution::memory_pool::MemoryConsumer;
    use futures::StreamExt;
    let pool = &ctx.runtime_env().memory_pool;
    let limit = match pool.memory_limit() {
        MemoryLimit::Finite(n) => n,
        _ => usize::MAX,
    };
    let err = |e| QueryError::from_datafusion(e, limit);
    let reservation = MemoryConsumer::new("delta export").register(pool);
    let mut stream = df.execute_stream().await.map_err(err)?;
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = plain_types(batch.map_err(err)?)?;
        reservation
            .try_grow(batch.get_array_memory_size())
            .map_err(err)?;
        batches.push(batch);
    }
    Ok(batches)
}

fn count_rows(out: &[datafusion::arrow::array::RecordBatch]) -> u64 {
    use datafusion::arrow::array::{Array, UInt64Array};
    out.iter()
        .filter_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<UInt64Array>()
                .map(|a| (0..a.len()).map(|i| a.value(i)).sum::<u64>())
        })
        .sum()
}

/// Rows in the table's current snapshot (0 for a table not created yet).
fn total_rows(table: &DeltaTable) -> u64 {
    table
        .snapshot()
        .ok()
        .and_then(|s| {
            s.log_data()
                .into_iter()
                .map(|a| a.num_records().unwrap_or(0) as u64)
                .reduce(|a, b| a + b)
        })
        .unwrap_or(0)
}

/// Casts view and dictionary string columns to plain `Utf8` (Delta's `string`).
fn plain_types(
    batch: datafusion::arrow::array::RecordBatch,
) -> Result<datafusion::arrow::array::RecordBatch> {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        let plain = match f.data_type() {
            DataType::Utf8View | DataType::LargeUtf8 => Some(DataType::Utf8),
            DataType::Dictionary(_, v) if matches!(**v, DataType::Utf8 | DataType::Utf8View) => {
                Some(DataType::Utf8)
            }
            _ => None,
        };
        match plain {
            Some(t) => {
                columns.push(datafusion::arrow::compute::cast(c, &t)?);
                fields.push(Field::new(f.name(), t, f.is_nullable()));
            }
            None => {
                columns.push(Arc::clone(c));
                fields.push(f.as_ref().clone());
            }
        }
    }
    Ok(datafusion::arrow::array::RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}
