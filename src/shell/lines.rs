//! Splitting a byte stream (a pipe, a docker log stream) into log lines.

use crate::shell::logstore::LINE_BYTES_MAX;

/// Buffers a partial line between chunks; over-long lines are split at `LINE_BYTES_MAX`.
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Adds a chunk and hands every complete line in it to `emit`, as one batch.
    pub fn feed(&mut self, chunk: &[u8], emit: &mut impl FnMut(&[&[u8]])) {
        self.pending.extend_from_slice(chunk);
        let mut lines: Vec<&[u8]> = Vec::new();
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', &self.pending) {
            let line = &self.pending[start..end];
            if line.is_empty() {
                // `chunks` yields nothing for an empty slice; a blank line is still a line.
                lines.push(line);
            } else {
                lines.extend(line.chunks(LINE_BYTES_MAX));
            }
            start = end + 1;
        }
        while self.pending.len() - start >= LINE_BYTES_MAX {
            lines.push(&self.pending[start..start + LINE_BYTES_MAX]);
            start += LINE_BYTES_MAX;
        }
        if !lines.is_empty() {
            emit(&lines);
        }
        self.pending.drain(..start);
    }

    /// The stream ended: a last line without a newline is still a line.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[&[u8]])) {
        if !self.pending.is_empty() {
            emit(&[&self.pending]);
            self.pending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        let mut splitter = LineSplitter::default();
        let mut emit = |lines: &[&[u8]]| {
            out.extend(
                lines
                    .iter()
                    .map(|l| String::from_utf8_lossy(l).into_owned()),
            )
        };
        for chunk in chunks {
            splitter.feed(chunk, &mut emit);
        }
        splitter.finish(&mut emit);
        out
    }

    #[test]
    fn lines_across_chunks() {
        assert_eq!(split(&[b"a\nb", b"c\n\nd"]), vec!["a", "bc", "", "d"]);
        let long = vec![b'x'; LINE_BYTES_MAX + 10];
        let got = split(&[&long]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), LINE_BYTES_MAX);
    }
}
