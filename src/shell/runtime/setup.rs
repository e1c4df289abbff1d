//! Setup commands (2026-06 `RuntimeEntrypoint.setup_commands`): shell lines run in order in the
//! task's image and workdir before its command, as Iris does (`set -e`, one script). The script
//! lives in the workdir, so both runtimes run the same file; the command then starts with the
//! workdir's `.venv` activated when the setup made one (`uv sync`), as Iris's `_run.sh` does.

use std::path::Path;

use crate::core::LogSource;
use crate::shell::runtime::{AttemptSink, RuntimeError};

/// Lines of a failed setup's output quoted in the task's error.
pub const TAIL_LINES: usize = 10;

/// The build log's first line of a setup (`where_`: " in IMAGE" for a container, or "").
pub fn announce(sink: &AttemptSink, commands: &[String], where_: &str) {
    let line = format!("running {} setup command(s){where_}", commands.len());
    sink.log(LogSource::Build, &line);
}

/// The attempt's error for a setup that ended with `how` (`exit code 7`): with its last lines.
pub fn failed(how: &str, sink: &AttemptSink) -> RuntimeError {
    RuntimeError::new(format!(
        "setup_commands failed with {how}{}",
        sink.last_lines_quoted(LogSource::Build, TAIL_LINES)
    ))
}

/// The script's name inside the workdir (Iris's name).
pub const SCRIPT_FILE: &str = "_setup_env.sh";

/// The script: stop at the first failing line.
pub fn script(commands: &[String]) -> String {
    let mut out = String::from("set -e\n");
    for line in commands {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Writes the script into `workdir`.
pub fn write_script(workdir: &Path, commands: &[String]) -> std::io::Result<()> {
    std::fs::write(workdir.join(SCRIPT_FILE), script(commands))
}

/// The argv that runs the script in the workdir: bash where the image has it (Iris's commands
/// are written for bash), else the POSIX shell (busybox images).
pub fn launcher() -> Vec<String> {
    let run = format!(
        "if command -v bash >/dev/null 2>&1; then exec bash -e {SCRIPT_FILE}; fi; exec sh -e {SCRIPT_FILE}"
    );
    ["/bin/sh", "-c", &run].map(String::from).to_vec()
}

/// `argv` run with the workdir's `.venv` on PATH when there is one; `exec`, so the command is
/// the process the runtime signals.
pub fn activated(argv: &[String]) -> Vec<String> {
    const ACTIVATE: &str = "if [ -d .venv/bin ]; then VIRTUAL_ENV=\"$PWD/.venv\"; \
        PATH=\"$VIRTUAL_ENV/bin:$PATH\"; export VIRTUAL_ENV PATH; fi; exec \"$@\"";
    let mut out: Vec<String> = ["/bin/sh", "-c", ACTIVATE, "iris-run"]
        .map(String::from)
        .to_vec();
    out.extend(argv.iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_stops_at_the_first_failure_and_keeps_order() {
        let s = script(&["echo one".into(), "false".into(), "echo never".into()]);
        assert_eq!(s, "set -e\necho one\nfalse\necho never\n");
        let dir = std::env::temp_dir().join(format!("iris-setup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_script(
            &dir,
            &["echo one".into(), "false".into(), "echo never".into()],
        )
        .unwrap();
        let out = std::process::Command::new(&launcher()[0])
            .args(&launcher()[1..])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "one\n");
        assert!(!out.status.success());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_command_sees_the_venv_and_its_own_argv_unchanged() {
        let dir = std::env::temp_dir().join(format!("iris-venv-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(".venv/bin")).unwrap();
        let argv = activated(&[
            "sh".into(),
            "-c".into(),
            "echo \"$VIRTUAL_ENV|${PATH%%:*}|$1\"".into(),
            "x".into(),
            "it's $HOME".into(),
        ]);
        let out = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(&dir)
            .output()
            .unwrap();
        let venv = format!("{}/.venv", dir.display());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{venv}|{venv}/bin|it's $HOME\n")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
