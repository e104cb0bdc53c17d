//! `vakt-proxy`: see the crate docs of `vakt_proxy`.

use clap::Parser;
use vakt_proxy::{app, cli::Cli};

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match runtime.block_on(app::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vakt-proxy: {e:#}");
            2
        }
    };
    std::process::exit(code);
}
