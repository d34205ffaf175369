//! The Kubernetes API server's addresses, discovered from the cluster: the
//! `kubernetes` Service in `default` (its cluster IPs, what pods connect to) and its
//! EndpointSlices (`kubernetes.io/service-name=kubernetes`: the API servers' own
//! addresses, what leaves the node after kube-proxy's DNAT). Two kube-rs watchers
//! with a field and a label selector keep [`ApiServerAddresses`] current: an API
//! server added, moved or removed changes the set at once. A hand-set list
//! (`--metrics-apiserver-ips`) replaces discovery.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::{EnrichConfig, EnrichError, EnrichSource, Result, install_crypto_provider};

/// Namespace and name of the API server's Service.
pub const NAMESPACE: &str = "default";
pub const SERVICE: &str = "kubernetes";
/// Selects the Service's EndpointSlices.
pub const SLICE_SELECTOR: &str = "kubernetes.io/service-name=kubernetes";

/// The API server's addresses, shared between discovery and the metrics that
/// watch them. Cheap to clone; clones share the set.
#[derive(Debug, Clone, Default)]
pub struct ApiServerAddresses(Arc<RwLock<BTreeSet<IpAddr>>>);

impl ApiServerAddresses {
    /// A set that starts with `ips`.
    pub fn fixed(ips: impl IntoIterator<Item = IpAddr>) -> Self {
        let a = Self::default();
        a.set(ips);
        a
    }

    /// Whether `ip` is one of the API server's.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.read().expect("addresses lock").contains(&ip)
    }

    /// Every address, sorted.
    pub fn get(&self) -> Vec<IpAddr> {
        self.0
            .read()
            .expect("addresses lock")
            .iter()
            .copied()
            .collect()
    }

    /// Replaces the set; returns whether it changed.
    pub fn set(&self, ips: impl IntoIterator<Item = IpAddr>) -> bool {
        let new: BTreeSet<IpAddr> = ips.into_iter().collect();
        let mut cur = self.0.write().expect("addresses lock");
        let changed = *cur != new;
        *cur = new;
        changed
    }
}

/// The API server's addresses named by its Service and EndpointSlices: the
/// cluster IPs (`None` and empty entries skipped) and every endpoint address not
/// marked unready.
pub fn addresses<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let ips = spec.cluster_ips.iter().flatten().chain(&spec.cluster_ip);
        out.extend(ips.filter_map(|ip| ip.parse::<IpAddr>().ok()));
    }
    for slice in slices {
        for e in slice.endpoints.iter().flatten() {
            let ready = e.conditions.as_ref().and_then(|c| c.ready) != Some(false);
            if ready {
                out.extend(e.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()));
            }
        }
    }
    out
}

/// Watches the `kubernetes` Service and its EndpointSlices through `client` and
/// keeps `addrs` current until `shutdown`.
pub fn start(
    client: Client,
    addrs: ApiServerAddresses,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let slices: Api<EndpointSlice> = Api::namespaced(client, NAMESPACE);
    let (svc_store, svc_w) = reflector::store();
    let (slice_store, slice_w) = reflector::store();
    let svc_events = watcher(
        services,
        watcher::Config::default().fields(&format!("metadata.name={SERVICE}")),
    )
    .default_backoff()
    .reflect(svc_w)
    .map(|e| e.map(|_| ()));
    let slice_events = watcher(slices, watcher::Config::default().labels(SLICE_SELECTOR))
        .default_backoff()
        .reflect(slice_w)
        .map(|e| e.map(|_| ()));
    tokio::spawn(async move {
        let mut events = std::pin::pin!(futures::stream::select(svc_events, slice_events));
        loop {
            let item = tokio::select! {
                _ = shutdown.cancelled() => return,
                item = events.next() => item,
            };
            match item {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "API server discovery: watch failed, retrying")
                }
                Some(Ok(())) => refresh(&addrs, &svc_store, &slice_store),
            }
        }
    })
}

fn refresh(addrs: &ApiServerAddresses, services: &Store<Service>, slices: &Store<EndpointSlice>) {
    let (services, slices) = (services.state(), slices.state());
    let found = addresses(
        services.iter().map(|s| s.as_ref()),
        slices.iter().map(|s| s.as_ref()),
    );
    if addrs.set(found) {
        tracing::info!(addresses = ?addrs.get(), "API server addresses discovered");
    }
}

/// Discovery as the enrichment settings allow: with a Kubernetes configuration
/// (in-cluster or kubeconfig) when the source is `kubernetes` or `auto`; `None`
/// otherwise (outside Kubernetes, `auto` finds no configuration and nothing runs).
pub async fn start_from_config(
    cfg: &EnrichConfig,
    addrs: ApiServerAddresses,
    shutdown: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let config = match cfg.source {
        EnrichSource::None | EnrichSource::StaticFile(_) => return Ok(None),
        EnrichSource::Kubernetes => kube::Config::infer()
            .await
            .map_err(EnrichError::KubeConfig)?,
        EnrichSource::Auto => match kube::Config::infer().await {
            Ok(c) => c,
            Err(_) => return Ok(None),
        },
    };
    install_crypto_provider();
    let client = Client::try_from(config).map_err(EnrichError::KubeClient)?;
    Ok(Some(start(client, addrs, shutdown)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ips: &[&str]) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"clusterIP": ips.first(), "clusterIPs": ips}
        }))
        .unwrap()
    }

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "addressType": "IPv4", "endpoints": endpoints
        }))
        .unwrap()
    }

    #[test]
    fn cluster_ips_and_ready_endpoints() {
        let s = svc(&["10.96.0.1", "fd00::1"]);
        let sl = slice(serde_json::json!([
            {"addresses": ["192.168.0.10"], "conditions": {"ready": true}},
            {"addresses": ["192.168.0.11"]},
            {"addresses": ["192.168.0.12"], "conditions": {"ready": false}}
        ]));
        let got: Vec<String> = addresses([&s], [&sl])
            .iter()
            .map(|ip| ip.to_string())
            .collect();
        assert_eq!(
            got,
            ["10.96.0.1", "192.168.0.10", "192.168.0.11", "fd00::1"]
        );
    }

    #[test]
    fn set_reports_changes() {
        let a = ApiServerAddresses::fixed(["10.0.0.1".parse().unwrap()]);
        assert!(a.contains("10.0.0.1".parse().unwrap()));
        assert!(!a.set(["10.0.0.1".parse().unwrap()]));
        assert!(a.set(["10.0.0.2".parse().unwrap()]));
        assert!(!a.contains("10.0.0.1".parse().unwrap()));
    }
}
