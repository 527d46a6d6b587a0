/*
 * A hand-built world for the token tests: authorities, a researcher,
 * provisioned tokens over memory flash (participant/pt_flash.c), a `health` table, signed plans,
 * and drivers for collection and aggregation sessions.
 *
 * Everything here is made with libsodium and protobuf-c directly, following
 * the wire contract of proto/cohort.proto and token/token.h; nothing comes
 * from querier/, so that these tests check the token against the contract
 * and not against another implementation of it.
 *
 * The header is included by several cmocka binaries (one per test_*.c), so
 * it holds only static inline functions. Helpers fail the running test
 * (cmocka assertions) when the world cannot be built; calls whose outcome
 * is under test return the token's status instead.
 */
#ifndef COHORT_TK_FIXTURE_H
#define COHORT_TK_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dirent.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <sodium.h>

#include "participant/participant.h"
#include "proto/cohort.pb-c.h"
#include "token/token.h"

/* The tests' clock: 2026-07-25, and 2026-01-01 as a DATE. */
#define FX_NOW INT64_C(1785000000)
#define FX_DAY INT64_C(86400)
#define FX_JAN1 INT64_C(20454)
#define FX_RESP_CAP (1u << 20)

/* ------------------------------------------------------------ memory */

static inline void *fx_alloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    assert_non_null(p);
    return p;
}

/* ------------------------------------------------------------ bytes */

/* A growing byte buffer: a document's file, a backup, what a read gave. */
struct fx_buf {
    uint8_t *p;
    size_t len, cap;
};

static inline void fx_buf_put(struct fx_buf *b, const uint8_t *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

static inline void fx_buf_free(struct fx_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* Whether the m bytes of needle (m > 0) stand anywhere in the n bytes of hay. */
static inline bool fx_contains(const uint8_t *hay, size_t n, const uint8_t *needle, size_t m)
{
    size_t i;
    for (i = 0; i + m <= n; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, m) == 0)
            return true;
    return false;
}

/* ------------------------------------------------------------ files */

/* The whole file in a buffer of *n bytes and a NUL after them (free it). */
static inline uint8_t *fx_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    uint8_t *p;
    long len;
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    len = ftell(f);
    assert_true(len >= 0);
    rewind(f);
    p = fx_alloc((size_t)len + 1);
    assert_int_equal(fread(p, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return p;
}

/* Removes path and, when it is a directory, everything below it; a
 * symbolic link is removed, never followed. What cannot be removed is left. */
static inline void fx_rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        char sub[4096];
        while (d != NULL && (e = readdir(d)) != NULL)
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
                (size_t)snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) < sizeof sub)
                fx_rm_tree(sub);
        if (d != NULL)
            closedir(d);
    }
    remove(path);
}

/* ------------------------------------------------------ keys, certs */

struct fx_key {
    uint8_t pk[32];
    uint8_t sk[64];
};

static inline void fx_key_make(struct fx_key *k)
{
    crypto_sign_keypair(k->pk, k->sk);
}

/* Ed25519 over prefix || msg. */
static inline void fx_sign(uint8_t sig[64], const char *prefix, const uint8_t *msg, size_t len,
                           const uint8_t sk[64])
{
    size_t pl = strlen(prefix);
    uint8_t *buf = fx_alloc(pl + len);
    memcpy(buf, prefix, pl);
    if (len)
        memcpy(buf + pl, msg, len);
    crypto_sign_detached(sig, NULL, buf, pl + len, sk);
    free(buf);
}

static inline int fx_verify(const uint8_t sig[64], const char *prefix, const uint8_t *msg,
                            size_t len, const uint8_t pk[32])
{
    size_t pl = strlen(prefix);
    uint8_t *buf = fx_alloc(pl + len);
    int rc;
    memcpy(buf, prefix, pl);
    if (len)
        memcpy(buf + pl, msg, len);
    rc = crypto_sign_verify_detached(sig, buf, pl + len, pk);
    free(buf);
    return rc;
}

struct fx_scope {
    const char *tables[4];
    const char *columns[16];
    const char *studies[4];
    double max_epsilon;
};

static inline size_t fx_count(const char *const *list, size_t max)
{
    size_t n = 0;
    while (n < max && list[n] != NULL)
        n++;
    return n;
}

struct fx_cert {
    uint8_t body[1024];
    size_t body_len;
    uint8_t sig[64];
};

/* A certificate for (role, subject, keys), signed by issuer. */
static inline void fx_cert_issue(struct fx_cert *c, int role, const char *subject,
                                 const uint8_t sign_pk[32], const uint8_t *box_pk,
                                 const struct fx_key *issuer, int64_t not_before, int64_t not_after,
                                 const struct fx_scope *scope)
{
    Cohort__CertBody b;
    Cohort__Scope sc;
    cohort__cert_body__init(&b);
    b.version = 1;
    b.role = (Cohort__Role)role;
    b.subject = (char *)subject;
    b.sign_pk.data = (uint8_t *)sign_pk;
    b.sign_pk.len = 32;
    if (box_pk != NULL) {
        b.box_pk.data = (uint8_t *)box_pk;
        b.box_pk.len = 32;
    }
    b.issuer_pk.data = (uint8_t *)issuer->pk;
    b.issuer_pk.len = 32;
    b.not_before = not_before;
    b.not_after = not_after;
    if (scope != NULL) {
        cohort__scope__init(&sc);
        sc.n_tables = fx_count(scope->tables, 4);
        sc.tables = (char **)scope->tables;
        sc.n_columns = fx_count(scope->columns, 16);
        sc.columns = (char **)scope->columns;
        sc.n_studies = fx_count(scope->studies, 4);
        sc.studies = (char **)scope->studies;
        sc.max_epsilon = scope->max_epsilon;
        b.scope = &sc;
    }
    c->body_len = cohort__cert_body__get_packed_size(&b);
    assert_true(c->body_len <= sizeof c->body);
    cohort__cert_body__pack(&b, c->body);
    fx_sign(c->sig, TK_SIG_CERT, c->body, c->body_len, issuer->sk);
}

/* A Certificate message over c's storage (valid while c lives). */
static inline void fx_cert_pb(Cohort__Certificate *out, const struct fx_cert *c)
{
    cohort__certificate__init(out);
    out->body.data = (uint8_t *)c->body;
    out->body.len = c->body_len;
    out->signature.data = (uint8_t *)c->sig;
    out->signature.len = 64;
}

struct fx_researcher {
    struct fx_key sign;
    uint8_t box_pk[32], box_sk[32];
    struct fx_cert cert;
};

static inline void fx_researcher_make(struct fx_researcher *r, const struct fx_key *authority,
                                      int64_t not_before, int64_t not_after,
                                      const struct fx_scope *scope)
{
    fx_key_make(&r->sign);
    crypto_box_keypair(r->box_pk, r->box_sk);
    fx_cert_issue(&r->cert, COHORT__ROLE__ROLE_RESEARCHER, "dr-who", r->sign.pk, r->box_pk,
                  authority, not_before, not_after, scope);
}

/* The world every test starts from. */
struct fx_world {
    struct fx_key maker;     /* manufacturer authority: certifies tokens */
    struct fx_key authority; /* study authority: certifies researchers */
    struct fx_researcher researcher;
    uint8_t secret[32]; /* the deployment's group secret */
};

static inline void fx_world_init(struct fx_world *w)
{
    assert_int_equal(tk_library_init(), TK_OK);
    fx_key_make(&w->maker);
    fx_key_make(&w->authority);
    fx_researcher_make(&w->researcher, &w->authority, FX_NOW - 30 * FX_DAY, FX_NOW + 365 * FX_DAY,
                       NULL);
    randombytes_buf(w->secret, sizeof w->secret);
}

/* ------------------------------------------------------------ tokens */

struct fx_token {
    struct tk_token tk;
    struct pt_memflash flash;
    uint8_t *arena;
    size_t arena_len;
    size_t resp_cap;
    size_t last_peak;     /* arena_peak of the last call */
    size_t max_peak;      /* the largest arena_peak seen */
    size_t last_resp_len; /* bytes of the last response */
};

/* A new token over empty memory flash, without secure memory (the image
 * stays in struct tk_token, as in the simulator). */
static inline void fx_token_init(struct fx_token *t, size_t arena_len)
{
    struct tk_flash fl;
    memset(t, 0, sizeof *t);
    t->arena_len = arena_len;
    t->arena = fx_alloc(arena_len ? arena_len : 1);
    t->resp_cap = FX_RESP_CAP;
    pt_memflash_init(&t->flash);
    fl = pt_memflash_flash(&t->flash);
    assert_int_equal(tk_token_init(&t->tk, &fl, NULL, t->arena, arena_len), TK_OK);
}

static inline void fx_token_free(struct fx_token *t)
{
    tk_token_wipe(&t->tk);
    free(t->arena);
    pt_memflash_free(&t->flash);
    memset(t, 0, sizeof *t);
}

/* Power the token off and on: a fresh struct tk_token opened from the
 * given image over the same flash (checked in full by tk_token_open). */
static inline void fx_token_reopen(struct fx_token *t, const uint8_t *image, size_t image_len)
{
    struct tk_flash fl = pt_memflash_flash(&t->flash);
    tk_token_wipe(&t->tk);
    assert_int_equal(tk_token_open(&t->tk, image, image_len, &fl, NULL, t->arena, t->arena_len),
                     TK_OK);
}

/* The token's live flash segment (NULL while it is empty and never written). */
static inline struct pt_memseg *fx_flash(struct fx_token *t)
{
    return pt_memflash_segment(&t->flash, t->tk.log.segment);
}

/* Bytes on the token's flash, every segment. */
static inline size_t fx_flash_size(const struct fx_token *t)
{
    size_t i, n = 0;
    for (i = 0; i < PT_MEMFLASH_SEGS; i++)
        if (t->flash.s[i].used)
            n += t->flash.s[i].len;
    return n;
}

/* Whether the n bytes of p stand anywhere on the token's flash, in any
 * segment in use (a key must never be there in clear). */
static inline bool fx_on_flash(const struct fx_token *t, const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < PT_MEMFLASH_SEGS; i++)
        if (t->flash.s[i].used && fx_contains(t->flash.s[i].p, t->flash.s[i].len, p, n))
            return true;
    return false;
}

/*
 * One call: req bytes in; returns the token's status and, if out is not
 * NULL, the decoded response (free with cohort__token_response__free_unpacked).
 * Checks the response's framing: it decodes, and carries the same status.
 */
static inline int fx_call_raw(struct fx_token *t, const uint8_t *req, size_t len,
                              Cohort__TokenResponse **out)
{
    uint8_t *resp = fx_alloc(t->resp_cap);
    size_t resp_len = 0, peak = 0;
    Cohort__TokenResponse *r;
    int rc;

    rc = tk_dispatch(&t->tk, t->arena, t->arena_len, req, len, resp, t->resp_cap, &resp_len, &peak);
    t->last_peak = peak;
    if (peak > t->max_peak)
        t->max_peak = peak;
    t->last_resp_len = resp_len;
    if (out != NULL)
        *out = NULL;
    if (resp_len == 0) {
        /* Only a response that does not fit at all may be empty. */
        assert_int_equal(rc, TK_ERR_RESPONSE_SPACE);
        free(resp);
        return rc;
    }
    r = cohort__token_response__unpack(NULL, resp_len, resp);
    assert_non_null(r);
    assert_int_equal(r->status, rc);
    assert_int_equal(r->arena_peak, peak);
    if (rc != TK_OK)
        assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY__NOT_SET);
    free(resp);
    if (out != NULL)
        *out = r;
    else
        cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

static inline uint8_t *fx_pack_request(const Cohort__TokenRequest *req, size_t *len)
{
    uint8_t *buf;
    *len = cohort__token_request__get_packed_size(req);
    buf = fx_alloc(*len);
    cohort__token_request__pack(req, buf);
    return buf;
}

static inline size_t fx_put_varint(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

/* A TokenRequest assembled by hand: `now`, then body field `field` holding body. */
static inline uint8_t *fx_raw_request(size_t *len, int64_t now, uint32_t field, const uint8_t *body,
                                      size_t body_len)
{
    uint8_t *buf = fx_alloc(32 + body_len);
    size_t n = 0;
    buf[n++] = (1 << 3) | 0;
    n += fx_put_varint(buf + n, (uint64_t)now);
    n += fx_put_varint(buf + n, ((uint64_t)field << 3) | 2);
    n += fx_put_varint(buf + n, body_len);
    if (body_len)
        memcpy(buf + n, body, body_len);
    *len = n + body_len;
    return buf;
}

static inline int fx_call(struct fx_token *t, const Cohort__TokenRequest *req,
                          Cohort__TokenResponse **out)
{
    size_t len;
    uint8_t *buf = fx_pack_request(req, &len);
    int rc = fx_call_raw(t, buf, len, out);
    free(buf);
    return rc;
}

static inline int fx_info(struct fx_token *t, Cohort__TokenResponse **out)
{
    Cohort__TokenRequest req;
    Cohort__GetInfo gi;
    cohort__token_request__init(&req);
    cohort__get_info__init(&gi);
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_INFO;
    req.info = &gi;
    return fx_call(t, &req, out);
}

static inline int fx_provision_begin(struct fx_token *t, const char *subject,
                                     Cohort__TokenResponse **out)
{
    Cohort__TokenRequest req;
    Cohort__ProvisionBegin pb;
    cohort__token_request__init(&req);
    cohort__provision_begin__init(&pb);
    pb.subject = (char *)subject;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_PROVISION_BEGIN;
    req.provision_begin = &pb;
    return fx_call(t, &req, out);
}

static inline int fx_provision_finish(struct fx_token *t, const struct fx_cert *cert,
                                      const uint8_t *sealed, size_t sealed_len,
                                      const uint8_t (*trusted)[32], size_t n_trusted)
{
    Cohort__TokenRequest req;
    Cohort__ProvisionFinish pf;
    Cohort__Certificate c;
    ProtobufCBinaryData tr[8];
    size_t i;
    assert_true(n_trusted <= 8);
    cohort__token_request__init(&req);
    cohort__provision_finish__init(&pf);
    fx_cert_pb(&c, cert);
    pf.device_cert = &c;
    pf.sealed_group_secret.data = (uint8_t *)sealed;
    pf.sealed_group_secret.len = sealed_len;
    for (i = 0; i < n_trusted; i++) {
        tr[i].data = (uint8_t *)trusted[i];
        tr[i].len = 32;
    }
    pf.n_trusted_authorities = n_trusted;
    pf.trusted_authorities = tr;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_PROVISION_FINISH;
    req.provision_finish = &pf;
    return fx_call(t, &req, NULL);
}

/* Set the owner's consent policy; the response (the policy in force) in *out if not NULL. */
static inline int fx_set_policy(struct fx_token *t, const Cohort__ConsentPolicy *p,
                                Cohort__TokenResponse **out)
{
    Cohort__TokenRequest req;
    Cohort__SetPolicy sp;
    cohort__token_request__init(&req);
    cohort__set_policy__init(&sp);
    sp.policy = (Cohort__ConsentPolicy *)p;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_SET_POLICY;
    req.set_policy = &sp;
    return fx_call(t, &req, out);
}

/* An owner who shares the health table with any trusted study, with
 * generous privacy budgets: the policy most token tests run under. */
static inline void fx_consent_all(struct fx_token *t)
{
    Cohort__ConsentPolicy p;
    char *tables[] = {"health"};
    cohort__consent_policy__init(&p);
    p.n_tables = 1;
    p.tables = tables;
    p.epsilon_per_study = 1000.0;
    p.epsilon_total = 1000.0;
    assert_int_equal(fx_set_policy(t, &p, NULL), TK_OK);
}

/* The whole provisioning ceremony; the token trusts the study authority,
 * and its owner consents to studies of the health table. */
static inline void fx_provision(struct fx_token *t, const struct fx_world *w, const char *subject)
{
    Cohort__TokenResponse *r;
    struct fx_cert cert;
    uint8_t sealed[32 + crypto_box_SEALBYTES];
    const Cohort__CertRequest *csr;

    assert_int_equal(fx_provision_begin(t, subject, &r), TK_OK);
    assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_CERT_REQUEST);
    csr = r->cert_request;
    assert_int_equal(csr->sign_pk.len, 32);
    assert_int_equal(csr->box_pk.len, 32);
    fx_cert_issue(&cert, COHORT__ROLE__ROLE_TOKEN, subject, csr->sign_pk.data, csr->box_pk.data,
                  &w->maker, FX_NOW - FX_DAY, FX_NOW + 365 * FX_DAY, NULL);
    crypto_box_seal(sealed, w->secret, 32, csr->box_pk.data);
    cohort__token_response__free_unpacked(r, NULL);
    assert_int_equal(fx_provision_finish(t, &cert, sealed, sizeof sealed, &w->authority.pk, 1),
                     TK_OK);
    fx_consent_all(t);
}

/* ------------------------------------------------------- documents */

/* A streamed request at `now`, by hand: DocWrite (field 20), DocRead (22)
 * or RestoreFeed (37), which carry the same three fields; so the session
 * and its length may be anything. Returns the token's status (fx_call_raw). */
static inline int fx_stream_call(struct fx_token *t, int64_t now, uint32_t field,
                                 const uint8_t *session, size_t sid_len, const uint8_t *data,
                                 size_t len, bool last, Cohort__TokenResponse **out)
{
    Cohort__DocWrite w = COHORT__DOC_WRITE__INIT;
    uint8_t *body, *req;
    size_t body_len, req_len;
    int rc;
    w.session = (ProtobufCBinaryData){sid_len, (uint8_t *)session};
    w.data = (ProtobufCBinaryData){len, (uint8_t *)data};
    w.last = last;
    body_len = cohort__doc_write__get_packed_size(&w);
    body = fx_alloc(body_len + 1);
    cohort__doc_write__pack(&w, body);
    req = fx_raw_request(&req_len, now, field, body, body_len);
    rc = fx_call_raw(t, req, req_len, out);
    free(req);
    free(body);
    return rc;
}

#ifdef COHORT_TK_INT_H
/* Helpers that read the token's log, for the tests that include
 * token/tk_int.h before this header. */

struct fx_key_find {
    const uint8_t *id;
    uint64_t rev;
    bool found;
    uint8_t key[32];
};

static inline int fx_key_find_fn(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len,
                                 uint64_t index)
{
    struct fx_key_find *k = ctx;
    Cohort__StoreRecord *sr;
    (void)a;
    (void)index;
    sr = cohort__store_record__unpack(NULL, len, plain);
    assert_non_null(sr);
    if (sr->body_case == COHORT__STORE_RECORD__BODY_DOC &&
        memcmp(sr->doc->doc_id.data, k->id, TK_DOC_ID_LEN) == 0 &&
        (k->rev == 0 || sr->doc->revision == k->rev)) {
        assert_int_equal(sr->doc->key.len, 32);
        memcpy(k->key, sr->doc->key.data, 32);
        k->found = true;
    }
    cohort__store_record__free_unpacked(sr, NULL);
    return TK_OK;
}

/* The key of revision rev of a document (0: its latest), read from the
 * token's log as the token reads it; false when no record holds it. */
static inline bool fx_doc_key(struct fx_token *t, const uint8_t *id, uint64_t rev, uint8_t key[32])
{
    struct fx_key_find k = {id, rev, false, {0}};
    struct tk_arena a;
    tk_arena_init(&a, t->arena, t->arena_len, 0);
    assert_int_equal(tk_log_scan(&t->tk, &a, false, fx_key_find_fn, &k), TK_OK);
    memcpy(key, k.key, 32);
    return k.found;
}
#endif

/* ------------------------------------------------------------ values */

struct fx_val {
    int type;
    int64_t i;
    const char *s;
    uint32_t scale;
    double d;
};

/* Brace initializers (usable in static tables) and expression forms. */
#define FVI_NULL                                                                                   \
    {                                                                                              \
        COHORT__VALUE_TYPE__VT_NULL, 0, NULL, 0, 0                                                 \
    }
#define FVI_INT(x)                                                                                 \
    {                                                                                              \
        COHORT__VALUE_TYPE__VT_INT, (x), NULL, 0, 0                                                \
    }
#define FVI_DATE(x)                                                                                \
    {                                                                                              \
        COHORT__VALUE_TYPE__VT_DATE, (x), NULL, 0, 0                                               \
    }
#define FVI_DEC(x, sc)                                                                             \
    {                                                                                              \
        COHORT__VALUE_TYPE__VT_DECIMAL, (x), NULL, (sc), 0                                         \
    }
#define FVI_TEXT(t)                                                                                \
    {                                                                                              \
        COHORT__VALUE_TYPE__VT_TEXT, 0, (t), 0, 0                                                  \
    }
#define FVI_DOUBLE(x)                                                                              \
    {                                                                                              \
        COHORT__VALUE_TYPE__VT_DOUBLE, 0, NULL, 0, (x)                                             \
    }
#define FV_NULL ((struct fx_val)FVI_NULL)
#define FV_INT(x) ((struct fx_val)FVI_INT(x))
#define FV_DATE(x) ((struct fx_val)FVI_DATE(x))
#define FV_DEC(x, sc) ((struct fx_val)FVI_DEC(x, sc))
#define FV_TEXT(t) ((struct fx_val)FVI_TEXT(t))
#define FV_DOUBLE(x) ((struct fx_val)FVI_DOUBLE(x))

static inline void fx_val_pb(Cohort__Value *pb, const struct fx_val *v)
{
    cohort__value__init(pb);
    pb->type = (Cohort__ValueType)v->type;
    pb->i = v->i;
    pb->scale = v->scale;
    pb->d = v->d;
    if (v->s != NULL) {
        pb->s.data = (uint8_t *)v->s;
        pb->s.len = strlen(v->s);
    }
}

/* ------------------------------------------------------ health table */

enum {
    FX_C_PARTICIPANT,
    FX_C_AGE,
    FX_C_SEX,
    FX_C_REGION,
    FX_C_DATE,
    FX_C_STEPS,
    FX_C_HR,
    FX_C_WEIGHT,
    FX_NCOLS
};

/* Nullable columns of a row: one bit per column index. */
#define FX_NULL(c) (1u << (c))

struct fx_row {
    int64_t participant, age;
    const char *sex, *region;
    int64_t date, steps, heart_rate, weight; /* weight in tenths of kg */
    unsigned nulls;
};

struct fx_schema {
    Cohort__TableSchema s;
    Cohort__Column cols[FX_NCOLS];
    Cohort__Column *ptrs[FX_NCOLS];
};

static inline void fx_health_schema(struct fx_schema *h)
{
    static const struct {
        const char *name;
        int type;
        uint32_t scale;
    } cols[FX_NCOLS] = {
        {"participant", COHORT__VALUE_TYPE__VT_INT, 0},
        {"age", COHORT__VALUE_TYPE__VT_INT, 0},
        {"sex", COHORT__VALUE_TYPE__VT_TEXT, 0},
        {"region", COHORT__VALUE_TYPE__VT_TEXT, 0},
        {"date", COHORT__VALUE_TYPE__VT_DATE, 0},
        {"steps", COHORT__VALUE_TYPE__VT_INT, 0},
        {"heart_rate", COHORT__VALUE_TYPE__VT_INT, 0},
        {"weight", COHORT__VALUE_TYPE__VT_DECIMAL, 1},
    };
    size_t i;
    cohort__table_schema__init(&h->s);
    h->s.name = "health";
    for (i = 0; i < FX_NCOLS; i++) {
        cohort__column__init(&h->cols[i]);
        h->cols[i].name = (char *)cols[i].name;
        h->cols[i].type = (Cohort__ValueType)cols[i].type;
        h->cols[i].scale = cols[i].scale;
        h->ptrs[i] = &h->cols[i];
    }
    h->s.n_columns = FX_NCOLS;
    h->s.columns = h->ptrs;
}

static inline struct fx_val fx_row_value(const struct fx_row *r, int c)
{
    if (r->nulls & FX_NULL(c))
        return FV_NULL;
    switch (c) {
    case FX_C_PARTICIPANT:
        return FV_INT(r->participant);
    case FX_C_AGE:
        return FV_INT(r->age);
    case FX_C_SEX:
        return FV_TEXT(r->sex);
    case FX_C_REGION:
        return FV_TEXT(r->region);
    case FX_C_DATE:
        return FV_DATE(r->date);
    case FX_C_STEPS:
        return FV_INT(r->steps);
    case FX_C_HR:
        return FV_INT(r->heart_rate);
    default:
        return FV_DEC(r->weight, 1);
    }
}

/* Rows as protobuf (freed by fx_rows_pb_free). */
struct fx_rows_pb {
    Cohort__Row *rows;
    Cohort__Row **ptrs;
    Cohort__Value *vals;
    Cohort__Value **vptrs;
    size_t n;
};

static inline void fx_rows_pb(struct fx_rows_pb *out, const struct fx_row *rows, size_t n)
{
    size_t i;
    int c;
    out->n = n;
    out->rows = fx_alloc(n * sizeof *out->rows);
    out->ptrs = fx_alloc(n * sizeof *out->ptrs);
    out->vals = fx_alloc(n * FX_NCOLS * sizeof *out->vals);
    out->vptrs = fx_alloc(n * FX_NCOLS * sizeof *out->vptrs);
    for (i = 0; i < n; i++) {
        cohort__row__init(&out->rows[i]);
        for (c = 0; c < FX_NCOLS; c++) {
            struct fx_val v = fx_row_value(&rows[i], c);
            fx_val_pb(&out->vals[i * FX_NCOLS + c], &v);
            out->vptrs[i * FX_NCOLS + c] = &out->vals[i * FX_NCOLS + c];
        }
        out->rows[i].n_values = FX_NCOLS;
        out->rows[i].values = &out->vptrs[i * FX_NCOLS];
        out->ptrs[i] = &out->rows[i];
    }
}

static inline void fx_rows_pb_free(struct fx_rows_pb *r)
{
    free(r->rows);
    free(r->ptrs);
    free(r->vals);
    free(r->vptrs);
}

static inline int fx_load_table(struct fx_token *t, Cohort__TableSchema *schema, Cohort__Row **rows,
                                size_t n)
{
    Cohort__TokenRequest req;
    Cohort__LoadTable lt;
    cohort__token_request__init(&req);
    cohort__load_table__init(&lt);
    lt.schema = schema;
    lt.n_rows = n;
    lt.rows = rows;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE;
    req.load_table = &lt;
    return fx_call(t, &req, NULL);
}

static inline int fx_load_health(struct fx_token *t, const struct fx_row *rows, size_t n)
{
    struct fx_schema h;
    struct fx_rows_pb pb;
    int rc;
    fx_health_schema(&h);
    fx_rows_pb(&pb, rows, n);
    rc = fx_load_table(t, &h.s, pb.ptrs, n);
    fx_rows_pb_free(&pb);
    return rc;
}

/* A small deterministic generator, so that every run sees the same data. */
static inline uint32_t fx_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return (uint32_t)(x >> 16);
}

/* n bytes of the generator's output from seed: a document's plaintext. */
static inline void fx_fill(uint8_t *p, size_t n, uint32_t seed)
{
    uint64_t s = seed * 2654435761u + 1;
    size_t i;
    for (i = 0; i < n; i++)
        p[i] = (uint8_t)(fx_rand(&s) >> 7);
}

static const char *const fx_regions[] = {"north", "south", "east", "west"};

/*
 * Rows of token number `who` (participant who + 1): between 0 and 6 rows,
 * with NULLs sprinkled in every nullable column, and two tokens (5 and 23)
 * that also live in the rare region "northwest".
 */
static inline size_t fx_gen_rows(struct fx_row *rows, size_t max, unsigned who)
{
    uint64_t st = 0x9e3779b97f4a7c15ull ^ ((uint64_t)(who + 1) * 0x100000001b3ull);
    size_t n = who % 7, i;
    int k;
    if (who == 5 || who == 23)
        n = n < 2 ? 2 : n;
    assert_true(n <= max);
    for (k = 0; k < 4; k++)
        fx_rand(&st);
    for (i = 0; i < n; i++) {
        struct fx_row *r = &rows[i];
        memset(r, 0, sizeof *r);
        r->participant = who + 1;
        r->age = 18 + fx_rand(&st) % 70;
        r->sex = fx_rand(&st) % 2 ? "F" : "M";
        r->region = fx_regions[fx_rand(&st) % 4];
        if ((who == 5 || who == 23) && i == 0)
            r->region = "northwest";
        r->date = FX_JAN1 + fx_rand(&st) % 365;
        r->steps = fx_rand(&st) % 20000;
        r->heart_rate = 50 + fx_rand(&st) % 70;
        r->weight = 450 + fx_rand(&st) % 600;
        if (fx_rand(&st) % 10 == 0)
            r->nulls |= FX_NULL(FX_C_AGE);
        if (fx_rand(&st) % 12 == 0)
            r->nulls |= FX_NULL(FX_C_SEX);
        if (fx_rand(&st) % 8 == 0)
            r->nulls |= FX_NULL(FX_C_STEPS);
        if (fx_rand(&st) % 6 == 0)
            r->nulls |= FX_NULL(FX_C_HR);
        if (fx_rand(&st) % 9 == 0)
            r->nulls |= FX_NULL(FX_C_WEIGHT);
    }
    return n;
}

/* ------------------------------------------------------------- plans */

struct fx_instr {
    int op;
    const char *column;
    uint32_t index;
    struct fx_val value;
    const struct fx_val *list;
    size_t n_list;
};

/* Instructions, as brace initializers. */
#define FI_COL(c)                                                                                  \
    {                                                                                              \
        COHORT__OP__OP_COLUMN, (c), 0, FVI_NULL, NULL, 0                                           \
    }
#define FI_CONST(v)                                                                                \
    {                                                                                              \
        COHORT__OP__OP_CONST, NULL, 0, v, NULL, 0                                                  \
    }
#define FI_AGG(i)                                                                                  \
    {                                                                                              \
        COHORT__OP__OP_AGGREGATE, NULL, (i), FVI_NULL, NULL, 0                                     \
    }
#define FI_OP(o)                                                                                   \
    {                                                                                              \
        COHORT__OP__OP_##o, NULL, 0, FVI_NULL, NULL, 0                                             \
    }
#define FI_LIKE(t)                                                                                 \
    {                                                                                              \
        COHORT__OP__OP_LIKE_PREFIX, NULL, 0, FVI_TEXT(t), NULL, 0                                  \
    }
#define FI_IN(l, n)                                                                                \
    {                                                                                              \
        COHORT__OP__OP_IN, NULL, 0, FVI_NULL, (l), (n)                                             \
    }

struct fx_agg {
    int func;
    const char *column;
};

/* Private limits of the token (token/tk_int.h) that tests probe from outside. */
#define FX_MAX_AGGS 16     /* TK_MAX_AGGS */
#define FX_MAX_CHAIN 4     /* TK_MAX_CHAIN */
#define FX_MAX_TUPLES 64   /* TK_MAX_TUPLES */
#define FX_PROGRAM_MAX 256 /* TK_PROGRAM_MAX */
#define FX_STACK_MAX 32    /* TK_STACK_MAX */
#define FX_AGGS_ROOM (FX_MAX_AGGS + 4)

struct fx_plan_spec {
    uint32_t version;
    const char *study, *protocol, *table;
    const Cohort__TableSchema *schema; /* NULL: the health schema */
    const char *group_by[8];
    size_t n_group;
    struct fx_agg aggs[FX_AGGS_ROOM];
    size_t n_aggs;
    const struct fx_instr *where;
    size_t n_where;
    const struct fx_instr *having;
    size_t n_having;
    uint32_t tuples, max_groups;
    int64_t issued_at, deadline, expires_at;
    uint32_t min_participants, min_group_size;
    double epsilon;
    int64_t contribution_bound; /* differential privacy: see token/tk_noise.c */
    uint32_t max_rows;
    /* The grouping protocols' parameters (Plan fields 22 to 26); 0 and
     * NULL leave them out, as s_agg wants. */
    uint32_t tag_buckets, fakes;
    const ProtobufCBinaryData *bounds; /* ed_hist's bucket_bounds */
    size_t n_bounds;
    uint32_t shuffle_rounds, shuffle_batch_min;
};

static inline void fx_plan_default(struct fx_plan_spec *s)
{
    memset(s, 0, sizeof *s);
    s->version = 1;
    s->study = "study-1";
    s->protocol = "s_agg";
    s->table = "health";
    s->group_by[0] = "region";
    s->n_group = 1;
    s->aggs[0] = (struct fx_agg){COHORT__AGG_FUNC__AGG_COUNT_STAR, NULL};
    s->aggs[1] = (struct fx_agg){COHORT__AGG_FUNC__AGG_SUM, "steps"};
    s->n_aggs = 2;
    s->tuples = 8;
    s->max_groups = 16;
    s->issued_at = FX_NOW - 60;
    s->deadline = FX_NOW + 3600;
    s->expires_at = FX_NOW + FX_DAY;
}

/* The program's instructions as protobuf, in one allocation set. */
struct fx_prog_pb {
    Cohort__Instr *ins;
    Cohort__Instr **ptrs;
    Cohort__Value *vals;
    Cohort__Value **lists;
};

static inline void fx_prog_pb(struct fx_prog_pb *o, const struct fx_instr *in, size_t n)
{
    size_t i, k, nl = 0;
    for (i = 0; i < n; i++)
        nl += in[i].n_list;
    o->ins = fx_alloc(n * sizeof *o->ins);
    o->ptrs = fx_alloc(n * sizeof *o->ptrs);
    o->vals = fx_alloc((n + nl) * sizeof *o->vals);
    o->lists = fx_alloc((nl + 1) * sizeof *o->lists);
    nl = 0;
    for (i = 0; i < n; i++) {
        Cohort__Instr *x = &o->ins[i];
        cohort__instr__init(x);
        x->op = (Cohort__Op)in[i].op;
        x->column = (char *)in[i].column;
        x->index = in[i].index;
        if (in[i].op == COHORT__OP__OP_CONST || in[i].op == COHORT__OP__OP_LIKE_PREFIX) {
            fx_val_pb(&o->vals[i], &in[i].value);
            x->value = &o->vals[i];
        }
        if (in[i].n_list > 0) {
            x->n_list = in[i].n_list;
            x->list = &o->lists[nl];
            for (k = 0; k < in[i].n_list; k++, nl++) {
                fx_val_pb(&o->vals[n + nl], &in[i].list[k]);
                o->lists[nl] = &o->vals[n + nl];
            }
        }
        o->ptrs[i] = x;
    }
}

static inline void fx_prog_pb_free(struct fx_prog_pb *o)
{
    free(o->ins);
    free(o->ptrs);
    free(o->vals);
    free(o->lists);
}

/* A plan, serialized (caller frees). */
static inline uint8_t *fx_plan_pack(const struct fx_plan_spec *s, size_t *len)
{
    Cohort__Plan p;
    Cohort__Privacy pr;
    Cohort__Aggregate ag[FX_AGGS_ROOM], *agp[FX_AGGS_ROOM];
    struct fx_schema h;
    struct fx_prog_pb w, hv;
    uint8_t nonce[16], *buf;
    size_t i;

    cohort__plan__init(&p);
    cohort__privacy__init(&pr);
    fx_health_schema(&h);
    randombytes_buf(nonce, sizeof nonce);
    p.version = s->version;
    p.nonce.data = nonce;
    p.nonce.len = sizeof nonce;
    p.study = (char *)s->study;
    p.protocol = (char *)s->protocol;
    p.table = (char *)s->table;
    p.n_group_by = s->n_group;
    p.group_by = (char **)s->group_by;
    for (i = 0; i < s->n_aggs; i++) {
        cohort__aggregate__init(&ag[i]);
        ag[i].func = (Cohort__AggFunc)s->aggs[i].func;
        ag[i].column = (char *)(s->aggs[i].column ? s->aggs[i].column : "");
        agp[i] = &ag[i];
    }
    p.n_aggregates = s->n_aggs;
    p.aggregates = agp;
    fx_prog_pb(&w, s->where, s->n_where);
    fx_prog_pb(&hv, s->having, s->n_having);
    p.n_where = s->n_where;
    p.where = w.ptrs;
    p.n_having = s->n_having;
    p.having = hv.ptrs;
    p.issued_at = s->issued_at;
    p.deadline = s->deadline;
    p.expires_at = s->expires_at;
    p.tuples_per_participant = s->tuples;
    p.max_groups = s->max_groups;
    pr.min_participants = s->min_participants;
    pr.min_group_size = s->min_group_size;
    pr.epsilon = s->epsilon;
    pr.contribution_bound = s->contribution_bound;
    pr.max_rows = s->max_rows;
    p.privacy = &pr;
    p.tag_buckets = s->tag_buckets;
    p.fakes = s->fakes;
    p.n_bucket_bounds = s->n_bounds;
    p.bucket_bounds = (ProtobufCBinaryData *)s->bounds;
    p.shuffle_rounds = s->shuffle_rounds;
    p.shuffle_batch_min = s->shuffle_batch_min;
    p.sql = "SELECT ... FROM health";
    p.schema = (Cohort__TableSchema *)(s->schema ? s->schema : &h.s);
    *len = cohort__plan__get_packed_size(&p);
    buf = fx_alloc(*len);
    cohort__plan__pack(&p, buf);
    fx_prog_pb_free(&w);
    fx_prog_pb_free(&hv);
    return buf;
}

/* A signed plan: the decoded SignedPlan (owns its memory) and its query id. */
struct fx_signed {
    Cohort__SignedPlan *sp;
    uint8_t query_id[TK_QUERY_ID_LEN];
};

static inline void fx_sign_plan_bytes(struct fx_signed *out, const uint8_t *plan, size_t plan_len,
                                      const uint8_t signer_sk[64], const struct fx_cert *chain,
                                      size_t n_chain)
{
    Cohort__SignedPlan sp;
    Cohort__Certificate c[FX_MAX_CHAIN + 1], *cp[FX_MAX_CHAIN + 1];
    uint8_t sig[64], *buf;
    size_t i, len;

    assert_true(n_chain <= FX_MAX_CHAIN + 1);
    fx_sign(sig, TK_SIG_PLAN, plan, plan_len, signer_sk);
    cohort__signed_plan__init(&sp);
    sp.plan.data = (uint8_t *)plan;
    sp.plan.len = plan_len;
    sp.signature.data = sig;
    sp.signature.len = 64;
    for (i = 0; i < n_chain; i++) {
        fx_cert_pb(&c[i], &chain[i]);
        cp[i] = &c[i];
    }
    sp.n_chain = n_chain;
    sp.chain = cp;
    len = cohort__signed_plan__get_packed_size(&sp);
    buf = fx_alloc(len);
    cohort__signed_plan__pack(&sp, buf);
    out->sp = cohort__signed_plan__unpack(NULL, len, buf);
    assert_non_null(out->sp);
    free(buf);
    tk_query_id(out->query_id, plan, plan_len);
}

/* Sign a plan spec as the world's researcher. */
static inline void fx_plan_sign(struct fx_signed *out, const struct fx_plan_spec *spec,
                                const struct fx_researcher *r)
{
    size_t len;
    uint8_t *plan = fx_plan_pack(spec, &len);
    fx_sign_plan_bytes(out, plan, len, r->sign.sk, &r->cert, 1);
    free(plan);
}

static inline void fx_signed_free(struct fx_signed *s)
{
    if (s->sp != NULL)
        cohort__signed_plan__free_unpacked(s->sp, NULL);
    s->sp = NULL;
}

/* ------------------------------------------------------- ciphertexts */

/* A list of ciphertexts, each its own decoded copy. */
struct fx_cts {
    Cohort__Ciphertext **v;
    size_t n, cap;
};

static inline Cohort__Ciphertext *fx_ct_copy(const Cohort__Ciphertext *ct)
{
    size_t len = cohort__ciphertext__get_packed_size(ct);
    uint8_t *buf = fx_alloc(len);
    Cohort__Ciphertext *c;
    cohort__ciphertext__pack(ct, buf);
    c = cohort__ciphertext__unpack(NULL, len, buf);
    assert_non_null(c);
    free(buf);
    return c;
}

static inline void fx_cts_push(struct fx_cts *l, const Cohort__Ciphertext *ct)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        assert_non_null(l->v);
    }
    l->v[l->n++] = fx_ct_copy(ct);
}

static inline void fx_cts_free(struct fx_cts *l)
{
    size_t i;
    for (i = 0; i < l->n; i++)
        cohort__ciphertext__free_unpacked(l->v[i], NULL);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Level-1 order: by contribution key, then chunk. */
static inline int fx_ct_cmp(const void *a, const void *b)
{
    const Cohort__Ciphertext *x = *(Cohort__Ciphertext *const *)a;
    const Cohort__Ciphertext *y = *(Cohort__Ciphertext *const *)b;
    int c = memcmp(x->key.data, y->key.data, x->key.len < y->key.len ? x->key.len : y->key.len);
    if (c != 0)
        return c;
    if (x->key.len != y->key.len)
        return x->key.len < y->key.len ? -1 : 1;
    return x->chunk < y->chunk ? -1 : x->chunk > y->chunk;
}

static inline void fx_cts_sort(struct fx_cts *l)
{
    qsort(l->v, l->n, sizeof *l->v, fx_ct_cmp);
}

/* ------------------------------------------------- collect, aggregate */

static inline uint8_t *fx_collect_request(size_t *len, int64_t now, const Cohort__SignedPlan *sp)
{
    Cohort__TokenRequest req;
    Cohort__Collect co;
    cohort__token_request__init(&req);
    cohort__collect__init(&co);
    co.plan = (Cohort__SignedPlan *)sp;
    req.now = now;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_COLLECT;
    req.collect = &co;
    return fx_pack_request(&req, len);
}

static inline int fx_collect(struct fx_token *t, int64_t now, const Cohort__SignedPlan *sp,
                             Cohort__TokenResponse **out)
{
    size_t len;
    uint8_t *req = fx_collect_request(&len, now, sp);
    int rc = fx_call_raw(t, req, len, out);
    free(req);
    return rc;
}

/* Collect on t and append its ciphertexts to l; returns the status. */
static inline int fx_collect_into(struct fx_token *t, int64_t now, const Cohort__SignedPlan *sp,
                                  struct fx_cts *l)
{
    Cohort__TokenResponse *r;
    size_t i;
    int rc = fx_collect(t, now, sp, &r);
    if (rc != TK_OK) {
        if (r != NULL)
            cohort__token_response__free_unpacked(r, NULL);
        return rc;
    }
    assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_CONTRIBUTION);
    for (i = 0; i < r->contribution->n_tuples; i++)
        fx_cts_push(l, r->contribution->tuples[i]);
    cohort__token_response__free_unpacked(r, NULL);
    return TK_OK;
}

/* AggBegin of a task of any stage (Cohort__Stage; s_agg's tasks are STAGE_MERGE). */
static inline uint8_t *fx_agg_begin_stage_request(size_t *len, int64_t now,
                                                  const Cohort__SignedPlan *sp, int stage,
                                                  uint32_t level, uint32_t partition, bool final)
{
    Cohort__TokenRequest req;
    Cohort__AggBegin ab;
    cohort__token_request__init(&req);
    cohort__agg_begin__init(&ab);
    ab.plan = (Cohort__SignedPlan *)sp;
    ab.level = level;
    ab.partition = partition;
    ab.final = final;
    ab.stage = (Cohort__Stage)stage;
    req.now = now;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_AGG_BEGIN;
    req.agg_begin = &ab;
    return fx_pack_request(&req, len);
}

static inline uint8_t *fx_agg_begin_request(size_t *len, int64_t now, const Cohort__SignedPlan *sp,
                                            uint32_t level, uint32_t partition, bool final)
{
    return fx_agg_begin_stage_request(len, now, sp, COHORT__STAGE__STAGE_MERGE, level, partition,
                                      final);
}

static inline int fx_agg_begin_stage(struct fx_token *t, int64_t now, const Cohort__SignedPlan *sp,
                                     int stage, uint32_t level, uint32_t partition, bool final,
                                     uint8_t session[TK_SESSION_ID_LEN])
{
    Cohort__TokenResponse *r;
    size_t len;
    uint8_t *req = fx_agg_begin_stage_request(&len, now, sp, stage, level, partition, final);
    int rc = fx_call_raw(t, req, len, &r);
    free(req);
    if (rc != TK_OK) {
        if (r != NULL)
            cohort__token_response__free_unpacked(r, NULL);
        return rc;
    }
    assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_SESSION);
    assert_int_equal(r->session->session.len, TK_SESSION_ID_LEN);
    memcpy(session, r->session->session.data, TK_SESSION_ID_LEN);
    assert_true(r->session->max_feed_bytes > 0);
    cohort__token_response__free_unpacked(r, NULL);
    return TK_OK;
}

static inline int fx_agg_begin(struct fx_token *t, int64_t now, const Cohort__SignedPlan *sp,
                               uint32_t level, uint32_t partition, bool final,
                               uint8_t session[TK_SESSION_ID_LEN])
{
    return fx_agg_begin_stage(t, now, sp, COHORT__STAGE__STAGE_MERGE, level, partition, final,
                              session);
}

static inline uint8_t *fx_agg_feed_request(size_t *len, int64_t now, const uint8_t *session,
                                           size_t session_len, Cohort__Ciphertext *const *cts,
                                           size_t n)
{
    Cohort__TokenRequest req;
    Cohort__AggFeed af;
    cohort__token_request__init(&req);
    cohort__agg_feed__init(&af);
    af.session.data = (uint8_t *)session;
    af.session.len = session_len;
    af.n_inputs = n;
    af.inputs = (Cohort__Ciphertext **)cts;
    req.now = now;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_AGG_FEED;
    req.agg_feed = &af;
    return fx_pack_request(&req, len);
}

static inline int fx_agg_feed(struct fx_token *t, int64_t now,
                              const uint8_t session[TK_SESSION_ID_LEN],
                              Cohort__Ciphertext *const *cts, size_t n)
{
    size_t len;
    uint8_t *req = fx_agg_feed_request(&len, now, session, TK_SESSION_ID_LEN, cts, n);
    int rc = fx_call_raw(t, req, len, NULL);
    free(req);
    return rc;
}

static inline uint8_t *fx_agg_end_request(size_t *len, int64_t now, const uint8_t *session,
                                          size_t session_len)
{
    Cohort__TokenRequest req;
    Cohort__AggEnd ae;
    cohort__token_request__init(&req);
    cohort__agg_end__init(&ae);
    ae.session.data = (uint8_t *)session;
    ae.session.len = session_len;
    req.now = now;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_AGG_END;
    req.agg_end = &ae;
    return fx_pack_request(&req, len);
}

static inline int fx_agg_end(struct fx_token *t, int64_t now,
                             const uint8_t session[TK_SESSION_ID_LEN], Cohort__TokenResponse **out)
{
    size_t len;
    uint8_t *req = fx_agg_end_request(&len, now, session, TK_SESSION_ID_LEN);
    int rc = fx_call_raw(t, req, len, out);
    free(req);
    return rc;
}

/*
 * One aggregation task on t: AggBegin (of the given stage), feeds of `feed`
 * inputs each, AggEnd. Non-final outputs are appended to partials; a final result is returned
 * in *result (free with cohort__sealed_result__free_unpacked). Returns the
 * first non-zero status.
 */
static inline int fx_aggregate_stage(struct fx_token *t, int64_t now, const Cohort__SignedPlan *sp,
                                     int stage, uint32_t level, uint32_t partition, bool final,
                                     Cohort__Ciphertext *const *in, size_t n, size_t feed,
                                     struct fx_cts *partials, Cohort__SealedResult **result)
{
    uint8_t session[TK_SESSION_ID_LEN];
    Cohort__TokenResponse *r;
    size_t i, k;
    int rc;

    if ((rc = fx_agg_begin_stage(t, now, sp, stage, level, partition, final, session)) != TK_OK)
        return rc;
    for (i = 0; i < n; i += feed) {
        size_t m = n - i < feed ? n - i : feed;
        if ((rc = fx_agg_feed(t, now, session, in + i, m)) != TK_OK)
            return rc;
    }
    if ((rc = fx_agg_end(t, now, session, &r)) != TK_OK) {
        if (r != NULL)
            cohort__token_response__free_unpacked(r, NULL);
        return rc;
    }
    assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_OUTPUT);
    if (final) {
        assert_int_equal(r->output->n_partials, 0);
        assert_non_null(r->output->result);
        if (result != NULL) {
            size_t len = cohort__sealed_result__get_packed_size(r->output->result);
            uint8_t *buf = fx_alloc(len);
            cohort__sealed_result__pack(r->output->result, buf);
            *result = cohort__sealed_result__unpack(NULL, len, buf);
            assert_non_null(*result);
            free(buf);
        }
    } else {
        assert_null(r->output->result);
        assert_true(r->output->n_partials > 0);
        for (k = 0; k < r->output->n_partials; k++)
            if (partials != NULL)
                fx_cts_push(partials, r->output->partials[k]);
    }
    cohort__token_response__free_unpacked(r, NULL);
    return TK_OK;
}

static inline int fx_aggregate(struct fx_token *t, int64_t now, const Cohort__SignedPlan *sp,
                               uint32_t level, uint32_t partition, bool final,
                               Cohort__Ciphertext *const *in, size_t n, size_t feed,
                               struct fx_cts *partials, Cohort__SealedResult **result)
{
    return fx_aggregate_stage(t, now, sp, COHORT__STAGE__STAGE_MERGE, level, partition, final, in,
                              n, feed, partials, result);
}

/*
 * Open a sealed result as the researcher: check the signer's certificate
 * (a token certified by the manufacturer) and the signature over
 * "cohort-result-v1" || query_id || digest || participants (8 bytes LE),
 * where digest is BLAKE2b-256 of each sealed part preceded by its length
 * (8 bytes LE), then unseal every part and decode their concatenation.
 * Fails the test if anything does not hold.
 */
static inline Cohort__ResultTable *fx_open_result(const Cohort__SealedResult *sr,
                                                  const struct fx_world *w,
                                                  const uint8_t query_id[TK_QUERY_ID_LEN])
{
    struct tk_cert_info info;
    uint8_t scratch[2048], h[32], msg[TK_QUERY_ID_LEN + 32 + 8], *plain, *cert;
    size_t cert_len, k, i, plain_len = 0, at = 0;
    crypto_generichash_state st;
    Cohort__ResultTable *rt;

    assert_non_null(sr->signer);
    cert_len = cohort__certificate__get_packed_size(sr->signer);
    cert = fx_alloc(cert_len);
    cohort__certificate__pack(sr->signer, cert);
    assert_int_equal(
        tk_cert_verify(&info, cert, cert_len, w->maker.pk, FX_NOW, scratch, sizeof scratch), TK_OK);
    free(cert);
    assert_int_equal(info.role, COHORT__ROLE__ROLE_TOKEN);
    assert_int_equal(sr->query_id.len, TK_QUERY_ID_LEN);
    assert_memory_equal(sr->query_id.data, query_id, TK_QUERY_ID_LEN);
    assert_int_equal(sr->signature.len, 64);
    assert_true(sr->n_sealed > 0);
    crypto_generichash_init(&st, NULL, 0, sizeof h);
    for (i = 0; i < sr->n_sealed; i++) {
        uint8_t len_le[8];
        for (k = 0; k < 8; k++)
            len_le[k] = (uint8_t)((uint64_t)sr->sealed[i].len >> (8 * k));
        crypto_generichash_update(&st, len_le, sizeof len_le);
        crypto_generichash_update(&st, sr->sealed[i].data, sr->sealed[i].len);
        assert_true(sr->sealed[i].len > crypto_box_SEALBYTES);
        assert_true(sr->sealed[i].len <= 4096 + crypto_box_SEALBYTES);
        plain_len += sr->sealed[i].len - crypto_box_SEALBYTES;
    }
    crypto_generichash_final(&st, h, sizeof h);
    memcpy(msg, query_id, TK_QUERY_ID_LEN);
    memcpy(msg + TK_QUERY_ID_LEN, h, 32);
    for (k = 0; k < 8; k++)
        msg[TK_QUERY_ID_LEN + 32 + k] = (uint8_t)(sr->participants >> (8 * k));
    assert_int_equal(fx_verify(sr->signature.data, TK_SIG_RESULT, msg, sizeof msg, info.sign_pk),
                     0);
    plain = fx_alloc(plain_len);
    for (i = 0; i < sr->n_sealed; i++) {
        assert_int_equal(crypto_box_seal_open(plain + at, sr->sealed[i].data, sr->sealed[i].len,
                                              w->researcher.box_pk, w->researcher.box_sk),
                         0);
        at += sr->sealed[i].len - crypto_box_SEALBYTES;
    }
    rt = cohort__result_table__unpack(NULL, plain_len, plain);
    assert_non_null(rt);
    free(plain);
    assert_int_equal(rt->query_id.len, TK_QUERY_ID_LEN);
    assert_memory_equal(rt->query_id.data, query_id, TK_QUERY_ID_LEN);
    assert_int_equal(rt->participants, sr->participants);
    return rt;
}

/* ---------------------------------------------------- state snapshots */

/* The token's state and its flash's bytes, to prove a call changed nothing. */
struct fx_snapshot {
    struct tk_token tk;
    struct pt_memseg seg[PT_MEMFLASH_SEGS]; /* copies */
};

static inline void fx_snapshot_take(struct fx_snapshot *s, const struct fx_token *t)
{
    size_t i;
    memcpy(&s->tk, &t->tk, sizeof s->tk);
    for (i = 0; i < PT_MEMFLASH_SEGS; i++) {
        s->seg[i] = t->flash.s[i];
        s->seg[i].p = fx_alloc(t->flash.s[i].len);
        if (t->flash.s[i].len)
            memcpy(s->seg[i].p, t->flash.s[i].p, t->flash.s[i].len);
    }
}

/* Equal, except the open-session field when ignore_session is set. */
static inline bool fx_snapshot_same(const struct fx_snapshot *s, const struct fx_token *t,
                                    bool ignore_session)
{
    struct tk_token now;
    size_t i;
    memcpy(&now, &t->tk, sizeof now);
    if (ignore_session)
        memcpy(now.session, s->tk.session, sizeof now.session);
    if (memcmp(&now, &s->tk, sizeof now) != 0)
        return false;
    for (i = 0; i < PT_MEMFLASH_SEGS; i++) {
        const struct pt_memseg *a = &s->seg[i], *b = &t->flash.s[i];
        if (a->used != b->used || (a->used && (a->seg != b->seg || a->len != b->len ||
                                               (a->len && memcmp(a->p, b->p, a->len) != 0))))
            return false;
    }
    return true;
}

static inline void fx_snapshot_check(const struct fx_snapshot *s, const struct fx_token *t,
                                     bool ignore_session)
{
    assert_true(fx_snapshot_same(s, t, ignore_session));
}

static inline void fx_snapshot_free(struct fx_snapshot *s)
{
    size_t i;
    for (i = 0; i < PT_MEMFLASH_SEGS; i++) {
        free(s->seg[i].p);
        s->seg[i].p = NULL;
    }
}

#endif
