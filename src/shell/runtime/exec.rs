//! A command run inside a running task (Iris's `ExecInContainer`: `iris task exec`, the
//! controller's dashboard): its exit code and output, each stream bounded, under a time limit.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// What an exec printed and how it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Output kept per stream; the rest is read and dropped (the command must not block on a
/// full pipe), with a note at the end.
pub const OUTPUT_BYTES_MAX: usize = 16 << 20;

/// Iris's limit when the caller gives none (`timeout_seconds` 0); a negative one means none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// `timeout_seconds` as Iris reads it: 0 the default, negative no limit.
pub fn timeout_of(seconds: i32) -> Option<Duration> {
    match seconds {
        0 => Some(DEFAULT_TIMEOUT),
        s if s < 0 => None,
        s => Some(Duration::from_secs(s as u64)),
    }
}

/// Keeps the first `OUTPUT_BYTES_MAX` bytes of what it is given.
#[derive(Default)]
pub struct Bounded {
    kept: Vec<u8>,
    dropped: usize,
}

impl Bounded {
    pub fn push(&mut self, chunk: &[u8]) {
        let room = OUTPUT_BYTES_MAX.saturating_sub(self.kept.len());
        let take = room.min(chunk.len());
        self.kept.extend_from_slice(&chunk[..take]);
        self.dropped += chunk.len() - take;
    }

    pub fn into_text(self) -> String {
        let mut text = String::from_utf8_lossy(&self.kept).into_owned();
        if self.dropped > 0 {
            text.push_str(&format!("\n[{} more bytes not kept]\n", self.dropped));
        }
        text
    }
}

/// Reads `from` to its end, keeping what `Bounded` keeps.
pub async fn read_bounded(mut from: impl AsyncRead + Unpin) -> String {
    let mut out = Bounded::default();
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        out.push(&buf[..n]);
    }
    out.into_text()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_bounded_and_says_so() {
        let mut b = Bounded::default();
        b.push(&vec![b'a'; OUTPUT_BYTES_MAX - 1]);
        b.push(b"bcd");
        let text = b.into_text();
        assert!(text.starts_with('a') && text.contains("b\n[2 more bytes not kept]"));
        assert_eq!(timeout_of(0), Some(DEFAULT_TIMEOUT));
        assert_eq!(timeout_of(-1), None);
        assert_eq!(timeout_of(5), Some(Duration::from_secs(5)));
    }
}
