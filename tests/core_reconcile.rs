//! The core under a reconcile-era controller (Iris 2026-06): what each desired set does and what
//! the answer says, with the 2026-06 adapter's own translation of RunTaskRequests.

mod common;

use common::*;
use iris_worker::core::*;
use iris_worker::proto::v2026_06::iris::job;
use iris_worker::shell::era2026_06::spec::task_spec;

fn reconcile_config() -> CoreConfig {
    CoreConfig {
        era: Era::Reconcile { ships_logs: false },
        controller_address: Some("127.0.0.1:10000".into()),
        retention: Retention {
            finished_tasks_max: 0,
            ..Retention::default()
        },
        ..config()
    }
}

fn run(uid: &str, task_path: &str, attempt_id: i32) -> Desired {
    let request = job::RunTaskRequest {
        task_id: task_path.into(),
        num_tasks: 1,
        entrypoint: Some(job::RuntimeEntrypoint {
            run_command: Some(job::CommandEntrypoint {
                argv: vec!["true".into()],
            }),
            ..Default::default()
        }),
        attempt_id,
        attempt_uid: uid.into(),
        ..Default::default()
    };
    Desired {
        attempt_uid: uid.into(),
        intent: Intent::Run(Some(Box::new(task_spec(&request, uid).unwrap()))),
    }
}

fn again(uid: &str) -> Desired {
    Desired {
        attempt_uid: uid.into(),
        intent: Intent::Run(None),
    }
}

fn tick(h: &mut Harness, desired: Vec<Desired>) -> Vec<(String, Option<TaskState>, Option<i32>)> {
    let observed = h.core.reconcile(h.now, desired);
    h.drain();
    observed
        .into_iter()
        .map(|o| (o.attempt_uid, o.state, o.exit_code))
        .collect()
}

fn obs(
    uid: &str,
    state: Option<TaskState>,
    exit: Option<i32>,
) -> (String, Option<TaskState>, Option<i32>) {
    (uid.to_string(), state, exit)
}

#[test]
fn a_new_attempt_runs_and_a_fast_exit_still_passes_running() {
    let mut h = Harness::new(reconcile_config());
    assert_eq!(
        tick(&mut h, vec![run("u1", "/a/j/0", 0)]),
        [obs("u1", Some(TaskState::Building), None)]
    );
    let key = key("a/j/0", 0);
    h.start(&key);
    h.event(Event::Exited {
        attempt: key,
        status: ExitStatus::code(0),
    });
    // Finished between two ticks: RUNNING first, then the terminal state with its exit code.
    assert_eq!(
        tick(&mut h, vec![again("u1")]),
        [obs("u1", Some(TaskState::Running), None)]
    );
    assert_eq!(
        tick(&mut h, vec![again("u1")]),
        [obs("u1", Some(TaskState::Succeeded), Some(0))]
    );
    // No task-era reports in this era.
    assert!(!h.effects.iter().any(|e| matches!(
        e,
        Effect::ReportTaskState { .. } | Effect::RegisterWorker { .. }
    )));
}

#[test]
fn unknown_uids_are_missing_and_a_stop_kills() {
    let mut h = Harness::new(reconcile_config());
    let stop = |uid: &str| Desired {
        attempt_uid: uid.into(),
        intent: Intent::Stop,
    };
    assert_eq!(
        tick(&mut h, vec![again("nope"), stop("gone")]),
        [obs("nope", None, None), obs("gone", None, None)]
    );
    tick(&mut h, vec![run("u1", "/a/j/0", 0)]);
    let key = key("a/j/0", 0);
    h.start(&key);
    tick(&mut h, vec![stop("u1")]);
    assert!(h.effects.iter().any(|e| matches!(
        e,
        Effect::SignalContainer {
            signal: Signal::Term,
            ..
        }
    )));
}

#[test]
fn an_undesired_live_attempt_is_killed_and_observed() {
    let mut h = Harness::new(reconcile_config());
    tick(&mut h, vec![run("u1", "/a/j/0", 0)]);
    h.start(&key("a/j/0", 0));
    let answer = tick(&mut h, vec![]);
    assert_eq!(answer, [obs("u1", Some(TaskState::Running), None)]);
    assert!(h.effects.iter().any(|e| matches!(
        e,
        Effect::SignalContainer {
            signal: Signal::Term,
            ..
        }
    )));
}

#[test]
fn a_lower_or_equal_attempt_of_a_live_task_is_ignored_a_higher_supersedes() {
    let mut h = Harness::new(reconcile_config());
    tick(&mut h, vec![run("u1", "/a/j/0", 1)]);
    let answer = tick(&mut h, vec![again("u1"), run("u0", "/a/j/0", 0)]);
    assert_eq!(
        answer[1],
        obs("u0", None, None),
        "a stale attempt is not started"
    );
    tick(&mut h, vec![again("u1"), run("u2", "/a/j/0", 2)]);
    assert_eq!(
        h.core.task_attempts(&TaskId::new("a/j/0").unwrap()).len(),
        2
    );
}

#[test]
fn a_finished_attempt_left_out_is_removed_and_never_runs_again() {
    let mut h = Harness::new(reconcile_config());
    tick(&mut h, vec![run("u1", "/a/j/0", 0)]);
    let key = key("a/j/0", 0);
    h.start(&key);
    h.event(Event::Exited {
        attempt: key,
        status: ExitStatus::code(3),
    });
    tick(&mut h, vec![again("u1")]);
    assert_eq!(
        tick(&mut h, vec![again("u1")]),
        [obs("u1", Some(TaskState::Failed), Some(3))]
    );
    // Kept while desired, even with a retention of zero tasks.
    assert!(h.core.get_task(&TaskId::new("a/j/0").unwrap()).is_some());
    tick(&mut h, vec![]);
    assert!(
        h.core.get_task(&TaskId::new("a/j/0").unwrap()).is_none(),
        "settled, then removed"
    );
    // A desired set computed before the controller saw the end: its spec again. No new run.
    let starts = h.effects.len();
    assert_eq!(
        tick(&mut h, vec![run("u1", "/a/j/0", 0)]),
        [obs("u1", Some(TaskState::Failed), None)]
    );
    assert!(
        !h.effects[starts..]
            .iter()
            .any(|e| matches!(e, Effect::Journal(JournalEntry::Accepted { .. })))
    );
}

/// With a log service to ship to, a finished attempt stays (whatever retention says) until the
/// shell's pusher has every line of it there: an outage of the log service loses nothing.
#[test]
fn a_finished_attempt_waits_for_its_logs_to_ship_before_removal() {
    let mut h = Harness::new(CoreConfig {
        era: Era::Reconcile { ships_logs: true },
        ..reconcile_config()
    });
    let task = TaskId::new("a/j/0").unwrap();
    tick(&mut h, vec![run("u1", "/a/j/0", 0)]);
    let key = key("a/j/0", 0);
    h.start(&key);
    h.event(Event::Exited {
        attempt: key.clone(),
        status: ExitStatus::code(0),
    });
    tick(&mut h, vec![again("u1")]);
    tick(&mut h, vec![]);
    assert!(
        h.core.get_task(&task).is_some(),
        "kept: its logs are not out yet"
    );
    h.now += 1_000;
    h.core.logs_shipped(h.now, &key);
    h.drain();
    assert!(
        h.core.get_task(&task).is_none(),
        "shipped and settled: removed"
    );
    h.core.check_invariants().unwrap();
}

#[test]
fn an_invalid_spec_is_a_failed_attempt_naming_the_field() {
    let mut h = Harness::new(reconcile_config());
    let invalid = Desired {
        attempt_uid: "bad".into(),
        intent: Intent::Invalid("invalid RunTaskRequest: task_id must be a path".into()),
    };
    let answer = h.core.reconcile(h.now, vec![invalid]);
    assert_eq!(answer[0].state, Some(TaskState::Failed));
    assert!(answer[0].error.contains("task_id"), "{answer:?}");
    assert!(h.core.list_tasks().is_empty(), "nothing else changed");
}
