//! Whether the MutatingWebhookConfigurations read would send a pod to the webhook: the API server's rule, object
//! selector and namespace selector matching, for the webhooks that serve this webhook's path.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::input::Loaded;
use crate::mutate;

/// `None` when some webhook sends the pod (or no configuration of this webhook was read: nothing to judge);
/// otherwise why none does.
pub(super) fn not_sent(
    configurations: &[&Loaded],
    namespace_labels: &BTreeMap<String, String>,
    pod: &Value,
) -> Option<String> {
    let pod_labels = mutate::string_map(mutate::at(pod, &["metadata", "labels"]));
    let mut reasons = Vec::new();
    for configuration in configurations {
        let hooks = configuration.object.get("webhooks").and_then(Value::as_array);
        for hook in hooks.into_iter().flatten().filter(|h| serves_pods(h)) {
            let name = hook.get("name").and_then(Value::as_str).unwrap_or_default();
            let namespace = matches(hook.get("namespaceSelector"), namespace_labels);
            let object = matches(hook.get("objectSelector"), &pod_labels);
            match (namespace, object) {
                (Ok(()), Ok(())) => return None,
                (Err(why), _) => reasons.push(format!("{name}: namespaceSelector {why}")),
                (_, Err(why)) => reasons.push(format!("{name}: objectSelector {why}")),
            }
        }
    }
    if reasons.is_empty() {
        return None;
    }
    let namespace = namespace_labels
        .get("kubernetes.io/metadata.name")
        .map(String::as_str)
        .unwrap_or_default();
    Some(format!(
        "no webhook of the MutatingWebhookConfiguration read sends this pod (namespace {namespace:?}) to the \
         webhook: {}",
        reasons.join("; ")
    ))
}

/// A webhook of this project (or the upstream one: same path) with a rule for pod CREATE.
fn serves_pods(hook: &Value) -> bool {
    let path = mutate::at(hook, &["clientConfig", "service", "path"])
        .or_else(|| mutate::at(hook, &["clientConfig", "url"]))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !path.ends_with("/mutate-v1-pod") && !path.ends_with("/mutate") {
        return false;
    }
    let has = |rule: &Value, key: &str, want: &str| {
        rule.get(key)
            .and_then(Value::as_array)
            .is_some_and(|l| l.iter().any(|v| v.as_str().is_some_and(|v| v == want || v == "*")))
    };
    hook.get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|r| has(r, "operations", "CREATE") && has(r, "resources", "pods"))
}

/// A label selector against labels: `Err` says which requirement fails.
fn matches(selector: Option<&Value>, labels: &BTreeMap<String, String>) -> Result<(), String> {
    let Some(selector) = selector else {
        return Ok(());
    };
    for (key, want) in mutate::string_map(selector.get("matchLabels")) {
        if labels.get(&key) != Some(&want) {
            return Err(format!("needs label {key}={want}"));
        }
    }
    let expressions = selector.get("matchExpressions").and_then(Value::as_array);
    for e in expressions.into_iter().flatten() {
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        let operator = e.get("operator").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let have = labels.get(key).map(String::as_str);
        let ok = match operator {
            "In" => have.is_some_and(|v| values.contains(&v)),
            "NotIn" => have.is_none_or(|v| !values.contains(&v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            let here = have.map_or_else(|| "no such label here".to_owned(), |v| format!("here {v:?}"));
            return Err(format!("requires {key} {operator} {values:?} ({here})"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn selectors_match_as_the_api_server_does() {
        let s = json!({"matchLabels": {"a": "1"}, "matchExpressions": [
            {"key": "n", "operator": "NotIn", "values": ["kube-system"]},
            {"key": "e", "operator": "Exists"}]});
        assert!(matches(Some(&s), &labels(&[("a", "1"), ("n", "apps"), ("e", "")])).is_ok());
        assert!(matches(Some(&s), &labels(&[("a", "1"), ("e", "")])).is_ok());
        let err = matches(Some(&s), &labels(&[("a", "1"), ("n", "kube-system"), ("e", "")])).unwrap_err();
        assert!(err.contains("NotIn"), "{err}");
        assert!(matches(Some(&s), &labels(&[("a", "2")])).is_err());
        assert!(matches(None, &labels(&[])).is_ok());
    }
}
