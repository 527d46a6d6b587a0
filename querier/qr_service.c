/*
 * qr_service.c: the querier service's core, without I/O (querier.h says
 * what it promises). It holds every query (one coordinator each, in
 * submission order), the admission state of each connection, and answers
 * the researcher's requests.
 *
 * Routing reads only what it needs of a request, straight from the wire
 * (the body's field number, a token id, a query id), so an upload or a task
 * result is decoded once, by the coordinator that takes it. The small
 * messages (Hello, Admit, Submit, StatusRequest, FetchResult) are decoded
 * with protobuf-c under the codec's heap budget.
 *
 * Admission. Hello carries the token's device certificate; it must verify
 * under one of the trusted token authorities, with role TOKEN, at the
 * current time. The reply is a fresh 32-byte challenge for this connection
 * alone. Admit must name that challenge within challenge_ms, carry a
 * device certificate that verifies the same way, and a signature by that
 * certificate's key over TK_SIG_ADMIT || challenge (what the token's Attest
 * makes). A challenge is good for one attempt: replaying an Admit, or
 * answering after a failed one, gets QR_ERR_CHALLENGE; a connection whose
 * attempt failed holds nothing and no longer counts against
 * max_connections. From then on the connection speaks for that token only:
 * Work, Upload and TaskResult must carry its id.
 *
 * Durability. What the journal needs to rebuild a query is what changed
 * it: the plan (with the coordinator settings its partitions were cut by)
 * and every upload or task result the coordinator took. Replaying those
 * requests through the same coordinator at the times they arrived gives
 * back the same collection, the same partitions and the same task ids
 * (the coordinator is deterministic in its inputs and clock). What is not
 * journaled is soft: task assignments and failure reports. After a
 * restart every unfinished task is free again, and a result for a task
 * handed out before the restart is still taken (the first valid result for
 * a task wins, whoever sends it).
 *
 * Not thread safe: the shell calls it under one lock.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "proto/cohort.pb-c.h"
#include "querier/qr_coord_int.h"
#include "token/token.h"

#define SVC_DEFAULT_MAX_QUERIES 64u
#define SVC_DEFAULT_MAX_CONNECTIONS 65536u
#define SVC_DEFAULT_CHALLENGE_MS 60000
#define SVC_CHALLENGE_LEN 32u
#define SVC_DECLINED_MAX 64u      /* query ids in one WorkRequest's `declined` */
#define SVC_SMALL_MAX (64u << 10) /* Hello, Admit, StatusRequest, FetchResult */
#define SVC_SCRATCH (256u << 10)  /* working memory of certificate and plan checks */
#define SVC_AUTHORITIES_MAX 16u

/* ---------------------------------------------------------------- wire */

/* One field of a protobuf message, as it is on the wire. */
struct wfield {
    uint32_t num;
    uint32_t type;
    uint64_t varint;
    const uint8_t *data;
    size_t len;
};

static int read_varint(const uint8_t *p, size_t len, size_t *at, uint64_t *v)
{
    uint64_t x = 0;

    for (unsigned shift = 0; shift < 64; shift += 7) {
        uint8_t b;

        if (*at >= len)
            return -1;
        b = p[(*at)++];
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* The next field at *at: 1, 0 at the end, -1 for bytes that are not protobuf. */
static int next_field(const uint8_t *p, size_t len, size_t *at, struct wfield *f)
{
    uint64_t key, n;

    if (*at >= len)
        return 0;
    if (read_varint(p, len, at, &key) != 0 || key >> 3 == 0 || key >> 3 > UINT32_MAX)
        return -1;
    memset(f, 0, sizeof *f);
    f->num = (uint32_t)(key >> 3);
    f->type = (uint32_t)(key & 7);
    switch (f->type) {
    case 0:
        return read_varint(p, len, at, &f->varint) == 0 ? 1 : -1;
    case 1:
        if (len - *at < 8)
            return -1;
        *at += 8;
        return 1;
    case 2:
        if (read_varint(p, len, at, &n) != 0 || n > len - *at)
            return -1;
        f->data = p + *at;
        f->len = (size_t)n;
        *at += (size_t)n;
        return 1;
    case 5:
        if (len - *at < 4)
            return -1;
        *at += 4;
        return 1;
    default:
        return -1;
    }
}

/* The last length-delimited field `num` of a message (as protobuf reads it). */
static int find_bytes(const uint8_t *p, size_t len, uint32_t num, const uint8_t **data, size_t *n)
{
    struct wfield f;
    size_t at = 0;
    int rc;

    *data = NULL;
    *n = 0;
    while ((rc = next_field(p, len, &at, &f)) == 1)
        if (f.num == num && f.type == 2) {
            *data = f.data;
            *n = f.len;
        }
    return rc;
}

/* ---------------------------------------------------------- connections */

enum { SLOT_EMPTY = 0, SLOT_USED = 1, SLOT_GONE = 2 };

struct conn {
    uint64_t id;
    int slot;
    int has_challenge;
    int admitted;
    int64_t challenge_ms;
    uint8_t challenge[SVC_CHALLENGE_LEN];
    uint8_t token[QR_TOKEN_ID_LEN];
};

struct query {
    qr_coord *c;
    uint8_t id[QR_QUERY_ID_LEN];
    struct qr_plan_info info; /* what the plan says of its size and times, read once */
    char study[QR_NAME_MAX + 1];
    char researcher[64];
    int64_t submitted_ms;
    struct qr_coord_config cfg;
};

struct qr_service {
    struct qr_service_config cfg;
    uint8_t token_auth[SVC_AUTHORITIES_MAX][32];
    uint8_t plan_auth[SVC_AUTHORITIES_MAX][32];
    struct query *q;
    size_t n_q, cap_q;
    struct conn *conns; /* open addressing, linear probing */
    size_t cap_conns, n_conns, n_gone;
    uint8_t *scratch;
};

static uint64_t conn_hash(uint64_t id)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    return id;
}

static struct conn *conn_find(qr_service *s, uint64_t id)
{
    if (s->cap_conns == 0)
        return NULL;
    for (size_t i = conn_hash(id) & (s->cap_conns - 1), k = 0; k < s->cap_conns;
         k++, i = (i + 1) & (s->cap_conns - 1)) {
        struct conn *c = &s->conns[i];

        if (c->slot == SLOT_EMPTY)
            return NULL;
        if (c->slot == SLOT_USED && c->id == id)
            return c;
    }
    return NULL;
}

static int conn_rehash(qr_service *s, size_t cap)
{
    struct conn *old = s->conns, *nc = calloc(cap, sizeof *nc);
    size_t old_cap = s->cap_conns;

    if (nc == NULL)
        return QR_ERR_NOMEM;
    s->conns = nc;
    s->cap_conns = cap;
    s->n_gone = 0;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].slot != SLOT_USED)
            continue;
        size_t j = conn_hash(old[i].id) & (cap - 1);

        while (nc[j].slot != SLOT_EMPTY)
            j = (j + 1) & (cap - 1);
        nc[j] = old[i];
    }
    sodium_memzero(old, old_cap * sizeof *old);
    free(old);
    return 0;
}

/* The entry of connection id, made if needed (NULL: full or out of memory). */
static struct conn *conn_get(qr_service *s, uint64_t id, int *rc)
{
    struct conn *c = conn_find(s, id);
    size_t i;

    *rc = 0;
    if (c != NULL)
        return c;
    if (s->n_conns >= s->cfg.max_connections) {
        *rc = QR_ERR_FULL;
        return NULL;
    }
    if ((s->n_conns + s->n_gone + 1) * 10 > s->cap_conns * 7) {
        size_t cap = s->cap_conns ? s->cap_conns : 64;

        while ((s->n_conns + 1) * 10 > cap * 5)
            cap *= 2;
        if ((*rc = conn_rehash(s, cap)) != 0)
            return NULL;
    }
    for (i = conn_hash(id) & (s->cap_conns - 1); s->conns[i].slot == SLOT_USED;
         i = (i + 1) & (s->cap_conns - 1))
        ;
    if (s->conns[i].slot == SLOT_GONE)
        s->n_gone--;
    c = &s->conns[i];
    memset(c, 0, sizeof *c);
    c->slot = SLOT_USED;
    c->id = id;
    s->n_conns++;
    return c;
}

/* Forget a connection's entry: its challenge, its admission, its place. */
static void conn_drop(qr_service *s, struct conn *c)
{
    sodium_memzero(c, sizeof *c);
    c->slot = SLOT_GONE;
    s->n_conns--;
    s->n_gone++;
}

void qr_service_disconnect(qr_service *s, uint64_t conn)
{
    struct conn *c = s ? conn_find(s, conn) : NULL;

    if (c == NULL)
        return;
    conn_drop(s, c);
}

size_t qr_service_connections(const qr_service *s)
{
    return s ? s->n_conns : 0;
}

/* -------------------------------------------------------------- replies */

static int pack_reply(const Cohort__ServiceReply *r, const uint8_t *result, size_t result_len,
                      uint8_t **out, size_t *out_len)
{
    size_t n = cohort__service_reply__get_packed_size(r), extra = 0;
    uint8_t *p;

    if (result != NULL) {
        /* SealedResult as field 6: its stored encoding is spliced in. */
        extra = 1 + 10 + result_len;
    }
    p = malloc(n + extra + 1);
    if (p == NULL)
        return QR_ERR_NOMEM;
    cohort__service_reply__pack(r, p);
    if (result != NULL) {
        size_t at = n;
        uint64_t v = result_len;

        p[at++] = (6u << 3) | 2u;
        while (v >= 0x80) {
            p[at++] = (uint8_t)(v | 0x80);
            v >>= 7;
        }
        p[at++] = (uint8_t)v;
        memcpy(p + at, result, result_len);
        n = at + result_len;
    }
    *out = p;
    *out_len = n;
    return 0;
}

/* A reply with a status and a message (the code's own text when msg is NULL). */
static int error_reply(int status, const char *msg, uint8_t **out, size_t *out_len)
{
    Cohort__ServiceReply r;

    cohort__service_reply__init(&r);
    r.status = status;
    r.error = (char *)(msg ? msg : qr_strerror(status));
    if (pack_reply(&r, NULL, 0, out, out_len) != 0)
        return QR_ERR_NOMEM;
    return status;
}

static Cohort__QueryState state_of(enum qr_state st)
{
    switch (st) {
    case QR_COLLECTING:
        return COHORT__QUERY_STATE__QS_COLLECTING;
    case QR_AGGREGATING:
        return COHORT__QUERY_STATE__QS_AGGREGATING;
    case QR_DONE:
        return COHORT__QUERY_STATE__QS_DONE;
    default:
        return COHORT__QUERY_STATE__QS_FAILED;
    }
}

/* Fill a QueryStatus from a query (pointers into q and st, which must outlive it). */
static void fill_status(Cohort__QueryStatus *m, const struct query *q, struct qr_coord_stats *st)
{
    cohort__query_status__init(m);
    qr_coord_stats(q->c, st);
    m->query_id.data = (uint8_t *)q->id;
    m->query_id.len = sizeof q->id;
    m->study = (char *)q->study;
    m->researcher = (char *)q->researcher;
    m->state = state_of(st->state);
    m->contributions = st->contributions;
    m->target = q->info.size;
    m->deadline = q->info.deadline;
    m->level = st->level;
    m->levels_done = st->levels;
    m->partitions = st->partitions;
    m->tasks_done = st->tasks_done;
    m->tasks_reassigned = st->tasks_reassigned;
    m->failure = st->failure_msg;
    m->submitted_at = q->submitted_ms / 1000;
    m->bytes_in = st->bytes_in;
    m->bytes_out = st->bytes_out;
    m->ciphertexts = st->ciphertexts_collected;
    m->bytes_held = st->bytes_held;
}

/* -------------------------------------------------------------- queries */

static struct query *query_find(qr_service *s, const uint8_t *id, size_t len)
{
    if (len != QR_QUERY_ID_LEN)
        return NULL;
    for (size_t i = 0; i < s->n_q; i++)
        if (memcmp(s->q[i].id, id, QR_QUERY_ID_LEN) == 0)
            return &s->q[i];
    return NULL;
}

/* Study and researcher names, read without judging the plan (it was judged). */
static void plan_names(struct query *q, const uint8_t *signed_plan, size_t len)
{
    Cohort__SignedPlan *sp = NULL;
    Cohort__Plan *plan = NULL;
    Cohort__CertBody *body = NULL;

    q->study[0] = q->researcher[0] = '\0';
    if (qr_codec_unpack(&cohort__signed_plan__descriptor, signed_plan, len, QR_SIGNED_PLAN_MAX,
                        (void **)&sp) != 0)
        return;
    if (qr_codec_unpack(&cohort__plan__descriptor, sp->plan.data, sp->plan.len, QR_SIGNED_PLAN_MAX,
                        (void **)&plan) == 0 &&
        plan->study != NULL && strlen(plan->study) <= QR_NAME_MAX)
        strcpy(q->study, plan->study);
    if (sp->n_chain > 0 && sp->chain[0] != NULL &&
        qr_codec_unpack(&cohort__cert_body__descriptor, sp->chain[0]->body.data,
                        sp->chain[0]->body.len, QR_CERT_MAX, (void **)&body) == 0 &&
        body->subject != NULL && strlen(body->subject) < sizeof q->researcher)
        strcpy(q->researcher, body->subject);
    if (body)
        protobuf_c_message_free_unpacked(&body->base, NULL);
    if (plan)
        protobuf_c_message_free_unpacked(&plan->base, NULL);
    protobuf_c_message_free_unpacked(&sp->base, NULL);
}

/* Hold a new query; the plan was judged (or is being replayed). */
static int query_add(qr_service *s, const uint8_t *signed_plan, size_t len,
                     const struct qr_plan_info *info, const struct qr_coord_config *cfg,
                     int64_t now_ms, struct query **out)
{
    struct query q, *nq;
    int rc;

    if (s->n_q >= s->cfg.max_queries)
        return QR_ERR_FULL;
    if (s->n_q == s->cap_q) {
        size_t cap = s->cap_q ? s->cap_q * 2 : 8;

        nq = realloc(s->q, cap * sizeof *nq);
        if (nq == NULL)
            return QR_ERR_NOMEM;
        s->q = nq;
        s->cap_q = cap;
    }
    memset(&q, 0, sizeof q);
    if ((rc = qr_coord_new(&q.c, signed_plan, len, cfg, now_ms)) != 0)
        return rc;
    q.info = *info;
    memcpy(q.id, info->query_id, sizeof q.id);
    q.cfg = *cfg;
    q.submitted_ms = now_ms;
    plan_names(&q, signed_plan, len);
    s->q[s->n_q] = q;
    *out = &s->q[s->n_q++];
    return 0;
}

static int journal_query(const uint8_t *signed_plan, size_t len, const struct qr_coord_config *cfg,
                         int64_t now_ms, uint8_t **record, size_t *record_len)
{
    Cohort__JournalRecord jr;
    Cohort__JournalQuery jq;
    Cohort__SignedPlan *sp;
    int rc;

    if ((rc = qr_codec_unpack(&cohort__signed_plan__descriptor, signed_plan, len,
                              QR_SIGNED_PLAN_MAX, (void **)&sp)) != 0)
        return rc;
    cohort__journal_record__init(&jr);
    cohort__journal_query__init(&jq);
    jq.plan = sp;
    jq.token_ram = cfg->token_ram;
    jq.task_timeout_ms = cfg->task_timeout_ms;
    jq.max_task_attempts = cfg->max_task_attempts;
    jq.retry_after_ms = cfg->retry_after_ms;
    jr.now_ms = now_ms;
    jr.body_case = COHORT__JOURNAL_RECORD__BODY_QUERY;
    jr.query = &jq;
    *record_len = cohort__journal_record__get_packed_size(&jr);
    *record = malloc(*record_len ? *record_len : 1);
    if (*record != NULL)
        cohort__journal_record__pack(&jr, *record);
    protobuf_c_message_free_unpacked(&sp->base, NULL);
    return *record ? 0 : QR_ERR_NOMEM;
}

static int journal_request(const uint8_t *req, size_t len, int64_t now_ms, uint8_t **record,
                           size_t *record_len)
{
    Cohort__JournalRecord jr;

    cohort__journal_record__init(&jr);
    jr.now_ms = now_ms;
    jr.body_case = COHORT__JOURNAL_RECORD__BODY_REQUEST;
    jr.request.data = (uint8_t *)req;
    jr.request.len = len;
    *record_len = cohort__journal_record__get_packed_size(&jr);
    *record = malloc(*record_len ? *record_len : 1);
    if (*record == NULL)
        return QR_ERR_NOMEM;
    cohort__journal_record__pack(&jr, *record);
    return 0;
}

/* ------------------------------------------------------------- handlers */

/* Whether conn is admitted for the token a request names. */
static int admitted_for(qr_service *s, uint64_t conn, const uint8_t *token, size_t len)
{
    struct conn *c = conn_find(s, conn);

    return c != NULL && c->admitted && len == QR_TOKEN_ID_LEN &&
           memcmp(c->token, token, QR_TOKEN_ID_LEN) == 0;
}

/* A device certificate that verifies under a trusted token authority now. */
static int token_cert_ok(qr_service *s, const uint8_t *cert, size_t len, int64_t now_ms,
                         struct tk_cert_info *info)
{
    int rc = TK_ERR_UNTRUSTED;

    for (size_t i = 0; i < s->cfg.n_token_authorities; i++) {
        rc = tk_cert_verify(info, cert, len, s->token_auth[i], now_ms / 1000, s->scratch,
                            SVC_SCRATCH);
        if (rc == TK_OK)
            break;
    }
    if (rc == TK_OK && info->role != COHORT__ROLE__ROLE_TOKEN)
        rc = TK_ERR_ROLE;
    return rc;
}

static const char *cert_refusal(int tk_rc)
{
    switch (tk_rc) {
    case TK_ERR_EXPIRED:
        return "the token's certificate is not valid now";
    case TK_ERR_ROLE:
        return "the certificate is not a token's";
    default:
        return "the token's certificate is not issued by an authority this service trusts";
    }
}

static int on_hello(qr_service *s, uint64_t conn, int64_t now_ms, const uint8_t *body, size_t len,
                    uint8_t **reply, size_t *reply_len)
{
    Cohort__Hello *h;
    Cohort__ServiceReply r;
    struct tk_cert_info info;
    struct conn *c;
    uint8_t *cert;
    size_t cert_len;
    int rc;

    if ((rc = qr_codec_unpack(&cohort__hello__descriptor, body, len, SVC_SMALL_MAX, (void **)&h)) !=
        0)
        return error_reply(rc, NULL, reply, reply_len);
    if (h->device_cert == NULL) {
        protobuf_c_message_free_unpacked(&h->base, NULL);
        return error_reply(QR_ERR_MALFORMED, "Hello without a device certificate", reply,
                           reply_len);
    }
    cert_len = cohort__certificate__get_packed_size(h->device_cert);
    cert = cert_len <= QR_CERT_MAX ? malloc(cert_len + 1) : NULL;
    if (cert != NULL)
        cohort__certificate__pack(h->device_cert, cert);
    protobuf_c_message_free_unpacked(&h->base, NULL);
    if (cert == NULL)
        return error_reply(cert_len > QR_CERT_MAX ? QR_ERR_TOO_LARGE : QR_ERR_NOMEM, NULL, reply,
                           reply_len);
    rc = token_cert_ok(s, cert, cert_len, now_ms, &info);
    free(cert);
    if (rc != TK_OK)
        return error_reply(QR_ERR_UNTRUSTED, cert_refusal(rc), reply, reply_len);
    c = conn_get(s, conn, &rc);
    if (c == NULL)
        return error_reply(rc, rc == QR_ERR_FULL ? "too many connections" : NULL, reply, reply_len);
    /* A new Hello starts over: the connection is not admitted until it answers. */
    c->admitted = 0;
    c->has_challenge = 1;
    c->challenge_ms = now_ms;
    randombytes_buf(c->challenge, sizeof c->challenge);
    cohort__service_reply__init(&r);
    r.challenge.data = c->challenge;
    r.challenge.len = sizeof c->challenge;
    return pack_reply(&r, NULL, 0, reply, reply_len);
}

static int on_admit(qr_service *s, uint64_t conn, int64_t now_ms, const uint8_t *body, size_t len,
                    uint8_t **reply, size_t *reply_len)
{
    struct conn *c = conn_find(s, conn);
    Cohort__Admit *a;
    Cohort__ServiceReply r;
    struct tk_cert_info info;
    uint8_t msg[sizeof TK_SIG_ADMIT - 1 + SVC_CHALLENGE_LEN];
    uint8_t *cert = NULL;
    size_t cert_len = 0;
    const char *why = NULL;
    int live, used = 0, status, rc;

    if ((rc = qr_codec_unpack(&cohort__admit__descriptor, body, len, SVC_SMALL_MAX, (void **)&a)) !=
        0)
        return error_reply(rc, NULL, reply, reply_len);
    live = c != NULL && c->has_challenge && a->challenge.len == SVC_CHALLENGE_LEN &&
           sodium_memcmp(a->challenge.data, c->challenge, SVC_CHALLENGE_LEN) == 0 &&
           now_ms - c->challenge_ms <= s->cfg.challenge_ms && now_ms >= c->challenge_ms;
    if (c != NULL && c->has_challenge && a->challenge.len == SVC_CHALLENGE_LEN &&
        sodium_memcmp(a->challenge.data, c->challenge, SVC_CHALLENGE_LEN) == 0) {
        /* One attempt per challenge, whatever its outcome. */
        c->has_challenge = 0;
        sodium_memzero(c->challenge, sizeof c->challenge);
        used = 1;
    }
    if (!live) {
        status = QR_ERR_CHALLENGE;
        goto refuse;
    }
    if (a->attestation == NULL || a->attestation->device_cert == NULL ||
        a->attestation->signature.len != crypto_sign_BYTES) {
        status = QR_ERR_MALFORMED;
        why = "Admit without an attestation";
        goto refuse;
    }
    cert_len = cohort__certificate__get_packed_size(a->attestation->device_cert);
    cert = cert_len <= QR_CERT_MAX ? malloc(cert_len + 1) : NULL;
    if (cert == NULL) {
        status = cert_len > QR_CERT_MAX ? QR_ERR_TOO_LARGE : QR_ERR_NOMEM;
        goto refuse;
    }
    cohort__certificate__pack(a->attestation->device_cert, cert);
    rc = token_cert_ok(s, cert, cert_len, now_ms, &info);
    free(cert);
    if (rc != TK_OK) {
        status = QR_ERR_UNTRUSTED;
        why = cert_refusal(rc);
        goto refuse;
    }
    memcpy(msg, TK_SIG_ADMIT, sizeof TK_SIG_ADMIT - 1);
    memcpy(msg + sizeof TK_SIG_ADMIT - 1, a->challenge.data, SVC_CHALLENGE_LEN);
    if (crypto_sign_verify_detached(a->attestation->signature.data, msg, sizeof msg,
                                    info.sign_pk) != 0) {
        status = QR_ERR_SIGNATURE;
        why = "the attestation does not verify";
        goto refuse;
    }
    protobuf_c_message_free_unpacked(&a->base, NULL);
    c->admitted = 1;
    memcpy(c->token, info.sign_pk, QR_TOKEN_ID_LEN);
    cohort__service_reply__init(&r);
    return pack_reply(&r, NULL, 0, reply, reply_len);

refuse:
    /* An attempt that used the challenge and failed leaves the connection
     * with neither a challenge nor an admission: it gives its place back. */
    if (used && !c->admitted)
        conn_drop(s, c);
    protobuf_c_message_free_unpacked(&a->base, NULL);
    return error_reply(status, why, reply, reply_len);
}

static int on_work(qr_service *s, uint64_t conn, int64_t now_ms, const uint8_t *req, size_t req_len,
                   const uint8_t *body, size_t len, uint8_t **reply, size_t *reply_len)
{
    const uint8_t *declined[SVC_DECLINED_MAX], *token = NULL;
    size_t n_declined = 0, token_len = 0, at = 0;
    struct qr_reply idle;
    struct wfield f;
    int rc;

    while ((rc = next_field(body, len, &at, &f)) == 1) {
        if (f.num == 1 && f.type == 2) {
            token = f.data;
            token_len = f.len;
        } else if (f.num == 2 && f.type == 2) {
            if (f.len != QR_QUERY_ID_LEN)
                return error_reply(QR_ERR_MALFORMED, NULL, reply, reply_len);
            if (n_declined == SVC_DECLINED_MAX)
                return error_reply(QR_ERR_TOO_LARGE, NULL, reply, reply_len);
            declined[n_declined++] = f.data;
        }
    }
    if (rc < 0)
        return error_reply(QR_ERR_MALFORMED, NULL, reply, reply_len);
    if (!admitted_for(s, conn, token, token_len))
        return error_reply(QR_ERR_NOT_ADMITTED, NULL, reply, reply_len);
    for (size_t i = 0; i < s->n_q; i++) {
        struct query *q = &s->q[i];
        struct qr_coord_stats st;
        int skip = 0;

        qr_coord_tick(q->c, now_ms);
        qr_coord_stats(q->c, &st);
        if (st.state == QR_DONE || st.state == QR_FAILED)
            continue;
        for (size_t d = 0; d < n_declined && st.state == QR_COLLECTING; d++)
            if (memcmp(declined[d], q->id, QR_QUERY_ID_LEN) == 0)
                skip = 1;
        if (skip)
            continue;
        rc = qr_coord_handle(q->c, now_ms, req, req_len, reply, reply_len);
        if (rc == 0 && qr_coord_gave_work(q->c))
            return 0;
        free(*reply);
        *reply = NULL;
        if (rc == QR_ERR_NOMEM)
            return error_reply(rc, NULL, reply, reply_len);
    }
    memset(&idle, 0, sizeof idle);
    idle.work = QR_WORK_IDLE;
    idle.retry_after_ms = s->cfg.coord.retry_after_ms;
    return qr_codec_reply_encode(reply, reply_len, &idle);
}

/* Upload (field 2) or TaskResult (field 3): the token and the query. */
static int route(const uint8_t *body, size_t len, uint32_t kind, const uint8_t **token,
                 size_t *token_len, const uint8_t **query, size_t *query_len)
{
    const uint8_t *contribution;
    size_t contribution_len;

    *query = NULL;
    *query_len = 0;
    if (kind == 2) {
        if (find_bytes(body, len, 1, token, token_len) != 0 ||
            find_bytes(body, len, 2, &contribution, &contribution_len) != 0)
            return QR_ERR_MALFORMED;
        if (contribution != NULL &&
            find_bytes(contribution, contribution_len, 1, query, query_len) != 0)
            return QR_ERR_MALFORMED;
        return 0;
    }
    if (find_bytes(body, len, 2, token, token_len) != 0 ||
        find_bytes(body, len, 5, query, query_len) != 0)
        return QR_ERR_MALFORMED;
    return 0;
}

/* An Upload or a TaskResult, for the query it names. */
static int on_data(qr_service *s, uint64_t conn, int64_t now_ms, uint32_t kind, const uint8_t *req,
                   size_t req_len, const uint8_t *body, size_t len, uint8_t **reply,
                   size_t *reply_len, uint8_t **record, size_t *record_len, int replaying)
{
    const uint8_t *token, *qid;
    size_t token_len, qid_len;
    struct qr_coord_stats before, after;
    struct query *q;
    int rc;

    if ((rc = route(body, len, kind, &token, &token_len, &qid, &qid_len)) != 0)
        return replaying ? rc : error_reply(rc, NULL, reply, reply_len);
    if (!replaying && !admitted_for(s, conn, token, token_len))
        return error_reply(QR_ERR_NOT_ADMITTED, NULL, reply, reply_len);
    q = query_find(s, qid, qid_len);
    if (q == NULL)
        return replaying ? QR_ERR_UNKNOWN_QUERY
                         : error_reply(qid_len ? QR_ERR_UNKNOWN_QUERY : QR_ERR_MALFORMED,
                                       qid_len ? NULL : "no query id", reply, reply_len);
    qr_coord_stats(q->c, &before);
    rc = qr_coord_handle(q->c, now_ms, req, req_len, reply, reply_len);
    qr_coord_stats(q->c, &after);
    if (after.contributions == before.contributions && after.tasks_done == before.tasks_done)
        return replaying ? (rc != 0 ? rc : QR_ERR_BAD_UPLOAD) : rc;
    if (!replaying && journal_request(req, req_len, now_ms, record, record_len) != 0) {
        /* Taken but cannot be journaled: say so rather than acknowledge. */
        free(*reply);
        *reply = NULL;
        return error_reply(QR_ERR_NOMEM, NULL, reply, reply_len);
    }
    return rc;
}

static int on_submit(qr_service *s, int64_t now_ms, const uint8_t *body, size_t len,
                     uint8_t **reply, size_t *reply_len, uint8_t **record, size_t *record_len)
{
    const uint8_t *sp;
    size_t sp_len;
    char researcher[64], msg[160];
    struct query *q;
    Cohort__ServiceReply r;
    Cohort__QueryStatus status, *statuses[1];
    struct qr_coord_stats st;
    struct qr_plan_info info;
    int rc;

    if (find_bytes(body, len, 1, &sp, &sp_len) != 0 || sp == NULL || sp_len == 0)
        return error_reply(QR_ERR_MALFORMED, "Submit without a plan", reply, reply_len);
    if (sp_len > QR_SIGNED_PLAN_MAX)
        return error_reply(QR_ERR_TOO_LARGE, NULL, reply, reply_len);
    if ((rc = qr_codec_plan_info(&info, sp, sp_len)) != 0)
        return error_reply(rc, NULL, reply, reply_len);
    q = query_find(s, info.query_id, sizeof info.query_id);
    if (q == NULL) {
        rc = tk_plan_verify(sp, sp_len, (const uint8_t(*)[TK_PK_LEN])s->plan_auth,
                            s->cfg.n_plan_authorities, now_ms / 1000, s->scratch, SVC_SCRATCH,
                            researcher);
        if (rc != TK_OK) {
            const char *parts[] = {"plan refused: ", tk_strerror(rc), " (", tk_errname(rc), ")"};
            size_t at = 0;

            for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++)
                for (const char *c = parts[k]; *c && at + 1 < sizeof msg; c++)
                    msg[at++] = *c;
            msg[at] = '\0';
            return error_reply(QR_ERR_REFUSED, msg, reply, reply_len);
        }
        if ((rc = query_add(s, sp, sp_len, &info, &s->cfg.coord, now_ms, &q)) != 0)
            return error_reply(rc, NULL, reply, reply_len);
        if (journal_query(sp, sp_len, &s->cfg.coord, now_ms, record, record_len) != 0) {
            qr_coord_free(q->c);
            s->n_q--;
            return error_reply(QR_ERR_NOMEM, NULL, reply, reply_len);
        }
    }
    /* A plan submitted again (its reply was lost) is the same query. */
    cohort__service_reply__init(&r);
    fill_status(&status, q, &st);
    statuses[0] = &status;
    r.n_queries = 1;
    r.queries = statuses;
    return pack_reply(&r, NULL, 0, reply, reply_len);
}

static int on_status(qr_service *s, int64_t now_ms, const uint8_t *body, size_t len,
                     uint8_t **reply, size_t *reply_len)
{
    const uint8_t *qid;
    size_t qid_len, n = 0;
    Cohort__ServiceReply r;
    Cohort__QueryStatus *m = NULL, **mp = NULL;
    struct qr_coord_stats *st = NULL;
    int rc;

    if (find_bytes(body, len, 1, &qid, &qid_len) != 0)
        return error_reply(QR_ERR_MALFORMED, NULL, reply, reply_len);
    if (qid_len > 0 && query_find(s, qid, qid_len) == NULL)
        return error_reply(QR_ERR_UNKNOWN_QUERY, NULL, reply, reply_len);
    m = calloc(s->n_q + 1, sizeof *m);
    mp = calloc(s->n_q + 1, sizeof *mp);
    st = calloc(s->n_q + 1, sizeof *st);
    if (m == NULL || mp == NULL || st == NULL) {
        rc = error_reply(QR_ERR_NOMEM, NULL, reply, reply_len);
        goto done;
    }
    for (size_t i = 0; i < s->n_q; i++) {
        struct query *q = &s->q[i];

        if (qid_len > 0 && memcmp(q->id, qid, QR_QUERY_ID_LEN) != 0)
            continue;
        qr_coord_tick(q->c, now_ms);
        fill_status(&m[n], q, &st[n]);
        mp[n] = &m[n];
        n++;
    }
    cohort__service_reply__init(&r);
    r.n_queries = n;
    r.queries = mp;
    rc = pack_reply(&r, NULL, 0, reply, reply_len);
done:
    free(m);
    free(mp);
    free(st);
    return rc;
}

static int on_fetch(qr_service *s, int64_t now_ms, const uint8_t *body, size_t len, uint8_t **reply,
                    size_t *reply_len)
{
    const uint8_t *qid, *sealed;
    size_t qid_len, sealed_len;
    struct query *q;
    struct qr_coord_stats st;
    Cohort__ServiceReply r;
    Cohort__QueryStatus status, *statuses[1];

    if (find_bytes(body, len, 1, &qid, &qid_len) != 0 || qid_len != QR_QUERY_ID_LEN)
        return error_reply(QR_ERR_MALFORMED, "FetchResult needs a query id", reply, reply_len);
    q = query_find(s, qid, qid_len);
    if (q == NULL)
        return error_reply(QR_ERR_UNKNOWN_QUERY, NULL, reply, reply_len);
    qr_coord_tick(q->c, now_ms);
    cohort__service_reply__init(&r);
    fill_status(&status, q, &st);
    statuses[0] = &status;
    r.n_queries = 1;
    r.queries = statuses;
    if (st.state == QR_DONE && qr_coord_result(q->c, &sealed, &sealed_len) == 0)
        return pack_reply(&r, sealed, sealed_len, reply, reply_len);
    r.status = st.state == QR_FAILED ? QR_ERR_FAILED : QR_ERR_NOT_DONE;
    r.error = (char *)(st.state == QR_FAILED && st.failure_msg[0] ? st.failure_msg
                                                                  : qr_strerror(r.status));
    if (pack_reply(&r, NULL, 0, reply, reply_len) != 0)
        return QR_ERR_NOMEM;
    return r.status;
}

/* ------------------------------------------------------------ interface */

int qr_service_new(qr_service **out, const struct qr_service_config *cfg)
{
    qr_service *s;

    if (out == NULL)
        return QR_ERR_ARG;
    *out = NULL;
    if (cfg == NULL || cfg->n_token_authorities == 0 || cfg->n_plan_authorities == 0 ||
        cfg->n_token_authorities > SVC_AUTHORITIES_MAX ||
        cfg->n_plan_authorities > TK_MAX_AUTHORITIES || cfg->token_authorities == NULL ||
        cfg->plan_authorities == NULL)
        return QR_ERR_ARG;
    if (cfg->coord.token_ram == 0 || cfg->coord.task_timeout_ms <= 0 ||
        cfg->coord.max_task_attempts == 0)
        return QR_ERR_ARG;
    if (sodium_init() < 0)
        return QR_ERR_CRYPTO;
    s = calloc(1, sizeof *s);
    if (s == NULL)
        return QR_ERR_NOMEM;
    s->scratch = malloc(SVC_SCRATCH);
    if (s->scratch == NULL) {
        free(s);
        return QR_ERR_NOMEM;
    }
    s->cfg = *cfg;
    memcpy(s->token_auth, cfg->token_authorities, cfg->n_token_authorities * 32);
    memcpy(s->plan_auth, cfg->plan_authorities, cfg->n_plan_authorities * 32);
    s->cfg.token_authorities = (const uint8_t(*)[32])s->token_auth;
    s->cfg.plan_authorities = (const uint8_t(*)[32])s->plan_auth;
    if (s->cfg.max_queries == 0)
        s->cfg.max_queries = SVC_DEFAULT_MAX_QUERIES;
    if (s->cfg.max_connections == 0)
        s->cfg.max_connections = SVC_DEFAULT_MAX_CONNECTIONS;
    if (s->cfg.challenge_ms <= 0)
        s->cfg.challenge_ms = SVC_DEFAULT_CHALLENGE_MS;
    *out = s;
    return 0;
}

void qr_service_free(qr_service *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n_q; i++)
        qr_coord_free(s->q[i].c);
    free(s->q);
    if (s->conns != NULL) {
        sodium_memzero(s->conns, s->cap_conns * sizeof *s->conns);
        free(s->conns);
    }
    free(s->scratch);
    free(s);
}

/* The body field of a ServiceRequest: exactly one of 1..8. */
static int request_body(const uint8_t *req, size_t len, uint32_t *kind, const uint8_t **body,
                        size_t *body_len)
{
    struct wfield f;
    size_t at = 0;
    int rc;

    *kind = 0;
    while ((rc = next_field(req, len, &at, &f)) == 1) {
        if (f.num >= 1 && f.num <= 8) {
            if (f.type != 2 || *kind != 0)
                return QR_ERR_MALFORMED;
            *kind = f.num;
            *body = f.data;
            *body_len = f.len;
        }
    }
    return rc < 0 || *kind == 0 ? QR_ERR_MALFORMED : 0;
}

int qr_service_handle(qr_service *s, uint64_t conn, int64_t now_ms, const uint8_t *req,
                      size_t req_len, uint8_t **reply, size_t *reply_len, uint8_t **record,
                      size_t *record_len)
{
    const uint8_t *body = NULL;
    size_t body_len = 0;
    uint32_t kind;
    int rc;

    if (s == NULL || reply == NULL || reply_len == NULL || record == NULL || record_len == NULL ||
        (req == NULL && req_len > 0))
        return QR_ERR_ARG;
    *reply = NULL;
    *reply_len = 0;
    *record = NULL;
    *record_len = 0;
    if (req_len > QR_REQUEST_MAX)
        return error_reply(QR_ERR_TOO_LARGE, NULL, reply, reply_len);
    if (req == NULL)
        req = (const uint8_t *)"";
    if ((rc = request_body(req, req_len, &kind, &body, &body_len)) != 0)
        return error_reply(rc, NULL, reply, reply_len);
    switch (kind) {
    case 1:
        return on_work(s, conn, now_ms, req, req_len, body, body_len, reply, reply_len);
    case 2:
    case 3:
        return on_data(s, conn, now_ms, kind, req, req_len, body, body_len, reply, reply_len,
                       record, record_len, 0);
    case 4:
        return on_hello(s, conn, now_ms, body, body_len, reply, reply_len);
    case 5:
        return on_admit(s, conn, now_ms, body, body_len, reply, reply_len);
    case 6:
        return on_submit(s, now_ms, body, body_len, reply, reply_len, record, record_len);
    case 7:
        return on_status(s, now_ms, body, body_len, reply, reply_len);
    default:
        return on_fetch(s, now_ms, body, body_len, reply, reply_len);
    }
}

void qr_service_tick(qr_service *s, int64_t now_ms)
{
    if (s == NULL)
        return;
    /* A challenge nobody answered in time holds a place for nothing. */
    for (size_t i = 0; i < s->cap_conns; i++) {
        struct conn *c = &s->conns[i];

        if (c->slot == SLOT_USED && !c->admitted && c->has_challenge &&
            now_ms - c->challenge_ms > s->cfg.challenge_ms)
            conn_drop(s, c);
    }
    for (size_t i = 0; i < s->n_q; i++)
        qr_coord_tick(s->q[i].c, now_ms);
}

int qr_service_replay(qr_service *s, const uint8_t *record, size_t len)
{
    Cohort__JournalRecord *jr;
    uint8_t *reply = NULL, *sp = NULL;
    size_t reply_len = 0, sp_len;
    int rc;

    if (s == NULL || record == NULL)
        return QR_ERR_ARG;
    if ((rc = qr_codec_unpack(&cohort__journal_record__descriptor, record, len,
                              QR_REQUEST_MAX + 4096, (void **)&jr)) != 0)
        return rc;
    if (jr->body_case == COHORT__JOURNAL_RECORD__BODY_QUERY && jr->query->plan != NULL) {
        struct qr_coord_config cfg;
        struct query *q = NULL;
        struct qr_plan_info info;

        memset(&cfg, 0, sizeof cfg);
        cfg.token_ram = jr->query->token_ram;
        cfg.task_timeout_ms = jr->query->task_timeout_ms;
        cfg.max_task_attempts = jr->query->max_task_attempts;
        cfg.retry_after_ms = jr->query->retry_after_ms;
        sp_len = cohort__signed_plan__get_packed_size(jr->query->plan);
        sp = malloc(sp_len ? sp_len : 1);
        if (sp == NULL) {
            rc = QR_ERR_NOMEM;
        } else {
            cohort__signed_plan__pack(jr->query->plan, sp);
            rc = qr_codec_plan_info(&info, sp, sp_len);
            if (rc == 0 && query_find(s, info.query_id, sizeof info.query_id) == NULL)
                rc = query_add(s, sp, sp_len, &info, &cfg, jr->now_ms, &q);
        }
    } else if (jr->body_case == COHORT__JOURNAL_RECORD__BODY_REQUEST) {
        const uint8_t *body;
        size_t body_len;
        uint32_t kind;
        uint8_t *unused = NULL;
        size_t unused_len = 0;

        rc = request_body(jr->request.data, jr->request.len, &kind, &body, &body_len);
        if (rc == 0 && kind != 2 && kind != 3)
            rc = QR_ERR_MALFORMED;
        if (rc == 0)
            rc = on_data(s, 0, jr->now_ms, kind, jr->request.data, jr->request.len, body, body_len,
                         &reply, &reply_len, &unused, &unused_len, 1);
        free(unused);
    } else {
        rc = QR_ERR_MALFORMED;
    }
    free(reply);
    free(sp);
    protobuf_c_message_free_unpacked(&jr->base, NULL);
    return rc;
}

size_t qr_service_queries(const qr_service *s)
{
    return s ? s->n_q : 0;
}

int qr_service_query(const qr_service *s, size_t i, struct qr_service_query *out)
{
    if (s == NULL || out == NULL || i >= s->n_q)
        return QR_ERR_ARG;
    memset(out, 0, sizeof *out);
    memcpy(out->query_id, s->q[i].id, sizeof out->query_id);
    memcpy(out->study, s->q[i].study, sizeof out->study);
    memcpy(out->researcher, s->q[i].researcher, sizeof out->researcher);
    out->submitted_ms = s->q[i].submitted_ms;
    qr_coord_stats(s->q[i].c, &out->stats);
    return 0;
}
