//! `vakt-proxy`: see the crate docs of `vakt_proxy`.

use clap::Parser;
use vakt_proxy::{app, cli::Cli};

fn main() {
    let cli = Cli::parse();
    // One worker runs on the current thread: no work stealing, no
    // wake-ups across threads.
    let mut runtime = match cli.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = runtime.enable_all().build().expect("tokio runtime");
    let code = match runtime.block_on(app::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vakt-proxy: {e:#}");
            2
        }
    };
    std::process::exit(code);
}
