//! Log lines and the `FetchLogsFilter` semantics; the caps of a log's in-memory window.
//!
//! Line numbers are absolute for the attempt (the first line is 0) and never reused, so a reader
//! that remembers the last number it saw can resume exactly, and a gap tells it lines were
//! evicted. The shell keeps the lines (`shell::logs::window`, `shell::logs::file`); the filter here
//! decides which of them a fetch returns, wherever they are read from.

use std::collections::VecDeque;
use std::fmt;

use regex::{Regex, RegexBuilder};

use crate::proto;

/// Longest regex pattern accepted, in bytes.
pub const REGEX_LEN_MAX: usize = 1024;
/// Compiled-program size limit handed to the regex crate.
pub const REGEX_SIZE_MAX: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogSource {
    Stdout,
    Stderr,
    Build,
    Error,
}

impl LogSource {
    pub const ALL: [LogSource; 4] = [
        LogSource::Stdout,
        LogSource::Stderr,
        LogSource::Build,
        LogSource::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LogSource::Stdout => "stdout",
            LogSource::Stderr => "stderr",
            LogSource::Build => "build",
            LogSource::Error => "error",
        }
    }

    pub fn parse(name: &str) -> Option<LogSource> {
        LogSource::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for LogSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub line_number: i64,
    pub timestamp_ms: i64,
    pub source: LogSource,
    pub data: String,
}

impl LogLine {
    pub fn to_proto(&self) -> proto::worker::LogEntry {
        proto::worker::LogEntry {
            timestamp_ms: self.timestamp_ms,
            source: self.source.as_str().to_string(),
            data: self.data.clone(),
            line_number: self.line_number,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimits {
    pub lines_max: usize,
    pub bytes_max: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            lines_max: 10_000,
            bytes_max: 4 << 20,
        }
    }
}

/// Where a fetch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineStart {
    Beginning,
    /// Lines numbered `n` and later.
    From(i64),
    /// The last `n` matching lines.
    LastN(u64),
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum LogFilterError {
    #[error("filter.regex is {len} bytes; the limit is {REGEX_LEN_MAX}")]
    RegexTooLong { len: usize },
    #[error("filter.regex is invalid: {0}")]
    Regex(#[from] regex::Error),
    #[error("filter.{field} must not be negative")]
    Negative { field: &'static str },
}

/// A parsed `FetchLogsFilter`. Zero fields are unset.
#[derive(Clone, Debug)]
pub struct LogFilter {
    pub start: LineStart,
    /// Only lines stamped after this (exclusive).
    pub start_ms: Option<i64>,
    /// Only lines stamped at or before this (inclusive).
    pub end_ms: Option<i64>,
    pub regex: Option<Regex>,
    pub max_lines: Option<usize>,
    /// Not on the wire: the dashboard's source tabs.
    pub source: Option<LogSource>,
}

impl Default for LogFilter {
    fn default() -> Self {
        LogFilter {
            start: LineStart::Beginning,
            start_ms: None,
            end_ms: None,
            regex: None,
            max_lines: None,
            source: None,
        }
    }
}

fn positive(value: i64, field: &'static str) -> Result<Option<i64>, LogFilterError> {
    match value {
        0 => Ok(None),
        v if v < 0 => Err(LogFilterError::Negative { field }),
        v => Ok(Some(v)),
    }
}

impl LogFilter {
    pub fn from_proto(
        filter: Option<&proto::worker::FetchLogsFilter>,
    ) -> Result<Self, LogFilterError> {
        let Some(f) = filter else {
            return Ok(LogFilter::default());
        };
        let start = match f.start_line {
            0 => LineStart::Beginning,
            n if n < 0 => LineStart::LastN(n.unsigned_abs()),
            n => LineStart::From(n),
        };
        let max_lines =
            positive(f.max_lines, "max_lines")?.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        Ok(LogFilter {
            start,
            start_ms: positive(f.start_ms, "start_ms")?,
            end_ms: positive(f.end_ms, "end_ms")?,
            regex: compile_regex(&f.regex)?,
            max_lines,
            source: None,
        })
    }

    /// The lowest line number the filter can select.
    pub fn first_line(&self) -> i64 {
        match self.start {
            LineStart::From(n) => n,
            LineStart::Beginning | LineStart::LastN(_) => i64::MIN,
        }
    }

    /// Applies the filter to lines in line-number order (from memory or from disk alike).
    pub fn select<'a>(&self, lines: impl Iterator<Item = &'a LogLine>) -> Vec<LogLine> {
        let from = self.first_line();
        self.take(
            lines
                .skip_while(|line| line.line_number < from)
                .filter(|line| self.matches(line)),
        )
    }

    pub fn matches(&self, line: &LogLine) -> bool {
        self.start_ms.is_none_or(|t| line.timestamp_ms > t)
            && self.end_ms.is_none_or(|t| line.timestamp_ms <= t)
            && self.source.is_none_or(|s| line.source == s)
            && self.regex.as_ref().is_none_or(|r| r.is_match(&line.data))
    }

    /// Applies the count limits: the first `max_lines` from the start, or for "last N" the newest
    /// `min(N, max_lines)`.
    fn take<'a>(&self, matching: impl Iterator<Item = &'a LogLine>) -> Vec<LogLine> {
        let max = self.max_lines.unwrap_or(usize::MAX);
        match self.start {
            LineStart::LastN(n) => {
                let keep = usize::try_from(n).unwrap_or(usize::MAX).min(max);
                let mut tail: VecDeque<&LogLine> = VecDeque::new();
                for line in matching {
                    if tail.len() == keep {
                        tail.pop_front();
                    }
                    if keep > 0 {
                        tail.push_back(line);
                    }
                }
                tail.into_iter().cloned().collect()
            }
            _ => matching.take(max).cloned().collect(),
        }
    }
}

/// Compiles a user regex under the length and program-size limits; empty means none.
pub fn compile_regex(pattern: &str) -> Result<Option<Regex>, LogFilterError> {
    if pattern.is_empty() {
        return Ok(None);
    }
    if pattern.len() > REGEX_LEN_MAX {
        return Err(LogFilterError::RegexTooLong { len: pattern.len() });
    }
    let regex = RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_MAX)
        .dfa_size_limit(REGEX_SIZE_MAX)
        .build()?;
    Ok(Some(regex))
}
