//! `wi-webhook doctor`: the mistakes that break workload identity and Key Vault delivery, found in manifests (and
//! `az` output, and a cluster) before a pod fails. Each object is cross-referenced the way admission would see it:
//! workload -> pod template -> ServiceAccount -> SecretProviderClass -> namespace labels -> webhook selectors; the
//! engine itself runs on every opted-in pod template, so everything it warns about or refuses is found here too,
//! with the same [`Code`]s.

mod azure;
pub mod cluster;
mod grants;
mod output;
mod selection;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;
use wi_contract::*;

use crate::config::{Cloud, Config};
use crate::diagnostics::{Code, Severity, Subject, Warning};
use crate::mutate::warnings::{check_class, warn_identity, warn_lookalikes};
use crate::mutate::{
    self, ClassLookup, Inputs, ServiceAccount, non_empty, pod_of, secret_provider_class_name, service_account_name,
};

pub use crate::input::{LoadError, Loaded, Source};
pub use azure::AzureInputs;
pub use output::{Format, render};

/// The object a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ObjectRef {
    /// `Deployment`, `ServiceAccount`, ..., or `ManagedIdentity`, `FederatedCredential`, `KeyVault`,
    /// `RoleAssignment` for the Azure side.
    pub kind: String,
    /// The namespace of a namespaced Kubernetes object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// One mistake found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Which mistake.
    pub code: Code,
    /// How bad (`--strict` reports warnings as errors).
    pub severity: Severity,
    /// The object at fault.
    pub object: ObjectRef,
    /// The file it was read from (`None` for objects read from the cluster).
    pub file: Option<String>,
    /// The line of the object or of the key at fault.
    pub line: Option<usize>,
    /// What is wrong, naming the key and the value.
    pub message: String,
    /// The fix, in one line.
    pub fix: String,
}

/// What doctor needs besides the objects.
#[derive(Debug, Clone)]
pub struct Options {
    /// The engine's settings (the webhook's `--tenant-id` in particular).
    pub config: Config,
    /// The cluster's service account issuer URL (`--issuer`), checked against federated credentials.
    pub issuer: Option<String>,
    /// The namespace of objects that name none (kubectl's default: `default`).
    pub default_namespace: String,
    /// Warnings are errors.
    pub strict: bool,
}

impl Default for Options {
    /// The webhook's defaults, no issuer, objects without a namespace in `default`, warnings as warnings.
    fn default() -> Self {
        Options {
            config: Config::default(),
            issuer: None,
            default_namespace: "default".to_owned(),
            strict: false,
        }
    }
}

const WORKLOAD_KINDS: &[&str] = &[
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
    "CronJob",
];

/// Pod annotations that only mean something to this webhook (or the upstream one): a pod template using them
/// expects to be injected.
const POD_KEYS: &[&str] = &[
    SECRET_PROVIDER_CLASS_ANNOTATION,
    SECRETS_DELIVERY_ANNOTATION,
    SECRETS_MOUNT_PATH_ANNOTATION,
    SECRETS_CONTAINERS_ANNOTATION,
    SKIP_CONTAINERS_ANNOTATION,
    TOKEN_EXPIRATION_ANNOTATION,
    INJECT_PROXY_SIDECAR_ANNOTATION,
];

/// Runs every check over the objects and the Azure side; findings in input order, each object's together, then
/// `webhook`'s (what [`cluster::check_webhook`] found of the webhook itself), all under `options.strict`.
pub fn check(objects: &[Loaded], azure: &AzureInputs, webhook: Vec<Finding>, options: &Options) -> Vec<Finding> {
    let doctor = Doctor::new(objects, options);
    let mut out = Findings::new(options.strict);
    let mut class_users: HashMap<(String, String), Vec<Identity>> = HashMap::new();
    for w in objects.iter().filter(|o| WORKLOAD_KINDS.contains(&o.kind())) {
        doctor.check_workload(w, &mut class_users, &mut out);
    }
    for (loaded, sa) in doctor.service_accounts.values() {
        doctor.check_service_account(loaded, sa, &mut out);
    }
    for (key, class) in &doctor.classes {
        let users = class_users
            .get(key)
            .cloned()
            .unwrap_or_else(|| vec![(None, options.config.tenant_id.clone())]);
        for identity in users {
            doctor.check_class(class, &identity, &mut out);
        }
    }
    azure_checks(&doctor, azure, options, &mut out);
    out.name_subscriptions(&azure.subscriptions());
    let mut findings = out.sorted(objects);
    findings.extend(webhook.into_iter().map(|mut f| {
        if options.strict {
            f.severity = Severity::Error;
        }
        f
    }));
    findings
}

/// Client id and tenant id a pod signs in with.
type Identity = (Option<String>, Option<String>);

struct Doctor<'a> {
    options: &'a Options,
    service_accounts: BTreeMap<(String, String), (&'a Loaded, ServiceAccount)>,
    namespaces: HashMap<String, BTreeMap<String, String>>,
    classes: BTreeMap<(String, String), &'a Loaded>,
    webhooks: Vec<&'a Loaded>,
    /// Secrets among the objects read, and those a class's `secretObjects` makes: (namespace, name).
    secrets: BTreeSet<(String, String)>,
}

impl<'a> Doctor<'a> {
    fn new(objects: &'a [Loaded], options: &'a Options) -> Self {
        let mut doctor = Doctor {
            options,
            service_accounts: BTreeMap::new(),
            namespaces: HashMap::new(),
            classes: BTreeMap::new(),
            webhooks: Vec::new(),
            secrets: BTreeSet::new(),
        };
        for o in objects {
            let key = (doctor.namespace_of(o), o.name().to_owned());
            match o.kind() {
                "ServiceAccount" => {
                    if let Ok(mut sa) = ServiceAccount::from_object(&o.object) {
                        sa.namespace = key.0.clone();
                        doctor.service_accounts.insert(key, (o, sa));
                    }
                }
                "Namespace" => {
                    let labels = mutate::namespace_labels(&o.object).unwrap_or_default();
                    doctor.namespaces.insert(key.1, labels);
                }
                "SecretProviderClass" => {
                    for object in wi_contract::secret_objects::parse(&o.object).into_iter().flatten() {
                        doctor.secrets.insert((key.0.clone(), object.secret_name));
                    }
                    doctor.classes.insert(key, o);
                }
                "Secret" => {
                    doctor.secrets.insert(key);
                }
                "MutatingWebhookConfiguration" => doctor.webhooks.push(o),
                _ => {}
            }
        }
        doctor
    }

    fn namespace_of(&self, o: &Loaded) -> String {
        o.object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or(&self.options.default_namespace)
            .to_owned()
    }

    /// A namespace's labels as the API server has them: with `kubernetes.io/metadata.name`.
    fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        let mut labels = self.namespaces.get(namespace).cloned().unwrap_or_default();
        labels.insert("kubernetes.io/metadata.name".to_owned(), namespace.to_owned());
        labels
    }

    fn check_workload(
        &self,
        w: &Loaded,
        class_users: &mut HashMap<(String, String), Vec<Identity>>,
        out: &mut Findings,
    ) {
        let at = |key: Option<&str>| Site::of(w, object_ref(w, &self.namespace_of(w)), key);
        let pod = match pod_of(w.object.clone()) {
            Ok(pod) => pod,
            Err(message) => return out.push(Code::MalformedPod, at(None), message, None),
        };
        let namespace = self.namespace_of(w);
        let ns_labels = self.namespace_labels(&namespace);
        let opt_in = mutate::opt_in(&pod, Some(&ns_labels));
        for warning in &opt_in.warnings {
            out.push(warning.code, at(Some(USE_LABEL)), warning.message.clone(), None);
        }
        let template_label = mutate::at(&pod, &["metadata", "labels", USE_LABEL]).and_then(Value::as_str);
        let own_label = mutate::at(&w.object, &["metadata", "labels", USE_LABEL]).and_then(Value::as_str);
        if w.kind() != "Pod" && own_label == Some("true") && template_label.is_none() {
            out.push(
                Code::UseLabelOnWorkload,
                at(Some(USE_LABEL)),
                format!(
                    "the {} is labelled {USE_LABEL}: \"true\" but its pod template is not",
                    w.kind()
                ),
                Some(format!(
                    "spec.template.metadata.labels: {{{USE_LABEL}: \"true\"}} (the label on the {} itself does nothing)",
                    w.kind()
                )),
            );
        }

        let sa_name = service_account_name(&pod);
        let found_sa = self.service_accounts.get(&(namespace.clone(), sa_name.to_owned()));
        let sa = match found_sa {
            Some((_, sa)) => sa.clone(),
            None => ServiceAccount {
                name: sa_name.to_owned(),
                namespace: namespace.clone(),
                ..ServiceAccount::default()
            },
        };
        let client_id = non_empty(sa.annotations.get(CLIENT_ID_ANNOTATION)).map(str::to_owned);
        let tenant_id = non_empty(sa.annotations.get(TENANT_ID_ANNOTATION))
            .map(str::to_owned)
            .or(self.options.config.tenant_id.clone());
        let identity: Identity = (client_id.clone(), tenant_id);
        let mut classes: Vec<String> = csi_classes(&pod);
        classes.extend(secret_provider_class_name(&pod).map(str::to_owned));
        for class in &classes {
            class_users
                .entry((namespace.clone(), class.clone()))
                .or_default()
                .push(identity.clone());
        }
        // A class named by the pod's own CSI volume must be in the pod's namespace, opted in or not: the driver
        // mounts it either way. (The annotation's class is the engine's WI401, with the same fix.)
        for class in csi_classes(&pod) {
            if !self.classes.contains_key(&(namespace.clone(), class.clone())) {
                out.push(
                    Code::ClassNotFound,
                    at(Some("secretProviderClass")),
                    format!(
                        "the pod's CSI volume names SecretProviderClass {class:?}, which is not in namespace \
                         {namespace:?}: the driver reads classes only from the pod's own namespace"
                    ),
                    Some(self.class_elsewhere_fix(&class, &namespace)),
                );
            }
        }

        // A Secret the pod reads that nothing makes: for the pods of this system, it is expected from Key Vault.
        if opt_in.opted_in || !classes.is_empty() {
            let spec = mutate::at(&pod, &["spec"]).cloned().unwrap_or_default();
            for secret in wi_contract::secret_objects::consumed_secrets(&spec) {
                if !self.secrets.contains(&(namespace.clone(), secret.clone())) {
                    out.push(
                        Code::SecretNotSynced,
                        at(Some(&secret)),
                        format!(
                            "the pod reads Secret {namespace}/{secret}, which no SecretProviderClass's secretObjects \
                             makes and which is not among the objects read"
                        ),
                        Some(format!(
                            "list it in spec.secretObjects of a class in {namespace} annotated \
                             {SYNC_SERVICE_ACCOUNT_ANNOTATION}: <ServiceAccount> (wi-controller syncs it from Key \
                             Vault), or create Secret {secret}"
                        )),
                    );
                }
            }
        }

        // A pod that names no ServiceAccount and mounts a workload-identity class through the CSI driver, without
        // opting in: the driver exchanges the token of `default`, shared by every such pod of the namespace.
        let names_no_account = ["serviceAccountName", "serviceAccount"].iter().all(|key| {
            mutate::at(&pod, &["spec", key])
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        });
        if !opt_in.opted_in && names_no_account {
            let with_client_id = csi_classes(&pod).into_iter().find_map(|name| {
                let class = self.classes.get(&(namespace.clone(), name.clone()))?;
                class_param(class, "clientID").map(|id| (name, id.to_owned()))
            });
            if let Some((class, id)) = with_client_id {
                out.push(
                    Code::NoClientId,
                    at(Some("spec:")),
                    format!(
                        "the pod names no serviceAccountName and mounts SecretProviderClass {class:?} (clientID {id}): \
                         the CSI driver exchanges the token of ServiceAccount {namespace}/default, which identity {id} \
                         would have to trust for every pod of the namespace that names no account"
                    ),
                    Some(format!(
                        "{}.serviceAccountName: <a ServiceAccount of its own, annotated {CLIENT_ID_ANNOTATION}: {id}, \
                         with a federated credential for it>",
                        match w.kind() {
                            "Pod" => "spec",
                            "CronJob" => "spec.jobTemplate.spec.template.spec",
                            _ => "spec.template.spec",
                        }
                    )),
                );
            }
        }

        if !opt_in.opted_in {
            if template_label.is_some() || own_label == Some("true") {
                return; // opted out on purpose, or a label reported above
            }
            let mut reasons = Vec::new();
            if let Some(id) = &client_id {
                reasons.push(format!("{sa} has {CLIENT_ID_ANNOTATION}: {id}"));
            }
            let annotations = mutate::at(&pod, &["metadata", "annotations"]).and_then(Value::as_object);
            for key in POD_KEYS {
                if annotations.is_some_and(|a| a.contains_key(*key)) {
                    reasons.push(format!("it has annotation {key}"));
                }
            }
            if !reasons.is_empty() {
                let (what, labels) = match w.kind() {
                    "Pod" => ("the pod", "metadata.labels"),
                    "CronJob" => ("the pod template", "spec.jobTemplate.spec.template.metadata.labels"),
                    _ => ("the pod template", "spec.template.metadata.labels"),
                };
                out.push(
                    Code::NotOptedIn,
                    at(Some("template:")),
                    format!(
                        "{what} is not labelled {USE_LABEL}: \"true\" (nor its namespace {namespace:?}), yet {}",
                        reasons.join("; ")
                    ),
                    Some(format!("{labels}: {{{USE_LABEL}: \"true\"}}")),
                );
            }
            return;
        }

        if let Some(why) = selection::not_sent(&self.webhooks, &ns_labels, &pod) {
            out.push(Code::NotSelected, at(None), why, None);
        }
        // A pod that names no ServiceAccount runs as `default`, which every namespace has: not a missing account,
        // but one without an identity, shared by every such pod of the namespace.
        let names_none = names_no_account;
        let spec_path = match w.kind() {
            "Pod" => "spec",
            "CronJob" => "spec.jobTemplate.spec.template.spec",
            _ => "spec.template.spec",
        };
        let default_fix = format!(
            "{spec_path}.serviceAccountName: <a ServiceAccount of its own, annotated {CLIENT_ID_ANNOTATION}: \
             <the identity's clientId>> (the default ServiceAccount is shared by every pod of namespace {namespace})"
        );
        if names_none && client_id.is_none() {
            out.push(
                Code::NoClientId,
                at(Some("spec:")),
                format!(
                    "the pod names no serviceAccountName, so it runs as ServiceAccount {namespace}/default, which has \
                     no {CLIENT_ID_ANNOTATION}: AZURE_CLIENT_ID is not injected"
                ),
                Some(default_fix.clone()),
            );
        } else if found_sa.is_none() {
            out.push(
                Code::ServiceAccountMissing,
                at(Some("serviceAccountName")),
                format!("{sa} is not among the objects read"),
                Some(format!(
                    "add {{apiVersion: v1, kind: ServiceAccount, metadata: {{name: {sa_name}, namespace: {namespace}, \
                     annotations: {{{CLIENT_ID_ANNOTATION}: <the identity's clientId>}}}}}}"
                )),
            );
        }
        let class = secret_provider_class_name(&pod)
            .and_then(|name| self.classes.get(&(namespace.clone(), name.to_owned())))
            .map(|c| &c.object);
        let inputs = Inputs {
            namespace_labels: Some(&ns_labels),
            service_account: &sa,
            secret_provider_class: ClassLookup::from(class),
        };
        match mutate::mutate_with(&pod, opt_in, &inputs, &self.options.config) {
            Ok(mutation) => {
                for warning in mutation.warnings {
                    let sa_codes = [Code::NoClientId, Code::NoTenant];
                    if (found_sa.is_none() || names_none) && warning.code == Code::NoClientId {
                        continue; // the missing ServiceAccount, or the default one, is the finding
                    }
                    if found_sa.is_none() && sa_codes.contains(&warning.code) {
                        continue;
                    }
                    let hint = classes
                        .iter()
                        .find_map(|c| self.classes.get(&(namespace.clone(), c.clone())))
                        .copied();
                    self.push_engine_warning(w, &namespace, found_sa.map(|(l, _)| *l), hint, &warning, out);
                }
            }
            Err(denial) => out.push(denial.code(), at(key_of(denial.code())), denial.to_string(), None),
        }
    }

    /// An engine warning, on the object it is about: the workload, its ServiceAccount or its class. `class` (the
    /// one the workload uses, when read) gives the ids a fix can paste.
    fn push_engine_warning(
        &self,
        w: &Loaded,
        namespace: &str,
        sa: Option<&Loaded>,
        class: Option<&Loaded>,
        warning: &Warning,
        out: &mut Findings,
    ) {
        // An object that is not among those read (a missing class, say): the finding goes on the workload.
        let on = match &warning.subject {
            Subject::ServiceAccount => sa,
            Subject::SecretProviderClass(name) => self.classes.get(&(namespace.to_owned(), name.clone())).copied(),
            Subject::Pod => None,
        }
        .unwrap_or(w);
        let site = Site::of(on, object_ref(on, namespace), key_of(warning.code));
        let param = |key: &str| class.and_then(|c| class_param(c, key));
        let annotate = |key: &str, value: String| {
            sa.map(|sa| {
                format!(
                    "kubectl annotate serviceaccount -n {namespace} {} {key}={value}",
                    sa.name()
                )
            })
        };
        let fix = match (&warning.subject, warning.code) {
            (Subject::SecretProviderClass(name), Code::ClassNotFound) => {
                Some(self.class_elsewhere_fix(name, namespace))
            }
            (Subject::ServiceAccount, Code::NoClientId) => annotate(
                CLIENT_ID_ANNOTATION,
                param("clientID").map_or_else(
                    || "\"$(az identity show -g RG -n IDENTITY --query clientId -o tsv)\"".to_owned(),
                    str::to_owned,
                ),
            ),
            (Subject::ServiceAccount, Code::NoTenant) => {
                let known = param("tenantId").or_else(|| param("tenantID"));
                let tenant = known.map_or_else(
                    || "\"$(az account show --query tenantId -o tsv)\"".to_owned(),
                    str::to_owned,
                );
                let everyone = known.map_or_else(
                    || "WI_TENANT_ID in manifests/base/config.env".to_owned(),
                    |t| format!("WI_TENANT_ID={t} in manifests/base/config.env"),
                );
                annotate(TENANT_ID_ANNOTATION, tenant)
                    .map(|command| format!("{command} (or, for every pod, {everyone})"))
            }
            _ => None,
        };
        out.push(warning.code, site, warning.message.clone(), fix);
    }

    /// The fix for a class not in `namespace`: where it is, when it is among the objects read in other namespaces.
    fn class_elsewhere_fix(&self, name: &str, namespace: &str) -> String {
        let elsewhere: Vec<&str> = self
            .classes
            .keys()
            .filter(|(ns, class)| class == name && ns != namespace)
            .map(|(ns, _)| ns.as_str())
            .collect();
        match elsewhere.as_slice() {
            [] => format!(
                "create SecretProviderClass {name} in namespace {namespace} (kubectl get secretproviderclass -A shows \
                 where the classes are), or fix the name"
            ),
            found => format!(
                "SecretProviderClass {name} is in namespace {}: set its metadata.namespace to {namespace} (a copy \
                 per namespace), or run the workload in {}",
                found.join(", "),
                found[0]
            ),
        }
    }

    fn check_service_account(&self, loaded: &Loaded, sa: &ServiceAccount, out: &mut Findings) {
        let client_id = non_empty(sa.annotations.get(CLIENT_ID_ANNOTATION));
        let tenant_id = non_empty(sa.annotations.get(TENANT_ID_ANNOTATION));
        let mut warnings = Vec::new();
        // Only what is wrong on the account itself: a missing client id matters only to pods that opt in.
        warn_identity(sa, client_id, tenant_id, &mut warnings);
        warnings
            .retain(|w| (w.code == Code::ClientIdNotUuid) || (w.code == Code::TenantIdNotUuid && tenant_id.is_some()));
        warn_lookalikes(&BTreeMap::new(), &BTreeMap::new(), sa, &mut warnings);
        let site = |code| Site::of(loaded, object_ref(loaded, &sa.namespace), key_of(code));
        for warning in warnings {
            out.push(warning.code, site(warning.code), warning.message, None);
        }
        // The engine's own reading of the lifetime, as for a pod without the annotation.
        if let Err(denial) = mutate::token_expiration(&BTreeMap::new(), sa) {
            out.push(denial.code(), site(denial.code()), denial.to_string(), None);
        }
    }

    fn check_class(&self, loaded: &Loaded, identity: &Identity, out: &mut Findings) {
        let namespace = self.namespace_of(loaded);
        let mut warnings = Vec::new();
        check_class(
            loaded.name(),
            &loaded.object,
            (identity.0.as_deref(), identity.1.as_deref()),
            true,
            &mut warnings,
        );
        for warning in warnings {
            let site = Site::of(loaded, object_ref(loaded, &namespace), key_of(warning.code));
            let fix = class_fix(warning.code, identity);
            out.push(warning.code, site, warning.message, fix);
        }
        let entries = wi_contract::secret_objects::parse(&loaded.object);
        let site = || {
            Site::of(
                loaded,
                object_ref(loaded, &namespace),
                key_of(Code::InvalidSecretObjects),
            )
        };
        for error in entries.iter().filter_map(|e| e.as_ref().err()) {
            out.push(
                Code::InvalidSecretObjects,
                site(),
                format!("SecretProviderClass {:?}: {error}", loaded.name()),
                None,
            );
        }
        let annotated = loaded
            .object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(SYNC_SERVICE_ACCOUNT_ANNOTATION))
            .is_some();
        if annotated && entries.is_empty() {
            out.push(
                Code::InvalidSecretObjects,
                Site::of(
                    loaded,
                    object_ref(loaded, &namespace),
                    Some(SYNC_SERVICE_ACCOUNT_ANNOTATION),
                ),
                format!(
                    "SecretProviderClass {:?} is annotated {SYNC_SERVICE_ACCOUNT_ANNOTATION} but has no \
                     spec.secretObjects: there is nothing to sync",
                    loaded.name()
                ),
                Some(
                    "spec.secretObjects: [{secretName: NAME, type: Opaque, data: [{objectName: OBJECT, key: KEY}]}]"
                        .to_owned(),
                ),
            );
        }
        if let Some(name) = class_param(loaded, "cloudName")
            && let Err(why) = provider_cloud(name)
        {
            let site = Site::of(loaded, object_ref(loaded, &namespace), Some("cloudName"));
            out.push(
                Code::UnknownCloudName,
                site,
                format!("SecretProviderClass {:?}: cloudName {name:?} {why}", loaded.name()),
                Some("parameters: {cloudName: \"AzurePublicCloud\"}".to_owned()),
            );
        }
    }
}

/// The cloud a class's `cloudName` names, as the Azure provider reads it (go-autorest's environment names, any case;
/// empty for the public cloud): `None` for Azure Stack, whose endpoints come from a file; why not, otherwise.
fn provider_cloud(name: &str) -> Result<Option<Cloud>, &'static str> {
    match name.trim().to_ascii_uppercase().as_str() {
        "" | "AZUREPUBLICCLOUD" | "AZURECLOUD" => Ok(Some(Cloud::Public)),
        "AZUREUSGOVERNMENTCLOUD" | "AZUREUSGOVERNMENT" => Ok(Some(Cloud::UsGovernment)),
        "AZURECHINACLOUD" => Ok(Some(Cloud::China)),
        "AZURESTACKCLOUD" => Ok(None),
        "AZUREGERMANCLOUD" => Err("is Azure Germany, closed in 2021"),
        _ => Err(
            "is not a cloud the Azure provider knows: AzurePublicCloud (the default), AzureUSGovernmentCloud, \
             AzureChinaCloud or AzureStackCloud",
        ),
    }
}

/// WI413: a class whose `cloudName` is not the cloud of the vault it names, by the vault URI's DNS suffix.
fn check_vault_cloud(doctor: &Doctor<'_>, vault: &azure::Vault, out: &mut Findings) {
    let Some(uri) = vault.properties.vault_uri.as_deref() else {
        return;
    };
    let host = uri
        .trim_start_matches("https://")
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    let vault_cloud = [Cloud::Public, Cloud::UsGovernment, Cloud::China]
        .into_iter()
        .find(|c| {
            c.key_vault_suffix()
                .is_some_and(|s| host.to_ascii_lowercase().ends_with(&format!(".{s}")))
        });
    let Some(vault_cloud) = vault_cloud else {
        return; // Azure Stack, or a vault URI doctor cannot place
    };
    for ((namespace, _), class) in &doctor.classes {
        if !class_param(class, "keyvaultName").is_some_and(|v| v.eq_ignore_ascii_case(&vault.name)) {
            continue;
        }
        let name = class_param(class, "cloudName").unwrap_or_default();
        let Ok(Some(class_cloud)) = provider_cloud(name) else {
            continue; // unknown names are WI412; Azure Stack's suffix is not known
        };
        if class_cloud != vault_cloud {
            let site = Site::of(class, object_ref(class, namespace), Some("cloudName"));
            out.push(
                Code::CloudNameMismatch,
                site,
                format!(
                    "SecretProviderClass {:?} reads vault {} as {} (cloudName {:?}), but the vault is {uri} in {}",
                    class.name(),
                    vault.name,
                    class_cloud,
                    name,
                    vault_cloud
                ),
                Some(format!("parameters: {{cloudName: \"{vault_cloud}\"}}")),
            );
        }
    }
}

/// The corrected parameters of a class, when the identity of the pods that use it is known.
fn class_fix(code: Code, (client_id, tenant_id): &Identity) -> Option<String> {
    match (code, client_id, tenant_id) {
        (Code::NodeIdentity, Some(id), _) => Some(format!(
            "parameters: {{useVMManagedIdentity: \"false\", clientID: \"{id}\"}}, and remove userAssignedIdentityID"
        )),
        (Code::PodIdentity, Some(id), _) => {
            Some(format!("parameters: {{usePodIdentity: \"false\", clientID: \"{id}\"}}"))
        }
        (Code::ClassWithoutClientId | Code::ClientIdMismatch, Some(id), _) => {
            Some(format!("parameters: {{clientID: \"{id}\"}}"))
        }
        (Code::TenantMismatch, _, Some(tenant)) => Some(format!("parameters: {{tenantId: \"{tenant}\"}}")),
        _ => None,
    }
}

/// Where a finding points.
struct Site {
    object: ObjectRef,
    file: Option<String>,
    line: Option<usize>,
}

impl Site {
    fn of(loaded: &Loaded, object: ObjectRef, key: Option<&str>) -> Self {
        let source = loaded.source.as_ref();
        Site {
            object,
            file: source.map(|s| s.file.clone()),
            line: source.map(|s| key.map_or(s.line, |k| s.line_of(k))),
        }
    }
}

/// The findings so far; the same mistake found twice (by the engine and by doctor's own pass) is kept once.
struct Findings {
    strict: bool,
    list: Vec<Finding>,
    /// Each finding's place in `list`, by what makes it the same.
    seen: HashMap<(Code, ObjectRef, String), usize>,
}

impl Findings {
    fn new(strict: bool) -> Self {
        Findings {
            strict,
            list: Vec::new(),
            seen: HashMap::new(),
        }
    }

    /// Adds a finding; one found again keeps its first place and takes the more specific fix.
    fn push(&mut self, code: Code, site: Site, message: String, fix: Option<String>) {
        let key = (code, site.object.clone(), message.clone());
        if let Some(&index) = self.seen.get(&key) {
            if let Some(fix) = fix {
                self.list[index].fix = fix;
            }
            return;
        }
        self.seen.insert(key, self.list.len());
        let severity = match self.strict {
            true => Severity::Error,
            false => code.severity(),
        };
        self.list.push(Finding {
            code,
            severity,
            object: site.object,
            file: site.file,
            line: site.line,
            message,
            fix: fix.unwrap_or_else(|| code.fix().to_owned()),
        });
    }

    /// Drops the findings of `code` on `object`: a finding that knows more (the identity's own tenant, from `az`)
    /// replaces what the engine guessed about the same setting, so that one mistake is reported once.
    fn supersede(&mut self, code: Code, object: &ObjectRef) {
        self.list.retain(|f| !(f.code == code && f.object == *object));
        self.seen = self
            .list
            .iter()
            .enumerate()
            .map(|(i, f)| ((f.code, f.object.clone(), f.message.clone()), i))
            .collect();
    }

    /// Says so when a tenant a WI410 names is a subscription id that the `az` output shows: the usual mix-up.
    fn name_subscriptions(&mut self, subscriptions: &BTreeSet<String>) {
        for finding in self.list.iter_mut().filter(|f| f.code == Code::TenantMismatch) {
            if let Some(id) = subscriptions.iter().find(|id| finding.message.contains(id.as_str())) {
                finding.message.push_str(&format!(
                    " ({id} is the id of a subscription in the az output, not of a tenant: az account show \
                     --subscription {id} --query tenantId -o tsv prints its tenant)"
                ));
            }
        }
    }

    /// In the order the files were read (the Azure side last), then by line, object and code.
    fn sorted(mut self, objects: &[Loaded]) -> Vec<Finding> {
        let mut files: Vec<&str> = Vec::new();
        for source in objects.iter().filter_map(|o| o.source.as_ref()) {
            if !files.contains(&source.file.as_str()) {
                files.push(&source.file);
            }
        }
        let rank = |f: &Finding| {
            let file = f.file.as_deref();
            let position = file.and_then(|file| files.iter().position(|seen| *seen == file));
            (
                position.is_none(),
                position,
                file.map(str::to_owned),
                f.line,
                f.object.clone(),
                f.code,
            )
        };
        self.list.sort_by_cached_key(rank);
        self.list
    }
}

fn object_ref(o: &Loaded, namespace: &str) -> ObjectRef {
    let cluster_scoped = ["Namespace", "MutatingWebhookConfiguration"].contains(&o.kind());
    ObjectRef {
        kind: o.kind().to_owned(),
        namespace: (!cluster_scoped).then(|| namespace.to_owned()),
        name: o.name().to_owned(),
    }
}

/// A parameter of a SecretProviderClass, trimmed.
fn class_param<'a>(class: &'a Loaded, key: &str) -> Option<&'a str> {
    mutate::at(&class.object, &["spec", "parameters", key])
        .and_then(Value::as_str)
        .map(str::trim)
}

/// Classes a pod template mounts with the CSI driver directly.
pub(crate) fn csi_classes(pod: &Value) -> Vec<String> {
    let volumes = mutate::at(pod, &["spec", "volumes"]).and_then(Value::as_array);
    volumes
        .into_iter()
        .flatten()
        .filter(|v| mutate::at(v, &["csi", "driver"]).and_then(Value::as_str) == Some(CSI_DRIVER))
        .filter_map(|v| mutate::at(v, &["csi", "volumeAttributes", "secretProviderClass"]).and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

/// The key whose line a finding of `code` points at.
fn key_of(code: Code) -> Option<&'static str> {
    Some(match code {
        Code::NoClientId | Code::NoTenant => "metadata:",
        Code::ClientIdNotUuid | Code::PrincipalIdAsClientId => CLIENT_ID_ANNOTATION,
        Code::TenantIdNotUuid => TENANT_ID_ANNOTATION,
        Code::TokenExpiration => TOKEN_EXPIRATION_ANNOTATION,
        Code::ProviderNotAzure => "provider:",
        Code::NodeIdentity => "useVMManagedIdentity",
        Code::PodIdentity => "usePodIdentity",
        Code::ClassWithoutClientId => "parameters:",
        Code::ClientIdMismatch => "clientID",
        Code::InvalidVaultName => "keyvaultName",
        Code::InvalidObjects => "objects",
        Code::UnknownCloudName | Code::CloudNameMismatch => "cloudName",
        Code::TenantMismatch => "tenant",
        Code::ClassNotFound | Code::SidecarRefusesClass => SECRET_PROVIDER_CLASS_ANNOTATION,
        Code::UnknownContainer => "containers",
        Code::SecretObjectsNotSynced | Code::InvalidSecretObjects => "secretObjects",
        _ => return None,
    })
}

const AUDIENCE: &str = DEFAULT_AUDIENCE;

/// Where a finding about an object of the Azure side points: the object, and the file and line it was read from.
fn az_site(loaded: &Loaded, kind: &str, name: &str) -> Site {
    Site {
        object: ObjectRef {
            kind: kind.to_owned(),
            namespace: None,
            name: name.to_owned(),
        },
        file: loaded.source.as_ref().map(|s| s.file.clone()),
        line: loaded.source.as_ref().map(|s| s.line),
    }
}

/// ` -g RG` for the resource group an ARM id names (`.../resourceGroups/RG/...`, any case), or nothing: the
/// resource group argument of an `az` command.
fn group_flag(id: &str) -> String {
    let lower = id.to_ascii_lowercase();
    lower
        .find("/resourcegroups/")
        .map(|at| &id[at + "/resourcegroups/".len()..])
        .and_then(|rest| rest.split('/').next())
        .filter(|g| !g.is_empty())
        .map(|g| format!(" -g {g}"))
        .unwrap_or_default()
}

/// Ids as Azure compares them: case-insensitive, surrounding blanks ignored.
fn same(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

fn azure_checks(doctor: &Doctor<'_>, azure: &AzureInputs, options: &Options, out: &mut Findings) {
    for (identity, identity_loaded) in &azure.identities {
        // The ServiceAccounts that use this identity.
        let users: Vec<&(&Loaded, ServiceAccount)> = doctor
            .service_accounts
            .values()
            .filter(|(_, sa)| {
                non_empty(sa.annotations.get(CLIENT_ID_ANNOTATION)).is_some_and(|id| same(id, &identity.client_id))
            })
            .collect();
        for (sa_loaded, sa) in doctor.service_accounts.values() {
            if non_empty(sa.annotations.get(CLIENT_ID_ANNOTATION)).is_some_and(|id| same(id, &identity.principal_id)) {
                out.push(
                    Code::PrincipalIdAsClientId,
                    Site::of(
                        sa_loaded,
                        object_ref(sa_loaded, &sa.namespace),
                        Some(CLIENT_ID_ANNOTATION),
                    ),
                    format!(
                        "{sa}: {CLIENT_ID_ANNOTATION} is the principal (object) id of managed identity {}; its client \
                         id is {}",
                        identity.name, identity.client_id
                    ),
                    Some(format!("{CLIENT_ID_ANNOTATION}: {}", identity.client_id)),
                );
            }
        }
        let credentials: Vec<_> = azure
            .federated_credentials
            .iter()
            .filter(|(fc, _)| {
                fc.identity_name()
                    .map_or(azure.identities.len() == 1, |n| same(n, &identity.name))
            })
            .collect();
        let identity_group = group_flag(
            identity_loaded
                .object
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        // Azure allows 20 federated credentials per identity (Azure/azure-workload-identity #575).
        if credentials.len() >= 18 {
            out.push(
                Code::FederatedCredentialLimit,
                az_site(identity_loaded, "ManagedIdentity", &identity.name),
                format!(
                    "managed identity {} has {} federated credentials of the 20 Azure allows; one flexible \
                     credential (claimsMatchingExpression: claims['sub'] matches 'system:serviceaccount:*:NAME') can \
                     stand for many",
                    identity.name,
                    credentials.len()
                ),
                Some(format!(
                    "federate further ServiceAccounts with a second identity: az identity create{identity_group} -n {}-2",
                    identity.name
                )),
            );
        }
        let subject_of = |sa: &ServiceAccount| format!("system:serviceaccount:{}:{}", sa.namespace, sa.name);
        // One finding per mistake: a credential whose subject names no user of the identity (a wrong namespace, a
        // typo) is the credential a user without one is missing. Each such credential is reported (WI502) with the
        // subject of the next user that lacks one; only the users left over are reported missing (WI501).
        let wrong: Vec<&azure::FederatedCredential> = if users.is_empty() {
            Vec::new()
        } else {
            credentials
                .iter()
                .map(|(fc, _)| fc)
                .filter(|fc| {
                    users
                        .iter()
                        .all(|(_, sa)| fc.matches_subject(&subject_of(sa)) == Some(false))
                })
                .collect()
        };
        // A flexible credential doctor cannot evaluate may match: never a false WI501.
        let lacking: Vec<&(&Loaded, ServiceAccount)> = users
            .iter()
            .filter(|(_, sa)| {
                !azure.federated_credentials.is_empty()
                    && !credentials
                        .iter()
                        .any(|(fc, _)| fc.matches_subject(&subject_of(sa)) != Some(false))
            })
            .copied()
            .collect();
        let mended_by: HashMap<&str, String> = wrong
            .iter()
            .zip(&lacking)
            .map(|(fc, (_, sa))| (fc.name.as_str(), subject_of(sa)))
            .collect();
        for (sa_loaded, sa) in lacking.iter().skip(wrong.len()) {
            out.push(
                Code::FederatedCredentialMissing,
                Site::of(
                    sa_loaded,
                    object_ref(sa_loaded, &sa.namespace),
                    Some(CLIENT_ID_ANNOTATION),
                ),
                format!(
                    "no federated credential of managed identity {} has subject {}",
                    identity.name,
                    subject_of(sa)
                ),
                Some(format!(
                    "az identity federated-credential create{identity_group} --identity-name {} -n {}-{} \
                     --issuer {} --subject {} --audiences {AUDIENCE}",
                    identity.name,
                    sa.namespace,
                    sa.name,
                    options
                        .issuer
                        .as_deref()
                        .unwrap_or("\"$(az aks show -g RG -n CLUSTER --query oidcIssuerProfile.issuerUrl -o tsv)\""),
                    subject_of(sa)
                )),
            );
        }
        // The command that mends one setting of a credential, with its resource group when its id names one.
        let update = |fc: &azure::FederatedCredential| {
            format!(
                "az identity federated-credential update{} --identity-name {} -n {}",
                group_flag(&fc.id),
                identity.name,
                fc.name
            )
        };
        for (fc, fc_loaded) in &credentials {
            let site = || {
                az_site(
                    fc_loaded,
                    "FederatedCredential",
                    &format!("{}/{}", identity.name, fc.name),
                )
            };
            if wrong.iter().any(|w| w.name == fc.name) {
                let wanted: Vec<String> = users.iter().map(|(_, sa)| subject_of(sa)).collect();
                // The subject of a user that has no credential, else of the first user.
                let subject = mended_by.get(fc.name.as_str()).unwrap_or(&wanted[0]);
                out.push(
                    Code::FederatedSubject,
                    site(),
                    format!(
                        "{} {:?} matches no ServiceAccount that uses managed identity {} ({})",
                        if fc.subject.is_some() { "subject" } else { "expression" },
                        fc.matching(),
                        identity.name,
                        wanted.join(", ")
                    ),
                    Some(format!("{} --subject {subject}", update(fc))),
                );
            }
            if let Some(issuer) = &options.issuer
                && fc.issuer != *issuer
            {
                let slash = fc.issuer.trim_end_matches('/') == issuer.trim_end_matches('/');
                out.push(
                    Code::FederatedIssuer,
                    site(),
                    format!(
                        "issuer {:?} is not the cluster's {issuer:?}{}",
                        fc.issuer,
                        if slash {
                            " (Entra ID compares them exactly, trailing slash included)"
                        } else {
                            ""
                        }
                    ),
                    Some(format!("{} --issuer {issuer}", update(fc))),
                );
            }
            if fc.audiences != [AUDIENCE] {
                out.push(
                    Code::FederatedAudience,
                    site(),
                    format!(
                        "audiences {:?}: the injected token's audience is {AUDIENCE}",
                        fc.audiences
                    ),
                    Some(format!("{} --audiences {AUDIENCE}", update(fc))),
                );
            }
        }
    }
    // A class signing in as an identity of another tenant.
    for class in doctor.classes.values() {
        let param = |k: &str| class_param(class, k);
        let (Some(client_id), Some(tenant)) = (param("clientID"), param("tenantId").or_else(|| param("tenantID")))
        else {
            continue;
        };
        for (identity, _) in &azure.identities {
            if let Some(home) = &identity.tenant_id
                && same(client_id, &identity.client_id)
                && !same(tenant, home)
            {
                let namespace = doctor.namespace_of(class);
                let site = Site::of(class, object_ref(class, &namespace), key_of(Code::TenantMismatch));
                out.supersede(Code::TenantMismatch, &site.object);
                out.push(
                    Code::TenantMismatch,
                    site,
                    format!(
                        "SecretProviderClass {:?} tenantId {tenant} is not the tenant of managed identity {} ({home})",
                        class.name(),
                        identity.name
                    ),
                    Some(format!("parameters: {{tenantId: \"{home}\"}}")),
                );
            }
        }
    }
    // Key Vault grants: each vault against the identities meant to read it (named by a class for that vault, or
    // every identity given when no class names the vault).
    for (vault, vault_loaded) in &azure.vaults {
        check_vault_cloud(doctor, vault, out);
        // What the classes reading this vault ask of it, read once for every identity below.
        let reads = vault_needs(doctor, &vault.name);
        let meant: Vec<&azure::Identity> = {
            let named = class_identities_for_vault(doctor, &vault.name);
            let by_class: Vec<_> = azure
                .identities
                .iter()
                .filter(|(i, _)| {
                    named
                        .iter()
                        .any(|id| same(id, &i.client_id) || same(id, &i.principal_id))
                })
                .map(|(i, _)| i)
                .collect();
            match by_class.is_empty() {
                true => azure.identities.iter().map(|(i, _)| i).collect(),
                false => by_class,
            }
        };
        let rbac = vault.properties.enable_rbac_authorization == Some(true);
        let policies = vault.properties.access_policies.as_deref().unwrap_or_default();
        let in_scope = |scope: &str| {
            let scope = scope.trim_end_matches('/').to_ascii_lowercase();
            !vault.id.is_empty() && vault.id.to_ascii_lowercase().starts_with(&scope)
        };
        let assignments: Vec<_> = azure
            .role_assignments
            .iter()
            .filter(|(a, _)| a.scope.is_empty() || in_scope(&a.scope))
            .collect();
        for identity in meant {
            let site = || az_site(vault_loaded, "KeyVault", &vault.name);
            let policy_client = !rbac && policies.iter().any(|p| same(&p.object_id, &identity.client_id));
            let role_client = assignments
                .iter()
                .find(|(a, _)| same(&a.principal_id, &identity.client_id));
            if policy_client || role_client.is_some() {
                let what = match policy_client {
                    true => "an access policy".to_owned(),
                    false => format!(
                        "role assignment {:?}",
                        role_client
                            .and_then(|(a, _)| a.role_definition_name.clone())
                            .unwrap_or_default()
                    ),
                };
                out.push(
                    Code::VaultAccessClientId,
                    site(),
                    format!(
                        "{what} on vault {} names {}, the client id of managed identity {}; grants name its \
                         principal (object) id {}",
                        vault.name, identity.client_id, identity.name, identity.principal_id
                    ),
                    Some(match rbac {
                        true => format!(
                            "az role assignment create --role \"Key Vault Secrets User\" --assignee-object-id {} \
                             --assignee-principal-type ServicePrincipal --scope {}",
                            identity.principal_id, vault.id
                        ),
                        false => format!(
                            "az keyvault set-policy -n {} --object-id {} --secret-permissions get list",
                            vault.name, identity.principal_id
                        ),
                    }),
                );
                continue;
            }
            let policy_ok = !rbac && policies.iter().any(|p| same(&p.object_id, &identity.principal_id));
            let role_ok = assignments
                .iter()
                .any(|(a, _)| same(&a.principal_id, &identity.principal_id));
            // An RBAC vault is judged only when role assignments were given.
            let judged = !rbac || !azure.role_assignments.is_empty();
            if policy_ok || role_ok {
                check_grant_covers(&reads, azure, vault, vault_loaded, &assignments, identity, out);
            }
            if judged && !policy_ok && !role_ok {
                out.push(
                    Code::VaultAccessMissing,
                    site(),
                    format!(
                        "no {} on vault {} names managed identity {} (principal id {})",
                        if rbac {
                            "role assignment"
                        } else {
                            "access policy or role assignment"
                        },
                        vault.name,
                        identity.name,
                        identity.principal_id
                    ),
                    Some(grant_command(vault, identity, &reads.0, rbac)),
                );
            }
        }
    }
}

/// Whether the grants an identity has on a vault (access policies on an access-policy vault, role assignments on an
/// RBAC one) cover what the classes reading that vault ask for: WI507 when not, WI508 when a custom role could
/// not be judged.
fn check_grant_covers(
    reads: &(BTreeSet<grants::Need>, Vec<String>),
    azure: &AzureInputs,
    vault: &azure::Vault,
    vault_loaded: &Loaded,
    assignments: &[&(azure::RoleAssignment, Loaded)],
    identity: &azure::Identity,
    out: &mut Findings,
) {
    use grants::{DataActions, Need};
    let (needs, classes) = reads;
    if needs.is_empty() {
        return;
    }
    let site = || az_site(vault_loaded, "KeyVault", &vault.name);
    let reads = format!("SecretProviderClass {} reads from it", classes.join(", "));
    if vault.properties.enable_rbac_authorization != Some(true) {
        // What the identity's policies grant together (a need any of them grants is granted).
        let mut granted = azure::Permissions::default();
        for policy in vault
            .properties
            .access_policies
            .iter()
            .flatten()
            .filter(|p| same(&p.object_id, &identity.principal_id))
        {
            granted.secrets.extend(policy.permissions.secrets.iter().cloned());
            granted.keys.extend(policy.permissions.keys.iter().cloned());
            granted
                .certificates
                .extend(policy.permissions.certificates.iter().cloned());
        }
        let missing: BTreeSet<Need> = needs
            .iter()
            .copied()
            .filter(|n| !grants::policy_allows(&granted, *n))
            .collect();
        if missing.is_empty() {
            return;
        }
        // set-policy replaces the lists it is given: they keep what the policies already grant.
        let flags = grants::set_policy_flags(&missing, &granted);
        out.push(
            Code::VaultAccessInsufficient,
            site(),
            format!(
                "the access policy of managed identity {} on vault {} does not let it {}; {reads}",
                identity.name,
                vault.name,
                missing.iter().map(|n| n.describe()).collect::<Vec<_>>().join(" or ")
            ),
            Some(format!(
                "az keyvault set-policy -n {} --object-id {} {flags}",
                vault.name, identity.principal_id
            )),
        );
        return;
    }
    let mut judged: Vec<(String, DataActions)> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    for (assignment, _) in assignments
        .iter()
        .filter(|(a, _)| same(&a.principal_id, &identity.principal_id))
    {
        let name = assignment.role_definition_name.as_deref();
        let id = assignment.role_definition_id.as_deref();
        if let Some((role, actions)) = grants::built_in(name, id) {
            judged.push((role.to_owned(), actions));
            continue;
        }
        let guid = id.map(|id| id.rsplit('/').next().unwrap_or(id));
        let custom = azure.role_definitions.iter().find(|(d, _)| {
            name.is_some_and(|n| n.eq_ignore_ascii_case(&d.role_name)) || guid.is_some_and(|g| same(g, &d.name))
        });
        match custom {
            Some((definition, _)) => judged.push((
                definition.role_name.clone(),
                DataActions {
                    allowed: definition
                        .permissions
                        .iter()
                        .flat_map(|p| p.data_actions.clone())
                        .collect(),
                    denied: definition
                        .permissions
                        .iter()
                        .flat_map(|p| p.not_data_actions.clone())
                        .collect(),
                },
            )),
            None => unknown.push(name.or(guid).unwrap_or("(unnamed)").to_owned()),
        }
    }
    let missing: Vec<Need> = needs
        .iter()
        .copied()
        .filter(|n| !judged.iter().any(|(_, actions)| actions.allows(*n)))
        .collect();
    if missing.is_empty() {
        return;
    }
    if !unknown.is_empty() {
        out.push(
            Code::RoleNotJudged,
            site(),
            format!(
                "role {} of managed identity {} on vault {} is not a built-in role and no definition of it was given: whether it lets the identity {} is unknown; {reads}",
                unknown.join(", "),
                identity.name,
                vault.name,
                missing.iter().map(|n| n.describe()).collect::<Vec<_>>().join(" or ")
            ),
            Some(format!(
                "az role definition list --name \"{}\" -o json > role.json, then add --azure role.json",
                unknown[0]
            )),
        );
        return;
    }
    let fix = role_commands(vault, identity, &missing.iter().copied().collect());
    out.push(
        Code::VaultAccessInsufficient,
        site(),
        format!(
            "the roles of managed identity {} on vault {} ({}) do not let it {}; {reads}",
            identity.name,
            vault.name,
            judged.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>().join(", "),
            missing.iter().map(|n| n.describe()).collect::<Vec<_>>().join(" or ")
        ),
        Some(fix),
    );
}

/// The `az role assignment create` commands that give `identity` the built-in roles `needs` call for on `vault`.
fn role_commands(vault: &azure::Vault, identity: &azure::Identity, needs: &BTreeSet<grants::Need>) -> String {
    let roles: BTreeSet<&str> = needs.iter().map(|n| n.role()).collect();
    let roles = match roles.is_empty() {
        true => BTreeSet::from(["Key Vault Secrets User"]),
        false => roles,
    };
    roles
        .iter()
        .map(|role| {
            format!(
                "az role assignment create --role \"{role}\" --assignee-object-id {} --assignee-principal-type \
                 ServicePrincipal --scope {}",
                identity.principal_id,
                if vault.id.is_empty() {
                    "\"$(az keyvault show -n NAME --query id -o tsv)\"".replace("NAME", &vault.name)
                } else {
                    vault.id.clone()
                }
            )
        })
        .collect::<Vec<_>>()
        .join(" && ")
}

/// The command that grants `identity` what the classes need of `vault`: role assignments on an RBAC vault, an
/// access policy otherwise (get on secrets when no class says what it reads).
fn grant_command(
    vault: &azure::Vault,
    identity: &azure::Identity,
    needs: &BTreeSet<grants::Need>,
    rbac: bool,
) -> String {
    if rbac {
        return role_commands(vault, identity, needs);
    }
    let flags = match needs.is_empty() {
        true => "--secret-permissions get".to_owned(),
        false => grants::set_policy_flags(needs, &azure::Permissions::default()),
    };
    format!(
        "az keyvault set-policy -n {}{} --object-id {} {flags}",
        vault.name,
        group_flag(&vault.id),
        identity.principal_id
    )
}

/// What the classes reading `vault` need of it, and those classes (`namespace/name`).
fn vault_needs(doctor: &Doctor<'_>, vault: &str) -> (BTreeSet<grants::Need>, Vec<String>) {
    let mut needs = BTreeSet::new();
    let mut classes = Vec::new();
    for ((namespace, name), class) in &doctor.classes {
        if !class_param(class, "keyvaultName").is_some_and(|v| v.eq_ignore_ascii_case(vault)) {
            continue;
        }
        let Some(Ok(objects)) = class_param(class, "objects").map(wi_contract::spc::parse_objects) else {
            continue; // an unreadable list is WI409 already
        };
        classes.push(format!("{namespace}/{name}"));
        for object in objects {
            needs.extend(grants::Need::of(object.object_type, object.version_history));
        }
    }
    (needs, classes)
}

/// The client ids (or, in node identity mode, `userAssignedIdentityID`s) of the classes that read `vault`.
fn class_identities_for_vault(doctor: &Doctor<'_>, vault: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for ((_, _), class) in &doctor.classes {
        let param = |k: &str| class_param(class, k);
        if param("keyvaultName").is_some_and(|v| v.eq_ignore_ascii_case(vault)) {
            ids.extend(
                ["clientID", "userAssignedIdentityID"]
                    .iter()
                    .filter_map(|k| param(k))
                    .map(str::to_owned),
            );
        }
    }
    ids
}
