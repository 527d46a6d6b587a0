/*
 * test_serve.c: the querier service as a running process (cohort-querier
 * serve, built beside this test), driven over nng from outside.
 *
 * Each test starts the real service in its own mkdtemp directory, on an
 * ipc:// address (one test on tcp://127.0.0.1 and a free port), with a
 * fresh journal and the certificate file of an authority made here (a
 * CertChain holding its self-signed root, as `cohort-authority init`
 * writes authority.cert). That authority certifies the tokens and the
 * researcher. The tokens are real (the token core over memory flash,
 * reached through the in-process link, driven by the participant's agent
 * core); the study is compiled from SQL and signed by the researcher; the
 * test speaks to the service with req0 sockets of its own, as agents and
 * researchers do.
 *
 * Every kind of bad message gets its exact reply status, or, when the
 * transport drops it (a message over the service's NNG_OPT_RECVMAXSZ), no
 * reply and a closed pipe. Then the service must still serve everyone
 * else: the process is alive, a status request is answered, and a token
 * that has done nothing wrong is admitted on a socket of its own and
 * offered the study. The service is killed with SIGKILL after an
 * acknowledged upload and restarted on its journal, which must give the
 * upload back; a second service on a journal in use must refuse to start;
 * a service whose journal cannot be written (a file size limit, as a full
 * disk) must stop without acknowledging anything it did not keep. At the
 * end of each test the service is stopped with SIGTERM and must exit 0 (a
 * clean stop, and no leak under the sanitizers).
 *
 * Every wait is bounded (nng timeouts of a few seconds at most), so a
 * service that stops answering fails the test instead of hanging it.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <cmocka.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <sodium.h>

#include "participant/participant.h"
#include "proto/cohort.pb-c.h"
#include "querier/querier.h"
#include "token/token.h"

#define QUERIER COHORT_BINARY_DIR "/querier/cohort-querier"
#define SV_RECV_MAX (QR_REQUEST_MAX + 4096u) /* the service's NNG_OPT_RECVMAXSZ */
#define REQ_HEADER 4u  /* the request id req0 puts before the body on the wire */
#define REPLY_MS 4000  /* how long a reply may take */
#define DROP_MS 1500   /* how long to wait to be sure no reply comes */
#define START_MS 10000 /* how long the service may take to start or to stop */
#define POLL_MS 200    /* a start is checked this often */
#define DAY_S INT64_C(86400)
#define ROWS_MAX 3u
#define STUDY "serve-study"
#define RESEARCHER "dr-serve"
#define UNTRUSTED_TEXT "not issued by an authority this service trusts"

#include "svc_fixture.h"

/* ------------------------------------------------------------- helpers */

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/*
 * A request of exactly n bytes that frames an Upload body filling it, as a
 * well-formed request of that size would (n at least 6 and under 2^28).
 */
static struct bytes request_of_size(size_t n)
{
    struct bytes b;
    size_t at = 0;

    b.p = xalloc(n);
    b.n = n;
    b.p[at++] = (2u << 3) | 2u;
    at += put_varint(b.p + at, n - 5);
    assert_int_equal(at, 5);
    return b;
}

/* The whole of a small text file (malloc'd, NUL-terminated; "" when missing). */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *s;
    long n;

    if (f == NULL)
        return xalloc(1);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    s = xalloc((size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return s;
}

static int file_has(const char *path, const char *needle)
{
    char *s = slurp(path);
    int found = strstr(s, needle) != NULL;

    free(s);
    return found;
}

static void write_file(const char *path, const uint8_t *data, size_t len)
{
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* A TCP port on 127.0.0.1 that nobody listens on now. */
static unsigned free_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* ------------------------------------------------------------- tokens */

/*
 * A token made by `maker` (tok_provision) that trusts `plans` for plans.
 * Then its owner loads its rows and consents to the health table for any
 * study.
 */
static void tok_init(struct tok *t, const struct qr_identity *maker,
                     const struct qr_identity *plans, const uint8_t secret[32], unsigned who,
                     int64_t now_s)
{
    char subject[32];

    snprintf(subject, sizeof subject, "serve-token-%u", who);
    tok_provision(t, maker, plans, secret, who, subject, now_s);
    t->n_rows = 1 + t->who % ROWS_MAX;
    for (size_t k = 0; k < t->n_rows; k++) {
        t->rows[k].age = 20 + t->who % 50;
        t->rows[k].sex = t->who % 2 == 0 ? "F" : "M";
        t->rows[k].steps = 1000 + 97 * (int64_t)t->who + 13 * (int64_t)k;
    }
    tok_start(t, now_s);
}

/* ------------------------------------------------------------- plans */

static const char *const health_only[] = {"health"};

static void certify(uint8_t **cert, size_t *cert_len, const struct qr_identity *authority,
                    const struct qr_identity *researcher, const char *const *tables, int64_t now_s)
{
    struct qr_scope scope;

    memset(&scope, 0, sizeof scope);
    scope.tables = tables;
    scope.n_tables = 1;
    scope.max_epsilon = 10.0;
    assert_int_equal(qr_cert_issue(cert, cert_len, authority, COHORT__ROLE__ROLE_RESEARCHER,
                                   RESEARCHER, researcher->sign_pk, researcher->box_pk,
                                   now_s - DAY_S, now_s + 365 * DAY_S, &scope),
                     0);
}

/* ------------------------------------------------------------- world */

/*
 * One test's world: a directory, an authority (trusted by the service for
 * tokens and researchers, and by the tokens for plans), a researcher it
 * certified for the health table, two tokens it certified, the study, and
 * the service process.
 */
struct fx {
    char dir[64];
    char url[128];
    char journal[128];
    char cert_path[128];
    char log[128]; /* the log of the service's latest start */
    int log_pipe;  /* where that log comes from when not written straight to it, or -1 */
    unsigned starts;
    pid_t pid;
    int64_t now_s;
    struct qr_identity authority, researcher;
    uint8_t *cert;
    size_t cert_len;
    uint8_t secret[32];
    struct tok a; /* the token whose messages are under test */
    struct tok b; /* a token that does nothing wrong: "everyone else" */
    struct plan study;
};

/* The authority's certificate file: a CertChain holding its self-signed root. */
static void write_authority(const struct fx *fx)
{
    Cohort__CertChain chain = COHORT__CERT_CHAIN__INIT;
    Cohort__Certificate *root, *certs[1];
    uint8_t *root_bytes, *buf;
    size_t root_len, len;

    assert_int_equal(qr_cert_issue(&root_bytes, &root_len, &fx->authority,
                                   COHORT__ROLE__ROLE_AUTHORITY, "serve-authority",
                                   fx->authority.sign_pk, NULL, fx->now_s - DAY_S,
                                   fx->now_s + 365 * DAY_S, NULL),
                     0);
    root = cohort__certificate__unpack(NULL, root_len, root_bytes);
    free(root_bytes);
    assert_non_null(root);
    certs[0] = root;
    chain.n_certs = 1;
    chain.certs = certs;
    len = cohort__cert_chain__get_packed_size(&chain);
    buf = xalloc(len);
    cohort__cert_chain__pack(&chain, buf);
    write_file(fx->cert_path, buf, len);
    free(buf);
    cohort__certificate__free_unpacked(root, NULL);
}

/* ----------------------------------------------------------- the peers */

/* A req0 socket of the test's, counting its pipes as they come and go. */
struct peer {
    nng_socket s;
    atomic_int added, removed;
};

static void on_peer_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    struct peer *pe = arg;

    (void)p;
    if (ev == NNG_PIPE_EV_ADD_POST)
        atomic_fetch_add(&pe->added, 1);
    else if (ev == NNG_PIPE_EV_REM_POST)
        atomic_fetch_add(&pe->removed, 1);
}

/*
 * A socket that never resends a request on its own (a resent Admit or
 * Upload would be a replay), with bounded waits. nonblock: dial in the
 * background (for a service that may not listen yet).
 */
static void peer_open_with(struct peer *pe, const char *url, int reply_ms, int nonblock)
{
    atomic_init(&pe->added, 0);
    atomic_init(&pe->removed, 0);
    assert_int_equal(nng_req0_open(&pe->s), 0);
    assert_int_equal(nng_socket_set_size(pe->s, NNG_OPT_RECVMAXSZ, SV_RECV_MAX), 0);
    assert_int_equal(nng_socket_set_ms(pe->s, NNG_OPT_RECVTIMEO, reply_ms), 0);
    assert_int_equal(nng_socket_set_ms(pe->s, NNG_OPT_SENDTIMEO, reply_ms), 0);
    assert_int_equal(nng_socket_set_ms(pe->s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE), 0);
    assert_int_equal(nng_socket_set_ms(pe->s, NNG_OPT_RECONNMINT, 20), 0);
    assert_int_equal(nng_socket_set_ms(pe->s, NNG_OPT_RECONNMAXT, 200), 0);
    assert_int_equal(nng_pipe_notify(pe->s, NNG_PIPE_EV_ADD_POST, on_peer_pipe, pe), 0);
    assert_int_equal(nng_pipe_notify(pe->s, NNG_PIPE_EV_REM_POST, on_peer_pipe, pe), 0);
    assert_int_equal(nng_dial(pe->s, url, NULL, nonblock ? NNG_FLAG_NONBLOCK : 0), 0);
}

static void peer_open(struct peer *pe, const char *url)
{
    peer_open_with(pe, url, REPLY_MS, 0);
}

static void peer_close(struct peer *pe)
{
    nng_close(pe->s);
}

/* One request and its reply: 0 with the reply's bytes in *raw, or nng's error. */
static int peer_call(struct peer *pe, const uint8_t *req, size_t len, struct bytes *raw)
{
    static const uint8_t nothing[1] = {0};
    void *in = NULL;
    size_t in_len = 0;
    int rv;

    raw->p = NULL;
    raw->n = 0;
    if ((rv = nng_send(pe->s, (void *)(len > 0 ? req : nothing), len, 0)) != 0)
        return rv;
    if ((rv = nng_recv(pe->s, &in, &in_len, NNG_FLAG_ALLOC)) != 0)
        return rv;
    raw->p = xalloc(in_len);
    raw->n = in_len;
    if (in_len > 0) /* an empty reply (status 0, nothing else) comes as NULL */
        memcpy(raw->p, in, in_len);
    nng_free(in, in_len);
    return 0;
}

/*
 * Send req and expect a reply with `status` (and an error text when it is
 * not 0). Returns the decoded reply (free it with
 * cohort__service_reply__free_unpacked); its bytes in *raw if raw is not NULL.
 */
static Cohort__ServiceReply *ask(struct peer *pe, const uint8_t *req, size_t len, int status,
                                 struct bytes *raw)
{
    struct bytes r;
    Cohort__ServiceReply *m;
    int rv = peer_call(pe, req, len, &r);

    if (rv != 0)
        fail_msg("no reply to a request of %zu bytes: %s", len, nng_strerror(rv));
    m = cohort__service_reply__unpack(NULL, r.n, r.p);
    assert_non_null(m);
    if (m->status != status)
        fail_msg("reply status %d (%s), expected %d (%s)", m->status, m->error ? m->error : "",
                 status, qr_strerror(status));
    if (status != 0) {
        assert_non_null(m->error);
        assert_true(m->error[0] != '\0');
    }
    if (raw != NULL)
        *raw = r;
    else
        free(r.p);
    return m;
}

static void expect(struct peer *pe, struct bytes req, int status)
{
    cohort__service_reply__free_unpacked(ask(pe, req.p, req.n, status, NULL), NULL);
}

/* The status of every query the service holds. */
static Cohort__ServiceReply *status_all(struct peer *pe)
{
    struct bytes req = request1(7, NULL, 0);
    Cohort__ServiceReply *r = ask(pe, req.p, req.n, 0, NULL);

    free(req.p);
    return r;
}

/* Hello, challenge, the token's attestation, Admit: t speaks on pe. */
static void tok_admit(struct peer *pe, struct tok *t)
{
    struct bytes hello, reply, admit;
    Cohort__ServiceReply *r;

    assert_int_equal(pt_agent_hello(&t->ag, time(NULL), &hello.p, &hello.n), PT_OK);
    r = ask(pe, hello.p, hello.n, 0, &reply);
    assert_int_equal(r->challenge.len, 32);
    cohort__service_reply__free_unpacked(r, NULL);
    assert_int_equal(pt_agent_admit(&t->ag, time(NULL), reply.p, reply.n, &admit.p, &admit.n),
                     PT_OK);
    expect(pe, admit, 0);
    free(hello.p);
    free(reply.p);
    free(admit.p);
}

/* The query id of the plan a work reply offers to collect. */
static void collect_query(const Cohort__ServiceReply *r, uint8_t id[32])
{
    assert_non_null(r->work);
    assert_int_equal(r->work->work_case, COHORT__WORK_REPLY__WORK_COLLECT);
    assert_non_null(r->work->collect->plan);
    tk_query_id(id, r->work->collect->plan->plan.data, r->work->collect->plan->plan.len);
}

/* t (admitted on pe) asks for work, is offered the study and collects: the Upload. */
static struct bytes tok_collect(struct fx *fx, struct peer *pe, struct tok *t)
{
    struct bytes req = work_request(t), reply, upload;
    Cohort__ServiceReply *r = ask(pe, req.p, req.n, 0, &reply);
    enum pt_action action;
    uint8_t id[32];

    collect_query(r, id);
    assert_memory_equal(id, fx->study.id, 32);
    cohort__service_reply__free_unpacked(r, NULL);
    assert_int_equal(
        pt_agent_handle(&t->ag, time(NULL), reply.p, reply.n, &action, &upload.p, &upload.n),
        PT_OK);
    assert_int_equal(action, PT_COLLECTED);
    assert_non_null(upload.p);
    free(req.p);
    free(reply.p);
    return upload;
}

/* ------------------------------------------------------------ the service */

static void show_log(const char *path)
{
    char *s = slurp(path);

    print_error("--- %s ---\n%s--- end ---\n", path, s);
    free(s);
}

/*
 * Start cohort-querier serve on url and journal; its stdout and stderr go
 * to log. A file_limit (RLIMIT_FSIZE, with SIGXFSZ ignored) makes every
 * write past that many bytes of a file fail, as on a full disk; 0: none.
 */
static pid_t serve_spawn(const struct fx *fx, const char *url, const char *log, off_t file_limit,
                         int *log_pipe)
{
    const char *argv[] = {QUERIER,     "serve",       "--listen",    url, "--journal",
                          fx->journal, "--authority", fx->cert_path, NULL};
    int pfd[2] = {-1, -1};
    pid_t pid;

    /* Under a file limit the log comes through a pipe, which the limit spares. */
    if (file_limit > 0)
        assert_int_equal(pipe(pfd), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = file_limit > 0 ? pfd[1] : open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);

#ifdef __linux__
        /* Should this test die without its teardown, the service goes too. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif

        if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0)
            _exit(126);
        close(fd);
        if (pfd[0] >= 0)
            close(pfd[0]);
        if (file_limit > 0) {
            struct rlimit rl;

            rl.rlim_cur = rl.rlim_max = (rlim_t)file_limit;
            if (signal(SIGXFSZ, SIG_IGN) == SIG_ERR || setrlimit(RLIMIT_FSIZE, &rl) != 0)
                _exit(125);
        }
        execv(QUERIER, (char *const *)argv);
        _exit(127);
    }
    *log_pipe = pfd[0];
    if (pfd[1] >= 0) {
        close(pfd[1]);
        assert_int_equal(fcntl(pfd[0], F_SETFL, O_NONBLOCK), 0);
    }
    return pid;
}

/* Move what the service wrote to its log pipe, if it has one, into its log file. */
static void log_sync(struct fx *fx)
{
    uint8_t buf[4096];
    FILE *f;
    ssize_t n;

    if (fx->log_pipe < 0)
        return;
    f = fopen(fx->log, "ab");
    assert_non_null(f);
    while ((n = read(fx->log_pipe, buf, sizeof buf)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break; /* nothing more for now */
        assert_int_equal(fwrite(buf, 1, (size_t)n, f), (size_t)n);
    }
    if (n == 0) {
        close(fx->log_pipe);
        fx->log_pipe = -1;
    }
    assert_int_equal(fclose(f), 0);
}

static int log_has(struct fx *fx, const char *needle)
{
    log_sync(fx);
    return file_has(fx->log, needle);
}

static void show_service_log(struct fx *fx)
{
    log_sync(fx);
    show_log(fx->log);
}

/* Whether the service process is still running (it is reaped if not). */
static int serve_alive(struct fx *fx)
{
    int status;
    pid_t r;

    if (fx->pid <= 0)
        return 0;
    r = waitpid(fx->pid, &status, WNOHANG);
    assert_true(r >= 0);
    if (r == 0)
        return 1;
    fx->pid = 0;
    return 0;
}

/* Start the service and wait until it answers a status request. */
static void serve_start_limited(struct fx *fx, off_t file_limit)
{
    struct peer pe;
    struct bytes req = request1(7, NULL, 0), raw;
    int64_t until;

    log_sync(fx); /* the last start's log, all of it: that process is gone */
    if (fx->log_pipe >= 0)
        close(fx->log_pipe);
    fx->starts++;
    snprintf(fx->log, sizeof fx->log, "%s/serve-%u.log", fx->dir, fx->starts);
    fx->pid = serve_spawn(fx, fx->url, fx->log, file_limit, &fx->log_pipe);
    until = mono_ms() + START_MS;
    peer_open_with(&pe, fx->url, POLL_MS, 1);
    while (peer_call(&pe, req.p, req.n, &raw) != 0) {
        if (!serve_alive(fx)) {
            show_service_log(fx);
            fail_msg("the service stopped while starting");
        }
        if (mono_ms() > until) {
            show_service_log(fx);
            fail_msg("the service did not answer within %d ms of its start", START_MS);
        }
    }
    free(raw.p);
    free(req.p);
    peer_close(&pe);
}

static void serve_start(struct fx *fx)
{
    serve_start_limited(fx, 0);
}

/* Wait up to ms for pid to end; its wait status, or -1 if it is still running. */
static int wait_exit(pid_t pid, int ms)
{
    int64_t until = mono_ms() + ms;
    int status;

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);

        assert_true(r >= 0);
        if (r == pid)
            return status;
        if (mono_ms() > until)
            return -1;
        sleep_ms(20);
    }
}

/* Kill the service as a crash would. */
static void serve_crash(struct fx *fx)
{
    int status;

    assert_true(fx->pid > 0);
    assert_int_equal(kill(fx->pid, SIGKILL), 0);
    assert_int_equal(waitpid(fx->pid, &status, 0), fx->pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    fx->pid = 0;
}

/* Stop it as an operator would (SIGTERM): 0 when it exited 0 in time. */
static int serve_stop(struct fx *fx)
{
    int status;

    if (fx->pid <= 0)
        return 0;
    if (kill(fx->pid, SIGTERM) != 0)
        return -1;
    status = wait_exit(fx->pid, START_MS);
    if (status == -1) {
        kill(fx->pid, SIGKILL);
        waitpid(fx->pid, &status, 0);
        fx->pid = 0;
        print_error("the service did not stop within %d ms of SIGTERM\n", START_MS);
        return -1;
    }
    fx->pid = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        show_service_log(fx);
        print_error("the service stopped with wait status %#x\n", (unsigned)status);
        return -1;
    }
    return 0;
}

static void submit_study(struct fx *fx)
{
    struct peer pe;
    struct bytes req = request1(6, fx->study.bytes, fx->study.len);
    Cohort__ServiceReply *r;

    peer_open(&pe, fx->url);
    r = ask(&pe, req.p, req.n, 0, NULL);
    assert_int_equal(r->n_queries, 1);
    assert_memory_equal(r->queries[0]->query_id.data, fx->study.id, 32);
    assert_int_equal(r->queries[0]->state, COHORT__QUERY_STATE__QS_COLLECTING);
    assert_string_equal(r->queries[0]->study, STUDY);
    assert_string_equal(r->queries[0]->researcher, RESEARCHER);
    cohort__service_reply__free_unpacked(r, NULL);
    free(req.p);
    peer_close(&pe);
}

/* The study's contributions, as the service reports them. */
static uint64_t contributions(struct fx *fx)
{
    struct peer pe;
    Cohort__ServiceReply *r;
    uint64_t n;

    peer_open(&pe, fx->url);
    r = status_all(&pe);
    assert_int_equal(r->n_queries, 1);
    assert_memory_equal(r->queries[0]->query_id.data, fx->study.id, 32);
    n = r->queries[0]->contributions;
    cohort__service_reply__free_unpacked(r, NULL);
    peer_close(&pe);
    return n;
}

/*
 * After whatever the test did, the service still serves everyone else: the
 * process runs, a status request on a new socket is answered (one query,
 * still collecting), and token b, which has done nothing wrong, is
 * admitted on a socket of its own and offered the study.
 */
static void serves_everyone_else(struct fx *fx)
{
    struct peer pe, pb;
    Cohort__ServiceReply *r;
    struct bytes req;
    uint8_t id[32];

    if (!serve_alive(fx)) {
        show_service_log(fx);
        fail_msg("the service is gone");
    }
    peer_open(&pe, fx->url);
    r = status_all(&pe);
    assert_int_equal(r->n_queries, 1);
    assert_memory_equal(r->queries[0]->query_id.data, fx->study.id, 32);
    assert_int_equal(r->queries[0]->state, COHORT__QUERY_STATE__QS_COLLECTING);
    cohort__service_reply__free_unpacked(r, NULL);

    peer_open(&pb, fx->url);
    tok_admit(&pb, &fx->b);
    req = work_request(&fx->b);
    r = ask(&pb, req.p, req.n, 0, NULL);
    collect_query(r, id);
    assert_memory_equal(id, fx->study.id, 32);
    cohort__service_reply__free_unpacked(r, NULL);
    free(req.p);
    peer_close(&pb);
    peer_close(&pe);
}

/* ------------------------------------------------------ setup, teardown */

static int setup_on(void **state, int tcp)
{
    struct fx *fx = xalloc(sizeof *fx);

    assert_int_equal(tk_library_init(), TK_OK);
    fx->now_s = time(NULL);
    fx->log_pipe = -1;
    snprintf(fx->dir, sizeof fx->dir, "/tmp/cohort-serve-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    if (tcp)
        snprintf(fx->url, sizeof fx->url, "tcp://127.0.0.1:%u", free_port());
    else
        snprintf(fx->url, sizeof fx->url, "ipc://%s/serve.ipc", fx->dir);
    snprintf(fx->journal, sizeof fx->journal, "%s/journal", fx->dir);
    snprintf(fx->cert_path, sizeof fx->cert_path, "%s/authority.cert", fx->dir);

    assert_int_equal(qr_identity_generate(&fx->authority), 0);
    assert_int_equal(qr_identity_generate(&fx->researcher), 0);
    randombytes_buf(fx->secret, sizeof fx->secret);
    write_authority(fx);
    certify(&fx->cert, &fx->cert_len, &fx->authority, &fx->researcher, health_only, fx->now_s);
    tok_init(&fx->a, &fx->authority, &fx->authority, fx->secret, 1, fx->now_s);
    tok_init(&fx->b, &fx->authority, &fx->authority, fx->secret, 2, fx->now_s);
    plan_sign_as(&fx->study,
                 "SELECT sex, COUNT(*), SUM(steps) FROM health GROUP BY sex WITH "
                 "(min_participants = 5, min_group_size = 1)",
                 fx->now_s, &fx->researcher, fx->cert, fx->cert_len);

    serve_start(fx);
    assert_true(log_has(fx, "0 records replayed"));
    submit_study(fx);
    *state = fx;
    return 0;
}

static int setup_ipc(void **state)
{
    return setup_on(state, 0);
}

static int setup_tcp(void **state)
{
    return setup_on(state, 1);
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[512];

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    int rc = serve_stop(fx);

    log_sync(fx);
    if (fx->log_pipe >= 0)
        close(fx->log_pipe);
    tok_free(&fx->a);
    tok_free(&fx->b);
    plan_free(&fx->study);
    free(fx->cert);
    qr_identity_wipe(&fx->authority);
    qr_identity_wipe(&fx->researcher);
    sodium_memzero(fx->secret, sizeof fx->secret);
    remove_dir(fx->dir);
    free(fx);
    return rc;
}

/* ====================================================================== */
/* 1. Malformed                                                           */
/* ====================================================================== */

static void malformed_requests_get_malformed_and_everyone_else_is_served(void **state)
{
    struct fx *fx = *state;
    struct peer pe;
    struct bytes req, submit;
    uint8_t noise[3][64], seed[randombytes_SEEDBYTES];

    peer_open(&pe, fx->url);

    /* Random bytes (each starting with wire type 7, which no field has). */
    for (size_t i = 0; i < 3; i++) {
        memset(seed, (int)i + 1, sizeof seed);
        randombytes_buf_deterministic(noise[i], sizeof noise[i], seed);
        noise[i][0] = 0x07;
        req.p = noise[i];
        req.n = 7 + 19 * i;
        expect(&pe, req, QR_ERR_MALFORMED);
    }
    /* Nothing at all. */
    req.p = NULL;
    req.n = 0;
    expect(&pe, req, QR_ERR_MALFORMED);

    /* Two bodies: a Work and a StatusRequest in one request. */
    {
        struct bytes work = work_request(&fx->a);

        assert_int_equal(work.p[0], 0x0a);
        assert_true(work.p[1] < 0x80);
        req = concat(field(1, work.p + 2, work.n - 2), request1(7, NULL, 0));
        expect(&pe, req, QR_ERR_MALFORMED);
        free(req.p);
        free(work.p);
    }

    /* Truncated: the study's Submit cut in the middle, and cut by one byte. */
    submit = request1(6, fx->study.bytes, fx->study.len);
    req.p = submit.p;
    req.n = submit.n / 2;
    expect(&pe, req, QR_ERR_MALFORMED);
    req.n = submit.n - 1;
    expect(&pe, req, QR_ERR_MALFORMED);
    /* A whole Submit whose plan is cut: the frame is right, the plan is not. */
    free(submit.p);
    submit = request1(6, fx->study.bytes, fx->study.len / 2);
    expect(&pe, submit, QR_ERR_MALFORMED);
    free(submit.p);

    /* The socket that sent all that is still served. */
    cohort__service_reply__free_unpacked(status_all(&pe), NULL);
    peer_close(&pe);
    assert_int_equal(contributions(fx), 0);
    serves_everyone_else(fx);
}

/* ====================================================================== */
/* 2. Oversized                                                           */
/* ====================================================================== */

/*
 * The SP wire protocol spoken by hand, for the one message nng's own req0
 * socket cannot be trusted to send: when the peer closes a pipe in the
 * middle of a large send over TCP, nng 1.5.2 may leave that pipe half shut
 * and nng_close on the socket then never returns. Both transports open with
 * the same 8-byte header each way ("\0SP\0", the protocol, two zero
 * bytes); a message is then its 8-byte big-endian length (after a type
 * byte of 1 on ipc) and the payload: req0's 4-byte request id, high bit
 * set, and the body.
 */
struct raw {
    int fd;
    int ipc;
};

#define SP_REQ0 0x30u
#define SP_REP0 0x31u

static void raw_write(const struct raw *r, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(r->fd, p, n, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        assert_true(w > 0);
        p += w;
        n -= (size_t)w;
    }
}

/* Read n bytes within ms: 0, -1 when the connection closed, -2 on timeout. */
static int raw_read(const struct raw *r, uint8_t *p, size_t n, int ms)
{
    int64_t until = mono_ms() + ms;

    while (n > 0) {
        struct pollfd pfd;
        int64_t left = until - mono_ms();
        ssize_t got;
        int k;

        if (left <= 0)
            return -2;
        pfd.fd = r->fd;
        pfd.events = POLLIN;
        pfd.revents = 0;
        k = poll(&pfd, 1, (int)left);
        if (k < 0 && errno == EINTR)
            continue;
        assert_true(k >= 0);
        if (k == 0)
            return -2;
        got = recv(r->fd, p, n, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got == 0 || (got < 0 && (errno == ECONNRESET || errno == EPIPE)))
            return -1;
        assert_true(got > 0);
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

static void raw_open(struct raw *r, const char *url)
{
    static const uint8_t hello[8] = {0, 'S', 'P', 0, 0, SP_REQ0, 0, 0};
    static const uint8_t want[8] = {0, 'S', 'P', 0, 0, SP_REP0, 0, 0};
    uint8_t got[8];

    memset(r, 0, sizeof *r);
    if (strncmp(url, "ipc://", 6) == 0) {
        struct sockaddr_un sa;

        memset(&sa, 0, sizeof sa);
        sa.sun_family = AF_UNIX;
        assert_true(strlen(url + 6) < sizeof sa.sun_path);
        strcpy(sa.sun_path, url + 6);
        r->ipc = 1;
        r->fd = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_true(r->fd >= 0);
        assert_int_equal(connect(r->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    } else {
        struct sockaddr_in sa;
        const char *port = strrchr(url, ':');

        assert_non_null(port);
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sa.sin_port = htons((uint16_t)atoi(port + 1));
        r->fd = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(r->fd >= 0);
        assert_int_equal(connect(r->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    }
    raw_write(r, hello, sizeof hello);
    assert_int_equal(raw_read(r, got, sizeof got, REPLY_MS), 0);
    assert_memory_equal(got, want, sizeof want);
}

/* The head of a message whose payload is len bytes. */
static void raw_head(const struct raw *r, uint64_t len)
{
    uint8_t head[9];
    size_t n = 0;

    if (r->ipc)
        head[n++] = 1;
    for (int i = 7; i >= 0; i--)
        head[n++] = (uint8_t)(len >> (8 * i));
    raw_write(r, head, n);
}

/* A request (id and body) and the body of its reply (malloc'd). */
static struct bytes raw_call(const struct raw *r, uint32_t id, struct bytes body)
{
    uint8_t idb[4] = {(uint8_t)(0x80 | (id >> 24)), (uint8_t)(id >> 16), (uint8_t)(id >> 8),
                      (uint8_t)id};
    uint8_t head[9], back[4];
    uint64_t len = 0;
    struct bytes reply;
    size_t hl = r->ipc ? 9 : 8;

    raw_head(r, 4 + (uint64_t)body.n);
    raw_write(r, idb, 4);
    raw_write(r, body.p, body.n);
    assert_int_equal(raw_read(r, head, hl, REPLY_MS), 0);
    if (r->ipc)
        assert_int_equal(head[0], 1);
    for (size_t i = hl - 8; i < hl; i++)
        len = len << 8 | head[i];
    assert_true(len >= 4 && len < (1u << 20));
    assert_int_equal(raw_read(r, back, 4, REPLY_MS), 0);
    assert_memory_equal(back, idb, 4);
    reply.n = (size_t)len - 4;
    reply.p = xalloc(reply.n);
    assert_int_equal(raw_read(r, reply.p, reply.n, REPLY_MS), 0);
    return reply;
}

/*
 * A request over NNG_OPT_RECVMAXSZ: the transport drops it and closes the
 * connection as soon as it has read the length, so no reply comes. The
 * connection was served before it; the service itself goes on.
 */
static void oversized_request_closes_its_pipe(struct fx *fx)
{
    struct raw r;
    struct bytes status = request1(7, NULL, 0), reply;
    Cohort__ServiceReply *m;
    uint8_t *part = xalloc(64u << 10), byte;

    raw_open(&r, fx->url);
    reply = raw_call(&r, 1, status);
    m = cohort__service_reply__unpack(NULL, reply.n, reply.p);
    assert_non_null(m);
    assert_int_equal(m->status, 0);
    assert_int_equal(m->n_queries, 1);
    cohort__service_reply__free_unpacked(m, NULL);
    free(reply.p);

    /* The head of a request one byte over, and the start of its body. */
    raw_head(&r, (uint64_t)SV_RECV_MAX + 1);
    part[0] = 0x80;
    part[4] = (2u << 3) | 2u;
    (void)send(r.fd, part, 64u << 10, MSG_NOSIGNAL);
    assert_int_equal(raw_read(&r, &byte, 1, DROP_MS), -1);
    close(r.fd);
    free(part);
    free(status.p);
    assert_true(serve_alive(fx));
}

static void a_request_over_the_transport_limit_is_dropped_and_everyone_else_is_served(void **state)
{
    struct fx *fx = *state;

    oversized_request_closes_its_pipe(fx);
    assert_int_equal(contributions(fx), 0);
    serves_everyone_else(fx);
}

static void a_request_over_the_core_limit_but_within_the_transport_gets_too_large(void **state)
{
    struct fx *fx = *state;
    struct peer pe;
    struct bytes big;

    peer_open(&pe, fx->url);
    /* One byte over what the core takes. */
    big = request_of_size((size_t)QR_REQUEST_MAX + 1);
    expect(&pe, big, QR_ERR_TOO_LARGE);
    free(big.p);
    /* The largest the transport takes: with req0's header, exactly the limit. */
    big = request_of_size((size_t)SV_RECV_MAX - REQ_HEADER);
    expect(&pe, big, QR_ERR_TOO_LARGE);
    free(big.p);
    /* At the core's limit the frame is read, and this one is cut short. */
    big = request_of_size((size_t)QR_REQUEST_MAX);
    big.n--;
    expect(&pe, big, QR_ERR_MALFORMED);
    free(big.p);
    assert_int_equal(atomic_load(&pe.removed), 0);
    peer_close(&pe);
    assert_int_equal(contributions(fx), 0);
    serves_everyone_else(fx);
}

/* ====================================================================== */
/* 3. Replayed                                                            */
/* ====================================================================== */

static void a_replayed_admit_gets_challenge_and_a_replayed_upload_gets_duplicate(void **state)
{
    struct fx *fx = *state;
    struct peer pe, other;
    struct bytes hello, reply, admit, upload;
    Cohort__ServiceReply *r;

    /* Token a is admitted; the same Admit again answers no live challenge. */
    peer_open(&pe, fx->url);
    assert_int_equal(pt_agent_hello(&fx->a.ag, time(NULL), &hello.p, &hello.n), PT_OK);
    r = ask(&pe, hello.p, hello.n, 0, &reply);
    assert_int_equal(r->challenge.len, 32);
    cohort__service_reply__free_unpacked(r, NULL);
    assert_int_equal(pt_agent_admit(&fx->a.ag, time(NULL), reply.p, reply.n, &admit.p, &admit.n),
                     PT_OK);
    expect(&pe, admit, 0);
    expect(&pe, admit, QR_ERR_CHALLENGE);
    /* Replayed on another socket, even one with a challenge of its own. */
    peer_open(&other, fx->url);
    expect(&other, admit, QR_ERR_CHALLENGE);
    expect(&other, hello, 0);
    expect(&other, admit, QR_ERR_CHALLENGE);
    {
        struct bytes work = work_request(&fx->a);

        expect(&other, work, QR_ERR_NOT_ADMITTED);
        free(work.p);
    }
    peer_close(&other);
    free(hello.p);
    free(reply.p);
    free(admit.p);

    /* The replays cost it nothing: it collects and uploads, once. */
    upload = tok_collect(fx, &pe, &fx->a);
    expect(&pe, upload, 0);
    assert_int_equal(contributions(fx), 1);
    expect(&pe, upload, QR_ERR_DUPLICATE);
    assert_int_equal(contributions(fx), 1);
    /* Having contributed, a is not offered the study again. */
    {
        struct bytes work = work_request(&fx->a);

        r = ask(&pe, work.p, work.n, 0, NULL);
        assert_non_null(r->work);
        assert_int_equal(r->work->work_case, COHORT__WORK_REPLY__WORK__NOT_SET);
        cohort__service_reply__free_unpacked(r, NULL);
        free(work.p);
    }
    free(upload.p);
    peer_close(&pe);
    serves_everyone_else(fx);
}

/* ====================================================================== */
/* 4. Out of order                                                        */
/* ====================================================================== */

static void requests_out_of_order_get_their_exact_codes(void **state)
{
    struct fx *fx = *state;
    struct peer fresh, admitted, late;
    struct bytes work, upload, hello, reply, admit, req;
    Cohort__ServiceReply *r;
    uint8_t other[32];

    memset(other, 0x77, sizeof other);
    work = work_request(&fx->a);

    /* Work before Hello and Admit. */
    peer_open(&fresh, fx->url);
    expect(&fresh, work, QR_ERR_NOT_ADMITTED);

    /* A real upload, made on an admitted socket, sent where nobody is admitted. */
    peer_open(&admitted, fx->url);
    tok_admit(&admitted, &fx->a);
    upload = tok_collect(fx, &admitted, &fx->a);
    expect(&fresh, upload, QR_ERR_NOT_ADMITTED);
    req = req_task_result(1, fx->a.id, fx->study.id);
    expect(&fresh, req, QR_ERR_NOT_ADMITTED);
    free(req.p);

    /* After Hello, before Admit: still not admitted. */
    assert_int_equal(pt_agent_hello(&fx->a.ag, time(NULL), &hello.p, &hello.n), PT_OK);
    r = ask(&fresh, hello.p, hello.n, 0, &reply);
    cohort__service_reply__free_unpacked(r, NULL);
    expect(&fresh, work, QR_ERR_NOT_ADMITTED);
    expect(&fresh, upload, QR_ERR_NOT_ADMITTED);

    /* Admit before Hello: the Admit answers fresh's challenge, not late's. */
    assert_int_equal(pt_agent_admit(&fx->a.ag, time(NULL), reply.p, reply.n, &admit.p, &admit.n),
                     PT_OK);
    peer_open(&late, fx->url);
    expect(&late, admit, QR_ERR_CHALLENGE);
    expect(&late, work, QR_ERR_NOT_ADMITTED);
    peer_close(&late);
    /* That did not use fresh's challenge up. */
    expect(&fresh, admit, 0);
    free(hello.p);
    free(reply.p);
    free(admit.p);

    /* Task results while collecting: no task was ever given. */
    req = req_task_result(1, fx->a.id, fx->study.id);
    expect(&admitted, req, QR_ERR_UNKNOWN_TASK);
    free(req.p);
    req = req_task_result(9999, fx->a.id, fx->study.id);
    expect(&admitted, req, QR_ERR_UNKNOWN_TASK);
    free(req.p);
    req = req_task_result(1, fx->a.id, other);
    expect(&admitted, req, QR_ERR_UNKNOWN_QUERY);
    free(req.p);

    /* The result of a query still collecting. */
    req = request1(8, fx->study.id, 32);
    r = ask(&fresh, req.p, req.n, QR_ERR_NOT_DONE, NULL);
    assert_null(r->result);
    assert_int_equal(r->n_queries, 1);
    assert_int_equal(r->queries[0]->state, COHORT__QUERY_STATE__QS_COLLECTING);
    cohort__service_reply__free_unpacked(r, NULL);
    free(req.p);
    req = request1(8, other, 32);
    expect(&fresh, req, QR_ERR_UNKNOWN_QUERY);
    free(req.p);

    /* None of it changed anything: the upload is taken now, once. */
    assert_int_equal(contributions(fx), 0);
    expect(&admitted, upload, 0);
    assert_int_equal(contributions(fx), 1);

    free(upload.p);
    free(work.p);
    peer_close(&fresh);
    peer_close(&admitted);
    serves_everyone_else(fx);
}

/* ====================================================================== */
/* 5. Untrusted                                                           */
/* ====================================================================== */

static void
an_untrusted_token_and_a_researcher_out_of_scope_are_refused_with_the_reason(void **state)
{
    struct fx *fx = *state;
    struct peer pe;
    struct bytes hello, reply, work, req;
    Cohort__ServiceReply *r;

    /* A token certified by an authority the service does not trust. */
    {
        struct qr_identity rogue;
        struct tok *stranger = xalloc(sizeof *stranger);
        uint8_t *admit = NULL;
        size_t admit_len = 0;

        assert_int_equal(qr_identity_generate(&rogue), 0);
        tok_init(stranger, &rogue, &fx->authority, fx->secret, 9, fx->now_s);
        peer_open(&pe, fx->url);
        assert_int_equal(pt_agent_hello(&stranger->ag, time(NULL), &hello.p, &hello.n), PT_OK);
        r = ask(&pe, hello.p, hello.n, QR_ERR_UNTRUSTED, &reply);
        if (strstr(r->error, UNTRUSTED_TEXT) == NULL)
            fail_msg("'%s' does not say '%s'", r->error, UNTRUSTED_TEXT);
        assert_int_equal(r->challenge.len, 0);
        cohort__service_reply__free_unpacked(r, NULL);
        /* Its agent tells its owner why. */
        assert_int_equal(
            pt_agent_admit(&stranger->ag, time(NULL), reply.p, reply.n, &admit, &admit_len),
            PT_ERR_SERVICE);
        assert_null(admit);
        assert_non_null(strstr(stranger->ag.last_reason, UNTRUSTED_TEXT));
        work = work_request(stranger);
        expect(&pe, work, QR_ERR_NOT_ADMITTED);
        free(work.p);
        free(hello.p);
        free(reply.p);
        peer_close(&pe);
        tok_free(stranger);
        free(stranger);
        qr_identity_wipe(&rogue);
    }

    /* A researcher certified for the energy table, with SQL on health. */
    {
        struct plan p;
        uint8_t *cert;
        size_t cert_len;
        static const char *const energy[] = {"energy"};

        certify(&cert, &cert_len, &fx->authority, &fx->researcher, energy, fx->now_s);
        plan_sign_as(&p, "SELECT sex, COUNT(*) FROM health GROUP BY sex", fx->now_s,
                     &fx->researcher, cert, cert_len);
        peer_open(&pe, fx->url);
        req = request1(6, p.bytes, p.len);
        r = ask(&pe, req.p, req.n, QR_ERR_REFUSED, NULL);
        if (strstr(r->error, "TK_ERR_SCOPE") == NULL)
            fail_msg("'%s' does not name TK_ERR_SCOPE", r->error);
        assert_int_equal(r->n_queries, 0);
        cohort__service_reply__free_unpacked(r, NULL);
        /* Nothing of it is held. */
        free(req.p);
        req = request1(7, p.id, 32);
        expect(&pe, req, QR_ERR_UNKNOWN_QUERY);
        free(req.p);
        peer_close(&pe);
        plan_free(&p);
        free(cert);
    }
    assert_int_equal(contributions(fx), 0);
    serves_everyone_else(fx);
}

/* ====================================================================== */
/* 6. Crash and restart                                                   */
/* ====================================================================== */

static void a_service_killed_after_an_acknowledged_upload_gives_it_back_on_restart(void **state)
{
    struct fx *fx = *state;
    struct peer pe;
    struct bytes upload, work;
    Cohort__ServiceReply *r;

    peer_open(&pe, fx->url);
    tok_admit(&pe, &fx->a);
    upload = tok_collect(fx, &pe, &fx->a);
    expect(&pe, upload, 0); /* acknowledged: journaled and synced */
    peer_close(&pe);
    assert_int_equal(contributions(fx), 1);

    serve_crash(fx);
    serve_start(fx);
    /* The plan and the upload. */
    if (!log_has(fx, "2 records replayed, 1 queries")) {
        show_service_log(fx);
        fail_msg("the restarted service does not say it replayed its journal");
    }
    assert_int_equal(contributions(fx), 1);

    /* a is admitted again (admissions are not kept) and resends its upload. */
    peer_open(&pe, fx->url);
    tok_admit(&pe, &fx->a);
    expect(&pe, upload, QR_ERR_DUPLICATE);
    work = work_request(&fx->a);
    r = ask(&pe, work.p, work.n, 0, NULL);
    assert_non_null(r->work);
    assert_int_equal(r->work->work_case, COHORT__WORK_REPLY__WORK__NOT_SET);
    cohort__service_reply__free_unpacked(r, NULL);
    free(work.p);
    free(upload.p);
    peer_close(&pe);
    assert_int_equal(contributions(fx), 1);
    serves_everyone_else(fx);
}

/* ====================================================================== */
/* 7. One service per journal                                             */
/* ====================================================================== */

static void a_second_service_on_the_same_journal_refuses_to_start(void **state)
{
    struct fx *fx = *state;
    char url[160], log[160];
    pid_t second;
    int status, ignored;

    snprintf(url, sizeof url, "ipc://%s/second.ipc", fx->dir);
    snprintf(log, sizeof log, "%s/second.log", fx->dir);
    second = serve_spawn(fx, url, log, 0, &ignored);
    status = wait_exit(second, START_MS);
    if (status == -1) {
        kill(second, SIGKILL);
        waitpid(second, &status, 0);
        fail_msg("a second service on the same journal kept running");
    }
    assert_true(WIFEXITED(status));
    assert_int_not_equal(WEXITSTATUS(status), 0);
    if (!file_has(log, "in use")) {
        show_log(log);
        fail_msg("the second service does not say the journal is in use");
    }
    serves_everyone_else(fx);

    /* Its attempt left the journal as it was. */
    serve_crash(fx);
    serve_start(fx);
    assert_true(log_has(fx, "1 records replayed, 1 queries"));
    serves_everyone_else(fx);
}

/* ====================================================================== */
/* 8. A journal that cannot be written                                    */
/* ====================================================================== */

/*
 * Send the same upload on two sockets, both admitted for its token, one
 * right after the other, and wait for both replies at once (a reply that
 * came is kept even if its pipe closes afterwards): got[i] is 1 when
 * socket i had one, with its status in status[i].
 */
static void send_twice(struct peer *p1, struct peer *p2, struct bytes upload, int got[2],
                       int status[2])
{
    struct peer *pe[2] = {p1, p2};
    nng_aio *aio[2];

    for (int i = 0; i < 2; i++) {
        assert_int_equal(nng_aio_alloc(&aio[i], NULL, NULL), 0);
        nng_aio_set_timeout(aio[i], DROP_MS);
        assert_int_equal(nng_send(pe[i]->s, upload.p, upload.n, 0), 0);
        nng_recv_aio(pe[i]->s, aio[i]);
    }
    for (int i = 0; i < 2; i++) {
        nng_aio_wait(aio[i]);
        got[i] = 0;
        status[i] = 0;
        if (nng_aio_result(aio[i]) == 0) {
            nng_msg *m = nng_aio_get_msg(aio[i]);
            Cohort__ServiceReply *r =
                cohort__service_reply__unpack(NULL, nng_msg_len(m), nng_msg_body(m));

            assert_non_null(r);
            got[i] = 1;
            status[i] = r->status;
            cohort__service_reply__free_unpacked(r, NULL);
            nng_msg_free(m);
        }
        nng_aio_free(aio[i]);
    }
}

static void a_service_whose_journal_fails_acknowledges_nothing_it_did_not_keep(void **state)
{
    struct fx *fx = *state;
    struct peer p1, p2;
    struct bytes upload;
    struct stat st;
    int got[2], status[2], ws;

    /* Restarted so that its journal cannot grow past the submitted plan. */
    serve_crash(fx);
    assert_int_equal(stat(fx->journal, &st), 0);
    serve_start_limited(fx, st.st_size + 16);
    assert_true(log_has(fx, "1 records replayed, 1 queries"));

    peer_open_with(&p1, fx->url, DROP_MS, 0);
    peer_open_with(&p2, fx->url, DROP_MS, 0);
    tok_admit(&p1, &fx->a);
    tok_admit(&p2, &fx->a);
    upload = tok_collect(fx, &p1, &fx->a);
    send_twice(&p1, &p2, upload, got, status);
    /* The upload could not be journaled: neither socket hears it was taken. */
    for (int i = 0; i < 2; i++)
        if (got[i] && (status[i] == 0 || status[i] == QR_ERR_DUPLICATE))
            fail_msg("socket %d was told %d (%s) of an upload that was not kept", i + 1, status[i],
                     qr_strerror(status[i]));
    peer_close(&p1);
    peer_close(&p2);

    /* The service stops, and says why. */
    ws = wait_exit(fx->pid, START_MS);
    assert_true(ws != -1);
    fx->pid = 0;
    assert_true(WIFEXITED(ws));
    assert_int_not_equal(WEXITSTATUS(ws), 0);
    if (!log_has(fx, "nothing unjournaled is acknowledged")) {
        show_service_log(fx);
        fail_msg("the service does not say why it stopped");
    }

    /* Restarted with room: the upload was never kept, and is taken now. */
    serve_start(fx);
    assert_true(log_has(fx, "1 records replayed, 1 queries"));
    assert_int_equal(contributions(fx), 0);
    peer_open(&p1, fx->url);
    tok_admit(&p1, &fx->a);
    expect(&p1, upload, 0);
    expect(&p1, upload, QR_ERR_DUPLICATE);
    peer_close(&p1);
    free(upload.p);
    assert_int_equal(contributions(fx), 1);
    serves_everyone_else(fx);
}

/* ====================================================================== */
/* 9. Over TCP                                                            */
/* ====================================================================== */

static void over_tcp_bad_requests_are_refused_and_everyone_else_is_served(void **state)
{
    struct fx *fx = *state;
    struct peer pe;
    struct bytes req, upload;
    static const uint8_t junk[] = {0x07, 0xff, 0x00, 0x13};

    assert_non_null(strstr(fx->url, "tcp://127.0.0.1:"));
    peer_open(&pe, fx->url);
    req.p = (uint8_t *)junk;
    req.n = sizeof junk;
    expect(&pe, req, QR_ERR_MALFORMED);
    req = request_of_size((size_t)QR_REQUEST_MAX + 1);
    expect(&pe, req, QR_ERR_TOO_LARGE);
    free(req.p);
    peer_close(&pe);
    oversized_request_closes_its_pipe(fx);

    /* A whole admission and upload over TCP, and its replay. */
    peer_open(&pe, fx->url);
    tok_admit(&pe, &fx->a);
    upload = tok_collect(fx, &pe, &fx->a);
    expect(&pe, upload, 0);
    expect(&pe, upload, QR_ERR_DUPLICATE);
    free(upload.p);
    peer_close(&pe);
    assert_int_equal(contributions(fx), 1);
    serves_everyone_else(fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            malformed_requests_get_malformed_and_everyone_else_is_served, setup_ipc, teardown),
        cmocka_unit_test_setup_teardown(
            a_request_over_the_transport_limit_is_dropped_and_everyone_else_is_served, setup_ipc,
            teardown),
        cmocka_unit_test_setup_teardown(
            a_request_over_the_core_limit_but_within_the_transport_gets_too_large, setup_ipc,
            teardown),
        cmocka_unit_test_setup_teardown(
            a_replayed_admit_gets_challenge_and_a_replayed_upload_gets_duplicate, setup_ipc,
            teardown),
        cmocka_unit_test_setup_teardown(requests_out_of_order_get_their_exact_codes, setup_ipc,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            an_untrusted_token_and_a_researcher_out_of_scope_are_refused_with_the_reason, setup_ipc,
            teardown),
        cmocka_unit_test_setup_teardown(
            a_service_killed_after_an_acknowledged_upload_gives_it_back_on_restart, setup_ipc,
            teardown),
        cmocka_unit_test_setup_teardown(a_second_service_on_the_same_journal_refuses_to_start,
                                        setup_ipc, teardown),
        cmocka_unit_test_setup_teardown(
            a_service_whose_journal_fails_acknowledges_nothing_it_did_not_keep, setup_ipc,
            teardown),
        cmocka_unit_test_setup_teardown(
            over_tcp_bad_requests_are_refused_and_everyone_else_is_served, setup_tcp, teardown),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
