/*
 * The document store: the ciphertext files of the owner's documents, on
 * the agent's disk.
 *
 * Layout. DIR/<h0h1>/<h0..h63> is a file whose BLAKE2b-256 is h (64 hex
 * digits, the first two naming a subdirectory so that no directory grows
 * past a few thousand entries). DIR/revs/<32 hex digits> lists, for one
 * document id, the files stored for its revisions (below). DIR/.tmp-* are
 * files being written. Directories are 0700, files 0600.
 *
 * What is trusted: nothing here. The files are ciphertext the token made
 * and checks again on every read (a bit flipped, a file cut or swapped is
 * the token's TK_ERR_DECRYPT or TK_ERR_TAMPERED, never plaintext); the
 * store never holds plaintext or a key. Names are only ever built from
 * hashes and ids in hex, never from a caller's string, so no input can
 * name a path outside DIR; files are opened with O_NOFOLLOW.
 *
 * Writing. A file is written under a temporary name (O_EXCL, a random
 * suffix), hashed as it goes, fsync'd, then renamed to its hash and the
 * directories fsync'd: a reader sees a whole file or none. A temporary file
 * left by a crash is ciphertext without a name; pt_docstore_open removes
 * those older than an hour (a write takes far less), so that two agents
 * sharing a store never remove each other's files in flight.
 *
 * The revisions' index. The token's DocDelete answers only the latest
 * revision's reference, and learning the older ones' would mean opening
 * each (an audited read, which a credential with DELETE alone may not do).
 * So the agent notes each revision it stores: one line per revision,
 * appended and fsync'd after the file is in place. A line lost to a crash
 * leaves an orphan file of ciphertext whose key the delete erased: noise.
 */
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "participant/pt_doc_int.h"
#include "participant/pt_int.h"

#define TMP_PREFIX ".tmp-"
#define TMP_STALE_SECONDS 3600
#define INDEX_DIR "revs"
#define INDEX_LINE_MAX 128u

struct pt_docstore {
    int dirfd;
    char *dir;
};

static void hex(char *out, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

/* "ab/ab01...": the subdirectory (3 bytes with its NUL) and the path. */
static void file_name(char sub[3], char path[3 + 2 * PT_DOC_HASH_LEN + 1],
                      const uint8_t hash[PT_DOC_HASH_LEN])
{
    char h[2 * PT_DOC_HASH_LEN + 1];
    hex(h, hash, PT_DOC_HASH_LEN);
    memcpy(sub, h, 2);
    sub[2] = '\0';
    memcpy(path, h, 2);
    path[2] = '/';
    memcpy(path + 3, h, sizeof h);
}

/* Remove temporary files older than TMP_STALE_SECONDS. */
static void sweep_temporaries(struct pt_docstore *ds)
{
    int fd = openat(ds->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    time_t now = time(NULL);
    struct dirent *e;
    DIR *d;

    if (fd < 0)
        return;
    if ((d = fdopendir(fd)) == NULL) {
        close(fd);
        return;
    }
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (strncmp(e->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) != 0)
            continue;
        if (fstatat(ds->dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
            now - st.st_mtime > TMP_STALE_SECONDS)
            unlinkat(ds->dirfd, e->d_name, 0);
    }
    closedir(d);
}

int pt_docstore_open(struct pt_docstore **out, const char *dir)
{
    struct pt_docstore *ds;
    struct stat st;

    *out = NULL;
    if (dir == NULL || dir[0] == '\0')
        return PT_ERR_INPUT;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return PT_ERR_IO;
    if ((ds = calloc(1, sizeof *ds)) == NULL)
        return PT_ERR_NOMEM;
    if ((ds->dir = strdup(dir)) == NULL) {
        free(ds);
        return PT_ERR_NOMEM;
    }
    ds->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (ds->dirfd < 0 || fstat(ds->dirfd, &st) != 0 || !S_ISDIR(st.st_mode)) {
        pt_docstore_close(ds);
        return PT_ERR_IO;
    }
    sweep_temporaries(ds);
    *out = ds;
    return 0;
}

void pt_docstore_close(struct pt_docstore *ds)
{
    if (ds == NULL)
        return;
    if (ds->dirfd >= 0)
        close(ds->dirfd);
    free(ds->dir);
    free(ds);
}

const char *pt_ds_dir(const struct pt_docstore *ds)
{
    return ds->dir;
}

/* ------------------------------------------------------------ writing */

int pt_ds_tmp_begin(struct pt_docstore *ds, struct pt_ds_tmp *t)
{
    uint8_t r[12];
    char h[2 * sizeof r + 1];

    memset(t, 0, sizeof *t);
    t->fd = -1;
    randombytes_buf(r, sizeof r);
    hex(h, r, sizeof r);
    snprintf(t->name, sizeof t->name, TMP_PREFIX "%s", h);
    t->fd = openat(ds->dirfd, t->name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (t->fd < 0) {
        t->name[0] = '\0';
        return PT_ERR_IO;
    }
    crypto_generichash_init(&t->hash, NULL, 0, PT_DOC_HASH_LEN);
    return 0;
}

int pt_ds_tmp_write(struct pt_ds_tmp *t, const uint8_t *p, size_t n)
{
    if (t->fd < 0)
        return PT_ERR_IO;
    if (n == 0)
        return 0;
    crypto_generichash_update(&t->hash, p, n);
    if (pt_write_all(t->fd, p, n) != 0)
        return PT_ERR_IO;
    t->bytes += n;
    return 0;
}

void pt_ds_tmp_hash(struct pt_ds_tmp *t, uint8_t hash[PT_DOC_HASH_LEN])
{
    crypto_generichash_final(&t->hash, hash, PT_DOC_HASH_LEN);
}

static int sync_dir(int dirfd, const char *sub)
{
    int fd = openat(dirfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc;
    if (fd < 0)
        return -1;
    rc = fsync(fd);
    close(fd);
    return rc;
}

int pt_ds_tmp_commit(struct pt_docstore *ds, struct pt_ds_tmp *t,
                     const uint8_t hash[PT_DOC_HASH_LEN])
{
    char sub[3], path[3 + 2 * PT_DOC_HASH_LEN + 1];
    bool created = false;
    int rc;

    if (t->fd < 0)
        return PT_ERR_IO;
    rc = fsync(t->fd);
    if (close(t->fd) != 0)
        rc = -1;
    t->fd = -1;
    if (rc != 0)
        return PT_ERR_IO;
    file_name(sub, path, hash);
    if (mkdirat(ds->dirfd, sub, 0700) == 0)
        created = true;
    else if (errno != EEXIST)
        return PT_ERR_IO;
    if (renameat(ds->dirfd, t->name, ds->dirfd, path) != 0)
        return PT_ERR_IO;
    t->name[0] = '\0';
    /* The new name's directory; the store's own only for a new subdirectory
     * (the temporary name's removal need not be durable). */
    if (sync_dir(ds->dirfd, sub) != 0 || (created && fsync(ds->dirfd) != 0))
        return PT_ERR_IO;
    return 0;
}

void pt_ds_tmp_abort(struct pt_docstore *ds, struct pt_ds_tmp *t)
{
    if (t->fd >= 0)
        close(t->fd);
    t->fd = -1;
    if (t->name[0] != '\0')
        unlinkat(ds->dirfd, t->name, 0);
    t->name[0] = '\0';
}

/* ------------------------------------------------------------ reading */

int pt_ds_open(struct pt_docstore *ds, const uint8_t hash[PT_DOC_HASH_LEN], int *fd, uint64_t *size,
               bool *missing)
{
    char sub[3], path[3 + 2 * PT_DOC_HASH_LEN + 1];
    struct stat st;
    int f;

    *fd = -1;
    *size = 0;
    *missing = false;
    file_name(sub, path, hash);
    f = openat(ds->dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (f < 0) {
        *missing = errno == ENOENT;
        return PT_ERR_IO;
    }
    if (fstat(f, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(f);
        return PT_ERR_IO;
    }
    *fd = f;
    *size = (uint64_t)st.st_size;
    return 0;
}

bool pt_ds_has(struct pt_docstore *ds, const uint8_t hash[PT_DOC_HASH_LEN])
{
    char sub[3], path[3 + 2 * PT_DOC_HASH_LEN + 1];
    struct stat st;
    file_name(sub, path, hash);
    return fstatat(ds->dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

int pt_ds_remove(struct pt_docstore *ds, const uint8_t hash[PT_DOC_HASH_LEN])
{
    char sub[3], path[3 + 2 * PT_DOC_HASH_LEN + 1];
    file_name(sub, path, hash);
    if (unlinkat(ds->dirfd, path, 0) != 0 && errno != ENOENT)
        return PT_ERR_IO;
    unlinkat(ds->dirfd, sub, AT_REMOVEDIR); /* fails while other files are there */
    return 0;
}

/* ------------------------------------------------------------ the index */

static void index_name(char path[sizeof INDEX_DIR + 2 * PT_DOC_ID_LEN + 1],
                       const uint8_t id[PT_DOC_ID_LEN])
{
    char h[2 * PT_DOC_ID_LEN + 1];
    hex(h, id, PT_DOC_ID_LEN);
    snprintf(path, sizeof INDEX_DIR + 2 * PT_DOC_ID_LEN + 1, INDEX_DIR "/%s", h);
}

int pt_ds_index_add(struct pt_docstore *ds, const uint8_t id[PT_DOC_ID_LEN], uint64_t revision,
                    const uint8_t hash[PT_DOC_HASH_LEN])
{
    char path[sizeof INDEX_DIR + 2 * PT_DOC_ID_LEN + 1], line[INDEX_LINE_MAX],
        h[2 * PT_DOC_HASH_LEN + 1];
    bool created = false;
    int fd, n, rc = 0;

    if (mkdirat(ds->dirfd, INDEX_DIR, 0700) == 0)
        created = true;
    else if (errno != EEXIST)
        return PT_ERR_IO;
    index_name(path, id);
    fd = openat(ds->dirfd, path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return PT_ERR_IO;
    hex(h, hash, PT_DOC_HASH_LEN);
    n = snprintf(line, sizeof line, "%llu %s\n", (unsigned long long)revision, h);
    if (pt_write_all(fd, (const uint8_t *)line, (size_t)n) != 0 || fsync(fd) != 0)
        rc = PT_ERR_IO;
    if (close(fd) != 0)
        rc = PT_ERR_IO;
    if (rc == 0 && created && fsync(ds->dirfd) != 0)
        rc = PT_ERR_IO;
    return rc;
}

static int unhex(uint8_t *out, const char *s, size_t n)
{
    for (size_t i = 0; i < 2 * n; i++) {
        char c = s[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0)
            return -1;
        if (i % 2 == 0)
            out[i / 2] = (uint8_t)(v << 4);
        else
            out[i / 2] |= (uint8_t)v;
    }
    return 0;
}

int pt_ds_index_files(struct pt_docstore *ds, const uint8_t id[PT_DOC_ID_LEN],
                      int (*fn)(void *ctx, const uint8_t hash[PT_DOC_HASH_LEN]), void *ctx)
{
    char path[sizeof INDEX_DIR + 2 * PT_DOC_ID_LEN + 1], line[INDEX_LINE_MAX];
    uint8_t hash[PT_DOC_HASH_LEN];
    int fd, rc = 0;
    FILE *f;

    index_name(path, id);
    fd = openat(ds->dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? 0 : PT_ERR_IO;
    if ((f = fdopen(fd, "r")) == NULL) {
        close(fd);
        return PT_ERR_IO;
    }
    while (rc == 0 && fgets(line, sizeof line, f) != NULL) {
        const char *sp = strchr(line, ' ');
        if (sp == NULL || strlen(sp + 1) != 2 * PT_DOC_HASH_LEN + 1 ||
            sp[1 + 2 * PT_DOC_HASH_LEN] != '\n' || unhex(hash, sp + 1, PT_DOC_HASH_LEN) != 0) {
            rc = PT_ERR_IO;
            break;
        }
        rc = fn(ctx, hash);
    }
    if (rc == 0 && ferror(f))
        rc = PT_ERR_IO;
    fclose(f);
    return rc;
}

int pt_ds_index_remove(struct pt_docstore *ds, const uint8_t id[PT_DOC_ID_LEN])
{
    char path[sizeof INDEX_DIR + 2 * PT_DOC_ID_LEN + 1];
    index_name(path, id);
    if (unlinkat(ds->dirfd, path, 0) != 0 && errno != ENOENT)
        return PT_ERR_IO;
    return 0;
}
