use std::path::PathBuf;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::datasource::TableType;
use datafusion::datasource::physical_plan::{FileScanConfig, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::{TableProviderFilterPushDown, col as c, lit};
use datafusion::prelude::{SessionConfig, SessionContext};
use deltalake_core::protocol::SaveMode;
use flowlake_gen::GenConfig;
use flowlake_schemas::records_to_batch;

use super::*;
use crate::dictionaries::dictionary_type;
use crate::questions::{Question, Scope, TimeRange, VIEWS, question_sql};
use datafusion::datasource::physical_plan::parquet::metadata::CachedParquetMetaData;

#[test]
fn the_rule_picks_rare_verdicts_only() {
    let dropped = c(col::VERDICT).eq(lit("dropped"));
    assert!(row_filters_pay(std::slice::from_ref(&dropped)));
    // Anywhere in a conjunction, on either side, as a one-value IN list.
    let view = c(col::SRC_POD)
        .is_not_null()
        .and(lit("dropped").eq(c(col::VERDICT)));
    assert!(row_filters_pay(&[c(col::BYTES).gt(lit(0i64)), view]));
    assert!(row_filters_pay(&[
        c(col::VERDICT).in_list(vec![lit("dropped")], false)
    ]));
    // Most rows: forwarded, a NOT IN, an OR, a pod point lookup, mostly-null columns.
    assert!(!row_filters_pay(&[c(col::VERDICT).eq(lit("forwarded"))]));
    assert!(!row_filters_pay(&[
        c(col::VERDICT).in_list(vec![lit("dropped"), lit("forwarded")], false)
    ]));
    assert!(!row_filters_pay(&[
        c(col::VERDICT).in_list(vec![lit("dropped")], true)
    ]));
    assert!(!row_filters_pay(&[dropped
        .clone()
        .or(c(col::DST_POD).eq(lit("a")))]));
    assert!(!row_filters_pay(&[c(col::DST_POD).eq(lit("db-0"))]));
    assert!(!row_filters_pay(&[c(col::DNS_RCODE).is_not_null()]));
    assert!(!row_filters_pay(&[]));
    // A dictionary literal, as type coercion writes it against a dictionary column.
    let dict = ScalarValue::Dictionary(
        Box::new(DataType::Int32),
        Box::new(ScalarValue::Utf8(Some("dropped".into()))),
    );
    assert!(row_filters_pay(&[c(col::VERDICT).eq(lit(dict))]));
}

/// The flow table read through [`NativeScan`] with a fixed row-filter policy.
#[derive(Debug)]
struct Flows {
    scan: NativeScan,
    row_filters: RowFilters,
}

impl std::fmt::Debug for NativeScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NativeScan")
    }
}

#[async_trait]
impl TableProvider for Flows {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.scan.schema)
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
        let scan = &self.scan;
        scan.scan_with(state, projection, filters, limit, self.row_filters)
            .await
    }
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }
}

async fn context(table: &DeltaTable, row_filters: RowFilters) -> SessionContext {
    context_with(table, row_filters, true).await
}

async fn context_with(
    table: &DeltaTable,
    row_filters: RowFilters,
    dictionaries: bool,
) -> SessionContext {
    let provider = table.table_provider().await.unwrap();
    let scan =
        NativeScan::try_new(table, &provider.schema(), dictionaries).expect("a native table");
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    ctx.register_table("flows", Arc::new(Flows { scan, row_filters }))
        .unwrap();
    for (name, sql) in VIEWS {
        ctx.sql(&format!("CREATE VIEW {name} AS {sql}"))
            .await
            .unwrap();
    }
    ctx
}

/// How many Parquet scans under `plan` evaluate row filters, of how many.
fn row_filter_scans(plan: &Arc<dyn ExecutionPlan>) -> (usize, usize) {
    let mut found = (0, 0);
    if let Some(exec) = plan.downcast_ref::<DataSourceExec>()
        && let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>()
        && let Some(parquet) = config.file_source().downcast_ref::<ParquetSource>()
    {
        found.1 += 1;
        if parquet.table_parquet_options().global.pushdown_filters {
            found.0 += 1;
        }
    }
    for child in plan.children() {
        let (on, of) = row_filter_scans(child);
        found = (found.0 + on, found.1 + of);
    }
    found
}

/// The answer's rows, sorted (the plans may break ties differently), and the plan's
/// row-filter scans.
async fn answer(ctx: &SessionContext, sql: &str) -> (Vec<String>, (usize, usize)) {
    let df = ctx.sql(sql).await.unwrap();
    let plan = df.clone().create_physical_plan().await.unwrap();
    let batches = df.collect().await.unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    let mut rows: Vec<String> = text.lines().map(str::to_string).collect();
    rows.sort();
    (rows, row_filter_scans(&plan))
}

/// A Delta table of the generator's test flows (36k rows over two hours).
async fn gen_table(dir: &std::path::Path) -> DeltaTable {
    let records = flowlake_gen::records(&GenConfig::for_tests(PathBuf::from("unused")));
    let url = url::Url::from_directory_path(dir).unwrap();
    DeltaTable::try_from_url(url)
        .await
        .unwrap()
        .write(vec![records_to_batch(&records)])
        .with_partition_columns(PARTITION_COLUMNS)
        .with_save_mode(SaveMode::Append)
        .await
        .unwrap()
}

/// The pod that receives the most drops.
async fn top_drops_pod(ctx: &SessionContext) -> Scope {
    let top = ctx
        .sql(
            "SELECT dst_namespace, dst_pod FROM flows WHERE verdict = 'dropped' \
             AND dst_pod IS NOT NULL GROUP BY 1, 2 ORDER BY count(*) DESC, 1, 2 LIMIT 1",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let value =
        |i: usize| arrow::util::display::array_value_to_string(top[0].column(i), 0).unwrap();
    Scope::Pod {
        namespace: value(0),
        pod: value(1),
    }
}

/// The two hours of [`gen_table`].
fn gen_range() -> TimeRange {
    TimeRange {
        from: "2026-01-01T00:00:00Z".parse().unwrap(),
        to: "2026-01-01T02:00:00Z".parse().unwrap(),
    }
}

#[tokio::test]
async fn per_pod_answers_are_the_same_with_and_without_row_filters() {
    let dir = tempfile::tempdir().unwrap();
    let table = gen_table(dir.path()).await;
    let selective = context(&table, RowFilters::WhereSelective).await;
    let never = context(&table, RowFilters::Never).await;
    let pod = top_drops_pod(&selective).await;
    let range = gen_range();
    for question in Question::ALL {
        for scope in [&pod, &Scope::AllPods] {
            let sql = question_sql(question, scope, &range, &[], 10_000);
            let (with, (on, of)) = answer(&selective, &sql).await;
            let (without, (off, _)) = answer(&never, &sql).await;
            // Rows for every ranked question and the pod's drops (the pod was picked by them).
            let must_have_rows = question == Question::Drops || *scope == Scope::AllPods;
            assert!(
                !must_have_rows || with.len() > 4,
                "{question:?} {scope:?}: no rows"
            );
            assert_eq!(with, without, "{question:?} {scope:?}");
            assert_eq!(off, 0, "{question:?}: row filters under Never");
            // Both branches of the drops view read only dropped rows; no other view does.
            let expected = if question == Question::Drops { of } else { 0 };
            assert!(of > 0, "{question:?}: no Parquet scan");
            assert_eq!(on, expected, "{question:?} {scope:?}: row-filter scans");
        }
    }
}

/// The native scan reads names as dictionaries and keeps every file's footer and page
/// index in the runtime's cache; its answers are deltalake's own scan's (plain
/// strings, nothing cached by us), question by question and for ad-hoc SQL.
#[tokio::test]
async fn dictionary_reads_answer_as_deltalakes_scan() {
    let dir = tempfile::tempdir().unwrap();
    let table = gen_table(dir.path()).await;
    let native = context(&table, RowFilters::WhereSelective).await;
    // `--dictionaries false`: every string as deltalake reads it.
    let plain = context_with(&table, RowFilters::WhereSelective, false).await;
    let delta = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    delta
        .register_table("flows", table.table_provider().await.unwrap())
        .unwrap();
    for (name, sql) in VIEWS {
        delta
            .sql(&format!("CREATE VIEW {name} AS {sql}"))
            .await
            .unwrap();
    }
    let pod = top_drops_pod(&native).await;
    let Scope::Pod {
        namespace,
        pod: name,
    } = &pod
    else {
        unreachable!()
    };
    let range = gen_range();
    // (SQL, whether it must have rows: the pod was picked by its drops).
    let mut queries: Vec<(String, bool)> = Question::ALL
        .into_iter()
        .flat_map(|q| {
            [&pod, &Scope::AllPods].map(|s| {
                let must = q == Question::Drops || *s == Scope::AllPods;
                (question_sql(q, s, &range, &[], 10_000), must)
            })
        })
        .collect();
    queries.extend(
        [
            format!(
                "SELECT src_namespace, dst_pod, verdict, drop_reason, sum(packets) FROM flows \
             WHERE dst_namespace = '{namespace}' AND dst_pod = '{name}' GROUP BY 1, 2, 3, 4"
            ),
            "SELECT node, protocol, dns_rcode, count(*) FROM flows \
         WHERE dst_pod IS NULL OR dst_pod LIKE '%-0%' GROUP BY 1, 2, 3"
                .to_string(),
            "SELECT coalesce(dst_pod, dst_service, dst_ip), count(*) FROM flows \
         WHERE verdict IN ('dropped', 'forwarded') AND observation_point <> 'to_pod' GROUP BY 1"
                .to_string(),
        ]
        .map(|sql| (sql, true)),
    );
    for (sql, must_have_rows) in &queries {
        let (ours, _) = answer(&native, sql).await;
        let (theirs, _) = answer(&delta, sql).await;
        assert!(!must_have_rows || ours.len() > 4, "no rows: {sql}");
        assert_eq!(ours, theirs, "{sql}");
        assert_eq!(answer(&plain, sql).await.0, theirs, "plain strings: {sql}");
    }
    // Names come out as dictionaries; addresses as deltalake reads them.
    let out = native
        .sql("SELECT dst_pod, verdict, src_ip FROM flows LIMIT 1")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let schema = out[0].schema();
    assert_eq!(schema.field(0).data_type(), &dictionary_type());
    assert_eq!(schema.field(1).data_type(), &dictionary_type());
    assert_eq!(schema.field(2).data_type(), &DataType::Utf8View);
    let plain_pods = plain
        .sql("SELECT dst_pod FROM flows LIMIT 1")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        plain_pods[0].schema().field(0).data_type(),
        &DataType::Utf8View
    );
    // Every file's footer and page index are cached, hinted.
    let cache = native.runtime_env().cache_manager.get_file_metadata_cache();
    let files: Vec<_> = table.get_file_uris().unwrap().collect();
    assert!(!files.is_empty());
    for entry in cache.list_entries().values() {
        let metadata = entry
            .value
            .file_metadata
            .as_any()
            .downcast_ref::<CachedParquetMetaData>()
            .expect("parquet metadata")
            .parquet_metadata();
        assert!(metadata.column_index().is_some() && metadata.offset_index().is_some());
        assert!(crate::dictionaries::is_hinted(metadata));
    }
    assert_eq!(cache.list_entries().len(), files.len());
}
