#!/bin/sh
# End to end: the files a deployment passes around, made and read by the
# real programs in a temporary directory.
#
#   e2e_authority.sh AUTHORITY PARTICIPANT QUERIER KEYGEN_CLI
#
# An authority is made; two tokens are made and certified, and take their
# bundles once; a researcher makes a key and is certified within a scope;
# `show` describes every file without a secret in it. Then the refusals:
# a request with one bit flipped, a bundle for another token, a truncated
# bundle, an existing file where a new one would go, a key file others may
# read, a table that is not in the catalog: each exits with its status and
# writes nothing. KEYGEN_CLI runs `keygen` when QUERIER does not list it.
set -eu
usage="usage: e2e_authority.sh AUTHORITY PARTICIPANT QUERIER KEYGEN_CLI"
au=${1:?$usage}
pt=${2:?$usage}
qr=${3:?$usage}
kg=${4:?$usage}
work=$(mktemp -d "${TMPDIR:-/tmp}/cohort-e2e-au.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
out=$work/out
err=$work/err
auth=$work/auth
steps=0

fail() {
    echo "FAIL: $*" >&2
    echo "--- stdout" >&2
    cat "$out" >&2 || true
    echo "--- stderr" >&2
    cat "$err" >&2 || true
    exit 1
}

# run STATUS PROGRAM ARGS...: PROGRAM must exit with STATUS.
run() {
    want=$1
    shift
    steps=$((steps + 1))
    set +e
    "$@" >"$out" 2>"$err"
    got=$?
    set -e
    [ "$got" = "$want" ] || fail "$(basename "$1") $2 exited $got, expected $want"
}

# has FILE TEXT: FILE holds TEXT (a fixed string).
has() {
    grep -qF -- "$2" "$1" || fail "expected '$2' in $(basename "$1")"
}

mode_is() {
    [ "$(stat -c %a "$1")" = "$2" ] || fail "$1 has mode $(stat -c %a "$1"), expected $2"
}

absent() {
    [ ! -e "$1" ] || fail "$1 was written"
}

# The research key is made by cohort-querier keygen once cohort-querier lists it.
if "$qr" keygen --help >/dev/null 2>&1; then
    keygen() { "$qr" keygen "$@"; }
else
    keygen() { "$kg" keygen "$@"; }
fi

# hexof FILE: the file's bytes as lower-case hex, on one line.
hexof() {
    od -An -v -tx1 "$1" | tr -d ' \n'
}

# flip FILE OFFSET OUT: OUT is FILE with the lowest bit of byte OFFSET flipped.
flip() {
    size=$(wc -c <"$1")
    head -c "$2" "$1" >"$3"
    b=$(od -An -tu1 -j "$2" -N 1 "$1" | tr -d ' ')
    # shellcheck disable=SC2059
    printf "\\$(printf %03o $((b ^ 1)))" >>"$3"
    tail -c $((size - $2 - 1)) "$1" >>"$3"
    cmp -s "$1" "$3" && fail "flip did not change $1"
    [ "$(wc -c <"$3")" = "$size" ] || fail "flip changed the size of $1"
}

# ------------------------------------------------------------ help

run 0 "$au" help
cp "$out" "$work/help"
for c in init certify-token certify-researcher show; do
    has "$work/help" "$c"
    run 0 "$au" "$c" --help
    has "$out" "usage: cohort-authority $c"
    run 0 "$au" help "$c"
    has "$out" "usage: cohort-authority $c"
done
run 1 "$au"
run 1 "$au" frobnicate
has "$err" "unknown command 'frobnicate'"
run 0 "$pt" provision --help
has "$out" "usage: cohort-participant provision --dir DIR BUNDLE"

# ------------------------------------------------------- authority

run 1 "$au" init --dir "$auth"
has "$err" "--subject NAME"
run 1 "$au" init --dir "$auth" --subject "E2E Authority" --days 0
run 1 "$au" init --dir "$auth" --subject "E2E Authority" --days 36501
absent "$auth"
run 0 "$au" init --dir "$auth" --subject "E2E Authority"
has "$out" "created the authority E2E Authority in $auth"
has "$out" "root key id:"
root_id=$(awk '/root key id:/ { print $4 }' "$out")
[ ${#root_id} = 16 ] || fail "root key id '$root_id'"
mode_is "$auth" 700
mode_is "$auth/authority.key" 600
mode_is "$auth/authority.cert" 644
cp "$auth/authority.key" "$work/key.orig"
# A second authority in the same place: refused, the key untouched.
run 2 "$au" init --dir "$auth" --subject "Another"
has "$err" "exists and is not empty"
cmp -s "$auth/authority.key" "$work/key.orig" || fail "init overwrote the key"
# Another authority, whose researchers the second token will obey too.
run 0 "$au" init --dir "$work/auth2" --subject "Second Authority" --days 30
root2_id=$(awk '/root key id:/ { print $4 }' "$out")

# ---------------------------------------------------------- tokens

run 0 "$pt" init --dir "$work/tokA" --subject "token A"
run 0 "$pt" init --dir "$work/tokB" --subject "token B"
run 0 "$au" certify-token --dir "$auth" --csr "$work/tokA/token.csr" --out "$work/a.bundle"
has "$out" "certified the token token A"
has "$out" "trusts:        $root_id (this authority)"
mode_is "$work/a.bundle" 600
run 0 "$au" certify-token --dir "$auth" --csr "$work/tokB/token.csr" --out "$work/b.bundle" \
    --days 10 --trust "$work/auth2/authority.cert" --trust "$auth/authority.cert"
has "$out" "trusts:        $root_id (this authority), $root2_id"
# An existing bundle is not replaced.
cp "$work/a.bundle" "$work/a.orig"
run 2 "$au" certify-token --dir "$auth" --csr "$work/tokB/token.csr" --out "$work/a.bundle"
has "$err" "a.bundle exists: refusing to overwrite it"
cmp -s "$work/a.bundle" "$work/a.orig" || fail "certify-token overwrote a bundle"
# --trust must name a root.
run 2 "$au" certify-token --dir "$auth" --csr "$work/tokB/token.csr" --out "$work/x.bundle" \
    --trust "$work/tokA/token.csr"
absent "$work/x.bundle"

# Token B refuses A's bundle, a truncated one, and what is not a bundle...
run 2 "$pt" provision --dir "$work/tokB" "$work/a.bundle"
has "$err" "the bundle was made for another token"
size=$(wc -c <"$work/b.bundle")
head -c $((size - 7)) "$work/b.bundle" >"$work/trunc.bundle"
run 2 "$pt" provision --dir "$work/tokB" "$work/trunc.bundle"
has "$err" "is not a provisioning bundle"
run 2 "$pt" provision --dir "$work/tokB" "$work/tokB/token.csr"
has "$err" "is not a provisioning bundle"
head -c 20000 /dev/zero >"$work/big.bundle"
run 2 "$pt" provision --dir "$work/tokB" "$work/big.bundle"
has "$err" "larger than"
run 2 "$pt" provision --dir "$work/tokB" "$work/no-such.bundle"
run 1 "$pt" provision --dir "$work/tokB"
# ... and was not changed by them: its own bundle still goes in, once.
run 0 "$pt" provision --dir "$work/tokB" "$work/b.bundle"
has "$out" "provisioned the token in $work/tokB"
has "$out" "trusts:        $root_id, $root2_id"
run 0 "$pt" provision --dir "$work/tokA" "$work/a.bundle"
has "$out" "certified by:  $root_id"
has "$out" "trusts:        $root_id"
run 2 "$pt" provision --dir "$work/tokA" "$work/a.bundle"
has "$err" "the token is already provisioned"
# The tokens still work for their owners.
run 0 "$pt" tables --dir "$work/tokA"

# A request with one bit flipped, in its signature or in what it signs:
# refused, nothing written.
csr=$work/tokA/token.csr
size=$(wc -c <"$csr")
flip "$csr" $((size - 1)) "$work/badsig.csr"
flip "$csr" 5 "$work/badsubject.csr"
for bad in badsig badsubject; do
    run 2 "$au" certify-token --dir "$auth" --csr "$work/$bad.csr" --out "$work/x.bundle"
    has "$err" "signature does not verify"
    absent "$work/x.bundle"
done
head -c $((size / 2)) "$csr" >"$work/half.csr"
run 2 "$au" certify-token --dir "$auth" --csr "$work/half.csr" --out "$work/x.bundle"
absent "$work/x.bundle"
run 3 "$au" certify-token --dir "$auth" --csr "$work/no-such.csr" --out "$work/x.bundle"
absent "$work/x.bundle"

# A key file others may read is refused.
chmod 644 "$auth/authority.key"
run 2 "$au" certify-token --dir "$auth" --csr "$csr" --out "$work/x.bundle"
has "$err" "may be read by others"
absent "$work/x.bundle"
chmod 600 "$auth/authority.key"

# ------------------------------------------------------ researcher

mkdir "$work/rs"
run 0 keygen --out "$work/rs/alice" --subject "Alice"
has "$out" "created a researcher key"
mode_is "$work/rs/alice.key" 600
mode_is "$work/rs/alice.csr" 644
cp "$work/rs/alice.key" "$work/alice.orig"
# keygen never replaces a key.
set +e
keygen --out "$work/rs/alice" >"$out" 2>"$err"
got=$?
set -e
[ "$got" != 0 ] || fail "keygen over an existing key succeeded"
has "$err" "alice.key exists: refusing to overwrite it"
cmp -s "$work/rs/alice.key" "$work/alice.orig" || fail "keygen overwrote a key"

rcsr=$work/rs/alice.csr
run 0 "$au" certify-researcher --dir "$auth" --csr "$rcsr" --out "$work/rs/alice.cert" \
    --table health --column health.steps --column health.age --study sleep-2026 \
    --max-epsilon 1.5 --days 90
has "$out" "certified the researcher Alice"
has "$out" "scope:         tables health; columns health.steps, health.age; studies sleep-2026; epsilon at most 1.5"
mode_is "$work/rs/alice.cert" 644
run 0 "$au" certify-researcher --dir "$auth" --csr "$rcsr" --out "$work/rs/any.cert"
has "$out" "scope:         none"
# Scopes are checked against the catalog; bad numbers are refused; nothing is written.
run 1 "$au" certify-researcher --dir "$auth" --csr "$rcsr" --out "$work/x.cert" --table nosuch
has "$err" "the catalog has no table 'nosuch'"
run 1 "$au" certify-researcher --dir "$auth" --csr "$rcsr" --out "$work/x.cert" --column health.colour
has "$err" "has no column 'colour'"
run 1 "$au" certify-researcher --dir "$auth" --csr "$rcsr" --out "$work/x.cert" --column steps
run 1 "$au" certify-researcher --dir "$auth" --csr "$rcsr" --out "$work/x.cert" \
    --table health --column bank_operations.amount
has "$err" "its table is not among the --table given"
for e in nan inf -1 1001 1e3 1.2.3 ""; do
    run 1 "$au" certify-researcher --dir "$auth" --csr "$rcsr" --out "$work/x.cert" --max-epsilon "$e"
done
run 1 "$au" certify-researcher --dir "$auth" --csr "$rcsr" --out "$work/x.cert" --days 36501
run 1 "$au" certify-researcher --dir "$auth" --csr "$rcsr" --out "$work/x.cert" --study "$(printf 'a\tb')"
run 1 "$au" certify-researcher --dir "$auth" --csr "$rcsr" --out "$work/x.cert" --table
flip "$rcsr" $(($(wc -c <"$rcsr") - 1)) "$work/rbad.csr"
run 2 "$au" certify-researcher --dir "$auth" --csr "$work/rbad.csr" --out "$work/x.cert"
has "$err" "signature does not verify"
absent "$work/x.cert"
cp "$work/rs/alice.cert" "$work/cert.orig"
run 2 "$au" certify-researcher --dir "$auth" --csr "$rcsr" --out "$work/rs/alice.cert"
has "$err" "exists: refusing to overwrite it"
cmp -s "$work/rs/alice.cert" "$work/cert.orig" || fail "certify-researcher overwrote a certificate"

# ------------------------------------------------------------ show

run 0 "$au" show "$auth/authority.key"
has "$out" "an authority's key file"
has "$out" "key id:        $root_id"
has "$out" "never shown"
run 0 "$au" show "$auth/authority.cert"
has "$out" "a certificate file (1 certificate)"
run 0 "$au" show "$csr"
has "$out" "a certificate request"
has "$out" "signature:     valid"
run 0 "$au" show "$work/b.bundle"
has "$out" "a provisioning bundle for a token"
has "$out" "trusts:        $root_id, $root2_id"
run 0 "$au" show "$work/rs/alice.key"
has "$out" "a researcher's key file"
run 0 "$au" show "$work/rs/alice.cert"
has "$out" "role:          researcher"
has "$out" "epsilon at most 1.5"
has "$out" "issued by:     $root_id (certificate 2)"
run 2 "$au" show "$work/badsig.csr"
has "$out" "NOT VALID"
run 2 "$au" show "$work/trunc.bundle"
run 2 "$au" show "$work/big.bundle"
run 1 "$au" show

# No secret in what show prints: no long hex at all, and no piece of the
# secret keys or the group secret. The key files are KeyFile messages whose
# first fields have known sizes: check the tags, then take the secrets.
# authority.key: role (2+9), subject (2+13), then 1a 40 sign_sk (its seed
# is the first 32 bytes), 22 20 box_sk, 2a 20 group_secret.
akey=$(hexof "$auth/authority.key")
[ "$(echo "$akey" | cut -c53-56)" = 1a40 ] || fail "authority.key: unexpected layout"
[ "$(echo "$akey" | cut -c185-188)" = 2220 ] || fail "authority.key: unexpected layout"
[ "$(echo "$akey" | cut -c253-256)" = 2a20 ] || fail "authority.key: unexpected layout"
secrets="$(echo "$akey" | cut -c57-120) $(echo "$akey" | cut -c189-252) $(echo "$akey" | cut -c257-320)"
# alice.key: role (2+10), subject (2+5), then 1a 40 sign_sk, 22 20 box_sk.
rkey=$(hexof "$work/rs/alice.key")
[ "$(echo "$rkey" | cut -c39-42)" = 1a40 ] || fail "alice.key: unexpected layout"
[ "$(echo "$rkey" | cut -c171-174)" = 2220 ] || fail "alice.key: unexpected layout"
secrets="$secrets $(echo "$rkey" | cut -c43-106) $(echo "$rkey" | cut -c175-238)"
for f in "$auth/authority.key" "$auth/authority.cert" "$csr" "$work/a.bundle" "$work/b.bundle" \
    "$work/rs/alice.key" "$work/rs/alice.csr" "$work/rs/alice.cert"; do
    "$au" show "$f" >"$out" 2>"$err" || fail "show $f"
    if grep -Eq '[0-9a-fA-F]{64}' "$out" "$err"; then
        fail "show $f printed 64 hex digits in a row"
    fi
    for s in $secrets; do
        [ ${#s} = 64 ] || fail "a secret of ${#s} hex digits"
        for part in $(echo "$s" | cut -c1-16) $(echo "$s" | cut -c17-32) \
            $(echo "$s" | cut -c33-48) $(echo "$s" | cut -c49-64); do
            if grep -qi -- "$part" "$out" "$err"; then
                fail "show $f printed a piece of a secret"
            fi
        done
    done
done

echo "e2e_authority: $steps steps passed"
