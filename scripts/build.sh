#!/bin/sh
# Configures and builds Cohort into build/ (or $COHORT_BUILD). Quiet when it
# works; prints the build log when it does not. Extra arguments go to cmake.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${COHORT_BUILD:-$root/build}
mkdir -p "$build"
if ! cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >"$build/configure.log" 2>&1; then
    cat "$build/configure.log" >&2
    exit 1
fi
if ! cmake --build "$build" -j"$(nproc)" >"$build/build.log" 2>&1; then
    cat "$build/build.log" >&2
    exit 1
fi
