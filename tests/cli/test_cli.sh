#!/usr/bin/env bash
# The command-line contract: --help, exit codes, config file + environment
# + -X precedence, clear errors naming the file, the line and the field.
set -u
bin="${MSRS_BIN_DIR:?}"
tmp=$(mktemp -d /tmp/msrs-cli-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
expect() { # expect WHAT WANT_RC CMD... ; output in $out
  local what=$1 want=$2; shift 2
  out=$("$@" 2>&1); local rc=$?
  if [ "$rc" -eq "$want" ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $what: exit $rc, expected $want"; echo "$out" | head -5; fi
}
contains() { # contains WHAT TEXT
  if grep -qF -- "$2" <<<"$out"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $1: output lacks '$2'"; echo "$out" | head -5; fi
}

# Every binary README.md lists takes --help (exit 0) and the common options,
# and refuses an unknown option (exit 2).
for t in msrs msrs-tail msrs-mockbroker msrs-replay msrs-agent msrs-supervisor msrs-syncd \
         msrs-collectord msrs-archiver msrs-devsim; do
  expect "$t --help" 0 "$bin/$t" --help; contains "$t --help" "usage:"
  for o in "--config" "-X KEY=VALUE"; do contains "$t --help lists $o" "$o"; done
  expect "$t bad option" 2 "$bin/$t" --no-such-option
done
# An unknown configuration key is refused at start, named with where it came
# from (docs/config.md lists the known ones).
for t in msrs-syncd msrs-devsim msrs-replay; do
  expect "$t unknown key" 2 "$bin/$t" --log "sqlite:$tmp/k.db" -X scaling.mode=x
  contains "$t names the unknown key" 'unknown configuration key "scaling.mode" (from -X'
done
printf 'log = sqlite:%s/k.db\nsync.min_grup = 2\n' "$tmp" >"$tmp/typo.conf"
expect "unknown key in a file" 2 "$bin/msrs-collectord" --config "$tmp/typo.conf"
contains "file key named with its line" "unknown configuration key \"sync.min_grup\" (from $tmp/typo.conf:2"
expect "unknown key in MSRS_X" 2 env MSRS_X="archive.dri=x" "$bin/msrs-archiver" --log "sqlite:$tmp/k.db"
contains "MSRS_X key named" '"archive.dri" (from environment MSRS_X'
# msrs-devsim's options are also config keys devsim.NAME (bad value: refused).
expect "devsim.samples read from config" 2 "$bin/msrs-devsim" -X devsim.samples=xml
contains "devsim.samples checked" "--samples 'xml': expected binary or none"
expect "tail without topic" 2 "$bin/msrs-tail" --log "sqlite:$tmp/a.db"; contains "tail without topic" "--topic is required"
expect "tail without log" 2 env -u MSRS_LOG "$bin/msrs-tail" --topic nodes; contains "tail without log" "no log configured"
expect "bad --from" 2 "$bin/msrs-tail" --log "sqlite:$tmp/a.db" --topic nodes --from yesterday

printf 'log = sqlite:%s/from-file.db\nsource = cli-test\n' "$tmp" >"$tmp/ok.conf"
printf 'log = sqlite:%s/x.db\nnot a pair\n' "$tmp" >"$tmp/bad.conf"
expect "bad config file" 2 "$bin/msrs" --config "$tmp/bad.conf" emit SyncNow '{"node_id":"n"}'
contains "bad config names file:line" "$tmp/bad.conf:2: expected 'key = value'"
expect "emit via config file" 0 "$bin/msrs" --config "$tmp/ok.conf" emit SyncNow '{"node_id":"n1"}'
[ -f "$tmp/from-file.db" ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: config file log not used"; }
expect "env overrides file" 0 env MSRS_LOG="sqlite:$tmp/from-env.db" "$bin/msrs" --config "$tmp/ok.conf" emit SyncNow '{"node_id":"n2"}'
[ -f "$tmp/from-env.db" ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: MSRS_LOG did not override the file"; }
expect "--log overrides env" 0 env MSRS_LOG="sqlite:$tmp/from-env.db" "$bin/msrs" --log "sqlite:$tmp/from-flag.db" emit SyncNow '{"node_id":"n3"}'
[ -f "$tmp/from-flag.db" ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: --log did not override MSRS_LOG"; }
expect "tail reads source from -X" 0 "$bin/msrs-tail" --config "$tmp/ok.conf" --topic commands
contains "ce_source from config" '"source":"cli-test"'
expect "kafka property passed through and checked" 2 "$bin/msrs-tail" --log kafka:127.0.0.1:1 -X kafka.fetch.wait.max.ms=never --topic nodes
contains "librdkafka names the property" "kafka.fetch.wait.max.ms=never"
expect "unknown record type" 2 "$bin/msrs" --log "sqlite:$tmp/a.db" emit NoSuchRecord '{}'
contains "unknown record type" "unknown record type 'NoSuchRecord'"
expect "bad field" 1 "$bin/msrs" --log "sqlite:$tmp/a.db" emit NodeRegistered '{"node_id":"n","max_devices":"many"}'
contains "bad field named" "max_devices: expected a 32-bit integer, got string"
printf '{"node_id":"ok1"}\n{not json\n{"node_id":"ok2"}\n' >"$tmp/in.jsonl"
expect "bad line keeps the good ones" 1 "$bin/msrs" --log "sqlite:$tmp/b.db" emit NodeRegistered - <"$tmp/in.jsonl"
contains "bad line named" "stdin:2:"
contains "good lines acknowledged" "2 acknowledged, 1 refused"
expect "tail the good ones" 0 "$bin/msrs-tail" --log "sqlite:$tmp/b.db" --topic nodes
[ "$(grep -c '"node_id":"ok' <<<"$out")" -eq 2 ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: expected 2 records, got: $out"; }
# Typed lines (msrs emit -) and msrs-replay folding them into state.
cat >"$tmp/typed.jsonl" <<'JSONL'
{"type":"DeviceRegistered","value":{"device_id":"d1","node_id":"n1"}}
{"type":"CollectionRequested","value":{"session_id":"s1","min_group":1}}
{"type":"CollectionStarted","value":{"session_id":"s1","start_at_ns":5,"device_ids":["d1"]}}
{"type":"NoSuchType","value":{}}
JSONL
expect "typed lines, one bad" 1 "$bin/msrs" --log "sqlite:$tmp/c.db" emit - <"$tmp/typed.jsonl"
contains "typed lines acknowledged" "3 acknowledged, 1 refused"
expect "replay" 0 "$bin/msrs-replay" --log "sqlite:$tmp/c.db" --compact
state=$(/usr/bin/python3 -c 'import json,sys; s=json.loads(sys.argv[1]); print(s["sessions"]["s1"]["state"], s["devices"]["d1"]["connected"], s["records"])' "$out")
[ "$state" = "recording True 3" ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: replay state: $state"; }
# Replay is deterministic: the same log gives byte-identical output.
a=$("$bin/msrs-replay" --log "sqlite:$tmp/c.db"); b=$("$bin/msrs-replay" --log "sqlite:$tmp/c.db")
[ "$a" = "$b" ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: replay output differs between runs"; }
# Session ids are checked, never cut short (64 characters is one too many).
long_id=$(printf 's%.0s' $(seq 64))
expect "session id too long" 2 "$bin/msrs" --log "sqlite:$tmp/d.db" session start "$long_id"
contains "session id too long named" "expected 1-63 characters"
expect "session id with a slash" 2 "$bin/msrs" --log "sqlite:$tmp/d.db" session start "a/b"
# --json-ns-strings: ns fields as strings, exact where a double is not (jq 1.6, JavaScript)
expect "emit a batch" 0 "$bin/msrs" --log "sqlite:$tmp/e.db" emit SensorSampleBatch \
  '{"device_id":"d","stream_id":"s","seq":0,"channels":1,"device_time_ns":[1796268250953780195],"master_time_ns":[1796268250953780197],"values":[1.5]}'
ns=$("$bin/msrs-tail" --log "sqlite:$tmp/e.db" --topic samples --json-ns-strings |
  /usr/bin/python3 -c 'import json,sys; v=json.loads(sys.stdin.read())["value"]; print(json.dumps([v["master_time_ns"][0], v["device_time_ns"][0], v["seq"]]))')
[ "$ns" = '["1796268250953780197", "1796268250953780195", 0]' ] && pass=$((pass+1)) ||
  { fail=$((fail+1)); echo "FAIL: --json-ns-strings: $ns"; }
echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
