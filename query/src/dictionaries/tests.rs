use datafusion::arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::*;

#[test]
fn only_the_named_string_columns_become_dictionaries() {
    let schema = Schema::new(vec![
        Field::new(col::DST_POD, DataType::Utf8View, true),
        Field::new(col::VERDICT, DataType::Utf8, false),
        Field::new(col::SRC_IP, DataType::Utf8View, false),
        Field::new(col::PACKETS, DataType::Int64, false),
        // A name of the list that is not a string column stays as it is.
        Field::new(col::NODE, DataType::Int64, false),
    ]);
    let out = with_dictionaries(&schema);
    let types: Vec<&DataType> = out.fields().iter().map(|f| f.data_type()).collect();
    assert_eq!(
        types,
        [
            &dictionary_type(),
            &dictionary_type(),
            &DataType::Utf8View,
            &DataType::Int64,
            &DataType::Int64
        ]
    );
    assert!(out.field(0).is_nullable() && !out.field(1).is_nullable());
}

/// A file as the ingester writes it: strings dictionary-encoded, page index on.
fn file() -> (bytes::Bytes, RecordBatch) {
    let pods: ArrayRef = Arc::new(StringArray::from_iter(
        (0..5000).map(|i| (i % 7 != 0).then(|| format!("pod-{}", i % 40))),
    ));
    let ips: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..5000).map(|i| format!("10.0.{}.{}", i / 250, i % 250)),
    ));
    let packets: ArrayRef = Arc::new(Int64Array::from_iter_values(0..5000));
    let batch = RecordBatch::try_from_iter([
        (col::DST_POD, pods),
        (col::SRC_IP, ips),
        (col::PACKETS, packets),
    ])
    .unwrap();
    let props = WriterProperties::builder()
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(1000)
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    (out.into(), batch)
}

#[test]
fn hinted_files_read_names_as_dictionaries_with_the_same_values() {
    let (bytes, batch) = file();
    let metadata = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Optional)
        .parse_and_finish(&bytes)
        .unwrap();
    let hinted = hint_dictionaries(Arc::new(metadata)).unwrap();
    assert!(is_hinted(&hinted));
    // The page index survives; hinting twice is a no-op.
    assert!(hinted.column_index().is_some() && hinted.offset_index().is_some());
    assert!(Arc::ptr_eq(
        &hinted,
        &hint_dictionaries(Arc::clone(&hinted)).unwrap()
    ));
    let reader = ArrowReaderMetadata::try_new(hinted, Default::default()).unwrap();
    let types: Vec<DataType> = reader
        .schema()
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    assert_eq!(types, [dictionary_type(), DataType::Utf8, DataType::Int64]);
    let read: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::new_with_metadata(bytes, reader)
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let read = datafusion::arrow::compute::concat_batches(&read[0].schema(), &read).unwrap();
    let pods = read.column(0);
    assert_eq!(pods.data_type(), &dictionary_type());
    assert_eq!(pods.null_count(), batch.column(0).null_count());
    assert_eq!(&cast(pods, &DataType::Utf8).unwrap(), batch.column(0));
    assert_eq!(read.column(1), batch.column(1));
}
