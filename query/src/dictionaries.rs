//! The flows table's few-valued string columns (names of namespaces, pods, workloads,
//! services, nodes; verdicts, protocols, observation points, DNS codes) read as Arrow
//! dictionaries.
//!
//! The ingester writes every string column dictionary-encoded, and its dictionary
//! pages hold each file's few hundred distinct names. Read as `Utf8View`, every row's
//! string is rebuilt from the page's dictionary (≈ 25 % of a per-pod scan); read as
//! `Dictionary(Int32, Utf8)` the rows stay keys, and `pod = 'x'` compares the literal
//! with the dictionary's values once and then selects rows by key (Arrow's comparison
//! kernels on dictionaries). The Parquet reader decodes a column as a dictionary when
//! the file's Arrow schema says so, so [`FlowsReaderFactory`] hands the reader each
//! file's metadata with those columns' types changed in its `ARROW:schema` entry
//! (files without one get it from their Parquet schema); nothing in the files changes.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::metadata::{
    CachedParquetMetaData, DFParquetMetadata,
};
use datafusion::execution::cache::cache_manager::{CachedFileMetadataEntry, FileMetadataCache};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use flowlake_schemas::col;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::{ObjectMeta, ObjectStore};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ARROW_SCHEMA_META_KEY, encode_arrow_schema, parquet_to_arrow_schema};
use parquet::errors::{ParquetError, Result as ParquetResult};
use parquet::file::metadata::{FileMetaData, KeyValue, PageIndexPolicy, ParquetMetaData};

/// The string columns read as dictionaries: few distinct values per file.
pub const DICTIONARY_COLUMNS: [&str; 24] = [
    col::CLUSTER,
    col::NODE,
    col::OBSERVATION_POINT,
    col::INTERFACE,
    col::DIRECTION,
    col::PROTOCOL,
    col::VERDICT,
    col::DROP_REASON,
    col::DNS_QTYPE,
    col::DNS_RCODE,
    col::SRC_NAMESPACE,
    col::SRC_POD,
    col::SRC_WORKLOAD,
    col::SRC_WORKLOAD_KIND,
    col::SRC_NODE,
    col::SRC_SERVICE,
    col::SRC_ZONE,
    col::DST_NAMESPACE,
    col::DST_POD,
    col::DST_WORKLOAD,
    col::DST_WORKLOAD_KIND,
    col::DST_NODE,
    col::DST_SERVICE,
    col::DST_ZONE,
];

/// The type those columns are read as.
pub fn dictionary_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// `field` with the dictionary type if it is one of [`DICTIONARY_COLUMNS`] and a string.
fn as_dictionary(field: &FieldRef) -> Option<FieldRef> {
    (DICTIONARY_COLUMNS.contains(&field.name().as_str()) && is_string(field.data_type())).then(
        || {
            Arc::new(
                Field::clone(field)
                    .with_data_type(dictionary_type())
                    .with_dict_is_ordered(false),
            )
        },
    )
}

/// `schema` with [`DICTIONARY_COLUMNS`] (where they are strings) as dictionaries.
pub fn with_dictionaries(schema: &Schema) -> Schema {
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|f| as_dictionary(f).unwrap_or_else(|| Arc::clone(f)))
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// Marks metadata [`hint_dictionaries`] has rewritten (in memory only).
const HINTED_KEY: &str = "flowlake.query.dictionaries";

pub(crate) fn is_hinted(metadata: &ParquetMetaData) -> bool {
    metadata
        .file_metadata()
        .key_value_metadata()
        .is_some_and(|kv| kv.iter().any(|e| e.key == HINTED_KEY))
}

/// `metadata` whose `ARROW:schema` entry reads [`DICTIONARY_COLUMNS`] as dictionaries;
/// the same `Arc` when no column changes.
pub fn hint_dictionaries(metadata: Arc<ParquetMetaData>) -> ParquetResult<Arc<ParquetMetaData>> {
    if is_hinted(&metadata) {
        return Ok(metadata);
    }
    let file = metadata.file_metadata();
    let arrow = parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())?;
    if !arrow.fields().iter().any(|f| as_dictionary(f).is_some()) {
        return Ok(metadata);
    }
    let hint = encode_arrow_schema(&with_dictionaries(&arrow));
    let mut entries: Vec<KeyValue> = file
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .filter(|e| e.key != ARROW_SCHEMA_META_KEY)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    entries.push(KeyValue::new(ARROW_SCHEMA_META_KEY.to_string(), hint));
    entries.push(KeyValue::new(HINTED_KEY.to_string(), "1".to_string()));
    let file = FileMetaData::new(
        file.version(),
        file.num_rows(),
        file.created_by().map(str::to_string),
        Some(entries),
        file.schema_descr_ptr(),
        file.column_orders().cloned(),
    );
    let mut rest = Arc::unwrap_or_clone(metadata).into_builder();
    let row_groups = rest.take_row_groups();
    let column_index = rest.take_column_index();
    let offset_index = rest.take_offset_index();
    Ok(Arc::new(
        ParquetMetaData::new(file, row_groups)
            .into_builder()
            .set_column_index(column_index)
            .set_offset_index(offset_index)
            .build(),
    ))
}

/// The flows scan's reader factory: its readers give each file's metadata with the page
/// index, [`hint_dictionaries`]'d when `dictionaries`, kept in the runtime's file
/// metadata cache.
///
/// DataFusion's own cached reader caches the footer without the page index (the opener
/// asks for none) and its opener then reads and decodes the page index of every file
/// on every query, uncached (≈ 40 % of opening a flows file, measured in
/// docs/BENCHMARKS.md). Here the first open of a file reads footer and page index
/// together and caches them, hinted; later opens decode nothing.
#[derive(Debug)]
pub struct FlowsReaderFactory {
    store: Arc<dyn ObjectStore>,
    cache: Arc<FileMetadataCache>,
    /// Reads the data pages (and counts their bytes in the scan's metrics).
    inner: Arc<dyn ParquetFileReaderFactory>,
    dictionaries: bool,
}

impl FlowsReaderFactory {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        cache: Arc<FileMetadataCache>,
        dictionaries: bool,
    ) -> Self {
        let inner = Arc::new(CachedParquetFileReaderFactory::new(
            Arc::clone(&store),
            Arc::clone(&cache),
        ));
        FlowsReaderFactory {
            store,
            cache,
            inner,
            dictionaries,
        }
    }
}

impl ParquetFileReaderFactory for FlowsReaderFactory {
    fn create_reader(
        &self,
        partition_index: usize,
        partitioned_file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> datafusion::error::Result<Box<dyn AsyncFileReader + Send>> {
        let file = partitioned_file.object_meta.clone();
        let inner = self.inner.create_reader(
            partition_index,
            partitioned_file,
            metadata_size_hint,
            metrics,
        )?;
        Ok(Box::new(DictionaryReader {
            inner,
            metadata: FileMetadataOnce {
                store: Arc::clone(&self.store),
                cache: Arc::clone(&self.cache),
                file,
                metadata_size_hint,
                dictionaries: self.dictionaries,
            },
        }))
    }
}

struct DictionaryReader {
    inner: Box<dyn AsyncFileReader + Send>,
    metadata: FileMetadataOnce,
}

/// One file's hinted metadata: from the cache, or read and cached.
struct FileMetadataOnce {
    store: Arc<dyn ObjectStore>,
    cache: Arc<FileMetadataCache>,
    file: ObjectMeta,
    metadata_size_hint: Option<usize>,
    dictionaries: bool,
}

impl FileMetadataOnce {
    /// This file's hinted metadata from the cache, if it is there and current.
    fn cached(&self) -> Option<Arc<ParquetMetaData>> {
        let entry = self.cache.get(&self.file.location)?;
        if !entry.is_valid_for(&self.file) {
            return None;
        }
        let metadata = entry
            .file_metadata
            .as_any()
            .downcast_ref::<CachedParquetMetaData>()?
            .parquet_metadata();
        let complete = metadata.column_index().is_some()
            && metadata.offset_index().is_some()
            && is_hinted(metadata) == self.dictionaries;
        complete.then(|| Arc::clone(metadata))
    }

    async fn get(&self) -> ParquetResult<Arc<ParquetMetaData>> {
        if let Some(metadata) = self.cached() {
            return Ok(metadata);
        }
        let metadata = DFParquetMetadata::new(self.store.as_ref(), &self.file)
            .with_metadata_size_hint(self.metadata_size_hint)
            .with_page_index_policy(Some(PageIndexPolicy::Optional))
            .fetch_metadata()
            .await
            .map_err(|e| ParquetError::External(Box::new(e)))?;
        let metadata = if self.dictionaries {
            hint_dictionaries(metadata)?
        } else {
            metadata
        };
        self.cache.put(
            &self.file.location,
            CachedFileMetadataEntry::new(
                self.file.clone(),
                Arc::new(CachedParquetMetaData::new(Arc::clone(&metadata))),
            ),
        );
        Ok(metadata)
    }
}

impl AsyncFileReader for DictionaryReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, ParquetResult<Bytes>> {
        self.inner.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, ParquetResult<Vec<Bytes>>> {
        self.inner.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, ParquetResult<Arc<ParquetMetaData>>> {
        self.metadata.get().boxed()
    }
}

#[cfg(test)]
#[path = "dictionaries/tests.rs"]
mod tests;
