//! Grafana JSON datasource (simpod-json-datasource v0.6) under `/grafana`:
//! `GET /`, `POST /metrics`, `/metric-payload-options`, `/query`, `/variable`,
//! `/tag-keys`, `/tag-values`. The per-pod questions are metrics with payload options
//! (namespace, pod, by, view); `sql` runs sandboxed SQL with `$__timeFilter`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::Duration;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use flowlake_service::{Principal, SqlAudit};
use serde::Deserialize;
use serde_json::{Value, json};

use super::state::AppState;
use crate::access::Access;
use crate::error::{QueryError, Result};
use crate::format::{OutputFormat, encode_all};
use crate::questions::{
    Question, QuestionRequest, Scope, TimeRange, parse_time, quote, where_clause,
};

/// Metric name of free SQL.
pub const SQL_METRIC: &str = "sql";
/// Columns offered as ad-hoc filter keys (present in every per-pod view).
pub const TAG_KEYS: [&str; 3] = ["namespace", "pod", "workload"];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/metrics", post(metrics))
        .route("/metric-payload-options", post(payload_options))
        .route("/query", post(query))
        .route("/variable", post(variable))
        .route("/tag-keys", post(tag_keys))
        .route("/tag-values", post(tag_values))
}

fn select(name: &str, label: &str, reload: bool) -> Value {
    json!({"label": label, "name": name, "type": "select", "reloadMetric": reload, "width": 20})
}

fn question_payloads() -> Value {
    json!([
        select("namespace", "Namespace", true),
        select("pod", "Pod", false),
        {"label": "Rank by", "name": "by", "type": "select", "options": [
            {"label": "pod", "value": "pod"}, {"label": "workload", "value": "workload"}]},
        {"label": "Show", "name": "view", "type": "select", "options": [
            {"label": "time series", "value": "timeseries"}, {"label": "table", "value": "table"}]},
        {"label": "Limit", "name": "limit", "type": "input", "placeholder": "100"}
    ])
}

/// `POST /metrics`: the questions plus `sql`.
async fn metrics(Json(_req): Json<Value>) -> Json<Value> {
    let mut out: Vec<Value> = Question::ALL
        .iter()
        .map(|q| json!({"label": q.description(), "value": q.name(), "payloads": question_payloads()}))
        .collect();
    out.push(
        json!({"label": "SQL (read-only; $__timeFilter expands to the dashboard range)",
        "value": SQL_METRIC,
        "payloads": [{"label": "SQL", "name": "sql", "type": "textarea",
            "placeholder": "SELECT … FROM flows WHERE $__timeFilter"}]}),
    );
    Json(Value::Array(out))
}

fn payload_str<'a>(payload: &'a Value, key: &str) -> Option<&'a str> {
    match payload.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s),
        Value::Array(a) => a.first()?.as_str().filter(|s| !s.is_empty()),
        _ => None,
    }
}

/// Runs SQL (`user`: from the request, checked by the sandbox) and returns the rows
/// as JSON objects.
async fn rows(
    state: &AppState,
    sql: &str,
    endpoint: &'static str,
    user: bool,
    access: &Access,
) -> Result<(Vec<(String, DataType)>, Vec<serde_json::Map<String, Value>>)> {
    let result = if user {
        state.engine.execute_user_sql(sql, endpoint, access).await?
    } else {
        state.engine.run(sql, endpoint, true, access).await?
    };
    let schema = result.schema.clone();
    let batches: Vec<RecordBatch> = result.collect().await?;
    let bytes = encode_all(OutputFormat::Json, schema.clone(), &batches)?;
    let objects: Vec<serde_json::Map<String, Value>> =
        serde_json::from_slice(&bytes).map_err(|e| QueryError::Config(format!("json: {e}")))?;
    let cols = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    Ok((cols, objects))
}

/// Distinct values of a per-pod column over the last day (or the given range).
async fn distinct(
    state: &AppState,
    column: &str,
    range: TimeRange,
    namespace: Option<&str>,
    access: &Access,
) -> Result<Vec<String>> {
    if !TAG_KEYS.contains(&column) {
        return Err(QueryError::BadRequest(format!("unknown key {column:?}")));
    }
    let mut extra = vec![format!("{column} IS NOT NULL")];
    if let Some(ns) = namespace {
        extra.push(format!("namespace = {}", quote(ns)));
    }
    access.restrict(&Scope::AllPods, &mut extra)?;
    let sql = format!(
        "SELECT DISTINCT {column} AS v FROM pod_talkers WHERE {} ORDER BY v LIMIT 1000",
        where_clause(&range, &Scope::AllPods, &extra)
    );
    let (_, objs) = rows(state, &sql, "grafana", false, access).await?;
    Ok(objs
        .into_iter()
        .filter_map(|o| o.get("v").and_then(Value::as_str).map(str::to_string))
        .collect())
}

fn last_day(state: &AppState) -> TimeRange {
    let to = (state.clock)();
    TimeRange {
        from: to - Duration::days(1),
        to,
    }
}

#[derive(Debug, Deserialize)]
struct PayloadOptionsRequest {
    #[serde(default)]
    payload: Value,
    name: String,
}

/// `POST /metric-payload-options`: namespaces, pods of the chosen namespace, …
async fn payload_options(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Json(req): Json<PayloadOptionsRequest>,
) -> Result<Json<Value>> {
    let access = Access::of(&principal);
    let values = match req.name.as_str() {
        "namespace" => distinct(&state, "namespace", last_day(&state), None, &access).await?,
        "pod" => {
            distinct(
                &state,
                "pod",
                last_day(&state),
                payload_str(&req.payload, "namespace"),
                &access,
            )
            .await?
        }
        _ => Vec::new(),
    };
    Ok(Json(Value::Array(
        values
            .into_iter()
            .map(|v| json!({"label": v, "value": v}))
            .collect(),
    )))
}

#[derive(Debug, Deserialize)]
struct GrafanaRange {
    from: String,
    to: String,
}

impl GrafanaRange {
    fn range(&self) -> Result<TimeRange> {
        TimeRange::checked(parse_time(&self.from)?, parse_time(&self.to)?)
    }
}

#[derive(Debug, Deserialize)]
struct Target {
    #[serde(default)]
    target: Option<String>,
    #[serde(default, rename = "refId")]
    ref_id: Option<String>,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    hide: bool,
}

#[derive(Debug, Deserialize)]
struct AdHocFilter {
    key: String,
    operator: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryRequest {
    range: GrafanaRange,
    #[serde(default)]
    interval_ms: Option<i64>,
    #[serde(default)]
    max_data_points: Option<i64>,
    targets: Vec<Target>,
    #[serde(default)]
    filters: Vec<AdHocFilter>,
}

/// Ad-hoc filters as SQL predicates on the per-pod views' columns.
fn filter_predicates(filters: &[AdHocFilter]) -> Result<Vec<String>> {
    filters
        .iter()
        .map(|f| {
            if !TAG_KEYS.contains(&f.key.as_str()) {
                return Err(QueryError::BadRequest(format!(
                    "ad-hoc filter key {:?} is not one of {}",
                    f.key,
                    TAG_KEYS.join(", ")
                )));
            }
            let v = quote(&f.value);
            Ok(match f.operator.as_str() {
                "=" => format!("{} = {v}", f.key),
                "!=" => format!("{} <> {v}", f.key),
                "<" | ">" => format!("{} {} {v}", f.key, f.operator),
                "=~" => format!("{} ~ {v}", f.key),
                "!~" => format!("{} !~ {v}", f.key),
                op => {
                    return Err(QueryError::BadRequest(format!(
                        "ad-hoc operator {op:?} not supported"
                    )));
                }
            })
        })
        .collect()
}

fn column_type(t: &DataType) -> &'static str {
    if t.is_numeric() {
        "number"
    } else if matches!(
        t,
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
    ) {
        "time"
    } else {
        "string"
    }
}

fn table_frame(cols: &[(String, DataType)], objs: &[serde_json::Map<String, Value>]) -> Value {
    let columns: Vec<Value> = cols
        .iter()
        .map(|(n, t)| json!({"text": n, "type": column_type(t)}))
        .collect();
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            Value::Array(
                cols.iter()
                    .map(|(n, _)| o.get(n).cloned().unwrap_or(Value::Null))
                    .collect(),
            )
        })
        .collect();
    json!({"type": "table", "columns": columns, "rows": rows})
}

/// Series key of each question's time series.
fn series_key(q: Question) -> Option<&'static str> {
    match q {
        Question::Drops => Some("drop_reason"),
        Question::Talkers => Some("coalesce(peer_pod, peer_service, peer_ip)"),
        Question::DnsErrors => Some("dns_rcode"),
        Question::Latency | Question::Retransmits => None,
    }
}

fn scope_of(payload: &Value) -> Scope {
    match (
        payload_str(payload, "namespace"),
        payload_str(payload, "pod"),
    ) {
        (Some(ns), Some(pod)) => Scope::Pod {
            namespace: ns.into(),
            pod: pod.into(),
        },
        _ if payload_str(payload, "by") == Some("workload") => Scope::AllWorkloads,
        _ => Scope::AllPods,
    }
}

async fn answer_target(
    state: &AppState,
    access: &Access,
    req: &QueryRequest,
    t: &Target,
) -> Result<Vec<Value>> {
    let range = req.range.range()?;
    let name = t.target.as_deref().unwrap_or_default();
    let mut extra = filter_predicates(&req.filters)?;
    if name == SQL_METRIC {
        let sql = payload_str(&t.payload, "sql")
            .ok_or_else(|| QueryError::BadRequest("payload.sql is empty".into()))?;
        let sql = sql.replace("$__timeFilter", &format!("({})", range.predicate()));
        let (cols, objs) = rows(state, &sql, "grafana", true, access).await?;
        return Ok(vec![table_frame(&cols, &objs)]);
    }
    let q = Question::parse(name)
        .ok_or_else(|| QueryError::BadRequest(format!("unknown metric {name:?}")))?;
    let mut scope = scope_of(&t.payload);
    if let (Scope::AllPods, Some(ns)) = (&scope, payload_str(&t.payload, "namespace")) {
        extra.push(format!("namespace = {}", quote(ns)));
        scope = Scope::AllPods;
    }
    let limit = payload_str(&t.payload, "limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100)
        .min(state.engine.limits().max_rows);
    if payload_str(&t.payload, "view") == Some("table") {
        // Ad-hoc filters and the namespace payload are on subject columns only.
        let request = QuestionRequest {
            subject_filters: extra.clone(),
            ..QuestionRequest::new(q, scope.clone(), range, limit)
        };
        let sql = state.engine.question_sql(&request, access).await?;
        let (cols, objs) = rows(state, &sql, "grafana", false, access).await?;
        return Ok(vec![table_frame(&cols, &objs)]);
    }
    access.restrict(&scope, &mut extra)?;
    // Time series: buckets of the panel interval (at least a second, at most maxDataPoints).
    let span_ms = (range.to - range.from).num_milliseconds().max(1);
    let points = req.max_data_points.unwrap_or(1000).max(1);
    let bucket_ms = req
        .interval_ms
        .unwrap_or(span_ms / points)
        .max(span_ms / points)
        .max(1000);
    let key = series_key(q).unwrap_or("'value'");
    let sql = format!(
        "SELECT date_bin(INTERVAL '{bucket_ms} milliseconds', interval_start, TIMESTAMP '1970-01-01T00:00:00Z') AS t, \
         {key} AS k, {measure} AS v FROM {view} WHERE {filter} GROUP BY 1, 2 ORDER BY 2, 1",
        measure = q.series_measure(),
        view = q.view(),
        filter = where_clause(&range, &scope, &extra),
    );
    let (_, objs) = rows(state, &sql, "grafana", false, access).await?;
    let mut series: Vec<(String, Vec<Value>)> = Vec::new();
    for o in objs {
        let k = match o.get("k") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => "unknown".into(),
            Some(v) => v.to_string(),
        };
        let ts = o
            .get("t")
            .and_then(Value::as_str)
            .and_then(|s| parse_time(s).ok())
            .map(|t| t.timestamp_millis());
        let point = json!([o.get("v").cloned().unwrap_or(Value::Null), ts]);
        match series.last_mut() {
            Some((last, pts)) if *last == k => pts.push(point),
            _ => series.push((k, vec![point])),
        }
    }
    Ok(series
        .into_iter()
        .map(|(k, pts)| {
            let target = if series_key(q).is_some() {
                format!("{} {k}", q.name())
            } else {
                q.name().to_string()
            };
            json!({"target": target, "datapoints": pts})
        })
        .collect())
}

/// `POST /query`: every visible target, answered over the dashboard range. The `sql`
/// targets' statements go in the audit line (joined by `;`).
async fn query(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Json(req): Json<QueryRequest>,
) -> Response {
    let statements: Vec<&str> = req
        .targets
        .iter()
        .filter(|t| !t.hide && t.target.as_deref() == Some(SQL_METRIC))
        .filter_map(|t| payload_str(&t.payload, "sql"))
        .collect();
    let audit = (!statements.is_empty()).then(|| SqlAudit(statements.join(";\n")));
    let mut resp = answer_query(&state, &Access::of(&principal), &req)
        .await
        .map(Json)
        .into_response();
    if let Some(audit) = audit {
        resp.extensions_mut().insert(audit);
    }
    resp
}

async fn answer_query(state: &AppState, access: &Access, req: &QueryRequest) -> Result<Value> {
    let mut out = Vec::new();
    for t in req.targets.iter().filter(|t| !t.hide) {
        let frames = answer_target(state, access, req, t)
            .await
            .map_err(|e| match e {
                QueryError::Sql(m) => {
                    QueryError::Sql(format!("{}: {m}", t.ref_id.as_deref().unwrap_or("?")))
                }
                other => other,
            })?;
        out.extend(frames);
    }
    Ok(Value::Array(out))
}

#[derive(Debug, Deserialize)]
struct VariableRequest {
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    range: Option<GrafanaRange>,
}

/// `POST /variable`: `{"payload": {"target": "namespace"|"pod"|"workload", "namespace"?}}`.
async fn variable(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Json(req): Json<VariableRequest>,
) -> Result<Json<Value>> {
    let range = match &req.range {
        Some(r) => r.range()?,
        None => last_day(&state),
    };
    let target = payload_str(&req.payload, "target").unwrap_or("namespace");
    let column = target.trim_end_matches('s');
    let values = distinct(
        &state,
        column,
        range,
        payload_str(&req.payload, "namespace"),
        &Access::of(&principal),
    )
    .await?;
    Ok(Json(Value::Array(
        values
            .into_iter()
            .map(|v| json!({"__text": v, "__value": v}))
            .collect(),
    )))
}

/// `POST /tag-keys`.
async fn tag_keys() -> Json<Value> {
    Json(Value::Array(
        TAG_KEYS
            .iter()
            .map(|k| json!({"type": "string", "text": k}))
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
struct TagValuesRequest {
    key: String,
}

/// `POST /tag-values`: values of a key over the last day.
async fn tag_values(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Json(req): Json<TagValuesRequest>,
) -> Result<Json<Value>> {
    let access = Access::of(&principal);
    let values = distinct(&state, &req.key, last_day(&state), None, &access).await?;
    Ok(Json(Value::Array(
        values.into_iter().map(|v| json!({"text": v})).collect(),
    )))
}
