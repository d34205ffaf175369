//! The `flows` table: a Delta snapshot as a DataFusion `TableProvider`, reloaded when
//! older than the configured age, with `interval_start` ranges turned into `date`/`hour`
//! partition predicates so only the partitions of the range are listed and read.

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

use crate::error::Result;
use crate::location::TableLocation;
use crate::native_scan::NativeScan;
use crate::pruning::partition_filters;
use crate::rollup::Fingerprints;
use crate::storage::open_table;

/// The loaded Delta table and when it was last brought up to date.
struct Loaded {
    table: DeltaTable,
    refreshed: Instant,
}

/// `flows`: the Delta table behind a refreshable snapshot.
pub struct FlowsTable {
    location: TableLocation,
    max_age: Duration,
    loaded: Mutex<Loaded>,
    current: RwLock<Snapshot>,
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

async fn snapshot_of(table: &DeltaTable) -> Result<Snapshot> {
    let provider = table
        .table_provider()
        .await
        .map_err(crate::error::QueryError::Execution)?;
    let native = NativeScan::try_new(table, &provider.schema());
    let fingerprints = native.as_ref().map(|n| Arc::new(n.fingerprints()));
    Ok(Snapshot {
        provider,
        version: table.version().unwrap_or(0),
        native,
        fingerprints,
    })
}

impl FlowsTable {
    /// Opens the table at its newest version.
    pub async fn open(location: TableLocation, max_age: Duration) -> Result<Self> {
        let table = open_table(&location.location, &location.storage_options).await?;
        let snapshot = snapshot_of(&table).await?;
        Ok(FlowsTable {
            location,
            max_age,
            loaded: Mutex::new(Loaded {
                table,
                refreshed: Instant::now(),
            }),
            current: RwLock::new(snapshot),
        })
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
        let mut loaded = self.loaded.lock().await;
        if loaded.refreshed.elapsed() < self.max_age && !self.max_age.is_zero() {
            return Ok(self.version());
        }
        let before = loaded.table.version();
        loaded.table.update_incremental(None).await?;
        loaded.refreshed = Instant::now();
        if loaded.table.version() != before {
            let snapshot = snapshot_of(&loaded.table).await?;
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
        self.snapshot().provider.schema()
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
        let plan = snapshot
            .provider
            .scan(state, projection, &all, limit)
            .await?;
        let row_filters = state.config().options().execution.parquet.pushdown_filters;
        with_row_filter_pushdown(plan, row_filters)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let snapshot = self.snapshot();
        if snapshot.native.is_some() {
            // Files are skipped by these filters, rows are not: DataFusion keeps a
            // `FilterExec` and pushes the predicate into the Parquet source for pruning.
            return Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()]);
        }
        snapshot.provider.supports_filters_pushdown(filters)
    }
}
