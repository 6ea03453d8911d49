"""Proof that a GGUF file reads prompts as the Hugging Face folder it came from: the embedded chat template renders
the same text, llama.cpp's tokenizer gives the same tokens, and decoding gives the same text."""

from __future__ import annotations

from pathlib import Path

from workbench.errors import StageError

# Whitespace runs, digits, punctuation runs, apostrophes, emoji, non-Latin scripts (the converter's own probe, in
# spirit), JSON, a Python call, and the chat markers and tool-call markers written inline as text.
PROBES = (
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "\n \n\n \t\t  \n   x    y\r\n",
    "3 33 333 3333 3.14 1,000,000 -42 1e-5 2026-11-30",
    "I've been 'told he's there, 'RE you sure? We'Ve a'lL ... !!! ??? ------ ======",
    "🚀 (emoji) 😶‍🌫️ ✅ 🦙🦙 нещо на Български 我想在apple工作 कान्त ελληνικά",
    '{"name": "get_weather", "arguments": {"city": "Zürich", "days": 3, "units": null}}',
    'def f(x):\n    return [g(a="b", n=1) for a in x]\n',
    '<|im_start|>user\nhi<|im_end|>\n<|tool_call_start|>[get_time(city="London")]<|tool_call_end|>',
)
CONVERSATION = [
    {"role": "system", "content": 'List of tools: <|tool_list_start|>[{"name": "get_time"}]<|tool_list_end|>'},
    {"role": "user", "content": "What time is it in London? Answer in JSON."},
    {"role": "assistant", "content": '<|tool_call_start|>[get_time(city="London")]<|tool_call_end|>'},
    {"role": "tool", "content": '{"time": "12:00"}'},
    {"role": "assistant", "content": '{"city": "London", "time": "12:00"}'},
    {"role": "user", "content": "Thanks."},
]


def check_parity(model_dir: Path, gguf: Path) -> int:
    """Check `gguf` against the tokenizer and chat template in `model_dir`; returns how many texts were compared.
    A difference is a one-line StageError that shows where."""
    from transformers import AutoTokenizer

    from workbench.export.gguf_lm import GGUFLM

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = GGUFLM(gguf, threads=1, context=512)
    try:
        texts = list(PROBES)
        if tokenizer.chat_template:
            if not model.template:
                raise StageError(f"{gguf.name} lost the model's chat template (no tokenizer.chat_template in it)")
            ours = tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
            theirs = model.apply_chat_template(CONVERSATION)
            if ours != theirs:
                raise StageError(
                    f"{gguf.name}: the embedded chat template renders differently from the model's "
                    f"(first difference at character {_first_difference(ours, theirs)})"
                )
            texts.append(ours)
        for text in texts:
            expected = tokenizer.encode(text, add_special_tokens=False)
            got = model.tok_encode(text)
            if expected != got:
                at = _first_difference(expected, got)
                raise StageError(
                    f"{gguf.name}: llama.cpp tokenizes {text[:40]!r} differently from the model's tokenizer "
                    f"(token {at}: {expected[at : at + 3]} vs {got[at : at + 3]})"
                )
            decoded, reference = model.decode(got), tokenizer.decode(expected, skip_special_tokens=True)
            if decoded != reference:
                raise StageError(
                    f"{gguf.name}: llama.cpp decodes {text[:40]!r} differently from the model's tokenizer "
                    f"(character {_first_difference(reference, decoded)})"
                )
        return len(texts)
    finally:
        model.close()


def _first_difference(a, b) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
