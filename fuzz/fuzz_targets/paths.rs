//! File paths from a class (`objectAlias`, `objectName`: untrusted) through kubelet's rules and the sidecar's
//! atomic writer, on a real directory. Beyond "never panics": a path the rules accept stays under the target
//! directory; after a write, nothing exists beside the target directory, and each file reads back as written.

#![no_main]

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use wi_contract::paths::validate_path;
use wi_sidecar::atomic_writer::AtomicWriter;
use wi_vault::FileContent;

#[path = "sandbox.rs"]
mod sandbox;
use sandbox::sandbox;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut files = BTreeMap::new();
    for path in text.split('\n').take(8) {
        if validate_path(path).is_ok() {
            let joined = Path::new("/target").join(path);
            assert!(joined.starts_with("/target"), "{path:?} escapes");
            assert!(
                joined
                    .components()
                    .all(|c| matches!(c, Component::RootDir | Component::Normal(_))),
                "{path:?} has a special element"
            );
        }
        files.insert(
            path.to_owned(),
            FileContent {
                data: path.as_bytes().to_vec(),
                mode: 0o644,
            },
        );
    }
    let target: PathBuf = sandbox().join("target");
    let _ = std::fs::remove_dir_all(&target);
    let writer = AtomicWriter::new(&target);
    if writer.write(&files).is_ok() {
        for (path, content) in &files {
            let read = std::fs::read(target.join(path)).expect("a written file reads back");
            assert_eq!(read, content.data, "{path:?}");
        }
    }
    let beside: Vec<_> = std::fs::read_dir(sandbox())
        .expect("the sandbox is readable")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert!(
        beside.iter().all(|name| name == "target"),
        "written beside the target: {beside:?}"
    );
});
