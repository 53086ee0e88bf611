//! The layout kubelet gives a Secret or projected volume, which `wi-sidecar` writes and `wi-sdk` reads: files are
//! reached through `..data`, a symlink to a timestamped directory swapped atomically by renaming `..data_tmp`.

use std::path::{Component, Path};

/// The symlink to the current timestamped directory.
pub const DATA_LINK: &str = "..data";
/// The symlink renamed over [`DATA_LINK`] to commit a new version.
pub const DATA_TMP_LINK: &str = "..data_tmp";
/// Longest file path kubelet accepts.
const MAX_PATH: usize = 4096;
/// Longest path element kubelet accepts.
const MAX_ELEMENT: usize = 255;

/// A file path kubelet would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid file path {path:?}: {reason}")]
pub struct InvalidPath {
    /// The path.
    pub path: String,
    /// Why.
    pub reason: &'static str,
}

/// Checks a file path the way kubelet does: relative, no `..` element, a first element not starting with `..`
/// (those names belong to the layout), elements of at most 255 bytes, at most 4096 bytes in all.
pub fn validate_path(path: &str) -> Result<(), InvalidPath> {
    let invalid = |reason| InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(invalid("empty"));
    }
    if path.len() > MAX_PATH {
        return Err(invalid("longer than 4096 bytes"));
    }
    let p = Path::new(path);
    if p.is_absolute() {
        return Err(invalid("absolute; must be relative"));
    }
    for (i, component) in p.components().enumerate() {
        match component {
            Component::Normal(name) => {
                let name = name.to_string_lossy();
                if name.len() > MAX_ELEMENT {
                    return Err(invalid("an element is longer than 255 bytes"));
                }
                if i == 0 && name.starts_with("..") {
                    return Err(invalid("must not start with '..'"));
                }
            }
            Component::ParentDir => return Err(invalid("contains a '..' element")),
            Component::CurDir => return Err(invalid("contains a '.' element")),
            _ => return Err(invalid("not a plain relative path")),
        }
    }
    Ok(())
}
