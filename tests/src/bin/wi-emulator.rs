//! `wi-emulator`: Entra ID and Key Vault on 127.0.0.1, for tests, demos and laptops.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use serde_json::json;
use wi_testbed::Emulator;

/// Starts an Entra ID and Key Vault emulator on 127.0.0.1 (HTTPS, with a CA of its own) and prints its endpoints
/// as one JSON line when it is ready: authority_host (AZURE_AUTHORITY_HOST), issuer (the service account issuer,
/// with its JWKS), admin (the HTTP admin API that creates identities, federated credentials, vaults and secrets,
/// and injects faults), vaults (name to URL) and ca_file (the CA clients must trust). Stops on SIGTERM or SIGINT.
#[derive(Debug, Parser)]
#[command(name = "wi-emulator", version)]
struct Args {
    /// A vault to create at start (more can be created through the admin API). Repeatable.
    #[arg(long = "vault", value_name = "NAME")]
    vaults: Vec<String>,

    /// Tenant of the vaults created at start.
    #[arg(long, value_name = "ID", default_value = "d2f0c8a4-3b1e-4c6d-9e8f-7a6b5c4d3e2f")]
    tenant_id: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let emulator = match Emulator::start().await {
        Ok(emulator) => emulator,
        Err(error) => {
            eprintln!("wi-emulator: cannot start: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut vaults = serde_json::Map::new();
    for name in &args.vaults {
        match emulator.create_vault(name, &args.tenant_id).await {
            Ok(url) => {
                vaults.insert(name.clone(), url.into());
            }
            Err(error) => {
                eprintln!("wi-emulator: cannot create vault {name}: {error:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    let ready = json!({
        "authority_host": emulator.authority_host(),
        "issuer": emulator.issuer_url(),
        "jwks_uri": format!("{}/openid/v1/jwks", emulator.issuer_url()),
        "admin": format!("{}admin", emulator.authority_host()),
        "vaults": vaults,
        "ca_file": emulator.ca_file(),
    });
    // The ready line through the handle, never a lock kept across the await below: the emulator's tasks log too.
    let mut stdout = std::io::stdout();
    if writeln!(stdout, "{ready}").and_then(|()| stdout.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    wi_runtime::shutdown::signal().await;
    eprintln!("wi-emulator: stopping");
    drop(emulator);
    ExitCode::SUCCESS
}
