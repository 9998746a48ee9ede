#!/usr/bin/env bash
# Install llama-cpp-python into the given Python, compiling llama.cpp only once per machine.
# Usage: native/wheel.sh PYTHON
# The built wheel is cached in $ALPACA_BOT_WHEELS (default ~/.cache/alpaca-bot/wheels), in a
# folder keyed by the CPU's instruction-set flags, because the build uses -march=native (see
# native/cache.sh); it is built from the cached sdist native/server.sh builds llama-server from.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${1:?usage: native/wheel.sh PYTHON}"
# shellcheck source=build-flags.env
source "$here/build-flags.env"
# shellcheck source=cache.sh
source "$here/cache.sh"
export CMAKE_ARGS
cache="$(native_cache_dir "$CMAKE_ARGS")"

if "$python" -c "import importlib.metadata as m, sys; sys.exit(m.version('llama_cpp_python') != '$LLAMA_CPP_PYTHON_VERSION')" 2>/dev/null; then
    echo "llama-cpp-python $LLAMA_CPP_PYTHON_VERSION already installed"
    exit 0
fi

wheel="$(ls "$cache"/llama_cpp_python-"$LLAMA_CPP_PYTHON_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
if [ -z "$wheel" ]; then
    echo "Building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION (compiles llama.cpp once per machine, ~7 minutes on 2 cores)..."
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    sdist="$(native_sdist "$python" "$LLAMA_CPP_PYTHON_VERSION")"
    "$python" -m pip wheel --no-deps -w "$tmp" "$sdist" > "$tmp/build.log" 2>&1 || {
        tail -n 40 "$tmp/build.log" >&2
        echo "llama-cpp-python failed to build: a C++ compiler and cmake >= 3.21 are needed" >&2
        exit 1
    }
    mv "$tmp"/llama_cpp_python-*.whl "$cache"/
    wheel="$(ls "$cache"/llama_cpp_python-"$LLAMA_CPP_PYTHON_VERSION"-*.whl | head -n1)"
    echo "Cached $wheel"
fi
"$python" -m pip install --quiet "$wheel"
