//! The ADBC Flight SQL driver (Python DB-API over the Go driver) as the client, with
//! the HTTP endpoint's `format: arrow` answer and python `deltalake` beside it.

use std::path::Path;

use flowlake_query::RunningQuery;
use serde_json::{Value, json};

use crate::support::python;

/// What a statement came to.
#[derive(Debug)]
pub enum Outcome {
    Rows(usize),
    Error(String),
}

pub struct Client {
    args: Value,
}

const PRELUDE: &str = r#"
import json, urllib.request
import pyarrow as pa, pyarrow.ipc as ipc, pyarrow.compute as pc
import adbc_driver_flightsql.dbapi as flight

def connect():
    kw = {}
    if ARGS["token"]:
        kw["adbc.flight.sql.authorization_header"] = "Bearer " + ARGS["token"]
    if ARGS["ca"]:
        kw["adbc.flight.sql.client_option.tls_root_certs"] = open(ARGS["ca"]).read()
    return flight.connect(ARGS["uri"], db_kwargs=kw, autocommit=True)

def http_context():
    if not ARGS["ca"]:
        return None
    import ssl
    return ssl.create_default_context(cafile=ARGS["ca"])

def flight_table(conn, sql, prepared=False):
    cur = conn.cursor()
    try:
        if prepared:
            cur.adbc_prepare(sql)
        cur.execute(sql)
        return cur.fetch_arrow_table()
    finally:
        cur.close()

def http_table(sql):
    headers = {"content-type": "application/json"}
    if ARGS["token"]:
        headers["authorization"] = "Bearer " + ARGS["token"]
    body = json.dumps({"sql": sql, "format": "arrow"}).encode()
    req = urllib.request.Request(ARGS["http"] + "/api/v1/sql", data=body, headers=headers)
    with urllib.request.urlopen(req, context=http_context()) as r:
        return ipc.open_stream(r.read()).read_all()

def rows(t):
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in t.to_pylist())

def compare(conn, sql):
    f = flight_table(conn, sql)
    h = http_table(sql)
    p = flight_table(conn, sql, prepared=True)
    first = f.slice(0, 1).to_pylist()
    return {
        "rows": f.num_rows,
        "same_schema": f.schema.equals(h.schema, check_metadata=False),
        "same_rows": rows(f) == rows(h),
        "prepared_same": rows(p) == rows(f) and p.schema.equals(f.schema, check_metadata=False),
        "first_row": json.loads(json.dumps(first[0], default=str)) if first else None,
        "error": None,
    }
"#;

impl Client {
    pub fn new(svc: &RunningQuery, token: Option<&str>) -> Self {
        let flight = svc.flight_addr().expect("Flight SQL listener");
        Client {
            args: json!({
                "uri": format!("grpc://{flight}"),
                "http": format!("http://{}", svc.addr()),
                "token": token,
                "ca": null,
            }),
        }
    }

    /// A client of a service serving TLS on both listeners: `grpc+tls://` and
    /// `https://` to 127.0.0.1, trusting only the CA certificate at `ca` (PEM).
    pub fn with_tls(svc: &RunningQuery, token: Option<&str>, ca: &Path) -> Self {
        let mut client = Client::new(svc, token);
        let flight = svc.flight_addr().expect("Flight SQL listener");
        client.args["uri"] = json!(format!("grpc+tls://{flight}"));
        client.args["http"] = json!(format!("https://{}", svc.addr()));
        client.args["ca"] = json!(ca);
        client
    }

    /// The same client talking plain gRPC (no TLS) to the Flight port.
    pub fn without_tls(mut self) -> Self {
        let uri = self.args["uri"]
            .as_str()
            .unwrap()
            .replace("grpc+tls://", "grpc://");
        self.args["uri"] = json!(uri);
        self
    }

    /// Runs `body` after the prelude with `ARGS` (the client's, plus `extra`); it prints
    /// one JSON value.
    fn script(&self, body: &str, extra: Value) -> Value {
        let mut args = self.args.clone();
        args["extra"] = extra;
        let code = format!(
            "ARGS = json.loads({:?})\n{PRELUDE}\n{body}",
            args.to_string()
        );
        let code = format!("import json\n{code}");
        let out = python(&code);
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// Each statement through Flight SQL: its rows, or the driver's error text.
    pub fn run(&self, sqls: &[String]) -> Vec<Outcome> {
        let out = self.script(
            r#"
out = []
conn = connect()
for sql in ARGS["extra"]:
    try:
        out.append({"rows": flight_table(conn, sql).num_rows})
    except Exception as e:
        out.append({"error": f"{type(e).__name__}: {e}"})
print(json.dumps(out))
"#,
            json!(sqls),
        );
        out.as_array()
            .unwrap()
            .iter()
            .map(|o| match o["error"].as_str() {
                Some(e) => Outcome::Error(e.to_string()),
                None => Outcome::Rows(o["rows"].as_u64().unwrap() as usize),
            })
            .collect()
    }

    /// Each statement through Flight SQL (plain and prepared) and over HTTP, compared;
    /// with `table`, also the row count and byte and packet sums of the Delta table.
    pub fn compare(&self, sqls: &[String], table: Option<&Path>) -> Vec<Value> {
        let out = self.script(
            r#"
out = []
conn = connect()
for sql in ARGS["extra"]["sqls"]:
    try:
        out.append(compare(conn, sql))
    except Exception as e:
        out.append({"error": f"{type(e).__name__}: {e}"})
if ARGS["extra"]["table"]:
    from deltalake import DeltaTable
    t = DeltaTable(ARGS["extra"]["table"]).to_pyarrow_table(columns=["bytes", "packets"])
    truth = {"rows": t.num_rows, "bytes": pc.sum(t["bytes"]).as_py(),
             "packets": pc.sum(t["packets"]).as_py()}
    for o in out:
        o["truth"] = truth
print(json.dumps(out))
"#,
            json!({"sqls": sqls, "table": table}),
        );
        out.as_array().unwrap().clone()
    }

    /// `sql` (grouping by both namespaces, with counts `n` and byte sums `b`) through
    /// Flight SQL and over HTTP with this client's token, and the Delta table's rows
    /// with `namespace` at one end summed in pyarrow.
    pub fn compare_scoped(&self, sql: &str, table: &Path, namespace: &str) -> Value {
        self.script(
            r#"
sql, ns = ARGS["extra"]["sql"], ARGS["extra"]["ns"]
try:
    conn = connect()
    f = flight_table(conn, sql)
    h = http_table(sql)
    from deltalake import DeltaTable
    t = DeltaTable(ARGS["extra"]["table"]).to_pyarrow_table(
        columns=["src_namespace", "dst_namespace", "bytes"])
    mask = pc.or_(pc.fill_null(pc.equal(t["src_namespace"], ns), False),
                  pc.fill_null(pc.equal(t["dst_namespace"], ns), False))
    mine = t.filter(mask)
    out = {
        "error": None,
        "same_rows": rows(f) == rows(h),
        "only_mine": all(r["src_namespace"] == ns or r["dst_namespace"] == ns
                         for r in f.to_pylist()),
        "n": pc.sum(f["n"]).as_py(), "b": pc.sum(f["b"]).as_py(),
        "truth_n": mine.num_rows, "truth_b": pc.sum(mine["bytes"]).as_py(),
    }
except Exception as e:
    out = {"error": f"{type(e).__name__}: {e}"}
print(json.dumps(out))
"#,
            json!({"sql": sql, "table": table, "ns": namespace}),
        )
    }

    /// What the driver's metadata calls see: `GetSqlInfo` (vendor name, version), the
    /// tables of `GetTables` (`adbc_get_objects`), `flows`' schema compared with the
    /// HTTP answer's, and the table types.
    pub fn metadata(&self) -> Value {
        self.script(
            r#"
conn = connect()
info = conn.adbc_get_info()
objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
tables = sorted({t["table_name"] for c in objects for s in (c["catalog_db_schemas"] or [])
                 for t in (s["db_schema_tables"] or [])})
flows = conn.adbc_get_table_schema("flows")
http = http_table("SELECT * FROM flows LIMIT 0")
types = sorted(conn.adbc_get_table_types())
print(json.dumps({
    "vendor_name": info.get("vendor_name"),
    "version": info.get("vendor_version"),
    "tables": tables,
    "flows_schema_same": flows.equals(http.schema, check_metadata=False),
    "table_types": types,
}, default=str))
"#,
            Value::Null,
        )
    }

    /// The error of a metadata call (`GetTables`).
    pub fn metadata_error(&self) -> String {
        let out = self.script(
            r#"
try:
    connect().adbc_get_objects(depth="tables").read_all()
    print(json.dumps("answered"))
except Exception as e:
    print(json.dumps(f"{type(e).__name__}: {e}"))
"#,
            Value::Null,
        );
        out.as_str().unwrap().to_string()
    }
}
