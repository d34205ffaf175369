//! The `losses` table: the Delta table under `_losses/` of the flow table's root
//! (`flowlake_schemas::losses`), read fresh (at most [`LossesTable::max_age`] old)
//! at each scan. Before any loss is recorded it is an empty table of the loss
//! schema, so a query over it always plans.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use deltalake_core::kernel::StructType;
use deltalake_core::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake_core::{DeltaTable, DeltaTableBuilder};
use flowlake_schemas::losses::LOSSES_DIR;
use tokio::sync::Mutex;

use crate::error::{QueryError, Result};
use crate::location::TableLocation;
use crate::storage::location_url;

/// Name the table is registered under.
pub const LOSSES: &str = flowlake_schemas::LOSSES_TABLE;

/// The Delta table once found, when it was last looked at, and what scans read.
type Looked = (Option<DeltaTable>, Option<Instant>, Arc<dyn TableProvider>);

/// `losses`, beside the flow table at a location.
pub struct LossesTable {
    schema: SchemaRef,
    max_age: Duration,
    url: url::Url,
    options: std::collections::HashMap<String, String>,
    state: Mutex<Looked>,
}

impl std::fmt::Debug for LossesTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LossesTable").finish_non_exhaustive()
    }
}

/// The loss schema as deltalake reads it back from the Delta schema.
fn delta_schema() -> Result<SchemaRef> {
    let internal = |e: &dyn std::fmt::Display| QueryError::Config(format!("loss schema: {e}"));
    let kernel: StructType = flowlake_schemas::loss_schema()
        .as_ref()
        .try_into_kernel()
        .map_err(|e| internal(&e))?;
    let schema: Schema = (&kernel).try_into_arrow().map_err(|e| internal(&e))?;
    // Strings as the Delta provider scans them.
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            datafusion::arrow::datatypes::DataType::Utf8 => Arc::new(
                f.as_ref()
                    .clone()
                    .with_data_type(datafusion::arrow::datatypes::DataType::Utf8View),
            ),
            _ => Arc::clone(f),
        })
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

impl LossesTable {
    /// The table beside `flows` (it need not exist yet); reloaded when older than
    /// `max_age`.
    pub fn new(flows: &TableLocation, max_age: Duration) -> Result<Self> {
        let mut url = location_url(&flows.location)?;
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let url = url
            .join(&format!("{LOSSES_DIR}/"))
            .map_err(|e| QueryError::Config(format!("losses table location: {e}")))?;
        let schema = delta_schema()?;
        let empty: Arc<dyn TableProvider> = Arc::new(EmptyTable::new(Arc::clone(&schema)));
        Ok(LossesTable {
            schema,
            max_age,
            url,
            options: flows.storage_options.clone(),
            state: Mutex::new((None, None, empty)),
        })
    }

    /// How old a loaded snapshot may be before a scan reloads it.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// The current provider: the table's newest snapshot when it is due for a
    /// look, the empty table while it does not exist.
    async fn provider(&self) -> Arc<dyn TableProvider> {
        let mut state = self.state.lock().await;
        let (table, looked, provider) = &mut *state;
        if looked.is_some_and(|t| t.elapsed() < self.max_age) {
            return Arc::clone(provider);
        }
        *looked = Some(Instant::now());
        let looked_up = match table {
            Some(t) => t.update_incremental(None).await.map(|()| t.clone()),
            None => match DeltaTableBuilder::from_url(self.url.clone()) {
                Ok(b) => b.with_storage_options(self.options.clone()).load().await,
                Err(e) => Err(e),
            },
        };
        match looked_up {
            Ok(t) => {
                match t.table_provider().await {
                    Ok(p) => *provider = p,
                    Err(e) => tracing::warn!(error = %e, "losses table: no provider"),
                }
                *table = Some(t);
            }
            // Not there yet (no loss recorded): the empty table.
            Err(deltalake_core::DeltaTableError::NotATable(_))
            | Err(deltalake_core::DeltaTableError::InvalidTableLocation(_)) => {}
            Err(e) => tracing::warn!(error = %e, "losses table could not be read"),
        }
        Arc::clone(provider)
    }
}

#[async_trait]
impl TableProvider for LossesTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
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
        let provider = self.provider().await;
        if provider.schema().fields().len() != self.schema.fields().len() {
            return Err(DataFusionError::Plan(
                "the losses table's schema is not the loss schema".into(),
            ));
        }
        provider.scan(state, projection, filters, limit).await
    }
}
