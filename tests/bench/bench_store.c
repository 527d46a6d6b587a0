/*
 * bench_store: the token's persistent store against its floor, measured
 * side by side in one run.
 *
 * 100,000 health-like rows go into a software token in a temporary
 * directory (participant/pt_soft.c: real files, fsync at each commit),
 * through its link, as one batch of LoadTable requests of 50 rows (what a
 * 64 KiB arena decodes comfortably), committed by the last one. Then the
 * whole table is read back through the link:
 * - in one ReadRows whose response holds every row (one pass over the
 *   log: the full-scan rate), and
 * - in pages of 64 KiB responses, as an owner's client would (each page
 *   re-reads and re-verifies the log from its start: the token keeps no
 *   index in RAM).
 * The floor of each is the same work without the token: writing (reading)
 * the same bytes to (from) a file in the same record-sized pieces, with one
 * fsync for the writes, plus one XChaCha20-Poly1305 seal (open) of each
 * piece. Rates are medians of RUNS runs; the space overhead is the flash's
 * bytes per row against a packed Row's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/tk_fixture.h"

#define BENCH_NAME "bench_store"
#include "tests/bench/bench.h"

#define ROWS 100000u
#define PER_REQUEST 50u
#define RUNS 5
#define SCAN_RESP (32u << 20)

/* Row i of the benchmark's health table. */
static void health_row(struct fx_row *r, uint32_t i)
{
    static const char *regions[] = {"R001", "R002", "R017", "R040", "R101", "R128"};
    r->participant = 1000 + i / 40;
    r->age = 18 + (int64_t)(i * 7 % 70);
    r->sex = i % 2 ? "F" : "M";
    r->region = regions[i % 6];
    r->date = FX_JAN1 + (int64_t)(i % 365);
    r->steps = (int64_t)(i * 7919 % 20000);
    r->heart_rate = 50 + (int64_t)(i % 60);
    r->weight = 500 + (int64_t)(i * 31 % 600);
    r->nulls = i % 11 == 0 ? FX_NULL(FX_C_HR) : 0;
}

static size_t pack_request(uint8_t **out, uint32_t first, uint32_t n, bool more)
{
    struct fx_row rows[PER_REQUEST];
    struct fx_rows_pb pb;
    struct fx_schema h;
    Cohort__TokenRequest req;
    Cohort__LoadTable lt;
    size_t len;
    uint32_t i;
    for (i = 0; i < n; i++)
        health_row(&rows[i], first + i);
    fx_health_schema(&h);
    fx_rows_pb(&pb, rows, n);
    cohort__load_table__init(&lt);
    lt.schema = &h.s;
    lt.rows = pb.ptrs;
    lt.n_rows = n;
    lt.more = more;
    cohort__token_request__init(&req);
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE;
    req.load_table = &lt;
    len = cohort__token_request__get_packed_size(&req);
    *out = malloc(len);
    if (*out == NULL)
        bench_die("out of memory");
    cohort__token_request__pack(&req, *out);
    fx_rows_pb_free(&pb);
    return len;
}

static int status_of(const uint8_t *resp, size_t len)
{
    Cohort__TokenResponse *r = cohort__token_response__unpack(NULL, len, resp);
    int rc;
    if (r == NULL)
        bench_die("a response does not decode");
    rc = r->status;
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

static uint8_t *read_rows_request(size_t *len, uint64_t after)
{
    Cohort__TokenRequest req;
    Cohort__ReadRows rr;
    uint8_t *buf;
    cohort__read_rows__init(&rr);
    rr.table = "health";
    rr.after_id = after;
    cohort__token_request__init(&req);
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_READ_ROWS;
    req.read_rows = &rr;
    *len = cohort__token_request__get_packed_size(&req);
    buf = malloc(*len);
    if (buf == NULL)
        bench_die("out of memory");
    cohort__token_request__pack(&req, buf);
    return buf;
}

struct sizes {
    uint64_t flash;    /* bytes on flash */
    uint64_t records;  /* records in the log */
    double row_packed; /* a packed Row's bytes, on average */
};

struct run {
    double insert, scan_one, scan_pages; /* seconds */
    size_t pages;
};

static void one_run(const char *dir, uint8_t **reqs, size_t *lens, size_t n_reqs, struct run *out,
                    struct sizes *sz)
{
    char err[256], path[512];
    struct pt_soft *s;
    struct pt_link link;
    const uint8_t *resp;
    size_t resp_len, i, len;
    uint8_t *big, *rr;
    uint64_t after = 0;
    struct stat st;
    double t;

    if (pt_soft_create(&s, dir, TK_ARENA_DEFAULT, err, sizeof err) != PT_OK)
        bench_die(err);
    link = pt_soft_link(s);
    {
        Cohort__TokenRequest req;
        Cohort__ProvisionBegin pb;
        uint8_t buf[64];
        cohort__token_request__init(&req);
        cohort__provision_begin__init(&pb);
        pb.subject = "bench";
        req.body_case = COHORT__TOKEN_REQUEST__BODY_PROVISION_BEGIN;
        req.provision_begin = &pb;
        len = cohort__token_request__pack(&req, buf);
        if (link.transact(link.ctx, buf, len, &resp, &resp_len) != PT_OK ||
            status_of(resp, resp_len) != TK_OK)
            bench_die("ProvisionBegin failed");
    }

    t = bench_now_s();
    for (i = 0; i < n_reqs; i++)
        if (link.transact(link.ctx, reqs[i], lens[i], &resp, &resp_len) != PT_OK ||
            status_of(resp, resp_len) != TK_OK)
            bench_die("a LoadTable failed");
    out->insert = bench_now_s() - t;

    /* One pass: a response that holds the whole table. */
    big = malloc(SCAN_RESP);
    rr = read_rows_request(&len, 0);
    if (big == NULL)
        bench_die("out of memory");
    {
        uint8_t *arena = malloc(TK_ARENA_DEFAULT);
        size_t peak;
        t = bench_now_s();
        if (tk_dispatch(pt_soft_token(s), arena, TK_ARENA_DEFAULT, rr, len, big, SCAN_RESP,
                        &resp_len, &peak) != TK_OK)
            bench_die("the full ReadRows failed");
        out->scan_one = bench_now_s() - t;
        {
            Cohort__TokenResponse *r = cohort__token_response__unpack(NULL, resp_len, big);
            if (r == NULL || r->rows == NULL || r->rows->n_rows != ROWS || r->rows->more)
                bench_die("the full ReadRows did not return every row");
            cohort__token_response__free_unpacked(r, NULL);
        }
        free(arena);
    }
    free(rr);
    free(big);

    /* Pages, as a client reads them through the link. */
    out->pages = 0;
    t = bench_now_s();
    for (;;) {
        Cohort__TokenResponse *r;
        bool more;
        rr = read_rows_request(&len, after);
        if (link.transact(link.ctx, rr, len, &resp, &resp_len) != PT_OK)
            bench_die("a ReadRows failed");
        free(rr);
        r = cohort__token_response__unpack(NULL, resp_len, resp);
        if (r == NULL || r->status != TK_OK || r->rows == NULL)
            bench_die("a page failed");
        if (r->rows->n_ids > 0)
            after = r->rows->ids[r->rows->n_ids - 1];
        more = r->rows->more;
        cohort__token_response__free_unpacked(r, NULL);
        out->pages++;
        if (!more)
            break;
    }
    out->scan_pages = bench_now_s() - t;
    if (after != ROWS)
        bench_die("the pages did not end at the last row");

    sz->records = pt_soft_token(s)->log.records;
    pt_soft_close(s);
    snprintf(path, sizeof path, "%s/flash.0", dir);
    if (stat(path, &st) != 0)
        bench_die("no flash file");
    sz->flash = (uint64_t)st.st_size;
}

/* The floor: the same bytes, in pieces of the records' average size. */
static void floor_run(const char *path, uint64_t bytes, uint64_t pieces, double *write_s,
                      double *read_s)
{
    size_t piece = (size_t)(bytes / pieces), plain = piece - 28 - 16, i;
    uint8_t *buf = calloc(1, piece), key[32], ad[77] = {0};
    int fd;
    double t;

    if (buf == NULL)
        bench_die("out of memory");
    randombytes_buf(key, sizeof key);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        bench_die("cannot create the floor's file");
    t = bench_now_s();
    for (i = 0; i < pieces; i++) {
        randombytes_buf(buf + 4, 24);
        crypto_aead_xchacha20poly1305_ietf_encrypt(buf + 28, NULL, buf + 28, plain, ad, sizeof ad,
                                                   NULL, buf + 4, key);
        if (write(fd, buf, piece) != (ssize_t)piece)
            bench_die("write failed");
    }
    if (fsync(fd) != 0)
        bench_die("fsync failed");
    *write_s = bench_now_s() - t;
    close(fd);

    fd = open(path, O_RDONLY);
    t = bench_now_s();
    for (i = 0; i < pieces; i++) {
        if (read(fd, buf, piece) != (ssize_t)piece)
            bench_die("read failed");
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(buf + 28, NULL, NULL, buf + 28, plain + 16,
                                                       ad, sizeof ad, buf + 4, key) != 0)
            bench_die("a floor piece does not open");
    }
    *read_s = bench_now_s() - t;
    close(fd);
    unlink(path);
    free(buf);
}

int main(void)
{
    char base[] = "/tmp/cohort_bench_store_XXXXXX", dir[128], path[160];
    uint8_t **reqs;
    size_t *lens, n_reqs = ROWS / PER_REQUEST, i;
    double ins[RUNS], one[RUNS], pages[RUNS], fw[RUNS], fr[RUNS], row_bytes = 0;
    struct sizes sz;
    struct run r;
    int k;

    if (tk_library_init() != TK_OK || mkdtemp(base) == NULL)
        bench_die("setup failed");
    reqs = calloc(n_reqs, sizeof *reqs);
    lens = calloc(n_reqs, sizeof *lens);
    if (reqs == NULL || lens == NULL)
        bench_die("out of memory");
    for (i = 0; i < n_reqs; i++)
        lens[i] = pack_request(&reqs[i], (uint32_t)(i * PER_REQUEST), PER_REQUEST, i + 1 < n_reqs);
    {
        /* The packed Row's size, on average. */
        struct fx_row row;
        struct fx_rows_pb pb;
        for (i = 0; i < ROWS; i += 97) {
            health_row(&row, (uint32_t)i);
            fx_rows_pb(&pb, &row, 1);
            row_bytes += (double)cohort__row__get_packed_size(pb.ptrs[0]);
            fx_rows_pb_free(&pb);
        }
        row_bytes /= (double)((ROWS + 96) / 97);
    }

    for (k = 0; k < RUNS; k++) {
        snprintf(dir, sizeof dir, "%s/token-%d", base, k);
        one_run(dir, reqs, lens, n_reqs, &r, &sz);
        ins[k] = r.insert;
        one[k] = r.scan_one;
        pages[k] = r.scan_pages;
        snprintf(path, sizeof path, "%s/floor", base);
        floor_run(path, sz.flash, sz.records, &fw[k], &fr[k]);
        snprintf(path, sizeof path, "rm -rf '%s'", dir);
        if (system(path) != 0)
            bench_die("cannot clean up");
    }
    {
        double mi = bench_median(ins, RUNS), mo = bench_median(one, RUNS),
               mp = bench_median(pages, RUNS);
        double mw = bench_median(fw, RUNS), mr = bench_median(fr, RUNS);
        printf("Store, %u health rows into a software token (files in /tmp), %zu LoadTable "
               "requests of %u rows in one batch; %d runs, medians\n\n",
               ROWS, n_reqs, PER_REQUEST, RUNS);
        printf("| operation | time | rows/s | ratio to its floor |\n|---|---:|---:|---:|\n");
        printf("| floor: write %.1f MB in %llu pieces + fsync + %llu AEAD seals | %.3f s | %.0f | "
               "|\n",
               (double)sz.flash / 1e6, (unsigned long long)sz.records,
               (unsigned long long)sz.records, mw, ROWS / mw);
        printf("| insert (LoadTable through the link, one commit) | %.3f s | %.0f | %.2fx |\n", mi,
               ROWS / mi, mi / mw);
        printf("| floor: read %.1f MB in %llu pieces + %llu AEAD opens | %.3f s | %.0f | |\n",
               (double)sz.flash / 1e6, (unsigned long long)sz.records,
               (unsigned long long)sz.records, mr, ROWS / mr);
        printf("| full scan (one ReadRows, every row) | %.3f s | %.0f | %.2fx |\n", mo, ROWS / mo,
               mo / mr);
        printf("| paged scan (%zu ReadRows of 64 KiB) | %.3f s | %.0f | %.2fx |\n", r.pages, mp,
               ROWS / mp, mp / mr);
        printf("\nSpace: %.1f flash bytes per row for a %.1f-byte packed Row (%.2fx; %llu records "
               "of %.0f bytes)\n",
               (double)sz.flash / ROWS, row_bytes, (double)sz.flash / ROWS / row_bytes,
               (unsigned long long)sz.records, (double)sz.flash / (double)sz.records);
    }
    for (i = 0; i < n_reqs; i++)
        free(reqs[i]);
    free(reqs);
    free(lens);
    rmdir(base);
    return 0;
}
