//! The `watch_dir` example as a user runs it: one JSON line per snapshot, hashes only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn watch_dir_prints_one_line_per_snapshot_with_hashes_only() {
    // cargo test builds the examples next to the test binaries: target/debug/examples/.
    let exe = std::env::current_exe().unwrap();
    let example = exe.parent().unwrap().parent().unwrap().join("examples/watch_dir");
    assert!(example.is_file(), "{} was not built", example.display());
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("db-password"), "hunter2").unwrap();
    let mut child = Command::new(&example)
        .arg(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(tmp.path().join("db-password"), "correct horse").unwrap();
    let second: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(first["generation"], 1);
    assert_eq!(
        first["files"]["db-password"],
        "f52fbd32b2b3b86ff88ef6c490628285f482af15ddcb29541f94bcf526a3f6c7"
    );
    assert_eq!(second["generation"], 2);
    assert_ne!(second["files"]["db-password"], first["files"]["db-password"]);
    assert!(!second.to_string().contains("horse"));
}
