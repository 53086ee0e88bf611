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

/// Why two file paths of one write cannot both be files (indices into the paths checked, `first < second`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathConflict {
    /// The same file spelled twice: `a/b`, `a//b`, `a/./b` and `a/b/` name one file.
    Same {
        /// The path given first.
        first: usize,
        /// The path naming the same file.
        second: usize,
    },
    /// One path is a file that the other needs as a directory (`a` and `a/b`).
    FileAsDirectory {
        /// The path given first.
        first: usize,
        /// The other.
        second: usize,
    },
}

/// The elements of a valid path as the filesystem resolves them, joined with `/`: `a//b/./c/` is `a/b/c`.
pub fn normalized(path: &str) -> String {
    let elements: Vec<_> = Path::new(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect();
    elements.join("/")
}

/// Checks that paths (each one [`validate_path`] accepts) can all be files of one directory at once: none names
/// the file of another, and none is a directory another path needs as a file.
pub fn check_distinct<'a>(paths: impl IntoIterator<Item = &'a str>) -> Result<(), PathConflict> {
    let mut seen: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for (second, path) in paths.into_iter().enumerate() {
        let path = normalized(path);
        if let Some(&first) = seen.get(&path) {
            return Err(PathConflict::Same { first, second });
        }
        // A file above this one, or a file below it.
        let above = path
            .match_indices('/')
            .find_map(|(at, _)| seen.get(&path[..at]).copied());
        let below_prefix = format!("{path}/");
        let below = seen
            .range(below_prefix.clone()..)
            .next()
            .filter(|(other, _)| other.starts_with(&below_prefix))
            .map(|(_, &i)| i);
        if let Some(first) = above.or(below) {
            return Err(PathConflict::FileAsDirectory { first, second });
        }
        seen.insert(path, second);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_name_one_file_or_nest_in_a_file_conflict() {
        // Found by the `paths` fuzz target: "a/ba" and "a//ba" were both written, the second over the first.
        assert_eq!(
            check_distinct(["a/ba", "x", "a//ba"]),
            Err(PathConflict::Same { first: 0, second: 2 })
        );
        assert_eq!(
            check_distinct(["a/./b", "a/b/"]),
            Err(PathConflict::Same { first: 0, second: 1 })
        );
        assert_eq!(
            check_distinct(["a", "a/b"]),
            Err(PathConflict::FileAsDirectory { first: 0, second: 1 })
        );
        assert_eq!(
            check_distinct(["a/b/c", "a/b"]),
            Err(PathConflict::FileAsDirectory { first: 0, second: 1 })
        );
        assert_eq!(check_distinct(["a/b", "a/c", "ab", "a.b", "b/a"]), Ok(()));
        assert_eq!(normalized("a//b/./c/"), "a/b/c");
    }
}
