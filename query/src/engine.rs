//! The query engine: one DataFusion `SessionContext` with `flows` and the per-pod
//! views registered, a shared memory pool, and per-query time and row limits.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::dataframe::DataFrame;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::stream::{BoxStream, StreamExt};

use crate::config::{QueryConfig, QueryLimits};
use crate::error::{QueryError, Result};
use crate::metrics::QueryMetrics;
use crate::questions::{self, Question, QuestionRequest};
use crate::rollup::table::{ROLLUP_FUNCTION, RollupFunction};
use crate::rollup::{Coverage, RollupSpec, RollupStore, sketch};
use crate::sandbox;
use crate::table::FlowsTable;

/// Name the Delta table is registered under.
pub const FLOWS: &str = "flows";

/// A running query: its schema, the batches already fetched (so errors at the start
/// become a proper HTTP status) and the rest of the stream.
pub struct QueryResult {
    pub schema: SchemaRef,
    pub head: Vec<RecordBatch>,
    pub rest: BoxStream<'static, Result<RecordBatch>>,
}

impl QueryResult {
    /// All batches, collected (for small internal results).
    pub async fn collect(self) -> Result<Vec<RecordBatch>> {
        let mut out = self.head;
        let mut rest = self.rest;
        while let Some(b) = rest.next().await {
            out.push(b?);
        }
        Ok(out)
    }

    /// Head and rest as one stream.
    pub fn into_stream(self) -> BoxStream<'static, Result<RecordBatch>> {
        futures::stream::iter(self.head.into_iter().map(Ok))
            .chain(self.rest)
            .boxed()
    }
}

/// DataFusion over the `flows` table.
pub struct QueryEngine {
    ctx: SessionContext,
    table: Arc<FlowsTable>,
    limits: QueryLimits,
    metrics: QueryMetrics,
    rollups: Option<Arc<RollupStore>>,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("table", &self.table)
            .field("limits", &self.limits)
            .finish()
    }
}

impl QueryEngine {
    /// Opens the table and builds the session.
    pub async fn open(config: &QueryConfig, metrics: QueryMetrics) -> Result<Self> {
        let table =
            Arc::new(FlowsTable::open(config.table.clone(), config.snapshot_max_age).await?);
        let engine =
            Self::with_table(table, config.limits, config.target_partitions, metrics).await?;
        Ok(if config.rollups {
            engine.with_rollups(config.snapshot_max_age).await?
        } else {
            engine
        })
    }

    pub async fn with_table(
        table: Arc<FlowsTable>,
        limits: QueryLimits,
        target_partitions: usize,
        metrics: QueryMetrics,
    ) -> Result<Self> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory_bytes, 1.0)
            .build_arc()
            .map_err(QueryError::Execution)?;
        let session = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(target_partitions.max(1));
        let ctx = SessionContext::new_with_config_rt(session, runtime);
        table
            .delta_table()
            .await
            .update_datafusion_session(&ctx.state())?;
        ctx.register_table(FLOWS, Arc::clone(&table) as _)
            .map_err(QueryError::Execution)?;
        for udaf in sketch::udafs() {
            ctx.register_udaf(udaf);
        }
        for (name, sql) in questions::VIEWS {
            ctx.sql(&format!("CREATE VIEW {name} AS {sql}"))
                .await
                .map_err(|e| QueryError::Config(format!("view {name}: {e}")))?;
        }
        Ok(QueryEngine {
            ctx,
            table,
            limits,
            metrics,
            rollups: None,
        })
    }

    /// Answers the per-pod questions from hourly rollups where they are current (see
    /// [`crate::rollup`]); the rollup files are listed again when older than `max_age`.
    pub async fn with_rollups(mut self, max_age: std::time::Duration) -> Result<Self> {
        let mut schemas = std::collections::HashMap::new();
        for q in Question::ALL {
            let sql = RollupSpec::of(q).partial_sql(q, "false");
            let df = self.ctx.sql(&sql).await.map_err(|e| self.df_err(e))?;
            schemas.insert(q, Arc::new(df.schema().as_arrow().clone()));
        }
        let log_store = self.table.delta_table().await.log_store();
        let store = Arc::new(RollupStore::new(log_store, schemas, max_age));
        self.ctx.register_udtf(
            ROLLUP_FUNCTION,
            Arc::new(RollupFunction {
                store: Arc::clone(&store),
            }),
        );
        self.rollups = Some(store);
        Ok(self)
    }

    pub fn rollups(&self) -> Option<&Arc<RollupStore>> {
        self.rollups.as_ref()
    }

    /// The SQL answering a question: from rollups for the whole hours they cover (unless
    /// `exact`, conditions beyond the subject columns, or no current rollup), else from
    /// the flow rows.
    pub async fn question_sql(&self, request: &QuestionRequest) -> Result<String> {
        let usable = !request.exact && request.extra.is_empty();
        let Some(store) = self.rollups.as_ref().filter(|_| usable) else {
            return Ok(request.exact_sql());
        };
        self.table.refresh_if_stale().await?;
        let Some(fingerprints) = self.table.snapshot().fingerprints else {
            return Ok(request.exact_sql());
        };
        store.list_if_stale().await?;
        let coverage = Coverage::plan(request.question, &request.range, &fingerprints, |p| {
            store.exists(p)
        });
        if coverage.files.is_empty() {
            return Ok(request.exact_sql());
        }
        let raw_hours: usize = coverage
            .raw
            .iter()
            .map(|r| flowlake_schemas::PartitionPath::covering(r.from, r.to).len())
            .sum();
        QueryMetrics::count(&self.metrics.question_hours, "rollup", coverage.files.len());
        QueryMetrics::count(&self.metrics.question_hours, "rows", raw_hours);
        Ok(questions::rollup_question_sql(
            request.question,
            &request.scope,
            &request.subject_filters,
            &coverage,
            request.limit,
        ))
    }

    /// Answers a per-pod question (see [`Self::question_sql`]) under the limits.
    pub async fn answer(&self, request: &QuestionRequest) -> Result<QueryResult> {
        let sql = self.question_sql(request).await?;
        self.run(&sql, request.question.name(), true).await
    }

    pub fn table(&self) -> &Arc<FlowsTable> {
        &self.table
    }

    pub fn metrics(&self) -> &QueryMetrics {
        &self.metrics
    }

    pub fn limits(&self) -> QueryLimits {
        self.limits
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    fn df_err(&self, e: datafusion::error::DataFusionError) -> QueryError {
        QueryError::from_datafusion(e, self.limits.memory_bytes)
    }

    /// Runs user SQL through the sandbox, then [`Self::run`].
    pub async fn execute_user_sql(&self, sql: &str, endpoint: &'static str) -> Result<QueryResult> {
        if let Err(e) = sandbox::check(sql) {
            let refused = Err(e);
            self.metrics
                .observe(endpoint, &refused, std::time::Duration::ZERO);
            return refused;
        }
        self.run(sql, endpoint, true).await
    }

    /// Plans SQL into a DataFrame with the read-only SQL options (no sandbox check:
    /// for SQL built by the service itself).
    pub async fn plan(&self, sql: &str) -> Result<DataFrame> {
        self.table.refresh_if_stale().await?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        self.ctx
            .sql_with_options(sql, options)
            .await
            .map_err(|e| self.df_err(e))
    }

    /// Plans and starts a query under the time, memory and (if `row_limit`) row limits.
    pub async fn run(
        &self,
        sql: &str,
        endpoint: &'static str,
        row_limit: bool,
    ) -> Result<QueryResult> {
        let started = Instant::now();
        let outcome = self.run_inner(sql, row_limit, started).await;
        self.metrics.observe(endpoint, &outcome, started.elapsed());
        outcome
    }

    async fn run_inner(&self, sql: &str, row_limit: bool, started: Instant) -> Result<QueryResult> {
        let timeout = self.limits.timeout;
        let deadline = tokio::time::Instant::from_std(started + timeout);
        let max_rows = row_limit.then_some(self.limits.max_rows);
        let memory = self.limits.memory_bytes;
        let planned = tokio::time::timeout_at(deadline, async {
            let mut df = self.plan(sql).await?;
            let is_query = !matches!(
                df.logical_plan(),
                LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::DescribeTable(_)
            );
            if let (Some(max), true) = (max_rows, is_query) {
                df = df
                    .limit(0, Some(max.saturating_add(1)))
                    .map_err(|e| self.df_err(e))?;
            }
            let schema = df.schema().inner().clone();
            let stream = df.execute_stream().await.map_err(|e| self.df_err(e))?;
            Ok::<_, QueryError>((schema, stream))
        })
        .await
        .map_err(|_| QueryError::Timeout(timeout))??;
        let (schema, inner) = planned;

        struct State {
            inner: datafusion::execution::SendableRecordBatchStream,
            rows: usize,
            done: bool,
        }
        let limited = futures::stream::unfold(
            State {
                inner,
                rows: 0,
                done: false,
            },
            move |mut st| async move {
                if st.done {
                    return None;
                }
                let item = match tokio::time::timeout_at(deadline, st.inner.next()).await {
                    Err(_) => Err(QueryError::Timeout(timeout)),
                    Ok(None) => return None,
                    Ok(Some(Err(e))) => Err(QueryError::from_datafusion(e, memory)),
                    Ok(Some(Ok(batch))) => {
                        st.rows += batch.num_rows();
                        match max_rows {
                            Some(max) if st.rows > max => Err(QueryError::RowLimit(max)),
                            _ => Ok(batch),
                        }
                    }
                };
                st.done = item.is_err();
                Some((item, st))
            },
        )
        .boxed();

        // Fetch up to the first non-empty batch so start-up errors get their status.
        let mut rest = limited;
        let mut head = Vec::new();
        loop {
            match rest.next().await {
                Some(Ok(b)) => {
                    let non_empty = b.num_rows() > 0;
                    head.push(b);
                    if non_empty {
                        break;
                    }
                }
                Some(Err(e)) => return Err(e),
                None => {
                    // Finished: never poll the exhausted stream again.
                    rest = futures::stream::empty().boxed();
                    break;
                }
            }
        }
        Ok(QueryResult { schema, head, rest })
    }
}
