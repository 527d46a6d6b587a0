/*
 * The ground truth: the study's query computed in the clear, by code that
 * shares nothing with the token's evaluator but the plan's wire format.
 *
 * Rows come from the same generator the tokens were loaded from; only the
 * participants whose contribution the service accepted are included. WHERE
 * and HAVING are evaluated by a separate postfix interpreter with SQL's
 * three-valued logic, groups are kept in a plain hash table, and the
 * plan's thresholds are applied: no result below the minimum number of
 * participants, no group below the minimum group size. The table is then
 * laid out by the querier's own result code (SELECT order, ORDER BY, LIMIT)
 * so that it can be compared cell by cell with what the researcher got.
 *
 * Under differential privacy the truth applies the same contribution
 * bounds as the tokens, written again from the description in
 * token/tk_noise.c rather than shared: per participant, only the first
 * tuples_per_participant groups it meets (in row order), the first
 * max_rows rows of each, every SUM or AVG argument clamped into
 * [-bound, bound] in the column's natural units. So the only difference
 * left between the researcher's result and the truth is the noise.
 * sim_truth_full gives that truth for every group, before any threshold
 * or HAVING (which the tokens apply to noisy values), with a SUM over no
 * rows as 0 rather than NULL, laid out by sim_full_plan: all the group
 * columns then all the aggregates, sorted by the groups.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/cohort.pb-c.h"
#include "querier/qr_result.h"
#include "sim/sim.h"
#include "token/token.h"

enum { T_NULL, T_INT, T_DEC, T_TEXT, T_DATE, T_BOOL, T_DBL, T_TS };

struct tv {
    int type;
    int64_t i;
    double d;
    unsigned scale;
    const char *s;
    size_t len;
};

struct group {
    uint8_t key[160];
    size_t key_len;
    struct tv vals[8];
    char texts[8][72];
    uint64_t participants, rows;
    uint64_t last;
    int64_t count[16], value[16];
};

struct groups {
    struct group *g;
    size_t n, cap;
    size_t *slot;
    size_t slots;
};

static double num(const struct tv *v)
{
    double d = v->type == T_DBL ? v->d : (double)v->i;
    unsigned k;
    if (v->type == T_DEC)
        for (k = 0; k < v->scale; k++)
            d /= 10;
    return d;
}

/* -2: incomparable; else -1, 0, 1 */
static int cmp(const struct tv *a, const struct tv *b)
{
    int an = a->type == T_INT || a->type == T_DEC || a->type == T_DBL;
    int bn = b->type == T_INT || b->type == T_DEC || b->type == T_DBL;
    if (an && bn) {
        if (a->type != T_DBL && b->type != T_DBL) {
            long double x = (long double)a->i, y = (long double)b->i;
            unsigned k;
            for (k = 0; a->type == T_DEC && k < a->scale; k++)
                y *= 10; /* compare a.i / 10^sa with b.i / 10^sb exactly enough */
            for (k = 0; b->type == T_DEC && k < b->scale; k++)
                x *= 10;
            return x < y ? -1 : x > y ? 1 : 0;
        }
        return num(a) < num(b) ? -1 : num(a) > num(b) ? 1 : 0;
    }
    if (a->type != b->type)
        return -2;
    if (a->type == T_TEXT) {
        size_t n = a->len < b->len ? a->len : b->len;
        int c = memcmp(a->s, b->s, n);
        if (c)
            return c < 0 ? -1 : 1;
        return a->len < b->len ? -1 : a->len > b->len;
    }
    return a->i < b->i ? -1 : a->i > b->i;
}

static struct tv from_pb(const Cohort__Value *v)
{
    struct tv t = {0};
    if (v == NULL)
        return t;
    t.type = v->type;
    t.i = v->i;
    t.d = v->d;
    t.scale = v->scale;
    t.s = (const char *)v->s.data;
    t.len = v->s.len;
    return t;
}

/* SQL truth values: -1 unknown, 0 false, 1 true. */
static int truth(const struct tv *v)
{
    return v->type == T_NULL ? -1 : v->i != 0;
}

static struct tv tbool(int b)
{
    struct tv t = {0};
    if (b >= 0) {
        t.type = T_BOOL;
        t.i = b;
    }
    return t;
}

typedef struct tv (*lookup_fn)(void *ctx, const Cohort__Instr *in);

static int run(Cohort__Instr *const *prog, size_t n, lookup_fn col, lookup_fn agg, void *ctx)
{
    struct tv st[64];
    size_t sp = 0, i, k;
    if (n == 0)
        return 1;
    for (i = 0; i < n; i++) {
        const Cohort__Instr *in = prog[i];
        struct tv a, b;
        int c, x, y;
        if (sp >= 64)
            return -9;
        switch (in->op) {
        case COHORT__OP__OP_COLUMN:
            st[sp++] = col(ctx, in);
            break;
        case COHORT__OP__OP_AGGREGATE:
            st[sp++] = agg(ctx, in);
            break;
        case COHORT__OP__OP_CONST:
            st[sp++] = from_pb(in->value);
            break;
        case COHORT__OP__OP_EQ:
        case COHORT__OP__OP_NE:
        case COHORT__OP__OP_LT:
        case COHORT__OP__OP_LE:
        case COHORT__OP__OP_GT:
        case COHORT__OP__OP_GE:
            b = st[--sp];
            a = st[--sp];
            if (a.type == T_NULL || b.type == T_NULL) {
                st[sp++] = tbool(-1);
                break;
            }
            c = cmp(&a, &b);
            if (c == -2)
                return -9;
            x = in->op == COHORT__OP__OP_EQ   ? c == 0
                : in->op == COHORT__OP__OP_NE ? c != 0
                : in->op == COHORT__OP__OP_LT ? c < 0
                : in->op == COHORT__OP__OP_LE ? c <= 0
                : in->op == COHORT__OP__OP_GT ? c > 0
                                              : c >= 0;
            st[sp++] = tbool(x);
            break;
        case COHORT__OP__OP_AND:
            y = truth(&st[--sp]);
            x = truth(&st[--sp]);
            st[sp++] = tbool(x == 0 || y == 0 ? 0 : x == 1 && y == 1 ? 1 : -1);
            break;
        case COHORT__OP__OP_OR:
            y = truth(&st[--sp]);
            x = truth(&st[--sp]);
            st[sp++] = tbool(x == 1 || y == 1 ? 1 : x == 0 && y == 0 ? 0 : -1);
            break;
        case COHORT__OP__OP_NOT:
            x = truth(&st[sp - 1]);
            st[sp - 1] = tbool(x < 0 ? -1 : !x);
            break;
        case COHORT__OP__OP_IS_NULL:
            st[sp - 1] = tbool(st[sp - 1].type == T_NULL);
            break;
        case COHORT__OP__OP_IS_NOT_NULL:
            st[sp - 1] = tbool(st[sp - 1].type != T_NULL);
            break;
        case COHORT__OP__OP_LIKE_PREFIX:
            if (st[sp - 1].type != T_NULL)
                st[sp - 1] = tbool(st[sp - 1].len >= in->value->s.len &&
                                   memcmp(st[sp - 1].s, in->value->s.data, in->value->s.len) == 0);
            break;
        case COHORT__OP__OP_IN:
            if (st[sp - 1].type != T_NULL) {
                x = 0;
                for (k = 0; k < in->n_list; k++) {
                    struct tv l = from_pb(in->list[k]);
                    x |= cmp(&st[sp - 1], &l) == 0;
                }
                st[sp - 1] = tbool(x);
            }
            break;
        default:
            return -9;
        }
    }
    return sp == 1 ? truth(&st[0]) == 1 : -9;
}

/* A row's value for a health column, by name. */
static struct tv row_value(const struct sim_row *r, const char *name)
{
    struct sim_cell c;
    struct tv t = {0};
    sim_row_cell(&c, r, name);
    t.type = (int)c.type;
    t.i = c.i;
    t.scale = c.scale;
    t.s = c.s;
    t.len = c.len;
    return t;
}

struct row_ctx {
    const struct sim_row *row;
};

static struct tv row_col(void *ctx, const Cohort__Instr *in)
{
    return row_value(((struct row_ctx *)ctx)->row, in->column);
}

static struct tv no_agg(void *ctx, const Cohort__Instr *in)
{
    struct tv t = {0};
    (void)ctx;
    (void)in;
    return t;
}

static size_t key_of(uint8_t *key, const struct tv *vals, size_t n)
{
    size_t len = 0, i;
    for (i = 0; i < n; i++) {
        key[len++] = (uint8_t)vals[i].type;
        if (vals[i].type == T_TEXT) {
            key[len++] = (uint8_t)vals[i].len;
            memcpy(key + len, vals[i].s, vals[i].len);
            len += vals[i].len;
        } else {
            memcpy(key + len, &vals[i].i, 8);
            len += 8;
        }
    }
    return len;
}

static struct group *find_group(struct groups *gs, const uint8_t *key, size_t len, int *fresh)
{
    uint64_t h = 1469598103934665603ull;
    size_t i, s;
    for (i = 0; i < len; i++)
        h = (h ^ key[i]) * 1099511628211ull;
    if (gs->n * 2 >= gs->slots) {
        size_t ns = gs->slots ? gs->slots * 2 : 1024;
        size_t *slot = calloc(ns, sizeof *slot);
        if (slot == NULL)
            return NULL;
        for (i = 0; i < gs->n; i++) {
            uint64_t h2 = 1469598103934665603ull;
            size_t k;
            for (k = 0; k < gs->g[i].key_len; k++)
                h2 = (h2 ^ gs->g[i].key[k]) * 1099511628211ull;
            for (s = h2 & (ns - 1); slot[s]; s = (s + 1) & (ns - 1))
                ;
            slot[s] = i + 1;
        }
        free(gs->slot);
        gs->slot = slot;
        gs->slots = ns;
    }
    for (s = h & (gs->slots - 1); gs->slot[s]; s = (s + 1) & (gs->slots - 1)) {
        struct group *g = &gs->g[gs->slot[s] - 1];
        if (g->key_len == len && memcmp(g->key, key, len) == 0) {
            *fresh = 0;
            return g;
        }
    }
    if (gs->n == gs->cap) {
        size_t nc = gs->cap ? gs->cap * 2 : 256;
        struct group *ng = realloc(gs->g, nc * sizeof *ng);
        if (ng == NULL)
            return NULL;
        gs->g = ng;
        gs->cap = nc;
    }
    memset(&gs->g[gs->n], 0, sizeof gs->g[gs->n]);
    gs->slot[s] = gs->n + 1;
    *fresh = 1;
    return &gs->g[gs->n++];
}

struct group_ctx {
    const Cohort__Plan *plan;
    const struct group *g;
};

static struct tv agg_value(const Cohort__Plan *plan, const struct group *g, size_t i, int dp)
{
    const Cohort__Aggregate *a = plan->aggregates[i];
    struct tv t = {0};
    struct tv col = {0};
    size_t c;
    switch (a->func) {
    case COHORT__AGG_FUNC__AGG_COUNT_STAR:
    case COHORT__AGG_FUNC__AGG_COUNT:
    case COHORT__AGG_FUNC__AGG_COUNT_PARTICIPANTS:
        t.type = T_INT;
        t.i = g->count[i];
        return t;
    default:
        break;
    }
    if (g->count[i] == 0 && !(dp && a->func == COHORT__AGG_FUNC__AGG_SUM))
        return t;
    for (c = 0; c < plan->schema->n_columns; c++)
        if (strcmp(plan->schema->columns[c]->name, a->column) == 0) {
            col.type = plan->schema->columns[c]->type;
            col.scale = plan->schema->columns[c]->scale;
        }
    if (a->func == COHORT__AGG_FUNC__AGG_AVG) {
        double d = (double)g->value[i] / (double)g->count[i];
        unsigned k;
        for (k = 0; k < col.scale; k++)
            d /= 10.0;
        t.type = T_DBL;
        t.d = d;
        return t;
    }
    t.type = col.type;
    t.scale = col.scale;
    t.i = g->value[i];
    return t;
}

static struct tv group_col(void *ctx, const Cohort__Instr *in)
{
    struct group_ctx *c = ctx;
    struct tv t = {0};
    size_t i;
    for (i = 0; i < c->plan->n_group_by; i++)
        if (strcmp(c->plan->group_by[i], in->column) == 0)
            return c->g->vals[i];
    return t;
}

static struct tv group_agg(void *ctx, const Cohort__Instr *in)
{
    struct group_ctx *c = ctx;
    return agg_value(c->plan, c->g, in->index, 0);
}

static void to_pb(Cohort__Value *pb, const struct tv *t)
{
    cohort__value__init(pb);
    pb->type = (Cohort__ValueType)t->type;
    pb->i = t->i;
    pb->d = t->d;
    pb->scale = t->scale;
    if (t->type == T_TEXT) {
        pb->s.data = (uint8_t *)(uintptr_t)t->s;
        pb->s.len = t->len;
    }
}

static int group_order(const void *a, const void *b)
{
    const struct group *x = a, *y = b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);
    return c ? c : (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

/* A SUM or AVG argument's clamp in the column's scaled units (0: none). */
static int64_t clamp_of(const Cohort__Plan *plan, const Cohort__Aggregate *a)
{
    int64_t b = plan->privacy->contribution_bound;
    size_t c;
    unsigned k;
    for (c = 0; c < plan->schema->n_columns; c++)
        if (strcmp(plan->schema->columns[c]->name, a->column) == 0)
            for (k = 0; k < plan->schema->columns[c]->scale; k++)
                b = b > INT64_MAX / 10 ? INT64_MAX : b * 10;
    return b;
}

/* The plan with every group column, then every aggregate, as its output,
 * and no ORDER BY or LIMIT: the layout the DP check compares. */
int sim_full_plan(uint8_t **out, size_t *out_len, const uint8_t *plan_bytes, size_t plan_len)
{
    Cohort__Plan *plan = cohort__plan__unpack(NULL, plan_len, plan_bytes);
    Cohort__OutputColumn *cols = NULL, **colp = NULL, **saved_out;
    Cohort__OrderKey **saved_order;
    size_t n_saved_out, n_saved_order, n, k;
    uint64_t saved_limit;
    char(*labels)[16] = NULL;
    int rc = -1;

    *out = NULL;
    *out_len = 0;
    if (plan == NULL)
        return -1;
    n = plan->n_group_by + plan->n_aggregates;
    cols = calloc(n + 1, sizeof *cols);
    colp = calloc(n + 1, sizeof *colp);
    labels = calloc(n + 1, sizeof *labels);
    if (cols == NULL || colp == NULL || labels == NULL)
        goto done;
    for (k = 0; k < n; k++) {
        cohort__output_column__init(&cols[k]);
        cols[k].is_group = k < plan->n_group_by;
        cols[k].index = (uint32_t)(k < plan->n_group_by ? k : k - plan->n_group_by);
        snprintf(labels[k], sizeof labels[k], "%s%zu", cols[k].is_group ? "g" : "a",
                 (size_t)cols[k].index);
        cols[k].label = labels[k];
        colp[k] = &cols[k];
    }
    saved_out = plan->output;
    n_saved_out = plan->n_output;
    saved_order = plan->order_by;
    n_saved_order = plan->n_order_by;
    saved_limit = plan->limit;
    plan->output = colp;
    plan->n_output = n;
    plan->order_by = NULL;
    plan->n_order_by = 0;
    plan->limit = 0;
    *out_len = cohort__plan__get_packed_size(plan);
    *out = malloc(*out_len ? *out_len : 1);
    if (*out != NULL) {
        cohort__plan__pack(plan, *out);
        rc = 0;
    }
    plan->output = saved_out;
    plan->n_output = n_saved_out;
    plan->order_by = saved_order;
    plan->n_order_by = n_saved_order;
    plan->limit = saved_limit;
done:
    free(cols);
    free(colp);
    free(labels);
    cohort__plan__free_unpacked(plan, NULL);
    return rc;
}

/* full: every group, no threshold or HAVING, laid out by sim_full_plan. */
static int compute(struct qr_result *out, const uint8_t *plan_bytes, size_t plan_len, uint64_t seed,
                   const uint8_t *included, uint64_t n, int full)
{
    Cohort__Plan *plan = cohort__plan__unpack(NULL, plan_len, plan_bytes);
    uint8_t *layout = NULL;
    size_t layout_len = 0;
    int dp;
    struct groups gs = {0};
    uint64_t contributors = 0, suppressed = 0, i;
    Cohort__ResultTable table = COHORT__RESULT_TABLE__INIT;
    Cohort__Row *rows = NULL, **rowp = NULL;
    Cohort__Value *cells = NULL, **cellp = NULL;
    Cohort__ResultColumn *cols = NULL, **colp = NULL;
    size_t width, kept = 0, g, k;
    uint8_t *packed = NULL;
    int rc = -1;

    memset(out, 0, sizeof *out);
    if (plan == NULL || plan->schema == NULL)
        goto done;
    dp = plan->privacy != NULL && plan->privacy->epsilon > 0;
    if (full && sim_full_plan(&layout, &layout_len, plan_bytes, plan_len) != 0)
        goto done;
    width = plan->n_group_by + plan->n_aggregates;
    for (i = 0; i < n; i++) {
        struct sim_row r[SIM_ROWS_MAX];
        /* Under DP: this participant's groups so far, and its rows in each. */
        uint8_t mine[SIM_ROWS_MAX][160];
        size_t mine_len[SIM_ROWS_MAX], mine_rows[SIM_ROWS_MAX], n_mine = 0;
        size_t nr;
        if (!included[i])
            continue;
        contributors++;
        nr = sim_data_rows(r, seed, i);
        for (k = 0; k < nr; k++) {
            struct row_ctx rc_ = {&r[k]};
            struct tv vals[8];
            uint8_t key[160];
            size_t key_len, a;
            struct group *grp;
            int fresh, keep = run(plan->where, plan->n_where, row_col, no_agg, &rc_);
            if (keep < 0 && keep != -1)
                goto done;
            if (keep != 1)
                continue;
            for (a = 0; a < plan->n_group_by; a++)
                vals[a] = row_value(&r[k], plan->group_by[a]);
            key_len = key_of(key, vals, plan->n_group_by);
            if (dp) {
                size_t m;
                for (m = 0; m < n_mine; m++)
                    if (mine_len[m] == key_len && memcmp(mine[m], key, key_len) == 0)
                        break;
                if (m == n_mine) {
                    if (n_mine == plan->tuples_per_participant)
                        continue; /* a group beyond the first K */
                    memcpy(mine[m], key, key_len);
                    mine_len[m] = key_len;
                    mine_rows[m] = 0;
                    n_mine++;
                }
                if (mine_rows[m] == plan->privacy->max_rows)
                    continue; /* a row beyond the first max_rows of its group */
                mine_rows[m]++;
            }
            grp = find_group(&gs, key, key_len, &fresh);
            if (grp == NULL)
                goto done;
            if (fresh) {
                memcpy(grp->key, key, key_len);
                grp->key_len = key_len;
                for (a = 0; a < plan->n_group_by; a++) {
                    grp->vals[a] = vals[a];
                    if (vals[a].type == T_TEXT) {
                        memcpy(grp->texts[a], vals[a].s, vals[a].len);
                        grp->vals[a].s = NULL; /* fixed up after the scan */
                    }
                }
                grp->last = UINT64_MAX;
            }
            if (grp->last != i) {
                grp->participants++;
                grp->last = i;
            }
            grp->rows++;
            for (a = 0; a < plan->n_aggregates; a++) {
                const Cohort__Aggregate *ag = plan->aggregates[a];
                struct tv v =
                    ag->column && *ag->column ? row_value(&r[k], ag->column) : (struct tv){0};
                switch (ag->func) {
                case COHORT__AGG_FUNC__AGG_COUNT_STAR:
                    grp->count[a]++;
                    break;
                case COHORT__AGG_FUNC__AGG_COUNT_PARTICIPANTS:
                    grp->count[a] = (int64_t)grp->participants;
                    break;
                default:
                    if (v.type == T_NULL)
                        break;
                    if (dp && (ag->func == COHORT__AGG_FUNC__AGG_SUM ||
                               ag->func == COHORT__AGG_FUNC__AGG_AVG)) {
                        int64_t c = clamp_of(plan, ag);
                        v.i = v.i > c ? c : v.i < -c ? -c : v.i;
                    }
                    if (ag->func == COHORT__AGG_FUNC__AGG_SUM ||
                        ag->func == COHORT__AGG_FUNC__AGG_AVG)
                        grp->value[a] += v.i;
                    else if (ag->func == COHORT__AGG_FUNC__AGG_MIN &&
                             (grp->count[a] == 0 || v.i < grp->value[a]))
                        grp->value[a] = v.i;
                    else if (ag->func == COHORT__AGG_FUNC__AGG_MAX &&
                             (grp->count[a] == 0 || v.i > grp->value[a]))
                        grp->value[a] = v.i;
                    grp->count[a]++;
                }
            }
        }
    }
    if (plan->privacy != NULL && contributors < plan->privacy->min_participants) {
        rc = 1;
        goto done;
    }
    if (gs.n > 1)
        qsort(gs.g, gs.n, sizeof *gs.g, group_order);
    for (g = 0; g < gs.n; g++)
        for (k = 0; k < plan->n_group_by; k++)
            if (gs.g[g].vals[k].type == T_TEXT)
                gs.g[g].vals[k].s = gs.g[g].texts[k];

    rows = calloc(gs.n + 1, sizeof *rows);
    rowp = calloc(gs.n + 1, sizeof *rowp);
    cells = calloc((gs.n + 1) * width, sizeof *cells);
    cellp = calloc((gs.n + 1) * width, sizeof *cellp);
    cols = calloc(width, sizeof *cols);
    colp = calloc(width, sizeof *colp);
    if (!rows || !rowp || !cells || !cellp || !cols || !colp)
        goto done;
    for (g = 0; g < gs.n; g++) {
        struct group_ctx gc = {plan, &gs.g[g]};
        int keep;
        if (!full && plan->privacy != NULL &&
            gs.g[g].participants < plan->privacy->min_group_size) {
            suppressed++;
            continue;
        }
        keep = full ? 1 : run(plan->having, plan->n_having, group_col, group_agg, &gc);
        if (keep < -1)
            goto done;
        if (keep != 1)
            continue;
        cohort__row__init(&rows[kept]);
        for (k = 0; k < width; k++) {
            struct tv v = k < plan->n_group_by
                              ? gs.g[g].vals[k]
                              : agg_value(plan, &gs.g[g], k - plan->n_group_by, full && dp);
            to_pb(&cells[kept * width + k], &v);
            cellp[kept * width + k] = &cells[kept * width + k];
        }
        rows[kept].n_values = width;
        rows[kept].values = &cellp[kept * width];
        rowp[kept] = &rows[kept];
        kept++;
    }
    for (k = 0; k < width; k++) {
        cohort__result_column__init(&cols[k]);
        cols[k].label = (char *)"";
        colp[k] = &cols[k];
    }
    for (k = 0; k < plan->n_group_by; k++) {
        size_t c;
        for (c = 0; c < plan->schema->n_columns; c++)
            if (strcmp(plan->schema->columns[c]->name, plan->group_by[k]) == 0) {
                cols[k].type = plan->schema->columns[c]->type;
                cols[k].scale = plan->schema->columns[c]->scale;
            }
        cols[k].label = plan->group_by[k];
    }
    for (k = 0; k < plan->n_aggregates; k++) {
        struct group one = {0};
        struct tv v;
        one.count[k] = 1;
        v = agg_value(plan, &one, k, 0);
        cols[plan->n_group_by + k].type = (Cohort__ValueType)v.type;
        cols[plan->n_group_by + k].scale = v.scale;
    }
    table.n_columns = width;
    table.columns = colp;
    table.n_rows = kept;
    table.rows = rowp;
    table.participants = contributors;
    table.groups_suppressed = dp ? 0 : suppressed;
    if (dp) {
        /* What a token states under DP; the bounds themselves are not checked here. */
        table.epsilon = plan->privacy->epsilon;
        table.mechanism = (char *)"ground truth: no noise";
        table.error_confidence = 0.5;
        table.n_error_bound = width;
        table.error_bound = calloc(width + 1, sizeof *table.error_bound);
        if (table.error_bound == NULL)
            goto done;
    }
    {
        size_t len = cohort__result_table__get_packed_size(&table);
        packed = malloc(len ? len : 1);
        if (packed == NULL)
            goto done;
        cohort__result_table__pack(&table, packed);
        rc = qr_result_from_table(out, packed, len, full ? layout : plan_bytes,
                                  full ? layout_len : plan_len) == 0
                 ? 0
                 : -1;
    }
done:
    free(table.error_bound);
    free(layout);
    free(packed);
    free(rows);
    free(rowp);
    free(cells);
    free(cellp);
    free(cols);
    free(colp);
    free(gs.g);
    free(gs.slot);
    if (plan)
        cohort__plan__free_unpacked(plan, NULL);
    return rc;
}

int sim_truth(struct qr_result *out, const uint8_t *plan, size_t plan_len, uint64_t seed,
              const uint8_t *included, uint64_t n)
{
    return compute(out, plan, plan_len, seed, included, n, 0);
}

int sim_truth_full(struct qr_result *out, const uint8_t *plan, size_t plan_len, uint64_t seed,
                   const uint8_t *included, uint64_t n)
{
    return compute(out, plan, plan_len, seed, included, n, 1);
}

static int same_cell(const struct qr_value *a, const struct qr_value *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case QR_NULL:
        return 1;
    case QR_DOUBLE: {
        double d = fabs(a->d - b->d), m = fmax(fabs(a->d), fabs(b->d));
        return d <= 1e-9 * m || d < 1e-300;
    }
    case QR_TEXT:
        return strcmp(a->s, b->s) == 0;
    case QR_DECIMAL:
        return a->i == b->i && a->scale == b->scale;
    default:
        return a->i == b->i;
    }
}

char *sim_compare(const struct qr_result *got, const struct qr_result *want)
{
    size_t cap = 4096, len = 0, r, c, shown = 0;
    char *out = malloc(cap), ga[96], wa[96];
    if (out == NULL)
        return NULL;
    out[0] = '\0';
#define SAY(...) (len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, __VA_ARGS__))
    if (got->n_columns != want->n_columns)
        SAY("columns: got %zu, want %zu\n", got->n_columns, want->n_columns);
    if (got->n_rows != want->n_rows)
        SAY("rows: got %zu, want %zu\n", got->n_rows, want->n_rows);
    if (got->participants != want->participants)
        SAY("participants: got %llu, want %llu\n", (unsigned long long)got->participants,
            (unsigned long long)want->participants);
    if (got->groups_suppressed != want->groups_suppressed)
        SAY("groups suppressed: got %llu, want %llu\n", (unsigned long long)got->groups_suppressed,
            (unsigned long long)want->groups_suppressed);
    if (got->n_columns == want->n_columns)
        for (r = 0; r < got->n_rows && r < want->n_rows && shown < 10; r++)
            for (c = 0; c < got->n_columns; c++) {
                const struct qr_value *a = &got->cells[r * got->n_columns + c];
                const struct qr_value *b = &want->cells[r * want->n_columns + c];
                if (!same_cell(a, b) && shown < 10 && len < cap - 256) {
                    qr_value_format(ga, sizeof ga, a);
                    qr_value_format(wa, sizeof wa, b);
                    SAY("row %zu, %s: got %s, want %s\n", r + 1, got->labels[c], ga, wa);
                    shown++;
                }
            }
#undef SAY
    if (len == 0) {
        free(out);
        return NULL;
    }
    return out;
}

/* ------------------------------------------------ groups, for the leakage */

void sim_groups_free(struct sim_groups *g)
{
    if (g == NULL)
        return;
    free(g->first);
    free(g->ids);
    free(g->keys);
    free(g->key_off);
    free(g->members);
    memset(g, 0, sizeof *g);
}

int sim_truth_groups(struct sim_groups *out, const uint8_t *plan_bytes, size_t plan_len,
                     uint64_t seed, const uint8_t *included, uint64_t n)
{
    Cohort__Plan *plan = cohort__plan__unpack(NULL, plan_len, plan_bytes);
    struct groups gs = {0};
    uint32_t *ids = NULL;
    size_t n_ids = 0, cap_ids = 0, heap = 0;
    uint64_t i;
    int rc = -1;

    memset(out, 0, sizeof *out);
    out->first = calloc(n + 1, sizeof *out->first);
    if (plan == NULL || out->first == NULL || plan->n_group_by > 8)
        goto done;
    for (i = 0; i < n; i++) {
        struct sim_row r[SIM_ROWS_MAX];
        size_t nr, k, mine_first = n_ids;

        out->first[i] = (uint32_t)n_ids;
        if (!included[i])
            continue;
        nr = sim_data_rows(r, seed, i);
        for (k = 0; k < nr; k++) {
            struct row_ctx rc_ = {&r[k]};
            uint8_t key[160];
            size_t key_len = 0, a, m;
            struct group *grp;
            uint32_t id;
            int fresh, keep = run(plan->where, plan->n_where, row_col, no_agg, &rc_);

            if (keep != 1)
                continue;
            for (a = 0; a < plan->n_group_by; a++) {
                struct tv v = row_value(&r[k], plan->group_by[a]);
                size_t len;
                if (key_len + 66 > sizeof key)
                    goto done;
                len = tk_key_encode(key + key_len, v.type, v.scale, v.i, (const uint8_t *)v.s,
                                    v.type == T_TEXT ? v.len : 0);
                if (len == 0)
                    goto done;
                key_len += len;
            }
            grp = find_group(&gs, key, key_len, &fresh);
            if (grp == NULL)
                goto done;
            if (fresh) {
                memcpy(grp->key, key, key_len);
                grp->key_len = key_len;
                grp->last = UINT64_MAX;
                heap += key_len;
            }
            if (grp->last != i) {
                grp->participants++;
                grp->last = i;
            }
            id = (uint32_t)(grp - gs.g);
            for (m = mine_first; m < n_ids && ids[m] != id; m++)
                ;
            if (m < n_ids)
                continue;
            if (n_ids == cap_ids) {
                size_t nc = cap_ids ? cap_ids * 2 : 1024;
                uint32_t *ni = realloc(ids, nc * sizeof *ni);
                if (ni == NULL)
                    goto done;
                ids = ni;
                cap_ids = nc;
            }
            ids[n_ids++] = id;
        }
    }
    out->first[n] = (uint32_t)n_ids;
    out->ids = ids;
    ids = NULL;
    out->n_groups = (uint32_t)gs.n;
    out->keys = malloc(heap ? heap : 1);
    out->key_off = calloc(gs.n + 1, sizeof *out->key_off);
    out->members = calloc(gs.n ? gs.n : 1, sizeof *out->members);
    if (out->keys == NULL || out->key_off == NULL || out->members == NULL)
        goto done;
    for (size_t g = 0, at = 0; g < gs.n; g++) {
        memcpy(out->keys + at, gs.g[g].key, gs.g[g].key_len);
        out->key_off[g] = at;
        at += gs.g[g].key_len;
        out->key_off[g + 1] = at;
        out->members[g] = gs.g[g].participants;
    }
    rc = 0;
done:
    if (rc != 0)
        sim_groups_free(out);
    free(ids);
    free(gs.g);
    free(gs.slot);
    cohort__plan__free_unpacked(plan, NULL);
    return rc;
}
