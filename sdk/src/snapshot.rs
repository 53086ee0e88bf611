//! One consistent reading of a secrets directory.
//!
//! Kubelet, the Secrets Store CSI driver and `wi-sidecar` all publish a new version by swapping the `..data`
//! symlink to a new timestamped directory. Reading each file through its own `NAME -> ..data/NAME` link could mix two
//! versions when a swap lands between two reads; here `..data` is resolved once, every file is read inside that one
//! target, and `..data` is checked again afterwards (a swap in between means reading again). A directory without
//! `..data` (a laptop, a ConfigMap copied by hand) is read as it is.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wi_contract::paths::DATA_LINK as DATA;

/// A set of files read together, never a mix of two versions. Contents are not shown by `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub(crate) generation: u64,
    pub(crate) version: Option<String>,
    pub(crate) files: BTreeMap<String, Arc<[u8]>>,
}

impl Snapshot {
    /// 0 before the first successful read, then one more for every change of content.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The `..data` target the files were read from (`None` for a plain directory).
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// The content of a file, by its path relative to the directory (`tls/tls.crt` for a nested one).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(|b| &b[..])
    }

    /// The file names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// Files and their contents, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(k, v)| (k.as_str(), &v[..]))
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether there are no files.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sizes: BTreeMap<&str, usize> = self.files.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("version", &self.version)
            .field("file_sizes", &sizes)
            .finish()
    }
}

/// How many times a read is retried when versions are swapped under it. Real rotations are minutes apart; this
/// bound only matters for a writer that never stops (a test doing thousands of swaps a second).
const ATTEMPTS: usize = 1000;

/// Reads `dir` once, consistently (see the module docs). The generation is left at 0.
pub fn read(dir: &Path) -> io::Result<Snapshot> {
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::yield_now();
        }
        match std::fs::read_link(dir.join(DATA)) {
            Ok(target) => {
                let base = dir.join(&target);
                let files = match read_tree(&base, &base, false) {
                    Ok(files) => files,
                    // The version was swapped and removed while being read: read the new one.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if std::fs::read_link(dir.join(DATA)).ok().as_ref() == Some(&target) {
                    return Ok(Snapshot {
                        generation: 0,
                        version: Some(target.to_string_lossy().into_owned()),
                        files,
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::InvalidInput => {
                // No ..data (InvalidInput: a ..data that is not a symlink): a plain directory.
                if !dir.is_dir() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{} is not a directory", dir.display()),
                    ));
                }
                return Ok(Snapshot {
                    generation: 0,
                    version: None,
                    files: read_tree(dir, dir, true)?,
                });
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "{} kept changing while being read ({ATTEMPTS} attempts)",
        dir.display()
    )))
}

/// Regular files under `dir` (following symlinks to files), relative to `root`. In a plain directory, entries
/// whose name starts with `.` are skipped.
fn read_tree(root: &Path, dir: &Path, skip_hidden: bool) -> io::Result<BTreeMap<String, Arc<[u8]>>> {
    let mut out = BTreeMap::new();
    let mut pending: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            let name = entry.file_name();
            if skip_hidden && name.to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let meta = std::fs::metadata(&path)?;
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_file() {
                let relative = path
                    .strip_prefix(root)
                    .map_err(io::Error::other)?
                    .to_string_lossy()
                    .into_owned();
                out.insert(relative, Arc::from(std::fs::read(&path)?));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn reads_through_data_and_plain_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("..2026_01_01.x/sub")).unwrap();
        std::fs::write(dir.join("..2026_01_01.x/a"), "1").unwrap();
        std::fs::write(dir.join("..2026_01_01.x/sub/b"), "2").unwrap();
        symlink("..2026_01_01.x", dir.join(DATA)).unwrap();
        symlink("..data/a", dir.join("a")).unwrap();
        let snap = read(dir).unwrap();
        assert_eq!(snap.version(), Some("..2026_01_01.x"));
        assert_eq!(snap.names().collect::<Vec<_>>(), ["a", "sub/b"]);
        assert_eq!(snap.get("sub/b"), Some(&b"2"[..]));

        let plain = tempfile::tempdir().unwrap();
        std::fs::write(plain.path().join("password"), "p").unwrap();
        std::fs::write(plain.path().join(".hidden"), "h").unwrap();
        let snap = read(plain.path()).unwrap();
        assert_eq!(snap.version(), None);
        assert_eq!(snap.names().collect::<Vec<_>>(), ["password"]);
        assert_eq!(
            format!("{snap:?}"),
            "Snapshot { generation: 0, version: None, file_sizes: {\"password\": 1} }"
        );
    }

    #[test]
    fn a_missing_directory_is_not_found() {
        let err = read(Path::new("/nonexistent/secrets")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
