//! Numeric columns: values pushed into a `Vec`, validity tracked only once a null
//! has been seen. Cheaper per row than Arrow's general-purpose builders.

use arrow::array::PrimitiveArray;
use arrow::buffer::{NullBuffer, ScalarBuffer};
use arrow::datatypes::ArrowPrimitiveType;

/// A numeric column that may hold nulls.
pub(super) struct Numbers<T: ArrowPrimitiveType> {
    values: Vec<T::Native>,
    /// Validity of every row, kept from the first null on (empty: all valid).
    valid: Vec<bool>,
}

impl<T: ArrowPrimitiveType> Numbers<T> {
    pub(super) fn with_capacity(n: usize) -> Self {
        Numbers {
            values: Vec::with_capacity(n),
            valid: Vec::new(),
        }
    }

    #[inline]
    pub(super) fn push(&mut self, v: T::Native) {
        self.values.push(v);
        if !self.valid.is_empty() {
            self.valid.push(true);
        }
    }

    #[inline]
    pub(super) fn push_option(&mut self, v: Option<T::Native>) {
        match v {
            Some(v) => self.push(v),
            None => self.push_null(),
        }
    }

    #[inline]
    pub(super) fn push_null(&mut self) {
        if self.valid.is_empty() {
            self.valid.reserve(self.values.capacity());
            self.valid.resize(self.values.len(), true);
        }
        self.values.push(T::Native::default());
        self.valid.push(false);
    }

    /// The column; the builder keeps its capacity.
    pub(super) fn finish(&mut self) -> PrimitiveArray<T> {
        let cap = self.values.capacity();
        let values = std::mem::replace(&mut self.values, Vec::with_capacity(cap));
        let nulls = (!self.valid.is_empty()).then(|| NullBuffer::from(self.valid.as_slice()));
        self.valid.clear();
        PrimitiveArray::new(ScalarBuffer::from(values), nulls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;
    use arrow::datatypes::Int32Type;

    #[test]
    fn nulls_appear_only_where_pushed() {
        let mut n = Numbers::<Int32Type>::with_capacity(4);
        n.push(1);
        n.push_option(None);
        n.push_option(Some(3));
        let a = n.finish();
        assert_eq!(a.iter().collect::<Vec<_>>(), [Some(1), None, Some(3)]);
        n.push(7);
        let b = n.finish();
        assert!(
            b.nulls().is_none(),
            "validity does not leak into the next batch"
        );
        assert_eq!(b.value(0), 7);
    }
}
