//! `wi-webhook doctor` as users run it: the real binary over the walkthrough's manifests and `az` output, the
//! project's own manifests, standard input, every output format and exit code; and one fixture per check
//! (`tests/doctor/checks/WIxxx.yaml`, with `WIxxx.az.json` for the Azure side), each giving exactly the findings its
//! `# expect: CODE on KIND NAMESPACE/NAME` lines name: the code and the object it is filed under.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use super::{text, wi_webhook};
use wi_webhook::diagnostics::Code;

const TENANT: &str = "d2f0c8a4-3b1e-4c6d-9e8f-7a6b5c4d3e2f";
const ISSUER: &str = "https://westeurope.oic.prod-aks.azure.com/d2f0c8a4-3b1e-4c6d-9e8f-7a6b5c4d3e2f/7b1c9d2e-3f4a-4b5c-8d6e-9f0a1b2c3d4e/";

fn path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn doctor(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let all: Vec<&str> = ["doctor"].into_iter().chain(args.iter().copied()).collect();
    wi_webhook(&all, stdin)
}

fn codes(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_owned())
        .collect()
}

fn walkthrough_args(format: &str) -> Vec<String> {
    let dir = path("tests/doctor/walkthrough");
    let mut args: Vec<String> = vec![
        "-f".into(),
        dir.join("manifests.yaml").display().to_string(),
        "--tenant-id".into(),
        TENANT.into(),
        "--issuer".into(),
        ISSUER.into(),
        "-o".into(),
        format.into(),
        "--azure".into(),
    ];
    for file in [
        "az-identity-show.json",
        "az-federated-credential-list.json",
        "az-keyvault-show.json",
    ] {
        args.push(dir.join("az").join(file).display().to_string());
    }
    args
}

#[test]
fn the_walkthrough_gives_exactly_its_four_mistakes() {
    let args = walkthrough_args("json");
    let out = doctor(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // The report's summary says how many errors: nothing is repeated on standard error.
    assert_eq!(text(&out.stderr), "");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["schemaVersion"], 1);
    assert_eq!(report["summary"]["errors"], 4);
    // 3 manifests, and what az printed: an identity, a federated credential, a vault.
    assert_eq!(report["summary"]["objects"], 6);
    let mut found = codes(&report);
    found.sort();
    assert_eq!(found, ["WI102", "WI404", "WI408", "WI505"]);
    let by_code = |code: &str| {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["code"] == code)
            .unwrap()
            .clone()
    };
    // Each names the object, the file and the line of the key at fault, and the fix.
    let node = by_code("WI404");
    assert_eq!(node["object"]["kind"], "SecretProviderClass");
    assert_eq!(node["object"]["name"], "kv-techventure-secrets");
    assert!(node["file"].as_str().unwrap().ends_with("walkthrough/manifests.yaml"));
    assert_eq!(node["line"], 19, "the useVMManagedIdentity line");
    assert!(node["fix"].as_str().unwrap().contains("clientID"));
    let vault = by_code("WI408");
    assert_eq!(vault["line"], 21);
    assert!(vault["message"].as_str().unwrap().contains("26 characters"));
    let grant = by_code("WI505");
    assert_eq!(grant["object"]["kind"], "KeyVault");
    assert!(grant["file"].as_str().unwrap().ends_with("az-keyvault-show.json"));
    assert!(
        grant["fix"]
            .as_str()
            .unwrap()
            .contains("--object-id 3c9e7a51-2b4d-4e6f-9a8b-7c6d5e4f3a2b"),
        "{grant}"
    );
    let label = by_code("WI102");
    assert_eq!(label["object"]["kind"], "Deployment");
    assert!(label["message"].as_str().unwrap().contains("my-app-sa"));
}

/// A folder that holds manifests and az output, as `doctor -f ./deploy` reads it: the az JSON is recognised by its
/// shape, and a JSON file that is neither is named on standard error and skipped.
#[test]
fn a_folder_of_manifests_and_az_output_is_read_whole() {
    let walkthrough = path("tests/doctor/walkthrough");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(walkthrough.join("manifests.yaml"), dir.path().join("manifests.yaml")).unwrap();
    std::fs::create_dir(dir.path().join("azure")).unwrap();
    for file in std::fs::read_dir(walkthrough.join("az")).unwrap() {
        let file = file.unwrap().path();
        std::fs::copy(&file, dir.path().join("azure").join(file.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        dir.path().join("package.json"),
        r#"{"name": "app", "version": "1.0.0"}"#,
    )
    .unwrap();
    let folder = dir.path().display().to_string();
    let out = doctor(
        &["-f", &folder, "--tenant-id", TENANT, "--issuer", ISSUER, "-o", "json"],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut found = codes(&report);
    found.sort();
    assert_eq!(found, ["WI102", "WI404", "WI408", "WI505"]);
    assert_eq!(report["summary"]["objects"], 6);
    let stderr = text(&out.stderr);
    let warning = stderr.lines().next().unwrap();
    assert!(
        warning.starts_with("warning: ") && warning.contains("package.json: skipped"),
        "{stderr}"
    );

    // Malformed JSON is still unreadable input.
    std::fs::write(dir.path().join("package.json"), "{not json").unwrap();
    let out = doctor(&["-f", &folder, "-o", "json"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("package.json:1: invalid JSON"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn text_output_groups_by_object_without_colour_when_piped() {
    let args = walkthrough_args("text");
    let out = doctor(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert_eq!(out.status.code(), Some(1));
    let report = text(&out.stdout);
    assert!(!report.contains('\x1b'), "{report}");
    let headers: Vec<&str> = report
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.is_empty())
        .collect();
    assert_eq!(
        headers,
        [
            "SecretProviderClass default/kv-techventure-secrets",
            "Deployment default/my-web-app",
            "KeyVault kv-techventure-secrets-001",
            "4 errors, 0 warnings in 6 objects read",
        ],
        "{report}"
    );
    assert!(report.contains("  error WI404 "), "{report}");
    assert!(report.contains("    at run time: "), "{report}");
    assert!(report.contains("    fix: "), "{report}");
    let coloured = doctor(
        &[
            args.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["--color", "always"],
        ]
        .concat(),
        None,
    );
    assert!(text(&coloured.stdout).contains("\x1b[31merror\x1b[0m"));
}

#[test]
fn sarif_output_has_a_rule_per_code_and_a_located_result_per_finding() {
    let args = walkthrough_args("sarif");
    let out = doctor(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert_eq!(out.status.code(), Some(1));
    let sarif: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    let rules: Vec<&str> = run["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["WI102", "WI404", "WI408", "WI505"]);
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for result in results {
        let index = result["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[index], result["ruleId"]);
        assert_eq!(result["level"], "error");
        let location = &result["locations"][0]["physicalLocation"];
        assert!(location["artifactLocation"]["uri"].as_str().unwrap().len() > 1);
        assert!(location["region"]["startLine"].as_u64().unwrap() >= 1);
    }
}

#[test]
fn the_projects_own_manifests_give_no_finding() {
    for dir in ["../manifests/examples", "../manifests"] {
        let out = doctor(&["-f", path(dir).to_str().unwrap(), "--tenant-id", TENANT], None);
        assert_eq!(out.status.code(), Some(0), "{dir}: {}", text(&out.stdout));
        assert!(
            text(&out.stdout).starts_with("0 errors, 0 warnings in "),
            "{}",
            text(&out.stdout)
        );
    }
}

#[test]
fn standard_input_takes_what_kubectl_kustomize_prints() {
    let manifests = std::fs::read(path("tests/doctor/walkthrough/manifests.yaml")).unwrap();
    let out = doctor(&["-f", "-", "-o", "json", "--tenant-id", TENANT], Some(&manifests));
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut found = codes(&report);
    found.sort();
    // Without the az output, the grant is not known.
    assert_eq!(found, ["WI102", "WI404", "WI408"]);
    assert_eq!(report["findings"][0]["file"], "<stdin>");
}

#[test]
fn warnings_exit_zero_unless_strict() {
    let fixture = path("tests/doctor/checks/WI301.yaml");
    let args = ["-f", fixture.to_str().unwrap(), "--tenant-id", TENANT];
    let out = doctor(&args, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("warning WI301"));
    let strict = doctor(&[&args[..], &["--strict"]].concat(), None);
    assert_eq!(strict.status.code(), Some(1));
    assert!(text(&strict.stdout).contains("error WI301"));
}

#[test]
fn unreadable_input_exits_2_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: Pod\n---\nkind: [\n").unwrap();
    let out = doctor(&["-f", bad.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    let line: usize = err
        .strip_prefix(&format!("wi-webhook: {}:", bad.display()))
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!((4..=5).contains(&line), "the second document's line: {err}");
    assert!(err.contains(": invalid YAML: "), "{err}");
    assert!(out.stdout.is_empty());

    let out = doctor(&["-f", dir.path().join("missing.yaml").to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read"), "{}", text(&out.stderr));

    let az = dir.path().join("az.json");
    std::fs::write(&az, r#"{"value": 1}"#).unwrap();
    let pod = path("tests/doctor/checks/WI202.yaml");
    let out = doctor(&["-f", pod.to_str().unwrap(), "--azure", az.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not the JSON of az identity show"),
        "{}",
        text(&out.stderr)
    );

    let out = doctor(&[], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nothing to check"), "{}", text(&out.stderr));
}

/// A finding as a fixture's `# expect:` line writes it: `WI202 on ServiceAccount default/app`.
fn code_on_object(finding: &Value) -> String {
    let object = &finding["object"];
    let namespace = object["namespace"]
        .as_str()
        .map(|ns| format!("{ns}/"))
        .unwrap_or_default();
    format!(
        "{} on {} {namespace}{}",
        finding["code"].as_str().unwrap(),
        object["kind"].as_str().unwrap(),
        object["name"].as_str().unwrap()
    )
}

/// A fixture's header: `# expect: CODE on OBJECT` (one line per finding: a mistake found twice is a failure),
/// `# message: TEXT` (a finding's message must hold it), `# args: ...`.
struct Header {
    expect: Vec<String>,
    messages: Vec<String>,
    args: Vec<String>,
}

fn header(fixture: &Path) -> Header {
    let content = std::fs::read_to_string(fixture).unwrap();
    let mut expect = Vec::new();
    let mut messages = Vec::new();
    let mut args = vec!["--tenant-id".to_owned(), TENANT.to_owned()];
    for line in content.lines().take_while(|l| l.starts_with('#')) {
        if let Some(finding) = line.strip_prefix("# expect:") {
            let finding = finding.trim();
            assert!(
                finding.contains(" on "),
                "{}: {line:?} names no object",
                fixture.display()
            );
            expect.push(finding.to_owned());
        }
        if let Some(text) = line.strip_prefix("# message:") {
            messages.push(text.trim().to_owned());
        }
        if let Some(given) = line.strip_prefix("# args:") {
            args = given.split_whitespace().map(str::to_owned).collect();
        }
    }
    expect.sort();
    Header { expect, messages, args }
}

#[test]
fn every_check_has_a_fixture_that_gives_exactly_its_code() {
    let dir = path("tests/doctor/checks");
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    fixtures.sort();
    let mut covered = BTreeSet::new();
    let mut failures = Vec::new();
    for fixture in &fixtures {
        let Header {
            expect,
            messages,
            args: extra,
        } = header(fixture);
        let mut args = vec![
            "-f".to_owned(),
            fixture.display().to_string(),
            "-o".into(),
            "json".into(),
        ];
        args.extend(extra);
        let az = fixture.with_extension("az.json");
        if az.exists() {
            args.extend(["--azure".to_owned(), az.display().to_string()]);
        }
        let cli = <wi_webhook::cli::Cli as clap::Parser>::try_parse_from(
            ["wi-webhook", "doctor"].into_iter().map(str::to_owned).chain(args),
        )
        .unwrap();
        let mut stdout = Vec::new();
        let result = wi_webhook::cli::run(cli, &mut std::io::empty(), &mut stdout, &mut Vec::new());
        let report: Value = serde_json::from_slice(&stdout).unwrap();
        let findings = report["findings"].as_array().unwrap();
        let mut found: Vec<String> = findings.iter().map(code_on_object).collect();
        found.sort();
        let name = fixture.file_name().unwrap().to_string_lossy().into_owned();
        if found != expect {
            failures.push(format!("{name}: expected {expect:?}, found {found:?}: {report:#}"));
        }
        for text in &messages {
            if !findings
                .iter()
                .any(|f| f["message"].as_str().unwrap_or_default().contains(text.as_str()))
            {
                failures.push(format!("{name}: no finding's message holds {text:?}: {report:#}"));
            }
        }
        let errors = report["summary"]["errors"].as_u64().unwrap();
        if (errors > 0) != result.is_err() {
            failures.push(format!("{name}: {errors} errors but run returned {result:?}"));
        }
        covered.extend(
            expect
                .iter()
                .filter_map(|e| e.split_whitespace().next())
                .map(str::to_owned),
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Codes only a cluster can show (WI105-108: the test against the real control plane covers them), or that
    // no manifest can reach (a lookup that failed, an engine bug).
    let elsewhere = ["WI105", "WI106", "WI107", "WI108", "WI308", "WI402"];
    for code in Code::ALL {
        let code = code.as_str();
        assert!(
            covered.contains(code) || elsewhere.contains(&code),
            "{code} has no fixture in tests/doctor/checks"
        );
    }
}

#[test]
fn the_docs_list_every_code() {
    let readme = std::fs::read_to_string(path("../docs/doctor.md")).unwrap();
    for code in Code::ALL {
        assert!(
            readme.contains(&format!("| {} |", code.as_str())),
            "docs/doctor.md has no row for {}",
            code.as_str()
        );
    }
}

#[test]
fn a_fix_names_the_labels_path_of_the_workloads_kind() {
    let report = |fixture: &str| {
        let fixture = path(&format!("tests/doctor/checks/{fixture}"));
        let out = doctor(&["-f", fixture.to_str().unwrap(), "-o", "json"], None);
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let cronjob = report("WI102-cronjob.yaml");
    assert_eq!(
        cronjob["findings"][0]["fix"],
        "spec.jobTemplate.spec.template.metadata.labels: {azure.workload.identity/use: \"true\"}"
    );
    assert_eq!(cronjob["findings"][0]["line"], 18, "the pod template's line");
    assert_eq!(
        report("WI102.yaml")["findings"][0]["fix"],
        "metadata.labels: {azure.workload.identity/use: \"true\"}"
    );
    // A pod template without serviceAccountName: the fix sets it, and does not annotate the shared default.
    let default = report("WI202-default.yaml");
    let fix = default["findings"][0]["fix"].as_str().unwrap();
    assert!(fix.starts_with("spec.template.spec.serviceAccountName: "), "{fix}");
    assert!(
        default["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("default/default"),
        "{default}"
    );
}
