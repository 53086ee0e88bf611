use std::process::ExitCode;

use clap::Parser;
use wi_sidecar::cli::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wi-sidecar: {error:#}");
            ExitCode::FAILURE
        }
    }
}
