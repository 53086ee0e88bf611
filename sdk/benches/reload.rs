//! `cargo bench -p wi-sdk --bench reload`: how fast a rotation becomes visible, and what an idle watcher costs.
//!
//! Prints two tables. Latency from a kubelet-style `..data` swap to the new snapshot being visible through
//! `SecretsDir`, over many swaps, for inotify and for the 100 ms poll fallback, next to the baseline of one direct
//! consistent read of the same directory. Idle CPU of the process with 10 watchers over 5 s, next to the same
//! process with none.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use wi_sdk::{SecretsDir, WatchMode, WatchOptions};

fn swap(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let name = format!("..2026_11_28_12_00_00.{n}");
    std::fs::create_dir(dir.join(&name)).unwrap();
    std::fs::write(dir.join(&name).join("db-password"), format!("password-{n}")).unwrap();
    std::fs::write(dir.join(&name).join("tls.crt"), vec![b'c'; 2048]).unwrap();
    let old = std::fs::read_link(dir.join("..data")).ok();
    std::os::unix::fs::symlink(&name, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

fn scratch() -> tempfile::TempDir {
    if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

async fn latencies(mode: WatchMode, swaps: usize) -> Vec<Duration> {
    let tmp = scratch();
    let dir = tmp.path().join("secrets");
    swap(&dir, 0);
    let options = WatchOptions {
        mode,
        poll_interval: if mode == WatchMode::Poll {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(30)
        },
        ..WatchOptions::default()
    };
    let secrets = SecretsDir::watch_with(&dir, options).unwrap();
    secrets.wait_ready(Duration::from_secs(5)).await.unwrap();
    let mut receiver = secrets.subscribe();
    let mut out = Vec::with_capacity(swaps);
    for n in 1..=swaps {
        let want = format!("password-{n}");
        let started = Instant::now();
        swap(&dir, n);
        receiver
            .wait_for(|s| s.get("db-password") == Some(want.as_bytes()))
            .await
            .unwrap();
        out.push(started.elapsed());
    }
    out.sort();
    out
}

fn direct_reads(samples: usize) -> Vec<Duration> {
    let tmp = scratch();
    let dir = tmp.path().join("secrets");
    swap(&dir, 0);
    let mut out: Vec<Duration> = (0..samples)
        .map(|_| {
            let started = Instant::now();
            let snapshot = wi_sdk::snapshot::read(&dir).unwrap();
            std::hint::black_box(snapshot);
            started.elapsed()
        })
        .collect();
    out.sort();
    out
}

async fn idle_cpu(watchers: usize, seconds: u64) -> Duration {
    let tmp = scratch();
    let dirs: Vec<SecretsDir> = (0..watchers)
        .map(|i| {
            let dir = tmp.path().join(format!("secrets-{i}"));
            swap(&dir, 0);
            SecretsDir::watch(&dir).unwrap()
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = wi_runtime::procfs::cpu_time(None).unwrap();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let used = wi_runtime::procfs::cpu_time(None).unwrap() - before;
    drop(dirs);
    used
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; a plain run (as `cargo test --benches` would) does a short version.
    let full = std::env::args().any(|a| a == "--bench");
    let swaps = if full { 500 } else { 20 };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    let direct = direct_reads(swaps);
    let notify = latencies(WatchMode::Notify, swaps).await;
    let poll = latencies(WatchMode::Poll, swaps.min(50)).await;
    let base = percentile(&direct, 0.5);
    println!(
        "\nrotation to visible value ({swaps} swaps; poll: {} swaps; {cores} cores; ms)",
        swaps.min(50)
    );
    println!("| path | p50 | p99 | max | p50 / direct read |");
    println!("|---|---|---|---|---|");
    for (name, sorted) in [
        ("direct consistent read (baseline)", &direct),
        ("inotify watcher", &notify),
        ("poll watcher, 100 ms", &poll),
    ] {
        println!(
            "| {name} | {} | {} | {} | {:.1}x |",
            ms(percentile(sorted, 0.5)),
            ms(percentile(sorted, 0.99)),
            ms(*sorted.last().unwrap()),
            percentile(sorted, 0.5).as_secs_f64() / base.as_secs_f64()
        );
    }

    let seconds = if full { 5 } else { 1 };
    let none = idle_cpu(0, seconds).await;
    let ten = idle_cpu(10, seconds).await;
    println!("\nidle CPU over {seconds} s (clock ticks of 10 ms)");
    println!("| watchers | CPU ms | CPU % of one core |");
    println!("|---|---|---|");
    for (n, used) in [(0, none), (10, ten)] {
        println!(
            "| {n} | {} | {:.2} |",
            used.as_millis(),
            used.as_secs_f64() / seconds as f64 * 100.0
        );
    }
}
