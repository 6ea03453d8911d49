"""IFEval instruction checking with lm-eval's own checkers, offline.

lm-eval's IFEval checkers split sentences with nltk's Punkt model `punkt_tab`, and importing them
calls `nltk.download("punkt_tab")` when it is missing. Nothing may be downloaded here, so the
project ships its own Punkt parameters (`workbench/evaluation/nltk_data/`), trained with nltk's
`PunktTrainer` on a small English text written for this project plus a list of common English
abbreviations (`build_punkt_tab` rebuilds them byte for byte). `ensure_punkt_tab()` puts that
folder first on nltk's data path; call it before importing `lm_eval.tasks.ifeval`.
"""

from __future__ import annotations

import threading
from pathlib import Path

NLTK_DATA = Path(__file__).resolve().parent / "nltk_data"
PUNKT_DIR = NLTK_DATA / "tokenizers" / "punkt_tab" / "english"
CORPUS = Path(__file__).resolve().parent / "punkt_corpus.txt"
# Abbreviations (lowercase, without the final period) Punkt must not end a sentence after.
ABBREVIATIONS = (
    "a.m", "p.m", "e.g", "i.e", "etc", "vs", "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "co", "corp",
    "inc", "ltd", "dept", "fig", "no", "vol", "approx", "u.s", "u.k", "jan", "feb", "mar", "apr", "jun", "jul",
    "aug", "sep", "sept", "oct", "nov", "dec", "mon", "tue", "wed", "thu", "fri", "sat", "sun", "gen", "gov",
    "sen", "rep", "ave", "blvd", "mt", "ft", "lb", "oz", "cf", "al", "ph.d", "m.d", "b.a", "m.a",
)  # fmt: skip
_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")
_lock = threading.Lock()


def build_punkt_tab(target: Path = PUNKT_DIR) -> Path:
    """Train Punkt parameters on the shipped corpus and write them in nltk's `punkt_tab` format.

    Sorted lines make the files identical on every rebuild; each is written to a temporary name
    and renamed so a reader never sees half a model.
    """
    from nltk.tokenize.punkt import PunktTrainer

    trainer = PunktTrainer()
    trainer.INCLUDE_ALL_COLLOCS = False
    trainer.train(CORPUS.read_text(encoding="utf-8"), finalize=True)
    params = trainer.get_params()
    params.abbrev_types |= set(ABBREVIATIONS)
    contents = {
        "collocations.tab": sorted("\t".join(pair) for pair in params.collocations),
        "sent_starters.txt": sorted(params.sent_starters),
        "abbrev_types.txt": sorted(params.abbrev_types),
        "ortho_context.tab": sorted(f"{word}\t{flags}" for word, flags in params.ortho_context.items()),
    }
    target.mkdir(parents=True, exist_ok=True)
    for name, lines in contents.items():
        tmp = target / f".{name}.tmp"
        tmp.write_text("\n".join(lines), encoding="utf-8", newline="")
        tmp.replace(target / name)
    return target


def ensure_punkt_tab() -> None:
    """Make nltk find the project's `punkt_tab` first (built if missing), never downloading it.

    Also seeds langdetect, which the case checkers call, so scores are the same on every run.
    """
    import langdetect
    import nltk

    with _lock:
        if not all((PUNKT_DIR / name).is_file() for name in _FILES):
            build_punkt_tab()
        if not nltk.data.path or nltk.data.path[0] != str(NLTK_DATA):
            nltk.data.path.insert(0, str(NLTK_DATA))
        langdetect.DetectorFactory.seed = 0


def instruction_registry():
    """lm-eval's IFEval instruction registry, imported only once punkt_tab is in place."""
    ensure_punkt_tab()
    from lm_eval.tasks.ifeval import instructions_registry

    return instructions_registry


def check_instructions(prompt: str, response: str, instruction_id_list: list[str], kwargs: list[dict]) -> dict:
    """Score one response with lm-eval's IFEval checkers (strict and loose, as lm-eval's `ifeval`).

    Returns `prompt_strict`/`prompt_loose` (every instruction followed) and `inst_strict`/`inst_loose`
    (one bool per instruction). An unknown instruction id or a kwargs list of the wrong length is a
    `ValueError` naming it.
    """
    registry = instruction_registry()
    if len(kwargs) != len(instruction_id_list):
        raise ValueError(f"{len(instruction_id_list)} instruction ids but {len(kwargs)} kwargs entries")
    unknown = [i for i in instruction_id_list if i not in registry.INSTRUCTION_DICT]
    if unknown:
        raise ValueError(f"unknown IFEval instruction id {unknown[0]!r}")
    from lm_eval.tasks.ifeval.utils import (
        InputExample,
        test_instruction_following_loose,
        test_instruction_following_strict,
    )

    example = InputExample(key=0, instruction_id_list=list(instruction_id_list), prompt=prompt, kwargs=list(kwargs))
    strict = test_instruction_following_strict(example, response)
    loose = test_instruction_following_loose(example, response)
    return {
        "prompt_strict": bool(strict.follow_all_instructions),
        "prompt_loose": bool(loose.follow_all_instructions),
        "inst_strict": [bool(x) for x in strict.follow_instruction_list],
        "inst_loose": [bool(x) for x in loose.follow_instruction_list],
    }
