//! Building the RFC 6902 patch: add and replace operations only, appends to one list gathered into one operation.
//!
//! Each operation's value is encoded as JSON when the operation is made (from a `Value`, or straight from a small
//! struct such as [`EnvVar`]), so that the patch is written once and never held as a tree of `Value`s.

use std::fmt;

use serde::Serialize;
use serde_json::value::{RawValue, to_raw_value};
use serde_json::{Map, Value};

use super::denial::Denial;
use super::values::Fields as _;

/// An RFC 6902 JSON patch made of `add` and `replace` operations, kept as the JSON text the AdmissionReview
/// response carries (before base64): written once, as the operations are made, never held as `Value`s.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Patch {
    json: Vec<u8>,
    len: usize,
}

impl fmt::Debug for Patch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.to_json()))
    }
}

impl Patch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The patch as JSON text.
    pub fn to_json(&self) -> &[u8] {
        if self.json.is_empty() { b"[]" } else { &self.json }
    }

    /// The patch decoded as a [`json_patch::Patch`], to apply it (`json_patch::patch`) or look at its operations.
    pub fn to_json_patch(&self) -> Result<json_patch::Patch, serde_json::Error> {
        serde_json::from_slice(self.to_json())
    }
}

/// An env var as a pod spec writes it, encoded without building a `Value`.
#[derive(Serialize)]
pub(super) struct EnvVar<'a> {
    pub(super) name: &'a str,
    pub(super) value: &'a str,
}

/// A read-only mount the engine wants containers to have, encoded once to be copied into the patch per container.
pub(super) struct WantedMount<'a> {
    pub(super) name: &'static str,
    pub(super) path: &'a str,
    /// `{"name":...,"mountPath":...,"readOnly":true}`.
    pub(super) json: Vec<u8>,
}

impl<'a> WantedMount<'a> {
    pub(super) fn mount(name: &'static str, path: &'a str) -> Result<Self, Denial> {
        let mut json = Vec::with_capacity(48 + name.len() + path.len());
        json.extend_from_slice(b"{\"name\":");
        write_str(&mut json, name)?;
        json.extend_from_slice(b",\"mountPath\":");
        write_str(&mut json, path)?;
        json.extend_from_slice(b",\"readOnly\":true}");
        Ok(WantedMount { name, path, json })
    }

    /// The mount as a `Value` (decoded from its one encoding), to compare with what a container has.
    pub(super) fn value(&self) -> Result<Value, Denial> {
        serde_json::from_slice(&self.json).map_err(encoding)
    }
}

/// A value encoded as JSON. Values made of strings, numbers and string-keyed maps always encode; if one did not,
/// the pod is refused rather than patched with less than it needs.
pub(super) fn raw<T: Serialize + ?Sized>(value: &T) -> Result<Box<RawValue>, Denial> {
    to_raw_value(value).map_err(encoding)
}

pub(super) fn encoding(e: serde_json::Error) -> Denial {
    Denial::Internal(format!("cannot encode the patch: {e}"))
}

/// Writes `value` as JSON at the end of `out`.
pub(super) fn write_value(out: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) -> Result<(), Denial> {
    serde_json::to_writer(&mut *out, value).map_err(encoding)
}

/// Writes `text` as a JSON string: quoted as it is when nothing in it needs escaping (names, UUIDs, paths, URLs),
/// by `serde_json` otherwise.
pub(super) fn write_str(out: &mut Vec<u8>, text: &str) -> Result<(), Denial> {
    if needs_escaping(text) {
        return write_value(out, text);
    }
    out.reserve(text.len() + 2);
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
    Ok(())
}

/// Whether a JSON string of `text` has an escape in it.
pub(super) fn needs_escaping(text: &str) -> bool {
    text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
}

/// Operations in the order they were made, as JSON text.
#[derive(Default)]
pub(super) struct OpList {
    json: Vec<u8>,
    len: usize,
}

impl OpList {
    /// Room for about `bytes` of operations.
    pub(super) fn with_capacity(bytes: usize) -> Self {
        OpList {
            json: Vec::with_capacity(bytes),
            len: 0,
        }
    }
}

impl OpList {
    /// An `add` of `value` at `pointer`.
    pub(super) fn add(&mut self, pointer: &str, value: &(impl Serialize + ?Sized)) -> Result<(), Denial> {
        self.push("add", pointer, "", |out| write_value(out, value))
    }

    /// A `replace` of what is at `pointer` with `value`.
    pub(super) fn replace(&mut self, pointer: &str, value: &(impl Serialize + ?Sized)) -> Result<(), Denial> {
        self.push("replace", pointer, "", |out| write_value(out, value))
    }

    /// A `replace` of what is at `pointer` with a value already encoded as JSON.
    pub(super) fn replace_raw(&mut self, pointer: &str, json: &[u8]) -> Result<(), Denial> {
        self.push("replace", pointer, "", |out| {
            out.extend_from_slice(json);
            Ok(())
        })
    }

    /// One operation on `pointer` followed by `suffix`; `value` writes its value.
    fn push(
        &mut self,
        op: &str,
        pointer: &str,
        suffix: &str,
        value: impl FnOnce(&mut Vec<u8>) -> Result<(), Denial>,
    ) -> Result<(), Denial> {
        let out = &mut self.json;
        out.push(if self.len == 0 { b'[' } else { b',' });
        out.extend_from_slice(b"{\"op\":\"");
        out.extend_from_slice(op.as_bytes());
        out.extend_from_slice(b"\",\"path\":");
        // Pointers are made of field names, indices and `-`: nothing to escape, but a name that needed it would be.
        if needs_escaping(pointer) || needs_escaping(suffix) {
            write_value(out, &format!("{pointer}{suffix}"))?;
        } else {
            out.push(b'"');
            out.extend_from_slice(pointer.as_bytes());
            out.extend_from_slice(suffix.as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b",\"value\":");
        value(out)?;
        out.push(b'}');
        self.len += 1;
        Ok(())
    }

    pub(super) fn into_patch(mut self) -> Patch {
        if self.len > 0 {
            self.json.push(b']');
        }
        Patch {
            json: self.json,
            len: self.len,
        }
    }
}

/// A list of the pod the engine appends to: a container's (by its place in the pod's containers) or the pod's.
#[derive(Clone, Copy)]
pub(super) enum List {
    Env(usize),
    Mounts(usize),
    Volumes,
}

/// The operations of one patch. Appends are gathered per list and emitted last, so that two additions to a
/// list the pod does not have yet (a token and a secrets mount) become one `add` of the whole list.
#[derive(Default)]
pub(super) struct Ops {
    ops: OpList,
    /// The lists appended to, in the order they were first appended to.
    lists: Vec<Appended>,
    /// Where each container's env and volumeMounts are in `lists`, by container; and the pod's volumes.
    containers: Vec<[Option<usize>; 2]>,
    volumes: Option<usize>,
    /// Every item appended, as JSON one after the other, and which list each went to and where it is.
    items: Vec<u8>,
    entries: Vec<(usize, std::ops::Range<usize>)>,
}

struct Appended {
    pointer: String,
    /// Whether the list exists in the pod (then items are appended with `/-`).
    exists: bool,
}

impl Ops {
    /// Room for the operations of a pod of `containers` containers.
    pub(super) fn for_containers(containers: usize) -> Self {
        Ops {
            // About what one container's env, mount and record take in the patch, and the volumes.
            ops: OpList::with_capacity(1024 + 512 * containers),
            items: Vec::with_capacity(512 + 384 * containers),
            entries: Vec::with_capacity(2 + 5 * containers),
            ..Ops::default()
        }
    }

    pub(super) fn replace(&mut self, pointer: &str, value: &(impl Serialize + ?Sized)) -> Result<(), Denial> {
        self.ops.replace(pointer, value)
    }

    /// A `replace` of what is at `pointer` with a value already encoded as JSON.
    pub(super) fn replace_raw(&mut self, pointer: &str, json: &[u8]) -> Result<(), Denial> {
        self.ops.replace_raw(pointer, json)
    }

    /// Appends an item already encoded as JSON to `list`, found at `pointer` and `current` in the pod.
    pub(super) fn append_raw(
        &mut self,
        list: List,
        pointer: impl FnOnce() -> String,
        current: Option<&Value>,
        json: &[u8],
    ) {
        let list = self.list(list, pointer, current);
        self.push_raw(list, json);
    }

    /// Appends `item` to `list`, found at `pointer` and `current` in the pod (the engine encodes its items first and
    /// uses [`append_raw`](Self::append_raw); the tests append values).
    #[cfg(test)]
    pub(super) fn append(
        &mut self,
        list: List,
        pointer: impl FnOnce() -> String,
        current: Option<&Value>,
        item: &(impl Serialize + ?Sized),
    ) -> Result<(), Denial> {
        let list = self.list(list, pointer, current);
        self.push(list, item)
    }

    /// Where `list` (found at `pointer` and `current` in the pod) is, to [`push`](Self::push) items onto.
    pub(super) fn list(&mut self, list: List, pointer: impl FnOnce() -> String, current: Option<&Value>) -> usize {
        let slot = match list {
            List::Env(c) | List::Mounts(c) => {
                if self.containers.len() <= c {
                    self.containers.resize(c + 1, [None; 2]);
                }
                &mut self.containers[c][usize::from(matches!(list, List::Mounts(_)))]
            }
            List::Volumes => &mut self.volumes,
        };
        match *slot {
            Some(i) => i,
            None => {
                let i = self.lists.len();
                *slot = Some(i);
                self.lists.push(Appended {
                    pointer: pointer(),
                    exists: matches!(current, Some(Value::Array(_))),
                });
                i
            }
        }
    }

    /// Appends `item` to a list of [`list`](Self::list).
    pub(super) fn push(&mut self, list: usize, item: &(impl Serialize + ?Sized)) -> Result<(), Denial> {
        let start = self.items.len();
        write_value(&mut self.items, item)?;
        self.entries.push((list, start..self.items.len()));
        Ok(())
    }

    /// Appends an item already encoded as JSON to a list of [`list`](Self::list).
    pub(super) fn push_raw(&mut self, list: usize, json: &[u8]) {
        let start = self.items.len();
        self.items.extend_from_slice(json);
        self.entries.push((list, start..self.items.len()));
    }

    /// The operations, the gathered appends last.
    pub(super) fn finish(self) -> Result<OpList, Denial> {
        let Ops {
            mut ops,
            lists,
            items,
            mut entries,
            ..
        } = self;
        // Each item, grouped by list in the order the lists were first appended to (a stable sort keeps the items
        // of one list in the order they were appended; they mostly come grouped already).
        if !entries.is_sorted_by_key(|(list, _)| *list) {
            entries.sort_by_key(|(list, _)| *list);
        }
        let mut spans = entries.as_slice();
        for (i, Appended { pointer, exists }) in lists.iter().enumerate() {
            let n = spans.iter().take_while(|(list, _)| *list == i).count();
            let (these, rest) = spans.split_at(n);
            spans = rest;
            if *exists {
                for (_, item) in these {
                    ops.push("add", pointer, "/-", |out| {
                        out.extend_from_slice(&items[item.clone()]);
                        Ok(())
                    })?;
                }
            } else {
                // Absent or null: an `add` onto an existing member replaces it (RFC 6902).
                ops.push("add", pointer, "", |out| {
                    out.push(b'[');
                    for (n, (_, item)) in these.iter().enumerate() {
                        if n > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(&items[item.clone()]);
                    }
                    out.push(b']');
                    Ok(())
                })?;
            }
        }
        Ok(ops)
    }
}

/// Sets `key` in the map found by following `path` from `root`, creating missing maps on the way.
pub(super) fn set_map_entry(
    root: &Map<String, Value>,
    path: &[&str],
    key: &str,
    value: &dyn Fn(&mut Vec<u8>) -> Result<(), Denial>,
    ops: &mut OpList,
) -> Result<(), Denial> {
    let mut node = Some(root);
    let mut pointer = String::with_capacity(16 + path.iter().map(|s| s.len() + 1).sum::<usize>() + key.len());
    for (depth, segment) in path.iter().enumerate() {
        pointer.push('/');
        pointer.push_str(&escape(segment));
        match node.and_then(|n| n.field(segment)).and_then(Value::as_object) {
            Some(child) => node = Some(child),
            None => {
                // The rest of the path as one nested object.
                let keys = path[depth + 1..].iter().chain([&key]);
                return ops.push("add", &pointer, "", |out| {
                    let mut depth = 0;
                    for key in keys {
                        out.push(b'{');
                        write_str(out, key)?;
                        out.push(b':');
                        depth += 1;
                    }
                    value(out)?;
                    out.extend(std::iter::repeat_n(b'}', depth));
                    Ok(())
                });
            }
        }
    }
    let exists = node.is_some_and(|n| n.field(key).is_some());
    pointer.push('/');
    pointer.push_str(&escape(key));
    ops.push(if exists { "replace" } else { "add" }, &pointer, "", value)
}

/// A JSON pointer token for `name` (RFC 6901): `~` and `/` escaped.
fn escape(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains(['~', '/']) {
        name.replace('~', "~0").replace('/', "~1").into()
    } else {
        name.into()
    }
}

/// Whether `actual` has everything `want` has. Extra fields in `actual` (defaults the API server filled in
/// between two passes, such as a projected volume's `defaultMode`) do not count as a difference.
pub(super) fn contains(actual: &Value, want: &Value) -> bool {
    match (actual, want) {
        (Value::Object(a), Value::Object(w)) => w.iter().all(|(k, wv)| a.get(k).is_some_and(|av| contains(av, wv))),
        (Value::Array(a), Value::Array(w)) => a.len() == w.len() && a.iter().zip(w).all(|(av, wv)| contains(av, wv)),
        _ => actual == want,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn appends_are_gathered_per_list_after_the_other_operations() {
        let mut ops = Ops::default();
        let (absent, present) = (None, Some(json!([{"name": "kube-api-access"}])));
        ops.append(
            List::Mounts(0),
            || "/spec/containers/0/volumeMounts".into(),
            present.as_ref(),
            &json!({"name": "a"}),
        )
        .unwrap();
        ops.append(
            List::Env(0),
            || "/spec/containers/0/env".into(),
            absent,
            &EnvVar { name: "A", value: "1" },
        )
        .unwrap();
        ops.append(List::Volumes, || "/spec/volumes".into(), absent, &json!({"name": "v1"}))
            .unwrap();
        // A second item for a list appended to before, after other lists.
        ops.append(
            List::Mounts(0),
            || unreachable!("the pointer is made once"),
            present.as_ref(),
            &json!({"name": "b"}),
        )
        .unwrap();
        ops.append(
            List::Env(0),
            || unreachable!(),
            absent,
            &EnvVar {
                name: "B",
                value: "q\"uote",
            },
        )
        .unwrap();
        ops.replace("/metadata/labels/x", "y").unwrap();
        let patch = ops.finish().unwrap().into_patch();
        let expected = json!([
            {"op": "replace", "path": "/metadata/labels/x", "value": "y"},
            {"op": "add", "path": "/spec/containers/0/volumeMounts/-", "value": {"name": "a"}},
            {"op": "add", "path": "/spec/containers/0/volumeMounts/-", "value": {"name": "b"}},
            {"op": "add", "path": "/spec/containers/0/env", "value": [
                {"name": "A", "value": "1"}, {"name": "B", "value": "q\"uote"}]},
            {"op": "add", "path": "/spec/volumes", "value": [{"name": "v1"}]},
        ]);
        assert_eq!(serde_json::from_slice::<Value>(patch.to_json()).unwrap(), expected);
        assert_eq!(patch.len(), 5);
        assert_eq!(patch.to_json_patch().unwrap().0.len(), 5);
    }

    /// The hand-written encoders give what `serde_json` gives, escapes included.
    #[test]
    fn hand_encoded_strings_and_mounts_are_serde_json() {
        for text in [
            "plain",
            "",
            "/var/run/secrets",
            "q\"uote",
            "back\\slash",
            "tab\tnewline\n",
            "\u{1}",
            "é✓",
        ] {
            let mut out = Vec::new();
            write_str(&mut out, text).unwrap();
            assert_eq!(out, serde_json::to_vec(text).unwrap(), "{text:?}");
            let mount = WantedMount::mount("v", text).unwrap();
            assert_eq!(
                mount.value().unwrap(),
                json!({"name": "v", "mountPath": text, "readOnly": true})
            );
        }
    }

    /// Whatever `serde_json` escapes is found to need escaping, and nothing else.
    #[test]
    fn an_escape_is_found_exactly_where_serde_json_writes_one() {
        for text in [
            "",
            "plain",
            "é✓",
            " ",
            "\u{7f}",
            "~",
            "q\"uote",
            "back\\slash",
            "new\nline",
            "\u{0}",
            "\u{1f}",
        ] {
            let escaped = serde_json::to_string(text).unwrap();
            assert_eq!(needs_escaping(text), escaped.len() != text.len() + 2, "{text:?}");
        }
    }

    #[test]
    fn an_empty_patch_is_an_empty_list_and_odd_names_are_escaped() {
        let patch = OpList::default().into_patch();
        assert!(patch.is_empty());
        assert_eq!(patch.to_json(), b"[]");

        let mut ops = OpList::default();
        let pod = json!({"metadata": {}});
        set_map_entry(
            pod.as_object().unwrap(),
            &["metadata", "annotations"],
            "a/b~\"c",
            &|out| write_value(out, "v"),
            &mut ops,
        )
        .unwrap();
        let patch = ops.into_patch();
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &patch.to_json_patch().unwrap()).unwrap();
        assert_eq!(patched, json!({"metadata": {"annotations": {"a/b~\"c": "v"}}}));
    }
}
