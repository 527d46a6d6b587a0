/*
 * pt_http.c: the agent's local HTTP API on nng's HTTP server (pt_http.h).
 *
 *   GET    /v1/identity                 anyone      the token's key and certificate
 *   POST   /v1/docs?type=&author=&subject=&tag=&created=&modified=
 *                                       POST rule   body: the content; 201
 *   GET    /v1/docs?type=&field=&value=&after=&limit=
 *                                       GET rule    a page of metadata
 *   GET    /v1/docs/{id}?rev=           GET rule    the content
 *   GET    /v1/docs/{id}/meta?rev=      GET rule    its metadata
 *   PUT    /v1/docs/{id}?rev=&type=...  PUT rule    a new revision; 409 if stale
 *   DELETE /v1/docs/{id}?rev=           DELETE rule 204; 409 if stale
 *   POST   /v1/credentials              owner, or an app delegating
 *   GET    /v1/credentials              owner
 *   DELETE /v1/credentials/{id}         owner, or the delegator
 *   POST   /v1/shares                   owner       201 {"share","seq","delivered"}
 *   GET    /v1/shares                   owner
 *   GET    /v1/shares/{id}/package      owner       the latest package
 *   DELETE /v1/shares/{id}              owner       {"revoked","delivered"}
 *   POST   /v1/inbox                    anyone      body: a package; the token decides
 *   GET    /v1/audit?after=&limit=      owner
 *
 * A request goes through these steps, each of which may answer it:
 *   1. on nng's thread (on_request): the Host header must name a loopback
 *      address (400); the target must be a clean path (400 for a percent
 *      escape, a "." or ".." segment, a character outside [A-Za-z0-9._~-/]
 *      or a malformed id: no path can name anything but a route, and ids
 *      are parsed into 16 bytes, so nothing outside the store is ever
 *      named), a known route (404) and method (405); the query's
 *      parameters known to the route, decoded, valid UTF-8 (400); a
 *      credential present and well formed where one is needed (401); a
 *      Content-Length within the route's limit (413, 411 for a chunked
 *      body), and the server not overloaded (503).
 *   2. still on nng's threads: the body is read (after "100 Continue" if
 *      the client asked for it) into a buffer of exactly its length,
 *      within cfg.body_ms (else the connection is dropped). An answer
 *      given before an announced body is read closes the connection, so
 *      that the body is never parsed as a request.
 *   3. on a worker: the agent's call, under the token lock, and the answer.
 *      A write is followed by share syncs (still under the lock: the new
 *      packages go to the outbox) and, after the answer is sent, by the
 *      deliveries of every package still due.
 * What nng refuses before step 1 (a request line that is not HTTP/1.x, a
 * target that does not start with '/', an HTTP/1.1 request without Host)
 * gets nng's own answer, and no log line: it never names a route.
 *
 * PUT takes the new revision's metadata from its query when it gives a
 * type, and otherwise keeps the current revision's: a received document's
 * from the token's list of shares (no read of the share is spent), an own
 * one's read first (which needs the GET right too). A PUT on a document
 * received read-write writes it back: the token's return package is kept
 * in the outbox under the share's id and delivered to the owner agent's
 * inbox (the reply_to its packages carry; this server sets its own URL on
 * every package it makes), and the answer says whether it got there
 * ("delivered"). The inbox takes return packages like any other, and a
 * package taken is followed by share syncs, as a write is: a write back
 * changed one of the owner's documents, which its other shares carry on.
 * A document's "shared" (received in a share)
 * comes from the token's list of shares, kept between requests until the
 * inbox takes a package: while this server holds the token, nothing else
 * can change it.
 *
 * What the token refuses maps to a status (pt_http_status); its reason is
 * never sent, only tk_strerror's fixed sentence and the code's name. A
 * body that holds plaintext (a document's, in or out) is wiped before its
 * buffer is freed; the copy nng makes to send an answer is nng's.
 *
 * The outbox (cfg.outbox) keeps, for each share this agent made, its
 * latest package (<id>.pkg), where it goes (<id>.url, when the owner gave
 * a delivery URL) and whether it is still due (<id>.due, holding a
 * generation number, so that a delivery that raced with a newer package
 * does not mark the newer one delivered). A failed delivery is retried
 * after the next write and when the server starts.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <nng/nng.h>
#include <nng/supplemental/http/http.h>
#include <sodium.h>

#include "participant/pt_doc_int.h"
#include "participant/pt_http.h"
#include "participant/pt_json.h"
#include "participant/pt_owner.h"
#include "shell/shell.h"

#define ID_HEX (2 * PT_DOC_ID_LEN)
#define LOG_LINE_MAX 256u
#define SHARE_PAGE 4u /* shares listed per token call (each is ~33 KiB here) */

/* ------------------------------------------------------------- routes */

enum method {
    M_OTHER = 0,
    M_GET = 1,
    M_POST = 2,
    M_PUT = 4,
    M_DELETE = 8,
};

enum route_id {
    R_IDENTITY,
    R_DOCS,
    R_DOC,
    R_DOC_META,
    R_CREDS,
    R_CRED,
    R_SHARES,
    R_SHARE,
    R_SHARE_PKG,
    R_INBOX,
    R_AUDIT,
    R_COUNT,
};

static const char *const route_pattern[R_COUNT] = {
    [R_IDENTITY] = "/v1/identity",
    [R_DOCS] = "/v1/docs",
    [R_DOC] = "/v1/docs/{id}",
    [R_DOC_META] = "/v1/docs/{id}/meta",
    [R_CREDS] = "/v1/credentials",
    [R_CRED] = "/v1/credentials/{id}",
    [R_SHARES] = "/v1/shares",
    [R_SHARE] = "/v1/shares/{id}",
    [R_SHARE_PKG] = "/v1/shares/{id}/package",
    [R_INBOX] = "/v1/inbox",
    [R_AUDIT] = "/v1/audit",
};

enum body_kind {
    BODY_NONE,
    BODY_JSON,
    BODY_BYTES, /* a document or a package: doc_max */
};

struct job;

struct endpoint {
    enum route_id route;
    unsigned method;
    bool auth;
    enum body_kind body;
    const char *params[8]; /* the query parameters it takes */
    const char *multi;     /* the one that may repeat */
    void (*run)(struct job *j);
};

static void run_identity(struct job *j);
static void run_doc_create(struct job *j);
static void run_doc_list(struct job *j);
static void run_doc_get(struct job *j);
static void run_doc_meta(struct job *j);
static void run_doc_put(struct job *j);
static void run_doc_delete(struct job *j);
static void run_cred_issue(struct job *j);
static void run_cred_list(struct job *j);
static void run_cred_revoke(struct job *j);
static void run_share_create(struct job *j);
static void run_share_list(struct job *j);
static void run_share_revoke(struct job *j);
static void run_share_package(struct job *j);
static void run_inbox(struct job *j);
static void run_audit(struct job *j);

#define META_PARAMS "type", "author", "subject", "tag", "created", "modified"

static const struct endpoint endpoints[] = {
    {R_IDENTITY, M_GET, false, BODY_NONE, {NULL}, NULL, run_identity},
    {R_DOCS, M_POST, true, BODY_BYTES, {META_PARAMS, NULL}, "tag", run_doc_create},
    {R_DOCS,
     M_GET,
     true,
     BODY_NONE,
     {"type", "field", "value", "after", "limit", NULL},
     "value",
     run_doc_list},
    {R_DOC, M_GET, true, BODY_NONE, {"rev", NULL}, NULL, run_doc_get},
    {R_DOC, M_PUT, true, BODY_BYTES, {"rev", META_PARAMS, NULL}, "tag", run_doc_put},
    {R_DOC, M_DELETE, true, BODY_NONE, {"rev", NULL}, NULL, run_doc_delete},
    {R_DOC_META, M_GET, true, BODY_NONE, {"rev", NULL}, NULL, run_doc_meta},
    {R_CREDS, M_POST, true, BODY_JSON, {NULL}, NULL, run_cred_issue},
    {R_CREDS, M_GET, true, BODY_NONE, {NULL}, NULL, run_cred_list},
    {R_CRED, M_DELETE, true, BODY_NONE, {NULL}, NULL, run_cred_revoke},
    {R_SHARES, M_POST, true, BODY_JSON, {NULL}, NULL, run_share_create},
    {R_SHARES, M_GET, true, BODY_NONE, {NULL}, NULL, run_share_list},
    {R_SHARE, M_DELETE, true, BODY_NONE, {NULL}, NULL, run_share_revoke},
    {R_SHARE_PKG, M_GET, true, BODY_NONE, {NULL}, NULL, run_share_package},
    {R_INBOX, M_POST, false, BODY_BYTES, {NULL}, NULL, run_inbox},
    {R_AUDIT, M_GET, true, BODY_NONE, {"after", "limit", NULL}, NULL, run_audit},
};

#define N_ENDPOINTS (sizeof endpoints / sizeof endpoints[0])

/* ------------------------------------------------------------- server */

struct pt_http {
    nng_http_server *srv;
    nng_http_handler *handler;
    struct pt_http_config cfg;
    char outbox[PATH_MAX];
    int port;
    atomic_int refs; /* the owner's and the handler's */

    pthread_mutex_t token_mu; /* one whole agent call at a time */
    pthread_mutex_t outbox_mu;
    pthread_mutex_t log_mu;

    pthread_mutex_t q_mu; /* the queue, the counters and the flags below */
    pthread_cond_t q_cv;
    struct job *q_head, *q_tail;
    size_t q_len;
    size_t inflight; /* body bytes held */
    size_t live;     /* jobs that exist */
    pthread_cond_t live_cv;
    bool stopping, closed, started;
    int sync_failed; /* the last share sync's error (logged when it changes) */
    /* The documents received in shares (under token_mu): see received(). */
    uint8_t (*recv_ids)[PT_DOC_ID_LEN];
    size_t recv_n;
    bool recv_valid;
    pthread_t workers[PT_HTTP_WORKERS];
    unsigned n_workers;
    uint64_t generation;                /* of the outbox's due marks */
    char self_url[PT_REPLY_TO_MAX + 1]; /* http://HOST:PORT as it listens: a package's reply_to */
};

/* A parameter of the query string, decoded. */
struct param {
    const char *key;
    const char *value;
};

/* What a request gets back. */
struct answer {
    int status;
    const char *ctype;
    uint8_t *body; /* malloc'd */
    size_t len;
    bool wipe;        /* the body holds plaintext */
    bool close;       /* close the connection after it */
    const char *code; /* for the log of a 5xx */
    char location[64];
    char revision[24];
    char allow[40];
};

struct job {
    struct job *next;
    struct pt_http *h;
    nng_aio *aio; /* the handler's */
    nng_http_conn *conn;
    nng_aio *io; /* ours: 100 Continue, then the body */
    bool continued;
    const struct endpoint *ep;
    enum route_id route;
    unsigned method;
    char method_name[12];
    uint8_t id[PT_DOC_ID_LEN];
    bool has_cred;
    struct pt_cred cred;
    uint32_t n_params;
    struct param params[PT_HTTP_PARAMS_MAX];
    char qbuf[PT_HTTP_URI_MAX + 2 * PT_HTTP_PARAMS_MAX + 2]; /* names and values, decoded */
    uint8_t *body;
    size_t body_len, reserved;
    bool deliver_after; /* after the answer, deliver what is due */
    bool unread;        /* a body was announced and not read */
    int64_t t0_ms;
    struct answer ans;
};

static int64_t now_of(struct pt_http *h)
{
    return h->cfg.clock != NULL ? h->cfg.clock(h->cfg.clock_ctx) : (int64_t)time(NULL);
}

static void h_unref(struct pt_http *h)
{
    if (atomic_fetch_sub(&h->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&h->token_mu);
    pthread_mutex_destroy(&h->outbox_mu);
    pthread_mutex_destroy(&h->log_mu);
    pthread_mutex_destroy(&h->q_mu);
    pthread_cond_destroy(&h->q_cv);
    pthread_cond_destroy(&h->live_cv);
    free(h->recv_ids);
    free(h);
}

static void handler_dtor(void *arg)
{
    h_unref(arg);
}

/* ---------------------------------------------------------------- log */

static void log_line(struct pt_http *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_line(struct pt_http *h, const char *fmt, ...)
{
    char line[LOG_LINE_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&h->log_mu);
    if (!h->closed) {
        if (h->cfg.log != NULL)
            h->cfg.log(h->cfg.log_ctx, line);
        else
            sh_log("http: %s", line);
    }
    pthread_mutex_unlock(&h->log_mu);
}

/* ------------------------------------------------------------ answers */

static void answer_reset(struct answer *a)
{
    if (a->body != NULL && a->wipe)
        sodium_memzero(a->body, a->len);
    free(a->body);
    memset(a, 0, sizeof *a);
}

/* The answer is the writer's text (or, if that fails, a 500). */
static void answer_json(struct answer *a, int status, struct pt_jw *w)
{
    char *text = NULL;
    size_t len = 0;
    int rc = pt_jw_finish(w, &text, &len);

    answer_reset(a);
    if (rc != 0) {
        static const char oops[] = "{\"error\":\"the answer could not be built\","
                                   "\"code\":\"INTERNAL\"}";
        a->status = 500;
        a->code = "INTERNAL";
        text = malloc(sizeof oops);
        if (text != NULL)
            memcpy(text, oops, sizeof oops);
        len = text != NULL ? sizeof oops - 1 : 0;
    } else {
        a->status = status;
    }
    a->ctype = "application/json";
    a->body = (uint8_t *)text;
    a->len = len;
}

static void answer_error(struct answer *a, int status, const char *code, const char *sentence)
{
    struct pt_jw w;
    pt_jw_init(&w, 1024);
    pt_jw_object(&w);
    pt_jw_key(&w, "error");
    pt_jw_str(&w, sentence);
    pt_jw_key(&w, "code");
    pt_jw_str(&w, code);
    pt_jw_object_end(&w);
    answer_json(a, status, &w);
    if (a->status == status)
        a->code = code;
}

int pt_http_status(int token_status)
{
    switch (token_status) {
    case TK_ERR_AUTH:
        return 401;
    case TK_ERR_DENIED:
    case TK_ERR_EXPIRED:
    case TK_ERR_UNTRUSTED:
    case TK_ERR_ROLE:
        return 403;
    case TK_ERR_NOT_FOUND:
        return 404;
    case TK_ERR_CONFLICT:
    case TK_ERR_REPLAY:
    case TK_ERR_DUPLICATE:
        return 409;
    case TK_ERR_TOO_LARGE:
        return 413;
    case TK_ERR_MALFORMED:
    case TK_ERR_TRUNCATED:
    case TK_ERR_BAD_CERT:
    case TK_ERR_SCHEMA:
        return 400;
    case TK_ERR_NOT_PROVISIONED:
    case TK_ERR_UNSUPPORTED:
        return 501;
    default:
        return 500;
    }
}

/* The inbox's own mapping: a package that fails the token's checks is
 * forged (403), one that does not decode is bad input (400). */
static int inbox_status(int token_status)
{
    switch (token_status) {
    case TK_ERR_BAD_SIGNATURE:
    case TK_ERR_DECRYPT:
    case TK_ERR_UNTRUSTED:
    case TK_ERR_BAD_CERT:
    case TK_ERR_ROLE:
    case TK_ERR_DENIED:
    case TK_ERR_EXPIRED:
        return 403;
    default:
        return pt_http_status(token_status);
    }
}

/* The answer to a failed agent call: the token's code, or ours. */
static void answer_fail(struct answer *a, int rc, const struct pt_status *st, bool inbox)
{
    if (rc == PT_ERR_TOKEN) {
        int ts = st->token_status;
        answer_error(a, inbox ? inbox_status(ts) : pt_http_status(ts), tk_errname(ts),
                     tk_strerror(ts));
        return;
    }
    switch (rc) {
    case PT_ERR_INPUT:
        answer_error(a, 400, "PT_ERR_INPUT", "the request is not valid");
        break;
    case PT_ERR_MALFORMED:
        answer_error(a, 400, "PT_ERR_MALFORMED", "the body does not decode");
        break;
    case PT_ERR_TOO_LARGE:
        answer_error(a, 413, "PT_ERR_TOO_LARGE", "the content is larger than the API allows");
        break;
    case PT_ERR_NOMEM:
        answer_error(a, 503, "PT_ERR_NOMEM", "the agent is out of memory");
        break;
    case PT_ERR_IO:
        answer_error(a, 500, "PT_ERR_IO", "the agent's store failed");
        break;
    case PT_ERR_LINK:
        answer_error(a, 503, "PT_ERR_LINK", "the token cannot be reached (unplugged?): try again");
        break;
    default:
        answer_error(a, 500, "INTERNAL", "the agent failed");
        break;
    }
}

/* Send j's answer, log it, and end the handler's aio. */
static void job_free(struct job *j, bool from_io_callback);

static void finish(struct job *j)
{
    struct pt_http *h = j->h;
    struct answer *a = &j->ans;
    nng_http_res *res = NULL;
    int64_t ms = sh_mono_ms() - j->t0_ms;
    int rv;

    if ((rv = nng_http_res_alloc(&res)) == 0)
        rv = nng_http_res_set_status(res, (uint16_t)a->status);
    if (rv == 0 && a->ctype != NULL)
        rv = nng_http_res_set_header(res, "Content-Type", a->ctype);
    if (rv == 0)
        rv = nng_http_res_set_header(res, "Cache-Control", "no-store");
    if (rv == 0)
        rv = nng_http_res_set_header(res, "X-Content-Type-Options", "nosniff");
    if (rv == 0 && a->location[0] != '\0')
        rv = nng_http_res_set_header(res, "Location", a->location);
    if (rv == 0 && a->revision[0] != '\0')
        rv = nng_http_res_set_header(res, "Cohort-Revision", a->revision);
    if (rv == 0 && a->allow[0] != '\0')
        rv = nng_http_res_set_header(res, "Allow", a->allow);
    if (rv == 0 && a->close)
        rv = nng_http_res_set_header(res, "Connection", "close");
    if (rv == 0 && a->len > 0)
        rv = nng_http_res_copy_data(res, a->body, a->len);
    if (a->status >= 500)
        log_line(h, "%s %s %d %lld ms %s", j->method_name,
                 j->route < R_COUNT ? route_pattern[j->route] : "-", a->status, (long long)ms,
                 a->code != NULL ? a->code : "");
    else
        log_line(h, "%s %s %d %lld ms", j->method_name,
                 j->route < R_COUNT ? route_pattern[j->route] : "-", a->status, (long long)ms);
    if (rv != 0) {
        if (res != NULL)
            nng_http_res_free(res);
        nng_aio_finish(j->aio, rv); /* nng closes the connection */
    } else {
        nng_aio_set_output(j->aio, 0, res);
        nng_aio_finish(j->aio, 0);
    }
    j->aio = NULL;
    answer_reset(a);
}

/* --------------------------------------------------------------- jobs */

static void job_free(struct job *j, bool from_io_callback)
{
    struct pt_http *h = j->h;

    if (j->io != NULL) {
        if (from_io_callback)
            nng_aio_reap(j->io);
        else
            nng_aio_free(j->io);
    }
    if (j->body != NULL) {
        sodium_memzero(j->body, j->body_len);
        free(j->body);
    }
    answer_reset(&j->ans);
    sodium_memzero(&j->cred, sizeof j->cred);
    pthread_mutex_lock(&h->q_mu);
    h->inflight -= j->reserved;
    h->live--;
    if (h->live == 0)
        pthread_cond_broadcast(&h->live_cv);
    pthread_mutex_unlock(&h->q_mu);
    free(j);
    h_unref(h);
}

/* Queue a job for the workers; once the server is stopping, answer 503 instead. */
static void enqueue(struct job *j, bool from_io_callback)
{
    struct pt_http *h = j->h;

    pthread_mutex_lock(&h->q_mu);
    if (h->stopping) {
        pthread_mutex_unlock(&h->q_mu);
        answer_error(&j->ans, 503, "STOPPING", "the agent is stopping");
        j->ans.close = true;
        finish(j);
        job_free(j, from_io_callback);
        return;
    }
    j->next = NULL;
    if (h->q_tail != NULL)
        h->q_tail->next = j;
    else
        h->q_head = j;
    h->q_tail = j;
    h->q_len++;
    pthread_cond_signal(&h->q_cv);
    pthread_mutex_unlock(&h->q_mu);
}

static void deliver_due(struct pt_http *h);

static void *worker(void *arg)
{
    struct pt_http *h = arg;
    bool first;

    pthread_mutex_lock(&h->q_mu);
    first = !h->started;
    h->started = true;
    pthread_mutex_unlock(&h->q_mu);
    if (first)
        deliver_due(h); /* what an earlier run left due */
    for (;;) {
        struct job *j;

        pthread_mutex_lock(&h->q_mu);
        while (h->q_head == NULL && !h->stopping)
            pthread_cond_wait(&h->q_cv, &h->q_mu);
        j = h->q_head;
        if (j == NULL) {
            pthread_mutex_unlock(&h->q_mu);
            break;
        }
        h->q_head = j->next;
        if (h->q_head == NULL)
            h->q_tail = NULL;
        h->q_len--;
        pthread_mutex_unlock(&h->q_mu);

        j->ep->run(j);
        finish(j);
        if (j->deliver_after)
            deliver_due(h);
        job_free(j, false);
    }
    return NULL;
}

/* ------------------------------------------------------------ parsing */

static unsigned method_of(const char *m)
{
    if (strcmp(m, "GET") == 0)
        return M_GET;
    if (strcmp(m, "POST") == 0)
        return M_POST;
    if (strcmp(m, "PUT") == 0)
        return M_PUT;
    if (strcmp(m, "DELETE") == 0)
        return M_DELETE;
    return M_OTHER;
}

/* Exactly 32 hex digits into 16 bytes. */
static bool parse_id(uint8_t out[PT_DOC_ID_LEN], const char *s, size_t len)
{
    if (len != ID_HEX)
        return false;
    for (size_t i = 0; i < PT_DOC_ID_LEN; i++) {
        int hi = sh_hex_digit((unsigned char)s[2 * i]),
            lo = sh_hex_digit((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool path_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~' || c == '/';
}

/*
 * The route of a path: 0 with *route (and the id when it has one), or the
 * status to answer with a sentence: 400 (a path that is not clean, or a
 * bad id) or 404.
 */
static int route_of(const char *path, size_t len, enum route_id *route, uint8_t id[PT_DOC_ID_LEN],
                    const char **why)
{
    const char *seg[5];
    size_t seg_len[5], n = 0, i = 1;
    bool has_id;

    if (len == 0 || path[0] != '/') {
        *why = "the request target must be a path";
        return 400;
    }
    for (size_t k = 0; k < len; k++) {
        unsigned char c = (unsigned char)path[k];
        if (c == '%') {
            *why = "a path may not hold percent-escapes";
            return 400;
        }
        if (!path_char(c)) {
            *why = "a path may hold only letters, digits and - . _ ~ /";
            return 400;
        }
    }
    while (i <= len) {
        size_t start = i;
        while (i < len && path[i] != '/')
            i++;
        if ((i - start == 1 && path[start] == '.') ||
            (i - start == 2 && path[start] == '.' && path[start + 1] == '.')) {
            *why = "a path may not hold . or .. segments";
            return 400;
        }
        if (n == 5 || i == start) {
            *why = "no such route"; /* too deep, or an empty segment ("//", a final "/") */
            return 404;
        }
        seg[n] = path + start;
        seg_len[n++] = i - start;
        i++;
    }
#define SEG(k, s) (seg_len[k] == strlen(s) && memcmp(seg[k], s, seg_len[k]) == 0)
    *why = "no such route";
    if (n < 2 || !SEG(0, "v1"))
        return 404;
    has_id = n >= 3;
    if (n == 2 && SEG(1, "identity"))
        *route = R_IDENTITY;
    else if (n == 2 && SEG(1, "inbox"))
        *route = R_INBOX;
    else if (n == 2 && SEG(1, "audit"))
        *route = R_AUDIT;
    else if (SEG(1, "docs") && n <= 4)
        *route = n == 2 ? R_DOCS : n == 3 ? R_DOC : R_DOC_META;
    else if (SEG(1, "credentials") && n <= 3)
        *route = n == 2 ? R_CREDS : R_CRED;
    else if (SEG(1, "shares") && n <= 4)
        *route = n == 2 ? R_SHARES : n == 3 ? R_SHARE : R_SHARE_PKG;
    else
        return 404;
    if (n == 4 && ((*route == R_DOC_META && !SEG(3, "meta")) ||
                   (*route == R_SHARE_PKG && !SEG(3, "package"))))
        return 404;
#undef SEG
    if (has_id && !parse_id(id, seg[2], seg_len[2])) {
        *why = "an id is 32 hex digits";
        return 400;
    }
    return 0;
}

static bool key_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || c == '_';
}

/*
 * The query string q[0..len) into j's parameters, for endpoint ep: 0, or
 * 400 with a sentence in why (which may name the parameter: its name is
 * [a-z_]{1,16}, checked before it is quoted).
 */
static int parse_query(struct job *j, const char *q, size_t len, char *why, size_t why_len)
{
    size_t i = 0, out = 0;

    j->n_params = 0;
    while (i < len) {
        size_t ks = i, ke, vs, ve;
        const char *key, *value;
        bool known = false;

        while (i < len && q[i] != '&')
            i++;
        if (i == ks) {
            i++;
            continue; /* "&&" */
        }
        ke = ks;
        while (ke < i && q[ke] != '=')
            ke++;
        vs = ke < i ? ke + 1 : i;
        ve = i;
        i++;
        if (ke - ks == 0 || ke - ks > 16) {
            snprintf(why, why_len, "a query parameter's name is 1 to 16 letters");
            return 400;
        }
        for (size_t k = ks; k < ke; k++) {
            if (!key_char((unsigned char)q[k])) {
                snprintf(why, why_len, "a query parameter's name is 1 to 16 letters");
                return 400;
            }
        }
        if (j->n_params == PT_HTTP_PARAMS_MAX) {
            snprintf(why, why_len, "more than %u query parameters", PT_HTTP_PARAMS_MAX);
            return 400;
        }
        /* The name, then the value decoded, into qbuf: each takes its NUL,
         * so the names and values may take a little more than the query
         * (a "tag" without '=' takes 5 bytes for its 3); bounded anyway. */
        if (out + (ke - ks) + 1 + (ve - vs) + 1 > sizeof j->qbuf) {
            snprintf(why, why_len, "the query string is too long");
            return 400;
        }
        key = j->qbuf + out;
        memcpy(j->qbuf + out, q + ks, ke - ks);
        out += ke - ks;
        j->qbuf[out++] = '\0';
        for (size_t k = 0; k < 8 && j->ep->params[k] != NULL; k++)
            known = known || strcmp(j->ep->params[k], key) == 0;
        if (!known) {
            snprintf(why, why_len, "unknown query parameter '%s'", key);
            return 400;
        }
        for (uint32_t p = 0; p < j->n_params; p++) {
            if (strcmp(j->params[p].key, key) == 0 &&
                (j->ep->multi == NULL || strcmp(j->ep->multi, key) != 0)) {
                snprintf(why, why_len, "query parameter '%s' given twice", key);
                return 400;
            }
        }
        value = j->qbuf + out;
        {
            size_t start = out;
            for (size_t k = vs; k < ve; k++) {
                unsigned char c = (unsigned char)q[k];
                if (c == '%') {
                    if (k + 2 >= ve || sh_hex_digit(q[k + 1]) < 0 || sh_hex_digit(q[k + 2]) < 0) {
                        snprintf(why, why_len, "query parameter '%s': a bad percent-escape", key);
                        return 400;
                    }
                    c = (unsigned char)(sh_hex_digit(q[k + 1]) << 4 | sh_hex_digit(q[k + 2]));
                    k += 2;
                } else if (c == '+') {
                    c = ' ';
                }
                j->qbuf[out++] = (char)c;
            }
            j->qbuf[out] = '\0';
            if (out - start > PT_HTTP_VALUE_MAX) {
                snprintf(why, why_len, "query parameter '%s' is longer than %u bytes", key,
                         PT_HTTP_VALUE_MAX);
                return 400;
            }
            if (!pt_utf8_valid((const uint8_t *)value, out - start, NULL)) {
                snprintf(why, why_len, "query parameter '%s' is not valid UTF-8", key);
                return 400;
            }
            for (size_t k = start; k < out; k++) {
                unsigned char c = (unsigned char)j->qbuf[k];
                if (c < 0x20 || c == 0x7f) {
                    snprintf(why, why_len, "query parameter '%s' holds a control character", key);
                    return 400;
                }
            }
            out++;
        }
        j->params[j->n_params].key = key;
        j->params[j->n_params].value = value;
        j->n_params++;
    }
    return 0;
}

static const char *param(const struct job *j, const char *key)
{
    for (uint32_t i = 0; i < j->n_params; i++)
        if (strcmp(j->params[i].key, key) == 0)
            return j->params[i].value;
    return NULL;
}

/* Whether the Host header names a loopback address (or is absent: HTTP/1.0). */
static bool host_ok(const char *host)
{
    char name[64];
    const char *colon;
    size_t n;

    if (host == NULL)
        return true;
    if (host[0] == '[') {
        const char *end = strchr(host, ']');
        if (end == NULL || (size_t)(end - host - 1) != 3 || memcmp(host + 1, "::1", 3) != 0)
            return false;
        colon = end[1] == ':' ? end + 1 : NULL;
        if (end[1] != '\0' && colon == NULL)
            return false;
        n = 0;
        name[0] = '\0';
    } else {
        colon = strchr(host, ':');
        n = colon != NULL ? (size_t)(colon - host) : strlen(host);
        if (n == 0 || n >= sizeof name)
            return false;
        memcpy(name, host, n);
        name[n] = '\0';
    }
    if (colon != NULL) {
        if (colon[1] == '\0' || strlen(colon + 1) > 5)
            return false;
        for (const char *p = colon + 1; *p; p++)
            if (*p < '0' || *p > '9')
                return false;
    }
    if (host[0] == '[')
        return true;
    if (strcasecmp(name, "localhost") == 0)
        return true;
    {
        struct in_addr a;
        if (inet_pton(AF_INET, name, &a) != 1)
            return false;
        return (ntohl(a.s_addr) >> 24) == 127;
    }
}

/* ------------------------------------------------------ the entry point */

static void body_done(void *arg);

/* Answer a request on nng's thread, before any work is queued. */
static void answer_now(struct job *j, int status, const char *code, const char *sentence,
                       bool close)
{
    answer_error(&j->ans, status, code, sentence);
    j->ans.close = j->ans.close || close || j->unread;
    finish(j);
    job_free(j, false);
}

static void on_request(nng_aio *aio)
{
    nng_http_req *req = nng_aio_get_input(aio, 0);
    nng_http_handler *hd = nng_aio_get_input(aio, 1);
    nng_http_conn *conn = nng_aio_get_input(aio, 2);
    struct pt_http *h = nng_http_handler_get_data(hd);
    const char *m = nng_http_req_get_method(req);
    const char *uri = nng_http_req_get_uri(req);
    const char *qmark, *auth, *cl, *te, *expect;
    size_t path_len, uri_len = strlen(uri), limit = 0;
    uint64_t length = 0;
    char why[128];
    const char *sentence = NULL;
    struct job *j;
    unsigned allowed = 0;
    bool stopping;
    int status;

    if ((j = calloc(1, sizeof *j)) == NULL) {
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    atomic_fetch_add(&h->refs, 1);
    j->h = h;
    j->aio = aio;
    j->conn = conn;
    j->route = R_COUNT;
    j->t0_ms = sh_mono_ms();
    j->method = method_of(m);
    snprintf(j->method_name, sizeof j->method_name, "%s", j->method != M_OTHER ? m : "OTHER");
    te = nng_http_req_get_header(req, "Transfer-Encoding");
    cl = nng_http_req_get_header(req, "Content-Length");
    /* Until its body is read, an answer closes the connection (the body
     * would otherwise be read as the next request). */
    j->unread = te != NULL || (cl != NULL && strcmp(cl, "0") != 0);
    pthread_mutex_lock(&h->q_mu);
    h->live++;
    stopping = h->stopping;
    pthread_mutex_unlock(&h->q_mu);

    if (stopping) {
        answer_now(j, 503, "STOPPING", "the agent is stopping", true);
        return;
    }
    if (!host_ok(nng_http_req_get_header(req, "Host"))) {
        answer_now(j, 400, "BAD_HOST", "the Host header must name a loopback address", true);
        return;
    }
    if (uri_len > PT_HTTP_URI_MAX) {
        answer_now(j, 414, "URI_TOO_LONG", "the request target is too long", true);
        return;
    }
    if (strchr(uri, '#') != NULL) {
        answer_now(j, 400, "BAD_PATH", "a request target may not hold '#'", false);
        return;
    }
    qmark = strchr(uri, '?');
    path_len = qmark != NULL ? (size_t)(qmark - uri) : uri_len;
    if ((status = route_of(uri, path_len, &j->route, j->id, &sentence)) != 0) {
        j->route = R_COUNT; /* logged as "-" */
        answer_now(j, status, status == 404 ? "NOT_FOUND" : "BAD_PATH", sentence, false);
        return;
    }
    for (size_t i = 0; i < N_ENDPOINTS; i++) {
        if (endpoints[i].route != j->route)
            continue;
        allowed |= endpoints[i].method;
        if (endpoints[i].method == j->method)
            j->ep = &endpoints[i];
    }
    if (j->ep == NULL) {
        static const char *const names[] = {"GET", "POST", "PUT", "DELETE"};
        char allow[sizeof j->ans.allow] = "";
        size_t n = 0;
        for (unsigned b = 0; b < 4; b++)
            if (allowed & (1u << b))
                n += (size_t)snprintf(allow + n, sizeof allow - n, "%s%s", n ? ", " : "", names[b]);
        answer_error(&j->ans, 405, "METHOD_NOT_ALLOWED", "the route does not take that method");
        memcpy(j->ans.allow, allow, sizeof allow);
        j->ans.close = j->unread;
        finish(j);
        job_free(j, false);
        return;
    }
    if (qmark != NULL && parse_query(j, qmark + 1, uri_len - path_len - 1, why, sizeof why) != 0) {
        answer_now(j, 400, "BAD_PARAMETER", why, false);
        return;
    }
    if (j->ep->auth) {
        const char *p;
        auth = nng_http_req_get_header(req, "Authorization");
        if (auth == NULL) {
            answer_now(j, 401, "NO_CREDENTIAL", "give a credential: Authorization: Bearer <96 hex>",
                       false);
            return;
        }
        p = auth;
        if (strncasecmp(p, "Bearer ", 7) != 0 ||
            pt_cred_parse(&j->cred, p + 7, strlen(p + 7)) != 0) {
            answer_now(j, 401, "BAD_CREDENTIAL",
                       "a credential is given as Authorization: Bearer <96 hex>", false);
            return;
        }
        j->has_cred = true;
    }

    /* The body. */
    expect = nng_http_req_get_header(req, "Expect");
    if (te != NULL) {
        answer_now(j, 411, "LENGTH_REQUIRED", "send the body with a Content-Length", true);
        return;
    }
    if (cl != NULL && sh_parse_u64(cl, 0, UINT64_MAX, &length) != 0) {
        answer_now(j, 400, "BAD_LENGTH", "the Content-Length is not a number", true);
        return;
    }
    switch (j->ep->body) {
    case BODY_NONE:
        limit = 0;
        break;
    case BODY_JSON:
        limit = h->cfg.json_max;
        break;
    case BODY_BYTES:
        limit = h->cfg.doc_max;
        break;
    }
    if (j->ep->body == BODY_NONE && length > 0) {
        answer_now(j, 400, "UNEXPECTED_BODY", "this request takes no body", true);
        return;
    }
    if (length > limit) {
        answer_now(j, 413, "TOO_LARGE",
                   j->ep->body == BODY_JSON ? "a JSON body is at most 64 KiB"
                                            : "a document or package is at most 64 MiB",
                   true);
        return;
    }
    pthread_mutex_lock(&h->q_mu);
    if (h->q_len >= PT_HTTP_QUEUE_MAX || h->inflight + length > PT_HTTP_INFLIGHT_MAX) {
        pthread_mutex_unlock(&h->q_mu);
        answer_now(j, 503, "BUSY", "the agent is busy: try again", length > 0);
        return;
    }
    h->inflight += length;
    j->reserved = (size_t)length;
    pthread_mutex_unlock(&h->q_mu);

    if (length == 0) {
        enqueue(j, false);
        return;
    }
    if ((j->body = malloc((size_t)length)) == NULL || nng_aio_alloc(&j->io, body_done, j) != 0) {
        answer_now(j, 503, "PT_ERR_NOMEM", "the agent is out of memory", true);
        return;
    }
    j->body_len = (size_t)length;
    /* The whole body within body_ms: a client that stops sending loses
     * its connection, and the bytes it reserved. */
    nng_aio_set_timeout(j->io, h->cfg.body_ms);
    if (expect != NULL && strcasecmp(expect, "100-continue") == 0) {
        static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        nng_iov iov = {.iov_buf = cont, .iov_len = sizeof cont - 1};
        nng_aio_set_iov(j->io, 1, &iov);
        nng_http_conn_write_all(conn, j->io);
    } else {
        nng_iov iov = {.iov_buf = j->body, .iov_len = j->body_len};
        j->continued = true;
        nng_aio_set_iov(j->io, 1, &iov);
        nng_http_conn_read_all(conn, j->io);
    }
}

static void body_done(void *arg)
{
    struct job *j = arg;
    int rv = nng_aio_result(j->io);

    if (rv != 0) {
        /* The client went away (or the server is stopping): no answer. */
        log_line(j->h, "%s %s aborted while reading the body", j->method_name,
                 route_pattern[j->route]);
        nng_aio_finish(j->aio, rv);
        j->aio = NULL;
        job_free(j, true);
        return;
    }
    if (!j->continued) {
        nng_iov iov = {.iov_buf = j->body, .iov_len = j->body_len};
        j->continued = true;
        nng_aio_set_iov(j->io, 1, &iov);
        nng_http_conn_read_all(j->conn, j->io);
        return;
    }
    j->unread = false;
    enqueue(j, true);
}

/* ------------------------------------------------------- small helpers */

static void lock(struct job *j)
{
    pthread_mutex_lock(&j->h->token_mu);
}

static void unlock(struct job *j)
{
    pthread_mutex_unlock(&j->h->token_mu);
}

static const struct pt_cred *who(const struct job *j)
{
    return j->has_cred ? &j->cred : NULL;
}

static void bad_request(struct job *j, const char *code, const char *sentence)
{
    answer_error(&j->ans, 400, code, sentence);
}

/* An optional whole number parameter: 0 (absent leaves *out), or -1 (answered 400). */
static int param_u64(struct job *j, const char *key, uint64_t min, uint64_t max, uint64_t *out,
                     bool required)
{
    const char *v = param(j, key);
    char why[128];

    if (v == NULL) {
        if (!required)
            return 0;
        snprintf(why, sizeof why, "give ?%s=", key);
        bad_request(j, "BAD_PARAMETER", why);
        return -1;
    }
    if (sh_parse_u64(v, min, max, out) != 0) {
        snprintf(why, sizeof why, "query parameter '%s' must be a whole number from %llu to %llu",
                 key, (unsigned long long)min, (unsigned long long)max);
        bad_request(j, "BAD_PARAMETER", why);
        return -1;
    }
    return 0;
}

/* A document type as the token takes it: 1..64 of [a-z0-9._-] (and '*' in a pattern). */
static bool type_ok(const char *t, bool pattern)
{
    size_t n = strlen(t);
    if (n == 0 || n > PT_DOC_TYPE_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-' || (pattern && c == '*')))
            return false;
    }
    return true;
}

/* The metadata given in the query: 0, or -1 (answered 400). */
static int meta_of_params(struct job *j, struct pt_doc_meta *m)
{
    const char *type = param(j, "type"), *author = param(j, "author"),
               *subject = param(j, "subject");
    uint64_t t;

    memset(m, 0, sizeof *m);
    if (type == NULL) {
        bad_request(j, "BAD_PARAMETER", "give the document's type with ?type=");
        return -1;
    }
    if (!type_ok(type, false)) {
        bad_request(j, "BAD_PARAMETER", "a type is 1 to 64 of a-z 0-9 . _ -");
        return -1;
    }
    memcpy(m->type, type, strlen(type) + 1);
    if (author != NULL) {
        if (strlen(author) > PT_DOC_TEXT_MAX) {
            bad_request(j, "BAD_PARAMETER", "an author is at most 128 bytes");
            return -1;
        }
        memcpy(m->author, author, strlen(author) + 1);
    }
    if (subject != NULL) {
        if (strlen(subject) > PT_DOC_TEXT_MAX) {
            bad_request(j, "BAD_PARAMETER", "a subject is at most 128 bytes");
            return -1;
        }
        memcpy(m->subject, subject, strlen(subject) + 1);
    }
    for (uint32_t i = 0; i < j->n_params; i++) {
        const char *v = j->params[i].value;
        if (strcmp(j->params[i].key, "tag") != 0)
            continue;
        if (m->n_tags == PT_DOC_TAGS_MAX) {
            bad_request(j, "BAD_PARAMETER", "a document has at most 16 tags");
            return -1;
        }
        if (strlen(v) == 0 || strlen(v) > PT_DOC_TAG_MAX) {
            bad_request(j, "BAD_PARAMETER", "a tag is 1 to 32 bytes");
            return -1;
        }
        memcpy(m->tags[m->n_tags++], v, strlen(v) + 1);
    }
    t = 0;
    if (param_u64(j, "created", 0, INT64_MAX, &t, false) != 0)
        return -1;
    m->created = (int64_t)t;
    t = 0;
    if (param_u64(j, "modified", 0, INT64_MAX, &t, false) != 0)
        return -1;
    m->modified = (int64_t)t;
    return 0;
}

static bool has_meta_params(const struct job *j)
{
    static const char *const keys[] = {META_PARAMS};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (param(j, keys[i]) != NULL)
            return true;
    return false;
}

static void write_meta(struct pt_jw *w, const struct pt_doc_ref *r, const struct pt_doc_meta *m,
                       int shared)
{
    pt_jw_object(w);
    pt_jw_key(w, "id");
    pt_jw_hex(w, r->id, PT_DOC_ID_LEN);
    pt_jw_key(w, "revision");
    pt_jw_u64(w, r->revision);
    pt_jw_key(w, "type");
    pt_jw_str(w, m->type);
    pt_jw_key(w, "author");
    pt_jw_str(w, m->author);
    pt_jw_key(w, "subject");
    pt_jw_str(w, m->subject);
    pt_jw_key(w, "tags");
    pt_jw_array(w);
    for (uint32_t i = 0; i < m->n_tags && i < PT_DOC_TAGS_MAX; i++)
        pt_jw_str(w, m->tags[i]);
    pt_jw_array_end(w);
    pt_jw_key(w, "created");
    pt_jw_i64(w, m->created);
    pt_jw_key(w, "modified");
    pt_jw_i64(w, m->modified);
    pt_jw_key(w, "size");
    pt_jw_u64(w, r->size);
    pt_jw_key(w, "hash");
    pt_jw_hex(w, r->hash, PT_DOC_HASH_LEN);
    if (shared >= 0) {
        pt_jw_key(w, "shared");
        pt_jw_bool(w, shared != 0);
    }
    pt_jw_object_end(w);
}

/* delivered: -1 not a write back, else whether its package reached the owner's agent. */
static void write_ref(struct pt_jw *w, const struct pt_doc_ref *r, int delivered)
{
    pt_jw_object(w);
    pt_jw_key(w, "id");
    pt_jw_hex(w, r->id, PT_DOC_ID_LEN);
    pt_jw_key(w, "revision");
    pt_jw_u64(w, r->revision);
    pt_jw_key(w, "size");
    pt_jw_u64(w, r->size);
    pt_jw_key(w, "hash");
    pt_jw_hex(w, r->hash, PT_DOC_HASH_LEN);
    if (delivered >= 0) {
        pt_jw_key(w, "delivered");
        pt_jw_bool(w, delivered != 0);
    }
    pt_jw_object_end(w);
}

/* ------------------------------------------------------------- outbox */

static void outbox_path(const struct pt_http *h, char *out, size_t cap, const uint8_t id[16],
                        const char *ext)
{
    char hex[ID_HEX + 1];
    sh_hex(hex, id, 16);
    snprintf(out, cap, "%s/%s.%s", h->outbox, hex, ext);
}

/*
 * Keep a share's latest package (and where it goes), marked due. own: a
 * package of a share this agent made, which carries this server's URL as
 * its reply_to (where the recipient sends what it writes back); a return
 * package (not own) is kept as the token made it.
 */
static int outbox_store(struct pt_http *h, const uint8_t id[16], const uint8_t *pkg, size_t len,
                        const char *url, bool own)
{
    char path[PATH_MAX + 64], err[256], gen[24];
    uint8_t *stamped = NULL;
    size_t stamped_len = 0;
    int rc = 0;

    if (own && h->self_url[0] != '\0') {
        if (pt_share_package_reply_to(pkg, len, h->self_url, &stamped, &stamped_len) == 0) {
            pkg = stamped;
            len = stamped_len;
        } else {
            log_line(h, "outbox: a package could not be given this agent's URL");
        }
    }
    pthread_mutex_lock(&h->outbox_mu);
    outbox_path(h, path, sizeof path, id, "pkg");
    if (sh_write_file(path, pkg, len, 0600, false, err, sizeof err) != 0)
        rc = PT_ERR_IO;
    if (rc == 0 && url != NULL) {
        outbox_path(h, path, sizeof path, id, "url");
        if (sh_write_file(path, (const uint8_t *)url, strlen(url), 0600, false, err, sizeof err) !=
            0)
            rc = PT_ERR_IO;
    }
    if (rc == 0) {
        snprintf(gen, sizeof gen, "%llu", (unsigned long long)++h->generation);
        outbox_path(h, path, sizeof path, id, "due");
        if (sh_write_file(path, (const uint8_t *)gen, strlen(gen), 0600, false, err, sizeof err) !=
            0)
            rc = PT_ERR_IO;
    }
    pthread_mutex_unlock(&h->outbox_mu);
    free(stamped);
    if (rc != 0)
        log_line(h, "outbox: cannot keep a share's package");
    return rc;
}

/* A file of the outbox, or NULL (len bytes, NUL-terminated). */
static uint8_t *outbox_read(struct pt_http *h, const uint8_t id[16], const char *ext, size_t max,
                            size_t *len)
{
    char path[PATH_MAX + 64], err[256];
    uint8_t *data = NULL;

    outbox_path(h, path, sizeof path, id, ext);
    if (sh_read_file(path, max, &data, len, err, sizeof err) != 0)
        return NULL;
    return data;
}

/* A delivery URL as the owner may give it: http://host:port[/path], printable, bounded. */
static bool deliver_url_ok(const char *url)
{
    size_t n = strlen(url);
    nng_url *u = NULL;
    bool ok;

    if (n < 8 || n > PT_HTTP_URL_MAX || strncmp(url, "http://", 7) != 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (url[i] <= 0x20 || url[i] >= 0x7f || url[i] == '?' || url[i] == '#')
            return false;
    if (nng_url_parse(&u, url) != 0)
        return false;
    ok = u->u_hostname != NULL && u->u_hostname[0] != '\0';
    nng_url_free(u);
    return ok;
}

/* POST a package to base/v1/inbox: the HTTP status, or 0 when nothing answered. */
static int post_package(const char *base, const uint8_t *pkg, size_t len)
{
    char url[PT_HTTP_URL_MAX + 16];
    nng_url *u = NULL;
    nng_http_client *c = NULL;
    nng_http_req *rq = NULL;
    nng_http_res *rs = NULL;
    nng_aio *aio = NULL;
    size_t n = strlen(base);
    int status = 0;

    while (n > 0 && base[n - 1] == '/')
        n--;
    snprintf(url, sizeof url, "%.*s/v1/inbox", (int)n, base);
    if (nng_url_parse(&u, url) != 0 || nng_http_client_alloc(&c, u) != 0 ||
        nng_http_req_alloc(&rq, u) != 0 || nng_http_res_alloc(&rs) != 0 ||
        nng_aio_alloc(&aio, NULL, NULL) != 0)
        goto done;
    if (nng_http_req_set_method(rq, "POST") != 0 ||
        nng_http_req_set_header(rq, "Content-Type", "application/octet-stream") != 0 ||
        nng_http_req_set_data(rq, pkg, len) != 0)
        goto done;
    nng_aio_set_timeout(aio, PT_HTTP_DELIVER_MS);
    nng_http_client_transact(c, rq, rs, aio);
    nng_aio_wait(aio);
    if (nng_aio_result(aio) == 0)
        status = nng_http_res_get_status(rs);
done:
    if (aio != NULL)
        nng_aio_free(aio);
    if (rs != NULL)
        nng_http_res_free(rs);
    if (rq != NULL)
        nng_http_req_free(rq);
    if (c != NULL)
        nng_http_client_free(c);
    if (u != NULL)
        nng_url_free(u);
    return status;
}

/*
 * Deliver one share's package if it is due and has a URL: true once the
 * recipient's agent took it (201), or already had it (409: a replay of
 * what it holds). Never called with the token lock held.
 */
static bool deliver_one(struct pt_http *h, const uint8_t id[16])
{
    uint8_t *url = NULL, *pkg = NULL, *gen = NULL, *gen2 = NULL;
    size_t url_len = 0, pkg_len = 0, gen_len = 0, gen2_len = 0;
    bool delivered = false;
    int status;

    pthread_mutex_lock(&h->outbox_mu);
    gen = outbox_read(h, id, "due", 32, &gen_len);
    if (gen != NULL) {
        url = outbox_read(h, id, "url", PT_HTTP_URL_MAX, &url_len);
        pkg = url != NULL ? outbox_read(h, id, "pkg", h->cfg.doc_max, &pkg_len) : NULL;
    }
    pthread_mutex_unlock(&h->outbox_mu);
    if (gen == NULL)
        delivered = true; /* nothing due */
    if (pkg == NULL || !deliver_url_ok((const char *)url))
        goto done;
    status = post_package((const char *)url, pkg, pkg_len);
    if (status == 201 || status == 409) {
        char path[PATH_MAX + 64];
        pthread_mutex_lock(&h->outbox_mu);
        gen2 = outbox_read(h, id, "due", 32, &gen2_len);
        if (gen2 != NULL && gen2_len == gen_len && memcmp(gen, gen2, gen_len) == 0) {
            outbox_path(h, path, sizeof path, id, "due");
            unlink(path);
        }
        pthread_mutex_unlock(&h->outbox_mu);
        delivered = true;
    } else {
        log_line(h, "outbox: a delivery failed (%d)", status);
    }
done:
    free(url);
    free(pkg);
    free(gen);
    free(gen2);
    return delivered;
}

/* Deliver every package that is due. */
static void deliver_due(struct pt_http *h)
{
    DIR *d;
    struct dirent *e;
    uint8_t ids[64][16];
    size_t n = 0;

    pthread_mutex_lock(&h->outbox_mu);
    if ((d = opendir(h->outbox)) != NULL) {
        while ((e = readdir(d)) != NULL && n < 64) {
            if (strlen(e->d_name) == ID_HEX + 4 && strcmp(e->d_name + ID_HEX, ".due") == 0 &&
                parse_id(ids[n], e->d_name, ID_HEX))
                n++;
        }
        closedir(d);
    }
    pthread_mutex_unlock(&h->outbox_mu);
    for (size_t i = 0; i < n; i++)
        deliver_one(h, ids[i]);
}

/*
 * After a write (the token lock held): every share whose grant is out of
 * date gets its new package in the outbox. The owner's agent does this as
 * the owner (no credential): an app's write updates the owner's shares.
 */
static void sync_shares(struct job *j)
{
    struct pt_http *h = j->h;

    j->deliver_after = true; /* new packages, or ones an earlier delivery left due */
    for (unsigned i = 0; i < PT_HTTP_SYNC_MAX; i++) {
        uint8_t id[16], *pkg = NULL;
        size_t len = 0;
        struct pt_status st;
        int rc = pt_share_sync(&h->cfg.link, h->cfg.ds, now_of(h), NULL, id, &pkg, &len, &st);

        if (rc != 0) {
            int code = rc == PT_ERR_TOKEN ? st.token_status : rc;
            if (code != h->sync_failed)
                log_line(h, "share sync failed: %s",
                         rc == PT_ERR_TOKEN ? tk_errname(code) : pt_strerror(rc));
            h->sync_failed = code;
            break;
        }
        h->sync_failed = 0;
        if (pkg == NULL)
            break;
        outbox_store(h, id, pkg, len, NULL, true);
        free(pkg);
    }
}

/* ------------------------------------------------------------ identity */

static void run_identity(struct job *j)
{
    uint8_t pk[32], cert[PT_CERT_MAX];
    size_t cert_len = 0;
    struct pt_status st;
    struct pt_jw w;
    int rc;

    lock(j);
    rc = pt_identity(&j->h->cfg.link, now_of(j->h), pk, cert, &cert_len, &st);
    unlock(j);
    if (rc == PT_ERR_INPUT) {
        answer_error(&j->ans, 404, "NO_IDENTITY", "the token has no keys yet");
        return;
    }
    if (rc != 0) {
        answer_fail(&j->ans, rc, &st, false);
        return;
    }
    pt_jw_init(&w, 4096);
    pt_jw_object(&w);
    pt_jw_key(&w, "token");
    pt_jw_hex(&w, pk, sizeof pk);
    pt_jw_key(&w, "certificate");
    if (cert_len > 0)
        pt_jw_base64(&w, cert, cert_len);
    else
        pt_jw_null(&w);
    pt_jw_object_end(&w);
    answer_json(&j->ans, 200, &w);
}

/* ----------------------------------------------------------- documents */

struct body_reader {
    const uint8_t *p;
    size_t len, pos;
};

static long read_body(void *ctx, uint8_t *buf, size_t n)
{
    struct body_reader *r = ctx;
    size_t k = r->len - r->pos < n ? r->len - r->pos : n;
    if (k > 0) /* an empty body has no buffer */
        memcpy(buf, r->p + r->pos, k);
    r->pos += k;
    return (long)k;
}

/* A plaintext collected in a buffer that is wiped whenever it moves. */
struct collector {
    uint8_t *p;
    size_t len, cap, max;
};

static int collect(void *ctx, const uint8_t *buf, size_t n)
{
    struct collector *c = ctx;

    if (n > c->max - c->len)
        return PT_ERR_TOO_LARGE;
    if (c->len + n > c->cap) {
        size_t cap = c->cap ? c->cap : 64u << 10;
        uint8_t *p;
        while (cap < c->len + n)
            cap *= 2;
        if (cap > c->max)
            cap = c->max;
        if ((p = malloc(cap)) == NULL)
            return PT_ERR_NOMEM;
        if (c->len > 0)
            memcpy(p, c->p, c->len);
        if (c->p != NULL) {
            sodium_memzero(c->p, c->cap);
            free(c->p);
        }
        c->p = p;
        c->cap = cap;
    }
    if (n > 0)
        memcpy(c->p + c->len, buf, n);
    c->len += n;
    return 0;
}

static void collector_free(struct collector *c)
{
    if (c->p != NULL) {
        sodium_memzero(c->p, c->cap);
        free(c->p);
    }
    memset(c, 0, sizeof *c);
}

static void answer_stored(struct job *j, int status, const struct pt_doc_ref *ref, int delivered)
{
    struct pt_jw w;
    char hex[ID_HEX + 1];

    pt_jw_init(&w, 1024);
    write_ref(&w, ref, delivered);
    answer_json(&j->ans, status, &w);
    sh_hex(hex, ref->id, PT_DOC_ID_LEN);
    if (status == 201)
        snprintf(j->ans.location, sizeof j->ans.location, "/v1/docs/%s", hex);
    snprintf(j->ans.revision, sizeof j->ans.revision, "%llu", (unsigned long long)ref->revision);
}

static void run_doc_create(struct job *j)
{
    struct pt_doc_meta *m = calloc(1, sizeof *m);
    struct body_reader r = {j->body, j->body_len, 0};
    struct pt_doc_ref ref;
    struct pt_status st;
    int rc;

    if (m == NULL) {
        answer_fail(&j->ans, PT_ERR_NOMEM, NULL, false);
        return;
    }
    if (meta_of_params(j, m) != 0)
        goto done;
    lock(j);
    rc = pt_doc_put(&j->h->cfg.link, j->h->cfg.ds, now_of(j->h), who(j), NULL, 0, m, read_body, &r,
                    &ref, &st);
    if (rc == 0)
        sync_shares(j);
    unlock(j);
    if (rc != 0)
        answer_fail(&j->ans, rc, &st, false);
    else
        answer_stored(j, 201, &ref, -1);
done:
    free(m);
}

/* A document received in a share, as the share list gives it. */
struct recv_doc {
    const uint8_t *id;
    bool found, read_write;
    uint8_t share_id[16];
    struct pt_doc_meta meta;
};
static void recv_doc_of(struct pt_http *h, struct recv_doc *rd);

/* Whether a share's package waits in the outbox for its delivery. */
static bool outbox_due(struct pt_http *h, const uint8_t id[16])
{
    uint8_t *gen;
    size_t len = 0;

    pthread_mutex_lock(&h->outbox_mu);
    gen = outbox_read(h, id, "due", 32, &len);
    pthread_mutex_unlock(&h->outbox_mu);
    free(gen);
    return gen != NULL;
}

/*
 * PUT: a new revision. Without metadata in the query, the current
 * revision's is kept: for a received document it is the share list's (so
 * that no read of the share is spent), for an own one it is read first
 * (which needs the GET right too). A received read-write document's
 * revision goes back to its owner: the return package is kept in the
 * outbox under the share's id and delivered to the owner agent's URL (its
 * packages' reply_to); a write while an earlier one of the same share
 * still waits is refused (409), since the owner's token takes a share's
 * write-backs only in order, each on the one before.
 */
static void run_doc_put(struct job *j)
{
    struct pt_http *h = j->h;
    struct pt_doc_meta *m = calloc(1, sizeof *m);
    struct recv_doc *rd = calloc(1, sizeof *rd);
    struct body_reader r = {j->body, j->body_len, 0};
    struct pt_reply reply;
    struct pt_doc_ref ref;
    struct pt_status st;
    uint64_t rev = 0;
    bool given = has_meta_params(j), back = false, delivered = false;
    int rc;

    memset(&reply, 0, sizeof reply);
    if (m == NULL || rd == NULL) {
        answer_fail(&j->ans, PT_ERR_NOMEM, NULL, false);
        goto done;
    }
    if (param_u64(j, "rev", 1, UINT64_MAX, &rev, true) != 0 || (given && meta_of_params(j, m) != 0))
        goto done;
    rd->id = j->id;
    lock(j);
    recv_doc_of(h, rd);
    rc = 0;
    if (rd->found && rd->read_write && outbox_due(h, rd->share_id)) {
        unlock(j);
        deliver_one(h, rd->share_id); /* never under the token lock */
        if (outbox_due(h, rd->share_id)) {
            answer_error(&j->ans, 409, "PENDING_WRITE_BACK",
                         "an earlier revision written to this document has not reached its "
                         "owner yet");
            goto done;
        }
        lock(j);
    }
    if (rc == 0 && !given) {
        if (rd->found && rd->meta.type[0] != '\0') {
            *m = rd->meta;
        } else {
            /* Reading the metadata needs the GET right too. */
            rc = pt_doc_get(&h->cfg.link, h->cfg.ds, now_of(h), who(j), j->id, 0, NULL, NULL, &ref,
                            m, &st);
        }
        m->modified = 0;
        m->size = 0;
    }
    if (rc == 0)
        rc = pt_doc_put_reply(&h->cfg.link, h->cfg.ds, now_of(h), who(j), j->id, rev, m, read_body,
                              &r, &ref, &reply, &st);
    if (rc == 0 && reply.pkg != NULL) {
        const char *to =
            reply.reply_to[0] != '\0' && deliver_url_ok(reply.reply_to) ? reply.reply_to : NULL;
        back = true;
        if (outbox_store(h, reply.share_id, reply.pkg, reply.pkg_len, to, false) != 0)
            to = NULL;
        if (to == NULL)
            log_line(h, "a write back waits in the outbox: its owner's agent has no URL here");
        unlock(j);
        delivered = to != NULL && deliver_one(h, reply.share_id);
        lock(j);
    }
    if (rc == 0)
        sync_shares(j);
    unlock(j);
    if (rc != 0)
        answer_fail(&j->ans, rc, &st, false);
    else
        answer_stored(j, 200, &ref, back ? delivered : -1);
done:
    free(reply.pkg);
    free(m);
    free(rd);
}

static void run_doc_get(struct job *j)
{
    struct collector c = {NULL, 0, 0, j->h->cfg.doc_max};
    struct pt_doc_ref ref;
    struct pt_status st;
    uint64_t rev = 0;
    int rc;

    if (param_u64(j, "rev", 1, UINT64_MAX, &rev, false) != 0)
        return;
    lock(j);
    rc = pt_doc_get(&j->h->cfg.link, j->h->cfg.ds, now_of(j->h), who(j), j->id, rev, collect, &c,
                    &ref, NULL, &st);
    unlock(j);
    if (rc != 0) {
        collector_free(&c);
        answer_fail(&j->ans, rc, &st, false);
        return;
    }
    answer_reset(&j->ans);
    j->ans.status = 200;
    j->ans.ctype = "application/octet-stream";
    j->ans.body = c.p; /* the collector's buffer: its capacity is wiped with len bytes */
    j->ans.len = c.len;
    j->ans.wipe = true;
    if (c.cap > c.len)
        sodium_memzero(c.p + c.len, c.cap - c.len);
    snprintf(j->ans.revision, sizeof j->ans.revision, "%llu", (unsigned long long)ref.revision);
}

/* Whether a document came to this token in a share (the owner's view of the shares). */
static bool received(struct pt_http *h, const uint8_t id[PT_DOC_ID_LEN]);

static void run_doc_meta(struct job *j)
{
    struct pt_doc_meta *m = calloc(1, sizeof *m);
    struct pt_doc_ref ref;
    struct pt_status st;
    struct pt_jw w;
    uint64_t rev = 0;
    bool shared = false;
    int rc;

    if (m == NULL) {
        answer_fail(&j->ans, PT_ERR_NOMEM, NULL, false);
        return;
    }
    if (param_u64(j, "rev", 1, UINT64_MAX, &rev, false) != 0)
        goto done;
    lock(j);
    rc = pt_doc_get(&j->h->cfg.link, j->h->cfg.ds, now_of(j->h), who(j), j->id, rev, NULL, NULL,
                    &ref, m, &st);
    if (rc == 0)
        shared = received(j->h, j->id);
    unlock(j);
    if (rc != 0) {
        answer_fail(&j->ans, rc, &st, false);
        goto done;
    }
    pt_jw_init(&w, 16384);
    write_meta(&w, &ref, m, shared);
    answer_json(&j->ans, 200, &w);
    snprintf(j->ans.revision, sizeof j->ans.revision, "%llu", (unsigned long long)ref.revision);
done:
    free(m);
}

static void run_doc_delete(struct job *j)
{
    struct pt_status st;
    uint64_t rev = 0;
    int rc;

    if (param_u64(j, "rev", 1, UINT64_MAX, &rev, true) != 0)
        return;
    lock(j);
    rc = pt_doc_delete(&j->h->cfg.link, j->h->cfg.ds, now_of(j->h), who(j), j->id, rev, &st);
    if (rc == 0)
        sync_shares(j);
    unlock(j);
    if (rc != 0) {
        answer_fail(&j->ans, rc, &st, false);
        return;
    }
    answer_reset(&j->ans);
    j->ans.status = 204;
}

static void run_doc_list(struct job *j)
{
    struct pt_doc_page *page = calloc(1, sizeof *page);
    struct pt_rule *filter = NULL;
    const char *type = param(j, "type"), *field = param(j, "field");
    uint64_t after = 0, limit = PT_DOC_LIST_MAX;
    struct pt_status st;
    struct pt_jw w;
    int rc;

    if (page == NULL || (filter = calloc(1, sizeof *filter)) == NULL) {
        answer_fail(&j->ans, PT_ERR_NOMEM, NULL, false);
        goto done;
    }
    if (param_u64(j, "after", 0, UINT64_MAX, &after, false) != 0 ||
        param_u64(j, "limit", 1, PT_DOC_LIST_MAX, &limit, false) != 0)
        goto done;
    if (type != NULL && !type_ok(type, true)) {
        bad_request(j, "BAD_PARAMETER", "a type pattern is \"*\", a type, or a prefix and \".*\"");
        goto done;
    }
    snprintf(filter->type, sizeof filter->type, "%s", type != NULL ? type : "*");
    if (field != NULL) {
        if (strcmp(field, "author") != 0 && strcmp(field, "subject") != 0 &&
            strcmp(field, "tag") != 0) {
            bad_request(j, "BAD_PARAMETER", "field is author, subject or tag");
            goto done;
        }
        snprintf(filter->field, sizeof filter->field, "%s", field);
        for (uint32_t i = 0; i < j->n_params; i++) {
            const char *v = j->params[i].value;
            if (strcmp(j->params[i].key, "value") != 0)
                continue;
            if (filter->n_values == PT_VALUES_MAX || strlen(v) > PT_DOC_TEXT_MAX) {
                bad_request(j, "BAD_PARAMETER", "at most 16 values of at most 128 bytes");
                goto done;
            }
            memcpy(filter->values[filter->n_values++], v, strlen(v) + 1);
        }
        if (filter->n_values == 0) {
            bad_request(j, "BAD_PARAMETER", "a field needs at least one value=");
            goto done;
        }
    } else if (param(j, "value") != NULL) {
        bad_request(j, "BAD_PARAMETER", "value= needs field=");
        goto done;
    }
    lock(j);
    rc = pt_doc_list(&j->h->cfg.link, now_of(j->h), who(j),
                     type != NULL || field != NULL ? filter : NULL, after, (uint32_t)limit, page,
                     &st);
    unlock(j);
    if (rc != 0) {
        answer_fail(&j->ans, rc, &st, false);
        goto done;
    }
    pt_jw_init(&w, PT_HTTP_ANSWER_MAX);
    pt_jw_object(&w);
    pt_jw_key(&w, "docs");
    pt_jw_array(&w);
    for (uint32_t i = 0; i < page->n && i < PT_DOC_LIST_MAX; i++)
        write_meta(&w, &page->refs[i], &page->metas[i], -1);
    pt_jw_array_end(&w);
    pt_jw_key(&w, "next");
    pt_jw_u64(&w, page->next);
    pt_jw_key(&w, "more");
    pt_jw_bool(&w, page->more);
    pt_jw_object_end(&w);
    answer_json(&j->ans, 200, &w);
done:
    free(page);
    free(filter);
}

/* --------------------------------------------------------- credentials */

static const char *const verb_names[4] = {"GET", "POST", "PUT", "DELETE"};

static void write_rule(struct pt_jw *w, const struct pt_rule *r, bool verbs)
{
    pt_jw_object(w);
    pt_jw_key(w, "type");
    pt_jw_str(w, r->type);
    if (verbs) {
        pt_jw_key(w, "verbs");
        pt_jw_array(w);
        for (unsigned b = 0; b < 4; b++)
            if (r->verbs & (1u << b))
                pt_jw_str(w, verb_names[b]);
        pt_jw_array_end(w);
    }
    if (r->field[0] != '\0') {
        pt_jw_key(w, "field");
        pt_jw_str(w, r->field);
        pt_jw_key(w, "values");
        pt_jw_array(w);
        for (uint32_t i = 0; i < r->n_values && i < PT_VALUES_MAX; i++)
            pt_jw_str(w, r->values[i]);
        pt_jw_array_end(w);
    }
    pt_jw_object_end(w);
}

static void write_cred(struct pt_jw *w, const struct pt_cred_info *c)
{
    pt_jw_object(w);
    pt_jw_key(w, "id");
    pt_jw_hex(w, c->id, sizeof c->id);
    pt_jw_key(w, "parent");
    if (c->has_parent)
        pt_jw_hex(w, c->parent, sizeof c->parent);
    else
        pt_jw_null(w);
    pt_jw_key(w, "name");
    pt_jw_str(w, c->name);
    pt_jw_key(w, "rules");
    pt_jw_array(w);
    for (uint32_t i = 0; i < c->n_rules && i < PT_RULES_MAX; i++)
        write_rule(w, &c->rules[i], true);
    pt_jw_array_end(w);
    pt_jw_key(w, "expires");
    pt_jw_i64(w, c->expires);
    pt_jw_key(w, "created");
    pt_jw_i64(w, c->created);
    pt_jw_key(w, "owner");
    pt_jw_bool(w, c->owner);
    pt_jw_key(w, "revoked");
    pt_jw_bool(w, c->revoked);
    pt_jw_object_end(w);
}

/* Parse a JSON body; 0, or -1 (answered 400 with the reader's position). */
static int parse_body(struct job *j, struct pt_json *doc)
{
    struct pt_json_error err;
    char why[PT_JSON_MSG_MAX + 64];
    int rc = pt_json_parse(doc, (const char *)j->body, j->body_len, &pt_json_limits_api, &err);

    if (rc == 0 && doc->root->type != PT_JSON_OBJECT) {
        pt_json_free(doc);
        bad_request(j, "BAD_JSON", "the body must be a JSON object");
        return -1;
    }
    if (rc == 0)
        return 0;
    if (rc == PT_ERR_NOMEM) {
        answer_fail(&j->ans, rc, NULL, false);
        return -1;
    }
    snprintf(why, sizeof why, "line %u, column %u: %s", err.line, err.column, err.msg);
    answer_error(&j->ans, rc == PT_ERR_TOO_LARGE ? 413 : 400,
                 rc == PT_ERR_TOO_LARGE ? "TOO_LARGE" : "BAD_JSON", why);
    return -1;
}

/* A refusal of a JSON body's content, naming the member. */
static void bad_member(struct job *j, const char *member, const char *what)
{
    char why[160];
    snprintf(why, sizeof why, "\"%s\" must be %s", member, what);
    bad_request(j, "BAD_JSON", why);
}

static bool is_type(const struct pt_json_value *v, enum pt_json_type t)
{
    return v != NULL && v->type == t;
}

/* A JSON string into a fixed field of cap bytes (1..cap-1 bytes, or 0..). */
static bool json_text(const struct pt_json_value *v, char *out, size_t cap, bool empty_ok)
{
    if (!is_type(v, PT_JSON_STRING) || v->len >= cap || (!empty_ok && v->len == 0))
        return false;
    for (size_t i = 0; i < v->len; i++)
        if ((unsigned char)v->s[i] < 0x20 || v->s[i] == 0x7f)
            return false;
    memcpy(out, v->s, v->len + 1);
    return true;
}

/*
 * A rule, a filter or a selector from JSON: {"type", "verbs", "field",
 * "values"} (verbs only when want_verbs). 0, or -1 (answered 400).
 */
static int rule_of_json(struct job *j, const struct pt_json_value *o, struct pt_rule *r,
                        bool want_verbs)
{
    static const char *const known[] = {"type", "verbs", "field", "values"};
    const struct pt_json_value *v, *bad;

    memset(r, 0, sizeof *r);
    if (!is_type(o, PT_JSON_OBJECT)) {
        bad_member(j, want_verbs ? "rules[]" : "selector", "an object");
        return -1;
    }
    if ((bad = pt_json_unknown_member(o, known, want_verbs ? 4 : 4)) != NULL ||
        (!want_verbs && pt_json_member(o, "verbs") != NULL)) {
        bad_request(j, "BAD_JSON",
                    want_verbs ? "a rule has only type, verbs, field and values"
                               : "a selector has only type, field and values");
        return -1;
    }
    if (!json_text(pt_json_member(o, "type"), r->type, sizeof r->type, false) ||
        !type_ok(r->type, true)) {
        bad_member(j, "type", "\"*\", a type, or a prefix and \".*\"");
        return -1;
    }
    if (want_verbs) {
        v = pt_json_member(o, "verbs");
        if (!is_type(v, PT_JSON_ARRAY) || v->n == 0 || v->n > 4) {
            bad_member(j, "verbs", "an array of GET, POST, PUT and DELETE");
            return -1;
        }
        for (const struct pt_json_value *e = v->child; e != NULL; e = e->next) {
            unsigned bit = 0;
            for (unsigned b = 0; b < 4; b++)
                if (is_type(e, PT_JSON_STRING) && strcmp(e->s, verb_names[b]) == 0)
                    bit = 1u << b;
            if (bit == 0 || (r->verbs & bit)) {
                bad_member(j, "verbs", "an array of GET, POST, PUT and DELETE, each once");
                return -1;
            }
            r->verbs |= bit;
        }
    }
    v = pt_json_member(o, "field");
    if (v != NULL && !(is_type(v, PT_JSON_STRING) && v->len == 0)) {
        const struct pt_json_value *vals = pt_json_member(o, "values");
        if (!json_text(v, r->field, sizeof r->field, false) ||
            (strcmp(r->field, "author") != 0 && strcmp(r->field, "subject") != 0 &&
             strcmp(r->field, "tag") != 0)) {
            bad_member(j, "field", "\"author\", \"subject\" or \"tag\"");
            return -1;
        }
        if (!is_type(vals, PT_JSON_ARRAY) || vals->n == 0 || vals->n > PT_VALUES_MAX) {
            bad_member(j, "values", "an array of 1 to 16 strings");
            return -1;
        }
        for (const struct pt_json_value *e = vals->child; e != NULL; e = e->next) {
            if (!json_text(e, r->values[r->n_values], sizeof r->values[0], true)) {
                bad_member(j, "values", "strings of at most 128 bytes");
                return -1;
            }
            r->n_values++;
        }
    } else if (pt_json_member(o, "values") != NULL) {
        bad_member(j, "values", "given with a field");
        return -1;
    }
    return 0;
}

static void run_cred_issue(struct job *j)
{
    static const char *const known[] = {"name", "rules", "expires", "owner"};
    struct pt_rule *rules = calloc(PT_RULES_MAX, sizeof *rules);
    struct pt_cred_info *info = calloc(1, sizeof *info);
    const struct pt_json_value *root, *v;
    struct pt_cred secret;
    char name[PT_CRED_NAME_MAX + 1], text[PT_CRED_TEXT_LEN + 1];
    struct pt_json doc = {0};
    uint32_t n_rules = 0;
    int64_t expires = 0;
    bool owner = false;
    struct pt_status st;
    struct pt_jw w;
    int rc;

    if (rules == NULL || info == NULL) {
        answer_fail(&j->ans, PT_ERR_NOMEM, NULL, false);
        goto done;
    }
    if (parse_body(j, &doc) != 0)
        goto done;
    root = doc.root;
    if ((v = pt_json_unknown_member(root, known, 4)) != NULL) {
        bad_request(j, "BAD_JSON", "a credential has only name, rules, expires and owner");
        goto done;
    }
    if (!json_text(pt_json_member(root, "name"), name, sizeof name, false)) {
        bad_member(j, "name", "a string of 1 to 64 printable bytes");
        goto done;
    }
    if ((v = pt_json_member(root, "owner")) != NULL) {
        if (!is_type(v, PT_JSON_BOOL)) {
            bad_member(j, "owner", "true or false");
            goto done;
        }
        owner = v->b;
    }
    if ((v = pt_json_member(root, "expires")) != NULL &&
        pt_json_int(v, 0, INT64_MAX, &expires) != 0) {
        bad_member(j, "expires", "a Unix time (0: never)");
        goto done;
    }
    v = pt_json_member(root, "rules");
    if (v != NULL || !owner) {
        if (!is_type(v, PT_JSON_ARRAY) || (!owner && v->n == 0) || v->n > PT_RULES_MAX) {
            bad_member(j, "rules", "an array of 1 to 16 rules");
            goto done;
        }
        for (const struct pt_json_value *e = v->child; e != NULL; e = e->next)
            if (rule_of_json(j, e, &rules[n_rules++], true) != 0)
                goto done;
    }
    lock(j);
    rc = pt_cred_issue(&j->h->cfg.link, now_of(j->h), who(j), name, rules, n_rules, expires, owner,
                       &secret, info, &st);
    unlock(j);
    if (rc != 0) {
        answer_fail(&j->ans, rc, &st, false);
        goto done;
    }
    pt_cred_format(&secret, text);
    pt_jw_init(&w, 1024);
    pt_jw_object(&w);
    pt_jw_key(&w, "id");
    pt_jw_hex(&w, info->id, sizeof info->id);
    pt_jw_key(&w, "credential");
    pt_jw_str(&w, text);
    pt_jw_key(&w, "expires");
    pt_jw_i64(&w, info->expires);
    pt_jw_object_end(&w);
    answer_json(&j->ans, 201, &w);
    j->ans.wipe = true; /* it holds the secret */
    sodium_memzero(&secret, sizeof secret);
    sodium_memzero(text, sizeof text);
done:
    pt_json_free(&doc);
    free(rules);
    free(info);
}

static void run_cred_list(struct job *j)
{
    struct pt_cred_info *infos = calloc(PT_HTTP_CREDS_MAX, sizeof *infos);
    uint32_t n = 0;
    struct pt_status st;
    struct pt_jw w;
    int rc;

    if (infos == NULL) {
        answer_fail(&j->ans, PT_ERR_NOMEM, NULL, false);
        return;
    }
    lock(j);
    rc = pt_cred_list(&j->h->cfg.link, now_of(j->h), who(j), infos, PT_HTTP_CREDS_MAX, &n, &st);
    unlock(j);
    if (rc != 0) {
        answer_fail(&j->ans, rc, &st, false);
        free(infos);
        return;
    }
    pt_jw_init(&w, PT_HTTP_ANSWER_MAX);
    pt_jw_object(&w);
    pt_jw_key(&w, "credentials");
    pt_jw_array(&w);
    for (uint32_t i = 0; i < n && i < PT_HTTP_CREDS_MAX; i++)
        write_cred(&w, &infos[i]);
    pt_jw_array_end(&w);
    pt_jw_object_end(&w);
    answer_json(&j->ans, 200, &w);
    free(infos);
}

static void run_cred_revoke(struct job *j)
{
    struct pt_status st;
    int rc;

    lock(j);
    rc = pt_cred_revoke(&j->h->cfg.link, now_of(j->h), who(j), j->id, &st);
    unlock(j);
    if (rc != 0) {
        answer_fail(&j->ans, rc, &st, false);
        return;
    }
    answer_reset(&j->ans);
    j->ans.status = 204;
}

/* -------------------------------------------------------------- shares */

/* Whether the credential is the owner's: 0 (yes), or -1 (answered). */
static int owner_only(struct job *j)
{
    struct pt_cred_info *info = calloc(1, sizeof *info);
    struct pt_status st;
    int rc;

    if (info == NULL) {
        answer_fail(&j->ans, PT_ERR_NOMEM, NULL, false);
        return -1;
    }
    lock(j);
    rc = pt_cred_check(&j->h->cfg.link, now_of(j->h), who(j), info, &st);
    unlock(j);
    if (rc != 0)
        answer_fail(&j->ans, rc, &st, false);
    else if (!info->owner)
        answer_error(&j->ans, 403, tk_errname(TK_ERR_DENIED), tk_strerror(TK_ERR_DENIED));
    rc = rc == 0 && info->owner ? 0 : -1;
    free(info);
    return rc;
}

static void run_share_create(struct job *j)
{
    static const char *const known[] = {"recipient", "docs", "selector", "policy", "deliver"};
    static const char *const policy_known[] = {"read_write", "expires", "max_reads"};
    const struct pt_json_value *root, *v, *docs, *sel;
    struct pt_json doc = {0};
    uint8_t(*ids)[PT_DOC_ID_LEN] = NULL, *cert = NULL, share_id[16], *pkg = NULL;
    struct pt_rule *selector = NULL;
    struct pt_share_policy policy = {false, 0, 0};
    char deliver[PT_HTTP_URL_MAX + 1] = "";
    size_t cert_len = 0, pkg_len = 0;
    uint32_t n_ids = 0;
    bool delivered = false;
    struct pt_status st;
    struct pt_jw w;
    int rc;

    if (parse_body(j, &doc) != 0)
        goto done;
    root = doc.root;
    if (pt_json_unknown_member(root, known, 5) != NULL) {
        bad_request(j, "BAD_JSON",
                    "a share has only recipient, docs or selector, policy and deliver");
        goto done;
    }
    v = pt_json_member(root, "recipient");
    if (!is_type(v, PT_JSON_STRING) || v->len == 0 || v->len > 2 * PT_CERT_MAX ||
        (cert = malloc(v->len)) == NULL ||
        sodium_base642bin(cert, v->len, v->s, v->len, NULL, &cert_len, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        cert_len == 0 || cert_len > PT_CERT_MAX) {
        bad_member(j, "recipient", "the recipient token's certificate, in base64");
        goto done;
    }
    docs = pt_json_member(root, "docs");
    sel = pt_json_member(root, "selector");
    if ((docs == NULL) == (sel == NULL)) {
        bad_request(j, "BAD_JSON", "give either docs or a selector");
        goto done;
    }
    if (docs != NULL) {
        if (!is_type(docs, PT_JSON_ARRAY) || docs->n == 0 || docs->n > PT_SHARE_DOCS_MAX ||
            (ids = calloc(docs->n, sizeof *ids)) == NULL) {
            bad_member(j, "docs", "an array of 1 to 32 document ids");
            goto done;
        }
        for (const struct pt_json_value *e = docs->child; e != NULL; e = e->next) {
            if (!is_type(e, PT_JSON_STRING) || !parse_id(ids[n_ids], e->s, e->len)) {
                bad_member(j, "docs", "an array of ids of 32 hex digits");
                goto done;
            }
            n_ids++;
        }
    } else {
        if ((selector = calloc(1, sizeof *selector)) == NULL) {
            answer_fail(&j->ans, PT_ERR_NOMEM, NULL, false);
            goto done;
        }
        if (rule_of_json(j, sel, selector, false) != 0)
            goto done;
    }
    if ((v = pt_json_member(root, "policy")) != NULL) {
        const struct pt_json_value *p;
        int64_t x;
        if (!is_type(v, PT_JSON_OBJECT) || pt_json_unknown_member(v, policy_known, 3) != NULL) {
            bad_member(j, "policy", "an object of read_write, expires and max_reads");
            goto done;
        }
        if ((p = pt_json_member(v, "read_write")) != NULL) {
            if (!is_type(p, PT_JSON_BOOL)) {
                bad_member(j, "read_write", "true or false");
                goto done;
            }
            policy.read_write = p->b;
        }
        if ((p = pt_json_member(v, "expires")) != NULL) {
            if (pt_json_int(p, 0, INT64_MAX, &x) != 0) {
                bad_member(j, "expires", "a Unix time (0: never)");
                goto done;
            }
            policy.expires = x;
        }
        if ((p = pt_json_member(v, "max_reads")) != NULL) {
            if (pt_json_int(p, 0, UINT32_MAX, &x) != 0) {
                bad_member(j, "max_reads", "a whole number (0: unlimited)");
                goto done;
            }
            policy.max_reads = (uint32_t)x;
        }
    }
    if ((v = pt_json_member(root, "deliver")) != NULL &&
        (!json_text(v, deliver, sizeof deliver, false) || !deliver_url_ok(deliver))) {
        bad_member(j, "deliver", "the recipient agent's URL, http://HOST:PORT");
        goto done;
    }
    lock(j);
    rc = pt_share_create(&j->h->cfg.link, j->h->cfg.ds, now_of(j->h), who(j), cert, cert_len,
                         (const uint8_t(*)[PT_DOC_ID_LEN])ids, n_ids, selector, &policy, share_id,
                         &pkg, &pkg_len, &st);
    unlock(j);
    if (rc != 0) {
        answer_fail(&j->ans, rc, &st, false);
        goto done;
    }
    if (outbox_store(j->h, share_id, pkg, pkg_len, deliver[0] ? deliver : NULL, true) == 0 &&
        deliver[0])
        delivered = deliver_one(j->h, share_id);
    pt_jw_init(&w, 1024);
    pt_jw_object(&w);
    pt_jw_key(&w, "share");
    pt_jw_hex(&w, share_id, sizeof share_id);
    pt_jw_key(&w, "seq");
    pt_jw_u64(&w, 1);
    pt_jw_key(&w, "delivered");
    pt_jw_bool(&w, delivered);
    pt_jw_object_end(&w);
    answer_json(&j->ans, 201, &w);
done:
    pt_json_free(&doc);
    free(ids);
    free(cert);
    free(selector);
    free(pkg);
}

static void write_share(struct pt_jw *w, struct pt_http *h, const struct pt_share_info *s)
{
    uint8_t *url = NULL, *due = NULL;
    size_t url_len = 0, due_len = 0;

    pt_jw_object(w);
    pt_jw_key(w, "share");
    pt_jw_hex(w, s->share_id, sizeof s->share_id);
    pt_jw_key(w, "incoming");
    pt_jw_bool(w, s->incoming);
    pt_jw_key(w, "peer");
    pt_jw_hex(w, s->peer_pk, sizeof s->peer_pk);
    pt_jw_key(w, "peer_name");
    pt_jw_str(w, s->peer);
    pt_jw_key(w, "policy");
    pt_jw_object(w);
    pt_jw_key(w, "read_write");
    pt_jw_bool(w, s->policy.read_write);
    pt_jw_key(w, "expires");
    pt_jw_i64(w, s->policy.expires);
    pt_jw_key(w, "max_reads");
    pt_jw_u64(w, s->policy.max_reads);
    pt_jw_object_end(w);
    pt_jw_key(w, "seq");
    pt_jw_u64(w, s->seq);
    pt_jw_key(w, "revoked");
    pt_jw_bool(w, s->revoked);
    pt_jw_key(w, "created");
    pt_jw_i64(w, s->created);
    if (s->has_selector) {
        pt_jw_key(w, "selector");
        write_rule(w, &s->selector, false);
    }
    pt_jw_key(w, "docs");
    pt_jw_array(w);
    for (uint32_t i = 0; i < s->n_docs && i < PT_SHARE_DOCS_MAX; i++)
        write_meta(w, &s->refs[i], &s->metas[i], -1);
    pt_jw_array_end(w);
    if (s->incoming) {
        pt_jw_key(w, "reads");
        pt_jw_array(w);
        for (uint32_t i = 0; i < s->n_docs && i < PT_SHARE_DOCS_MAX; i++)
            pt_jw_u64(w, s->reads[i]);
        pt_jw_array_end(w);
    } else {
        pthread_mutex_lock(&h->outbox_mu);
        url = outbox_read(h, s->share_id, "url", PT_HTTP_URL_MAX, &url_len);
        due = outbox_read(h, s->share_id, "due", 32, &due_len);
        pthread_mutex_unlock(&h->outbox_mu);
        pt_jw_key(w, "deliver");
        if (url != NULL)
            pt_jw_strn(w, (const char *)url, url_len);
        else
            pt_jw_null(w);
        pt_jw_key(w, "due");
        pt_jw_bool(w, due != NULL);
    }
    pt_jw_object_end(w);
    free(url);
    free(due);
}

/*
 * Every share, page by page, given to fn (the token lock held): a
 * non-zero return stops (1: found, < 0: an error to return). cred NULL:
 * the owner at the link. 0, or the agent's error.
 */
static int each_share(struct pt_http *h, const struct pt_cred *cred,
                      int (*fn)(void *ctx, const struct pt_share_info *s), void *ctx,
                      struct pt_status *st)
{
    struct pt_share_info *page = calloc(SHARE_PAGE, sizeof *page);
    uint64_t after = 0;
    int rc = 0;

    if (page == NULL)
        return PT_ERR_NOMEM;
    for (;;) {
        uint32_t n = 0;
        bool more = false;
        uint64_t next = 0;

        rc = pt_share_list(&h->cfg.link, now_of(h), cred, after, SHARE_PAGE, page, &n, &more, &next,
                           st);
        for (uint32_t i = 0; rc == 0 && i < n; i++)
            rc = fn(ctx, &page[i]);
        if (rc != 0 || !more || next <= after)
            break;
        after = next;
    }
    free(page);
    return rc > 0 ? 0 : rc;
}

struct find_share {
    const uint8_t *id;
    bool incoming_only;
    bool found;
    uint32_t n_docs;
    uint8_t docs[PT_SHARE_DOCS_MAX][PT_DOC_ID_LEN];
};

static int find_share_fn(void *ctx, const struct pt_share_info *s)
{
    struct find_share *f = ctx;

    if (memcmp(s->share_id, f->id, 16) != 0 || (f->incoming_only && !s->incoming))
        return 0;
    f->found = true;
    for (uint32_t i = 0; i < s->n_docs && i < PT_SHARE_DOCS_MAX; i++)
        memcpy(f->docs[f->n_docs++], s->refs[i].id, PT_DOC_ID_LEN);
    return 1;
}

struct received_ids {
    uint8_t (*ids)[PT_DOC_ID_LEN];
    size_t n, cap;
};

static int collect_received(void *ctx, const struct pt_share_info *s)
{
    struct received_ids *r = ctx;

    if (!s->incoming || s->revoked)
        return 0;
    for (uint32_t i = 0; i < s->n_docs && i < PT_SHARE_DOCS_MAX; i++) {
        if (r->n == r->cap) {
            size_t cap = r->cap ? 2 * r->cap : 64;
            uint8_t(*p)[PT_DOC_ID_LEN] = realloc(r->ids, cap * sizeof *p);
            if (p == NULL)
                return PT_ERR_NOMEM;
            r->ids = p;
            r->cap = cap;
        }
        memcpy(r->ids[r->n++], s->refs[i].id, PT_DOC_ID_LEN);
    }
    return 0;
}

/*
 * Whether a document came to this token in a share (false when that
 * cannot be told). The ids of the received documents are kept between
 * calls: while this server holds the token, only its inbox changes them
 * (which forgets them), and the software token is this process's alone.
 * The token lock is held.
 */
static bool received(struct pt_http *h, const uint8_t id[PT_DOC_ID_LEN])
{
    if (!h->recv_valid) {
        struct received_ids r = {NULL, 0, 0};
        struct pt_status st;
        free(h->recv_ids);
        h->recv_ids = NULL;
        h->recv_n = 0;
        if (each_share(h, NULL, collect_received, &r, &st) != 0) {
            free(r.ids);
            return false;
        }
        h->recv_ids = r.ids;
        h->recv_n = r.n;
        h->recv_valid = true;
    }
    for (size_t i = 0; i < h->recv_n; i++)
        if (memcmp(h->recv_ids[i], id, PT_DOC_ID_LEN) == 0)
            return true;
    return false;
}

static int recv_doc_fn(void *ctx, const struct pt_share_info *s)
{
    struct recv_doc *rd = ctx;

    if (!s->incoming || s->revoked)
        return 0;
    for (uint32_t i = 0; i < s->n_docs && i < PT_SHARE_DOCS_MAX; i++) {
        if (memcmp(s->refs[i].id, rd->id, PT_DOC_ID_LEN) != 0 || (rd->found && rd->read_write))
            continue;
        rd->found = true;
        rd->read_write = s->policy.read_write;
        memcpy(rd->share_id, s->share_id, 16);
        rd->meta = s->metas[i];
        return rd->read_write ? 1 : 0; /* a read-write share is the one a write goes through */
    }
    return 0;
}

/* The share a received document came in (a read-write one if any), and
 * its metadata; rd->found false for a document of this token's own, or
 * when the token's list cannot be had (the token decides the write). The
 * token lock is held. */
static void recv_doc_of(struct pt_http *h, struct recv_doc *rd)
{
    struct pt_status st;

    rd->found = false;
    if (received(h, rd->id) && each_share(h, NULL, recv_doc_fn, rd, &st) != 0)
        rd->found = false;
}

struct share_writer {
    struct pt_jw *w;
    struct pt_http *h;
};

static int write_share_fn(void *ctx, const struct pt_share_info *s)
{
    struct share_writer *sw = ctx;
    write_share(sw->w, sw->h, s);
    return 0;
}

static void run_share_list(struct job *j)
{
    struct pt_jw w;
    struct share_writer sw = {&w, j->h};
    struct pt_status st;
    int rc;

    pt_jw_init(&w, PT_HTTP_ANSWER_MAX);
    pt_jw_object(&w);
    pt_jw_key(&w, "shares");
    pt_jw_array(&w);
    lock(j);
    rc = each_share(j->h, who(j), write_share_fn, &sw, &st);
    unlock(j);
    if (rc != 0) {
        pt_jw_free(&w);
        answer_fail(&j->ans, rc, &st, false);
        return;
    }
    pt_jw_array_end(&w);
    pt_jw_object_end(&w);
    answer_json(&j->ans, 200, &w);
}

static void run_share_revoke(struct job *j)
{
    uint8_t *pkg = NULL, *url = NULL;
    size_t pkg_len = 0, url_len = 0;
    bool delivered = false;
    struct pt_status st;
    struct pt_jw w;
    int rc;

    lock(j);
    rc = pt_share_revoke(&j->h->cfg.link, j->h->cfg.ds, now_of(j->h), who(j), j->id, &pkg, &pkg_len,
                         &st);
    unlock(j);
    if (rc != 0) {
        answer_fail(&j->ans, rc, &st, false);
        return;
    }
    if (outbox_store(j->h, j->id, pkg, pkg_len, NULL, true) == 0) {
        pthread_mutex_lock(&j->h->outbox_mu);
        url = outbox_read(j->h, j->id, "url", PT_HTTP_URL_MAX, &url_len);
        pthread_mutex_unlock(&j->h->outbox_mu);
        if (url != NULL)
            delivered = deliver_one(j->h, j->id);
    }
    free(url);
    free(pkg);
    pt_jw_init(&w, 256);
    pt_jw_object(&w);
    pt_jw_key(&w, "revoked");
    pt_jw_bool(&w, true);
    pt_jw_key(&w, "delivered");
    pt_jw_bool(&w, delivered);
    pt_jw_object_end(&w);
    answer_json(&j->ans, 200, &w);
}

static void run_share_package(struct job *j)
{
    uint8_t *pkg;
    size_t len = 0;

    if (owner_only(j) != 0)
        return;
    pthread_mutex_lock(&j->h->outbox_mu);
    pkg = outbox_read(j->h, j->id, "pkg", j->h->cfg.doc_max, &len);
    pthread_mutex_unlock(&j->h->outbox_mu);
    if (pkg == NULL) {
        answer_error(&j->ans, 404, "NOT_FOUND", "no package of that share is kept here");
        return;
    }
    answer_reset(&j->ans);
    j->ans.status = 200;
    j->ans.ctype = "application/octet-stream";
    j->ans.body = pkg;
    j->ans.len = len;
}

static void run_inbox(struct job *j)
{
    uint8_t share_id[16];
    struct find_share *f = calloc(1, sizeof *f);
    struct pt_status st;
    struct pt_jw w;
    int rc;

    if (f == NULL) {
        answer_fail(&j->ans, PT_ERR_NOMEM, NULL, true);
        return;
    }
    lock(j);
    rc = pt_share_accept(&j->h->cfg.link, j->h->cfg.ds, now_of(j->h), NULL, j->body, j->body_len,
                         share_id, &st);
    if (rc == 0) {
        struct pt_status st2;
        j->h->recv_valid = false;
        f->id = share_id;
        f->incoming_only = false; /* a return package names a share this agent made */
        each_share(j->h, NULL, find_share_fn, f, &st2);
        /* A write back changed one of the owner's documents: its other
         * shares (and the writer's) get it, as after a write here. */
        sync_shares(j);
    }
    unlock(j);
    if (rc != 0) {
        answer_fail(&j->ans, rc, &st, true);
        free(f);
        return;
    }
    pt_jw_init(&w, 16384);
    pt_jw_object(&w);
    pt_jw_key(&w, "share");
    pt_jw_hex(&w, share_id, sizeof share_id);
    pt_jw_key(&w, "docs");
    pt_jw_array(&w);
    for (uint32_t i = 0; i < f->n_docs; i++)
        pt_jw_hex(&w, f->docs[i], PT_DOC_ID_LEN);
    pt_jw_array_end(&w);
    pt_jw_object_end(&w);
    answer_json(&j->ans, 201, &w);
    free(f);
}

/* --------------------------------------------------------------- audit */

static void write_entry(struct pt_jw *w, const Cohort__AuditEntry *e)
{
    pt_jw_object(w);
    pt_jw_key(w, "seq");
    pt_jw_u64(w, e->seq);
    pt_jw_key(w, "time");
    pt_jw_i64(w, e->time);
    pt_jw_key(w, "event");
    pt_jw_str(w, e->event != NULL && e->event[0] ? e->event : "collect");
    pt_jw_key(w, "accepted");
    pt_jw_bool(w, e->accepted);
    if (e->status != 0) {
        pt_jw_key(w, "code");
        pt_jw_str(w, tk_errname(e->status));
    }
    if (e->doc_id.len > 0) {
        pt_jw_key(w, "doc");
        pt_jw_hex(w, e->doc_id.data, e->doc_id.len);
    }
    if (e->cred_id.len > 0) {
        pt_jw_key(w, "credential");
        pt_jw_hex(w, e->cred_id.data, e->cred_id.len);
    }
    if (e->app != NULL && e->app[0]) {
        pt_jw_key(w, "app");
        pt_jw_str(w, e->app);
    }
    if (e->study != NULL && e->study[0]) {
        pt_jw_key(w, "study");
        pt_jw_str(w, e->study);
    }
    if (e->researcher != NULL && e->researcher[0]) {
        pt_jw_key(w, "researcher");
        pt_jw_str(w, e->researcher);
    }
    if (e->table != NULL && e->table[0]) {
        pt_jw_key(w, "table");
        pt_jw_str(w, e->table);
    }
    if (e->query_id.len > 0) {
        pt_jw_key(w, "query");
        pt_jw_hex(w, e->query_id.data, e->query_id.len);
        pt_jw_key(w, "epsilon");
        {
            /* As a decimal string: JSON has no NaN, and the writer has no doubles. */
            char eps[40];
            snprintf(eps, sizeof eps, "%.6g", e->epsilon);
            pt_jw_str(w, eps);
        }
    }
    if (e->sql != NULL && e->sql[0]) {
        pt_jw_key(w, "sql");
        pt_jw_str(w, e->sql);
    }
    if (e->reason != NULL && e->reason[0]) {
        pt_jw_key(w, "reason");
        pt_jw_str(w, e->reason);
    }
    pt_jw_object_end(w);
}

static void run_audit(struct job *j)
{
    uint64_t after = 0, limit = 100, n = 0;
    struct pt_status st;
    struct pt_jw w;
    bool more = false;
    int rc = 0;

    if (param_u64(j, "after", 0, UINT64_MAX, &after, false) != 0 ||
        param_u64(j, "limit", 1, PT_HTTP_AUDIT_MAX, &limit, false) != 0)
        return;
    pt_jw_init(&w, PT_HTTP_ANSWER_MAX);
    pt_jw_object(&w);
    pt_jw_key(&w, "entries");
    pt_jw_array(&w);
    lock(j);
    while (n < limit) {
        Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
        Cohort__ReadAudit ra = COHORT__READ_AUDIT__INIT;
        Cohort__TokenResponse *r = NULL;
        const Cohort__AuditPage *page;

        ra.after = after;
        ra.max_entries = (uint32_t)(limit - n);
        req.body_case = COHORT__TOKEN_REQUEST__BODY_READ_AUDIT;
        req.read_audit = &ra;
        rc = pt_tk_call(&j->h->cfg.link, now_of(j->h), who(j), &req,
                        COHORT__TOKEN_RESPONSE__BODY_AUDIT, &r, &st);
        if (rc != 0)
            break;
        page = r->audit;
        more = page->more;
        for (size_t i = 0; i < page->n_entries && n < limit; i++) {
            if (page->entries[i]->seq <= after) {
                more = false; /* a token that does not move on */
                break;
            }
            write_entry(&w, page->entries[i]);
            after = page->entries[i]->seq;
            n++;
        }
        if (page->n_entries == 0)
            more = false;
        cohort__token_response__free_unpacked(r, NULL);
        if (!more)
            break;
    }
    unlock(j);
    if (rc != 0) {
        pt_jw_free(&w);
        answer_fail(&j->ans, rc, &st, false);
        return;
    }
    pt_jw_array_end(&w);
    pt_jw_key(&w, "next");
    pt_jw_u64(&w, after);
    pt_jw_key(&w, "more");
    pt_jw_bool(&w, more);
    pt_jw_object_end(&w);
    answer_json(&j->ans, 200, &w);
}

/* ------------------------------------------------------------ lifecycle */

int pt_http_listen_url(const char *listen, char *url, size_t cap)
{
    char host[64];
    const char *colon;
    uint64_t port;
    size_t n;

    if (listen == NULL)
        return PT_ERR_INPUT;
    if (listen[0] == '[') {
        const char *end = strchr(listen, ']');
        if (end == NULL || end[1] != ':' || (size_t)(end - listen - 1) != 3 ||
            memcmp(listen + 1, "::1", 3) != 0)
            return PT_ERR_INPUT;
        colon = end + 1;
        snprintf(host, sizeof host, "[::1]");
    } else {
        colon = strrchr(listen, ':');
        if (colon == NULL || strchr(listen, ':') != colon)
            return PT_ERR_INPUT;
        n = (size_t)(colon - listen);
        if (n == 0 || n >= sizeof host)
            return PT_ERR_INPUT;
        memcpy(host, listen, n);
        host[n] = '\0';
        if (strcmp(host, "localhost") == 0) {
            snprintf(host, sizeof host, "127.0.0.1");
        } else {
            struct in_addr a;
            if (inet_pton(AF_INET, host, &a) != 1 || (ntohl(a.s_addr) >> 24) != 127)
                return PT_ERR_INPUT;
        }
    }
    if (sh_parse_u64(colon + 1, 0, 65535, &port) != 0)
        return PT_ERR_INPUT;
    if ((size_t)snprintf(url, cap, "http://%s:%llu", host, (unsigned long long)port) >= cap)
        return PT_ERR_INPUT;
    return 0;
}

static void say(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || err_len == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

int pt_http_start(struct pt_http **out, const struct pt_http_config *cfg, char *err, size_t err_len)
{
    char url[128];
    struct pt_http *h;
    nng_url *u = NULL;
    nng_sockaddr sa;
    int rv, rc = PT_ERR_IO;

    *out = NULL;
    if (pt_http_listen_url(cfg->listen, url, sizeof url) != 0) {
        say(err, err_len,
            "the API listens on a loopback address only (127.0.0.1:PORT, "
            "[::1]:PORT or localhost:PORT)");
        return PT_ERR_INPUT;
    }
    if (cfg->outbox == NULL || strlen(cfg->outbox) >= PATH_MAX) {
        say(err, err_len, "no outbox directory");
        return PT_ERR_INPUT;
    }
    if (mkdir(cfg->outbox, 0700) != 0 && errno != EEXIST) {
        say(err, err_len, "cannot make the outbox %s: %s", cfg->outbox, strerror(errno));
        return PT_ERR_IO;
    }
    if ((h = calloc(1, sizeof *h)) == NULL)
        return PT_ERR_NOMEM;
    h->cfg = *cfg;
    if (h->cfg.json_max == 0)
        h->cfg.json_max = PT_HTTP_JSON_MAX;
    if (h->cfg.doc_max == 0)
        h->cfg.doc_max = PT_HTTP_DOC_MAX;
    if (h->cfg.body_ms <= 0)
        h->cfg.body_ms = PT_HTTP_BODY_MS;
    snprintf(h->outbox, sizeof h->outbox, "%s", cfg->outbox);
    h->cfg.outbox = h->outbox;
    h->generation = (uint64_t)time(NULL) << 20;
    atomic_init(&h->refs, 1);
    pthread_mutex_init(&h->token_mu, NULL);
    pthread_mutex_init(&h->outbox_mu, NULL);
    pthread_mutex_init(&h->log_mu, NULL);
    pthread_mutex_init(&h->q_mu, NULL);
    pthread_cond_init(&h->q_cv, NULL);
    pthread_cond_init(&h->live_cv, NULL);

    if ((rv = nng_url_parse(&u, url)) != 0 || (rv = nng_http_server_hold(&h->srv, u)) != 0) {
        say(err, err_len, "cannot serve %s: %s", url, nng_strerror(rv));
        goto fail;
    }
    if ((rv = nng_http_handler_alloc(&h->handler, "/", on_request)) != 0 ||
        (rv = nng_http_handler_set_method(h->handler, NULL)) != 0 ||
        (rv = nng_http_handler_set_tree(h->handler)) != 0 ||
        (rv = nng_http_handler_collect_body(h->handler, false, 0)) != 0 ||
        (rv = nng_http_handler_set_data(h->handler, h, handler_dtor)) != 0) {
        say(err, err_len, "cannot make the HTTP handler: %s", nng_strerror(rv));
        if (h->handler != NULL)
            nng_http_handler_free(h->handler); /* before it holds a reference */
        h->handler = NULL;
        goto fail;
    }
    atomic_fetch_add(&h->refs, 1); /* the handler's, dropped by its destructor */
    if ((rv = nng_http_server_add_handler(h->srv, h->handler)) != 0) {
        say(err, err_len, "cannot add the HTTP handler: %s", nng_strerror(rv));
        nng_http_handler_free(h->handler); /* runs the destructor */
        h->handler = NULL;
        goto fail;
    }
    if ((rv = nng_http_server_start(h->srv)) != 0) {
        say(err, err_len, "cannot listen on %s: %s", url, nng_strerror(rv));
        goto fail;
    }
    if (nng_http_server_get_addr(h->srv, &sa) == 0)
        h->port = sa.s_family == NNG_AF_INET ? ntohs(sa.s_in.sa_port) : ntohs(sa.s_in6.sa_port);
    if (h->port > 0) {
        char *colon = strrchr(url, ':'); /* after the host: "http://HOST:PORT" */
        snprintf(h->self_url, sizeof h->self_url, "%.*s:%d", (int)(colon - url), url, h->port);
    }
    nng_url_free(u);
    u = NULL;
    for (unsigned i = 0; i < PT_HTTP_WORKERS; i++) {
        if (pthread_create(&h->workers[i], NULL, worker, h) != 0)
            break;
        h->n_workers++;
    }
    if (h->n_workers == 0) {
        say(err, err_len, "cannot start the workers");
        nng_http_server_stop(h->srv);
        rc = PT_ERR_NOMEM;
        goto fail;
    }
    *out = h;
    return 0;
fail:
    if (u != NULL)
        nng_url_free(u);
    if (h->srv != NULL)
        nng_http_server_release(h->srv); /* frees the handler it holds */
    h_unref(h);
    return rc;
}

int pt_http_port(const struct pt_http *h)
{
    return h->port;
}

void pt_http_stop(struct pt_http *h)
{
    if (h == NULL)
        return;
    pthread_mutex_lock(&h->q_mu);
    h->stopping = true;
    pthread_cond_broadcast(&h->q_cv);
    pthread_mutex_unlock(&h->q_mu);
    nng_http_server_stop(h->srv); /* no new connection; open ones are closed */
    for (unsigned i = 0; i < h->n_workers; i++)
        pthread_join(h->workers[i], NULL);
    pthread_mutex_lock(&h->q_mu);
    while (h->live > 0)
        pthread_cond_wait(&h->live_cv, &h->q_mu);
    pthread_mutex_unlock(&h->q_mu);
    pthread_mutex_lock(&h->log_mu);
    h->closed = true; /* nothing reaches the caller's log from now on */
    pthread_mutex_unlock(&h->log_mu);
    nng_http_server_release(h->srv);
    h_unref(h);
}
