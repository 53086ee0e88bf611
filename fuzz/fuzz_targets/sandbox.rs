//! The temporary directory a target that writes real files works in, made once per fuzzing process.

use std::path::Path;

/// The directory, removed when the process ends normally.
pub fn sandbox() -> &'static Path {
    static SANDBOX: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    SANDBOX
        .get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
        .path()
}
