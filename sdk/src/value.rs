//! Typed values derived from the watched files, validated before they replace the current one.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::snapshot::Snapshot;
use crate::watch::{SecretsDir, Stale};

/// A value that must not be printed: `Debug` and `Display` show `[redacted]`; [`Redacted::expose`] gives it.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Redacted(value)
    }

    /// The value, for the one place that uses it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redacted([redacted])")
    }
}

impl<T> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a file could not become a value. The message never contains the file's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    /// An error with this message (do not put the content in it).
    pub fn new(message: impl Into<String>) -> Self {
        ParseError(message.into())
    }
}

/// A type a secret file can be parsed into.
pub trait FromSecret: Sized + Send + Sync + 'static {
    /// Parses and validates the file's bytes.
    fn from_secret(bytes: &[u8]) -> Result<Self, ParseError>;
}

impl FromSecret for Vec<u8> {
    fn from_secret(bytes: &[u8]) -> Result<Self, ParseError> {
        Ok(bytes.to_vec())
    }
}

/// UTF-8 text, exactly as written (a trailing newline included); see [`Trimmed`] for the common alternative.
impl FromSecret for String {
    fn from_secret(bytes: &[u8]) -> Result<Self, ParseError> {
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            ParseError::new(format!(
                "not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ))
        })
    }
}

/// UTF-8 text without leading and trailing whitespace; an empty file is an error.
#[derive(Clone, PartialEq, Eq)]
pub struct Trimmed(pub String);

impl FromSecret for Trimmed {
    fn from_secret(bytes: &[u8]) -> Result<Self, ParseError> {
        let text = String::from_secret(bytes)?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(ParseError::new("empty"));
        }
        Ok(Trimmed(trimmed.to_owned()))
    }
}

impl std::ops::Deref for Trimmed {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Trimmed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Trimmed([redacted])")
    }
}

/// A JSON document deserialized into `T`.
#[derive(Clone, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T> std::ops::Deref for Json<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Json<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Json([redacted])")
    }
}

impl<T: DeserializeOwned + Send + Sync + 'static> FromSecret for Json<T> {
    fn from_secret(bytes: &[u8]) -> Result<Self, ParseError> {
        serde_json::from_slice(bytes)
            .map(Json)
            // serde_json's message names the line and column, not the content.
            .map_err(|e| ParseError::new(format!("invalid JSON: {e}")))
    }
}

struct ValueShared<T> {
    name: String,
    current: ArcSwapOption<Redacted<T>>,
    generation: AtomicU64,
    sender: watch::Sender<Option<Arc<Redacted<T>>>>,
    stale: Mutex<Option<Stale>>,
}

/// A value kept up to date from a [`SecretsDir`]: each new snapshot is parsed and validated, and replaces the
/// current value only when that succeeds; otherwise the last good value stays and [`Watched::stale`] says why and
/// since when. Cheap to clone.
pub struct Watched<T> {
    shared: Arc<ValueShared<T>>,
    _dir: SecretsDir,
    _task: Arc<crate::watch::AbortOnDrop>,
}

impl<T> Clone for Watched<T> {
    fn clone(&self) -> Self {
        Watched {
            shared: self.shared.clone(),
            _dir: self._dir.clone(),
            _task: self._task.clone(),
        }
    }
}

impl<T> fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watched")
            .field("name", &self.shared.name)
            .field("generation", &self.shared.generation.load(Ordering::Acquire))
            .field("stale", &self.shared.stale.lock().ok().and_then(|s| s.clone()))
            .finish_non_exhaustive()
    }
}

/// `wait_ready` on a value gave up.
#[derive(Debug, thiserror::Error)]
#[error("no valid {name} within {waited:?}{}", .last_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
pub struct ValueNotReady {
    /// The value's name.
    pub name: String,
    /// How long was waited.
    pub waited: Duration,
    /// Why the latest attempt failed, if one did.
    pub last_error: Option<String>,
}

impl SecretsDir {
    /// The file `name` parsed as `T`.
    pub fn value<T: FromSecret>(&self, name: &str) -> Watched<T> {
        let file = name.to_owned();
        self.derive(name, move |snapshot| {
            let bytes = snapshot
                .get(&file)
                .ok_or_else(|| ParseError::new(format!("no file {file:?} in the directory")))?;
            T::from_secret(bytes).map_err(|e| ParseError::new(format!("{file}: {e}")))
        })
    }

    /// A value computed from whole snapshots (several files at once, such as a certificate and its key) by `parse`,
    /// named `name` in errors.
    pub fn derive<T, F>(&self, name: &str, parse: F) -> Watched<T>
    where
        T: Send + Sync + 'static,
        F: Fn(&Snapshot) -> Result<T, ParseError> + Send + Sync + 'static,
    {
        let (sender, _) = watch::channel(None);
        let shared = Arc::new(ValueShared {
            name: name.to_owned(),
            current: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            sender,
            stale: Mutex::new(None),
        });
        let mut snapshots = self.subscribe();
        // The first parse on the calling thread, so that the value is useful when this returns; every later one on
        // tokio's blocking pool, never on the app's runtime workers (a certificate parse takes milliseconds).
        let first = snapshots.borrow_and_update().clone();
        apply(&shared, &parse, &first);
        let parse = Arc::new(parse);
        let task_shared = shared.clone();
        let task = tokio::spawn(async move {
            while snapshots.changed().await.is_ok() {
                let snapshot = snapshots.borrow_and_update().clone();
                let (shared, parse) = (task_shared.clone(), parse.clone());
                if tokio::task::spawn_blocking(move || apply(&shared, parse.as_ref(), &snapshot))
                    .await
                    .is_err()
                {
                    // The runtime is shutting down.
                    return;
                }
            }
        });
        Watched {
            shared,
            _dir: self.clone(),
            _task: Arc::new(crate::watch::AbortOnDrop(task)),
        }
    }
}

fn apply<T, F>(shared: &ValueShared<T>, parse: &F, snapshot: &Snapshot)
where
    F: Fn(&Snapshot) -> Result<T, ParseError>,
{
    if snapshot.generation() == 0 {
        return;
    }
    match parse(snapshot) {
        Ok(value) => {
            let value = Arc::new(Redacted(value));
            shared.current.store(Some(value.clone()));
            shared.generation.fetch_add(1, Ordering::AcqRel);
            if let Ok(mut stale) = shared.stale.lock() {
                *stale = None;
            }
            shared.sender.send_replace(Some(value));
        }
        Err(error) => {
            tracing::warn!(value = %shared.name, %error, "new content rejected; keeping the last good value");
            if let Ok(mut stale) = shared.stale.lock() {
                let since = stale.as_ref().map_or_else(SystemTime::now, |s| s.since);
                *stale = Some(Stale { error: error.0, since });
            }
        }
    }
}

impl<T: Send + Sync + 'static> Watched<T> {
    /// The current value, `None` until a first valid one: the one call that reads a secret where it is used
    /// (`connect(&password.expose()?)`). Lock-free; the [`Exposed`] keeps this value alive through a rotation.
    pub fn expose(&self) -> Option<Exposed<T>> {
        self.current().map(Exposed)
    }

    /// The current value, still redacted, `None` until a first valid one. Lock-free.
    pub fn current(&self) -> Option<Arc<Redacted<T>>> {
        self.shared.current.load_full()
    }

    /// How many valid values there have been.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// Why the newest content was rejected and since when, while it is; `None` once a valid value replaced it.
    pub fn stale(&self) -> Option<Stale> {
        self.shared.stale.lock().ok().and_then(|s| s.clone())
    }

    /// A receiver that sees every new valid value.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Redacted<T>>>> {
        self.shared.sender.subscribe()
    }

    /// Calls `callback` with every new valid value (the current one first, if any), one call at a time and in
    /// order, until the returned handle is dropped. It runs on tokio's blocking pool, so it may block (rebuild a
    /// connection pool, call a synchronous client) without stalling the app's runtime workers; inside it,
    /// `tokio::runtime::Handle::current()` is the app's runtime.
    pub fn on_change<F>(&self, callback: F) -> Subscription
    where
        F: Fn(&T) + Send + Sync + 'static,
    {
        let mut receiver = self.subscribe();
        let callback = Arc::new(callback);
        let task = tokio::spawn(async move {
            loop {
                let value = receiver.borrow_and_update().clone();
                if let Some(value) = value {
                    let callback = callback.clone();
                    if tokio::task::spawn_blocking(move || callback(value.expose()))
                        .await
                        .is_err()
                    {
                        // The callback panicked or the runtime is shutting down: the subscription ends.
                        return;
                    }
                }
                if receiver.changed().await.is_err() {
                    return;
                }
            }
        });
        Subscription {
            _task: crate::watch::AbortOnDrop(task),
        }
    }

    /// Waits for a first valid value, at most `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Arc<Redacted<T>>, ValueNotReady> {
        let mut receiver = self.subscribe();
        match tokio::time::timeout(timeout, receiver.wait_for(Option::is_some)).await {
            Ok(Ok(value)) => value.clone().ok_or_else(|| self.not_ready(timeout)),
            _ => Err(self.not_ready(timeout)),
        }
    }

    fn not_ready(&self, waited: Duration) -> ValueNotReady {
        ValueNotReady {
            name: self.shared.name.clone(),
            waited,
            last_error: self.stale().map(|s| s.error),
        }
    }
}

/// The current value of a [`Watched`], exposed: dereferences to `T` (and [`Trimmed`] on to `str`, [`Json<T>`] on to
/// `T`). `Debug` still prints `[redacted]`.
pub struct Exposed<T>(Arc<Redacted<T>>);

impl<T> std::ops::Deref for Exposed<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.0.expose()
    }
}

impl<T> fmt::Debug for Exposed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Exposed([redacted])")
    }
}

/// Keeps a [`Watched::on_change`] callback running; dropping it stops the callback.
pub struct Subscription {
    _task: crate::watch::AbortOnDrop,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Subscription")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_parsers_say_what_is_wrong_without_the_content() {
        let secret = Redacted::new("hunter2".to_owned());
        assert_eq!(format!("{secret:?} {secret}"), "Redacted([redacted]) [redacted]");
        assert_eq!(secret.expose(), "hunter2");
        assert_eq!(
            String::from_secret(b"a\xffb").unwrap_err().0,
            "not UTF-8 (invalid byte at offset 1)"
        );
        assert_eq!(Trimmed::from_secret(b" pw\n").unwrap().0, "pw");
        assert!(Trimmed::from_secret(b" \n").is_err());
        let err = Json::<serde_json::Value>::from_secret(b"{\"password\": hunter2}")
            .unwrap_err()
            .0;
        assert!(err.starts_with("invalid JSON") && !err.contains("hunter2"), "{err}");
    }
}
