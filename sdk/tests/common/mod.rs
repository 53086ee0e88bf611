//! Shared by the SDK tests: a kubelet-layout writer written from kubelet's algorithm, independent of
//! `wi-sidecar`'s, and a scratch directory on tmpfs.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// A tmpfs directory where there is one (rotations are not slowed by disk syncs), else the default temp dir.
pub fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

static KUBELET_SWAPS: AtomicU64 = AtomicU64::new(0);

/// kubelet's AtomicWriter, minimal: new timestamped dir, `..data_tmp` renamed over `..data`, user links, old dir
/// removed.
pub fn kubelet_write(dir: &Path, files: &[(&str, &[u8])]) {
    std::fs::create_dir_all(dir).unwrap();
    let n = KUBELET_SWAPS.fetch_add(1, Ordering::Relaxed);
    let name = format!("..2026_11_28_12_00_00.k{n}");
    std::fs::create_dir(dir.join(&name)).unwrap();
    for (file, content) in files {
        std::fs::write(dir.join(&name).join(file), content).unwrap();
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    std::os::unix::fs::symlink(&name, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for (file, _) in files {
        let link = dir.join(file);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(file), &link).unwrap();
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}
