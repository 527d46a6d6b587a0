/*
 * The token link to an emulator on a unix stream socket (participant/pt_emu.h).
 *
 * pt_usb.c's twin: the framing and the protocol are pt_usbhost.c's, and
 * this file gives it two callbacks over a socket instead of libusb's bulk
 * transfers. The socket is non-blocking; write sends every byte, waiting
 * in poll() for room until its deadline; read waits in poll() up to its
 * timeout and takes what has come, up to the buffer's size. Bytes go out
 * with send(MSG_NOSIGNAL), so a closed peer is EPIPE here and never a
 * SIGPIPE in the caller's process.
 *
 * The socket's errors become PT_USB_E_*: nothing at the path (ENOENT) or
 * nothing listening (ECONNREFUSED) is "no device", EACCES "permission
 * denied", a full listen queue (EAGAIN) "busy", an emulator's ERROR BUSY
 * "busy" (pt_usbhost maps it). The end of the stream, EPIPE or
 * ECONNRESET during a transfer is an unplug: the socket is closed at once
 * (after a "busy" too), transact reports PT_USB_E_NO_DEVICE, each later
 * call tries to connect once, and pt_emu_wait tries every 50 ms until its
 * timeout. Any other failure of a transaction keeps the socket (a failed
 * connection does not): the driver says HELLO again on it.
 *
 * The emulator is not trusted more than a USB device: pt_usbhost bounds
 * every length it is sent. Nothing here allocates after pt_emu_open but
 * the driver's response buffer.
 */
#define _GNU_SOURCE /* SOCK_CLOEXEC, SOCK_NONBLOCK, MSG_NOSIGNAL */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "participant/pt_emu.h"

#define PT_EMU_RETRY_MS 50u /* how often pt_emu_wait tries to connect */

_Static_assert(PT_EMU_PATH_MAX + 1 == sizeof(((struct sockaddr_un *)0)->sun_path),
               "PT_EMU_PATH_MAX is sun_path less its NUL");

struct pt_emu {
    char path[PT_EMU_PATH_MAX + 1];
    int fd;   /* -1 while not connected */
    int last; /* the last outcome, a PT_USB_E_* */
    struct pt_usbhost host;
};

static uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

/* An errno of a transfer as a PT_USB_E_*: a peer gone is an unplug. */
static int from_errno(int e)
{
    switch (e) {
    case EPIPE:
    case ECONNRESET:
    case ENOTCONN:
        return PT_USB_E_NO_DEVICE;
    case ENOMEM:
    case ENOBUFS:
        return PT_USB_E_NOMEM;
    default:
        return PT_USB_E_IO;
    }
}

static void disconnect(struct pt_emu *e)
{
    if (e->fd >= 0) {
        close(e->fd);
        e->fd = -1;
    }
    e->host.ready = false;
}

static int emu_write(void *ctx, const uint8_t *p, size_t n, unsigned timeout_ms)
{
    struct pt_emu *e = ctx;
    uint64_t deadline = now_ms() + timeout_ms;
    size_t done = 0;
    if (e->fd < 0)
        return PT_USB_E_NO_DEVICE;
    while (done < n) {
        struct pollfd pfd = {e->fd, POLLOUT, 0};
        uint64_t t;
        ssize_t k = send(e->fd, p + done, n - done, MSG_NOSIGNAL);
        if (k > 0) {
            done += (size_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return from_errno(errno);
        /* No room in the socket's buffer: wait for some, up to the deadline. */
        t = now_ms();
        if (t >= deadline)
            return PT_USB_E_TIMEOUT;
        if (poll(&pfd, 1, (int)(deadline - t)) < 0 && errno != EINTR)
            return PT_USB_E_IO;
    }
    return PT_USB_OK;
}

static int emu_read(void *ctx, uint8_t *p, size_t cap, size_t *got, unsigned timeout_ms)
{
    struct pt_emu *e = ctx;
    uint64_t deadline = now_ms() + timeout_ms;
    *got = 0;
    if (e->fd < 0)
        return PT_USB_E_NO_DEVICE;
    for (;;) {
        struct pollfd pfd = {e->fd, POLLIN, 0};
        uint64_t t = now_ms();
        ssize_t k;
        int rc = poll(&pfd, 1, t >= deadline ? 0 : (int)(deadline - t));
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0)
            return PT_USB_E_IO;
        if (rc == 0)
            return PT_USB_E_TIMEOUT;
        k = recv(e->fd, p, cap, 0);
        if (k > 0) {
            *got = (size_t)k;
            return PT_USB_OK;
        }
        if (k == 0)
            return PT_USB_E_NO_DEVICE; /* the emulator closed the stream: an unplug */
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
            continue;
        return from_errno(errno);
    }
}

/* Connect to the socket and say HELLO. */
static int emu_connect(struct pt_emu *e)
{
    struct sockaddr_un a;
    int rc;
    disconnect(e);
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    memcpy(a.sun_path, e->path, strlen(e->path) + 1);
    e->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (e->fd < 0)
        return from_errno(errno);
    if (connect(e->fd, (const struct sockaddr *)&a, sizeof a) != 0) {
        switch (errno) {
        case ENOENT:
        case ECONNREFUSED:
        case ENOTDIR:
            rc = PT_USB_E_NO_DEVICE;
            break;
        case EACCES:
        case EPERM:
            rc = PT_USB_E_ACCESS;
            break;
        case EAGAIN:
            rc = PT_USB_E_BUSY; /* its queue of hosts waiting to be accepted is full */
            break;
        default:
            rc = from_errno(errno);
            break;
        }
        disconnect(e);
        return rc;
    }
    if ((rc = pt_usbhost_hello(&e->host)) != 0)
        disconnect(e);
    return rc;
}

static void set_err(char *err, size_t err_len, const struct pt_emu *e, const char *path, int rc)
{
    if (err == NULL || err_len == 0)
        return;
    switch (rc) {
    case PT_USB_E_NO_DEVICE:
        snprintf(err, err_len, "no token emulator at %s", path);
        break;
    case PT_USB_E_ACCESS:
        snprintf(err, err_len, "token emulator at %s: permission denied on its socket", path);
        break;
    case PT_USB_E_BUSY:
        snprintf(err, err_len, "token emulator at %s: busy: it is serving another host", path);
        break;
    case PT_USB_E_VERSION:
        if (e != NULL && e->host.n_peer_versions > 0) {
            snprintf(err, err_len, "token emulator at %s: %s (host speaks %u, token %u)", path,
                     pt_usb_strerror(rc), (unsigned)e->host.versions[0],
                     (unsigned)e->host.peer_versions[0]);
            break;
        }
        /* fall through */
    default:
        snprintf(err, err_len, "token emulator at %s: %s", path, pt_usb_strerror(rc));
        break;
    }
}

int pt_emu_open(struct pt_emu **out, const struct pt_emu_config *cfg, char *err, size_t err_len)
{
    struct pt_emu *e;
    struct pt_usbhost_io io = {NULL, emu_write, emu_read};
    size_t n;
    int rc;

    *out = NULL;
    if (cfg == NULL || cfg->path == NULL || cfg->path[0] == '\0') {
        if (err != NULL && err_len > 0)
            snprintf(err, err_len, "no token emulator socket was given");
        return PT_USB_E_IO;
    }
    n = strlen(cfg->path);
    if (n > PT_EMU_PATH_MAX) {
        if (err != NULL && err_len > 0)
            snprintf(err, err_len,
                     "the token emulator's socket path is %zu bytes long: a unix socket's "
                     "path is at most %u",
                     n, PT_EMU_PATH_MAX);
        return PT_USB_E_IO;
    }
    if ((e = calloc(1, sizeof *e)) == NULL) {
        if (err != NULL && err_len > 0)
            snprintf(err, err_len, "%s", pt_usb_strerror(PT_USB_E_NOMEM));
        return PT_USB_E_NOMEM;
    }
    memcpy(e->path, cfg->path, n + 1);
    e->fd = -1;
    io.ctx = e;
    pt_usbhost_init(&e->host, &io);
    if (cfg->t_frame_ms > 0)
        e->host.t_frame_ms = cfg->t_frame_ms;
    if (cfg->t_response_ms > 0)
        e->host.t_response_ms = cfg->t_response_ms;
    if ((rc = emu_connect(e)) != 0) {
        set_err(err, err_len, e, cfg->path, rc);
        pt_emu_close(e);
        return rc;
    }
    *out = e;
    return 0;
}

void pt_emu_close(struct pt_emu *e)
{
    if (e == NULL)
        return;
    disconnect(e);
    pt_usbhost_free(&e->host);
    free(e);
}

static int emu_transact(void *ctx, const uint8_t *req, size_t req_len, const uint8_t **resp,
                        size_t *resp_len)
{
    struct pt_emu *e = ctx;
    int rc = 0;
    if (e->fd < 0)
        rc = emu_connect(e);
    if (rc == 0)
        rc = pt_usbhost_transact(&e->host, req, req_len, resp, resp_len);
    /* After an unplug the stream is useless; after any other failure the
     * driver says HELLO again on the same stream. */
    if (rc == PT_USB_E_NO_DEVICE || rc == PT_USB_E_BUSY)
        disconnect(e);
    e->last = rc;
    return rc == 0 ? PT_OK : PT_ERR_LINK;
}

struct pt_link pt_emu_link(struct pt_emu *e)
{
    struct pt_link l = {e, emu_transact};
    return l;
}

int pt_emu_error(const struct pt_emu *e)
{
    return e->last;
}

int pt_emu_connected(const struct pt_emu *e)
{
    return e->fd >= 0;
}

static void sleep_ms(unsigned ms)
{
    struct timespec t = {ms / 1000u, (long)(ms % 1000u) * 1000000L};
    nanosleep(&t, NULL);
}

int pt_emu_wait(struct pt_emu *e, unsigned timeout_ms)
{
    uint64_t deadline = now_ms() + timeout_ms;
    int rc;
    if (e->fd >= 0)
        return 0;
    for (;;) {
        rc = emu_connect(e);
        if (rc == 0 || now_ms() >= deadline)
            break;
        sleep_ms(PT_EMU_RETRY_MS);
    }
    e->last = rc;
    return rc;
}

struct pt_usbhost_stats pt_emu_stats(const struct pt_emu *e)
{
    return e->host.st;
}
