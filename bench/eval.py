"""Samples/s of an evaluation suite with batched generation against batch size 1, measured in one run.

Builds a tiny LFM2-shaped model from `pretrain/tiny-lfm2.yaml` with a tokenizer trained on the quickstart
data (random weights, so replies rarely stop early), or evaluates
`--model DIR`. Prints samples/s for each batch size and the ratio. Goal: >= 3x.

`--quick` checks that the bench still runs end to end in seconds: 4 samples, batch size 4 against 1, a
one-sample warm-up; the ratio is not judged against the goal.

    .venv/bin/python bench/eval.py [--suite instruction_following] [--limit 32] [--batch-size 16] [--model DIR]
                                   [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_model(target: Path) -> Path:
    from workbench.modeling.architecture import build_model as build
    from workbench.modeling.architecture import load_architecture
    from workbench.modeling.chat_template import LFM2_CHAT_TEMPLATE
    from workbench.modeling.tokenizer import train_bpe_tokenizer

    texts = []
    for line in (REPO / "datasets/quickstart/sft.jsonl").read_text(encoding="utf-8").splitlines():
        texts += [message["content"] for message in json.loads(line)["messages"]]
    tokenizer = train_bpe_tokenizer(texts, 2048, LFM2_CHAT_TEMPLATE)
    model = build(load_architecture(REPO / "pretrain/tiny-lfm2.yaml"), tokenizer, seed=0)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def main() -> None:
    from workbench.evaluation.api import evaluate_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="instruction_following")
    parser.add_argument("--limit", type=int, default=32, help="samples per lm-eval task (tool_use: per category)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--quick", action="store_true", help="few samples, seconds: checks the bench runs")
    args = parser.parse_args()
    if args.quick:
        args.limit, args.batch_size = 4, 4
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_model(Path(tmp) / "model")
        evaluate_model(
            model, [args.suite], batch_size=args.batch_size, limit=1 if args.quick else 2
        )  # warm-up: imports, caches
        rates = {}
        for batch_size in (1, args.batch_size):
            report = evaluate_model(model, [args.suite], batch_size=batch_size, limit=args.limit)
            rates[batch_size] = report.counts[args.suite] / report.seconds
            print(f"batch size {batch_size:>3}: {report.counts[args.suite]} samples in {report.seconds:.1f}s "
                  f"= {rates[batch_size]:.2f} samples/s")  # fmt: skip
    verdict = "quick run, goal not judged" if args.quick else "goal >= 3x"
    print(f"batched / batch size 1 = {rates[args.batch_size] / rates[1]:.2f}x ({verdict})")


if __name__ == "__main__":
    main()
