/*
 * The token's collection, aggregation and filtering phases, end to end,
 * checked against a plaintext reference.
 *
 * A population of tokens, each with its own rows of the `health` table,
 * answers signed plans. Every token collects; the ciphertexts are sorted by
 * contribution key as the service would sort them, cut into level-1
 * partitions that several tokens aggregate in sessions spanning many feeds,
 * and the partials are merged by a final (or intermediate, then final)
 * partition. The researcher opens the sealed result, checks its signature,
 * and every group and aggregate is compared with what plain C computes from
 * the same rows. The reference below does not share code with the token:
 * WHERE and HAVING are written as C expressions, aggregates as loops.
 */
#include "tk_fixture.h"

#include <math.h>

#define N_TOKENS 36
#define MAX_ROWS 8

struct population {
    struct fx_world w;
    struct fx_token tokens[N_TOKENS];
    struct fx_row rows[N_TOKENS][MAX_ROWS];
    size_t n_rows[N_TOKENS];
};

static struct population *pop;

static int population_setup(void **state)
{
    unsigned i;
    char subject[32];
    (void)state;
    pop = fx_alloc(sizeof *pop);
    fx_world_init(&pop->w);
    for (i = 0; i < N_TOKENS; i++) {
        fx_token_init(&pop->tokens[i], TK_ARENA_DEFAULT);
        snprintf(subject, sizeof subject, "token-%02u", i);
        fx_provision(&pop->tokens[i], &pop->w, subject);
        pop->n_rows[i] = fx_gen_rows(pop->rows[i], MAX_ROWS, i);
        assert_int_equal(fx_load_health(&pop->tokens[i], pop->rows[i], pop->n_rows[i]), TK_OK);
    }
    return 0;
}

static int population_teardown(void **state)
{
    unsigned i;
    (void)state;
    for (i = 0; i < N_TOKENS; i++)
        fx_token_free(&pop->tokens[i]);
    free(pop);
    pop = NULL;
    return 0;
}

/* --------------------------------------------------------- reference */

/* SQL comparisons of a possibly NULL row value: -1 unknown, else 0/1. */
static int ref_is_null(const struct fx_row *r, int c)
{
    return (r->nulls & FX_NULL(c)) != 0;
}

static int ref_and(int a, int b)
{
    return (a == 0 || b == 0) ? 0 : (a < 0 || b < 0) ? -1 : 1;
}

static int ref_or(int a, int b)
{
    return (a == 1 || b == 1) ? 1 : (a < 0 || b < 0) ? -1 : 0;
}

static int ref_not(int a)
{
    return a < 0 ? -1 : !a;
}

struct ref_agg {
    int func;
    int col; /* -1: COUNT(*), COUNT(DISTINCT participant) */
};

struct ref_query {
    int (*where)(const struct fx_row *r); /* 1 keeps the row */
    int group[2];
    size_t n_group;
    struct ref_agg aggs[16];
    size_t n_aggs;
    /* HAVING over the final values (after suppression); NULL: none. */
    int (*having)(const struct fx_val *keys, const struct fx_val *aggs);
    uint32_t min_group_size;
};

struct ref_state {
    int64_t count, sum, min, max;
    uint64_t tokens; /* bit i: token i has a row in this group */
};

struct ref_group {
    struct fx_val key[2];
    struct ref_state s[16];
    uint64_t tokens;
    int64_t rows;
};

struct ref_result {
    struct ref_group groups[64];
    size_t n_groups;
    struct fx_val out[64][18]; /* kept groups: keys then aggregates */
    size_t n_out;
    uint64_t suppressed;
    uint64_t removed_by_having;
    uint64_t participants;
    size_t matching_tokens; /* tokens with at least one row kept by WHERE */
};

static bool val_equal(const struct fx_val *a, const struct fx_val *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case COHORT__VALUE_TYPE__VT_NULL:
        return true;
    case COHORT__VALUE_TYPE__VT_TEXT:
        return strcmp(a->s, b->s) == 0;
    case COHORT__VALUE_TYPE__VT_DECIMAL:
        return a->i == b->i && a->scale == b->scale;
    case COHORT__VALUE_TYPE__VT_DOUBLE:
        return fabs(a->d - b->d) <= 1e-9 * (fabs(b->d) > 1 ? fabs(b->d) : 1);
    default:
        return a->i == b->i;
    }
}

static int popcount64(uint64_t x)
{
    int n = 0;
    for (; x; x &= x - 1)
        n++;
    return n;
}

static int col_scale(int c)
{
    return c == FX_C_WEIGHT ? 1 : 0;
}

static struct fx_val ref_final(const struct ref_agg *a, const struct ref_state *s)
{
    struct fx_val v = FV_NULL;
    double d;
    switch (a->func) {
    case COHORT__AGG_FUNC__AGG_COUNT_STAR:
    case COHORT__AGG_FUNC__AGG_COUNT:
        return FV_INT(s->count);
    case COHORT__AGG_FUNC__AGG_COUNT_PARTICIPANTS:
        return FV_INT(popcount64(s->tokens));
    default:
        break;
    }
    if (s->count == 0)
        return FV_NULL;
    if (a->func == COHORT__AGG_FUNC__AGG_AVG) {
        d = (double)s->sum / (double)s->count;
        if (col_scale(a->col))
            d /= 10.0;
        return FV_DOUBLE(d);
    }
    v = a->func == COHORT__AGG_FUNC__AGG_SUM   ? FV_INT(s->sum)
        : a->func == COHORT__AGG_FUNC__AGG_MIN ? FV_INT(s->min)
                                               : FV_INT(s->max);
    if (a->col == FX_C_DATE)
        v.type = COHORT__VALUE_TYPE__VT_DATE;
    if (a->col == FX_C_WEIGHT) {
        v.type = COHORT__VALUE_TYPE__VT_DECIMAL;
        v.scale = 1;
    }
    return v;
}

/* Run the query in plain C over the rows of tokens [0, n_tokens). */
static void ref_run(struct ref_result *res, const struct ref_query *q, unsigned n_tokens)
{
    unsigned t;
    size_t i, g, k;

    memset(res, 0, sizeof *res);
    res->participants = n_tokens;
    for (t = 0; t < n_tokens; t++) {
        bool matched = false;
        for (i = 0; i < pop->n_rows[t]; i++) {
            const struct fx_row *r = &pop->rows[t][i];
            struct fx_val key[2] = {FVI_NULL, FVI_NULL};
            if (q->where != NULL && q->where(r) != 1)
                continue;
            matched = true;
            for (k = 0; k < q->n_group; k++)
                key[k] = fx_row_value(r, q->group[k]);
            for (g = 0; g < res->n_groups; g++) {
                for (k = 0; k < q->n_group && val_equal(&res->groups[g].key[k], &key[k]); k++)
                    ;
                if (k == q->n_group)
                    break;
            }
            if (g == res->n_groups) {
                assert_true(g < 64);
                memset(&res->groups[g], 0, sizeof res->groups[g]);
                memcpy(res->groups[g].key, key, sizeof key);
                res->n_groups++;
            }
            res->groups[g].tokens |= 1ull << t;
            res->groups[g].rows++;
            for (k = 0; k < q->n_aggs; k++) {
                const struct ref_agg *a = &q->aggs[k];
                struct ref_state *s = &res->groups[g].s[k];
                struct fx_val v;
                if (a->func == COHORT__AGG_FUNC__AGG_COUNT_STAR) {
                    s->count++;
                    continue;
                }
                if (a->func == COHORT__AGG_FUNC__AGG_COUNT_PARTICIPANTS) {
                    s->tokens |= 1ull << t;
                    continue;
                }
                v = fx_row_value(r, a->col);
                if (v.type == COHORT__VALUE_TYPE__VT_NULL)
                    continue;
                if (s->count == 0 || v.i < s->min)
                    s->min = v.i;
                if (s->count == 0 || v.i > s->max)
                    s->max = v.i;
                s->sum += v.i;
                s->count++;
            }
        }
        if (matched)
            res->matching_tokens++;
    }
    for (g = 0; g < res->n_groups; g++) {
        struct ref_group *e = &res->groups[g];
        struct fx_val aggs[16];
        if ((uint32_t)popcount64(e->tokens) < q->min_group_size) {
            res->suppressed++;
            continue;
        }
        for (k = 0; k < q->n_aggs; k++)
            aggs[k] = ref_final(&q->aggs[k], &e->s[k]);
        if (q->having != NULL && !q->having(e->key, aggs)) {
            res->removed_by_having++;
            continue;
        }
        for (k = 0; k < q->n_group; k++)
            res->out[res->n_out][k] = e->key[k];
        for (k = 0; k < q->n_aggs; k++)
            res->out[res->n_out][q->n_group + k] = aggs[k];
        res->n_out++;
    }
}

/* A result value as the token sent it. */
static struct fx_val pb_val(const Cohort__Value *v, char *text, size_t text_cap)
{
    struct fx_val out = FV_NULL;
    out.type = v->type;
    out.i = v->i;
    out.scale = v->scale;
    out.d = v->d;
    if (v->type == COHORT__VALUE_TYPE__VT_TEXT) {
        assert_true(v->s.len < text_cap);
        memcpy(text, v->s.data, v->s.len);
        text[v->s.len] = '\0';
        out.s = text;
    }
    return out;
}

/* Compare a decrypted ResultTable with the reference, row by row. */
static void compare_result(const Cohort__ResultTable *rt, const struct ref_result *ref,
                           const struct ref_query *q)
{
    bool used[64] = {false};
    size_t i, k, e, width = q->n_group + q->n_aggs;

    assert_int_equal(rt->n_columns, width);
    for (k = 0; k < q->n_aggs; k++) {
        const Cohort__ResultColumn *c = rt->columns[q->n_group + k];
        int f = q->aggs[k].func;
        if (f == COHORT__AGG_FUNC__AGG_AVG)
            assert_int_equal(c->type, COHORT__VALUE_TYPE__VT_DOUBLE);
        else if (f == COHORT__AGG_FUNC__AGG_COUNT_STAR || f == COHORT__AGG_FUNC__AGG_COUNT ||
                 f == COHORT__AGG_FUNC__AGG_COUNT_PARTICIPANTS)
            assert_int_equal(c->type, COHORT__VALUE_TYPE__VT_INT);
    }
    assert_int_equal(rt->participants, ref->participants);
    assert_int_equal(rt->groups_suppressed, ref->suppressed);
    assert_int_equal(rt->n_rows, ref->n_out);
    for (i = 0; i < rt->n_rows; i++) {
        const Cohort__Row *row = rt->rows[i];
        char text[2][80];
        struct fx_val got[18];
        assert_int_equal(row->n_values, width);
        for (k = 0; k < width; k++)
            got[k] = pb_val(row->values[k], text[k < 2 ? k : 0], sizeof text[0]);
        for (e = 0; e < ref->n_out; e++) {
            for (k = 0; k < q->n_group && val_equal(&got[k], &ref->out[e][k]); k++)
                ;
            if (k == q->n_group)
                break;
        }
        assert_true(e < ref->n_out); /* a group the reference does not have */
        assert_false(used[e]);       /* a group reported twice */
        used[e] = true;
        for (k = q->n_group; k < width; k++) {
            if (!val_equal(&got[k], &ref->out[e][k]))
                fail_msg("group %zu, aggregate %zu: got type %d i %lld d %g, want type %d i %lld "
                         "d %g",
                         e, k - q->n_group, got[k].type, (long long)got[k].i, got[k].d,
                         ref->out[e][k].type, (long long)ref->out[e][k].i, ref->out[e][k].d);
        }
    }
}

/* The plan spec that matches a reference query. */
static const char *const col_names[FX_NCOLS] = {"participant", "age",   "sex",        "region",
                                                "date",        "steps", "heart_rate", "weight"};

static void spec_from_query(struct fx_plan_spec *s, const struct ref_query *q)
{
    size_t k;
    fx_plan_default(s);
    s->n_group = q->n_group;
    for (k = 0; k < q->n_group; k++)
        s->group_by[k] = col_names[q->group[k]];
    s->n_aggs = q->n_aggs;
    for (k = 0; k < q->n_aggs; k++)
        s->aggs[k] = (struct fx_agg){q->aggs[k].func,
                                     q->aggs[k].col >= 0 ? col_names[q->aggs[k].col] : NULL};
    s->min_group_size = q->min_group_size;
}

/* Every token collects; checks the shape of each contribution. */
static void collect_all(struct fx_cts *all, const struct fx_signed *plan, uint32_t tuples)
{
    size_t i, k, box_len = 0, ct_len = 0;
    for (i = 0; i < N_TOKENS; i++) {
        Cohort__TokenResponse *r;
        const Cohort__Contribution *c;
        assert_int_equal(fx_collect(&pop->tokens[i], FX_NOW, plan->sp, &r), TK_OK);
        assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_CONTRIBUTION);
        c = r->contribution;
        assert_int_equal(c->query_id.len, TK_QUERY_ID_LEN);
        assert_memory_equal(c->query_id.data, plan->query_id, TK_QUERY_ID_LEN);
        assert_int_equal(c->key.len, TK_CONTRIB_KEY_LEN);
        assert_int_equal(c->n_tuples, tuples);
        for (k = 0; k < c->n_tuples; k++) {
            const Cohort__Ciphertext *ct = c->tuples[k];
            assert_int_equal(ct->query.len, TK_QUERY_TAG_LEN);
            assert_memory_equal(ct->query.data, plan->query_id, TK_QUERY_TAG_LEN);
            assert_int_equal(ct->phase, COHORT__PHASE__PHASE_COLLECT);
            assert_int_equal(ct->level, 0);
            assert_int_equal(ct->partition, 0);
            assert_int_equal(ct->chunk, k);
            assert_int_equal(ct->nchunks, tuples);
            assert_int_equal(ct->key.len, TK_CONTRIB_KEY_LEN);
            assert_memory_equal(ct->key.data, c->key.data, TK_CONTRIB_KEY_LEN);
            assert_int_equal(ct->nonce.len, 24);
            /* Whatever the rows, every ciphertext has the same size. */
            if (box_len == 0)
                box_len = ct->box.len;
            assert_int_equal(ct->box.len, box_len);
            fx_cts_push(all, ct);
        }
        /* And so has every contribution as the service receives it. */
        if (ct_len == 0)
            ct_len = cohort__contribution__get_packed_size(c);
        assert_int_equal(cohort__contribution__get_packed_size(c), ct_len);
        assert_true(pop->tokens[i].last_peak <= pop->tokens[i].arena_len);
        cohort__token_response__free_unpacked(r, NULL);
    }
    fx_cts_sort(all);
}

/* Level-1 partitions: [cuts[i], cuts[i+1]) of the sorted inputs. */
static void level1(struct fx_cts *out, const struct fx_signed *plan, const struct fx_cts *in,
                   const size_t *cuts, size_t n_parts, const unsigned *aggregators,
                   const size_t *feeds)
{
    size_t p;
    for (p = 0; p < n_parts; p++)
        assert_int_equal(fx_aggregate(&pop->tokens[aggregators[p]], FX_NOW + 10, plan->sp, 1,
                                      (uint32_t)p, false, in->v + cuts[p], cuts[p + 1] - cuts[p],
                                      feeds[p], out, NULL),
                         TK_OK);
}

static Cohort__ResultTable *final_level(const struct fx_signed *plan, unsigned aggregator,
                                        uint32_t level, const struct fx_cts *in, size_t feed,
                                        Cohort__SealedResult **sealed_out)
{
    Cohort__SealedResult *sr = NULL;
    Cohort__ResultTable *rt;
    assert_int_equal(fx_aggregate(&pop->tokens[aggregator], FX_NOW + 20, plan->sp, level, 0, true,
                                  in->v, in->n, feed, NULL, &sr),
                     TK_OK);
    rt = fx_open_result(sr, &pop->w, plan->query_id);
    if (sealed_out != NULL)
        *sealed_out = sr;
    else
        cohort__sealed_result__free_unpacked(sr, NULL);
    return rt;
}

/* ------------------------------------------------------------ queries */

/*
 * WHERE (age BETWEEN 25 AND 75 OR age IS NULL)
 *   AND (region IN ('north', 'south', 'northwest') OR sex = 'F')
 *   AND NOT (date < DATE '2026-02-01')
 */
static int q1_where(const struct fx_row *r)
{
    int age_ok = ref_is_null(r, FX_C_AGE) ? -1 : (r->age >= 25 && r->age <= 75);
    int in_ok = ref_is_null(r, FX_C_REGION)
                    ? -1
                    : (strcmp(r->region, "north") == 0 || strcmp(r->region, "south") == 0 ||
                       strcmp(r->region, "northwest") == 0);
    int sex_ok = ref_is_null(r, FX_C_SEX) ? -1 : strcmp(r->sex, "F") == 0;
    int date_early = ref_is_null(r, FX_C_DATE) ? -1 : r->date < FX_JAN1 + 31;
    return ref_and(ref_and(ref_or(age_ok, ref_is_null(r, FX_C_AGE)), ref_or(in_ok, sex_ok)),
                   ref_not(date_early));
}

static const struct fx_val q1_regions[] = {FVI_TEXT("north"), FVI_TEXT("south"),
                                           FVI_TEXT("northwest")};

static const struct fx_instr q1_where_prog[] = {
    FI_COL("age"),
    FI_CONST(FVI_INT(25)),
    FI_OP(GE),
    FI_COL("age"),
    FI_CONST(FVI_INT(75)),
    FI_OP(LE),
    FI_OP(AND),
    FI_COL("age"),
    FI_OP(IS_NULL),
    FI_OP(OR),
    FI_COL("region"),
    FI_IN(q1_regions, 3),
    FI_COL("sex"),
    FI_CONST(FVI_TEXT("F")),
    FI_OP(EQ),
    FI_OP(OR),
    FI_OP(AND),
    FI_COL("date"),
    FI_CONST(FVI_DATE(FX_JAN1 + 31)),
    FI_OP(LT),
    FI_OP(NOT),
    FI_OP(AND),
};

static const struct ref_query q1 = {
    .where = q1_where,
    .group = {FX_C_REGION, FX_C_SEX},
    .n_group = 2,
    .aggs = {{COHORT__AGG_FUNC__AGG_COUNT_STAR, -1},
             {COHORT__AGG_FUNC__AGG_COUNT, FX_C_HR},
             {COHORT__AGG_FUNC__AGG_SUM, FX_C_STEPS},
             {COHORT__AGG_FUNC__AGG_AVG, FX_C_WEIGHT},
             {COHORT__AGG_FUNC__AGG_MIN, FX_C_AGE},
             {COHORT__AGG_FUNC__AGG_MAX, FX_C_DATE},
             {COHORT__AGG_FUNC__AGG_COUNT_PARTICIPANTS, -1},
             {COHORT__AGG_FUNC__AGG_SUM, FX_C_WEIGHT},
             {COHORT__AGG_FUNC__AGG_MIN, FX_C_WEIGHT},
             {COHORT__AGG_FUNC__AGG_AVG, FX_C_STEPS},
             {COHORT__AGG_FUNC__AGG_COUNT, FX_C_AGE},
             {COHORT__AGG_FUNC__AGG_MAX, FX_C_HR},
             {COHORT__AGG_FUNC__AGG_SUM, FX_C_AGE},
             {COHORT__AGG_FUNC__AGG_MIN, FX_C_DATE},
             {COHORT__AGG_FUNC__AGG_MAX, FX_C_WEIGHT},
             {COHORT__AGG_FUNC__AGG_AVG, FX_C_HR}},
    .n_aggs = 16, /* TK_MAX_AGGS */
};

static void q1_spec(struct fx_plan_spec *s)
{
    spec_from_query(s, &q1);
    s->where = q1_where_prog;
    s->n_where = sizeof q1_where_prog / sizeof q1_where_prog[0];
    s->tuples = 8;
    s->max_groups = 16;
}

static void collection_then_two_levels_of_aggregation_match_the_plaintext_reference(void **state)
{
    static const size_t cuts[] = {0, 37, 87, 148, 193, 8 * N_TOKENS};
    static const unsigned aggs[] = {0, 7, 14, 21, 28};
    static const size_t feeds[] = {3, 4, 5, 6, 7};
    struct fx_plan_spec spec;
    struct fx_signed plan;
    struct fx_cts all = {0}, l1 = {0};
    struct ref_result *ref = fx_alloc(sizeof *ref);
    Cohort__ResultTable *rt;
    size_t p;
    (void)state;

    q1_spec(&spec);
    fx_plan_sign(&plan, &spec, &pop->w.researcher);
    ref_run(ref, &q1, N_TOKENS);
    /* The data must exercise both sides of WHERE, and several groups. */
    assert_true(ref->matching_tokens > 0 && ref->matching_tokens < N_TOKENS);
    assert_true(ref->n_out >= 6);

    collect_all(&all, &plan, 8);
    assert_int_equal(all.n, 8 * N_TOKENS);
    level1(&l1, &plan, &all, cuts, 5, aggs, feeds);
    /* Every partial has the same shape: nchunks chunks of one size. */
    assert_true(l1.n % 5 == 0 && l1.n / 5 >= 2);
    for (p = 0; p < l1.n; p++) {
        assert_int_equal(l1.v[p]->phase, COHORT__PHASE__PHASE_AGGREGATE);
        assert_int_equal(l1.v[p]->level, 1);
        assert_int_equal(l1.v[p]->partition, p / (l1.n / 5));
        assert_int_equal(l1.v[p]->chunk, p % (l1.n / 5));
        assert_int_equal(l1.v[p]->nchunks, l1.n / 5);
        assert_int_equal(l1.v[p]->key.len, 0);
        assert_int_equal(l1.v[p]->box.len, l1.v[0]->box.len);
    }
    rt = final_level(&plan, 35, 2, &l1, 3, NULL);
    compare_result(rt, ref, &q1);

    cohort__result_table__free_unpacked(rt, NULL);
    fx_cts_free(&all);
    fx_cts_free(&l1);
    fx_signed_free(&plan);
    free(ref);
}

/*
 * WHERE (region LIKE 'north%' OR heart_rate IS NULL) AND age IS NOT NULL
 * GROUP BY region HAVING COUNT(*) >= 10 OR MAX(heart_rate) < 80
 * with min_group_size 3: "northwest" (two tokens) is suppressed, and a
 * group whose MAX(heart_rate) is NULL fails HAVING (unknown is not true).
 */
static int q2_where(const struct fx_row *r)
{
    int like = ref_is_null(r, FX_C_REGION) ? -1 : strncmp(r->region, "north", 5) == 0;
    return ref_and(ref_or(like, ref_is_null(r, FX_C_HR)), !ref_is_null(r, FX_C_AGE));
}

static int q2_having(const struct fx_val *keys, const struct fx_val *aggs)
{
    int a = aggs[0].i >= 10;
    int b = aggs[3].type == COHORT__VALUE_TYPE__VT_NULL ? -1 : aggs[3].i < 80;
    (void)keys;
    return ref_or(a, b) == 1;
}

static const struct fx_instr q2_where_prog[] = {
    FI_COL("region"), FI_LIKE("north"), FI_COL("heart_rate"), FI_OP(IS_NULL),
    FI_OP(OR),        FI_COL("age"),    FI_OP(IS_NOT_NULL),   FI_OP(AND),
};

static const struct fx_instr q2_having_prog[] = {
    FI_AGG(0), FI_CONST(FVI_INT(10)), FI_OP(GE), FI_AGG(3), FI_CONST(FVI_INT(80)), FI_OP(LT),
    FI_OP(OR),
};

static const struct ref_query q2 = {
    .where = q2_where,
    .group = {FX_C_REGION},
    .n_group = 1,
    .aggs = {{COHORT__AGG_FUNC__AGG_COUNT_STAR, -1},
             {COHORT__AGG_FUNC__AGG_SUM, FX_C_WEIGHT},
             {COHORT__AGG_FUNC__AGG_MIN, FX_C_WEIGHT},
             {COHORT__AGG_FUNC__AGG_MAX, FX_C_HR},
             {COHORT__AGG_FUNC__AGG_COUNT_PARTICIPANTS, -1},
             {COHORT__AGG_FUNC__AGG_AVG, FX_C_HR}},
    .n_aggs = 6,
    .having = q2_having,
    .min_group_size = 3,
};

static void three_levels_apply_having_and_suppress_small_groups(void **state)
{
    static const size_t cuts[] = {0, 30, 61, 100, 4 * N_TOKENS};
    static const unsigned aggs[] = {1, 2, 3, 4};
    static const size_t feeds[] = {2, 5, 8, 3};
    struct fx_plan_spec spec;
    struct fx_signed plan;
    struct fx_cts all = {0}, l1 = {0}, l2 = {0};
    struct ref_result *ref = fx_alloc(sizeof *ref);
    Cohort__ResultTable *rt;
    size_t per;
    (void)state;

    spec_from_query(&spec, &q2);
    spec.where = q2_where_prog;
    spec.n_where = sizeof q2_where_prog / sizeof q2_where_prog[0];
    spec.having = q2_having_prog;
    spec.n_having = sizeof q2_having_prog / sizeof q2_having_prog[0];
    spec.tuples = 4;
    spec.max_groups = 8;
    fx_plan_sign(&plan, &spec, &pop->w.researcher);
    ref_run(ref, &q2, N_TOKENS);
    assert_true(ref->suppressed >= 1);
    assert_true(ref->removed_by_having >= 1);
    assert_true(ref->n_out >= 1);

    collect_all(&all, &plan, 4);
    level1(&l1, &plan, &all, cuts, 4, aggs, feeds);
    per = l1.n / 4;
    /* Level 2: two intermediate partitions of two level-1 partials each. */
    assert_int_equal(fx_aggregate(&pop->tokens[5], FX_NOW + 15, plan.sp, 2, 0, false, l1.v, 2 * per,
                                  1, &l2, NULL),
                     TK_OK);
    assert_int_equal(fx_aggregate(&pop->tokens[6], FX_NOW + 15, plan.sp, 2, 1, false,
                                  l1.v + 2 * per, 2 * per, 4, &l2, NULL),
                     TK_OK);
    rt = final_level(&plan, 9, 3, &l2, 2, NULL);
    compare_result(rt, ref, &q2);

    cohort__result_table__free_unpacked(rt, NULL);
    fx_cts_free(&all);
    fx_cts_free(&l1);
    fx_cts_free(&l2);
    fx_signed_free(&plan);
    free(ref);
}

/* WHERE sex IS NULL OR steps > 15000, no GROUP BY: one global group. */
static int q3_where(const struct fx_row *r)
{
    int big = ref_is_null(r, FX_C_STEPS) ? -1 : r->steps > 15000;
    return ref_or(ref_is_null(r, FX_C_SEX), big);
}

static const struct fx_instr q3_where_prog[] = {
    FI_COL("sex"), FI_OP(IS_NULL), FI_COL("steps"), FI_CONST(FVI_INT(15000)), FI_OP(GT), FI_OP(OR),
};

static const struct ref_query q3 = {
    .where = q3_where,
    .n_group = 0,
    .aggs = {{COHORT__AGG_FUNC__AGG_COUNT_STAR, -1},
             {COHORT__AGG_FUNC__AGG_AVG, FX_C_HR},
             {COHORT__AGG_FUNC__AGG_MIN, FX_C_DATE},
             {COHORT__AGG_FUNC__AGG_MAX, FX_C_WEIGHT},
             {COHORT__AGG_FUNC__AGG_COUNT_PARTICIPANTS, -1},
             {COHORT__AGG_FUNC__AGG_COUNT, FX_C_STEPS}},
    .n_aggs = 6,
};

static void q3_spec(struct fx_plan_spec *s, uint32_t min_participants)
{
    spec_from_query(s, &q3);
    s->where = q3_where_prog;
    s->n_where = sizeof q3_where_prog / sizeof q3_where_prog[0];
    s->tuples = 1;
    s->max_groups = 1;
    s->min_participants = min_participants;
}

static void a_query_without_group_by_is_one_global_group(void **state)
{
    static const size_t cuts[] = {0, 11, N_TOKENS};
    static const unsigned aggs[] = {12, 13};
    static const size_t feeds[] = {4, 9};
    struct fx_plan_spec spec;
    struct fx_signed plan;
    struct fx_cts all = {0}, l1 = {0};
    struct ref_result *ref = fx_alloc(sizeof *ref);
    Cohort__ResultTable *rt;
    (void)state;

    q3_spec(&spec, N_TOKENS);
    fx_plan_sign(&plan, &spec, &pop->w.researcher);
    ref_run(ref, &q3, N_TOKENS);
    assert_int_equal(ref->n_out, 1);
    collect_all(&all, &plan, 1);
    level1(&l1, &plan, &all, cuts, 2, aggs, feeds);
    rt = final_level(&plan, 14, 2, &l1, 1, NULL);
    compare_result(rt, ref, &q3);

    cohort__result_table__free_unpacked(rt, NULL);
    fx_cts_free(&all);
    fx_cts_free(&l1);
    fx_signed_free(&plan);
    free(ref);
}

static void fewer_participants_than_min_participants_yield_no_result(void **state)
{
    static const size_t cuts[] = {0, 20, N_TOKENS};
    static const unsigned aggs[] = {15, 16};
    static const size_t feeds[] = {6, 6};
    struct fx_plan_spec spec;
    struct fx_signed plan;
    struct fx_cts all = {0}, l1 = {0};
    uint8_t session[TK_SESSION_ID_LEN];
    Cohort__TokenResponse *r;
    size_t i;
    (void)state;

    q3_spec(&spec, N_TOKENS + 1);
    fx_plan_sign(&plan, &spec, &pop->w.researcher);
    collect_all(&all, &plan, 1);
    level1(&l1, &plan, &all, cuts, 2, aggs, feeds);
    assert_int_equal(fx_agg_begin(&pop->tokens[17], FX_NOW + 20, plan.sp, 2, 0, true, session),
                     TK_OK);
    for (i = 0; i < l1.n; i++)
        assert_int_equal(fx_agg_feed(&pop->tokens[17], FX_NOW + 20, session, &l1.v[i], 1), TK_OK);
    assert_int_equal(fx_agg_end(&pop->tokens[17], FX_NOW + 20, session, &r), TK_ERR_TOO_FEW);
    assert_null(r->output);
    cohort__token_response__free_unpacked(r, NULL);
    /* The session is over. */
    assert_int_equal(fx_agg_end(&pop->tokens[17], FX_NOW + 20, session, NULL), TK_ERR_SESSION);

    fx_cts_free(&all);
    fx_cts_free(&l1);
    fx_signed_free(&plan);
}

/* GROUP BY sex over every row: NULL is a group of its own. */
static const struct ref_query q4 = {
    .where = NULL,
    .group = {FX_C_SEX},
    .n_group = 1,
    .aggs = {{COHORT__AGG_FUNC__AGG_COUNT_STAR, -1},
             {COHORT__AGG_FUNC__AGG_SUM, FX_C_STEPS},
             {COHORT__AGG_FUNC__AGG_COUNT_PARTICIPANTS, -1}},
    .n_aggs = 3,
};

static void a_single_final_partition_over_all_tuples_groups_nulls_together(void **state)
{
    struct fx_plan_spec spec;
    struct fx_signed plan;
    struct fx_cts all = {0};
    struct ref_result *ref = fx_alloc(sizeof *ref);
    Cohort__SealedResult *sr = NULL;
    Cohort__ResultTable *rt;
    size_t i;
    bool null_group = false;
    (void)state;

    spec_from_query(&spec, &q4);
    spec.tuples = 3;
    spec.max_groups = 3;
    fx_plan_sign(&plan, &spec, &pop->w.researcher);
    ref_run(ref, &q4, N_TOKENS);
    for (i = 0; i < ref->n_out; i++)
        null_group |= ref->out[i][0].type == COHORT__VALUE_TYPE__VT_NULL;
    assert_true(null_group);
    collect_all(&all, &plan, 3);
    assert_int_equal(fx_aggregate(&pop->tokens[18], FX_NOW + 20, plan.sp, 1, 0, true, all.v, all.n,
                                  10, NULL, &sr),
                     TK_OK);
    rt = fx_open_result(sr, &pop->w, plan.query_id);
    compare_result(rt, ref, &q4);

    cohort__result_table__free_unpacked(rt, NULL);
    cohort__sealed_result__free_unpacked(sr, NULL);
    fx_cts_free(&all);
    fx_signed_free(&plan);
    free(ref);
}

/*
 * HAVING sex IN ('F', 'X') OR sex IS NULL OR sex LIKE 'Z%': text constants
 * of HAVING are kept in the session's RAM from AggBegin to AggEnd, across
 * many feeds that reuse the scratch RAM they were decoded in.
 */
static int q4h_having(const struct fx_val *keys, const struct fx_val *aggs)
{
    (void)aggs;
    if (keys[0].type == COHORT__VALUE_TYPE__VT_NULL)
        return 1;
    return strcmp(keys[0].s, "F") == 0 || strcmp(keys[0].s, "X") == 0 || keys[0].s[0] == 'Z';
}

static const struct fx_val q4h_list[] = {FVI_TEXT("F"), FVI_TEXT("X")};

static const struct fx_instr q4h_having_prog[] = {
    FI_COL("sex"), FI_IN(q4h_list, 2), FI_COL("sex"), FI_OP(IS_NULL),
    FI_OP(OR),     FI_COL("sex"),      FI_LIKE("Z"),  FI_OP(OR),
};

static void a_having_on_a_text_group_column_survives_a_long_session(void **state)
{
    struct ref_query q = q4;
    struct fx_plan_spec spec;
    struct fx_signed plan;
    struct fx_cts all = {0};
    struct ref_result *ref = fx_alloc(sizeof *ref);
    Cohort__SealedResult *sr = NULL;
    Cohort__ResultTable *rt;
    (void)state;

    q.having = q4h_having;
    spec_from_query(&spec, &q);
    spec.having = q4h_having_prog;
    spec.n_having = sizeof q4h_having_prog / sizeof q4h_having_prog[0];
    spec.tuples = 3;
    spec.max_groups = 3;
    fx_plan_sign(&plan, &spec, &pop->w.researcher);
    ref_run(ref, &q, N_TOKENS);
    assert_int_equal(ref->n_out, 2);
    assert_int_equal(ref->removed_by_having, 1);
    collect_all(&all, &plan, 3);
    assert_int_equal(fx_aggregate(&pop->tokens[19], FX_NOW + 20, plan.sp, 1, 0, true, all.v, all.n,
                                  3, NULL, &sr),
                     TK_OK);
    rt = fx_open_result(sr, &pop->w, plan.query_id);
    compare_result(rt, ref, &q);

    cohort__result_table__free_unpacked(rt, NULL);
    cohort__sealed_result__free_unpacked(sr, NULL);
    fx_cts_free(&all);
    fx_signed_free(&plan);
    free(ref);
}

/*
 * A partition far larger than the token's RAM: one token with the minimum
 * arena aggregates every tuple of the population, and another merges the
 * resulting chunks, both streaming through TK_ARENA_MIN bytes, for a plan
 * with the most aggregates a plan may have (each partial chunk then holds
 * the largest groups there are).
 */
static void a_partition_larger_than_the_arena_still_aggregates_correctly(void **state)
{
    struct fx_plan_spec spec;
    struct fx_signed plan;
    struct fx_cts all = {0}, l1 = {0};
    struct ref_result *ref = fx_alloc(sizeof *ref);
    struct fx_token small[2];
    Cohort__SealedResult *sr = NULL;
    Cohort__ResultTable *rt;
    size_t i, bytes = 0;
    (void)state;

    for (i = 0; i < 2; i++) {
        fx_token_init(&small[i], TK_ARENA_MIN);
        fx_provision(&small[i], &pop->w, i ? "small-b" : "small-a");
    }
    q1_spec(&spec);
    fx_plan_sign(&plan, &spec, &pop->w.researcher);
    ref_run(ref, &q1, N_TOKENS);
    collect_all(&all, &plan, 8);
    for (i = 0; i < all.n; i++)
        bytes += cohort__ciphertext__get_packed_size(all.v[i]);
    assert_true(bytes > 4 * TK_ARENA_MIN);

    assert_int_equal(
        fx_aggregate(&small[0], FX_NOW + 10, plan.sp, 1, 0, false, all.v, all.n, 16, &l1, NULL),
        TK_OK);
    assert_true(small[0].max_peak <= TK_ARENA_MIN);
    assert_true(l1.n >= 2);
    assert_int_equal(
        fx_aggregate(&small[1], FX_NOW + 20, plan.sp, 2, 0, true, l1.v, l1.n, 1, NULL, &sr), TK_OK);
    assert_true(small[1].max_peak <= TK_ARENA_MIN);
    rt = fx_open_result(sr, &pop->w, plan.query_id);
    compare_result(rt, ref, &q1);

    cohort__result_table__free_unpacked(rt, NULL);
    cohort__sealed_result__free_unpacked(sr, NULL);
    fx_cts_free(&all);
    fx_cts_free(&l1);
    fx_signed_free(&plan);
    for (i = 0; i < 2; i++)
        fx_token_free(&small[i]);
    free(ref);
}

/* ------------------------------------------- small hand-made datasets */

/* Tokens of their own, each with the rows given. */
static void small_tokens(struct fx_token *t, size_t n, const struct fx_row *const *rows,
                         const size_t *n_rows)
{
    size_t i;
    char subject[32];
    for (i = 0; i < n; i++) {
        fx_token_init(&t[i], TK_ARENA_DEFAULT);
        snprintf(subject, sizeof subject, "hand-%zu", i);
        fx_provision(&t[i], &pop->w, subject);
        assert_int_equal(fx_load_health(&t[i], rows[i], n_rows[i]), TK_OK);
    }
}

/* Collect on every token, then one final level-1 partition on the first. */
static int run_single_partition(Cohort__ResultTable **out, struct fx_token *t, size_t n,
                                const struct fx_plan_spec *spec)
{
    struct fx_signed plan;
    struct fx_cts all = {0};
    Cohort__SealedResult *sr = NULL;
    size_t i;
    int rc = TK_OK;

    fx_plan_sign(&plan, spec, &pop->w.researcher);
    for (i = 0; i < n && rc == TK_OK; i++)
        rc = fx_collect_into(&t[i], FX_NOW, plan.sp, &all);
    fx_cts_sort(&all);
    if (rc == TK_OK)
        rc = fx_aggregate(&t[0], FX_NOW + 5, plan.sp, 1, 0, true, all.v, all.n, 2, NULL, &sr);
    if (rc == TK_OK) {
        *out = fx_open_result(sr, &pop->w, plan.query_id);
        cohort__sealed_result__free_unpacked(sr, NULL);
    }
    fx_cts_free(&all);
    fx_signed_free(&plan);
    return rc;
}

/* Find the result row whose first n_keys values equal keys; NULL if none. */
static const Cohort__Row *find_row(const Cohort__ResultTable *rt, const struct fx_val *keys,
                                   size_t n_keys)
{
    size_t i, k;
    char text[8][80];
    for (i = 0; i < rt->n_rows; i++) {
        for (k = 0; k < n_keys; k++) {
            struct fx_val v = pb_val(rt->rows[i]->values[k], text[k], sizeof text[k]);
            if (!val_equal(&v, &keys[k]))
                break;
        }
        if (k == n_keys)
            return rt->rows[i];
    }
    return NULL;
}

static void expect_row(const Cohort__ResultTable *rt, const struct fx_val *want, size_t n_keys,
                       size_t width)
{
    const Cohort__Row *row = find_row(rt, want, n_keys);
    char text[80];
    size_t k;
    assert_non_null(row);
    assert_int_equal(row->n_values, width);
    for (k = n_keys; k < width; k++) {
        struct fx_val got = pb_val(row->values[k], text, sizeof text);
        if (!val_equal(&got, &want[k]))
            fail_msg("value %zu: got type %d i %lld d %g, want type %d i %lld d %g", k, got.type,
                     (long long)got.i, got.d, want[k].type, (long long)want[k].i, want[k].d);
    }
}

/*
 * Group keys of every kind (DECIMAL, DATE, NULL), negative values, a WHERE
 * comparing a DECIMAL column with a constant of another scale, and a
 * HAVING on a group column and on an AVG (a DOUBLE) with NULL semantics.
 * Worked out by hand:
 *   (65.5, Jan 11): rows of tokens 0, 0, 2: COUNT 3, SUM(steps) -100+200+5,
 *                   MIN(steps) -100, AVG(hr) (60+100)/2, MAX(age) 51
 *   (NULL, Jan 11): token 1:                COUNT 1, 50, 50, 70, 40
 *   (70.0, Jan 21): tokens 1 and 2:         COUNT 2, 1300, 300, 85, 50
 * HAVING weight <> 70.0 OR AVG(heart_rate) >= 85.0 keeps the first and the
 * last: for the NULL key it is unknown OR false, which is not true. Then
 * the same plan over a catalog listing the columns in another order, and a
 * WHERE that matches no row at all.
 */
static const struct fx_row hand0[] = {
    {1, 30, "F", "north", FX_JAN1 + 10, -100, 60, 655, 0},
    {1, 31, "F", "north", FX_JAN1 + 10, 200, 0, 655, FX_NULL(FX_C_HR)},
};
static const struct fx_row hand1[] = {
    {2, 40, "M", "south", FX_JAN1 + 10, 50, 70, 0, FX_NULL(FX_C_WEIGHT)},
    {2, 41, "M", "south", FX_JAN1 + 20, 300, 80, 700, 0},
};
static const struct fx_row hand2[] = {
    {3, 50, "F", "east", FX_JAN1 + 20, 1000, 90, 700, 0},
    {3, 51, NULL, "east", FX_JAN1 + 10, 5, 100, 655, FX_NULL(FX_C_SEX)},
    {3, 52, "F", "east", FX_JAN1 + 10, 7, 100, 640, 0}, /* 64.0 < 65.50: not kept */
};

static void group_keys_of_every_type_and_having_follow_sql(void **state)
{
    static const struct fx_instr where[] = {
        FI_COL("weight"), FI_CONST(FVI_DEC(6550, 2)), FI_OP(GE), FI_COL("weight"), FI_OP(IS_NULL),
        FI_OP(OR),
    };
    static const struct fx_instr having[] = {
        FI_COL("weight"), FI_CONST(FVI_DEC(700, 1)),  FI_OP(NE),
        FI_AGG(3),        FI_CONST(FVI_DOUBLE(85.0)), FI_OP(GE),
        FI_OP(OR),
    };
    const struct fx_row *const rows[] = {hand0, hand1, hand2};
    const size_t n_rows[] = {2, 2, 3};
    const struct fx_val want[3][7] = {
        {FVI_DEC(655, 1), FVI_DATE(FX_JAN1 + 10), FVI_INT(3), FVI_INT(105), FVI_INT(-100),
         FVI_DOUBLE(80.0), FVI_INT(51)},
        {FVI_NULL, FVI_DATE(FX_JAN1 + 10), FVI_INT(1), FVI_INT(50), FVI_INT(50), FVI_DOUBLE(70.0),
         FVI_INT(40)},
        {FVI_DEC(700, 1), FVI_DATE(FX_JAN1 + 20), FVI_INT(2), FVI_INT(1300), FVI_INT(300),
         FVI_DOUBLE(85.0), FVI_INT(50)},
    };
    static const struct fx_instr nothing[] = {FI_COL("age"), FI_CONST(FVI_INT(200)), FI_OP(GT)};
    struct fx_token t[3];
    struct fx_plan_spec spec;
    struct fx_schema reordered;
    Cohort__ResultTable *rt;
    size_t i;
    (void)state;

    small_tokens(t, 3, rows, n_rows);
    fx_plan_default(&spec);
    spec.group_by[0] = "weight";
    spec.group_by[1] = "date";
    spec.n_group = 2;
    spec.aggs[0] = (struct fx_agg){COHORT__AGG_FUNC__AGG_COUNT_STAR, NULL};
    spec.aggs[1] = (struct fx_agg){COHORT__AGG_FUNC__AGG_SUM, "steps"};
    spec.aggs[2] = (struct fx_agg){COHORT__AGG_FUNC__AGG_MIN, "steps"};
    spec.aggs[3] = (struct fx_agg){COHORT__AGG_FUNC__AGG_AVG, "heart_rate"};
    spec.aggs[4] = (struct fx_agg){COHORT__AGG_FUNC__AGG_MAX, "age"};
    spec.n_aggs = 5;
    spec.where = where;
    spec.n_where = sizeof where / sizeof where[0];
    spec.tuples = 3;
    spec.max_groups = 8;

    assert_int_equal(run_single_partition(&rt, t, 3, &spec), TK_OK);
    assert_int_equal(rt->n_rows, 3);
    assert_int_equal(rt->participants, 3);
    assert_int_equal(rt->columns[0]->type, COHORT__VALUE_TYPE__VT_DECIMAL);
    assert_int_equal(rt->columns[0]->scale, 1);
    assert_int_equal(rt->columns[1]->type, COHORT__VALUE_TYPE__VT_DATE);
    for (i = 0; i < 3; i++)
        expect_row(rt, want[i], 2, 7);
    cohort__result_table__free_unpacked(rt, NULL);

    /* With HAVING (every plan is a new query: the same tokens may serve). */
    spec.having = having;
    spec.n_having = sizeof having / sizeof having[0];
    assert_int_equal(run_single_partition(&rt, t, 3, &spec), TK_OK);
    assert_int_equal(rt->n_rows, 2);
    assert_int_equal(rt->groups_suppressed, 0);
    expect_row(rt, want[0], 2, 7);
    expect_row(rt, want[2], 2, 7);
    assert_null(find_row(rt, want[1], 2));
    cohort__result_table__free_unpacked(rt, NULL);

    /* The plan's catalog may list the columns in another order than the
     * tokens' tables: columns are matched by name. */
    fx_health_schema(&reordered);
    for (i = 0; i < FX_NCOLS; i++)
        reordered.ptrs[i] = &reordered.cols[FX_NCOLS - 1 - i];
    spec.schema = &reordered.s;
    spec.n_having = 0;
    assert_int_equal(run_single_partition(&rt, t, 3, &spec), TK_OK);
    assert_int_equal(rt->n_rows, 3);
    for (i = 0; i < 3; i++)
        expect_row(rt, want[i], 2, 7);
    cohort__result_table__free_unpacked(rt, NULL);

    /* A WHERE that nothing matches: no group, yet every token took part. */
    spec.schema = NULL;
    spec.where = nothing;
    spec.n_where = sizeof nothing / sizeof nothing[0];
    assert_int_equal(run_single_partition(&rt, t, 3, &spec), TK_OK);
    assert_int_equal(rt->n_rows, 0);
    assert_int_equal(rt->participants, 3);
    assert_int_equal(rt->n_columns, 7);
    cohort__result_table__free_unpacked(rt, NULL);
    for (i = 0; i < 3; i++)
        fx_token_free(&t[i]);
}

/*
 * A table loaded in many batches, in many store records, whose decoded
 * rows take several times the arena, is scanned whole, record by record.
 */
static void a_table_spanning_many_store_records_is_scanned_whole(void **state)
{
    enum { N = 600, BATCH = 40 };
    struct fx_row *rows = fx_alloc(N * sizeof *rows);
    struct fx_token t;
    struct fx_plan_spec spec;
    Cohort__ResultTable *rt;
    int64_t sum = 0, max_date = 0;
    size_t i, n_weight = 0;
    struct fx_val want[4];
    (void)state;

    for (i = 0; i < N; i++) {
        size_t n = fx_gen_rows(&rows[i], 1, 1); /* token 1 has exactly one row */
        assert_int_equal(n, 1);
        rows[i].steps = (int64_t)(i * 37 % 1000);
        rows[i].date = FX_JAN1 + (int64_t)(i % 200);
        rows[i].nulls = i % 3 == 0 ? FX_NULL(FX_C_WEIGHT) : 0;
        sum += rows[i].steps;
        n_weight += i % 3 != 0;
        if (rows[i].date > max_date)
            max_date = rows[i].date;
    }
    fx_token_init(&t, TK_ARENA_DEFAULT);
    fx_provision(&t, &pop->w, "big-table");
    for (i = 0; i < N; i += BATCH)
        assert_int_equal(fx_load_health(&t, rows + i, BATCH), TK_OK);
    assert_true(fx_flash_size(&t) > TK_ARENA_DEFAULT / 2);

    fx_plan_default(&spec);
    spec.n_group = 0;
    spec.aggs[0] = (struct fx_agg){COHORT__AGG_FUNC__AGG_COUNT_STAR, NULL};
    spec.aggs[1] = (struct fx_agg){COHORT__AGG_FUNC__AGG_SUM, "steps"};
    spec.aggs[2] = (struct fx_agg){COHORT__AGG_FUNC__AGG_COUNT, "weight"};
    spec.aggs[3] = (struct fx_agg){COHORT__AGG_FUNC__AGG_MAX, "date"};
    spec.n_aggs = 4;
    spec.tuples = 1;
    want[0] = FV_INT(N);
    want[1] = FV_INT(sum);
    want[2] = FV_INT((int64_t)n_weight);
    want[3] = FV_DATE(max_date);
    assert_int_equal(run_single_partition(&rt, &t, 1, &spec), TK_OK);
    assert_int_equal(rt->n_rows, 1);
    expect_row(rt, want, 0, 4);
    cohort__result_table__free_unpacked(rt, NULL);
    fx_token_free(&t);
    free(rows);
}

/*
 * Whatever batch of rows a token accepts, it can scan again later: the
 * largest LoadTable its RAM decodes leaves a record that a collection, and
 * the next loads (which scan the table's records for its schema), can
 * still read. Otherwise one accepted load would lock the owner's table
 * for good.
 */
static void every_batch_a_token_accepts_can_be_collected_and_added_to(void **state)
{
    static const size_t sizes[] = {TK_ARENA_MIN, TK_ARENA_DEFAULT};
    struct fx_row *rows = fx_alloc(512 * sizeof *rows);
    struct fx_plan_spec spec;
    struct fx_signed plan;
    size_t k, i, n;
    (void)state;

    for (i = 0; i < 512; i++)
        fx_gen_rows(&rows[i], 1, 1);
    fx_plan_default(&spec);
    fx_plan_sign(&plan, &spec, &pop->w.researcher);
    for (k = 0; k < 2; k++) {
        struct fx_token t;
        /* The largest batch this RAM accepts, by doubling then stepping. */
        size_t ok = 0, step;
        for (step = 256; step > 0; step /= 2) {
            fx_token_init(&t, sizes[k]);
            fx_provision(&t, &pop->w, "batch");
            if (ok + step <= 512 && fx_load_health(&t, rows, ok + step) == TK_OK)
                ok += step;
            fx_token_free(&t);
        }
        n = ok;
        assert_true(n >= 4);
        fx_token_init(&t, sizes[k]);
        fx_provision(&t, &pop->w, "batch");
        assert_int_equal(fx_load_health(&t, rows, n), TK_OK);
        if (fx_collect(&t, FX_NOW, plan.sp, NULL) != TK_OK)
            fail_msg("arena %zu: a load of %zu rows was accepted but cannot be collected", sizes[k],
                     n);
        if (fx_load_health(&t, rows, n / 2) != TK_OK)
            fail_msg("arena %zu: after a load of %zu rows, %zu more cannot be added", sizes[k], n,
                     n / 2);
        assert_int_equal(fx_collect(&t, FX_NOW, plan.sp, NULL), TK_OK);
        assert_true(t.max_peak <= sizes[k]);
        fx_token_free(&t);
    }
    fx_signed_free(&plan);
    free(rows);
}

/* SUM never wraps: a token's own sum, or a merge of two tokens' sums. */
static void sums_that_overflow_int64_are_refused_not_wrapped(void **state)
{
    struct fx_row big[2];
    const struct fx_row *const rows[] = {big, big + 1};
    const size_t one[] = {1, 1};
    struct fx_token t[2];
    struct fx_plan_spec spec;
    struct fx_signed plan;
    struct fx_cts all = {0};
    size_t i;
    (void)state;

    fx_gen_rows(big, 1, 1);
    big[0].steps = INT64_MAX / 2 + 1;
    big[0].nulls = 0;
    big[1] = big[0];
    fx_plan_default(&spec);
    spec.n_group = 0;
    spec.tuples = 1;
    fx_plan_sign(&plan, &spec, &pop->w.researcher);

    /* Two rows on one token: the token's own pre-aggregation overflows. */
    fx_token_init(&t[0], TK_ARENA_DEFAULT);
    fx_provision(&t[0], &pop->w, "overflow-a");
    assert_int_equal(fx_load_health(&t[0], big, 2), TK_OK);
    assert_int_equal(fx_collect(&t[0], FX_NOW, plan.sp, NULL), TK_ERR_OVERFLOW);
    fx_token_free(&t[0]);

    /* One row on each of two tokens: the merge overflows. */
    small_tokens(t, 2, rows, one);
    for (i = 0; i < 2; i++)
        assert_int_equal(fx_collect_into(&t[i], FX_NOW, plan.sp, &all), TK_OK);
    fx_cts_sort(&all);
    assert_int_equal(fx_aggregate(&t[0], FX_NOW, plan.sp, 1, 0, true, all.v, all.n, 1, NULL, NULL),
                     TK_ERR_OVERFLOW);
    for (i = 0; i < 2; i++)
        fx_token_free(&t[i]);
    fx_cts_free(&all);
    fx_signed_free(&plan);
}

/*
 * Differential privacy: the noise is a function of the exact input, so
 * two tokens that finalize the same partition seal the same table (the
 * service cannot average independent draws), while another query over the
 * same rows gets other noise. The table states its noise.
 */
static void tokens_finalizing_the_same_input_under_dp_draw_the_same_noise(void **state)
{
    struct fx_plan_spec spec;
    struct fx_signed plan, other;
    struct fx_cts all = {0}, all2 = {0};
    Cohort__SealedResult *sr = NULL;
    Cohort__ResultTable *rt[3];
    size_t i, k, differ = 0;
    (void)state;

    spec_from_query(&spec, &q4); /* GROUP BY sex: COUNT(*), SUM(steps), participants */
    spec.tuples = 3;
    spec.max_groups = 3;
    spec.epsilon = 1.0;
    spec.max_rows = 2;
    spec.contribution_bound = 20000;
    spec.min_group_size = 0; /* every group: this test looks at the noise, not the threshold */
    fx_plan_sign(&plan, &spec, &pop->w.researcher);
    collect_all(&all, &plan, 3);
    for (i = 0; i < 2; i++) {
        assert_int_equal(fx_aggregate(&pop->tokens[20 + i], FX_NOW + 20, plan.sp, 1, 0, true, all.v,
                                      all.n, 7 + i, NULL, &sr),
                         TK_OK);
        rt[i] = fx_open_result(sr, &pop->w, plan.query_id);
        cohort__sealed_result__free_unpacked(sr, NULL);
    }
    fx_plan_sign(&other, &spec, &pop->w.researcher);
    collect_all(&all2, &other, 3);
    assert_int_equal(fx_aggregate(&pop->tokens[22], FX_NOW + 20, other.sp, 1, 0, true, all2.v,
                                  all2.n, 9, NULL, &sr),
                     TK_OK);
    rt[2] = fx_open_result(sr, &pop->w, other.query_id);
    cohort__sealed_result__free_unpacked(sr, NULL);

    for (i = 0; i < 3; i++) {
        assert_true(rt[i]->epsilon == 1.0);
        assert_non_null(strstr(rt[i]->mechanism, "epsilon/4 per quantity"));
        assert_int_equal(rt[i]->n_error_bound, 4);
        assert_true(rt[i]->error_bound[0] == 0.0); /* sex: a group column */
        for (k = 1; k < 4; k++)
            assert_true(rt[i]->error_bound[k] > 0);
        assert_true(rt[i]->error_confidence == 0.95);
        assert_int_equal(rt[i]->groups_suppressed, 0);
        assert_int_equal(rt[i]->participants, N_TOKENS);
    }
    assert_int_equal(rt[0]->n_rows, rt[1]->n_rows);
    for (i = 0; i < rt[0]->n_rows; i++)
        for (k = 0; k < 4; k++) {
            const Cohort__Value *a = rt[0]->rows[i]->values[k], *b = rt[1]->rows[i]->values[k];
            assert_int_equal(a->type, b->type);
            assert_int_equal(a->i, b->i);
        }
    for (i = 0; i < rt[0]->n_rows && i < rt[2]->n_rows; i++)
        for (k = 1; k < 4; k++)
            differ += rt[0]->rows[i]->values[k]->i != rt[2]->rows[i]->values[k]->i;
    assert_true(differ > 0);

    for (i = 0; i < 3; i++)
        cohort__result_table__free_unpacked(rt[i], NULL);
    fx_cts_free(&all);
    fx_cts_free(&all2);
    fx_signed_free(&plan);
    fx_signed_free(&other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(collection_then_two_levels_of_aggregation_match_the_plaintext_reference),
        cmocka_unit_test(three_levels_apply_having_and_suppress_small_groups),
        cmocka_unit_test(a_query_without_group_by_is_one_global_group),
        cmocka_unit_test(fewer_participants_than_min_participants_yield_no_result),
        cmocka_unit_test(a_single_final_partition_over_all_tuples_groups_nulls_together),
        cmocka_unit_test(a_having_on_a_text_group_column_survives_a_long_session),
        cmocka_unit_test(a_partition_larger_than_the_arena_still_aggregates_correctly),
        cmocka_unit_test(group_keys_of_every_type_and_having_follow_sql),
        cmocka_unit_test(a_table_spanning_many_store_records_is_scanned_whole),
        cmocka_unit_test(every_batch_a_token_accepts_can_be_collected_and_added_to),
        cmocka_unit_test(sums_that_overflow_int64_are_refused_not_wrapped),
        cmocka_unit_test(tokens_finalizing_the_same_input_under_dp_draw_the_same_noise),
    };
    return cmocka_run_group_tests(tests, population_setup, population_teardown);
}
