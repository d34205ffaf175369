//! The filter grammar (see `filter.rs`): tokens, then recursive descent.

use std::net::IpAddr;

use super::{Dir, Expr, FilterError, Proto};

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const ANY_PORT_PROTO: &[u8] = &[TCP, UDP, SCTP];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Open,
    Close,
    And,
    Or,
    Not,
}

fn tokens(s: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Tok>| {
        if !word.is_empty() {
            out.push(match word.as_str() {
                "and" | "&&" => Tok::And,
                "or" | "||" => Tok::Or,
                "not" => Tok::Not,
                _ => Tok::Word(word.clone()),
            });
            word.clear();
        }
    };
    for c in s.chars() {
        match c {
            '(' | ')' | '!' => {
                flush(&mut word, &mut out);
                out.push(match c {
                    '(' => Tok::Open,
                    ')' => Tok::Close,
                    _ => Tok::Not,
                });
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Parses `source`; None for an empty filter (every packet).
pub fn parse(source: &str) -> Result<Option<Expr>, FilterError> {
    let toks = tokens(source);
    if toks.is_empty() {
        return Ok(None);
    }
    let mut p = Parser { toks, at: 0 };
    let e = p.or()?;
    match p.toks.get(p.at) {
        None => Ok(Some(e)),
        Some(t) => Err(FilterError::new(format!(
            "unexpected {} at word {}",
            describe(t),
            p.at + 1
        ))),
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("{w:?}"),
        Tok::Open => "'('".into(),
        Tok::Close => "')'".into(),
        Tok::And => "'and'".into(),
        Tok::Or => "'or'".into(),
        Tok::Not => "'not'".into(),
    }
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn word(&mut self, after: &str) -> Result<String, FilterError> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            Some(t) => Err(FilterError::new(format!(
                "expected a value after {after:?}, found {}",
                describe(&t)
            ))),
            None => Err(FilterError::new(format!(
                "expected a value after {after:?}"
            ))),
        }
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut e = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.at += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut e = self.unary()?;
        while self.peek() == Some(&Tok::And) {
            self.at += 1;
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        match self.next() {
            Some(Tok::Not) => Ok(Expr::Not(Box::new(self.unary()?))),
            Some(Tok::Open) => {
                let e = self.or()?;
                match self.next() {
                    Some(Tok::Close) => Ok(e),
                    _ => Err(FilterError::new("missing ')'")),
                }
            }
            Some(Tok::Word(w)) => self.primitive(&w),
            Some(t) => Err(FilterError::new(format!(
                "expected a primitive, found {}",
                describe(&t)
            ))),
            None => Err(FilterError::new("expression ends too early")),
        }
    }

    fn primitive(&mut self, w: &str) -> Result<Expr, FilterError> {
        let proto = match w {
            "ip" => Some(Proto::Ip),
            "ip6" => Some(Proto::Ip6),
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            "sctp" => Some(Proto::Sctp),
            "icmp" => Some(Proto::Icmp),
            "icmp6" => Some(Proto::Icmp6),
            _ => None,
        };
        if let Some(p) = proto {
            let carried: Option<&'static [u8]> = match p {
                Proto::Tcp => Some(&[TCP]),
                Proto::Udp => Some(&[UDP]),
                Proto::Sctp => Some(&[SCTP]),
                _ => None,
            };
            // `tcp port 80`, `udp src port 53`: the port in that protocol only.
            if let (Some(carried), Some(Tok::Word(next))) = (carried, self.peek().cloned())
                && matches!(next.as_str(), "port" | "src" | "dst")
            {
                self.at += 1;
                let (dir, kw) = self.direction(&next)?;
                if kw != "port" {
                    return Err(FilterError::new(format!(
                        "{w} {next}: only a port may follow a protocol"
                    )));
                }
                let port = self.port()?;
                return Ok(Expr::Port(dir, port, carried));
            }
            return Ok(Expr::Proto(p));
        }
        let (dir, kw) = self.direction(w)?;
        match kw.as_str() {
            "host" => {
                let a = self.word("host")?;
                Ok(Expr::Host(dir, addr(&a)?))
            }
            "net" => {
                let a = self.word("net")?;
                let (ip, len) = net(&a)?;
                Ok(Expr::Net(dir, ip, len))
            }
            "port" => Ok(Expr::Port(dir, self.port()?, ANY_PORT_PROTO)),
            other => match other.parse::<IpAddr>() {
                Ok(ip) => Ok(Expr::Host(dir, ip)),
                Err(_) => Err(FilterError::new(format!(
                    "unknown primitive {other:?} (supported: host, net, port, src, dst, ip, ip6, tcp, udp, sctp, icmp, icmp6)"
                ))),
            },
        }
    }

    /// Reads an optional `src`/`dst` qualifier and returns it with the keyword after it.
    fn direction(&mut self, w: &str) -> Result<(Dir, String), FilterError> {
        let dir = match w {
            "src" => Dir::Src,
            "dst" => Dir::Dst,
            _ => return Ok((Dir::Either, w.to_string())),
        };
        Ok((dir, self.word(w)?))
    }

    fn port(&mut self) -> Result<u16, FilterError> {
        let p = self.word("port")?;
        p.parse::<u16>()
            .map_err(|_| FilterError::new(format!("bad port {p:?} (0-65535)")))
    }
}

fn addr(s: &str) -> Result<IpAddr, FilterError> {
    s.parse()
        .map_err(|_| FilterError::new(format!("bad address {s:?} (names are not resolved)")))
}

fn net(s: &str) -> Result<(IpAddr, u8), FilterError> {
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip = addr(a)?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => return Err(FilterError::new(format!("bad prefix length in {s:?}"))),
        },
    };
    Ok((ip, len))
}
