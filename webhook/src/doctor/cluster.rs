//! `doctor --cluster` and `doctor pod NAME`: the same checks over the objects read from the cluster, plus the
//! webhook itself (its MutatingWebhookConfiguration, the caBundle, ready endpoints behind its Service).

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::core::TypeMeta;
use serde_json::Value;
use wi_contract::INJECTED_ANNOTATION;

use super::{Finding, ObjectRef};
use crate::diagnostics::{Code, Severity};
use crate::input::Loaded;

/// Where to look.
#[derive(Debug, Clone)]
pub struct Scope {
    /// One namespace, or every namespace (`None`).
    pub namespace: Option<String>,
    /// The webhook's MutatingWebhookConfiguration.
    pub webhook_configuration: String,
}

/// Something the cluster would not tell, or an object doctor could not read.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The API server refused or failed.
    #[error("cannot read {what} from the cluster: {source}")]
    Api {
        /// What was asked for.
        what: String,
        /// Why.
        source: kube::Error,
    },
    /// An object read could not be turned back into JSON.
    #[error("cannot decode {what} read from the cluster: {source}")]
    Decode {
        /// Which object.
        what: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// (group, version, kind, plural, namespaced)
const RESOURCES: &[(&str, &str, &str, &str, bool)] = &[
    ("", "v1", "Namespace", "namespaces", false),
    (
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
    ),
    ("", "v1", "ServiceAccount", "serviceaccounts", true),
    (
        "secrets-store.csi.x-k8s.io",
        "v1",
        "SecretProviderClass",
        "secretproviderclasses",
        true,
    ),
    ("apps", "v1", "Deployment", "deployments", true),
    ("apps", "v1", "StatefulSet", "statefulsets", true),
    ("apps", "v1", "DaemonSet", "daemonsets", true),
    ("apps", "v1", "ReplicaSet", "replicasets", true),
    ("batch", "v1", "Job", "jobs", true),
    ("batch", "v1", "CronJob", "cronjobs", true),
    ("", "v1", "Pod", "pods", true),
];

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn to_loaded(mut object: DynamicObject, resource: &ApiResource) -> Result<Loaded, ClusterError> {
    let what = format!(
        "{} {}/{}",
        resource.kind,
        object.metadata.namespace.as_deref().unwrap_or_default(),
        object.metadata.name.as_deref().unwrap_or_default()
    );
    object.types = Some(TypeMeta {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
    });
    let mut value = serde_json::to_value(object).map_err(|source| ClusterError::Decode { what, source })?;
    // What doctor never reads, and what makes a report of a cluster heavy.
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    Ok(Loaded {
        object: value,
        source: None,
    })
}

/// Whether a controller made this object (its owner is what doctor checks).
fn controlled(object: &DynamicObject) -> bool {
    object
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|owners| owners.iter().any(|o| o.controller == Some(true)))
}

/// Every object doctor checks in `scope`: workloads without a controller, ServiceAccounts, SecretProviderClasses
/// (none when the CRD is not installed), and every Namespace and MutatingWebhookConfiguration.
pub async fn read(client: &kube::Client, scope: &Scope) -> Result<Vec<Loaded>, ClusterError> {
    let mut out = Vec::new();
    for (group, version, kind, plural, namespaced) in RESOURCES {
        let ar = resource(group, version, kind, plural);
        let api: Api<DynamicObject> = match (namespaced, &scope.namespace) {
            (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
            _ => Api::all_with(client.clone(), &ar),
        };
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            // No Secrets Store CSI driver: no classes.
            Err(kube::Error::Api(e)) if e.code == 404 && *kind == "SecretProviderClass" => continue,
            Err(source) => {
                return Err(ClusterError::Api {
                    what: (*plural).to_owned(),
                    source,
                });
            }
        };
        for object in list.items {
            if !controlled(&object) {
                out.push(to_loaded(object, &ar)?);
            }
        }
    }
    Ok(out)
}

/// One pod and what it refers to (its ServiceAccount, Namespace, SecretProviderClasses) plus the webhook
/// configurations; `None` when there is no such pod.
pub async fn read_pod(client: &kube::Client, namespace: &str, name: &str) -> Result<Option<Vec<Loaded>>, ClusterError> {
    let pods = resource("", "v1", "Pod", "pods");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &pods);
    let pod = api.get_opt(name).await.map_err(|source| ClusterError::Api {
        what: format!("pod {namespace}/{name}"),
        source,
    })?;
    let Some(pod) = pod else {
        return Ok(None);
    };
    let pod = to_loaded(pod, &pods)?;
    let account = crate::mutate::service_account_name(&pod.object).to_owned();
    let mut classes = super::csi_classes(&pod.object);
    classes.extend(crate::mutate::secret_provider_class_name(&pod.object).map(str::to_owned));
    let scope = Scope {
        namespace: Some(namespace.to_owned()),
        webhook_configuration: String::new(),
    };
    let mut out = vec![pod];
    for object in read(client, &scope).await? {
        let wanted = match object.kind() {
            "ServiceAccount" => object.name() == account,
            "Namespace" => object.name() == namespace,
            "SecretProviderClass" => classes.iter().any(|c| c == object.name()),
            "MutatingWebhookConfiguration" => true,
            _ => false,
        };
        if wanted {
            out.push(object);
        }
    }
    Ok(Some(out))
}

fn finding(code: Code, object: ObjectRef, message: String) -> Finding {
    Finding {
        code,
        severity: code.severity(),
        object,
        file: None,
        line: None,
        message,
        fix: code.fix().to_owned(),
    }
}

/// The name of Azure Workload Identity's webhook in its MutatingWebhookConfiguration (its Helm chart and the AKS
/// add-on both register it so).
const UPSTREAM_WEBHOOK: &str = "mutation.azure-workload-identity.io";

/// The webhook itself: its configuration present, each webhook's caBundle set, its Service with a ready endpoint;
/// and no Azure Workload Identity webhook registered beside it.
pub async fn check_webhook(
    client: &kube::Client,
    objects: &[Loaded],
    configuration: &str,
) -> Result<Vec<Finding>, ClusterError> {
    let object = |kind: &str, namespace: Option<&str>, name: &str| ObjectRef {
        kind: kind.to_owned(),
        namespace: namespace.map(str::to_owned),
        name: name.to_owned(),
    };
    let mut upstream = Vec::new();
    for other in objects
        .iter()
        .filter(|o| o.kind() == "MutatingWebhookConfiguration" && o.name() != configuration)
    {
        let hooks = other.object.get("webhooks").and_then(Value::as_array);
        if hooks
            .into_iter()
            .flatten()
            .any(|h| h.get("name").and_then(Value::as_str) == Some(UPSTREAM_WEBHOOK))
        {
            upstream.push(finding(
                Code::UpstreamWebhookToo,
                object("MutatingWebhookConfiguration", None, other.name()),
                format!(
                    "MutatingWebhookConfiguration {:?} registers Azure Workload Identity's webhook ({UPSTREAM_WEBHOOK}) \
                     beside {configuration:?}: on AKS it is the workload identity add-on, which AKS puts back if the \
                     configuration is deleted",
                    other.name()
                ),
            ));
        }
    }
    let mwc = objects
        .iter()
        .find(|o| o.kind() == "MutatingWebhookConfiguration" && o.name() == configuration);
    let Some(mwc) = mwc else {
        upstream.push(finding(
            Code::NoWebhookConfiguration,
            object("MutatingWebhookConfiguration", None, configuration),
            format!("MutatingWebhookConfiguration {configuration:?} does not exist"),
        ));
        return Ok(upstream);
    };
    let mut out = upstream;
    let hooks = mwc.object.get("webhooks").and_then(Value::as_array);
    let mut services = Vec::new();
    for hook in hooks.into_iter().flatten() {
        let name = hook.get("name").and_then(Value::as_str).unwrap_or_default();
        let ca = crate::mutate::at(hook, &["clientConfig", "caBundle"]).and_then(Value::as_str);
        if ca.is_none_or(|c| c.trim().is_empty()) {
            out.push(finding(
                Code::EmptyCaBundle,
                object("MutatingWebhookConfiguration", None, configuration),
                format!("webhook {name} has no clientConfig.caBundle"),
            ));
        }
        let service = crate::mutate::at(hook, &["clientConfig", "service"]);
        let field = |k: &str| {
            service
                .and_then(|s| s.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        if let (Some(ns), Some(svc)) = (field("namespace"), field("name"))
            && !services.contains(&(ns.clone(), svc.clone()))
        {
            services.push((ns, svc));
        }
    }
    let slices = resource("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices");
    for (ns, svc) in services {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &slices);
        let params = ListParams::default().labels(&format!("kubernetes.io/service-name={svc}"));
        let list = api.list(&params).await.map_err(|source| ClusterError::Api {
            what: format!("the endpoints of Service {ns}/{svc}"),
            source,
        })?;
        let ready = list.items.iter().any(|slice| {
            slice
                .data
                .get("endpoints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|e| crate::mutate::at(e, &["conditions", "ready"]).and_then(Value::as_bool) != Some(false))
        });
        if !ready {
            out.push(finding(
                Code::NoReadyEndpoints,
                object("Service", Some(&ns), &svc),
                format!("Service {ns}/{svc} of MutatingWebhookConfiguration {configuration:?} has no ready endpoint"),
            ));
        }
    }
    Ok(out)
}

/// Why a pod was or was not injected: the webhook's record, else the reason the findings give, else the labels.
pub fn verdict(pod: &Loaded, findings: &[Finding]) -> String {
    let at = |path: &[&str]| crate::mutate::at(&pod.object, path).and_then(Value::as_str);
    let name = pod.name();
    if let Some(record) = at(&["metadata", "annotations", INJECTED_ANNOTATION]) {
        return format!("pod {name} was injected by the webhook; it recorded {INJECTED_ANNOTATION}: {record}");
    }
    let blocking = findings
        .iter()
        .find(|f| f.severity == Severity::Error && matches!(f.code, Code::NotSelected | Code::NoWebhookConfiguration));
    match (blocking, at(&["metadata", "labels", wi_contract::USE_LABEL])) {
        (Some(f), _) => format!("pod {name} was not injected: {}", f.message),
        (None, Some("true")) => format!(
            "pod {name} was not injected although labelled {}: \"true\": it was created before the webhook served, \
             or while the webhook's failurePolicy was Ignore and it did not answer; delete the pod to have it \
             recreated",
            wi_contract::USE_LABEL
        ),
        (None, _) => format!(
            "pod {name} was not injected: neither the pod nor its namespace is labelled {}: \"true\"",
            wi_contract::USE_LABEL
        ),
    }
}

/// The webhook's own tenant (`WI_TENANT_ID` in the env of a Deployment in the namespace of the Service its
/// MutatingWebhookConfiguration calls, or in the ConfigMap that env comes from), so that doctor judges tenants as
/// the running webhook does. `None` when it is not there, not a UUID, or cannot be read.
pub async fn webhook_tenant(client: &kube::Client, objects: &[Loaded], configuration: &str) -> Option<String> {
    const KEY: &str = "WI_TENANT_ID";
    let mwc = objects
        .iter()
        .find(|o| o.kind() == "MutatingWebhookConfiguration" && o.name() == configuration)?;
    let namespace = mwc
        .object
        .pointer("/webhooks/0/clientConfig/service/namespace")
        .and_then(Value::as_str)?;
    let deployments = resource("apps", "v1", "Deployment", "deployments");
    let list = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &deployments)
        .list(&ListParams::default())
        .await
        .ok()?;
    let config_maps = resource("", "v1", "ConfigMap", "configmaps");
    let config_maps: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &config_maps);
    let uuid = |v: &str| uuid::Uuid::try_parse(v.trim()).is_ok().then(|| v.trim().to_owned());
    for deployment in list.items {
        let containers = deployment
            .data
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array);
        for container in containers.into_iter().flatten() {
            let env = container.get("env").and_then(Value::as_array).into_iter().flatten();
            for var in env {
                if var.get("name").and_then(Value::as_str) == Some(KEY)
                    && let Some(id) = var.get("value").and_then(Value::as_str).and_then(uuid)
                {
                    return Some(id);
                }
            }
            let sources = container.get("envFrom").and_then(Value::as_array).into_iter().flatten();
            for name in sources.filter_map(|s| crate::mutate::at(s, &["configMapRef", "name"]).and_then(Value::as_str))
            {
                let map = config_maps.get_opt(name).await.ok().flatten();
                if let Some(id) = map.and_then(|m| {
                    m.data
                        .pointer(&format!("/data/{KEY}"))
                        .and_then(Value::as_str)
                        .and_then(uuid)
                }) {
                    return Some(id);
                }
            }
        }
    }
    None
}
