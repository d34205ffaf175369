//! `column = 'text'` on a dictionary column, compared on the keys.
//!
//! Names, verdicts and observation points are read as `Dictionary(Int32, Utf8)`
//! ([`crate::dictionaries`]). Arrow compares such a column with a literal by comparing
//! every dictionary value and then gathering one result bit per row through its key
//! (`take` on a boolean array): ≈ 10 % of a question that filters a pod's received
//! traffic out of 6 M rows. [`KeyEquality`] finds the literal's key in the dictionary
//! once per dictionary (kept while batches share it) and compares the keys with it,
//! a plain integer comparison. [`DictionaryEquality`] puts it in place of `=` and
//! `<>` between a dictionary column and a text literal in every `FilterExec`, after
//! filter pushdown (the Parquet source keeps the original predicate for pruning).
//!
//! Answers are unchanged, NULLs included: a NULL key gives NULL; dictionaries that hold
//! a NULL value or the literal more than once take arrow's own comparison.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, DictionaryArray, PrimitiveArray,
    RecordBatch, Scalar,
};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::kernels::cmp;
use datafusion::arrow::datatypes::{
    ArrowDictionaryKeyType, ArrowNativeType, DataType, Int8Type, Int16Type, Int32Type, Int64Type,
    Schema, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;

use crate::selective_first::rewrite_filters;

/// The dictionary last seen and the key of the literal in it (`None`: absent).
struct Seen {
    /// Keeps the dictionary's buffers alive, so their addresses name it.
    _values: ArrayRef,
    identity: Vec<usize>,
    key: Option<usize>,
}

/// `column = literal` (or `<>`) on a dictionary column of text, compared on keys.
pub struct KeyEquality {
    column: Arc<dyn PhysicalExpr>,
    literal: String,
    negated: bool,
    seen: Mutex<Option<Seen>>,
}

impl KeyEquality {
    pub fn new(column: Arc<dyn PhysicalExpr>, literal: String, negated: bool) -> Self {
        KeyEquality {
            column,
            literal,
            negated,
            seen: Mutex::new(None),
        }
    }

    fn operator(&self) -> &'static str {
        if self.negated { "<>" } else { "=" }
    }
}

/// Addresses and lengths of an array's buffers: equal while it is the same array.
fn identity(values: &ArrayRef) -> Vec<usize> {
    let data = values.to_data();
    let mut id = vec![data.len(), data.offset()];
    id.extend(data.buffers().iter().map(|b| b.as_ptr() as usize));
    id
}

/// Where `literal` is in `values`: `Ok(None)` absent, `Err(())` when the keys cannot
/// answer alone (a NULL value, the literal twice, values that are not text).
fn find(values: &ArrayRef, literal: &str) -> Result<Option<usize>, ()> {
    if values.null_count() > 0 {
        return Err(());
    }
    let mut found = None;
    let mut check = |i: usize, v: &str| {
        if v == literal {
            if found.is_some() {
                return Err(());
            }
            found = Some(i);
        }
        Ok(())
    };
    match values.data_type() {
        DataType::Utf8 => {
            for (i, v) in values.as_string::<i32>().iter().enumerate() {
                check(i, v.unwrap_or_default())?;
            }
        }
        DataType::LargeUtf8 => {
            for (i, v) in values.as_string::<i64>().iter().enumerate() {
                check(i, v.unwrap_or_default())?;
            }
        }
        DataType::Utf8View => {
            for (i, v) in values.as_string_view().iter().enumerate() {
                check(i, v.unwrap_or_default())?;
            }
        }
        _ => return Err(()),
    }
    Ok(found)
}

/// The comparison of `keys` with `key` (`None`: no row holds the literal).
fn compare_keys<K: ArrowPrimitiveType>(
    keys: &PrimitiveArray<K>,
    key: Option<usize>,
    negated: bool,
) -> Result<BooleanArray> {
    let Some(key) = key.and_then(K::Native::from_usize) else {
        // Every non-NULL row differs from the literal.
        let bits = BooleanBuffer::new_unset(keys.len());
        let bits = if negated { !&bits } else { bits };
        return Ok(BooleanArray::new(bits, keys.nulls().cloned()));
    };
    let key = Scalar::new(PrimitiveArray::<K>::new(vec![key].into(), None));
    Ok(if negated {
        cmp::neq(keys, &key)?
    } else {
        cmp::eq(keys, &key)?
    })
}

impl KeyEquality {
    fn on_keys<K: ArrowDictionaryKeyType>(
        &self,
        dictionary: &DictionaryArray<K>,
    ) -> Option<Result<BooleanArray>> {
        let values = dictionary.values();
        let id = identity(values);
        let mut seen = self.seen.lock().expect("dictionary cache lock");
        let key = match seen.as_ref() {
            Some(s) if s.identity == id => s.key,
            _ => {
                let key = find(values, &self.literal).ok()?;
                *seen = Some(Seen {
                    _values: Arc::clone(values),
                    identity: id,
                    key,
                });
                key
            }
        };
        drop(seen);
        Some(compare_keys(dictionary.keys(), key, self.negated))
    }

    /// `None`: not a dictionary the keys can answer for.
    fn try_keys(&self, array: &ArrayRef) -> Option<Result<BooleanArray>> {
        let DataType::Dictionary(key, _) = array.data_type() else {
            return None;
        };
        match key.as_ref() {
            DataType::Int8 => self.on_keys(array.as_dictionary::<Int8Type>()),
            DataType::Int16 => self.on_keys(array.as_dictionary::<Int16Type>()),
            DataType::Int32 => self.on_keys(array.as_dictionary::<Int32Type>()),
            DataType::Int64 => self.on_keys(array.as_dictionary::<Int64Type>()),
            DataType::UInt8 => self.on_keys(array.as_dictionary::<UInt8Type>()),
            DataType::UInt16 => self.on_keys(array.as_dictionary::<UInt16Type>()),
            DataType::UInt32 => self.on_keys(array.as_dictionary::<UInt32Type>()),
            DataType::UInt64 => self.on_keys(array.as_dictionary::<UInt64Type>()),
            _ => None,
        }
    }
}

impl PhysicalExpr for KeyEquality {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.column.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let array = self.column.evaluate(batch)?.into_array(batch.num_rows())?;
        if let Some(answer) = self.try_keys(&array) {
            return Ok(ColumnarValue::Array(Arc::new(answer?)));
        }
        // Arrow's comparison, with the literal in the column's own type.
        let literal = ScalarValue::Utf8(Some(self.literal.clone()));
        let literal = literal.cast_to(array.data_type())?.to_scalar()?;
        let answer = if self.negated {
            cmp::neq(&array, &literal)?
        } else {
            cmp::eq(&array, &literal)?
        };
        Ok(ColumnarValue::Array(Arc::new(answer)))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.column]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(Arc::new(KeyEquality::new(
            children.swap_remove(0),
            self.literal.clone(),
            self.negated,
        )))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.column.fmt_sql(f)?;
        write!(
            f,
            " {} '{}'",
            self.operator(),
            self.literal.replace('\'', "''")
        )
    }
}

impl fmt::Display for KeyEquality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} (keys)",
            self.column,
            self.operator(),
            self.literal
        )
    }
}

impl fmt::Debug for KeyEquality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEquality")
            .field("column", &self.column)
            .field("literal", &self.literal)
            .field("negated", &self.negated)
            .finish()
    }
}

impl PartialEq for KeyEquality {
    fn eq(&self, other: &Self) -> bool {
        self.column.eq(&other.column)
            && self.literal == other.literal
            && self.negated == other.negated
    }
}

impl Eq for KeyEquality {}

impl Hash for KeyEquality {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.column.hash(state);
        self.literal.hash(state);
        self.negated.hash(state);
    }
}

/// The text of a literal, in whatever string or dictionary type it was planned in.
fn text(v: &ScalarValue) -> Option<&str> {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Some(s),
        ScalarValue::Dictionary(_, v) => text(v),
        _ => None,
    }
}

/// `expr` as a [`KeyEquality`] when it compares a dictionary column of `schema` with a
/// text literal by `=` or `<>`.
fn key_equality(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Option<Arc<dyn PhysicalExpr>> {
    let binary = expr.downcast_ref::<BinaryExpr>()?;
    let negated = match binary.op() {
        Operator::Eq => false,
        Operator::NotEq => true,
        _ => return None,
    };
    let (l, r) = (binary.left(), binary.right());
    let (column, literal) = match (l.downcast_ref::<Column>(), r.downcast_ref::<Literal>()) {
        (Some(_), Some(lit)) => (l, lit),
        _ => (r, l.downcast_ref::<Literal>()?),
    };
    column.downcast_ref::<Column>()?;
    let DataType::Dictionary(_, value) = column.data_type(schema).ok()? else {
        return None;
    };
    if !matches!(
        value.as_ref(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        return None;
    }
    let text = text(literal.value())?.to_string();
    Some(Arc::new(KeyEquality::new(
        Arc::clone(column),
        text,
        negated,
    )))
}

/// Puts [`KeyEquality`] in every `FilterExec` predicate where it applies.
#[derive(Debug, Default)]
pub struct DictionaryEquality;

impl PhysicalOptimizerRule for DictionaryEquality {
    fn name(&self) -> &str {
        "DictionaryEquality"
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        rewrite_filters(plan, |filter| {
            let schema = filter.input().schema();
            let predicate = Arc::clone(filter.predicate()).transform_up(|e| {
                Ok(match key_equality(&e, &schema) {
                    Some(keys) => Transformed::yes(keys),
                    None => Transformed::no(e),
                })
            })?;
            Ok(predicate.transformed.then_some(predicate.data))
        })
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
#[path = "dictionary_equality/tests.rs"]
mod tests;
