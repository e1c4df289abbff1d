//! Entry points for the fuzz targets in `fuzz/` and their replay in `cargo test`. Each takes
//! arbitrary bytes and panics only when an invariant breaks: bad input must never panic.

mod reconcile;

pub use reconcile::fuzz_reconcile;

use std::io::Cursor;
use std::path::PathBuf;

use prost::Message;

use crate::core::testing::model::{Op, TASKS};
use crate::core::{CoreConfig, LineStart, LogFilter, LogLimits, LogSource, TaskSpec, WorkerCore};
use crate::proto;
use crate::shell::bundle;
use crate::shell::logs::file::{Head, Kind, Scan};
use crate::shell::logs::lines::{Lines, count_lines};
use crate::shell::logs::window::{LogWindow, Record};

/// Reads fuzz bytes as small integers; runs dry as zeros.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn i64(&mut self) -> i64 {
        let mut b = [0u8; 8];
        for byte in &mut b {
            *byte = self.u8();
        }
        i64::from_le_bytes(b)
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn decode_op(b: &mut Bytes<'_>) -> Op {
    let task = usize::from(b.u8()) % TASKS;
    match b.u8() % 12 {
        0 => Op::Submit {
            task,
            attempt: i32::from(b.u8() % 3),
            ports: usize::from(b.u8() % 3),
            timeout_s: i32::from(b.u8() % 4),
            bundle: b.u8() & 1 == 1,
        },
        1 => Op::Kill {
            task,
            term_ms: i64::from(b.u16() % 3000),
        },
        2 => Op::KillAll,
        3 => Op::Advance {
            ms: u64::from(b.u16() % 8000),
        },
        4 => Op::Answer {
            pick: usize::from(b.u8()),
            outcome: b.u8() % 6,
        },
        5 => Op::Exit {
            pick: usize::from(b.u8()),
            code: i32::from(b.u8() % 3),
            signal: b.u8() & 1 == 1,
            oom: b.u8().is_multiple_of(10),
        },
        6 => Op::Stats {
            pick: usize::from(b.u8()),
            memory_mb: i64::from(b.u16()),
        },
        7 => Op::Lost {
            pick: usize::from(b.u8()),
        },
        8 => Op::Report {
            pick: usize::from(b.u8()),
            ack: !b.u8().is_multiple_of(3),
        },
        9 => Op::Register {
            accept: b.u8() & 1 == 1,
            reset: b.u8().is_multiple_of(7),
        },
        10 => Op::Disk {
            over: b.u8() & 1 == 1,
        },
        _ => Op::Stray {
            task,
            attempt: i32::from(b.u8() % 3),
            kind: b.u8() % 8,
        },
    }
}

/// The core driven by an arbitrary sequence of commands, answers and time steps; every core
/// invariant is checked after each step and at convergence.
pub fn fuzz_core(data: &[u8]) {
    let mut bytes = Bytes(data);
    let mut ops = Vec::new();
    while !bytes.is_empty() && ops.len() < 256 {
        ops.push(decode_op(&mut bytes));
    }
    crate::core::testing::model::run(&ops);
}

/// Arbitrary bytes as a RunTaskRequest: decoding, validation and submit. Whatever passes
/// validation is safe: its paths stay under the cache dir and the core keeps its invariants.
pub fn fuzz_decode(data: &[u8]) {
    if let Ok(request) = proto::worker::RunTaskRequest::decode(data) {
        check_submission(&request);
    }
}

/// A decoded request through validation and submit: whatever passes is safe.
fn check_submission(request: &proto::worker::RunTaskRequest) {
    let Ok(spec) = TaskSpec::from_request(request) else {
        return;
    };
    let key = crate::core::AttemptKey {
        task_id: spec.task_id.clone(),
        attempt_id: spec.attempt_id,
    };
    let workdir = key.workdir();
    assert!(workdir.starts_with("tasks/"), "{workdir}");
    assert_eq!(
        workdir.matches('/').count(),
        1,
        "one component under tasks/: {workdir}"
    );
    assert!(!key.file_stem().starts_with('.'), "{workdir}");
    let mut core = WorkerCore::new(CoreConfig::default(), 0);
    let _ = core.submit(1, spec.clone());
    let _ = core.submit(2, spec);
    core.check_invariants().expect("invariants after submit");
    while let Some(effect) = core.poll_effect() {
        let _ = effect.to_string();
    }
}

/// What a Connect request may carry besides its body, picked by the fuzzer's first bytes.
const CONTENT_TYPES: [Option<&str>; 6] = [
    Some("application/proto"),
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("application/grpc"),
    Some("text/plain"),
    None,
];
const ENCODINGS: [Option<&str>; 4] = [None, Some("identity"), Some("gzip"), Some("br")];
const VERSIONS: [Option<&str>; 3] = [None, Some("1"), Some("2")];
const TIMEOUTS: [Option<&str>; 4] = [None, Some("1500"), Some("12345678901"), Some("-1")];

/// Arbitrary headers and body as a Connect RunTask: the server's decoding never panics, refuses
/// with the codes the spec gives, and what it accepts re-encodes to the same message in its codec
/// and then passes through validation like any submission.
pub fn fuzz_connect(data: &[u8]) {
    use crate::shell::connect::codec::{self, Codec};
    use tonic::Code;
    let mut b = Bytes(data);
    let pick = |b: &mut Bytes<'_>, n: usize| usize::from(b.u8()) % n;
    let mut headers = http::HeaderMap::new();
    let mut set = |name: &'static str, value: Option<&str>| {
        if let Some(v) = value {
            headers.insert(name, http::HeaderValue::from_str(v).expect("ascii"));
        }
    };
    set("content-type", CONTENT_TYPES[pick(&mut b, 6)]);
    let encoding = ENCODINGS[pick(&mut b, 4)];
    set("content-encoding", encoding);
    set(codec::PROTOCOL_VERSION_HEADER, VERSIONS[pick(&mut b, 3)]);
    set(codec::TIMEOUT_HEADER, TIMEOUTS[pick(&mut b, 4)]);
    let compress_body = b.u8() & 1 == 1;
    let raw = b.take(usize::MAX);
    let body = if encoding == Some("gzip") && compress_body {
        codec::gzip(raw)
    } else {
        raw.to_vec()
    };
    let _ = codec::timeout(&headers);
    let Some(codec) = Codec::of(&headers) else {
        return;
    };
    match codec::decode_request::<proto::worker::RunTaskRequest>(codec, &headers, body.into()) {
        Ok(request) => {
            let again: proto::worker::RunTaskRequest = codec
                .decode(&codec.encode(&request))
                .expect("what the server decoded re-decodes");
            assert_eq!(again, request, "{codec:?} round trip");
            check_submission(&request);
        }
        Err(status) => {
            let allowed = [
                Code::InvalidArgument,
                Code::Unimplemented,
                Code::ResourceExhausted,
            ];
            assert!(allowed.contains(&status.code()), "{status:?}");
            let back = codec::parse_error(
                codec::http_status(status.code()),
                &codec::error_body(&status),
            );
            assert_eq!(
                (back.code(), back.message()),
                (status.code(), status.message())
            );
        }
    }
}

/// Arbitrary records (raw regions and verbatim lines) into a small `LogWindow` and, encoded as
/// the log store writes them, into a file image. Read back, the file holds every line once,
/// numbered without a gap; a file cut anywhere reads as a prefix of it; and any filter over the
/// window selects what it selects over the same lines read from the file.
pub fn fuzz_logs(data: &[u8]) {
    let mut b = Bytes(data);
    let limits = LogLimits {
        lines_max: usize::from(b.u8() % 64) + 1,
        bytes_max: usize::from(b.u16()) + 1,
    };
    let regex_len = usize::from(b.u8() % 16);
    let wire = proto::worker::FetchLogsFilter {
        regex: String::from_utf8_lossy(b.take(regex_len)).into_owned(),
        start_line: b.i64(),
        start_ms: i64::from(b.u16()) - 10,
        end_ms: i64::from(b.u16()) - 10,
        max_lines: i64::from(b.u8()) - 8,
    };
    let cut = usize::from(b.u16());
    let mut window = LogWindow::starting_at(limits, 0);
    let mut file = Vec::new();
    let mut ts = 0i64;
    while !b.is_empty() {
        ts += i64::from(b.u8() % 4);
        let source = LogSource::ALL[usize::from(b.u8() % 4)];
        let kind = if b.u8() % 2 == 0 {
            Kind::Region
        } else {
            Kind::Text
        };
        let len = usize::from(b.u8() % 64);
        let data = b.take(len);
        let count = match kind {
            Kind::Region => Lines::new(data).count() as u64,
            Kind::Text => 1,
        };
        assert_eq!(count_lines(data), Lines::new(data).count() as u64);
        if count == 0 {
            continue;
        }
        let head = Head {
            kind,
            first: window.next_line_number(),
            timestamp_ms: ts,
            source,
            count,
        };
        let record = Record::encode(head, data, window.buffer());
        file.extend_from_slice(&record.bytes);
        window.push(record);
    }
    let (on_disk, whole) = read_log(&file);
    assert_eq!(whole, file.len() as u64);
    assert!(on_disk.iter().zip(0..).all(|(l, n)| l.line_number == n));
    assert_eq!(on_disk.len() as i64, window.next_line_number());
    let (prefix, whole) = read_log(&file[..cut.min(file.len())]);
    assert!(whole <= cut as u64 && on_disk.starts_with(&prefix));
    let first = window.first_line_number();
    // Only the newest record may take the window past a cap.
    assert!(
        window.records() == 1
            || (window.line_count() <= limits.lines_max as u64
                && window.bytes() <= limits.bytes_max)
    );
    assert_eq!(on_disk.len() as i64 - first, window.line_count() as i64);
    let Ok(filter) = LogFilter::from_proto(Some(&wire)) else {
        return;
    };
    let got = window.fetch(&filter);
    let expected = filter.select(on_disk.iter().filter(|l| l.line_number >= first));
    assert_eq!(got, expected);
    assert!(filter.max_lines.is_none_or(|m| got.len() <= m));
    if let LineStart::LastN(n) = filter.start {
        assert!(got.len() as u64 <= n);
    }
}

/// Every line of a log file image, and where its last whole record ends.
fn read_log(file: &[u8]) -> (Vec<crate::core::LogLine>, u64) {
    let mut scan = Scan::new(Cursor::new(file), file.len() as u64);
    let mut data = Vec::new();
    let mut lines = Vec::new();
    while let Some(head) = scan.next(&mut data, |_| true).expect("reading memory") {
        lines.extend(head.lines(&data));
    }
    (lines, scan.whole_bytes())
}

/// Arbitrary bytes as a bundle zip: extraction never writes outside its directory and refuses
/// what is past the caps.
pub fn fuzz_bundle(data: &[u8]) {
    let root = scratch_dir();
    let dest = root.join("work");
    std::fs::create_dir_all(&dest).expect("scratch dir");
    let _ = bundle::extract(Cursor::new(data), &dest);
    let outside: Vec<_> = std::fs::read_dir(&root)
        .expect("scratch dir")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "work")
        .collect();
    let _ = std::fs::remove_dir_all(&root);
    assert!(
        outside.is_empty(),
        "extraction wrote outside the workdir: {outside:?}"
    );
}

fn scratch_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("iris-fuzz-bundle-{}-{n}", std::process::id()))
}
