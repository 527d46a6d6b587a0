#!/bin/sh
# The owner's personal cloud, as the README shows it: an authority, Alice's
# and Bob's software tokens in a temporary directory, Alice's documents, an
# app's credential and its requests to the agent's HTTP API (curl), a share
# with Bob, a backup and a recovery. Every command is printed as typed, with
# what it printed, and its exit status or HTTP status when it is not a
# success.
#   scripts/cloud-demo.sh   (builds first, as demo.sh does)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
build=${COHORT_BUILD:-$root/build}
PATH=$build/participant:$build/authority:$PATH
work=$(mktemp -d "${TMPDIR:-/tmp}/cohort-cloud.XXXXXX")
agent=""
trap '[ -z "$agent" ] || kill $agent 2>/dev/null; rm -rf "$work"' EXIT INT TERM
cd "$work"

# show ARGS...: print the command as typed, run it, say how it ended.
show() {
    printf '$'
    for a in "$@"; do
        case $a in
        *[\ \'\<\>\&\?\{]*) printf " '%s'" "$a" ;;
        *) printf ' %s' "$a" ;;
        esac
    done
    printf '\n'
    set +e
    "$@" 2>&1
    rc=$?
    set -e
    [ "$rc" = 0 ] || echo "[exit status $rc]"
    echo
}

# api METHOD PATH CRED [curl args]: an app's request, printed with its status.
api() {
    m=$1 p=$2 c=$3
    shift 3
    printf '$ curl -X %s -H "Authorization: Bearer $%s"' "$m" "$c"
    for a in "$@"; do
        case $a in
        -*) printf ' %s' "$a" ;;
        *) printf " '%s'" "$a" ;;
        esac
    done
    case $p in
    *[\?\&]*) printf " 'http://127.0.0.1:PORT%s'\n" "$p" ;;
    *) printf ' http://127.0.0.1:PORT%s\n' "$p" ;;
    esac
    eval "cred=\$$c"
    code=$(curl -s -o body -w '%{http_code}' -X "$m" -H "Authorization: Bearer $cred" "$@" "$url$p")
    cat body
    [ -s body ] && [ "$(tail -c 1 body | od -An -c | tr -d ' ')" != '\n' ] && echo
    echo "[HTTP $code]"
    echo
}

# Setting up: an authority certifies both tokens (see "The authority").
cohort-authority init --dir authority --subject "Token Maker" >/dev/null
for who in alice bob; do
    cohort-participant init --dir $who-token --subject $who >/dev/null
    cohort-authority certify-token --dir authority --csr $who-token/token.csr --out $who.bundle >/dev/null
    cohort-participant provision --dir $who-token $who.bundle >/dev/null
done
printf 'Statement of account, May 2026: balance 1,234.56 EUR\n' >statement-may.txt
printf 'Payslip, April 2026: net 2,345.67 EUR\n' >payslip-april.txt

echo "### The owner"
echo
show cohort-participant doc put --dir alice-token --type bank.statement --author "ACME Bank" \
    --subject "May 2026" --tag bank statement-may.txt
show cohort-participant doc put --dir alice-token --type payroll.payslip --author "Initech" \
    payslip-april.txt
show cohort-participant doc list --dir alice-token
show cohort-participant app add --dir alice-token --name budget --rule 'bank.*:GET' --expires 30d
show cohort-participant app list --dir alice-token

echo "### An app"
echo
APP=$(cohort-participant app add --dir alice-token --name budget-web --rule 'bank.*:GET,POST' --quiet)
cohort-participant http --dir alice-token --listen 127.0.0.1:0 >http.out 2>http.log &
agent=$!
i=0
until grep -q '^listening on ' http.out 2>/dev/null; do
    i=$((i + 1))
    [ $i -lt 100 ] || { echo "the agent did not start" >&2; exit 1; }
    sleep 0.1
done
url=$(sed -n 's/^listening on //p' http.out)
echo '$ APP=$(cohort-participant app add --dir alice-token --name budget-web --rule '"'"'bank.*:GET,POST'"'"' --quiet)'
echo '$ cohort-participant http --dir alice-token --listen 127.0.0.1:PORT &'
echo
api GET '/v1/docs' APP
id=$(sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p' body | head -1)
api GET "/v1/docs/$id" APP
api POST '/v1/docs?type=bank.statement&subject=June%202026' APP --data-binary 'Statement, June 2026'
api POST '/v1/docs?type=health.record' APP --data-binary 'Blood test'
NOBODY=$(printf '%096d' 0) # a credential no token issued
api GET "/v1/docs/$id/meta" APP
api GET "/v1/docs/$id/meta" NOBODY
kill $agent
wait $agent 2>/dev/null || true
agent=""
echo '$ kill %1; cat http.log'
sed 's/\[[0-9]*\]/[PID]/' http.log
echo

echo "### Sharing with Bob"
echo
cohort-participant identity --dir bob-token >bob.identity
echo '$ cohort-participant identity --dir bob-token > bob.identity'
echo
show cohort-participant share create --dir alice-token --to bob.identity --doc "$id" \
    --max-reads 2 --expires 7d --out for-bob.pkg
show cohort-participant share accept --dir bob-token for-bob.pkg
show cohort-participant doc get --dir bob-token --id "$id"
show cohort-participant doc put --dir bob-token --type bank.statement --id "$id" --rev 1 \
    payslip-april.txt
show cohort-participant doc get --dir bob-token --id "$id"
show cohort-participant share list --dir bob-token
show cohort-participant doc get --dir bob-token --id "$id"
show cohort-participant audit --dir bob-token

echo "### Backup and recovery"
echo
echo '$ cohort-participant backup export --dir alice-token --out alice.backup'
cohort-participant backup export --dir alice-token --out alice.backup >export.out 2>&1
cat export.out
echo
phrase=$(sed -n '/recovery phrase, shown this once/{n;n;s/^ *//p;}' export.out)
cohort-participant init --dir new-token --subject alice >/dev/null
cohort-authority certify-token --dir authority --csr new-token/token.csr --out new.bundle >/dev/null
cohort-participant provision --dir new-token new.bundle >/dev/null
echo '$ cohort-participant init --dir new-token --subject alice   # and provision it'
echo
echo "$phrase" >phrase.txt
show cohort-participant recover --dir new-token --phrase-file phrase.txt alice.backup
cp -r alice-token/docs new-token/docs
echo '$ cp -r alice-token/docs new-token/docs'
echo
show cohort-participant doc get --dir new-token --id "$id"
