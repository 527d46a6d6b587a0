#!/bin/sh
# Reproduce the TODS 2016 comparison: install what is missing (as root),
# build, run the sweeps (sweep.py: results.csv, leakage.csv; about an hour
# on two cores, --quick for a minute) and draw the plots (plot.py:
# plots/*.svg). Arguments go to sweep.py.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
"$root/scripts/install-deps.sh" --papers
"$root/scripts/build.sh" >/dev/null
python3 "$here/sweep.py" "$@"
python3 "$here/plot.py"
