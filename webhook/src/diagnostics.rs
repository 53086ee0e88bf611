//! Every mistake the webhook and `wi-webhook doctor` know about, each with a stable code: one table, read by the
//! engine (its admission warnings and denials carry a [`Code`]) and by [`crate::doctor`] (which adds the checks only
//! a view of several objects can make). Codes never change meaning; new ones get new numbers.

use std::fmt;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Workload identity or secret delivery fails at run time.
    Error,
    /// Likely wrong, or fails in some setups.
    Warning,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $severity:ident, $title:literal, $runtime:literal, $fix:literal;)*) => {
        /// A stable diagnostic code (`WI` and three digits): 1xx opt-in and webhook selection, 2xx the
        /// ServiceAccount, 3xx the pod's annotations and containers, 4xx the SecretProviderClass, 5xx the Azure side.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[non_exhaustive]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            /// Every code, in number order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// `WI101`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code,)* }
            }

            /// The severity doctor reports it with (`--strict` makes warnings errors).
            pub fn severity(self) -> Severity {
                match self { $(Code::$variant => Severity::$severity,)* }
            }

            /// A few words naming the mistake.
            pub fn title(self) -> &'static str {
                match self { $(Code::$variant => $title,)* }
            }

            /// What goes wrong at run time.
            pub fn runtime(self) -> &'static str {
                match self { $(Code::$variant => $runtime,)* }
            }

            /// The fix, in one line.
            pub fn fix(self) -> &'static str {
                match self { $(Code::$variant => $fix,)* }
            }
        }
    };
}

codes! {
    /// `azure.workload.identity/use` on the workload's own metadata, not on its pod template.
    UseLabelOnWorkload = "WI101", Error, "opt-in label on the workload, not its pod template",
        "the webhook sees pods, not Deployments: the pods get no AZURE_* env and no token",
        "move the label to spec.template.metadata.labels";
    /// A pod template set up for workload identity (its ServiceAccount has a client id, or it uses the project's
    /// annotations) that is not opted in.
    NotOptedIn = "WI102", Error, "pod template set up for workload identity but not opted in",
        "the webhook never sees the pod: no AZURE_* env, no token, no secrets volume; Azure SDKs fall back to other credentials and fail",
        "label the pod template azure.workload.identity/use: \"true\" (or its namespace)";
    /// The `use` label is neither "true" nor "false".
    UseLabelValue = "WI103", Warning, "opt-in label neither \"true\" nor \"false\"",
        "the webhook treats any other value as not opted in (unless the namespace is)",
        "set azure.workload.identity/use to \"true\" or \"false\"";
    /// The MutatingWebhookConfiguration does not send the pod to the webhook.
    NotSelected = "WI104", Error, "the webhook configuration does not send this pod",
        "the API server never calls the webhook for it (excluded namespace or selector): the pod starts without its identity",
        "run the workload in another namespace, or change the webhook's namespaceSelector/objectSelector";
    /// No MutatingWebhookConfiguration of this webhook in the cluster.
    NoWebhookConfiguration = "WI105", Error, "webhook not registered",
        "no pod is mutated: the API server does not know the webhook",
        "kubectl apply -k manifests/base (or overlays/cert-manager)";
    /// The webhook configuration has no caBundle.
    EmptyCaBundle = "WI106", Error, "webhook configuration without caBundle",
        "the API server cannot verify the webhook's certificate: pod creation fails (failurePolicy Fail) or skips the webhook",
        "run the webhook with --cert-mode self-managed, or let cert-manager's CA injector fill it (overlays/cert-manager)";
    /// The webhook's Service has no ready endpoint.
    NoReadyEndpoints = "WI107", Error, "webhook Service without ready endpoints",
        "the API server cannot reach the webhook: pod creation fails with 'failed calling webhook'",
        "kubectl -n wi-system get pods; kubectl -n wi-system logs deploy/wi-webhook";

    /// Azure Workload Identity's own webhook (the AKS add-on, or its Helm chart) is registered beside this one.
    UpstreamWebhookToo = "WI108", Error, "Azure Workload Identity's webhook runs beside this one",
        "both webhooks mutate every opted-in pod: the identity env and token volume are injected twice, differently, in an order neither controls",
        "on AKS disable the add-on, az aks update -g RG -n CLUSTER --disable-workload-identity (deleting its configuration does not last: AKS puts it back); else helm uninstall its release";

    /// The pod's ServiceAccount does not exist.
    ServiceAccountMissing = "WI201", Error, "ServiceAccount missing",
        "the pod is refused (no such ServiceAccount) or runs without an identity",
        "create the ServiceAccount in the workload's namespace";
    /// The ServiceAccount has no client id.
    NoClientId = "WI202", Error, "ServiceAccount without client id",
        "AZURE_CLIENT_ID is not injected: Azure SDKs cannot ask Entra ID for a token",
        "annotate the ServiceAccount azure.workload.identity/client-id: <the identity's clientId>";
    /// The client id is not a UUID.
    ClientIdNotUuid = "WI203", Error, "client id not a UUID",
        "Entra ID answers AADSTS700016 (application not found)",
        "use the identity's clientId: az identity show --query clientId -o tsv";
    /// No tenant: neither the ServiceAccount nor the webhook's --tenant-id.
    NoTenant = "WI204", Warning, "no tenant id",
        "AZURE_TENANT_ID is not injected: Azure SDKs cannot sign in",
        "set WI_TENANT_ID in manifests/base/config.env, or annotate the ServiceAccount azure.workload.identity/tenant-id";
    /// The tenant id is not a UUID.
    TenantIdNotUuid = "WI205", Error, "tenant id not a UUID",
        "Entra ID rejects the token request",
        "use the tenant's id: az account show --query tenantId -o tsv";
    /// The token lifetime is outside 3600..86400 seconds.
    TokenExpiration = "WI206", Error, "token lifetime out of range",
        "the webhook refuses the pod",
        "set azure.workload.identity/service-account-token-expiration from 3600 to 86400, or remove it";
    /// An annotation or label key under a contract prefix that the webhook does not read.
    LookAlikeKey = "WI207", Warning, "key the webhook does not read",
        "the setting is ignored",
        "use the key the message names, on the object it names";
    /// The ServiceAccount's client id is the identity's principal (object) id.
    PrincipalIdAsClientId = "WI208", Error, "principal id where the client id belongs",
        "Entra ID answers AADSTS700016 (application not found): the token request names an object id",
        "annotate the ServiceAccount with the identity's clientId, not its principalId";

    /// A container name in an annotation that the pod does not have.
    UnknownContainer = "WI301", Warning, "annotation names a container the pod does not have",
        "that part of the annotation does nothing",
        "use the names of spec.containers / spec.initContainers, separated by ';'";
    /// An annotation value the webhook cannot use.
    InvalidAnnotation = "WI302", Error, "invalid annotation value",
        "the webhook refuses the pod",
        "use a value the message says is accepted";
    /// The pod already has a volume, mount, container or port where the webhook injects one.
    Conflict = "WI303", Error, "conflicts with what the webhook injects",
        "the webhook refuses the pod",
        "rename or remove the pod's own volume, mount, container or port the message names";
    /// A setting that has no effect (a secrets annotation without a class, the proxy sidecar).
    NoEffect = "WI304", Warning, "setting without effect",
        "the setting is ignored",
        "remove it, or add what it depends on";
    /// The `workload-identity.rs/injected` record is not what the webhook writes.
    InjectedRecord = "WI305", Warning, "injected record unreadable",
        "the webhook rewrites it and treats everything already injected as the user's",
        "do not write workload-identity.rs/injected by hand";
    /// The pod's own token volume or mount does not give the SDKs the token.
    TokenMount = "WI306", Warning, "token volume or mount not usable",
        "Azure SDKs read AZURE_FEDERATED_TOKEN_FILE and fail to sign in",
        "remove the pod's own azure-identity-token volume and mounts: the webhook injects them";
    /// The object is not a pod the engine can read.
    MalformedPod = "WI307", Error, "malformed pod",
        "the API server or the webhook refuses it",
        "fix the manifest (kubectl apply --dry-run=server shows the API server's complaint)";
    /// The engine hit a bug.
    Internal = "WI308", Error, "webhook internal error",
        "the webhook refuses the pod with 500",
        "report it with the manifest";

    /// The SecretProviderClass the pod names does not exist.
    ClassNotFound = "WI401", Error, "SecretProviderClass missing",
        "the secrets volume cannot mount: the pod stays in ContainerCreating (csi) or is refused (sidecar)",
        "create the SecretProviderClass in the pod's namespace, or fix the name";
    /// The SecretProviderClass could not be read.
    ClassUnreadable = "WI402", Warning, "SecretProviderClass unreadable",
        "the webhook cannot check it; sidecar delivery is refused",
        "grant the webhook get/list/watch on secretproviderclasses";
    /// The class's provider is not azure.
    ProviderNotAzure = "WI403", Error, "provider is not azure",
        "another provider does not use the pod's workload identity",
        "set spec.provider: azure";
    /// `useVMManagedIdentity: "true"`: the node's identity.
    NodeIdentity = "WI404", Error, "SecretProviderClass in node identity mode",
        "the node's managed identity, shared by every pod on the node, reads the vault; clientID is ignored",
        "set useVMManagedIdentity: \"false\", remove userAssignedIdentityID, set clientID: <the identity's clientId>";
    /// `usePodIdentity: "true"`: AAD pod identity.
    PodIdentity = "WI405", Error, "SecretProviderClass in pod identity mode",
        "AAD pod identity (deprecated, needs NMI) is used instead of workload identity",
        "set usePodIdentity: \"false\" and clientID: <the identity's clientId>";
    /// The class has no clientID.
    ClassWithoutClientId = "WI406", Error, "SecretProviderClass without clientID",
        "the CSI driver cannot use workload identity: the mount fails",
        "set parameters.clientID to the ServiceAccount's azure.workload.identity/client-id";
    /// The class's clientID differs from the ServiceAccount's.
    ClientIdMismatch = "WI407", Error, "clientID differs from the ServiceAccount's",
        "the CSI driver signs in as another identity, whose federated credential does not name this ServiceAccount (AADSTS700213)",
        "make parameters.clientID and the ServiceAccount's client id the same";
    /// The vault name is missing or not a valid Key Vault name.
    InvalidVaultName = "WI408", Error, "invalid keyvaultName",
        "no vault has that name (Azure allows 3-24 letters, digits and hyphens): the mount fails",
        "set parameters.keyvaultName to the vault's name (az keyvault list --query [].name)";
    /// `objects` cannot be parsed.
    InvalidObjects = "WI409", Error, "objects the provider refuses",
        "the provider refuses the object list (unreadable YAML, or an entry with a bad or missing field): the mount fails",
        "fix what the message names: the entry's field (objectType is secret, key or cert), or the YAML string holding array: of objectName/objectType entries";
    /// The class's tenant differs from the ServiceAccount's or the webhook's.
    TenantMismatch = "WI410", Error, "tenant differs",
        "the CSI driver asks another tenant for the token: Entra ID finds no such identity there",
        "set parameters.tenantId to the tenant of the identity";
    /// `secrets-delivery: sidecar` with a class the sidecar refuses.
    SidecarRefusesClass = "WI411", Error, "class wi-sidecar cannot use",
        "the webhook refuses the pod (sidecar delivery is configured from the class)",
        "fix the parameter the message names, or use csi delivery";
    /// `cloudName` is not a cloud the Azure provider knows.
    UnknownCloudName = "WI412", Error, "cloudName not a cloud the Azure provider knows",
        "the provider fails every mount of the class: there is no cloud environment of that name",
        "set cloudName to AzurePublicCloud (or leave it out), AzureUSGovernmentCloud, AzureChinaCloud or AzureStackCloud";
    /// `cloudName` names another cloud than the one the vault is in (`az keyvault show`'s vaultUri).
    CloudNameMismatch = "WI413", Error, "cloudName is not the vault's cloud",
        "the provider signs in at the wrong cloud and looks for the vault under the wrong DNS suffix: the vault is not found",
        "set cloudName to the cloud of the vault's URI";
    /// `secrets-delivery: sidecar` with a class whose `secretObjects` nothing syncs.
    SecretObjectsNotSynced = "WI414", Warning, "secretObjects nothing syncs",
        "sidecar delivery writes files only: the Secrets the class lists are never made, and pods reading them stay in CreateContainerConfigError (secret not found)",
        "annotate the class workload-identity.rs/sync-service-account: <a ServiceAccount of its namespace with the identity>, and wi-controller syncs them";
    /// A `secretObjects` entry that cannot become a Secret (or a sync annotation without entries).
    InvalidSecretObjects = "WI415", Error, "secretObjects entry that cannot be synced",
        "that Secret is never made (the CSI driver skips such an entry too; wi-controller says why in an Event on the class)",
        "fix the field the message names";
    /// A workload reads a Secret that no class syncs and that is not among the objects read.
    SecretNotSynced = "WI416", Warning, "Secret that nothing makes",
        "the pod does not start (CreateContainerConfigError: secret not found) unless the Secret is made some other way",
        "list it in the secretObjects of a class annotated workload-identity.rs/sync-service-account, or create it";

    /// No federated credential names the ServiceAccount.
    FederatedCredentialMissing = "WI501", Error, "no federated credential for the ServiceAccount",
        "Entra ID answers AADSTS700213 (no matching federated identity record)",
        "az identity federated-credential create --subject system:serviceaccount:NS:NAME --issuer <cluster issuer> --audiences api://AzureADTokenExchange";
    /// A federated credential's subject names no ServiceAccount that uses the identity.
    FederatedSubject = "WI502", Error, "federated credential subject names another ServiceAccount",
        "tokens of the ServiceAccount that uses the identity do not match it (AADSTS700213)",
        "set the subject to system:serviceaccount:NAMESPACE:NAME of the ServiceAccount";
    /// A federated credential's issuer is not the cluster's.
    FederatedIssuer = "WI503", Error, "federated credential issuer is not the cluster's",
        "Entra ID does not trust the cluster's tokens (AADSTS700211/700213)",
        "set the issuer to az aks show --query oidcIssuerProfile.issuerUrl -o tsv";
    /// A federated credential's audience is not api://AzureADTokenExchange.
    FederatedAudience = "WI504", Error, "federated credential audience",
        "the injected token's audience does not match (AADSTS700212)",
        "set --audiences api://AzureADTokenExchange";
    /// A Key Vault access policy or role assignment names the identity's client id.
    VaultAccessClientId = "WI505", Error, "Key Vault access granted to the client id",
        "the grant names no principal: Key Vault answers 403 to the identity",
        "grant the identity's principalId: az keyvault set-policy --object-id <principalId> (or az role assignment create --assignee-object-id <principalId>)";
    /// No Key Vault access policy or role assignment names the identity's principal.
    VaultAccessMissing = "WI506", Error, "no Key Vault access for the identity",
        "Key Vault answers 403 to the identity",
        "grant Key Vault Secrets User (RBAC) or an access policy with get on secrets to the identity's principalId";
    /// The identity's grants on the vault exist but do not cover what its classes read (a role without the data
    /// action, an access policy without the permission).
    VaultAccessInsufficient = "WI507", Error, "Key Vault grant does not cover what the class reads",
        "Key Vault answers 403 (Forbidden) for those objects: the CSI volume does not mount, the sidecar never becomes ready",
        "grant a role that can (Key Vault Secrets User for secrets, Key Vault Crypto User for keys, Key Vault Certificate User for certificates), or add the permission to the access policy";
    /// A managed identity has 18 or more federated credentials: Azure allows 20.
    FederatedCredentialLimit = "WI509", Warning, "managed identity near the 20 federated credentials Azure allows",
        "a ServiceAccount added past the 20th cannot be federated: az identity federated-credential create fails",
        "match many ServiceAccounts with one flexible credential (claimsMatchingExpression), or federate further ServiceAccounts with a second identity";
    /// A role assignment names a role doctor does not know (a custom role) and no definition of it was given.
    RoleNotJudged = "WI508", Warning, "custom role not judged",
        "doctor cannot tell whether the role lets the identity read the objects its classes ask for",
        "add the role's definition: az role definition list --name ROLE -o json, given with --azure";
}

impl Code {
    /// The same code, read back from its text.
    pub fn parse(text: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.as_str() == text)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a warning is about, so that `doctor` files it under that object without reading the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// The pod (for a workload, its pod template): its labels, annotations, containers or volumes.
    Pod,
    /// The ServiceAccount the pod runs as.
    ServiceAccount,
    /// The SecretProviderClass of this name, in the pod's namespace.
    SecretProviderClass(String),
}

/// An admission warning with its code and its subject: the message is what the API server shows the requester.
/// Its `Debug` (what the admission log line shows) is `"WI202: message"`.
#[derive(Clone, PartialEq, Eq)]
pub struct Warning {
    /// Which mistake.
    pub code: Code,
    /// The object at fault.
    pub subject: Subject,
    /// What is wrong, naming the object and key.
    pub message: String,
}

impl Warning {
    /// A warning of `code` about `subject`.
    pub fn new(code: Code, subject: Subject, message: String) -> Self {
        Warning { code, subject, message }
    }
}

impl fmt::Debug for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}: {}\"", self.code, self.message.escape_debug())
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_numbered_and_read_back() {
        let mut seen = std::collections::BTreeSet::new();
        for code in Code::ALL {
            let text = code.as_str();
            assert!(
                text.len() == 5 && text.starts_with("WI") && text[2..].bytes().all(|b| b.is_ascii_digit()),
                "{text}"
            );
            assert!(seen.insert(text), "{text} twice");
            assert_eq!(Code::parse(text), Some(*code));
            assert!(!code.title().is_empty() && !code.runtime().is_empty() && !code.fix().is_empty());
        }
        assert_eq!(Code::parse("WI999"), None);
    }

    #[test]
    fn a_warning_shows_its_code_in_logs_and_only_its_message_to_requesters() {
        let w = Warning::new(
            Code::NoClientId,
            Subject::ServiceAccount,
            "ServiceAccount a/b has no \"client-id\"".to_owned(),
        );
        assert_eq!(
            format!("{:?}", [&w]),
            r#"["WI202: ServiceAccount a/b has no \"client-id\""]"#
        );
        assert_eq!(w.to_string(), "ServiceAccount a/b has no \"client-id\"");
    }
}
