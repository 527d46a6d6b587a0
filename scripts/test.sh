#!/bin/sh
# Quick start, step 2: install what is missing, build, and run every test
# (unit tests, the token purity check, simulated studies). Then the unit
# tests again under AddressSanitizer and UndefinedBehaviorSanitizer.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
build=${COHORT_BUILD:-$root/build}
"$root/scripts/build.sh"
(cd "$build" && ctest --output-on-failure -j2)
asan=${COHORT_ASAN_BUILD:-$root/build-asan}
COHORT_BUILD=$asan "$root/scripts/build.sh" -DCOHORT_SANITIZE=ON
(cd "$asan" && ctest --output-on-failure -j2 -LE slow)
