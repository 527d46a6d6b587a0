/*
 * Collection: a participant's token answers a plan with its contribution.
 *
 * After the plan is verified, the token scans its copy of the plan's table,
 * keeps the rows for which WHERE is true, and pre-aggregates them per group
 * in a table of tuples_per_participant entries. It then emits exactly that
 * many ciphertexts: one per group it found, the rest dummies, in a random
 * arrangement (aggregators insist on all of a contributor's chunks, so the
 * service can only drop whole contributions, never pick the real ones). Every
 * plaintext is padded to the same size, so the service sees the same
 * number of equally sized random-looking ciphertexts from every token,
 * whether its owner matched the WHERE clause or not.
 *
 * Each ciphertext is bound to (query, collection phase, level 0, partition
 * 0, chunk i of K, the contributor's pseudonym). The pseudonym is a keyed
 * hash of the device key under the query's pseudonym key: stable within a
 * query, so that duplicates are caught by aggregators, and unlinkable
 * across queries. A token with more groups than the plan allows refuses
 * (TK_ERR_TOO_MANY_GROUPS) rather than drop any.
 *
 * Under differential privacy (the plan's epsilon > 0) the token bounds
 * its owner's contribution instead, as tk_noise.c describes: it keeps the
 * first tuples_per_participant groups it meets and ignores rows of any
 * further group (a refusal would tell the service something), keeps the
 * first max_rows matching rows of each group in storage order, and
 * clamps every SUM and AVG argument into [-bound, bound].
 */
#include "token/tk_int.h"

struct collect {
    const struct tk_plan *plan;
    struct tk_groups *groups;
    bool mapped;
    bool used[TK_MAX_COLUMNS];
    int16_t map[TK_MAX_COLUMNS]; /* plan column -> table column */
};

static void mark_used(struct collect *c)
{
    const struct tk_plan *p = c->plan;
    uint16_t i;
    for (i = 0; i < p->n_group; i++)
        c->used[p->group_col[i]] = true;
    for (i = 0; i < p->n_aggs; i++)
        if (p->aggs[i].col >= 0)
            c->used[p->aggs[i].col] = true;
    for (i = 0; i < p->n_where; i++)
        if (p->where[i].op == COHORT__OP__OP_COLUMN)
            c->used[p->where[i].index] = true;
}

/* Map the plan's columns to the token's table by name; types must agree. */
static int map_columns(struct collect *c, const Cohort__TableSchema *s)
{
    const struct tk_plan *p = c->plan;
    uint16_t i;
    size_t j;
    for (i = 0; i < p->n_columns; i++) {
        c->map[i] = -1;
        if (!c->used[i])
            continue;
        for (j = 0; j < s->n_columns; j++)
            if (strcmp(s->columns[j]->name, p->columns[i].name) == 0)
                break;
        if (j == s->n_columns || (int)s->columns[j]->type != p->columns[i].type ||
            s->columns[j]->scale != p->columns[i].scale)
            return TK_ERR_BAD_PLAN;
        c->map[i] = (int16_t)j;
    }
    c->mapped = true;
    return TK_OK;
}

static int add_value(struct tk_agg_state *s, uint8_t func, const struct tk_value *v)
{
    switch (func) {
    case COHORT__AGG_FUNC__AGG_COUNT_STAR:
        s->count++;
        return TK_OK;
    case COHORT__AGG_FUNC__AGG_COUNT_PARTICIPANTS:
        s->count = 1;
        return TK_OK;
    default:
        break;
    }
    if (v->type == COHORT__VALUE_TYPE__VT_NULL)
        return TK_OK;
    switch (func) {
    case COHORT__AGG_FUNC__AGG_SUM:
    case COHORT__AGG_FUNC__AGG_AVG:
        if (__builtin_add_overflow(s->value, v->i, &s->value))
            return TK_ERR_OVERFLOW;
        break;
    case COHORT__AGG_FUNC__AGG_MIN:
        if (s->count == 0 || v->i < s->value)
            s->value = v->i;
        break;
    case COHORT__AGG_FUNC__AGG_MAX:
        if (s->count == 0 || v->i > s->value)
            s->value = v->i;
        break;
    default:
        break;
    }
    s->count++;
    return TK_OK;
}

static int on_row(void *ctx, const Cohort__TableSchema *schema, const Cohort__Row *row)
{
    struct collect *c = ctx;
    const struct tk_plan *p = c->plan;
    struct tk_value vals[TK_MAX_COLUMNS];
    struct tk_eval_ctx ev = {vals, NULL, NULL};
    uint8_t key[TK_GROUP_KEY_MAX];
    size_t key_len = 0;
    struct tk_group *g;
    uint16_t i;
    int keep, rc;

    if (!c->mapped && (rc = map_columns(c, schema)) != TK_OK)
        return rc;
    if (row->n_values != schema->n_columns)
        return TK_ERR_STORE;
    for (i = 0; i < p->n_columns; i++) {
        memset(&vals[i], 0, sizeof vals[i]);
        if (c->map[i] >= 0 && tk_value_from_pb(&vals[i], row->values[c->map[i]]) != TK_OK)
            return TK_ERR_STORE;
    }
    if ((rc = tk_eval(&keep, p->where, p->n_where, &ev)) != TK_OK)
        return rc;
    if (!keep)
        return TK_OK;
    for (i = 0; i < p->n_group; i++)
        key_len += tk_key_put(key + key_len, &vals[p->group_col[i]]);
    rc = tk_groups_get(&g, c->groups, key, key_len);
    if (p->epsilon > 0 && (rc == TK_ERR_TOO_MANY_GROUPS || (rc == TK_OK && g->rows >= p->max_rows)))
        return TK_OK; /* beyond the contribution bounds */
    if (rc != TK_OK)
        return rc;
    for (i = 0; i < p->n_aggs; i++) {
        static const struct tk_value null_value;
        const struct tk_value *v = p->aggs[i].col >= 0 ? &vals[p->aggs[i].col] : &null_value;
        struct tk_value clamped;
        if (p->epsilon > 0 && p->clamp[i] > 0 && v->type != COHORT__VALUE_TYPE__VT_NULL) {
            clamped = *v;
            if (clamped.i > p->clamp[i])
                clamped.i = p->clamp[i];
            if (clamped.i < -p->clamp[i])
                clamped.i = -p->clamp[i];
            v = &clamped;
        }
        if ((rc = add_value(&g->aggs[i], p->aggs[i].func, v)) != TK_OK)
            return rc;
    }
    g->rows++;
    g->participants = 1;
    return TK_OK;
}

/* The longest canonical group key of the plan's GROUP BY (see tk_key_put). */
static size_t group_key_max(const struct tk_plan *p)
{
    size_t n = 1;
    uint16_t i;
    for (i = 0; i < p->n_group; i++)
        n += p->columns[p->group_col[i]].type == COHORT__VALUE_TYPE__VT_TEXT ? 2 + TK_TEXT_MAX : 10;
    return n;
}

/*
 * A verified plan the token will not contribute to: log why (once per query
 * and reason), then fail with that status. A failing flash cannot log, and
 * is reported as itself.
 */
static int refuse(struct tk_call *c, const struct tk_plan *plan, const struct tk_admission *adm,
                  int status)
{
    int rc;
    if (status == TK_ERR_TAMPERED || status == TK_ERR_STORE)
        return status;
    if (c->reason[0] == '\0') {
        const char *why = tk_strerror(status);
        size_t n = strlen(why);
        if (n >= sizeof c->reason)
            n = sizeof c->reason - 1;
        memcpy(c->reason, why, n);
        c->reason[n] = '\0';
    }
    rc = tk_policy_record(c, plan, adm, status);
    return rc != TK_OK ? rc : status;
}

/*
 * What one contribution carries: `emit` entries, each a real group (an
 * index into the token's group table) or a fake, and for the tagged
 * protocols the bucket its tag names. s_agg and shuffle pad the groups
 * with dummies (no tag); rnf_noise and ed_hist turn the padding into fakes
 * with a uniformly random bucket, and rnf_noise adds `fakes` more; c_noise
 * fills every bucket to exactly `tuples` entries, so that every
 * participant sends every tag equally often.
 */
#define ENTRY_FAKE 0xffffu

struct entry {
    uint16_t group;
    uint32_t bucket;
};

static void shuffle_entries(struct entry *e, size_t n)
{
    size_t i;
    for (i = n; i > 1; i--) {
        uint32_t j = randombytes_uniform((uint32_t)i);
        struct entry t = e[i - 1];
        e[i - 1] = e[j];
        e[j] = t;
    }
}

static uint32_t group_bucket(const struct tk_plan *p, const struct tk_query_keys *k,
                             const struct tk_groups *g, uint32_t i)
{
    const struct tk_group *e = tk_groups_at(g, i);
    return tk_bucket_of(p, k, tk_groups_key(g, e), e->key_len);
}

/* One tuple: the entry, framed and encrypted as chunk i. */
static int emit_one(struct tk_call *c, const struct tk_plan *p, const struct tk_query_keys *k,
                    const struct tk_groups *groups, const uint8_t *pseudonym, uint8_t *plain,
                    const struct entry *e, uint32_t i)
{
    struct tk_arena *a = c->arena;
    size_t mark = tk_arena_mark(a);
    Cohort__TuplePlain t;
    Cohort__GroupPartial gp;
    uint8_t origin[TK_ORIGIN_LEN], tag[TK_TAG_BYTES];
    struct tk_binding b = {p->query_id, COHORT__PHASE__PHASE_COLLECT, 0,   0, i, p->emit,
                           pseudonym,   TK_CONTRIB_KEY_LEN,           NULL};
    int rc = TK_OK;

    cohort__tuple_plain__init(&t);
    t.first = i == 0;
    t.dummy = e->group == ENTRY_FAKE;
    if (!t.dummy) {
        rc = tk_group_to_pb(&gp, a, p, groups, tk_groups_at(groups, e->group));
        t.group = &gp;
    }
    if (p->protocol != TK_PROTO_S_AGG) {
        tk_origin(origin, k, pseudonym, i);
        t.origin.data = origin;
        t.origin.len = sizeof origin;
    }
    if (p->protocol == TK_PROTO_RNF_NOISE || p->protocol == TK_PROTO_C_NOISE ||
        p->protocol == TK_PROTO_ED_HIST) {
        tk_tag_bucket(tag, k, e->bucket);
        b.tag = tag;
    }
    if (rc == TK_OK)
        rc = tk_frame_pack(plain, p->tuple_plain_len, &t.base);
    if (rc == TK_OK)
        tk_write_ciphertext(c->out, 3, &b, plain, p->tuple_plain_len, k->ndet);
    tk_arena_release(a, mark);
    return rc;
}

/* Contribution { query_id, key, tuples } as TokenResponse.contribution. */
static int emit(struct tk_call *c, const struct tk_plan *p, const struct tk_query_keys *k,
                const struct tk_groups *groups, const uint8_t *pseudonym, uint8_t *plain)
{
    struct entry e[TK_MAX_TUPLES + TK_MAX_FAKES];
    struct tk_binding b = {p->query_id, COHORT__PHASE__PHASE_COLLECT, 0,   0, 0, p->emit,
                           pseudonym,   TK_CONTRIB_KEY_LEN,           NULL};
    uint8_t tag[TK_TAG_BYTES];
    size_t body_len, n = 0;
    uint32_t i, j, bucket;
    bool tagged = p->protocol == TK_PROTO_RNF_NOISE || p->protocol == TK_PROTO_C_NOISE ||
                  p->protocol == TK_PROTO_ED_HIST;
    int rc = TK_OK;

    if (tagged)
        b.tag = tag; /* its bytes do not change the length */
    body_len = tk_field_len(1, TK_QUERY_ID_LEN) + tk_field_len(2, TK_CONTRIB_KEY_LEN);
    for (i = 0; i < p->emit; i++) {
        b.chunk = i;
        body_len += tk_field_len(3, tk_ciphertext_len(&b, p->tuple_plain_len));
    }
    tk_w_open(c->out, 5, body_len);
    tk_w_bytes(c->out, 1, p->query_id, TK_QUERY_ID_LEN);
    tk_w_bytes(c->out, 2, pseudonym, TK_CONTRIB_KEY_LEN);

    if (p->protocol == TK_PROTO_C_NOISE) {
        /* Bucket by bucket, `tuples` entries each, in a random order within
         * the bucket: every tag appears exactly `tuples` times. */
        for (bucket = 0, i = 0; bucket < p->buckets && rc == TK_OK; bucket++) {
            n = 0;
            for (j = 0; j < groups->n; j++)
                if (group_bucket(p, k, groups, j) == bucket)
                    e[n++] = (struct entry){(uint16_t)j, bucket};
            while (n < p->tuples)
                e[n++] = (struct entry){ENTRY_FAKE, bucket};
            shuffle_entries(e, n);
            for (j = 0; j < n && rc == TK_OK; j++, i++)
                rc = emit_one(c, p, k, groups, pseudonym, plain, &e[j], i);
        }
        return rc;
    }
    for (j = 0; j < groups->n; j++)
        e[n++] = (struct entry){(uint16_t)j, tagged ? group_bucket(p, k, groups, j) : 0};
    while (n < p->emit)
        e[n++] = (struct entry){ENTRY_FAKE, tagged ? randombytes_uniform(p->buckets) : 0};
    /* A uniformly random arrangement, so that the chunk numbers the service
     * sees say nothing of which ciphertexts are real. */
    shuffle_entries(e, n);
    for (i = 0; i < n && rc == TK_OK; i++)
        rc = emit_one(c, p, k, groups, pseudonym, plain, &e[i], i);
    return rc;
}

int tk_do_collect(struct tk_call *c, const Cohort__Collect *req)
{
    struct tk_token *tk = c->tk;
    struct tk_arena *a = c->arena;
    struct tk_plan plan;
    struct tk_admission adm;
    struct tk_groups groups;
    struct collect col;
    struct tk_query_keys keys;
    uint8_t pseudonym[TK_CONTRIB_KEY_LEN];
    uint8_t *plain;
    bool found;
    int rc;

    if (!tk_has_flag(tk, TK_FLAG_PROVISIONED))
        return TK_ERR_NOT_PROVISIONED;
    if ((rc = tk_plan_load(tk, a, &plan, req->plan, c->now, TK_PLAN_COLLECT)) != TK_OK)
        return rc;
    /* The owner's consent and budget, before any of the owner's rows is read. */
    if ((rc = tk_policy_check(c, &plan, &adm)) != TK_OK)
        return refuse(c, &plan, &adm, rc);
    /* A token does not contribute to a study that tokens like it could not
     * aggregate: its owner's data would be spent for nothing. */
    if (plan.aggregate_ram > a->cap)
        return refuse(c, &plan, &adm, TK_ERR_NO_MEMORY);
    if ((rc = tk_table_exists(tk, a, plan.table, &found)) != TK_OK)
        return refuse(c, &plan, &adm, rc);
    if (!found)
        return refuse(c, &plan, &adm, TK_ERR_NO_TABLE);
    /*
     * Accepted: the entry and its debit are durable before any of the
     * owner's rows is read, and so before anything can leave the token. A
     * failure from here on (a flash found tampered, a column whose type
     * differs from the plan's) spends the budget without a contribution:
     * the safe direction.
     */
    if ((rc = tk_policy_record(c, &plan, &adm, TK_OK)) != TK_OK)
        return rc;
    if ((rc = tk_groups_init(&groups, a, plan.tuples, plan.n_aggs,
                             (size_t)plan.tuples * group_key_max(&plan), false)) != TK_OK)
        return rc;
    memset(&col, 0, sizeof col);
    col.plan = &plan;
    col.groups = &groups;
    mark_used(&col);
    if ((rc = tk_table_scan(tk, a, plan.table, on_row, &col)) != TK_OK)
        return rc;

    plain = tk_arena_scratch(a, plan.tuple_plain_len);
    if (plain == NULL)
        return TK_ERR_NO_MEMORY;
    tk_query_keys(&keys, tk->group_secret, plan.query_id);
    crypto_generichash(pseudonym, sizeof pseudonym, tk->sign_pk, TK_PK_LEN, keys.pseudonym,
                       sizeof keys.pseudonym);
    rc = emit(c, &plan, &keys, &groups, pseudonym, plain);
    sodium_memzero(plain, plan.tuple_plain_len);
    tk_query_keys_wipe(&keys);
    return rc;
}
