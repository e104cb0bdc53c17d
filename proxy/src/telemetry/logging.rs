//! Log setup: human-readable or JSON lines on stderr, with access-log
//! lines written as they are (already JSON) on their own target.

use std::io::Write;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter};

use super::access_log::TARGET;

/// Log line format for everything but access logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `RUST_LOG` overrides the default
/// level (`info`).
pub fn init(format: LogFormat) {
    let env = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let not_access = filter::filter_fn(|m| m.target() != TARGET);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.with_filter(not_access).boxed(),
        LogFormat::Json => fmt.json().with_filter(not_access).boxed(),
    };
    let access = AccessLines.with_filter(filter::filter_fn(|m| m.target() == TARGET));
    let _ = tracing_subscriber::registry()
        .with(env())
        .with(fmt)
        .with(access)
        .try_init();
}

/// Writes the message of each access-log event as one line.
struct AccessLines;

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            use std::fmt::Write as _;
            let _ = write!(self.0, "{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }
}

impl<S: Subscriber> Layer<S> for AccessLines {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut msg = Message(String::with_capacity(512));
        event.record(&mut msg);
        msg.0.push('\n');
        let _ = std::io::stderr().lock().write_all(msg.0.as_bytes());
    }
}
