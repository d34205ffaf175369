//! What a `tracing` subscriber writes, captured for a test on its own thread.

use std::sync::{Arc, Mutex};

/// The formatted lines of a thread-local subscriber (no ANSI colours).
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("log capture lock")
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Makes this capture the current thread's subscriber until the guard drops (a
    /// current-thread runtime's tasks log on that thread too).
    pub fn set_default(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// The lines written so far that contain `needle` (a target such as
    /// `flowlake::audit`).
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().expect("log capture lock")).into_owned();
        text.lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_a_target() {
        let capture = LogCapture::default();
        {
            let _guard = capture.set_default();
            tracing::info!(target: "flowlake::audit", token = "a", "request");
            tracing::info!(target: "other", "noise");
        }
        tracing::info!(target: "flowlake::audit", "after the guard");
        let lines = capture.lines_with("flowlake::audit");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("token=\"a\""), "{}", lines[0]);
    }
}
