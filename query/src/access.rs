//! Which namespaces a request may read, enforced below SQL.
//!
//! A token may be limited to namespaces (`namespaces` in the token file). Such a
//! request is planned in its own `SessionContext` ([`crate::session`]) in which `flows`
//! is [`NamespaceFiltered`]: every scan of it, whatever the SQL around it (joins,
//! subqueries, CTEs, views, `UNION`, window functions), returns only rows whose
//! `src_namespace` or `dst_namespace` is one of the token's; the other end is shown as
//! stored. The rollup table function of that context returns only rollup rows whose
//! subject `namespace` is one of the token's ([`rollup::ScopedRollupFunction`]).
//!
//! The per-pod questions are answered about subjects (pods, workloads) of the token's
//! namespaces only: a question about a pod of another namespace is refused (403), and
//! ranked questions and Grafana variables list the token's own pods.

mod exec;
mod rollup;
mod table;

pub use rollup::ScopedRollupFunction;
pub use table::NamespaceFiltered;

use std::sync::Arc;

use datafusion::logical_expr::{Expr, col, lit};
use flowlake_service::Principal;

use crate::error::{QueryError, Result};
use crate::questions::Scope;

/// The two ends of a flow row.
pub const FLOW_NAMESPACE_COLUMNS: [&str; 2] = ["src_namespace", "dst_namespace"];
/// The subject of a rollup row (and of a per-pod view row).
pub const SUBJECT_NAMESPACE_COLUMN: &str = "namespace";

/// What a request may read: every namespace, or a sorted list of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Access {
    namespaces: Option<Arc<[String]>>,
}

impl Access {
    /// Every namespace (admin tokens, tokens without `namespaces`, authentication off).
    pub fn all() -> Self {
        Access { namespaces: None }
    }

    /// Only these namespaces (an empty list reads nothing).
    pub fn namespaces<I: IntoIterator<Item = S>, S: Into<String>>(list: I) -> Self {
        let mut v: Vec<String> = list.into_iter().map(Into::into).collect();
        v.sort();
        v.dedup();
        Access {
            namespaces: Some(v.into()),
        }
    }

    /// The access of an authenticated caller.
    pub fn of(principal: &Principal) -> Self {
        match &principal.namespaces {
            None => Self::all(),
            Some(list) => Self::namespaces(list.iter().cloned()),
        }
    }

    pub fn is_all(&self) -> bool {
        self.namespaces.is_none()
    }

    /// The namespaces, `None` for every one.
    pub fn list(&self) -> Option<&[String]> {
        self.namespaces.as_deref()
    }

    pub fn may_read(&self, namespace: &str) -> bool {
        self.list().is_none_or(|l| l.iter().any(|n| n == namespace))
    }

    /// Refuses a question about a subject of a namespace the request may not read.
    pub fn check_namespace(&self, namespace: &str) -> Result<()> {
        if self.may_read(namespace) {
            Ok(())
        } else {
            Err(QueryError::NamespaceForbidden(format!(
                "namespace {namespace:?}"
            )))
        }
    }

    /// `c1 IN (…) OR c2 IN (…)` over `columns` (`None` for every namespace). NULL
    /// namespaces (hosts, the outside world) never match.
    pub fn predicate(&self, columns: &[&str]) -> Option<Expr> {
        let list = self.list()?;
        let values: Vec<Expr> = list.iter().map(|n| lit(n.as_str())).collect();
        let any = columns
            .iter()
            .map(|c| col(*c).in_list(values.clone(), false))
            .reduce(Expr::or)
            .unwrap_or(lit(false));
        // `x IN ()` is not valid; an empty list reads nothing.
        Some(if list.is_empty() { lit(false) } else { any })
    }

    /// A per-pod question about `scope` as this access may ask it: refused for a subject
    /// of another namespace; for every pod or workload, `subject_filters` gets the
    /// condition that keeps the subjects of its namespaces.
    pub fn restrict(&self, scope: &Scope, subject_filters: &mut Vec<String>) -> Result<()> {
        match scope {
            Scope::Pod { namespace, .. } | Scope::Workload { namespace, .. } => {
                self.check_namespace(namespace)
            }
            Scope::AllPods | Scope::AllWorkloads => {
                subject_filters.extend(self.subject_condition());
                Ok(())
            }
        }
    }

    /// The same as a SQL condition on the subject `namespace` of a per-pod view, for the
    /// questions the service builds (`None` for every namespace).
    pub fn subject_condition(&self) -> Option<String> {
        let list = self.list()?;
        if list.is_empty() {
            return Some("false".into());
        }
        let values: Vec<String> = list.iter().map(|n| crate::questions::quote(n)).collect();
        Some(format!(
            "{SUBJECT_NAMESPACE_COLUMN} IN ({})",
            values.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_of_principals() {
        let mut p = Principal::anonymous();
        assert!(Access::of(&p).is_all());
        assert!(Access::of(&p).predicate(&FLOW_NAMESPACE_COLUMNS).is_none());
        p.namespaces = Some(vec!["b".into(), "a".into(), "a".into()]);
        let a = Access::of(&p);
        assert_eq!(a.list().unwrap(), ["a", "b"]);
        assert!(a.may_read("a") && !a.may_read("c"));
        assert!(matches!(
            a.check_namespace("c"),
            Err(QueryError::NamespaceForbidden(_))
        ));
        let pred = a.predicate(&FLOW_NAMESPACE_COLUMNS).unwrap().to_string();
        assert!(pred.contains("src_namespace IN") && pred.contains("dst_namespace IN"));
        assert_eq!(a.subject_condition().unwrap(), "namespace IN ('a', 'b')");
        assert_eq!(
            Access::namespaces(Vec::<String>::new()).predicate(&["x"]),
            Some(lit(false))
        );
    }
}
