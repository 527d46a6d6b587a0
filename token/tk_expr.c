/*
 * The WHERE/HAVING stack machine.
 *
 * Programs are postfix (proto Op). Values follow SQL: a comparison with a
 * NULL is unknown (NULL), AND/OR/NOT use Kleene's three-valued logic, and a
 * row or group is kept only when the program's value is true. The stack is
 * a fixed array of TK_STACK_MAX values on the C stack; tk_program_check
 * proves, before any row is seen, that a program never needs more, that
 * every comparison is between comparable types, and that it leaves exactly
 * one boolean. tk_eval then cannot fail on a checked program except through
 * a broken invariant.
 */
#include "token/tk_int.h"

enum { K_NULL, K_NUM, K_TEXT, K_DATE, K_TS, K_BOOL };

static int kind_of(uint8_t type)
{
    switch (type) {
    case COHORT__VALUE_TYPE__VT_INT:
    case COHORT__VALUE_TYPE__VT_DECIMAL:
    case COHORT__VALUE_TYPE__VT_DOUBLE:
        return K_NUM;
    case COHORT__VALUE_TYPE__VT_TEXT:
        return K_TEXT;
    case COHORT__VALUE_TYPE__VT_DATE:
        return K_DATE;
    case COHORT__VALUE_TYPE__VT_TIMESTAMP:
        return K_TS;
    case COHORT__VALUE_TYPE__VT_BOOL:
        return K_BOOL;
    default:
        return K_NULL;
    }
}

static int agg_kind(const struct tk_plan *plan, uint32_t i)
{
    const struct tk_agg *g = &plan->aggs[i];
    switch (g->func) {
    case COHORT__AGG_FUNC__AGG_COUNT_STAR:
    case COHORT__AGG_FUNC__AGG_COUNT:
    case COHORT__AGG_FUNC__AGG_COUNT_PARTICIPANTS:
    case COHORT__AGG_FUNC__AGG_AVG:
        return K_NUM;
    default:
        return kind_of(plan->columns[g->col].type);
    }
}

static bool compatible(int a, int b)
{
    return a == K_NULL || b == K_NULL || a == b;
}

int tk_program_check(const struct tk_instr *prog, size_t n, const struct tk_plan *plan, bool having)
{
    int st[TK_STACK_MAX];
    size_t sp = 0, i, k;

    if (n > TK_PROGRAM_MAX)
        return TK_ERR_BAD_PLAN;
    for (i = 0; i < n; i++) {
        const struct tk_instr *in = &prog[i];
        int a, b;
        switch (in->op) {
        case COHORT__OP__OP_COLUMN:
        case COHORT__OP__OP_CONST:
        case COHORT__OP__OP_AGGREGATE:
            if (sp == TK_STACK_MAX)
                return TK_ERR_BAD_PLAN;
            if (in->op == COHORT__OP__OP_CONST)
                st[sp++] = kind_of(in->value.type);
            else if (in->op == COHORT__OP__OP_AGGREGATE) {
                if (!having || in->index >= plan->n_aggs)
                    return TK_ERR_BAD_PLAN;
                st[sp++] = agg_kind(plan, in->index);
            } else if (having) {
                if (in->index >= plan->n_group)
                    return TK_ERR_BAD_PLAN;
                st[sp++] = kind_of(plan->columns[plan->group_col[in->index]].type);
            } else {
                if (in->index >= plan->n_columns)
                    return TK_ERR_BAD_PLAN;
                st[sp++] = kind_of(plan->columns[in->index].type);
            }
            break;
        case COHORT__OP__OP_EQ:
        case COHORT__OP__OP_NE:
        case COHORT__OP__OP_LT:
        case COHORT__OP__OP_LE:
        case COHORT__OP__OP_GT:
        case COHORT__OP__OP_GE:
            if (sp < 2)
                return TK_ERR_BAD_PLAN;
            b = st[--sp];
            a = st[--sp];
            if (!compatible(a, b))
                return TK_ERR_BAD_PLAN;
            st[sp++] = K_BOOL;
            break;
        case COHORT__OP__OP_AND:
        case COHORT__OP__OP_OR:
            if (sp < 2)
                return TK_ERR_BAD_PLAN;
            b = st[--sp];
            a = st[--sp];
            if (!compatible(a, K_BOOL) || !compatible(b, K_BOOL))
                return TK_ERR_BAD_PLAN;
            st[sp++] = K_BOOL;
            break;
        case COHORT__OP__OP_NOT:
            if (sp < 1 || !compatible(st[sp - 1], K_BOOL))
                return TK_ERR_BAD_PLAN;
            st[sp - 1] = K_BOOL;
            break;
        case COHORT__OP__OP_IS_NULL:
        case COHORT__OP__OP_IS_NOT_NULL:
            if (sp < 1)
                return TK_ERR_BAD_PLAN;
            st[sp - 1] = K_BOOL;
            break;
        case COHORT__OP__OP_LIKE_PREFIX:
            if (sp < 1 || !compatible(st[sp - 1], K_TEXT) ||
                in->value.type != COHORT__VALUE_TYPE__VT_TEXT)
                return TK_ERR_BAD_PLAN;
            st[sp - 1] = K_BOOL;
            break;
        case COHORT__OP__OP_IN:
            if (sp < 1 || in->n_list == 0 || in->n_list > TK_IN_LIST_MAX)
                return TK_ERR_BAD_PLAN;
            for (k = 0; k < in->n_list; k++)
                if (in->list[k].type == COHORT__VALUE_TYPE__VT_NULL ||
                    !compatible(st[sp - 1], kind_of(in->list[k].type)))
                    return TK_ERR_BAD_PLAN;
            st[sp - 1] = K_BOOL;
            break;
        default:
            return TK_ERR_BAD_PLAN;
        }
    }
    if (n == 0)
        return TK_OK;
    if (sp != 1 || !compatible(st[0], K_BOOL))
        return TK_ERR_BAD_PLAN;
    return TK_OK;
}

static void push_bool(struct tk_value *v, int b)
{
    memset(v, 0, sizeof *v);
    if (b < 0) {
        v->type = COHORT__VALUE_TYPE__VT_NULL;
        return;
    }
    v->type = COHORT__VALUE_TYPE__VT_BOOL;
    v->i = b;
}

/* -1 unknown, 0 false, 1 true */
static int truth(const struct tk_value *v)
{
    if (v->type == COHORT__VALUE_TYPE__VT_NULL)
        return -1;
    return v->i != 0;
}

int tk_eval(int *out, const struct tk_instr *prog, size_t n, const struct tk_eval_ctx *ctx)
{
    struct tk_value st[TK_STACK_MAX];
    size_t sp = 0, i, k;

    if (n == 0) {
        *out = 1;
        return TK_OK;
    }
    for (i = 0; i < n; i++) {
        const struct tk_instr *in = &prog[i];
        struct tk_value *a, *b;
        int c, x, y;
        switch (in->op) {
        case COHORT__OP__OP_COLUMN:
            st[sp++] = ctx->groups ? ctx->groups[in->index] : ctx->columns[in->index];
            break;
        case COHORT__OP__OP_CONST:
            st[sp++] = in->value;
            break;
        case COHORT__OP__OP_AGGREGATE:
            st[sp++] = ctx->aggs[in->index];
            break;
        case COHORT__OP__OP_EQ:
        case COHORT__OP__OP_NE:
        case COHORT__OP__OP_LT:
        case COHORT__OP__OP_LE:
        case COHORT__OP__OP_GT:
        case COHORT__OP__OP_GE:
            b = &st[--sp];
            a = &st[sp - 1];
            if (a->type == COHORT__VALUE_TYPE__VT_NULL || b->type == COHORT__VALUE_TYPE__VT_NULL) {
                push_bool(a, -1);
                break;
            }
            c = tk_value_cmp(a, b);
            if (c == 2)
                return TK_ERR_BAD_PLAN;
            switch (in->op) {
            case COHORT__OP__OP_EQ:
                x = c == 0;
                break;
            case COHORT__OP__OP_NE:
                x = c != 0;
                break;
            case COHORT__OP__OP_LT:
                x = c < 0;
                break;
            case COHORT__OP__OP_LE:
                x = c <= 0;
                break;
            case COHORT__OP__OP_GT:
                x = c > 0;
                break;
            default:
                x = c >= 0;
                break;
            }
            push_bool(a, x);
            break;
        case COHORT__OP__OP_AND:
            y = truth(&st[--sp]);
            x = truth(&st[sp - 1]);
            push_bool(&st[sp - 1], (x == 0 || y == 0) ? 0 : (x < 0 || y < 0) ? -1 : 1);
            break;
        case COHORT__OP__OP_OR:
            y = truth(&st[--sp]);
            x = truth(&st[sp - 1]);
            push_bool(&st[sp - 1], (x == 1 || y == 1) ? 1 : (x < 0 || y < 0) ? -1 : 0);
            break;
        case COHORT__OP__OP_NOT:
            x = truth(&st[sp - 1]);
            push_bool(&st[sp - 1], x < 0 ? -1 : !x);
            break;
        case COHORT__OP__OP_IS_NULL:
            push_bool(&st[sp - 1], st[sp - 1].type == COHORT__VALUE_TYPE__VT_NULL);
            break;
        case COHORT__OP__OP_IS_NOT_NULL:
            push_bool(&st[sp - 1], st[sp - 1].type != COHORT__VALUE_TYPE__VT_NULL);
            break;
        case COHORT__OP__OP_LIKE_PREFIX:
            a = &st[sp - 1];
            if (a->type == COHORT__VALUE_TYPE__VT_NULL)
                break;
            push_bool(a, a->len >= in->value.len &&
                             (in->value.len == 0 || memcmp(a->s, in->value.s, in->value.len) == 0));
            break;
        case COHORT__OP__OP_IN:
            a = &st[sp - 1];
            if (a->type == COHORT__VALUE_TYPE__VT_NULL)
                break;
            x = 0;
            for (k = 0; k < in->n_list && !x; k++) {
                c = tk_value_cmp(a, &in->list[k]);
                if (c == 2)
                    return TK_ERR_BAD_PLAN;
                x = c == 0;
            }
            push_bool(a, x);
            break;
        default:
            return TK_ERR_BAD_PLAN;
        }
    }
    *out = truth(&st[0]) == 1;
    return TK_OK;
}
