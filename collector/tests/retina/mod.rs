//! Retina-compatible metrics scraped by a real Prometheus.

pub mod prom;
mod prometheus;
