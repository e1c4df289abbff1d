//! ProfileTask (Iris 2026-06: `iris process profile --target /<job>/<n> threads|cpu`, proxied by
//! its controller): py-spy run inside the task through the runtime's exec, as Iris's worker runs
//! it (`iris/cluster/runtime/profile.py`). py-spy is the task's own (Iris's client installs it
//! in every task's venv), else the one on its PATH; a task without it gets a clear error. The
//! profiled process is the task's first Python process: in a container any, in the process
//! runtime only those of the task's process group (the exec joins it), never the host's others.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::core::TaskId;
use crate::shell::driver::{Command, DriverGone, DriverHandle};
use crate::shell::era2026_06::stats_rows::ProfileRow;

/// Iris's `ProfileTrigger` values.
pub const PERIODIC: &str = "periodic";
pub const ON_DEMAND: &str = "on_demand";

/// What a profile request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Profile {
    /// `py-spy dump`: every thread's stack now.
    Threads { locals: bool },
    /// `py-spy record` for `seconds` at `rate_hz`, in py-spy's `format`.
    Cpu {
        seconds: u32,
        rate_hz: u32,
        format: &'static str,
    },
}

/// Iris's default sample duration and rate.
pub const DEFAULT_SECONDS: u32 = 10;
pub const DEFAULT_RATE_HZ: u32 = 20;

/// How long the exec may take beyond the sampling itself.
pub const SLACK_SECONDS: u64 = 30;

/// py-spy's format for Iris's `CpuProfile.Format` (1 flamegraph, 2 speedscope, 3 raw).
pub fn cpu_format(format: i32) -> &'static str {
    match format {
        2 => "speedscope",
        3 => "raw",
        _ => "flamegraph",
    }
}

/// Finds py-spy and the task's Python process, then runs the profiler; its output (a file for
/// a recording) on stdout.
const FIND: &str = r#"
PYSPY=
for c in ./.venv/bin/py-spy /app/.venv/bin/py-spy; do [ -x "$c" ] && PYSPY=$c && break; done
[ -n "$PYSPY" ] || PYSPY=$(command -v py-spy) || {
  echo "py-spy is not installed in the task (its venv or PATH): Iris's client installs it with the task's packages" >&2; exit 127; }
ME=$(cut -d' ' -f5 /proc/self/stat)
PID=
for p in $(ls /proc | grep -E '^[0-9]+$' | sort -n); do
  [ "$p" = "$$" ] && continue
  if [ ! -f /.dockerenv ]; then [ "$(cut -d' ' -f5 /proc/$p/stat 2>/dev/null)" = "$ME" ] || continue; fi
  case "$(tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null)" in
    *py-spy*) ;;
    *python*) PID=$p; break ;;
  esac
done
[ -n "$PID" ] || { echo "no Python process runs in the task" >&2; exit 3; }
"#;

/// The `sh -c` script that takes `profile` inside the task.
pub fn script(profile: &Profile) -> String {
    let run = match profile {
        Profile::Threads { locals } => {
            let locals = if *locals { " --locals" } else { "" };
            format!("exec \"$PYSPY\" dump --pid \"$PID\"{locals}")
        }
        Profile::Cpu {
            seconds,
            rate_hz,
            format,
        } => format!(
            "OUT=$(mktemp) || exit 1\n\
             \"$PYSPY\" record --pid \"$PID\" --duration {seconds} --rate {rate_hz} --format {format} \
             --output \"$OUT\" --nonblocking --subprocesses >/dev/null || {{ rm -f \"$OUT\"; exit 1; }}\n\
             cat \"$OUT\"; rm -f \"$OUT\""
        ),
    };
    format!("{FIND}{run}\n")
}

impl Profile {
    fn seconds(&self) -> u32 {
        match self {
            Profile::Threads { .. } => 0,
            Profile::Cpu { seconds, .. } => *seconds,
        }
    }
}

/// Takes `profile` inside the task's running attempt: the profiler's output, or why there is
/// none (py-spy missing, no Python process, the task not running, py-spy's own error).
pub async fn capture(
    driver: &DriverHandle,
    task_id: TaskId,
    profile: &Profile,
) -> Result<Result<Vec<u8>, String>, DriverGone> {
    let limit = Duration::from_secs(u64::from(profile.seconds()) + SLACK_SECONDS);
    let done = driver
        .ask(|reply| Command::Exec {
            task_id,
            command: vec!["sh".into(), "-c".into(), script(profile)],
            timeout: Some(limit),
            reply,
        })
        .await?;
    Ok(match done {
        Ok(out) if out.exit_code == 0 => Ok(out.stdout.into_bytes()),
        Ok(out) => Err(format!(
            "py-spy failed (exit {}): {}",
            out.exit_code,
            out.stderr.trim()
        )),
        Err(error) => Err(error),
    })
}

/// Who a profile's `iris.profile` row names, and why it was taken.
pub struct Row<'a> {
    /// The task's wire name (`/<job>/<n>`).
    pub source: &'a str,
    pub attempt_id: Option<i64>,
    /// The worker that took it.
    pub vm_id: &'a str,
    /// `PERIODIC` or `ON_DEMAND`.
    pub trigger: &'static str,
}

impl Row<'_> {
    /// The row of `data`, taken now, as Iris's `build_profile_row` makes it.
    pub fn of(&self, profile: &Profile, data: Vec<u8>) -> ProfileRow {
        let captured_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut row = ProfileRow {
            source: self.source.to_string(),
            attempt_id: self.attempt_id,
            vm_id: self.vm_id.to_string(),
            captured_at_ms,
            duration_seconds: i64::from(profile.seconds()),
            trigger: self.trigger,
            profile_data: data,
            ..ProfileRow::default()
        };
        match profile {
            Profile::Threads { locals } => {
                (row.kind, row.format) = ("thread", "raw");
                row.locals_dump = Some(*locals);
            }
            Profile::Cpu {
                rate_hz, format, ..
            } => {
                (row.kind, row.format) = ("cpu", format);
                row.rate_hz = Some(i64::from(*rate_hz));
                // Iris asks py-spy for native frames too; py-spy cannot take them without
                // stopping the task (--nonblocking), and this worker never stops it.
                row.native = Some(false);
            }
        }
        row
    }
}

/// The task a profile target names: `/<job>/<n>` or `/<job>/<n>:<attempt>`; `None` for the
/// process targets (`/system/...`), which the controller keeps.
pub fn task_of(target: &str) -> Option<&str> {
    let target = target.trim_start_matches('/');
    if target.is_empty() || target.starts_with("system/") {
        return None;
    }
    Some(target.split_once(':').map_or(target, |(task, _)| task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_scripts() {
        assert_eq!(task_of("/alice/job/0"), Some("alice/job/0"));
        assert_eq!(task_of("/alice/job/0:2"), Some("alice/job/0"));
        assert_eq!(task_of("/system/process"), None);
        let threads = script(&Profile::Threads { locals: true });
        assert!(threads.ends_with("dump --pid \"$PID\" --locals\n"));
        let cpu = script(&Profile::Cpu {
            seconds: 3,
            rate_hz: 20,
            format: cpu_format(2),
        });
        assert!(cpu.contains("--duration 3 --rate 20 --format speedscope"));
        // The script is valid sh.
        let checked = std::process::Command::new("sh")
            .args(["-n", "-c", &cpu])
            .status()
            .unwrap();
        assert!(checked.success());
    }
}
