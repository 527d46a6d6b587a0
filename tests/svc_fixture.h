/*
 * svc_fixture.h: the world shared by the querier service's tests
 * (test_service.c drives the service core in process, test_serve.c the
 * running service over nng): request bytes made by hand, real tokens (the
 * token core over memory flash, reached through the in-process link, with
 * the participant's agent core in front), provisioned by a maker authority
 * that seals the group secret to them, loaded with their owner's rows of
 * the health table and a consent policy; and plans compiled from SQL and
 * signed by a researcher.
 *
 * The including file defines ROWS_MAX (the most rows a token holds),
 * STUDY (the study every plan names) and DAY_S (a day in seconds) before
 * including this header. The header is included by more than one cmocka
 * binary, so it holds only static inline functions; every helper fails the
 * running test (cmocka assertions) when the world cannot be built.
 */
#ifndef COHORT_SVC_FIXTURE_H
#define COHORT_SVC_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "participant/participant.h"
#include "proto/cohort.pb-c.h"
#include "querier/querier.h"
#include "token/token.h"

#if !defined(ROWS_MAX) || !defined(STUDY) || !defined(DAY_S)
#error "define ROWS_MAX, STUDY and DAY_S before including svc_fixture.h"
#endif

/* ------------------------------------------------------------- bytes */

static inline void *xalloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);

    assert_non_null(p);
    return p;
}

static inline size_t put_varint(uint8_t *out, uint64_t v)
{
    size_t n = 0;

    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

/* Bytes (malloc'd). */
struct bytes {
    uint8_t *p;
    size_t n;
};

/* A length-delimited field `num` holding data. */
static inline struct bytes field(uint32_t num, const uint8_t *data, size_t len)
{
    struct bytes b;

    b.p = xalloc(len + 20);
    b.n = put_varint(b.p, ((uint64_t)num << 3) | 2u);
    b.n += put_varint(b.p + b.n, len);
    if (len > 0)
        memcpy(b.p + b.n, data, len);
    b.n += len;
    return b;
}

/* A ServiceRequest whose body `num` holds a message with field 1 = data
 * (data NULL: an empty body). */
static inline struct bytes request1(uint32_t num, const uint8_t *data, size_t len)
{
    struct bytes inner = {NULL, 0}, out;

    if (data != NULL)
        inner = field(1, data, len);
    out = field(num, inner.p, inner.n);
    free(inner.p);
    return out;
}

/* a then b, in one buffer; both are freed. */
static inline struct bytes concat(struct bytes a, struct bytes b)
{
    struct bytes c;

    c.p = xalloc(a.n + b.n);
    memcpy(c.p, a.p, a.n);
    memcpy(c.p + a.n, b.p, b.n);
    c.n = a.n + b.n;
    free(a.p);
    free(b.p);
    return c;
}

static inline struct bytes pack_request(const Cohort__ServiceRequest *req)
{
    struct bytes b;

    b.n = cohort__service_request__get_packed_size(req);
    b.p = xalloc(b.n);
    cohort__service_request__pack(req, b.p);
    return b;
}

static inline Cohort__ServiceRequest *unpack_request(const uint8_t *p, size_t n)
{
    Cohort__ServiceRequest *r = cohort__service_request__unpack(NULL, n, p);

    assert_non_null(r);
    return r;
}

static inline struct bytes req_task_result(uint64_t task_id, const uint8_t token[32],
                                           const uint8_t query[32])
{
    Cohort__ServiceRequest req = COHORT__SERVICE_REQUEST__INIT;
    Cohort__TaskResult tr = COHORT__TASK_RESULT__INIT;

    tr.task_id = task_id;
    tr.token_id.data = (uint8_t *)token;
    tr.token_id.len = 32;
    tr.query_id.data = (uint8_t *)query;
    tr.query_id.len = 32;
    req.body_case = COHORT__SERVICE_REQUEST__BODY_RESULT;
    req.result = &tr;
    return pack_request(&req);
}

/* ------------------------------------------------------------- plans */

struct plan {
    uint8_t *bytes; /* SignedPlan */
    size_t len;
    uint8_t id[32];
};

/* sql compiled for STUDY at now_s and signed by researcher, whose
 * certificate is cert; out->bytes is malloc'd (plan_free). */
static inline void plan_sign_as(struct plan *out, const char *sql, int64_t now_s,
                                const struct qr_identity *researcher, const uint8_t *cert,
                                size_t cert_len)
{
    struct qr_compile_opts opts;
    struct qr_sql_error err;
    uint8_t *plan;
    size_t plan_len;
    const uint8_t *chain[1] = {cert};
    size_t lens[1] = {cert_len};
    int rc;

    memset(&opts, 0, sizeof opts);
    memset(&err, 0, sizeof err);
    opts.study = STUDY;
    opts.now = now_s;
    opts.collect_seconds = 3600;
    opts.valid_seconds = DAY_S;
    rc = qr_sql_compile(&plan, &plan_len, sql, &opts, &err);
    if (rc != 0)
        print_error("%s: %s\n", sql, err.msg);
    assert_int_equal(rc, 0);
    tk_query_id(out->id, plan, plan_len);
    assert_int_equal(
        qr_plan_sign(&out->bytes, &out->len, plan, plan_len, researcher, chain, lens, 1), 0);
    free(plan);
}

static inline void plan_free(struct plan *p)
{
    free(p->bytes);
    memset(p, 0, sizeof *p);
}

/* ------------------------------------------------------------- tokens */

struct row {
    int64_t age, steps;
    const char *sex;
};

struct tok {
    unsigned who;
    struct tk_token tk;
    struct pt_memflash flash;
    uint8_t *arena;
    struct pt_inproc link;
    struct pt_agent ag;
    uint8_t id[32];
    uint64_t conn; /* the connection it was admitted on, where the test numbers them */
    struct row rows[ROWS_MAX];
    size_t n_rows;
};

static inline Cohort__TokenResponse *tok_call(struct tok *t, Cohort__TokenRequest *req)
{
    struct pt_link link = pt_inproc_link(&t->link);
    size_t len = cohort__token_request__get_packed_size(req), resp_len;
    uint8_t *buf = xalloc(len);
    const uint8_t *resp;
    Cohort__TokenResponse *r;

    cohort__token_request__pack(req, buf);
    assert_int_equal(link.transact(link.ctx, buf, len, &resp, &resp_len), 0);
    free(buf);
    r = cohort__token_response__unpack(NULL, resp_len, resp);
    assert_non_null(r);
    return r;
}

/* The owner's consent at now_s: the health table, to any study or to one
 * study only. */
static inline void tok_consent(struct tok *t, const char *only_study, int64_t now_s)
{
    Cohort__TokenRequest req;
    Cohort__SetPolicy sp;
    Cohort__ConsentPolicy pol;
    Cohort__TokenResponse *r;
    char *tables[] = {"health"};
    char *studies[] = {(char *)only_study};

    cohort__consent_policy__init(&pol);
    pol.n_tables = 1;
    pol.tables = tables;
    if (only_study != NULL) {
        pol.n_studies = 1;
        pol.studies = studies;
    }
    pol.epsilon_per_study = 10.0;
    pol.epsilon_total = 10.0;
    cohort__set_policy__init(&sp);
    sp.policy = &pol;
    cohort__token_request__init(&req);
    req.now = now_s - 60;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_SET_POLICY;
    req.set_policy = &sp;
    r = tok_call(t, &req);
    assert_int_equal(r->status, 0);
    cohort__token_response__free_unpacked(r, NULL);
}

/* One column of one row of the health table. */
static inline void cell(Cohort__Value *v, const struct tok *t, const struct row *row, size_t k,
                        const char *col)
{
    cohort__value__init(v);
    if (strcmp(col, "participant") == 0) {
        v->type = COHORT__VALUE_TYPE__VT_INT;
        v->i = t->who + 1;
    } else if (strcmp(col, "age") == 0) {
        v->type = COHORT__VALUE_TYPE__VT_INT;
        v->i = row->age;
    } else if (strcmp(col, "sex") == 0) {
        v->type = COHORT__VALUE_TYPE__VT_TEXT;
        v->s.data = (uint8_t *)row->sex;
        v->s.len = strlen(row->sex);
    } else if (strcmp(col, "region") == 0) {
        v->type = COHORT__VALUE_TYPE__VT_TEXT;
        v->s.data = (uint8_t *)"R001";
        v->s.len = 4;
    } else if (strcmp(col, "date") == 0) {
        v->type = COHORT__VALUE_TYPE__VT_DATE;
        v->i = 20454 + (int64_t)k;
    } else if (strcmp(col, "steps") == 0) {
        v->type = COHORT__VALUE_TYPE__VT_INT;
        v->i = row->steps;
    } else if (strcmp(col, "heart_rate") == 0) {
        v->type = COHORT__VALUE_TYPE__VT_INT;
        v->i = 60 + (int64_t)k;
    } else if (strcmp(col, "weight") == 0) {
        v->type = COHORT__VALUE_TYPE__VT_DECIMAL;
        v->i = 700 + t->who;
        v->scale = 1;
    } else if (strcmp(col, "age_band") == 0) {
        v->type = COHORT__VALUE_TYPE__VT_TEXT;
        v->s.data = (uint8_t *)"20-29";
        v->s.len = 5;
    } else {
        v->type = COHORT__VALUE_TYPE__VT_NULL;
    }
}

/* The owner loads t->rows into the health table at now_s. */
static inline void tok_load(struct tok *t, int64_t now_s)
{
    const struct qr_table *table = qr_catalog_find("health");
    Cohort__TableSchema *schema;
    Cohort__TokenRequest req;
    Cohort__LoadTable lt;
    Cohort__TokenResponse *r;
    Cohort__Row prow[ROWS_MAX], *prowp[ROWS_MAX];
    Cohort__Value vals[ROWS_MAX][QR_CATALOG_COLUMNS_MAX], *valp[ROWS_MAX][QR_CATALOG_COLUMNS_MAX];
    uint8_t *sb;
    size_t sl;

    assert_non_null(table);
    assert_int_equal(qr_catalog_schema(table, &sb, &sl), 0);
    schema = cohort__table_schema__unpack(NULL, sl, sb);
    free(sb);
    assert_non_null(schema);
    assert_true(schema->n_columns <= QR_CATALOG_COLUMNS_MAX);
    for (size_t k = 0; k < t->n_rows; k++) {
        cohort__row__init(&prow[k]);
        for (size_t c = 0; c < schema->n_columns; c++) {
            cell(&vals[k][c], t, &t->rows[k], k, schema->columns[c]->name);
            valp[k][c] = &vals[k][c];
        }
        prow[k].n_values = schema->n_columns;
        prow[k].values = valp[k];
        prowp[k] = &prow[k];
    }
    cohort__load_table__init(&lt);
    lt.schema = schema;
    lt.n_rows = t->n_rows;
    lt.rows = prowp;
    cohort__token_request__init(&req);
    req.now = now_s - 60;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE;
    req.load_table = &lt;
    r = tok_call(t, &req);
    assert_int_equal(r->status, 0);
    cohort__token_response__free_unpacked(r, NULL);
    cohort__table_schema__free_unpacked(schema, NULL);
}

/*
 * The ceremony at now_s: a new token number `who` makes its keys
 * (ProvisionBegin) under `subject`, maker certifies its request and seals
 * the group secret to it, the token takes its certificate and trusts
 * `plans` for plans (ProvisionFinish). Its owner has loaded nothing yet
 * and its agent is not started (tok_start). tok_free releases it.
 */
static inline void tok_provision(struct tok *t, const struct qr_identity *maker,
                                 const struct qr_identity *plans, const uint8_t secret[32],
                                 unsigned who, const char *subject, int64_t now_s)
{
    struct tk_flash fl;
    Cohort__TokenRequest req;
    Cohort__ProvisionBegin pb;
    Cohort__ProvisionFinish pf;
    Cohort__TokenResponse *r;
    Cohort__Certificate *cert;
    ProtobufCBinaryData trusted;
    uint8_t *csr, *cert_bytes, sealed[32 + crypto_box_SEALBYTES];
    size_t csr_len, cert_len;

    memset(t, 0, sizeof *t);
    t->who = who;
    t->arena = xalloc(TK_ARENA_DEFAULT);
    pt_memflash_init(&t->flash);
    fl = pt_memflash_flash(&t->flash);
    assert_int_equal(tk_token_init(&t->tk, &fl, NULL, t->arena, TK_ARENA_DEFAULT), TK_OK);
    pt_inproc_init(&t->link, &t->tk, t->arena, TK_ARENA_DEFAULT);

    cohort__provision_begin__init(&pb);
    pb.subject = (char *)subject;
    cohort__token_request__init(&req);
    req.now = now_s - 60;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_PROVISION_BEGIN;
    req.provision_begin = &pb;
    r = tok_call(t, &req);
    assert_int_equal(r->status, 0);
    assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_CERT_REQUEST);
    assert_int_equal(r->cert_request->sign_pk.len, 32);
    assert_int_equal(r->cert_request->box_pk.len, 32);
    memcpy(t->id, r->cert_request->sign_pk.data, 32);
    csr_len = cohort__cert_request__get_packed_size(r->cert_request);
    csr = xalloc(csr_len);
    cohort__cert_request__pack(r->cert_request, csr);
    assert_int_equal(qr_cert_issue_for_request(&cert_bytes, &cert_len, maker, csr, csr_len,
                                               now_s - DAY_S, now_s + 365 * DAY_S),
                     0);
    assert_int_equal(crypto_box_seal(sealed, secret, 32, r->cert_request->box_pk.data), 0);
    free(csr);
    cohort__token_response__free_unpacked(r, NULL);

    cert = cohort__certificate__unpack(NULL, cert_len, cert_bytes);
    free(cert_bytes);
    assert_non_null(cert);
    cohort__provision_finish__init(&pf);
    pf.device_cert = cert;
    pf.sealed_group_secret.data = sealed;
    pf.sealed_group_secret.len = sizeof sealed;
    trusted.data = (uint8_t *)plans->sign_pk;
    trusted.len = 32;
    pf.n_trusted_authorities = 1;
    pf.trusted_authorities = &trusted;
    cohort__token_request__init(&req);
    req.now = now_s - 60;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_PROVISION_FINISH;
    req.provision_finish = &pf;
    r = tok_call(t, &req);
    cohort__certificate__free_unpacked(cert, NULL);
    assert_int_equal(r->status, 0);
    cohort__token_response__free_unpacked(r, NULL);
}

/* The owner loads t->rows and consents to the health table for any study;
 * then the token's agent starts. */
static inline void tok_start(struct tok *t, int64_t now_s)
{
    struct pt_link link;

    tok_load(t, now_s);
    tok_consent(t, NULL, now_s);
    link = pt_inproc_link(&t->link);
    pt_agent_init(&t->ag, &link, t->id);
}

static inline void tok_free(struct tok *t)
{
    tk_token_wipe(&t->tk);
    pt_inproc_free(&t->link);
    pt_memflash_free(&t->flash);
    free(t->arena);
}

/* The WorkRequest t's agent makes (malloc'd). */
static inline struct bytes work_request(struct tok *t)
{
    struct bytes b;

    assert_int_equal(pt_agent_work_request(&t->ag, &b.p, &b.n), PT_OK);
    return b;
}

#endif /* COHORT_SVC_FIXTURE_H */
