#!/usr/bin/env bash
# Installs yarn_cli with its test dependencies into .venv and runs the whole test suite.
# The CPU build of torch is pinned first so nothing pulls the multi-GB CUDA build; llama-cpp-python
# compiles from source once (about 7 minutes on 2 cores) and pip's wheel cache keeps it after that.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --disable-pip-version-check torch==2.13.0
python -m pip install --quiet --disable-pip-version-check -e '.[test]'
python -m pytest "$@"
