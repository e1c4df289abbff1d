//! ProfileTask (Iris 2026-06: `iris process profile --target /<job>/<n> threads|cpu|memory`,
//! proxied by its controller): the profiler runs inside the task through the runtime's exec, as
//! Iris's worker runs it (`iris/cluster/runtime/profile.py`): py-spy for threads and CPU, memray
//! for memory. Each tool is the task's own (Iris's client installs both in every task's venv),
//! else the one on its PATH; a task without it gets a clear error. The profiled process is the
//! task's first Python process: in a container any, in the process runtime only those of the
//! task's process group (the exec joins it), never the host's others.
//!
//! Two guards Iris learned the hard way: the profiler runs under `timeout -s KILL` inside the
//! task, so a profiler whose exec client gave up cannot keep the task ptrace-stopped; and the
//! task is sent SIGCONT afterwards, which clears a group-stop a dying profiler can leave behind.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::core::TaskId;
use crate::shell::driver::{Command, DriverGone, DriverHandle};
use crate::shell::stats::rows::ProfileRow;

/// The target the controller forwards `/system/worker/<id>` as: the worker process itself.
pub const THIS_PROCESS: &str = "/system/process";

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
    /// `memray attach` for `seconds`, then memray's `reporter` (flamegraph, table or stats).
    Memory {
        seconds: u32,
        reporter: &'static str,
        leaks: bool,
    },
}

/// Iris's default sample duration and rate.
pub const DEFAULT_SECONDS: u32 = 10;
pub const DEFAULT_RATE_HZ: u32 = 20;

/// How long the exec may take beyond the sampling itself (Iris's headroom).
pub const SLACK_SECONDS: u64 = 30;

/// py-spy's format for Iris's `CpuProfile.Format` (1 flamegraph, 2 speedscope, 3 raw).
pub fn cpu_format(format: i32) -> &'static str {
    match format {
        2 => "speedscope",
        3 => "raw",
        _ => "flamegraph",
    }
}

/// memray's reporter for Iris's `MemoryProfile.Format` (1 flamegraph, 2 table, 3 stats, 4 raw);
/// `None` for raw, a binary trace the exec's text output cannot carry.
pub fn memory_reporter(format: i32) -> Option<&'static str> {
    match format {
        2 => Some("table"),
        3 => Some("stats"),
        4 => None,
        _ => Some("flamegraph"),
    }
}

/// Finds `tool` (the task's venv first, then its PATH) as `$TOOL`, else says why.
fn find_tool(tool: &str) -> String {
    format!(
        r#"
TOOL=
for c in ./.venv/bin/{tool} /app/.venv/bin/{tool}; do [ -x "$c" ] && TOOL=$c && break; done
[ -n "$TOOL" ] || TOOL=$(command -v {tool}) || {{
  echo "{tool} is not installed in the task (its venv or PATH): Iris's client installs it with the task's packages" >&2; exit 127; }}
"#
    )
}

/// Finds the task's first Python process as `$PID`, and the kill watchdog as `$GUARD`.
const FIND_PID: &str = r#"
ME=$(cut -d' ' -f5 /proc/self/stat)
PID=
for p in $(ls /proc | grep -E '^[0-9]+$' | sort -n); do
  [ "$p" = "$$" ] && continue
  if [ ! -f /.dockerenv ]; then [ "$(cut -d' ' -f5 /proc/$p/stat 2>/dev/null)" = "$ME" ] || continue; fi
  case "$(tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null)" in
    *py-spy*|*memray*) ;;
    *python*) PID=$p; break ;;
  esac
done
[ -n "$PID" ] || { echo "no Python process runs in the task" >&2; exit 3; }
GUARD=
command -v timeout >/dev/null && GUARD="timeout -s KILL $LIMIT"
T=$(mktemp -d) || exit 1
trap 'kill -CONT "$PID" 2>/dev/null; rm -rf "$T"' EXIT
"#;

impl Profile {
    fn seconds(&self) -> u32 {
        match self {
            Profile::Threads { .. } => 0,
            Profile::Cpu { seconds, .. } | Profile::Memory { seconds, .. } => *seconds,
        }
    }

    fn tool(&self) -> &'static str {
        match self {
            Profile::Memory { .. } => "memray",
            _ => "py-spy",
        }
    }

    /// The profiler's commands, given `$TOOL`, `$PID`, `$GUARD` and the scratch dir `$T`.
    fn run(&self) -> String {
        match self {
            Profile::Threads { locals } => {
                let locals = if *locals { " --locals" } else { "" };
                format!("$GUARD \"$TOOL\" dump --pid \"$PID\"{locals}")
            }
            Profile::Cpu {
                seconds,
                rate_hz,
                format,
            } => format!(
                "$GUARD \"$TOOL\" record --pid \"$PID\" --duration {seconds} --rate {rate_hz} \
                 --format {format} --output \"$T/out\" --nonblocking --subprocesses >/dev/null || exit 1\n\
                 cat \"$T/out\""
            ),
            Profile::Memory {
                seconds,
                reporter,
                leaks,
            } => {
                let aggregate = if *leaks { " --aggregate" } else { "" };
                let leaks = if *leaks { " --leaks" } else { "" };
                let report = match *reporter {
                    "table" => "\"$TOOL\" table --force -o \"$T/out\" \"$T/trace\" >/dev/null && cat \"$T/out\"".to_string(),
                    "stats" => "\"$TOOL\" stats --json --force -o \"$T/out\" \"$T/trace\" >/dev/null && cat \"$T/out\"".to_string(),
                    _ => format!("\"$TOOL\" flamegraph{leaks} --force --output \"$T/out\" \"$T/trace\" >/dev/null && cat \"$T/out\""),
                };
                // `attach` returns once tracking has begun; the trace is whole once the task's
                // tracker stops after `seconds`, so the report is retried until it reads.
                format!(
                    "$GUARD \"$TOOL\" attach --native \"$PID\" --duration {seconds} --output \"$T/trace\"{aggregate} >\"$T/log\" 2>&1 \\\n\
                     || {{ tail -c 4000 \"$T/log\" >&2; exit 1; }}\n\
                     sleep {seconds}\n\
                     for i in 1 2 3 4 5 6 7 8 9 10; do\n\
                       {{ {report}; }} 2>\"$T/log\" && exit 0\n\
                       sleep 1\n\
                     done\n\
                     tail -c 4000 \"$T/log\" >&2; exit 1"
                )
            }
        }
    }
}

/// The `sh -c` script that takes `profile` inside the task.
pub fn script(profile: &Profile) -> String {
    let limit = u64::from(profile.seconds()) + SLACK_SECONDS;
    format!(
        "LIMIT={limit}\n{}{FIND_PID}{}\n",
        find_tool(profile.tool()),
        profile.run()
    )
}

/// Takes `profile` inside the task's running attempt: the profiler's output, or why there is
/// none (the tool missing, no Python process, the task not running, the tool's own error).
pub async fn capture(
    driver: &DriverHandle,
    task_id: TaskId,
    profile: &Profile,
) -> Result<Result<Vec<u8>, String>, DriverGone> {
    // The exec's own limit is a little beyond the in-task watchdog's.
    let limit = Duration::from_secs(u64::from(profile.seconds()) + SLACK_SECONDS + 5);
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
            "{} failed (exit {}): {}",
            profile.tool(),
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
            Profile::Memory {
                reporter, leaks, ..
            } => {
                (row.kind, row.format) = ("memory", reporter);
                row.leaks = Some(*leaks);
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
        assert!(
            cpu.contains("--duration 3 --rate 20 --format speedscope"),
            "{cpu}"
        );
        assert!(cpu.starts_with("LIMIT=33\n"), "the watchdog's limit: {cpu}");
        let memory = script(&Profile::Memory {
            seconds: 4,
            reporter: memory_reporter(1).unwrap(),
            leaks: true,
        });
        assert!(
            memory.contains("attach --native \"$PID\" --duration 4"),
            "{memory}"
        );
        assert!(memory.contains("flamegraph --leaks --force"), "{memory}");
        assert_eq!(memory_reporter(4), None, "a raw trace is binary");
        // Each script is valid sh.
        let checked = [threads, cpu, memory].iter().all(|script| {
            std::process::Command::new("sh")
                .args(["-n", "-c", script])
                .status()
                .unwrap()
                .success()
        });
        assert!(checked);
    }
}
