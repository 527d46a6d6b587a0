/*
 * Accepting a plan: who signed it, under whose authority, within what scope,
 * and what exactly it asks.
 *
 * A SignedPlan carries the plan bytes, the researcher's signature over them
 * and a certificate chain: researcher first, then authorities, the last one
 * issued by a key the token was provisioned to trust. Checks run cheapest
 * and most telling first, each with its own error code: sizes, trust of the
 * root (TK_ERR_UNTRUSTED), each certificate's signature (TK_ERR_BAD_CERT),
 * validity (TK_ERR_EXPIRED), roles (TK_ERR_ROLE), the plan signature
 * (TK_ERR_BAD_SIGNATURE), then the plan itself (TK_ERR_BAD_PLAN,
 * TK_ERR_UNSUPPORTED), its times, and the researcher's scope (TK_ERR_SCOPE).
 *
 * A plan with differential privacy (epsilon > 0) must also bound what one
 * participant contributes: max_rows > 0, a contribution_bound > 0 when it
 * sums or averages, and no MIN or MAX (they have no mechanism here). This
 * file derives each noisy quantity's sensitivity from those bounds and
 * tries each quantity's noise scale, so that a plan whose noise the token
 * could not draw exactly is refused before any work (TK_ERR_BAD_PLAN);
 * tk_noise.c says what the noise is.
 *
 * A verdict is cached by query id until the plan expires, so a token that
 * aggregates several partitions of one query verifies its signatures once.
 * The decoded plan (struct tk_plan) lives in arena scratch; every name is
 * resolved to an index, and every program is statically checked, so later
 * phases index arrays without further checks.
 */
#include <math.h>

#include "token/tk_noise.h"

#define CLOCK_SKEW 300 /* seconds a plan may appear to come from the future */

static int copy_name(char out[TK_NAME_MAX + 1], const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > TK_NAME_MAX)
        return TK_ERR_BAD_PLAN;
    memcpy(out, s, n + 1);
    return TK_OK;
}

static int find_column(const struct tk_plan *p, const char *name)
{
    uint16_t i;
    if (name == NULL)
        return -1;
    for (i = 0; i < p->n_columns; i++)
        if (strcmp(p->columns[i].name, name) == 0)
            return i;
    return -1;
}

static bool valid_column_type(int t)
{
    return t == COHORT__VALUE_TYPE__VT_INT || t == COHORT__VALUE_TYPE__VT_DECIMAL ||
           t == COHORT__VALUE_TYPE__VT_TEXT || t == COHORT__VALUE_TYPE__VT_DATE ||
           t == COHORT__VALUE_TYPE__VT_BOOL || t == COHORT__VALUE_TYPE__VT_TIMESTAMP;
}

static int load_schema(struct tk_plan *p, const Cohort__Plan *pb)
{
    size_t i, j;
    const Cohort__TableSchema *s = pb->schema;
    if (s == NULL || s->n_columns == 0 || s->name == NULL || strcmp(s->name, pb->table) != 0)
        return TK_ERR_BAD_PLAN;
    if (s->n_columns > TK_MAX_COLUMNS)
        return TK_ERR_TOO_LARGE;
    p->n_columns = (uint16_t)s->n_columns;
    for (i = 0; i < s->n_columns; i++) {
        const Cohort__Column *c = s->columns[i];
        if (copy_name(p->columns[i].name, c->name) != TK_OK || !valid_column_type(c->type) ||
            c->scale > 18 || (c->scale != 0 && c->type != COHORT__VALUE_TYPE__VT_DECIMAL))
            return TK_ERR_BAD_PLAN;
        for (j = 0; j < i; j++)
            if (strcmp(p->columns[j].name, p->columns[i].name) == 0)
                return TK_ERR_BAD_PLAN;
        p->columns[i].type = (uint8_t)c->type;
        p->columns[i].scale = (uint8_t)c->scale;
    }
    return TK_OK;
}

static int load_aggs(struct tk_plan *p, const Cohort__Plan *pb)
{
    size_t i;
    if (pb->n_aggregates == 0)
        return TK_ERR_BAD_PLAN;
    if (pb->n_aggregates > TK_MAX_AGGS)
        return TK_ERR_TOO_LARGE;
    p->n_aggs = (uint16_t)pb->n_aggregates;
    for (i = 0; i < pb->n_aggregates; i++) {
        const Cohort__Aggregate *g = pb->aggregates[i];
        int col = -1, t;
        switch (g->func) {
        case COHORT__AGG_FUNC__AGG_COUNT_STAR:
        case COHORT__AGG_FUNC__AGG_COUNT_PARTICIPANTS:
            break;
        case COHORT__AGG_FUNC__AGG_COUNT:
        case COHORT__AGG_FUNC__AGG_SUM:
        case COHORT__AGG_FUNC__AGG_AVG:
        case COHORT__AGG_FUNC__AGG_MIN:
        case COHORT__AGG_FUNC__AGG_MAX:
            col = find_column(p, g->column);
            if (col < 0)
                return TK_ERR_BAD_PLAN;
            t = p->columns[col].type;
            if ((g->func == COHORT__AGG_FUNC__AGG_SUM || g->func == COHORT__AGG_FUNC__AGG_AVG) &&
                t != COHORT__VALUE_TYPE__VT_INT && t != COHORT__VALUE_TYPE__VT_DECIMAL)
                return TK_ERR_BAD_PLAN;
            if ((g->func == COHORT__AGG_FUNC__AGG_MIN || g->func == COHORT__AGG_FUNC__AGG_MAX) &&
                t == COHORT__VALUE_TYPE__VT_TEXT)
                return TK_ERR_BAD_PLAN;
            break;
        default:
            return TK_ERR_BAD_PLAN;
        }
        p->aggs[i].func = (uint8_t)g->func;
        p->aggs[i].col = (int16_t)col;
    }
    return TK_OK;
}

static int load_value(struct tk_value *v, const Cohort__Value *pb)
{
    int rc = tk_value_from_pb(v, pb);
    if (rc != TK_OK)
        return rc == TK_ERR_TOO_LARGE ? rc : TK_ERR_BAD_PLAN;
    return TK_OK;
}

int tk_program_load(const struct tk_instr **out, uint16_t *n_out, struct tk_arena *a,
                    const struct tk_plan *p, Cohort__Instr *const *in, size_t n, bool having)
{
    struct tk_instr *prog;
    size_t i, k;
    int rc;

    *out = NULL;
    *n_out = 0;
    if (n == 0)
        return TK_OK;
    if (n > TK_PROGRAM_MAX)
        return TK_ERR_TOO_LARGE;
    prog = tk_arena_scratch(a, n * sizeof *prog);
    if (prog == NULL)
        return TK_ERR_NO_MEMORY;
    memset(prog, 0, n * sizeof *prog);
    for (i = 0; i < n; i++) {
        const Cohort__Instr *x = in[i];
        prog[i].op = (uint8_t)x->op;
        if (x->op == COHORT__OP__OP_COLUMN) {
            int col = find_column(p, x->column);
            if (col < 0)
                return TK_ERR_BAD_PLAN;
            if (having) {
                uint16_t g;
                for (g = 0; g < p->n_group && p->group_col[g] != col; g++)
                    ;
                if (g == p->n_group)
                    return TK_ERR_BAD_PLAN;
                prog[i].index = g;
            } else {
                prog[i].index = (uint16_t)col;
            }
        } else if (x->op == COHORT__OP__OP_AGGREGATE) {
            if (x->index >= TK_MAX_AGGS)
                return TK_ERR_BAD_PLAN;
            prog[i].index = (uint16_t)x->index;
        }
        if (x->op == COHORT__OP__OP_CONST || x->op == COHORT__OP__OP_LIKE_PREFIX) {
            if ((rc = load_value(&prog[i].value, x->value)) != TK_OK)
                return rc;
        }
        if (x->op == COHORT__OP__OP_IN) {
            struct tk_value *list;
            if (x->n_list == 0 || x->n_list > TK_IN_LIST_MAX)
                return x->n_list ? TK_ERR_TOO_LARGE : TK_ERR_BAD_PLAN;
            list = tk_arena_scratch(a, x->n_list * sizeof *list);
            if (list == NULL)
                return TK_ERR_NO_MEMORY;
            for (k = 0; k < x->n_list; k++)
                if ((rc = load_value(&list[k], x->list[k])) != TK_OK)
                    return rc;
            prog[i].list = list;
            prog[i].n_list = (uint16_t)x->n_list;
        }
    }
    if ((rc = tk_program_check(prog, n, p, having)) != TK_OK)
        return rc;
    *out = prog;
    *n_out = (uint16_t)n;
    return TK_OK;
}

double tk_dp_sensitivity(const struct tk_plan *p, int agg, bool avg_count)
{
    double rows = (double)p->tuples * (double)p->max_rows;
    if (agg == TK_DP_PARTICIPANTS)
        return (double)p->tuples;
    switch (p->aggs[agg].func) {
    case COHORT__AGG_FUNC__AGG_COUNT_PARTICIPANTS:
        return (double)p->tuples;
    case COHORT__AGG_FUNC__AGG_COUNT_STAR:
    case COHORT__AGG_FUNC__AGG_COUNT:
        return rows;
    case COHORT__AGG_FUNC__AGG_SUM:
        return rows * (double)p->clamp[agg];
    case COHORT__AGG_FUNC__AGG_AVG:
        return avg_count ? rows : rows * (double)p->clamp[agg];
    default:
        return 0.0;
    }
}

/*
 * The differential-privacy part of the plan: the bounds, the clamp of
 * every SUM and AVG in the column's scaled units, the number of noisy
 * quantities, and a trial of every quantity's noise scale.
 */
static int load_dp(struct tk_plan *p, const Cohort__Privacy *pr)
{
    uint16_t i;
    struct tk_lap l;

    p->epsilon = pr != NULL ? pr->epsilon : 0.0;
    if (!(p->epsilon >= 0) || !isfinite(p->epsilon))
        return TK_ERR_BAD_PLAN;
    if (p->epsilon == 0)
        return TK_OK;
    if (pr->max_rows == 0 || pr->max_rows > TK_DP_MAX_ROWS)
        return TK_ERR_BAD_PLAN;
    p->max_rows = pr->max_rows;
    p->n_noisy = 1; /* the participant count of the threshold */
    for (i = 0; i < p->n_aggs; i++) {
        const struct tk_agg *g = &p->aggs[i];
        int64_t c = pr->contribution_bound;
        unsigned k;
        switch (g->func) {
        case COHORT__AGG_FUNC__AGG_MIN:
        case COHORT__AGG_FUNC__AGG_MAX:
            return TK_ERR_BAD_PLAN;
        case COHORT__AGG_FUNC__AGG_SUM:
        case COHORT__AGG_FUNC__AGG_AVG:
            if (c <= 0)
                return TK_ERR_BAD_PLAN;
            for (k = 0; k < p->columns[g->col].scale; k++)
                if (__builtin_mul_overflow(c, 10, &c))
                    return TK_ERR_BAD_PLAN;
            p->clamp[i] = c;
            break;
        default:
            break;
        }
        p->n_noisy += g->func == COHORT__AGG_FUNC__AGG_AVG ? 2 : 1;
    }
    if (tk_dp_sensitivity(p, TK_DP_PARTICIPANTS, false) > TK_DP_SENSITIVITY_MAX ||
        tk_dp_lap(&l, p, TK_DP_PARTICIPANTS, false) != TK_OK)
        return TK_ERR_BAD_PLAN;
    for (i = 0; i < p->n_aggs; i++)
        if (tk_dp_sensitivity(p, i, false) > TK_DP_SENSITIVITY_MAX ||
            tk_dp_lap(&l, p, i, false) != TK_OK || tk_dp_lap(&l, p, i, true) != TK_OK)
            return TK_ERR_BAD_PLAN;
    return TK_OK;
}

static const char *const protocol_names[] = {"s_agg", "rnf_noise", "c_noise", "ed_hist", "shuffle"};

static int protocol_of(const char *name)
{
    size_t i;
    for (i = 0; name != NULL && i < sizeof protocol_names / sizeof protocol_names[0]; i++)
        if (strcmp(name, protocol_names[i]) == 0)
            return (int)i;
    return -1;
}

uint32_t tk_plan_emit(const char *protocol, uint32_t tuples, uint32_t buckets, uint32_t fakes)
{
    if (tuples == 0 || tuples > TK_MAX_TUPLES)
        return 0;
    switch (protocol_of(protocol)) {
    case TK_PROTO_S_AGG:
    case TK_PROTO_ED_HIST:
    case TK_PROTO_SHUFFLE:
        return tuples;
    case TK_PROTO_RNF_NOISE:
        return fakes <= TK_MAX_FAKES ? tuples + fakes : 0;
    case TK_PROTO_C_NOISE:
        return buckets >= 1 && buckets <= TK_MAX_BUCKETS &&
                       (uint64_t)buckets * tuples <= TK_MAX_EMIT
                   ? buckets * tuples
                   : 0;
    default:
        return 0;
    }
}

/*
 * The grouping protocol and its parameters: each protocol takes exactly its
 * own fields, within their limits (s_agg none of them), and ed_hist's
 * bounds are canonical group keys in strictly increasing order.
 */
static int load_protocol(struct tk_plan *p, const Cohort__Plan *pb)
{
    int proto = protocol_of(pb->protocol);
    size_t i;

    if (proto < 0)
        return TK_ERR_UNSUPPORTED;
    p->protocol = (uint8_t)proto;
    if (pb->n_bucket_bounds >= TK_MAX_BUCKETS || pb->tag_buckets > TK_MAX_BUCKETS ||
        pb->fakes > TK_MAX_FAKES || pb->shuffle_rounds > TK_MAX_ROUNDS ||
        pb->shuffle_batch_min > 65535)
        return TK_ERR_BAD_PLAN;
    p->buckets = (uint16_t)pb->tag_buckets;
    p->fakes = (uint16_t)pb->fakes;
    p->rounds = (uint8_t)pb->shuffle_rounds;
    p->batch_min = (uint16_t)pb->shuffle_batch_min;
    p->bounds = pb->bucket_bounds;
    p->n_bounds = (uint16_t)pb->n_bucket_bounds;
    switch (proto) {
    case TK_PROTO_S_AGG:
        if (p->buckets || p->fakes || p->rounds || p->batch_min || p->n_bounds)
            return TK_ERR_BAD_PLAN;
        break;
    case TK_PROTO_RNF_NOISE:
    case TK_PROTO_C_NOISE:
        if (p->buckets == 0 || p->buckets > TK_MAX_BUCKETS || p->rounds || p->batch_min ||
            p->n_bounds || (proto == TK_PROTO_C_NOISE && p->fakes))
            return TK_ERR_BAD_PLAN;
        break;
    case TK_PROTO_ED_HIST:
        if (p->buckets != p->n_bounds + 1 || p->fakes || p->rounds || p->batch_min)
            return TK_ERR_BAD_PLAN;
        for (i = 0; i < p->n_bounds; i++)
            if (p->bounds[i].len == 0 || p->bounds[i].len > TK_GROUP_KEY_MAX ||
                (i > 0 && tk_key_cmp(p->bounds[i - 1].data, p->bounds[i - 1].len, p->bounds[i].data,
                                     p->bounds[i].len) >= 0))
                return TK_ERR_BAD_PLAN;
        break;
    default: /* shuffle */
        if (p->rounds == 0 || p->batch_min < 2 || p->buckets || p->fakes || p->n_bounds)
            return TK_ERR_BAD_PLAN;
        break;
    }
    p->emit = (uint16_t)tk_plan_emit(pb->protocol, p->tuples, p->buckets, p->fakes);
    return p->emit == 0 ? TK_ERR_BAD_PLAN : TK_OK;
}

size_t tk_shuffle_item_len(size_t tuple_plain_len)
{
    /* origin and the framed plaintext, 8-aligned */
    return (TK_ORIGIN_LEN + tuple_plain_len + 7) & ~(size_t)7;
}

/* An item's share of a batch: its slot at the arena's low end and its place
 * in the permutation (4 bytes of scratch at AggEnd). */
static size_t shuffle_item_cost(size_t tuple_plain_len)
{
    return tk_shuffle_item_len(tuple_plain_len) + sizeof(uint32_t);
}

/* The arena a shuffle session needs besides its items: its state, and the
 * scratch of one input (decoded, decrypted) or one output at a time. */
static size_t shuffle_overhead(size_t tuple_plain_len)
{
    return tk_session_size() + tk_tagged_size() + 3 * tuple_plain_len + 4096;
}

uint32_t tk_shuffle_capacity(size_t arena_len, size_t box_len)
{
    size_t plain, over, n;
    if (box_len <= TK_TAG_LEN)
        return 0;
    plain = box_len - TK_TAG_LEN;
    over = shuffle_overhead(plain);
    if (arena_len <= over)
        return 0;
    n = (arena_len - over) / shuffle_item_cost(plain);
    return n > 65535 ? 65535 : (uint32_t)n;
}

/*
 * Every token derives the same fixed sizes from the plan's shape: whether
 * it is tagged (any protocol but s_agg) or a shuffle, its GROUP BY columns
 * (TEXT ones are the longest), aggregates, max_groups (1 without GROUP BY),
 * shuffle batch_min and HAVING program length. Returns TK_OK, or
 * TK_ERR_BAD_PLAN when no chunk can hold a group or a partial needs more
 * than TK_MAX_CHUNKS chunks.
 */
static int layout_sizes(struct tk_layout *l, bool tagged, bool shuffle, uint32_t group_columns,
                        uint32_t text_columns, uint32_t n_aggs, uint32_t max_groups,
                        uint32_t batch_min, uint32_t n_having)
{
    size_t gb = 22 + 24 * (size_t)n_aggs, hdr = 2 + 55 + (tagged ? 11 + 18 : 0), per, gpc;
    uint32_t i;
    for (i = 0; i < group_columns; i++)
        gb += i < text_columns ? 2 + 2 + 2 + TK_TEXT_MAX : 2 + 2 + 11 + 2;
    l->group_bound = gb;
    l->tuple_plain_len = 2 + 4 + 1 + tk_varint_len(gb) + gb + (tagged ? 2 + TK_ORIGIN_LEN : 0);
    l->shuffle_item_len = tk_shuffle_item_len(l->tuple_plain_len);
    l->shuffle_overhead = shuffle_overhead(l->tuple_plain_len);
    per = 1 + tk_varint_len(gb) + gb;
    if (hdr + per > TK_CHUNK_PLAIN_MAX)
        return TK_ERR_BAD_PLAN;
    gpc = (TK_CHUNK_PLAIN_MAX - hdr) / per;
    if (gpc > max_groups)
        gpc = max_groups;
    l->groups_per_chunk = (uint32_t)gpc;
    l->nchunks = (uint32_t)((max_groups + gpc - 1) / gpc);
    l->chunk_plain_len = hdr + gpc * per;
    if (l->nchunks > TK_MAX_CHUNKS)
        return TK_ERR_BAD_PLAN;
    /*
     * What an aggregation session needs at most, bar unusually long group
     * keys (counted at 24 bytes each): its state and HAVING program, the
     * group table and its keys, and then the larger of what a feed needs
     * (a chunk, decrypted in place, and one decoded group at a time) and
     * what the final result needs (one part of it at a time).
     */
    {
        size_t feed = l->chunk_plain_len + 4096;
        size_t result = TK_RESULT_PART + 4096;
        l->aggregate_ram = tk_session_size() + (tagged ? tk_tagged_size() : 0) +
                           (size_t)n_having * sizeof(struct tk_instr) +
                           tk_groups_size(max_groups, n_aggs) + (size_t)max_groups * 24 +
                           (feed > result ? feed : result);
    }
    /* A shuffle token must also hold a whole batch of the plan's minimum. */
    if (shuffle) {
        size_t batch = shuffle_overhead(l->tuple_plain_len) +
                       (size_t)batch_min * shuffle_item_cost(l->tuple_plain_len);
        if (batch > l->aggregate_ram)
            l->aggregate_ram = batch;
    }
    return TK_OK;
}

static int layout(struct tk_plan *p)
{
    struct tk_layout l;
    uint32_t text = 0;
    uint16_t i;
    int rc;
    /* A column's share of the group bound depends only on whether it is TEXT. */
    for (i = 0; i < p->n_group; i++)
        if (p->columns[p->group_col[i]].type == COHORT__VALUE_TYPE__VT_TEXT)
            text++;
    rc = layout_sizes(&l, p->protocol != TK_PROTO_S_AGG, p->protocol == TK_PROTO_SHUFFLE,
                      p->n_group, text, p->n_aggs, p->max_groups, p->batch_min, p->n_having);
    if (rc != TK_OK)
        return rc;
    p->group_bound = l.group_bound;
    p->tuple_plain_len = l.tuple_plain_len;
    p->chunk_plain_len = l.chunk_plain_len;
    p->groups_per_chunk = l.groups_per_chunk;
    p->nchunks = l.nchunks;
    p->aggregate_ram = l.aggregate_ram;
    return TK_OK;
}

int tk_layout_of(struct tk_layout *out, const char *protocol, uint32_t group_columns,
                 uint32_t text_columns, uint32_t n_aggs, uint32_t max_groups, uint32_t batch_min,
                 uint32_t n_having)
{
    int proto = protocol_of(protocol), rc;

    if (out == NULL)
        return TK_ERR_MALFORMED;
    memset(out, 0, sizeof *out);
    if (proto < 0 || group_columns > TK_MAX_GROUP_COLS || text_columns > group_columns ||
        n_aggs == 0 || n_aggs > TK_MAX_AGGS || max_groups == 0 || max_groups > TK_MAX_GROUPS ||
        batch_min > 65535 || n_having > TK_PROGRAM_MAX)
        return TK_ERR_MALFORMED;
    if (group_columns == 0)
        max_groups = 1;
    rc = layout_sizes(out, proto != TK_PROTO_S_AGG, proto == TK_PROTO_SHUFFLE, group_columns,
                      text_columns, n_aggs, max_groups, batch_min, n_having);
    if (rc != TK_OK)
        memset(out, 0, sizeof *out);
    return rc;
}

bool tk_name_listed(char *const *list, size_t n, const char *s)
{
    size_t i;
    if (n == 0)
        return true;
    for (i = 0; i < n; i++)
        if (list[i] != NULL && strcmp(list[i], s) == 0)
            return true;
    return false;
}

static bool column_in_scope(const Cohort__Scope *s, const char *table, const char *col)
{
    char full[2 * TK_NAME_MAX + 2];
    size_t tl = strlen(table), cl = strlen(col);
    if (s->n_columns == 0)
        return true;
    memcpy(full, table, tl);
    full[tl] = '.';
    memcpy(full + tl + 1, col, cl + 1);
    return tk_name_listed(s->columns, s->n_columns, full);
}

static int check_scope(const Cohort__CertBody *researcher, const Cohort__Plan *pb,
                       const struct tk_plan *p)
{
    const Cohort__Scope *s = researcher->scope;
    size_t i;
    if (s == NULL)
        return TK_OK;
    if (!tk_name_listed(s->tables, s->n_tables, p->table))
        return TK_ERR_SCOPE;
    if (!tk_name_listed(s->studies, s->n_studies, pb->study ? pb->study : ""))
        return TK_ERR_SCOPE;
    if (pb->privacy != NULL && pb->privacy->epsilon > s->max_epsilon)
        return TK_ERR_SCOPE;
    for (i = 0; i < p->n_group; i++)
        if (!column_in_scope(s, p->table, p->columns[p->group_col[i]].name))
            return TK_ERR_SCOPE;
    for (i = 0; i < p->n_aggs; i++)
        if (p->aggs[i].col >= 0 && !column_in_scope(s, p->table, p->columns[p->aggs[i].col].name))
            return TK_ERR_SCOPE;
    for (i = 0; i < p->n_where; i++)
        if (p->where[i].op == COHORT__OP__OP_COLUMN &&
            !column_in_scope(s, p->table, p->columns[p->where[i].index].name))
            return TK_ERR_SCOPE;
    return TK_OK;
}

/*
 * Who asks and for what, as the owner's policy and audit log name them:
 * the researcher's key and subject, the root authority the chain ends at
 * (already checked to be trusted), the study, epsilon and the SQL text.
 */
static int load_asker(struct tk_plan *p, struct tk_arena *a, const Cohort__SignedPlan *sp,
                      const Cohort__CertBody *researcher, const Cohort__Plan *pb)
{
    const Cohort__Certificate *last = sp->chain[sp->n_chain - 1];
    Cohort__CertBody *root;
    int rc = TK_OK;

    if (researcher->sign_pk.len != TK_PK_LEN)
        return TK_ERR_BAD_CERT;
    p->researcher_pk = researcher->sign_pk.data;
    p->researcher = researcher->subject ? researcher->subject : "";
    root = (Cohort__CertBody *)tk_unpack(a, &cohort__cert_body__descriptor, last->body.data,
                                         last->body.len, &rc);
    if (root == NULL)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_BAD_CERT;
    if (root->issuer_pk.len != TK_PK_LEN)
        return TK_ERR_BAD_CERT;
    p->root_pk = root->issuer_pk.data;
    p->study = pb->study ? pb->study : "";
    if (strlen(p->study) > TK_STUDY_MAX)
        return TK_ERR_BAD_PLAN;
    p->sql = pb->sql;
    p->sql_len = pb->sql ? strlen(pb->sql) : 0;
    return TK_OK;
}

/* The chain: trust of the root first, then signatures from the root down. */
/* The digest of the exact signed bytes, every field length-prefixed. */
static void digest_part(crypto_generichash_state *st, const uint8_t *p, size_t len)
{
    uint8_t n[8];
    size_t k;
    for (k = 0; k < 8; k++)
        n[k] = (uint8_t)((uint64_t)len >> (8 * k));
    crypto_generichash_update(st, n, sizeof n);
    crypto_generichash_update(st, p, len);
}

static void digest_signed(uint8_t out[32], const Cohort__SignedPlan *sp)
{
    crypto_generichash_state st;
    size_t i;
    crypto_generichash_init(&st, NULL, 0, 32);
    digest_part(&st, sp->plan.data, sp->plan.len);
    digest_part(&st, sp->signature.data, sp->signature.len);
    {
        uint8_t n = (uint8_t)sp->n_chain; /* at most TK_MAX_CHAIN, checked before */
        crypto_generichash_update(&st, &n, 1);
    }
    for (i = 0; i < sp->n_chain; i++) {
        digest_part(&st, sp->chain[i]->body.data, sp->chain[i]->body.len);
        digest_part(&st, sp->chain[i]->signature.data, sp->chain[i]->signature.len);
    }
    crypto_generichash_final(&st, out, 32);
}

static int check_chain(const Cohort__CertBody **researcher, int64_t *expiry, struct tk_token *tk,
                       struct tk_arena *a, const Cohort__SignedPlan *sp, int64_t now)
{
    Cohort__CertBody *bodies[TK_MAX_CHAIN];
    Cohort__CertBody *last;
    const uint8_t *issuer = NULL;
    size_t n = sp->n_chain, i;
    int rc = TK_OK;

    if (n == 0)
        return TK_ERR_BAD_CERT;
    if (n > TK_MAX_CHAIN)
        return TK_ERR_TOO_LARGE;
    if (sp->chain[n - 1]->body.len > TK_CERT_MAX)
        return TK_ERR_BAD_CERT;
    last =
        (Cohort__CertBody *)tk_unpack(a, &cohort__cert_body__descriptor,
                                      sp->chain[n - 1]->body.data, sp->chain[n - 1]->body.len, &rc);
    if (last == NULL)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_BAD_CERT;
    if (last->issuer_pk.len != TK_PK_LEN)
        return TK_ERR_BAD_CERT;
    for (i = 0; i < tk->n_authorities && issuer == NULL; i++)
        if (sodium_memcmp(tk->authorities[i], last->issuer_pk.data, TK_PK_LEN) == 0)
            issuer = tk->authorities[i];
    if (issuer == NULL)
        return TK_ERR_UNTRUSTED;
    for (i = n; i-- > 0;) {
        if ((rc = tk_cert_check(&bodies[i], a, sp->chain[i], issuer, now)) != TK_OK)
            return rc;
        if (bodies[i]->role !=
            (i == 0 ? COHORT__ROLE__ROLE_RESEARCHER : COHORT__ROLE__ROLE_AUTHORITY))
            return TK_ERR_ROLE;
        issuer = bodies[i]->sign_pk.data;
        if (bodies[i]->not_after < *expiry)
            *expiry = bodies[i]->not_after;
    }
    if (bodies[0]->box_pk.len != 32)
        return TK_ERR_BAD_CERT;
    *researcher = bodies[0];
    return TK_OK;
}

int tk_plan_load(struct tk_token *tk, struct tk_arena *a, struct tk_plan *p,
                 const Cohort__SignedPlan *sp, int64_t now, enum tk_plan_use use)
{
    const Cohort__CertBody *researcher = NULL;
    uint8_t digest[32];
    int64_t chain_expiry = INT64_MAX;
    Cohort__Plan *pb;
    size_t i;
    int slot = -1;
    int rc = TK_OK;

    memset(p, 0, sizeof *p);
    if (sp == NULL || sp->plan.len == 0)
        return TK_ERR_MALFORMED;
    if (sp->plan.len > TK_PLAN_MAX)
        return TK_ERR_TOO_LARGE;
    if (sp->signature.len != 64)
        return TK_ERR_BAD_SIGNATURE;
    if (sp->n_chain == 0)
        return TK_ERR_BAD_CERT;
    if (sp->n_chain > TK_MAX_CHAIN)
        return TK_ERR_TOO_LARGE;
    tk_query_id(p->query_id, sp->plan.data, sp->plan.len);

    /*
     * A verdict is cached under the digest of the exact signed bytes (plan,
     * signature, chain), so it can only ever vouch for what was verified.
     * On a hit, the researcher's certificate is decoded again for its box
     * key and scope, without the signature work.
     */
    digest_signed(digest, sp);
    for (i = 0; i < TK_PLAN_CACHE && slot < 0; i++)
        if (sodium_memcmp(tk->plans[i].digest, digest, sizeof digest) == 0 &&
            tk->plans[i].expires_at >= now)
            slot = (int)i;
    if (slot >= 0) {
        researcher =
            (Cohort__CertBody *)tk_unpack(a, &cohort__cert_body__descriptor,
                                          sp->chain[0]->body.data, sp->chain[0]->body.len, &rc);
        if (researcher == NULL)
            return rc;
    } else {
        if ((rc = check_chain(&researcher, &chain_expiry, tk, a, sp, now)) != TK_OK)
            return rc;
        if ((rc = tk_verify_signed(a, sp->signature.data, researcher->sign_pk.data, TK_SIG_PLAN,
                                   sp->plan.data, sp->plan.len)) != TK_OK)
            return rc;
    }
    memcpy(p->researcher_box_pk, researcher->box_pk.data, 32);

    pb = (Cohort__Plan *)tk_unpack(a, &cohort__plan__descriptor, sp->plan.data, sp->plan.len, &rc);
    if (pb == NULL)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_BAD_PLAN;
    if (pb->version != 1 || copy_name(p->table, pb->table) != TK_OK)
        return TK_ERR_BAD_PLAN;
    if ((rc = load_schema(p, pb)) != TK_OK)
        return rc;
    if (pb->n_group_by > TK_MAX_GROUP_COLS)
        return TK_ERR_TOO_LARGE;
    p->n_group = (uint16_t)pb->n_group_by;
    for (i = 0; i < pb->n_group_by; i++) {
        int col = find_column(p, pb->group_by[i]);
        size_t j;
        if (col < 0)
            return TK_ERR_BAD_PLAN;
        for (j = 0; j < i; j++)
            if (p->group_col[j] == col)
                return TK_ERR_BAD_PLAN;
        p->group_col[i] = (uint16_t)col;
    }
    if ((rc = load_aggs(p, pb)) != TK_OK)
        return rc;
    if (pb->tuples_per_participant == 0 || pb->tuples_per_participant > TK_MAX_TUPLES ||
        pb->max_groups == 0 || pb->max_groups > TK_MAX_GROUPS)
        return TK_ERR_BAD_PLAN;
    p->tuples = pb->tuples_per_participant;
    p->max_groups = p->n_group == 0 ? 1 : pb->max_groups;
    if ((rc = load_protocol(p, pb)) != TK_OK)
        return rc;
    if (pb->privacy != NULL) {
        p->min_participants = pb->privacy->min_participants;
        p->min_group_size = pb->privacy->min_group_size;
    }
    if ((rc = load_dp(p, pb->privacy)) != TK_OK)
        return rc;
    p->issued_at = pb->issued_at;
    p->deadline = pb->deadline;
    p->expires_at = pb->expires_at;
    if (p->issued_at > p->deadline || p->deadline > p->expires_at)
        return TK_ERR_BAD_PLAN;
    if (now + CLOCK_SKEW < p->issued_at || now > p->expires_at ||
        (use == TK_PLAN_COLLECT && now > p->deadline))
        return TK_ERR_EXPIRED;
    if ((rc = tk_program_load(&p->where, &p->n_where, a, p, pb->where, pb->n_where, false)) !=
        TK_OK)
        return rc;
    if ((rc = tk_program_load(&p->having, &p->n_having, a, p, pb->having, pb->n_having, true)) !=
        TK_OK)
        return rc;
    if ((rc = layout(p)) != TK_OK)
        return rc;
    if ((rc = check_scope(researcher, pb, p)) != TK_OK)
        return rc;

    if ((rc = load_asker(p, a, sp, researcher, pb)) != TK_OK)
        return rc;

    /* Accepted: remember the verdict. */
    if (slot < 0) {
        i = tk->plan_next++ % TK_PLAN_CACHE;
        memcpy(tk->plans[i].digest, digest, sizeof digest);
        tk->plans[i].expires_at = p->expires_at < chain_expiry ? p->expires_at : chain_expiry;
    }
    return TK_OK;
}

int tk_plan_keep_having(struct tk_arena *a, struct tk_plan *p)
{
    struct tk_instr *prog;
    uint16_t i, k;

    p->where = NULL;
    p->n_where = 0;
    if (p->n_having == 0)
        return TK_OK;
    prog = tk_arena_keep(a, p->n_having * sizeof *prog);
    if (prog == NULL)
        return TK_ERR_NO_MEMORY;
    memcpy(prog, p->having, p->n_having * sizeof *prog);
    for (i = 0; i < p->n_having; i++) {
        struct tk_value *vals[1 + TK_IN_LIST_MAX];
        uint16_t nv = 0;
        if (prog[i].n_list > 0) {
            struct tk_value *list = tk_arena_keep(a, prog[i].n_list * sizeof *list);
            if (list == NULL)
                return TK_ERR_NO_MEMORY;
            memcpy(list, prog[i].list, prog[i].n_list * sizeof *list);
            prog[i].list = list;
            for (k = 0; k < prog[i].n_list; k++)
                vals[nv++] = &list[k];
        }
        vals[nv++] = &prog[i].value;
        for (k = 0; k < nv; k++) {
            if (vals[k]->type == COHORT__VALUE_TYPE__VT_TEXT && vals[k]->len > 0) {
                uint8_t *s = tk_arena_keep(a, vals[k]->len);
                if (s == NULL)
                    return TK_ERR_NO_MEMORY;
                memcpy(s, vals[k]->s, vals[k]->len);
                vals[k]->s = s;
            }
        }
    }
    p->having = prog;
    return TK_OK;
}

int tk_plan_verify(const uint8_t *signed_plan, size_t len, const uint8_t (*authorities)[TK_PK_LEN],
                   size_t n_authorities, int64_t now, uint8_t *scratch, size_t scratch_len,
                   char researcher[64])
{
    struct tk_token tk;
    struct tk_arena a;
    struct tk_plan p;
    Cohort__SignedPlan *sp;
    int rc = TK_OK;

    if (researcher != NULL)
        researcher[0] = '\0';
    if (signed_plan == NULL || scratch == NULL || (authorities == NULL && n_authorities > 0))
        return TK_ERR_MALFORMED;
    if (len > TK_PLAN_MAX + 64 * 1024)
        return TK_ERR_TOO_LARGE;
    if (n_authorities > TK_MAX_AUTHORITIES)
        return TK_ERR_TOO_LARGE;
    memset(&tk, 0, sizeof tk);
    memcpy(tk.authorities, authorities, n_authorities * TK_PK_LEN);
    tk.n_authorities = (uint8_t)n_authorities;
    tk_arena_init(&a, scratch, scratch_len, 0);
    sp = (Cohort__SignedPlan *)tk_unpack(&a, &cohort__signed_plan__descriptor, signed_plan, len,
                                         &rc);
    if (sp == NULL)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_MALFORMED;
    rc = tk_plan_load(&tk, &a, &p, sp, now, TK_PLAN_COLLECT);
    if (rc == TK_OK && researcher != NULL) {
        size_t n = strlen(p.researcher);
        if (n > 63)
            n = 63;
        memcpy(researcher, p.researcher, n);
        researcher[n] = '\0';
    }
    return rc;
}
