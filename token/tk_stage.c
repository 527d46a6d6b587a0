/*
 * The tagged protocols' stages: the contributor list, the shuffle, the
 * grouping by tag, and the filtering's accounting.
 *
 * rnf_noise, c_noise and ed_hist contribute ciphertexts that carry a det tag
 * (tk_crypto.c): the service groups by it, so each aggregating token sees
 * only the groups of a few tags, not every group as in s_agg. The shuffle
 * contributes untagged ciphertexts; shuffle_rounds rounds of tokens mix
 * them in batches (decrypt, permute uniformly, re-encrypt with fresh
 * randomness) and the last round tags each one with its group, so the
 * service groups them without knowing who sent which.
 *
 * Regrouping by tag takes tuples out of the contributor order that s_agg's
 * layout checks rely on, so the tagged protocols check the whole instead,
 * as a multiset. Every tuple carries an origin: a keyed 128-bit hash of its
 * contributor's pseudonym and its chunk number, which the service cannot
 * compute or read. Two accounts of the same tuples meet at the filtering
 * token:
 * - the contributor list (STAGE_KEYS): the service hands tokens the
 *   pseudonyms it accepted, in strictly increasing order; they compute
 *   every origin those contributors must have sent (emit per contributor),
 *   and partials of the list merge in strictly increasing, disjoint ranges.
 *   Its root states the contributors, the tuples and the XOR of their
 *   origins;
 * - the tagged partials (STAGE_TAGGED): whatever tuples a token merged,
 *   fakes and dummies included, counted and XORed the same way.
 * The filtering token (STAGE_FINAL) requires both counts and both XORs to
 * be equal. Every tuple of the list must then have been merged an odd
 * number of times (the XOR; origins are unpredictable, so the service
 * cannot find others that cancel) and, the counts being equal, exactly
 * once, with nothing else merged: a tuple dropped, duplicated, replayed
 * into two partitions or brought from an unlisted contributor fails the
 * query. Dropping a contributor entirely (pseudonym and tuples) stays
 * possible, as in s_agg.
 *
 * A shuffle token holds its whole batch in RAM, as items of the origin and
 * the framed plaintext, refuses a batch smaller than the plan's minimum or
 * with two items of one origin, and emits exactly as many as it received,
 * in a uniformly random order (randombytes_uniform, Fisher-Yates), each
 * re-encrypted under a fresh nonce and bound to its round, batch and
 * position. The service chooses which items meet in a batch; the minimum
 * batch bounds what a layout can isolate, the rounds (chosen by the
 * querier) how far items mix.
 *
 * Nothing here trusts the service: every input is authenticated against
 * the binding its stage expects before its plaintext is used.
 */
#include "token/tk_int.h"

#define KEYS_PLAIN_LEN 96u /* framed KeysPlain: 2 + 2 * 18 + 2 * 11 + 18, padded */

static bool tagged_collect(const struct tk_plan *p)
{
    return p->protocol == TK_PROTO_RNF_NOISE || p->protocol == TK_PROTO_C_NOISE ||
           p->protocol == TK_PROTO_ED_HIST;
}

static void xor16(uint8_t *into, const uint8_t *v)
{
    size_t i;
    for (i = 0; i < TK_ORIGIN_LEN; i++)
        into[i] ^= v[i];
}

size_t tk_tagged_size(void)
{
    return sizeof(struct tk_tagged);
}

int tk_stage_begin(struct tk_session *s, struct tk_arena *a, const uint8_t group_secret[32])
{
    struct tk_tagged *t = tk_arena_keep(a, sizeof *t);
    if (t == NULL)
        return TK_ERR_NO_MEMORY;
    memset(t, 0, sizeof *t);
    tk_query_keys(&t->keys, group_secret, s->plan.query_id);
    s->t = t;
    if (s->stage == COHORT__STAGE__STAGE_SHUFFLE) {
        /* Exactly the batch the host is told a token of this arena holds. */
        t->item_len = tk_shuffle_item_len(s->plan.tuple_plain_len);
        t->cap_items = tk_shuffle_capacity(a->cap, s->plan.tuple_plain_len + TK_TAG_LEN);
        if (t->cap_items < s->plan.batch_min)
            return TK_ERR_NO_MEMORY;
        t->items = a->base + a->lo;
    }
    return TK_OK;
}

/* Decrypt a boxed input of plain_len bytes into scratch (or into dst). */
static int open_box(uint8_t **plain, struct tk_session *s, struct tk_arena *a,
                    const Cohort__Ciphertext *ct, const struct tk_binding *b, size_t plain_len,
                    uint8_t *dst)
{
    if (ct->nonce.len != TK_NONCE_LEN || ct->box.len != plain_len + TK_TAG_LEN)
        return TK_ERR_DECRYPT;
    *plain = dst != NULL ? dst : tk_arena_scratch(a, plain_len);
    if (*plain == NULL)
        return TK_ERR_NO_MEMORY;
    return tk_ndet_open(*plain, ct->box.data, ct->box.len, ct->nonce.data, b, s->ndet);
}

/* ------------------------------------------------------ contributor list */

/* A pseudonym of the list (level 1): its contributor's every origin. */
static int take_key(struct tk_session *s, const Cohort__Ciphertext *ct)
{
    uint8_t origin[TK_ORIGIN_LEN];
    uint32_t i;

    if (ct->phase != COHORT__PHASE__PHASE_KEYS || ct->level != 0 || ct->partition != 0 ||
        ct->chunk != 0 || ct->nchunks != 0 || ct->key.len != TK_CONTRIB_KEY_LEN ||
        ct->nonce.len != 0 || ct->box.len != 0 || ct->tag.len != 0)
        return TK_ERR_BINDING;
    if (s->t->keys_started) {
        int cmp = memcmp(ct->key.data, s->t->k_hi, TK_CONTRIB_KEY_LEN);
        if (cmp == 0)
            return TK_ERR_DUPLICATE;
        if (cmp < 0)
            return TK_ERR_ORDER;
    } else {
        memcpy(s->t->k_lo, ct->key.data, TK_CONTRIB_KEY_LEN);
    }
    for (i = 0; i < s->plan.emit; i++) {
        tk_origin(origin, &s->t->keys, ct->key.data, i);
        xor16(s->t->k_digest, origin);
    }
    memcpy(s->t->k_hi, ct->key.data, TK_CONTRIB_KEY_LEN);
    s->t->k_contributors++;
    s->t->k_tuples += s->plan.emit;
    s->t->keys_started = true;
    return TK_OK;
}

/* A partial of the list: a range after every range taken so far. */
static int take_keys_partial(struct tk_session *s, struct tk_arena *a, const Cohort__Ciphertext *ct)
{
    struct tk_binding b = {s->plan.query_id,
                           COHORT__PHASE__PHASE_KEYS_PARTIAL,
                           ct->level,
                           ct->partition,
                           0,
                           1,
                           NULL,
                           0,
                           NULL};
    Cohort__KeysPlain *k;
    const uint8_t *body;
    size_t body_len;
    uint8_t *plain;
    int rc;

    if (ct->phase != COHORT__PHASE__PHASE_KEYS_PARTIAL || ct->level == 0 || ct->level >= s->level ||
        ct->chunk != 0 || ct->nchunks != 1 || ct->key.len != 0 || ct->tag.len != 0)
        return TK_ERR_BINDING;
    if ((rc = open_box(&plain, s, a, ct, &b, KEYS_PLAIN_LEN, NULL)) != TK_OK)
        return rc;
    if (tk_frame_body(&body, &body_len, plain, KEYS_PLAIN_LEN) != TK_OK)
        return TK_ERR_MALFORMED;
    k = (Cohort__KeysPlain *)tk_unpack(a, &cohort__keys_plain__descriptor, body, body_len, &rc);
    if (k == NULL)
        return rc;
    if (k->lo.len != TK_CONTRIB_KEY_LEN || k->hi.len != TK_CONTRIB_KEY_LEN ||
        k->digest.len != TK_ORIGIN_LEN || k->contributors == 0 ||
        memcmp(k->lo.data, k->hi.data, TK_CONTRIB_KEY_LEN) > 0)
        return TK_ERR_MALFORMED;
    if (s->t->keys_started && memcmp(k->lo.data, s->t->k_hi, TK_CONTRIB_KEY_LEN) <= 0)
        return TK_ERR_DUPLICATE; /* overlapping ranges: someone listed twice */
    if (!s->t->keys_started)
        memcpy(s->t->k_lo, k->lo.data, TK_CONTRIB_KEY_LEN);
    memcpy(s->t->k_hi, k->hi.data, TK_CONTRIB_KEY_LEN);
    if (__builtin_add_overflow(s->t->k_contributors, k->contributors, &s->t->k_contributors) ||
        __builtin_add_overflow(s->t->k_tuples, k->tuples, &s->t->k_tuples))
        return TK_ERR_OVERFLOW;
    xor16(s->t->k_digest, k->digest.data);
    s->t->keys_started = true;
    sodium_memzero(plain, KEYS_PLAIN_LEN);
    return TK_OK;
}

/* ---------------------------------------------------------------- tuples */

/* A tagged tuple (level 1 of STAGE_TAGGED): counted, and merged if real. */
static int take_tagged_tuple(struct tk_session *s, struct tk_arena *a, const Cohort__Ciphertext *ct)
{
    const struct tk_plan *p = &s->plan;
    struct tk_binding b;
    Cohort__TuplePlain *t;
    const uint8_t *body;
    size_t body_len;
    uint8_t *plain;
    int rc;

    if (ct->tag.len != TK_TAG_BYTES || ct->nchunks == 0 || ct->chunk >= ct->nchunks)
        return TK_ERR_BINDING;
    if (tagged_collect(p)) {
        if (ct->phase != COHORT__PHASE__PHASE_COLLECT || ct->level != 0 || ct->partition != 0 ||
            ct->nchunks != p->emit || ct->key.len != TK_CONTRIB_KEY_LEN)
            return TK_ERR_BINDING;
    } else if (ct->phase != COHORT__PHASE__PHASE_SHUFFLE || ct->level != p->rounds ||
               ct->key.len != 0) {
        return TK_ERR_BINDING;
    }
    b = (struct tk_binding){p->query_id, ct->phase,    ct->level,   ct->partition, ct->chunk,
                            ct->nchunks, ct->key.data, ct->key.len, ct->tag.data};
    if ((rc = open_box(&plain, s, a, ct, &b, p->tuple_plain_len, NULL)) != TK_OK)
        return rc;
    if (tk_frame_body(&body, &body_len, plain, p->tuple_plain_len) != TK_OK)
        return TK_ERR_MALFORMED;
    t = (Cohort__TuplePlain *)tk_unpack(a, &cohort__tuple_plain__descriptor, body, body_len, &rc);
    if (t == NULL)
        return rc;
    if (t->origin.len != TK_ORIGIN_LEN || (!t->dummy && t->group == NULL))
        return TK_ERR_MALFORMED;
    if (!t->dummy && (rc = tk_groups_merge_pb(&s->groups, p, t->group)) != TK_OK)
        return rc;
    xor16(s->t->digest, t->origin.data);
    s->t->tuples++;
    sodium_memzero(plain, p->tuple_plain_len);
    return TK_OK;
}

/*
 * A chunk of a tagged partial (a later level of STAGE_TAGGED, or FINAL).
 * Each source partial is taken whole: chunks 0 to n-1 in order, each
 * repeating the partial's count and digest, which chunk 0 adds in.
 */
static int take_tagged_partial(struct tk_session *s, struct tk_arena *a,
                               const Cohort__Ciphertext *ct)
{
    const struct tk_plan *p = &s->plan;
    struct tk_binding b = {p->query_id, COHORT__PHASE__PHASE_TAGGED_PARTIAL,
                           ct->level,   ct->partition,
                           ct->chunk,   ct->nchunks,
                           NULL,        0,
                           NULL};
    const uint8_t *body, *digest = NULL;
    uint64_t tuples = 0;
    uint32_t n_groups = 0;
    struct tk_wfield f;
    size_t body_len, pos = 0;
    uint8_t *plain;
    int rc = TK_OK, more;

    if (ct->phase != COHORT__PHASE__PHASE_TAGGED_PARTIAL || ct->level == 0 ||
        ct->level >= s->level || ct->nchunks == 0 || ct->nchunks > TK_MAX_CHUNKS ||
        ct->chunk >= ct->nchunks || ct->key.len != 0 || ct->tag.len != 0)
        return TK_ERR_BINDING;
    if (s->stage == COHORT__STAGE__STAGE_TAGGED && ct->level != s->level - 1)
        return TK_ERR_BINDING;
    if (s->src_next < s->src_n) { /* a partial is open: its next chunk */
        if (ct->level != s->t->src_level || ct->partition != s->src_partition ||
            ct->nchunks != s->src_n || ct->chunk != s->src_next)
            return TK_ERR_INCOMPLETE;
    } else if (ct->chunk != 0) {
        return TK_ERR_INCOMPLETE;
    }
    if ((rc = open_box(&plain, s, a, ct, &b, p->chunk_plain_len, NULL)) != TK_OK)
        return rc;
    if (tk_frame_body(&body, &body_len, plain, p->chunk_plain_len) != TK_OK) {
        rc = TK_ERR_MALFORMED;
        goto out;
    }
    while ((more = tk_wire_next(body, body_len, &pos, &f)) == 1) {
        if (f.field == 4 && f.wire_type == 2)
            n_groups++;
        else if (f.field == 5 && f.wire_type == 0)
            tuples = f.varint;
        else if (f.field == 6 && f.wire_type == 2 && f.len == TK_ORIGIN_LEN)
            digest = f.data;
        else {
            rc = TK_ERR_MALFORMED;
            goto out;
        }
    }
    if (more < 0 || digest == NULL || tuples == 0 || n_groups > p->groups_per_chunk) {
        rc = TK_ERR_MALFORMED;
        goto out;
    }
    if (ct->chunk > 0 && (tuples != s->t->src_tuples ||
                          sodium_memcmp(digest, s->t->src_digest, TK_ORIGIN_LEN) != 0)) {
        rc = TK_ERR_BINDING;
        goto out;
    }
    rc = tk_groups_merge_fields(&s->groups, p, a, body, body_len);
    if (rc != TK_OK)
        goto out;
    if (ct->chunk == 0) {
        if (__builtin_add_overflow(s->t->tuples, tuples, &s->t->tuples)) {
            rc = TK_ERR_OVERFLOW;
            goto out;
        }
        xor16(s->t->digest, digest);
        s->t->src_level = ct->level;
        s->src_partition = ct->partition;
        s->src_n = ct->nchunks;
        s->src_next = 0;
        s->t->src_tuples = tuples;
        memcpy(s->t->src_digest, digest, TK_ORIGIN_LEN);
    }
    s->src_next++;
out:
    sodium_memzero(plain, p->chunk_plain_len);
    return rc;
}

/* An input of a shuffle round, decrypted straight into the batch. */
static int take_shuffle_item(struct tk_session *s, struct tk_arena *a, const Cohort__Ciphertext *ct)
{
    const struct tk_plan *p = &s->plan;
    struct tk_binding b;
    Cohort__TuplePlain *t;
    const uint8_t *body;
    size_t body_len, mark;
    uint8_t *item, *plain;
    int rc;

    if (ct->tag.len != 0 || ct->nchunks == 0 || ct->chunk >= ct->nchunks)
        return TK_ERR_BINDING;
    if (s->level == 1) {
        if (ct->phase != COHORT__PHASE__PHASE_COLLECT || ct->level != 0 || ct->partition != 0 ||
            ct->nchunks != p->emit || ct->key.len != TK_CONTRIB_KEY_LEN)
            return TK_ERR_BINDING;
    } else if (ct->phase != COHORT__PHASE__PHASE_SHUFFLE || ct->level != s->level - 1 ||
               ct->key.len != 0) {
        return TK_ERR_BINDING;
    }
    if (s->t->n_items >= s->t->cap_items)
        return TK_ERR_NO_MEMORY;
    item = tk_arena_keep(a, s->t->item_len);
    if (item == NULL)
        return TK_ERR_NO_MEMORY;
    b = (struct tk_binding){p->query_id, ct->phase,    ct->level,   ct->partition, ct->chunk,
                            ct->nchunks, ct->key.data, ct->key.len, NULL};
    plain = item + TK_ORIGIN_LEN;
    rc = open_box(&plain, s, a, ct, &b, p->tuple_plain_len, plain);
    mark = tk_arena_mark(a);
    if (rc == TK_OK && tk_frame_body(&body, &body_len, plain, p->tuple_plain_len) != TK_OK)
        rc = TK_ERR_MALFORMED;
    if (rc == TK_OK) {
        t = (Cohort__TuplePlain *)tk_unpack(a, &cohort__tuple_plain__descriptor, body, body_len,
                                            &rc);
        if (t != NULL && (t->origin.len != TK_ORIGIN_LEN || (!t->dummy && t->group == NULL)))
            rc = TK_ERR_MALFORMED;
        if (t != NULL && rc == TK_OK)
            memcpy(item, t->origin.data, TK_ORIGIN_LEN);
    }
    tk_arena_release(a, mark);
    if (rc != TK_OK) {
        sodium_memzero(item, s->t->item_len);
        a->lo -= s->t->item_len; /* give the slot back: the feed fails whole anyway */
        return rc;
    }
    s->t->n_items++;
    return TK_OK;
}

int tk_stage_take(struct tk_session *s, struct tk_arena *a, const Cohort__Ciphertext *ct)
{
    switch (s->stage) {
    case COHORT__STAGE__STAGE_KEYS:
        return s->level == 1 ? take_key(s, ct) : take_keys_partial(s, a, ct);
    case COHORT__STAGE__STAGE_SHUFFLE:
        return take_shuffle_item(s, a, ct);
    case COHORT__STAGE__STAGE_TAGGED:
        return s->level == 1 ? take_tagged_tuple(s, a, ct) : take_tagged_partial(s, a, ct);
    case COHORT__STAGE__STAGE_FINAL:
        return ct->phase == COHORT__PHASE__PHASE_KEYS_PARTIAL ? take_keys_partial(s, a, ct)
                                                              : take_tagged_partial(s, a, ct);
    default:
        return TK_ERR_BINDING;
    }
}

/* --------------------------------------------------------------- outputs */

static int emit_keys(struct tk_call *c, struct tk_session *s)
{
    struct tk_binding b = {s->plan.query_id,
                           COHORT__PHASE__PHASE_KEYS_PARTIAL,
                           s->level,
                           s->partition,
                           0,
                           1,
                           NULL,
                           0,
                           NULL};
    uint8_t plain[KEYS_PLAIN_LEN];
    Cohort__KeysPlain k;
    int rc;

    if (!s->t->keys_started)
        return TK_ERR_INCOMPLETE;
    cohort__keys_plain__init(&k);
    k.lo = (ProtobufCBinaryData){TK_CONTRIB_KEY_LEN, s->t->k_lo};
    k.hi = (ProtobufCBinaryData){TK_CONTRIB_KEY_LEN, s->t->k_hi};
    k.contributors = s->t->k_contributors;
    k.tuples = s->t->k_tuples;
    k.digest = (ProtobufCBinaryData){TK_ORIGIN_LEN, s->t->k_digest};
    if ((rc = tk_frame_pack(plain, sizeof plain, &k.base)) != TK_OK)
        return rc;
    tk_w_open(c->out, 7, tk_field_len(1, tk_ciphertext_len(&b, sizeof plain)));
    tk_write_ciphertext(c->out, 1, &b, plain, sizeof plain, s->ndet);
    sodium_memzero(plain, sizeof plain);
    return TK_OK;
}

/* The groups seen, in as many padded chunks as they need (at least one),
 * each stating the tuples merged and their digest. */
static int emit_tagged(struct tk_call *c, struct tk_session *s)
{
    const struct tk_plan *p = &s->plan;
    uint32_t n = (s->groups.n + p->groups_per_chunk - 1) / p->groups_per_chunk;

    if (s->inputs == 0 || s->src_next != s->src_n)
        return TK_ERR_INCOMPLETE;
    if (n == 0)
        n = 1;
    if (n > TK_MAX_CHUNKS)
        return TK_ERR_TOO_MANY_GROUPS;
    return tk_emit_partial_chunks(c, s, COHORT__PHASE__PHASE_TAGGED_PARTIAL, n);
}

/* Heapsort of item indices by origin (in place; no libc callback context). */
static int origin_cmp(const struct tk_session *s, uint32_t x, uint32_t y)
{
    return memcmp(s->t->items + (size_t)x * s->t->item_len,
                  s->t->items + (size_t)y * s->t->item_len, TK_ORIGIN_LEN);
}

static void sift(const struct tk_session *s, uint32_t *ix, uint32_t root, uint32_t n)
{
    for (;;) {
        uint32_t child = 2 * root + 1, t;
        if (child >= n)
            return;
        if (child + 1 < n && origin_cmp(s, ix[child], ix[child + 1]) < 0)
            child++;
        if (origin_cmp(s, ix[root], ix[child]) >= 0)
            return;
        t = ix[root];
        ix[root] = ix[child];
        ix[child] = t;
        root = child;
    }
}

static void sort_by_origin(const struct tk_session *s, uint32_t *ix, uint32_t n)
{
    uint32_t i, t;
    for (i = n / 2; i > 0; i--)
        sift(s, ix, i - 1, n);
    for (i = n; i > 1; i--) {
        t = ix[0];
        ix[0] = ix[i - 1];
        ix[i - 1] = t;
        sift(s, ix, 0, i - 1);
    }
}

/* The last round's tag of an item: its group's, or the dummies' one. */
static int item_tag(uint8_t tag[TK_TAG_BYTES], struct tk_session *s, struct tk_arena *a,
                    const uint8_t *plain)
{
    uint8_t key[TK_GROUP_KEY_MAX];
    size_t key_len, body_len, mark = tk_arena_mark(a);
    const uint8_t *body;
    Cohort__TuplePlain *t;
    int rc = TK_OK;

    if (tk_frame_body(&body, &body_len, plain, s->plan.tuple_plain_len) != TK_OK)
        return TK_ERR_MALFORMED;
    t = (Cohort__TuplePlain *)tk_unpack(a, &cohort__tuple_plain__descriptor, body, body_len, &rc);
    if (t == NULL)
        return rc;
    if (t->dummy)
        tk_tag_dummy(tag, &s->t->keys);
    else if ((rc = tk_group_key_from_pb(key, &key_len, &s->plan, t->group)) == TK_OK)
        tk_tag_group(tag, &s->t->keys, key, key_len);
    tk_arena_release(a, mark);
    return rc;
}

static int emit_shuffle(struct tk_call *c, struct tk_session *s)
{
    const struct tk_plan *p = &s->plan;
    struct tk_arena *a = c->arena;
    bool last = s->level == p->rounds;
    uint8_t tag[TK_TAG_BYTES];
    struct tk_binding b = {p->query_id,
                           COHORT__PHASE__PHASE_SHUFFLE,
                           s->level,
                           s->partition,
                           0,
                           s->t->n_items,
                           NULL,
                           0,
                           last ? tag : NULL};
    uint32_t *ix, i, n = s->t->n_items;
    size_t body = 0;
    int rc = TK_OK;

    if (n < p->batch_min)
        return TK_ERR_TOO_FEW; /* a batch too small to hide anyone in */
    ix = tk_arena_scratch(a, (size_t)n * sizeof *ix);
    if (ix == NULL)
        return TK_ERR_NO_MEMORY;
    for (i = 0; i < n; i++)
        ix[i] = i;
    sort_by_origin(s, ix, n);
    for (i = 1; i < n; i++)
        if (origin_cmp(s, ix[i - 1], ix[i]) == 0)
            return TK_ERR_DUPLICATE;
    for (i = n; i > 1; i--) { /* a uniformly random order */
        uint32_t j = randombytes_uniform(i), t = ix[i - 1];
        ix[i - 1] = ix[j];
        ix[j] = t;
    }
    for (i = 0; i < n; i++) {
        b.chunk = i;
        body += tk_field_len(1, tk_ciphertext_len(&b, p->tuple_plain_len));
    }
    tk_w_open(c->out, 7, body);
    for (i = 0; i < n && rc == TK_OK; i++) {
        const uint8_t *plain = s->t->items + (size_t)ix[i] * s->t->item_len + TK_ORIGIN_LEN;
        if (last)
            rc = item_tag(tag, s, a, plain);
        b.chunk = i;
        if (rc == TK_OK)
            tk_write_ciphertext(c->out, 1, &b, plain, p->tuple_plain_len, s->ndet);
    }
    /* A response that did not fit is retried with more room (the session
     * stays open): keep the batch for it. */
    if (rc == TK_OK && !c->out->overflow)
        sodium_memzero(s->t->items, (size_t)n * s->t->item_len);
    return rc;
}

int tk_stage_emit(struct tk_call *c, struct tk_session *s)
{
    switch (s->stage) {
    case COHORT__STAGE__STAGE_KEYS:
        return emit_keys(c, s);
    case COHORT__STAGE__STAGE_SHUFFLE:
        return emit_shuffle(c, s);
    case COHORT__STAGE__STAGE_TAGGED:
        return emit_tagged(c, s);
    default:
        return TK_ERR_BINDING;
    }
}

int tk_stage_final_check(struct tk_session *s)
{
    if (!s->t->keys_started || s->inputs == 0 || s->src_next != s->src_n)
        return TK_ERR_INCOMPLETE;
    if (s->t->tuples < s->t->k_tuples)
        return TK_ERR_INCOMPLETE; /* tuples of listed contributors are missing */
    if (s->t->tuples > s->t->k_tuples ||
        sodium_memcmp(s->t->digest, s->t->k_digest, TK_ORIGIN_LEN) != 0)
        return TK_ERR_DUPLICATE; /* counted twice, or not from the list */
    s->contributors = s->t->k_contributors;
    memset(s->lo, 0, sizeof s->lo);
    memset(s->hi, 0, sizeof s->hi);
    memcpy(s->lo, s->t->k_lo, TK_CONTRIB_KEY_LEN);
    memcpy(s->hi, s->t->k_hi, TK_CONTRIB_KEY_LEN);
    return TK_OK;
}

/* ------------------------------------------------------- host helpers */

size_t tk_key_encode(uint8_t *out, int type, unsigned scale, int64_t i, const uint8_t *s,
                     size_t len)
{
    struct tk_value v;

    memset(&v, 0, sizeof v);
    if (type < COHORT__VALUE_TYPE__VT_NULL || type > COHORT__VALUE_TYPE__VT_TIMESTAMP ||
        type == COHORT__VALUE_TYPE__VT_DOUBLE || scale > 18 ||
        (type == COHORT__VALUE_TYPE__VT_TEXT && (len > TK_TEXT_MAX || (len && s == NULL))))
        return 0;
    v.type = (uint8_t)type;
    v.scale = (uint8_t)scale;
    v.i = i;
    v.s = s;
    v.len = (uint16_t)len;
    return tk_key_put(out, &v);
}

int tk_group_tag(uint8_t tag[16], const uint8_t group_secret[32], const uint8_t *plan,
                 size_t plan_len, const uint8_t *key, size_t key_len, uint8_t *scratch,
                 size_t scratch_len)
{
    struct tk_arena a;
    struct tk_plan p;
    struct tk_query_keys k;
    Cohort__Plan *pb;
    int rc;

    if (plan == NULL || scratch == NULL || plan_len > TK_PLAN_MAX || (key == NULL && key_len))
        return TK_ERR_MALFORMED;
    tk_arena_init(&a, scratch, scratch_len, 0);
    pb = (Cohort__Plan *)tk_unpack(&a, &cohort__plan__descriptor, plan, plan_len, &rc);
    if (pb == NULL)
        return TK_ERR_MALFORMED;
    memset(&p, 0, sizeof p);
    if (strcmp(pb->protocol ? pb->protocol : "", "s_agg") == 0)
        return TK_ERR_UNSUPPORTED;
    p.buckets = (uint16_t)pb->tag_buckets;
    p.bounds = pb->bucket_bounds;
    p.n_bounds = (uint16_t)pb->n_bucket_bounds;
    if (strcmp(pb->protocol ? pb->protocol : "", "ed_hist") == 0)
        p.protocol = TK_PROTO_ED_HIST;
    else if (strcmp(pb->protocol ? pb->protocol : "", "shuffle") == 0)
        p.protocol = TK_PROTO_SHUFFLE;
    else if (tk_plan_emit(pb->protocol, 1, pb->tag_buckets, 0) == 0)
        return TK_ERR_UNSUPPORTED;
    tk_query_id(p.query_id, plan, plan_len);
    tk_query_keys(&k, group_secret, p.query_id);
    if (p.protocol == TK_PROTO_SHUFFLE)
        tk_tag_group(tag, &k, key, key_len);
    else
        tk_tag_bucket(tag, &k, tk_bucket_of(&p, &k, key, key_len));
    tk_query_keys_wipe(&k);
    return TK_OK; /* scratch holds the plan only: nothing secret */
}

void tk_dummy_tag(uint8_t tag[16], const uint8_t group_secret[32], const uint8_t query_id[32])
{
    struct tk_query_keys k;
    tk_query_keys(&k, group_secret, query_id);
    tk_tag_dummy(tag, &k);
    tk_query_keys_wipe(&k);
}
