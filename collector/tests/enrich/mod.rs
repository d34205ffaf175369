//! Kubernetes enrichment against a fake API server.

mod fake_kube;
mod kube_watch;
