//! How the CLI shows tasks to people: tables and details. The JSON view, which the dashboard
//! shares, is `shell::view`.

use crate::core::short_state_name as short_state;
use crate::proto;

fn exit_text(status: &proto::TaskStatus) -> String {
    match (status.finished_at_ms, status.exit_signal) {
        (0, _) => "-".to_string(),
        (_, 0) => status.exit_code.to_string(),
        (_, sig) => format!("sig {sig}"),
    }
}

/// One line per task, aligned.
pub fn task_table(tasks: &[proto::TaskStatus]) -> String {
    let mut rows = vec![[
        "TASK".to_string(),
        "ATTEMPT".to_string(),
        "STATE".to_string(),
        "EXIT".to_string(),
        "MEM MB".to_string(),
        "ERROR".to_string(),
    ]];
    for t in tasks {
        let mem = t.resource_usage.as_ref().map_or(0, |u| u.memory_mb);
        rows.push([
            t.task_id.clone(),
            t.current_attempt_id.to_string(),
            short_state(t.state).to_string(),
            exit_text(t),
            mem.to_string(),
            t.error.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A task's details, one field per line.
pub fn task_detail(status: &proto::TaskStatus) -> String {
    let usage = status.resource_usage.unwrap_or_default();
    let mut out = vec![
        format!("task:      {}", status.task_id),
        format!(
            "job:       {} (index {}/{})",
            status.job_id, status.task_index, status.num_tasks
        ),
        format!("attempt:   {}", status.current_attempt_id),
        format!("state:     {}", short_state(status.state)),
        format!("exit:      {}", exit_text(status)),
    ];
    if !status.error.is_empty() {
        out.push(format!("error:     {}", status.error));
    }
    if status.oom_killed {
        out.push("oom:       killed by the OOM killer".to_string());
    }
    let mut ports: Vec<_> = status.ports.iter().collect();
    ports.sort();
    for (name, port) in ports {
        out.push(format!("port:      {name}={port}"));
    }
    out.push(format!(
        "resources: {} MB (peak {} MB), {} millicores, {} processes, {} MB disk",
        usage.memory_mb,
        usage.memory_peak_mb,
        usage.cpu_millicores,
        usage.process_count,
        usage.disk_mb
    ));
    out.join("\n")
}
