//! Iris's stats tables in the cluster's log service: the rows (`rows`, their schemas and Arrow
//! encoding) and the queues they wait in (`tables`). Writing them is the 2026-06 era's
//! (`era2026_06::stats_writer`); this folder knows no era and no network.

pub mod rows;
pub mod tables;
