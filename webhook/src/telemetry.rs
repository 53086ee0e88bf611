//! Logging: one `tracing` subscriber, plain or JSON lines on standard error.

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
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
    pub log_format: LogFormat,

    /// Log level or `tracing` filter directives (e.g. `info`, `debug`, `info,kube=warn`).
    #[arg(long, env = "WI_LOG_LEVEL", value_name = "FILTER", default_value = "info")]
    pub log_level: String,
}

/// Installs the global subscriber, writing to standard error. Fails when the filter does not parse.
pub fn init(args: &LogArgs) -> anyhow::Result<()> {
    init_with_writer(args, std::io::stderr)
}

/// Installs the global subscriber, writing where `writer` says (tests capture the lines this way).
pub fn init_with_writer<W>(args: &LogArgs, writer: W) -> anyhow::Result<()>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::builder()
        .parse(&args.log_level)
        .map_err(|e| anyhow::anyhow!("--log-level {:?}: {e}", args.log_level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let result = match args.log_format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
