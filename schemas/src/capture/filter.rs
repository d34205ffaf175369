//! Capture filters: a documented subset of tcpdump's expression language,
//! parsed here and compiled to classic BPF for an AF_PACKET socket, so nodes
//! need neither tcpdump nor libpcap.
//!
//! The subset (Ethernet link type, as on pod veths):
//! - `host A`, `net A/LEN` (IPv4 or IPv6), `port N`, each optionally after
//!   `src` or `dst`; a bare address is `host A`;
//! - `ip`, `ip6`, `tcp`, `udp`, `sctp`, `icmp` (IPv4), `icmp6`; a protocol
//!   before a port (`tcp port 80`) restricts the port to that protocol;
//! - `and`/`&&`, `or`/`||`, `not`/`!`, parentheses; `not` binds tightest, then
//!   `and`, then `or`.
//!
//! Ports match TCP, UDP and SCTP; an IPv4 fragment other than the first has
//! no ports; IPv6 ports are read right after the fixed header (as tcpdump's
//! own `port` does).

mod codegen;
mod parse;
#[cfg(test)]
mod tests;
pub mod vm;

use std::fmt;

pub use codegen::Insn;

/// Which address or port of a packet a primitive looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Src,
    Dst,
    Either,
}

/// Protocols a filter can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Ip,
    Ip6,
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmp6,
}

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Host(Dir, std::net::IpAddr),
    Net(Dir, std::net::IpAddr, u8),
    /// A port, with the transport protocols it may be carried in.
    Port(Dir, u16, &'static [u8]),
    Proto(Proto),
}

/// An invalid filter: what is wrong and where (a word index, 1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid capture filter: {message}")]
pub struct FilterError {
    pub message: String,
}

impl FilterError {
    fn new(message: impl Into<String>) -> Self {
        FilterError {
            message: message.into(),
        }
    }
}

/// A filter compiled to classic BPF, with the expression it came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Filter {
    pub source: String,
    pub program: Vec<Insn>,
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Filter({:?}, {} insns)", self.source, self.program.len())
    }
}

impl Filter {
    /// Parses and compiles `source` (empty: every packet); accepted packets
    /// are cut to `snaplen` bytes in the kernel.
    pub fn compile(source: &str, snaplen: u32) -> Result<Filter, FilterError> {
        let expr = parse::parse(source)?;
        let program = codegen::compile(expr.as_ref(), snaplen)?;
        Ok(Filter {
            source: source.trim().to_string(),
            program,
        })
    }
}
