//! Real `..data` swaps, done two independent ways: `wi-sidecar`'s atomic writer, and a kubelet-layout writer
//! written here from the algorithm. Real files, real symlinks, real inotify.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::{kubelet_write, scratch};
use wi_sdk::{Json, SecretsDir, Snapshot, WatchMode, WatchOptions};
use wi_sidecar::atomic_writer::{AtomicWriter, FileContent};

#[derive(Clone, Copy, Debug)]
enum Writer {
    Sidecar,
    Kubelet,
}

impl Writer {
    fn write(self, dir: &Path, files: &[(&str, &[u8])]) {
        match self {
            Writer::Kubelet => kubelet_write(dir, files),
            Writer::Sidecar => {
                let map: BTreeMap<String, FileContent> = files
                    .iter()
                    .map(|(name, data)| {
                        (
                            (*name).to_owned(),
                            FileContent {
                                data: data.to_vec(),
                                mode: 0o644,
                            },
                        )
                    })
                    .collect();
                AtomicWriter::new(dir).write(&map).unwrap();
            }
        }
    }
}

/// Two files that must always belong to the same version: `i` repeated to 4 KiB each.
fn version_files(i: u64) -> (Vec<u8>, Vec<u8>) {
    let a = format!("a{i:010}").repeat(372).into_bytes();
    let b = format!("b{i:010}").repeat(372).into_bytes();
    (a, b)
}

/// The version a snapshot holds, or a description of how it is torn.
fn version_of(snapshot: &Snapshot) -> Result<u64, String> {
    let (Some(a), Some(b)) = (snapshot.get("a"), snapshot.get("b")) else {
        return Err(format!("missing files: {:?}", snapshot.names().collect::<Vec<_>>()));
    };
    let parse = |bytes: &[u8], prefix: u8| -> Result<u64, String> {
        if bytes.len() != 11 * 372 {
            return Err(format!("partial file: {} bytes", bytes.len()));
        }
        let first = &bytes[..11];
        if first[0] != prefix || bytes.chunks(11).any(|c| c != first) {
            return Err("mixed content inside one file".to_owned());
        }
        std::str::from_utf8(&first[1..])
            .unwrap()
            .parse()
            .map_err(|e| format!("{e}"))
    };
    let (va, vb) = (parse(a, b'a')?, parse(b, b'b')?);
    if va != vb {
        return Err(format!("a is version {va}, b is version {vb}"));
    }
    Ok(va)
}

fn write_version(writer: Writer, dir: &Path, i: u64) {
    let (a, b) = version_files(i);
    writer.write(dir, &[("a", &a), ("b", &b)]);
}

async fn wait_for_version(secrets: &SecretsDir, i: u64) -> Arc<Snapshot> {
    let mut receiver = secrets.subscribe();
    let found = tokio::time::timeout(
        Duration::from_secs(5),
        receiver.wait_for(|s| version_of(s).is_ok_and(|v| v == i)),
    )
    .await;
    match found {
        Ok(Ok(snapshot)) => snapshot.clone(),
        _ => panic!("version {i} not seen within 5 s; current {:?}", secrets.current()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rotation_is_seen_whichever_writer() {
    for writer in [Writer::Sidecar, Writer::Kubelet] {
        let tmp = scratch();
        let dir = tmp.path().join("secrets");
        write_version(writer, &dir, 0);
        let secrets = SecretsDir::watch(&dir).unwrap();
        secrets.wait_ready(Duration::from_secs(5)).await.unwrap();
        assert_eq!(version_of(&secrets.current()), Ok(0));
        for i in 1..=100 {
            write_version(writer, &dir, i);
            let snapshot = wait_for_version(&secrets, i).await;
            // One new generation per rotation: none missed, none spurious.
            assert_eq!(snapshot.generation(), i + 1, "{writer:?}");
            assert!(
                snapshot.version().is_some_and(|v| v.starts_with("..2026")),
                "{writer:?}"
            );
        }
    }
}

/// A writer thread rotates as fast as it can while a reader thread reads the directory in a loop and the watcher
/// publishes snapshots: no reading and no published snapshot ever mixes two versions or holds a partial file.
async fn rapid_rotations(writer: Writer, rotations: u64) {
    let tmp = scratch();
    let dir = tmp.path().join("secrets");
    write_version(writer, &dir, 0);
    let secrets = SecretsDir::watch(&dir).unwrap();
    secrets.wait_ready(Duration::from_secs(5)).await.unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (dir, done, reads) = (dir.clone(), done.clone(), reads.clone());
        std::thread::spawn(move || {
            let mut last = 0;
            while !done.load(Ordering::Relaxed) {
                let snapshot = wi_sdk::snapshot::read(&dir).unwrap();
                let version = version_of(&snapshot).unwrap_or_else(|torn| panic!("torn read: {torn}"));
                assert!(version >= last, "went back from {last} to {version}");
                last = version;
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let watcher_check = {
        let mut receiver = secrets.subscribe();
        tokio::spawn(async move {
            let mut seen = 0usize;
            let mut last = 0;
            while receiver.changed().await.is_ok() {
                let snapshot = receiver.borrow_and_update().clone();
                let version = version_of(&snapshot).unwrap_or_else(|torn| panic!("torn snapshot: {torn}"));
                assert!(version >= last);
                last = version;
                seen += 1;
                if version == rotations {
                    break;
                }
            }
            seen
        })
    };
    let writing = {
        let dir: PathBuf = dir.clone();
        std::thread::spawn(move || {
            for i in 1..=rotations {
                write_version(writer, &dir, i);
            }
        })
    };
    writing.join().unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), watcher_check)
        .await
        .expect("the last version was published")
        .unwrap();
    done.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let reads = reads.load(Ordering::Relaxed);
    eprintln!("{writer:?}: {rotations} rotations, {reads} direct reads, {seen} snapshots published, none torn");
    assert!(reads > 0 && seen > 0);
    assert_eq!(version_of(&secrets.current()), Ok(rotations));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rapid_kubelet_rotations_never_tear_a_snapshot() {
    rapid_rotations(Writer::Kubelet, 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_rapid_sidecar_rotations_never_tear_a_snapshot() {
    rapid_rotations(Writer::Sidecar, 1_000).await;
}

#[derive(serde::Deserialize, PartialEq, Debug)]
struct Settings {
    pool_size: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_keeps_the_last_good_value_and_reports_since_when() {
    let tmp = scratch();
    let dir = tmp.path().join("secrets");
    kubelet_write(&dir, &[("settings.json", br#"{"pool_size": 4}"#)]);
    let secrets = SecretsDir::watch(&dir).unwrap();
    let settings = secrets.value::<Json<Settings>>("settings.json");
    let first = settings.wait_ready(Duration::from_secs(5)).await.unwrap();
    assert_eq!(first.expose().0, Settings { pool_size: 4 });
    assert!(settings.stale().is_none());

    kubelet_write(&dir, &[("settings.json", br#"{"pool_size": "#)]);
    let mut rejected = false;
    for _ in 0..250 {
        if settings.stale().is_some() {
            rejected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rejected, "the broken file was not noticed");
    let stale = settings.stale().unwrap();
    assert!(
        stale.error.starts_with("settings.json: invalid JSON"),
        "{}",
        stale.error
    );
    assert_eq!(settings.current().unwrap().expose().0, Settings { pool_size: 4 });
    assert_eq!(settings.generation(), 1);
    let since = stale.since;

    // Still broken in another way: the error changes, "since" does not.
    kubelet_write(&dir, &[("other", b"x")]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stale = settings.stale().unwrap();
    assert!(stale.error.contains("no file \"settings.json\""), "{}", stale.error);
    assert_eq!(stale.since, since);

    kubelet_write(&dir, &[("settings.json", br#"{"pool_size": 8}"#)]);
    let mut receiver = settings.subscribe();
    tokio::time::timeout(
        Duration::from_secs(5),
        receiver.wait_for(|v| v.as_ref().is_some_and(|v| v.expose().0.pool_size == 8)),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(settings.stale().is_none());
    assert_eq!(settings.generation(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_removed_and_recreated_is_followed() {
    let tmp = scratch();
    let dir = tmp.path().join("secrets");
    write_version(Writer::Sidecar, &dir, 1);
    let secrets = SecretsDir::watch(&dir).unwrap();
    wait_for_version(&secrets, 1).await;
    std::fs::remove_dir_all(&dir).unwrap();
    let mut noticed = false;
    for _ in 0..250 {
        if secrets.stale().is_some() {
            noticed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        noticed,
        "the removal was not noticed: {:?} {:?} exists={}",
        secrets.current(),
        secrets.stale(),
        dir.exists()
    );
    assert_eq!(version_of(&secrets.current()), Ok(1), "the last snapshot is kept");
    write_version(Writer::Sidecar, &dir, 2);
    wait_for_version(&secrets, 2).await;
    write_version(Writer::Sidecar, &dir, 3);
    wait_for_version(&secrets, 3).await;
    assert!(secrets.stale().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_appears_later_and_plain_directories_work() {
    let tmp = scratch();
    let dir = tmp.path().join("later");
    let secrets = SecretsDir::watch(&dir).unwrap();
    assert_eq!(secrets.generation(), 0);
    assert!(secrets.wait_ready(Duration::from_millis(100)).await.is_err());
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("password"), "one").unwrap();
    let password = secrets.value::<String>("password");
    password.wait_ready(Duration::from_secs(5)).await.unwrap();
    assert_eq!(password.current().unwrap().expose(), "one");
    std::fs::write(dir.join("password"), "two").unwrap();
    let mut receiver = password.subscribe();
    tokio::time::timeout(
        Duration::from_secs(5),
        receiver.wait_for(|v| v.as_ref().is_some_and(|v| v.expose() == "two")),
    )
    .await
    .unwrap()
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_sees_rotations_without_inotify() {
    let tmp = scratch();
    let dir = tmp.path().join("secrets");
    write_version(Writer::Kubelet, &dir, 1);
    let options = WatchOptions {
        mode: WatchMode::Poll,
        poll_interval: Duration::from_millis(50),
        ..WatchOptions::default()
    };
    let secrets = SecretsDir::watch_with(&dir, options).unwrap();
    wait_for_version(&secrets, 1).await;
    for i in 2..=5 {
        write_version(Writer::Kubelet, &dir, i);
        wait_for_version(&secrets, i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_see_every_value_and_stop_when_dropped() {
    let tmp = scratch();
    let dir = tmp.path().join("secrets");
    kubelet_write(&dir, &[("password", b"p1")]);
    let secrets = SecretsDir::watch(&dir).unwrap();
    let password = secrets.value::<String>("password");
    password.wait_ready(Duration::from_secs(5)).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let subscription = password.on_change(move |p: &String| {
        let _ = tx.send(p.clone());
    });
    assert_eq!(rx.recv().await.unwrap(), "p1");
    kubelet_write(&dir, &[("password", b"p2")]);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap(),
        "p2"
    );
    drop(subscription);
    kubelet_write(&dir, &[("password", b"p3")]);
    let mut receiver = password.subscribe();
    tokio::time::timeout(
        Duration::from_secs(5),
        receiver.wait_for(|v| v.as_ref().is_some_and(|v| v.expose() == "p3")),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        rx.recv().await.is_none(),
        "the callback ran after its subscription was dropped"
    );
}

/// On a runtime with one thread, a callback that blocks until the runtime answers it only finishes when it runs
/// off the runtime's thread: on it, the runtime could never answer (it did, before callbacks moved to the blocking
/// pool: the callback gave up after its 5 s and the test failed).
#[tokio::test(flavor = "current_thread")]
async fn callbacks_and_parses_run_off_the_runtime_thread() {
    let tmp = scratch();
    let dir = tmp.path().join("secrets");
    kubelet_write(&dir, &[("password", b"p1")]);
    let secrets = SecretsDir::watch(&dir).unwrap();
    let runtime_thread = std::thread::current().id();

    // A blocking callback: it tells the runtime it started, then waits for the runtime's answer.
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let (answer_tx, answer_rx) = std::sync::mpsc::channel::<()>();
    let answer_rx = std::sync::Mutex::new(answer_rx);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let password = secrets.value::<String>("password");
    let _subscription = password.on_change(move |p: &String| {
        let _ = started_tx.send(std::thread::current().id());
        let answered = answer_rx.lock().unwrap().recv_timeout(Duration::from_secs(5)).is_ok();
        let _ = done_tx.send((p.clone(), answered));
    });
    let callback_thread = started_rx.recv().await.unwrap();
    assert_ne!(callback_thread, runtime_thread);
    answer_tx.send(()).unwrap();
    assert_eq!(done_rx.recv().await.unwrap(), ("p1".to_owned(), true));

    // Parses after the first run off the runtime's thread too.
    let parsed_on = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = parsed_on.clone();
    let length = secrets.derive("length", move |snapshot| {
        record.lock().unwrap().push(std::thread::current().id());
        Ok(snapshot.get("password").map_or(0, <[u8]>::len))
    });
    kubelet_write(&dir, &[("password", b"p22")]);
    let mut receiver = length.subscribe();
    tokio::time::timeout(
        Duration::from_secs(5),
        receiver.wait_for(|v| v.as_ref().is_some_and(|v| *v.expose() == 3)),
    )
    .await
    .unwrap()
    .unwrap();
    let threads = parsed_on.lock().unwrap().clone();
    assert_eq!(
        threads.first(),
        Some(&runtime_thread),
        "the first parse is on the caller's thread"
    );
    assert!(
        threads[1..].iter().all(|t| *t != runtime_thread) && threads.len() >= 2,
        "{threads:?}"
    );
    answer_tx.send(()).unwrap();
    assert_eq!(done_rx.recv().await.unwrap(), ("p22".to_owned(), true));
}

/// One call reads a value where it is used; it still never prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_is_read_in_one_call_and_still_redacted() {
    let tmp = scratch();
    let dir = tmp.path().join("secrets");
    kubelet_write(
        &dir,
        &[("password", b" hunter2\n"), ("settings.json", br#"{"pool_size": 4}"#)],
    );
    let secrets = SecretsDir::watch(&dir).unwrap();
    let password = secrets.value::<wi_sdk::Trimmed>("password");
    let settings = secrets.value::<Json<Settings>>("settings.json");
    let connect = |password: &str| password.len();
    assert_eq!(connect(&password.expose().unwrap()), 7);
    assert_eq!(settings.expose().unwrap().pool_size, 4);
    assert_eq!(format!("{:?}", password.expose().unwrap()), "Exposed([redacted])");
}
