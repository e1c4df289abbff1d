//! Where a container's output left off in an attempt's log, so a runtime that follows the
//! container again after a worker restart (an adoption) takes every line it has not logged, and
//! none twice. A timestamp alone cannot say that: a burst of lines shares a millisecond, and
//! the worker's own lines (build, error) are stamped by another clock.

use crate::core::LogSource;

/// The newest stdout/stderr line's timestamp, and how many stdout/stderr lines carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputMark {
    pub timestamp_ms: i64,
    pub lines: usize,
}

impl OutputMark {
    /// Whether a line of `source` is the container's output (what a runtime follows).
    pub fn counts(source: LogSource) -> bool {
        matches!(source, LogSource::Stdout | LogSource::Stderr)
    }

    /// The mark after one more output line stamped `timestamp_ms`.
    pub fn after(mark: Option<OutputMark>, timestamp_ms: i64) -> OutputMark {
        OutputMark::after_lines(mark, timestamp_ms, 1)
    }

    /// The mark after `count` more output lines stamped `timestamp_ms`.
    pub fn after_lines(mark: Option<OutputMark>, timestamp_ms: i64, count: u64) -> OutputMark {
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        match mark {
            Some(m) if m.timestamp_ms == timestamp_ms => OutputMark {
                lines: m.lines.saturating_add(count),
                ..m
            },
            _ => OutputMark {
                timestamp_ms,
                lines: count,
            },
        }
    }
}

/// Passes the lines of a re-followed output stream that the log does not have yet. The stream
/// must be in timestamp order, as an engine's is.
#[derive(Debug)]
pub struct ResumeFilter {
    mark: Option<OutputMark>,
    skipped_at_mark: usize,
}

impl ResumeFilter {
    pub fn new(mark: Option<OutputMark>) -> ResumeFilter {
        ResumeFilter {
            mark,
            skipped_at_mark: 0,
        }
    }

    /// Whether the line stamped `timestamp_ms` is new to the log.
    pub fn is_new(&mut self, timestamp_ms: i64) -> bool {
        let Some(mark) = self.mark else {
            return true;
        };
        if timestamp_ms != mark.timestamp_ms {
            return timestamp_ms > mark.timestamp_ms;
        }
        if self.skipped_at_mark < mark.lines {
            self.skipped_at_mark += 1;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_sharing_the_marks_millisecond_are_neither_lost_nor_doubled() {
        // Logged before the restart: 10, 20, 20. The engine replays 10, 20, 20, 20, 30.
        let mut mark = None;
        for ts in [10, 20, 20] {
            mark = Some(OutputMark::after(mark, ts));
        }
        assert_eq!(
            mark,
            Some(OutputMark {
                timestamp_ms: 20,
                lines: 2
            })
        );
        let mut filter = ResumeFilter::new(mark);
        let new: Vec<i64> = [10, 20, 20, 20, 30]
            .into_iter()
            .filter(|ts| filter.is_new(*ts))
            .collect();
        assert_eq!(new, vec![20, 30]);
    }

    #[test]
    fn without_a_mark_everything_is_new() {
        let mut filter = ResumeFilter::new(None);
        assert!(filter.is_new(0) && filter.is_new(0));
    }
}
