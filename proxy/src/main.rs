//! `vakt-proxy`: see the crate docs of `vakt_proxy`.

use clap::Parser;
use vakt_proxy::{app, cli::Cli};

fn main() {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.workers {
        runtime.worker_threads(n.max(1));
    }
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
