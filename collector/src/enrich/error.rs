//! Errors of the enricher.

use std::path::PathBuf;

/// Why the enricher could not start.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("cannot read identity file {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("identity file {path} is not valid: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("identity file {path}: bad address {ip:?}")]
    BadAddress { path: PathBuf, ip: String },
    #[error("no Kubernetes configuration (in-cluster or kubeconfig)")]
    KubeConfig(#[source] kube::config::InferConfigError),
    #[error("cannot create the Kubernetes client")]
    KubeClient(#[source] kube::Error),
}

/// Result of the enricher.
pub type Result<T, E = EnrichError> = std::result::Result<T, E>;
