#!/bin/sh
# Benchmarks, printed as the Markdown tables of the README.
#   scripts/bench.sh [RUNS]   (default 3 runs of each; medians are reported)
# 1. Whole studies in cohort-sim, S_Agg, GROUP BY region, 10,000 and 100,000
#    tokens: setup (provisioning the fleet) and the study, wall and CPU,
#    resident memory per token at rest, bytes through the service.
# 2. The token's own costs per contribution and per aggregated tuple, as
#    ratios to bare libsodium operations measured in the same run
#    (tests/bench/bench_token.c).
# 3. The token's persistent store: insert and full-scan rates of 100,000
#    rows in a software token, as ratios to raw file I/O plus AEAD on the
#    same bytes, and the space per row (tests/bench/bench_store.c).
# 4. Documents of 4 KiB and 16 MiB written and read through the token, in
#    memory and as a software token on disk, as ratios to secretstream on
#    the same data (tests/bench/bench_doc.c).
# 5. The token links: GetInfo round trips and a 1 MiB document written and
#    read back, in process, through the USB framing in memory, through the
#    emulator (cohort-tokend on a unix socket) and through libusb on an
#    emulated USB device, as ratios to in process (tests/bench/bench_usb.c).
#    The libusb figures are umockdev's: its preload answers the usbdevfs
#    ioctls over a unix socket from a thread of the benchmark, with no bus,
#    so they are an upper bound on the host side's overhead, not a token's
#    speed on USB.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
build=${COHORT_BUILD:-$root/build}
sql="SELECT region, COUNT(*), AVG(heart_rate) FROM health GROUP BY region"

field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "Machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $(date -u +%Y-%m-%d)"
echo
echo "| tokens | setup wall s | study wall s | study CPU s | per token (study CPU) | bytes at rest per token | service bytes in / out | levels |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
for n in 10000 100000; do
    out=$(mktemp)
    for r in $(seq 1 "$runs"); do
        "$build/sim/cohort-sim" --tokens "$n" --seed "$r" --json --no-progress --sql "$sql" >>"$out"
        echo >>"$out"
    done
    sw=$(field setup_wall_s <"$out" | median)
    w=$(field study_wall_s <"$out" | median)
    c=$(field study_cpu_s <"$out" | median)
    rest=$(field rest_bytes_per_token <"$out" | median)
    bin=$(field bytes_in <"$out" | median)
    bout=$(field bytes_out <"$out" | median)
    lv=$(field levels <"$out" | median)
    per=$(awk -v c="$c" -v n="$n" 'BEGIN {printf "%.0f us", c / n * 1e6}')
    echo "| $n | $sw | $w | $c | $per | $rest | $bin / $bout | $lv |"
    [ "$(grep -c '"ok":true' "$out")" = "$runs" ] || { echo "a benchmark run did not match its ground truth" >&2; exit 1; }
    rm -f "$out"
done
echo
"$build/tests/bench/bench_token"
echo
"$build/tests/bench/bench_store"
echo
"$build/tests/bench/bench_doc"
echo
"$build/tests/bench/bench_usb"
