//! The worker's own log, kept for the cluster's log service: every event at INFO and above, as
//! Iris's worker ships its Python log records (`RemoteLogHandler` under `/system/worker/<id>`),
//! so `iris process logs --target /system/worker/<id>` shows a worker of ours too. A tracing
//! layer (`WorkerLogTap`, installed by the binary) copies each event into one process-wide
//! queue; the 2026-06 log pusher drains it. Logging never waits on the service: the queue holds
//! `LINES_MAX` lines, and beyond that the oldest go (and are counted).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Lines kept for the log service while it is away or not yet found.
pub const LINES_MAX: usize = 10_000;

/// One event of the worker's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerLine {
    pub epoch_ms: i64,
    pub level: Level,
    /// `<target> <message> <field>=<value>...`, as the worker's own log prints it.
    pub data: String,
}

struct Queue {
    lines: Mutex<VecDeque<WorkerLine>>,
    dropped: AtomicU64,
}

fn queue() -> &'static Queue {
    static QUEUE: OnceLock<Queue> = OnceLock::new();
    QUEUE.get_or_init(|| Queue {
        lines: Mutex::new(VecDeque::new()),
        dropped: AtomicU64::new(0),
    })
}

fn lock() -> std::sync::MutexGuard<'static, VecDeque<WorkerLine>> {
    queue().lines.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether lines are kept: from `serve`'s start until the era is known, and on in 2026-06,
/// whose log pusher drains them (nothing would in the task era).
static KEEPING: AtomicBool = AtomicBool::new(false);

/// Starts keeping lines (a worker that may ship them).
pub fn start_keeping() {
    KEEPING.store(true, Ordering::Relaxed);
}

/// Stops keeping lines and forgets those kept (nothing will ship them).
pub fn stop_keeping() {
    KEEPING.store(false, Ordering::Relaxed);
    lock().clear();
}

/// Keeps a line; the oldest goes past `LINES_MAX`.
pub fn keep(line: WorkerLine) {
    let mut lines = lock();
    if lines.len() >= LINES_MAX {
        lines.pop_front();
        queue().dropped.fetch_add(1, Ordering::Relaxed);
    }
    lines.push_back(line);
}

/// Lines waiting to be pushed.
pub fn pending() -> usize {
    lock().len()
}

/// Up to `max` of the oldest lines, out of the queue.
pub fn take(max: usize) -> Vec<WorkerLine> {
    let mut lines = lock();
    let n = lines.len().min(max);
    lines.drain(..n).collect()
}

/// Lines that could not be pushed go back in front (still bounded).
pub fn put_back(batch: Vec<WorkerLine>) {
    let mut lines = lock();
    for line in batch.into_iter().rev() {
        if lines.len() >= LINES_MAX {
            queue().dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        lines.push_front(line);
    }
}

/// Lines dropped since start because the queue was full.
pub fn dropped() -> u64 {
    queue().dropped.load(Ordering::Relaxed)
}

/// The tracing layer that copies events at INFO and above into the queue.
pub struct WorkerLogTap;

/// Collects an event's message and fields as `message k=v ...`.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            name => {
                let _ = write!(self.fields, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            name => {
                let _ = write!(self.fields, " {name}={value:?}");
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for WorkerLogTap {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > Level::INFO || !KEEPING.load(Ordering::Relaxed) {
            return;
        }
        let mut text = Text::default();
        event.record(&mut text);
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        keep(WorkerLine {
            epoch_ms,
            level: *meta.level(),
            data: format!("{} {}{}", meta.target(), text.message, text.fields),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn info_and_above_are_kept_with_their_fields_and_the_queue_is_bounded() {
        start_keeping();
        let subscriber = tracing_subscriber::registry().with(WorkerLogTap);
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!("not kept");
            tracing::info!(worker_id = "w-1", "registered");
            tracing::warn!(error = %"refused", "pushing failed");
        });
        let kept = take(usize::MAX);
        let data: Vec<&str> = kept.iter().map(|l| l.data.as_str()).collect();
        let this = module_path!();
        assert_eq!(
            data,
            [
                format!("{this} registered worker_id=w-1"),
                format!("{this} pushing failed error=refused"),
            ]
        );
        assert_eq!(kept[1].level, Level::WARN);
        (0..LINES_MAX + 3).for_each(|i| {
            keep(WorkerLine {
                epoch_ms: i as i64,
                level: Level::INFO,
                data: String::new(),
            })
        });
        let all = take(usize::MAX);
        assert_eq!(all.len(), LINES_MAX);
        assert_eq!(all[0].epoch_ms, 3, "the oldest went");
        assert!(dropped() >= 3);
    }
}
