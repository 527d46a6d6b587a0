/*
 * The simulation driver.
 *
 * Setup (timed apart from the study, as a fleet is provisioned once):
 * a manufacturer authority certifies N tokens from their own certificate
 * requests and seals the deployment's group secret to each; a study
 * authority certifies a researcher; each token is loaded with its owner's
 * synthetic rows. Tokens at rest are just their struct tk_token and their
 * memory flash of ciphertext (participant/pt_flash.c, trimmed after
 * setup); the simulator keeps no image of their secure memory (their
 * struct tk_token is it).
 *
 * The study, on a virtual clock (milliseconds; the plan's issue time is
 * the origin):
 * 1. Collection. Each participant that does not drop out connects once at
 *    a random time in the first minute, asks for work, hands the plan to
 *    its token and uploads the contribution; replies and uploads take the
 *    modelled one-way latency. Token work for a batch of arrivals runs on
 *    the worker threads; every message to the coordinator goes through the
 *    main thread in virtual-time order, so a run is a function of the seed.
 * 2. Aggregation. In rounds, connected participants ask for work; those
 *    handed a task either vanish with it (the dropout rate) or run it on
 *    their token and return the result. When nobody gets a task, the clock
 *    moves on by the task timeout and the coordinator reassigns what is
 *    late. This goes on until the coordinator has the sealed result or
 *    gives up.
 * 3. The researcher opens the result; the ground truth is computed over
 *    the participants whose contribution the service accepted; the two are
 *    compared: cell by cell, or under differential privacy by the
 *    statistical check of sim_dp.c.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "participant/participant.h"
#include "proto/cohort.pb-c.h"
#include "sim/sim.h"
#include "token/token.h"

#define BATCH 4096u
#define ROUND_MAX 2048u
#define COLLECT_WINDOW_MS 60000
#define TASK_TIMEOUT_MS 30000
#define TASK_WORK_MS 50

void sim_config_default(struct sim_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->tokens = 1000;
    cfg->seed = 1;
    cfg->protocol = "s_agg";
    cfg->token_ram = TK_ARENA_DEFAULT;
    cfg->latency_ms = 20;
}

/* --------------------------------------------------------------- workers */

struct worker {
    uint8_t *arena;
    struct pt_inproc link;
    char reasons[64][PT_REASON_MAX + 1]; /* a token's reason for each refusal status met */
};

struct sim {
    const struct sim_config *cfg;
    struct sim_report *rep;
    unsigned threads;
    struct worker *workers;
    int64_t t0; /* Unix seconds: the plan's issue time */
    struct qr_identity manufacturer, authority, researcher;
    uint8_t *researcher_cert;
    size_t researcher_cert_len;
    uint8_t group_secret[32];
    uint8_t *plan;
    size_t plan_len;
    uint8_t *signed_plan;
    size_t signed_plan_len;
    struct tk_token *tokens;
    struct pt_memflash *flashes;
    uint8_t (*ids)[32]; /* each token's public key, as it reported it */
    int64_t deadline;   /* the plan's end of collection, Unix seconds */
    int64_t expires;
    double epsilon; /* the plan's differential privacy, 0 for none */
    int setup_error;
    char setup_msg[160];
    pthread_mutex_t lock;
    struct sim_view *view;  /* the service's view, when recorded */
    int64_t collect_end_ms; /* when the last study's collection closed */
};

typedef void (*job_fn)(struct sim *s, struct worker *w, size_t item, void *ctx);

struct job {
    struct sim *s;
    struct worker *w;
    job_fn fn;
    void *ctx;
    size_t from, to, step;
};

static void *job_main(void *arg)
{
    struct job *j = arg;
    size_t i;
    for (i = j->from; i < j->to; i += j->step)
        j->fn(j->s, j->w, i, j->ctx);
    return NULL;
}

/* Run fn(item) for items [0, n) on the workers, interleaved. */
static void parallel(struct sim *s, size_t n, job_fn fn, void *ctx)
{
    pthread_t th[64];
    struct job jobs[64];
    int started[64];
    unsigned t, k = s->threads;
    if (k > n)
        k = n ? (unsigned)n : 1;
    if (k == 0 || k > 64)
        k = 1;
    for (t = 0; t < k; t++)
        jobs[t] = (struct job){s, &s->workers[t], fn, ctx, t, n, k};
    if (k == 1) {
        job_main(&jobs[0]);
        return;
    }
    /* Worker 0 runs here; the others on threads (or here, if none starts). */
    for (t = 1; t < k; t++)
        started[t] = pthread_create(&th[t], NULL, job_main, &jobs[t]) == 0;
    job_main(&jobs[0]);
    for (t = 1; t < k; t++) {
        if (started[t])
            pthread_join(th[t], NULL);
        else
            job_main(&jobs[t]);
    }
}

static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static size_t resident_bytes(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
        rss = 0;
    fclose(f);
    return (size_t)rss * (size_t)sysconf(_SC_PAGESIZE);
}

static void progress(const struct sim *s, const char *phase, uint64_t done, uint64_t total)
{
    static char last[160];
    char line[160];
    int width = 30, fill;
    if (!s->cfg->progress)
        return;
    if (total == 0)
        total = 1;
    fill = (int)((double)width * (double)done / (double)total);
    if (fill > width)
        fill = width;
    snprintf(line, sizeof line, "\r%-12s [%.*s%*s] %llu/%llu", phase, fill,
             "##############################", width - fill, "", (unsigned long long)done,
             (unsigned long long)total);
    if (strcmp(line, last) == 0)
        return;
    snprintf(last, sizeof last, "%s", line);
    fputs(line, stderr);
    if (done >= total)
        fputs("\n", stderr);
}

static void fail(struct sim *s, const char *msg)
{
    pthread_mutex_lock(&s->lock);
    if (!s->setup_error) {
        s->setup_error = 1;
        snprintf(s->setup_msg, sizeof s->setup_msg, "%s", msg);
    }
    pthread_mutex_unlock(&s->lock);
}

/* One call to a token through its link; the decoded response or NULL. */
static Cohort__TokenResponse *token_call(struct worker *w, struct tk_token *tk,
                                         Cohort__TokenRequest *req)
{
    struct pt_link link;
    size_t len = cohort__token_request__get_packed_size(req), resp_len;
    uint8_t *buf = malloc(len ? len : 1);
    const uint8_t *resp;
    Cohort__TokenResponse *r = NULL;
    if (buf == NULL)
        return NULL;
    cohort__token_request__pack(req, buf);
    w->link.tk = tk;
    link = pt_inproc_link(&w->link);
    if (link.transact(link.ctx, buf, len, &resp, &resp_len) == 0)
        r = cohort__token_response__unpack(NULL, resp_len, resp);
    free(buf);
    return r;
}

/* ------------------------------------------------------------------ setup */

static Cohort__TableSchema *health_schema(void)
{
    static Cohort__Column cols[16];
    static Cohort__Column *colp[16];
    static Cohort__TableSchema schema;
    const struct qr_table *t = qr_catalog_find("health");
    size_t i;
    if (t == NULL || t->n_columns > 16)
        return NULL;
    cohort__table_schema__init(&schema);
    for (i = 0; i < t->n_columns; i++) {
        cohort__column__init(&cols[i]);
        cols[i].name = (char *)t->columns[i].name;
        cols[i].type = (Cohort__ValueType)t->columns[i].type;
        cols[i].scale = t->columns[i].scale;
        colp[i] = &cols[i];
    }
    schema.name = (char *)t->name;
    schema.n_columns = t->n_columns;
    schema.columns = colp;
    return &schema;
}

/* A row's cell as the wire's Value (pointing into the cell's static text). */
static void set_value(Cohort__Value *v, const struct sim_row *r, const char *col)
{
    struct sim_cell c;
    sim_row_cell(&c, r, col);
    cohort__value__init(v);
    v->type = (Cohort__ValueType)c.type;
    v->i = c.i;
    v->scale = c.scale;
    v->s.data = (uint8_t *)(uintptr_t)c.s;
    v->s.len = c.len;
}

struct slice_ctx {
    Cohort__TableSchema *schema;
    uint64_t base;
};

static void setup_token(struct sim *s, struct worker *w, size_t item, void *ctx)
{
    const struct slice_ctx *sc = ctx;
    Cohort__TableSchema *schema = sc->schema;
    size_t i = (size_t)(sc->base + item);
    struct tk_flash flash = pt_memflash_flash(&s->flashes[i]);
    struct tk_token *tk = &s->tokens[i];
    Cohort__TokenRequest req;
    Cohort__TokenResponse *r;
    Cohort__ProvisionBegin pb;
    Cohort__ProvisionFinish pf;
    Cohort__ConsentPolicy pol;
    Cohort__SetPolicy sp;
    static char *consent_tables[] = {"health"};
    Cohort__LoadTable lt;
    Cohort__Certificate *cert = NULL;
    Cohort__CertRequest *csr;
    uint8_t *cert_bytes = NULL, *csr_bytes = NULL, sealed[32 + crypto_box_SEALBYTES];
    ProtobufCBinaryData auth;
    size_t cert_len, csr_len, n, k, c;
    char subject[32];
    struct sim_row rows[SIM_ROWS_MAX];
    Cohort__Row prow[SIM_ROWS_MAX], *prowp[SIM_ROWS_MAX];
    Cohort__Value vals[SIM_ROWS_MAX][16], *valp[SIM_ROWS_MAX][16];

    if (s->setup_error)
        return;
    if (tk_token_init(tk, &flash, NULL, w->arena, s->cfg->token_ram) != TK_OK) {
        fail(s, "cannot initialise a token");
        return;
    }
    snprintf(subject, sizeof subject, "token-%zu", i + 1);
    cohort__token_request__init(&req);
    cohort__provision_begin__init(&pb);
    pb.subject = subject;
    req.now = s->t0;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_PROVISION_BEGIN;
    req.provision_begin = &pb;
    r = token_call(w, tk, &req);
    if (r == NULL || r->status != 0 || r->body_case != COHORT__TOKEN_RESPONSE__BODY_CERT_REQUEST) {
        if (r)
            cohort__token_response__free_unpacked(r, NULL);
        {
            fail(s, "a token refused to start provisioning");
            return;
        }
    }
    csr = r->cert_request;
    if (csr->sign_pk.len == 32)
        memcpy(s->ids[i], csr->sign_pk.data, 32);
    csr_len = cohort__cert_request__get_packed_size(csr);
    csr_bytes = malloc(csr_len);
    if (csr_bytes == NULL || csr->box_pk.len != 32) {
        free(csr_bytes);
        cohort__token_response__free_unpacked(r, NULL);
        {
            fail(s, "bad certificate request");
            return;
        }
    }
    cohort__cert_request__pack(csr, csr_bytes);
    if (qr_cert_issue_for_request(&cert_bytes, &cert_len, &s->manufacturer, csr_bytes, csr_len,
                                  s->t0 - 86400, s->t0 + 5 * 365 * 86400) != 0 ||
        crypto_box_seal(sealed, s->group_secret, 32, csr->box_pk.data) != 0) {
        free(csr_bytes);
        cohort__token_response__free_unpacked(r, NULL);
        {
            fail(s, "the manufacturer could not certify a token");
            return;
        }
    }
    free(csr_bytes);
    cohort__token_response__free_unpacked(r, NULL);
    cert = cohort__certificate__unpack(NULL, cert_len, cert_bytes);
    free(cert_bytes);
    if (cert == NULL) {
        fail(s, "bad device certificate");
        return;
    }
    cohort__provision_finish__init(&pf);
    pf.device_cert = cert;
    pf.sealed_group_secret.data = sealed;
    pf.sealed_group_secret.len = sizeof sealed;
    auth.data = s->authority.sign_pk;
    auth.len = 32;
    pf.n_trusted_authorities = 1;
    pf.trusted_authorities = &auth;
    cohort__token_request__init(&req);
    req.now = s->t0;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_PROVISION_FINISH;
    req.provision_finish = &pf;
    r = token_call(w, tk, &req);
    cohort__certificate__free_unpacked(cert, NULL);
    if (r == NULL || r->status != 0) {
        if (r)
            cohort__token_response__free_unpacked(r, NULL);
        {
            fail(s, "a token refused its provisioning bundle");
            return;
        }
    }
    cohort__token_response__free_unpacked(r, NULL);

    /* The owner's data. */
    n = sim_data_rows(rows, s->cfg->seed, i);
    for (k = 0; k < n; k++) {
        cohort__row__init(&prow[k]);
        for (c = 0; c < schema->n_columns; c++) {
            set_value(&vals[k][c], &rows[k], schema->columns[c]->name);
            valp[k][c] = &vals[k][c];
        }
        prow[k].n_values = schema->n_columns;
        prow[k].values = valp[k];
        prowp[k] = &prow[k];
    }
    cohort__load_table__init(&lt);
    lt.schema = schema;
    lt.n_rows = n;
    lt.rows = prowp;
    cohort__token_request__init(&req);
    req.now = s->t0;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE;
    req.load_table = &lt;
    r = token_call(w, tk, &req);
    if (r == NULL || r->status != 0) {
        if (r)
            cohort__token_response__free_unpacked(r, NULL);
        {
            fail(s, "a token refused its owner's rows");
            return;
        }
    }
    cohort__token_response__free_unpacked(r, NULL);

    /* The owner's consent: the simulated owners share their health table
     * with any study of the deployment's authority, within a budget that
     * one simulated study cannot exhaust. */
    cohort__consent_policy__init(&pol);
    pol.n_tables = 1;
    pol.tables = consent_tables;
    pol.epsilon_per_study = SIM_OWNER_EPSILON;
    pol.epsilon_total = SIM_OWNER_EPSILON;
    cohort__set_policy__init(&sp);
    sp.policy = &pol;
    cohort__token_request__init(&req);
    req.now = s->t0;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_SET_POLICY;
    req.set_policy = &sp;
    r = token_call(w, tk, &req);
    if (r == NULL || r->status != 0) {
        if (r)
            cohort__token_response__free_unpacked(r, NULL);
        fail(s, "a token refused its owner's consent policy");
        return;
    }
    cohort__token_response__free_unpacked(r, NULL);
    pt_memflash_trim(&s->flashes[i]);
}

/* The options a simulated study's SQL is compiled with. */
static void compile_opts(struct qr_compile_opts *o, const struct sim_config *cfg, int64_t now)
{
    memset(o, 0, sizeof *o);
    o->study = "simulated study";
    o->now = now;
    o->collect_seconds = 600;
    o->valid_seconds = 86400;
    o->epsilon = cfg->epsilon;
    o->contribution_bound = cfg->contribution_bound;
    o->max_rows = cfg->max_rows;
    o->protocol = cfg->protocol;
    o->max_leakage = cfg->max_leakage;
    o->participants = cfg->tokens;
    o->token_ram = cfg->token_ram;
    o->latency_ms = cfg->latency_ms;
}

/* What the cost model expects of a compiled plan in this deployment. */
static void predict(struct sim_report *rep, const struct sim_config *cfg, const Cohort__Plan *p,
                    const uint8_t *plan, size_t plan_len)
{
    struct qr_cost_input in = {.participants =
                                   (uint64_t)((double)cfg->tokens * (1.0 - cfg->dropout)) + 1,
                               .groups = p->max_groups,
                               .tuples = p->tuples_per_participant,
                               .buckets = p->tag_buckets,
                               .fakes = p->fakes,
                               .has_fakes = 1,
                               .rounds = p->shuffle_rounds,
                               .aggregates = (uint32_t)p->n_aggregates,
                               .token_ram = cfg->token_ram,
                               .latency_ms = cfg->latency_ms,
                               .group_columns = (uint32_t)p->n_group_by,
                               .group_text_columns = qr_plan_group_text_columns(plan, plan_len),
                               .batch_min = p->shuffle_batch_min,
                               .collect_seconds = (uint32_t)(p->deadline - p->issued_at)};
    qr_cost_predict(&rep->predicted, rep->protocol, &in);
}

int sim_predict(struct sim_report *rep, const struct sim_config *cfg)
{
    struct qr_compile_opts opts;
    struct qr_sql_error err;
    uint8_t *plan = NULL;
    size_t plan_len = 0;
    Cohort__Plan *p;
    int rc;

    memset(rep, 0, sizeof *rep);
    rep->tokens = cfg->tokens;
    rep->token_ram = cfg->token_ram;
    compile_opts(&opts, cfg, (int64_t)time(NULL));
    memset(&err, 0, sizeof err);
    rc = qr_sql_compile(&plan, &plan_len, cfg->sql, &opts, &err);
    if (rc != 0) {
        snprintf(rep->error, sizeof rep->error, "SQL error at line %u, column %u: %s", err.line,
                 err.col, err.msg);
        return rc;
    }
    p = cohort__plan__unpack(NULL, plan_len, plan);
    if (p == NULL) {
        free(plan);
        snprintf(rep->error, sizeof rep->error, "the compiled plan does not decode");
        return -1;
    }
    snprintf(rep->protocol, sizeof rep->protocol, "%s", p->protocol ? p->protocol : "");
    predict(rep, cfg, p, plan, plan_len);
    cohort__plan__free_unpacked(p, NULL);
    free(plan);
    return 0;
}

static int setup(struct sim *s)
{
    struct sim_report *rep = s->rep;
    const struct sim_config *cfg = s->cfg;
    const char *tables[] = {"health"};
    struct qr_scope scope = {tables, 1, NULL, 0, NULL, 0, 10.0};
    struct qr_compile_opts opts;
    struct qr_sql_error err;
    Cohort__TableSchema *schema = health_schema();
    const uint8_t *chain[1];
    size_t chain_len[1];
    size_t rss0;
    double w0 = wall(), c0 = cpu();
    int rc;

    if (schema == NULL) {
        snprintf(rep->error, sizeof rep->error, "the catalog has no health table");
        return -1;
    }
    compile_opts(&opts, cfg, s->t0);
    memset(&err, 0, sizeof err);
    rc = qr_sql_compile(&s->plan, &s->plan_len, cfg->sql, &opts, &err);
    if (rc != 0) {
        snprintf(rep->error, sizeof rep->error, "SQL error at line %u, column %u: %s", err.line,
                 err.col, err.msg);
        return rc;
    }
    rep->explain = qr_plan_explain(s->plan, s->plan_len);
    {
        Cohort__Plan *p = cohort__plan__unpack(NULL, s->plan_len, s->plan);
        if (p == NULL) {
            snprintf(rep->error, sizeof rep->error, "the compiled plan does not decode");
            return -1;
        }
        s->deadline = p->deadline;
        s->expires = p->expires_at;
        /* The study authority certifies the researcher for the plan's epsilon. */
        if (p->privacy != NULL && p->privacy->epsilon > scope.max_epsilon)
            scope.max_epsilon = p->privacy->epsilon;
        s->epsilon = p->privacy != NULL ? p->privacy->epsilon : 0.0;
        snprintf(rep->protocol, sizeof rep->protocol, "%s", p->protocol ? p->protocol : "");
        predict(rep, cfg, p, s->plan, s->plan_len);
        cohort__plan__free_unpacked(p, NULL);
    }
    if (qr_identity_generate(&s->manufacturer) != 0 || qr_identity_generate(&s->authority) != 0 ||
        qr_identity_generate(&s->researcher) != 0 ||
        qr_cert_issue(&s->researcher_cert, &s->researcher_cert_len, &s->authority,
                      COHORT__ROLE__ROLE_RESEARCHER, "researcher", s->researcher.sign_pk,
                      s->researcher.box_pk, s->t0 - 86400, s->t0 + 365 * 86400, &scope) != 0) {
        snprintf(rep->error, sizeof rep->error, "cannot make the study's keys");
        return -1;
    }
    chain[0] = s->researcher_cert;
    chain_len[0] = s->researcher_cert_len;
    if (qr_plan_sign(&s->signed_plan, &s->signed_plan_len, s->plan, s->plan_len, &s->researcher,
                     chain, chain_len, 1) != 0) {
        snprintf(rep->error, sizeof rep->error, "cannot sign the plan");
        return -1;
    }
    randombytes_buf(s->group_secret, sizeof s->group_secret);

    rss0 = resident_bytes();
    s->tokens = calloc(cfg->tokens, sizeof *s->tokens);
    s->flashes = calloc(cfg->tokens, sizeof *s->flashes); /* all zeros: empty memory flash */
    s->ids = calloc(cfg->tokens, sizeof *s->ids);
    if (s->tokens == NULL || s->flashes == NULL || s->ids == NULL) {
        snprintf(rep->error, sizeof rep->error, "out of memory for %llu tokens",
                 (unsigned long long)cfg->tokens);
        return -1;
    }
    {
        uint64_t done = 0;
        while (done < cfg->tokens && !s->setup_error) {
            uint64_t n = cfg->tokens - done < 8192 ? cfg->tokens - done : 8192;
            struct slice_ctx sc = {schema, done};
            parallel(s, (size_t)n, setup_token, &sc);
            done += n;
            progress(s, "provisioning", done, cfg->tokens);
        }
    }
    if (s->setup_error) {
        snprintf(rep->error, sizeof rep->error, "setup failed: %s", s->setup_msg);
        return -1;
    }
    rep->rest_bytes_per_token = (double)(resident_bytes() - rss0) / (double)cfg->tokens;
    rep->setup_wall_s = wall() - w0;
    rep->setup_cpu_s = cpu() - c0;
    return 0;
}

/* ------------------------------------------------------------------ study */

struct exch {
    uint64_t who;
    int64_t t_ms;
    uint8_t *reply;
    size_t reply_len;
    uint8_t *next;
    size_t next_len;
    enum pt_action action;
    int status;
    int skip;
};

static void agent_job(struct sim *s, struct worker *w, size_t item, void *ctx)
{
    struct exch *e = &((struct exch *)ctx)[item];
    struct pt_agent ag;
    struct pt_link link;
    int rc;
    if (e->skip || e->reply == NULL)
        return;
    w->link.tk = &s->tokens[e->who];
    link = pt_inproc_link(&w->link);
    pt_agent_init(&ag, &link, s->ids[e->who]);
    rc = pt_agent_handle(&ag, e->t_ms / 1000, e->reply, e->reply_len, &e->action, &e->next,
                         &e->next_len);
    e->status = rc != 0 ? rc : ag.last_token_status;
    if (e->action == PT_REFUSED && e->status < 0 && -e->status < 64 &&
        w->reasons[-e->status][0] == '\0')
        memcpy(w->reasons[-e->status], ag.last_reason, sizeof ag.last_reason);
}

/* Send one request from participant `who` to the coordinator; the reply
 * (malloc'd) or NULL. The service's view records the exchange. */
static int send(qr_coord *c, struct sim *s, uint64_t who, int64_t now_ms, const uint8_t *req,
                size_t len, uint8_t **reply, size_t *reply_len)
{
    uint8_t *r = NULL;
    size_t rl = 0;
    int rc = qr_coord_handle(c, now_ms, req, len, &r, &rl);
    if (s->view != NULL && r != NULL && sim_view_record(s->view, who, now_ms, req, len, r, rl) != 0)
        fail(s, "out of memory recording the service's view");
    if (reply != NULL) {
        *reply = r;
        *reply_len = rl;
    } else {
        free(r);
    }
    return rc;
}

static int work_request(qr_coord *c, struct sim *s, uint64_t who, int64_t now_ms, uint8_t **reply,
                        size_t *reply_len)
{
    struct pt_agent ag;
    struct pt_link none = {NULL, NULL};
    uint8_t *req;
    size_t len;
    int rc;
    pt_agent_init(&ag, &none, s->ids[who]);
    if (pt_agent_work_request(&ag, &req, &len) != 0)
        return -1;
    rc = send(c, s, who, now_ms, req, len, reply, reply_len);
    free(req);
    return rc;
}

static void free_exch(struct exch *e, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        free(e[i].reply);
        free(e[i].next);
        e[i].reply = e[i].next = NULL;
    }
}

static size_t tuple_size(const uint8_t *upload, size_t len)
{
    Cohort__ServiceRequest *r = cohort__service_request__unpack(NULL, len, upload);
    size_t n = 0;
    if (r != NULL && r->body_case == COHORT__SERVICE_REQUEST__BODY_UPLOAD &&
        r->upload->contribution && r->upload->contribution->n_tuples > 0)
        n = cohort__ciphertext__get_packed_size(r->upload->contribution->tuples[0]);
    if (r)
        cohort__service_request__free_unpacked(r, NULL);
    return n;
}

static int cmp_arrival(const void *a, const void *b)
{
    const struct exch *x = a, *y = b;
    if (x->t_ms != y->t_ms)
        return x->t_ms < y->t_ms ? -1 : 1;
    return x->who < y->who ? -1 : x->who > y->who;
}

static int collect(struct sim *s, qr_coord *c, const uint8_t *dropped, int64_t *vnow)
{
    const struct sim_config *cfg = s->cfg;
    struct sim_report *rep = s->rep;
    uint64_t n = 0, i, done = 0;
    uint64_t rng = sim_mix(cfg->seed ^ 0xa11c0ffeeull);
    struct exch *all = malloc((cfg->tokens ? cfg->tokens : 1) * sizeof *all);
    struct qr_coord_stats st;
    int64_t t0_ms = s->t0 * 1000;
    uint64_t refusals[64] = {0};

    if (all == NULL)
        return -1;
    for (i = 0; i < cfg->tokens; i++) {
        int64_t t = t0_ms + (int64_t)(sim_uniform(&rng) * COLLECT_WINDOW_MS);
        if (dropped[i])
            continue;
        memset(&all[n], 0, sizeof all[n]);
        all[n].who = i;
        all[n].t_ms = t;
        n++;
    }
    qsort(all, n, sizeof *all, cmp_arrival);
    for (i = 0; i < n; i += BATCH) {
        size_t k, m = n - i < BATCH ? (size_t)(n - i) : BATCH;
        struct exch *b = all + i;
        qr_coord_stats(c, &st);
        if (st.state != QR_COLLECTING)
            break;
        for (k = 0; k < m; k++)
            work_request(c, s, b[k].who, b[k].t_ms, &b[k].reply, &b[k].reply_len);
        parallel(s, m, agent_job, b);
        for (k = 0; k < m; k++) {
            int64_t t = b[k].t_ms + 2 * (int64_t)cfg->latency_ms;
            if (b[k].action == PT_COLLECTED) {
                if (rep->ciphertext_bytes == 0)
                    rep->ciphertext_bytes = tuple_size(b[k].next, b[k].next_len);
                send(c, s, b[k].who, t, b[k].next, b[k].next_len, NULL, NULL);
            } else if (b[k].action == PT_REFUSED) {
                rep->refused++;
                if (b[k].status < 0 && -b[k].status < 64)
                    refusals[-b[k].status]++;
            }
            if (t > *vnow)
                *vnow = t;
            qr_coord_tick(c, t);
        }
        free_exch(b, m);
        done += m;
        progress(s, "collection", done, n);
    }
    progress(s, "collection", n, n);
    free(all);
    for (i = 1; i < 64; i++)
        if (refusals[i] > 0 && (rep->refusal == 0 || refusals[i] > refusals[-rep->refusal]))
            rep->refusal = -(int)i;
    for (i = 0; rep->refusal != 0 && i < s->threads && rep->refusal_reason[0] == '\0'; i++) {
        memcpy(rep->refusal_reason, s->workers[i].reasons[-rep->refusal],
               sizeof rep->refusal_reason);
        rep->refusal_reason[sizeof rep->refusal_reason - 1] = '\0';
    }
    qr_coord_stats(c, &st);
    if (st.state == QR_COLLECTING) {
        int64_t end = s->deadline * 1000 + 1;
        if (end > *vnow)
            *vnow = end;
        qr_coord_tick(c, *vnow);
    }
    return 0;
}

static int has_task(const uint8_t *reply, size_t len)
{
    Cohort__ServiceReply *r = cohort__service_reply__unpack(NULL, len, reply);
    int yes = r != NULL && r->status == 0 && r->work != NULL &&
              r->work->work_case == COHORT__WORK_REPLY__WORK_TASK;
    if (r)
        cohort__service_reply__free_unpacked(r, NULL);
    return yes;
}

static int aggregate(struct sim *s, qr_coord *c, const uint8_t *dropped, int64_t *vnow)
{
    const struct sim_config *cfg = s->cfg;
    struct sim_report *rep = s->rep;
    uint64_t rng = sim_mix(cfg->seed ^ 0xa9915a7eull);
    uint64_t *pool, n = 0, i, cursor = 0, rounds = 0;
    uint8_t *vanished = calloc(cfg->tokens ? cfg->tokens : 1, 1);
    struct exch *b = calloc(ROUND_MAX, sizeof *b);
    struct qr_coord_stats st;

    pool = malloc((cfg->tokens ? cfg->tokens : 1) * sizeof *pool);
    if (pool == NULL || vanished == NULL || b == NULL) {
        free(pool);
        free(vanished);
        free(b);
        return -1;
    }
    for (i = 0; i < cfg->tokens; i++)
        if (!dropped[i])
            pool[n++] = i;
    for (i = n; i > 1; i--) { /* seeded Fisher-Yates */
        uint64_t j = (uint64_t)(sim_uniform(&rng) * (double)i), t = pool[i - 1];
        pool[i - 1] = pool[j];
        pool[j] = t;
    }
    for (qr_coord_stats(c, &st); st.state == QR_AGGREGATING && n > 0; qr_coord_stats(c, &st)) {
        size_t m = 0, k;
        uint64_t tried = 0;
        if (++rounds > 1000000 || *vnow / 1000 > s->expires)
            break;
        while (m < ROUND_MAX && tried < n) {
            uint64_t who = pool[cursor++ % n];
            tried++;
            if (vanished[who])
                continue;
            memset(&b[m], 0, sizeof b[m]);
            b[m].who = who;
            b[m].t_ms = *vnow;
            if (work_request(c, s, who, *vnow, &b[m].reply, &b[m].reply_len) != 0 ||
                !has_task(b[m].reply, b[m].reply_len)) {
                free(b[m].reply);
                b[m].reply = NULL;
                break;
            }
            if (sim_uniform(&rng) < cfg->dropout) {
                vanished[who] = 1;
                b[m].skip = 1;
                rep->vanished++;
            }
            m++;
        }
        if (m == 0) {
            *vnow += TASK_TIMEOUT_MS;
            qr_coord_tick(c, *vnow);
            continue;
        }
        parallel(s, m, agent_job, b);
        *vnow += 2 * (int64_t)cfg->latency_ms + TASK_WORK_MS;
        for (k = 0; k < m; k++)
            if (!b[k].skip && b[k].action == PT_AGGREGATED)
                send(c, s, b[k].who, *vnow, b[k].next, b[k].next_len, NULL, NULL);
        free_exch(b, m);
        qr_coord_tick(c, *vnow);
        qr_coord_stats(c, &st);
        progress(s, "aggregation", st.tasks_done, st.partitions ? st.partitions : 1);
    }
    free(pool);
    free(vanished);
    free(b);
    return 0;
}

/* Which participants the service counted, by token id. */
static uint8_t *included_set(struct sim *s, qr_coord *c)
{
    const uint8_t(*ids)[32];
    size_t n = qr_coord_contributors(c, &ids), slots = 16, i, j;
    uint64_t *table;
    uint8_t *inc = calloc(s->cfg->tokens ? s->cfg->tokens : 1, 1);
    while (slots < 2 * s->cfg->tokens)
        slots *= 2;
    table = calloc(slots, sizeof *table);
    if (inc == NULL || table == NULL) {
        free(inc);
        free(table);
        return NULL;
    }
    for (i = 0; i < s->cfg->tokens; i++) {
        uint64_t h;
        memcpy(&h, s->ids[i], 8);
        for (j = h & (slots - 1); table[j]; j = (j + 1) & (slots - 1))
            ;
        table[j] = i + 1;
    }
    for (i = 0; i < n; i++) {
        uint64_t h;
        memcpy(&h, ids[i], 8);
        for (j = h & (slots - 1); table[j]; j = (j + 1) & (slots - 1))
            if (memcmp(s->ids[table[j] - 1], ids[i], 32) == 0) {
                inc[table[j] - 1] = 1;
                break;
            }
    }
    free(table);
    return inc;
}

static unsigned cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : (unsigned)n;
}

/*
 * What the service's view reveals (sim_leak.c): each participant's true
 * groups and, granted to the attacker as a worst case, the tag each
 * group's tuples carry (the simulator holds the deployment's secret).
 */
static int leakage(struct sim *s, const uint8_t *included)
{
    const struct sim_config *cfg = s->cfg;
    struct sim_report *rep = s->rep;
    struct sim_groups g;
    struct sim_leak_input in;
    uint8_t(*tags)[16] = NULL, dummy[16], query_id[32], *scratch = NULL;
    int tagged = strcmp(rep->protocol, "s_agg") != 0, rc = -1;

    if (sim_truth_groups(&g, s->plan, s->plan_len, cfg->seed, included, cfg->tokens) != 0) {
        snprintf(rep->error, sizeof rep->error, "the leakage report could not find the groups");
        return -1;
    }
    if (tagged) {
        tags = calloc(g.n_groups ? g.n_groups : 1, sizeof *tags);
        scratch = malloc(64u << 10);
        if (tags == NULL || scratch == NULL)
            goto out;
        for (uint32_t i = 0; i < g.n_groups; i++)
            if (tk_group_tag(tags[i], s->group_secret, s->plan, s->plan_len, g.keys + g.key_off[i],
                             g.key_off[i + 1] - g.key_off[i], scratch, 64u << 10) != TK_OK)
                goto out;
        tk_query_id(query_id, s->plan, s->plan_len);
        tk_dummy_tag(dummy, s->group_secret, query_id);
    }
    memset(&in, 0, sizeof in);
    in.view = s->view;
    in.protocol = rep->protocol;
    in.participants = cfg->tokens;
    in.group_first = g.first;
    in.group_ids = g.ids;
    in.n_groups = g.n_groups;
    in.group_rows = g.members;
    in.group_tag = (const uint8_t(*)[16])tags;
    in.dummy_tag = strcmp(rep->protocol, "shuffle") == 0 ? dummy : NULL;
    if ((rc = sim_leak_analyze(&rep->leak, &in)) != 0) {
        snprintf(rep->error, sizeof rep->error, "the leakage report failed: %s",
                 sim_leak_strerror(rc));
        goto out;
    }
    rep->has_leak = 1;
    if (cfg->view_csv != NULL) {
        FILE *f = fopen(cfg->view_csv, "w");
        int bad = f == NULL || sim_view_write_csv(s->view, f) != 0;
        if (f != NULL && fclose(f) != 0)
            bad = 1;
        if (bad) {
            snprintf(rep->error, sizeof rep->error, "cannot write the view to %s", cfg->view_csv);
            rc = -1;
            goto out;
        }
    }
    rc = 0;
out:
    if (rc != 0 && rep->error[0] == '\0')
        snprintf(rep->error, sizeof rep->error, "out of memory for the leakage report");
    sim_groups_free(&g);
    free(tags);
    free(scratch);
    sodium_memzero(dummy, sizeof dummy);
    return rc;
}

/* One study of a signed plan through a fresh coordinator (*out, which the
 * caller frees): collection, then aggregation, from the plan's issue time. */
static int study(struct sim *s, const uint8_t *signed_plan, size_t len, const uint8_t *dropped,
                 int64_t *vnow, qr_coord **out)
{
    struct qr_coord_config cc;
    int rc;

    qr_coord_config_default(&cc);
    cc.token_ram = s->cfg->token_ram;
    cc.task_timeout_ms = TASK_TIMEOUT_MS;
    *vnow = s->t0 * 1000;
    if ((rc = qr_coord_new(out, signed_plan, len, &cc, *vnow)) != 0) {
        snprintf(s->rep->error, sizeof s->rep->error, "the coordinator refused the plan: %s",
                 qr_strerror(rc));
        return rc;
    }
    if (collect(s, *out, dropped, vnow) != 0) {
        snprintf(s->rep->error, sizeof s->rep->error, "out of memory");
        return -1;
    }
    s->collect_end_ms = *vnow;
    if (aggregate(s, *out, dropped, vnow) != 0) {
        snprintf(s->rep->error, sizeof s->rep->error, "out of memory");
        return -1;
    }
    if (s->setup_error) {
        snprintf(s->rep->error, sizeof s->rep->error, "%s", s->setup_msg);
        return -1;
    }
    return 0;
}

static int sign(struct sim *s, const uint8_t *plan, size_t len, uint8_t **out, size_t *out_len)
{
    const uint8_t *chain[1] = {s->researcher_cert};
    size_t chain_len[1] = {s->researcher_cert_len};
    return qr_plan_sign(out, out_len, plan, len, &s->researcher, chain, chain_len, 1);
}

/*
 * ed_hist: the histogram study first (s_agg, COUNT(*) per group), opened by
 * the researcher, whose bounds make the plan that is then signed and run.
 */
static int histogram(struct sim *s, const uint8_t *dropped)
{
    struct sim_report *rep = s->rep;
    uint8_t *hp = NULL, *hsp = NULL, *np = NULL, *nsp = NULL;
    size_t hl = 0, hsl = 0, nl = 0, nsl = 0;
    const uint8_t *sealed;
    size_t sealed_len;
    struct qr_result hist;
    qr_coord *c = NULL;
    int64_t vnow;
    double w0 = wall();
    int rc;

    memset(&hist, 0, sizeof hist);
    if ((rc = qr_hist_plan(&hp, &hl, s->plan, s->plan_len)) != 0 ||
        (rc = sign(s, hp, hl, &hsp, &hsl)) != 0) {
        snprintf(rep->error, sizeof rep->error, "cannot make the histogram study: %s",
                 qr_strerror(rc));
        goto out;
    }
    if ((rc = study(s, hsp, hsl, dropped, &vnow, &c)) != 0)
        goto out;
    qr_coord_stats(c, &rep->hist_coord);
    rep->hist = 1;
    rep->hist_virtual_s = (double)(vnow - s->t0 * 1000) / 1000.0;
    if (rep->hist_coord.state != QR_DONE) {
        snprintf(rep->error, sizeof rep->error, "the histogram study failed: %s",
                 rep->hist_coord.failure_msg[0] ? rep->hist_coord.failure_msg
                                                : "it did not finish");
        rc = -1;
        goto out;
    }
    qr_coord_result(c, &sealed, &sealed_len);
    if ((rc = qr_result_open(&hist, sealed, sealed_len, hsp, hsl, &s->researcher,
                             (const uint8_t(*)[32])s->manufacturer.sign_pk, 1, vnow / 1000)) != 0 ||
        (rc = qr_hist_apply(&np, &nl, s->plan, s->plan_len, &hist)) != 0 ||
        (rc = sign(s, np, nl, &nsp, &nsl)) != 0) {
        snprintf(rep->error, sizeof rep->error, "cannot draw the buckets from the histogram: %s",
                 qr_strerror(rc));
        goto out;
    }
    {
        Cohort__Plan *p = cohort__plan__unpack(NULL, nl, np);
        rep->hist_buckets = p != NULL ? p->tag_buckets : 0;
        cohort__plan__free_unpacked(p, NULL);
    }
    free(s->plan);
    free(s->signed_plan);
    s->plan = np;
    s->plan_len = nl;
    s->signed_plan = nsp;
    s->signed_plan_len = nsl;
    np = nsp = NULL;
    rc = 0;
out:
    rep->hist_wall_s = wall() - w0;
    qr_result_free(&hist);
    qr_coord_free(c);
    free(hp);
    free(hsp);
    free(np);
    free(nsp);
    return rc != 0 ? -1 : 0;
}

int sim_run(struct sim_report *rep, const struct sim_config *cfg)
{
    struct sim s;
    qr_coord *c = NULL;
    uint8_t *dropped = NULL, *inc = NULL;
    uint64_t rng = sim_mix(cfg->seed ^ 0xd50ull), i;
    int64_t vnow;
    double w0, c0;
    unsigned t;
    int rc = -1;

    memset(rep, 0, sizeof *rep);
    memset(&s, 0, sizeof s);
    s.cfg = cfg;
    s.rep = rep;
    rep->tokens = cfg->tokens;
    rep->token_ram = cfg->token_ram;
    rep->token_state_bytes = sizeof(struct tk_token);
    if (cfg->tokens == 0 || cfg->tokens > SIM_TOKENS_MAX || cfg->sql == NULL || cfg->dropout < 0 ||
        cfg->dropout >= 1 || cfg->token_ram < TK_ARENA_MIN || cfg->token_ram > (64u << 20)) {
        snprintf(rep->error, sizeof rep->error, "invalid simulation settings");
        return -1;
    }
    if (cfg->protocol != NULL && qr_protocol_valid(cfg->protocol) != 0) {
        snprintf(rep->error, sizeof rep->error,
                 "protocol '%s' is unknown; the protocols are auto, s_agg, rnf_noise, c_noise, "
                 "ed_hist and shuffle",
                 cfg->protocol);
        return -1;
    }
    if (tk_library_init() != TK_OK) {
        snprintf(rep->error, sizeof rep->error, "libsodium failed to initialise");
        return -1;
    }
    pthread_mutex_init(&s.lock, NULL);
    s.threads = cfg->threads ? cfg->threads : cpus();
    if (s.threads > 64)
        s.threads = 64;
    rep->threads = s.threads;
    s.workers = calloc(s.threads, sizeof *s.workers);
    if (s.workers == NULL)
        goto out;
    for (t = 0; t < s.threads; t++) {
        s.workers[t].arena = aligned_alloc(64, (cfg->token_ram + 63) & ~(size_t)63);
        if (s.workers[t].arena == NULL)
            goto out;
        pt_inproc_init(&s.workers[t].link, NULL, s.workers[t].arena, cfg->token_ram);
    }
    s.t0 = (int64_t)time(NULL);
    if ((rc = setup(&s)) != 0)
        goto out;

    /* The study. */
    dropped = calloc(cfg->tokens, 1);
    if (dropped == NULL)
        goto out;
    for (i = 0; i < cfg->tokens; i++)
        if (cfg->dropout > 0 && sim_uniform(&rng) < cfg->dropout) {
            dropped[i] = 1;
            rep->dropped++;
        }
    if (strcmp(rep->protocol, "ed_hist") == 0 && (rc = histogram(&s, dropped)) != 0)
        goto out;
    if (cfg->leakage) {
        s.view = calloc(1, sizeof *s.view);
        if (s.view == NULL)
            goto out;
        sim_view_init(s.view);
    }
    w0 = wall();
    c0 = cpu();
    vnow = s.t0 * 1000;
    if ((rc = study(&s, s.signed_plan, s.signed_plan_len, dropped, &vnow, &c)) != 0)
        goto out;
    qr_coord_stats(c, &rep->coord);
    rep->contributed = rep->coord.contributions;
    rep->aggregate_virtual_s = (double)(vnow - s.collect_end_ms) / 1000.0;
    if (rep->coord.state == QR_DONE) {
        const uint8_t *sealed;
        size_t sealed_len;
        const uint8_t(*mfr)[32] = (const uint8_t(*)[32])s.manufacturer.sign_pk;
        qr_coord_result(c, &sealed, &sealed_len);
        if (cfg->keep_artifacts) {
            rep->sealed_result = malloc(sealed_len ? sealed_len : 1);
            rep->signed_plan = malloc(s.signed_plan_len);
            if (rep->sealed_result != NULL && rep->signed_plan != NULL) {
                memcpy(rep->sealed_result, sealed, sealed_len);
                rep->sealed_result_len = sealed_len;
                memcpy(rep->signed_plan, s.signed_plan, s.signed_plan_len);
                rep->signed_plan_len = s.signed_plan_len;
                rep->researcher = s.researcher;
                memcpy(rep->manufacturer_pk, s.manufacturer.sign_pk, 32);
            }
        }
        rc = qr_result_open(&rep->result, sealed, sealed_len, s.signed_plan, s.signed_plan_len,
                            &s.researcher, mfr, 1, vnow / 1000);
        if (rc != 0) {
            rep->failed = 1;
            snprintf(rep->error, sizeof rep->error, "the researcher could not open the result: %s",
                     qr_strerror(rc));
        }
    } else if (rep->contributed == 0 && rep->refused > 0) {
        rep->failed = 1;
        snprintf(rep->error, sizeof rep->error, "every token refused the plan: %s (%s)%s%s%s",
                 tk_strerror(rep->refusal), tk_errname(rep->refusal),
                 rep->refusal_reason[0] ? ": " : "", rep->refusal_reason,
                 rep->refusal == TK_ERR_NO_MEMORY
                     ? ". S_Agg keeps every group in one token's RAM: lower the plan's "
                       "max_groups (WITH (max_groups = N)) or give tokens more RAM"
                     : "");
    } else {
        rep->failed = 1;
        snprintf(rep->error, sizeof rep->error, "the study failed: %s",
                 rep->coord.failure_msg[0]            ? rep->coord.failure_msg
                 : rep->coord.state == QR_AGGREGATING ? "aggregation did not finish in time"
                                                      : "collection did not finish");
    }
    rep->virtual_s = (double)(vnow - s.t0 * 1000) / 1000.0;
    rep->study_wall_s = wall() - w0;
    rep->study_cpu_s = cpu() - c0;
    for (t = 0; t < s.threads; t++)
        if (s.workers[t].link.peak > rep->peak_arena)
            rep->peak_arena = s.workers[t].link.peak;

    /* The ground truth over the same participants. */
    inc = included_set(&s, c);
    if (inc == NULL) {
        rc = -1;
        goto out;
    }
    rc = sim_truth(&rep->truth, s.plan, s.plan_len, cfg->seed, inc, cfg->tokens);
    if (rc < 0) {
        snprintf(rep->error, sizeof rep->error, "the ground truth could not be computed");
        goto out;
    }
    rep->truth_too_few = rc == 1;
    if (s.view != NULL && (rc = leakage(&s, inc)) != 0)
        goto out;
    rep->dp = s.epsilon > 0;
    if (rep->contributed == 0 && rep->refused > 0)
        rep->ok = 0; /* nobody took part: nothing was checked */
    else if (rep->truth_too_few)
        rep->ok = rep->failed;
    else if (!rep->failed && rep->dp) {
        const uint8_t *sealed;
        size_t sealed_len;
        const struct sim_dp_check *d = &rep->dp_check;
        qr_coord_result(c, &sealed, &sealed_len);
        rc = sim_dp_check(&rep->dp_check, sealed, sealed_len, s.signed_plan, s.signed_plan_len,
                          &s.researcher, s.manufacturer.sign_pk, vnow / 1000, s.plan, s.plan_len,
                          cfg->seed, inc, cfg->tokens);
        if (rc != 0) {
            snprintf(rep->error, sizeof rep->error, "the DP check could not run: %s",
                     qr_strerror(rc));
            goto out;
        }
        rep->ok = d->strays == 0 &&
                  d->exceed <= sim_dp_allowed(d->values, 1 - d->confidence, SIM_DP_LEVEL);
    } else if (!rep->failed) {
        rep->diff = sim_compare(&rep->result, &rep->truth);
        rep->ok = rep->diff == NULL;
    }
    rc = 0;
out:
    if (s.view != NULL) {
        sim_view_free(s.view);
        free(s.view);
    }
    qr_coord_free(c);
    free(dropped);
    free(inc);
    if (s.tokens != NULL)
        for (i = 0; i < cfg->tokens; i++)
            tk_token_wipe(&s.tokens[i]);
    if (s.flashes != NULL)
        for (i = 0; i < cfg->tokens; i++)
            pt_memflash_free(&s.flashes[i]);
    free(s.tokens);
    free(s.flashes);
    free(s.ids);
    if (s.workers != NULL)
        for (t = 0; t < s.threads; t++) {
            pt_inproc_free(&s.workers[t].link);
            free(s.workers[t].arena);
        }
    free(s.workers);
    free(s.plan);
    free(s.signed_plan);
    free(s.researcher_cert);
    qr_identity_wipe(&s.manufacturer);
    qr_identity_wipe(&s.authority);
    qr_identity_wipe(&s.researcher);
    sodium_memzero(s.group_secret, sizeof s.group_secret);
    pthread_mutex_destroy(&s.lock);
    return rc;
}

void sim_report_free(struct sim_report *rep)
{
    free(rep->sealed_result);
    free(rep->signed_plan);
    qr_identity_wipe(&rep->researcher);
    qr_result_free(&rep->result);
    qr_result_free(&rep->truth);
    free(rep->diff);
    free(rep->explain);
    memset(rep, 0, sizeof *rep);
}
