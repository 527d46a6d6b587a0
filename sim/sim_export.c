/*
 * sim_export.c: the simulator's synthetic population as files, for a
 * deployment on real processes (scripts/deploy-local.sh): one CSV of the
 * `health` table per participant, in the form cohort-participant import
 * reads, and the ground truth of a query over them, printed as
 * cohort-querier run prints a result, so the two can be compared.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim/sim.h"

static void csv_cell(FILE *f, const struct sim_cell *c)
{
    struct qr_value v;
    char buf[96];

    if (c->type == QR_NULL)
        return;
    memset(&v, 0, sizeof v);
    v.type = c->type;
    v.i = c->i;
    v.scale = c->scale;
    if (c->type == QR_TEXT) {
        size_t n = c->len < QR_TEXT_MAX ? c->len : QR_TEXT_MAX;
        memcpy(v.s, c->s, n);
        v.s[n] = '\0';
    }
    qr_value_format(buf, sizeof buf, &v);
    fputs(buf, f);
}

int sim_export_csv(const char *dir, uint64_t seed, uint64_t n, char *err, size_t err_len)
{
    const struct qr_table *t = qr_catalog_find("health");
    struct sim_row rows[SIM_ROWS_MAX];
    char path[4096];

    if (t == NULL) {
        snprintf(err, err_len, "the catalog has no health table");
        return -1;
    }
    for (uint64_t i = 0; i < n; i++) {
        size_t k = sim_data_rows(rows, seed, i);
        FILE *f;

        snprintf(path, sizeof path, "%s/p%llu.csv", dir, (unsigned long long)(i + 1));
        f = fopen(path, "w");
        if (f == NULL) {
            snprintf(err, err_len, "%s: %s", path, strerror(errno));
            return -1;
        }
        for (size_t c = 0; c < t->n_columns; c++)
            fprintf(f, "%s%s", c ? "," : "", t->columns[c].name);
        fputc('\n', f);
        for (size_t r = 0; r < k; r++) {
            for (size_t c = 0; c < t->n_columns; c++) {
                struct sim_cell cell;

                sim_row_cell(&cell, &rows[r], t->columns[c].name);
                if (c)
                    fputc(',', f);
                csv_cell(f, &cell);
            }
            fputc('\n', f);
        }
        if (fclose(f) != 0) {
            snprintf(err, err_len, "%s: %s", path, strerror(errno));
            return -1;
        }
    }
    return 0;
}

int sim_truth_print(FILE *f, const char *sql, uint64_t seed, uint64_t n, int csv, char *err,
                    size_t err_len)
{
    struct qr_compile_opts opts;
    struct qr_sql_error sqlerr;
    struct qr_result truth;
    uint8_t *plan = NULL, *all = NULL;
    size_t plan_len = 0;
    int rc;

    memset(&opts, 0, sizeof opts);
    memset(&truth, 0, sizeof truth);
    opts.now = (int64_t)time(NULL);
    if (qr_sql_compile(&plan, &plan_len, sql, &opts, &sqlerr) != 0) {
        snprintf(err, err_len, "SQL error at line %u, column %u: %s", sqlerr.line, sqlerr.col,
                 sqlerr.msg);
        return 2;
    }
    all = malloc(n ? n : 1);
    if (all == NULL) {
        free(plan);
        snprintf(err, err_len, "out of memory");
        return 3;
    }
    memset(all, 1, n);
    rc = sim_truth(&truth, plan, plan_len, seed, all, n);
    free(all);
    free(plan);
    if (rc < 0) {
        snprintf(err, err_len, "cannot compute the ground truth");
        return 3;
    }
    if (rc == 1) {
        snprintf(err, err_len, "fewer participants than the plan requires: no result");
        qr_result_free(&truth);
        return 3;
    }
    if (csv)
        qr_print_csv(f, &truth);
    else
        qr_print_table(f, &truth);
    qr_result_free(&truth);
    return 0;
}
