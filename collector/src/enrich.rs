//! Kubernetes context for flows: both ends of every record get namespace, pod,
//! workload and kind, allowed labels, node, service and zone.
//!
//! Sources ([`EnrichSource`]): the cluster through kube-rs reflectors ([`cluster`]),
//! a static file of IP → identity ([`static_file`]), or nothing. All fill one
//! time-aware [`index::IpIndex`]; see `docs/rbac.md` for the permissions the
//! Kubernetes source needs (list and watch only).

pub mod apiserver;
pub mod cluster;
pub mod config;
pub mod error;
pub mod identity;
pub mod index;
pub mod metrics;
pub mod static_file;

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use flowlake_schemas::{Endpoint, FlowRecord, Identity};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

pub use apiserver::ApiServerAddresses;
pub use cluster::ClusterWatch;
pub use config::{EnrichArgs, EnrichConfig, EnrichSource};
pub use error::{EnrichError, Result};
pub use identity::LabelFilter;
pub use index::IpIndex;
pub use metrics::EnrichMetrics;

/// Injected wall clock (tests drive time by hand).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Selects rustls's ring provider for the process unless one is chosen already.
/// Needed before any kube client is built: a binary that also links the object
/// stores carries two rustls providers, and rustls then refuses to pick one.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// Names the ends of flow records. Cheap to clone; clones share the index.
#[derive(Clone)]
pub struct Enricher {
    index: Option<Arc<RwLock<IpIndex>>>,
    metrics: EnrichMetrics,
}

impl Enricher {
    /// An enricher that names nothing (outside Kubernetes, no identity file).
    pub fn disabled(metrics: EnrichMetrics) -> Self {
        Enricher {
            index: None,
            metrics,
        }
    }

    /// An enricher over an index filled elsewhere (tests, benchmarks, static files).
    pub fn with_index(index: Arc<RwLock<IpIndex>>, metrics: EnrichMetrics) -> Self {
        Enricher {
            index: Some(index),
            metrics,
        }
    }

    /// An enricher from a static IP → identity file.
    pub fn from_static_file(path: &std::path::Path, metrics: EnrichMetrics) -> Result<Self> {
        let mut index = IpIndex::new(chrono::Duration::zero());
        static_file::fill(&mut index, static_file::load(path)?);
        metrics.addresses.set(index.len() as i64);
        tracing::info!(path = %path.display(), addresses = index.len(), "identities loaded from file");
        Ok(Self::with_index(Arc::new(RwLock::new(index)), metrics))
    }

    /// An enricher fed by watching the cluster through `client`; the watchers run
    /// until `shutdown` fires.
    pub fn kubernetes(
        client: kube::Client,
        cfg: &EnrichConfig,
        clock: Clock,
        metrics: EnrichMetrics,
        shutdown: CancellationToken,
    ) -> (Self, ClusterWatch) {
        let grace = chrono::Duration::from_std(cfg.delete_grace).unwrap_or(chrono::Duration::MAX);
        let index = Arc::new(RwLock::new(IpIndex::new(grace)));
        let watch = cluster::start(
            client,
            Arc::clone(&index),
            LabelFilter::new(cfg.label_allow.iter().cloned()),
            clock,
            metrics.clone(),
            shutdown,
        );
        (Self::with_index(index, metrics), watch)
    }

    /// The enricher `cfg` asks for. `Auto` uses the cluster when a Kubernetes
    /// configuration is found (in-cluster or kubeconfig) and nothing otherwise.
    pub async fn from_config(
        cfg: &EnrichConfig,
        registry: &mut Registry,
        shutdown: CancellationToken,
    ) -> Result<(Self, Option<ClusterWatch>)> {
        let metrics = EnrichMetrics::register(registry);
        install_crypto_provider();
        let kube = |config: kube::Config| {
            let client = kube::Client::try_from(config).map_err(EnrichError::KubeClient)?;
            let (e, w) = Self::kubernetes(
                client,
                cfg,
                system_clock(),
                metrics.clone(),
                shutdown.clone(),
            );
            Ok((e, Some(w)))
        };
        match &cfg.source {
            EnrichSource::None => Ok((Self::disabled(metrics), None)),
            EnrichSource::StaticFile(path) => Ok((Self::from_static_file(path, metrics)?, None)),
            EnrichSource::Kubernetes => kube(
                kube::Config::infer()
                    .await
                    .map_err(EnrichError::KubeConfig)?,
            ),
            EnrichSource::Auto => match kube::Config::infer().await {
                Ok(config) => kube(config),
                Err(e) => {
                    tracing::info!(reason = %e, "no Kubernetes configuration: flows are not enriched");
                    Ok((Self::disabled(metrics.clone()), None))
                }
            },
        }
    }

    /// The address index, when there is one (captures list the node's pods from it).
    pub fn index(&self) -> Option<Arc<RwLock<IpIndex>>> {
        self.index.clone()
    }

    /// Whether this enricher can name anything.
    pub fn is_enabled(&self) -> bool {
        self.index.is_some()
    }

    /// Who owned `ip` at `at`.
    pub fn lookup(&self, ip: IpAddr, at: DateTime<Utc>) -> Option<Arc<Identity>> {
        let index = self.index.as_ref()?.read().expect("index lock");
        index.lookup(ip, at).cloned()
    }

    /// Fills the identity of both ends of `record` (kept when already set).
    pub fn enrich(&self, record: &mut FlowRecord) {
        self.enrich_all(std::slice::from_mut(record));
    }

    /// Fills both ends of every record, taking the index lock once. A flow's ends are
    /// named as of the end of its interval, so late flows of a deleted pod keep its name.
    pub fn enrich_all(&self, records: &mut [FlowRecord]) {
        self.metrics.records_enriched.inc_by(records.len() as u64);
        let Some(index) = &self.index else {
            return;
        };
        let index = index.read().expect("index lock");
        let mut unnamed = 0;
        let mut name = |end: &mut Endpoint, at| {
            if end.identity.is_none() {
                end.identity = index.lookup(end.ip, at).cloned();
                unnamed += u64::from(end.identity.is_none());
            }
        };
        for r in records.iter_mut() {
            name(&mut r.src, r.interval_end);
            name(&mut r.dst, r.interval_end);
        }
        self.metrics.endpoints_unnamed.inc_by(unnamed);
    }
}
