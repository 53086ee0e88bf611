use std::process::ExitCode;

use clap::Parser;
use wi_controller::cli::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    // One TLS crypto provider for the process: the Kubernetes client and the Azure clients both use it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wi-controller: {error:#}");
            ExitCode::FAILURE
        }
    }
}
