//! `harbour-loadtest`: a thin binary over the library's command line
//! (`cli`). See `docs/loadtest.md`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = harbour_loadtest::cli::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    match runtime.block_on(harbour_loadtest::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("harbour-loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}
