#!/usr/bin/env bash
# The project's one test command: bash tests/run-all.sh
#
# On a fresh Debian 12 machine with the Rust toolchain, gcc, python3 and git it installs what
# the suite needs (kcat; make and zlib headers for the bundled librdkafka build that rdkafka
# does; pip and kafka-python for the Python client test), builds the release broker, and runs
# every workspace test in release mode with the external-client tests made mandatory.
#
#   SKIP_INSTALL=1   skip the apt/pip steps (everything is already there)
#   Extra arguments are passed to `cargo test` (e.g. a test name filter).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

KAFKA_PYTHON_VERSION=2.3.3
PYTHON=${PYTHON:-python3}
export PYTHON

log() { printf '==> %s\n' "$*" >&2; }

if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo); fi

install_deps() {
    local pkgs=()
    command -v kcat >/dev/null 2>&1 || pkgs+=(kcat)
    command -v make >/dev/null 2>&1 || pkgs+=(make)
    command -v pkg-config >/dev/null 2>&1 || pkgs+=(pkg-config)
    [ -e /usr/include/zlib.h ] || pkgs+=(zlib1g-dev)
    "$PYTHON" -m pip --version >/dev/null 2>&1 || pkgs+=(python3-pip)
    if [ "${#pkgs[@]}" -gt 0 ]; then
        log "apt-get install ${pkgs[*]}"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes \
            apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    fi

    if ! "$PYTHON" -c "import sys, kafka; sys.exit(kafka.__version__ != '$KAFKA_PYTHON_VERSION')" \
        >/dev/null 2>&1; then
        log "pip install kafka-python==$KAFKA_PYTHON_VERSION"
        local pip=(env PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-input)
        if [ "$(id -u)" != 0 ] && [ -z "${VIRTUAL_ENV:-}" ]; then pip+=(--user); fi
        # Debian's own python3 refuses pip installs outside a venv (PEP 668) unless told.
        "${pip[@]}" "kafka-python==$KAFKA_PYTHON_VERSION" 2>/dev/null ||
            "${pip[@]}" --break-system-packages "kafka-python==$KAFKA_PYTHON_VERSION"
    fi
}

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    install_deps
fi

log "cargo build --release -p broker"
cargo build --release -p broker

log "cargo test --workspace --release"
REQUIRE_EXTERNAL_CLIENTS=1 cargo test --workspace --release "$@"
