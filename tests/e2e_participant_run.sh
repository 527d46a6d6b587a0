#!/bin/sh
# End to end: the real cohort-participant run refuses a command line it
# cannot work with before it opens a token or dials anything: a bad
# address, tls+tcp:// without --ca, a missing or absent token directory,
# a bad --token (exit 1, usage); and a directory that is not a token, a
# token that is not plugged in or an emulator that is not there (exit 3).
#
#   e2e_participant_run.sh BINARY
set -eu
bin=${1:?usage: e2e_participant_run.sh BINARY}
work=$(mktemp -d "${TMPDIR:-/tmp}/cohort-e2e-run.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
out=$work/out
err=$work/err
mkdir "$work/empty"

fail() {
    echo "FAIL: $*" >&2
    echo "--- stdout" >&2
    cat "$out" >&2 || true
    echo "--- stderr" >&2
    cat "$err" >&2 || true
    exit 1
}

# run STATUS ARGS...: run the binary, which must exit with STATUS (in at most 20 seconds).
run() {
    want=$1
    shift
    set +e
    timeout 20 "$bin" "$@" >"$out" 2>"$err"
    got=$?
    set -e
    [ "$got" = "$want" ] || fail "cohort-participant $* exited $got, expected $want"
}

has() {
    grep -qF -- "$2" "$1" || fail "expected '$2' in $(basename "$1")"
}

run 0 run --help
has "$out" "usage: cohort-participant run --connect URL"

run 1 run --connect http://example.org:80 --dir "$work/empty"
has "$err" "http://example.org:80: use tls+tcp://HOST:PORT, tcp://HOST:PORT or ipc:///PATH"

run 1 run --connect tcp://no-port-here --dir "$work/empty"
has "$err" "tcp://no-port-here: not a usable address"

run 1 run --connect tls+tcp://127.0.0.1:4433 --dir "$work/empty"
has "$err" "a tls+tcp:// address needs --ca"

run 1 run --connect tls+tcp://127.0.0.1:4433 --ca "$work/no-such-ca.pem" --dir "$work/empty"
has "$err" "no-such-ca.pem: not a usable PEM CA certificate"

run 1 run --connect tcp://127.0.0.1:4433 --ca "$work/no-such-ca.pem" --dir "$work/empty"
has "$err" "--ca and --server-name are for tls+tcp:// addresses only"

run 1 run --connect "ipc://$work/service.sock"
has "$err" "give the token directories with --dir DIR or --dirs-from FILE"

run 1 run --connect "ipc://$work/service.sock" --dir "$work/absent"
has "$err" "$work/absent: no such directory"

run 1 run --dir "$work/empty"
has "$err" "give the service's address with --connect URL"

run 1 run --connect "ipc://$work/service.sock" --dir "$work/empty" --max-backoff 0
has "$err" "--max-backoff: expected a whole number from 1 to 3600"

printf '# tokens\n\n%s\n' "$work/absent" >"$work/dirs"
run 1 run --connect "ipc://$work/service.sock" --dirs-from "$work/dirs"
has "$err" "$work/absent: no such directory"

run 1 run --connect "ipc://$work/service.sock" --dirs-from "$work/no-such-list"
has "$err" "--dirs-from $work/no-such-list"

run 3 run --connect "ipc://$work/service.sock" --dir "$work/empty"
has "$err" "cannot open a token: $work/empty: not a Cohort token"
[ ! -e "$work/service.sock" ] || fail "the command made the service's socket"

# --token: checked before anything else, one token for one agent, and a
# token that is not there stops the command (exit 3) naming it.
run 1 --token nfc run --connect "ipc://$work/service.sock" --dir "$work/empty"
has "$err" "--token: an unknown kind of token (expected usb, usb:VID:PID, emulator:PATH or soft:DIR)"
run 1 run --token usb --connect "ipc://$work/service.sock" --dir "$work/empty" --dir "$work/empty"
has "$err" "--token names one token: give one --dir with it"
run 3 run --token usb:1209:c07b --connect "ipc://$work/service.sock" --dir "$work/empty"
has "$err" "cannot open the token usb:1209:c07b"
run 3 --token "emulator:$work/no-emulator.sock" run --connect "ipc://$work/service.sock" \
    --dir "$work/empty"
has "$err" "cannot open the token emulator:$work/no-emulator.sock"
run 3 --token "soft:$work/empty" tables --dir "$work/empty"
has "$err" "cannot open the token soft:$work/empty: $work/empty: not a Cohort token"
[ ! -e "$work/service.sock" ] || fail "the command made the service's socket"

echo "e2e_participant_run: ok"
