//! Small readers of JSON values: a map of strings, a non-empty string, the name of a JSON type for messages.

use std::collections::BTreeMap;

use serde_json::Value;
use wi_contract::{PROJECT_PREFIX, UPSTREAM_PREFIX};

/// The string entries of a JSON object (labels, annotations); empty for anything else.
pub(crate) fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    string_map_where(value, |_| true)
}

/// The string entries of a JSON object whose keys `keep` accepts.
fn string_map_where(value: Option<&Value>, keep: impl Fn(&str) -> bool) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, _)| keep(k))
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the engine reads or warns about a key: those under the contract's prefixes, matched
/// case-insensitively like the engine's look-alike check.
pub(crate) fn is_contract_key(key: &str) -> bool {
    let prefix = |p: &str| {
        let p = p.trim_end_matches('/');
        key.len() >= p.len() && key.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
    };
    prefix(UPSTREAM_PREFIX) || prefix(PROJECT_PREFIX)
}

/// The string entries of a JSON object (labels, annotations) whose keys are [contract keys](is_contract_key): all
/// the engine reads of a pod's labels and annotations.
pub(crate) fn contract_string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    string_map_where(value, is_contract_key)
}

/// The value at `path` (object keys) under `value`: `Value::pointer` without parsing and unescaping a pointer
/// into new strings on every call.
pub(crate) fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |node, key| node.get(*key))
}

/// A value that is there and not blank, trimmed.
pub(crate) fn non_empty(value: Option<&String>) -> Option<&str> {
    value.map(|v| v.trim()).filter(|v| !v.is_empty())
}

pub(super) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
