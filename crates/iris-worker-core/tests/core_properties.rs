//! Properties of `WorkerCore` over random command sequences at random times.
//!
//! The model in `iris_worker_core::testing::model` answers the core's effects (or leaves them
//! hanging, or answers late and out of order) and checks after every step the invariants users
//! rely on. Cases: 256 by default, `PROPTEST_CASES=N` for more.

use iris_worker_core::testing::model::{Op, TASKS, run};
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..TASKS, 0..3i32, 0..3usize, prop_oneof![Just(0), 1..4i32], any::<bool>())
            .prop_map(|(task, attempt, ports, timeout_s, bundle)| Op::Submit { task, attempt, ports, timeout_s, bundle }),
        2 => (0..TASKS, prop_oneof![Just(0i64), 1..3_000i64]).prop_map(|(task, term_ms)| Op::Kill { task, term_ms }),
        1 => Just(Op::KillAll),
        4 => (0..4_000u64).prop_map(|ms| Op::Advance { ms }),
        6 => (any::<usize>(), 0..6u8).prop_map(|(pick, outcome)| Op::Answer { pick, outcome }),
        2 => (any::<usize>(), 0..3i32, any::<bool>(), prop::bool::weighted(0.1))
            .prop_map(|(pick, code, signal, oom)| Op::Exit { pick, code, signal, oom }),
        1 => (any::<usize>(), 0..1000i64).prop_map(|(pick, memory_mb)| Op::Stats { pick, memory_mb }),
        1 => any::<usize>().prop_map(|pick| Op::Lost { pick }),
        4 => (any::<usize>(), prop::bool::weighted(0.6)).prop_map(|(pick, ack)| Op::Report { pick, ack }),
        1 => (any::<bool>(), prop::bool::weighted(0.15)).prop_map(|(accept, reset)| Op::Register { accept, reset }),
        1 => (0..TASKS, 0..3i32, 0..8u8).prop_map(|(task, attempt, kind)| Op::Stray { task, attempt, kind }),
        1 => any::<bool>().prop_map(|over| Op::Disk { over }),
    ]
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn invariants_hold_under_random_commands(ops in prop::collection::vec(op(), 1..120)) {
        run(&ops);
    }

    #[test]
    fn identical_inputs_give_identical_effects(ops in prop::collection::vec(op(), 1..80)) {
        prop_assert_eq!(run(&ops), run(&ops));
    }
}
