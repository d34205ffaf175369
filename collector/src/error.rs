//! The collector's error type.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CollectorError {
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("BTF: {0}")]
    Btf(String),
    #[error("load eBPF object {object}")]
    Load {
        object: &'static str,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("eBPF program {program}")]
    Program {
        program: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("eBPF map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("no eBPF program could be loaded: {0}")]
    NothingLoaded(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("enrichment")]
    Enrich(#[from] crate::enrich::EnrichError),
    #[error("shipping")]
    Ship(#[from] crate::ship::ShipError),
    #[error("task failed: {0}")]
    Task(String),
}

impl CollectorError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        CollectorError::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T, E = CollectorError> = std::result::Result<T, E>;
