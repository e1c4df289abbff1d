//! Names the engine sees: container names (stable per worker and attempt, so a retried start or
//! a restarted worker finds its container) and the hashing and sanitising they share with image
//! tags.

use crate::core::AttemptKey;

pub(super) fn fnv(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// `text` with every character but ASCII letters, digits, `-` and `.` replaced, cut to `max`.
pub(super) fn sanitized(text: &str, replacement: char, max: usize) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                replacement
            }
        })
        .take(max)
        .collect()
}

/// A valid, stable container name for an attempt of this worker.
pub fn container_name(worker_id: &str, attempt: &AttemptKey) -> String {
    let readable = sanitized(attempt.task_id.as_str(), '_', 80);
    let hash = fnv(&format!("{worker_id}\0{}", attempt.task_id));
    format!("iris-{readable}-{hash:08x}-a{}", attempt.attempt_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::TaskId;

    #[test]
    fn names_are_valid_and_distinct() {
        let key = |t: &str, a| AttemptKey {
            task_id: TaskId::new(t).unwrap(),
            attempt_id: a,
        };
        let a = container_name("w1", &key("job/task-0", 0));
        assert!(a.starts_with("iris-job_task-0-"), "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        );
        assert_ne!(a, container_name("w1", &key("job_task-0", 0)));
        assert_ne!(a, container_name("w2", &key("job/task-0", 0)));
        assert_ne!(a, container_name("w1", &key("job/task-0", 1)));
    }
}
