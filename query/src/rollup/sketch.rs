//! A mergeable latency sketch with bounded relative error, and the two aggregate
//! functions that make and read it in SQL:
//!
//! - `latency_sketch(x)`: integer samples → one sketch (Binary), per group;
//! - `sketch_quantile(sketch, q)`: sketches → their merged `q` quantile (Float64).
//!
//! Samples fall in logarithmic buckets: bucket `i` holds `(γ^(i-1), γ^i]` with
//! `γ = (1+α)/(1-α)`, and answers with `2γ^i/(γ+1)`, which is within `α` of every value
//! in it. Zero is its own bucket, negative values mirror positive ones, and the exact
//! minimum and maximum are kept (answers are clamped to them). A quantile interpolates
//! between the values at ranks `⌊q(n−1)⌋` and `⌊q(n−1)⌋+1` exactly like
//! `percentile_cont`, so it is within `α` of `percentile_cont` over the same samples.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, BinaryArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;

/// Relative accuracy of every quantile the sketch answers.
pub const RELATIVE_ACCURACY: f64 = 0.005;
const FORMAT: u8 = 1;

/// Counts per logarithmic bucket, plus the exact count, minimum and maximum.
///
/// Bucket keys: 0 is zero; `k > 0` is bucket `k - 1` of positive values; `k < 0` mirrors
/// it for negative ones (keys sort like their values). Counts are dense from the
/// smallest key seen: merging is adding vectors.
#[derive(Debug, Clone, Default)]
pub struct LatencySketch {
    offset: i32,
    counts: Vec<u64>,
    count: u64,
    min: i64,
    max: i64,
}

impl PartialEq for LatencySketch {
    fn eq(&self, other: &Self) -> bool {
        self.to_bytes() == other.to_bytes()
    }
}

fn gamma_ln() -> f64 {
    ((1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)).ln()
}

fn key_of(v: i64, ln_gamma: f64) -> i32 {
    if v == 0 {
        return 0;
    }
    let magnitude = v.unsigned_abs() as f64;
    // ceil(log_γ |v|) ≥ 0 for |v| ≥ 1; +1 keeps 0 for zero.
    let k = (magnitude.ln() / ln_gamma).ceil() as i32 + 1;
    if v > 0 { k } else { -k }
}

fn value_of(key: i32, ln_gamma: f64) -> f64 {
    if key == 0 {
        return 0.0;
    }
    let gamma = ln_gamma.exp();
    let i = f64::from(key.abs() - 1);
    let v = 2.0 * (i * ln_gamma).exp() / (gamma + 1.0);
    if key > 0 { v } else { -v }
}

impl LatencySketch {
    fn bump(&mut self, key: i32, n: u64) {
        if self.counts.is_empty() {
            self.offset = key;
            self.counts.push(0);
        } else if key < self.offset {
            let grow = (self.offset - key) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = key;
        } else if (key - self.offset) as usize >= self.counts.len() {
            self.counts.resize((key - self.offset) as usize + 1, 0);
        }
        self.counts[(key - self.offset) as usize] += n;
    }

    fn extremes(&mut self, min: i64, max: i64) {
        if self.count == 0 {
            (self.min, self.max) = (min, max);
        } else {
            self.min = self.min.min(min);
            self.max = self.max.max(max);
        }
    }

    pub fn add(&mut self, v: i64, ln_gamma: f64) {
        self.bump(key_of(v, ln_gamma), 1);
        self.extremes(v, v);
        self.count += 1;
    }

    pub fn merge(&mut self, other: &LatencySketch) {
        if other.count == 0 {
            return;
        }
        for (i, n) in other.counts.iter().enumerate() {
            if *n > 0 {
                self.bump(other.offset + i as i32, *n);
            }
        }
        self.extremes(other.min, other.max);
        self.count += other.count;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Non-empty buckets in key order.
    fn buckets(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (self.offset + i as i32, *n))
    }

    /// The value at 0-based rank `r` (`r < count`), clamped to the exact extremes.
    fn at_rank(&self, r: u64, ln_gamma: f64) -> f64 {
        if r == 0 {
            return self.min as f64;
        }
        if r + 1 == self.count {
            return self.max as f64;
        }
        let mut seen = 0;
        for (k, n) in self.buckets() {
            seen += n;
            if r < seen {
                return value_of(k, ln_gamma).clamp(self.min as f64, self.max as f64);
            }
        }
        self.max as f64
    }

    /// `percentile_cont(q)` of the samples, within the relative accuracy; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let ln_gamma = gamma_ln();
        let h = q.clamp(0.0, 1.0) * (self.count - 1) as f64;
        let k = h.floor() as u64;
        let lo = self.at_rank(k, ln_gamma);
        if k + 1 >= self.count {
            return Some(lo);
        }
        let hi = self.at_rank(k + 1, ln_gamma);
        Some(lo + (hi - lo) * (h - k as f64))
    }

    /// Format byte, count, min, max, then (key delta, samples) pairs, all varints.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + 4 * self.counts.len());
        out.push(FORMAT);
        put_varint(&mut out, self.count);
        put_varint(&mut out, zigzag(self.min));
        put_varint(&mut out, zigzag(self.max));
        put_varint(&mut out, self.buckets().count() as u64);
        let mut previous = 0i64;
        for (k, n) in self.buckets() {
            put_varint(&mut out, zigzag(i64::from(k) - previous));
            put_varint(&mut out, n);
            previous = i64::from(k);
        }
        out
    }

    /// Adds a serialized sketch (as [`Self::merge`] of its decoded form, without decoding
    /// it into a sketch first).
    pub fn merge_bytes(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut input = bytes;
        let format = *input.first().ok_or("empty latency sketch")?;
        if format != FORMAT {
            return Err(format!("latency sketch format {format}, expected {FORMAT}"));
        }
        input = &input[1..];
        let count = take_varint(&mut input)?;
        let min = unzigzag(take_varint(&mut input)?);
        let max = unzigzag(take_varint(&mut input)?);
        let len = take_varint(&mut input)?;
        // Decode fully before changing anything, so a corrupt sketch merges nothing.
        let mut pairs = Vec::with_capacity(len.min(1 << 16) as usize);
        let mut key = 0i64;
        let mut total = 0u64;
        for _ in 0..len {
            key += unzigzag(take_varint(&mut input)?);
            let n = take_varint(&mut input)?;
            let k = i32::try_from(key).map_err(|_| "latency sketch key out of range")?;
            if !(-(1 << 20)..=(1 << 20)).contains(&k) {
                return Err("latency sketch key out of range".into());
            }
            pairs.push((k, n));
            total = total.saturating_add(n);
        }
        if total != count || !input.is_empty() {
            return Err("corrupt latency sketch".into());
        }
        if count == 0 {
            return Ok(());
        }
        for (k, n) in pairs {
            self.bump(k, n);
        }
        self.extremes(min, max);
        self.count += count;
        Ok(())
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let mut sketch = LatencySketch::default();
        sketch.merge_bytes(bytes)?;
        Ok(sketch)
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(input: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = input.split_first().ok_or("truncated latency sketch")?;
        *input = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("latency sketch varint too long".into())
}

fn sketch_arg(array: &ArrayRef) -> DfResult<&BinaryArray> {
    array
        .as_binary_opt::<i32>()
        .ok_or_else(|| DataFusionError::Plan("sketch argument must be Binary".into()))
}

/// Merges every sketch of `array` into `into`.
fn merge_array(into: &mut LatencySketch, array: &ArrayRef) -> DfResult<()> {
    for bytes in sketch_arg(array)?.iter().flatten() {
        into.merge_bytes(bytes)
            .map_err(DataFusionError::Execution)?;
    }
    Ok(())
}

/// Accumulator of both functions: a sketch; `quantile` picks what `evaluate` returns.
#[derive(Debug)]
struct SketchAccumulator {
    sketch: LatencySketch,
    ln_gamma: f64,
    /// `None`: `latency_sketch` (input samples, output the sketch);
    /// `Some(q)`: `sketch_quantile` (input sketches, output the quantile).
    quantile: Option<f64>,
}

impl Accumulator for SketchAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        if self.quantile.is_some() {
            return merge_array(&mut self.sketch, &values[0]);
        }
        let samples = values[0]
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| DataFusionError::Plan("latency_sketch takes an Int64 column".into()))?;
        for v in samples.iter().flatten() {
            self.sketch.add(v, self.ln_gamma);
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        merge_array(&mut self.sketch, &states[0])
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(Some(self.sketch.to_bytes()))])
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        Ok(match self.quantile {
            None => ScalarValue::Binary(Some(self.sketch.to_bytes())),
            Some(q) => ScalarValue::Float64(self.sketch.quantile(q)),
        })
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.sketch.counts.capacity() * 8
    }
}

/// `latency_sketch(x)` or `sketch_quantile(sketch, q)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SketchUdaf {
    quantile: bool,
    signature: Signature,
}

fn literal_quantile(expr: &Arc<dyn PhysicalExpr>) -> DfResult<f64> {
    let empty = datafusion::arrow::record_batch::RecordBatch::new_empty(Arc::new(
        datafusion::arrow::datatypes::Schema::empty(),
    ));
    match expr.evaluate(&empty)? {
        datafusion::logical_expr::ColumnarValue::Scalar(ScalarValue::Float64(Some(q)))
            if (0.0..=1.0).contains(&q) =>
        {
            Ok(q)
        }
        _ => plan_err!("sketch_quantile: q must be a Float64 literal in [0, 1]"),
    }
}

impl AggregateUDFImpl for SketchUdaf {
    fn name(&self) -> &str {
        if self.quantile {
            "sketch_quantile"
        } else {
            "latency_sketch"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(if self.quantile {
            DataType::Float64
        } else {
            DataType::Binary
        })
    }

    fn accumulator(&self, args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        let quantile = if self.quantile {
            Some(literal_quantile(&args.exprs[1])?)
        } else {
            None
        };
        Ok(Box::new(SketchAccumulator {
            sketch: LatencySketch::default(),
            ln_gamma: gamma_ln(),
            quantile,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}_sketch", args.name),
            DataType::Binary,
            true,
        ))])
    }
}

/// The two functions, for `SessionContext::register_udaf`.
pub fn udafs() -> [AggregateUDF; 2] {
    [
        AggregateUDF::from(SketchUdaf {
            quantile: false,
            signature: Signature::exact(vec![DataType::Int64], Volatility::Immutable),
        }),
        AggregateUDF::from(SketchUdaf {
            quantile: true,
            signature: Signature::exact(
                vec![DataType::Binary, DataType::Float64],
                Volatility::Immutable,
            ),
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `percentile_cont` as DataFusion and DuckDB define it.
    fn exact(sorted: &[i64], q: f64) -> f64 {
        let h = q * (sorted.len() - 1) as f64;
        let k = h.floor() as usize;
        let lo = sorted[k] as f64;
        let hi = sorted[(k + 1).min(sorted.len() - 1)] as f64;
        lo + (hi - lo) * (h - k as f64)
    }

    #[test]
    fn quantiles_within_relative_accuracy_and_merge_like_one_sketch() {
        let ln_gamma = gamma_ln();
        // Heavy-tailed samples from 0 to tens of seconds, in two halves.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut samples = Vec::new();
        let (mut a, mut b, mut all) = Default::default();
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = if i % 97 == 0 {
                0
            } else {
                ((x % 1_000_000) as f64).powf(1.3) as i64 / 7
            };
            samples.push(v);
            let half: &mut LatencySketch = if i % 2 == 0 { &mut a } else { &mut b };
            half.add(v, ln_gamma);
            LatencySketch::add(&mut all, v, ln_gamma);
        }
        let mut merged = LatencySketch::from_bytes(&a.to_bytes()).unwrap();
        merged.merge(&LatencySketch::from_bytes(&b.to_bytes()).unwrap());
        assert_eq!(merged, all);
        samples.sort_unstable();
        for q in [0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let want = exact(&samples, q);
            let got = merged.quantile(q).unwrap();
            assert!(
                (got - want).abs() <= RELATIVE_ACCURACY * want.abs() + 1e-9,
                "q {q}: {got} vs {want}"
            );
        }
        assert_eq!(merged.count(), 20_000);
        assert_eq!(LatencySketch::default().quantile(0.5), None);
    }

    #[test]
    fn negative_values_and_corrupt_input() {
        let ln_gamma = gamma_ln();
        let mut s = LatencySketch::default();
        for v in [-1000, -10, 0, 10, 1000] {
            s.add(v, ln_gamma);
        }
        assert_eq!(s.quantile(0.0), Some(-1000.0));
        assert_eq!(s.quantile(0.5), Some(0.0));
        let q25 = s.quantile(0.25).unwrap();
        assert!((q25 + 10.0).abs() <= 10.0 * RELATIVE_ACCURACY, "{q25}");
        let bytes = s.to_bytes();
        assert_eq!(LatencySketch::from_bytes(&bytes).unwrap(), s);
        assert!(LatencySketch::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(LatencySketch::from_bytes(&[]).is_err());
        assert!(LatencySketch::from_bytes(&[9]).is_err());
    }
}
