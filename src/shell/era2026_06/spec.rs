//! A 2026-06 `RunTaskRequest` as the core's `TaskSpec`: the fields both eras share go through
//! the task era's validation (`TaskSpec::from_request`), so every bad-input rule is one rule;
//! what only this era has goes into `ReconcileSpec`. Each refusal names the field.

use crate::core::{ARGV_BYTES_MAX, ARGV_COUNT_MAX};
use crate::core::{ReconcileSpec, SpecEra, TaskSpec, ValidationError};
use crate::proto;
use crate::proto::v2026_06::iris::job;
use crate::shell::blobs;
use crate::shell::era2026_06::task_env;

fn invalid(field: &'static str, message: impl Into<String>) -> ValidationError {
    ValidationError {
        field,
        message: message.into(),
    }
}

/// `/alice/job/0` -> (`alice/job/0`, `alice/job`, 0): the core's ids have no `/` at either end.
fn split_task_path(path: &str) -> Result<(&str, &str, i32), ValidationError> {
    let inner = path
        .strip_prefix('/')
        .ok_or_else(|| invalid("task_id", "must be a path starting with / (/user/job/0)"))?;
    let (job, index) = inner
        .rsplit_once('/')
        .ok_or_else(|| invalid("task_id", "must name a job and a task index (/user/job/0)"))?;
    let index = index
        .parse::<i32>()
        .ok()
        .filter(|i| *i >= 0)
        .ok_or_else(|| invalid("task_id", "must end with the task index (/user/job/0)"))?;
    Ok((inner, job, index))
}

/// A workdir file's name: a relative path inside the workdir.
fn check_workdir_path(field: &'static str, name: &str) -> Result<(), ValidationError> {
    let bad = name.is_empty()
        || name.len() > 4096
        || name.starts_with('/')
        || name.contains('\0')
        || name.split('/').any(|part| part == ".." || part.is_empty());
    if bad {
        return Err(invalid(
            field,
            format!("{name:?} must be a relative path inside the workdir, without .."),
        ));
    }
    Ok(())
}

fn timeout_ms(req: &job::RunTaskRequest) -> Result<u64, ValidationError> {
    let ms = req.timeout.as_ref().map_or(0, |d| d.milliseconds);
    u64::try_from(ms).map_err(|_| invalid("timeout", "must not be negative"))
}

/// The task era's request carrying what both eras share.
fn shared_request(
    req: &job::RunTaskRequest,
    job_id: &str,
    task_id: &str,
    task_index: i32,
) -> proto::worker::RunTaskRequest {
    let argv = req
        .entrypoint
        .as_ref()
        .and_then(|e| e.run_command.as_ref())
        .map(|c| c.argv.clone())
        .unwrap_or_default();
    let env = req.environment.clone().unwrap_or_default();
    proto::worker::RunTaskRequest {
        job_id: job_id.to_string(),
        task_id: task_id.to_string(),
        task_index,
        num_tasks: req.num_tasks,
        attempt_id: req.attempt_id,
        entrypoint: Some(proto::Entrypoint {
            kind: Some(proto::entrypoint::Kind::Command(proto::CommandEntrypoint {
                argv,
            })),
        }),
        // No pip_packages or extras: in this era the client's setup_commands install them
        // (`uv pip install`), and the task era's image build would install them twice. They
        // reach the task as IRIS_JOB_PIP_PACKAGES / IRIS_JOB_EXTRAS (`task_env`).
        environment: Some(proto::EnvironmentConfig {
            pip_packages: Vec::new(),
            env_vars: env.env_vars,
            extras: Vec::new(),
            docker_image: req.task_image.clone(),
            workspace: String::new(),
        }),
        bundle_gcs_path: String::new(),
        resources: None,
        timeout_seconds: 0,
        ports: req.ports.clone(),
    }
}

/// `bundle_id` and `workdir_file_refs` name blobs of the controller by sha256.
fn check_blob_refs(req: &job::RunTaskRequest) -> Result<(), ValidationError> {
    if !req.bundle_id.is_empty() && !blobs::is_sha256(&req.bundle_id) {
        return Err(invalid(
            "bundle_id",
            format!(
                "{:?} must be a sha256 (64 lowercase hex digits)",
                req.bundle_id
            ),
        ));
    }
    const FIELD: &str = "entrypoint.workdir_file_refs";
    let refs = req.entrypoint.iter().flat_map(|e| &e.workdir_file_refs);
    for (name, sha256) in refs {
        check_workdir_path(FIELD, name)?;
        if !blobs::is_sha256(sha256) {
            return Err(invalid(
                FIELD,
                format!("{name:?} -> {sha256:?} must name a sha256 (64 lowercase hex digits)"),
            ));
        }
    }
    Ok(())
}

/// Setup commands are shell lines: no NUL, within the argv budget.
fn check_setup_commands(commands: &[String]) -> Result<(), ValidationError> {
    const FIELD: &str = "entrypoint.setup_commands";
    let bytes: usize = commands.iter().map(String::len).sum();
    if commands.len() > ARGV_COUNT_MAX || bytes > ARGV_BYTES_MAX {
        return Err(invalid(
            FIELD,
            format!("must hold at most {ARGV_COUNT_MAX} lines and {ARGV_BYTES_MAX} bytes"),
        ));
    }
    if commands.iter().any(|c| c.contains('\0')) {
        return Err(invalid(FIELD, "must not contain NUL bytes"));
    }
    Ok(())
}

/// The TPU variant a request's device asks for (`auto` and empty included: any TPU).
fn tpu_variant(res: &job::ResourceSpecProto) -> Option<String> {
    match res.device.as_ref()?.device.as_ref()? {
        job::device_config::Device::Tpu(tpu) => Some(tpu.variant.clone()),
        _ => None,
    }
}

/// Validates `req` (the spec of desired attempt `attempt_uid`) into the core's vocabulary.
pub fn task_spec(
    req: &job::RunTaskRequest,
    attempt_uid: &str,
) -> Result<TaskSpec, ValidationError> {
    if attempt_uid.is_empty() {
        return Err(invalid("attempt_uid", "must not be empty"));
    }
    if !req.attempt_uid.is_empty() && req.attempt_uid != attempt_uid {
        return Err(invalid("attempt_uid", "differs from the desired attempt's"));
    }
    let (task_id, job_id, index) = split_task_path(&req.task_id)?;
    check_blob_refs(req)?;
    let mut spec = TaskSpec::from_request(&shared_request(req, job_id, task_id, index))?;
    spec.timeout_ms = timeout_ms(req)?;
    if let Some(res) = &req.resources {
        let non_negative =
            |field, v: i64| u64::try_from(v).map_err(|_| invalid(field, "must not be negative"));
        spec.resources.cpu_millicores = u32::try_from(non_negative(
            "resources.cpu_millicores",
            res.cpu_millicores.into(),
        )?)
        .unwrap_or(u32::MAX);
        spec.resources.memory_bytes = non_negative("resources.memory_bytes", res.memory_bytes)?;
        spec.resources.disk_bytes = non_negative("resources.disk_bytes", res.disk_bytes)?;
        spec.resources.tpu_variant = tpu_variant(res);
    }
    let files = req
        .entrypoint
        .as_ref()
        .map(|e| e.workdir_files.clone())
        .unwrap_or_default();
    for name in files.keys() {
        check_workdir_path("entrypoint.workdir_files", name)?;
    }
    let entrypoint = req.entrypoint.clone().unwrap_or_default();
    check_setup_commands(&entrypoint.setup_commands)?;
    spec.era = SpecEra::Reconcile(ReconcileSpec {
        attempt_uid: attempt_uid.to_string(),
        task_path: req.task_id.clone(),
        bundle_id: Some(req.bundle_id.clone()).filter(|b| !b.is_empty()),
        request_env: task_env::request_env(req)?,
        workdir_files: files.into_iter().collect(),
        workdir_file_refs: entrypoint.workdir_file_refs.into_iter().collect(),
        setup_commands: entrypoint.setup_commands,
    });
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(task_id: &str) -> job::RunTaskRequest {
        job::RunTaskRequest {
            task_id: task_id.to_string(),
            num_tasks: 2,
            entrypoint: Some(job::RuntimeEntrypoint {
                run_command: Some(job::CommandEntrypoint {
                    argv: vec!["echo".into(), "hi".into()],
                }),
                ..Default::default()
            }),
            attempt_id: 1,
            attempt_uid: "u1".into(),
            ..Default::default()
        }
    }

    const SHA: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn blob_refs_and_setup_commands_reach_the_spec() {
        let mut req = request("/a/j/0");
        req.bundle_id = SHA.into();
        let e = req.entrypoint.as_mut().unwrap();
        e.workdir_file_refs
            .insert("dir/data.bin".into(), SHA.into());
        e.setup_commands = vec!["echo one".into(), "echo two".into()];
        let r = task_spec(&req, "u1")
            .unwrap()
            .era
            .reconcile()
            .cloned()
            .unwrap();
        assert_eq!(r.bundle_id.as_deref(), Some(SHA));
        assert_eq!(
            r.workdir_file_refs,
            [("dir/data.bin".to_string(), SHA.to_string())]
        );
        assert_eq!(r.setup_commands, ["echo one", "echo two"]);
    }

    #[test]
    fn a_task_path_becomes_the_core_ids() {
        let spec = task_spec(&request("/alice/job/1"), "u1").unwrap();
        assert_eq!(spec.task_id.as_str(), "alice/job/1");
        assert_eq!(spec.job_id.as_str(), "alice/job");
        assert_eq!((spec.task_index, spec.attempt_id), (1, 1));
        let r = spec.era.reconcile().cloned().unwrap();
        assert_eq!(
            (r.attempt_uid.as_str(), r.task_path.as_str()),
            ("u1", "/alice/job/1")
        );
    }

    #[test]
    fn bad_input_names_the_field() {
        let cases: Vec<(job::RunTaskRequest, &str)> = vec![
            (request("alice/job/0"), "task_id"),
            (request("/alice/job/x"), "task_id"),
            (request("/../x/0"), "task_id"),
            (
                {
                    let mut r = request("/a/j/0");
                    r.entrypoint.as_mut().unwrap().run_command = None;
                    r
                },
                "entrypoint.command.argv",
            ),
            (
                {
                    let mut r = request("/a/j/0");
                    r.entrypoint
                        .as_mut()
                        .unwrap()
                        .workdir_files
                        .insert("../escape".into(), b"x".to_vec());
                    r
                },
                "entrypoint.workdir_files",
            ),
            (
                {
                    let mut r = request("/a/j/0");
                    r.timeout =
                        Some(crate::proto::v2026_06::iris::time::Duration { milliseconds: -1 });
                    r
                },
                "timeout",
            ),
            (
                {
                    let mut r = request("/a/j/0");
                    r.bundle_id = "abc".into();
                    r
                },
                "bundle_id",
            ),
            (
                {
                    let mut r = request("/a/j/0");
                    r.entrypoint
                        .as_mut()
                        .unwrap()
                        .workdir_file_refs
                        .insert("data.bin".into(), "not-a-hash".into());
                    r
                },
                "entrypoint.workdir_file_refs",
            ),
            (
                {
                    let mut r = request("/a/j/0");
                    r.entrypoint
                        .as_mut()
                        .unwrap()
                        .workdir_file_refs
                        .insert("/etc/passwd".into(), SHA.into());
                    r
                },
                "entrypoint.workdir_file_refs",
            ),
            (
                {
                    let mut r = request("/a/j/0");
                    r.entrypoint
                        .as_mut()
                        .unwrap()
                        .setup_commands
                        .push("echo \0".into());
                    r
                },
                "entrypoint.setup_commands",
            ),
        ];
        for (req, field) in cases {
            let err = task_spec(&req, "u1").unwrap_err();
            assert_eq!(err.field, field, "{req:?}: {err}");
        }
        assert_eq!(
            task_spec(&request("/a/j/0"), "").unwrap_err().field,
            "attempt_uid"
        );
    }
}
