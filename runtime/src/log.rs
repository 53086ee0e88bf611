//! Logging: one `tracing` subscriber, plain or JSON lines on standard error.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object a line, with the fields of the current span (the webhook's uid, namespace, pod, ...).
    Json,
}

/// How and what to log (`--log-format`, `--log-level` with the `clap` feature).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct LogConfig {
    /// Log line format.
    #[cfg_attr(
        feature = "clap",
        arg(
            long = "log-format",
            env = "WI_LOG_FORMAT",
            value_name = "FORMAT",
            value_enum,
            default_value = "plain"
        )
    )]
    pub format: LogFormat,
    /// Log level or `tracing` filter directives (e.g. `info`, `debug`, `info,kube=warn`).
    #[cfg_attr(
        feature = "clap",
        arg(
            long = "log-level",
            env = "WI_LOG_LEVEL",
            value_name = "FILTER",
            default_value = "info"
        )
    )]
    pub level: String,
}

/// The logger could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The level or filter does not parse.
    #[error("--log-level {level:?}: {source}")]
    Filter {
        /// What was given.
        level: String,
        /// Why it does not parse.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber is already installed.
    #[error("cannot install the logger: {0}")]
    Install(String),
}

/// Installs the global subscriber, writing to standard error (a handle per line, never a held lock: a `main` that
/// held the stderr lock once hung the first worker thread that logged). Plain lines are coloured only on a terminal
/// (and not when `NO_COLOR` is set): a container runtime's log file or `kubectl logs` would show the escape codes.
pub fn init(config: &LogConfig) -> Result<(), LogError> {
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    install(config, std::io::stderr, colour)
}

/// Installs the global subscriber, writing where `writer` says (tests capture the lines this way), without colour.
pub fn init_with_writer<W>(config: &LogConfig, writer: W) -> Result<(), LogError>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    install(config, writer, false)
}

fn install<W>(config: &LogConfig, writer: W, colour: bool) -> Result<(), LogError>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::builder()
        .parse(&config.level)
        .map_err(|source| LogError::Filter {
            level: config.level.clone(),
            source,
        })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(colour);
    let result = match config.format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    result.map_err(|e| LogError::Install(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_that_does_not_parse_names_the_flag() {
        let error = init(&LogConfig {
            format: LogFormat::Json,
            level: "info,=x=y".to_owned(),
        })
        .unwrap_err();
        assert!(error.to_string().starts_with("--log-level \"info,=x=y\": "), "{error}");
    }
}
