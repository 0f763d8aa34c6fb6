#!/usr/bin/env bash
# The whole test suite (`make test`): builds the service and its ASan+UBSan twin, runs the
# cmocka unit tests under the sanitizers, then the end-to-end tests (pytest) against a real
# PostgreSQL and a real Apache Kafka broker that the harness starts on ports of its own.
# The end-to-end tests run the sanitizer build (EVENTSINK_BIN overrides).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
echo "== build"
make -j"$(nproc)" all asan >/dev/null
make -j"$(nproc)" format-check

echo "== python test environment"
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import pytest, psycopg, confluent_kafka, requests' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install -q -r tests/requirements.txt
fi
echo "== kafka broker jars (Maven Central, cached in tests/kafka/lib)"
tests/kafka/broker.sh fetch x

echo "== unit tests (cmocka, ASan+UBSan)"
make -j"$(nproc)" unit

echo "== fuzzing (libFuzzer, bounded: ${FUZZ_SECONDS:-20} s a target)"
make -j"$(nproc)" fuzz FUZZ_SECONDS="${FUZZ_SECONDS:-20}"

echo "== valgrind memcheck of a short end-to-end scenario (build/eventsink)"
make valgrind

# The end-to-end tests include the bounded chaos run (tests/e2e/test_chaos.py: 90 s of
# faults with a ledger, CHAOS_TEST_SECONDS to change it); `make chaos` is the full one.
echo "== end-to-end tests (real PostgreSQL, real Kafka)"
export EVENTSINK_BIN=${EVENTSINK_BIN:-$PWD/build/asan/eventsink}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests/e2e "$@"
