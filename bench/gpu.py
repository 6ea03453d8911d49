"""GPU readiness: an LFM2-350M-shaped model (random weights, no hub) trained through the sft stage and through a
plain trl script side by side, measured in one run: tokens/s and MFU of each, and their ratio.

The sft stage runs as `workbench run` on a recipe with an `init` stage from `pretrain/lfm2-350m.yaml` and a
tokenizer trained on the quickstart data; the stage packs sequences (when `causal_conv1d` is installed) and trains in bf16 (`resources.mixed_precision`),
on `--processes` GPUs through torchrun. The plain script (`bench/plain_sft.py`) is trl's SFTTrainer with its
defaults (no packing), bf16, on one GPU. Tokens/s counts the tokens trl reports as trained (`num_tokens`, padding
excluded); MFU = 6 x parameters x tokens/s / the GPU's peak dense bf16 FLOP/s (H100/H200: 989 TFLOP/s;
`--peak-tflops` for another GPU). `causal_conv1d` and Liger kernels are used when installed (the figures say
which). Goal on an H100/H200, for planning later work: MFU >= 25% and >= 1.3x plain trl.

`--quick` runs the same path on the CPU with the tiny architecture, 2 steps, fp32: it checks the bench runs; the
figures are not judged and MFU is not computed.

    .venv/bin/python bench/gpu.py [--steps 50] [--batch-size 8] [--max-length 2048] [--processes 1] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def peak_tflops(explicit: float | None) -> float | None:
    import torch

    if explicit:
        return explicit
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    return next((value for key, value in PEAK_BF16_TFLOPS.items() if key in name), None)


def run(command: list[str], cwd: Path) -> str:
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:3])} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def workbench_stage(root: Path, args, architecture: Path, cuda: bool) -> tuple[float, Path]:
    """tokens/s of the sft stage and the base model folder it started from."""
    (root / "data").mkdir()
    (root / "data/train.jsonl").write_text((REPO / "datasets/quickstart/sft.jsonl").read_text(encoding="utf-8"))
    # LFM2's convolutions keep packed sequences apart only with the causal_conv1d kernel
    packing = importlib.util.find_spec("causal_conv1d") is not None
    resources = {"processes": args.processes} | ({"mixed_precision": "bf16"} if cuda else {})
    recipe = {
        "name": "gpu",
        "tokenizer": {"train": {"files": ["data/train.jsonl"], "vocab_size": 4096 if args.quick else 16384}},
        "stages": [
            {"name": "base", "kind": "init", "architecture": str(architecture)},
            {"name": "sft", "kind": "sft", "from": "base", "data": "data/train.jsonl", "max_steps": args.steps,
             "batch_size": args.batch_size, "max_length": args.max_length, "packing": packing, "learning_rate": 1e-4,
             "logging_steps": 1, "save_steps": 100_000, "sample_count": 0, "resources": resources},
        ],
    }  # fmt: skip
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    run([str(Path(sys.executable).with_name("workbench")), "run", "recipe.yaml"], root)
    from mlflow.tracking import MlflowClient

    folder = next(p for p in (root / "runs/gpu/sft").iterdir() if (p / "stage.json").is_file())
    info = json.loads((folder / "stage.json").read_text())
    client = MlflowClient(f"sqlite:///{root / 'runs/mlflow.db'}")
    tokens = max(m.value for m in client.get_metric_history(info["mlflow_run_id"], "num_tokens"))
    base = next(p for p in (root / "runs/gpu/base").iterdir() if (p / "stage.json").is_file()) / "model"
    return tokens / info["metrics"]["train/seconds"], base


def plain_trl(root: Path, args, base: Path, cuda: bool) -> float:
    settings = {"max_steps": args.steps, "batch_size": args.batch_size, "learning_rate": 1e-4,
                "max_length": args.max_length, "bf16": cuda}  # fmt: skip
    out = run([sys.executable, str(REPO / "bench/plain_sft.py"), str(base), str(root / "data/train.jsonl"),
               str(root / "plain"), json.dumps(settings)], root)  # fmt: skip
    report = json.loads(out.strip().splitlines()[-1])
    return report["num_tokens"] / report["train_runtime"]


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--processes", type=int, default=1, help="GPUs for the sft stage (torchrun)")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's peak dense bf16 TFLOP/s, if not listed")
    parser.add_argument("--quick", action="store_true", help="tiny model on the CPU, 2 steps: checks the bench runs")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        sys.exit("bench/gpu.py measures a CUDA GPU and this machine has none (use --quick to check it runs)")
    if args.quick:
        args.steps, args.batch_size, args.max_length, args.processes = 2, 4, 256, 1
    architecture = REPO / "pretrain" / ("tiny-lfm2.yaml" if args.quick else "lfm2-350m.yaml")
    kernels = [name for name in ("causal_conv1d", "liger_kernel") if importlib.util.find_spec(name)]
    with tempfile.TemporaryDirectory() as tmp:
        ours, base = workbench_stage(Path(tmp), args, architecture, cuda)
        params = _parameters(base)
        theirs = plain_trl(Path(tmp), args, base, cuda)
    device = torch.cuda.get_device_name(0) if cuda else "CPU"
    print(f"{device}, {params / 1e6:.0f}M parameters, kernels: {', '.join(kernels) or 'none'}")
    peak = peak_tflops(args.peak_tflops) if cuda else None
    for name, rate in (("workbench sft stage", ours), ("plain trl", theirs)):
        mfu = f"MFU {6 * params * rate / (peak * 1e12):.1%}" if peak else "MFU not computed"
        print(f"{name}: {rate:,.0f} tokens/s, {mfu}")
    verdict = "quick run, not judged" if args.quick else "goal >= 1.3x, MFU >= 25%"
    print(f"workbench / plain trl tokens/s: {ours / theirs:.2f}x ({verdict})")


def _parameters(model_dir: Path) -> int:
    """Parameters in the model folder's safetensors file (tied embeddings are stored, and counted, once)."""
    from math import prod

    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as weights:
        return sum(prod(weights.get_slice(key).get_shape()) for key in weights.keys())  # noqa: SIM118


if __name__ == "__main__":
    main()
