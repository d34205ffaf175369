//! Retina-compatible metrics scraped by a real Prometheus.

mod prometheus;
