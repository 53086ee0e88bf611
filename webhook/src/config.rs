//! What the webhook is told by its operator: tenant, cloud and token audience.

use wi_contract::{
    DEFAULT_AUDIENCE, ENV_ADMIN_LISTEN, ENV_ROTATION_INTERVAL, ENV_SECRETS_CONFIG, ENV_SECRETS_DIR, SIDECAR_ADMIN_PORT,
};

pub use wi_contract::cloud::{Cloud, UnknownCloud};

/// The webhook-wide settings the mutation engine reads: the flags of every subcommand that mutates (`serve`,
/// `mutate`, `doctor`). The doc comments are their `--help`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct Config {
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

    /// How `wi-sidecar` is injected for `workload-identity.rs/secrets-delivery: sidecar`.
    #[command(flatten)]
    pub sidecar: Sidecar,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tenant_id: None,
            cloud: Cloud::Public,
            audience: DEFAULT_AUDIENCE.to_owned(),
            sidecar: Sidecar::default(),
        }
    }
}

/// The webhook-wide settings of the injected `wi-sidecar` container.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Injected wi-sidecar (secrets-delivery: sidecar)")]
pub struct Sidecar {
    /// Image of the injected wi-sidecar.
    #[arg(long = "sidecar-image", env = "WI_SIDECAR_IMAGE", value_name = "IMAGE", default_value = DEFAULT_SIDECAR_IMAGE)]
    pub image: String,

    /// Port of the sidecar's /healthz, /readyz (its startup probe) and /metrics. Pods with a container declaring
    /// this port are denied (the pod's network namespace is shared).
    #[arg(long = "sidecar-admin-port", env = "WI_SIDECAR_ADMIN_PORT", value_name = "PORT",
          default_value_t = SIDECAR_ADMIN_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub admin_port: u16,

    /// How often the sidecar checks Key Vault for new versions.
    #[arg(long = "sidecar-rotation-interval", env = "WI_SIDECAR_ROTATION_INTERVAL", value_name = "DURATION",
          default_value = "2m", value_parser = parse_interval)]
    pub rotation_interval: String,

    /// CPU request of the sidecar.
    #[arg(long = "sidecar-cpu-request", env = "WI_SIDECAR_CPU_REQUEST", value_name = "QUANTITY",
          default_value = "10m", value_parser = parse_quantity)]
    pub cpu_request: String,

    /// Memory request of the sidecar.
    #[arg(long = "sidecar-memory-request", env = "WI_SIDECAR_MEMORY_REQUEST", value_name = "QUANTITY",
          default_value = "32Mi", value_parser = parse_quantity)]
    pub memory_request: String,

    /// Memory limit of the sidecar (the in-memory secrets volume is charged to it).
    #[arg(long = "sidecar-memory-limit", env = "WI_SIDECAR_MEMORY_LIMIT", value_name = "QUANTITY",
          default_value = "64Mi", value_parser = parse_quantity)]
    pub memory_limit: String,

    /// Extra env of the sidecar, NAME=VALUE, repeatable (comma-separated in the env var); e.g.
    /// WI_VAULT_URL_TEMPLATE=https://{name}.vault.local.azurestack.external for a cloud without a known Key Vault
    /// DNS suffix.
    #[arg(long = "sidecar-env", env = "WI_SIDECAR_ENV", value_name = "NAME=VALUE", value_delimiter = ',',
          value_parser = parse_env_pair)]
    pub env: Vec<(String, String)>,
}

/// The image tag follows the webhook's version, so that an upgrade moves both.
pub const DEFAULT_SIDECAR_IMAGE: &str = concat!("ghcr.io/workload-identity-rs/wi-sidecar:", env!("CARGO_PKG_VERSION"));

impl Default for Sidecar {
    fn default() -> Self {
        Sidecar {
            image: DEFAULT_SIDECAR_IMAGE.to_owned(),
            admin_port: SIDECAR_ADMIN_PORT,
            rotation_interval: "2m".to_owned(),
            cpu_request: "10m".to_owned(),
            memory_request: "32Mi".to_owned(),
            memory_limit: "64Mi".to_owned(),
            env: Vec::new(),
        }
    }
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
