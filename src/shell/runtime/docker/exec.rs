//! `docker exec` into a running attempt's container through the engine (Iris runs the docker
//! CLI): output attached, each stream bounded, the exit code from the exec's inspect.

use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use tokio_stream::StreamExt;

use super::DockerRuntime;
use super::engine::message;
use crate::core::ContainerSpec;
use crate::shell::runtime::RuntimeError;
use crate::shell::runtime::exec::{Bounded, ExecOutput};

impl DockerRuntime {
    pub(super) async fn exec_in(
        &self,
        spec: &ContainerSpec,
        command: &[String],
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, RuntimeError> {
        let name = self.name(&spec.attempt);
        let run = self.exec_attached(&name, command);
        match timeout {
            None => run.await,
            Some(limit) => tokio::time::timeout(limit, run).await.map_err(|_| {
                RuntimeError::new(format!(
                    "the command did not finish within {}s",
                    limit.as_secs()
                ))
            })?,
        }
    }

    async fn exec_attached(
        &self,
        name: &str,
        command: &[String],
    ) -> Result<ExecOutput, RuntimeError> {
        let engine = |e: bollard::errors::Error| RuntimeError::new(message(&e));
        let options = CreateExecOptions {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(command.to_vec()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(name, options)
            .await
            .map_err(engine)?;
        let (mut out, mut err) = (Bounded::default(), Bounded::default());
        if let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(engine)?
        {
            while let Some(chunk) = output.next().await {
                match chunk.map_err(engine)? {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        out.push(&message)
                    }
                    LogOutput::StdErr { message } => err.push(&message),
                    LogOutput::StdIn { .. } => {}
                }
            }
        }
        let inspected = self
            .docker
            .inspect_exec(&created.id)
            .await
            .map_err(engine)?;
        Ok(ExecOutput {
            exit_code: inspected.exit_code.unwrap_or(-1) as i32,
            stdout: out.into_text(),
            stderr: err.into_text(),
        })
    }
}
