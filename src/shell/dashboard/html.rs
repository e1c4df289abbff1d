//! Server-rendered pages: pure functions from statuses and log lines to HTML. Everything a task
//! controls (ids, errors, log lines, messages) goes through `escape`.

use std::fmt::Write;

use crate::core::state_name;
use crate::core::{LogLine, LogSource, Retention, TaskState};
use crate::proto;
use crate::shell::samples::Sample;

/// The worker and its machine, for the front page's header.
#[derive(Clone, Debug, Default)]
pub struct WorkerView {
    pub cpus: usize,
    pub load: Option<[f64; 3]>,
    /// (used, total) MiB.
    pub memory: Option<(u64, u64)>,
    /// The cache dir's file system: (bytes, inodes) percent in use.
    pub disk: Option<(u8, u8)>,
    /// (time, running tasks), oldest first.
    pub running: Vec<(u64, usize)>,
    /// The Iris protocol era spoken with the controller; `None` without a controller.
    pub era: Option<String>,
}

/// How a task page shows its log: the source tab, a search, and whether it follows the end.
#[derive(Clone, Debug, Default)]
pub struct LogView {
    pub source: Option<LogSource>,
    pub regex: String,
    pub follow: bool,
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a task id for a URL path; `/` stays, the route takes the rest of the path.
pub fn url_path(text: &str) -> String {
    percent_encoded(text, b"-_.~/")
}

/// Every byte but ASCII letters, digits and `keep` as `%XX`.
fn percent_encoded(text: &str, keep: &[u8]) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse}td,th{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:left}\
.state{font-weight:bold}.failed,.worker_failed{color:#b00}.succeeded{color:#070}.running{color:#05a}\
.killed{color:#a60}pre{background:#f6f6f6;padding:.6em;overflow-x:auto;white-space:pre-wrap;\
overflow-wrap:anywhere}h1{overflow-wrap:anywhere}td{max-width:32em;overflow-wrap:break-word}\
nav a{margin-right:.8em}\
.stderr,.error{color:#b00}.build{color:#555}pre a{color:#999;text-decoration:none}\
.charts{display:flex;flex-wrap:wrap;gap:1.5em}.chart{width:320px}\
.chart polyline{fill:none;stroke:#05a;stroke-width:1.5}.chart text{font-size:10px;fill:#555}\
.machine span{margin-right:1.2em}form{margin:.6em 0}";

fn page(title: &str, refresh_seconds: u32, body: &str) -> String {
    page_reloading(title, &refresh_seconds.to_string(), body)
}

/// `refresh` is the meta refresh's content: seconds, or `seconds;url=...`.
fn page_reloading(title: &str, refresh: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"{}\">\
<title>{}</title><style>{STYLE}</style></head>\n<body>\n{body}</body></html>\n",
        escape(refresh),
        escape(title)
    )
}

/// A small line chart as inline SVG: `points` are (time ms, value), oldest first. Fewer than two
/// points draw nothing but say so.
pub fn chart(class: &str, title: &str, points: &[(u64, f64)]) -> String {
    const W: f64 = 320.0;
    const H: f64 = 80.0;
    if points.len() < 2 {
        return format!("<p class=\"chart {class} empty\">{title}: not enough samples yet</p>");
    }
    let (t0, t1) = (points[0].0, points[points.len() - 1].0);
    let span = (t1.saturating_sub(t0)).max(1) as f64;
    let top = points.iter().map(|p| p.1).fold(0.0_f64, f64::max).max(1.0);
    let coords: Vec<String> = points
        .iter()
        .map(|(t, v)| {
            let x = (t - t0) as f64 / span * W;
            let y = H - 12.0 - v / top * (H - 16.0);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let last = points[points.len() - 1].1;
    format!(
        "<svg class=\"chart {class}\" data-points=\"{}\" viewBox=\"0 0 {W} {H}\" \
width=\"{W}\" height=\"{H}\" role=\"img\"><title>{title}</title>\
<text x=\"2\" y=\"{}\">{title}: now {last:.0}, max {top:.0}, over {:.0} s</text>\
<polyline points=\"{}\"/></svg>",
        points.len(),
        H - 1.0,
        span / 1000.0,
        coords.join(" ")
    )
}

fn machine_header(body: &mut String, w: &WorkerView) {
    body.push_str("<p class=\"machine\">");
    let era = match w.era.as_deref() {
        Some(era @ "2026-06") => format!("Iris {era} (reconcile)"),
        Some(era) => format!("Iris {} (task era)", escape(era)),
        None => "standalone (no controller)".to_string(),
    };
    let _ = write!(body, "<span class=\"era\">{era}</span>");
    let _ = write!(body, "<span>{} CPUs</span>", w.cpus);
    if let Some([a, b, c]) = w.load {
        let _ = write!(body, "<span>load {a:.2} {b:.2} {c:.2}</span>");
    }
    if let Some((used, total)) = w.memory {
        let _ = write!(body, "<span>memory {used} / {total} MiB</span>");
    }
    if let Some((bytes, inodes)) = w.disk {
        let _ = write!(
            body,
            "<span>cache dir disk {bytes}% used, inodes {inodes}%</span>"
        );
    }
    body.push_str("</p>\n");
    let running: Vec<(u64, f64)> = w.running.iter().map(|(t, n)| (*t, *n as f64)).collect();
    body.push_str(&chart(
        "running-tasks",
        "running tasks, last hour",
        &running,
    ));
    body.push('\n');
}

fn short(state: i32) -> &'static str {
    TaskState::from_proto(state).map_or("unspecified", TaskState::short_name)
}

/// Milliseconds since the epoch as a UTC time, `2026-11-26 12:38:03.396Z`; 0 is "-".
pub fn ms_text(ms: i64) -> String {
    if ms <= 0 {
        return "-".to_string();
    }
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, sec, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{sec:02}.{milli:03}Z")
}

fn exit_text(t: &proto::TaskStatus) -> String {
    match (t.finished_at_ms, t.exit_signal) {
        (0, _) => "-".to_string(),
        (_, 0) => t.exit_code.to_string(),
        (_, sig) => format!("signal {sig}"),
    }
}

/// Newest first: by start time, then id.
pub fn sort_newest_first(tasks: &mut [proto::TaskStatus]) {
    tasks.sort_by(|a, b| {
        b.started_at_ms
            .cmp(&a.started_at_ms)
            .then_with(|| a.task_id.cmp(&b.task_id))
    });
}

/// `/`: counts by state, then the tasks, newest first, optionally only one state.
pub fn index(
    tasks: &[proto::TaskStatus],
    worker_id: &str,
    only: Option<TaskState>,
    retention: &Retention,
    worker: &WorkerView,
) -> String {
    let mut body = format!("<h1>iris-worker {}</h1>\n", escape(worker_id));
    machine_header(&mut body, worker);
    body.push_str("<nav>");
    let _ = write!(body, "<a href=\"/\">all ({})</a>", tasks.len());
    for state in TaskState::ALL {
        let n = tasks
            .iter()
            .filter(|t| t.state == state.to_proto() as i32)
            .count();
        if n > 0 {
            let name = state.short_name();
            let _ = write!(body, "<a href=\"/?state={name}\">{name} ({n})</a>");
        }
    }
    body.push_str(
        "</nav>\n<table>\n<tr><th>task</th><th>job</th><th>index</th><th>attempt</th>\
<th>state</th><th>exit</th><th>memory MB</th><th>peak MB</th><th>cpu m</th><th>started</th>\
<th>finished</th><th>error</th></tr>\n",
    );
    let shown = tasks
        .iter()
        .filter(|t| only.is_none_or(|s| t.state == s.to_proto() as i32));
    for t in shown {
        let usage = t.resource_usage.unwrap_or_default();
        let state = short(t.state);
        let _ = writeln!(
            body,
            "<tr><td><a href=\"/task/{}\">{}</a></td><td>{}</td><td>{}/{}</td><td>{}</td>\
<td class=\"state {state}\">{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
<td>{}</td><td>{}</td></tr>",
            url_path(&t.task_id),
            escape(&t.task_id),
            escape(&t.job_id),
            t.task_index,
            t.num_tasks,
            t.current_attempt_id,
            exit_text(t),
            usage.memory_mb,
            usage.memory_peak_mb,
            usage.cpu_millicores,
            ms_text(t.started_at_ms),
            ms_text(t.finished_at_ms),
            escape(&t.error),
        );
    }
    body.push_str("</table>\n");
    retention_note(&mut body, tasks, retention);
    page(&format!("iris-worker {worker_id}"), 5, &body)
}

/// How many finished tasks are kept, and the settings that decide it.
fn retention_note(body: &mut String, tasks: &[proto::TaskStatus], retention: &Retention) {
    let finished = tasks
        .iter()
        .filter(|t| TaskState::from_proto(t.state).is_some_and(crate::core::is_task_finished))
        .count();
    let age = match retention.finished_for_ms {
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms => format!("{}s", ms / 1000),
    };
    let _ = writeln!(
        body,
        "<p class=\"retention\">{finished} finished tasks kept. Retention: at most {} finished \
tasks, each for at most {age}, fewer above {}% of the cache dir's disk or {}% of its inodes in \
use; a task goes only once the controller has its terminal report.</p>",
        retention.finished_tasks_max,
        retention.disk_used_percent_max,
        retention.inodes_used_percent_max,
    );
}

/// `/task/{id}`: the task's status, attempts, ports, usage, build, and its logs.
pub fn task(
    t: &proto::TaskStatus,
    lines: &[LogLine],
    view: &LogView,
    samples: &[Sample],
) -> String {
    let mut body = format!(
        "<p><a href=\"/\">all tasks</a></p>\n<h1>{}</h1>\n",
        escape(&t.task_id)
    );
    task_summary(&mut body, t);
    usage_charts(&mut body, samples);
    attempts_table(&mut body, t);
    log_view(&mut body, t, lines, view);
    let finished = TaskState::from_proto(t.state).is_some_and(crate::core::is_task_finished);
    let seconds = if finished { 30 } else { 2 };
    if view.follow {
        let url = format!("{}#end", log_url(t, view, true));
        return page_reloading(&t.task_id, &format!("{seconds};url={url}"), &body);
    }
    page(&t.task_id, seconds, &body)
}

/// Memory and CPU of the current attempt over its life.
fn usage_charts(body: &mut String, samples: &[Sample]) {
    let memory: Vec<(u64, f64)> = samples
        .iter()
        .map(|s| (s.at_ms, s.memory_mb as f64))
        .collect();
    let cpu: Vec<(u64, f64)> = samples
        .iter()
        .map(|s| (s.at_ms, f64::from(s.cpu_millicores)))
        .collect();
    let _ = writeln!(
        body,
        "<div class=\"charts\">{}{}</div>",
        chart("memory", "memory MB", &memory),
        chart("cpu", "cpu millicores", &cpu)
    );
}

/// The task page's URL for a log view (the search and tab kept).
fn log_url(t: &proto::TaskStatus, view: &LogView, follow: bool) -> String {
    let mut query = Vec::new();
    if let Some(source) = view.source {
        query.push(format!("source={source}"));
    }
    if !view.regex.is_empty() {
        query.push(format!("regex={}", url_query(&view.regex)));
    }
    if follow {
        query.push("follow=1".to_string());
    }
    let base = format!("/task/{}", url_path(&t.task_id));
    match query.is_empty() {
        true => base,
        false => format!("{base}?{}", query.join("&")),
    }
}

/// Percent-encodes a query value.
fn url_query(text: &str) -> String {
    percent_encoded(text, b"-_.~")
}

/// State, exit, times, usage, ports and build of the current attempt.
fn task_summary(body: &mut String, t: &proto::TaskStatus) {
    let usage = t.resource_usage.unwrap_or_default();
    let state = short(t.state);
    let _ = write!(
        body,
        "<table>\n\
<tr><th>state</th><td class=\"state {state}\">{}</td></tr>\n\
<tr><th>job</th><td>{} (index {}/{})</td></tr>\n<tr><th>attempt</th><td>{}</td></tr>\n\
<tr><th>exit</th><td>{}</td></tr>\n<tr><th>error</th><td>{}</td></tr>\n\
<tr><th>message</th><td>{}</td></tr>\n<tr><th>started / finished</th><td>{} / {}</td></tr>\n\
<tr><th>memory MB (peak)</th><td>{} ({})</td></tr>\n<tr><th>cpu millicores</th><td>{}</td></tr>\n\
<tr><th>processes</th><td>{}</td></tr>\n<tr><th>disk MB</th><td>{}</td></tr>\n",
        state_name(t.state),
        escape(&t.job_id),
        t.task_index,
        t.num_tasks,
        t.current_attempt_id,
        exit_text(t),
        escape(&t.error),
        escape(&t.status_message),
        ms_text(t.started_at_ms),
        ms_text(t.finished_at_ms),
        usage.memory_mb,
        usage.memory_peak_mb,
        usage.cpu_millicores,
        usage.process_count,
        usage.disk_mb,
    );
    let mut ports: Vec<_> = t.ports.iter().collect();
    ports.sort();
    for (name, port) in ports {
        let _ = writeln!(
            body,
            "<tr><th>port {}</th><td>{port}</td></tr>",
            escape(name)
        );
    }
    if let Some(b) = &t.build_metrics {
        let took = (b.build_finished_ms - b.build_started_ms).max(0);
        let image = if b.image_tag.is_empty() {
            "-"
        } else {
            &b.image_tag
        };
        let _ = writeln!(
            body,
            "<tr><th>build</th><td>{took} ms, image {}, from cache: {}</td></tr>",
            escape(image),
            b.from_cache
        );
    }
    body.push_str("</table>\n");
}

/// Every attempt of the task, oldest first.
fn attempts_table(body: &mut String, t: &proto::TaskStatus) {
    body.push_str(
        "<h2>attempts</h2>\n<table>\n<tr><th>attempt</th><th>state</th>\
<th>exit</th><th>started</th><th>finished</th><th>error</th></tr>\n",
    );
    for a in &t.attempts {
        let _ = writeln!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            a.attempt_id,
            short(a.state),
            a.exit_code,
            ms_text(a.started_at_ms),
            ms_text(a.finished_at_ms),
            escape(&a.error)
        );
    }
    body.push_str("</table>\n");
}

/// A search (regex and source, as FetchLogsFilter), the source tabs, follow, and the newest
/// matching lines, each with its number as an anchor (`#L120`).
fn log_view(body: &mut String, t: &proto::TaskStatus, lines: &[LogLine], view: &LogView) {
    let base = format!("/task/{}", url_path(&t.task_id));
    let _ = write!(
        body,
        "<h2>logs</h2>\n<form method=\"get\" action=\"{base}\">\
<input type=\"search\" name=\"regex\" placeholder=\"regex\" value=\"{}\">\
<select name=\"source\">",
        escape(&view.regex)
    );
    let sources = [
        LogSource::Stdout,
        LogSource::Stderr,
        LogSource::Build,
        LogSource::Error,
    ];
    let _ = write!(body, "<option value=\"all\">all</option>");
    for source in sources {
        let selected = if view.source == Some(source) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            body,
            "<option value=\"{source}\"{selected}>{source}</option>"
        );
    }
    body.push_str("</select> <button>search</button></form>\n<nav>");
    let _ = write!(body, "<a href=\"{base}\">all</a>");
    for source in [LogSource::Stdout, LogSource::Stderr, LogSource::Build] {
        let _ = write!(body, "<a href=\"{base}?source={source}\">{source}</a>");
    }
    let follow = if view.follow {
        format!("<a href=\"{}\">stop following</a>", log_url(t, view, false))
    } else {
        format!("<a href=\"{}#end\">follow</a>", log_url(t, view, true))
    };
    let shown = view.source.map_or("all", LogSource::as_str);
    let search = if view.regex.is_empty() {
        String::new()
    } else {
        format!(", matching {}", escape(&view.regex))
    };
    let _ = writeln!(
        body,
        "{follow}</nav>\n<p>showing: {shown}{search}, newest {} lines</p>\n<pre>",
        lines.len()
    );
    for line in lines {
        let n = line.line_number;
        let _ = writeln!(
            body,
            "<span id=\"L{n}\" class=\"{}\"><a href=\"#L{n}\">{n:>6}</a> {}</span>",
            line.source,
            escape(&line.data)
        );
    }
    body.push_str("</pre>\n<span id=\"end\"></span>\n");
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_times() {
        assert_eq!(super::ms_text(0), "-");
        assert_eq!(super::ms_text(1), "1970-01-01 00:00:00.001Z");
        assert_eq!(super::ms_text(951_782_400_000), "2000-02-29 00:00:00.000Z");
        assert_eq!(
            super::ms_text(1_795_696_683_396),
            "2026-11-26 12:38:03.396Z"
        );
    }
}
