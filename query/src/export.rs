//! Export to data lakes: a SQL query or a time range of `flows`, written as
//! Hive-partitioned Parquet or as a Delta table at any object_store URL.
//!
//! Incremental mode reads the Delta version recorded by the previous export at the
//! destination (`_flowlake_export.json`) and exports only the rows the commits after
//! it added: their `add` actions with `dataChange = true` ([`changes`]), so the
//! files compaction rewrites (`dataChange = false`) are not exported again and rows
//! retention removed after they were added are still exported once. The state is
//! written only after the data, so a failed run is simply retried.

mod changes;
mod job;
mod policy;
mod record;
mod state;

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::execution::memory_pool::MemoryLimit;
use datafusion::prelude::{SessionConfig, SessionContext};
use deltalake_core::DeltaTable;
use deltalake_core::kernel::Transaction;
use deltalake_core::kernel::transaction::CommitProperties;
use deltalake_core::protocol::SaveMode;
use serde::{Deserialize, Serialize};

use crate::access::Access;
use crate::error::{QueryError, Result};
use crate::location::{TableArgs, TableLocation, parse_key_value};
use crate::questions::{TimeRange, VIEWS, parse_time};
use crate::storage::{location_url, object_store_for, open_table};

pub use job::{Clock, ExportJobs};
pub use policy::ExportPolicy;
pub use record::{ExportJob, JobState, STALE_HEARTBEATS};
pub use state::{ExportState, PendingRun};

use state::Destination;

/// Name of the state object written next to the exported data.
pub const STATE_FILE: &str = "_flowlake_export.json";
/// Parquet files are written below this directory of the destination, then moved into
/// place: an interrupted export leaves its partial files only there, where readers of
/// the destination (which skip `_`-prefixed directories) do not look.
pub const STAGING_DIR: &str = "_flowlake_staging";
/// Directory of the export jobs' status records below the first export root
/// ([`record`]); no export may write there.
pub const JOBS_DIR: &str = "_flowlake_jobs";
/// App id of the `txn` a Delta export commits with (version: the source version it
/// exports up to), so a run whose state was not written is not exported again.
pub const EXPORT_APP_ID: &str = "flowlake-export";

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
    #[arg(long = "destination-option", value_parser = parse_key_value, env = "FLOWLAKE_EXPORT_DESTINATION_OPTIONS", value_delimiter = ',')]
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
    /// The namespaces whose rows are exported (set from the caller's token, never
    /// from the request): `flows` is read as a query of that token reads it.
    #[serde(skip)]
    pub access: Access,
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
            access: Access::all(),
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
    /// Data files written to the destination.
    pub files_written: u64,
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

/// Runs one export to completion.
pub async fn run_export(cfg: &ExportConfig, progress: Option<Progress>) -> Result<ExportSummary> {
    let range = time_range(cfg)?;
    let table = open_table(&cfg.source.location, &cfg.source.storage_options).await?;
    let version = table.version().unwrap_or(0);
    let dest = location_url(&cfg.destination)?;
    let (dest_store, dest_prefix) = object_store_for(&dest, &cfg.storage_options)?;
    let destination = Destination {
        store: dest_store.as_ref(),
        prefix: &dest_prefix,
        local_dir: dest.to_file_path().ok(),
    };
    // An interrupted run is finished (or its staged files deleted) first.
    let previous = destination.recover(destination.read().await?).await?;
    let delta_done = match cfg.format {
        ExportFormat::Delta if cfg.incremental => {
            delta_exported_version(&dest, &destination, cfg).await?
        }
        _ => None,
    };
    let from_version = if cfg.incremental {
        previous.as_ref().map(|s| s.table_version).max(delta_done)
    } else {
        None
    };
    let state = |table_version, pending| ExportState {
        source: cfg.source.location.clone(),
        table_version,
        pending,
    };
    if let Some(v) = from_version.filter(|v| *v > version) {
        return Err(QueryError::Config(format!(
            "destination was exported up to version {v} but the table is at {version}"
        )));
    }

    // What to read: every active file, or the files added (dataChange = true)
    // by the commits since the last export, each group at a version where its
    // files are still active (`changes`).
    let (groups, files_read) = match from_version {
        Some(v) => {
            let groups = changes::added_since(&table, v, version).await?;
            let n = groups.iter().map(|g| g.paths.len()).sum();
            (Some(groups), n)
        }
        None => (None, table.snapshot()?.log_data().into_iter().count()),
    };
    if groups.as_ref().is_some_and(|g| g.is_empty()) {
        destination.write(&state(version, None)).await?;
        return Ok(ExportSummary {
            rows: 0,
            from_version,
            to_version: version,
            files_read,
            files_written: 0,
        });
    }
    let mut providers: Vec<Arc<dyn datafusion::datasource::TableProvider>> = Vec::new();
    match &groups {
        None => providers.push(Arc::new(
            table
                .table_provider()
                .build()
                .await
                .map_err(QueryError::Execution)?,
        )),
        Some(groups) => {
            for g in groups {
                let mut at = table.clone();
                if g.version != version {
                    at.load_version(g.version).await?;
                }
                providers.push(Arc::new(
                    at.table_provider()
                        .with_file_paths(g.paths.clone())
                        .build()
                        .await
                        .map_err(QueryError::Execution)?,
                ));
            }
        }
    }

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
    // Each source scan reads only the rows the caller may read (as its queries do).
    let mut providers = providers
        .into_iter()
        .map(|p| crate::session::scoped_flows(p, &cfg.access))
        .collect::<Result<Vec<_>>>()?;
    if providers.len() == 1 {
        let provider = providers.pop().expect("one provider");
        ctx.register_table(crate::engine::FLOWS, provider)
            .map_err(QueryError::Execution)?;
    } else {
        let mut union = Vec::new();
        for (i, provider) in providers.into_iter().enumerate() {
            let name = format!("{}_added_{i}", crate::engine::FLOWS);
            ctx.register_table(name.as_str(), provider)
                .map_err(QueryError::Execution)?;
            union.push(format!("SELECT * FROM {name}"));
        }
        ctx.sql(&format!(
            "CREATE VIEW {} AS {}",
            crate::engine::FLOWS,
            union.join(" UNION ALL ")
        ))
        .await
        .map_err(QueryError::Execution)?;
    }
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

    let (rows, files_written) = match cfg.format {
        ExportFormat::Parquet => {
            ctx.register_object_store(&dest, Arc::clone(&dest_store));
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
            let pending = PendingRun {
                run: run.clone(),
                table_version: version,
            };
            let before = from_version.unwrap_or(0);
            destination.write(&state(before, Some(pending))).await?;
            let files = destination.publish(&run).await?;
            // Local stores leave the run's empty directories behind.
            if let Ok(dir) = dest.to_file_path() {
                let _ = std::fs::remove_dir_all(dir.join(STAGING_DIR).join(&run));
            }
            (count_rows(&out), files)
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
            let before = (total_rows(&target), active_files(&target));
            // One commit for the whole export, so a failed run leaves nothing behind; the
            // batches held for it are reserved in the memory pool.
            let batches = collect_reserved(df, &ctx).await?;
            let txn = Transaction::new(EXPORT_APP_ID, version as i64);
            let written = target
                .write(batches)
                .with_save_mode(SaveMode::Append)
                .with_partition_columns(partition_by)
                .with_commit_properties(
                    CommitProperties::default().with_application_transaction(txn),
                )
                .await?;
            (
                total_rows(&written).saturating_sub(before.0),
                active_files(&written).saturating_sub(before.1),
            )
        }
    };
    if let Some(p) = &progress {
        p(rows);
    }
    destination.write(&state(version, None)).await?;
    tracing::info!(rows, from_version = ?from_version, to_version = version, destination = %cfg.destination, "export done");
    Ok(ExportSummary {
        rows,
        from_version,
        to_version: version,
        files_read,
        files_written,
    })
}

/// The source version a Delta destination holds rows up to, by its export `txn`.
async fn delta_exported_version(
    dest: &url::Url,
    destination: &Destination<'_>,
    cfg: &ExportConfig,
) -> Result<Option<u64>> {
    if !destination.has_delta_log().await? {
        return Ok(None);
    }
    crate::storage::register_cloud_schemes();
    let table = match deltalake_core::DeltaTableBuilder::from_url(dest.clone())?
        .with_storage_options(cfg.storage_options.clone())
        .load()
        .await
    {
        Ok(t) => t,
        Err(deltalake_core::DeltaTableError::NotATable(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let v = table
        .snapshot()?
        .transaction_version(table.log_store().as_ref(), EXPORT_APP_ID)
        .await?;
    Ok(v.and_then(|v| u64::try_from(v).ok()))
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

/// Data files in the table's current snapshot (0 for a table not created yet).
fn active_files(table: &DeltaTable) -> u64 {
    table
        .snapshot()
        .map_or(0, |s| s.log_data().into_iter().count() as u64)
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
