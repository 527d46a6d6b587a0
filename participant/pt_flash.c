/*
 * Flash for a token, as the host keeps it: the two struct tk_flash the
 * participant side provides.
 *
 * The token trusts nothing here (it authenticates every byte it reads
 * back), so neither implementation checks anything but its own bounds.
 * Both follow the contract of token.h: size() of a missing segment is 0,
 * remove() of a missing segment succeeds, a segment is created by its
 * first append.
 *
 * - Memory: up to PT_MEMFLASH_SEGS segments in malloc'd buffers that grow
 *   by doubling; pt_memflash_trim gives back the unused tail. The
 *   simulator runs 100,000 and more of them, so the bookkeeping is kept to
 *   a few dozen bytes per token. No sync: memory is as durable as it gets.
 * - Files: segment s is DIR/flash.<s>, mode 0600. Appends are write()s of
 *   every byte (through pt_write_all, which the crash tests hook), sync is
 *   fsync (and of the directory, once, for a file it created), truncate is
 *   ftruncate, remove is unlink and an fsync of the directory. A few
 *   descriptors are kept open, one per recently used segment.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "participant/participant.h"
#include "participant/pt_int.h"

uint64_t pt_crash_after_bytes;
uint64_t pt_bytes_written;

int pt_write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        size_t chunk = n;
        ssize_t w;
        if (pt_crash_after_bytes != 0 && pt_bytes_written + chunk >= pt_crash_after_bytes) {
            chunk = (size_t)(pt_crash_after_bytes - pt_bytes_written);
            while (chunk > 0) {
                w = write(fd, p, chunk);
                if (w <= 0)
                    break;
                p += w;
                chunk -= (size_t)w;
            }
            raise(SIGKILL);
            return -1; /* not reached */
        }
        w = write(fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
        pt_bytes_written += (uint64_t)w;
    }
    return 0;
}

/* ------------------------------------------------------------- memory */

void pt_memflash_init(struct pt_memflash *m)
{
    memset(m, 0, sizeof *m);
}

struct pt_memseg *pt_memflash_segment(struct pt_memflash *m, uint32_t seg)
{
    size_t i;
    for (i = 0; i < PT_MEMFLASH_SEGS; i++)
        if (m->s[i].used && m->s[i].seg == seg)
            return &m->s[i];
    return NULL;
}

static int mem_append(void *ctx, uint32_t seg, const uint8_t *data, size_t n)
{
    struct pt_memflash *m = ctx;
    struct pt_memseg *s = pt_memflash_segment(m, seg);
    size_t i;

    for (i = 0; s == NULL && i < PT_MEMFLASH_SEGS; i++)
        if (!m->s[i].used) {
            s = &m->s[i];
            s->used = 1;
            s->seg = seg;
            s->len = 0;
        }
    if (s == NULL || n > UINT32_MAX - s->len)
        return -1;
    if (s->len + n > s->cap) {
        uint64_t cap = s->cap ? s->cap : 256;
        uint8_t *p;
        while (cap < s->len + n)
            cap *= 2;
        if (cap > UINT32_MAX)
            cap = UINT32_MAX;
        p = realloc(s->p, (size_t)cap);
        if (p == NULL)
            return -1;
        s->p = p;
        s->cap = (uint32_t)cap;
    }
    if (n > 0)
        memcpy(s->p + s->len, data, n);
    s->len += (uint32_t)n;
    return 0;
}

static int mem_read(void *ctx, uint32_t seg, uint64_t off, uint8_t *out, size_t n)
{
    struct pt_memseg *s = pt_memflash_segment(ctx, seg);
    if (s == NULL || off > s->len || n > s->len - off)
        return -1;
    memcpy(out, s->p + off, n);
    return 0;
}

static int mem_size(void *ctx, uint32_t seg, uint64_t *size)
{
    struct pt_memseg *s = pt_memflash_segment(ctx, seg);
    *size = s != NULL ? s->len : 0;
    return 0;
}

static int mem_truncate(void *ctx, uint32_t seg, uint64_t size)
{
    struct pt_memseg *s = pt_memflash_segment(ctx, seg);
    if (s == NULL)
        return size == 0 ? 0 : -1;
    if (size > s->len)
        return -1;
    s->len = (uint32_t)size;
    return 0;
}

static int mem_remove(void *ctx, uint32_t seg)
{
    struct pt_memseg *s = pt_memflash_segment(ctx, seg);
    if (s != NULL) {
        free(s->p);
        memset(s, 0, sizeof *s);
    }
    return 0;
}

struct tk_flash pt_memflash_flash(struct pt_memflash *m)
{
    struct tk_flash f = {m, mem_append, mem_read, mem_size, mem_truncate, NULL, mem_remove};
    return f;
}

void pt_memflash_trim(struct pt_memflash *m)
{
    size_t i;
    for (i = 0; i < PT_MEMFLASH_SEGS; i++) {
        struct pt_memseg *s = &m->s[i];
        if (!s->used || s->cap == s->len)
            continue;
        if (s->len == 0) {
            free(s->p);
            s->p = NULL;
            s->cap = 0;
        } else {
            uint8_t *p = realloc(s->p, s->len);
            if (p != NULL) {
                s->p = p;
                s->cap = s->len;
            }
        }
    }
}

void pt_memflash_free(struct pt_memflash *m)
{
    size_t i;
    if (m == NULL)
        return;
    for (i = 0; i < PT_MEMFLASH_SEGS; i++)
        free(m->s[i].p);
    memset(m, 0, sizeof *m);
}

/* -------------------------------------------------------------- files */

#define FILE_FDS 4

struct pt_fileflash {
    int dirfd;
    bool dir_dirty; /* a segment file was created since the directory's last fsync */
    unsigned next;
    struct {
        uint32_t seg;
        int fd; /* -1: free */
    } fds[FILE_FDS];
};

static void seg_name(char name[32], uint32_t seg)
{
    snprintf(name, 32, "flash.%u", (unsigned)seg);
}

/* The descriptor of segment seg: 0, 1 when it does not exist (and !create), -1 on error. */
static int seg_fd(struct pt_fileflash *f, uint32_t seg, bool create, int *fd)
{
    char name[32];
    unsigned i;
    int d;

    for (i = 0; i < FILE_FDS; i++)
        if (f->fds[i].fd >= 0 && f->fds[i].seg == seg) {
            *fd = f->fds[i].fd;
            return 0;
        }
    seg_name(name, seg);
    d = openat(f->dirfd, name, O_RDWR | O_APPEND | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
    if (d < 0 && errno == ENOENT && !create)
        return 1;
    if (d < 0)
        return -1;
    if (create)
        f->dir_dirty = true;
    i = f->next++ % FILE_FDS;
    if (f->fds[i].fd >= 0)
        close(f->fds[i].fd);
    f->fds[i].seg = seg;
    f->fds[i].fd = d;
    *fd = d;
    return 0;
}

static int file_append(void *ctx, uint32_t seg, const uint8_t *data, size_t n)
{
    int fd;
    if (seg_fd(ctx, seg, true, &fd) != 0)
        return -1;
    return pt_write_all(fd, data, n);
}

static int file_read(void *ctx, uint32_t seg, uint64_t off, uint8_t *out, size_t n)
{
    int fd;
    if (seg_fd(ctx, seg, false, &fd) != 0)
        return -1;
    while (n > 0) {
        ssize_t r = pread(fd, out, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        out += r;
        off += (uint64_t)r;
        n -= (size_t)r;
    }
    return 0;
}

static int file_size(void *ctx, uint32_t seg, uint64_t *size)
{
    struct stat st;
    int fd, rc = seg_fd(ctx, seg, false, &fd);
    *size = 0;
    if (rc == 1)
        return 0;
    if (rc != 0 || fstat(fd, &st) != 0)
        return -1;
    *size = (uint64_t)st.st_size;
    return 0;
}

static int file_truncate(void *ctx, uint32_t seg, uint64_t size)
{
    int fd, rc = seg_fd(ctx, seg, false, &fd);
    if (rc == 1)
        return size == 0 ? 0 : -1;
    if (rc != 0)
        return -1;
    return ftruncate(fd, (off_t)size) == 0 ? 0 : -1;
}

static int file_sync(void *ctx, uint32_t seg)
{
    struct pt_fileflash *f = ctx;
    int fd, rc = seg_fd(f, seg, false, &fd);
    if (rc < 0 || (rc == 0 && fsync(fd) != 0))
        return -1;
    if (f->dir_dirty) {
        if (fsync(f->dirfd) != 0)
            return -1;
        f->dir_dirty = false;
    }
    return 0;
}

static int file_remove(void *ctx, uint32_t seg)
{
    struct pt_fileflash *f = ctx;
    char name[32];
    unsigned i;
    for (i = 0; i < FILE_FDS; i++)
        if (f->fds[i].fd >= 0 && f->fds[i].seg == seg) {
            close(f->fds[i].fd);
            f->fds[i].fd = -1;
        }
    seg_name(name, seg);
    if (unlinkat(f->dirfd, name, 0) != 0)
        return errno == ENOENT ? 0 : -1;
    return fsync(f->dirfd) == 0 ? 0 : -1;
}

int pt_fileflash_open(struct pt_fileflash **out, const char *dir)
{
    struct pt_fileflash *f = calloc(1, sizeof *f);
    unsigned i;
    *out = NULL;
    if (f == NULL)
        return PT_ERR_NOMEM;
    for (i = 0; i < FILE_FDS; i++)
        f->fds[i].fd = -1;
    f->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (f->dirfd < 0) {
        free(f);
        return PT_ERR_IO;
    }
    *out = f;
    return PT_OK;
}

struct tk_flash pt_fileflash_flash(struct pt_fileflash *f)
{
    struct tk_flash fl = {f,         file_append, file_read, file_size, file_truncate,
                          file_sync, file_remove};
    return fl;
}

void pt_fileflash_close(struct pt_fileflash *f)
{
    unsigned i;
    if (f == NULL)
        return;
    for (i = 0; i < FILE_FDS; i++)
        if (f->fds[i].fd >= 0)
            close(f->fds[i].fd);
    close(f->dirfd);
    free(f);
}
