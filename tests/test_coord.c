/*
 * test_coord.c: the coordinator state machine (querier/qr_coord.c) driven
 * through its only doors, ServiceRequest bytes in and ServiceReply bytes
 * out, plus the clock.
 *
 * The plans are real (composed here, signed with qr_plan_sign); the
 * ciphertexts are fake but well shaped: random nonces and boxes with the
 * right bindings. The aggregation layout is checked against a plain
 * reference computed in this file from what the test itself uploaded and
 * returned: sort by (key, chunk), cut by token RAM, group sources by F.
 * Every hostile input has a case with its exact error code and a check that
 * nothing but the message counters and uploads_rejected changed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "proto/cohort.pb-c.h"
#include "querier/querier.h"
#include "token/token.h"

#define NOW_S 1767225600 /* 2026-01-01 */
#define NOW_MS ((int64_t)NOW_S * 1000)
#define DEADLINE_S (NOW_S + 3600)
#define BOX_LEN 16u
#define PARTIAL_BOX_LEN 20u
#define MAX_BLOBS 4096u

/* ------------------------------------------------------------ fixture */

struct blob {
    uint8_t *b;
    size_t n;
};

struct fx {
    struct qr_identity authority, researcher;
    uint8_t *signed_plan;
    size_t signed_plan_len;
    uint8_t query_id[32];
    uint32_t k;
    struct qr_coord_config cfg;
    qr_coord *c;
    /* Reference: every collection tuple uploaded and accepted, packed. */
    struct {
        uint8_t key[16];
        uint32_t chunk;
        struct blob packed;
    } ref[MAX_BLOBS];
    size_t n_ref;
};

/* Test bytes: deterministic, and with no system call per fill. */
static void fill(void *buf, size_t len)
{
    static uint64_t counter;
    uint8_t seed[randombytes_SEEDBYTES] = {0};

    counter++;
    memcpy(seed, &counter, sizeof counter);
    randombytes_buf_deterministic(buf, len, seed);
}

static void blob_free(struct blob *b)
{
    free(b->b);
    b->b = NULL;
    b->n = 0;
}

static void token_id(uint8_t out[32], uint32_t i)
{
    memset(out, 0xa5, 32);
    memcpy(out, &i, sizeof i);
}

/* Keys in an order unrelated to upload order. */
static void contrib_key(uint8_t out[16], uint32_t i)
{
    crypto_generichash(out, 16, (const uint8_t *)&i, sizeof i, NULL, 0);
}

static void fx_init(struct fx *f, uint64_t size, uint32_t k, uint32_t min_participants,
                    const struct qr_coord_config *cfg)
{
    Cohort__Plan plan = COHORT__PLAN__INIT;
    Cohort__Privacy privacy = COHORT__PRIVACY__INIT;
    uint8_t nonce[16], *plan_buf, *cert;
    size_t plan_len, cert_len;
    const uint8_t *chain[1];
    size_t lens[1];

    memset(f, 0, sizeof *f);
    assert_int_equal(qr_identity_generate(&f->authority), 0);
    assert_int_equal(qr_identity_generate(&f->researcher), 0);
    assert_int_equal(qr_cert_issue(&cert, &cert_len, &f->authority, COHORT__ROLE__ROLE_RESEARCHER,
                                   "researcher", f->researcher.sign_pk, f->researcher.box_pk, NOW_S,
                                   NOW_S + 86400, NULL),
                     0);

    fill(nonce, sizeof nonce);
    plan.version = 1;
    plan.nonce.data = nonce;
    plan.nonce.len = sizeof nonce;
    plan.study = "coord-test";
    plan.protocol = "s_agg";
    plan.table = "health";
    plan.size = size;
    plan.issued_at = NOW_S;
    plan.deadline = DEADLINE_S;
    plan.expires_at = DEADLINE_S + 86400;
    plan.tuples_per_participant = k;
    plan.max_groups = 16;
    privacy.min_participants = min_participants;
    plan.privacy = &privacy;
    plan_len = cohort__plan__get_packed_size(&plan);
    plan_buf = malloc(plan_len);
    assert_non_null(plan_buf);
    cohort__plan__pack(&plan, plan_buf);
    tk_query_id(f->query_id, plan_buf, plan_len);

    chain[0] = cert;
    lens[0] = cert_len;
    assert_int_equal(qr_plan_sign(&f->signed_plan, &f->signed_plan_len, plan_buf, plan_len,
                                  &f->researcher, chain, lens, 1),
                     0);
    free(plan_buf);
    free(cert);

    f->k = k;
    if (cfg != NULL)
        f->cfg = *cfg;
    else
        qr_coord_config_default(&f->cfg);
    assert_int_equal(qr_coord_new(&f->c, f->signed_plan, f->signed_plan_len, &f->cfg, NOW_MS), 0);
}

static void fx_done(struct fx *f)
{
    qr_coord_free(f->c);
    free(f->signed_plan);
    for (size_t i = 0; i < f->n_ref; i++)
        blob_free(&f->ref[i].packed);
    qr_identity_wipe(&f->authority);
    qr_identity_wipe(&f->researcher);
}

static struct qr_coord_stats stats(const struct fx *f)
{
    struct qr_coord_stats st;

    qr_coord_stats(f->c, &st);
    return st;
}

/* ------------------------------------------------------------ requests */

static uint8_t *pack_request(const Cohort__ServiceRequest *req, size_t *len)
{
    uint8_t *out;

    *len = cohort__service_request__get_packed_size(req);
    out = malloc(*len ? *len : 1);
    assert_non_null(out);
    cohort__service_request__pack(req, out);
    return out;
}

static uint8_t *req_work(uint32_t token, size_t *len)
{
    Cohort__ServiceRequest req = COHORT__SERVICE_REQUEST__INIT;
    Cohort__WorkRequest work = COHORT__WORK_REQUEST__INIT;
    uint8_t id[32];

    token_id(id, token);
    work.token_id.data = id;
    work.token_id.len = sizeof id;
    req.body_case = COHORT__SERVICE_REQUEST__BODY_WORK;
    req.work = &work;
    return pack_request(&req, len);
}

#define TUPLES_CAP 9u
#define PARTS_CAP 8u
#define PARTIAL_BOX_CAP 64u

/* Everything an upload is built from; a hostile case bends one field. */
struct upload_msg {
    Cohort__ServiceRequest req;
    Cohort__Upload upload;
    Cohort__Contribution contrib;
    Cohort__Ciphertext tuples[TUPLES_CAP];
    Cohort__Ciphertext *ptrs[TUPLES_CAP];
    uint8_t id[32];
    uint8_t query_id[32];
    uint8_t key[16];
    uint8_t tag[8];
    uint8_t nonces[TUPLES_CAP][24];
    uint8_t boxes[TUPLES_CAP][BOX_LEN];
    uint8_t big_box[4097];
};

/* A well-shaped upload of f->k tuples (TUPLES_CAP are filled in). */
static struct upload_msg *upload_build(const struct fx *f, uint32_t token, uint32_t key)
{
    struct upload_msg *u = calloc(1, sizeof *u);

    assert_non_null(u);
    assert_true(f->k < TUPLES_CAP);
    u->req = (Cohort__ServiceRequest)COHORT__SERVICE_REQUEST__INIT;
    u->upload = (Cohort__Upload)COHORT__UPLOAD__INIT;
    u->contrib = (Cohort__Contribution)COHORT__CONTRIBUTION__INIT;
    token_id(u->id, token);
    contrib_key(u->key, key);
    memcpy(u->query_id, f->query_id, 32);
    memcpy(u->tag, f->query_id, 8);
    fill(u->nonces, sizeof u->nonces);
    fill(u->boxes, sizeof u->boxes);
    fill(u->big_box, sizeof u->big_box);
    for (uint32_t i = 0; i < TUPLES_CAP; i++) {
        Cohort__Ciphertext *t = &u->tuples[i];

        *t = (Cohort__Ciphertext)COHORT__CIPHERTEXT__INIT;
        t->query.data = u->tag;
        t->query.len = 8;
        t->phase = COHORT__PHASE__PHASE_COLLECT;
        t->chunk = i;
        t->nchunks = f->k;
        t->key.data = u->key;
        t->key.len = 16;
        t->nonce.data = u->nonces[i];
        t->nonce.len = 24;
        t->box.data = u->boxes[i];
        t->box.len = BOX_LEN;
        u->ptrs[i] = t;
    }
    u->contrib.query_id.data = u->query_id;
    u->contrib.query_id.len = 32;
    u->contrib.key.data = u->key;
    u->contrib.key.len = 16;
    u->contrib.n_tuples = f->k;
    u->contrib.tuples = u->ptrs;
    u->upload.token_id.data = u->id;
    u->upload.token_id.len = 32;
    u->upload.contribution = &u->contrib;
    u->req.body_case = COHORT__SERVICE_REQUEST__BODY_UPLOAD;
    u->req.upload = &u->upload;
    return u;
}

/* The packed size of a collection tuple of this test's shape, chunk k-1. */
static size_t tuple_size(uint32_t k)
{
    struct fx f;
    struct upload_msg *u;
    size_t n;

    memset(&f, 0, sizeof f);
    f.k = k;
    u = upload_build(&f, 0, 0);
    n = cohort__ciphertext__get_packed_size(&u->tuples[k - 1]);
    free(u);
    return n;
}

/* Everything a task result is built from. */
struct result_msg {
    Cohort__ServiceRequest req;
    Cohort__TaskResult tr;
    Cohort__AggOutput out;
    Cohort__SealedResult sr;
    Cohort__Certificate signer;
    Cohort__Ciphertext parts[PARTS_CAP];
    Cohort__Ciphertext *ptrs[PARTS_CAP];
    uint8_t id[32];
    uint8_t tag[8];
    uint8_t query_id[32];
    uint8_t sealed[80];
    ProtobufCBinaryData sealed_part;
    uint8_t sig[64];
    uint8_t nonces[PARTS_CAP][24];
    uint8_t boxes[PARTS_CAP][PARTIAL_BOX_CAP];
};

/* A valid result for a task: m partials, or a SealedResult if final. */
static struct result_msg *result_build(const struct fx *f, uint64_t task_id, uint32_t token,
                                       uint32_t level, uint32_t partition, int final, size_t m,
                                       size_t box_len)
{
    struct result_msg *r = calloc(1, sizeof *r);

    assert_non_null(r);
    assert_true(m <= PARTS_CAP && box_len <= PARTIAL_BOX_CAP);
    r->req = (Cohort__ServiceRequest)COHORT__SERVICE_REQUEST__INIT;
    r->tr = (Cohort__TaskResult)COHORT__TASK_RESULT__INIT;
    r->out = (Cohort__AggOutput)COHORT__AGG_OUTPUT__INIT;
    r->sr = (Cohort__SealedResult)COHORT__SEALED_RESULT__INIT;
    r->signer = (Cohort__Certificate)COHORT__CERTIFICATE__INIT;
    token_id(r->id, token);
    memcpy(r->tag, f->query_id, 8);
    memcpy(r->query_id, f->query_id, 32);
    fill(r->nonces, sizeof r->nonces);
    fill(r->boxes, sizeof r->boxes);
    fill(r->sealed, sizeof r->sealed);
    fill(r->sig, sizeof r->sig);
    for (uint32_t j = 0; j < PARTS_CAP; j++) {
        Cohort__Ciphertext *t = &r->parts[j];

        *t = (Cohort__Ciphertext)COHORT__CIPHERTEXT__INIT;
        t->query.data = r->tag;
        t->query.len = 8;
        t->phase = COHORT__PHASE__PHASE_AGGREGATE;
        t->level = level;
        t->partition = partition;
        t->chunk = j;
        t->nchunks = (uint32_t)m;
        t->nonce.data = r->nonces[j];
        t->nonce.len = 24;
        t->box.data = r->boxes[j];
        t->box.len = box_len;
        r->ptrs[j] = t;
    }
    if (final) {
        r->signer.body.data = r->sealed;
        r->signer.body.len = 16;
        r->signer.signature.data = r->sig;
        r->signer.signature.len = 64;
        r->sr.query_id.data = r->query_id;
        r->sr.query_id.len = 32;
        r->sealed_part.data = r->sealed;
        r->sealed_part.len = sizeof r->sealed;
        r->sr.n_sealed = 1;
        r->sr.sealed = &r->sealed_part;
        r->sr.participants = 5;
        r->sr.signer = &r->signer;
        r->sr.signature.data = r->sig;
        r->sr.signature.len = 64;
        r->out.result = &r->sr;
    } else {
        r->out.n_partials = m;
        r->out.partials = r->ptrs;
    }
    r->tr.task_id = task_id;
    r->tr.token_id.data = r->id;
    r->tr.token_id.len = 32;
    r->tr.output = &r->out;
    r->req.body_case = COHORT__SERVICE_REQUEST__BODY_RESULT;
    r->req.result = &r->tr;
    return r;
}

static uint8_t *req_failure(uint64_t task_id, uint32_t token, int32_t status, size_t *len)
{
    Cohort__ServiceRequest req = COHORT__SERVICE_REQUEST__INIT;
    Cohort__TaskResult tr = COHORT__TASK_RESULT__INIT;
    uint8_t id[32];

    token_id(id, token);
    tr.task_id = task_id;
    tr.token_id.data = id;
    tr.token_id.len = 32;
    tr.status = status;
    req.body_case = COHORT__SERVICE_REQUEST__BODY_RESULT;
    req.result = &tr;
    return pack_request(&req, len);
}

/* ------------------------------------------------------------- driving */

/*
 * Hand a request to the coordinator (req is freed) and check the reply's
 * envelope: it decodes, carries the returned status, and an error text that
 * is the code's fixed description.
 */
static int send(struct fx *f, int64_t now_ms, uint8_t *req, size_t len, Cohort__ServiceReply **out)
{
    Cohort__ServiceReply *r;
    uint8_t *rep = NULL;
    size_t rep_len = 0;
    int rc;

    rc = qr_coord_handle(f->c, now_ms, req, len, &rep, &rep_len);
    free(req);
    assert_non_null(rep);
    r = cohort__service_reply__unpack(NULL, rep_len, rep);
    free(rep);
    assert_non_null(r);
    assert_int_equal(r->status, rc);
    if (rc != 0) {
        assert_string_equal(r->error, qr_strerror(rc));
        assert_null(r->work);
    } else {
        assert_string_equal(r->error, "");
    }
    if (out != NULL)
        *out = r;
    else
        cohort__service_reply__free_unpacked(r, NULL);
    return rc;
}

static int send_upload(struct fx *f, int64_t now_ms, struct upload_msg *u)
{
    size_t len;
    uint8_t *req = pack_request(&u->req, &len);

    return send(f, now_ms, req, len, NULL);
}

static int send_result(struct fx *f, int64_t now_ms, struct result_msg *r)
{
    size_t len;
    uint8_t *req = pack_request(&r->req, &len);

    return send(f, now_ms, req, len, NULL);
}

static struct blob pack_ct(const Cohort__Ciphertext *ct)
{
    struct blob b;

    b.n = cohort__ciphertext__get_packed_size(ct);
    b.b = malloc(b.n);
    assert_non_null(b.b);
    cohort__ciphertext__pack(ct, b.b);
    return b;
}

/* Upload a contribution that must be accepted; remember its tuples. */
static void upload_ok(struct fx *f, int64_t now_ms, uint32_t token, uint32_t key, int record)
{
    struct upload_msg *u = upload_build(f, token, key);

    assert_int_equal(send_upload(f, now_ms, u), 0);
    for (uint32_t i = 0; record && i < f->k; i++) {
        assert_true(f->n_ref < MAX_BLOBS);
        memcpy(f->ref[f->n_ref].key, u->key, 16);
        f->ref[f->n_ref].chunk = i;
        f->ref[f->n_ref].packed = pack_ct(&u->tuples[i]);
        f->n_ref++;
    }
    free(u);
}

static Cohort__ServiceReply *ask_work(struct fx *f, int64_t now_ms, uint32_t token)
{
    Cohort__ServiceReply *r;
    size_t len;
    uint8_t *req = req_work(token, &len);

    assert_int_equal(send(f, now_ms, req, len, &r), 0);
    assert_non_null(r->work);
    return r;
}

/* Ask for work that must be a task; the reply is the caller's to free. */
static Cohort__ServiceReply *ask_task(struct fx *f, int64_t now_ms, uint32_t token)
{
    Cohort__ServiceReply *r = ask_work(f, now_ms, token);

    assert_int_equal(r->work->work_case, COHORT__WORK_REPLY__WORK_TASK);
    return r;
}

static void expect_idle(struct fx *f, int64_t now_ms, uint32_t token)
{
    Cohort__ServiceReply *r = ask_work(f, now_ms, token);

    assert_int_equal(r->work->work_case, COHORT__WORK_REPLY__WORK__NOT_SET);
    assert_int_equal(r->work->retry_after_ms, f->cfg.retry_after_ms);
    cohort__service_reply__free_unpacked(r, NULL);
}

static void assert_signed_plan_is(const struct fx *f, const Cohort__SignedPlan *sp)
{
    size_t n = cohort__signed_plan__get_packed_size(sp);
    uint8_t *b = malloc(n);

    assert_non_null(b);
    cohort__signed_plan__pack(sp, b);
    assert_int_equal(n, f->signed_plan_len);
    assert_memory_equal(b, f->signed_plan, n);
    free(b);
}

/* --------------------------------------------------------------- tests */

static void every_error_code_has_its_own_fixed_text(void **state)
{
    (void)state;
    for (int a = QR_ERR_UNKNOWN_QUERY; a <= QR_OK; a++) {
        assert_non_null(qr_strerror(a));
        assert_string_not_equal(qr_strerror(a), "unknown error");
        for (int b = a + 1; b <= QR_OK; b++)
            assert_string_not_equal(qr_strerror(a), qr_strerror(b));
    }
    assert_string_equal(qr_strerror(QR_ERR_UNKNOWN_QUERY - 1), "unknown error");
    assert_string_equal(qr_strerror(1), "unknown error");
}

static void default_config_has_the_documented_values(void **state)
{
    struct qr_coord_config cfg;

    (void)state;
    qr_coord_config_default(&cfg);
    assert_int_equal(cfg.token_ram, 65536);
    assert_int_equal(cfg.task_timeout_ms, 30000);
    assert_int_equal(cfg.max_task_attempts, 5);
    assert_int_equal(cfg.retry_after_ms, 1000);
}

static void a_coordinator_refuses_plans_that_do_not_decode(void **state)
{
    uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    /* A SignedPlan whose plan field holds garbage bytes. */
    uint8_t bad_plan[] = {0x0a, 0x03, 0xff, 0xff, 0xff};
    uint8_t *big;
    qr_coord *c = (qr_coord *)1;

    (void)state;
    assert_int_equal(qr_coord_new(&c, garbage, sizeof garbage, NULL, NOW_MS), QR_ERR_MALFORMED);
    assert_null(c);
    assert_int_equal(qr_coord_new(&c, bad_plan, sizeof bad_plan, NULL, NOW_MS), QR_ERR_MALFORMED);
    big = calloc(1, (1u << 20) + 1);
    assert_non_null(big);
    assert_int_equal(qr_coord_new(&c, big, (1u << 20) + 1, NULL, NOW_MS), QR_ERR_TOO_LARGE);
    free(big);
    assert_int_equal(qr_coord_new(&c, NULL, 0, NULL, NOW_MS), QR_ERR_ARG);
    assert_int_equal(qr_coord_new(NULL, garbage, sizeof garbage, NULL, NOW_MS), QR_ERR_ARG);
    qr_coord_free(NULL);
}

static void collect_work_goes_to_new_tokens_and_never_again_to_a_contributor(void **state)
{
    struct fx f;
    Cohort__ServiceReply *r;
    const uint8_t(*ids)[32];
    uint8_t id[32];

    (void)state;
    fx_init(&f, 0, 2, 0, NULL);
    r = ask_work(&f, NOW_MS, 1);
    assert_int_equal(r->work->work_case, COHORT__WORK_REPLY__WORK_COLLECT);
    assert_non_null(r->work->collect->plan);
    assert_signed_plan_is(&f, r->work->collect->plan);
    cohort__service_reply__free_unpacked(r, NULL);

    upload_ok(&f, NOW_MS, 1, 1, 0);
    expect_idle(&f, NOW_MS, 1);
    r = ask_work(&f, NOW_MS, 2);
    assert_int_equal(r->work->work_case, COHORT__WORK_REPLY__WORK_COLLECT);
    cohort__service_reply__free_unpacked(r, NULL);

    upload_ok(&f, NOW_MS, 2, 2, 0);
    assert_int_equal(qr_coord_contributors(f.c, &ids), 2);
    token_id(id, 1);
    assert_memory_equal(ids[0], id, 32);
    token_id(id, 2);
    assert_memory_equal(ids[1], id, 32);
    assert_int_equal(stats(&f).state, QR_COLLECTING);
    assert_int_equal(stats(&f).contributions, 2);
    assert_int_equal(stats(&f).ciphertexts_collected, 4);
    assert_int_equal(stats(&f).ciphertext_sizes_distinct, 1);
    assert_int_equal(stats(&f).messages_in, 5);
    assert_int_equal(stats(&f).messages_out, 5);
    assert_true(stats(&f).bytes_in > 0 && stats(&f).bytes_out > 0);
    fx_done(&f);
}

static void collection_closes_when_size_contributions_are_in(void **state)
{
    struct fx f;
    struct upload_msg *u;

    (void)state;
    fx_init(&f, 3, 1, 0, NULL);
    upload_ok(&f, NOW_MS, 1, 1, 0);
    upload_ok(&f, NOW_MS, 2, 2, 0);
    assert_int_equal(stats(&f).state, QR_COLLECTING);
    assert_int_equal(qr_coord_result(f.c, &(const uint8_t *){NULL}, &(size_t){0}), QR_ERR_NOT_DONE);
    upload_ok(&f, NOW_MS, 3, 3, 0);
    assert_int_equal(stats(&f).state, QR_AGGREGATING);
    assert_int_equal(stats(&f).level, 1);
    assert_int_equal(stats(&f).partitions, 1);

    u = upload_build(&f, 4, 4);
    assert_int_equal(send_upload(&f, NOW_MS, u), QR_ERR_CLOSED);
    free(u);
    assert_int_equal(stats(&f).contributions, 3);
    assert_int_equal(stats(&f).uploads_rejected, 1);
    fx_done(&f);
}

static void collection_closes_at_the_deadline_on_tick(void **state)
{
    struct fx f;

    (void)state;
    fx_init(&f, 0, 1, 0, NULL);
    upload_ok(&f, NOW_MS, 1, 1, 0);
    qr_coord_tick(f.c, (int64_t)DEADLINE_S * 1000 - 1);
    assert_int_equal(stats(&f).state, QR_COLLECTING);
    qr_coord_tick(f.c, (int64_t)DEADLINE_S * 1000);
    assert_int_equal(stats(&f).state, QR_AGGREGATING);
    assert_int_equal(stats(&f).level, 1);
    fx_done(&f);
}

static void a_study_still_running_when_its_plan_expires_fails_with_a_message(void **state)
{
    struct fx f;
    const uint8_t *res;
    size_t res_len;

    (void)state;
    fx_init(&f, 0, 1, 0, NULL);
    upload_ok(&f, NOW_MS, 1, 1, 0);
    qr_coord_tick(f.c, (int64_t)DEADLINE_S * 1000);
    assert_int_equal(stats(&f).state, QR_AGGREGATING);
    qr_coord_tick(f.c, (int64_t)(DEADLINE_S + 86400) * 1000 + 999);
    assert_int_equal(stats(&f).state, QR_AGGREGATING);
    qr_coord_tick(f.c, (int64_t)(DEADLINE_S + 86401) * 1000);
    assert_int_equal(stats(&f).state, QR_FAILED);
    assert_int_equal(stats(&f).failure, QR_ERR_FAILED);
    assert_string_equal(stats(&f).failure_msg, "the plan expired before the study finished");
    assert_int_equal(qr_coord_result(f.c, &res, &res_len), QR_ERR_FAILED);
    fx_done(&f);
}

static void an_upload_after_the_deadline_is_refused_even_without_a_tick(void **state)
{
    struct fx f;
    struct upload_msg *u;

    (void)state;
    fx_init(&f, 0, 1, 0, NULL);
    upload_ok(&f, NOW_MS, 1, 1, 0);
    u = upload_build(&f, 2, 2);
    assert_int_equal(send_upload(&f, (int64_t)DEADLINE_S * 1000, u), QR_ERR_CLOSED);
    free(u);
    assert_int_equal(stats(&f).state, QR_AGGREGATING);
    fx_done(&f);
}

static void too_few_contributions_fail_the_query_with_a_message(void **state)
{
    struct fx f;
    const uint8_t *res = (const uint8_t *)1;
    size_t res_len = 1;

    (void)state;
    fx_init(&f, 0, 1, 5, NULL);
    upload_ok(&f, NOW_MS, 1, 1, 0);
    upload_ok(&f, NOW_MS, 2, 2, 0);
    qr_coord_tick(f.c, (int64_t)DEADLINE_S * 1000);
    assert_int_equal(stats(&f).state, QR_FAILED);
    assert_int_equal(stats(&f).failure, QR_ERR_FAILED);
    assert_string_equal(stats(&f).failure_msg, "2 contributions, the plan requires 5");
    assert_int_equal(qr_coord_result(f.c, &res, &res_len), QR_ERR_FAILED);
    assert_null(res);
    assert_int_equal(res_len, 0);
    expect_idle(&f, (int64_t)DEADLINE_S * 1000, 3);
    fx_done(&f);

    fx_init(&f, 0, 1, 0, NULL);
    qr_coord_tick(f.c, (int64_t)DEADLINE_S * 1000);
    assert_int_equal(stats(&f).state, QR_FAILED);
    assert_string_equal(stats(&f).failure_msg, "no contributions");
    fx_done(&f);
}

/* A reference blob pool: expected inputs of the partitions of a level. */
struct level_ref {
    struct blob *in[64][64]; /* [partition][i], borrowed */
    size_t n_in[64];
    size_t parts;
};

static int ref_cmp(const void *a, const void *b)
{
    const struct blob *const *x = a, *const *y = b;
    Cohort__Ciphertext *cx = cohort__ciphertext__unpack(NULL, (*x)->n, (*x)->b);
    Cohort__Ciphertext *cy = cohort__ciphertext__unpack(NULL, (*y)->n, (*y)->b);
    int c = memcmp(cx->key.data, cy->key.data, 16);

    if (c == 0)
        c = cx->chunk < cy->chunk ? -1 : cx->chunk > cy->chunk;
    cohort__ciphertext__free_unpacked(cx, NULL);
    cohort__ciphertext__free_unpacked(cy, NULL);
    return c;
}

static void check_task(const struct fx *f, const Cohort__AggTask *t, uint32_t level,
                       const struct level_ref *ref, uint32_t q)
{
    assert_int_equal(t->level, level);
    assert_int_equal(t->partition, q);
    assert_int_equal(t->final, ref->parts == 1);
    assert_non_null(t->plan);
    assert_signed_plan_is(f, t->plan);
    assert_int_equal(t->n_inputs, ref->n_in[q]);
    for (size_t i = 0; i < t->n_inputs; i++) {
        struct blob b = pack_ct(t->inputs[i]);

        assert_int_equal(b.n, ref->in[q][i]->n);
        assert_memory_equal(b.b, ref->in[q][i]->b, b.n);
        blob_free(&b);
    }
}

static void partitions_follow_the_reference_layout_level_by_level_to_a_final_result(void **state)
{
    struct fx f;
    struct qr_coord_config cfg;
    struct level_ref *ref = calloc(1, sizeof *ref);
    struct blob *sorted[MAX_BLOBS];
    static struct blob outputs[64][PARTS_CAP]; /* level L's partials, owned */
    size_t n_outputs[64] = {0}, s = 0, per, total_tasks = 0, total_parts = 0;
    const size_t expected_parts[] = {4, 2, 1};
    uint32_t level = 1, next_token = 1000;
    const uint8_t *res;
    size_t res_len;

    (void)state;
    assert_non_null(ref);
    qr_coord_config_default(&cfg);
    cfg.token_ram = 3 * tuple_size(2);
    fx_init(&f, 5, 2, 0, &cfg);
    for (uint32_t i = 0; i < 5; i++)
        upload_ok(&f, NOW_MS, 1 + i, 1 + i, 1);
    assert_int_equal(stats(&f).state, QR_AGGREGATING);
    assert_int_equal(stats(&f).ciphertexts_collected, 10);

    /* Level 1: the reference order and cut, computed here. */
    for (size_t i = 0; i < f.n_ref; i++) {
        sorted[i] = &f.ref[i].packed;
        if (f.ref[i].packed.n > s)
            s = f.ref[i].packed.n;
    }
    qsort(sorted, f.n_ref, sizeof *sorted, ref_cmp);
    per = cfg.token_ram / s < 2 ? 2 : cfg.token_ram / s;
    assert_int_equal(per, 3);
    ref->parts = (f.n_ref + per - 1) / per;
    for (size_t i = 0; i < f.n_ref; i++)
        ref->in[i / per][ref->n_in[i / per]++] = sorted[i];

    for (;;) {
        Cohort__ServiceReply *tasks[64];
        struct level_ref *next;
        size_t m_max = 0, s_max = 0, group;

        assert_true(level <= 3);
        assert_int_equal(ref->parts, expected_parts[level - 1]);
        assert_int_equal(stats(&f).level, level);
        assert_int_equal(stats(&f).levels, level - 1);
        total_parts += ref->parts;
        assert_int_equal(stats(&f).partitions, total_parts);
        for (uint32_t q = 0; q < ref->parts; q++) {
            tasks[q] = ask_task(&f, NOW_MS + 1000 * level, next_token++);
            check_task(&f, tasks[q]->work->task, level, ref, q);
        }
        expect_idle(&f, NOW_MS + 1000 * level, next_token);
        total_tasks += ref->parts;

        if (ref->parts == 1) {
            const Cohort__AggTask *t = tasks[0]->work->task;
            struct result_msg *r = result_build(&f, t->task_id, next_token - 1, level, 0, 1, 0, 0);
            uint8_t packed[512];
            size_t packed_len = cohort__sealed_result__get_packed_size(&r->sr);

            assert_int_equal(send_result(&f, NOW_MS + 1000 * level, r), 0);
            assert_int_equal(stats(&f).state, QR_DONE);
            assert_int_equal(qr_coord_result(f.c, &res, &res_len), 0);
            cohort__sealed_result__pack(&r->sr, packed);
            assert_int_equal(res_len, packed_len);
            assert_memory_equal(res, packed, packed_len);
            free(r);
            cohort__service_reply__free_unpacked(tasks[0], NULL);
            break;
        }

        /* Answer in reverse order: the next level follows partitions, not time. */
        for (size_t q = ref->parts; q-- > 0;) {
            const Cohort__AggTask *t = tasks[q]->work->task;
            size_t m = 1 + q % 2;
            struct result_msg *r =
                result_build(&f, t->task_id, (uint32_t)(next_token - ref->parts + q), level,
                             (uint32_t)q, 0, m, PARTIAL_BOX_LEN + q);

            for (size_t j = 0; j < m; j++) {
                outputs[q][j] = pack_ct(&r->parts[j]);
                if (outputs[q][j].n > s_max)
                    s_max = outputs[q][j].n;
            }
            n_outputs[q] = m;
            if (m > m_max)
                m_max = m;
            assert_int_equal(send_result(&f, NOW_MS + 1000 * level, r), 0);
            free(r);
        }
        for (size_t q = 0; q < ref->parts; q++)
            cohort__service_reply__free_unpacked(tasks[q], NULL);

        /* The reference next level: F sources per partition, in order. */
        group = cfg.token_ram / (m_max * s_max) < 2 ? 2 : cfg.token_ram / (m_max * s_max);
        if (level == 1) {
            /* Chosen so that forgetting m in F would group three sources. */
            assert_int_equal(group, 2);
            assert_true(cfg.token_ram / s_max >= 3);
        }
        next = calloc(1, sizeof *next);
        assert_non_null(next);
        next->parts = (ref->parts + group - 1) / group;
        for (size_t p = 0; p < ref->parts; p++)
            for (size_t j = 0; j < n_outputs[p]; j++)
                next->in[p / group][next->n_in[p / group]++] = &outputs[p][j];
        /* The inputs of level L now live in outputs[]; keep them as copies. */
        for (size_t q = 0; q < next->parts; q++)
            for (size_t i = 0; i < next->n_in[q]; i++) {
                struct blob *copy = malloc(sizeof *copy);

                assert_non_null(copy);
                copy->n = next->in[q][i]->n;
                copy->b = next->in[q][i]->b;
                next->in[q][i]->b = NULL;
                next->in[q][i] = copy;
            }
        if (level > 1)
            for (size_t q = 0; q < ref->parts; q++)
                for (size_t i = 0; i < ref->n_in[q]; i++) {
                    blob_free(ref->in[q][i]);
                    free(ref->in[q][i]);
                }
        free(ref);
        ref = next;
        level++;
    }

    assert_int_equal(stats(&f).levels, 3);
    assert_int_equal(stats(&f).level, 3);
    assert_int_equal(stats(&f).tasks_done, total_tasks);
    assert_int_equal(stats(&f).tasks_issued, total_tasks);
    assert_int_equal(stats(&f).aggregator_tokens, total_tasks);
    for (size_t q = 0; level > 1 && q < ref->parts; q++)
        for (size_t i = 0; i < ref->n_in[q]; i++) {
            blob_free(ref->in[q][i]);
            free(ref->in[q][i]);
        }
    free(ref);
    fx_done(&f);
}

/* K=1, four contributions, partitions of two: two level-1 tasks. */
static void fx_two_tasks(struct fx *f, uint32_t max_attempts)
{
    struct qr_coord_config cfg;

    qr_coord_config_default(&cfg);
    cfg.token_ram = 2 * tuple_size(1);
    cfg.max_task_attempts = max_attempts;
    fx_init(f, 4, 1, 0, &cfg);
    for (uint32_t i = 0; i < 4; i++)
        upload_ok(f, NOW_MS, 1 + i, 1 + i, 0);
    assert_int_equal(stats(f).state, QR_AGGREGATING);
    assert_int_equal(stats(f).partitions, 2);
}

static uint64_t task_of(Cohort__ServiceReply *r, uint32_t *partition)
{
    uint64_t id = r->work->task->task_id;

    if (partition != NULL)
        *partition = r->work->task->partition;
    cohort__service_reply__free_unpacked(r, NULL);
    return id;
}

static void a_late_task_goes_to_another_token_and_the_late_result_still_counts_once(void **state)
{
    struct fx f;
    struct result_msg *r;
    uint64_t t1, t2;
    uint32_t p1, p2;
    int64_t t0 = NOW_MS + 5000, late = t0 + 30000;

    (void)state;
    fx_two_tasks(&f, 5);
    t1 = task_of(ask_task(&f, t0, 100), &p1);
    assert_int_equal(p1, 0);
    qr_coord_tick(f.c, late - 1);
    assert_int_equal(stats(&f).tasks_reassigned, 0);
    qr_coord_tick(f.c, late);
    assert_int_equal(stats(&f).tasks_reassigned, 1);

    /* The late token is not given its own task again; another one is. */
    t2 = task_of(ask_task(&f, late, 100), &p2);
    assert_int_not_equal(t2, t1);
    assert_int_equal(p2, 1);
    assert_int_equal(task_of(ask_task(&f, late, 101), &p1), t1);
    assert_int_equal(p1, 0);
    expect_idle(&f, late, 102);
    assert_int_equal(stats(&f).tasks_issued, 3);

    /* The late original comes back first and wins; the second is acknowledged. */
    r = result_build(&f, t1, 100, 1, 0, 0, 1, PARTIAL_BOX_LEN);
    assert_int_equal(send_result(&f, late + 1, r), 0);
    free(r);
    assert_int_equal(stats(&f).tasks_done, 1);
    r = result_build(&f, t1, 101, 1, 0, 0, 1, PARTIAL_BOX_LEN);
    assert_int_equal(send_result(&f, late + 2, r), 0);
    free(r);
    assert_int_equal(stats(&f).tasks_done, 1);
    assert_int_equal(stats(&f).aggregator_tokens, 1);

    r = result_build(&f, t2, 100, 1, 1, 0, 1, PARTIAL_BOX_LEN);
    assert_int_equal(send_result(&f, late + 3, r), 0);
    free(r);
    assert_int_equal(stats(&f).tasks_done, 2);
    assert_int_equal(stats(&f).aggregator_tokens, 1);
    assert_int_equal(stats(&f).levels, 1);
    assert_int_equal(stats(&f).level, 2);
    assert_int_equal(stats(&f).partitions, 3);
    fx_done(&f);
}

static void a_failing_status_reoffers_the_task_and_fails_the_query_after_max_attempts(void **state)
{
    struct fx f;
    uint64_t t1, other;
    uint32_t p;
    size_t len;
    uint8_t *req;
    int64_t now = NOW_MS + 5000;

    (void)state;
    fx_two_tasks(&f, 3);
    t1 = task_of(ask_task(&f, now, 200), &p);
    assert_int_equal(p, 0);
    req = req_failure(t1, 200, TK_ERR_DECRYPT, &len);
    assert_int_equal(send(&f, now, req, len, NULL), 0);
    assert_int_equal(stats(&f).state, QR_AGGREGATING);

    /* Token 200 is not offered its failed task again. */
    other = task_of(ask_task(&f, now, 200), &p);
    assert_int_not_equal(other, t1);
    assert_int_equal(task_of(ask_task(&f, now, 201), &p), t1);
    req = req_failure(t1, 201, TK_ERR_DECRYPT, &len);
    assert_int_equal(send(&f, now, req, len, NULL), 0);

    /* A failure report from a token that does not hold the task is stale. */
    req = req_failure(t1, 200, TK_ERR_DECRYPT, &len);
    assert_int_equal(send(&f, now, req, len, NULL), 0);
    assert_int_equal(stats(&f).state, QR_AGGREGATING);

    assert_int_equal(task_of(ask_task(&f, now, 202), &p), t1);
    req = req_failure(t1, 202, TK_ERR_DECRYPT, &len);
    assert_int_equal(send(&f, now, req, len, NULL), 0);
    assert_int_equal(stats(&f).state, QR_FAILED);
    assert_int_equal(stats(&f).failure, TK_ERR_DECRYPT);
    assert_string_equal(
        stats(&f).failure_msg,
        "level 1 partition 0 failed 3 times: ciphertext fails authentication (TK_ERR_DECRYPT)");
    assert_int_equal(qr_coord_result(f.c, &(const uint8_t *){NULL}, &(size_t){0}), QR_ERR_FAILED);
    expect_idle(&f, now, 203);
    fx_done(&f);
}

/* ------------------------------------------------------ hostile input */

enum setup {
    SETUP_COLLECTING,  /* K=2, one upload (token 1, key 1) */
    SETUP_AGGREGATING, /* K=2, four uploads, several partitions, task 1 with token 50 */
    SETUP_FINAL,       /* K=1, three uploads, one final task with token 50 */
};

static void setup_hostile(struct fx *f, enum setup setup)
{
    struct qr_coord_config cfg;

    qr_coord_config_default(&cfg);
    switch (setup) {
    case SETUP_COLLECTING:
        fx_init(f, 0, 2, 0, &cfg);
        upload_ok(f, NOW_MS, 1, 1, 0);
        break;
    case SETUP_AGGREGATING:
        cfg.token_ram = 3 * tuple_size(2);
        fx_init(f, 4, 2, 0, &cfg);
        for (uint32_t i = 0; i < 4; i++)
            upload_ok(f, NOW_MS, 1 + i, 1 + i, 0);
        assert_int_equal(stats(f).partitions, 3);
        assert_int_equal(task_of(ask_task(f, NOW_MS, 50), NULL), 1);
        break;
    case SETUP_FINAL:
        fx_init(f, 3, 1, 0, &cfg);
        for (uint32_t i = 0; i < 3; i++)
            upload_ok(f, NOW_MS, 1 + i, 1 + i, 0);
        assert_int_equal(stats(f).partitions, 1);
        assert_int_equal(task_of(ask_task(f, NOW_MS, 50), NULL), 1);
        break;
    }
}

static uint8_t *raw_oversized(size_t *len)
{
    *len = QR_REQUEST_MAX + 1;
    return calloc(1, *len);
}

static uint8_t *raw_garbage(size_t *len)
{
    static const uint8_t g[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x12};
    uint8_t *b = malloc(sizeof g);

    memcpy(b, g, sizeof g);
    *len = sizeof g;
    return b;
}

static uint8_t *raw_empty(size_t *len)
{
    *len = 0;
    return malloc(1);
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* An upload of a million empty tuples: 2 MB that would decode to 100+ MB. */
static uint8_t *raw_decode_bomb(size_t *len)
{
    const size_t n = 1000000, inner = 2 * n;
    size_t upload_len = 1 + 3 + inner; /* contribution: tag, 3-byte length, tuples */
    uint8_t *b = malloc(1 + 3 + upload_len), *p = b;

    assert_non_null(b);
    *p++ = 0x12; /* ServiceRequest.upload */
    p = put_varint(p, upload_len);
    *p++ = 0x12; /* Upload.contribution */
    p = put_varint(p, inner);
    for (size_t i = 0; i < n; i++) {
        *p++ = 0x1a; /* Contribution.tuples, empty */
        *p++ = 0x00;
    }
    *len = (size_t)(p - b);
    return b;
}

static uint8_t *raw_short_work_token(size_t *len)
{
    Cohort__ServiceRequest req = COHORT__SERVICE_REQUEST__INIT;
    Cohort__WorkRequest work = COHORT__WORK_REQUEST__INIT;
    uint8_t id[31] = {1};

    work.token_id.data = id;
    work.token_id.len = sizeof id;
    req.body_case = COHORT__SERVICE_REQUEST__BODY_WORK;
    req.work = &work;
    return pack_request(&req, len);
}

static uint8_t *raw_unknown_task(size_t *len)
{
    return req_failure(999, 50, -1, len);
}

static uint8_t *raw_task_zero(size_t *len)
{
    return req_failure(0, 50, -1, len);
}

static void up_as_is(struct upload_msg *u)
{
    (void)u;
}
static void up_wrong_query(struct upload_msg *u)
{
    u->query_id[31] ^= 1;
}
static void up_no_contribution(struct upload_msg *u)
{
    u->upload.contribution = NULL;
}
static void up_dup_token(struct upload_msg *u)
{
    token_id(u->id, 1);
}
static void up_dup_key(struct upload_msg *u)
{
    contrib_key(u->key, 1);
}
static void up_too_few_tuples(struct upload_msg *u)
{
    u->contrib.n_tuples--;
}
static void up_too_many_tuples(struct upload_msg *u)
{
    u->contrib.n_tuples++;
}
static void up_wrong_phase(struct upload_msg *u)
{
    u->tuples[1].phase = COHORT__PHASE__PHASE_AGGREGATE;
}
static void up_wrong_level(struct upload_msg *u)
{
    u->tuples[0].level = 1;
}
static void up_wrong_partition(struct upload_msg *u)
{
    u->tuples[0].partition = 1;
}
static void up_wrong_chunk(struct upload_msg *u)
{
    u->tuples[0].chunk = 1;
    u->tuples[1].chunk = 0;
}
static void up_wrong_nchunks(struct upload_msg *u)
{
    u->tuples[1].nchunks = 3;
}
static void up_wrong_key_binding(struct upload_msg *u)
{
    static uint8_t other[16] = {9};

    u->tuples[1].key.data = other;
}
static void up_wrong_tag(struct upload_msg *u)
{
    u->tag[0] ^= 1;
}
static void up_short_nonce(struct upload_msg *u)
{
    u->tuples[0].nonce.len = 23;
}
static void up_empty_box(struct upload_msg *u)
{
    u->tuples[1].box.len = 0;
}
static void up_big_box(struct upload_msg *u)
{
    u->tuples[1].box.data = u->big_box;
    u->tuples[1].box.len = sizeof u->big_box;
}
static void up_short_key(struct upload_msg *u)
{
    u->contrib.key.len = 15;
}
static void up_short_token(struct upload_msg *u)
{
    u->upload.token_id.len = 31;
}

static void res_no_partials(struct result_msg *r)
{
    r->out.n_partials = 0;
}
static void res_no_output(struct result_msg *r)
{
    r->tr.output = NULL;
}
static void res_wrong_level(struct result_msg *r)
{
    r->parts[0].level = 2;
}
static void res_wrong_partition(struct result_msg *r)
{
    r->parts[1].partition = 1;
}
static void res_wrong_chunk(struct result_msg *r)
{
    r->parts[0].chunk = 1;
}
static void res_wrong_nchunks(struct result_msg *r)
{
    r->parts[1].nchunks = 3;
}
static void res_wrong_phase(struct result_msg *r)
{
    r->parts[0].phase = COHORT__PHASE__PHASE_COLLECT;
}
static void res_wrong_tag(struct result_msg *r)
{
    r->tag[7] ^= 1;
}
static void res_short_nonce(struct result_msg *r)
{
    r->parts[0].nonce.len = 12;
}
static void res_empty_box(struct result_msg *r)
{
    r->parts[1].box.len = 0;
}
static void res_sealed_on_partial_task(struct result_msg *r)
{
    r->out.result = &r->sr;
    r->sr.query_id.data = r->query_id;
    r->sr.query_id.len = 32;
}
static void res_short_token(struct result_msg *r)
{
    r->tr.token_id.len = 31;
}
static void res_other_query(struct result_msg *r)
{
    r->query_id[0] ^= 1;
}
static void res_final_without_result(struct result_msg *r)
{
    r->out.result = NULL;
}
static void res_final_with_partials(struct result_msg *r)
{
    r->out.n_partials = 1;
    r->out.partials = r->ptrs;
}

struct hostile {
    const char *name;
    enum setup setup;
    int expect;
    uint8_t *(*raw)(size_t *len);
    void (*upload)(struct upload_msg *u);
    void (*result)(struct result_msg *r);
};

static const struct hostile hostile_cases[] = {
    {"oversized request", SETUP_COLLECTING, QR_ERR_TOO_LARGE, raw_oversized, NULL, NULL},
    {"bytes that do not decode", SETUP_COLLECTING, QR_ERR_MALFORMED, raw_garbage, NULL, NULL},
    {"empty request", SETUP_COLLECTING, QR_ERR_MALFORMED, raw_empty, NULL, NULL},
    {"decode bomb", SETUP_COLLECTING, QR_ERR_TOO_LARGE, raw_decode_bomb, NULL, NULL},
    {"work with a short token id", SETUP_COLLECTING, QR_ERR_MALFORMED, raw_short_work_token, NULL,
     NULL},
    {"wrong query id", SETUP_COLLECTING, QR_ERR_WRONG_QUERY, NULL, up_wrong_query, NULL},
    {"upload without contribution", SETUP_COLLECTING, QR_ERR_BAD_UPLOAD, NULL, up_no_contribution,
     NULL},
    {"duplicate token", SETUP_COLLECTING, QR_ERR_DUPLICATE, NULL, up_dup_token, NULL},
    {"duplicate key", SETUP_COLLECTING, QR_ERR_DUPLICATE, NULL, up_dup_key, NULL},
    {"too few tuples", SETUP_COLLECTING, QR_ERR_BAD_UPLOAD, NULL, up_too_few_tuples, NULL},
    {"too many tuples", SETUP_COLLECTING, QR_ERR_BAD_UPLOAD, NULL, up_too_many_tuples, NULL},
    {"wrong phase", SETUP_COLLECTING, QR_ERR_BAD_UPLOAD, NULL, up_wrong_phase, NULL},
    {"wrong level", SETUP_COLLECTING, QR_ERR_BAD_UPLOAD, NULL, up_wrong_level, NULL},
    {"wrong partition", SETUP_COLLECTING, QR_ERR_BAD_UPLOAD, NULL, up_wrong_partition, NULL},
    {"chunks out of order", SETUP_COLLECTING, QR_ERR_BAD_UPLOAD, NULL, up_wrong_chunk, NULL},
    {"wrong nchunks", SETUP_COLLECTING, QR_ERR_BAD_UPLOAD, NULL, up_wrong_nchunks, NULL},
    {"tuple bound to another key", SETUP_COLLECTING, QR_ERR_BAD_UPLOAD, NULL, up_wrong_key_binding,
     NULL},
    {"tuple of another query", SETUP_COLLECTING, QR_ERR_BAD_UPLOAD, NULL, up_wrong_tag, NULL},
    {"short nonce", SETUP_COLLECTING, QR_ERR_BAD_UPLOAD, NULL, up_short_nonce, NULL},
    {"empty box", SETUP_COLLECTING, QR_ERR_BAD_UPLOAD, NULL, up_empty_box, NULL},
    {"box over the limit", SETUP_COLLECTING, QR_ERR_BAD_UPLOAD, NULL, up_big_box, NULL},
    {"short contribution key", SETUP_COLLECTING, QR_ERR_BAD_UPLOAD, NULL, up_short_key, NULL},
    {"short upload token id", SETUP_COLLECTING, QR_ERR_BAD_UPLOAD, NULL, up_short_token, NULL},
    {"upload after close", SETUP_AGGREGATING, QR_ERR_CLOSED, NULL, up_as_is, NULL},
    {"wrong query after close", SETUP_AGGREGATING, QR_ERR_WRONG_QUERY, NULL, up_wrong_query, NULL},
    {"unknown task id", SETUP_AGGREGATING, QR_ERR_UNKNOWN_TASK, raw_unknown_task, NULL, NULL},
    {"task id zero", SETUP_AGGREGATING, QR_ERR_UNKNOWN_TASK, raw_task_zero, NULL, NULL},
    {"result without partials", SETUP_AGGREGATING, QR_ERR_BAD_RESULT, NULL, NULL, res_no_partials},
    {"result without output", SETUP_AGGREGATING, QR_ERR_BAD_RESULT, NULL, NULL, res_no_output},
    {"partial of another level", SETUP_AGGREGATING, QR_ERR_BAD_RESULT, NULL, NULL, res_wrong_level},
    {"partial of another partition", SETUP_AGGREGATING, QR_ERR_BAD_RESULT, NULL, NULL,
     res_wrong_partition},
    {"partials out of order", SETUP_AGGREGATING, QR_ERR_BAD_RESULT, NULL, NULL, res_wrong_chunk},
    {"partial with wrong nchunks", SETUP_AGGREGATING, QR_ERR_BAD_RESULT, NULL, NULL,
     res_wrong_nchunks},
    {"partial of the collect phase", SETUP_AGGREGATING, QR_ERR_BAD_RESULT, NULL, NULL,
     res_wrong_phase},
    {"partial of another query", SETUP_AGGREGATING, QR_ERR_BAD_RESULT, NULL, NULL, res_wrong_tag},
    {"partial with a short nonce", SETUP_AGGREGATING, QR_ERR_BAD_RESULT, NULL, NULL,
     res_short_nonce},
    {"partial with an empty box", SETUP_AGGREGATING, QR_ERR_BAD_RESULT, NULL, NULL, res_empty_box},
    {"sealed result for a non-final task", SETUP_AGGREGATING, QR_ERR_BAD_RESULT, NULL, NULL,
     res_sealed_on_partial_task},
    {"result with a short token id", SETUP_AGGREGATING, QR_ERR_BAD_RESULT, NULL, NULL,
     res_short_token},
    {"final result for another query", SETUP_FINAL, QR_ERR_BAD_RESULT, NULL, NULL, res_other_query},
    {"final task without a result", SETUP_FINAL, QR_ERR_BAD_RESULT, NULL, NULL,
     res_final_without_result},
    {"final result with partials", SETUP_FINAL, QR_ERR_BAD_RESULT, NULL, NULL,
     res_final_with_partials},
};

/* Stats with the counters a rejected request may move zeroed. */
static struct qr_coord_stats frozen(const struct fx *f)
{
    struct qr_coord_stats st = stats(f);

    st.messages_in = st.messages_out = st.bytes_in = st.bytes_out = 0;
    st.uploads_rejected = 0;
    return st;
}

static void assert_stats_equal(const struct qr_coord_stats *a, const struct qr_coord_stats *b)
{
    assert_int_equal(a->state, b->state);
    assert_int_equal(a->contributions, b->contributions);
    assert_int_equal(a->ciphertexts_collected, b->ciphertexts_collected);
    assert_int_equal(a->level, b->level);
    assert_int_equal(a->levels, b->levels);
    assert_int_equal(a->partitions, b->partitions);
    assert_int_equal(a->tasks_issued, b->tasks_issued);
    assert_int_equal(a->tasks_reassigned, b->tasks_reassigned);
    assert_int_equal(a->tasks_done, b->tasks_done);
    assert_int_equal(a->aggregator_tokens, b->aggregator_tokens);
    assert_int_equal(a->ciphertext_sizes_distinct, b->ciphertext_sizes_distinct);
    assert_int_equal(a->failure, b->failure);
    assert_string_equal(a->failure_msg, b->failure_msg);
}

static void hostile_input_gets_its_exact_error_and_changes_nothing(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof hostile_cases / sizeof hostile_cases[0]; i++) {
        const struct hostile *h = &hostile_cases[i];
        struct qr_coord_stats before, after, raw_before;
        const uint8_t(*ids)[32];
        size_t n_ids, len;
        uint8_t *req;
        struct fx f;
        int is_upload = h->upload != NULL;

        print_message("hostile: %s\n", h->name);
        setup_hostile(&f, h->setup);
        before = frozen(&f);
        raw_before = stats(&f);
        n_ids = qr_coord_contributors(f.c, &ids);
        if (h->raw != NULL) {
            req = h->raw(&len);
        } else if (h->upload != NULL) {
            struct upload_msg *u = upload_build(&f, 2000, 2000);

            h->upload(u);
            req = pack_request(&u->req, &len);
            free(u);
        } else {
            struct result_msg *r =
                result_build(&f, 1, 50, 1, 0, h->setup == SETUP_FINAL, 2, PARTIAL_BOX_LEN);

            h->result(r);
            req = pack_request(&r->req, &len);
            free(r);
        }
        assert_non_null(req);
        assert_int_equal(send(&f, NOW_MS, req, len, NULL), h->expect);

        after = frozen(&f);
        assert_stats_equal(&before, &after);
        assert_int_equal(qr_coord_contributors(f.c, &ids), n_ids);
        assert_int_equal(stats(&f).uploads_rejected, raw_before.uploads_rejected + is_upload);
        assert_int_equal(stats(&f).messages_in, raw_before.messages_in + 1);
        assert_int_equal(stats(&f).messages_out, raw_before.messages_out + 1);
        assert_int_equal(stats(&f).bytes_in, raw_before.bytes_in + len);
        fx_done(&f);
    }
}

static void a_hundred_thousand_single_tuple_uploads_complete_collection(void **state)
{
    const uint32_t n = 100000;
    struct fx f;
    const uint8_t(*ids)[32];
    uint8_t id[32];
    size_t per;

    (void)state;
    fx_init(&f, n, 1, 0, NULL);
    for (uint32_t i = 0; i < n; i++) {
        struct upload_msg *u = upload_build(&f, i, i);
        size_t len;
        uint8_t *req = pack_request(&u->req, &len);
        uint8_t *rep;
        size_t rep_len;

        free(u);
        assert_int_equal(qr_coord_handle(f.c, NOW_MS, req, len, &rep, &rep_len), 0);
        free(req);
        free(rep);
    }
    assert_int_equal(stats(&f).state, QR_AGGREGATING);
    assert_int_equal(stats(&f).contributions, n);
    assert_int_equal(stats(&f).ciphertexts_collected, n);
    per = 65536 / tuple_size(1);
    assert_int_equal(stats(&f).partitions, (n + per - 1) / per);
    assert_int_equal(qr_coord_contributors(f.c, &ids), n);
    token_id(id, n - 1);
    assert_memory_equal(ids[n - 1], id, 32);
    token_id(id, 12345);
    assert_memory_equal(ids[12345], id, 32);
    fx_done(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_error_code_has_its_own_fixed_text),
        cmocka_unit_test(default_config_has_the_documented_values),
        cmocka_unit_test(a_coordinator_refuses_plans_that_do_not_decode),
        cmocka_unit_test(collect_work_goes_to_new_tokens_and_never_again_to_a_contributor),
        cmocka_unit_test(collection_closes_when_size_contributions_are_in),
        cmocka_unit_test(collection_closes_at_the_deadline_on_tick),
        cmocka_unit_test(an_upload_after_the_deadline_is_refused_even_without_a_tick),
        cmocka_unit_test(a_study_still_running_when_its_plan_expires_fails_with_a_message),
        cmocka_unit_test(too_few_contributions_fail_the_query_with_a_message),
        cmocka_unit_test(partitions_follow_the_reference_layout_level_by_level_to_a_final_result),
        cmocka_unit_test(a_late_task_goes_to_another_token_and_the_late_result_still_counts_once),
        cmocka_unit_test(a_failing_status_reoffers_the_task_and_fails_the_query_after_max_attempts),
        cmocka_unit_test(hostile_input_gets_its_exact_error_and_changes_nothing),
        cmocka_unit_test(a_hundred_thousand_single_tuple_uploads_complete_collection),
    };

    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
