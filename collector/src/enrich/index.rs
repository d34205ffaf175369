//! IP → identity over time.
//!
//! Every address holds a few [`Span`]s: who owned it from when until when. A lookup
//! names the owner at the flow's time, so a deleted pod keeps its name for its late
//! flows (for `grace` after deletion) and an address reused by a new pod is attributed
//! by time, not by whoever was seen last.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use flowlake_schemas::Identity;

/// Who put a span into the index; updates and deletions find their spans by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// A pod, by uid.
    Pod(String),
    /// A service's cluster IP, by `namespace/name`.
    Service(String),
    /// A node address, by node name.
    Node(String),
    /// An entry of a static identity file.
    Static,
}

impl Owner {
    /// Tie-break between spans that both cover a time: a pod beats a service beats a node.
    fn priority(&self) -> u8 {
        match self {
            Owner::Pod(_) | Owner::Static => 3,
            Owner::Service(_) => 2,
            Owner::Node(_) => 1,
        }
    }
}

/// One owner of an address over `[from, until]`; `until` is `None` while it lives.
#[derive(Debug, Clone)]
struct Span {
    owner: Owner,
    from: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    identity: Arc<Identity>,
}

/// A fast, non-cryptographic hasher for address keys (the index is not exposed to
/// untrusted keys: addresses come from our own datapath and the API server).
#[derive(Default)]
pub struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(buf))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

type AddrMap<V> = HashMap<IpAddr, V, BuildHasherDefault<AddrHasher>>;

/// The address index. Not synchronised: the [`super::Enricher`] wraps it in a lock.
#[derive(Debug, Default)]
pub struct IpIndex {
    spans: AddrMap<Vec<Span>>,
    grace: Duration,
}

impl IpIndex {
    /// An empty index keeping deleted owners for `grace`.
    pub fn new(grace: Duration) -> Self {
        IpIndex {
            spans: AddrMap::default(),
            grace,
        }
    }

    /// The owner of `ip` at `at`: the latest span that started by `at` and had not
    /// ended more than the grace period before it; failing that (clock skew, a flow
    /// stamped just before its pod was seen), the live owner.
    pub fn lookup(&self, ip: IpAddr, at: DateTime<Utc>) -> Option<&Arc<Identity>> {
        let spans = self.spans.get(&ip)?;
        if let [only] = spans.as_slice() {
            // The common case: one owner, alive or within its grace period.
            let covers = only.from <= at || only.until.is_none();
            return (covers && only.until.is_none_or(|u| at <= u + self.grace))
                .then_some(&only.identity);
        }
        let covering = spans
            .iter()
            .filter(|s| s.from <= at && s.until.is_none_or(|u| at <= u + self.grace))
            .max_by_key(|s| (s.from, s.owner.priority()));
        covering
            .or_else(|| {
                spans
                    .iter()
                    .filter(|s| s.until.is_none())
                    .max_by_key(|s| s.owner.priority())
            })
            .map(|s| &s.identity)
    }

    /// `owner` holds `ip` (since `from` at the earliest) with `identity`. A live span of
    /// the same owner is updated in place; otherwise a new span starts, no earlier than
    /// the end of the previous owner's tenure.
    pub fn upsert(
        &mut self,
        ip: IpAddr,
        owner: &Owner,
        from: DateTime<Utc>,
        identity: Arc<Identity>,
    ) {
        let spans = self.spans.entry(ip).or_default();
        if let Some(live) = spans
            .iter_mut()
            .find(|s| &s.owner == owner && s.until.is_none())
        {
            if live.identity != identity {
                live.identity = identity;
            }
            return;
        }
        let after_previous = spans.iter().filter_map(|s| s.until).max();
        let from = after_previous.map_or(from, |u| u.max(from));
        spans.push(Span {
            owner: owner.clone(),
            from,
            until: None,
            identity,
        });
    }

    /// `owner` no longer holds `ip` from `at` (its identity stays for the grace period).
    pub fn release(&mut self, ip: IpAddr, owner: &Owner, at: DateTime<Utc>) {
        if let Some(spans) = self.spans.get_mut(&ip) {
            for s in spans
                .iter_mut()
                .filter(|s| &s.owner == owner && s.until.is_none())
            {
                s.until = Some(at.max(s.from));
            }
        }
    }

    /// Addresses `owner` holds now.
    pub fn live_addresses(&self, owner: &Owner) -> Vec<IpAddr> {
        self.spans
            .iter()
            .filter(|(_, spans)| spans.iter().any(|s| &s.owner == owner && s.until.is_none()))
            .map(|(ip, _)| *ip)
            .collect()
    }

    /// Forgets owners whose grace period ended before `now`; returns how many spans went.
    pub fn prune(&mut self, now: DateTime<Utc>) -> usize {
        let grace = self.grace;
        let mut removed = 0;
        self.spans.retain(|_, spans| {
            let before = spans.len();
            spans.retain(|s| s.until.is_none_or(|u| u + grace >= now));
            removed += before - spans.len();
            !spans.is_empty()
        });
        removed
    }

    /// Every address a pod holds now, with the pod's identity.
    pub fn live_pods(&self) -> impl Iterator<Item = (IpAddr, &Arc<Identity>)> {
        self.spans.iter().flat_map(|(ip, spans)| {
            spans
                .iter()
                .filter(|s| matches!(s.owner, Owner::Pod(_)) && s.until.is_none())
                .map(move |s| (*ip, &s.identity))
        })
    }

    /// Addresses with at least one span.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// No address is known.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600 + s, 0).expect("valid")
    }

    fn id(pod: &str) -> Arc<Identity> {
        Arc::new(Identity {
            pod: Some(pod.into()),
            ..Identity::default()
        })
    }

    fn pod_of(ix: &IpIndex, ip: IpAddr, at: DateTime<Utc>) -> Option<String> {
        ix.lookup(ip, at).and_then(|i| i.pod.clone())
    }

    #[test]
    fn deleted_owner_is_kept_for_the_grace_period_only() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut ix = IpIndex::new(Duration::seconds(30));
        ix.upsert(ip, &Owner::Pod("a".into()), t(0), id("a"));
        ix.release(ip, &Owner::Pod("a".into()), t(100));
        assert_eq!(pod_of(&ix, ip, t(99)).as_deref(), Some("a"));
        assert_eq!(pod_of(&ix, ip, t(125)).as_deref(), Some("a"));
        assert_eq!(pod_of(&ix, ip, t(131)), None);
        assert_eq!(ix.prune(t(129)), 0);
        assert_eq!(ix.prune(t(131)), 1);
        assert!(ix.is_empty());
    }

    #[test]
    fn reused_address_is_attributed_by_time() {
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let mut ix = IpIndex::new(Duration::seconds(60));
        ix.upsert(ip, &Owner::Pod("old".into()), t(0), id("old"));
        ix.release(ip, &Owner::Pod("old".into()), t(100));
        // The new pod was created before the old one let go of the address.
        ix.upsert(ip, &Owner::Pod("new".into()), t(90), id("new"));
        assert_eq!(pod_of(&ix, ip, t(95)).as_deref(), Some("old"));
        assert_eq!(pod_of(&ix, ip, t(101)).as_deref(), Some("new"));
        assert_eq!(pod_of(&ix, ip, t(500)).as_deref(), Some("new"));
        // A flow stamped before anyone was seen goes to the live owner.
        let ip2: IpAddr = "10.0.0.3".parse().unwrap();
        ix.upsert(ip2, &Owner::Pod("c".into()), t(50), id("c"));
        assert_eq!(pod_of(&ix, ip2, t(10)).as_deref(), Some("c"));
    }

    #[test]
    fn pod_beats_node_at_the_same_time_and_updates_are_in_place() {
        let ip: IpAddr = "10.0.0.4".parse().unwrap();
        let mut ix = IpIndex::new(Duration::seconds(60));
        ix.upsert(ip, &Owner::Node("n1".into()), t(0), id("node"));
        ix.upsert(ip, &Owner::Pod("p".into()), t(0), id("p1"));
        ix.upsert(ip, &Owner::Pod("p".into()), t(5), id("p2"));
        assert_eq!(pod_of(&ix, ip, t(10)).as_deref(), Some("p2"));
        assert_eq!(ix.live_addresses(&Owner::Pod("p".into())), vec![ip]);
    }
}
