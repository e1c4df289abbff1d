//! The journal: an append-only file (`<cache>/journal.log`) of length-delimited `AttemptRecord`s.
//! The core decides what is journaled and when (`Effect::Journal`: accepted, started, finished,
//! report acknowledged, in the order it must happen); this file only appends each entry as the
//! attempt's full record, one `write` per entry, and on replay the newest record of an attempt
//! wins. A restarted worker reads it back so no attempt is silently forgotten.
//!
//! Records are trimmed: no env values (they may hold secrets) and no entrypoint payload, only
//! what recovery needs. A task that retention removed leaves a tombstone per attempt, so a
//! restart does not bring it back. The file is compacted at start-up and whenever it has grown
//! past a size bound: the live and retained attempts are written to a new file, which is
//! fsynced, renamed over the old one, and the directory fsynced; a crash at any moment leaves
//! the old journal or the new one, both whole.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use crate::core::wire_ms;
use crate::core::{
    AttemptKey, Entrypoint, ExitStatus, JournalEntry, ReconcileSpec, RecoveredAttempt,
    RecoveredOutcome, RemovedAttempt, SpecEra, TaskId, TaskSpec, TaskState, is_task_finished,
};
use crate::journal_proto::AttemptRecord;
use crate::proto;

/// The journal is compacted once it is this much larger than after its last compaction (and
/// at least `COMPACT_MIN_BYTES`), so appends stay amortised O(1).
const COMPACT_GROWTH: u64 = 4;
const COMPACT_MIN_BYTES: u64 = 1 << 20;

/// What replay yields: each attempt found, or why a record could not be used.
pub type Recovered = Vec<Result<RecoveredAttempt, String>>;

pub struct Journal {
    path: PathBuf,
    file: File,
    records: BTreeMap<AttemptKey, AttemptRecord>,
    /// What the tombstone of the newest removed attempt of each task says, until the core
    /// forgets it (kept decoded: it is small, and there may be 100,000 of them).
    removed: BTreeMap<TaskId, RemovedAttempt>,
    /// The file's size, and what it was right after the last compaction.
    bytes: u64,
    compacted_bytes: u64,
}

fn key_of(record: &AttemptRecord) -> Option<AttemptKey> {
    let request = record.request.as_ref()?;
    Some(AttemptKey {
        task_id: TaskId::new(request.task_id.clone()).ok()?,
        attempt_id: request.attempt_id,
    })
}

/// What recovery needs of a submission, and nothing that may be secret or large: no env values,
/// no resources, of the entrypoint only the program's name.
fn trimmed(spec: &TaskSpec) -> proto::worker::RunTaskRequest {
    use proto::entrypoint::Kind;
    let argv0 = match &spec.entrypoint {
        Entrypoint::Command(argv) => argv.first().cloned(),
        Entrypoint::Callable(_) => None,
    };
    proto::worker::RunTaskRequest {
        job_id: spec.job_id.to_string(),
        task_id: spec.task_id.to_string(),
        task_index: spec.task_index,
        num_tasks: spec.num_tasks,
        attempt_id: spec.attempt_id,
        entrypoint: Some(proto::Entrypoint {
            kind: Some(Kind::Command(proto::CommandEntrypoint {
                argv: vec![argv0.unwrap_or_else(|| "python3".to_string())],
            })),
        }),
        environment: None,
        bundle_gcs_path: spec.bundle_path.clone().unwrap_or_default(),
        resources: None,
        timeout_seconds: i32::try_from(spec.timeout_ms / 1000).unwrap_or(i32::MAX),
        ports: spec.port_names.clone(),
    }
}

impl Journal {
    /// Opens the journal, compacting what is there. Returns it with the recovered attempts and
    /// a description of every record it could not use.
    pub fn open(cache_dir: &Path) -> io::Result<(Journal, Recovered)> {
        fs::create_dir_all(cache_dir)?;
        let path = cache_dir.join("journal.log");
        // A compaction a crash cut short left its new file unrenamed: the old one is whole.
        let _ = fs::remove_file(tmp_path(&path));
        let (records, removed, mut problems) = read_records(&path)?;
        let recovered = records.values().map(recover).collect::<Vec<_>>();
        problems.extend(recovered);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let mut journal = Journal {
            path,
            file,
            records,
            removed,
            bytes: 0,
            compacted_bytes: 0,
        };
        journal.compact()?;
        Ok((journal, problems))
    }

    /// The attempts the journal holds (live, finished, retained).
    pub fn attempts(&self) -> impl Iterator<Item = &AttemptKey> {
        self.records.keys()
    }

    /// What the tombstones remember of removed attempts (for `WorkerCore::recover_removed`).
    pub fn removed(&self) -> Vec<RemovedAttempt> {
        self.removed.values().cloned().collect()
    }

    /// The file's size now.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends one encoded record (after it is in `records`, so a compaction keeps it).
    fn write_record(&mut self, bytes: &[u8]) -> io::Result<()> {
        // One `write` per record: what was written survives a crash of the process.
        self.file.write_all(bytes)?;
        self.bytes += bytes.len() as u64;
        let bound = (COMPACT_GROWTH * self.compacted_bytes).max(COMPACT_MIN_BYTES);
        if self.bytes > bound {
            self.compact()?;
        }
        Ok(())
    }

    fn append(&mut self, key: AttemptKey, record: AttemptRecord) -> io::Result<()> {
        let bytes = record.encode_length_delimited_to_vec();
        self.records.insert(key, record);
        self.write_record(&bytes)
    }

    /// Forgets an attempt: a tombstone, so replay drops every earlier record of it, which keeps
    /// how the attempt ended (compaction keeps the newest tombstone of each task).
    fn tombstone(&mut self, removed: RemovedAttempt) -> io::Result<()> {
        self.records.remove(&removed.attempt);
        let bytes = tombstone_record(&removed).encode_length_delimited_to_vec();
        keep_newest_tombstone(&mut self.removed, removed);
        self.write_record(&bytes)
    }

    /// The core forgot a removed attempt: its tombstone is not carried into the next compaction.
    fn forget(&mut self, key: &AttemptKey) {
        let stale = self
            .removed
            .get(&key.task_id)
            .is_some_and(|kept| kept.attempt.attempt_id <= key.attempt_id);
        if stale {
            self.removed.remove(&key.task_id);
        }
    }

    fn update(
        &mut self,
        key: &AttemptKey,
        change: impl FnOnce(&mut AttemptRecord),
    ) -> io::Result<()> {
        let record = self
            .records
            .get_mut(key)
            .ok_or_else(|| io::Error::other(format!("{key} is not in the journal")))?;
        change(record);
        let bytes = record.encode_length_delimited_to_vec();
        self.write_record(&bytes)
    }

    /// Appends an entry the core emitted, as the attempt's whole record.
    pub fn record(&mut self, entry: &JournalEntry) -> io::Result<()> {
        match entry {
            JournalEntry::Accepted {
                spec,
                submitted_at_ms,
                ports,
            } => {
                let reconcile = spec.era.reconcile().cloned().unwrap_or_default();
                let record = AttemptRecord {
                    request: Some(trimmed(spec)),
                    attempt_uid: reconcile.attempt_uid,
                    task_path: reconcile.task_path,
                    submitted_at_ms: wire_ms(Some(*submitted_at_ms)),
                    ports: ports
                        .iter()
                        .map(|(k, v)| (k.clone(), i32::from(*v)))
                        .collect(),
                    ..AttemptRecord::default()
                };
                self.append(spec.attempt_key(), record)
            }
            JournalEntry::Started {
                attempt,
                started_at_ms,
            } => self.update(attempt, |record| {
                record.started_at_ms = wire_ms(Some(*started_at_ms));
            }),
            JournalEntry::Finished {
                attempt,
                state,
                exit,
                error,
                started_at_ms,
                finished_at_ms,
            } => self.update(attempt, |record| {
                record.started_at_ms = wire_ms(*started_at_ms);
                record.state = state.to_proto() as i32;
                record.has_exit_code = exit.code.is_some();
                record.exit_code = exit.code.unwrap_or(0);
                record.exit_signal = exit.signal.unwrap_or(0);
                record.oom_killed = exit.oom_killed;
                record.error = error.clone().unwrap_or_default();
                record.finished_at_ms = wire_ms(Some(*finished_at_ms));
            }),
            JournalEntry::Ports { attempt, ports } => self.update(attempt, |record| {
                record.ports = ports
                    .iter()
                    .map(|(k, v)| (k.clone(), i32::from(*v)))
                    .collect();
            }),
            JournalEntry::ReportAcked { attempt } => {
                self.update(attempt, |record| record.report_acked = true)
            }
            JournalEntry::Removed {
                attempt,
                attempt_uid,
                state,
                finished_at_ms,
                removed_at_ms,
            } => self.tombstone(RemovedAttempt {
                attempt: attempt.clone(),
                attempt_uid: attempt_uid.clone(),
                state: *state,
                finished_at_ms: *finished_at_ms,
                removed_at_ms: *removed_at_ms,
            }),
            JournalEntry::Forgotten { attempt } => {
                self.forget(attempt);
                Ok(())
            }
        }
    }

    /// Rewrites the file with one record per attempt it holds.
    fn compact(&mut self) -> io::Result<()> {
        self.compact_until(None)
    }

    /// The compaction, stoppable at a crash point (tests): write the new file, fsync it, rename
    /// it over the old one, fsync the directory.
    fn compact_until(&mut self, crash: Option<CrashPoint>) -> io::Result<()> {
        let tmp = tmp_path(&self.path);
        let mut bytes = Vec::new();
        // Tombstones first: replay then reads a record of a newer attempt after them.
        for removed in self.removed.values() {
            bytes.extend_from_slice(&tombstone_record(removed).encode_length_delimited_to_vec());
        }
        for record in self.records.values() {
            bytes.extend_from_slice(&record.encode_length_delimited_to_vec());
        }
        let mut file = File::create(&tmp)?;
        if let Some(CrashPoint::Writing(n)) = crash {
            file.write_all(&bytes[..n.min(bytes.len())])?;
            return Ok(());
        }
        file.write_all(&bytes)?;
        file.sync_all()?;
        drop(file);
        if crash == Some(CrashPoint::BeforeRename) {
            return Ok(());
        }
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.bytes = bytes.len() as u64;
        self.compacted_bytes = self.bytes;
        Ok(())
    }
}

/// Where a simulated crash stops a compaction (tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
enum CrashPoint {
    /// After this many bytes of the new file.
    Writing(usize),
    /// The new file is whole and synced, not yet renamed.
    BeforeRename,
}

fn tmp_path(path: &Path) -> PathBuf {
    path.with_extension("log.tmp")
}

/// Keeps `removed` as its task's tombstone unless one of a newer attempt is there.
fn keep_newest_tombstone(kept: &mut BTreeMap<TaskId, RemovedAttempt>, removed: RemovedAttempt) {
    let newer_kept = kept
        .get(&removed.attempt.task_id)
        .is_some_and(|k| k.attempt.attempt_id > removed.attempt.attempt_id);
    if !newer_kept {
        kept.insert(removed.attempt.task_id.clone(), removed);
    }
}

fn tombstone_record(removed: &RemovedAttempt) -> AttemptRecord {
    AttemptRecord {
        request: Some(proto::worker::RunTaskRequest {
            task_id: removed.attempt.task_id.to_string(),
            attempt_id: removed.attempt.attempt_id,
            ..Default::default()
        }),
        state: removed.state.to_proto() as i32,
        finished_at_ms: wire_ms(Some(removed.finished_at_ms)),
        removed: true,
        removed_at_ms: wire_ms(Some(removed.removed_at_ms)),
        attempt_uid: removed.attempt_uid.clone().unwrap_or_default(),
        ..AttemptRecord::default()
    }
}

/// What a tombstone says of its attempt; `None` for one written before tombstones kept the
/// terminal state (a worker upgraded from then does not remember those removals).
fn removed_of(record: &AttemptRecord) -> Option<RemovedAttempt> {
    let state = TaskState::from_proto(record.state).filter(|s| is_task_finished(*s))?;
    let at = |v: i64| u64::try_from(v).unwrap_or(0);
    Some(RemovedAttempt {
        attempt: key_of(record)?,
        attempt_uid: Some(record.attempt_uid.clone()).filter(|u| !u.is_empty()),
        state,
        finished_at_ms: at(record.finished_at_ms),
        removed_at_ms: at(record.removed_at_ms),
    })
}

type Records = BTreeMap<AttemptKey, AttemptRecord>;
type Tombstones = BTreeMap<TaskId, RemovedAttempt>;

/// Reads every record; a torn record at the end (a crash mid-write) ends the read.
fn read_records(path: &Path) -> io::Result<(Records, Tombstones, Recovered)> {
    let mut records = BTreeMap::new();
    let mut removed = BTreeMap::new();
    let mut problems = Vec::new();
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((records, removed, problems)),
        Err(e) => return Err(e),
    };
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        match AttemptRecord::decode_length_delimited(&mut rest) {
            Ok(record) => match key_of(&record) {
                Some(key) if record.removed => {
                    records.remove(&key);
                    if let Some(entry) = removed_of(&record) {
                        keep_newest_tombstone(&mut removed, entry);
                    }
                }
                Some(key) => {
                    records.insert(key, record);
                }
                None => problems.push(Err(format!(
                    "{}: a record without a valid task id",
                    path.display()
                ))),
            },
            Err(e) => {
                problems.push(Err(format!(
                    "{}: torn record at the end, ignored: {e}",
                    path.display()
                )));
                break;
            }
        }
    }
    Ok((records, removed, problems))
}

fn recover(record: &AttemptRecord) -> Result<RecoveredAttempt, String> {
    let request = record
        .request
        .as_ref()
        .ok_or("a record without its request")?;
    let mut spec =
        TaskSpec::from_request(request).map_err(|e| format!("{}: {e}", request.task_id))?;
    if !record.attempt_uid.is_empty() {
        spec.era = SpecEra::Reconcile(ReconcileSpec {
            attempt_uid: record.attempt_uid.clone(),
            task_path: record.task_path.clone(),
            ..ReconcileSpec::default()
        });
    }
    let positive = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
    let terminal = TaskState::from_proto(record.state).filter(|s| is_task_finished(*s));
    let outcome = terminal.map(|state| RecoveredOutcome {
        state,
        exit: ExitStatus {
            code: record.has_exit_code.then_some(record.exit_code),
            signal: (record.exit_signal != 0).then_some(record.exit_signal),
            oom_killed: record.oom_killed,
            finished_at_ms: None,
            last_stderr: None,
            machine_fault: None,
        },
        error: Some(record.error.clone()).filter(|e| !e.is_empty()),
        finished_at_ms: positive(record.finished_at_ms).unwrap_or(0),
        report_acked: record.report_acked,
    });
    Ok(RecoveredAttempt {
        spec,
        ports: record
            .ports
            .iter()
            .filter_map(|(k, v)| u16::try_from(*v).ok().map(|v| (k.clone(), v)))
            .collect(),
        submitted_at_ms: positive(record.submitted_at_ms).unwrap_or(0),
        started_at_ms: positive(record.started_at_ms),
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(task: &str, attempt: i32) -> TaskSpec {
        let request = proto::worker::RunTaskRequest {
            job_id: "job".into(),
            task_id: task.into(),
            attempt_id: attempt,
            entrypoint: Some(proto::Entrypoint {
                kind: Some(proto::entrypoint::Kind::Command(proto::CommandEntrypoint {
                    argv: vec!["run".into(), "--secret=x".into()],
                })),
            }),
            environment: Some(proto::EnvironmentConfig {
                env_vars: [("TOKEN".to_string(), "hunter2".to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        TaskSpec::from_request(&request).unwrap()
    }

    fn accepted(spec: &TaskSpec) -> JournalEntry {
        JournalEntry::Accepted {
            spec: Box::new(spec.clone()),
            submitted_at_ms: 5,
            ports: BTreeMap::new(),
        }
    }

    #[test]
    fn replays_live_finished_and_torn_records() {
        let dir = std::env::temp_dir().join(format!("iris-journal-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (mut journal, found) = Journal::open(&dir).unwrap();
        assert!(found.is_empty());
        let live = spec("job/task-0", 0);
        let done = spec("job/task-1", 3);
        journal.record(&accepted(&live)).unwrap();
        journal.record(&accepted(&done)).unwrap();
        journal
            .record(&JournalEntry::Finished {
                attempt: done.attempt_key(),
                state: TaskState::Failed,
                exit: ExitStatus::code(2),
                error: Some("Exit code: 2".into()),
                started_at_ms: Some(6),
                finished_at_ms: 9,
            })
            .unwrap();
        drop(journal);
        // A crash mid-append leaves a torn record at the end.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.join("journal.log"))
            .unwrap();
        file.write_all(&[0x40, 1, 2]).unwrap();
        let on_disk = fs::read(dir.join("journal.log")).unwrap();
        assert!(
            !on_disk.windows(7).any(|w| w == b"hunter2"),
            "env values never reach disk"
        );
        assert!(
            !on_disk.windows(8).any(|w| w == b"--secret"),
            "arguments never reach disk"
        );

        let (_, found) = Journal::open(&dir).unwrap();
        let ok: Vec<_> = found.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(
            found.iter().filter(|r| r.is_err()).count(),
            1,
            "the torn record is reported"
        );
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].spec.task_id.as_str(), "job/task-0");
        assert!(ok[0].outcome.is_none());
        let outcome = ok[1].outcome.as_ref().unwrap();
        assert_eq!(
            (outcome.state, outcome.exit.code, outcome.finished_at_ms),
            (TaskState::Failed, Some(2), 9)
        );
        let _ = fs::remove_dir_all(&dir);
    }

    /// A port-conflict retry's fresh ports replace the accepted ones: an adopted container's
    /// ports stay held (sim seed 702116 handed one of them to another task).
    #[test]
    fn fresh_ports_of_a_retried_start_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("iris-journal-ports-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (mut journal, _) = Journal::open(&dir).unwrap();
        let spec = spec("job/task-0", 0);
        journal.record(&accepted(&spec)).unwrap();
        let fresh: BTreeMap<String, u16> = [("http".to_string(), 31_001)].into();
        journal
            .record(&JournalEntry::Ports {
                attempt: spec.attempt_key(),
                ports: fresh.clone(),
            })
            .unwrap();
        drop(journal);
        let (_, found) = Journal::open(&dir).unwrap();
        assert_eq!(found[0].as_ref().unwrap().ports, fresh);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_live_attempt_keeps_its_start_time_across_a_restart() {
        let dir = std::env::temp_dir().join(format!("iris-journal-start-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (mut journal, _) = Journal::open(&dir).unwrap();
        let spec = spec("job/task-0", 0);
        journal.record(&accepted(&spec)).unwrap();
        journal
            .record(&JournalEntry::Started {
                attempt: spec.attempt_key(),
                started_at_ms: 1_234,
            })
            .unwrap();
        drop(journal);
        let (_, found) = Journal::open(&dir).unwrap();
        let record = found[0].as_ref().unwrap();
        assert!(record.outcome.is_none());
        assert_eq!(record.started_at_ms, Some(1_234));
        assert_eq!(record.submitted_at_ms, 5);
        let _ = fs::remove_dir_all(&dir);
    }

    /// What a restart would recover: each attempt's key and outcome.
    fn recovered(dir: &Path) -> Vec<(AttemptKey, Option<TaskState>, bool)> {
        let (_, found) = Journal::open(dir).unwrap();
        found
            .into_iter()
            .map(|r| {
                let r = r.expect("every record whole");
                let outcome = r.outcome.as_ref();
                (
                    r.spec.attempt_key(),
                    outcome.map(|o| o.state),
                    outcome.is_some_and(|o| o.report_acked),
                )
            })
            .collect()
    }

    #[test]
    fn a_crash_at_any_point_of_a_compaction_leaves_a_whole_journal() {
        let dir = std::env::temp_dir().join(format!("iris-journal-crash-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (mut journal, _) = Journal::open(&dir).unwrap();
        for i in 0..40 {
            let spec = spec(&format!("job/task-{i}"), i % 3);
            let attempt = spec.attempt_key();
            journal.record(&accepted(&spec)).unwrap();
            if i % 4 == 0 {
                continue; // live
            }
            journal
                .record(&JournalEntry::Finished {
                    attempt: attempt.clone(),
                    state: TaskState::Succeeded,
                    exit: ExitStatus::code(0),
                    error: None,
                    started_at_ms: Some(6),
                    finished_at_ms: 9,
                })
                .unwrap();
            if i % 4 >= 2 {
                journal
                    .record(&JournalEntry::ReportAcked {
                        attempt: attempt.clone(),
                    })
                    .unwrap();
            }
            if i % 4 == 3 {
                journal
                    .record(&JournalEntry::Removed {
                        attempt,
                        attempt_uid: None,
                        state: TaskState::Succeeded,
                        finished_at_ms: 9,
                        removed_at_ms: 10,
                    })
                    .unwrap();
            }
        }
        let before = recovered(&dir);
        assert_eq!(before.len(), 30, "ten removed: {before:?}");
        let (mut journal, _) = Journal::open(&dir).unwrap();
        let removed = journal.removed();
        assert_eq!(removed.len(), 10, "ten tombstones kept: {removed:?}");
        let size = journal.bytes() as usize;
        // A few dozen kill points across the new file, and one after it is whole.
        let mut points: Vec<CrashPoint> = (0..36)
            .map(|k| CrashPoint::Writing(k * size / 35))
            .collect();
        points.push(CrashPoint::BeforeRename);
        for point in points {
            journal.compact_until(Some(point)).unwrap();
            assert_eq!(recovered(&dir), before, "crash at {point:?}");
            journal = Journal::open(&dir).unwrap().0;
            assert_eq!(
                journal.removed(),
                removed,
                "tombstones after a crash at {point:?}"
            );
        }
        journal.compact().unwrap();
        assert_eq!(recovered(&dir), before, "after a whole compaction");
        let _ = fs::remove_dir_all(&dir);
    }
}
