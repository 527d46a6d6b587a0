/*
 * cohort-tokend: a software token served as a USB token is, on a local
 * socket.
 *
 *   cohort-tokend --dir DIR --socket PATH [--create] [--quiet]
 *
 * The token in DIR (participant/pt_soft.c) sits behind the device side of
 * the USB protocol (participant/pt_softdev.h, token/tk_usb.c); the unix
 * stream socket at PATH carries the two byte streams the bulk endpoints
 * would carry (token/USB.md section 7). A host (participant/pt_emu.c)
 * connects and talks to it exactly as it talks to a token on USB.
 *
 * One host at a time, as the kernel lets one program claim a USB
 * interface: a second host that connects while one is served is read up
 * to its first frame (for at most TD_REFUSE_MS), answered ERROR BUSY with
 * that frame's seq, and closed. When the served host closes its end, that
 * is an unplug: the device side starts afresh (a re-plugged token has lost
 * its RAM, not its flash) and the next host is accepted.
 *
 * Trust: whatever a host sends is hostile. It is read in TD_CHUNK pieces
 * into a fixed buffer and fed to tk_usb, whose region is fixed when the
 * token opens; a host that does not read what it is sent holds one frame
 * here and is polled for room, so it cannot make this process allocate or
 * block it. The socket is made mode 0600 (under umask 077) and its
 * directory is the owner's business: anyone who can connect can use the
 * token. Nothing a host sends, and nothing the token answers, is logged:
 * only counters.
 *
 * Single-threaded: one poll() loop over the listening socket, the served
 * host, the hosts being refused and a self-pipe for SIGINT and SIGTERM,
 * which stop it cleanly (the token closed, the socket removed, exit 0).
 */
#define _GNU_SOURCE /* accept4, SOCK_CLOEXEC, SOCK_NONBLOCK, MSG_NOSIGNAL */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "participant/participant.h"
#include "participant/pt_emu.h"
#include "participant/pt_softdev.h"
#include "participant/pt_usbframe.h"

#define TD_PROG "cohort-tokend"
#define TD_CHUNK 16384u    /* bytes read from a host at once */
#define TD_REFUSING_MAX 4u /* second hosts being answered BUSY at once; more are closed */
#define TD_REFUSE_MS 1000u /* how long a second host has to send its first frame */
#define TD_BACKLOG 8       /* hosts waiting to be accepted */
#define TD_ERR_LEN 512u    /* a sentence from the token's opener */

enum td_exit {
    TD_EXIT_OK = 0,
    TD_EXIT_USAGE = 1,
    TD_EXIT_FAILURE = 3, /* the token or the socket */
};

/* The host being served. */
struct td_host {
    int fd; /* -1 when none */
    unsigned id;
    uint8_t out[TK_USB_FRAME_MAX]; /* the IN frame on its way, out[at..n) still to send */
    size_t at, n;
    uint64_t bytes_in, bytes_out, frames_out;
};

/* A second host, to be answered BUSY. */
struct td_refusal {
    int fd; /* -1 when the slot is free */
    uint64_t deadline;
    struct pt_usbframe_rx rx;
};

struct td {
    const char *dir, *path;
    bool quiet;
    struct pt_softdev *dev;
    int lfd;
    dev_t sock_dev; /* the socket file this process made, to remove only that one */
    ino_t sock_ino;
    unsigned hosts, refused;
    struct td_host host;
    struct td_refusal refusing[TD_REFUSING_MAX];
    uint8_t chunk[TD_CHUNK];
};

static int sig_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    uint8_t b = (uint8_t)sig;
    ssize_t k = write(sig_pipe[1], &b, 1); /* a full pipe already says "stop" */
    (void)k;
    errno = saved;
}

static uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " TD_PROG " --dir DIR --socket PATH [--create] [--quiet]\n"
            "\n"
            "Serve the software token in DIR as a USB token is served, on the unix\n"
            "socket PATH: the frames of the USB protocol (token/USB.md), to one host at\n"
            "a time. Hosts open it as --token emulator:PATH.\n"
            "\n"
            "  --dir DIR      the token's directory\n"
            "  --socket PATH  the socket to listen on (at most %u bytes; made mode 0600)\n"
            "  --create       make a blank token in DIR if DIR is absent or empty, as a\n"
            "                 device fresh from its maker (init makes its keys)\n"
            "  --quiet        do not log hosts connecting and leaving\n"
            "  --help         this text\n"
            "\n"
            "It prints one line when it is ready, and stops cleanly on SIGINT or SIGTERM.\n"
            "Exit status: 0 stopped, 1 usage, 3 the token or the socket failed.\n",
            PT_EMU_PATH_MAX);
}

static int usage_error(const char *what)
{
    fprintf(stderr, TD_PROG ": %s (" TD_PROG " --help)\n", what);
    return TD_EXIT_USAGE;
}

/* ------------------------------------------------------------ the socket */

/* Whether PATH may be listened on: 0 (free), 1 (a stale socket, to remove),
 * or -1 with a sentence said. */
static int probe(const char *path)
{
    struct sockaddr_un a;
    struct stat st;
    int fd, rc, e;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT)
            return 0;
        fprintf(stderr, TD_PROG ": %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISSOCK(st.st_mode)) {
        fprintf(stderr, TD_PROG ": %s exists and is not a socket: it is left alone\n", path);
        return -1;
    }
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    memcpy(a.sun_path, path, strlen(path) + 1);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0) {
        fprintf(stderr, TD_PROG ": cannot make a socket: %s\n", strerror(errno));
        return -1;
    }
    rc = connect(fd, (const struct sockaddr *)&a, sizeof a);
    e = errno;
    close(fd);
    if (rc == 0 || e == EAGAIN) {
        fprintf(stderr, TD_PROG ": a token emulator is already serving on %s\n", path);
        return -1;
    }
    if (e == ECONNREFUSED)
        return 1; /* nothing listens: the socket of an emulator that died */
    fprintf(stderr, TD_PROG ": %s: %s\n", path, strerror(e));
    return -1;
}

static int listen_on(struct td *t, bool stale)
{
    struct sockaddr_un a;
    struct stat st;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    memcpy(a.sun_path, t->path, strlen(t->path) + 1);
    if (stale && unlink(t->path) != 0 && errno != ENOENT) {
        fprintf(stderr, TD_PROG ": cannot remove the stale socket %s: %s\n", t->path,
                strerror(errno));
        return -1;
    }
    t->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (t->lfd < 0) {
        fprintf(stderr, TD_PROG ": cannot make a socket: %s\n", strerror(errno));
        return -1;
    }
    if (bind(t->lfd, (const struct sockaddr *)&a, sizeof a) != 0) {
        fprintf(stderr, TD_PROG ": cannot listen on %s: %s\n", t->path, strerror(errno));
        return -1;
    }
    if (lstat(t->path, &st) == 0) {
        t->sock_dev = st.st_dev;
        t->sock_ino = st.st_ino;
    }
    if (chmod(t->path, 0600) != 0 || listen(t->lfd, TD_BACKLOG) != 0) {
        fprintf(stderr, TD_PROG ": cannot listen on %s: %s\n", t->path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Remove the socket file, if it is still the one this process made. */
static void unlink_ours(const struct td *t)
{
    struct stat st;
    if (t->sock_ino != 0 && lstat(t->path, &st) == 0 && st.st_dev == t->sock_dev &&
        st.st_ino == t->sock_ino)
        unlink(t->path);
}

/* ------------------------------------------------------------ the served host */

static void host_start(struct td *t, int fd)
{
    struct td_host *h = &t->host;
    h->fd = fd;
    h->id = ++t->hosts;
    h->at = h->n = 0;
    h->bytes_in = h->bytes_out = h->frames_out = 0;
    if (!t->quiet)
        fprintf(stderr, TD_PROG ": host %u connected\n", h->id);
}

/* The host closed its end (or broke it): an unplug. */
static void host_end(struct td *t, const char *why)
{
    struct td_host *h = &t->host;
    struct tk_usb_stats s;
    pt_softdev_stats(t->dev, &s);
    if (!t->quiet)
        fprintf(stderr,
                TD_PROG ": host %u %s: %llu requests run, %llu answered again, %llu bytes in, "
                        "%llu bytes out in %llu frames; %llu frames good, %llu bad, %llu bytes "
                        "skipped, %llu NAKs sent, %llu resends\n",
                h->id, why, (unsigned long long)s.dispatched, (unsigned long long)s.duplicates,
                (unsigned long long)h->bytes_in, (unsigned long long)h->bytes_out,
                (unsigned long long)h->frames_out, (unsigned long long)s.frames,
                (unsigned long long)s.bad_crc, (unsigned long long)s.skipped,
                (unsigned long long)s.naks, (unsigned long long)s.resends);
    close(h->fd);
    h->fd = -1;
    h->at = h->n = 0;
    pt_softdev_restart(t->dev);
}

/* Send what the device has for the host until the socket is full or the
 * device has nothing more. false when the host is gone. */
static bool host_pump(struct td *t)
{
    struct td_host *h = &t->host;
    for (;;) {
        if (h->at == h->n) {
            pt_softdev_poll(t->dev, h->out, sizeof h->out, &h->n);
            h->at = 0;
            if (h->n == 0)
                return true;
            h->frames_out++;
        }
        while (h->at < h->n) {
            ssize_t k = send(h->fd, h->out + h->at, h->n - h->at, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (k > 0) {
                h->at += (size_t)k;
                h->bytes_out += (uint64_t)k;
                continue;
            }
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return true; /* poll() says when there is room */
            host_end(t, "went away");
            return false;
        }
    }
}

/* Read what the host sent (one chunk) into the device. false when it is gone. */
static bool host_read(struct td *t)
{
    ssize_t k = recv(t->host.fd, t->chunk, sizeof t->chunk, MSG_DONTWAIT);
    if (k > 0) {
        t->host.bytes_in += (uint64_t)k;
        pt_softdev_feed(t->dev, t->chunk, (size_t)k);
        return true;
    }
    if (k < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
        return true;
    host_end(t, k == 0 ? "disconnected" : "went away");
    return false;
}

/* ------------------------------------------------------------ second hosts */

static void refusal_add(struct td *t, int fd)
{
    size_t i;
    for (i = 0; i < TD_REFUSING_MAX; i++) {
        struct td_refusal *r = &t->refusing[i];
        if (r->fd < 0) {
            r->fd = fd;
            r->deadline = now_ms() + TD_REFUSE_MS;
            pt_usbframe_rx_init(&r->rx);
            return;
        }
    }
    close(fd); /* too many at once: the queue is as full as it gets */
}

static void refusal_end(struct td_refusal *r)
{
    close(r->fd);
    r->fd = -1;
}

/* Read the second host's bytes; at its first frame, answer ERROR BUSY
 * (USB.md 3: the frame's seq, offset 0, the frame's total) and close. */
static void refusal_read(struct td *t, struct td_refusal *r)
{
    ssize_t k = recv(r->fd, t->chunk, sizeof t->chunk, MSG_DONTWAIT);
    size_t at = 0;
    if (k < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (k <= 0) {
        refusal_end(r);
        return;
    }
    while (at < (size_t)k) {
        struct pt_usbframe f;
        size_t used = 0;
        int rc = pt_usbframe_rx_next(&r->rx, t->chunk + at, (size_t)k - at, &used, &f);
        at += used;
        if (rc == PT_USBFRAME_OK) {
            uint8_t frame[TK_USB_OVERHEAD + 1], code = TK_USB_E_BUSY;
            size_t n = pt_usbframe_encode(frame, sizeof frame, TK_USB_VERSION, TK_USB_ERROR, 0,
                                          f.seq, 0, f.total, &code, 1);
            ssize_t sent = send(r->fd, frame, n, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)sent; /* a host that is gone already needs no answer */
            t->refused++;
            if (!t->quiet)
                fprintf(stderr, TD_PROG ": another host refused (busy serving host %u)\n",
                        t->host.id);
            refusal_end(r);
            return;
        }
    }
}

/* ------------------------------------------------------------ the loop */

static void accept_hosts(struct td *t)
{
    for (;;) {
        int fd = accept4(t->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            /* Out of descriptors or memory: the host waits in the backlog, and
             * a short sleep keeps poll() from spinning on it meanwhile. */
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                struct timespec ts = {0, 100L * 1000000L};
                nanosleep(&ts, NULL);
            }
            return; /* EAGAIN: none left; anything else: the host is gone already */
        }
        if (t->host.fd < 0)
            host_start(t, fd);
        else
            refusal_add(t, fd);
    }
}

static int serve(struct td *t)
{
    for (;;) {
        struct pollfd p[3 + TD_REFUSING_MAX];
        int slot[TD_REFUSING_MAX];
        size_t np = 0, i;
        int timeout = -1, hslot = -1;
        uint64_t now = now_ms();

        p[np++] = (struct pollfd){sig_pipe[0], POLLIN, 0};
        p[np++] = (struct pollfd){t->lfd, POLLIN, 0};
        if (t->host.fd >= 0) {
            hslot = (int)np;
            p[np++] = (struct pollfd){t->host.fd,
                                      (short)(POLLIN | (t->host.at < t->host.n ? POLLOUT : 0)), 0};
        }
        for (i = 0; i < TD_REFUSING_MAX; i++) {
            struct td_refusal *r = &t->refusing[i];
            slot[i] = -1;
            if (r->fd < 0)
                continue;
            if (r->deadline <= now) {
                refusal_end(r); /* no frame in time: closed without an answer */
                continue;
            }
            if (timeout < 0 || r->deadline - now < (uint64_t)timeout)
                timeout = (int)(r->deadline - now);
            slot[i] = (int)np;
            p[np++] = (struct pollfd){r->fd, POLLIN, 0};
        }
        if (poll(p, (nfds_t)np, timeout) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, TD_PROG ": poll: %s\n", strerror(errno));
            return -1;
        }
        if (p[0].revents != 0)
            return 0; /* SIGINT or SIGTERM */
        if (hslot >= 0 && p[hslot].revents != 0) {
            bool alive = true;
            if (p[hslot].revents & (POLLIN | POLLHUP | POLLERR))
                alive = host_read(t);
            if (alive)
                host_pump(t);
        }
        for (i = 0; i < TD_REFUSING_MAX; i++)
            if (slot[i] >= 0 && p[slot[i]].revents != 0)
                refusal_read(t, &t->refusing[i]);
        if (p[1].revents != 0)
            accept_hosts(t);
    }
}

int main(int argc, char **argv)
{
    struct td *t;
    const char *dir = NULL, *path = NULL;
    bool create = false, quiet = false, stale;
    char err[TD_ERR_LEN];
    struct sigaction sa;
    int i, rc = TD_EXIT_FAILURE, pr;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return TD_EXIT_OK;
        } else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else if (strcmp(argv[i], "--create") == 0) {
            create = true;
        } else if (strcmp(argv[i], "--quiet") == 0) {
            quiet = true;
        } else if (strcmp(argv[i], "--dir") == 0 || strcmp(argv[i], "--socket") == 0) {
            fprintf(stderr, TD_PROG ": %s needs a value (" TD_PROG " --help)\n", argv[i]);
            return TD_EXIT_USAGE;
        } else {
            fprintf(stderr, TD_PROG ": unknown argument '%s' (" TD_PROG " --help)\n", argv[i]);
            return TD_EXIT_USAGE;
        }
    }
    if (dir == NULL || dir[0] == '\0')
        return usage_error("--dir DIR is required: the token's directory");
    if (path == NULL || path[0] == '\0')
        return usage_error("--socket PATH is required: the socket to serve the token on");
    if (strlen(path) > PT_EMU_PATH_MAX) {
        fprintf(stderr,
                TD_PROG ": the socket path is %zu bytes long: a unix socket's path is at "
                        "most %u (" TD_PROG " --help)\n",
                strlen(path), PT_EMU_PATH_MAX);
        return TD_EXIT_USAGE;
    }

    umask(077);
    if (pipe(sig_pipe) != 0 || fcntl(sig_pipe[0], F_SETFL, O_NONBLOCK) != 0 ||
        fcntl(sig_pipe[1], F_SETFL, O_NONBLOCK) != 0 || fcntl(sig_pipe[0], F_SETFD, FD_CLOEXEC) ||
        fcntl(sig_pipe[1], F_SETFD, FD_CLOEXEC)) {
        fprintf(stderr, TD_PROG ": cannot set up signal handling: %s\n", strerror(errno));
        return TD_EXIT_FAILURE;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    if ((pr = probe(path)) < 0)
        return TD_EXIT_FAILURE;
    stale = pr == 1;

    if ((t = calloc(1, sizeof *t)) == NULL) {
        fprintf(stderr, TD_PROG ": out of memory\n");
        return TD_EXIT_FAILURE;
    }
    t->dir = dir;
    t->path = path;
    t->quiet = quiet;
    t->lfd = -1;
    t->host.fd = -1;
    for (i = 0; i < (int)TD_REFUSING_MAX; i++)
        t->refusing[i].fd = -1;

    err[0] = '\0';
    if (pt_softdev_open(&t->dev, dir, create, err, sizeof err) != PT_OK) {
        fprintf(stderr, TD_PROG ": cannot open the token: %s%s\n", err,
                create ? "" : "; --create makes a new one in an absent or empty directory");
        goto done;
    }
    if (listen_on(t, stale) != 0)
        goto done;
    printf(TD_PROG ": serving the token in %s on %s\n", dir, path);
    fflush(stdout);

    if (serve(t) == 0)
        rc = TD_EXIT_OK;
    if (t->host.fd >= 0)
        host_end(t, "disconnected (stopping)");
    if (!quiet)
        fprintf(stderr, TD_PROG ": stopping: hosts served: %u, refused while busy: %u\n", t->hosts,
                t->refused);

done:
    if (t->host.fd >= 0)
        host_end(t, "disconnected (stopping)");
    for (i = 0; i < (int)TD_REFUSING_MAX; i++)
        if (t->refusing[i].fd >= 0)
            refusal_end(&t->refusing[i]);
    if (t->lfd >= 0)
        close(t->lfd);
    unlink_ours(t);
    pt_softdev_close(t->dev);
    free(t);
    return rc;
}
