//! The Azure side as `az` prints it (`-o json`, the default): `az identity show`, `az identity federated-credential
//! list`, `az keyvault show`, `az role assignment list` and `az role definition list`, each a JSON object or an
//! array of them.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::Value;

use crate::input::{LoadError, Loaded};

/// A user-assigned managed identity (`az identity show`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// Its name.
    pub name: String,
    /// The application (client) id: what the ServiceAccount and the class name.
    pub client_id: String,
    /// The service principal's object id: what Key Vault grants name.
    pub principal_id: String,
    /// Its tenant.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// A federated identity credential (`az identity federated-credential list/show`).
#[derive(Debug, Clone, Deserialize)]
pub struct FederatedCredential {
    /// Its name.
    pub name: String,
    /// Its ARM id, `.../userAssignedIdentities/IDENTITY/federatedIdentityCredentials/NAME`.
    #[serde(default)]
    pub id: String,
    /// The token issuer it trusts.
    pub issuer: String,
    /// The token subject it matches (absent from a flexible credential).
    #[serde(default)]
    pub subject: Option<String>,
    /// A flexible credential's expression over the token's claims, instead of one subject.
    #[serde(default, rename = "claimsMatchingExpression")]
    pub claims_matching_expression: Option<ClaimsExpression>,
    /// The token audiences it accepts.
    #[serde(default)]
    pub audiences: Vec<String>,
}

/// A flexible federated credential's expression (`claims['sub'] matches 'system:serviceaccount:ns:*'`).
#[derive(Debug, Clone, Deserialize)]
pub struct ClaimsExpression {
    /// The expression.
    pub value: String,
}

impl FederatedCredential {
    /// Whether a token with subject `subject` matches: `None` when an expression is not one doctor can evaluate
    /// (one `claims['sub'] matches 'PATTERN'` or `claims['sub'] eq 'VALUE'`; `*` in a pattern for any run of
    /// characters), so that it never reports a credential missing that may be there.
    pub fn matches_subject(&self, subject: &str) -> Option<bool> {
        if let Some(own) = &self.subject {
            return Some(own == subject);
        }
        let expression = self.claims_matching_expression.as_ref()?.value.trim();
        let rest = expression
            .strip_prefix("claims['sub']")
            .or_else(|| expression.strip_prefix("claims[\"sub\"]"))?
            .trim_start();
        let (operator, operand) = rest.split_once(char::is_whitespace)?;
        let operand = operand.trim();
        let literal = operand.strip_prefix('\'')?.strip_suffix('\'')?;
        if literal.contains('\'') {
            return None; // more than one clause
        }
        match operator {
            "eq" => Some(literal == subject),
            "matches" => Some(glob(literal, subject)),
            _ => None,
        }
    }

    /// What it matches, for messages: the subject or the expression.
    pub fn matching(&self) -> &str {
        match (&self.subject, &self.claims_matching_expression) {
            (Some(subject), _) => subject,
            (None, Some(expression)) => &expression.value,
            (None, None) => "",
        }
    }

    /// The identity it belongs to, from its id.
    pub fn identity_name(&self) -> Option<&str> {
        let lower = self.id.to_ascii_lowercase();
        let at = lower.find("/userassignedidentities/")? + "/userassignedidentities/".len();
        self.id[at..].split('/').next()
    }
}

/// A Key Vault (`az keyvault show`).
#[derive(Debug, Clone, Deserialize)]
pub struct Vault {
    /// Its name.
    pub name: String,
    /// Its ARM id (role assignments are scoped to it or a parent).
    #[serde(default)]
    pub id: String,
    /// Access policies and the permission model.
    #[serde(default)]
    pub properties: VaultProperties,
}

/// The parts of a vault's properties doctor reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VaultProperties {
    /// Access policies (ignored by Key Vault when RBAC authorization is on).
    #[serde(default)]
    pub access_policies: Option<Vec<AccessPolicy>>,
    /// Azure RBAC instead of access policies.
    #[serde(default)]
    pub enable_rbac_authorization: Option<bool>,
    /// `https://NAME.SUFFIX/`: the suffix says the cloud.
    #[serde(default)]
    pub vault_uri: Option<String>,
}

/// One access policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicy {
    /// The principal it grants.
    pub object_id: String,
    /// What it grants.
    #[serde(default)]
    pub permissions: Permissions,
}

/// An access policy's permissions, per kind of object (`get`, `list`, ..., `all`; any case).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Permissions {
    /// On secrets.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub secrets: Vec<String>,
    /// On keys.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub keys: Vec<String>,
    /// On certificates.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub certificates: Vec<String>,
}

/// `az` prints `null` for a list that was never set.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default())
}

/// A role assignment (`az role assignment list`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignment {
    /// The principal it grants.
    pub principal_id: String,
    /// Where it applies.
    #[serde(default)]
    pub scope: String,
    /// The role's name.
    #[serde(default)]
    pub role_definition_name: Option<String>,
    /// The role's id (`.../roleDefinitions/GUID`).
    #[serde(default)]
    pub role_definition_id: Option<String>,
}

/// A role definition (`az role definition list`): what a custom role grants.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleDefinition {
    /// Its name, as role assignments show it.
    pub role_name: String,
    /// Its id (a GUID).
    #[serde(default)]
    pub name: String,
    /// What it grants.
    #[serde(default)]
    pub permissions: Vec<RolePermission>,
}

/// One permission block of a role definition.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolePermission {
    /// Data-plane actions granted (patterns with `*`).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub data_actions: Vec<String>,
    /// Data-plane actions taken away again.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub not_data_actions: Vec<String>,
}

/// Everything read from `--azure` files, each with where it came from.
#[derive(Debug, Clone, Default)]
pub struct AzureInputs {
    /// `az identity show`.
    pub identities: Vec<(Identity, Loaded)>,
    /// `az identity federated-credential list`.
    pub federated_credentials: Vec<(FederatedCredential, Loaded)>,
    /// `az keyvault show`.
    pub vaults: Vec<(Vault, Loaded)>,
    /// `az role assignment list`.
    pub role_assignments: Vec<(RoleAssignment, Loaded)>,
    /// `az role definition list`.
    pub role_definitions: Vec<(RoleDefinition, Loaded)>,
}

impl AzureInputs {
    /// The subscription ids the `az` output names (in resource ids and scopes: `/subscriptions/ID/...`).
    pub fn subscriptions(&self) -> BTreeSet<String> {
        let objects = self
            .identities
            .iter()
            .map(|(_, l)| l)
            .chain(self.federated_credentials.iter().map(|(_, l)| l))
            .chain(self.vaults.iter().map(|(_, l)| l))
            .chain(self.role_assignments.iter().map(|(_, l)| l));
        let mut ids = BTreeSet::new();
        for loaded in objects {
            let text = loaded.object.to_string();
            for rest in text.split("/subscriptions/").skip(1) {
                let id: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
                    .collect();
                if id.len() == 36 {
                    ids.insert(id.to_ascii_lowercase());
                }
            }
        }
        ids
    }

    /// Sorts what `az` printed by its shape; anything else is unreadable input.
    pub fn read(file: &str, text: &str) -> Result<Self, LoadError> {
        let mut out = AzureInputs::default();
        out.add(file, text)?;
        Ok(out)
    }

    /// Adds the objects of one more file.
    pub fn add(&mut self, file: &str, text: &str) -> Result<(), LoadError> {
        let invalid = |line: usize, message: String| LoadError::Invalid {
            path: file.to_owned(),
            line,
            message,
        };
        let value: Value = serde_json::from_str(text).map_err(|e| {
            invalid(
                e.line(),
                format!("invalid JSON: {e} (doctor reads what az prints with -o json)"),
            )
        })?;
        let items = match value {
            Value::Array(items) => items,
            other => vec![other],
        };
        let lines: Vec<&str> = text.lines().collect();
        for item in items {
            let name = item.get("name").and_then(Value::as_str).unwrap_or_default();
            let line = lines
                .iter()
                .position(|l| !name.is_empty() && l.contains(&format!("\"name\": \"{name}\"")))
                .map_or(1, |i| i + 1);
            let loaded = Loaded {
                object: item.clone(),
                source: Some(crate::input::Source::new(file, line)),
            };
            let parse_error = |what: &str, e: serde_json::Error| invalid(line, format!("{what}: {e}"));
            let has = |key: &str| item.get(key).is_some();
            let kind = item
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_ascii_lowercase();
            let federated = has("issuer") && (has("subject") || has("claimsMatchingExpression"));
            if kind.ends_with("/federatedidentitycredentials") || federated {
                let fc = serde_json::from_value(item).map_err(|e| parse_error("federated credential", e))?;
                self.federated_credentials.push((fc, loaded));
            } else if kind.ends_with("/userassignedidentities") || (has("clientId") && has("principalId")) {
                let identity = serde_json::from_value(item).map_err(|e| parse_error("managed identity", e))?;
                self.identities.push((identity, loaded));
            } else if kind == "microsoft.keyvault/vaults" {
                let vault = serde_json::from_value(item).map_err(|e| parse_error("key vault", e))?;
                self.vaults.push((vault, loaded));
            } else if kind == "microsoft.authorization/roledefinitions" || (has("roleName") && has("permissions")) {
                let definition = serde_json::from_value(item).map_err(|e| parse_error("role definition", e))?;
                self.role_definitions.push((definition, loaded));
            } else if kind == "microsoft.authorization/roleassignments" || (has("principalId") && has("scope")) {
                let assignment = serde_json::from_value(item).map_err(|e| parse_error("role assignment", e))?;
                self.role_assignments.push((assignment, loaded));
            } else {
                return Err(invalid(
                    line,
                    "not the JSON of az identity show, az identity federated-credential list, az keyvault show, \
                     az role assignment list or az role definition list"
                        .to_owned(),
                ));
            }
        }
        Ok(())
    }

    /// Adds what another reading found.
    pub fn extend(&mut self, other: AzureInputs) {
        self.identities.extend(other.identities);
        self.federated_credentials.extend(other.federated_credentials);
        self.vaults.extend(other.vaults);
        self.role_assignments.extend(other.role_assignments);
        self.role_definitions.extend(other.role_definitions);
    }

    /// How many objects were read.
    pub fn len(&self) -> usize {
        self.identities.len()
            + self.federated_credentials.len()
            + self.vaults.len()
            + self.role_assignments.len()
            + self.role_definitions.len()
    }

    /// Nothing was given.
    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
            && self.federated_credentials.is_empty()
            && self.vaults.is_empty()
            && self.role_assignments.is_empty()
            && self.role_definitions.is_empty()
    }
}

/// `pattern` with `*` for any run of characters, matched against the whole of `text`.
pub(super) fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flexible_credentials_match_the_subjects_their_expression_names() {
        let fc = |json: &str| serde_json::from_str::<FederatedCredential>(json).unwrap();
        let flexible = fc(r#"{"name": "all-of-team", "issuer": "https://i/",
            "claimsMatchingExpression": {"value": "claims['sub'] matches 'system:serviceaccount:team-*:app'", "languageVersion": 1}}"#);
        assert_eq!(flexible.matches_subject("system:serviceaccount:team-a:app"), Some(true));
        assert_eq!(flexible.matches_subject("system:serviceaccount:other:app"), Some(false));
        let exact = fc(
            r#"{"name": "e", "issuer": "https://i/", "claimsMatchingExpression": {"value": "claims['sub'] eq 'system:serviceaccount:a:b'"}}"#,
        );
        assert_eq!(exact.matches_subject("system:serviceaccount:a:b"), Some(true));
        let compound = fc(
            r#"{"name": "c", "issuer": "https://i/", "claimsMatchingExpression": {"value": "claims['sub'] matches 'x*' and claims['aud'] eq 'y'"}}"#,
        );
        assert_eq!(compound.matches_subject("xyz"), None, "not judged");
        let plain = fc(r#"{"name": "p", "issuer": "https://i/", "subject": "system:serviceaccount:a:b"}"#);
        assert_eq!(plain.matches_subject("system:serviceaccount:a:b"), Some(true));
        assert_eq!(plain.matching(), "system:serviceaccount:a:b");
    }

    #[test]
    fn az_output_is_sorted_by_shape() {
        let text = r#"[
          {"clientId": "c", "principalId": "p", "name": "mi", "type": "Microsoft.ManagedIdentity/userAssignedIdentities"},
          {"name": "fc", "issuer": "https://i/", "subject": "system:serviceaccount:a:b", "audiences": ["api://AzureADTokenExchange"],
           "id": "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi/federatedIdentityCredentials/fc"},
          {"name": "kv", "type": "Microsoft.KeyVault/vaults", "properties": {"accessPolicies": [{"objectId": "p"}]}},
          {"principalId": "p", "scope": "/subscriptions/s", "roleDefinitionName": "Key Vault Secrets User"}
        ]"#;
        let az = AzureInputs::read("az.json", text).unwrap();
        assert_eq!(az.identities[0].0.principal_id, "p");
        assert_eq!(az.federated_credentials[0].0.identity_name(), Some("mi"));
        assert_eq!(
            az.vaults[0].0.properties.access_policies.as_ref().unwrap()[0].object_id,
            "p"
        );
        assert_eq!(az.role_assignments[0].0.principal_id, "p");
        assert_eq!(az.identities[0].1.source.as_ref().unwrap().line, 2);
        let err = AzureInputs::read("x.json", r#"{"foo": 1}"#).unwrap_err().to_string();
        assert!(err.contains("not the JSON of az identity show"), "{err}");
    }
}
