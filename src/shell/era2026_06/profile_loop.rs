//! Iris's periodic profiles: every `every`, a CPU profile (py-spy, speedscope, `seconds` long)
//! of each running attempt, one after another, into `iris.profile` with the trigger
//! `periodic`; the dashboard lists them beside the ones taken on demand. A task without py-spy
//! or without a Python process has none (logged at debug: that is most non-Python tasks).

use std::time::Duration;

use crate::shell::driver::DriverHandle;
use crate::shell::profile::{self, PERIODIC, Profile};
use crate::shell::stats::tables::StatsTables;

pub struct ProfileLoop {
    pub driver: DriverHandle,
    pub tables: StatsTables,
    pub worker_id: String,
    pub every: Duration,
    pub seconds: u32,
}

impl ProfileLoop {
    pub async fn run(self) {
        let wanted = Profile::Cpu {
            seconds: self.seconds,
            rate_hz: profile::DEFAULT_RATE_HZ,
            format: profile::cpu_format(2),
        };
        loop {
            tokio::time::sleep(self.every).await;
            let Ok(targets) = self.driver.push_targets().await else {
                return;
            };
            for (key, task_path, finished) in targets {
                if finished {
                    continue;
                }
                let taken = profile::capture(&self.driver, key.task_id.clone(), &wanted).await;
                let data = match taken {
                    Err(_) => return,
                    Ok(Err(why)) => {
                        tracing::debug!(attempt = %key, why, "no periodic profile");
                        continue;
                    }
                    Ok(Ok(data)) => data,
                };
                let row = profile::Row {
                    source: &task_path,
                    attempt_id: Some(i64::from(key.attempt_id)),
                    vm_id: &self.worker_id,
                    trigger: PERIODIC,
                };
                self.tables.profiles.push(row.of(&wanted, data));
            }
        }
    }
}
