//! When rollups are built and how long stale ones are kept (a leaf module: plain data).

use std::time::Duration;

/// When an hour is rolled up, and how long a stale rollup is kept for queries that
/// planned with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupPolicy {
    /// An hour is rolled up once it ended this long ago (late data and compaction after
    /// that make the rollup stale, and it is rebuilt).
    pub grace: Duration,
    /// Stale rollups are deleted when older than this (longer than any query runs).
    pub keep_stale: Duration,
}

impl Default for RollupPolicy {
    fn default() -> Self {
        RollupPolicy {
            grace: Duration::from_secs(5 * 60),
            keep_stale: Duration::from_secs(60 * 60),
        }
    }
}
