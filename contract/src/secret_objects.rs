//! `spec.secretObjects` of a SecretProviderClass: the Kubernetes Secrets to make from the objects of a mount, as
//! the Secrets Store CSI driver defines them (`pkg/util/secretutil/secret.go`), each entry validated on its own so
//! that one bad entry does not stop the others, with errors that name the field.
//!
//! Read as the driver reads them: `secretName`, `type`, `data[].objectName` and `data[].key` trimmed; `secretName`,
//! `type` and `data` required; for `kubernetes.io/tls` only the keys `tls.key` and `tls.crt`. Unlike the driver, a
//! `secretName` that Kubernetes would refuse and a name used twice in one class are reported here, before any write.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::spc::ConfigError;

/// The `type` of a TLS Secret, whose data keys are `tls.crt` and `tls.key`.
pub const TLS_TYPE: &str = "kubernetes.io/tls";

/// One entry of `secretObjects`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretObject {
    /// `secretName`: the Secret, in the class's namespace.
    pub secret_name: String,
    /// `type`, e.g. `Opaque` or `kubernetes.io/tls`.
    pub secret_type: String,
    /// `labels` copied onto the Secret.
    pub labels: BTreeMap<String, String>,
    /// `annotations` copied onto the Secret.
    pub annotations: BTreeMap<String, String>,
    /// `data`, in order.
    pub data: Vec<SecretKey>,
}

/// One `data` entry: the file of the mount (`objectName`: the object's alias if it has one, `NAME/0` for a
/// version of `objectVersionHistory`) and the Secret's key it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKey {
    /// `objectName`.
    pub object_name: String,
    /// `key`.
    pub key: String,
}

/// The entries of `spec.secretObjects` of a SecretProviderClass (the whole object, or its `spec`); none when it
/// has none. Each entry is read on its own.
pub fn parse(class: &Value) -> Vec<Result<SecretObject, ConfigError>> {
    let list = class
        .pointer("/spec/secretObjects")
        .or_else(|| class.get("secretObjects"));
    let Some(list) = list.filter(|l| !l.is_null()) else {
        return Vec::new();
    };
    let Some(entries) = list.as_array() else {
        return vec![Err(field("spec.secretObjects", "expected a list"))];
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let object = entry_of(i, entry)?;
            if let Some(first) = seen.insert(object.secret_name.clone(), i) {
                return Err(field(
                    format!("spec.secretObjects[{i}].secretName"),
                    format!("{:?} is also secretObjects[{first}]'s", object.secret_name),
                ));
            }
            Ok(object)
        })
        .collect()
}

fn field(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

fn entry_of(i: usize, entry: &Value) -> Result<SecretObject, ConfigError> {
    let at = |key: &str| format!("spec.secretObjects[{i}].{key}");
    let text = |value: Option<&Value>, key: &str| -> Result<Option<String>, ConfigError> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
            Some(other) => Err(field(at(key), format!("expected a string, found {other}"))),
        }
    };
    let secret_name = text(entry.get("secretName"), "secretName")?.ok_or_else(|| field(at("secretName"), "missing"))?;
    if !is_dns_subdomain(&secret_name) {
        return Err(field(
            at("secretName"),
            format!(
                "{secret_name:?} is not a Secret name: at most 253 lower-case letters, digits, '-' and '.', starting \
                 and ending with a letter or digit"
            ),
        ));
    }
    let secret_type = text(entry.get("type"), "type")?.ok_or_else(|| {
        field(
            at("type"),
            "missing (the CSI driver skips such an entry too): Opaque, kubernetes.io/tls, \
             kubernetes.io/dockerconfigjson, kubernetes.io/basic-auth, kubernetes.io/ssh-auth …",
        )
    })?;
    let map = |key: &str| -> Result<BTreeMap<String, String>, ConfigError> {
        match entry.get(key) {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    other => Err(field(
                        format!("{}.{k}", at(key)),
                        format!("expected a string, found {other}"),
                    )),
                })
                .collect(),
            Some(other) => Err(field(at(key), format!("expected a mapping, found {other}"))),
        }
    };
    let (labels, annotations) = (map("labels")?, map("annotations")?);
    let items = match entry.get("data") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        None | Some(Value::Null) | Some(Value::Array(_)) => {
            return Err(field(at("data"), "missing: list the objects as {objectName, key}"));
        }
        Some(other) => return Err(field(at("data"), format!("expected a list, found {other}"))),
    };
    let mut data = Vec::with_capacity(items.len());
    for (j, item) in items.iter().enumerate() {
        let item_at = format!("data[{j}]");
        let object_name = text(item.get("objectName"), &format!("{item_at}.objectName"))?
            .ok_or_else(|| field(at(&format!("{item_at}.objectName")), "missing"))?;
        let key = text(item.get("key"), &format!("{item_at}.key"))?
            .ok_or_else(|| field(at(&format!("{item_at}.key")), "missing"))?;
        if secret_type == TLS_TYPE && key != "tls.key" && key != "tls.crt" {
            return Err(field(
                at(&format!("{item_at}.key")),
                format!("{key:?}: a {TLS_TYPE} Secret has only the keys tls.key and tls.crt"),
            ));
        }
        if !is_secret_key(&key) {
            return Err(field(
                at(&format!("{item_at}.key")),
                format!("{key:?} is not a Secret key: letters, digits, '-', '_' and '.'"),
            ));
        }
        data.push(SecretKey { object_name, key });
    }
    Ok(SecretObject {
        secret_name,
        secret_type,
        labels,
        annotations,
        data,
    })
}

/// The Secrets a pod spec (a pod's or a template's `spec`) reads: env `secretKeyRef`, `envFrom` `secretRef`,
/// `secret` volumes and projected `secret` sources, of containers and init containers.
pub fn consumed_secrets(pod_spec: &Value) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut add = |name: Option<&Value>| {
        if let Some(name) = name.and_then(Value::as_str).filter(|n| !n.is_empty()) {
            names.insert(name.to_owned());
        }
    };
    let list = |value: Option<&Value>| value.and_then(Value::as_array).cloned().unwrap_or_default();
    for key in ["containers", "initContainers"] {
        for container in list(pod_spec.get(key)) {
            for env in list(container.get("env")) {
                add(env.pointer("/valueFrom/secretKeyRef/name"));
            }
            for source in list(container.get("envFrom")) {
                add(source.pointer("/secretRef/name"));
            }
        }
    }
    for volume in list(pod_spec.get("volumes")) {
        add(volume.pointer("/secret/secretName"));
        for source in list(volume.pointer("/projected/sources")) {
            add(source.pointer("/secret/name"));
        }
    }
    names
}

/// A DNS subdomain name (RFC 1123), as Kubernetes requires of a Secret's name.
pub fn is_dns_subdomain(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.starts_with(ok)
                && label.ends_with(ok)
                && label.chars().all(|c| ok(c) || c == '-')
        })
}

fn is_secret_key(key: &str) -> bool {
    key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_way_a_pod_reads_a_secret_is_found() {
        let spec = json!({
            "initContainers": [{"name": "init", "envFrom": [{"secretRef": {"name": "from-init"}}]}],
            "containers": [{"name": "app",
                "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-ref", "key": "k"}}},
                        {"name": "B", "value": "plain"}],
                "envFrom": [{"configMapRef": {"name": "not-a-secret"}}, {"secretRef": {"name": "env-from"}}]}],
            "volumes": [{"name": "v", "secret": {"secretName": "volume"}},
                        {"name": "p", "projected": {"sources": [{"secret": {"name": "projected"}},
                                                                 {"configMap": {"name": "cm"}}]}}]});
        let names: Vec<String> = consumed_secrets(&spec).into_iter().collect();
        assert_eq!(names, ["env-from", "env-ref", "from-init", "projected", "volume"]);
    }

    #[test]
    fn entries_are_read_as_the_driver_reads_them() {
        let class = json!({"spec": {"secretObjects": [
            {"secretName": " app-env ", "type": "Opaque", "labels": {"team": "a"},
             "data": [{"objectName": "db-password ", "key": "DB_PASSWORD"}]},
            {"secretName": "ingress-tls", "type": "kubernetes.io/tls",
             "data": [{"objectName": "site", "key": "tls.key"}, {"objectName": "site", "key": "tls.crt"}]},
        ]}});
        let entries: Vec<SecretObject> = parse(&class).into_iter().map(Result::unwrap).collect();
        assert_eq!(entries[0].secret_name, "app-env");
        assert_eq!(entries[0].labels["team"], "a");
        assert_eq!(
            entries[0].data,
            [SecretKey {
                object_name: "db-password".into(),
                key: "DB_PASSWORD".into()
            }]
        );
        assert_eq!(entries[1].data.len(), 2);
        assert!(parse(&json!({"spec": {"parameters": {}}})).is_empty());
    }

    #[test]
    fn each_bad_entry_is_named_and_the_others_stay() {
        let class = json!({"spec": {"secretObjects": [
            {"secretName": "no-type", "data": [{"objectName": "a", "key": "a"}]},
            {"secretName": "tls", "type": "kubernetes.io/tls", "data": [{"objectName": "a", "key": "cert.pem"}]},
            {"secretName": "Bad_Name", "type": "Opaque", "data": [{"objectName": "a", "key": "a"}]},
            {"secretName": "no-data", "type": "Opaque"},
            {"secretName": "good", "type": "Opaque", "data": [{"objectName": "a", "key": "a"}]},
            {"secretName": "good", "type": "Opaque", "data": [{"objectName": "b", "key": "b"}]},
            {"secretName": "bad-key", "type": "Opaque", "data": [{"objectName": "a", "key": "a b"}]},
        ]}});
        let errors: Vec<String> = parse(&class)
            .into_iter()
            .map(|r| r.map_or_else(|e| e.to_string(), |o| format!("ok {}", o.secret_name)))
            .collect();
        assert!(
            errors[0].starts_with("spec.secretObjects[0].type: missing"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].starts_with("spec.secretObjects[1].data[0].key: \"cert.pem\""),
            "{}",
            errors[1]
        );
        assert!(
            errors[2].starts_with("spec.secretObjects[2].secretName: \"Bad_Name\""),
            "{}",
            errors[2]
        );
        assert!(
            errors[3].starts_with("spec.secretObjects[3].data: missing"),
            "{}",
            errors[3]
        );
        assert_eq!(errors[4], "ok good");
        assert!(errors[5].contains("also secretObjects[4]'s"), "{}", errors[5]);
        assert!(
            errors[6].starts_with("spec.secretObjects[6].data[0].key"),
            "{}",
            errors[6]
        );
    }
}
