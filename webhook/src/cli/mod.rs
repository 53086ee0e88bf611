//! The `wi-webhook` command line: the subcommands ([`Command`]), the one error type with its exit code
//! ([`CliError`]) and [`run`]. `main.rs` only parses and calls [`run`]. `serve`'s flags are
//! [`ServeConfig`](crate::server::ServeConfig) itself; `mutate` and `doctor` have a module each.

use std::fmt::Write as _;
use std::io::{Read, Write};

use clap::{Parser, Subcommand};

use crate::server::ServeConfig;

pub mod doctor;
pub mod mutate;

/// Mutating admission webhook that gives Kubernetes pods an Azure workload identity and their Key Vault secrets.
///
/// Drop-in compatible with Azure Workload Identity: pods labelled azure.workload.identity/use=true (or in a
/// namespace so labelled) get AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST
/// and a projected service account token; a pod annotated workload-identity.rs/secret-provider-class also gets
/// the Key Vault objects of that SecretProviderClass through the Secrets Store CSI driver.
#[derive(Debug, Parser)]
#[command(name = "wi-webhook", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show offline, without a cluster, what the webhook would do to a pod.
    ///
    /// Exits 0 whether the pod is allowed or denied (a denial is printed), and 2 with a one-line reason when an
    /// input cannot be read.
    Mutate(Box<mutate::MutateArgs>),

    /// Find the mistakes that break workload identity and Key Vault delivery: in manifests (-f), in what az
    /// prints (--azure), or in a cluster (--cluster, or `doctor pod NAME`).
    ///
    /// Every finding has a code (WI101...; docs/doctor.md lists them), the object and the file:line, what goes wrong
    /// at run time and the fix. Exits 0 when nothing is wrong, 1 when an error (with --strict, also a warning) was
    /// found, 2 when an input cannot be read.
    Doctor(Box<doctor::DoctorArgs>),

    /// Serve admission requests over HTTPS, with /healthz, /readyz and /metrics on the admin port.
    ///
    /// Reads ServiceAccounts, Namespaces and SecretProviderClasses from Kubernetes (KUBECONFIG, or the in-cluster
    /// service account). Stops on SIGTERM or SIGINT after draining in-flight requests.
    Serve(Box<ServeConfig>),
}

/// An input of the CLI that cannot be used. The message is one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file is neither valid JSON nor valid YAML, or not the object expected.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, on one line.
        message: String,
    },
    /// More than one input was `-`.
    #[error("only one input can be read from standard input (-)")]
    StdinTwice,
    /// Output could not be written.
    #[error("cannot write the output: {0}")]
    Write(#[from] std::io::Error),
    /// The server stopped with an error (a bad certificate, a busy port, no Kubernetes access).
    #[error("{0:#}")]
    Serve(anyhow::Error),
    /// doctor could not read its input (a file, az output, the cluster).
    #[error("{0}")]
    DoctorInput(String),
    /// doctor found errors (the report says which).
    #[error("doctor found {0} error(s)")]
    Findings(usize),
}

impl CliError {
    /// The process exit code: 2 for input the user can fix, 1 when the server fails.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Serve(_) | CliError::Findings(_) => 1,
            _ => 2,
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli, stdin: &mut dyn Read, stdout: &mut dyn Write, stderr: &mut dyn Write) -> Result<(), CliError> {
    match cli.command {
        Command::Mutate(args) => mutate::run(&args, stdin, stdout, stderr),
        Command::Doctor(args) => doctor::run(&args, stdin, stdout, stderr),
        Command::Serve(args) => {
            let provider = rustls::crypto::CryptoProvider::get_default()
                .cloned()
                .unwrap_or_else(|| std::sync::Arc::new(rustls::crypto::ring::default_provider()));
            let runtime = tokio::runtime::Runtime::new().map_err(|e| CliError::Serve(e.into()))?;
            runtime
                .block_on(crate::server::serve(*args, provider))
                .map_err(CliError::Serve)
        }
    }
}

/// The text on one line: lines joined with `; `.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        let _ = write!(out, "{}", line.trim());
    }
    out
}
