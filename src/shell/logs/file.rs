//! The on-disk form of an attempt's log: a sequence of records, each a header line and the
//! bytes it announces.
//!
//! ```text
//! #L <first line> <timestamp ms> <source> <line count> <byte length>\n<region>
//! #T <line number> <timestamp ms> <source> 1 <byte length>\n<text>
//! ```
//!
//! An `L` record holds a region of raw output exactly as it was read (split into lines by
//! `lines::Lines`), so ingest is a header and a copy per chunk, with no per-line encoding. A `T`
//! record holds one line verbatim (newlines included), for lines a runtime hands over one by one.
//! A file written before this format holds `number TAB timestamp TAB source TAB escaped-data`
//! lines; they are read still, and never start with `#`.
//!
//! A record is written with one `write`; a `kill -9` can at worst leave the last one short.
//! `Scan` reads up to the last whole record and says where that ends, so a continued log is
//! first cut back to it.

use std::io::{self, BufRead, Seek, SeekFrom};

use crate::core::{LogLine, LogSource};
use crate::shell::logs::lines::Lines;

/// What a record's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A region of raw output: many lines.
    Region,
    /// One line, verbatim.
    Text,
}

/// A record's header: where its lines are numbered from and what they share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub kind: Kind,
    pub first: i64,
    pub timestamp_ms: i64,
    pub source: LogSource,
    pub count: u64,
}

impl Head {
    /// The number after this record's last line.
    pub fn end(&self) -> i64 {
        self.first
            .saturating_add(i64::try_from(self.count).unwrap_or(i64::MAX))
    }

    /// The record's lines, with their numbers, as text (invalid UTF-8 shown lossily).
    pub fn lines<'a>(&'a self, data: &'a [u8]) -> impl Iterator<Item = LogLine> + 'a {
        let pieces: Box<dyn Iterator<Item = &'a [u8]> + 'a> = match self.kind {
            Kind::Region => Box::new(Lines::new(data)),
            Kind::Text => Box::new(std::iter::once(data)),
        };
        pieces.zip(self.first..).map(|(line, line_number)| LogLine {
            line_number,
            timestamp_ms: self.timestamp_ms,
            source: self.source,
            data: String::from_utf8_lossy(line).into_owned(),
        })
    }

    /// Appends the header line for `len` bytes of data.
    pub fn encode(&self, out: &mut Vec<u8>, len: usize) {
        let mut number = itoa::Buffer::new();
        out.extend_from_slice(match self.kind {
            Kind::Region => b"#L ",
            Kind::Text => b"#T ",
        });
        for field in [self.first, self.timestamp_ms] {
            out.extend_from_slice(number.format(field).as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(self.source.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(number.format(self.count).as_bytes());
        out.push(b' ');
        out.extend_from_slice(number.format(len).as_bytes());
        out.push(b'\n');
    }

    /// A header line (without its newline) and the data length it announces.
    fn decode(line: &[u8]) -> Option<(Head, usize)> {
        let text = std::str::from_utf8(line).ok()?;
        let mut fields = text.split(' ');
        let kind = match fields.next()? {
            "#L" => Kind::Region,
            "#T" => Kind::Text,
            _ => return None,
        };
        let head = Head {
            kind,
            first: fields.next()?.parse().ok()?,
            timestamp_ms: fields.next()?.parse().ok()?,
            source: LogSource::parse(fields.next()?)?,
            count: fields.next()?.parse().ok()?,
        };
        let len = fields.next()?.parse().ok()?;
        if fields.next().is_some() || (kind == Kind::Text && head.count != 1) {
            return None;
        }
        Some((head, len))
    }
}

/// Reads the records of one log segment in order; data nobody wants is seeked over, not read.
pub struct Scan<R> {
    reader: R,
    /// The segment's length when the scan began.
    len: u64,
    /// Where the last whole record ends (the reader's position after each record).
    whole: u64,
    line: Vec<u8>,
}

impl<R: BufRead + Seek> Scan<R> {
    /// A scan of the `len` bytes `reader` holds.
    pub fn new(reader: R, len: u64) -> Scan<R> {
        Scan {
            reader,
            len,
            whole: 0,
            line: Vec::new(),
        }
    }

    /// Bytes up to the end of the last whole record read so far.
    pub fn whole_bytes(&self) -> u64 {
        self.whole
    }

    /// The next record, its data read into `data` if `want` says so (left empty otherwise).
    /// None at the end, at a short last record or at a header that cannot be read (nothing
    /// after it can be told apart from data).
    pub fn next(
        &mut self,
        data: &mut Vec<u8>,
        want: impl Fn(&Head) -> bool,
    ) -> io::Result<Option<Head>> {
        data.clear();
        loop {
            self.line.clear();
            let n = self.reader.read_until(b'\n', &mut self.line)? as u64;
            if n == 0 || self.line.last() != Some(&b'\n') {
                return Ok(None);
            }
            self.line.pop();
            if self.line.first() != Some(&b'#') {
                // A record of the older line format; one that does not decode is skipped.
                self.whole += n;
                if let Some(line) = decode_line(&String::from_utf8_lossy(&self.line)) {
                    data.extend_from_slice(line.data.as_bytes());
                    return Ok(Some(Head {
                        kind: Kind::Text,
                        first: line.line_number,
                        timestamp_ms: line.timestamp_ms,
                        source: line.source,
                        count: 1,
                    }));
                }
                continue;
            }
            let Some((head, len)) = Head::decode(&self.line) else {
                return Ok(None);
            };
            let end = (self.whole + n).saturating_add(len as u64);
            if end > self.len {
                return Ok(None);
            }
            if want(&head) {
                data.resize(len, 0);
                self.reader.read_exact(data)?;
            } else {
                self.reader.seek(SeekFrom::Current(len as i64))?;
            }
            self.whole = end;
            return Ok(Some(head));
        }
    }
}

/// A record of the older format: `number TAB timestamp TAB source TAB data`, with backslashes
/// and newlines in the data escaped.
fn decode_line(record: &str) -> Option<LogLine> {
    let mut parts = record.splitn(4, '\t');
    let line_number = parts.next()?.parse().ok()?;
    let timestamp_ms = parts.next()?.parse().ok()?;
    let source = LogSource::parse(parts.next()?)?;
    let raw = parts.next()?;
    let mut data = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            data.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => data.push('\n'),
            Some(other) => data.push(other),
            None => {}
        }
    }
    Some(LogLine {
        line_number,
        timestamp_ms,
        source,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(out: &mut Vec<u8>, head: Head, data: &[u8]) {
        head.encode(out, data.len());
        out.extend_from_slice(data);
    }

    fn all_lines(file: &[u8]) -> (Vec<LogLine>, u64) {
        let mut scan = Scan::new(io::Cursor::new(file), file.len() as u64);
        let mut data = Vec::new();
        let mut lines = Vec::new();
        while let Some(head) = scan.next(&mut data, |_| true).unwrap() {
            lines.extend(head.lines(&data));
        }
        (lines, scan.whole_bytes())
    }

    fn head(kind: Kind, first: i64, count: u64) -> Head {
        Head {
            kind,
            first,
            timestamp_ms: 1_700_000_000_123,
            source: LogSource::Stdout,
            count,
        }
    }

    #[test]
    fn records_of_both_kinds_and_the_old_format_read_back_in_order() {
        let mut file = b"0\t5\tstderr\told \\\\ line\\n two\n".to_vec();
        record(
            &mut file,
            head(Kind::Region, 1, 3),
            b"a\n\n#L looks like a header\n",
        );
        record(
            &mut file,
            head(Kind::Text, 4, 1),
            b"verbatim\nwith a newline",
        );
        let (lines, whole) = all_lines(&file);
        let text: Vec<(i64, &str)> = lines
            .iter()
            .map(|l| (l.line_number, l.data.as_str()))
            .collect();
        assert_eq!(
            text,
            [
                (0, "old \\ line\n two"),
                (1, "a"),
                (2, ""),
                (3, "#L looks like a header"),
                (4, "verbatim\nwith a newline")
            ]
        );
        assert_eq!(whole, file.len() as u64);
    }

    #[test]
    fn a_short_last_record_is_not_read_and_not_counted_whole() {
        let mut file = Vec::new();
        record(&mut file, head(Kind::Region, 0, 2), b"one\ntwo\n");
        let whole = file.len();
        record(&mut file, head(Kind::Region, 2, 2), b"three\nfour\n");
        for cut in whole..file.len() {
            let (lines, at) = all_lines(&file[..cut]);
            assert_eq!(lines.len(), 2, "cut at {cut}");
            assert_eq!(at, whole as u64, "cut at {cut}");
        }
    }
}
