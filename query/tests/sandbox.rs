//! Every refused statement kind comes back as a 400 with a clear message.

use crate::support::*;

#[tokio::test]
async fn refused_statements_are_400() {
    let svc = start_shared().await;
    let cases = [
        ("INSERT INTO flows SELECT * FROM flows", "INSERT"),
        ("DELETE FROM flows", "DELETE"),
        ("UPDATE flows SET bytes = 0", "UPDATE"),
        ("DROP TABLE flows", "DROP"),
        ("CREATE TABLE t AS SELECT 1", "CREATE TABLE"),
        ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
        (
            "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc'",
            "CREATE EXTERNAL TABLE",
        ),
        ("COPY (SELECT 1) TO '/tmp/x.parquet'", "COPY"),
        ("SET datafusion.execution.batch_size = 1", "SET"),
        ("SELECT * FROM '/etc/hosts.csv'", "reading the file"),
        (
            "SELECT * FROM read_parquet('/tmp/x.parquet')",
            "table function",
        ),
        ("SELECT 1; SELECT 2", "one statement"),
    ];
    for (sql, needle) in cases {
        let (status, body) = sql_json(&svc, sql).await;
        assert_eq!(status, 400, "{sql}: {body}");
        assert_eq!(body["error"]["code"], "statement_refused", "{sql}: {body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{sql}: {msg}");
    }
    // SQL errors keep DataFusion's message.
    let (status, body) = sql_json(&svc, "SELECT no_such_column FROM flows").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "sql_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no_such_column"),
        "{body}"
    );
    let (status, body) = sql_json(&svc, "SELEC 1").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("sql_error"))
    );
    // Allowed kinds work.
    for sql in [
        "SHOW TABLES",
        "DESCRIBE flows",
        "EXPLAIN SELECT count(*) FROM flows",
        "WITH t AS (SELECT 1 AS a) SELECT a FROM t",
    ] {
        let (status, body) = sql_json(&svc, sql).await;
        assert_eq!(status, 200, "{sql}: {body}");
    }
    svc.stop().await.unwrap();
}
