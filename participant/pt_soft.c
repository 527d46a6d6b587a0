/*
 * A software token: the token core over a directory of the owner's disk.
 *
 * DIR/flash.<s>  the token's flash (pt_flash.c): only ciphertext.
 * DIR/secure.img the image of the token's secure memory, as the token
 *                hands it over after every commit (a SecureImage and its
 *                BLAKE2b-256 digest): keys, certificate, trusted
 *                authorities, the log's position and chain head.
 * DIR/counter    the monotonic counter: 8 bytes little-endian and their
 *                BLAKE2b-256 digest.
 *
 * Both small files are replaced atomically and durably: write NAME.tmp,
 * fsync it, rename it over NAME, fsync the directory. A corrupted counter
 * file is reported to the token as tampering; a missing one reads as 0
 * (which any image of a token that has committed once is ahead of by more
 * than one: tampering too). The directory is made with mode 0700, every
 * file with 0600, and an open token holds an exclusive flock on the
 * directory, so that two processes never drive one token.
 *
 * What this does not protect. A real token keeps the image and the counter
 * inside the chip, where the host can neither read nor rewind them. Here
 * they are files: a software token's secrets (its device key, its group
 * secret, its storage key) are only as safe as this directory's
 * permissions, and a host that rolls back the image and the counter files
 * together (with the flash) rolls the token back undetected. What it does
 * catch is everything short of that: a flash cut, reordered, substituted
 * or rolled back without the image, an image older than the counter, and
 * any byte changed in any of the files.
 */
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "participant/participant.h"
#include "participant/pt_int.h"

#define IMAGE_FILE "secure.img"
#define COUNTER_FILE "counter"
#define COUNTER_LEN (8 + 32)

struct pt_soft {
    int dirfd; /* holds the flock */
    struct pt_fileflash *flash;
    struct tk_token tk;
    uint8_t *arena;
    size_t arena_len;
    struct pt_inproc link;
};

static int say(char *err, size_t err_len, int rc, const char *fmt, const char *a, const char *b)
{
    if (err != NULL && err_len > 0)
        snprintf(err, err_len, fmt, a, b);
    return rc;
}

/* Replace dir/name with data, atomically and durably. */
static int replace_file(int dirfd, const char *name, const uint8_t *data, size_t n)
{
    char tmp[64];
    int fd, rc = -1;
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (pt_write_all(fd, data, n) == 0 && fsync(fd) == 0)
        rc = 0;
    if (close(fd) != 0)
        rc = -1;
    if (rc == 0 && (renameat(dirfd, tmp, dirfd, name) != 0 || fsync(dirfd) != 0))
        rc = -1;
    return rc;
}

/* Read dir/name whole (at most cap bytes; one more means too long). 1: absent. */
static int read_file(int dirfd, const char *name, uint8_t *out, size_t cap, size_t *len)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    size_t n = 0;
    *len = 0;
    if (fd < 0)
        return errno == ENOENT ? 1 : -1;
    while (n < cap) {
        ssize_t r = read(fd, out + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            close(fd);
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    *len = n;
    return 0;
}

static int secure_save(void *ctx, const uint8_t *image, size_t n)
{
    struct pt_soft *s = ctx;
    return replace_file(s->dirfd, IMAGE_FILE, image, n);
}

static int secure_counter_get(void *ctx, uint64_t *value)
{
    struct pt_soft *s = ctx;
    uint8_t buf[COUNTER_LEN + 1], digest[32];
    size_t len, i;
    int rc = read_file(s->dirfd, COUNTER_FILE, buf, sizeof buf, &len);
    *value = 0;
    if (rc == 1)
        return 0;
    if (rc != 0)
        return -1;
    if (len != COUNTER_LEN)
        return TK_ERR_TAMPERED;
    crypto_generichash(digest, sizeof digest, buf, 8, NULL, 0);
    if (sodium_memcmp(digest, buf + 8, 32) != 0)
        return TK_ERR_TAMPERED;
    for (i = 0; i < 8; i++)
        *value |= (uint64_t)buf[i] << (8 * i);
    return 0;
}

static int secure_counter_set(void *ctx, uint64_t value)
{
    struct pt_soft *s = ctx;
    uint8_t buf[COUNTER_LEN];
    uint64_t now;
    size_t i;
    if (secure_counter_get(ctx, &now) != 0 || value < now)
        return -1; /* a monotonic counter never goes down */
    for (i = 0; i < 8; i++)
        buf[i] = (uint8_t)(value >> (8 * i));
    crypto_generichash(buf + 8, 32, buf, 8, NULL, 0);
    return replace_file(s->dirfd, COUNTER_FILE, buf, sizeof buf);
}

bool pt_soft_can_create(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    bool empty = true;
    if (d == NULL)
        return errno == ENOENT;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            empty = false;
    closedir(d);
    return empty;
}

/* The common part: lock the directory, set up memory and flash. */
static int soft_start(struct pt_soft **out, const char *dir, size_t arena_len, char *err,
                      size_t err_len)
{
    struct pt_soft *s;
    *out = NULL;
    if (tk_library_init() != TK_OK)
        return say(err, err_len, PT_ERR_IO, "%s%s", "cannot initialise libsodium", "");
    s = calloc(1, sizeof *s);
    if (s == NULL)
        return say(err, err_len, PT_ERR_NOMEM, "%s%s", "out of memory", "");
    s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->dirfd < 0) {
        int e = errno;
        free(s);
        return say(err, err_len, PT_ERR_IO, "%s: %s", dir, strerror(e));
    }
    if (flock(s->dirfd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(s->dirfd);
        free(s);
        if (e == EWOULDBLOCK)
            return say(err, err_len, PT_ERR_BUSY, "%s: busy: another process has this token open%s",
                       dir, "");
        return say(err, err_len, PT_ERR_IO, "%s: cannot lock: %s", dir, strerror(e));
    }
    s->arena_len = arena_len ? arena_len : TK_ARENA_DEFAULT;
    s->arena = calloc(1, s->arena_len);
    if (s->arena == NULL || pt_fileflash_open(&s->flash, dir) != PT_OK) {
        pt_soft_close(s);
        return say(err, err_len, PT_ERR_IO, "%s: cannot set up the token's flash%s", dir, "");
    }
    *out = s;
    return PT_OK;
}

static void soft_interfaces(struct pt_soft *s, struct tk_flash *flash, struct tk_secure *secure)
{
    *flash = pt_fileflash_flash(s->flash);
    *secure = (struct tk_secure){s, secure_save, secure_counter_get, secure_counter_set};
}

static int token_refused(char *err, size_t err_len, const char *dir, int rc)
{
    char why[160];
    snprintf(why, sizeof why, "%s (%s)", tk_strerror(rc), tk_errname(rc));
    return say(err, err_len, rc == TK_ERR_STORE ? PT_ERR_IO : PT_ERR_TOKEN,
               "%s: the token refuses its store: %s", dir, why);
}

int pt_soft_create(struct pt_soft **out, const char *dir, size_t arena_len, char *err,
                   size_t err_len)
{
    struct pt_soft *s;
    struct tk_flash flash;
    struct tk_secure secure;
    int rc;

    *out = NULL;
    if (mkdir(dir, 0700) != 0) {
        if (errno != EEXIST)
            return say(err, err_len, PT_ERR_IO, "%s: %s", dir, strerror(errno));
        if (!pt_soft_can_create(dir))
            return say(err, err_len, PT_ERR_EXISTS,
                       "%s: exists and is not empty: a new token needs a new directory%s", dir, "");
    }
    if ((rc = soft_start(&s, dir, arena_len, err, err_len)) != PT_OK)
        return rc;
    if (!pt_soft_can_create(dir)) { /* another process got here first */
        pt_soft_close(s);
        return say(err, err_len, PT_ERR_EXISTS, "%s: exists and is not empty%s", dir, "");
    }
    soft_interfaces(s, &flash, &secure);
    rc = tk_token_init(&s->tk, &flash, &secure, s->arena, s->arena_len);
    if (rc != TK_OK) {
        pt_soft_close(s);
        return token_refused(err, err_len, dir, rc);
    }
    pt_inproc_init(&s->link, &s->tk, s->arena, s->arena_len);
    *out = s;
    return PT_OK;
}

int pt_soft_open(struct pt_soft **out, const char *dir, size_t arena_len, char *err, size_t err_len)
{
    struct pt_soft *s;
    struct tk_flash flash;
    struct tk_secure secure;
    uint8_t image[TK_IMAGE_MAX + 1];
    size_t len;
    int rc;

    *out = NULL;
    if ((rc = soft_start(&s, dir, arena_len, err, err_len)) != PT_OK)
        return rc;
    rc = read_file(s->dirfd, IMAGE_FILE, image, sizeof image, &len);
    if (rc != 0) {
        pt_soft_close(s);
        if (rc == 1)
            return say(err, err_len, PT_ERR_TOKEN, "%s: not a Cohort token (no %s)", dir,
                       IMAGE_FILE);
        return say(err, err_len, PT_ERR_IO, "%s: cannot read %s", dir, IMAGE_FILE);
    }
    /* Leftovers of a replacement cut short are never read: drop them. */
    (void)unlinkat(s->dirfd, IMAGE_FILE ".tmp", 0);
    (void)unlinkat(s->dirfd, COUNTER_FILE ".tmp", 0);
    soft_interfaces(s, &flash, &secure);
    rc = tk_token_open(&s->tk, image, len, &flash, &secure, s->arena, s->arena_len);
    sodium_memzero(image, sizeof image);
    if (rc != TK_OK) {
        pt_soft_close(s);
        return token_refused(err, err_len, dir, rc);
    }
    pt_inproc_init(&s->link, &s->tk, s->arena, s->arena_len);
    *out = s;
    return PT_OK;
}

struct pt_link pt_soft_link(struct pt_soft *s)
{
    return pt_inproc_link(&s->link);
}

struct tk_token *pt_soft_token(struct pt_soft *s)
{
    return &s->tk;
}

void pt_soft_close(struct pt_soft *s)
{
    if (s == NULL)
        return;
    tk_token_wipe(&s->tk);
    pt_inproc_free(&s->link);
    if (s->arena != NULL) {
        sodium_memzero(s->arena, s->arena_len);
        free(s->arena);
    }
    pt_fileflash_close(s->flash);
    if (s->dirfd >= 0)
        close(s->dirfd);
    free(s);
}
