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
    int stage;               /* QR_STAGE_* */
    uint32_t run;            /* STAGE_TAGGED: the split tag it merges, or RUN_NONE */
};

#define RUN_NONE UINT32_MAX

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
    size_t max_box;                        /* the largest collected box */
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

    /* The tagged protocols (see "tagged protocols" below). */
    int tagged;               /* the plan's protocol is not s_agg */
    uint64_t *collected_tags; /* rnf_noise, c_noise, ed_hist: each collected tag's first bytes */
    size_t cap_collected_tags;
    uint64_t *out_tags; /* the shuffle's last round: each output's tag */
    size_t cap_out_tags;
    struct qr_store carry; /* outputs that wait for the filtering task */
    struct qr_span *carry_spans;
    uint32_t *carry_levels;
    size_t n_carry, cap_carry, cap_carry_levels;
    size_t keys_root;   /* carry index + 1 of the contributor list's root, or 0 */
    uint32_t max_level; /* highest stage level of a carried output */
    uint32_t runs;      /* split tags so far */
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
    free(c->collected_tags);
    c->collected_tags = NULL;
    c->cap_collected_tags = 0;
    free(c->out_tags);
    c->out_tags = NULL;
    c->cap_out_tags = 0;
    store_free(&c->carry);
    free(c->carry_spans);
    c->carry_spans = NULL;
    free(c->carry_levels);
    c->carry_levels = NULL;
    c->n_carry = c->cap_carry = c->cap_carry_levels = 0;
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

/* ------------------------------------------------------ tagged protocols */

/*
 * rnf_noise, c_noise, ed_hist and shuffle (token/tk_stage.c says what each
 * stage checks). The work is laid out in steps; every task of a step must
 * be done before the next step is built, as with s_agg's levels, but a step
 * may hold tasks of several stages, each numbering its own levels:
 * - the contributor list (STAGE_KEYS): step 1 cuts the accepted pseudonyms,
 *   sorted, into partitions; later steps merge the partials F at a time,
 *   in order, until one remains (the root), which waits for the filtering;
 * - the shuffle (STAGE_SHUFFLE), round r at step r: round 1 cuts the
 *   collected ciphertexts, in contributor order, into m balanced batches
 *   of at most b, the most a token holds (tk_shuffle_capacity); each later
 *   round deals the previous round's outputs, concatenated in batch order,
 *   so that position p goes to batch p mod m. After r rounds an item is
 *   spread uniformly over a window of about b^r consecutive positions
 *   (mod n): one round past the first window wider than n leaves it within
 *   about 1/b of uniform over all n. The querier picks the rounds from that
 *   (querier/qr_cost.c); the simulator measures the result.
 * - grouping by tag (STAGE_TAGGED): at step 1 (rnf_noise, c_noise,
 *   ed_hist) or after the shuffle's last round, ciphertexts are sorted by
 *   tag and cut into partitions of at most P (the same bound as s_agg's
 *   level 1). Whole tags are packed together; a tag with more than P
 *   ciphertexts gets partitions of its own (a split tag), whose partials
 *   later steps merge F at a time until one remains. Packed partitions'
 *   partials, and each split tag's last one, wait for the filtering.
 * - the filtering (STAGE_FINAL): when nothing is left to merge, one task
 *   takes the list's root and every waiting partial.
 * Sorting ties are broken by position, so a journal replay lays out the
 * same work.
 */

static void step_begin(qr_coord *c)
{
    c->level_first = c->n_tasks;
    c->level_n = 0;
    c->level_done = 0;
    c->st.level++;
    c->st.levels = c->st.level - 1;
}

/* Add a task to the step; tasks_reserve() must have made room. */
static struct qr_task *step_add(qr_coord *c, int stage, uint32_t level, uint32_t partition,
                                size_t first, size_t n, uint32_t run)
{
    struct qr_task *t = &c->tasks[c->n_tasks++];

    memset(t, 0, sizeof *t);
    t->stage = stage;
    t->level = level;
    t->partition = partition;
    t->final = stage == QR_STAGE_FINAL;
    t->first = first;
    t->n = n;
    t->run = run;
    c->level_n++;
    c->st.partitions++;
    return t;
}

struct tag_index {
    uint64_t tag;
    uint32_t index;
};

static int tag_index_cmp(const void *a, const void *b)
{
    const struct tag_index *x = a, *y = b;

    if (x->tag != y->tag)
        return x->tag < y->tag ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static size_t partition_size(const qr_coord *c, size_t ct_size)
{
    size_t per = c->cfg.token_ram / (ct_size ? ct_size : 1);

    return per < 2 ? 2 : per;
}

/*
 * The walk of tagged_level1 over tags sorted in order[]: with add 0 it
 * counts the partitions, with add 1 it adds their tasks (spans at dst
 * offset `at`, in the same order).
 */
static size_t tagged_walk(qr_coord *c, const struct tag_index *order, size_t n, size_t per,
                          size_t at, int add)
{
    size_t parts = 0, open_first = 0, open_n = 0, i, j;

    for (i = 0; i < n; i = j) {
        size_t len;

        for (j = i + 1; j < n && order[j].tag == order[i].tag; j++)
            ;
        len = j - i;
        if (open_n > 0 && (len > per || open_n + len > per)) {
            if (add)
                step_add(c, QR_STAGE_TAGGED, 1, (uint32_t)parts, at + open_first, open_n, RUN_NONE);
            parts++;
            open_n = 0;
        }
        if (len > per) { /* a split tag: partitions of its own, balanced */
            size_t k = (len + per - 1) / per;
            uint32_t run = c->runs;

            for (size_t q = 0; q < k; q++) {
                size_t lo = i + q * len / k, hi = i + (q + 1) * len / k;

                if (add)
                    step_add(c, QR_STAGE_TAGGED, 1, (uint32_t)parts, at + lo, hi - lo, run);
                parts++;
            }
            if (add)
                c->runs++;
            continue;
        }
        if (open_n == 0)
            open_first = i;
        open_n += len;
    }
    if (open_n > 0) {
        if (add)
            step_add(c, QR_STAGE_TAGGED, 1, (uint32_t)parts, at + open_first, open_n, RUN_NONE);
        parts++;
    }
    return parts;
}

/*
 * Lay out STAGE_TAGGED level 1 over n tagged ciphertexts (src spans, their
 * tags): the spans go to dst[at..at + n) sorted by tag, and a task per
 * partition joins the step.
 */
static int tagged_level1(qr_coord *c, struct qr_span *dst, size_t at, const struct qr_span *src,
                         const uint64_t *tags, size_t n, size_t ct_size)
{
    size_t per = partition_size(c, ct_size);
    struct tag_index *order = malloc((n ? n : 1) * sizeof *order);

    if (order == NULL)
        return QR_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        order[i].tag = tags[i];
        order[i].index = (uint32_t)i;
    }
    qsort(order, n, sizeof *order, tag_index_cmp);
    if (tasks_reserve(c, tagged_walk(c, order, n, per, at, 0)) != 0) {
        free(order);
        return QR_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++)
        dst[at + i] = src[order[i].index];
    tagged_walk(c, order, n, per, at, 1);
    free(order);
    return 0;
}

/* Shuffle round 1: n ciphertexts at dst[at..) in contributor order, cut
 * into balanced batches. Returns 0, or QR_ERR_FAILED with the reason in
 * the failure message when no batch can respect the plan's minimum. */
static int shuffle_batches(qr_coord *c, uint32_t round, size_t at, size_t n)
{
    size_t cap = tk_shuffle_capacity(c->cfg.token_ram, c->max_box), m, at_msg = 0;
    char *msg = c->st.failure_msg;

    m = cap ? (n + cap - 1) / cap : 0;
    if (cap < c->plan.batch_min || n < c->plan.batch_min || m == 0 || n / m < c->plan.batch_min) {
        msg_put(msg, sizeof c->st.failure_msg, &at_msg, "cannot shuffle ");
        msg_put_u64(msg, sizeof c->st.failure_msg, &at_msg, n);
        msg_put(msg, sizeof c->st.failure_msg, &at_msg, " ciphertexts in batches of at least ");
        msg_put_u64(msg, sizeof c->st.failure_msg, &at_msg, c->plan.batch_min);
        msg_put(msg, sizeof c->st.failure_msg, &at_msg, ", a token holding at most ");
        msg_put_u64(msg, sizeof c->st.failure_msg, &at_msg, cap);
        return QR_ERR_FAILED;
    }
    if (tasks_reserve(c, m) != 0)
        return QR_ERR_NOMEM;
    for (size_t q = 0; q < m; q++) {
        size_t lo = q * n / m, hi = (q + 1) * n / m;

        step_add(c, QR_STAGE_SHUFFLE, round, (uint32_t)q, at + lo, hi - lo, RUN_NONE);
    }
    return 0;
}

/* Keys merges: n partials at in_spans[at..), F at a time, in order. */
static int keys_merge(qr_coord *c, uint32_t level, size_t at, size_t n, size_t size)
{
    size_t f = c->cfg.token_ram / (size ? size : 1), parts;

    if (f < 2)
        f = 2;
    parts = (n + f - 1) / f;
    if (tasks_reserve(c, parts) != 0)
        return QR_ERR_NOMEM;
    for (size_t q = 0; q < parts; q++) {
        size_t lo = q * f, hi = lo + f < n ? lo + f : n;

        step_add(c, QR_STAGE_KEYS, level, (uint32_t)q, at + lo, hi - lo, RUN_NONE);
    }
    return 0;
}

/* Keep a finished output (bytes) for the filtering task. */
static int carry_put(qr_coord *c, const uint8_t *bytes, size_t len, uint32_t level)
{
    struct qr_span *spans = grow(c->carry_spans, &c->cap_carry, c->n_carry + 1, sizeof *spans);
    uint32_t *levels;

    if (spans == NULL)
        return QR_ERR_NOMEM;
    c->carry_spans = spans;
    levels = grow(c->carry_levels, &c->cap_carry_levels, c->n_carry + 1, sizeof *levels);
    if (levels == NULL)
        return QR_ERR_NOMEM;
    c->carry_levels = levels;
    if (store_reserve(&c->carry, len) != 0)
        return QR_ERR_NOMEM;
    memcpy(store_append(&c->carry, len, &c->carry_spans[c->n_carry]), bytes, len);
    c->carry_levels[c->n_carry++] = level;
    if (level > c->max_level)
        c->max_level = level;
    return 0;
}

/* Step 1, when collection closes: the list, and the shuffle's round 1 or
 * the grouping by tag. */
static int build_tagged_first(qr_coord *c)
{
    size_t k = c->plan.emit, n = c->n_collected, nk = c->n_contrib, key_len, at = 0;
    struct key_index *order = malloc((nk ? nk : 1) * sizeof *order);
    struct qr_span *spans = malloc((n + nk) * sizeof *spans);
    uint8_t record[64];
    int rc = 0;

    if (order == NULL || spans == NULL) {
        rc = QR_ERR_NOMEM;
        goto cleanup;
    }
    for (size_t i = 0; i < nk; i++) {
        memcpy(order[i].key, c->keys[i], QR_CONTRIB_KEY_LEN);
        order[i].index = (uint32_t)i;
    }
    qsort(order, nk, sizeof *order, key_index_cmp);
    /* The contributor list's records join the collected bytes. */
    key_len = qr_codec_key_record(NULL, c->plan.query_id, c->keys[0]);
    if (key_len > sizeof record || store_reserve(&c->collected, key_len * nk) != 0) {
        rc = QR_ERR_NOMEM;
        goto cleanup;
    }
    for (size_t i = 0; i < nk; i++) {
        qr_codec_key_record(record, c->plan.query_id, order[i].key);
        memcpy(store_append(&c->collected, key_len, &spans[at++]), record, key_len);
    }
    step_begin(c);
    if ((rc = keys_merge(c, 1, 0, nk, key_len)) != 0) /* as many as a token's RAM */
        goto cleanup;
    if (c->plan.protocol == QR_PROTO_SHUFFLE) {
        for (size_t i = 0; i < nk; i++) /* contributor order, chunks in order */
            memcpy(&spans[at + i * k], &c->collected_spans[(size_t)order[i].index * k],
                   k * sizeof *spans);
        rc = shuffle_batches(c, 1, at, n);
    } else {
        rc = tagged_level1(c, spans, at, c->collected_spans, c->collected_tags, n, c->max_ct_size);
    }
    if (rc != 0)
        goto cleanup;
    c->in = c->collected;
    memset(&c->collected, 0, sizeof c->collected);
    free(c->in_spans);
    c->in_spans = spans;
    c->n_in = n + nk;
    spans = NULL;
    free(c->collected_spans);
    c->collected_spans = NULL;
    free(c->collected_tags);
    c->collected_tags = NULL;
    c->n_collected = c->cap_collected = c->cap_collected_tags = 0;
    c->st.state = QR_AGGREGATING;

cleanup:
    free(spans);
    free(order);
    return rc;
}

static uint64_t tag64(const uint8_t *tag)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < 8; i++)
        v |= (uint64_t)tag[i] << (8 * i);
    return v;
}

/* The filtering task: the list's root first, then every waiting partial. */
static int build_final(qr_coord *c)
{
    struct qr_span *spans;
    size_t at = 0;

    if (c->keys_root == 0)
        return QR_ERR_FAILED;
    spans = malloc(c->n_carry * sizeof *spans);
    if (spans == NULL || tasks_reserve(c, 1) != 0) {
        free(spans);
        return QR_ERR_NOMEM;
    }
    spans[at++] = c->carry_spans[c->keys_root - 1];
    for (size_t i = 0; i < c->n_carry; i++)
        if (i != c->keys_root - 1)
            spans[at++] = c->carry_spans[i];
    step_add(c, QR_STAGE_FINAL, c->max_level + 1, 0, 0, at, RUN_NONE);
    store_free(&c->in);
    free(c->in_spans);
    c->in = c->carry;
    memset(&c->carry, 0, sizeof c->carry);
    c->in_spans = spans;
    c->n_in = at;
    free(c->carry_spans);
    c->carry_spans = NULL;
    c->n_carry = c->cap_carry = 0;
    return 0;
}

/* The next step, once every task of the current one is done. */
static int build_tagged_next(qr_coord *c)
{
    size_t first = c->level_first, nt = c->level_n, n_keys = 0, keys_size = 0, n_shuffle = 0;
    size_t m_shuffle = 0, at = 0, ct_max = 0, part_max = 0, m_max = 0;
    uint32_t keys_level = 0, round = 0, tagged_level = 0, partition = 0;
    struct qr_span *spans = NULL, *src = NULL;
    uint64_t *tags = NULL;
    int rc = 0;

    for (size_t i = first; i < first + nt; i++) {
        const struct qr_task *t = &c->tasks[i];

        for (size_t j = 0; j < t->out_n; j++) {
            size_t len = c->out_spans[t->out_first + j].len;

            if (t->stage == QR_STAGE_KEYS && len > keys_size)
                keys_size = len;
            if (t->stage == QR_STAGE_SHUFFLE && len > ct_max)
                ct_max = len;
            if (t->stage == QR_STAGE_TAGGED && len > part_max)
                part_max = len;
        }
        if (t->stage == QR_STAGE_KEYS) {
            n_keys += t->out_n;
            keys_level = t->level;
        } else if (t->stage == QR_STAGE_SHUFFLE) {
            n_shuffle += t->out_n;
            m_shuffle++;
            round = t->level;
        } else if (t->stage == QR_STAGE_TAGGED) {
            tagged_level = t->level;
            if (t->out_n > m_max)
                m_max = t->out_n;
        }
    }
    spans = malloc((c->n_out ? c->n_out : 1) * sizeof *spans);
    src = malloc((n_shuffle ? n_shuffle : 1) * sizeof *src);
    tags = malloc((n_shuffle ? n_shuffle : 1) * sizeof *tags);
    if (spans == NULL || src == NULL || tags == NULL) {
        rc = QR_ERR_NOMEM;
        goto cleanup;
    }
    step_begin(c);

    /* The list: merge on, or keep its root. */
    for (size_t i = first; i < first + nt; i++) {
        const struct qr_task *t = &c->tasks[i];

        if (t->stage != QR_STAGE_KEYS)
            continue;
        if (n_keys == 1) {
            const struct qr_span *o = &c->out_spans[t->out_first];
            if ((rc = carry_put(c, store_get(&c->out, o), o->len, t->level)) != 0)
                goto cleanup;
            c->keys_root = c->n_carry;
        } else {
            spans[at++] = c->out_spans[t->out_first];
        }
    }
    if (n_keys > 1 && (rc = keys_merge(c, keys_level + 1, 0, n_keys, keys_size)) != 0)
        goto cleanup;

    /* The shuffle: its next round, or the grouping by tag after the last. */
    if (n_shuffle > 0) {
        size_t p = 0;

        for (size_t i = first; i < first + nt; i++) {
            const struct qr_task *t = &c->tasks[i];

            if (t->stage != QR_STAGE_SHUFFLE)
                continue;
            for (size_t j = 0; j < t->out_n; j++, p++) {
                src[p] = c->out_spans[t->out_first + j];
                tags[p] = c->out_tags != NULL ? c->out_tags[t->out_first + j] : 0;
            }
        }
        if (round < c->plan.rounds) {
            size_t base = at;

            for (size_t g = 0; g < m_shuffle; g++)
                for (size_t q = g; q < n_shuffle; q += m_shuffle)
                    spans[at++] = src[q];
            if (tasks_reserve(c, m_shuffle) != 0) {
                rc = QR_ERR_NOMEM;
                goto cleanup;
            }
            for (size_t g = 0, off = base; g < m_shuffle; g++) {
                size_t size = n_shuffle / m_shuffle + (g < n_shuffle % m_shuffle ? 1 : 0);

                step_add(c, QR_STAGE_SHUFFLE, round + 1, (uint32_t)g, off, size, RUN_NONE);
                off += size;
            }
        } else {
            if ((rc = tagged_level1(c, spans, at, src, tags, n_shuffle, ct_max)) != 0)
                goto cleanup;
            at += n_shuffle;
        }
    }

    /* Tagged partials: merge the split tags on, keep the rest. */
    {
        size_t f = part_max && m_max ? c->cfg.token_ram / (m_max * part_max) : 2;

        if (f < 2)
            f = 2;
        for (size_t i = first; i < first + nt;) {
            const struct qr_task *t = &c->tasks[i];
            size_t j = i + 1;

            if (t->stage != QR_STAGE_TAGGED) {
                i++;
                continue;
            }
            while (t->run != RUN_NONE && j < first + nt && c->tasks[j].stage == QR_STAGE_TAGGED &&
                   c->tasks[j].run == t->run)
                j++;
            if (t->run == RUN_NONE || j - i == 1) {
                for (size_t k = 0; k < t->out_n; k++) {
                    const struct qr_span *o = &c->out_spans[t->out_first + k];
                    if ((rc = carry_put(c, store_get(&c->out, o), o->len, t->level)) != 0)
                        goto cleanup;
                }
                i = j;
                continue;
            }
            for (size_t q = i; q < j; q += f) {
                size_t begin = at, end = q + f < j ? q + f : j;

                for (size_t k = q; k < end; k++) {
                    const struct qr_task *s = &c->tasks[k];
                    memcpy(&spans[at], &c->out_spans[s->out_first], s->out_n * sizeof *spans);
                    at += s->out_n;
                }
                if (tasks_reserve(c, 1) != 0) {
                    rc = QR_ERR_NOMEM;
                    goto cleanup;
                }
                step_add(c, QR_STAGE_TAGGED, tagged_level + 1, partition++, begin, at - begin,
                         c->tasks[i].run);
                t = &c->tasks[i]; /* tasks_reserve may have moved the array */
            }
            i = j;
        }
    }

    if (c->level_n == 0) { /* nothing left to merge: filter */
        rc = build_final(c);
        goto cleanup;
    }
    store_free(&c->in);
    free(c->in_spans);
    c->in = c->out;
    memset(&c->out, 0, sizeof c->out);
    c->in_spans = spans;
    c->n_in = at;
    spans = NULL;

cleanup:
    if (rc == 0) {
        free(c->out_spans);
        c->out_spans = NULL;
        free(c->out_tags);
        c->out_tags = NULL;
        store_free(&c->out);
        c->n_out = c->cap_out = c->cap_out_tags = 0;
        c->out_m_max = c->out_size_max = 0;
    }
    free(spans);
    free(src);
    free(tags);
    return rc;
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
    if (c->tagged) {
        int rc = build_tagged_first(c);
        if (rc == QR_ERR_FAILED)
            fail(c, QR_ERR_FAILED); /* the message is written */
        else if (rc != 0)
            fail_msg(c, QR_ERR_NOMEM, "out of memory laying out the aggregation");
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
    rep->stage = t->stage;
    rep->query_id = c->plan.query_id;
    rep->n_inputs = t->n;
    rep->input = task_input;
    rep->input_ctx = ictx;
    return 0;
}

/* Whether collected ciphertexts carry tags (rnf_noise, c_noise, ed_hist). */
static int tags_collected(const qr_coord *c)
{
    return c->plan.protocol == QR_PROTO_RNF_NOISE || c->plan.protocol == QR_PROTO_C_NOISE ||
           c->plan.protocol == QR_PROTO_ED_HIST;
}

static int tuple_ok(const qr_coord *c, const struct qr_request *r, const struct qr_wire_ct *ct,
                    size_t i)
{
    return ct->query_len == QR_QUERY_TAG_LEN &&
           memcmp(ct->query, c->plan.query_id, QR_QUERY_TAG_LEN) == 0 &&
           ct->phase == QR_PHASE_COLLECT && ct->level == 0 && ct->partition == 0 &&
           ct->chunk == i && ct->nchunks == c->plan.emit &&
           ct->tag_len == (tags_collected(c) ? QR_TAG_LEN : 0) &&
           ct->key_len == QR_CONTRIB_KEY_LEN && memcmp(ct->key, r->key, QR_CONTRIB_KEY_LEN) == 0 &&
           ct->nonce_len == QR_NONCE_LEN && ct->box_len >= 1 && ct->box_len <= QR_BOX_MAX &&
           ct->packed_len <= UINT32_MAX;
}

static int on_upload(qr_coord *c, const struct qr_request *r)
{
    size_t k = c->plan.emit, total = 0;
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
    if (tags_collected(c)) {
        uint64_t *tags =
            grow(c->collected_tags, &c->cap_collected_tags, c->n_collected + k, sizeof *tags);
        if (tags == NULL)
            return QR_ERR_NOMEM;
        c->collected_tags = tags;
    }
    if (set_reserve(&c->id_set, 1) || set_reserve(&c->key_set, 1) ||
        store_reserve(&c->collected, total))
        return QR_ERR_NOMEM;

    for (size_t i = 0; i < k; i++) {
        struct qr_span *span = &c->collected_spans[c->n_collected];

        qr_codec_tuple(&ct, r, i);
        if (tags_collected(c))
            c->collected_tags[c->n_collected] = tag64(ct.tag);
        c->n_collected++;
        if (ct.box_len > c->max_box)
            c->max_box = ct.box_len;
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

/* The phase a task's outputs carry, by its stage. */
static int output_phase(int stage)
{
    switch (stage) {
    case QR_STAGE_KEYS:
        return QR_PHASE_KEYS_PARTIAL;
    case QR_STAGE_SHUFFLE:
        return QR_PHASE_SHUFFLE;
    case QR_STAGE_TAGGED:
        return QR_PHASE_TAGGED_PARTIAL;
    default:
        return QR_PHASE_AGGREGATE;
    }
}

static int partial_ok(const qr_coord *c, const struct qr_task *t, const struct qr_wire_ct *ct,
                      size_t j, size_t m)
{
    int tagged = t->stage == QR_STAGE_SHUFFLE && t->level == c->plan.rounds;

    return ct->query_len == QR_QUERY_TAG_LEN &&
           memcmp(ct->query, c->plan.query_id, QR_QUERY_TAG_LEN) == 0 &&
           ct->phase == output_phase(t->stage) && ct->level == t->level &&
           ct->tag_len == (tagged ? QR_TAG_LEN : 0) && ct->key_len == 0 &&
           (t->stage != QR_STAGE_KEYS || m == 1) && (t->stage != QR_STAGE_SHUFFLE || m == t->n) &&
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
    if (c->tagged) {
        uint64_t *tags = grow(c->out_tags, &c->cap_out_tags, c->n_out + m, sizeof *tags);
        if (tags == NULL)
            return QR_ERR_NOMEM;
        c->out_tags = tags;
    }
    if (store_reserve(&c->out, total) || aggregator_reserve(c))
        return QR_ERR_NOMEM;

    t->out_first = c->n_out;
    t->out_n = m;
    for (size_t j = 0; j < m; j++) {
        qr_codec_partial(&ct, r, j);
        if (c->tagged)
            c->out_tags[c->n_out] = ct.tag_len == QR_TAG_LEN ? tag64(ct.tag) : 0;
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
    if (c->level_done == c->level_n) {
        int rc = c->tagged ? build_tagged_next(c) : build_next_level(c);
        if (rc == QR_ERR_FAILED)
            fail_msg(c, QR_ERR_FAILED, "the contributor list has no root");
        else if (rc != 0)
            fail_msg(c, QR_ERR_NOMEM, "out of memory building the next aggregation level");
    }
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
    if (c->plan.emit == 0) {
        rc = QR_ERR_MALFORMED; /* a plan no token can contribute to */
        goto cleanup;
    }
    c->tagged = c->plan.protocol != QR_PROTO_S_AGG;
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
           c->cap_collected_tags * sizeof *c->collected_tags +
           c->cap_out_tags * sizeof *c->out_tags + store_held(&c->carry) +
           c->cap_carry * sizeof *c->carry_spans + c->cap_carry_levels * sizeof *c->carry_levels +
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
