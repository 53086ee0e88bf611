//! `wi-webhook mutate`: what the webhook would do to a pod, offline. The files become the objects of a
//! [`StaticLookup`], checked against what the pod refers to, and the pod goes through the admission path `serve`
//! uses.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args};
use serde_json::Value;

use super::{CliError, one_line};
use crate::admission;
use crate::config::Config;
use crate::input::{Inputs, LoadError};
use crate::lookup::StaticLookup;
use crate::mutate::{self, ServiceAccount, pod_of, secret_provider_class_name, service_account_name};
use crate::review::{AdmissionReview, PodCreate};
use wi_contract::SECRET_PROVIDER_CLASS_ANNOTATION;

/// Inputs of `wi-webhook mutate`. Files may be JSON or YAML; `-` reads standard input (for one file at most).
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("input").required(true).args(["review", "pod"])))]
pub struct MutateArgs {
    /// An AdmissionReview request as the API server sends it. Prints the AdmissionReview response JSON, with the
    /// patch base64-encoded as the API server expects it.
    #[arg(long, value_name = "FILE")]
    pub review: Option<PathBuf>,

    /// A Pod manifest, or a Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob whose pod template is
    /// used. Prints the mutated pod as YAML; warnings and a denial go to standard error.
    #[arg(long, value_name = "FILE")]
    pub pod: Option<PathBuf>,

    /// The ServiceAccount the pod runs as (`kubectl get serviceaccount NAME -o yaml`).
    #[arg(long, value_name = "FILE")]
    pub service_account: PathBuf,

    /// The pod's Namespace, whose azure.workload.identity/use label opts in every pod in it.
    #[arg(long, value_name = "FILE")]
    pub namespace: Option<PathBuf>,

    /// The SecretProviderClass the pod names in workload-identity.rs/secret-provider-class.
    #[arg(long, value_name = "FILE")]
    pub secret_provider_class: Option<PathBuf>,

    #[command(flatten)]
    pub engine: Config,
}

/// Runs `wi-webhook mutate`.
pub fn run(
    args: &MutateArgs,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<(), CliError> {
    let inputs = [
        &args.review,
        &args.pod,
        &Some(args.service_account.clone()),
        &args.namespace,
        &args.secret_provider_class,
    ];
    if inputs.iter().filter(|p| p.as_deref() == Some(Path::new("-"))).count() > 1 {
        return Err(CliError::StdinTwice);
    }
    let mut reader = Inputs::new(stdin);
    let config = &args.engine;
    let sa_path = args.service_account.as_path();
    let sa_object = reader.one(sa_path).map_err(unreadable)?;
    let sa = ServiceAccount::from_object(&sa_object).map_err(|e| invalid(sa_path, e))?;
    let namespace = match &args.namespace {
        Some(path) => {
            let object = reader.one(path).map_err(unreadable)?;
            let labels = mutate::namespace_labels(&object).map_err(|e| invalid(path, e))?;
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_owned);
            Some((path.as_path(), name.unwrap_or_default(), labels))
        }
        None => None,
    };
    let spc = match &args.secret_provider_class {
        Some(path) => Some((path.as_path(), reader.one(path).map_err(unreadable)?)),
        None => None,
    };

    // The files become the objects of a lookup, and the pod goes through the admission path `serve` uses.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(CliError::Write)?;
    if let Some(review_path) = &args.review {
        let body = reader.one(review_path).map_err(unreadable)?;
        let review = AdmissionReview::from_value(body).map_err(|e| invalid(review_path, e))?;
        let response = match review.pod_create() {
            None => review.allow_unchanged(),
            Some(pod) => {
                let lookup = lookup_of(pod.pod, pod.namespace, &sa, sa_path, namespace.as_ref(), spc.as_ref())?;
                runtime.block_on(admission::review(&review, &lookup, config)).0
            }
        };
        let text = serde_json::to_value(&response)
            .and_then(|value| serde_json::to_string_pretty(&value))
            .map_err(|e| CliError::Write(e.into()))?;
        writeln!(stdout, "{text}")?;
        return Ok(());
    }

    let Some(pod_path) = &args.pod else {
        // clap's ArgGroup makes one of --review and --pod required.
        return Ok(());
    };
    let manifest = reader.one(pod_path).map_err(unreadable)?;
    let mut pod = pod_of(manifest).map_err(|message| CliError::Invalid {
        path: pod_path.display().to_string(),
        message,
    })?;
    let pod_namespace = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .or_else(|| {
            namespace
                .as_ref()
                .map(|(_, name, _)| name.clone())
                .filter(|n| !n.is_empty())
        })
        .or_else(|| Some(sa.namespace.clone()).filter(|n| !n.is_empty()))
        .unwrap_or_else(|| "default".to_owned());
    let lookup = lookup_of(&pod, &pod_namespace, &sa, sa_path, namespace.as_ref(), spc.as_ref())?;
    let create = PodCreate {
        pod: &pod,
        namespace: &pod_namespace,
        name: pod_name(&pod),
        service_account: service_account_name(&pod),
        secret_provider_class: secret_provider_class_name(&pod),
    };
    match runtime.block_on(admission::admit_pod(&create, &lookup, config)) {
        Ok(mutation) => {
            for warning in &mutation.warnings {
                writeln!(stderr, "warning: {warning}")?;
            }
            let bug = |e: &dyn std::fmt::Display| CliError::Invalid {
                path: pod_path.display().to_string(),
                message: format!("the patch does not apply (a bug, please report it): {e}"),
            };
            let patch = mutation.patch.to_json_patch().map_err(|e| bug(&e))?;
            json_patch::patch(&mut pod, &patch).map_err(|e| bug(&e))?;
            let yaml = wi_contract::yaml::to_string(&pod).map_err(|e| CliError::Write(std::io::Error::other(e)))?;
            write!(stdout, "{yaml}")?;
        }
        Err(rejection) => writeln!(stderr, "denied: {rejection}")?,
    }
    Ok(())
}

fn pod_name(pod: &Value) -> &str {
    ["/metadata/name", "/metadata/generateName"]
        .iter()
        .find_map(|p| pod.pointer(p).and_then(Value::as_str))
        .unwrap_or_default()
}

/// The objects the files describe, as a lookup for the admission path, once checked against the pod: in the pod's
/// namespace, as the API server would find them.
fn lookup_of(
    pod: &Value,
    pod_namespace: &str,
    sa: &ServiceAccount,
    sa_path: &Path,
    namespace: Option<&NamespaceInput<'_>>,
    spc: Option<&(&Path, Value)>,
) -> Result<StaticLookup, CliError> {
    let refs = check_references(pod, pod_namespace, sa, sa_path, namespace, spc)?;
    let mut lookup = StaticLookup {
        service_accounts: vec![ServiceAccount {
            namespace: pod_namespace.to_owned(),
            ..sa.clone()
        }],
        ..StaticLookup::default()
    };
    if let Some(labels) = refs.namespace_labels {
        lookup.namespaces.insert(pod_namespace.to_owned(), labels.clone());
    }
    if let Some(class) = refs.secret_provider_class {
        let mut class = class.clone();
        if let Some(metadata) = class.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.insert("namespace".to_owned(), Value::String(pod_namespace.to_owned()));
        }
        lookup.secret_provider_classes.push(class);
    }
    Ok(lookup)
}

/// The objects a pod refers to, as read from the files given.
struct References<'a> {
    namespace_labels: Option<&'a std::collections::BTreeMap<String, String>>,
    secret_provider_class: Option<&'a Value>,
}

type NamespaceInput<'a> = (&'a Path, String, std::collections::BTreeMap<String, String>);

/// Checks that the files given describe what the pod refers to, so that a wrong file is an error rather than a
/// misleading answer.
fn check_references<'a>(
    pod: &Value,
    pod_namespace: &str,
    sa: &ServiceAccount,
    sa_path: &Path,
    namespace: Option<&'a NamespaceInput<'a>>,
    spc: Option<&'a (&'a Path, Value)>,
) -> Result<References<'a>, CliError> {
    let wanted_sa = service_account_name(pod);
    if sa.name != wanted_sa {
        return Err(invalid(
            sa_path,
            format!(
                "the pod runs as ServiceAccount {wanted_sa:?}, this file is ServiceAccount {:?}",
                sa.name
            ),
        ));
    }
    if !sa.namespace.is_empty() && sa.namespace != pod_namespace {
        return Err(invalid(
            sa_path,
            format!(
                "the pod is in namespace {pod_namespace:?}, this ServiceAccount in {:?}",
                sa.namespace
            ),
        ));
    }
    if let Some((path, name, _)) = namespace
        && !name.is_empty()
        && name != pod_namespace
    {
        return Err(invalid(
            path,
            format!("the pod is in namespace {pod_namespace:?}, this file is Namespace {name:?}"),
        ));
    }
    let spc_value = match spc {
        None => None,
        Some((path, object)) => {
            let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
            if kind != "SecretProviderClass" {
                return Err(invalid(
                    path,
                    format!("expected kind SecretProviderClass, found kind {kind:?}"),
                ));
            }
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            match secret_provider_class_name(pod) {
                None => {
                    return Err(invalid(
                        path,
                        format!("the pod names no SecretProviderClass (annotation {SECRET_PROVIDER_CLASS_ANNOTATION})"),
                    ));
                }
                Some(wanted) if wanted != name => {
                    return Err(invalid(
                        path,
                        format!("the pod names SecretProviderClass {wanted:?}, this file is {name:?}"),
                    ));
                }
                Some(_) => Some(object),
            }
        }
    };
    Ok(References {
        namespace_labels: namespace.map(|(_, _, labels)| labels),
        secret_provider_class: spc_value,
    })
}

/// A file that cannot be used, as `mutate` reports it: the file, and what is wrong on one line.
fn unreadable(error: LoadError) -> CliError {
    match error {
        LoadError::Read { path, source } => CliError::Read { path, source },
        // One object a file: the line adds nothing the parser's message does not say.
        LoadError::Invalid { path, message, .. } => CliError::Invalid { path, message },
        LoadError::StdinTwice => CliError::StdinTwice,
    }
}

fn invalid(path: &Path, error: impl std::fmt::Display) -> CliError {
    CliError::Invalid {
        path: path.display().to_string(),
        message: one_line(&error.to_string()),
    }
}
