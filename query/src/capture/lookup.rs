//! Flow → capture: the capture files that hold a flow's packets. The flow
//! table says which pods (and which node interfaces) the 5-tuple ran
//! between in the interval, at the observation point if given; a file
//! covers the flow when one of its captured interfaces is one of those pods
//! (or that node's interface) and was captured during the interval.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::flow::FlowKey;
use super::seen::{rows_as_text, ts};
use super::table::{CaptureRow, rows};
use crate::access::Access;
use crate::engine::QueryEngine;
use crate::error::Result;
use crate::questions::quote;

/// A captured interface that covers the flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Covering {
    pub id: String,
    pub node: String,
    pub namespace: String,
    pub pod: String,
    pub interface: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub object_path: String,
    /// `flowlake capture download <id> --node <node> --flow '<flow>'`.
    pub download: String,
}

fn flow_condition(flow: &FlowKey) -> String {
    let proto = quote(&flowlake_schemas::Protocol::from_number(flow.protocol).name());
    let end = |ip: &str, port: &str, a: &std::net::SocketAddr| {
        let port = if a.port() == 0 {
            String::new()
        } else {
            format!(" AND {port} = {}", a.port())
        };
        format!("{ip} = {}{port}", quote(&a.ip().to_string()))
    };
    let (a, b) = (&flow.a, &flow.b);
    format!(
        "protocol = {proto} AND (({} AND {}) OR ({} AND {}))",
        end("src_ip", "src_port", a),
        end("dst_ip", "dst_port", b),
        end("src_ip", "src_port", b),
        end("dst_ip", "dst_port", a),
    )
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The captured interfaces covering `flow` in `[from, to]` that `access` may see.
pub async fn covering(
    engine: &QueryEngine,
    access: &Access,
    flow: &FlowKey,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    observation_point: Option<&str>,
) -> Result<Vec<Covering>> {
    let point = observation_point
        .map(|p| format!(" AND observation_point = {}", quote(p)))
        .unwrap_or_default();
    let sql = format!(
        "SELECT DISTINCT src_namespace, src_pod, dst_namespace, dst_pod, node, interface \
         FROM flows WHERE interval_start <= {to} AND interval_start >= {slack} \
           AND interval_end >= {from} AND {cond}{point}",
        to = ts(to),
        from = ts(from),
        slack = ts(from - chrono::Duration::hours(1)),
        cond = flow_condition(flow),
    );
    let batches = engine
        .run(&sql, "capture", false, access)
        .await?
        .collect()
        .await?;
    let mut pods = BTreeSet::new();
    let mut interfaces = BTreeSet::new();
    for m in rows_as_text(&batches)? {
        let g = |k: &str| m.get(k).cloned().unwrap_or_default();
        for side in ["src", "dst"] {
            let (ns, pod) = (g(&format!("{side}_namespace")), g(&format!("{side}_pod")));
            if !ns.is_empty() && !pod.is_empty() {
                pods.insert((ns, pod));
            }
        }
        interfaces.insert((g("node"), g("interface")));
    }
    let overlaps = |r: &CaptureRow| {
        r.start.is_none_or(|s| s <= micros(to)) && r.end.is_none_or(|e| e >= micros(from))
    };
    let stamp = |t: Option<i64>| t.and_then(DateTime::from_timestamp_micros);
    Ok(rows(engine.captures())
        .await?
        .into_iter()
        .filter(|r| access.may_read(&r.namespace) && overlaps(r))
        .filter(|r| {
            pods.contains(&(r.namespace.clone(), r.pod.clone()))
                || interfaces.contains(&(r.node.clone(), r.interface.clone()))
        })
        .map(|r| Covering {
            download: format!(
                "flowlake capture download {} --node {} --flow '{flow}'",
                r.id, r.node
            ),
            start: stamp(r.start),
            end: stamp(r.end),
            id: r.id,
            node: r.node,
            namespace: r.namespace,
            pod: r.pod,
            interface: r.interface,
            object_path: r.object_path,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flow_condition_takes_both_directions() {
        let k: FlowKey = "tcp 10.0.0.1:1234 10.0.0.2:80".parse().unwrap();
        assert_eq!(
            flow_condition(&k),
            "protocol = 'TCP' AND ((src_ip = '10.0.0.1' AND src_port = 1234 AND \
             dst_ip = '10.0.0.2' AND dst_port = 80) OR (src_ip = '10.0.0.2' AND \
             src_port = 80 AND dst_ip = '10.0.0.1' AND dst_port = 1234))"
        );
        let icmp: FlowKey = "icmp 10.0.0.1 10.0.0.2".parse().unwrap();
        assert!(
            flow_condition(&icmp)
                .starts_with("protocol = 'ICMP' AND ((src_ip = '10.0.0.1' AND dst_ip")
        );
    }
}
