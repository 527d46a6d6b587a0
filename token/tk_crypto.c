/*
 * The token's cryptography, all of it libsodium (DESIGN.md section 3).
 *
 * - Query keys: a per-query master is the keyed BLAKE2b of the query id
 *   under the deployment's group secret; crypto_kdf derives from it the nDet
 *   key and the pseudonym key. Ciphertexts of one query are useless in
 *   another, and a token cannot be made to use another query's keys.
 * - nDet encryption: XChaCha20-Poly1305 with a random 24-byte nonce. The
 *   associated data is the binding (query id, phase, level, partition,
 *   chunk, chunk count, key): the service cannot move a ciphertext.
 * - Signatures: Ed25519 over a domain-separation prefix and the exact bytes
 *   signed, never over a re-encoding.
 * Secrets are wiped by the caller of each helper as soon as it is done.
 */
#include "token/tk_int.h"

#define AD_PREFIX "cohort-ct-v1"
#define AD_MAX                                                                                     \
    (sizeof(AD_PREFIX) - 1 + TK_QUERY_ID_LEN + 1 + 16 + 1 + TK_KEY_LEN + 1 + TK_TAG_BYTES)

void tk_query_id(uint8_t out[TK_QUERY_ID_LEN], const uint8_t *plan, size_t plan_len)
{
    crypto_generichash(out, TK_QUERY_ID_LEN, plan, plan_len, NULL, 0);
}

void tk_result_digest(uint8_t out[32], const uint8_t *const *parts, const size_t *lens, size_t n)
{
    crypto_generichash_state st;
    uint8_t len_le[8];
    size_t i, k;
    crypto_generichash_init(&st, NULL, 0, 32);
    for (i = 0; i < n; i++) {
        for (k = 0; k < 8; k++)
            len_le[k] = (uint8_t)((uint64_t)lens[i] >> (8 * k));
        crypto_generichash_update(&st, len_le, sizeof len_le);
        crypto_generichash_update(&st, parts[i], lens[i]);
    }
    crypto_generichash_final(&st, out, 32);
}

void tk_query_keys(struct tk_query_keys *k, const uint8_t group_secret[32],
                   const uint8_t query_id[TK_QUERY_ID_LEN])
{
    static const char label[] = "cohort-query-v1";
    uint8_t master[crypto_kdf_KEYBYTES];
    crypto_generichash_state st;

    crypto_generichash_init(&st, group_secret, 32, sizeof master);
    crypto_generichash_update(&st, (const uint8_t *)label, sizeof label - 1);
    crypto_generichash_update(&st, query_id, TK_QUERY_ID_LEN);
    crypto_generichash_final(&st, master, sizeof master);
    crypto_kdf_derive_from_key(k->ndet, sizeof k->ndet, 1, "cohortq1", master);
    crypto_kdf_derive_from_key(k->pseudonym, sizeof k->pseudonym, 2, "cohortq1", master);
    crypto_kdf_derive_from_key(k->tag, sizeof k->tag, 3, "cohortq1", master);
    crypto_kdf_derive_from_key(k->check, sizeof k->check, 4, "cohortq1", master);
    sodium_memzero(master, sizeof master);
    sodium_memzero(&st, sizeof st);
}

void tk_query_keys_wipe(struct tk_query_keys *k)
{
    sodium_memzero(k, sizeof *k);
}

static size_t make_ad(uint8_t ad[AD_MAX], const struct tk_binding *b)
{
    size_t n = sizeof(AD_PREFIX) - 1;
    memcpy(ad, AD_PREFIX, n);
    memcpy(ad + n, b->query_id, TK_QUERY_ID_LEN);
    n += TK_QUERY_ID_LEN;
    ad[n++] = (uint8_t)b->phase;
    tk_put_le32(ad + n, b->level);
    tk_put_le32(ad + n + 4, b->partition);
    tk_put_le32(ad + n + 8, b->chunk);
    tk_put_le32(ad + n + 12, b->nchunks);
    n += 16;
    ad[n++] = (uint8_t)b->key_len;
    if (b->key_len > 0)
        memcpy(ad + n, b->key, b->key_len);
    n += b->key_len;
    /* A tagged ciphertext's tag is bound too (s_agg's AD is unchanged). */
    if (b->tag != NULL) {
        ad[n++] = TK_TAG_BYTES;
        memcpy(ad + n, b->tag, TK_TAG_BYTES);
        n += TK_TAG_BYTES;
    }
    return n;
}

static void tag_of(uint8_t *out, size_t out_len, const struct tk_query_keys *k, uint8_t kind,
                   const uint8_t *data, size_t len)
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, k->tag, sizeof k->tag, out_len);
    crypto_generichash_update(&st, &kind, 1);
    if (len > 0)
        crypto_generichash_update(&st, data, len);
    crypto_generichash_final(&st, out, out_len);
    sodium_memzero(&st, sizeof st);
}

void tk_tag_bucket(uint8_t tag[TK_TAG_BYTES], const struct tk_query_keys *k, uint32_t bucket)
{
    uint8_t le[4];
    tk_put_le32(le, bucket);
    tag_of(tag, TK_TAG_BYTES, k, 'b', le, sizeof le);
}

void tk_tag_group(uint8_t tag[TK_TAG_BYTES], const struct tk_query_keys *k, const uint8_t *key,
                  size_t key_len)
{
    tag_of(tag, TK_TAG_BYTES, k, 'g', key, key_len);
}

void tk_tag_dummy(uint8_t tag[TK_TAG_BYTES], const struct tk_query_keys *k)
{
    tag_of(tag, TK_TAG_BYTES, k, 'd', NULL, 0);
}

void tk_origin(uint8_t out[TK_ORIGIN_LEN], const struct tk_query_keys *k,
               const uint8_t pseudonym[TK_CONTRIB_KEY_LEN], uint32_t chunk)
{
    uint8_t in[TK_CONTRIB_KEY_LEN + 4];
    memcpy(in, pseudonym, TK_CONTRIB_KEY_LEN);
    tk_put_le32(in + TK_CONTRIB_KEY_LEN, chunk);
    crypto_shorthash(out, in, sizeof in, k->check);
    crypto_shorthash(out + 8, in, sizeof in, k->check + 16);
}

int tk_key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c != 0)
        return c;
    return al < bl ? -1 : al > bl;
}

uint32_t tk_bucket_of(const struct tk_plan *plan, const struct tk_query_keys *k, const uint8_t *key,
                      size_t key_len)
{
    if (plan->protocol == TK_PROTO_ED_HIST) {
        uint32_t lo = 0, hi = plan->n_bounds; /* the first bound above key */
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (tk_key_cmp(plan->bounds[mid].data, plan->bounds[mid].len, key, key_len) <= 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        return lo;
    } else {
        uint8_t h[8];
        uint64_t v = 0;
        size_t i;
        tag_of(h, sizeof h, k, 'h', key,
               key_len); /* an 8-byte keyed hash: only its value mod B is used */
        for (i = 0; i < sizeof h; i++)
            v |= (uint64_t)h[i] << (8 * i);
        return plan->buckets ? (uint32_t)(v % plan->buckets) : 0;
    }
}

void tk_ndet_seal(uint8_t *out, uint8_t nonce[TK_NONCE_LEN], const uint8_t *plain, size_t plain_len,
                  const struct tk_binding *b, const uint8_t key[32])
{
    uint8_t ad[AD_MAX];
    size_t ad_len = make_ad(ad, b);
    randombytes_buf(nonce, TK_NONCE_LEN);
    crypto_aead_xchacha20poly1305_ietf_encrypt(out, NULL, plain, plain_len, ad, ad_len, NULL, nonce,
                                               key);
}

int tk_ndet_open(uint8_t *plain, const uint8_t *box, size_t box_len,
                 const uint8_t nonce[TK_NONCE_LEN], const struct tk_binding *b,
                 const uint8_t key[32])
{
    uint8_t ad[AD_MAX];
    size_t ad_len;
    if (box_len < TK_TAG_LEN || b->key_len > TK_KEY_LEN)
        return TK_ERR_DECRYPT;
    ad_len = make_ad(ad, b);
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(plain, NULL, NULL, box, box_len, ad, ad_len,
                                                   nonce, key) != 0)
        return TK_ERR_DECRYPT;
    return TK_OK;
}

/*
 * Signatures made by the token cover prefix || parts, where the parts are
 * short (keys, hashes, counters): they are joined in a bounded stack buffer.
 * Callers guarantee the bound; a longer message is an internal error.
 */
#define TK_SIGN_BUF 512u

static size_t join(uint8_t buf[TK_SIGN_BUF], const char *prefix, const uint8_t *const *parts,
                   const size_t *lens, size_t n)
{
    size_t total = strlen(prefix), i;
    for (i = 0; i < n; i++)
        total += lens[i];
    if (total > TK_SIGN_BUF)
        return 0;
    total = strlen(prefix);
    memcpy(buf, prefix, total);
    for (i = 0; i < n; i++) {
        if (lens[i] > 0)
            memcpy(buf + total, parts[i], lens[i]);
        total += lens[i];
    }
    return total;
}

int tk_sign_parts(uint8_t sig[64], const uint8_t sk[64], const char *prefix,
                  const uint8_t *const *parts, const size_t *lens, size_t n)
{
    uint8_t buf[TK_SIGN_BUF];
    size_t len = join(buf, prefix, parts, lens, n);
    if (len == 0)
        return TK_ERR_TOO_LARGE;
    crypto_sign_detached(sig, NULL, buf, len, sk);
    return TK_OK;
}

static size_t direct_message(uint8_t *buf, size_t cap, const char *prefix, const uint8_t *part,
                             size_t len)
{
    size_t pl = strlen(prefix);
    if (pl + len > cap)
        return 0;
    memcpy(buf, prefix, pl);
    memcpy(buf + pl, part, len);
    return pl + len;
}

/* Verify sig over prefix || msg for a message of any size, with the arena. */
static int verify_long(struct tk_arena *a, const uint8_t sig[64], const uint8_t pk[32],
                       const char *prefix, const uint8_t *msg, size_t len)
{
    size_t mark = tk_arena_mark(a), cap = strlen(prefix) + len, n;
    uint8_t *buf = tk_arena_scratch(a, cap);
    int rc;
    if (buf == NULL)
        return TK_ERR_NO_MEMORY;
    n = direct_message(buf, cap, prefix, msg, len);
    rc = crypto_sign_verify_detached(sig, buf, n, pk) == 0 ? TK_OK : TK_ERR_BAD_SIGNATURE;
    tk_arena_release(a, mark);
    return rc;
}

int tk_verify_signed(struct tk_arena *a, const uint8_t sig[64], const uint8_t pk[32],
                     const char *prefix, const uint8_t *msg, size_t len)
{
    return verify_long(a, sig, pk, prefix, msg, len);
}

/* Decode a certificate body and check its shape, without its signature. */
static int cert_decode(Cohort__CertBody **body, struct tk_arena *a, const Cohort__Certificate *c)
{
    Cohort__CertBody *b;
    int rc = TK_OK;

    if (c == NULL || c->body.len == 0 || c->body.len > TK_CERT_MAX || c->signature.len != 64)
        return TK_ERR_BAD_CERT;
    b = (Cohort__CertBody *)tk_unpack(a, &cohort__cert_body__descriptor, c->body.data, c->body.len,
                                      &rc);
    if (b == NULL)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_BAD_CERT;
    if (b->sign_pk.len != TK_PK_LEN || b->issuer_pk.len != TK_PK_LEN ||
        (b->box_pk.len != 0 && b->box_pk.len != 32) || b->version != 1)
        return TK_ERR_BAD_CERT;
    *body = b;
    return TK_OK;
}

int tk_cert_check(Cohort__CertBody **body, struct tk_arena *a, const Cohort__Certificate *c,
                  const uint8_t *issuer_pk, int64_t now)
{
    Cohort__CertBody *b = NULL;
    int rc;

    if ((rc = cert_decode(&b, a, c)) != TK_OK)
        return rc;
    if (issuer_pk != NULL) {
        if (sodium_memcmp(b->issuer_pk.data, issuer_pk, TK_PK_LEN) != 0)
            return TK_ERR_BAD_CERT;
        rc = verify_long(a, c->signature.data, b->issuer_pk.data, TK_SIG_CERT, c->body.data,
                         c->body.len);
        if (rc == TK_ERR_BAD_SIGNATURE)
            return TK_ERR_BAD_CERT;
        if (rc != TK_OK)
            return rc;
    }
    if (now < b->not_before || now > b->not_after)
        return TK_ERR_EXPIRED;
    *body = b;
    return TK_OK;
}

int tk_cert_verify(struct tk_cert_info *out, const uint8_t *cert, size_t cert_len,
                   const uint8_t issuer_pk[TK_PK_LEN], int64_t now, uint8_t *scratch,
                   size_t scratch_len)
{
    struct tk_arena a;
    Cohort__Certificate *c;
    Cohort__CertBody *b = NULL;
    int rc = TK_OK;
    size_t n;

    if (out == NULL || cert == NULL || scratch == NULL || issuer_pk == NULL)
        return TK_ERR_MALFORMED;
    if (cert_len > TK_CERT_MAX + 128)
        return TK_ERR_TOO_LARGE;
    tk_arena_init(&a, scratch, scratch_len, 0);
    c = (Cohort__Certificate *)tk_unpack(&a, &cohort__certificate__descriptor, cert, cert_len, &rc);
    if (c == NULL)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_BAD_CERT;
    rc = tk_cert_check(&b, &a, c, issuer_pk, now);
    if (rc != TK_OK)
        return rc;
    memset(out, 0, sizeof *out);
    out->role = b->role;
    memcpy(out->sign_pk, b->sign_pk.data, TK_PK_LEN);
    if (b->box_pk.len == 32)
        memcpy(out->box_pk, b->box_pk.data, 32);
    memcpy(out->issuer_pk, b->issuer_pk.data, TK_PK_LEN);
    out->not_before = b->not_before;
    out->not_after = b->not_after;
    n = strlen(b->subject);
    if (n >= sizeof out->subject)
        n = sizeof out->subject - 1;
    memcpy(out->subject, b->subject, n);
    out->subject[n] = '\0';
    return TK_OK;
}
