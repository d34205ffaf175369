//! A capture's limits: every capture stops by duration, size and packet
//! count, whichever comes first. Each has a default when not asked for and a
//! hard maximum; zero is never valid.

use std::time::Duration;

use super::RequestError;

/// The limits a capture runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    #[serde(with = "serde_secs")]
    pub duration: Duration,
    /// Bytes of packet blocks written to a node's file.
    pub max_bytes: u64,
    pub max_packets: u64,
    /// Bytes kept of each packet.
    pub snaplen: u32,
}

/// What a caller asks for; None takes the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requested {
    pub duration: Option<Duration>,
    pub max_bytes: Option<u64>,
    pub max_packets: Option<u64>,
    pub snaplen: Option<u32>,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        duration: Duration::from_secs(60),
        max_bytes: 100 * 1000 * 1000,
        max_packets: 1_000_000,
        snaplen: 262_144,
    };
    pub const MAX: Limits = Limits {
        duration: Duration::from_secs(3600),
        max_bytes: 4 * 1000 * 1000 * 1000,
        max_packets: 50_000_000,
        snaplen: 262_144,
    };
    /// The smallest snaplen that still holds Ethernet, IPv6 and TCP headers.
    pub const MIN_SNAPLEN: u32 = 96;

    /// Limits from a request: defaults filled in, each checked against its maximum.
    pub fn from_request(r: Requested) -> Result<Limits, RequestError> {
        let d = Limits::DEFAULT;
        let m = Limits::MAX;
        let limits = Limits {
            duration: r.duration.unwrap_or(d.duration),
            max_bytes: r.max_bytes.unwrap_or(d.max_bytes),
            max_packets: r.max_packets.unwrap_or(d.max_packets),
            snaplen: r.snaplen.unwrap_or(d.snaplen),
        };
        let bad = |what: &str, why: String| Err(RequestError::Limit(format!("{what} {why}")));
        if limits.duration.is_zero() || limits.duration > m.duration {
            return bad(
                "duration",
                format!("must be more than 0 and at most {} s", m.duration.as_secs()),
            );
        }
        if limits.max_bytes == 0 || limits.max_bytes > m.max_bytes {
            return bad("max_bytes", format!("must be 1 to {}", m.max_bytes));
        }
        if limits.max_packets == 0 || limits.max_packets > m.max_packets {
            return bad("max_packets", format!("must be 1 to {}", m.max_packets));
        }
        if limits.snaplen < Limits::MIN_SNAPLEN || limits.snaplen > m.snaplen {
            return bad(
                "snaplen",
                format!("must be {} to {}", Limits::MIN_SNAPLEN, m.snaplen),
            );
        }
        Ok(limits)
    }
}

/// Durations as whole seconds in JSON.
mod serde_secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs: u64 = serde::Deserialize::deserialize(d)?;
        Ok(Duration::from_secs(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_is_not_asked() {
        let l = Limits::from_request(Requested {
            duration: Some(Duration::from_secs(5)),
            ..Requested::default()
        })
        .unwrap();
        assert_eq!(l.duration, Duration::from_secs(5));
        assert_eq!(l.max_bytes, Limits::DEFAULT.max_bytes);
        assert_eq!(
            Limits::from_request(Requested::default()).unwrap(),
            Limits::DEFAULT
        );
    }

    #[test]
    fn zero_and_huge_are_refused_with_the_limit_named() {
        let cases = [
            (
                Requested {
                    duration: Some(Duration::ZERO),
                    ..Default::default()
                },
                "duration",
            ),
            (
                Requested {
                    duration: Some(Duration::from_secs(3601)),
                    ..Default::default()
                },
                "duration",
            ),
            (
                Requested {
                    max_bytes: Some(0),
                    ..Default::default()
                },
                "max_bytes",
            ),
            (
                Requested {
                    max_bytes: Some(u64::MAX),
                    ..Default::default()
                },
                "max_bytes",
            ),
            (
                Requested {
                    max_packets: Some(0),
                    ..Default::default()
                },
                "max_packets",
            ),
            (
                Requested {
                    snaplen: Some(10),
                    ..Default::default()
                },
                "snaplen",
            ),
            (
                Requested {
                    snaplen: Some(1 << 20),
                    ..Default::default()
                },
                "snaplen",
            ),
        ];
        for (r, name) in cases {
            let e = Limits::from_request(r).unwrap_err().to_string();
            assert!(e.contains(name), "{r:?}: {e}");
        }
    }
}
