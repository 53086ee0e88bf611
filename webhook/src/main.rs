use std::process::ExitCode;

use clap::Parser;
use wi_webhook::cli::{Cli, run};

fn main() -> ExitCode {
    // One TLS crypto provider for the process: the server and the Kubernetes client both use it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = run(
        cli,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wi-webhook: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
