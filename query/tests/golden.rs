//! Golden SQL tests: `tests/golden/*.sql` over the fixed gen table, compared with the
//! checked-in `*.expected`. Re-bless with `FLOWLAKE_BLESS=1 cargo test -p flowlake-query golden`.

use std::path::PathBuf;
use std::sync::Arc;

use flowlake_query::access::Access;
use flowlake_query::engine::QueryEngine;
use flowlake_query::metrics::QueryMetrics;
use flowlake_query::table::FlowsTable;
use flowlake_query::{QueryConfig, TableLocation};

use crate::support::shared_table;

#[tokio::test]
async fn golden_sql() {
    let cfg = QueryConfig::for_tests(shared_table().to_str().unwrap());
    let table = FlowsTable::open(
        TableLocation {
            location: cfg.table.location.clone(),
            storage_options: Default::default(),
        },
        cfg.snapshot_max_age,
        cfg.dictionaries,
    )
    .await
    .unwrap();
    let engine =
        QueryEngine::with_table(Arc::new(table), cfg.limits, 2, QueryMetrics::unregistered())
            .await
            .unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var("FLOWLAKE_BLESS").is_ok_and(|v| v == "1");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "golden files missing");
    let mut failures = Vec::new();
    for file in files {
        let sql = std::fs::read_to_string(&file).unwrap();
        let actual = match engine
            .execute_user_sql(&sql, "golden", &Access::all())
            .await
        {
            Ok(r) => {
                let batches = r.collect().await.unwrap();
                arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string()
                    + "\n"
            }
            Err(e) => format!("ERROR: {}\n", e.full_message()),
        };
        let expected_path = file.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                file.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (FLOWLAKE_BLESS=1 to accept):\n{}",
        failures.join("\n")
    );
}
