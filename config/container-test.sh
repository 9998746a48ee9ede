#!/usr/bin/env bash
# Build the container image on a Debian base made here from Debian's packages (no registry is
# needed), then run it against the loopback fake Bot API until it answers one private message.
# Usage: config/container-test.sh [--build-only]   (as root it installs mmdebstrap and podman)
# Exit status 0 on success; otherwise non-zero, with the container's log. `make container` is
# --build-only; `make container-test` all of it.
#
# Cached in $ALPACA_BOT_CONTAINER_CACHE (default ~/.cache/alpaca-bot/container): the base's
# tarball (remade after 7 days, for Debian's security updates) and the compiled llama-cpp-python
# wheel (keyed by its version and flags), so only the first run compiles llama.cpp.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${ALPACA_BOT_CONTAINER_CACHE:-$HOME/.cache/alpaca-bot/container}"
base_image=localhost/debian-base:bookworm
image="${ALPACA_BOT_IMAGE:-localhost/alpaca-bot:latest}"
build_only=false
case "${1:-}" in
    --build-only) build_only=true ;;
    "") ;;
    *) echo "usage: config/container-test.sh [--build-only]" >&2; exit 2 ;;
esac
mirror=http://deb.debian.org
# shellcheck source=../native/build-flags.env
source "$repo/native/build-flags.env"

began=$SECONDS
step() { printf '[container-test %4ds] %s\n' "$((SECONDS - began))" "$*"; }

missing=()
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v podman >/dev/null || missing+=(podman)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "container-test: needs ${missing[*]}: as root, apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    step "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
mkdir -p "$cache"

# The base: Debian's minimal system, merged /usr, no docs or recommends (also for later installs).
tarball="$cache/debian-bookworm-minbase.tar"
if [ -z "$(find "$tarball" -mtime -7 2>/dev/null)" ]; then
    step "making the Debian base with mmdebstrap"
    log="$cache/mmdebstrap.log"
    mmdebstrap --variant=minbase --format=tar --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        bookworm "$tarball.part" \
        "deb $mirror/debian bookworm main" "deb $mirror/debian bookworm-updates main" \
        "deb $mirror/debian-security bookworm-security main" >"$log" 2>&1 \
        || { tail -n 30 "$log" >&2; echo "container-test: mmdebstrap failed" >&2; exit 1; }
    mv "$tarball.part" "$tarball"
fi
# Imported again only when the tarball changed: a new base image would void podman's layer cache.
digest="$(sha256sum "$tarball" | cut -c1-16)"
if [ "$(podman image inspect --format '{{index .Labels "alpaca-bot.base"}}' "$base_image" 2>/dev/null)" != "$digest" ]; then
    step "importing the base as $base_image"
    podman import --quiet --change "LABEL alpaca-bot.base=$digest" --change 'CMD ["/bin/bash"]' \
        "$tarball" "$base_image" >/dev/null
fi

# Podman's defaults first. Sandboxed VMs may need another runtime: crun refuses hosts with hybrid
# cgroups (v1 plus a v2 mount), and root may lack CAP_SYS_RESOURCE to raise podman's default
# rlimits, so runc with the limits this shell already has is tried next.
podman=(podman)
run_options=()
if ! podman run --rm --network host "$base_image" true >/dev/null 2>&1; then
    if ! command -v runc >/dev/null && [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc >/dev/null
    fi
    podman=(podman --runtime runc)
    run_options=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096)
    "${podman[@]}" run --rm --network host "${run_options[@]}" "$base_image" true \
        || { echo "container-test: podman cannot start a container here" >&2; exit 1; }
    step "podman: runc with ${run_options[*]}"
fi

# The wheel cache is bind-mounted into the build; the build stage compiles only if it is empty.
# pip in the build trusts what this host trusts (a TLS-intercepting proxy's CA, say).
wheels="$cache/wheels-$(printf '%s' "bookworm $LLAMA_CPP_PYTHON_VERSION $CMAKE_ARGS $PORTABLE_CMAKE_ARGS" | sha256sum | cut -c1-12)"
mkdir -p "$wheels"
build_options=(--format docker --network host --volume "$wheels:/wheels:z" --build-arg "BASE=$base_image")
for bundle in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    if [ -f "$bundle" ]; then
        build_options+=(--volume "$bundle:/etc/host-ca.crt:ro" --build-arg PIP_CERT=/etc/host-ca.crt)
        break
    fi
done
if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    step "building $image: compiling llama-cpp-python for every x86-64 level (~30 min on 2 cores)"
else
    step "building $image with the cached $(basename "$(ls "$wheels"/llama_cpp_python-*.whl | head -n1)")"
fi
build_log="$cache/build.log"
"${podman[@]}" build "${build_options[@]}" "${run_options[@]}" -t "$image" -f "$repo/Containerfile" "$repo" \
    >"$build_log" 2>&1 || { tail -n 40 "$build_log" >&2; echo "container-test: the build failed (log: $build_log)" >&2; exit 1; }
step "built $image ($("${podman[@]}" image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}'))"

if $build_only; then
    exit 0
fi

python="$repo/.venv/bin/python"
[ -x "$python" ] || python=python3
step "running it against the fake Bot API"
cd "$repo"
"$python" -m tests.container_smoke --image "$image" --podman "${podman[*]}" \
    "${run_options[@]/#/--run-option=}"
step "passed"
