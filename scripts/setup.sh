#!/usr/bin/env bash
# Create .venv and install workbench with its test tools. Safe to re-run.
# torch is pinned to 2.13.0 (pyproject), which pip takes as the CPU build from this machine's disk.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
echo "workbench installed in .venv ($(.venv/bin/python -c 'import torch, transformers, trl; print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")'))"

# The embedded Argilla annotation server lives in its own venv: argilla-server pins pydantic, fastapi and
# httpx versions that clash with the training stack (workbench annotate serve runs it from here).
ARGILLA_VENV=${WORKBENCH_ARGILLA_VENV:-.venv-argilla}
if [ ! -x "$ARGILLA_VENV/bin/python" ]; then
  "$PYTHON" -m venv "$ARGILLA_VENV"
fi
"$ARGILLA_VENV/bin/python" -m pip install --quiet 'argilla-server==2.8.0' 'fakeredis==2.40.0'
echo "argilla-server installed in $ARGILLA_VENV"

# llama.cpp for GGUF export (the quickstart ends with one): built from source, about 3-5 minutes on 2 cores the
# first time, cached by pip after that.
VENV=.venv bash scripts/install-llamacpp.sh
