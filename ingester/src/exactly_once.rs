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
//! committed) is checked against the log's history instead
//! ([`history::block_fates`]: the slot's last version in the batch's block).
//! Stored then, it is recorded alone in app id `flowlake-late/<producer>/<seq>`,
//! so that any later copy finds it. Only when the log no longer reaches back that
//! far (log retention) can it not be checked: it is stored (never dropped) and
//! counted as unverifiable.
//!
//! App ids of producers that are gone expire: [`ensure_txn_retention`] keeps the
//! table's `delta.setTransactionRetentionDuration` set (also on tables created
//! before it was), after which readers ignore a `txn` not updated for that long
//! and checkpoints leave it out.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use deltalake_core::kernel::{Action, Transaction};

use crate::error::Result;
use crate::table::Table;
use crate::wal::BatchId;

mod history;

pub use history::BlockFate;

/// App ids per producer.
pub const SLOTS: u64 = 8;
/// Sequence numbers per block (the bitmap in a version's low 32 bits).
pub const BLOCK: u64 = 32;
/// Sequence numbers at or above this are not checked (the block number must fit
/// a version's high 31 bits).
pub const MAX_SEQ: u64 = BLOCK << 31;
/// Prefix of the slots' app ids.
pub const APP_PREFIX: &str = "flowlake-batches/";
/// Prefix of the app ids of batches committed after their slot moved on.
pub const LATE_PREFIX: &str = "flowlake-late/";
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

    /// The app id recording this batch alone, committed after its slot moved on.
    pub fn late_app_id(&self) -> String {
        format!("{LATE_PREFIX}{}/{}", self.producer, self.seq)
    }

    /// Whether the slot's version `version` holds a later block than this batch's.
    fn moved_on(&self, version: Option<i64>) -> bool {
        version.is_some_and(|v| (v >> 32) as u64 > self.block())
    }

    /// What the log's history of its slot says of this batch (the slot moved on).
    fn status_from(&self, fate: Option<BlockFate>) -> Status {
        match fate {
            Some(BlockFate::Final(v)) if v & self.bit() != 0 => Status::Committed,
            Some(BlockFate::Final(_) | BlockFate::NeverHeld) => Status::Late,
            Some(BlockFate::Unknown) | None => Status::Unverifiable,
        }
    }

    /// The fate of this batch's block as `version` (the table's slot version,
    /// not moved on) tells it.
    fn fate_at(&self, version: Option<i64>) -> BlockFate {
        match version {
            Some(v) if (v >> 32) as u64 == self.block() => BlockFate::Final(v),
            _ => BlockFate::NeverHeld,
        }
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

/// The table property that makes `txn`s expire.
pub const TXN_RETENTION_KEY: &str = "delta.setTransactionRetentionDuration";

/// A `delta.setTransactionRetentionDuration` value (`interval 7 days`).
fn parse_interval(value: &str) -> Option<Duration> {
    humantime::parse_duration(value.trim().strip_prefix("interval")?.trim()).ok()
}

/// Sets the table's `txn` retention to `retention` when it has none (a table
/// created before this was set: its app ids would stay in every checkpoint
/// forever) or another. Returns whether this call changed it. Replicas doing it at
/// once: the loser's commit conflicts, and it finds the property set.
pub async fn ensure_txn_retention(table: &mut Table, retention: Duration) -> Result<bool> {
    let current = |table: &Table| -> Result<Option<Duration>> {
        let snapshot = table.delta().snapshot()?;
        Ok(snapshot
            .metadata()
            .configuration()
            .get(TXN_RETENTION_KEY)
            .and_then(|v| parse_interval(v)))
    };
    let wanted = Duration::from_secs(retention.as_secs().max(1));
    if current(table)? == Some(wanted) {
        return Ok(false);
    }
    let value = format!("interval {} seconds", wanted.as_secs());
    let set = table
        .delta()
        .clone()
        .set_tbl_properties()
        .with_properties(HashMap::from([(TXN_RETENTION_KEY.to_string(), value)]))
        .await;
    table.refresh().await?;
    match set {
        Ok(_) => {
            tracing::info!(retention = ?wanted, "set the table's txn retention");
            Ok(true)
        }
        Err(_) if current(table)? == Some(wanted) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether the table holds a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not in the table: store it.
    New,
    /// Some replica committed it: leave it out.
    Committed,
    /// Its slot moved on, and the log's history says it is not in the table:
    /// store it and record it alone ([`SequencedId::late_app_id`]).
    Late,
    /// Its slot moved on and the history is gone: stored, as it may not be in
    /// the table.
    Unverifiable,
}

/// The table's `txn`s as a plan reads them: the versions of slots and late app
/// ids, and the history of slots that moved on past a block asked about.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TxnView {
    pub versions: HashMap<String, i64>,
    pub fates: HashMap<(String, u64), BlockFate>,
}

/// What one commit stores and the `txn`s it records.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Per record of the flush: stored (true) or already in the table.
    pub keep: Vec<bool>,
    pub txns: Vec<Transaction>,
    pub committed: usize,
    /// Stored after their slot moved on, the history saying they were not in.
    pub late: usize,
    pub unverifiable: usize,
}

/// Plans a commit of records with the ids `ids` (in flush order) against the
/// table's `txn`s `view`.
pub fn plan(ids: &[Option<SequencedId>], view: &TxnView, now_ms: i64) -> Plan {
    let versions = &view.versions;
    let mut next: BTreeMap<String, Option<i64>> = BTreeMap::new();
    let mut late: BTreeMap<String, ()> = BTreeMap::new();
    // Stored through their slot by this plan.
    let mut marked: Vec<&SequencedId> = Vec::new();
    let mut seen: std::collections::HashSet<&SequencedId> = std::collections::HashSet::new();
    let mut out = Plan::default();
    for id in ids {
        let Some(id) = id else {
            out.keep.push(true);
            continue;
        };
        if !seen.insert(id) {
            // A second copy in the same flush: the first is stored or left out.
            out.committed += 1;
            out.keep.push(false);
            continue;
        }
        let app = id.app_id();
        let table = versions.get(&app).copied();
        let current = *next.entry(app.clone()).or_insert(table);
        let mut status = id.status(current);
        if status == Status::Unverifiable {
            // Moved on in the table (its history tells), or by this plan (the
            // table's version tells).
            let fate = if id.moved_on(table) {
                view.fates.get(&(app.clone(), id.block())).copied()
            } else {
                Some(id.fate_at(table))
            };
            let late_id = id.late_app_id();
            status = if versions.contains_key(&late_id) || late.contains_key(&late_id) {
                Status::Committed
            } else {
                id.status_from(fate)
            };
        }
        match status {
            Status::Committed => {
                out.committed += 1;
                out.keep.push(false);
            }
            Status::Late => {
                out.late += 1;
                late.insert(id.late_app_id(), ());
                out.keep.push(true);
            }
            Status::Unverifiable => {
                out.unverifiable += 1;
                out.keep.push(true);
            }
            Status::New => {
                next.insert(app, Some(id.mark(current)));
                marked.push(id);
                out.keep.push(true);
            }
        }
    }
    // A batch marked in a block its slot leaves within this plan (a later batch
    // of the producer [`SLOTS`] blocks on in the same flush) has its bit in no
    // version the log keeps: it is recorded alone, as a late one is.
    for id in marked {
        let final_block = next.get(&id.app_id()).copied().flatten().map(|v| v >> 32);
        if final_block != Some(id.block() as i64) {
            late.insert(id.late_app_id(), ());
        }
    }
    out.txns = next
        .into_iter()
        .filter_map(|(app, v)| {
            let v = v?;
            (versions.get(&app) != Some(&v))
                .then(|| Transaction::new_with_last_update(app, v, Some(now_ms)))
        })
        .chain(
            late.into_keys()
                .map(|app| Transaction::new_with_last_update(app, 1, Some(now_ms))),
        )
        .collect();
    out
}

/// The table's batch `txn` versions as of a table version, kept up to date by
/// reading the commits made since (a commit is small; the whole log is read
/// only for an app id not seen before, by deltalake).
#[derive(Debug, Default)]
pub struct TableTxns {
    as_of: Option<u64>,
    view: TxnView,
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
                self.view = TxnView::default();
                self.absent.clear();
                self.as_of = Some(latest);
                return Ok(());
            }
        };
        let store = table.delta().log_store();
        for version in from..=latest {
            let Some(bytes) = store.read_commit_entry(version).await? else {
                // Cleaned up already (log retention): start over from the snapshot.
                self.view.versions.clear();
                self.absent.clear();
                break;
            };
            for action in deltalake_core::logstore::get_actions(version, &bytes)? {
                if let Action::Txn(t) = action
                    && (t.app_id.starts_with(APP_PREFIX) || t.app_id.starts_with(LATE_PREFIX))
                {
                    self.absent.remove(&t.app_id);
                    self.view.versions.insert(t.app_id, t.version);
                }
            }
        }
        self.as_of = Some(latest);
        Ok(())
    }

    /// The `txn`s the plan of `ids` reads, as of the last [`Self::sync`]: their
    /// slots, and for a batch whose slot moved on its late app id and the slot's
    /// history.
    pub async fn view(&mut self, table: &Table, ids: &[Option<SequencedId>]) -> Result<&TxnView> {
        let slots: Vec<String> = ids.iter().flatten().map(SequencedId::app_id).collect();
        self.look_up(table, slots).await?;
        let moved_on: Vec<&SequencedId> = ids
            .iter()
            .flatten()
            .filter(|id| id.moved_on(self.view.versions.get(&id.app_id()).copied()))
            .collect();
        if moved_on.is_empty() {
            return Ok(&self.view);
        }
        self.look_up(table, moved_on.iter().map(|id| id.late_app_id()).collect())
            .await?;
        let mut wanted: Vec<(String, u64)> = moved_on
            .iter()
            .map(|id| (id.app_id(), id.block()))
            .filter(|k| !self.view.fates.contains_key(k))
            .collect();
        wanted.sort();
        wanted.dedup();
        if let (false, Some(latest)) = (wanted.is_empty(), self.as_of) {
            let fates = history::block_fates(table, latest, &wanted).await?;
            tracing::info!(
                blocks = fates.len(),
                "read the log's history of slots that moved on"
            );
            // Unknown is as of now only: asked again next time.
            self.view
                .fates
                .extend(fates.into_iter().filter(|(_, f)| *f != BlockFate::Unknown));
        }
        Ok(&self.view)
    }

    /// Brings the versions of `apps` into the view (from the table's snapshot
    /// for those not seen yet).
    async fn look_up(&mut self, table: &Table, mut apps: Vec<String>) -> Result<()> {
        apps.sort();
        apps.dedup();
        for app in apps {
            if self.view.versions.contains_key(&app) || self.absent.contains(&app) {
                continue;
            }
            match table.app_version(&app).await? {
                Some(v) => {
                    self.view.versions.insert(app, v);
                }
                None => {
                    self.absent.insert(app);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Option<SequencedId> {
        SequencedId::parse(&BatchId::parse(s).unwrap())
    }

    #[test]
    fn retention_intervals_parse() {
        let day = Duration::from_secs(86400);
        assert_eq!(parse_interval("interval 7 days"), Some(7 * day));
        assert_eq!(
            parse_interval("interval 2 seconds"),
            Some(Duration::from_secs(2))
        );
        assert_eq!(parse_interval("7 days"), None);
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

    fn view(versions: HashMap<String, i64>) -> TxnView {
        TxnView {
            versions,
            fates: HashMap::new(),
        }
    }

    fn committed(p: &Plan) -> HashMap<String, i64> {
        p.txns
            .iter()
            .map(|t| (t.app_id.clone(), t.version))
            .collect()
    }

    #[test]
    fn a_committed_batch_is_left_out_by_the_next_plan() {
        let ids: Vec<_> = ["p/0", "p/1", "legacy", "q/40", "p/1"]
            .iter()
            .map(|s| id(s))
            .collect();
        let first = plan(&ids, &TxnView::default(), 7);
        // The second p/1 of the same flush is left out too.
        assert_eq!(first.keep, [true, true, true, true, false]);
        let table = committed(&first);
        assert_eq!(table["flowlake-batches/p/0"], 0b11);
        assert_eq!(table["flowlake-batches/q/1"], (1 << 32) | (1 << 8));
        assert!(first.txns.iter().all(|t| t.last_updated == Some(7)));
        let table = view(table);
        let again = plan(&ids[..4], &table, 8);
        assert_eq!(again.keep, [false, false, true, false]);
        assert_eq!(again.committed, 3);
        assert!(again.txns.is_empty());
        // A new batch of the same block sets its bit; older bits stay.
        let more = plan(&[id("p/5")], &table, 9);
        assert_eq!(more.txns[0].version, 0b100011);
    }

    #[test]
    fn a_batch_whose_slot_moved_on_is_checked_against_the_history() {
        let later = SLOTS * BLOCK; // same slot as 0, next round
        let slot = "flowlake-batches/p/0".to_string();
        let mut table = view(HashMap::from([(
            slot.clone(),
            ((later / BLOCK) as i64) << 32 | 1,
        )]));
        let ids = [id("p/3"), id("p/4"), id(&format!("p/{later}"))];
        // No history: stored, counted.
        let p = plan(&ids, &table, 0);
        assert_eq!(p.keep, [true, true, false]);
        assert_eq!((p.unverifiable, p.committed), (2, 1));
        assert!(p.txns.is_empty());
        // Block 0 ended with batch 3 in (bit 3), batch 4 not: 3 is left out, 4
        // stored and recorded alone; a copy of 4 in the same flush is left out.
        table
            .fates
            .insert((slot.clone(), 0), BlockFate::Final(0b1000));
        let p = plan(&[ids[0].clone(), ids[1].clone(), ids[1].clone()], &table, 5);
        assert_eq!(p.keep, [false, true, false]);
        assert_eq!((p.committed, p.late, p.unverifiable), (2, 1, 0));
        assert_eq!(
            committed(&p),
            HashMap::from([("flowlake-late/p/4".into(), 1)])
        );
        // Once recorded, every later copy finds it.
        table.versions.extend(committed(&p));
        let p = plan(&[ids[1].clone()], &table, 6);
        assert_eq!((p.keep.as_slice(), p.committed), ([false].as_slice(), 1));
        // A block the slot never held: none of its batches is in.
        table.fates.insert((slot, 0), BlockFate::NeverHeld);
        let p = plan(&[ids[0].clone()], &table, 7);
        assert_eq!((p.keep.as_slice(), p.late), ([true].as_slice(), 1));
        // A slot's version only grows.
        let old = id("p/3").unwrap();
        let next = id(&format!("p/{}", later + 3)).unwrap();
        assert!(next.mark(Some(old.mark(None))) > old.mark(None));
    }

    #[test]
    fn a_batch_before_its_successor_in_one_flush_is_recorded_alone() {
        // p/3 in block 0, then p/259 in block 8 of the same slot: the commit
        // moves the slot to block 8, so block 0's last version in the log
        // lacks p/3's bit. p/3 is recorded alone, and a copy of it in the
        // same flush or any later flush is left out.
        let later = SLOTS * BLOCK + 3;
        let ids = [id("p/3"), id(&format!("p/{later}")), id("p/3")];
        let p = plan(&ids, &TxnView::default(), 0);
        assert_eq!(p.keep, [true, true, false]);
        assert_eq!((p.committed, p.late, p.unverifiable), (1, 0, 0));
        let table = committed(&p);
        assert_eq!(
            table,
            HashMap::from([
                ("flowlake-batches/p/0".to_string(), (8 << 32) | (1 << 3)),
                ("flowlake-late/p/3".to_string(), 1),
            ])
        );
        // The log's history of slot 0 says block 0 was never held.
        let mut view = view(table);
        view.fates.insert(
            ("flowlake-batches/p/0".to_string(), 0),
            BlockFate::NeverHeld,
        );
        let again = plan(&[id("p/3"), id(&format!("p/{later}"))], &view, 1);
        assert_eq!(again.keep, [false, false]);
        assert!(again.txns.is_empty());
    }

    #[test]
    fn a_batch_after_its_successor_in_one_flush() {
        // The slot moves on within the plan: the table's version tells.
        let later = SLOTS * BLOCK;
        let ids = [id(&format!("p/{later}")), id("p/3")];
        let p = plan(&ids, &TxnView::default(), 0);
        assert_eq!(p.keep, [true, true]);
        assert_eq!((p.late, p.unverifiable), (1, 0));
        let table = view(HashMap::from([(
            "flowlake-batches/p/0".to_string(),
            0b1000,
        )]));
        let p = plan(&ids, &table, 0);
        assert_eq!(p.keep, [true, false]);
        assert_eq!(p.committed, 1);
    }
}
