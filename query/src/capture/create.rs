//! `POST /api/v1/captures`: what a caller asks for, checked as a collector
//! would check it (selector, filter, limits with their defaults and hard
//! maxima), turned into the stored [`CaptureRequest`].

use chrono::{DateTime, SecondsFormat, Utc};
use flowlake_schemas::capture::{CaptureRequest, Limits};
use serde::{Deserialize, Serialize};

use crate::error::{QueryError, Result};

/// The body of `POST /api/v1/captures`; limits left out take their defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCapture {
    pub namespace: String,
    #[serde(default)]
    pub selector: String,
    #[serde(default)]
    pub pods: Vec<String>,
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub filter: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_packets: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snaplen: Option<u32>,
}

/// A new capture id: the creation time and a random suffix (`a-z0-9-`).
pub fn new_id(now: DateTime<Utc>) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", now.format("%Y%m%d-%H%M%S"), &random[..8])
}

/// The request `body` asks for, by `requested_by` at `now`; a 400 naming
/// what is wrong when it could not run.
pub fn request(
    body: CreateCapture,
    id: String,
    requested_by: &str,
    now: DateTime<Utc>,
) -> Result<CaptureRequest> {
    let d = Limits::DEFAULT;
    let r = CaptureRequest {
        id,
        namespace: body.namespace,
        selector: body.selector.trim().to_string(),
        pods: body.pods,
        nodes: body.nodes,
        filter: body.filter.trim().to_string(),
        duration_secs: body.duration_secs.unwrap_or(d.duration.as_secs()),
        max_bytes: body.max_bytes.unwrap_or(d.max_bytes),
        max_packets: body.max_packets.unwrap_or(d.max_packets),
        snaplen: body.snaplen.unwrap_or(d.snaplen),
        requested_by: requested_by.to_string(),
        created: now.to_rfc3339_opts(SecondsFormat::Millis, true),
        cancelled: false,
    };
    for n in r.nodes.iter().chain(&r.pods) {
        if n.is_empty() || n.len() > 253 || n.contains('/') {
            return Err(QueryError::BadRequest(format!(
                "bad pod or node name {n:?}"
            )));
        }
    }
    r.check()
        .map_err(|e| QueryError::BadRequest(format!("capture refused: {e}")))?;
    Ok(r)
}

/// When a request's capture ends at the latest.
pub fn ends(r: &CaptureRequest) -> Option<DateTime<Utc>> {
    let created = DateTime::parse_from_rfc3339(&r.created).ok()?;
    Some(created.with_timezone(&Utc) + chrono::Duration::seconds(r.duration_secs as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> CreateCapture {
        CreateCapture {
            namespace: "shop".into(),
            selector: "app=web".into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_fill_in_and_every_part_is_checked() {
        let now: DateTime<Utc> = "2026-12-07T01:02:03Z".parse().unwrap();
        let id = new_id(now);
        assert!(id.starts_with("20261207-010203-") && id.len() == 24, "{id}");
        let r = request(body(), id, "alice", now).unwrap();
        assert_eq!(r.duration_secs, 60);
        assert_eq!(r.max_bytes, Limits::DEFAULT.max_bytes);
        assert_eq!(r.snaplen, Limits::DEFAULT.snaplen);
        assert_eq!(r.created, "2026-12-07T01:02:03.000Z");
        assert_eq!(ends(&r).unwrap(), now + chrono::Duration::seconds(60));
        type Spoil = fn(&mut CreateCapture);
        let bad: [(Spoil, &str); 8] = [
            (|b| b.namespace = "Shop".into(), "namespace"),
            (|b| b.selector = "app in (".into(), "selector"),
            (|b| b.filter = "portrange 1-2".into(), "portrange"),
            (|b| b.duration_secs = Some(0), "duration"),
            (|b| b.duration_secs = Some(86_400), "duration"),
            (|b| b.max_bytes = Some(1 << 40), "max_bytes"),
            (|b| b.snaplen = Some(10), "snaplen"),
            (|b| b.pods = vec![String::new()], "pod"),
        ];
        for (spoil, what) in bad {
            let mut b = body();
            spoil(&mut b);
            let e = request(b, "c1".into(), "alice", now).unwrap_err();
            assert!(matches!(e, QueryError::BadRequest(_)), "{what}: {e}");
            assert!(e.to_string().contains(what), "{what}: {e}");
        }
    }
}
