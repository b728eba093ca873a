#!/usr/bin/env bash
# Runs a command with MSRS_TEST_LOG pointing at a fresh msrs-mockbroker
# (librdkafka's mock cluster in its own process), then stops the broker.
set -euo pipefail
bin="${MSRS_BIN_DIR:?}"
dir=$(mktemp -d /tmp/msrs-mock-XXXXXX)
"$bin/msrs-mockbroker" --bootstrap-file "$dir/bootstrap" >"$dir/stdout" 2>"$dir/stderr" &
broker=$!
trap 'kill $broker 2>/dev/null; wait $broker 2>/dev/null; rm -rf "$dir"' EXIT
# It takes ~50 ms; twice in CI (under the other tests' load) it had not
# written its bootstrap after 5 s, with nothing on stderr: wait up to 30 s.
for _ in $(seq 600); do [ -s "$dir/bootstrap" ] && break; sleep 0.05; done
if ! [ -s "$dir/bootstrap" ]; then
  echo "msrs-mockbroker did not start within 30 s ($(kill -0 $broker 2>/dev/null && echo still running || echo exited)):"
  cat "$dir/stderr"
  exit 1
fi
export MSRS_TEST_LOG="kafka:$(cat "$dir/bootstrap")"
export MSRS_MOCKBROKER_PID=$broker  # for fault injection: SIGUSR1 down, SIGUSR2 up
echo "mock broker at ${MSRS_TEST_LOG}"
rc=0
"$@" || rc=$?
# A broker that died under the test is said with its stderr (CI keeps no files).
if ! kill -0 $broker 2>/dev/null; then
  status=0
  wait $broker || status=$?
  echo "msrs-mockbroker exited during the test (status $status); its stderr:"
  tail -c 4000 "$dir/stderr"
  [ $rc -ne 0 ] || rc=1
fi
exit $rc
