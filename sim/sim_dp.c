/*
 * The simulator's verdict under differential privacy.
 *
 * With noise, the researcher's result cannot equal the ground truth; what
 * can be checked is that the noise is what the result says it is. The
 * finalizing token states, for every COUNT and SUM column, a bound t that
 * the noise stays within with probability c (0.95). So: open the sealed
 * table as the researcher would, lay it out in plan order (every group
 * column, then every aggregate: sim_full_plan), compute the truth under
 * the same contribution bounds for every group (sim_truth_full), match the
 * released groups to it, and count the values with |noisy - truth| > t.
 *
 * A released group that the truth does not have is a hard failure (noise
 * never invents groups). Groups the truth has but the result lacks are
 * fine: the threshold and HAVING see noisy values. Each value's noise is
 * an independent draw (the threshold draws its own), so the number of
 * exceedances over n values is at most Binomial(n, 1 - c); the verdict
 * passes when it is no more than that distribution allows at the 0.999
 * level (sim_dp_allowed). With HAVING on a checked column the released
 * values are selected on their own noise, and the rate may be higher than
 * stated: such studies are better checked without HAVING.
 *
 * This file shares no code with the token's mechanism: it reads only what
 * the result states.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "proto/cohort.pb-c.h"
#include "querier/qr_result.h"
#include "sim/sim.h"

/* An order on group cells: NULL first, then by type, then by value. */
static int cell_cmp(const struct qr_value *a, const struct qr_value *b)
{
    if (a->type != b->type)
        return a->type < b->type ? -1 : 1;
    switch (a->type) {
    case QR_NULL:
        return 0;
    case QR_TEXT:
        return strcmp(a->s, b->s);
    case QR_DOUBLE:
        return (a->d > b->d) - (a->d < b->d);
    default:
        return (a->i > b->i) - (a->i < b->i);
    }
}

struct sort_ctx {
    const struct qr_result *r;
    size_t n_group;
};

static int row_cmp(const struct qr_result *ra, size_t a, const struct qr_result *rb, size_t b,
                   size_t n_group)
{
    size_t c;
    for (c = 0; c < n_group; c++) {
        int k = cell_cmp(&ra->cells[a * ra->n_columns + c], &rb->cells[b * rb->n_columns + c]);
        if (k != 0)
            return k;
    }
    return 0;
}

/* qsort has no context argument: the rows being sorted, set around each call. */
static _Thread_local const struct sort_ctx *sorting;

static int index_cmp(const void *x, const void *y)
{
    return row_cmp(sorting->r, *(const size_t *)x, sorting->r, *(const size_t *)y,
                   sorting->n_group);
}

static size_t *sorted_rows(const struct qr_result *r, size_t n_group)
{
    struct sort_ctx ctx = {r, n_group};
    size_t *idx = malloc((r->n_rows + 1) * sizeof *idx), i;
    if (idx == NULL)
        return NULL;
    for (i = 0; i < r->n_rows; i++)
        idx[i] = i;
    sorting = &ctx;
    qsort(idx, r->n_rows, sizeof *idx, index_cmp);
    sorting = NULL;
    return idx;
}

static double pow10_of(unsigned k)
{
    double d = 1;
    while (k-- > 0)
        d *= 10;
    return d;
}

/* Compare the released values of one matched group with the truth's. */
static void check_row(struct sim_dp_check *out, const Cohort__Plan *plan,
                      const struct qr_result *got, size_t gr, const struct qr_result *want,
                      size_t wr)
{
    size_t a, g = plan->n_group_by;
    for (a = 0; a < plan->n_aggregates && a < QR_AGGREGATES_MAX; a++) {
        const struct qr_value *x = &got->cells[gr * got->n_columns + g + a];
        const struct qr_value *y = &want->cells[wr * want->n_columns + g + a];
        struct sim_dp_column *col = &out->agg[a];
        double scale, err;
        int64_t bound, diff;
        switch (plan->aggregates[a]->func) {
        case COHORT__AGG_FUNC__AGG_COUNT_STAR:
        case COHORT__AGG_FUNC__AGG_COUNT:
        case COHORT__AGG_FUNC__AGG_COUNT_PARTICIPANTS:
        case COHORT__AGG_FUNC__AGG_SUM:
            break;
        default:
            continue;
        }
        col->checked = 1;
        col->bound = got->error_bound[g + a];
        if ((x->type != QR_INT && x->type != QR_DECIMAL) || x->type != y->type) {
            out->strays++; /* a shape the check cannot compare counts as a failure */
            continue;
        }
        /* The bound is stated in natural units; values are scaled integers. */
        scale = pow10_of(x->type == QR_DECIMAL ? x->scale : 0);
        bound = llround(col->bound * scale);
        if (__builtin_sub_overflow(x->i, y->i, &diff))
            diff = INT64_MAX;
        err = (double)diff / scale;
        col->values++;
        col->sum_err += err;
        col->sum_sq_err += err * err;
        out->values++;
        if (diff > bound || diff < -bound) {
            col->exceed++;
            out->exceed++;
        }
    }
}

int sim_dp_check(struct sim_dp_check *out, const uint8_t *sealed, size_t sealed_len,
                 const uint8_t *signed_plan, size_t signed_plan_len,
                 const struct qr_identity *researcher, const uint8_t authority[32], int64_t now,
                 const uint8_t *plan_bytes, size_t plan_len, uint64_t seed, const uint8_t *included,
                 uint64_t n)
{
    const uint8_t(*auth)[32] = (const uint8_t(*)[32])authority;
    Cohort__Plan *plan = NULL;
    struct qr_result got, want;
    uint8_t *table = NULL, *full = NULL;
    size_t table_len = 0, full_len = 0, *gi = NULL, *wi = NULL, i, j;
    int rc;

    memset(&got, 0, sizeof got);
    memset(&want, 0, sizeof want);
    rc = qr_result_open_table(&table, &table_len, sealed, sealed_len, signed_plan, signed_plan_len,
                              researcher, auth, 1, now);
    if (rc != 0)
        goto done;
    rc = -1;
    plan = cohort__plan__unpack(NULL, plan_len, plan_bytes);
    if (plan == NULL || sim_full_plan(&full, &full_len, plan_bytes, plan_len) != 0)
        goto done;
    if ((rc = qr_result_from_table(&got, table, table_len, full, full_len)) != 0)
        goto done;
    rc = -1;
    if (sim_truth_full(&want, plan_bytes, plan_len, seed, included, n) != 0 ||
        got.error_bound == NULL)
        goto done;
    gi = sorted_rows(&got, plan->n_group_by);
    wi = sorted_rows(&want, plan->n_group_by);
    if (gi == NULL || wi == NULL)
        goto done;
    out->n_aggs = plan->n_aggregates;
    out->confidence = got.error_confidence;
    out->released += got.n_rows;
    out->true_groups += want.n_rows;
    for (i = 0, j = 0; i < got.n_rows; i++) {
        int c = -1;
        while (j < want.n_rows && (c = row_cmp(&got, gi[i], &want, wi[j], plan->n_group_by)) > 0)
            j++;
        if (j == want.n_rows || c != 0) {
            out->strays++;
            continue;
        }
        check_row(out, plan, &got, gi[i], &want, wi[j]);
    }
    rc = 0;
done:
    free(gi);
    free(wi);
    qr_result_free(&got);
    qr_result_free(&want);
    if (table != NULL)
        sodium_memzero(table, table_len);
    free(table);
    free(full);
    if (plan != NULL)
        cohort__plan__free_unpacked(plan, NULL);
    return rc;
}

uint64_t sim_dp_allowed(uint64_t n, double miss, double level)
{
    double cdf = 0, lp = log(miss), lq = log1p(-miss), ln = lgamma((double)n + 1);
    uint64_t k;
    if (n == 0 || !(miss > 0))
        return 0;
    if (!(miss < 1))
        return n;
    for (k = 0; k < n; k++) {
        double kk = (double)k;
        cdf +=
            exp(ln - lgamma(kk + 1) - lgamma((double)(n - k) + 1) + kk * lp + (double)(n - k) * lq);
        if (1 - cdf <= 1 - level)
            return k;
    }
    return n;
}
