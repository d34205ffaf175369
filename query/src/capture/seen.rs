//! What the flow table says about a capture: whether its namespace is known
//! at all, and the flows of the captured pods in the capture's interval.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use flowlake_schemas::capture::{CaptureRequest, FileDescription, NodeStatus};
use flowlake_service::Principal;
use serde::{Deserialize, Serialize};

use crate::access::Access;
use crate::engine::QueryEngine;
use crate::error::{QueryError, Result};
use crate::questions::quote;

/// A namespace is known when a flow of it was stored this recently.
pub const NAMESPACE_LOOKBACK_HOURS: i64 = 24;
/// Most flows a status lists (the largest by bytes).
pub const MAX_SEEN_FLOWS: usize = 1000;
/// Flow records start at most this long before a capture and still count.
const FLOW_SLACK_SECS: i64 = 300;

/// A flow of a captured pod, summed over the capture's interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenFlow {
    pub observation_point: String,
    pub protocol: String,
    pub src_namespace: String,
    pub src_pod: String,
    pub src_ip: String,
    pub src_port: String,
    pub dst_namespace: String,
    pub dst_pod: String,
    pub dst_ip: String,
    pub dst_port: String,
    pub packets: String,
    pub bytes: String,
}

pub fn ts(t: DateTime<Utc>) -> String {
    quote(&t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

/// Every row of `batches` as column name → value text ("" for NULL).
pub fn rows_as_text(batches: &[RecordBatch]) -> Result<Vec<BTreeMap<String, String>>> {
    let mut out = Vec::new();
    let options = FormatOptions::default();
    for b in batches {
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for row in 0..b.num_rows() {
            let mut m = BTreeMap::new();
            for (i, f) in b.schema().fields().iter().enumerate() {
                let v = if b.column(i).is_null(row) {
                    String::new()
                } else {
                    f_value(&formatters[i], row)
                };
                m.insert(f.name().clone(), v);
            }
            out.push(m);
        }
    }
    Ok(out)
}

fn f_value(f: &ArrayFormatter<'_>, row: usize) -> String {
    f.value(row).to_string()
}

/// Whether a flow of `namespace` is in the table from the last day.
pub async fn namespace_known(
    engine: &QueryEngine,
    namespace: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let since = now - chrono::Duration::hours(NAMESPACE_LOOKBACK_HOURS);
    let ns = quote(namespace);
    let sql = format!(
        "SELECT 1 AS found FROM flows WHERE interval_start >= {} \
         AND (src_namespace = {ns} OR dst_namespace = {ns}) LIMIT 1",
        ts(since)
    );
    let rows = engine
        .run(&sql, "capture", false, &Access::all())
        .await?
        .collect()
        .await?;
    Ok(rows.iter().any(|b| b.num_rows() > 0))
}

/// The flows of the pods the capture took, between its start and its end
/// (or now), largest first.
pub async fn flows(
    engine: &QueryEngine,
    r: &CaptureRequest,
    statuses: &BTreeMap<String, NodeStatus>,
    files: &BTreeMap<String, FileDescription>,
    now: DateTime<Utc>,
    principal: &Principal,
) -> Result<Vec<SeenFlow>> {
    let pods: BTreeSet<&str> = statuses
        .values()
        .flat_map(|s| &s.interfaces)
        .chain(files.values().flat_map(|d| &d.interfaces))
        .filter(|i| i.namespace == r.namespace)
        .map(|i| i.pod.as_str())
        .collect();
    if pods.is_empty() {
        return Ok(Vec::new());
    }
    let start = DateTime::parse_from_rfc3339(&r.created)
        .map_err(|e| QueryError::Config(format!("capture {}: created: {e}", r.id)))?
        .with_timezone(&Utc);
    let end = super::create::ends(r).unwrap_or(now).min(now);
    let ns = quote(&r.namespace);
    let list = pods.iter().map(|p| quote(p)).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT observation_point, protocol, src_namespace, src_pod, src_ip, src_port, \
                dst_namespace, dst_pod, dst_ip, dst_port, \
                sum(packets) AS packets, sum(bytes) AS bytes \
         FROM flows \
         WHERE interval_start >= {from} AND interval_start <= {to} AND interval_end >= {start} \
           AND ((src_namespace = {ns} AND src_pod IN ({list})) \
             OR (dst_namespace = {ns} AND dst_pod IN ({list}))) \
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 \
         ORDER BY bytes DESC, 1, 2, 5, 6, 9, 10 LIMIT {MAX_SEEN_FLOWS}",
        from = ts(start - chrono::Duration::seconds(FLOW_SLACK_SECS)),
        to = ts(end),
        start = ts(start),
    );
    let batches = engine
        .run(&sql, "capture", false, &Access::of(principal))
        .await?
        .collect()
        .await?;
    let rows = rows_as_text(&batches)?;
    let v = |m: &BTreeMap<String, String>, k: &str| m.get(k).cloned().unwrap_or_default();
    Ok(rows
        .iter()
        .map(|m| SeenFlow {
            observation_point: v(m, "observation_point"),
            protocol: v(m, "protocol"),
            src_namespace: v(m, "src_namespace"),
            src_pod: v(m, "src_pod"),
            src_ip: v(m, "src_ip"),
            src_port: v(m, "src_port"),
            dst_namespace: v(m, "dst_namespace"),
            dst_pod: v(m, "dst_pod"),
            dst_ip: v(m, "dst_ip"),
            dst_port: v(m, "dst_port"),
            packets: v(m, "packets"),
            bytes: v(m, "bytes"),
        })
        .collect())
}
