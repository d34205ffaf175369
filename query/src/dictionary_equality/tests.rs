use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, DictionaryArray, Int32Array, RecordBatch, StringArray, UInt8Array,
};
use datafusion::arrow::compute::kernels::cmp;
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, UInt8Type};
use datafusion::datasource::MemTable;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;

use super::KeyEquality;
use crate::coop::compare;

fn batch(column: ArrayRef) -> RecordBatch {
    let schema = Schema::new(vec![Field::new("pod", column.data_type().clone(), true)]);
    RecordBatch::try_new(Arc::new(schema), vec![column]).unwrap()
}

/// What `KeyEquality` answers and what arrow's comparison answers, for `=` and `<>`.
fn both(column: ArrayRef, literal: &str) -> [(ArrayRef, ArrayRef); 2] {
    let batch = batch(Arc::clone(&column));
    let text: ArrayRef = Arc::new(StringArray::from(vec![literal]));
    let scalar = datafusion::arrow::compute::cast(&text, column.data_type()).unwrap();
    let scalar = datafusion::arrow::array::Scalar::new(scalar);
    [false, true].map(|negated| {
        let keys = KeyEquality::new(Arc::new(Column::new("pod", 0)), literal.into(), negated);
        let got = keys
            .evaluate(&batch)
            .unwrap()
            .into_array(batch.num_rows())
            .unwrap();
        let expected: ArrayRef = if negated {
            Arc::new(cmp::neq(&column, &scalar).unwrap())
        } else {
            Arc::new(cmp::eq(&column, &scalar).unwrap())
        };
        (got, expected)
    })
}

#[test]
fn answers_as_arrow_compares_nulls_included() {
    let values = Arc::new(StringArray::from(vec!["web", "db", "cache"]));
    let keys = Int32Array::from(vec![
        Some(0),
        None,
        Some(1),
        Some(2),
        Some(0),
        None,
        Some(1),
    ]);
    let column: ArrayRef = Arc::new(DictionaryArray::<Int32Type>::try_new(keys, values).unwrap());
    for literal in ["web", "db", "absent", ""] {
        for (got, expected) in both(Arc::clone(&column), literal) {
            assert_eq!(got.as_ref(), expected.as_ref(), "{literal}");
        }
    }
    // Small keys too, and a dictionary arrow built with the literal twice and a NULL
    // value (the keys cannot answer alone: arrow's comparison does).
    let values = Arc::new(StringArray::from(vec![Some("web"), None, Some("web")]));
    let keys = UInt8Array::from(vec![Some(0), Some(1), Some(2), None]);
    let column: ArrayRef = Arc::new(DictionaryArray::<UInt8Type>::try_new(keys, values).unwrap());
    for (got, expected) in both(column, "web") {
        assert_eq!(got.as_ref(), expected.as_ref());
    }
}

#[test]
fn a_new_dictionary_is_searched_again() {
    let keys = KeyEquality::new(Arc::new(Column::new("pod", 0)), "db".into(), false);
    let dictionary = |values: Vec<&str>| -> ArrayRef {
        let keys = Int32Array::from(vec![0, 1, 1, 0]);
        let values = Arc::new(StringArray::from(values));
        Arc::new(DictionaryArray::<Int32Type>::try_new(keys, values).unwrap())
    };
    let first = dictionary(vec!["web", "db"]);
    let second = dictionary(vec!["db", "web"]);
    let answer = |column: &ArrayRef| {
        let b = batch(Arc::clone(column));
        let a = keys.evaluate(&b).unwrap().into_array(b.num_rows()).unwrap();
        (0..a.len())
            .map(|i| {
                a.as_any()
                    .downcast_ref::<datafusion::arrow::array::BooleanArray>()
                    .unwrap()
                    .value(i)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(answer(&first), [false, true, true, false]);
    assert_eq!(answer(&second), [true, false, false, true]);
    assert_eq!(answer(&first), [false, true, true, false]);
}

#[tokio::test]
async fn filters_compare_keys_and_answer_as_before() {
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "pod",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        ),
        Field::new("n", DataType::Int32, false),
    ]));
    let pods: DictionaryArray<Int32Type> = vec![
        Some("web"),
        None,
        Some("db"),
        Some("web"),
        Some("cache"),
        None,
    ]
    .into_iter()
    .collect();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(pods),
            Arc::new(Int32Array::from(vec![1, 2, 3, 4, 5, 6])),
        ],
    )
    .unwrap();
    let sql = "SELECT n FROM t WHERE (pod = 'web' OR n = 2) AND NOT (pod <> 'web' AND pod = 'db') \
               AND (pod <> 'absent' OR pod IS NULL) ORDER BY n";
    let table = || MemTable::try_new(Arc::clone(&schema), vec![vec![batch.clone()]]).unwrap();
    let (answer, datafusion, flowlake) = compare::answers(table, 1, sql).await;
    assert_eq!(answer, datafusion);
    // Row 2 (a NULL pod) passes `n = 2` but not the NOT, which is NULL there.
    let rows: Vec<&str> = answer
        .lines()
        .filter(|l| l.starts_with("| ") && !l.contains('n'))
        .collect();
    assert_eq!(rows, ["| 1 |", "| 4 |"], "{answer}");
    let text = compare::physical_plan(&flowlake, sql).await;
    // Every comparison of `pod` with text (DataFusion simplified the NOT to `pod <> 'db'`).
    assert_eq!(text.matches("(keys)").count(), 3, "{text}");
}
