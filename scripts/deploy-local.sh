#!/bin/bash
# A whole deployment on this machine, with real processes and sockets: an
# authority, one querier service (TLS on loopback), N participants (each a
# software token with synthetic data, several agents per process), and a
# researcher who runs a study. The result is checked against the ground
# truth computed from the same data.
#
#   scripts/deploy-local.sh [--participants N] [--per-process K] [--no-tls]
#                           [--kill-service] [--kill-agent] [--token-ram BYTES]
#                           [--keep DIR] [--sql "SQL"] [--protocol NAME]
#                           [--no-build] [--bench] [--usb K] [--tokend K]
#                           [--unplug]
#
# --protocol      the grouping protocol (s_agg, rnf_noise, c_noise, ed_hist,
#                 shuffle; auto by default); ed_hist runs its histogram study
#                 first, shuffle needs --token-ram of 16384 or more
# --kill-service  kill -9 the service in the middle of collection, and again
#                 in the middle of aggregation; it is restarted on its journal
# --kill-agent    kill -9 one agent process during aggregation: its tasks go to
#                 other tokens
# --bench         start every agent first, then time the study from submission,
#                 and report the service's peak memory and open descriptors
# --usb K         the last K participants reach their token through libusb and
#                 an emulated USB device (tests' usb-bridge: umockdev, the
#                 token core behind it), one agent process each
# --tokend K      the K participants before them reach theirs through a token
#                 emulator (cohort-tokend) on a local socket
# --unplug        the first USB token is unplugged in the middle of its first
#                 transfer of the study and plugged back in 1.5 s later, the
#                 first emulator is stopped before the study and started
#                 again 2 s into it, and the second emulator hangs (SIGSTOP)
#                 until its agent has found it does not answer: their agents
#                 must pause and resume
# Exit status 0 only when the researcher's result equals the ground truth.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
n=50
per=25
tls=1
kill_service=0
kill_agent=0
token_ram=4096
keep=""
build_first=1
bench=0
protocol=auto
n_usb=0
n_tokend=0
unplug=0
sql="SELECT sex, age_band, COUNT(*), SUM(steps), AVG(heart_rate), MAX(weight) FROM health GROUP BY sex, age_band"
while [ $# -gt 0 ]; do
    case $1 in
    --participants) n=$2; shift ;;
    --per-process) per=$2; shift ;;
    --no-tls) tls=0 ;;
    --kill-service) kill_service=1 ;;
    --kill-agent) kill_agent=1 ;;
    --token-ram) token_ram=$2; shift ;;
    --keep) keep=$2; shift ;;
    --sql) sql=$2; shift ;;
    --protocol) protocol=$2; shift ;;
    --no-build) build_first=0 ;;
    --bench) bench=1 ;;
    --usb) n_usb=$2; shift ;;
    --tokend) n_tokend=$2; shift ;;
    --unplug) unplug=1 ;;
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "deploy-local: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
case $n in '' | *[!0-9]*) echo "deploy-local: --participants needs a number" >&2; exit 2 ;; esac
case $per in '' | *[!0-9]* | 0) echo "deploy-local: --per-process needs a number > 0" >&2; exit 2 ;; esac
case $n_usb$n_tokend in *[!0-9]*) echo "deploy-local: --usb and --tokend need numbers" >&2; exit 2 ;; esac
# Participants 1..ns keep software tokens; the emulators' and the USB ones come after.
ns=$((n - n_usb - n_tokend))
if [ "$ns" -lt 1 ]; then
    echo "deploy-local: --usb and --tokend leave no participant with a software token" >&2
    exit 2
fi
if [ $((n_usb + n_tokend)) -gt 0 ] && [ "$bench" = 1 ]; then
    echo "deploy-local: --bench is for software tokens only" >&2
    exit 2
fi

if [ "$build_first" = 1 ]; then
    "$root/scripts/install-deps.sh"
    "$root/scripts/build.sh" >/dev/null
fi
build=${COHORT_BUILD:-$root/build}
authority=$build/authority/cohort-authority
querier=$build/querier/cohort-querier
participant=$build/participant/cohort-participant
sim=$build/sim/cohort-sim
tokend=$build/tokend/cohort-tokend
bridge=$build/tests/usb-bridge

if [ -n "$keep" ]; then
    work=$keep
    mkdir -p "$work"
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/cohort-deploy.XXXXXX")
fi
pids=()
spids=() # the agents of tokens elsewhere (emulators, USB): one process each
cleanup() {
    # The agents of tokens elsewhere first, gently: a bridge passes SIGTERM
    # on to its agent, and removes its emulated device when the agent is done.
    for p in "${spids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 60); do
        alive=0
        for p in "${spids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.05
    done
    for p in "${pids[@]}" "${spids[@]}" ${service_pid:-}; do kill -9 "$p" 2>/dev/null || true; done
    for f in "$work"/participants/*/tokend.pid; do
        [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    [ -n "$keep" ] || rm -rf "$work"
}
trap cleanup EXIT
log() { printf '[deploy] %s\n' "$*" >&2; }
ms() { echo $(($(date +%s%N) / 1000000)); }
t0=$(ms)

scheme=tcp
[ "$tls" = 1 ] && scheme=tls+tcp
pick_port() { port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000)); url=$scheme://127.0.0.1:$port; }
pick_port

# --- the authority (manufacturer of tokens and ethics board, in one) ---------
"$authority" init --dir "$work/authority" --subject "Local authority" >/dev/null

# --- TLS for the service: a self-signed certificate for 127.0.0.1 ------------
tls_serve=()
tls_dial=()
if [ "$tls" = 1 ]; then
    mkdir -p "$work/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$work/tls/service.key" -out "$work/tls/service.crt" 2>/dev/null
    cat "$work/tls/service.crt" "$work/tls/service.key" >"$work/tls/service.pem"
    chmod 600 "$work/tls/service.pem" "$work/tls/service.key"
    tls_serve=(--tls-cert "$work/tls/service.pem")
    tls_dial=(--ca "$work/tls/service.crt" --server-name localhost)
fi

# --- the service ---------------------------------------------------------------
mkdir -p "$work/service"
start_service() { # [first]: on the first start the port may be taken: try others
    if [ "${1:-}" = first ]; then
        for _ in 1 2 3 4 5; do
            start_service_once && return 0
            pick_port
        done
        return 1
    fi
    start_service_once
}
start_service_once() {
    "$querier" serve --listen "$url" "${tls_serve[@]}" --journal "$work/service/journal" \
        --authority "$work/authority/authority.cert" --token-ram "$token_ram" --task-timeout 3 \
        >>"$work/service/log" 2>&1 &
    service_pid=$!
    for _ in $(seq 100); do
        if "$querier" status --connect "$url" "${tls_dial[@]}" >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$service_pid" 2>/dev/null || { cat "$work/service/log" >&2; return 1; }
        sleep 0.1
    done
    echo "deploy-local: the service did not come up" >&2
    return 1
}
start_service first
log "service on $url (pid $service_pid)"

# --- participants: a token each, certified, with data and consent --------------
mkdir -p "$work/data" "$work/participants"
"$sim" --tokens "$n" --seed 7 --export-csv "$work/data"
# kind_of I: soft, tokend or usb
kind_of() {
    if [ "$1" -le "$ns" ]; then echo soft
    elif [ "$1" -le $((ns + n_tokend)) ]; then echo tokend
    else echo usb; fi
}
# start_tokend I: participant I's emulator, serving the token in p$I/device
start_tokend() {
    local d=$work/participants/p$1
    mkdir -p "$d"
    rm -f "$d/tokend.sock"
    "$tokend" --dir "$d/device" --socket "$d/tokend.sock" --create >>"$d/tokend.log" 2>&1 &
    echo $! >"$d/tokend.pid"
    for _ in $(seq 100); do [ -S "$d/tokend.sock" ] && return 0; sleep 0.05; done
    echo "deploy-local: the token emulator of participant $1 did not come up" >&2
    cat "$d/tokend.log" >&2
    return 1
}
# pcli I ARGS...: cohort-participant ARGS on participant I's token, wherever it is
pcli() {
    local i=$1 d=$work/participants/p$1
    shift
    case $(kind_of "$i") in
    soft) "$participant" "$@" ;;
    tokend) "$participant" --token "emulator:$d/tokend.sock" "$@" ;;
    usb)
        mkdir -p "$d"
        "$bridge" --token "$d/device" --create -- "$participant" --token usb "$@"
        ;;
    esac
}
for i in $(seq "$n"); do
    d=$work/participants/p$i
    [ "$(kind_of "$i")" != tokend ] || start_tokend "$i"
    pcli "$i" init --dir "$d" --subject "participant $i" >/dev/null
    "$authority" certify-token --dir "$work/authority" --csr "$d/token.csr" \
        --out "$d/bundle" >/dev/null
    pcli "$i" provision --dir "$d" "$d/bundle" >/dev/null
    pcli "$i" import --dir "$d" --table health "$work/data/p$i.csv" >/dev/null
    pcli "$i" policy set --dir "$d" --allow-table health >/dev/null
done
log "$n participants provisioned, with data and consent ($ns software tokens, $n_tokend emulators, $n_usb on USB)"

# --- the researcher --------------------------------------------------------------
mkdir -p "$work/researcher"
"$querier" keygen --out "$work/researcher/alice" --subject "Alice (local study)" >/dev/null
"$authority" certify-researcher --dir "$work/authority" --csr "$work/researcher/alice.csr" \
    --out "$work/researcher/alice.cert" --table health --days 30 >/dev/null

# --- agents: several per process -------------------------------------------------
start_agents() { # first last
    local args=()
    for i in $(seq "$1" "$2"); do args+=(--dir "$work/participants/p$i"); done
    "$participant" run --connect "$url" "${tls_dial[@]}" "${args[@]}" \
        >>"$work/agents-$1.log" 2>&1 &
    pids+=($!)
}

status_field() { # state|contributions|tasks_done: the first query's
    "$querier" status --connect "$url" "${tls_dial[@]}" --json 2>/dev/null | json_field "$1" || true
}

# The researcher's CSV against the ground truth over the same data (rows in
# any order, the header exactly); exits 1 with the differences otherwise.
check_truth() {
    "$sim" --tokens "$n" --seed 7 --truth --csv --sql "$sql" >"$work/truth.csv"
    if ! diff <(tail -n +2 "$work/result.csv" | sort) <(tail -n +2 "$work/truth.csv" | sort) >"$work/diff" ||
        ! diff <(head -1 "$work/result.csv") <(head -1 "$work/truth.csv") >>"$work/diff"; then
        echo "deploy-local: the result differs from the ground truth:" >&2
        cat "$work/diff" >&2
        exit 1
    fi
}

json_field() { # FIELD: from the first query of a status --json on stdin
    sed -n "s/^\[{.*\"$1\":\"\{0,1\}\([a-z0-9]*\).*/\1/p"
}
proc_kib() { sed -n "s/^$2:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$1/status"; }

if [ "$bench" = 1 ]; then
    first=1
    while [ "$first" -le "$n" ]; do
        last=$((first + per - 1)); [ "$last" -le "$n" ] || last=$n
        start_agents "$first" "$last"
        first=$((last + 1))
    done
    # Every agent admitted (each logs it once) before the study starts.
    for _ in $(seq 1200); do
        [ "$(cat "$work"/agents-*.log 2>/dev/null | grep -c 'admitted by the service')" -ge "$n" ] && break
        sleep 0.1
    done
    sleep 1
    rss0=$(proc_kib "$service_pid" VmRSS)
    b0=$(ms)
    "$querier" run --connect "$url" "${tls_dial[@]}" --cert "$work/researcher/alice.cert" \
        --no-progress --csv --study bench --wait 600 --protocol "$protocol" \
        "$sql SIZE $n DEADLINE 600" \
        >"$work/result.csv" 2>"$work/researcher/log" &
    run_pid=$!
    collected=""
    while kill -0 "$run_pid" 2>/dev/null; do
        js=$("$querier" status --connect "$url" "${tls_dial[@]}" --json 2>/dev/null || true)
        st=$(echo "$js" | json_field state)
        held=$(echo "$js" | json_field bytes_held)
        [ "${held:-0}" -gt "${max_held:-0}" ] && max_held=$held
        if [ -z "$collected" ] && [ -n "$st" ] && [ "$st" != collecting ]; then
            collected=$(ms)
        fi
        fds=$(ls "/proc/$service_pid/fd" 2>/dev/null | wc -l)
        [ "${fds:-0}" -gt "${max_fds:-0}" ] && max_fds=$fds
        sleep 0.05
    done
    set +e; wait "$run_pid"; rc=$?; set -e
    b1=$(ms)
    [ "$rc" = 0 ] || { cat "$work/researcher/log" >&2; exit 1; }
    final=$("$querier" status --connect "$url" "${tls_dial[@]}" --json)
    peak=$(proc_kib "$service_pid" VmHWM)
    cts=$(echo "$final" | json_field ciphertexts)
    bin=$(echo "$final" | json_field bytes_in)
    bout=$(echo "$final" | json_field bytes_out)
    check_truth
    c_ms=$((${collected:-$b1} - b0)); [ "$c_ms" -gt 0 ] || c_ms=1
    echo "participants:            $n ($per agents per process, transport ${url%%://*})"
    echo "end to end:              $(((b1 - b0) / 1000)).$(((b1 - b0) % 1000 / 100)) s (submit to checked result)"
    echo "collection:              $(((c_ms) / 1000)).$((c_ms % 1000 / 100)) s, $((n * 1000 / c_ms)) participants/s"
    echo "service memory:          $((rss0 / 1024)) MiB before the study, $((peak / 1024)) MiB peak (VmHWM)"
    echo "per ciphertext:          $cts ciphertexts; the coordinator held $((${max_held:-0} / (cts > 0 ? cts : 1))) bytes each at most; the process grew $(((peak - rss0) * 1024 / (cts > 0 ? cts : 1))) bytes each"
    echo "service descriptors:     $max_fds open at most"
    echo "bytes per participant:   $((bin / n)) in, $((bout / n)) out (study messages)"
    echo "result:                  equals the ground truth"
    exit 0
fi

# --- the agents of tokens elsewhere: one process each, admitted before the
# study is submitted, so that an unplug falls in the study's own transfers ----
# The first USB token is unplugged at this OUT DATA frame of its agent's run:
# GetInfo, the certificate for the hello and the attestation take one each,
# so the 4th is the study's first request to the token (its collection).
unplug_at=4
start_special() { # I
    local i=$1 d=$work/participants/p$1 extra=()
    case $(kind_of "$i") in
    tokend)
        "$participant" --token "emulator:$d/tokend.sock" run --connect "$url" "${tls_dial[@]}" \
            --dir "$d" >>"$work/agents-$i.log" 2>&1 &
        ;;
    usb)
        if [ "$unplug" = 1 ] && [ "$i" = $((ns + n_tokend + 1)) ]; then
            extra=(--unplug-at "$unplug_at" --replug-after 1500)
        fi
        "$bridge" --token "$d/device" "${extra[@]}" --stats -- \
            "$participant" --token usb run --connect "$url" "${tls_dial[@]}" --dir "$d" \
            >>"$work/agents-$i.log" 2>&1 &
        ;;
    esac
    spids+=($!)
}
if [ "$ns" -lt "$n" ]; then
    for i in $(seq $((ns + 1)) "$n"); do start_special "$i"; done
    for i in $(seq $((ns + 1)) "$n"); do
        for _ in $(seq 600); do
            grep -q 'admitted by the service' "$work/agents-$i.log" 2>/dev/null && break
            sleep 0.05
        done
        if ! grep -q 'admitted by the service' "$work/agents-$i.log" 2>/dev/null; then
            echo "deploy-local: the agent of participant $i ($(kind_of "$i")) was not admitted:" >&2
            cat "$work/agents-$i.log" >&2
            exit 1
        fi
    done
    log "$((n - ns)) agents of tokens elsewhere admitted ($n_tokend emulators, $n_usb on USB)"
    if [ "$unplug" = 1 ] && [ "$n_tokend" -gt 0 ]; then
        e=$((ns + 1))
        kill -TERM "$(cat "$work/participants/p$e/tokend.pid")"
        log "stopped the token emulator of participant $e; it starts again 2 s into the study"
        (sleep 2 && start_tokend "$e" && echo "[deploy] started the emulator of participant $e again" >&2) &
    fi
    if [ "$unplug" = 1 ] && [ "$n_tokend" -gt 1 ]; then
        h=$((ns + 2))
        hung=$(cat "$work/participants/p$h/tokend.pid")
        kill -STOP "$hung"
        log "the token emulator of participant $h hangs (SIGSTOP) until its agent finds it does not answer"
        (
            for _ in $(seq 1200); do
                grep -q 'the token does not answer' "$work/agents-$h.log" 2>/dev/null && break
                sleep 0.1
            done
            kill -CONT "$hung"
            echo "[deploy] the emulator of participant $h answers again (SIGCONT)" >&2
        ) &
    fi
fi

# The study runs in the background while the agents work.
"$querier" run --connect "$url" "${tls_dial[@]}" --cert "$work/researcher/alice.cert" \
    --no-progress --csv --study local --wait 600 --protocol "$protocol" \
    "$sql SIZE $n DEADLINE 600" \
    >"$work/result.csv" 2>"$work/researcher/log" &
run_pid=$!

half=$((ns / 2))
[ "$half" -ge 1 ] || half=$ns
first=1
while [ "$first" -le "$half" ]; do
    last=$((first + per - 1)); [ "$last" -le "$half" ] || last=$half
    start_agents "$first" "$last"
    first=$((last + 1))
done

if [ "$kill_service" = 1 ]; then
    # In the middle of collection: some uploads are in, not all.
    for _ in $(seq 600); do
        c=$(status_field contributions)
        [ -n "$c" ] && [ "$c" -ge 1 ] && break
        sleep 0.05
    done
    log "kill -9 the service during collection ($(status_field contributions) of $n contributions in)"
    kill -9 "$service_pid"; wait "$service_pid" 2>/dev/null || true
    start_service
    log "service restarted: $(grep -c 'records replayed' "$work/service/log") starts; $(status_field contributions) contributions after replay"
fi

# With an interruption to make, the last participant is held back: the
# others contribute, stop (SIGSTOP), and the last one then closes the
# collection and aggregates alone, slowly (--pace), so the service can be
# killed with some tasks done and some not.
interrupt=0
[ "$kill_service" = 1 ] || [ "$kill_agent" = 1 ] && interrupt=1
upto=$ns
[ "$interrupt" = 1 ] && upto=$((ns - 1))
first=$((half + 1))
while [ "$first" -le "$upto" ]; do
    last=$((first + per - 1)); [ "$last" -le "$upto" ] || last=$upto
    start_agents "$first" "$last"
    first=$((last + 1))
done

wait_for() { # FIELD VALUE-TEST: poll the first query's status for up to 120 s
    for _ in $(seq 2400); do
        v=$(status_field "$1")
        if [ -n "$v" ] && eval "$2"; then return 0; fi
        sleep 0.05
    done
    echo "deploy-local: timed out waiting for $1 ($2)" >&2
    tail -5 "$work/service/log" >&2
    return 1
}

if [ "$interrupt" = 1 ]; then
    wait_for contributions '[ "$v" -ge $((n - 1)) ]'
    kill -STOP "${pids[@]}"
    "$participant" run --connect "$url" "${tls_dial[@]}" --dir "$work/participants/p$ns" \
        --pace 400 >>"$work/agents-$ns.log" 2>&1 &
    slow_pid=$!
    wait_for tasks_done '[ "$v" -ge 1 ]'
    if [ "$kill_service" = 1 ]; then
        log "kill -9 the service during aggregation ($(status_field tasks_done) tasks done, state $(status_field state))"
        kill -9 "$service_pid"; wait "$service_pid" 2>/dev/null || true
        start_service
        log "service restarted: $(status_field state), $(status_field tasks_done) tasks done after replay"
    fi
    kill -CONT "${pids[@]}"
    pids+=("$slow_pid")
    if [ "$kill_agent" = 1 ] && [ "${#pids[@]}" -gt 2 ]; then
        sleep 0.2
        log "kill -9 agent process ${pids[0]} during aggregation ($(status_field tasks_done) tasks done)"
        kill -9 "${pids[0]}"
        pids=("${pids[@]:1}")
    fi
fi

set +e
wait "$run_pid"
rc=$?
set -e
t1=$(ms)
if [ "$rc" != 0 ]; then
    echo "deploy-local: the study failed:" >&2
    cat "$work/researcher/log" >&2
    tail -20 "$work/service/log" >&2
    exit 1
fi
check_truth
log "result ($(($(wc -l <"$work/result.csv") - 1)) groups) equals the ground truth"
if [ "$unplug" = 1 ]; then
    for i in $((ns + 1)) $((ns + 2)) $((ns + n_tokend + 1)); do
        [ "$i" -le "$n" ] || continue
        [ "$i" -gt "$ns" ] || continue
        [ "$i" != $((ns + 2)) ] || [ "$n_tokend" -gt 1 ] || continue
        f=$work/agents-$i.log
        want='the token is gone'
        [ "$i" != $((ns + 2)) ] || want='the token does not answer'
        if ! grep -q "$want" "$f" || ! grep -q 'the token is back: work resumes' "$f"; then
            echo "deploy-local: the agent of participant $i ($(kind_of "$i")) did not pause and resume:" >&2
            cat "$f" >&2
            exit 1
        fi
        log "participant $i ($(kind_of "$i")): $(grep -c "$want" "$f") pause ($want), then resumed"
    done
fi
cat "$work/result.csv"
printf '[deploy] %s participants, %d.%03d s end to end\n' "$n" $(((t1 - t0) / 1000)) \
    $(((t1 - t0) % 1000)) >&2
