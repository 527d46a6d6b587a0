/*
 * usb-bridge: run a program against an emulated USB token, as umockdev-run
 * runs one against recorded devices.
 *
 *   usb-bridge --token DIR [--create] [--vid HEX --pid HEX] [--unplug-at N]
 *              [--replug-after MS] [--stats] -- COMMAND [ARGS...]
 *
 * The bridge makes a umockdev testbed holding one USB device (tests/
 * usb_mock.c: the token's vendor-specific interface with its bulk OUT and
 * IN endpoints) and runs COMMAND under libumockdev-preload with
 * UMOCKDEV_DIR naming the testbed, so that the program's real libusb finds
 * the device at the kernel interface (sysfs, /dev/bus/usb and the usbdevfs
 * ioctls). Behind the device is a software token in DIR (participant/
 * pt_softdev.h): the bytes of every bulk OUT transfer are fed to its device
 * side, and every frame it gives is pushed to bulk IN. The token's state
 * stays in DIR, so another run, or pt_soft_open, sees what the program did.
 *
 * The testbed and its ioctl handler live in this process (the handler in
 * umockdev's worker thread), the program in a child. The bridge runs under
 * the preload too: it re-executes itself with it (usb_mock_reexec), because
 * umockdev sends the "remove" and "add" uevents of an unplug through
 * libudev, which finds the device in the testbed's /sys only under the
 * preload (without it: "uevent_sender_send: No such device", and libusb in
 * the program never sees the device go or come back). Each bridge has a
 * testbed directory of its own, so bridges run side by side without
 * meeting; a token directory is held by one process at a time (pt_soft's
 * lock).
 *
 * Unplugging. --unplug-at N cuts the Nth bulk OUT DATA frame of the run
 * (counted by the frame header's type byte): instead of reaching the token
 * it is dropped with everything after it, and the device is unplugged as
 * the kernel would see it (usb_mock_unplug: URBs in flight fail, the node
 * answers ENODEV, a "remove" uevent). --replug-after MS later (1000 by
 * default) it is plugged back in after a power cycle of the device side
 * (pt_softdev_restart: whatever was in flight is lost, the committed state
 * is kept). SIGUSR1 unplugs at once and SIGUSR2 plugs back in; after
 * SIGUSR1 the device comes back by itself only when --replug-after was
 * given. Each unplug and replug is logged on stderr.
 *
 * Signals and threads. SIGINT, SIGTERM, SIGUSR1, SIGUSR2 and SIGCHLD are
 * blocked in every thread and read from a signalfd in the main loop; the
 * worker thread asks the main loop for an unplug through a pipe. The token
 * is driven by one thread at a time: b->mu is held around every pt_softdev
 * call. Lock order: usb_mock's lock (held when the out callback runs), then
 * b->mu; the main thread never calls usb_mock while holding b->mu.
 *
 * Exit status: COMMAND's, or 128 + the signal that killed it; 125 when the
 * bridge fails (a bad command line, a token it cannot open), 126 when
 * COMMAND cannot be run and 127 when it is not found (as timeout(1)).
 *
 * Trust: this is a test harness. It trusts its command line and prints no
 * token content; the program on the other side is treated as a USB host
 * and may send anything (tk_usb checks every frame).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>

#include "participant/participant.h"
#include "participant/pt_softdev.h"
#include "usb_mock.h"

#define UB_EXIT_SELF 125     /* the bridge failed */
#define UB_EXIT_NOEXEC 126   /* COMMAND was found but could not be run */
#define UB_EXIT_NOTFOUND 127 /* COMMAND was not found */
#define UB_PRELOAD "libumockdev-preload.so.0"
#define UB_REPLUG_DEFAULT_MS 1000u
#define UB_REPLUG_MAX_MS 3600000u
#define UB_ERR_MAX 512u

struct ub_options {
    const char *dir;
    bool create;
    uint16_t vid, pid;
    unsigned long unplug_at; /* 0: never */
    unsigned replug_ms;
    bool replug_given;
    bool stats;
    char **command;
};

struct ub_bridge {
    usb_mock *m;
    struct pt_softdev *dev;
    pthread_mutex_t mu;     /* dev, and the fields down to total */
    unsigned long out_data; /* bulk OUT DATA frames seen in the run */
    unsigned long unplug_at;
    bool cut;                  /* OUT bytes are dropped until the replug */
    bool cut_asked;            /* the worker asked the main loop to unplug */
    struct tk_usb_stats total; /* the device side's counters before its restarts */
    int wake[2];               /* worker -> main loop */
    /* The main thread's own. */
    bool plugged;
    unsigned unplugs;
    bool replug_due;
    struct timespec replug_at;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: usb-bridge --token DIR [--create] [--vid HEX --pid HEX] [--unplug-at N]\n"
               "                  [--replug-after MS] [--stats] -- COMMAND [ARGS...]\n"
               "Runs COMMAND with an emulated USB token (umockdev) whose device side is the\n"
               "software token in DIR. Exits with COMMAND's status; 125 when usb-bridge fails.\n");
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    va_list ap;
    fputs("usb-bridge: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return UB_EXIT_SELF;
}

/* Four hex digits at most, with or without 0x. */
static int parse_hex16(const char *s, uint16_t *out)
{
    size_t n;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        s += 2;
    n = strlen(s);
    if (n == 0 || n > 4 || strspn(s, "0123456789abcdefABCDEF") != n)
        return -1;
    *out = (uint16_t)strtoul(s, NULL, 16);
    return 0;
}

/* A decimal number in [lo, hi]. */
static int parse_ulong(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
    unsigned long v = 0;
    const char *p = s;
    if (*p == '\0')
        return -1;
    for (; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        if (v > (hi - (unsigned long)(*p - '0')) / 10)
            return -1;
        v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v < lo)
        return -1;
    *out = v;
    return 0;
}

/* 0, 1 (--help: done) or UB_EXIT_SELF with the sentence printed. */
static int parse_args(int argc, char **argv, struct ub_options *o)
{
    enum { O_TOKEN = 1, O_CREATE, O_VID, O_PID, O_UNPLUG_AT, O_REPLUG_AFTER, O_STATS, O_HELP };
    static const struct option opts[] = {
        {"token", required_argument, NULL, O_TOKEN},
        {"create", no_argument, NULL, O_CREATE},
        {"vid", required_argument, NULL, O_VID},
        {"pid", required_argument, NULL, O_PID},
        {"unplug-at", required_argument, NULL, O_UNPLUG_AT},
        {"replug-after", required_argument, NULL, O_REPLUG_AFTER},
        {"stats", no_argument, NULL, O_STATS},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    unsigned long v;
    int c;

    memset(o, 0, sizeof *o);
    o->vid = TK_USB_VID;
    o->pid = TK_USB_PID;
    o->replug_ms = UB_REPLUG_DEFAULT_MS;
    opterr = 0;
    /* "+": options end at the first word that is not one (COMMAND). */
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        switch (c) {
        case O_TOKEN:
            o->dir = optarg;
            break;
        case O_CREATE:
            o->create = true;
            break;
        case O_VID:
            if (parse_hex16(optarg, &o->vid) != 0)
                return fail("--vid wants a vendor id of one to four hexadecimal digits (such "
                            "as 1209), not \"%s\".",
                            optarg);
            break;
        case O_PID:
            if (parse_hex16(optarg, &o->pid) != 0)
                return fail("--pid wants a product id of one to four hexadecimal digits (such "
                            "as c07b), not \"%s\".",
                            optarg);
            break;
        case O_UNPLUG_AT:
            if (parse_ulong(optarg, 1, ULONG_MAX, &o->unplug_at) != 0)
                return fail("--unplug-at wants the number of an OUT DATA frame (1 or more), "
                            "not \"%s\".",
                            optarg);
            break;
        case O_REPLUG_AFTER:
            if (parse_ulong(optarg, 0, UB_REPLUG_MAX_MS, &v) != 0)
                return fail("--replug-after wants milliseconds from 0 to %u, not \"%s\".",
                            UB_REPLUG_MAX_MS, optarg);
            o->replug_ms = (unsigned)v;
            o->replug_given = true;
            break;
        case O_STATS:
            o->stats = true;
            break;
        case O_HELP:
            usage(stdout);
            return 1;
        default:
            /* optopt: 0 for an unknown long option, the option's value
             * for one that lacks its argument, the letter otherwise. */
            if (optopt >= O_TOKEN && optopt <= O_HELP)
                return fail("%s needs a value (usb-bridge --help lists the options).",
                            argv[optind - 1]);
            if (optopt != 0)
                return fail("unknown option -%c (usb-bridge --help lists the options).", optopt);
            return fail("unknown option %s (usb-bridge --help lists the options).",
                        argv[optind - 1]);
        }
    }
    if (o->dir == NULL)
        return fail("--token DIR is required: the directory of the software token behind "
                    "the emulated device.");
    if (optind >= argc)
        return fail("no command to run: give it after --, as in usb-bridge --token DIR -- "
                    "COMMAND [ARGS...].");
    o->command = argv + optind;
    return 0;
}

/* ------------------------------------------------------- the device side */

static void stats_add(struct tk_usb_stats *to, const struct tk_usb_stats *s)
{
    to->frames += s->frames;
    to->bad_crc += s->bad_crc;
    to->skipped += s->skipped;
    to->naks += s->naks;
    to->dispatched += s->dispatched;
    to->duplicates += s->duplicates;
    to->resends += s->resends;
}

static bool is_data_frame(const uint8_t *p, size_t n)
{
    return n >= TK_USB_HEADER_LEN && p[0] == TK_USB_MAGIC0 && p[1] == TK_USB_MAGIC1 &&
           p[2] == TK_USB_MAGIC2 && p[3] == TK_USB_MAGIC3 && p[TK_USB_OFF_TYPE] == TK_USB_DATA;
}

/* One bulk OUT transfer, in umockdev's worker thread (usb_mock's lock is
 * held). The host writes one frame per transfer (pt_usbhost.c), so the
 * header's type byte counts DATA frames. */
static void bridge_out(usb_mock *m, const uint8_t *data, size_t len, void *arg)
{
    struct ub_bridge *b = arg;
    uint8_t frame[TK_USB_FRAME_MAX];
    size_t n;

    pthread_mutex_lock(&b->mu);
    if (b->cut)
        goto out;
    if (is_data_frame(data, len) && ++b->out_data == b->unplug_at) {
        /* The cable goes now: this frame and the rest never arrive. The
         * unplug itself is the main loop's (see usb_mock_unplug). */
        b->cut = true;
        b->cut_asked = true;
        if (write(b->wake[1], "u", 1) < 0) {
            /* The pipe is full: a wake-up is already waiting. */
        }
        goto out;
    }
    pt_softdev_feed(b->dev, data, len);
    for (;;) {
        pt_softdev_poll(b->dev, frame, sizeof frame, &n);
        if (n == 0)
            break;
        usb_mock_in_push(m, frame, n);
    }
out:
    pthread_mutex_unlock(&b->mu);
}

static void now_plus(struct timespec *t, unsigned ms)
{
    clock_gettime(CLOCK_MONOTONIC, t);
    t->tv_sec += ms / 1000;
    t->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t->tv_nsec >= 1000000000L) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000L;
    }
}

/* Milliseconds until t (0 when it has passed), rounded up. */
static int ms_until(const struct timespec *t)
{
    struct timespec now;
    long long d;
    clock_gettime(CLOCK_MONOTONIC, &now);
    d = (long long)(t->tv_sec - now.tv_sec) * 1000 + (t->tv_nsec - now.tv_nsec + 999999) / 1000000;
    return d <= 0 ? 0 : d > INT32_MAX ? INT32_MAX : (int)d;
}

static void unplug(struct ub_bridge *b, bool replug_later, unsigned replug_ms)
{
    unsigned long frames;
    if (!b->plugged)
        return;
    pthread_mutex_lock(&b->mu);
    b->cut = true; /* nothing more reaches the token until the replug */
    frames = b->out_data;
    pthread_mutex_unlock(&b->mu);
    usb_mock_unplug(b->m);
    b->plugged = false;
    b->unplugs++;
    fprintf(stderr, "usb-bridge: unplugged the token (after %lu OUT frames)\n", frames);
    b->replug_due = replug_later;
    if (replug_later)
        now_plus(&b->replug_at, replug_ms);
}

static void replug(struct ub_bridge *b)
{
    struct tk_usb_stats s;
    b->replug_due = false;
    if (b->plugged)
        return;
    pthread_mutex_lock(&b->mu);
    /* A power cycle: the device side starts over (its counters too). */
    pt_softdev_stats(b->dev, &s);
    stats_add(&b->total, &s);
    pt_softdev_restart(b->dev);
    b->cut = false;
    b->cut_asked = false;
    pthread_mutex_unlock(&b->mu);
    usb_mock_replug(b->m);
    b->plugged = true;
    fprintf(stderr, "usb-bridge: plugged the token back in\n");
}

/* ------------------------------------------------------------ the child */

/* The environment of COMMAND: ours, with the preload first in LD_PRELOAD,
 * UMOCKDEV_DIR, and ASAN_OPTIONS allowing the preload before an ASan
 * runtime (harmless to a program without one). The strings are g_strdup'd;
 * g_strfreev() frees the array. */
static char **child_env(const char *root)
{
    const char *pre = getenv("LD_PRELOAD"), *asan = getenv("ASAN_OPTIONS");
    char **env = g_get_environ(), *v;

    if (pre != NULL && strstr(pre, "libumockdev-preload") != NULL)
        v = g_strdup(pre);
    else
        v = g_strdup_printf("%s%s%s", UB_PRELOAD, pre && *pre ? ":" : "", pre ? pre : "");
    env = g_environ_setenv(env, "LD_PRELOAD", v, TRUE);
    g_free(v);
    env = g_environ_setenv(env, "UMOCKDEV_DIR", root, TRUE);
    if (asan == NULL || strstr(asan, "verify_asan_link_order=0") == NULL) {
        v = g_strdup_printf("%s%sverify_asan_link_order=0", asan ? asan : "",
                            asan && *asan ? ":" : "");
        env = g_environ_setenv(env, "ASAN_OPTIONS", v, TRUE);
        g_free(v);
    }
    return env;
}

/* The signals whose disposition was the default when the bridge started:
 * libraries in the bridge may ignore some since (GIO ignores SIGPIPE), and
 * COMMAND gets them back at their default. One ignored by the bridge's
 * caller stays ignored, as it would without the bridge. */
static void default_signals(sigset_t *def)
{
    static const int sigs[] = {SIGHUP,  SIGINT,  SIGQUIT, SIGPIPE, SIGALRM,
                               SIGTERM, SIGUSR1, SIGUSR2, SIGCHLD};
    struct sigaction sa;
    size_t i;
    sigemptyset(def);
    for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        if (sigaction(sigs[i], NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
            sigaddset(def, sigs[i]);
}

/* Start COMMAND with the signal mask the bridge was started with and the
 * default dispositions in def. 0, or the exit status for the failure
 * (printed). */
static int spawn_child(pid_t *pid, char **command, char **env, const sigset_t *mask,
                       const sigset_t *def)
{
    posix_spawnattr_t at;
    int rc;

    if (posix_spawnattr_init(&at) != 0)
        return fail("out of memory starting %s.", command[0]);
    posix_spawnattr_setsigmask(&at, mask);
    posix_spawnattr_setsigdefault(&at, def);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    rc = posix_spawnp(pid, command[0], NULL, &at, command, env);
    posix_spawnattr_destroy(&at);
    if (rc == 0)
        return 0;
    fprintf(stderr, "usb-bridge: cannot run %s: %s.\n", command[0], strerror(rc));
    return rc == ENOENT ? UB_EXIT_NOTFOUND : UB_EXIT_NOEXEC;
}

static int exit_status_of(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return UB_EXIT_SELF;
}

/* ------------------------------------------------------------ main loop */

/* Serve the device until the child ends; its exit status. */
static int serve(struct ub_bridge *b, const struct ub_options *o, int sfd, pid_t child)
{
    struct signalfd_siginfo si;
    struct pollfd pf[2];
    int st, timeout;
    char drain[64];

    for (;;) {
        if (waitpid(child, &st, WNOHANG) == child)
            return exit_status_of(st);
        timeout = b->replug_due ? ms_until(&b->replug_at) : -1;
        pf[0] = (struct pollfd){sfd, POLLIN, 0};
        pf[1] = (struct pollfd){b->wake[0], POLLIN, 0};
        if (poll(pf, 2, timeout) < 0 && errno != EINTR) {
            fail("poll failed: %s; stopping %s.", strerror(errno), o->command[0]);
            kill(child, SIGTERM);
            waitpid(child, &st, 0);
            return UB_EXIT_SELF;
        }
        if (pf[0].revents & POLLIN) {
            while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                switch (si.ssi_signo) {
                case SIGINT:
                case SIGTERM:
                    /* A terminal's ^C or ^\ reaches the whole foreground
                     * group, the child too: pass on only what a process
                     * sent to the bridge. */
                    if (si.ssi_code != SI_KERNEL)
                        kill(child, (int)si.ssi_signo);
                    break;
                case SIGUSR1:
                    unplug(b, o->replug_given, o->replug_ms);
                    break;
                case SIGUSR2:
                    replug(b);
                    break;
                default: /* SIGCHLD: waitpid above */
                    break;
                }
            }
        }
        if (pf[1].revents & POLLIN) {
            bool asked;
            while (read(b->wake[0], drain, sizeof drain) > 0) {
            }
            pthread_mutex_lock(&b->mu);
            asked = b->cut_asked;
            b->cut_asked = false;
            pthread_mutex_unlock(&b->mu);
            if (asked)
                unplug(b, true, o->replug_ms);
        }
        if (b->replug_due && ms_until(&b->replug_at) == 0)
            replug(b);
    }
}

int main(int argc, char **argv)
{
    struct ub_options o;
    struct ub_bridge b;
    struct tk_usb_stats s;
    sigset_t block, old, def;
    char err[UB_ERR_MAX], *root = NULL, **env = NULL;
    pid_t child;
    int rc, sfd = -1;

    rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc == 1 ? 0 : rc;
    /* Returns only under the preload (after an exec when it was not). */
    usb_mock_reexec(argc, argv);
    default_signals(&def);
    memset(&b, 0, sizeof b);
    b.wake[0] = b.wake[1] = -1;
    b.unplug_at = o.unplug_at;
    b.plugged = true;
    pthread_mutex_init(&b.mu, NULL);

    /* Blocked before umockdev starts its thread, so that only the
     * signalfd sees these. */
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGUSR2);
    sigaddset(&block, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    sfd = signalfd(-1, &block, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        rc = fail("cannot read signals (signalfd): %s.", strerror(errno));
        goto cleanup;
    }
    if (pipe2(b.wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        rc = fail("cannot make a pipe: %s.", strerror(errno));
        goto cleanup;
    }
    rc = pt_softdev_open(&b.dev, o.dir, o.create, err, sizeof err);
    if (rc != PT_OK) {
        rc = fail("cannot open the token: %s%s", err,
                  !o.create && pt_soft_can_create(o.dir) ? " (--create makes a blank one there)."
                                                         : ".");
        goto cleanup;
    }
    b.m = usb_mock_new(o.vid, o.pid, bridge_out, &b);
    root = usb_mock_root(b.m);
    env = child_env(root);
    fflush(NULL);
    rc = spawn_child(&child, o.command, env, &old, &def);
    if (rc != 0)
        goto cleanup;
    rc = serve(&b, &o, sfd, child);
    if (o.stats) {
        pthread_mutex_lock(&b.mu);
        pt_softdev_stats(b.dev, &s);
        pthread_mutex_unlock(&b.mu);
        stats_add(&b.total, &s);
        fprintf(stderr,
                "usb-bridge: stats: frames %llu, dispatched %llu, duplicates %llu, naks %llu, "
                "bad_crc %llu, resends %llu, unplugs %u\n",
                (unsigned long long)b.total.frames, (unsigned long long)b.total.dispatched,
                (unsigned long long)b.total.duplicates, (unsigned long long)b.total.naks,
                (unsigned long long)b.total.bad_crc, (unsigned long long)b.total.resends,
                b.unplugs);
    }
cleanup:
    /* The testbed first: its worker thread may be in bridge_out. */
    usb_mock_free(b.m);
    pt_softdev_close(b.dev);
    g_strfreev(env);
    g_free(root);
    if (b.wake[0] >= 0)
        close(b.wake[0]);
    if (b.wake[1] >= 0)
        close(b.wake[1]);
    if (sfd >= 0)
        close(sfd);
    pthread_mutex_destroy(&b.mu);
    return rc;
}
