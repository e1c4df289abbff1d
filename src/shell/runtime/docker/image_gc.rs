//! Retention of the images this worker built (bundles with dependency files, pip packages): an
//! image goes once no attempt of this worker has used it for `delay` (Nomad's docker driver
//! `image_delay`, 3 minutes by default), so a job's later tasks and retries reuse it while a
//! finished job's images do not fill the disk. Pulled and base images are never removed: they
//! are shared with whatever else runs on the host.
//!
//! Invariants:
//! * An image an attempt holds (from its build until its release) is never removed: `pin`
//!   happens before the image is looked for, and the sweep claims only unpinned tags under the
//!   same lock.
//! * A build never sees a removal half done: `pin` waits while its tag is being removed, then
//!   finds it gone and builds it again.
//! * Only images labelled with this worker's id are touched: several workers may share one
//!   engine, and the tag carries the worker id so they never share a built image.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{ListImagesOptionsBuilder, RemoveImageOptionsBuilder};

use super::engine::{message, status_code};
use crate::core::AttemptKey;

/// The label every image this worker builds carries, with its worker id as value.
pub const BUILT_BY_LABEL: &str = "iris.built_by";

/// Which built images are in use, and since when the others have been idle.
#[derive(Default)]
pub struct BuiltImages {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    pinned: BTreeMap<AttemptKey, String>,
    idle_since: BTreeMap<String, Instant>,
    removing: BTreeSet<String>,
}

impl State {
    fn in_use(&self, tag: &str) -> bool {
        self.pinned.values().any(|t| t == tag)
    }
}

impl BuiltImages {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `attempt` uses `tag` until `unpin`; waits out a removal of it already under way.
    pub async fn pin(&self, attempt: &AttemptKey, tag: &str) {
        loop {
            {
                let mut state = self.state();
                if !state.removing.contains(tag) {
                    state.pinned.insert(attempt.clone(), tag.to_string());
                    state.idle_since.remove(tag);
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `attempt` is done with its image; the image's idle time starts when no attempt holds it.
    pub fn unpin(&self, attempt: &AttemptKey, now: Instant) {
        let mut state = self.state();
        if let Some(tag) = state.pinned.remove(attempt)
            && !state.in_use(&tag)
        {
            state.idle_since.insert(tag, now);
        }
    }

    /// Of the built images present, those idle for `delay`, marked as being removed. An image
    /// first seen here (built before a restart) starts its idle time now.
    pub fn claim_idle(&self, present: &[String], delay: Duration, now: Instant) -> Vec<String> {
        let mut state = self.state();
        let mut claimed = Vec::new();
        for tag in present {
            if state.in_use(tag) || state.removing.contains(tag) {
                continue;
            }
            let since = *state.idle_since.entry(tag.clone()).or_insert(now);
            if now.duration_since(since) >= delay {
                state.removing.insert(tag.clone());
                claimed.push(tag.clone());
            }
        }
        // Tags gone from the engine (removed by hand) are forgotten.
        state.idle_since.retain(|tag, _| present.contains(tag));
        claimed
    }

    /// The removal of `tag` is over, done or not.
    pub fn removed(&self, tag: &str) {
        let mut state = self.state();
        state.removing.remove(tag);
        state.idle_since.remove(tag);
    }
}

/// How often the sweep looks: often enough to keep to `delay`, at most once a minute.
fn sweep_interval(delay: Duration) -> Duration {
    (delay / 2).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Sweeps this worker's idle built images every so often, for as long as the worker runs.
pub fn spawn_sweeper(docker: Docker, images: Arc<BuiltImages>, worker_id: String, delay: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweep_interval(delay));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = sweep(&docker, &images, &worker_id, delay).await {
                tracing::warn!("built image retention: {e}");
            }
        }
    });
}

async fn sweep(
    docker: &Docker,
    images: &BuiltImages,
    worker_id: &str,
    delay: Duration,
) -> Result<(), String> {
    let filters = HashMap::from([("label", vec![format!("{BUILT_BY_LABEL}={worker_id}")])]);
    let listed = docker
        .list_images(Some(
            ListImagesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| message(&e))?;
    let present: Vec<String> = listed
        .into_iter()
        .flat_map(|image| image.repo_tags)
        .filter(|tag| tag != "<none>:<none>")
        .collect();
    for tag in images.claim_idle(&present, delay, Instant::now()) {
        // Not forced: an image a container still uses (one left from a crash) stays.
        let options = RemoveImageOptionsBuilder::default().build();
        match docker.remove_image(&tag, Some(options), None).await {
            Ok(_) => tracing::info!("removed built image {tag}: unused for {delay:?}"),
            Err(e) if matches!(status_code(&e), Some(404 | 409)) => {}
            Err(e) => tracing::warn!("removing built image {tag}: {}", message(&e)),
        }
        images.removed(&tag);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::key;

    fn tags(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn pinned_images_stay_and_idle_ones_go_after_the_delay() {
        let images = BuiltImages::default();
        let delay = Duration::from_secs(60);
        let t0 = Instant::now();
        let (a, b) = (key("job/task-0", 0), key("job/task-1", 0));
        images.pin(&a, "iris-job:1").await;
        images.pin(&b, "iris-job:1").await;
        let present = tags(&["iris-job:1", "iris-old:2"]);
        // The unknown image starts idling now; the pinned one is not a candidate.
        assert!(images.claim_idle(&present, delay, t0).is_empty());
        images.unpin(&a, t0);
        let later = t0 + delay;
        assert_eq!(
            images.claim_idle(&present, delay, later),
            tags(&["iris-old:2"])
        );
        images.removed("iris-old:2");
        // Still held by b; once b is done, idle from then.
        assert!(
            images
                .claim_idle(&tags(&["iris-job:1"]), delay, later)
                .is_empty()
        );
        images.unpin(&b, later);
        let present = tags(&["iris-job:1"]);
        assert!(images.claim_idle(&present, delay, later).is_empty());
        assert_eq!(
            images.claim_idle(&present, delay, later + delay),
            tags(&["iris-job:1"])
        );
    }

    #[tokio::test]
    async fn a_build_waits_out_a_removal_of_its_tag() {
        let images = Arc::new(BuiltImages::default());
        let t0 = Instant::now();
        let present = tags(&["iris-job:1"]);
        assert!(images.claim_idle(&present, Duration::ZERO, t0).len() == 1);
        let pinning = {
            let images = images.clone();
            tokio::spawn(async move { images.pin(&key("job/task-0", 0), "iris-job:1").await })
        };
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!pinning.is_finished(), "pin must wait for the removal");
        images.removed("iris-job:1");
        pinning.await.unwrap();
        assert!(images.claim_idle(&present, Duration::ZERO, t0).is_empty());
    }
}
