//! doctor's three outputs: `text` (grouped by object, colour on a terminal), `json` (schema version 1, documented in
//! docs/doctor.md) and `sarif` (2.1.0, for code scanning).

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::Finding;
use crate::diagnostics::{Code, Severity};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Grouped by object, for people.
    Text,
    /// One JSON document: {"schemaVersion": 1, "summary": {...}, "findings": [...]}.
    Json,
    /// SARIF 2.1.0, for code scanning in CI pipelines.
    Sarif,
}

/// The report of `findings` (about `objects` objects read) in `format`; `verdict` is `doctor pod`'s answer to why
/// the pod was or was not injected (first in text, `"verdict"` in json, absent from SARIF).
pub fn render(findings: &[Finding], objects: usize, format: Format, colour: bool, verdict: Option<&str>) -> String {
    match format {
        Format::Text => {
            let head = verdict.map(|v| format!("{v}\n\n")).unwrap_or_default();
            head + &text(findings, objects, colour)
        }
        Format::Json => {
            let mut report = json_report(findings, objects);
            if let Some(verdict) = verdict {
                report["verdict"] = Value::from(verdict);
            }
            report.to_string() + "\n"
        }
        Format::Sarif => sarif(findings).to_string() + "\n",
    }
}

fn count(findings: &[Finding], severity: Severity) -> usize {
    findings.iter().filter(|f| f.severity == severity).count()
}

fn text(findings: &[Finding], objects: usize, colour: bool) -> String {
    let paint = |code: &str, text: &str| match colour {
        true => format!("\x1b[{code}m{text}\x1b[0m"),
        false => text.to_owned(),
    };
    let mut out = String::new();
    let mut current = None;
    for f in findings {
        let place = match (&f.file, f.line) {
            (Some(file), Some(line)) => format!("{file}:{line}"),
            (Some(file), None) => file.clone(),
            _ => "cluster".to_owned(),
        };
        if current != Some(&f.object) {
            if current.is_some() {
                out.push('\n');
            }
            let _ = writeln!(out, "{}", paint("1", &f.object.to_string()));
            current = Some(&f.object);
        }
        let severity = match f.severity {
            Severity::Error => paint("31", "error"),
            Severity::Warning => paint("33", "warning"),
        };
        let _ = writeln!(
            out,
            "  {severity} {} {place}: {}",
            paint("1", f.code.as_str()),
            f.message
        );
        let _ = writeln!(out, "    at run time: {}", f.code.runtime());
        let _ = writeln!(out, "    fix: {}", f.fix);
    }
    if !findings.is_empty() {
        out.push('\n');
    }
    let errors = count(findings, Severity::Error);
    let warnings = count(findings, Severity::Warning);
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let _ = writeln!(
        out,
        "{}, {} in {} read",
        plural(errors, "error"),
        plural(warnings, "warning"),
        plural(objects, "object")
    );
    out
}

fn json_report(findings: &[Finding], objects: usize) -> Value {
    let list: Vec<Value> = findings
        .iter()
        .map(|f| {
            json!({
                "code": f.code.as_str(),
                "severity": f.severity,
                "title": f.code.title(),
                "object": f.object,
                "file": f.file,
                "line": f.line,
                "message": f.message,
                "runtime": f.code.runtime(),
                "fix": f.fix,
            })
        })
        .collect();
    json!({
        "schemaVersion": 1,
        "summary": {
            "objects": objects,
            "errors": count(findings, Severity::Error),
            "warnings": count(findings, Severity::Warning),
        },
        "findings": list,
    })
}

fn sarif(findings: &[Finding]) -> Value {
    let mut codes: Vec<Code> = findings.iter().map(|f| f.code).collect();
    codes.sort();
    codes.dedup();
    let rules: Vec<Value> = codes
        .iter()
        .map(|c| {
            json!({
                "id": c.as_str(),
                "name": c.title(),
                "shortDescription": {"text": c.title()},
                "fullDescription": {"text": c.runtime()},
                "help": {"text": c.fix()},
                "defaultConfiguration": {"level": level(c.severity())},
            })
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let mut result = json!({
                "ruleId": f.code.as_str(),
                "ruleIndex": codes.iter().position(|c| *c == f.code),
                "level": level(f.severity),
                "message": {"text": format!("{}: {} Fix: {}", f.object, f.message, f.fix)},
            });
            if let Some(file) = &f.file {
                result["locations"] = json!([{
                    "physicalLocation": {
                        "artifactLocation": {"uri": file},
                        "region": {"startLine": f.line.unwrap_or(1)},
                    },
                    "logicalLocations": [{"name": f.object.to_string(), "kind": "resource"}],
                }]);
            }
            result
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "wi-webhook doctor",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "results": results,
        }],
    })
}

fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}
