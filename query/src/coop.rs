//! Cancellation that holds: a query ends (timeout, client gone, shutdown) by aborting
//! its task, which takes effect when the task yields. Tokio makes a task yield once it
//! used its budget, and DataFusion spends the budget where leaves read data — but a
//! join can emit thousands of batches per input batch (a cross join of a table with
//! itself) without reading anything. [`CooperativeJoins`] puts DataFusion's own
//! `CooperativeExec` above every join and unnest, so each batch they emit spends budget.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::coalesce::EagerCoalesce;
use crate::dictionary_equality::DictionaryEquality;
use crate::percentiles::MergePercentiles;
use crate::selective_first::SelectiveFirst;

/// Wraps joins and unnests in `CooperativeExec`.
#[derive(Debug, Default)]
pub struct CooperativeJoins;

fn multiplies_rows(plan: &dyn ExecutionPlan) -> bool {
    let name = plan.name();
    name.contains("Join") || name == "UnnestExec"
}

impl PhysicalOptimizerRule for CooperativeJoins {
    fn name(&self) -> &str {
        "CooperativeJoins"
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if multiplies_rows(node.as_ref()) {
                Ok(Transformed::yes(
                    Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>
                ))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A session with DataFusion's defaults plus [`MergePercentiles`] (after the other
/// logical rules), [`SelectiveFirst`] (before every other physical rule, so filter
/// pushdown sees its order), [`CooperativeJoins`] and [`DictionaryEquality`] (after
/// filter pushdown: the Parquet source prunes with the original predicate), and
/// [`EagerCoalesce`] in place of DataFusion's `coalesce`.
pub fn session(config: SessionConfig, runtime: Arc<RuntimeEnv>) -> SessionContext {
    let mut rules = PhysicalOptimizer::new().rules;
    rules.insert(0, Arc::new(SelectiveFirst));
    rules.push(Arc::new(CooperativeJoins));
    rules.push(Arc::new(DictionaryEquality));
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_optimizer_rule(Arc::new(MergePercentiles))
        .with_physical_optimizer_rules(rules)
        .build();
    let ctx = SessionContext::new_with_state(state);
    ctx.register_udf(ScalarUDF::new_from_impl(EagerCoalesce::default()));
    ctx
}

/// Test support: one query in a Flowlake session and in DataFusion's own.
#[cfg(test)]
pub(crate) mod compare {
    use std::sync::Arc;

    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::runtime_env::RuntimeEnv;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// `sql` over `table()` registered as `t`, with `partitions` target partitions, in
    /// a Flowlake [`super::session`] and a plain DataFusion session: both answers
    /// (pretty-printed) and the Flowlake session, for its plans.
    pub(crate) async fn answers(
        table: impl Fn() -> MemTable,
        partitions: usize,
        sql: &str,
    ) -> (String, String, SessionContext) {
        let config = SessionConfig::new().with_target_partitions(partitions);
        let flowlake = super::session(config.clone(), Arc::new(RuntimeEnv::default()));
        let plain = SessionContext::new_with_config(config);
        let mut answers = Vec::new();
        for ctx in [&flowlake, &plain] {
            ctx.register_table("t", Arc::new(table())).unwrap();
            let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
            answers.push(pretty_format_batches(&batches).unwrap().to_string());
        }
        (answers.remove(0), answers.remove(0), flowlake)
    }

    /// The physical plan of `sql` in `ctx`, as `EXPLAIN` indents it.
    pub(crate) async fn physical_plan(ctx: &SessionContext, sql: &str) -> String {
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        displayable(plan.as_ref()).indent(false).to_string()
    }
}
