//! This node's producer identity: a random 64-bit id and a batch sequence
//! number that never goes back, kept in `producer.id` beside the spool.
//!
//! Ingester replicas check a batch `<producer>/<seq>` against the table before
//! storing it, so a retry that reaches another replica is not stored twice
//! (docs/ingester.md, "Exactly once across replicas"). That needs the pair to
//! name one batch forever: the counter is reserved in steps of [`RESERVE`]
//! (one fsynced write per step, numbers skipped at a restart), and when the
//! file is lost the collector starts as a new producer with a new id rather
//! than reuse numbers the table may already hold.
//!
//! File: `<16 hex digits> <first sequence number not reserved>\n`.

use std::fs;
use std::path::{Path, PathBuf};

use super::encode::{BatchId, BatchSeq, rand_u64};
use super::error::{Result, ShipError};

/// File name inside the spool directory.
pub const FILE: &str = "producer.id";
/// Sequence numbers reserved per write of the file.
pub const RESERVE: u64 = 4096;

#[derive(Debug)]
pub struct Producer {
    path: PathBuf,
    id: u64,
    next: u64,
    reserved: u64,
}

impl Producer {
    /// Reads (or creates) the producer file in `dir`; the first sequence number
    /// is past every reserved one and past `at_least` (the spool's next).
    pub fn open(dir: &Path, at_least: BatchSeq) -> Result<Self> {
        fs::create_dir_all(dir).map_err(ShipError::io(dir))?;
        let path = dir.join(FILE);
        let (id, reserved) = match fs::read_to_string(&path) {
            Ok(s) => parse(&s).unwrap_or_else(|| {
                tracing::warn!(file = %path.display(), "producer file damaged: starting as a new producer");
                (rand_u64(), 0)
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (rand_u64(), 0),
            Err(e) => return Err(ShipError::io(&path)(e)),
        };
        let next = reserved.max(at_least.0);
        let mut me = Producer {
            path,
            id,
            next,
            reserved: next,
        };
        me.reserve()?;
        tracing::info!(producer = format_args!("{id:016x}"), next, "batch producer");
        Ok(me)
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next batch's id and sequence number.
    pub fn next_batch(&mut self) -> Result<(BatchId, BatchSeq)> {
        if self.next >= self.reserved {
            self.reserve()?;
        }
        let seq = BatchSeq(self.next);
        self.next += 1;
        Ok((BatchId::new(self.id, seq), seq))
    }

    /// Writes the file with `RESERVE` more numbers reserved, durably.
    fn reserve(&mut self) -> Result<()> {
        let reserved = self.next + RESERVE;
        let tmp = self.path.with_extension("tmp");
        let io = ShipError::io(&self.path);
        fs::write(&tmp, format!("{:016x} {reserved}\n", self.id))
            .and_then(|()| fs::File::open(&tmp)?.sync_all())
            .and_then(|()| fs::rename(&tmp, &self.path))
            .and_then(|()| match self.path.parent() {
                Some(dir) => fs::File::open(dir)?.sync_all(),
                None => Ok(()),
            })
            .map_err(io)?;
        self.reserved = reserved;
        Ok(())
    }
}

fn parse(s: &str) -> Option<(u64, u64)> {
    let (id, reserved) = s.trim().split_once(' ')?;
    (id.len() == 16).then_some(())?;
    Some((u64::from_str_radix(id, 16).ok()?, reserved.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_never_repeat_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Producer::open(dir.path(), BatchSeq(0)).unwrap();
        let id = p.id();
        let first: Vec<_> = (0..RESERVE + 10)
            .map(|_| p.next_batch().unwrap().1)
            .collect();
        let last = first.last().unwrap().0;
        drop(p);
        // A restart (even a crash after any of those) continues past them.
        let mut p = Producer::open(dir.path(), BatchSeq(0)).unwrap();
        assert_eq!(p.id(), id);
        let (bid, seq) = p.next_batch().unwrap();
        assert!(seq.0 > last);
        assert_eq!(bid.to_string(), format!("{id:016x}/{}", seq.0));
        assert_eq!(bid.to_string().parse::<BatchId>().unwrap(), bid);
        // The spool's next is respected.
        drop(p);
        let mut p = Producer::open(dir.path(), BatchSeq(1 << 20)).unwrap();
        assert_eq!(p.next_batch().unwrap().1, BatchSeq(1 << 20));
        // A lost file makes a new producer.
        std::fs::remove_file(dir.path().join(FILE)).unwrap();
        let p = Producer::open(dir.path(), BatchSeq(0)).unwrap();
        assert_ne!(p.id(), id);
    }
}
