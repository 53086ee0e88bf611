//! `wi-webhook doctor`: its arguments, and the run that reads the inputs (files, `az` output, the cluster), checks
//! them ([`crate::doctor::check`]) and writes the report.

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::{CliError, one_line};
use crate::config::Config;
use crate::input::{Inputs, parse_text};

/// Arguments of `wi-webhook doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// Check one pod of the cluster instead.
    #[command(subcommand)]
    pub target: Option<DoctorTarget>,

    /// Manifests to check: files, folders (their .yaml, .yml and .json files, recursively) or - for standard input
    /// (`kubectl kustomize DIR | wi-webhook doctor -f -`). Multi-document YAML, JSON, and Lists. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH", num_args = 1..)]
    pub files: Vec<PathBuf>,

    /// JSON that az printed: `az identity show`, `az identity federated-credential list`, `az keyvault show`,
    /// `az role assignment list` (an object or an array each). Checks federated credentials and Key Vault grants
    /// against the ServiceAccounts. Repeatable.
    #[arg(long, value_name = "FILE", num_args = 1.., global = true)]
    pub azure: Vec<PathBuf>,

    /// The cluster's service account issuer URL (az aks show --query oidcIssuerProfile.issuerUrl -o tsv), which
    /// every federated credential must name exactly.
    #[arg(long, value_name = "URL", global = true)]
    pub issuer: Option<String>,

    /// Also read the objects from the cluster (KUBECONFIG, or the in-cluster service account), and check the
    /// webhook itself: its MutatingWebhookConfiguration, caBundle, and ready endpoints.
    #[arg(long)]
    pub cluster: bool,

    /// Namespace of the cluster objects to check, and of manifests that name none (default: the kubeconfig's
    /// namespace with --cluster, `default` for files).
    #[arg(short = 'n', long, value_name = "NAMESPACE", global = true)]
    pub namespace: Option<String>,

    /// With --cluster, every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,

    /// Output format: text (grouped by object), json (schema in docs/doctor.md) or sarif (for code scanning).
    #[arg(
        short = 'o',
        long,
        value_name = "FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub output: crate::doctor::Format,

    /// Report warnings as errors (exit 1 on any finding).
    #[arg(long, global = true)]
    pub strict: bool,

    /// Colour in text output: auto (when standard output is a terminal and NO_COLOR is unset), always, never.
    #[arg(long, value_name = "WHEN", value_enum, default_value = "auto", global = true)]
    pub color: ColorArg,

    /// The webhook's MutatingWebhookConfiguration, checked with --cluster.
    #[arg(long, value_name = "NAME", default_value = "wi-webhook", global = true)]
    pub webhook_configuration: String,

    #[command(flatten)]
    pub engine: Config,
}

/// What `doctor` checks besides files.
#[derive(Debug, Clone, Subcommand)]
pub enum DoctorTarget {
    /// Why this pod was or was not injected, and what is wrong with it, its ServiceAccount and its classes (reads
    /// the cluster; -n for the namespace).
    Pod {
        /// The pod's name.
        name: String,
    },
}

/// When to colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorArg {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Runs `wi-webhook doctor`.
pub fn run(
    args: &DoctorArgs,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<(), CliError> {
    use crate::doctor::{self, AzureInputs, Options, cluster};
    let unreadable = |e: &dyn std::fmt::Display| CliError::DoctorInput(one_line(&e.to_string()));
    let pod = args.target.as_ref().map(|DoctorTarget::Pod { name }| name.as_str());
    if args.files.is_empty() && !args.cluster && pod.is_none() {
        return Err(CliError::DoctorInput(
            "nothing to check: give manifests with -f PATH (- for standard input), --cluster, or pod NAME".to_owned(),
        ));
    }
    let mut inputs = Inputs::new(stdin);
    let mut objects = Vec::new();
    let mut azure = AzureInputs::default();
    // Manifests and what az printed may share a folder: JSON that holds no Kubernetes object is read as az output
    // by its shape, and a file that is neither is named and skipped (unreadable or malformed input still exits 2).
    for (file, text) in inputs.files(&args.files).map_err(|e| unreadable(&e))? {
        match parse_text(&file, &text) {
            Ok(found) => objects.extend(found),
            Err(error) if serde_json::from_str::<serde_json::Value>(&text).is_ok() => {
                match AzureInputs::read(&file, &text) {
                    Ok(found) => azure.extend(found),
                    Err(_) => writeln!(
                        stderr,
                        "warning: {file}: skipped, neither Kubernetes objects ({error}) nor what az prints"
                    )?,
                }
            }
            Err(error) => return Err(unreadable(&error)),
        }
    }
    for path in &args.azure {
        let text = inputs.text(path).map_err(|e| unreadable(&e))?;
        azure
            .add(&path.display().to_string(), &text)
            .map_err(|e| unreadable(&e))?;
    }
    let mut options = Options {
        config: Config {
            // An env file's empty WI_TENANT_ID= is no tenant: with --cluster, the webhook's own is read instead.
            tenant_id: args.engine.tenant_id.clone().filter(|t| !t.trim().is_empty()),
            ..args.engine.clone()
        },
        issuer: args.issuer.clone(),
        default_namespace: args.namespace.clone().unwrap_or_else(|| "default".to_owned()),
        strict: args.strict,
    };
    let mut webhook_findings = Vec::new();
    if args.cluster || pod.is_some() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CliError::Write)?;
        runtime.block_on(async {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| unreadable(&format!("no Kubernetes access (KUBECONFIG or in-cluster): {e}")))?;
            let namespace = args
                .namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_owned());
            options.default_namespace = namespace.clone();
            match pod {
                Some(name) => {
                    let read = cluster::read_pod(&client, &namespace, name)
                        .await
                        .map_err(|e| unreadable(&e))?;
                    let read = read.ok_or_else(|| CliError::DoctorInput(format!("no pod {namespace}/{name}")))?;
                    objects.extend(read);
                }
                None => {
                    let scope = cluster::Scope {
                        namespace: (!args.all_namespaces).then_some(namespace),
                        webhook_configuration: args.webhook_configuration.clone(),
                    };
                    objects.extend(cluster::read(&client, &scope).await.map_err(|e| unreadable(&e))?);
                }
            }
            if options.config.tenant_id.is_none() {
                options.config.tenant_id =
                    cluster::webhook_tenant(&client, &objects, &args.webhook_configuration).await;
            }
            webhook_findings = cluster::check_webhook(&client, &objects, &args.webhook_configuration)
                .await
                .map_err(|e| unreadable(&e))?;
            Ok::<(), CliError>(())
        })?;
    }
    let findings = doctor::check(&objects, &azure, webhook_findings, &options);
    let verdict = pod
        .and_then(|name| objects.iter().find(|o| o.kind() == "Pod" && o.name() == name))
        .map(|loaded| cluster::verdict(loaded, &findings));
    let colour = match args.color {
        ColorArg::Always => true,
        ColorArg::Never => false,
        ColorArg::Auto => {
            use std::io::IsTerminal;
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    };
    let report = doctor::render(
        &findings,
        objects.len() + azure.len(),
        args.output,
        colour,
        verdict.as_deref(),
    );
    write!(stdout, "{report}")?;
    let errors = findings
        .iter()
        .filter(|f| f.severity == crate::diagnostics::Severity::Error)
        .count();
    match errors {
        0 => Ok(()),
        n => Err(CliError::Findings(n)),
    }
}
