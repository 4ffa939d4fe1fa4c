#!/usr/bin/env bash
# Builds (release) and starts the Keyplane server. Installs what it needs first
# (cmake, libclang-dev, the local model: see scripts/setup.sh).
# Defaults: listens on 127.0.0.1:8080, data in ./keyplane-data (relative to where you run it).
# Extra arguments go to `keyplane serve`, e.g. scripts/run.sh --listen 0.0.0.0:8080
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
eval "$(bash "$ROOT/scripts/setup.sh")"
export KEYPLANE_MODEL CARGO_TARGET_DIR
exec cargo run --release --manifest-path "$ROOT/Cargo.toml" -p keyplane -- serve "$@"
