//! The read-only sandbox: SQL is parsed with DataFusion's parser and only queries
//! (`SELECT`, `WITH`, `EXPLAIN`, `SHOW`, `DESCRIBE`) over the registered tables get
//! through. Everything that writes, changes settings or reads files is refused.

use std::ops::ControlFlow;

use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast::{self, TableFactor, Visit, Visitor};

use crate::error::{QueryError, Result};

/// Table functions a query may call (they generate rows, they read nothing).
const ALLOWED_TABLE_FUNCTIONS: [&str; 3] = ["generate_series", "range", "unnest"];

fn refuse(what: &str) -> QueryError {
    QueryError::Refused(format!(
        "{what} is not allowed: the query service is read-only (SELECT, WITH, EXPLAIN, SHOW and DESCRIBE only)"
    ))
}

/// Parses `sql` and checks that it is exactly one allowed statement.
pub fn check(sql: &str) -> Result<Statement> {
    let mut statements = DFParser::parse_sql(sql).map_err(|e| QueryError::Sql(e.to_string()))?;
    let statement = match (statements.pop_front(), statements.is_empty()) {
        (Some(s), true) => s,
        (None, _) => return Err(QueryError::BadRequest("no SQL statement given".into())),
        (Some(_), false) => {
            return Err(QueryError::Refused(
                "only one statement per request is allowed".into(),
            ));
        }
    };
    check_statement(&statement)?;
    Ok(statement)
}

fn check_statement(statement: &Statement) -> Result<()> {
    match statement {
        Statement::Statement(s) => check_sql_statement(s),
        Statement::Explain(explain) => check_statement(&explain.statement),
        Statement::CreateExternalTable(_) => Err(refuse("CREATE EXTERNAL TABLE")),
        Statement::CopyTo(_) => Err(refuse("COPY")),
        Statement::Reset(_) => Err(refuse("RESET")),
    }
}

fn check_sql_statement(s: &ast::Statement) -> Result<()> {
    use ast::Statement as S;
    match s {
        S::Query(_) => check_relations(s),
        S::Explain { statement, .. } => check_sql_statement(statement),
        S::ExplainTable { .. }
        | S::ShowTables { .. }
        | S::ShowColumns { .. }
        | S::ShowFunctions { .. }
        | S::ShowVariable { .. }
        | S::ShowVariables { .. } => check_relations(s),
        S::Insert(_) => Err(refuse("INSERT")),
        S::Update { .. } => Err(refuse("UPDATE")),
        S::Delete(_) => Err(refuse("DELETE")),
        S::Merge { .. } => Err(refuse("MERGE")),
        S::Truncate { .. } => Err(refuse("TRUNCATE")),
        S::Copy { .. } | S::CopyIntoSnowflake { .. } => Err(refuse("COPY")),
        S::Set(_) => Err(refuse("SET")),
        S::Drop { .. } | S::DropFunction { .. } => Err(refuse("DROP")),
        S::AlterTable { .. } | S::AlterView { .. } => Err(refuse("ALTER")),
        S::CreateTable(_) => Err(refuse("CREATE TABLE")),
        S::CreateView { .. } => Err(refuse("CREATE VIEW")),
        S::CreateFunction(_) => Err(refuse("CREATE FUNCTION")),
        S::CreateSchema { .. } | S::CreateDatabase { .. } => Err(refuse("CREATE SCHEMA")),
        S::Prepare { .. } | S::Execute { .. } | S::Deallocate { .. } => {
            Err(refuse("PREPARE/EXECUTE"))
        }
        S::StartTransaction { .. } | S::Commit { .. } | S::Rollback { .. } => {
            Err(refuse("a transaction statement"))
        }
        other => Err(refuse(&format!(
            "the statement {:?}",
            other
                .to_string()
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        ))),
    }
}

/// Looks at every table reference: no file paths, URLs or file-reading table functions.
struct RelationCheck;

fn looks_like_file(name: &str) -> bool {
    name.contains('/')
        || name.contains("://")
        || [".parquet", ".csv", ".json", ".arrow", ".avro", ".ndjson"]
            .iter()
            .any(|ext| name.to_ascii_lowercase().ends_with(ext))
}

impl Visitor for RelationCheck {
    type Break = QueryError;

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<QueryError> {
        match factor {
            TableFactor::Table { name, args, .. } => {
                let text = name.to_string();
                let bare = text.trim_matches(|c| c == '"' || c == '\'' || c == '`');
                if looks_like_file(bare) {
                    return ControlFlow::Break(refuse(&format!("reading the file or URL {text}")));
                }
                if args.is_some() {
                    let func = bare.rsplit('.').next().unwrap_or(bare).to_ascii_lowercase();
                    if !ALLOWED_TABLE_FUNCTIONS.contains(&func.as_str()) {
                        return ControlFlow::Break(refuse(&format!("the table function {text}")));
                    }
                }
            }
            TableFactor::TableFunction { .. } | TableFactor::Function { .. } => {
                return ControlFlow::Break(refuse("a table function in FROM"));
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

fn check_relations(s: &ast::Statement) -> Result<()> {
    match s.visit(&mut RelationCheck) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_pass() {
        for sql in [
            "SELECT 1",
            "select count(*) from flows where interval_start > now() - interval '1 hour'",
            "WITH t AS (SELECT * FROM flows) SELECT count(*) FROM t",
            "EXPLAIN SELECT * FROM flows",
            "EXPLAIN ANALYZE SELECT 1",
            "SHOW TABLES",
            "SHOW COLUMNS FROM flows",
            "DESCRIBE flows",
            "SELECT * FROM generate_series(1, 3)",
        ] {
            check(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    #[test]
    fn everything_else_is_refused() {
        for sql in [
            "INSERT INTO flows VALUES (1)",
            "DELETE FROM flows",
            "UPDATE flows SET bytes = 0",
            "DROP TABLE flows",
            "CREATE TABLE t AS SELECT 1",
            "CREATE VIEW v AS SELECT 1",
            "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc'",
            "COPY (SELECT 1) TO '/tmp/x.parquet'",
            "SET datafusion.execution.batch_size = 1",
            "SELECT * FROM '/etc/passwd.csv'",
            "SELECT * FROM 's3://bucket/x.parquet'",
            "SELECT * FROM read_parquet('/tmp/x.parquet')",
            "SELECT * FROM parquet_metadata('/tmp/x.parquet')",
            "EXPLAIN COPY (SELECT 1) TO '/tmp/x.csv'",
            "SELECT 1; SELECT 2",
            "WITH t AS (SELECT * FROM read_csv('/etc/hosts')) SELECT * FROM t",
        ] {
            match check(sql) {
                Err(QueryError::Refused(msg)) => assert!(
                    msg.contains("not allowed") || msg.contains("one statement"),
                    "{sql}: {msg}"
                ),
                other => panic!("{sql} must be refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn syntax_errors_are_sql_errors() {
        assert!(matches!(check("SELEC 1"), Err(QueryError::Sql(_))));
        assert!(matches!(check(""), Err(QueryError::BadRequest(_))));
    }
}
