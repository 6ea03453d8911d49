"""Where the llama.cpp stack is: `llama-cpp-python` (built from source by `scripts/install-llamacpp.sh`) and
llama.cpp's HF-to-GGUF converter, which PyPI ships only inside llama-cpp-python's source archive, so the install
script copies it (with its matching `gguf` package) to `<venv>/share/workbench-llama.cpp/`."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from workbench.errors import StageError

INSTALL_HINT = "run `bash scripts/install-llamacpp.sh` (builds llama.cpp from source, about 6 minutes on 2 cores)"
CONVERTER_ENV = "WORKBENCH_LLAMA_CPP_CONVERTER"


def converter_dir() -> Path:
    """The folder holding `convert_hf_to_gguf.py` and its `conversion` package."""
    configured = os.environ.get(CONVERTER_ENV)
    return Path(configured) if configured else Path(sys.prefix) / "share" / "workbench-llama.cpp"


def missing() -> str | None:
    """What of the llama.cpp stack is not installed (one line with the fix), or None when all of it is."""
    absent = [name for name in ("llama_cpp", "gguf") if importlib.util.find_spec(name) is None]
    if not (converter_dir() / "conversion" / "__init__.py").is_file():
        absent.append(f"llama.cpp's converter (looked in {converter_dir()}; set {CONVERTER_ENV} to move it)")
    if not absent:
        return None
    return f"GGUF export needs {', '.join(absent)}: {INSTALL_HINT}"


def require() -> None:
    """Raise a one-line StageError when the stack is incomplete."""
    problem = missing()
    if problem:
        raise StageError(problem)


# llama.cpp reports at error level that LFM2's mixed layers get a padded KV cache; it is expected, not an error.
_BENIGN = (b"the V embeddings have different sizes across layers",)
_quiet_callback = None


def quiet_llama_logs() -> None:
    """Route llama.cpp's log to stderr only for real errors (its info lines and known-benign messages dropped)."""
    global _quiet_callback
    if _quiet_callback is not None:
        return
    import ctypes

    import llama_cpp

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, _user_data) -> None:
        if level == 3 and not any(benign in text for benign in _BENIGN):
            sys.stderr.write(text.decode("utf-8", errors="replace"))

    _quiet_callback = callback  # ctypes needs the callback kept alive
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
