/*
 * test_journal.c: the querier service's journal (querier/sv_journal.c), on
 * real files in one mkdtemp directory under /tmp, removed at the end.
 *
 * - Round trips: records of sizes from 1 byte to SV_JOURNAL_RECORD_MAX,
 *   around the 1 MiB read buffer and in their thousands, come back in
 *   order; the bytes on disk are checked frame by frame against the format
 *   of sv_journal.h with libsodium directly.
 * - Crashes: the file cut at every byte of its last record, and every
 *   single-bit flip in its last record, reopen to the records before it,
 *   with the cut reported, and take appends again.
 * - Damage: every single-bit flip in a middle record, and invalid lengths,
 *   fail the open at that record's offset and leave the file as it was.
 * - Headers, the lock, a replay that refuses, limits, the counters, and an
 *   append that fails part way (RLIMIT_FSIZE, in a child process).
 *
 * Records are deterministic pseudo-random bytes named by an id, so a test
 * can rebuild what a journal must replay.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "querier/sv_journal.h"

#define MAGIC "COHORTJ1"
#define MAGIC_LEN 8u
#define HEAD 20u /* length and checksum before each payload */
#define ERR_LEN 512
#define READ_BUF (1u << 20) /* the journal's read buffer, for sizes around it */

static char base[64];

static void path_of(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", base, name);
}

/* ------------------------------------------------------------- files */

static uint8_t *slurp(const char *path, size_t *len)
{
    struct stat sb;
    uint8_t *p;
    size_t got = 0;
    int fd = open(path, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &sb), 0);
    p = malloc((size_t)sb.st_size + 1);
    assert_non_null(p);
    while (got < (size_t)sb.st_size) {
        ssize_t r = read(fd, p + got, (size_t)sb.st_size - got);
        assert_true(r > 0);
        got += (size_t)r;
    }
    close(fd);
    *len = got;
    return p;
}

static void spit(const char *path, const uint8_t *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        assert_true(w > 0);
        p += w;
        n -= (size_t)w;
    }
    close(fd);
}

static uint64_t file_size(const char *path)
{
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    return (uint64_t)sb.st_size;
}

/* The file holds exactly these bytes. */
static void assert_file_is(const char *path, const uint8_t *p, size_t n)
{
    size_t len;
    uint8_t *now = slurp(path, &len);
    assert_int_equal(len, n);
    assert_memory_equal(now, p, n);
    free(now);
}

static void flip(uint8_t *p, size_t at, unsigned bit)
{
    p[at] ^= (uint8_t)(1u << (bit & 7u));
}

/* -------------------------------------------------------------- books */

/* The records a journal holds, in order. */
struct book {
    size_t n, cap;
    uint8_t **rec;
    size_t *len;
};

static void fill(uint8_t *p, size_t len, uint32_t id)
{
    uint8_t seed[randombytes_SEEDBYTES] = {0};
    seed[0] = (uint8_t)id;
    seed[1] = (uint8_t)(id >> 8);
    seed[2] = (uint8_t)(id >> 16);
    seed[3] = (uint8_t)(id >> 24);
    randombytes_buf_deterministic(p, len, seed);
}

static void book_add_bytes(struct book *b, const uint8_t *p, size_t len)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 16;
        b->rec = realloc(b->rec, b->cap * sizeof *b->rec);
        b->len = realloc(b->len, b->cap * sizeof *b->len);
        assert_non_null(b->rec);
        assert_non_null(b->len);
    }
    b->rec[b->n] = malloc(len);
    assert_non_null(b->rec[b->n]);
    memcpy(b->rec[b->n], p, len);
    b->len[b->n] = len;
    b->n++;
}

static void book_add(struct book *b, uint32_t id, size_t len)
{
    uint8_t *p = malloc(len);
    assert_non_null(p);
    fill(p, len, id);
    book_add_bytes(b, p, len);
    free(p);
}

static void book_free(struct book *b)
{
    size_t i;
    for (i = 0; i < b->n; i++)
        free(b->rec[i]);
    free(b->rec);
    free(b->len);
    memset(b, 0, sizeof *b);
}

/* Where record i's frame starts, and where the journal of the whole book ends. */
static size_t frame_at(const struct book *b, size_t i)
{
    size_t off = MAGIC_LEN, k;
    for (k = 0; k < i; k++)
        off += HEAD + b->len[k];
    return off;
}

static size_t book_bytes(const struct book *b)
{
    return frame_at(b, b->n);
}

/* ------------------------------------------------------------- replay */

struct check {
    const struct book *b;
    size_t seen;    /* records passed so far */
    int mismatch;   /* one differed from the book, or came past its end */
    size_t stop_at; /* refuse the record with this number (from 1), 0: never */
    int stop_rc;
};

static int check_replay(void *ctx, const uint8_t *rec, size_t len)
{
    struct check *c = ctx;
    size_t i = c->seen++;
    if (c->stop_at != 0 && c->seen == c->stop_at)
        return c->stop_rc;
    if (i >= c->b->n || len != c->b->len[i] || memcmp(rec, c->b->rec[i], len) != 0)
        c->mismatch = 1;
    return 0;
}

/* Open, expecting success and exactly the first n records of b. */
static struct sv_journal *open_expect(const char *path, const struct book *b, size_t n,
                                      struct sv_journal_stats *st)
{
    struct check c = {.b = b};
    struct sv_journal *j = NULL;
    char err[ERR_LEN] = "";

    if (sv_journal_open(&j, path, check_replay, &c, st, err, sizeof err) != 0)
        fail_msg("open failed: %s", err);
    assert_non_null(j);
    assert_int_equal(c.seen, n);
    assert_false(c.mismatch);
    assert_int_equal(st->records, n);
    assert_int_equal(sv_journal_written(j), st->bytes);
    assert_int_equal(sv_journal_synced(j), st->bytes);
    assert_int_equal(file_size(path), st->bytes);
    return j;
}

/* Open, expecting failure after the first `seen` records; err receives the message. */
static void open_refused(const char *path, const struct book *b, size_t seen, char *err)
{
    struct check c = {.b = b};
    static int sentinel;
    struct sv_journal *j = (struct sv_journal *)(void *)&sentinel; /* must become NULL */
    struct sv_journal_stats st;

    err[0] = '\0';
    assert_int_equal(sv_journal_open(&j, path, check_replay, &c, &st, err, ERR_LEN), -1);
    assert_null(j);
    assert_int_equal(c.seen, seen);
    assert_false(c.mismatch);
    assert_true(strlen(err) > 0);
    assert_non_null(strstr(err, path));
}

/* The byte offset an error message names ("... offset N ..."). */
static unsigned long long offset_in(const char *err)
{
    const char *p = strstr(err, "offset ");
    if (p == NULL)
        fail_msg("no offset in: %s", err);
    return strtoull(p + strlen("offset "), NULL, 10);
}

/* A fresh journal at path holding the book, synced and closed; its size. */
static size_t make_journal(const char *path, const struct book *b)
{
    struct sv_journal *j = NULL;
    struct sv_journal_stats st;
    char err[ERR_LEN];
    size_t i;

    unlink(path);
    if (sv_journal_open(&j, path, NULL, NULL, &st, err, sizeof err) != 0)
        fail_msg("open failed: %s", err);
    for (i = 0; i < b->n; i++)
        if (sv_journal_append(j, b->rec[i], b->len[i], err, sizeof err) != 0)
            fail_msg("append failed: %s", err);
    assert_int_equal(sv_journal_sync(j, err, sizeof err), 0);
    assert_int_equal(sv_journal_written(j), book_bytes(b));
    sv_journal_close(j);
    assert_int_equal(file_size(path), book_bytes(b));
    return book_bytes(b);
}

/* The file is the header and the book's frames, built here with libsodium directly. */
static void assert_frames_are(const char *path, const struct book *b)
{
    size_t len, off = MAGIC_LEN, i;
    uint8_t *f = slurp(path, &len);

    assert_int_equal(len, book_bytes(b));
    assert_memory_equal(f, MAGIC, MAGIC_LEN);
    for (i = 0; i < b->n; i++) {
        uint8_t *msg = malloc(4 + b->len[i]), sum[16];
        assert_non_null(msg);
        msg[0] = (uint8_t)b->len[i];
        msg[1] = (uint8_t)(b->len[i] >> 8);
        msg[2] = (uint8_t)(b->len[i] >> 16);
        msg[3] = (uint8_t)(b->len[i] >> 24);
        memcpy(msg + 4, b->rec[i], b->len[i]);
        assert_int_equal(crypto_generichash(sum, sizeof sum, msg, 4 + b->len[i], NULL, 0), 0);
        assert_memory_equal(f + off, msg, 4);
        assert_memory_equal(f + off + 4, sum, 16);
        assert_memory_equal(f + off + HEAD, b->rec[i], b->len[i]);
        off += HEAD + b->len[i];
        free(msg);
    }
    free(f);
}

/* -------------------------------------------------------------- tests */

static void records_of_every_size_come_back_in_order_after_a_reopen(void **state)
{
    static const size_t sizes[] = {
        1,
        2,
        3,
        19,
        20,
        21,
        255,
        256,
        4095,
        4096,
        4097,
        65536,
        READ_BUF - HEAD - 1,
        READ_BUF - 20,
        READ_BUF - 1,
        READ_BUF,
        READ_BUF + 1,
        3 * READ_BUF + 17,
        7,
        100,
        1000,
    };
    struct book b = {0};
    struct sv_journal *j;
    struct sv_journal_stats st;
    struct stat sb;
    char path[128], err[ERR_LEN];
    size_t i;
    (void)state;

    path_of(path, sizeof path, "sizes");
    for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        book_add(&b, (uint32_t)i, sizes[i]);
    make_journal(path, &b);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_frames_are(path, &b);

    j = open_expect(path, &b, b.n, &st);
    assert_int_equal(st.bytes, book_bytes(&b));
    assert_int_equal(st.dropped_bytes, 0);

    /* More records after the reopen follow the first ones. */
    book_add(&b, 1000, 5000);
    book_add(&b, 1001, 1);
    assert_int_equal(sv_journal_append(j, b.rec[b.n - 2], b.len[b.n - 2], err, sizeof err), 0);
    assert_int_equal(sv_journal_append(j, b.rec[b.n - 1], b.len[b.n - 1], err, sizeof err), 0);
    assert_int_equal(sv_journal_sync(j, err, sizeof err), 0);
    sv_journal_close(j);
    assert_frames_are(path, &b);

    j = open_expect(path, &b, b.n, &st);
    assert_int_equal(st.bytes, book_bytes(&b));
    assert_int_equal(st.dropped_bytes, 0);
    sv_journal_close(j);
    book_free(&b);
}

static void thousands_of_small_records_cross_the_read_buffer_intact(void **state)
{
    struct book b = {0};
    struct sv_journal *j;
    struct sv_journal_stats st;
    char path[128];
    uint32_t i;
    (void)state;

    path_of(path, sizeof path, "small");
    for (i = 0; i < 6000; i++)
        book_add(&b, i, 1 + (i * 7919u) % 997u); /* about 3 MiB of frames */
    make_journal(path, &b);
    j = open_expect(path, &b, b.n, &st);
    assert_int_equal(st.bytes, book_bytes(&b));
    assert_int_equal(st.dropped_bytes, 0);
    sv_journal_close(j);
    book_free(&b);
}

static void the_counters_follow_appends_and_syncs(void **state)
{
    struct sv_journal *j = NULL;
    struct sv_journal_stats st;
    uint8_t rec[300];
    char path[128], err[ERR_LEN];
    (void)state;

    path_of(path, sizeof path, "counters");
    fill(rec, sizeof rec, 1);
    assert_int_equal(sv_journal_open(&j, path, NULL, NULL, &st, err, sizeof err), 0);
    assert_int_equal(st.records, 0);
    assert_int_equal(st.bytes, MAGIC_LEN);
    assert_int_equal(sv_journal_written(j), MAGIC_LEN);
    assert_int_equal(sv_journal_synced(j), MAGIC_LEN);

    assert_int_equal(sv_journal_append(j, rec, 100, err, sizeof err), 0);
    assert_int_equal(sv_journal_append(j, rec, 300, err, sizeof err), 0);
    assert_int_equal(sv_journal_written(j), MAGIC_LEN + 2 * HEAD + 400);
    assert_int_equal(sv_journal_synced(j), MAGIC_LEN);
    assert_int_equal(file_size(path), MAGIC_LEN + 2 * HEAD + 400);

    assert_int_equal(sv_journal_sync(j, err, sizeof err), 0);
    assert_int_equal(sv_journal_synced(j), MAGIC_LEN + 2 * HEAD + 400);
    assert_int_equal(sv_journal_sync(j, err, sizeof err), 0); /* nothing new: fine */
    assert_int_equal(sv_journal_synced(j), sv_journal_written(j));

    assert_int_equal(sv_journal_append(j, rec, 1, err, sizeof err), 0);
    assert_int_equal(sv_journal_written(j), MAGIC_LEN + 3 * HEAD + 401);
    assert_int_equal(sv_journal_synced(j), MAGIC_LEN + 2 * HEAD + 400);
    sv_journal_close(j);
    sv_journal_close(NULL);

    /* Stats are optional. */
    assert_int_equal(sv_journal_open(&j, path, NULL, NULL, NULL, err, sizeof err), 0);
    assert_int_equal(sv_journal_written(j), MAGIC_LEN + 3 * HEAD + 401);
    sv_journal_close(j);
}

static void an_empty_or_missing_file_becomes_a_new_journal(void **state)
{
    struct book none = {0};
    struct sv_journal *j;
    struct sv_journal_stats st;
    struct stat sb;
    char path[128];
    (void)state;

    path_of(path, sizeof path, "missing");
    unlink(path);
    j = open_expect(path, &none, 0, &st);
    assert_int_equal(st.bytes, MAGIC_LEN);
    assert_int_equal(st.dropped_bytes, 0);
    sv_journal_close(j);
    assert_file_is(path, (const uint8_t *)MAGIC, MAGIC_LEN);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);

    path_of(path, sizeof path, "empty");
    spit(path, (const uint8_t *)"", 0);
    j = open_expect(path, &none, 0, &st);
    assert_int_equal(st.bytes, MAGIC_LEN);
    sv_journal_close(j);
    assert_file_is(path, (const uint8_t *)MAGIC, MAGIC_LEN);
}

static void a_prefix_of_the_header_is_an_unfinished_creation(void **state)
{
    struct book b = {0};
    struct sv_journal *j;
    struct sv_journal_stats st;
    char path[128], err[ERR_LEN];
    size_t k;
    (void)state;

    path_of(path, sizeof path, "prefix");
    book_add(&b, 7, 40);
    for (k = 1; k < MAGIC_LEN; k++) {
        spit(path, (const uint8_t *)MAGIC, k);
        j = open_expect(path, &b, 0, &st);
        assert_int_equal(st.bytes, MAGIC_LEN);
        assert_int_equal(st.dropped_bytes, 0);
        assert_int_equal(sv_journal_append(j, b.rec[0], b.len[0], err, sizeof err), 0);
        assert_int_equal(sv_journal_sync(j, err, sizeof err), 0);
        sv_journal_close(j);
        assert_frames_are(path, &b);
        j = open_expect(path, &b, 1, &st);
        sv_journal_close(j);
    }
    book_free(&b);
}

static void a_file_with_another_header_is_not_a_journal(void **state)
{
    struct book b = {0};
    char path[128], err[ERR_LEN], small[8];
    uint8_t *orig, *bad;
    size_t len, i, k;
    struct sv_journal *j = NULL;
    static const char *const texts[] = {"x",      "CX", "COHORTX", "C0HORTJ1", "hello, world\n",
                                        "COHORTJ"};
    (void)state;

    path_of(path, sizeof path, "header");
    book_add(&b, 1, 10);
    book_add(&b, 2, 20);
    make_journal(path, &b);
    orig = slurp(path, &len);
    bad = malloc(len);
    assert_non_null(bad);

    /* Every bit of the header, with valid records after it. */
    for (i = 0; i < MAGIC_LEN; i++)
        for (k = 0; k < 8; k++) {
            memcpy(bad, orig, len);
            flip(bad, i, (unsigned)k);
            spit(path, bad, len);
            open_refused(path, &b, 0, err);
            assert_non_null(strstr(err, "not a Cohort journal"));
            assert_file_is(path, bad, len);
        }

    /* Other files, short and long; "COHORTJ" (a prefix) is the one accepted. */
    for (i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        size_t n = strlen(texts[i]);
        spit(path, (const uint8_t *)texts[i], n);
        if (strcmp(texts[i], "COHORTJ") == 0) {
            assert_int_equal(sv_journal_open(&j, path, NULL, NULL, NULL, err, sizeof err), 0);
            sv_journal_close(j);
            assert_file_is(path, (const uint8_t *)MAGIC, MAGIC_LEN);
            continue;
        }
        open_refused(path, &b, 0, err);
        assert_non_null(strstr(err, "not a Cohort journal"));
        assert_file_is(path, (const uint8_t *)texts[i], n);
    }

    /* Eight zero bytes; and a short buffer still gets a terminated message. */
    memset(bad, 0, MAGIC_LEN);
    spit(path, bad, MAGIC_LEN);
    open_refused(path, &b, 0, err);
    assert_non_null(strstr(err, "not a Cohort journal"));
    memset(small, 'z', sizeof small);
    assert_int_equal(sv_journal_open(&j, path, NULL, NULL, NULL, small, sizeof small), -1);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_int_equal(sv_journal_open(&j, path, NULL, NULL, NULL, NULL, 0), -1);

    /* A path that cannot be opened. */
    path_of(path, sizeof path, "no-such-dir/journal");
    open_refused(path, &b, 0, err);
    free(orig);
    free(bad);
    book_free(&b);
}

static void a_second_open_of_the_same_journal_is_refused_as_in_use(void **state)
{
    struct book b = {0};
    struct sv_journal *j, *k;
    struct sv_journal_stats st;
    char path[128], err[ERR_LEN];
    uint8_t *orig;
    size_t len;
    pid_t pid;
    int status;
    (void)state;

    path_of(path, sizeof path, "locked");
    book_add(&b, 1, 100);
    book_add(&b, 2, 200);
    make_journal(path, &b);
    orig = slurp(path, &len);

    j = open_expect(path, &b, 2, &st);
    open_refused(path, &b, 0, err);
    assert_non_null(strstr(err, "in use by another service"));

    /* Another process is refused too. */
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct sv_journal *c = NULL;
        char e[ERR_LEN];
        int rc = sv_journal_open(&c, path, NULL, NULL, NULL, e, sizeof e);
        _exit(rc == -1 && c == NULL && strstr(e, "in use by another service") != NULL ? 0 : 1);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_file_is(path, orig, len);

    /* Closing releases the lock. */
    sv_journal_close(j);
    k = open_expect(path, &b, 2, &st);
    sv_journal_close(k);
    free(orig);
    book_free(&b);
}

/* Cut a copy of orig at every offset from `from` to its end and reopen. */
static void cut_and_reopen(const char *path, const uint8_t *orig, size_t from, size_t to,
                           size_t step, const struct book *b, const struct book *after)
{
    size_t start = frame_at(b, b->n - 1), cut;
    char err[ERR_LEN];

    for (cut = from; cut < to; cut += step) {
        struct sv_journal *j;
        struct sv_journal_stats st;

        spit(path, orig, cut);
        j = open_expect(path, b, b->n - 1, &st);
        assert_int_equal(st.bytes, start);
        assert_int_equal(st.dropped_bytes, cut - start);

        /* The journal goes on after the cut. */
        assert_int_equal(sv_journal_append(j, after->rec[after->n - 1], after->len[after->n - 1],
                                           err, sizeof err),
                         0);
        assert_int_equal(sv_journal_sync(j, err, sizeof err), 0);
        sv_journal_close(j);
        j = open_expect(path, after, after->n, &st);
        assert_int_equal(st.dropped_bytes, 0);
        sv_journal_close(j);
    }
}

static void a_record_cut_at_any_byte_is_dropped_and_the_journal_goes_on(void **state)
{
    struct book b = {0}, after = {0};
    char path[128];
    uint8_t *orig;
    size_t len, start;
    (void)state;

    path_of(path, sizeof path, "cut");
    book_add(&b, 1, 1);
    book_add(&b, 2, 300);
    book_add(&b, 3, 5000);
    book_add(&b, 4, 257);
    after = (struct book){0};
    book_add(&after, 1, 1);
    book_add(&after, 2, 300);
    book_add(&after, 3, 5000);
    book_add(&after, 99, 64);
    make_journal(path, &b);
    orig = slurp(path, &len);
    start = frame_at(&b, 3);
    cut_and_reopen(path, orig, start, len, 1, &b, &after);
    free(orig);
    book_free(&b);

    /* A last record larger than the read buffer, cut at a spread of offsets. */
    book_add(&b, 1, 1);
    book_add(&b, 2, 300);
    book_add(&b, 3, 5000);
    book_add(&b, 5, 2 * READ_BUF + 33);
    make_journal(path, &b);
    orig = slurp(path, &len);
    start = frame_at(&b, 3);
    cut_and_reopen(path, orig, start, start + 2 * HEAD, 1, &b, &after);
    cut_and_reopen(path, orig, start + 2 * HEAD, len, 65521, &b, &after);
    cut_and_reopen(path, orig, len - 3, len, 1, &b, &after);
    free(orig);
    book_free(&b);
    book_free(&after);
}

static void a_bit_flip_in_the_last_record_is_a_torn_tail(void **state)
{
    struct book b = {0};
    char path[128], err[ERR_LEN];
    uint8_t *orig, *bad;
    size_t len, start, at;
    unsigned bit;
    (void)state;

    path_of(path, sizeof path, "lastflip");
    book_add(&b, 1, 70);
    book_add(&b, 2, 4000);
    book_add(&b, 3, 333);
    make_journal(path, &b);
    orig = slurp(path, &len);
    bad = malloc(len);
    assert_non_null(bad);
    start = frame_at(&b, 2);

    /* Checksum and payload: always torn. */
    for (at = start + 4; at < len; at++) {
        struct sv_journal *j;
        struct sv_journal_stats st;
        memcpy(bad, orig, len);
        flip(bad, at, (unsigned)at);
        spit(path, bad, len);
        j = open_expect(path, &b, 2, &st);
        assert_int_equal(st.bytes, start);
        assert_int_equal(st.dropped_bytes, len - start);
        sv_journal_close(j);
        assert_file_is(path, orig, start);
    }

    /*
     * The length: a larger one (within the maximum) runs past the end, as
     * an unfinished write would; a smaller, zero or invalid one is no
     * write's prefix and leaves data after the frame: corruption.
     */
    for (bit = 0; bit < 32; bit++) {
        uint32_t newlen = 333u ^ (1u << bit);
        memcpy(bad, orig, len);
        flip(bad, start + bit / 8, bit % 8);
        spit(path, bad, len);
        if (newlen > 333u && newlen <= SV_JOURNAL_RECORD_MAX) {
            struct sv_journal_stats st;
            struct sv_journal *j = open_expect(path, &b, 2, &st);
            assert_int_equal(st.dropped_bytes, len - start);
            sv_journal_close(j);
        } else {
            open_refused(path, &b, 2, err);
            assert_int_equal(offset_in(err), start);
            assert_file_is(path, bad, len);
        }
    }
    free(orig);
    free(bad);
    book_free(&b);
}

static void a_bit_flip_in_a_middle_record_fails_at_its_offset_and_changes_nothing(void **state)
{
    struct book b = {0};
    char path[128], err[ERR_LEN];
    uint8_t *orig, *bad;
    size_t len, start, at, mid = 2;
    unsigned bit;
    (void)state;

    path_of(path, sizeof path, "midflip");
    book_add(&b, 1, 50);
    book_add(&b, 2, 600);
    book_add(&b, 3, 777);
    book_add(&b, 4, 90);
    book_add(&b, 5, 1);
    make_journal(path, &b);
    orig = slurp(path, &len);
    bad = malloc(len);
    assert_non_null(bad);
    start = frame_at(&b, mid);

    /* Checksum and payload, every byte. */
    for (at = start + 4; at < frame_at(&b, mid + 1); at++) {
        memcpy(bad, orig, len);
        flip(bad, at, (unsigned)at);
        spit(path, bad, len);
        open_refused(path, &b, mid, err);
        assert_int_equal(offset_in(err), start);
        assert_non_null(strstr(err, "corrupt"));
        assert_file_is(path, bad, len);
    }

    /*
     * The length, every bit. The length is covered only by its own frame's
     * checksum, so one that now reaches past the end of the file cannot be
     * told from an unfinished write (sv_journal.h): the records from it on
     * are dropped. Every other change is corruption at this offset.
     */
    for (bit = 0; bit < 32; bit++) {
        uint32_t newlen = 777u ^ (1u << bit);
        memcpy(bad, orig, len);
        flip(bad, start + bit / 8, bit % 8);
        spit(path, bad, len);
        if (newlen != 0 && newlen <= SV_JOURNAL_RECORD_MAX && start + HEAD + newlen >= len) {
            struct sv_journal_stats st;
            struct sv_journal *j = open_expect(path, &b, mid, &st);
            assert_int_equal(st.dropped_bytes, len - start);
            sv_journal_close(j);
        } else {
            open_refused(path, &b, mid, err);
            assert_int_equal(offset_in(err), start);
            assert_file_is(path, bad, len);
        }
    }
    free(orig);
    free(bad);
    book_free(&b);
}

static void invalid_lengths_are_corruption_unless_nothing_could_follow(void **state)
{
    static const uint32_t lens[] = {0, SV_JOURNAL_RECORD_MAX + 1, 0x80000000u, 0xffffffffu};
    struct book b = {0};
    char path[128], err[ERR_LEN];
    uint8_t *orig, *bad;
    size_t len, start, i, k;
    (void)state;

    path_of(path, sizeof path, "lengths");
    book_add(&b, 1, 30);
    book_add(&b, 2, 40);
    book_add(&b, 3, 50);
    make_journal(path, &b);
    orig = slurp(path, &len);
    bad = malloc(len + HEAD);
    assert_non_null(bad);

    for (i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        /* In the middle record, by XOR with what is there. */
        uint32_t diff = 40u ^ lens[i];
        assert_true(diff != 0);
        start = frame_at(&b, 1);
        memcpy(bad, orig, len);
        for (k = 0; k < 4; k++)
            bad[start + k] ^= (uint8_t)(diff >> (8 * k));
        spit(path, bad, len);
        open_refused(path, &b, 1, err);
        assert_int_equal(offset_in(err), start);
        assert_non_null(strstr(err, "length"));
        assert_file_is(path, bad, len);

        /* In the last record: its payload follows, so corruption too. */
        diff = 50u ^ lens[i];
        start = frame_at(&b, 2);
        memcpy(bad, orig, len);
        for (k = 0; k < 4; k++)
            bad[start + k] ^= (uint8_t)(diff >> (8 * k));
        spit(path, bad, len);
        open_refused(path, &b, 2, err);
        assert_int_equal(offset_in(err), start);
        assert_file_is(path, bad, len);
    }

    /* Twenty bytes after the last record: no valid frame fits, so torn. */
    for (i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        struct sv_journal *j;
        struct sv_journal_stats st;
        memcpy(bad, orig, len);
        memset(bad + len, 0, HEAD);
        for (k = 0; k < 4; k++)
            bad[len + k] ^= (uint8_t)(lens[i] >> (8 * k));
        spit(path, bad, len + HEAD);
        j = open_expect(path, &b, 3, &st);
        assert_int_equal(st.dropped_bytes, HEAD);
        sv_journal_close(j);
        assert_file_is(path, orig, len);

        /* One byte more and it is corruption. */
        spit(path, bad, len + HEAD);
        {
            int fd = open(path, O_WRONLY | O_APPEND);
            uint8_t one = 0;
            assert_true(fd >= 0);
            assert_int_equal(write(fd, &one, 1), 1);
            close(fd);
        }
        open_refused(path, &b, 3, err);
        assert_int_equal(offset_in(err), len);
    }
    free(orig);
    free(bad);
    book_free(&b);
}

static void a_replay_that_refuses_a_record_stops_the_open(void **state)
{
    struct book b = {0};
    struct check c;
    struct sv_journal *j = NULL;
    struct sv_journal_stats st;
    char path[128], err[ERR_LEN];
    uint8_t *orig;
    size_t len, i;
    (void)state;

    path_of(path, sizeof path, "refused");
    for (i = 0; i < 5; i++) {
        char text[64];
        int n = snprintf(text, sizeof text, "SECRET-payload-%zu-never-in-a-message", i);
        book_add_bytes(&b, (const uint8_t *)text, (size_t)n);
    }
    make_journal(path, &b);
    orig = slurp(path, &len);

    c = (struct check){.b = &b, .stop_at = 3, .stop_rc = -7};
    assert_int_equal(sv_journal_open(&j, path, check_replay, &c, &st, err, sizeof err), -1);
    assert_null(j);
    assert_int_equal(c.seen, 3);
    assert_false(c.mismatch);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "record 3:"));
    assert_non_null(strstr(err, "-7"));
    assert_null(strstr(err, "SECRET"));
    assert_file_is(path, orig, len);

    /* Nothing was kept locked or changed: the next open reads all five. */
    j = open_expect(path, &b, 5, &st);
    sv_journal_close(j);

    /* Corruption messages carry no record data either. */
    orig[frame_at(&b, 1) + HEAD] ^= 0x01;
    spit(path, orig, len);
    open_refused(path, &b, 1, err);
    assert_null(strstr(err, "SECRET"));
    free(orig);
    book_free(&b);
}

static void the_largest_record_round_trips_and_a_larger_one_is_refused(void **state)
{
    struct book b = {0};
    struct sv_journal *j = NULL;
    struct sv_journal_stats st;
    char path[128], err[ERR_LEN];
    uint8_t *big;
    (void)state;

    path_of(path, sizeof path, "largest");
    unlink(path);
    book_add(&b, 42, SV_JOURNAL_RECORD_MAX);
    big = malloc((size_t)SV_JOURNAL_RECORD_MAX + 1);
    assert_non_null(big);
    memcpy(big, b.rec[0], SV_JOURNAL_RECORD_MAX);
    big[SV_JOURNAL_RECORD_MAX] = 0x5a;

    assert_int_equal(sv_journal_open(&j, path, NULL, NULL, &st, err, sizeof err), 0);
    assert_int_equal(sv_journal_append(j, big, (size_t)SV_JOURNAL_RECORD_MAX + 1, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, path));
    assert_int_equal(sv_journal_append(j, big, 0, err, sizeof err), -1);
    assert_int_equal(sv_journal_written(j), MAGIC_LEN);
    assert_int_equal(file_size(path), MAGIC_LEN);
    assert_int_equal(sv_journal_append(j, b.rec[0], b.len[0], err, sizeof err), 0);
    assert_int_equal(sv_journal_sync(j, err, sizeof err), 0);
    sv_journal_close(j);
    assert_frames_are(path, &b);

    j = open_expect(path, &b, 1, &st);
    assert_int_equal(st.bytes, MAGIC_LEN + HEAD + SV_JOURNAL_RECORD_MAX);
    sv_journal_close(j);
    free(big);
    book_free(&b);
}

/* The child's steps, each with its own exit code (no cmocka assertions in a child). */
static int fail_part_way(const char *path, const struct book *b)
{
    struct sv_journal *j = NULL;
    struct rlimit rl;
    struct stat sb;
    uint8_t big[2000];
    char err[ERR_LEN];
    uint64_t end;

    signal(SIGXFSZ, SIG_IGN);
    if (sv_journal_open(&j, path, NULL, NULL, NULL, err, sizeof err) != 0)
        return 10;
    if (sv_journal_append(j, b->rec[0], b->len[0], err, sizeof err) != 0 ||
        sv_journal_sync(j, err, sizeof err) != 0)
        return 11;
    end = sv_journal_written(j);
    if (getrlimit(RLIMIT_FSIZE, &rl) != 0)
        return 12;
    rl.rlim_cur = (rlim_t)(end + 500);
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
        return 13;
    fill(big, sizeof big, 77);
    if (sv_journal_append(j, big, sizeof big, err, sizeof err) != -1 ||
        strstr(err, "cannot append") == NULL)
        return 14;
    if (sv_journal_written(j) != end || stat(path, &sb) != 0 || (uint64_t)sb.st_size != end)
        return 15;
    if (sv_journal_append(j, b->rec[1], b->len[1], err, sizeof err) != 0 ||
        sv_journal_sync(j, err, sizeof err) != 0)
        return 16;
    sv_journal_close(j);
    return 0;
}

static void an_append_that_fails_part_way_is_undone(void **state)
{
    struct book b = {0};
    struct sv_journal *j;
    struct sv_journal_stats st;
    char path[128];
    pid_t pid;
    int status;
    (void)state;

    path_of(path, sizeof path, "partial");
    unlink(path);
    book_add(&b, 1, 1000);
    book_add(&b, 2, 100);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(fail_part_way(path, &b));
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    assert_frames_are(path, &b);
    j = open_expect(path, &b, 2, &st);
    assert_int_equal(st.dropped_bytes, 0);
    sv_journal_close(j);
    book_free(&b);
}

/* -------------------------------------------------------------- setup */

static int group_setup(void **state)
{
    (void)state;
    snprintf(base, sizeof base, "/tmp/cohort_journal_XXXXXX");
    if (mkdtemp(base) == NULL || sodium_init() < 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(records_of_every_size_come_back_in_order_after_a_reopen),
        cmocka_unit_test(thousands_of_small_records_cross_the_read_buffer_intact),
        cmocka_unit_test(the_counters_follow_appends_and_syncs),
        cmocka_unit_test(an_empty_or_missing_file_becomes_a_new_journal),
        cmocka_unit_test(a_prefix_of_the_header_is_an_unfinished_creation),
        cmocka_unit_test(a_file_with_another_header_is_not_a_journal),
        cmocka_unit_test(a_second_open_of_the_same_journal_is_refused_as_in_use),
        cmocka_unit_test(a_record_cut_at_any_byte_is_dropped_and_the_journal_goes_on),
        cmocka_unit_test(a_bit_flip_in_the_last_record_is_a_torn_tail),
        cmocka_unit_test(a_bit_flip_in_a_middle_record_fails_at_its_offset_and_changes_nothing),
        cmocka_unit_test(invalid_lengths_are_corruption_unless_nothing_could_follow),
        cmocka_unit_test(a_replay_that_refuses_a_record_stops_the_open),
        cmocka_unit_test(the_largest_record_round_trips_and_a_larger_one_is_refused),
        cmocka_unit_test(an_append_that_fails_part_way_is_undone),
    };
    return cmocka_run_group_tests_name("journal", tests, group_setup, group_teardown);
}
