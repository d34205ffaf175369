//! The `flows` table: a Delta snapshot as a DataFusion `TableProvider`, reloaded when
//! older than the configured age, with `interval_start` ranges turned into `date`/`hour`
//! partition predicates so only the partitions of the range are listed and read.
//!
//! The table may not be there yet (a fresh install: no ingester has committed) or its
//! store may not answer at start: the service then starts anyway, answers every query
//! over an empty `flows` of the same schema, reports why in [`FlowsTable::status`]
//! (`/readyz`) and the log, and picks the table up at the first refresh that finds it.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::physical_plan::{FileScanConfig, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use deltalake_core::DeltaTable;
use tokio::sync::Mutex;

use crate::error::{QueryError, Result};
use crate::location::TableLocation;
use crate::native_scan::NativeScan;
use crate::pruning::partition_filters;
use crate::rollup::Fingerprints;
use crate::storage::build_table;
use crate::time_bounds::{filter_by_time, time_bound, time_bounds, with_interval_start};

/// How long opening the table at start, or a look for a table not there yet, may
/// take before the service goes on without it (a store that does not answer).
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a table not there yet is looked for again (at most).
pub const ABSENT_RETRY: Duration = Duration::from_secs(1);

/// The Delta table (not loaded while it is not there yet) and when it was last
/// brought up to date (or looked for).
struct Loaded {
    table: DeltaTable,
    refreshed: Instant,
}

/// Whether `flows` serves the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableStatus {
    /// The table is loaded, at this version.
    Ready { version: u64 },
    /// Not loaded yet, for this reason: queries answer over an empty table.
    Waiting { reason: String },
}

/// `flows`: the Delta table behind a refreshable snapshot.
pub struct FlowsTable {
    location: TableLocation,
    max_age: Duration,
    loaded: Mutex<Loaded>,
    current: RwLock<Snapshot>,
    /// Why the table is not loaded (none once it is).
    waiting: RwLock<Option<String>>,
    /// Names read as dictionaries.
    dictionaries: bool,
}

/// One immutable snapshot: its provider and Delta version, and the direct Parquet
/// scan when the table allows it (see [`NativeScan`]).
#[derive(Clone)]
pub struct Snapshot {
    pub provider: Arc<dyn TableProvider>,
    pub version: u64,
    native: Option<NativeScan>,
    /// Each hour partition's file fingerprint, when the table is read natively (the
    /// rollups need both).
    pub fingerprints: Option<Arc<Fingerprints>>,
}

impl std::fmt::Debug for FlowsTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowsTable")
            .field("location", &self.location.location)
            .field("version", &self.version())
            .finish()
    }
}

async fn snapshot_of(table: &DeltaTable, dictionaries: bool) -> Result<Snapshot> {
    let provider = table
        .table_provider()
        .await
        .map_err(crate::error::QueryError::Execution)?;
    let native = NativeScan::try_new(table, &provider.schema(), dictionaries);
    let fingerprints = native.as_ref().map(|n| Arc::new(n.fingerprints()));
    Ok(Snapshot {
        provider,
        version: table.version().unwrap_or(0),
        native,
        fingerprints,
    })
}

/// The snapshot of a table not there yet: no rows, the schema the table will have
/// (the flow schema as deltalake reads it back from the Delta schema).
fn empty_snapshot(dictionaries: bool) -> Result<Snapshot> {
    use deltalake_core::kernel::StructType;
    use deltalake_core::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
    let internal = |e: &dyn std::fmt::Display| QueryError::Config(format!("flow schema: {e}"));
    let kernel: StructType = flowlake_schemas::flow_schema()
        .as_ref()
        .try_into_kernel()
        .map_err(|e| internal(&e))?;
    let schema: datafusion::arrow::datatypes::Schema =
        (&kernel).try_into_arrow().map_err(|e| internal(&e))?;
    // deltalake's provider reads strings as views.
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| {
            let t = if flowlake_schemas::PARTITION_COLUMNS.contains(&f.name().as_str()) {
                // Partition values, dictionary-encoded by deltalake's scan.
                datafusion::arrow::datatypes::DataType::Dictionary(
                    Box::new(datafusion::arrow::datatypes::DataType::UInt16),
                    Box::new(f.data_type().clone()),
                )
            } else {
                as_views(f.data_type())
            };
            f.as_ref().clone().with_data_type(t)
        })
        .collect();
    // As the native scan reads the table once it has files.
    let schema = datafusion::arrow::datatypes::Schema::new(fields);
    let schema = if dictionaries {
        crate::dictionaries::with_dictionaries(&schema)
    } else {
        schema
    };
    Ok(Snapshot {
        provider: Arc::new(datafusion::datasource::empty::EmptyTable::new(Arc::new(
            schema,
        ))),
        version: 0,
        native: None,
        fingerprints: None,
    })
}

/// `t` with its strings and binaries as views, also inside lists and structs (map
/// keys and values stay plain, as deltalake reads them).
fn as_views(t: &datafusion::arrow::datatypes::DataType) -> datafusion::arrow::datatypes::DataType {
    use datafusion::arrow::datatypes::{DataType, Field};
    let field = |f: &Field| Arc::new(f.clone().with_data_type(as_views(f.data_type())));
    match t {
        DataType::Utf8 | DataType::LargeUtf8 => DataType::Utf8View,
        DataType::Binary | DataType::LargeBinary => DataType::BinaryView,
        DataType::List(f) => DataType::List(field(f)),
        DataType::LargeList(f) => DataType::LargeList(field(f)),
        DataType::Struct(fs) => DataType::Struct(fs.iter().map(|f| field(f)).collect()),
        other => other.clone(),
    }
}

/// Why a load failed, for `/readyz` and the log.
fn waiting_reason(location: &str, error: &deltalake_core::DeltaTableError) -> String {
    match error {
        deltalake_core::DeltaTableError::NotATable(_) => format!(
            "the table {location} does not exist yet (no commit in its log): waiting for the first ingester commit"
        ),
        e => format!("the table {location} could not be read: {e}"),
    }
}

impl FlowsTable {
    /// Opens the table at its newest version. A table not there yet, or a store
    /// that fails or does not answer within [`LOAD_TIMEOUT`], is not an error: the
    /// service starts over an empty table and keeps looking ([`Self::status`]).
    /// A location that cannot name a table at all is.
    /// `dictionaries`: read names as dictionaries ([`crate::dictionaries`]).
    pub async fn open(
        location: TableLocation,
        max_age: Duration,
        dictionaries: bool,
    ) -> Result<Self> {
        let table = build_table(&location.location, &location.storage_options)?;
        let flows = FlowsTable {
            location,
            max_age,
            loaded: Mutex::new(Loaded {
                table,
                refreshed: Instant::now(),
            }),
            current: RwLock::new(empty_snapshot(dictionaries)?),
            dictionaries,
            waiting: RwLock::new(Some("the table was not looked for yet".into())),
        };
        let mut loaded = flows.loaded.lock().await;
        flows.load(&mut loaded).await?;
        drop(loaded);
        Ok(flows)
    }

    /// Whether the table is loaded, and why not.
    pub fn status(&self) -> TableStatus {
        match self.waiting.read().expect("status lock").clone() {
            Some(reason) => TableStatus::Waiting { reason },
            None => TableStatus::Ready {
                version: self.version(),
            },
        }
    }

    /// Looks for the table not loaded yet (at most [`LOAD_TIMEOUT`]); on success its
    /// snapshot replaces the empty one.
    async fn load(&self, loaded: &mut Loaded) -> Result<()> {
        let location = &self.location.location;
        let outcome =
            tokio::time::timeout(LOAD_TIMEOUT, loaded.table.update_incremental(None)).await;
        loaded.refreshed = Instant::now();
        let reason = match outcome {
            Ok(Ok(())) => {
                let snapshot = snapshot_of(&loaded.table, self.dictionaries).await?;
                tracing::info!(table = %location, version = snapshot.version, "flows table loaded");
                *self.current.write().expect("snapshot lock") = snapshot;
                *self.waiting.write().expect("status lock") = None;
                return Ok(());
            }
            Ok(Err(e)) => waiting_reason(location, &e),
            Err(_) => format!(
                "the table {location} could not be read: its store did not answer within {LOAD_TIMEOUT:?}"
            ),
        };
        let mut waiting = self.waiting.write().expect("status lock");
        if waiting.as_deref() != Some(reason.as_str()) {
            tracing::warn!(table = %location, reason = %reason, "serving an empty flows table until the table can be read");
        }
        *waiting = Some(reason);
        Ok(())
    }

    /// The Delta table (for object-store registration and exports).
    pub async fn delta_table(&self) -> DeltaTable {
        self.loaded.lock().await.table.clone()
    }

    pub fn location(&self) -> &TableLocation {
        &self.location
    }

    /// Delta version of the current snapshot.
    pub fn version(&self) -> u64 {
        self.snapshot().version
    }

    pub fn snapshot(&self) -> Snapshot {
        self.current.read().expect("snapshot lock").clone()
    }

    /// Brings the snapshot up to date if it is older than the configured age.
    /// Returns the version queries will see.
    pub async fn refresh_if_stale(&self) -> Result<u64> {
        if self.waiting.read().expect("status lock").is_some() {
            // Not there yet: look again at most every ABSENT_RETRY, and never make
            // a query wait for another caller's look.
            if let Ok(mut loaded) = self.loaded.try_lock()
                && self.waiting.read().expect("status lock").is_some()
                && loaded.refreshed.elapsed() >= ABSENT_RETRY.min(self.max_age)
            {
                self.load(&mut loaded).await?;
            }
            return Ok(self.version());
        }
        let mut loaded = self.loaded.lock().await;
        if loaded.refreshed.elapsed() < self.max_age && !self.max_age.is_zero() {
            return Ok(self.version());
        }
        let before = loaded.table.version();
        loaded.table.update_incremental(None).await?;
        loaded.refreshed = Instant::now();
        if loaded.table.version() != before {
            let snapshot = snapshot_of(&loaded.table, self.dictionaries).await?;
            tracing::debug!(version = snapshot.version, "flows snapshot refreshed");
            *self.current.write().expect("snapshot lock") = snapshot;
        }
        Ok(self.version())
    }
}

/// For tables [`NativeScan`] cannot read. The Delta scan always turns its predicate into
/// a Parquet row filter (decode the predicate columns, build a row selection, then decode
/// the rest through it). On the
/// flow table the predicates keep rows scattered through every page, so that selection
/// costs more than it saves (`RowSelection` work was a third of the profile). This sets
/// the Parquet sources under `plan` to the session's `pushdown_filters` instead
/// (DataFusion's default: off). The predicate stays on the source for file, row-group,
/// page-index and bloom-filter pruning; the Delta scan reports its filters as inexact,
/// so DataFusion keeps a `FilterExec` above the scan and the answer is unchanged.
fn with_row_filter_pushdown(
    plan: Arc<dyn ExecutionPlan>,
    enabled: bool,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    if let Some(exec) = plan.downcast_ref::<DataSourceExec>() {
        let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>() else {
            return Ok(plan);
        };
        let Some(parquet) = config.file_source().downcast_ref::<ParquetSource>() else {
            return Ok(plan);
        };
        if parquet.table_parquet_options().global.pushdown_filters == enabled {
            return Ok(plan);
        }
        let source = parquet.clone().with_pushdown_filters(enabled);
        let config = FileScanConfigBuilder::from(config.clone())
            .with_source(Arc::new(source))
            .build();
        return Ok(DataSourceExec::from_data_source(config));
    }
    let children = plan
        .children()
        .into_iter()
        .map(|c| with_row_filter_pushdown(Arc::clone(c), enabled))
        .collect::<DfResult<Vec<_>>>()?;
    if children.is_empty() {
        return Ok(plan);
    }
    // Same partitioning and ordering: only the filtering inside the source changed.
    plan.replace_children(
        children,
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
    )
}

#[async_trait]
impl TableProvider for FlowsTable {
    fn schema(&self) -> SchemaRef {
        let snapshot = self.snapshot();
        match &snapshot.native {
            Some(native) => native.schema(),
            None => snapshot.provider.schema(),
        }
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let snapshot = self.snapshot();
        let mut all = filters.to_vec();
        let extra = partition_filters(filters);
        if !extra.is_empty() {
            tracing::debug!(
                predicates = extra.len(),
                "partition pruning from interval_start"
            );
        }
        all.extend(extra);
        if let Some(native) = &snapshot.native {
            return native.scan(state, projection, &all, limit).await;
        }
        let row_filters = state.config().options().execution.parquet.pushdown_filters;
        // Time bounds may have been reported exact (by a native snapshot): applied here.
        let bounds = time_bounds(filters);
        if bounds.is_empty() {
            let plan = snapshot
                .provider
                .scan(state, projection, &all, limit)
                .await?;
            return with_row_filter_pushdown(plan, row_filters);
        }
        let (columns, wanted) = with_interval_start(&snapshot.provider.schema(), projection)?;
        let plan = snapshot
            .provider
            .scan(state, Some(&columns), &all, None)
            .await?;
        let plan = with_row_filter_pushdown(plan, row_filters)?;
        filter_by_time(state, plan, &bounds, wanted, limit)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let snapshot = self.snapshot();
        if snapshot.native.is_some() {
            // Time bounds the native scan applies itself, exactly (`crate::time_bounds`).
            // Other filters skip files, not rows: DataFusion keeps a `FilterExec` and
            // pushes them into the Parquet source for pruning.
            return Ok(filters
                .iter()
                .map(|f| match time_bound(f) {
                    Some(_) => TableProviderFilterPushDown::Exact,
                    None => TableProviderFilterPushDown::Inexact,
                })
                .collect());
        }
        snapshot.provider.supports_filters_pushdown(filters)
    }
}
