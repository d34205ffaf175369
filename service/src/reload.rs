//! A value loaded from files and loaded again when they change: the token file, a TLS
//! certificate and key, a client's token or CA file. The files are looked at (`stat`)
//! at most once every `recheck` by the injected clock, and read again when the size,
//! modification time or inode of any of them changed (a Kubernetes Secret update
//! swaps the files). A load that fails keeps the previous value, is logged, and is
//! tried again when the files change again (say the certificate was replaced and the
//! key not yet).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A monotonic clock, injected so tests move time instead of sleeping.
pub type Monotonic = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The real monotonic clock.
pub fn system_monotonic() -> Monotonic {
    Arc::new(Instant::now)
}

/// Identity of a file's content as far as `stat` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

struct Current<T> {
    /// The files' stamps when `value` was loaded.
    loaded: Vec<Option<Stamp>>,
    /// The stamps of the last load that failed (not tried again until they change).
    failed: Option<Vec<Option<Stamp>>>,
    checked: Instant,
    value: Arc<T>,
}

/// `T` loaded from `paths`, reloaded when they change.
pub struct Reloading<T> {
    what: &'static str,
    paths: Vec<PathBuf>,
    recheck: Duration,
    clock: Monotonic,
    current: Mutex<Current<T>>,
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("what", &self.what)
            .field("paths", &self.paths)
            .finish()
    }
}

impl<T> Reloading<T> {
    /// Loads the value now (an error if `load` fails); `what` names it in the logs.
    pub fn open<E>(
        what: &'static str,
        paths: Vec<PathBuf>,
        recheck: Duration,
        clock: Monotonic,
        load: impl FnOnce() -> Result<T, E>,
    ) -> Result<Self, E> {
        let loaded = paths.iter().map(|p| stamp(p)).collect();
        let value = Arc::new(load()?);
        let checked = clock();
        Ok(Reloading {
            what,
            paths,
            recheck,
            clock,
            current: Mutex::new(Current {
                loaded,
                failed: None,
                checked,
                value,
            }),
        })
    }

    /// The files this value comes from.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The current value: loaded again with `load` first when the files changed
    /// (looked at no more than once every `recheck`).
    pub fn get<E: std::fmt::Display>(&self, load: impl FnOnce() -> Result<T, E>) -> Arc<T> {
        let mut current = self.current.lock().expect("reload lock");
        let now = (self.clock)();
        if now.saturating_duration_since(current.checked) < self.recheck {
            return Arc::clone(&current.value);
        }
        current.checked = now;
        let stamps: Vec<Option<Stamp>> = self.paths.iter().map(|p| stamp(p)).collect();
        if stamps == current.loaded || current.failed.as_ref() == Some(&stamps) {
            return Arc::clone(&current.value);
        }
        match load() {
            Ok(value) => {
                tracing::info!(what = self.what, paths = ?self.paths, "reloaded");
                current.value = Arc::new(value);
                current.loaded = stamps;
                current.failed = None;
            }
            Err(e) => {
                tracing::warn!(what = self.what, error = %e, "not reloaded; keeping the previous one");
                current.failed = Some(stamps);
            }
        }
        Arc::clone(&current.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock the test moves.
    fn manual() -> (Monotonic, Arc<Mutex<Instant>>) {
        let now = Arc::new(Mutex::new(Instant::now()));
        let read = Arc::clone(&now);
        (Arc::new(move || *read.lock().unwrap()), now)
    }

    fn write(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }

    fn parse(path: &Path) -> Result<u32, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        text.trim().parse().map_err(|e| format!("{text:?}: {e}"))
    }

    #[test]
    fn reloads_on_change_after_the_recheck_interval_and_keeps_the_last_good_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        write(&path, "1");
        let (clock, now) = manual();
        let recheck = Duration::from_secs(1);
        let r = Reloading::open("n", vec![path.clone()], recheck, clock, || parse(&path)).unwrap();
        let loads = std::cell::Cell::new(0);
        let get = || {
            *r.get(|| {
                loads.set(loads.get() + 1);
                parse(&path)
            })
        };
        assert_eq!(get(), 1);

        // Changed, but not looked at before the interval is over.
        write(&path, "2");
        assert_eq!(get(), 1);
        *now.lock().unwrap() += recheck;
        assert_eq!(get(), 2);
        assert_eq!(loads.get(), 1);

        // Unchanged: not read again.
        *now.lock().unwrap() += recheck;
        assert_eq!(get(), 2);
        assert_eq!(loads.get(), 1);

        // A broken file keeps the value and is not read again until it changes.
        write(&path, "not a number");
        *now.lock().unwrap() += recheck;
        assert_eq!(get(), 2);
        *now.lock().unwrap() += recheck;
        assert_eq!(get(), 2);
        assert_eq!(loads.get(), 2);

        // Fixed: picked up.
        write(&path, "3");
        *now.lock().unwrap() += recheck;
        assert_eq!(get(), 3);
        assert_eq!(loads.get(), 3);
    }

    #[test]
    fn a_failed_first_load_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing");
        let (clock, _) = manual();
        let r = Reloading::open("n", vec![path.clone()], Duration::ZERO, clock, || {
            parse(&path)
        });
        assert!(r.is_err());
    }
}
