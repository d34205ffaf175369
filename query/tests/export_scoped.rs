//! Exports honour a namespace-scoped token: the exported files hold exactly the rows of
//! an admin export that DuckDB filters to the token's namespaces (and a SQL export
//! DuckDB's answer over them); the `export` scope is still required, and a job's
//! status is shown only to the token that started it (or an unscoped one).

use std::path::Path;

use flowlake_query::QueryConfig;
use flowlake_service::auth::TokenEntry;
use flowlake_service::{Scope, hash_token};
use serde_json::{Value, json};

use crate::support::*;

const ADMIN: &str = "admin-secret";
const TEAM: &str = "team-secret";
const READER: &str = "reader-secret";
const OTHER: &str = "other-secret";

fn write_tokens(path: &Path, mine: &str, other: &str) {
    let entry = |name: &str, token: &str, scopes: Vec<Scope>, ns: Option<&str>| TokenEntry {
        name: name.into(),
        sha256: hash_token(token),
        scopes,
        namespaces: ns.map(|n| vec![n.to_string()]),
    };
    let tokens = [
        entry("ops", ADMIN, vec![Scope::Admin], None),
        entry("team", TEAM, vec![Scope::Read, Scope::Export], Some(mine)),
        entry("reader", READER, vec![Scope::Read], Some(mine)),
        entry("other", OTHER, vec![Scope::Export], Some(other)),
    ];
    std::fs::write(path, json!({ "tokens": tokens }).to_string()).unwrap();
}

/// Polls job `id` with `token` until it is no longer running.
pub async fn finished_job(base: &str, token: Option<&str>, id: &str) -> Value {
    for _ in 0..600 {
        let (status, text) =
            request(base, "GET", &format!("/api/v1/export/{id}"), &None, token).await;
        assert_eq!(status, 200, "{text}");
        let job: Value = serde_json::from_str(&text).unwrap();
        if job["state"] != "running" {
            return job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("export job {id} still running");
}

/// Starts an export as `token`; returns the job id.
async fn export(base: &str, token: &str, body: Value) -> String {
    let (status, text) = request(base, "POST", "/api/v1/export", &Some(body), Some(token)).await;
    assert_eq!(status, 202, "{text}");
    let job: Value = serde_json::from_str(&text).unwrap();
    job["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn scoped_exports_hold_only_the_tokens_namespaces() {
    if !python_has("duckdb") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("exports");
    std::fs::create_dir_all(&root).unwrap();
    let mut cfg = QueryConfig::for_tests(shared_table().to_str().unwrap());
    cfg.export.roots = vec![root.to_str().unwrap().to_string()];
    // The namespaces, asked before authentication is on.
    let svc = start(cfg.clone()).await;
    let (_, ns) = sql_json(
        &svc,
        "SELECT DISTINCT src_namespace AS ns FROM flows WHERE src_namespace IS NOT NULL ORDER BY 1",
    )
    .await;
    svc.stop().await.unwrap();
    let ns: Vec<&str> = ns
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ns"].as_str().unwrap())
        .collect();
    assert!(ns.len() >= 3, "{ns:?}");
    let (mine, other) = (ns[0], ns[1]);
    let tokens = tmp.path().join("tokens.json");
    write_tokens(&tokens, mine, other);
    cfg.token_file = Some(tokens);
    let svc = start(cfg).await;
    let base = format!("http://{}", svc.addr());

    // The `export` scope is still required of a scoped token.
    let (status, text) = request(
        &base,
        "POST",
        "/api/v1/export",
        &Some(json!({"destination": root.join("denied")})),
        Some(READER),
    )
    .await;
    assert_eq!(status, 403, "{text}");
    assert!(!root.join("denied").exists());

    let aggregate = "SELECT src_namespace, dst_namespace, count(*) AS n, sum(bytes) AS bytes \
                     FROM flows GROUP BY 1, 2";
    let admin = export(&base, ADMIN, json!({"destination": root.join("admin")})).await;
    let team = export(&base, TEAM, json!({"destination": root.join("team")})).await;
    let team_agg = export(
        &base,
        TEAM,
        json!({"destination": root.join("team_agg"), "sql": aggregate}),
    )
    .await;
    let mut rows = Vec::new();
    for (id, token) in [(&admin, ADMIN), (&team, TEAM), (&team_agg, TEAM)] {
        let job = finished_job(&base, Some(token), id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert!(job["files"].as_u64().unwrap() > 0, "{job}");
        rows.push(job["rows"].as_u64().unwrap());
    }
    let team_job = finished_job(&base, Some(TEAM), &team).await;
    assert_eq!(team_job["token"], "team");
    assert_eq!(team_job["namespaces"], json!([mine]));
    // Another scoped token does not see the team's job; an unscoped one does.
    let path = format!("/api/v1/export/{team}");
    assert_eq!(
        request(&base, "GET", &path, &None, Some(OTHER)).await.0,
        404
    );
    assert_eq!(
        request(&base, "GET", &path, &None, Some(ADMIN)).await.0,
        200
    );

    let out = python(&format!(
        r#"
import duckdb, json
c = duckdb.connect()
def rel(d): return f"read_parquet('{{d}}/**/*.parquet', hive_partitioning=true)"
ns = {mine:?}
for name, d in [("admin", {admin:?}), ("team", {team:?}), ("team_agg", {agg:?})]:
    c.execute("CREATE VIEW " + name + " AS SELECT * FROM " + rel(d))
c.execute(f"CREATE VIEW want AS SELECT * FROM admin WHERE src_namespace = '{{ns}}' OR dst_namespace = '{{ns}}'")
one = lambda q: c.execute(q).fetchone()[0]
agg = "SELECT src_namespace, dst_namespace, count(*) AS n, sum(bytes) AS bytes FROM want GROUP BY 1, 2"
print(json.dumps({{
  "admin": one("SELECT count(*) FROM admin"),
  "want": one("SELECT count(*) FROM want"),
  "team": one("SELECT count(*) FROM team"),
  "missing": one("SELECT count(*) FROM (SELECT * FROM want EXCEPT ALL SELECT * FROM team)"),
  "extra": one("SELECT count(*) FROM (SELECT * FROM team EXCEPT ALL SELECT * FROM want)"),
  "foreign": one(f"SELECT count(*) FROM team WHERE (src_namespace = '{{ns}}' OR dst_namespace = '{{ns}}') IS NOT TRUE"),
  "agg_rows": one("SELECT count(*) FROM team_agg"),
  "agg_missing": one(f"SELECT count(*) FROM ({{agg}} EXCEPT ALL SELECT src_namespace, dst_namespace, n, bytes FROM team_agg)"),
  "agg_extra": one(f"SELECT count(*) FROM (SELECT src_namespace, dst_namespace, n, bytes FROM team_agg EXCEPT ALL {{agg}})"),
}}))
"#,
        admin = root.join("admin").to_str().unwrap(),
        team = root.join("team").to_str().unwrap(),
        agg = root.join("team_agg").to_str().unwrap(),
    ));
    let duck: Value = serde_json::from_str(out.trim()).unwrap();
    eprintln!("scoped export vs admin export filtered in DuckDB: {duck}");
    assert_eq!(duck["admin"].as_u64(), Some(rows[0]), "{duck}");
    assert_eq!(duck["team"].as_u64(), Some(rows[1]), "{duck}");
    assert_eq!(duck["agg_rows"].as_u64(), Some(rows[2]), "{duck}");
    let want = duck["want"].as_u64().unwrap();
    assert!(want > 0 && want < rows[0], "the scope bites: {duck}");
    assert_eq!(duck["team"].as_u64(), Some(want), "{duck}");
    for k in ["missing", "extra", "foreign", "agg_missing", "agg_extra"] {
        assert_eq!(duck[k], 0, "{k}: {duck}");
    }
    svc.stop().await.unwrap();
}
