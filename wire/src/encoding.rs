//! Content-Encoding of request bodies on top of Arrow IPC.

use std::io::Read;

use crate::error::{DecodeError, Result};

/// How the body bytes are encoded on top of Arrow IPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    Identity,
    Zstd,
}

impl BodyEncoding {
    /// From a `Content-Encoding` header value.
    pub fn from_header(value: Option<&str>) -> Result<Self> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("identity") => Ok(BodyEncoding::Identity),
            Some("zstd") => Ok(BodyEncoding::Zstd),
            Some(other) => Err(DecodeError::UnsupportedEncoding(other.to_string())),
        }
    }

    /// The byte stored for this encoding in a WAL record.
    pub fn as_byte(self) -> u8 {
        match self {
            BodyEncoding::Identity => 0,
            BodyEncoding::Zstd => 1,
        }
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(BodyEncoding::Identity),
            1 => Some(BodyEncoding::Zstd),
            _ => None,
        }
    }
}

/// Removes the Content-Encoding, refusing to inflate beyond `max_bytes`.
pub(crate) fn remove_encoding(
    body: &[u8],
    encoding: BodyEncoding,
    max_bytes: usize,
) -> Result<Vec<u8>> {
    match encoding {
        BodyEncoding::Identity => {
            if body.len() > max_bytes {
                return Err(DecodeError::TooLarge { limit: max_bytes });
            }
            Ok(body.to_vec())
        }
        BodyEncoding::Zstd => {
            let corrupt = |source| DecodeError::Encoding {
                encoding: "zstd",
                source,
            };
            let decoder = zstd::stream::read::Decoder::new(body).map_err(corrupt)?;
            let mut out = Vec::new();
            decoder
                .take((max_bytes as u64).saturating_add(1))
                .read_to_end(&mut out)
                .map_err(corrupt)?;
            if out.len() > max_bytes {
                return Err(DecodeError::TooLarge { limit: max_bytes });
            }
            Ok(out)
        }
    }
}
