//! The log store. Per attempt: a bounded in-memory window (`TaskLogs`) for the common reads, and
//! the full log on disk, capped and rotated once (`attempt-N.log.1`, then `attempt-N.log`), for
//! everything else. A reader that asks for lines the window no longer holds is served from disk,
//! so nothing within the disk cap is lost however slowly it reads, or across a worker restart.
//!
//! Log volume never passes through the driver: runtimes append here directly, one lock per
//! attempt. Each batch of lines (a chunk read from a pipe, a line from the engine) is encoded into
//! one buffer and written to the file with one `write` before the lock is released, so a line
//! that can be served is already in the page cache: a `kill -9` of the worker loses nothing it
//! has read (no user-space buffer holds lines between batches; no fsync is needed for that).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::core::{AttemptKey, LineStart, LogFilter, LogLimits, LogLine, LogSource, TaskLogs};
use crate::shell::output_mark::OutputMark;

/// Longest line kept; longer output is split into several lines.
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// The log store's directory in a worker's cache dir.
pub const LOGS_DIR: &str = "logs";
/// Most bytes of log data in one FetchTaskLogs response (gRPC messages are capped at 4 MiB).
pub const RESPONSE_BYTES_MAX: usize = 3 << 20;

#[derive(Clone, Debug)]
pub struct LogStoreConfig {
    pub root: PathBuf,
    pub memory: LogLimits,
    /// Disk kept per attempt, both segments together.
    pub disk_bytes_max: u64,
    /// Counts every byte of output taken in (exported as a metric).
    pub ingested: prometheus_client::metrics::counter::Counter,
    /// The planted `BufferedLogs` bug (simulator only; always false in a real build).
    pub planted_buffering: bool,
}

/// What a planted buffering log holds back before it writes (as the old `BufWriter` did).
const PLANTED_BUFFER_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct LogStore {
    config: Arc<LogStoreConfig>,
    attempts: Arc<Mutex<BTreeMap<AttemptKey, AttemptLogHandle>>>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("root", &self.config.root)
            .finish_non_exhaustive()
    }
}

pub type AttemptLogHandle = Arc<Mutex<AttemptLog>>;

pub struct AttemptLog {
    memory: TaskLogs,
    path: PathBuf,
    writer: Option<File>,
    /// The batch being encoded; written out and emptied before the batch's lock is released.
    pending: Vec<u8>,
    /// The last timestamp encoded, and its decimal form.
    stamp: (i64, String),
    /// The file was opened (or opening failed): never try again.
    opened: bool,
    segment_bytes: u64,
    segment_bytes_max: u64,
    bytes_ingested: u64,
    /// Bytes of the current batch, not yet in the metric.
    uncounted_bytes: u64,
    ingested: prometheus_client::metrics::counter::Counter,
    disk_error: Option<String>,
    /// Where the container's output left off (see `output_mark`).
    output_mark: Option<OutputMark>,
    planted_buffering: bool,
}

/// The planted buffering bug flushes in a destructor, as `BufWriter` does: only a crash as
/// harsh as `kill -9` (see `LogStore::forget_on_crash`) shows what it loses.
#[cfg(feature = "planted")]
impl Drop for AttemptLog {
    fn drop(&mut self) {
        self.write_pending(true);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a log lock leaves plain data behind; keep serving it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LogStore {
    pub fn new(config: LogStoreConfig) -> LogStore {
        LogStore {
            config: Arc::new(config),
            attempts: Arc::default(),
        }
    }

    fn path_of(&self, key: &AttemptKey) -> PathBuf {
        segment_path(&self.config.root, key)
    }

    /// The attempt's log, created on first use.
    pub fn open(&self, key: &AttemptKey) -> AttemptLogHandle {
        let mut attempts = lock(&self.attempts);
        attempts
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Mutex::new(AttemptLog::create(
                    &self.config,
                    self.path_of(key),
                )))
            })
            .clone()
    }

    pub fn get(&self, key: &AttemptKey) -> Option<AttemptLogHandle> {
        lock(&self.attempts).get(key).cloned()
    }

    pub fn append(&self, key: &AttemptKey, timestamp_ms: i64, source: LogSource, data: &str) {
        lock(&self.open(key)).append(timestamp_ms, source, data);
    }

    /// Lines of an attempt matching `filter`, at most `RESPONSE_BYTES_MAX` of data. An attempt
    /// with no log yet (or from before a restart) is read from disk.
    pub fn fetch(&self, key: &AttemptKey, filter: &LogFilter) -> io::Result<Vec<LogLine>> {
        match self.get(key) {
            Some(handle) => lock(&handle).fetch(filter),
            None => scan_disk(&self.path_of(key), filter),
        }
    }

    /// Closes an attempt's file and drops it from memory (its disk log stays readable).
    pub fn close(&self, key: &AttemptKey) {
        if let Some(handle) = lock(&self.attempts).remove(key) {
            let mut log = lock(&handle);
            log.write_pending(true);
            log.writer = None;
        }
    }

    pub fn bytes_ingested(&self, key: &AttemptKey) -> u64 {
        self.get(key).map_or(0, |h| lock(&h).bytes_ingested)
    }

    /// The attempts whose logs are open.
    pub fn attempts(&self) -> Vec<AttemptKey> {
        lock(&self.attempts).keys().cloned().collect()
    }

    /// For simulators: makes a crash as harsh as `kill -9`. No attempt log is ever dropped after
    /// this, so no destructor gets to write out what a user-space buffer still holds.
    pub fn forget_on_crash(&self) {
        for handle in lock(&self.attempts).values() {
            std::mem::forget(handle.clone());
        }
    }
}

impl AttemptLog {
    /// The file is opened on the first line, so an attempt that prints nothing costs no file. A
    /// log left on disk by an earlier run of the worker (an adopted attempt) is continued: line
    /// numbers carry on after its last line.
    fn create(config: &LogStoreConfig, path: PathBuf) -> AttemptLog {
        let (last, output_mark) = match tail_records(&path) {
            tail if tail.is_empty() => tail_records(&rotated(&path)),
            tail => tail,
        }
        .summary();
        let next = last.map_or(0, |n| n + 1);
        AttemptLog {
            output_mark,
            memory: TaskLogs::starting_at(config.memory, next),
            path,
            writer: None,
            pending: Vec::new(),
            stamp: (i64::MIN, String::new()),
            opened: false,
            segment_bytes: 0,
            segment_bytes_max: (config.disk_bytes_max / 2).max(1),
            bytes_ingested: 0,
            uncounted_bytes: 0,
            ingested: config.ingested.clone(),
            disk_error: None,
            planted_buffering: config.planted_buffering,
        }
    }

    fn open_file(&mut self) -> io::Result<()> {
        self.opened = true;
        if let Some(parent) = self.path.parent() {
            fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.segment_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.writer = Some(file);
        Ok(())
    }

    pub fn output_mark(&self) -> Option<OutputMark> {
        self.output_mark
    }

    /// Appends one line and writes it through to the file.
    pub fn append(&mut self, timestamp_ms: i64, source: LogSource, data: &str) {
        self.push(timestamp_ms, source, data);
        self.write_pending(false);
    }

    /// Appends lines sharing a source and timestamp; one write for all of them.
    pub fn append_batch(
        &mut self,
        timestamp_ms: i64,
        source: LogSource,
        lines: impl IntoIterator<Item = impl AsRef<str>>,
    ) {
        for line in lines {
            self.push(timestamp_ms, source, line.as_ref());
        }
        self.write_pending(false);
    }

    /// Writes the encoded batch out (on failure the lines stay in memory and the reason is
    /// kept) and counts its bytes in the metric, once per batch. `force` only matters to the
    /// planted buffering bug, which otherwise holds lines back.
    fn write_pending(&mut self, force: bool) {
        self.ingested
            .inc_by(std::mem::take(&mut self.uncounted_bytes));
        if self.pending.is_empty() {
            return;
        }
        if self.planted_buffering && !force && self.pending.len() < PLANTED_BUFFER_BYTES {
            return;
        }
        if let Some(file) = self.writer.as_mut()
            && let Err(e) = file.write_all(&self.pending)
        {
            self.disk_error = Some(e.to_string());
        }
        self.pending.clear();
    }

    fn push(&mut self, timestamp_ms: i64, source: LogSource, data: &str) {
        if OutputMark::counts(source) {
            self.output_mark = Some(OutputMark::after(self.output_mark, timestamp_ms));
        }
        self.bytes_ingested += data.len() as u64;
        self.uncounted_bytes += data.len() as u64;
        let line_number = self.memory.push_str(timestamp_ms, source, data);
        if let Err(e) = self.write_record(line_number, timestamp_ms, source, data) {
            // The in-memory window still has the line; remember why disk has not.
            self.disk_error = Some(e.to_string());
        }
    }

    fn write_record(
        &mut self,
        line_number: i64,
        timestamp_ms: i64,
        source: LogSource,
        data: &str,
    ) -> io::Result<()> {
        if !self.opened {
            self.open_file()?;
        }
        // An upper bound of the record's size is enough to decide on rotation.
        let len = data.len() as u64 * 2 + 48;
        if self.segment_bytes + len > self.segment_bytes_max && self.segment_bytes > 0 {
            self.rotate()?;
        }
        if self.writer.is_none() {
            return Ok(());
        }
        if self.stamp.0 != timestamp_ms {
            // Lines of a batch share their timestamp: format it once.
            self.stamp = (timestamp_ms, timestamp_ms.to_string());
        }
        let written = encode(&mut self.pending, line_number, &self.stamp.1, source, data);
        self.segment_bytes += written;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        // What this segment's batch holds so far belongs to it.
        self.write_pending(true);
        self.writer = None;
        fs::rename(&self.path, rotated(&self.path))?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.writer = Some(file);
        self.segment_bytes = 0;
        Ok(())
    }

    pub fn next_line_number(&self) -> i64 {
        self.memory.next_line_number()
    }

    fn fetch(&mut self, filter: &LogFilter) -> io::Result<Vec<LogLine>> {
        let from_memory = self.memory.fetch(filter);
        if self.memory_answers(filter, &from_memory) {
            return Ok(within_budget(from_memory, filter.start));
        }
        scan_disk(&self.path, filter)
    }

    /// Whether the window holds every line the filter could select.
    fn memory_answers(&self, filter: &LogFilter, found: &[LogLine]) -> bool {
        let first = self.memory.first_line_number();
        // Nothing evicted yet, or no disk copy to read: memory is all there is.
        if first == 0 || self.writer.is_none() {
            return true;
        }
        match filter.start {
            LineStart::From(n) => n >= first,
            LineStart::LastN(n) => {
                let wanted = n.min(filter.max_lines.map_or(u64::MAX, |m| m as u64));
                found.len() as u64 >= wanted
            }
            LineStart::Beginning => false,
        }
    }
}

/// The last complete record of a log file, read from its tail.
/// How much of a log's end is read back when an attempt's log is continued: enough for the
/// newest record and, but for a burst of more than this in one millisecond, every output line
/// sharing its timestamp.
const TAIL_BYTES_MAX: u64 = 256 * 1024 + 2 * LINE_BYTES_MAX as u64;

/// The records at the end of a log segment (none if there is no file).
struct Tail(Vec<LogLine>);

fn tail_records(path: &Path) -> Tail {
    use std::io::{Read, Seek, SeekFrom};
    let read = || -> Option<Vec<u8>> {
        let mut file = File::open(path).ok()?;
        let len = file.metadata().ok()?.len();
        file.seek(SeekFrom::Start(len - len.min(TAIL_BYTES_MAX)))
            .ok()?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail).ok()?;
        Some(tail)
    };
    let text = read().unwrap_or_default();
    // The first line of a window that starts mid-file may be partial; `decode` drops it.
    Tail(
        String::from_utf8_lossy(&text)
            .lines()
            .filter_map(decode)
            .collect(),
    )
}

impl Tail {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The newest line number, and the output mark, of these records.
    fn summary(self) -> (Option<i64>, Option<OutputMark>) {
        let last = self.0.last().map(|l| l.line_number);
        let mark = self
            .0
            .iter()
            .filter(|l| OutputMark::counts(l.source))
            .fold(None, |mark, l| {
                Some(OutputMark::after(mark, l.timestamp_ms))
            });
        (last, mark)
    }
}

/// The current log segment of an attempt under a log store's root.
fn segment_path(root: &Path, key: &AttemptKey) -> PathBuf {
    root.join(format!("{}.log", key.file_stem()))
}

/// Both log segments of an attempt (current, rotated) in a worker's cache dir: where a log
/// store rooted at `<cache>/LOGS_DIR` keeps them.
pub fn segment_paths(cache_dir: &Path, key: &AttemptKey) -> [PathBuf; 2] {
    let current = segment_path(&cache_dir.join(LOGS_DIR), key);
    let old = rotated(&current);
    [current, old]
}

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Appends one record, `number TAB timestamp TAB source TAB data NL`, with `\\` and newlines in
/// the data escaped; returns its length. No allocation: it runs once per line of output.
fn encode(
    out: &mut Vec<u8>,
    line_number: i64,
    timestamp_ms: &str,
    source: LogSource,
    data: &str,
) -> u64 {
    let start = out.len();
    out.extend_from_slice(itoa::Buffer::new().format(line_number).as_bytes());
    out.push(b'\t');
    out.extend_from_slice(timestamp_ms.as_bytes());
    out.push(b'\t');
    out.extend_from_slice(source.as_str().as_bytes());
    out.push(b'\t');
    let bytes = data.as_bytes();
    if memchr::memchr2(b'\\', b'\n', bytes).is_some() {
        for &b in bytes {
            match b {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                _ => out.push(b),
            }
        }
    } else {
        out.extend_from_slice(bytes);
    }
    out.push(b'\n');
    (out.len() - start) as u64
}

fn decode(record: &str) -> Option<LogLine> {
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

/// Reads both segments in order and applies the filter within the response budget.
fn scan_disk(path: &Path, filter: &LogFilter) -> io::Result<Vec<LogLine>> {
    let from = match filter.start {
        LineStart::From(n) => n,
        _ => i64::MIN,
    };
    let max = filter.max_lines.unwrap_or(usize::MAX);
    let tail = match filter.start {
        LineStart::LastN(n) => Some(usize::try_from(n).unwrap_or(usize::MAX).min(max)),
        _ => None,
    };
    let mut out: VecDeque<LogLine> = VecDeque::new();
    let mut bytes = 0usize;
    for segment in [rotated(path), path.to_path_buf()] {
        let file = match File::open(&segment) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for record in BufReader::new(file).split(b'\n') {
            let record = record?;
            let Some(line) = decode(&String::from_utf8_lossy(&record)) else {
                continue;
            };
            if line.line_number < from || !filter.matches(&line) {
                continue;
            }
            bytes += line.data.len();
            out.push_back(line);
            match tail {
                Some(keep) => {
                    while out.len() > keep || (bytes > RESPONSE_BYTES_MAX && out.len() > 1) {
                        bytes -= out.pop_front().map_or(0, |l| l.data.len());
                    }
                }
                None if out.len() >= max || bytes >= RESPONSE_BYTES_MAX => {
                    return Ok(out.into());
                }
                None => {}
            }
        }
    }
    Ok(out.into())
}

/// Trims a memory answer to the response budget: the oldest lines go for a tail, else the newest.
fn within_budget(mut lines: Vec<LogLine>, start: LineStart) -> Vec<LogLine> {
    let total: usize = lines.iter().map(|l| l.data.len()).sum();
    if total <= RESPONSE_BYTES_MAX {
        return lines;
    }
    let mut bytes = 0;
    match start {
        LineStart::LastN(_) => {
            let keep = lines
                .iter()
                .rev()
                .take_while(|l| {
                    bytes += l.data.len();
                    bytes <= RESPONSE_BYTES_MAX
                })
                .count()
                .max(1);
            lines.drain(..lines.len() - keep);
        }
        _ => {
            let keep = lines
                .iter()
                .take_while(|l| {
                    bytes += l.data.len();
                    bytes <= RESPONSE_BYTES_MAX
                })
                .count()
                .max(1);
            lines.truncate(keep);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::TaskId;

    fn store(dir: &Path, lines_max: usize, disk: u64) -> LogStore {
        LogStore::new(LogStoreConfig {
            root: dir.to_path_buf(),
            memory: LogLimits {
                lines_max,
                bytes_max: 1 << 20,
            },
            disk_bytes_max: disk,
            ingested: Default::default(),
            planted_buffering: false,
        })
    }

    fn key() -> AttemptKey {
        AttemptKey {
            task_id: TaskId::new("job/task-0").unwrap(),
            attempt_id: 0,
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("iris-logstore-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn evicted_lines_are_served_from_disk() {
        let dir = tmp("evict");
        let logs = store(&dir, 10, 1 << 30);
        for i in 0..1000 {
            logs.append(
                &key(),
                i,
                LogSource::Stdout,
                &format!("line {i}\twith tab \\ and \n"),
            );
        }
        let filter = LogFilter {
            start: LineStart::From(5),
            max_lines: Some(3),
            ..LogFilter::default()
        };
        let got = logs.fetch(&key(), &filter).unwrap();
        assert_eq!(
            got.iter().map(|l| l.line_number).collect::<Vec<_>>(),
            vec![5, 6, 7]
        );
        assert_eq!(got[0].data, "line 5\twith tab \\ and \n");
        let all = logs.fetch(&key(), &LogFilter::default()).unwrap();
        assert_eq!(all.len(), 1000);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn disk_is_capped_by_rotation() {
        let dir = tmp("rotate");
        let logs = store(&dir, 10, 20_000);
        for i in 0..5000 {
            logs.append(&key(), i, LogSource::Stdout, "0123456789");
        }
        logs.close(&key());
        let on_disk: u64 = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(on_disk <= 20_000, "{on_disk}");
        let all = logs.fetch(&key(), &LogFilter::default()).unwrap();
        assert_eq!(all.last().unwrap().line_number, 4999);
        let _ = fs::remove_dir_all(&dir);
    }
}
