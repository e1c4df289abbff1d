//! Splitting a byte stream (a pipe, a docker log stream) into log lines.
//!
//! The stream is cut into *regions*: runs of whole lines, handed on as one slice and stored as
//! one record. `Lines` is the one rule that says which lines a region holds; the writer counts
//! with it and every reader splits with it, so a line's number never depends on who reads it.

/// Longest line kept; longer output is split into several lines.
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// The lines of a region: split at each newline (the newline is not part of the line), lines
/// longer than `LINE_BYTES_MAX` cut into several, and a last piece without a newline a line of
/// its own. An empty line between two newlines is a line; nothing after the last newline is not.
#[derive(Clone, Debug)]
pub struct Lines<'a> {
    rest: &'a [u8],
    /// What remains of an over-long line after its first cut.
    long: &'a [u8],
}

impl<'a> Lines<'a> {
    pub fn new(region: &'a [u8]) -> Lines<'a> {
        Lines {
            rest: region,
            long: &[],
        }
    }

    fn cut(&mut self, line: &'a [u8]) -> &'a [u8] {
        if line.len() > LINE_BYTES_MAX {
            self.long = &line[LINE_BYTES_MAX..];
            &line[..LINE_BYTES_MAX]
        } else {
            line
        }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if !self.long.is_empty() {
            let long = std::mem::take(&mut self.long);
            return Some(self.cut(long));
        }
        if self.rest.is_empty() {
            return None;
        }
        let (line, rest) = match memchr::memchr(b'\n', self.rest) {
            Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
            None => (self.rest, &self.rest[self.rest.len()..]),
        };
        self.rest = rest;
        Some(self.cut(line))
    }
}

/// How many lines `Lines` finds in a region, without visiting them one by one: newlines are
/// counted in bulk when every full `LINE_BYTES_MAX / 2` block of the region holds one (then no
/// line is long enough to be cut); otherwise the lines are walked.
pub fn count_lines(region: &[u8]) -> u64 {
    let no_long_lines = region
        .chunks_exact(LINE_BYTES_MAX / 2)
        .all(|block| memchr::memchr(b'\n', block).is_some());
    if !no_long_lines {
        return Lines::new(region).count() as u64;
    }
    let unterminated = region.last().is_some_and(|&b| b != b'\n');
    (memchr::memchr_iter(b'\n', region).count() + usize::from(unterminated)) as u64
}

/// Hands the complete lines at the front of `data` to `emit` as one region (over-long partial
/// lines count as complete in `LINE_BYTES_MAX` pieces); returns the region's length (the rest
/// is a partial line).
fn emit_complete_lines(data: &[u8], emit: &mut impl FnMut(&[u8])) -> usize {
    let mut end = memchr::memrchr(b'\n', data).map_or(0, |i| i + 1);
    while data.len() - end >= LINE_BYTES_MAX {
        end += LINE_BYTES_MAX;
    }
    if end > 0 {
        emit(&data[..end]);
    }
    end
}

/// Buffers a partial line between chunks; over-long lines are split at `LINE_BYTES_MAX`.
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Adds a chunk and hands the complete lines in it to `emit`, as one region.
    pub fn feed(&mut self, chunk: &[u8], emit: &mut impl FnMut(&[u8])) {
        self.pending.extend_from_slice(chunk);
        let consumed = emit_complete_lines(&self.pending, emit);
        self.pending.drain(..consumed);
    }

    /// The stream ended: a last line without a newline is still a line.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&self.pending);
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

    /// `n` bytes were read into `spare()`: the complete lines go to `emit`, as one region.
    pub fn commit(&mut self, n: usize, emit: &mut impl FnMut(&[u8])) {
        self.filled += n;
        let start = emit_complete_lines(&self.buf[..self.filled], emit);
        self.buf.copy_within(start..self.filled, 0);
        self.filled -= start;
    }

    /// The stream ended: a last line without a newline is still a line.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[u8])) {
        if self.filled > 0 {
            emit(&self.buf[..self.filled]);
            self.filled = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(region: &[u8]) -> Vec<String> {
        Lines::new(region)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        let mut splitter = LineSplitter::default();
        let mut emit = |region: &[u8]| out.extend(text(region));
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
    fn a_region_splits_as_documented() {
        assert_eq!(text(b""), Vec::<String>::new());
        assert_eq!(text(b"\n"), vec![""]);
        assert_eq!(text(b"a\n\nb"), vec!["a", "", "b"]);
        let mut long = vec![b'y'; 2 * LINE_BYTES_MAX];
        long.push(b'\n');
        assert_eq!(
            Lines::new(&long).map(<[u8]>::len).collect::<Vec<_>>(),
            [LINE_BYTES_MAX; 2]
        );
    }

    #[test]
    fn counting_agrees_with_splitting() {
        let half = LINE_BYTES_MAX / 2;
        let mut regions: Vec<Vec<u8>> = vec![b"".to_vec(), b"\n".to_vec(), b"a".to_vec()];
        for len in [
            half - 1,
            half,
            half + 1,
            LINE_BYTES_MAX,
            LINE_BYTES_MAX + 1,
            3 * half,
        ] {
            for tail in [&b""[..], b"\n", b"\nx", b"\n\n"] {
                let mut region = vec![b'x'; len];
                region.extend_from_slice(tail);
                regions.push(region.clone());
                region.splice(0..0, *b"a\n");
                regions.push(region);
            }
        }
        for region in regions {
            assert_eq!(
                count_lines(&region),
                Lines::new(&region).count() as u64,
                "{} bytes",
                region.len()
            );
        }
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
        let mut emit = |region: &[u8]| got.extend(text(region));
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
