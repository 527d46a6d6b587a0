/*
 * The token emulator (tokend/main.c, cohort-tokend) and its link
 * (participant/pt_emu.c), as real processes on a real unix socket.
 *
 * Each test starts cohort-tokend on a software token in a new temporary
 * directory and talks to it through pt_emu, or as a raw client writing
 * frames made with pt_usbframe. A blank token is provisioned through the
 * link itself (ProvisionBegin, a certificate made here, ProvisionFinish),
 * so GetInfo and documents go through the whole path: pt_usbhost, the
 * socket, tk_usb and the token core in the other process, and its state in
 * files. The emulator is stopped with SIGTERM (its state kept) and killed
 * with SIGKILL in the middle of a transfer (an unplug); second hosts,
 * garbage, foreign versions, oversized requests and bad command lines get
 * the exact codes and sentences, and its log holds counters, not what was
 * sent. No timing is asserted: waits for the emulator are bounded loops.
 */
#define _GNU_SOURCE /* for the tests' sockets, as in pt_emu.c */
#include "usb_fixture.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "participant/pt_emu.h"
#include "participant/pt_softdev.h"
#include "participant/pt_usbframe.h"
#include "token/tk_usb.h"

#define TOKEND COHORT_BINARY_DIR "/tokend/cohort-tokend"
#define READY_MS 60000 /* the longest wait for the ready line (a slow sanitizer build) */
#define DOC_LEN 20000u

static const struct pt_emu_config fast_cfg = {NULL, 2000, 60000};

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* ------------------------------------------------------------ the rig */

struct rig {
    char base[64]; /* the temporary directory */
    char dir[96];  /* the token's, inside it */
    char sock[96]; /* the socket, inside it */
    pid_t pid;     /* the running emulator, or 0 */
    struct fx_world w;
    struct pt_emu *e;
    struct pt_link link;
    uint8_t sign_pk[32]; /* the token's, once provisioned */
};

static struct rig *rig_new(void)
{
    struct rig *r = fx_alloc(sizeof *r);
    snprintf(r->base, sizeof r->base, "/tmp/cohort-tokend-XXXXXX");
    assert_non_null(mkdtemp(r->base));
    snprintf(r->dir, sizeof r->dir, "%s/token", r->base);
    snprintf(r->sock, sizeof r->sock, "%s/s", r->base);
    fx_world_init(&r->w);
    return r;
}

/* Start cohort-tokend on a directory and a socket, and wait for its ready
 * line. With log, its stderr goes to that file; without, it is quiet. */
static pid_t tokend_start_at(const char *dir, const char *sock, bool create, const char *log)
{
    int out[2];
    pid_t pid;
    char line[512];
    size_t n = 0;
    struct pollfd p;
    assert_int_equal(pipe(out), 0);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char *argv[8] = {TOKEND, "--dir", (char *)dir, "--socket", (char *)sock, NULL, NULL, NULL};
        int k = 5;
        if (log == NULL)
            argv[k++] = "--quiet";
        if (create)
            argv[k++] = "--create";
        if (log != NULL) {
            int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
            if (fd < 0)
                _exit(126);
            dup2(fd, 2);
            close(fd);
        }
        dup2(out[1], 1);
        close(out[0]);
        close(out[1]);
        execv(TOKEND, argv);
        _exit(127);
    }
    close(out[1]);
    p = (struct pollfd){out[0], POLLIN, 0};
    while (n + 1 < sizeof line && memchr(line, '\n', n) == NULL) {
        ssize_t k;
        assert_true(poll(&p, 1, READY_MS) == 1);
        k = read(out[0], line + n, sizeof line - 1 - n);
        assert_true(k > 0);
        n += (size_t)k;
    }
    line[n] = '\0';
    close(out[0]);
    {
        char want[512];
        snprintf(want, sizeof want, "cohort-tokend: serving the token in %s on %s\n", dir, sock);
        assert_string_equal(line, want);
    }
    return pid;
}

static void tokend_start(struct rig *r, bool create)
{
    r->pid = tokend_start_at(r->dir, r->sock, create, NULL);
}

/* Signal the emulator and return its exit status (128 + signal when killed). */
static int tokend_stop(pid_t pid, int sig)
{
    assert_int_equal(kill(pid, sig), 0);
    return usb_wait_exit(pid);
}

static void rig_open(struct rig *r)
{
    struct pt_emu_config c = fast_cfg;
    char err[256];
    c.path = r->sock;
    assert_int_equal(pt_emu_open(&r->e, &c, err, sizeof err), PT_USB_OK);
    assert_true(pt_emu_connected(r->e));
    r->link = pt_emu_link(r->e);
}

static void rig_free(struct rig *r)
{
    char cmd[160];
    pt_emu_close(r->e);
    if (r->pid > 0)
        assert_int_equal(tokend_stop(r->pid, SIGTERM), 0);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", r->base);
    assert_int_equal(system(cmd), 0);
    free(r);
}

/* ------------------------------------------------------------ requests */

/* The path through the rig's link: the emulator link must not fail either. */
static Cohort__TokenResponse *through_rig(void *ctx, const uint8_t *req, size_t len)
{
    struct rig *r = ctx;
    Cohort__TokenResponse *out = usb_through_link(&r->link, req, len);
    assert_int_equal(pt_emu_error(r->e), PT_USB_OK);
    return out;
}

/* GetInfo through the emulator: whether the token is provisioned, and
 * (when it is) that it is the token the rig provisioned. */
static void get_info_says(struct rig *r, bool provisioned)
{
    size_t len;
    uint8_t *req = usb_info_request(&len);
    Cohort__TokenResponse *resp = through_rig(r, req, len);
    assert_int_equal(resp->status, TK_OK);
    assert_int_equal(resp->body_case, COHORT__TOKEN_RESPONSE__BODY_INFO);
    assert_int_equal(resp->info->provisioned, provisioned);
    if (provisioned) {
        assert_int_equal(resp->info->sign_pk.len, 32);
        assert_memory_equal(resp->info->sign_pk.data, r->sign_pk, 32);
    }
    cohort__token_response__free_unpacked(resp, NULL);
    free(req);
}

/* The maker's ceremony, through the link: the token makes its keys, the
 * maker certifies them, the token installs the certificate. */
static void provision(struct rig *r)
{
    usb_provision(through_rig, r, &r->w, "token-emulated", r->sign_pk);
}

/* ------------------------------------------------------------ raw clients */

static int raw_connect(const char *path)
{
    struct sockaddr_un a;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    memcpy(a.sun_path, path, strlen(path) + 1);
    assert_int_equal(connect(fd, (const struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void raw_send(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        assert_true(k > 0);
        p += k;
        n -= (size_t)k;
    }
}

static void raw_hello(int fd, uint16_t seq, uint8_t version)
{
    uint8_t frame[TK_USB_FRAME_MAX];
    size_t n = pt_usbframe_hello(frame, sizeof frame, seq, &version, 1);
    assert_true(n > 0);
    raw_send(fd, frame, n);
}

/* The next frame the emulator sends (its CRCs good), within 10 s; false
 * when the stream ends first. buf holds the payload. */
struct raw_rx {
    struct pt_usbframe_rx rx;
    uint8_t in[4096];
    size_t at, n;
    uint8_t payload[TK_USB_PAYLOAD_MAX];
};

static bool raw_next(int fd, struct raw_rx *x, struct pt_usbframe *f)
{
    for (;;) {
        while (x->at < x->n) {
            size_t used = 0;
            int rc = pt_usbframe_rx_next(&x->rx, x->in + x->at, x->n - x->at, &used, f);
            x->at += used;
            if (rc == PT_USBFRAME_OK) {
                memcpy(x->payload, f->payload, f->len);
                f->payload = x->payload;
                return true;
            }
            assert_int_not_equal(rc, PT_USBFRAME_BAD);
        }
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t k;
        assert_int_equal(poll(&p, 1, 10000), 1);
        k = recv(fd, x->in, sizeof x->in, 0);
        if (k <= 0)
            return false;
        x->at = 0;
        x->n = (size_t)k;
    }
}

/* ------------------------------------------------------------ command lines */

/* Run cohort-tokend with argv to its end: its exit status, and its stderr in err. */
static int tokend_run(char *const argv[], char *err, size_t err_len)
{
    int pipefd[2], st;
    size_t n = 0;
    pid_t pid;
    assert_int_equal(pipe(pipefd), 0);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(pipefd[1], 2);
        dup2(null, 1);
        close(pipefd[0]);
        close(pipefd[1]);
        execv(TOKEND, argv);
        _exit(127);
    }
    close(pipefd[1]);
    for (;;) {
        ssize_t k = read(pipefd[0], err + n, err_len - 1 - n);
        if (k <= 0)
            break;
        n += (size_t)k;
        if (n + 1 == err_len)
            break;
    }
    err[n] = '\0';
    close(pipefd[0]);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

/* ------------------------------------------------------------ tests */

static void a_fresh_token_answers_get_info_and_keeps_a_document_through_the_emulator(void **state)
{
    struct rig *r = rig_new();
    struct stat st;
    (void)state;
    tokend_start(r, true);
    /* The socket is the owner's alone. */
    assert_int_equal(lstat(r->sock, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);

    rig_open(r);
    get_info_says(r, false); /* blank, as from its maker */
    provision(r);
    get_info_says(r, true);
    usb_document_round_trip(through_rig, r, DOC_LEN);
    assert_int_equal(pt_emu_stats(r->e).requests, 8);
    assert_int_equal(pt_emu_stats(r->e).hellos, 1);
    assert_int_equal(pt_emu_stats(r->e).resends, 0);

    /* SIGTERM: a clean stop, and the socket is gone. */
    pt_emu_close(r->e);
    r->e = NULL;
    assert_int_equal(tokend_stop(r->pid, SIGTERM), 0);
    r->pid = 0;
    assert_int_equal(lstat(r->sock, &st), -1);
    assert_int_equal(errno, ENOENT);
    rig_free(r);
}

static void the_token_keeps_its_state_across_an_emulator_restart(void **state)
{
    struct rig *r = rig_new();
    Cohort__TokenResponse *wr;
    (void)state;
    tokend_start(r, true);
    rig_open(r);
    provision(r);
    wr = usb_document_write(through_rig, r, DOC_LEN);

    assert_int_equal(tokend_stop(r->pid, SIGTERM), 0);
    /* Stopped: the link says the emulator went away, as a token unplugged. */
    {
        size_t len;
        uint8_t *req = usb_info_request(&len);
        const uint8_t *resp;
        size_t resp_len;
        assert_int_equal(r->link.transact(r->link.ctx, req, len, &resp, &resp_len), PT_ERR_LINK);
        assert_int_equal(pt_emu_error(r->e), PT_USB_E_NO_DEVICE);
        assert_false(pt_emu_connected(r->e));
        free(req);
    }
    /* Started again on the same directory, without --create: the same token. */
    tokend_start(r, false);
    assert_int_equal(pt_emu_wait(r->e, 10000), PT_USB_OK);
    get_info_says(r, true);
    usb_document_read_back(through_rig, r, wr->doc_cipher, DOC_LEN);
    cohort__token_response__free_unpacked(wr, NULL);
    assert_int_equal(pt_emu_stats(r->e).hellos, 2);

    /* SIGINT stops it as cleanly. */
    pt_emu_close(r->e);
    r->e = NULL;
    assert_int_equal(tokend_stop(r->pid, SIGINT), 0);
    r->pid = 0;
    rig_free(r);
}

struct big {
    struct rig *r;
    uint8_t *req;
    size_t len;
    int rc;
};

static void *big_transact(void *arg)
{
    struct big *b = arg;
    const uint8_t *resp;
    size_t resp_len;
    b->rc = b->r->link.transact(b->r->link.ctx, b->req, b->len, &resp, &resp_len);
    return NULL;
}

static void a_kill_9_in_a_large_transfer_is_an_unplug_until_the_emulator_is_back(void **state)
{
    struct rig *r = rig_new();
    struct big b = {r, NULL, 0, PT_OK};
    uint8_t session[TK_SESSION_ID_LEN] = {1, 2, 3};
    uint8_t *junk = fx_alloc(TK_REQUEST_MAX - 1024), *req;
    const uint8_t *resp;
    size_t len, resp_len;
    pthread_t t;
    (void)state;
    tokend_start(r, true);
    rig_open(r);
    provision(r);

    /* A DocWrite of almost 1 MiB: far more than the socket's buffers hold,
     * so with the emulator stopped the host is still writing it when the
     * emulator is killed. */
    b.req = usb_doc_stream_request(&b.len, 20, session, junk, TK_REQUEST_MAX - 1024, true);
    assert_true(b.len <= TK_REQUEST_MAX);
    assert_int_equal(kill(r->pid, SIGSTOP), 0);
    assert_int_equal(pthread_create(&t, NULL, big_transact, &b), 0);
    sleep_ms(300);
    assert_int_equal(tokend_stop(r->pid, SIGKILL), 128 + SIGKILL);
    r->pid = 0;
    pthread_join(t, NULL);
    assert_int_equal(b.rc, PT_ERR_LINK);
    assert_int_equal(pt_emu_error(r->e), PT_USB_E_NO_DEVICE);
    assert_false(pt_emu_connected(r->e));

    /* Gone: every call says so (its socket file is left, and refuses). */
    req = usb_info_request(&len);
    assert_int_equal(r->link.transact(r->link.ctx, req, len, &resp, &resp_len), PT_ERR_LINK);
    assert_int_equal(pt_emu_error(r->e), PT_USB_E_NO_DEVICE);
    assert_int_equal(pt_emu_wait(r->e, 100), PT_USB_E_NO_DEVICE);

    /* Back (over the stale socket): the wait ends, and the next call works. */
    tokend_start(r, false);
    assert_int_equal(pt_emu_wait(r->e, 10000), PT_USB_OK);
    assert_true(pt_emu_connected(r->e));
    assert_int_equal(pt_emu_wait(r->e, 0), PT_USB_OK); /* at once when connected */
    get_info_says(r, true);
    free(req);
    free(b.req);
    free(junk);
    rig_free(r);
}

static void no_emulator_at_the_path_is_no_device(void **state)
{
    struct rig *r = rig_new();
    struct pt_emu_config c = fast_cfg;
    struct pt_emu *e = (struct pt_emu *)&c; /* must come back NULL */
    char err[512], want[256], longpath[PT_EMU_PATH_MAX + 2];
    int fd;
    (void)state;
    c.path = r->sock;
    assert_int_equal(pt_emu_open(&e, &c, err, sizeof err), PT_USB_E_NO_DEVICE);
    assert_null(e);
    snprintf(want, sizeof want, "no token emulator at %s", r->sock);
    assert_string_equal(err, want);

    /* A file that is not a socket: nothing listens there either. */
    fd = open(r->sock, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(pt_emu_open(&e, &c, err, sizeof err), PT_USB_E_NO_DEVICE);
    assert_string_equal(err, want);

    /* A path no unix socket can have. */
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    c.path = longpath;
    assert_int_equal(pt_emu_open(&e, &c, err, sizeof err), PT_USB_E_IO);
    assert_null(e);
    assert_string_equal(err, "the token emulator's socket path is 108 bytes long: a unix "
                             "socket's path is at most 107");
    c.path = NULL;
    assert_int_equal(pt_emu_open(&e, &c, err, sizeof err), PT_USB_E_IO);
    assert_string_equal(err, "no token emulator socket was given");
    rig_free(r);
}

static void a_socket_the_user_may_not_open_is_permission_denied(void **state)
{
    struct rig *r = rig_new();
    pid_t pid;
    int st;
    (void)state;
    tokend_start(r, true);
    if (geteuid() != 0)
        assert_int_equal(chmod(r->sock, 0), 0); /* not even its owner may connect */
    else
        assert_int_equal(chmod(r->base, 0755), 0); /* nobody reaches it; the socket is 0600 */
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct pt_emu_config c = fast_cfg;
        struct pt_emu *e = NULL;
        char err[256], want[256];
        int rc;
        if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
            _exit(77);
        c.path = r->sock;
        rc = pt_emu_open(&e, &c, err, sizeof err);
        snprintf(want, sizeof want, "token emulator at %s: permission denied on its socket",
                 r->sock);
        if (rc != PT_USB_E_ACCESS || e != NULL || strcmp(err, want) != 0) {
            fprintf(stderr, "child: %d %s\n", rc, err);
            _exit(12);
        }
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    if (WEXITSTATUS(st) == 77) {
        rig_free(r);
        skip(); /* root that may not become nobody */
    }
    assert_int_equal(WEXITSTATUS(st), 0);
    chmod(r->sock, 0600);
    /* Its owner still may. */
    rig_open(r);
    get_info_says(r, false);
    rig_free(r);
}

static void a_second_host_is_told_busy_until_the_first_closes(void **state)
{
    struct rig *r = rig_new();
    struct pt_emu_config c = fast_cfg;
    struct pt_emu *second = NULL;
    struct rig view;
    char err[256], want[256];
    int i, rc = PT_USB_E_BUSY;
    (void)state;
    tokend_start(r, true);
    rig_open(r);
    provision(r);
    c.path = r->sock;
    assert_int_equal(pt_emu_open(&second, &c, err, sizeof err), PT_USB_E_BUSY);
    assert_null(second);
    snprintf(want, sizeof want, "token emulator at %s: busy: it is serving another host", r->sock);
    assert_string_equal(err, want);
    /* The first is served as before. */
    get_info_says(r, true);

    pt_emu_close(r->e);
    r->e = NULL;
    /* The emulator sees the first go soon; until then, the second is still refused. */
    for (i = 0; i < 500 && rc == PT_USB_E_BUSY; i++) {
        rc = pt_emu_open(&second, &c, err, sizeof err);
        if (rc == PT_USB_E_BUSY)
            sleep_ms(20);
    }
    assert_int_equal(rc, PT_USB_OK);
    view = *r;
    view.e = second;
    view.link = pt_emu_link(second);
    get_info_says(&view, true);
    pt_emu_close(second);
    rig_free(r);
}

static void garbage_before_a_hello_is_skipped_and_a_foreign_version_is_refused(void **state)
{
    struct rig *r = rig_new();
    struct raw_rx x;
    struct pt_usbframe f;
    struct pt_usbframe_limits lim;
    uint8_t junk[3000], frame[TK_USB_FRAME_MAX], req[8] = {8, 0xc0, 0xe0, 0x93, 0xd3, 6, 0x12, 0};
    size_t i, n, off = 0;
    int fd;
    (void)state;
    tokend_start(r, true);
    fd = raw_connect(r->sock);
    memset(&x, 0, sizeof x);
    pt_usbframe_rx_init(&x.rx);

    /* Garbage (no magic in it), then a HELLO: the HELLO is answered. */
    for (i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)(0x80 + i % 97);
    raw_send(fd, junk, sizeof junk);
    raw_hello(fd, 7, TK_USB_VERSION);
    assert_true(raw_next(fd, &x, &f));
    assert_int_equal(f.type, TK_USB_HELLO);
    assert_int_equal(f.seq, 7);
    assert_int_equal(pt_usbframe_hello_reply(&lim, &f), 0);
    assert_int_equal(lim.version, TK_USB_VERSION);
    assert_int_equal(lim.max_payload, PT_SOFTDEV_PAYLOAD);
    assert_int_equal(lim.request_max, PT_SOFTDEV_REQUEST_MAX);
    assert_int_equal(lim.response_max, PT_SOFTDEV_RESPONSE_MAX);

    /* A HELLO offering only version 9: ERROR VERSION with the device's (1). */
    raw_hello(fd, 8, 9);
    assert_true(raw_next(fd, &x, &f));
    assert_int_equal(f.type, TK_USB_ERROR);
    assert_int_equal(f.seq, 8);
    assert_int_equal(f.len, 3);
    assert_int_equal(f.payload[0], TK_USB_E_VERSION);
    assert_int_equal(f.payload[1], 1);
    assert_int_equal(f.payload[2], TK_USB_VERSION);
    /* And until a HELLO succeeds, DATA is refused. */
    n = pt_usbframe_data(frame, sizeof frame, 9, req, sizeof req, &off, 4096);
    raw_send(fd, frame, n);
    assert_true(raw_next(fd, &x, &f));
    assert_int_equal(f.type, TK_USB_ERROR);
    assert_int_equal(f.seq, 9);
    assert_int_equal(f.payload[0], TK_USB_E_NO_HELLO);
    close(fd);

    /* The host that leaves is an unplug: the next one is served. */
    rig_open(r);
    get_info_says(r, false);
    rig_free(r);
}

/* A fake emulator speaking only version 9: one host, one answer. */
struct fake {
    int lfd;
};

static void *fake_serve(void *arg)
{
    struct fake *fk = arg;
    struct raw_rx x;
    struct pt_usbframe f;
    uint8_t frame[64], payload[3] = {TK_USB_E_VERSION, 1, 9};
    size_t n;
    int fd = accept(fk->lfd, NULL, NULL);
    assert_true(fd >= 0);
    memset(&x, 0, sizeof x);
    pt_usbframe_rx_init(&x.rx);
    assert_true(raw_next(fd, &x, &f));
    assert_int_equal(f.type, TK_USB_HELLO);
    n = pt_usbframe_encode(frame, sizeof frame, 1, TK_USB_ERROR, 0, f.seq, 0, 0, payload, 3);
    raw_send(fd, frame, n);
    while (raw_next(fd, &x, &f))
        ; /* until the host closes */
    close(fd);
    return NULL;
}

static void an_emulator_of_another_version_is_a_version_mismatch(void **state)
{
    struct rig *r = rig_new();
    struct fake fk;
    struct sockaddr_un a;
    struct pt_emu_config c = fast_cfg;
    struct pt_emu *e = NULL;
    char err[256], want[256];
    pthread_t t;
    (void)state;
    fk.lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    memcpy(a.sun_path, r->sock, strlen(r->sock) + 1);
    assert_int_equal(bind(fk.lfd, (const struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fk.lfd, 1), 0);
    assert_int_equal(pthread_create(&t, NULL, fake_serve, &fk), 0);
    c.path = r->sock;
    assert_int_equal(pt_emu_open(&e, &c, err, sizeof err), PT_USB_E_VERSION);
    assert_null(e);
    snprintf(want, sizeof want,
             "token emulator at %s: protocol version mismatch between host and token "
             "(host speaks 1, token 9)",
             r->sock);
    assert_string_equal(err, want);
    pthread_join(t, NULL);
    close(fk.lfd);
    rig_free(r);
}

static void a_request_over_request_max_is_too_large_and_the_emulator_serves_on(void **state)
{
    struct rig *r = rig_new();
    struct raw_rx x;
    struct pt_usbframe f;
    uint8_t *big = fx_alloc(TK_REQUEST_MAX + 1), frame[TK_USB_FRAME_MAX];
    const uint8_t *resp;
    size_t resp_len, n;
    int fd;
    (void)state;
    tokend_start(r, true);
    rig_open(r);
    /* The host refuses it itself, from the limits the HELLO gave. */
    assert_int_equal(r->link.transact(r->link.ctx, big, TK_REQUEST_MAX + 1, &resp, &resp_len),
                     PT_ERR_LINK);
    assert_int_equal(pt_emu_error(r->e), PT_USB_E_TOO_LARGE);
    assert_true(pt_emu_connected(r->e));
    get_info_says(r, false);
    pt_emu_close(r->e);
    r->e = NULL;

    /* A host that sends one anyway gets ERROR TOO_LARGE, and is served on. */
    fd = -1;
    for (int i = 0; i < 500 && fd < 0; i++) {
        fd = raw_connect(r->sock);
        memset(&x, 0, sizeof x);
        pt_usbframe_rx_init(&x.rx);
        raw_hello(fd, 30, TK_USB_VERSION);
        if (!raw_next(fd, &x, &f) || f.type != TK_USB_HELLO) {
            close(fd); /* refused: the first host is not gone yet */
            fd = -1;
            sleep_ms(20);
        }
    }
    assert_true(fd >= 0);
    n = pt_usbframe_encode(frame, sizeof frame, TK_USB_VERSION, TK_USB_DATA, TK_USB_FIRST, 31, 0,
                           TK_REQUEST_MAX + 1, big, 1000);
    raw_send(fd, frame, n);
    assert_true(raw_next(fd, &x, &f));
    assert_int_equal(f.type, TK_USB_ERROR);
    assert_int_equal(f.seq, 31);
    assert_int_equal(f.payload[0], TK_USB_E_TOO_LARGE);
    raw_hello(fd, 32, TK_USB_VERSION);
    assert_true(raw_next(fd, &x, &f));
    assert_int_equal(f.type, TK_USB_HELLO);
    assert_int_equal(f.seq, 32);
    close(fd);
    free(big);
    rig_free(r);
}

static void the_command_line_is_checked_before_anything_is_served(void **state)
{
    struct rig *r = rig_new();
    char err[2048], empty[128], file[128], longpath[PT_EMU_PATH_MAX + 2];
    pid_t other;
    (void)state;
    snprintf(empty, sizeof empty, "%s/empty", r->base);
    snprintf(file, sizeof file, "%s/file", r->base);
    assert_int_equal(mkdir(empty, 0700), 0);

    {
        char *argv[] = {TOKEND, "--help", NULL};
        assert_int_equal(tokend_run(argv, err, sizeof err), 0);
    }
    {
        char *argv[] = {TOKEND, NULL};
        assert_int_equal(tokend_run(argv, err, sizeof err), 1);
        assert_string_equal(err, "cohort-tokend: --dir DIR is required: the token's directory "
                                 "(cohort-tokend --help)\n");
    }
    {
        char *argv[] = {TOKEND, "--dir", r->dir, NULL};
        assert_int_equal(tokend_run(argv, err, sizeof err), 1);
        assert_string_equal(err, "cohort-tokend: --socket PATH is required: the socket to serve "
                                 "the token on (cohort-tokend --help)\n");
    }
    {
        char *argv[] = {TOKEND, "--dir", r->dir, "--socket", r->sock, "--loud", NULL};
        assert_int_equal(tokend_run(argv, err, sizeof err), 1);
        assert_string_equal(err,
                            "cohort-tokend: unknown argument '--loud' (cohort-tokend --help)\n");
    }
    {
        char *argv[] = {TOKEND, "--dir", r->dir, "--socket", NULL};
        assert_int_equal(tokend_run(argv, err, sizeof err), 1);
        assert_string_equal(err, "cohort-tokend: --socket needs a value (cohort-tokend --help)\n");
    }
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    {
        char *argv[] = {TOKEND, "--dir", r->dir, "--socket", longpath, NULL};
        assert_int_equal(tokend_run(argv, err, sizeof err), 1);
        assert_non_null(strstr(err, "a unix socket's path is at most 107"));
    }
    /* Not a token, and no --create: status 3, nothing left behind. */
    {
        char *argv[] = {TOKEND, "--dir", r->dir, "--socket", r->sock, NULL};
        char want[512];
        assert_int_equal(tokend_run(argv, err, sizeof err), 3);
        snprintf(want, sizeof want,
                 "cohort-tokend: cannot open the token: %s: No such file or directory; "
                 "--create makes a new one in an absent or empty directory\n",
                 r->dir);
        assert_string_equal(err, want);
        assert_int_equal(access(r->sock, F_OK), -1);
        assert_int_equal(access(r->dir, F_OK), -1);
    }
    {
        char *argv[] = {TOKEND, "--dir", empty, "--socket", r->sock, NULL};
        assert_int_equal(tokend_run(argv, err, sizeof err), 3);
        assert_non_null(strstr(err, "not a Cohort token"));
    }
    /* A path that is not a socket is left alone. */
    {
        char *argv[] = {TOKEND, "--dir", r->dir, "--socket", file, "--create", NULL};
        char want[512];
        int fd = open(file, O_WRONLY | O_CREAT, 0600);
        assert_true(fd >= 0);
        close(fd);
        assert_int_equal(tokend_run(argv, err, sizeof err), 3);
        snprintf(want, sizeof want,
                 "cohort-tokend: %s exists and is not a socket: it is left alone\n", file);
        assert_string_equal(err, want);
        assert_int_equal(access(file, F_OK), 0);
    }
    /* A socket a live emulator serves is refused, and that one serves on. */
    tokend_start(r, true);
    {
        char other_dir[128], want[512];
        char *argv[] = {TOKEND, "--dir", other_dir, "--socket", r->sock, "--create", NULL};
        snprintf(other_dir, sizeof other_dir, "%s/other", r->base);
        assert_int_equal(tokend_run(argv, err, sizeof err), 3);
        snprintf(want, sizeof want, "cohort-tokend: a token emulator is already serving on %s\n",
                 r->sock);
        assert_string_equal(err, want);
    }
    /* The same token cannot be served twice (the token's lock). */
    {
        char sock2[128];
        char *argv[] = {TOKEND, "--dir", r->dir, "--socket", sock2, NULL};
        snprintf(sock2, sizeof sock2, "%s/s2", r->base);
        assert_int_equal(tokend_run(argv, err, sizeof err), 3);
        assert_non_null(strstr(err, "busy: another process has this token open"));
        assert_int_equal(access(sock2, F_OK), -1);
    }
    rig_open(r);
    get_info_says(r, false);
    pt_emu_close(r->e);
    r->e = NULL;
    other = r->pid;
    assert_int_equal(tokend_stop(other, SIGTERM), 0);
    r->pid = 0;
    rig_free(r);
}

/* The whole log, up to cap bytes. */
static void read_log(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n;
    assert_non_null(f);
    n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

static void the_log_counts_hosts_and_never_shows_what_they_sent(void **state)
{
    struct rig *r = rig_new();
    char log[128], text[8192];
    struct pt_emu_config c = fast_cfg;
    struct pt_emu *second = NULL;
    char err[256];
    (void)state;
    snprintf(log, sizeof log, "%s/log", r->base);
    r->pid = tokend_start_at(r->dir, r->sock, true, log);
    rig_open(r);
    provision(r);
    c.path = r->sock;
    assert_int_equal(pt_emu_open(&second, &c, err, sizeof err), PT_USB_E_BUSY);
    usb_document_round_trip(through_rig, r, DOC_LEN);
    pt_emu_close(r->e);
    r->e = NULL;
    assert_int_equal(tokend_stop(r->pid, SIGTERM), 0);
    r->pid = 0;

    read_log(log, text, sizeof text);
    assert_non_null(strstr(text, "cohort-tokend: host 1 connected\n"));
    assert_non_null(strstr(text, "cohort-tokend: another host refused (busy serving host 1)\n"));
    /* Six requests ran: ProvisionBegin, ProvisionFinish and the document's four. */
    /* (The host's leaving and the SIGTERM may be seen in either order.) */
    assert_non_null(strstr(text, "cohort-tokend: host 1 disconnected"));
    assert_non_null(strstr(text, ": 6 requests run, 0 answered again, "));
    assert_non_null(
        strstr(text, "cohort-tokend: stopping: hosts served: 1, refused while busy: 1\n"));

    /* Lines of counters only: the document's metadata never appears. */
    assert_null(strstr(text, "clinic"));
    assert_null(strstr(text, "statement"));
    assert_null(strstr(text, "bank"));
    rig_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_fresh_token_answers_get_info_and_keeps_a_document_through_the_emulator),
        cmocka_unit_test(the_token_keeps_its_state_across_an_emulator_restart),
        cmocka_unit_test(a_kill_9_in_a_large_transfer_is_an_unplug_until_the_emulator_is_back),
        cmocka_unit_test(no_emulator_at_the_path_is_no_device),
        cmocka_unit_test(a_socket_the_user_may_not_open_is_permission_denied),
        cmocka_unit_test(a_second_host_is_told_busy_until_the_first_closes),
        cmocka_unit_test(garbage_before_a_hello_is_skipped_and_a_foreign_version_is_refused),
        cmocka_unit_test(an_emulator_of_another_version_is_a_version_mismatch),
        cmocka_unit_test(a_request_over_request_max_is_too_large_and_the_emulator_serves_on),
        cmocka_unit_test(the_command_line_is_checked_before_anything_is_served),
        cmocka_unit_test(the_log_counts_hosts_and_never_shows_what_they_sent),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
