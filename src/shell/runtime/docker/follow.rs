//! A running container followed: its output into the attempt's log (continuing after an
//! adoption without taking a line twice) and its exit (code, signal, OOM, finish time).

use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{LogsOptionsBuilder, WaitContainerOptionsBuilder};
use tokio_stream::StreamExt;

use super::engine::message;
use super::timestamps::{parse_rfc3339_ms, split_timestamp};
use crate::core::{ExitStatus, LogSource};
use crate::shell::logs::lines::{LineSplitter, Lines};
use crate::shell::logs::output_mark::{OutputMark, ResumeFilter};
use crate::shell::runtime::AttemptSink;

/// How long to wait for a late OOM flag before reporting a SIGKILL.
const OOM_RECHECK: Duration = Duration::from_millis(500);
/// How long the log stream may drain after the container exits.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Follows the container's output into the attempt's log until the stream ends. After an
/// adoption, `after` says where the log left off: what it has is not taken twice.
/// Follows the container's output into the attempt's log until the stream ends. After an
/// adoption, `after` says where the log left off: what it has is not taken twice.
pub(super) async fn follow_logs(
    docker: Docker,
    name: String,
    sink: AttemptSink,
    after: Option<OutputMark>,
) {
    let mut options = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .timestamps(true);
    if let Some(mark) = after {
        options = options.since(i32::try_from(mark.timestamp_ms / 1000).unwrap_or(0));
    }
    let options = options.build();
    let mut stream = docker.logs(&name, Some(options));
    let mut out = LineSplitter::default();
    let mut err = LineSplitter::default();
    // One filter for both streams: the mark counts stdout and stderr lines together.
    let filter = std::sync::Mutex::new(ResumeFilter::new(after));
    let emit = |source: LogSource| {
        let sink = sink.clone();
        let filter = &filter;
        move |region: &[u8]| {
            for line in Lines::new(region) {
                let (ms, data) = split_timestamp(line);
                if filter.lock().unwrap_or_else(|p| p.into_inner()).is_new(ms) {
                    sink.log_line_at(ms, source, data);
                }
            }
        }
    };
    let (mut emit_out, mut emit_err) = (emit(LogSource::Stdout), emit(LogSource::Stderr));
    while let Some(Ok(chunk)) = stream.next().await {
        match chunk {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                out.feed(&message, &mut emit_out)
            }
            LogOutput::StdErr { message } => err.feed(&message, &mut emit_err),
            LogOutput::StdIn { .. } => {}
        }
    }
    out.finish(&mut emit_out);
    err.finish(&mut emit_err);
}

/// Waits for the exit (event-driven), lets the logs drain, then reports code, signal and OOM.
pub(super) async fn watch_exit(
    docker: Docker,
    name: String,
    logs: tokio::task::JoinHandle<()>,
    sink: AttemptSink,
) {
    let options = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let waited = docker.wait_container(&name, Some(options)).next().await;
    let code = match waited {
        Some(Ok(response)) => response.status_code,
        Some(Err(DockerError::DockerContainerWaitError { code, .. })) => code,
        Some(Err(e)) => {
            return sink.lost(format!("waiting for the container failed: {}", message(&e)));
        }
        None => return sink.lost("the engine closed the wait stream".to_string()),
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, logs).await;
    let inspect = || async {
        docker
            .inspect_container(&name, None)
            .await
            .ok()
            .and_then(|c| c.state)
    };
    let mut state = inspect().await;
    let mut oom_killed = state.as_ref().and_then(|s| s.oom_killed).unwrap_or(false);
    // The engine may record the OOM event a moment after the exit (seen with cgroup v2): a
    // SIGKILLed container gets a second look before it is called a plain SIGKILL.
    if code == 137 && !oom_killed {
        tokio::time::sleep(OOM_RECHECK).await;
        state = inspect().await.or(state);
        oom_killed = state.as_ref().and_then(|s| s.oom_killed).unwrap_or(false);
    }
    let finished_at_ms = state
        .as_ref()
        .and_then(|s| s.finished_at.as_deref())
        .and_then(|t| parse_rfc3339_ms(t.as_bytes()))
        .and_then(|ms| u64::try_from(ms).ok());
    let code = state.and_then(|s| s.exit_code).unwrap_or(code);
    let code = i32::try_from(code).unwrap_or(-1);
    // The engine reports death by signal N as 128 + N.
    let signal = (129..160).contains(&code).then_some(code - 128);
    sink.exited(ExitStatus {
        code: Some(code),
        signal,
        oom_killed,
        finished_at_ms,
        last_stderr: None,
        machine_fault: None,
    });
}
