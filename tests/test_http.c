/*
 * test_http.c: the agent's local HTTP API (participant/pt_http.c) on a
 * real nng HTTP server, over real loopback sockets, in front of real
 * software tokens and document stores in a temporary directory.
 *
 * The client is a plain socket that writes exactly the bytes each test
 * gives it, so that hostile requests (a raw "../", percent-escapes, a
 * lying Content-Length, a chunked body, a foreign Host) reach the server
 * as they are, not as an HTTP library would tidy them.
 *
 * - Every route answers its success, as the owner and as an app.
 * - 400: malformed JSON (its line and column named), bad ids, bad
 *   parameters, and paths that try to leave the data directory: the
 *   secret file beside the agent's directories is never opened (inotify
 *   says so) and no file appears anywhere.
 * - 401 for a credential missing, malformed, wrong, unknown, revoked or
 *   expired; 403 for what the token's rules refuse; 404; 405 with Allow;
 *   409 for a stale revision; 413 for a body over its limit, answered
 *   before the body is sent; 411 for a chunked body.
 * - Neither the log nor any error answer holds a credential's secret, a
 *   document's content or its metadata: every request of a session with
 *   marked values is replayed and both are searched for the marks.
 * - Sharing between two agents, each with its own server: delivery,
 *   reading at the recipient, updates, a replay (409), a forged package
 *   (403) and revocation. It is skipped while the token answers that it
 *   does not share yet.
 * - Requests from several threads at once, and the requests per second
 *   for small documents (printed).
 */
#define _DEFAULT_SOURCE
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tk_fixture.h"

#include "participant/cli.h"
#include "participant/pt_doc.h"
#include "participant/pt_http.h"
#include "participant/pt_json.h"
#include "participant/pt_owner.h"
#include "shell/shell.h"

#define HEX_ID 32
#define AGENT_BIN COHORT_BINARY_DIR "/participant/cohort-participant"
#define BIG_BODY (PT_HTTP_DOC_MAX + 1u)

/* ------------------------------------------------------------ the log */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char *log_buf;
static size_t log_len, log_lines;

static void capture(void *ctx, const char *line)
{
    size_t n = strlen(line);
    (void)ctx;
    pthread_mutex_lock(&log_mu);
    log_buf = realloc(log_buf, log_len + n + 2);
    assert_non_null(log_buf);
    memcpy(log_buf + log_len, line, n);
    log_len += n;
    log_buf[log_len++] = '\n';
    log_buf[log_len] = '\0';
    log_lines++;
    pthread_mutex_unlock(&log_mu);
}

static void log_reset(void)
{
    pthread_mutex_lock(&log_mu);
    free(log_buf);
    log_buf = NULL;
    log_len = 0;
    log_lines = 0;
    pthread_mutex_unlock(&log_mu);
}

static int64_t test_now = FX_NOW;

static int64_t test_clock(void *ctx)
{
    (void)ctx;
    return __atomic_load_n(&test_now, __ATOMIC_SEQ_CST);
}

/* ---------------------------------------------------------- the world */

struct agent {
    char dir[256], docs[256], outbox[256];
    struct pt_soft *soft;
    struct pt_link link;
    struct pt_docstore *ds;
    struct pt_http *h;
    int port;
    uint8_t pk[32];
    char owner[PT_CRED_TEXT_LEN + 1]; /* the owner's credential, as text */
};

struct world {
    char root[128];
    char secret_path[256];
    struct fx_world fx;
    struct agent a, b;
};

/* Provision the token over its link: the manufacturer certifies it, and it
 * trusts the manufacturer and the study authority. */
static void provision(struct agent *ag, const struct fx_world *fx, const char *subject)
{
    struct pt_owner o;
    uint8_t *csr = NULL;
    size_t csr_len = 0, len;
    Cohort__CertRequest *cr;
    struct fx_cert cert;
    uint8_t sealed[32 + crypto_box_SEALBYTES];
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__ProvisionFinish pf = COHORT__PROVISION_FINISH__INIT;
    Cohort__Certificate c;
    Cohort__TokenResponse *r;
    ProtobufCBinaryData tr[2] = {{32, (uint8_t *)fx->maker.pk}, {32, (uint8_t *)fx->authority.pk}};
    const uint8_t *resp;
    size_t resp_len;
    uint8_t *buf;

    pt_owner_init(&o, &ag->link, FX_NOW);
    assert_int_equal(pt_owner_provision_begin(&o, subject, &csr, &csr_len, ag->pk), 0);
    cr = cohort__cert_request__unpack(NULL, csr_len, csr);
    assert_non_null(cr);
    fx_cert_issue(&cert, COHORT__ROLE__ROLE_TOKEN, subject, cr->sign_pk.data, cr->box_pk.data,
                  &fx->maker, FX_NOW - FX_DAY, FX_NOW + 365 * FX_DAY, NULL);
    crypto_box_seal(sealed, fx->secret, 32, cr->box_pk.data);
    fx_cert_pb(&c, &cert);
    pf.device_cert = &c;
    pf.sealed_group_secret = (ProtobufCBinaryData){sizeof sealed, sealed};
    pf.n_trusted_authorities = 2;
    pf.trusted_authorities = tr;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_PROVISION_FINISH;
    req.provision_finish = &pf;
    len = cohort__token_request__get_packed_size(&req);
    buf = malloc(len);
    cohort__token_request__pack(&req, buf);
    assert_int_equal(ag->link.transact(ag->link.ctx, buf, len, &resp, &resp_len), 0);
    r = cohort__token_response__unpack(NULL, resp_len, resp);
    assert_non_null(r);
    assert_int_equal(r->status, 0);
    cohort__token_response__free_unpacked(r, NULL);
    cohort__cert_request__free_unpacked(cr, NULL);
    free(buf);
    free(csr);
}

static void agent_start(struct agent *ag, const char *root, const char *name,
                        const struct fx_world *fx)
{
    char err[256];
    struct pt_cred secret;
    struct pt_cred_info *info = calloc(1, sizeof *info);
    struct pt_status st;
    struct pt_http_config cfg;

    snprintf(ag->dir, sizeof ag->dir, "%s/%s", root, name);
    snprintf(ag->docs, sizeof ag->docs, "%s/%s/docs", root, name);
    snprintf(ag->outbox, sizeof ag->outbox, "%s/%s/outbox", root, name);
    assert_int_equal(pt_soft_create(&ag->soft, ag->dir, TK_ARENA_DEFAULT, err, sizeof err), 0);
    ag->link = pt_soft_link(ag->soft);
    assert_int_equal(pt_docstore_open(&ag->ds, ag->docs), 0);
    provision(ag, fx, name);
    /* The owner's credential for the owner's endpoints, issued at the link. */
    assert_int_equal(
        pt_cred_issue(&ag->link, FX_NOW, NULL, "owner", NULL, 0, 0, true, &secret, info, &st), 0);
    pt_cred_format(&secret, ag->owner);
    free(info);

    memset(&cfg, 0, sizeof cfg);
    cfg.listen = "127.0.0.1:0";
    cfg.link = ag->link;
    cfg.ds = ag->ds;
    cfg.outbox = ag->outbox;
    cfg.log = capture;
    cfg.clock = test_clock;
    assert_int_equal(pt_http_start(&ag->h, &cfg, err, sizeof err), 0);
    ag->port = pt_http_port(ag->h);
    assert_true(ag->port > 0);
}

static void agent_stop(struct agent *ag)
{
    pt_http_stop(ag->h);
    pt_docstore_close(ag->ds);
    pt_soft_close(ag->soft);
    ag->h = NULL;
    ag->ds = NULL;
    ag->soft = NULL;
}

static int setup(void **state)
{
    struct world *w = fx_alloc(sizeof *w);
    FILE *f;

    __atomic_store_n(&test_now, FX_NOW, __ATOMIC_SEQ_CST);
    snprintf(w->root, sizeof w->root, "/tmp/test_http.XXXXXX");
    assert_non_null(mkdtemp(w->root));
    fx_world_init(&w->fx);
    /* A file beside the agents' directories that no request may reach. */
    snprintf(w->secret_path, sizeof w->secret_path, "%s/secret.txt", w->root);
    f = fopen(w->secret_path, "w");
    assert_non_null(f);
    fputs("TOP-SECRET-CONTENT\n", f);
    fclose(f);
    agent_start(&w->a, w->root, "a", &w->fx);
    agent_start(&w->b, w->root, "b", &w->fx);
    log_reset();
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    struct world *w = *state;
    agent_stop(&w->a);
    agent_stop(&w->b);
    fx_rm_tree(w->root);
    free(w);
    log_reset();
    return 0;
}

/* ---------------------------------------------------------- the client */

struct resp {
    int status;
    char head[8192];
    uint8_t *body;
    size_t len;
};

static void resp_free(struct resp *r)
{
    free(r->body);
    memset(r, 0, sizeof *r);
}

static int connect_to(int port)
{
    struct sockaddr_in sa;
    struct timeval tv = {20, 0};
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return; /* the server may close early (413): what it said is still read */
        b += k;
        n -= (size_t)k;
    }
}

/* A header's value in a response head (case-insensitive name), or NULL. */
static const char *header(const struct resp *r, const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    const char *p = strstr(r->head, "\r\n");

    while (p != NULL && p[2] != '\0') {
        const char *line = p + 2, *end = strstr(line, "\r\n");
        if (end == NULL)
            break;
        if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *v = line + n + 1;
            while (*v == ' ')
                v++;
            snprintf(out, cap, "%.*s", (int)(end - v), v);
            return out;
        }
        p = end;
    }
    return NULL;
}

/* Read one response from fd (its head, then Content-Length bytes, or to EOF). */
static int read_response(int fd, struct resp *r)
{
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0, head_len = 0;
    char v[32];
    long want = -1;

    memset(r, 0, sizeof *r);
    for (;;) {
        ssize_t k;
        if (len == cap) {
            cap = cap ? 2 * cap : 65536;
            buf = realloc(buf, cap + 1);
            assert_non_null(buf);
        }
        if (head_len > 0 && want >= 0 && len >= head_len + (size_t)want)
            break;
        k = recv(fd, buf + len, cap - len, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        len += (size_t)k;
        buf[len] = '\0';
        if (head_len == 0) {
            char *e = memmem(buf, len, "\r\n\r\n", 4);
            if (e != NULL) {
                head_len = (size_t)(e - (char *)buf) + 4;
                assert_true(head_len < sizeof r->head);
                memcpy(r->head, buf, head_len);
                r->head[head_len] = '\0';
                if (header(r, "Content-Length", v, sizeof v) != NULL)
                    want = atol(v);
                else if (strncmp(r->head + 9, "204", 3) == 0 || strncmp(r->head + 9, "100", 3) == 0)
                    want = 0;
            }
        }
    }
    if (head_len == 0) {
        free(buf);
        return -1;
    }
    r->status = atoi(r->head + 9);
    r->len = len - head_len;
    if (want >= 0 && r->len > (size_t)want)
        r->len = (size_t)want;
    r->body = malloc(r->len + 1);
    memcpy(r->body, buf + head_len, r->len);
    r->body[r->len] = '\0';
    free(buf);
    return 0;
}

/* Send exactly these bytes on a new connection and read the answer. */
static void raw(int port, const void *req, size_t len, struct resp *r)
{
    int fd = connect_to(port);
    send_all(fd, req, len);
    assert_int_equal(read_response(fd, r), 0);
    close(fd);
}

/* One request, with its body's Content-Length. cred: the 96 hex digits, or NULL. */
static void request(const struct agent *ag, const char *method, const char *target,
                    const char *cred, const void *body, size_t len, struct resp *r)
{
    size_t cap = 1024 + strlen(target) + len, n;
    char *req = malloc(cap);

    n = (size_t)snprintf(req, cap,
                         "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n%s%s%s",
                         method, target, ag->port, cred ? "Authorization: Bearer " : "",
                         cred ? cred : "", cred ? "\r\n" : "");
    if (body != NULL || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0)
        n += (size_t)snprintf(req + n, cap - n, "Content-Length: %zu\r\n", len);
    n += (size_t)snprintf(req + n, cap - n, "\r\n");
    if (len > 0)
        memcpy(req + n, body, len);
    raw(ag->port, req, n + len, r);
    free(req);
}

static void get(const struct agent *ag, const char *target, const char *cred, struct resp *r)
{
    request(ag, "GET", target, cred, NULL, 0, r);
}

static void post_json(const struct agent *ag, const char *target, const char *cred,
                      const char *json, struct resp *r)
{
    request(ag, "POST", target, cred, json, strlen(json), r);
}

#define expect_status(r, want)                                                                     \
    do {                                                                                           \
        if ((r)->status != (want))                                                                 \
            fail_msg("status %d, expected %d: %s", (r)->status, (want), (char *)(r)->body);        \
    } while (0)

/* ----------------------------------------------------------------- JSON */

struct jdoc {
    struct pt_json doc;
    const struct pt_json_value *root;
};

static void json_of(struct jdoc *j, const struct resp *r)
{
    struct pt_json_error err;
    char v[64];
    assert_non_null(header(r, "Content-Type", v, sizeof v));
    assert_string_equal(v, "application/json");
    if (pt_json_parse(&j->doc, (const char *)r->body, r->len, &pt_json_limits_api, &err) != 0)
        fail_msg("the answer is not JSON: %s: %s", err.msg, (char *)r->body);
    j->root = j->doc.root;
}

static const char *jstr(const struct pt_json_value *o, const char *key)
{
    const struct pt_json_value *v = pt_json_member(o, key);
    if (v == NULL || v->type != PT_JSON_STRING)
        fail_msg("no string \"%s\"", key);
    return v->s;
}

static int64_t jint(const struct pt_json_value *o, const char *key)
{
    int64_t x = 0;
    if (pt_json_int(pt_json_member(o, key), INT64_MIN, INT64_MAX, &x) != 0)
        fail_msg("no whole number \"%s\"", key);
    return x;
}

static bool jbool(const struct pt_json_value *o, const char *key)
{
    const struct pt_json_value *v = pt_json_member(o, key);
    if (v == NULL || v->type != PT_JSON_BOOL)
        fail_msg("no boolean \"%s\"", key);
    return v->b;
}

static const struct pt_json_value *jarr(const struct pt_json_value *o, const char *key)
{
    const struct pt_json_value *v = pt_json_member(o, key);
    if (v == NULL || v->type != PT_JSON_ARRAY)
        fail_msg("no array \"%s\"", key);
    return v;
}

/* An error answer: its status, code, and a sentence. */
static void expect_error(const struct resp *r, int status, const char *code)
{
    struct jdoc j;
    if (r->status != status)
        fail_msg("status %d, expected %d: %s", r->status, status, (char *)r->body);
    json_of(&j, r);
    if (code != NULL && strcmp(jstr(j.root, "code"), code) != 0)
        fail_msg("code %s, expected %s", jstr(j.root, "code"), code);
    assert_true(strlen(jstr(j.root, "error")) > 0);
    pt_json_free(&j.doc);
}

/* ------------------------------------------------------------- helpers */

/* Store a document as cred; its id (hex) in id. */
static void put_doc(const struct agent *ag, const char *cred, const char *query,
                    const char *content, char id[HEX_ID + 1])
{
    char target[512];
    struct resp r;
    struct jdoc j;

    snprintf(target, sizeof target, "/v1/docs?%s", query);
    request(ag, "POST", target, cred, content, strlen(content), &r);
    expect_status(&r, 201);
    json_of(&j, &r);
    snprintf(id, HEX_ID + 1, "%s", jstr(j.root, "id"));
    assert_int_equal(strlen(id), HEX_ID);
    assert_int_equal(jint(j.root, "revision"), 1);
    assert_int_equal(jint(j.root, "size"), (int64_t)strlen(content));
    pt_json_free(&j.doc);
    resp_free(&r);
}

/* Issue a credential through the API as cred; its text in out (and its id in id). */
static int issue(const struct agent *ag, const char *cred, const char *json,
                 char out[PT_CRED_TEXT_LEN + 1], char id[HEX_ID + 1])
{
    struct resp r;
    struct jdoc j;
    int status;

    post_json(ag, "/v1/credentials", cred, json, &r);
    status = r.status;
    if (status == 201) {
        json_of(&j, &r);
        snprintf(out, PT_CRED_TEXT_LEN + 1, "%s", jstr(j.root, "credential"));
        if (id != NULL)
            snprintf(id, HEX_ID + 1, "%s", jstr(j.root, "id"));
        assert_int_equal(strlen(out), PT_CRED_TEXT_LEN);
        pt_json_free(&j.doc);
    }
    resp_free(&r);
    return status;
}

static void expect_body(const struct resp *r, const char *content)
{
    if (r->len != strlen(content) || memcmp(r->body, content, r->len) != 0)
        fail_msg("body '%.*s', expected '%s'", (int)r->len, (char *)r->body, content);
}

/* ================================================================ tests */

static void every_route_answers_its_success(void **state)
{
    struct world *w = *state;
    struct agent *a = &w->a;
    char id[HEX_ID + 1], target[256], app[PT_CRED_TEXT_LEN + 1], app_id[HEX_ID + 1], v[128];
    struct resp r;
    struct jdoc j;
    const struct pt_json_value *list, *tags;
    uint8_t cert[PT_CERT_MAX];
    size_t cert_len = 0;
    char pk_hex[65];

    /* GET /v1/identity, without a credential. */
    get(a, "/v1/identity", NULL, &r);
    expect_status(&r, 200);
    json_of(&j, &r);
    sodium_bin2hex(pk_hex, sizeof pk_hex, a->pk, 32);
    assert_string_equal(jstr(j.root, "token"), pk_hex);
    assert_int_equal(sodium_base642bin(cert, sizeof cert, jstr(j.root, "certificate"),
                                       strlen(jstr(j.root, "certificate")), NULL, &cert_len, NULL,
                                       sodium_base64_VARIANT_ORIGINAL),
                     0);
    assert_true(cert_len > 64);
    pt_json_free(&j.doc);
    resp_free(&r);

    /* POST /v1/docs: the metadata in the query, decoded. */
    put_doc(a, a->owner, "type=bank.statement&author=ACME+Bank&subject=May%202026&tag=2026&tag=pdf",
            "statement one", id);

    /* GET /v1/docs/{id}: the content. */
    snprintf(target, sizeof target, "/v1/docs/%s", id);
    get(a, target, a->owner, &r);
    expect_status(&r, 200);
    expect_body(&r, "statement one");
    assert_string_equal(header(&r, "Content-Type", v, sizeof v), "application/octet-stream");
    assert_string_equal(header(&r, "Cohort-Revision", v, sizeof v), "1");
    assert_string_equal(header(&r, "Cache-Control", v, sizeof v), "no-store");
    resp_free(&r);

    /* An empty document is a document. */
    {
        char empty[HEX_ID + 1];
        put_doc(a, a->owner, "type=note.empty", "", empty);
        snprintf(target, sizeof target, "/v1/docs/%s", empty);
        get(a, target, a->owner, &r);
        expect_status(&r, 200);
        assert_int_equal(r.len, 0);
        resp_free(&r);
        snprintf(target, sizeof target, "/v1/docs/%s?rev=1", empty);
        request(a, "DELETE", target, a->owner, NULL, 0, &r);
        expect_status(&r, 204);
        resp_free(&r);
    }

    /* GET /v1/docs/{id}/meta */
    snprintf(target, sizeof target, "/v1/docs/%s/meta", id);
    get(a, target, a->owner, &r);
    expect_status(&r, 200);
    json_of(&j, &r);
    assert_string_equal(jstr(j.root, "id"), id);
    assert_int_equal(jint(j.root, "revision"), 1);
    assert_string_equal(jstr(j.root, "type"), "bank.statement");
    assert_string_equal(jstr(j.root, "author"), "ACME Bank");
    assert_string_equal(jstr(j.root, "subject"), "May 2026");
    tags = jarr(j.root, "tags");
    assert_int_equal(tags->n, 2);
    assert_string_equal(tags->child->s, "2026");
    assert_string_equal(tags->child->next->s, "pdf");
    assert_int_equal(jint(j.root, "size"), 13);
    assert_int_equal(jint(j.root, "created"), FX_NOW);
    assert_false(jbool(j.root, "shared"));
    pt_json_free(&j.doc);
    resp_free(&r);

    /* PUT without metadata keeps it; with a type replaces it. */
    snprintf(target, sizeof target, "/v1/docs/%s?rev=1", id);
    request(a, "PUT", target, a->owner, "statement two", 13, &r);
    expect_status(&r, 200);
    json_of(&j, &r);
    assert_int_equal(jint(j.root, "revision"), 2);
    pt_json_free(&j.doc);
    resp_free(&r);
    snprintf(target, sizeof target, "/v1/docs/%s/meta", id);
    get(a, target, a->owner, &r);
    json_of(&j, &r);
    assert_string_equal(jstr(j.root, "type"), "bank.statement");
    assert_string_equal(jstr(j.root, "author"), "ACME Bank");
    pt_json_free(&j.doc);
    resp_free(&r);
    snprintf(target, sizeof target, "/v1/docs/%s?rev=2&type=bank.letter&tag=kept", id);
    request(a, "PUT", target, a->owner, "a letter", 8, &r);
    expect_status(&r, 200);
    resp_free(&r);
    snprintf(target, sizeof target, "/v1/docs/%s/meta", id);
    get(a, target, a->owner, &r);
    json_of(&j, &r);
    assert_string_equal(jstr(j.root, "type"), "bank.letter");
    assert_string_equal(jstr(j.root, "author"), "");
    assert_int_equal(jint(j.root, "revision"), 3);
    pt_json_free(&j.doc);
    resp_free(&r);

    /* An old revision stays readable. */
    snprintf(target, sizeof target, "/v1/docs/%s?rev=1", id);
    get(a, target, a->owner, &r);
    expect_status(&r, 200);
    expect_body(&r, "statement one");
    resp_free(&r);

    /* GET /v1/docs, with and without a filter. */
    get(a, "/v1/docs?type=bank.*&limit=10", a->owner, &r);
    expect_status(&r, 200);
    json_of(&j, &r);
    list = jarr(j.root, "docs");
    assert_int_equal(list->n, 1);
    assert_string_equal(jstr(list->child, "id"), id);
    assert_false(jbool(j.root, "more"));
    pt_json_free(&j.doc);
    resp_free(&r);
    get(a, "/v1/docs?field=tag&value=kept&value=other", a->owner, &r);
    expect_status(&r, 200);
    json_of(&j, &r);
    assert_int_equal(jarr(j.root, "docs")->n, 1);
    pt_json_free(&j.doc);
    resp_free(&r);
    get(a, "/v1/docs?type=health.*", a->owner, &r);
    expect_status(&r, 200);
    json_of(&j, &r);
    assert_int_equal(jarr(j.root, "docs")->n, 0);
    pt_json_free(&j.doc);
    resp_free(&r);

    /* POST /v1/credentials, and the app reads with it. */
    assert_int_equal(
        issue(a, a->owner,
              "{\"name\":\"budget\",\"rules\":[{\"type\":\"bank.*\",\"verbs\":[\"GET\"]}],"
              "\"expires\":0}",
              app, app_id),
        201);
    snprintf(target, sizeof target, "/v1/docs/%s", id);
    get(a, target, app, &r);
    expect_status(&r, 200);
    expect_body(&r, "a letter");
    resp_free(&r);

    /* GET /v1/credentials: the owner's and the app's, never a secret. */
    get(a, "/v1/credentials", a->owner, &r);
    expect_status(&r, 200);
    json_of(&j, &r);
    list = jarr(j.root, "credentials");
    assert_int_equal(list->n, 2);
    assert_string_equal(jstr(list->child->next, "id"), app_id);
    assert_string_equal(jstr(list->child->next, "name"), "budget");
    assert_string_equal(jstr(jarr(list->child->next, "rules")->child, "type"), "bank.*");
    assert_null(memmem(r.body, r.len, app + HEX_ID, PT_CRED_TEXT_LEN - HEX_ID));
    pt_json_free(&j.doc);
    resp_free(&r);

    /* GET /v1/audit: the document's life is there. */
    get(a, "/v1/audit?limit=1000", a->owner, &r);
    expect_status(&r, 200);
    json_of(&j, &r);
    list = jarr(j.root, "entries");
    assert_true(list->n >= 4);
    {
        bool created = false, read_by_app = false;
        for (const struct pt_json_value *e = list->child; e != NULL; e = e->next) {
            const struct pt_json_value *doc = pt_json_member(e, "doc");
            if (strcmp(jstr(e, "event"), "doc.create") == 0 && doc != NULL &&
                strcmp(doc->s, id) == 0)
                created = true;
            if (strcmp(jstr(e, "event"), "doc.read") == 0 && pt_json_member(e, "app") != NULL &&
                strcmp(jstr(e, "app"), "budget") == 0)
                read_by_app = true;
        }
        assert_true(created);
        assert_true(read_by_app);
    }
    pt_json_free(&j.doc);
    resp_free(&r);

    /* DELETE /v1/credentials/{id}: the app is refused from then on. */
    snprintf(target, sizeof target, "/v1/credentials/%s", app_id);
    request(a, "DELETE", target, a->owner, NULL, 0, &r);
    expect_status(&r, 204);
    assert_int_equal(r.len, 0);
    resp_free(&r);
    snprintf(target, sizeof target, "/v1/docs/%s", id);
    get(a, target, app, &r);
    expect_error(&r, 401, "TK_ERR_AUTH");
    resp_free(&r);

    /* DELETE /v1/docs/{id} */
    snprintf(target, sizeof target, "/v1/docs/%s?rev=3", id);
    request(a, "DELETE", target, a->owner, NULL, 0, &r);
    expect_status(&r, 204);
    resp_free(&r);
    snprintf(target, sizeof target, "/v1/docs/%s", id);
    get(a, target, a->owner, &r);
    expect_error(&r, 404, "TK_ERR_NOT_FOUND");
    resp_free(&r);

    /* Every request was logged, one line each. */
    pthread_mutex_lock(&log_mu);
    assert_non_null(strstr(log_buf, "GET /v1/identity 200"));
    assert_non_null(strstr(log_buf, "POST /v1/docs 201"));
    assert_non_null(strstr(log_buf, "PUT /v1/docs/{id} 200"));
    assert_non_null(strstr(log_buf, "DELETE /v1/docs/{id} 204"));
    assert_non_null(strstr(log_buf, "GET /v1/docs/{id} 401"));
    pthread_mutex_unlock(&log_mu);
}

/* --------------------------------------------------------------- sharing */

static bool share_supported(const struct agent *a)
{
    struct resp r;
    bool ok;
    get(a, "/v1/shares", a->owner, &r);
    ok = r.status == 200;
    if (!ok)
        assert_int_equal(r.status, 501); /* TK_ERR_UNSUPPORTED */
    resp_free(&r);
    return ok;
}

/* Wait until b reads id's content as want (a delivery runs after the answer). */
static void eventually_reads(const struct agent *b, const char *id, const char *want)
{
    char target[128];
    for (int i = 0; i < 200; i++) {
        struct resp r;
        snprintf(target, sizeof target, "/v1/docs/%s", id);
        get(b, target, b->owner, &r);
        if (r.status == 200 && r.len == strlen(want) && memcmp(r.body, want, r.len) == 0) {
            resp_free(&r);
            return;
        }
        resp_free(&r);
        usleep(25000);
    }
    fail_msg("the recipient never read '%s'", want);
}

static void two_agents_share_over_http(void **state)
{
    struct world *w = *state;
    struct agent *a = &w->a, *b = &w->b;
    char id[HEX_ID + 1], share[HEX_ID + 1], target[256], json[4096], cert[1024];
    struct resp r;
    struct jdoc j;
    uint8_t *pkg;
    size_t pkg_len;

    if (!share_supported(a))
        skip();
    get(b, "/v1/identity", NULL, &r);
    json_of(&j, &r);
    snprintf(cert, sizeof cert, "%s", jstr(j.root, "certificate"));
    pt_json_free(&j.doc);
    resp_free(&r);

    put_doc(a, a->owner, "type=health.record&author=Dr+Kaur", "blood test: fine", id);
    snprintf(json, sizeof json,
             "{\"recipient\":\"%s\",\"docs\":[\"%s\"],\"policy\":{\"read_write\":false,"
             "\"expires\":0,\"max_reads\":100},\"deliver\":\"http://127.0.0.1:%d\"}",
             cert, id, b->port);
    post_json(a, "/v1/shares", a->owner, json, &r);
    expect_status(&r, 201);
    json_of(&j, &r);
    snprintf(share, sizeof share, "%s", jstr(j.root, "share"));
    assert_int_equal(jint(j.root, "seq"), 1);
    assert_true(jbool(j.root, "delivered"));
    pt_json_free(&j.doc);
    resp_free(&r);

    /* The recipient reads it, and lists the share as incoming. */
    eventually_reads(b, id, "blood test: fine");
    get(b, "/v1/shares", b->owner, &r);
    expect_status(&r, 200);
    json_of(&j, &r);
    assert_int_equal(jarr(j.root, "shares")->n, 1);
    assert_true(jbool(jarr(j.root, "shares")->child, "incoming"));
    assert_string_equal(jstr(jarr(j.root, "shares")->child, "share"), share);
    pt_json_free(&j.doc);
    resp_free(&r);
    snprintf(target, sizeof target, "/v1/docs/%s/meta", id);
    get(b, target, b->owner, &r);
    expect_status(&r, 200);
    json_of(&j, &r);
    assert_true(jbool(j.root, "shared"));
    pt_json_free(&j.doc);
    resp_free(&r);

    /* The package by hand: a second delivery is a replay (409). */
    snprintf(target, sizeof target, "/v1/shares/%s/package", share);
    get(a, target, a->owner, &r);
    expect_status(&r, 200);
    pkg = r.body;
    pkg_len = r.len;
    r.body = NULL;
    resp_free(&r);
    request(b, "POST", "/v1/inbox", NULL, pkg, pkg_len, &r);
    expect_error(&r, 409, NULL);
    resp_free(&r);
    /* A forged package: a flipped bit in the sealed grant. */
    pkg[pkg_len / 2] ^= 0x10;
    request(b, "POST", "/v1/inbox", NULL, pkg, pkg_len, &r);
    assert_true(r.status == 403 || r.status == 400);
    resp_free(&r);
    free(pkg);
    request(b, "POST", "/v1/inbox", NULL, "not a package", 13, &r);
    assert_true(r.status == 400 || r.status == 403);
    resp_free(&r);

    /* An update reaches the recipient. */
    snprintf(target, sizeof target, "/v1/docs/%s?rev=1", id);
    request(a, "PUT", target, a->owner, "blood test: redone", 18, &r);
    expect_status(&r, 200);
    resp_free(&r);
    eventually_reads(b, id, "blood test: redone");

    /* Read-only at the recipient. */
    snprintf(target, sizeof target, "/v1/docs/%s?rev=2", id);
    request(b, "PUT", target, b->owner, "mine now", 8, &r);
    assert_int_equal(r.status, 403);
    resp_free(&r);

    /* Revocation stops the reads. */
    snprintf(target, sizeof target, "/v1/shares/%s", share);
    request(a, "DELETE", target, a->owner, NULL, 0, &r);
    expect_status(&r, 200);
    json_of(&j, &r);
    assert_true(jbool(j.root, "revoked"));
    assert_true(jbool(j.root, "delivered"));
    pt_json_free(&j.doc);
    resp_free(&r);
    snprintf(target, sizeof target, "/v1/docs/%s", id);
    get(b, target, b->owner, &r);
    assert_true(r.status == 403 || r.status == 404);
    resp_free(&r);
}

/* Wait until ag lists n shares (a delivery runs after the answer). */
static void eventually_shares(const struct agent *ag, size_t n)
{
    for (int i = 0; i < 200; i++) {
        struct resp r;
        struct jdoc j;
        size_t got;
        get(ag, "/v1/shares", ag->owner, &r);
        expect_status(&r, 200);
        json_of(&j, &r);
        got = jarr(j.root, "shares")->n;
        pt_json_free(&j.doc);
        resp_free(&r);
        if (got == n)
            return;
        usleep(25000);
    }
    fail_msg("the agent never listed %zu shares", n);
}

/* A's share of id with to (read-write or not), delivered to it. */
static void share_with(const struct agent *a, const struct agent *to, const char *id,
                       bool read_write)
{
    char json[4096], cert[1024];
    struct resp r;
    struct jdoc j;

    get(to, "/v1/identity", NULL, &r);
    json_of(&j, &r);
    snprintf(cert, sizeof cert, "%s", jstr(j.root, "certificate"));
    pt_json_free(&j.doc);
    resp_free(&r);
    snprintf(json, sizeof json,
             "{\"recipient\":\"%s\",\"docs\":[\"%s\"],\"policy\":{\"read_write\":%s,"
             "\"expires\":0,\"max_reads\":5},\"deliver\":\"http://127.0.0.1:%d\"}",
             cert, id, read_write ? "true" : "false", to->port);
    post_json(a, "/v1/shares", a->owner, json, &r);
    expect_status(&r, 201);
    json_of(&j, &r);
    assert_true(jbool(j.root, "delivered"));
    pt_json_free(&j.doc);
    resp_free(&r);
}

static void a_write_back_reaches_the_owner_and_then_the_other_recipients(void **state)
{
    struct world *w = *state;
    struct agent *a = &w->a, *b = &w->b;
    struct agent *c = calloc(1, sizeof *c);
    char id[HEX_ID + 1], target[256], v[32];
    struct resp r;
    struct jdoc j;

    if (!share_supported(a)) {
        free(c);
        skip();
    }
    agent_start(c, w->root, "c", &w->fx);
    put_doc(a, a->owner, "type=health.record&author=Dr+Kaur&tag=lab", "blood test: fine", id);
    share_with(a, b, id, true);
    share_with(a, c, id, false);
    eventually_shares(b, 1);
    eventually_shares(c, 1);

    /* Bob writes, without metadata: it is the owner's, taken from the
     * share list, so that none of the share's five reads is spent. */
    snprintf(target, sizeof target, "/v1/docs/%s?rev=1", id);
    request(b, "PUT", target, b->owner, "blood test: amended", 19, &r);
    expect_status(&r, 200);
    json_of(&j, &r);
    assert_string_equal(jstr(j.root, "id"), id);
    assert_int_equal(jint(j.root, "revision"), 2);
    assert_int_equal(jint(j.root, "size"), 19);
    assert_true(jbool(j.root, "delivered"));
    pt_json_free(&j.doc);
    resp_free(&r);
    get(b, "/v1/shares", b->owner, &r);
    json_of(&j, &r);
    assert_int_equal(jarr(j.root, "shares")->n, 1);
    assert_int_equal(jarr(jarr(j.root, "shares")->child, "reads")->child->type, PT_JSON_NUMBER);
    {
        int64_t reads = -1;
        assert_int_equal(
            pt_json_int(jarr(jarr(j.root, "shares")->child, "reads")->child, 0, 100, &reads), 0);
        assert_int_equal(reads, 0);
    }
    pt_json_free(&j.doc);
    resp_free(&r);

    /* Alice has it as her document's revision 2, with her metadata. */
    snprintf(target, sizeof target, "/v1/docs/%s", id);
    get(a, target, a->owner, &r);
    expect_status(&r, 200);
    expect_body(&r, "blood test: amended");
    assert_non_null(header(&r, "Cohort-Revision", v, sizeof v));
    assert_string_equal(v, "2");
    resp_free(&r);
    snprintf(target, sizeof target, "/v1/docs/%s/meta", id);
    get(a, target, a->owner, &r);
    expect_status(&r, 200);
    json_of(&j, &r);
    assert_string_equal(jstr(j.root, "type"), "health.record");
    assert_string_equal(jstr(j.root, "author"), "Dr Kaur");
    assert_false(jbool(j.root, "shared"));
    pt_json_free(&j.doc);
    resp_free(&r);

    /* Carol's read-only share carries it on; Bob reads his own write. */
    eventually_reads(c, id, "blood test: amended");
    eventually_reads(b, id, "blood test: amended");

    /* Carol may not write; Bob may not write on a stale revision. */
    snprintf(target, sizeof target, "/v1/docs/%s?rev=2", id);
    request(c, "PUT", target, c->owner, "mine now", 8, &r);
    expect_error(&r, 403, "TK_ERR_DENIED");
    resp_free(&r);
    snprintf(target, sizeof target, "/v1/docs/%s?rev=1", id);
    request(b, "PUT", target, b->owner, "lost update", 11, &r);
    expect_error(&r, 409, "TK_ERR_CONFLICT");
    resp_free(&r);
    snprintf(target, sizeof target, "/v1/docs/%s", id);
    get(a, target, a->owner, &r);
    expect_body(&r, "blood test: amended");
    resp_free(&r);

    agent_stop(c);
    free(c);
}

static void lists_and_the_audit_page_with_their_cursors(void **state)
{
    struct world *w = *state;
    struct agent *a = &w->a;
    char ids[5][HEX_ID + 1], target[128];
    bool seen[5] = {false};
    uint64_t after = 0;
    int pages = 0;

    for (int i = 0; i < 5; i++)
        put_doc(a, a->owner, "type=page.test", "a page", ids[i]);
    for (;;) {
        struct resp r;
        struct jdoc j;
        bool more;
        snprintf(target, sizeof target, "/v1/docs?type=page.*&limit=2&after=%llu",
                 (unsigned long long)after);
        get(a, target, a->owner, &r);
        expect_status(&r, 200);
        json_of(&j, &r);
        assert_true(jarr(j.root, "docs")->n <= 2);
        for (const struct pt_json_value *d = jarr(j.root, "docs")->child; d != NULL; d = d->next)
            for (int i = 0; i < 5; i++)
                if (strcmp(jstr(d, "id"), ids[i]) == 0) {
                    assert_false(seen[i]);
                    seen[i] = true;
                }
        more = jbool(j.root, "more");
        after = (uint64_t)jint(j.root, "next");
        pt_json_free(&j.doc);
        resp_free(&r);
        assert_true(++pages < 20);
        if (!more)
            break;
    }
    for (int i = 0; i < 5; i++)
        assert_true(seen[i]);

    /* The audit log, two entries at a time, in order. */
    {
        struct resp r;
        struct jdoc j;
        int64_t first_seq, next;
        get(a, "/v1/audit?limit=2", a->owner, &r);
        expect_status(&r, 200);
        json_of(&j, &r);
        assert_int_equal(jarr(j.root, "entries")->n, 2);
        assert_true(jbool(j.root, "more"));
        first_seq = jint(jarr(j.root, "entries")->child, "seq");
        next = jint(j.root, "next");
        assert_int_equal(next, jint(jarr(j.root, "entries")->child->next, "seq"));
        pt_json_free(&j.doc);
        resp_free(&r);
        snprintf(target, sizeof target, "/v1/audit?limit=2&after=%lld", (long long)next);
        get(a, target, a->owner, &r);
        expect_status(&r, 200);
        json_of(&j, &r);
        assert_true(jint(jarr(j.root, "entries")->child, "seq") > next);
        assert_true(next > first_seq);
        pt_json_free(&j.doc);
        resp_free(&r);
    }
}

/* Restart an agent's server on the port it had. */
static void restart_on(struct agent *ag, int port)
{
    char listen[32], err[256];
    struct pt_http_config cfg;

    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    memset(&cfg, 0, sizeof cfg);
    cfg.listen = listen;
    cfg.link = ag->link;
    cfg.ds = ag->ds;
    cfg.outbox = ag->outbox;
    cfg.log = capture;
    cfg.clock = test_clock;
    assert_int_equal(pt_http_start(&ag->h, &cfg, err, sizeof err), 0);
    assert_int_equal(pt_http_port(ag->h), port);
}

static bool share_due(const struct agent *a)
{
    struct resp r;
    struct jdoc j;
    bool due;
    get(a, "/v1/shares", a->owner, &r);
    expect_status(&r, 200);
    json_of(&j, &r);
    assert_int_equal(jarr(j.root, "shares")->n, 1);
    assert_false(jbool(jarr(j.root, "shares")->child, "incoming"));
    due = jbool(jarr(j.root, "shares")->child, "due");
    pt_json_free(&j.doc);
    resp_free(&r);
    return due;
}

static void a_failed_delivery_is_retried_after_the_next_write(void **state)
{
    struct world *w = *state;
    struct agent *a = &w->a, *b = &w->b;
    char id[HEX_ID + 1], other[HEX_ID + 1], json[4096], cert[1024];
    int port_b = b->port;
    struct resp r;
    struct jdoc j;

    if (!share_supported(a))
        skip();
    get(b, "/v1/identity", NULL, &r);
    json_of(&j, &r);
    snprintf(cert, sizeof cert, "%s", jstr(j.root, "certificate"));
    pt_json_free(&j.doc);
    resp_free(&r);

    /* The recipient's agent is down when the share is made. */
    pt_http_stop(b->h);
    b->h = NULL;
    put_doc(a, a->owner, "type=health.record", "x-ray: clear", id);
    snprintf(json, sizeof json,
             "{\"recipient\":\"%s\",\"docs\":[\"%s\"],\"deliver\":\"http://127.0.0.1:%d/\"}", cert,
             id, port_b);
    post_json(a, "/v1/shares", a->owner, json, &r);
    expect_status(&r, 201);
    json_of(&j, &r);
    assert_false(jbool(j.root, "delivered"));
    pt_json_free(&j.doc);
    resp_free(&r);
    assert_true(share_due(a));

    /* It comes back; the sender's next write delivers what was due. */
    restart_on(b, port_b);
    put_doc(a, a->owner, "type=note.text", "unrelated", other);
    eventually_reads(b, id, "x-ray: clear");
    for (int i = 0; i < 200 && share_due(a); i++)
        usleep(25000);
    assert_false(share_due(a));
}

/* ------------------------------------------------------------ 400: JSON */

struct bad_json {
    const char *why;
    const char *body;
    const char *code;
    const char *says; /* a piece of the error */
};

static const struct bad_json bad_credentials[] = {
    {"an empty body", "", "BAD_JSON", "line 1, column 1"},
    {"an object not closed", "{\"name\":\"x\"", "BAD_JSON", "ends inside an object"},
    {"an array", "[]", "BAD_JSON", "must be a JSON object"},
    {"a trailing comma", "{\"name\":\"x\",}", "BAD_JSON", "line 1, column 13"},
    {"single quotes", "{\"name\":'x'}", "BAD_JSON", "expected a value"},
    {"a member twice", "{\"name\":\"x\",\"name\":\"y\"}", "BAD_JSON", "given twice"},
    {"invalid UTF-8", "{\"name\":\"\xc3\x28\"}", "BAD_JSON", "invalid UTF-8"},
    {"a second line", "{\n\"name\": \"x\",\n\"rules\": [}", "BAD_JSON", "line 3, column 11"},
    {"a comment", "{\"name\":\"x\" /* hi */}", "BAD_JSON", "expected ',' or '}'"},
    {"an unknown member", "{\"name\":\"x\",\"admin\":true}", "BAD_JSON", "only name"},
    {"no name", "{\"rules\":[{\"type\":\"*\",\"verbs\":[\"GET\"]}]}", "BAD_JSON", "\"name\""},
    {"a name too long",
     "{\"name\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
     "\"rules\":[{\"type\":\"*\",\"verbs\":[\"GET\"]}]}",
     "BAD_JSON", "\"name\""},
    {"no rules", "{\"name\":\"x\"}", "BAD_JSON", "\"rules\""},
    {"rules empty", "{\"name\":\"x\",\"rules\":[]}", "BAD_JSON", "\"rules\""},
    {"an unknown verb", "{\"name\":\"x\",\"rules\":[{\"type\":\"*\",\"verbs\":[\"FETCH\"]}]}",
     "BAD_JSON", "\"verbs\""},
    {"a verb twice", "{\"name\":\"x\",\"rules\":[{\"type\":\"*\",\"verbs\":[\"GET\",\"GET\"]}]}",
     "BAD_JSON", "\"verbs\""},
    {"a bad type", "{\"name\":\"x\",\"rules\":[{\"type\":\"Bank Statement\",\"verbs\":[\"GET\"]}]}",
     "BAD_JSON", "\"type\""},
    {"an unknown field",
     "{\"name\":\"x\",\"rules\":[{\"type\":\"*\",\"verbs\":[\"GET\"],\"field\":\"size\","
     "\"values\":[\"1\"]}]}",
     "BAD_JSON", "\"field\""},
    {"a field without values",
     "{\"name\":\"x\",\"rules\":[{\"type\":\"*\",\"verbs\":[\"GET\"],\"field\":\"tag\"}]}",
     "BAD_JSON", "\"values\""},
    {"a negative expiry",
     "{\"name\":\"x\",\"rules\":[{\"type\":\"*\",\"verbs\":[\"GET\"]}],\"expires\":-1}", "BAD_JSON",
     "\"expires\""},
    {"a fractional expiry",
     "{\"name\":\"x\",\"rules\":[{\"type\":\"*\",\"verbs\":[\"GET\"]}],\"expires\":1.5}",
     "BAD_JSON", "\"expires\""},
    {"owner as a string",
     "{\"name\":\"x\",\"rules\":[{\"type\":\"*\",\"verbs\":[\"GET\"]}],\"owner\":\"yes\"}",
     "BAD_JSON", "\"owner\""},
    {"nested too deep", "{\"name\":[[[[[[[[[[1]]]]]]]]]]}", "TOO_LARGE", "deeper than 8"},
};

static const struct bad_json bad_shares[] = {
    {"no recipient", "{\"docs\":[\"00112233445566778899aabbccddeeff\"]}", "BAD_JSON",
     "\"recipient\""},
    {"a recipient that is not base64", "{\"recipient\":\"***\",\"docs\":[]}", "BAD_JSON",
     "\"recipient\""},
    {"docs and a selector",
     "{\"recipient\":\"AAAA\",\"docs\":[\"00112233445566778899aabbccddeeff\"],"
     "\"selector\":{\"type\":\"*\"}}",
     "BAD_JSON", "either docs or a selector"},
    {"a bad document id", "{\"recipient\":\"AAAA\",\"docs\":[\"../../etc/passwd\"]}", "BAD_JSON",
     "\"docs\""},
    {"verbs in a selector",
     "{\"recipient\":\"AAAA\",\"selector\":{\"type\":\"*\",\"verbs\":[\"GET\"]}}", "BAD_JSON",
     "selector has only"},
    {"a delivery elsewhere than http",
     "{\"recipient\":\"AAAA\",\"docs\":[\"00112233445566778899aabbccddeeff\"],"
     "\"deliver\":\"file:///etc/passwd\"}",
     "BAD_JSON", "\"deliver\""},
    {"a policy of the wrong shape",
     "{\"recipient\":\"AAAA\",\"docs\":[\"00112233445566778899aabbccddeeff\"],"
     "\"policy\":{\"reshare\":true}}",
     "BAD_JSON", "\"policy\""},
};

static size_t count_credentials(const struct agent *a)
{
    struct resp r;
    struct jdoc j;
    size_t n;
    get(a, "/v1/credentials", a->owner, &r);
    expect_status(&r, 200);
    json_of(&j, &r);
    n = jarr(j.root, "credentials")->n;
    pt_json_free(&j.doc);
    resp_free(&r);
    return n;
}

static void run_bad_json(const struct agent *a, const char *route, const struct bad_json *t,
                         size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct resp r;
        struct jdoc j;
        post_json(a, route, a->owner, t[i].body, &r);
        if (r.status != (strcmp(t[i].code, "TOO_LARGE") == 0 ? 413 : 400))
            fail_msg("%s: status %d: %s", t[i].why, r.status, (char *)r.body);
        json_of(&j, &r);
        if (strcmp(jstr(j.root, "code"), t[i].code) != 0 ||
            strstr(jstr(j.root, "error"), t[i].says) == NULL)
            fail_msg("%s: %s", t[i].why, (char *)r.body);
        pt_json_free(&j.doc);
        resp_free(&r);
    }
}

static void malformed_json_is_400_and_names_where(void **state)
{
    struct world *w = *state;
    size_t before = count_credentials(&w->a);

    run_bad_json(&w->a, "/v1/credentials", bad_credentials,
                 sizeof bad_credentials / sizeof bad_credentials[0]);
    run_bad_json(&w->a, "/v1/shares", bad_shares, sizeof bad_shares / sizeof bad_shares[0]);
    assert_int_equal(count_credentials(&w->a), before); /* nothing was issued */
}

/* ------------------------------------------------- 400: ids, parameters */

struct bad_target {
    const char *method;
    const char *target;
    int status;
    const char *code;
};

static const struct bad_target bad_targets[] = {
    {"GET", "/v1/docs/xyz", 400, "BAD_PATH"},
    {"GET", "/v1/docs/00112233445566778899aabbccddeef", 400, "BAD_PATH"},
    {"GET", "/v1/docs/00112233445566778899aabbccddeeff0", 400, "BAD_PATH"},
    {"GET", "/v1/docs/gggggggggggggggggggggggggggggggg", 400, "BAD_PATH"},
    {"GET", "/v1/docs/00112233445566778899aabbccddeeff%00", 400, "BAD_PATH"},
    {"DELETE", "/v1/credentials/zz", 400, "BAD_PATH"},
    {"GET", "/v1/shares/12/package", 400, "BAD_PATH"},
    {"GET", "/v1/docs/00112233445566778899aabbccddeeff?rev=abc", 400, "BAD_PARAMETER"},
    {"GET", "/v1/docs/00112233445566778899aabbccddeeff?rev=0", 400, "BAD_PARAMETER"},
    {"GET", "/v1/docs/00112233445566778899aabbccddeeff?rev=-1", 400, "BAD_PARAMETER"},
    {"GET", "/v1/docs/00112233445566778899aabbccddeeff?rev=1&rev=2", 400, "BAD_PARAMETER"},
    {"GET", "/v1/docs/00112233445566778899aabbccddeeff?revision=1", 400, "BAD_PARAMETER"},
    {"GET", "/v1/docs/00112233445566778899aabbccddeeff?rev=%zz", 400, "BAD_PARAMETER"},
    {"GET", "/v1/docs/00112233445566778899aabbccddeeff?rev=1%", 400, "BAD_PARAMETER"},
    {"GET", "/v1/docs/00112233445566778899aabbccddeeff?REV=1", 400, "BAD_PARAMETER"},
    {"GET", "/v1/docs?limit=0", 400, "BAD_PARAMETER"},
    {"GET", "/v1/docs?limit=65", 400, "BAD_PARAMETER"},
    {"GET", "/v1/docs?field=size&value=1", 400, "BAD_PARAMETER"},
    {"GET", "/v1/docs?field=tag", 400, "BAD_PARAMETER"},
    {"GET", "/v1/docs?value=x", 400, "BAD_PARAMETER"},
    {"GET", "/v1/docs?type=Bank%20Statement", 400, "BAD_PARAMETER"},
    {"POST", "/v1/docs", 400, "BAD_PARAMETER"},                                   /* no type */
    {"POST", "/v1/docs?type=bank.statement&author=a%0ab", 400, "BAD_PARAMETER"},  /* a newline */
    {"POST", "/v1/docs?type=bank.statement&author=%c3%28", 400, "BAD_PARAMETER"}, /* not UTF-8 */
    {"POST",
     "/v1/docs?type=a&tag=1&tag=2&tag=3&tag=4&tag=5&tag=6&tag=7&tag=8&tag=9&tag=10&tag=11"
     "&tag=12&tag=13&tag=14&tag=15&tag=16&tag=17",
     400, "BAD_PARAMETER"},
    {"POST", "/v1/docs?type=a&created=soon", 400, "BAD_PARAMETER"},
    {"PUT", "/v1/docs/00112233445566778899aabbccddeeff", 400, "BAD_PARAMETER"}, /* no rev */
    {"DELETE", "/v1/docs/00112233445566778899aabbccddeeff", 400, "BAD_PARAMETER"},
    {"GET", "/v1/audit?after=x", 400, "BAD_PARAMETER"},
    {"GET", "/v1/identity#frag", 400, "BAD_PATH"},
};

static void bad_ids_and_parameters_are_400(void **state)
{
    struct world *w = *state;
    struct agent *a = &w->a;

    /* The longest target, of the most parameters, each taking its NULs. */
    for (int eq = 0; eq < 2; eq++) {
        char target[PT_HTTP_URI_MAX + 1];
        struct resp r;
        size_t n = (size_t)snprintf(target, sizeof target, "/v1/docs?type=a");
        for (int i = 0; i < (int)PT_HTTP_PARAMS_MAX - 2; i++)
            n += (size_t)snprintf(target + n, sizeof target - n, eq ? "&tag=" : "&tag");
        n += (size_t)snprintf(target + n, sizeof target - n, "&tag=");
        memset(target + n, 'v', PT_HTTP_URI_MAX - n);
        target[PT_HTTP_URI_MAX] = '\0';
        request(a, "POST", target, a->owner, "x", 1, &r);
        expect_error(&r, 400, "BAD_PARAMETER");
        resp_free(&r);
        target[PT_HTTP_URI_MAX - 1] = '\0'; /* one shorter */
        request(a, "POST", target, a->owner, "x", 1, &r);
        expect_error(&r, 400, "BAD_PARAMETER");
        resp_free(&r);
    }

    for (size_t i = 0; i < sizeof bad_targets / sizeof bad_targets[0]; i++) {
        const struct bad_target *t = &bad_targets[i];
        struct resp r;
        request(a, t->method, t->target, a->owner, NULL, 0, &r);
        if (r.status != t->status)
            fail_msg("%s %s: %d %s", t->method, t->target, r.status, (char *)r.body);
        if (t->code != NULL)
            expect_error(&r, t->status, t->code);
        resp_free(&r);
    }
}

/* --------------------------------------------- paths that leave the store */

/* Every file under root with its size, as lines (for before/after). */
static char *listing;
static size_t listing_len;

static int list_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    char line[512];
    int n = snprintf(line, sizeof line, "%s %lld\n", path,
                     flag == FTW_F ? (long long)sb->st_size : -1LL);
    (void)ftw;
    listing = realloc(listing, listing_len + (size_t)n + 1);
    memcpy(listing + listing_len, line, (size_t)n + 1);
    listing_len += (size_t)n;
    return 0;
}

static char *list_tree(const char *root)
{
    char *out;
    listing = NULL;
    listing_len = 0;
    nftw(root, list_one, 16, FTW_PHYS);
    out = listing;
    listing = NULL;
    return out;
}

static const char *const escapes[] = {
    "GET /v1/docs/../../secret.txt HTTP/1.1",
    "GET /v1/docs/../../../secret.txt HTTP/1.1",
    "GET /v1/docs/..%2f..%2fsecret.txt HTTP/1.1",
    "GET /v1/docs/%2e%2e/%2e%2e/secret.txt HTTP/1.1",
    "GET /v1/docs/%2E%2E%2F%2E%2E%2Fsecret.txt HTTP/1.1",
    "GET /v1/docs/%252e%252e/secret.txt HTTP/1.1",
    "GET /v1/../../secret.txt HTTP/1.1",
    "GET /../secret.txt HTTP/1.1",
    "GET /v1/docs/./00112233445566778899aabbccddeeff HTTP/1.1",
    "GET /v1/docs/00112233445566778899aabbccddeeff/.. HTTP/1.1",
    "GET /v1/docs/..\\..\\secret.txt HTTP/1.1",
    "GET /v1/shares/..%2f..%2fsecret/package HTTP/1.1",
    "GET /v1/shares/../../secret/package HTTP/1.1",
    "DELETE /v1/credentials/../../secret.txt HTTP/1.1",
    "PUT /v1/docs/../../evil.txt?rev=1 HTTP/1.1",
    "POST /v1/docs/../../../evil.txt?type=a HTTP/1.1",
    "GET http://127.0.0.1/v1/docs/../../secret.txt HTTP/1.1",
};

static void paths_that_try_to_leave_the_store_are_400_and_touch_nothing(void **state)
{
    struct world *w = *state;
    struct agent *a = &w->a;
    char *before, *after;
    int in = inotify_init1(IN_NONBLOCK);
    uint8_t events[4096];

    assert_true(in >= 0);
    assert_true(inotify_add_watch(in, w->secret_path, IN_ALL_EVENTS) >= 0);
    assert_true(inotify_add_watch(in, w->root, IN_CREATE | IN_MOVED_TO | IN_DELETE) >= 0);
    before = list_tree(w->root);
    for (size_t i = 0; i < sizeof escapes / sizeof escapes[0]; i++) {
        char req[1024];
        struct resp r;
        int n = snprintf(req, sizeof req,
                         "%s\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
                         "Content-Length: 4\r\nConnection: close\r\n\r\nevil",
                         escapes[i], a->port, a->owner);
        raw(a->port, req, (size_t)n, &r);
        if (r.status != 400)
            fail_msg("%s: %d %s", escapes[i], r.status, (char *)r.body);
        assert_null(memmem(r.body, r.len, "TOP-SECRET", 10));
        resp_free(&r);
    }
    after = list_tree(w->root);
    assert_string_equal(before, after); /* no file appeared, none changed size */
    /* The secret file was never opened, read or touched. */
    assert_true(read(in, events, sizeof events) < 0);
    assert_int_equal(errno, EAGAIN);
    close(in);
    free(before);
    free(after);
}

/* ------------------------------------------------------------------ 401 */

static void credentials_missing_malformed_wrong_or_revoked_are_401(void **state)
{
    struct world *w = *state;
    struct agent *a = &w->a;
    char id[HEX_ID + 1], target[128], app[PT_CRED_TEXT_LEN + 1], app_id[HEX_ID + 1];
    char wrong[PT_CRED_TEXT_LEN + 1], unknown[PT_CRED_TEXT_LEN + 1], hdr[256];
    char short_hex[PT_CRED_TEXT_LEN], long_hex[PT_CRED_TEXT_LEN + 2];
    struct resp r;

    put_doc(a, a->owner, "type=note.text", "a note", id);
    snprintf(target, sizeof target, "/v1/docs/%s", id);

    /* Headers that are not a credential: 401 before the token is asked. */
    snprintf(short_hex, sizeof short_hex, "%.95s", a->owner);
    snprintf(long_hex, sizeof long_hex, "%s0", a->owner);
    {
        const char *headers[] = {
            "",
            "Authorization: Basic dXNlcjpwYXNz\r\n",
            "Authorization: Bearer\r\n",
            "Authorization: Bearer \r\n",
            "Authorization: Token abcdef\r\n",
        };
        for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
            char req[1024];
            int n = snprintf(req, sizeof req,
                             "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sConnection: close\r\n\r\n",
                             target, headers[i]);
            raw(a->port, req, (size_t)n, &r);
            expect_error(&r, 401, i == 0 ? "NO_CREDENTIAL" : "BAD_CREDENTIAL");
            resp_free(&r);
        }
    }
    get(a, target, short_hex, &r);
    expect_error(&r, 401, "BAD_CREDENTIAL");
    resp_free(&r);
    get(a, target, long_hex, &r);
    expect_error(&r, 401, "BAD_CREDENTIAL");
    resp_free(&r);
    snprintf(hdr, sizeof hdr, "%s", a->owner);
    hdr[40] = 'z'; /* not hex */
    get(a, target, hdr, &r);
    expect_error(&r, 401, "BAD_CREDENTIAL");
    resp_free(&r);

    /* Well formed, but the token does not know it: TK_ERR_AUTH. */
    snprintf(wrong, sizeof wrong, "%s", a->owner);
    wrong[PT_CRED_TEXT_LEN - 1] = wrong[PT_CRED_TEXT_LEN - 1] == '0' ? '1' : '0'; /* secret */
    get(a, target, wrong, &r);
    expect_error(&r, 401, "TK_ERR_AUTH");
    resp_free(&r);
    snprintf(unknown, sizeof unknown, "%s", a->owner);
    unknown[0] = unknown[0] == '0' ? '1' : '0'; /* id */
    get(a, target, unknown, &r);
    expect_error(&r, 401, "TK_ERR_AUTH");
    resp_free(&r);
    /* The owner's endpoints too. */
    get(a, "/v1/credentials", wrong, &r);
    expect_error(&r, 401, "TK_ERR_AUTH");
    resp_free(&r);
    get(a, "/v1/audit", NULL, &r);
    expect_error(&r, 401, "NO_CREDENTIAL");
    resp_free(&r);

    /* Revoked: 401 from the next request on, for it and what it delegated. */
    assert_int_equal(issue(a, a->owner,
                           "{\"name\":\"notes\",\"rules\":[{\"type\":\"note.*\",\"verbs\":[\"GET\","
                           "\"POST\"]}]}",
                           app, app_id),
                     201);
    {
        char child[PT_CRED_TEXT_LEN + 1];
        assert_int_equal(issue(a, app,
                               "{\"name\":\"reader\",\"rules\":[{\"type\":\"note.text\","
                               "\"verbs\":[\"GET\"]}]}",
                               child, NULL),
                         201);
        get(a, target, child, &r);
        expect_status(&r, 200);
        resp_free(&r);
        snprintf(hdr, sizeof hdr, "/v1/credentials/%s", app_id);
        request(a, "DELETE", hdr, a->owner, NULL, 0, &r);
        expect_status(&r, 204);
        resp_free(&r);
        get(a, target, app, &r);
        expect_error(&r, 401, "TK_ERR_AUTH");
        resp_free(&r);
        get(a, target, child, &r);
        expect_error(&r, 401, "TK_ERR_AUTH");
        resp_free(&r);
    }

    /* Expired: the token's clock passes the expiry. */
    snprintf(hdr, sizeof hdr,
             "{\"name\":\"brief\",\"rules\":[{\"type\":\"*\",\"verbs\":[\"GET\"]}],"
             "\"expires\":%lld}",
             (long long)(FX_NOW + 60));
    assert_int_equal(issue(a, a->owner, hdr, app, NULL), 201);
    get(a, target, app, &r);
    expect_status(&r, 200);
    resp_free(&r);
    __atomic_store_n(&test_now, FX_NOW + 61, __ATOMIC_SEQ_CST);
    get(a, target, app, &r);
    expect_error(&r, 401, "TK_ERR_AUTH");
    resp_free(&r);
}

/* ------------------------------------------------------------------ 403 */

static void the_tokens_rules_are_403(void **state)
{
    struct world *w = *state;
    struct agent *a = &w->a;
    char bank[HEX_ID + 1], health[HEX_ID + 1], acme[HEX_ID + 1], target[256];
    char app[PT_CRED_TEXT_LEN + 1], sel[PT_CRED_TEXT_LEN + 1], sub[PT_CRED_TEXT_LEN + 1];
    struct resp r;
    struct jdoc j;

    put_doc(a, a->owner, "type=bank.statement&author=Other", "bank", bank);
    put_doc(a, a->owner, "type=health.record", "health", health);
    put_doc(a, a->owner, "type=bank.letter&author=ACME", "acme", acme);
    assert_int_equal(
        issue(a, a->owner,
              "{\"name\":\"budget\",\"rules\":[{\"type\":\"bank.*\",\"verbs\":[\"GET\"]}]}", app,
              NULL),
        201);

    snprintf(target, sizeof target, "/v1/docs/%s", bank);
    get(a, target, app, &r);
    expect_status(&r, 200);
    resp_free(&r);
    {
        struct bad_target refused[] = {
            {"GET", NULL, 403, "TK_ERR_DENIED"},
            {"GET", NULL, 403, "TK_ERR_DENIED"},
            {"PUT", NULL, 403, "TK_ERR_DENIED"},
            {"DELETE", NULL, 403, "TK_ERR_DENIED"},
            {"POST", "/v1/docs?type=bank.statement", 403, "TK_ERR_DENIED"},
            {"POST", "/v1/docs?type=health.record", 403, "TK_ERR_DENIED"},
            {"GET", "/v1/credentials", 403, "TK_ERR_DENIED"},
            {"GET", "/v1/audit", 403, "TK_ERR_DENIED"},
            {"GET", "/v1/shares", 403, NULL},
            {"GET", "/v1/shares/00112233445566778899aabbccddeeff/package", 403, "TK_ERR_DENIED"},
            {"DELETE", "/v1/shares/00112233445566778899aabbccddeeff", 403, NULL},
        };
        char t0[128], t1[128], t2[128], t3[128];
        snprintf(t0, sizeof t0, "/v1/docs/%s", health);
        snprintf(t1, sizeof t1, "/v1/docs/%s/meta", health);
        snprintf(t2, sizeof t2, "/v1/docs/%s?rev=1", bank);
        snprintf(t3, sizeof t3, "/v1/docs/%s?rev=1", bank);
        refused[0].target = t0;
        refused[1].target = t1;
        refused[2].target = t2;
        refused[3].target = t3;
        for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
            bool body =
                strcmp(refused[i].method, "PUT") == 0 || strcmp(refused[i].method, "POST") == 0;
            request(a, refused[i].method, refused[i].target, app, body ? "x" : NULL, body ? 1 : 0,
                    &r);
            if (r.status == 501 && refused[i].code == NULL) {
                resp_free(&r); /* the token does not share yet */
                continue;
            }
            if (r.status != refused[i].status)
                fail_msg("%s %s: %d %s", refused[i].method, refused[i].target, r.status,
                         (char *)r.body);
            if (refused[i].code != NULL)
                expect_error(&r, 403, refused[i].code);
            resp_free(&r);
        }
    }
    /* The list shows only what the app may GET. */
    get(a, "/v1/docs", app, &r);
    expect_status(&r, 200);
    json_of(&j, &r);
    assert_int_equal(jarr(j.root, "docs")->n, 2);
    pt_json_free(&j.doc);
    resp_free(&r);

    /* Delegation: within its rights only. */
    assert_int_equal(issue(a, app,
                           "{\"name\":\"sub\",\"rules\":[{\"type\":\"bank.statement\","
                           "\"verbs\":[\"GET\"]}]}",
                           sub, NULL),
                     201);
    assert_int_equal(issue(a, app,
                           "{\"name\":\"wider\",\"rules\":[{\"type\":\"*\",\"verbs\":[\"GET\"]}]}",
                           sub, NULL),
                     403);
    assert_int_equal(issue(a, app,
                           "{\"name\":\"more\",\"rules\":[{\"type\":\"bank.*\",\"verbs\":[\"GET\","
                           "\"POST\"]}]}",
                           sub, NULL),
                     403);
    assert_int_equal(issue(a, app, "{\"name\":\"boss\",\"owner\":true}", sub, NULL), 403);

    /* A selector: only ACME's documents. */
    assert_int_equal(issue(a, a->owner,
                           "{\"name\":\"acme\",\"rules\":[{\"type\":\"*\",\"verbs\":[\"GET\"],"
                           "\"field\":\"author\",\"values\":[\"ACME\"]}]}",
                           sel, NULL),
                     201);
    snprintf(target, sizeof target, "/v1/docs/%s", acme);
    get(a, target, sel, &r);
    expect_status(&r, 200);
    expect_body(&r, "acme");
    resp_free(&r);
    snprintf(target, sizeof target, "/v1/docs/%s", bank);
    get(a, target, sel, &r);
    expect_error(&r, 403, "TK_ERR_DENIED");
    resp_free(&r);
}

/* ------------------------------------------------------------ 404, 405 */

static void unknown_routes_are_404_and_wrong_methods_405(void **state)
{
    struct world *w = *state;
    struct agent *a = &w->a;
    static const char *const missing[] = {
        "/",
        "/v1",
        "/v1/",
        "/v2/docs",
        "/v1/nothing",
        "/v1/docs/",
        "/v1/docs/00112233445566778899aabbccddeeff/other",
        "/v1/docs/00112233445566778899aabbccddeeff/meta/more",
        "/v1/shares/00112233445566778899aabbccddeeff/pkg",
        "/v1/identity/more",
        "/V1/docs",
        "//v1/docs",
    };
    static const struct {
        const char *method, *target, *allow;
    } wrong[] = {
        {"DELETE", "/v1/identity", "GET"},
        {"PUT", "/v1/docs", "GET, POST"},
        {"POST", "/v1/docs/00112233445566778899aabbccddeeff", "GET, PUT, DELETE"},
        {"GET", "/v1/inbox", "POST"},
        {"PATCH", "/v1/docs", "GET, POST"},
        {"HEAD", "/v1/identity", "GET"},
        {"OPTIONS", "/v1/docs", "GET, POST"},
        {"POST", "/v1/audit", "GET"},
        {"PUT", "/v1/credentials/00112233445566778899aabbccddeeff", "DELETE"},
        {"GET", "/v1/credentials/00112233445566778899aabbccddeeff", "DELETE"},
        {"POST", "/v1/shares/00112233445566778899aabbccddeeff/package", "GET"},
    };
    char v[64];

    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        struct resp r;
        get(a, missing[i], a->owner, &r);
        if (r.status != 404)
            fail_msg("%s: %d", missing[i], r.status);
        expect_error(&r, 404, "NOT_FOUND");
        resp_free(&r);
        /* Without a credential too: a route is not secret. */
        get(a, missing[i], NULL, &r);
        assert_int_equal(r.status, 404);
        resp_free(&r);
    }
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        struct resp r;
        request(a, wrong[i].method, wrong[i].target, a->owner, NULL, 0, &r);
        if (r.status != 405)
            fail_msg("%s %s: %d", wrong[i].method, wrong[i].target, r.status);
        assert_non_null(header(&r, "Allow", v, sizeof v));
        assert_string_equal(v, wrong[i].allow);
        if (strcmp(wrong[i].method, "HEAD") != 0)
            expect_error(&r, 405, "METHOD_NOT_ALLOWED");
        resp_free(&r);
    }
}

/* ------------------------------------------------------------------ 409 */

static void a_stale_revision_is_409_and_changes_nothing(void **state)
{
    struct world *w = *state;
    struct agent *a = &w->a;
    char id[HEX_ID + 1], target[128];
    struct resp r;

    put_doc(a, a->owner, "type=note.text", "first", id);
    snprintf(target, sizeof target, "/v1/docs/%s?rev=1", id);
    request(a, "PUT", target, a->owner, "second", 6, &r);
    expect_status(&r, 200);
    resp_free(&r);
    /* Two writers from revision 1: the second is refused. */
    request(a, "PUT", target, a->owner, "lost update", 11, &r);
    expect_error(&r, 409, "TK_ERR_CONFLICT");
    resp_free(&r);
    request(a, "DELETE", target, a->owner, NULL, 0, &r);
    expect_error(&r, 409, "TK_ERR_CONFLICT");
    resp_free(&r);
    snprintf(target, sizeof target, "/v1/docs/%s?rev=7", id);
    request(a, "PUT", target, a->owner, "future", 6, &r);
    expect_error(&r, 409, "TK_ERR_CONFLICT");
    resp_free(&r);
    snprintf(target, sizeof target, "/v1/docs/%s", id);
    get(a, target, a->owner, &r);
    expect_status(&r, 200);
    expect_body(&r, "second");
    resp_free(&r);
}

/* ------------------------------------------------------------------ 413 */

/* Send only the head of a request, and read the answer (the body is never sent). */
static void head_only(const struct agent *a, const char *method, const char *target,
                      const char *extra, struct resp *r)
{
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n%s\r\n",
                     method, target, a->owner, extra);
    raw(a->port, req, (size_t)n, r);
}

static void oversized_bodies_are_413_before_they_are_read(void **state)
{
    struct world *w = *state;
    struct agent *a = &w->a;
    char extra[128], v[64];
    struct resp r;
    struct jdoc j;
    size_t docs_before;

    get(a, "/v1/docs", a->owner, &r);
    json_of(&j, &r);
    docs_before = jarr(j.root, "docs")->n;
    pt_json_free(&j.doc);
    resp_free(&r);

    snprintf(extra, sizeof extra, "Content-Length: %u\r\n", PT_HTTP_JSON_MAX + 1);
    head_only(a, "POST", "/v1/credentials", extra, &r);
    expect_error(&r, 413, "TOO_LARGE");
    assert_string_equal(header(&r, "Connection", v, sizeof v), "close");
    resp_free(&r);
    head_only(a, "POST", "/v1/shares", extra, &r);
    expect_error(&r, 413, "TOO_LARGE");
    resp_free(&r);

    snprintf(extra, sizeof extra, "Content-Length: %u\r\n", BIG_BODY);
    head_only(a, "POST", "/v1/docs?type=big.file", extra, &r);
    expect_error(&r, 413, "TOO_LARGE");
    resp_free(&r);
    head_only(a, "PUT", "/v1/docs/00112233445566778899aabbccddeeff?rev=1", extra, &r);
    expect_error(&r, 413, "TOO_LARGE");
    resp_free(&r);
    snprintf(extra, sizeof extra, "Content-Length: %u\r\n", BIG_BODY);
    {
        char req[512];
        int n = snprintf(req, sizeof req, "POST /v1/inbox HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n",
                         extra);
        raw(a->port, req, (size_t)n, &r);
        expect_error(&r, 413, "TOO_LARGE");
        resp_free(&r);
    }
    head_only(a, "POST", "/v1/docs?type=a", "Content-Length: 99999999999999999999999\r\n", &r);
    expect_error(&r, 400, "BAD_LENGTH");
    resp_free(&r);
    head_only(a, "POST", "/v1/docs?type=a", "Transfer-Encoding: chunked\r\n", &r);
    expect_error(&r, 411, "LENGTH_REQUIRED");
    resp_free(&r);
    head_only(a, "GET", "/v1/docs", "Content-Length: 10\r\n", &r);
    expect_error(&r, 400, "UNEXPECTED_BODY");
    resp_free(&r);

    /* A JSON body of exactly 64 KiB is read (and judged on its content). */
    {
        char *body = malloc(PT_HTTP_JSON_MAX);
        const char *json = "{\"name\":\"pad\",\"rules\":[{\"type\":\"*\",\"verbs\":[\"GET\"]}]}";
        memset(body, ' ', PT_HTTP_JSON_MAX);
        memcpy(body, json, strlen(json));
        request(a, "POST", "/v1/credentials", a->owner, body, PT_HTTP_JSON_MAX, &r);
        expect_status(&r, 201);
        resp_free(&r);
        free(body);
    }
    /* Nothing was stored by the refused requests. */
    get(a, "/v1/docs", a->owner, &r);
    json_of(&j, &r);
    assert_int_equal(jarr(j.root, "docs")->n, docs_before);
    pt_json_free(&j.doc);
    resp_free(&r);
}

static void a_body_sent_after_100_continue_is_read(void **state)
{
    struct world *w = *state;
    struct agent *a = &w->a;
    char req[1024];
    struct resp r;
    int fd = connect_to(a->port);
    int n = snprintf(req, sizeof req,
                     "POST /v1/docs?type=note.text HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Authorization: Bearer %s\r\nExpect: 100-continue\r\nContent-Length: 5\r\n"
                     "Connection: close\r\n\r\n",
                     a->owner);

    send_all(fd, req, (size_t)n);
    assert_int_equal(read_response(fd, &r), 0);
    assert_int_equal(r.status, 100);
    resp_free(&r);
    send_all(fd, "hello", 5);
    assert_int_equal(read_response(fd, &r), 0);
    expect_status(&r, 201);
    resp_free(&r);
    close(fd);
}

/* A body the server refuses to read is never taken for the next request. */
static void a_refused_body_is_never_read_as_a_request(void **state)
{
    struct world *w = *state;
    struct agent *a = &w->a;
    char inner[256], req[1024], v[32];
    struct resp r;
    int fd, n, m;

    m = snprintf(inner, sizeof inner,
                 "DELETE /v1/credentials/00112233445566778899aabbccddeeff HTTP/1.1\r\n"
                 "Host: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n",
                 a->owner);
    /* Refused for its credential (none), its route, its method, its size. */
    const char *heads[] = {
        "POST /v1/docs?type=a HTTP/1.1",
        "POST /v1/nothing HTTP/1.1",
        "PATCH /v1/docs HTTP/1.1",
    };
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
        fd = connect_to(a->port);
        n = snprintf(req, sizeof req, "%s\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s",
                     heads[i], m, inner);
        send_all(fd, req, (size_t)n);
        assert_int_equal(read_response(fd, &r), 0);
        assert_true(r.status >= 400);
        assert_non_null(header(&r, "Connection", v, sizeof v));
        assert_string_equal(v, "close");
        resp_free(&r);
        assert_int_equal(read_response(fd, &r), -1); /* closed: no second answer */
        close(fd);
    }
    pthread_mutex_lock(&log_mu);
    assert_null(strstr(log_buf, "DELETE"));
    pthread_mutex_unlock(&log_mu);
}

static void a_body_that_stops_coming_is_dropped_and_stores_nothing(void **state)
{
    struct world *w = *state;
    struct pt_http_config cfg;
    struct pt_http *h = NULL;
    struct agent slow = w->a;
    char err[256], req[512];
    uint8_t buf[256];
    struct resp r;
    struct jdoc j;
    int fd, n;
    ssize_t k;

    /* A second server on the same token (idle otherwise), with a short body time. */
    memset(&cfg, 0, sizeof cfg);
    cfg.listen = "127.0.0.1:0";
    cfg.link = w->a.link;
    cfg.ds = w->a.ds;
    cfg.outbox = w->a.outbox;
    cfg.log = capture;
    cfg.clock = test_clock;
    cfg.body_ms = 300;
    assert_int_equal(pt_http_start(&h, &cfg, err, sizeof err), 0);
    slow.port = pt_http_port(h);

    fd = connect_to(slow.port);
    n = snprintf(req, sizeof req,
                 "POST /v1/docs?type=note.text HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Authorization: Bearer %s\r\nContent-Length: 100\r\n\r\nonly ten..",
                 slow.owner);
    send_all(fd, req, (size_t)n);
    k = recv(fd, buf, sizeof buf, 0); /* the server closes without an answer */
    assert_true(k <= 0);
    close(fd);
    pt_http_stop(h);

    pthread_mutex_lock(&log_mu);
    assert_non_null(strstr(log_buf, "POST /v1/docs aborted while reading the body"));
    pthread_mutex_unlock(&log_mu);
    get(&w->a, "/v1/docs", w->a.owner, &r);
    expect_status(&r, 200);
    json_of(&j, &r);
    assert_int_equal(jarr(j.root, "docs")->n, 0);
    pt_json_free(&j.doc);
    resp_free(&r);
}

/* ------------------------------------------------------------- the Host */

static void only_a_loopback_host_is_served(void **state)
{
    struct world *w = *state;
    struct agent *a = &w->a;
    static const struct {
        const char *host;
        int status;
    } hosts[] = {
        {"127.0.0.1", 200}, {"127.0.0.1:8088", 200}, {"127.1.2.3", 200},
        {"localhost", 200}, {"LOCALHOST:1", 200},    {"[::1]:8088", 200},
        {"[::1]", 200},     {"evil.example", 400},   {"evil.example:8088", 400},
        {"10.0.0.1", 400},  {"localhost.evil", 400}, {"127.0.0.1.evil", 400},
        {"[::2]:80", 400},  {"127.0.0.1:", 400},     {"127.0.0.1:80x", 400},
        {"0.0.0.0", 400},
    };
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
        char req[512];
        struct resp r;
        int n = snprintf(req, sizeof req,
                         "GET /v1/identity HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                         hosts[i].host);
        raw(a->port, req, (size_t)n, &r);
        if (r.status != hosts[i].status)
            fail_msg("Host %s: %d", hosts[i].host, r.status);
        if (r.status == 400)
            expect_error(&r, 400, "BAD_HOST");
        resp_free(&r);
    }
}

static int no_open(void *ctx, const char *token, const char *dir, bool create, struct pt_link *link,
                   void **handle, char *msg, size_t msg_len)
{
    (void)token;
    (void)ctx;
    (void)dir;
    (void)create;
    (void)link;
    (void)handle;
    (void)msg;
    (void)msg_len;
    fail_msg("the token was opened");
    return -1;
}

static void no_close(void *ctx, void *handle)
{
    (void)ctx;
    (void)handle;
}

static void only_loopback_addresses_are_listened_on(void **state)
{
    static const struct {
        const char *listen, *url;
    } cases[] = {
        {"127.0.0.1:8088", "http://127.0.0.1:8088"},
        {"127.0.0.1:0", "http://127.0.0.1:0"},
        {"127.9.9.9:80", "http://127.9.9.9:80"},
        {"localhost:65535", "http://127.0.0.1:65535"},
        {"[::1]:8088", "http://[::1]:8088"},
        {"0.0.0.0:8088", NULL},
        {"192.168.1.10:8088", NULL},
        {"[::]:8088", NULL},
        {"[::ffff:127.0.0.1]:80", NULL},
        {"example.com:80", NULL},
        {"127.0.0.1", NULL},
        {"127.0.0.1:65536", NULL},
        {"127.0.0.1:-1", NULL},
        {"127.0.0.1:80:80", NULL},
        {":8088", NULL},
        {"", NULL},
    };
    struct world *w = *state;
    char url[128], err[256], *argv[] = {"cohort-participant", "http",         "--dir", w->root,
                                        "--listen",           "0.0.0.0:8088", NULL};
    struct pt_http_config cfg;
    struct pt_http *h = NULL;
    FILE *out = tmpfile(), *errf = tmpfile();
    struct cli_env env = {out, errf, FX_NOW, no_open, no_close, NULL, NULL, NULL};

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = pt_http_listen_url(cases[i].listen, url, sizeof url);
        if (cases[i].url == NULL) {
            if (rc != PT_ERR_INPUT)
                fail_msg("%s was accepted", cases[i].listen);
        } else {
            assert_int_equal(rc, 0);
            assert_string_equal(url, cases[i].url);
        }
    }
    memset(&cfg, 0, sizeof cfg);
    cfg.listen = "0.0.0.0:0";
    cfg.link = w->a.link;
    cfg.ds = w->a.ds;
    cfg.outbox = w->a.outbox;
    assert_int_equal(pt_http_start(&h, &cfg, err, sizeof err), PT_ERR_INPUT);
    assert_null(h);
    assert_non_null(strstr(err, "loopback"));
    /* The command refuses it before it opens the token. */
    assert_int_equal(cli_main(6, argv, &env), CLI_USAGE);
    fclose(out);
    fclose(errf);
}

/* -------------------------------------------- nothing secret gets out */

#define MARK_TYPE "secretmark.kind"
#define MARK_AUTHOR "AUTHORMARK"
#define MARK_SUBJECT "SUBJECTMARK"
#define MARK_TAG "TAGMARK"
#define MARK_CONTENT "PLAINTEXTMARK-the-owner's-diary"

struct errors {
    char *all;
    size_t len;
};

static void keep_error(struct errors *e, const struct resp *r)
{
    if (r->status < 400)
        return;
    e->all = realloc(e->all, e->len + r->len + strlen(r->head) + 1);
    memcpy(e->all + e->len, r->head, strlen(r->head));
    e->len += strlen(r->head);
    memcpy(e->all + e->len, r->body, r->len);
    e->len += r->len;
    e->all[e->len] = '\0';
}

static void expect_absent(const char *where, const char *hay, size_t len, const char *needle)
{
    if (hay != NULL && memmem(hay, len, needle, strlen(needle)) != NULL)
        fail_msg("%s holds '%s'", where, needle);
}

static void the_log_and_errors_never_hold_a_secret_content_or_metadata(void **state)
{
    struct world *w = *state;
    struct agent *a = &w->a;
    char id[HEX_ID + 1], target[512], app[PT_CRED_TEXT_LEN + 1], weak[PT_CRED_TEXT_LEN + 1];
    struct errors e = {NULL, 0};
    struct resp r;
    const char *marks[] = {MARK_TYPE, MARK_AUTHOR, MARK_SUBJECT, MARK_TAG, "PLAINTEXTMARK"};

    put_doc(a, a->owner,
            "type=" MARK_TYPE "&author=" MARK_AUTHOR "&subject=" MARK_SUBJECT "&tag=" MARK_TAG,
            MARK_CONTENT, id);
    assert_int_equal(issue(a, a->owner,
                           "{\"name\":\"diary\",\"rules\":[{\"type\":\"secretmark.*\","
                           "\"verbs\":[\"GET\",\"PUT\"]}]}",
                           app, NULL),
                     201);
    assert_int_equal(issue(a, a->owner,
                           "{\"name\":\"weak\",\"rules\":[{\"type\":\"other.*\","
                           "\"verbs\":[\"GET\"]}]}",
                           weak, NULL),
                     201);

    /* Successes and every kind of refusal around the marked document. */
    snprintf(target, sizeof target, "/v1/docs/%s", id);
    get(a, target, app, &r);
    expect_status(&r, 200);
    resp_free(&r);
    get(a, target, weak, &r); /* 403 */
    keep_error(&e, &r);
    resp_free(&r);
    snprintf(target, sizeof target, "/v1/docs/%s/meta", id);
    get(a, target, weak, &r); /* 403 */
    keep_error(&e, &r);
    resp_free(&r);
    snprintf(target, sizeof target, "/v1/docs/%s?rev=9&type=" MARK_TYPE "&author=" MARK_AUTHOR, id);
    request(a, "PUT", target, app, MARK_CONTENT, strlen(MARK_CONTENT), &r); /* 409 */
    assert_int_equal(r.status, 409);
    keep_error(&e, &r);
    resp_free(&r);
    snprintf(target, sizeof target, "/v1/docs?type=" MARK_TYPE "&author=" MARK_AUTHOR);
    request(a, "POST", target, weak, MARK_CONTENT, strlen(MARK_CONTENT), &r); /* 403 */
    assert_int_equal(r.status, 403);
    keep_error(&e, &r);
    resp_free(&r);
    request(a, "POST", "/v1/docs?type=BAD" MARK_TYPE "&tag=" MARK_TAG, app, MARK_CONTENT,
            strlen(MARK_CONTENT), &r); /* 400 */
    assert_int_equal(r.status, 400);
    keep_error(&e, &r);
    resp_free(&r);
    get(a, "/v1/docs?field=author&value=" MARK_AUTHOR "&" MARK_TAG "=1", app, &r); /* 400 */
    keep_error(&e, &r);
    resp_free(&r);
    post_json(a, "/v1/credentials", app,
              "{\"name\":\"" MARK_AUTHOR "\",\"rules\":[{\"type\":\"" MARK_TYPE "\","
              "\"verbs\":[\"GET\"],\"field\":\"subject\",\"values\":[\"" MARK_SUBJECT "\"]}],}",
              &r); /* bad JSON */
    keep_error(&e, &r);
    resp_free(&r);
    post_json(a, "/v1/credentials", app,
              "{\"name\":\"" MARK_AUTHOR "\",\"rules\":[{\"type\":\"" MARK_TYPE "\","
              "\"verbs\":[\"GET\",\"DELETE\"],\"field\":\"subject\",\"values\":[\"" MARK_SUBJECT
              "\"]}]}",
              &r); /* 403: beyond its rights */
    keep_error(&e, &r);
    resp_free(&r);
    snprintf(target, sizeof target, "/v1/docs/%s", id);
    get(a, target,
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
        "abcdef",
        &r); /* 401 */
    keep_error(&e, &r);
    resp_free(&r);
    snprintf(target, sizeof target, "/v1/docs/%s/" MARK_AUTHOR, id); /* 404 */
    get(a, target, app, &r);
    keep_error(&e, &r);
    resp_free(&r);
    assert_true(e.len > 0);

    pthread_mutex_lock(&log_mu);
    assert_true(log_lines >= 12);
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
        expect_absent("the log", log_buf, log_len, marks[i]);
        expect_absent("an error", e.all, e.len, marks[i]);
    }
    /* No credential, in whole or its secret half. */
    expect_absent("the log", log_buf, log_len, app + HEX_ID);
    expect_absent("the log", log_buf, log_len, weak + HEX_ID);
    expect_absent("the log", log_buf, log_len, a->owner + HEX_ID);
    expect_absent("the log", log_buf, log_len, "0123456789abcdef0123456789abcdef0123456789abcdef");
    expect_absent("an error", e.all, e.len, app + HEX_ID);
    expect_absent("an error", e.all, e.len, weak + HEX_ID);
    expect_absent("an error", e.all, e.len, "Bearer");
    /* The log holds no query string and no id. */
    assert_null(strchr(log_buf, '?'));
    expect_absent("the log", log_buf, log_len, id);
    pthread_mutex_unlock(&log_mu);
    free(e.all);
}

/* ------------------------------------------------ concurrency, throughput */

struct hammer {
    const struct agent *a;
    int n, ok;
    unsigned seed;
};

static void *hammer_run(void *arg)
{
    struct hammer *hm = arg;
    for (int i = 0; i < hm->n; i++) {
        char content[64], target[128];
        struct resp r;
        struct pt_json doc;
        int len = snprintf(content, sizeof content, "doc %u/%d", hm->seed, i);

        request(hm->a, "POST", "/v1/docs?type=load.test", hm->a->owner, content, (size_t)len, &r);
        if (r.status != 201 ||
            pt_json_parse(&doc, (char *)r.body, r.len, &pt_json_limits_api, NULL) != 0) {
            resp_free(&r);
            continue;
        }
        snprintf(target, sizeof target, "/v1/docs/%s", pt_json_member(doc.root, "id")->s);
        pt_json_free(&doc);
        resp_free(&r);
        get(hm->a, target, hm->a->owner, &r);
        if (r.status == 200 && r.len == (size_t)len && memcmp(r.body, content, r.len) == 0)
            hm->ok++;
        resp_free(&r);
    }
    return NULL;
}

static void requests_from_many_threads_are_all_served(void **state)
{
    struct world *w = *state;
    struct hammer hm[8];
    pthread_t t[8];

    for (unsigned i = 0; i < 8; i++) {
        hm[i] = (struct hammer){&w->a, 20, 0, i};
        assert_int_equal(pthread_create(&t[i], NULL, hammer_run, &hm[i]), 0);
    }
    for (unsigned i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(hm[i].ok, 20);
    }
}

/* Requests per second for a small document over one keep-alive connection. */
static double rate(const struct agent *a, const char *method, const char *target, const char *body,
                   int n)
{
    char req[4096];
    int fd = connect_to(a->port);
    int len = snprintf(req, sizeof req,
                       "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                       "Content-Length: %zu\r\n\r\n%s",
                       method, target, a->owner, strlen(body), body);
    int64_t t0 = sh_mono_ms();

    assert_true(len > 0 && (size_t)len < sizeof req);
    for (int i = 0; i < n; i++) {
        struct resp r;
        send_all(fd, req, (size_t)len);
        assert_int_equal(read_response(fd, &r), 0);
        assert_true(r.status == 200 || r.status == 201);
        resp_free(&r);
    }
    close(fd);
    return n * 1000.0 / (double)(sh_mono_ms() - t0 + 1);
}

/* An agent whose token keeps its log in memory (no fsync): what the API and
 * the token cost without the disk. */
struct mem_agent {
    struct fx_token t;
    struct pt_inproc link;
    struct agent ag;
};

static void mem_agent_start(struct mem_agent *m, const char *root)
{
    char err[256];
    struct pt_cred secret;
    struct pt_cred_info *info = calloc(1, sizeof *info);
    struct pt_status st;
    struct pt_http_config cfg;

    fx_token_init(&m->t, TK_ARENA_DEFAULT);
    pt_inproc_init(&m->link, &m->t.tk, m->t.arena, m->t.arena_len);
    m->ag.link = pt_inproc_link(&m->link);
    {
        struct pt_owner o;
        uint8_t *csr = NULL;
        size_t csr_len = 0;
        pt_owner_init(&o, &m->ag.link, FX_NOW);
        assert_int_equal(pt_owner_provision_begin(&o, "memory", &csr, &csr_len, m->ag.pk), 0);
        free(csr);
    }
    snprintf(m->ag.docs, sizeof m->ag.docs, "%s/m-docs", root);
    snprintf(m->ag.outbox, sizeof m->ag.outbox, "%s/m-outbox", root);
    assert_int_equal(pt_docstore_open(&m->ag.ds, m->ag.docs), 0);
    assert_int_equal(
        pt_cred_issue(&m->ag.link, FX_NOW, NULL, "owner", NULL, 0, 0, true, &secret, info, &st), 0);
    pt_cred_format(&secret, m->ag.owner);
    free(info);
    memset(&cfg, 0, sizeof cfg);
    cfg.listen = "127.0.0.1:0";
    cfg.link = m->ag.link;
    cfg.ds = m->ag.ds;
    cfg.outbox = m->ag.outbox;
    cfg.log = capture;
    cfg.clock = test_clock;
    assert_int_equal(pt_http_start(&m->ag.h, &cfg, err, sizeof err), 0);
    m->ag.port = pt_http_port(m->ag.h);
}

static void mem_agent_stop(struct mem_agent *m)
{
    pt_http_stop(m->ag.h);
    pt_docstore_close(m->ag.ds);
    pt_inproc_free(&m->link);
    fx_token_free(&m->t);
}

static void measure(const struct agent *a, const char *what)
{
    char id[HEX_ID + 1], target[128], small[1025];
    double get_rate, post_rate, meta_rate, identity_rate;

    memset(small, 'x', 1024);
    small[1024] = '\0';
    put_doc(a, a->owner, "type=bench.small", small, id);
    snprintf(target, sizeof target, "/v1/docs/%s", id);
    identity_rate = rate(a, "GET", "/v1/identity", "", 2000);
    get_rate = rate(a, "GET", target, "", 500);
    snprintf(target, sizeof target, "/v1/docs/%s/meta", id);
    meta_rate = rate(a, "GET", target, "", 500);
    post_rate = rate(a, "POST", "/v1/docs?type=bench.small", small, 200);
    print_message("[   RATE   ] %s, 1 KiB documents, one keep-alive connection: GET %.0f/s, "
                  "GET meta %.0f/s, POST %.0f/s; GET /v1/identity %.0f/s\n",
                  what, get_rate, meta_rate, post_rate, identity_rate);
    /* No bound on the rates: every request above was answered 200 or 201
     * (rate() checks each); what they cost is for the README, measured
     * here because this is where a real server runs. */
}

static void hundreds_of_small_requests_on_one_connection_all_succeed(void **state)
{
    struct world *w = *state;
    struct mem_agent *m = calloc(1, sizeof *m);

    measure(&w->a, "software token (files, fsync)");
    mem_agent_start(m, w->root);
    measure(&m->ag, "token log in memory");
    mem_agent_stop(m);
    free(m);
}

static void a_token_without_keys_has_no_identity(void **state)
{
    struct world *w = *state;
    struct fx_token t;
    struct pt_inproc link;
    struct pt_http_config cfg;
    struct agent bare;
    char err[256];
    struct resp r;

    fx_token_init(&t, TK_ARENA_DEFAULT);
    pt_inproc_init(&link, &t.tk, t.arena, t.arena_len);
    memset(&bare, 0, sizeof bare);
    memset(&cfg, 0, sizeof cfg);
    cfg.listen = "localhost:0";
    cfg.link = pt_inproc_link(&link);
    cfg.ds = w->a.ds;
    cfg.outbox = w->a.outbox;
    cfg.log = capture;
    assert_int_equal(pt_http_start(&bare.h, &cfg, err, sizeof err), 0);
    bare.port = pt_http_port(bare.h);
    get(&bare, "/v1/identity", NULL, &r);
    expect_error(&r, 404, "NO_IDENTITY");
    resp_free(&r);
    pt_http_stop(bare.h);
    pt_inproc_free(&link);
    fx_token_free(&t);
}

/* ------------------------------------------------------ the command */

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

/* Wait up to ms for pid to exit: its exit code, or -1. */
static int wait_exit(pid_t pid, int ms)
{
    for (int waited = 0; waited <= ms; waited += 20) {
        int status = 0;
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    char *buf = calloc(1, 1 << 20);
    *len = 0;
    if (f != NULL) {
        *len = fread(buf, 1, (1 << 20) - 1, f);
        fclose(f);
    }
    return buf;
}

static void the_http_command_serves_as_a_process_and_stops_on_sigterm(void **state)
{
    struct world *w = *state;
    char dir[200], out[200], err[200], out2[200], err2[200], id[HEX_ID + 1], target[128];
    char *init[] = {AGENT_BIN, "init", "--dir", dir, NULL};
    char *add[] = {AGENT_BIN, "app",   "add",     "--dir",   dir,
                   "--name",  "owner", "--owner", "--quiet", NULL};
    char *http[] = {AGENT_BIN, "http", "--dir", dir, "--listen", "127.0.0.1:0", NULL};
    struct agent ag;
    struct resp r;
    char *text;
    size_t len;
    pid_t pid;

    snprintf(dir, sizeof dir, "%s/c", w->root);
    snprintf(out, sizeof out, "%s/c.out", w->root);
    snprintf(err, sizeof err, "%s/c.err", w->root);
    snprintf(out2, sizeof out2, "%s/c2.out", w->root);
    snprintf(err2, sizeof err2, "%s/c2.err", w->root);
    assert_int_equal(wait_exit(spawn(init, out, err), 30000), 0);
    assert_int_equal(wait_exit(spawn(add, out, err), 30000), 0);
    memset(&ag, 0, sizeof ag);
    text = slurp(out, &len);
    assert_true(len >= PT_CRED_TEXT_LEN);
    memcpy(ag.owner, text, PT_CRED_TEXT_LEN);
    free(text);

    pid = spawn(http, out, err);
    for (int i = 0; i < 500 && ag.port == 0; i++) {
        const char *p;
        text = slurp(out, &len);
        if ((p = strstr(text, "listening on http://127.0.0.1:")) != NULL)
            ag.port = atoi(p + strlen("listening on http://127.0.0.1:"));
        free(text);
        if (ag.port == 0)
            usleep(20000);
    }
    assert_true(ag.port > 0);

    /* A second server on the same token: busy. */
    assert_int_equal(wait_exit(spawn(http, out2, err2), 30000), CLI_TOKEN);

    put_doc(&ag, ag.owner, "type=note.text&author=" MARK_AUTHOR, MARK_CONTENT, id);
    snprintf(target, sizeof target, "/v1/docs/%s", id);
    get(&ag, target, ag.owner, &r);
    expect_status(&r, 200);
    expect_body(&r, MARK_CONTENT);
    resp_free(&r);

    assert_int_equal(kill(pid, SIGTERM), 0);
    assert_int_equal(wait_exit(pid, 30000), CLI_OK);
    text = slurp(err, &len);
    assert_non_null(strstr(text, "http: POST /v1/docs 201"));
    assert_non_null(strstr(text, "http: GET /v1/docs/{id} 200"));
    assert_non_null(strstr(text, "SIGTERM"));
    assert_null(strstr(text, ag.owner + HEX_ID));
    assert_null(strstr(text, MARK_AUTHOR));
    assert_null(strstr(text, "PLAINTEXTMARK"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(every_route_answers_its_success, setup, teardown),
        cmocka_unit_test_setup_teardown(two_agents_share_over_http, setup, teardown),
        cmocka_unit_test_setup_teardown(
            a_write_back_reaches_the_owner_and_then_the_other_recipients, setup, teardown),
        cmocka_unit_test_setup_teardown(lists_and_the_audit_page_with_their_cursors, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_failed_delivery_is_retried_after_the_next_write, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(malformed_json_is_400_and_names_where, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_ids_and_parameters_are_400, setup, teardown),
        cmocka_unit_test_setup_teardown(paths_that_try_to_leave_the_store_are_400_and_touch_nothing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(credentials_missing_malformed_wrong_or_revoked_are_401,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(the_tokens_rules_are_403, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_routes_are_404_and_wrong_methods_405, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_stale_revision_is_409_and_changes_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(oversized_bodies_are_413_before_they_are_read, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_body_sent_after_100_continue_is_read, setup, teardown),
        cmocka_unit_test_setup_teardown(a_body_that_stops_coming_is_dropped_and_stores_nothing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(a_refused_body_is_never_read_as_a_request, setup, teardown),
        cmocka_unit_test_setup_teardown(only_a_loopback_host_is_served, setup, teardown),
        cmocka_unit_test_setup_teardown(only_loopback_addresses_are_listened_on, setup, teardown),
        cmocka_unit_test_setup_teardown(the_log_and_errors_never_hold_a_secret_content_or_metadata,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(requests_from_many_threads_are_all_served, setup, teardown),
        cmocka_unit_test_setup_teardown(hundreds_of_small_requests_on_one_connection_all_succeed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(a_token_without_keys_has_no_identity, setup, teardown),
        cmocka_unit_test_setup_teardown(the_http_command_serves_as_a_process_and_stops_on_sigterm,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
