//! Reading the objects the command line is given (`mutate`'s files, `doctor -f`): files, folders and standard
//! input, each holding YAML documents (`---` separated), JSON objects or arrays, and `List`s; every object keeps the
//! file and line it came from. Standard input (`-`) is read at most once.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

/// An input that cannot be read: the command exits 2 with this one-line message.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not YAML or JSON, or a document is not an object.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// The line where the document (or the parser's complaint) is.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// `-` given more than once.
    #[error("standard input (-) can be read only once")]
    StdinTwice,
}

/// One object read, with where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The object.
    pub object: Value,
    /// Where it came from; `None` for objects read from the cluster.
    pub source: Option<Source>,
}

/// The file and the document of an object.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file as given (`-` shows as `<stdin>`).
    pub file: String,
    /// The first line of the object's document (1-based).
    pub line: usize,
    /// The document's lines, to find the line of a key.
    lines: Arc<[String]>,
}

impl Source {
    /// A source without the document's text (objects of `az` output).
    pub fn new(file: &str, line: usize) -> Self {
        Source {
            file: file.to_owned(),
            line,
            lines: Arc::from(Vec::new()),
        }
    }

    /// The line of the first line of the document holding `needle` (a key such as `useVMManagedIdentity`), or
    /// the document's first line.
    pub fn line_of(&self, needle: &str) -> usize {
        self.lines
            .iter()
            .position(|l| l.contains(needle))
            .map_or(self.line, |i| self.line + i)
    }
}

impl Loaded {
    /// `kind`, or empty.
    pub fn kind(&self) -> &str {
        self.object.get("kind").and_then(Value::as_str).unwrap_or_default()
    }

    /// `metadata.name`, or empty.
    pub fn name(&self) -> &str {
        self.object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// The command's inputs: paths read through it share one standard input, which `-` reads at most once.
pub struct Inputs<'a> {
    stdin: &'a mut dyn Read,
    stdin_used: bool,
}

impl<'a> Inputs<'a> {
    /// Inputs whose `-` is `stdin`.
    pub fn new(stdin: &'a mut dyn Read) -> Self {
        Inputs {
            stdin,
            stdin_used: false,
        }
    }

    /// The text of one file, or of standard input for `-`.
    pub fn text(&mut self, path: &Path) -> Result<String, LoadError> {
        if path == Path::new("-") {
            if self.stdin_used {
                return Err(LoadError::StdinTwice);
            }
            self.stdin_used = true;
            let mut text = String::new();
            self.stdin.read_to_string(&mut text).map_err(|source| LoadError::Read {
                path: "standard input".to_owned(),
                source,
            })?;
            return Ok(text);
        }
        std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })
    }

    /// Every object of every path: files, folders (their `.yaml`, `.yml` and `.json` files, recursively, in name
    /// order) and `-` for standard input (named `<stdin>` in findings).
    pub fn load(&mut self, paths: &[PathBuf]) -> Result<Vec<Loaded>, LoadError> {
        let mut out = Vec::new();
        for (file, text) in self.files(paths)? {
            out.extend(parse_text(&file, &text)?);
        }
        Ok(out)
    }

    /// The text of every file the paths name (folders: their `.yaml`, `.yml` and `.json` files, recursively, in
    /// name order; `-`: standard input, named `<stdin>`), with the name to show for it.
    pub fn files(&mut self, paths: &[PathBuf]) -> Result<Vec<(String, String)>, LoadError> {
        let mut out = Vec::new();
        for path in paths {
            if path == Path::new("-") {
                out.push(("<stdin>".to_owned(), self.text(path)?));
                continue;
            }
            let mut files = Vec::new();
            collect_files(path, true, &mut files)?;
            for file in files {
                let text = self.text(&file)?;
                out.push((file.display().to_string(), text));
            }
        }
        Ok(out)
    }

    /// The one object of a file (`-` for standard input): JSON, or YAML holding one document.
    pub fn one(&mut self, path: &Path) -> Result<Value, LoadError> {
        let text = self.text(path)?;
        let shown = path.display().to_string();
        let mut objects = parse_text(&shown, &text)?;
        match objects.len() {
            1 => Ok(objects.remove(0).object),
            n => Err(LoadError::Invalid {
                path: shown,
                line: 1,
                message: match n {
                    0 => "the file holds no object".to_owned(),
                    n => format!("the file holds {n} objects; expected one"),
                },
            }),
        }
    }
}

fn collect_files(path: &Path, given: bool, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let read_error = |source| LoadError::Read {
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    if !meta.is_dir() {
        let manifest = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| ["yaml", "yml", "json"].contains(&e));
        // A file named on the command line is read whatever its name; in a folder, only manifests.
        if given || manifest {
            out.push(path.to_owned());
        }
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read_error)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(read_error)?;
    entries.sort();
    for entry in entries {
        collect_files(&entry, false, out)?;
    }
    Ok(())
}

/// The objects of one file's text: JSON (an object, an array of objects or a `List`) or YAML documents.
pub fn parse_text(file: &str, text: &str) -> Result<Vec<Loaded>, LoadError> {
    let invalid = |line: usize, message: String| LoadError::Invalid {
        path: file.to_owned(),
        line,
        message,
    };
    let mut out = Vec::new();
    let trimmed = text.trim_start();
    if trimmed.starts_with(['{', '[']) {
        let value: Value = serde_json::from_str(text).map_err(|e| invalid(e.line(), format!("invalid JSON: {e}")))?;
        let lines: Arc<[String]> = text.lines().map(str::to_owned).collect();
        let first = text.len() - trimmed.len();
        let line = text[..first].matches('\n').count() + 1;
        let source = Source {
            file: file.to_owned(),
            line,
            lines,
        };
        let (items, shared) = match value {
            Value::Array(items) => (items, true),
            other => (vec![other], false),
        };
        for item in items {
            push_object(item, &source, shared, &mut out).map_err(|m| invalid(source.line, m))?;
        }
        return Ok(out);
    }
    for (start, lines) in yaml_documents(text) {
        let doc = lines.join("\n");
        let value: Value = wi_contract::yaml::from_str(&doc).map_err(|e| {
            let line = e
                .location()
                .and_then(|l| usize::try_from(l.line()).ok())
                .map_or(start, |l| start + l.saturating_sub(1));
            invalid(line, format!("invalid YAML: {}", one_line(&e.to_string())))
        })?;
        if value.is_null() {
            continue; // only comments, or empty
        }
        let first = lines
            .iter()
            .position(|l| {
                let t = l.trim();
                !t.is_empty() && !t.starts_with('#')
            })
            .unwrap_or(0);
        let source = Source {
            file: file.to_owned(),
            line: start + first,
            lines: lines[first..].iter().map(|l| (*l).to_owned()).collect(),
        };
        push_object(value, &source, false, &mut out).map_err(|m| invalid(source.line, m))?;
    }
    Ok(out)
}

/// The documents of a YAML stream: (the 1-based line of the document's first line, its lines).
fn yaml_documents(text: &str) -> Vec<(usize, Vec<&str>)> {
    let mut docs = vec![(1, Vec::new())];
    for (i, line) in text.lines().enumerate() {
        let marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t") || line == "...";
        if marker {
            docs.push((i + 2, Vec::new()));
        } else if let Some((_, lines)) = docs.last_mut() {
            lines.push(line);
        }
    }
    docs
}

/// An object, or the items of a `List` (`kind: List`, `ServiceAccountList`, what `kubectl get -o yaml` prints).
fn push_object(value: Value, source: &Source, shared: bool, out: &mut Vec<Loaded>) -> Result<(), String> {
    let Value::Object(map) = value else {
        return Err("expected a Kubernetes object (a mapping with apiVersion and kind)".to_owned());
    };
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind.is_empty() {
        return Err("the object has no kind; expected a Kubernetes object".to_owned());
    }
    if kind.ends_with("List")
        && let Some(Value::Array(items)) = map.get("items")
    {
        // A typed list (ServiceAccountList) leaves kind and apiVersion off its items.
        let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty());
        for item in items {
            let mut item = item.clone();
            if let (Some(obj), Some(k)) = (item.as_object_mut(), item_kind)
                && !obj.contains_key("kind")
            {
                obj.insert("kind".to_owned(), Value::String(k.to_owned()));
            }
            push_object(item, source, true, out)?;
        }
        return Ok(());
    }
    let mut source = source.clone();
    if shared && let Some(name) = map.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str) {
        // Objects sharing a document (a List, a JSON array) are told apart by the line of their name, which
        // comes about three lines after the object's first key.
        let line = [format!("name: {name}"), format!("\"name\": \"{name}\"")]
            .iter()
            .map(|n| source.line_of(n))
            .find(|l| *l != source.line)
            .unwrap_or(source.line);
        source.line = line.saturating_sub(3).max(source.line);
    }
    out.push(Loaded {
        object: Value::Object(map),
        source: Some(source),
    });
    Ok(())
}

fn one_line(text: &str) -> String {
    text.lines().map(str::trim).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_documents_keep_their_lines_and_lists_are_expanded() {
        let text = "# leading comment\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n---\n# only a comment\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: ns1\n- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: ns2\n";
        let objects = parse_text("f.yaml", text).unwrap();
        let got: Vec<(&str, &str, usize)> = objects
            .iter()
            .map(|o| (o.kind(), o.name(), o.source.as_ref().unwrap().line))
            .collect();
        assert_eq!(
            got,
            [
                ("ServiceAccount", "a", 2),
                ("Namespace", "ns1", 12),
                ("Namespace", "ns2", 16)
            ]
        );
        assert_eq!(objects[0].source.as_ref().unwrap().line_of("name: a"), 5);
    }

    #[test]
    fn json_arrays_and_typed_lists() {
        let text = r#"{"kind": "ServiceAccountList", "items": [{"metadata": {"name": "x"}}]}"#;
        let objects = parse_text("f.json", text).unwrap();
        assert_eq!((objects[0].kind(), objects[0].name()), ("ServiceAccount", "x"));
        let err = parse_text("f.json", "[1]").unwrap_err().to_string();
        assert!(err.starts_with("f.json:1: expected a Kubernetes object"), "{err}");
    }

    #[test]
    fn bad_yaml_names_the_file_and_line() {
        let err = parse_text("f.yaml", "kind: A\n---\nkind: B\n  bad: [\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("f.yaml:4: invalid YAML"), "{err}");
        let err = parse_text("f.yaml", "apiVersion: v1\nmetadata: {}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no kind"), "{err}");
    }
}
