/*
 * What the benchmarks share: a monotonic clock in seconds, the median of
 * a set of runs, a fatal error, a document's reader from memory and writer
 * into memory, and removing a run's directory tree (tk_fixture.h's
 * fx_rm_tree). Each benchmark prints its own tables.
 */
#ifndef COHORT_BENCH_H
#define COHORT_BENCH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "participant/participant.h"

#ifndef BENCH_NAME
#error "define BENCH_NAME (the program's name, for its errors) before including bench.h"
#endif

static inline double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of v[0..n) (sorts v). */
static inline double bench_median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static inline void bench_die(const char *what)
{
    fprintf(stderr, BENCH_NAME ": %s\n", what);
    exit(1);
}

/* A document's bytes for pt_doc_put (pt_read_fn), read from memory. */
struct bench_reader {
    const uint8_t *p;
    size_t len, pos;
};

static inline long bench_mem_read(void *ctx, uint8_t *buf, size_t n)
{
    struct bench_reader *r = ctx;
    size_t k = r->len - r->pos < n ? r->len - r->pos : n;
    memcpy(buf, r->p + r->pos, k);
    r->pos += k;
    return (long)k;
}

/* Where pt_doc_get writes a plaintext (pt_write_fn): cap bytes the caller
 * allocated, and PT_ERR_TOO_LARGE beyond them. */
struct bench_sink {
    uint8_t *p;
    size_t len, cap;
};

static inline int bench_mem_write(void *ctx, const uint8_t *buf, size_t n)
{
    struct bench_sink *s = ctx;
    if (s->len + n > s->cap)
        return PT_ERR_TOO_LARGE;
    memcpy(s->p + s->len, buf, n);
    s->len += n;
    return 0;
}

#endif
