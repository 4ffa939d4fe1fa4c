//! keyplane-server: the HTTP surface of Keyplane, wiring only.
//!
//! Owns: the axum routers (data plane under /v1beta etc., control plane under Google's
//! paths, the OAuth token endpoint), bootstrap of a data directory, and `serve`.
//! Must not touch: SQL (that is keyplane-store), domain rules (keyplane-core), model
//! execution (keyplane-backends).

use std::net::SocketAddr;
use std::path::PathBuf;

/// How `keyplane serve` runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free port (the chosen address is printed).
    pub listen: SocketAddr,
    /// Holds the database, the server secret and owner-credentials.json.
    pub data_dir: PathBuf,
    /// Optional TOML file (model aliases, backend settings).
    pub config_file: Option<PathBuf>,
    /// The local model's GGUF file; when `None` it is looked up in the usual places.
    pub model_path: Option<PathBuf>,
}

/// Runs the server until SIGINT or SIGTERM. Once listening it prints one line to stdout:
/// `keyplane listening on http://ADDR`.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let _ = config;
    anyhow::bail!("not yet wired")
}
