//! Splitting a byte stream (a pipe, a docker log stream) into log lines.

use crate::shell::logstore::LINE_BYTES_MAX;

/// Hands every complete line of `data` to `emit`, as one batch, over-long ones cut at
/// `LINE_BYTES_MAX`; returns how many bytes that took (the rest is a partial line).
fn emit_complete_lines(data: &[u8], emit: &mut impl FnMut(&[&[u8]])) -> usize {
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', data) {
        let line = &data[start..end];
        if line.is_empty() {
            // `chunks` yields nothing for an empty slice; a blank line is still a line.
            lines.push(line);
        } else {
            lines.extend(line.chunks(LINE_BYTES_MAX));
        }
        start = end + 1;
    }
    while data.len() - start >= LINE_BYTES_MAX {
        lines.push(&data[start..start + LINE_BYTES_MAX]);
        start += LINE_BYTES_MAX;
    }
    if !lines.is_empty() {
        emit(&lines);
    }
    start
}

/// Buffers a partial line between chunks; over-long lines are split at `LINE_BYTES_MAX`.
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Adds a chunk and hands every complete line in it to `emit`, as one batch.
    pub fn feed(&mut self, chunk: &[u8], emit: &mut impl FnMut(&[&[u8]])) {
        self.pending.extend_from_slice(chunk);
        let consumed = emit_complete_lines(&self.pending, emit);
        self.pending.drain(..consumed);
    }

    /// The stream ended: a last line without a newline is still a line.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[&[u8]])) {
        if !self.pending.is_empty() {
            emit(&[&self.pending]);
            self.pending.clear();
        }
    }
}

/// Splits a stream read straight into its own buffer: the reader fills `spare()`, `commit`
/// hands out the complete lines, and only the partial line at the end is moved (to the front).
/// One copy fewer per chunk than `LineSplitter::feed`, for the pipes of the process runtime.
pub struct LineReader {
    buf: Vec<u8>,
    filled: usize,
}

impl LineReader {
    /// Reads of up to `chunk` bytes at a time.
    pub fn new(chunk: usize) -> LineReader {
        // Room for a whole chunk after the longest partial line a commit can leave behind.
        LineReader {
            buf: vec![0; chunk + LINE_BYTES_MAX],
            filled: 0,
        }
    }

    /// Where the next read goes.
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.filled..]
    }

    /// `n` bytes were read into `spare()`: every complete line goes to `emit`, as one batch.
    pub fn commit(&mut self, n: usize, emit: &mut impl FnMut(&[&[u8]])) {
        self.filled += n;
        let start = emit_complete_lines(&self.buf[..self.filled], emit);
        self.buf.copy_within(start..self.filled, 0);
        self.filled -= start;
    }

    /// The stream ended: a last line without a newline is still a line.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[&[u8]])) {
        if self.filled > 0 {
            emit(&[&self.buf[..self.filled]]);
            self.filled = 0;
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

    #[test]
    fn the_reader_splits_as_the_splitter_does() {
        let stream: Vec<u8> = (0..5_000u32)
            .flat_map(|i| {
                let len = (i * 7919) % 200;
                let mut line = vec![b'a' + (i % 26) as u8; len as usize];
                line.push(b'\n');
                line
            })
            .chain(vec![b'z'; LINE_BYTES_MAX * 2 + 5])
            .collect();
        let expected = split(&[&stream]);
        let mut reader = LineReader::new(1000);
        let mut got = Vec::new();
        let mut emit = |lines: &[&[u8]]| {
            got.extend(
                lines
                    .iter()
                    .map(|l| String::from_utf8_lossy(l).into_owned()),
            )
        };
        let mut rest = &stream[..];
        // Reads of odd sizes, as a pipe gives them.
        let mut size = 1;
        while !rest.is_empty() {
            let spare = reader.spare();
            let n = size.min(spare.len()).min(rest.len());
            spare[..n].copy_from_slice(&rest[..n]);
            reader.commit(n, &mut emit);
            rest = &rest[n..];
            size = size * 3 % 997 + 1;
        }
        reader.finish(&mut emit);
        assert_eq!(got, expected);
    }
}
