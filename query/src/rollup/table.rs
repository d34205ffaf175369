//! `flowlake_rollup('drops', 'date=2026-01-01/hour=05', '9f3c…', …)`: the rollup rows of
//! one question from exactly the files named (partition and fingerprint pairs), so a
//! planned question reads what its coverage decided, whatever is built meanwhile.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl};
use datafusion::common::{ScalarValue, plan_datafusion_err, plan_err};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use super::store::RollupStore;
use super::{Fingerprint, RollupPath};
use object_store::ObjectStoreExt;

use crate::native_scan::{empty_scan, parquet_scan};
use crate::questions::{Question, quote};

/// Name of the table function.
pub const ROLLUP_FUNCTION: &str = "flowlake_rollup";

/// The call that reads `files` (all of `question`).
pub fn rollup_call(question: Question, files: &[RollupPath]) -> String {
    let mut args = vec![quote(question.name())];
    for f in files {
        args.push(quote(&f.partition.to_string()));
        args.push(quote(&f.fingerprint.to_string()));
    }
    format!("{ROLLUP_FUNCTION}({})", args.join(", "))
}

/// The table function, over one table's rollup files.
#[derive(Debug)]
pub struct RollupFunction {
    pub store: Arc<RollupStore>,
}

fn text(e: &Expr) -> DfResult<&str> {
    match e {
        Expr::Literal(ScalarValue::Utf8(Some(s)), _) => Ok(s),
        other => plan_err!("{ROLLUP_FUNCTION}: arguments must be string literals, got {other}"),
    }
}

impl TableFunctionImpl for RollupFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let Some((first, pairs)) = exprs.split_first() else {
            return plan_err!("{ROLLUP_FUNCTION}(question, partition, fingerprint, …)");
        };
        let question = Question::parse(text(first)?)
            .ok_or_else(|| plan_datafusion_err!("{ROLLUP_FUNCTION}: unknown question"))?;
        if pairs.len() % 2 != 0 {
            return plan_err!("{ROLLUP_FUNCTION}: partitions and fingerprints come in pairs");
        }
        let files = pairs
            .chunks(2)
            .map(|pair| {
                Ok(RollupPath {
                    question,
                    partition: text(&pair[0])?
                        .parse()
                        .map_err(|e| plan_datafusion_err!("{ROLLUP_FUNCTION}: {e}"))?,
                    fingerprint: text(&pair[1])?
                        .parse::<Fingerprint>()
                        .map_err(|e| plan_datafusion_err!("{ROLLUP_FUNCTION}: fingerprint: {e}"))?,
                })
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(Arc::new(RollupFiles {
            store: Arc::clone(&self.store),
            schema: self.store.schema(question),
            files,
        }))
    }
}

/// Some rollup files of one question.
#[derive(Debug)]
struct RollupFiles {
    store: Arc<RollupStore>,
    schema: SchemaRef,
    files: Vec<RollupPath>,
}

#[async_trait]
impl TableProvider for RollupFiles {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        session: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if self.files.is_empty() {
            return empty_scan(&self.schema, projection);
        }
        let mut files = Vec::with_capacity(self.files.len());
        for path in &self.files {
            let meta = match self.store.meta(path) {
                Some(meta) => meta,
                // Not listed here yet (another replica built it): ask the store.
                None => self.store.object_store().head(&path.object_path()).await?,
            };
            files.push(PartitionedFile::from(meta));
        }
        let table_schema = TableSchema::builder(Arc::clone(&self.schema)).build();
        parquet_scan(
            session,
            self.store.log_store(),
            table_schema,
            files,
            projection,
            limit,
        )
        .await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Used for row-group pruning; DataFusion keeps a `FilterExec` for the rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }
}
