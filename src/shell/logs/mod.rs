//! The log store's wing: each attempt's output as numbered lines on disk, a window of recent
//! lines in memory, and the marks that let a restarted worker resume a stream where it stopped;
//! and the worker's own log, kept for the cluster's log service (`worker_log`).

pub mod file;
pub mod level;
pub mod lines;
pub mod output_mark;
pub mod store;
pub mod window;
pub mod worker_log;
