//! The reconcile era under arbitrary input: a `ReconcileRequest` decoded from bytes through the
//! 2026-06 adapter into a core, and arbitrary sequences of desired sets interleaved with runtime
//! answers. Checked: every desired uid is answered once, the core's invariants hold after each
//! step, and no attempt is started again after it finished (also after retention removed it).

use std::collections::BTreeSet;

use prost::Message;

use crate::core::*;
use crate::proto::v2026_06::iris::cluster::worker;
use crate::proto::v2026_06::iris::job;
use crate::shell::era2026_06::reconcile::desired;

fn config() -> CoreConfig {
    CoreConfig {
        era: Era::Reconcile { ships_logs: false },
        retention: Retention {
            finished_tasks_max: 1,
            ..Retention::default()
        },
        ..crate::core::testing::config()
    }
}

fn spec_request(task: u8, attempt: u8, uid: &str) -> job::RunTaskRequest {
    job::RunTaskRequest {
        task_id: format!("/fuzz/job/{}", task % 3),
        num_tasks: 3,
        entrypoint: Some(job::RuntimeEntrypoint {
            run_command: Some(job::CommandEntrypoint {
                argv: vec!["true".into()],
            }),
            ..Default::default()
        }),
        attempt_id: i32::from(attempt % 3),
        attempt_uid: uid.into(),
        ..Default::default()
    }
}

/// Answers every effect the way a healthy runtime would, one step each.
fn answer(core: &mut WorkerCore, now: u64, effect: &Effect) {
    let event = match effect {
        Effect::PrepareWorkdir { attempt, .. } => Event::WorkdirReady {
            attempt: attempt.clone(),
        },
        Effect::BuildImage { attempt, .. } => Event::BuildFinished {
            attempt: attempt.clone(),
            image: None,
            from_cache: true,
        },
        Effect::StartContainer(spec) => Event::ContainerStarted {
            attempt: spec.attempt.clone(),
        },
        Effect::SignalContainer { attempt, .. } => Event::Exited {
            attempt: attempt.clone(),
            status: ExitStatus::signal(15),
        },
        Effect::RemoveContainer { attempt } => Event::ContainerRemoved {
            attempt: attempt.clone(),
        },
        _ => return,
    };
    core.handle(now, event);
}

fn check_answer(desired: &[Desired], observed: &[Observation]) {
    for d in desired {
        assert!(
            observed.iter().any(|o| o.attempt_uid == d.attempt_uid),
            "desired {} not answered: {observed:?}",
            d.attempt_uid
        );
    }
}

pub fn fuzz_reconcile(data: &[u8]) {
    if let Ok(request) = worker::ReconcileRequest::decode(data) {
        let wanted: Vec<Desired> = request.desired.iter().take(64).map(desired).collect();
        let mut core = WorkerCore::new(config(), 0);
        let observed = core.reconcile(1, wanted.clone());
        check_answer(&wanted, &observed);
        core.check_invariants().expect("invariants");
    }
    sequences(data);
}

/// Byte triples: (uid, intent, task/attempt); the high bit of the intent byte lets the
/// runtime answer, or makes a running attempt exit.
fn sequences(data: &[u8]) {
    let mut core = WorkerCore::new(config(), 0);
    let mut now = 0;
    let mut started: BTreeSet<AttemptKey> = BTreeSet::new();
    let mut finished: BTreeSet<AttemptKey> = BTreeSet::new();
    let mut pending: Vec<Effect> = Vec::new();
    for step in data.chunks(3).take(128) {
        let [uid, intent, shape] = [
            step[0],
            *step.get(1).unwrap_or(&0),
            *step.get(2).unwrap_or(&0),
        ];
        now += 100;
        let uids: Vec<u8> = (0..=(uid % 5)).collect();
        let wanted: Vec<Desired> = uids
            .iter()
            .map(|u| {
                let name = format!("u{u}");
                let intent = match (intent >> (u % 4)) & 3 {
                    0 => Intent::Run(None),
                    1 => match crate::shell::era2026_06::spec::task_spec(
                        &spec_request(shape.wrapping_add(*u), shape >> 4, &name),
                        &name,
                    ) {
                        Ok(spec) => Intent::Run(Some(Box::new(spec))),
                        Err(e) => Intent::Invalid(e.to_string()),
                    },
                    2 => Intent::Stop,
                    _ => Intent::Run(None),
                };
                Desired {
                    attempt_uid: name,
                    intent,
                }
            })
            .collect();
        let observed = core.reconcile(now, wanted.clone());
        check_answer(&wanted, &observed);
        while let Some(effect) = core.poll_effect() {
            pending.push(effect);
        }
        if intent & 0x80 != 0 {
            for effect in std::mem::take(&mut pending) {
                if let Effect::StartContainer(spec) = &effect {
                    assert!(
                        !finished.contains(&spec.attempt),
                        "{}: started again after it finished",
                        spec.attempt
                    );
                    started.insert(spec.attempt.clone());
                }
                answer(&mut core, now, &effect);
                while let Some(next) = core.poll_effect() {
                    pending.push(next);
                }
            }
        }
        if shape & 0x80 != 0 {
            let running: Vec<AttemptKey> = core
                .live_attempts()
                .into_iter()
                .filter(|k| started.contains(k))
                .collect();
            for key in running {
                core.handle(
                    now,
                    Event::Exited {
                        attempt: key,
                        status: ExitStatus::code(i32::from(shape & 3)),
                    },
                );
            }
        }
        for key in &started {
            // Gone from the core (retention removed it) or finished: never to start again.
            let done = core
                .task_attempts(&key.task_id)
                .iter()
                .find(|t| t.attempt_id == key.attempt_id)
                .is_none_or(|t| t.is_finished());
            if done {
                finished.insert(key.clone());
            }
        }
        core.check_invariants().expect("invariants");
    }
}
