//! `mesh-bench`: vakt-proxy side by side with NGINX and HAProxy on
//! loopback, each proxy on one pinned core in front of the same example
//! upstream, with the direct path as the floor. [`run`] drives the rounds,
//! [`load`] is the client, [`procs`] and [`peers`] start the targets,
//! [`sys`] reads `/proc`, [`report`] and [`chart`] write the results,
//! [`soak`] holds vakt-proxy at half its saturating rate for minutes and
//! [`soak_report`] reads whether its memory stayed flat.

pub mod chart;
pub mod load;
pub mod peers;
pub mod procs;
pub mod report;
pub mod run;
pub mod soak;
pub mod soak_report;
pub mod sys;
