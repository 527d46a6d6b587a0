/*
 * Group tables: per-group partial aggregates in the arena.
 *
 * A table has a fixed capacity (the plan's max_groups during aggregation,
 * tuples_per_participant during collection), fixed-stride entries holding
 * the counters, an open-addressing index twice the capacity, and a key heap
 * for the canonical group keys. More groups than the capacity is an error
 * (TK_ERR_TOO_MANY_GROUPS), never a silent drop.
 *
 * Aggregate states merge associatively and commutatively, so partials can
 * be combined in any tree: COUNT adds counts; SUM and AVG add counts and
 * sums (overflow is an error, TK_ERR_OVERFLOW); MIN and MAX keep the
 * extreme of the non-empty sides.
 */
#include "token/tk_int.h"

static uint32_t hash_key(const uint8_t *key, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a: the key is trusted plaintext here */
    size_t i;
    for (i = 0; i < len; i++) {
        h ^= key[i];
        h *= 16777619u;
    }
    return h;
}

size_t tk_groups_size(uint32_t cap, uint32_t n_aggs)
{
    uint32_t slots = 4;
    while (slots < 2 * cap)
        slots <<= 1;
    return slots * sizeof(uint32_t) +
           (size_t)cap * (sizeof(struct tk_group) + n_aggs * sizeof(struct tk_agg_state));
}

int tk_groups_init(struct tk_groups *g, struct tk_arena *a, uint32_t cap, uint32_t n_aggs,
                   size_t key_heap, bool keep)
{
    uint32_t slots = 4;
    void *(*get)(struct tk_arena *, size_t) = keep ? tk_arena_keep : tk_arena_scratch;

    memset(g, 0, sizeof *g);
    while (slots < 2 * cap)
        slots <<= 1;
    g->cap = cap;
    g->n_aggs = n_aggs;
    g->slots = slots;
    g->stride = sizeof(struct tk_group) + n_aggs * sizeof(struct tk_agg_state);
    g->index = get(a, slots * sizeof *g->index);
    g->entries = get(a, (size_t)cap * g->stride);
    if (keep) {
        g->arena = a;
    } else {
        g->keys = get(a, key_heap);
        g->keys_cap = key_heap;
    }
    if (g->index == NULL || g->entries == NULL || (!keep && g->keys == NULL))
        return TK_ERR_NO_MEMORY;
    memset(g->index, 0, slots * sizeof *g->index);
    return TK_OK;
}

struct tk_group *tk_groups_at(const struct tk_groups *g, uint32_t i)
{
    return (struct tk_group *)(g->entries + (size_t)i * g->stride);
}

const uint8_t *tk_groups_key(const struct tk_groups *g, const struct tk_group *e)
{
    return (g->keys ? g->keys : g->arena->base) + e->key_off;
}

int tk_groups_get(struct tk_group **out, struct tk_groups *g, const uint8_t *key, size_t key_len)
{
    uint32_t h = hash_key(key, key_len), s = h & (g->slots - 1);
    struct tk_group *e;
    uint8_t *dst;
    size_t off;

    for (;;) {
        uint32_t at = g->index[s];
        if (at == 0)
            break;
        e = tk_groups_at(g, at - 1);
        if (e->hash == h && e->key_len == key_len &&
            memcmp(tk_groups_key(g, e), key, key_len) == 0) {
            *out = e;
            return TK_OK;
        }
        s = (s + 1) & (g->slots - 1);
    }
    if (g->n == g->cap)
        return TK_ERR_TOO_MANY_GROUPS;
    if (g->keys != NULL) {
        if (key_len > g->keys_cap - g->keys_len)
            return TK_ERR_NO_MEMORY;
        dst = g->keys + g->keys_len;
        off = g->keys_len;
        g->keys_len += key_len;
    } else {
        dst = tk_arena_keep(g->arena, key_len);
        if (dst == NULL)
            return TK_ERR_NO_MEMORY;
        off = (size_t)(dst - g->arena->base);
    }
    e = tk_groups_at(g, g->n);
    memset(e, 0, g->stride);
    e->hash = h;
    e->key_len = (uint16_t)key_len;
    e->key_off = (uint32_t)off;
    memcpy(dst, key, key_len);
    g->index[s] = ++g->n;
    *out = e;
    return TK_OK;
}

int tk_agg_merge(struct tk_agg_state *into, const struct tk_agg_state *from, uint8_t func)
{
    if (from->count < 0)
        return TK_ERR_MALFORMED;
    if (from->count == 0)
        return TK_OK;
    switch (func) {
    case COHORT__AGG_FUNC__AGG_SUM:
    case COHORT__AGG_FUNC__AGG_AVG:
        if (__builtin_add_overflow(into->value, from->value, &into->value))
            return TK_ERR_OVERFLOW;
        break;
    case COHORT__AGG_FUNC__AGG_MIN:
        if (into->count == 0 || from->value < into->value)
            into->value = from->value;
        break;
    case COHORT__AGG_FUNC__AGG_MAX:
        if (into->count == 0 || from->value > into->value)
            into->value = from->value;
        break;
    default:
        break;
    }
    if (__builtin_add_overflow(into->count, from->count, &into->count))
        return TK_ERR_OVERFLOW;
    return TK_OK;
}

int tk_group_key_from_pb(uint8_t *key, size_t *key_len, const struct tk_plan *plan,
                         const Cohort__GroupPartial *p)
{
    size_t n = 0, i;
    if (p->n_key != plan->n_group)
        return TK_ERR_MALFORMED;
    for (i = 0; i < p->n_key; i++) {
        struct tk_value v;
        const struct tk_column *c = &plan->columns[plan->group_col[i]];
        if (tk_value_from_pb(&v, p->key[i]) != TK_OK)
            return TK_ERR_MALFORMED;
        if (v.type != COHORT__VALUE_TYPE__VT_NULL &&
            (v.type != c->type ||
             (v.type == COHORT__VALUE_TYPE__VT_DECIMAL && v.scale != c->scale)))
            return TK_ERR_MALFORMED;
        n += tk_key_put(key + n, &v);
    }
    *key_len = n;
    return TK_OK;
}

int tk_groups_merge_pb(struct tk_groups *g, const struct tk_plan *plan,
                       const Cohort__GroupPartial *p)
{
    uint8_t key[TK_GROUP_KEY_MAX];
    size_t key_len, i;
    struct tk_group *e;
    struct tk_agg_state tmp[TK_MAX_AGGS];
    int rc;

    if (p->n_aggs != plan->n_aggs)
        return TK_ERR_MALFORMED;
    if ((rc = tk_group_key_from_pb(key, &key_len, plan, p)) != TK_OK)
        return rc;
    if ((rc = tk_groups_get(&e, g, key, key_len)) != TK_OK)
        return rc;
    /* Merge into a copy so that a failure leaves the entry as it was. */
    memcpy(tmp, e->aggs, plan->n_aggs * sizeof *tmp);
    for (i = 0; i < plan->n_aggs; i++) {
        struct tk_agg_state from = {p->aggs[i]->count, p->aggs[i]->value};
        if ((rc = tk_agg_merge(&tmp[i], &from, plan->aggs[i].func)) != TK_OK)
            return rc;
    }
    if (__builtin_add_overflow(e->participants, p->participants, &e->participants) ||
        __builtin_add_overflow(e->rows, p->rows, &e->rows))
        return TK_ERR_OVERFLOW;
    memcpy(e->aggs, tmp, plan->n_aggs * sizeof *tmp);
    return TK_OK;
}

int tk_group_to_pb(Cohort__GroupPartial *out, struct tk_arena *a, const struct tk_plan *plan,
                   const struct tk_groups *g, const struct tk_group *e)
{
    Cohort__Value *vals, **vp;
    Cohort__AggState *st, **sp;
    const uint8_t *key = tk_groups_key(g, e);
    size_t pos = 0, i;

    cohort__group_partial__init(out);
    vals = tk_arena_scratch(a, plan->n_group * sizeof *vals + 1);
    vp = tk_arena_scratch(a, plan->n_group * sizeof *vp + 1);
    st = tk_arena_scratch(a, plan->n_aggs * sizeof *st);
    sp = tk_arena_scratch(a, plan->n_aggs * sizeof *sp);
    if (vals == NULL || vp == NULL || st == NULL || sp == NULL)
        return TK_ERR_NO_MEMORY;
    for (i = 0; i < plan->n_group; i++) {
        struct tk_value v;
        if (tk_key_get(&v, key, e->key_len, &pos) != TK_OK)
            return TK_ERR_MALFORMED;
        tk_value_to_pb(&vals[i], &v);
        vp[i] = &vals[i];
    }
    for (i = 0; i < plan->n_aggs; i++) {
        cohort__agg_state__init(&st[i]);
        st[i].count = e->aggs[i].count;
        st[i].value = e->aggs[i].value;
        sp[i] = &st[i];
    }
    out->n_key = plan->n_group;
    out->key = vp;
    out->participants = e->participants;
    out->rows = e->rows;
    out->n_aggs = plan->n_aggs;
    out->aggs = sp;
    return TK_OK;
}

void tk_agg_final(struct tk_value *out, const struct tk_plan *plan, uint32_t i,
                  const struct tk_agg_state *s)
{
    const struct tk_agg *g = &plan->aggs[i];
    const struct tk_column *c = g->col >= 0 ? &plan->columns[g->col] : NULL;
    unsigned k;

    memset(out, 0, sizeof *out);
    switch (g->func) {
    case COHORT__AGG_FUNC__AGG_COUNT_STAR:
    case COHORT__AGG_FUNC__AGG_COUNT:
    case COHORT__AGG_FUNC__AGG_COUNT_PARTICIPANTS:
        out->type = COHORT__VALUE_TYPE__VT_INT;
        out->i = s->count;
        return;
    default:
        break;
    }
    if (s->count == 0) {
        out->type = COHORT__VALUE_TYPE__VT_NULL;
        return;
    }
    if (g->func == COHORT__AGG_FUNC__AGG_AVG) {
        double d = (double)s->value / (double)s->count;
        for (k = 0; k < c->scale; k++)
            d /= 10.0;
        out->type = COHORT__VALUE_TYPE__VT_DOUBLE;
        out->d = d;
        return;
    }
    out->type = c->type;
    out->scale = c->scale;
    out->i = s->value;
}

int tk_frame_pack(uint8_t *out, size_t frame_len, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    if (frame_len < 2 || n > frame_len - 2 || n > 0xffff)
        return TK_ERR_TOO_LARGE;
    out[0] = (uint8_t)n;
    out[1] = (uint8_t)(n >> 8);
    protobuf_c_message_pack(m, out + 2);
    memset(out + 2 + n, 0, frame_len - 2 - n);
    return TK_OK;
}

int tk_frame_body(const uint8_t **body, size_t *body_len, const uint8_t *frame, size_t frame_len)
{
    size_t n;
    if (frame_len < 2)
        return TK_ERR_MALFORMED;
    n = (size_t)frame[0] | (size_t)frame[1] << 8;
    if (n > frame_len - 2)
        return TK_ERR_MALFORMED;
    *body = frame + 2;
    *body_len = n;
    return TK_OK;
}

int tk_groups_merge_fields(struct tk_groups *g, const struct tk_plan *plan, struct tk_arena *a,
                           const uint8_t *body, size_t len)
{
    struct tk_wfield f;
    size_t pos = 0;
    int rc = TK_OK, more;

    while (rc == TK_OK && (more = tk_wire_next(body, len, &pos, &f)) == 1) {
        size_t mark = tk_arena_mark(a);
        Cohort__GroupPartial *gp;
        if (f.field != 4)
            continue;
        gp = (Cohort__GroupPartial *)tk_unpack(a, &cohort__group_partial__descriptor, f.data, f.len,
                                               &rc);
        if (gp != NULL)
            rc = tk_groups_merge_pb(g, plan, gp);
        tk_arena_release(a, mark);
    }
    return rc != TK_OK ? rc : more < 0 ? more : TK_OK;
}
