#!/usr/bin/env bash
# Install the llama.cpp stack GGUF export uses into .venv: llama-cpp-python (built from source: PyPI has no
# wheel for it; about 3-6 minutes on 2 cores, then cached by pip) and llama.cpp's HF-to-GGUF converter with its
# matching `gguf` package, both taken from the same llama-cpp-python source archive (PyPI ships them nowhere
# else). Safe to re-run: a finished install is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.3.36
VENV=${VENV:-.venv}
SHARE="$VENV/share/workbench-llama.cpp"
if [ -f "$SHARE/.installed-$VERSION" ] && "$VENV/bin/python" -c 'import llama_cpp, gguf' 2>/dev/null; then
  echo "llama.cpp stack $VERSION already installed"
  exit 0
fi
# Only what the stages use: the library, no tools, tests, examples or multimodal projector; tuned for this CPU.
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
started=$(date +%s)
"$VENV/bin/python" -m pip install --quiet "llama-cpp-python==$VERSION"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$VENV/bin/python" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$work"
tar -xzf "$work/llama_cpp_python-$VERSION.tar.gz" -C "$work"
vendored="$work/llama_cpp_python-$VERSION/vendor/llama.cpp"
"$VENV/bin/python" -m pip install --quiet "$vendored/gguf-py"
rm -rf "$SHARE.tmp" && mkdir -p "$SHARE.tmp"
cp -r "$vendored/convert_hf_to_gguf.py" "$vendored/conversion" "$vendored/LICENSE" "$SHARE.tmp/"
rm -rf "$SHARE" && mv "$SHARE.tmp" "$SHARE"
touch "$SHARE/.installed-$VERSION"
echo "llama.cpp stack $VERSION installed in $VENV ($(( $(date +%s) - started )) s)"
