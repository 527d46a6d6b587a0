/*
 * qr_coord.c: one query's life in the untrusted querier service, as a state
 * machine without I/O (the TODS "SSI"). Bytes come in through
 * qr_coord_handle(), time through qr_coord_tick(); nothing else moves it.
 *
 * COLLECTING -> AGGREGATING -> DONE, or FAILED from either.
 *
 * Collection. Tokens fetch the SignedPlan and upload a Contribution of
 * exactly K = tuples_per_participant ciphertexts bound to this query,
 * phase and chunk. Each accepted upload is kept as K packed ciphertexts in
 * a chunked byte store (struct qr_store) plus one 12-byte span each: a
 * query may collect hundreds of thousands of them, so nothing is kept
 * unpacked. Token ids and contribution keys sit in hash sets keyed with a
 * per-coordinator random SipHash key, so peers cannot choose colliding ids.
 * Collection closes when `size` uploads are in or at the deadline.
 *
 * Aggregation (tokens check this layout, so it is exact). Level 1 is every collected ciphertext
 * sorted by (key, chunk), cut into partitions of P1 = max(2, token_ram / s) where s is the largest
 * packed collected ciphertext. Level L+1 groups F = max(2, token_ram /
 * (m * s')) consecutive level-L partitions, m being the most partials a
 * level-L partition returned and s' the largest packed partial. A level of
 * one partition is final; its SealedResult ends the query. Task ids are
 * 1-based indices into one array of every task ever created, so a late
 * answer to an old task is recognised and acknowledged.
 *
 * Tasks not back by task_timeout_ms are offered to another token; the late
 * token is excluded from that task, as is a token that reported failure.
 * The first valid result for a task wins, whoever sends it. Only the token
 * holding an assignment can fail it, so stale failure reports from others
 * are acknowledged and ignored. A partition that failed max_task_attempts
 * times fails the query.
 *
 * Invariants. A request that is rejected changes nothing but the message
 * counters and uploads_rejected: every check runs before any change, and
 * every allocation an acceptance needs is reserved before the first change.
 * Time only moves forward through qr_coord_tick(), which qr_coord_handle()
 * also calls first with its own now_ms, so a request never sees a state
 * that is already out of date (an upload after the deadline is refused even
 * if no tick ran).
 *
 * Nothing here is trusted: ciphertexts are opaque, and the tokens of the
 * next level check what the service cannot (authenticity, duplicates,
 * order). Not thread safe: one coordinator is driven by one thread at a
 * time.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "querier/qr_coord_int.h"
#include "token/token.h"

_Static_assert(QR_QUERY_TAG_LEN == TK_QUERY_TAG_LEN, "query tag length");
_Static_assert(QR_CONTRIB_KEY_LEN == TK_CONTRIB_KEY_LEN, "contribution key length");
_Static_assert(QR_TOKEN_ID_LEN == TK_PK_LEN, "token id length");

#define QR_DEFAULT_TOKEN_RAM 65536u
#define QR_DEFAULT_TASK_TIMEOUT_MS 30000
#define QR_DEFAULT_MAX_TASK_ATTEMPTS 5u
#define QR_DEFAULT_RETRY_AFTER_MS 1000u
#define QR_SET_MIN_SLOTS 64u

/* ------------------------------------------------------------ storage */

/* Where one packed ciphertext lives in a store. */
struct qr_span {
    uint32_t chunk;
    uint32_t off;
    uint32_t len;
};

struct qr_chunk {
    uint8_t *data;
    size_t len;
    size_t cap;
};

/* Append-only bytes in chunks of QR_STORE_CHUNK (or one larger batch). */
struct qr_store {
    struct qr_chunk *chunks;
    size_t n;
    size_t cap;
};

/* A hash set of indices into an array of fixed-width ids. */
struct qr_set_slot {
    uint64_t hash;
    uint32_t ref; /* index + 1; 0 is an empty slot */
};

struct qr_set {
    struct qr_set_slot *slots;
    size_t cap; /* a power of two, or 0 */
    size_t n;
};

struct qr_task {
    uint32_t level;
    uint32_t partition;
    int final;
    int done;
    int assigned;
    size_t first, n; /* inputs: spans [first, first + n) of the level */
    uint8_t assignee[QR_TOKEN_ID_LEN];
    int64_t deadline_ms;
    uint32_t failures; /* failures reported by the assignee */
    uint8_t (*excluded)[QR_TOKEN_ID_LEN];
    size_t n_excluded, cap_excluded;
    size_t out_first, out_n; /* outputs: spans of the next level's store */
};

struct qr_coord {
    struct qr_coord_config cfg;
    struct qr_plan_info plan;
    uint8_t *signed_plan;
    size_t signed_plan_len;
    uint8_t hash_key[crypto_shorthash_KEYBYTES];
    struct qr_coord_stats st;

    /* Collection: contributors in acceptance order, their ciphertexts. */
    uint8_t (*ids)[QR_TOKEN_ID_LEN];
    uint8_t (*keys)[QR_CONTRIB_KEY_LEN];
    size_t n_contrib, cap_ids, cap_keys;
    struct qr_set id_set, key_set;
    struct qr_store collected;
    struct qr_span *collected_spans; /* contribution c owns [c*K, c*K + K) */
    size_t n_collected, cap_collected;
    size_t max_ct_size;
    uint8_t box_sizes[QR_BOX_MAX / 8 + 1]; /* a bit per box length seen */

    /* Aggregation: every task so far; the level in progress. */
    struct qr_task *tasks;
    size_t n_tasks, cap_tasks;
    size_t level_first, level_n, level_done;
    struct qr_store in; /* the inputs of the level in progress */
    struct qr_span *in_spans;
    size_t n_in;
    struct qr_store out; /* the outputs it has produced so far */
    struct qr_span *out_spans;
    size_t n_out, cap_out;
    size_t out_m_max, out_size_max;
    uint8_t (*aggs)[QR_TOKEN_ID_LEN]; /* tokens that returned a valid result */
    size_t n_aggs, cap_aggs;
    struct qr_set agg_set;

    uint8_t *result;
    size_t result_len;
    int gave_work; /* the last reply carried a plan to collect or a task */
};

/*
 * An array of elem-sized items with room for *cap, grown to hold `need`:
 * the array to use from now on (p itself if it was big enough), or NULL
 * when memory is short, and then p and *cap are unchanged.
 */
static void *grow(void *p, size_t *cap, size_t need, size_t elem)
{
    size_t ncap = *cap ? *cap : 16;
    void *np;

    if (need <= *cap)
        return p;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2 / elem)
            return NULL;
        ncap *= 2;
    }
    np = realloc(p, ncap * elem);
    if (np == NULL)
        return NULL;
    *cap = ncap;
    return np;
}

static void store_free(struct qr_store *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->chunks[i].data);
    free(s->chunks);
    memset(s, 0, sizeof *s);
}

/* Make room for `bytes` more in the last chunk, so appends cannot fail. */
static int store_reserve(struct qr_store *s, size_t bytes)
{
    struct qr_chunk *last = s->n ? &s->chunks[s->n - 1] : NULL;
    size_t size = bytes > QR_STORE_CHUNK ? bytes : QR_STORE_CHUNK;
    struct qr_chunk *chunks;

    if (last && last->cap - last->len >= bytes)
        return 0;
    if (s->n >= UINT32_MAX || bytes > UINT32_MAX)
        return QR_ERR_NOMEM;
    chunks = grow(s->chunks, &s->cap, s->n + 1, sizeof *s->chunks);
    if (chunks == NULL)
        return QR_ERR_NOMEM;
    s->chunks = chunks;
    s->chunks[s->n].data = malloc(size);
    if (s->chunks[s->n].data == NULL)
        return QR_ERR_NOMEM;
    s->chunks[s->n].len = 0;
    s->chunks[s->n].cap = size;
    s->n++;
    return 0;
}

/* Space for len bytes at the end; store_reserve() must have made room. */
static uint8_t *store_append(struct qr_store *s, size_t len, struct qr_span *span)
{
    struct qr_chunk *last = &s->chunks[s->n - 1];
    uint8_t *p = last->data + last->len;

    assert(last->cap - last->len >= len);
    span->chunk = (uint32_t)(s->n - 1);
    span->off = (uint32_t)last->len;
    span->len = (uint32_t)len;
    last->len += len;
    return p;
}

static const uint8_t *store_get(const struct qr_store *s, const struct qr_span *span)
{
    return s->chunks[span->chunk].data + span->off;
}

static uint64_t id_hash(const qr_coord *c, const uint8_t *id, size_t len)
{
    uint8_t h[crypto_shorthash_BYTES];
    uint64_t v;

    crypto_shorthash(h, id, len, c->hash_key);
    memcpy(&v, h, sizeof v);
    return v;
}

/* The index + 1 of an id equal to `item` in base[], or 0. */
static uint32_t set_find(const struct qr_set *s, uint64_t h, const void *base, size_t width,
                         const uint8_t *item)
{
    if (s->cap == 0)
        return 0;
    for (size_t i = h & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        const struct qr_set_slot *slot = &s->slots[i];

        if (slot->ref == 0)
            return 0;
        if (slot->hash == h &&
            memcmp((const uint8_t *)base + (size_t)(slot->ref - 1) * width, item, width) == 0)
            return slot->ref;
    }
}

static void set_put(struct qr_set_slot *slots, size_t cap, uint64_t h, uint32_t ref)
{
    size_t i = h & (cap - 1);

    while (slots[i].ref != 0)
        i = (i + 1) & (cap - 1);
    slots[i].hash = h;
    slots[i].ref = ref;
}

/* Keep the load at most one half with `more` entries added. */
static int set_reserve(struct qr_set *s, size_t more)
{
    size_t cap = s->cap ? s->cap : QR_SET_MIN_SLOTS;
    struct qr_set_slot *slots;

    while ((s->n + more) * 2 > cap) {
        if (cap > SIZE_MAX / 4 / sizeof *slots)
            return QR_ERR_NOMEM;
        cap *= 2;
    }
    if (cap == s->cap)
        return 0;
    slots = calloc(cap, sizeof *slots);
    if (slots == NULL)
        return QR_ERR_NOMEM;
    for (size_t i = 0; i < s->cap; i++)
        if (s->slots[i].ref != 0)
            set_put(slots, cap, s->slots[i].hash, s->slots[i].ref);
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
    return 0;
}

/* Add a reference; set_reserve() must have made room. */
static void set_insert(struct qr_set *s, uint64_t h, uint32_t ref)
{
    assert((s->n + 1) * 2 <= s->cap);
    set_put(s->slots, s->cap, h, ref);
    s->n++;
}

static void set_free(struct qr_set *s)
{
    free(s->slots);
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------ failure */

static void msg_put(char *buf, size_t cap, size_t *at, const char *s)
{
    while (*s && *at + 1 < cap)
        buf[(*at)++] = *s++;
    buf[*at] = '\0';
}

static void msg_put_u64(char *buf, size_t cap, size_t *at, uint64_t v)
{
    char digits[24];
    size_t n = sizeof digits - 1;

    digits[n] = '\0';
    do {
        digits[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    msg_put(buf, cap, at, digits + n);
}

/* The inputs and outputs of aggregation; kept after DONE or FAILED: none. */
static void release_data(qr_coord *c)
{
    store_free(&c->collected);
    free(c->collected_spans);
    c->collected_spans = NULL;
    c->n_collected = c->cap_collected = 0;
    store_free(&c->in);
    free(c->in_spans);
    c->in_spans = NULL;
    c->n_in = 0;
    store_free(&c->out);
    free(c->out_spans);
    c->out_spans = NULL;
    c->n_out = c->cap_out = 0;
}

/* Enter FAILED; the message is built by the caller into st.failure_msg. */
static void fail(qr_coord *c, int failure)
{
    c->st.state = QR_FAILED;
    c->st.failure = failure;
    for (size_t i = 0; i < c->n_tasks; i++)
        c->tasks[i].assigned = 0;
    release_data(c);
}

static void fail_msg(qr_coord *c, int failure, const char *msg)
{
    size_t at = 0;

    msg_put(c->st.failure_msg, sizeof c->st.failure_msg, &at, msg);
    fail(c, failure);
}

/* -------------------------------------------------------------- levels */

/* Room for n more tasks. */
static int tasks_reserve(qr_coord *c, size_t n)
{
    struct qr_task *tasks = grow(c->tasks, &c->cap_tasks, c->n_tasks + n, sizeof *c->tasks);

    if (tasks == NULL)
        return QR_ERR_NOMEM;
    c->tasks = tasks;
    return 0;
}

/* Add n tasks of a new level; the caller has reserved room for them. */
static void add_level(qr_coord *c, uint32_t level, size_t n)
{
    c->level_first = c->n_tasks;
    c->level_n = n;
    c->level_done = 0;
    for (size_t q = 0; q < n; q++) {
        struct qr_task *t = &c->tasks[c->n_tasks++];

        memset(t, 0, sizeof *t);
        t->level = level;
        t->partition = (uint32_t)q;
        t->final = n == 1;
    }
    c->st.level = level;
    c->st.levels = level - 1;
    c->st.partitions += n;
}

struct key_index {
    uint8_t key[QR_CONTRIB_KEY_LEN];
    uint32_t index;
};

static int key_index_cmp(const void *a, const void *b)
{
    return memcmp(((const struct key_index *)a)->key, ((const struct key_index *)b)->key,
                  QR_CONTRIB_KEY_LEN);
}

/*
 * Level 1: contributions sorted by key (keys are unique), each with its K
 * ciphertexts in chunk order, which is the order they were accepted in.
 */
static int build_level1(qr_coord *c)
{
    size_t k = c->plan.tuples_per_participant;
    size_t n = c->n_collected, per, parts;
    struct key_index *order = NULL;
    struct qr_span *spans = NULL;
    int rc = 0;

    assert(n == c->n_contrib * k && n > 0 && c->max_ct_size > 0);
    order = malloc(c->n_contrib * sizeof *order);
    spans = malloc(n * sizeof *spans);
    per = c->cfg.token_ram / c->max_ct_size;
    if (per < 2)
        per = 2;
    parts = (n + per - 1) / per;
    if (order == NULL || spans == NULL || tasks_reserve(c, parts)) {
        rc = QR_ERR_NOMEM;
        goto cleanup;
    }
    for (size_t i = 0; i < c->n_contrib; i++) {
        memcpy(order[i].key, c->keys[i], QR_CONTRIB_KEY_LEN);
        order[i].index = (uint32_t)i;
    }
    qsort(order, c->n_contrib, sizeof *order, key_index_cmp);
    for (size_t i = 0; i < c->n_contrib; i++)
        memcpy(&spans[i * k], &c->collected_spans[(size_t)order[i].index * k], k * sizeof *spans);

    add_level(c, 1, parts);
    for (size_t q = 0; q < parts; q++) {
        struct qr_task *t = &c->tasks[c->level_first + q];

        t->first = q * per;
        t->n = n - t->first < per ? n - t->first : per;
    }
    c->in = c->collected;
    memset(&c->collected, 0, sizeof c->collected);
    c->in_spans = spans;
    c->n_in = n;
    spans = NULL;
    free(c->collected_spans);
    c->collected_spans = NULL;
    c->n_collected = c->cap_collected = 0;
    c->st.state = QR_AGGREGATING;

cleanup:
    free(spans);
    free(order);
    return rc;
}

/* Level L+1 from the outputs of level L, all of whose tasks are done. */
static int build_next_level(qr_coord *c)
{
    size_t sources = c->level_n, group, parts, at = 0;
    struct qr_span *spans;

    assert(c->level_done == c->level_n && c->out_m_max > 0 && c->out_size_max > 0);
    group = c->cfg.token_ram / (c->out_m_max * c->out_size_max);
    if (group < 2)
        group = 2;
    parts = (sources + group - 1) / group;
    spans = malloc(c->n_out * sizeof *spans);
    if (spans == NULL || tasks_reserve(c, parts)) {
        free(spans);
        return QR_ERR_NOMEM;
    }

    size_t prev_first = c->level_first;
    uint32_t level = c->st.level + 1;

    add_level(c, level, parts);
    for (size_t q = 0; q < parts; q++) {
        struct qr_task *t = &c->tasks[c->level_first + q];

        t->first = at;
        for (size_t p = q * group; p < (q + 1) * group && p < sources; p++) {
            const struct qr_task *src = &c->tasks[prev_first + p];

            memcpy(&spans[at], &c->out_spans[src->out_first], src->out_n * sizeof *spans);
            at += src->out_n;
        }
        t->n = at - t->first;
    }
    assert(at == c->n_out);

    store_free(&c->in);
    free(c->in_spans);
    c->in = c->out;
    memset(&c->out, 0, sizeof c->out);
    c->in_spans = spans;
    c->n_in = c->n_out;
    free(c->out_spans);
    c->out_spans = NULL;
    c->n_out = c->cap_out = 0;
    c->out_m_max = c->out_size_max = 0;
    return 0;
}

static void close_collection(qr_coord *c)
{
    size_t at = 0;
    char *m = c->st.failure_msg;
    size_t cap = sizeof c->st.failure_msg;

    if (c->n_contrib == 0) {
        fail_msg(c, QR_ERR_FAILED, "no contributions");
        return;
    }
    if (c->n_contrib < c->plan.min_participants) {
        msg_put_u64(m, cap, &at, c->n_contrib);
        msg_put(m, cap, &at, c->n_contrib == 1 ? " contribution" : " contributions");
        msg_put(m, cap, &at, ", the plan requires ");
        msg_put_u64(m, cap, &at, c->plan.min_participants);
        fail(c, QR_ERR_FAILED);
        return;
    }
    if (build_level1(c) != 0)
        fail_msg(c, QR_ERR_NOMEM, "out of memory building aggregation level 1");
}

/* ---------------------------------------------------------------- tasks */

static int excluded(const struct qr_task *t, const uint8_t *token)
{
    for (size_t i = 0; i < t->n_excluded; i++)
        if (memcmp(t->excluded[i], token, QR_TOKEN_ID_LEN) == 0)
            return 1;
    return 0;
}

/* Exclude a token from a task; best effort when memory is short. */
static void exclude(struct qr_task *t, const uint8_t *token)
{
    uint8_t(*ex)[QR_TOKEN_ID_LEN];

    if (excluded(t, token))
        return;
    ex = grow(t->excluded, &t->cap_excluded, t->n_excluded + 1, sizeof *t->excluded);
    if (ex == NULL)
        return;
    t->excluded = ex;
    memcpy(t->excluded[t->n_excluded++], token, QR_TOKEN_ID_LEN);
}

static void expire_tasks(qr_coord *c, int64_t now_ms)
{
    for (size_t i = c->level_first; i < c->level_first + c->level_n; i++) {
        struct qr_task *t = &c->tasks[i];

        if (t->assigned && now_ms >= t->deadline_ms) {
            t->assigned = 0;
            exclude(t, t->assignee);
            c->st.tasks_reassigned++;
        }
    }
}

static struct qr_task *pick_task(qr_coord *c, const uint8_t *token)
{
    for (size_t i = c->level_first; i < c->level_first + c->level_n; i++) {
        struct qr_task *t = &c->tasks[i];

        if (!t->done && !t->assigned && !excluded(t, token))
            return t;
    }
    return NULL;
}

struct input_ctx {
    const qr_coord *c;
    size_t first;
};

static void task_input(const void *ctx, size_t i, const uint8_t **bytes, size_t *len)
{
    const struct input_ctx *in = ctx;
    const struct qr_span *span = &in->c->in_spans[in->first + i];

    *bytes = store_get(&in->c->in, span);
    *len = span->len;
}

/* -------------------------------------------------------------- handlers */

static int on_work(qr_coord *c, int64_t now_ms, const struct qr_request *r, struct qr_reply *rep,
                   struct input_ctx *ictx)
{
    struct qr_task *t;

    if (r->token_id_len != QR_TOKEN_ID_LEN)
        return QR_ERR_MALFORMED;
    rep->work = QR_WORK_IDLE;
    rep->retry_after_ms = c->cfg.retry_after_ms;
    if (c->st.state == QR_COLLECTING) {
        if (set_find(&c->id_set, id_hash(c, r->token_id, QR_TOKEN_ID_LEN), c->ids, QR_TOKEN_ID_LEN,
                     r->token_id) == 0) {
            rep->work = QR_WORK_COLLECT;
            rep->retry_after_ms = 0;
            rep->plan = c->signed_plan;
            rep->plan_len = c->signed_plan_len;
        }
        return 0;
    }
    if (c->st.state != QR_AGGREGATING)
        return 0;
    t = pick_task(c, r->token_id);
    if (t == NULL)
        return 0;

    t->assigned = 1;
    memcpy(t->assignee, r->token_id, QR_TOKEN_ID_LEN);
    t->deadline_ms =
        now_ms > INT64_MAX - c->cfg.task_timeout_ms ? INT64_MAX : now_ms + c->cfg.task_timeout_ms;
    c->st.tasks_issued++;

    ictx->c = c;
    ictx->first = t->first;
    rep->work = QR_WORK_TASK;
    rep->retry_after_ms = 0;
    rep->plan = c->signed_plan;
    rep->plan_len = c->signed_plan_len;
    rep->task_id = (uint64_t)(t - c->tasks) + 1;
    rep->level = t->level;
    rep->partition = t->partition;
    rep->final = t->final;
    rep->query_id = c->plan.query_id;
    rep->n_inputs = t->n;
    rep->input = task_input;
    rep->input_ctx = ictx;
    return 0;
}

static int tuple_ok(const qr_coord *c, const struct qr_request *r, const struct qr_wire_ct *ct,
                    size_t i)
{
    return ct->query_len == QR_QUERY_TAG_LEN &&
           memcmp(ct->query, c->plan.query_id, QR_QUERY_TAG_LEN) == 0 &&
           ct->phase == QR_PHASE_COLLECT && ct->level == 0 && ct->partition == 0 &&
           ct->chunk == i && ct->nchunks == c->plan.tuples_per_participant &&
           ct->key_len == QR_CONTRIB_KEY_LEN && memcmp(ct->key, r->key, QR_CONTRIB_KEY_LEN) == 0 &&
           ct->nonce_len == QR_NONCE_LEN && ct->box_len >= 1 && ct->box_len <= QR_BOX_MAX &&
           ct->packed_len <= UINT32_MAX;
}

static int on_upload(qr_coord *c, const struct qr_request *r)
{
    size_t k = c->plan.tuples_per_participant, total = 0;
    uint8_t(*ids)[QR_TOKEN_ID_LEN];
    uint8_t(*keys)[QR_CONTRIB_KEY_LEN];
    struct qr_span *spans;
    uint64_t id_h, key_h;
    struct qr_wire_ct ct;

    if (!r->has_contribution)
        return QR_ERR_BAD_UPLOAD;
    if (r->query_id_len != QR_QUERY_ID_LEN ||
        memcmp(r->query_id, c->plan.query_id, QR_QUERY_ID_LEN) != 0)
        return QR_ERR_WRONG_QUERY;
    if (c->st.state != QR_COLLECTING)
        return QR_ERR_CLOSED;
    if (r->token_id_len != QR_TOKEN_ID_LEN || r->key_len != QR_CONTRIB_KEY_LEN || r->n_tuples != k)
        return QR_ERR_BAD_UPLOAD;
    id_h = id_hash(c, r->token_id, QR_TOKEN_ID_LEN);
    key_h = id_hash(c, r->key, QR_CONTRIB_KEY_LEN);
    if (set_find(&c->id_set, id_h, c->ids, QR_TOKEN_ID_LEN, r->token_id) ||
        set_find(&c->key_set, key_h, c->keys, QR_CONTRIB_KEY_LEN, r->key))
        return QR_ERR_DUPLICATE;
    for (size_t i = 0; i < k; i++) {
        qr_codec_tuple(&ct, r, i);
        if (!tuple_ok(c, r, &ct, i))
            return QR_ERR_BAD_UPLOAD;
        total += ct.packed_len;
    }
    if (c->n_contrib >= UINT32_MAX - 1)
        return QR_ERR_NOMEM;

    /* Reserve everything, then change state. */
    ids = grow(c->ids, &c->cap_ids, c->n_contrib + 1, sizeof *c->ids);
    if (ids == NULL)
        return QR_ERR_NOMEM;
    c->ids = ids;
    keys = grow(c->keys, &c->cap_keys, c->n_contrib + 1, sizeof *c->keys);
    if (keys == NULL)
        return QR_ERR_NOMEM;
    c->keys = keys;
    spans = grow(c->collected_spans, &c->cap_collected, c->n_collected + k, sizeof *spans);
    if (spans == NULL)
        return QR_ERR_NOMEM;
    c->collected_spans = spans;
    if (set_reserve(&c->id_set, 1) || set_reserve(&c->key_set, 1) ||
        store_reserve(&c->collected, total))
        return QR_ERR_NOMEM;

    for (size_t i = 0; i < k; i++) {
        struct qr_span *span = &c->collected_spans[c->n_collected++];

        qr_codec_tuple(&ct, r, i);
        qr_codec_ct_pack(&ct, store_append(&c->collected, ct.packed_len, span));
        if (ct.packed_len > c->max_ct_size)
            c->max_ct_size = ct.packed_len;
        if (!(c->box_sizes[ct.box_len / 8] & (1u << (ct.box_len % 8)))) {
            c->box_sizes[ct.box_len / 8] |= (uint8_t)(1u << (ct.box_len % 8));
            c->st.ciphertext_sizes_distinct++;
        }
    }
    memcpy(c->ids[c->n_contrib], r->token_id, QR_TOKEN_ID_LEN);
    memcpy(c->keys[c->n_contrib], r->key, QR_CONTRIB_KEY_LEN);
    c->n_contrib++;
    set_insert(&c->id_set, id_h, (uint32_t)c->n_contrib);
    set_insert(&c->key_set, key_h, (uint32_t)c->n_contrib);
    c->st.contributions++;
    c->st.ciphertexts_collected += k;

    if (c->plan.size > 0 && c->st.contributions >= c->plan.size)
        close_collection(c);
    return 0;
}

/* A failure reported by the token that holds the task. */
static int on_task_failure(qr_coord *c, struct qr_task *t, const struct qr_request *r)
{
    size_t at = 0;
    char *m = c->st.failure_msg;
    size_t cap = sizeof c->st.failure_msg;

    if (!t->assigned || memcmp(t->assignee, r->token_id, QR_TOKEN_ID_LEN) != 0)
        return 0; /* stale: the task has moved on */
    t->assigned = 0;
    exclude(t, r->token_id);
    t->failures++;
    if (t->failures < c->cfg.max_task_attempts)
        return 0;
    msg_put(m, cap, &at, "level ");
    msg_put_u64(m, cap, &at, t->level);
    msg_put(m, cap, &at, " partition ");
    msg_put_u64(m, cap, &at, t->partition);
    msg_put(m, cap, &at, " failed ");
    msg_put_u64(m, cap, &at, t->failures);
    msg_put(m, cap, &at, " times: ");
    msg_put(m, cap, &at, tk_strerror(r->status));
    msg_put(m, cap, &at, " (");
    msg_put(m, cap, &at, tk_errname(r->status));
    msg_put(m, cap, &at, ")");
    fail(c, r->status);
    return 0;
}

static int partial_ok(const qr_coord *c, const struct qr_task *t, const struct qr_wire_ct *ct,
                      size_t j, size_t m)
{
    return ct->query_len == QR_QUERY_TAG_LEN &&
           memcmp(ct->query, c->plan.query_id, QR_QUERY_TAG_LEN) == 0 &&
           ct->phase == QR_PHASE_AGGREGATE && ct->level == t->level &&
           ct->partition == t->partition && ct->chunk == j && ct->nchunks == m &&
           ct->nonce_len == QR_NONCE_LEN && ct->box_len >= 1 && ct->packed_len <= UINT32_MAX;
}

/* Reserve a place for a token among the aggregators (before any change). */
static int aggregator_reserve(qr_coord *c)
{
    uint8_t(*aggs)[QR_TOKEN_ID_LEN] = grow(c->aggs, &c->cap_aggs, c->n_aggs + 1, sizeof *c->aggs);

    if (aggs == NULL)
        return QR_ERR_NOMEM;
    c->aggs = aggs;
    return set_reserve(&c->agg_set, 1);
}

static void aggregator_note(qr_coord *c, const uint8_t *token)
{
    uint64_t h = id_hash(c, token, QR_TOKEN_ID_LEN);

    if (set_find(&c->agg_set, h, c->aggs, QR_TOKEN_ID_LEN, token))
        return;
    memcpy(c->aggs[c->n_aggs++], token, QR_TOKEN_ID_LEN);
    set_insert(&c->agg_set, h, (uint32_t)c->n_aggs);
    c->st.aggregator_tokens++;
}

static int on_final_result(qr_coord *c, struct qr_task *t, const struct qr_request *r)
{
    uint8_t *buf;

    if (!r->has_output || !r->has_result || r->n_partials != 0 ||
        r->result_query_id_len != QR_QUERY_ID_LEN ||
        memcmp(r->result_query_id, c->plan.query_id, QR_QUERY_ID_LEN) != 0)
        return QR_ERR_BAD_RESULT;
    buf = malloc(r->result_packed_len ? r->result_packed_len : 1);
    if (buf == NULL || aggregator_reserve(c)) {
        free(buf);
        return QR_ERR_NOMEM;
    }
    qr_codec_result_pack(r, buf);
    c->result = buf;
    c->result_len = r->result_packed_len;
    t->done = 1;
    t->assigned = 0;
    c->level_done++;
    c->st.tasks_done++;
    aggregator_note(c, r->token_id);
    c->st.levels = c->st.level;
    c->st.state = QR_DONE;
    release_data(c);
    return 0;
}

static int on_partial_result(qr_coord *c, struct qr_task *t, const struct qr_request *r)
{
    size_t m = r->n_partials, total = 0;
    struct qr_span *spans;
    struct qr_wire_ct ct;

    if (!r->has_output || r->has_result || m < 1 || m > QR_PARTIALS_MAX)
        return QR_ERR_BAD_RESULT;
    for (size_t j = 0; j < m; j++) {
        qr_codec_partial(&ct, r, j);
        if (!partial_ok(c, t, &ct, j, m))
            return QR_ERR_BAD_RESULT;
        total += ct.packed_len;
    }
    spans = grow(c->out_spans, &c->cap_out, c->n_out + m, sizeof *spans);
    if (spans == NULL)
        return QR_ERR_NOMEM;
    c->out_spans = spans;
    if (store_reserve(&c->out, total) || aggregator_reserve(c))
        return QR_ERR_NOMEM;

    t->out_first = c->n_out;
    t->out_n = m;
    for (size_t j = 0; j < m; j++) {
        qr_codec_partial(&ct, r, j);
        qr_codec_ct_pack(&ct, store_append(&c->out, ct.packed_len, &c->out_spans[c->n_out++]));
        if (ct.packed_len > c->out_size_max)
            c->out_size_max = ct.packed_len;
    }
    if (m > c->out_m_max)
        c->out_m_max = m;
    t->done = 1;
    t->assigned = 0;
    c->level_done++;
    c->st.tasks_done++;
    aggregator_note(c, r->token_id);
    if (c->level_done == c->level_n && build_next_level(c) != 0)
        fail_msg(c, QR_ERR_NOMEM, "out of memory building the next aggregation level");
    return 0;
}

static int on_result(qr_coord *c, const struct qr_request *r)
{
    struct qr_task *t;

    if (r->task_id == 0 || r->task_id > c->n_tasks)
        return QR_ERR_UNKNOWN_TASK;
    t = &c->tasks[r->task_id - 1];
    if (t->done)
        return 0; /* the first valid result won; this one is acknowledged */
    if (c->st.state == QR_FAILED)
        return QR_ERR_FAILED;
    if (r->token_id_len != QR_TOKEN_ID_LEN)
        return QR_ERR_BAD_RESULT;
    if (r->status != 0)
        return on_task_failure(c, t, r);
    return t->final ? on_final_result(c, t, r) : on_partial_result(c, t, r);
}

/* ------------------------------------------------------------ interface */

void qr_coord_config_default(struct qr_coord_config *cfg)
{
    if (cfg == NULL)
        return;
    cfg->token_ram = QR_DEFAULT_TOKEN_RAM;
    cfg->task_timeout_ms = QR_DEFAULT_TASK_TIMEOUT_MS;
    cfg->max_task_attempts = QR_DEFAULT_MAX_TASK_ATTEMPTS;
    cfg->retry_after_ms = QR_DEFAULT_RETRY_AFTER_MS;
}

int qr_coord_new(qr_coord **out, const uint8_t *signed_plan, size_t len,
                 const struct qr_coord_config *cfg, int64_t now_ms)
{
    qr_coord *c = NULL;
    int rc;

    if (out == NULL)
        return QR_ERR_ARG;
    *out = NULL;
    if (signed_plan == NULL || len == 0)
        return QR_ERR_ARG;
    if (cfg != NULL &&
        (cfg->token_ram == 0 || cfg->task_timeout_ms <= 0 || cfg->max_task_attempts == 0))
        return QR_ERR_ARG;
    if (sodium_init() < 0)
        return QR_ERR_CRYPTO;
    c = calloc(1, sizeof *c);
    if (c == NULL)
        return QR_ERR_NOMEM;
    if (cfg != NULL)
        c->cfg = *cfg;
    else
        qr_coord_config_default(&c->cfg);
    rc = qr_codec_plan_info(&c->plan, signed_plan, len);
    if (rc != 0)
        goto cleanup;
    if (c->plan.tuples_per_participant == 0) {
        rc = QR_ERR_MALFORMED; /* a plan no token can contribute to */
        goto cleanup;
    }
    c->signed_plan = malloc(len);
    if (c->signed_plan == NULL) {
        rc = QR_ERR_NOMEM;
        goto cleanup;
    }
    memcpy(c->signed_plan, signed_plan, len);
    c->signed_plan_len = len;
    crypto_shorthash_keygen(c->hash_key);
    c->st.state = QR_COLLECTING;
    (void)now_ms; /* collection starts now; only its deadline matters */
    *out = c;
    c = NULL;

cleanup:
    qr_coord_free(c);
    return rc;
}

void qr_coord_free(qr_coord *c)
{
    if (c == NULL)
        return;
    release_data(c);
    for (size_t i = 0; i < c->n_tasks; i++)
        free(c->tasks[i].excluded);
    free(c->tasks);
    free(c->ids);
    free(c->keys);
    set_free(&c->id_set);
    set_free(&c->key_set);
    free(c->aggs);
    set_free(&c->agg_set);
    free(c->result);
    free(c->signed_plan);
    sodium_memzero(c->hash_key, sizeof c->hash_key);
    free(c);
}

void qr_coord_tick(qr_coord *c, int64_t now_ms)
{
    if (c == NULL)
        return;
    if (c->st.state == QR_COLLECTING && now_ms / 1000 >= c->plan.deadline)
        close_collection(c);
    /* Past the plan's expiry no token will do its work: say so, and stop. */
    if ((c->st.state == QR_COLLECTING || c->st.state == QR_AGGREGATING) &&
        now_ms / 1000 > c->plan.expires_at) {
        fail_msg(c, QR_ERR_FAILED, "the plan expired before the study finished");
        return;
    }
    if (c->st.state == QR_AGGREGATING)
        expire_tasks(c, now_ms);
}

int qr_coord_handle(qr_coord *c, int64_t now_ms, const uint8_t *req, size_t req_len,
                    uint8_t **reply, size_t *reply_len)
{
    struct qr_reply rep;
    struct qr_request r;
    struct input_ctx ictx = {NULL, 0};
    int rc, decoded = 0;

    if (c == NULL || reply == NULL || reply_len == NULL || (req == NULL && req_len > 0))
        return QR_ERR_ARG;
    *reply = NULL;
    *reply_len = 0;
    c->st.messages_in++;
    c->st.bytes_in += req_len;
    qr_coord_tick(c, now_ms);
    c->gave_work = 0;

    memset(&rep, 0, sizeof rep);
    rc = qr_codec_request_decode(&r, req ? req : (const uint8_t *)"", req_len);
    if (rc == 0) {
        decoded = 1;
        switch (r.kind) {
        case QR_REQ_WORK:
            rc = on_work(c, now_ms, &r, &rep, &ictx);
            break;
        case QR_REQ_UPLOAD:
            rc = on_upload(c, &r);
            if (rc != 0)
                c->st.uploads_rejected++;
            break;
        case QR_REQ_RESULT:
            rc = on_result(c, &r);
            break;
        }
    }
    if (rc != 0) {
        memset(&rep, 0, sizeof rep);
        rep.error = qr_strerror(rc);
    }
    rep.status = rc;
    if (qr_codec_reply_encode(reply, reply_len, &rep) != 0)
        rc = QR_ERR_NOMEM;
    else {
        c->gave_work = rep.work == QR_WORK_COLLECT || rep.work == QR_WORK_TASK;
        c->st.messages_out++;
        c->st.bytes_out += *reply_len;
    }
    if (decoded)
        qr_codec_request_free(&r);
    return rc;
}

/* A store's bytes in use, each chunk's rounded up to whole 4 KiB pages (a
 * chunk is allocated whole, but only the pages written are resident). */
static size_t store_held(const struct qr_store *s)
{
    size_t n = s->cap * sizeof *s->chunks;

    for (size_t i = 0; i < s->n; i++)
        n += (s->chunks[i].len + 4095) / 4096 * 4096;
    return n;
}

void qr_coord_stats(const qr_coord *c, struct qr_coord_stats *out)
{
    size_t held;

    if (out == NULL)
        return;
    if (c == NULL) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = c->st;
    held = sizeof *c + c->signed_plan_len + c->result_len + store_held(&c->collected) +
           store_held(&c->in) + store_held(&c->out) +
           c->cap_collected * sizeof *c->collected_spans + c->n_in * sizeof *c->in_spans +
           c->cap_out * sizeof *c->out_spans + c->cap_ids * sizeof *c->ids +
           c->cap_keys * sizeof *c->keys + c->cap_aggs * sizeof *c->aggs +
           c->cap_tasks * sizeof *c->tasks +
           (c->id_set.cap + c->key_set.cap + c->agg_set.cap) * sizeof(struct qr_set_slot);
    for (size_t i = 0; i < c->n_tasks; i++)
        held += c->tasks[i].cap_excluded * sizeof *c->tasks[i].excluded;
    out->bytes_held = held;
}

int qr_coord_result(const qr_coord *c, const uint8_t **sealed, size_t *len)
{
    if (c == NULL || sealed == NULL || len == NULL)
        return QR_ERR_ARG;
    *sealed = NULL;
    *len = 0;
    if (c->st.state == QR_FAILED)
        return QR_ERR_FAILED;
    if (c->st.state != QR_DONE)
        return QR_ERR_NOT_DONE;
    *sealed = c->result;
    *len = c->result_len;
    return 0;
}

size_t qr_coord_contributors(const qr_coord *c, const uint8_t (**ids)[32])
{
    if (c == NULL || ids == NULL)
        return 0;
    *ids = (const uint8_t(*)[32])c->ids;
    return c->n_contrib;
}

int qr_coord_gave_work(const qr_coord *c)
{
    return c != NULL && c->gave_work;
}
