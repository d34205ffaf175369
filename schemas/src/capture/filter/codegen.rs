//! Lowering a filter expression to tests on packet bytes, then to classic BPF
//! with short-circuit jumps (each test jumps straight to where its answer
//! leads, as libpcap's code generator does before optimising).

use std::net::IpAddr;

use super::{Dir, Expr, FilterError, Proto};

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

pub const LD: u16 = 0x00;
pub const LDX: u16 = 0x01;
pub const ALU: u16 = 0x04;
pub const JMP: u16 = 0x05;
pub const RET: u16 = 0x06;
pub const W: u16 = 0x00;
pub const H: u16 = 0x08;
pub const B: u16 = 0x10;
pub const ABS: u16 = 0x20;
pub const IND: u16 = 0x40;
pub const MSH: u16 = 0xa0;
pub const AND: u16 = 0x50;
pub const JA: u16 = 0x00;
pub const JEQ: u16 = 0x10;
pub const JSET: u16 = 0x40;

/// The kernel's limit on a classic BPF program.
const MAX_INSNS: usize = 4096;
const ETHERTYPE: u32 = 12;
const IP4: u32 = 14;
const IP6: u32 = 14;

#[derive(Debug, Clone, Copy)]
enum Load {
    /// `size` bytes at an absolute offset.
    Abs(u16, u32),
    /// `size` bytes at an offset from the end of the IPv4 header.
    Ind(u16, u32),
}

#[derive(Debug, Clone, Copy)]
struct Test {
    load: Load,
    mask: Option<u32>,
    /// Any bit of `k` set (instead of equal to `k`).
    any_bit: bool,
    k: u32,
}

#[derive(Debug, Clone)]
enum Logic {
    All(Vec<Logic>),
    Any(Vec<Logic>),
    Not(Box<Logic>),
    Test(Test),
}

fn eq(load: Load, k: u32) -> Logic {
    Logic::Test(Test {
        load,
        mask: None,
        any_bit: false,
        k,
    })
}

fn ip4() -> Logic {
    eq(Load::Abs(H, ETHERTYPE), 0x0800)
}

fn ip6() -> Logic {
    eq(Load::Abs(H, ETHERTYPE), 0x86dd)
}

/// `f` on the source offset, the destination offset, or either.
fn side(dir: Dir, src: u32, dst: u32, f: impl Fn(u32) -> Logic) -> Logic {
    match dir {
        Dir::Src => f(src),
        Dir::Dst => f(dst),
        Dir::Either => Logic::Any(vec![f(src), f(dst)]),
    }
}

/// Equality of the first `len` bits of the address at `off` with `addr`.
fn prefix(off: u32, addr: &[u8], len: u32) -> Logic {
    let mut tests = Vec::new();
    for (i, word) in addr.chunks(4).enumerate() {
        let bits = len.saturating_sub(32 * i as u32).min(32);
        if bits == 0 {
            break;
        }
        let value = u32::from_be_bytes(word.try_into().expect("4 bytes"));
        let mask = if bits == 32 {
            None
        } else {
            Some(!(u32::MAX >> bits))
        };
        tests.push(Logic::Test(Test {
            load: Load::Abs(W, off + 4 * i as u32),
            mask,
            any_bit: false,
            k: value & mask.unwrap_or(u32::MAX),
        }));
    }
    Logic::All(tests)
}

fn address(dir: Dir, ip: IpAddr, len: u32) -> Logic {
    match ip {
        IpAddr::V4(a) => Logic::All(vec![
            ip4(),
            side(dir, IP4 + 12, IP4 + 16, |o| prefix(o, &a.octets(), len)),
        ]),
        IpAddr::V6(a) => Logic::All(vec![
            ip6(),
            side(dir, IP6 + 8, IP6 + 24, |o| prefix(o, &a.octets(), len)),
        ]),
    }
}

fn proto_in(load: Load, protos: &[u8]) -> Logic {
    Logic::Any(protos.iter().map(|p| eq(load, u32::from(*p))).collect())
}

fn lower(e: &Expr) -> Logic {
    let v4_proto = Load::Abs(B, IP4 + 9);
    let v6_next = Load::Abs(B, IP6 + 6);
    match e {
        Expr::And(a, b) => Logic::All(vec![lower(a), lower(b)]),
        Expr::Or(a, b) => Logic::Any(vec![lower(a), lower(b)]),
        Expr::Not(a) => Logic::Not(Box::new(lower(a))),
        Expr::Host(dir, ip) => address(*dir, *ip, if ip.is_ipv4() { 32 } else { 128 }),
        Expr::Net(dir, ip, len) => address(*dir, *ip, u32::from(*len)),
        Expr::Proto(p) => {
            let both = |n: u32| {
                Logic::Any(vec![
                    Logic::All(vec![ip4(), eq(v4_proto, n)]),
                    Logic::All(vec![ip6(), eq(v6_next, n)]),
                ])
            };
            match p {
                Proto::Ip => ip4(),
                Proto::Ip6 => ip6(),
                Proto::Tcp => both(6),
                Proto::Udp => both(17),
                Proto::Sctp => both(132),
                Proto::Icmp => Logic::All(vec![ip4(), eq(v4_proto, 1)]),
                Proto::Icmp6 => Logic::All(vec![ip6(), eq(v6_next, 58)]),
            }
        }
        Expr::Port(dir, port, protos) => {
            let port = u32::from(*port);
            let not_later_fragment = Logic::Not(Box::new(Logic::Test(Test {
                load: Load::Abs(H, IP4 + 6),
                mask: None,
                any_bit: true,
                k: 0x1fff,
            })));
            Logic::Any(vec![
                Logic::All(vec![
                    ip4(),
                    proto_in(v4_proto, protos),
                    not_later_fragment,
                    side(*dir, 0, 2, |o| eq(Load::Ind(H, IP4 + o), port)),
                ]),
                Logic::All(vec![
                    ip6(),
                    proto_in(v6_next, protos),
                    side(*dir, IP6 + 40, IP6 + 42, |o| eq(Load::Abs(H, o), port)),
                ]),
            ])
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Label(usize),
    Accept,
    Reject,
}

enum Op {
    Plain(Insn),
    Jump {
        code: u16,
        k: u32,
        t: Target,
        f: Target,
    },
    Label(usize),
}

#[derive(Default)]
struct Gen {
    ops: Vec<Op>,
    labels: usize,
}

impl Gen {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }

    fn plain(&mut self, code: u16, k: u32) {
        self.ops.push(Op::Plain(Insn {
            code,
            jt: 0,
            jf: 0,
            k,
        }));
    }

    fn emit(&mut self, l: &Logic, t: Target, f: Target) {
        match l {
            Logic::Test(test) => {
                match test.load {
                    Load::Abs(size, off) => self.plain(LD | size | ABS, off),
                    Load::Ind(size, off) => {
                        self.plain(LDX | B | MSH, IP4);
                        self.plain(LD | size | IND, off);
                    }
                }
                if let Some(mask) = test.mask {
                    self.plain(ALU | AND, mask);
                }
                let op = if test.any_bit { JSET } else { JEQ };
                self.ops.push(Op::Jump {
                    code: JMP | op,
                    k: test.k,
                    t,
                    f,
                });
            }
            Logic::Not(inner) => self.emit(inner, f, t),
            Logic::All(items) | Logic::Any(items) if items.is_empty() => {
                // All of nothing is true; any of nothing is false.
                let to = if matches!(l, Logic::All(_)) { t } else { f };
                self.ops.push(Op::Jump {
                    code: JMP | JA,
                    k: 0,
                    t: to,
                    f: to,
                });
            }
            Logic::All(items) | Logic::Any(items) => {
                // Every item but the last goes on to the next one when it
                // does not decide: when true for All, when false for Any.
                let all = matches!(l, Logic::All(_));
                for (i, item) in items.iter().enumerate() {
                    if i + 1 == items.len() {
                        self.emit(item, t, f);
                    } else {
                        let n = self.label();
                        let next = Target::Label(n);
                        if all {
                            self.emit(item, next, f);
                        } else {
                            self.emit(item, t, next);
                        }
                        self.ops.push(Op::Label(n));
                    }
                }
            }
        }
    }

    /// Resolves labels to relative jumps and appends the two returns.
    fn finish(self, snaplen: u32) -> Result<Vec<Insn>, FilterError> {
        let mut at = vec![0usize; self.labels];
        let mut n = 0;
        for op in &self.ops {
            match op {
                Op::Label(l) => at[*l] = n,
                _ => n += 1,
            }
        }
        if n + 2 > MAX_INSNS {
            return Err(FilterError::new(format!(
                "filter too long ({} instructions, the kernel takes {MAX_INSNS})",
                n + 2
            )));
        }
        let index = |t: Target| match t {
            Target::Label(l) => at[l],
            Target::Accept => n,
            Target::Reject => n + 1,
        };
        let mut out = Vec::with_capacity(n + 2);
        for op in self.ops {
            match op {
                Op::Label(_) => {}
                Op::Plain(i) => out.push(i),
                Op::Jump { code, k, t, f } => {
                    let here = out.len() + 1;
                    let (t, f) = (index(t) - here, index(f) - here);
                    let insn = if code == JMP | JA {
                        Insn {
                            code,
                            jt: 0,
                            jf: 0,
                            k: t as u32,
                        }
                    } else {
                        let short = |d: usize| {
                            u8::try_from(d).map_err(|_| {
                                FilterError::new(
                                    "filter too complex (a jump spans over 255 instructions)",
                                )
                            })
                        };
                        Insn {
                            code,
                            jt: short(t)?,
                            jf: short(f)?,
                            k,
                        }
                    };
                    out.push(insn);
                }
            }
        }
        out.push(Insn {
            code: RET,
            jt: 0,
            jf: 0,
            k: snaplen,
        });
        out.push(Insn {
            code: RET,
            jt: 0,
            jf: 0,
            k: 0,
        });
        Ok(out)
    }
}

/// Compiles `expr` (None: accept everything), accepting `snaplen` bytes.
pub fn compile(expr: Option<&Expr>, snaplen: u32) -> Result<Vec<Insn>, FilterError> {
    let mut g = Gen::default();
    match expr {
        None => {
            return Ok(vec![Insn {
                code: RET,
                jt: 0,
                jf: 0,
                k: snaplen,
            }]);
        }
        Some(e) => g.emit(&lower(e), Target::Accept, Target::Reject),
    }
    g.finish(snaplen)
}
