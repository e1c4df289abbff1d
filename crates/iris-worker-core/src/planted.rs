//! Deliberately broken behaviours, so the simulator (sim/) can prove that it catches each of
//! them. Only a build with the `planted` feature can choose one (`CoreConfig::planted`); in any
//! other build `CoreConfig::planted()` is a constant `false` and the branches compile away.

/// Which bug a core plants (`CoreConfig::planted`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlantedBug {
    /// A report whose send failed is dropped instead of retried.
    ReportNotRetried,
    /// A kill sends SIGTERM and never escalates to SIGKILL.
    KillWithoutEscalation,
    /// A killed attempt's ports go back to the pool at SIGTERM, before its container is gone.
    PortsReleasedAtKill,
    /// Log lines wait in a 64 KiB user-space buffer (flushed when full, at close and in a
    /// destructor) instead of being written through: a `kill -9` loses the ones already served.
    BufferedLogs,
    /// Reconcile (2026-06): a desired spec naming an attempt the worker already finished starts
    /// it again (a controller resends the spec when an answer was lost).
    ReconcileRerunsFinished,
}

impl PlantedBug {
    pub const ALL: [PlantedBug; 5] = [
        PlantedBug::ReportNotRetried,
        PlantedBug::KillWithoutEscalation,
        PlantedBug::PortsReleasedAtKill,
        PlantedBug::BufferedLogs,
        PlantedBug::ReconcileRerunsFinished,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::ReportNotRetried => "report-not-retried",
            PlantedBug::KillWithoutEscalation => "kill-without-escalation",
            PlantedBug::PortsReleasedAtKill => "ports-released-at-kill",
            PlantedBug::BufferedLogs => "buffered-logs",
            PlantedBug::ReconcileRerunsFinished => "reconcile-reruns-finished",
        }
    }

    pub fn from_name(name: &str) -> Option<PlantedBug> {
        PlantedBug::ALL.into_iter().find(|b| b.name() == name)
    }
}
