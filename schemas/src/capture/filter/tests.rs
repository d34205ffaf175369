//! Filters compiled and run on crafted packets (interpreter in vm.rs); the lab
//! test (collector/tests/capture) checks the kernel runs them the same way.

use std::net::IpAddr;

use super::vm::run;
use super::*;

/// An Ethernet frame carrying IPv4 or IPv6 with `proto` and ports.
fn frame(src: &str, dst: &str, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    let mut f = vec![0u8; 12];
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&[0; 16]);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            // An IPv4 header with options (IHL 6) so ports sit behind 24 bytes.
            let mut ip = vec![0x46, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            ip.extend_from_slice(&[1, 1, 1, 1]);
            f.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd]);
            f.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, proto, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed families"),
    }
    f.extend_from_slice(&l4);
    f
}

fn matches(filter: &str, pkt: &[u8]) -> bool {
    let f = Filter::compile(filter, 1500).unwrap();
    run(&f.program, pkt) != 0
}

#[test]
fn empty_filter_takes_everything_cut_to_snaplen() {
    let f = Filter::compile("  ", 96).unwrap();
    assert_eq!(run(&f.program, &[0u8; 3]), 96);
}

#[test]
fn hosts_nets_and_directions() {
    let p = frame("10.1.2.3", "10.9.9.9", 6, 40000, 5432);
    assert!(matches("host 10.1.2.3", &p));
    assert!(matches("host 10.9.9.9", &p));
    assert!(matches("10.9.9.9", &p));
    assert!(!matches("host 10.1.2.4", &p));
    assert!(matches("src host 10.1.2.3", &p));
    assert!(!matches("dst host 10.1.2.3", &p));
    assert!(matches("net 10.1.0.0/16", &p));
    assert!(matches("src net 10.0.0.0/8 and dst net 10.9.9.0/24", &p));
    assert!(!matches("dst net 10.1.0.0/16", &p));
    assert!(matches("net 0.0.0.0/0", &p));
    let q = frame("fd00::1", "fd00:1::2", 17, 53, 3333);
    assert!(matches("host fd00::1", &q));
    assert!(!matches("host 10.1.2.3", &q));
    assert!(matches("dst net fd00:1::/32", &q));
    assert!(!matches("dst net fd00:2::/31", &q));
    assert!(matches("net fd00::/17 and ip6", &q));
    assert!(!matches("ip", &q));
}

#[test]
fn ports_protocols_and_fragments() {
    let tcp = frame("10.1.2.3", "10.9.9.9", 6, 40000, 5432);
    let udp6 = frame("fd00::1", "fd00::2", 17, 53, 3333);
    assert!(matches("tcp port 5432", &tcp));
    assert!(matches("port 40000", &tcp));
    assert!(matches("dst port 5432", &tcp));
    assert!(!matches("src port 5432", &tcp));
    assert!(!matches("udp port 5432", &tcp));
    assert!(matches("udp src port 53", &udp6));
    assert!(matches("port 3333 and ip6", &udp6));
    assert!(!matches("tcp", &udp6));
    assert!(matches("udp", &udp6));
    // A later IPv4 fragment carries no ports.
    let mut frag = tcp.clone();
    frag[14 + 7] = 0x10;
    assert!(!matches("port 5432", &frag));
    assert!(matches("tcp", &frag));
    let icmp = frame("10.0.0.1", "10.0.0.2", 1, 0, 0);
    assert!(matches("icmp", &icmp));
    assert!(!matches("icmp6", &icmp));
    assert!(matches("icmp6", &frame("fd00::1", "fd00::2", 58, 0, 0)));
}

#[test]
fn boolean_operators_and_precedence() {
    let p = frame("10.1.2.3", "10.9.9.9", 6, 40000, 5432);
    assert!(matches("not udp", &p));
    assert!(matches("! udp", &p));
    assert!(!matches("not tcp", &p));
    assert!(matches("udp or tcp and port 5432", &p));
    assert!(!matches("(udp or tcp) and port 80", &p));
    assert!(matches("tcp && (port 80 || port 5432)", &p));
    assert!(matches("not (host 10.0.0.1 or host 10.0.0.2) and tcp", &p));
    assert!(!matches("not not udp", &p));
    // A truncated frame rejects rather than reads garbage.
    assert!(!matches("port 5432", &p[..30]));
}

#[test]
fn invalid_filters_say_what_is_wrong() {
    for (f, says) in [
        ("host", "expected a value after \"host\""),
        ("host example.com", "bad address"),
        ("port 70000", "bad port"),
        ("net 10.0.0.0/33", "bad prefix length"),
        ("tcp and", "ends too early"),
        ("(tcp", "missing ')'"),
        ("tcp)", "unexpected ')'"),
        ("vlan 5", "unknown primitive \"vlan\""),
        ("tcp src host 10.0.0.1", "only a port may follow"),
        ("and tcp", "expected a primitive"),
    ] {
        let e = Filter::compile(f, 100).unwrap_err();
        assert!(e.to_string().contains(says), "{f:?}: {e}");
    }
}

#[test]
fn a_long_filter_is_refused_not_truncated() {
    let long = (0..400)
        .map(|i| format!("host 10.0.{}.{}", i / 250, i % 250))
        .collect::<Vec<_>>()
        .join(" or ");
    let e = Filter::compile(&long, 100).unwrap_err();
    assert!(e.to_string().contains("too"), "{e}");
}
