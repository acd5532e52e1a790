#!/usr/bin/env bash
# The GPU check (scripts/gpu_check.py): every GPU code path once on one CUDA device, as one table. It installs
# nothing: run it in the environment you verify with (torch with CUDA, yarn-cli[transformers,finetune,lora], and
# optionally vllm and a llama-cpp-python built with CMAKE_ARGS=-DGGML_CUDA=on); a missing one is a step not run.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 scripts/gpu_check.py "$@"
