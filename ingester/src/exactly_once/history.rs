//! What a slot held before it moved on: the log's commits read newest first until
//! the slot's last version in the block asked about (its final bitmap), a version
//! before it (the slot never held the block), or a commit that is gone (log
//! retention cleaned it up: unknown).

use std::collections::BTreeMap;

use deltalake_core::kernel::Action;

use crate::error::Result;
use crate::table::Table;

/// Commits read at once.
const CHUNK: u64 = 16;

/// What the log says of a block its slot left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockFate {
    /// The slot's last version in the block: bit `i` set, batch `i` of the block
    /// went in through the slot.
    Final(i64),
    /// The slot never held the block: none of its batches went in through it.
    NeverHeld,
    /// The commits that would tell are gone.
    Unknown,
}

/// The fate of each `(slot app id, block)` of `wanted`, from the commits up to
/// `latest` (newest first; one pass for all of them).
pub async fn block_fates(
    table: &Table,
    latest: u64,
    wanted: &[(String, u64)],
) -> Result<BTreeMap<(String, u64), BlockFate>> {
    let mut open: BTreeMap<(String, u64), ()> = wanted.iter().cloned().map(|k| (k, ())).collect();
    let mut out = BTreeMap::new();
    let store = table.delta().log_store();
    let mut next = Some(latest);
    while let Some(hi) = next
        && !open.is_empty()
    {
        let lo = hi.saturating_sub(CHUNK - 1);
        let versions: Vec<u64> = (lo..=hi).rev().collect();
        let read =
            futures::future::try_join_all(versions.iter().map(|v| store.read_commit_entry(*v)))
                .await?;
        for (version, bytes) in versions.into_iter().zip(read) {
            let Some(bytes) = bytes else {
                for (k, ()) in std::mem::take(&mut open) {
                    out.insert(k, BlockFate::Unknown);
                }
                return Ok(out);
            };
            for action in deltalake_core::logstore::get_actions(version, &bytes)? {
                let Action::Txn(t) = action else { continue };
                let held = (t.version >> 32) as u64;
                let decided: Vec<(String, u64)> = open
                    .keys()
                    .filter(|(app, block)| *app == t.app_id && held <= *block)
                    .cloned()
                    .collect();
                for key in decided {
                    let fate = if held == key.1 {
                        BlockFate::Final(t.version)
                    } else {
                        BlockFate::NeverHeld
                    };
                    open.remove(&key);
                    out.insert(key, fate);
                }
            }
        }
        next = lo.checked_sub(1);
    }
    // Back at the table's first commit: the slot never held these blocks.
    for (k, ()) in open {
        out.insert(k, BlockFate::NeverHeld);
    }
    Ok(out)
}
