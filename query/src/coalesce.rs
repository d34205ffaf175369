//! `coalesce` over arguments that cannot fail, evaluated on whole columns.
//!
//! DataFusion plans `coalesce(a, b, c)` as `CASE WHEN a IS NOT NULL THEN a WHEN b IS
//! NOT NULL THEN b ELSE c END`, so that an argument is only evaluated on the rows that
//! need it (it may fail elsewhere, as `1 / x`). That CASE filters the whole batch for
//! each branch and scatters the results back: grouping a pod's talkers by
//! `coalesce(peer_pod, peer_service, peer_ip)` spent more on it than on the grouping.
//! [`EagerCoalesce`] takes `coalesce`'s name in Flowlake's sessions; where every
//! argument is a column, a literal or a column cast to text (none can fail) and none is
//! a dictionary, it stays a function and is evaluated on whole columns — the first argument as it is when it
//! has no NULL, else each NULL filled from the next argument (arrow's `zip`).
//! Elsewhere it becomes DataFusion's CASE as before. Types, names and nullability are
//! DataFusion's `coalesce`'s own.

use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::compute::{is_not_null, kernels::zip::zip};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::Result;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

/// `coalesce`, evaluated eagerly where its arguments cannot fail.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct EagerCoalesce {
    /// DataFusion's `coalesce`: its types, and its CASE where arguments may fail.
    builtin: Arc<ScalarUDF>,
}

impl Default for EagerCoalesce {
    fn default() -> Self {
        EagerCoalesce {
            builtin: datafusion::functions::core::coalesce(),
        }
    }
}

/// An argument that evaluates without error on any row.
fn infallible(expr: &Expr) -> bool {
    match expr {
        Expr::Column(_) | Expr::Literal(..) => true,
        Expr::Alias(alias) => infallible(&alias.expr),
        Expr::Cast(cast) => {
            matches!(
                cast.field.data_type(),
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
            ) && matches!(cast.expr.as_ref(), Expr::Column(_))
        }
        _ => false,
    }
}

impl ScalarUDFImpl for EagerCoalesce {
    fn name(&self) -> &str {
        "coalesce"
    }

    fn signature(&self) -> &Signature {
        self.builtin.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.builtin.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.builtin.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.builtin.coerce_types(arg_types)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        // Dictionaries are left to the CASE: filling one from another merges them.
        let plain = |e: &Expr| {
            info.get_data_type(e)
                .is_ok_and(|t| !matches!(t, DataType::Dictionary(..)))
        };
        if args.len() > 1 && args.iter().all(|a| infallible(a) && plain(a)) {
            return Ok(ExprSimplifyResult::Original(args));
        }
        self.builtin.simplify(args, info)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let mut values = args.args.into_iter();
        let mut result = values.next().expect("coalesce has arguments");
        for next in values {
            let current = match result {
                ColumnarValue::Scalar(s) if s.is_null() => {
                    result = next;
                    continue;
                }
                ColumnarValue::Scalar(s) => return Ok(ColumnarValue::Scalar(s)),
                ColumnarValue::Array(a) => a,
            };
            if current.logical_null_count() == 0 {
                return Ok(ColumnarValue::Array(current));
            }
            let keep = is_not_null(&current)?;
            let filled = match &next {
                ColumnarValue::Array(a) => zip(&keep, &current, a)?,
                ColumnarValue::Scalar(s) => zip(&keep, &current, &s.to_scalar()?)?,
            };
            result = ColumnarValue::Array(filled);
        }
        match result {
            ColumnarValue::Scalar(s) => Ok(ColumnarValue::Array(s.to_array_of_size(rows)?)),
            array => Ok(array),
        }
    }
}

#[cfg(test)]
#[path = "coalesce/tests.rs"]
mod tests;
