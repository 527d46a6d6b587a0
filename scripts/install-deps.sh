#!/bin/sh
# Installs the Debian 12 packages Cohort needs to build and test (curl: the
# end-to-end tests talk to the agent's HTTP API with it), if any is
# missing. Run as root (or with sudo). Does nothing when all are present.
# --papers: also what papers/*/run.sh needs to redraw the reproductions'
# plots (gnuplot without X, Python 3).
set -eu
PKGS="build-essential cmake pkg-config protobuf-c-compiler libprotobuf-c-dev libsodium-dev
libcmocka-dev libnng-dev libusb-1.0-0-dev umockdev libumockdev-dev openssl curl"
if [ "${1:-}" = "--papers" ]; then
    PKGS="$PKGS gnuplot-nox python3"
fi
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "cohort: installing missing Debian packages:$missing"
if [ "$(id -u)" != 0 ]; then
    echo "cohort: run this as root, or run: sudo apt-get install -y$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq $missing >/dev/null
