//! The IPFIX information elements Flowlake exports and its two templates (IPv4,
//! IPv6). IANA numbers from the IPFIX Information Elements registry; the Kubernetes
//! names, TCP health and DNS go in enterprise-specific elements under a Private Enterprise Number
//! (`--ipfix-enterprise-number`, default 32473, the PEN that RFC 5612 reserves for
//! documentation, until Flowlake has its own). docs/exporters.md lists them all.

/// Template id of records with IPv4 addresses.
pub const TEMPLATE_V4: u16 = 256;
/// Template id of records with IPv6 addresses.
pub const TEMPLATE_V6: u16 = 257;
/// Field length that marks a variable-length element (RFC 7011 §7).
pub const VARIABLE: u16 = 0xFFFF;

/// One field of a template: an element number, its length, its enterprise (if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub id: u16,
    pub len: u16,
    pub enterprise: bool,
}

const fn iana(id: u16, len: u16) -> Field {
    Field {
        id,
        len,
        enterprise: false,
    }
}

/// An enterprise element: a string ([`VARIABLE`]) or a number of `len` octets.
const fn flowlake(id: u16, len: u16) -> Field {
    Field {
        id,
        len,
        enterprise: true,
    }
}

/// IANA element numbers used.
pub mod iana_id {
    pub const OCTET_DELTA_COUNT: u16 = 1;
    pub const PACKET_DELTA_COUNT: u16 = 2;
    pub const PROTOCOL_IDENTIFIER: u16 = 4;
    pub const TCP_CONTROL_BITS: u16 = 6;
    pub const SOURCE_TRANSPORT_PORT: u16 = 7;
    pub const SOURCE_IPV4_ADDRESS: u16 = 8;
    pub const DESTINATION_TRANSPORT_PORT: u16 = 11;
    pub const DESTINATION_IPV4_ADDRESS: u16 = 12;
    pub const SOURCE_IPV6_ADDRESS: u16 = 27;
    pub const DESTINATION_IPV6_ADDRESS: u16 = 28;
    pub const ICMP_TYPE_CODE_IPV4: u16 = 32;
    pub const FLOW_DIRECTION: u16 = 61;
    pub const INTERFACE_NAME: u16 = 82;
    pub const FORWARDING_STATUS: u16 = 89;
    pub const ICMP_TYPE_CODE_IPV6: u16 = 139;
    pub const FLOW_START_MILLISECONDS: u16 = 152;
    pub const FLOW_END_MILLISECONDS: u16 = 153;
}

/// Flowlake's enterprise-specific elements: strings (variable length) but for the
/// TCP and DNS numbers (unsigned, fixed length, 0 when the flow has none).
pub mod flowlake_id {
    pub const CLUSTER: u16 = 1;
    pub const OBSERVER_NODE: u16 = 2;
    pub const OBSERVATION_POINT: u16 = 3;
    pub const DROP_REASON: u16 = 4;
    pub const SRC_NAMESPACE: u16 = 5;
    pub const SRC_POD: u16 = 6;
    pub const SRC_WORKLOAD: u16 = 7;
    pub const SRC_WORKLOAD_KIND: u16 = 8;
    pub const SRC_NODE: u16 = 9;
    pub const SRC_SERVICE: u16 = 10;
    pub const DST_NAMESPACE: u16 = 11;
    pub const DST_POD: u16 = 12;
    pub const DST_WORKLOAD: u16 = 13;
    pub const DST_WORKLOAD_KIND: u16 = 14;
    pub const DST_NODE: u16 = 15;
    pub const DST_SERVICE: u16 = 16;
    pub const TCP_RETRANSMITS: u16 = 17;
    pub const TCP_RESETS: u16 = 18;
    pub const TCP_SRTT_MICROSECONDS: u16 = 19;
    pub const TCP_HANDSHAKE_MICROSECONDS: u16 = 20;
    pub const DNS_ID: u16 = 21;
    pub const DNS_QUERY: u16 = 22;
    pub const DNS_QTYPE: u16 = 23;
    pub const DNS_RCODE: u16 = 24;
    pub const DNS_ANSWERS: u16 = 25;
    pub const DNS_LATENCY_MICROSECONDS: u16 = 26;
}

/// The fields of a template, in record order. Both templates differ only in the
/// address and ICMP elements.
pub fn template(v6: bool) -> [Field; 40] {
    use flowlake_id as f;
    use iana_id as i;
    let (src, dst, addr_len, icmp) = if v6 {
        (
            i::SOURCE_IPV6_ADDRESS,
            i::DESTINATION_IPV6_ADDRESS,
            16,
            i::ICMP_TYPE_CODE_IPV6,
        )
    } else {
        (
            i::SOURCE_IPV4_ADDRESS,
            i::DESTINATION_IPV4_ADDRESS,
            4,
            i::ICMP_TYPE_CODE_IPV4,
        )
    };
    [
        iana(i::FLOW_START_MILLISECONDS, 8),
        iana(i::FLOW_END_MILLISECONDS, 8),
        iana(src, addr_len),
        iana(dst, addr_len),
        iana(i::SOURCE_TRANSPORT_PORT, 2),
        iana(i::DESTINATION_TRANSPORT_PORT, 2),
        iana(i::PROTOCOL_IDENTIFIER, 1),
        iana(i::TCP_CONTROL_BITS, 2),
        iana(icmp, 2),
        iana(i::OCTET_DELTA_COUNT, 8),
        iana(i::PACKET_DELTA_COUNT, 8),
        iana(i::FORWARDING_STATUS, 1),
        iana(i::FLOW_DIRECTION, 1),
        iana(i::INTERFACE_NAME, VARIABLE),
        flowlake(f::CLUSTER, VARIABLE),
        flowlake(f::OBSERVER_NODE, VARIABLE),
        flowlake(f::OBSERVATION_POINT, VARIABLE),
        flowlake(f::DROP_REASON, VARIABLE),
        flowlake(f::SRC_NAMESPACE, VARIABLE),
        flowlake(f::SRC_POD, VARIABLE),
        flowlake(f::SRC_WORKLOAD, VARIABLE),
        flowlake(f::SRC_WORKLOAD_KIND, VARIABLE),
        flowlake(f::SRC_NODE, VARIABLE),
        flowlake(f::SRC_SERVICE, VARIABLE),
        flowlake(f::DST_NAMESPACE, VARIABLE),
        flowlake(f::DST_POD, VARIABLE),
        flowlake(f::DST_WORKLOAD, VARIABLE),
        flowlake(f::DST_WORKLOAD_KIND, VARIABLE),
        flowlake(f::DST_NODE, VARIABLE),
        flowlake(f::DST_SERVICE, VARIABLE),
        flowlake(f::TCP_RETRANSMITS, 4),
        flowlake(f::TCP_RESETS, 4),
        flowlake(f::TCP_SRTT_MICROSECONDS, 8),
        flowlake(f::TCP_HANDSHAKE_MICROSECONDS, 8),
        flowlake(f::DNS_ID, 2),
        flowlake(f::DNS_QUERY, VARIABLE),
        flowlake(f::DNS_QTYPE, VARIABLE),
        flowlake(f::DNS_RCODE, VARIABLE),
        flowlake(f::DNS_ANSWERS, VARIABLE),
        flowlake(f::DNS_LATENCY_MICROSECONDS, 8),
    ]
}

/// `forwardingStatus` (RFC 7270 §4.12, one octet: status in the top two bits,
/// reason code below): 64 forwarded; for drops the closest reason code to the
/// kernel's drop reason, 128 ("dropped, unknown") when none fits. The kernel's own
/// name travels in the enterprise element `dropReason`.
pub fn forwarding_status(dropped: bool, reason: Option<&str>) -> u8 {
    if !dropped {
        return 64;
    }
    let Some(r) = reason else { return 128 };
    match r {
        "NETFILTER_DROP" => 129,
        "TC_INGRESS" | "TC_EGRESS" | "BPF_CGROUP_EGRESS" | "XDP" => 130,
        r if r.contains("NOROUTE") => 131,
        r if r.starts_with("NEIGH_") => 132,
        "PKT_TOO_BIG" => 133,
        r if r.ends_with("_CSUM") => 134,
        "PKT_TOO_SMALL" => 135,
        "IP_INHDR" => 136,
        "IP_RPFILTER" => 140,
        "NO_SOCKET" | "OTHERHOST" => 141,
        _ => 128,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_differ_only_in_addresses_and_icmp() {
        let (v4, v6) = (template(false), template(true));
        let differ: Vec<usize> = (0..v4.len()).filter(|&i| v4[i] != v6[i]).collect();
        assert_eq!(differ, vec![2, 3, 8]);
        assert_eq!(v6[2].len, 16);
    }

    #[test]
    fn drop_reasons_map_to_rfc7270_codes() {
        assert_eq!(forwarding_status(false, None), 64);
        assert_eq!(forwarding_status(true, Some("NETFILTER_DROP")), 129);
        assert_eq!(forwarding_status(true, Some("IP_OUTNOROUTES")), 131);
        assert_eq!(forwarding_status(true, Some("TCP_CSUM")), 134);
        assert_eq!(forwarding_status(true, Some("NO_SOCKET")), 141);
        assert_eq!(forwarding_status(true, Some("TCP_INVALID_SEQUENCE")), 128);
        assert_eq!(forwarding_status(true, None), 128);
    }
}
