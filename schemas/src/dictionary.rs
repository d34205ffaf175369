//! Dictionary-encoded columns on the wire: collectors send each batch's distinct
//! strings and distinct label maps once, and every row as a key into them. The
//! flow schema's types stay what they are; a string or map-of-strings column may
//! arrive as `Dictionary(<integer>, <its type>)` instead.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Int8Array, Int16Array, Int32Array, MapArray,
    UInt32Array,
};
use arrow::compute::{cast, take};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;

use crate::error::Result;
use crate::fold_hash::{FoldState, MapInterner};
use crate::schema::flow_schema;
use crate::validate::{batch_of, conform_batch, same_shape};

/// Whether `got` is a column of type `want` sent dictionary-encoded: a string
/// column as `Dictionary(<integer>, Utf8)`, a map (label) column as
/// `Dictionary(<integer>, Map)` of the same shape.
pub fn is_dictionary_encoded(want: &DataType, got: &DataType) -> bool {
    let DataType::Dictionary(key, value) = got else {
        return false;
    };
    key.is_dictionary_key_type()
        && match (want, value.as_ref()) {
            (DataType::Utf8, DataType::Utf8) => true,
            (DataType::Map(..), DataType::Map(..)) => same_shape(want, value),
            _ => false,
        }
}

/// A dictionary-encoded column of type `want` (see [`is_dictionary_encoded`])
/// with its values in exactly that type (nested field names normalised).
pub(crate) fn conform_dictionary(want: &DataType, column: &ArrayRef) -> Result<ArrayRef> {
    let dict = column
        .as_any_dictionary_opt()
        .expect("checked by is_dictionary_encoded");
    if dict.values().data_type() == want {
        return Ok(Arc::clone(column));
    }
    Ok(dict.with_values(cast(dict.values(), want)?))
}

/// The batch as collectors send it: top-level string columns and maps of strings
/// dictionary-encoded (the narrowest keys that fit: `Int8`, `Int16` past 128
/// distinct values, `Int32` past 32,768), so
/// each distinct string or label map of the batch is sent, decompressed and
/// validated once.
pub fn dictionary_encode(batch: &RecordBatch) -> Result<RecordBatch> {
    let dictionary = |key: DataType| DataType::Dictionary(Box::new(key), Box::new(DataType::Utf8));
    let fields_and_columns = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| {
            let encoded = match c.data_type() {
                // Narrower keys overflow (a cast error) past 128 and 32,768
                // distinct values.
                DataType::Utf8 => cast(c, &dictionary(DataType::Int8))
                    .or_else(|_| cast(c, &dictionary(DataType::Int16)))
                    .or_else(|_| cast(c, &dictionary(DataType::Int32)))?,
                DataType::Map(..) => match encode_map(c.as_map())? {
                    Some(encoded) => encoded,
                    None => Arc::clone(c),
                },
                _ => Arc::clone(c),
            };
            let field = f
                .as_ref()
                .clone()
                .with_data_type(encoded.data_type().clone());
            Ok((field, encoded))
        })
        .collect::<Result<Vec<_>>>()?;
    batch_of(fields_and_columns, batch.schema().metadata())
}

/// A map of strings as a dictionary of its distinct maps (whole maps compared,
/// entries in order), `None` for maps of other types.
fn encode_map(maps: &MapArray) -> Result<Option<ArrayRef>> {
    let mut first: Vec<u32> = Vec::new();
    let mut interner = MapInterner::new(FoldState::new());
    let Some(ids) = interner.intern(maps, |r| first.push(r as u32)) else {
        return Ok(None);
    };
    // Keys are ids − 1; null rows (id 0) are masked by the keys' nulls.
    let rows: Vec<u32> = ids.iter().map(|id| id.saturating_sub(1)).collect();
    let distinct = take(maps, &UInt32Array::from(first), None)?;
    let nulls = maps.logical_nulls();
    // Ids run below `distinct.len()`, so the casts below do not wrap.
    let encoded: ArrayRef = if distinct.len() <= 1 << 7 {
        let keys = Int8Array::new(rows.iter().map(|&k| k as i8).collect(), nulls);
        Arc::new(DictionaryArray::try_new(keys, distinct)?)
    } else if distinct.len() <= 1 << 15 {
        let keys = Int16Array::new(rows.iter().map(|&k| k as i16).collect(), nulls);
        Arc::new(DictionaryArray::try_new(keys, distinct)?)
    } else {
        let keys = Int32Array::new(rows.iter().map(|&k| k as i32).collect(), nulls);
        Arc::new(DictionaryArray::try_new(keys, distinct)?)
    };
    Ok(Some(encoded))
}

/// The inverse of [`dictionary_encode`]: the batch conformed, every column in
/// exactly the flow schema's type (dictionary-encoded columns plain again).
pub fn plain_columns(batch: &RecordBatch) -> Result<RecordBatch> {
    let batch = conform_batch(batch)?;
    let expected = flow_schema();
    let columns = expected
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| Ok(cast(c, f.data_type())?))
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(expected, columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{MapBuilder, StringArray, StringBuilder};
    use arrow::datatypes::{Field, Schema};

    /// Collectors' wire form: string columns as dictionaries with the narrowest
    /// keys that fit (Int8, Int16, else Int32), the same values.
    #[test]
    fn strings_keep_values_and_widen_keys_when_needed() {
        let column = |distinct: usize| -> ArrayRef {
            let values: StringArray = (0..40_000)
                .map(|i| Some(format!("v{}", i % distinct)))
                .collect();
            Arc::new(values)
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("many", DataType::Utf8, true),
            Field::new("some", DataType::Utf8, true),
            Field::new("few", DataType::Utf8, true),
        ]));
        let columns = vec![column(40_000), column(129), column(128)];
        let batch = RecordBatch::try_new(schema, columns).unwrap();
        let wire = dictionary_encode(&batch).unwrap();
        assert_eq!(key_type(&wire, 0), DataType::Int32);
        assert_eq!(key_type(&wire, 1), DataType::Int16);
        assert_eq!(key_type(&wire, 2), DataType::Int8);
        for c in 0..3 {
            let back = cast(wire.column(c), &DataType::Utf8).unwrap();
            assert_eq!(back.as_ref(), batch.column(c).as_ref());
        }
    }

    fn key_type(batch: &RecordBatch, c: usize) -> DataType {
        match batch.column(c).data_type() {
            DataType::Dictionary(k, _) => k.as_ref().clone(),
            other => panic!("{other}"),
        }
    }

    /// `n` rows of label maps: `distinct` different maps (one with a null value,
    /// one empty), every fifth row null, sliced so offsets do not start at 0.
    fn labels(n: usize, distinct: usize) -> ArrayRef {
        let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for i in 0..n + 3 {
            let m = i % distinct;
            if i % 5 == 4 {
                b.append(false).unwrap();
                continue;
            }
            if m != 1 {
                b.keys().append_value("app");
                b.values().append_value(format!("app-{m}"));
                b.keys().append_value("tier");
                match m {
                    2 => b.values().append_null(),
                    _ => b.values().append_value("backend"),
                }
            }
            b.append(true).unwrap();
        }
        Arc::new(b.finish().slice(3, n))
    }

    /// Label maps are sent as dictionaries of the batch's distinct maps, rows as
    /// keys (nulls kept), and cast back to the same maps.
    #[test]
    fn maps_become_dictionaries_of_distinct_maps() {
        for distinct in [1, 3, 2_000, 45_000] {
            let maps = labels(50_000, distinct);
            let schema = Arc::new(Schema::new(vec![Field::new(
                "labels",
                maps.data_type().clone(),
                true,
            )]));
            let batch = RecordBatch::try_new(schema, vec![Arc::clone(&maps)]).unwrap();
            let wire = dictionary_encode(&batch).unwrap();
            let dict = wire.column(0).as_any_dictionary();
            let present: std::collections::HashSet<usize> = (3..50_003)
                .filter(|i| i % 5 != 4)
                .map(|i| i % distinct)
                .collect();
            assert_eq!(dict.values().len(), present.len(), "{distinct}");
            // Distinct maps past 32,768 need Int32 keys (45,000 has about 36,000).
            let want_key = match present.len() {
                0..=128 => DataType::Int8,
                129..=32_768 => DataType::Int16,
                _ => DataType::Int32,
            };
            assert_eq!(want_key == DataType::Int32, distinct == 45_000);
            assert_eq!(key_type(&wire, 0), want_key);
            assert!(is_dictionary_encoded(
                maps.data_type(),
                wire.column(0).data_type()
            ));
            assert_eq!(wire.column(0).logical_null_count(), maps.null_count());
            let back = cast(wire.column(0), maps.data_type()).unwrap();
            assert_eq!(back.as_ref(), maps.as_ref(), "{distinct}");
        }
    }

    #[test]
    fn dictionaries_of_other_types_are_not_flow_columns() {
        let map = labels(1, 1).data_type().clone();
        let dict = |v: DataType| DataType::Dictionary(Box::new(DataType::Int16), Box::new(v));
        assert!(is_dictionary_encoded(
            &DataType::Utf8,
            &dict(DataType::Utf8)
        ));
        assert!(is_dictionary_encoded(&map, &dict(map.clone())));
        assert!(!is_dictionary_encoded(
            &DataType::Int64,
            &dict(DataType::Int64)
        ));
        assert!(!is_dictionary_encoded(&map, &dict(DataType::Utf8)));
        assert!(!is_dictionary_encoded(&DataType::Utf8, &dict(map.clone())));
        let float_keys =
            DataType::Dictionary(Box::new(DataType::Float32), Box::new(DataType::Utf8));
        assert!(!is_dictionary_encoded(&DataType::Utf8, &float_keys));
    }
}
