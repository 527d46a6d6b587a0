#!/bin/sh
# End to end: cohort-participant with --token, on a token that is not in
# its process, as scripts/token-demo.sh shows it.
#
#   e2e_token_link.sh BUILD_DIR EXAMPLES_DIR
#
# Through cohort-tokend (emulator:PATH): init, import and tables; a second
# host is told the emulator is busy; the HTTP API answers 503 while the
# emulator is stopped and 200 once it is back, without a restart of its
# own; the token keeps its rows across the emulator's restarts. Through
# libusb and an emulated USB device (usb-bridge): init, import, tables; a
# token with other ids is not found; an unplug in the middle of an import
# says why and leaves the token as it was. Exit statuses and sentences exact.
set -eu
build=$(cd "${1:?usage: e2e_token_link.sh BUILD_DIR EXAMPLES_DIR}" && pwd)
ex=$(cd "${2:?usage: e2e_token_link.sh BUILD_DIR EXAMPLES_DIR}" && pwd)
bin=$build/participant/cohort-participant
tokend=$build/tokend/cohort-tokend
bridge=$build/tests/usb-bridge
work=$(mktemp -d "${TMPDIR:-/tmp}/cohort-e2e-link.XXXXXX")
out=$work/out
err=$work/err
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
cd "$work"

fail() {
    echo "FAIL: $*" >&2
    echo "--- stdout" >&2
    cat "$out" >&2 || true
    echo "--- stderr" >&2
    cat "$err" >&2 || true
    exit 1
}
# run STATUS PROGRAM ARGS...: the program must exit with STATUS (in 60 s).
run() {
    want=$1
    shift
    set +e
    timeout 60 "$@" >"$out" 2>"$err"
    got=$?
    set -e
    [ "$got" = "$want" ] || fail "$* exited $got, expected $want"
}
has() { grep -qF -- "$2" "$1" || fail "expected '$2' in $(basename "$1")"; }
start_tokend() {
    rm -f token.sock
    "$tokend" --dir device --socket token.sock "$@" >>tokend.out 2>>tokend.log &
    tokend_pid=$!
    pids="$pids $tokend_pid"
    for _ in $(seq 200); do [ -S token.sock ] && return 0; sleep 0.05; done
    fail "cohort-tokend did not come up: $(cat tokend.log)"
}
stop_tokend() {
    kill "$tokend_pid"
    wait "$tokend_pid" 2>/dev/null || true
}
http_code() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v1/identity"; }

# --- the emulator --------------------------------------------------------
emu=emulator:token.sock
run 3 "$bin" --token "$emu" tables --dir alice
has "$err" "tables: cannot open the token $emu: no token emulator at token.sock"
[ ! -e alice ] || fail "a failed open made the owner's directory"

start_tokend --create
run 0 "$bin" --token "$emu" init --dir alice --subject alice
has "$out" "the token $emu has its keys; its files go in alice"
has "$out" "certificate request:  alice/token.csr"
[ -s alice/token.csr ] || fail "no certificate request"
run 2 "$bin" --token "$emu" init --dir alice
has "$err" "init: alice/token.csr exists already: give another --dir"
run 0 "$bin" --token "$emu" import --dir alice --table health "$ex/health.csv"
has "$out" "imported 5 rows into health"
run 0 "$bin" --token "$emu" tables --dir alice
has "$out" "health           5  catalog"

# The HTTP API holds the emulator: a second host is told it is busy.
"$bin" --token "$emu" http --dir alice --listen 127.0.0.1:0 >http.out 2>http.log &
http_pid=$!
pids="$pids $http_pid"
port=""
for _ in $(seq 200); do
    port=$(sed -n 's/.*serving the API on port \([0-9]*\).*/\1/p' http.log)
    [ -n "$port" ] && break
    sleep 0.05
done
[ -n "$port" ] || fail "the HTTP API did not start: $(cat http.log)"
[ "$(http_code)" = 200 ] || fail "GET /v1/identity with the emulator up"
run 3 "$bin" --token "$emu" tables --dir alice
has "$err" "cannot open the token $emu: token emulator at token.sock: busy: it is serving another host"

# The emulator stops: 503; it is back: 200, from the same HTTP agent.
stop_tokend
[ "$(http_code)" = 503 ] || fail "GET /v1/identity with the emulator stopped"
start_tokend
[ "$(http_code)" = 200 ] || fail "GET /v1/identity once the emulator is back"
has http.log "GET /v1/identity 503"
kill "$http_pid"
wait "$http_pid" 2>/dev/null || true

# Its rows survived two restarts of the emulator.
run 0 "$bin" --token "$emu" tables --dir alice
has "$out" "health           5  catalog"
stop_tokend

# --- USB: libusb and an emulated device ------------------------------------
run 0 "$bridge" --token usb-device --create -- "$bin" --token usb init --dir bob --subject bob
has "$out" "the token usb has its keys; its files go in bob"
[ -s bob/token.csr ] || fail "no certificate request through USB"
run 0 "$bridge" --token usb-device -- "$bin" --token usb import --dir bob --table health \
    "$ex/health.jsonl"
has "$out" "imported 3 rows into health"
run 0 "$bridge" --token usb-device -- "$bin" --token usb:1209:C07B tables --dir bob
has "$out" "health           3  catalog"
run 3 "$bridge" --token usb-device -- "$bin" --token usb:1209:beef tables --dir bob
has "$err" "cannot open the token usb:1209:beef: token 1209:beef: no token found (not plugged in, or unplugged)"

# Unplugged in the middle of an import: the owner is told why, and nothing
# of the file is in the token (an import is all or nothing).
awk 'BEGIN { print "participant,age,sex,region,date,steps,heart_rate,weight,age_band";
             for (i = 0; i < 20000; i++) printf "%d,40,F,R001,2026-03-01,%d,70,60.5,40-49\n", i, i }' \
    >big.csv
run 3 "$bridge" --token usb-device --unplug-at 3 --replug-after 60000 -- \
    "$bin" --token usb import --dir bob --table health big.csv
has "$err" "import: nothing was imported: the token link failed: no token found (not plugged in, or unplugged)"
has "$err" "usb-bridge: unplugged the token (after 3 OUT frames)"
run 0 "$bridge" --token usb-device -- "$bin" --token usb tables --dir bob
has "$out" "health           3  catalog"

echo "e2e_token_link: ok"
