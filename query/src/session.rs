//! The DataFusion sessions queries are planned in: one for requests that read every
//! namespace, and one per namespace list for namespace-scoped tokens (built on first
//! use, kept), each with `flows`, the per-pod views, the rollup table function and
//! the bounded functions registered, all sharing one runtime (memory pool, object
//! stores).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::catalog::TableFunctionImpl;
use datafusion::datasource::TableProvider;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::access::{Access, FLOW_NAMESPACE_COLUMNS, NamespaceFiltered, ScopedRollupFunction};
use crate::error::{QueryError, Result};
use crate::questions;
use crate::rollup::sketch;
use crate::rollup::table::ROLLUP_FUNCTION;

/// Name the Delta table is registered under.
pub const FLOWS: &str = "flows";

/// Scoped sessions kept at most (one per distinct namespace list); beyond it the
/// cache starts over.
const MAX_SCOPED_SESSIONS: usize = 256;

/// What every session is built from.
#[derive(Clone)]
pub struct SessionParts {
    pub config: SessionConfig,
    pub runtime: Arc<RuntimeEnv>,
    /// Bound of the allocating functions ([`crate::bounded`]).
    pub memory_bytes: usize,
    pub flows: Arc<dyn TableProvider>,
    pub rollups: Option<Arc<dyn TableFunctionImpl>>,
    /// `losses` ([`crate::losses`]): in the sessions that read every namespace
    /// (it names nodes, not namespaces).
    pub losses: Option<Arc<dyn TableProvider>>,
    /// `captures` ([`crate::capture::table`]), namespace-filtered like `flows`.
    pub captures: Option<Arc<dyn TableProvider>>,
}

/// `flows` as `access` may read it ([`NamespaceFiltered`]): what the sessions of
/// queries and export jobs register.
pub fn scoped_flows(
    flows: Arc<dyn TableProvider>,
    access: &Access,
) -> Result<Arc<dyn TableProvider>> {
    NamespaceFiltered::wrap(flows, access, &FLOW_NAMESPACE_COLUMNS).map_err(QueryError::Execution)
}

/// A session over `parts` that reads what `access` allows.
pub async fn build(parts: &SessionParts, access: &Access) -> Result<SessionContext> {
    let ctx = crate::coop::session(parts.config.clone(), Arc::clone(&parts.runtime));
    crate::bounded::register(&ctx, parts.memory_bytes);
    for udaf in sketch::udafs() {
        ctx.register_udaf(udaf);
    }
    ctx.register_table(FLOWS, scoped_flows(Arc::clone(&parts.flows), access)?)
        .map_err(QueryError::Execution)?;
    if let Some(captures) = &parts.captures {
        let columns = crate::capture::table::NAMESPACE_COLUMNS;
        let scoped = NamespaceFiltered::wrap(Arc::clone(captures), access, &columns)
            .map_err(QueryError::Execution)?;
        ctx.register_table(crate::capture::CAPTURES, scoped)
            .map_err(QueryError::Execution)?;
    }
    if let Some(losses) = parts.losses.as_ref().filter(|_| access.is_all()) {
        ctx.register_table(crate::losses::LOSSES, Arc::clone(losses))
            .map_err(QueryError::Execution)?;
    }
    if let Some(rollups) = &parts.rollups {
        let function: Arc<dyn TableFunctionImpl> = if access.is_all() {
            Arc::clone(rollups)
        } else {
            Arc::new(ScopedRollupFunction {
                inner: Arc::clone(rollups),
                access: access.clone(),
            })
        };
        ctx.register_udtf(ROLLUP_FUNCTION, function);
    }
    // The views are planned in this session, over its own (filtered) `flows`.
    for (name, sql) in questions::VIEWS {
        ctx.sql(&format!("CREATE VIEW {name} AS {sql}"))
            .await
            .map_err(|e| QueryError::Config(format!("view {name}: {e}")))?;
    }
    Ok(ctx)
}

/// The session of every namespace and the scoped ones, built on first use.
pub struct Sessions {
    parts: SessionParts,
    all: SessionContext,
    scoped: Mutex<HashMap<Access, SessionContext>>,
}

impl Sessions {
    pub async fn new(parts: SessionParts) -> Result<Self> {
        let all = build(&parts, &Access::all()).await?;
        Ok(Sessions {
            parts,
            all,
            scoped: Mutex::new(HashMap::new()),
        })
    }

    /// The session reading every namespace.
    pub fn all(&self) -> &SessionContext {
        &self.all
    }

    /// Adds the rollup table function to every session (scoped ones are rebuilt).
    pub fn set_rollups(&mut self, rollups: Arc<dyn TableFunctionImpl>) {
        self.all
            .register_udtf(ROLLUP_FUNCTION, Arc::clone(&rollups));
        self.parts.rollups = Some(rollups);
        self.scoped.lock().expect("sessions lock").clear();
    }

    /// The session for `access`.
    pub async fn get(&self, access: &Access) -> Result<SessionContext> {
        if access.is_all() {
            return Ok(self.all.clone());
        }
        if let Some(ctx) = self.scoped.lock().expect("sessions lock").get(access) {
            return Ok(ctx.clone());
        }
        let ctx = build(&self.parts, access).await?;
        let mut scoped = self.scoped.lock().expect("sessions lock");
        if scoped.len() >= MAX_SCOPED_SESSIONS {
            scoped.clear();
        }
        scoped.insert(access.clone(), ctx.clone());
        Ok(ctx)
    }
}
