//! Reads a Delta snapshot's data files with DataFusion's own Parquet source.
//!
//! deltalake-core's scan runs every decoded batch through its kernel transform layer
//! (partition values appended per batch as scalars), which was ~390 ms of an 1.4 s
//! question at 10 M rows. Our tables need none of it: no deletion vectors, no column
//! mapping, partition values `date`/`hour` as plain strings. So, for such tables, the
//! snapshot's Add actions become `PartitionedFile`s with their partition values, pruned
//! first by the Delta log's per-file statistics and partition values (a `PruningPredicate`
//! over the snapshot's `LogDataHandler`), and read by a `ParquetSource` that DataFusion's
//! filter pushdown hands the query predicate for row-group, bloom-filter and page-index
//! pruning. Row filters (decode the predicate's columns, then the rest only for the rows
//! that pass) are turned on per scan, only for predicates [`row_filters_pay`] names
//! selective. Tables with reader features (protocol reader version > 1), other partition
//! columns or absolute file paths are left to deltalake's scan.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfigBuilder, ParquetFileReaderFactory, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use deltalake_core::DeltaTable;
use deltalake_core::kernel::LogicalFileView;
use deltalake_core::logstore::LogStoreRef;
use deltalake_core::table::state::DeltaTableState;
use flowlake_schemas::{PARTITION_COLUMNS, PartitionPath, col};

use crate::dictionaries::{FlowsReaderFactory, with_dictionaries};
use crate::rollup::{Fingerprint, Fingerprints};
use crate::time_bounds::{
    TimeBound, always_true, file_ranges, filter_by_time, time_bound, with_interval_start,
};
use object_store::ObjectMeta;

/// Partition values are strings; deltalake's schema gives them as dictionaries.
fn is_string(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_string(v),
        _ => false,
    }
}

/// Whether a scan evaluates its predicate as a Parquet row filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowFilters {
    /// Where [`row_filters_pay`] says so, or everywhere when the session's
    /// `datafusion.execution.parquet.pushdown_filters` is set (the served mode).
    WhereSelective,
    /// Never (the session option still turns them on); for comparisons.
    #[cfg_attr(not(test), allow(dead_code))]
    Never,
}

/// Values of a column that few flow rows hold: an equality or `IN` on one of them keeps
/// a small share of the rows. Drops are a few percent of flows; `forwarded` is most.
pub(crate) const RARE_VALUES: [(&str, &[&str]); 1] = [(col::VERDICT, &["dropped"])];

/// The rule for turning on row filters for one scan: some conjunct of its filters is an
/// equality or `IN` list of [`RARE_VALUES`] only. Measured (docs/BENCHMARKS.md, issue
/// #19 step 5, row filters on every scan): they halve the scans under
/// `verdict = 'dropped'` and double the broad ones. Point lookups on a pod are left out:
/// the `src_pod` branch is already cut to the pod's pages by the sort order and page
/// index, and on the `dst_pod` branch row filters made latency/pod 44 % and talkers/pod
/// 4 % slower (the cheap, unselective conjuncts such as `observation_point` are
/// evaluated over every row first). `IS NOT NULL` on the DNS and TCP columns measured no
/// gain either (dns-errors, dns-by-rcode, retransmits/ranked).
pub(crate) fn row_filters_pay(filters: &[Expr]) -> bool {
    filters.iter().any(selective)
}

fn selective(e: &Expr) -> bool {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => selective(left) || selective(right),
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            rare(left, std::slice::from_ref(right.as_ref()))
                || rare(right, std::slice::from_ref(left.as_ref()))
        }
        Expr::InList(list) if !list.negated => rare(&list.expr, &list.list),
        _ => false,
    }
}

/// `column` is a column of [`RARE_VALUES`] and every one of `values` a rare literal of it.
fn rare(column: &Expr, values: &[Expr]) -> bool {
    let Some(name) = column_name(column) else {
        return false;
    };
    let Some((_, rare)) = RARE_VALUES.iter().find(|(c, _)| *c == name) else {
        return false;
    };
    !values.is_empty()
        && values
            .iter()
            .all(|v| string_literal(v).is_some_and(|v| rare.contains(&v.as_str())))
}

fn column_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) => column_name(&c.expr),
        Expr::TryCast(c) => column_name(&c.expr),
        _ => None,
    }
}

fn string_literal(e: &Expr) -> Option<String> {
    fn of(v: &ScalarValue) -> Option<String> {
        match v {
            ScalarValue::Utf8(s) | ScalarValue::Utf8View(s) | ScalarValue::LargeUtf8(s) => {
                s.clone()
            }
            ScalarValue::Dictionary(_, v) => of(v),
            _ => None,
        }
    }
    match e {
        Expr::Literal(v, _) => of(v),
        Expr::Cast(c) => string_literal(&c.expr),
        Expr::TryCast(c) => string_literal(&c.expr),
        _ => None,
    }
}

/// A snapshot that DataFusion's Parquet source can read directly.
#[derive(Clone)]
pub struct NativeScan {
    state: DeltaTableState,
    log_store: LogStoreRef,
    schema: SchemaRef,
    file_schema: SchemaRef,
    partition_fields: Vec<FieldRef>,
    /// Names read as dictionaries (the schemas above say so).
    dictionaries: bool,
}

impl NativeScan {
    /// `Some` when the table at this snapshot can be read without deltalake's transform
    /// layer; `None` (use deltalake's scan) otherwise.
    /// `dictionaries`: read [`crate::dictionaries::DICTIONARY_COLUMNS`] as dictionaries.
    pub fn try_new(table: &DeltaTable, schema: &SchemaRef, dictionaries: bool) -> Option<Self> {
        let state = table.snapshot().ok()?;
        // Reader version 1: no column mapping (2+), no deletion vectors or other reader
        // features (3).
        if state.protocol().min_reader_version() > 1 {
            tracing::info!("flows table has reader features: using deltalake's scan");
            return None;
        }
        let partition_columns = state.metadata().partition_columns();
        if partition_columns
            .iter()
            .map(String::as_str)
            .ne(PARTITION_COLUMNS)
        {
            return None;
        }
        let n = schema.fields().len();
        if n < PARTITION_COLUMNS.len() {
            return None;
        }
        let (data, parts) = schema.fields().split_at(n - PARTITION_COLUMNS.len());
        let partitions_ok = parts
            .iter()
            .zip(PARTITION_COLUMNS)
            .all(|(f, name)| f.name() == name && is_string(f.data_type()));
        if !partitions_ok {
            return None;
        }
        let names = |s: Schema| {
            if dictionaries {
                with_dictionaries(&s)
            } else {
                s
            }
        };
        let file_schema = names(Schema::new_with_metadata(
            data.to_vec(),
            schema.metadata().clone(),
        ));
        let scan = NativeScan {
            state: state.clone(),
            log_store: table.log_store(),
            schema: Arc::new(names(schema.as_ref().clone())),
            dictionaries,
            file_schema: Arc::new(file_schema),
            partition_fields: parts.to_vec(),
        };
        let absolute = scan
            .state
            .log_data()
            .iter()
            .any(|f| f.path().contains("://"));
        (!absolute).then_some(scan)
    }

    /// The table's schema as this scan reads it: deltalake's, with
    /// [`crate::dictionaries::DICTIONARY_COLUMNS`] as dictionaries.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The fingerprint of each hour partition's files in this snapshot.
    pub fn fingerprints(&self) -> Fingerprints {
        let mut files: HashMap<PartitionPath, Vec<(String, u64)>> = HashMap::new();
        for file in self.state.log_data().iter() {
            let values = file.partition_values_map();
            let value = |c: &str| values.get(c).cloned().flatten();
            let (Some(date), Some(hour)) =
                (value(PARTITION_COLUMNS[0]), value(PARTITION_COLUMNS[1]))
            else {
                continue;
            };
            let Ok(partition) = format!(
                "{}={date}/{}={hour}",
                PARTITION_COLUMNS[0], PARTITION_COLUMNS[1]
            )
            .parse::<PartitionPath>() else {
                continue;
            };
            files.entry(partition).or_default().push((
                file.path().to_string(),
                u64::try_from(file.size()).unwrap_or(0),
            ));
        }
        files
            .into_iter()
            .map(|(p, f)| {
                (
                    p,
                    Fingerprint::of_files(f.iter().map(|(path, size)| (path.as_str(), *size))),
                )
            })
            .collect()
    }

    fn partitioned_file(&self, file: &LogicalFileView) -> DfResult<PartitionedFile> {
        let values = file.partition_values_map();
        let mut partition_values = Vec::with_capacity(self.partition_fields.len());
        for field in &self.partition_fields {
            let value = values.get(field.name()).cloned().flatten();
            partition_values.push(ScalarValue::Utf8(value).cast_to(field.data_type())?);
        }
        let mut pf: PartitionedFile = ObjectMeta {
            location: file.object_store_path(),
            size: u64::try_from(file.size()).unwrap_or(0),
            last_modified: chrono::DateTime::<chrono::Utc>::from_timestamp_millis(
                file.modification_time(),
            )
            .unwrap_or_default(),
            e_tag: None,
            version: None,
        }
        .into();
        pf.partition_values = partition_values;
        Ok(pf)
    }

    /// The files `filters` may match, as a `DataSourceExec` over a `ParquetSource`.
    /// `filters` are only used to skip files here: the caller reports them as inexact,
    /// so DataFusion's filter pushdown gives them to the Parquet source (row groups,
    /// bloom filters, page index). Without row filters it keeps a `FilterExec` above
    /// the scan; with them (see [`row_filters_pay`]) the source applies them itself.
    pub async fn scan(
        &self,
        session: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.scan_with(
            session,
            projection,
            filters,
            limit,
            RowFilters::WhereSelective,
        )
        .await
    }

    pub(crate) async fn scan_with(
        &self,
        session: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
        row_filters: RowFilters,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let log_data = self.state.log_data();
        let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
        // No usable predicate (none, or one statistics cannot decide): every file.
        let predicate = conjunction(filters.iter().cloned())
            .and_then(|expr| session.create_physical_expr(expr, &df_schema).ok())
            .and_then(|physical| {
                PruningPredicateBuilder::new()
                    .with_file_schema(Arc::clone(&self.schema))
                    .build(physical)
            });
        let keep = match predicate {
            Some(predicate) => predicate.prune(&log_data)?,
            None => vec![true; log_data.num_files()],
        };
        // Time bounds the scan answers itself (see `crate::time_bounds`): kept only if
        // some file is not wholly inside them.
        let (bounds, time): (Vec<&Expr>, Vec<TimeBound>) = filters
            .iter()
            .filter_map(|f| time_bound(f).map(|b| (f, b)))
            .unzip();
        let nullable = self
            .schema
            .field_with_name(col::INTERVAL_START)
            .map_or(true, |f| f.is_nullable());
        let ranges = (!time.is_empty()).then(|| file_ranges(&log_data, nullable));
        let mut files = Vec::new();
        let mut straddling = false;
        for (i, (file, keep)) in log_data.iter().zip(keep).enumerate() {
            if keep {
                files.push(self.partitioned_file(&file)?);
                if let Some(ranges) = &ranges {
                    straddling |= !always_true(&time, ranges[i].0, ranges[i].1);
                }
            }
        }
        tracing::debug!(
            files = files.len(),
            of = log_data.num_files(),
            "flows files after pruning"
        );
        if files.is_empty() {
            return empty_scan(&self.schema, projection);
        }
        let table_schema = TableSchema::builder(Arc::clone(&self.file_schema))
            .with_table_partition_cols(self.partition_fields.clone())
            .build();
        let read = ReadOptions {
            row_filters: row_filters == RowFilters::WhereSelective && row_filters_pay(filters),
            flows: Some(self.dictionaries),
        };
        if !straddling {
            return parquet_scan_with(
                session,
                &self.log_store,
                table_schema,
                files,
                projection,
                limit,
                read,
            )
            .await;
        }
        // Some file holds rows outside the bounds: read `interval_start` and filter.
        let (columns, wanted) = with_interval_start(&self.schema, projection)?;
        let plan = parquet_scan_with(
            session,
            &self.log_store,
            table_schema,
            files,
            Some(&columns),
            None,
            read,
        )
        .await?;
        filter_by_time(session, plan, &bounds, wanted, limit)
    }
}

/// A `DataSourceExec` reading `files` (relative to the table root of `log_store`) with
/// DataFusion's `ParquetSource` and the session's Parquet options, split over the
/// session's target partitions.
pub(crate) async fn parquet_scan(
    session: &dyn Session,
    log_store: &LogStoreRef,
    table_schema: TableSchema,
    files: Vec<PartitionedFile>,
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    parquet_scan_with(
        session,
        log_store,
        table_schema,
        files,
        projection,
        limit,
        ReadOptions::default(),
    )
    .await
}

/// How [`parquet_scan_with`] reads its files.
#[derive(Debug, Clone, Copy, Default)]
struct ReadOptions {
    /// Row-filter pushdown (and the ordering of its predicates by cost) for this scan
    /// whatever the session says.
    row_filters: bool,
    /// `Some`: the flow table, read by [`FlowsReaderFactory`] (page indexes cached), with
    /// [`crate::dictionaries::DICTIONARY_COLUMNS`] as dictionaries when `true` (the
    /// table schema must say so). `None`: DataFusion's cached reader.
    flows: Option<bool>,
}

/// [`parquet_scan`] with `read`'s options.
async fn parquet_scan_with(
    session: &dyn Session,
    log_store: &LogStoreRef,
    table_schema: TableSchema,
    mut files: Vec<PartitionedFile>,
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
    read: ReadOptions,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    files.sort_by(|a, b| a.object_meta.location.cmp(&b.object_meta.location));
    let groups = FileGroup::from(files).split_files(session.config().target_partitions());
    let store_url = log_store.object_store_url();
    session
        .runtime_env()
        .register_object_store(store_url.as_ref(), log_store.object_store(None));
    let mut options = session.table_options().parquet.clone();
    options.global = session.config().options().execution.parquet.clone();
    if read.row_filters {
        options.global.pushdown_filters = true;
        options.global.reorder_filters = true;
    }
    // As `ParquetFormat::create_physical_plan`: footers from the runtime's metadata cache.
    let runtime = session.runtime_env();
    let (store, cache) = (
        runtime.object_store(&store_url)?,
        runtime.cache_manager.get_file_metadata_cache(),
    );
    let readers: Arc<dyn ParquetFileReaderFactory> = match read.flows {
        Some(dictionaries) => Arc::new(FlowsReaderFactory::new(store, cache, dictionaries)),
        None => Arc::new(CachedParquetFileReaderFactory::new(store, cache)),
    };
    let mut source = ParquetSource::new(table_schema)
        .with_table_parquet_options(options.clone())
        .with_parquet_file_reader_factory(readers);
    if let Some(hint) = options.global.metadata_size_hint {
        source = source.with_metadata_size_hint(hint);
    }
    let config = FileScanConfigBuilder::new(store_url, Arc::new(source))
        .with_file_groups(groups)
        .with_projection_indices(projection.cloned())?
        .with_limit(limit)
        .build();
    Ok(DataSourceExec::from_data_source(config))
}

#[cfg(test)]
#[path = "native_scan/tests.rs"]
mod tests;

/// A scan of no files: no rows, the projected schema.
pub(crate) fn empty_scan(
    schema: &SchemaRef,
    projection: Option<&Vec<usize>>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let schema = match projection {
        Some(p) => Arc::new(schema.project(p)?),
        None => Arc::clone(schema),
    };
    Ok(Arc::new(EmptyExec::new(schema)))
}
