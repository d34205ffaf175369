//! Packet captures, the query service's side (issue #15, docs/capture.md):
//! the API that creates, lists, shows, downloads and deletes captures
//! ([`http`], scope `capture`), the stored objects under `_captures/` of the
//! table root ([`store`]), the `captures` SQL table ([`table`]), the flows a
//! capture saw ([`seen`]), flow → capture lookup ([`lookup`]), one flow's
//! packets out of a file ([`flow`]), retention ([`retention`]) and the
//! `flowlake capture` client ([`client`]).

pub mod client;
pub mod create;
pub mod flow;
pub mod http;
pub mod lookup;
pub mod retention;
pub mod seen;
pub mod store;
pub mod table;

pub use store::CaptureFiles;
pub use table::{CAPTURES, CapturesTable};

use std::time::Duration;

/// How the service treats captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureSettings {
    /// Serve the capture API while authentication is off (everyone may capture).
    pub without_auth: bool,
    /// Captures are removed this long after they ended.
    pub retention: Duration,
    /// How often retention runs (`None`: never in this process).
    pub retention_every: Option<Duration>,
}

/// Default retention: a week.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(168 * 3600);

impl Default for CaptureSettings {
    fn default() -> Self {
        CaptureSettings {
            without_auth: false,
            retention: DEFAULT_RETENTION,
            retention_every: Some(Duration::from_secs(600)),
        }
    }
}
