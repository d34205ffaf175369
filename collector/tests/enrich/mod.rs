//! Kubernetes enrichment against a fake API server.

mod apiserver;
mod fake_kube;
mod kube_watch;
