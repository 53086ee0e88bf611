//! One class's sync: read it, resolve its ServiceAccount's identity, fetch its objects from Key Vault (once per
//! interval, whatever the number of pods), write each `secretObjects` entry as a Secret it owns, delete the Secrets of
//! removed entries, and roll the workloads that asked for it when a Secret really changed.
//!
//! A failure keeps every Secret as it was and retries with backoff (and `Retry-After`); what the user must fix is an
//! Event on the class that names the field. Values are never in a log line, an Event or a metric.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource as _, ResourceExt as _};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use wi_contract::secret_objects::{self, SecretObject};
use wi_contract::spc::{self, SyncConfig};
use wi_contract::{
    CONTENT_HASH_ANNOTATION, CONTROLLER_NAME, MANAGED_BY_LABEL, SYNC_INTERVAL_ANNOTATION,
    SYNC_SERVICE_ACCOUNT_ANNOTATION,
};
use wi_vault::fetch::{Fetcher, vault_url};
use wi_vault::schedule::Schedule;

use crate::identity::{self, Identity};
use crate::metrics::{ClassLabels, Metrics, Outcome, OutcomeLabels};
use crate::secrets;

/// What every sync needs to know of the cluster and the cloud.
pub struct Settings {
    /// The default time between syncs of a class, and how failures back off.
    pub schedule: Schedule,
    /// Tenant of the identities whose ServiceAccount and class name none (the webhook's `WI_TENANT_ID`).
    pub default_tenant: Option<String>,
    /// Entra ID's authority host and an extra CA, for the token exchange.
    pub entra: azure_core::http::ClientOptions,
    /// HTTP settings of the Key Vault clients (extra CA, no retries of their own: the backoff is here).
    pub keyvault: azure_core::http::ClientOptions,
    /// The vault URL template and whether Key Vault's challenge resource is verified (the flags, as given).
    pub access: wi_vault::Access,
    /// Objects of one class fetched at a time.
    pub concurrency: usize,
}

/// The reconciler's context.
pub struct Context {
    /// The controller's own client (never used for Key Vault).
    pub client: kube::Client,
    /// How to sync.
    pub settings: Settings,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Events on the classes.
    pub recorder: Recorder,
    /// The SecretProviderClass resource.
    pub resource: ApiResource,
    states: Mutex<HashMap<(String, String), ClassState>>,
    /// One credential per ServiceAccount identity, shared by its classes: one TokenRequest and one exchange at
    /// Entra ID per access token lifetime, however many classes it syncs.
    credentials: Mutex<HashMap<(String, Identity), Arc<dyn azure_core::credentials::TokenCredential>>>,
}

impl Context {
    /// A context with no class synced yet.
    pub fn new(
        client: kube::Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        recorder: Recorder,
        resource: ApiResource,
    ) -> Self {
        Context {
            client,
            settings,
            metrics,
            recorder,
            resource,
            states: Mutex::default(),
            credentials: Mutex::default(),
        }
    }
}

/// What is remembered of a class between syncs.
#[derive(Default)]
struct ClassState {
    /// The class (uid, spec, sync annotations) as last synced; another one syncs at once.
    fingerprint: String,
    /// When the next sync is due.
    due: Option<Instant>,
    /// Failed syncs since the last success.
    failures: u32,
    /// The fetcher, while the identity, vault and objects stay the same (its credential caches the access token).
    fetcher: Option<(Identity, String, SyncConfig, Arc<Fetcher>)>,
}

/// Why a sync did not complete; said in an Event on the class.
struct Failure {
    reason: &'static str,
    message: String,
    retry_after: Option<Duration>,
    /// Retrying cannot help until the class changes (which triggers a sync at once) or the interval passes.
    permanent: bool,
}

impl Failure {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
            retry_after: None,
            permanent: false,
        }
    }

    fn permanent(self) -> Self {
        Failure {
            permanent: true,
            ..self
        }
    }
}

fn fingerprint(class: &DynamicObject) -> String {
    let mut hash = Sha256::new();
    hash.update(class.metadata.uid.as_deref().unwrap_or_default());
    hash.update(class.data.get("spec").map(Value::to_string).unwrap_or_default());
    for key in [SYNC_SERVICE_ACCOUNT_ANNOTATION, SYNC_INTERVAL_ANNOTATION] {
        hash.update([0]);
        hash.update(class.annotations().get(key).map(String::as_str).unwrap_or_default());
    }
    hex::encode(hash.finalize())
}

/// The reconciler: syncs a class when it changed or its interval passed, and says when to come back.
pub async fn reconcile(class: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Infallible> {
    let namespace = class.namespace().unwrap_or_default();
    let name = class.name_any();
    let key = (namespace.clone(), name.clone());
    let service_account = class
        .annotations()
        .get(SYNC_SERVICE_ACCOUNT_ANNOTATION)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let Some(service_account) = service_account.filter(|_| class.metadata.deletion_timestamp.is_none()) else {
        // Not ours to sync (the CSI driver may be syncing it); its Secrets, if any, stay until the class goes.
        lock(&ctx.states).remove(&key);
        return Ok(Action::await_change());
    };
    let fingerprint = fingerprint(&class);
    let (changed, due) = {
        let states = lock(&ctx.states);
        let state = states.get(&key);
        (
            state.is_none_or(|s| s.fingerprint != fingerprint),
            state.and_then(|s| s.due),
        )
    };
    if !changed && let Some(due) = due {
        let now = Instant::now();
        if due > now {
            // A re-list or an unrelated event: Key Vault is read once per interval, not once per event.
            return Ok(Action::requeue(due - now));
        }
    }
    let interval = match class.annotations().get(SYNC_INTERVAL_ANNOTATION) {
        None => Ok(ctx.settings.schedule.interval),
        Some(text) => humantime::parse_duration(text.trim())
            .map_err(|e| e.to_string())
            .and_then(|d| match d >= Duration::from_secs(1) {
                true => Ok(d),
                false => Err("shorter than 1s".to_owned()),
            }),
    };
    let interval = match interval {
        Ok(interval) => interval,
        Err(reason) => {
            let text = class
                .annotations()
                .get(SYNC_INTERVAL_ANNOTATION)
                .cloned()
                .unwrap_or_default();
            publish(
                &ctx,
                &class,
                EventType::Warning,
                "InvalidSyncInterval",
                format!(
                    "annotation {SYNC_INTERVAL_ANNOTATION}: {text:?} is not a duration such as 5m ({reason}); \
                     syncing every {}",
                    humantime::format_duration(ctx.settings.schedule.interval)
                ),
            )
            .await;
            ctx.settings.schedule.interval
        }
    };
    let schedule = Schedule {
        interval,
        ..ctx.settings.schedule
    };
    let started = Instant::now();
    let result = sync(&class, &ctx, &namespace, &service_account, changed).await;
    let random = fastrand::f64();
    let (delay, failure) = {
        let mut states = lock(&ctx.states);
        let state = states.entry(key).or_default();
        if state.fingerprint != fingerprint {
            // A changed class starts its backoff afresh.
            state.failures = 0;
            state.fingerprint = fingerprint;
        }
        let (delay, failure) = match result {
            Ok((outcome, fetcher)) => {
                state.failures = 0;
                state.fetcher = Some(fetcher);
                ctx.metrics
                    .syncs
                    .get_or_create(&OutcomeLabels { result: outcome })
                    .inc();
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                ctx.metrics
                    .last_success
                    .get_or_create(&ClassLabels { namespace, class: name })
                    .set(i64::try_from(now.as_secs()).unwrap_or(i64::MAX));
                tracing::debug!(?outcome, elapsed = ?started.elapsed(), "class synced");
                (schedule.next_delay(0, None, random), None)
            }
            Err(failure) => {
                state.failures = state.failures.saturating_add(1);
                ctx.metrics
                    .syncs
                    .get_or_create(&OutcomeLabels {
                        result: Outcome::Failed,
                    })
                    .inc();
                tracing::warn!(
                    namespace, class = name, reason = failure.reason, message = %failure.message,
                    failures = state.failures, "sync failed"
                );
                let delay = match failure.permanent {
                    true => schedule.next_delay(0, None, random),
                    false => schedule.next_delay(state.failures, failure.retry_after, random),
                };
                (delay, Some(failure))
            }
        };
        state.due = Some(Instant::now() + delay);
        (delay, failure)
    };
    if let Some(failure) = failure {
        publish(&ctx, &class, EventType::Warning, failure.reason, failure.message).await;
    }
    Ok(Action::requeue(delay))
}

/// The controller never fails a reconcile (each failure is handled where it happens): this only satisfies the
/// runtime.
pub fn error_policy(_: Arc<DynamicObject>, _: &Infallible, ctx: Arc<Context>) -> Action {
    Action::requeue(ctx.settings.schedule.interval)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn publish(ctx: &Context, class: &DynamicObject, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        // An Event note holds at most 1 kB.
        note: Some(note.chars().take(1000).collect()),
        action: "Sync".to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &class.object_ref(&ctx.resource)).await {
        tracing::warn!(%error, reason, "cannot publish an Event");
    }
}

type Fetched = (Identity, String, SyncConfig, Arc<Fetcher>);

async fn sync(
    class: &DynamicObject,
    ctx: &Context,
    namespace: &str,
    service_account: &str,
    changed: bool,
) -> Result<(Outcome, Fetched), Failure> {
    let value = serde_json::to_value(class).map_err(|e| Failure::new("InvalidClass", e.to_string()).permanent())?;
    let entries = secret_objects::parse(&value);
    if entries.is_empty() {
        return Err(Failure::new(
            "NoSecretObjects",
            format!(
                "annotation {SYNC_SERVICE_ACCOUNT_ANNOTATION} asks for a sync, but the class has no spec.secretObjects: \
                 list the Secrets to make (secretName, type, data of objectName and key)"
            ),
        )
        .permanent());
    }
    let config = spc::from_value(&value)
        .map_err(|e| Failure::new("InvalidClass", format!("spec.parameters: {e}")).permanent())?;
    let identity = identity::resolve(
        &ctx.client,
        namespace,
        service_account,
        &config,
        ctx.settings.default_tenant.as_deref(),
    )
    .await
    .map_err(|e| match e {
        identity::IdentityError::Api { .. } => Failure::new("ServiceAccountUnreadable", e.to_string()),
        _ => Failure::new("InvalidIdentity", e.to_string()),
    })?;
    let url = vault_url(
        &config.keyvault_name,
        config.cloud_name.as_deref(),
        ctx.settings.access.vault_url_template.as_deref(),
    )
    .map_err(|e| Failure::new("InvalidClass", format!("spec.parameters.cloudName: {e}")).permanent())?;
    let fetcher = fetcher(ctx, namespace, &class.name_any(), &identity, &url, &config)?;
    let files = fetcher.fetch_all().await.map_err(|e| Failure {
        retry_after: e.retry_after().map(Duration::from_secs),
        ..Failure::new("KeyVaultFailed", format!("{e} (the Secrets keep their last good data)"))
    })?;

    let secrets_api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let mut outcome = Outcome::Unchanged;
    let mut really_changed = BTreeSet::new();
    let mut problems = Vec::new();
    let mut wanted = BTreeSet::new();
    let mut unreadable = false;
    for entry in entries {
        let object = match entry {
            Ok(object) => object,
            Err(e) => {
                problems.push(format!("{e}"));
                unreadable = true;
                continue;
            }
        };
        wanted.insert(object.secret_name.clone());
        match write_secret(ctx, class, &secrets_api, &object, &files).await {
            Ok(Written::Unchanged) => {}
            Ok(Written::Created) => outcome = Outcome::Changed,
            Ok(Written::Updated) => {
                outcome = Outcome::Changed;
                really_changed.insert(object.secret_name.clone());
            }
            Err(problem) => problems.push(problem),
        }
    }
    if changed && !unreadable {
        // Entries removed from secretObjects: their Secrets go (looked for only when the class changed, or first
        // seen by this replica, so that a steady state lists nothing). Not while an entry is unreadable: a typo in
        // one must not delete the Secret it named.
        let managed = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={CONTROLLER_NAME}"));
        let listed = secrets_api
            .list_metadata(&managed)
            .await
            .map_err(|e| Failure::new("ApiFailed", format!("cannot list the Secrets it synced: {e}")))?;
        let uid = class.metadata.uid.as_deref().unwrap_or_default();
        for secret in listed {
            let owned = secret.owner_references().iter().any(|o| o.uid == uid);
            if owned && !wanted.contains(&secret.name_any()) {
                secrets_api
                    .delete(&secret.name_any(), &DeleteParams::default())
                    .await
                    .map_err(|e| {
                        Failure::new("ApiFailed", format!("cannot delete Secret {}: {e}", secret.name_any()))
                    })?;
                tracing::info!(secret = %secret.name_any(), "deleted: no longer in secretObjects");
                outcome = Outcome::Changed;
            }
        }
    }
    if !really_changed.is_empty() {
        let names: Vec<&str> = really_changed.iter().map(String::as_str).collect();
        match crate::rollout::roll(&ctx.client, namespace, &really_changed).await {
            Ok(rolled) if !rolled.is_empty() => {
                publish(
                    ctx,
                    class,
                    EventType::Normal,
                    "Rolled",
                    format!("Secret {} changed: rolled {}", names.join(", "), rolled.join(", ")),
                )
                .await;
            }
            Ok(_) => {}
            Err(e) => problems.push(format!(
                "Secret {} changed, but its workloads were not rolled: {e}",
                names.join(", ")
            )),
        }
    }
    if outcome == Outcome::Changed {
        tracing::info!(secrets = ?wanted, "synced");
    }
    let fetched = (identity, url, config, fetcher);
    if !problems.is_empty() {
        // Retried at the interval: a foreign Secret or a bad entry does not go away by asking Key Vault again.
        return Err(Failure::new("SecretNotSynced", problems.join("; ")).permanent());
    }
    Ok((outcome, fetched))
}

fn fetcher(
    ctx: &Context,
    namespace: &str,
    class: &str,
    identity: &Identity,
    url: &str,
    config: &SyncConfig,
) -> Result<Arc<Fetcher>, Failure> {
    // The class's own fetcher while nothing it was made from changed (the credential is shared per identity anyway).
    let key = (namespace.to_owned(), class.to_owned());
    let reuse = lock(&ctx.states).get(&key).and_then(|state| {
        let (i, u, c, fetcher) = state.fetcher.as_ref()?;
        (i == identity && u == url && c == config).then(|| fetcher.clone())
    });
    if let Some(fetcher) = reuse {
        return Ok(fetcher);
    }
    let key = (namespace.to_owned(), identity.clone());
    let shared = lock(&ctx.credentials).get(&key).cloned();
    let credential = match shared {
        Some(credential) => credential,
        None => {
            let credential = identity::credential(
                &ctx.client,
                namespace,
                identity,
                ctx.settings.entra.clone(),
                ctx.metrics.token_requests.clone(),
            )
            .map_err(|e| Failure::new("InvalidIdentity", format!("cannot create the credential: {e}")))?;
            lock(&ctx.credentials).insert(key, credential.clone());
            credential
        }
    };
    let fetcher = Fetcher::new(
        config.clone(),
        url,
        credential,
        ctx.settings.keyvault.clone(),
        ctx.settings.access.verify_challenge_resource,
        ctx.settings.concurrency,
    )
    .map_err(|e| Failure::new("KeyVaultFailed", e.to_string()))?;
    Ok(Arc::new(fetcher))
}

enum Written {
    Created,
    Updated,
    Unchanged,
}

/// Writes one entry's Secret unless another owner has it; the message of an error names the Secret.
async fn write_secret(
    ctx: &Context,
    class: &DynamicObject,
    api: &Api<Secret>,
    object: &SecretObject,
    files: &BTreeMap<String, wi_vault::FileContent>,
) -> Result<Written, String> {
    let name = &object.secret_name;
    let data = secrets::data(object, files).map_err(|e| format!("Secret {name}: {e}"))?;
    let hash = secrets::content_hash(&object.secret_type, &data);
    let existing = api
        .get_opt(name)
        .await
        .map_err(|e| format!("Secret {name}: cannot read it: {e}"))?;
    let class_name = class.name_any();
    let owner = OwnerReference {
        api_version: ctx.resource.api_version.clone(),
        kind: ctx.resource.kind.clone(),
        name: class_name.clone(),
        uid: class.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    let mut labels = object.labels.clone();
    labels.insert(MANAGED_BY_LABEL.to_owned(), CONTROLLER_NAME.to_owned());
    let mut annotations = object.annotations.clone();
    annotations.insert(CONTENT_HASH_ANNOTATION.to_owned(), hash.clone());
    let mut replace = false;
    if let Some(existing) = &existing {
        let ours = existing.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(CONTROLLER_NAME)
            && existing
                .owner_references()
                .iter()
                .any(|o| o.kind == owner.kind && o.name == class_name);
        if !ours {
            let by = existing
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
                .map(|o| format!(" (it belongs to {} {})", o.kind, o.name))
                .unwrap_or_default();
            return Err(format!(
                "Secret {name} already exists and was not made by {CONTROLLER_NAME} for this class{by}: it is left \
                 untouched; delete it or choose another secretName"
            ));
        }
        let same = |want: &BTreeMap<String, String>, have: &BTreeMap<String, String>| {
            want.iter().all(|(k, v)| have.get(k) == Some(v))
        };
        let unchanged = existing.annotations().get(CONTENT_HASH_ANNOTATION) == Some(&hash)
            && same(&labels, existing.labels())
            && same(&annotations, existing.annotations())
            && existing.owner_references().iter().any(|o| o.uid == owner.uid);
        if unchanged {
            return Ok(Written::Unchanged);
        }
        // The type of a Secret cannot change: a changed `type` replaces it.
        replace = existing.type_.as_deref().unwrap_or("Opaque") != object.secret_type;
    }
    if replace {
        api.delete(name, &DeleteParams::default())
            .await
            .map_err(|e| format!("Secret {name}: cannot replace it for its new type: {e}"))?;
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: class.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some(object.secret_type.clone()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Secret::default()
    };
    let mut body = serde_json::to_value(&secret).map_err(|e| format!("Secret {name}: {e}"))?;
    body["apiVersion"] = "v1".into();
    body["kind"] = "Secret".into();
    api.patch(name, &PatchParams::apply(CONTROLLER_NAME).force(), &Patch::Apply(&body))
        .await
        .map_err(|e| format!("Secret {name}: cannot write it: {e}"))?;
    Ok(match existing {
        Some(_) => Written::Updated,
        None => Written::Created,
    })
}
