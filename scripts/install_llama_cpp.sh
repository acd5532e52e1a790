#!/usr/bin/env bash
# Installs llama-cpp-python (the version the llama.cpp engine is tested with) into the active Python,
# built portable: pip's default source build uses -march=native, and on AMX-capable Xeons that enables
# ggml's AMX path, which crashes with SIGSEGV on quantized weights. The instruction sets are chosen from
# what this CPU reports, AMX never. The built wheel is cached per version and instruction set, so the
# ~7-minute compile happens once per machine.
#   usage: scripts/install_llama_cpp.sh [--server]    (--server adds the extras of its OpenAI server)
set -euo pipefail
version=0.3.36
extra=""
[ "${1:-}" = "--server" ] && extra="[server]"
flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
args="-DGGML_NATIVE=OFF"
for pair in AVX:avx AVX2:avx2 FMA:fma F16C:f16c AVX512:avx512f AVX512_VNNI:avx512_vnni AVX512_BF16:avx512_bf16; do
  case "$flags" in
    *" ${pair#*:} "*) args="$args -DGGML_${pair%%:*}=ON" ;;
    *) args="$args -DGGML_${pair%%:*}=OFF" ;;
  esac
done
# A GPU build stays the user's choice: CMAKE_ARGS given by the caller (e.g. -DGGML_CUDA=on) come first.
args="${CMAKE_ARGS:-} $args"
tag=$(printf '%s' "$args" | sha256sum | cut -c1-12)
cache="${YARN_CLI_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/yarn_cli/wheels}/llama-cpp-python-$version-$tag"
if ! ls "$cache"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $version from source ($args); about 7 minutes on 2 cores, once" >&2
  mkdir -p "$cache"
  CMAKE_ARGS="$args" python -m pip wheel --quiet --disable-pip-version-check --no-deps --no-cache-dir \
    --no-binary llama-cpp-python -w "$cache.tmp" "llama-cpp-python==$version"
  mv "$cache.tmp"/llama_cpp_python-*.whl "$cache"/ && rm -rf "$cache.tmp"
fi
python -m pip install --quiet --disable-pip-version-check "$(ls "$cache"/llama_cpp_python-*.whl)$extra"
