#!/bin/bash
# The networked deployment's benchmark: scripts/deploy-local.sh --bench with
# 1,000 participant agents on loopback (10 processes of 100), over TLS and
# over plain TCP, RUNS times each, alternating, and the median of each
# figure. Builds first unless --no-build.
#   scripts/bench-deploy.sh [--participants N] [--runs R] [--no-build]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=1000
runs=3
build=1
while [ $# -gt 0 ]; do
    case $1 in
    --participants) n=$2; shift ;;
    --runs) runs=$2; shift ;;
    --no-build) build=0 ;;
    *) echo "bench-deploy: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$build" = 0 ] || { "$root/scripts/install-deps.sh"; "$root/scripts/build.sh" >/dev/null; }
out=$(mktemp -d "${TMPDIR:-/tmp}/cohort-bench.XXXXXX")
trap 'rm -rf "$out"' EXIT
for r in $(seq "$runs"); do
    for t in tls tcp; do
        flag=""
        [ "$t" = tcp ] && flag=--no-tls
        "$root/scripts/deploy-local.sh" --no-build --participants "$n" --per-process 100 \
            --bench $flag >"$out/$t.$r" 2>"$out/$t.$r.err" ||
            { cat "$out/$t.$r.err" >&2; exit 1; }
    done
done
# median FIELD-REGEX FILES...: the median of the first number after the label
median() {
    local label=$1; shift
    for f in "$@"; do sed -n "s/^$label:[^0-9]*\([0-9.]*\).*/\1/p" "$f"; done | sort -n |
        awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
field() { # label sed-expression files...
    local label=$1 expr=$2; shift 2
    for f in "$@"; do sed -n "s/^$label:$expr/\1/p" "$f"; done | sort -n |
        awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
echo "| transport | end to end s | collection participants/s | service peak MiB | held per ciphertext B | process growth per participant B | open fds | bytes in / out per participant |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for t in tls tcp; do
    files=("$out/$t".[0-9]*)
    files=("${files[@]/*.err/}")
    fs=()
    for f in "${files[@]}"; do [ -n "$f" ] && fs+=("$f"); done
    e2e=$(median "end to end" "${fs[@]}")
    rate=$(field "collection" '.*s, \([0-9]*\) participants.*' "${fs[@]}")
    peak=$(field "service memory" '.*MiB before the study, \([0-9]*\) MiB peak.*' "${fs[@]}")
    held=$(field "per ciphertext" '.*held \([0-9]*\) bytes.*' "${fs[@]}")
    grew=$(field "per ciphertext" '.*grew \([0-9]*\) bytes.*' "${fs[@]}")
    fds=$(field "service descriptors" '[^0-9]*\([0-9]*\) open.*' "${fs[@]}")
    bin=$(field "bytes per participant" '[^0-9]*\([0-9]*\) in.*' "${fs[@]}")
    bout=$(field "bytes per participant" '.* in, \([0-9]*\) out.*' "${fs[@]}")
    echo "| $t | $e2e | $rate | $peak | $held | $grew | $fds | $bin / $bout |"
done
echo
echo "($runs runs each, medians; $n participants, 100 agents per process)"
