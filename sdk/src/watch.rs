//! Watching a secrets directory.
//!
//! inotify watches the directory itself, not the files (a file watch follows the symlink onto the old inode and
//! goes quiet after the first swap), and its parent, to see the directory removed and created again. Any event
//! under the directory, an overflow of the event queue (notify's rescan flag) or a watcher error triggers one
//! consistent re-read ([`snapshot::read`]); a poll every `poll_interval` is the backstop, and the whole mechanism
//! on filesystems without inotify ([`WatchMode::Poll`]). A new [`Snapshot`] is published only when some content
//! changed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, watch};

use crate::snapshot::{self, Snapshot};

/// How changes are noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatchMode {
    /// inotify, with a poll as the backstop.
    #[default]
    Notify,
    /// Only the poll (filesystems without inotify, such as some network filesystems).
    Poll,
}

/// How a directory is watched.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// inotify plus poll, or poll only.
    pub mode: WatchMode,
    /// How often the directory is read even without an event.
    pub poll_interval: Duration,
    /// How long to wait for the rest of a burst of events before reading.
    pub debounce: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            mode: WatchMode::Notify,
            poll_interval: Duration::from_secs(30),
            debounce: Duration::from_millis(5),
        }
    }
}

/// The last read that failed; the previous snapshot (or value) is still served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    /// Why the latest read or parse failed. Never contains file contents.
    pub error: String,
    /// When it started failing (the first failure of the current run of failures).
    pub since: SystemTime,
}

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// No tokio runtime to run the watcher on.
    #[error("SecretsDir::watch must be called inside a tokio runtime")]
    NoRuntime,
    /// The inotify watcher could not be created (use [`WatchMode::Poll`]).
    #[error("cannot create an inotify watcher: {0}")]
    Notify(#[from] notify::Error),
}

/// `wait_ready` gave up.
#[derive(Debug, thiserror::Error)]
#[error("no complete snapshot of {dir} within {waited:?}{}", .last_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
pub struct NotReady {
    /// The directory.
    pub dir: PathBuf,
    /// How long was waited.
    pub waited: Duration,
    /// The last read error, if any.
    pub last_error: Option<String>,
}

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) current: ArcSwap<Snapshot>,
    pub(crate) sender: watch::Sender<Arc<Snapshot>>,
    pub(crate) stale: Mutex<Option<Stale>>,
}

/// A watched secrets directory. Cheap to clone; the watcher stops when the last clone is dropped.
#[derive(Clone)]
pub struct SecretsDir {
    pub(crate) shared: Arc<Shared>,
    _task: Arc<AbortOnDrop>,
}

pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for SecretsDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsDir")
            .field("dir", &self.shared.dir)
            .field("generation", &self.generation())
            .finish()
    }
}

impl SecretsDir {
    /// Starts watching `dir` with the default options (inotify, 30 s poll). The directory may not exist yet.
    pub fn watch(dir: impl Into<PathBuf>) -> Result<Self, WatchError> {
        Self::watch_with(dir, WatchOptions::default())
    }

    /// Starts watching `dir`. Must be called inside a tokio runtime.
    pub fn watch_with(dir: impl Into<PathBuf>, options: WatchOptions) -> Result<Self, WatchError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| WatchError::NoRuntime)?;
        let dir = dir.into();
        let (sender, _) = watch::channel(Arc::new(Snapshot::default()));
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            current: ArcSwap::from_pointee(Snapshot::default()),
            sender,
            stale: Mutex::new(None),
        });
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut watcher = match options.mode {
            WatchMode::Poll => None,
            WatchMode::Notify => {
                let filter_dir = dir.clone();
                Some(notify::recommended_watcher(
                    move |event: notify::Result<notify::Event>| {
                        if is_relevant(&filter_dir, &event) {
                            let _ = events_tx.send(());
                        }
                    },
                )?)
            }
        };
        // The watches are set up, then the first read done, before watch returns: current() is already useful and
        // no change made after this call can be missed.
        let mut armed = Armed::default();
        armed.arm(&shared.dir, watcher.as_mut());
        reload(&shared);
        let task = runtime.spawn(run(shared.clone(), watcher, events_rx, options, armed));
        Ok(SecretsDir {
            shared,
            _task: Arc::new(AbortOnDrop(task)),
        })
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The latest complete snapshot (generation 0 and empty before the first successful read). Lock-free.
    pub fn current(&self) -> Arc<Snapshot> {
        self.shared.current.load_full()
    }

    /// The generation of the latest snapshot.
    pub fn generation(&self) -> u64 {
        self.shared.current.load().generation
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.shared.sender.subscribe()
    }

    /// The failure of the latest read, while reads fail; `None` once a read succeeds.
    pub fn stale(&self) -> Option<Stale> {
        self.shared.stale.lock().ok().and_then(|s| s.clone())
    }

    /// Waits until a first snapshot has been read, at most `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Arc<Snapshot>, NotReady> {
        let mut receiver = self.subscribe();
        let ready = tokio::time::timeout(timeout, receiver.wait_for(|s| s.generation > 0)).await;
        match ready {
            Ok(Ok(snapshot)) => Ok(snapshot.clone()),
            _ => Err(NotReady {
                dir: self.shared.dir.clone(),
                waited: timeout,
                last_error: self.stale().map(|s| s.error),
            }),
        }
    }
}

/// Whether a notification may mean the directory changed: anything under it or about it, an overflow, an error.
/// Reads (inotify open and access events, our own included) are not changes.
pub(crate) fn is_relevant(dir: &Path, event: &notify::Result<notify::Event>) -> bool {
    match event {
        Err(_) => true,
        Ok(event) if event.need_rescan() => true,
        Ok(notify::Event {
            kind: notify::EventKind::Access(_),
            ..
        }) => false,
        Ok(event) => event.paths.iter().any(|p| p.starts_with(dir)),
    }
}

/// Which inotify watches are in place: the directory's parent (to see the directory come and go) and the directory.
#[derive(Debug, Default)]
struct Armed {
    parent: bool,
    dir: bool,
}

impl Armed {
    /// Adds the watches that are missing and can be added; drops the directory's when it is gone. True when the
    /// directory's watch was just added (changes made before it must be read).
    fn arm(&mut self, dir: &Path, watcher: Option<&mut notify::RecommendedWatcher>) -> bool {
        let Some(watcher) = watcher else {
            return false;
        };
        if !self.parent
            && let Some(parent) = dir.parent().filter(|p| p.is_dir())
        {
            self.parent = watcher.watch(parent, RecursiveMode::NonRecursive).is_ok();
        }
        let exists = dir.is_dir();
        if exists && !self.dir {
            self.dir = watcher.watch(dir, RecursiveMode::NonRecursive).is_ok();
            return self.dir;
        }
        if !exists && self.dir {
            let _ = watcher.unwatch(dir);
            self.dir = false;
        }
        false
    }
}

async fn run(
    shared: Arc<Shared>,
    mut watcher: Option<notify::RecommendedWatcher>,
    mut events: mpsc::UnboundedReceiver<()>,
    options: WatchOptions,
    mut armed: Armed,
) {
    let mut events_open = watcher.is_some();
    let mut ticker = tokio::time::interval(options.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        if armed.arm(&shared.dir, watcher.as_mut()) {
            // The directory (re)appeared: read what it got before the watch was set up.
            reload_off_workers(&shared).await;
        }
        tokio::select! {
            received = events.recv(), if events_open => {
                if received.is_none() {
                    // The watcher is gone: fall back to polling.
                    watcher = None;
                    events_open = false;
                }
                tokio::time::sleep(options.debounce).await;
                while events.try_recv().is_ok() {}
            }
            _ = ticker.tick() => {}
        }
        reload_off_workers(&shared).await;
    }
}

/// [`reload`] on tokio's blocking pool: a read (up to 1,000 tries while kubelet swaps `..data`) never runs on the
/// app's runtime workers.
async fn reload_off_workers(shared: &Arc<Shared>) {
    let shared = shared.clone();
    // An error is a panic in the read (a bug) or a runtime shutting down; the next event or tick reads again.
    let _ = tokio::task::spawn_blocking(move || reload(&shared)).await;
}

/// Reads the directory and publishes a new snapshot if anything changed.
pub(crate) fn reload(shared: &Shared) {
    match snapshot::read(&shared.dir) {
        Ok(mut read) => {
            if let Ok(mut stale) = shared.stale.lock() {
                *stale = None;
            }
            let current = shared.current.load();
            if current.generation > 0 && current.files == read.files {
                return;
            }
            read.generation = current.generation + 1;
            let read = Arc::new(read);
            shared.current.store(read.clone());
            shared.sender.send_replace(read);
        }
        Err(error) => {
            tracing::debug!(dir = %shared.dir.display(), %error, "secrets directory not readable; keeping the last snapshot");
            if let Ok(mut stale) = shared.stale.lock() {
                let since = stale.as_ref().map_or_else(SystemTime::now, |s| s.since);
                *stale = Some(Stale {
                    error: error.to_string(),
                    since,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, Flag};

    #[test]
    fn overflow_errors_and_changes_under_the_directory_are_relevant_reads_are_not() {
        let dir = Path::new("/mnt/secrets");
        let overflow = notify::Event::new(notify::EventKind::Other).set_flag(Flag::Rescan);
        assert!(is_relevant(dir, &Ok(overflow)));
        assert!(is_relevant(dir, &Err(notify::Error::generic("queue broken"))));
        let create = notify::Event::new(notify::EventKind::Create(CreateKind::Any)).add_path(dir.join("..data_tmp"));
        assert!(is_relevant(dir, &Ok(create)));
        let recreated = notify::Event::new(notify::EventKind::Create(CreateKind::Folder)).add_path(dir.to_owned());
        assert!(is_relevant(dir, &Ok(recreated)));
        let elsewhere = notify::Event::new(notify::EventKind::Create(CreateKind::Any)).add_path("/mnt/other".into());
        assert!(!is_relevant(dir, &Ok(elsewhere)));
        let read =
            notify::Event::new(notify::EventKind::Access(notify::event::AccessKind::Any)).add_path(dir.to_owned());
        assert!(!is_relevant(dir, &Ok(read)));
    }
}
