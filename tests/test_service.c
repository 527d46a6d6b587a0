/*
 * test_service.c: the querier service's core (querier/qr_service.c) driven
 * the way the networked shell drives it: request bytes in on a connection
 * id, reply bytes out, a journal record to keep when the request changed a
 * query. No network: the tokens are real (the token core over memory
 * flash, reached through the in-process link), provisioned by a maker
 * authority, loaded with their owners' rows and a consent policy; the
 * agents are the participant core (pt_agent_*); the plans are compiled
 * from SQL and signed by a researcher certified by a study authority.
 *
 * Every result is opened with the researcher's key and compared with the
 * truth computed here from the rows each token was given. Every hostile
 * request is checked for its exact status, for the absence of a journal
 * record, and for leaving the queries and admissions as they were; the
 * study then still completes for everyone else.
 *
 * The coordinator is told that tokens have little RAM (SMALL_RAM), so that
 * a study of N_TOKENS tokens has several partitions and several levels,
 * which is what the journal's cut points need.
 */
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

#define NOW_S INT64_C(1785000000) /* 2026-07-25 */
#define NOW_MS (NOW_S * 1000)
#define DAY_S INT64_C(86400)
#define N_TOKENS 30u
#define ROWS_MAX 4u
#define ROUNDS_MAX 400u
#define STEP_MS 10
#define SMALL_RAM 1024u
#define CHALLENGE_MS 5000
#define STUDY "svc-study"
#define RESEARCHER "dr-service"

#include "svc_fixture.h"

/* ------------------------------------------------------------- world */

struct world {
    struct qr_identity maker;     /* certifies tokens */
    struct qr_identity authority; /* certifies researchers */
    struct qr_identity researcher;
    uint8_t *cert; /* the researcher's certificate */
    size_t cert_len;
    uint8_t secret[32]; /* the deployment's group secret */
};

static const char *const health_only[] = {"health"};

static void certify(uint8_t **cert, size_t *cert_len, const struct qr_identity *authority,
                    const struct qr_identity *researcher, const struct qr_scope *scope)
{
    assert_int_equal(qr_cert_issue(cert, cert_len, authority, COHORT__ROLE__ROLE_RESEARCHER,
                                   RESEARCHER, researcher->sign_pk, researcher->box_pk,
                                   NOW_S - 30 * DAY_S, NOW_S + 365 * DAY_S, scope),
                     0);
}

static void world_init(struct world *w)
{
    struct qr_scope scope;

    memset(w, 0, sizeof *w);
    assert_int_equal(tk_library_init(), TK_OK);
    assert_int_equal(qr_identity_generate(&w->maker), 0);
    assert_int_equal(qr_identity_generate(&w->authority), 0);
    assert_int_equal(qr_identity_generate(&w->researcher), 0);
    memset(&scope, 0, sizeof scope);
    scope.tables = health_only;
    scope.n_tables = 1;
    scope.max_epsilon = 10.0;
    certify(&w->cert, &w->cert_len, &w->authority, &w->researcher, &scope);
    randombytes_buf(w->secret, sizeof w->secret);
}

static void world_free(struct world *w)
{
    free(w->cert);
    qr_identity_wipe(&w->maker);
    qr_identity_wipe(&w->authority);
    qr_identity_wipe(&w->researcher);
    sodium_memzero(w->secret, sizeof w->secret);
}

/* ------------------------------------------------------------- plans */

static void plan_sign(struct plan *out, const struct world *w, const char *sql)
{
    plan_sign_as(out, sql, NOW_S, &w->researcher, w->cert, w->cert_len);
}

/* The study most tests run: per sex, rows, steps and people; collection
 * closes after `size` contributions (0: at the deadline). */
static void plan_by_sex(struct plan *out, const struct world *w, unsigned size)
{
    char sql[512];

    char size_clause[32] = "";

    if (size > 0)
        snprintf(size_clause, sizeof size_clause, "SIZE %u ", size);
    snprintf(sql, sizeof sql,
             "SELECT sex, COUNT(*), SUM(steps), COUNT(DISTINCT participant) FROM health "
             "GROUP BY sex ORDER BY sex %sWITH (min_participants = 5, min_group_size = 1)",
             size_clause);
    plan_sign(out, w, sql);
}

/* A second study: one row over everyone. */
static void plan_overall(struct plan *out, const struct world *w, unsigned size)
{
    char sql[512];

    snprintf(sql, sizeof sql,
             "SELECT COUNT(*), SUM(steps), MAX(age) FROM health SIZE %u "
             "WITH (min_participants = 5, min_group_size = 1)",
             size);
    plan_sign(out, w, sql);
}

/* ------------------------------------------------------------- tokens */

/* The owner's rows: a pure function of the token's number. */
static void rows_of(struct tok *t)
{
    unsigned who = t->who;

    t->n_rows = 1 + who % ROWS_MAX;
    for (size_t k = 0; k < t->n_rows; k++) {
        t->rows[k].age = 20 + who % 50;
        t->rows[k].sex = who % 3 == 0 ? "F" : "M";
        t->rows[k].steps = 1000 + 97 * (int64_t)who + 13 * (int64_t)k;
    }
}

/*
 * A token made by maker (tok_provision) that trusts the study authority
 * for plans; then its owner loads rows and consents.
 */
static void tok_init(struct tok *t, const struct world *w, const struct qr_identity *maker,
                     unsigned who)
{
    char subject[32];

    snprintf(subject, sizeof subject, "token-%u", who);
    tok_provision(t, maker, &w->authority, w->secret, who, subject, NOW_S);
    rows_of(t);
    tok_start(t, NOW_S);
}

struct fleet {
    struct tok *t;
    size_t n;
};

static void fleet_init(struct fleet *f, const struct world *w, size_t n)
{
    f->n = n;
    f->t = xalloc(n * sizeof *f->t);
    for (size_t i = 0; i < n; i++)
        tok_init(&f->t[i], w, &w->maker, (unsigned)i);
}

static void fleet_free(struct fleet *f)
{
    for (size_t i = 0; i < f->n; i++)
        tok_free(&f->t[i]);
    free(f->t);
    f->t = NULL;
    f->n = 0;
}

/* ------------------------------------------------------------ service */

struct svc {
    qr_service *s;
    /* The journal: every record the service returned, in order. */
    uint8_t **rec;
    size_t *rec_len;
    size_t n_rec, cap_rec;
};

static void svc_init_with(struct svc *v, const struct world *w, size_t max_queries,
                          size_t max_connections, size_t token_ram)
{
    struct qr_service_config cfg;

    memset(v, 0, sizeof *v);
    memset(&cfg, 0, sizeof cfg);
    qr_coord_config_default(&cfg.coord);
    cfg.coord.token_ram = token_ram;
    cfg.token_authorities = (const uint8_t(*)[32])w->maker.sign_pk;
    cfg.n_token_authorities = 1;
    cfg.plan_authorities = (const uint8_t(*)[32])w->authority.sign_pk;
    cfg.n_plan_authorities = 1;
    cfg.max_queries = max_queries;
    cfg.max_connections = max_connections;
    cfg.challenge_ms = CHALLENGE_MS;
    assert_int_equal(qr_service_new(&v->s, &cfg), 0);
}

/* The token RAM services are told of: SMALL_RAM but where a test says
 * otherwise (a shuffle needs room for a batch). */
static size_t svc_ram = SMALL_RAM;

static void svc_init(struct svc *v, const struct world *w, size_t max_queries)
{
    svc_init_with(v, w, max_queries, 0, svc_ram);
}

static void journal_push(struct svc *v, const uint8_t *rec, size_t len)
{
    uint8_t *copy = xalloc(len);

    if (v->n_rec == v->cap_rec) {
        v->cap_rec = v->cap_rec ? 2 * v->cap_rec : 64;
        v->rec = realloc(v->rec, v->cap_rec * sizeof *v->rec);
        v->rec_len = realloc(v->rec_len, v->cap_rec * sizeof *v->rec_len);
        assert_non_null(v->rec);
        assert_non_null(v->rec_len);
    }
    memcpy(copy, rec, len);
    v->rec[v->n_rec] = copy;
    v->rec_len[v->n_rec++] = len;
}

static void svc_free(struct svc *v)
{
    qr_service_free(v->s);
    for (size_t i = 0; i < v->n_rec; i++)
        free(v->rec[i]);
    free(v->rec);
    free(v->rec_len);
    memset(v, 0, sizeof *v);
}

/*
 * One request on a connection: returns the status, which the reply must
 * carry (with an error text when it is not 0); the reply in *reply if
 * reply is not NULL. A journal record, if any, is appended to v's journal.
 */
static int svc_send(struct svc *v, uint64_t conn, int64_t now_ms, const uint8_t *req, size_t len,
                    uint8_t **reply, size_t *reply_len)
{
    uint8_t *r = NULL, *rec = NULL;
    size_t rl = 0, recl = 0;
    Cohort__ServiceReply *m;
    int rc;

    rc = qr_service_handle(v->s, conn, now_ms, req, len, &r, &rl, &rec, &recl);
    assert_non_null(r);
    m = cohort__service_reply__unpack(NULL, rl, r);
    assert_non_null(m);
    assert_int_equal(m->status, rc);
    if (rc != 0) {
        assert_non_null(m->error);
        assert_true(m->error[0] != '\0');
        assert_null(rec);
    }
    cohort__service_reply__free_unpacked(m, NULL);
    if (rec != NULL) {
        journal_push(v, rec, recl);
        free(rec);
    }
    if (reply != NULL) {
        *reply = r;
        *reply_len = rl;
    } else {
        free(r);
    }
    return rc;
}

/* The same, with the reply decoded (free with cohort__service_reply__free_unpacked). */
static Cohort__ServiceReply *svc_ask(struct svc *v, uint64_t conn, int64_t now_ms, struct bytes req,
                                     int *status)
{
    uint8_t *r;
    size_t rl;
    Cohort__ServiceReply *m;

    *status = svc_send(v, conn, now_ms, req.p, req.n, &r, &rl);
    m = cohort__service_reply__unpack(NULL, rl, r);
    free(r);
    assert_non_null(m);
    return m;
}

/* Send and expect a status; no record may come of it unless `record`. */
static void expect(struct svc *v, uint64_t conn, int64_t now_ms, const uint8_t *req, size_t len,
                   int status, int record)
{
    size_t n0 = v->n_rec;

    assert_int_equal(svc_send(v, conn, now_ms, req, len, NULL, NULL), status);
    assert_int_equal(v->n_rec, n0 + (record ? 1 : 0));
}

static struct qr_service_query query_at(const struct svc *v, size_t i)
{
    struct qr_service_query q;

    assert_int_equal(qr_service_query(v->s, i, &q), 0);
    return q;
}

/* What a refused request must not change: everything but message counters. */
static void assert_same_progress(const struct qr_coord_stats *a, const struct qr_coord_stats *b)
{
    assert_int_equal(a->state, b->state);
    assert_int_equal(a->contributions, b->contributions);
    assert_int_equal(a->ciphertexts_collected, b->ciphertexts_collected);
    assert_int_equal(a->level, b->level);
    assert_int_equal(a->levels, b->levels);
    assert_int_equal(a->partitions, b->partitions);
    assert_int_equal(a->tasks_issued, b->tasks_issued);
    assert_int_equal(a->tasks_done, b->tasks_done);
    assert_int_equal(a->tasks_reassigned, b->tasks_reassigned);
    assert_int_equal(a->aggregator_tokens, b->aggregator_tokens);
}

/* A snapshot of every query's progress and of the admissions. */
struct snap {
    size_t n_queries, connections, n_rec;
    struct qr_coord_stats st[4];
};

static void snap_take(struct snap *sn, const struct svc *v)
{
    memset(sn, 0, sizeof *sn);
    sn->n_queries = qr_service_queries(v->s);
    sn->connections = qr_service_connections(v->s);
    sn->n_rec = v->n_rec;
    assert_true(sn->n_queries <= 4);
    for (size_t i = 0; i < sn->n_queries; i++)
        sn->st[i] = query_at(v, i).stats;
}

/* As snap_check, with `gone` connections fewer than at the snapshot. */
static void snap_check_gone(const struct snap *sn, const struct svc *v, size_t gone)
{
    assert_int_equal(qr_service_queries(v->s), sn->n_queries);
    assert_int_equal(qr_service_connections(v->s) + gone, sn->connections);
    assert_int_equal(v->n_rec, sn->n_rec);
    for (size_t i = 0; i < sn->n_queries; i++) {
        struct qr_service_query q = query_at(v, i);

        assert_same_progress(&sn->st[i], &q.stats);
    }
}

static void snap_check(const struct snap *sn, const struct svc *v)
{
    snap_check_gone(sn, v, 0);
}

static struct bytes req_submit(const struct plan *p)
{
    return request1(6, p->bytes, p->len);
}

static void submit(struct svc *v, const struct plan *p, int64_t now_ms)
{
    struct bytes req = req_submit(p);
    size_t n0 = v->n_rec;
    Cohort__ServiceReply *r;
    int st;

    r = svc_ask(v, 0, now_ms, req, &st);
    free(req.p);
    assert_int_equal(st, 0);
    assert_int_equal(v->n_rec, n0 + 1);
    assert_int_equal(r->n_queries, 1);
    assert_int_equal(r->queries[0]->query_id.len, 32);
    assert_memory_equal(r->queries[0]->query_id.data, p->id, 32);
    assert_int_equal(r->queries[0]->state, COHORT__QUERY_STATE__QS_COLLECTING);
    assert_string_equal(r->queries[0]->study, STUDY);
    assert_string_equal(r->queries[0]->researcher, RESEARCHER);
    cohort__service_reply__free_unpacked(r, NULL);
}

/* The index of a query by id. */
static size_t query_index(const struct svc *v, const uint8_t id[32])
{
    for (size_t i = 0; i < qr_service_queries(v->s); i++) {
        struct qr_service_query q = query_at(v, i);

        if (memcmp(q.query_id, id, 32) == 0)
            return i;
    }
    fail_msg("no such query");
    return 0;
}

static enum qr_state state_of(const struct svc *v, const struct plan *p)
{
    return query_at(v, query_index(v, p->id)).stats.state;
}

/* ------------------------------------------------------------- agents */

/* Hello, challenge, the token's attestation, Admit: t speaks on conn. */
static void tok_admit(struct svc *v, struct tok *t, uint64_t conn, int64_t now_ms)
{
    uint8_t *hello, *reply, *admit;
    size_t hello_len, reply_len, admit_len, n0 = v->n_rec;

    assert_int_equal(pt_agent_hello(&t->ag, now_ms / 1000, &hello, &hello_len), PT_OK);
    assert_int_equal(svc_send(v, conn, now_ms, hello, hello_len, &reply, &reply_len), 0);
    assert_int_equal(pt_agent_admit(&t->ag, now_ms / 1000, reply, reply_len, &admit, &admit_len),
                     PT_OK);
    assert_int_equal(svc_send(v, conn, now_ms, admit, admit_len, NULL, NULL), 0);
    assert_int_equal(v->n_rec, n0);
    t->conn = conn;
    free(hello);
    free(reply);
    free(admit);
}

/* Every token of f on its own connection, numbered from base. */
static void fleet_admit(struct svc *v, struct fleet *f, uint64_t base, int64_t now_ms)
{
    for (size_t i = 0; i < f->n; i++)
        tok_admit(v, &f->t[i], base + i, now_ms);
}

/*
 * Ask for work on t's connection and let its agent act on the reply; what
 * the agent would send next (an Upload or a TaskResult) is left in *next
 * (NULL when there is nothing), unsent.
 */
static enum pt_action tok_work(struct svc *v, struct tok *t, int64_t now_ms, struct bytes *next)
{
    struct bytes req = work_request(t);
    uint8_t *reply;
    size_t reply_len, n0 = v->n_rec;
    enum pt_action action;

    assert_int_equal(svc_send(v, t->conn, now_ms, req.p, req.n, &reply, &reply_len), 0);
    assert_int_equal(v->n_rec, n0);
    assert_int_equal(
        pt_agent_handle(&t->ag, now_ms / 1000, reply, reply_len, &action, &next->p, &next->n),
        PT_OK);
    free(req.p);
    free(reply);
    return action;
}

/* The same, then send what the agent made: it must be taken. */
static enum pt_action tok_step(struct svc *v, struct tok *t, int64_t now_ms)
{
    struct bytes next;
    enum pt_action action = tok_work(v, t, now_ms, &next);

    if (next.p != NULL) {
        assert_int_equal(svc_send(v, t->conn, now_ms, next.p, next.n, NULL, NULL), 0);
        free(next.p);
    }
    return action;
}

static int all_done(const struct svc *v)
{
    for (size_t i = 0; i < qr_service_queries(v->s); i++) {
        struct qr_service_query q = query_at(v, i);

        if (q.stats.state == QR_FAILED)
            fail_msg("query %zu failed: %s", i, q.stats.failure_msg);
        if (q.stats.state != QR_DONE)
            return 0;
    }
    return 1;
}

typedef int (*stop_fn)(const struct svc *v, const void *ctx);

/*
 * Rounds over the fleet, each token asking for work and doing it, until
 * every query is done or stop() says so (checked after every step). Tokens
 * marked in `skip` sit out.
 */
static void drive(struct svc *v, struct fleet *f, int64_t *now_ms, stop_fn stop, const void *ctx,
                  const uint8_t *skip)
{
    for (unsigned round = 0; round < ROUNDS_MAX; round++) {
        for (size_t i = 0; i < f->n; i++) {
            if (all_done(v) || (stop != NULL && stop(v, ctx)))
                return;
            if (skip != NULL && skip[i])
                continue;
            tok_step(v, &f->t[i], *now_ms);
            *now_ms += STEP_MS;
        }
    }
    fail_msg("the study did not finish in %u rounds", ROUNDS_MAX);
}

/* ------------------------------------------------------------- results */

static void fetch_open(struct svc *v, const struct world *w, const struct plan *p, int64_t now_ms,
                       struct qr_result *out)
{
    struct bytes req = request1(8, p->id, 32);
    Cohort__ServiceReply *r;
    uint8_t *sealed;
    size_t sealed_len, n0 = v->n_rec;
    int st;

    r = svc_ask(v, 0, now_ms, req, &st);
    free(req.p);
    assert_int_equal(st, 0);
    assert_int_equal(v->n_rec, n0);
    assert_non_null(r->result);
    assert_int_equal(r->n_queries, 1);
    assert_int_equal(r->queries[0]->state, COHORT__QUERY_STATE__QS_DONE);
    sealed_len = cohort__sealed_result__get_packed_size(r->result);
    sealed = xalloc(sealed_len);
    cohort__sealed_result__pack(r->result, sealed);
    cohort__service_reply__free_unpacked(r, NULL);
    assert_int_equal(qr_result_open(out, sealed, sealed_len, p->bytes, p->len, &w->researcher,
                                    (const uint8_t(*)[32])w->maker.sign_pk, 1, now_ms / 1000),
                     0);
    free(sealed);
}

/* The truth of plan_by_sex over the tokens of f not in `skip`. */
static void check_by_sex(const struct qr_result *r, const struct fleet *f, const uint8_t *skip)
{
    int64_t rows[2] = {0, 0}, steps[2] = {0, 0}, people[2] = {0, 0};
    uint64_t everyone = 0;
    size_t out = 0;

    for (size_t i = 0; i < f->n; i++) {
        const struct tok *t = &f->t[i];
        int g;

        if (skip != NULL && skip[i])
            continue;
        g = strcmp(t->rows[0].sex, "F") == 0 ? 0 : 1;
        people[g]++;
        everyone++;
        for (size_t k = 0; k < t->n_rows; k++) {
            rows[g]++;
            steps[g] += t->rows[k].steps;
        }
    }
    assert_int_equal(r->n_columns, 4);
    assert_int_equal(r->participants, everyone);
    assert_int_equal(r->epsilon, 0);
    for (int g = 0; g < 2; g++) {
        const struct qr_value *c;

        if (people[g] == 0)
            continue;
        assert_true(out < r->n_rows);
        c = &r->cells[out * 4];
        assert_int_equal(c[0].type, QR_TEXT);
        assert_string_equal(c[0].s, g == 0 ? "F" : "M");
        assert_int_equal(c[1].i, rows[g]);
        assert_int_equal(c[2].i, steps[g]);
        assert_int_equal(c[3].i, people[g]);
        out++;
    }
    assert_int_equal(r->n_rows, out);
}

static void check_overall(const struct qr_result *r, const struct fleet *f)
{
    int64_t rows = 0, steps = 0, age = 0;

    for (size_t i = 0; i < f->n; i++)
        for (size_t k = 0; k < f->t[i].n_rows; k++) {
            rows++;
            steps += f->t[i].rows[k].steps;
            if (f->t[i].rows[k].age > age)
                age = f->t[i].rows[k].age;
        }
    assert_int_equal(r->n_columns, 3);
    assert_int_equal(r->n_rows, 1);
    assert_int_equal(r->participants, f->n);
    assert_int_equal(r->cells[0].i, rows);
    assert_int_equal(r->cells[1].i, steps);
    assert_int_equal(r->cells[2].i, age);
}

/* Two opened results hold the same table. */
static void assert_same_result(const struct qr_result *a, const struct qr_result *b)
{
    assert_int_equal(a->n_columns, b->n_columns);
    assert_int_equal(a->n_rows, b->n_rows);
    assert_int_equal(a->participants, b->participants);
    for (size_t i = 0; i < a->n_rows * a->n_columns; i++) {
        assert_int_equal(a->cells[i].type, b->cells[i].type);
        assert_int_equal(a->cells[i].i, b->cells[i].i);
        assert_string_equal(a->cells[i].s, b->cells[i].s);
    }
}

/* --------------------------------------------------- hand-made requests */

/* A TaskResult's task id and query id, read back. */
static uint64_t task_of(struct bytes tr, uint8_t query[32])
{
    Cohort__ServiceRequest *r = unpack_request(tr.p, tr.n);
    uint64_t id;

    assert_int_equal(r->body_case, COHORT__SERVICE_REQUEST__BODY_RESULT);
    assert_int_equal(r->result->status, 0);
    assert_int_equal(r->result->query_id.len, 32);
    memcpy(query, r->result->query_id.data, 32);
    id = r->result->task_id;
    cohort__service_request__free_unpacked(r, NULL);
    return id;
}

/* ====================================================================== */
/* 1. A whole study                                                       */
/* ====================================================================== */

static void a_whole_study_runs_through_the_service_and_opens_to_the_truth(void **state)
{
    struct world w;
    struct fleet f;
    struct svc v;
    struct plan p;
    struct qr_result res;
    struct bytes req;
    Cohort__ServiceReply *r;
    int64_t now = NOW_MS;
    struct qr_service_query q;
    int st;

    (void)state;
    world_init(&w);
    fleet_init(&f, &w, N_TOKENS);
    svc_init(&v, &w, 0);
    plan_by_sex(&p, &w, N_TOKENS);
    submit(&v, &p, now);
    assert_int_equal(qr_service_queries(v.s), 1);

    fleet_admit(&v, &f, 100, now);
    assert_int_equal(qr_service_connections(v.s), N_TOKENS);

    /* Status while collecting, by id and for all. */
    req = request1(7, p.id, 32);
    r = svc_ask(&v, 0, now, req, &st);
    free(req.p);
    assert_int_equal(st, 0);
    assert_int_equal(r->n_queries, 1);
    assert_memory_equal(r->queries[0]->query_id.data, p.id, 32);
    assert_int_equal(r->queries[0]->state, COHORT__QUERY_STATE__QS_COLLECTING);
    assert_int_equal(r->queries[0]->target, N_TOKENS);
    assert_int_equal(r->queries[0]->deadline, NOW_S + 3600);
    assert_int_equal(r->queries[0]->contributions, 0);
    assert_int_equal(r->queries[0]->submitted_at, NOW_S);
    cohort__service_reply__free_unpacked(r, NULL);

    /* Fetching before the end: not done, and no result. */
    req = request1(8, p.id, 32);
    r = svc_ask(&v, 0, now, req, &st);
    free(req.p);
    assert_int_equal(st, QR_ERR_NOT_DONE);
    assert_null(r->result);
    cohort__service_reply__free_unpacked(r, NULL);

    drive(&v, &f, &now, NULL, NULL, NULL);
    assert_int_equal(state_of(&v, &p), QR_DONE);
    q = query_at(&v, 0);
    assert_int_equal(q.stats.contributions, N_TOKENS);
    assert_int_equal(q.stats.uploads_rejected, 0);
    assert_true(q.stats.levels >= 2); /* the cut points below need several levels */
    assert_string_equal(q.study, STUDY);
    assert_string_equal(q.researcher, RESEARCHER);
    assert_int_equal(q.submitted_ms, NOW_MS);
    /* The journal: the plan, each upload, each task result; nothing else. */
    assert_int_equal(v.n_rec, 1 + q.stats.contributions + q.stats.tasks_done);

    req = request1(7, NULL, 0);
    r = svc_ask(&v, 0, now, req, &st);
    free(req.p);
    assert_int_equal(st, 0);
    assert_int_equal(r->n_queries, 1);
    assert_int_equal(r->queries[0]->state, COHORT__QUERY_STATE__QS_DONE);
    assert_int_equal(r->queries[0]->contributions, N_TOKENS);
    assert_int_equal(r->queries[0]->tasks_done, q.stats.tasks_done);
    assert_int_equal(r->queries[0]->levels_done, q.stats.levels);
    assert_int_equal(r->queries[0]->partitions, q.stats.partitions);
    cohort__service_reply__free_unpacked(r, NULL);

    /* An unknown query id: nobody's status. */
    {
        uint8_t other[32];

        memset(other, 0x5a, sizeof other);
        req = request1(7, other, 32);
        expect(&v, 0, now, req.p, req.n, QR_ERR_UNKNOWN_QUERY, 0);
        free(req.p);
        req = request1(8, other, 32);
        expect(&v, 0, now, req.p, req.n, QR_ERR_UNKNOWN_QUERY, 0);
        free(req.p);
        req = request1(8, other, 5);
        expect(&v, 0, now, req.p, req.n, QR_ERR_MALFORMED, 0);
        free(req.p);
    }

    fetch_open(&v, &w, &p, now, &res);
    check_by_sex(&res, &f, NULL);
    qr_result_free(&res);

    /* Once done, a token asking for work is told to wait. */
    {
        struct bytes next;

        assert_int_equal(tok_work(&v, &f.t[0], now, &next), PT_IDLE);
        assert_null(next.p);
    }

    plan_free(&p);
    svc_free(&v);
    fleet_free(&f);
    world_free(&w);
}

/* ====================================================================== */
/* 2. Admission                                                           */
/* ====================================================================== */

/* Hello on conn; the reply's challenge (malloc'd reply kept in *reply). */
static void hello(struct svc *v, struct tok *t, uint64_t conn, int64_t now_ms, uint8_t **reply,
                  size_t *reply_len)
{
    uint8_t *req;
    size_t len;

    assert_int_equal(pt_agent_hello(&t->ag, now_ms / 1000, &req, &len), PT_OK);
    assert_int_equal(svc_send(v, conn, now_ms, req, len, reply, reply_len), 0);
    free(req);
}

/* The Admit the agent makes for a Hello reply (optionally bent first). */
static struct bytes admit_for(struct tok *t, int64_t now_ms, const uint8_t *reply, size_t len)
{
    struct bytes b;

    assert_int_equal(pt_agent_admit(&t->ag, now_ms / 1000, reply, len, &b.p, &b.n), PT_OK);
    return b;
}

/* The same Hello reply with one byte of its challenge changed. */
static struct bytes bend_challenge(const uint8_t *reply, size_t len)
{
    Cohort__ServiceReply *r = cohort__service_reply__unpack(NULL, len, reply);
    struct bytes b;

    assert_non_null(r);
    assert_int_equal(r->challenge.len, 32);
    r->challenge.data[7] ^= 0x40;
    b.n = cohort__service_reply__get_packed_size(r);
    b.p = xalloc(b.n);
    cohort__service_reply__pack(r, b.p);
    cohort__service_reply__free_unpacked(r, NULL);
    return b;
}

/* A Hello carrying any certificate. */
static struct bytes hello_with(const uint8_t *cert, size_t cert_len)
{
    Cohort__ServiceRequest req = COHORT__SERVICE_REQUEST__INIT;
    Cohort__Hello h = COHORT__HELLO__INIT;
    struct bytes b;

    h.device_cert = cohort__certificate__unpack(NULL, cert_len, cert);
    assert_non_null(h.device_cert);
    req.body_case = COHORT__SERVICE_REQUEST__BODY_HELLO;
    req.hello = &h;
    b = pack_request(&req);
    cohort__certificate__free_unpacked(h.device_cert, NULL);
    return b;
}

/* An Admit whose attestation signature has one bit flipped. */
static struct bytes bend_signature(struct bytes admit)
{
    Cohort__ServiceRequest *r = unpack_request(admit.p, admit.n);
    struct bytes b;

    assert_int_equal(r->body_case, COHORT__SERVICE_REQUEST__BODY_ADMIT);
    assert_non_null(r->admit->attestation);
    assert_int_equal(r->admit->attestation->signature.len, 64);
    r->admit->attestation->signature.data[20] ^= 0x01;
    b = pack_request(r);
    cohort__service_request__free_unpacked(r, NULL);
    return b;
}

static void work_is(struct svc *v, struct tok *t, uint64_t conn, int64_t now_ms, int status)
{
    struct bytes req = work_request(t);

    expect(v, conn, now_ms, req.p, req.n, status, 0);
    free(req.p);
}

static void admission_refusals_have_exact_codes_and_change_nothing(void **state)
{
    struct world w;
    struct fleet f;
    struct svc v;
    struct plan p;
    struct snap sn;
    struct bytes upload, req;
    uint8_t *reply;
    size_t reply_len;
    int64_t now = NOW_MS;
    struct tok *a, *b, *c;

    (void)state;
    world_init(&w);
    fleet_init(&f, &w, N_TOKENS);
    svc_init(&v, &w, 0);
    plan_by_sex(&p, &w, N_TOKENS);
    submit(&v, &p, now);
    a = &f.t[0];
    b = &f.t[1];
    c = &f.t[2];

    /* Work, Upload and TaskResult on a connection nobody has admitted. */
    snap_take(&sn, &v);
    work_is(&v, a, 1, now, QR_ERR_NOT_ADMITTED);
    req = req_task_result(1, a->id, p.id);
    expect(&v, 1, now, req.p, req.n, QR_ERR_NOT_ADMITTED, 0);
    free(req.p);
    snap_check(&sn, &v);

    /* A real upload, made on an admitted connection but sent elsewhere. */
    tok_admit(&v, a, 1, now);
    assert_int_equal(tok_work(&v, a, now, &upload), PT_COLLECTED);
    snap_take(&sn, &v);
    expect(&v, 2, now, upload.p, upload.n, QR_ERR_NOT_ADMITTED, 0);
    snap_check(&sn, &v);
    /* After a Hello but before the Admit, still not admitted. */
    hello(&v, b, 2, now, &reply, &reply_len);
    snap_take(&sn, &v);
    expect(&v, 2, now, upload.p, upload.n, QR_ERR_NOT_ADMITTED, 0);
    work_is(&v, b, 2, now, QR_ERR_NOT_ADMITTED);
    snap_check(&sn, &v);
    free(reply);

    /* Admitted as b, speaking for a. */
    tok_admit(&v, b, 3, now);
    snap_take(&sn, &v);
    expect(&v, 3, now, upload.p, upload.n, QR_ERR_NOT_ADMITTED, 0);
    work_is(&v, a, 3, now, QR_ERR_NOT_ADMITTED);
    req = req_task_result(1, a->id, p.id);
    expect(&v, 3, now, req.p, req.n, QR_ERR_NOT_ADMITTED, 0);
    free(req.p);
    snap_check(&sn, &v);
    /* On its own connection the upload is taken, once. */
    expect(&v, 1, now, upload.p, upload.n, 0, 1);
    assert_int_equal(query_at(&v, 0).stats.contributions, 1);
    free(upload.p);

    /* A token of a maker this service does not trust. */
    {
        struct qr_identity rogue;
        struct tok stranger;
        uint8_t *admit;
        size_t admit_len;
        Cohort__ServiceReply *r;

        assert_int_equal(qr_identity_generate(&rogue), 0);
        tok_init(&stranger, &w, &rogue, 99);
        snap_take(&sn, &v);
        assert_int_equal(pt_agent_hello(&stranger.ag, now / 1000, &req.p, &req.n), PT_OK);
        assert_int_equal(svc_send(&v, 50, now, req.p, req.n, &reply, &reply_len), QR_ERR_UNTRUSTED);
        free(req.p);
        r = cohort__service_reply__unpack(NULL, reply_len, reply);
        assert_non_null(r);
        assert_non_null(strstr(r->error, "not issued by an authority this service trusts"));
        assert_int_equal(r->challenge.len, 0);
        cohort__service_reply__free_unpacked(r, NULL);
        /* The agent says why, for its owner. */
        assert_int_equal(
            pt_agent_admit(&stranger.ag, now / 1000, reply, reply_len, &admit, &admit_len),
            PT_ERR_SERVICE);
        assert_null(admit);
        assert_non_null(strstr(stranger.ag.last_reason, "authority this service trusts"));
        free(reply);
        work_is(&v, &stranger, 50, now, QR_ERR_NOT_ADMITTED);
        snap_check(&sn, &v);
        tok_free(&stranger);
        qr_identity_wipe(&rogue);
    }

    /* Certificates a maker this service trusts did sign, but that are not a
     * token's now: another role, or out of date. None costs b its admission. */
    {
        struct qr_identity someone;
        uint8_t *cert;
        size_t cert_len;
        const struct {
            int role;
            int64_t from, to;
            const char *why;
        } cases[] = {
            {COHORT__ROLE__ROLE_RESEARCHER, NOW_S - DAY_S, NOW_S + DAY_S,
             "the certificate is not a token's"},
            {COHORT__ROLE__ROLE_TOKEN, NOW_S - 10 * DAY_S, NOW_S - DAY_S,
             "the token's certificate is not valid now"},
            {COHORT__ROLE__ROLE_TOKEN, NOW_S + DAY_S, NOW_S + 10 * DAY_S,
             "the token's certificate is not valid now"},
        };

        assert_int_equal(qr_identity_generate(&someone), 0);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            Cohort__ServiceReply *r;
            int st;

            assert_int_equal(qr_cert_issue(&cert, &cert_len, &w.maker, cases[i].role, "someone",
                                           someone.sign_pk, someone.box_pk, cases[i].from,
                                           cases[i].to, NULL),
                             0);
            req = hello_with(cert, cert_len);
            free(cert);
            snap_take(&sn, &v);
            r = svc_ask(&v, 60, now, req, &st);
            assert_int_equal(st, QR_ERR_UNTRUSTED);
            assert_string_equal(r->error, cases[i].why);
            cohort__service_reply__free_unpacked(r, NULL);
            expect(&v, 3, now, req.p, req.n, QR_ERR_UNTRUSTED, 0);
            work_is(&v, b, 3, now, 0);
            snap_check(&sn, &v);
            free(req.p);
        }
        qr_identity_wipe(&someone);
        /* A Hello without a certificate. */
        req = request1(4, NULL, 0);
        expect(&v, 60, now, req.p, req.n, QR_ERR_MALFORMED, 0);
        free(req.p);
        snap_check(&sn, &v);
    }

    /* A wrong challenge: refused; the real one still works after. */
    {
        struct bytes bent, wrong, right;

        hello(&v, c, 10, now, &reply, &reply_len);
        bent = bend_challenge(reply, reply_len);
        wrong = admit_for(c, now, bent.p, bent.n);
        right = admit_for(c, now, reply, reply_len);
        snap_take(&sn, &v);
        expect(&v, 10, now, wrong.p, wrong.n, QR_ERR_CHALLENGE, 0);
        work_is(&v, c, 10, now, QR_ERR_NOT_ADMITTED);
        snap_check(&sn, &v);
        /* Answered on another connection than the Hello's. */
        expect(&v, 11, now, right.p, right.n, QR_ERR_CHALLENGE, 0);
        work_is(&v, c, 11, now, QR_ERR_NOT_ADMITTED);
        snap_check(&sn, &v);
        expect(&v, 10, now + 1, right.p, right.n, 0, 0);
        work_is(&v, c, 10, now + 1, 0);
        /* Replayed: the challenge was used. The admission stays. */
        snap_take(&sn, &v);
        expect(&v, 10, now + 2, right.p, right.n, QR_ERR_CHALLENGE, 0);
        expect(&v, 12, now + 2, right.p, right.n, QR_ERR_CHALLENGE, 0);
        work_is(&v, c, 12, now + 2, QR_ERR_NOT_ADMITTED);
        snap_check(&sn, &v);
        work_is(&v, c, 10, now + 2, 0);
        free(bent.p);
        free(wrong.p);
        free(right.p);
        free(reply);
    }

    /* Too late: challenge_ms after the Hello. */
    {
        struct tok *d = &f.t[3];
        struct bytes right;

        hello(&v, d, 20, now, &reply, &reply_len);
        right = admit_for(d, now, reply, reply_len);
        snap_take(&sn, &v);
        expect(&v, 20, now + CHALLENGE_MS + 1, right.p, right.n, QR_ERR_CHALLENGE, 0);
        work_is(&v, d, 20, now + CHALLENGE_MS + 1, QR_ERR_NOT_ADMITTED);
        /* The attempt used the challenge: the connection holds nothing now. */
        snap_check_gone(&sn, &v, 1);
        expect(&v, 20, now + 1, right.p, right.n, QR_ERR_CHALLENGE, 0);
        snap_check_gone(&sn, &v, 1);
        free(right.p);
        free(reply);
        /* Exactly challenge_ms after its Hello is still in time. */
        hello(&v, d, 20, now + CHALLENGE_MS, &reply, &reply_len);
        right = admit_for(d, now, reply, reply_len);
        expect(&v, 20, now + 2 * CHALLENGE_MS, right.p, right.n, 0, 0);
        work_is(&v, d, 20, now + 2 * CHALLENGE_MS, 0);
        free(right.p);
        free(reply);
    }

    /* A signature that does not verify uses the challenge up. */
    {
        struct tok *e = &f.t[4];
        struct bytes right, bad;

        hello(&v, e, 30, now, &reply, &reply_len);
        right = admit_for(e, now, reply, reply_len);
        bad = bend_signature(right);
        snap_take(&sn, &v);
        expect(&v, 30, now, bad.p, bad.n, QR_ERR_SIGNATURE, 0);
        work_is(&v, e, 30, now, QR_ERR_NOT_ADMITTED);
        expect(&v, 30, now, right.p, right.n, QR_ERR_CHALLENGE, 0);
        work_is(&v, e, 30, now, QR_ERR_NOT_ADMITTED);
        snap_check_gone(&sn, &v, 1);
        free(right.p);
        free(bad.p);
        free(reply);

        /* The right challenge without an attestation: malformed, and used up. */
        hello(&v, e, 30, now, &reply, &reply_len);
        right = admit_for(e, now, reply, reply_len);
        {
            Cohort__ServiceRequest *r = unpack_request(right.p, right.n);
            Cohort__Attestation *keep = r->admit->attestation;

            r->admit->attestation = NULL;
            bad = pack_request(r);
            r->admit->attestation = keep;
            cohort__service_request__free_unpacked(r, NULL);
        }
        snap_take(&sn, &v);
        expect(&v, 30, now, bad.p, bad.n, QR_ERR_MALFORMED, 0);
        expect(&v, 30, now, right.p, right.n, QR_ERR_CHALLENGE, 0);
        work_is(&v, e, 30, now, QR_ERR_NOT_ADMITTED);
        snap_check_gone(&sn, &v, 1);
        free(right.p);
        free(bad.p);
        free(reply);
    }

    /* An Admit on a connection that never said Hello. */
    {
        struct tok *g = &f.t[5];
        struct bytes right;

        hello(&v, g, 40, now, &reply, &reply_len);
        right = admit_for(g, now, reply, reply_len);
        snap_take(&sn, &v);
        expect(&v, 41, now, right.p, right.n, QR_ERR_CHALLENGE, 0);
        snap_check(&sn, &v);
        free(right.p);
        free(reply);
        qr_service_disconnect(v.s, 40);
    }

    /* A disconnect drops the admission. */
    {
        size_t n = qr_service_connections(v.s);

        work_is(&v, b, 3, now, 0);
        qr_service_disconnect(v.s, 3);
        assert_int_equal(qr_service_connections(v.s), n - 1);
        work_is(&v, b, 3, now, QR_ERR_NOT_ADMITTED);
        qr_service_disconnect(v.s, 3); /* twice: nothing more */
        qr_service_disconnect(v.s, 777);
        assert_int_equal(qr_service_connections(v.s), n - 1);
        tok_admit(&v, b, 3, now);
        work_is(&v, b, 3, now, 0);
    }

    /* Nothing above reached the journal but the plan and a's upload; the
     * study still completes for everyone. */
    assert_int_equal(v.n_rec, 2);
    for (size_t i = 0; i < f.n; i++) {
        qr_service_disconnect(v.s, 1000 + i);
        tok_admit(&v, &f.t[i], 1000 + i, now);
    }
    drive(&v, &f, &now, NULL, NULL, NULL);
    {
        struct qr_result res;

        fetch_open(&v, &w, &p, now, &res);
        check_by_sex(&res, &f, NULL);
        qr_result_free(&res);
    }
    assert_int_equal(query_at(&v, 0).stats.contributions, N_TOKENS);

    plan_free(&p);
    svc_free(&v);
    fleet_free(&f);
    world_free(&w);
}

/*
 * max_connections bounds the connections that hold a challenge or an
 * admission. One whose admission failed holds neither, so it gives its
 * place back; many connections coming and going leave the admitted ones
 * as they were.
 */
static void connections_are_bounded_and_a_failed_admission_frees_its_place(void **state)
{
    struct world w;
    struct fleet f;
    struct svc v;
    struct plan p;
    uint8_t *reply;
    size_t reply_len;
    struct bytes right, bad, req;
    Cohort__ServiceReply *r;
    int64_t now = NOW_MS;
    int st;

    (void)state;
    world_init(&w);
    fleet_init(&f, &w, 6);
    svc_init_with(&v, &w, 0, 3, SMALL_RAM);
    plan_by_sex(&p, &w, N_TOKENS);
    submit(&v, &p, now);

    tok_admit(&v, &f.t[0], 1, now);
    hello(&v, &f.t[1], 2, now, &reply, &reply_len);
    free(reply);
    hello(&v, &f.t[2], 3, now, &reply, &reply_len);
    assert_int_equal(qr_service_connections(v.s), 3);

    /* Full: a new connection is refused, one already known is not. */
    assert_int_equal(pt_agent_hello(&f.t[3].ag, now / 1000, &req.p, &req.n), PT_OK);
    r = svc_ask(&v, 4, now, req, &st);
    assert_int_equal(st, QR_ERR_FULL);
    assert_string_equal(r->error, "too many connections");
    cohort__service_reply__free_unpacked(r, NULL);
    assert_int_equal(qr_service_connections(v.s), 3);

    /* A failed admission on 3: it holds nothing, and 4 gets its place. */
    right = admit_for(&f.t[2], now, reply, reply_len);
    bad = bend_signature(right);
    expect(&v, 3, now, bad.p, bad.n, QR_ERR_SIGNATURE, 0);
    assert_int_equal(qr_service_connections(v.s), 2);
    expect(&v, 4, now, req.p, req.n, 0, 0);
    assert_int_equal(qr_service_connections(v.s), 3);
    free(req.p);
    free(right.p);
    free(bad.p);
    free(reply);

    /* A stale answer frees the place as well. */
    assert_int_equal(pt_agent_hello(&f.t[1].ag, now / 1000, &req.p, &req.n), PT_OK);
    assert_int_equal(svc_send(&v, 2, now, req.p, req.n, &reply, &reply_len), 0);
    right = admit_for(&f.t[1], now, reply, reply_len);
    expect(&v, 2, now + CHALLENGE_MS + 1, right.p, right.n, QR_ERR_CHALLENGE, 0);
    assert_int_equal(qr_service_connections(v.s), 2);
    free(right.p);
    free(reply);
    free(req.p);

    /* Connections come and go; the admitted one stays admitted. */
    for (uint64_t k = 0; k < 3000; k++) {
        uint64_t conn = 100000 + k * 7919;

        if (k % 3 == 0) {
            tok_admit(&v, &f.t[4], conn, now);
        } else {
            hello(&v, &f.t[4], conn, now, &reply, &reply_len);
            free(reply);
        }
        assert_int_equal(qr_service_connections(v.s), 3);
        qr_service_disconnect(v.s, conn);
        assert_int_equal(qr_service_connections(v.s), 2);
    }
    work_is(&v, &f.t[0], 1, now, 0);
    work_is(&v, &f.t[3], 4, now, QR_ERR_NOT_ADMITTED);
    assert_int_equal(v.n_rec, 1);

    plan_free(&p);
    svc_free(&v);
    fleet_free(&f);
    world_free(&w);
}

/* ====================================================================== */
/* 3. Submit                                                              */
/* ====================================================================== */

static void refused_submit(struct svc *v, const struct plan *p, int status, const char *why)
{
    struct bytes req = req_submit(p);
    Cohort__ServiceReply *r;
    struct snap sn;
    int st;

    snap_take(&sn, v);
    r = svc_ask(v, 0, NOW_MS, req, &st);
    free(req.p);
    assert_int_equal(st, status);
    if (why != NULL && strstr(r->error, why) == NULL)
        fail_msg("'%s' does not name %s", r->error, why);
    assert_int_equal(r->n_queries, 0);
    cohort__service_reply__free_unpacked(r, NULL);
    snap_check(&sn, v);
}

static void plans_no_token_would_take_are_refused_with_the_reason(void **state)
{
    const char *sql = "SELECT sex, COUNT(*), SUM(steps) FROM health GROUP BY sex";
    struct world w;
    struct svc v;
    struct plan p;
    uint8_t *cert;
    size_t cert_len;
    struct qr_scope scope;

    (void)state;
    world_init(&w);
    svc_init(&v, &w, 2);

    /* A researcher certified by an authority the service does not trust. */
    {
        struct qr_identity rogue;

        assert_int_equal(qr_identity_generate(&rogue), 0);
        certify(&cert, &cert_len, &rogue, &w.researcher, NULL);
        plan_sign_as(&p, sql, NOW_S, &w.researcher, cert, cert_len);
        refused_submit(&v, &p, QR_ERR_REFUSED, "TK_ERR_UNTRUSTED");
        plan_free(&p);
        free(cert);
        qr_identity_wipe(&rogue);
    }

    /* Outside the researcher's scope: another table, a column, epsilon. */
    {
        static const char *const energy[] = {"energy"};
        static const char *const columns[] = {"health.sex", "health.age"};

        memset(&scope, 0, sizeof scope);
        scope.tables = energy;
        scope.n_tables = 1;
        scope.max_epsilon = 10.0;
        certify(&cert, &cert_len, &w.authority, &w.researcher, &scope);
        plan_sign_as(&p, sql, NOW_S, &w.researcher, cert, cert_len);
        refused_submit(&v, &p, QR_ERR_REFUSED, "TK_ERR_SCOPE");
        plan_free(&p);
        free(cert);

        scope.tables = health_only;
        scope.columns = columns;
        scope.n_columns = 2;
        certify(&cert, &cert_len, &w.authority, &w.researcher, &scope);
        plan_sign_as(&p, sql, NOW_S, &w.researcher, cert, cert_len);
        refused_submit(&v, &p, QR_ERR_REFUSED, "TK_ERR_SCOPE");
        plan_free(&p);
        /* The same certificate covers a plan on its columns only. */
        plan_sign_as(&p, "SELECT sex, COUNT(*) FROM health WHERE age > 30 GROUP BY sex", NOW_S,
                     &w.researcher, cert, cert_len);
        {
            struct bytes req = req_submit(&p);

            expect(&v, 0, NOW_MS, req.p, req.n, 0, 1);
            free(req.p);
        }
        plan_free(&p);
        free(cert);

        memset(&scope, 0, sizeof scope);
        scope.tables = health_only;
        scope.n_tables = 1;
        scope.max_epsilon = 0.5;
        certify(&cert, &cert_len, &w.authority, &w.researcher, &scope);
        plan_sign_as(&p,
                     "SELECT sex, COUNT(*) FROM health GROUP BY sex WITH (epsilon = 1.0, "
                     "contribution_bound = 10)",
                     NOW_S, &w.researcher, cert, cert_len);
        refused_submit(&v, &p, QR_ERR_REFUSED, "TK_ERR_SCOPE");
        plan_free(&p);
        free(cert);
    }

    /* Expired: issued two days ago, valid for one. */
    plan_sign_as(&p, sql, NOW_S - 2 * DAY_S, &w.researcher, w.cert, w.cert_len);
    refused_submit(&v, &p, QR_ERR_REFUSED, "TK_ERR_EXPIRED");
    plan_free(&p);

    /* A researcher's signature that does not verify. */
    plan_sign(&p, &w, sql);
    p.bytes[p.len - 3] ^= 0x10; /* in the last certificate's signature */
    refused_submit(&v, &p, QR_ERR_REFUSED, "plan refused");
    plan_free(&p);

    /* Malformed: no plan at all, and bytes that are not a plan. */
    {
        static const uint8_t junk[] = {0x0a, 0x03, 0xff, 0xff, 0xff};
        struct bytes empty = request1(6, NULL, 0), bad = request1(6, junk, sizeof junk);
        struct snap sn;

        snap_take(&sn, &v);
        expect(&v, 0, NOW_MS, empty.p, empty.n, QR_ERR_MALFORMED, 0);
        expect(&v, 0, NOW_MS, bad.p, bad.n, QR_ERR_MALFORMED, 0);
        snap_check(&sn, &v);
        free(empty.p);
        free(bad.p);
    }
    assert_int_equal(qr_service_queries(v.s), 1);
    assert_int_equal(v.n_rec, 1);

    /* The same plan twice is the same query; a third plan does not fit. */
    {
        struct plan other;
        struct bytes req;
        Cohort__ServiceReply *r;
        int st;

        plan_sign(&p, &w, sql);
        submit(&v, &p, NOW_MS);
        req = req_submit(&p);
        r = svc_ask(&v, 0, NOW_MS + 5000, req, &st);
        assert_int_equal(st, 0);
        assert_int_equal(r->n_queries, 1);
        assert_memory_equal(r->queries[0]->query_id.data, p.id, 32);
        assert_int_equal(r->queries[0]->submitted_at, NOW_S);
        cohort__service_reply__free_unpacked(r, NULL);
        free(req.p);
        assert_int_equal(qr_service_queries(v.s), 2);
        assert_int_equal(v.n_rec, 2);

        plan_sign(&other, &w, "SELECT COUNT(*) FROM health");
        refused_submit(&v, &other, QR_ERR_FULL, NULL);
        plan_free(&other);
        plan_free(&p);
    }

    svc_free(&v);
    world_free(&w);
}

/* ====================================================================== */
/* 4. Hostile and out-of-order messages                                   */
/* ====================================================================== */

/* An upload with its contribution's query id replaced. */
static struct bytes upload_for_query(struct bytes upload, const uint8_t query[32])
{
    Cohort__ServiceRequest *r = unpack_request(upload.p, upload.n);
    struct bytes b;

    assert_int_equal(r->body_case, COHORT__SERVICE_REQUEST__BODY_UPLOAD);
    assert_int_equal(r->upload->contribution->query_id.len, 32);
    memcpy(r->upload->contribution->query_id.data, query, 32);
    b = pack_request(r);
    cohort__service_request__free_unpacked(r, NULL);
    return b;
}

/* A task result with its query id replaced. */
static struct bytes result_for_query(struct bytes result, const uint8_t query[32])
{
    Cohort__ServiceRequest *r = unpack_request(result.p, result.n);
    struct bytes b;

    assert_int_equal(r->body_case, COHORT__SERVICE_REQUEST__BODY_RESULT);
    assert_int_equal(r->result->query_id.len, 32);
    memcpy(r->result->query_id.data, query, 32);
    b = pack_request(r);
    cohort__service_request__free_unpacked(r, NULL);
    return b;
}

static int aggregating(const struct svc *v, const void *ctx)
{
    (void)ctx;
    return query_at(v, 0).stats.state == QR_AGGREGATING;
}

static void hostile_messages_are_refused_and_the_study_completes(void **state)
{
    struct world w;
    struct fleet f;
    struct svc v;
    struct plan p;
    struct snap sn;
    struct bytes upload, req;
    int64_t now = NOW_MS;
    struct tok *a;
    uint8_t other[32];

    (void)state;
    world_init(&w);
    fleet_init(&f, &w, N_TOKENS);
    svc_init(&v, &w, 0);
    plan_by_sex(&p, &w, N_TOKENS);
    submit(&v, &p, now);
    fleet_admit(&v, &f, 100, now);
    a = &f.t[0];
    memset(other, 0x77, sizeof other);

    /* Bytes that are not a ServiceRequest, on any connection. */
    {
        static const uint8_t one_zero[] = {0x00};
        static const uint8_t all_ff[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
        static const uint8_t cut[] = {0x0a, 0x40, 0x0a, 0x20};    /* length past the end */
        static const uint8_t group[] = {0x0b, 0x0c};              /* wire types 3 and 4 */
        static const uint8_t varint_body[] = {0x08, 0x01};        /* field 1, not bytes */
        static const uint8_t unknown_only[] = {0x4a, 0x01, 0x00}; /* field 9: no body */
        uint8_t noise[64], seed[randombytes_SEEDBYTES];
        const struct {
            const uint8_t *p;
            size_t n;
        } cases[] = {
            {one_zero, sizeof one_zero},
            {all_ff, sizeof all_ff},
            {cut, sizeof cut},
            {group, sizeof group},
            {varint_body, sizeof varint_body},
            {unknown_only, sizeof unknown_only},
            {noise, sizeof noise},
        };

        memset(seed, 3, sizeof seed);
        randombytes_buf_deterministic(noise, sizeof noise, seed);
        noise[0] = 0x07; /* wire type 7 */
        snap_take(&sn, &v);
        expect(&v, 100, now, NULL, 0, QR_ERR_MALFORMED, 0);
        expect(&v, 100, now, (const uint8_t *)"", 0, QR_ERR_MALFORMED, 0);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            expect(&v, 100, now, cases[i].p, cases[i].n, QR_ERR_MALFORMED, 0);
            expect(&v, 5000, now, cases[i].p, cases[i].n, QR_ERR_MALFORMED, 0);
        }
        snap_check(&sn, &v);
        /* Noise of every length: whatever it happens to say, nothing changes. */
        for (uint32_t k = 0; k < 300; k++) {
            size_t n = k % 97;

            memset(seed, 0, sizeof seed);
            memcpy(seed, &k, sizeof k);
            randombytes_buf_deterministic(noise, sizeof noise, seed);
            if (n > sizeof noise)
                n = sizeof noise;
            (void)svc_send(&v, 100 + k % 3, now, noise, n, NULL, NULL);
            snap_check(&sn, &v);
        }
    }

    /* Two bodies in one request: a Work and a StatusRequest. */
    {
        struct bytes work = work_request(a);
        struct bytes two = concat(field(1, work.p + 2, work.n - 2), request1(7, NULL, 0));

        assert_int_equal(work.p[0], 0x0a);
        snap_take(&sn, &v);
        expect(&v, a->conn, now, two.p, two.n, QR_ERR_MALFORMED, 0);
        two = concat(two, work_request(a));
        expect(&v, a->conn, now, two.p, two.n, QR_ERR_MALFORMED, 0);
        snap_check(&sn, &v);
        free(two.p);
        /* Two of the same body are two bodies as well. */
        two = concat(work_request(a), work);
        expect(&v, a->conn, now, two.p, two.n, QR_ERR_MALFORMED, 0);
        snap_check(&sn, &v);
        free(two.p);
    }

    /* A work request naming too many declined plans, or one of the wrong size. */
    {
        Cohort__ServiceRequest wreq = COHORT__SERVICE_REQUEST__INIT;
        Cohort__WorkRequest wr = COHORT__WORK_REQUEST__INIT;
        ProtobufCBinaryData declined[65];
        uint8_t ids[65][32];

        for (size_t i = 0; i < 65; i++) {
            memset(ids[i], (int)i + 1, 32);
            declined[i].data = ids[i];
            declined[i].len = 32;
        }
        wr.token_id.data = a->id;
        wr.token_id.len = 32;
        wr.declined = declined;
        wreq.body_case = COHORT__SERVICE_REQUEST__BODY_WORK;
        wreq.work = &wr;
        snap_take(&sn, &v);
        wr.n_declined = 64;
        req = pack_request(&wreq);
        expect(&v, a->conn, now, req.p, req.n, 0, 0);
        free(req.p);
        wr.n_declined = 65;
        req = pack_request(&wreq);
        expect(&v, a->conn, now, req.p, req.n, QR_ERR_TOO_LARGE, 0);
        free(req.p);
        wr.n_declined = 2;
        declined[1].len = 31;
        req = pack_request(&wreq);
        expect(&v, a->conn, now, req.p, req.n, QR_ERR_MALFORMED, 0);
        free(req.p);
        snap_check(&sn, &v);
    }

    /* Over QR_REQUEST_MAX. */
    {
        size_t n = (size_t)QR_REQUEST_MAX + 1, at = 0;
        uint8_t *big = xalloc(n);

        /* An Upload body that fills it, as a well-framed request would. */
        big[at++] = (2u << 3) | 2u;
        at += put_varint(big + at, n - 5);
        assert_int_equal(at, 5);
        snap_take(&sn, &v);
        expect(&v, a->conn, now, big, n, QR_ERR_TOO_LARGE, 0);
        expect(&v, a->conn, now, big, n - 1, QR_ERR_MALFORMED, 0);
        snap_check(&sn, &v);
        free(big);
    }

    /* An upload for a query the service does not hold, or naming none. */
    assert_int_equal(tok_work(&v, a, now, &upload), PT_COLLECTED);
    req = upload_for_query(upload, other);
    snap_take(&sn, &v);
    expect(&v, a->conn, now, req.p, req.n, QR_ERR_UNKNOWN_QUERY, 0);
    free(req.p);
    {
        Cohort__ServiceRequest *r = unpack_request(upload.p, upload.n);

        r->upload->contribution->query_id.len = 0;
        req = pack_request(r);
        cohort__service_request__free_unpacked(r, NULL);
        expect(&v, a->conn, now, req.p, req.n, QR_ERR_MALFORMED, 0);
        free(req.p);
    }
    /* Task results while still collecting, or for no such task. */
    req = req_task_result(1, a->id, p.id);
    expect(&v, a->conn, now, req.p, req.n, QR_ERR_UNKNOWN_TASK, 0);
    free(req.p);
    req = req_task_result(1, a->id, other);
    expect(&v, a->conn, now, req.p, req.n, QR_ERR_UNKNOWN_QUERY, 0);
    free(req.p);
    snap_check(&sn, &v);

    /* The same upload twice: taken once, journaled once. */
    expect(&v, a->conn, now, upload.p, upload.n, 0, 1);
    snap_take(&sn, &v);
    expect(&v, a->conn, now + 1, upload.p, upload.n, QR_ERR_DUPLICATE, 0);
    snap_check(&sn, &v);
    assert_int_equal(query_at(&v, 0).stats.contributions, 1);
    assert_int_equal(query_at(&v, 0).stats.uploads_rejected, 1);

    /* Everyone else collects; then hostile task results. */
    drive(&v, &f, &now, aggregating, NULL, NULL);
    assert_int_equal(query_at(&v, 0).stats.contributions, N_TOKENS);
    /* The upload again, after collection closed. */
    snap_take(&sn, &v);
    expect(&v, a->conn, now, upload.p, upload.n, QR_ERR_CLOSED, 0);
    req = req_task_result(9999, a->id, p.id);
    expect(&v, a->conn, now, req.p, req.n, QR_ERR_UNKNOWN_TASK, 0);
    free(req.p);
    req = req_task_result(0, a->id, p.id);
    expect(&v, a->conn, now, req.p, req.n, QR_ERR_UNKNOWN_TASK, 0);
    free(req.p);
    snap_check(&sn, &v);
    {
        struct bytes result, bent;
        uint8_t q[32];
        uint64_t task;

        /* A result for another query's id; then the real one, taken once. */
        assert_int_equal(tok_work(&v, a, now, &result), PT_AGGREGATED);
        task = task_of(result, q);
        assert_memory_equal(q, p.id, 32);
        assert_true(task >= 1);
        bent = result_for_query(result, other);
        snap_take(&sn, &v);
        expect(&v, a->conn, now, bent.p, bent.n, QR_ERR_UNKNOWN_QUERY, 0);
        /* a's result on another token's connection. */
        expect(&v, f.t[1].conn, now, result.p, result.n, QR_ERR_NOT_ADMITTED, 0);
        snap_check(&sn, &v);
        expect(&v, a->conn, now, result.p, result.n, 0, 1);
        snap_take(&sn, &v);
        expect(&v, a->conn, now + 1, result.p, result.n, 0, 0); /* acknowledged, not taken */
        snap_check(&sn, &v);
        free(bent.p);
        free(result.p);
    }
    free(upload.p);

    drive(&v, &f, &now, NULL, NULL, NULL);
    {
        struct qr_result res;
        struct qr_service_query q = query_at(&v, 0);

        assert_int_equal(q.stats.contributions, N_TOKENS);
        assert_int_equal(v.n_rec, 1 + q.stats.contributions + q.stats.tasks_done);
        fetch_open(&v, &w, &p, now, &res);
        check_by_sex(&res, &f, NULL);
        qr_result_free(&res);
    }

    plan_free(&p);
    svc_free(&v);
    fleet_free(&f);
    world_free(&w);
}

/* ====================================================================== */
/* 5. Journal and replay                                                  */
/* ====================================================================== */

/*
 * Rebuild a service from the first `upto` records of another's journal.
 * It is configured for tokens of another size: a query's partitions come
 * from the settings in its record, not from the service that replays it.
 */
static void svc_restart(struct svc *to, const struct svc *from, const struct world *w, size_t upto)
{
    svc_init_with(to, w, 0, 0, TK_ARENA_DEFAULT);
    for (size_t i = 0; i < upto; i++) {
        assert_int_equal(qr_service_replay(to->s, from->rec[i], from->rec_len[i]), 0);
        journal_push(to, from->rec[i], from->rec_len[i]);
    }
    assert_int_equal(qr_service_connections(to->s), 0);
}

/* The same queries, in the same state, as before the restart. */
static void assert_same_queries(const struct svc *a, const struct svc *b)
{
    assert_int_equal(qr_service_queries(a->s), qr_service_queries(b->s));
    for (size_t i = 0; i < qr_service_queries(a->s); i++) {
        struct qr_service_query x = query_at(a, i), y = query_at(b, i);

        assert_memory_equal(x.query_id, y.query_id, 32);
        assert_string_equal(x.study, y.study);
        assert_string_equal(x.researcher, y.researcher);
        assert_int_equal(x.submitted_ms, y.submitted_ms);
        assert_int_equal(x.stats.state, y.stats.state);
        assert_int_equal(x.stats.contributions, y.stats.contributions);
        assert_int_equal(x.stats.ciphertexts_collected, y.stats.ciphertexts_collected);
        assert_int_equal(x.stats.level, y.stats.level);
        assert_int_equal(x.stats.levels, y.stats.levels);
        assert_int_equal(x.stats.partitions, y.stats.partitions);
        assert_int_equal(x.stats.tasks_done, y.stats.tasks_done);
    }
}

enum cut {
    CUT_HALF_UPLOADS,
    CUT_FIRST_LEVEL, /* some level-1 task results in */
    CUT_LATER_LEVEL, /* level 2 or more under way */
};

static int at_cut(const struct svc *v, const void *ctx)
{
    const enum cut *cut = ctx;
    struct qr_coord_stats st = query_at(v, 0).stats;

    switch (*cut) {
    case CUT_HALF_UPLOADS:
        return st.contributions >= N_TOKENS / 2;
    case CUT_FIRST_LEVEL:
        return st.state == QR_AGGREGATING && st.level == 1 && st.tasks_done >= 2;
    default:
        return st.state == QR_AGGREGATING && st.level >= 2 && st.tasks_done > st.partitions / 2;
    }
}

/*
 * One run with a restart at `cut`: a fresh fleet (same rows as every
 * fleet), the service stops at the cut, one token holds a request made
 * before it (an upload, or a task result) and the rest finish against a
 * service rebuilt from the journal, after re-admitting.
 */
static void run_with_restart(const struct world *w, const struct plan *p, enum cut cut,
                             const struct qr_result *expected)
{
    struct fleet f;
    struct svc old, fresh;
    struct bytes held;
    struct qr_result res;
    struct qr_service_query q;
    int64_t now = NOW_MS;
    struct tok *holder;
    size_t cut_records;

    fleet_init(&f, w, N_TOKENS);
    svc_init(&old, w, 0);
    submit(&old, p, now);
    fleet_admit(&old, &f, 100, now);
    drive(&old, &f, &now, at_cut, &cut, NULL);
    assert_int_equal(state_of(&old, p), cut == CUT_HALF_UPLOADS ? QR_COLLECTING : QR_AGGREGATING);

    /* A request made before the restart that the old service never saw. */
    holder = NULL;
    for (size_t i = 0; i < f.n && holder == NULL; i++) {
        enum pt_action act = tok_work(&old, &f.t[i], now, &held);

        if (act == (cut == CUT_HALF_UPLOADS ? PT_COLLECTED : PT_AGGREGATED))
            holder = &f.t[i];
        else
            free(held.p);
    }
    assert_non_null(holder);
    cut_records = old.n_rec;

    now += 60000;
    svc_restart(&fresh, &old, w, cut_records);
    assert_same_queries(&old, &fresh);
    svc_free(&old);

    /* Connections are new: everyone must be admitted again. */
    {
        struct bytes wr = work_request(holder);

        expect(&fresh, holder->conn, now, wr.p, wr.n, QR_ERR_NOT_ADMITTED, 0);
        expect(&fresh, holder->conn, now, held.p, held.n, QR_ERR_NOT_ADMITTED, 0);
        free(wr.p);
    }
    fleet_admit(&fresh, &f, 500, now);
    {
        /* The last request the old service journaled, sent again (its reply
         * was lost in the crash): it is not counted twice. */
        Cohort__JournalRecord *jr = cohort__journal_record__unpack(
            NULL, fresh.rec_len[cut_records - 1], fresh.rec[cut_records - 1]);
        Cohort__ServiceRequest *last;
        const uint8_t *who;
        struct snap sn;
        size_t i;

        assert_non_null(jr);
        assert_int_equal(jr->body_case, COHORT__JOURNAL_RECORD__BODY_REQUEST);
        last = unpack_request(jr->request.data, jr->request.len);
        if (cut == CUT_HALF_UPLOADS) {
            assert_int_equal(last->body_case, COHORT__SERVICE_REQUEST__BODY_UPLOAD);
            who = last->upload->token_id.data;
        } else {
            assert_int_equal(last->body_case, COHORT__SERVICE_REQUEST__BODY_RESULT);
            who = last->result->token_id.data;
        }
        for (i = 0; i < f.n && memcmp(f.t[i].id, who, 32) != 0; i++)
            ;
        assert_true(i < f.n);
        snap_take(&sn, &fresh);
        expect(&fresh, f.t[i].conn, now, jr->request.data, jr->request.len,
               cut == CUT_HALF_UPLOADS ? QR_ERR_DUPLICATE : 0, 0);
        snap_check(&sn, &fresh);
        cohort__service_request__free_unpacked(last, NULL);
        cohort__journal_record__free_unpacked(jr, NULL);
    }
    {
        struct qr_coord_stats before = query_at(&fresh, 0).stats, after;

        expect(&fresh, holder->conn, now, held.p, held.n, 0, 1);
        after = query_at(&fresh, 0).stats;
        if (cut == CUT_HALF_UPLOADS)
            assert_int_equal(after.contributions, before.contributions + 1);
        else
            assert_int_equal(after.tasks_done, before.tasks_done + 1);
    }
    free(held.p);

    drive(&fresh, &f, &now, NULL, NULL, NULL);
    q = query_at(&fresh, 0);
    assert_int_equal(q.stats.state, QR_DONE);
    assert_int_equal(q.stats.contributions, N_TOKENS);
    assert_int_equal(q.stats.uploads_rejected, cut == CUT_HALF_UPLOADS ? 1 : 0);
    assert_int_equal(q.stats.ciphertexts_collected % N_TOKENS, 0);
    assert_int_equal(fresh.n_rec, 1 + q.stats.contributions + q.stats.tasks_done);
    fetch_open(&fresh, w, p, now, &res);
    check_by_sex(&res, &f, NULL);
    assert_same_result(&res, expected);
    qr_result_free(&res);

    /* The whole journal rebuilds the finished query, result included. */
    {
        struct svc again;
        struct qr_result res2;

        svc_restart(&again, &fresh, w, fresh.n_rec);
        assert_same_queries(&fresh, &again);
        fetch_open(&again, w, p, now, &res2);
        assert_same_result(&res2, expected);
        qr_result_free(&res2);
        svc_free(&again);
    }

    svc_free(&fresh);
    fleet_free(&f);
}

/* One tuple of an upload reshaped by `bend` (a tag dropped or cut). */
static struct bytes upload_bent(struct bytes upload, int cut_to)
{
    Cohort__ServiceRequest *r = unpack_request(upload.p, upload.n);
    struct bytes b;

    assert_int_equal(r->body_case, COHORT__SERVICE_REQUEST__BODY_UPLOAD);
    assert_true(r->upload->contribution->n_tuples >= 1);
    assert_int_equal(r->upload->contribution->tuples[0]->tag.len, 16);
    r->upload->contribution->tuples[0]->tag.len = (size_t)cut_to;
    b = pack_request(r);
    cohort__service_request__free_unpacked(r, NULL);
    return b;
}

/*
 * The tagged protocols' messages of the wrong shape: an upload whose tuple
 * lost its tag or carries a short one, a shuffle batch's result that drops
 * an output or tags one before the last round, a contributor list's result
 * of two partials. Each is refused with its code and changes nothing; the
 * study then completes to the truth.
 */
static void tagged_messages_of_the_wrong_shape_are_refused(void **state)
{
    struct world w;
    struct plan p;
    struct snap sn;
    (void)state;

    world_init(&w);
    {
        struct fleet f;
        struct svc v;
        struct bytes upload, bent;
        int64_t now = NOW_MS;

        plan_sign(&p, &w,
                  "SELECT sex, COUNT(*), SUM(steps), COUNT(DISTINCT participant) FROM health "
                  "GROUP BY sex ORDER BY sex SIZE 30 WITH (min_participants = 5, "
                  "min_group_size = 1, protocol = rnf_noise)");
        fleet_init(&f, &w, N_TOKENS);
        svc_init(&v, &w, 0);
        submit(&v, &p, now);
        fleet_admit(&v, &f, 100, now);
        assert_int_equal(tok_work(&v, &f.t[0], now, &upload), PT_COLLECTED);
        snap_take(&sn, &v);
        bent = upload_bent(upload, 0);
        expect(&v, f.t[0].conn, now, bent.p, bent.n, QR_ERR_BAD_UPLOAD, 0);
        free(bent.p);
        bent = upload_bent(upload, 15);
        expect(&v, f.t[0].conn, now, bent.p, bent.n, QR_ERR_BAD_UPLOAD, 0);
        free(bent.p);
        snap_check(&sn, &v);
        expect(&v, f.t[0].conn, now, upload.p, upload.n, 0, 1);
        free(upload.p);
        drive(&v, &f, &now, NULL, NULL, NULL);
        {
            struct qr_result res;
            fetch_open(&v, &w, &p, now, &res);
            check_by_sex(&res, &f, NULL);
            qr_result_free(&res);
        }
        svc_free(&v);
        fleet_free(&f);
        plan_free(&p);
    }
    {
        struct fleet f;
        struct svc v;
        int64_t now = NOW_MS;
        int shuffle_seen = 0, keys_seen = 0;

        plan_sign(&p, &w,
                  "SELECT sex, COUNT(*), SUM(steps), COUNT(DISTINCT participant) FROM health "
                  "GROUP BY sex ORDER BY sex SIZE 30 WITH (min_participants = 5, "
                  "min_group_size = 1, protocol = shuffle, batch_min = 4)");
        svc_ram = 12288;
        fleet_init(&f, &w, N_TOKENS);
        svc_init(&v, &w, 0);
        submit(&v, &p, now);
        fleet_admit(&v, &f, 100, now);
        drive(&v, &f, &now, aggregating, NULL, NULL);
        /* The first step holds the list and round 1: bend one of each. */
        for (size_t i = 0; i < f.n && (!shuffle_seen || !keys_seen); i++) {
            struct bytes result, bent;
            Cohort__ServiceRequest *r;
            Cohort__Ciphertext **parts;
            size_t n;

            if (tok_work(&v, &f.t[i], now, &result) != PT_AGGREGATED)
                continue;
            r = unpack_request(result.p, result.n);
            assert_int_equal(r->body_case, COHORT__SERVICE_REQUEST__BODY_RESULT);
            parts = r->result->output->partials;
            n = r->result->output->n_partials;
            snap_take(&sn, &v);
            if (parts[0]->phase == COHORT__PHASE__PHASE_SHUFFLE && !shuffle_seen) {
                static uint8_t tag[16];
                r->result->output->n_partials = n - 1; /* an output dropped */
                bent = pack_request(r);
                expect(&v, f.t[i].conn, now, bent.p, bent.n, QR_ERR_BAD_RESULT, 0);
                free(bent.p);
                r->result->output->n_partials = n;
                parts[0]->tag.data = tag; /* a tag before the last round */
                parts[0]->tag.len = sizeof tag;
                bent = pack_request(r);
                expect(&v, f.t[i].conn, now, bent.p, bent.n, QR_ERR_BAD_RESULT, 0);
                free(bent.p);
                parts[0]->tag.data = NULL; /* not the unpacked message's to free */
                parts[0]->tag.len = 0;
                shuffle_seen = 1;
            } else if (parts[0]->phase == COHORT__PHASE__PHASE_KEYS_PARTIAL && !keys_seen) {
                Cohort__Ciphertext *two[2] = {parts[0], parts[0]};
                r->result->output->partials = two; /* the list's partial twice */
                r->result->output->n_partials = 2;
                bent = pack_request(r);
                expect(&v, f.t[i].conn, now, bent.p, bent.n, QR_ERR_BAD_RESULT, 0);
                free(bent.p);
                r->result->output->partials = parts;
                r->result->output->n_partials = n;
                keys_seen = 1;
            }
            snap_check(&sn, &v);
            cohort__service_request__free_unpacked(r, NULL);
            expect(&v, f.t[i].conn, now, result.p, result.n, 0, 1);
            free(result.p);
        }
        assert_true(shuffle_seen && keys_seen);
        drive(&v, &f, &now, NULL, NULL, NULL);
        {
            struct qr_result res;
            fetch_open(&v, &w, &p, now, &res);
            check_by_sex(&res, &f, NULL);
            qr_result_free(&res);
        }
        svc_ram = SMALL_RAM;
        svc_free(&v);
        fleet_free(&f);
        plan_free(&p);
    }
    world_free(&w);
}

/* A serialized plan, signed by the world's researcher. */
static void plan_sign_bytes(struct plan *out, const struct world *w, const uint8_t *plan,
                            size_t plan_len)
{
    const uint8_t *chain[1] = {w->cert};
    size_t lens[1] = {w->cert_len};

    tk_query_id(out->id, plan, plan_len);
    assert_int_equal(
        qr_plan_sign(&out->bytes, &out->len, plan, plan_len, &w->researcher, chain, lens, 1), 0);
}

/* One whole study of p on a fresh service and fleet: its opened result. */
static void run_study(const struct world *w, const struct plan *p, struct qr_result *out)
{
    struct fleet f;
    struct svc v;
    int64_t now = NOW_MS;

    fleet_init(&f, w, N_TOKENS);
    svc_init(&v, w, 0);
    submit(&v, p, now);
    fleet_admit(&v, &f, 100, now);
    drive(&v, &f, &now, NULL, NULL, NULL);
    assert_int_equal(state_of(&v, p), QR_DONE);
    fetch_open(&v, w, p, now, out);
    svc_free(&v);
    fleet_free(&f);
}

/*
 * The protocols beyond s_agg run through the same service core as s_agg,
 * with the same agents and tokens: each study opens to the truth, and a
 * service rebuilt from its journal in the middle of aggregation lays the
 * work out again identically and finishes with the same result. ed_hist
 * runs its histogram study first, as cohort-querier run does.
 */
static void every_protocol_runs_through_the_service_and_its_journal(void **state)
{
    static const char *const with[] = {"protocol = rnf_noise", "protocol = c_noise",
                                       "protocol = shuffle, batch_min = 4",
                                       "protocol = ed_hist, buckets = 2"};
    struct world w;

    (void)state;
    world_init(&w);
    for (size_t k = 0; k < sizeof with / sizeof with[0]; k++) {
        char sql[512];
        struct qr_compile_opts opts;
        struct qr_sql_error err;
        struct qr_result expected;
        struct fleet truth;
        struct plan p;
        uint8_t *plan;
        size_t plan_len;

        snprintf(sql, sizeof sql,
                 "SELECT sex, COUNT(*), SUM(steps), COUNT(DISTINCT participant) FROM health "
                 "GROUP BY sex ORDER BY sex SIZE %u WITH (min_participants = 5, "
                 "min_group_size = 1, %s)",
                 N_TOKENS, with[k]);
        memset(&opts, 0, sizeof opts);
        opts.study = STUDY;
        opts.now = NOW_S;
        opts.collect_seconds = 3600;
        opts.valid_seconds = DAY_S;
        assert_int_equal(qr_sql_compile(&plan, &plan_len, sql, &opts, &err), 0);
        if (strstr(with[k], "ed_hist") != NULL) {
            struct plan hp;
            struct qr_result hist;
            uint8_t *h, *next;
            size_t h_len, next_len;

            /* A template no token takes: the service refuses it. */
            plan_sign_bytes(&hp, &w, plan, plan_len);
            {
                struct svc v;
                struct bytes sub = req_submit(&hp);

                svc_init(&v, &w, 0);
                expect(&v, 0, NOW_MS, sub.p, sub.n, QR_ERR_REFUSED, 0);
                free(sub.p);
                svc_free(&v);
            }
            plan_free(&hp);
            assert_int_equal(qr_hist_plan(&h, &h_len, plan, plan_len), 0);
            plan_sign_bytes(&hp, &w, h, h_len);
            run_study(&w, &hp, &hist);
            assert_int_equal(hist.n_rows, 2);
            assert_int_equal(qr_hist_apply(&next, &next_len, plan, plan_len, &hist), 0);
            qr_result_free(&hist);
            plan_free(&hp);
            free(h);
            free(plan);
            plan = next;
            plan_len = next_len;
        }
        plan_sign_bytes(&p, &w, plan, plan_len);
        free(plan);
        /* Batches of about 12 of the 30 ciphertexts: three per round. */
        svc_ram = strstr(with[k], "shuffle") != NULL ? 12288 : SMALL_RAM;
        run_study(&w, &p, &expected);
        fleet_init(&truth, &w, N_TOKENS);
        check_by_sex(&expected, &truth, NULL);
        fleet_free(&truth);
        run_with_restart(&w, &p, CUT_FIRST_LEVEL, &expected);
        svc_ram = SMALL_RAM;
        qr_result_free(&expected);
        plan_free(&p);
    }
    world_free(&w);
}

static void a_service_rebuilt_from_its_journal_finishes_with_the_same_result(void **state)
{
    struct world w;
    struct fleet f;
    struct svc v;
    struct plan p;
    struct qr_result expected;
    int64_t now = NOW_MS;

    (void)state;
    world_init(&w);
    plan_by_sex(&p, &w, N_TOKENS);

    /* The uninterrupted run, with read-only and refused requests mixed in:
     * none of them may leave a record. */
    fleet_init(&f, &w, N_TOKENS);
    svc_init(&v, &w, 0);
    submit(&v, &p, now);
    assert_int_equal(v.n_rec, 1);
    fleet_admit(&v, &f, 100, now);
    assert_int_equal(v.n_rec, 1);
    {
        struct bytes st = request1(7, NULL, 0), fe = request1(8, p.id, 32), sub = req_submit(&p);

        expect(&v, 0, now, st.p, st.n, 0, 0);
        expect(&v, 0, now, fe.p, fe.n, QR_ERR_NOT_DONE, 0);
        expect(&v, 0, now, sub.p, sub.n, 0, 0);
        free(st.p);
        free(fe.p);
        free(sub.p);
    }
    drive(&v, &f, &now, NULL, NULL, NULL);
    {
        struct qr_service_query q = query_at(&v, 0);

        assert_int_equal(v.n_rec, 1 + q.stats.contributions + q.stats.tasks_done);
    }
    fetch_open(&v, &w, &p, now, &expected);
    check_by_sex(&expected, &f, NULL);
    svc_free(&v);
    fleet_free(&f);

    run_with_restart(&w, &p, CUT_HALF_UPLOADS, &expected);
    run_with_restart(&w, &p, CUT_FIRST_LEVEL, &expected);
    run_with_restart(&w, &p, CUT_LATER_LEVEL, &expected);

    qr_result_free(&expected);
    plan_free(&p);
    world_free(&w);
}

static void a_journal_record_that_does_not_apply_is_an_error(void **state)
{
    struct world w;
    struct fleet f;
    struct svc v, empty;
    struct plan p;
    int64_t now = NOW_MS;
    uint8_t junk[48];
    struct bytes work;

    (void)state;
    world_init(&w);
    fleet_init(&f, &w, 2);
    svc_init(&v, &w, 0);
    plan_by_sex(&p, &w, N_TOKENS);
    submit(&v, &p, now);
    fleet_admit(&v, &f, 100, now);
    tok_step(&v, &f.t[0], now);
    assert_int_equal(v.n_rec, 2);

    svc_init(&empty, &w, 0);
    /* Cut short, and bytes that are not a record. */
    assert_int_not_equal(qr_service_replay(empty.s, v.rec[0], v.rec_len[0] - 1), 0);
    assert_int_not_equal(qr_service_replay(empty.s, v.rec[1], v.rec_len[1] / 2), 0);
    memset(junk, 0xff, sizeof junk);
    assert_int_not_equal(qr_service_replay(empty.s, junk, sizeof junk), 0);
    /* A record of nothing. */
    assert_int_equal(qr_service_replay(empty.s, (const uint8_t *)"", 0), QR_ERR_MALFORMED);
    assert_int_equal(qr_service_replay(NULL, v.rec[0], v.rec_len[0]), QR_ERR_ARG);
    assert_int_equal(qr_service_replay(empty.s, NULL, 0), QR_ERR_ARG);
    /* An upload for a query the journal never held. */
    assert_int_equal(qr_service_replay(empty.s, v.rec[1], v.rec_len[1]), QR_ERR_UNKNOWN_QUERY);
    assert_int_equal(qr_service_queries(empty.s), 0);
    /* A request record that is not an upload or a task result. */
    {
        Cohort__JournalRecord jr = COHORT__JOURNAL_RECORD__INIT;
        uint8_t *rec;
        size_t n;

        work = work_request(&f.t[0]);
        jr.now_ms = now;
        jr.body_case = COHORT__JOURNAL_RECORD__BODY_REQUEST;
        jr.request.data = work.p;
        jr.request.len = work.n;
        n = cohort__journal_record__get_packed_size(&jr);
        rec = xalloc(n);
        cohort__journal_record__pack(&jr, rec);
        assert_int_equal(qr_service_replay(v.s, rec, n), QR_ERR_MALFORMED);
        free(rec);
        free(work.p);
    }
    /* The good records apply, once: an upload replayed twice does not. */
    assert_int_equal(qr_service_replay(empty.s, v.rec[0], v.rec_len[0]), 0);
    assert_int_equal(qr_service_replay(empty.s, v.rec[1], v.rec_len[1]), 0);
    assert_int_equal(qr_service_replay(empty.s, v.rec[1], v.rec_len[1]), QR_ERR_DUPLICATE);
    assert_int_equal(qr_service_queries(empty.s), 1);
    assert_int_equal(query_at(&empty, 0).stats.contributions, 1);
    /* A query record replayed again is the same query. */
    assert_int_equal(qr_service_replay(empty.s, v.rec[0], v.rec_len[0]), 0);
    assert_int_equal(qr_service_queries(empty.s), 1);

    svc_free(&empty);
    plan_free(&p);
    svc_free(&v);
    fleet_free(&f);
    world_free(&w);
}

/* ====================================================================== */
/* 6. Declined plans                                                      */
/* ====================================================================== */

static int everyone_but_one(const struct svc *v, const void *ctx)
{
    (void)ctx;
    return query_at(v, 0).stats.contributions == N_TOKENS - 1;
}

static void a_token_that_declines_a_plan_is_not_offered_it_again(void **state)
{
    struct world w;
    struct fleet f;
    struct svc v;
    struct plan p;
    struct tok *shy;
    struct bytes next, wr;
    uint8_t skip[N_TOKENS];
    int64_t now = NOW_MS;

    (void)state;
    world_init(&w);
    fleet_init(&f, &w, N_TOKENS);
    shy = &f.t[0];
    tok_consent(shy, "another study", NOW_S); /* the latest policy is in force */
    svc_init(&v, &w, 0);
    plan_by_sex(&p, &w, 0);
    submit(&v, &p, now);
    fleet_admit(&v, &f, 100, now);

    assert_int_equal(tok_work(&v, shy, now, &next), PT_REFUSED);
    assert_null(next.p);
    assert_int_equal(shy->ag.last_token_status, TK_ERR_POLICY);
    assert_int_equal(shy->ag.n_declined, 1);
    assert_memory_equal(shy->ag.declined[0], p.id, 32);

    /* The next request names the plan, and is not offered it. */
    wr = work_request(shy);
    {
        Cohort__ServiceRequest *r = unpack_request(wr.p, wr.n);

        assert_int_equal(r->work->n_declined, 1);
        assert_memory_equal(r->work->declined[0].data, p.id, 32);
        cohort__service_request__free_unpacked(r, NULL);
    }
    free(wr.p);
    {
        struct bytes req = work_request(shy);
        int st;
        Cohort__ServiceReply *r = svc_ask(&v, shy->conn, now, req, &st);

        assert_int_equal(st, 0);
        assert_non_null(r->work);
        assert_int_equal(r->work->work_case, COHORT__WORK_REPLY__WORK__NOT_SET);
        assert_true(r->work->retry_after_ms > 0);
        cohort__service_reply__free_unpacked(r, NULL);
        free(req.p);
    }
    assert_int_equal(tok_work(&v, shy, now, &next), PT_IDLE);
    assert_int_equal(shy->ag.n_declined, 1);
    /* Others still are. */
    assert_int_equal(tok_work(&v, &f.t[1], now, &next), PT_COLLECTED);
    assert_int_equal(svc_send(&v, f.t[1].conn, now, next.p, next.n, NULL, NULL), 0);
    free(next.p);
    /* The service does not remember refusals: an agent that forgot is asked again. */
    {
        struct pt_agent fresh;
        struct pt_link link = pt_inproc_link(&shy->link);
        struct bytes req;
        Cohort__ServiceReply *r;
        int st;

        pt_agent_init(&fresh, &link, shy->id);
        assert_int_equal(pt_agent_work_request(&fresh, &req.p, &req.n), PT_OK);
        r = svc_ask(&v, shy->conn, now, req, &st);
        assert_int_equal(st, 0);
        assert_non_null(r->work);
        assert_int_equal(r->work->work_case, COHORT__WORK_REPLY__WORK_COLLECT);
        cohort__service_reply__free_unpacked(r, NULL);
        free(req.p);
    }
    assert_int_equal(query_at(&v, 0).stats.contributions, 1);

    /* Everyone else contributes; the deadline closes collection. */
    memset(skip, 0, sizeof skip);
    skip[0] = 1;
    drive(&v, &f, &now, everyone_but_one, NULL, NULL);
    for (size_t i = 0; i < f.n; i++)
        assert_int_equal(tok_work(&v, &f.t[i], now, &next), PT_IDLE);
    assert_int_equal(shy->ag.n_declined, 1);
    qr_service_tick(v.s, NOW_MS + 3600 * 1000 - 1);
    assert_int_equal(state_of(&v, &p), QR_COLLECTING);
    now = NOW_MS + 3600 * 1000;
    qr_service_tick(v.s, now);
    assert_int_equal(state_of(&v, &p), QR_AGGREGATING);
    assert_int_equal(query_at(&v, 0).stats.contributions, N_TOKENS - 1);
    drive(&v, &f, &now, NULL, NULL, NULL);
    {
        struct qr_result res;

        fetch_open(&v, &w, &p, now, &res);
        check_by_sex(&res, &f, skip);
        qr_result_free(&res);
    }

    plan_free(&p);
    svc_free(&v);
    fleet_free(&f);
    world_free(&w);
}

/* ====================================================================== */
/* 7. Two queries                                                         */
/* ====================================================================== */

static int second_aggregating(const struct svc *v, const void *ctx)
{
    (void)ctx;
    return query_at(v, 1).stats.state == QR_AGGREGATING;
}

static void two_queries_run_at_once_and_results_go_to_their_query(void **state)
{
    struct world w;
    struct fleet f;
    struct svc v;
    struct plan p1, p2;
    struct bytes held, bent, req;
    struct snap sn;
    uint8_t q[32];
    int64_t now = NOW_MS;
    Cohort__ServiceReply *r;
    int st;

    (void)state;
    world_init(&w);
    fleet_init(&f, &w, N_TOKENS);
    svc_init(&v, &w, 0);
    plan_by_sex(&p1, &w, N_TOKENS);
    plan_overall(&p2, &w, N_TOKENS);
    submit(&v, &p1, now);
    submit(&v, &p2, now + 1);
    fleet_admit(&v, &f, 100, now);

    /* Everyone contributes to the first, then the first aggregates. */
    drive(&v, &f, &now, aggregating, NULL, NULL);
    assert_int_equal(query_at(&v, 0).stats.contributions, N_TOKENS);
    assert_int_equal(tok_work(&v, &f.t[0], now, &held), PT_AGGREGATED);
    assert_int_equal(task_of(held, q), 1);
    assert_memory_equal(q, p1.id, 32);

    /* While task 1 of the first is out, the second collects and aggregates. */
    drive(&v, &f, &now, second_aggregating, NULL, NULL);
    assert_int_equal(query_at(&v, 1).stats.contributions, N_TOKENS);
    assert_int_equal(query_at(&v, 1).stats.tasks_done, 0);

    /* The first's result under the second's id is not the second's. */
    bent = result_for_query(held, p2.id);
    snap_take(&sn, &v);
    expect(&v, f.t[0].conn, now, bent.p, bent.n, QR_ERR_BAD_RESULT, 0);
    snap_check(&sn, &v);
    free(bent.p);
    {
        uint64_t done1 = query_at(&v, 0).stats.tasks_done;

        expect(&v, f.t[0].conn, now, held.p, held.n, 0, 1);
        assert_int_equal(query_at(&v, 0).stats.tasks_done, done1 + 1);
        assert_int_equal(query_at(&v, 1).stats.tasks_done, 0);
    }
    free(held.p);

    drive(&v, &f, &now, NULL, NULL, NULL);
    req = request1(7, NULL, 0);
    r = svc_ask(&v, 0, now, req, &st);
    free(req.p);
    assert_int_equal(st, 0);
    assert_int_equal(r->n_queries, 2);
    assert_memory_equal(r->queries[0]->query_id.data, p1.id, 32);
    assert_memory_equal(r->queries[1]->query_id.data, p2.id, 32);
    assert_int_equal(r->queries[0]->state, COHORT__QUERY_STATE__QS_DONE);
    assert_int_equal(r->queries[1]->state, COHORT__QUERY_STATE__QS_DONE);
    cohort__service_reply__free_unpacked(r, NULL);
    {
        struct qr_result a, b;
        struct qr_service_query q1 = query_at(&v, 0), q2 = query_at(&v, 1);

        assert_int_equal(v.n_rec, 2 + q1.stats.contributions + q1.stats.tasks_done +
                                      q2.stats.contributions + q2.stats.tasks_done);
        fetch_open(&v, &w, &p1, now, &a);
        fetch_open(&v, &w, &p2, now, &b);
        check_by_sex(&a, &f, NULL);
        check_overall(&b, &f);
        qr_result_free(&a);
        qr_result_free(&b);
    }

    plan_free(&p1);
    plan_free(&p2);
    svc_free(&v);
    fleet_free(&f);
    world_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_whole_study_runs_through_the_service_and_opens_to_the_truth),
        cmocka_unit_test(admission_refusals_have_exact_codes_and_change_nothing),
        cmocka_unit_test(connections_are_bounded_and_a_failed_admission_frees_its_place),
        cmocka_unit_test(plans_no_token_would_take_are_refused_with_the_reason),
        cmocka_unit_test(hostile_messages_are_refused_and_the_study_completes),
        cmocka_unit_test(a_service_rebuilt_from_its_journal_finishes_with_the_same_result),
        cmocka_unit_test(every_protocol_runs_through_the_service_and_its_journal),
        cmocka_unit_test(tagged_messages_of_the_wrong_shape_are_refused),
        cmocka_unit_test(a_journal_record_that_does_not_apply_is_an_error),
        cmocka_unit_test(a_token_that_declines_a_plan_is_not_offered_it_again),
        cmocka_unit_test(two_queries_run_at_once_and_results_go_to_their_query),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
