"""Deploy metrics of a GGUF file on this CPU, measured through llama.cpp with a fixed thread count.

Runs in its own process (`python -m workbench.export.deploy FILE ...`, one JSON line on stdout) so the peak
resident memory is that of a process that only loads and runs the model, not the workbench's with torch in it.
The prompt is real text tokenized by the file's own tokenizer; decoding is greedy and forced to the full length
(end-of-generation tokens do not stop it) so every run times the same number of tokens. One warm-up round, then
the median of `repeats` rounds.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

from pydantic import Field

from workbench.api.config import StrictModel

DEPLOY_METRICS = (
    "deploy/prompt_tokens_per_s",
    "deploy/decode_tokens_per_s",
    "deploy/time_to_first_token_ms",
    "deploy/peak_rss_mb",
    "deploy/file_size_mb",
    "deploy/load_seconds",
)
"""What a deploy measurement reports; gates may name any of them."""

_TEXT = (
    "A small language model runs on the device it was made for: a phone, a laptop or an embedded board. "
    "It reads the prompt, follows the instructions in it, answers in the JSON the schema asks for, and calls "
    "the tools it was given with the arguments the user wrote. "
)


class DeploySettings(StrictModel):
    """How deploy metrics are measured."""

    threads: int = Field(default=2, ge=1)
    """CPU threads llama.cpp uses for prompt processing and decoding (fixed, so runs compare)."""

    prompt_tokens: int = Field(default=128, ge=1)
    """Length of the timed prompt, in the model's tokens."""

    decode_tokens: int = Field(default=64, ge=1)
    """Tokens decoded after the prompt (forced to this length)."""

    repeats: int = Field(default=3, ge=1)
    """Timed rounds after one warm-up; each metric is their median."""


def measure_in_process(path: Path, settings: DeploySettings) -> dict[str, float]:
    """The deploy metrics of `path` measured in this process (see the module docstring)."""
    import numpy as np
    from llama_cpp import Llama

    from workbench.export.stack import quiet_llama_logs

    quiet_llama_logs()
    started = time.perf_counter()
    llm = Llama(model_path=str(path), n_ctx=settings.prompt_tokens + settings.decode_tokens + 8,
                n_batch=max(settings.prompt_tokens, 8), n_threads=settings.threads,
                n_threads_batch=settings.threads, seed=0, verbose=False)  # fmt: skip
    load_seconds = time.perf_counter() - started
    prompt: list[int] = []
    while len(prompt) < settings.prompt_tokens:
        prompt += llm.tokenize(_TEXT.encode(), add_bos=False, special=False)
    prompt = prompt[: settings.prompt_tokens]

    vocab = llm.n_vocab()

    def greedy() -> int:
        # The last position's logits straight from llama.cpp (the Python wrapper keeps them only with logits_all).
        return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(vocab,))))

    def one_round() -> tuple[float, float]:
        llm.reset()
        begin = time.perf_counter()
        llm.eval(prompt)
        token = greedy()
        first = time.perf_counter()
        for _ in range(settings.decode_tokens - 1):
            llm.eval([token])
            token = greedy()
        return first - begin, time.perf_counter() - first

    one_round()
    rounds = [one_round() for _ in range(settings.repeats)]
    to_first = statistics.median(r[0] for r in rounds)
    decoding = statistics.median(r[1] for r in rounds)
    return {
        "deploy/prompt_tokens_per_s": settings.prompt_tokens / to_first,
        "deploy/decode_tokens_per_s": (settings.decode_tokens - 1) / decoding if settings.decode_tokens > 1 else 0.0,
        "deploy/time_to_first_token_ms": to_first * 1000,
        "deploy/peak_rss_mb": peak_rss_mb(),
        "deploy/file_size_mb": path.stat().st_size / 2**20,
        "deploy/load_seconds": load_seconds,
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's `VmHWM` belongs to the process image, while `ru_maxrss` also
    counts the parent's pages a fork shared before exec (a subprocess of the workbench would inherit its peak)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; other systems: see their docs


def measure(path: Path, settings: DeploySettings) -> dict[str, float]:
    """The deploy metrics of `path`, measured in a fresh process; a failure is a one-line StageError."""
    import subprocess

    from workbench.errors import StageError

    command = [sys.executable, "-m", "workbench.export.deploy", str(path), "--settings", settings.model_dump_json()]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        detail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise StageError(f"measuring {path.name} with llama.cpp failed: {detail}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Deploy metrics of a GGUF file (one JSON line).")
    parser.add_argument("file", type=Path)
    parser.add_argument("--settings", default="{}", help="DeploySettings as JSON")
    args = parser.parse_args(argv)
    print(json.dumps(measure_in_process(args.file, DeploySettings.model_validate_json(args.settings))))


if __name__ == "__main__":
    main()
