//! A question answered from rollups: the rollup files of the hours they cover, the rest
//! of the range rolled up from the flow rows the same way, merged.

use super::table::rollup_call;
use super::{Coverage, RollupSpec};
use crate::questions::{Measures, Question, Scope, render};

/// The same answer as [`crate::questions::question_sql`] over the coverage's range: the rollup files of
/// the hours it covers, and the rest of the range rolled up from the flow rows.
pub fn rollup_question_sql(
    question: Question,
    scope: &Scope,
    subject_filters: &[String],
    coverage: &Coverage,
    limit: usize,
) -> String {
    let spec = RollupSpec::for_scope(question, scope);
    let scoped = |filter: String| {
        std::iter::once(filter)
            .chain(scope.predicate())
            .chain(subject_filters.iter().cloned())
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let mut parts = vec![format!(
        "SELECT {} FROM {} WHERE {}",
        spec.columns().join(", "),
        rollup_call(question, &coverage.files),
        scoped("true".into())
    )];
    if !coverage.raw.is_empty() {
        let time = coverage
            .raw
            .iter()
            .map(|r| format!("({})", r.predicate()))
            .collect::<Vec<_>>()
            .join(" OR ");
        parts.push(spec.partial_sql(question, &scoped(format!("({time})"))));
    }
    let source = format!("({}) AS rolled_up", parts.join(" UNION ALL "));
    render(question, scope, &source, Measures::Merged, limit)
}
