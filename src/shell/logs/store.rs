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
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::core::{AttemptKey, LineStart, LogFilter, LogLimits, LogLine, LogSource};
use crate::shell::logs::file::{Head, Kind, Scan};
use crate::shell::logs::lines::count_lines;
use crate::shell::logs::output_mark::OutputMark;
use crate::shell::logs::window::{LogWindow, Record};

pub use crate::shell::logs::lines::LINE_BYTES_MAX;

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
    memory: LogWindow,
    path: PathBuf,
    writer: Option<File>,
    /// Records held back by the planted buffering bug; empty otherwise.
    pending: Vec<u8>,
    /// The file was opened (or opening failed): never try again.
    opened: bool,
    /// Where the file's last whole record ends, when it was continued after a restart: anything
    /// after it is a record a crash cut short, and goes before the next one is written.
    whole_bytes: Option<u64>,
    segment_bytes: u64,
    segment_bytes_max: u64,
    bytes_ingested: u64,
    ingested: prometheus_client::metrics::counter::Counter,
    disk_error: Option<String>,
    /// Where the container's output left off (see `output_mark`).
    output_mark: Option<OutputMark>,
    /// The file held lines of an earlier run of the worker (an adopted attempt): they are on
    /// disk only, so the window cannot answer for them even before this run writes a line.
    continued: bool,
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
        let current = Summary::of(&path);
        let whole_bytes = current.whole_bytes;
        let summary = match current.next_line {
            None => Summary::of(&rotated(&path)),
            Some(_) => current,
        };
        AttemptLog {
            output_mark: summary.output_mark,
            continued: summary.next_line.is_some_and(|next| next > 0),
            memory: LogWindow::starting_at(config.memory, summary.next_line.unwrap_or(0)),
            path,
            writer: None,
            pending: Vec::new(),
            opened: false,
            whole_bytes,
            segment_bytes: 0,
            segment_bytes_max: (config.disk_bytes_max / 2).max(1),
            bytes_ingested: 0,
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
        let mut len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if let Some(whole) = self.whole_bytes.filter(|whole| *whole < len) {
            // A record a crash cut short: the next one must not be read as its rest.
            file.set_len(whole)?;
            len = whole;
        }
        self.segment_bytes = len;
        self.writer = Some(file);
        Ok(())
    }

    pub fn output_mark(&self) -> Option<OutputMark> {
        self.output_mark
    }

    /// The newest `n` lines of `source` still in memory (never a disk scan: callers are on the
    /// way to reporting an exit).
    pub fn recent(&self, source: LogSource, n: usize) -> Vec<String> {
        let filter = LogFilter {
            start: LineStart::LastN(n as u64),
            source: Some(source),
            ..LogFilter::default()
        };
        self.memory
            .fetch(&filter)
            .into_iter()
            .map(|line| line.data)
            .collect()
    }

    /// Appends one line, verbatim (newlines included), and writes it through to the file.
    pub fn append(&mut self, timestamp_ms: i64, source: LogSource, data: &str) {
        self.append_record(Kind::Text, timestamp_ms, source, data.as_bytes(), 1);
    }

    /// Appends a region of raw output (its lines as `lines::Lines` splits them), stamped
    /// `timestamp_ms`, with one write. Invalid UTF-8 is kept as it came and shown lossily.
    pub fn append_region(&mut self, timestamp_ms: i64, source: LogSource, region: &[u8]) {
        let count = count_lines(region);
        if count > 0 {
            self.append_record(Kind::Region, timestamp_ms, source, region, count);
        }
    }

    fn append_record(
        &mut self,
        kind: Kind,
        timestamp_ms: i64,
        source: LogSource,
        data: &[u8],
        count: u64,
    ) {
        if OutputMark::counts(source) {
            self.output_mark = Some(OutputMark::after_lines(
                self.output_mark,
                timestamp_ms,
                count,
            ));
        }
        self.bytes_ingested += data.len() as u64;
        self.ingested.inc_by(data.len() as u64);
        let head = Head {
            kind,
            first: self.memory.next_line_number(),
            timestamp_ms,
            source,
            count,
        };
        let record = Record::encode(head, data, self.memory.buffer());
        if let Err(e) = self.write_record(&record.bytes) {
            // The in-memory window still has the lines; remember why disk has not.
            self.disk_error = Some(e.to_string());
        }
        self.memory.push(record);
    }

    /// One `write` per record: once it returns, the lines are in the page cache and survive a
    /// crash of the worker.
    fn write_record(&mut self, record: &[u8]) -> io::Result<()> {
        if !self.opened {
            self.open_file()?;
        }
        let len = record.len() as u64;
        if self.segment_bytes + len > self.segment_bytes_max && self.segment_bytes > 0 {
            self.rotate()?;
        }
        let Some(file) = self.writer.as_mut() else {
            return Ok(());
        };
        self.segment_bytes += len;
        if self.planted_buffering {
            self.pending.extend_from_slice(record);
            self.write_pending(false);
            return Ok(());
        }
        file.write_all(record)
    }

    /// Writes out what the planted buffering bug holds back (on failure the lines stay in memory
    /// and the reason is kept). `force` writes however little is held.
    fn write_pending(&mut self, force: bool) {
        if self.pending.is_empty() || (!force && self.pending.len() < PLANTED_BUFFER_BYTES) {
            return;
        }
        if let Some(file) = self.writer.as_mut()
            && let Err(e) = file.write_all(&self.pending)
        {
            self.disk_error = Some(e.to_string());
        }
        self.pending.clear();
    }

    fn rotate(&mut self) -> io::Result<()> {
        // What this segment's records hold so far belongs to it.
        self.write_pending(true);
        self.writer = None;
        // Rename onto a free name: renaming over the old segment makes ext4 (auto_da_alloc) write
        // the whole new segment out before the rename returns, stalling ingest on the disk.
        let old = rotated(&self.path);
        match fs::remove_file(&old) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::rename(&self.path, old)?;
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
        // Nothing evicted yet, or no disk copy to read: memory is all there is. A continued log
        // has a disk copy before its first new line opens the writer.
        if first == 0 || (self.writer.is_none() && !self.continued) {
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

/// What a log segment left on disk says about how to continue it.
#[derive(Debug, Default)]
struct Summary {
    /// The number after its last line (None if it holds no record).
    next_line: Option<i64>,
    output_mark: Option<OutputMark>,
    /// Where its last whole record ends (None if there is no file).
    whole_bytes: Option<u64>,
}

impl Summary {
    /// Reads the segment's record headers (the data is skipped, not read).
    fn of(path: &Path) -> Summary {
        let Ok(file) = File::open(path) else {
            return Summary::default();
        };
        let len = file.metadata().map_or(0, |m| m.len());
        let mut scan = Scan::new(BufReader::new(file), len);
        let mut summary = Summary::default();
        let mut data = Vec::new();
        while let Ok(Some(head)) = scan.next(&mut data, |_| false) {
            summary.next_line = Some(head.end());
            if OutputMark::counts(head.source) {
                summary.output_mark = Some(OutputMark::after_lines(
                    summary.output_mark,
                    head.timestamp_ms,
                    head.count,
                ));
            }
        }
        summary.whole_bytes = Some(scan.whole_bytes());
        summary
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

/// Where the 2026-06 log pusher keeps the next line to push of an attempt (beside its log, so
/// retention and the start-up sweep treat it as the log's).
pub fn pushed_path(cache_dir: &Path, key: &AttemptKey) -> PathBuf {
    let mut name = segment_path(&cache_dir.join(LOGS_DIR), key).into_os_string();
    name.push(".pushed");
    PathBuf::from(name)
}

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Reads both segments in order and applies the filter within the response budget.
fn scan_disk(path: &Path, filter: &LogFilter) -> io::Result<Vec<LogLine>> {
    let from = filter.first_line();
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
        let len = file.metadata()?.len();
        let mut scan = Scan::new(BufReader::new(file), len);
        let mut data = Vec::new();
        // Records wholly before the start are seeked over: a follower far behind a flood does
        // not read the log up to where it is.
        while let Some(head) = scan.next(&mut data, |head| head.end() > from)? {
            if head.end() <= from {
                continue;
            }
            for line in head.lines(&data) {
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
    fn numbered(logs: &LogStore) -> Vec<(i64, String)> {
        logs.fetch(&key(), &LogFilter::default())
            .unwrap()
            .into_iter()
            .map(|l| (l.line_number, l.data))
            .collect()
    }

    #[test]
    fn a_record_cut_short_by_a_crash_is_dropped_and_numbering_goes_on() {
        let dir = tmp("torn");
        let logs = store(&dir, 10, 1 << 30);
        logs.append(&key(), 1, LogSource::Stdout, "zero");
        lock(&logs.open(&key())).append_region(2, LogSource::Stdout, b"one\ntwo\n");
        logs.close(&key());
        let path = segment_path(&dir, &key());
        let whole = fs::read(&path).unwrap();
        // What a kill -9 in the middle of a write could leave: a header and part of its data.
        let mut torn = whole.clone();
        torn.extend_from_slice(b"#L 3 3 stdout 2 14\nthree\nfo");
        fs::write(&path, &torn).unwrap();

        let restarted = store(&dir, 10, 1 << 30);
        assert_eq!(restarted.open(&key()).lock().unwrap().next_line_number(), 3);
        restarted.append(&key(), 4, LogSource::Stdout, "three again");
        let expected = [(0, "zero"), (1, "one"), (2, "two"), (3, "three again")];
        let expected: Vec<(i64, String)> =
            expected.iter().map(|(n, t)| (*n, t.to_string())).collect();
        assert_eq!(numbered(&restarted), expected);
        restarted.close(&key());
        assert_eq!(numbered(&store(&dir, 10, 1 << 30)), expected);
        let _ = fs::remove_dir_all(&dir);
    }

    /// An adopted container that prints nothing after the restart (it sleeps): the lines of
    /// the worker's earlier run are served from disk, with their numbers.
    #[test]
    fn a_continued_log_serves_its_earlier_lines_before_any_new_one() {
        let dir = tmp("continued-quiet");
        let logs = store(&dir, 10, 1 << 30);
        for i in 0..5 {
            lock(&logs.open(&key())).append_region(
                i,
                LogSource::Stdout,
                format!("line {i}\n").as_bytes(),
            );
        }
        let expected = numbered(&logs);
        assert_eq!(expected.len(), 5);
        logs.forget_on_crash();
        let restarted = store(&dir, 10, 1 << 30);
        restarted.open(&key());
        assert_eq!(numbered(&restarted), expected);
        let last_two = LogFilter {
            start: LineStart::LastN(2),
            ..LogFilter::default()
        };
        let tail: Vec<i64> = restarted
            .fetch(&key(), &last_two)
            .unwrap()
            .iter()
            .map(|l| l.line_number)
            .collect();
        assert_eq!(tail, [3, 4]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_log_of_the_older_format_is_read_and_continued() {
        let dir = tmp("v1");
        fs::create_dir_all(&dir).unwrap();
        let path = segment_path(&dir, &key());
        fs::write(&path, "0\t5\tstdout\tfirst\n1\t6\tstderr\ta \\\\ b\\nc\n").unwrap();
        let logs = store(&dir, 10, 1 << 30);
        lock(&logs.open(&key())).append_region(7, LogSource::Stdout, b"next\n");
        let expected: Vec<(i64, String)> = [(0, "first"), (1, "a \\ b\nc"), (2, "next")]
            .iter()
            .map(|(n, t)| (*n, t.to_string()))
            .collect();
        assert_eq!(numbered(&logs), expected);
        let _ = fs::remove_dir_all(&dir);
    }
}
