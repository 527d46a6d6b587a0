#!/bin/sh
# End to end: the real cohort-participant binary on a real software token
# in a temporary directory, with the sample files of examples/.
#
#   e2e_participant.sh BINARY EXAMPLES_DIR [tables|policy]
#
# "tables" (the default): init, import CSV and JSON Lines, tables, rows,
# bad imports that must leave every row count unchanged, delete by id, by
# condition and all, compact, and a tampered flash (exit 3).
# "policy": policy set and show, a refused policy that changes nothing,
# then the audit log.
set -eu
bin=${1:?usage: e2e_participant.sh BINARY EXAMPLES_DIR [tables|policy]}
ex=${2:?usage: e2e_participant.sh BINARY EXAMPLES_DIR [tables|policy]}
part=${3:-tables}
work=$(mktemp -d "${TMPDIR:-/tmp}/cohort-e2e.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
tok=$work/token
out=$work/out
err=$work/err
steps=0

fail() {
    echo "FAIL: $*" >&2
    echo "--- stdout" >&2
    cat "$out" >&2 || true
    echo "--- stderr" >&2
    cat "$err" >&2 || true
    exit 1
}

# run STATUS ARGS...: run the binary, which must exit with STATUS.
run() {
    want=$1
    shift
    steps=$((steps + 1))
    set +e
    "$bin" "$@" >"$out" 2>"$err"
    got=$?
    set -e
    [ "$got" = "$want" ] || fail "cohort-participant $* exited $got, expected $want"
}

# has FILE TEXT: FILE holds TEXT (a fixed string).
has() {
    grep -qF -- "$2" "$1" || fail "expected '$2' in $(basename "$1")"
}

# rows_of TABLE: the row count `tables` shows for TABLE (0 when it has none).
rows_of() {
    "$bin" tables --dir "$tok" | awk -v t="$1" '$1 == t { n = $2 } END { print n + 0 }'
}

run 0 init --dir "$tok" --subject "e2e token"
has "$out" "created a token in $tok"
has "$out" "certificate request:  $tok/token.csr"
[ -s "$tok/token.csr" ] || fail "no certificate request"
[ "$(stat -c %a "$tok")" = 700 ] || fail "the token directory is not 0700"
run 2 init --dir "$tok"
has "$err" "cannot create a token in $tok"

if [ "$part" = policy ]; then
    run 0 policy show --dir "$tok"
    has "$out" "no consent policy set"
    key=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
    run 0 policy set --dir "$tok" --allow-table health --allow-table bank_operations.amount \
        --allow-study sleep-2026 --allow-researcher "$key" --min-participants 100 \
        --min-group-size 10 --require-dp --epsilon-per-study 0.5 --epsilon-total 2
    has "$out" "tables:               health, bank_operations.amount"
    has "$out" "studies:              sleep-2026"
    has "$out" "researchers:          $key"
    has "$out" "min participants:     100"
    has "$out" "differential privacy: required"
    has "$out" "epsilon budget:       0.5 per study, 2 in total"
    cp "$out" "$work/set"
    run 0 policy show --dir "$tok"
    cmp -s "$out" "$work/set" || fail "policy show differs from what policy set showed"
    run 1 policy set --dir "$tok" --epsilon-total lots
    run 0 policy show --dir "$tok"
    cmp -s "$out" "$work/set" || fail "a refused policy set changed the policy"
    run 0 audit --dir "$tok"
    run 0 audit --dir "$tok" --json
    echo "e2e_participant policy: $steps commands as expected"
    exit 0
fi

# Import a CSV and a JSON Lines file into a catalog table.
run 0 import --dir "$tok" --table health "$ex/health.csv"
has "$out" "imported 5 rows into health from $ex/health.csv (a new table); the table has 5 rows"
run 0 import --dir "$tok" --table health "$ex/health.jsonl"
has "$out" "imported 3 rows into health from $ex/health.jsonl; the table has 8 rows"
run 0 import --dir "$tok" --table bank_operations "$ex/bank_operations.csv"
run 0 import --dir "$tok" --table bank_operations --format jsonl "$ex/bank_operations.jsonl"
has "$out" "the table has 10 rows"
run 0 tables --dir "$tok"
has "$out" "catalog  participant int, age int, sex text"
has "$out" "catalog  time timestamp, date date, amount decimal(2)"
[ "$(rows_of bank_operations)" = 10 ] || fail "bank_operations should have 10 rows"
[ "$(rows_of health)" = 8 ] || fail "health should have 8 rows"

# Rows, as a table and as CSV that imports back.
run 0 rows --dir "$tok" --table health
has "$out" "(8 rows)"
has "$out" "2026-03-03   NULL          74    NULL"
run 0 rows --dir "$tok" --table bank_operations --limit 2
has "$out" "2026-03-01T08:12:44Z  2026-03-01  2450.00  credit"
has "$out" "(2 rows, --limit reached)"
run 0 rows --dir "$tok" --table health --csv
head -1 "$out" | grep -qx "participant,age,sex,region,date,steps,heart_rate,weight,age_band" ||
    fail "the CSV header"
has "$out" "1,47,F,R042,2026-03-03,,74,,40-49"
has "$out" "1,47,F,R042,2026-03-07,15002,65,64.0,40-49"
cp "$out" "$work/again.csv"
run 0 import --dir "$tok" --table health "$work/again.csv"
[ "$(rows_of health)" = 16 ] || fail "the CSV of rows did not import back"

# A bad file stores nothing: each kind of error leaves the count as it was.
run 2 import --dir "$tok" --table health "$ex/health_bad.csv"
has "$err" "health_bad.csv:3: column 'steps' (6): 'about 9000' is not an integer"
has "$err" "nothing was imported"
printf '{"participant":1,"age":47,"sex":"F","region":"R042","date":"2026-03-12","steps":1,"heart_rate":1,"weight":1,"age_band":"40-49"}\n{"participant":1}\n' >"$work/missing.jsonl"
run 2 import --dir "$tok" --table health "$work/missing.jsonl"
has "$err" "missing.jsonl:2: column 'age' (2): missing"
printf 'participant,age,sex,region,date,steps,heart_rate,weight,age_band,mood\n' >"$work/extra.csv"
run 2 import --dir "$tok" --table health "$work/extra.csv"
has "$err" "extra.csv:1: column 'mood' (10): table health has no such column"
printf 'participant,age,sex,region,date,steps,heart_rate,weight,age_band\n1,47,"F,R042,2026-03-12,1,1,1,40-49\n' >"$work/quote.csv"
run 2 import --dir "$tok" --table health "$work/quote.csv"
has "$err" "quote.csv:2: column 'sex' (3): a quoted field that never ends"
: >"$work/empty.csv"
run 2 import --dir "$tok" --table health "$work/empty.csv"
has "$err" "empty.csv: the file is empty"
[ "$(rows_of health)" = 16 ] || fail "a refused import changed the row count"

# A table of the owner's own needs its schema once.
printf 'night,minutes,score\n2026-03-01,431,0.82\n2026-03-02,388,0.75\n' >"$work/sleep.csv"
run 1 import --dir "$tok" --table my_sleep "$work/sleep.csv"
run 0 import --dir "$tok" --table my_sleep --schema "night date, minutes int, score decimal(2)" \
    "$work/sleep.csv"
run 0 import --dir "$tok" --table my_sleep "$work/sleep.csv"
has "$out" "the table has 4 rows"

# Delete by id, by condition, all.
run 0 delete --dir "$tok" --table health --id 1,2
has "$out" "deleted 2 rows from health"
[ "$(rows_of health)" = 14 ] || fail "delete --id"
run 2 delete --dir "$tok" --table health --id 1
has "$err" "nothing was deleted"
[ "$(rows_of health)" = 14 ] || fail "a refused delete changed the row count"
run 0 delete --dir "$tok" --table health --where "steps IS NULL"
has "$out" "deleted 4 rows from health"
run 1 delete --dir "$tok" --table health --where "stepz > 1"
has "$err" "unknown column 'stepz' in table health"
run 0 delete --dir "$tok" --table my_sleep --all
has "$out" "deleted table my_sleep and its 4 rows"
run 2 rows --dir "$tok" --table my_sleep
[ "$(rows_of health)" = 10 ] || fail "delete --where"
run 0 compact --dir "$tok"
has "$out" "compacted the token's log"
[ "$(rows_of health)" = 10 ] || fail "compact lost rows"
[ "$(rows_of bank_operations)" = 10 ] || fail "compact lost rows"

# A flash changed behind the token's back is refused, with exit status 3.
cp -r "$tok" "$work/copy"
for flash in "$work/copy"/flash.*; do
    # Flip one bit of byte 40 (whatever it was: writing a constant would
    # leave it unchanged one time in 256).
    b=$(od -An -tu1 -j40 -N1 "$flash" | tr -d ' ')
    [ -n "$b" ] || fail "the flash is shorter than 41 bytes"
    # shellcheck disable=SC2059
    printf "$(printf '\\%03o' $((b ^ 1)))" | dd of="$flash" bs=1 seek=40 conv=notrunc 2>/dev/null
    [ "$(od -An -tu1 -j40 -N1 "$flash" | tr -d ' ')" = $((b ^ 1)) ] || fail "the flip did not happen"
done
run 3 tables --dir "$work/copy"
has "$err" "cannot open the token $work/copy"
run 3 tables --dir "$work/nothing-here"

echo "e2e_participant: $steps commands as expected"
