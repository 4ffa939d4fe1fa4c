#!/usr/bin/env bash
# The llama.cpp (ggml) CPU options for the machine this runs on, one `NAME=ON|OFF` a line.
#
#   scripts/ggml-cpu.sh
#
# scripts/setup.sh exports them, so the llama.cpp that the llama-cpp-sys-2 crate compiles
# into Keyplane uses this CPU's vector instructions (its build script hands every GGML_*
# variable to CMake); bench/model.sh builds llama.cpp's own server with the same ones.
# It is what llama.cpp's GGML_NATIVE does, from /proc/cpuinfo, with two differences:
#   - AMX stays off: a CPU can advertise it without the kernel letting a process use its
#     tiles (this happens in VMs), and ggml then crashes at the first matrix product;
#   - every option is named, ON or OFF, so that cargo rebuilds llama.cpp when the machine
#     changes (the crate's build script tracks the GGML_* variables that were set).
# A variable already set in the environment wins, and KEYPLANE_PORTABLE=1 prints nothing:
# the crate's defaults then apply (AVX2, FMA, F16C, BMI2), for a binary to copy elsewhere.
# Not x86-64, or no /proc/cpuinfo: nothing is printed either.
set -euo pipefail

[ "${KEYPLANE_PORTABLE:-0}" = 1 ] && exit 0
case "$(uname -m)" in x86_64 | amd64) ;; *) exit 0 ;; esac
[ -r /proc/cpuinfo ] || exit 0

flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
has() {
  local f
  for f in "$@"; do
    case "$flags" in *" $f "*) ;; *) return 1 ;; esac
  done
}
option() { # NAME CPU-FLAG...
  local name="$1"
  shift
  if [ -n "${!name:-}" ]; then
    echo "$name=${!name}"
  elif has "$@"; then
    echo "$name=ON"
  else
    echo "$name=OFF"
  fi
}

option GGML_SSE42 sse4_2
option GGML_AVX avx
option GGML_AVX2 avx2
option GGML_FMA fma
option GGML_F16C f16c
option GGML_BMI2 bmi2
option GGML_AVX_VNNI avx_vnni
# ggml's AVX512 option compiles with -mavx512f -mavx512cd -mavx512vl -mavx512dq -mavx512bw;
# the extensions below build on it.
avx512="$(option GGML_AVX512 avx512f avx512cd avx512vl avx512dq avx512bw)"
echo "$avx512"
for ext in "GGML_AVX512_VBMI avx512vbmi" "GGML_AVX512_VNNI avx512_vnni" "GGML_AVX512_BF16 avx512_bf16"; do
  set -- $ext
  if [ "$avx512" = GGML_AVX512=ON ] || [ -n "${!1:-}" ]; then
    option "$1" "$2"
  else
    echo "$1=OFF"
  fi
done
echo "GGML_AMX_TILE=${GGML_AMX_TILE:-OFF}"
echo "GGML_AMX_INT8=${GGML_AMX_INT8:-OFF}"
echo "GGML_AMX_BF16=${GGML_AMX_BF16:-OFF}"
