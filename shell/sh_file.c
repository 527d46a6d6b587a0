/*
 * sh_file.c: reading and writing the small files a deployment passes
 * around (keys, certificates, requests, bundles), and hex.
 *
 * Reading is bounded: the size is known from fstat before anything is
 * allocated, the buffer is allocated once (never grown, so a secret is
 * never left behind in a freed copy) and a file that is not regular (a
 * FIFO, a device) is refused before it can block or stream forever. The
 * caller wipes what it read when the file held a secret.
 *
 * Writing is atomic: the data go to a temporary file beside the target,
 * created with mode 0600 and given the final mode before a byte is
 * written, then fsync'd and moved into place, and the directory is
 * fsync'd. A reader sees the old file or the whole new one, never a part,
 * and a crash leaves at worst a stray temporary file, never a half key.
 * An exclusive write refuses a path that exists, twice: once before
 * anything is written (the usual case, with a clear message), and again
 * when the file is put in place, by link(2), which fails if the name was
 * taken meanwhile (O_EXCL semantics on the final name). Where the file
 * system has no hard links, the name is reserved with O_CREAT | O_EXCL
 * and the temporary file renamed over the reservation. When an exclusive
 * write fails because the path exists, errno is EEXIST on return.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shell/shell.h"

#define SH_PATH_MAX 4096u /* bytes of a path this library handles */

/* The sentence for the caller; errno is kept as it was (EEXIST tells "exists"). */
static int say(char *err, size_t err_len, const char *fmt, const char *path, const char *detail)
{
    int e = errno;
    if (err != NULL && err_len > 0)
        snprintf(err, err_len, fmt, path, detail);
    errno = e;
    return -1;
}

/* A short description of errno values users meet, in lower case. */
static const char *why(int e)
{
    switch (e) {
    case ENOENT:
        return "no such file or directory";
    case EACCES:
    case EPERM:
        return "permission denied";
    case ENOSPC:
        return "no space left on the device";
    case EROFS:
        return "read-only file system";
    case EISDIR:
        return "is a directory";
    case ENOTDIR:
        return "a part of the path is not a directory";
    default:
        return strerror(e);
    }
}

/* ------------------------------------------------------------ reading */

int sh_read_file(const char *path, size_t max, uint8_t **out, size_t *len, char *err,
                 size_t err_len)
{
    struct stat st;
    uint8_t *buf = NULL, extra;
    size_t done = 0, size;
    int fd, e;

    if (out == NULL || len == NULL)
        return say(err, err_len, "%s%s", "", "sh_read_file: missing output");
    *out = NULL;
    *len = 0;
    if (path == NULL || path[0] == '\0')
        return say(err, err_len, "%s%s", "", "no file name given");
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        e = errno;
        if (e == ENOENT)
            return say(err, err_len, "%s: %s", path, "no such file");
        return say(err, err_len, "%s: cannot open: %s", path, why(e));
    }
    if (fstat(fd, &st) != 0) {
        e = errno;
        close(fd);
        return say(err, err_len, "%s: cannot read: %s", path, why(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return say(err, err_len, "%s: %s", path, "not a regular file");
    }
    if (st.st_size < 0 || (uintmax_t)st.st_size > max || (uintmax_t)st.st_size >= SIZE_MAX) {
        char limit[64];
        close(fd);
        snprintf(limit, sizeof limit, "larger than %zu bytes", max);
        return say(err, err_len, "%s: %s", path, limit);
    }
    size = (size_t)st.st_size;
    buf = malloc(size + 1);
    if (buf == NULL) {
        close(fd);
        return say(err, err_len, "%s: %s", path, "out of memory");
    }
    while (done < size) {
        ssize_t r = read(fd, buf + done, size - done);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r <= 0) {
            e = r < 0 ? errno : 0;
            close(fd);
            free(buf);
            return say(err, err_len, "%s: cannot read: %s", path,
                       e != 0 ? why(e) : "it shrank while being read");
        }
        done += (size_t)r;
    }
    /* Nothing may follow what fstat promised: a file growing under us is refused. */
    for (;;) {
        ssize_t r = read(fd, &extra, 1);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r != 0) {
            close(fd);
            free(buf);
            return say(err, err_len, "%s: %s", path,
                       r > 0 ? "it grew while being read" : "cannot read to its end");
        }
        break;
    }
    close(fd);
    buf[size] = 0;
    *out = buf;
    *len = size;
    return 0;
}

/* ------------------------------------------------------------ writing */

/* Write every byte; 0 or errno. */
static int write_all(int fd, const uint8_t *data, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, data + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return errno;
        if (w == 0)
            return EIO;
        done += (size_t)w;
    }
    return 0;
}

/* fsync a directory; 0 or errno. */
static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_CLOEXEC | O_DIRECTORY), e = 0;
    if (fd < 0)
        return errno;
    if (fsync(fd) != 0 && errno != EINVAL) /* some file systems cannot sync a directory */
        e = errno;
    close(fd);
    return e;
}

/* Put tmp in place at path without replacing anything there: 0 or errno. */
static int place_exclusive(const char *tmp, const char *path)
{
    int fd, e;

    if (link(tmp, path) == 0) {
        unlink(tmp);
        return 0;
    }
    e = errno;
    if (e != EPERM && e != ENOTSUP && e != EOPNOTSUPP && e != EMLINK && e != ENOSYS)
        return e;
    /* No hard links here: reserve the name, then replace the reservation. */
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return errno;
    close(fd);
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(path);
        return e;
    }
    return 0;
}

int sh_write_file(const char *path, const uint8_t *data, size_t len, mode_t mode, bool exclusive,
                  char *err, size_t err_len)
{
    char dir[SH_PATH_MAX], tmp[SH_PATH_MAX + 32];
    const char *slash, *base;
    struct stat st;
    size_t path_len;
    int fd, e;

    errno = EINVAL; /* for the refusals before any call that sets it */
    if (path == NULL || path[0] == '\0')
        return say(err, err_len, "%s%s", "", "no file name given");
    if (data == NULL && len > 0)
        return say(err, err_len, "%s%s", "", "sh_write_file: no data");
    path_len = strlen(path);
    if (path_len >= SH_PATH_MAX)
        return say(err, err_len, "%s%s", "", "the file name is too long");
    slash = strrchr(path, '/');
    base = slash != NULL ? slash + 1 : path;
    if (base[0] == '\0')
        return say(err, err_len, "%s: %s", path, "names a directory, not a file");
    if (slash == NULL) {
        snprintf(dir, sizeof dir, ".");
    } else if (slash == path) {
        snprintf(dir, sizeof dir, "/");
    } else {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
    }
    if (exclusive && lstat(path, &st) == 0) {
        errno = EEXIST;
        return say(err, err_len, "%s %s", path, "exists: refusing to overwrite it");
    }

    snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", dir, base);
    fd = mkstemp(tmp);
    if (fd < 0) {
        e = errno;
        return say(err, err_len, "%s: cannot create a file there: %s", dir, why(e));
    }
    e = fchmod(fd, mode & 07777) != 0 ? errno : 0;
    if (e == 0)
        e = write_all(fd, data, len);
    if (e == 0 && fsync(fd) != 0)
        e = errno;
    if (e != 0) {
        close(fd);
        unlink(tmp);
        errno = e;
        return say(err, err_len, "%s: cannot write: %s", path, why(e));
    }
    if (close(fd) != 0) {
        e = errno;
        unlink(tmp);
        errno = e;
        return say(err, err_len, "%s: cannot write: %s", path, why(e));
    }
    if (exclusive) {
        e = place_exclusive(tmp, path);
        if (e != 0) {
            unlink(tmp);
            if (e == EEXIST) {
                errno = EEXIST;
                return say(err, err_len, "%s %s", path, "exists: refusing to overwrite it");
            }
            errno = e;
            return say(err, err_len, "%s: cannot create: %s", path, why(e));
        }
    } else if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        errno = e;
        return say(err, err_len, "%s: cannot replace: %s", path, why(e));
    }
    if ((e = sync_dir(dir)) != 0) {
        errno = e;
        return say(err, err_len, "%s: written, but its directory cannot be synced: %s", path,
                   why(e));
    }
    return 0;
}

/* ---------------------------------------------------------------- hex */

void sh_hex(char *out, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

int sh_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* All digits are checked before out is written: a bad string changes nothing. */
int sh_unhex(uint8_t *out, size_t n, const char *hex)
{
    if (hex == NULL || strlen(hex) != 2 * n)
        return -1;
    for (size_t i = 0; i < 2 * n; i++)
        if (sh_hex_digit((unsigned char)hex[i]) < 0)
            return -1;
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)(sh_hex_digit((unsigned char)hex[2 * i]) << 4 |
                           sh_hex_digit((unsigned char)hex[2 * i + 1]));
    return 0;
}
