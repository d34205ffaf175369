//! The stream's schema message checked before `fb_to_schema` converts it:
//! arrow-ipc 59 panics (`unwrap`, `panic!`) on missing or out-of-range parts of
//! a field's type instead of returning an error. Found by the mutation test and
//! the `ipc_decode` fuzz target.
//!
//! Types the flow schema does not use but arrow converts safely pass, so their
//! columns still get the schema error with the column named (422).

use arrow::ipc::{DateUnit, Endianness, Field, IntervalUnit, Precision, Schema, TimeUnit, Type};

use crate::error::{DecodeError, Result};

/// Deeper than any flow-schema column (a map of structs of strings is 3).
const MAX_DEPTH: usize = 16;

pub(crate) fn check(schema: Schema) -> Result<()> {
    let fields = schema
        .fields()
        .ok_or(DecodeError::Malformed("schema without fields"))?;
    for field in fields {
        check_field(field, schema.endianness(), 0)?;
    }
    Ok(())
}

fn check_field(field: Field, endianness: Endianness, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::Malformed("column nested too deep"));
    }
    if let Some(dictionary) = field.dictionary() {
        let index_ok = dictionary
            .indexType()
            .is_some_and(|i| matches!(i.bitWidth(), 8 | 16 | 32 | 64));
        if !index_ok {
            return Err(DecodeError::Malformed("invalid dictionary index type"));
        }
    }
    let children = field.children().map(|c| c.len());
    let units = [
        TimeUnit::SECOND,
        TimeUnit::MILLISECOND,
        TimeUnit::MICROSECOND,
        TimeUnit::NANOSECOND,
    ];
    let ok = match field.type_type() {
        Type::Null
        | Type::Bool
        | Type::Binary
        | Type::LargeBinary
        | Type::Utf8
        | Type::LargeUtf8
        | Type::Utf8View
        | Type::BinaryView => true,
        Type::Int => field
            .type_as_int()
            .is_some_and(|t| matches!(t.bitWidth(), 8 | 16 | 32 | 64)),
        Type::FloatingPoint => field.type_as_floating_point().is_some_and(|t| {
            matches!(
                t.precision(),
                Precision::HALF | Precision::SINGLE | Precision::DOUBLE
            )
        }),
        Type::FixedSizeBinary => field.type_as_fixed_size_binary().is_some(),
        Type::Date => field
            .type_as_date()
            .is_some_and(|t| matches!(t.unit(), DateUnit::DAY | DateUnit::MILLISECOND)),
        Type::Time => field.type_as_time().is_some_and(|t| {
            matches!(
                (t.bitWidth(), t.unit()),
                (32, TimeUnit::SECOND | TimeUnit::MILLISECOND)
                    | (64, TimeUnit::MICROSECOND | TimeUnit::NANOSECOND)
            )
        }),
        Type::Timestamp => field
            .type_as_timestamp()
            .is_some_and(|t| units.contains(&t.unit())),
        Type::Duration => field
            .type_as_duration()
            .is_some_and(|t| units.contains(&t.unit())),
        Type::Interval => field.type_as_interval().is_some_and(|t| {
            matches!(
                t.unit(),
                IntervalUnit::YEAR_MONTH | IntervalUnit::DAY_TIME | IntervalUnit::MONTH_DAY_NANO
            )
        }),
        Type::Decimal => {
            endianness != Endianness::Big
                && field.type_as_decimal().is_some_and(|t| {
                    u8::try_from(t.precision()).is_ok()
                        && i8::try_from(t.scale()).is_ok()
                        && matches!(t.bitWidth(), 32 | 64 | 128 | 256)
                })
        }
        Type::List | Type::LargeList | Type::ListView | Type::LargeListView => children == Some(1),
        Type::FixedSizeList => field.type_as_fixed_size_list().is_some() && children == Some(1),
        Type::Map => field.type_as_map().is_some() && children == Some(1),
        Type::Struct_ => true,
        // Unions, run-end encoding and unknown types: not flow data.
        _ => false,
    };
    if !ok {
        return Err(DecodeError::Malformed("invalid or unsupported column type"));
    }
    for child in field.children().into_iter().flatten() {
        check_field(child, endianness, depth + 1)?;
    }
    Ok(())
}
