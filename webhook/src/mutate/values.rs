//! Small readers of JSON values: a map of strings, a non-empty string, the name of a JSON type for messages.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
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

/// Objects of up to this many keys are searched key by key rather than through their hash table.
const SCAN_KEYS: usize = 16;

/// A field of a JSON object by name, found the cheaper way for the object's size. The objects the engine reads (a
/// container, its env entries and mounts, metadata, a volume) have a few keys each; `serde_json`'s map finds a key
/// by hashing it with SipHash, which costs more than comparing it with a handful of keys (most differ in length).
/// Same answer as `get`: an object's keys are unique.
pub(crate) trait Fields {
    /// The value of `key`, if the object has it (`None` for anything but an object).
    fn field(&self, key: &str) -> Option<&Value>;
}

impl Fields for Map<String, Value> {
    fn field(&self, key: &str) -> Option<&Value> {
        if self.len() <= SCAN_KEYS {
            self.iter().find_map(|(k, v)| (k == key).then_some(v))
        } else {
            self.get(key)
        }
    }
}

impl Fields for Value {
    fn field(&self, key: &str) -> Option<&Value> {
        self.as_object()?.field(key)
    }
}

/// The value at `path` (object keys) under `value`: `Value::pointer` without parsing and unescaping a pointer
/// into new strings on every call.
pub(crate) fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |node, key| node.field(key))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The key-by-key search (small objects) and the hash table (large ones) give what `get` gives.
    #[test]
    fn a_field_is_what_get_finds_in_small_and_large_objects() {
        for keys in [0, 1, 5, SCAN_KEYS, SCAN_KEYS + 1, 40] {
            let object: Map<String, Value> = (0..keys).map(|i| (format!("k{i}"), json!(i))).collect();
            for i in 0..=keys {
                let key = format!("k{i}");
                assert_eq!(object.field(&key), object.get(&key), "{key} of {keys} keys");
            }
            assert_eq!(object.field("k"), None);
            let value = Value::Object(object.clone());
            assert_eq!(value.field("k0"), object.get("k0"));
        }
        // Duplicate keys in the JSON text: the last value, as `get` has it.
        let parsed: Value = serde_json::from_str(r#"{"a": 1, "b": 2, "a": 3}"#).unwrap();
        assert_eq!(parsed.field("a"), Some(&json!(3)));
        assert_eq!(json!([1]).field("a"), None);
        assert_eq!(json!("a").field("a"), None);
        assert_eq!(at(&json!({"a": {"b": {"c": 1}}}), &["a", "b", "c"]), Some(&json!(1)));
    }
}
