#!/usr/bin/env bash
# The project's one test command: bash tests/run-all.sh
#
# On a fresh Debian 12 machine with the Rust toolchain, gcc, python3 and git it installs what
# the suite needs (kcat; make and zlib headers for the bundled librdkafka build that rdkafka
# does; pip, kafka-python and confluent-kafka for the Python client tests; node/npm if absent
# and kafkajs, via `npm ci` in tests/node, for the JavaScript client tests; Go and Debian's
# Sarama for the Go client test), builds the release broker, and runs every workspace test in
# release mode with the external-client tests made mandatory.
#
#   SKIP_INSTALL=1   skip the apt/pip/npm steps (everything is already there)
#   Extra arguments are passed to `cargo test` (e.g. a test name filter).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

KAFKA_PYTHON_VERSION=2.3.3
# A release with manylinux x86_64 wheels for CPython 3.11 (bundling librdkafka 2.12.1) and
# the AdminClient calls the test uses (incremental_alter_configs, describe_cluster).
CONFLUENT_KAFKA_VERSION=2.12.1
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
    command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
    command -v npm >/dev/null 2>&1 || pkgs+=(npm)
    # Go and Debian's Sarama for the Go client test (a GOPATH-mode build, offline).
    command -v go >/dev/null 2>&1 || pkgs+=(golang-go)
    [ -d /usr/share/gocode/src/github.com/Shopify/sarama ] || pkgs+=(golang-github-shopify-sarama-dev)
    if [ "${#pkgs[@]}" -gt 0 ]; then
        log "apt-get install ${pkgs[*]}"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes \
            apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    fi

    local pip=(env PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-input)
    if [ "$(id -u)" != 0 ] && [ -z "${VIRTUAL_ENV:-}" ]; then pip+=(--user); fi
    local want=()
    if ! "$PYTHON" -c "import sys, kafka; sys.exit(kafka.__version__ != '$KAFKA_PYTHON_VERSION')" \
        >/dev/null 2>&1; then
        want+=("kafka-python==$KAFKA_PYTHON_VERSION")
    fi
    if ! "$PYTHON" -c "import sys, confluent_kafka as c; sys.exit(c.version()[0] != '$CONFLUENT_KAFKA_VERSION')" \
        >/dev/null 2>&1; then
        want+=("confluent-kafka==$CONFLUENT_KAFKA_VERSION")
    fi
    if [ "${#want[@]}" -gt 0 ]; then
        log "pip install ${want[*]}"
        # Wheels only: confluent-kafka's sdist would need librdkafka headers to build.
        # Debian's own python3 refuses pip installs outside a venv (PEP 668) unless told.
        "${pip[@]}" --only-binary confluent-kafka "${want[@]}" 2>/dev/null ||
            "${pip[@]}" --only-binary confluent-kafka --break-system-packages "${want[@]}"
    fi

    # kafkajs, exactly as tests/node/package-lock.json pins it.
    if ! (cd tests/node && node -e "process.exit(require('kafkajs/package.json').version === require('./package-lock.json').packages['node_modules/kafkajs'].version ? 0 : 1)") \
        >/dev/null 2>&1; then
        log "npm ci (tests/node)"
        (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
    fi
}

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    install_deps
fi

log "cargo build --release -p broker"
cargo build --release -p broker

log "cargo test --workspace --release"
REQUIRE_EXTERNAL_CLIENTS=1 cargo test --workspace --release "$@"

# ---- deterministic simulation (sim/) ---------------------------------------------------------
# Seed sweeps of every layer (core: the partition core and log over a faulty disk; groups: the
# group coordinator; raft: a 3-node metadata quorum over a faulty network; replication: brokers
# of partition cores, the controller, follower fetches and acks=all producers; system: the real
# broker server under turmoil with network, crash, disk and clock faults; cluster: three
# replicating broker nodes under turmoil with crashes, isolations, wedged connections, failing
# syncs and clock skew), a determinism check
# per layer (each seed run twice, trace hashes compared), proof that every planted bug is
# caught, and the Jepsen-style `sim check` against the real broker binary over TCP. The planted
# build is a separate feature set of `broker`, so it never reaches the binary tested above.
# About 7 minutes on 2 cores (replication sweeps about 2, the cluster sweep about 3).
log "sim: seed sweeps"
cargo build --release -q -p sim
cargo run --release -q -p sim -- --seeds 2000
cargo run --release -q -p sim -- --layer groups --seeds 2000
cargo run --release -q -p sim -- --layer raft --seeds 1000
cargo run --release -q -p sim -- --layer replication --seeds 10000
cargo run --release -q -p sim -- --layer replication --nodes 5 --seeds 5000
cargo run --release -q -p sim -- --layer system --seeds 300
cargo run --release -q -p sim -- --layer cluster --seeds 400
log "sim: determinism"
for layer in core groups raft replication system cluster; do
    cargo run --release -q -p sim -- determinism --layer "$layer" --seeds 3
done
log "sim: planted bugs must be caught"
cargo run --release -q -p sim --features planted-bugs -- plants --check
log "sim: check against the real broker"
check_dir=$(mktemp -d)
./target/release/broker --data-dir "$check_dir/data" --listen 127.0.0.1:0 >"$check_dir/addr" 2>"$check_dir/broker.log" &
check_pid=$!
for _ in $(seq 100); do grep -q '^listening on ' "$check_dir/addr" && break; sleep 0.1; done
check_addr=$(sed -n 's/^listening on //p' "$check_dir/addr")
check_status=0
./target/release/sim check --bootstrap "$check_addr" --seconds 5 || check_status=$?
kill "$check_pid" 2>/dev/null || true
wait "$check_pid" 2>/dev/null || true
rm -rf "$check_dir"
[ "$check_status" = 0 ]
# ---- end of simulation section ----------------------------------------------------------------

# ---- fuzzing (fuzz/) ----------------------------------------------------------------------------
# The checked-in corpus is already replayed on stable by `cargo test` (broker/tests/fuzz_corpus.rs).
# Here, if a nightly toolchain exists, each libFuzzer target runs for FUZZ_SECONDS (default 30)
# on a temporary copy of its corpus, so CI never changes the committed one; two targets at a
# time (one per core). A crash, an allocation over the RSS limit or a 30 s input fails the run
# (FUZZ_FATAL=0 only reports it); the reproducer lands in fuzz/artifacts/<target>/ (replay: see
# TESTING.md).
# About 4 minutes on 2 cores the first time (cargo-fuzz install + nightly build), ~1.5 after.
#   SKIP_FUZZ=1   skip this section
if [ "${SKIP_FUZZ:-0}" != 1 ] && cargo +nightly --version >/dev/null 2>&1; then
    if ! cargo fuzz --version >/dev/null 2>&1; then
        log "cargo install cargo-fuzz"
        cargo install cargo-fuzz --locked -q
    fi
    fuzz_tmp=$(mktemp -d)
    trap 'rm -rf "$fuzz_tmp"' EXIT
    log "fuzz: build"
    (cd fuzz && cargo +nightly fuzz build)
    fuzz_one() {
        cp -r "fuzz/corpus/$1" "$fuzz_tmp/$1"
        (cd fuzz && cargo +nightly fuzz run "$1" "$fuzz_tmp/$1" -- \
            -max_total_time="${FUZZ_SECONDS:-30}" -rss_limit_mb=2048 -timeout=30 \
            -print_final_stats=1) >"$fuzz_tmp/$1.log" 2>&1
    }
    fuzz_failed=0
    for pair in "request_frame record_batch" "log_recovery dispatch" "storage_faults group_actions" "quorum_frame replication_actions"; do
        pids=()
        for target in $pair; do
            log "fuzz: $target for ${FUZZ_SECONDS:-30} s"
            fuzz_one "$target" &
            pids+=("$!")
        done
        i=0
        for target in $pair; do
            if wait "${pids[$i]}"; then
                grep -h 'stat::average_exec_per_sec' "$fuzz_tmp/$target.log" | sed "s/^/    $target /" >&2
            else
                log "fuzz: $target FAILED"
                tail -n 60 "$fuzz_tmp/$target.log" >&2
                fuzz_failed=1
            fi
            i=$((i + 1))
        done
    done
    # Fatal since every decoder target has run a clean one-hour campaign (TESTING.md). A crash
    # is printed with its input: add it to fuzz/corpus/<target>/ and fix it.
    if [ "$fuzz_failed" != 0 ]; then
        log "fuzz: CRASH FOUND (see above; reproducer under fuzz/artifacts/)"
        [ "${FUZZ_FATAL:-1}" != 1 ]
    fi
else
    log "fuzz: skipped (SKIP_FUZZ=1 or no nightly toolchain)"
fi
# ---- end of fuzzing section ---------------------------------------------------------------------
