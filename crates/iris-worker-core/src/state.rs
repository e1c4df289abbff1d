//! Task states and the lifecycle they may move along.

use crate::proto;

/// The state of one task attempt. Mirrors `iris.cluster.TaskState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaskState {
    Pending,
    Building,
    Running,
    Succeeded,
    Failed,
    Killed,
    WorkerFailed,
    Unschedulable,
}

impl TaskState {
    pub const ALL: [TaskState; 8] = [
        TaskState::Pending,
        TaskState::Building,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::WorkerFailed,
        TaskState::Unschedulable,
    ];

    /// The full wire name, as tools and the JSON API print it.
    pub fn name(self) -> &'static str {
        self.to_proto().as_str_name()
    }

    /// A short lower-case name for tables and logs.
    pub fn short_name(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Building => "building",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Killed => "killed",
            TaskState::WorkerFailed => "worker_failed",
            TaskState::Unschedulable => "unschedulable",
        }
    }

    pub fn to_proto(self) -> proto::TaskState {
        match self {
            TaskState::Pending => proto::TaskState::Pending,
            TaskState::Building => proto::TaskState::Building,
            TaskState::Running => proto::TaskState::Running,
            TaskState::Succeeded => proto::TaskState::Succeeded,
            TaskState::Failed => proto::TaskState::Failed,
            TaskState::Killed => proto::TaskState::Killed,
            TaskState::WorkerFailed => proto::TaskState::WorkerFailed,
            TaskState::Unschedulable => proto::TaskState::Unschedulable,
        }
    }

    /// `None` for UNSPECIFIED and for numbers no state has.
    pub fn from_proto(value: i32) -> Option<TaskState> {
        match proto::TaskState::try_from(value).ok()? {
            proto::TaskState::Unspecified => None,
            proto::TaskState::Pending => Some(TaskState::Pending),
            proto::TaskState::Building => Some(TaskState::Building),
            proto::TaskState::Running => Some(TaskState::Running),
            proto::TaskState::Succeeded => Some(TaskState::Succeeded),
            proto::TaskState::Failed => Some(TaskState::Failed),
            proto::TaskState::Killed => Some(TaskState::Killed),
            proto::TaskState::WorkerFailed => Some(TaskState::WorkerFailed),
            proto::TaskState::Unschedulable => Some(TaskState::Unschedulable),
        }
    }
}

/// Terminal states (SUCCEEDED..UNSCHEDULABLE) are absorbing: nothing leaves them.
/// The proto name of a wire state value (`TASK_STATE_RUNNING`), for views of a `TaskStatus`.
pub fn state_name(state: i32) -> &'static str {
    TaskState::from_proto(state).map_or("TASK_STATE_UNSPECIFIED", TaskState::name)
}

/// The short name of a wire state value (`running`), for tables and pages.
pub fn short_state_name(state: i32) -> &'static str {
    TaskState::from_proto(state).map_or("unspecified", TaskState::short_name)
}

pub fn is_task_finished(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Succeeded
            | TaskState::Failed
            | TaskState::Killed
            | TaskState::WorkerFailed
            | TaskState::Unschedulable
    )
}

/// Whether the lifecycle allows `from -> to`.
///
/// PENDING -> BUILDING -> RUNNING -> terminal. PENDING and BUILDING may end early (FAILED, KILLED,
/// WORKER_FAILED, and UNSCHEDULABLE from PENDING). A state never moves to itself and never back.
pub fn is_legal_transition(from: TaskState, to: TaskState) -> bool {
    use TaskState::*;
    match from {
        Pending => matches!(
            to,
            Building | Failed | Killed | WorkerFailed | Unschedulable
        ),
        Building => matches!(to, Running | Failed | Killed | WorkerFailed),
        Running => matches!(to, Succeeded | Failed | Killed | WorkerFailed),
        Succeeded | Failed | Killed | WorkerFailed | Unschedulable => false,
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.short_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_are_absorbing() {
        for from in TaskState::ALL {
            for to in TaskState::ALL {
                if is_task_finished(from) {
                    assert!(!is_legal_transition(from, to), "{from} -> {to}");
                }
            }
        }
    }

    #[test]
    fn lifecycle_moves_forward_only() {
        assert!(is_legal_transition(TaskState::Pending, TaskState::Building));
        assert!(is_legal_transition(TaskState::Building, TaskState::Running));
        assert!(is_legal_transition(
            TaskState::Running,
            TaskState::Succeeded
        ));
        assert!(is_legal_transition(TaskState::Pending, TaskState::Killed));
        assert!(is_legal_transition(TaskState::Building, TaskState::Failed));
        assert!(!is_legal_transition(TaskState::Pending, TaskState::Running));
        assert!(!is_legal_transition(
            TaskState::Running,
            TaskState::Building
        ));
        assert!(!is_legal_transition(
            TaskState::Pending,
            TaskState::Succeeded
        ));
        assert!(!is_legal_transition(TaskState::Running, TaskState::Running));
    }

    #[test]
    fn proto_round_trip_and_names() {
        for state in TaskState::ALL {
            assert_eq!(TaskState::from_proto(state.to_proto() as i32), Some(state));
        }
        assert_eq!(TaskState::from_proto(0), None);
        assert_eq!(TaskState::from_proto(99), None);
        assert_eq!(TaskState::Running.name(), "TASK_STATE_RUNNING");
        assert!(is_task_finished(TaskState::WorkerFailed));
        assert!(!is_task_finished(TaskState::Running));
    }
}
