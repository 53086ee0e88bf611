//! What a Key Vault grant lets an identity read: Azure roles by their data actions (the built-in ones known here, a
//! custom one from `az role definition list`), access policies by their permissions; and what the Azure provider
//! needs for each object type a class asks for.

use std::collections::BTreeSet;

use wi_contract::spc::ObjectType;

use super::azure::{Permissions, glob};

/// What reading one kind of object takes (the Azure provider's calls: get the latest or a version, list versions
/// for `objectVersionHistory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Need {
    /// A secret's value: `GET /secrets/NAME`.
    SecretValue,
    /// A secret's versions: `GET /secrets/NAME/versions`.
    SecretVersions,
    /// A key (its public part): `GET /keys/NAME`, and its versions.
    Key,
    /// A certificate (its public part): `GET /certificates/NAME`, and its versions.
    Certificate,
}

impl Need {
    /// What reading objects of `object_type`, with `history` versions, takes.
    pub(super) fn of(object_type: ObjectType, history: u32) -> Vec<Need> {
        match object_type {
            ObjectType::Secret if history > 1 => vec![Need::SecretValue, Need::SecretVersions],
            ObjectType::Secret => vec![Need::SecretValue],
            ObjectType::Key => vec![Need::Key],
            ObjectType::Cert => vec![Need::Certificate],
        }
    }

    /// The data action an Azure role needs for it.
    fn data_action(self) -> &'static str {
        match self {
            Need::SecretValue => "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            Need::SecretVersions => "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
            Need::Key => "Microsoft.KeyVault/vaults/keys/read",
            Need::Certificate => "Microsoft.KeyVault/vaults/certificates/read",
        }
    }

    /// The access policy permission it needs: (the policy's list, the permission, `az keyvault set-policy`'s flag).
    fn permission(self) -> (Kind, &'static str) {
        match self {
            Need::SecretValue => (Kind::Secrets, "get"),
            Need::SecretVersions => (Kind::Secrets, "list"),
            Need::Key => (Kind::Keys, "get"),
            Need::Certificate => (Kind::Certificates, "get"),
        }
    }

    /// In words, for messages.
    pub(super) fn describe(self) -> &'static str {
        match self {
            Need::SecretValue => "read secret values",
            Need::SecretVersions => "list secret versions (objectVersionHistory)",
            Need::Key => "read keys",
            Need::Certificate => "read certificates",
        }
    }

    /// The least built-in role that grants it, as the fix names it.
    pub(super) fn role(self) -> &'static str {
        match self {
            Need::SecretValue | Need::SecretVersions => "Key Vault Secrets User",
            Need::Key => "Key Vault Crypto User",
            Need::Certificate => "Key Vault Certificate User",
        }
    }
}

/// The permission lists of an access policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    /// `permissions.secrets`, `--secret-permissions`.
    Secrets,
    /// `permissions.keys`, `--key-permissions`.
    Keys,
    /// `permissions.certificates`, `--certificate-permissions`.
    Certificates,
}

impl Kind {
    /// `az keyvault set-policy`'s flag for this list.
    pub(super) fn flag(self) -> &'static str {
        match self {
            Kind::Secrets => "--secret-permissions",
            Kind::Keys => "--key-permissions",
            Kind::Certificates => "--certificate-permissions",
        }
    }
}

/// Whether access policy permissions grant `need`: the permission or `all`, in any case (`Get` as the portal
/// writes it).
pub(super) fn policy_allows(permissions: &Permissions, need: Need) -> bool {
    let (kind, permission) = need.permission();
    list(permissions, kind)
        .iter()
        .any(|p| p.eq_ignore_ascii_case(permission) || p.eq_ignore_ascii_case("all"))
}

/// The list of `permissions` for one kind of object.
fn list(permissions: &Permissions, kind: Kind) -> &[String] {
    match kind {
        Kind::Secrets => &permissions.secrets,
        Kind::Keys => &permissions.keys,
        Kind::Certificates => &permissions.certificates,
    }
}

/// `az keyvault set-policy`'s flags that add `missing` to what a policy already grants (`granted`): each list
/// touched is given whole, since set-policy replaces the lists it is given (`--secret-permissions list get`).
pub(super) fn set_policy_flags(missing: &BTreeSet<Need>, granted: &Permissions) -> String {
    let mut kinds: Vec<Kind> = missing.iter().map(|n| n.permission().0).collect();
    kinds.dedup();
    let mut flags = Vec::new();
    for kind in kinds {
        let already = list(granted, kind);
        let added = missing.iter().map(|n| n.permission()).filter(|(k, _)| *k == kind);
        let mut list: Vec<String> = Vec::new();
        for permission in already
            .iter()
            .map(|p| p.to_ascii_lowercase())
            .chain(added.map(|(_, p)| p.to_owned()))
        {
            if !list.contains(&permission) {
                list.push(permission);
            }
        }
        flags.push(format!("{} {}", kind.flag(), list.join(" ")));
    }
    flags.join(" ")
}

/// A role's data actions: what it grants, and what it takes away again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct DataActions {
    pub(super) allowed: Vec<String>,
    pub(super) denied: Vec<String>,
}

impl DataActions {
    /// Whether the role grants `need`: an allowed pattern matches its data action and no denied one does.
    pub(super) fn allows(&self, need: Need) -> bool {
        let action = need.data_action();
        self.allowed.iter().any(|p| matches(p, action)) && !self.denied.iter().any(|p| matches(p, action))
    }
}

/// Azure's action patterns: case-insensitive, `*` for any run of characters.
fn matches(pattern: &str, action: &str) -> bool {
    glob(&pattern.to_ascii_lowercase(), &action.to_ascii_lowercase())
}

/// The built-in roles that matter to Key Vault: (name, role definition id, data actions, not data actions). Roles
/// of the control plane (Owner, Contributor, Reader, Key Vault Contributor, Key Vault Data Access Administrator)
/// have no data actions: they read nothing in a vault.
const BUILT_IN: &[(&str, &str, &[&str], &[&str])] = &[
    (
        "Key Vault Administrator",
        "00482a5a-887f-4fb3-b363-3b7fe8e74483",
        &["Microsoft.KeyVault/vaults/*"],
        &[],
    ),
    (
        "Key Vault Certificates Officer",
        "a4417e6f-fecd-4de8-b567-7b0420556985",
        &[
            "Microsoft.KeyVault/vaults/certificatecas/*",
            "Microsoft.KeyVault/vaults/certificates/*",
            "Microsoft.KeyVault/vaults/certificatecontacts/write",
        ],
        &[],
    ),
    (
        "Key Vault Certificate User",
        "db79e9a7-68ee-4b58-9aeb-b90e7c24fcba",
        &[
            "Microsoft.KeyVault/vaults/certificates/read",
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
            "Microsoft.KeyVault/vaults/keys/read",
        ],
        &[],
    ),
    (
        "Key Vault Crypto Officer",
        "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
        &[
            "Microsoft.KeyVault/vaults/keys/*",
            "Microsoft.KeyVault/vaults/keyrotationpolicies/*",
        ],
        &[],
    ),
    (
        "Key Vault Crypto User",
        "12338af0-0e69-4776-bea7-57ae8d297424",
        &[
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/update/action",
            "Microsoft.KeyVault/vaults/keys/backup/action",
            "Microsoft.KeyVault/vaults/keys/encrypt/action",
            "Microsoft.KeyVault/vaults/keys/decrypt/action",
            "Microsoft.KeyVault/vaults/keys/wrap/action",
            "Microsoft.KeyVault/vaults/keys/unwrap/action",
            "Microsoft.KeyVault/vaults/keys/sign/action",
            "Microsoft.KeyVault/vaults/keys/verify/action",
        ],
        &[],
    ),
    (
        "Key Vault Crypto Service Encryption User",
        "e147488a-f6f5-4113-8e2d-b22465e65bf6",
        &[
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/wrap/action",
            "Microsoft.KeyVault/vaults/keys/unwrap/action",
        ],
        &[],
    ),
    (
        "Key Vault Crypto Service Release User",
        "08bbd89e-9f13-488c-ac41-acfcb10c90ab",
        &["Microsoft.KeyVault/vaults/keys/release/action"],
        &[],
    ),
    (
        "Key Vault Reader",
        "21090545-7ca7-4776-b22c-e363652d74d2",
        &[
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        ],
        &[],
    ),
    (
        "Key Vault Secrets Officer",
        "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
        &["Microsoft.KeyVault/vaults/secrets/*"],
        &[],
    ),
    (
        "Key Vault Secrets User",
        "4633458b-17de-408a-b874-0445c86b69e6",
        &[
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        ],
        &[],
    ),
    (
        "Key Vault Contributor",
        "f25e0fa2-a7c8-4377-a976-54943a77a395",
        &[],
        &[],
    ),
    (
        "Key Vault Data Access Administrator",
        "8b54135c-b56d-4d72-a534-26097cfdc8d8",
        &[],
        &[],
    ),
    ("Owner", "8e3af657-a8ff-443c-a75c-2fe8c4bcb635", &[], &[]),
    ("Contributor", "b24988ac-6180-42a0-ab88-20f7382dd24c", &[], &[]),
    ("Reader", "acdd72a7-3837-4e62-b3b5-d3d7ddd63f52", &[], &[]),
];

/// The data actions of a built-in role, by its name or its role definition id (or an ARM id ending in it).
pub(super) fn built_in(name: Option<&str>, id: Option<&str>) -> Option<(&'static str, DataActions)> {
    let id = id.map(|id| id.rsplit('/').next().unwrap_or(id));
    BUILT_IN
        .iter()
        .find(|(n, i, _, _)| {
            name.is_some_and(|name| name.eq_ignore_ascii_case(n)) || id.is_some_and(|id| id.eq_ignore_ascii_case(i))
        })
        .map(|(n, _, allowed, denied)| {
            let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
            (
                *n,
                DataActions {
                    allowed: owned(allowed),
                    denied: owned(denied),
                },
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_azure_reads_them() {
        assert!(matches(
            "Microsoft.KeyVault/vaults/*",
            "Microsoft.KeyVault/vaults/secrets/getSecret/action"
        ));
        assert!(matches(
            "microsoft.keyvault/vaults/*/read",
            "Microsoft.KeyVault/vaults/keys/read"
        ));
        assert!(!matches(
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/vaults/secrets/getSecret/action"
        ));
        assert!(matches(
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/read"
        ));
        assert!(!matches(
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/read/x"
        ));
        assert!(matches("*", "anything"));
    }

    #[test]
    fn built_in_roles_grant_what_their_definitions_say() {
        let can = |role: &str, need: Need| built_in(Some(role), None).unwrap().1.allows(need);
        assert!(can("Key Vault Secrets User", Need::SecretValue));
        assert!(can("key vault secrets user", Need::SecretVersions));
        assert!(!can("Key Vault Secrets User", Need::Key));
        assert!(!can("Key Vault Reader", Need::SecretValue));
        assert!(can("Key Vault Reader", Need::Key) && can("Key Vault Reader", Need::Certificate));
        assert!(!can("Reader", Need::SecretValue) && !can("Owner", Need::SecretValue));
        // Its definition includes secrets/getSecret/action: the private key of a certificate is a secret.
        assert!(can("Key Vault Certificate User", Need::SecretValue));
        assert!(!can("Key Vault Certificates Officer", Need::SecretValue));
        assert!(can("Key Vault Administrator", Need::SecretValue));
        let by_id = built_in(
            None,
            Some(
                "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/4633458b-17de-408a-b874-0445c86b69e6",
            ),
        );
        assert_eq!(by_id.map(|(n, _)| n), Some("Key Vault Secrets User"));
        assert!(built_in(Some("My Custom Role"), None).is_none());
    }

    #[test]
    fn policies_read_permissions_in_any_case_and_all() {
        let permissions = |secrets: &[&str], keys: &[&str], certificates: &[&str]| {
            let owned = |list: &[&str]| list.iter().map(|p| (*p).to_owned()).collect();
            Permissions {
                secrets: owned(secrets),
                keys: owned(keys),
                certificates: owned(certificates),
            }
        };
        let p = permissions(&["Get", "List"], &[], &["all"]);
        assert!(
            policy_allows(&p, Need::SecretValue)
                && policy_allows(&p, Need::SecretVersions)
                && policy_allows(&p, Need::Certificate)
        );
        assert!(!policy_allows(&p, Need::Key));
        let p = permissions(&["list"], &[], &[]);
        assert!(!policy_allows(&p, Need::SecretValue));
        let needs = BTreeSet::from([Need::SecretValue, Need::SecretVersions, Need::Key]);
        assert_eq!(
            set_policy_flags(&needs, &permissions(&[], &[], &[])),
            "--secret-permissions get list --key-permissions get"
        );
        // What the policy has in a list it touches is kept; lists it does not touch are left out.
        assert_eq!(
            set_policy_flags(
                &BTreeSet::from([Need::SecretValue]),
                &permissions(&["list"], &[], &["all"])
            ),
            "--secret-permissions list get"
        );
    }
}
