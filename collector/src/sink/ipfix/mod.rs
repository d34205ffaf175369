//! IPFIX export (RFC 7011) over UDP or TCP to any IPFIX collector (nfcapd,
//! pmacct, ipfixcol2, a SIEM). Over UDP the templates go first and again every
//! `template_refresh` (RFC 7011 §8.4), so a collector that starts late learns them;
//! over TCP once per connection. Records that cannot be sent (collector
//! unreachable, connection lost) are counted as `send_error`; a lost TCP connection
//! is reopened at most once per second.

pub mod elements;
pub mod encode;

use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use flowlake_schemas::FlowRecord;

use super::{Sink, SinkLoss};
use encode::{Encoder, Message};

/// IPFIX transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Settings of the IPFIX sink.
#[derive(Debug, Clone, PartialEq)]
pub struct IpfixConfig {
    /// The collector, `host:port`.
    pub target: String,
    pub transport: Transport,
    /// UDP: templates are sent again this often.
    pub template_refresh: Duration,
    /// Observation domain id in every message header.
    pub observation_domain: u32,
    /// Private Enterprise Number of the Kubernetes-name elements.
    pub enterprise_number: u32,
    /// Largest message; over UDP keep it under the path MTU (1400 leaves room for headers).
    pub max_message_bytes: usize,
}

impl IpfixConfig {
    /// Defaults for `target`.
    pub fn new(target: String, transport: Transport) -> Self {
        IpfixConfig {
            target,
            transport,
            template_refresh: Duration::from_secs(60),
            observation_domain: 1,
            enterprise_number: 32473,
            max_message_bytes: match transport {
                Transport::Udp => 1400,
                Transport::Tcp => 65_535,
            },
        }
    }
}

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

/// The running exporter.
pub struct IpfixSink {
    cfg: IpfixConfig,
    addr: SocketAddr,
    enc: Encoder,
    conn: Option<Conn>,
    templates_sent: Option<DateTime<Utc>>,
    last_connect: Option<Instant>,
}

impl IpfixSink {
    /// Resolves the target (and, over UDP, opens the socket).
    pub fn open(cfg: IpfixConfig) -> std::io::Result<Self> {
        let addr = cfg.target.to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address for the target")
        })?;
        let mut s = IpfixSink {
            enc: Encoder::new(
                cfg.observation_domain,
                cfg.enterprise_number,
                cfg.max_message_bytes,
            ),
            cfg,
            addr,
            conn: None,
            templates_sent: None,
            last_connect: None,
        };
        if let Err(e) = s.connect(Utc::now()) {
            tracing::warn!(error = %e, target = %s.addr, "IPFIX collector not reachable yet");
        }
        Ok(s)
    }

    /// Opens the socket or connection and sends the templates on it.
    fn connect(&mut self, now: DateTime<Utc>) -> std::io::Result<()> {
        self.last_connect = Some(Instant::now());
        let conn = match self.cfg.transport {
            Transport::Udp => {
                let any: SocketAddr = if self.addr.is_ipv6() {
                    "[::]:0".parse().expect("literal")
                } else {
                    "0.0.0.0:0".parse().expect("literal")
                };
                let s = UdpSocket::bind(any)?;
                s.connect(self.addr)?;
                Conn::Udp(s)
            }
            Transport::Tcp => {
                let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
                s.set_write_timeout(Some(Duration::from_secs(5)))?;
                s.set_nodelay(true)?;
                Conn::Tcp(s)
            }
        };
        self.conn = Some(conn);
        self.send_templates(now)
    }

    fn send_templates(&mut self, now: DateTime<Utc>) -> std::io::Result<()> {
        let t = self.enc.templates(now);
        self.send_bytes(&t)?;
        self.templates_sent = Some(now);
        Ok(())
    }

    fn send_bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        let r = match &mut self.conn {
            Some(Conn::Udp(s)) => s.send(b).map(|_| ()),
            Some(Conn::Tcp(s)) => s.write_all(b),
            None => Err(std::io::ErrorKind::NotConnected.into()),
        };
        if r.is_err() && self.cfg.transport == Transport::Tcp {
            self.conn = None;
        }
        r
    }

    /// Sends one message; its records are lost when that fails.
    fn send(&mut self, m: Message, now: DateTime<Utc>, lost: &mut u64) {
        if self.conn.is_none() {
            let recent = self
                .last_connect
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1));
            if recent || self.connect(now).is_err() {
                *lost += m.records;
                return;
            }
        }
        if let Err(e) = self.send_bytes(&m.bytes) {
            tracing::debug!(error = %e, target = %self.addr, records = m.records, "IPFIX message not sent");
            *lost += m.records;
        }
    }

    fn refresh_due(&self, now: DateTime<Utc>) -> bool {
        self.cfg.transport == Transport::Udp
            && self
                .templates_sent
                .is_none_or(|t| (now - t).to_std().unwrap_or_default() >= self.cfg.template_refresh)
    }
}

impl Sink for IpfixSink {
    fn name(&self) -> &'static str {
        "ipfix"
    }

    fn write(&mut self, records: &[FlowRecord], now: DateTime<Utc>) -> Vec<(SinkLoss, u64)> {
        if self.refresh_due(now) && self.conn.is_some() {
            // A failed refresh shows in the data sends that follow.
            let _ = self.send_templates(now);
        }
        let (mut lost, mut too_large) = (0, 0);
        for r in records {
            match self.enc.push(r, now) {
                Ok(Some(m)) => self.send(m, now, &mut lost),
                Ok(None) => {}
                Err(encode::TooLarge) => too_large += 1,
            }
        }
        if let Some(m) = self.enc.finish() {
            self.send(m, now, &mut lost);
        }
        [(SinkLoss::SendError, lost), (SinkLoss::Encode, too_large)]
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    fn tick(&mut self, now: DateTime<Utc>) {
        if self.refresh_due(now) {
            if self.conn.is_none() {
                let _ = self.connect(now);
            } else if let Err(e) = self.send_templates(now) {
                tracing::debug!(error = %e, "IPFIX template refresh not sent");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set ids of the next datagram's sets (2 = template set).
    fn set_ids(sock: &UdpSocket) -> Vec<u16> {
        let mut buf = [0u8; 65_536];
        let n = sock.recv(&mut buf).unwrap();
        let mut at = 16;
        let mut ids = Vec::new();
        while at < n {
            ids.push(u16::from_be_bytes([buf[at], buf[at + 1]]));
            at += u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize;
        }
        ids
    }

    #[test]
    fn udp_templates_first_and_again_after_the_refresh_interval() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let cfg = IpfixConfig::new(rx.local_addr().unwrap().to_string(), Transport::Udp);
        let mut sink = IpfixSink::open(cfg).unwrap();
        assert_eq!(set_ids(&rx), vec![2], "templates on open");
        let mut cfg = flowlake_gen::GenConfig::for_tests(std::env::temp_dir());
        cfg.rate = 50.0;
        let recs: Vec<FlowRecord> = flowlake_gen::records(&cfg).into_iter().take(3).collect();
        let t0 = Utc::now();
        assert!(sink.write(&recs, t0).is_empty());
        assert!(set_ids(&rx).iter().all(|&id| id >= 256), "data only");
        sink.tick(t0 + chrono::Duration::seconds(30));
        assert!(
            sink.write(&recs, t0 + chrono::Duration::seconds(30))
                .is_empty()
        );
        assert!(
            set_ids(&rx).iter().all(|&id| id >= 256),
            "no refresh before 60 s"
        );
        sink.tick(t0 + chrono::Duration::seconds(61));
        assert_eq!(set_ids(&rx), vec![2], "refreshed after 60 s");
    }
}
