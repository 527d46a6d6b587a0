/*
 * From syntax tree to Plan: name resolution, type checking, lowering of
 * WHERE and HAVING to stack-machine programs, and the readable account of a
 * plan (qr_plan_explain).
 *
 * The plan is what a researcher signs and what every token executes, so
 * this file is where the query gets its exact meaning:
 * - Names resolve against the catalog, case-insensitively; the plan carries
 *   the catalog's spelling.
 * - Every comparison is typed. A constant takes the type of what it is
 *   compared with: a string compared with a DATE column is a date, an
 *   integer compared with a DECIMAL column is scaled to the column's scale.
 *   A constant that does not fit its partner is an error at the constant;
 *   nothing is ever converted silently with a loss.
 * - WHERE and HAVING become postfix programs (proto/cohort.proto, Op):
 *   BETWEEN is x >= a AND x <= b, NOT IN is IN then NOT, LIKE 'abc%' is
 *   LIKE_PREFIX "abc". The lowering tracks the stack depth the token will
 *   need and refuses programs deeper than QR_STACK_MAX or longer than
 *   QR_PROGRAM_MAX.
 * - Aggregates are numbered in the order SELECT names them, then HAVING's
 *   own; the same aggregate named twice is computed once. In HAVING, a
 *   SELECT alias that is not also a column name stands for its item.
 * - Names are checked in the order they appear in the text (SELECT list,
 *   WHERE, GROUP BY, HAVING, ORDER BY), so the first error reported is
 *   the first one a reader meets.
 *
 * The Cohort__* structures are built inside one heap block (struct build)
 * that points into the catalog and the syntax tree; they are packed and the
 * block is freed. Nothing generated escapes this file but packed bytes.
 *
 * qr_plan_explain decodes a plan it did not necessarily produce: it trusts
 * no index and no program shape, and prints untrusted text with control
 * characters replaced.
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "proto/cohort.pb-c.h"
#include "querier/qr_sql.h"
#include "token/token.h"

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != 0)                                                                              \
            return rc_;                                                                            \
    } while (0)

/* Values in one plan: at most two per tree node (BETWEEN compares x twice). */
#define VALUES_MAX (2u * QR_NODES_MAX)
#define TEXT_QUOTE_MAX 40

struct prog {
    Cohort__Instr instr[QR_PROGRAM_MAX];
    Cohort__Instr *ptr[QR_PROGRAM_MAX];
    size_t n;
    unsigned depth;
};

struct build {
    const struct qr_query *q;
    struct qr_sql_error *err;
    const struct qr_table *t;
    int in_having;

    int group_col[QR_GROUP_COLUMNS_MAX];
    char *group_names[QR_GROUP_COLUMNS_MAX];

    Cohort__Aggregate aggs[QR_AGGREGATES_MAX];
    Cohort__Aggregate *agg_ptrs[QR_AGGREGATES_MAX];
    enum qr_agg agg_kind[QR_AGGREGATES_MAX];
    int agg_col[QR_AGGREGATES_MAX];
    size_t agg_pos[QR_AGGREGATES_MAX]; /* where each is first named */
    size_t n_aggs;

    Cohort__OutputColumn out[QR_OUTPUT_MAX];
    Cohort__OutputColumn *out_ptrs[QR_OUTPUT_MAX];
    char labels[QR_OUTPUT_MAX][QR_NAME_MAX + 1];

    Cohort__OrderKey order[QR_ORDER_MAX];
    Cohort__OrderKey *order_ptrs[QR_ORDER_MAX];

    struct prog where, having;

    Cohort__Value values[VALUES_MAX];
    Cohort__Value *value_ptrs[VALUES_MAX];
    size_t n_values;

    uint8_t nonce[QR_NONCE_LEN];
    Cohort__Privacy privacy;
    Cohort__TableSchema schema;
    Cohort__Column columns[QR_SCHEMA_COLUMNS_MAX];
    Cohort__Column *column_ptrs[QR_SCHEMA_COLUMNS_MAX];
    Cohort__Plan plan;
};

/* What a comparison knows of one side. */
struct operand {
    enum qr_type type; /* QR_NULL for the NULL literal */
    unsigned scale;
    int is_const;
    char text[QR_NAME_MAX + TEXT_QUOTE_MAX]; /* how messages name it */
};

static int fail(struct build *b, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct build *b, size_t pos, const char *fmt, ...)
{
    va_list ap;
    char msg[sizeof b->err->msg];

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    qr_sql_error_at(b->err, b->q->sql, b->q->sql_len, pos, "%s", msg);
    return QR_ERR_SQL;
}

static const char *type_name(enum qr_type t)
{
    switch (t) {
    case QR_NULL:
        return "NULL";
    case QR_INT:
        return "INT";
    case QR_DECIMAL:
        return "DECIMAL";
    case QR_TEXT:
        return "TEXT";
    case QR_DATE:
        return "DATE";
    case QR_BOOL:
        return "BOOL";
    case QR_DOUBLE:
        return "DOUBLE";
    case QR_TIMESTAMP:
        return "TIMESTAMP";
    }
    return "?";
}

static int is_numeric(enum qr_type t)
{
    return t == QR_INT || t == QR_DECIMAL || t == QR_DOUBLE;
}

static void agg_text(char *buf, size_t cap, enum qr_agg agg, const char *col)
{
    static const char *const names[] = {"COUNT", "COUNT", "SUM", "AVG", "MIN", "MAX", "COUNT"};

    if (agg == QR_AGG_COUNT_STAR)
        snprintf(buf, cap, "COUNT(*)");
    else if (agg == QR_AGG_COUNT_PARTICIPANTS)
        snprintf(buf, cap, "COUNT(DISTINCT participant)");
    else if ((unsigned)agg < sizeof names / sizeof names[0])
        snprintf(buf, cap, "%s(%s)", names[agg], col);
    else
        snprintf(buf, cap, "?(%s)", col);
}

/* ---------------------------------------------------------- resolving */

static int resolve_column(struct build *b, size_t pos, const char *name, int *col)
{
    *col = qr_catalog_column(b->t, name);
    if (*col < 0)
        return fail(b, pos, "unknown column '%s' in table %s", name, b->t->name);
    return 0;
}

static int group_index(const struct build *b, int col)
{
    for (size_t g = 0; g < b->q->n_group; g++) {
        if (b->group_col[g] == col)
            return (int)g;
    }
    return -1;
}

/* Check an aggregate's argument; *col is its catalog column or -1. */
static int resolve_agg(struct build *b, const struct qr_node *n, int *col)
{
    const struct qr_column *c;

    *col = -1;
    if (n->agg == QR_AGG_COUNT_STAR || n->agg == QR_AGG_COUNT_PARTICIPANTS)
        return 0;
    TRY(resolve_column(b, n->arg_pos, n->name, col));
    c = &b->t->columns[*col];
    if ((n->agg == QR_AGG_SUM || n->agg == QR_AGG_AVG) && c->type != QR_INT &&
        c->type != QR_DECIMAL)
        return fail(b, n->arg_pos, "%s needs an INT or DECIMAL column; %s is %s",
                    n->agg == QR_AGG_SUM ? "SUM" : "AVG", c->name, type_name(c->type));
    if ((n->agg == QR_AGG_MIN || n->agg == QR_AGG_MAX) && c->type == QR_TEXT)
        return fail(b, n->arg_pos, "%s is not supported on TEXT columns such as %s",
                    n->agg == QR_AGG_MIN ? "MIN" : "MAX", c->name);
    return 0;
}

/* The index of the aggregate in the plan, added if new. */
static int add_agg(struct build *b, const struct qr_node *n, size_t *index)
{
    int col;

    TRY(resolve_agg(b, n, &col));
    for (size_t i = 0; i < b->n_aggs; i++) {
        if (b->agg_kind[i] == n->agg && b->agg_col[i] == col) {
            *index = i;
            return 0;
        }
    }
    if (b->n_aggs == QR_AGGREGATES_MAX)
        return fail(b, n->pos, "too many aggregates (at most %u)", QR_AGGREGATES_MAX);
    Cohort__Aggregate *a = &b->aggs[b->n_aggs];
    cohort__aggregate__init(a);
    a->func = (Cohort__AggFunc)n->agg;
    a->column = col < 0 ? "" : (char *)b->t->columns[col].name;
    b->agg_ptrs[b->n_aggs] = a;
    b->agg_kind[b->n_aggs] = n->agg;
    b->agg_col[b->n_aggs] = col;
    b->agg_pos[b->n_aggs] = n->pos;
    *index = b->n_aggs++;
    return 0;
}

static void agg_type(const struct build *b, enum qr_agg agg, int col, enum qr_type *type,
                     unsigned *scale)
{
    *scale = 0;
    switch (agg) {
    case QR_AGG_AVG:
        *type = QR_DOUBLE;
        return;
    case QR_AGG_SUM:
    case QR_AGG_MIN:
    case QR_AGG_MAX:
        *type = b->t->columns[col].type;
        *scale = b->t->columns[col].scale;
        return;
    default:
        *type = QR_INT;
        return;
    }
}

static void quote_source(const struct build *b, const struct qr_node *n, char *buf, size_t cap)
{
    size_t len = n->len > TEXT_QUOTE_MAX ? TEXT_QUOTE_MAX : n->len;

    snprintf(buf, cap, "%.*s%s", (int)len, b->q->sql + n->pos, len < n->len ? "..." : "");
}

/* Type one side of a comparison (and, in HAVING, register its aggregate). */
/*
 * In HAVING, a name that is not a column of the table may be a SELECT
 * alias: it stands for that item ("HAVING n > 3" after "COUNT(*) AS n").
 * A column of the table always wins, as in standard SQL.
 */
static const struct qr_node *unalias(const struct build *b, const struct qr_node *n)
{
    if (!b->in_having || n->kind != QR_N_COLUMN || qr_catalog_column(b->t, n->name) >= 0)
        return n;
    for (size_t i = 0; i < b->q->n_items; i++) {
        const struct qr_item *it = &b->q->items[i];
        if (it->has_alias && strcasecmp(it->alias, n->name) == 0)
            return it->expr;
    }
    return n;
}

static int operand_of(struct build *b, const struct qr_node *n, struct operand *op)
{
    int col;
    size_t index;

    memset(op, 0, sizeof *op);
    n = unalias(b, n);
    switch (n->kind) {
    case QR_N_COLUMN:
        TRY(resolve_column(b, n->pos, n->name, &col));
        if (b->in_having && group_index(b, col) < 0)
            return fail(b, n->pos, "column %s must appear in GROUP BY to be used in HAVING",
                        b->t->columns[col].name);
        op->type = b->t->columns[col].type;
        op->scale = b->t->columns[col].scale;
        snprintf(op->text, sizeof op->text, "%s", b->t->columns[col].name);
        return 0;
    case QR_N_AGG:
        if (!b->in_having)
            return fail(b, n->pos, "aggregate functions are not allowed in WHERE; use HAVING");
        TRY(add_agg(b, n, &index));
        agg_type(b, n->agg, b->agg_col[index], &op->type, &op->scale);
        agg_text(op->text, sizeof op->text, n->agg, b->aggs[index].column);
        return 0;
    case QR_N_CONST:
        op->is_const = 1;
        quote_source(b, n, op->text, sizeof op->text);
        switch (n->lit) {
        case QR_LIT_INT:
            op->type = QR_INT;
            break;
        case QR_LIT_DECIMAL:
            op->type = QR_DECIMAL;
            op->scale = n->scale;
            break;
        case QR_LIT_STRING:
            op->type = QR_TEXT;
            break;
        case QR_LIT_BOOL:
            op->type = QR_BOOL;
            break;
        case QR_LIT_NULL:
            op->type = QR_NULL;
            break;
        case QR_LIT_DATE:
            op->type = QR_DATE;
            break;
        case QR_LIT_TIMESTAMP:
            op->type = QR_TIMESTAMP;
            break;
        }
        return 0;
    default:
        return fail(b, n->pos, "expected an operand");
    }
}

/* ----------------------------------------------------------- constants */

static int new_value(struct build *b, const struct qr_node *n, Cohort__Value **out)
{
    if (b->n_values == VALUES_MAX)
        return fail(b, n->pos, "query too complex: more than %u constants", VALUES_MAX);
    *out = &b->values[b->n_values++];
    cohort__value__init(*out);
    return 0;
}

/* The constant as written: its own type. */
static void natural_value(const struct qr_node *n, Cohort__Value *v)
{
    v->i = n->i;
    switch (n->lit) {
    case QR_LIT_INT:
        v->type = COHORT__VALUE_TYPE__VT_INT;
        break;
    case QR_LIT_DECIMAL:
        v->type = COHORT__VALUE_TYPE__VT_DECIMAL;
        v->scale = n->scale;
        break;
    case QR_LIT_STRING:
        v->type = COHORT__VALUE_TYPE__VT_TEXT;
        v->s.data = (uint8_t *)n->s;
        v->s.len = n->s_len;
        break;
    case QR_LIT_BOOL:
        v->type = COHORT__VALUE_TYPE__VT_BOOL;
        break;
    case QR_LIT_NULL:
        v->type = COHORT__VALUE_TYPE__VT_NULL;
        v->i = 0;
        break;
    case QR_LIT_DATE:
        v->type = COHORT__VALUE_TYPE__VT_DATE;
        break;
    case QR_LIT_TIMESTAMP:
        v->type = COHORT__VALUE_TYPE__VT_TIMESTAMP;
        break;
    }
}

static int mismatch(struct build *b, const struct qr_node *at, const struct operand *typed,
                    const struct operand *other)
{
    return fail(b, at->pos, "cannot compare %s (%s) with %s (%s)", typed->text,
                type_name(typed->type), other->text, type_name(other->type));
}

static int string_as_date(struct build *b, const struct qr_node *n, Cohort__Value *v)
{
    v->type = COHORT__VALUE_TYPE__VT_DATE;
    if (qr_date_parse(&v->i, n->s, n->s_len) != 0)
        return fail(b, n->pos, "invalid date '%s': expected a real date 'YYYY-MM-DD'", n->s);
    return 0;
}

static int string_as_timestamp(struct build *b, const struct qr_node *n, Cohort__Value *v)
{
    v->type = COHORT__VALUE_TYPE__VT_TIMESTAMP;
    if (qr_timestamp_parse(&v->i, n->s, n->s_len) != 0)
        return fail(b, n->pos, "invalid timestamp '%s': expected 'YYYY-MM-DD HH:MM:SS' (UTC)",
                    n->s);
    return 0;
}

/* An integer or decimal constant at the scale of a DECIMAL it is compared with. */
static int scaled(struct build *b, const struct qr_node *n, const struct operand *lit,
                  const struct operand *typed, Cohort__Value *v)
{
    int64_t i = n->i;

    if (n->scale > typed->scale)
        return fail(b, n->pos, "%s has more fractional digits than %s (DECIMAL with scale %u)",
                    lit->text, typed->text, typed->scale);
    for (unsigned k = n->scale; k < typed->scale; k++) {
        if (i > INT64_MAX / 10 || i < INT64_MIN / 10)
            return fail(b, n->pos, "%s is out of range for %s", lit->text, typed->text);
        i *= 10;
    }
    v->type = COHORT__VALUE_TYPE__VT_DECIMAL;
    v->i = i;
    v->scale = typed->scale;
    return 0;
}

/*
 * The value of constant n (described by lit) compared with `other`: a typed
 * column or aggregate, or another constant. Errors point at n.
 */
static int coerce(struct build *b, const struct qr_node *n, const struct operand *lit,
                  const struct operand *other, Cohort__Value **out)
{
    Cohort__Value *v = NULL;
    int num = n->lit == QR_LIT_INT || n->lit == QR_LIT_DECIMAL;

    TRY(new_value(b, n, &v));
    *out = v;
    natural_value(n, v);
    if (other->is_const) {
        if (n->lit == QR_LIT_STRING && other->type == QR_DATE)
            return string_as_date(b, n, v);
        if (n->lit == QR_LIT_STRING && other->type == QR_TIMESTAMP)
            return string_as_timestamp(b, n, v);
        if (other->type == QR_TEXT && (lit->type == QR_DATE || lit->type == QR_TIMESTAMP))
            return 0;
        if (lit->type == other->type || (num && is_numeric(other->type)))
            return 0;
        return mismatch(b, n, other, lit);
    }
    switch (other->type) {
    case QR_INT:
        if (n->lit == QR_LIT_INT)
            return 0;
        break;
    case QR_DECIMAL:
        if (num)
            return scaled(b, n, lit, other, v);
        break;
    case QR_DOUBLE:
        if (num)
            return 0;
        break;
    case QR_TEXT:
        if (n->lit == QR_LIT_STRING)
            return 0;
        break;
    case QR_DATE:
        if (n->lit == QR_LIT_DATE)
            return 0;
        if (n->lit == QR_LIT_STRING)
            return string_as_date(b, n, v);
        break;
    case QR_TIMESTAMP:
        if (n->lit == QR_LIT_TIMESTAMP)
            return 0;
        if (n->lit == QR_LIT_STRING)
            return string_as_timestamp(b, n, v);
        break;
    case QR_BOOL:
        if (n->lit == QR_LIT_BOOL)
            return 0;
        break;
    default:
        break;
    }
    return mismatch(b, n, other, lit);
}

/*
 * Check that a and b may be compared; *va and *vb receive the values of the
 * sides that are constants (NULL for the others).
 */
static int pair(struct build *b, const struct qr_node *a, const struct qr_node *c,
                Cohort__Value **va, Cohort__Value **vc)
{
    struct operand oa, oc;

    *va = NULL;
    *vc = NULL;
    TRY(operand_of(b, a, &oa));
    TRY(operand_of(b, c, &oc));
    if (oa.type == QR_NULL)
        return fail(b, a->pos, "comparison with NULL is never true; use IS NULL");
    if (oc.type == QR_NULL)
        return fail(b, c->pos, "comparison with NULL is never true; use IS NULL");
    if (oa.is_const && oc.is_const) {
        TRY(coerce(b, c, &oc, &oa, vc));
        return coerce(b, a, &oa, &oc, va);
    }
    if (oc.is_const)
        return coerce(b, c, &oc, &oa, vc);
    if (oa.is_const)
        return coerce(b, a, &oa, &oc, va);
    if (oa.type == oc.type || (is_numeric(oa.type) && is_numeric(oc.type)))
        return 0;
    return mismatch(b, c, &oa, &oc);
}

/* ------------------------------------------------------------ lowering */

static int emit(struct build *b, struct prog *pg, size_t pos, Cohort__Op op, int delta,
                Cohort__Instr **out)
{
    Cohort__Instr *in = NULL;

    if (pg->n == QR_PROGRAM_MAX)
        return fail(b, pos, "expression too complex: more than %u instructions", QR_PROGRAM_MAX);
    pg->depth = (unsigned)((int)pg->depth + delta);
    if (pg->depth > QR_STACK_MAX)
        return fail(b, pos, "expression too complex: it needs a stack deeper than %u",
                    QR_STACK_MAX);
    in = &pg->instr[pg->n];
    cohort__instr__init(in);
    in->op = op;
    pg->ptr[pg->n++] = in;
    if (out != NULL)
        *out = in;
    return 0;
}

/* Push an operand; v is its value if it is a constant. */
static int emit_operand(struct build *b, struct prog *pg, const struct qr_node *n, Cohort__Value *v)
{
    Cohort__Instr *in = NULL;
    int col;
    size_t index;

    n = unalias(b, n);
    switch (n->kind) {
    case QR_N_COLUMN:
        TRY(resolve_column(b, n->pos, n->name, &col));
        TRY(emit(b, pg, n->pos, COHORT__OP__OP_COLUMN, +1, &in));
        in->column = (char *)b->t->columns[col].name;
        return 0;
    case QR_N_AGG:
        TRY(add_agg(b, n, &index));
        TRY(emit(b, pg, n->pos, COHORT__OP__OP_AGGREGATE, +1, &in));
        in->index = (uint32_t)index;
        return 0;
    default:
        if (v == NULL) {
            TRY(new_value(b, n, &v));
            natural_value(n, v);
        }
        TRY(emit(b, pg, n->pos, COHORT__OP__OP_CONST, +1, &in));
        in->value = v;
        return 0;
    }
}

static const Cohort__Op cmp_ops[] = {
    [QR_CMP_EQ] = COHORT__OP__OP_EQ, [QR_CMP_NE] = COHORT__OP__OP_NE,
    [QR_CMP_LT] = COHORT__OP__OP_LT, [QR_CMP_LE] = COHORT__OP__OP_LE,
    [QR_CMP_GT] = COHORT__OP__OP_GT, [QR_CMP_GE] = COHORT__OP__OP_GE,
};

static int lower(struct build *b, struct prog *pg, const struct qr_node *n);

static int lower_between(struct build *b, struct prog *pg, const struct qr_node *n)
{
    Cohort__Value *vx, *vlo, *vx2, *vhi;

    TRY(pair(b, n->a, n->b, &vx, &vlo));
    TRY(pair(b, n->a, n->c, &vx2, &vhi));
    TRY(emit_operand(b, pg, n->a, vx));
    TRY(emit_operand(b, pg, n->b, vlo));
    TRY(emit(b, pg, n->pos, COHORT__OP__OP_GE, -1, NULL));
    TRY(emit_operand(b, pg, n->a, vx2));
    TRY(emit_operand(b, pg, n->c, vhi));
    TRY(emit(b, pg, n->pos, COHORT__OP__OP_LE, -1, NULL));
    return emit(b, pg, n->pos, COHORT__OP__OP_AND, -1, NULL);
}

static int lower_in(struct build *b, struct prog *pg, const struct qr_node *n)
{
    struct operand ox;
    Cohort__Instr *in = NULL;
    Cohort__Value *vx, *vi;
    size_t first = b->n_values;

    TRY(operand_of(b, n->a, &ox));
    if (ox.is_const)
        return fail(b, n->a->pos, "IN needs a column%s on its left",
                    b->in_having ? " or an aggregate" : "");
    /* pair() allocates exactly one value per item, since x is not a constant. */
    size_t k = 0;
    for (const struct qr_node *c = n->list; c != NULL; c = c->next, k++) {
        TRY(pair(b, n->a, c, &vx, &vi));
        if (vi != &b->values[first + k])
            abort();
        b->value_ptrs[first + k] = vi;
    }
    TRY(emit_operand(b, pg, n->a, NULL));
    TRY(emit(b, pg, n->pos, COHORT__OP__OP_IN, 0, &in));
    in->n_list = n->n_list;
    in->list = &b->value_ptrs[first];
    return 0;
}

static int lower_like(struct build *b, struct prog *pg, const struct qr_node *n)
{
    struct operand ox;
    Cohort__Instr *in = NULL;
    Cohort__Value *v = NULL;

    TRY(operand_of(b, n->a, &ox));
    if (ox.is_const || ox.type != QR_TEXT)
        return fail(b, n->a->pos, "LIKE needs a TEXT column on its left; %s is %s", ox.text,
                    type_name(ox.type));
    TRY(new_value(b, n, &v));
    v->type = COHORT__VALUE_TYPE__VT_TEXT;
    v->s.data = (uint8_t *)n->s;
    v->s.len = n->s_len;
    TRY(emit_operand(b, pg, n->a, NULL));
    TRY(emit(b, pg, n->pos, COHORT__OP__OP_LIKE_PREFIX, 0, &in));
    in->value = v;
    return 0;
}

static int lower(struct build *b, struct prog *pg, const struct qr_node *n)
{
    struct operand o;
    Cohort__Value *va, *vb;

    switch (n->kind) {
    case QR_N_AND:
    case QR_N_OR:
        TRY(lower(b, pg, n->a));
        TRY(lower(b, pg, n->b));
        return emit(b, pg, n->pos, n->kind == QR_N_AND ? COHORT__OP__OP_AND : COHORT__OP__OP_OR, -1,
                    NULL);
    case QR_N_NOT:
        TRY(lower(b, pg, n->a));
        return emit(b, pg, n->pos, COHORT__OP__OP_NOT, 0, NULL);
    case QR_N_CMP:
        TRY(pair(b, n->a, n->b, &va, &vb));
        TRY(emit_operand(b, pg, n->a, va));
        TRY(emit_operand(b, pg, n->b, vb));
        return emit(b, pg, n->pos, cmp_ops[n->cmp], -1, NULL);
    case QR_N_BETWEEN:
        TRY(lower_between(b, pg, n));
        break;
    case QR_N_IN:
        TRY(lower_in(b, pg, n));
        break;
    case QR_N_LIKE:
        TRY(lower_like(b, pg, n));
        break;
    case QR_N_IS_NULL:
        TRY(operand_of(b, n->a, &o));
        TRY(emit_operand(b, pg, n->a, NULL));
        return emit(b, pg, n->pos, n->negated ? COHORT__OP__OP_IS_NOT_NULL : COHORT__OP__OP_IS_NULL,
                    0, NULL);
    case QR_N_OPERAND:
        TRY(operand_of(b, n->a, &o));
        if (o.type != QR_BOOL)
            return fail(b, n->a->pos, "expected a condition, found %s (%s)", o.text,
                        type_name(o.type));
        return emit_operand(b, pg, n->a, NULL);
    default:
        return fail(b, n->pos, "expected a condition");
    }
    if (n->negated)
        return emit(b, pg, n->pos, COHORT__OP__OP_NOT, 0, NULL);
    return 0;
}

static int lower_program(struct build *b, struct prog *pg, const struct qr_node *root,
                         int in_having)
{
    b->in_having = in_having;
    if (root == NULL)
        return 0;
    TRY(lower(b, pg, root));
    if (pg->depth != 1)
        abort(); /* every condition leaves exactly one value */
    return 0;
}

/* -------------------------------------------------------------- clauses */

static int build_table(struct build *b)
{
    const struct qr_query *q = b->q;
    char list[256] = "";
    size_t n = 0;

    b->t = qr_catalog_find(q->table);
    if (b->t != NULL)
        return 0;
    for (size_t i = 0; qr_catalog_table(i) != NULL; i++)
        n += (size_t)snprintf(list + n, n < sizeof list ? sizeof list - n : 0, "%s%s",
                              i ? ", " : "", qr_catalog_table(i)->name);
    return fail(b, q->table_pos, "unknown table '%s'; standard tables are: %s", q->table, list);
}

static int build_group_by(struct build *b)
{
    const struct qr_query *q = b->q;

    for (size_t g = 0; g < q->n_group; g++) {
        const struct qr_node *n = q->group[g];
        int col;
        TRY(resolve_column(b, n->pos, n->name, &col));
        for (size_t h = 0; h < g; h++) {
            if (b->group_col[h] == col)
                return fail(b, n->pos, "column %s appears twice in GROUP BY",
                            b->t->columns[col].name);
        }
        b->group_col[g] = col;
        b->group_names[g] = (char *)b->t->columns[col].name;
    }
    return 0;
}

/*
 * The SELECT list comes first in the text, so its names are checked before
 * anything else: an unknown column is reported where it first appears. (Its
 * grouping rules need GROUP BY, and are checked later.)
 */
static int check_item_names(struct build *b)
{
    for (size_t i = 0; i < b->q->n_items; i++) {
        const struct qr_node *n = b->q->items[i].expr;
        int col;
        if (n->kind == QR_N_COLUMN)
            TRY(resolve_column(b, n->pos, n->name, &col));
        else
            TRY(resolve_agg(b, n, &col));
    }
    return 0;
}

static int build_items(struct build *b)
{
    const struct qr_query *q = b->q;

    for (size_t i = 0; i < q->n_items; i++) {
        const struct qr_item *it = &q->items[i];
        const struct qr_node *n = it->expr;
        Cohort__OutputColumn *o = &b->out[i];
        char text[QR_NAME_MAX + 32];
        size_t index;
        int col;

        cohort__output_column__init(o);
        if (n->kind == QR_N_COLUMN) {
            TRY(resolve_column(b, n->pos, n->name, &col));
            if (group_index(b, col) < 0)
                return fail(b, n->pos, "column %s must appear in GROUP BY or inside an aggregate",
                            b->t->columns[col].name);
            o->is_group = 1;
            o->index = (uint32_t)group_index(b, col);
            snprintf(text, sizeof text, "%s", b->t->columns[col].name);
        } else {
            TRY(add_agg(b, n, &index));
            o->index = (uint32_t)index;
            agg_text(text, sizeof text, n->agg, b->aggs[index].column);
        }
        if (it->has_alias) {
            for (size_t j = 0; j < i; j++) {
                if (q->items[j].has_alias && strcasecmp(q->items[j].alias, it->alias) == 0)
                    return fail(b, it->alias_pos, "alias %s is used twice", it->alias);
            }
            snprintf(b->labels[i], sizeof b->labels[i], "%s", it->alias);
        } else {
            if (strlen(text) > QR_NAME_MAX)
                return fail(b, n->pos, "the label %s is longer than %u bytes; add an alias", text,
                            QR_NAME_MAX);
            memcpy(b->labels[i], text, strlen(text) + 1);
        }
        o->label = b->labels[i];
        b->out_ptrs[i] = o;
    }
    return 0;
}

/* Which SELECT item an ORDER BY key names. */
static int order_target(struct build *b, const struct qr_node *n, size_t *out)
{
    const struct qr_query *q = b->q;
    char text[QR_NAME_MAX + 32];
    int col;

    if (n->kind == QR_N_CONST) {
        if (n->lit != QR_LIT_INT)
            return fail(b, n->pos, "ORDER BY takes an output name, a position or an aggregate");
        if (n->i < 1 || (uint64_t)n->i > q->n_items)
            return fail(b, n->pos,
                        "ORDER BY position %" PRId64 " is out of range: the SELECT list has %zu "
                        "item%s",
                        n->i, q->n_items, q->n_items == 1 ? "" : "s");
        *out = (size_t)(n->i - 1);
        return 0;
    }
    if (n->kind == QR_N_COLUMN) {
        for (size_t i = 0; i < q->n_items; i++) {
            if (strcasecmp(b->labels[i], n->name) == 0) {
                *out = i;
                return 0;
            }
        }
        col = qr_catalog_column(b->t, n->name);
        if (col < 0)
            return fail(b, n->pos, "ORDER BY %s names neither an output nor a column", n->name);
        for (size_t i = 0; i < q->n_items; i++) {
            if (b->out[i].is_group && b->group_col[b->out[i].index] == col) {
                *out = i;
                return 0;
            }
        }
        return fail(b, n->pos, "ORDER BY %s does not match any item of the SELECT list",
                    b->t->columns[col].name);
    }
    TRY(resolve_agg(b, n, &col));
    for (size_t i = 0; i < q->n_items; i++) {
        size_t a = b->out[i].index;
        if (!b->out[i].is_group && b->agg_kind[a] == n->agg && b->agg_col[a] == col) {
            *out = i;
            return 0;
        }
    }
    agg_text(text, sizeof text, n->agg, col < 0 ? "" : b->t->columns[col].name);
    return fail(b, n->pos, "ORDER BY %s does not match any item of the SELECT list", text);
}

static int build_order_by(struct build *b)
{
    for (size_t k = 0; k < b->q->n_order; k++) {
        Cohort__OrderKey *o = &b->order[k];
        size_t target = 0;

        TRY(order_target(b, b->q->order[k].expr, &target));
        cohort__order_key__init(o);
        o->output = (uint32_t)target;
        o->desc = b->q->order[k].desc;
        b->order_ptrs[k] = o;
    }
    return 0;
}

/* Defaults that depend on the grouping: see DESIGN.md section 4 and the plan's comments. */
static void build_sizes(struct build *b)
{
    const struct qr_query *q = b->q;
    uint64_t groups = 1;
    uint32_t tuples = 1;

    for (size_t g = 0; g < q->n_group; g++) {
        const struct qr_column *c = &b->t->columns[b->group_col[g]];
        if (!c->per_participant)
            tuples = QR_DEFAULT_TUPLES_GROUPED;
        groups *= c->distinct > 0 ? c->distinct : 1;
        if (groups > QR_DEFAULT_GROUPS_CAP)
            groups = QR_DEFAULT_GROUPS_CAP;
    }
    b->plan.tuples_per_participant = q->opt.has_tuples ? q->opt.tuples_per_participant : tuples;
    b->plan.max_groups = q->opt.has_max_groups ? q->opt.max_groups : (uint32_t)groups;
}

/*
 * The grouping protocol and its parameters. The SQL's WITH wins over the
 * compile options; "auto" (or nothing) asks the cost model for the cheapest
 * protocol that leaks no more than allowed. Under differential privacy only
 * protocols that leak nothing are allowed: tag frequencies would give the
 * service the exact counts the noise hides.
 */
static int build_protocol(struct build *b, const struct qr_compile_opts *opts)
{
    const struct qr_options *o = &b->q->opt;
    const char *name = o->has_protocol ? o->protocol : opts ? opts->protocol : NULL;
    int max_leak = opts ? opts->max_leakage : QR_LEAK_NONE;
    struct qr_cost_input in;
    Cohort__Plan *p = &b->plan;
    uint32_t k = p->tuples_per_participant, g = p->max_groups;

    if (name != NULL && qr_protocol_valid(name) != 0) {
        qr_sql_error_at(b->err, b->q->sql, b->q->sql_len, o->protocol_pos, "unknown protocol '%s'",
                        name);
        return QR_ERR_SQL;
    }
    memset(&in, 0, sizeof in);
    in.participants = o->has_participants                ? o->participants
                      : opts && opts->participants > 0   ? opts->participants
                      : b->q->has_size && b->q->size > 0 ? b->q->size
                                                         : QR_COST_PARTICIPANTS;
    in.groups = g;
    in.tuples = k;
    in.buckets = o->has_buckets ? o->buckets : 0;
    in.fakes = o->fakes;
    in.has_fakes = o->has_fakes;
    in.rounds = o->has_rounds ? o->rounds : 0;
    in.aggregates = (uint32_t)b->n_aggs;
    in.token_ram = opts && opts->token_ram ? opts->token_ram : 65536;
    in.latency_ms = opts && opts->latency_ms ? opts->latency_ms : 20;
    in.group_columns = (uint32_t)b->q->n_group;
    for (size_t i = 0; i < b->q->n_group; i++)
        if (b->t->columns[b->group_col[i]].type == QR_TEXT)
            in.group_text_columns++;
    in.batch_min = o->has_batch_min ? o->batch_min : 0;
    in.collect_seconds = (uint32_t)(b->plan.deadline - b->plan.issued_at); /* build_times ran */
    if (b->privacy.epsilon > 0)
        max_leak = QR_LEAK_NONE;
    if (name == NULL || strcmp(name, "auto") == 0)
        name = qr_cost_choose(&in, max_leak, NULL);
    else if (b->privacy.epsilon > 0 && qr_protocol_leakage(name) > QR_LEAK_NONE) {
        qr_sql_error_at(b->err, b->q->sql, b->q->sql_len, o->protocol_pos,
                        "protocol %s shows the service how often each group occurs, which "
                        "differential privacy cannot allow; use s_agg or c_noise",
                        name);
        return QR_ERR_SQL;
    }
    p->protocol = (char *)name;
    if ((o->has_buckets || o->has_fakes || o->has_rounds || o->has_batch_min) &&
        strcmp(name, "s_agg") == 0) {
        qr_sql_error_at(b->err, b->q->sql, b->q->sql_len, o->protocol_pos,
                        "buckets, fakes, rounds and batch_min belong to the other protocols, "
                        "not s_agg");
        return QR_ERR_SQL;
    }
    if (strcmp(name, "rnf_noise") == 0 || strcmp(name, "c_noise") == 0) {
        uint32_t cap = strcmp(name, "c_noise") == 0 ? QR_C_NOISE_EMIT_MAX / k : QR_BUCKETS_MAX;
        p->tag_buckets = o->has_buckets ? o->buckets : g < cap ? g : cap;
        if (p->tag_buckets > cap) {
            qr_sql_error_at(b->err, b->q->sql, b->q->sql_len, o->protocol_pos,
                            "c_noise sends buckets x tuples_per_participant ciphertexts per "
                            "participant, at most %u: buckets must be at most %u",
                            QR_C_NOISE_EMIT_MAX, cap);
            return QR_ERR_SQL;
        }
        if (strcmp(name, "rnf_noise") == 0)
            p->fakes = o->has_fakes ? o->fakes : QR_DEFAULT_FAKES;
    } else if (strcmp(name, "ed_hist") == 0) {
        /* The bounds come from a histogram query (qr_hist_apply); until
         * then the plan asks for this many buckets and no token takes it. */
        p->tag_buckets = o->has_buckets ? o->buckets : (g + 3) / 4;
    } else if (strcmp(name, "shuffle") == 0) {
        p->shuffle_batch_min = o->has_batch_min ? o->batch_min : QR_DEFAULT_BATCH_MIN;
        if (o->has_rounds) {
            p->shuffle_rounds = o->rounds;
        } else {
            /* The batch a token of token_ram holds, for this plan's tuples. */
            struct tk_layout l;
            uint32_t text = 0;

            for (size_t g2 = 0; g2 < b->q->n_group; g2++)
                text += b->t->columns[b->group_col[g2]].type == QR_TEXT;
            if (tk_layout_of(&l, "shuffle", (uint32_t)b->q->n_group, text, (uint32_t)b->n_aggs, g,
                             p->shuffle_batch_min, 0) != 0)
                l.tuple_plain_len = 60 + 24 * (b->n_aggs + 1);
            p->shuffle_rounds = qr_cost_shuffle_rounds(
                in.participants * k, tk_shuffle_capacity(in.token_ram, l.tuple_plain_len + 16));
        }
    }
    if (o->has_fakes && strcmp(name, "rnf_noise") != 0) {
        qr_sql_error_at(b->err, b->q->sql, b->q->sql_len, o->protocol_pos,
                        "fakes belongs to rnf_noise");
        return QR_ERR_SQL;
    }
    if ((o->has_rounds || o->has_batch_min) && strcmp(name, "shuffle") != 0) {
        qr_sql_error_at(b->err, b->q->sql, b->q->sql_len, o->protocol_pos,
                        "rounds and batch_min belong to shuffle");
        return QR_ERR_SQL;
    }
    return 0;
}

static int build_times(struct build *b, const struct qr_compile_opts *opts)
{
    int64_t now = opts ? opts->now : 0;
    int64_t collect =
        opts && opts->collect_seconds ? opts->collect_seconds : QR_DEFAULT_COLLECT_SECONDS;
    int64_t valid = opts && opts->valid_seconds ? opts->valid_seconds : QR_DEFAULT_VALID_SECONDS;

    if (b->q->has_deadline)
        collect = b->q->deadline_seconds;
    if (collect < 0 || valid < 0 || now > INT64_MAX - collect ||
        now + collect > INT64_MAX - valid) {
        qr_sql_error_at(b->err, b->q->sql, b->q->sql_len, 0,
                        "bad compile options: times out of range");
        return QR_ERR_ARG;
    }
    b->plan.issued_at = now;
    b->plan.deadline = now + collect;
    b->plan.expires_at = b->plan.deadline + valid;
    return 0;
}

/*
 * Differential privacy as tokens will count it (token/tk_noise.c): the
 * number of noisy quantities, and each quantity's sensitivity from the
 * contribution bounds. avg_count: the COUNT half of an AVG; agg -1: the
 * participant count of the threshold.
 */
static unsigned dp_quantities(const struct build *b)
{
    unsigned n = 1;
    for (size_t i = 0; i < b->n_aggs; i++)
        n += b->agg_kind[i] == QR_AGG_AVG ? 2 : 1;
    return n;
}

static double dp_sensitivity(const struct build *b, int agg, int avg_count)
{
    double k = b->plan.tuples_per_participant, rows = k * b->privacy.max_rows, bound;

    if (agg < 0 || b->agg_kind[agg] == QR_AGG_COUNT_PARTICIPANTS)
        return k;
    if (b->agg_kind[agg] == QR_AGG_COUNT_STAR || b->agg_kind[agg] == QR_AGG_COUNT ||
        (b->agg_kind[agg] == QR_AGG_AVG && avg_count))
        return rows;
    bound = (double)b->privacy.contribution_bound;
    for (unsigned s = 0; s < b->t->columns[b->agg_col[agg]].scale; s++)
        bound *= 10;
    return rows * bound;
}

/*
 * delta = 1 - (1 - P(Z >= tau - 1))^K, Z the threshold's noise, of scale
 * n K / epsilon for n noisy quantities and K tuples per participant.
 */
static double dp_delta(unsigned n, uint32_t k, double eps, uint32_t tau)
{
    double scale = n * (double)k / eps, a = exp(-1.0 / scale), q;

    if (tau >= 2)
        q = exp(-(double)(tau - 1) / scale) / (1 + a);
    else if (tau == 1)
        q = 1 / (1 + a);
    else
        q = 1 - a * a / (1 + a);
    return q >= 1 ? 1 : -expm1(k * log1p(-q));
}

static int build_privacy(struct build *b, const struct qr_compile_opts *opts)
{
    const struct qr_options *o = &b->q->opt;
    double eps = o->has_epsilon ? o->epsilon : opts ? opts->epsilon : 0;
    int64_t bound = o->has_contribution_bound ? o->contribution_bound
                    : opts                    ? opts->contribution_bound
                                              : 0;
    uint32_t max_rows = o->has_max_rows ? o->max_rows : opts ? opts->max_rows : 0;
    size_t eps_pos = o->has_epsilon ? o->epsilon_pos : 0;
    size_t bound_pos = o->has_contribution_bound ? o->contribution_bound_pos : eps_pos;

    cohort__privacy__init(&b->privacy);
    b->privacy.min_participants =
        o->has_min_participants ? o->min_participants : QR_DEFAULT_MIN_PARTICIPANTS;
    b->privacy.min_group_size =
        o->has_min_group_size ? o->min_group_size : QR_DEFAULT_MIN_GROUP_SIZE;
    b->plan.privacy = &b->privacy;
    if (!(eps >= 0) || !isfinite(eps) || bound < 0 || max_rows > QR_DP_MAX_ROWS_MAX)
        return fail(b, eps_pos, "bad differential-privacy settings");
    if (eps == 0) {
        if (o->has_max_rows)
            return fail(b, o->max_rows_pos,
                        "max_rows bounds rows only under differential "
                        "privacy; give epsilon too");
        b->privacy.contribution_bound = bound;
        return 0;
    }
    b->privacy.epsilon = eps;
    b->privacy.contribution_bound = bound;
    b->privacy.max_rows = max_rows ? max_rows : QR_DP_DEFAULT_MAX_ROWS;
    for (size_t i = 0; i < b->n_aggs; i++) {
        enum qr_agg k = b->agg_kind[i];
        char text[QR_NAME_MAX + 32];

        agg_text(text, sizeof text, k, b->aggs[i].column);
        if (k == QR_AGG_MIN || k == QR_AGG_MAX)
            return fail(b, b->agg_pos[i],
                        "%s has no differential-privacy mechanism; remove it or drop epsilon",
                        text);
        if ((k == QR_AGG_SUM || k == QR_AGG_AVG) && bound == 0)
            return fail(b, b->agg_pos[i],
                        "%s under differential privacy needs contribution_bound: WITH "
                        "(contribution_bound = B) clamps every value into [-B, B]",
                        text);
    }
    for (int i = -1; i < (int)b->n_aggs; i++) {
        for (int half = 0; half < 2; half++) {
            double sens = dp_sensitivity(b, i, half);
            if (sens > QR_DP_SENSITIVITY_MAX || dp_quantities(b) * sens / eps > QR_DP_SCALE_MAX)
                return fail(b, i >= 0 && b->agg_kind[i] != QR_AGG_COUNT_STAR ? bound_pos : eps_pos,
                            "the noise for epsilon %g and these contribution bounds would exceed "
                            "%g; raise epsilon or lower the bounds",
                            eps, QR_DP_SCALE_MAX);
        }
    }
    /* The default threshold: the smallest that keeps delta below
     * QR_DP_DEFAULT_DELTA (delta falls as the threshold rises). */
    if (!o->has_min_group_size) {
        uint32_t lo = b->privacy.min_group_size, hi = QR_DP_GROUP_SIZE_MAX;
        unsigned n = dp_quantities(b);
        uint32_t k = b->plan.tuples_per_participant;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (dp_delta(n, k, eps, mid) > QR_DP_DEFAULT_DELTA)
                lo = mid + 1;
            else
                hi = mid;
        }
        b->privacy.min_group_size = lo;
    }
    return 0;
}

/* The catalog schema the plan is compiled against travels in the plan:
 * tokens that aggregate need the types, whatever tables they hold. */
static int build_schema(struct build *b)
{
    const struct qr_table *t = b->t;
    if (t->n_columns > QR_SCHEMA_COLUMNS_MAX)
        return fail(b, 0, "table %s has more than %u columns", t->name, QR_SCHEMA_COLUMNS_MAX);
    cohort__table_schema__init(&b->schema);
    b->schema.name = (char *)t->name;
    for (size_t i = 0; i < t->n_columns; i++) {
        cohort__column__init(&b->columns[i]);
        b->columns[i].name = (char *)t->columns[i].name;
        b->columns[i].type = (Cohort__ValueType)t->columns[i].type;
        b->columns[i].scale = t->columns[i].scale;
        b->column_ptrs[i] = &b->columns[i];
    }
    b->schema.n_columns = t->n_columns;
    b->schema.columns = b->column_ptrs;
    b->plan.schema = &b->schema;
    return 0;
}

static int build(struct build *b, const struct qr_compile_opts *opts)
{
    const struct qr_query *q = b->q;
    Cohort__Plan *p = &b->plan;

    cohort__plan__init(p);
    TRY(build_table(b));
    TRY(check_item_names(b));
    TRY(lower_program(b, &b->where, q->where, 0));
    TRY(build_group_by(b));
    TRY(build_items(b));
    TRY(lower_program(b, &b->having, q->having, 1));
    TRY(build_order_by(b));
    TRY(build_times(b, opts));
    build_sizes(b);
    TRY(build_privacy(b, opts));

    if (sodium_init() < 0) {
        qr_sql_error_at(b->err, q->sql, q->sql_len, 0, "libsodium failed to initialise");
        return QR_ERR_CRYPTO;
    }
    randombytes_buf(b->nonce, sizeof b->nonce);
    p->version = QR_PLAN_VERSION;
    p->nonce.data = b->nonce;
    p->nonce.len = sizeof b->nonce;
    p->study = (char *)(opts && opts->study ? opts->study : "default");
    TRY(build_protocol(b, opts));
    p->table = (char *)b->t->name;
    TRY(build_schema(b));
    p->n_group_by = q->n_group;
    p->group_by = b->group_names;
    p->n_aggregates = b->n_aggs;
    p->aggregates = b->agg_ptrs;
    p->n_where = b->where.n;
    p->where = b->where.ptr;
    p->n_having = b->having.n;
    p->having = b->having.ptr;
    p->n_output = q->n_items;
    p->output = b->out_ptrs;
    p->n_order_by = q->n_order;
    p->order_by = b->order_ptrs;
    p->limit = q->has_limit ? q->limit : 0;
    p->size = q->has_size ? q->size : 0;
    p->sql = (char *)"";
    return 0;
}

int qr_plan_build(uint8_t **plan, size_t *plan_len, const struct qr_query *q,
                  const struct qr_compile_opts *opts, struct qr_sql_error *err)
{
    struct build *b;
    char *sql = NULL;
    uint8_t *buf = NULL;
    size_t len;
    int rc;

    *plan = NULL;
    *plan_len = 0;
    b = calloc(1, sizeof *b);
    if (b == NULL) {
        qr_sql_error_at(err, q->sql, q->sql_len, 0, "out of memory");
        return QR_ERR_NOMEM;
    }
    b->q = q;
    b->err = err;
    rc = build(b, opts);
    if (rc != 0)
        goto cleanup;
    if (opts != NULL && opts->study != NULL && strlen(opts->study) > QR_NAME_MAX) {
        qr_sql_error_at(err, q->sql, q->sql_len, 0, "study name longer than %u bytes", QR_NAME_MAX);
        rc = QR_ERR_ARG;
        goto cleanup;
    }
    sql = malloc(q->sql_len + 1);
    if (sql == NULL) {
        rc = QR_ERR_NOMEM;
        qr_sql_error_at(err, q->sql, q->sql_len, 0, "out of memory");
        goto cleanup;
    }
    memcpy(sql, q->sql, q->sql_len);
    sql[q->sql_len] = '\0';
    b->plan.sql = sql;
    len = cohort__plan__get_packed_size(&b->plan);
    if (len > QR_PLAN_MAX) {
        rc = QR_ERR_SQL;
        qr_sql_error_at(err, q->sql, q->sql_len, 0, "the plan would be larger than %u bytes",
                        QR_PLAN_MAX);
        goto cleanup;
    }
    buf = malloc(len ? len : 1);
    if (buf == NULL) {
        rc = QR_ERR_NOMEM;
        qr_sql_error_at(err, q->sql, q->sql_len, 0, "out of memory");
        goto cleanup;
    }
    cohort__plan__pack(&b->plan, buf);
    *plan = buf;
    *plan_len = len;
    buf = NULL;
cleanup:
    free(buf);
    free(sql);
    free(b);
    return rc;
}

/* ------------------------------------------------------------- explain */

/* A growing string; once an allocation fails it stays failed. */
struct sb {
    char *p;
    size_t len, cap;
    int failed;
};

#define SB_MAX (8u << 20)

static void sb_grow(struct sb *s, size_t need)
{
    size_t cap = s->cap ? s->cap : 256;
    char *p;

    if (s->failed)
        return;
    if (s->len + need + 1 > SB_MAX) {
        s->failed = 1;
        return;
    }
    while (cap < s->len + need + 1)
        cap *= 2;
    if (cap == s->cap)
        return;
    p = realloc(s->p, cap);
    if (p == NULL) {
        s->failed = 1;
        return;
    }
    s->p = p;
    s->cap = cap;
}

static void sb_printf(struct sb *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(struct sb *s, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        s->failed = 1;
        return;
    }
    sb_grow(s, (size_t)n);
    if (s->failed)
        return;
    va_start(ap, fmt);
    vsnprintf(s->p + s->len, s->cap - s->len, fmt, ap);
    va_end(ap);
    s->len += (size_t)n;
}

/* Untrusted bytes: printable ASCII and UTF-8 pass, control bytes become '?'. */
static void sb_untrusted(struct sb *s, const uint8_t *p, size_t n, int quote)
{
    sb_grow(s, 2 * n);
    if (s->failed)
        return;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c < 0x20 || c == 0x7f)
            c = '?';
        if (quote && c == '\'')
            s->p[s->len++] = '\'';
        s->p[s->len++] = (char)c;
    }
    s->p[s->len] = '\0';
}

static void sb_str(struct sb *s, const char *str)
{
    sb_untrusted(s, (const uint8_t *)str, strlen(str), 0);
}

static void sb_free(struct sb *s)
{
    free(s->p);
    memset(s, 0, sizeof *s);
}

static void explain_value(struct sb *s, const Cohort__Value *v)
{
    struct qr_value qv;
    char buf[64];

    if (v == NULL) {
        sb_printf(s, "NULL");
        return;
    }
    memset(&qv, 0, sizeof qv);
    qv.i = v->i;
    qv.d = v->d;
    qv.scale = v->scale;
    switch (v->type) {
    case COHORT__VALUE_TYPE__VT_TEXT:
        sb_printf(s, "'");
        sb_untrusted(s, v->s.data, v->s.len, 1);
        sb_printf(s, "'");
        return;
    case COHORT__VALUE_TYPE__VT_DATE:
        qv.type = QR_DATE;
        qr_value_format(buf, sizeof buf, &qv);
        sb_printf(s, "DATE '%s'", buf);
        return;
    case COHORT__VALUE_TYPE__VT_TIMESTAMP:
        qv.type = QR_TIMESTAMP;
        qr_value_format(buf, sizeof buf, &qv);
        sb_printf(s, "TIMESTAMP '%s'", buf);
        return;
    case COHORT__VALUE_TYPE__VT_BOOL:
        sb_printf(s, "%s", v->i ? "TRUE" : "FALSE");
        return;
    case COHORT__VALUE_TYPE__VT_DECIMAL:
        qv.type = QR_DECIMAL;
        break;
    case COHORT__VALUE_TYPE__VT_DOUBLE:
        sb_printf(s, "%g", v->d);
        return;
    case COHORT__VALUE_TYPE__VT_INT:
        qv.type = QR_INT;
        break;
    default:
        sb_printf(s, "NULL");
        return;
    }
    qr_value_format(buf, sizeof buf, &qv);
    sb_printf(s, "%s", buf);
}

static void explain_agg(struct sb *s, const Cohort__Aggregate *a)
{
    char buf[QR_NAME_MAX + 32];
    char col[QR_NAME_MAX + 1];

    snprintf(col, sizeof col, "%s", a->column);
    agg_text(buf, sizeof buf, (enum qr_agg)a->func, col);
    sb_str(s, buf);
}

enum prec { P_OR = 1, P_AND, P_NOT, P_CMP, P_ATOM };

struct ent {
    struct sb s;
    enum prec prec;
};

static void wrap(struct sb *out, struct ent *e, enum prec min)
{
    if (e->prec < min)
        sb_printf(out, "(%s)", e->s.p ? e->s.p : "");
    else
        sb_printf(out, "%s", e->s.p ? e->s.p : "");
}

/*
 * Rebuild infix text from a postfix program; "(malformed program)" if the
 * program does not leave exactly one value. Returns -1 on allocation failure.
 */
static int explain_program(struct sb *out, const Cohort__Plan *p, Cohort__Instr **prog, size_t n)
{
    static const char *const cmp[] = {"=", "<>", "<", "<=", ">", ">="};
    struct ent *st = calloc(n + 1, sizeof *st);
    size_t top = 0;
    int ok = 1;

    if (st == NULL)
        return -1;
    if (n > QR_PROGRAM_MAX)
        ok = 0; /* no compiler of ours writes it */
    for (size_t k = 0; k < n && ok; k++) {
        const Cohort__Instr *in = prog[k];
        struct ent e = {{0}, P_ATOM};
        switch (in->op) {
        case COHORT__OP__OP_COLUMN:
            sb_str(&e.s, in->column);
            break;
        case COHORT__OP__OP_CONST:
            explain_value(&e.s, in->value);
            break;
        case COHORT__OP__OP_AGGREGATE:
            if (in->index >= p->n_aggregates) {
                ok = 0;
                break;
            }
            explain_agg(&e.s, p->aggregates[in->index]);
            break;
        case COHORT__OP__OP_EQ:
        case COHORT__OP__OP_NE:
        case COHORT__OP__OP_LT:
        case COHORT__OP__OP_LE:
        case COHORT__OP__OP_GT:
        case COHORT__OP__OP_GE:
        case COHORT__OP__OP_AND:
        case COHORT__OP__OP_OR: {
            int is_cmp = in->op <= COHORT__OP__OP_GE;
            enum prec pr = is_cmp ? P_CMP : in->op == COHORT__OP__OP_AND ? P_AND : P_OR;
            if (top < 2) {
                ok = 0;
                break;
            }
            wrap(&e.s, &st[top - 2], is_cmp ? P_ATOM : pr);
            sb_printf(&e.s, " %s ",
                      is_cmp ? cmp[in->op - COHORT__OP__OP_EQ]
                             : (in->op == COHORT__OP__OP_AND ? "AND" : "OR"));
            wrap(&e.s, &st[top - 1], is_cmp ? P_ATOM : pr);
            e.prec = pr;
            sb_free(&st[--top].s);
            sb_free(&st[--top].s);
            break;
        }
        case COHORT__OP__OP_NOT:
        case COHORT__OP__OP_IS_NULL:
        case COHORT__OP__OP_IS_NOT_NULL:
        case COHORT__OP__OP_LIKE_PREFIX:
        case COHORT__OP__OP_IN:
            if (top < 1) {
                ok = 0;
                break;
            }
            if (in->op == COHORT__OP__OP_NOT) {
                sb_printf(&e.s, "NOT ");
                wrap(&e.s, &st[top - 1], P_ATOM);
                e.prec = P_NOT;
            } else {
                wrap(&e.s, &st[top - 1], P_ATOM);
                e.prec = P_CMP;
            }
            if (in->op == COHORT__OP__OP_IS_NULL)
                sb_printf(&e.s, " IS NULL");
            if (in->op == COHORT__OP__OP_IS_NOT_NULL)
                sb_printf(&e.s, " IS NOT NULL");
            if (in->op == COHORT__OP__OP_LIKE_PREFIX) {
                sb_printf(&e.s, " LIKE '");
                if (in->value != NULL)
                    sb_untrusted(&e.s, in->value->s.data, in->value->s.len, 1);
                sb_printf(&e.s, "%%'");
            }
            if (in->op == COHORT__OP__OP_IN) {
                sb_printf(&e.s, " IN (");
                for (size_t i = 0; i < in->n_list; i++) {
                    sb_printf(&e.s, "%s", i ? ", " : "");
                    explain_value(&e.s, in->list[i]);
                }
                sb_printf(&e.s, ")");
            }
            sb_free(&st[--top].s);
            break;
        default:
            ok = 0;
            break;
        }
        if (!ok) {
            sb_free(&e.s);
            break;
        }
        st[top++] = e;
    }
    if (ok && top == 1)
        sb_printf(out, "%s", st[0].s.p ? st[0].s.p : "");
    else
        sb_printf(out, "(malformed program)");
    int failed = 0;
    for (size_t k = 0; k < top; k++) {
        failed |= st[k].s.failed;
        sb_free(&st[k].s);
    }
    free(st);
    return failed ? -1 : 0;
}

static void explain_time(struct sb *s, const char *what, int64_t t, int64_t since)
{
    struct qr_value v;
    char buf[64];

    memset(&v, 0, sizeof v);
    v.type = QR_TIMESTAMP;
    v.i = t;
    qr_value_format(buf, sizeof buf, &v);
    sb_printf(s, "  %-12s%s UTC", what, buf);
    if (since != INT64_MIN && t >= since)
        sb_printf(s, " (+%" PRId64 " s)", t - since);
    sb_printf(s, "\n");
}

static int explain_plan(struct sb *s, const Cohort__Plan *p)
{
    sb_printf(s, "plan v%" PRIu32 " for study ", p->version);
    sb_str(s, p->study);
    sb_printf(s, ", protocol ");
    sb_str(s, p->protocol);
    sb_printf(s, "\n  %-12s", "table:");
    sb_str(s, p->table);
    sb_printf(s, "\n  %-12s", "select:");
    for (size_t i = 0; i < p->n_output; i++) {
        const Cohort__OutputColumn *o = p->output[i];
        struct sb item = {0};
        sb_printf(s, "%s", i ? ", " : "");
        if (o->is_group && o->index < p->n_group_by)
            sb_str(&item, p->group_by[o->index]);
        else if (!o->is_group && o->index < p->n_aggregates)
            explain_agg(&item, p->aggregates[o->index]);
        else
            sb_printf(&item, "(bad index %" PRIu32 ")", o->index);
        sb_printf(s, "%s", item.p ? item.p : "");
        if (item.p == NULL || strcmp(item.p, o->label) != 0) {
            sb_printf(s, " AS ");
            sb_str(s, o->label);
        }
        s->failed |= item.failed;
        sb_free(&item);
    }
    sb_printf(s, "\n  %-12s", "group by:");
    for (size_t i = 0; i < p->n_group_by; i++) {
        sb_printf(s, "%s", i ? ", " : "");
        sb_str(s, p->group_by[i]);
    }
    if (p->n_group_by == 0)
        sb_printf(s, "(none: one group)");
    sb_printf(s, "\n  %-12s", "aggregates:");
    for (size_t i = 0; i < p->n_aggregates; i++) {
        sb_printf(s, "%s#%zu ", i ? ", " : "", i);
        explain_agg(s, p->aggregates[i]);
    }
    sb_printf(s, "\n  %-12s", "where:");
    if (p->n_where == 0)
        sb_printf(s, "(all rows)");
    else if (explain_program(s, p, p->where, p->n_where) != 0)
        return -1;
    sb_printf(s, "\n  %-12s", "having:");
    if (p->n_having == 0)
        sb_printf(s, "(all groups)");
    else if (explain_program(s, p, p->having, p->n_having) != 0)
        return -1;
    sb_printf(s, "\n  %-12s", "order by:");
    for (size_t i = 0; i < p->n_order_by; i++) {
        const Cohort__OrderKey *k = p->order_by[i];
        sb_printf(s, "%s", i ? ", " : "");
        if (k->output < p->n_output)
            sb_str(s, p->output[k->output]->label);
        else
            sb_printf(s, "(bad output %" PRIu32 ")", k->output);
        sb_printf(s, " %s", k->desc ? "DESC" : "ASC");
    }
    if (p->n_order_by == 0)
        sb_printf(s, "(unordered)");
    sb_printf(s, "\n  %-12s", "limit:");
    if (p->limit)
        sb_printf(s, "%" PRIu64 " rows\n", p->limit);
    else
        sb_printf(s, "(none)\n");
    sb_printf(s, "  %-12s", "size:");
    if (p->size)
        sb_printf(s, "stop collecting after %" PRIu64 " contributions\n", p->size);
    else
        sb_printf(s, "(none: collect until the deadline)\n");
    explain_time(s, "issued:", p->issued_at, INT64_MIN);
    explain_time(s, "deadline:", p->deadline, p->issued_at);
    explain_time(s, "expires:", p->expires_at, p->deadline);
    if (p->privacy != NULL) {
        sb_printf(s,
                  "  %-12sat least %" PRIu32 " participants; groups of fewer than %" PRIu32
                  "%s participants dropped; ",
                  "privacy:", p->privacy->min_participants, p->privacy->min_group_size,
                  p->privacy->epsilon > 0 ? " (noisy)" : "");
        if (p->privacy->epsilon > 0) {
            unsigned n = 1;
            for (size_t i = 0; i < p->n_aggregates; i++)
                n += p->aggregates[i]->func == COHORT__AGG_FUNC__AGG_AVG ? 2 : 1;
            sb_printf(s, "epsilon %g, contribution bound %" PRId64 "\n", p->privacy->epsilon,
                      p->privacy->contribution_bound);
            sb_printf(s,
                      "  %-12sat most %" PRIu32 " row%s per participant and group; noise on %u "
                      "quantities, epsilon/%u each; delta %.2g\n",
                      "dp:", p->privacy->max_rows, p->privacy->max_rows == 1 ? "" : "s", n, n,
                      p->tuples_per_participant > 0
                          ? dp_delta(n, p->tuples_per_participant, p->privacy->epsilon,
                                     p->privacy->min_group_size)
                          : 1.0);
        } else
            sb_printf(s, "no differential privacy\n");
    } else {
        sb_printf(s, "  %-12s(none)\n", "privacy:");
    }
    sb_printf(s, "  %-12s%" PRIu32 " per participant\n", "tuples:", p->tuples_per_participant);
    sb_printf(s, "  %-12s%" PRIu32 "\n", "max groups:", p->max_groups);
    return s->failed ? -1 : 0;
}

char *qr_plan_explain(const uint8_t *plan, size_t plan_len)
{
    Cohort__Plan *p = NULL;
    struct sb s = {0};
    char *text = NULL;

    if (plan == NULL || plan_len > QR_PLAN_MAX)
        return NULL;
    p = cohort__plan__unpack(NULL, plan_len, plan);
    if (p == NULL)
        return NULL;
    if (explain_plan(&s, p) != 0 || s.failed)
        goto cleanup;
    text = s.p;
    s.p = NULL;
cleanup:
    sb_free(&s);
    cohort__plan__free_unpacked(p, NULL);
    return text;
}

uint32_t qr_plan_group_text_columns(const uint8_t *plan, size_t plan_len)
{
    Cohort__Plan *p;
    uint32_t n = 0;

    if (plan == NULL || plan_len > QR_PLAN_MAX)
        return 0;
    p = cohort__plan__unpack(NULL, plan_len, plan);
    if (p == NULL)
        return 0;
    for (size_t g = 0; g < p->n_group_by && p->schema != NULL; g++)
        for (size_t c = 0; c < p->schema->n_columns; c++)
            if (p->group_by[g] != NULL && p->schema->columns[c]->name != NULL &&
                strcmp(p->group_by[g], p->schema->columns[c]->name) == 0 &&
                p->schema->columns[c]->type == COHORT__VALUE_TYPE__VT_TEXT)
                n++;
    cohort__plan__free_unpacked(p, NULL);
    return n;
}
