/*
 * test_agentd.c: the agent daemon (participant/net_agent.c, and
 * cohort-participant run) against a querier service on a real nng socket.
 *
 * The service here is small and lives in the test: a rep0 socket on an
 * ipc:// address in a temporary directory, and a thread that answers what
 * comes in on it. It admits connections as the real one does (a 32-byte
 * random challenge per connection, the token's device certificate checked
 * against the manufacturer, the token's signature over "cohort-admit-v1"
 * || challenge), refuses work on a connection that is not admitted
 * (QR_ERR_NOT_ADMITTED), and hands everything else to a real coordinator
 * (qr_coord) over a real signed plan. It can misbehave on demand: restart
 * after taking the Nth upload without answering it, or never answer an
 * Admit.
 *
 * The socket is held by a relay process (this program run again with
 * --relay), so that a restart is what it is in life: the process dies
 * (SIGKILL) and every connection breaks at once; a new one listens on the
 * same address. The coordinator stays in the test, as a journal would
 * keep it.
 *
 * The tokens are real software tokens in temporary directories, made by
 * the whole ceremony (ProvisionBegin, certification by the manufacturer,
 * ProvisionFinish), with a consent policy for the health table and a few
 * rows each. Each study ends with a sealed result that the researcher
 * opens and checks against the rows.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <sodium.h>

#include "participant/net_agent.h"
#include "participant/participant.h"
#include "participant/pt_owner.h"
#include "proto/cohort.pb-c.h"
#include "querier/querier.h"
#include "shell/shell.h"
#include "token/token.h"

#define N_TOKENS 5
#define PIPES_MAX 256
#define STUDY_WAIT_MS 60000
#define AGENT_BIN COHORT_BINARY_DIR "/participant/cohort-participant"

/* ------------------------------------------------------------ world */

struct world {
    char base[64];
    char dirs[N_TOKENS][128];
    char bare[128]; /* a token that was never provisioned */
    uint8_t ids[N_TOKENS][32];
    int64_t rows, steps; /* over every token: COUNT(*) and SUM(steps) */
    struct qr_identity maker, authority, researcher;
    uint8_t *researcher_cert;
    size_t researcher_cert_len;
    uint8_t secret[32];
    int64_t now;
    int study; /* a counter, for unique socket names */
};

static struct world W;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* One TokenRequest through a link; the response's status. */
static int link_call(struct pt_link *link, const Cohort__TokenRequest *req)
{
    size_t len = cohort__token_request__get_packed_size(req), resp_len;
    uint8_t *buf = malloc(len);
    const uint8_t *resp;
    Cohort__TokenResponse *r;
    int status;

    assert_non_null(buf);
    cohort__token_request__pack(req, buf);
    assert_int_equal(link->transact(link->ctx, buf, len, &resp, &resp_len), 0);
    free(buf);
    r = cohort__token_response__unpack(NULL, resp_len, resp);
    assert_non_null(r);
    status = r->status;
    cohort__token_response__free_unpacked(r, NULL);
    return status;
}

static void set_num(struct pt_value *v, enum pt_type type, int64_t i, unsigned scale)
{
    memset(v, 0, sizeof *v);
    v->type = type;
    v->i = i;
    v->scale = scale;
}

static void set_int(struct pt_value *v, int64_t i)
{
    set_num(v, PT_INT, i, 0);
}

static void set_text(struct pt_value *v, const char *s)
{
    memset(v, 0, sizeof *v);
    v->type = PT_TEXT;
    v->len = strlen(s);
    memcpy(v->s, s, v->len);
}

/* n health rows for participant who; their steps are added to the world's totals. */
static void load_rows(struct pt_owner *o, int who, int n)
{
    const struct qr_table *t = qr_catalog_find("health");
    struct pt_schema schema;
    struct pt_value vals[PT_COLUMNS_MAX];
    struct pt_load *l = NULL;
    uint8_t *sbytes;
    size_t slen;
    uint64_t stored = 0;

    assert_non_null(t);
    assert_int_equal(qr_catalog_schema(t, &sbytes, &slen), 0);
    assert_int_equal(pt_schema_decode(&schema, sbytes, slen), 0);
    free(sbytes);
    assert_int_equal(pt_load_begin(&l, o, &schema, PT_LOAD_REQUEST_MAX), 0);
    for (int r = 0; r < n; r++) {
        int64_t steps = 1000 * (who + 1) + r;
        for (size_t c = 0; c < schema.n_columns; c++) {
            const char *name = schema.columns[c].name;
            if (strcmp(name, "participant") == 0)
                set_int(&vals[c], who + 1);
            else if (strcmp(name, "age") == 0)
                set_int(&vals[c], 30 + who);
            else if (strcmp(name, "sex") == 0)
                set_text(&vals[c], who % 2 ? "M" : "F");
            else if (strcmp(name, "region") == 0)
                set_text(&vals[c], "R001");
            else if (strcmp(name, "date") == 0)
                set_num(&vals[c], PT_DATE, 20454 + r, 0);
            else if (strcmp(name, "steps") == 0)
                set_int(&vals[c], steps);
            else if (strcmp(name, "heart_rate") == 0)
                set_int(&vals[c], 70);
            else if (strcmp(name, "weight") == 0)
                set_num(&vals[c], PT_DECIMAL, 700, 1);
            else if (strcmp(name, "age_band") == 0)
                set_text(&vals[c], "30-39");
            else
                memset(&vals[c], 0, sizeof vals[c]); /* NULL */
        }
        assert_int_equal(pt_load_row(l, vals), 0);
        W.steps += steps;
    }
    assert_int_equal(pt_load_commit(l, &stored), 0);
    assert_int_equal(stored, (uint64_t)n);
    pt_load_free(l);
    W.rows += n;
}

/* A software token in dir, through the whole provisioning ceremony. */
static void make_token(const char *dir, int who, uint8_t id[32])
{
    char msg[256] = "", subject[32];
    struct pt_soft *s = NULL;
    struct pt_link link;
    struct pt_owner o;
    struct pt_policy pol;
    uint8_t *csr = NULL, *cert = NULL, sealed[32 + crypto_box_SEALBYTES];
    size_t csr_len = 0, cert_len = 0;
    Cohort__CertRequest *req;
    Cohort__Certificate *c;
    Cohort__TokenRequest tr;
    Cohort__ProvisionFinish pf;
    ProtobufCBinaryData auth;

    assert_int_equal(pt_soft_create(&s, dir, TK_ARENA_DEFAULT, msg, sizeof msg), 0);
    link = pt_soft_link(s);
    pt_owner_init(&o, &link, W.now);
    snprintf(subject, sizeof subject, "agentd token %d", who + 1);
    assert_int_equal(pt_owner_provision_begin(&o, subject, &csr, &csr_len, id), 0);
    assert_int_equal(qr_cert_issue_for_request(&cert, &cert_len, &W.maker, csr, csr_len,
                                               W.now - 86400, W.now + 365 * 86400),
                     0);
    req = cohort__cert_request__unpack(NULL, csr_len, csr);
    assert_non_null(req);
    assert_int_equal(req->box_pk.len, 32);
    assert_int_equal(crypto_box_seal(sealed, W.secret, 32, req->box_pk.data), 0);
    cohort__cert_request__free_unpacked(req, NULL);
    free(csr);
    c = cohort__certificate__unpack(NULL, cert_len, cert);
    assert_non_null(c);
    free(cert);
    cohort__provision_finish__init(&pf);
    pf.device_cert = c;
    pf.sealed_group_secret.data = sealed;
    pf.sealed_group_secret.len = sizeof sealed;
    auth.data = W.authority.sign_pk;
    auth.len = 32;
    pf.n_trusted_authorities = 1;
    pf.trusted_authorities = &auth;
    cohort__token_request__init(&tr);
    tr.now = W.now;
    tr.body_case = COHORT__TOKEN_REQUEST__BODY_PROVISION_FINISH;
    tr.provision_finish = &pf;
    assert_int_equal(link_call(&link, &tr), 0);
    cohort__certificate__free_unpacked(c, NULL);

    memset(&pol, 0, sizeof pol);
    pol.n_tables = 1;
    snprintf(pol.tables[0], sizeof pol.tables[0], "health");
    pol.epsilon_per_study = 100.0;
    pol.epsilon_total = 100.0;
    assert_int_equal(pt_owner_policy_set(&o, &pol), 0);
    load_rows(&o, who, who + 2);
    pt_soft_close(s);
}

static int group_setup(void **state)
{
    const char *tables[] = {"health"};
    struct qr_scope scope = {tables, 1, NULL, 0, NULL, 0, 10.0};
    char msg[256];
    struct pt_soft *s = NULL;

    (void)state;
    memset(&W, 0, sizeof W);
    assert_int_equal(tk_library_init(), 0);
    signal(SIGPIPE, SIG_IGN);
    sh_log_init("test_agentd", false);
    W.now = (int64_t)time(NULL);
    snprintf(W.base, sizeof W.base, "/tmp/test_agentd.XXXXXX");
    assert_non_null(mkdtemp(W.base));
    assert_int_equal(qr_identity_generate(&W.maker), 0);
    assert_int_equal(qr_identity_generate(&W.authority), 0);
    assert_int_equal(qr_identity_generate(&W.researcher), 0);
    assert_int_equal(qr_cert_issue(&W.researcher_cert, &W.researcher_cert_len, &W.authority,
                                   COHORT__ROLE__ROLE_RESEARCHER, "agentd researcher",
                                   W.researcher.sign_pk, W.researcher.box_pk, W.now - 86400,
                                   W.now + 365 * 86400, &scope),
                     0);
    randombytes_buf(W.secret, sizeof W.secret);
    for (int i = 0; i < N_TOKENS; i++) {
        snprintf(W.dirs[i], sizeof W.dirs[i], "%s/token%d", W.base, i + 1);
        make_token(W.dirs[i], i, W.ids[i]);
    }
    snprintf(W.bare, sizeof W.bare, "%s/bare", W.base);
    assert_int_equal(pt_soft_create(&s, W.bare, TK_ARENA_DEFAULT, msg, sizeof msg), 0);
    pt_soft_close(s);
    return 0;
}

static int group_teardown(void **state)
{
    char cmd[128];
    (void)state;
    free(W.researcher_cert);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", W.base);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", W.base);
    return 0;
}

/* ------------------------------------------------------ the service */

struct conn {
    uint32_t pipe;
    uint8_t challenge[32];
    bool challenged, admitted;
    uint8_t token[32];
};

/* What a service saw. */
struct counts {
    uint64_t hellos, admits, admitted, uploads, duplicates, results, not_admitted, restarts;
};

struct service {
    char url[160];
    pid_t relay; /* the process that holds the nng socket */
    bool halted;
    int fd; /* our end of its socketpair */
    pthread_t thread;
    pthread_mutex_t mu;
    /* Under mu. */
    bool stop;
    qr_coord *coord;
    struct conn conns[PIPES_MAX];
    size_t n_conns;
    struct counts n;
    /* Misbehaviour. */
    bool never_admit;
    uint64_t drop_at_upload; /* restart instead of answering this upload (0: never) */
    /* The study. */
    uint8_t *signed_plan;
    size_t signed_plan_len;
};

/*
 * The service's socket lives in a relay process (this program, run again
 * with --relay): it listens on the service's address with a rep0 socket
 * and passes every request to the test's service thread over a
 * socketpair, as frames [pipe id: 4][length: 4][bytes], and takes back the
 * reply as [length: 4][bytes] (RELAY_NO_REPLY: none). A restart of the
 * service is a SIGKILL of the relay and a new one: every connection
 * breaks at once, as when a real service dies. The relay never closes
 * its socket, it exits.
 */
#define RELAY_NO_REPLY UINT32_MAX

static int read_full(int fd, void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int relay_main(const char *url, int fd)
{
    nng_socket sock;
    nng_msg *m;
    uint32_t hdr[2], len;

    pid_t parent = getppid();
    int rv;

    if (nng_rep0_open(&sock) != 0 ||
        nng_socket_set_size(sock, NNG_OPT_RECVMAXSZ, QR_REQUEST_MAX) != 0 ||
        nng_socket_set_ms(sock, NNG_OPT_RECVTIMEO, 500) != 0 || nng_listen(sock, url, NULL, 0) != 0)
        _exit(2);
    for (;;) {
        /* A test that died without stopping its relay leaves it to exit by itself. */
        if ((rv = nng_recvmsg(sock, &m, 0)) == NNG_ETIMEDOUT && getppid() == parent)
            continue;
        if (rv != 0)
            _exit(rv == NNG_ETIMEDOUT ? 0 : 3);
        hdr[0] = (uint32_t)nng_pipe_id(nng_msg_get_pipe(m));
        hdr[1] = (uint32_t)nng_msg_len(m);
        if (write_full(fd, hdr, sizeof hdr) != 0 ||
            write_full(fd, nng_msg_body(m), nng_msg_len(m)) != 0 ||
            read_full(fd, &len, sizeof len) != 0)
            _exit(0); /* the test is gone */
        nng_msg_clear(m);
        if (len == RELAY_NO_REPLY) {
            nng_msg_free(m);
            continue;
        }
        if (nng_msg_realloc(m, len) != 0 || read_full(fd, nng_msg_body(m), len) != 0)
            _exit(4);
        if (nng_sendmsg(sock, m, 0) != 0)
            nng_msg_free(m);
    }
}

/* Start a relay for sv's address. 0 or -1 (no cmocka assertion: the service thread calls it). */
static int relay_start(struct service *sv)
{
    char fdtext[16];
    int sp[2];
    pid_t pid;

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0)
        return -1;
    snprintf(fdtext, sizeof fdtext, "%d", sp[1]);
    pid = fork();
    if (pid < 0) {
        close(sp[0]);
        close(sp[1]);
        return -1;
    }
    if (pid == 0) {
        char *argv[] = {(char *)"test_agentd", (char *)"--relay", sv->url, fdtext, NULL};
        close(sp[0]);
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    close(sp[1]);
    (void)fcntl(sp[0], F_SETFD, FD_CLOEXEC);
    sv->relay = pid;
    sv->fd = sp[0];
    return 0;
}

static void relay_kill(struct service *sv)
{
    int status;
    if (sv->relay > 0) {
        kill(sv->relay, SIGKILL);
        waitpid(sv->relay, &status, 0);
        sv->relay = 0;
    }
    if (sv->fd >= 0)
        close(sv->fd);
    sv->fd = -1;
}

static struct conn *conn_of(struct service *sv, uint32_t pipe, bool make)
{
    for (size_t i = 0; i < sv->n_conns; i++)
        if (sv->conns[i].pipe == pipe)
            return &sv->conns[i];
    if (!make)
        return NULL;
    if (sv->n_conns == PIPES_MAX) {
        /* Forget the oldest: the tests make far fewer connections than this. */
        memmove(sv->conns, sv->conns + 1, (PIPES_MAX - 1) * sizeof sv->conns[0]);
        sv->n_conns--;
    }
    memset(&sv->conns[sv->n_conns], 0, sizeof sv->conns[0]);
    sv->conns[sv->n_conns].pipe = pipe;
    return &sv->conns[sv->n_conns++];
}

static uint8_t *pack_reply(const Cohort__ServiceReply *r, size_t *len)
{
    uint8_t *buf;
    *len = cohort__service_reply__get_packed_size(r);
    buf = malloc(*len ? *len : 1);
    if (buf != NULL)
        cohort__service_reply__pack(r, buf);
    return buf;
}

static uint8_t *error_reply(int status, const char *text, size_t *len)
{
    Cohort__ServiceReply r;
    cohort__service_reply__init(&r);
    r.status = status;
    r.error = (char *)text;
    return pack_reply(&r, len);
}

/* An Admit checked as the real service checks it. */
static int check_admit(struct service *sv, struct conn *c, const Cohort__Admit *ad)
{
    struct tk_cert_info info;
    uint8_t scratch[2048], *cert, msg[sizeof TK_SIG_ADMIT - 1 + 32];
    size_t cert_len;
    int rc;

    (void)sv;
    if (c == NULL || !c->challenged || ad->challenge.len != 32 ||
        memcmp(ad->challenge.data, c->challenge, 32) != 0)
        return QR_ERR_CHALLENGE;
    if (ad->attestation == NULL || ad->attestation->device_cert == NULL ||
        ad->attestation->signature.len != 64)
        return QR_ERR_MALFORMED;
    cert_len = cohort__certificate__get_packed_size(ad->attestation->device_cert);
    if ((cert = malloc(cert_len)) == NULL)
        return QR_ERR_NOMEM;
    cohort__certificate__pack(ad->attestation->device_cert, cert);
    rc = tk_cert_verify(&info, cert, cert_len, W.maker.sign_pk, (int64_t)time(NULL), scratch,
                        sizeof scratch);
    free(cert);
    if (rc != 0 || info.role != COHORT__ROLE__ROLE_TOKEN)
        return QR_ERR_UNTRUSTED;
    memcpy(msg, TK_SIG_ADMIT, sizeof TK_SIG_ADMIT - 1);
    memcpy(msg + sizeof TK_SIG_ADMIT - 1, c->challenge, 32);
    if (crypto_sign_verify_detached(ad->attestation->signature.data, msg, sizeof msg,
                                    info.sign_pk) != 0)
        return QR_ERR_SIGNATURE;
    c->admitted = true;
    c->challenged = false;
    memcpy(c->token, info.sign_pk, 32);
    return 0;
}

/*
 * One request. Returns the reply (malloc'd) or NULL for no reply; *drop
 * asks the caller to close the socket without answering.
 */
static uint8_t *serve_one(struct service *sv, uint32_t pipe, const uint8_t *req, size_t len,
                          size_t *reply_len, bool *drop)
{
    Cohort__ServiceRequest *r = cohort__service_request__unpack(NULL, len, req);
    Cohort__ServiceReply rep;
    struct conn *c;
    uint8_t *reply = NULL, challenge[32];
    const ProtobufCBinaryData *token = NULL;
    int rc;

    *drop = false;
    if (r == NULL)
        return error_reply(QR_ERR_MALFORMED, "a request that does not decode", reply_len);
    switch (r->body_case) {
    case COHORT__SERVICE_REQUEST__BODY_HELLO:
        sv->n.hellos++;
        c = conn_of(sv, pipe, true);
        randombytes_buf(challenge, sizeof challenge);
        memcpy(c->challenge, challenge, 32);
        c->challenged = true;
        cohort__service_reply__init(&rep);
        rep.challenge.data = challenge;
        rep.challenge.len = sizeof challenge;
        reply = pack_reply(&rep, reply_len);
        break;
    case COHORT__SERVICE_REQUEST__BODY_ADMIT:
        sv->n.admits++;
        if (sv->never_admit)
            break;
        rc = check_admit(sv, conn_of(sv, pipe, false), r->admit);
        sv->n.admitted += rc == 0;
        reply = error_reply(rc, rc == 0 ? "" : "admission refused", reply_len);
        break;
    case COHORT__SERVICE_REQUEST__BODY_WORK:
    case COHORT__SERVICE_REQUEST__BODY_UPLOAD:
    case COHORT__SERVICE_REQUEST__BODY_RESULT:
        if (r->body_case == COHORT__SERVICE_REQUEST__BODY_WORK)
            token = &r->work->token_id;
        else if (r->body_case == COHORT__SERVICE_REQUEST__BODY_UPLOAD)
            token = &r->upload->token_id;
        else
            token = &r->result->token_id;
        c = conn_of(sv, pipe, false);
        if (c == NULL || !c->admitted || token->len != 32 || memcmp(token->data, c->token, 32)) {
            sv->n.not_admitted++;
            reply = error_reply(QR_ERR_NOT_ADMITTED, "this connection is not admitted", reply_len);
            break;
        }
        rc = qr_coord_handle(sv->coord, sh_now_ms(), req, len, &reply, reply_len);
        if (r->body_case == COHORT__SERVICE_REQUEST__BODY_UPLOAD) {
            sv->n.uploads++;
            sv->n.duplicates += rc == QR_ERR_DUPLICATE;
            if (sv->n.uploads == sv->drop_at_upload) {
                /* Taken (as a journal would have it), never answered. */
                free(reply);
                reply = NULL;
                *drop = true;
            }
        } else if (r->body_case == COHORT__SERVICE_REQUEST__BODY_RESULT) {
            sv->n.results++;
        }
        break;
    default:
        reply = error_reply(QR_ERR_MALFORMED, "not for this service", reply_len);
        break;
    }
    cohort__service_request__free_unpacked(r, NULL);
    return reply;
}

static void *service_main(void *arg)
{
    struct service *sv = arg;

    for (;;) {
        struct pollfd pfd = {sv->fd, POLLIN, 0};
        uint8_t *req = NULL, *reply = NULL;
        uint32_t hdr[2], len;
        size_t reply_len = 0;
        bool drop = false, stop;
        int rv;

        pthread_mutex_lock(&sv->mu);
        stop = sv->stop;
        qr_coord_tick(sv->coord, sh_now_ms());
        pthread_mutex_unlock(&sv->mu);
        if (stop)
            break;
        rv = poll(&pfd, 1, 50);
        if (rv < 0 && errno == EINTR)
            continue;
        if (rv < 0)
            break;
        if (rv == 0)
            continue;
        if (read_full(sv->fd, hdr, sizeof hdr) != 0 || hdr[1] > QR_REQUEST_MAX ||
            (req = malloc(hdr[1] ? hdr[1] : 1)) == NULL || read_full(sv->fd, req, hdr[1]) != 0) {
            free(req);
            break;
        }
        pthread_mutex_lock(&sv->mu);
        reply = serve_one(sv, hdr[0], req, hdr[1], &reply_len, &drop);
        pthread_mutex_unlock(&sv->mu);
        free(req);
        if (drop) {
            /* A restart: every connection goes, and with it every admission. */
            relay_kill(sv);
            pthread_mutex_lock(&sv->mu);
            sv->n_conns = 0;
            sv->n.restarts++;
            pthread_mutex_unlock(&sv->mu);
            sleep_ms(300);
            if (relay_start(sv) != 0)
                break;
            continue;
        }
        len = reply != NULL ? (uint32_t)reply_len : RELAY_NO_REPLY;
        rv = write_full(sv->fd, &len, sizeof len);
        if (rv == 0 && reply != NULL)
            rv = write_full(sv->fd, reply, reply_len);
        free(reply);
        if (rv != 0)
            break;
    }
    return NULL;
}

/* Misbehaviour asked of a service. */
struct misbehave {
    bool never_admit;
    uint64_t drop_at_upload;
};

/*
 * A study of sql (signed by the researcher) served at the next ipc://
 * address of the world; the fixture owns it (and stops it in teardown).
 */
static struct service *service_start(const char *sql, const struct misbehave *mb)
{
    struct service *sv = calloc(1, sizeof *sv);
    struct qr_compile_opts opts;
    struct qr_sql_error err;
    struct qr_coord_config cfg;
    uint8_t *plan = NULL;
    size_t plan_len = 0;
    const uint8_t *chain[1] = {W.researcher_cert};
    size_t chain_len[1] = {W.researcher_cert_len};

    assert_non_null(sv);
    if (mb != NULL) {
        sv->never_admit = mb->never_admit;
        sv->drop_at_upload = mb->drop_at_upload;
    }
    memset(&opts, 0, sizeof opts);
    opts.study = "agentd study";
    opts.now = (int64_t)time(NULL);
    opts.collect_seconds = 600;
    memset(&err, 0, sizeof err);
    assert_int_equal(qr_sql_compile(&plan, &plan_len, sql, &opts, &err), 0);
    assert_int_equal(qr_plan_sign(&sv->signed_plan, &sv->signed_plan_len, plan, plan_len,
                                  &W.researcher, chain, chain_len, 1),
                     0);
    free(plan);
    qr_coord_config_default(&cfg);
    cfg.retry_after_ms = 100;
    cfg.task_timeout_ms = 5000;
    assert_int_equal(
        qr_coord_new(&sv->coord, sv->signed_plan, sv->signed_plan_len, &cfg, sh_now_ms()), 0);
    snprintf(sv->url, sizeof sv->url, "ipc://%s/service%d.sock", W.base, ++W.study);
    pthread_mutex_init(&sv->mu, NULL);
    sv->fd = -1;
    assert_int_equal(relay_start(sv), 0);
    assert_int_equal(pthread_create(&sv->thread, NULL, service_main, sv), 0);
    return sv;
}

/*
 * Take the service down: its thread ends and its relay dies, so every
 * agent's connection is closed from the service's side. What it saw stays
 * readable until service_free.
 */
static void service_halt(struct service *sv)
{
    if (sv == NULL || sv->halted)
        return;
    pthread_mutex_lock(&sv->mu);
    sv->stop = true;
    pthread_mutex_unlock(&sv->mu);
    pthread_join(sv->thread, NULL);
    relay_kill(sv);
    sv->halted = true;
}

static void service_free(struct service *sv)
{
    if (sv == NULL)
        return;
    service_halt(sv);
    qr_coord_free(sv->coord);
    free(sv->signed_plan);
    pthread_mutex_destroy(&sv->mu);
    free(sv);
}

/* A copy of what sv saw (assertions never run with its lock held). */
static struct counts counts_of(struct service *sv)
{
    struct counts n;
    pthread_mutex_lock(&sv->mu);
    n = sv->n;
    pthread_mutex_unlock(&sv->mu);
    return n;
}

static enum qr_state study_state(struct service *sv)
{
    struct qr_coord_stats st;
    pthread_mutex_lock(&sv->mu);
    qr_coord_stats(sv->coord, &st);
    pthread_mutex_unlock(&sv->mu);
    return st.state;
}

/* Wait for the study to end; its final state. */
static enum qr_state wait_study(struct service *sv, int ms)
{
    int64_t end = mono_ms() + ms;
    enum qr_state s;
    while ((s = study_state(sv)) != QR_DONE && s != QR_FAILED && mono_ms() < end)
        sleep_ms(50);
    return s;
}

/*
 * The researcher opens the result: COUNT(*) and SUM(steps) over the rows
 * of the n tokens ids, each of which contributed exactly once.
 */
static void check_result_of(struct service *sv, const uint8_t (*want)[32], size_t n_want,
                            int64_t rows, int64_t steps)
{
    struct qr_result res;
    const uint8_t *sealed;
    size_t sealed_len, n, *seen = calloc(n_want, sizeof *seen);
    const uint8_t(*ids)[32];
    int rc_result, rc_open;

    assert_non_null(seen);
    pthread_mutex_lock(&sv->mu);
    rc_result = qr_coord_result(sv->coord, &sealed, &sealed_len);
    rc_open = rc_result != 0
                  ? -1
                  : qr_result_open(&res, sealed, sealed_len, sv->signed_plan, sv->signed_plan_len,
                                   &W.researcher, (const uint8_t(*)[32]) & W.maker.sign_pk, 1,
                                   (int64_t)time(NULL));
    n = qr_coord_contributors(sv->coord, &ids);
    for (size_t i = 0; i < n_want; i++)
        for (size_t k = 0; k < n; k++)
            seen[i] += memcmp(ids[k], want[i], 32) == 0;
    pthread_mutex_unlock(&sv->mu);
    for (size_t i = 0; i < n_want; i++)
        if (seen[i] != 1)
            fail_msg("token %zu contributed %zu times", i, seen[i]);
    free(seen);
    assert_int_equal(rc_result, 0);
    assert_int_equal(rc_open, 0);
    assert_int_equal(n, n_want);
    assert_int_equal(res.participants, n_want);
    assert_int_equal(res.n_rows, 1);
    assert_int_equal(res.n_columns, 2);
    assert_int_equal(res.cells[0].i, rows);
    assert_int_equal(res.cells[1].i, steps);
    qr_result_free(&res);
}

static void check_result(struct service *sv)
{
    check_result_of(sv, (const uint8_t(*)[32])W.ids, N_TOKENS, W.rows, W.steps);
}

/* Collection ends when every token has contributed, or at its deadline. */
#define STUDY_SQL                                                                                  \
    "SELECT COUNT(*), SUM(steps) FROM health SIZE 5 WITH (min_participants = 3, "                  \
    "min_group_size = 1)"
#define STUDY_SQL_DEADLINE                                                                         \
    "SELECT COUNT(*), SUM(steps) FROM health DEADLINE 5 WITH (min_participants = 3, "              \
    "min_group_size = 1)"

static void agent_config(struct na_config *cfg, const char *url)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->url = url;
    cfg->max_backoff_ms = 500;
    cfg->request_timeout_ms = 3000;
    cfg->stop_grace_ms = 1000;
    cfg->quiet = false;
}

static const char *const *all_dirs(const char **out)
{
    for (int i = 0; i < N_TOKENS; i++)
        out[i] = W.dirs[i];
    return out;
}

/* ----------------------------------------------------------- fixture */

/* What a test started, so that teardown stops it even after a failed assertion. */
struct fx {
    struct service *sv;
    na_pool *pool;
    pid_t pid; /* a child process, 0: none */
};

static int fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    int status;

    if (f->pid > 0) {
        kill(f->pid, SIGKILL);
        waitpid(f->pid, &status, 0);
    }
    /*
     * The service goes first, so that the agents' connections close from
     * its side: nng 1.5 can hang when it closes a req0 socket whose
     * connection is up (see README, known limits).
     */
    service_halt(f->sv);
    na_free(f->pool);
    service_free(f->sv);
    free(f);
    return 0;
}

/* ------------------------------------------------------------- tests */

static void five_agents_collect_and_aggregate_to_a_result_that_opens(void **state)
{
    struct counts n;
    size_t stuck;
    struct fx *f = *state;
    struct na_config cfg;
    struct na_stats st;
    const char *dirs[N_TOKENS];
    char err[256];
    uint64_t tasks = 0;

    f->sv = service_start(STUDY_SQL, NULL);
    agent_config(&cfg, f->sv->url);
    assert_int_equal(na_start(&f->pool, &cfg, all_dirs(dirs), N_TOKENS, err, sizeof err), NA_OK);
    assert_int_equal(na_count(f->pool), N_TOKENS);
    assert_int_equal(wait_study(f->sv, STUDY_WAIT_MS), QR_DONE);
    check_result(f->sv);
    /* Every agent is stopped with its token closed, even one whose socket nng could not close. */
    service_halt(f->sv);
    stuck = na_stop(f->pool);
    if (stuck > 0)
        print_message("note: nng did not close %zu socket(s) in time\n", stuck);
    assert_int_equal(na_running(f->pool), 0);
    for (size_t i = 0; i < N_TOKENS; i++) {
        na_stats(f->pool, i, &st);
        assert_int_equal(st.state, NA_STOPPED);
        assert_string_equal(st.error, "");
        assert_string_equal(na_dir(f->pool, i), W.dirs[i]);
        assert_memory_equal(st.token_id, W.ids[i], 32);
        assert_int_equal(st.collected, 1);
        assert_int_equal(st.refused, 0);
        assert_int_equal(st.admissions, 1);
        assert_int_equal(st.reconnects, 0);
        tasks += st.tasks;
    }
    n = counts_of(f->sv);
    /* Every task handed out came back (each once: the coordinator counts them). */
    assert_true(tasks >= 1);
    assert_int_equal(tasks, n.results);
    assert_int_equal(n.uploads, N_TOKENS);
    assert_int_equal(n.duplicates, 0);
    assert_int_equal(n.admitted, N_TOKENS);
}

static void agents_admit_again_and_resend_when_the_service_restarts_mid_collection(void **state)
{
    struct counts n;
    struct fx *f = *state;
    struct misbehave mb = {false, 3};
    struct na_config cfg;
    struct na_stats st;
    const char *dirs[N_TOKENS];
    char err[256];
    uint64_t reconnects = 0, admissions = 0;

    /* Collection stays open until its deadline, so the resent upload finds it open. */
    f->sv = service_start(STUDY_SQL_DEADLINE, &mb);
    agent_config(&cfg, f->sv->url);
    assert_int_equal(na_start(&f->pool, &cfg, all_dirs(dirs), N_TOKENS, err, sizeof err), NA_OK);
    assert_int_equal(wait_study(f->sv, STUDY_WAIT_MS), QR_DONE);
    /* The coordinator saw each token once, and the result counts each once. */
    check_result(f->sv);
    service_halt(f->sv);
    na_stop(f->pool);
    n = counts_of(f->sv);
    assert_int_equal(n.restarts, 1);
    /* The upload taken but not answered came again, on an admitted connection. */
    assert_int_equal(n.uploads, N_TOKENS + 1);
    assert_int_equal(n.duplicates, 1);
    for (size_t i = 0; i < N_TOKENS; i++) {
        na_stats(f->pool, i, &st);
        assert_int_equal(st.state, NA_STOPPED);
        assert_int_equal(st.collected, 1);
        reconnects += st.reconnects;
        admissions += st.admissions;
    }
    assert_true(reconnects >= 1);
    assert_true(admissions > N_TOKENS);
}

static void an_agent_whose_token_is_not_provisioned_stops_with_a_clear_error(void **state)
{
    struct fx *f = *state;
    struct na_config cfg;
    struct na_stats st;
    const char *dirs[2] = {W.bare, W.dirs[0]};
    char err[256];
    int64_t end;

    f->sv = service_start(STUDY_SQL, NULL);
    agent_config(&cfg, f->sv->url);
    assert_int_equal(na_start(&f->pool, &cfg, dirs, 2, err, sizeof err), NA_OK);
    end = mono_ms() + 10000;
    while (na_running(f->pool) > 1 && mono_ms() < end)
        sleep_ms(20);
    assert_int_equal(na_running(f->pool), 1);
    na_stats(f->pool, 0, &st);
    assert_int_equal(st.state, NA_FAILED);
    assert_non_null(strstr(st.error, "not provisioned"));
    assert_int_equal(st.admissions, 0);
    na_stats(f->pool, 1, &st);
    assert_int_equal(st.state, NA_RUNNING);
}

static void tokens_that_do_not_open_stop_the_pool_before_it_starts(void **state)
{
    struct fx *f = *state;
    struct na_config cfg;
    const char *dirs[2];
    char err[256], notoken[160];
    na_pool *pool = NULL;

    memset(&cfg, 0, sizeof cfg);
    cfg.url = "ipc:///nonexistent/cohort-agentd.sock";
    /* A directory that is not a token. */
    snprintf(notoken, sizeof notoken, "%s/empty", W.base);
    assert_int_equal(mkdir(notoken, 0700), 0);
    dirs[0] = W.dirs[0];
    dirs[1] = notoken;
    assert_int_equal(na_start(&pool, &cfg, dirs, 2, err, sizeof err), NA_ERR_TOKEN);
    assert_null(pool);
    assert_non_null(strstr(err, "not a Cohort token"));
    /* The first token was opened and closed again: a pool of it alone starts. */
    assert_int_equal(na_start(&f->pool, &cfg, dirs, 1, err, sizeof err), NA_OK);
    /* The same token twice: the second is busy. */
    assert_int_equal(na_start(&pool, &cfg, dirs, 1, err, sizeof err), NA_ERR_TOKEN);
    assert_null(pool);
    assert_non_null(strstr(err, "busy"));
    /* Bad addresses and options. */
    cfg.url = "http://example.org";
    assert_int_equal(na_start(&pool, &cfg, dirs + 1, 1, err, sizeof err), NA_ERR_ARG);
    cfg.url = "tls+tcp://127.0.0.1:4433";
    assert_int_equal(na_start(&pool, &cfg, dirs + 1, 1, err, sizeof err), NA_ERR_ARG);
    assert_non_null(strstr(err, "needs --ca"));
    cfg.url = "tcp://127.0.0.1:4433";
    cfg.ca = "/nonexistent/ca.pem";
    assert_int_equal(na_start(&pool, &cfg, dirs + 1, 1, err, sizeof err), NA_ERR_ARG);
    assert_non_null(strstr(err, "for tls+tcp:// addresses only"));
    cfg.ca = NULL;
    assert_int_equal(na_start(&pool, &cfg, dirs + 1, 0, err, sizeof err), NA_ERR_ARG);
    assert_null(pool);
}

static void agents_retry_an_admission_never_answered_and_stop_promptly(void **state)
{
    struct counts n;
    struct fx *f = *state;
    struct misbehave mb = {true, 0};
    struct na_config cfg;
    struct na_stats st;
    const char *dirs[N_TOKENS];
    char err[256];
    int64_t t0;

    f->sv = service_start(STUDY_SQL, &mb);
    agent_config(&cfg, f->sv->url);
    cfg.request_timeout_ms = 300;
    cfg.max_backoff_ms = 200;
    assert_int_equal(na_start(&f->pool, &cfg, all_dirs(dirs), N_TOKENS, err, sizeof err), NA_OK);
    sleep_ms(2500);
    assert_int_equal(na_running(f->pool), N_TOKENS);
    n = counts_of(f->sv);
    /* Each agent tried again and again, each time from a fresh challenge. */
    assert_true(n.admits >= 3 * N_TOKENS);
    assert_true(n.hellos >= n.admits);
    assert_int_equal(n.uploads, 0);
    assert_int_equal(n.not_admitted, 0);
    service_halt(f->sv);
    t0 = mono_ms();
    na_stop(f->pool);
    assert_true(mono_ms() - t0 < 1000);
    for (size_t i = 0; i < N_TOKENS; i++) {
        na_stats(f->pool, i, &st);
        assert_int_equal(st.state, NA_STOPPED);
        assert_int_equal(st.admissions, 0);
        assert_int_equal(st.collected, 0);
    }
    assert_int_equal(study_state(f->sv), QR_COLLECTING);
}

static void agents_wait_for_a_service_that_starts_late(void **state)
{
    struct fx *f = *state;
    struct na_config cfg;
    const char *dirs[N_TOKENS];
    char err[256], url[160];

    /* The agents start first, on the address the next service will listen on. */
    snprintf(url, sizeof url, "ipc://%s/service%d.sock", W.base, W.study + 1);
    agent_config(&cfg, url);
    assert_int_equal(na_start(&f->pool, &cfg, all_dirs(dirs), N_TOKENS, err, sizeof err), NA_OK);
    sleep_ms(700);
    assert_int_equal(na_running(f->pool), N_TOKENS);
    f->sv = service_start(STUDY_SQL, NULL);
    assert_string_equal(f->sv->url, url);
    assert_int_equal(wait_study(f->sv, STUDY_WAIT_MS), QR_DONE);
    check_result(f->sv);
}

#define MANY_TOKENS 50

static void fifty_agents_in_one_process_take_part_in_one_study(void **state)
{
    struct fx *f = *state;
    struct na_config cfg;
    struct na_stats st;
    static char dirs[MANY_TOKENS][128];
    static uint8_t ids[MANY_TOKENS][32];
    const char *dirp[MANY_TOKENS];
    int64_t rows0 = W.rows, steps0 = W.steps, rows, steps;
    char err[256], sql[256];
    uint64_t tasks = 0;

    for (int i = 0; i < MANY_TOKENS; i++) {
        snprintf(dirs[i], sizeof dirs[i], "%s/many%d", W.base, i + 1);
        make_token(dirs[i], 10 + i, ids[i]);
        dirp[i] = dirs[i];
    }
    rows = W.rows - rows0;
    steps = W.steps - steps0;
    W.rows = rows0;
    W.steps = steps0;
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*), SUM(steps) FROM health SIZE %d WITH (min_participants = 3, "
             "min_group_size = 1)",
             MANY_TOKENS);
    f->sv = service_start(sql, NULL);
    agent_config(&cfg, f->sv->url);
    cfg.quiet = true;
    assert_int_equal(na_start(&f->pool, &cfg, dirp, MANY_TOKENS, err, sizeof err), NA_OK);
    assert_int_equal(wait_study(f->sv, STUDY_WAIT_MS), QR_DONE);
    check_result_of(f->sv, (const uint8_t(*)[32])ids, MANY_TOKENS, rows, steps);
    service_halt(f->sv);
    na_stop(f->pool);
    for (size_t i = 0; i < MANY_TOKENS; i++) {
        na_stats(f->pool, i, &st);
        assert_int_equal(st.state, NA_STOPPED);
        assert_int_equal(st.collected, 1);
        tasks += st.tasks;
    }
    assert_true(tasks >= 1);
}

/* Run a program with its output in files; its pid. */
static pid_t spawn(char *const argv[], const char *out, const char *err)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
            _exit(127);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* Wait up to ms for the child to exit; its status, or -1 (still running). */
static int wait_child(struct fx *f, int ms)
{
    int64_t end = mono_ms() + ms;
    int status = 0;

    for (;;) {
        pid_t r = waitpid(f->pid, &status, WNOHANG);
        if (r == f->pid) {
            f->pid = 0;
            return status;
        }
        if (r < 0 || mono_ms() >= end)
            return -1;
        sleep_ms(20);
    }
}

static bool file_has(const char *path, const char *text)
{
    static char buf[1 << 20];
    size_t n;
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        return false;
    n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    return strstr(buf, text) != NULL;
}

static void the_run_command_takes_part_as_a_process_and_exits_0_on_sigterm(void **state)
{
    struct fx *f = *state;
    char out[160], errf[160];
    char *argv[4 + 2 * N_TOKENS + 4];
    int status, k = 0;

    f->sv = service_start(STUDY_SQL, NULL);
    snprintf(out, sizeof out, "%s/run.out", W.base);
    snprintf(errf, sizeof errf, "%s/run.err", W.base);
    argv[k++] = (char *)AGENT_BIN;
    argv[k++] = (char *)"run";
    argv[k++] = (char *)"--connect";
    argv[k++] = f->sv->url;
    for (int i = 0; i < N_TOKENS; i++) {
        argv[k++] = (char *)"--dir";
        argv[k++] = W.dirs[i];
    }
    argv[k++] = (char *)"--max-backoff";
    argv[k++] = (char *)"1";
    argv[k] = NULL;
    f->pid = spawn(argv, out, errf);
    assert_int_equal(wait_study(f->sv, STUDY_WAIT_MS), QR_DONE);
    check_result(f->sv);
    assert_int_equal(kill(f->pid, SIGTERM), 0);
    status = wait_child(f, 10000);
    assert_int_not_equal(status, -1);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(file_has(out, "5 agents, 0 failed"));
    assert_true(file_has(errf, "admitted by the service"));
    assert_true(file_has(errf, "collected query"));
    assert_true(file_has(errf, "task done: query"));
    assert_true(file_has(errf, "SIGTERM: stopping the agents"));
    /* Ids and counts only: no ciphertext or key goes to the log. */
    assert_false(file_has(errf, "\\x"));
}

static void the_run_command_exits_with_an_error_when_every_agent_fails(void **state)
{
    struct fx *f = *state;
    char out[160], errf[160];
    char *argv[] = {(char *)AGENT_BIN, (char *)"run", (char *)"--connect", NULL,
                    (char *)"--dir",   W.bare,        (char *)"--quiet",   NULL};
    int status;

    f->sv = service_start(STUDY_SQL, NULL);
    argv[3] = f->sv->url;
    snprintf(out, sizeof out, "%s/fail.out", W.base);
    snprintf(errf, sizeof errf, "%s/fail.err", W.base);
    f->pid = spawn(argv, out, errf);
    status = wait_child(f, 10000);
    assert_int_not_equal(status, -1);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 3);
    assert_true(file_has(errf, "not provisioned"));
    assert_true(file_has(errf, "every agent stopped for an error"));
    /* --quiet: no line but the errors. */
    assert_false(file_has(errf, "started: service"));
    assert_true(file_has(out, "1 agent, 1 failed"));
}

#define FX_TEST(t) cmocka_unit_test_setup_teardown(t, fx_setup, fx_teardown)

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        FX_TEST(five_agents_collect_and_aggregate_to_a_result_that_opens),
        FX_TEST(agents_admit_again_and_resend_when_the_service_restarts_mid_collection),
        FX_TEST(an_agent_whose_token_is_not_provisioned_stops_with_a_clear_error),
        FX_TEST(tokens_that_do_not_open_stop_the_pool_before_it_starts),
        FX_TEST(agents_retry_an_admission_never_answered_and_stop_promptly),
        FX_TEST(agents_wait_for_a_service_that_starts_late),
        FX_TEST(fifty_agents_in_one_process_take_part_in_one_study),
        FX_TEST(the_run_command_takes_part_as_a_process_and_exits_0_on_sigterm),
        FX_TEST(the_run_command_exits_with_an_error_when_every_agent_fails),
    };
    if (argc == 4 && strcmp(argv[1], "--relay") == 0)
        return relay_main(argv[2], atoi(argv[3]));
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
