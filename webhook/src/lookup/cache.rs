//! The ServiceAccount and Namespace caches: what the engine reads of each object, and nothing else.
//!
//! A cluster holds 50,000 to 200,000 ServiceAccounts; a `kube` reflector store keeps each as a
//! `PartialObjectMeta` (about 1.6 KB even stripped to the contract's keys). Here an account is its name and one
//! [`Account`] of 24 bytes: that it exists (a pod of an account missing from the cache is read live, and one that is
//! missing there too is denied), its client id as 16 bytes when that is the only contract key it carries (the
//! common case), or its contract keys as written when it carries others. A Namespace is its name and its
//! `azure.workload.identity/use` label.
//!
//! The caches are fed by metadata-only watches whose initial lists come in pages (`kube`'s watcher asks for 500
//! objects at a time), so the initial list never holds more than a page of decoded objects beside the cache. A
//! relist (after the watch expired) builds the new cache beside the one that answers admissions and swaps it in
//! whole when the list is complete, as a reflector does.

use std::collections::{BTreeMap, HashMap};
use std::sync::{PoisonError, RwLock};

use compact_str::CompactString;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use uuid::Uuid;

use crate::mutate::ServiceAccount;
use crate::mutate::is_contract_key;
use wi_contract::{CLIENT_ID_ANNOTATION, USE_LABEL};

fn contract_keys(map: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    map.into_iter()
        .flatten()
        .filter(|(k, _)| is_contract_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What the cache remembers of one ServiceAccount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Account {
    /// No key of the contract: the account exists, and a pod using it gets no client id.
    Plain,
    /// Exactly one key of the contract, `azure.workload.identity/client-id`, a UUID written in its canonical form
    /// (lower-case, hyphenated), kept as its 16 bytes.
    ClientId(Uuid),
    /// Any other combination: the contract's annotations and labels as written.
    Keys(Box<Keys>),
}

/// The contract's keys of an account that is not [`Account::Plain`] or [`Account::ClientId`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    annotations: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
}

impl Account {
    /// What to remember of an account with this metadata.
    pub(crate) fn from_meta(meta: &ObjectMeta) -> Self {
        let annotations = contract_keys(meta.annotations.as_ref());
        let labels = contract_keys(meta.labels.as_ref());
        if labels.is_empty() {
            if annotations.is_empty() {
                return Account::Plain;
            }
            if let Some(uuid) = canonical_client_id(&annotations) {
                return Account::ClientId(uuid);
            }
        }
        Account::Keys(Box::new(Keys { annotations, labels }))
    }

    /// The account as the engine reads it.
    pub(crate) fn to_service_account(&self, namespace: &str, name: &str) -> ServiceAccount {
        let (annotations, labels) = match self {
            Account::Plain => (BTreeMap::new(), BTreeMap::new()),
            Account::ClientId(uuid) => (
                BTreeMap::from([(CLIENT_ID_ANNOTATION.to_owned(), uuid.hyphenated().to_string())]),
                BTreeMap::new(),
            ),
            Account::Keys(keys) => (keys.annotations.clone(), keys.labels.clone()),
        };
        ServiceAccount {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            annotations,
            labels,
        }
    }
}

/// The client id of annotations that hold only that, when it is a UUID that prints back exactly as written.
fn canonical_client_id(annotations: &BTreeMap<String, String>) -> Option<Uuid> {
    let (key, value) = annotations.first_key_value()?;
    if annotations.len() != 1 || key != CLIENT_ID_ANNOTATION {
        return None;
    }
    let uuid = Uuid::try_parse(value).ok()?;
    let mut buffer = Uuid::encode_buffer();
    (uuid.hyphenated().encode_lower(&mut buffer) == value.as_str()).then_some(uuid)
}

/// The value of a Namespace's `azure.workload.identity/use` label, if it has one.
pub(crate) fn use_label(meta: &ObjectMeta) -> Option<Box<str>> {
    meta.labels
        .as_ref()
        .and_then(|labels| labels.get(USE_LABEL))
        .map(|v| v.as_str().into())
}

/// Objects by namespace (`""` for cluster-scoped ones) and name: per namespace, a list sorted by name, searched by
/// bisection. A hash map would spend up to twice its entries in empty buckets (its load factor at most 7/8, its
/// capacity a power of two); a sorted list spends nothing once a complete list is shrunk. A name of up to 24 bytes
/// (most are) is kept inline in its 24-byte entry, so that a list of 100,000 names is one allocation per namespace
/// rather than 100,000 small ones scattered between the pages of the list being decoded. An object added later
/// by the watch is inserted in place, a move of the namespace's entries behind it (for 10,000 accounts in one
/// namespace, 400 KB), which ServiceAccount creations can afford.
#[derive(Debug)]
pub(crate) struct Objects<V> {
    by_namespace: HashMap<Box<str>, Vec<(CompactString, V)>>,
    len: usize,
}

impl<V> Default for Objects<V> {
    fn default() -> Self {
        Objects {
            by_namespace: HashMap::new(),
            len: 0,
        }
    }
}

impl<V> Objects<V> {
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<&V> {
        let names = self.by_namespace.get(namespace)?;
        let i = names.binary_search_by(|(n, _)| n.as_str().cmp(name)).ok()?;
        Some(&names[i].1)
    }

    pub(crate) fn insert(&mut self, namespace: &str, name: &str, value: V) {
        let names = match self.by_namespace.get_mut(namespace) {
            Some(names) => names,
            None => self.by_namespace.entry(namespace.into()).or_default(),
        };
        match names.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => names[i].1 = value,
            Err(i) => {
                names.insert(i, (name.into(), value));
                self.len += 1;
            }
        }
    }

    pub(crate) fn remove(&mut self, namespace: &str, name: &str) {
        let Some(names) = self.by_namespace.get_mut(namespace) else {
            return;
        };
        if let Ok(i) = names.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            names.remove(i);
            self.len -= 1;
        }
        if names.is_empty() {
            self.by_namespace.remove(namespace);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds an object of a list in progress, unsorted; [`finish`](Self::finish) sorts them when it is complete.
    pub(crate) fn push(&mut self, namespace: &str, name: &str, value: V) {
        match self.by_namespace.get_mut(namespace) {
            Some(names) => names.push((name.into(), value)),
            None => {
                self.by_namespace.insert(namespace.into(), vec![(name.into(), value)]);
            }
        }
        self.len += 1;
    }

    /// Sorts what [`push`](Self::push) added (one entry per name: the first, should a list repeat one) and gives
    /// back what the growth of the lists left unused.
    pub(crate) fn finish(&mut self) {
        self.len = 0;
        for names in self.by_namespace.values_mut() {
            names.sort_by(|(a, _), (b, _)| a.cmp(b));
            names.dedup_by(|(a, _), (b, _)| a == b);
            names.shrink_to_fit();
            self.len += names.len();
        }
        self.by_namespace.shrink_to_fit();
    }
}

/// A cache of one kind, shared by the watch that fills it and the handlers that read it.
#[derive(Debug)]
pub(crate) struct Cache<V> {
    objects: RwLock<Objects<V>>,
    /// Whether a complete list has been seen; watched by readiness.
    synced: tokio::sync::watch::Sender<bool>,
}

impl<V> Default for Cache<V> {
    fn default() -> Self {
        Cache {
            objects: RwLock::new(Objects::default()),
            synced: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl<V: Clone> Cache<V> {
    /// The cached value of `namespace/name`.
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<V> {
        // A writer never panics while it holds the lock (inserts and removes only), so a poisoned lock still
        // guards a consistent map.
        let objects = self.objects.read().unwrap_or_else(PoisonError::into_inner);
        objects.get(namespace, name).cloned()
    }
}

impl<V> Cache<V> {
    pub(crate) fn len(&self) -> usize {
        self.objects.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether a complete list has been seen.
    pub(crate) fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Returns once a complete list has been seen.
    pub(crate) async fn synced(&self) {
        // The sender lives in `self`: the channel cannot close while this waits.
        let _ = self.synced.subscribe().wait_for(|synced| *synced).await;
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Objects<V>> {
        self.objects.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the whole cache with a complete list, and marks it synced.
    pub(crate) fn replace(&self, mut objects: Objects<V>) {
        objects.finish();
        *self.write() = objects;
        self.synced.send_replace(true);
    }

    pub(crate) fn insert(&self, namespace: &str, name: &str, value: V) {
        self.write().insert(namespace, name, value);
    }

    pub(crate) fn remove(&self, namespace: &str, name: &str) {
        self.write().remove(namespace, name);
    }
}

/// Follows a metadata watch of one kind into `cache`, keeping `compact(metadata)` of each object, until the
/// process ends (the watch retries with backoff on errors, each logged).
pub(crate) async fn follow<K, V>(
    api: Api<PartialObjectMeta<K>>,
    cache: &Cache<V>,
    kind: &'static str,
    compact: fn(&ObjectMeta) -> V,
) where
    K: kube::Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default,
    PartialObjectMeta<K>: serde::de::DeserializeOwned + Clone + std::fmt::Debug + Send + 'static,
{
    // Borrowed: the name is copied once, into the cache, not once more per event.
    fn key(meta: &ObjectMeta) -> (&str, &str) {
        (
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }
    // A list in progress: the cache keeps answering from the previous one until this one is complete.
    let mut listing: Option<Objects<V>> = None;
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listing = Some(Objects::default()),
            Ok(Event::InitApply(object)) => {
                if let Some(listing) = listing.as_mut() {
                    let (namespace, name) = key(&object.metadata);
                    listing.push(namespace, name, compact(&object.metadata));
                }
            }
            Ok(Event::InitDone) => {
                if let Some(complete) = listing.take() {
                    let count = complete.len();
                    cache.replace(complete);
                    tracing::info!(kind, count, "cache listed");
                }
            }
            Ok(Event::Apply(object)) => {
                let (namespace, name) = key(&object.metadata);
                cache.insert(namespace, name, compact(&object.metadata));
            }
            Ok(Event::Delete(object)) => {
                let (namespace, name) = key(&object.metadata);
                cache.remove(namespace, name);
            }
            Err(error) => tracing::warn!(kind, %error, "watch failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(value: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn an_account_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Account>(), 24);
    }

    #[test]
    fn a_canonical_client_id_alone_is_kept_as_16_bytes_and_read_back_as_written() {
        let id = "6a2b4c1e-3f5d-4e7a-9b8c-0d1e2f3a4b5c";
        let m = meta(json!({"name": "web", "namespace": "apps",
            "annotations": {CLIENT_ID_ANNOTATION: id, "kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "labels": {"app": "web"}}));
        let account = Account::from_meta(&m);
        assert!(matches!(account, Account::ClientId(_)), "{account:?}");
        let sa = account.to_service_account("apps", "web");
        assert_eq!(
            sa.annotations,
            BTreeMap::from([(CLIENT_ID_ANNOTATION.to_owned(), id.to_owned())])
        );
        assert!(sa.labels.is_empty());
        assert_eq!((sa.namespace.as_str(), sa.name.as_str()), ("apps", "web"));
    }

    #[test]
    fn any_other_client_id_or_key_is_kept_as_written() {
        for annotations in [
            // Upper case, braces, no hyphens: the engine sees exactly what the user wrote.
            json!({CLIENT_ID_ANNOTATION: "6A2B4C1E-3F5D-4E7A-9B8C-0D1E2F3A4B5C"}),
            json!({CLIENT_ID_ANNOTATION: "6a2b4c1e3f5d4e7a9b8c0d1e2f3a4b5c"}),
            json!({CLIENT_ID_ANNOTATION: "not-a-uuid"}),
            json!({CLIENT_ID_ANNOTATION: "6a2b4c1e-3f5d-4e7a-9b8c-0d1e2f3a4b5c",
                   "azure.workload.identity/tenant-id": "72f988bf-86f1-41af-91ab-2d7cd011db47"}),
            json!({"Azure.Workload.Identity/Client-ID": "x", "workload-identity.rs/secrets-delivery": "sidecar"}),
        ] {
            let m = meta(json!({"name": "web", "namespace": "apps", "annotations": annotations.clone()}));
            let account = Account::from_meta(&m);
            assert!(matches!(account, Account::Keys(_)), "{account:?}");
            let expected: BTreeMap<String, String> = serde_json::from_value(annotations).unwrap();
            assert_eq!(account.to_service_account("apps", "web").annotations, expected);
        }
    }

    #[test]
    fn only_contract_keys_are_kept_and_labels_under_them_count() {
        let m = meta(json!({"name": "a", "namespace": "b",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "big", "team": "x"},
            "labels": {"app": "web"}}));
        assert_eq!(Account::from_meta(&m), Account::Plain);
        let m = meta(json!({"name": "a", "namespace": "b",
            "annotations": {CLIENT_ID_ANNOTATION: "6a2b4c1e-3f5d-4e7a-9b8c-0d1e2f3a4b5c", "other": "y"},
            "labels": {"azure.workload.identity/use": "true", "app": "web"}}));
        let sa = Account::from_meta(&m).to_service_account("b", "a");
        assert_eq!(sa.annotations.keys().collect::<Vec<_>>(), [CLIENT_ID_ANNOTATION]);
        assert_eq!(
            sa.labels,
            BTreeMap::from([("azure.workload.identity/use".to_owned(), "true".to_owned())])
        );
    }

    #[test]
    fn contract_keys_are_matched_without_case() {
        assert!(is_contract_key("azure.workload.identity/client-id"));
        assert!(is_contract_key("Azure.Workload.Identity/client_id"));
        assert!(is_contract_key("WORKLOAD-IDENTITY.RS/secrets-delivery"));
        assert!(!is_contract_key("azure.workload"));
        assert!(!is_contract_key("kubectl.kubernetes.io/last-applied-configuration"));
    }

    #[test]
    fn objects_insert_replace_remove_and_count() {
        let mut objects = Objects::default();
        objects.insert("a", "x", 1);
        objects.insert("a", "y", 2);
        objects.insert("b", "x", 3);
        objects.insert("a", "x", 4);
        assert_eq!(objects.len(), 3);
        assert_eq!(objects.get("a", "x"), Some(&4));
        assert_eq!(objects.get("b", "y"), None);
        objects.remove("b", "x");
        objects.remove("b", "x");
        assert_eq!(objects.len(), 2);
        assert!(!objects.by_namespace.contains_key("b"), "an empty namespace is dropped");
        assert_eq!(
            objects.by_namespace["a"]
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            ["x", "y"]
        );

        // A list arrives in any order; once complete it is sorted and searchable.
        let mut listing = Objects::default();
        for (i, name) in ["m", "c", "z", "a", "c"].into_iter().enumerate() {
            listing.push("ns", name, i);
        }
        listing.finish();
        assert_eq!(listing.len(), 4, "one entry per name");
        assert_eq!(
            ["a", "c", "m", "z", "q"].map(|n| listing.get("ns", n).copied()),
            [Some(3), Some(1), Some(0), Some(2), None]
        );
        let cache = Cache::default();
        assert!(!cache.is_synced());
        cache.replace(objects);
        assert!(cache.is_synced());
        assert_eq!((cache.len(), cache.get("a", "y")), (2, Some(2)));
    }
}
