//! Watching the cluster: kube-rs reflectors feeding the address index.
//!
//! Nodes, ReplicaSets and Jobs are reflected into stores used to resolve zones and
//! owner chains; Pods, Services and EndpointSlices drive the index. Every resource
//! runs its own watcher (initial list, bookmarks, re-list after `410 Gone`, reconnect
//! with backoff when the API server restarts) and forwards its events to one task that
//! owns the index updates. The index is never cleared: a re-list is diffed against
//! what was known, so an API server restart loses nothing and deletions missed while
//! disconnected are still noticed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Clock;
use super::identity::{self, Entries, LabelFilter, Lookups};
use super::index::{IpIndex, Owner};
use super::metrics::EnrichMetrics;

/// The label EndpointSlices carry naming their service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Events are boxed where objects are large (pods), so the channel stays small.
#[allow(clippy::large_enum_variant)] // Service events are moved once, through the channel.
enum ClusterEvent {
    Pod(Box<watcher::Event<Pod>>),
    Service(watcher::Event<Service>),
    Node(watcher::Event<Node>),
    Slice(watcher::Event<EndpointSlice>),
}

/// The same events, unboxed for matching.
#[allow(clippy::large_enum_variant)] // lives only on the indexing task's stack
enum Unboxed {
    Pod(watcher::Event<Pod>),
    Service(watcher::Event<Service>),
    Node(watcher::Event<Node>),
    Slice(watcher::Event<EndpointSlice>),
}

/// Wraps a resource's events for the indexing task.
type Forward<K> = Option<(
    mpsc::Sender<ClusterEvent>,
    fn(watcher::Event<K>) -> ClusterEvent,
)>;

/// Follows one resource: re-list diffs and per-owner address sets.
#[derive(Default)]
struct Tracker {
    known: HashMap<Owner, Vec<IpAddr>>,
    relisting: Option<HashSet<Owner>>,
}

impl Tracker {
    fn apply(
        &mut self,
        ix: &mut IpIndex,
        owner: Owner,
        entries: Option<Entries>,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        let new_ips = entries.as_ref().map(|e| e.ips.clone()).unwrap_or_default();
        if let Some(old) = self.known.get(&owner) {
            for ip in old.iter().filter(|ip| !new_ips.contains(ip)) {
                ix.release(*ip, &owner, now);
            }
        }
        if let Some(e) = entries {
            for ip in &e.ips {
                ix.upsert(*ip, &owner, e.since, Arc::clone(&e.identity));
            }
        }
        if let Some(seen) = self.relisting.as_mut() {
            seen.insert(owner.clone());
        }
        if new_ips.is_empty() {
            self.known.remove(&owner);
        } else {
            self.known.insert(owner, new_ips);
        }
    }

    fn delete(&mut self, ix: &mut IpIndex, owner: &Owner, now: chrono::DateTime<chrono::Utc>) {
        for ip in self.known.remove(owner).unwrap_or_default() {
            ix.release(ip, owner, now);
        }
    }

    fn init(&mut self) {
        self.relisting = Some(HashSet::new());
    }

    /// After a (re-)list: whatever was known but not listed was deleted meanwhile.
    fn init_done(&mut self, ix: &mut IpIndex, now: chrono::DateTime<chrono::Utc>) -> usize {
        let seen = self.relisting.take().unwrap_or_default();
        let gone: Vec<Owner> = self
            .known
            .keys()
            .filter(|o| !seen.contains(*o))
            .cloned()
            .collect();
        for o in &gone {
            self.delete(ix, o, now);
        }
        gone.len()
    }
}

/// Drops the parts of objects the enricher never reads, so cached objects stay small.
fn slim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    meta.annotations = None;
}

fn slim_pod(pod: &mut Pod) {
    slim(pod);
    if let Some(spec) = pod.spec.as_mut() {
        spec.containers.clear();
        spec.init_containers = None;
        spec.volumes = None;
        spec.tolerations = None;
        spec.affinity = None;
    }
    if let Some(status) = pod.status.as_mut() {
        status.conditions = None;
        status.container_statuses = None;
        status.init_container_statuses = None;
    }
}

/// A resource's watcher, with backoff, slimming and (optionally) a reflector store.
fn watch<K>(
    client: &Client,
    writer: Option<reflector::store::Writer<K>>,
    slimmer: fn(&mut K),
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let api: Api<K> = Api::all(client.clone());
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(slimmer);
    match writer {
        Some(w) => stream.reflect(w).left_stream(),
        None => stream.right_stream(),
    }
}

/// Runs a watcher until shutdown, forwarding events (or only feeding its store).
fn spawn_watch<K>(
    name: &'static str,
    stream: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    tx: Forward<K>,
    metrics: EnrichMetrics,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()>
where
    K: Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            let item = tokio::select! {
                _ = shutdown.cancelled() => return,
                item = stream.next() => item,
            };
            match item {
                None => return,
                Some(Err(e)) => {
                    metrics
                        .watch_errors
                        .get_or_create(&metrics.label(name))
                        .inc();
                    tracing::warn!(resource = name, error = %e, "watch failed, retrying with backoff");
                }
                Some(Ok(ev)) => {
                    metrics
                        .watch_events
                        .get_or_create(&metrics.label(name))
                        .inc();
                    if matches!(ev, watcher::Event::Init) {
                        metrics.relists.get_or_create(&metrics.label(name)).inc();
                        tracing::debug!(resource = name, "listing");
                    }
                    if let Some((tx, wrap)) = &tx
                        && tx.send(wrap(ev)).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
    })
}

/// The task that owns the index updates.
struct Indexer {
    index: Arc<RwLock<IpIndex>>,
    lookups: Lookups,
    pods: Store<Pod>,
    labels: LabelFilter,
    clock: Clock,
    pod_tracker: Tracker,
    service_tracker: Tracker,
    node_tracker: Tracker,
    /// EndpointSlice → (service, the pods it names).
    slices: HashMap<String, (String, BTreeSet<(String, String)>)>,
    /// Pod (namespace, name) → the service whose endpoints name it.
    pod_services: HashMap<(String, String), String>,
}

impl Indexer {
    fn pod(&mut self, pod: &Pod) {
        let key = (pod.namespace().unwrap_or_default(), pod.name_any());
        let svc = self.pod_services.get(&key).map(String::as_str);
        let entries = identity::pod_entries(pod, svc, &self.lookups, &self.labels);
        let owner = Owner::Pod(pod.uid().unwrap_or_else(|| format!("{}/{}", key.0, key.1)));
        let now = (self.clock)();
        let mut ix = self.index.write().expect("index lock");
        self.pod_tracker.apply(&mut ix, owner, entries, now);
    }

    fn slice(&mut self, slice: &EndpointSlice, deleted: bool) {
        let name = format!(
            "{}/{}",
            slice.namespace().unwrap_or_default(),
            slice.name_any()
        );
        let service = slice
            .labels()
            .get(SERVICE_NAME_LABEL)
            .cloned()
            .unwrap_or_default();
        let pods: BTreeSet<(String, String)> = if deleted {
            BTreeSet::new()
        } else {
            slice
                .endpoints
                .iter()
                .flatten()
                .filter_map(|e| e.target_ref.as_ref())
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .filter_map(|r| Some((r.namespace.clone()?, r.name.clone()?)))
                .collect()
        };
        let old = self
            .slices
            .remove(&name)
            .map(|(_, p)| p)
            .unwrap_or_default();
        let mut touched: BTreeSet<(String, String)> = old.difference(&pods).cloned().collect();
        for p in &touched {
            self.pod_services.remove(p);
        }
        for p in &pods {
            if self.pod_services.get(p) != Some(&service) {
                self.pod_services.insert(p.clone(), service.clone());
                touched.insert(p.clone());
            }
        }
        if !pods.is_empty() {
            self.slices.insert(name, (service, pods));
        }
        for (ns, pod) in touched {
            if let Some(p) = self.pods.get(&ObjectRef::new(&pod).within(&ns)) {
                self.pod(&p);
            }
        }
    }

    fn handle(&mut self, ev: ClusterEvent) {
        use watcher::Event as E;
        let now = (self.clock)();
        let ev = match ev {
            ClusterEvent::Pod(p) => Unboxed::Pod(*p),
            ClusterEvent::Service(e) => Unboxed::Service(e),
            ClusterEvent::Node(e) => Unboxed::Node(e),
            ClusterEvent::Slice(e) => Unboxed::Slice(e),
        };
        match ev {
            Unboxed::Pod(E::Apply(p) | E::InitApply(p)) => self.pod(&p),
            Unboxed::Pod(E::Delete(p)) => {
                let owner = Owner::Pod(p.uid().unwrap_or_default());
                self.pod_tracker
                    .delete(&mut self.index.write().expect("index lock"), &owner, now);
            }
            Unboxed::Pod(E::Init) => self.pod_tracker.init(),
            Unboxed::Pod(E::InitDone) => {
                let gone = self
                    .pod_tracker
                    .init_done(&mut self.index.write().expect("index lock"), now);
                tracing::info!(resource = "pods", deleted_while_away = gone, "pods listed");
            }
            Unboxed::Service(ev) => {
                let mut ix = self.index.write().expect("index lock");
                let t = &mut self.service_tracker;
                let key = |s: &Service| {
                    Owner::Service(format!(
                        "{}/{}",
                        s.namespace().unwrap_or_default(),
                        s.name_any()
                    ))
                };
                match ev {
                    E::Apply(s) | E::InitApply(s) => t.apply(
                        &mut ix,
                        key(&s),
                        identity::service_entries(&s, &self.labels),
                        now,
                    ),
                    E::Delete(s) => t.delete(&mut ix, &key(&s), now),
                    E::Init => t.init(),
                    E::InitDone => {
                        t.init_done(&mut ix, now);
                    }
                }
            }
            Unboxed::Node(ev) => {
                let mut ix = self.index.write().expect("index lock");
                let t = &mut self.node_tracker;
                let key = |n: &Node| Owner::Node(n.name_any());
                match ev {
                    E::Apply(n) | E::InitApply(n) => {
                        t.apply(&mut ix, key(&n), identity::node_entries(&n), now)
                    }
                    E::Delete(n) => t.delete(&mut ix, &key(&n), now),
                    E::Init => t.init(),
                    E::InitDone => {
                        t.init_done(&mut ix, now);
                    }
                }
            }
            Unboxed::Slice(E::Apply(s) | E::InitApply(s)) => self.slice(&s, false),
            Unboxed::Slice(E::Delete(s)) => self.slice(&s, true),
            Unboxed::Slice(E::Init | E::InitDone) => {}
        }
    }
}

/// Handles to the running watchers.
pub struct ClusterWatch {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ClusterWatch {
    /// Waits for every watcher task to stop (after the shutdown token fires).
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts the watchers and the indexing task.
pub(super) fn start(
    client: Client,
    index: Arc<RwLock<IpIndex>>,
    labels: LabelFilter,
    clock: Clock,
    metrics: EnrichMetrics,
    shutdown: CancellationToken,
) -> ClusterWatch {
    let (nodes, node_w) = reflector::store();
    let (replica_sets, rs_w) = reflector::store();
    let (jobs, job_w) = reflector::store();
    let (pods, pod_w) = reflector::store();
    let lookups = Lookups {
        nodes: nodes.clone(),
        replica_sets: replica_sets.clone(),
        jobs: jobs.clone(),
    };
    let (tx, mut rx) = mpsc::channel(1024);
    let m = &metrics;
    let s = &shutdown;
    let mut tasks = vec![
        spawn_watch(
            "replicasets",
            watch::<ReplicaSet>(&client, Some(rs_w), slim),
            None,
            m.clone(),
            s.clone(),
        ),
        spawn_watch(
            "jobs",
            watch::<Job>(&client, Some(job_w), slim),
            None,
            m.clone(),
            s.clone(),
        ),
        spawn_watch(
            "nodes",
            watch::<Node>(&client, Some(node_w), slim),
            Some((tx.clone(), ClusterEvent::Node)),
            m.clone(),
            s.clone(),
        ),
        spawn_watch(
            "pods",
            watch::<Pod>(&client, Some(pod_w), slim_pod),
            Some((tx.clone(), |e| ClusterEvent::Pod(Box::new(e)))),
            m.clone(),
            s.clone(),
        ),
        spawn_watch(
            "services",
            watch::<Service>(&client, None, slim),
            Some((tx.clone(), ClusterEvent::Service)),
            m.clone(),
            s.clone(),
        ),
        spawn_watch(
            "endpointslices",
            watch::<EndpointSlice>(&client, None, slim),
            Some((tx, ClusterEvent::Slice)),
            m.clone(),
            s.clone(),
        ),
    ];
    let mut indexer = Indexer {
        index,
        lookups,
        pods,
        labels,
        clock,
        pod_tracker: Tracker::default(),
        service_tracker: Tracker::default(),
        node_tracker: Tracker::default(),
        slices: HashMap::new(),
        pod_services: HashMap::new(),
    };
    tasks.push(tokio::spawn(async move {
        // Owner chains and zones first, so pods are named right from the first event.
        let ready = async {
            let _ = nodes.wait_until_ready().await;
            let _ = replica_sets.wait_until_ready().await;
            let _ = jobs.wait_until_ready().await;
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ready => {}
        }
        tracing::info!("kubernetes lookups synced");
        let mut prune = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = rx.recv() => match ev {
                    Some(ev) => indexer.handle(ev),
                    None => return,
                },
                _ = prune.tick() => {
                    let now = (indexer.clock)();
                    let mut ix = indexer.index.write().expect("index lock");
                    ix.prune(now);
                    metrics.addresses.set(ix.len() as i64);
                }
            }
        }
    }));
    ClusterWatch { tasks }
}
