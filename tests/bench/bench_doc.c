/*
 * bench_doc: documents through the token against libsodium's secretstream
 * on the same data, measured side by side in one run.
 *
 * Each document goes through the agent's functions (participant/pt_doc.h:
 * pt_doc_put and pt_doc_get), which stream it through the token core in
 * requests of up to 64 KiB, and keep its ciphertext as a file of the
 * document store. Two set-ups:
 * - "core": the token over memory flash, in the same process, with the
 *   store in a tmpfs when there is one: what the token itself costs
 *   (framing, secretstream, hashing, its log record and audit line);
 * - "disk": a software token in a directory (participant/pt_soft.c: its
 *   flash, image and counter files, fsync at every commit), with the store
 *   beside it: what an owner's agent costs on this machine.
 * The floor is crypto_secretstream_xchacha20poly1305 pushing (pulling) the
 * same bytes in the same 4,096-byte chunks, in memory.
 *
 * Sizes: 16 MiB documents (RUNS of each) and 4 KiB documents (SMALL per
 * run, each written once and read once). Throughputs are medians of RUNS
 * runs, in MB/s (10^6 bytes); the ratio is the floor's throughput over the
 * path's (how many times slower the path is).
 *
 *   bench_doc [RUNS]   (default 5)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "participant/pt_doc.h"
#include "participant/pt_owner.h"
#include "tests/tk_fixture.h"

#define BENCH_NAME "bench_doc"
#include "tests/bench/bench.h"

#define BIG (16u << 20)
#define SMALL_LEN 4096u
#define SMALL 200u
#define CHUNK 4096u
#define RUNS_MAX 21

/* ------------------------------------------------------------ the floor */

/* Seconds to push (pull) len bytes through secretstream in CHUNK pieces. */
static void floor_run(const uint8_t *plain, size_t len, double *push_s, double *pull_s)
{
    crypto_secretstream_xchacha20poly1305_state st;
    uint8_t key[crypto_secretstream_xchacha20poly1305_KEYBYTES];
    uint8_t header[crypto_secretstream_xchacha20poly1305_HEADERBYTES];
    size_t n_chunks = len / CHUNK + 1, i, at;
    size_t box = CHUNK + crypto_secretstream_xchacha20poly1305_ABYTES;
    uint8_t *c = malloc(n_chunks * box), *back = malloc(len + CHUNK);
    unsigned char tag;
    double t0;
    if (c == NULL || back == NULL)
        bench_die("out of memory");
    crypto_secretstream_xchacha20poly1305_keygen(key);
    t0 = bench_now_s();
    crypto_secretstream_xchacha20poly1305_init_push(&st, header, key);
    for (i = 0, at = 0; i < n_chunks; i++, at += CHUNK) {
        size_t n = len - at < CHUNK ? len - at : CHUNK;
        crypto_secretstream_xchacha20poly1305_push(
            &st, c + i * box, NULL, plain + at, n, NULL, 0,
            i + 1 == n_chunks ? crypto_secretstream_xchacha20poly1305_TAG_FINAL : 0);
    }
    *push_s = bench_now_s() - t0;
    t0 = bench_now_s();
    if (crypto_secretstream_xchacha20poly1305_init_pull(&st, header, key) != 0)
        bench_die("secretstream header");
    for (i = 0, at = 0; i < n_chunks; i++, at += CHUNK) {
        size_t n = len - at < CHUNK ? len - at : CHUNK;
        if (crypto_secretstream_xchacha20poly1305_pull(
                &st, back + at, NULL, &tag, c + i * box,
                n + crypto_secretstream_xchacha20poly1305_ABYTES, NULL, 0) != 0)
            bench_die("secretstream pull");
    }
    *pull_s = bench_now_s() - t0;
    if (memcmp(back, plain, len) != 0)
        bench_die("secretstream round trip");
    free(c);
    free(back);
}

/* ------------------------------------------------------------ the paths */

struct path {
    const char *name;
    struct pt_link link;
    struct pt_docstore *ds;
    /* core */
    struct fx_token t;
    struct pt_inproc inproc;
    /* disk */
    struct pt_soft *soft;
};

static void meta_of(struct pt_doc_meta *m)
{
    memset(m, 0, sizeof *m);
    snprintf(m->type, sizeof m->type, "bench.document");
    snprintf(m->subject, sizeof m->subject, "a benchmark document");
}

static void put_one(struct path *p, const uint8_t *data, size_t len, struct pt_doc_ref *ref)
{
    struct pt_doc_meta m;
    struct pt_status st;
    struct bench_reader r = {data, len, 0};
    meta_of(&m);
    if (pt_doc_put(&p->link, p->ds, FX_NOW, NULL, NULL, 0, &m, bench_mem_read, &r, ref, &st) != 0)
        bench_die("a put failed");
}

static void get_one(struct path *p, const struct pt_doc_ref *ref, struct bench_sink *s)
{
    struct pt_status st;
    s->len = 0;
    if (pt_doc_get(&p->link, p->ds, FX_NOW, NULL, ref->id, 0, bench_mem_write, s, NULL, NULL,
                   &st) != 0)
        bench_die("a get failed");
}

static void path_open(struct path *p, const char *name, const char *root, bool disk)
{
    char dir[512], err[256];
    Cohort__TokenResponse *r;
    memset(p, 0, sizeof *p);
    p->name = name;
    snprintf(dir, sizeof dir, "%s/%s-docs", root, name);
    if (pt_docstore_open(&p->ds, dir) != 0)
        bench_die("the store does not open");
    if (disk) {
        struct pt_owner o;
        uint8_t *csr, pk[32];
        size_t csr_len;
        snprintf(dir, sizeof dir, "%s/%s-token", root, name);
        if (pt_soft_create(&p->soft, dir, TK_ARENA_DEFAULT, err, sizeof err) != 0)
            bench_die(err);
        p->link = pt_soft_link(p->soft);
        pt_owner_init(&o, &p->link, FX_NOW);
        if (pt_owner_provision_begin(&o, "bench", &csr, &csr_len, pk) != 0)
            bench_die("the software token makes no keys");
        free(csr);
    } else {
        fx_token_init(&p->t, TK_ARENA_DEFAULT);
        if (fx_provision_begin(&p->t, "bench", &r) != TK_OK)
            bench_die("the token makes no keys");
        cohort__token_response__free_unpacked(r, NULL);
        pt_inproc_init(&p->inproc, &p->t.tk, p->t.arena, p->t.arena_len);
        p->link = pt_inproc_link(&p->inproc);
    }
}

static void path_close(struct path *p)
{
    pt_docstore_close(p->ds);
    if (p->soft != NULL) {
        pt_soft_close(p->soft);
    } else {
        pt_inproc_free(&p->inproc);
        fx_token_free(&p->t);
    }
}

/* ------------------------------------------------------------- the run */

struct result {
    double put[RUNS_MAX], get[RUNS_MAX];
};

static double mbps(double bytes, double s)
{
    return bytes / s / 1e6;
}

int main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 5, i;
    const char *shm = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : NULL;
    char disk_root[256], core_root[256];
    uint8_t *big = malloc(BIG), *small = malloc(SMALL * SMALL_LEN);
    struct bench_sink out = {malloc(BIG), 0, BIG};
    struct result fl_big = {{0}, {0}}, fl_small = {{0}, {0}};
    struct result core_big = {{0}, {0}}, core_small = {{0}, {0}};
    struct result disk_big = {{0}, {0}}, disk_small = {{0}, {0}};
    struct path core, disk;
    struct pt_doc_ref *refs = malloc(SMALL * sizeof *refs);

    if (runs < 1 || runs > RUNS_MAX)
        bench_die("RUNS must be 1 to 21");
    if (big == NULL || small == NULL || out.p == NULL || refs == NULL || tk_library_init() != TK_OK)
        bench_die("out of memory");
    randombytes_buf(big, BIG);
    randombytes_buf(small, SMALL * SMALL_LEN);
    snprintf(disk_root, sizeof disk_root, "%s/bench_doc.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    snprintf(core_root, sizeof core_root, "%s/bench_doc.XXXXXX", shm ? shm : "/tmp");
    if (mkdtemp(disk_root) == NULL || mkdtemp(core_root) == NULL)
        bench_die("no temporary directory");

    for (i = 0; i < runs; i++) {
        struct path *paths[2] = {&core, &disk};
        struct result *rb[2] = {&core_big, &disk_big}, *rs[2] = {&core_small, &disk_small};
        double push, pull, t0;
        char name[32];
        size_t k, j;

        floor_run(big, BIG, &push, &pull);
        fl_big.put[i] = mbps(BIG, push);
        fl_big.get[i] = mbps(BIG, pull);
        push = pull = 0;
        for (j = 0; j < SMALL; j++) {
            double a, b;
            floor_run(small + j * SMALL_LEN, SMALL_LEN, &a, &b);
            push += a;
            pull += b;
        }
        fl_small.put[i] = mbps((double)SMALL * SMALL_LEN, push);
        fl_small.get[i] = mbps((double)SMALL * SMALL_LEN, pull);

        snprintf(name, sizeof name, "core%d", i);
        path_open(&core, name, core_root, false);
        snprintf(name, sizeof name, "disk%d", i);
        path_open(&disk, name, disk_root, true);
        for (k = 0; k < 2; k++) {
            struct path *p = paths[k];
            struct pt_doc_ref ref;
            t0 = bench_now_s();
            put_one(p, big, BIG, &ref);
            rb[k]->put[i] = mbps(BIG, bench_now_s() - t0);
            t0 = bench_now_s();
            get_one(p, &ref, &out);
            rb[k]->get[i] = mbps(BIG, bench_now_s() - t0);
            if (out.len != BIG || memcmp(out.p, big, BIG) != 0)
                bench_die("a 16 MiB document came back different");
            t0 = bench_now_s();
            for (j = 0; j < SMALL; j++)
                put_one(p, small + j * SMALL_LEN, SMALL_LEN, &refs[j]);
            rs[k]->put[i] = mbps((double)SMALL * SMALL_LEN, bench_now_s() - t0);
            t0 = bench_now_s();
            for (j = 0; j < SMALL; j++) {
                get_one(p, &refs[j], &out);
                if (out.len != SMALL_LEN || memcmp(out.p, small + j * SMALL_LEN, SMALL_LEN) != 0)
                    bench_die("a 4 KiB document came back different");
            }
            rs[k]->get[i] = mbps((double)SMALL * SMALL_LEN, bench_now_s() - t0);
        }
        path_close(&core);
        path_close(&disk);
    }
    fx_rm_tree(disk_root);
    fx_rm_tree(core_root);

    printf("Documents through the token, MB/s (medians of %d runs; 4 KiB: %u documents per "
           "run, each written then read once; x: secretstream's throughput over the path's)\n\n",
           runs, SMALL);
    printf("| document | secretstream push / pull | token core write / read (x) | "
           "software token on disk write / read (x) |\n");
    printf("|---|---:|---:|---:|\n");
    {
        struct {
            const char *name;
            struct result *fl, *core, *disk;
        } rows[2] = {{"4 KiB", &fl_small, &core_small, &disk_small},
                     {"16 MiB", &fl_big, &core_big, &disk_big}};
        for (i = 0; i < 2; i++) {
            double fp = bench_median(rows[i].fl->put, (size_t)runs);
            double fg = bench_median(rows[i].fl->get, (size_t)runs);
            double cp = bench_median(rows[i].core->put, (size_t)runs);
            double cg = bench_median(rows[i].core->get, (size_t)runs);
            double dp = bench_median(rows[i].disk->put, (size_t)runs);
            double dg = bench_median(rows[i].disk->get, (size_t)runs);
            printf("| %s | %.0f / %.0f | %.1f / %.1f (%.0fx / %.0fx) | %.1f / %.1f (%.0fx / "
                   "%.0fx) |\n",
                   rows[i].name, fp, fg, cp, cg, fp / cp, fg / cg, dp, dg, fp / dp, fg / dg);
        }
    }
    printf("\n4 KiB documents per second: token core %.0f written, %.0f read; software token "
           "on disk %.0f written, %.0f read\n",
           bench_median(core_small.put, (size_t)runs) * 1e6 / SMALL_LEN,
           bench_median(core_small.get, (size_t)runs) * 1e6 / SMALL_LEN,
           bench_median(disk_small.put, (size_t)runs) * 1e6 / SMALL_LEN,
           bench_median(disk_small.get, (size_t)runs) * 1e6 / SMALL_LEN);
    free(big);
    free(small);
    free(out.p);
    free(refs);
    return 0;
}
