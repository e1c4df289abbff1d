//! Effect traces of canonical scenarios, one line per effect, as insta snapshots. A change in
//! what the core asks the shell to do shows up here as a diff to review.

use iris_worker_core::testing::*;
use iris_worker_core::*;

fn run_to_exit(h: &mut Harness, task_id: &str, status: ExitStatus) {
    h.submit(spec(task_id, 0)).unwrap();
    let attempt = key(task_id, 0);
    h.now = 10;
    h.start(&attempt);
    h.ack_reports();
    h.now = 1_000;
    h.event(Event::Exited { attempt, status });
    h.ack_reports();
}

#[test]
fn trace_success() {
    let mut h = Harness::registered();
    run_to_exit(&mut h, "job/task-0", ExitStatus::code(0));
    assert_eq!(h.state("job/task-0"), TaskState::Succeeded);
    insta::assert_snapshot!(h.render());
}

#[test]
fn trace_nonzero_exit() {
    let mut h = Harness::registered();
    run_to_exit(&mut h, "job/task-0", ExitStatus::code(3));
    let task = h.task("job/task-0");
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(task.error.as_deref(), Some("Exit code: 3"));
    insta::assert_snapshot!(h.render());
}

#[test]
fn trace_kill_while_running() {
    let mut h = Harness::registered();
    h.submit(spec("job/task-0", 0)).unwrap();
    let attempt = key("job/task-0", 0);
    h.start(&attempt);
    h.ack_reports();
    h.now = 100;
    h.kill("job/task-0", 2_000).unwrap();
    assert_eq!(h.state("job/task-0"), TaskState::Running);
    h.advance(2_100);
    h.event(Event::Exited {
        attempt,
        status: ExitStatus::signal(9),
    });
    h.ack_reports();
    assert_eq!(h.state("job/task-0"), TaskState::Killed);
    insta::assert_snapshot!(h.render());
}

#[test]
fn trace_kill_while_building() {
    let mut h = Harness::registered();
    h.submit(spec("job/task-0", 0)).unwrap();
    let attempt = key("job/task-0", 0);
    h.event(Event::WorkdirReady {
        attempt: attempt.clone(),
    });
    assert_eq!(h.state("job/task-0"), TaskState::Building);
    h.now = 50;
    h.kill("job/task-0", 0).unwrap();
    // The build finishing afterwards must not start anything.
    h.event(Event::BuildFinished {
        attempt,
        image: Some("img".into()),
        from_cache: true,
    });
    h.ack_reports();
    assert_eq!(h.state("job/task-0"), TaskState::Killed);
    assert!(
        !h.effects
            .iter()
            .any(|e| matches!(e, Effect::StartContainer(_)))
    );
    insta::assert_snapshot!(h.render());
}

#[test]
fn trace_timeout() {
    let mut h = Harness::registered();
    let mut req = request("job/task-0", 0, &["sleep", "infinity"]);
    req.timeout_seconds = 2;
    h.submit(spec_with(req)).unwrap();
    let attempt = key("job/task-0", 0);
    h.start(&attempt);
    h.ack_reports();
    h.advance(7_000);
    h.event(Event::Exited {
        attempt,
        status: ExitStatus::signal(9),
    });
    h.ack_reports();
    let task = h.task("job/task-0");
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(task.error.as_deref(), Some("Timeout exceeded"));
    insta::assert_snapshot!(h.render());
}

#[test]
fn trace_port_conflict_retry() {
    let mut h = Harness::registered();
    let mut req = request("job/task-0", 0, &["server"]);
    req.ports = vec!["http".into(), "grpc".into()];
    h.submit(spec_with(req)).unwrap();
    let attempt = key("job/task-0", 0);
    h.event(Event::WorkdirReady {
        attempt: attempt.clone(),
    });
    h.event(Event::BuildFinished {
        attempt: attempt.clone(),
        image: None,
        from_cache: false,
    });
    let first_ports = h.task("job/task-0").ports;
    for _ in 0..2 {
        h.event(Event::StartFailed {
            attempt: attempt.clone(),
            error: "address already in use".into(),
            port_conflict: true,
        });
    }
    let retried_ports = h.task("job/task-0").ports;
    assert!(
        first_ports
            .values()
            .all(|p| !retried_ports.values().any(|q| q == p))
    );
    h.event(Event::StartFailed {
        attempt,
        error: "address already in use".into(),
        port_conflict: true,
    });
    h.ack_reports();
    let task = h.task("job/task-0");
    assert_eq!(task.state, TaskState::Failed);
    assert!(task.error.unwrap().contains("address already in use"));
    assert!(h.core.held_ports().is_empty());
    insta::assert_snapshot!(h.render());
}

#[test]
fn trace_supersede() {
    let mut h = Harness::registered();
    h.submit(spec("job/task-0", 0)).unwrap();
    let old = key("job/task-0", 0);
    h.start(&old);
    h.ack_reports();
    h.now = 500;
    assert_eq!(h.submit(spec("job/task-0", 1)).unwrap(), TaskState::Pending);
    // The new attempt waits: it must not prepare anything while the old container lives.
    assert!(
        !h.effects.iter().any(
            |e| matches!(e, Effect::PrepareWorkdir { attempt, .. } if attempt.attempt_id == 1)
        )
    );
    h.now = 800;
    h.event(Event::Exited {
        attempt: old,
        status: ExitStatus::signal(15),
    });
    let new = key("job/task-0", 1);
    h.start(&new);
    h.ack_reports();
    let attempts = h.core.task_attempts(&TaskId::new("job/task-0").unwrap());
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].state, TaskState::Killed);
    assert_eq!(attempts[1].state, TaskState::Running);
    insta::assert_snapshot!(h.render());
}

#[test]
fn trace_should_reset() {
    let mut h = Harness::registered();
    h.submit(spec("job/task-0", 0)).unwrap();
    h.start(&key("job/task-0", 0));
    h.submit(spec("job/task-1", 0)).unwrap();
    h.ack_reports();
    h.advance(10_000);
    h.event(Event::RegisterAccepted { should_reset: true });
    assert_eq!(h.state("job/task-1"), TaskState::Killed);
    assert_eq!(h.state("job/task-0"), TaskState::Running);
    h.advance(10_000);
    h.event(Event::Exited {
        attempt: key("job/task-0", 0),
        status: ExitStatus::signal(15),
    });
    h.ack_reports();
    assert_eq!(h.state("job/task-0"), TaskState::Killed);
    insta::assert_snapshot!(h.render());
}

#[test]
fn trace_report_retried_through_outage() {
    let mut h = Harness::new(CoreConfig {
        heartbeat_interval_ms: 1_000_000,
        ..config()
    });
    h.event(Event::RegisterAccepted {
        should_reset: false,
    });
    h.submit(spec("job/task-0", 0)).unwrap();
    let attempt = key("job/task-0", 0);
    h.start(&attempt);
    h.event(Event::ReportAcked { report_id: 0 });
    h.event(Event::Exited {
        attempt: attempt.clone(),
        status: ExitStatus::code(0),
    });
    let (id, pending) = h.core.terminal_report(&attempt).unwrap();
    assert!(pending);
    // A controller outage: every send fails; the report keeps coming, backoff capped at 5 s.
    let mut sends = Vec::new();
    for _ in 0..8 {
        h.event(Event::ReportFailed {
            report_id: id,
            error: "unavailable".into(),
        });
        let before = h.now;
        let next = h.core.poll_timeout().unwrap();
        sends.push(next - before);
        h.advance(next);
    }
    assert_eq!(sends, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    h.event(Event::ReportAcked { report_id: id });
    assert_eq!(h.core.terminal_report(&attempt), Some((id, false)));
    assert_eq!(h.core.outbox_len(), 0);
    insta::assert_snapshot!(h.render());
}

#[test]
fn trace_recovery_after_restart() {
    let mut h = Harness::registered();
    let finished = |state, acked| RecoveredOutcome {
        state,
        exit: ExitStatus::code(0),
        error: None,
        finished_at_ms: 50,
        report_acked: acked,
    };
    let records = [
        (spec("job/task-0", 0), None),
        (
            spec("job/task-1", 2),
            Some(finished(TaskState::Succeeded, false)),
        ),
        (
            spec("job/task-2", 0),
            Some(finished(TaskState::Succeeded, true)),
        ),
    ];
    for (spec, outcome) in records {
        h.note(format!("recover {}#{}", spec.task_id, spec.attempt_id));
        h.core.recover(
            h.now,
            RecoveredAttempt {
                spec,
                ports: Default::default(),
                submitted_at_ms: 1,
                started_at_ms: Some(2),
                outcome,
            },
        );
        h.drain();
    }
    assert_eq!(h.state("job/task-0"), TaskState::WorkerFailed);
    assert_eq!(h.state("job/task-1"), TaskState::Succeeded);
    // A lower attempt than the recovered one is still refused.
    assert!(h.submit(spec("job/task-1", 1)).is_err());
    h.ack_reports();
    insta::assert_snapshot!(h.render());
}

fn reports(effects: &[Effect]) -> Vec<TaskState> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ReportTaskState { report, .. } => Some(report.state),
            _ => None,
        })
        .collect()
}

/// A start the runtime never answered may have left a container running: the attempt is
/// reported WORKER_FAILED only once that container's removal is confirmed.
#[test]
fn trace_lost_start_reports_after_removal() {
    let mut h = Harness::registered();
    h.submit(spec("job/task-0", 0)).unwrap();
    let attempt = key("job/task-0", 0);
    h.build(&attempt);
    h.ack_reports();
    h.now = 5_000;
    h.event(Event::RuntimeLost {
        attempt: attempt.clone(),
        error: "start timed out after 5s".into(),
    });
    assert!(
        h.effects
            .iter()
            .any(|e| matches!(e, Effect::RemoveContainer { .. }))
    );
    assert_eq!(reports(&h.effects), vec![], "reported before the removal");
    assert!(!h.task("job/task-0").is_finished());
    h.note("-- the removal is confirmed");
    h.now = 6_000;
    h.event(Event::ContainerRemoved { attempt });
    assert_eq!(reports(&h.effects), vec![TaskState::WorkerFailed]);
    assert_eq!(h.state("job/task-0"), TaskState::WorkerFailed);
    h.ack_reports();
    insta::assert_snapshot!(h.render());
}

/// SIGKILL repeats until the container exits (a lost one must not leave it running), and a
/// later kill request changes nothing once SIGKILL went out.
#[test]
fn sigkill_repeats_until_the_container_exits() {
    let mut h = Harness::registered();
    h.submit(spec("job/task-0", 0)).unwrap();
    let attempt = key("job/task-0", 0);
    h.start(&attempt);
    h.ack_reports();
    h.kill("job/task-0", 1_000).unwrap();
    h.advance(1_000 + 3 * KILL_REPEAT_MS);
    // TERM at 0, KILL at 1 s, then again every KILL_REPEAT_MS up to 16 s.
    let signals: Vec<Signal> = h
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::SignalContainer { signal, .. } => Some(*signal),
            _ => None,
        })
        .collect();
    assert_eq!(
        signals,
        vec![
            Signal::Term,
            Signal::Kill,
            Signal::Kill,
            Signal::Kill,
            Signal::Kill
        ]
    );
    h.effects.clear();
    h.kill("job/task-0", 0).unwrap();
    assert!(h.effects.is_empty(), "a later kill changed something");
    h.event(Event::Exited {
        attempt,
        status: ExitStatus::signal(9),
    });
    h.effects.clear();
    h.advance(h.now + 4 * KILL_REPEAT_MS);
    assert!(
        !h.effects
            .iter()
            .any(|e| matches!(e, Effect::SignalContainer { .. })),
        "signalled after the exit"
    );
    assert_eq!(h.state("job/task-0"), TaskState::Killed);
}

/// A live attempt whose container survived a restart but cannot be adopted is reported lost only
/// after that container is removed.
#[test]
fn leftover_container_is_removed_before_the_lost_report() {
    let mut h = Harness::registered();
    h.core.recover_leftover(
        h.now,
        RecoveredAttempt {
            spec: spec("job/task-0", 0),
            ports: Default::default(),
            submitted_at_ms: 1,
            started_at_ms: Some(2),
            outcome: None,
        },
    );
    h.drain();
    let attempt = key("job/task-0", 0);
    assert!(h.effects.contains(&Effect::RemoveContainer {
        attempt: attempt.clone()
    }));
    assert_eq!(reports(&h.effects), vec![]);
    assert_eq!(h.core.live_attempts(), vec![attempt.clone()]);
    h.event(Event::ContainerRemoved { attempt });
    assert_eq!(reports(&h.effects), vec![TaskState::WorkerFailed]);
    assert_eq!(h.state("job/task-0"), TaskState::WorkerFailed);
}

fn retention_harness() -> Harness {
    let mut h = Harness::new(CoreConfig {
        heartbeat_interval_ms: 1_000_000,
        retention: Retention {
            finished_tasks_max: 2,
            finished_for_ms: 60_000,
            ..Retention::default()
        },
        ..config()
    });
    h.event(Event::RegisterAccepted {
        should_reset: false,
    });
    h
}

/// Runs a task to its exit at `at_ms`, leaving its reports unanswered.
fn finish_unreported(h: &mut Harness, task_id: &str, at_ms: u64) {
    h.submit(spec(task_id, 0)).unwrap();
    let attempt = key(task_id, 0);
    h.start(&attempt);
    h.now = at_ms;
    h.event(Event::Exited {
        attempt,
        status: ExitStatus::code(0),
    });
}

fn known(h: &Harness, task_id: &str) -> bool {
    h.core.get_task(&TaskId::new(task_id).unwrap()).is_some()
}

/// Count, then age: the oldest settled task goes first, an unacknowledged one never, and what
/// goes is journaled removed before its files are deleted.
#[test]
fn trace_retention_by_count_and_age() {
    let mut h = retention_harness();
    for (i, at) in [(0, 1_000), (1, 2_000), (2, 3_000)] {
        finish_unreported(&mut h, &format!("job/task-{i}"), at);
        h.ack_reports();
    }
    assert!(!known(&h, "job/task-0"), "the oldest of three went");
    assert!(known(&h, "job/task-1") && known(&h, "job/task-2"));
    // Its reports never answered, task-3 stays whatever the limits say.
    finish_unreported(&mut h, "job/task-3", 4_000);
    h.advance(200_000);
    assert!(
        !known(&h, "job/task-1") && !known(&h, "job/task-2"),
        "aged out"
    );
    assert!(known(&h, "job/task-3"), "unacknowledged: kept");
    h.now = 300_000;
    h.ack_reports();
    h.advance(300_000);
    assert!(!known(&h, "job/task-3"), "acked and past its age: gone");
    insta::assert_snapshot!(h.render());
}

#[test]
fn a_full_disk_removes_the_oldest_settled_tasks_first() {
    let mut h = Harness::new(CoreConfig {
        retention: Retention {
            finished_tasks_max: 100,
            ..Retention::default()
        },
        controller_address: None,
        ..config()
    });
    for i in 0..20 {
        finish_unreported(&mut h, &format!("job/task-{i:02}"), 1_000 + i);
    }
    h.event(Event::DiskUsage {
        bytes_percent: 50,
        inodes_percent: 79,
    });
    assert_eq!(h.core.list_tasks().len(), 20, "under the thresholds");
    h.event(Event::DiskUsage {
        bytes_percent: 95,
        inodes_percent: 10,
    });
    // A tenth per measurement, oldest first.
    assert!(!known(&h, "job/task-00") && !known(&h, "job/task-01"));
    assert!(known(&h, "job/task-02"));
    h.event(Event::DiskUsage {
        bytes_percent: 10,
        inodes_percent: 81,
    });
    assert!(!known(&h, "job/task-02") && known(&h, "job/task-03"));
    let reasons: Vec<&Effect> = h
        .effects
        .iter()
        .filter(|e| {
            matches!(
                e,
                Effect::RemoveTask {
                    reason: RemovalReason::Disk,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(reasons.len(), 3);
}

/// A preempted VM: the running attempt ends as the worker's failure with the reason, and the
/// worker takes no new work.
#[test]
fn evacuation_fails_live_attempts_as_the_workers_and_refuses_new_work() {
    let mut h = Harness::registered();
    h.submit(spec("job/task-0", 0)).unwrap();
    let attempt = key("job/task-0", 0);
    h.start(&attempt);
    h.ack_reports();
    h.now = 100;
    assert_eq!(h.core.evacuate(h.now, "the VM was preempted"), 1);
    h.event(Event::Exited {
        attempt,
        status: ExitStatus::signal(15),
    });
    h.ack_reports();
    let task = h.task("job/task-0");
    assert_eq!(task.state, TaskState::WorkerFailed);
    assert_eq!(task.error.as_deref(), Some("the VM was preempted"));
    let refused = h.submit(spec("job/task-1", 0));
    assert!(
        matches!(refused, Err(SubmitError::Evacuating { .. })),
        "{refused:?}"
    );
}

/// A failed exit the runtime found to be the machine's fault (a TPU that would not initialise)
/// is the worker's failure; a success never is.
#[test]
fn a_machine_fault_in_a_failed_exit_is_the_workers_failure() {
    let fault = "TPU init failure (the machine's): No accelerator found".to_string();
    let mut h = Harness::registered();
    let status = ExitStatus {
        machine_fault: Some(fault.clone()),
        ..ExitStatus::code(1)
    };
    run_to_exit(&mut h, "job/task-0", status);
    let task = h.task("job/task-0");
    assert_eq!(task.state, TaskState::WorkerFailed);
    assert_eq!(task.error, Some(format!("{fault}: Exit code: 1")));
    let mut ok = Harness::registered();
    let status = ExitStatus {
        machine_fault: Some(fault),
        ..ExitStatus::code(0)
    };
    run_to_exit(&mut ok, "job/task-0", status);
    assert_eq!(ok.state("job/task-0"), TaskState::Succeeded);
}
