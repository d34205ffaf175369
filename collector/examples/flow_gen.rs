//! Benchmark traffic (collector/bench/userspace.sh): many distinct UDP flows at
//! a fixed packet rate, and a sink that reads them.
//!
//! `flow_gen send --src 10.78.0.2 --dst 10.78.0.1 --flows 100000 --rate 40000 --secs 40`
//! cycles through `flows` 5-tuples (source ports 1024.., destination ports
//! 9000..9000+ceil(flows/60000)) with raw IPv4/UDP packets, one per flow per round.
//! `flow_gen sink --addr 10.78.0.1 --ports 2` binds 9000.. and discards.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    Send {
        #[arg(long)]
        src: Ipv4Addr,
        #[arg(long)]
        dst: Ipv4Addr,
        #[arg(long, default_value_t = 100_000)]
        flows: u32,
        /// Packets per second.
        #[arg(long, default_value_t = 40_000)]
        rate: u32,
        #[arg(long, default_value_t = 30)]
        secs: u64,
    },
    Sink {
        #[arg(long)]
        addr: Ipv4Addr,
        #[arg(long, default_value_t = 2)]
        ports: u16,
    },
}

const PORTS_PER_DST: u32 = 60_000;

type BoxError = Box<dyn std::error::Error>;

fn main() -> Result<(), BoxError> {
    match Args::parse().cmd {
        Cmd::Send {
            src,
            dst,
            flows,
            rate,
            secs,
        } => send(src, dst, flows, rate, Duration::from_secs(secs)),
        Cmd::Sink { addr, ports } => sink(addr, ports),
    }
}

fn sink(addr: Ipv4Addr, ports: u16) -> Result<(), BoxError> {
    let mut threads = Vec::new();
    for i in 0..ports {
        let s = UdpSocket::bind(SocketAddr::from((addr, 9000 + i)))?;
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while s.recv(&mut buf).is_ok() {}
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn send(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    flows: u32,
    rate: u32,
    secs: Duration,
) -> Result<(), BoxError> {
    // SAFETY: plain socket(2); IP_HDRINCL is implied by IPPROTO_RAW.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: zeroed sockaddr_in, then filled.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as u16;
    sa.sin_addr.s_addr = u32::from_ne_bytes(dst.octets());
    let mut pkt = [0u8; 20 + 8 + 18];
    let len = pkt.len() as u16;
    pkt[0] = 0x45;
    pkt[2..4].copy_from_slice(&len.to_be_bytes());
    pkt[8] = 64;
    pkt[9] = 17;
    pkt[12..16].copy_from_slice(&src.octets());
    pkt[16..20].copy_from_slice(&dst.octets());
    pkt[24..26].copy_from_slice(&(len - 20).to_be_bytes());
    let start = Instant::now();
    let (mut sent, mut i) = (0u64, 0u32);
    while start.elapsed() < secs {
        // Send what the rate allows so far, then sleep a little.
        let due = (start.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        while sent < due {
            let sport = 1024 + (i % PORTS_PER_DST) as u16;
            let dport = 9000 + (i / PORTS_PER_DST) as u16;
            pkt[20..22].copy_from_slice(&sport.to_be_bytes());
            pkt[22..24].copy_from_slice(&dport.to_be_bytes());
            // SAFETY: valid buffer and address.
            let rc = unsafe {
                libc::sendto(
                    fd,
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    0,
                    (&sa as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as u32,
                )
            };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ENOBUFS) {
                    return Err(e.into());
                }
            }
            sent += 1;
            i = (i + 1) % flows;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("sent={sent}");
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
    Ok(())
}
