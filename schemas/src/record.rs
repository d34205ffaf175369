//! The typed flow record: one direction of one flow seen at one observation point in
//! one reporting interval.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::error::{Result, SchemaError};

/// Declares a string-valued enum with its canonical names, `as_str` and parsing.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The canonical text stored in the table.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = SchemaError;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(SchemaError::InvalidValue {
                        column: stringify!($name),
                        value: other.to_string(),
                    }),
                }
            }
        }
    };
}

named_enum! {
    /// Where on the node the packets were seen, from the local endpoint's point of view.
    ObservationPoint {
        /// Host side of a pod's interface, packets leaving the pod.
        FromPod => "from_pod",
        /// Host side of a pod's interface, packets entering the pod.
        ToPod => "to_pod",
        /// A node interface, packets arriving from the network.
        FromNetwork => "from_network",
        /// A node interface, packets leaving for the network.
        ToNetwork => "to_network",
    }
}

impl ObservationPoint {
    /// The traffic direction implied by the observation point.
    pub fn direction(self) -> Direction {
        match self {
            ObservationPoint::FromPod | ObservationPoint::ToNetwork => Direction::Egress,
            ObservationPoint::ToPod | ObservationPoint::FromNetwork => Direction::Ingress,
        }
    }
}

named_enum! {
    /// Direction relative to the local endpoint (pod or node) at the observation point.
    Direction {
        Ingress => "ingress",
        Egress => "egress",
    }
}

named_enum! {
    /// What happened to the packets.
    Verdict {
        Forwarded => "forwarded",
        Dropped => "dropped",
    }
}

/// IP protocol of the flow. Known protocols are stored by name, others by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    Sctp,
    Other(u8),
}

impl Protocol {
    /// The IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
            Protocol::Icmpv6 => 58,
            Protocol::Sctp => 132,
            Protocol::Other(n) => n,
        }
    }

    /// The protocol for an IANA protocol number.
    pub fn from_number(n: u8) -> Self {
        match n {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            1 => Protocol::Icmp,
            58 => Protocol::Icmpv6,
            132 => Protocol::Sctp,
            n => Protocol::Other(n),
        }
    }

    /// Name stored in the `protocol` column (`TCP`, `UDP`, `ICMP`, `ICMPv6`, `SCTP`,
    /// or the decimal protocol number).
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        match self {
            Protocol::Tcp => "TCP".into(),
            Protocol::Udp => "UDP".into(),
            Protocol::Icmp => "ICMP".into(),
            Protocol::Icmpv6 => "ICMPv6".into(),
            Protocol::Sctp => "SCTP".into(),
            Protocol::Other(n) => n.to_string().into(),
        }
    }

    /// Parses a name written by [`Protocol::name`].
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "ICMP" => Protocol::Icmp,
            "ICMPv6" => Protocol::Icmpv6,
            "SCTP" => Protocol::Sctp,
            other => match other.parse::<u8>() {
                Ok(n) => Protocol::from_number(n),
                Err(_) => {
                    return Err(SchemaError::InvalidValue {
                        column: "protocol",
                        value: other.to_string(),
                    });
                }
            },
        })
    }

    /// Whether the protocol carries ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp | Protocol::Sctp)
    }
}

/// Kubernetes identity of one end of a flow. Shared (`Arc`) between all the flows
/// of the same pod, service or node, so building records copies no strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub workload: Option<String>,
    pub workload_kind: Option<String>,
    /// Labels as sorted `(key, value)` pairs (already filtered by the allow-list).
    pub labels: Vec<(String, String)>,
    pub node: Option<String>,
    pub service: Option<String>,
    pub zone: Option<String>,
}

/// One end of a flow: its address, port and, when known, its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: Option<u16>,
    pub identity: Option<Arc<Identity>>,
}

impl Endpoint {
    /// An endpoint with no Kubernetes identity.
    pub fn new(ip: IpAddr, port: Option<u16>) -> Self {
        Endpoint {
            ip,
            port,
            identity: None,
        }
    }
}

/// TCP health measured for the flow in the interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpHealth {
    pub retransmits: u32,
    pub resets: u32,
    /// Smoothed round-trip time reported by the socket, in microseconds.
    pub srtt_us: Option<u64>,
    /// SYN to SYN-ACK time, in microseconds.
    pub handshake_us: Option<u64>,
}

/// DNS message carried by the flow (a query, or a response matched to its query).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsInfo {
    pub id: u16,
    pub query: Option<String>,
    pub qtype: Option<String>,
    /// Response code name; `None` for a query without a response yet.
    pub rcode: Option<String>,
    pub answers: Vec<String>,
    /// Query to response time in microseconds, when the response was matched.
    pub latency_us: Option<u64>,
}

/// One row of the flow table, minus the partition columns (derived from
/// `interval_start`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRecord {
    pub interval_start: DateTime<Utc>,
    pub interval_end: DateTime<Utc>,
    pub cluster: Arc<str>,
    pub node: Arc<str>,
    pub observation_point: ObservationPoint,
    pub interface: Option<Arc<str>>,
    pub protocol: Protocol,
    pub src: Endpoint,
    pub dst: Endpoint,
    pub icmp: Option<(u8, u8)>,
    /// Kernel buffers (`sk_buff`s): a GSO/GRO super-packet counts once.
    pub packets: u64,
    pub bytes: u64,
    /// Packets on the wire (a super-packet counts its segments); `None` where
    /// the source does not count segments (drop rows, other sources).
    pub wire_packets: Option<u64>,
    /// OR of the TCP flags seen (FIN=0x01 … CWR=0x80, NS=0x100).
    pub tcp_flags: Option<u16>,
    pub verdict: Verdict,
    /// Kernel drop reason name (`enum skb_drop_reason` without its prefix).
    pub drop_reason: Option<Arc<str>>,
    pub tcp: Option<TcpHealth>,
    pub dns: Option<DnsInfo>,
}

impl FlowRecord {
    /// IP version of the flow (4 or 6), from the source address.
    pub fn ip_version(&self) -> u8 {
        match self.src.ip {
            IpAddr::V4(_) => 4,
            IpAddr::V6(_) => 6,
        }
    }

    /// Direction implied by the observation point.
    pub fn direction(&self) -> Direction {
        self.observation_point.direction()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_round_trip() {
        for p in ObservationPoint::ALL {
            assert_eq!(p.as_str().parse::<ObservationPoint>().unwrap(), *p);
        }
        for v in Verdict::ALL {
            assert_eq!(v.as_str().parse::<Verdict>().unwrap(), *v);
        }
        assert!("sideways".parse::<Direction>().is_err());
    }

    #[test]
    fn protocol_names_round_trip() {
        for n in 0..=255u8 {
            let p = Protocol::from_number(n);
            assert_eq!(p.number(), n);
            assert_eq!(Protocol::parse(&p.name()).unwrap(), p);
        }
        assert!(Protocol::parse("tcp").is_err());
    }

    #[test]
    fn observation_point_implies_direction() {
        assert_eq!(ObservationPoint::FromPod.direction(), Direction::Egress);
        assert_eq!(ObservationPoint::ToPod.direction(), Direction::Ingress);
        assert_eq!(
            ObservationPoint::FromNetwork.direction(),
            Direction::Ingress
        );
        assert_eq!(ObservationPoint::ToNetwork.direction(), Direction::Egress);
    }
}
