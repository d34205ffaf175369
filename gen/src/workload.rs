//! Flow records for one hour of the synthetic cluster's traffic.
//!
//! Each conversation (a client pod calling a service, DNS, or the outside world)
//! becomes one row per direction and observation point, exactly as the collector
//! reports them: `from_pod` on the sender's node, `to_network`/`from_network` when
//! the conversation crosses nodes, `to_pod` on the receiver's node.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use flowlake_schemas::{
    DnsInfo, Endpoint, FlowRecord, ObservationPoint, Protocol, TcpHealth, Verdict,
};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};

use crate::topology::Topology;
use crate::zipf::Zipf;

/// Kernel drop reasons (`enum skb_drop_reason`) with their share of drops.
pub const DROP_REASONS: &[(&str, u32)] = &[
    ("NETFILTER_DROP", 40),
    ("NO_SOCKET", 15),
    ("TCP_INVALID_SEQUENCE", 10),
    ("SOCKET_RCVBUFF", 8),
    ("NEIGH_FAILED", 7),
    ("QDISC_DROP", 5),
    ("TCP_OLD_DATA", 5),
    ("OTHERHOST", 4),
    ("IP_RPFILTER", 3),
    ("PKT_TOO_SMALL", 3),
];

const TCP_FIN: u16 = 0x01;
const TCP_SYN: u16 = 0x02;
const TCP_RST: u16 = 0x04;
const TCP_PSH: u16 = 0x08;
const TCP_ACK: u16 = 0x10;

/// Parameters of one hour's stream.
#[derive(Debug, Clone)]
pub struct HourPlan {
    /// First interval start of the stream (inclusive).
    pub from: DateTime<Utc>,
    /// End of the stream (exclusive).
    pub to: DateTime<Utc>,
    /// Reporting interval length.
    pub interval: Duration,
    /// Rows per second of simulated time.
    pub rate: f64,
    /// Seconds from the start of the whole run to `from`, to spread rows exactly.
    pub offset_secs: f64,
    pub seed: u64,
    /// Share of conversations with dropped packets.
    pub drop_share: f64,
}

/// One side of a conversation at one observation point.
struct Side<'a> {
    node: &'a Arc<str>,
    point: ObservationPoint,
    interface: Arc<str>,
}

/// Endpoints and sizing of one direction of a conversation.
#[derive(Clone)]
struct Leg {
    src: Endpoint,
    dst: Endpoint,
    packets: u64,
    bytes: u64,
    flags: Option<u16>,
}

/// An iterator over the records of one hour, in interval order.
pub struct HourStream {
    topo: Arc<Topology>,
    plan: HourPlan,
    rng: StdRng,
    talkers: Zipf,
    clients: Vec<usize>,
    interval_start: DateTime<Utc>,
    interval_budget: u64,
    pending: VecDeque<FlowRecord>,
    eth0: Arc<str>,
}

fn rows_before(rate: f64, secs: f64) -> u64 {
    (rate * secs + 1e-6).floor() as u64
}

impl HourStream {
    pub fn new(topo: Arc<Topology>, plan: HourPlan) -> Self {
        let mut clients = topo.client_pods();
        let mut rng = StdRng::seed_from_u64(plan.seed);
        // Talker rank is a fixed random order of pods for the whole run.
        let mut order_rng = StdRng::seed_from_u64(0x5eed ^ topo.pods.len() as u64);
        shuffle(&mut clients, &mut order_rng);
        let talkers = Zipf::new(clients.len(), 1.1);
        let interval_start = plan.from;
        let mut s = HourStream {
            topo,
            interval_start,
            interval_budget: 0,
            pending: VecDeque::new(),
            talkers,
            clients,
            eth0: "eth0".into(),
            rng: StdRng::seed_from_u64(rng.random()),
            plan,
        };
        s.interval_budget = s.budget_of(interval_start);
        s
    }

    /// Rows that belong to the interval starting at `start` (exact in total).
    fn budget_of(&self, start: DateTime<Utc>) -> u64 {
        let secs = |t: DateTime<Utc>| {
            self.plan.offset_secs + (t - self.plan.from).num_milliseconds() as f64 / 1000.0
        };
        let end = (start + self.plan.interval).min(self.plan.to);
        rows_before(self.plan.rate, secs(end)) - rows_before(self.plan.rate, secs(start))
    }

    fn conversation(&mut self) {
        let client = self.clients[self.talkers.sample(&mut self.rng)];
        let roll: f64 = self.rng.random();
        if roll < 0.08 {
            self.dns(client);
        } else if roll < 0.10 {
            self.external(client);
        } else {
            self.call(client);
        }
    }

    fn ephemeral(&mut self) -> u16 {
        self.rng.random_range(32768..61000)
    }

    fn packets(&mut self, mean_log: f64) -> u64 {
        let n: f64 = self.rng.random::<f64>() * 2.0 - 1.0;
        (mean_log + 1.5 * n).exp().ceil().max(1.0) as u64
    }

    fn pod_end(&self, pod: usize, port: Option<u16>) -> Endpoint {
        let p = &self.topo.pods[pod];
        Endpoint {
            ip: p.ip,
            port,
            identity: Some(Arc::clone(&p.identity)),
        }
    }

    fn call(&mut self, client: usize) {
        let cw = self.topo.pods[client].workload;
        let Some(&callee) = self.topo.workloads[cw].calls.choose(&mut self.rng) else {
            return self.external(client);
        };
        let server = *self.topo.workloads[callee]
            .pods
            .choose(&mut self.rng)
            .expect("workloads have pods");
        let port = self.topo.workloads[callee].port;
        let eport = self.ephemeral();
        let new_conn = self.rng.random_bool(0.3);
        let closing = self.rng.random_bool(0.3);
        let reset = self.rng.random_bool(0.01);
        let fwd_packets = self.packets(2.0);
        let rev_packets = self.packets(2.3);
        let mut flags = TCP_ACK | TCP_PSH;
        if new_conn {
            flags |= TCP_SYN;
        }
        if closing {
            flags |= TCP_FIN;
        }
        let via_service = self.rng.random_bool(0.7);
        let mut fwd = Leg {
            src: self.pod_end(client, Some(eport)),
            dst: self.pod_end(server, Some(port)),
            packets: fwd_packets,
            bytes: fwd_packets * self.rng.random_range(66..700),
            flags: Some(flags),
        };
        let rev = Leg {
            src: self.pod_end(server, Some(port)),
            dst: self.pod_end(client, Some(eport)),
            packets: rev_packets,
            bytes: rev_packets * self.rng.random_range(66..1500),
            flags: Some(if reset { flags | TCP_RST } else { flags }),
        };
        let w = &self.topo.workloads[callee];
        let cross_zone =
            self.topo.pods[client].identity.zone != self.topo.pods[server].identity.zone;
        let base = w.base_rtt_us * if cross_zone { 1.6 } else { 1.0 };
        let loss = w.loss;
        let service = via_service.then(|| (w.service_ip, Arc::clone(&w.service_identity)));
        let tcp = |rng: &mut StdRng, packets: u64, handshake: bool| {
            let jitter: f64 = rng.random::<f64>();
            TcpHealth {
                retransmits: (0..packets).filter(|_| rng.random_bool(loss)).count() as u32,
                resets: u32::from(reset),
                srtt_us: Some((base * (0.7 + jitter * jitter * 2.0)) as u64),
                handshake_us: handshake.then_some((base * (0.8 + jitter)) as u64),
            }
        };
        let fwd_tcp = tcp(&mut self.rng, fwd_packets, new_conn);
        let rev_tcp = tcp(&mut self.rng, rev_packets, false);
        let dropped = self.rng.random_bool(self.plan.drop_share);
        if let Some((ip, id)) = &service {
            // kube-proxy DNAT: the client's side still sees the ClusterIP.
            fwd.dst = Endpoint {
                ip: *ip,
                port: Some(port),
                identity: Some(Arc::clone(id)),
            };
        }
        self.emit_pod_to_pod(
            client,
            server,
            fwd,
            Protocol::Tcp,
            Some(fwd_tcp),
            None,
            service.as_ref().map(|s| s.0),
        );
        self.emit_pod_to_pod(
            server,
            client,
            rev,
            Protocol::Tcp,
            Some(rev_tcp),
            None,
            None,
        );
        if dropped {
            self.drop_row(client, server, eport, port);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_pod_to_pod(
        &mut self,
        from: usize,
        to: usize,
        leg: Leg,
        protocol: Protocol,
        tcp: Option<TcpHealth>,
        dns: Option<(DnsInfo, DnsInfo)>,
        service_ip: Option<IpAddr>,
    ) {
        let topo = Arc::clone(&self.topo);
        let (fp, tp) = (&topo.pods[from], &topo.pods[to]);
        let (fnode, tnode) = (&topo.nodes[fp.node].name, &topo.nodes[tp.node].name);
        let (send_dns, recv_dns) = match dns {
            Some((q, r)) => (Some(q), Some(r)),
            None => (None, None),
        };
        let sender = Side {
            node: fnode,
            point: ObservationPoint::FromPod,
            interface: Arc::clone(&fp.interface),
        };
        self.push(&sender, &leg, protocol, tcp, send_dns);
        // After DNAT every later observation sees the backend pod.
        let mut leg = leg;
        if service_ip.is_some() {
            leg.dst = self.pod_end(to, leg.dst.port);
        }
        if fp.node != tp.node {
            let out = Side {
                node: fnode,
                point: ObservationPoint::ToNetwork,
                interface: Arc::clone(&self.eth0),
            };
            self.push(&out, &leg, protocol, None, None);
            let inn = Side {
                node: tnode,
                point: ObservationPoint::FromNetwork,
                interface: Arc::clone(&self.eth0),
            };
            self.push(&inn, &leg, protocol, None, None);
        }
        let receiver = Side {
            node: tnode,
            point: ObservationPoint::ToPod,
            interface: Arc::clone(&tp.interface),
        };
        self.push(&receiver, &leg, protocol, None, recv_dns);
    }

    fn dns(&mut self, client: usize) {
        let dns_w = &self.topo.workloads[self.topo.dns];
        let server = *dns_w.pods.choose(&mut self.rng).expect("dns has pods");
        let svc = (dns_w.service_ip, Arc::clone(&dns_w.service_identity));
        let callee = &self.topo.workloads[self.rng.random_range(1..self.topo.workloads.len())];
        let roll: f64 = self.rng.random();
        let (query, rcode, latency_us) = if roll < 0.05 {
            // A search-path expansion that does not exist.
            let q = format!(
                "{0}.{1}.svc.cluster.local.{1}.svc.cluster.local",
                callee.name, callee.namespace
            );
            (q, "NXDOMAIN", self.rng.random_range(150..900))
        } else if roll < 0.06 {
            (
                "api.partner.example.com".to_string(),
                "SERVFAIL",
                self.rng.random_range(1_000_000..5_000_000),
            )
        } else {
            let q = format!("{}.{}.svc.cluster.local", callee.name, callee.namespace);
            (q, "NOERROR", self.rng.random_range(120..2_500))
        };
        let aaaa = self.rng.random_bool(0.4);
        let answers = if rcode == "NOERROR" && !aaaa {
            vec![callee.service_ip.to_string()]
        } else {
            vec![]
        };
        let id: u16 = self.rng.random();
        let qtype = if aaaa { "AAAA" } else { "A" };
        let q = DnsInfo {
            id,
            query: Some(query.clone()),
            qtype: Some(qtype.into()),
            rcode: None,
            answers: vec![],
            latency_us: None,
        };
        let r = DnsInfo {
            id,
            query: Some(query),
            qtype: Some(qtype.into()),
            rcode: Some(rcode.into()),
            answers,
            latency_us: Some(latency_us),
        };
        let eport = self.ephemeral();
        let qlen = 60 + self.rng.random_range(0..40);
        let mut fwd = Leg {
            src: self.pod_end(client, Some(eport)),
            dst: self.pod_end(server, Some(53)),
            packets: 1,
            bytes: qlen,
            flags: None,
        };
        fwd.dst = Endpoint {
            ip: svc.0,
            port: Some(53),
            identity: Some(svc.1),
        };
        let rev = Leg {
            src: self.pod_end(server, Some(53)),
            dst: self.pod_end(client, Some(eport)),
            packets: 1,
            bytes: qlen + 16 * r.answers.len() as u64 + 12,
            flags: None,
        };
        // The query is reported on the client's from_pod row, the matched response on
        // the client's to_pod row.
        self.emit_pod_to_pod(
            client,
            server,
            fwd,
            Protocol::Udp,
            None,
            Some((q, DnsInfo::default())),
            Some(svc.0),
        );
        self.emit_pod_to_pod(
            server,
            client,
            rev,
            Protocol::Udp,
            None,
            Some((DnsInfo::default(), r)),
            None,
        );
        // Rows carrying DnsInfo::default() are placeholders: strip them.
        for row in self.pending.iter_mut() {
            if row.dns.as_ref().is_some_and(|d| d.query.is_none()) {
                row.dns = None;
            }
        }
    }

    fn external(&mut self, client: usize) {
        let topo = Arc::clone(&self.topo);
        let p = &topo.pods[client];
        let node = &topo.nodes[p.node];
        let ext = *topo
            .external
            .choose(&mut self.rng)
            .expect("external addresses");
        let eport = self.ephemeral();
        let packets = self.packets(2.5);
        let leg = Leg {
            src: self.pod_end(client, Some(eport)),
            dst: Endpoint::new(ext, Some(443)),
            packets,
            bytes: packets * 400,
            flags: Some(TCP_ACK | TCP_PSH),
        };
        let from_pod = Side {
            node: &node.name,
            point: ObservationPoint::FromPod,
            interface: Arc::clone(&p.interface),
        };
        let srtt = self.rng.random_range(8_000..40_000);
        self.push(
            &from_pod,
            &leg,
            Protocol::Tcp,
            Some(TcpHealth {
                srtt_us: Some(srtt),
                ..TcpHealth::default()
            }),
            None,
        );
        // Masqueraded to the node address on the way out.
        let node_end = |port| Endpoint {
            ip: node.ip,
            port: Some(port),
            identity: Some(Arc::clone(&node.identity)),
        };
        let snat = Leg {
            src: node_end(eport),
            ..leg.clone()
        };
        let to_net = Side {
            node: &node.name,
            point: ObservationPoint::ToNetwork,
            interface: Arc::clone(&self.eth0),
        };
        self.push(&to_net, &snat, Protocol::Tcp, None, None);
        let rpackets = self.packets(3.0);
        let reply = Leg {
            src: Endpoint::new(ext, Some(443)),
            dst: node_end(eport),
            packets: rpackets,
            bytes: rpackets * 1200,
            flags: Some(TCP_ACK | TCP_PSH),
        };
        let from_net = Side {
            node: &node.name,
            point: ObservationPoint::FromNetwork,
            interface: Arc::clone(&self.eth0),
        };
        self.push(&from_net, &reply, Protocol::Tcp, None, None);
        let unsnat = Leg {
            dst: self.pod_end(client, Some(eport)),
            ..reply
        };
        let to_pod = Side {
            node: &node.name,
            point: ObservationPoint::ToPod,
            interface: Arc::clone(&p.interface),
        };
        self.push(&to_pod, &unsnat, Protocol::Tcp, None, None);
    }

    fn drop_row(&mut self, client: usize, server: usize, eport: u16, port: u16) {
        let total: u32 = DROP_REASONS.iter().map(|(_, w)| w).sum();
        let mut pick = self.rng.random_range(0..total);
        let reason = DROP_REASONS
            .iter()
            .find(|(_, w)| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .map(|(r, _)| *r)
            .unwrap_or("NETFILTER_DROP");
        let packets = self.rng.random_range(1..20);
        let leg = Leg {
            src: self.pod_end(client, Some(eport)),
            dst: self.pod_end(server, Some(port)),
            packets,
            bytes: packets * 74,
            flags: Some(TCP_SYN),
        };
        let topo = Arc::clone(&self.topo);
        let sp = &topo.pods[server];
        let side = Side {
            node: &topo.nodes[sp.node].name,
            point: ObservationPoint::ToPod,
            interface: Arc::clone(&sp.interface),
        };
        self.push(&side, &leg, Protocol::Tcp, None, None);
        let row = self.pending.back_mut().expect("just pushed");
        row.verdict = Verdict::Dropped;
        row.drop_reason = Some(reason.into());
    }

    fn push(
        &mut self,
        side: &Side<'_>,
        leg: &Leg,
        protocol: Protocol,
        tcp: Option<TcpHealth>,
        dns: Option<DnsInfo>,
    ) {
        self.pending.push_back(FlowRecord {
            interval_start: self.interval_start,
            interval_end: self.interval_start + self.plan.interval,
            cluster: Arc::clone(&self.topo.cluster),
            node: Arc::clone(side.node),
            observation_point: side.point,
            interface: Some(Arc::clone(&side.interface)),
            protocol,
            src: leg.src.clone(),
            dst: leg.dst.clone(),
            icmp: None,
            packets: leg.packets,
            bytes: leg.bytes,
            wire_packets: None,
            tcp_flags: if protocol == Protocol::Tcp {
                leg.flags
            } else {
                None
            },
            verdict: Verdict::Forwarded,
            drop_reason: None,
            tcp,
            dns,
        });
    }
}

fn shuffle<T>(v: &mut [T], rng: &mut StdRng) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}

impl Iterator for HourStream {
    type Item = FlowRecord;

    fn next(&mut self) -> Option<FlowRecord> {
        loop {
            if self.interval_budget > 0 {
                if self.pending.is_empty() {
                    self.conversation();
                }
                if let Some(r) = self.pending.pop_front() {
                    self.interval_budget -= 1;
                    return Some(r);
                }
                continue;
            }
            // Interval full: whatever is left of the last conversation is cut.
            self.pending.clear();
            self.interval_start += self.plan.interval;
            if self.interval_start >= self.plan.to {
                return None;
            }
            self.interval_budget = self.budget_of(self.interval_start);
        }
    }
}
