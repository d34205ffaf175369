//! The DNS columns. Few flows carry DNS, so only the rows that do are appended
//! (densely), and `finish` spreads them over the batch, the other rows null: a
//! record without DNS costs nothing here but a few instructions per column at
//! `finish`.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, GenericListArray, Int32Builder, Int64Builder, ListBuilder, PrimitiveArray,
    StringArray, StringBuilder, new_null_array,
};
use arrow::buffer::{BooleanBuffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{ArrowPrimitiveType, Field};

use crate::record::DnsInfo;

pub(super) struct DnsColumns {
    /// Batch row of each DNS record appended, increasing.
    rows: Vec<u32>,
    id: Int32Builder,
    query: StringBuilder,
    qtype: StringBuilder,
    rcode: StringBuilder,
    answers: ListBuilder<StringBuilder>,
    latency_us: Int64Builder,
}

impl Default for DnsColumns {
    fn default() -> Self {
        DnsColumns {
            rows: Vec::new(),
            id: Int32Builder::new(),
            query: StringBuilder::new(),
            qtype: StringBuilder::new(),
            rcode: StringBuilder::new(),
            answers: ListBuilder::new(StringBuilder::new()),
            latency_us: Int64Builder::new(),
        }
    }
}

/// Spreads dense values over `n` rows: dense value `k` goes to row `rows[k]`.
struct Spread<'a> {
    rows: &'a [u32],
    n: usize,
    /// The rows that have a value.
    present: NullBuffer,
}

impl<'a> Spread<'a> {
    fn new(rows: &'a [u32], n: usize) -> Self {
        let present = Self::valid(rows, n, |_| true);
        Spread { rows, n, present }
    }

    fn valid(rows: &[u32], n: usize, dense_valid: impl Fn(usize) -> bool) -> NullBuffer {
        let mut valid = vec![false; n];
        for (k, &row) in rows.iter().enumerate() {
            valid[row as usize] = dense_valid(k);
        }
        NullBuffer::new(BooleanBuffer::from(valid))
    }

    /// Validity over the batch: the rows that have a value, and the value is valid.
    fn nulls(&self, dense: Option<&NullBuffer>) -> NullBuffer {
        match dense {
            None => self.present.clone(),
            Some(d) => Self::valid(self.rows, self.n, |k| d.is_valid(k)),
        }
    }

    fn primitive<T: ArrowPrimitiveType>(&self, dense: &PrimitiveArray<T>) -> ArrayRef {
        let mut values = vec![T::Native::default(); self.n];
        for (k, &row) in self.rows.iter().enumerate() {
            values[row as usize] = dense.values()[k];
        }
        Arc::new(PrimitiveArray::<T>::new(
            ScalarBuffer::from(values),
            Some(self.nulls(dense.nulls())),
        ))
    }

    /// Offsets over the batch: rows without a value are empty.
    fn offsets(&self, dense: &OffsetBuffer<i32>) -> OffsetBuffer<i32> {
        let mut out = vec![0; self.n + 1];
        let (mut filled, mut end) = (0, 0);
        for (k, &row) in self.rows.iter().enumerate() {
            let row = row as usize;
            // Rows since the last value are empty: they end where it ended.
            out[filled..=row].fill(end);
            end = dense[k + 1];
            out[row + 1] = end;
            filled = row + 2;
        }
        out[filled..].fill(end);
        // Built from the dense offsets, which start at 0 and never decrease.
        OffsetBuffer::new(ScalarBuffer::from(out))
    }

    fn strings(&self, dense: &StringArray) -> ArrayRef {
        let offsets = self.offsets(dense.offsets());
        let nulls = self.nulls(dense.nulls());
        // SAFETY: the offsets are the dense array's, each repeated for the empty rows
        // between values, so they stay in bounds and on the same character
        // boundaries of the same (valid UTF-8) values.
        Arc::new(unsafe {
            StringArray::new_unchecked(offsets, dense.values().clone(), Some(nulls))
        })
    }

    fn lists(&self, dense: &GenericListArray<i32>, field: Arc<Field>) -> ArrayRef {
        let offsets = self.offsets(dense.offsets());
        let nulls = self.nulls(dense.nulls());
        Arc::new(GenericListArray::new(
            field,
            offsets,
            dense.values().clone(),
            Some(nulls),
        ))
    }
}

impl DnsColumns {
    /// Appends the DNS message of batch row `row` (rows in increasing order).
    pub(super) fn append(&mut self, row: usize, d: &DnsInfo) {
        let row = u32::try_from(row).expect("batch under 4G rows");
        debug_assert!(self.rows.last().is_none_or(|&last| last < row));
        self.rows.push(row);
        self.id.append_value(i32::from(d.id));
        self.query.append_option(d.query.as_deref());
        self.qtype.append_option(d.qtype.as_deref());
        self.rcode.append_option(d.rcode.as_deref());
        for a in &d.answers {
            self.answers.values().append_value(a);
        }
        self.answers.append(true);
        self.latency_us
            .append_option(d.latency_us.map(|v| i64::try_from(v).unwrap_or(i64::MAX)));
    }

    /// Pushes the six columns, `n` rows long, in schema order; the builder is empty
    /// afterwards.
    pub(super) fn finish_into(&mut self, n: usize, out: &mut Vec<ArrayRef>) {
        let (id, query, qtype, rcode) = (
            self.id.finish(),
            self.query.finish(),
            self.qtype.finish(),
            self.rcode.finish(),
        );
        let (answers, latency) = (self.answers.finish(), self.latency_us.finish());
        if self.rows.is_empty() {
            for dense in [
                &id as &dyn Array,
                &query,
                &qtype,
                &rcode,
                &answers,
                &latency,
            ] {
                out.push(new_null_array(dense.data_type(), n));
            }
            return;
        }
        let spread = Spread::new(&self.rows, n);
        let item = match answers.data_type() {
            arrow::datatypes::DataType::List(item) => Arc::clone(item),
            other => unreachable!("answers are a list, not {other}"),
        };
        out.push(spread.primitive(&id));
        out.push(spread.strings(&query));
        out.push(spread.strings(&qtype));
        out.push(spread.strings(&rcode));
        out.push(spread.lists(&answers, item));
        out.push(spread.primitive(&latency));
        self.rows.clear();
    }
}
