//! Metric names in one place. Retina's names, without their `networkobservability_`
//! prefix (added by the sub-registry).

/// Prefix of every Retina metric.
pub const PREFIX: &str = crate::plugins::source::PREFIX;
pub use crate::plugins::source::STATISTIC_NAME;
/// Prefix of Flowlake's own metrics about this module.
pub const SELF_PREFIX: &str = "flowlake_collector_retina";

pub const FORWARD_COUNT: &str = "forward_count";
pub const FORWARD_BYTES: &str = "forward_bytes";
pub const DROP_COUNT: &str = "drop_count";
pub const DROP_BYTES: &str = "drop_bytes";
pub const TCP_RETRANSMISSION_COUNT: &str = "tcp_retransmission_count";
pub const DNS_REQUEST_COUNT: &str = "dns_request_count";
pub const DNS_RESPONSE_COUNT: &str = "dns_response_count";
pub const LOST_EVENTS_COUNTER: &str = "lost_events_counter";
pub const TCP_STATE: &str = "tcp_state";
pub const TCP_CONNECTION_STATS: &str = "tcp_connection_stats";
pub const IP_CONNECTION_STATS: &str = "ip_connection_stats";
pub const UDP_CONNECTION_STATS: &str = "udp_connection_stats";

pub const ADV_FORWARD_COUNT: &str = "adv_forward_count";
pub const ADV_FORWARD_BYTES: &str = "adv_forward_bytes";
pub const ADV_DROP_COUNT: &str = "adv_drop_count";
pub const ADV_DROP_BYTES: &str = "adv_drop_bytes";
pub const ADV_TCPFLAGS_COUNT: &str = "adv_tcpflags_count";
pub const ADV_TCPRETRANS_COUNT: &str = "adv_tcpretrans_count";
pub const ADV_DNS_REQUEST_COUNT: &str = "adv_dns_request_count";
pub const ADV_DNS_RESPONSE_COUNT: &str = "adv_dns_response_count";
pub const ADV_APISERVER_LATENCY: &str = "adv_node_apiserver_latency";
pub const ADV_APISERVER_HANDSHAKE: &str = "adv_node_apiserver_tcp_handshake_latency";
pub const ADV_APISERVER_NO_RESPONSE: &str = "adv_node_apiserver_no_response";

/// Counters whose exposed name is Retina's (no `_total` suffix). The text format
/// 0.0.4 allows a counter of any name; prometheus-client always appends `_total`,
/// which [`super::http::encode`] removes for exactly these names.
pub const RETINA_COUNTERS: &[&str] = &[
    FORWARD_COUNT,
    FORWARD_BYTES,
    DROP_COUNT,
    DROP_BYTES,
    TCP_RETRANSMISSION_COUNT,
    DNS_REQUEST_COUNT,
    DNS_RESPONSE_COUNT,
    LOST_EVENTS_COUNTER,
    ADV_FORWARD_COUNT,
    ADV_FORWARD_BYTES,
    ADV_DROP_COUNT,
    ADV_DROP_BYTES,
    ADV_TCPFLAGS_COUNT,
    ADV_TCPRETRANS_COUNT,
    ADV_DNS_REQUEST_COUNT,
    ADV_DNS_RESPONSE_COUNT,
    ADV_APISERVER_NO_RESPONSE,
];

/// Label keys.
pub const DIRECTION: &str = "direction";
pub const REASON: &str = "reason";
pub const TYPE: &str = "type";
pub const STATE: &str = "state";
/// Label of Flowlake's own per-source status metrics.
pub const FLAG: &str = "flag";
pub const QUERY: &str = "query";
pub const QUERY_TYPE: &str = "query_type";
pub const RETURN_CODE: &str = "return_code";
pub const RESPONSE: &str = "response";
pub const NUM_RESPONSE: &str = "num_response";
