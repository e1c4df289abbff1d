//! Resource usage of a task's processes, read from /proc, and a workdir's disk usage. A task's
//! processes are its group and every descendant of the group's leader (the shim, a subreaper,
//! inherits those that left the group with `setsid`).

use std::fs;
use std::time::Instant;

use crate::core::ResourceUsage;

/// One /proc/PID/stat line's fields we need.
struct ProcStat {
    ppid: i32,
    pgrp: i32,
    cpu_ticks: u64,
    rss_pages: i64,
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); pgrp is field 5, utime 14, stime 15, rss 24.
    let field = |n: usize| fields.get(n - 3).copied();
    Some(ProcStat {
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        cpu_ticks: field(14)?.parse::<u64>().ok()? + field(15)?.parse::<u64>().ok()?,
        rss_pages: field(24)?.parse().ok()?,
    })
}

/// Samples one process group, remembering the previous sample to turn CPU ticks into a rate.
pub struct GroupSampler {
    pgid: i32,
    last: Option<(Instant, u64)>,
    ticks_per_second: u64,
    page_bytes: i64,
}

impl GroupSampler {
    pub fn new(pgid: i32) -> GroupSampler {
        // SAFETY: sysconf only reads configuration.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        GroupSampler {
            pgid,
            last: None,
            ticks_per_second: u64::try_from(ticks).unwrap_or(100).max(1),
            page_bytes: i64::from(page.max(1) as i32),
        }
    }

    /// The group's processes and every descendant of its leader.
    fn members(&self) -> Vec<ProcStat> {
        let all: Vec<(i32, ProcStat)> = fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(|pid| {
                let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                Some((pid, parse_stat(&text)?))
            })
            .collect();
        let mut inside: std::collections::BTreeSet<i32> = all
            .iter()
            .filter(|(pid, s)| s.pgrp == self.pgid || *pid == self.pgid)
            .map(|(pid, _)| *pid)
            .collect();
        loop {
            let before = inside.len();
            for (pid, s) in &all {
                if inside.contains(&s.ppid) {
                    inside.insert(*pid);
                }
            }
            if inside.len() == before {
                break;
            }
        }
        all.into_iter()
            .filter(|(pid, _)| inside.contains(pid))
            .map(|(_, s)| s)
            .collect()
    }

    pub fn sample(&mut self) -> ResourceUsage {
        let members = self.members();
        let cpu_ticks: u64 = members.iter().map(|s| s.cpu_ticks).sum();
        let rss_pages: i64 = members.iter().map(|s| s.rss_pages).sum();
        let count = members.len() as i32;
        let now = Instant::now();
        let millicores = match self.last {
            Some((at, ticks)) if now > at => {
                let used_ms = cpu_ticks.saturating_sub(ticks) * 1000 / self.ticks_per_second;
                let wall_ms = now.duration_since(at).as_millis().max(1) as u64;
                (used_ms * 1000 / wall_ms) as i32
            }
            _ => 0,
        };
        self.last = Some((now, cpu_ticks));
        let memory_mb = rss_pages * self.page_bytes / (1024 * 1024);
        ResourceUsage {
            memory_mb,
            memory_peak_mb: memory_mb,
            disk_mb: 0,
            cpu_millicores: millicores,
            cpu_percent: millicores / 10,
            process_count: count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "4242 (my (odd) cmd) S 1 4240 4240 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 100 1000 250 18446744073709551615";
        let stat = parse_stat(line).unwrap();
        assert_eq!((stat.pgrp, stat.cpu_ticks, stat.rss_pages), (4240, 10, 250));
    }

    #[test]
    fn samples_our_own_group() {
        // SAFETY: getpgrp reads our own process group.
        let pgid = unsafe { libc::getpgrp() };
        let usage = GroupSampler::new(pgid).sample();
        assert!(usage.process_count >= 1);
        assert!(usage.memory_mb >= 1);
    }
}
