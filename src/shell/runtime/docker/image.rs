//! Image builds: a bundle with dependency files (or a task asking for pip packages) gets an image
//! built on its base with them installed by uv, tagged by the job and a hash of everything that
//! went in, and reused while that does not change.

use std::collections::HashMap;

use bollard::query_parameters::BuildImageOptionsBuilder;
use tokio_stream::StreamExt;

use super::DockerRuntime;
use super::engine::message;
use super::image_gc::BUILT_BY_LABEL;
use super::naming::sanitized;
use crate::core::{AttemptKey, BuildSpec, LogSource};
use crate::shell::logs::lines::LineSplitter;
use crate::shell::runtime::{AttemptSink, BuiltImage, RuntimeError};

/// Files of a bundle that decide its image; the rest of the bundle is mounted, not baked in.
pub const DEPENDENCY_FILES: [&str; 3] = ["requirements.txt", "pyproject.toml", "uv.lock"];

fn dependency_files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    DEPENDENCY_FILES
        .iter()
        .filter_map(|name| Some((name.to_string(), std::fs::read(dir.join(name)).ok()?)))
        .collect()
}

/// What an image is built from: the base image, the bundle's dependency files, and what the task
/// asks to install.
pub struct Recipe<'a> {
    pub base: &'a str,
    pub deps: &'a [(String, Vec<u8>)],
    pub pip_packages: &'a [String],
    pub extras: &'a [String],
}

impl Recipe<'_> {
    /// Nothing to install: the base image serves as it is.
    pub fn is_plain(&self) -> bool {
        self.deps.is_empty() && self.pip_packages.is_empty()
    }

    fn has(&self, name: &str) -> bool {
        self.deps.iter().any(|(n, _)| n == name)
    }

    /// The generated Dockerfile. A pyproject gets a project venv (`uv sync`, frozen when there is
    /// a lock, one `--extra` per extra) that the task's PATH then starts with; requirements and
    /// pip packages go into that venv, or the system's when there is none.
    pub fn dockerfile(&self) -> String {
        let mut out = format!("FROM {}\nWORKDIR /app\n", self.base);
        for (name, _) in self.deps {
            out.push_str(&format!("COPY {name} /app/{name}\n"));
        }
        let venv = self.has("pyproject.toml");
        if venv {
            let frozen = if self.has("uv.lock") { " --frozen" } else { "" };
            let extras: String = self
                .extras
                .iter()
                .map(|e| format!(" --extra {}", quoted(e)))
                .collect();
            out.push_str(&format!(
                "RUN uv sync{frozen} --no-install-project{extras}\n"
            ));
            out.push_str("ENV VIRTUAL_ENV=/app/.venv PATH=/app/.venv/bin:$PATH\n");
        }
        let target = if venv { "" } else { " --system" };
        if self.has("requirements.txt") {
            out.push_str(&format!(
                "RUN uv pip install{target} -r /app/requirements.txt\n"
            ));
        }
        if !self.pip_packages.is_empty() {
            let packages: Vec<String> = self.pip_packages.iter().map(|p| quoted(p)).collect();
            out.push_str(&format!(
                "RUN uv pip install{target} {}\n",
                packages.join(" ")
            ));
        }
        out.push_str("LABEL iris.managed_image=true\n");
        out
    }
}

/// A shell word that reaches the command unchanged, whatever the task sent.
fn quoted(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// `iris-<job>:<hash>`: a valid tag whatever characters the job id has. The hash covers the
/// building worker's id too, so workers sharing an engine never remove each other's images.
pub fn image_tag(worker_id: &str, job_id: &str, recipe: &Recipe<'_>) -> String {
    let mut repo = sanitized(&job_id.to_ascii_lowercase(), '-', 100);
    repo = repo
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |bytes: &[u8]| {
        for b in bytes.iter().chain(b"\0") {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    // The Dockerfile names the base, the files and the packages; then the files' contents.
    mix(worker_id.as_bytes());
    mix(recipe.dockerfile().as_bytes());
    for (name, content) in recipe.deps {
        mix(name.as_bytes());
        mix(content);
    }
    format!(
        "iris-{}:{hash:016x}",
        if repo.is_empty() { "job" } else { &repo }
    )
}

/// The build context: the generated Dockerfile and the dependency files, as a tar.
fn build_context(recipe: &Recipe<'_>) -> std::io::Result<Vec<u8>> {
    let dockerfile = recipe.dockerfile();
    let mut archive = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        archive.append_data(&mut header, name, data)
    };
    add("Dockerfile", dockerfile.as_bytes())?;
    for (name, content) in recipe.deps {
        add(name, content)?;
    }
    archive.into_inner()
}

impl DockerRuntime {
    /// Builds (or reuses) the image of a bundle: the base image plus the bundle's dependency
    /// files, installed. The tag names the job and hashes the base and those files.
    pub(super) async fn build_from_bundle(
        &self,
        attempt: &AttemptKey,
        spec: &BuildSpec,
        base: &str,
        sink: AttemptSink,
    ) -> Result<BuiltImage, RuntimeError> {
        let mut dir = self.config.cache_dir.join(&spec.workdir);
        if let Some(ws) = &spec.workspace {
            dir.push(ws);
        }
        let deps = tokio::task::spawn_blocking(move || dependency_files(&dir))
            .await
            .map_err(|e| RuntimeError::new(e.to_string()))?;
        let recipe = Recipe {
            base,
            deps: &deps,
            pip_packages: &spec.pip_packages,
            extras: &spec.extras,
        };
        if recipe.is_plain() {
            sink.log(LogSource::Build, &format!("using image {base}"));
            return Ok(BuiltImage {
                image: Some(base.to_string()),
                from_cache: true,
            });
        }
        let tag = image_tag(&self.config.worker_id, &spec.job_id, &recipe);
        // Held from before the image is looked for: retention never removes it under us.
        self.built_images.pin(attempt, &tag).await;
        if self.docker.inspect_image(&tag).await.is_ok() {
            sink.log(LogSource::Build, &format!("reusing image {tag}"));
            return Ok(BuiltImage {
                image: Some(tag),
                from_cache: true,
            });
        }
        sink.log(LogSource::Build, &format!("building image {tag} on {base}"));
        let context = build_context(&recipe).map_err(RuntimeError::from)?;
        let labels = HashMap::from([(BUILT_BY_LABEL, self.config.worker_id.as_str())]);
        let options = BuildImageOptionsBuilder::default()
            .t(&tag)
            .labels(&labels)
            .rm(true)
            .forcerm(true)
            .build();
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_full(context.into())));
        let mut splitter = LineSplitter::default();
        let mut emit = |region: &[u8]| sink.log_region(LogSource::Build, region);
        while let Some(item) = stream.next().await {
            let info =
                item.map_err(|e| RuntimeError::new(format!("image build: {}", message(&e))))?;
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Err(RuntimeError::new(format!("image build: {detail}")));
            }
            if let Some(text) = info.stream {
                splitter.feed(text.as_bytes(), &mut emit);
            }
        }
        splitter.finish(&mut emit);
        Ok(BuiltImage {
            image: Some(tag),
            from_cache: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tags_are_valid_for_any_job_id() {
        let valid = |tag: &str| {
            let (repo, hash) = tag.split_once(':').unwrap();
            repo.starts_with("iris-")
                && repo
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-".contains(c))
                && hash.len() == 16
        };
        fn tag_of(
            job: &str,
            base: &str,
            deps: &[(String, Vec<u8>)],
            pip: &[String],
            extras: &[String],
        ) -> String {
            let recipe = Recipe {
                base,
                deps,
                pip_packages: pip,
                extras,
            };
            image_tag("w1", job, &recipe)
        }
        for job in ["Job A/b", "../x", "ü-job", "---", "a".repeat(300).as_str()] {
            let tag = tag_of(job, "python:3.12", &[], &[], &[]);
            assert!(valid(&tag), "{job}: {tag}");
        }
        let x = [("requirements.txt".to_string(), b"x".to_vec())];
        let y = [("requirements.txt".to_string(), b"y".to_vec())];
        let tag = |base, deps: &[(String, Vec<u8>)], pip: &[String], extras: &[String]| {
            tag_of("j", base, deps, pip, extras)
        };
        assert_eq!(tag("b", &x, &[], &[]), tag("b", &x, &[], &[]));
        assert_ne!(tag("b", &x, &[], &[]), tag("b", &y, &[], &[]));
        assert_ne!(tag("b", &x, &[], &[]), tag("c", &x, &[], &[]));
        let numpy = ["numpy".to_string()];
        assert_ne!(
            tag("b", &x, &[], &[]),
            tag("b", &x, &numpy, &[]),
            "pip packages count"
        );
        let recipe = Recipe {
            base: "b",
            deps: &x,
            pip_packages: &[],
            extras: &[],
        };
        assert_ne!(
            image_tag("w1", "j", &recipe),
            image_tag("w2", "j", &recipe),
            "workers on one engine never share a built image"
        );
        let project = [("pyproject.toml".to_string(), b"x".to_vec())];
        assert_ne!(
            tag("b", &project, &[], &[]),
            tag("b", &project, &[], &numpy),
            "extras count"
        );
    }

    #[test]
    fn dockerfiles_install_with_uv_and_honour_extras_and_packages() {
        let file = |name: &str| (name.to_string(), Vec::new());
        let project = [file("pyproject.toml"), file("uv.lock")];
        let pip = ["numpy==2.1".to_string(), "it's".to_string()];
        let extras = ["tpu".to_string()];
        let with_venv = Recipe {
            base: "py:3",
            deps: &project,
            pip_packages: &pip,
            extras: &extras,
        };
        insta::assert_snapshot!(with_venv.dockerfile(), @r"
        FROM py:3
        WORKDIR /app
        COPY pyproject.toml /app/pyproject.toml
        COPY uv.lock /app/uv.lock
        RUN uv sync --frozen --no-install-project --extra 'tpu'
        ENV VIRTUAL_ENV=/app/.venv PATH=/app/.venv/bin:$PATH
        RUN uv pip install 'numpy==2.1' 'it'\''s'
        LABEL iris.managed_image=true
        ");
        let requirements = [file("requirements.txt")];
        let system = Recipe {
            base: "py:3",
            deps: &requirements,
            pip_packages: &[],
            extras: &[],
        };
        assert!(
            system
                .dockerfile()
                .contains("RUN uv pip install --system -r /app/requirements.txt\n")
        );
        assert!(!system.is_plain());
        let plain = Recipe {
            deps: &[],
            ..system
        };
        assert!(
            plain.is_plain(),
            "a bundle without dependency files uses its base image"
        );
    }
}
