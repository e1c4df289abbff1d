//! The journal: one small protobuf file per accepted attempt under `<cache>/journal/`, written
//! before the attempt starts and updated when it ends and when its terminal report is acked. A
//! restarted worker reads it back so no attempt is silently forgotten.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::core::{
    AttemptKey, ExitStatus, RecoveredAttempt, RecoveredOutcome, Task, TaskSpec, TaskState,
    is_task_finished,
};
use crate::journal_proto::AttemptRecord;
use crate::proto;

pub struct Journal {
    dir: PathBuf,
}

fn ms(value: Option<u64>) -> i64 {
    value.map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

impl Journal {
    pub fn open(cache_dir: &Path) -> io::Result<Journal> {
        let dir = cache_dir.join("journal");
        fs::create_dir_all(&dir)?;
        Ok(Journal { dir })
    }

    fn path(&self, key: &AttemptKey) -> PathBuf {
        self.dir
            .join(key.task_id.path_component())
            .join(format!("attempt-{}.pb", key.attempt_id))
    }

    fn write(&self, key: &AttemptKey, record: &AttemptRecord) -> io::Result<()> {
        let path = self.path(key);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        // Write then rename, so a crash leaves the old record or the new, never half of one.
        let tmp = path.with_extension("pb.tmp");
        fs::write(&tmp, record.encode_to_vec())?;
        fs::rename(tmp, path)
    }

    fn read(&self, key: &AttemptKey) -> io::Result<AttemptRecord> {
        let bytes = fs::read(self.path(key))?;
        AttemptRecord::decode(bytes.as_slice()).map_err(io::Error::other)
    }

    /// Records a newly accepted attempt.
    pub fn accepted(
        &self,
        request: &proto::worker::RunTaskRequest,
        task: &Task,
    ) -> io::Result<()> {
        let record = AttemptRecord {
            request: Some(request.clone()),
            submitted_at_ms: ms(Some(task.submitted_at_ms)),
            ports: task
                .ports
                .iter()
                .map(|(k, v)| (k.clone(), i32::from(*v)))
                .collect(),
            ..AttemptRecord::default()
        };
        self.write(&crate::core::worker::attempt_key(task), &record)
    }

    /// Records how an attempt ended.
    pub fn finished(&self, task: &Task) -> io::Result<()> {
        let key = crate::core::worker::attempt_key(task);
        let mut record = self.read(&key)?;
        record.started_at_ms = ms(task.started_at_ms);
        record.state = task.state.to_proto() as i32;
        record.has_exit_code = task.exit_code.is_some();
        record.exit_code = task.exit_code.unwrap_or(0);
        record.exit_signal = task.exit_signal.unwrap_or(0);
        record.oom_killed = task.oom_killed;
        record.error = task.error.clone().unwrap_or_default();
        record.finished_at_ms = ms(task.finished_at_ms);
        self.write(&key, &record)
    }

    pub fn report_acked(&self, key: &AttemptKey) -> io::Result<()> {
        let mut record = self.read(key)?;
        record.report_acked = true;
        self.write(key, &record)
    }

    /// Every readable record, ordered by task then attempt. Unreadable ones are returned as
    /// errors so the caller can say so; they are never silently skipped.
    pub fn load(&self) -> Vec<Result<RecoveredAttempt, String>> {
        let mut found: BTreeMap<(String, i32), PathBuf> = BTreeMap::new();
        for task_dir in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            for file in fs::read_dir(task_dir.path()).into_iter().flatten().flatten() {
                let name = file.file_name().to_string_lossy().to_string();
                let attempt = name
                    .strip_prefix("attempt-")
                    .and_then(|n| n.strip_suffix(".pb"))
                    .and_then(|n| n.parse::<i32>().ok());
                if let Some(attempt) = attempt {
                    let task = task_dir.file_name().to_string_lossy().to_string();
                    found.insert((task, attempt), file.path());
                }
            }
        }
        found.values().map(|path| recover(path)).collect()
    }
}

fn recover(path: &Path) -> Result<RecoveredAttempt, String> {
    let fail = |e: String| format!("{}: {e}", path.display());
    let bytes = fs::read(path).map_err(|e| fail(e.to_string()))?;
    let record = AttemptRecord::decode(bytes.as_slice()).map_err(|e| fail(e.to_string()))?;
    let request = record.request.ok_or_else(|| fail("no request".into()))?;
    let spec = TaskSpec::from_request(&request).map_err(|e| fail(e.to_string()))?;
    let positive = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
    let terminal = TaskState::from_proto(record.state).filter(|s| is_task_finished(*s));
    let outcome = terminal.map(|state| RecoveredOutcome {
        state,
        exit: ExitStatus {
            code: record.has_exit_code.then_some(record.exit_code),
            signal: (record.exit_signal != 0).then_some(record.exit_signal),
            oom_killed: record.oom_killed,
        },
        error: Some(record.error).filter(|e| !e.is_empty()),
        finished_at_ms: positive(record.finished_at_ms).unwrap_or(0),
        report_acked: record.report_acked,
    });
    Ok(RecoveredAttempt {
        spec,
        ports: record
            .ports
            .into_iter()
            .filter_map(|(k, v)| u16::try_from(v).ok().map(|v| (k, v)))
            .collect(),
        submitted_at_ms: positive(record.submitted_at_ms).unwrap_or(0),
        started_at_ms: positive(record.started_at_ms),
        outcome,
    })
}
