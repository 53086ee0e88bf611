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
    // With wi-testbed selected too, features resolve as for this binary's build, whose compiled crates are reused.
    command.args([
        "build",
        "--quiet",
        "-p",
        "wi-testbed",
        "-p",
        "wi-sidecar",
        "--bin",
        "wi-sidecar",
    ]);
    if dir.file_name().is_some_and(|n| n == "release") {
        command.arg("--release");
    }
    // Under `cargo run`, the variables cargo sets for this binary would look like changed build inputs to some build
    // scripts and rebuild half the tree twice; the nested build gets the caller's environment back.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&name.as_ref());
        if set_by_cargo {
            command.env_remove(name.as_ref());
        }
    }
    if let Some(paths) = std::env::var_os("LD_LIBRARY_PATH") {
        let kept: Vec<PathBuf> = std::env::split_paths(&paths)
            .filter(|p| !p.starts_with(dir.parent().unwrap_or(dir)) && !p.to_string_lossy().contains("/toolchains/"))
            .collect();
        match std::env::join_paths(kept) {
            Ok(joined) if !joined.is_empty() => command.env("LD_LIBRARY_PATH", joined),
            _ => command.env_remove("LD_LIBRARY_PATH"),
        };
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
