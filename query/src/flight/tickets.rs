//! Results between `GetFlightInfo` and `DoGet`. A statement is started (checked by the
//! sandbox, planned, run up to its first batch) when its `FlightInfo` is asked for, as
//! the HTTP endpoint does before it answers, so a refused or failing statement is an
//! error of that call and the `FlightInfo` carries the real schema. The running result
//! waits under a random ticket for the `DoGet` of the same caller; it holds its query
//! slot meanwhile, and is dropped (its query aborted) at the query's deadline if no
//! `DoGet` came. A ticket is good once, on the replica that issued it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowlake_service::Principal;
use uuid::Uuid;

use crate::engine::QueryResult;

/// A started statement waiting for its `DoGet`.
pub struct Pending {
    pub result: QueryResult,
    /// Who started it: only the same caller may fetch it.
    pub owner: Principal,
    /// For the audit line of the `DoGet`.
    pub sql: String,
    /// Handed out by a prepared statement's `GetFlightInfo` already.
    claimed: bool,
}

/// The waiting results, by ticket.
#[derive(Clone, Default)]
pub struct Tickets {
    pending: Arc<Mutex<HashMap<Uuid, Pending>>>,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets")
            .field("pending", &self.len())
            .finish()
    }
}

impl Tickets {
    /// Keeps `result` under a new ticket until `DoGet` takes it or `ttl` passes.
    pub fn insert(
        &self,
        result: QueryResult,
        owner: Principal,
        sql: String,
        ttl: Duration,
    ) -> Uuid {
        let id = Uuid::new_v4();
        let pending = Pending {
            result,
            owner,
            sql,
            claimed: false,
        };
        self.lock().insert(id, pending);
        let map = Arc::clone(&self.pending);
        tokio::spawn(async move {
            tokio::time::sleep(ttl).await;
            // Dropping the result aborts its query and frees its slot.
            let expired = map.lock().expect("tickets lock").remove(&id);
            if expired.is_some() {
                tracing::debug!(ticket = %id, "Flight SQL ticket expired without DoGet");
            }
        });
        id
    }

    /// The result of `id` if `caller` started it (taken: a ticket is good once).
    pub fn take(&self, id: &Uuid, caller: &Principal) -> Option<Pending> {
        let mut map = self.lock();
        match map.get(id) {
            Some(p) if p.owner == *caller => map.remove(id),
            _ => None,
        }
    }

    /// Marks the result of `id` as handed out, if `caller` started it and it was not
    /// yet; its schema is returned. A prepared statement's first execution uses the
    /// result its preparation started; later ones run the statement again.
    pub fn claim(&self, id: &Uuid, caller: &Principal) -> Option<arrow::datatypes::SchemaRef> {
        let mut map = self.lock();
        let p = map
            .get_mut(id)
            .filter(|p| p.owner == *caller && !p.claimed)?;
        p.claimed = true;
        Some(p.result.schema.clone())
    }

    /// Drops the result of `id` if `caller` started it and it was never handed out
    /// (a prepared statement closed without being executed): its query is aborted.
    pub fn discard_unclaimed(&self, id: &Uuid, caller: &Principal) {
        let mut map = self.lock();
        if map
            .get(id)
            .is_some_and(|p| p.owner == *caller && !p.claimed)
        {
            map.remove(id);
        }
    }

    /// Results waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Pending>> {
        self.pending.lock().expect("tickets lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Schema;
    use futures::StreamExt;

    fn result() -> QueryResult {
        QueryResult {
            schema: Arc::new(Schema::empty()),
            head: vec![],
            rest: futures::stream::empty().boxed(),
        }
    }

    #[tokio::test]
    async fn a_ticket_is_good_once_for_its_owner_until_it_expires() {
        let tickets = Tickets::default();
        let alice = Principal::anonymous();
        let mut bob = Principal::anonymous();
        bob.name = "bob".into();
        let id = tickets.insert(
            result(),
            alice.clone(),
            "select 1".into(),
            Duration::from_secs(60),
        );
        assert!(tickets.take(&id, &bob).is_none());
        assert!(tickets.claim(&id, &bob).is_none());
        assert!(tickets.claim(&id, &alice).is_some());
        assert!(tickets.claim(&id, &alice).is_none(), "claimed once");
        assert_eq!(tickets.take(&id, &alice).unwrap().sql, "select 1");
        assert!(tickets.take(&id, &alice).is_none(), "taken once");

        let id = tickets.insert(
            result(),
            alice.clone(),
            "select 2".into(),
            Duration::from_millis(20),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(tickets.take(&id, &alice).is_none(), "expired");
        assert!(tickets.is_empty());
    }
}
