//! What the proxy tells its operators: logs, access logs, metrics and
//! trace spans.

pub mod access_log;
pub mod logging;
pub mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod trace;

pub use access_log::RequestLog;
