//! Drop-in compatibility, proven by upstream's own tests: the expectations of Azure Workload Identity's webhook unit
//! tests (Azure/azure-workload-identity v1.6.0, `pkg/webhook/webhook_test.go`) as a table of cases, each citing the
//! upstream test it comes from, run through the admission path `serve` and `wi-webhook mutate` share (an
//! AdmissionReview in, the review's answer out, the patch applied to the pod).
//!
//! Upstream tests functions (`getServiceAccountTokenExpiration`, `addEnvironmentVariables`, ...); here every case
//! goes through the whole admission, so its expectation is what the user sees: the patched pod, or the refusal.
//! Where the expectation differs from upstream's, the case names the [`Difference`], and every difference is a row
//! of the compatibility table in docs/compatibility.md (checked below). Cases written here, from upstream's facts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use serde_json::{Value, json};
use wi_webhook::admission;
use wi_webhook::config::{Cloud, Config};
use wi_webhook::lookup::StaticLookup;
use wi_webhook::mutate::ServiceAccount;
use wi_webhook::review::{AdmissionReview, decode_patch};

/// Upstream's token file name and audience (same here).
const TOKEN_FILE: &str = "/var/run/secrets/azure/tokens/azure-identity-token";
const PUBLIC_HOST: &str = "https://login.microsoftonline.com/";

/// Why a case's expectation is not upstream's literal one. Each is a row of the compatibility table (docs/compatibility.md), found
/// there by [`Difference::readme`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Difference {
    /// Upstream's handler tests send pods without the `use` label (the webhook configuration's objectSelector
    /// filters); this handler checks the label itself, so those pods are labelled here.
    OptInChecked,
    /// The ownership record `workload-identity.rs/injected` is one more operation (`add /metadata/annotations`).
    OwnershipRecord,
    /// Upstream v1.6 mounts the token at `/var/run/secrets/azure/wi/<uuid>` under a volume named per pod; here the
    /// volume is `azure-identity-token` at `/var/run/secrets/azure/tokens` (upstream v1.5's), whatever the pod.
    ConstantTokenPath,
    /// `AZURE_AUTHORITY_HOST` always comes from `--cloud`, never empty.
    AuthorityFromCloud,
    /// The token proxy is not implemented: `inject-proxy-sidecar` is a warning, no proxy containers.
    ProxyNotImplemented,
    /// A pod's own `azure-identity-token` volume is kept as written (upstream replaces it); a warning when its
    /// audience is not the webhook's.
    OwnTokenVolumeKept,
    /// `AzureGermanCloud` closed in 2021: refused with the choices (a custom `https://` authority host still works).
    GermanCloudClosed,
    /// A pod CREATE the webhook cannot read is a 400 for the request; upstream's "cannot decode" is the same answer.
    UndecodableIs400,
}

impl Difference {
    /// Words of the compatibility table (docs/compatibility.md) that state this difference.
    fn readme(self) -> &'static str {
        match self {
            Difference::OptInChecked => "The handler checks it itself",
            Difference::OwnershipRecord => "record `workload-identity.rs/injected`",
            Difference::ConstantTokenPath => "a constant name (upstream v1.6 derives it from the pod name",
            Difference::AuthorityFromCloud => "from `--cloud`",
            Difference::ProxyNotImplemented => "the proxy is not implemented",
            Difference::OwnTokenVolumeKept => "A pod that brings its own `azure-identity-token` volume",
            Difference::GermanCloudClosed => "`AzureGermanCloud`",
            Difference::UndecodableIs400 => "400 with the reason, as upstream answers",
        }
    }
}

/// What the user sees.
#[derive(Debug)]
enum Expect {
    /// Allowed; the patch's operations as `op path`, sorted, as upstream's `TestHandle` lists them.
    Patches(&'static [&'static str]),
    /// Allowed; a container's env after the patch, in order.
    Env(&'static str, &'static [(&'static str, &'static str)]),
    /// Allowed; the lifetime of the projected token.
    Expiration(i64),
    /// Allowed; the containers that got the identity (env and mount) and those that did not.
    Injected(&'static [&'static str], &'static [&'static str]),
    /// Allowed; `spec.volumes` after the patch.
    Volumes(fn() -> Value),
    /// Allowed; a container's `volumeMounts` after the patch.
    Mounts(&'static str, fn() -> Value),
    /// Allowed, with a warning containing this.
    Warned(&'static str),
    /// Refused with this code, the message containing this.
    Refused(u16, &'static str),
    /// Not a request the webhook can read: parsing the review fails with this.
    BadRequest(&'static str),
    /// The webhook does not start with this configuration: `--cloud` refuses the name.
    CloudRefused(&'static str),
}

struct Case {
    /// `TestName/case name` upstream.
    upstream: &'static str,
    pod: Value,
    /// Annotations of ServiceAccount `ns1/sa` (and `ns1/default`); `None`: neither exists.
    sa: Option<&'static [(&'static str, &'static str)]>,
    config: Config,
    expect: Expect,
    differences: &'static [Difference],
}

/// The SAs of upstream's `TestHandle`: client id and a 4800 s token lifetime.
const HANDLE_SA: &[(&str, &str)] = &[
    ("azure.workload.identity/client-id", "clientID"),
    ("azure.workload.identity/service-account-token-expiration", "4800"),
];
const PLAIN_SA: &[(&str, &str)] = &[];
const SA_EXPIRY_INVALID: &[(&str, &str)] = &[("azure.workload.identity/service-account-token-expiration", "3600s")];
const SA_EXPIRY_4800: &[(&str, &str)] = &[("azure.workload.identity/service-account-token-expiration", "4800")];

fn tenant(id: &str) -> Config {
    Config {
        tenant_id: Some(id.to_owned()),
        ..Config::default()
    }
}

/// Upstream's `newPod`, as `json.Marshal` writes it (one init container, one container), labelled to opt in.
fn new_pod(sa: &str, annotations: &[(&str, &str)], host_network: bool) -> Value {
    let annotations: serde_json::Map<String, Value> =
        annotations.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
    let mut pod = json!({
        "metadata": {"name": "pod", "namespace": "ns1", "creationTimestamp": null,
                     "labels": {"azure.workload.identity/use": "true"}},
        "spec": {
            "initContainers": [{"name": "init-container", "image": "init-container-image", "resources": {}}],
            "containers": [{"name": "container", "image": "image", "resources": {}}],
        },
        "status": {},
    });
    if !annotations.is_empty() {
        pod["metadata"]["annotations"] = Value::Object(annotations);
    }
    if !sa.is_empty() {
        pod["spec"]["serviceAccountName"] = json!(sa);
    }
    if host_network {
        pod["spec"]["hostNetwork"] = json!(true);
    }
    pod
}

/// A pod with one container `cont1` as upstream's container-level tests build it.
fn one_container(container: Value) -> Value {
    json!({
        "metadata": {"name": "pod", "namespace": "ns1", "labels": {"azure.workload.identity/use": "true"}},
        "spec": {"serviceAccountName": "sa", "containers": [container]},
    })
}

fn expiry(value: &'static str) -> [(&'static str, &'static str); 1] {
    [("azure.workload.identity/service-account-token-expiration", value)]
}

fn token_volume(expiration: i64) -> Value {
    json!({"name": "azure-identity-token", "projected": {"sources": [{"serviceAccountToken": {
        "audience": "api://AzureADTokenExchange", "expirationSeconds": expiration, "path": "azure-identity-token"}}]}})
}

fn cases() -> Vec<Case> {
    use Difference::*;
    use Expect::*;
    const IDENTITY: &[Difference] = &[OptInChecked, OwnershipRecord, ConstantTokenPath];
    // Upstream's lists, literally; the ownership record's operation is mapped in `check`.
    const HANDLE_PATCHES: &[&str] = &[
        "add /spec/containers/0/env",
        "add /spec/containers/0/volumeMounts",
        "add /spec/initContainers/0/env",
        "add /spec/initContainers/0/volumeMounts",
        "add /spec/volumes",
    ];
    const SINGLE_CONTAINER_PATCHES: &[&str] = &[
        "add /spec/containers/0/env",
        "add /spec/containers/0/volumeMounts",
        "add /spec/volumes",
    ];
    let full_env: &'static [(&'static str, &'static str)] = &[
        ("AZURE_CLIENT_ID", "clientID"),
        ("AZURE_TENANT_ID", "tenantID"),
        ("AZURE_FEDERATED_TOKEN_FILE", TOKEN_FILE),
        ("AZURE_AUTHORITY_HOST", PUBLIC_HOST),
    ];
    let mut cases = vec![
        // TestGetServiceAccountTokenExpiration: through admission, the lifetime of the projected token or a denial.
        Case {
            upstream: "TestGetServiceAccountTokenExpiration/pod token expiry annotation invalid",
            pod: new_pod("sa", &expiry("3600s"), false),
            sa: Some(PLAIN_SA),
            config: tenant("tenantID"),
            expect: Refused(403, "service-account-token-expiration on pod is \"3600s\""),
            differences: &[OptInChecked],
        },
        Case {
            upstream: "TestGetServiceAccountTokenExpiration/service account token expiry annotation invalid",
            pod: new_pod("sa", &[], false),
            sa: Some(SA_EXPIRY_INVALID),
            config: tenant("tenantID"),
            expect: Refused(403, "on ServiceAccount ns1/sa is \"3600s\""),
            differences: &[OptInChecked],
        },
        Case {
            upstream: "TestGetServiceAccountTokenExpiration/invalid token expiry < 3600",
            pod: new_pod("sa", &expiry("3599"), false),
            sa: Some(PLAIN_SA),
            config: tenant("tenantID"),
            expect: Refused(403, "is \"3599\": expected a whole number of seconds from 3600 to 86400"),
            differences: &[OptInChecked],
        },
        Case {
            upstream: "TestGetServiceAccountTokenExpiration/invalid token expiry > 86400",
            pod: new_pod("sa", &expiry("86401"), false),
            sa: Some(PLAIN_SA),
            config: tenant("tenantID"),
            expect: Refused(403, "is \"86401\""),
            differences: &[OptInChecked],
        },
        Case {
            upstream: "TestGetServiceAccountTokenExpiration/valid token expiry defined in service account",
            pod: new_pod("sa", &[], false),
            sa: Some(SA_EXPIRY_4800),
            config: tenant("tenantID"),
            expect: Expiration(4800),
            differences: &[OptInChecked],
        },
        Case {
            upstream: "TestGetServiceAccountTokenExpiration/token expiry in pod preferred over service account token expiry",
            pod: new_pod("sa", &expiry("4000"), false),
            sa: Some(SA_EXPIRY_4800),
            config: tenant("tenantID"),
            expect: Expiration(4000),
            differences: &[OptInChecked],
        },
        // TestGetClientID, TestGetTenantID: the env the containers get.
        Case {
            upstream: "TestGetClientID/client id not present",
            pod: new_pod("sa", &[], false),
            sa: Some(PLAIN_SA),
            config: tenant("tenantID"),
            expect: Env(
                "container",
                &[
                    ("AZURE_TENANT_ID", "tenantID"),
                    ("AZURE_FEDERATED_TOKEN_FILE", TOKEN_FILE),
                    ("AZURE_AUTHORITY_HOST", PUBLIC_HOST),
                ],
            ),
            differences: &[OptInChecked, ConstantTokenPath],
        },
        Case {
            upstream: "TestGetClientID/client id present",
            pod: new_pod("sa", &[], false),
            sa: Some(&[("azure.workload.identity/client-id", "client-id")]),
            config: tenant("tenantID"),
            expect: Env(
                "container",
                &[
                    ("AZURE_CLIENT_ID", "client-id"),
                    ("AZURE_TENANT_ID", "tenantID"),
                    ("AZURE_FEDERATED_TOKEN_FILE", TOKEN_FILE),
                    ("AZURE_AUTHORITY_HOST", PUBLIC_HOST),
                ],
            ),
            differences: &[OptInChecked, ConstantTokenPath],
        },
        Case {
            upstream: "TestGetTenantID/tenant ID annotation defined",
            pod: new_pod("sa", &[], false),
            sa: Some(&[("azure.workload.identity/tenant-id", "tenant-id")]),
            config: Config::default(),
            expect: Env(
                "container",
                &[
                    ("AZURE_TENANT_ID", "tenant-id"),
                    ("AZURE_FEDERATED_TOKEN_FILE", TOKEN_FILE),
                    ("AZURE_AUTHORITY_HOST", PUBLIC_HOST),
                ],
            ),
            differences: &[OptInChecked, ConstantTokenPath],
        },
        Case {
            upstream: "TestGetTenantID/tenant ID annotation not defined, use default",
            pod: new_pod("sa", &[], false),
            sa: Some(PLAIN_SA),
            config: tenant("tenant-id"),
            expect: Env(
                "container",
                &[
                    ("AZURE_TENANT_ID", "tenant-id"),
                    ("AZURE_FEDERATED_TOKEN_FILE", TOKEN_FILE),
                    ("AZURE_AUTHORITY_HOST", PUBLIC_HOST),
                ],
            ),
            differences: &[OptInChecked, ConstantTokenPath],
        },
        // TestGetSkipContainers: which containers are injected.
        Case {
            upstream: "TestGetSkipContainers/no skip containers defined",
            pod: new_pod("sa", &[], false),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Injected(&["init-container", "container"], &[]),
            differences: &[OptInChecked],
        },
        Case {
            upstream: "TestGetSkipContainers/one skip container defined",
            pod: new_pod(
                "sa",
                &[("azure.workload.identity/skip-containers", "init-container")],
                false,
            ),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Injected(&["container"], &["init-container"]),
            differences: &[OptInChecked],
        },
        Case {
            upstream: "TestGetSkipContainers/multiple skip containers defined delimited by ;",
            pod: new_pod(
                "sa",
                &[("azure.workload.identity/skip-containers", "init-container;container")],
                false,
            ),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Injected(&[], &["init-container", "container"]),
            differences: &[OptInChecked],
        },
        Case {
            upstream: "TestGetSkipContainers/multiple skip containers defined with extra space",
            pod: new_pod(
                "sa",
                &[("azure.workload.identity/skip-containers", "init-container; container")],
                false,
            ),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Injected(&[], &["init-container", "container"]),
            differences: &[OptInChecked],
        },
        // TestAddProjectedVolume.
        Case {
            upstream: "TestAddProjectedVolume/no volumes in the pod",
            pod: new_pod("sa", &expiry("3600"), false),
            sa: Some(PLAIN_SA),
            config: tenant("tenantID"),
            expect: Volumes(|| json!([token_volume(3600)])),
            differences: &[OptInChecked, ConstantTokenPath],
        },
        Case {
            upstream: "TestAddProjectedVolume/azure-identity-token projected volume already exists",
            pod: {
                let mut pod = new_pod("sa", &expiry("3600"), false);
                pod["spec"]["volumes"] = json!([token_volume(3600)]);
                pod
            },
            sa: Some(PLAIN_SA),
            config: tenant("tenantID"),
            expect: Volumes(|| json!([token_volume(3600)])),
            differences: &[OptInChecked, ConstantTokenPath],
        },
        Case {
            upstream: "TestAddProjectedVolume/existing projected service account token volume overridden with desired audience",
            pod: {
                let mut pod = new_pod("sa", &expiry("3600"), false);
                pod["spec"]["volumes"] = json!([{"name": "azure-identity-token", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "my-projected-volume", "expirationSeconds": 3600, "audience": "aud"}}]}}]);
                pod
            },
            sa: Some(PLAIN_SA),
            config: tenant("tenantID"),
            expect: Warned("the pod's own volume azure-identity-token is not a projected service account token for audience api://AzureADTokenExchange"),
            differences: &[OptInChecked, ConstantTokenPath, OwnTokenVolumeKept],
        },
        // TestAddEnvironmentVariables.
        Case {
            upstream: "TestAddEnvironmentVariables/environment variables added to container",
            pod: one_container(json!({"name": "cont1", "image": "image"})),
            sa: Some(&[("azure.workload.identity/client-id", "clientID")]),
            config: tenant("tenantID"),
            expect: Env("cont1", full_env),
            differences: &[OptInChecked, ConstantTokenPath],
        },
        Case {
            upstream: "TestAddEnvironmentVariables/existing environment variables not replaced",
            pod: one_container(json!({"name": "cont1", "image": "image", "env": [
                {"name": "AZURE_CLIENT_ID", "value": "myClientID"},
                {"name": "AZURE_TENANT_ID", "value": "myTenantID"},
                {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": "/var/run/secrets/azure/wi/2eb503ce/azure-identity-token"},
                {"name": "AZURE_AUTHORITY_HOST", "value": PUBLIC_HOST},
            ]})),
            sa: Some(&[("azure.workload.identity/client-id", "clientID")]),
            config: tenant("tenantID"),
            expect: Env(
                "cont1",
                &[
                    ("AZURE_CLIENT_ID", "myClientID"),
                    ("AZURE_TENANT_ID", "myTenantID"),
                    ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/azure/wi/2eb503ce/azure-identity-token"),
                    ("AZURE_AUTHORITY_HOST", PUBLIC_HOST),
                ],
            ),
            differences: &[OptInChecked],
        },
        Case {
            upstream: "TestAddEnvironmentVariables/environment variables added to existing list",
            pod: one_container(json!({"name": "cont1", "image": "image", "env": [{"name": "MY_ENV_VAR", "value": "test"}]})),
            sa: Some(&[("azure.workload.identity/client-id", "clientID")]),
            config: tenant("tenantID"),
            expect: Env(
                "cont1",
                &[
                    ("MY_ENV_VAR", "test"),
                    ("AZURE_CLIENT_ID", "clientID"),
                    ("AZURE_TENANT_ID", "tenantID"),
                    ("AZURE_FEDERATED_TOKEN_FILE", TOKEN_FILE),
                    ("AZURE_AUTHORITY_HOST", PUBLIC_HOST),
                ],
            ),
            differences: &[OptInChecked, ConstantTokenPath],
        },
        Case {
            upstream: "TestAddEnvironmentVariables/environment variables are not added when empty",
            pod: one_container(json!({"name": "cont1", "image": "image"})),
            sa: Some(PLAIN_SA),
            config: Config::default(),
            expect: Env(
                "cont1",
                &[
                    ("AZURE_FEDERATED_TOKEN_FILE", TOKEN_FILE),
                    ("AZURE_AUTHORITY_HOST", PUBLIC_HOST),
                ],
            ),
            differences: &[OptInChecked, ConstantTokenPath, AuthorityFromCloud],
        },
        // TestAddProjectServiceAccountTokenVolumeMount.
        Case {
            upstream: "TestAddProjectServiceAccountTokenVolumeMount/volume mount added to container",
            pod: one_container(json!({"name": "cont1", "image": "image"})),
            sa: Some(PLAIN_SA),
            config: tenant("tenantID"),
            expect: Mounts("cont1", || {
                json!([{"name": "azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens", "readOnly": true}])
            }),
            differences: &[OptInChecked, ConstantTokenPath],
        },
        Case {
            upstream: "TestAddProjectServiceAccountTokenVolumeMount/volume mount added to existing volume mounts for container",
            pod: one_container(json!({"name": "cont1", "image": "image",
                                      "volumeMounts": [{"name": "my-volume-mount", "mountPath": "/var/run/pods"}]})),
            sa: Some(PLAIN_SA),
            config: tenant("tenantID"),
            expect: Mounts("cont1", || {
                json!([{"name": "my-volume-mount", "mountPath": "/var/run/pods"},
                       {"name": "azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens", "readOnly": true}])
            }),
            differences: &[OptInChecked, ConstantTokenPath],
        },
        // TestHandle: the operations of the patch.
        Case {
            upstream: "TestHandle/service account in cache",
            pod: new_pod("sa", &[], false),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Patches(HANDLE_PATCHES),
            differences: IDENTITY,
        },
        Case {
            upstream: "TestHandle/service account not in cache",
            pod: new_pod("sa", &[], false),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Patches(HANDLE_PATCHES),
            differences: IDENTITY,
        },
        Case {
            upstream: "TestHandle/default service account in cache",
            pod: new_pod("", &[], false),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Patches(HANDLE_PATCHES),
            differences: IDENTITY,
        },
        Case {
            upstream: "TestHandle/default service account not in cache",
            pod: new_pod("", &[], false),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Patches(HANDLE_PATCHES),
            differences: IDENTITY,
        },
        Case {
            upstream: "TestHandle/skip container and pod token expiration",
            pod: new_pod(
                "sa",
                &[
                    ("azure.workload.identity/service-account-token-expiration", "7200"),
                    ("azure.workload.identity/skip-containers", "init-container"),
                ],
                false,
            ),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Patches(SINGLE_CONTAINER_PATCHES),
            differences: IDENTITY,
        },
        Case {
            upstream: "TestHandle/pod has the required label, restart policy in init container",
            pod: serde_json::from_str(r#"{"metadata":{"name":"pod","namespace":"ns1","creationTimestamp":null,"labels":{"azure.workload.identity/use":"true"}},"spec":{"initContainers":[{"name":"init-container","image":"init-container-image","restartPolicy":"Always"}],"containers":[{"name":"container","image":"image","resources":{}}]}}"#).unwrap(),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Patches(HANDLE_PATCHES),
            differences: &[OwnershipRecord, ConstantTokenPath],
        },
        Case {
            upstream: "TestHandle/proxy init and sidecar",
            pod: new_pod(
                "sa",
                &[
                    ("azure.workload.identity/inject-proxy-sidecar", "true"),
                    ("azure.workload.identity/proxy-sidecar-port", "9000"),
                ],
                false,
            ),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Patches(HANDLE_PATCHES),
            differences: &[OptInChecked, OwnershipRecord, ConstantTokenPath, ProxyNotImplemented],
        },
        Case {
            upstream: "TestHandle/native proxy sidecar",
            pod: new_pod("sa", &[("azure.workload.identity/inject-proxy-sidecar", "true")], false),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Warned("the token proxy sidecar is not available in this version"),
            differences: &[OptInChecked, ProxyNotImplemented],
        },
        Case {
            upstream: "TestHandle/pod-level resources from a newer Kubernetes API",
            pod: serde_json::from_str(r#"{"metadata":{"name":"pod","namespace":"ns1","labels":{"azure.workload.identity/use":"true"}},"spec":{"serviceAccountName":"sa","resources":{"limits":{"cpu":"200m","memory":"200Mi"},"requests":{"cpu":"200m","memory":"200Mi"}},"containers":[{"name":"container","image":"image"}]}}"#).unwrap(),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Patches(SINGLE_CONTAINER_PATCHES),
            differences: IDENTITY,
        },
        Case {
            upstream: "TestHandle/unknown field",
            pod: serde_json::from_str(r#"{"metadata":{"name":"pod","namespace":"ns1","labels":{"azure.workload.identity/use":"true"}},"spec":{"serviceAccountName":"sa","containers":[{"name":"container","image":"image"}]},"panda":"bamboo"}"#).unwrap(),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Patches(SINGLE_CONTAINER_PATCHES),
            differences: IDENTITY,
        },
        // TestMutateContainers.
        Case {
            upstream: "TestMutateContainers/no containers",
            pod: json!({"metadata": {"name": "pod", "namespace": "ns1", "labels": {"azure.workload.identity/use": "true"}},
                        "spec": {"serviceAccountName": "sa", "containers": []}}),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Patches(&[]),
            differences: &[OptInChecked],
        },
        Case {
            upstream: "TestMutateContainers/one container",
            pod: one_container(json!({"name": "my-container", "image": "my-image"})),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Injected(&["my-container"], &[]),
            differences: &[OptInChecked],
        },
        Case {
            upstream: "TestMutateContainers/one container and one skip container",
            pod: {
                let mut pod = one_container(json!({"name": "my-container", "image": "my-image"}));
                pod["spec"]["containers"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "skip-container", "image": "skip-image"}));
                pod["metadata"]["annotations"] = json!({"azure.workload.identity/skip-containers": "skip-container"});
                pod
            },
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Injected(&["my-container"], &["skip-container"]),
            differences: &[OptInChecked],
        },
        // TestShouldInjectProxySidecar, TestGetProxyPort: read, validated, not implemented.
        Case {
            upstream: "TestShouldInjectProxySidecar/pod not annotated",
            pod: new_pod("sa", &[], false),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Patches(HANDLE_PATCHES),
            differences: IDENTITY,
        },
        Case {
            upstream: "TestShouldInjectProxySidecar/pod is annotated with azure.workload.identity/inject-proxy-sidecar=true",
            pod: new_pod("sa", &[("azure.workload.identity/inject-proxy-sidecar", "true")], false),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Warned("azure.workload.identity/inject-proxy-sidecar: the token proxy sidecar is not available"),
            differences: &[OptInChecked, ProxyNotImplemented],
        },
        Case {
            upstream: "TestGetProxyPort/pod is annotated with azure.workload.identity/proxy-sidecar-port=8080",
            pod: new_pod(
                "sa",
                &[
                    ("azure.workload.identity/inject-proxy-sidecar", "true"),
                    ("azure.workload.identity/proxy-sidecar-port", "8080"),
                ],
                false,
            ),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Warned("the token proxy sidecar is not available"),
            differences: &[OptInChecked, ProxyNotImplemented],
        },
        Case {
            upstream: "TestGetProxyPort/pod is annotated with azure.workload.identity/proxy-sidecar-port=invalid",
            pod: new_pod(
                "sa",
                &[
                    ("azure.workload.identity/inject-proxy-sidecar", "true"),
                    ("azure.workload.identity/proxy-sidecar-port", "invalid"),
                ],
                false,
            ),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Refused(403, "proxy-sidecar-port on the pod is \"invalid\""),
            differences: &[OptInChecked],
        },
        // TestHandleError.
        Case {
            upstream: "TestHandleError/failed to decode pod",
            pod: json!("invalid"),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: BadRequest("request.object of a pod CREATE is a string, not a Pod"),
            differences: &[UndecodableIs400],
        },
        Case {
            upstream: "TestHandleError/service account not found",
            pod: new_pod("sa", &[], true),
            sa: None,
            config: tenant("tenantID"),
            expect: Refused(404, "ServiceAccount ns1/sa not found"),
            differences: &[],
        },
        Case {
            upstream: "TestHandleError/pod has host network",
            pod: new_pod("sa", &[("azure.workload.identity/inject-proxy-sidecar", "true")], true),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Warned("the token proxy sidecar is not available"),
            differences: &[ProxyNotImplemented],
        },
        Case {
            upstream: "TestHandleError/invalid proxy port",
            pod: new_pod(
                "sa",
                &[
                    ("azure.workload.identity/inject-proxy-sidecar", "true"),
                    ("azure.workload.identity/proxy-sidecar-port", "invalid"),
                ],
                false,
            ),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Refused(403, "expected a port number from 1 to 65535"),
            differences: &[],
        },
        Case {
            upstream: "TestHandleError/invalid sa token expiry",
            pod: new_pod("sa", &expiry("invalid"), false),
            sa: Some(HANDLE_SA),
            config: tenant("tenantID"),
            expect: Refused(403, "service-account-token-expiration on pod is \"invalid\""),
            differences: &[],
        },
    ];
    // TestGetAzureAuthorityHost: the cloud names of --cloud.
    for (name, host, differences) in [
        ("default azure environment", Some(("", PUBLIC_HOST)), &[][..]),
        ("public cloud", Some(("AzurePublicCloud", PUBLIC_HOST)), &[]),
        (
            "us government cloud",
            Some(("AzureUSGovernmentCloud", "https://login.microsoftonline.us/")),
            &[],
        ),
        (
            "china cloud",
            Some(("AzureChinaCloud", "https://login.chinacloudapi.cn/")),
            &[],
        ),
        ("german cloud", None, &[GermanCloudClosed]),
        ("invalid cloud name", None, &[]),
    ] {
        let upstream: &'static str = Box::leak(format!("TestGetAzureAuthorityHost/{name}").into_boxed_str());
        let (expect, config) = match host {
            Some((cloud, host)) => {
                let env: &'static [(&'static str, &'static str)] = Box::leak(
                    vec![
                        ("AZURE_CLIENT_ID", "clientID"),
                        ("AZURE_TENANT_ID", "tenantID"),
                        ("AZURE_FEDERATED_TOKEN_FILE", TOKEN_FILE),
                        ("AZURE_AUTHORITY_HOST", host),
                    ]
                    .into_boxed_slice(),
                );
                let cloud = if cloud.is_empty() {
                    Cloud::default()
                } else {
                    cloud.parse().unwrap()
                };
                (
                    Env("container", env),
                    Config {
                        cloud,
                        ..tenant("tenantID")
                    },
                )
            }
            None => (
                CloudRefused(if name == "german cloud" {
                    "AzureGermanCloud"
                } else {
                    "InvalidCloud"
                }),
                tenant("tenantID"),
            ),
        };
        cases.push(Case {
            upstream,
            pod: new_pod("sa", &[], false),
            sa: Some(HANDLE_SA),
            config,
            expect,
            differences: Box::leak(differences.to_vec().into_boxed_slice()),
        });
    }
    cases
}

/// Upstream tests that are not ported, with the reason. Every one is about the token proxy, which is not
/// implemented here, or about a private helper whose effect the cases above check through the whole admission.
const NOT_PORTED: &[(&str, &str)] = &[
    (
        "TestInjectProxyInitContainer (3 cases)",
        "the token proxy is not implemented",
    ),
    (
        "TestInjectProxySidecarContainer (4 cases)",
        "the token proxy is not implemented",
    ),
    (
        "TestGetProxyPort/pod not annotated, /pod has no ...proxy-sidecar-port annotation",
        "the default proxy port only matters to the proxy, which is not implemented",
    ),
    (
        "TestHandle/custom token endpoint with CA config map, /with cluster trust bundle",
        "after v1.6.0 (AKS token proxy); not implemented",
    ),
    (
        "TestBuildVolumeMountPath, TestReinvocation*",
        "after v1.6.0; the reinvocation they guard is `reinvocation_converges_without_a_second_mount` below",
    ),
];

struct Seen {
    allowed: bool,
    code: Option<u64>,
    message: String,
    warnings: Vec<String>,
    patch: Vec<String>,
    pod: Value,
}

fn admit(pod: &Value, sa: Option<&[(&str, &str)]>, config: &Config) -> Result<Seen, String> {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "operation": "CREATE", "namespace": "ns1", "object": pod},
    });
    let review = AdmissionReview::from_value(review).map_err(|e| e.to_string())?;
    let mut lookup = StaticLookup::default();
    if let Some(annotations) = sa {
        for name in ["sa", "default"] {
            lookup.service_accounts.push(ServiceAccount {
                name: name.to_owned(),
                namespace: "ns1".to_owned(),
                annotations: annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
                ..ServiceAccount::default()
            });
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (response, _) = runtime.block_on(admission::review(&review, &lookup, config));
    let response = serde_json::to_value(response).unwrap();
    let patch = decode_patch(&response).unwrap().unwrap_or_default();
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    let mut ops: Vec<String> = patch
        .0
        .iter()
        .map(|op| {
            let value = serde_json::to_value(op).unwrap();
            format!("{} {}", value["op"].as_str().unwrap(), value["path"].as_str().unwrap())
        })
        .collect();
    ops.sort();
    let r = &response["response"];
    Ok(Seen {
        allowed: r["allowed"].as_bool().unwrap(),
        code: r["status"]["code"].as_u64(),
        message: r["status"]["message"].as_str().unwrap_or_default().to_owned(),
        warnings: r["warnings"]
            .as_array()
            .map(|w| w.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default(),
        patch: ops,
        pod: patched,
    })
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod["spec"][k].as_array())
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env(pod: &Value, name: &str) -> Vec<(String, String)> {
    container(pod, name)["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap().to_owned(),
                        e["value"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn check(case: &Case) -> Result<(), String> {
    if let Expect::CloudRefused(name) = case.expect {
        return match name.parse::<Cloud>() {
            Ok(cloud) => Err(format!("--cloud {name} was accepted as {cloud:?}")),
            Err(error) if error.to_string().contains(name) => Ok(()),
            Err(error) => Err(format!("the error does not name {name}: {error}")),
        };
    }
    let seen = match admit(&case.pod, case.sa, &case.config) {
        Ok(seen) => seen,
        Err(error) => {
            return match case.expect {
                Expect::BadRequest(part) if error.contains(part) => Ok(()),
                _ => Err(format!("the review was not read: {error}")),
            };
        }
    };
    let allowed = || -> Result<(), String> {
        match seen.allowed {
            true => Ok(()),
            false => Err(format!("refused: {} {}", seen.code.unwrap_or_default(), seen.message)),
        }
    };
    match &case.expect {
        Expect::Patches(want) => {
            allowed()?;
            let mut patch = seen.patch.clone();
            if case.differences.contains(&Difference::OwnershipRecord) {
                // The one operation upstream does not have: the record, added to the pod's annotations.
                let before = patch.len();
                patch.retain(|op| !op.starts_with("add /metadata/annotations"));
                if before - patch.len() != 1 {
                    return Err(format!(
                        "not exactly one ownership record operation in {:?}",
                        seen.patch
                    ));
                }
            }
            if patch != *want {
                return Err(format!("patch {:?}, want {want:?}", seen.patch));
            }
        }
        Expect::Env(name, want) => {
            allowed()?;
            let got = env(&seen.pod, name);
            let want: Vec<(String, String)> = want.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
            if got != want {
                return Err(format!("env of {name}: {got:?}, want {want:?}"));
            }
        }
        Expect::Expiration(want) => {
            allowed()?;
            let got =
                seen.pod["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"]
                    .as_i64();
            if got != Some(*want) {
                return Err(format!("expirationSeconds {got:?}, want {want}"));
            }
        }
        Expect::Injected(yes, no) => {
            allowed()?;
            for (names, injected) in [(yes, true), (no, false)] {
                for name in names.iter() {
                    let has_env = env(&seen.pod, name)
                        .iter()
                        .any(|(k, _)| k == "AZURE_FEDERATED_TOKEN_FILE");
                    let has_mount = container(&seen.pod, name)["volumeMounts"]
                        .as_array()
                        .is_some_and(|m| m.iter().any(|m| m["name"] == "azure-identity-token"));
                    if has_env != injected || has_mount != injected {
                        return Err(format!("{name}: env {has_env}, mount {has_mount}, want {injected}"));
                    }
                }
            }
        }
        Expect::Volumes(want) => {
            allowed()?;
            if seen.pod["spec"]["volumes"] != want() {
                return Err(format!("volumes {}, want {}", seen.pod["spec"]["volumes"], want()));
            }
        }
        Expect::Mounts(name, want) => {
            allowed()?;
            let got = &container(&seen.pod, name)["volumeMounts"];
            if *got != want() {
                return Err(format!("mounts of {name}: {got}, want {}", want()));
            }
        }
        Expect::Warned(part) => {
            allowed()?;
            if !seen.warnings.iter().any(|w| w.contains(part)) {
                return Err(format!("no warning with {part:?} in {:?}", seen.warnings));
            }
        }
        Expect::Refused(code, part) => {
            if seen.allowed || seen.code != Some(u64::from(*code)) || !seen.message.contains(part) {
                return Err(format!(
                    "allowed {}, {:?} {:?}; want {code} with {part:?}",
                    seen.allowed, seen.code, seen.message
                ));
            }
        }
        Expect::BadRequest(part) => return Err(format!("read, want a bad request with {part:?}")),
        Expect::CloudRefused(_) => unreachable!("handled above"),
    }
    Ok(())
}

#[test]
fn upstream_webhook_tests_hold_with_every_difference_named() {
    let cases = cases();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| check(case).err().map(|e| format!("{}: {e}", case.upstream)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let mut names: Vec<&str> = cases.iter().map(|c| c.upstream).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "each upstream case is ported once");
    println!("{} upstream cases hold; not ported: {NOT_PORTED:?}", cases.len());
}

/// The compatibility table (docs/compatibility.md) names every difference a case relies on, and no difference is
/// unused.
#[test]
fn every_difference_is_in_the_compatibility_table() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/compatibility.md")).unwrap();
    let start = readme.find("## Compatibility with Azure Workload Identity").unwrap();
    let table = &readme[start
        ..start
            + readme[start..]
                .find("\n## Migrating from Azure Workload Identity")
                .unwrap()];
    let used: std::collections::BTreeSet<Difference> =
        cases().iter().flat_map(|c| c.differences.iter().copied()).collect();
    for difference in [
        Difference::OptInChecked,
        Difference::OwnershipRecord,
        Difference::ConstantTokenPath,
        Difference::AuthorityFromCloud,
        Difference::ProxyNotImplemented,
        Difference::OwnTokenVolumeKept,
        Difference::GermanCloudClosed,
        Difference::UndecodableIs400,
    ] {
        assert!(used.contains(&difference), "{difference:?} is used by no case");
        assert!(
            table.contains(difference.readme()),
            "the compatibility table does not state {difference:?} ({:?})",
            difference.readme()
        );
    }
}

/// Upstream v1.6.0's regression (#1749 and the tests added after it): a reinvocation after another webhook set
/// `metadata.name` mounted the token a second time at the same path. Here the second pass adds nothing.
#[test]
fn reinvocation_converges_without_a_second_mount() {
    let mut pod = new_pod("sa", &[], false);
    pod["metadata"]["name"] = json!(null);
    pod["metadata"]["generateName"] = json!("dml-v1-expo-api-5864db4bfb-");
    let first = admit(&pod, Some(HANDLE_SA), &tenant("tenantID")).unwrap();
    let mut again = first.pod.clone();
    again["metadata"]["name"] = json!("dml-v1-expo-api-5864db4bfb-g4c9r");
    let second = admit(&again, Some(HANDLE_SA), &tenant("tenantID")).unwrap();
    assert!(second.allowed && second.patch.is_empty(), "{:?}", second.patch);
    let mounts = &container(&second.pod, "container")["volumeMounts"];
    assert_eq!(mounts.as_array().unwrap().len(), 1, "{mounts}");
}
