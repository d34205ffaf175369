//! One partition's rows of a flush, in file order, still in the buffered
//! batches: the Parquet writer asks for each column a row group at a time
//! ([`crate::parquet::FileColumns`]), and the rows are gathered then, into
//! buffers the size of a row group that the allocator hands out again for the
//! next column, instead of a copy of the whole partition.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, DictionaryArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::error::{IngestError, Result};
use crate::gather::{RowRef, gather_column, gather_keys};
use crate::intern::Interned;
use crate::parquet::FileColumns;

/// One partition's rows, sorted ([`crate::sort`]). String and map columns come
/// as dictionaries (`Dictionary(UInt32, _)`) over the flush's interned values
/// (strings in sorted order), which [`crate::parquet::write_file`] writes
/// without hashing or comparing a value per row.
#[derive(Debug)]
pub struct PartitionRun {
    pub date: String,
    pub hour: String,
    /// `(batch, row)` of each row, in file order.
    pub(crate) rows: Vec<RowRef>,
    pub(crate) batches: Arc<[RecordBatch]>,
    /// The flush's interned columns, shared by its partitions.
    pub(crate) interned: Arc<Vec<Option<Interned>>>,
}

impl PartitionRun {
    pub fn num_rows(&self) -> usize {
        self.rows.len()
    }

    /// The schema of [`PartitionRun::column`]'s columns.
    pub fn schema(&self) -> SchemaRef {
        let schema = match self.batches.first() {
            Some(b) => b.schema(),
            None => flowlake_schemas::flow_schema(),
        };
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(c, f)| match self.interned(c) {
                Some(i) => f.as_ref().clone().with_data_type(DataType::Dictionary(
                    Box::new(DataType::UInt32),
                    Box::new(i.values.data_type().clone()),
                )),
                None => f.as_ref().clone(),
            })
            .collect();
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
    }

    fn interned(&self, c: usize) -> Option<&Interned> {
        self.interned.get(c).and_then(Option::as_ref)
    }

    /// Column `c` of the rows `rows` (positions in file order): interned columns
    /// as dictionary keys over the flush's values, the others as they are.
    pub fn column(&self, c: usize, rows: Range<usize>) -> Result<ArrayRef> {
        let refs = self
            .rows
            .get(rows)
            .ok_or_else(|| IngestError::Internal(format!("column {c}: rows out of range")))?;
        match self.interned(c) {
            Some(interned) => {
                let keys = gather_keys(&interned.batches, refs)?;
                let values = Arc::clone(&interned.values);
                if values.len() >= u32::MAX as usize {
                    return Err(IngestError::Internal("dictionary too large".into()));
                }
                // SAFETY: `try_new` would accept these keys: every key not under a
                // null is a rank − 1 of `values` (ranks run from 1 to `values.len()`),
                // and keys under nulls are not checked (they are 0).
                Ok(Arc::new(unsafe {
                    DictionaryArray::new_unchecked(keys, values)
                }))
            }
            None => {
                let arrays: Vec<&dyn Array> =
                    self.batches.iter().map(|b| b.column(c).as_ref()).collect();
                Ok(gather_column(&arrays, refs)?)
            }
        }
    }

    /// Every row, gathered: [`PartitionRun::column`] of all rows.
    pub fn batch(&self) -> Result<RecordBatch> {
        let schema = self.schema();
        let columns = (0..schema.fields().len())
            .map(|c| self.column(c, 0..self.num_rows()))
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// Every row with plain columns, in the flow schema.
    pub fn plain_batch(&self) -> Result<RecordBatch> {
        let schema = flowlake_schemas::flow_schema();
        let batch = self.batch()?;
        let columns = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(f, c)| match c.as_any_dictionary_opt() {
                Some(d) if !matches!(d.values().data_type(), DataType::Utf8) => {
                    arrow::compute::take(
                        d.values(),
                        &arrow::compute::cast(d.keys(), &DataType::UInt32)?,
                        None,
                    )
                }
                _ => arrow::compute::cast(c, f.data_type()),
            })
            .collect::<std::result::Result<Vec<_>, ArrowError>>()?;
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// The columns of a data file of `target` (the table's Arrow schema, with the
    /// partition columns, which files do not hold, in `partitions`): each a
    /// column of this run by name, cast to the table's type where it differs
    /// (the distinct values only, for dictionaries).
    pub fn file_columns(
        &self,
        target: &Schema,
        partitions: &[&str],
    ) -> Result<(SchemaRef, RunFileColumns<'_>)> {
        let own = self.schema();
        let mut fields = Vec::new();
        let mut sources = Vec::new();
        for field in target.fields() {
            if partitions.contains(&field.name().as_str()) {
                continue;
            }
            let c = own.index_of(field.name()).map_err(|_| {
                IngestError::Internal(format!("flush batch has no column {}", field.name()))
            })?;
            let convert = match self.interned(c) {
                Some(i) if i.values.data_type() != field.data_type() => {
                    Convert::Values(arrow::compute::cast(&i.values, field.data_type())?)
                }
                Some(_) => Convert::None,
                None if own.field(c).data_type() == field.data_type() => Convert::None,
                None => Convert::Cast(field.data_type().clone()),
            };
            fields.push(Arc::clone(field));
            sources.push((c, convert));
        }
        Ok((
            Arc::new(Schema::new(fields)),
            RunFileColumns { run: self, sources },
        ))
    }
}

/// How a run's column becomes the table's.
enum Convert {
    None,
    /// A dictionary's values, already cast.
    Values(ArrayRef),
    Cast(DataType),
}

/// A run's columns as a data file of the table holds them.
pub struct RunFileColumns<'a> {
    run: &'a PartitionRun,
    sources: Vec<(usize, Convert)>,
}

impl FileColumns for RunFileColumns<'_> {
    fn num_rows(&self) -> usize {
        self.run.num_rows()
    }

    fn column(&self, field: usize, rows: Range<usize>) -> parquet::errors::Result<ArrayRef> {
        let (c, convert) = self.sources.get(field).ok_or_else(|| {
            parquet::errors::ParquetError::General(format!("no file column {field}"))
        })?;
        let column = self
            .run
            .column(*c, rows)
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
        Ok(match convert {
            Convert::None => column,
            Convert::Values(values) => column
                .as_any_dictionary_opt()
                .expect("interned columns are dictionaries")
                .with_values(Arc::clone(values)),
            Convert::Cast(to) => arrow::compute::cast(&column, to)?,
        })
    }
}
