//! Validation of incoming batches against the flow schema, and the rules for
//! evolving the schema.
//!
//! Evolution rule: a later version may only *add nullable columns*. So a batch from
//! an older writer (missing some nullable columns) is accepted and conformed; a
//! column this build does not know, a missing required column, or a changed type is
//! refused with the column named.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;

use crate::dictionary::{conform_dictionary, is_dictionary_encoded};
use crate::error::{Result, SchemaError};
use crate::schema::{SCHEMA_VERSION, SCHEMA_VERSION_KEY, flow_schema};

fn is_utc(tz: &Option<Arc<str>>) -> bool {
    matches!(tz.as_deref(), Some("UTC" | "+00:00" | "Z" | "Etc/UTC"))
}

/// Whether two types are the same apart from the names of nested fields (list
/// items, map entries), which differ between Arrow, Parquet and Delta writers.
pub fn same_shape(a: &DataType, b: &DataType) -> bool {
    use DataType::*;
    match (a, b) {
        (List(x), List(y)) | (LargeList(x), LargeList(y)) => {
            same_shape(x.data_type(), y.data_type())
        }
        (Map(x, _), Map(y, _)) => same_shape(x.data_type(), y.data_type()),
        (Struct(x), Struct(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|(f, g)| same_shape(f.data_type(), g.data_type()))
        }
        (Timestamp(u1, tz1), Timestamp(u2, tz2)) => u1 == u2 && is_utc(tz1) && is_utc(tz2),
        _ => a == b,
    }
}

fn check_version(schema: &Schema) -> Result<()> {
    if let Some(found) = schema.metadata().get(SCHEMA_VERSION_KEY) {
        match found.parse::<u32>() {
            Ok(v) if v <= SCHEMA_VERSION => {}
            _ => {
                return Err(SchemaError::UnsupportedVersion {
                    found: found.clone(),
                    supported: SCHEMA_VERSION,
                });
            }
        }
    }
    Ok(())
}

/// Checks an incoming schema against the flow schema: every column known and of the
/// expected type, every required column present. Columns may come in any order.
pub fn validate_schema(incoming: &Schema) -> Result<()> {
    check_version(incoming)?;
    let expected = flow_schema();
    for field in incoming.fields() {
        let Ok(want) = expected.field_with_name(field.name()) else {
            return Err(SchemaError::UnknownColumn {
                column: field.name().clone(),
                version: SCHEMA_VERSION,
            });
        };
        if !same_shape(want.data_type(), field.data_type())
            && !is_dictionary_encoded(want.data_type(), field.data_type())
        {
            return Err(SchemaError::TypeMismatch {
                column: field.name().clone(),
                expected: want.data_type().clone(),
                actual: field.data_type().clone(),
            });
        }
    }
    for want in expected.fields() {
        if !want.is_nullable() && incoming.field_with_name(want.name()).is_err() {
            return Err(SchemaError::MissingColumn {
                column: want.name().clone(),
            });
        }
    }
    Ok(())
}

/// Validates a batch: its schema, and no nulls in required columns.
pub fn validate_batch(batch: &RecordBatch) -> Result<()> {
    validate_schema(&batch.schema())?;
    let expected = flow_schema();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let required = expected
            .field_with_name(field.name())
            .map(|f| !f.is_nullable())
            .unwrap_or(false);
        // Logical nulls: a dictionary key may point at a null value.
        let nulls = column.logical_null_count();
        if required && nulls > 0 {
            return Err(SchemaError::NullsInRequiredColumn {
                column: field.name().clone(),
                nulls,
            });
        }
    }
    Ok(())
}

/// Validates a batch and returns it in the flow schema: columns in schema order,
/// missing nullable columns filled with nulls, nested field names normalised.
/// Columns sent dictionary-encoded stay dictionaries (the schema of the returned
/// batch says so; their values in exactly the flow schema's type); everything
/// else has exactly the flow schema's type.
pub fn conform_batch(batch: &RecordBatch) -> Result<RecordBatch> {
    validate_batch(batch)?;
    let expected = flow_schema();
    let fields_and_columns = expected
        .fields()
        .iter()
        .map(|want| {
            let column = match batch.column_by_name(want.name()) {
                Some(c) if c.data_type() == want.data_type() => Arc::clone(c),
                Some(c) if is_dictionary_encoded(want.data_type(), c.data_type()) => {
                    conform_dictionary(want.data_type(), c)?
                }
                Some(c) => cast(c, want.data_type())?,
                None => new_null_array(want.data_type(), batch.num_rows()),
            };
            let field = want
                .as_ref()
                .clone()
                .with_data_type(column.data_type().clone());
            Ok((field, column))
        })
        .collect::<Result<Vec<_>>>()?;
    batch_of(fields_and_columns, expected.metadata())
}

/// Whether `schema` is what [`conform_batch`] returns: every column of the flow
/// schema, in its order, of its type or dictionary-encoded.
pub fn is_conformed(schema: &Schema) -> bool {
    let expected = flow_schema();
    schema.fields().len() == expected.fields().len()
        && schema
            .fields()
            .iter()
            .zip(expected.fields())
            .all(|(got, want)| {
                got.name() == want.name()
                    && (got.data_type() == want.data_type()
                        || is_dictionary_encoded(want.data_type(), got.data_type()))
            })
}

/// A batch of `(field, column)` pairs with the schema metadata `metadata`.
pub(crate) fn batch_of(
    fields_and_columns: Vec<(Field, ArrayRef)>,
    metadata: &std::collections::HashMap<String, String>,
) -> Result<RecordBatch> {
    let (fields, columns): (Vec<Field>, Vec<ArrayRef>) = fields_and_columns.into_iter().unzip();
    let schema = Schema::new_with_metadata(fields, metadata.clone());
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

/// Checks that `new` is a compatible evolution of `old`: every old column kept with
/// the same type and nullability, and every added column nullable.
pub fn check_evolution(old: &Schema, new: &Schema) -> Result<()> {
    for f in old.fields() {
        let Ok(g) = new.field_with_name(f.name()) else {
            return Err(SchemaError::IncompatibleEvolution(format!(
                "column {} was removed",
                f.name()
            )));
        };
        if !same_shape(f.data_type(), g.data_type()) {
            return Err(SchemaError::IncompatibleEvolution(format!(
                "column {}: type changed from {} to {}",
                f.name(),
                f.data_type(),
                g.data_type()
            )));
        }
        if f.is_nullable() != g.is_nullable() {
            return Err(SchemaError::IncompatibleEvolution(format!(
                "column {}: nullability changed",
                f.name()
            )));
        }
    }
    let added: Vec<&Arc<Field>> = new
        .fields()
        .iter()
        .filter(|g| old.field_with_name(g.name()).is_err())
        .collect();
    if let Some(g) = added.iter().find(|g| !g.is_nullable()) {
        return Err(SchemaError::IncompatibleEvolution(format!(
            "added column {} must be nullable",
            g.name()
        )));
    }
    Ok(())
}
