//! Packet capture on the node: the collector's part of a Flowlake capture.
//!
//! `filter` compiles a tcpdump-style expression to classic BPF (no tcpdump or
//! libpcap needed on nodes); `socket` opens an AF_PACKET socket per pod
//! interface with that filter in the kernel; `engine` runs a node's capture
//! under its `limits` and writes it with `pcapng`. The filter, limits,
//! selection and pcapng parts live in `flowlake_schemas::capture` (the
//! services check requests and read files with them) and are re-exported
//! here. See docs/capture.md.

pub mod bridge;
pub mod control;
pub mod engine;
pub mod error;
pub mod pods;
pub mod resolve;
pub mod ring;
pub mod runner;
pub mod snapshot;
pub mod socket;
pub mod state;
pub mod upload;

pub use flowlake_schemas::capture::{filter, limits, pcapng, select};

pub use engine::{CaptureSpec, EngineConfig, InterfaceSummary, StopReason, Summary, Target};
pub use error::CaptureError;
pub use filter::Filter;
pub use limits::{Limits, Requested};
pub use select::{LabelSelector, PodInfo, Selector};
