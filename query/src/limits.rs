//! The limits every query runs under (a leaf module: plain data).

use std::time::Duration;

/// Limits applied to every query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    pub memory_bytes: usize,
    pub timeout: Duration,
    pub max_rows: usize,
    /// Queries planned or running at once; more wait for a slot until their deadline.
    pub max_concurrent: usize,
    /// Parquet footers and page indexes kept in memory between queries (the runtime's
    /// file metadata cache, least recently used out); a flows file takes
    /// 0.18 MB with 0.4 M rows, 0.37 MB with 1 M rows.
    pub metadata_cache_bytes: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            memory_bytes: 2 << 30,
            timeout: Duration::from_secs(60),
            max_rows: 1_000_000,
            max_concurrent: 4,
            metadata_cache_bytes: 256 << 20,
        }
    }
}
