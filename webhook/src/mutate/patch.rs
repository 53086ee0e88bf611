//! Building the RFC 6902 patch: add and replace operations only, appends to one list gathered into one operation.

use super::marker::Marker;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use std::collections::HashMap;

use serde_json::{Map, Value, json};

/// One pass of the engine over a pod: what an earlier pass injected (`old`), what this one injects (`marker`), the
/// operations so far and the warnings.
pub(super) struct Pass<'a> {
    pub(super) old: &'a Marker,
    pub(super) marker: Marker,
    pub(super) ops: Ops,
    pub(super) warnings: Vec<String>,
}

impl<'a> Pass<'a> {
    pub(super) fn new(old: &'a Marker, warnings: Vec<String>) -> Self {
        Pass {
            old,
            marker: Marker::default(),
            ops: Ops::default(),
            warnings,
        }
    }
}

/// The operations of one patch. Appends are gathered per list and emitted last, so that two additions to a
/// list the pod does not have yet (a token and a secrets mount) become one `add` of the whole list.
#[derive(Default)]
pub(super) struct Ops {
    pub(super) ops: Vec<PatchOperation>,
    /// Items to append, by list pointer, in the order the lists were first appended to.
    appends: Vec<Append>,
    /// Where each list pointer is in `appends` (a pod with many containers appends to many lists).
    index: HashMap<String, usize>,
}

struct Append {
    pointer: String,
    /// Whether the list exists in the pod (then items are appended with `/-`).
    exists: bool,
    items: Vec<Value>,
}

impl Ops {
    pub(super) fn append(&mut self, pointer: String, current: Option<&Value>, items: Vec<Value>) {
        if items.is_empty() {
            return;
        }
        match self.index.get(&pointer) {
            Some(&i) => self.appends[i].items.extend(items),
            None => {
                self.index.insert(pointer.clone(), self.appends.len());
                self.appends.push(Append {
                    pointer,
                    exists: matches!(current, Some(Value::Array(_))),
                    items,
                });
            }
        }
    }

    pub(super) fn finish(self) -> Vec<PatchOperation> {
        let mut ops = self.ops;
        for Append { pointer, exists, items } in self.appends {
            if exists {
                let end = format!("{pointer}/-");
                ops.extend(items.into_iter().map(|item| add(&end, item)));
            } else {
                // Absent or null: an `add` onto an existing member replaces it (RFC 6902).
                ops.push(add(&pointer, Value::Array(items)));
            }
        }
        ops
    }
}

/// Sets `key` in the map found by following `path` from `root`, creating missing maps on the way.
pub(super) fn set_map_entry(
    root: &Map<String, Value>,
    path: &[&str],
    key: &str,
    value: Value,
    ops: &mut Vec<PatchOperation>,
) {
    let mut node = Some(root);
    let mut tokens: Vec<&str> = Vec::new();
    for (depth, segment) in path.iter().enumerate() {
        match node.and_then(|n| n.get(*segment)).and_then(Value::as_object) {
            Some(child) => {
                tokens.push(segment);
                node = Some(child);
            }
            None => {
                // Build the rest of the path as one nested object.
                let mut nested = json!({ key: value });
                for seg in path[depth + 1..].iter().rev() {
                    nested = json!({ *seg: nested });
                }
                tokens.push(segment);
                ops.push(PatchOperation::Add(AddOperation {
                    path: PointerBuf::from_tokens(tokens),
                    value: nested,
                }));
                return;
            }
        }
    }
    let exists = node.is_some_and(|n| n.contains_key(key));
    tokens.push(key);
    let path = PointerBuf::from_tokens(tokens);
    ops.push(if exists {
        PatchOperation::Replace(ReplaceOperation { path, value })
    } else {
        PatchOperation::Add(AddOperation { path, value })
    });
}

pub(super) fn add(pointer: &str, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer_buf(pointer),
        value,
    })
}

pub(super) fn replace(pointer: &str, value: Value) -> PatchOperation {
    PatchOperation::Replace(ReplaceOperation {
        path: pointer_buf(pointer),
        value,
    })
}

/// Pointers built here are made of field names and indices, none of which need escaping: parsed as they are
/// (one copy), or split into tokens and escaped should one ever need it.
pub(super) fn pointer_buf(pointer: &str) -> PointerBuf {
    PointerBuf::parse(pointer).unwrap_or_else(|_| PointerBuf::from_tokens(pointer.split('/').skip(1)))
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
