/*
 * ED_Hist's histogram: the study that runs first, and the bucket bounds
 * drawn from its result.
 *
 * ed_hist tags each tuple with the equi-depth bucket its group falls in, so
 * that the service sees buckets of nearly equal frequency and each
 * aggregating token the groups of a few buckets only. The buckets come from
 * the distribution of the groups, which a first, private study measures:
 * the same table, WHERE and GROUP BY, COUNT(*) per group, with s_agg (which
 * shows the service nothing) and the same privacy clause. Its result, like
 * any result, reaches only the researcher, who then cuts the groups,
 * ordered as tokens order canonical group keys (token/tk_crypto.c), into at
 * most `tag_buckets` runs of nearly equal total count, and signs the
 * ed_hist plan with the bounds: the first key of every bucket but the
 * first. Groups the histogram did not see (suppressed, or absent then) fall
 * into whichever bucket their key sorts into; results stay exact, only the
 * balance suffers.
 *
 * The bounds travel in the signed plan, which the service holds: it learns
 * the approximate quantiles of the group distribution (the leakage report
 * counts this). Both functions work on serialized Plans and allocate their
 * outputs (malloc); the caller frees them.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "proto/cohort.pb-c.h"
#include "querier/qr_coord_int.h"
#include "querier/querier.h"
#include "token/token.h"

#define HIST_PLAN_MAX (64u << 10)

static int repack(uint8_t **out, size_t *out_len, const Cohort__Plan *p)
{
    size_t n = cohort__plan__get_packed_size(p);

    if (n > HIST_PLAN_MAX)
        return QR_ERR_TOO_LARGE;
    *out = malloc(n ? n : 1);
    if (*out == NULL)
        return QR_ERR_NOMEM;
    cohort__plan__pack(p, *out);
    *out_len = n;
    return 0;
}

int qr_hist_plan(uint8_t **out, size_t *out_len, const uint8_t *plan, size_t plan_len)
{
    Cohort__Plan *p;
    Cohort__Aggregate count, *aggs[1] = {&count};
    Cohort__OutputColumn cols[QR_GROUP_COLUMNS_MAX + 1], *colp[QR_GROUP_COLUMNS_MAX + 1];
    uint8_t nonce[16];
    int rc;

    if (out == NULL || out_len == NULL || plan == NULL || plan_len > HIST_PLAN_MAX)
        return QR_ERR_ARG;
    *out = NULL;
    *out_len = 0;
    p = cohort__plan__unpack(NULL, plan_len, plan);
    if (p == NULL)
        return QR_ERR_MALFORMED;
    if (p->protocol == NULL || strcmp(p->protocol, "ed_hist") != 0 ||
        p->n_group_by > QR_GROUP_COLUMNS_MAX) {
        cohort__plan__free_unpacked(p, NULL);
        return QR_ERR_ARG;
    }
    cohort__aggregate__init(&count);
    count.func = COHORT__AGG_FUNC__AGG_COUNT_STAR;
    count.column = "";
    for (size_t i = 0; i <= p->n_group_by; i++) {
        cohort__output_column__init(&cols[i]);
        cols[i].is_group = i < p->n_group_by;
        cols[i].index = i < p->n_group_by ? (uint32_t)i : 0;
        cols[i].label = i < p->n_group_by ? p->group_by[i] : "COUNT(*)";
        colp[i] = &cols[i];
    }
    /* The unpacked plan's own arrays are freed with it: swap ours in, and
     * back before freeing. */
    {
        size_t n_aggs = p->n_aggregates, n_having = p->n_having, n_out = p->n_output,
               n_order = p->n_order_by;
        Cohort__Aggregate **a = p->aggregates;
        Cohort__Instr **h = p->having;
        Cohort__OutputColumn **o = p->output;
        Cohort__OrderKey **ok = p->order_by;
        char *proto = p->protocol;
        uint32_t buckets = p->tag_buckets;
        uint64_t limit = p->limit;
        ProtobufCBinaryData old_nonce = p->nonce;

        randombytes_buf(nonce, sizeof nonce);
        p->nonce.data = nonce;
        p->nonce.len = sizeof nonce;
        p->aggregates = aggs;
        p->n_aggregates = 1;
        p->having = NULL;
        p->n_having = 0;
        p->output = colp;
        p->n_output = p->n_group_by + 1;
        p->order_by = NULL;
        p->n_order_by = 0;
        p->limit = 0;
        p->protocol = "s_agg";
        p->tag_buckets = 0;
        rc = repack(out, out_len, p);
        p->nonce = old_nonce;
        p->aggregates = a;
        p->n_aggregates = n_aggs;
        p->having = h;
        p->n_having = n_having;
        p->output = o;
        p->n_output = n_out;
        p->order_by = ok;
        p->n_order_by = n_order;
        p->limit = limit;
        p->protocol = proto;
        p->tag_buckets = buckets;
    }
    cohort__plan__free_unpacked(p, NULL);
    return rc;
}

struct hist_group {
    uint8_t key[QR_GROUP_COLUMNS_MAX * TK_KEY_VALUE_MAX];
    size_t key_len;
    uint64_t count;
};

static int hist_cmp(const void *a, const void *b)
{
    const struct hist_group *x = a, *y = b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);

    if (c != 0)
        return c;
    return x->key_len < y->key_len ? -1 : x->key_len > y->key_len;
}

int qr_hist_apply(uint8_t **out, size_t *out_len, const uint8_t *plan, size_t plan_len,
                  const struct qr_result *hist)
{
    Cohort__Plan *p = NULL;
    struct hist_group *g = NULL;
    ProtobufCBinaryData *bounds = NULL;
    size_t n = 0, n_bounds = 0, cols;
    uint64_t total = 0, seen = 0;
    uint8_t nonce[16];
    int rc = 0;

    if (out == NULL || out_len == NULL || plan == NULL || hist == NULL || plan_len > HIST_PLAN_MAX)
        return QR_ERR_ARG;
    *out = NULL;
    *out_len = 0;
    p = cohort__plan__unpack(NULL, plan_len, plan);
    if (p == NULL)
        return QR_ERR_MALFORMED;
    cols = p->n_group_by;
    if (p->protocol == NULL || strcmp(p->protocol, "ed_hist") != 0 || p->tag_buckets == 0 ||
        hist->n_columns != cols + 1) {
        rc = QR_ERR_ARG;
        goto cleanup;
    }
    g = calloc(hist->n_rows ? hist->n_rows : 1, sizeof *g);
    bounds = calloc(p->tag_buckets, sizeof *bounds);
    if (g == NULL || bounds == NULL) {
        rc = QR_ERR_NOMEM;
        goto cleanup;
    }
    for (size_t r = 0; r < hist->n_rows; r++) {
        const struct qr_value *row = &hist->cells[r * hist->n_columns];
        struct hist_group *e = &g[n];

        e->key_len = 0;
        for (size_t c = 0; c < cols; c++) {
            const struct qr_value *v = &row[c];
            size_t len =
                tk_key_encode(e->key + e->key_len, (int)v->type, v->scale, v->i,
                              (const uint8_t *)v->s, v->type == QR_TEXT ? strlen(v->s) : 0);
            if (len == 0) {
                rc = QR_ERR_ARG;
                goto cleanup;
            }
            e->key_len += len;
        }
        e->count = row[cols].type == QR_INT && row[cols].i > 0 ? (uint64_t)row[cols].i : 0;
        total += e->count;
        n++;
    }
    qsort(g, n, sizeof *g, hist_cmp);
    /* A new bucket starts at the first group past each b/B of the total. */
    for (size_t i = 0; i < n; i++) {
        uint64_t next = total * (n_bounds + 1) / p->tag_buckets;

        if (i > 0 && seen >= next && n_bounds + 1 < p->tag_buckets && total > 0 &&
            hist_cmp(&g[i - 1], &g[i]) != 0) {
            bounds[n_bounds].data = g[i].key;
            bounds[n_bounds].len = g[i].key_len;
            n_bounds++;
        }
        seen += g[i].count;
    }
    randombytes_buf(nonce, sizeof nonce);
    {
        ProtobufCBinaryData old_nonce = p->nonce;
        uint32_t old_buckets = p->tag_buckets;

        p->nonce.data = nonce;
        p->nonce.len = sizeof nonce;
        p->tag_buckets = (uint32_t)n_bounds + 1;
        p->n_bucket_bounds = n_bounds;
        p->bucket_bounds = bounds;
        rc = repack(out, out_len, p);
        p->nonce = old_nonce;
        p->tag_buckets = old_buckets;
        p->n_bucket_bounds = 0;
        p->bucket_bounds = NULL;
    }

cleanup:
    free(bounds);
    free(g);
    cohort__plan__free_unpacked(p, NULL);
    return rc;
}
