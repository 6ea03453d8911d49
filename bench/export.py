"""A model against its GGUF exports, measured in one run: suite scores through transformers and through llama.cpp
per quantization, file size, decode and prompt speed, peak memory, and the decode speed-up of llama.cpp over
transformers on this CPU.

Exports `--model DIR` (default: a tiny LFM2-shaped model with random weights built from `pretrain/tiny-lfm2.yaml`,
whose scores mean little; point it at the quickstart's merged model for the real table) with the export stage's
own converter and quantizer, scores `--suites` with the evaluate stage's two backends, and measures deploy
metrics in a fresh process. Transformers' decode speed is timed the same way (128-token prompt, 64 greedy tokens
with the KV cache, median of 3, `--threads` torch threads).

`--quick` checks the bench runs end to end in seconds: one suite on 2 samples per task, q8_0 only, one repeat;
the figures are not judged.

    .venv/bin/python bench/export.py [--model DIR] [--quantizations f16 q8_0 q4_K_M] [--suites ...] [--limit N]
                                     [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def transformers_decode_speed(model_dir: Path, threads: int, prompt_tokens: int, decode_tokens: int, repeats: int):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt = torch.randint(10, model.config.vocab_size, (1, prompt_tokens), generator=torch.Generator().manual_seed(0))
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first round warms up
            started = time.perf_counter()
            model.generate(prompt, max_new_tokens=decode_tokens, min_new_tokens=decode_tokens, do_sample=False,
                           use_cache=True, pad_token_id=0)  # fmt: skip
            times.append(time.perf_counter() - started)
    return decode_tokens / statistics.median(times[1:])


def main() -> None:
    from eval import build_model

    from workbench.evaluation.api import evaluate_gguf, evaluate_model
    from workbench.export.deploy import DeploySettings, measure

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--quantizations", nargs="+", default=["f16", "q8_0", "q4_K_M"])
    parser.add_argument("--suites", nargs="+", default=["instruction_following", "json_schema", "tool_use"])
    parser.add_argument("--limit", type=int, default=None, help="samples per lm-eval task (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one suite, 2 samples, q8_0: checks the bench runs")
    args = parser.parse_args()
    if args.model is not None and not (args.model / "config.json").is_file():
        parser.error(f"--model {args.model}: no model folder there (config.json missing)")
    repeats = 3
    if args.quick:
        args.quantizations, args.suites, args.limit, repeats = ["q8_0"], ["json_schema"], 2, 1
    settings = DeploySettings(threads=args.threads, repeats=repeats)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_model(Path(tmp) / "model")
        rows = {"transformers": evaluate_model(model, args.suites, limit=args.limit).metrics}
        deploy = {}
        for quantization in args.quantizations:
            out = Path(tmp) / f"model-{quantization}.gguf"
            command = [sys.executable, "-m", "workbench.export.convert", str(model), str(out),
                       "--quantization", quantization, "--threads", str(args.threads)]  # fmt: skip
            subprocess.run(command, check=True, capture_output=True)
            rows[quantization] = evaluate_gguf(out, args.suites, threads=args.threads, limit=args.limit).metrics
            deploy[quantization] = measure(out, settings)
        hf_speed = transformers_decode_speed(model, args.threads, settings.prompt_tokens, settings.decode_tokens,
                                             repeats)  # fmt: skip
    metrics = sorted({m for scores in rows.values() for m in scores})
    header = ["metric", *rows]
    table = [[m, *(f"{rows[c].get(m, float('nan')):.4f}" for c in rows)] for m in metrics]
    table.append(["deploy/file_size_mb", "-", *(f"{deploy[q]['deploy/file_size_mb']:.2f}" for q in deploy)])
    table.append(["deploy/decode_tokens_per_s", f"{hf_speed:.1f}",
                  *(f"{deploy[q]['deploy/decode_tokens_per_s']:.1f}" for q in deploy)])  # fmt: skip
    for name in ("deploy/prompt_tokens_per_s", "deploy/time_to_first_token_ms", "deploy/peak_rss_mb"):
        table.append([name, "-", *(f"{deploy[q][name]:.1f}" for q in deploy)])
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    best = max(deploy, key=lambda q: deploy[q]["deploy/decode_tokens_per_s"])
    verdict = "quick run, not judged" if args.quick else f"{args.threads} threads, this CPU"
    print(f"decode speed-up of llama.cpp {best} over transformers float32: "
          f"{deploy[best]['deploy/decode_tokens_per_s'] / hf_speed:.2f}x ({verdict})")  # fmt: skip


if __name__ == "__main__":
    main()
