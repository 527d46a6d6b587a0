/*
 * sv_serve.c: cohort-querier serve, the querier service on nng.
 *
 * One rep0 socket listens on the configured address (tls+tcp:// with a
 * certificate for real use; tcp:// or ipc:// locally). A fixed pool of
 * contexts, each with its own aio, receives requests: nng's threads run
 * the callbacks, so thousands of participants cost thousands of pipes, not
 * threads. Every receive is bounded by NNG_OPT_RECVMAXSZ before it reaches
 * the core (qr_service), which validates the rest.
 *
 * The core is not thread safe: a callback takes the lock, hands the
 * request to qr_service_handle with the pipe's id as the connection, and,
 * when the core returns a journal record, appends it and makes it durable
 * (fdatasync) before the lock is released and the reply is sent. So no
 * reply ever acknowledges something a crash could lose, and the journal's
 * order is the order the core saw. When an append or a sync fails the
 * service stops, and from that moment no request reaches the core and no
 * reply leaves: the core still holds the step the journal lost, and would
 * otherwise answer a resent upload with "duplicate". At start the journal
 * is replayed through qr_service_replay: a service killed at any point
 * resumes every query where its last acknowledged step left it.
 *
 * A pipe's removal tells the core the connection is gone (its admission
 * with it). A tick thread moves time on (deadlines, task timeouts) and logs
 * each query's progress when it changes. SIGINT or SIGTERM stops it.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include "proto/cohort.pb-c.h"
#include "querier/querier.h"
#include "querier/sv.h"
#include "querier/sv_journal.h"
#include "shell/shell.h"
#include "token/token.h"

#define SV_CONTEXTS_DEFAULT 256u
#define SV_CONTEXTS_MAX 8192u
#define SV_AUTH_MAX 8u
#define SV_RECV_MAX (QR_REQUEST_MAX + 4096u)
#define SV_TICK_MS 200

struct server;

struct slot {
    struct server *sv;
    nng_aio *aio;
    nng_ctx ctx;
    int sending;
};

struct server {
    nng_socket sock;
    pthread_mutex_t lock; /* the core and the journal */
    qr_service *svc;
    struct sv_journal *journal;
    struct slot *slots;
    size_t n_slots;
    uint64_t requests, errors, journal_failures;
    volatile sig_atomic_t stopping;
    struct qr_coord_stats *last; /* per query, what was last logged */
    size_t n_last;
};

static volatile sig_atomic_t g_stop;
static volatile int g_exit_status;

/*
 * Debian's nng 1.5.2 can hang in nng_close while a connection is busy
 * (nng issues #1543, #1813). Everything acknowledged is in the journal, so
 * a stop that takes too long simply ends the process.
 */
static void *stop_watchdog(void *arg)
{
    struct timespec ts = {5, 0};

    (void)arg;
    nanosleep(&ts, NULL);
    _exit(g_exit_status);
}

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* ------------------------------------------------------------- options */

struct serve_opts {
    const char *listen;
    const char *journal;
    struct sh_tls tls;
    const char *token_auth[SV_AUTH_MAX];
    size_t n_token_auth;
    const char *plan_auth[SV_AUTH_MAX];
    size_t n_plan_auth;
    size_t contexts;
    size_t max_queries;
    struct qr_coord_config coord;
    bool quiet;
};

static void serve_usage(FILE *f)
{
    fprintf(f,
            "usage: cohort-querier serve --listen URL --journal FILE --authority CERT\n"
            "         [--token-authority CERT]... [--plan-authority CERT]...\n"
            "         [--tls-cert PEM] [--contexts N] [--max-queries N]\n"
            "         [--token-ram BYTES] [--task-timeout SECONDS] [--quiet]\n"
            "\n"
            "  --listen URL           tls+tcp://HOST:PORT (needs --tls-cert), or tcp://, ipc://\n"
            "  --journal FILE         every accepted plan, upload and task result, fsync'd\n"
            "                         before it is acknowledged; replayed at start\n"
            "  --authority CERT       an authority (its authority.cert) trusted for both\n"
            "                         tokens and researchers\n"
            "  --token-authority CERT admit tokens certified by this authority\n"
            "  --plan-authority CERT  take plans from researchers certified by it\n"
            "  --tls-cert PEM         the service's certificate chain and private key\n"
            "  --contexts N           requests in flight at once (default %u)\n"
            "  --max-queries N        queries held at once (default 64)\n"
            "  --token-ram BYTES      a token's RAM, to size partitions (default 65536)\n"
            "  --task-timeout S       reassign a task not back by then (default 30)\n",
            SV_CONTEXTS_DEFAULT);
}

static int parse_size(const char *opt, const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
    if (sh_parse_u64(v, lo, hi, out) == 0)
        return 0;
    fprintf(stderr,
            "cohort-querier serve: %s must be a whole number from %" PRIu64 " to %" PRIu64 "\n",
            opt, lo, hi);
    return -1;
}

static int parse_serve(int argc, char **argv, struct serve_opts *o)
{
    uint64_t v;

    memset(o, 0, sizeof *o);
    qr_coord_config_default(&o->coord);
    o->contexts = SV_CONTEXTS_DEFAULT;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            serve_usage(stdout);
            return 1;
        }
        if (strcmp(a, "--quiet") == 0) {
            o->quiet = true;
            continue;
        }
        if (val == NULL) {
            fprintf(stderr, "cohort-querier serve: %s needs a value\n", a);
            return -1;
        }
        i++;
        if (strcmp(a, "--listen") == 0)
            o->listen = val;
        else if (strcmp(a, "--journal") == 0)
            o->journal = val;
        else if (strcmp(a, "--tls-cert") == 0)
            o->tls.cert_key = val;
        else if (strcmp(a, "--authority") == 0 || strcmp(a, "--token-authority") == 0 ||
                 strcmp(a, "--plan-authority") == 0) {
            bool tok = strcmp(a, "--plan-authority") != 0,
                 plan = strcmp(a, "--token-authority") != 0;

            if ((tok && o->n_token_auth == SV_AUTH_MAX) ||
                (plan && o->n_plan_auth == SV_AUTH_MAX)) {
                fprintf(stderr, "cohort-querier serve: at most %u authorities of each kind\n",
                        SV_AUTH_MAX);
                return -1;
            }
            if (tok)
                o->token_auth[o->n_token_auth++] = val;
            if (plan)
                o->plan_auth[o->n_plan_auth++] = val;
        } else if (strcmp(a, "--contexts") == 0) {
            if (parse_size(a, val, 1, SV_CONTEXTS_MAX, &v))
                return -1;
            o->contexts = (size_t)v;
        } else if (strcmp(a, "--max-queries") == 0) {
            if (parse_size(a, val, 1, 100000, &v))
                return -1;
            o->max_queries = (size_t)v;
        } else if (strcmp(a, "--token-ram") == 0) {
            if (parse_size(a, val, 4096, (uint64_t)1 << 30, &v))
                return -1;
            o->coord.token_ram = (size_t)v;
        } else if (strcmp(a, "--task-timeout") == 0) {
            if (parse_size(a, val, 1, 86400, &v))
                return -1;
            o->coord.task_timeout_ms = (int64_t)v * 1000;
        } else {
            fprintf(stderr, "cohort-querier serve: unknown option %s\n", a);
            return -1;
        }
    }
    if (o->listen == NULL || o->journal == NULL || o->n_token_auth == 0 || o->n_plan_auth == 0) {
        fprintf(stderr, "cohort-querier serve: --listen, --journal and --authority (or both "
                        "--token-authority and --plan-authority) are required\n");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ authority */

int sv_root_key(const char *path, uint8_t pk[32], char *err, size_t err_len)
{
    uint8_t *buf = NULL;
    size_t len;
    Cohort__CertChain *chain;
    const Cohort__Certificate *root;
    Cohort__CertBody *body = NULL;
    int rc = -1;

    if (sh_read_file(path, 1u << 20, &buf, &len, err, err_len) != 0)
        return -1;
    chain = cohort__cert_chain__unpack(NULL, len, buf);
    if (chain == NULL || chain->n_certs == 0 || chain->certs[chain->n_certs - 1] == NULL) {
        snprintf(err, err_len, "%s: not a certificate file", path);
        goto done;
    }
    root = chain->certs[chain->n_certs - 1];
    body = cohort__cert_body__unpack(NULL, root->body.len, root->body.data);
    if (body == NULL || body->sign_pk.len != 32 || body->role != COHORT__ROLE__ROLE_AUTHORITY) {
        snprintf(err, err_len, "%s: its last certificate is not an authority's", path);
        goto done;
    }
    /* A root signs itself. */
    if (!sh_cert_signed_by(root->signature.data, root->signature.len, root->body.data,
                           root->body.len, body->sign_pk.data)) {
        snprintf(err, err_len, "%s: its root certificate is not self-signed", path);
        goto done;
    }
    memcpy(pk, body->sign_pk.data, 32);
    rc = 0;
done:
    if (body)
        cohort__cert_body__free_unpacked(body, NULL);
    if (chain)
        cohort__cert_chain__free_unpacked(chain, NULL);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------- serving */

static void recv_next(struct slot *sl)
{
    sl->sending = 0;
    nng_ctx_recv(sl->ctx, sl->aio);
}

static void on_io(void *arg)
{
    struct slot *sl = arg;
    struct server *sv = sl->sv;
    uint8_t *reply = NULL, *record = NULL;
    size_t reply_len = 0, record_len = 0;
    char err[SH_ERR_MAX];
    nng_msg *msg, *out;
    nng_pipe pipe;
    int rv = nng_aio_result(sl->aio);

    if (sl->sending) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(sl->aio));
            nng_aio_set_msg(sl->aio, NULL);
        }
        if (rv == NNG_ECLOSED || sv->stopping)
            return;
        recv_next(sl);
        return;
    }
    if (rv != 0) {
        if (rv == NNG_ECLOSED || sv->stopping)
            return;
        recv_next(sl);
        return;
    }
    msg = nng_aio_get_msg(sl->aio);
    nng_aio_set_msg(sl->aio, NULL);
    pipe = nng_msg_get_pipe(msg);

    pthread_mutex_lock(&sv->lock);
    if (sv->stopping) {
        /*
         * After a journal failure the core may hold a step the journal
         * lost: any answer built on it (a duplicate upload, a status)
         * would acknowledge it. Nothing more is taken or answered.
         */
        pthread_mutex_unlock(&sv->lock);
        nng_msg_free(msg);
        return;
    }
    sv->requests++;
    qr_service_handle(sv->svc, (uint64_t)nng_pipe_id(pipe), sh_now_ms(), nng_msg_body(msg),
                      nng_msg_len(msg), &reply, &reply_len, &record, &record_len);
    if (record != NULL) {
        if (sv_journal_append(sv->journal, record, record_len, err, sizeof err) != 0 ||
            sv_journal_sync(sv->journal, err, sizeof err) != 0) {
            /*
             * The core took it but the disk did not: nothing may be
             * acknowledged from here on. Stop; a restart replays what is
             * durable and the peer sends its request again.
             */
            sv->journal_failures++;
            sh_log("journal: %s; stopping so that nothing unjournaled is acknowledged", err);
            g_stop = 1;
            sv->stopping = 1;
            free(reply);
            reply = NULL;
        }
    }
    pthread_mutex_unlock(&sv->lock);
    free(record);
    nng_msg_free(msg);

    if (reply == NULL || nng_msg_alloc(&out, 0) != 0 ||
        nng_msg_append(out, reply, reply_len) != 0) {
        free(reply);
        if (!sv->stopping)
            recv_next(sl);
        return;
    }
    free(reply);
    nng_aio_set_msg(sl->aio, out);
    sl->sending = 1;
    nng_ctx_send(sl->ctx, sl->aio);
}

static void on_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    struct server *sv = arg;

    if (ev != NNG_PIPE_EV_REM_POST)
        return;
    pthread_mutex_lock(&sv->lock);
    qr_service_disconnect(sv->svc, (uint64_t)nng_pipe_id(p));
    pthread_mutex_unlock(&sv->lock);
}

static int replay_record(void *ctx, const uint8_t *rec, size_t len)
{
    struct server *sv = ctx;
    int rc = qr_service_replay(sv->svc, rec, len);

    /* A request the coordinator no longer takes is logged, not fatal. */
    if (rc == QR_ERR_BAD_UPLOAD || rc == QR_ERR_UNKNOWN_QUERY || rc == QR_ERR_DUPLICATE ||
        rc == QR_ERR_CLOSED || rc == QR_ERR_UNKNOWN_TASK || rc == QR_ERR_BAD_RESULT ||
        rc == QR_ERR_FAILED) {
        sh_log("journal: a record did not apply again (%s); skipped", qr_strerror(rc));
        return 0;
    }
    return rc;
}

static const char *state_name(enum qr_state s)
{
    switch (s) {
    case QR_COLLECTING:
        return "collecting";
    case QR_AGGREGATING:
        return "aggregating";
    case QR_DONE:
        return "done";
    default:
        return "failed";
    }
}

static void log_progress(struct server *sv)
{
    size_t n = qr_service_queries(sv->svc);

    if (n > sv->n_last) {
        struct qr_coord_stats *l = realloc(sv->last, n * sizeof *l);

        if (l == NULL)
            return;
        memset(l + sv->n_last, 0xff, (n - sv->n_last) * sizeof *l);
        sv->last = l;
        sv->n_last = n;
    }
    for (size_t i = 0; i < n; i++) {
        struct qr_service_query q;
        char id[17];

        if (qr_service_query(sv->svc, i, &q) != 0)
            continue;
        if (q.stats.state == sv->last[i].state &&
            q.stats.contributions == sv->last[i].contributions &&
            q.stats.tasks_done == sv->last[i].tasks_done)
            continue;
        sh_hex(id, q.query_id, 8);
        if (q.stats.state == QR_FAILED)
            sh_log("query %s (%s): failed: %s", id, q.study, q.stats.failure_msg);
        else
            sh_log("query %s (%s): %s, %" PRIu64 " contributions, level %u, %" PRIu64 " of %" PRIu64
                   " tasks done",
                   id, q.study, state_name(q.stats.state), q.stats.contributions, q.stats.level,
                   q.stats.tasks_done, q.stats.partitions);
        sv->last[i] = q.stats;
    }
}

int sv_serve_main(int argc, char **argv)
{
    struct serve_opts o;
    struct server sv;
    struct qr_service_config cfg;
    uint8_t token_auth[SV_AUTH_MAX][32], plan_auth[SV_AUTH_MAX][32];
    struct sv_journal_stats jst;
    char err[SH_ERR_MAX];
    nng_listener l;
    int rc, rv, status = SV_EXIT_FAILED;

    rc = parse_serve(argc, argv, &o);
    if (rc != 0)
        return rc > 0 ? 0 : SV_EXIT_USAGE;
    sh_log_init("cohort-querier", o.quiet);
    for (size_t i = 0; i < o.n_token_auth; i++)
        if (sv_root_key(o.token_auth[i], token_auth[i], err, sizeof err) != 0) {
            fprintf(stderr, "cohort-querier serve: %s\n", err);
            return SV_EXIT_USAGE;
        }
    for (size_t i = 0; i < o.n_plan_auth; i++)
        if (sv_root_key(o.plan_auth[i], plan_auth[i], err, sizeof err) != 0) {
            fprintf(stderr, "cohort-querier serve: %s\n", err);
            return SV_EXIT_USAGE;
        }

    memset(&sv, 0, sizeof sv);
    memset(&cfg, 0, sizeof cfg);
    cfg.coord = o.coord;
    cfg.token_authorities = (const uint8_t(*)[32])token_auth;
    cfg.n_token_authorities = o.n_token_auth;
    cfg.plan_authorities = (const uint8_t(*)[32])plan_auth;
    cfg.n_plan_authorities = o.n_plan_auth;
    cfg.max_queries = o.max_queries;
    if (qr_service_new(&sv.svc, &cfg) != 0) {
        fprintf(stderr, "cohort-querier serve: cannot start the service core\n");
        return SV_EXIT_FAILED;
    }
    pthread_mutex_init(&sv.lock, NULL);
    if (sv_journal_open(&sv.journal, o.journal, replay_record, &sv, &jst, err, sizeof err) != 0) {
        fprintf(stderr, "cohort-querier serve: %s\n", err);
        goto out;
    }
    sh_log("journal %s: %" PRIu64 " records replayed, %zu queries%s", o.journal, jst.records,
           qr_service_queries(sv.svc),
           jst.dropped_bytes ? " (an unfinished last record was cut off)" : "");
    log_progress(&sv);

    if ((rv = nng_rep0_open(&sv.sock)) != 0 ||
        (rv = nng_socket_set_size(sv.sock, NNG_OPT_RECVMAXSZ, SV_RECV_MAX)) != 0 ||
        (rv = nng_pipe_notify(sv.sock, NNG_PIPE_EV_REM_POST, on_pipe, &sv)) != 0) {
        fprintf(stderr, "cohort-querier serve: %s\n", nng_strerror(rv));
        goto out;
    }
    if ((rv = nng_listener_create(&l, sv.sock, o.listen)) != 0) {
        fprintf(stderr, "cohort-querier serve: %s: %s\n", o.listen, nng_strerror(rv));
        goto out;
    }
    if (sh_tls_listener(&l, o.listen, &o.tls, err, sizeof err) != 0) {
        fprintf(stderr, "cohort-querier serve: %s\n", err);
        goto out;
    }
    if ((rv = nng_listener_start(l, 0)) != 0) {
        fprintf(stderr, "cohort-querier serve: cannot listen on %s: %s\n", o.listen,
                nng_strerror(rv));
        goto out;
    }
    sv.slots = calloc(o.contexts, sizeof *sv.slots);
    if (sv.slots == NULL)
        goto out;
    for (size_t i = 0; i < o.contexts; i++) {
        struct slot *sl = &sv.slots[i];

        sl->sv = &sv;
        if ((rv = nng_aio_alloc(&sl->aio, on_io, sl)) != 0 ||
            (rv = nng_ctx_open(&sl->ctx, sv.sock)) != 0) {
            fprintf(stderr, "cohort-querier serve: %s\n", nng_strerror(rv));
            goto out;
        }
        sv.n_slots++;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < sv.n_slots; i++)
        recv_next(&sv.slots[i]);
    sh_log("listening on %s with %zu contexts", o.listen, sv.n_slots);

    while (!g_stop) {
        struct timespec ts = {0, SV_TICK_MS * 1000000L};

        nanosleep(&ts, NULL);
        pthread_mutex_lock(&sv.lock);
        qr_service_tick(sv.svc, sh_now_ms());
        log_progress(&sv);
        pthread_mutex_unlock(&sv.lock);
    }
    status = sv.journal_failures ? SV_EXIT_FAILED : 0;
    sh_log("stopping: %" PRIu64 " requests served", sv.requests);
    g_exit_status = status;
    {
        pthread_t t;

        if (pthread_create(&t, NULL, stop_watchdog, NULL) == 0)
            pthread_detach(t);
    }

out:
    sv.stopping = 1;
    nng_close(sv.sock);
    for (size_t i = 0; i < sv.n_slots; i++) {
        nng_aio_stop(sv.slots[i].aio);
        nng_ctx_close(sv.slots[i].ctx);
        nng_aio_free(sv.slots[i].aio);
    }
    free(sv.slots);
    free(sv.last);
    sv_journal_close(sv.journal);
    qr_service_free(sv.svc);
    pthread_mutex_destroy(&sv.lock);
    return status;
}
