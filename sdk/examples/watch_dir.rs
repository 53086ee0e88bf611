//! Debugging tool: prints one JSON line per new snapshot of a secrets directory, with the SHA-256 of each file,
//! never its content.
//!
//! ```text
//! cargo run -p wi-sdk --example watch_dir -- /mnt/secrets-store
//! {"generation":1,"files":{"db-password":"9f86d0818..."}}
//! ```

use std::process::ExitCode;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use wi_sdk::{SecretsDir, Snapshot};

fn line(snapshot: &Snapshot) -> String {
    let files: Map<String, Value> = snapshot
        .iter()
        .map(|(name, content)| {
            let digest = Sha256::digest(content);
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            (name.to_owned(), Value::String(hex))
        })
        .collect();
    json!({"generation": snapshot.generation(), "files": files}).to_string()
}

#[tokio::main]
async fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: watch_dir DIR\nprints a JSON line with the SHA-256 of every file each time DIR changes");
        return ExitCode::from(2);
    };
    let secrets = match SecretsDir::watch(&dir) {
        Ok(secrets) => secrets,
        Err(error) => {
            eprintln!("watch_dir: {error}");
            return ExitCode::from(1);
        }
    };
    let mut snapshots = secrets.subscribe();
    let mut reported_error = None;
    let mut printed = 0;
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        if snapshot.generation() > printed {
            println!("{}", line(&snapshot));
            printed = snapshot.generation();
        }
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { return ExitCode::SUCCESS },
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                // Report a read error once per run of failures, on standard error.
                let stale = secrets.stale().map(|s| s.error);
                if stale != reported_error {
                    if let Some(error) = &stale {
                        eprintln!("watch_dir: {error} (the last snapshot stays)");
                    }
                    reported_error = stale;
                }
                continue;
            }
        }
    }
}
