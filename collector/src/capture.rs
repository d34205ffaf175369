//! Packet capture on the node: the collector's part of a Flowlake capture.
//!
//! `filter` compiles a tcpdump-style expression to classic BPF (no tcpdump or
//! libpcap needed on nodes); `socket` opens an AF_PACKET socket per pod
//! interface with that filter in the kernel; `engine` runs a node's capture
//! under its `limits` and writes it with `pcapng`. See docs/capture.md.

pub mod engine;
pub mod error;
pub mod filter;
pub mod limits;
pub mod pcapng;
pub mod resolve;
pub mod runner;
pub mod select;
pub mod socket;
pub mod upload;

pub use engine::{CaptureSpec, EngineConfig, InterfaceSummary, StopReason, Summary, Target};
pub use error::CaptureError;
pub use filter::Filter;
pub use limits::{Limits, Requested};
pub use select::{LabelSelector, PodInfo, Selector};
