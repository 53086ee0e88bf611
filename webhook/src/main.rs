use std::process::ExitCode;

use clap::Parser;
use wi_webhook::cli::{Cli, run};

fn main() -> ExitCode {
    // One TLS crypto provider for the process: the server and the Kubernetes client both use it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    // The handles, never their locks: `serve` logs to standard error from tokio worker threads, and a lock held
    // here for the whole process would block the first of those lines forever (and with it the server).
    let result = run(
        cli,
        &mut std::io::stdin(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // doctor's report ends with its own count of errors: a second line would only repeat it.
            if !matches!(error, wi_webhook::cli::CliError::Findings(_)) {
                eprintln!("wi-webhook: {error}");
            }
            ExitCode::from(error.exit_code())
        }
    }
}
