//! `keyplane serve`: logs to stderr (`RUST_LOG`, default `info`), then runs the server.

use crate::args::ServeArgs;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Ignore a second initialisation (there is none in the binary; tests may differ).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    keyplane_server::serve(keyplane_server::Config {
        listen: args.listen,
        data_dir: args.data_dir,
        config_file: args.config,
        model_path: args.model,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(keyplane_server::tls::TlsFiles { cert, key }),
            _ => None,
        },
    })
    .await
}
