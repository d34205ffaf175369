//! A protocol-faithful fake Kubernetes API server: list and watch with
//! resourceVersion, bookmarks, `410 Gone` (as the watch `ERROR` event the API server
//! sends) for compacted versions, and restarts that cut every open watch.
//! Collections are served cluster-wide and per namespace
//! (`/api/v1/namespaces/{ns}/services`), with equality label and field selectors
//! (`labelSelector=k=v`, `fieldSelector=metadata.name=x`) on lists and watches.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// path → (kind, apiVersion) of the collections served.
const KINDS: &[(&str, &str, &str)] = &[
    ("/api/v1/pods", "Pod", "v1"),
    ("/api/v1/services", "Service", "v1"),
    ("/api/v1/nodes", "Node", "v1"),
    ("/apis/apps/v1/replicasets", "ReplicaSet", "apps/v1"),
    ("/apis/apps/v1/deployments", "Deployment", "apps/v1"),
    ("/apis/batch/v1/jobs", "Job", "batch/v1"),
    (
        "/apis/discovery.k8s.io/v1/endpointslices",
        "EndpointSlice",
        "discovery.k8s.io/v1",
    ),
];

#[derive(Default)]
struct Inner {
    rv: u64,
    /// kind → key → object
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    /// (rv, kind, type, object)
    events: Vec<(u64, &'static str, &'static str, Value)>,
    compacted: u64,
    generation: u64,
    lists: BTreeMap<&'static str, u64>,
    /// Every request's path and query, in order.
    requests: Vec<String>,
}

/// Handle to the fake server.
#[derive(Clone, Default)]
pub struct FakeKube {
    inner: Arc<Mutex<Inner>>,
}

fn kind_of(obj: &Value) -> &'static str {
    let k = obj["kind"].as_str().expect("fixture has a kind");
    KINDS
        .iter()
        .find(|(_, kind, _)| *kind == k)
        .expect("known kind")
        .1
}

fn key_of(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj["metadata"]["namespace"].as_str().unwrap_or(""),
        obj["metadata"]["name"].as_str().unwrap()
    )
}

#[derive(serde::Deserialize)]
struct Params {
    watch: Option<String>,
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
    #[serde(rename = "allowWatchBookmarks")]
    bookmarks: Option<String>,
    #[serde(rename = "timeoutSeconds")]
    timeout: Option<u64>,
    #[serde(rename = "labelSelector")]
    label_selector: Option<String>,
    #[serde(rename = "fieldSelector")]
    field_selector: Option<String>,
}

/// A collection path without its namespace segment, and the namespace.
fn split_namespace(path: &str) -> (String, Option<String>) {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.iter().position(|p| *p == "namespaces") {
        Some(i) if parts.len() == i + 3 => {
            let mut rest = parts[..i].to_vec();
            rest.push(parts[i + 2]);
            (rest.join("/"), Some(parts[i + 1].to_string()))
        }
        _ => (path.to_string(), None),
    }
}

/// Which objects a request selects: its namespace and equality selectors.
#[derive(Clone)]
struct Selection {
    namespace: Option<String>,
    labels: Vec<(String, String)>,
    fields: Vec<(String, String)>,
}

impl Selection {
    /// `None` for selector syntax the fake does not speak (set-based, `!=`).
    fn new(namespace: Option<String>, p: &Params) -> Option<Self> {
        let pairs = |s: &Option<String>| -> Option<Vec<(String, String)>> {
            let Some(s) = s.as_deref().filter(|s| !s.is_empty()) else {
                return Some(Vec::new());
            };
            s.split(',')
                .map(|term| {
                    let (k, v) = term.split_once("==").or_else(|| term.split_once('='))?;
                    (!k.ends_with('!')).then(|| (k.trim().to_string(), v.trim().to_string()))
                })
                .collect()
        };
        Some(Selection {
            namespace,
            labels: pairs(&p.label_selector)?,
            fields: pairs(&p.field_selector)?,
        })
    }

    fn matches(&self, obj: &Value) -> bool {
        let meta = &obj["metadata"];
        self.namespace
            .as_deref()
            .is_none_or(|ns| meta["namespace"] == ns)
            && self
                .labels
                .iter()
                .all(|(k, v)| meta["labels"][k.as_str()] == v.as_str())
            && self.fields.iter().all(|(k, v)| match k.as_str() {
                "metadata.name" => meta["name"] == v.as_str(),
                "metadata.namespace" => meta["namespace"] == v.as_str(),
                _ => false,
            })
    }
}

impl FakeKube {
    /// Serves on 127.0.0.1, port 0; returns the address.
    pub async fn serve(&self) -> SocketAddr {
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    /// Creates or updates an object (with `kind` and `apiVersion`, as clients send them).
    pub fn apply(&self, mut obj: Value) {
        let mut s = self.inner.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if obj["metadata"]["uid"].is_null() {
            obj["metadata"]["uid"] = json!(format!("uid-{}-{rv}", key_of(&obj)));
        }
        if obj["metadata"]["creationTimestamp"].is_null() {
            obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        let kind = kind_of(&obj);
        let existing = s
            .objects
            .entry(kind)
            .or_default()
            .insert(key_of(&obj), obj.clone());
        let ty = if existing.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.events.push((rv, kind, ty, obj));
    }

    /// Deletes an object by kind and `namespace/name`.
    pub fn delete(&self, kind: &'static str, key: &str) {
        let mut s = self.inner.lock().unwrap();
        let Some(mut obj) = s.objects.get_mut(kind).and_then(|m| m.remove(key)) else {
            panic!("no {kind} {key}");
        };
        s.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        let rv = s.rv;
        s.events.push((rv, kind, "DELETED", obj));
    }

    /// Forgets history up to now: watches from older versions get `410 Gone`.
    pub fn compact(&self) {
        let mut s = self.inner.lock().unwrap();
        s.compacted = s.rv;
        let compacted = s.compacted;
        s.events.retain(|e| e.0 > compacted);
    }

    /// Like an API server restart: every open watch is cut.
    pub fn restart(&self) {
        self.inner.lock().unwrap().generation += 1;
    }

    /// Every request served so far (path and query).
    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// How many lists of `kind` were served.
    pub fn lists(&self, kind: &str) -> u64 {
        self.inner
            .lock()
            .unwrap()
            .lists
            .iter()
            .find(|(k, _)| **k == kind)
            .map_or(0, |(_, n)| *n)
    }
}

async fn handle(State(kube): State<FakeKube>, uri: Uri, Query(p): Query<Params>) -> Response {
    kube.inner.lock().unwrap().requests.push(uri.to_string());
    let (path, namespace) = split_namespace(uri.path());
    let Some(&(_, kind, api_version)) = KINDS.iter().find(|(p, _, _)| *p == path) else {
        let status = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":format!("the server could not find the requested resource ({})", uri.path()),
            "reason":"NotFound","code":404});
        return (StatusCode::NOT_FOUND, axum::Json(status)).into_response();
    };
    let Some(selection) = Selection::new(namespace, &p) else {
        let status = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":"unsupported selector","reason":"BadRequest","code":400});
        return (StatusCode::BAD_REQUEST, axum::Json(status)).into_response();
    };
    let watching = matches!(p.watch.as_deref(), Some("true" | "1"));
    if !watching {
        let mut s = kube.inner.lock().unwrap();
        *s.lists.entry(kind).or_default() += 1;
        let items: Vec<Value> = s
            .objects
            .get(kind)
            .map(|m| {
                m.values()
                    .filter(|o| selection.matches(o))
                    .map(|o| {
                        // List items carry no kind/apiVersion, as the API server sends them.
                        let mut o = o.clone();
                        o.as_object_mut().unwrap().remove("kind");
                        o.as_object_mut().unwrap().remove("apiVersion");
                        o
                    })
                    .collect()
            })
            .unwrap_or_default();
        let list = json!({"kind": format!("{kind}List"), "apiVersion": api_version,
            "metadata": {"resourceVersion": s.rv.to_string()}, "items": items});
        return axum::Json(list).into_response();
    }
    let from: u64 = p
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = matches!(p.bookmarks.as_deref(), Some("true" | "1"));
    let deadline = Instant::now() + Duration::from_secs(p.timeout.unwrap_or(60).min(60));
    let (generation, gone) = {
        let s = kube.inner.lock().unwrap();
        (s.generation, from < s.compacted)
    };
    let line = |v: Value| Bytes::from(format!("{v}\n"));
    if gone {
        let status = json!({"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},
            "status":"Failure","message":format!("too old resource version: {from}"),"reason":"Expired","code":410}});
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(line(status)))
            .unwrap();
    }
    let state = (kube, from, Instant::now());
    let stream = futures::stream::unfold(state, move |(kube, mut cursor, mut last_bookmark)| {
        let selection = selection.clone();
        async move {
            loop {
                if Instant::now() > deadline {
                    return None;
                }
                {
                    let s = kube.inner.lock().unwrap();
                    if s.generation != generation {
                        return None;
                    }
                    let new: Vec<Bytes> = s
                        .events
                        .iter()
                        .filter(|e| e.0 > cursor && e.1 == kind && selection.matches(&e.3))
                        .map(|e| line(json!({"type": e.2, "object": e.3})))
                        .collect();
                    let rv = s.rv;
                    if !new.is_empty() {
                        cursor = rv;
                        let chunk: Vec<u8> = new.concat();
                        return Some((
                            Ok::<_, std::convert::Infallible>(Bytes::from(chunk)),
                            (kube.clone(), cursor, last_bookmark),
                        ));
                    }
                    if bookmarks
                        && last_bookmark.elapsed() > Duration::from_millis(200)
                        && rv > cursor
                    {
                        cursor = rv;
                        last_bookmark = Instant::now();
                        let bm = json!({"type":"BOOKMARK","object":{"kind":kind,"apiVersion":api_version,
                        "metadata":{"resourceVersion":rv.to_string()}}});
                        return Some((Ok(line(bm)), (kube.clone(), cursor, last_bookmark)));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}
