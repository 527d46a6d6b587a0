/*
 * The grouping protocols beyond s_agg (rnf_noise, c_noise, ed_hist and
 * shuffle), driven stage by stage as a coordinator lays the work out, and
 * checked against a plaintext reference.
 *
 * This file plays the querier service by hand: every token of a small
 * population collects; the service lists the contributors' pseudonyms in
 * order for STAGE_KEYS, mixes the shuffle's ciphertexts in batches for
 * STAGE_SHUFFLE, groups tagged tuples by their det tag for STAGE_TAGGED,
 * and hands the keys' root and every tagged partial to a STAGE_FINAL task.
 * The researcher opens the sealed result, which must equal what plain C
 * computes from the same rows (the reference shares no code with the
 * token: WHERE and HAVING are C expressions, aggregates are loops).
 *
 * The hostile cases are the service misbehaving, one way per row of a
 * table, each refused with its exact code at the exact call (AggBegin, a
 * feed, or AggEnd), after which the token's state is as it was and the
 * correct task on the same token, level and partition succeeds. Nothing
 * here reads the token's keys: tags are compared with each other only,
 * and what the tokens emit is judged through what the next stage and the
 * researcher accept.
 */
#include "tk_fixture.h"

#include <math.h>

#define N_TOKENS 12
#define N_SMALL 8
#define MAX_ROWS 8
#define MAX_PARTS 4
#define MAX_BATCHES 4
#define MAX_ROUNDS 3
#define MAX_TAGS 128

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
        snprintf(subject, sizeof subject, "stage-%02u", i);
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

static int ref_is_null(const struct fx_row *r, int c)
{
    return (r->nulls & FX_NULL(c)) != 0;
}

static int ref_or(int a, int b)
{
    return (a == 1 || b == 1) ? 1 : (a < 0 || b < 0) ? -1 : 0;
}

struct ref_agg {
    int func;
    int col; /* -1: COUNT(*), COUNT(DISTINCT participant) */
};

struct ref_query {
    int (*where)(const struct fx_row *r); /* 1 keeps the row; NULL: every row */
    int group[2];
    size_t n_group;
    struct ref_agg aggs[16];
    size_t n_aggs;
    int (*having)(const struct fx_val *keys, const struct fx_val *aggs); /* NULL: none */
    uint32_t min_group_size;
};

struct ref_state {
    int64_t count, sum, min, max;
    uint64_t tokens;
};

struct ref_group {
    struct fx_val key[2];
    struct ref_state s[16];
    uint64_t tokens; /* bit t: token t has a row in this group */
};

struct ref_result {
    struct ref_group groups[64];
    size_t n_groups;
    struct fx_val out[64][18];
    size_t n_out;
    uint64_t suppressed;
    uint64_t removed_by_having;
    uint64_t participants;
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

static struct fx_val ref_final(const struct ref_agg *a, const struct ref_state *s)
{
    struct fx_val v;
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
        if (a->col == FX_C_WEIGHT)
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

/* Run the query in plain C over the rows of the tokens in mask. */
static void ref_run(struct ref_result *res, const struct ref_query *q, uint64_t mask)
{
    unsigned t;
    size_t i, g, k;

    memset(res, 0, sizeof *res);
    res->participants = (uint64_t)popcount64(mask);
    for (t = 0; t < N_TOKENS; t++) {
        if (!(mask & (1ull << t)))
            continue;
        for (i = 0; i < pop->n_rows[t]; i++) {
            const struct fx_row *r = &pop->rows[t][i];
            struct fx_val key[2] = {FVI_NULL, FVI_NULL};
            if (q->where != NULL && q->where(r) != 1)
                continue;
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

/* A decrypted ResultTable against the reference, row by row. */
static void compare_result(const Cohort__ResultTable *rt, const struct ref_result *ref,
                           const struct ref_query *q)
{
    bool used[64] = {false};
    size_t i, k, e, width = q->n_group + q->n_aggs;

    assert_int_equal(rt->n_columns, width);
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
        for (k = q->n_group; k < width; k++)
            if (!val_equal(&got[k], &ref->out[e][k]))
                fail_msg("group %zu, aggregate %zu: got type %d i %lld d %g, want type %d i %lld "
                         "d %g",
                         e, k - q->n_group, got[k].type, (long long)got[k].i, got[k].d,
                         ref->out[e][k].type, (long long)ref->out[e][k].i, ref->out[e][k].d);
    }
}

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

/* ------------------------------------------------------------ queries */

/*
 * qa: SELECT region, sex, COUNT(*), SUM(steps), AVG(heart_rate),
 *            COUNT(DISTINCT participant), MIN(weight)
 *     FROM health WHERE age IS NULL OR age >= 25
 *     GROUP BY region, sex HAVING COUNT(*) >= 2
 */
static int qa_where(const struct fx_row *r)
{
    return ref_or(ref_is_null(r, FX_C_AGE), ref_is_null(r, FX_C_AGE) ? -1 : r->age >= 25);
}

static int qa_having(const struct fx_val *keys, const struct fx_val *aggs)
{
    (void)keys;
    return aggs[0].i >= 2;
}

static const struct fx_instr qa_where_prog[] = {
    FI_COL("age"), FI_OP(IS_NULL), FI_COL("age"), FI_CONST(FVI_INT(25)), FI_OP(GE), FI_OP(OR),
};

static const struct fx_instr qa_having_prog[] = {
    FI_AGG(0),
    FI_CONST(FVI_INT(2)),
    FI_OP(GE),
};

static const struct ref_query qa = {
    .where = qa_where,
    .group = {FX_C_REGION, FX_C_SEX},
    .n_group = 2,
    .aggs = {{COHORT__AGG_FUNC__AGG_COUNT_STAR, -1},
             {COHORT__AGG_FUNC__AGG_SUM, FX_C_STEPS},
             {COHORT__AGG_FUNC__AGG_AVG, FX_C_HR},
             {COHORT__AGG_FUNC__AGG_COUNT_PARTICIPANTS, -1},
             {COHORT__AGG_FUNC__AGG_MIN, FX_C_WEIGHT}},
    .n_aggs = 5,
    .having = qa_having,
};

static void qa_spec(struct fx_plan_spec *s, const char *protocol)
{
    spec_from_query(s, &qa);
    s->protocol = protocol;
    s->where = qa_where_prog;
    s->n_where = sizeof qa_where_prog / sizeof qa_where_prog[0];
    s->having = qa_having_prog;
    s->n_having = sizeof qa_having_prog / sizeof qa_having_prog[0];
    s->tuples = 6;
    s->max_groups = 16;
}

/* qh: GROUP BY region, sex with 16 aggregates over every row: big groups,
 * so that a partial over many of them needs several chunks. */
static const struct ref_query qh = {
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
    .n_aggs = 16,
};

/* qs: SELECT sex, COUNT(*), SUM(steps), AVG(heart_rate) GROUP BY sex: small. */
static const struct ref_query qs = {
    .group = {FX_C_SEX},
    .n_group = 1,
    .aggs = {{COHORT__AGG_FUNC__AGG_COUNT_STAR, -1},
             {COHORT__AGG_FUNC__AGG_SUM, FX_C_STEPS},
             {COHORT__AGG_FUNC__AGG_AVG, FX_C_HR}},
    .n_aggs = 3,
};

/*
 * ed_hist's bounds are canonical group keys (tk_key_put: a TEXT value is
 * its type, its length, its bytes), compared as bytes. For GROUP BY
 * region, sex: bucket 0 holds east, bucket 1 west and north, bucket 2
 * south and northwest.
 */
static uint8_t bound_west[] = {COHORT__VALUE_TYPE__VT_TEXT, 4, 'w', 'e', 's', 't'};
static uint8_t bound_south[] = {COHORT__VALUE_TYPE__VT_TEXT, 5, 's', 'o', 'u', 't', 'h'};
static uint8_t bound_m[] = {COHORT__VALUE_TYPE__VT_TEXT, 1, 'M'};
static const ProtobufCBinaryData region_bounds[] = {{sizeof bound_west, bound_west},
                                                    {sizeof bound_south, bound_south}};
static const ProtobufCBinaryData region_bounds_unsorted[] = {{sizeof bound_south, bound_south},
                                                             {sizeof bound_west, bound_west}};
static const ProtobufCBinaryData region_bounds_equal[] = {{sizeof bound_west, bound_west},
                                                          {sizeof bound_west, bound_west}};
static const ProtobufCBinaryData sex_bounds[] = {{sizeof bound_m, bound_m}};

/* ----------------------------------------------------- lists of inputs */

static void cts_add(struct fx_cts *dst, const struct fx_cts *src, size_t from, size_t to)
{
    size_t i;
    assert_true(from <= to && to <= src->n);
    for (i = from; i < to; i++)
        fx_cts_push(dst, src->v[i]);
}

static void cts_cat(struct fx_cts *dst, const struct fx_cts *src)
{
    cts_add(dst, src, 0, src->n);
}

/* A pseudonym of the contributor list, as the service sends it. */
static void push_key(struct fx_cts *l, const uint8_t query_id[TK_QUERY_ID_LEN],
                     const uint8_t key[TK_CONTRIB_KEY_LEN])
{
    Cohort__Ciphertext ct;
    cohort__ciphertext__init(&ct);
    ct.query.data = (uint8_t *)query_id;
    ct.query.len = TK_QUERY_TAG_LEN;
    ct.phase = COHORT__PHASE__PHASE_KEYS;
    ct.key.data = (uint8_t *)key;
    ct.key.len = TK_CONTRIB_KEY_LEN;
    fx_cts_push(l, &ct);
}

/* A copy of ct with its tag replaced (tag NULL: none). */
static void push_retagged(struct fx_cts *l, const Cohort__Ciphertext *ct, const uint8_t *tag)
{
    Cohort__Ciphertext c = *ct;
    c.tag.data = (uint8_t *)tag;
    c.tag.len = tag != NULL ? 16 : 0;
    fx_cts_push(l, &c);
}

/* Distinct tags of a list and how often each occurs, sorted by tag. */
struct tagset {
    uint8_t tag[MAX_TAGS][16];
    size_t count[MAX_TAGS];
    size_t n;
};

static size_t tagset_find(const struct tagset *s, const uint8_t *tag)
{
    size_t i;
    for (i = 0; i < s->n; i++)
        if (memcmp(s->tag[i], tag, 16) == 0)
            return i;
    return SIZE_MAX;
}

static void tagset_of(struct tagset *s, Cohort__Ciphertext *const *v, size_t n)
{
    size_t i, j;
    memset(s, 0, sizeof *s);
    for (i = 0; i < n; i++) {
        assert_int_equal(v[i]->tag.len, 16);
        j = tagset_find(s, v[i]->tag.data);
        if (j == SIZE_MAX) {
            assert_true(s->n < MAX_TAGS);
            j = s->n++;
            memcpy(s->tag[j], v[i]->tag.data, 16);
        }
        s->count[j]++;
    }
    for (i = 1; i < s->n; i++) /* insertion sort by tag */
        for (j = i; j > 0 && memcmp(s->tag[j - 1], s->tag[j], 16) > 0; j--) {
            uint8_t t[16];
            size_t c = s->count[j];
            memcpy(t, s->tag[j], 16);
            memcpy(s->tag[j], s->tag[j - 1], 16);
            memcpy(s->tag[j - 1], t, 16);
            s->count[j] = s->count[j - 1];
            s->count[j - 1] = c;
        }
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/*
 * The last shuffle round's tags name groups: equal groups carry equal tags
 * and different groups different ones, dummies one of their own. So the
 * tags' counts are, as a multiset, the reference's groups' contributor
 * counts (a contributor sends one tuple per group) and the dummies left.
 */
static void check_group_tags(Cohort__Ciphertext *const *v, size_t n, const struct ref_result *ref)
{
    struct tagset s;
    size_t want[MAX_TAGS], got[MAX_TAGS], m = 0, sum = 0, g;

    tagset_of(&s, v, n);
    for (g = 0; g < ref->n_groups; g++) {
        want[m] = (size_t)popcount64(ref->groups[g].tokens);
        sum += want[m++];
    }
    assert_true(sum <= n);
    if (n > sum)
        want[m++] = n - sum;
    assert_int_equal(s.n, m);
    memcpy(got, s.count, m * sizeof *got);
    qsort(want, m, sizeof *want, cmp_size);
    qsort(got, m, sizeof *got, cmp_size);
    assert_memory_equal(got, want, m * sizeof *got);
}

/* --------------------------------------------------------------- a study */

struct layout {
    unsigned keys_parts; /* level-1 partitions of the contributor list */
    bool keys_merge;     /* then one level-2 KEYS task over them */
    unsigned rounds;     /* shuffle rounds (0 for the tagged collections) */
    unsigned batches;    /* shuffle batches per round */
    unsigned tagged_parts;
    bool tagged_merge; /* a level-2 TAGGED task over partitions 0 and 1 */
    size_t feed;       /* inputs per AggFeed */
};

/* What the service holds of one query, stage by stage. */
struct study {
    const struct fx_signed *plan;
    uint32_t emit; /* ciphertexts per contribution */
    struct fx_token *tokens;
    size_t n_tokens;
    unsigned next;  /* the next token to hand a task to */
    uint32_t spare; /* partition numbers of extra tasks (hostile cases) */
    size_t feed;
    struct fx_cts tuples; /* every contribution, by (pseudonym, chunk) */
    uint8_t keys[N_TOKENS][TK_CONTRIB_KEY_LEN];
    unsigned owner[N_TOKENS]; /* keys[i] is tokens[owner[i]]'s pseudonym */
    size_t n_keys;
    struct fx_cts keys_l1[MAX_PARTS];
    struct fx_cts keys_root; /* the contributor list's partials FINAL takes */
    uint32_t keys_level;
    struct fx_cts sh_in[MAX_ROUNDS][MAX_BATCHES], sh_out[MAX_ROUNDS][MAX_BATCHES];
    struct fx_cts tagged_in; /* what the service groups by tag */
    struct fx_cts part_in[MAX_PARTS], part_out[MAX_PARTS];
    size_t n_parts;
    struct fx_cts tagged_root; /* the tagged partials FINAL takes */
    uint32_t tagged_level;
};

static void study_init(struct study *st, const struct fx_signed *plan, struct fx_token *tokens,
                       size_t n_tokens)
{
    memset(st, 0, sizeof *st);
    st->plan = plan;
    st->tokens = tokens;
    st->n_tokens = n_tokens;
    st->spare = 1000;
    st->feed = 5;
}

static void study_free(struct study *st)
{
    size_t i, j;
    fx_cts_free(&st->tuples);
    fx_cts_free(&st->keys_root);
    fx_cts_free(&st->tagged_in);
    fx_cts_free(&st->tagged_root);
    for (i = 0; i < MAX_PARTS; i++) {
        fx_cts_free(&st->keys_l1[i]);
        fx_cts_free(&st->part_in[i]);
        fx_cts_free(&st->part_out[i]);
    }
    for (i = 0; i < MAX_ROUNDS; i++)
        for (j = 0; j < MAX_BATCHES; j++) {
            fx_cts_free(&st->sh_in[i][j]);
            fx_cts_free(&st->sh_out[i][j]);
        }
}

static struct fx_token *worker(struct study *st)
{
    return &st->tokens[st->next++ % st->n_tokens];
}

/* One non-final task on the next token; its outputs appended to out. */
static void task_ok(struct study *st, int stage, uint32_t level, uint32_t partition,
                    const struct fx_cts *in, struct fx_cts *out)
{
    struct fx_token *t = worker(st);
    int rc = fx_aggregate_stage(t, FX_NOW + 10, st->plan->sp, stage, level, partition, false, in->v,
                                in->n, st->feed, out, NULL);
    if (rc != TK_OK)
        fail_msg("stage %d, level %u, partition %u, %zu inputs: %s", stage, level, partition, in->n,
                 tk_errname(rc));
    assert_true(t->max_peak <= t->arena_len);
}

/* Outputs of one task: bound to its phase, level and partition, chunks in order. */
static void check_outputs(const struct study *st, Cohort__Ciphertext *const *v, size_t n, int phase,
                          uint32_t level, uint32_t partition, size_t tag_len)
{
    size_t i;
    assert_true(n > 0);
    for (i = 0; i < n; i++) {
        const Cohort__Ciphertext *ct = v[i];
        assert_int_equal(ct->query.len, TK_QUERY_TAG_LEN);
        assert_memory_equal(ct->query.data, st->plan->query_id, TK_QUERY_TAG_LEN);
        assert_int_equal(ct->phase, phase);
        assert_int_equal(ct->level, level);
        assert_int_equal(ct->partition, partition);
        assert_int_equal(ct->chunk, i);
        assert_int_equal(ct->nchunks, n);
        assert_int_equal(ct->key.len, 0);
        assert_int_equal(ct->nonce.len, 24);
        assert_int_equal(ct->tag.len, tag_len);
        assert_int_equal(ct->box.len, v[0]->box.len);
    }
}

/* Every token collects; each contribution has the plan's shape. */
static void study_collect(struct study *st, uint32_t emit, bool tagged)
{
    size_t i, k, box_len = 0;

    st->emit = emit;
    for (i = 0; i < st->n_tokens; i++) {
        Cohort__TokenResponse *r;
        const Cohort__Contribution *c;
        assert_int_equal(fx_collect(&st->tokens[i], FX_NOW, st->plan->sp, &r), TK_OK);
        assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_CONTRIBUTION);
        c = r->contribution;
        assert_memory_equal(c->query_id.data, st->plan->query_id, TK_QUERY_ID_LEN);
        assert_int_equal(c->key.len, TK_CONTRIB_KEY_LEN);
        assert_int_equal(c->n_tuples, emit);
        for (k = 0; k < c->n_tuples; k++) {
            const Cohort__Ciphertext *ct = c->tuples[k];
            assert_memory_equal(ct->query.data, st->plan->query_id, TK_QUERY_TAG_LEN);
            assert_int_equal(ct->phase, COHORT__PHASE__PHASE_COLLECT);
            assert_int_equal(ct->level, 0);
            assert_int_equal(ct->partition, 0);
            assert_int_equal(ct->chunk, k);
            assert_int_equal(ct->nchunks, emit);
            assert_memory_equal(ct->key.data, c->key.data, TK_CONTRIB_KEY_LEN);
            assert_int_equal(ct->nonce.len, 24);
            assert_int_equal(ct->tag.len, tagged ? 16 : 0);
            if (box_len == 0)
                box_len = ct->box.len;
            assert_int_equal(ct->box.len, box_len);
            fx_cts_push(&st->tuples, ct);
        }
        memcpy(st->keys[i], c->key.data, TK_CONTRIB_KEY_LEN);
        st->owner[i] = (unsigned)i;
        cohort__token_response__free_unpacked(r, NULL);
    }
    st->n_keys = st->n_tokens;
    for (i = 1; i < st->n_keys; i++) /* insertion sort of the pseudonyms */
        for (k = i; k > 0 && memcmp(st->keys[k - 1], st->keys[k], TK_CONTRIB_KEY_LEN) > 0; k--) {
            uint8_t t[TK_CONTRIB_KEY_LEN];
            unsigned o = st->owner[k];
            memcpy(t, st->keys[k], sizeof t);
            memcpy(st->keys[k], st->keys[k - 1], sizeof t);
            memcpy(st->keys[k - 1], t, sizeof t);
            st->owner[k] = st->owner[k - 1];
            st->owner[k - 1] = o;
        }
    fx_cts_sort(&st->tuples);
    for (i = 0; i < st->tuples.n; i++)
        assert_memory_equal(st->tuples.v[i]->key.data, st->keys[i / emit], TK_CONTRIB_KEY_LEN);
}

/* The contributor list's pseudonyms [from, to), in order. */
static void keys_list(struct fx_cts *l, const struct study *st, size_t from, size_t to)
{
    size_t i;
    for (i = from; i < to; i++)
        push_key(l, st->plan->query_id, st->keys[i]);
}

static void study_keys(struct study *st, unsigned parts, bool merge)
{
    unsigned p;
    assert_true(parts >= 1 && parts <= MAX_PARTS);
    for (p = 0; p < parts; p++) {
        struct fx_cts in = {0};
        keys_list(&in, st, st->n_keys * p / parts, st->n_keys * (p + 1) / parts);
        task_ok(st, COHORT__STAGE__STAGE_KEYS, 1, p, &in, &st->keys_l1[p]);
        assert_int_equal(st->keys_l1[p].n, 1);
        check_outputs(st, st->keys_l1[p].v, 1, COHORT__PHASE__PHASE_KEYS_PARTIAL, 1, p, 0);
        fx_cts_free(&in);
    }
    if (merge) {
        struct fx_cts in = {0};
        for (p = 0; p < parts; p++)
            cts_cat(&in, &st->keys_l1[p]);
        task_ok(st, COHORT__STAGE__STAGE_KEYS, 2, 0, &in, &st->keys_root);
        assert_int_equal(st->keys_root.n, 1);
        check_outputs(st, st->keys_root.v, 1, COHORT__PHASE__PHASE_KEYS_PARTIAL, 2, 0, 0);
        st->keys_level = 2;
        fx_cts_free(&in);
    } else {
        for (p = 0; p < parts; p++)
            cts_cat(&st->keys_root, &st->keys_l1[p]);
        st->keys_level = 1;
    }
}

/* A shuffle round's outputs: as many as its inputs, bound to the round
 * and batch, each freshly encrypted; tagged in the last round only. */
static void check_shuffle_out(const struct study *st, const struct fx_cts *in,
                              const struct fx_cts *out, uint32_t round, uint32_t batch, bool last)
{
    size_t i, j;
    assert_int_equal(out->n, in->n);
    check_outputs(st, out->v, out->n, COHORT__PHASE__PHASE_SHUFFLE, round, batch, last ? 16 : 0);
    for (i = 0; i < out->n; i++) {
        assert_int_equal(out->v[i]->box.len, in->v[0]->box.len);
        for (j = 0; j < in->n; j++) {
            assert_memory_not_equal(out->v[i]->box.data, in->v[j]->box.data, in->v[j]->box.len);
            assert_memory_not_equal(out->v[i]->nonce.data, in->v[j]->nonce.data, 24);
        }
    }
}

/* Round 1 cuts the sorted tuples into contiguous batches; each later round
 * deals every batch's outputs across all batches. */
static void study_shuffle(struct study *st, unsigned rounds, unsigned batches)
{
    unsigned r, b, pb;
    size_t j;
    assert_true(rounds >= 1 && rounds <= MAX_ROUNDS && batches >= 1 && batches <= MAX_BATCHES);
    for (r = 0; r < rounds; r++) {
        for (b = 0; b < batches; b++)
            if (r == 0)
                cts_add(&st->sh_in[0][b], &st->tuples, st->tuples.n * b / batches,
                        st->tuples.n * (b + 1) / batches);
        if (r > 0)
            for (pb = 0; pb < batches; pb++)
                for (j = 0; j < st->sh_out[r - 1][pb].n; j++)
                    fx_cts_push(&st->sh_in[r][(pb + j) % batches], st->sh_out[r - 1][pb].v[j]);
        for (b = 0; b < batches; b++) {
            task_ok(st, COHORT__STAGE__STAGE_SHUFFLE, r + 1, b, &st->sh_in[r][b],
                    &st->sh_out[r][b]);
            check_shuffle_out(st, &st->sh_in[r][b], &st->sh_out[r][b], r + 1, b, r + 1 == rounds);
        }
    }
    for (b = 0; b < batches; b++)
        cts_cat(&st->tagged_in, &st->sh_out[rounds - 1][b]);
}

/* Level 1 groups the tagged inputs by tag, tag i into partition i mod parts. */
static void study_tagged(struct study *st, unsigned parts, bool merge)
{
    struct tagset s;
    size_t i, t, p;

    tagset_of(&s, st->tagged_in.v, st->tagged_in.n);
    st->n_parts = parts < s.n ? parts : s.n;
    assert_true(st->n_parts >= 1 && st->n_parts <= MAX_PARTS);
    for (t = 0; t < s.n; t++)
        for (i = 0; i < st->tagged_in.n; i++)
            if (memcmp(st->tagged_in.v[i]->tag.data, s.tag[t], 16) == 0)
                fx_cts_push(&st->part_in[t % st->n_parts], st->tagged_in.v[i]);
    for (p = 0; p < st->n_parts; p++) {
        task_ok(st, COHORT__STAGE__STAGE_TAGGED, 1, (uint32_t)p, &st->part_in[p], &st->part_out[p]);
        check_outputs(st, st->part_out[p].v, st->part_out[p].n, COHORT__PHASE__PHASE_TAGGED_PARTIAL,
                      1, (uint32_t)p, 0);
    }
    if (merge && st->n_parts >= 2) {
        struct fx_cts in = {0}, out = {0};
        cts_cat(&in, &st->part_out[0]);
        cts_cat(&in, &st->part_out[1]);
        task_ok(st, COHORT__STAGE__STAGE_TAGGED, 2, 0, &in, &out);
        check_outputs(st, out.v, out.n, COHORT__PHASE__PHASE_TAGGED_PARTIAL, 2, 0, 0);
        cts_cat(&st->tagged_root, &out);
        for (p = 2; p < st->n_parts; p++)
            cts_cat(&st->tagged_root, &st->part_out[p]);
        st->tagged_level = 2;
        fx_cts_free(&in);
        fx_cts_free(&out);
    } else {
        for (p = 0; p < st->n_parts; p++)
            cts_cat(&st->tagged_root, &st->part_out[p]);
        st->tagged_level = 1;
    }
}

/* FINAL above every input: the keys' root, then every tagged partial. */
static Cohort__ResultTable *study_final(struct study *st)
{
    struct fx_cts in = {0};
    Cohort__SealedResult *sr = NULL;
    Cohort__ResultTable *rt;
    struct fx_token *t = worker(st);
    uint32_t level = (st->keys_level > st->tagged_level ? st->keys_level : st->tagged_level) + 1;
    int rc;

    cts_cat(&in, &st->keys_root);
    cts_cat(&in, &st->tagged_root);
    rc = fx_aggregate_stage(t, FX_NOW + 20, st->plan->sp, COHORT__STAGE__STAGE_FINAL, level, 0,
                            true, in.v, in.n, st->feed, NULL, &sr);
    if (rc != TK_OK)
        fail_msg("FINAL at level %u over %zu inputs: %s", level, in.n, tk_errname(rc));
    assert_true(t->max_peak <= t->arena_len);
    rt = fx_open_result(sr, &pop->w, st->plan->query_id);
    cohort__sealed_result__free_unpacked(sr, NULL);
    fx_cts_free(&in);
    return rt;
}

/* Collect, then every stage the layout names, then FINAL. */
static Cohort__ResultTable *study_run(struct study *st, const struct layout *l, uint32_t emit)
{
    st->feed = l->feed;
    study_collect(st, emit, l->rounds == 0);
    study_keys(st, l->keys_parts, l->keys_merge);
    if (l->rounds > 0)
        study_shuffle(st, l->rounds, l->batches);
    else
        cts_cat(&st->tagged_in, &st->tuples);
    study_tagged(st, l->tagged_parts, l->tagged_merge);
    return study_final(st);
}

static uint64_t all_tokens(size_t n)
{
    return n >= 64 ? ~0ull : (1ull << n) - 1;
}

/* ------------------------------------------- tagged collections, staged */

/*
 * rnf_noise: K real-or-fake tuples plus `fakes` more, each tagged with its
 * group's hashed bucket (a fake with a random one): at most B distinct tags
 * in the whole query. Two keys partitions feed FINAL directly; three tagged
 * partitions, two of them merged at level 2.
 */
static void
rnf_noise_sends_k_plus_fakes_tagged_tuples_and_its_stages_match_the_reference(void **state)
{
    static const struct layout l = {2, false, 0, 0, 3, true, 4};
    struct fx_plan_spec spec;
    struct fx_signed plan;
    struct study st;
    struct tagset all;
    struct ref_result *ref = fx_alloc(sizeof *ref);
    Cohort__ResultTable *rt;
    uint32_t emit = tk_plan_emit("rnf_noise", 6, 5, 3);
    (void)state;

    assert_int_equal(emit, 9);
    qa_spec(&spec, "rnf_noise");
    spec.tag_buckets = 5;
    spec.fakes = 3;
    fx_plan_sign(&plan, &spec, &pop->w.researcher);
    ref_run(ref, &qa, all_tokens(N_TOKENS));
    /* The data must exercise HAVING and several groups. */
    assert_true(ref->removed_by_having >= 1 && ref->n_out >= 2);

    study_init(&st, &plan, pop->tokens, N_TOKENS);
    rt = study_run(&st, &l, emit);
    tagset_of(&all, st.tuples.v, st.tuples.n);
    assert_true(all.n >= 2 && all.n <= 5);
    assert_int_equal(st.tagged_level, 2);
    compare_result(rt, ref, &qa);

    cohort__result_table__free_unpacked(rt, NULL);
    study_free(&st);
    fx_signed_free(&plan);
    free(ref);
}

/*
 * c_noise: every contributor sends every one of the B tags exactly K times
 * (B x K tuples), whatever its rows, so tag frequencies say nothing. The
 * keys are merged at level 2; two tagged partitions go straight to FINAL.
 */
static void c_noise_sends_every_tag_exactly_k_times_and_its_stages_match_the_reference(void **state)
{
    static const struct layout l = {3, true, 0, 0, 2, false, 7};
    struct fx_plan_spec spec;
    struct fx_signed plan;
    struct study st;
    struct tagset all, one;
    struct ref_result *ref = fx_alloc(sizeof *ref);
    Cohort__ResultTable *rt;
    uint32_t emit = tk_plan_emit("c_noise", 6, 4, 0);
    size_t c, k;
    (void)state;

    assert_int_equal(emit, 24);
    qa_spec(&spec, "c_noise");
    spec.tag_buckets = 4;
    fx_plan_sign(&plan, &spec, &pop->w.researcher);
    ref_run(ref, &qa, all_tokens(N_TOKENS));

    study_init(&st, &plan, pop->tokens, N_TOKENS);
    rt = study_run(&st, &l, emit);
    tagset_of(&all, st.tuples.v, st.tuples.n);
    assert_int_equal(all.n, 4);
    for (c = 0; c < st.n_keys; c++) {
        tagset_of(&one, st.tuples.v + c * emit, emit);
        assert_int_equal(one.n, 4);
        for (k = 0; k < one.n; k++)
            assert_int_equal(one.count[k], 6);
        assert_memory_equal(one.tag, all.tag, sizeof all.tag[0] * all.n);
    }
    assert_int_equal(st.keys_level, 2);
    compare_result(rt, ref, &qa);

    cohort__result_table__free_unpacked(rt, NULL);
    study_free(&st);
    fx_signed_free(&plan);
    free(ref);
}

/*
 * ed_hist: K tuples tagged with the equi-depth bucket of their group (the
 * plan's bounds), fakes with a random bucket: at most B tags. One keys
 * partition; three tagged partitions, two merged at level 2.
 */
static void ed_hist_tags_bounded_buckets_and_its_stages_match_the_reference(void **state)
{
    static const struct layout l = {1, false, 0, 0, 3, true, 3};
    struct fx_plan_spec spec;
    struct fx_signed plan;
    struct study st;
    struct tagset all;
    struct ref_result *ref = fx_alloc(sizeof *ref);
    Cohort__ResultTable *rt;
    uint32_t emit = tk_plan_emit("ed_hist", 6, 3, 0);
    (void)state;

    assert_int_equal(emit, 6);
    qa_spec(&spec, "ed_hist");
    spec.tag_buckets = 3;
    spec.bounds = region_bounds;
    spec.n_bounds = 2;
    fx_plan_sign(&plan, &spec, &pop->w.researcher);
    ref_run(ref, &qa, all_tokens(N_TOKENS));

    study_init(&st, &plan, pop->tokens, N_TOKENS);
    rt = study_run(&st, &l, emit);
    tagset_of(&all, st.tuples.v, st.tuples.n);
    assert_true(all.n >= 2 && all.n <= 3);
    compare_result(rt, ref, &qa);

    cohort__result_table__free_unpacked(rt, NULL);
    study_free(&st);
    fx_signed_free(&plan);
    free(ref);
}

/*
 * Where each group's tuples land, seen from outside: six tokens with one
 * row each (east, west, north, south, northwest, north) and K = 1 send
 * their one real tuple and nothing else. Under ed_hist with bounds [west,
 * south] (canonical keys compare as bytes: type, length, then text, so
 * every 4-letter region sorts before every 5-letter one) the buckets are
 * east | west, north | south, northwest; a key equal to a bound starts its
 * bucket. Under rnf_noise, equal groups hash to equal tags.
 */
static void each_group_is_tagged_with_the_bucket_its_protocol_names(void **state)
{
    static const char *const regions[] = {"east", "west", "north", "south", "northwest", "north"};
    enum { N = sizeof regions / sizeof regions[0] };
    struct fx_token t[N];
    uint8_t tag[N][16];
    size_t i, p;
    char subject[32];
    (void)state;

    for (i = 0; i < N; i++) {
        struct fx_row row;
        fx_gen_rows(&row, 1, 1);
        row.region = regions[i];
        fx_token_init(&t[i], TK_ARENA_DEFAULT);
        snprintf(subject, sizeof subject, "bucket-%zu", i);
        fx_provision(&t[i], &pop->w, subject);
        assert_int_equal(fx_load_health(&t[i], &row, 1), TK_OK);
    }
    for (p = 0; p < 2; p++) {
        struct fx_plan_spec spec;
        struct fx_signed plan;
        fx_plan_default(&spec);
        spec.n_aggs = 1;
        spec.tuples = 1;
        spec.max_groups = 8;
        if (p == 0) {
            spec.protocol = "ed_hist";
            spec.tag_buckets = 3;
            spec.bounds = region_bounds;
            spec.n_bounds = 2;
        } else {
            spec.protocol = "rnf_noise";
            spec.tag_buckets = 4096;
        }
        fx_plan_sign(&plan, &spec, &pop->w.researcher);
        for (i = 0; i < N; i++) {
            struct fx_cts one = {0};
            assert_int_equal(fx_collect_into(&t[i], FX_NOW, plan.sp, &one), TK_OK);
            assert_int_equal(one.n, 1);
            assert_int_equal(one.v[0]->tag.len, 16);
            memcpy(tag[i], one.v[0]->tag.data, 16);
            fx_cts_free(&one);
        }
        assert_memory_equal(tag[2], tag[5], 16); /* north, north */
        if (p == 0) {
            assert_memory_equal(tag[1], tag[2], 16); /* west starts bucket 1 */
            assert_memory_equal(tag[3], tag[4], 16); /* south starts bucket 2 */
            assert_memory_not_equal(tag[0], tag[1], 16);
            assert_memory_not_equal(tag[0], tag[3], 16);
            assert_memory_not_equal(tag[1], tag[3], 16);
        }
        fx_signed_free(&plan);
    }
    for (i = 0; i < N; i++)
        fx_token_free(&t[i]);
}

/*
 * The contributor list lets the service drop a contributor whole (its
 * pseudonym and all its tuples), as s_agg does: the result is then the
 * query over the others, and counts them only.
 */
static void a_contributor_dropped_whole_leaves_the_result_of_the_others(void **state)
{
    struct fx_plan_spec spec;
    struct fx_signed plan;
    struct study st;
    struct ref_result *ref = fx_alloc(sizeof *ref);
    Cohort__ResultTable *rt;
    const size_t gone = 4; /* the fifth pseudonym in order */
    size_t i;
    (void)state;

    qa_spec(&spec, "rnf_noise");
    spec.tag_buckets = 3;
    spec.fakes = 1;
    fx_plan_sign(&plan, &spec, &pop->w.researcher);
    study_init(&st, &plan, pop->tokens, N_TOKENS);
    study_collect(&st, 7, true);
    keys_list(&st.keys_l1[0], &st, 0, gone);
    keys_list(&st.keys_l1[0], &st, gone + 1, st.n_keys);
    task_ok(&st, COHORT__STAGE__STAGE_KEYS, 1, 0, &st.keys_l1[0], &st.keys_root);
    st.keys_level = 1;
    for (i = 0; i < st.tuples.n; i++)
        if (i / 7 != gone)
            fx_cts_push(&st.tagged_in, st.tuples.v[i]);
    study_tagged(&st, 2, false);
    rt = study_final(&st);
    ref_run(ref, &qa, all_tokens(N_TOKENS) & ~(1ull << st.owner[gone]));
    assert_int_equal(ref->participants, N_TOKENS - 1);
    compare_result(rt, ref, &qa);

    cohort__result_table__free_unpacked(rt, NULL);
    study_free(&st);
    fx_signed_free(&plan);
    free(ref);
}

/* --------------------------------------------------------------- shuffle */

/*
 * shuffle: two rounds of three batches (round 2 deals round 1's outputs
 * across the batches), whose last outputs carry group tags; then grouping
 * by tag, the contributor list and FINAL.
 */
static void shuffle_rounds_then_grouping_by_tag_match_the_reference(void **state)
{
    static const struct layout l = {2, true, 2, 3, 3, true, 6};
    struct fx_plan_spec spec;
    struct fx_signed plan;
    struct study st;
    struct ref_result *ref = fx_alloc(sizeof *ref);
    Cohort__ResultTable *rt;
    unsigned b;
    (void)state;

    qa_spec(&spec, "shuffle");
    spec.shuffle_rounds = 2;
    spec.shuffle_batch_min = 4;
    fx_plan_sign(&plan, &spec, &pop->w.researcher);
    ref_run(ref, &qa, all_tokens(N_TOKENS));

    study_init(&st, &plan, pop->tokens, N_TOKENS);
    rt = study_run(&st, &l, tk_plan_emit("shuffle", 6, 0, 0));
    assert_int_equal(st.tuples.n, 6 * N_TOKENS);
    /* Round 2 mixes every batch of round 1 into every batch. */
    for (b = 0; b < 3; b++)
        assert_int_equal(st.sh_in[1][b].n, 2 * N_TOKENS);
    check_group_tags(st.tagged_in.v, st.tagged_in.n, ref);
    compare_result(rt, ref, &qa);

    cohort__result_table__free_unpacked(rt, NULL);
    study_free(&st);
    fx_signed_free(&plan);
    free(ref);
}

/*
 * One batch shuffled 20 times (the same inputs, on several tokens): every
 * run emits as many ciphertexts as it took, none of them a box or nonce
 * seen before, with the batch's groups as tags; and an item whose group is
 * alone in the batch does not always come out at the same place.
 */
static void a_shuffle_round_emits_a_fresh_random_permutation_of_its_batch(void **state)
{
    enum { RUNS = 20 };
    struct fx_plan_spec spec;
    struct fx_signed plan;
    struct study st;
    struct fx_cts out[RUNS];
    struct ref_result *ref = fx_alloc(sizeof *ref);
    struct tagset s;
    uint8_t lone[16];
    size_t pos[RUNS], r, i, j, lone_i = SIZE_MAX;
    bool moved = false;
    (void)state;

    qa_spec(&spec, "shuffle");
    spec.shuffle_rounds = 1;
    spec.shuffle_batch_min = 4;
    fx_plan_sign(&plan, &spec, &pop->w.researcher);
    ref_run(ref, &qa, all_tokens(N_TOKENS));
    study_init(&st, &plan, pop->tokens, N_TOKENS);
    study_collect(&st, 6, false);

    memset(out, 0, sizeof out);
    for (r = 0; r < RUNS; r++) {
        struct fx_token *t = &pop->tokens[r % N_TOKENS];
        assert_int_equal(fx_aggregate_stage(t, FX_NOW + 10, plan.sp, COHORT__STAGE__STAGE_SHUFFLE,
                                            1, (uint32_t)r, false, st.tuples.v, st.tuples.n,
                                            st.tuples.n, &out[r], NULL),
                         TK_OK);
        check_shuffle_out(&st, &st.tuples, &out[r], 1, (uint32_t)r, true);
        check_group_tags(out[r].v, out[r].n, ref);
        if (r == 0) {
            tagset_of(&s, out[0].v, out[0].n);
            for (i = 0; i < s.n && lone_i == SIZE_MAX; i++)
                if (s.count[i] == 1)
                    lone_i = i;
            assert_true(lone_i != SIZE_MAX); /* the data has a group of one contributor */
            memcpy(lone, s.tag[lone_i], 16);
        }
        for (i = 0; i < out[r].n && memcmp(out[r].v[i]->tag.data, lone, 16) != 0; i++)
            ;
        assert_true(i < out[r].n);
        pos[r] = i;
        moved = moved || pos[r] != pos[0];
        for (j = 0; j < r; j++) /* fresh randomness: nothing repeats across runs */
            for (i = 0; i < out[r].n; i++)
                assert_memory_not_equal(out[r].v[i]->nonce.data, out[j].v[i]->nonce.data, 24);
    }
    assert_true(moved);

    for (r = 0; r < RUNS; r++)
        fx_cts_free(&out[r]);
    study_free(&st);
    fx_signed_free(&plan);
    free(ref);
}

/* ------------------------------------------------------- hostile layouts */

enum at { AT_BEGIN, AT_FEED, AT_END };

/* A task as the service hands it over (the partition is the runner's). */
struct task {
    int stage;
    uint32_t level;
    bool final;
    struct fx_cts in;
};

struct hostile_case {
    const char *name;
    void (*build)(struct task *bad, struct task *good);
    int rc;
    enum at at;
};

/*
 * Run `bad` on t, which must fail with want at the named call; the token's
 * state must then be what it was after AggBegin (but for the session,
 * which is closed). Then run `good` on the same token, level and
 * partition: it must succeed, and a FINAL must seal the reference.
 */
static void expect_refused_then_good(struct study *st, struct fx_token *t, const char *name,
                                     const struct task *bad, const struct task *good,
                                     uint32_t partition, int want, enum at at,
                                     const struct ref_result *ref, const struct ref_query *q)
{
    uint8_t session[TK_SESSION_ID_LEN];
    struct fx_snapshot snap;
    Cohort__TokenResponse *r = NULL;
    Cohort__SealedResult *sr = NULL;
    struct fx_cts out = {0};
    int rc;

    rc = fx_agg_begin_stage(t, FX_NOW + 30, st->plan->sp, bad->stage, bad->level, partition,
                            bad->final, session);
    if (rc != TK_OK)
        fail_msg("%s: AggBegin: %s", name, tk_errname(rc));
    fx_snapshot_take(&snap, t);
    rc = bad->in.n > 0 ? fx_agg_feed(t, FX_NOW + 30, session, bad->in.v, bad->in.n) : TK_OK;
    if (at == AT_FEED) {
        if (rc != want)
            fail_msg("%s: feed: %s, not %s", name, tk_errname(rc), tk_errname(want));
        /* The refused feed ended the session. */
        assert_int_equal(fx_agg_end(t, FX_NOW + 30, session, NULL), TK_ERR_SESSION);
    } else {
        if (rc != TK_OK)
            fail_msg("%s: feed: %s", name, tk_errname(rc));
        rc = fx_agg_end(t, FX_NOW + 30, session, &r);
        if (r != NULL)
            cohort__token_response__free_unpacked(r, NULL);
        if (rc != want)
            fail_msg("%s: AggEnd: %s, not %s", name, tk_errname(rc), tk_errname(want));
    }
    if (!fx_snapshot_same(&snap, t, true))
        fail_msg("%s: the refusal changed the token's state", name);
    fx_snapshot_free(&snap);

    rc = fx_aggregate_stage(t, FX_NOW + 31, st->plan->sp, good->stage, good->level, partition,
                            good->final, good->in.v, good->in.n, 4, &out, good->final ? &sr : NULL);
    if (rc != TK_OK)
        fail_msg("%s: the correct task after the refusal: %s", name, tk_errname(rc));
    if (good->final) {
        Cohort__ResultTable *rt = fx_open_result(sr, &pop->w, st->plan->query_id);
        compare_result(rt, ref, q);
        cohort__result_table__free_unpacked(rt, NULL);
        cohort__sealed_result__free_unpacked(sr, NULL);
    }
    fx_cts_free(&out);
}

static void run_cases(struct study *st, const struct hostile_case *cases, size_t n,
                      uint32_t first_partition, const struct ref_result *ref,
                      const struct ref_query *q)
{
    size_t i;
    for (i = 0; i < n; i++) {
        struct task bad, good;
        memset(&bad, 0, sizeof bad);
        memset(&good, 0, sizeof good);
        cases[i].build(&bad, &good);
        expect_refused_then_good(st, &pop->tokens[i % N_TOKENS], cases[i].name, &bad, &good,
                                 first_partition + (uint32_t)i, cases[i].rc, cases[i].at, ref, q);
        fx_cts_free(&bad.in);
        fx_cts_free(&good.in);
    }
}

/*
 * The world of the tagged hostile cases: an rnf_noise study of qh, its
 * list in two keys partitions (K0, K1) and its tuples in three tagged
 * partitions (T0, T1, T2), FINAL at level 2; a contribution to another
 * query; and one tagged partial over every tuple, in several chunks.
 */
static struct study *hs;
static struct fx_cts hs_other, hs_whole;

/* An extra task of the hostile world, on the next token, with its own partition. */
static void spare_task(int stage, uint32_t level, const struct fx_cts *in, struct fx_cts *out)
{
    task_ok(hs, stage, level, hs->spare++, in, out);
}

static void set_task(struct task *k, int stage, uint32_t level)
{
    k->stage = stage;
    k->level = level;
    k->final = stage == COHORT__STAGE__STAGE_FINAL;
}

static void good_keys1(struct task *k)
{
    set_task(k, COHORT__STAGE__STAGE_KEYS, 1);
    keys_list(&k->in, hs, 0, hs->n_keys);
}

static void good_keys2(struct task *k)
{
    set_task(k, COHORT__STAGE__STAGE_KEYS, 2);
    cts_cat(&k->in, &hs->keys_l1[0]);
    cts_cat(&k->in, &hs->keys_l1[1]);
}

static void good_tagged1(struct task *k)
{
    set_task(k, COHORT__STAGE__STAGE_TAGGED, 1);
    cts_cat(&k->in, &hs->part_in[0]);
}

static void good_tagged2(struct task *k)
{
    set_task(k, COHORT__STAGE__STAGE_TAGGED, 2);
    cts_cat(&k->in, &hs->part_out[0]);
    cts_cat(&k->in, &hs->part_out[1]);
}

static void good_final(struct task *k)
{
    set_task(k, COHORT__STAGE__STAGE_FINAL, 2);
    cts_cat(&k->in, &hs->keys_root);
    cts_cat(&k->in, &hs->tagged_root);
}

/* FINAL over the keys and tagged partials p0, p1, p2 (NULL: left out). */
static void final_with(struct task *k, const struct fx_cts *p0, const struct fx_cts *p1,
                       const struct fx_cts *p2)
{
    set_task(k, COHORT__STAGE__STAGE_FINAL, 2);
    cts_cat(&k->in, &hs->keys_root);
    if (p0 != NULL)
        cts_cat(&k->in, p0);
    if (p1 != NULL)
        cts_cat(&k->in, p1);
    if (p2 != NULL)
        cts_cat(&k->in, p2);
}

static void keys_pseudonym_twice(struct task *bad, struct task *good)
{
    good_keys1(good);
    set_task(bad, COHORT__STAGE__STAGE_KEYS, 1);
    keys_list(&bad->in, hs, 0, 4);
    keys_list(&bad->in, hs, 3, hs->n_keys);
}

static void keys_out_of_order(struct task *bad, struct task *good)
{
    good_keys1(good);
    set_task(bad, COHORT__STAGE__STAGE_KEYS, 1);
    keys_list(&bad->in, hs, 0, 3);
    keys_list(&bad->in, hs, 4, 5);
    keys_list(&bad->in, hs, 3, 4);
    keys_list(&bad->in, hs, 5, hs->n_keys);
}

static void keys_pseudonym_with_a_nonce(struct task *bad, struct task *good)
{
    static uint8_t nonce[24];
    Cohort__Ciphertext c;
    good_keys1(good);
    set_task(bad, COHORT__STAGE__STAGE_KEYS, 1);
    keys_list(&bad->in, hs, 0, 2);
    cohort__ciphertext__init(&c);
    c.query.data = (uint8_t *)hs->plan->query_id;
    c.query.len = TK_QUERY_TAG_LEN;
    c.phase = COHORT__PHASE__PHASE_KEYS;
    c.key.data = hs->keys[2];
    c.key.len = TK_CONTRIB_KEY_LEN;
    c.nonce.data = nonce;
    c.nonce.len = sizeof nonce;
    fx_cts_push(&bad->in, &c);
    keys_list(&bad->in, hs, 3, hs->n_keys);
}

static void keys_pseudonym_of_another_level(struct task *bad, struct task *good)
{
    good_keys1(good);
    set_task(bad, COHORT__STAGE__STAGE_KEYS, 1);
    keys_list(&bad->in, hs, 0, hs->n_keys);
    bad->in.v[0]->level = 1;
}

static void keys_empty(struct task *bad, struct task *good)
{
    good_keys1(good);
    set_task(bad, COHORT__STAGE__STAGE_KEYS, 1);
}

static void keys_partials_overlapping(struct task *bad, struct task *good)
{
    struct fx_cts in = {0};
    good_keys2(good);
    set_task(bad, COHORT__STAGE__STAGE_KEYS, 2);
    keys_list(&in, hs, 0, hs->n_keys / 2 + 1); /* one pseudonym into K1's range */
    spare_task(COHORT__STAGE__STAGE_KEYS, 1, &in, &bad->in);
    cts_cat(&bad->in, &hs->keys_l1[1]);
    fx_cts_free(&in);
}

static void keys_partials_out_of_order(struct task *bad, struct task *good)
{
    good_keys2(good);
    set_task(bad, COHORT__STAGE__STAGE_KEYS, 2);
    cts_cat(&bad->in, &hs->keys_l1[1]);
    cts_cat(&bad->in, &hs->keys_l1[0]);
}

static void keys_partial_of_the_tasks_own_level(struct task *bad, struct task *good)
{
    struct fx_cts in = {0};
    good_keys2(good);
    set_task(bad, COHORT__STAGE__STAGE_KEYS, 2);
    cts_cat(&in, &hs->keys_l1[0]);
    cts_cat(&in, &hs->keys_l1[1]);
    spare_task(COHORT__STAGE__STAGE_KEYS, 2, &in, &bad->in);
    fx_cts_free(&in);
}

static void tagged_tag_rewritten(struct task *bad, struct task *good)
{
    good_tagged1(good);
    set_task(bad, COHORT__STAGE__STAGE_TAGGED, 1);
    /* T1 holds other tags than T0: move a tuple under one of them. */
    push_retagged(&bad->in, hs->part_in[0].v[0], hs->part_in[1].v[0]->tag.data);
    cts_add(&bad->in, &hs->part_in[0], 1, hs->part_in[0].n);
}

static void tagged_tag_bit_flipped(struct task *bad, struct task *good)
{
    good_tagged1(good);
    set_task(bad, COHORT__STAGE__STAGE_TAGGED, 1);
    cts_cat(&bad->in, &hs->part_in[0]);
    bad->in.v[bad->in.n - 1]->tag.data[15] ^= 0x01;
}

static void tagged_tag_removed(struct task *bad, struct task *good)
{
    good_tagged1(good);
    set_task(bad, COHORT__STAGE__STAGE_TAGGED, 1);
    cts_add(&bad->in, &hs->part_in[0], 0, 2);
    push_retagged(&bad->in, hs->part_in[0].v[2], NULL);
}

static void tagged_pseudonym_swapped(struct task *bad, struct task *good)
{
    good_tagged1(good);
    set_task(bad, COHORT__STAGE__STAGE_TAGGED, 1);
    cts_cat(&bad->in, &hs->part_in[0]);
    memcpy(bad->in.v[1]->key.data,
           memcmp(bad->in.v[1]->key.data, hs->keys[0], 16) != 0 ? hs->keys[0] : hs->keys[1], 16);
}

static void tagged_chunk_count_changed(struct task *bad, struct task *good)
{
    good_tagged1(good);
    set_task(bad, COHORT__STAGE__STAGE_TAGGED, 1);
    cts_cat(&bad->in, &hs->part_in[0]);
    bad->in.v[0]->nchunks++;
}

static void tagged_tuple_of_another_query(struct task *bad, struct task *good)
{
    good_tagged1(good);
    set_task(bad, COHORT__STAGE__STAGE_TAGGED, 1);
    cts_add(&bad->in, &hs->part_in[0], 0, 1);
    cts_add(&bad->in, &hs_other, 0, 1);
}

static void tagged_pseudonym_as_tuple(struct task *bad, struct task *good)
{
    good_tagged1(good);
    set_task(bad, COHORT__STAGE__STAGE_TAGGED, 1);
    keys_list(&bad->in, hs, 0, 1);
}

static void tagged_empty(struct task *bad, struct task *good)
{
    good_tagged1(good);
    set_task(bad, COHORT__STAGE__STAGE_TAGGED, 1);
}

static void tagged2_chunk_before_its_first(struct task *bad, struct task *good)
{
    good_tagged2(good);
    set_task(bad, COHORT__STAGE__STAGE_TAGGED, 2);
    cts_add(&bad->in, &hs_whole, 1, 2);
    cts_add(&bad->in, &hs_whole, 0, 1);
}

static void tagged2_partial_missing_its_last_chunk(struct task *bad, struct task *good)
{
    good_tagged2(good);
    set_task(bad, COHORT__STAGE__STAGE_TAGGED, 2);
    cts_add(&bad->in, &hs_whole, 0, hs_whole.n - 1);
}

static void tagged2_next_partial_before_the_last_chunk(struct task *bad, struct task *good)
{
    good_tagged2(good);
    set_task(bad, COHORT__STAGE__STAGE_TAGGED, 2);
    cts_add(&bad->in, &hs_whole, 0, hs_whole.n - 1);
    cts_cat(&bad->in, &hs->part_out[1]);
}

static void tagged2_collected_tuple(struct task *bad, struct task *good)
{
    good_tagged2(good);
    set_task(bad, COHORT__STAGE__STAGE_TAGGED, 2);
    cts_cat(&bad->in, &hs->part_out[0]);
    cts_add(&bad->in, &hs->part_in[1], 0, 1);
}

static void tagged3_partial_two_levels_down(struct task *bad, struct task *good)
{
    good_tagged2(good);
    set_task(bad, COHORT__STAGE__STAGE_TAGGED, 3);
    cts_cat(&bad->in, &hs->part_out[0]);
}

/* FINAL over K, a TAGGED level-1 partial of `in` (a spare task) and T1, T2. */
static void final_over_regrouped(struct task *bad, const struct fx_cts *in0,
                                 const struct fx_cts *in1)
{
    struct fx_cts p0 = {0}, p1 = {0};
    spare_task(COHORT__STAGE__STAGE_TAGGED, 1, in0, &p0);
    if (in1 != NULL)
        spare_task(COHORT__STAGE__STAGE_TAGGED, 1, in1, &p1);
    final_with(bad, &p0, in1 != NULL ? &p1 : &hs->part_out[1], &hs->part_out[2]);
    fx_cts_free(&p0);
    fx_cts_free(&p1);
}

static void final_tuple_fed_twice(struct task *bad, struct task *good)
{
    struct fx_cts in = {0};
    good_final(good);
    cts_cat(&in, &hs->part_in[0]);
    cts_add(&in, &hs->part_in[0], 0, 1);
    final_over_regrouped(bad, &in, NULL);
    fx_cts_free(&in);
}

static void final_tuple_dropped(struct task *bad, struct task *good)
{
    struct fx_cts in = {0};
    good_final(good);
    cts_add(&in, &hs->part_in[0], 1, hs->part_in[0].n);
    final_over_regrouped(bad, &in, NULL);
    fx_cts_free(&in);
}

static void final_tuple_in_two_partitions(struct task *bad, struct task *good)
{
    struct fx_cts in1 = {0};
    good_final(good);
    cts_cat(&in1, &hs->part_in[1]);
    cts_add(&in1, &hs->part_in[0], 0, 1);
    final_over_regrouped(bad, &hs->part_in[0], &in1);
    fx_cts_free(&in1);
}

static void final_tuple_dropped_and_another_twice(struct task *bad, struct task *good)
{
    struct fx_cts in = {0};
    good_final(good);
    cts_add(&in, &hs->part_in[0], 1, hs->part_in[0].n);
    cts_add(&in, &hs->part_in[0], 2, 3);
    final_over_regrouped(bad, &in, NULL);
    fx_cts_free(&in);
}

static void final_tagged_partial_twice(struct task *bad, struct task *good)
{
    good_final(good);
    good_final(bad);
    cts_cat(&bad->in, &hs->part_out[2]);
}

static void final_tagged_partial_dropped(struct task *bad, struct task *good)
{
    good_final(good);
    final_with(bad, &hs->part_out[0], &hs->part_out[1], NULL);
}

static void final_tagged_partial_missing_its_last_chunk(struct task *bad, struct task *good)
{
    struct fx_cts cut = {0};
    good_final(good);
    cts_add(&cut, &hs_whole, 0, hs_whole.n - 1);
    final_with(bad, &cut, NULL, NULL);
    fx_cts_free(&cut);
}

static void final_tagged_chunks_out_of_order(struct task *bad, struct task *good)
{
    struct fx_cts swapped = {0};
    good_final(good);
    cts_add(&swapped, &hs_whole, 1, 2);
    cts_add(&swapped, &hs_whole, 0, 1);
    cts_add(&swapped, &hs_whole, 2, hs_whole.n);
    final_with(bad, &swapped, NULL, NULL);
    fx_cts_free(&swapped);
}

static void final_contributor_missing_from_the_list(struct task *bad, struct task *good)
{
    struct fx_cts in = {0};
    good_final(good);
    set_task(bad, COHORT__STAGE__STAGE_FINAL, 2);
    keys_list(&in, hs, 1, hs->n_keys / 2); /* K0 without its first pseudonym */
    spare_task(COHORT__STAGE__STAGE_KEYS, 1, &in, &bad->in);
    cts_cat(&bad->in, &hs->keys_l1[1]);
    cts_cat(&bad->in, &hs->tagged_root);
    fx_cts_free(&in);
}

static void final_keys_partial_twice(struct task *bad, struct task *good)
{
    good_final(good);
    set_task(bad, COHORT__STAGE__STAGE_FINAL, 2);
    cts_cat(&bad->in, &hs->keys_l1[0]);
    cts_cat(&bad->in, &hs->keys_l1[0]);
    cts_cat(&bad->in, &hs->keys_l1[1]);
    cts_cat(&bad->in, &hs->tagged_root);
}

static void final_keys_partials_overlapping(struct task *bad, struct task *good)
{
    struct fx_cts in = {0};
    good_final(good);
    set_task(bad, COHORT__STAGE__STAGE_FINAL, 2);
    keys_list(&in, hs, 0, hs->n_keys / 2 + 1);
    spare_task(COHORT__STAGE__STAGE_KEYS, 1, &in, &bad->in);
    cts_cat(&bad->in, &hs->keys_l1[1]);
    cts_cat(&bad->in, &hs->tagged_root);
    fx_cts_free(&in);
}

static void final_without_keys(struct task *bad, struct task *good)
{
    good_final(good);
    set_task(bad, COHORT__STAGE__STAGE_FINAL, 2);
    cts_cat(&bad->in, &hs->tagged_root);
}

static void final_without_tuples(struct task *bad, struct task *good)
{
    good_final(good);
    set_task(bad, COHORT__STAGE__STAGE_FINAL, 2);
    cts_cat(&bad->in, &hs->keys_root);
}

static void final_partial_of_its_own_level(struct task *bad, struct task *good)
{
    struct fx_cts in = {0}, merged = {0};
    good_final(good);
    cts_cat(&in, &hs->part_out[0]);
    cts_cat(&in, &hs->part_out[1]);
    spare_task(COHORT__STAGE__STAGE_TAGGED, 2, &in, &merged);
    final_with(bad, &merged, &hs->part_out[2], NULL);
    fx_cts_free(&in);
    fx_cts_free(&merged);
}

static void final_collected_tuple(struct task *bad, struct task *good)
{
    good_final(good);
    good_final(bad);
    cts_add(&bad->in, &hs->part_in[0], 0, 1);
}

static void final_pseudonym(struct task *bad, struct task *good)
{
    good_final(good);
    good_final(bad);
    keys_list(&bad->in, hs, 0, 1);
}

static const struct hostile_case tagged_cases[] = {
    /* the contributor list, level 1 */
    {"a pseudonym listed twice", keys_pseudonym_twice, TK_ERR_DUPLICATE, AT_FEED},
    {"pseudonyms out of order", keys_out_of_order, TK_ERR_ORDER, AT_FEED},
    {"a pseudonym carrying a nonce", keys_pseudonym_with_a_nonce, TK_ERR_BINDING, AT_FEED},
    {"a pseudonym of another level", keys_pseudonym_of_another_level, TK_ERR_BINDING, AT_FEED},
    {"an empty contributor list", keys_empty, TK_ERR_INCOMPLETE, AT_END},
    /* the contributor list, level 2 */
    {"overlapping keys partials", keys_partials_overlapping, TK_ERR_DUPLICATE, AT_FEED},
    {"keys partials out of order", keys_partials_out_of_order, TK_ERR_DUPLICATE, AT_FEED},
    {"a keys partial of the task's own level", keys_partial_of_the_tasks_own_level, TK_ERR_BINDING,
     AT_FEED},
    /* grouping by tag, level 1 */
    {"a tag rewritten by the service", tagged_tag_rewritten, TK_ERR_DECRYPT, AT_FEED},
    {"a tag with one bit flipped", tagged_tag_bit_flipped, TK_ERR_DECRYPT, AT_FEED},
    {"a tuple stripped of its tag", tagged_tag_removed, TK_ERR_BINDING, AT_FEED},
    {"a tuple under another pseudonym", tagged_pseudonym_swapped, TK_ERR_DECRYPT, AT_FEED},
    {"a tuple with another chunk count", tagged_chunk_count_changed, TK_ERR_BINDING, AT_FEED},
    {"a tuple of another query", tagged_tuple_of_another_query, TK_ERR_WRONG_QUERY, AT_FEED},
    {"a pseudonym as a tuple", tagged_pseudonym_as_tuple, TK_ERR_BINDING, AT_FEED},
    {"an empty tagged partition", tagged_empty, TK_ERR_INCOMPLETE, AT_END},
    /* grouping by tag, merging */
    {"a partial's chunk 1 before its chunk 0", tagged2_chunk_before_its_first, TK_ERR_INCOMPLETE,
     AT_FEED},
    {"a partial missing its last chunk", tagged2_partial_missing_its_last_chunk, TK_ERR_INCOMPLETE,
     AT_END},
    {"the next partial before the last chunk", tagged2_next_partial_before_the_last_chunk,
     TK_ERR_INCOMPLETE, AT_FEED},
    {"a collected tuple among partials", tagged2_collected_tuple, TK_ERR_BINDING, AT_FEED},
    {"a partial two levels down", tagged3_partial_two_levels_down, TK_ERR_BINDING, AT_FEED},
    /* the filtering's multiset check */
    {"a tuple fed twice into one partition", final_tuple_fed_twice, TK_ERR_DUPLICATE, AT_END},
    {"a tuple dropped", final_tuple_dropped, TK_ERR_INCOMPLETE, AT_END},
    {"a tuple in two partitions", final_tuple_in_two_partitions, TK_ERR_DUPLICATE, AT_END},
    {"a tuple dropped and another fed twice", final_tuple_dropped_and_another_twice,
     TK_ERR_DUPLICATE, AT_END},
    {"a tagged partial fed twice", final_tagged_partial_twice, TK_ERR_DUPLICATE, AT_END},
    {"a tagged partial dropped", final_tagged_partial_dropped, TK_ERR_INCOMPLETE, AT_END},
    {"a tagged partial missing its last chunk", final_tagged_partial_missing_its_last_chunk,
     TK_ERR_INCOMPLETE, AT_END},
    {"a tagged partial's chunks out of order", final_tagged_chunks_out_of_order, TK_ERR_INCOMPLETE,
     AT_FEED},
    {"tuples of a contributor missing from the list", final_contributor_missing_from_the_list,
     TK_ERR_DUPLICATE, AT_END},
    {"a keys partial fed twice", final_keys_partial_twice, TK_ERR_DUPLICATE, AT_FEED},
    {"overlapping keys partials at FINAL", final_keys_partials_overlapping, TK_ERR_DUPLICATE,
     AT_FEED},
    {"no contributor list", final_without_keys, TK_ERR_INCOMPLETE, AT_END},
    {"no tagged partial", final_without_tuples, TK_ERR_INCOMPLETE, AT_END},
    {"a partial of FINAL's own level", final_partial_of_its_own_level, TK_ERR_BINDING, AT_FEED},
    {"a collected tuple at FINAL", final_collected_tuple, TK_ERR_BINDING, AT_FEED},
    {"a pseudonym at FINAL", final_pseudonym, TK_ERR_BINDING, AT_FEED},
};

static void tagged_stages_refuse_every_hostile_layout_with_its_exact_code(void **state)
{
    static const struct layout l = {2, false, 0, 0, 3, false, 5};
    struct fx_plan_spec spec, other_spec;
    struct fx_signed plan, other;
    struct ref_result *ref = fx_alloc(sizeof *ref);
    Cohort__ResultTable *rt;
    struct study st;
    struct task whole;
    (void)state;

    spec_from_query(&spec, &qh);
    spec.protocol = "rnf_noise";
    spec.tag_buckets = 3;
    spec.fakes = 2;
    spec.tuples = 6;
    spec.max_groups = 16;
    fx_plan_sign(&plan, &spec, &pop->w.researcher);
    ref_run(ref, &qh, all_tokens(N_TOKENS));
    other_spec = spec;
    fx_plan_sign(&other, &other_spec, &pop->w.researcher);
    assert_int_equal(fx_collect_into(&pop->tokens[3], FX_NOW, other.sp, &hs_other), TK_OK);

    study_init(&st, &plan, pop->tokens, N_TOKENS);
    hs = &st;
    rt = study_run(&st, &l, 8);
    compare_result(rt, ref, &qh);
    cohort__result_table__free_unpacked(rt, NULL);
    assert_int_equal(st.n_parts, 3);
    assert_true(st.part_in[0].n >= 3 && st.part_in[1].n >= 1);

    /* One partition over every tuple: more groups than a chunk holds. */
    spare_task(COHORT__STAGE__STAGE_TAGGED, 1, &st.tuples, &hs_whole);
    assert_true(ref->n_groups > 7);
    assert_true(hs_whole.n >= 2);
    memset(&whole, 0, sizeof whole);
    final_with(&whole, &hs_whole, NULL, NULL);
    {
        Cohort__SealedResult *sr = NULL;
        assert_int_equal(fx_aggregate_stage(&pop->tokens[0], FX_NOW + 20, plan.sp,
                                            COHORT__STAGE__STAGE_FINAL, 2, 7, true, whole.in.v,
                                            whole.in.n, 3, NULL, &sr),
                         TK_OK);
        rt = fx_open_result(sr, &pop->w, plan.query_id);
        compare_result(rt, ref, &qh);
        cohort__result_table__free_unpacked(rt, NULL);
        cohort__sealed_result__free_unpacked(sr, NULL);
    }
    fx_cts_free(&whole.in);

    run_cases(&st, tagged_cases, sizeof tagged_cases / sizeof tagged_cases[0], 100, ref, &qh);

    hs = NULL;
    fx_cts_free(&hs_other);
    fx_cts_free(&hs_whole);
    study_free(&st);
    fx_signed_free(&plan);
    fx_signed_free(&other);
    free(ref);
}

/*
 * The shuffle's hostile world: qa under shuffle (2 rounds, batches of at
 * least 4), three batches a round, grouping by tag in three partitions.
 */
static struct study *ss;

static void good_round1(struct task *k)
{
    set_task(k, COHORT__STAGE__STAGE_SHUFFLE, 1);
    cts_cat(&k->in, &ss->sh_in[0][0]);
}

static void good_round2(struct task *k)
{
    set_task(k, COHORT__STAGE__STAGE_SHUFFLE, 2);
    cts_cat(&k->in, &ss->sh_in[1][0]);
}

static void good_shuffle_tagged(struct task *k)
{
    set_task(k, COHORT__STAGE__STAGE_TAGGED, 1);
    cts_cat(&k->in, &ss->part_in[0]);
}

static void shuffle_batch_below_min(struct task *bad, struct task *good)
{
    good_round1(good);
    set_task(bad, COHORT__STAGE__STAGE_SHUFFLE, 1);
    cts_add(&bad->in, &ss->tuples, 0, 3);
}

static void shuffle_batch_empty(struct task *bad, struct task *good)
{
    good_round1(good);
    set_task(bad, COHORT__STAGE__STAGE_SHUFFLE, 1);
}

static void shuffle_item_twice(struct task *bad, struct task *good)
{
    good_round1(good);
    set_task(bad, COHORT__STAGE__STAGE_SHUFFLE, 1);
    cts_cat(&bad->in, &ss->sh_in[0][0]);
    cts_add(&bad->in, &ss->sh_in[0][0], 2, 3);
}

static void shuffle_item_twice_under_two_encryptions(struct task *bad, struct task *good)
{
    good_round2(good);
    set_task(bad, COHORT__STAGE__STAGE_SHUFFLE, 2);
    /* Round 1's batch 0 shuffled again elsewhere: the same items, fresh boxes. */
    task_ok(ss, COHORT__STAGE__STAGE_SHUFFLE, 1, ss->spare++, &ss->sh_in[0][0], &bad->in);
    cts_cat(&bad->in, &ss->sh_out[0][0]);
}

static void shuffle_round2_collected_tuple(struct task *bad, struct task *good)
{
    good_round2(good);
    set_task(bad, COHORT__STAGE__STAGE_SHUFFLE, 2);
    cts_add(&bad->in, &ss->sh_in[1][0], 0, 4);
    cts_add(&bad->in, &ss->tuples, 0, 1);
}

static void shuffle_round2_own_round(struct task *bad, struct task *good)
{
    good_round2(good);
    set_task(bad, COHORT__STAGE__STAGE_SHUFFLE, 2);
    cts_cat(&bad->in, &ss->sh_out[1][0]);
}

static void shuffle_round1_shuffled_item(struct task *bad, struct task *good)
{
    good_round1(good);
    set_task(bad, COHORT__STAGE__STAGE_SHUFFLE, 1);
    cts_cat(&bad->in, &ss->sh_out[0][1]);
}

static void shuffle_round1_tagged_item(struct task *bad, struct task *good)
{
    good_round1(good);
    set_task(bad, COHORT__STAGE__STAGE_SHUFFLE, 1);
    cts_add(&bad->in, &ss->sh_in[0][0], 0, 3);
    push_retagged(&bad->in, ss->sh_in[0][0].v[3], ss->sh_out[1][0].v[0]->tag.data);
}

static void shuffle_round2_partition_rewritten(struct task *bad, struct task *good)
{
    good_round2(good);
    set_task(bad, COHORT__STAGE__STAGE_SHUFFLE, 2);
    cts_cat(&bad->in, &ss->sh_in[1][0]);
    bad->in.v[1]->partition ^= 1;
}

static void shuffle_tagged_round1_output(struct task *bad, struct task *good)
{
    good_shuffle_tagged(good);
    set_task(bad, COHORT__STAGE__STAGE_TAGGED, 1);
    cts_add(&bad->in, &ss->part_in[0], 0, 1);
    push_retagged(&bad->in, ss->sh_out[0][0].v[0], ss->part_in[0].v[0]->tag.data);
}

static void shuffle_tagged_tag_rewritten(struct task *bad, struct task *good)
{
    good_shuffle_tagged(good);
    set_task(bad, COHORT__STAGE__STAGE_TAGGED, 1);
    push_retagged(&bad->in, ss->part_in[0].v[0], ss->part_in[1].v[0]->tag.data);
}

static void shuffle_tagged_collected_tuple(struct task *bad, struct task *good)
{
    good_shuffle_tagged(good);
    set_task(bad, COHORT__STAGE__STAGE_TAGGED, 1);
    cts_add(&bad->in, &ss->tuples, 0, 1);
}

static const struct hostile_case shuffle_cases[] = {
    {"a batch below shuffle_batch_min", shuffle_batch_below_min, TK_ERR_TOO_FEW, AT_END},
    {"an empty batch", shuffle_batch_empty, TK_ERR_TOO_FEW, AT_END},
    {"a batch with one item twice", shuffle_item_twice, TK_ERR_DUPLICATE, AT_END},
    {"one item twice under two encryptions", shuffle_item_twice_under_two_encryptions,
     TK_ERR_DUPLICATE, AT_END},
    {"a collected tuple in round 2", shuffle_round2_collected_tuple, TK_ERR_BINDING, AT_FEED},
    {"round 2's own outputs in round 2", shuffle_round2_own_round, TK_ERR_BINDING, AT_FEED},
    {"a shuffled item in round 1", shuffle_round1_shuffled_item, TK_ERR_BINDING, AT_FEED},
    {"a collected tuple with a tag", shuffle_round1_tagged_item, TK_ERR_BINDING, AT_FEED},
    {"an item moved to another batch", shuffle_round2_partition_rewritten, TK_ERR_DECRYPT, AT_FEED},
    {"a round-1 output grouped by tag", shuffle_tagged_round1_output, TK_ERR_BINDING, AT_FEED},
    {"a last-round tag rewritten", shuffle_tagged_tag_rewritten, TK_ERR_DECRYPT, AT_FEED},
    {"an unshuffled tuple grouped by tag", shuffle_tagged_collected_tuple, TK_ERR_BINDING, AT_FEED},
};

static void shuffle_stages_refuse_every_hostile_batch_with_its_exact_code(void **state)
{
    static const struct layout l = {1, false, 2, 3, 3, false, 8};
    struct fx_plan_spec spec;
    struct fx_signed plan;
    struct ref_result *ref = fx_alloc(sizeof *ref);
    Cohort__ResultTable *rt;
    struct study st;
    (void)state;

    qa_spec(&spec, "shuffle");
    spec.shuffle_rounds = 2;
    spec.shuffle_batch_min = 4;
    fx_plan_sign(&plan, &spec, &pop->w.researcher);
    ref_run(ref, &qa, all_tokens(N_TOKENS));
    study_init(&st, &plan, pop->tokens, N_TOKENS);
    ss = &st;
    rt = study_run(&st, &l, 6);
    compare_result(rt, ref, &qa);
    cohort__result_table__free_unpacked(rt, NULL);
    assert_true(st.n_parts >= 2);

    run_cases(&st, shuffle_cases, sizeof shuffle_cases / sizeof shuffle_cases[0], 200, ref, &qa);

    ss = NULL;
    study_free(&st);
    fx_signed_free(&plan);
    free(ref);
}

/* ------------------------------------------------ AggBegin and the plan */

/*
 * Each protocol has its own stages: s_agg merges; the tagged protocols
 * list, group by tag and filter; only the shuffle shuffles, for exactly its
 * rounds; FINAL and only FINAL (or s_agg's last merge) is final. A wrong
 * AggBegin is refused before anything starts, and leaves the token as it
 * was.
 */
static void agg_begin_refuses_a_stage_the_plan_does_not_have(void **state)
{
    enum { S_AGG, RNF, SHUFFLE };
    static const struct {
        const char *name;
        int plan;
        int stage;
        uint32_t level;
        bool final;
    } cases[] = {
        {"SHUFFLE for rnf_noise", RNF, COHORT__STAGE__STAGE_SHUFFLE, 1, false},
        {"MERGE for rnf_noise", RNF, COHORT__STAGE__STAGE_MERGE, 1, false},
        {"a final MERGE for rnf_noise", RNF, COHORT__STAGE__STAGE_MERGE, 2, true},
        {"FINAL without final", RNF, COHORT__STAGE__STAGE_FINAL, 2, false},
        {"a final TAGGED", RNF, COHORT__STAGE__STAGE_TAGGED, 1, true},
        {"a final KEYS", RNF, COHORT__STAGE__STAGE_KEYS, 1, true},
        {"a stage past FINAL", RNF, COHORT__STAGE__STAGE_FINAL + 1, 1, false},
        {"level 0", RNF, COHORT__STAGE__STAGE_TAGGED, 0, false},
        {"a round beyond shuffle_rounds", SHUFFLE, COHORT__STAGE__STAGE_SHUFFLE, 3, false},
        {"a final SHUFFLE", SHUFFLE, COHORT__STAGE__STAGE_SHUFFLE, 1, true},
        {"MERGE for shuffle", SHUFFLE, COHORT__STAGE__STAGE_MERGE, 1, false},
        {"KEYS for s_agg", S_AGG, COHORT__STAGE__STAGE_KEYS, 1, false},
        {"TAGGED for s_agg", S_AGG, COHORT__STAGE__STAGE_TAGGED, 1, false},
        {"SHUFFLE for s_agg", S_AGG, COHORT__STAGE__STAGE_SHUFFLE, 1, false},
        {"FINAL for s_agg", S_AGG, COHORT__STAGE__STAGE_FINAL, 2, true},
    };
    struct fx_plan_spec spec;
    struct fx_signed plans[3];
    struct fx_token *t = &pop->tokens[5];
    uint8_t session[TK_SESSION_ID_LEN];
    size_t i;
    (void)state;

    fx_plan_default(&spec);
    fx_plan_sign(&plans[S_AGG], &spec, &pop->w.researcher);
    spec.protocol = "rnf_noise";
    spec.tag_buckets = 4;
    fx_plan_sign(&plans[RNF], &spec, &pop->w.researcher);
    spec.protocol = "shuffle";
    spec.tag_buckets = 0;
    spec.shuffle_rounds = 2;
    spec.shuffle_batch_min = 3;
    fx_plan_sign(&plans[SHUFFLE], &spec, &pop->w.researcher);

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct fx_snapshot snap;
        int rc;
        fx_snapshot_take(&snap, t);
        rc = fx_agg_begin_stage(t, FX_NOW, plans[cases[i].plan].sp, cases[i].stage, cases[i].level,
                                0, cases[i].final, session);
        if (rc != TK_ERR_BINDING)
            fail_msg("%s: %s, not TK_ERR_BINDING", cases[i].name, tk_errname(rc));
        fx_snapshot_check(&snap, t, false);
        fx_snapshot_free(&snap);
    }
    /* The stages each plan does have. */
    assert_int_equal(fx_agg_begin_stage(t, FX_NOW, plans[S_AGG].sp, COHORT__STAGE__STAGE_MERGE, 1,
                                        0, true, session),
                     TK_OK);
    assert_int_equal(fx_agg_begin_stage(t, FX_NOW, plans[RNF].sp, COHORT__STAGE__STAGE_FINAL, 2, 0,
                                        true, session),
                     TK_OK);
    assert_int_equal(fx_agg_begin_stage(t, FX_NOW, plans[SHUFFLE].sp, COHORT__STAGE__STAGE_SHUFFLE,
                                        2, 0, false, session),
                     TK_OK);
    assert_int_equal(fx_agg_begin_stage(t, FX_NOW, plans[SHUFFLE].sp, COHORT__STAGE__STAGE_KEYS, 1,
                                        0, false, session),
                     TK_OK);
    for (i = 0; i < 3; i++)
        fx_signed_free(&plans[i]);
}

/*
 * Each protocol takes exactly its own parameters, within their limits: a
 * plan that breaks a rule is refused at collection (TK_ERR_BAD_PLAN) before
 * any row is read or anything is logged.
 */
static void plan_parameters_outside_their_protocols_rules_are_refused_at_collection(void **state)
{
    static const struct {
        const char *name;
        const char *protocol;
        uint32_t tuples, buckets, fakes, rounds, batch_min;
        const ProtobufCBinaryData *bounds;
        size_t n_bounds;
        int rc;
    } cases[] = {
        {"s_agg with tag_buckets", "s_agg", 6, 4, 0, 0, 0, NULL, 0, TK_ERR_BAD_PLAN},
        {"s_agg with fakes", "s_agg", 6, 0, 2, 0, 0, NULL, 0, TK_ERR_BAD_PLAN},
        {"s_agg with shuffle_rounds", "s_agg", 6, 0, 0, 1, 0, NULL, 0, TK_ERR_BAD_PLAN},
        {"s_agg with bucket_bounds", "s_agg", 6, 0, 0, 0, 0, region_bounds, 2, TK_ERR_BAD_PLAN},
        {"rnf_noise without buckets", "rnf_noise", 6, 0, 2, 0, 0, NULL, 0, TK_ERR_BAD_PLAN},
        {"rnf_noise with 257 fakes", "rnf_noise", 6, 4, 257, 0, 0, NULL, 0, TK_ERR_BAD_PLAN},
        {"rnf_noise with 4097 buckets", "rnf_noise", 6, 4097, 0, 0, 0, NULL, 0, TK_ERR_BAD_PLAN},
        {"rnf_noise with shuffle_batch_min", "rnf_noise", 6, 4, 0, 0, 2, NULL, 0, TK_ERR_BAD_PLAN},
        {"c_noise with buckets x K above 4096", "c_noise", 8, 1024, 0, 0, 0, NULL, 0,
         TK_ERR_BAD_PLAN},
        {"c_noise with fakes", "c_noise", 6, 4, 1, 0, 0, NULL, 0, TK_ERR_BAD_PLAN},
        {"c_noise with bucket_bounds", "c_noise", 6, 3, 0, 0, 0, region_bounds, 2, TK_ERR_BAD_PLAN},
        {"ed_hist with unsorted bounds", "ed_hist", 6, 3, 0, 0, 0, region_bounds_unsorted, 2,
         TK_ERR_BAD_PLAN},
        {"ed_hist with equal bounds", "ed_hist", 6, 3, 0, 0, 0, region_bounds_equal, 2,
         TK_ERR_BAD_PLAN},
        {"ed_hist with tag_buckets = bounds", "ed_hist", 6, 2, 0, 0, 0, region_bounds, 2,
         TK_ERR_BAD_PLAN},
        {"ed_hist with tag_buckets = bounds + 2", "ed_hist", 6, 4, 0, 0, 0, region_bounds, 2,
         TK_ERR_BAD_PLAN},
        {"ed_hist with fakes", "ed_hist", 6, 3, 1, 0, 0, region_bounds, 2, TK_ERR_BAD_PLAN},
        {"shuffle with batch_min 1", "shuffle", 6, 0, 0, 2, 1, NULL, 0, TK_ERR_BAD_PLAN},
        {"shuffle with batch_min 0", "shuffle", 6, 0, 0, 2, 0, NULL, 0, TK_ERR_BAD_PLAN},
        {"shuffle without rounds", "shuffle", 6, 0, 0, 0, 4, NULL, 0, TK_ERR_BAD_PLAN},
        {"shuffle with 9 rounds", "shuffle", 6, 0, 0, 9, 4, NULL, 0, TK_ERR_BAD_PLAN},
        {"shuffle with tag_buckets", "shuffle", 6, 4, 0, 2, 4, NULL, 0, TK_ERR_BAD_PLAN},
        {"an unknown protocol", "sorted_tags", 6, 0, 0, 0, 0, NULL, 0, TK_ERR_UNSUPPORTED},
    };
    struct fx_token *t = &pop->tokens[2];
    size_t i;
    (void)state;

    /* The bounds that the cases break are sound on their own. */
    assert_int_equal(tk_plan_emit("c_noise", 8, 512, 0), 4096);
    assert_int_equal(tk_plan_emit("c_noise", 8, 1024, 0), 0);
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct fx_plan_spec spec;
        struct fx_signed plan;
        struct fx_snapshot snap;
        int rc;
        qa_spec(&spec, cases[i].protocol);
        spec.tuples = cases[i].tuples;
        spec.tag_buckets = cases[i].buckets;
        spec.fakes = cases[i].fakes;
        spec.shuffle_rounds = cases[i].rounds;
        spec.shuffle_batch_min = cases[i].batch_min;
        spec.bounds = cases[i].bounds;
        spec.n_bounds = cases[i].n_bounds;
        fx_plan_sign(&plan, &spec, &pop->w.researcher);
        fx_snapshot_take(&snap, t);
        rc = fx_collect(t, FX_NOW, plan.sp, NULL);
        if (rc != cases[i].rc)
            fail_msg("%s: %s, not %s", cases[i].name, tk_errname(rc), tk_errname(cases[i].rc));
        fx_snapshot_check(&snap, t, false);
        fx_snapshot_free(&snap);
        fx_signed_free(&plan);
    }
    /* At the limit, c_noise's 4096 ciphertexts are sent. */
    {
        struct fx_plan_spec spec;
        struct fx_signed plan;
        Cohort__TokenResponse *r;
        size_t cap = t->resp_cap;
        qa_spec(&spec, "c_noise");
        spec.tuples = 8;
        spec.tag_buckets = 512;
        fx_plan_sign(&plan, &spec, &pop->w.researcher);
        t->resp_cap = 8u << 20;
        assert_int_equal(fx_collect(t, FX_NOW, plan.sp, &r), TK_OK);
        t->resp_cap = cap;
        assert_int_equal(r->contribution->n_tuples, 4096);
        cohort__token_response__free_unpacked(r, NULL);
        fx_signed_free(&plan);
    }
}

/* ----------------------------------------------------------- small RAM */

/*
 * Eight tokens with the least arena a token may have (TK_ARENA_MIN) and
 * the rows of the population's first eight run every stage of a small
 * plan, under every grouping protocol, within that RAM.
 */
static void tokens_with_the_minimum_arena_run_every_stage_of_a_small_plan(void **state)
{
    static const struct {
        const char *protocol;
        uint32_t buckets, fakes, rounds, batch_min;
        const ProtobufCBinaryData *bounds;
        size_t n_bounds;
        struct layout l;
    } runs[] = {
        {"shuffle", 0, 0, 2, 4, NULL, 0, {2, true, 2, 2, 3, true, 3}},
        {"rnf_noise", 3, 2, 0, 0, NULL, 0, {2, true, 0, 0, 3, true, 4}},
        {"c_noise", 3, 0, 0, 0, NULL, 0, {2, false, 0, 0, 3, true, 6}},
        {"ed_hist", 2, 0, 0, 0, sex_bounds, 1, {1, false, 0, 0, 2, true, 2}},
    };
    struct fx_token *small = fx_alloc(N_SMALL * sizeof *small);
    struct ref_result *ref = fx_alloc(sizeof *ref);
    size_t i, k;
    char subject[32];
    (void)state;

    for (i = 0; i < N_SMALL; i++) {
        fx_token_init(&small[i], TK_ARENA_MIN);
        snprintf(subject, sizeof subject, "small-%zu", i);
        fx_provision(&small[i], &pop->w, subject);
        assert_int_equal(fx_load_health(&small[i], pop->rows[i], pop->n_rows[i]), TK_OK);
    }
    ref_run(ref, &qs, all_tokens(N_SMALL));
    for (k = 0; k < sizeof runs / sizeof runs[0]; k++) {
        struct fx_plan_spec spec;
        struct fx_signed plan;
        struct study st;
        Cohort__ResultTable *rt;
        spec_from_query(&spec, &qs);
        spec.protocol = runs[k].protocol;
        spec.tuples = 4;
        spec.max_groups = 4;
        spec.tag_buckets = runs[k].buckets;
        spec.fakes = runs[k].fakes;
        spec.shuffle_rounds = runs[k].rounds;
        spec.shuffle_batch_min = runs[k].batch_min;
        spec.bounds = runs[k].bounds;
        spec.n_bounds = runs[k].n_bounds;
        fx_plan_sign(&plan, &spec, &pop->w.researcher);
        study_init(&st, &plan, small, N_SMALL);
        rt = study_run(&st, &runs[k].l,
                       tk_plan_emit(runs[k].protocol, 4, runs[k].buckets, runs[k].fakes));
        compare_result(rt, ref, &qs);
        cohort__result_table__free_unpacked(rt, NULL);
        study_free(&st);
        fx_signed_free(&plan);
    }
    for (i = 0; i < N_SMALL; i++) {
        assert_true(small[i].max_peak <= TK_ARENA_MIN);
        fx_token_free(&small[i]);
    }
    free(small);
    free(ref);
}

/*
 * tk_shuffle_capacity is what a coordinator sizes batches by: a token with
 * that arena takes a batch of exactly that many and shuffles it, and
 * refuses one item more (TK_ERR_NO_MEMORY) at the feed that brings it.
 */
static void the_shuffle_capacity_is_exactly_the_batch_a_token_accepts(void **state)
{
    static const size_t sizes[] = {TK_ARENA_MIN, 24 * 1024, 40 * 1024, TK_ARENA_DEFAULT};
    struct fx_plan_spec spec;
    struct fx_signed plan;
    struct fx_cts all = {0};
    size_t i, k;
    (void)state;

    spec_from_query(&spec, &qs);
    spec.protocol = "shuffle";
    spec.tuples = 32;
    spec.max_groups = 4;
    spec.shuffle_rounds = 1;
    spec.shuffle_batch_min = 2;
    fx_plan_sign(&plan, &spec, &pop->w.researcher);
    for (i = 0; i < N_TOKENS; i++)
        assert_int_equal(fx_collect_into(&pop->tokens[i], FX_NOW, plan.sp, &all), TK_OK);
    fx_cts_sort(&all);

    for (k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        struct fx_token t;
        struct fx_cts out = {0};
        uint8_t session[TK_SESSION_ID_LEN];
        uint32_t cap = tk_shuffle_capacity(sizes[k], all.v[0]->box.len);
        int rc;

        assert_true(cap >= 2 && cap < all.n);
        fx_token_init(&t, sizes[k]);
        fx_provision(&t, &pop->w, "capacity");
        rc = fx_aggregate_stage(&t, FX_NOW, plan.sp, COHORT__STAGE__STAGE_SHUFFLE, 1, 0, false,
                                all.v, cap, cap, &out, NULL);
        if (rc != TK_OK)
            fail_msg("arena %zu: a batch of capacity %u: %s", sizes[k], cap, tk_errname(rc));
        assert_int_equal(out.n, cap);
        assert_int_equal(fx_agg_begin_stage(&t, FX_NOW, plan.sp, COHORT__STAGE__STAGE_SHUFFLE, 1, 1,
                                            false, session),
                         TK_OK);
        assert_int_equal(fx_agg_feed(&t, FX_NOW, session, all.v, cap), TK_OK);
        rc = fx_agg_feed(&t, FX_NOW, session, all.v + cap, 1);
        if (rc != TK_ERR_NO_MEMORY)
            fail_msg("arena %zu: a batch of capacity %u + 1: %s", sizes[k], cap, tk_errname(rc));
        assert_true(t.max_peak <= sizes[k]);
        fx_cts_free(&out);
        fx_token_free(&t);
    }
    fx_cts_free(&all);
    fx_signed_free(&plan);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            rnf_noise_sends_k_plus_fakes_tagged_tuples_and_its_stages_match_the_reference),
        cmocka_unit_test(
            c_noise_sends_every_tag_exactly_k_times_and_its_stages_match_the_reference),
        cmocka_unit_test(ed_hist_tags_bounded_buckets_and_its_stages_match_the_reference),
        cmocka_unit_test(each_group_is_tagged_with_the_bucket_its_protocol_names),
        cmocka_unit_test(a_contributor_dropped_whole_leaves_the_result_of_the_others),
        cmocka_unit_test(shuffle_rounds_then_grouping_by_tag_match_the_reference),
        cmocka_unit_test(a_shuffle_round_emits_a_fresh_random_permutation_of_its_batch),
        cmocka_unit_test(tagged_stages_refuse_every_hostile_layout_with_its_exact_code),
        cmocka_unit_test(shuffle_stages_refuse_every_hostile_batch_with_its_exact_code),
        cmocka_unit_test(agg_begin_refuses_a_stage_the_plan_does_not_have),
        cmocka_unit_test(plan_parameters_outside_their_protocols_rules_are_refused_at_collection),
        cmocka_unit_test(tokens_with_the_minimum_arena_run_every_stage_of_a_small_plan),
        cmocka_unit_test(the_shuffle_capacity_is_exactly_the_batch_a_token_accepts),
    };
    return cmocka_run_group_tests(tests, population_setup, population_teardown);
}
