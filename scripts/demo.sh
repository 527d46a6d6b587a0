#!/bin/sh
# Quick start, step 1: install what is missing, build, and run a demo study
# in the simulator: 5,000 tokens answer a GROUP BY query; the researcher's
# result is printed, then what the querier service saw.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
build=${COHORT_BUILD:-$root/build}
sql="SELECT region, sex, COUNT(*), COUNT(DISTINCT participant), AVG(heart_rate), MAX(steps)
FROM health WHERE age >= 40 AND date BETWEEN '2026-01-01' AND '2026-06-30'
GROUP BY region, sex HAVING COUNT(DISTINCT participant) >= 10 ORDER BY region, sex LIMIT 20"
echo "cohort-sim --tokens 5000 --seed 7 --sql \"$sql\""
echo
exec "$build/sim/cohort-sim" --tokens 5000 --seed 7 --sql "$sql"
