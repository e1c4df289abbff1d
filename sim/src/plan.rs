//! What a seed decides: the workload (jobs, tasks and how their containers behave, kills,
//! duplicates, supersessions) and the fault schedule. Everything is drawn here, up front, from
//! the seed, so a run is a pure function of it and the schedule can be printed on failure.

use std::fmt;

use crate::rng::Rng;

/// The worker's RPC port on every simulated host.
pub const WORKER_PORT: u16 = 9000;
/// The controller's port on its host.
pub const CONTROLLER_PORT: u16 = 9100;
/// Wall-clock time at the simulation's start (2026-01-01T00:00:00Z), so core timestamps are the
/// same in every run.
pub const EPOCH_MS: u64 = 1_767_225_600_000;

/// How a task's container behaves; sent to the simulated runtime in the task's argv.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behaviour {
    /// `None`: runs until killed (the task then has a timeout or a planned kill).
    pub run_ms: Option<u64>,
    pub exit: ExitPlan,
    /// SIGTERM is ignored; only SIGKILL stops it.
    pub ignores_term: bool,
    /// How long it takes to stop after SIGTERM.
    pub stop_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitPlan {
    Code(i32),
    Signal(i32),
    Oom,
}

impl Behaviour {
    pub fn to_argv(&self) -> Vec<String> {
        let run = self
            .run_ms
            .map_or("forever".to_string(), |ms| ms.to_string());
        let exit = match self.exit {
            ExitPlan::Code(c) => format!("code={c}"),
            ExitPlan::Signal(s) => format!("signal={s}"),
            ExitPlan::Oom => "oom".to_string(),
        };
        let term = if self.ignores_term {
            "ignore".to_string()
        } else {
            self.stop_ms.to_string()
        };
        vec![
            "sim-task".into(),
            format!("run={run}"),
            format!("exit={exit}"),
            format!("term={term}"),
        ]
    }

    /// The inverse of `to_argv`; `None` for anything else.
    pub fn from_argv(argv: &[String]) -> Option<Behaviour> {
        let [tag, run, exit, term] = argv else {
            return None;
        };
        if tag != "sim-task" {
            return None;
        }
        let run_ms = match run.strip_prefix("run=")? {
            "forever" => None,
            ms => Some(ms.parse().ok()?),
        };
        let exit = match exit.strip_prefix("exit=")? {
            "oom" => ExitPlan::Oom,
            e if e.starts_with("code=") => ExitPlan::Code(e[5..].parse().ok()?),
            e if e.starts_with("signal=") => ExitPlan::Signal(e[7..].parse().ok()?),
            _ => return None,
        };
        let (ignores_term, stop_ms) = match term.strip_prefix("term=")? {
            "ignore" => (true, 0),
            ms => (false, ms.parse().ok()?),
        };
        Some(Behaviour {
            run_ms,
            exit,
            ignores_term,
            stop_ms,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillPlan {
    /// The controller kills the task this long after dispatching it.
    After(u64),
    /// The controller kills it just as its container exits on its own (± `offset_ms`).
    RacingExit { offset_ms: i64 },
}

#[derive(Clone, Debug)]
pub struct TaskPlan {
    pub index: i32,
    pub worker: usize,
    pub behaviour: Behaviour,
    pub timeout_seconds: i32,
    pub ports: Vec<String>,
    pub kill: Option<(KillPlan, i32)>,
    /// RunTask is sent again, unchanged, this long after the first ack.
    pub duplicate_after_ms: Option<u64>,
    /// A higher attempt is sent to the same worker this long after the first ack.
    pub supersede_after_ms: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct JobPlan {
    pub job_id: String,
    pub submit_at_ms: u64,
    pub tasks: Vec<TaskPlan>,
}

/// One node of the simulated cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    Controller,
    Worker(usize),
}

impl Node {
    pub fn host(self) -> String {
        match self {
            Node::Controller => "controller".to_string(),
            Node::Worker(i) => worker_host(i),
        }
    }
}

pub fn worker_host(index: usize) -> String {
    format!("worker-{index}")
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Partition(Node, Node),
    PartitionOneWay {
        from: Node,
        to: Node,
    },
    Hold(Node, Node),
    /// The link drops out for short spells, again and again.
    Flaky(Node, Node),
    Latency {
        max_ms: u64,
    },
    Crash(Node),
    /// The worker's container engine answers no call.
    EngineHang(usize),
    /// The worker is stopped (SIGTERM): it kills its tasks and delivers their reports, or with
    /// `kill_tasks: false` leaves them running for its next run to adopt; it starts again at the
    /// fault's end.
    Stop {
        worker: usize,
        kill_tasks: bool,
    },
    /// The controller answers the worker's next registration with `should_reset`.
    Reset(usize),
    /// Another program takes ports in the worker's range.
    SquatPorts {
        worker: usize,
        ports: Vec<u16>,
    },
}

/// A fault from `start_ms` until `end_ms` (when it heals).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub start_ms: u64,
    pub end_ms: u64,
    pub kind: FaultKind,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>6}..{:>6} ms  {:?}",
            self.start_ms, self.end_ms, self.kind
        )
    }
}

/// Sizes of a run.
#[derive(Clone, Debug)]
pub struct Shape {
    pub workers: usize,
    /// Jobs are submitted and faults start within this window; all faults heal at its end.
    pub fault_window_ms: u64,
    pub ports_per_worker: u16,
    pub first_port: u16,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            workers: 3,
            fault_window_ms: 40_000,
            ports_per_worker: 8,
            first_port: 31_000,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    pub shape: Shape,
    pub jobs: Vec<JobPlan>,
    pub faults: Vec<Fault>,
    /// Finished tasks each worker keeps: small in some seeds, so retention removes tasks while
    /// others run, reports wait and faults strike.
    pub retain_finished_tasks: Option<usize>,
}

impl Plan {
    pub fn draw(seed: u64, shape: Shape) -> Plan {
        let jobs = draw_jobs(&mut Rng::fork(seed, "jobs"), &shape);
        let mut faults = draw_faults(&mut Rng::fork(seed, "faults"), &shape);
        // Drawn apart, so adding it left every other draw of a seed as it was.
        let mut resets = Rng::fork(seed, "resets");
        if resets.chance(20) {
            let at = resets.range(1_000, shape.fault_window_ms - 10_000);
            let worker = resets.range(0, shape.workers as u64 - 1) as usize;
            faults.push(Fault {
                start_ms: at,
                end_ms: at,
                kind: FaultKind::Reset(worker),
            });
        }
        let mut stops = Rng::fork(seed, "stops");
        if stops.chance(20) {
            let start_ms = stops.range(1_000, shape.fault_window_ms - 10_000);
            let worker = stops.range(0, shape.workers as u64 - 1) as usize;
            faults.push(Fault {
                start_ms,
                end_ms: start_ms + stops.range(1_000, 8_000),
                kind: FaultKind::Stop {
                    worker,
                    kill_tasks: stops.chance(50),
                },
            });
        }
        faults.sort_by_key(|f| (f.start_ms, f.end_ms));
        let mut retention = Rng::fork(seed, "retention");
        let retain_finished_tasks = retention.chance(30).then(|| retention.range(1, 4) as usize);
        Plan {
            seed,
            shape,
            jobs,
            faults,
            retain_finished_tasks,
        }
    }

    /// When every fault has healed.
    pub fn heal_ms(&self) -> u64 {
        self.faults
            .iter()
            .map(|f| f.end_ms)
            .max()
            .unwrap_or(0)
            .max(self.shape.fault_window_ms)
    }
}

fn draw_behaviour(rng: &mut Rng) -> Behaviour {
    let run_ms = if rng.chance(15) {
        None
    } else {
        Some(*rng.pick(&[0, 50, 500, 2_000, 5_000, 15_000]) + rng.range(0, 500))
    };
    let exit = match rng.range(0, 9) {
        0..=5 => ExitPlan::Code(0),
        6 => ExitPlan::Code(*rng.pick(&[1, 2, 137])),
        7 => ExitPlan::Signal(*rng.pick(&[6, 9, 11])),
        8 => ExitPlan::Oom,
        _ => ExitPlan::Code(3),
    };
    let ignores_term = rng.chance(20);
    let stop_ms = *rng.pick(&[0, 100, 1_000, 4_000]);
    Behaviour {
        run_ms,
        exit,
        ignores_term,
        // Meaningless when TERM is ignored; kept at 0 so the argv round-trips.
        stop_ms: if ignores_term { 0 } else { stop_ms },
    }
}

fn draw_task(rng: &mut Rng, index: i32, shape: &Shape) -> TaskPlan {
    let behaviour = draw_behaviour(rng);
    let forever = behaviour.run_ms.is_none();
    let timeout_seconds = if rng.chance(if forever { 50 } else { 15 }) {
        rng.range(1, 8) as i32
    } else {
        0
    };
    let mut kill = rng.chance(30).then(|| {
        let when = if rng.chance(40) && !forever {
            KillPlan::RacingExit {
                offset_ms: rng.range(0, 60) as i64 - 30,
            }
        } else {
            KillPlan::After(rng.range(0, 12_000))
        };
        (when, *rng.pick(&[0, 300, 1_000, 3_000]))
    });
    if forever && timeout_seconds == 0 && kill.is_none() {
        kill = Some((KillPlan::After(rng.range(1_000, 20_000)), 1_000));
    }
    let ports = (0..rng.range(0, 2)).map(|p| format!("p{p}")).collect();
    TaskPlan {
        index,
        worker: rng.range(0, shape.workers as u64 - 1) as usize,
        behaviour,
        timeout_seconds,
        ports,
        kill,
        duplicate_after_ms: rng.chance(25).then(|| rng.range(0, 5_000)),
        supersede_after_ms: rng.chance(10).then(|| rng.range(0, 5_000)),
    }
}

fn draw_jobs(rng: &mut Rng, shape: &Shape) -> Vec<JobPlan> {
    (0..rng.range(3, 6))
        .map(|j| {
            let tasks = (0..rng.range(1, 4) as i32)
                .map(|i| draw_task(rng, i, shape))
                .collect();
            JobPlan {
                job_id: format!("job-{j}"),
                submit_at_ms: rng.range(0, shape.fault_window_ms * 3 / 4),
                tasks,
            }
        })
        .collect()
}

fn draw_node(rng: &mut Rng, shape: &Shape) -> Node {
    match rng.range(0, shape.workers as u64) as usize {
        0 => Node::Controller,
        w => Node::Worker(w - 1),
    }
}

/// Two distinct nodes, one of them the controller more often than not (workers talk to it).
fn draw_pair(rng: &mut Rng, shape: &Shape) -> (Node, Node) {
    let worker = Node::Worker(rng.range(0, shape.workers as u64 - 1) as usize);
    let other = if rng.chance(80) {
        Node::Controller
    } else {
        match draw_node(rng, shape) {
            n if n == worker => Node::Controller,
            n => n,
        }
    };
    if rng.chance(50) {
        (worker, other)
    } else {
        (other, worker)
    }
}

fn draw_fault_kind(rng: &mut Rng, shape: &Shape) -> FaultKind {
    let worker = rng.range(0, shape.workers as u64 - 1) as usize;
    match rng.range(0, 9) {
        0 | 1 => {
            let (a, b) = draw_pair(rng, shape);
            FaultKind::Partition(a, b)
        }
        2 => {
            let (from, to) = draw_pair(rng, shape);
            FaultKind::PartitionOneWay { from, to }
        }
        3 => {
            let (a, b) = draw_pair(rng, shape);
            FaultKind::Hold(a, b)
        }
        4 => {
            let (a, b) = draw_pair(rng, shape);
            FaultKind::Flaky(a, b)
        }
        5 => FaultKind::Latency {
            max_ms: rng.range(100, 1_500),
        },
        6 => FaultKind::Crash(Node::Worker(worker)),
        7 => FaultKind::Crash(Node::Controller),
        8 => FaultKind::EngineHang(worker),
        _ => {
            let first = shape.first_port + worker as u16 * shape.ports_per_worker;
            let ports = (0..rng.range(1, 3))
                .map(|_| first + rng.range(0, u64::from(shape.ports_per_worker) - 1) as u16)
                .collect();
            FaultKind::SquatPorts { worker, ports }
        }
    }
}

fn draw_faults(rng: &mut Rng, shape: &Shape) -> Vec<Fault> {
    let mut faults: Vec<Fault> = (0..rng.range(0, 7))
        .map(|_| {
            let start_ms = rng.range(500, shape.fault_window_ms - 2_000);
            let length = *rng.pick(&[300, 2_000, 6_000, 15_000]) + rng.range(0, 1_000);
            Fault {
                start_ms,
                end_ms: (start_ms + length).min(shape.fault_window_ms),
                kind: draw_fault_kind(rng, shape),
            }
        })
        .collect();
    faults.sort_by_key(|f| (f.start_ms, f.end_ms));
    faults
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviour_round_trips_through_argv() {
        let mut rng = Rng::new(7);
        for _ in 0..200 {
            let b = draw_behaviour(&mut rng);
            assert_eq!(Behaviour::from_argv(&b.to_argv()), Some(b));
        }
    }

    #[test]
    fn a_plan_is_a_function_of_its_seed() {
        let a = Plan::draw(42, Shape::default());
        let b = Plan::draw(42, Shape::default());
        assert_eq!(format!("{:?}", a.jobs), format!("{:?}", b.jobs));
        assert_eq!(a.faults, b.faults);
        let c = Plan::draw(43, Shape::default());
        assert_ne!(format!("{:?}", a.jobs), format!("{:?}", c.jobs));
    }
}
