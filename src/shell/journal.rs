//! The journal: an append-only file (`<cache>/journal.log`) of length-delimited `AttemptRecord`s.
//! The core decides what is journaled and when (`Effect::Journal`: accepted, started, finished,
//! report acknowledged, in the order it must happen); this file only appends each entry as the
//! attempt's full record, one `write` per entry, and on replay the newest record of an attempt
//! wins. A restarted worker reads it back so no attempt is silently forgotten.
//!
//! Records are trimmed: no env values (they may hold secrets) and no entrypoint payload, only
//! what recovery needs. The file is compacted at start-up and whenever it has grown well past
//! the live set; finished, reported attempts beyond `FINISHED_KEPT_MAX` are dropped then.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use crate::core::task::ms;
use crate::core::{
    AttemptKey, Entrypoint, ExitStatus, JournalEntry, RecoveredAttempt, RecoveredOutcome, TaskId,
    TaskSpec, TaskState, is_task_finished,
};
use crate::journal_proto::AttemptRecord;
use crate::proto;

/// Finished attempts whose reports landed, kept for `GetTaskStatus` after a restart.
pub const FINISHED_KEPT_MAX: usize = 10_000;

/// What replay yields: each attempt found, or why a record could not be used.
pub type Recovered = Vec<Result<RecoveredAttempt, String>>;

pub struct Journal {
    path: PathBuf,
    file: File,
    records: BTreeMap<AttemptKey, AttemptRecord>,
    appended_since_compaction: usize,
    /// Without a controller there is nothing to acknowledge: finished is settled.
    reports_expected: bool,
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
    pub fn open(cache_dir: &Path, reports_expected: bool) -> io::Result<(Journal, Recovered)> {
        fs::create_dir_all(cache_dir)?;
        let path = cache_dir.join("journal.log");
        let (records, mut problems) = read_records(&path)?;
        let recovered = records.values().map(recover).collect::<Vec<_>>();
        problems.extend(recovered);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let mut journal = Journal {
            path,
            file,
            records,
            appended_since_compaction: 0,
            reports_expected,
        };
        journal.compact()?;
        Ok((journal, problems))
    }

    fn append(&mut self, key: AttemptKey, record: AttemptRecord) -> io::Result<()> {
        self.file
            .write_all(&record.encode_length_delimited_to_vec())?;
        self.records.insert(key, record);
        self.appended_since_compaction += 1;
        if self.appended_since_compaction > 2 * self.records.len() + 1000 {
            self.compact()?;
        }
        Ok(())
    }

    fn update(
        &mut self,
        key: &AttemptKey,
        change: impl FnOnce(&mut AttemptRecord),
    ) -> io::Result<()> {
        let mut record = self
            .records
            .get(key)
            .cloned()
            .ok_or_else(|| io::Error::other(format!("{key} is not in the journal")))?;
        change(&mut record);
        self.append(key.clone(), record)
    }

    /// Appends an entry the core emitted, as the attempt's whole record.
    pub fn record(&mut self, entry: &JournalEntry) -> io::Result<()> {
        match entry {
            JournalEntry::Accepted {
                spec,
                submitted_at_ms,
                ports,
            } => {
                let record = AttemptRecord {
                    request: Some(trimmed(spec)),
                    submitted_at_ms: ms(Some(*submitted_at_ms)),
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
                record.started_at_ms = ms(Some(*started_at_ms));
            }),
            JournalEntry::Finished {
                attempt,
                state,
                exit,
                error,
                started_at_ms,
                finished_at_ms,
            } => self.update(attempt, |record| {
                record.started_at_ms = ms(*started_at_ms);
                record.state = state.to_proto() as i32;
                record.has_exit_code = exit.code.is_some();
                record.exit_code = exit.code.unwrap_or(0);
                record.exit_signal = exit.signal.unwrap_or(0);
                record.oom_killed = exit.oom_killed;
                record.error = error.clone().unwrap_or_default();
                record.finished_at_ms = ms(Some(*finished_at_ms));
            }),
            JournalEntry::ReportAcked { attempt } => {
                self.update(attempt, |record| record.report_acked = true)
            }
        }
    }

    fn settled(&self, record: &AttemptRecord) -> bool {
        let finished = TaskState::from_proto(record.state).is_some_and(is_task_finished);
        finished && (record.report_acked || !self.reports_expected)
    }

    /// Rewrites the file with one record per attempt, dropping the oldest settled ones past the
    /// retention limit. Write-then-rename: a crash leaves the old file or the new.
    fn compact(&mut self) -> io::Result<()> {
        let settled: Vec<(i64, AttemptKey)> = self
            .records
            .iter()
            .filter(|(_, r)| self.settled(r))
            .map(|(k, r)| (r.finished_at_ms, k.clone()))
            .collect();
        if settled.len() > FINISHED_KEPT_MAX {
            let mut by_age = settled;
            by_age.sort();
            for (_, key) in by_age.iter().take(by_age.len() - FINISHED_KEPT_MAX) {
                self.records.remove(key);
            }
        }
        let tmp = self.path.with_extension("log.tmp");
        let mut out = io::BufWriter::new(File::create(&tmp)?);
        for record in self.records.values() {
            out.write_all(&record.encode_length_delimited_to_vec())?;
        }
        out.flush()?;
        drop(out);
        fs::rename(&tmp, &self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.appended_since_compaction = 0;
        Ok(())
    }
}

/// Reads every record; a torn record at the end (a crash mid-write) ends the read.
fn read_records(path: &Path) -> io::Result<(BTreeMap<AttemptKey, AttemptRecord>, Recovered)> {
    let mut records = BTreeMap::new();
    let mut problems = Vec::new();
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((records, problems)),
        Err(e) => return Err(e),
    };
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        match AttemptRecord::decode_length_delimited(&mut rest) {
            Ok(record) => match key_of(&record) {
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
    Ok((records, problems))
}

fn recover(record: &AttemptRecord) -> Result<RecoveredAttempt, String> {
    let request = record
        .request
        .as_ref()
        .ok_or("a record without its request")?;
    let spec = TaskSpec::from_request(request).map_err(|e| format!("{}: {e}", request.task_id))?;
    let positive = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
    let terminal = TaskState::from_proto(record.state).filter(|s| is_task_finished(*s));
    let outcome = terminal.map(|state| RecoveredOutcome {
        state,
        exit: ExitStatus {
            code: record.has_exit_code.then_some(record.exit_code),
            signal: (record.exit_signal != 0).then_some(record.exit_signal),
            oom_killed: record.oom_killed,
            finished_at_ms: None,
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
        let (mut journal, found) = Journal::open(&dir, true).unwrap();
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

        let (_, found) = Journal::open(&dir, true).unwrap();
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

    #[test]
    fn a_live_attempt_keeps_its_start_time_across_a_restart() {
        let dir = std::env::temp_dir().join(format!("iris-journal-start-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (mut journal, _) = Journal::open(&dir, true).unwrap();
        let spec = spec("job/task-0", 0);
        journal.record(&accepted(&spec)).unwrap();
        journal
            .record(&JournalEntry::Started {
                attempt: spec.attempt_key(),
                started_at_ms: 1_234,
            })
            .unwrap();
        drop(journal);
        let (_, found) = Journal::open(&dir, true).unwrap();
        let record = found[0].as_ref().unwrap();
        assert!(record.outcome.is_none());
        assert_eq!(record.started_at_ms, Some(1_234));
        assert_eq!(record.submitted_at_ms, 5);
        let _ = fs::remove_dir_all(&dir);
    }
}
