/*
 * The token's log: encrypted, authenticated, hash-chained records on
 * untrusted flash, and the image of the token's secure memory that pins
 * the log down.
 *
 * Layout. The flash is a set of numbered append-only segments; exactly one
 * is live. Record i (from 0) of segment s is
 *
 *     [box length: 4 bytes LE][nonce: 24 bytes][XChaCha20-Poly1305 box]
 *
 * whose plaintext is one packed StoreRecord of at most TK_RECORD_MAX bytes
 * and whose associated data is "cohort-rec-v2" || s (LE32) || i (LE64) ||
 * H_i. The chain is H_0 = BLAKE2b-256_K("cohort-chain-v1" || s) and
 * H_{i+1} = BLAKE2b-256_K(H_i || the record's bytes as on flash), keyed by
 * a chain key. Record and chain keys are derived from the storage key
 * (crypto_kdf, context "cohortlg", ids 1 and 2), which never leaves the
 * token. A record therefore authenticates its segment, its index and every
 * record before it; the chain head after the last committed record, kept
 * in secure memory, authenticates the log's exact contents and length.
 *
 * Secure memory. After every commit the token hands the host an image of
 * its state (a SecureImage: keys, certificate, authorities, the log's
 * segment, length, record count and head, row-id and audit counters, the
 * replay and plan caches) followed by its BLAKE2b-256 digest, and advances
 * a monotonic counter the image also carries. A real token keeps both in
 * the chip; a software token keeps them in two files (participant/). The
 * commit order is: sync the flash, save the image (counter + 1), set the
 * counter. A crash between the last two leaves an image one ahead of the
 * counter, which tk_token_open finishes; an image behind the counter is a
 * rollback; anything else that does not match is tampering.
 *
 * What the host can do, and what it gets:
 * - cut, reorder, substitute (from another token, another segment or an
 *   aborted write at the same index), duplicate or roll back records: the
 *   chain head or an authentication fails, at open or at the next scan
 *   (every scan re-verifies: the flash may change under an open token).
 *   The token then sets tk->tampered and refuses every request with
 *   TK_ERR_TAMPERED until it is reopened from a sound flash.
 * - roll back the image: the counter catches it (TK_ERR_ROLLBACK). A host
 *   that rolls back the image, the counter and the flash together is not
 *   caught by a software token; a chip's counter cannot be rolled back.
 * - append bytes past the committed end: they are an interrupted write,
 *   cut off at open and before the next append, never read.
 *
 * RAM. A scan holds one record at a time in arena scratch, decrypted in
 * place; a rewrite holds one record read and whatever its caller is
 * writing. Nothing here depends on the size of the log.
 */
#include "token/tk_int.h"

#define REC_AD "cohort-rec-v2"
#define REC_AD_LEN (sizeof REC_AD - 1 + 4 + 8 + 32)
#define CHAIN_INIT "cohort-chain-v1"
#define KDF_CONTEXT "cohortlg"
#define KDF_RECORD 1
#define KDF_CHAIN 2
#define IMAGE_VERSION 1u
#define DIGEST_LEN 32u
#define REPLAY_SLOT_BYTES (TK_QUERY_TAG_LEN + 4 + 4)
#define PLAN_SLOT_BYTES (32 + 8)
#define REPLAY_BYTES (TK_REPLAY_SLOTS * REPLAY_SLOT_BYTES + 4 + TK_PLAN_CACHE * PLAN_SLOT_BYTES + 4)

struct log_keys {
    uint8_t rec[32];
    uint8_t chain[32];
};

static void keys_derive(struct log_keys *k, const uint8_t storage_key[32])
{
    crypto_kdf_derive_from_key(k->rec, sizeof k->rec, KDF_RECORD, KDF_CONTEXT, storage_key);
    crypto_kdf_derive_from_key(k->chain, sizeof k->chain, KDF_CHAIN, KDF_CONTEXT, storage_key);
}

static void chain_start(uint8_t h[32], const struct log_keys *k, uint32_t segment)
{
    uint8_t in[sizeof CHAIN_INIT - 1 + 4];
    memcpy(in, CHAIN_INIT, sizeof CHAIN_INIT - 1);
    tk_put_le32(in + sizeof CHAIN_INIT - 1, segment);
    crypto_generichash(h, 32, in, sizeof in, k->chain, sizeof k->chain);
}

static void chain_next(uint8_t out[32], const uint8_t h[32], const uint8_t *rec, size_t n,
                       const struct log_keys *k)
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, k->chain, sizeof k->chain, 32);
    crypto_generichash_update(&st, h, 32);
    crypto_generichash_update(&st, rec, n);
    crypto_generichash_final(&st, out, 32);
}

static void rec_ad(uint8_t ad[REC_AD_LEN], uint32_t segment, uint64_t index, const uint8_t h[32])
{
    memcpy(ad, REC_AD, sizeof REC_AD - 1);
    tk_put_le32(ad + sizeof REC_AD - 1, segment);
    tk_put_le64(ad + sizeof REC_AD - 1 + 4, index);
    memcpy(ad + sizeof REC_AD - 1 + 12, h, 32);
}

/* An empty log in `segment`. */
static void state_start(struct tk_log_state *st, const uint8_t storage_key[32], uint32_t segment)
{
    struct log_keys k;
    keys_derive(&k, storage_key);
    memset(st, 0, sizeof *st);
    st->segment = segment;
    chain_start(st->head, &k, segment);
    sodium_memzero(&k, sizeof k);
}

static bool same_state(const struct tk_log_state *a, const struct tk_log_state *b)
{
    return a->segment == b->segment && a->length == b->length && a->records == b->records &&
           memcmp(a->head, b->head, 32) == 0;
}

static int usable(const struct tk_token *tk)
{
    if (tk->tampered)
        return TK_ERR_TAMPERED;
    if (tk->store_failed)
        return TK_ERR_STORE;
    return TK_OK;
}

static int tampered(struct tk_token *tk)
{
    tk->tampered = true;
    return TK_ERR_TAMPERED;
}

/* ------------------------------------------------------------ appends */

/* Cut whatever follows the appended end of the work segment (an aborted
 * write); a segment shorter than what the token wrote has been tampered. */
static int cut_tail(struct tk_token *tk)
{
    const struct tk_flash *f = &tk->flash;
    uint64_t size;
    if (f->size(f->ctx, tk->work.segment, &size) != 0)
        return TK_ERR_STORE;
    if (size == tk->work.length)
        return TK_OK;
    if (size < tk->work.length)
        return tampered(tk);
    return f->truncate(f->ctx, tk->work.segment, tk->work.length) == 0 ? TK_OK : TK_ERR_STORE;
}

int tk_log_append_sealed(struct tk_token *tk, uint8_t *buf, size_t plain_len)
{
    struct tk_log_state *w = &tk->work;
    struct log_keys k;
    uint8_t ad[REC_AD_LEN], next[32];
    size_t box_len = plain_len + TK_TAG_LEN;
    int rc;

    if ((rc = usable(tk)) != TK_OK)
        return rc;
    if (plain_len > TK_RECORD_MAX)
        return TK_ERR_TOO_LARGE;
    if ((rc = cut_tail(tk)) != TK_OK)
        return rc;
    tk_put_le32(buf, (uint32_t)box_len);
    randombytes_buf(buf + 4, TK_NONCE_LEN);
    keys_derive(&k, tk->storage_key);
    rec_ad(ad, w->segment, w->records, w->head);
    crypto_aead_xchacha20poly1305_ietf_encrypt(buf + TK_REC_HDR, NULL, buf + TK_REC_HDR, plain_len,
                                               ad, sizeof ad, NULL, buf + 4, k.rec);
    chain_next(next, w->head, buf, TK_REC_HDR + box_len, &k);
    sodium_memzero(&k, sizeof k);
    if (tk->flash.append(tk->flash.ctx, w->segment, buf, TK_REC_HDR + box_len) != 0)
        return TK_ERR_STORE; /* a partial write is cut off before the next append */
    memcpy(w->head, next, 32);
    w->length += TK_REC_HDR + box_len;
    w->records++;
    return TK_OK;
}

int tk_log_append(struct tk_token *tk, struct tk_arena *a, const Cohort__StoreRecord *rec)
{
    size_t n = cohort__store_record__get_packed_size(rec), mark = tk_arena_mark(a);
    uint8_t *buf;
    int rc;

    if (n > TK_RECORD_MAX)
        return TK_ERR_TOO_LARGE;
    buf = tk_arena_scratch(a, TK_REC_HDR + n + TK_TAG_LEN);
    if (buf == NULL)
        return TK_ERR_NO_MEMORY;
    cohort__store_record__pack(rec, buf + TK_REC_HDR);
    rc = tk_log_append_sealed(tk, buf, n);
    sodium_memzero(buf, TK_REC_HDR + n + TK_TAG_LEN);
    tk_arena_release(a, mark);
    return rc;
}

/* -------------------------------------------------------------- image */

static void replay_pack(uint8_t out[REPLAY_BYTES], const struct tk_token *tk)
{
    uint8_t *p = out;
    size_t i;
    for (i = 0; i < TK_REPLAY_SLOTS; i++) {
        memcpy(p, tk->replay[i].query, TK_QUERY_TAG_LEN);
        tk_put_le32(p + TK_QUERY_TAG_LEN, tk->replay[i].level);
        tk_put_le32(p + TK_QUERY_TAG_LEN + 4, tk->replay[i].partition);
        p += REPLAY_SLOT_BYTES;
    }
    tk_put_le32(p, tk->replay_next);
    p += 4;
    for (i = 0; i < TK_PLAN_CACHE; i++) {
        memcpy(p, tk->plans[i].digest, 32);
        tk_put_le64(p + 32, (uint64_t)tk->plans[i].expires_at);
        p += PLAN_SLOT_BYTES;
    }
    tk_put_le32(p, tk->plan_next);
}

static void replay_unpack(struct tk_token *tk, const uint8_t in[REPLAY_BYTES])
{
    const uint8_t *p = in;
    size_t i;
    for (i = 0; i < TK_REPLAY_SLOTS; i++) {
        memcpy(tk->replay[i].query, p, TK_QUERY_TAG_LEN);
        tk->replay[i].level = tk_get_le32(p + TK_QUERY_TAG_LEN);
        tk->replay[i].partition = tk_get_le32(p + TK_QUERY_TAG_LEN + 4);
        p += REPLAY_SLOT_BYTES;
    }
    tk->replay_next = tk_get_le32(p);
    p += 4;
    for (i = 0; i < TK_PLAN_CACHE; i++) {
        memcpy(tk->plans[i].digest, p, 32);
        tk->plans[i].expires_at = (int64_t)tk_get_le64(p + 32);
        p += PLAN_SLOT_BYTES;
    }
    tk->plan_next = tk_get_le32(p);
}

/*
 * The SecureImage of tk with the log at *log, next_row_id and counter,
 * then its digest, into out. Field numbers are those of proto/cohort.proto;
 * the token writes the image by hand (it holds secrets, and this way they
 * are copied once, into out, which the caller wipes).
 */
static int image_write(const struct tk_token *tk, const struct tk_log_state *log,
                       uint64_t next_row_id, uint64_t counter, uint8_t *out, size_t cap,
                       size_t *len)
{
    struct tk_wbuf w = {out, cap < DIGEST_LEN ? 0 : cap - DIGEST_LEN, 0, false};
    uint8_t replay[REPLAY_BYTES];
    size_t i;

    tk_w_uint(&w, 1, IMAGE_VERSION);
    tk_w_uint(&w, 2, counter);
    tk_w_uint(&w, 3, tk->flags);
    if (tk_has_flag(tk, TK_FLAG_KEYS)) {
        tk_w_bytes(&w, 4, tk->sign_sk, sizeof tk->sign_sk);
        tk_w_bytes(&w, 5, tk->box_sk, sizeof tk->box_sk);
    }
    if (tk_has_flag(tk, TK_FLAG_PROVISIONED))
        tk_w_bytes(&w, 6, tk->group_secret, sizeof tk->group_secret);
    tk_w_bytes(&w, 7, tk->storage_key, sizeof tk->storage_key);
    if (tk->cert_len)
        tk_w_bytes(&w, 8, tk->cert, tk->cert_len); /* a packed Certificate is its field's payload */
    for (i = 0; i < tk->n_authorities; i++)
        tk_w_bytes(&w, 9, tk->authorities[i], TK_PK_LEN);
    tk_w_uint(&w, 10, log->segment);
    tk_w_uint(&w, 11, log->length);
    tk_w_uint(&w, 12, log->records);
    tk_w_bytes(&w, 13, log->head, 32);
    tk_w_uint(&w, 14, next_row_id);
    tk_w_uint(&w, 15, tk->audit_seq);
    replay_pack(replay, tk);
    tk_w_bytes(&w, 17, replay, sizeof replay);
    if (w.overflow) {
        sodium_memzero(out, cap);
        return TK_ERR_RESPONSE_SPACE;
    }
    crypto_generichash(out + w.len, DIGEST_LEN, out, w.len, NULL, 0);
    *len = w.len + DIGEST_LEN;
    return TK_OK;
}

int tk_token_image(const struct tk_token *tk, uint8_t *out, size_t cap, size_t *len)
{
    *len = 0;
    if (tk == NULL || tk->magic != TK_MAGIC)
        return TK_ERR_NOT_PROVISIONED;
    return image_write(tk, &tk->log, tk->batch_open ? tk->batch_row_id : tk->next_row_id,
                       tk->counter, out, cap, len);
}

static bool bytes_len(const ProtobufCBinaryData *b, size_t n)
{
    return b->len == n;
}

/* Install a decoded image in tk; TK_ERR_TAMPERED if it is not one the
 * token could have written. */
static int image_load(struct tk_token *tk, const Cohort__SecureImage *im)
{
    size_t i;
    bool keys = (im->flags & TK_FLAG_KEYS) != 0, prov = (im->flags & TK_FLAG_PROVISIONED) != 0;

    if (im->version != IMAGE_VERSION || (im->flags & ~(TK_FLAG_KEYS | TK_FLAG_PROVISIONED)) != 0 ||
        (prov && !keys) || im->counter == 0)
        return TK_ERR_TAMPERED;
    if (!bytes_len(&im->sign_sk, keys ? 64 : 0) || !bytes_len(&im->box_sk, keys ? 32 : 0) ||
        !bytes_len(&im->group_secret, prov ? 32 : 0) || !bytes_len(&im->storage_key, 32) ||
        !bytes_len(&im->log_head, 32) || !bytes_len(&im->replay, REPLAY_BYTES) ||
        im->n_authorities > TK_MAX_AUTHORITIES || (prov && im->device_cert == NULL))
        return TK_ERR_TAMPERED;
    for (i = 0; i < im->n_authorities; i++)
        if (!bytes_len(&im->authorities[i], TK_PK_LEN))
            return TK_ERR_TAMPERED;
    tk->flags = im->flags;
    if (keys) {
        memcpy(tk->sign_sk, im->sign_sk.data, 64);
        memcpy(tk->box_sk, im->box_sk.data, 32);
        crypto_sign_ed25519_sk_to_pk(tk->sign_pk, tk->sign_sk);
        if (crypto_scalarmult_base(tk->box_pk, tk->box_sk) != 0)
            return TK_ERR_TAMPERED;
    }
    if (prov)
        memcpy(tk->group_secret, im->group_secret.data, 32);
    memcpy(tk->storage_key, im->storage_key.data, 32);
    if (im->device_cert != NULL) {
        size_t n = cohort__certificate__get_packed_size(im->device_cert);
        if (n > TK_CERT_MAX)
            return TK_ERR_TAMPERED;
        cohort__certificate__pack(im->device_cert, tk->cert);
        tk->cert_len = (uint16_t)n;
    }
    for (i = 0; i < im->n_authorities; i++)
        memcpy(tk->authorities[i], im->authorities[i].data, TK_PK_LEN);
    tk->n_authorities = (uint8_t)im->n_authorities;
    tk->log.segment = im->segment;
    tk->log.length = im->log_length;
    tk->log.records = im->log_records;
    memcpy(tk->log.head, im->log_head.data, 32);
    tk->work = tk->log;
    tk->counter = im->counter;
    tk->next_row_id = im->next_row_id;
    tk->audit_seq = im->audit_seq;
    replay_unpack(tk, im->replay.data);
    return TK_OK;
}

/* ------------------------------------------------------------- commit */

int tk_log_commit(struct tk_token *tk, struct tk_arena *a)
{
    const struct tk_secure *s = &tk->secure;
    uint64_t next = tk->counter + 1;
    int rc;

    if ((rc = usable(tk)) != TK_OK)
        return rc;
    if (tk->flash.sync != NULL && !same_state(&tk->work, &tk->log) &&
        tk->flash.sync(tk->flash.ctx, tk->work.segment) != 0)
        return TK_ERR_STORE;
    if (s->save != NULL) {
        size_t mark = tk_arena_mark(a), len = 0;
        uint8_t *img = tk_arena_scratch(a, TK_IMAGE_MAX);
        if (img == NULL)
            return TK_ERR_NO_MEMORY;
        rc = image_write(tk, &tk->work, tk->next_row_id, next, img, TK_IMAGE_MAX, &len);
        if (rc == TK_OK && s->save(s->ctx, img, len) != 0) {
            /* The image may or may not have replaced the last one: only
             * reopening from what the host kept can tell. */
            tk->store_failed = true;
            rc = TK_ERR_STORE;
        }
        sodium_memzero(img, TK_IMAGE_MAX);
        tk_arena_release(a, mark);
        if (rc != TK_OK)
            return rc == TK_ERR_RESPONSE_SPACE ? TK_ERR_TOO_LARGE : rc;
    }
    if (s->counter_set != NULL && s->counter_set(s->ctx, next) != 0) {
        tk->store_failed = true;
        return TK_ERR_STORE;
    }
    tk->log = tk->work;
    tk->counter = next;
    tk->batch_open = false;
    return TK_OK;
}

void tk_log_abort(struct tk_token *tk)
{
    const struct tk_flash *f = &tk->flash;
    uint64_t size;
    bool pending = tk->batch_open || !same_state(&tk->work, &tk->log);

    if (tk->batch_open) {
        tk->next_row_id = tk->batch_row_id;
        tk->batch_open = false;
    }
    if (!pending)
        return;
    memset(tk->known_schema, 0, sizeof tk->known_schema);
    if (tk->store_failed)
        return;
    if (tk->work.segment != tk->log.segment)
        (void)f->remove(f->ctx, tk->work.segment);
    tk->work = tk->log;
    /* Cut the aborted tail now if the flash lets us; else before the next append. */
    if (!tk->tampered && f->size(f->ctx, tk->log.segment, &size) == 0 && size > tk->log.length)
        (void)f->truncate(f->ctx, tk->log.segment, tk->log.length);
}

/* --------------------------------------------------------------- scans */

typedef int (*visit_fn)(void *ctx, struct tk_arena *a, uint8_t *buf, size_t plain_len,
                        uint64_t index);

/* Read from the flash; a read that fails on a segment cut below what was
 * written is tampering, any other failure is the host's I/O. */
static int flash_read(struct tk_token *tk, const struct tk_log_state *st, uint64_t off,
                      uint8_t *out, size_t n)
{
    const struct tk_flash *f = &tk->flash;
    uint64_t size;
    if (f->read(f->ctx, st->segment, off, out, n) == 0)
        return TK_OK;
    if (f->size(f->ctx, st->segment, &size) == 0 && size < st->length)
        return tampered(tk);
    return TK_ERR_STORE;
}

/*
 * Walk the log *st record by record: read, hash into the chain, decrypt in
 * place, visit (buf holds the header, then the plaintext), wipe, release.
 * After TK_SCAN_STOP the records are only read and hashed.
 */
static int scan_state(struct tk_token *tk, struct tk_arena *a, const struct tk_log_state *st,
                      visit_fn visit, void *ctx)
{
    struct log_keys k;
    uint8_t h[32], next[32] = {0}, ad[REC_AD_LEN], hdr[TK_REC_HDR];
    uint64_t off = 0, i;
    bool stopped = false;
    int rc = TK_OK;

    keys_derive(&k, tk->storage_key);
    chain_start(h, &k, st->segment);
    for (i = 0; i < st->records && rc == TK_OK; i++) {
        size_t mark = tk_arena_mark(a), box_len;
        uint8_t *buf;

        if (st->length - off < TK_REC_HDR) {
            rc = tampered(tk);
            break;
        }
        if ((rc = flash_read(tk, st, off, hdr, TK_REC_HDR)) != TK_OK)
            break;
        box_len = tk_get_le32(hdr);
        if (box_len < TK_TAG_LEN || box_len > TK_RECORD_MAX + TK_TAG_LEN ||
            st->length - off - TK_REC_HDR < box_len) {
            rc = tampered(tk);
            break;
        }
        buf = tk_arena_scratch(a, TK_REC_HDR + box_len);
        if (buf == NULL) {
            rc = TK_ERR_NO_MEMORY;
            break;
        }
        memcpy(buf, hdr, TK_REC_HDR);
        rc = flash_read(tk, st, off + TK_REC_HDR, buf + TK_REC_HDR, box_len);
        if (rc == TK_OK)
            chain_next(next, h, buf, TK_REC_HDR + box_len, &k);
        if (rc == TK_OK && !stopped) {
            rec_ad(ad, st->segment, i, h);
            if (crypto_aead_xchacha20poly1305_ietf_decrypt(buf + TK_REC_HDR, NULL, NULL,
                                                           buf + TK_REC_HDR, box_len, ad, sizeof ad,
                                                           buf + 4, k.rec) != 0) {
                rc = tampered(tk);
            } else {
                rc = visit != NULL ? visit(ctx, a, buf, box_len - TK_TAG_LEN, i) : TK_OK;
                sodium_memzero(buf + TK_REC_HDR, box_len - TK_TAG_LEN);
                if (rc == TK_SCAN_STOP) {
                    stopped = true;
                    rc = TK_OK;
                }
            }
        }
        tk_arena_release(a, mark);
        memcpy(h, next, 32);
        off += TK_REC_HDR + box_len;
    }
    if (rc == TK_OK && (off != st->length || sodium_memcmp(h, st->head, 32) != 0))
        rc = tampered(tk);
    sodium_memzero(&k, sizeof k);
    return rc;
}

struct plain_visit {
    tk_record_fn fn;
    void *ctx;
};

static int visit_plain(void *ctx, struct tk_arena *a, uint8_t *buf, size_t plain_len,
                       uint64_t index)
{
    const struct plain_visit *v = ctx;
    return v->fn(v->ctx, a, buf + TK_REC_HDR, plain_len, index);
}

int tk_log_scan(struct tk_token *tk, struct tk_arena *a, bool include_work, tk_record_fn fn,
                void *ctx)
{
    struct plain_visit v = {fn, ctx};
    int rc;
    if ((rc = usable(tk)) != TK_OK)
        return rc;
    return scan_state(tk, a, include_work ? &tk->work : &tk->log, fn ? visit_plain : NULL, &v);
}

int tk_record_body(const uint8_t *plain, size_t len, uint32_t *kind, const uint8_t **body,
                   size_t *body_len)
{
    struct tk_wfield f;
    size_t pos = 0;
    if (tk_wire_next(plain, len, &pos, &f) != 1 || f.wire_type != 2 || f.field < TK_REC_TABLE ||
        f.field > TK_REC_LAST || pos != len)
        return TK_ERR_TAMPERED;
    *kind = f.field;
    *body = f.data;
    *body_len = f.len;
    return TK_OK;
}

int tk_record_kind(const uint8_t *plain, size_t len, uint32_t kind, const uint8_t **body,
                   size_t *body_len)
{
    uint32_t k;
    int rc;
    if ((rc = tk_record_body(plain, len, &k, body, body_len)) != TK_OK)
        return rc;
    return k == kind ? 1 : 0;
}

/* ------------------------------------------------------------ rewrite */

struct rewrite {
    struct tk_token *tk;
    tk_keep_fn keep;
    void *ctx;
};

static int visit_rewrite(void *ctx, struct tk_arena *a, uint8_t *buf, size_t plain_len,
                         uint64_t index)
{
    const struct rewrite *r = ctx;
    bool keep = false;
    int rc;
    (void)index;
    if ((rc = r->keep(r->ctx, a, buf + TK_REC_HDR, plain_len, &keep)) != TK_OK)
        return rc > 0 ? TK_ERR_STORE : rc;
    return keep ? tk_log_append_sealed(r->tk, buf, plain_len) : TK_OK;
}

int tk_log_rewrite(struct tk_token *tk, struct tk_arena *a, tk_keep_fn keep, void *ctx)
{
    const struct tk_flash *f = &tk->flash;
    struct rewrite r = {tk, keep, ctx};
    struct tk_log_state old;
    bool again;
    int rc;

    if ((rc = usable(tk)) != TK_OK)
        return rc;
    tk_log_abort(tk);
    old = tk->log;
    if (old.segment == UINT32_MAX)
        return TK_ERR_TOO_LARGE;
    if (f->remove(f->ctx, old.segment + 1) != 0)
        return TK_ERR_STORE;
    state_start(&tk->work, tk->storage_key, old.segment + 1);
    do {
        again = false;
        rc = scan_state(tk, a, &old, visit_rewrite, &r);
        if (rc == TK_OK)
            rc = keep(ctx, a, NULL, 0, &again);
    } while (rc == TK_OK && again);
    if (rc == TK_OK)
        rc = tk_log_commit(tk, a);
    if (rc != TK_OK) {
        if (!tk->store_failed) {
            tk->work = tk->log;
            (void)f->remove(f->ctx, old.segment + 1);
        }
        return rc > 0 ? TK_ERR_STORE : rc;
    }
    memset(tk->known_schema, 0, sizeof tk->known_schema);
    /* Committed: the old segment is garbage now, and must go. */
    return f->remove(f->ctx, old.segment) == 0 ? TK_OK : TK_ERR_STORE;
}

/* ---------------------------------------------------- init and open */

static bool flash_ok(const struct tk_flash *f)
{
    return f != NULL && f->append != NULL && f->read != NULL && f->size != NULL &&
           f->truncate != NULL && f->remove != NULL;
}

static bool secure_ok(const struct tk_secure *s)
{
    return s == NULL || (s->counter_get == NULL) == (s->counter_set == NULL);
}

static int counter_read(const struct tk_secure *s, uint64_t *value)
{
    int rc;
    *value = 0;
    if (s == NULL || s->counter_get == NULL)
        return TK_OK;
    rc = s->counter_get(s->ctx, value);
    if (rc == TK_ERR_TAMPERED)
        return rc;
    return rc == 0 ? TK_OK : TK_ERR_STORE;
}

int tk_token_init(struct tk_token *tk, const struct tk_flash *flash, const struct tk_secure *secure,
                  uint8_t *arena, size_t arena_len)
{
    struct tk_arena a;
    uint64_t size, counter;
    int rc;

    if (tk == NULL || !flash_ok(flash) || !secure_ok(secure))
        return TK_ERR_MALFORMED;
    if (arena == NULL || arena_len < TK_ARENA_MIN)
        return TK_ERR_NO_MEMORY;
    if (flash->size(flash->ctx, 0, &size) != 0 || size != 0)
        return TK_ERR_STORE;
    if ((rc = counter_read(secure, &counter)) != TK_OK)
        return rc;
    memset(tk, 0, sizeof *tk);
    tk->magic = TK_MAGIC;
    tk->flash = *flash;
    if (secure != NULL)
        tk->secure = *secure;
    randombytes_buf(tk->storage_key, sizeof tk->storage_key);
    state_start(&tk->log, tk->storage_key, 0);
    tk->work = tk->log;
    tk->counter = counter;
    tk->next_row_id = 1;
    tk_arena_init(&a, arena, arena_len, 0);
    rc = tk_log_commit(tk, &a);
    if (rc != TK_OK)
        tk_token_wipe(tk);
    return rc;
}

int tk_token_open(struct tk_token *tk, const uint8_t *image, size_t image_len,
                  const struct tk_flash *flash, const struct tk_secure *secure, uint8_t *arena,
                  size_t arena_len)
{
    Cohort__SecureImage *im;
    struct tk_arena a;
    uint8_t digest[DIGEST_LEN];
    uint64_t counter = 0, size, saved;
    int rc = TK_OK;

    if (tk == NULL || image == NULL || !flash_ok(flash) || !secure_ok(secure))
        return TK_ERR_MALFORMED;
    if (arena == NULL || arena_len < TK_ARENA_MIN)
        return TK_ERR_NO_MEMORY;
    memset(tk, 0, sizeof *tk);
    if (image_len <= DIGEST_LEN || image_len > TK_IMAGE_MAX)
        return TK_ERR_TAMPERED;
    crypto_generichash(digest, sizeof digest, image, image_len - DIGEST_LEN, NULL, 0);
    if (sodium_memcmp(digest, image + image_len - DIGEST_LEN, DIGEST_LEN) != 0)
        return TK_ERR_TAMPERED;
    tk_arena_init(&a, arena, arena_len, 0);
    im = (Cohort__SecureImage *)tk_unpack(&a, &cohort__secure_image__descriptor, image,
                                          image_len - DIGEST_LEN, &rc);
    if (im == NULL) {
        rc = rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_TAMPERED;
        goto fail;
    }
    if ((rc = image_load(tk, im)) != TK_OK)
        goto fail;
    saved = im->counter;
    tk->flash = *flash;
    if (secure != NULL)
        tk->secure = *secure;

    /* The image against the monotonic counter. */
    if ((rc = counter_read(secure, &counter)) != TK_OK)
        goto fail;
    if (tk->secure.counter_get != NULL) {
        if (saved < counter) {
            rc = TK_ERR_ROLLBACK;
            goto fail;
        }
        if (saved > counter + 1) {
            rc = TK_ERR_TAMPERED;
            goto fail;
        }
    }

    /* The flash against the image: never shorter; longer is an
     * interrupted write; other segments are an interrupted compaction. */
    if (flash->size(flash->ctx, tk->log.segment, &size) != 0) {
        rc = TK_ERR_STORE;
        goto fail;
    }
    if (size < tk->log.length) {
        rc = TK_ERR_TAMPERED;
        goto fail;
    }
    if ((size > tk->log.length &&
         flash->truncate(flash->ctx, tk->log.segment, tk->log.length) != 0) ||
        (tk->log.segment > 0 && flash->remove(flash->ctx, tk->log.segment - 1) != 0) ||
        (tk->log.segment < UINT32_MAX && flash->remove(flash->ctx, tk->log.segment + 1) != 0)) {
        rc = TK_ERR_STORE;
        goto fail;
    }
    tk_arena_release(&a, a.cap); /* the decoded image is no longer needed */
    sodium_memzero(arena, arena_len);
    tk_arena_init(&a, arena, arena_len, 0);
    if ((rc = scan_state(tk, &a, &tk->log, NULL, NULL)) != TK_OK)
        goto fail;
    /* A commit interrupted between saving the image and the counter. */
    if (tk->secure.counter_set != NULL && saved == counter + 1 &&
        tk->secure.counter_set(tk->secure.ctx, saved) != 0) {
        rc = TK_ERR_STORE;
        goto fail;
    }
    tk->magic = TK_MAGIC;
    sodium_memzero(arena, arena_len);
    return TK_OK;

fail:
    tk_token_wipe(tk);
    sodium_memzero(arena, arena_len);
    return rc;
}
