#!/bin/sh
# The owner's commands end to end, as the README shows them: a software
# token in a temporary directory, the sample files of examples/, and every
# command with what it printed and, when it is not 0, its exit status.
#   scripts/owner-demo.sh   (builds first, as demo.sh does)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
build=${COHORT_BUILD:-$root/build}
bin=$build/participant/cohort-participant
work=$(mktemp -d "${TMPDIR:-/tmp}/cohort-owner.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
ln -s "$root/examples" "$work/examples"
cd "$work"

# show ARGS...: print the command as typed, run it, say how it ended.
show() {
    printf '$ cohort-participant'
    for a in "$@"; do
        case $a in
        *[\ \'\<\>]*) printf " \"%s\"" "$a" ;;
        *) printf ' %s' "$a" ;;
        esac
    done
    printf '\n'
    set +e
    "$bin" "$@" 2>&1
    rc=$?
    set -e
    [ "$rc" = 0 ] || echo "[exit status $rc]"
    echo
}

show init --dir my-token --subject alice
show import --dir my-token --table health examples/health.csv
show import --dir my-token --table health examples/health.jsonl
show import --dir my-token --table bank_operations examples/bank_operations.csv
show import --dir my-token --table health examples/health_bad.csv
show tables --dir my-token
show rows --dir my-token --table health
show rows --dir my-token --table bank_operations --limit 3
show delete --dir my-token --table health --id 3
show delete --dir my-token --table health --where "steps IS NULL OR date < '2026-03-02'"
show policy set --dir my-token --allow-table health --allow-table bank_operations.amount \
    --allow-table bank_operations.merchant_category --min-participants 100 \
    --min-group-size 10 --require-dp --epsilon-per-study 0.5 --epsilon-total 2
show audit --dir my-token
