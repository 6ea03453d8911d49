#!/usr/bin/env bash
# The quickstart's stages on a CUDA GPU: checks that every stage kind runs there (the Trainer puts training on the
# GPU, lm-eval generation and pairs sampling use it, llama.cpp stays on the CPU), in a work folder of its own so
# the CPU quickstart's cache is untouched. Then the GPU bench. Needs `bash scripts/setup.sh` first, and a CUDA
# build of torch (pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128) on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
.venv/bin/python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU visible to torch")'
.venv/bin/python -c 'import torch; print(f"torch {torch.__version__}, {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")'
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s|^seed: 0|seed: 0\nwork_dir: $work|" recipes/quickstart.yaml > "$work/quickstart-gpu.yaml"
started=$(date +%s)
.venv/bin/workbench run "$work/quickstart-gpu.yaml"
echo "quickstart on GPU: $(( $(date +%s) - started )) s"
.venv/bin/python bench/gpu.py "$@"
