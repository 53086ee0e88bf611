//! wi-sdk's reader of a secrets directory (kubelet's `..data` layout, or a plain directory), on a real directory
//! built from the input: one entry per line, `f NAME CONTENT`, `d NAME` or `l NAME TARGET` (a symlink; its target
//! may be anything that stays inside the sandbox, so loops and dangling links are in reach). Beyond "never panics":
//! the read ends, and every file it returns is one the input made, with that content.

#![no_main]

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use libfuzzer_sys::fuzz_target;

#[path = "sandbox.rs"]
mod sandbox;
use sandbox::sandbox;

/// `path` made of plain names only (no root, no `..`).
fn plain(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    (!path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))).then(|| p.to_owned())
}

/// Whether a link at `link` (relative to the directory) to `target` stays inside the directory, read lexically.
fn stays_inside(link: &Path, target: &str) -> bool {
    let mut depth = link.components().count().saturating_sub(1) as i64;
    for c in Path::new(target).components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => depth -= 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    !target.is_empty()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = sandbox().join("secrets");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).expect("create the directory");
    let mut written: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    for line in text.lines().take(16) {
        let mut parts = line.splitn(3, ' ');
        let (Some(kind), Some(name)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(name) = plain(name) else {
            continue;
        };
        let rest = parts.next().unwrap_or_default();
        let path = dir.join(&name);
        match kind {
            "f" => {
                if std::fs::write(&path, rest).is_ok() {
                    written.insert(name, rest.as_bytes().to_vec());
                }
            }
            "d" => {
                let _ = std::fs::create_dir_all(&path);
            }
            "l" if stays_inside(&name, rest) => {
                let _ = std::os::unix::fs::symlink(rest, &path);
            }
            _ => {}
        }
    }
    let Ok(snapshot) = wi_sdk::snapshot::read(&dir) else {
        return;
    };
    let contents: Vec<&[u8]> = written.values().map(Vec::as_slice).collect();
    for (name, content) in snapshot.iter() {
        assert!(
            contents.contains(&content),
            "{name:?} holds {} bytes no file was written with",
            content.len()
        );
    }
});
