//! `cargo bench -p wi-sidecar --bench sync`: the sidecar against the emulator (HTTPS on loopback, real token
//! exchange and Key Vault protocol), with 100 secrets of 1 KiB.
//!
//! Prints three tables:
//! - first sync of 100 objects (a new client: token exchange, challenge, 100 GETs, atomic write), at the default
//!   concurrency of 8 against the baseline of one request at a time, median of 7 runs;
//! - a rotation check (the steady state): Key Vault and Entra ID requests per check, and its time, with nothing
//!   changed and with one object changed;
//! - resident memory of the `wi-sidecar run` process after its first sync, with 1 and with 100 objects.
//!
//! The process measured is the binary cargo built for the bench, whose dependencies carry the features of the
//! bench's dev-dependencies too (the testbed links aws-lc-rs); the shipped one is built alone. To measure that:
//! `cargo build --release -p wi-sidecar --target-dir target/shipped` then
//! `WI_SIDECAR_BINARY=target/shipped/release/wi-sidecar cargo bench -p wi-sidecar --bench sync`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use wi_sdk::identity::{CloudOptions, client_options};
use wi_sidecar::atomic_writer::AtomicWriter;
use wi_sidecar::fetch::Fetcher;
use wi_sidecar::run::Syncer;
use wi_testbed::Emulator;

const TENANT: &str = "d2f0c8a4-3b1e-4c6d-9e8f-7a6b5c4d3e2f";
const VAULT: &str = "kv-bench";
const OBJECTS: usize = 100;

fn config_text(objects: usize) -> String {
    let array: String = (0..objects)
        .map(|i| format!("    - |\n      objectName: secret-{i:03}\n      objectType: secret\n"))
        .collect();
    format!("keyvaultName: {VAULT}\ntenantId: {TENANT}\nobjects: |\n  array:\n{array}")
}

struct World {
    emulator: Emulator,
    url: String,
    env: Vec<(&'static str, String)>,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let emulator = Emulator::start().await.unwrap();
    let url = emulator.create_vault(VAULT, TENANT).await.unwrap();
    for i in 0..OBJECTS {
        let value = format!("{i:03}-{}", "v".repeat(1020));
        emulator
            .set_secret(VAULT, &format!("secret-{i:03}"), &value, None)
            .unwrap();
    }
    let identity = emulator.add_workload_identity("mi-bench", TENANT, "default", "bench");
    emulator.grant(VAULT, &identity.principal_id, &["get"]);
    let dir = tempfile::tempdir().unwrap();
    let env = emulator
        .workload_env(&identity, "default", "bench", &dir.path().join("token"))
        .unwrap();
    World {
        emulator,
        url,
        env,
        _dir: dir,
    }
}

impl World {
    fn fetcher(&self, objects: usize, concurrency: usize) -> Fetcher {
        let cloud = CloudOptions {
            authority_host: Some(self.emulator.authority_host().to_owned()),
            extra_ca_file: Some(self.emulator.ca_file().to_owned()),
        };
        let env = self.env.clone();
        let credential = wi_sdk::identity::from_vars_with(
            move |name| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()),
            &cloud,
        )
        .unwrap();
        let mut options = client_options(&cloud).unwrap();
        options.retry = azure_core::http::RetryOptions::none();
        let config = wi_sidecar::config::parse(&config_text(objects)).unwrap();
        Fetcher::new(config, &self.url, credential, options, false, concurrency).unwrap()
    }

    /// Requests the emulator answered (token, challenges, GETs), not counting the latency fault's own counter.
    fn requests(&self) -> u64 {
        self.emulator
            .counters()
            .iter()
            .filter(|(k, _)| !k.ends_with("faulted"))
            .map(|(_, v)| v)
            .sum()
    }

    /// Key Vault's round trip from a cluster in the same region is milliseconds, not loopback's microseconds.
    fn set_latency(&self, latency: Duration) {
        use wi_testbed::emulator::{Fault, FaultTarget};
        let fault = (!latency.is_zero()).then(|| Fault {
            latency,
            ..Fault::default()
        });
        self.emulator.set_fault(FaultTarget::Vault(VAULT.to_owned()), fault);
    }
}

/// The sidecar writes an in-memory emptyDir: tmpfs here too, when there is one.
fn scratch() -> tempfile::TempDir {
    if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn first_sync(world: &World, concurrency: usize) -> (Duration, u64) {
    let mut samples = Vec::new();
    let mut requests = 0;
    for _ in 0..7 {
        let out = scratch();
        let before = world.requests();
        let started = Instant::now();
        let syncer = Syncer::new(world.fetcher(OBJECTS, concurrency), AtomicWriter::new(out.path()));
        syncer.sync_once().await.unwrap();
        samples.push(started.elapsed());
        requests = world.requests() - before;
    }
    (median(samples), requests)
}

async fn sidecar_rss(world: &World, objects: usize) -> (u64, u64) {
    let dir = scratch();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // WI_SIDECAR_BINARY: another build to measure (another profile, the previous commit's).
    let binary = std::env::var_os("WI_SIDECAR_BINARY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_wi-sidecar").into());
    let mut child = tokio::process::Command::new(binary)
        .args([
            "run",
            "--admin-listen",
            &format!("127.0.0.1:{port}"),
            "--interval",
            "1h",
        ])
        .env_clear()
        .env("WI_SECRETS_CONFIG", config_text(objects))
        .env("WI_SECRETS_DIR", dir.path())
        .env("WI_VAULT_URL_TEMPLATE", &world.url)
        .env("WI_CA_FILE", world.emulator.ca_file())
        .env("WI_VERIFY_CHALLENGE_RESOURCE", "false")
        .env("WI_LOG_LEVEL", "warn")
        .envs(world.env.iter().map(|(k, v)| (*k, v.as_str())))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let ready = dir.path().join(format!("secret-{:03}", objects - 1));
    for _ in 0..600 {
        if ready.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ready.exists(), "the sidecar never synced");
    // Let the process settle after the sync (freed buffers, idle connections).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let memory = wi_runtime::procfs::memory(Some(pid)).unwrap();
    let rss = (memory.rss_kib, memory.peak_kib);
    child.kill().await.unwrap();
    rss
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this once too, which is fine.
    let world = world().await;
    println!(
        "wi-sidecar against the emulator, {OBJECTS} secrets of 1 KiB, {} cores\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    println!("first sync of {OBJECTS} objects (new client: token, challenge, GETs, atomic write), median of 7");
    println!("| Key Vault latency | concurrency | time | requests | vs concurrency 1 |");
    println!("|---|---|---|---|---|");
    for latency in [Duration::ZERO, Duration::from_millis(20)] {
        world.set_latency(latency);
        let (slow, slow_requests) = first_sync(&world, 1).await;
        let (fast, fast_requests) = first_sync(&world, 8).await;
        let label = if latency.is_zero() {
            "loopback".to_owned()
        } else {
            ms(latency)
        };
        println!("| {label} | 1 (baseline) | {} | {slow_requests} | 1.00x |", ms(slow));
        println!(
            "| {label} | 8 (default) | {} | {fast_requests} | {:.2}x the time |",
            ms(fast),
            fast.as_secs_f64() / slow.as_secs_f64()
        );
    }
    world.set_latency(Duration::ZERO);

    let out = scratch();
    let syncer = Arc::new(Syncer::new(world.fetcher(OBJECTS, 8), AtomicWriter::new(out.path())));
    syncer.sync_once().await.unwrap();
    let checks = 20;
    let mut unchanged = Vec::new();
    let before = world.requests();
    for _ in 0..checks {
        let started = Instant::now();
        syncer.sync_once().await.unwrap();
        unchanged.push(started.elapsed());
    }
    let unchanged_requests = (world.requests() - before) as f64 / f64::from(checks);
    let mut changed = Vec::new();
    let before = world.requests();
    for n in 0..checks {
        world
            .emulator
            .set_secret(VAULT, "secret-042", &format!("rotated-{n}"), None)
            .unwrap();
        let started = Instant::now();
        syncer.sync_once().await.unwrap();
        changed.push(started.elapsed());
    }
    let changed_requests = (world.requests() - before) as f64 / f64::from(checks);
    println!("\nrotation check, {OBJECTS} objects, steady state (token cached), median of {checks}");
    println!("| case | requests per check | time |");
    println!("|---|---|---|");
    println!(
        "| nothing changed (no write) | {unchanged_requests:.1} | {} |",
        ms(median(unchanged))
    );
    println!(
        "| one object changed (new ..data) | {changed_requests:.1} | {} |",
        ms(median(changed))
    );

    let (one, one_peak) = sidecar_rss(&world, 1).await;
    let (hundred, hundred_peak) = sidecar_rss(&world, OBJECTS).await;
    let binary = std::env::var("WI_SIDECAR_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wi-sidecar").to_owned());
    let size = std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0);
    println!(
        "\nresident memory of `wi-sidecar run` after the first sync ({binary}, {:.1} MB)",
        size as f64 / 1e6
    );
    println!("| objects | RSS | peak RSS | vs 1 object |");
    println!("|---|---|---|---|");
    println!("| 1 (baseline) | {one} KiB | {one_peak} KiB | 1.00x |");
    println!(
        "| {OBJECTS} | {hundred} KiB | {hundred_peak} KiB | {:.2}x |",
        hundred as f64 / one as f64
    );
}
