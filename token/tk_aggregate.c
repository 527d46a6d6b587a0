/*
 * Aggregation and filtering: a token merges one partition.
 *
 * A partition is streamed through an aggregation session: AggBegin (the
 * signed plan, the level and partition this task produces, final or not),
 * any number of AggFeed messages with the input ciphertexts in order, then
 * AggEnd. The session's state (the plan summary, the query keys, the group
 * table and where the inputs have got to) lives at the low end of the arena
 * and survives from call to call; each input ciphertext is decoded,
 * authenticated, merged and forgotten, so a partition of any size passes
 * through a fixed RAM.
 *
 * The service lays partitions out (see querier/qr_coord.c) and the token
 * checks that layout, which is what stops a weakly malicious service from
 * counting anyone twice:
 * - Level 1 inputs are collection ciphertexts in strictly increasing order
 *   of (pseudonym, chunk): an equal key is a duplicate, a smaller one is out
 *   of order.
 * - Level L+1 inputs are the partial results of consecutive level-L
 *   partitions, each complete (chunks 0..n-1 in order) and in increasing
 *   partition order. Every partial carries the range [lo, hi] of the keys
 *   it covers; the ranges of successive inputs must be strictly increasing.
 *   A contribution placed in two partitions therefore makes two ranges
 *   overlap at the first token that sees both, which refuses it.
 * - Every ciphertext is bound by its associated data to (query, phase,
 *   level, partition, chunk, chunk count, key): the service cannot move one.
 * - A token aggregates a given (query, level, partition) once; a replay is
 *   refused (TK_ERR_REPLAY).
 * An error in a feed aborts the session: the partition is retried, by this
 * or another token, from the start. So does a feed or an end after the
 * plan's expires_at: no work is done for an expired plan.
 *
 * Outputs: a non-final session emits the plan's fixed number of partial
 * chunks, each padded to the plan's fixed size, whatever the number of
 * groups seen. A final session is the filtering phase: it enforces the
 * minimum number of participants, drops groups below the minimum group
 * size, applies HAVING, seals the table to the researcher's X25519 key and
 * signs it with the device key. Under differential privacy it first adds
 * the noise (tk_noise.c): the threshold and HAVING then see only noisy
 * values, and the table states epsilon, the mechanism and each column's
 * error bound.
 */
#include "token/tk_noise.h"

size_t tk_session_size(void)
{
    return sizeof(struct tk_session);
}

void tk_session_close(struct tk_token *tk, uint8_t *arena, size_t arena_len)
{
    if (arena != NULL && arena_len >= sizeof(struct tk_session) && ((uintptr_t)arena % 8) == 0) {
        struct tk_session *s = (struct tk_session *)arena;
        if (s->magic == TK_SESSION_MAGIC)
            sodium_memzero(s, sizeof *s);
    }
    tk_doc_wipe(arena, arena_len);
    tk_backup_wipe(tk, arena, arena_len);
    sodium_memzero(tk->session, sizeof tk->session);
}

static bool session_open(const struct tk_token *tk)
{
    static const uint8_t zero[TK_SESSION_ID_LEN];
    return sodium_memcmp(tk->session, zero, sizeof zero) != 0;
}

/*
 * The bytes at the low end of the arena that the open session keeps, or 0
 * when no session is open in this arena. The dispatcher reserves them
 * before it decodes an AggFeed or AggEnd, so that nothing the host sends
 * is ever copied over the session.
 */
size_t tk_session_extent(const struct tk_token *tk, const uint8_t *arena, size_t arena_len)
{
    const struct tk_session *s = (const struct tk_session *)arena;
    size_t backup = tk_backup_extent(tk, arena, arena_len);
    if (backup != 0)
        return backup;
    if (session_open(tk) && tk_doc_extent(arena, arena_len) != 0) {
        const struct tk_doc_session *d = (const struct tk_doc_session *)arena;
        return sodium_memcmp(d->id, tk->session, TK_SESSION_ID_LEN) == 0 ? d->arena_lo : 0;
    }
    if (!session_open(tk) || arena == NULL || arena_len < sizeof *s ||
        ((uintptr_t)arena % 8) != 0 || s->magic != TK_SESSION_MAGIC ||
        sodium_memcmp(s->id, tk->session, TK_SESSION_ID_LEN) != 0 || s->arena_lo > arena_len)
        return 0;
    return s->arena_lo;
}

/* The open session, if the request names it and the arena still holds it. */
static struct tk_session *find_session(struct tk_token *tk, struct tk_arena *a, const uint8_t *id,
                                       size_t id_len)
{
    struct tk_session *s = (struct tk_session *)a->base;
    if (!session_open(tk) || id_len != TK_SESSION_ID_LEN || a->cap < sizeof *s ||
        ((uintptr_t)a->base % 8) != 0 || s->magic != TK_SESSION_MAGIC ||
        sodium_memcmp(s->id, tk->session, TK_SESSION_ID_LEN) != 0 ||
        sodium_memcmp(id, tk->session, TK_SESSION_ID_LEN) != 0 || s->arena_lo > a->cap)
        return NULL;
    a->lo = s->arena_lo;
    s->groups.arena = a;
    return s;
}

int tk_do_agg_begin(struct tk_call *c, const Cohort__AggBegin *req)
{
    struct tk_token *tk = c->tk;
    struct tk_arena *a = c->arena;
    struct tk_session *s;
    struct tk_plan plan;
    size_t mark = tk_arena_mark(a);
    int rc;

    if (!tk_has_flag(tk, TK_FLAG_PROVISIONED))
        return TK_ERR_NOT_PROVISIONED;
    if (req->level == 0 || req->level > 64 || (uint32_t)req->stage > COHORT__STAGE__STAGE_FINAL ||
        req->final != (req->stage == COHORT__STAGE__STAGE_FINAL ||
                       (req->stage == COHORT__STAGE__STAGE_MERGE && req->final)))
        return TK_ERR_BINDING;
    if ((rc = tk_plan_load(tk, a, &plan, req->plan, c->now, TK_PLAN_AGGREGATE)) != TK_OK)
        return rc;
    /* s_agg merges; the tagged protocols list, tag and filter; only the
     * shuffle shuffles, for exactly its rounds. */
    if ((plan.protocol == TK_PROTO_S_AGG) != (req->stage == COHORT__STAGE__STAGE_MERGE) ||
        (req->stage == COHORT__STAGE__STAGE_SHUFFLE &&
         (plan.protocol != TK_PROTO_SHUFFLE || req->level > plan.rounds)))
        return TK_ERR_BINDING;
    if (plan.aggregate_ram > a->cap)
        return TK_ERR_NO_MEMORY;
    if (tk_replay_seen(tk, plan.query_id, TK_REPLAY_LEVEL(req->stage, req->level), req->partition))
        return TK_ERR_REPLAY;

    a->lo = 0;
    s = tk_arena_keep(a, sizeof *s);
    if (s == NULL)
        return TK_ERR_NO_MEMORY;
    memset(s, 0, sizeof *s);
    s->plan = plan;
    if ((rc = tk_plan_keep_having(a, &s->plan)) != TK_OK) {
        sodium_memzero(s, sizeof *s);
        return rc;
    }
    /* The session's plan no longer points into scratch: give the decoded
     * plan's RAM to the group table. */
    tk_arena_release(a, mark);
    s->level = req->level;
    s->partition = req->partition;
    s->final = req->final;
    s->stage = (uint8_t)req->stage;
    {
        struct tk_query_keys keys;
        tk_query_keys(&keys, tk->group_secret, plan.query_id);
        memcpy(s->ndet, keys.ndet, sizeof s->ndet);
        tk_query_keys_wipe(&keys);
    }
    if (s->stage != COHORT__STAGE__STAGE_MERGE)
        rc = tk_stage_begin(s, a, tk->group_secret);
    if (rc == TK_OK &&
        (s->stage == COHORT__STAGE__STAGE_MERGE || s->stage == COHORT__STAGE__STAGE_TAGGED ||
         s->stage == COHORT__STAGE__STAGE_FINAL))
        rc = tk_groups_init(&s->groups, a, s->plan.max_groups, s->plan.n_aggs, 0, true);
    if (rc != TK_OK) {
        sodium_memzero(s, sizeof *s);
        return rc;
    }
    randombytes_buf(s->id, sizeof s->id);
    s->magic = TK_SESSION_MAGIC;
    s->arena_lo = a->lo;
    memcpy(tk->session, s->id, sizeof s->id);

    /* AggSession { session, max_feed_bytes } */
    tk_w_open(c->out, 6,
              tk_field_len(1, TK_SESSION_ID_LEN) + 1 + tk_varint_len(TK_REQUEST_MAX - 64));
    tk_w_bytes(c->out, 1, s->id, sizeof s->id);
    tk_w_uint(c->out, 2, TK_REQUEST_MAX - 64);
    return TK_OK;
}

static void key20(uint8_t out[TK_KEY_LEN], const uint8_t *key16, uint32_t chunk)
{
    memcpy(out, key16, 16);
    out[16] = (uint8_t)(chunk >> 24);
    out[17] = (uint8_t)(chunk >> 16);
    out[18] = (uint8_t)(chunk >> 8);
    out[19] = (uint8_t)chunk;
}

/*
 * Continuity: every contributor's K ciphertexts must all be there, so that
 * the service cannot drop some of them (the real groups, were it able to
 * guess which they are) and keep the rest. Keys are pseudonym (16 bytes)
 * then chunk (4 bytes, big-endian); `next` must directly follow `prev`:
 * the same pseudonym's next chunk, or chunk 0 of another pseudonym after
 * chunk K-1 of the previous one.
 */
static uint32_t key_chunk(const uint8_t k[TK_KEY_LEN])
{
    return (uint32_t)k[16] << 24 | (uint32_t)k[17] << 16 | (uint32_t)k[18] << 8 | k[19];
}

static bool follows(const uint8_t prev[TK_KEY_LEN], const uint8_t next[TK_KEY_LEN], uint32_t k)
{
    if (memcmp(prev, next, 16) == 0)
        return key_chunk(next) == key_chunk(prev) + 1;
    return key_chunk(prev) == k - 1 && key_chunk(next) == 0;
}

/* Level 1: one collection ciphertext. */
static int take_tuple(struct tk_session *s, struct tk_arena *a, const Cohort__Ciphertext *ct)
{
    const struct tk_plan *p = &s->plan;
    uint8_t k[TK_KEY_LEN];
    struct tk_binding b;
    const uint8_t *body;
    size_t body_len;
    uint8_t *plain;
    Cohort__TuplePlain *t;
    int rc = TK_OK;

    if (ct->phase != COHORT__PHASE__PHASE_COLLECT || ct->level != 0 || ct->partition != 0 ||
        ct->nchunks != p->tuples || ct->chunk >= p->tuples || ct->key.len != TK_CONTRIB_KEY_LEN)
        return TK_ERR_BINDING;
    key20(k, ct->key.data, ct->chunk);
    if (s->started) {
        int cmp = memcmp(k, s->last, TK_KEY_LEN);
        if (cmp == 0)
            return TK_ERR_DUPLICATE;
        if (cmp < 0)
            return TK_ERR_ORDER;
        if (!follows(s->last, k, p->tuples))
            return TK_ERR_INCOMPLETE;
    }
    if (ct->box.len != p->tuple_plain_len + TK_TAG_LEN)
        return TK_ERR_DECRYPT;
    plain = tk_arena_scratch(a, p->tuple_plain_len);
    if (plain == NULL)
        return TK_ERR_NO_MEMORY;
    b = (struct tk_binding){p->query_id, ct->phase,    0,           0,   ct->chunk,
                            ct->nchunks, ct->key.data, ct->key.len, NULL};
    if ((rc = tk_ndet_open(plain, ct->box.data, ct->box.len, ct->nonce.data, &b, s->ndet)) != TK_OK)
        return rc;
    if (tk_frame_body(&body, &body_len, plain, p->tuple_plain_len) != TK_OK)
        return TK_ERR_MALFORMED;
    t = (Cohort__TuplePlain *)tk_unpack(a, &cohort__tuple_plain__descriptor, body, body_len, &rc);
    if (t == NULL)
        return rc;
    if (t->first != (ct->chunk == 0) || (!t->dummy && t->group == NULL))
        return TK_ERR_MALFORMED;
    if (!t->dummy && (rc = tk_groups_merge_pb(&s->groups, p, t->group)) != TK_OK)
        return rc;
    if (t->first)
        s->contributors++;
    if (!s->started)
        memcpy(s->lo, k, TK_KEY_LEN);
    memcpy(s->hi, k, TK_KEY_LEN);
    memcpy(s->last, k, TK_KEY_LEN);
    s->started = true;
    sodium_memzero(plain, p->tuple_plain_len);
    return TK_OK;
}

/* The header of a decrypted PartialPlain: everything but its groups. */
struct partial_header {
    const uint8_t *lo, *hi;
    uint64_t contributors;
    uint32_t n_groups;
};

static int partial_header(struct partial_header *h, const uint8_t *body, size_t len)
{
    struct tk_wfield f;
    size_t pos = 0;
    int more;

    memset(h, 0, sizeof *h);
    while ((more = tk_wire_next(body, len, &pos, &f)) == 1) {
        if ((f.field == 1 || f.field == 2) && f.wire_type == 2 && f.len == TK_KEY_LEN)
            *(f.field == 1 ? &h->lo : &h->hi) = f.data;
        else if (f.field == 3 && f.wire_type == 0)
            h->contributors = f.varint;
        else if (f.field == 4 && f.wire_type == 2)
            h->n_groups++;
        else
            return TK_ERR_MALFORMED;
    }
    if (more < 0 || h->lo == NULL || h->hi == NULL)
        return TK_ERR_MALFORMED;
    return TK_OK;
}

/*
 * Level 2 and up: one chunk of a lower level's partial. The chunk is
 * decrypted in place (the box is this call's own decoded copy, in scratch)
 * and its groups are decoded and merged one at a time, so that a chunk
 * never needs more RAM than its ciphertext and one group: a token with the
 * minimum arena can merge the largest chunks a plan allows.
 */
static int take_partial(struct tk_session *s, struct tk_arena *a, const Cohort__Ciphertext *ct)
{
    const struct tk_plan *p = &s->plan;
    struct partial_header h;
    struct tk_binding b;
    const uint8_t *body;
    size_t body_len;
    uint8_t *plain;
    int rc = TK_OK;

    if (ct->phase != COHORT__PHASE__PHASE_AGGREGATE || ct->level != s->level - 1 ||
        ct->nchunks != p->nchunks || ct->chunk >= p->nchunks || ct->key.len != 0)
        return TK_ERR_BINDING;
    if (!s->started) {
        if (ct->chunk != 0)
            return TK_ERR_INCOMPLETE;
    } else if (ct->partition == s->src_partition) {
        if (ct->chunk < s->src_next)
            return TK_ERR_DUPLICATE;
        if (ct->chunk > s->src_next)
            return TK_ERR_INCOMPLETE;
    } else if (ct->partition > s->src_partition) {
        if (s->src_next != s->src_n || ct->chunk != 0)
            return TK_ERR_INCOMPLETE;
    } else {
        return TK_ERR_ORDER;
    }
    if (ct->box.len != p->chunk_plain_len + TK_TAG_LEN)
        return TK_ERR_DECRYPT;
    plain = ct->box.data;
    b = (struct tk_binding){p->query_id, ct->phase, ct->level, ct->partition, ct->chunk,
                            ct->nchunks, NULL,      0,         NULL};
    if ((rc = tk_ndet_open(plain, ct->box.data, ct->box.len, ct->nonce.data, &b, s->ndet)) != TK_OK)
        return rc;
    if (tk_frame_body(&body, &body_len, plain, p->chunk_plain_len) != TK_OK ||
        partial_header(&h, body, body_len) != TK_OK || h.n_groups > p->groups_per_chunk ||
        memcmp(h.lo, h.hi, TK_KEY_LEN) > 0) {
        rc = TK_ERR_MALFORMED;
        goto out;
    }
    if (ct->chunk == 0) {
        if (s->started && memcmp(h.lo, s->hi, TK_KEY_LEN) <= 0) {
            rc = TK_ERR_DUPLICATE; /* overlapping ranges: something counted twice */
            goto out;
        }
        if (s->started && !follows(s->hi, h.lo, p->tuples)) {
            rc = TK_ERR_INCOMPLETE; /* a gap between two partitions */
            goto out;
        }
    } else if (memcmp(h.lo, s->src_lo, TK_KEY_LEN) != 0 ||
               memcmp(h.hi, s->src_hi, TK_KEY_LEN) != 0) {
        rc = TK_ERR_BINDING;
        goto out;
    }
    rc = tk_groups_merge_fields(&s->groups, p, a, body, body_len);
    if (rc != TK_OK)
        goto out;
    if (ct->chunk == 0) {
        if (!s->started)
            memcpy(s->lo, h.lo, TK_KEY_LEN);
        memcpy(s->hi, h.hi, TK_KEY_LEN);
        memcpy(s->src_lo, h.lo, TK_KEY_LEN);
        memcpy(s->src_hi, h.hi, TK_KEY_LEN);
        s->src_partition = ct->partition;
        s->src_n = ct->nchunks;
        s->src_next = 0;
        s->contributors += h.contributors;
    }
    s->src_next++;
    s->started = true;
out:
    sodium_memzero(plain, p->chunk_plain_len);
    return rc;
}

int tk_do_agg_feed(struct tk_call *c, const uint8_t *body, size_t len)
{
    struct tk_arena *a = c->arena;
    struct tk_session *s = NULL;
    struct tk_wfield f;
    size_t pos = 0;
    int rc, more;

    while ((more = tk_wire_next(body, len, &pos, &f)) == 1) {
        if (f.field == 1 && f.wire_type == 2) {
            if (s != NULL)
                return TK_ERR_SESSION;
            s = find_session(c->tk, a, f.data, f.len);
            if (s == NULL)
                return TK_ERR_SESSION;
            if (c->now > s->plan.expires_at)
                return TK_ERR_EXPIRED;
        } else if (f.field == 2 && f.wire_type == 2) {
            size_t mark = tk_arena_mark(a);
            Cohort__Ciphertext *ct;
            if (s == NULL)
                return TK_ERR_SESSION;
            ct = (Cohort__Ciphertext *)tk_unpack(a, &cohort__ciphertext__descriptor, f.data, f.len,
                                                 &rc);
            if (ct == NULL)
                return rc;
            if (ct->query.len != TK_QUERY_TAG_LEN ||
                memcmp(ct->query.data, s->plan.query_id, TK_QUERY_TAG_LEN) != 0)
                return TK_ERR_WRONG_QUERY;
            if (s->stage != COHORT__STAGE__STAGE_MERGE)
                rc = tk_stage_take(s, a, ct);
            else if (ct->nonce.len != TK_NONCE_LEN)
                return TK_ERR_MALFORMED;
            else
                rc = s->level == 1 ? take_tuple(s, a, ct) : take_partial(s, a, ct);
            if (rc != TK_OK)
                return rc;
            s->inputs++;
            s->arena_lo = a->lo;
            tk_arena_release(a, mark);
        } else {
            return TK_ERR_MALFORMED;
        }
    }
    if (more < 0)
        return more;
    if (s == NULL)
        return TK_ERR_SESSION;
    return TK_OK;
}

/*
 * A session's groups as n padded PartialPlain chunks of `phase`, each
 * holding groups_per_chunk groups in turn. S_Agg's chunks (PHASE_AGGREGATE)
 * lead with the range they cover (lo, hi, contributors); the tagged
 * protocols' chunks (PHASE_TAGGED_PARTIAL) end with the tuples merged and
 * their digest. Each PartialPlain is written field by field into its frame,
 * one group at a time, so that a chunk needs no more RAM than its plaintext
 * and one decoded group.
 */
int tk_emit_partial_chunks(struct tk_call *c, struct tk_session *s, uint32_t phase, uint32_t n)
{
    const struct tk_plan *p = &s->plan;
    struct tk_arena *a = c->arena;
    bool tagged = phase == COHORT__PHASE__PHASE_TAGGED_PARTIAL;
    struct tk_binding b = {p->query_id, phase, s->level, s->partition, 0, n, NULL, 0, NULL};
    uint8_t *plain = tk_arena_scratch(a, p->chunk_plain_len);
    size_t body = 0;
    uint32_t j;
    int rc = TK_OK;

    if (plain == NULL)
        return TK_ERR_NO_MEMORY;
    for (j = 0; j < n; j++) {
        b.chunk = j;
        body += tk_field_len(1, tk_ciphertext_len(&b, p->chunk_plain_len));
    }
    tk_w_open(c->out, 7, body);
    for (j = 0; j < n && rc == TK_OK; j++) {
        struct tk_wbuf w = {plain + 2, p->chunk_plain_len - 2, 0, false};
        uint32_t first = j * p->groups_per_chunk, m = 0, k;

        if (first < s->groups.n)
            m = s->groups.n - first < p->groups_per_chunk ? s->groups.n - first
                                                          : p->groups_per_chunk;
        if (!tagged) {
            tk_w_bytes(&w, 1, s->lo, TK_KEY_LEN);
            tk_w_bytes(&w, 2, s->hi, TK_KEY_LEN);
            tk_w_uint(&w, 3, s->contributors);
        }
        for (k = 0; k < m && rc == TK_OK; k++) {
            size_t mark = tk_arena_mark(a);
            Cohort__GroupPartial gp;
            rc = tk_group_to_pb(&gp, a, p, &s->groups, tk_groups_at(&s->groups, first + k));
            if (rc == TK_OK)
                tk_w_message(&w, 4, &gp.base);
            tk_arena_release(a, mark);
        }
        if (tagged) {
            tk_w_uint(&w, 5, s->t->tuples);
            tk_w_bytes(&w, 6, s->t->digest, TK_ORIGIN_LEN);
        }
        if (rc == TK_OK && (w.overflow || w.len > 0xffff))
            rc = TK_ERR_TOO_LARGE;
        if (rc != TK_OK)
            break;
        plain[0] = (uint8_t)w.len;
        plain[1] = (uint8_t)(w.len >> 8);
        memset(plain + 2 + w.len, 0, p->chunk_plain_len - 2 - w.len);
        b.chunk = j;
        tk_write_ciphertext(c->out, 1, &b, plain, p->chunk_plain_len, s->ndet);
    }
    sodium_memzero(plain, p->chunk_plain_len);
    return rc;
}

static size_t put_str(char *out, size_t at, size_t cap, const char *s)
{
    while (*s && at + 1 < cap)
        out[at++] = *s++;
    out[at] = '\0';
    return at;
}

static void agg_label(char *out, size_t cap, const struct tk_plan *p, uint32_t i)
{
    static const char *const names[] = {
        "COUNT(*)", "COUNT(", "SUM(", "AVG(", "MIN(", "MAX(", "COUNT(DISTINCT participant)"};
    const struct tk_agg *g = &p->aggs[i];
    size_t n = put_str(out, 0, cap, names[g->func]);
    if (g->col >= 0) {
        n = put_str(out, n, cap, p->columns[g->col].name);
        put_str(out, n, cap, ")");
    }
}

/*
 * The final result. Its plaintext is a ResultTable cut into parts of at most
 * TK_RESULT_PART bytes, each sealed on its own to the researcher's key and
 * written straight into the response: a token never holds more than one
 * part of plaintext, whatever the number of groups. The parts' plaintexts,
 * concatenated in order, are the ResultTable's encoding (the header fields
 * lead the first part, the counts close the last). The signature covers
 * the digest of every sealed part, so none can be dropped or reordered.
 *
 * It is written in two passes over the groups, which decide identically
 * where each part ends: the first only measures (the response's framing
 * needs the total length up front), the second seals and writes.
 */
struct result_writer {
    struct tk_session *s;
    uint8_t *buf; /* one part's plaintext */
    struct tk_wbuf part;
    struct tk_wbuf *out; /* NULL while measuring */
    size_t total;        /* bytes of the sealed parts' fields */
    crypto_generichash_state digest;
    int rc;
};

static void flush_part(struct result_writer *r)
{
    size_t sealed_len = r->part.len + crypto_box_SEALBYTES;
    uint8_t len_le[8], *dst;
    size_t k;

    if (r->part.len == 0)
        return;
    if (r->out == NULL) {
        r->total += tk_field_len(2, sealed_len);
    } else {
        tk_w_open(r->out, 2, sealed_len);
        dst = tk_w_reserve(r->out, sealed_len);
        if (dst != NULL) {
            if (crypto_box_seal(dst, r->buf, r->part.len, r->s->plan.researcher_box_pk) != 0)
                r->rc = TK_ERR_RANDOM;
            for (k = 0; k < 8; k++)
                len_le[k] = (uint8_t)((uint64_t)sealed_len >> (8 * k));
            crypto_generichash_update(&r->digest, len_le, sizeof len_le);
            crypto_generichash_update(&r->digest, dst, sealed_len);
        }
        sodium_memzero(r->buf, r->part.len);
    }
    r->part.len = 0;
}

/* Append one encoded field (a column, a row) to the current part. */
static void put_message(struct result_writer *r, uint32_t field, const ProtobufCMessage *m)
{
    size_t n = tk_field_len(field, protobuf_c_message_get_packed_size(m));
    if (n > TK_RESULT_PART) {
        r->rc = TK_ERR_TOO_LARGE;
        return;
    }
    if (r->part.len + n > TK_RESULT_PART)
        flush_part(r);
    tk_w_message(&r->part, field, m);
}

static void put_uint(struct result_writer *r, uint32_t field, uint64_t v)
{
    if (r->part.len + 11 > TK_RESULT_PART)
        flush_part(r);
    tk_w_uint(&r->part, field, v);
}

/* A double field (wire type 1: 8 bytes, little-endian). */
static void put_double(struct result_writer *r, uint32_t field, double d)
{
    uint64_t bits;
    uint8_t *dst;
    unsigned k;
    if (r->part.len + 13 > TK_RESULT_PART)
        flush_part(r);
    memcpy(&bits, &d, sizeof bits);
    tk_w_tag(&r->part, field, 1);
    dst = tk_w_reserve(&r->part, 8);
    if (dst == NULL) {
        r->rc = TK_ERR_TOO_LARGE;
        return;
    }
    for (k = 0; k < 8; k++)
        dst[k] = (uint8_t)(bits >> (8 * k));
}

static void put_string(struct result_writer *r, uint32_t field, const char *s, size_t n)
{
    if (tk_field_len(field, n) > TK_RESULT_PART) {
        r->rc = TK_ERR_TOO_LARGE;
        return;
    }
    if (r->part.len + tk_field_len(field, n) > TK_RESULT_PART)
        flush_part(r);
    tk_w_bytes(&r->part, field, (const uint8_t *)s, n);
}

/* What the table states about its noise: epsilon, the mechanism, each
 * column's error bound (group columns 0) and their confidence. */
static void put_dp(struct result_writer *r)
{
    const struct tk_plan *p = &r->s->plan;
    char mech[TK_DP_MECHANISM_MAX];
    uint32_t i;

    put_double(r, 6, p->epsilon);
    put_string(r, 7, mech, tk_dp_mechanism(mech, sizeof mech, p));
    for (i = 0; i < (uint32_t)p->n_group + p->n_aggs; i++)
        put_double(r, 8, i < p->n_group ? 0.0 : tk_dp_error_bound(p, i - p->n_group));
    put_double(r, 9, TK_DP_CONFIDENCE);
}

static void write_result(struct result_writer *r)
{
    struct tk_session *s = r->s;
    const struct tk_plan *p = &s->plan;
    uint64_t suppressed = 0;
    uint32_t i, k;

    r->part = (struct tk_wbuf){r->buf, TK_RESULT_PART, 0, false};
    tk_w_bytes(&r->part, 1, p->query_id, TK_QUERY_ID_LEN);
    for (i = 0; i < (uint32_t)p->n_group + p->n_aggs && r->rc == TK_OK; i++) {
        Cohort__ResultColumn col;
        char label[2 * TK_NAME_MAX + 32];
        cohort__result_column__init(&col);
        if (i < p->n_group) {
            const struct tk_column *c = &p->columns[p->group_col[i]];
            put_str(label, 0, sizeof label, c->name);
            col.type = (Cohort__ValueType)c->type;
            col.scale = c->scale;
        } else {
            struct tk_agg_state one = {1, 0};
            struct tk_value v;
            agg_label(label, sizeof label, p, i - p->n_group);
            tk_agg_final(&v, p, i - p->n_group, &one);
            col.type = (Cohort__ValueType)v.type;
            col.scale = v.scale;
        }
        col.label = label;
        put_message(r, 2, &col.base);
    }
    for (i = 0; i < s->groups.n && r->rc == TK_OK; i++) {
        const struct tk_group *e = tk_groups_at(&s->groups, i);
        const uint8_t *key = tk_groups_key(&s->groups, e);
        struct tk_value gv[TK_MAX_GROUP_COLS], av[TK_MAX_AGGS];
        struct tk_eval_ctx ev = {NULL, gv, av};
        Cohort__Value vals[TK_MAX_GROUP_COLS + TK_MAX_AGGS];
        Cohort__Value *vp[TK_MAX_GROUP_COLS + TK_MAX_AGGS];
        Cohort__Row row;
        size_t pos = 0;
        int keep;

        if (p->epsilon > 0) {
            /* The threshold sees the noisy count; the exact number of
             * groups it drops is not released. */
            int64_t noisy;
            if ((r->rc = tk_dp_group(&noisy, av, p, s->noise_key, key, e->key_len, e)) != TK_OK)
                break;
            if (noisy < (int64_t)p->min_group_size)
                continue;
        } else {
            if (e->participants < p->min_group_size) {
                suppressed++;
                continue;
            }
            for (k = 0; k < p->n_aggs; k++)
                tk_agg_final(&av[k], p, k, &e->aggs[k]);
        }
        for (k = 0; k < p->n_group && r->rc == TK_OK; k++)
            if (tk_key_get(&gv[k], key, e->key_len, &pos) != TK_OK)
                r->rc = TK_ERR_MALFORMED;
        if (r->rc != TK_OK || (r->rc = tk_eval(&keep, p->having, p->n_having, &ev)) != TK_OK)
            break;
        if (!keep)
            continue;
        for (k = 0; k < p->n_group; k++)
            tk_value_to_pb(&vals[k], &gv[k]);
        for (k = 0; k < p->n_aggs; k++)
            tk_value_to_pb(&vals[p->n_group + k], &av[k]);
        for (k = 0; k < (uint32_t)p->n_group + p->n_aggs; k++)
            vp[k] = &vals[k];
        cohort__row__init(&row);
        row.n_values = (size_t)p->n_group + p->n_aggs;
        row.values = vp;
        put_message(r, 3, &row.base);
    }
    put_uint(r, 4, s->contributors);
    put_uint(r, 5, suppressed);
    if (p->epsilon > 0 && r->rc == TK_OK)
        put_dp(r);
    flush_part(r);
}

/* Final output: the sealed, signed result. */
static int emit_result(struct tk_call *c, struct tk_session *s)
{
    const struct tk_plan *p = &s->plan;
    struct tk_token *tk = c->tk;
    struct result_writer r;
    uint8_t sig[64], h[32], parts_n[8];
    size_t result_len, k;
    int rc;

    if (s->contributors < p->min_participants)
        return TK_ERR_TOO_FEW;
    if (p->epsilon > 0)
        tk_dp_noise_key(s->noise_key, tk->group_secret, p->query_id, s->lo, s->hi, s->contributors);
    memset(&r, 0, sizeof r);
    r.s = s;
    r.buf = tk_arena_scratch(c->arena, TK_RESULT_PART);
    if (r.buf == NULL)
        return TK_ERR_NO_MEMORY;
    write_result(&r); /* measure */
    if (r.rc != TK_OK)
        return r.rc;
    result_len = tk_field_len(1, TK_QUERY_ID_LEN) + r.total + 1 + tk_varint_len(s->contributors) +
                 tk_field_len(4, tk->cert_len) + tk_field_len(5, sizeof sig);
    /* AggOutput { result (2): SealedResult } as TokenResponse.output (7). */
    tk_w_open(c->out, 7, tk_field_len(2, result_len));
    tk_w_open(c->out, 2, result_len);
    tk_w_bytes(c->out, 1, p->query_id, TK_QUERY_ID_LEN);
    r.out = c->out;
    crypto_generichash_init(&r.digest, NULL, 0, sizeof h);
    write_result(&r); /* seal and write */
    if (r.rc != TK_OK)
        return r.rc;
    if (c->out->overflow)
        return TK_ERR_RESPONSE_SPACE;
    crypto_generichash_final(&r.digest, h, sizeof h);
    tk_w_uint(c->out, 3, s->contributors);
    tk_w_bytes(c->out, 4, tk->cert, tk->cert_len);
    for (k = 0; k < 8; k++)
        parts_n[k] = (uint8_t)(s->contributors >> (8 * k));
    {
        const uint8_t *parts[] = {p->query_id, h, parts_n};
        const size_t lens[] = {TK_QUERY_ID_LEN, sizeof h, sizeof parts_n};
        if ((rc = tk_sign_parts(sig, tk->sign_sk, TK_SIG_RESULT, parts, lens, 3)) != TK_OK)
            return rc;
    }
    tk_w_bytes(c->out, 5, sig, sizeof sig);
    return TK_OK;
}

int tk_do_agg_end(struct tk_call *c, const Cohort__AggEnd *req)
{
    struct tk_session *s = find_session(c->tk, c->arena, req->session.data, req->session.len);
    int rc;

    if (s == NULL)
        return TK_ERR_SESSION;
    if (c->now > s->plan.expires_at)
        return TK_ERR_EXPIRED;
    if (s->stage == COHORT__STAGE__STAGE_FINAL) {
        if ((rc = tk_stage_final_check(s)) != TK_OK)
            return rc;
        rc = emit_result(c, s);
    } else if (s->stage != COHORT__STAGE__STAGE_MERGE) {
        rc = tk_stage_emit(c, s);
    } else {
        if (s->inputs == 0 || (s->level > 1 && s->src_next != s->src_n))
            return TK_ERR_INCOMPLETE;
        /* The final partition covers whole contributors, from chunk 0 of
         * the first to chunk K-1 of the last. */
        if (s->final && (key_chunk(s->lo) != 0 || key_chunk(s->hi) != s->plan.tuples - 1))
            return TK_ERR_INCOMPLETE;
        rc = s->final
                 ? emit_result(c, s)
                 : tk_emit_partial_chunks(c, s, COHORT__PHASE__PHASE_AGGREGATE, s->plan.nchunks);
    }
    if (rc == TK_OK && c->out->overflow)
        rc = TK_ERR_RESPONSE_SPACE; /* the session stays open: retry with more room */
    if (rc == TK_OK)
        tk_replay_note(c->tk, s->plan.query_id, TK_REPLAY_LEVEL(s->stage, s->level), s->partition);
    return rc;
}
