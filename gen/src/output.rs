//! Writing generated records as Hive-partitioned Parquet or Arrow IPC files.
//!
//! The partition columns (`date`, `hour`) are in the `date=…/hour=…` directories
//! only, not in the files, as Hive-partitioned readers (pyarrow, pandas, DuckDB,
//! polars, Spark) expect: they type those columns from the path (`hour=18` as an
//! integer), and a file column of the same name as a string clashes with that.
//! [`read_parquet`] reads a generated file back in the flow schema.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatch;
use flowlake_schemas::{FlowBatchBuilder, PARTITION_COLUMNS, PartitionPath, flow_schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rand::{RngExt, SeedableRng, rngs::StdRng};

use crate::config::{GenConfig, OutputFormat};
use crate::error::{GenError, Result};
use crate::topology::Topology;
use crate::workload::{HourPlan, HourStream};

/// What a run wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenSummary {
    pub rows: u64,
    pub files: Vec<PathBuf>,
    pub bytes: u64,
}

enum Sink {
    Parquet(ArrowWriter<File>),
    Arrow(FileWriter<File>),
}

impl Sink {
    fn create(path: &Path, format: OutputFormat) -> Result<Self> {
        let io = |source| GenError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = File::create(path).map_err(io)?;
        Ok(match format {
            OutputFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
                    .set_max_row_group_row_count(Some(1 << 20))
                    .build();
                Sink::Parquet(ArrowWriter::try_new(file, file_schema(), Some(props))?)
            }
            OutputFormat::Arrow => Sink::Arrow(FileWriter::try_new(file, &file_schema())?),
        })
    }

    /// Writes a flow-schema batch without its partition columns.
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let batch = batch.project(&file_columns())?;
        match self {
            Sink::Parquet(w) => w.write(&batch)?,
            Sink::Arrow(w) => w.write(&batch)?,
        }
        Ok(())
    }

    fn close(self) -> Result<()> {
        match self {
            Sink::Parquet(w) => {
                w.close()?;
            }
            Sink::Arrow(mut w) => w.finish()?,
        }
        Ok(())
    }
}

/// Indices of the flow schema's columns a generated file holds (all but the
/// partition columns, which come last).
fn file_columns() -> Vec<usize> {
    (0..flow_schema().fields().len() - PARTITION_COLUMNS.len()).collect()
}

/// The schema of a generated file: the flow schema (with its metadata) without
/// the partition columns.
pub fn file_schema() -> SchemaRef {
    Arc::new(
        flow_schema()
            .project(&file_columns())
            .expect("indices of the flow schema"),
    )
}

/// Reads a generated Parquet file back in the flow schema: its columns plus
/// `date` and `hour` from its `date=…/hour=…` directory.
pub fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>> {
    let partition = path
        .parent()
        .and_then(|hour| {
            let date = hour.parent()?.file_name()?.to_str()?;
            format!("{date}/{}", hour.file_name()?.to_str()?)
                .parse::<PartitionPath>()
                .ok()
        })
        .ok_or_else(|| GenError::NotGenerated(path.to_path_buf()))?;
    let values = [partition.date_value(), partition.hour_value()];
    let file = File::open(path).map_err(|source| GenError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let schema: Arc<Schema> = flow_schema();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let mut columns = batch.columns().to_vec();
        for v in &values {
            columns
                .push(Arc::new(StringArray::from(vec![v.as_str(); batch.num_rows()])) as ArrayRef);
        }
        out.push(RecordBatch::try_new(Arc::clone(&schema), columns)?);
    }
    Ok(out)
}

/// Writes the records of one hour partition into one or more files.
fn write_hour(cfg: &GenConfig, topo: &Arc<Topology>, plan: HourPlan) -> Result<GenSummary> {
    let partition = PartitionPath::for_timestamp(plan.from);
    let dir = cfg.out.join(partition.to_string());
    let mut summary = GenSummary::default();
    let mut builder = FlowBatchBuilder::with_capacity(cfg.batch_rows);
    let mut sink: Option<(Sink, PathBuf, usize)> = None;
    let mut stream = HourStream::new(Arc::clone(topo), plan).peekable();
    while stream.peek().is_some() {
        for r in stream.by_ref().take(cfg.batch_rows) {
            builder.append(&r);
        }
        let batch = builder.finish();
        if sink.is_none() {
            let path = dir.join(format!(
                "part-{:05}.{}",
                summary.files.len(),
                cfg.format.extension()
            ));
            sink = Some((Sink::create(&path, cfg.format)?, path, 0));
        }
        let (s, _, rows) = sink.as_mut().expect("opened above");
        s.write(&batch)?;
        *rows += batch.num_rows();
        summary.rows += batch.num_rows() as u64;
        if *rows >= cfg.rows_per_file {
            let (s, path, _) = sink.take().expect("open");
            s.close()?;
            summary.files.push(path);
        }
    }
    if let Some((s, path, _)) = sink {
        s.close()?;
        summary.files.push(path);
    }
    for f in &summary.files {
        summary.bytes += std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
    }
    Ok(summary)
}

/// The hour plans of a run, each with its own seed so hours can be generated in
/// parallel and still come out the same.
pub fn hour_plans(cfg: &GenConfig) -> Vec<HourPlan> {
    let end = cfg.start + cfg.duration;
    let mut seeds = StdRng::seed_from_u64(cfg.seed);
    let mut plans = Vec::new();
    let mut from = cfg.start;
    while from < end {
        let to = PartitionPath::for_timestamp(from).end().min(end);
        plans.push(HourPlan {
            from,
            to,
            interval: cfg.interval,
            rate: cfg.rate,
            offset_secs: (from - cfg.start).num_milliseconds() as f64 / 1000.0,
            seed: seeds.random(),
            drop_share: cfg.drop_share,
        });
        from = to;
    }
    plans
}

/// Generates the whole workload into `cfg.out`.
pub fn generate(cfg: &GenConfig) -> Result<GenSummary> {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let topo = Arc::new(Topology::generate(&cfg.topology, &mut rng));
    let plans = hour_plans(cfg);
    let next = AtomicUsize::new(0);
    let results: Vec<Result<Vec<(usize, GenSummary)>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..cfg.threads.clamp(1, plans.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(plan) = plans.get(i) else {
                            return Ok(done);
                        };
                        done.push((i, write_hour(cfg, &topo, plan.clone())?));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("generator thread panicked"))
            .collect()
    });
    let mut parts = Vec::new();
    for r in results {
        parts.extend(r?);
    }
    parts.sort_by_key(|(i, _)| *i);
    let mut total = GenSummary::default();
    for (_, s) in parts {
        total.rows += s.rows;
        total.bytes += s.bytes;
        total.files.extend(s.files);
    }
    Ok(total)
}
