#!/usr/bin/env bash
# Runs a command with MSRS_TEST_LOG pointing at a fresh msrs-mockbroker
# (librdkafka's mock cluster in its own process), then stops the broker.
set -euo pipefail
bin="${MSRS_BIN_DIR:?}"
dir=$(mktemp -d /tmp/msrs-mock-XXXXXX)
"$bin/msrs-mockbroker" --bootstrap-file "$dir/bootstrap" >"$dir/stdout" 2>"$dir/stderr" &
broker=$!
trap 'kill $broker 2>/dev/null; wait $broker 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [ -s "$dir/bootstrap" ] && break; sleep 0.05; done
[ -s "$dir/bootstrap" ] || { echo "msrs-mockbroker did not start:"; cat "$dir/stderr"; exit 1; }
export MSRS_TEST_LOG="kafka:$(cat "$dir/bootstrap")"
echo "mock broker at ${MSRS_TEST_LOG}"
"$@"
