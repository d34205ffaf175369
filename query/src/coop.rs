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
