//! A preempted or maintained GCE VM says so on its metadata server before it goes
//! (`instance/preempted` becomes `TRUE`; `instance/maintenance-event` becomes
//! `TERMINATE_ON_HOST_MAINTENANCE`): the worker long-polls both, and on either stops taking
//! work, reports itself unhealthy with the reason and ends every running attempt as the
//! worker's failure at once, so the controller retries them elsewhere now rather than after
//! it gives up on a vanished worker (Iris's worker does not watch; its controller notices only
//! when Reconcile calls fail).

use std::time::Duration;

use crate::shell::driver::{Command, DriverHandle};
use crate::shell::gce::MetadataServer;
use crate::shell::trouble::Troubles;

/// How long one long poll waits for a change.
const POLL_WAIT: Duration = Duration::from_secs(60);
/// Between failed polls (a server that does not answer).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// One watched key: its path and the values that mean the VM is going away, with the reason.
struct Watch {
    path: &'static str,
    doomed: fn(&str) -> Option<String>,
}

const WATCHES: &[Watch] = &[
    Watch {
        path: "preempted",
        doomed: preempted,
    },
    Watch {
        path: "maintenance-event",
        doomed: terminating,
    },
];

pub fn preempted(value: &str) -> Option<String> {
    value
        .eq_ignore_ascii_case("true")
        .then(|| "the VM was preempted (GCE metadata instance/preempted is TRUE)".to_string())
}

pub fn terminating(value: &str) -> Option<String> {
    (value == "TERMINATE_ON_HOST_MAINTENANCE").then(|| {
        "the VM is being terminated for host maintenance (GCE metadata instance/maintenance-event)"
            .to_string()
    })
}

/// Watches the VM's fate for as long as the worker runs.
pub fn spawn(server: MetadataServer, driver: DriverHandle, troubles: Troubles) {
    for watch in WATCHES {
        let (server, driver, troubles) = (server.clone(), driver.clone(), troubles.clone());
        tokio::spawn(async move { watch_one(watch, &server, &driver, &troubles).await });
    }
}

async fn watch_one(
    watch: &Watch,
    server: &MetadataServer,
    driver: &DriverHandle,
    troubles: &Troubles,
) {
    // No etag yet: the first poll answers at once with the value and its etag.
    let mut etag = String::from("0");
    let mut warned = false;
    loop {
        match server.wait_for_change(watch.path, &etag, POLL_WAIT).await {
            Ok((value, new_etag)) => {
                warned = false;
                if let Some(reason) = (watch.doomed)(&value) {
                    evacuate(reason, driver, troubles).await;
                    return;
                }
                // A server that sends no etag answers every poll at once: poll it gently.
                if new_etag.is_empty() {
                    tokio::time::sleep(RETRY_AFTER).await;
                }
                etag = new_etag;
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, key = watch.path, "watching the VM's metadata; retrying");
                    warned = true;
                }
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

async fn evacuate(reason: String, driver: &DriverHandle, troubles: &Troubles) {
    tracing::error!(
        "{reason}: taking no new work, ending every running task as the worker's failure"
    );
    troubles.set("preemption", reason.clone());
    let ended = driver
        .ask(|reply| Command::Evacuate { reason, reply })
        .await
        .unwrap_or(0);
    tracing::warn!(ended, "attempts ended by the VM's end");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_vms_end_evacuates() {
        assert!(preempted("TRUE").is_some() && preempted("FALSE").is_none());
        assert!(terminating("TERMINATE_ON_HOST_MAINTENANCE").is_some());
        assert!(terminating("MIGRATE_ON_HOST_MAINTENANCE").is_none());
        assert!(terminating("NONE").is_none());
    }
}
