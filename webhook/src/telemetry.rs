//! Logging: one `tracing` subscriber, plain or JSON lines on standard error.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object a line, with the span fields (uid, namespace, pod, service account).
    Json,
}

/// How and what to log (`--log-format`, `--log-level`).
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// A level or `tracing` filter directives (e.g. `info`, `debug`, `info,kube=warn`).
    pub level: String,
}

/// Installs the global subscriber, writing to standard error. Fails when the filter does not parse.
pub fn init(args: &LogConfig) -> anyhow::Result<()> {
    init_with_writer(args, std::io::stderr)
}

/// Installs the global subscriber, writing where `writer` says (tests capture the lines this way).
pub fn init_with_writer<W>(args: &LogConfig, writer: W) -> anyhow::Result<()>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::builder()
        .parse(&args.level)
        .map_err(|e| anyhow::anyhow!("--log-level {:?}: {e}", args.level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let result = match args.format {
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
