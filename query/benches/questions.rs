//! The per-pod questions through the real engine, for `query/bench/run.sh`, which runs
//! DuckDB on the same SQL over the same Parquet files and prints both.
//!
//! ```sh
//! # a Delta table from `flowlake gen` rows (gen flags after --table DIR), written by the
//! # ingester's own sort and Parquet writer (--layout parquet-rs: delta-rs's writer):
//! cargo bench -p flowlake-query --bench questions -- build --table DIR --rows 10000000 --duration 24h
//! # time every question (pod and ranked) through QueryEngine, p50 of --runs:
//! cargo bench -p flowlake-query --bench questions -- run --table DIR --from T --to T --runs 5 --out F.json
//! # EXPLAIN ANALYZE of one question (name as in the JSON, e.g. talkers/ranked) or of --sql:
//! cargo bench -p flowlake-query --bench questions -- explain --table DIR --from T --to T --name N
//! # diagnostics: --only N1,N2 (run a subset), --sql "..." (time that SQL alone, as
//! #   `/api/v1/sql` runs it), --set "k=v;k=v" (session options),
//! #   --without-rules R1,R2 (drop physical optimizer rules by name, e.g. SelectiveFirst),
//! #   --dictionaries false (every string column read as Utf8View)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::util::display::array_value_to_string;
use clap::Parser;
use datafusion::execution::SessionStateBuilder;
use deltalake_core::DeltaTable;
use deltalake_core::protocol::SaveMode;
use flowlake_gen::GenArgs;
use flowlake_ingester::Table;
use flowlake_ingester::sort::sort_plan;
use flowlake_query::access::Access;
use flowlake_query::metrics::QueryMetrics;
use flowlake_query::questions::{Question, QuestionRequest, Scope, TimeRange, VIEWS};
use flowlake_query::rollup::build::{RollupPolicy, build_rollups};
use flowlake_query::rollup::sketch::RELATIVE_ACCURACY;
use flowlake_query::{QueryConfig, QueryEngine};
use flowlake_schemas::{PARTITION_COLUMNS, col, flow_schema};
use flowlake_storage::TableLocation;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};

#[path = "questions/adhoc.rs"]
mod adhoc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The `flowlake` binary's allocator (src/main.rs), so the timings are the service's:
/// glibc malloc costs the questions about 10 % (docs/BENCHMARKS.md, Step 5).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `flowlake gen`'s own flags.
#[derive(Parser)]
struct Gen {
    #[command(flatten)]
    args: GenArgs,
}

/// The `parquet-rs` layout: delta-rs's writer with parquet-rs defaults, rows
/// sorted by source namespace and pod, destination namespace and time. The
/// `ingester` layout is the ingester's own (`flowlake_ingester::sort` and
/// `flowlake_ingester::parquet`), written through its `Table`.
const SORT_COLUMNS: [&str; 4] = [
    col::SRC_NAMESPACE,
    col::SRC_POD,
    col::DST_NAMESPACE,
    col::INTERVAL_START,
];

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("level")))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(256 * 1024))
        .build()
}

fn sorted(batches: &[RecordBatch]) -> Result<RecordBatch, BoxError> {
    let all = concat_batches(&flow_schema(), batches)?;
    let keys: Vec<SortColumn> = SORT_COLUMNS
        .iter()
        .map(|c| SortColumn {
            values: all.column_by_name(c).expect("flow column").clone(),
            options: None,
        })
        .collect();
    Ok(take_record_batch(&all, &lexsort_to_indices(&keys, None)?)?)
}

/// Rows sorted and committed as one file at a time while building a bench table
/// (an ingester's flush of a busy hour).
const COMMIT_ROWS: usize = 1 << 20;

/// A table being built in one of the layouts.
enum Writer {
    ParquetRs(DeltaTable),
    Ingester(Table),
}

impl Writer {
    async fn open(table: &Path, layout: &str) -> Result<Writer, BoxError> {
        let url = url::Url::from_directory_path(std::path::absolute(table)?)
            .map_err(|()| "table path is not absolute")?;
        match layout {
            "parquet-rs" => Ok(Writer::ParquetRs(DeltaTable::try_from_url(url).await?)),
            "ingester" => {
                let cfg = TableLocation {
                    location: url.to_string(),
                    storage_options: Default::default(),
                };
                Ok(Writer::Ingester(Table::open_or_create(&cfg).await?))
            }
            other => Err(format!("unknown layout {other} (ingester, parquet-rs)").into()),
        }
    }

    /// One sorted file of `batches` (one hour's rows) appended to the table.
    async fn commit(self, batches: Vec<RecordBatch>) -> Result<Writer, BoxError> {
        match self {
            Writer::ParquetRs(delta) => {
                let batch = tokio::task::spawn_blocking(move || sorted(&batches)).await??;
                Ok(Writer::ParquetRs(
                    delta
                        .write(vec![batch])
                        .with_partition_columns(PARTITION_COLUMNS)
                        .with_save_mode(SaveMode::Append)
                        .with_writer_properties(writer_properties())
                        .await?,
                ))
            }
            Writer::Ingester(mut table) => {
                let runs = tokio::task::spawn_blocking(move || sort_plan(batches.into())).await?;
                table.append(runs, None).await?;
                Ok(Writer::Ingester(table))
            }
        }
    }
}

/// `flowlake gen` into `<table>.gen`, then one Delta commit per hour partition (per
/// `COMMIT_ROWS` rows of it).
async fn build(table: &Path, layout: &str, gen_flags: &[String]) -> Result<(), BoxError> {
    let gen_dir = table.with_extension("gen");
    let mut argv = vec!["gen".to_string(), "--out".into()];
    argv.push(gen_dir.display().to_string());
    argv.extend(gen_flags.iter().cloned());
    let cfg = Gen::try_parse_from(argv)?
        .args
        .into_config(chrono::Utc::now())?;
    let started = Instant::now();
    let summary = tokio::task::spawn_blocking(move || flowlake_gen::generate(&cfg)).await??;
    eprintln!(
        "generated {} rows in {} files in {:.1}s",
        summary.rows,
        summary.files.len(),
        started.elapsed().as_secs_f64()
    );
    let mut by_hour: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for f in &summary.files {
        let dir = f.parent().expect("partition dir").to_path_buf();
        by_hour.entry(dir).or_default().push(f.clone());
    }
    std::fs::create_dir_all(table)?;
    let mut writer = Writer::open(table, layout).await?;
    for (dir, files) in by_hour {
        // At most COMMIT_ROWS rows sorted and written at once: an hour of 100 M rows
        // (~4.2 M rows x 48 columns, sorted by copy) was OOM-killed. Smaller hours (10 M
        // rows: 417 k per hour) stay one sorted file per hour.
        let mut batches = Vec::new();
        let mut rows = 0;
        let mut parts = 0;
        for f in files {
            // gen's files leave the partition columns to the path; this adds them.
            for b in flowlake_gen::output::read_parquet(&f)? {
                rows += b.num_rows();
                batches.push(b);
                if rows >= COMMIT_ROWS {
                    writer = writer.commit(std::mem::take(&mut batches)).await?;
                    rows = 0;
                    parts += 1;
                }
            }
        }
        if !batches.is_empty() {
            writer = writer.commit(batches).await?;
            parts += 1;
        }
        eprintln!("committed {} ({parts} files)", dir.display());
    }
    std::fs::remove_dir_all(&gen_dir)?;
    eprintln!("table built in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

async fn open(opts: &HashMap<String, String>) -> Result<QueryEngine, BoxError> {
    let mut config = QueryConfig::default();
    config.table.location = opts["table"].clone();
    config.snapshot_max_age = Duration::from_secs(3600);
    config.limits.memory_bytes = 8 << 30;
    config.limits.timeout = Duration::from_secs(600);
    if let Some(tp) = opts.get("target-partitions") {
        config.target_partitions = tp.parse()?;
    }
    if let Some(d) = opts.get("dictionaries") {
        config.dictionaries = d.parse()?;
    }
    let engine = QueryEngine::open(&config.engine(), QueryMetrics::unregistered()).await?;
    // Diagnostics only: `--set "key=value;key=value"` session options.
    for kv in opts.get("set").map_or("", String::as_str).split(';') {
        if let Some((k, v)) = kv.split_once('=') {
            engine
                .context()
                .sql(&format!("SET {} = {}", k.trim(), v.trim()))
                .await?;
        }
    }
    if let Some(names) = opts.get("without-rules") {
        let names: Vec<&str> = names.split(',').collect();
        let state = engine.context().state_ref();
        let mut state = state.write();
        let rules = state
            .physical_optimizers()
            .iter()
            .filter(|r| !names.contains(&r.name()))
            .cloned()
            .collect();
        *state = SessionStateBuilder::new_from_existing(state.clone())
            .with_physical_optimizer_rules(rules)
            .build();
    }
    Ok(engine)
}

async fn collect(engine: &QueryEngine, sql: &str) -> Result<Vec<RecordBatch>, BoxError> {
    Ok(engine
        .run(sql, "bench", false, &Access::all())
        .await?
        .collect()
        .await?)
}

/// The benchmark's questions: each per-pod question for the pod with the most drops
/// in the first hour, and ranked across all pods, over `[from, to)`.
async fn questions(
    engine: &QueryEngine,
    range: &TimeRange,
) -> Result<(String, Vec<(String, Question, Scope)>), BoxError> {
    let first_hour = TimeRange {
        from: range.from,
        to: range.from + chrono::Duration::hours(1),
    };
    let top = collect(
        engine,
        &format!(
            "SELECT namespace, pod, sum(packets) AS p FROM pod_drops WHERE {} \
             GROUP BY 1, 2 ORDER BY p DESC, 1, 2 LIMIT 1",
            first_hour.predicate()
        ),
    )
    .await?;
    let batch = top.iter().find(|b| b.num_rows() > 0).ok_or("no drops")?;
    let namespace = array_value_to_string(batch.column(0), 0)?;
    let pod = array_value_to_string(batch.column(1), 0)?;
    let pod_scope = Scope::Pod {
        namespace: namespace.clone(),
        pod: pod.clone(),
    };
    let mut out = Vec::new();
    for q in Question::ALL {
        let name = q.name();
        out.push((format!("{name}/pod"), q, pod_scope.clone()));
        out.push((format!("{name}/ranked"), q, Scope::AllPods));
    }
    Ok((format!("{namespace}/{pod}"), out))
}

fn to_json(batches: &[RecordBatch]) -> Result<serde_json::Value, BoxError> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    for b in batches {
        writer.write(b)?;
    }
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(serde_json::json!([]));
    }
    Ok(serde_json::from_slice(&bytes)?)
}

fn range_of(opts: &HashMap<String, String>) -> Result<TimeRange, BoxError> {
    Ok(TimeRange {
        from: opts["from"].parse()?,
        to: opts["to"].parse()?,
    })
}

async fn run(opts: &HashMap<String, String>) -> Result<(), BoxError> {
    let engine = open(opts).await?;
    let range = range_of(opts)?;
    let runs: usize = opts.get("runs").map_or(Ok(5), |r| r.parse())?;
    let (pod, list) = questions(&engine, &range).await?;
    let only: Vec<&str> = opts
        .get("only")
        .map_or(Vec::new(), |o| o.split(',').collect());
    // `exact`: the flow rows only; `rollups`: as the endpoints answer (hourly rollups
    // where current, see `questions rollup`). DuckDB always runs the exact SQL.
    let exact = match opts.get("mode").map_or("exact", String::as_str) {
        "exact" => true,
        "rollups" => false,
        other => return Err(format!("--mode {other}: exact or rollups").into()),
    };
    let mut results = Vec::new();
    let mut time = async |name: &str, sql: String, flowlake_sql: String, work: &Work<'_>| {
        let answer = work.batches(&engine).await?; // warm-up, and the answer
        let mut ms = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            std::hint::black_box(work.batches(&engine).await?);
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let mut s = ms.clone();
        s.sort_by(f64::total_cmp);
        eprintln!("{name:<36} p50 {:>9.1} ms", s[s.len() / 2]);
        let approximate = flowlake_sql.contains("sketch_quantile");
        results.push(serde_json::json!({
            "name": name, "sql": sql, "flowlake_sql": flowlake_sql,
            "flowlake_ms": ms, "flowlake_result": to_json(&answer)?,
            // Latency quantiles from rollups are within the sketch's relative accuracy.
            "approx_rel": if approximate { Some(RELATIVE_ACCURACY) } else { None },
        }));
        Ok::<_, BoxError>(())
    };
    // Diagnostics: `--sql "..."` times that SQL alone.
    let list = match opts.get("sql") {
        Some(sql) => {
            time("sql", sql.clone(), sql.clone(), &Work::Sql(sql)).await?;
            Vec::new()
        }
        None => list,
    };
    let adhoc_set = opts.get("sql").is_none();
    for (name, q, scope) in list {
        if !only.is_empty() && !only.contains(&name.as_str()) {
            continue;
        }
        let request = QuestionRequest {
            exact,
            ..QuestionRequest::new(q, scope, range, 100)
        };
        let flowlake_sql = engine.question_sql(&request, &Access::all()).await?;
        time(
            &name,
            request.exact_sql(),
            flowlake_sql,
            &Work::Question(&request),
        )
        .await?;
    }
    // The ad-hoc set: the same SQL in both engines, as `/api/v1/sql` runs it.
    let (namespace, pod_name) = pod.split_once('/').ok_or("pod is namespace/pod")?;
    let hour = TimeRange {
        from: range.from,
        to: range.from + chrono::Duration::hours(1),
    };
    let subject = adhoc::Subject {
        namespace,
        pod: pod_name,
        range: &range,
        hour: &hour,
    };
    for (name, sql) in adhoc::queries(&subject) {
        if !adhoc_set || !only.is_empty() && !only.contains(&name.as_str()) {
            continue;
        }
        time(&name, sql.clone(), sql.clone(), &Work::Sql(&sql)).await?;
    }
    let doc = serde_json::json!({
        "pod": pod,
        "from": opts["from"], "to": opts["to"],
        "target_partitions": engine.context().state().config().target_partitions(),
        "views": VIEWS.iter().map(|(n, s)| serde_json::json!({"name": n, "sql": s})).collect::<Vec<_>>(),
        "queries": results,
    });
    if let Some(out) = opts.get("out") {
        std::fs::write(out, serde_json::to_vec_pretty(&doc)?)?;
    }
    Ok(())
}

/// What one timed run asks the engine.
enum Work<'a> {
    /// A per-pod question, as the endpoints answer it.
    Question(&'a QuestionRequest),
    /// User SQL, as `/api/v1/sql` runs it (sandbox, limits).
    Sql(&'a str),
}

impl Work<'_> {
    async fn batches(&self, engine: &QueryEngine) -> Result<Vec<RecordBatch>, BoxError> {
        let result = match self {
            Work::Question(request) => engine.answer(request, &Access::all()).await?,
            Work::Sql(sql) => {
                engine
                    .execute_user_sql(sql, "bench", &Access::all())
                    .await?
            }
        };
        Ok(result.collect().await?)
    }
}

/// Builds the rollups of every hour of the table (all closed: the data is in the past).
async fn rollup(opts: &HashMap<String, String>) -> Result<(), BoxError> {
    let engine = open(opts).await?;
    let started = Instant::now();
    let report = build_rollups(&engine, chrono::Utc::now(), RollupPolicy::default()).await?;
    eprintln!(
        "rollups: {report:?} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn explain(opts: &HashMap<String, String>) -> Result<(), BoxError> {
    let engine = open(opts).await?;
    let range = range_of(opts)?;
    let (_, list) = questions(&engine, &range).await?;
    let exact = opts.get("mode").is_none_or(|m| m == "exact");
    let sql = match opts.get("sql") {
        Some(sql) => sql.clone(),
        None => {
            let (_, q, scope) = list
                .iter()
                .find(|(n, _, _)| *n == opts["name"])
                .ok_or("unknown --name")?;
            let request = QuestionRequest {
                exact,
                ..QuestionRequest::new(*q, scope.clone(), range, 100)
            };
            engine.question_sql(&request, &Access::all()).await?
        }
    };
    println!("{sql}\n");
    let plan = collect(&engine, &format!("EXPLAIN ANALYZE {sql}")).await?;
    for batch in &plan {
        let text = batch.column(1);
        for row in 0..batch.num_rows() {
            println!("{}", array_value_to_string(text, row)?);
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // `cargo bench` appends `--bench`.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some((command, rest)) = args.split_first() else {
        return Err("usage: questions build|run|explain --table DIR ...".into());
    };
    let mut opts = HashMap::new();
    let mut extra = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.strip_prefix("--") {
            Some(k) if command != "build" || k == "table" || k == "layout" => {
                let v = it.next().ok_or_else(|| format!("--{k} needs a value"))?;
                opts.insert(k.to_string(), v.clone());
            }
            _ => extra.push(a.clone()),
        }
    }
    match command.as_str() {
        "build" => {
            let layout = opts.get("layout").map_or("ingester", String::as_str);
            build(Path::new(&opts["table"]), layout, &extra).await
        }
        "run" => run(&opts).await,
        "explain" => explain(&opts).await,
        "rollup" => rollup(&opts).await,
        other => Err(format!("unknown command {other}").into()),
    }
}
