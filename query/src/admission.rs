//! What SQL the service agrees to plan: bounds that keep a statement's parse tree and
//! logical plan shallow enough for the planner, the optimizer and execution, which all
//! recurse over them. Every statement — from `/api/v1/sql`, Grafana `sql` targets,
//! exports, and the SQL built from question and Grafana parameters — passes through
//! [`admit`] before parsing and [`check_plan`] after planning; nested parentheses,
//! function calls and subqueries are bounded by the parser's recursion limit
//! (DataFusion's `sql_parser.recursion_limit`, 50).
//!
//! All of it runs on the query runtime's threads, whose stack ([`STACK_BYTES`]) is
//! large enough for the deepest tree these bounds admit.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::{QueryError, Result};

/// Stack of the threads that parse, plan and execute queries.
pub const STACK_BYTES: usize = 64 << 20;
/// Longest statement accepted, in bytes.
pub const MAX_SQL_BYTES: usize = 256 << 10;
/// Binary operators and set operations (`+`, `AND`, `UNION`, `JOIN`, …) in one
/// statement: a chain of them is parsed without recursion but nests as deep as it is long.
pub const MAX_OPERATORS: usize = 1000;
/// Calls of functions whose output size their arguments choose (`repeat`,
/// `array_repeat`, …; each call is also capped, see [`crate::bounded`]).
pub const MAX_SIZED_CALLS: usize = 16;
/// Nesting of expressions in the logical plan.
pub const MAX_EXPR_DEPTH: usize = 200;
/// Nesting of plan nodes (joins, unions, subqueries, views expanded).
pub const MAX_PLAN_DEPTH: usize = 200;

fn too_complex(what: String) -> QueryError {
    QueryError::TooComplex(what)
}

/// Checks a statement's size and counts its operators before it is parsed.
pub fn admit(sql: &str) -> Result<()> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(too_complex(format!(
            "the statement is {} bytes; at most {MAX_SQL_BYTES} are accepted",
            sql.len()
        )));
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| QueryError::Sql(e.to_string()))?;
    let mut operators = 0usize;
    let mut sized_calls = 0usize;
    for t in &tokens {
        match t {
            Token::Word(w) => {
                if matches!(
                    w.keyword,
                    Keyword::AND
                        | Keyword::OR
                        | Keyword::UNION
                        | Keyword::INTERSECT
                        | Keyword::EXCEPT
                        | Keyword::JOIN
                        | Keyword::LIKE
                        | Keyword::ILIKE
                        | Keyword::IS
                ) {
                    operators += 1;
                }
                if crate::bounded::SIZED_FUNCTIONS
                    .iter()
                    .any(|f| w.value.eq_ignore_ascii_case(f))
                {
                    sized_calls += 1;
                }
            }
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::DuckIntDiv
            | Token::StringConcat
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Spaceship
            | Token::Caret
            | Token::Ampersand
            | Token::Pipe
            | Token::ShiftLeft
            | Token::ShiftRight
            | Token::Tilde
            | Token::TildeAsterisk
            | Token::ExclamationMarkTilde
            | Token::ExclamationMarkTildeAsterisk
            | Token::Arrow
            | Token::LongArrow
            | Token::DoubleColon
            | Token::AtArrow
            | Token::ArrowAt => operators += 1,
            _ => {}
        }
    }
    if operators > MAX_OPERATORS {
        return Err(too_complex(format!(
            "the statement has {operators} operators; at most {MAX_OPERATORS} are accepted"
        )));
    }
    if sized_calls > MAX_SIZED_CALLS {
        return Err(too_complex(format!(
            "the statement calls repeat/lpad/rpad/array_repeat/array_resize/range/generate_series \
             {sized_calls} times; at most {MAX_SIZED_CALLS} are accepted"
        )));
    }
    Ok(())
}

fn expr_depth(e: &Expr, depth: usize) -> Result<()> {
    if depth > MAX_EXPR_DEPTH {
        return Err(too_complex(format!(
            "expressions nest deeper than {MAX_EXPR_DEPTH} levels"
        )));
    }
    let mut out = Ok(());
    e.apply_children(|child| {
        out = expr_depth(child, depth + 1);
        Ok(if out.is_err() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })
    .map_err(QueryError::Execution)?;
    out
}

fn plan_depth(plan: &LogicalPlan, depth: usize) -> Result<()> {
    if depth > MAX_PLAN_DEPTH {
        return Err(too_complex(format!(
            "the plan nests deeper than {MAX_PLAN_DEPTH} levels (joins, unions, subqueries)"
        )));
    }
    let mut out = Ok(());
    let stop = |r: &Result<()>| {
        Ok(if r.is_err() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    };
    plan.apply_expressions(|e| {
        out = expr_depth(e, 0);
        stop(&out)
    })
    .map_err(QueryError::Execution)?;
    std::mem::replace(&mut out, Ok(()))?;
    plan.apply_subqueries(|sub| {
        out = plan_depth(sub, depth + 1);
        stop(&out)
    })
    .map_err(QueryError::Execution)?;
    out?;
    for input in plan.inputs() {
        plan_depth(input, depth + 1)?;
    }
    Ok(())
}

/// Checks the nesting of a planned statement before it is optimized or run.
pub fn check_plan(plan: &LogicalPlan) -> Result<()> {
    plan_depth(plan, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_chains_are_refused_before_parsing() {
        let sql = format!("SELECT 1{}", "+1".repeat(MAX_OPERATORS + 1));
        assert!(matches!(admit(&sql), Err(QueryError::TooComplex(_))));
        let sql = format!("SELECT 1{}", "+1".repeat(10));
        admit(&sql).unwrap();
        // An IN list is flat: commas are not operators.
        let list = vec!["1"; 5000].join(",");
        admit(&format!("SELECT 1 IN ({list})")).unwrap();
        let calls = vec!["repeat('x', 2)"; MAX_SIZED_CALLS + 1].join(",");
        assert!(matches!(
            admit(&format!("SELECT {calls}")),
            Err(QueryError::TooComplex(_))
        ));
        assert!(matches!(
            admit(&"x".repeat(MAX_SQL_BYTES + 1)),
            Err(QueryError::TooComplex(_))
        ));
    }
}
