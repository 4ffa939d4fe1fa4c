#!/usr/bin/env bash
# The local model against llama.cpp's own servers, same GGUF, same thread count, same run.
#
#   bench/model.sh            (from anywhere; prints a markdown table on stdout, progress on stderr)
#
# Starts, side by side on loopback:
#   - Keyplane (release build), `keyplane serve` with its local backend: 4 sequences of
#     2048 tokens, one llama.cpp thread (the defaults);
#   - llama.cpp's `llama-server`, built once from the llama.cpp sources that the pinned
#     llama-cpp-python sdist vendors, with the same settings (-t 1 -tb 1 -np 4 -c 8192,
#     batch 512), continuous batching on (its default);
#   - llama-cpp-python's own server (`python -m llama_cpp.server`, pinned below, in the venv
#     ~/.cache/keyplane/venv-bench), one thread, 2048 tokens: it has no parallel sequences
#     and answers one request at a time, so it is shown for reference only.
# Every llama.cpp here is built with the same CPU options as the one in Keyplane: those
# scripts/ggml-cpu.sh finds for this machine (setup.sh exports them for the crate's build;
# KEYPLANE_PORTABLE=1 leaves the AVX2 defaults on both sides). The first run compiles
# llama.cpp twice (the wheel, then llama-server): about 15-20 minutes on 2 cores; later runs reuse both.
#
# Environment: ROUNDS (alternating rounds, each server alone; default 1), REFERENCE_ROUNDS
# (rounds llama-cpp-python runs in, default 1), REFERENCE_CONCURRENCY (the most requests
# llama-cpp-python, which answers one at a time, is sent at once; default 1),
# SIDE_BY_SIDE_ROUNDS (default 4: Keyplane and llama-server measured at the same moment on a
# CPU each, swapping CPUs between rounds; the target is judged on these; 0 for none), PIN
# (default 1: servers on CPU 1, the client on CPU 0, in the alternating rounds), MAX_TOKENS
# (default 128), CONCURRENCY (default 1,2,4), SKIP_LLAMA_CPP_PYTHON=1 to leave that server out.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
eval "$(scripts/setup.sh)"

LLAMA_CPP_PYTHON_VERSION=0.3.36
CACHE="${KEYPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/keyplane}"
VENV="$CACHE/venv-bench"
SRC="$CACHE/bench-src"
SDIST_DIR="$SRC/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
SERVER_BUILD="$CACHE/llama-server-$LLAMA_CPP_PYTHON_VERSION"
SERVER_MARKER="$SERVER_BUILD/.flags"
LLAMA_SERVER="$SERVER_BUILD/bin/llama-server"
# CPU only, with the CPU options Keyplane's llama.cpp is built with (setup.sh exported them).
GGML_FLAGS="-DGGML_NATIVE=OFF $(bash scripts/ggml-cpu.sh | sed 's/^/-D/' | tr '\n' ' ')-DGGML_CUDA=OFF \
 -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF"
JOBS="$(nproc)"

log() { echo "model.sh: $*" >&2; }

# --- llama-cpp-python[server] in its venv (compiles llama.cpp once) ---
# The marker records the flags the installed wheel was compiled with.
MARKER="$VENV/.llama-cpp-python-build"
if [ "${SKIP_LLAMA_CPP_PYTHON:-0}" != 1 ] && { ! "$VENV/bin/python" -c "import sys, llama_cpp; sys.exit(llama_cpp.__version__ != '$LLAMA_CPP_PYTHON_VERSION')" 2>/dev/null ||
  [ "$(cat "$MARKER" 2>/dev/null)" != "$LLAMA_CPP_PYTHON_VERSION $GGML_FLAGS" ]; }; then
  log "installing llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION into $VENV (compiles llama.cpp)"
  python3 -m venv "$VENV"
  CMAKE_ARGS="$GGML_FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" \
    "$VENV/bin/pip" install -q --force-reinstall --no-cache-dir \
    "llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION" >&2
  echo "$LLAMA_CPP_PYTHON_VERSION $GGML_FLAGS" >"$MARKER"
fi

# --- llama-server from the same sdist's vendored llama.cpp ---
if [ ! -x "$LLAMA_SERVER" ] || [ "$(cat "$SERVER_MARKER" 2>/dev/null)" != "$GGML_FLAGS" ]; then
  if [ ! -f "$SDIST_DIR/vendor/llama.cpp/CMakeLists.txt" ]; then
    log "fetching the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist (for llama.cpp's sources)"
    mkdir -p "$SRC"
    python3 -m pip download -q --no-deps --no-binary :all: -d "$SRC" \
      "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >&2
    tar -xzf "$SRC/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$SRC"
  fi
  log "building llama-server from $SDIST_DIR/vendor/llama.cpp"
  # shellcheck disable=SC2086 # GGML_FLAGS is a list of arguments
  cmake -S "$SDIST_DIR/vendor/llama.cpp" -B "$SERVER_BUILD" -DCMAKE_BUILD_TYPE=Release $GGML_FLAGS \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >&2
  cmake --build "$SERVER_BUILD" --target llama-server -j "$JOBS" >&2
  echo "$GGML_FLAGS" >"$SERVER_MARKER"
fi

# --- Keyplane ---
log "building keyplane (release)"
cargo build --release -q -p keyplane >&2
KEYPLANE="$CARGO_TARGET_DIR/release/keyplane"

TMP="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # URL LOGFILE
  for _ in $(seq 1 600); do
    if python3 -c "import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  log "timed out waiting for $1; its log:"; tail -20 "$2" >&2; exit 1
}

wait_line() { # TEXT LOGFILE
  for _ in $(seq 1 600); do
    grep -q "$1" "$2" 2>/dev/null && return 0
    sleep 0.1
  done
  log "timed out waiting for '$1'; the log:"; tail -20 "$2" >&2; exit 1
}

# Placement: on a machine with two CPUs or more the servers run on CPU 1 and the benchmark
# client on CPU 0 (PIN=0 leaves placement to the scheduler), so the client's parsing of four
# streams never takes time from a server's one compute thread, and no compute thread moves
# between CPUs in a cell. Each server's HTTP threads share its CPU, the same for all three.
SERVER_CPU=()
CLIENT_CPU=()
if [ "${PIN:-1}" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  SERVER_CPU=(taskset -c 1)
  CLIENT_CPU=(taskset -c 0)
fi

KP_PORT="$(free_port)"
cat >"$TMP/keyplane.toml" <<'TOML'
[local]
parallel = 4
context = 2048

[quota.free]
rpm = 1000000000
tpm = 1000000000000
rpd = 1000000000000
TOML
"${SERVER_CPU[@]}" "$KEYPLANE" serve --listen "127.0.0.1:$KP_PORT" --data-dir "$TMP/kp" --model "$KEYPLANE_MODEL" \
  --config "$TMP/keyplane.toml" >"$TMP/keyplane.log" 2>&1 &
KP_PID=$!
PIDS+=($KP_PID)
wait_line "keyplane listening on" "$TMP/keyplane.log"
KEY="$("$KEYPLANE" --credentials "$TMP/kp/owner-credentials.json" --format json keys create |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["keyString"])')"

LS_PORT="$(free_port)"
"${SERVER_CPU[@]}" "$LLAMA_SERVER" --model "$KEYPLANE_MODEL" --host 127.0.0.1 --port "$LS_PORT" \
  --threads 1 --threads-batch 1 --parallel 4 --ctx-size 8192 --batch-size 512 --ubatch-size 512 \
  --no-webui >"$TMP/llama-server.log" 2>&1 &
LS_PID=$!
PIDS+=($LS_PID)
wait_http "http://127.0.0.1:$LS_PORT/health" "$TMP/llama-server.log"

LCP_ARGS=()
if [ "${SKIP_LLAMA_CPP_PYTHON:-0}" != 1 ]; then
  LCP_PORT="$(free_port)"
  "${SERVER_CPU[@]}" "$VENV/bin/python" -m llama_cpp.server --model "$KEYPLANE_MODEL" --host 127.0.0.1 --port "$LCP_PORT" \
    --n_threads 1 --n_threads_batch 1 --n_ctx 2048 --n_batch 512 --n_ubatch 512 \
    --interrupt_requests False >"$TMP/llama-cpp-python.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$LCP_PORT/v1/models" "$TMP/llama-cpp-python.log"
  LCP_ARGS=(--llama-cpp-python "http://127.0.0.1:$LCP_PORT")
fi

# Side by side rounds (the paired measure, see model_bench.py) need a CPU for each server.
SIDE_ARGS=()
if [ ${#SERVER_CPU[@]} -gt 0 ] && [ "${SIDE_BY_SIDE_ROUNDS:-4}" -gt 0 ]; then
  SIDE_ARGS=(--side-by-side-rounds "${SIDE_BY_SIDE_ROUNDS:-4}" --keyplane-pid "$KP_PID" --llama-server-pid "$LS_PID")
fi

log "llama-cpp-python $LLAMA_CPP_PYTHON_VERSION; llama-server: $("$LLAMA_SERVER" --version 2>&1 | grep -m1 version || true)"
"${CLIENT_CPU[@]}" python3 "$ROOT/bench/model_bench.py" \
  --keyplane "http://127.0.0.1:$KP_PORT" --keyplane-key "$KEY" \
  --llama-server "http://127.0.0.1:$LS_PORT" "${LCP_ARGS[@]}" \
  --rounds "${ROUNDS:-1}" --reference-rounds "${REFERENCE_ROUNDS:-1}" --reference-concurrency "${REFERENCE_CONCURRENCY:-1}" --max-tokens "${MAX_TOKENS:-128}" --concurrency "${CONCURRENCY:-1,2,4}" \
  "${SIDE_ARGS[@]}"
