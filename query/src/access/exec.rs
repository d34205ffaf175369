//! The plan node above a namespace-filtered scan that the optimizer cannot see through.

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

/// Passes its input through unchanged, and is opaque to the physical optimizer: no
/// projection is swapped below it, no filter, limit or dynamic filter is pushed
/// through it, no statistics come out of it. So nothing of the query above a scope
/// filter is ever evaluated on rows the filter drops (an expression that fails on a
/// hidden row would name its value in the error), and nothing counts them.
#[derive(Debug)]
pub struct ScopeBarrierExec {
    input: Arc<dyn ExecutionPlan>,
}

impl ScopeBarrierExec {
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        ScopeBarrierExec { input }
    }
}

impl DisplayAs for ScopeBarrierExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ScopeBarrierExec")
    }
}

impl ExecutionPlan for ScopeBarrierExec {
    fn name(&self) -> &str {
        "ScopeBarrierExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(ScopeBarrierExec::new(input))),
            _ => datafusion::common::internal_err!("ScopeBarrierExec has one child"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
