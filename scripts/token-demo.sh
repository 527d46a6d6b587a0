#!/bin/sh
# A token that is not in this process, as the README shows it: the owner's
# commands through cohort-tokend (the USB protocol on a local socket), then
# through libusb and an emulated USB device (tests' usb-bridge, umockdev),
# then what the owner sees when the token is missing or busy. Every
# command with what it printed and, when it is not 0, its exit status.
#   scripts/token-demo.sh   (builds first, as demo.sh does)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
[ -n "${COHORT_NO_BUILD:-}" ] || "$root/scripts/install-deps.sh"
[ -n "${COHORT_NO_BUILD:-}" ] || "$root/scripts/build.sh"
build=${COHORT_BUILD:-$root/build}
bin=$build/participant/cohort-participant
tokend=$build/tokend/cohort-tokend
bridge=$build/tests/usb-bridge
work=$(mktemp -d "${TMPDIR:-/tmp}/cohort-token.XXXXXX")
pid=""
cleanup() {
    [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
ln -s "$root/examples" "$work/examples"
cd "$work"

# say PROGRAM ARGS...: print the command as typed, run it, say how it ended.
say() {
    name=$1
    shift
    printf '$ %s' "$name"
    for a in "$@"; do
        [ "$a" != "$bin" ] || a=cohort-participant
        case $a in
        *[\ \'\<\>]*) printf " \"%s\"" "$a" ;;
        *) printf ' %s' "$a" ;;
        esac
    done
    printf '\n'
}
run() { # NAME PATH ARGS...
    name=$1
    path=$2
    shift 2
    say "$name" "$@"
    set +e
    "$path" "$@" 2>&1
    rc=$?
    set -e
    [ "$rc" = 0 ] || echo "[exit status $rc]"
    echo
}

# 1. The emulator: a blank token, made as a maker would, served on a socket.
say cohort-tokend --dir device --socket token.sock --create "&"
"$tokend" --dir device --socket token.sock --create 2>tokend.log &
pid=$!
for _ in $(seq 100); do [ -S token.sock ] && break; sleep 0.05; done
sed -n 1p tokend.log
echo
run cohort-participant "$bin" --token emulator:token.sock init --dir alice --subject alice
run cohort-participant "$bin" --token emulator:token.sock import --dir alice --table health \
    examples/health.csv
run cohort-participant "$bin" --token emulator:token.sock tables --dir alice
# A second host while the first holds the token.
"$bin" --token emulator:token.sock http --dir alice --listen 127.0.0.1:0 >http.log 2>&1 &
hpid=$!
for _ in $(seq 100); do grep -q listening http.log 2>/dev/null && break; sleep 0.05; done
run cohort-participant "$bin" --token emulator:token.sock tables --dir alice
kill "$hpid"
wait "$hpid" 2>/dev/null || true
kill "$pid"
wait "$pid" 2>/dev/null || true
pid=""
run cohort-participant "$bin" --token emulator:token.sock tables --dir alice

# 2. USB: the same commands through libusb, to an emulated device whose
#    firmware is the token core (usb-bridge runs the command against it).
run usb-bridge "$bridge" --token usb-device --create -- "$bin" --token usb init --dir bob \
    --subject bob
run usb-bridge "$bridge" --token usb-device -- "$bin" --token usb import --dir bob \
    --table health examples/health.jsonl
run usb-bridge "$bridge" --token usb-device -- "$bin" --token usb:1209:beef tables --dir bob
run cohort-participant "$bin" --token usb tables --dir bob
