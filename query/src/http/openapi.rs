//! The OpenAPI 3.0 document of the HTTP API, served at `/api/v1/openapi.json`.

use axum::Json;
use serde_json::{Value, json};

use super::routes;
use crate::questions::Question;

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn range_params() -> Value {
    json!([
        {"name": "from", "in": "query", "schema": {"type": "string"}, "description": "RFC 3339 or epoch ms; default: to - 1h", "example": "2026-01-01T00:00:00Z"},
        {"name": "to", "in": "query", "schema": {"type": "string"}, "description": "RFC 3339 or epoch ms; default: now", "example": "2026-01-01T02:00:00Z"},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 100}},
        {"name": "format", "in": "query", "schema": {"$ref": "#/components/schemas/Format"}},
        {"name": "exact", "in": "query", "schema": {"type": "boolean", "default": false},
            "description": "Answer from the flow rows only. By default whole hours come from hourly rollups where current: counts and sums are the same, latency percentiles within 0.5 %"}
    ])
}

fn question_param() -> Value {
    json!({"name": "question", "in": "path", "required": true,
        "schema": {"type": "string", "enum": Question::ALL.map(|q| q.name())}})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

fn rows_ok() -> Value {
    json!({"description": "Rows in the requested format (JSON array of objects by default)",
        "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}})
}

/// The document.
pub fn document() -> Value {
    let mut pod_params = vec![path_param("namespace"), path_param("pod"), question_param()];
    let mut wl_params = vec![
        path_param("namespace"),
        path_param("workload"),
        question_param(),
    ];
    let mut ranked_params = vec![
        question_param(),
        json!({"name": "by", "in": "query", "schema": {"type": "string", "enum": ["pod", "workload"]}}),
    ];
    for p in range_params().as_array().into_iter().flatten() {
        pod_params.push(p.clone());
        wl_params.push(p.clone());
        ranked_params.push(p.clone());
    }
    let questions: Vec<String> = Question::ALL
        .iter()
        .map(|q| format!("`{}`: {}", q.name(), q.description()))
        .collect();
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Flowlake query API", "version": env!("CARGO_PKG_VERSION"),
            "description": format!("SQL over the `flows` Delta table and the per-pod questions. Questions: {}", questions.join("; "))},
        "paths": {
            routes::SQL: {"post": {
                "summary": "Run one read-only SQL statement (SELECT, WITH, EXPLAIN, SHOW, DESCRIBE)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SqlRequest"},
                    "example": {"sql": "SELECT drop_reason, sum(packets) FROM pod_drops WHERE interval_start >= '2026-01-01T00:00:00Z' GROUP BY 1", "format": "json"}}}},
                "responses": {"200": {"description": "Streamed result", "content": {
                    "application/json": {}, "application/x-ndjson": {}, "text/csv": {},
                    "application/vnd.apache.arrow.stream": {}, "application/vnd.apache.parquet": {}}},
                    "400": error_response("Refused statement or SQL error (DataFusion's message)"),
                    "413": error_response("Row or memory limit exceeded"),
                    "504": error_response("Query time limit exceeded")}}},
            routes::QUESTIONS: {"get": {"summary": "List the per-pod questions", "responses": {"200": rows_ok()}}},
            routes::QUESTION_RANKED: {"get": {"summary": "A question for every pod or workload, ranked", "parameters": ranked_params,
                "responses": {"200": rows_ok(), "400": error_response("Bad parameters"), "404": error_response("Unknown question")}}},
            routes::POD_QUESTION: {"get": {"summary": "A question for one pod", "parameters": pod_params,
                "responses": {"200": rows_ok(), "400": error_response("Bad parameters"), "404": error_response("Unknown question")}}},
            routes::WORKLOAD_QUESTION: {"get": {"summary": "A question for one workload (all its pods)", "parameters": wl_params,
                "responses": {"200": rows_ok(), "400": error_response("Bad parameters"), "404": error_response("Unknown question")}}},
            routes::EXPORT: {"post": {"summary": "Start an export job", "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExportRequest"}}}},
                "responses": {"202": {"description": "Job accepted", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExportJob"}}}},
                    "400": error_response("Bad request")}}},
            routes::EXPORT_JOB: {"get": {"summary": "Status of an export job", "parameters": [path_param("id")],
                "responses": {"200": {"description": "Job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExportJob"}}}},
                    "404": error_response("No such job")}}},
            "/grafana/query": {"post": {"summary": "Grafana JSON datasource (simpod v0.6); also /grafana/, /metrics, /metric-payload-options, /variable, /tag-keys, /tag-values",
                "responses": {"200": {"description": "Time series or table frames"}}}}
        },
        "components": {"schemas": {
            "Format": {"type": "string", "enum": ["json", "ndjson", "csv", "arrow", "parquet"], "default": "json"},
            "SqlRequest": {"type": "object", "required": ["sql"], "properties": {"sql": {"type": "string"}, "format": {"$ref": "#/components/schemas/Format"}}},
            "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "code": {"type": "string"}, "message": {"type": "string"}, "retryable": {"type": "boolean"}}}}},
            "ExportRequest": {"type": "object", "required": ["destination"], "properties": {
                "destination": {"type": "string", "description": "Directory or object_store URL (s3://, gs://, az://, file://)"},
                "sql": {"type": "string"}, "from": {"type": "string"}, "to": {"type": "string"},
                "format": {"type": "string", "enum": ["parquet", "delta"]},
                "incremental": {"type": "boolean", "description": "Export only what was committed since the last export to this destination"},
                "storage_options": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "ExportJob": {"type": "object", "properties": {"id": {"type": "string"},
                "state": {"type": "string", "enum": ["running", "succeeded", "failed"]},
                "rows": {"type": "integer"}, "from_version": {"type": "integer"}, "to_version": {"type": "integer"}, "error": {"type": "string"}}}
        }}
    })
}

pub async fn handle() -> Json<Value> {
    Json(document())
}
