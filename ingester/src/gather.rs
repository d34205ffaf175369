//! Copying a partition's rows out of the buffered batches, in sort order, one
//! column at a time.
//!
//! The rows of a file come from every buffered batch in an order unrelated to
//! where they sit, so each value is a random read; these loops do only that
//! read and its store per value (Arrow's `interleave` also builds nulls bit by
//! bit and checks both indices per value), and read ahead of the loop with a
//! prefetch, so the cache misses of a column overlap.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListArray, PrimitiveArray, StringArray, UInt32Array};
use arrow::buffer::{BooleanBuffer, NullBuffer, OffsetBuffer};
use arrow::compute::interleave;
use arrow::datatypes::{
    ArrowNativeType, ArrowPrimitiveType, DataType, Int8Type, Int16Type, Int32Type, Int64Type,
    TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow::error::ArrowError;

use crate::intern::{BatchRanks, RowIds};

/// Where a row of the partition is: `(batch, row)` in the buffered batches.
pub type RowRef = (u32, u32);

/// How many rows ahead the loops prefetch.
const AHEAD: usize = 64;

/// Hints the CPU to load `ptr`'s cache line; a no-op where there is no hint.
#[inline(always)]
fn prefetch<T>(ptr: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

/// An error unless every row `(b, r)` has `r < lens[b]`.
fn check_rows(lens: &[usize], rows: &[RowRef]) -> Result<(), ArrowError> {
    let outside = rows
        .iter()
        .any(|&(b, r)| lens.get(b as usize).is_none_or(|&len| r as usize >= len));
    match outside {
        true => Err(ArrowError::InvalidArgumentError(
            "gather: a row is outside the batches".into(),
        )),
        false => Ok(()),
    }
}

/// `out[i] = value(i, at(i))` for every row `i < n`, prefetching `at(i + AHEAD)`.
///
/// # Safety
/// For every `i < n`, `at(i)` must point at a readable `P` and `value(i, at(i))`
/// must be safe to call.
unsafe fn gather_with<P, T>(
    n: usize,
    at: impl Fn(usize) -> *const P,
    value: impl Fn(usize, *const P) -> T,
) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(n);
    let dst = out.spare_capacity_mut();
    let ahead = n.saturating_sub(AHEAD);
    // SAFETY: `i < n` indexes `dst` (capacity `n`); `at` is the caller's.
    unsafe {
        for i in 0..ahead {
            prefetch(at(i + AHEAD));
            dst.get_unchecked_mut(i).write(value(i, at(i)));
        }
        for i in ahead..n {
            dst.get_unchecked_mut(i).write(value(i, at(i)));
        }
        out.set_len(n);
    }
    out
}

/// `out[i] = sources[b][r]` for the `i`-th row `(b, r)`; an error if a row is
/// outside the sources.
fn gather_slices<T: Copy>(sources: &[&[T]], rows: &[RowRef]) -> Result<Vec<T>, ArrowError> {
    let lens: Vec<usize> = sources.iter().map(|s| s.len()).collect();
    check_rows(&lens, rows)?;
    let starts: Vec<*const T> = sources.iter().map(|s| s.as_ptr()).collect();
    // SAFETY: every row lies inside its source (checked above), so
    // `starts[b].add(r)` points at a value of `sources[b]`.
    Ok(unsafe {
        gather_with(
            rows.len(),
            |i| {
                let (b, r) = *rows.get_unchecked(i);
                starts.get_unchecked(b as usize).add(r as usize)
            },
            |_, p| *p,
        )
    })
}

/// `out[i] = tables[b][ids[b][r]]` for the `i`-th row `(b, r)`, `sources[b]`
/// being `(ids, table)` of batch `b` ([`BatchRanks`]: every id indexes its table).
fn gather_ranks<W: ArrowNativeType>(
    sources: &[(&[W], &[u32])],
    rows: &[RowRef],
) -> Result<Vec<u32>, ArrowError> {
    let lens: Vec<usize> = sources.iter().map(|s| s.0.len()).collect();
    check_rows(&lens, rows)?;
    let ids: Vec<*const W> = sources.iter().map(|s| s.0.as_ptr()).collect();
    let tables: Vec<*const u32> = sources.iter().map(|s| s.1.as_ptr()).collect();
    // SAFETY: every row lies inside its batch's ids (checked above), and every
    // id indexes its batch's table (`BatchRanks::new`).
    Ok(unsafe {
        gather_with(
            rows.len(),
            |i| {
                let (b, r) = *rows.get_unchecked(i);
                ids.get_unchecked(b as usize).add(r as usize)
            },
            |i, id| {
                let b = rows.get_unchecked(i).0;
                *tables.get_unchecked(b as usize).add((*id).as_usize())
            },
        )
    })
}

/// The validity of the rows, `None` when no source has nulls.
fn gather_nulls(sources: &[Option<&NullBuffer>], rows: &[RowRef]) -> Option<NullBuffer> {
    if sources
        .iter()
        .all(|n| n.is_none_or(|n| n.null_count() == 0))
    {
        return None;
    }
    let valid = BooleanBuffer::collect_bool(rows.len(), |i| {
        let (b, r) = rows[i];
        sources[b as usize].is_none_or(|n| n.is_valid(r as usize))
    });
    Some(NullBuffer::new(valid))
}

/// Dictionary keys of an interned column (each batch's rows as ids into its table
/// of ranks among the distinct values, 1-based; 0 is null): rank − 1, null where
/// the rank is 0.
pub fn gather_keys(batches: &[BatchRanks], rows: &[RowRef]) -> Result<UInt32Array, ArrowError> {
    macro_rules! sources {
        ($variant:ident) => {
            batches
                .iter()
                .map(|b| match b.ids() {
                    RowIds::$variant(ids) => Some((ids.as_slice(), b.table())),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
        };
    }
    let mut keys = if let Some(s) = sources!(U8) {
        gather_ranks(&s, rows)?
    } else if let Some(s) = sources!(U16) {
        gather_ranks(&s, rows)?
    } else if let Some(s) = sources!(U32) {
        gather_ranks(&s, rows)?
    } else {
        // Batches with ids of different widths (plain and dictionary-encoded).
        let lens: Vec<usize> = batches.iter().map(BatchRanks::len).collect();
        check_rows(&lens, rows)?;
        rows.iter()
            .map(|&(b, r)| batches[b as usize].rank(r as usize))
            .collect()
    };
    let nulls = keys
        .contains(&0)
        .then(|| NullBuffer::new(BooleanBuffer::collect_bool(keys.len(), |i| keys[i] != 0)));
    // Keys under nulls are 0.
    keys.iter_mut().for_each(|k| *k = k.saturating_sub(1));
    Ok(UInt32Array::new(keys.into(), nulls))
}

fn gather_primitive<T: ArrowPrimitiveType>(
    arrays: &[&dyn Array],
    rows: &[RowRef],
) -> Result<ArrayRef, ArrowError> {
    let typed: Vec<&PrimitiveArray<T>> = arrays.iter().map(|a| a.as_primitive::<T>()).collect();
    let sources: Vec<&[T::Native]> = typed.iter().map(|a| a.values().as_ref()).collect();
    let nulls: Vec<Option<&NullBuffer>> = typed.iter().map(|a| a.nulls()).collect();
    let values = gather_slices(&sources, rows)?;
    let data_type = arrays
        .first()
        .map_or(T::DATA_TYPE, |a| a.data_type().clone());
    let out = PrimitiveArray::<T>::new(values.into(), gather_nulls(&nulls, rows));
    Ok(Arc::new(out.with_data_type(data_type)))
}

/// Column `arrays` (one per buffered batch, all of one type) gathered in the
/// order of `rows`: integers and timestamps by the loops above, anything else by
/// Arrow's `interleave`.
pub fn gather_column(arrays: &[&dyn Array], rows: &[RowRef]) -> Result<ArrayRef, ArrowError> {
    let Some(first) = arrays.first() else {
        return Err(ArrowError::InvalidArgumentError(
            "gather: no batches".into(),
        ));
    };
    if arrays.iter().any(|a| a.data_type() != first.data_type()) {
        return interleave_rows(arrays, rows);
    }
    match first.data_type() {
        DataType::Int8 => gather_primitive::<Int8Type>(arrays, rows),
        DataType::Int16 => gather_primitive::<Int16Type>(arrays, rows),
        DataType::Int32 => gather_primitive::<Int32Type>(arrays, rows),
        DataType::Int64 => gather_primitive::<Int64Type>(arrays, rows),
        DataType::Timestamp(TimeUnit::Second, _) => {
            gather_primitive::<TimestampSecondType>(arrays, rows)
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            gather_primitive::<TimestampMillisecondType>(arrays, rows)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            gather_primitive::<TimestampMicrosecondType>(arrays, rows)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            gather_primitive::<TimestampNanosecondType>(arrays, rows)
        }
        DataType::List(item) if item.data_type() == &DataType::Utf8 => {
            gather_string_lists(arrays, rows)
        }
        _ => interleave_rows(arrays, rows),
    }
}

/// A list-of-strings column (the DNS answers: null on most rows) gathered: the
/// null rows cost a validity check, the others copy their strings' bytes.
fn gather_string_lists(arrays: &[&dyn Array], rows: &[RowRef]) -> Result<ArrayRef, ArrowError> {
    let lists: Vec<&ListArray> = arrays.iter().map(|a| a.as_list::<i32>()).collect();
    let lens: Vec<usize> = lists.iter().map(|l| l.len()).collect();
    check_rows(&lens, rows)?;
    let items: Vec<&StringArray> = lists
        .iter()
        .map(|l| l.values().as_string_opt::<i32>())
        .collect::<Option<_>>()
        .ok_or_else(|| ArrowError::InvalidArgumentError("list items are not strings".into()))?;
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    offsets.push(0i32);
    let (mut item_offsets, mut bytes, mut item_valid) = (vec![0i32], Vec::new(), Vec::new());
    let valid = BooleanBuffer::collect_bool(rows.len(), |i| {
        let (b, r) = (rows[i].0 as usize, rows[i].1 as usize);
        let list = lists[b];
        let valid = list.is_valid(r);
        if valid {
            let strings = items[b];
            let range = list.value_offsets()[r] as usize..list.value_offsets()[r + 1] as usize;
            for s in range {
                item_valid.push(strings.is_valid(s));
                bytes.extend_from_slice(strings.value(s).as_bytes());
                item_offsets.push(bytes.len() as i32);
            }
        }
        offsets.push(item_offsets.len() as i32 - 1);
        valid
    });
    let item_nulls = NullBuffer::from(item_valid);
    let strings = StringArray::try_new(
        OffsetBuffer::new(item_offsets.into()),
        bytes.into(),
        (item_nulls.null_count() > 0).then_some(item_nulls),
    )?;
    let DataType::List(item) = lists[0].data_type() else {
        unreachable!("checked by the caller");
    };
    let nulls = NullBuffer::new(valid);
    Ok(Arc::new(ListArray::try_new(
        Arc::clone(item),
        OffsetBuffer::new(offsets.into()),
        Arc::new(strings),
        (nulls.null_count() > 0).then_some(nulls),
    )?))
}

fn interleave_rows(arrays: &[&dyn Array], rows: &[RowRef]) -> Result<ArrayRef, ArrowError> {
    let indices: Vec<(usize, usize)> = rows
        .iter()
        .map(|&(b, r)| (b as usize, r as usize))
        .collect();
    interleave(arrays, &indices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Int16Array, Int64Array, ListBuilder, StringBuilder, TimestampMicrosecondArray,
    };

    /// Every kind of column gathers to what Arrow's `interleave` gives: nulls,
    /// sliced inputs, timestamps keeping their time zone, strings by fallback.
    #[test]
    fn equals_interleave() {
        let a: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(3), Some(4)]));
        let b: ArrayRef = Arc::new(Int64Array::from(vec![10, 20, 30]).slice(1, 2));
        let ts = |v: Vec<i64>| -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
        };
        let s: ArrayRef = Arc::new(StringArray::from(vec![
            Some("x"),
            None,
            Some("w"),
            Some("v"),
        ]));
        let t: ArrayRef = Arc::new(StringArray::from(vec!["y", "z"]));
        let small: ArrayRef = Arc::new(Int16Array::from(vec![7, 8, 9, 10]));
        let list = |rows: Vec<Option<Vec<Option<&str>>>>| -> ArrayRef {
            let mut b = ListBuilder::new(StringBuilder::new());
            for row in rows {
                match row {
                    Some(items) => {
                        for item in items {
                            b.values().append_option(item);
                        }
                        b.append(true);
                    }
                    None => b.append(false),
                }
            }
            Arc::new(b.finish())
        };
        let answers = list(vec![
            None,
            Some(vec![Some("10.0.0.1"), None]),
            Some(vec![]),
            Some(vec![Some("a"), Some("b"), Some("c")]),
        ]);
        let more = list(vec![Some(vec![Some("x")]), None]).slice(0, 2);
        let rows: Vec<RowRef> = vec![(1, 1), (0, 1), (0, 3), (1, 0), (0, 0)];
        let cases: [[&ArrayRef; 2]; 5] = [
            [&a, &b],
            [&ts(vec![1, 2, 3, 4]), &ts(vec![5, 6])],
            [&s, &t],
            [&small, &small],
            [&answers, &more],
        ];
        for [x, y] in cases {
            let arrays = [x.as_ref(), y.as_ref()];
            let indices: Vec<(usize, usize)> = rows
                .iter()
                .map(|&(b, r)| (b as usize, r as usize))
                .collect();
            let want = interleave(&arrays, &indices).unwrap();
            let got = gather_column(&arrays, &rows).unwrap();
            assert_eq!(got.as_ref(), want.as_ref(), "{}", x.data_type());
            assert_eq!(got.data_type(), x.data_type());
        }
        let arrays = [a.as_ref()];
        assert!(gather_column(&arrays, &[(0, 4)]).is_err());
        assert!(gather_column(&arrays, &[(1, 0)]).is_err());
        // Longer than the prefetch distance, rows from both ends of each batch.
        let long: Vec<RowRef> = (0..500u32).map(|i| (i % 2, i * 7 % 4)).collect();
        let arrays = [a.as_ref(), a.as_ref()];
        let indices: Vec<(usize, usize)> = long
            .iter()
            .map(|&(b, r)| (b as usize, r as usize))
            .collect();
        let want = interleave(&arrays, &indices).unwrap();
        assert_eq!(
            gather_column(&arrays, &long).unwrap().as_ref(),
            want.as_ref()
        );
    }

    /// Keys are ranks − 1 (null for rank 0) through each batch's ids and table,
    /// whatever the ids' widths.
    #[test]
    fn keys_are_ranks_minus_one_with_nulls() {
        let table: Arc<[u32]> = vec![0, 1, 2, 3].into();
        let wide = |ids: Vec<u32>| BatchRanks::new(RowIds::U32(ids), Arc::clone(&table));
        let narrow = |ids: Vec<u8>| BatchRanks::new(RowIds::U8(ids), vec![0, 3, 1, 2].into());
        let rows = [(1, 0), (0, 1), (0, 0), (0, 2)];
        let want = UInt32Array::from(vec![Some(2), None, Some(1), Some(0)]);
        // Both batches 4-byte ids, both 1-byte ids, one of each.
        let same = [wide(vec![2, 0, 1]), wide(vec![3])];
        let small = [narrow(vec![3, 0, 2]), narrow(vec![1])];
        let mixed = [wide(vec![2, 0, 1]), narrow(vec![1])];
        for batches in [&same, &small, &mixed] {
            assert_eq!(gather_keys(batches, &rows).unwrap(), want);
            let keys = gather_keys(batches, &[(0, 0), (1, 0)]).unwrap();
            assert_eq!(keys.null_count(), 0);
            assert_eq!(keys.values().as_ref(), &[1, 2]);
            assert!(gather_keys(batches, &[(0, 3)]).is_err());
            assert!(gather_keys(batches, &[(2, 0)]).is_err());
        }
        // Longer than the prefetch distance.
        let long: Vec<RowRef> = (0..300u32)
            .map(|i| (i % 2, (i / 2) % 3 * (1 - i % 2)))
            .collect();
        let got = gather_keys(&small, &long).unwrap();
        let want: Vec<Option<u32>> = long
            .iter()
            .map(|&(b, r)| small[b as usize].rank(r as usize).checked_sub(1))
            .collect();
        assert_eq!(got, UInt32Array::from(want));
    }
}
