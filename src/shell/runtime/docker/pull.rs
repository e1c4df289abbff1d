//! Images the engine lacks are pulled through it, one pull per image at a time (attempts that
//! want the same image wait for the one pull), each step in the attempt's build log. Credentials
//! come from the docker configuration the docker CLI would use (`$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`: `auths`, `credHelpers`, `credsStore`), since the engine's API takes
//! them from its caller. A refusal by the registry (no such image or tag, access denied) is the
//! task's fault; a registry or engine that does not answer is the machine's.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::CreateImageOptionsBuilder;
use serde_json::Value;
use tokio_stream::StreamExt;

use super::DockerRuntime;
use super::engine::{message, status_code};
use crate::core::LogSource;
use crate::shell::runtime::{AttemptSink, RuntimeError};

/// A credential helper must answer within this.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// One lock per image being pulled.
#[derive(Default)]
pub(super) struct Pulls(Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Pulls {
    fn lock_for(&self, image: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(image.to_string()).or_default().clone()
    }
}

impl DockerRuntime {
    /// `image` in the engine, pulled first if it is not.
    pub(super) async fn ensure_image(
        &self,
        image: &str,
        sink: &AttemptSink,
    ) -> Result<(), RuntimeError> {
        if self.has_image(image).await? {
            return Ok(());
        }
        let lock = self.pulls.lock_for(image);
        let _one_at_a_time = lock.lock().await;
        // Pulled by another attempt while this one waited.
        if self.has_image(image).await? {
            return Ok(());
        }
        sink.log(LogSource::Build, &format!("pulling image {image}"));
        let options = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let credentials = credentials_for(registry_of(image)).await;
        let mut stream = self.docker.create_image(Some(options), None, credentials);
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| pull_error(image, &e))?;
            if let Some(detail) = info.error_detail {
                let text = detail.message.unwrap_or_default();
                return Err(classify(image, &text));
            }
            let (Some(status), id) = (info.status, info.id.unwrap_or_default()) else {
                continue;
            };
            // One line per layer and step, not per progress tick.
            if seen.get(&id) != Some(&status) {
                let line = match id.is_empty() {
                    true => status.clone(),
                    false => format!("{id}: {status}"),
                };
                sink.log(LogSource::Build, &line);
                seen.insert(id, status);
            }
        }
        sink.log(LogSource::Build, &format!("pulled image {image}"));
        Ok(())
    }

    async fn has_image(&self, image: &str) -> Result<bool, RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if status_code(&e) == Some(404) => Ok(false),
            Err(e) => Err(RuntimeError::infrastructure(format!(
                "image {image}: {}",
                message(&e)
            ))),
        }
    }
}

/// An error of the pull call itself: the engine's answer is classified by its words; no answer
/// is the machine's fault.
fn pull_error(image: &str, e: &DockerError) -> RuntimeError {
    match e {
        DockerError::DockerResponseServerError { message, .. } => classify(image, message),
        DockerError::DockerStreamError { error } => classify(image, error),
        other => RuntimeError::infrastructure(format!("pulling {image}: {other}")),
    }
}

/// The registry's refusal (the image or tag does not exist, access denied, a malformed name) is
/// the task's fault, with the registry's words; anything else (unreachable, timed out, a
/// server error) the machine's.
fn classify(image: &str, text: &str) -> RuntimeError {
    let lower = text.to_ascii_lowercase();
    let refused = [
        "manifest unknown",
        "not found",
        "does not exist",
        "pull access denied",
        "unauthorized",
        "denied",
        "invalid reference format",
    ];
    let message = format!("pulling {image}: {text}");
    match refused.iter().any(|r| lower.contains(r)) {
        true => RuntimeError::new(message),
        false => RuntimeError::infrastructure(message),
    }
}

/// The registry host of an image reference (`docker.io` for Docker Hub's short names).
pub(super) fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The credentials the docker CLI would send for `registry`, if it has any.
async fn credentials_for(registry: &str) -> Option<DockerCredentials> {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".docker")))?;
    let text = tokio::fs::read_to_string(dir.join("config.json"))
        .await
        .ok()?;
    let config: Value = serde_json::from_str(&text).ok()?;
    let keys = config_keys(registry);
    let helper = keys
        .iter()
        .find_map(|k| config["credHelpers"][k].as_str())
        .or_else(|| config["credsStore"].as_str());
    if let Some(helper) = helper
        && let Some(found) = from_helper(helper, registry).await
    {
        return Some(found);
    }
    let auth = keys
        .iter()
        .find_map(|k| config["auths"][k]["auth"].as_str())?;
    Some(DockerCredentials {
        auth: Some(auth.to_string()),
        serveraddress: Some(registry.to_string()),
        ..DockerCredentials::default()
    })
}

/// The keys a registry may have in the docker config (Docker Hub's is its v1 URL).
fn config_keys(registry: &str) -> Vec<String> {
    match registry {
        "docker.io" => vec![
            "https://index.docker.io/v1/".to_string(),
            "docker.io".to_string(),
        ],
        host => vec![host.to_string(), format!("https://{host}")],
    }
}

/// `docker-credential-<helper> get`, the registry on stdin, as the docker CLI asks it.
async fn from_helper(helper: &str, registry: &str) -> Option<DockerCredentials> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    stdin.write_all(registry.as_bytes()).await.ok()?;
    drop(stdin);
    let out = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .ok()?
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let answer: Value = serde_json::from_slice(&out.stdout).ok()?;
    let (user, secret) = (answer["Username"].as_str()?, answer["Secret"].as_str()?);
    let mut credentials = DockerCredentials {
        serveraddress: Some(registry.to_string()),
        ..DockerCredentials::default()
    };
    // The helpers' convention for an identity token.
    if user == "<token>" {
        credentials.identitytoken = Some(secret.to_string());
    } else {
        credentials.username = Some(user.to_string());
        credentials.password = Some(secret.to_string());
    }
    Some(credentials)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_of_references() {
        assert_eq!(registry_of("python:3.12"), "docker.io");
        assert_eq!(registry_of("library/python"), "docker.io");
        assert_eq!(
            registry_of("127.0.0.1:5000/iris/busybox:1"),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_of("localhost/x"), "localhost");
        assert_eq!(
            registry_of("us-docker.pkg.dev/p/r/img@sha256:00"),
            "us-docker.pkg.dev"
        );
    }

    #[test]
    fn the_registrys_refusals_are_the_tasks_the_rest_the_machines() {
        let task = [
            "manifest for 127.0.0.1:5000/x:nope not found: manifest unknown: manifest unknown",
            "pull access denied for x, repository does not exist or may require 'docker login'",
            "invalid reference format",
        ];
        for text in task {
            assert!(!classify("x", text).infrastructure, "{text}");
        }
        let machine = [
            "Get \"http://127.0.0.1:5000/v2/\": dial tcp 127.0.0.1:5000: connect: connection refused",
            "received unexpected HTTP status: 503 Service Unavailable",
            "net/http: TLS handshake timeout",
        ];
        for text in machine {
            let e = classify("x", text);
            assert!(e.infrastructure, "{text}");
            assert!(e.message.contains(text), "the reason is kept");
        }
    }
}
