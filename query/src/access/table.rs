//! A table that only ever returns the rows of some namespaces, whatever is asked of it.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::DFSchema;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::expressions::Column;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;

use super::Access;
use super::exec::ScopeBarrierExec;

/// `inner` with a `FilterExec` on the namespace predicate right above every scan, so
/// nothing above it (joins, aggregates, statistics, `EXPLAIN ANALYZE`) sees other rows.
#[derive(Debug)]
pub struct NamespaceFiltered {
    inner: Arc<dyn TableProvider>,
    predicate: Expr,
    /// Indices of the predicate's columns in `inner`'s schema.
    columns: Vec<usize>,
}

impl NamespaceFiltered {
    /// `inner` itself when `access` reads every namespace; else `inner` restricted to the
    /// rows where one of `columns` is a namespace of `access`.
    pub fn wrap(
        inner: Arc<dyn TableProvider>,
        access: &Access,
        columns: &[&str],
    ) -> DfResult<Arc<dyn TableProvider>> {
        let Some(predicate) = access.predicate(columns) else {
            return Ok(inner);
        };
        let schema = inner.schema();
        let columns = columns
            .iter()
            .map(|c| schema.index_of(c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(NamespaceFiltered {
            inner,
            predicate,
            columns,
        }))
    }
}

#[async_trait]
impl TableProvider for NamespaceFiltered {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = self.inner.schema();
        let wanted: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..schema.fields().len()).collect());
        let mut read = wanted.clone();
        for c in &self.columns {
            if !read.contains(c) {
                read.push(*c);
            }
        }
        let mut all = filters.to_vec();
        all.push(self.predicate.clone());
        // No limit below the filter: the first rows read may all be of other namespaces.
        let plan = self.inner.scan(state, Some(&read), &all, None).await?;
        let df_schema = DFSchema::try_from(plan.schema())?;
        let predicate = state.create_physical_expr(self.predicate.clone(), &df_schema)?;
        let filtered: Arc<dyn ExecutionPlan> = Arc::new(FilterExec::try_new(predicate, plan)?);
        if read.len() == wanted.len() {
            return Ok(Arc::new(ScopeBarrierExec::new(filtered)));
        }
        let out = filtered.schema();
        let exprs = (0..wanted.len()).map(|i| {
            let name = out.field(i).name().clone();
            (
                Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>,
                name,
            )
        });
        let projected = Arc::new(ProjectionExec::try_new(exprs, filtered)?);
        Ok(Arc::new(ScopeBarrierExec::new(projected)))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // As `inner` answers them: this table passes every filter on to its scan.
        self.inner.supports_filters_pushdown(filters)
    }
}
