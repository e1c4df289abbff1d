//! Validated identifiers. A `TaskId` or `JobId` that exists has passed every bad-input rule, so
//! nothing downstream (paths, labels, env) needs to check again.

use std::fmt;

/// Longest task or job id accepted, in bytes.
pub const ID_LEN_MAX: usize = 256;

/// Why an id was refused. The message completes "<field> ...".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("is {len} bytes long; the limit is {ID_LEN_MAX}")]
    TooLong { len: usize },
    #[error("must not contain '..'")]
    DotDot,
    #[error("must not start or end with '/'")]
    SlashAtEnd,
    #[error("must not contain an empty or '.' path component")]
    EmptyComponent,
    #[error("must not contain NUL or control characters")]
    ControlCharacter,
}

fn check_id(raw: &str) -> Result<(), IdError> {
    if raw.is_empty() {
        return Err(IdError::Empty);
    }
    if raw.len() > ID_LEN_MAX {
        return Err(IdError::TooLong { len: raw.len() });
    }
    if raw.chars().any(char::is_control) {
        return Err(IdError::ControlCharacter);
    }
    if raw.contains("..") {
        return Err(IdError::DotDot);
    }
    if raw.starts_with('/') || raw.ends_with('/') {
        return Err(IdError::SlashAtEnd);
    }
    if raw.split('/').any(|part| part.is_empty() || part == ".") {
        return Err(IdError::EmptyComponent);
    }
    Ok(())
}

macro_rules! validated_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn new(raw: impl Into<String>) -> Result<Self, IdError> {
                let raw = raw.into();
                check_id(&raw)?;
                Ok(Self(raw))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

validated_id!(
    /// A task id, conventionally `{job_id}/task-{index}`.
    TaskId
);
validated_id!(
    /// The parent job of a task.
    JobId
);

impl TaskId {
    /// One path component that names this task, injective and free of separators, so a task id
    /// can never decide a path outside the directory it is joined to.
    pub fn path_component(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        for byte in self.0.bytes() {
            if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
                out.push(byte as char);
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        out
    }
}

/// One attempt of one task: the unit that owns a workdir, ports and a container.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttemptKey {
    pub task_id: TaskId,
    pub attempt_id: i32,
}

impl AttemptKey {
    /// One path component naming the attempt (`<task>.attempt-<n>`); flat, so creating and
    /// removing an attempt's files is one directory operation.
    pub fn file_stem(&self) -> String {
        format!(
            "{}.attempt-{}",
            self.task_id.path_component(),
            self.attempt_id
        )
    }

    /// The attempt's workdir, relative to the worker's cache directory.
    pub fn workdir(&self) -> String {
        format!("tasks/{}", self.file_stem())
    }
}

impl fmt::Display for AttemptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.task_id, self.attempt_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_iris_task_ids() {
        for ok in [
            "job/task-0",
            "a",
            "user-job_1/task-12",
            "x.y/task-3",
            "ünï/task-0",
        ] {
            assert!(TaskId::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_each_bad_input_rule() {
        let cases: &[(&str, IdError)] = &[
            ("", IdError::Empty),
            ("a/../b", IdError::DotDot),
            ("..", IdError::DotDot),
            ("a..b", IdError::DotDot),
            ("/job/task-0", IdError::SlashAtEnd),
            ("job/task-0/", IdError::SlashAtEnd),
            ("job//task-0", IdError::EmptyComponent),
            ("job/./task-0", IdError::EmptyComponent),
            (".", IdError::EmptyComponent),
            ("job\0/task-0", IdError::ControlCharacter),
            ("job\n/task-0", IdError::ControlCharacter),
            ("job\u{7f}", IdError::ControlCharacter),
        ];
        for (raw, want) in cases {
            assert_eq!(TaskId::new(*raw).unwrap_err(), *want, "{raw:?}");
        }
        let long = "a".repeat(ID_LEN_MAX + 1);
        assert_eq!(
            TaskId::new(long).unwrap_err(),
            IdError::TooLong {
                len: ID_LEN_MAX + 1
            }
        );
        assert!(TaskId::new("a".repeat(ID_LEN_MAX)).is_ok());
    }

    #[test]
    fn workdir_is_one_safe_component_per_task() {
        let key = AttemptKey {
            task_id: TaskId::new("job.x/task-0").unwrap(),
            attempt_id: 2,
        };
        assert_eq!(key.workdir(), "tasks/job%2Ex%2Ftask-0.attempt-2");
        // Distinct ids never share a directory.
        let a = TaskId::new("a/b").unwrap().path_component();
        let b = TaskId::new("a%2Fb").unwrap().path_component();
        assert_ne!(a, b);
    }
}
