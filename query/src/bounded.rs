//! Functions whose output size their arguments choose (`repeat('x', 2000000000)`,
//! `array_repeat(1, 1e9)`) allocate outside DataFusion's memory pool. Each is wrapped
//! so that a call whose output would pass a cap is refused before it allocates; the
//! number of such calls in one statement is bounded too
//! ([`crate::admission::MAX_SIZED_CALLS`]), so together they stay near the memory limit.

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::compute;
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result as DfResult, ScalarValue, resources_err};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// Names (and aliases) of the wrapped functions, counted by [`crate::admission::admit`].
pub const SIZED_FUNCTIONS: [&str; 9] = [
    "repeat",
    "lpad",
    "rpad",
    "array_repeat",
    "list_repeat",
    "array_resize",
    "list_resize",
    "range",
    "generate_series",
];

/// How a function's output size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Size {
    /// `repeat(s, n)`: the bytes of `s` times `n`.
    Repeat,
    /// `lpad`/`rpad(s, n)`: `n` characters (up to 4 bytes each).
    Pad,
    /// `array_repeat(v, n)`, `array_resize(a, n)`: `n` elements.
    Elements,
    /// `range`/`generate_series(start, stop[, step])` on integers: `(stop - start) / step` elements.
    Series,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: ScalarUDF,
    size: Size,
    max_bytes: usize,
}

/// Largest value (as f64) of an argument, ignoring nulls; `None` if not numeric.
fn max_of(v: &ColumnarValue) -> Option<f64> {
    match v {
        ColumnarValue::Scalar(s) => match s.cast_to(&DataType::Float64).ok()? {
            ScalarValue::Float64(x) => x,
            _ => None,
        },
        ColumnarValue::Array(a) => max_f64(a),
    }
}

fn max_f64(a: &ArrayRef) -> Option<f64> {
    let f = compute::cast(a, &DataType::Float64).ok()?;
    let f = f
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Float64Array>()?;
    compute::max(f)
}

fn min_of(v: &ColumnarValue) -> Option<f64> {
    match v {
        ColumnarValue::Scalar(_) => max_of(v),
        ColumnarValue::Array(a) => {
            let f = compute::cast(a, &DataType::Float64).ok()?;
            compute::min(
                f.as_any()
                    .downcast_ref::<datafusion::arrow::array::Float64Array>()?,
            )
        }
    }
}

/// Bytes of the largest value of an argument (strings: their length; else memory size).
fn value_bytes(v: &ColumnarValue) -> f64 {
    match v {
        ColumnarValue::Scalar(s) => s.size() as f64,
        ColumnarValue::Array(a) if a.is_empty() => 0.0,
        ColumnarValue::Array(a) => {
            let lengths = compute::kernels::length::length(a).ok();
            lengths
                .as_ref()
                .and_then(max_f64)
                .unwrap_or_else(|| a.get_array_memory_size() as f64 / a.len() as f64)
        }
    }
}

impl Bounded {
    /// Estimated output bytes of one call over `rows` rows.
    fn estimate(&self, args: &[ColumnarValue], rows: usize) -> f64 {
        let rows = if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            1.0
        } else {
            rows.max(1) as f64
        };
        let arg = |i: usize| args.get(i).and_then(max_of).unwrap_or(0.0).max(0.0);
        let per_row = match self.size {
            Size::Repeat => args.first().map_or(0.0, value_bytes) * arg(1),
            Size::Pad => 4.0 * arg(1),
            Size::Elements => 16.0 * arg(1),
            Size::Series => {
                // One argument: range(stop) from 0.
                let (start, stop, step) = match args.len() {
                    1 => (Some(0.0), args.first().and_then(max_of), Some(1.0)),
                    _ => (
                        args.first().and_then(min_of),
                        args.get(1).and_then(max_of),
                        args.get(2).map_or(Some(1.0), min_of),
                    ),
                };
                match (start, stop, step) {
                    (Some(a), Some(b), Some(s)) if s.abs() > 0.0 => 8.0 * ((b - a) / s).abs(),
                    _ => 0.0,
                }
            }
        };
        rows * per_row
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        self.inner.inner().schema_name(args)
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.inner().return_type(arg_types)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        self.inner.inner().return_field_from_args(args)
    }
    fn is_strict(&self) -> bool {
        self.inner.inner().is_strict()
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let bytes = self.estimate(&args.args, args.number_rows);
        if bytes > self.max_bytes as f64 {
            return resources_err!(
                "{}() would produce about {} MiB; at most {} MiB per call is allowed",
                self.inner.name(),
                (bytes / (1 << 20) as f64).ceil(),
                self.max_bytes >> 20
            );
        }
        self.inner.inner().invoke_with_args(args)
    }
    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> DfResult<ExprSimplifyResult> {
        self.inner.inner().simplify(args, info)
    }
    fn short_circuits(&self) -> bool {
        self.inner.inner().short_circuits()
    }
    fn evaluate_bounds(&self, input: &[&Interval]) -> DfResult<Interval> {
        self.inner.inner().evaluate_bounds(input)
    }
    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> DfResult<Option<Vec<Interval>>> {
        self.inner.inner().propagate_constraints(interval, inputs)
    }
    fn output_ordering(&self, inputs: &[ExprProperties]) -> DfResult<SortProperties> {
        self.inner.inner().output_ordering(inputs)
    }
    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> DfResult<bool> {
        self.inner.inner().preserves_lex_ordering(inputs)
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.inner().coerce_types(arg_types)
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// Replaces the sized functions registered in `ctx` with capped ones: under a memory
/// limit of `memory_bytes`, a call may produce a sixteenth of it (at least 1 MiB).
pub fn register(ctx: &SessionContext, memory_bytes: usize) {
    let max_bytes = (memory_bytes / 16).max(1 << 20);
    for (name, size) in [
        ("repeat", Size::Repeat),
        ("lpad", Size::Pad),
        ("rpad", Size::Pad),
        ("array_repeat", Size::Elements),
        ("array_resize", Size::Elements),
        ("range", Size::Series),
        ("generate_series", Size::Series),
    ] {
        let Ok(inner) = ctx.udf(name) else {
            continue;
        };
        ctx.register_udf(ScalarUDF::new_from_impl(Bounded {
            inner: inner.as_ref().clone(),
            size,
            max_bytes,
        }));
    }
}
