//! The names of the pod contract: labels, annotations, env vars, volumes, paths and ports, as the compatibility
//! table (docs/compatibility.md) lists them.
//!
//! Upstream-compatible keys are spelled exactly as Azure Workload Identity spells them; project extensions use
//! the `workload-identity.rs/` prefix. Names are constants, never derived from the pod.

/// Label on a pod or a namespace: `"true"` opts in; `"false"` on a pod opts out of a labelled namespace.
pub const USE_LABEL: &str = "azure.workload.identity/use";
/// ServiceAccount annotation: client id of the managed identity or app registration.
pub const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
/// ServiceAccount annotation: tenant id, defaulting to the webhook's `--tenant-id`.
pub const TENANT_ID_ANNOTATION: &str = "azure.workload.identity/tenant-id";
/// Pod (then ServiceAccount) annotation: lifetime of the projected token in seconds.
pub const TOKEN_EXPIRATION_ANNOTATION: &str = "azure.workload.identity/service-account-token-expiration";
/// Pod annotation: `;`-separated container names left untouched.
pub const SKIP_CONTAINERS_ANNOTATION: &str = "azure.workload.identity/skip-containers";
/// Pod annotation: `"true"` asks for the token proxy sidecar (not available yet).
pub const INJECT_PROXY_SIDECAR_ANNOTATION: &str = "azure.workload.identity/inject-proxy-sidecar";
/// Pod annotation: port of the token proxy sidecar.
pub const PROXY_SIDECAR_PORT_ANNOTATION: &str = "azure.workload.identity/proxy-sidecar-port";

/// Pod annotation: name of a SecretProviderClass in the pod's namespace.
pub const SECRET_PROVIDER_CLASS_ANNOTATION: &str = "workload-identity.rs/secret-provider-class";
/// Pod annotation: `csi` (default) or `sidecar`.
pub const SECRETS_DELIVERY_ANNOTATION: &str = "workload-identity.rs/secrets-delivery";
/// Pod annotation: where the secrets appear in the containers.
pub const SECRETS_MOUNT_PATH_ANNOTATION: &str = "workload-identity.rs/secrets-mount-path";
/// Pod annotation: `;`-separated containers that get the secrets mount (default: every targeted container).
pub const SECRETS_CONTAINERS_ANNOTATION: &str = "workload-identity.rs/secrets-containers";
/// Pod annotation written by the webhook: what it injected, so that reinvocation converges.
pub const INJECTED_ANNOTATION: &str = "workload-identity.rs/injected";

/// SecretProviderClass annotation: the ServiceAccount, in the class's namespace, whose workload identity
/// `wi-controller` uses to sync the class's `secretObjects` into Secrets, with or without pods.
pub const SYNC_SERVICE_ACCOUNT_ANNOTATION: &str = "workload-identity.rs/sync-service-account";
/// SecretProviderClass annotation: the time between syncs of this class (e.g. `5m`), instead of the controller's
/// `--interval`.
pub const SYNC_INTERVAL_ANNOTATION: &str = "workload-identity.rs/sync-interval";
/// Deployment, StatefulSet or DaemonSet annotation: `"true"` rolls the workload when a synced Secret it consumes
/// changes.
pub const RESTART_ON_SECRET_CHANGE_ANNOTATION: &str = "workload-identity.rs/restart-on-secret-change";
/// Pod template annotation written by `wi-controller`: a hash of the synced Secrets the workload consumes.
pub const SECRETS_HASH_ANNOTATION: &str = "workload-identity.rs/secrets-hash";
/// Annotation on a synced Secret: a hash of its data, so that a real change is told from a re-sync.
pub const CONTENT_HASH_ANNOTATION: &str = "workload-identity.rs/content-hash";
/// The standard label that says which tool manages an object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`] on the Secrets `wi-controller` syncs (and its field manager).
pub const CONTROLLER_NAME: &str = "wi-controller";

/// The annotation prefix of upstream Azure Workload Identity.
pub const UPSTREAM_PREFIX: &str = "azure.workload.identity/";
/// The annotation prefix of this project's extensions.
pub const PROJECT_PREFIX: &str = "workload-identity.rs/";

/// Env var: client id.
pub const ENV_CLIENT_ID: &str = "AZURE_CLIENT_ID";
/// Env var: tenant id.
pub const ENV_TENANT_ID: &str = "AZURE_TENANT_ID";
/// Env var: path of the projected token.
pub const ENV_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
/// Env var: Entra ID authority host of the configured cloud.
pub const ENV_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";

/// Name of the projected service account token volume.
pub const TOKEN_VOLUME: &str = "azure-identity-token";
/// Where the token volume is mounted.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/azure/tokens";
/// File name of the token inside the volume.
pub const TOKEN_FILE: &str = "azure-identity-token";
/// Full path of the token file, the value of `AZURE_FEDERATED_TOKEN_FILE`.
pub const TOKEN_FILE_PATH: &str = "/var/run/secrets/azure/tokens/azure-identity-token";
/// Audience Entra ID expects in a federated token.
pub const DEFAULT_AUDIENCE: &str = "api://AzureADTokenExchange";

/// Shortest token lifetime accepted, in seconds.
pub const MIN_TOKEN_EXPIRATION: i64 = 3600;
/// Longest token lifetime accepted, in seconds.
pub const MAX_TOKEN_EXPIRATION: i64 = 86400;
/// Token lifetime when no annotation sets one, in seconds.
pub const DEFAULT_TOKEN_EXPIRATION: i64 = 3600;

/// Name of the volume that carries the Key Vault objects.
pub const SECRETS_VOLUME: &str = "wi-secrets-store";
/// The Secrets Store CSI driver.
pub const CSI_DRIVER: &str = "secrets-store.csi.k8s.io";
/// Default mount path of the secrets volume.
pub const DEFAULT_SECRETS_MOUNT_PATH: &str = "/mnt/secrets-store";

/// Name of the injected `wi-sidecar` container (a native sidecar: an init container with `restartPolicy: Always`).
pub const SIDECAR_CONTAINER: &str = "wi-sidecar";
/// Size limit of the in-memory volume the sidecar writes: Key Vault values are at most 25 KB, so this holds
/// hundreds of objects twice over (old and new version during a swap).
pub const SIDECAR_VOLUME_SIZE_LIMIT: &str = "16Mi";
/// Env var holding the SecretProviderClass parameters the sidecar syncs.
pub const ENV_SECRETS_CONFIG: &str = "WI_SECRETS_CONFIG";
/// Env var: the directory the sidecar writes.
pub const ENV_SECRETS_DIR: &str = "WI_SECRETS_DIR";
/// Env var: the rotation interval of the sidecar.
pub const ENV_ROTATION_INTERVAL: &str = "WI_ROTATION_INTERVAL";
/// Env var: the address of the sidecar's /healthz, /readyz and /metrics.
pub const ENV_ADMIN_LISTEN: &str = "WI_ADMIN_LISTEN";
/// Port of the sidecar's `/healthz`, `/readyz` (its startup probe) and `/metrics`.
pub const SIDECAR_ADMIN_PORT: u16 = 9441;
/// Port of `wi-controller`'s `/healthz`, `/readyz` and `/metrics`.
pub const CONTROLLER_ADMIN_PORT: u16 = 9442;
/// The `wi-sidecar` subcommand of the injected native sidecar: sync, then keep the files fresh.
pub const SIDECAR_RUN: &str = "run";
