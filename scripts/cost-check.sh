#!/bin/bash
# The cost model (querier/qr_cost.c) against the simulator: every protocol
# at 1,000, 10,000 and 100,000 tokens, over 1 group (no GROUP BY), 16
# (sex, age_band: 14 seen), 128 (region) and 1,024 (region, age_band: about
# 1,000 seen, with 1 MiB tokens), one cohort-sim --json at a time. Prints
# predicted/measured for each quantity cohort-sim reports and exits 1 when
# one leaves its bound: a factor of 1.5 (bytes, ciphertexts, tasks, steps,
# virtual seconds, token RAM), 2 for the study's CPU seconds; or when the
# model and the run disagree on whether the study can be done at all.
#
# For ed_hist both sides add the histogram study (cohort-sim reports its
# bytes, tasks, time and contributions), except steps and CPU, which the
# simulator measures for the main study only: those compare the model's
# main-study share.
#
# usage: scripts/cost-check.sh [--tokens "1000 10000 100000"] [--build DIR] [--keep DIR]
#   --keep DIR  keeps each run's JSON (and stderr) there; a file already
#               there is reused instead of running the study again.
# Environment: COST_CHECK_MAX_CTS (default 30000000) skips a run whose
# collection alone would exceed that many ciphertexts (c_noise sends
# buckets x tuples per participant; the simulator's service holds each).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=$here/build
tokens_list="1000 10000 100000"
keep=""
while [ $# -gt 0 ]; do
    case $1 in
    --tokens) tokens_list=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "cost-check: unknown argument $1" >&2; exit 2 ;;
    esac
done
sim=$build/sim/cohort-sim
[ -x "$sim" ] || { echo "cost-check: no $sim (build first)" >&2; exit 2; }
command -v python3 > /dev/null || { echo "cost-check: python3 is needed" >&2; exit 2; }
max_cts=${COST_CHECK_MAX_CTS:-30000000}
if [ -n "$keep" ]; then
    mkdir -p "$keep"
    out=$keep
else
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi

declare -A sql=(
    [1]="SELECT COUNT(*), AVG(heart_rate) FROM health"
    [14]="SELECT sex, age_band, COUNT(*), AVG(heart_rate) FROM health GROUP BY sex, age_band"
    [128]="SELECT region, COUNT(*), AVG(heart_rate) FROM health GROUP BY region"
    [1000]="SELECT region, age_band, COUNT(*), AVG(heart_rate) FROM health GROUP BY region, age_band"
)
declare -A max_groups=([1]=1 [14]=16 [128]=128 [1000]=1024)
list=$out/runs.txt
: > "$list"
for t in $tokens_list; do
    for g in 1 14 128 1000; do
        for p in s_agg rnf_noise c_noise ed_hist shuffle; do
            f=$out/$p-$g-$t.json
            ram=65536
            [ "$g" = 1000 ] && ram=1048576
            if [ "$p" = c_noise ] && [ $((t * ${max_groups[$g]})) -gt "$max_cts" ]; then
                echo "$p $g $t skip $((t * ${max_groups[$g]}))" >> "$list"
                continue
            fi
            if [ ! -s "$f" ]; then
                echo "cost-check: $p, $g group(s), $t tokens" >&2
                rc=0
                "$sim" --tokens "$t" --seed 7 --threads 2 --no-progress --token-ram "$ram" \
                    --protocol "$p" --sql "${sql[$g]}" --json > "$f.tmp" 2> "$out/$p-$g-$t.err" || rc=$?
                mv "$f.tmp" "$f"
                echo "$rc" > "$out/$p-$g-$t.rc"
            fi
            echo "$p $g $t run $(cat "$out/$p-$g-$t.rc" 2> /dev/null || echo 0)" >> "$list"
        done
    done
done

python3 - "$out" "$list" << 'EOF'
import json, sys

out, listing = sys.argv[1], sys.argv[2]
keys = ['bytes', 'ciphertexts', 'tasks', 'steps', 'seconds', 'cpu', 'ram']
bound = {k: 1.5 for k in keys}
bound['cpu'] = 2.0
bad, skipped, infeasible, worst = [], [], [], {k: 1.0 for k in keys}
print('%-9s %6s %7s  %s  %s' % ('protocol', 'groups', 'tokens',
      ' '.join('%8s' % k for k in keys), 'verdict'))
for line in open(listing):
    p, g, t, what, rc = line.split()
    name = '%s-%s-%s' % (p, g, t)
    if what == 'skip':
        skipped.append('%s at %s groups, %s tokens: %s ciphertexts to collect (COST_CHECK_MAX_CTS)'
                       % (p, g, t, rc))
        continue
    try:
        d = json.load(open('%s/%s.json' % (out, name)))
    except (OSError, ValueError):
        err = open('%s/%s.err' % (out, name)).read().strip()
        bad.append('%s: no report (exit %s): %s' % (name, rc, err))
        print('%-9s %6s %7s  %s  NO REPORT' % (p, g, t, ' ' * 62))
        continue
    pr, s, h = d['predicted'], d['service'], d.get('histogram')
    if d['failed'] or not pr['feasible']:
        agree = d['failed'] and not pr['feasible']
        why = d['error'][:110]
        (infeasible if agree else bad).append('%s: model %s, run %s: %s' % (
            name, 'infeasible' if not pr['feasible'] else 'feasible',
            'failed' if d['failed'] else 'succeeded', why))
        print('%-9s %6s %7s  %s  %s' % (p, g, t, ' ' * 62,
              'infeasible, as predicted' if agree else 'DISAGREE'))
        continue
    m = dict(bytes=s['bytes_in'] + s['bytes_out'], ciphertexts=s['ciphertexts'],
             tasks=s['partitions'], steps=s['levels'], seconds=d['time']['virtual_s'],
             cpu=d['time']['study_cpu_s'], ram=d['memory']['peak_arena'])
    q = dict(bytes=pr['bytes'], ciphertexts=pr['ciphertexts'], tasks=pr['tasks'],
             steps=pr['steps'], seconds=pr['seconds'], cpu=pr['token_seconds'],
             ram=pr['token_ram'])
    if h:
        ph = pr.get('histogram', {})
        m['bytes'] += h['bytes']
        m['tasks'] += h['tasks']
        m['seconds'] += h['virtual_s']
        m['ciphertexts'] += h['contributions'] * s['ciphertexts'] // max(1, s['contributions'])
        q['steps'] -= ph.get('steps', 0)
        q['cpu'] -= ph.get('token_seconds', 0)
    r = {k: q[k] / m[k] if m[k] else float('inf') for k in keys}
    out_of = [k for k in keys if not (1 / bound[k] <= r[k] <= bound[k])]
    for k in keys:
        worst[k] = max(worst[k], r[k], 1 / r[k] if r[k] else float('inf'))
    if out_of:
        bad.append('%s: %s' % (name, ', '.join('%s %.3f' % (k, r[k]) for k in out_of)))
    print('%-9s %6s %7s  %s  %s' % (p, g, t, ' '.join('%8.3f' % r[k] for k in keys),
          'OUT: ' + ','.join(out_of) if out_of else 'ok'))
print()
print('worst factor  ' + '  '.join('%s %.2f' % (k, worst[k]) for k in keys))
for x in infeasible:
    print('infeasible    ' + x)
for x in skipped:
    print('skipped       ' + x)
for x in bad:
    print('FAILED        ' + x)
sys.exit(1 if bad else 0)
EOF
