//! The main job, end to end on the emulator: the AKS + Key Vault walkthrough replayed with the real parts.
//!
//! The emulator plays Entra ID, the cluster's service account issuer and Key Vault. `wi-webhook serve` (the same
//! server a cluster runs, over HTTPS, fed the example manifests as its caches would be) admits the example
//! Deployment's pod; the demo then plays kubelet: it maps the pod's volumes to directories, projects the service
//! account token the webhook asked for, and starts the injected `wi-sidecar` container as a process with exactly
//! the env the webhook injected, waiting on its startup probe. An app built on `wi-sdk` reads the secret and sees a
//! rotation without a restart. Finally the same app code reads a directory written with kubelet's own layout, as
//! the Secrets Store CSI driver leaves it.
//!
//! [`run`] prints each step as it goes and returns a [`Summary`], or the step that failed and why.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail, ensure};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::emulator::{Emulator, FederatedCredential, Identity, TOKEN_EXCHANGE_AUDIENCE};

/// The walkthrough's values.
pub const WALKTHROUGH_VAULT: &str = "kv-techventure-secrets-001";
/// The secret of the walkthrough.
pub const SECRET_NAME: &str = "MyWebAppSecret";
/// Its first value.
pub const SECRET_VALUE: &str = "SuperSecureValue123!";
/// The value it is rotated to.
pub const ROTATED_VALUE: &str = "RotatedSecureValue456!";
/// The value of the second rotation, in the CSI-style layout.
pub const ROTATED_AGAIN: &str = "RotatedAgainValue789!";
/// The managed identity of the walkthrough.
pub const IDENTITY_NAME: &str = "mi-aks-workload";

/// What the demo needs from its caller.
#[derive(Debug, Clone)]
pub struct Options {
    /// `manifests/examples`.
    pub examples: PathBuf,
    /// The `wi-sidecar` binary.
    pub sidecar: PathBuf,
    /// Rotation interval given to the webhook for the sidecars it injects (short, so the demo is quick).
    pub rotation_interval: Duration,
}

/// A step that failed: which, and why.
#[derive(Debug, thiserror::Error)]
#[error("step {number} ({title}) failed: {error:#}")]
pub struct StepFailed {
    /// 1-based.
    pub number: usize,
    /// The step's title.
    pub title: String,
    /// Why.
    pub error: anyhow::Error,
}

/// What the demo measured.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Steps with their duration.
    pub steps: Vec<(String, Duration)>,
    /// Time from setting the new value in Key Vault to the app seeing it, with the sidecar.
    pub rotation_seen_after: Duration,
    /// The same through the CSI-style layout.
    pub csi_rotation_seen_after: Duration,
    /// JSON patch operations of the sidecar admission.
    pub patch_ops: usize,
}

const TOTAL_STEPS: usize = 13;

struct Steps<'a> {
    out: &'a mut dyn Write,
    number: usize,
    summary: Summary,
}

impl Steps<'_> {
    /// Runs one step: prints its title, then `ok` with its time and the detail lines it returns.
    async fn step<T>(
        &mut self,
        title: &str,
        work: impl std::future::Future<Output = anyhow::Result<(T, Vec<String>)>>,
    ) -> Result<T, StepFailed> {
        self.number += 1;
        let _ = writeln!(self.out, "[{:>2}/{TOTAL_STEPS}] {title}", self.number);
        let started = Instant::now();
        match work.await {
            Ok((value, details)) => {
                let elapsed = started.elapsed();
                for line in details {
                    let _ = writeln!(self.out, "        {line}");
                }
                let _ = writeln!(self.out, "        ok ({})", millis(elapsed));
                self.summary.steps.push((title.to_owned(), elapsed));
                Ok(value)
            }
            Err(error) => {
                let _ = writeln!(self.out, "        FAILED: {error:#}");
                Err(StepFailed {
                    number: self.number,
                    title: title.to_owned(),
                    error,
                })
            }
        }
    }
}

fn millis(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}

fn read_yaml(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    wi_contract::yaml::from_str(&text).with_context(|| format!("{} is not YAML", path.display()))
}

fn text_at<'a>(value: &'a Value, pointer: &str, what: &str) -> anyhow::Result<&'a str> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{what} ({pointer}) is missing"))
}

/// The example manifests, as the webhook's caches would hold them.
struct Examples {
    service_account: Value,
    class: Value,
    pod: Value,
    client_id: String,
    tenant_id: String,
    vault: String,
}

fn load_examples(dir: &Path) -> anyhow::Result<Examples> {
    let service_account = read_yaml(&dir.join("serviceaccount.yaml"))?;
    let class = read_yaml(&dir.join("secretproviderclass.yaml"))?;
    let deployment = read_yaml(&dir.join("deployment.yaml"))?;
    let client_id = text_at(
        &service_account,
        "/metadata/annotations/azure.workload.identity~1client-id",
        "the ServiceAccount's client id",
    )?
    .to_owned();
    let tenant_id = text_at(&class, "/spec/parameters/tenantId", "the class's tenantId")?.to_owned();
    let vault = text_at(&class, "/spec/parameters/keyvaultName", "the class's keyvaultName")?.to_owned();
    let mut pod = wi_webhook::mutate::pod_of(deployment).map_err(|e| anyhow!("deployment.yaml: {e}"))?;
    // The API server fills these in before admission.
    pod["metadata"]["namespace"] = json!("default");
    pod["metadata"]["generateName"] = json!("my-web-app-5d8f7c9b6-");
    Ok(Examples {
        service_account,
        class,
        pod,
        client_id,
        tenant_id,
        vault,
    })
}

/// `wi-webhook serve`, in this process, on 127.0.0.1 with a certificate of a CA made for the demo.
struct Webhook {
    url: String,
    client: reqwest::Client,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _certs: tempfile::TempDir,
}

impl Webhook {
    async fn start(args: &[String], lookup: wi_webhook::lookup::StaticLookup) -> anyhow::Result<Self> {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: wi_webhook::server::ServeConfig,
        }
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wi-demo webhook CA");
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate()?;
        let params =
            rcgen::CertificateParams::new(vec!["wi-webhook.wi-system.svc".to_owned(), "127.0.0.1".to_owned()])?;
        let cert = params.signed_by(&key, &issuer)?;
        let certs = tempfile::tempdir()?;
        std::fs::write(certs.path().join("tls.crt"), cert.pem())?;
        std::fs::write(certs.path().join("tls.key"), key.serialize_pem())?;
        let mut argv: Vec<String> = [
            "wi-webhook",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--shutdown-delay",
            "0s",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        argv.push("--tls-cert-file".to_owned());
        argv.push(certs.path().join("tls.crt").display().to_string());
        argv.push("--tls-key-file".to_owned());
        argv.push(certs.path().join("tls.key").display().to_string());
        argv.extend(args.iter().cloned());
        let serve = Wrapper::try_parse_from(argv)
            .map_err(|e| anyhow!("wi-webhook flags: {e}"))?
            .args;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webhook = wi_webhook::server::Webhook::bind(serve, Arc::new(lookup), provider).await?;
        let url = format!("https://{}/mutate-v1-pod", webhook.admission_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(webhook.run(async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes())?])
            .no_proxy()
            .build()?;
        Ok(Webhook {
            url,
            client,
            task,
            stop: Some(stop),
            _certs: certs,
        })
    }

    /// Sends a pod CREATE as kube-apiserver does; returns the patch and the warnings, or the denial.
    async fn admit(&self, pod: &Value) -> anyhow::Result<(json_patch::Patch, Vec<String>)> {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uuid::Uuid::new_v4().to_string(),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "default",
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod,
                "dryRun": false,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
            },
        });
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&review)?)
            .send()
            .await
            .context("POST to the webhook")?;
        ensure!(
            response.status().is_success(),
            "the webhook answered {}",
            response.status()
        );
        let body: Value = serde_json::from_slice(&response.bytes().await?)?;
        let answer = &body["response"];
        if answer["allowed"] != json!(true) {
            bail!("denied: {}", answer["status"]["message"]);
        }
        let warnings = answer["warnings"]
            .as_array()
            .map(|w| w.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        let patch = match answer["patch"].as_str() {
            Some(b64) => serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(b64)?)?,
            None => json_patch::Patch(Vec::new()),
        };
        Ok((patch, warnings))
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.context("webhook task")?
    }
}

/// One line per patch operation, env entries as NAME=VALUE, long values cut.
fn describe_patch(patch: &json_patch::Patch) -> Vec<String> {
    let short = |v: &Value| {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if text.chars().count() > 96 {
            format!("{}...", text.chars().take(93).collect::<String>())
        } else {
            text
        }
    };
    let env_line = |e: &Value| format!("{}={}", e["name"].as_str().unwrap_or("?"), short(&e["value"]));
    let mut lines = Vec::new();
    for op in &patch.0 {
        let (kind, path, value) = match op {
            json_patch::PatchOperation::Add(a) => ("+", a.path.to_string(), Some(&a.value)),
            json_patch::PatchOperation::Replace(r) => ("~", r.path.to_string(), Some(&r.value)),
            other => ("?", format!("{other:?}"), None),
        };
        let Some(value) = value else {
            lines.push(format!("{kind} {path}"));
            continue;
        };
        match value {
            Value::Array(items) if path.ends_with("/env") => {
                lines.push(format!("{kind} {path}:"));
                lines.extend(items.iter().map(|e| format!("      {}", env_line(e))));
            }
            Value::Object(_) if path.ends_with("/env/-") => lines.push(format!("{kind} {path}: {}", env_line(value))),
            Value::Array(items) if items.iter().any(|i| i.get("restartPolicy").is_some()) => {
                for container in items {
                    lines.push(format!(
                        "{kind} {path}: container {} image {} restartPolicy {} startupProbe {} port {}",
                        container["name"],
                        container["image"],
                        container["restartPolicy"],
                        container["startupProbe"]["httpGet"]["path"],
                        container["startupProbe"]["httpGet"]["port"]
                    ));
                    for e in container["env"].as_array().into_iter().flatten() {
                        lines.push(format!("      {}", env_line(e)));
                    }
                    for m in container["volumeMounts"].as_array().into_iter().flatten() {
                        lines.push(format!("      mount {} at {}", m["name"], m["mountPath"]));
                    }
                }
            }
            other => lines.push(format!("{kind} {path}: {}", short(other))),
        }
    }
    lines
}

/// Directories standing in for the pod's volumes, as kubelet maps them.
struct Volumes {
    root: tempfile::TempDir,
}

impl Volumes {
    fn dir(&self, volume: &str) -> PathBuf {
        self.root.path().join(volume)
    }

    /// `value` with a container mount path replaced by the volume's directory, as the process sees it.
    fn map(&self, container: &Value, value: &str) -> String {
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let (Some(path), Some(name)) = (mount["mountPath"].as_str(), mount["name"].as_str()) else {
                continue;
            };
            if let Some(rest) = value.strip_prefix(path)
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return format!("{}{rest}", self.dir(name).display());
            }
        }
        value.to_owned()
    }
}

/// Plays kubelet for the injected sidecar: the projected token, the env with mount paths mapped, the process.
async fn start_sidecar(
    emulator: &Emulator,
    pod: &Value,
    volumes: &Volumes,
    binary: &Path,
) -> anyhow::Result<(tokio::process::Child, Vec<String>, u16)> {
    let sidecar = pod["spec"]["initContainers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "wi-sidecar"))
        .ok_or_else(|| anyhow!("the admitted pod has no wi-sidecar init container"))?;
    let token_volume = pod["spec"]["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "azure-identity-token"))
        .ok_or_else(|| anyhow!("the admitted pod has no azure-identity-token volume"))?;
    let source = &token_volume["projected"]["sources"][0]["serviceAccountToken"];
    let audience = source["audience"].as_str().unwrap_or(TOKEN_EXCHANGE_AUDIENCE);
    let lifetime = source["expirationSeconds"].as_u64().unwrap_or(3600);
    let path = source["path"].as_str().unwrap_or("azure-identity-token");
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let account = pod["spec"]["serviceAccountName"].as_str().unwrap_or("default");
    let token = emulator.service_account_token_for(namespace, account, audience, now, Duration::from_secs(lifetime))?;
    std::fs::create_dir_all(volumes.dir("azure-identity-token"))?;
    std::fs::write(volumes.dir("azure-identity-token").join(path), token)?;
    std::fs::create_dir_all(volumes.dir("wi-secrets-store"))?;

    let mut env = Vec::new();
    let mut shown = Vec::new();
    for entry in sidecar["env"].as_array().into_iter().flatten() {
        let name = entry["name"]
            .as_str()
            .ok_or_else(|| anyhow!("an env entry without a name"))?;
        let value = entry["value"]
            .as_str()
            .ok_or_else(|| anyhow!("env {name} is not a plain value"))?;
        let mapped = volumes.map(sidecar, value);
        if mapped != value {
            shown.push(format!("{name}: {value} -> {mapped}"));
        }
        env.push((name.to_owned(), mapped));
    }
    let args: Vec<String> = sidecar["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    let port = sidecar["startupProbe"]["httpGet"]["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| anyhow!("the sidecar has no startup probe port"))?;
    let child = tokio::process::Command::new(binary)
        .args(&args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("WI_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    shown.insert(
        0,
        format!(
            "{} {} with the {} env vars the webhook injected; volumes mapped:",
            binary.display(),
            args.join(" "),
            env.len()
        ),
    );
    Ok((child, shown, port))
}

/// Polls `http://127.0.0.1:PORT/PATH` until 200, as kubelet runs a startup probe.
async fn probe(port: u16, path: &str, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let client = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("http://127.0.0.1:{port}{path}");
    while started.elapsed() < timeout {
        if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{url} did not answer 200 within {}", millis(timeout))
}

/// A directory as kubelet writes a volume (the Secrets Store CSI driver hands its files to the same layout):
/// `..YYYY_MM_DD_HH_MM_SS.NNNNNNNNN` version directories, `..data` swapped by rename, one symlink per file.
/// Written here independently of `wi-sidecar`'s writer.
fn kubelet_write(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let now = time::OffsetDateTime::now_utc();
    let name = format!(
        "..{:04}_{:02}_{:02}_{:02}_{:02}_{:02}.{:09}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.nanosecond()
    );
    std::fs::create_dir(dir.join(&name))?;
    for (file, data) in files {
        std::fs::write(dir.join(&name).join(file), data)?;
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let _ = std::fs::remove_file(dir.join("..data_tmp"));
    std::os::unix::fs::symlink(&name, dir.join("..data_tmp"))?;
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data"))?;
    for file in files.keys() {
        let link = dir.join(file);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(file), link)?;
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old))?;
    }
    Ok(())
}

/// Waits until the app's value is `want`; returns how long it took.
async fn wait_for_value(value: &wi_sdk::Watched<String>, want: &str, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut updates = value.subscribe();
    loop {
        if value.expose().is_some_and(|v| *v == want) {
            return Ok(started.elapsed());
        }
        let left = timeout
            .checked_sub(started.elapsed())
            .ok_or_else(|| anyhow!("the app did not see {want:?} within {}", millis(timeout)))?;
        let _ = tokio::time::timeout(left, updates.changed()).await;
    }
}

/// Replays the walkthrough, printing to `out`.
pub async fn run(options: &Options, out: &mut dyn Write) -> Result<Summary, StepFailed> {
    // The workspace's reqwest has no TLS crypto provider of its own (`rustls-no-provider`): the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = writeln!(
        out,
        "wi-demo: the AKS + Key Vault walkthrough, end to end on the emulator (Entra ID, the cluster's service \
         account issuer and Key Vault, over HTTPS on 127.0.0.1)\n"
    );
    let mut steps = Steps {
        out,
        number: 0,
        summary: Summary::default(),
    };

    let emulator = steps
        .step("Start the emulator", async {
            let emulator = Emulator::start().await?;
            let details = vec![
                format!("Entra ID authority host: {}", emulator.authority_host()),
                format!("service account issuer:  {}", emulator.issuer_url()),
            ];
            Ok((emulator, details))
        })
        .await?;

    let examples = steps
        .step("Read the example manifests (manifests/examples)", async {
            let ex = load_examples(&options.examples)?;
            let details = vec![
                format!("ServiceAccount default/my-app-sa: client id {}", ex.client_id),
                format!(
                    "SecretProviderClass kv-techventure-secrets: vault {}, tenant {}",
                    ex.vault, ex.tenant_id
                ),
                format!(
                    "Deployment my-web-app: pod template labelled azure.workload.identity/use=true, annotated \
                     workload-identity.rs/secret-provider-class={}",
                    text_at(
                        &ex.pod,
                        "/metadata/annotations/workload-identity.rs~1secret-provider-class",
                        "class"
                    )?
                ),
            ];
            Ok((ex, details))
        })
        .await?;

    let vault_url = steps
        .step("Create the Key Vault", async {
            // The walkthrough's name, through the same check wi-sidecar and the webhook run.
            let walkthrough = format!(
                "keyvaultName: {WALKTHROUGH_VAULT}\nobjects: |\n  array:\n    - |\n      objectName: {SECRET_NAME}\n"
            );
            let refused = match wi_sidecar::config::parse(&walkthrough) {
                Err(e) => e.to_string(),
                Ok(_) => bail!("{WALKTHROUGH_VAULT} was accepted, but Azure refuses vault names over 24 characters"),
            };
            let url = emulator.create_vault(&examples.vault, &examples.tenant_id).await?;
            let details = vec![
                format!(
                    "the walkthrough's {WALKTHROUGH_VAULT} ({} characters) is refused: {refused}",
                    WALKTHROUGH_VAULT.len()
                ),
                format!("created {} (the name manifests/examples uses) at {url}", examples.vault),
            ];
            Ok((url, details))
        })
        .await?;

    steps
        .step("Set the secret in Key Vault", async {
            let version = emulator.set_secret(&examples.vault, SECRET_NAME, SECRET_VALUE, None)?;
            Ok(((), vec![format!("{SECRET_NAME} = {SECRET_VALUE} (version {version})")]))
        })
        .await?;

    steps
        .step(
            "Managed identity with a federated credential, allowed to read the vault",
            async {
                let identity = Identity {
                    name: IDENTITY_NAME.to_owned(),
                    client_id: examples.client_id.clone(),
                    principal_id: uuid::Uuid::new_v4().to_string(),
                    tenant_id: examples.tenant_id.clone(),
                };
                emulator.add_identity_with_ids(identity.clone());
                let subject = "system:serviceaccount:default:my-app-sa";
                emulator.add_federated_credential(
                    &identity.client_id,
                    FederatedCredential {
                        issuer: emulator.issuer_url().to_owned(),
                        subject: subject.to_owned(),
                        audience: TOKEN_EXCHANGE_AUDIENCE.to_owned(),
                    },
                );
                emulator.grant(&examples.vault, &identity.principal_id, &["get"]);
                let details = vec![
                    format!(
                        "{IDENTITY_NAME}: client id {}, principal id {}",
                        identity.client_id, identity.principal_id
                    ),
                    format!(
                        "federated credential: issuer {}, subject {subject}",
                        emulator.issuer_url()
                    ),
                    "Key Vault Secrets User (get) for the principal id".to_owned(),
                ];
                Ok(((), details))
            },
        )
        .await?;

    let sidecar_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(9441);
    let webhook = steps
        .step("Start wi-webhook serve (HTTPS), configured for this cloud", async {
            let lookup = wi_webhook::lookup::StaticLookup {
                service_accounts: vec![wi_webhook::mutate::ServiceAccount::from_object(
                    &examples.service_account,
                )?],
                namespaces: BTreeMap::from([("default".to_owned(), BTreeMap::new())]),
                secret_provider_classes: vec![examples.class.clone()],
            };
            let sidecar_env = format!(
                "WI_VAULT_URL_TEMPLATE={vault_url},WI_CA_FILE={},WI_VERIFY_CHALLENGE_RESOURCE=false",
                emulator.ca_file().display()
            );
            let args: Vec<String> = [
                "--tenant-id",
                &examples.tenant_id,
                "--cloud",
                emulator.authority_host(),
                "--sidecar-rotation-interval",
                &humantime::format_duration(options.rotation_interval).to_string(),
                "--sidecar-admin-port",
                &sidecar_port.to_string(),
                "--sidecar-env",
                &sidecar_env,
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            let webhook = Webhook::start(&args, lookup).await?;
            let details = vec![
                format!("{} (the cluster would reach it through its Service)", webhook.url),
                format!("flags: {}", args.join(" ")),
            ];
            Ok((webhook, details))
        })
        .await?;

    let csi_pod = steps
        .step(
            "Admit the Deployment's pod as written (csi delivery, the default)",
            async {
                let (patch, warnings) = webhook.admit(&examples.pod).await?;
                let mut pod = examples.pod.clone();
                json_patch::patch(&mut pod, &patch)?;
                let mut details = describe_patch(&patch);
                details.extend(warnings.iter().map(|w| format!("warning: {w}")));
                ensure!(warnings.is_empty(), "unexpected warnings");
                Ok((pod, details))
            },
        )
        .await?;

    let sidecar_pod = steps
        .step(
            "Admit it again with workload-identity.rs/secrets-delivery: sidecar",
            async {
                let mut pod = examples.pod.clone();
                pod["metadata"]["annotations"]["workload-identity.rs/secrets-delivery"] = json!("sidecar");
                let (patch, warnings) = webhook.admit(&pod).await?;
                ensure!(warnings.is_empty(), "unexpected warnings: {warnings:?}");
                let ops = patch.0.len();
                let details: Vec<String> = describe_patch(&patch)
                    .into_iter()
                    .filter(|l| {
                        l.contains("initContainers")
                            || l.contains("wi-secrets-store")
                            || l.starts_with("      WI_")
                            || l.starts_with("      mount")
                    })
                    .collect();
                json_patch::patch(&mut pod, &patch)?;
                // A second pass, as when another webhook asks for reinvocation, adds nothing.
                let (again, _) = webhook.admit(&pod).await?;
                ensure!(again.0.is_empty(), "reinvocation added {} operations", again.0.len());
                Ok(((pod, ops), details))
            },
        )
        .await?;
    let (sidecar_pod, ops) = sidecar_pod;
    steps.summary.patch_ops = ops;

    let (mut sidecar, volumes) = steps
        .step(
            "Start the injected wi-sidecar as kubelet would, and wait for its startup probe",
            async {
                let volumes = Volumes {
                    root: tempfile::tempdir()?,
                };
                let (child, mut details, port) =
                    start_sidecar(&emulator, &sidecar_pod, &volumes, &options.sidecar).await?;
                let ready = probe(port, "/readyz", Duration::from_secs(60)).await?;
                let file = volumes.dir("wi-secrets-store").join(SECRET_NAME);
                ensure!(file.exists(), "{} was not written", file.display());
                details.push(format!(
                    "startup probe /readyz passed after {}; the app containers may start",
                    millis(ready)
                ));
                details.push(format!("wrote {} (a ..data swap, as kubelet writes)", file.display()));
                Ok(((child, volumes), details))
            },
        )
        .await?;

    let app = steps
        .step("The app (wi-sdk) reads the secret", async {
            let dir = volumes.dir("wi-secrets-store");
            let secrets = wi_sdk::SecretsDir::watch(&dir)?;
            let value: wi_sdk::Watched<String> = secrets.value(SECRET_NAME);
            let current = value.wait_ready(Duration::from_secs(10)).await?;
            ensure!(current.expose() == SECRET_VALUE, "the app read {:?}", current.expose());
            Ok((
                (secrets, value),
                vec![format!("app: {SECRET_NAME} = {}", current.expose())],
            ))
        })
        .await?;
    let (_secrets, value) = app;

    let rotation = steps
        .step(
            "Rotate the secret in Key Vault; the app sees it without a restart",
            async {
                let version = emulator.set_secret(&examples.vault, SECRET_NAME, ROTATED_VALUE, None)?;
                let seen = wait_for_value(
                    &value,
                    ROTATED_VALUE,
                    options.rotation_interval * 5 + Duration::from_secs(10),
                )
                .await?;
                let metrics = reqwest::Client::builder()
                    .no_proxy()
                    .build()?
                    .get(format!("http://127.0.0.1:{sidecar_port}/metrics"))
                    .send()
                    .await?
                    .text()
                    .await?;
                let written = metrics
                    .lines()
                    .find(|l| l.starts_with("wi_sidecar_syncs_total{result=\"written\"}"))
                    .unwrap_or("wi_sidecar_syncs_total{result=\"written\"} ?")
                    .to_owned();
                let details = vec![
                    format!("Key Vault: {SECRET_NAME} = {ROTATED_VALUE} (version {version})"),
                    format!(
                        "app: {SECRET_NAME} = {ROTATED_VALUE}, {} later (rotation interval {}), same process, watcher \
                     generation {}",
                        millis(seen),
                        humantime::format_duration(options.rotation_interval),
                        value.generation()
                    ),
                    format!("sidecar metrics: {written}"),
                ];
                Ok((seen, details))
            },
        )
        .await?;
    steps.summary.rotation_seen_after = rotation;

    let csi = steps
        .step("The same app code on the CSI driver's layout (kubelet-style writer)", async {
            let spc = wi_sidecar::config::from_value(&examples.class)?;
            let identity_env = |pod: &Value| -> BTreeMap<String, String> {
                pod["spec"]["containers"][0]["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e["value"].as_str()?.to_owned())))
                    .collect()
            };
            let env = identity_env(&csi_pod);
            let token_file = volumes.dir("azure-identity-token").join("azure-identity-token");
            let cloud = wi_sdk::identity::CloudOptions {
                authority_host: None,
                extra_ca_file: Some(emulator.ca_file().to_owned()),
            };
            let credential = wi_sdk::identity::from_vars_with(
                |name| match name {
                    "AZURE_FEDERATED_TOKEN_FILE" => Some(token_file.display().to_string()),
                    _ => env.get(name).cloned(),
                },
                &cloud,
            )?;
            let fetcher = wi_sidecar::fetch::Fetcher::new(
                spc,
                &vault_url,
                credential,
                wi_sdk::identity::client_options(&cloud)?,
                false,
                4,
            )?;
            let dir = volumes.root.path().join("csi-secrets-store");
            let write = |files: std::collections::BTreeMap<String, wi_sidecar::atomic_writer::FileContent>| {
                let files = files.into_iter().map(|(k, v)| (k, v.data)).collect();
                kubelet_write(&dir, &files)
            };
            write(fetcher.fetch_all().await?)?;
            let secrets = wi_sdk::SecretsDir::watch(&dir)?;
            let value: wi_sdk::Watched<String> = secrets.value(SECRET_NAME);
            let current = value.wait_ready(Duration::from_secs(10)).await?;
            ensure!(current.expose() == ROTATED_VALUE, "the app read {:?}", current.expose());
            emulator.set_secret(&examples.vault, SECRET_NAME, ROTATED_AGAIN, None)?;
            let started = Instant::now();
            write(fetcher.fetch_all().await?)?;
            wait_for_value(&value, ROTATED_AGAIN, Duration::from_secs(10)).await?;
            let seen = started.elapsed();
            let version = std::fs::read_link(dir.join("..data"))?;
            let details = vec![
                format!(
                    "the csi pod's env (AZURE_CLIENT_ID={}, AZURE_TENANT_ID={}) fetches as the driver's Azure provider \
                     would; files written as kubelet writes ({})",
                    env.get("AZURE_CLIENT_ID").map_or("?", String::as_str),
                    env.get("AZURE_TENANT_ID").map_or("?", String::as_str),
                    version.display()
                ),
                format!("app: {SECRET_NAME} = {}", current.expose()),
                format!("rotated to {ROTATED_AGAIN}: the app saw it {} after the write", millis(seen)),
            ];
            Ok((seen, details))
        })
        .await?;
    steps.summary.csi_rotation_seen_after = csi;

    steps
        .step("Stop: SIGTERM to the sidecar, the webhook drains", async {
            let pid = sidecar.id().ok_or_else(|| anyhow!("the sidecar already exited"))?;
            let status = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()?;
            ensure!(status.success(), "kill -TERM failed");
            let exit = tokio::time::timeout(Duration::from_secs(10), sidecar.wait()).await??;
            ensure!(exit.success(), "the sidecar exited with {exit}");
            webhook.stop().await?;
            Ok(((), vec![format!("wi-sidecar exited with {exit}; wi-webhook stopped")]))
        })
        .await?;

    let summary = steps.summary;
    let _ = writeln!(steps.out, "\nSummary");
    for (i, (title, elapsed)) in summary.steps.iter().enumerate() {
        let _ = writeln!(steps.out, "  {:>2}. {title:<88} {:>9}", i + 1, millis(*elapsed));
    }
    let _ = writeln!(
        steps.out,
        "\nAll {TOTAL_STEPS} steps passed: the webhook injected the identity and the sidecar ({} patch operations), \
         the sidecar fetched {SECRET_NAME} with the pod's workload identity, and the app saw two rotations without a \
         restart (sidecar: {} after the Key Vault update; kubelet layout: {} after the write).",
        summary.patch_ops,
        millis(summary.rotation_seen_after),
        millis(summary.csi_rotation_seen_after)
    );
    Ok(summary)
}
