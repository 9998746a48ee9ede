# Where the native builds are cached; sourced by native/wheel.sh and native/server.sh.
# Both compile llama.cpp with -march=native, so a build is only reused on a machine with the same
# instruction sets: every build folder is keyed by the CPU's flags and by what was compiled.
# The cache root is $ALPACA_BOT_WHEELS (default ~/.cache/alpaca-bot/wheels); the sdist they are both
# built from is downloaded once into it.
# shellcheck shell=bash

native_cache_root="${ALPACA_BOT_WHEELS:-$HOME/.cache/alpaca-bot/wheels}"

# native_cache_dir KEY: the folder for a build described by KEY (its version and flags), created.
native_cache_dir() {
    local cpu_key flags_key dir
    cpu_key="$( (grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || uname -m) | sha256sum | cut -c1-12)"
    flags_key="$(printf '%s' "$1" | sha256sum | cut -c1-8)"
    dir="$native_cache_root/$(uname -m)-$cpu_key-$flags_key"
    mkdir -p "$dir"
    printf '%s\n' "$dir"
}

# native_sdist PYTHON VERSION: the path of llama-cpp-python's sdist, downloaded once.
native_sdist() {
    local python="$1" version="$2" dir tmp file
    dir="$native_cache_root/sdist"
    file="$dir/llama_cpp_python-$version.tar.gz"
    if [ ! -f "$file" ]; then
        mkdir -p "$dir"
        tmp="$(mktemp -d "$dir/.download.XXXXXX")"
        "$python" -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" \
            "llama-cpp-python==$version" >&2 || { rm -rf "$tmp"; return 1; }
        mv "$tmp"/*.tar.gz "$file" || { rm -rf "$tmp"; return 1; }
        rm -rf "$tmp"
    fi
    printf '%s\n' "$file"
}
