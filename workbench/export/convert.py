"""Convert a Hugging Face model folder to GGUF with llama.cpp's own converter, then quantize with llama.cpp.

Runs as its own process (`python -m workbench.export.convert MODEL OUT --quantization q4_K_M`) so the converter's
global registries, logging and memory stay out of the workbench process; a failure ends with one `error:` line.

The converter is extended by subclassing, never copied. The subclass changes three things, each so the file
behaves like the Hugging Face folder it came from:
- a byte-level BPE pre-tokenizer that the converter's hash table does not list (every tokenizer trained locally
  has a new hash) is named by its shape: GPT-2's regex is llama.cpp's `gpt-2`, Llama 3's is `llama-bpe`;
- added tokens keep transformers' `special` flag as their type (llama.cpp would make every `<|...|>` a control
  token, and its decoder drops control tokens where transformers keeps non-special ones, such as LFM2's
  tool-call markers);
- transformers' `{% generation %}` blocks (which only mark assistant tokens for training masks) become plain
  `{% if true %}` blocks, so llama.cpp's and jinja2's template engines read the embedded chat template.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# Types the converter writes itself; any other is converted to f16 first, then quantized by llama.cpp.
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")
# llama.cpp quantization types by name (llama_ftype values; the K-quants fall back per tensor where a row is not a
# multiple of 256, as llama-quantize does).
QUANTIZED_TYPES = {
    "q4_0": 2,
    "q4_1": 3,
    "q5_0": 8,
    "q5_1": 9,
    "q2_K": 10,
    "q3_K_S": 11,
    "q3_K_M": 12,
    "q3_K_L": 13,
    "q4_K_S": 14,
    "q4_K_M": 15,
    "q5_K_S": 16,
    "q5_K_M": 17,
    "q6_K": 18,
}
QUANTIZATIONS = (*CONVERTER_TYPES, *QUANTIZED_TYPES)

_GPT2_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
_LLAMA3_REGEX = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)
_GENERATION_TAG = re.compile(r"\{%(-?)\s*(end)?generation\s*(-?)%\}")


def pre_tokenizer_name(tokenizer_json: Path) -> str | None:
    """llama.cpp's name for the pre-tokenizer in `tokenizer.json`, when its shape is one llama.cpp implements."""
    if not tokenizer_json.is_file():
        return None
    pre = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    if len(steps) == 2 and steps[0].get("type") == "Split" and steps[1].get("type") == "ByteLevel":
        pattern = steps[0].get("pattern", {}).get("Regex")
        if not steps[1].get("use_regex", True) and pattern == _LLAMA3_REGEX:
            return "llama-bpe"
        if not steps[1].get("use_regex", True) and pattern == _GPT2_REGEX:
            return "gpt-2"
    return None


def plain_jinja(template: str) -> str:
    """The chat template with transformers' `{% generation %}` tags as `{% if true %}` blocks (same output, same
    whitespace control), which every Jinja engine reads."""
    return _GENERATION_TAG.sub(lambda m: f"{{%{m[1]} {'endif' if m[2] else 'if true'} {m[3]}%}}", template)


def _workbench_model_class(base, pre_tokenizer: str | None = None):
    """The converter's class for the architecture, extended as the module docstring says."""

    class WorkbenchModel(base):
        model_arch = base.model_arch  # the converter requires each class to name its architecture

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            add_chat_template = self.gguf_writer.add_chat_template

            def add_plain_chat_template(value):
                add_chat_template(plain_jinja(value) if isinstance(value, str) else value)

            self.gguf_writer.add_chat_template = add_plain_chat_template

        def get_vocab_base_pre(self, tokenizer) -> str:
            known = pre_tokenizer or pre_tokenizer_name(Path(self.dir_model) / "tokenizer.json")
            if known is not None:
                return known
            try:
                return super().get_vocab_base_pre(tokenizer)
            except NotImplementedError:
                raise SystemExit(
                    "error: the model's pre-tokenizer is neither one llama.cpp's converter knows by hash nor a "
                    "byte-level GPT-2 or Llama 3 split; llama.cpp cannot tokenize like it"
                ) from None

        def does_token_look_special(self, token) -> bool:
            return False

    WorkbenchModel.__name__ = f"Workbench{base.__name__}"
    return WorkbenchModel


def convert(model_dir: Path, out: Path, outtype: str, pre_tokenizer: str | None = None) -> None:
    """llama.cpp's converter on `model_dir`, written to `out` as `outtype` (one of CONVERTER_TYPES);
    `pre_tokenizer` forces llama.cpp's pre-tokenizer name instead of detecting it."""
    import logging

    from workbench.export.stack import converter_dir

    sys.path.insert(0, str(converter_dir()))
    import gguf
    import torch
    from conversion import ModelBase, ModelType, get_model_architecture, get_model_class

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    types = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0"}
    with torch.inference_mode():
        hparams = ModelBase.load_hparams(model_dir, False)
        architecture = get_model_architecture(hparams, ModelType.TEXT)
        try:
            base = get_model_class(architecture)
        except NotImplementedError:
            raise SystemExit(f"error: llama.cpp's converter does not support architecture '{architecture}'") from None
        model = _workbench_model_class(base, pre_tokenizer)(model_dir, getattr(gguf.LlamaFileType, types[outtype]), out)
        model.write()


def quantize(source: Path, out: Path, quantization: str, threads: int) -> None:
    """llama.cpp's quantizer (`llama_model_quantize`, what `llama-quantize` runs) from `source` to `out`."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTIZED_TYPES[quantization]
    params.nthread = threads
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), params)
    if status != 0:
        raise SystemExit(f"error: llama.cpp could not quantize to {quantization} (status {status})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="Hugging Face model folder")
    parser.add_argument("out", type=Path, help="GGUF file to write")
    parser.add_argument("--quantization", choices=QUANTIZATIONS, default="q8_0")
    parser.add_argument("--threads", type=int, default=2, help="threads for llama.cpp's quantizer")
    parser.add_argument("--pre-tokenizer", help="llama.cpp's pre-tokenizer name (e.g. gpt-2), instead of detecting it")
    args = parser.parse_args(argv)
    if args.quantization in CONVERTER_TYPES:
        convert(args.model, args.out, args.quantization, args.pre_tokenizer)
        return
    staged = args.out.with_name(args.out.name + ".f16")
    try:
        convert(args.model, staged, "f16", args.pre_tokenizer)
        quantize(staged, args.out, args.quantization, args.threads)
    finally:
        staged.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
