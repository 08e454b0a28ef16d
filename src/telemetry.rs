//! Tracing setup. Log lines never carry secret material: secret types have
//! redacted `Debug`, and nothing formats shares or passphrases.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr; the level comes from RUST_LOG, else `default` (e.g. "info").
pub fn init(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},h2=warn,tower=warn,hyper=warn")));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().try_init(),
    };
}
