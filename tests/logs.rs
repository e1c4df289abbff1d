//! The in-memory log window's bounds and every `FetchLogsFilter` rule, with the edge cases.

use iris_worker::core::*;
use iris_worker::proto::worker::FetchLogsFilter;
use iris_worker::shell::logs::file::{Head, Kind};
use iris_worker::shell::logs::window::{LogWindow, Record};

/// A window that takes single lines, as the log store's `append` gives them.
struct TaskLogs(LogWindow);

impl TaskLogs {
    fn new(limits: LogLimits) -> TaskLogs {
        TaskLogs(LogWindow::starting_at(limits, 0))
    }

    fn push(&mut self, timestamp_ms: i64, source: LogSource, data: String) -> i64 {
        let head = Head {
            kind: Kind::Text,
            first: self.0.next_line_number(),
            timestamp_ms,
            source,
            count: 1,
        };
        let record = Record::encode(head, data.as_bytes(), self.0.buffer());
        self.0.push(record);
        head.first
    }

    fn fetch(&self, filter: &LogFilter) -> Vec<LogLine> {
        self.0.fetch(filter)
    }
}

fn logs(n: i64) -> TaskLogs {
    let mut logs = TaskLogs::new(LogLimits::default());
    for i in 0..n {
        let source = if i % 3 == 0 {
            LogSource::Stderr
        } else {
            LogSource::Stdout
        };
        logs.push(1_000 + i * 10, source, format!("line {i}"));
    }
    logs
}

fn fetch(logs: &TaskLogs, filter: FetchLogsFilter) -> Vec<i64> {
    let filter = LogFilter::from_proto(Some(&filter)).unwrap();
    logs.fetch(&filter).iter().map(|l| l.line_number).collect()
}

fn filter() -> FetchLogsFilter {
    FetchLogsFilter::default()
}

#[test]
fn line_numbers_are_absolute_and_survive_eviction() {
    let mut logs = TaskLogs::new(LogLimits {
        lines_max: 5,
        bytes_max: 1 << 20,
    });
    for i in 0..12 {
        assert_eq!(logs.push(i, LogSource::Stdout, format!("l{i}")), i);
    }
    assert_eq!(logs.0.line_count(), 5);
    assert_eq!(logs.0.first_line_number(), 7);
    assert_eq!(fetch(&logs, filter()), vec![7, 8, 9, 10, 11]);
    assert_eq!(
        fetch(
            &logs,
            FetchLogsFilter {
                start_line: 9,
                ..filter()
            }
        ),
        vec![9, 10, 11]
    );
    // A cursor that points at evicted lines resumes at the oldest kept one.
    assert_eq!(
        fetch(
            &logs,
            FetchLogsFilter {
                start_line: 2,
                ..filter()
            }
        ),
        vec![7, 8, 9, 10, 11]
    );
}

#[test]
fn byte_cap_bounds_memory() {
    let mut logs = TaskLogs::new(LogLimits {
        lines_max: 1_000_000,
        bytes_max: 64 * 1024,
    });
    for i in 0..10_000 {
        logs.push(i, LogSource::Stdout, "x".repeat(100));
    }
    assert!(logs.0.bytes() <= 64 * 1024, "{}", logs.0.bytes());
    assert!(logs.0.line_count() > 100);
    assert_eq!(logs.0.next_line_number(), 10_000);
    // A single line bigger than the cap is still kept, alone.
    logs.push(0, LogSource::Stdout, "y".repeat(100_000));
    assert_eq!(logs.0.line_count(), 1);
}

#[test]
fn empty_log_gives_nothing_for_every_filter() {
    let logs = TaskLogs::new(LogLimits::default());
    assert!(fetch(&logs, filter()).is_empty());
    assert!(
        fetch(
            &logs,
            FetchLogsFilter {
                start_line: -5,
                ..filter()
            }
        )
        .is_empty()
    );
    assert!(
        fetch(
            &logs,
            FetchLogsFilter {
                start_line: 5,
                ..filter()
            }
        )
        .is_empty()
    );
    assert!(
        fetch(
            &logs,
            FetchLogsFilter {
                regex: "x".into(),
                ..filter()
            }
        )
        .is_empty()
    );
}

#[test]
fn negative_start_line_is_last_n() {
    let logs = logs(10);
    assert_eq!(
        fetch(
            &logs,
            FetchLogsFilter {
                start_line: -3,
                ..filter()
            }
        ),
        vec![7, 8, 9]
    );
    assert_eq!(
        fetch(
            &logs,
            FetchLogsFilter {
                start_line: -30,
                ..filter()
            }
        )
        .len(),
        10
    );
    assert_eq!(
        fetch(
            &logs,
            FetchLogsFilter {
                start_line: i64::MIN,
                ..filter()
            }
        )
        .len(),
        10
    );
    // last N of the matching lines, capped by max_lines (newest kept)
    let f = FetchLogsFilter {
        start_line: -3,
        max_lines: 2,
        ..filter()
    };
    assert_eq!(fetch(&logs, f), vec![8, 9]);
    let f = FetchLogsFilter {
        start_line: -2,
        regex: "line [0-4]$".into(),
        ..filter()
    };
    assert_eq!(fetch(&logs, f), vec![3, 4]);
}

#[test]
fn huge_values_are_harmless() {
    let logs = logs(10);
    let f = FetchLogsFilter {
        start_line: i64::MAX,
        ..filter()
    };
    assert!(fetch(&logs, f).is_empty());
    let f = FetchLogsFilter {
        max_lines: i64::MAX,
        ..filter()
    };
    assert_eq!(fetch(&logs, f).len(), 10);
    let f = FetchLogsFilter {
        start_ms: i64::MAX,
        ..filter()
    };
    assert!(fetch(&logs, f).is_empty());
}

#[test]
fn time_bounds_exclusive_start_inclusive_end() {
    let logs = logs(10); // timestamps 1000, 1010, ... 1090
    let f = FetchLogsFilter {
        start_ms: 1_020,
        end_ms: 1_050,
        ..filter()
    };
    assert_eq!(fetch(&logs, f), vec![3, 4, 5]);
    let f = FetchLogsFilter {
        end_ms: 1_000,
        ..filter()
    };
    assert_eq!(fetch(&logs, f), vec![0]);
}

#[test]
fn regex_and_max_lines() {
    let logs = logs(20);
    let f = FetchLogsFilter {
        regex: r"line 1\d".into(),
        ..filter()
    };
    assert_eq!(fetch(&logs, f), (10..20).collect::<Vec<_>>());
    let f = FetchLogsFilter {
        regex: r"line 1\d".into(),
        max_lines: 3,
        ..filter()
    };
    assert_eq!(fetch(&logs, f), vec![10, 11, 12]);
    let f = FetchLogsFilter {
        start_line: 15,
        max_lines: 2,
        ..filter()
    };
    assert_eq!(fetch(&logs, f), vec![15, 16]);
}

#[test]
fn source_filter() {
    let logs = logs(7);
    let f = LogFilter {
        source: Some(LogSource::Stderr),
        ..LogFilter::default()
    };
    let got: Vec<i64> = logs.fetch(&f).iter().map(|l| l.line_number).collect();
    assert_eq!(got, vec![0, 3, 6]);
    assert_eq!(LogSource::parse("build"), Some(LogSource::Build));
    assert_eq!(LogSource::parse("nope"), None);
}

#[test]
fn bad_filters_are_typed_errors() {
    let bad = |f: FetchLogsFilter| LogFilter::from_proto(Some(&f)).unwrap_err().to_string();
    assert!(
        bad(FetchLogsFilter {
            regex: "(".into(),
            ..filter()
        })
        .starts_with("filter.regex is invalid")
    );
    assert!(
        bad(FetchLogsFilter {
            regex: "a".repeat(2000),
            ..filter()
        })
        .contains("limit")
    );
    // A pattern that compiles to a huge program is refused by the size limit, not built.
    assert!(
        bad(FetchLogsFilter {
            regex: r"\w{1000}\w{1000}".into(),
            ..filter()
        })
        .starts_with("filter.regex")
    );
    assert!(
        bad(FetchLogsFilter {
            max_lines: -1,
            ..filter()
        })
        .contains("max_lines")
    );
    assert!(
        bad(FetchLogsFilter {
            start_ms: -1,
            ..filter()
        })
        .contains("start_ms")
    );
    assert!(
        bad(FetchLogsFilter {
            end_ms: -1,
            ..filter()
        })
        .contains("end_ms")
    );
}

#[test]
fn log_entry_proto() {
    let mut logs = TaskLogs::new(LogLimits::default());
    logs.push(5, LogSource::Build, "step 1".into());
    let entry = logs.fetch(&LogFilter::default())[0].to_proto();
    assert_eq!(
        (
            entry.source.as_str(),
            entry.data.as_str(),
            entry.line_number,
            entry.timestamp_ms
        ),
        ("build", "step 1", 0, 5)
    );
}
