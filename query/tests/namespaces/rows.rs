//! Answers as sorted rows of cells, for comparing the service with DuckDB.

use serde_json::Value;

/// A cell as compared: numbers to 6 decimals, NULL as `null`, the rest as text.
pub(super) fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "null".into(),
        Some(Value::Number(n)) => format!("{:.6}", n.as_f64().unwrap()),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Rows of a JSON answer (objects) in `columns` order, sorted.
pub(super) fn object_rows(answer: &Value, columns: &[String]) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = answer
        .as_array()
        .unwrap_or_else(|| panic!("not rows: {answer}"))
        .iter()
        .map(|o| columns.iter().map(|c| cell(o.get(c))).collect())
        .collect();
    rows.sort();
    rows
}

/// Rows given as arrays of cells, sorted.
pub(super) fn array_rows(rows: &Value) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = rows
        .as_array()
        .unwrap_or_else(|| panic!("not rows: {rows}"))
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|c| cell(Some(c)))
                .collect()
        })
        .collect();
    rows.sort();
    rows
}

/// DuckDB's answers, sorted, per query: `(columns, rows)` or the error text.
pub(super) type DuckAnswer = Result<(Vec<String>, Vec<Vec<String>>), String>;

pub(super) fn duck_answers(v: &Value) -> Vec<DuckAnswer> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|a| {
            if let Some(e) = a.get("error") {
                return Err(e.to_string());
            }
            let columns: Vec<String> = serde_json::from_value(a["columns"].clone()).unwrap();
            Ok((columns, array_rows(&a["rows"])))
        })
        .collect()
}
