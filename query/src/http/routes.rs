//! Route paths, in one place.

pub const HEALTH: &str = flowlake_service::health::HEALTH;
pub const READY: &str = flowlake_service::health::READY;
/// Prometheus scrape endpoint (OpenMetrics text).
pub const METRICS: &str = "/metrics";
pub const SQL: &str = "/api/v1/sql";
pub const OPENAPI: &str = "/api/v1/openapi.json";
pub const QUESTIONS: &str = "/api/v1/questions";
pub const QUESTION_RANKED: &str = "/api/v1/questions/{question}";
pub const POD_QUESTION: &str = "/api/v1/pods/{namespace}/{pod}/{question}";
pub const WORKLOAD_QUESTION: &str = "/api/v1/workloads/{namespace}/{workload}/{question}";
pub const EXPORT: &str = "/api/v1/export";
pub const EXPORT_JOB: &str = "/api/v1/export/{id}";
pub const CAPTURES: &str = "/api/v1/captures";
pub const CAPTURE_LOOKUP: &str = "/api/v1/captures/lookup";
pub const CAPTURE: &str = "/api/v1/captures/{id}";
pub const CAPTURE_DOWNLOAD: &str = "/api/v1/captures/{id}/download";
/// Prefix of the Grafana JSON datasource.
pub const GRAFANA: &str = "/grafana";
/// Grafana's health check calls the prefix with a trailing slash.
pub const GRAFANA_ROOT: &str = "/grafana/";
