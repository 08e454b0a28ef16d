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
    // Colour only on a terminal: a log file, a pipe or a journal gets plain
    // text (NO_COLOR turns it off on a terminal too).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().try_init(),
    };
}

/// Operation counters, rendered in the Prometheus text format on the ops
/// plane. Labels carry no key material and no client input.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: std::sync::Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
}

impl Metrics {
    /// Counts one `op` ("sign", "keygen", "rotate", "repair") with `outcome` ("ok" or a status code name).
    pub fn count(&self, op: &'static str, outcome: &'static str) {
        if let Ok(mut g) = self.counters.lock() {
            *g.entry((op, outcome)).or_default() += 1;
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP thresig_requests_total Client and admin requests handled by this node as coordinator.\n# TYPE thresig_requests_total counter\n",
        );
        if let Ok(g) = self.counters.lock() {
            for ((op, outcome), n) in g.iter() {
                out.push_str(&format!(
                    "thresig_requests_total{{op=\"{op}\",outcome=\"{outcome}\"}} {n}\n"
                ));
            }
        }
        out
    }
}
