//! What to sync: the Azure parameters of a SecretProviderClass, exactly as the Secrets Store CSI driver's Azure
//! provider defines them, validated up front with errors that name the field.
//!
//! Accepted as a whole SecretProviderClass object, as its `spec`, or as its `parameters` map; JSON or YAML. The
//! `objects` parameter is, as in the provider, a YAML string holding `array:`, a list of YAML strings, one per
//! object.

use serde::Deserialize;
use serde_json::Value;

use crate::parse_bool;
use crate::paths::{PathConflict, check_distinct, validate_path};

/// Kind of Key Vault object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    /// A secret (also the way to get a certificate with its private key).
    Secret,
    /// A key: written as a PEM public key.
    Key,
    /// A certificate: written as the PEM leaf certificate.
    Cert,
}

/// How a secret's value is encoded in Key Vault; it is decoded before it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Written as is.
    Utf8,
    /// Base64, decoded.
    Base64,
    /// Hex, decoded.
    Hex,
}

/// Output format of a certificate-backed secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// PEM: key and chain.
    Pem,
    /// PFX (PKCS#12), only for secrets.
    Pfx,
}

/// One object to sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSpec {
    /// Name in Key Vault.
    pub name: String,
    /// Kind.
    pub object_type: ObjectType,
    /// Version; `None` for the latest (empty or `latest` in the class).
    pub version: Option<String>,
    /// File name (relative path) in the mount; defaults to the object name.
    pub file_name: String,
    /// Encoding of a secret's value.
    pub encoding: Encoding,
    /// Format of a certificate-backed secret.
    pub format: Format,
    /// File mode.
    pub mode: u32,
    /// How many versions to write (`objectVersionHistory`), 1 for the current one only.
    pub version_history: u32,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// `keyvaultName`.
    pub keyvault_name: String,
    /// `tenantId` (or `tenantID`); `None` to use `AZURE_TENANT_ID`.
    pub tenant_id: Option<String>,
    /// `clientID`; `None` to use `AZURE_CLIENT_ID`.
    pub client_id: Option<String>,
    /// `cloudName`; empty for the public cloud.
    pub cloud_name: Option<String>,
    /// The objects, in order.
    pub objects: Vec<ObjectSpec>,
}

/// A configuration that cannot be used. The message names the field (and the object, by position and name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text is neither JSON nor YAML, or not a mapping.
    #[error("the configuration is not a JSON or YAML mapping: {0}")]
    Syntax(String),
    /// A field is missing or invalid.
    #[error("{field}: {reason}")]
    Field {
        /// Where, e.g. `objects[1] (db-password).objectEncoding`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn field(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

#[derive(Deserialize)]
struct ObjectsDoc {
    #[serde(default)]
    array: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawObject {
    object_name: Option<String>,
    object_type: Option<String>,
    #[serde(default)]
    object_version: Option<String>,
    #[serde(default)]
    object_alias: Option<String>,
    #[serde(default)]
    object_encoding: Option<String>,
    #[serde(default)]
    object_format: Option<String>,
    #[serde(default)]
    file_permission: Option<String>,
    #[serde(default)]
    object_version_history: Option<Value>,
}

/// The parameters that select another identity than the pod's workload identity: the node's managed identity
/// (`useVMManagedIdentity`), AAD pod identity (`usePodIdentity`), the token proxy (`useAzureTokenProxy`).
pub const IDENTITY_MODES: [&str; 3] = ["usePodIdentity", "useVMManagedIdentity", "useAzureTokenProxy"];

/// Parses a configuration (a SecretProviderClass, its spec, or its parameters; JSON or YAML).
pub fn parse(text: &str) -> Result<SyncConfig, ConfigError> {
    let value: Value = crate::yaml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
    from_value(&value)
}

/// Reads a configuration already parsed.
pub fn from_value(value: &Value) -> Result<SyncConfig, ConfigError> {
    let params = value
        .pointer("/spec/parameters")
        .or_else(|| value.get("parameters"))
        .unwrap_or(value);
    let Some(map) = params.as_object() else {
        return Err(ConfigError::Syntax("expected a mapping of parameters".to_owned()));
    };
    if let Some(provider) = value.pointer("/spec/provider").and_then(Value::as_str)
        && provider != "azure"
    {
        return Err(field(
            "spec.provider",
            format!("{provider:?}: only \"azure\" is supported"),
        ));
    }
    let text = |key: &str| -> Result<Option<String>, ConfigError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(other) => Err(field(key, format!("expected a string, found {other}"))),
        }
    };
    // Read as the provider reads them (Go's strconv.ParseBool): "1" is true too, and "yes" is an error.
    for mode in IDENTITY_MODES {
        match text(mode)?.map(|v| (parse_bool(&v), v)) {
            None | Some((Some(false), _)) => {}
            Some((Some(true), _)) => {
                return Err(field(
                    mode,
                    "is true: wi-sidecar uses the pod's workload identity only; set clientID and remove it",
                ));
            }
            Some((None, value)) => {
                return Err(field(
                    mode,
                    format!("{value:?} is not a boolean: expected \"true\" or \"false\""),
                ));
            }
        }
    }
    let keyvault_name = text("keyvaultName")?.ok_or_else(|| field("keyvaultName", "missing"))?;
    check_keyvault_name(&keyvault_name)?;
    let tenant_id = match text("tenantId")? {
        Some(t) => Some(t),
        None => text("tenantID")?,
    };
    let objects_text = text("objects")?.ok_or_else(|| field("objects", "missing"))?;
    let objects = parse_objects(&objects_text)?;
    Ok(SyncConfig {
        keyvault_name,
        tenant_id,
        client_id: text("clientID")?,
        cloud_name: text("cloudName")?,
        objects,
    })
}

/// Checks a vault name as Azure does: 3 to 24 letters, digits and single hyphens, starting with a letter and not
/// ending with a hyphen.
pub fn check_keyvault_name(name: &str) -> Result<(), ConfigError> {
    let valid = (3..=24).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--");
    if valid {
        return Ok(());
    }
    Err(field(
        "keyvaultName",
        format!(
            "{name:?} is not a Key Vault name: Azure allows 3 to 24 letters, digits and single hyphens, starting \
             with a letter ({} characters here)",
            name.chars().count()
        ),
    ))
}

/// Parses the `objects` parameter: a YAML string holding `array:`, a list of YAML strings, one object each.
pub fn parse_objects(text: &str) -> Result<Vec<ObjectSpec>, ConfigError> {
    let doc: ObjectsDoc = crate::yaml::from_str(text)
        .map_err(|e| field("objects", format!("not a YAML document with an `array:` list: {e}")))?;
    if doc.array.is_empty() {
        return Err(field("objects", "the array is empty"));
    }
    let mut objects = Vec::with_capacity(doc.array.len());
    for (i, entry) in doc.array.iter().enumerate() {
        let raw: RawObject = crate::yaml::from_str(entry)
            .map_err(|e| field(format!("objects[{i}]"), format!("not a YAML mapping: {e}")))?;
        objects.push(object(i, raw)?);
    }
    if let Err(conflict) = check_distinct(objects.iter().map(|o| o.file_name.as_str())) {
        let (PathConflict::Same { first, second } | PathConflict::FileAsDirectory { first, second }) = conflict;
        let (object, other) = (&objects[second], &objects[first]);
        let reason = match conflict {
            PathConflict::Same { .. } => format!("writes {:?}, like objects[{first}]", object.file_name),
            PathConflict::FileAsDirectory { .. } => format!(
                "writes {:?}, and objects[{first}] writes {:?}: one would have to be a file and a directory",
                object.file_name, other.file_name
            ),
        };
        return Err(field(
            format!("objects[{second}] ({})", object.name),
            format!("{reason}; set objectAlias"),
        ));
    }
    Ok(objects)
}

fn object(i: usize, raw: RawObject) -> Result<ObjectSpec, ConfigError> {
    let name = raw
        .object_name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| field(format!("objects[{i}].objectName"), "missing"))?;
    let at = |key: &str| format!("objects[{i}] ({name}).{key}");
    if !(1..=127).contains(&name.len()) || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(field(
            at("objectName"),
            format!("{name:?}: 1 to 127 letters, digits and hyphens"),
        ));
    }
    let object_type = match raw.object_type.as_deref().map(str::trim) {
        Some("secret") => ObjectType::Secret,
        Some("key") => ObjectType::Key,
        Some("cert") => ObjectType::Cert,
        Some(other) => {
            return Err(field(
                at("objectType"),
                format!("{other:?}: expected secret, key or cert"),
            ));
        }
        None => return Err(field(at("objectType"), "missing: expected secret, key or cert")),
    };
    let version = raw
        .object_version
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("latest"));
    let file_name = raw
        .object_alias
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| name.clone());
    validate_path(&file_name).map_err(|e| field(at("objectAlias"), e.to_string()))?;
    let encoding = match raw
        .object_encoding
        .as_deref()
        .map(|e| e.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("utf-8") | Some("utf8") => Encoding::Utf8,
        Some("base64") => Encoding::Base64,
        Some("hex") => Encoding::Hex,
        Some(other) => {
            return Err(field(
                at("objectEncoding"),
                format!("{other:?}: expected utf-8, base64 or hex"),
            ));
        }
    };
    if encoding != Encoding::Utf8 && object_type != ObjectType::Secret {
        return Err(field(at("objectEncoding"), "only applies to secrets"));
    }
    let format = match raw
        .object_format
        .as_deref()
        .map(|f| f.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("pem") => Format::Pem,
        Some("pfx") => Format::Pfx,
        Some(other) => return Err(field(at("objectFormat"), format!("{other:?}: expected pem or pfx"))),
    };
    if format == Format::Pfx && object_type != ObjectType::Secret {
        return Err(field(at("objectFormat"), "pfx only applies to secrets"));
    }
    let mode = match raw.file_permission.as_deref().map(str::trim) {
        None | Some("") => 0o644,
        Some(octal) => u32::from_str_radix(octal.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                field(
                    at("filePermission"),
                    format!("{octal:?}: expected an octal mode such as 0644"),
                )
            })?,
    };
    let version_history = match raw.object_version_history {
        None | Some(Value::Null) => 1,
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        Some(_) => 0,
    };
    if version_history == 0 {
        return Err(field(at("objectVersionHistory"), "expected a positive whole number"));
    }
    Ok(ObjectSpec {
        name,
        object_type,
        version,
        file_name,
        encoding,
        format,
        mode,
        version_history,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLASS: &str = r#"
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: kv
spec:
  provider: azure
  parameters:
    usePodIdentity: "false"
    clientID: 6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b
    keyvaultName: kv-techventure-001
    tenantId: d2f0c8a4-3b1e-4c6d-9e8f-7a6b5c4d3e2f
    objects: |
      array:
        - |
          objectName: MyWebAppSecret
          objectType: secret
        - |
          objectName: blob
          objectType: secret
          objectAlias: data/blob.bin
          objectEncoding: base64
          filePermission: "0600"
          objectVersion: 0a1b2c
        - |
          objectName: signing
          objectType: key
        - |
          objectName: web
          objectType: cert
          objectVersionHistory: 3
"#;

    #[test]
    fn a_class_in_workload_identity_mode_parses() {
        let config = parse(CLASS).unwrap();
        assert_eq!(config.keyvault_name, "kv-techventure-001");
        assert_eq!(
            config.client_id.as_deref(),
            Some("6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b")
        );
        assert_eq!(config.objects.len(), 4);
        assert_eq!(
            config.objects[1],
            ObjectSpec {
                name: "blob".into(),
                object_type: ObjectType::Secret,
                version: Some("0a1b2c".into()),
                file_name: "data/blob.bin".into(),
                encoding: Encoding::Base64,
                format: Format::Pem,
                mode: 0o600,
                version_history: 1,
            }
        );
        assert_eq!(config.objects[0].file_name, "MyWebAppSecret");
        assert_eq!(config.objects[0].mode, 0o644);
        assert_eq!(config.objects[3].version_history, 3);
        // The parameters map alone, as JSON, gives the same.
        let value: Value = crate::yaml::from_str(CLASS).unwrap();
        let params = serde_json::to_string(&value["spec"]["parameters"]).unwrap();
        assert_eq!(parse(&params).unwrap(), config);
    }

    fn with_object(object: &str) -> String {
        format!(
            "keyvaultName: kv1x\nobjects: |\n  array:\n    - |\n{}",
            object.lines().map(|l| format!("      {l}\n")).collect::<String>()
        )
    }

    #[test]
    fn bad_configuration_names_the_field() {
        let cases = [
            ("objects: \"array: []\"\n", "keyvaultName: missing"),
            (
                "keyvaultName: a_b\nobjects: x\n",
                "keyvaultName: \"a_b\" is not a Key Vault name",
            ),
            (
                "keyvaultName: kv-techventure-secrets-001\nobjects: x\n",
                "keyvaultName: \"kv-techventure-secrets-001\" is not a Key Vault name: Azure allows 3 to 24",
            ),
            (
                "keyvaultName: kv1x\nuseVMManagedIdentity: \"true\"\nobjects: x\n",
                "useVMManagedIdentity: is true",
            ),
            // Read as the provider and the webhook read booleans: "1" is true (it once passed here while the
            // webhook warned about it), and a value that is no boolean is an error.
            (
                "keyvaultName: kv1x\nusePodIdentity: \"1\"\nobjects: x\n",
                "usePodIdentity: is true",
            ),
            (
                "keyvaultName: kv1x\nuseVMManagedIdentity: \"yes\"\nobjects: x\n",
                "useVMManagedIdentity: \"yes\" is not a boolean",
            ),
            ("keyvaultName: kv1x\n", "objects: missing"),
            (
                "keyvaultName: kv1x\nobjects: \"array: []\"\n",
                "objects: the array is empty",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err:?} should start with {expected:?}");
        }
        let object_cases = [
            ("objectType: secret", "objects[0].objectName: missing"),
            ("objectName: a\nobjectType: blob", "objects[0] (a).objectType: \"blob\""),
            (
                "objectName: a\nobjectType: secret\nobjectAlias: ../etc/passwd",
                "objects[0] (a).objectAlias: invalid file path",
            ),
            (
                "objectName: a\nobjectType: key\nobjectEncoding: hex",
                "objects[0] (a).objectEncoding: only applies to secrets",
            ),
            (
                "objectName: a\nobjectType: cert\nobjectFormat: pfx",
                "objects[0] (a).objectFormat: pfx only",
            ),
            (
                "objectName: a\nobjectType: secret\nfilePermission: \"rw\"",
                "objects[0] (a).filePermission",
            ),
            (
                "objectName: a\nobjectType: secret\nobjectVersionHistory: 0",
                "objects[0] (a).objectVersionHistory",
            ),
        ];
        for (object, expected) in object_cases {
            let err = parse(&with_object(object)).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err:?} should start with {expected:?}");
        }
    }

    #[test]
    fn two_objects_writing_one_file_are_refused() {
        let text = "keyvaultName: kv1x\nobjects: |\n  array:\n    - |\n      objectName: a\n      objectType: secret\n    - |\n      objectName: b\n      objectType: secret\n      objectAlias: a\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(
            err.contains("objects[1] (b)") && err.contains("like objects[0]"),
            "{err}"
        );
        // The same file spelled another way, and a file another object needs as a directory (the second found by
        // the `paths` fuzz target in the atomic writer).
        let two = |alias_a: &str, alias_b: &str| {
            format!(
                "keyvaultName: kv1x\nobjects: |\n  array:\n    - |\n      objectName: a\n      objectType: secret\n      \
                 objectAlias: {alias_a}\n    - |\n      objectName: b\n      objectType: secret\n      objectAlias: {alias_b}\n"
            )
        };
        let err = parse(&two("d/f", "d//f")).unwrap_err().to_string();
        assert!(err.starts_with("objects[1] (b): "), "{err}");
        assert!(err.contains(r#"writes "d//f", like objects[0]"#), "{err}");
        let err = parse(&two("d/f", "d")).unwrap_err().to_string();
        assert!(
            err.contains(r#"writes "d", and objects[0] writes "d/f": one would have to be a file and a directory"#),
            "{err}"
        );
        assert!(parse(&two("d/f", "d/g")).is_ok());
    }
}
