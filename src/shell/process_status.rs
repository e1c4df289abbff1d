//! The worker process as Iris's `GetProcessStatus` describes a process (`iris process status
//! --target /system/worker/<id>`; Iris's `collect_process_info`): pid, memory, threads, open
//! files, cpu since the last call, the machine's memory and cores, the build's commit.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::proto::v2026_06::iris::job::ProcessInfo;

/// The process's cpu time (in clock ticks) when last asked, and when.
static LAST_CPU: Mutex<Option<(Instant, u64)>> = Mutex::new(None);

/// What this process is now; `uptime` is the worker's.
pub fn process_info(uptime: Duration) -> ProcessInfo {
    let page = page_size();
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let mut pages = statm
        .split_whitespace()
        .map(|v| v.parse::<i64>().unwrap_or(0));
    let (vms, rss) = (pages.next().unwrap_or(0), pages.next().unwrap_or(0));
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    ProcessInfo {
        hostname: crate::shell::probe::hostname(),
        pid: std::process::id() as i32,
        // Not Python: the field says what runs instead.
        python_version: format!("none (iris-worker {}, Rust)", env!("CARGO_PKG_VERSION")),
        uptime_ms: i64::try_from(uptime.as_millis()).unwrap_or(i64::MAX),
        memory_rss_bytes: rss * page,
        memory_vms_bytes: vms * page,
        thread_count: threads(&status),
        open_fd_count: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i32),
        // SAFETY: sysconf reads a constant of the running system.
        memory_total_bytes: unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) }.max(0) * page,
        cpu_count: std::thread::available_parallelism().map_or(0, |n| n.get() as i32),
        git_hash: env!("IRIS_WORKER_GIT_COMMIT").to_string(),
        cpu_millicores: cpu_millicores(),
    }
}

fn page_size() -> i64 {
    // SAFETY: sysconf reads a constant of the running system.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1)
}

/// `Threads:` of /proc/self/status.
fn threads(status: &str) -> i32 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// User and system time of /proc/self/stat, in clock ticks (fields 14 and 15, counted after
/// the command name's closing parenthesis).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second, the unit of /proc's CPU times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the running system.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// Cpu used since the last call, in millicores (0 on the first, as Iris's).
fn cpu_millicores() -> i32 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some(ticks) = cpu_ticks(&stat) else {
        return 0;
    };
    let now = Instant::now();
    let mut last = LAST_CPU.lock().unwrap_or_else(|p| p.into_inner());
    let previous = last.replace((now, ticks));
    let Some((then, before)) = previous else {
        return 0;
    };
    let hz = ticks_per_second();
    let elapsed = now.duration_since(then).as_secs_f64();
    if elapsed <= 0.0 {
        return 0;
    }
    let used = ticks.saturating_sub(before) as f64 / hz;
    (used / elapsed * 1000.0).round() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_are_read() {
        let stat = "123 (iris worker) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9";
        assert_eq!(cpu_ticks(stat), Some(300));
        assert_eq!(threads("Name:\tx\nThreads:\t17\n"), 17);
        let info = process_info(Duration::from_secs(3));
        assert!(info.memory_rss_bytes > 0 && info.thread_count > 0 && info.open_fd_count > 0);
        assert_eq!(info.uptime_ms, 3000);
    }
}

/// The worker's threads now, for `ProfileTask` of `/system/process` with a threads profile (Iris
/// answers that with py-spy on its own Python process): each thread's name, state, what it waits
/// in (the kernel's wait channel) and CPU time so far. The worker is not a Python process, so
/// there are no stacks to show; which thread is busy or stuck is what an operator asks here.
pub fn thread_dump() -> String {
    let hz = ticks_per_second();
    let mut tids: Vec<u64> = std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    tids.sort_unstable();
    let mut out = format!(
        "iris-worker {} (pid {}): {} threads\n",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        tids.len()
    );
    for tid in tids {
        let read = |f: &str| std::fs::read_to_string(format!("/proc/self/task/{tid}/{f}"));
        let name = read("comm").unwrap_or_default();
        let stat = read("stat").unwrap_or_default();
        // The state is the first field after the name's closing parenthesis.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("?");
        let cpu = cpu_ticks(&stat).unwrap_or(0);
        let wchan = read("wchan").unwrap_or_default();
        let wchan = if wchan.is_empty() || wchan == "0" {
            "-"
        } else {
            &wchan
        };
        out.push_str(&format!(
            "Thread {tid} \"{}\" state={state} wchan={wchan} cpu={:.2}s\n",
            name.trim(),
            cpu as f64 / hz
        ));
    }
    out
}

#[cfg(test)]
mod thread_tests {
    use super::*;

    #[test]
    fn the_dump_names_every_thread_of_the_worker() {
        let _named = std::thread::Builder::new()
            .name("dump-probe".into())
            .spawn(|| std::thread::sleep(Duration::from_secs(2)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let dump = thread_dump();
        assert!(dump.starts_with("iris-worker "), "{dump}");
        let line = dump
            .lines()
            .find(|l| l.contains("\"dump-probe\""))
            .unwrap_or_else(|| panic!("{dump}"));
        assert!(line.contains("state=S"), "a sleeping thread: {line}");
    }
}
