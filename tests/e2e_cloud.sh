#!/bin/sh
# End to end: the owner's personal cloud on real processes and sockets.
#
#   e2e_cloud.sh BUILD_DIR
#
# An authority certifies three software tokens: Alice's, Bob's, and the new
# token Alice recovers into. Alice's and Bob's agents serve the HTTP API on
# loopback (`cohort-participant http`, port 0). Over it, with curl:
# - Alice's owner credential issues an app credential with rules; the app
#   stores, reads and updates documents within them, and is refused beyond
#   them (401, 403, 409);
# - Alice shares documents with Bob's token; the packages go from her agent
#   to Bob's inbox; Bob's token enforces read-only, a maximum of reads,
#   expiry and revocation; Alice's update reaches Bob; a replayed and a
#   forged package are refused;
# - Alice shares a document read-write with Bob: his revision goes back to
#   her agent's inbox and is her document's next;
# - Alice exports a backup, recovers it into a new token with the recovery
#   phrase (a wrong phrase changes nothing), and reads her documents there;
#   a token without the backup cannot.
# Then both agents stop, and scan_secrets searches every file of the three
# data directories and the agents' logs for any key of the three tokens,
# for the documents' contents, the credentials and the recovery phrase.
set -eu
build=${1:?usage: e2e_cloud.sh BUILD_DIR}
pt=$build/participant/cohort-participant
au=$build/authority/cohort-authority
scan=$build/tests/scan_secrets
work=$(mktemp -d "${TMPDIR:-/tmp}/cohort-cloud.XXXXXX")
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for p in $pids; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
out=$work/out
steps=0

fail() {
    echo "FAIL: $*" >&2
    echo "--- last response" >&2
    cat "$out" >&2 || true
    for f in "$work"/*.log; do
        [ -f "$f" ] || continue
        echo "--- $(basename "$f")" >&2
        tail -20 "$f" >&2
    done
    exit 1
}

# req WANT METHOD URL CRED [curl args...]: the HTTP status must be WANT; the
# body is in $out.
req() {
    want=$1 method=$2 url=$3 cred=$4
    shift 4
    steps=$((steps + 1))
    if [ -n "$cred" ]; then
        got=$(curl -s -o "$out" -w '%{http_code}' -X "$method" -H "Authorization: Bearer $cred" "$@" "$url")
    else
        got=$(curl -s -o "$out" -w '%{http_code}' -X "$method" "$@" "$url")
    fi
    [ "$got" = "$want" ] || fail "$method $url answered $got, expected $want"
}

# json KEY: a string or number member of the JSON object in $out.
json() {
    sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p" "$out" | head -1
}

# start NAME DIR: run an agent's HTTP API; sets $url.
start() {
    "$pt" http --dir "$2" --listen 127.0.0.1:0 >"$work/$1.out" 2>"$work/$1.log" &
    pid=$!
    pids="$pids $pid"
    i=0
    while ! grep -q '^listening on ' "$work/$1.out" 2>/dev/null; do
        i=$((i + 1))
        [ $i -lt 100 ] || fail "the $1 agent did not start"
        kill -0 "$pid" 2>/dev/null || fail "the $1 agent exited"
        sleep 0.1
    done
    url=$(sed -n 's/^listening on //p' "$work/$1.out")
    eval "pid_$1=$pid"
}

stop() {
    eval "p=\$pid_$1"
    kill "$p"
    wait "$p" 2>/dev/null || true
}

token() {
    "$pt" init --dir "$work/$1" --subject "$1" >/dev/null
    "$au" certify-token --dir "$work/auth" --csr "$work/$1/token.csr" --out "$work/$1.bundle" >/dev/null
    "$pt" provision --dir "$work/$1" "$work/$1.bundle" >/dev/null
}

"$au" init --dir "$work/auth" --subject "E2E Manufacturer" >/dev/null
for t in alice bob alice2 stranger; do token "$t"; done
A_OWNER=$("$pt" app add --dir "$work/alice" --name owner --owner --quiet)
B_OWNER=$("$pt" app add --dir "$work/bob" --name owner --owner --quiet)
start alice "$work/alice"
A=$url
start bob "$work/bob"
B=$url

# --------------------------------------------------------- an app's rights
req 200 GET "$A/v1/identity" ""
req 401 GET "$A/v1/docs" ""
req 401 GET "$A/v1/docs" "$(echo "$A_OWNER" | tr 0-9a-f 1-9a-f0)"
cat >"$work/rules.json" <<'EOF'
{"name": "bank app", "rules": [
  {"type": "bank.*", "verbs": ["GET", "POST", "PUT"]},
  {"type": "health.*", "verbs": ["GET"]}]}
EOF
req 201 POST "$A/v1/credentials" "$A_OWNER" --data-binary @"$work/rules.json"
APP=$(json credential)
[ ${#APP} = 96 ] || fail "no credential in the answer"

printf 'ALICE-STATEMENT-MAY-2026 balance 1234.56 EUR\n' >"$work/doc1"
printf 'ALICE-PAYSLIP-APRIL-2026 net 2345.67 EUR\n' >"$work/doc2"
printf 'ALICE-TAX-NOTICE-2025 due 456.78 EUR\n' >"$work/doc3"
printf 'ALICE-STATEMENT-MAY-2026 corrected balance 1200.00 EUR\n' >"$work/doc1b"
head -c 3000000 /dev/urandom >"$work/big"
req 201 POST "$A/v1/docs?type=bank.statement&subject=May%202026&tag=bank" "$APP" --data-binary @"$work/doc1"
D1=$(json id)
req 201 POST "$A/v1/docs?type=bank.payslip&subject=April%202026" "$APP" --data-binary @"$work/doc2"
D2=$(json id)
req 201 POST "$A/v1/docs?type=bank.tax&subject=2025" "$APP" --data-binary @"$work/doc3"
D3=$(json id)
req 201 POST "$A/v1/docs?type=bank.archive" "$APP" --data-binary @"$work/big"
D4=$(json id)
req 403 POST "$A/v1/docs?type=health.record" "$APP" --data-binary @"$work/doc1"
req 200 GET "$A/v1/docs/$D1" "$APP"
cmp -s "$out" "$work/doc1" || fail "the app read back another content"
req 200 GET "$A/v1/docs/$D4" "$APP"
cmp -s "$out" "$work/big" || fail "the 3 MB document came back different"
req 403 DELETE "$A/v1/docs/$D1?rev=1" "$APP"
req 409 PUT "$A/v1/docs/$D1?rev=2" "$APP" --data-binary @"$work/doc1b"

# ------------------------------------------------------------------ sharing
req 200 GET "$B/v1/identity" ""
BCERT=$(json certificate)
now=$(date +%s)
share() { # share DOC POLICY: Alice shares DOC with Bob, delivered to his inbox
    printf '{"recipient":"%s","docs":["%s"],"policy":%s,"deliver":"%s"}' "$BCERT" "$1" "$2" "$B" >"$work/share.json"
    req 201 POST "$A/v1/shares" "$A_OWNER" --data-binary @"$work/share.json"
    grep -q '"delivered":true' "$out" || fail "the share was not delivered"
    sid=$(json share)
}
share "$D1" '{"read_write":false,"max_reads":2}'
S1=$sid
share "$D2" "{\"read_write\":false,\"expires\":$((now + 4))}"
share "$D3" '{"read_write":false}'
S3=$sid

# read-only, and no re-share
req 200 GET "$B/v1/docs/$D1" "$B_OWNER"
cmp -s "$out" "$work/doc1" || fail "Bob read another content"
req 403 PUT "$B/v1/docs/$D1?rev=1&type=bank.statement" "$B_OWNER" --data-binary @"$work/doc1b"
printf '{"recipient":"%s","docs":["%s"],"policy":{}}' "$BCERT" "$D1" >"$work/reshare.json"
req 403 POST "$B/v1/shares" "$B_OWNER" --data-binary @"$work/reshare.json"

# Alice's update reaches Bob; his second read is his last
req 200 PUT "$A/v1/docs/$D1?rev=1" "$APP" --data-binary @"$work/doc1b"
req 200 GET "$B/v1/docs/$D1" "$B_OWNER"
cmp -s "$out" "$work/doc1b" || fail "Alice's update did not reach Bob"
req 403 GET "$B/v1/docs/$D1" "$B_OWNER"

# a replayed and a forged package
req 200 GET "$A/v1/shares/$S1/package" "$A_OWNER"
cp "$out" "$work/pkg"
req 409 POST "$B/v1/inbox" "" --data-binary @"$work/pkg"
size=$(stat -c %s "$work/pkg")
# the middle byte with its low bit flipped, so it always differs
mid=$(od -An -tu1 -j $((size / 2)) -N1 "$work/pkg" | tr -d ' ')
{
    head -c $((size / 2)) "$work/pkg"
    printf "\\$(printf '%03o' $((mid ^ 1)))"
    tail -c $((size - size / 2 - 1)) "$work/pkg"
} >"$work/forged"
cmp -s "$work/forged" "$work/pkg" && fail "the forged package is the package"
code=$(curl -s -o "$out" -w '%{http_code}' -X POST --data-binary @"$work/forged" "$B/v1/inbox")
case $code in 400 | 403) ;; *) fail "a forged package answered $code" ;; esac

# revocation, then expiry
req 200 GET "$B/v1/docs/$D3" "$B_OWNER"
cmp -s "$out" "$work/doc3" || fail "Bob read another content"
req 200 DELETE "$A/v1/shares/$S3" "$A_OWNER"
grep -q '"delivered":true' "$out" || fail "the revocation was not delivered"
req 403 GET "$B/v1/docs/$D3" "$B_OWNER"
req 200 GET "$B/v1/docs/$D2" "$B_OWNER"
cmp -s "$out" "$work/doc2" || fail "Bob read another content"
while [ "$(date +%s)" -le $((now + 4)) ]; do sleep 0.5; done
req 403 GET "$B/v1/docs/$D2" "$B_OWNER"
req 200 GET "$A/v1/docs/$D2" "$APP" # Alice's own copy is hers

# read-write: Bob's revision goes back to Alice's agent, and is hers
printf 'ALICE-BUDGET-2026 rent 900 EUR\n' >"$work/doc5"
printf 'ALICE-BUDGET-2026 rent 900 EUR, food 300 EUR (Bob)\n' >"$work/doc5b"
req 201 POST "$A/v1/docs?type=bank.budget" "$APP" --data-binary @"$work/doc5"
D5=$(json id)
share "$D5" '{"read_write":true}'
req 200 PUT "$B/v1/docs/$D5?rev=1" "$B_OWNER" --data-binary @"$work/doc5b"
grep -q '"delivered":true' "$out" || fail "Bob's revision did not reach Alice's agent"
[ "$(json revision)" = 2 ] || fail "Bob's revision is not the second"
req 200 GET "$A/v1/docs/$D5" "$APP"
cmp -s "$out" "$work/doc5b" || fail "Alice does not read Bob's revision"
req 409 PUT "$B/v1/docs/$D5?rev=1" "$B_OWNER" --data-binary @"$work/doc5"
req 200 GET "$B/v1/audit" "$B_OWNER"
grep -q 'share' "$out" || fail "Bob's audit log does not show the shares"

# ------------------------------------------------------- backup and recovery
stop alice
"$pt" backup export --dir "$work/alice" --out "$work/backup" >"$out" 2>&1 || fail "backup export failed"
PHRASE=$(sed -n '/recovery phrase, shown this once/{n;n;s/^ *//p;}' "$out")
[ -n "$PHRASE" ] || fail "backup export showed no recovery phrase"
echo "$PHRASE" | tr 'A-Z' 'B-ZA' >"$work/wrong"
"$pt" recover --dir "$work/alice2" --phrase-file "$work/wrong" "$work/backup" >"$out" 2>&1 &&
    fail "a wrong phrase recovered the backup"
echo "$PHRASE" >"$work/phrase"
"$pt" recover --dir "$work/alice2" --phrase-file "$work/phrase" "$work/backup" >"$out" 2>&1 ||
    fail "the backup did not recover"
rm "$work/phrase" "$work/wrong"
cp -r "$work/alice/docs" "$work/alice2/docs"
cp -r "$work/alice/docs" "$work/stranger/docs"
"$pt" doc get --dir "$work/stranger" --id "$D1" >"$out" 2>&1 && fail "a token without the backup read a document"
A2_OWNER=$("$pt" app add --dir "$work/alice2" --name owner --owner --quiet)
start alice2 "$work/alice2"
A2=$url
req 200 GET "$A2/v1/docs/$D1" "$A2_OWNER"
cmp -s "$out" "$work/doc1b" || fail "the recovered token read another content"
req 200 GET "$A2/v1/docs/$D4" "$A2_OWNER"
cmp -s "$out" "$work/big" || fail "the recovered token read another 3 MB document"
req 200 GET "$A2/v1/docs/$D1?rev=1" "$A2_OWNER"
cmp -s "$out" "$work/doc1" || fail "the recovered token lost the first revision"
stop alice2
stop bob
rm -f "$out"

# ------------------------------------------- no plaintext and no key on disk
# First, that the scan finds what is there: a plaintext planted in a data
# directory, and a document key written out in hex.
cp "$work/doc1" "$work/bob/planted"
"$scan" --token "$work/bob" --needle "$(cat "$work/doc1")" -- "$work/bob" >"$out" 2>&1 &&
    fail "the scan did not find a planted plaintext"
grep -q "found a plaintext needle in $work/bob/planted" "$out" || fail "the scan did not say where"
rm "$work/bob/planted"
set --
for f in doc1 doc1b doc2 doc3 doc5 doc5b; do set -- "$@" --needle "$(cat "$work/$f")"; done
"$scan" --token "$work/alice" --token "$work/bob" --token "$work/alice2" \
    "$@" --needle-file "$work/big" --needle "$A_OWNER" --needle "$B_OWNER" --needle "$A2_OWNER" \
    --needle "$APP" --needle "$PHRASE" \
    -- "$work/alice" "$work/bob" "$work/alice2" "$work"/*.log "$work"/*.out "$work/backup" ||
    fail "a secret or a plaintext is on disk"
echo "e2e_cloud: $steps requests as expected; no plaintext and no key in the data directories"
