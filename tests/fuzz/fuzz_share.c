/*
 * Fuzz target: the share grant's decoders (token/tk_share.c), behind the
 * seal that keeps random bytes from ever reaching them.
 *
 * A provisioned token stands ready, and a sender identity certified by the
 * same manufacturer whose keys this harness holds. The first byte of an
 * input picks what the rest is: even, a ShareGrant, which the harness
 * signs as the sender and seals to the token; odd, a SignedGrant, which it
 * only seals. Either is given to the token in a ShareAccept. Invariants:
 * the call returns 0 or a known TK_ERR_*; the response decodes and carries
 * that status; the arena's peak stays within the arena; a refused grant
 * leaves the token as it was (its state and its flash).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <string.h>

#include <cmocka.h>

#include "tests/fuzz/fuzz.h"
#include "tests/tk_fixture.h"
#include "token/tk_int.h"

static struct fx_world world;
static struct fx_token tok;
static struct fx_key sender;
static uint8_t sender_box_pk[32], sender_box_sk[32];
static struct fx_cert sender_cert;
static int ready;
static uint8_t resp[1u << 20];
static unsigned long seen[-TK_ERR_LAST + 1];

/* FUZZ_STATS=1: how many inputs ended with each status. */
static void report(void)
{
    int i;
    for (i = 0; i <= -TK_ERR_LAST; i++)
        if (seen[i])
            fprintf(stderr, "%-24s %lu\n", tk_errname(-i), seen[i]);
}

static void setup(void)
{
    if (ready) {
        /* Accepted grants make the store grow: start again now and then. */
        if (fx_flash_size(&tok) > (64u << 10)) {
            fx_token_free(&tok);
            fx_token_init(&tok, TK_ARENA_DEFAULT);
            fx_provision(&tok, &world, "fuzzed");
        }
        return;
    }
    fx_world_init(&world);
    fx_token_init(&tok, TK_ARENA_DEFAULT);
    fx_provision(&tok, &world, "fuzzed");
    fx_key_make(&sender);
    crypto_box_keypair(sender_box_pk, sender_box_sk);
    fx_cert_issue(&sender_cert, COHORT__ROLE__ROLE_TOKEN, "sender", sender.pk, sender_box_pk,
                  &world.maker, FX_NOW - FX_DAY, FX_NOW + FX_DAY, NULL);
    if (getenv("FUZZ_STATS") != NULL)
        atexit(report);
    ready = 1;
}

/* A ShareAccept request for the grant (signed here) or the signed grant. */
static uint8_t *accept_request(size_t *len, const uint8_t *data, size_t size, bool sign)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__ShareAccept sa = COHORT__SHARE_ACCEPT__INIT;
    Cohort__SignedGrant sg = COHORT__SIGNED_GRANT__INIT;
    uint8_t sig[64], *signed_grant, *sealed, *out;
    size_t sg_len;

    if (sign) {
        fx_sign(sig, TK_SIG_SHARE, data, size, sender.sk);
        sg.grant = (ProtobufCBinaryData){size, (uint8_t *)data};
        sg.signature = (ProtobufCBinaryData){64, sig};
        sg_len = cohort__signed_grant__get_packed_size(&sg);
        signed_grant = fx_alloc(sg_len);
        cohort__signed_grant__pack(&sg, signed_grant);
    } else {
        sg_len = size;
        signed_grant = fx_alloc(size);
        if (size)
            memcpy(signed_grant, data, size);
    }
    sealed = fx_alloc(sg_len + crypto_box_SEALBYTES);
    crypto_box_seal(sealed, signed_grant, sg_len, tok.tk.box_pk);
    sa.sealed = (ProtobufCBinaryData){sg_len + crypto_box_SEALBYTES, sealed};
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_SHARE_ACCEPT;
    req.share_accept = &sa;
    out = fx_pack_request(&req, len);
    free(sealed);
    free(signed_grant);
    return out;
}

void fuzz_one(const uint8_t *data, size_t size)
{
    struct tk_token before;
    uint64_t store_before;
    size_t resp_len = 0, peak = 0, req_len;
    Cohort__TokenResponse *r;
    uint8_t *req;
    int rc;

    if (size < 1 || size > TK_SHARE_GRANT_MAX + 1024)
        return;
    setup();
    req = accept_request(&req_len, data + 1, size - 1, (data[0] & 1) == 0);
    before = tok.tk;
    store_before = fx_flash_size(&tok);
    rc = tk_dispatch(&tok.tk, tok.arena, tok.arena_len, req, req_len, resp, sizeof resp, &resp_len,
                     &peak);
    free(req);
    FUZZ_CHECK(rc <= 0 && rc >= TK_ERR_LAST);
    seen[-rc]++;
    FUZZ_CHECK(peak <= tok.arena_len);
    FUZZ_CHECK(resp_len > 0);
    r = cohort__token_response__unpack(NULL, resp_len, resp);
    FUZZ_CHECK(r != NULL);
    FUZZ_CHECK(r->status == rc);
    FUZZ_CHECK(rc != TK_OK || r->body_case == COHORT__TOKEN_RESPONSE__BODY_SHARE_INFO);
    cohort__token_response__free_unpacked(r, NULL);
    if (rc != TK_OK) {
        FUZZ_CHECK(memcmp(&before, &tok.tk, sizeof before) == 0);
        FUZZ_CHECK(fx_flash_size(&tok) == store_before);
    }
}

/* A grant from the sender to the token of two documents, or a revocation. */
static uint8_t *grant_make(size_t *len, uint64_t seq, bool revoked)
{
    Cohort__ShareGrant g = COHORT__SHARE_GRANT__INIT;
    Cohort__SharePolicy p = COHORT__SHARE_POLICY__INIT;
    Cohort__Certificate cert;
    Cohort__SharedDoc d[2], *dp[2];
    Cohort__DocMeta m[2];
    uint8_t share_id[16] = {7}, ids[2][16] = {{1}, {2}}, key[32] = {3}, hash[32] = {4}, *out;
    char *tags[] = {"tax"};
    size_t i;

    fx_cert_pb(&cert, &sender_cert);
    for (i = 0; i < 2; i++) {
        cohort__shared_doc__init(&d[i]);
        cohort__doc_meta__init(&m[i]);
        m[i].type = "bank.statement";
        m[i].author = "bank";
        m[i].n_tags = 1;
        m[i].tags = tags;
        m[i].size = 5000 * i;
        d[i].doc_id = (ProtobufCBinaryData){16, ids[i]};
        d[i].revision = 1 + i;
        d[i].key = (ProtobufCBinaryData){32, key};
        d[i].content_hash = (ProtobufCBinaryData){32, hash};
        d[i].size = 5000 * i;
        d[i].cipher_size = i == 0 ? 24 + 21 : 24 + 2 * 21 + 5000;
        d[i].meta = &m[i];
        dp[i] = &d[i];
    }
    p.expires = FX_NOW + 100;
    p.max_reads = 3;
    g.share_id = (ProtobufCBinaryData){16, share_id};
    g.seq = seq;
    g.sender = &cert;
    g.recipient_pk = (ProtobufCBinaryData){32, tok.tk.sign_pk};
    g.policy = &p;
    g.n_docs = revoked ? 0 : 2;
    g.docs = dp;
    g.revoked = revoked;
    g.issued = FX_NOW;
    *len = cohort__share_grant__get_packed_size(&g);
    out = fx_alloc(*len + 1);
    cohort__share_grant__pack(&g, out + 1);
    (*len)++;
    return out;
}

void fuzz_seeds(void (*add)(const uint8_t *data, size_t size))
{
    Cohort__SignedGrant sg = COHORT__SIGNED_GRANT__INIT;
    uint8_t *grant, *bytes, sig[64];
    size_t len, n;

    setup();
    grant = grant_make(&len, 1, false);
    grant[0] = 0;
    add(grant, len);
    fx_sign(sig, TK_SIG_SHARE, grant + 1, len - 1, sender.sk);
    sg.grant = (ProtobufCBinaryData){len - 1, grant + 1};
    sg.signature = (ProtobufCBinaryData){64, sig};
    n = cohort__signed_grant__get_packed_size(&sg);
    bytes = fx_alloc(n + 1);
    bytes[0] = 1;
    cohort__signed_grant__pack(&sg, bytes + 1);
    add(bytes, n + 1);
    free(bytes);
    free(grant);
    grant = grant_make(&len, 2, true);
    grant[0] = 0;
    add(grant, len);
    free(grant);
}
