/*
 * Laying out a decrypted result table for the researcher.
 *
 * The finalizing token seals a ResultTable whose columns are the plan's
 * group_by columns, then its aggregates, in plan order. Here it becomes a
 * struct qr_result in SELECT order, sorted by ORDER BY and cut to LIMIT:
 * work the token leaves to the querier because it needs no secret.
 *
 * Trust: the table was opened with the researcher's key and signed by a
 * certified token, but this file still checks everything it uses: the
 * number and types of columns against what the plan and the catalog say
 * they must be, every row's width, every value's type, scale and range,
 * every index in the plan. Any inconsistency is QR_ERR_MALFORMED and leaves
 * the output empty. Inputs are bounded before they are decoded
 * (QR_RESULT_TABLE_MAX, QR_PLAN_MAX) and rows by the plan's group bound.
 *
 * Under differential privacy the table must say so: its epsilon must be
 * the plan's, with one error bound per column (finite, not negative) and
 * a confidence in (0, 1); a table of a DP plan without them is malformed,
 * and so is one that claims noise the plan did not ask for. The
 * mechanism text is kept with control characters replaced.
 *
 * Sorting is a stable merge sort over row indices; NULL sorts before every
 * other value in ascending order (so after them in descending order). Ties
 * under ORDER BY are broken by the grouping columns, ascending, so that the
 * order (and what LIMIT keeps) never depends on the order in which a token
 * happened to emit its groups.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/cohort.pb-c.h"
#include "querier/qr_result.h"
#include "querier/qr_sql.h"

/* Columns a result may have: every grouping column and every aggregate. */
#define COLUMNS_MAX (QR_GROUP_COLUMNS_MAX + QR_AGGREGATES_MAX)

/* The range of DATE and TIMESTAMP values we accept: years 0000 to 9999. */
#define DAY_MIN (-719528ll)
#define DAY_MAX 2932896ll

struct expect {
    enum qr_type type;
    unsigned scale;
};

/* What the plan says each ResultTable column must be. */
static int expected_columns(struct expect *ex, const Cohort__Plan *p)
{
    const struct qr_table *t = qr_catalog_find(p->table);
    size_t g = p->n_group_by;

    if (t == NULL || g > QR_GROUP_COLUMNS_MAX || p->n_aggregates > QR_AGGREGATES_MAX)
        return QR_ERR_MALFORMED;
    for (size_t i = 0; i < g; i++) {
        int col = qr_catalog_column(t, p->group_by[i]);
        if (col < 0)
            return QR_ERR_MALFORMED;
        ex[i].type = t->columns[col].type;
        ex[i].scale = t->columns[col].scale;
    }
    for (size_t i = 0; i < p->n_aggregates; i++) {
        const Cohort__Aggregate *a = p->aggregates[i];
        struct expect *e = &ex[g + i];
        int col = -1;

        if (a->func != COHORT__AGG_FUNC__AGG_COUNT_STAR &&
            a->func != COHORT__AGG_FUNC__AGG_COUNT_PARTICIPANTS) {
            col = qr_catalog_column(t, a->column);
            if (col < 0)
                return QR_ERR_MALFORMED;
        }
        e->scale = 0;
        switch (a->func) {
        case COHORT__AGG_FUNC__AGG_COUNT_STAR:
        case COHORT__AGG_FUNC__AGG_COUNT:
        case COHORT__AGG_FUNC__AGG_COUNT_PARTICIPANTS:
            e->type = QR_INT;
            break;
        case COHORT__AGG_FUNC__AGG_AVG:
            e->type = QR_DOUBLE;
            break;
        case COHORT__AGG_FUNC__AGG_SUM:
        case COHORT__AGG_FUNC__AGG_MIN:
        case COHORT__AGG_FUNC__AGG_MAX:
            e->type = t->columns[col].type;
            e->scale = t->columns[col].scale;
            if (e->type == QR_TEXT)
                return QR_ERR_MALFORMED;
            if (a->func == COHORT__AGG_FUNC__AGG_SUM && e->type != QR_INT && e->type != QR_DECIMAL)
                return QR_ERR_MALFORMED;
            break;
        default:
            return QR_ERR_MALFORMED;
        }
    }
    return 0;
}

/* The table's account of its noise, checked against the plan's epsilon. */
static int convert_dp(struct qr_result *out, double **bounds, const Cohort__ResultTable *rt,
                      const Cohort__Plan *p, size_t ncols)
{
    double eps = p->privacy != NULL ? p->privacy->epsilon : 0.0;
    size_t n = 0;

    if (eps == 0) {
        return rt->epsilon == 0 && rt->n_error_bound == 0 && rt->error_confidence == 0 &&
                       (rt->mechanism == NULL || rt->mechanism[0] == '\0')
                   ? 0
                   : QR_ERR_MALFORMED;
    }
    if (rt->epsilon != eps || rt->n_error_bound != ncols || !(rt->error_confidence > 0) ||
        !(rt->error_confidence < 1) || rt->mechanism == NULL ||
        strlen(rt->mechanism) > QR_MECHANISM_MAX)
        return QR_ERR_MALFORMED;
    for (size_t c = 0; c < ncols; c++)
        if (!(rt->error_bound[c] >= 0) || !isfinite(rt->error_bound[c]))
            return QR_ERR_MALFORMED;
    *bounds = calloc(ncols + 1, sizeof **bounds);
    if (*bounds == NULL)
        return QR_ERR_NOMEM;
    memcpy(*bounds, rt->error_bound, ncols * sizeof **bounds);
    for (const char *m = rt->mechanism; *m != '\0'; m++)
        out->mechanism[n++] = (unsigned char)*m < 0x20 || *m == 0x7f ? '?' : *m;
    out->mechanism[n] = '\0';
    out->epsilon = eps;
    out->error_confidence = rt->error_confidence;
    return 0;
}

/* One cell: its type must be the column's (or NULL), its value in range. */
static int convert_value(struct qr_value *out, const Cohort__Value *v, const struct expect *e)
{
    memset(out, 0, sizeof *out);
    if (v->type == COHORT__VALUE_TYPE__VT_NULL) {
        out->type = QR_NULL;
        return 0;
    }
    if ((int)v->type != (int)e->type)
        return QR_ERR_MALFORMED;
    out->type = e->type;
    out->i = v->i;
    switch (e->type) {
    case QR_INT:
        return 0;
    case QR_DECIMAL:
        if (v->scale != e->scale)
            return QR_ERR_MALFORMED;
        out->scale = e->scale;
        return 0;
    case QR_DATE:
        return v->i < DAY_MIN || v->i > DAY_MAX ? QR_ERR_MALFORMED : 0;
    case QR_TIMESTAMP:
        return v->i < DAY_MIN * 86400 || v->i >= (DAY_MAX + 1) * 86400 ? QR_ERR_MALFORMED : 0;
    case QR_BOOL:
        return v->i != 0 && v->i != 1 ? QR_ERR_MALFORMED : 0;
    case QR_DOUBLE:
        out->i = 0;
        out->d = v->d;
        return isfinite(v->d) ? 0 : QR_ERR_MALFORMED;
    case QR_TEXT:
        out->i = 0;
        if (v->s.len > QR_TEXT_MAX || (v->s.len > 0 && memchr(v->s.data, 0, v->s.len)))
            return QR_ERR_MALFORMED;
        if (v->s.len > 0)
            memcpy(out->s, v->s.data, v->s.len);
        out->s[v->s.len] = '\0';
        return 0;
    default:
        return QR_ERR_MALFORMED;
    }
}

static int value_cmp(const struct qr_value *a, const struct qr_value *b)
{
    if (a->type == QR_NULL || b->type == QR_NULL)
        return (a->type != QR_NULL) - (b->type != QR_NULL);
    switch (a->type) {
    case QR_DOUBLE:
        return (a->d > b->d) - (a->d < b->d);
    case QR_TEXT:
        return strcmp(a->s, b->s);
    default:
        return (a->i > b->i) - (a->i < b->i);
    }
}

struct sort_ctx {
    const struct qr_value *raw; /* rows in table order, ncols wide */
    size_t ncols;
    const size_t *key_col; /* table column of each key */
    const int *key_desc;
    size_t n_keys;
};

static int row_cmp(const struct sort_ctx *c, size_t ra, size_t rb)
{
    for (size_t k = 0; k < c->n_keys; k++) {
        int r = value_cmp(&c->raw[ra * c->ncols + c->key_col[k]],
                          &c->raw[rb * c->ncols + c->key_col[k]]);
        if (r != 0)
            return c->key_desc[k] ? -r : r;
    }
    return 0;
}

/* Bottom-up merge sort of idx[0..n): stable. */
static void merge_sort(const struct sort_ctx *c, size_t *idx, size_t *tmp, size_t n)
{
    for (size_t width = 1; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n;
            size_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                tmp[k++] = row_cmp(c, idx[j], idx[i]) < 0 ? idx[j++] : idx[i++];
            while (i < mid)
                tmp[k++] = idx[i++];
            while (j < hi)
                tmp[k++] = idx[j++];
        }
        memcpy(idx, tmp, n * sizeof *idx);
    }
}

int qr_result_from_table(struct qr_result *out, const uint8_t *table, size_t table_len,
                         const uint8_t *plan, size_t plan_len)
{
    Cohort__Plan *p = NULL;
    Cohort__ResultTable *rt = NULL;
    struct expect ex[COLUMNS_MAX];
    struct qr_value *raw = NULL, *cells = NULL;
    double *bounds = NULL;
    char(*labels)[QR_NAME_MAX + 1] = NULL;
    size_t *idx = NULL, *tmp = NULL;
    size_t key_col[QR_ORDER_MAX + QR_GROUP_COLUMNS_MAX];
    int key_desc[QR_ORDER_MAX + QR_GROUP_COLUMNS_MAX];
    size_t ncols, nrows, nout, max_rows;
    int rc = QR_ERR_MALFORMED;

    if (out == NULL)
        return QR_ERR_ARG;
    memset(out, 0, sizeof *out);
    if (table == NULL || plan == NULL)
        return QR_ERR_ARG;
    if (table_len > QR_RESULT_TABLE_MAX || plan_len > QR_PLAN_MAX)
        return QR_ERR_TOO_LARGE;
    p = cohort__plan__unpack(NULL, plan_len, plan);
    rt = cohort__result_table__unpack(NULL, table_len, table);
    if (p == NULL || rt == NULL)
        goto cleanup;

    rc = expected_columns(ex, p);
    if (rc != 0)
        goto cleanup;
    rc = QR_ERR_MALFORMED;
    ncols = p->n_group_by + p->n_aggregates;
    nrows = rt->n_rows;
    nout = p->n_output;
    max_rows = p->n_group_by == 0 ? 1 : p->max_groups ? p->max_groups : QR_MAX_GROUPS_LIMIT;
    if (max_rows > QR_MAX_GROUPS_LIMIT)
        max_rows = QR_MAX_GROUPS_LIMIT;
    if (rt->n_columns != ncols || nrows > max_rows || nout == 0 || nout > QR_OUTPUT_MAX ||
        p->n_order_by > QR_ORDER_MAX)
        goto cleanup;
    for (size_t c = 0; c < ncols; c++) {
        const Cohort__ResultColumn *col = rt->columns[c];
        if ((int)col->type != (int)ex[c].type ||
            (ex[c].type == QR_DECIMAL && col->scale != ex[c].scale))
            goto cleanup;
    }
    for (size_t o = 0; o < nout; o++) {
        const Cohort__OutputColumn *oc = p->output[o];
        if (oc->index >= (oc->is_group ? p->n_group_by : p->n_aggregates) ||
            strlen(oc->label) > QR_NAME_MAX)
            goto cleanup;
    }
    rc = convert_dp(out, &bounds, rt, p, ncols);
    if (rc != 0)
        goto cleanup;
    rc = QR_ERR_MALFORMED;
    for (size_t k = 0; k < p->n_order_by; k++) {
        const Cohort__OrderKey *key = p->order_by[k];
        if (key->output >= nout)
            goto cleanup;
        const Cohort__OutputColumn *oc = p->output[key->output];
        key_col[k] = oc->is_group ? oc->index : p->n_group_by + oc->index;
        key_desc[k] = key->desc;
    }

    rc = QR_ERR_NOMEM;
    raw = calloc(nrows * ncols + 1, sizeof *raw);
    idx = calloc(nrows + 1, sizeof *idx);
    tmp = calloc(nrows + 1, sizeof *tmp);
    labels = calloc(nout, sizeof *labels);
    if (raw == NULL || idx == NULL || tmp == NULL || labels == NULL)
        goto cleanup;
    rc = QR_ERR_MALFORMED;
    for (size_t r = 0; r < nrows; r++) {
        const Cohort__Row *row = rt->rows[r];
        if (row->n_values != ncols)
            goto cleanup;
        for (size_t c = 0; c < ncols; c++) {
            if (convert_value(&raw[r * ncols + c], row->values[c], &ex[c]) != 0)
                goto cleanup;
        }
        idx[r] = r;
    }

    for (size_t g = 0; g < p->n_group_by; g++) {
        key_col[p->n_order_by + g] = g;
        key_desc[p->n_order_by + g] = 0;
    }
    struct sort_ctx sc = {raw, ncols, key_col, key_desc, p->n_order_by + p->n_group_by};
    merge_sort(&sc, idx, tmp, nrows);
    if (p->limit != 0 && p->limit < nrows)
        nrows = (size_t)p->limit;

    rc = QR_ERR_NOMEM;
    cells = calloc(nrows * nout + 1, sizeof *cells);
    if (cells == NULL)
        goto cleanup;
    if (bounds != NULL) {
        out->error_bound = calloc(nout, sizeof *out->error_bound);
        if (out->error_bound == NULL)
            goto cleanup;
        for (size_t o = 0; o < nout; o++) {
            const Cohort__OutputColumn *oc = p->output[o];
            out->error_bound[o] = bounds[oc->is_group ? oc->index : p->n_group_by + oc->index];
        }
    }
    for (size_t r = 0; r < nrows; r++) {
        for (size_t o = 0; o < nout; o++) {
            const Cohort__OutputColumn *oc = p->output[o];
            size_t c = oc->is_group ? oc->index : p->n_group_by + oc->index;
            cells[r * nout + o] = raw[idx[r] * ncols + c];
        }
    }
    for (size_t o = 0; o < nout; o++)
        snprintf(labels[o], sizeof labels[o], "%s", p->output[o]->label);

    out->n_columns = nout;
    out->labels = labels;
    out->n_rows = nrows;
    out->cells = cells;
    out->participants = rt->participants;
    out->groups_suppressed = rt->groups_suppressed;
    labels = NULL;
    cells = NULL;
    rc = 0;
cleanup:
    if (rc != 0) {
        free(out->error_bound);
        memset(out, 0, sizeof *out);
    }
    free(bounds);
    free(cells);
    free(labels);
    free(tmp);
    free(idx);
    free(raw);
    if (rt != NULL)
        cohort__result_table__free_unpacked(rt, NULL);
    if (p != NULL)
        cohort__plan__free_unpacked(p, NULL);
    return rc;
}

void qr_result_free(struct qr_result *r)
{
    if (r == NULL)
        return;
    free(r->labels);
    free(r->cells);
    free(r->error_bound);
    memset(r, 0, sizeof *r);
}

size_t qr_result_footnote(char *buf, size_t cap, const struct qr_result *r)
{
    size_t n = 0, shown = 0;
    char tmp[4 * QR_MECHANISM_MAX];
#define PUT(...) (n += (size_t)snprintf(tmp + n, n < sizeof tmp ? sizeof tmp - n : 0, __VA_ARGS__))

    tmp[0] = '\0';
    if (r != NULL && r->epsilon > 0) {
        PUT("differential privacy: epsilon %g; %s\n", r->epsilon, r->mechanism);
        for (size_t c = 0; c < r->n_columns && r->error_bound != NULL; c++) {
            if (r->error_bound[c] > 0) {
                PUT("%s %s +-%g", shown ? "," : "noise within", r->labels[c], r->error_bound[c]);
                shown++;
            }
        }
        if (shown > 0)
            PUT(" with probability %g each\n", r->error_confidence);
    }
#undef PUT
    if (n >= sizeof tmp)
        n = sizeof tmp - 1;
    if (buf != NULL && cap > 0)
        snprintf(buf, cap, "%s", tmp);
    return n;
}

static void format_decimal(char *buf, size_t cap, int64_t i, unsigned scale)
{
    char digits[48];
    char text[64];
    size_t n = 0, t = 0;
    uint64_t mag = i < 0 ? (uint64_t)0 - (uint64_t)i : (uint64_t)i;

    if (scale > QR_DECIMAL_SCALE_MAX) {
        snprintf(buf, cap, "%" PRId64 "e-%u", i, scale);
        return;
    }
    do {
        digits[n++] = (char)('0' + mag % 10);
        mag /= 10;
    } while (mag != 0);
    while (n <= scale)
        digits[n++] = '0';
    if (i < 0)
        text[t++] = '-';
    while (n > scale)
        text[t++] = digits[--n];
    if (scale > 0) {
        text[t++] = '.';
        while (n > 0)
            text[t++] = digits[--n];
    }
    text[t] = '\0';
    snprintf(buf, cap, "%s", text);
}

void qr_value_format(char *buf, size_t cap, const struct qr_value *v)
{
    int64_t y, days, secs;
    unsigned m, d;

    if (buf == NULL || cap == 0)
        return;
    if (v == NULL) {
        snprintf(buf, cap, "NULL");
        return;
    }
    switch (v->type) {
    case QR_NULL:
        snprintf(buf, cap, "NULL");
        return;
    case QR_INT:
        snprintf(buf, cap, "%" PRId64, v->i);
        return;
    case QR_DECIMAL:
        format_decimal(buf, cap, v->i, v->scale);
        return;
    case QR_DOUBLE:
        snprintf(buf, cap, "%.4f", v->d);
        return;
    case QR_DATE:
        qr_date_civil(v->i, &y, &m, &d);
        snprintf(buf, cap, "%04" PRId64 "-%02u-%02u", y, m, d);
        return;
    case QR_TIMESTAMP:
        days = v->i / 86400;
        secs = v->i % 86400;
        if (secs < 0) {
            secs += 86400;
            days--;
        }
        qr_date_civil(days, &y, &m, &d);
        snprintf(buf, cap, "%04" PRId64 "-%02u-%02u %02u:%02u:%02u", y, m, d,
                 (unsigned)(secs / 3600), (unsigned)(secs / 60 % 60), (unsigned)(secs % 60));
        return;
    case QR_BOOL:
        snprintf(buf, cap, "%s", v->i ? "true" : "false");
        return;
    case QR_TEXT:
        snprintf(buf, cap, "%.*s", (int)strnlen(v->s, QR_TEXT_MAX), v->s);
        return;
    }
    snprintf(buf, cap, "?");
}
