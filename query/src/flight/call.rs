//! What the listener's middleware hands each Flight SQL call: the authenticated
//! caller, and a slot in which the call leaves what its audit line says (the SQL it
//! ran, the rows it sent), read back when the response leaves.

use std::sync::{Arc, Mutex, OnceLock};

use flowlake_service::{Principal, RowCount, SqlAudit};
use tonic::Status;

/// The audit slot of one call.
#[derive(Debug, Clone, Default)]
pub struct CallAudit {
    sql: Arc<Mutex<Option<String>>>,
    /// Set by the calls that send rows.
    rows: Arc<OnceLock<RowCount>>,
}

impl CallAudit {
    /// Puts what the call recorded into the response's extensions for the audit line
    /// (the rows are counted on while the response streams).
    pub fn into_extensions(self, ext: &mut axum::http::Extensions) {
        if let Some(sql) = self.sql.lock().expect("audit lock").take() {
            ext.insert(SqlAudit(sql));
        }
        if let Some(rows) = self.rows.get() {
            ext.insert(rows.clone());
        }
    }
}

/// The caller of a call and its audit slot.
#[derive(Debug, Clone)]
pub struct Call {
    pub principal: Principal,
    audit: CallAudit,
}

impl Call {
    /// The call's context, put in the request's extensions by the middleware.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Call, Status> {
        let ext = request.extensions();
        match (ext.get::<Principal>(), ext.get::<CallAudit>()) {
            (Some(principal), Some(audit)) => Ok(Call {
                principal: principal.clone(),
                audit: audit.clone(),
            }),
            _ => Err(Status::unauthenticated("no authenticated caller")),
        }
    }

    /// The SQL the call runs, for its audit line.
    pub fn record_sql(&self, sql: &str) {
        *self.audit.sql.lock().expect("audit lock") = Some(sql.to_string());
    }

    /// The row counter of the call's audit line (a call that sends rows asks for it).
    pub fn rows(&self) -> RowCount {
        self.audit.rows.get_or_init(RowCount::default).clone()
    }
}
