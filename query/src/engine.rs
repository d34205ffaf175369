//! The query engine: DataFusion sessions with `flows` and the per-pod views registered
//! ([`crate::session`]: one per namespace scope, see [`crate::access`]), a shared memory
//! pool, and per-query time and row limits.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::dataframe::DataFrame;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};

use crate::access::Access;
use futures::stream::{BoxStream, StreamExt};

use datafusion::execution::SendableRecordBatchStream;

use crate::admission;
use crate::capture::{CaptureFiles, CapturesTable};
use crate::error::{QueryError, Result};
use crate::exec::{self, Msg, QueryRuntime};
use crate::limits::QueryLimits;
use crate::location::TableLocation;
use crate::metrics::QueryMetrics;
use crate::questions::{Question, QuestionRequest};
use crate::rollup::table::RollupFunction;
use crate::rollup::{Coverage, RollupSpec, RollupStore};
use crate::sandbox;
use crate::session::{SessionParts, Sessions};
use crate::table::FlowsTable;

pub use crate::session::FLOWS;

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

/// What [`QueryEngine::open`] needs (`QueryConfig::engine` of the service's settings).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub table: TableLocation,
    /// How old the table snapshot may be before a query reloads it.
    pub snapshot_max_age: std::time::Duration,
    pub limits: QueryLimits,
    pub target_partitions: usize,
    /// Answer the questions from rollups where they are current.
    pub rollups: bool,
    /// Names read as dictionaries ([`crate::dictionaries`]).
    pub dictionaries: bool,
}

/// DataFusion over the `flows` table.
pub struct QueryEngine {
    sessions: Sessions,
    table: Arc<FlowsTable>,
    limits: QueryLimits,
    metrics: QueryMetrics,
    rollups: Option<Arc<RollupStore>>,
    exec: Arc<QueryRuntime>,
    captures: CaptureFiles,
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
    pub async fn open(config: &EngineConfig, metrics: QueryMetrics) -> Result<Self> {
        let table = Arc::new(
            FlowsTable::open(
                config.table.clone(),
                config.snapshot_max_age,
                config.dictionaries,
            )
            .await?,
        );
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
            .with_metadata_cache_limit(limits.metadata_cache_bytes)
            .build_arc()
            .map_err(QueryError::Execution)?;
        let session = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(target_partitions.max(1));
        let exec = Arc::new(QueryRuntime::new(
            target_partitions.max(2),
            limits.max_concurrent,
        )?);
        // The table's object store, in the runtime every session shares.
        let probe = SessionContext::new_with_config_rt(session.clone(), Arc::clone(&runtime));
        table
            .delta_table()
            .await
            .update_datafusion_session(&probe.state())?;
        let captures = CaptureFiles::new(table.delta_table().await.object_store());
        let sessions = Sessions::new(SessionParts {
            config: session,
            runtime,
            memory_bytes: limits.memory_bytes,
            flows: Arc::clone(&table) as _,
            rollups: None,
            losses: Some(Arc::new(crate::losses::LossesTable::new(
                table.location(),
                LOSSES_MAX_AGE,
            )?)),
            captures: Some(Arc::new(CapturesTable::new(captures.clone()))),
        })
        .await?;
        Ok(QueryEngine {
            sessions,
            table,
            limits,
            metrics,
            rollups: None,
            exec,
            captures,
        })
    }

    /// Answers the per-pod questions from hourly rollups where they are current (see
    /// [`crate::rollup`]); the rollup files are listed again when older than `max_age`.
    pub async fn with_rollups(mut self, max_age: std::time::Duration) -> Result<Self> {
        let mut schemas = std::collections::HashMap::new();
        for q in Question::ALL {
            let sql = RollupSpec::of(q).partial_sql(q, "false");
            let df = (self.sessions.all().sql(&sql).await).map_err(|e| self.df_err(e))?;
            schemas.insert(q, Arc::new(df.schema().as_arrow().clone()));
        }
        let log_store = self.table.delta_table().await.log_store();
        let store = Arc::new(RollupStore::new(log_store, schemas, max_age));
        self.sessions.set_rollups(Arc::new(RollupFunction {
            store: Arc::clone(&store),
        }));
        self.rollups = Some(store);
        Ok(self)
    }

    pub fn rollups(&self) -> Option<&Arc<RollupStore>> {
        self.rollups.as_ref()
    }

    /// The SQL answering a question: from rollups for the whole hours they cover (unless
    /// `exact`, conditions beyond the subject columns, or no current rollup), else from
    /// the flow rows. With a namespace-scoped `access`, a question about a subject of
    /// another namespace is refused and cluster-wide ones keep the access's subjects;
    /// run the SQL with the same `access`.
    pub async fn question_sql(&self, request: &QuestionRequest, access: &Access) -> Result<String> {
        let request = &scoped_request(request, access)?;
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
        Ok(crate::rollup::answer::rollup_question_sql(
            request.question,
            &request.scope,
            &request.subject_filters,
            &coverage,
            request.limit,
        ))
    }

    /// Answers a per-pod question (see [`Self::question_sql`]) under the limits.
    pub async fn answer(&self, request: &QuestionRequest, access: &Access) -> Result<QueryResult> {
        let sql = self.question_sql(request, access).await?;
        self.run(&sql, request.question.name(), true, access).await
    }

    /// The capture objects under the table root.
    pub fn captures(&self) -> &CaptureFiles {
        &self.captures
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

    /// The session reading every namespace.
    pub fn context(&self) -> &SessionContext {
        self.sessions.all()
    }

    /// The runtime queries and export jobs run on.
    pub fn exec(&self) -> &Arc<QueryRuntime> {
        &self.exec
    }

    fn df_err(&self, e: datafusion::error::DataFusionError) -> QueryError {
        QueryError::from_datafusion(e, self.limits.memory_bytes)
    }

    /// Checks user SQL (admission bounds and the sandbox) on the query runtime, without
    /// running it (for export requests, refused before a job starts).
    pub async fn check_user_sql(&self, sql: &str) -> Result<()> {
        let sql = sql.to_string();
        self.exec
            .handle()
            .spawn(async move {
                admission::admit(&sql)?;
                sandbox::check(&sql).map(drop)
            })
            .await
            .map_err(|e| QueryError::Config(format!("checking SQL failed: {e}")))?
    }

    /// Runs user SQL (checked by the sandbox) under the limits, reading what `access`
    /// allows.
    pub async fn execute_user_sql(
        &self,
        sql: &str,
        endpoint: &'static str,
        access: &Access,
    ) -> Result<QueryResult> {
        self.submit(sql, endpoint, true, true, access).await
    }

    /// Plans SQL into a DataFrame with the read-only SQL options (no sandbox check:
    /// for SQL built by the service itself).
    pub async fn plan(&self, sql: &str) -> Result<DataFrame> {
        self.table.refresh_if_stale().await?;
        self.sessions
            .all()
            .sql_with_options(sql, read_only())
            .await
            .map_err(|e| self.df_err(e))
    }

    /// Plans and starts SQL built by the service under the time, memory and (if
    /// `row_limit`) row limits, reading what `access` allows.
    pub async fn run(
        &self,
        sql: &str,
        endpoint: &'static str,
        row_limit: bool,
        access: &Access,
    ) -> Result<QueryResult> {
        self.submit(sql, endpoint, false, row_limit, access).await
    }

    async fn submit(
        &self,
        sql: &str,
        endpoint: &'static str,
        user: bool,
        row_limit: bool,
        access: &Access,
    ) -> Result<QueryResult> {
        let started = Instant::now();
        let outcome = self.submit_inner(sql, user, row_limit, access).await;
        self.metrics.observe(endpoint, &outcome, started.elapsed());
        outcome
    }

    async fn submit_inner(
        &self,
        sql: &str,
        user: bool,
        row_limit: bool,
        access: &Access,
    ) -> Result<QueryResult> {
        let timeout = self.limits.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let permit = self.exec.permit(deadline).await?;
        let job = Job {
            ctx: self.sessions.get(access).await?,
            scoped: !access.is_all(),
            table: Arc::clone(&self.table),
            limits: self.limits,
            sql: sql.to_string(),
            user,
            max_rows: row_limit.then_some(self.limits.max_rows),
            deadline,
        };
        let (tx, rx) = exec::channel();
        let running = self.exec.spawn(permit, job.run(tx));
        receive(rx, running, deadline + RECEIVE_MARGIN, timeout).await
    }
}

/// How long after the deadline the handler gives up waiting for a query task that
/// has not noticed it (a long CPU loop between two yields).
/// How old the `losses` snapshot a query reads may be.
const LOSSES_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

const RECEIVE_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

/// One query as run on the query runtime.
struct Job {
    ctx: SessionContext,
    /// Namespace-scoped: no `EXPLAIN ANALYZE` or `EXPLAIN VERBOSE` (see [`refuse_counts`]).
    scoped: bool,
    table: Arc<FlowsTable>,
    limits: QueryLimits,
    sql: String,
    user: bool,
    max_rows: Option<usize>,
    deadline: tokio::time::Instant,
}

impl Job {
    fn df_err(&self, e: datafusion::error::DataFusionError) -> QueryError {
        QueryError::from_datafusion(e, self.limits.memory_bytes)
    }

    async fn start(&self) -> Result<(SchemaRef, SendableRecordBatchStream)> {
        admission::admit(&self.sql)?;
        if self.user {
            sandbox::check(&self.sql)?;
        }
        self.table.refresh_if_stale().await?;
        let mut df = self
            .ctx
            .sql_with_options(&self.sql, read_only())
            .await
            .map_err(|e| self.df_err(e))?;
        admission::check_plan(df.logical_plan())?;
        if self.scoped {
            refuse_counts(df.logical_plan())?;
        }
        let is_query = !matches!(
            df.logical_plan(),
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::DescribeTable(_)
        );
        if let (Some(max), true) = (self.max_rows, is_query) {
            df = df
                .limit(0, Some(max.saturating_add(1)))
                .map_err(|e| self.df_err(e))?;
        }
        let schema = df.schema().inner().clone();
        let stream = df.execute_stream().await.map_err(|e| self.df_err(e))?;
        Ok((schema, stream))
    }

    /// Plans, executes and sends the batches until done, an error, the deadline, or
    /// the receiver is gone.
    async fn run(self, tx: exec::Sender) {
        let timeout = self.limits.timeout;
        let started = tokio::time::timeout_at(self.deadline, self.start())
            .await
            .unwrap_or(Err(QueryError::Timeout(timeout)));
        let mut stream = match started {
            Ok((schema, stream)) => {
                if tx.send(Ok(Msg::Schema(schema))).await.is_err() {
                    return;
                }
                stream
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let mut rows = 0usize;
        loop {
            let item = match tokio::time::timeout_at(self.deadline, stream.next()).await {
                Err(_) => Err(QueryError::Timeout(timeout)),
                Ok(None) => return,
                Ok(Some(Err(e))) => Err(self.df_err(e)),
                Ok(Some(Ok(batch))) => {
                    rows += batch.num_rows();
                    match self.max_rows {
                        Some(max) if rows > max => Err(QueryError::RowLimit(max)),
                        _ => Ok(Msg::Batch(batch)),
                    }
                }
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    }
}

/// A namespace-scoped request may not see `EXPLAIN ANALYZE` (the scan's metrics count
/// the rows read below the namespace filter) or `EXPLAIN VERBOSE` (its plans carry the
/// files' row-count statistics): both would tell how much traffic other namespaces have.
fn refuse_counts(plan: &LogicalPlan) -> Result<()> {
    match plan {
        LogicalPlan::Analyze(_) => Err(QueryError::NamespaceForbidden(
            "EXPLAIN ANALYZE (its metrics count rows of every namespace)".into(),
        )),
        LogicalPlan::Explain(e) if e.verbose => Err(QueryError::NamespaceForbidden(
            "EXPLAIN VERBOSE (its statistics count rows of every namespace)".into(),
        )),
        _ => Ok(()),
    }
}

/// `request` as `access` may ask it: subjects of its namespaces only.
fn scoped_request(request: &QuestionRequest, access: &Access) -> Result<QuestionRequest> {
    let mut request = request.clone();
    access.restrict(&request.scope, &mut request.subject_filters)?;
    Ok(request)
}

fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// The next message of a query task, or a timeout error once `deadline` passed.
async fn recv_until(
    rx: &mut exec::Receiver,
    deadline: tokio::time::Instant,
    timeout: std::time::Duration,
) -> Option<Result<Msg>> {
    match tokio::time::timeout_at(deadline, rx.recv()).await {
        Err(_) => Some(Err(QueryError::Timeout(timeout))),
        Ok(m) => m,
    }
}

/// The handler's side of a query: the schema, the batches up to the first non-empty
/// one (so start-up errors get their status), and the rest as a stream that keeps
/// the task alive. Waits at most until `deadline` for each message.
async fn receive(
    mut rx: exec::Receiver,
    running: exec::Running,
    deadline: tokio::time::Instant,
    timeout: std::time::Duration,
) -> Result<QueryResult> {
    let schema = match recv_until(&mut rx, deadline, timeout).await {
        Some(Ok(Msg::Schema(s))) => s,
        Some(Err(e)) => return Err(e),
        Some(Ok(Msg::Batch(_))) | None => return Err(QueryError::Timeout(timeout)),
    };
    let mut head = Vec::new();
    let mut finished = false;
    loop {
        match recv_until(&mut rx, deadline, timeout).await {
            Some(Ok(Msg::Batch(b))) => {
                let non_empty = b.num_rows() > 0;
                head.push(b);
                if non_empty {
                    break;
                }
            }
            Some(Ok(Msg::Schema(_))) => {}
            Some(Err(e)) => return Err(e),
            None => {
                finished = true;
                break;
            }
        }
    }
    let rest = if finished {
        futures::stream::empty().boxed()
    } else {
        futures::stream::unfold(
            (rx, running, false),
            move |(mut rx, running, done)| async move {
                if done {
                    return None;
                }
                let item = match recv_until(&mut rx, deadline, timeout).await {
                    None => return None,
                    Some(Ok(Msg::Batch(b))) => Ok(b),
                    Some(Ok(Msg::Schema(_))) => {
                        Err(QueryError::Config("a query sent its schema twice".into()))
                    }
                    Some(Err(e)) => Err(e),
                };
                let done = item.is_err();
                Some((item, (rx, running, done)))
            },
        )
        .boxed()
    };
    Ok(QueryResult { schema, head, rest })
}
