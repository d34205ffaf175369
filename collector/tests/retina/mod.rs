//! Retina-compatible metrics scraped by a real Prometheus.

mod kernel_sources;
pub mod prom;
mod prometheus;
