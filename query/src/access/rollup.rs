//! The rollup table function of a namespace-scoped session.

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl};
use datafusion::datasource::TableProvider;
use datafusion::error::Result as DfResult;

use super::{Access, NamespaceFiltered, SUBJECT_NAMESPACE_COLUMN};

/// `inner`'s rollup rows whose subject `namespace` the session may read (a rollup row
/// sums every flow of its subject, so its subject's namespace decides).
#[derive(Debug)]
pub struct ScopedRollupFunction {
    pub inner: Arc<dyn TableFunctionImpl>,
    pub access: Access,
}

impl TableFunctionImpl for ScopedRollupFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        NamespaceFiltered::wrap(
            self.inner.call_with_args(args)?,
            &self.access,
            &[SUBJECT_NAMESPACE_COLUMN],
        )
    }
}
