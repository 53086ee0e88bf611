//! Rolling the workloads that asked for it (`workload-identity.rs/restart-on-secret-change: "true"`) when a synced
//! Secret they consume changes: their pod template gets a hash of those Secrets' contents, so that the workload
//! controller rolls it, as stakater/Reloader does. Only a real change moves the hash.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Secret};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt as _};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use wi_contract::secret_objects::consumed_secrets;
use wi_contract::{CONTENT_HASH_ANNOTATION, RESTART_ON_SECRET_CHANGE_ANNOTATION, SECRETS_HASH_ANNOTATION};

/// One workload rolled: `Kind/name`.
pub type Rolled = String;

/// Rolls the opted-in workloads of `namespace` that consume one of `changed`; returns which were patched.
pub async fn roll(
    client: &kube::Client,
    namespace: &str,
    changed: &BTreeSet<String>,
) -> Result<Vec<Rolled>, kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut hashes = BTreeMap::new();
    let mut rolled = Vec::new();
    rolled.extend(
        roll_kind::<Deployment>(client, namespace, changed, &secrets, &mut hashes, |d| {
            d.spec.as_ref().map(|s| &s.template)
        })
        .await?,
    );
    rolled.extend(
        roll_kind::<StatefulSet>(client, namespace, changed, &secrets, &mut hashes, |d| {
            d.spec.as_ref().map(|s| &s.template)
        })
        .await?,
    );
    rolled.extend(
        roll_kind::<DaemonSet>(client, namespace, changed, &secrets, &mut hashes, |d| {
            d.spec.as_ref().map(|s| &s.template)
        })
        .await?,
    );
    Ok(rolled)
}

async fn roll_kind<K>(
    client: &kube::Client,
    namespace: &str,
    changed: &BTreeSet<String>,
    secrets: &Api<Secret>,
    hashes: &mut BTreeMap<String, Option<String>>,
    template: impl Fn(&K) -> Option<&PodTemplateSpec>,
) -> Result<Vec<Rolled>, kube::Error>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let mut rolled = Vec::new();
    for workload in api.list(&ListParams::default()).await? {
        let opted_in = workload
            .annotations()
            .get(RESTART_ON_SECRET_CHANGE_ANNOTATION)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let Some(template) = template(&workload).filter(|_| opted_in) else {
            continue;
        };
        let spec = serde_json::to_value(&template.spec).unwrap_or_default();
        let consumed = consumed_secrets(&spec);
        if consumed.is_disjoint(changed) {
            continue;
        }
        // The hash of every synced Secret the workload reads, so that it moves whichever of them changed.
        let mut hash = Sha256::new();
        for name in &consumed {
            if !hashes.contains_key(name) {
                let content = secrets
                    .get_opt(name)
                    .await?
                    .and_then(|s| s.annotations().get(CONTENT_HASH_ANNOTATION).cloned());
                hashes.insert(name.clone(), content);
            }
            if let Some(Some(content)) = hashes.get(name) {
                hash.update(format!("{name}={content}\n"));
            }
        }
        let hash = hex::encode(hash.finalize());
        let current = template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(SECRETS_HASH_ANNOTATION));
        if current == Some(&hash) {
            continue;
        }
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {SECRETS_HASH_ANNOTATION: hash}}}}});
        api.patch(&workload.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        rolled.push(format!("{}/{}", K::kind(&()), workload.name_any()));
    }
    Ok(rolled)
}
