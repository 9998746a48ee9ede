#!/usr/bin/env bash
# Build llama.cpp's llama-server once per machine, from the llama.cpp vendored in the same
# llama-cpp-python sdist as the wheel, so tests and benchmarks against it run the same code.
# Usage: native/server.sh [PYTHON]   (PYTHON's pip downloads the sdist; default python3)
#        native/server.sh --cached   (only print the cached binary's path; exit 1 when not built)
# Prints the binary's path. It is cached next to the wheel (see native/cache.sh), keyed by the CPU
# and by the version and flags below; it links llama.cpp statically, so the file alone runs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${1:-python3}"
# shellcheck source=build-flags.env
source "$here/build-flags.env"
# shellcheck source=cache.sh
source "$here/cache.sh"

# Only the server target is built. The web UI stays out: its assets would otherwise be fetched
# from a model hub at build time. No TLS: the server only ever listens on loopback in our tests.
SERVER_CMAKE_ARGS=(
    -DCMAKE_BUILD_TYPE=Release
    -DBUILD_SHARED_LIBS=OFF
    -DGGML_NATIVE=ON
    -DLLAMA_BUILD_COMMON=ON
    -DLLAMA_BUILD_TOOLS=ON
    -DLLAMA_BUILD_SERVER=ON
    -DLLAMA_BUILD_APP=OFF
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_UI=OFF
    -DLLAMA_USE_PREBUILT_UI=OFF
    -DLLAMA_OPENSSL=OFF
    -DLLAMA_CURL=OFF
)
cache="$(native_cache_dir "$LLAMA_CPP_PYTHON_VERSION ${SERVER_CMAKE_ARGS[*]}")"
binary="$cache/llama-server-$LLAMA_CPP_PYTHON_VERSION"

if [ "$python" = --cached ]; then
    [ -x "$binary" ] || { echo "llama-server is not built yet: run native/server.sh" >&2; exit 1; }
elif [ ! -x "$binary" ]; then
    echo "Building llama-server from llama-cpp-python $LLAMA_CPP_PYTHON_VERSION (once per machine, a few minutes on 2 cores)..." >&2
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    log="$tmp/build.log"
    fail() {
        tail -n 40 "$log" >&2
        echo "llama-server failed to build ($1): a C++ compiler and cmake >= 3.21 are needed" >&2
        exit 1
    }
    sdist="$(native_sdist "$python" "$LLAMA_CPP_PYTHON_VERSION" 2>"$log")" || fail "sdist download"
    tar -xzf "$sdist" -C "$tmp" || fail "sdist unpack"
    source_dir="$tmp/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
    cmake -S "$source_dir" -B "$tmp/build" "${SERVER_CMAKE_ARGS[@]}" >>"$log" 2>&1 || fail "configure"
    cmake --build "$tmp/build" --target llama-server -j 2 >>"$log" 2>&1 || fail "compile"
    # Copied under a temporary name then renamed, so a half-written binary is never cached.
    cp "$tmp/build/bin/llama-server" "$binary.part"
    mv "$binary.part" "$binary"
    echo "Cached $binary" >&2
fi
printf '%s\n' "$binary"
