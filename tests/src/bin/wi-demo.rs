//! `wi-demo`: the AKS + Key Vault walkthrough end to end on the emulator. See `wi_testbed::demo`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Replays the AKS + Key Vault walkthrough on the embedded emulator: wi-webhook admits the example Deployment's pod,
/// the injected wi-sidecar syncs the secret with the pod's workload identity, an app built on wi-sdk prints it and
/// sees rotations without a restart. Exits 0 when every step passed, 1 naming the step that failed.
#[derive(Debug, Parser)]
#[command(name = "wi-demo", version)]
struct Cli {
    /// The example manifests (ServiceAccount, SecretProviderClass, Deployment).
    #[arg(long, value_name = "DIR", default_value_os_t = default_examples())]
    examples: PathBuf,

    /// The wi-sidecar binary. Default: the one next to this binary, built with cargo (same profile) if missing.
    #[arg(long, value_name = "FILE")]
    sidecar: Option<PathBuf>,

    /// Rotation interval the webhook gives the sidecars it injects (2m in a cluster; short here).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    rotation_interval: Duration,
}

fn default_examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples")
}

/// `wi-sidecar` next to this executable (`target/<profile>/`), built by cargo when it is not there yet.
fn sidecar_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{} has no directory", exe.display()))?;
    let binary = dir.join("wi-sidecar");
    if binary.exists() {
        return Ok(binary);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command.args(["build", "--quiet", "-p", "wi-sidecar", "--bin", "wi-sidecar"]);
    if dir.file_name().is_some_and(|n| n == "release") {
        command.arg("--release");
    }
    eprintln!("building wi-sidecar ({})", binary.display());
    let status = command.status()?;
    anyhow::ensure!(status.success(), "cargo build -p wi-sidecar failed ({status})");
    anyhow::ensure!(
        binary.exists(),
        "cargo built wi-sidecar, but not at {}",
        binary.display()
    );
    Ok(binary)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let sidecar = match cli.sidecar.map_or_else(sidecar_binary, Ok) {
        Ok(path) => path,
        Err(error) => {
            eprintln!("wi-demo: cannot find wi-sidecar: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let options = wi_testbed::demo::Options {
        examples: cli.examples,
        sidecar,
        rotation_interval: cli.rotation_interval,
    };
    let mut stdout = std::io::stdout();
    match wi_testbed::demo::run(&options, &mut stdout).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(failed) => {
            eprintln!("\nwi-demo: {failed}");
            ExitCode::FAILURE
        }
    }
}
