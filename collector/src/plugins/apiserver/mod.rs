//! The `apiserver` plugin: Retina's API server metrics
//! (`adv_node_apiserver_latency`, `adv_node_apiserver_tcp_handshake_latency`,
//! `adv_node_apiserver_no_response`), counted from enriched flow records to
//! the API server's addresses (`retina/apiserver.rs`), which are
//! discovered from the cluster's `kubernetes` Service and its EndpointSlices
//! (`enrich/apiserver.rs`) unless `--metrics-apiserver-ips` names them.
//! Disabled, neither the histograms nor the discovery exist. It reads flow
//! records, so it needs the `flows` plugin.

use super::Plugin;

/// The `apiserver` plugin.
#[derive(Debug)]
pub struct ApiServer;

impl Plugin for ApiServer {
    fn name(&self) -> &'static str {
        "apiserver"
    }

    fn about(&self) -> &'static str {
        "Retina's API server latency and no-response metrics, API server discovered from the cluster"
    }

    fn needs(&self) -> &'static [&'static str] {
        &["flows"]
    }
}
