//! Logging setup. Invariant: nothing secret is ever passed to a `tracing` macro; logs go to
//! stderr so stdout carries only the readiness line.

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. `RUST_LOG` overrides the default level (`info`).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // cryptoki logs every mechanism type it has no name for (openCryptoki, tpm2-pkcs11 list
        // vendor ones) as an error; the probe reports mechanisms itself.
        .add_directive("cryptoki::mechanism=off".parse().expect("static directive"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
