//! A service that picks up a rotated database password without restarting.
//!
//! ```text
//! cargo run -p wi-sdk --example db_password -- /mnt/secrets-store db-password
//! ```
//!
//! The password is read through [`wi_sdk::Watched`]: validated (non-empty UTF-8, trimmed) before it replaces the
//! current one, held in a [`wi_sdk::Redacted`] that never prints, and the "connection pool" is rebuilt on each
//! rotation by a callback. Queries read the current password lock-free.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wi_sdk::{SecretsDir, Trimmed};

/// Stands in for a real pool (sqlx, deadpool): remembers which password generation it was built with.
#[derive(Default)]
struct Pool {
    built_with: AtomicU64,
}

impl Pool {
    fn rebuild(&self, password: &str, generation: u64) {
        // A real pool would open new connections with the password here, then drain the old ones.
        self.built_with.store(generation, Ordering::Release);
        println!(
            "pool rebuilt with password generation {generation} ({} bytes)",
            password.len()
        );
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(dir), file) = (args.next(), args.next().unwrap_or_else(|| "db-password".to_owned())) else {
        eprintln!("usage: db_password DIR [FILE]");
        return ExitCode::from(2);
    };
    let secrets = match SecretsDir::watch(&dir) {
        Ok(secrets) => secrets,
        Err(error) => {
            eprintln!("db_password: {error}");
            return ExitCode::from(1);
        }
    };
    let password = secrets.value::<Trimmed>(&file);
    if let Err(error) = password.wait_ready(Duration::from_secs(30)).await {
        eprintln!("db_password: {error}");
        return ExitCode::from(1);
    }
    let pool = Arc::new(Pool::default());
    let rebuild = {
        let (pool, value) = (pool.clone(), password.clone());
        password.on_change(move |new: &Trimmed| pool.rebuild(new, value.generation()))
    };
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let built_with = pool.built_with.load(Ordering::Acquire);
                match password.stale() {
                    None => println!("query ok (pool on password generation {built_with})"),
                    Some(stale) => println!(
                        "query ok on the last good password (generation {built_with}); new one rejected: {}",
                        stale.error
                    ),
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    drop(rebuild);
    ExitCode::SUCCESS
}
