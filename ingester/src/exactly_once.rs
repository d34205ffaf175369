//! Exactly once across replicas, decided by the table.
//!
//! A collector names each batch `<producer>/<seq>`: a producer id that is stable
//! for the node (kept beside its spool) and a sequence number that never goes
//! back. Every commit records, in Delta application transactions (`txn`), which
//! sequence numbers it stored; before committing, a flush reads the table's
//! latest `txn`s and leaves out every batch some replica already stored. Two
//! replicas committing the same producer's `txn`s at once conflict in Delta's
//! conflict checker (`ConcurrentTransaction`): the loser reads the table again
//! and plans again ([`crate::flush`]).
//!
//! Bounded state: a producer's sequence numbers are cut into blocks of
//! [`BLOCK`] consecutive numbers; block `b` lives in app id
//! `flowlake-batches/<producer>/<b mod SLOTS>` whose version is
//! `b << 32 | bitmap` (bit `i` set: batch `b * BLOCK + i` is in the table). So a
//! producer has at most [`SLOTS`] app ids, versions only grow, and a batch
//! whose block was overwritten by a block [`SLOTS`] blocks later (a copy that
//! stayed uncommitted while `SLOTS * BLOCK` later batches of its producer were
//! committed) can no longer be checked: it is stored (never dropped) and
//! counted as unverifiable.

use std::collections::{BTreeMap, HashMap};

use deltalake_core::kernel::{Action, Transaction};

use crate::error::Result;
use crate::table::Table;
use crate::wal::BatchId;

/// App ids per producer.
pub const SLOTS: u64 = 8;
/// Sequence numbers per block (the bitmap in a version's low 32 bits).
pub const BLOCK: u64 = 32;
/// Sequence numbers at or above this are not checked (the block number must fit
/// a version's high 31 bits).
pub const MAX_SEQ: u64 = BLOCK << 31;
/// Prefix of the app ids this module writes.
pub const APP_PREFIX: &str = "flowlake-batches/";
const MAX_PRODUCER_LEN: usize = 64;

/// A batch id of the form `<producer>/<seq>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SequencedId {
    pub producer: String,
    pub seq: u64,
}

impl SequencedId {
    /// The producer and sequence number of `id`, if it has that form
    /// (`producer`: 1-64 of `[A-Za-z0-9._-]`; `seq`: decimal, below [`MAX_SEQ`]).
    pub fn parse(id: &BatchId) -> Option<Self> {
        let (producer, seq) = id.as_str().rsplit_once('/')?;
        let ok = !producer.is_empty()
            && producer.len() <= MAX_PRODUCER_LEN
            && producer
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) || seq.len() > 12 {
            return None;
        }
        let seq: u64 = seq.parse().ok()?;
        (seq < MAX_SEQ).then(|| SequencedId {
            producer: producer.to_string(),
            seq,
        })
    }

    fn block(&self) -> u64 {
        self.seq / BLOCK
    }

    fn bit(&self) -> i64 {
        1 << (self.seq % BLOCK)
    }

    /// The app id whose version records this batch.
    pub fn app_id(&self) -> String {
        format!("{APP_PREFIX}{}/{}", self.producer, self.block() % SLOTS)
    }

    /// What a slot's version says of this batch.
    pub fn status(&self, version: Option<i64>) -> Status {
        let Some(v) = version else {
            return Status::New;
        };
        let block = (v >> 32) as u64;
        match block.cmp(&self.block()) {
            std::cmp::Ordering::Less => Status::New,
            std::cmp::Ordering::Equal if v & self.bit() != 0 => Status::Committed,
            std::cmp::Ordering::Equal => Status::New,
            std::cmp::Ordering::Greater => Status::Unverifiable,
        }
    }

    /// The slot's version once this batch is committed over `version`.
    fn mark(&self, version: Option<i64>) -> i64 {
        let fresh = ((self.block() as i64) << 32) | self.bit();
        match version {
            Some(v) if (v >> 32) as u64 == self.block() => v | self.bit(),
            _ => fresh,
        }
    }
}

/// Whether the table holds a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not in the table: store it.
    New,
    /// Some replica committed it: leave it out.
    Committed,
    /// Its slot moved on to a later block: stored, as it may not be in the table.
    Unverifiable,
}

/// What one commit stores and the `txn`s it records.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Per record of the flush: stored (true) or already in the table.
    pub keep: Vec<bool>,
    pub txns: Vec<Transaction>,
    pub committed: usize,
    pub unverifiable: usize,
}

/// Plans a commit of records with the ids `ids` (in flush order) against the
/// slot versions `versions` (app id → version, as the table holds them).
pub fn plan(ids: &[Option<SequencedId>], versions: &HashMap<String, i64>, now_ms: i64) -> Plan {
    let mut next: BTreeMap<String, Option<i64>> = BTreeMap::new();
    let mut out = Plan::default();
    for id in ids {
        let Some(id) = id else {
            out.keep.push(true);
            continue;
        };
        let app = id.app_id();
        let current = *next
            .entry(app.clone())
            .or_insert_with(|| versions.get(&app).copied());
        match id.status(current) {
            Status::Committed => {
                out.committed += 1;
                out.keep.push(false);
            }
            Status::Unverifiable => {
                out.unverifiable += 1;
                out.keep.push(true);
            }
            Status::New => {
                next.insert(app, Some(id.mark(current)));
                out.keep.push(true);
            }
        }
    }
    out.txns = next
        .into_iter()
        .filter_map(|(app, v)| {
            let v = v?;
            (versions.get(&app) != Some(&v))
                .then(|| Transaction::new_with_last_update(app, v, Some(now_ms)))
        })
        .collect();
    out
}

/// The table's batch `txn` versions as of a table version, kept up to date by
/// reading the commits made since (a commit is small; the whole log is read
/// only for an app id not seen before, by deltalake).
#[derive(Debug, Default)]
pub struct TableTxns {
    as_of: Option<u64>,
    versions: HashMap<String, i64>,
    /// App ids looked up in the table and found absent (as of `as_of`).
    absent: std::collections::HashSet<String>,
}

impl TableTxns {
    /// Brings the cache to `table`'s version: reads every commit since.
    pub async fn sync(&mut self, table: &Table) -> Result<()> {
        let Some(latest) = table.version() else {
            return Ok(());
        };
        let from = match self.as_of {
            Some(v) if v <= latest => v + 1,
            _ => {
                // First look, or the table went back (recreated): start over.
                self.versions.clear();
                self.absent.clear();
                self.as_of = Some(latest);
                return Ok(());
            }
        };
        let store = table.delta().log_store();
        for version in from..=latest {
            let Some(bytes) = store.read_commit_entry(version).await? else {
                // Cleaned up already (log retention): start over from the snapshot.
                self.versions.clear();
                self.absent.clear();
                break;
            };
            for action in deltalake_core::logstore::get_actions(version, &bytes)? {
                if let Action::Txn(t) = action
                    && t.app_id.starts_with(APP_PREFIX)
                {
                    self.absent.remove(&t.app_id);
                    self.versions.insert(t.app_id, t.version);
                }
            }
        }
        self.as_of = Some(latest);
        Ok(())
    }

    /// The versions of the app ids of `ids`, as of the last [`Self::sync`].
    pub async fn versions(
        &mut self,
        table: &Table,
        ids: &[Option<SequencedId>],
    ) -> Result<&HashMap<String, i64>> {
        let mut apps: Vec<String> = ids.iter().flatten().map(SequencedId::app_id).collect();
        apps.sort();
        apps.dedup();
        for app in apps {
            if self.versions.contains_key(&app) || self.absent.contains(&app) {
                continue;
            }
            match table.app_version(&app).await? {
                Some(v) => {
                    self.versions.insert(app, v);
                }
                None => {
                    self.absent.insert(app);
                }
            }
        }
        Ok(&self.versions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Option<SequencedId> {
        SequencedId::parse(&BatchId::parse(s).unwrap())
    }

    #[test]
    fn parses_only_producer_slash_seq() {
        let p = id("0123abcd/42").unwrap();
        assert_eq!((p.producer.as_str(), p.seq), ("0123abcd", 42));
        assert_eq!(p.app_id(), "flowlake-batches/0123abcd/1");
        assert!(id("9b2c0f6e-6f0b-4c4b-8f0e-3d1d1b2a8c11").is_none());
        assert!(id("a/b/1").is_none());
        assert!(id("a/").is_none());
        assert!(id("/1").is_none());
        assert!(id("a/-1").is_none());
        assert!(id(&format!("a/{MAX_SEQ}")).is_none());
        assert!(id(&format!("a/{}", MAX_SEQ - 1)).is_some());
    }

    #[test]
    fn a_committed_batch_is_left_out_by_the_next_plan() {
        let ids: Vec<_> = ["p/0", "p/1", "legacy", "q/40", "p/1"]
            .iter()
            .map(|s| id(s))
            .collect();
        let first = plan(&ids, &HashMap::new(), 7);
        // The second p/1 of the same flush is left out too.
        assert_eq!(first.keep, [true, true, true, true, false]);
        let table: HashMap<String, i64> = first
            .txns
            .iter()
            .map(|t| (t.app_id.clone(), t.version))
            .collect();
        assert_eq!(table["flowlake-batches/p/0"], 0b11);
        assert_eq!(table["flowlake-batches/q/1"], (1 << 32) | (1 << 8));
        assert!(first.txns.iter().all(|t| t.last_updated == Some(7)));
        let again = plan(&ids[..4], &table, 8);
        assert_eq!(again.keep, [false, false, true, false]);
        assert_eq!(again.committed, 3);
        assert!(again.txns.is_empty());
        // A new batch of the same block sets its bit; older bits stay.
        let more = plan(&[id("p/5")], &table, 9);
        assert_eq!(more.txns[0].version, 0b100011);
    }

    #[test]
    fn a_batch_whose_slot_moved_on_is_stored_and_counted() {
        let later = SLOTS * BLOCK; // same slot as 0, next round
        let table = HashMap::from([(
            "flowlake-batches/p/0".to_string(),
            ((later / BLOCK) as i64) << 32 | 1,
        )]);
        let p = plan(&[id("p/3"), id(&format!("p/{later}"))], &table, 0);
        assert_eq!(p.keep, [true, false]);
        assert_eq!((p.unverifiable, p.committed), (1, 1));
        assert!(p.txns.is_empty());
        // A slot's version only grows.
        let old = id("p/3").unwrap();
        let next = id(&format!("p/{}", later + 3)).unwrap();
        assert!(next.mark(Some(old.mark(None))) > old.mark(None));
    }
}
