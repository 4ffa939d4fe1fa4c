#!/usr/bin/env bash
# Runs every Keyplane test, from a clean clone on a fresh Debian machine with Rust and Python 3:
#   setup (cmake, libclang-dev, the local model) -> rustfmt check -> build -> cargo test
#   -> interop tests with Google's Python SDK (google-genai) in a cached virtualenv.
# Exits non-zero as soon as a stage fails. CI runs this (.ci/run).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

started=$SECONDS
stage() { printf '\n=== %s (%ds)\n' "$*" "$((SECONDS - started))"; }

stage "setup: build tools and the local model"
eval "$(bash scripts/setup.sh)"
export KEYPLANE_MODEL CARGO_TARGET_DIR
echo "KEYPLANE_MODEL=$KEYPLANE_MODEL"
echo "CARGO_TARGET_DIR=$CARGO_TARGET_DIR"

stage "cargo fmt --check"
cargo fmt --all -- --check

stage "cargo build"
cargo build --workspace --all-targets

stage "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

stage "cargo test"
cargo test --workspace

stage "interop: virtualenv with google-genai"
CACHE="${KEYPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/keyplane}"
VENV="$CACHE/venv-interop"
REQS="interop/requirements.txt"
want="$(cat "$REQS" <(python3 -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    # Debian's python3 ships venv support in a separate package.
    rm -rf "$VENV"
    pyver="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    echo "installing python${pyver}-venv from Debian's packages"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "python${pyver}-venv" ||
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS"
  echo "$want" >"$VENV/.requirements.sha256"
else
  echo "reusing $VENV"
fi

stage "interop: pytest"
export KEYPLANE_BIN="${KEYPLANE_BIN:-$CARGO_TARGET_DIR/debug/keyplane}"
set +e
"$VENV/bin/python" -m pytest -q interop
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "interop: pytest collected no tests; the interop suite must run" >&2
  exit 1
fi
[ "$rc" -eq 0 ] || exit "$rc"

stage "all tests passed"
