//! What an incremental export reads: the rows added to the table since the last
//! export, taken from the Delta log's change actions — the `add` actions with
//! `dataChange = true` of every commit after the exported version. Compaction's
//! rewrites (`dataChange = false`) add no rows and are skipped; retention's
//! removals change nothing already exported. Each added file is read at the
//! newest snapshot in which it is still active, so a file that compaction or
//! retention removed after it was added is still read (as long as vacuum has
//! not deleted it: then the export fails and says so, rather than miss rows).

use deltalake_core::DeltaTable;
use deltalake_core::kernel::Action;
use deltalake_core::logstore::get_actions;
use object_store::ObjectStoreExt as _;

use crate::error::{QueryError, Result};

/// Files to read at one table version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesAt {
    pub version: u64,
    pub paths: Vec<String>,
}

/// The files added (`dataChange = true`) by the commits `from + 1 ..= to`,
/// grouped by the version at which to read them: a group ends just before the
/// first commit that removes one of its files.
pub async fn added_since(table: &DeltaTable, from: u64, to: u64) -> Result<Vec<FilesAt>> {
    let store = table.log_store();
    let mut commits = Vec::new();
    for version in from + 1..=to {
        let bytes = store.read_commit_entry(version).await?.ok_or_else(|| {
            QueryError::Config(format!(
                "commit {version} is no longer in the table's log (log retention): \
                 an incremental export from version {from} cannot tell what was added; \
                 export in full to a new destination"
            ))
        })?;
        commits.push((version, get_actions(version, &bytes)?));
    }
    let groups = group(from, to, &commits);
    // Files read at an older version were removed since: vacuum may have deleted them.
    let store = table.object_store();
    for g in groups.iter().filter(|g| g.version < to) {
        for path in &g.paths {
            let location = object_store::path::Path::from_url_path(path)
                .map_err(|e| QueryError::Config(format!("data file path {path:?}: {e}")))?;
            match store.head(&location).await {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(QueryError::Config(format!(
                        "{path} was added after version {from} (the last export) and has been \
                         removed and vacuumed since: its rows can no longer be exported \
                         incrementally; export more often than vacuum deletes removed files"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(groups)
}

fn group(from: u64, to: u64, commits: &[(u64, Vec<Action>)]) -> Vec<FilesAt> {
    let mut out = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    for (version, actions) in commits {
        let removes_pending = actions.iter().any(|a| match a {
            Action::Remove(r) => pending.contains(&r.path),
            _ => false,
        });
        if removes_pending {
            out.push(FilesAt {
                version: version - 1,
                paths: std::mem::take(&mut pending),
            });
        }
        pending.extend(actions.iter().filter_map(|a| match a {
            Action::Add(add) if add.data_change => Some(add.path.clone()),
            _ => None,
        }));
    }
    if !pending.is_empty() {
        out.push(FilesAt {
            version: to.max(from),
            paths: pending,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use deltalake_core::kernel::{Add, Remove};

    use super::*;

    fn add(path: &str, data_change: bool) -> Action {
        Action::Add(Add {
            path: path.into(),
            data_change,
            ..Default::default()
        })
    }

    fn remove(path: &str, data_change: bool) -> Action {
        Action::Remove(Remove {
            path: path.into(),
            data_change,
            ..Default::default()
        })
    }

    #[test]
    fn compaction_rewrites_are_skipped_and_removed_files_read_before_removal() {
        let commits = vec![
            (11, vec![add("a", true)]),
            (12, vec![add("b", true)]),
            // Compaction: a and b merged into c.
            (
                13,
                vec![remove("a", false), remove("b", false), add("c", false)],
            ),
            (14, vec![add("d", true)]),
            // Retention removes c (rows exported already) and d.
            (15, vec![remove("c", true), remove("d", true)]),
            (16, vec![add("e", true)]),
        ];
        assert_eq!(
            group(10, 16, &commits),
            [
                FilesAt {
                    version: 12,
                    paths: vec!["a".into(), "b".into()]
                },
                FilesAt {
                    version: 14,
                    paths: vec!["d".into()]
                },
                FilesAt {
                    version: 16,
                    paths: vec!["e".into()]
                },
            ]
        );
        assert!(group(16, 16, &[]).is_empty());
    }
}
