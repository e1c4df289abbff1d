//! The in-memory window of one attempt's log: its newest records, kept as the bytes written to
//! disk, so taking a chunk of output in costs one copy and no per-line work. Lines are made only
//! when a reader asks.
//!
//! Bounded by the line and byte caps of `LogLimits`, in whole records, oldest first; the newest
//! record always stays, so the window may exceed a cap by at most one record (one chunk read from
//! a pipe, or one line). Line numbers are absolute for the attempt and never reused.

use std::collections::VecDeque;

use crate::core::{LogFilter, LogLimits, LogLine};
use crate::shell::logs::file::Head;

/// A record as it went to disk: its header, and its encoded bytes with the data at `data_at`.
#[derive(Debug)]
pub struct Record {
    pub head: Head,
    pub bytes: Vec<u8>,
    pub data_at: usize,
}

impl Record {
    /// Encodes `data` under `head` into `buffer` (emptied first; see `LogWindow::buffer`).
    pub fn encode(head: Head, data: &[u8], mut buffer: Vec<u8>) -> Record {
        buffer.clear();
        head.encode(&mut buffer, data.len());
        let data_at = buffer.len();
        buffer.extend_from_slice(data);
        Record {
            head,
            bytes: buffer,
            data_at,
        }
    }

    pub fn data(&self) -> &[u8] {
        &self.bytes[self.data_at..]
    }
}

#[derive(Debug)]
pub struct LogWindow {
    records: VecDeque<Record>,
    lines: u64,
    bytes: usize,
    next_line_number: i64,
    limits: LogLimits,
    /// The buffer of the last evicted record, for the next one: a full window takes new output
    /// without allocating.
    spare: Vec<u8>,
}

impl LogWindow {
    /// A window whose next line is `next_line_number` (a log continued after a restart).
    pub fn starting_at(limits: LogLimits, next_line_number: i64) -> LogWindow {
        LogWindow {
            records: VecDeque::new(),
            lines: 0,
            bytes: 0,
            next_line_number,
            limits,
            spare: Vec::new(),
        }
    }

    /// A buffer to encode the next record into (the last evicted record's).
    pub fn buffer(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.spare)
    }

    /// Takes a record whose lines are numbered from `next_line_number()`, evicting the oldest
    /// records beyond the caps.
    pub fn push(&mut self, record: Record) {
        debug_assert_eq!(record.head.first, self.next_line_number);
        self.next_line_number = record.head.end();
        self.lines += record.head.count;
        self.bytes += record.bytes.len();
        self.records.push_back(record);
        while self.records.len() > 1
            && (self.lines > self.limits.lines_max as u64 || self.bytes > self.limits.bytes_max)
        {
            let old = self.records.pop_front().expect("more than one record");
            self.lines -= old.head.count;
            self.bytes -= old.bytes.len();
            // A buffer much larger than a chunk is not kept: the caps count what is in use.
            if old.bytes.capacity() <= 2 << 20 {
                self.spare = old.bytes;
            }
        }
    }

    /// The number the next line will get; also the count of lines ever logged.
    pub fn next_line_number(&self) -> i64 {
        self.next_line_number
    }

    /// The oldest line number still in memory.
    pub fn first_line_number(&self) -> i64 {
        self.records
            .front()
            .map_or(self.next_line_number, |r| r.head.first)
    }

    /// Lines in memory.
    pub fn line_count(&self) -> u64 {
        self.lines
    }

    /// Bytes in memory, as encoded.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Records in memory.
    pub fn records(&self) -> usize {
        self.records.len()
    }

    pub fn fetch(&self, filter: &LogFilter) -> Vec<LogLine> {
        let from = filter.first_line();
        let lines: Vec<LogLine> = self
            .records
            .iter()
            .filter(|r| r.head.end() > from)
            .flat_map(|r| r.head.lines(r.data()))
            .collect();
        filter.select(lines.iter())
    }
}
