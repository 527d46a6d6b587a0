/*
 * The owner's consent policy, privacy budget and audit log, inside the token.
 *
 * Each test provisions a token with a day of health rows, sets a policy and
 * asks for collections: a plan outside the policy is refused with its own
 * code and a reason the owner can read; a plan within it is accepted and its
 * epsilon debited; every verdict is in the audit log exactly once, and the
 * log (with the budget it records) survives the token being reopened from
 * its saved image.
 */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "tests/tk_fixture.h"

struct pol_fx {
    struct fx_world w;
    struct fx_token t;
};

static int pol_setup(void **state)
{
    struct pol_fx *f = fx_alloc(sizeof *f);
    struct fx_row rows[64];
    size_t n;
    memset(f, 0, sizeof *f);
    fx_world_init(&f->w);
    fx_token_init(&f->t, TK_ARENA_DEFAULT);
    fx_provision(&f->t, &f->w, "token-1");
    n = fx_gen_rows(rows, 64, 1);
    assert_int_equal(fx_load_health(&f->t, rows, n), TK_OK);
    *state = f;
    return 0;
}

static int pol_teardown(void **state)
{
    struct pol_fx *f = *state;
    fx_token_free(&f->t);
    free(f);
    return 0;
}

/* A collection of a plan spec; the response's reason copied into reason. */
static int collect_spec(struct pol_fx *f, const struct fx_plan_spec *spec, char *reason, size_t cap,
                        uint8_t query_id[TK_QUERY_ID_LEN])
{
    struct fx_signed sp;
    Cohort__TokenResponse *r = NULL;
    int rc;
    fx_plan_sign(&sp, spec, &f->w.researcher);
    if (query_id != NULL)
        memcpy(query_id, sp.query_id, TK_QUERY_ID_LEN);
    rc = fx_collect(&f->t, FX_NOW, sp.sp, &r);
    if (reason != NULL) {
        reason[0] = '\0';
        if (r != NULL && r->reason != NULL) {
            strncpy(reason, r->reason, cap - 1);
            reason[cap - 1] = '\0';
        }
    }
    if (r != NULL)
        cohort__token_response__free_unpacked(r, NULL);
    fx_signed_free(&sp);
    return rc;
}

/* Collect a plan already signed, again (a repeat of the same query). */
static int collect_signed(struct pol_fx *f, const struct fx_signed *sp)
{
    return fx_collect(&f->t, FX_NOW, sp->sp, NULL);
}

/* The audit log, all of it (caller frees with free_audit). */
struct audit {
    Cohort__TokenResponse *pages[64];
    size_t n_pages;
    Cohort__AuditEntry *e[1024];
    size_t n;
};

static void read_audit(struct fx_token *t, struct audit *a, uint32_t page_size)
{
    uint64_t after = 0;
    memset(a, 0, sizeof *a);
    for (;;) {
        Cohort__TokenRequest req;
        Cohort__ReadAudit ra;
        Cohort__TokenResponse *r;
        size_t i;
        cohort__token_request__init(&req);
        cohort__read_audit__init(&ra);
        ra.after = after;
        ra.max_entries = page_size;
        req.now = FX_NOW;
        req.body_case = COHORT__TOKEN_REQUEST__BODY_READ_AUDIT;
        req.read_audit = &ra;
        assert_int_equal(fx_call(t, &req, &r), TK_OK);
        assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_AUDIT);
        assert_true(a->n_pages < 64);
        a->pages[a->n_pages++] = r;
        if (page_size != 0)
            assert_true(r->audit->n_entries <= page_size);
        for (i = 0; i < r->audit->n_entries; i++) {
            assert_true(a->n < 1024);
            a->e[a->n++] = r->audit->entries[i];
            after = r->audit->entries[i]->seq;
        }
        if (!r->audit->more)
            break;
        assert_true(r->audit->n_entries > 0);
    }
}

static void free_audit(struct audit *a)
{
    size_t i;
    for (i = 0; i < a->n_pages; i++)
        cohort__token_response__free_unpacked(a->pages[i], NULL);
}

/* The entries of one query, in order. */
static size_t entries_for(const struct audit *a, const uint8_t q[TK_QUERY_ID_LEN],
                          const Cohort__AuditEntry **out, size_t max)
{
    size_t i, n = 0;
    for (i = 0; i < a->n; i++)
        if (a->e[i]->query_id.len == TK_QUERY_ID_LEN &&
            memcmp(a->e[i]->query_id.data, q, TK_QUERY_ID_LEN) == 0 && n < max)
            out[n++] = a->e[i];
    return n;
}

/* A policy with everything open but what the test narrows. */
struct pol {
    Cohort__ConsentPolicy p;
    ProtobufCBinaryData keys[2];
    char *tables[4];
    char *studies[2];
};

static void pol_open(struct pol *p)
{
    memset(p, 0, sizeof *p);
    cohort__consent_policy__init(&p->p);
    p->tables[0] = "health";
    p->p.tables = p->tables;
    p->p.n_tables = 1;
    p->p.epsilon_per_study = 10.0;
    p->p.epsilon_total = 10.0;
}

static void dp_spec(struct fx_plan_spec *s, const char *study, double epsilon)
{
    fx_plan_default(s);
    s->study = study;
    s->epsilon = epsilon;
    s->max_rows = 1;
    s->aggs[0] = (struct fx_agg){COHORT__AGG_FUNC__AGG_COUNT_STAR, NULL};
    s->n_aggs = 1;
}

static void set(struct pol_fx *f, struct pol *p)
{
    assert_int_equal(fx_set_policy(&f->t, &p->p, NULL), TK_OK);
}

/* ------------------------------------------------------------- tests */

static void a_token_without_a_policy_refuses_every_study(void **state)
{
    struct pol_fx *f = fx_alloc(sizeof *f);
    struct fx_plan_spec spec;
    struct fx_row rows[16];
    char reason[200];
    Cohort__TokenRequest req;
    Cohort__GetPolicy gp;
    Cohort__TokenResponse *r, *cr;
    struct fx_cert cert;
    uint8_t sealed[32 + crypto_box_SEALBYTES];
    (void)state;

    /* The provisioning ceremony without the fixture's consent. */
    memset(f, 0, sizeof *f);
    fx_world_init(&f->w);
    fx_token_init(&f->t, TK_ARENA_DEFAULT);
    assert_int_equal(fx_provision_begin(&f->t, "t", &cr), TK_OK);
    fx_cert_issue(&cert, COHORT__ROLE__ROLE_TOKEN, "t", cr->cert_request->sign_pk.data,
                  cr->cert_request->box_pk.data, &f->w.maker, FX_NOW - FX_DAY,
                  FX_NOW + 365 * FX_DAY, NULL);
    crypto_box_seal(sealed, f->w.secret, 32, cr->cert_request->box_pk.data);
    cohort__token_response__free_unpacked(cr, NULL);
    assert_int_equal(
        fx_provision_finish(&f->t, &cert, sealed, sizeof sealed, &f->w.authority.pk, 1), TK_OK);
    assert_int_equal(fx_load_health(&f->t, rows, fx_gen_rows(rows, 16, 2)), TK_OK);

    cohort__token_request__init(&req);
    cohort__get_policy__init(&gp);
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_GET_POLICY;
    req.get_policy = &gp;
    assert_int_equal(fx_call(&f->t, &req, &r), TK_ERR_NOT_FOUND);
    assert_non_null(strstr(r->reason, "no consent policy"));
    cohort__token_response__free_unpacked(r, NULL);

    fx_plan_default(&spec);
    assert_int_equal(collect_spec(f, &spec, reason, sizeof reason, NULL), TK_ERR_POLICY);
    assert_non_null(strstr(reason, "no consent policy"));
    fx_token_free(&f->t);
    free(f);
}

struct clause_case {
    const char *name;
    void (*narrow)(struct pol *p, const struct pol_fx *f);
    void (*ask)(struct fx_plan_spec *s);
    int status;
    const char *reason;
};

static void other_authority(struct pol *p, const struct pol_fx *f)
{
    static uint8_t k[32];
    (void)f;
    memset(k, 0x5a, sizeof k);
    p->keys[0].data = k;
    p->keys[0].len = 32;
    p->p.authorities = p->keys;
    p->p.n_authorities = 1;
}

static void other_researcher(struct pol *p, const struct pol_fx *f)
{
    static uint8_t k[32];
    (void)f;
    memset(k, 0xa5, sizeof k);
    p->keys[1].data = k;
    p->keys[1].len = 32;
    p->p.researchers = &p->keys[1];
    p->p.n_researchers = 1;
}

static void only_study_2(struct pol *p, const struct pol_fx *f)
{
    (void)f;
    p->studies[0] = "study-2";
    p->p.studies = p->studies;
    p->p.n_studies = 1;
}

static void no_tables(struct pol *p, const struct pol_fx *f)
{
    (void)f;
    p->tables[0] = "energy";
}

static void region_only(struct pol *p, const struct pol_fx *f)
{
    (void)f;
    p->tables[0] = "health.region";
}

static void floor_participants(struct pol *p, const struct pol_fx *f)
{
    (void)f;
    p->p.min_participants = 100;
}

static void floor_group(struct pol *p, const struct pol_fx *f)
{
    (void)f;
    p->p.min_group_size = 10;
}

static void dp_required(struct pol *p, const struct pol_fx *f)
{
    (void)f;
    p->p.require_dp = true;
}

static void plain_plan(struct fx_plan_spec *s)
{
    fx_plan_default(s);
    s->min_participants = 50;
    s->min_group_size = 5;
}

static const struct clause_case clause_cases[] = {
    {"authority", other_authority, plain_plan, TK_ERR_POLICY, "authority"},
    {"researcher", other_researcher, plain_plan, TK_ERR_POLICY, "researcher 'dr-who'"},
    {"study", only_study_2, plain_plan, TK_ERR_POLICY, "study 'study-1'"},
    {"table", no_tables, plain_plan, TK_ERR_POLICY, "table 'health' is not shared"},
    {"column", region_only, plain_plan, TK_ERR_POLICY, "column health.steps is not shared"},
    {"participants", floor_participants, plain_plan, TK_ERR_POLICY, "at least 100"},
    {"group size", floor_group, plain_plan, TK_ERR_POLICY, "at least 10"},
    {"dp", dp_required, plain_plan, TK_ERR_POLICY, "no differential-privacy"},
};

static void each_clause_of_the_policy_refuses_with_its_reason(void **state)
{
    struct pol_fx *f = *state;
    size_t i;
    for (i = 0; i < sizeof clause_cases / sizeof clause_cases[0]; i++) {
        const struct clause_case *k = &clause_cases[i];
        struct fx_plan_spec spec;
        struct pol p;
        char reason[200];
        uint8_t q[TK_QUERY_ID_LEN];
        struct audit a;
        const Cohort__AuditEntry *e[4] = {0};

        pol_open(&p);
        k->narrow(&p, f);
        set(f, &p);
        k->ask(&spec);
        print_message("clause: %s\n", k->name);
        assert_int_equal(collect_spec(f, &spec, reason, sizeof reason, q), k->status);
        assert_non_null(strstr(reason, k->reason));
        read_audit(&f->t, &a, 0);
        assert_int_equal(entries_for(&a, q, e, 4), 1);
        assert_false(e[0]->accepted);
        assert_int_equal(e[0]->status, k->status);
        assert_string_equal(e[0]->reason, reason);
        assert_string_equal(e[0]->study, "study-1");
        assert_string_equal(e[0]->researcher, "dr-who");
        assert_string_equal(e[0]->table, "health");
        assert_float_equal(e[0]->epsilon, 0.0, 0.0);
        free_audit(&a);

        /* The same plan passes once the clause is lifted. */
        pol_open(&p);
        set(f, &p);
        assert_int_equal(collect_spec(f, &spec, NULL, 0, NULL), TK_OK);
    }
}

static void a_column_listed_alone_is_enough_for_a_plan_that_reads_only_it(void **state)
{
    struct pol_fx *f = *state;
    struct fx_plan_spec spec;
    struct pol p;
    pol_open(&p);
    p.tables[0] = "health.region";
    p.tables[1] = "health.steps";
    p.p.n_tables = 2;
    set(f, &p);
    fx_plan_default(&spec); /* region, COUNT(*), SUM(steps) */
    assert_int_equal(collect_spec(f, &spec, NULL, 0, NULL), TK_OK);
}

static void a_study_budget_runs_out_and_then_the_token_does_not_contribute(void **state)
{
    struct pol_fx *f = *state;
    struct fx_plan_spec spec;
    struct pol p;
    char reason[200];
    uint8_t q[TK_QUERY_ID_LEN];
    struct audit a;
    const Cohort__AuditEntry *e[4] = {0};
    double spent = 0;
    size_t i;

    pol_open(&p);
    p.p.epsilon_per_study = 1.0;
    p.p.epsilon_total = 1.5;
    set(f, &p);
    dp_spec(&spec, "study-1", 0.4);
    assert_int_equal(collect_spec(f, &spec, NULL, 0, NULL), TK_OK);
    assert_int_equal(collect_spec(f, &spec, NULL, 0, NULL), TK_OK);
    /* 0.8 spent on study-1: 0.4 more would exceed its 1.0. */
    assert_int_equal(collect_spec(f, &spec, reason, sizeof reason, q), TK_ERR_BUDGET);
    assert_non_null(
        strstr(reason, "study 'study-1' asks epsilon 0.400 but has 0.200 of its 1.000"));
    read_audit(&f->t, &a, 0);
    assert_int_equal(entries_for(&a, q, e, 4), 1);
    assert_int_equal(e[0]->status, TK_ERR_BUDGET);
    for (i = 0; i < a.n; i++)
        if (a.e[i]->accepted)
            spent += a.e[i]->epsilon;
    assert_float_equal(spent, 0.8, 1e-9);
    free_audit(&a);

    /* Another study draws on the total: 0.8 + 0.4 fits 1.5, a further 0.4 does not. */
    dp_spec(&spec, "study-2", 0.4);
    assert_int_equal(collect_spec(f, &spec, NULL, 0, NULL), TK_OK);
    assert_int_equal(collect_spec(f, &spec, reason, sizeof reason, NULL), TK_ERR_BUDGET);
    assert_non_null(strstr(reason, "total budget has 0.300 of 1.500 left"));
    /* A study without noise spends nothing and is still accepted. */
    fx_plan_default(&spec);
    assert_int_equal(collect_spec(f, &spec, NULL, 0, NULL), TK_OK);
}

static void a_repeated_plan_is_charged_and_logged_once(void **state)
{
    struct pol_fx *f = *state;
    struct fx_plan_spec spec;
    struct fx_signed sp;
    struct pol p;
    struct audit a;
    const Cohort__AuditEntry *e[4] = {0};

    pol_open(&p);
    p.p.epsilon_per_study = 1.0;
    set(f, &p);
    dp_spec(&spec, "study-1", 0.6);
    fx_plan_sign(&sp, &spec, &f->w.researcher);
    assert_int_equal(collect_signed(f, &sp), TK_OK);
    assert_int_equal(collect_signed(f, &sp), TK_OK); /* 1.2 > 1.0 if it were charged */
    read_audit(&f->t, &a, 0);
    assert_int_equal(entries_for(&a, sp.query_id, e, 4), 1);
    assert_true(e[0]->accepted);
    assert_float_equal(e[0]->epsilon, 0.6, 1e-12);
    assert_string_equal(e[0]->event, "collect");
    assert_string_equal(e[0]->sql, "SELECT ... FROM health");
    free_audit(&a);
    fx_signed_free(&sp);
}

static void a_refusal_is_logged_once_per_query_and_reason(void **state)
{
    struct pol_fx *f = *state;
    struct fx_plan_spec spec;
    struct fx_signed sp;
    struct pol p;
    struct audit a;
    const Cohort__AuditEntry *e[4] = {0};

    pol_open(&p);
    p.p.min_group_size = 10;
    set(f, &p);
    plain_plan(&spec);
    fx_plan_sign(&sp, &spec, &f->w.researcher);
    assert_int_equal(collect_signed(f, &sp), TK_ERR_POLICY);
    assert_int_equal(collect_signed(f, &sp), TK_ERR_POLICY);
    assert_int_equal(collect_signed(f, &sp), TK_ERR_POLICY);
    read_audit(&f->t, &a, 0);
    assert_int_equal(entries_for(&a, sp.query_id, e, 4), 1);
    free_audit(&a);
    /* Accepted after the owner relents: a second entry, now an acceptance. */
    pol_open(&p);
    set(f, &p);
    assert_int_equal(collect_signed(f, &sp), TK_OK);
    read_audit(&f->t, &a, 0);
    assert_int_equal(entries_for(&a, sp.query_id, e, 4), 2);
    assert_false(e[0]->accepted);
    assert_true(e[1]->accepted);
    assert_true(e[1]->seq > e[0]->seq);
    free_audit(&a);
    fx_signed_free(&sp);
}

static void a_plan_that_fails_verification_is_not_logged(void **state)
{
    struct pol_fx *f = *state;
    struct fx_plan_spec spec;
    struct fx_signed sp;
    struct audit before, after;

    read_audit(&f->t, &before, 0);
    fx_plan_default(&spec);
    fx_plan_sign(&sp, &spec, &f->w.researcher);
    sp.sp->signature.data[0] ^= 1;
    assert_int_equal(collect_signed(f, &sp), TK_ERR_BAD_SIGNATURE);
    read_audit(&f->t, &after, 0);
    assert_int_equal(after.n, before.n);
    free_audit(&before);
    free_audit(&after);
    fx_signed_free(&sp);
}

static void the_audit_log_pages_in_order_and_records_policy_changes(void **state)
{
    struct pol_fx *f = *state;
    struct fx_plan_spec spec;
    struct pol p;
    struct audit all, paged;
    size_t i, policies = 0;

    pol_open(&p);
    set(f, &p);
    for (i = 0; i < 7; i++) {
        fx_plan_default(&spec);
        assert_int_equal(collect_spec(f, &spec, NULL, 0, NULL), TK_OK);
    }
    read_audit(&f->t, &all, 0);
    read_audit(&f->t, &paged, 3);
    assert_int_equal(all.n, paged.n);
    assert_true(paged.n_pages >= 3);
    for (i = 0; i < all.n; i++) {
        assert_int_equal(all.e[i]->seq, i + 1);
        assert_int_equal(paged.e[i]->seq, i + 1);
        if (strcmp(all.e[i]->event, "policy") == 0)
            policies++;
    }
    /* The fixture's consent and this test's. */
    assert_int_equal(policies, 2);
    assert_int_equal(all.n, 2 + 7);
    free_audit(&all);
    free_audit(&paged);
}

struct bad_policy {
    const char *name;
    void (*spoil)(struct pol *p);
    int status;
};

static void short_key(struct pol *p)
{
    static uint8_t k[31];
    p->keys[0].data = k;
    p->keys[0].len = sizeof k;
    p->p.authorities = p->keys;
    p->p.n_authorities = 1;
}

static void negative_budget(struct pol *p)
{
    p->p.epsilon_total = -1;
}

static void nan_budget(struct pol *p)
{
    p->p.epsilon_per_study = NAN;
}

static void huge_budget(struct pol *p)
{
    p->p.epsilon_per_study = INFINITY;
}

static void bad_table_entry(struct pol *p)
{
    p->tables[0] = "health.";
}

static void dotted_entry(struct pol *p)
{
    p->tables[0] = "health.a.b";
}

static void empty_study(struct pol *p)
{
    p->studies[0] = "";
    p->p.studies = p->studies;
    p->p.n_studies = 1;
}

static void too_many_studies(struct pol *p)
{
    static char *many[40];
    size_t i;
    for (i = 0; i < 40; i++)
        many[i] = "s";
    p->p.studies = many;
    p->p.n_studies = 40;
}

static const struct bad_policy bad_policies[] = {
    {"short key", short_key, TK_ERR_MALFORMED},
    {"negative budget", negative_budget, TK_ERR_MALFORMED},
    {"NaN budget", nan_budget, TK_ERR_MALFORMED},
    {"infinite budget", huge_budget, TK_ERR_MALFORMED},
    {"empty column", bad_table_entry, TK_ERR_MALFORMED},
    {"two dots", dotted_entry, TK_ERR_MALFORMED},
    {"empty study", empty_study, TK_ERR_MALFORMED},
    {"too many studies", too_many_studies, TK_ERR_TOO_LARGE},
};

static void a_malformed_policy_is_refused_and_the_old_one_stays(void **state)
{
    struct pol_fx *f = *state;
    struct pol good;
    size_t i;

    pol_open(&good);
    good.p.min_group_size = 7;
    set(f, &good);
    for (i = 0; i < sizeof bad_policies / sizeof bad_policies[0]; i++) {
        struct pol p;
        Cohort__TokenRequest req;
        Cohort__GetPolicy gp;
        Cohort__TokenResponse *r;
        pol_open(&p);
        bad_policies[i].spoil(&p);
        print_message("bad policy: %s\n", bad_policies[i].name);
        assert_int_equal(fx_set_policy(&f->t, &p.p, NULL), bad_policies[i].status);
        cohort__token_request__init(&req);
        cohort__get_policy__init(&gp);
        req.now = FX_NOW;
        req.body_case = COHORT__TOKEN_REQUEST__BODY_GET_POLICY;
        req.get_policy = &gp;
        assert_int_equal(fx_call(&f->t, &req, &r), TK_OK);
        assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_POLICY);
        assert_int_equal(r->policy->min_group_size, 7);
        assert_int_equal(r->policy->set_at, FX_NOW);
        cohort__token_response__free_unpacked(r, NULL);
    }
}

static void budget_and_audit_survive_reopening_the_token(void **state)
{
    struct pol_fx *f = *state;
    struct fx_plan_spec spec;
    struct pol p;
    uint8_t image[TK_IMAGE_MAX];
    size_t image_len;
    struct audit a;
    char reason[200];

    pol_open(&p);
    p.p.epsilon_per_study = 1.0;
    set(f, &p);
    dp_spec(&spec, "study-1", 0.7);
    assert_int_equal(collect_spec(f, &spec, NULL, 0, NULL), TK_OK);

    /* Power off and on: a new token struct from the saved image and the same flash. */
    assert_int_equal(tk_token_image(&f->t.tk, image, sizeof image, &image_len), TK_OK);
    fx_token_reopen(&f->t, image, image_len);
    read_audit(&f->t, &a, 0);
    assert_true(a.n >= 3);
    assert_true(a.e[a.n - 1]->accepted);
    assert_float_equal(a.e[a.n - 1]->epsilon, 0.7, 1e-12);
    free_audit(&a);
    assert_int_equal(collect_spec(f, &spec, reason, sizeof reason, NULL), TK_ERR_BUDGET);
}

static void the_agent_gets_the_reason_to_show_the_owner(void **state)
{
    struct pol_fx *f = *state;
    struct fx_plan_spec spec;
    struct fx_signed sp;
    struct pol p;
    struct pt_inproc in;
    struct pt_link link;
    struct pt_agent ag;
    Cohort__ServiceReply rep;
    Cohort__WorkReply wr;
    Cohort__CollectWork cw;
    enum pt_action action;
    uint8_t *reply, *next = NULL;
    size_t reply_len, next_len = 0;

    pol_open(&p);
    p.studies[0] = "study-2";
    p.p.studies = p.studies;
    p.p.n_studies = 1;
    set(f, &p);
    fx_plan_default(&spec);
    fx_plan_sign(&sp, &spec, &f->w.researcher);

    /* The service's reply asking for a collection, as the agent receives it. */
    cohort__service_reply__init(&rep);
    cohort__work_reply__init(&wr);
    cohort__collect_work__init(&cw);
    cw.plan = sp.sp;
    wr.work_case = COHORT__WORK_REPLY__WORK_COLLECT;
    wr.collect = &cw;
    rep.work = &wr;
    reply_len = cohort__service_reply__get_packed_size(&rep);
    reply = fx_alloc(reply_len);
    cohort__service_reply__pack(&rep, reply);

    pt_inproc_init(&in, &f->t.tk, f->t.arena, f->t.arena_len);
    link = pt_inproc_link(&in);
    pt_agent_init(&ag, &link, f->t.tk.sign_pk);
    assert_int_equal(pt_agent_handle(&ag, FX_NOW, reply, reply_len, &action, &next, &next_len),
                     PT_OK);
    assert_int_equal(action, PT_REFUSED);
    assert_null(next);
    assert_int_equal(ag.last_token_status, TK_ERR_POLICY);
    assert_string_equal(ag.last_reason, "study 'study-1' is not one you accept");
    pt_inproc_free(&in);
    free(reply);
    fx_signed_free(&sp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_token_without_a_policy_refuses_every_study),
        cmocka_unit_test_setup_teardown(each_clause_of_the_policy_refuses_with_its_reason,
                                        pol_setup, pol_teardown),
        cmocka_unit_test_setup_teardown(
            a_column_listed_alone_is_enough_for_a_plan_that_reads_only_it, pol_setup, pol_teardown),
        cmocka_unit_test_setup_teardown(
            a_study_budget_runs_out_and_then_the_token_does_not_contribute, pol_setup,
            pol_teardown),
        cmocka_unit_test_setup_teardown(a_repeated_plan_is_charged_and_logged_once, pol_setup,
                                        pol_teardown),
        cmocka_unit_test_setup_teardown(a_refusal_is_logged_once_per_query_and_reason, pol_setup,
                                        pol_teardown),
        cmocka_unit_test_setup_teardown(a_plan_that_fails_verification_is_not_logged, pol_setup,
                                        pol_teardown),
        cmocka_unit_test_setup_teardown(the_audit_log_pages_in_order_and_records_policy_changes,
                                        pol_setup, pol_teardown),
        cmocka_unit_test_setup_teardown(a_malformed_policy_is_refused_and_the_old_one_stays,
                                        pol_setup, pol_teardown),
        cmocka_unit_test_setup_teardown(budget_and_audit_survive_reopening_the_token, pol_setup,
                                        pol_teardown),
        cmocka_unit_test_setup_teardown(the_agent_gets_the_reason_to_show_the_owner, pol_setup,
                                        pol_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
