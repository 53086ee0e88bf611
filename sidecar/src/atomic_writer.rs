//! Writes a set of files into a directory the way kubelet updates a Secret or projected volume
//! (`pkg/volume/util/atomic_writer.go`), so that readers always see one complete version:
//!
//! 1. validate the paths (relative, no `..` element, no element starting with `..`, lengths within limits);
//! 2. if every file is byte-identical (content and mode) and none is removed, write nothing;
//! 3. write the files into a new directory `..YYYY_MM_DD_HH_MM_SS.<random>` (UTC), with explicit modes;
//! 4. point `..data_tmp` at it and rename `..data_tmp` over `..data`: the atomic commit;
//! 5. make the user-visible links `NAME -> ..data/NAME` for each top-level name, remove the stale ones;
//! 6. remove the previous timestamped directory.
//!
//! Beyond kubelet: a `..data_tmp` left by a crash is removed before the commit, and timestamped directories that
//! `..data` does not point to (a crash between steps 3 and 6) are removed first.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use wi_contract::paths::{DATA_LINK as DATA, DATA_TMP_LINK as DATA_TMP};
pub use wi_contract::paths::{InvalidPath, validate_path};
use wi_contract::paths::{PathConflict, check_distinct};

pub use wi_vault::FileContent;

/// Why a write failed. Nothing visible to readers changed unless the error says so.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A file name is not a safe relative path.
    #[error(transparent)]
    InvalidPath(#[from] InvalidPath),
    /// Two paths cannot both be files: the same file spelled twice, or a file another path needs as a directory.
    #[error("{second:?} conflicts with {first:?}: {reason}")]
    Conflict {
        /// The path that comes first (in the order of the map).
        first: String,
        /// The other.
        second: String,
        /// Which conflict.
        reason: &'static str,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> WriteError + 'a {
    move |source| WriteError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// A new version was committed; the name of its timestamped directory.
    Committed(String),
    /// The files were already exactly these; nothing was written.
    Unchanged,
}

/// Writes file sets into one directory; see the module docs.
#[derive(Debug, Clone)]
pub struct AtomicWriter {
    dir: PathBuf,
}

impl AtomicWriter {
    /// A writer for `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        AtomicWriter { dir: dir.into() }
    }

    /// The directory written.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Replaces the directory's contents with `files` (path -> content), atomically.
    pub fn write(&self, files: &BTreeMap<String, FileContent>) -> Result<Written, WriteError> {
        for path in files.keys() {
            validate_path(path)?;
        }
        // Without this, "a/b" and "a//b" were both written, the second over the first (found by fuzzing).
        check_distinct(files.keys().map(String::as_str)).map_err(|conflict| {
            let (PathConflict::Same { first, second } | PathConflict::FileAsDirectory { first, second }) = conflict;
            let path = |i| files.keys().nth(i).cloned().unwrap_or_default();
            WriteError::Conflict {
                first: path(first),
                second: path(second),
                reason: match conflict {
                    PathConflict::Same { .. } => "both name one file",
                    PathConflict::FileAsDirectory { .. } => "one would have to be a file and a directory",
                },
            }
        })?;
        let dir = &self.dir;
        fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        let old = fs::read_link(dir.join(DATA))
            .ok()
            .map(|t| t.to_string_lossy().into_owned());
        self.remove_orphans(old.as_deref())?;

        let top_level: BTreeSet<String> = files.keys().map(|p| first_element(p)).collect();
        if let Some(old) = &old
            && same_files(&dir.join(old), files)
        {
            self.link_names(&top_level)?;
            return Ok(Written::Unchanged);
        }

        let stamp = time::OffsetDateTime::now_utc();
        let prefix = format!(
            "..{:04}_{:02}_{:02}_{:02}_{:02}_{:02}.",
            stamp.year(),
            u8::from(stamp.month()),
            stamp.day(),
            stamp.hour(),
            stamp.minute(),
            stamp.second()
        );
        let new_dir = tempfile::Builder::new()
            .prefix(&prefix)
            .rand_bytes(10)
            .tempdir_in(dir)
            .map_err(io("create directory in", dir))?
            .keep();
        let new_name = new_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let result = self.fill_and_commit(&new_dir, &new_name, files);
        if result.is_err() {
            // Readers never saw it: ..data was not moved.
            let _ = fs::remove_dir_all(&new_dir);
        }
        result?;
        self.link_names(&top_level)?;
        self.remove_stale_links(&top_level)?;
        if let Some(old) = old
            && old != new_name
        {
            fs::remove_dir_all(dir.join(&old)).map_err(io("remove old version", &dir.join(&old)))?;
        }
        Ok(Written::Committed(new_name))
    }

    fn fill_and_commit(
        &self,
        new_dir: &Path,
        new_name: &str,
        files: &BTreeMap<String, FileContent>,
    ) -> Result<(), WriteError> {
        fs::set_permissions(new_dir, fs::Permissions::from_mode(0o755)).map_err(io("chmod", new_dir))?;
        for (path, content) in files {
            let target = new_dir.join(path);
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(io("create directory", parent))?;
            }
            let mut file = fs::File::create(&target).map_err(io("create", &target))?;
            file.write_all(&content.data).map_err(io("write", &target))?;
            // Mode set explicitly: the umask must not decide what the app can read.
            fs::set_permissions(&target, fs::Permissions::from_mode(content.mode)).map_err(io("chmod", &target))?;
            file.sync_all().map_err(io("sync", &target))?;
        }
        let tmp = self.dir.join(DATA_TMP);
        match fs::remove_file(&tmp) {
            Ok(()) => tracing::warn!(path = %tmp.display(), "removed a ..data_tmp left by an interrupted write"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove", &tmp)(e)),
        }
        symlink(new_name, &tmp).map_err(io("symlink", &tmp))?;
        fs::rename(&tmp, self.dir.join(DATA)).map_err(io("rename ..data_tmp over", &self.dir.join(DATA)))?;
        Ok(())
    }

    /// `NAME -> ..data/NAME` for every top-level name that has no link yet.
    fn link_names(&self, names: &BTreeSet<String>) -> Result<(), WriteError> {
        for name in names {
            let link = self.dir.join(name);
            if fs::symlink_metadata(&link).is_err() {
                symlink(Path::new(DATA).join(name), &link).map_err(io("symlink", &link))?;
            }
        }
        Ok(())
    }

    /// Removes user-visible links into `..data` for names that are gone.
    fn remove_stale_links(&self, names: &BTreeSet<String>) -> Result<(), WriteError> {
        let entries = fs::read_dir(&self.dir).map_err(io("list", &self.dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("..") || names.contains(&name) {
                continue;
            }
            let path = entry.path();
            let into_data = fs::read_link(&path).is_ok_and(|t| t.starts_with(DATA));
            if into_data {
                fs::remove_file(&path).map_err(io("remove stale link", &path))?;
            }
        }
        Ok(())
    }

    /// Removes `..data_tmp` and timestamped directories `..data` does not point to (left by a crash).
    fn remove_orphans(&self, current: Option<&str>) -> Result<(), WriteError> {
        let entries = fs::read_dir(&self.dir).map_err(io("list", &self.dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") || name == DATA || name == DATA_TMP || Some(name.as_str()) == current {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                tracing::warn!(dir = %name, "removing a version left by an interrupted write");
                fs::remove_dir_all(entry.path()).map_err(io("remove orphan", &entry.path()))?;
            }
        }
        Ok(())
    }
}

fn first_element(path: &str) -> String {
    Path::new(path)
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether `dir` holds exactly `files`, same bytes and modes.
fn same_files(dir: &Path, files: &BTreeMap<String, FileContent>) -> bool {
    let mut found = BTreeMap::new();
    if !collect(dir, dir, &mut found) {
        return false;
    }
    found.len() == files.len()
        && files.iter().all(|(path, content)| {
            found.get(path).is_some_and(|(mode, len)| {
                *mode == content.mode & 0o7777
                    && *len == content.data.len() as u64
                    && fs::read(dir.join(path)).is_ok_and(|data| data == content.data)
            })
        })
}

/// Regular files under `dir`, as relative path -> (mode, length). False when it cannot be read.
fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, u64)>) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return false;
        };
        if meta.is_dir() {
            if !collect(root, &path, out) {
                return false;
            }
        } else if let Ok(relative) = path.strip_prefix(root) {
            out.insert(
                relative.to_string_lossy().into_owned(),
                (meta.permissions().mode() & 0o7777, meta.len()),
            );
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(entries: &[(&str, &str)]) -> BTreeMap<String, FileContent> {
        entries
            .iter()
            .map(|(p, d)| {
                (
                    (*p).to_owned(),
                    FileContent {
                        data: d.as_bytes().to_vec(),
                        mode: 0o644,
                    },
                )
            })
            .collect()
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("..2"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_the_kubelet_layout_and_rotates() {
        let tmp = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(tmp.path().join("secrets"));
        let first = writer
            .write(&files(&[("db-password", "one"), ("tls/cert.pem", "c1")]))
            .unwrap();
        let Written::Committed(first_dir) = first else {
            panic!("nothing written")
        };
        let dir = writer.dir();
        assert!(first_dir.starts_with("..20"), "{first_dir}");
        assert_eq!(fs::read_link(dir.join(DATA)).unwrap(), PathBuf::from(&first_dir));
        assert_eq!(
            fs::read_link(dir.join("db-password")).unwrap(),
            PathBuf::from("..data/db-password")
        );
        assert_eq!(fs::read_to_string(dir.join("db-password")).unwrap(), "one");
        assert_eq!(fs::read_to_string(dir.join("tls/cert.pem")).unwrap(), "c1");
        assert_eq!(listing(dir), ["..data", "db-password", "tls"]);
        let mode = fs::metadata(dir.join(&first_dir).join("db-password"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);

        assert_eq!(
            writer
                .write(&files(&[("db-password", "one"), ("tls/cert.pem", "c1")]))
                .unwrap(),
            Written::Unchanged
        );

        let Written::Committed(second_dir) = writer.write(&files(&[("db-password", "two")])).unwrap() else {
            panic!("nothing written")
        };
        assert_ne!(first_dir, second_dir);
        assert!(!dir.join(&first_dir).exists(), "the old version is removed");
        assert_eq!(fs::read_to_string(dir.join("db-password")).unwrap(), "two");
        assert_eq!(listing(dir), ["..data", "db-password"], "the stale tls link is gone");
    }

    #[test]
    fn a_mode_change_is_a_change() {
        let tmp = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(tmp.path());
        writer.write(&files(&[("a", "x")])).unwrap();
        let mut private = files(&[("a", "x")]);
        private.get_mut("a").unwrap().mode = 0o600;
        assert!(matches!(writer.write(&private).unwrap(), Written::Committed(_)));
        let mode = fs::metadata(tmp.path().join("a")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn recovers_from_a_crash_mid_write() {
        let tmp = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(tmp.path());
        writer.write(&files(&[("a", "1")])).unwrap();
        // A crash after creating the new version and the ..data_tmp link, before the rename.
        fs::create_dir(tmp.path().join("..2026_11_28_10_00_00.crashed")).unwrap();
        symlink("..2026_11_28_10_00_00.crashed", tmp.path().join(DATA_TMP)).unwrap();
        assert!(matches!(
            writer.write(&files(&[("a", "2")])).unwrap(),
            Written::Committed(_)
        ));
        assert_eq!(fs::read_to_string(tmp.path().join("a")).unwrap(), "2");
        assert!(!tmp.path().join("..2026_11_28_10_00_00.crashed").exists());
        assert!(fs::symlink_metadata(tmp.path().join(DATA_TMP)).is_err());
    }

    #[test]
    fn invalid_paths_are_refused_and_nothing_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(tmp.path());
        writer.write(&files(&[("a", "1")])).unwrap();
        for (path, reason) in [
            ("../etc/passwd", "'..' element"),
            ("/abs", "absolute"),
            ("..data", "start with '..'"),
            ("a/../b", "'..' element"),
            ("", "empty"),
        ] {
            let err = writer.write(&files(&[(path, "x")])).unwrap_err().to_string();
            assert!(err.contains(reason), "{path}: {err}");
        }
        let long = "x".repeat(256);
        assert!(writer.write(&files(&[(long.as_str(), "x")])).is_err());
        assert_eq!(fs::read_to_string(tmp.path().join("a")).unwrap(), "1");
    }

    #[test]
    fn paths_naming_one_file_or_nesting_in_a_file_are_refused_and_nothing_is_written() {
        // The `paths` fuzz target's crash: "a/ba" was written, then "a//ba" over it.
        let tmp = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(tmp.path());
        writer.write(&files(&[("a", "1")])).unwrap();
        let err = writer
            .write(&files(&[("a/ba", "first"), ("a//ba", "second")]))
            .unwrap_err()
            .to_string();
        assert_eq!(err, r#""a/ba" conflicts with "a//ba": both name one file"#);
        let err = writer
            .write(&files(&[("d", "file"), ("d/e", "x")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            r#""d/e" conflicts with "d": one would have to be a file and a directory"#
        );
        assert_eq!(fs::read_to_string(tmp.path().join("a")).unwrap(), "1");
        assert_eq!(listing(tmp.path()), ["..data", "a"]);
    }

    #[test]
    fn debug_output_never_shows_contents() {
        let content = FileContent {
            data: b"hunter2".to_vec(),
            mode: 0o600,
        };
        assert_eq!(format!("{content:?}"), "FileContent(7 bytes, mode 600)");
    }
}
