//! What the proxy tells its operators: logs, access logs and metrics.

pub mod access_log;
pub mod logging;
pub mod metrics;

pub use access_log::RequestLog;
