//! The `wi-webhook` command line. `main.rs` only parses and calls [`run`].

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use std::net::SocketAddr;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::admission;
use crate::config::{Cloud, Config, DEFAULT_SIDECAR_IMAGE, Sidecar};
use crate::lookup::StaticLookup;
use crate::mutate::{self, ServiceAccount, pod_of, secret_provider_class_name, service_account_name};
use crate::review::{AdmissionReview, PodCreate};
use crate::server::ServeConfig;
use crate::server::certs::{CertConfig, CertMode};
use crate::server::tls::TlsVersion;
use wi_contract::{
    DEFAULT_AUDIENCE, ENV_ADMIN_LISTEN, ENV_ROTATION_INTERVAL, ENV_SECRETS_CONFIG, ENV_SECRETS_DIR,
    SECRET_PROVIDER_CLASS_ANNOTATION,
};
use wi_runtime::log::{LogConfig, LogFormat};

/// Mutating admission webhook that gives Kubernetes pods an Azure workload identity and their Key Vault secrets.
///
/// Drop-in compatible with Azure Workload Identity: pods labelled azure.workload.identity/use=true (or in a
/// namespace so labelled) get AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST
/// and a projected service account token; a pod annotated workload-identity.rs/secret-provider-class also gets
/// the Key Vault objects of that SecretProviderClass through the Secrets Store CSI driver.
#[derive(Debug, Parser)]
#[command(name = "wi-webhook", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show offline, without a cluster, what the webhook would do to a pod.
    ///
    /// Exits 0 whether the pod is allowed or denied (a denial is printed), and 2 with a one-line reason when an
    /// input cannot be read.
    Mutate(Box<MutateArgs>),

    /// Find the mistakes that break workload identity and Key Vault delivery: in manifests (-f), in what az
    /// prints (--azure), or in a cluster (--cluster, or `doctor pod NAME`).
    ///
    /// Every finding has a code (WI101...; the README lists them), the object and the file:line, what goes wrong
    /// at run time and the fix. Exits 0 when nothing is wrong, 1 when an error (with --strict, also a warning) was
    /// found, 2 when an input cannot be read.
    Doctor(Box<DoctorArgs>),

    /// Serve admission requests over HTTPS, with /healthz, /readyz and /metrics on the admin port.
    ///
    /// Reads ServiceAccounts, Namespaces and SecretProviderClasses from Kubernetes (KUBECONFIG, or the in-cluster
    /// service account). Stops on SIGTERM or SIGINT after draining in-flight requests.
    Serve(Box<ServeArgs>),
}

/// Settings of the mutation engine, shared by every subcommand that mutates.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Tenant id injected as AZURE_TENANT_ID when the ServiceAccount has no azure.workload.identity/tenant-id
    /// annotation. Required by `serve`.
    #[arg(long, env = "WI_TENANT_ID", value_name = "ID", global = true)]
    pub tenant_id: Option<String>,

    /// Azure cloud, which sets AZURE_AUTHORITY_HOST: AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud,
    /// or the https:// authority host of a custom cloud.
    #[arg(long, env = "WI_CLOUD", value_name = "NAME", default_value = "AzurePublicCloud")]
    pub cloud: Cloud,

    /// Audience of the projected service account token.
    #[arg(long, env = "WI_AUDIENCE", value_name = "AUDIENCE", default_value = DEFAULT_AUDIENCE)]
    pub audience: String,

    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

/// The `wi-sidecar` container injected for `workload-identity.rs/secrets-delivery: sidecar`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Injected wi-sidecar (secrets-delivery: sidecar)")]
pub struct SidecarArgs {
    /// Image of the injected wi-sidecar.
    #[arg(long, env = "WI_SIDECAR_IMAGE", value_name = "IMAGE", default_value = DEFAULT_SIDECAR_IMAGE)]
    pub sidecar_image: String,

    /// Port of the sidecar's /healthz, /readyz (its startup probe) and /metrics. Pods with a container declaring
    /// this port are denied.
    #[arg(long, env = "WI_SIDECAR_ADMIN_PORT", value_name = "PORT", default_value_t = wi_contract::SIDECAR_ADMIN_PORT,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub sidecar_admin_port: u16,

    /// How often the sidecar checks Key Vault for new versions.
    #[arg(long, env = "WI_SIDECAR_ROTATION_INTERVAL", value_name = "DURATION", default_value = "2m",
          value_parser = parse_interval)]
    pub sidecar_rotation_interval: String,

    /// CPU request of the sidecar.
    #[arg(long, env = "WI_SIDECAR_CPU_REQUEST", value_name = "QUANTITY", default_value = "10m",
          value_parser = parse_quantity)]
    pub sidecar_cpu_request: String,

    /// Memory request of the sidecar.
    #[arg(long, env = "WI_SIDECAR_MEMORY_REQUEST", value_name = "QUANTITY", default_value = "32Mi",
          value_parser = parse_quantity)]
    pub sidecar_memory_request: String,

    /// Memory limit of the sidecar (the in-memory secrets volume is charged to it).
    #[arg(long, env = "WI_SIDECAR_MEMORY_LIMIT", value_name = "QUANTITY", default_value = "64Mi",
          value_parser = parse_quantity)]
    pub sidecar_memory_limit: String,

    /// Extra env of the sidecar, NAME=VALUE, repeatable (comma-separated in the env var); e.g.
    /// WI_VAULT_URL_TEMPLATE=https://{name}.vault.local.azurestack.external for a cloud without a known Key Vault
    /// DNS suffix.
    #[arg(long, env = "WI_SIDECAR_ENV", value_name = "NAME=VALUE", value_delimiter = ',',
          value_parser = parse_env_pair)]
    pub sidecar_env: Vec<(String, String)>,
}

fn parse_interval(text: &str) -> Result<String, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d >= std::time::Duration::from_secs(1) => Ok(text.trim().to_owned()),
        Ok(_) => Err("must be at least 1s".to_owned()),
        Err(e) => Err(format!("{e} (expected a duration such as 2m or 90s)")),
    }
}

/// A Kubernetes resource quantity in the forms people write (`10m`, `64Mi`, `0.5`, `1G`).
fn parse_quantity(text: &str) -> Result<String, String> {
    let t = text.trim();
    let suffixes = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    let number = suffixes
        .iter()
        .find_map(|s| t.strip_suffix(s).filter(|n| !n.is_empty()))
        .unwrap_or_default();
    let mut parts = number.splitn(2, '.');
    let digits = |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let whole = parts.next();
    let valid = digits(whole) && parts.next().is_none_or(|f| digits(Some(f)));
    if valid {
        Ok(t.to_owned())
    } else {
        Err(format!("{text:?} is not a resource quantity such as 10m, 0.5 or 64Mi"))
    }
}

fn parse_env_pair(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=VALUE"))?;
    let name = name.trim();
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("{name:?} is not an env var name"));
    }
    if name.starts_with("AZURE_")
        || [
            ENV_SECRETS_CONFIG,
            ENV_SECRETS_DIR,
            ENV_ROTATION_INTERVAL,
            ENV_ADMIN_LISTEN,
        ]
        .contains(&name)
    {
        return Err(format!("{name} is set by the webhook itself"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

impl EngineArgs {
    /// The engine configuration these arguments describe.
    pub fn config(&self) -> Config {
        let s = &self.sidecar;
        Config {
            tenant_id: self.tenant_id.clone().filter(|t| !t.trim().is_empty()),
            cloud: self.cloud.clone(),
            audience: self.audience.clone(),
            sidecar: Sidecar {
                image: s.sidecar_image.clone(),
                admin_port: s.sidecar_admin_port,
                rotation_interval: s.sidecar_rotation_interval.clone(),
                cpu_request: s.sidecar_cpu_request.clone(),
                memory_request: s.sidecar_memory_request.clone(),
                memory_limit: s.sidecar_memory_limit.clone(),
                env: s.sidecar_env.clone(),
            },
        }
    }
}

/// Flags of `wi-webhook serve`. Each has a `WI_*` environment variable twin.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the HTTPS admission endpoint (paths /mutate-v1-pod and /mutate).
    #[arg(long, env = "WI_LISTEN", value_name = "ADDR", default_value = "0.0.0.0:9443")]
    pub listen: SocketAddr,

    /// Address of the plain-HTTP admin endpoint: /healthz, /readyz, /metrics.
    #[arg(long, env = "WI_ADMIN_LISTEN", value_name = "ADDR", default_value = "0.0.0.0:9440")]
    pub admin_listen: SocketAddr,

    /// PEM certificate chain served, leaf first. Reloaded when it changes (a Secret volume's ..data swap included).
    #[arg(
        long,
        env = "WI_TLS_CERT_FILE",
        value_name = "FILE",
        default_value = "/etc/wi-webhook/tls/tls.crt"
    )]
    pub tls_cert_file: PathBuf,

    /// PEM private key of the certificate (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "WI_TLS_KEY_FILE",
        value_name = "FILE",
        default_value = "/etc/wi-webhook/tls/tls.key"
    )]
    pub tls_key_file: PathBuf,

    /// Lowest TLS version accepted.
    #[arg(
        long,
        env = "WI_TLS_MIN_VERSION",
        value_name = "VERSION",
        value_enum,
        default_value = "1.2"
    )]
    pub tls_min_version: TlsVersionArg,

    /// How often the certificate files are read again even without a change notification.
    #[arg(long, env = "WI_TLS_POLL_INTERVAL", value_name = "DURATION", default_value = "1m", value_parser = humantime::parse_duration)]
    pub tls_poll_interval: Duration,

    /// Largest AdmissionReview body accepted, in bytes; larger ones get 413.
    #[arg(long, env = "WI_MAX_BODY_BYTES", value_name = "BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Time allowed to answer one request before 408 (the API server waits at most the webhook's timeoutSeconds).
    #[arg(long, env = "WI_REQUEST_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// After SIGTERM, how long the server stays up, unready, so that endpoints stop sending to it.
    #[arg(long, env = "WI_SHUTDOWN_DELAY", value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,

    /// After the delay, how long in-flight requests may take to finish before the server exits anyway.
    #[arg(long, env = "WI_SHUTDOWN_GRACE", value_name = "DURATION", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    #[command(flatten)]
    pub certs: CertArgs,

    #[command(flatten)]
    pub engine: EngineArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

impl ServeArgs {
    /// The server configuration these flags describe.
    pub fn config(&self) -> ServeConfig {
        ServeConfig {
            listen: self.listen,
            admin_listen: self.admin_listen,
            tls_cert_file: self.tls_cert_file.clone(),
            tls_key_file: self.tls_key_file.clone(),
            tls_min_version: match self.tls_min_version {
                TlsVersionArg::V1_2 => TlsVersion::V1_2,
                TlsVersionArg::V1_3 => TlsVersion::V1_3,
            },
            tls_poll_interval: self.tls_poll_interval,
            max_body_bytes: self.max_body_bytes,
            request_timeout: self.request_timeout,
            shutdown_delay: self.shutdown_delay,
            shutdown_grace: self.shutdown_grace,
            certs: self.certs.config(),
            engine: self.engine.config(),
            log: self.log.config(),
        }
    }
}

/// The lowest TLS version accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsVersionArg {
    /// TLS 1.2 and 1.3.
    #[value(name = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[value(name = "1.3")]
    V1_3,
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CertModeArg {
    /// `--tls-cert-file` and `--tls-key-file`, reloaded when they change (cert-manager, hand-made certificates).
    Files,
    /// A CA and certificate the webhook makes, keeps in a Secret, trusts in its MutatingWebhookConfiguration and
    /// rotates.
    SelfManaged,
}

/// Flags of the self-managed mode.
#[derive(Debug, Clone, Args)]
pub struct CertArgs {
    /// Where the serving certificate comes from.
    #[arg(long, env = "WI_CERT_MODE", value_name = "MODE", value_enum, default_value = "files")]
    pub cert_mode: CertModeArg,

    /// Namespace of the webhook's Service and certificate Secret (self-managed mode).
    #[arg(long, env = "WI_NAMESPACE", value_name = "NAMESPACE", default_value = "wi-system")]
    pub namespace: String,

    /// Name of the webhook's Service; the certificate is issued for its DNS names (self-managed mode).
    #[arg(long, env = "WI_SERVICE_NAME", value_name = "NAME", default_value = "wi-webhook")]
    pub service_name: String,

    /// Secret that holds the CA and the serving certificate (self-managed mode).
    #[arg(long, env = "WI_CERT_SECRET", value_name = "NAME", default_value = "wi-webhook-tls")]
    pub cert_secret: String,

    /// MutatingWebhookConfiguration whose caBundle is kept up to date (self-managed mode).
    #[arg(
        long,
        env = "WI_WEBHOOK_CONFIGURATION",
        value_name = "NAME",
        default_value = "wi-webhook"
    )]
    pub webhook_configuration: String,

    /// Lifetime of a CA made by the webhook; a new one is rolled in when a third of it is left (counted from when it
    /// was made). At least three times --ca-rollover-settle plus --cert-check-interval.
    #[arg(long, env = "WI_CA_LIFETIME", value_name = "DURATION", default_value = "5y", value_parser = humantime::parse_duration)]
    pub ca_lifetime: Duration,

    /// Lifetime of a serving certificate; a new one is issued when a third of it is left (counted from when it was
    /// made). At least three times --cert-check-interval.
    #[arg(long, env = "WI_CERT_LIFETIME", value_name = "DURATION", default_value = "365d", value_parser = humantime::parse_duration)]
    pub cert_lifetime: Duration,

    /// How long a new CA is trusted in the caBundle before it signs the served certificate, and how long the old
    /// CA stays trusted afterwards. At least --cert-check-interval, so that every replica serves the new certificate
    /// before the old CA leaves the caBundle.
    #[arg(long, env = "WI_CA_ROLLOVER_SETTLE", value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub ca_rollover_settle: Duration,

    /// How often the Secret and the caBundle are checked (self-managed mode).
    #[arg(long, env = "WI_CERT_CHECK_INTERVAL", value_name = "DURATION", default_value = "1m", value_parser = humantime::parse_duration)]
    pub cert_check_interval: Duration,
}

impl CertArgs {
    /// The certificate configuration these flags describe.
    pub fn config(&self) -> CertConfig {
        CertConfig {
            cert_mode: match self.cert_mode {
                CertModeArg::Files => CertMode::Files,
                CertModeArg::SelfManaged => CertMode::SelfManaged,
            },
            namespace: self.namespace.clone(),
            service_name: self.service_name.clone(),
            cert_secret: self.cert_secret.clone(),
            webhook_configuration: self.webhook_configuration.clone(),
            ca_lifetime: self.ca_lifetime,
            cert_lifetime: self.cert_lifetime,
            ca_rollover_settle: self.ca_rollover_settle,
            cert_check_interval: self.cert_check_interval,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Plain,
    /// One JSON object a line, with the span fields (uid, namespace, pod, service account).
    Json,
}

/// Logging flags.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(
        long,
        env = "WI_LOG_FORMAT",
        value_name = "FORMAT",
        value_enum,
        default_value = "plain"
    )]
    pub log_format: LogFormatArg,

    /// Log level or `tracing` filter directives (e.g. `info`, `debug`, `info,kube=warn`).
    #[arg(long, env = "WI_LOG_LEVEL", value_name = "FILTER", default_value = "info")]
    pub log_level: String,
}

impl LogArgs {
    /// The logging configuration these flags describe.
    pub fn config(&self) -> LogConfig {
        LogConfig {
            format: match self.log_format {
                LogFormatArg::Plain => LogFormat::Plain,
                LogFormatArg::Json => LogFormat::Json,
            },
            level: self.log_level.clone(),
        }
    }
}

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
    pub engine: EngineArgs,
}

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

    /// Output format: text (grouped by object), json (schema in the README) or sarif (for code scanning).
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
    pub engine: EngineArgs,
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

/// An input of the CLI that cannot be used. The message is one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file is neither valid JSON nor valid YAML, or not the object expected.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, on one line.
        message: String,
    },
    /// More than one input was `-`.
    #[error("only one input can be read from standard input (-)")]
    StdinTwice,
    /// Output could not be written.
    #[error("cannot write the output: {0}")]
    Write(#[from] std::io::Error),
    /// The server stopped with an error (a bad certificate, a busy port, no Kubernetes access).
    #[error("{0:#}")]
    Serve(anyhow::Error),
    /// doctor could not read its input (a file, az output, the cluster).
    #[error("{0}")]
    DoctorInput(String),
    /// doctor found errors (the report says which).
    #[error("doctor found {0} error(s)")]
    Findings(usize),
}

impl CliError {
    /// The process exit code: 2 for input the user can fix, 1 when the server fails.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Serve(_) | CliError::Findings(_) => 1,
            _ => 2,
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli, stdin: &mut dyn Read, stdout: &mut dyn Write, stderr: &mut dyn Write) -> Result<(), CliError> {
    match cli.command {
        Command::Mutate(args) => run_mutate(&args, stdin, stdout, stderr),
        Command::Doctor(args) => run_doctor(&args, stdin, stdout),
        Command::Serve(args) => {
            let provider = rustls::crypto::CryptoProvider::get_default()
                .cloned()
                .unwrap_or_else(|| std::sync::Arc::new(rustls::crypto::ring::default_provider()));
            let runtime = tokio::runtime::Runtime::new().map_err(|e| CliError::Serve(e.into()))?;
            runtime
                .block_on(crate::server::serve(args.config(), provider))
                .map_err(CliError::Serve)
        }
    }
}

fn run_doctor(args: &DoctorArgs, stdin: &mut dyn Read, stdout: &mut dyn Write) -> Result<(), CliError> {
    use crate::doctor::{self, AzureInputs, Options, cluster};
    let unreadable = |e: &dyn std::fmt::Display| CliError::DoctorInput(one_line(&e.to_string()));
    let pod = args.target.as_ref().map(|DoctorTarget::Pod { name }| name.as_str());
    if args.files.is_empty() && !args.cluster && pod.is_none() {
        return Err(CliError::DoctorInput(
            "nothing to check: give manifests with -f PATH (- for standard input), --cluster, or pod NAME".to_owned(),
        ));
    }
    let mut objects = doctor::load_paths(&args.files, stdin).map_err(|e| unreadable(&e))?;
    let mut azure = AzureInputs::default();
    for path in &args.azure {
        let text = std::fs::read_to_string(path).map_err(|source| CliError::Read {
            path: path.display().to_string(),
            source,
        })?;
        azure
            .add(&path.display().to_string(), &text)
            .map_err(|e| unreadable(&e))?;
    }
    let mut options = Options {
        config: args.engine.config(),
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
    let mut findings = doctor::check(&objects, &azure, &options);
    for mut f in webhook_findings {
        if args.strict {
            f.severity = crate::diagnostics::Severity::Error;
        }
        findings.push(f);
    }
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
    let report = doctor::render(&findings, objects.len(), args.output, colour, verdict.as_deref());
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

fn run_mutate(
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
    let mut reader = Reader { stdin, used: false };
    let config = args.engine.config();
    let sa_path = args.service_account.as_path();
    let sa_object = reader.read(sa_path)?;
    let sa = ServiceAccount::from_object(&sa_object).map_err(|e| invalid(sa_path, e))?;
    let namespace = match &args.namespace {
        Some(path) => {
            let object = reader.read(path)?;
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
        Some(path) => Some((path.as_path(), reader.read(path)?)),
        None => None,
    };

    // The files become the objects of a lookup, and the pod goes through the admission path `serve` uses.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(CliError::Write)?;
    if let Some(review_path) = &args.review {
        let body = reader.read(review_path)?;
        let review = AdmissionReview::from_value(body).map_err(|e| invalid(review_path, e))?;
        let response = match review.pod_create() {
            None => review.allow_unchanged(),
            Some(pod) => {
                let lookup = lookup_of(pod.pod, pod.namespace, &sa, sa_path, namespace.as_ref(), spc.as_ref())?;
                runtime.block_on(admission::review(&review, &lookup, &config)).0
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
    let manifest = reader.read(pod_path)?;
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
    match runtime.block_on(admission::admit_pod(&create, &lookup, &config)) {
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
            let yaml = serde_yaml::to_string(&pod).map_err(|e| CliError::Write(std::io::Error::other(e)))?;
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

struct Reader<'a> {
    stdin: &'a mut dyn Read,
    used: bool,
}

impl Reader<'_> {
    /// Reads a JSON or YAML document from a file, or from standard input for `-`.
    fn read(&mut self, path: &Path) -> Result<Value, CliError> {
        let shown = path.display().to_string();
        let text = if path == Path::new("-") {
            if self.used {
                return Err(CliError::StdinTwice);
            }
            self.used = true;
            let mut text = String::new();
            self.stdin.read_to_string(&mut text).map_err(|source| CliError::Read {
                path: "standard input".to_owned(),
                source,
            })?;
            text
        } else {
            std::fs::read_to_string(path).map_err(|source| CliError::Read {
                path: shown.clone(),
                source,
            })?
        };
        parse_document(&text).map_err(|message| CliError::Invalid { path: shown, message })
    }
}

/// Parses JSON (when the text starts with `{` or `[`) or YAML, into JSON values.
fn parse_document(text: &str) -> Result<Value, String> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err("the file is empty".to_owned());
    }
    let value: Value = if trimmed.starts_with(['{', '[']) {
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?
    } else {
        serde_yaml::from_str(text).map_err(|e| one_line(&format!("invalid YAML: {e}")))?
    };
    if !value.is_object() {
        return Err("expected a Kubernetes object (a JSON or YAML mapping)".to_owned());
    }
    Ok(value)
}

fn invalid(path: &Path, error: impl std::fmt::Display) -> CliError {
    CliError::Invalid {
        path: path.display().to_string(),
        message: one_line(&error.to_string()),
    }
}

fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        let _ = write!(out, "{}", line.trim());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("10m", true)]
    #[case("0.5", true)]
    #[case("64Mi", true)]
    #[case("1G", true)]
    #[case("Mi", false)]
    #[case("64MB", false)]
    #[case("1.", false)]
    #[case("-1", false)]
    fn quantities(#[case] text: &str, #[case] valid: bool) {
        assert_eq!(parse_quantity(text).is_ok(), valid, "{text}");
    }

    #[rstest]
    #[case("WI_VAULT_URL_TEMPLATE=https://{name}.vault.example", Ok(()))]
    #[case("NOEQUALS", Err("NAME=VALUE"))]
    #[case("1BAD=x", Err("not an env var name"))]
    #[case("AZURE_CLIENT_ID=x", Err("set by the webhook"))]
    #[case("WI_SECRETS_CONFIG=x", Err("set by the webhook"))]
    fn sidecar_env_pairs(#[case] text: &str, #[case] expected: Result<(), &str>) {
        match (parse_env_pair(text), expected) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err(part)) => assert!(e.contains(part), "{e}"),
            (got, want) => panic!("{text}: {got:?}, expected {want:?}"),
        }
    }

    #[test]
    fn intervals_are_durations_of_a_second_or_more() {
        assert_eq!(parse_interval(" 90s ").unwrap(), "90s");
        assert!(parse_interval("500ms").unwrap_err().contains("1s"));
        assert!(parse_interval("soon").is_err());
    }
}
