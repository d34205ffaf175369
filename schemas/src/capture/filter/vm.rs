//! A classic BPF interpreter: runs a compiled filter on a packet as the
//! kernel would (a load beyond the packet rejects it). The unit tests check
//! the compiler with it, and a stored capture can be filtered with it. It
//! knows the instructions `Filter::compile` emits; anything else (and a jump
//! out of the program) rejects the packet.

use super::codegen::*;

/// The filter's return value for `pkt` (0 = rejected).
pub fn run(prog: &[Insn], pkt: &[u8]) -> u32 {
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    let load = |off: usize, size: u16| -> Option<u32> {
        let n = match size {
            W => 4,
            H => 2,
            _ => 1,
        };
        let b = pkt.get(off..off + n)?;
        Some(b.iter().fold(0u32, |acc, v| (acc << 8) | u32::from(*v)))
    };
    loop {
        let Some(&i) = prog.get(pc) else { return 0 };
        pc += 1;
        let class = i.code & 0x07;
        match class {
            LD => {
                let off = match i.code & 0xe0 {
                    ABS => i.k as usize,
                    IND => x as usize + i.k as usize,
                    _ => return 0,
                };
                match load(off, i.code & 0x18) {
                    Some(v) => a = v,
                    None => return 0,
                }
            }
            LDX if i.code == LDX | B | MSH => match pkt.get(i.k as usize) {
                Some(b) => x = 4 * u32::from(b & 0xf),
                None => return 0,
            },
            ALU if i.code & 0xf0 == AND => a &= i.k,
            JMP => {
                let taken = match i.code & 0xf0 {
                    JA => {
                        pc += i.k as usize;
                        continue;
                    }
                    JEQ => a == i.k,
                    JSET => a & i.k != 0,
                    _ => return 0,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            RET => return i.k,
            _ => return 0,
        }
    }
}
