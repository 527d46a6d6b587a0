/*
 * The querier service's journal (sv_journal.h): an append-only file of
 * framed records, read back once at start and appended to while serving.
 *
 * Format: the 8 bytes "COHORTJ1", then frames of
 *   [u32 length, little-endian][16-byte BLAKE2b of (length || payload)][payload]
 * with 1 <= length <= SV_JOURNAL_RECORD_MAX. The checksum is unkeyed: it
 * detects damage, it does not authenticate. Nothing in a record is trusted
 * until its checksum matches, and no byte of a record ever goes into an
 * error message.
 *
 * Reading back walks the frames from the header on and sorts a bad frame
 * at offset `at` into one of two kinds:
 *   - torn: fewer bytes remain than a frame's fixed part, or the length
 *     runs past the end of the file, or the frame is complete, its checksum
 *     fails and nothing follows it. A write the service never finished
 *     leaves exactly these; the file is cut back to `at` (ftruncate, fsync)
 *     and the bytes cut are reported.
 *   - corrupt: a frame with a bad checksum, or a length of 0 or over the
 *     maximum, with more data after it. An invalid length says nothing
 *     about where its frame ends, so it counts as torn only when fewer
 *     bytes remain than the smallest valid frame. The open fails with the
 *     offset and the file is not touched.
 * Records are passed to the replay callback as they are read, in one pass,
 * so a caller whose open fails must drop whatever state the replay built.
 * Once read back (and cut, if torn) the file is synced, so that nothing
 * the caller rebuilt its state from can be lost afterwards.
 *
 * Invariants while open: the file holds the header and whole frames up to
 * `end`, and nothing after it; `synced` <= `end` and every byte up to
 * `synced` is durable. An append that fails is undone with ftruncate back
 * to `end`. When that undo fails, or an fdatasync fails (after which the
 * kernel may have dropped the dirty pages it could not write, so a second
 * try proves nothing), the journal refuses every later append and sync:
 * the service must stop and read the file back again.
 *
 * Workload: one open per service start over a journal of up to hundreds of
 * MB, read sequentially through a 1 MiB buffer; a record that fits the
 * buffer is passed in place, a larger one is gathered into one record
 * buffer that grows to the largest record seen (at most
 * SV_JOURNAL_RECORD_MAX). Appends are two pwrites at the end; several may
 * share one fdatasync. The caller serialises all calls.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <sodium.h>

#include "querier/sv_journal.h"

#define SV_MAGIC "COHORTJ1"
#define SV_MAGIC_LEN 8u
#define SV_LEN_BYTES 4u
#define SV_SUM_BYTES 16u
#define SV_FRAME_HEAD (SV_LEN_BYTES + SV_SUM_BYTES) /* before the payload */
#define SV_READ_BUF (1u << 20)

struct sv_journal {
    int fd;          /* open read-write, holds the flock */
    char *path;      /* for messages */
    uint64_t end;    /* the file's size: header and whole frames */
    uint64_t synced; /* bytes known durable */
    int failed;      /* an append could not be undone or a sync failed */
};

static int say(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int say(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;
    if (err != NULL && err_len > 0) {
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static uint32_t le32_get(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void le32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* The checksum of a frame: BLAKE2b-128 of its length field and payload. */
static void frame_sum(uint8_t sum[static SV_SUM_BYTES], const uint8_t len_field[SV_LEN_BYTES],
                      const uint8_t *payload, size_t len)
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, SV_SUM_BYTES);
    crypto_generichash_update(&st, len_field, SV_LEN_BYTES);
    crypto_generichash_update(&st, payload, len);
    crypto_generichash_final(&st, sum, SV_SUM_BYTES);
}

/* Write all n bytes at off, through short writes and EINTR. 0 or -1 (errno). */
static int pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* Read exactly n bytes from the current position. 0, -1 (errno) or 1 (end of file). */
static int read_all(int fd, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            return 1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* fsync the directory that holds path, so that a new file's name is durable. */
static int sync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    int fd, rc = -1, e = 0;

    if (slash == NULL)
        dir = strdup(".");
    else if (slash == path)
        dir = strdup("/");
    else
        dir = strndup(path, (size_t)(slash - path));
    if (dir == NULL)
        return -1;
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        rc = fsync(fd);
        e = errno;
        close(fd);
        errno = e;
    }
    free(dir);
    return rc;
}

/* ---------------------------------------------------------- reading back */

/* A sequential reader: buf[pos..end) holds the file's bytes from off on. */
struct reader {
    int fd;
    uint8_t *buf;
    size_t pos, end;
    uint64_t off, size;
};

/*
 * Make n bytes (n <= SV_READ_BUF, off + n <= size) available at buf + pos,
 * reading as much of the rest of the file as the buffer takes.
 * 0, -1 (errno) or 1 (the file ended before its size).
 */
static int rd_need(struct reader *r, size_t n)
{
    assert(n <= SV_READ_BUF && n <= r->size - r->off);
    if (r->end - r->pos >= n)
        return 0;
    if (SV_READ_BUF - r->pos < n) {
        memmove(r->buf, r->buf + r->pos, r->end - r->pos);
        r->end -= r->pos;
        r->pos = 0;
    }
    while (r->end - r->pos < n) {
        uint64_t unread = r->size - r->off - (r->end - r->pos);
        size_t want = SV_READ_BUF - r->end;
        ssize_t got;
        if (want > unread)
            want = (size_t)unread;
        got = read(r->fd, r->buf + r->end, want);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return -1;
        if (got == 0)
            return 1;
        r->end += (size_t)got;
    }
    return 0;
}

static void rd_skip(struct reader *r, size_t n)
{
    assert(n <= r->end - r->pos);
    r->pos += n;
    r->off += n;
}

static int read_failed(const char *path, int rc, char *err, size_t err_len)
{
    if (rc > 0)
        return say(err, err_len, "%s: the file ended early while being read", path);
    return say(err, err_len, "%s: cannot read: %s", path, strerror(errno));
}

/*
 * Read the frames after the header, passing each record to replay.
 * *keep receives the offset the file is valid up to (its size, or where a
 * torn tail starts) and *records the number of records. 0 or -1.
 */
static int read_records(struct reader *r, const char *path,
                        int (*replay)(void *ctx, const uint8_t *rec, size_t len), void *ctx,
                        uint64_t *keep, uint64_t *records, char *err, size_t err_len)
{
    uint8_t *big = NULL; /* a record larger than the read buffer */
    size_t big_cap = 0;
    uint64_t n = 0;
    int rc = -1, io;

    while (r->off < r->size) {
        uint64_t at = r->off, rem = r->size - at;
        uint8_t len_field[SV_LEN_BYTES], sum[SV_SUM_BYTES], want[SV_SUM_BYTES];
        const uint8_t *payload;
        uint32_t len;

        if (rem < SV_FRAME_HEAD)
            break; /* torn: not even the fixed part */
        io = rd_need(r, SV_FRAME_HEAD);
        if (io != 0) {
            read_failed(path, io, err, err_len);
            goto out;
        }
        memcpy(len_field, r->buf + r->pos, SV_LEN_BYTES);
        memcpy(want, r->buf + r->pos + SV_LEN_BYTES, SV_SUM_BYTES);
        len = le32_get(len_field);
        if (len == 0 || len > SV_JOURNAL_RECORD_MAX) {
            if (rem <= SV_FRAME_HEAD)
                break; /* torn: no valid frame fits in what remains */
            say(err, err_len,
                "%s: corrupt journal: invalid record length at byte offset %llu, with more data "
                "after it",
                path, (unsigned long long)at);
            goto out;
        }
        if (len > rem - SV_FRAME_HEAD)
            break; /* torn: runs past the end of the file */
        rd_skip(r, SV_FRAME_HEAD);

        if (len <= SV_READ_BUF) {
            io = rd_need(r, len);
            if (io != 0) {
                read_failed(path, io, err, err_len);
                goto out;
            }
            payload = r->buf + r->pos;
            rd_skip(r, len);
        } else {
            size_t have = r->end - r->pos;
            if (big_cap < len) {
                uint8_t *p = realloc(big, len);
                if (p == NULL) {
                    say(err, err_len, "%s: out of memory for a record of %lu bytes", path,
                        (unsigned long)len);
                    goto out;
                }
                big = p;
                big_cap = len;
            }
            assert(have < len);
            memcpy(big, r->buf + r->pos, have);
            io = read_all(r->fd, big + have, len - have);
            if (io != 0) {
                read_failed(path, io, err, err_len);
                goto out;
            }
            r->pos = r->end = 0;
            r->off += len;
            payload = big;
        }

        frame_sum(sum, len_field, payload, len);
        if (memcmp(sum, want, SV_SUM_BYTES) != 0) {
            if (r->off == r->size) {
                r->off = at;
                break; /* torn: the last frame, complete but wrong */
            }
            say(err, err_len,
                "%s: corrupt journal: bad checksum in the record at byte offset %llu, with more "
                "data after it",
                path, (unsigned long long)at);
            goto out;
        }
        n++;
        if (replay != NULL) {
            int e = replay(ctx, payload, len);
            if (e != 0) {
                say(err, err_len,
                    "%s: record %llu: replay stopped with error %d (frame at byte "
                    "offset %llu)",
                    path, (unsigned long long)n, e, (unsigned long long)at);
                goto out;
            }
        }
    }
    *keep = r->off;
    *records = n;
    rc = 0;
out:
    free(big);
    return rc;
}

/*
 * A file shorter than the header: empty (a new journal) or a prefix of the
 * header (a creation that did not finish) gets the header, durably, name
 * included; anything else is not ours.
 */
static int write_header(struct sv_journal *j, uint64_t size, char *err, size_t err_len)
{
    uint8_t head[SV_MAGIC_LEN];

    assert(size < SV_MAGIC_LEN);
    if (size > 0) {
        ssize_t got;
        do
            got = pread(j->fd, head, (size_t)size, 0);
        while (got < 0 && errno == EINTR);
        if (got < 0)
            return say(err, err_len, "%s: cannot read: %s", j->path, strerror(errno));
        if ((uint64_t)got != size)
            return say(err, err_len, "%s: the file ended early while being read", j->path);
        if (memcmp(head, SV_MAGIC, (size_t)size) != 0)
            return say(err, err_len, "%s: not a Cohort journal", j->path);
    }
    if (pwrite_all(j->fd, (const uint8_t *)SV_MAGIC, SV_MAGIC_LEN, 0) != 0 || fsync(j->fd) != 0)
        return say(err, err_len, "%s: cannot write the journal's header: %s", j->path,
                   strerror(errno));
    if (sync_parent(j->path) != 0)
        return say(err, err_len, "%s: cannot sync its directory: %s", j->path, strerror(errno));
    j->end = SV_MAGIC_LEN;
    return 0;
}

/* Check the header, read every record back, cut a torn tail. */
static int read_back(struct sv_journal *j, uint64_t size,
                     int (*replay)(void *ctx, const uint8_t *rec, size_t len), void *ctx,
                     struct sv_journal_stats *st, char *err, size_t err_len)
{
    struct reader r = {.fd = j->fd, .size = size};
    uint64_t keep = 0, records = 0;
    int rc = -1, io;

    r.buf = malloc(SV_READ_BUF);
    if (r.buf == NULL) {
        say(err, err_len, "%s: out of memory for the read buffer", j->path);
        goto out;
    }
    io = rd_need(&r, SV_MAGIC_LEN);
    if (io != 0) {
        read_failed(j->path, io, err, err_len);
        goto out;
    }
    if (memcmp(r.buf, SV_MAGIC, SV_MAGIC_LEN) != 0) {
        say(err, err_len, "%s: not a Cohort journal", j->path);
        goto out;
    }
    rd_skip(&r, SV_MAGIC_LEN);
    if (read_records(&r, j->path, replay, ctx, &keep, &records, err, err_len) != 0)
        goto out;

    if (keep < size) {
        if (ftruncate(j->fd, (off_t)keep) != 0 || fsync(j->fd) != 0) {
            say(err, err_len, "%s: cannot cut off the unfinished record at byte offset %llu: %s",
                j->path, (unsigned long long)keep, strerror(errno));
            goto out;
        }
    } else if (fdatasync(j->fd) != 0) {
        say(err, err_len, "%s: cannot sync: %s", j->path, strerror(errno));
        goto out;
    }
    j->end = keep;
    if (st != NULL) {
        st->records = records;
        st->dropped_bytes = size - keep;
    }
    rc = 0;
out:
    free(r.buf);
    return rc;
}

int sv_journal_open(struct sv_journal **out, const char *path,
                    int (*replay)(void *ctx, const uint8_t *rec, size_t len), void *ctx,
                    struct sv_journal_stats *st, char *err, size_t err_len)
{
    struct sv_journal *j = NULL;
    struct stat sb;
    int rc = -1;

    assert(out != NULL && path != NULL);
    *out = NULL;
    if (st != NULL)
        memset(st, 0, sizeof *st);
    if (sodium_init() < 0)
        return say(err, err_len, "%s: cannot initialise libsodium", path);
    j = calloc(1, sizeof *j);
    if (j == NULL)
        return say(err, err_len, "%s: out of memory", path);
    j->fd = -1;
    j->path = strdup(path);
    if (j->path == NULL) {
        say(err, err_len, "%s: out of memory", path);
        goto out;
    }
    j->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (j->fd < 0) {
        say(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        goto out;
    }
    if (flock(j->fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            say(err, err_len, "%s: in use by another service", path);
        else
            say(err, err_len, "%s: cannot lock: %s", path, strerror(errno));
        goto out;
    }
    if (fstat(j->fd, &sb) != 0) {
        say(err, err_len, "%s: cannot stat: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(sb.st_mode)) {
        say(err, err_len, "%s: not a regular file", path);
        goto out;
    }
    if ((uint64_t)sb.st_size < SV_MAGIC_LEN) {
        if (write_header(j, (uint64_t)sb.st_size, err, err_len) != 0)
            goto out;
    } else if (read_back(j, (uint64_t)sb.st_size, replay, ctx, st, err, err_len) != 0) {
        goto out;
    }
    j->synced = j->end;
    if (st != NULL)
        st->bytes = j->end;
    *out = j;
    j = NULL;
    rc = 0;
out:
    sv_journal_close(j);
    return rc;
}

int sv_journal_append(struct sv_journal *j, const uint8_t *rec, size_t len, char *err,
                      size_t err_len)
{
    uint8_t head[SV_FRAME_HEAD];

    assert(j != NULL);
    if (j->failed)
        return say(err, err_len, "%s: an earlier write or sync failed; reopen the journal",
                   j->path);
    if (len == 0 || len > SV_JOURNAL_RECORD_MAX)
        return say(err, err_len, "%s: a record holds 1 to %u bytes, not %zu", j->path,
                   (unsigned)SV_JOURNAL_RECORD_MAX, len);
    assert(rec != NULL);
    le32_put(head, (uint32_t)len);
    frame_sum(head + SV_LEN_BYTES, head, rec, len);
    if (pwrite_all(j->fd, head, SV_FRAME_HEAD, j->end) != 0 ||
        pwrite_all(j->fd, rec, len, j->end + SV_FRAME_HEAD) != 0) {
        int e = errno;
        if (ftruncate(j->fd, (off_t)j->end) != 0)
            j->failed = 1;
        return say(err, err_len, "%s: cannot append: %s", j->path, strerror(e));
    }
    j->end += SV_FRAME_HEAD + len;
    return 0;
}

int sv_journal_sync(struct sv_journal *j, char *err, size_t err_len)
{
    int rc;

    assert(j != NULL);
    if (j->failed)
        return say(err, err_len, "%s: an earlier write or sync failed; reopen the journal",
                   j->path);
    if (j->synced == j->end)
        return 0;
    do
        rc = fdatasync(j->fd);
    while (rc != 0 && errno == EINTR);
    if (rc != 0) {
        j->failed = 1;
        return say(err, err_len, "%s: cannot sync: %s", j->path, strerror(errno));
    }
    j->synced = j->end;
    return 0;
}

uint64_t sv_journal_written(const struct sv_journal *j)
{
    assert(j != NULL);
    return j->end;
}

uint64_t sv_journal_synced(const struct sv_journal *j)
{
    assert(j != NULL);
    return j->synced;
}

void sv_journal_close(struct sv_journal *j)
{
    if (j == NULL)
        return;
    if (j->fd >= 0)
        close(j->fd);
    free(j->path);
    free(j);
}
