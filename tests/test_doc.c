/*
 * The owner's documents in the token (token/tk_doc.c), over memory flash.
 *
 * - Round trips of 0 B, 1 B, 4 KiB and 16 MiB through a token with the
 *   least arena, written and read in 64 KiB pieces (and read in odd
 *   pieces), the arena's peak staying within it; the file's hash and sizes
 *   are what the DocRef says; neither the plaintext nor the key appears in
 *   the ciphertext, and the key is in the token's log record only.
 * - Revisions: an update on the current revision gives revision + 1, a
 *   stale one is TK_ERR_CONFLICT and changes nothing; old revisions stay
 *   readable until the document is deleted.
 * - Tampered files, each refused with its exact code.
 * - Records survive a reopen of the token from its image; DocList pages;
 *   DocDelete rewrites the log without the document.
 * - Hostile requests get their exact codes and change nothing; a document
 *   session and an aggregation session never answer for each other.
 */
/* token/tk_int.h first: tk_fixture.h then has its helpers that read the log. */
#include "token/tk_int.h"

#include "tk_fixture.h"

#define PIECE (64u * 1024u)
#define BIG (16u * 1024u * 1024u)

struct ref {
    uint8_t id[TK_DOC_ID_LEN];
    uint64_t rev;
    uint8_t hash[32];
    uint64_t size, cipher_size;
};

static void ref_from(struct ref *out, const Cohort__DocRef *r)
{
    assert_non_null(r);
    assert_int_equal(r->doc_id.len, TK_DOC_ID_LEN);
    assert_int_equal(r->content_hash.len, 32);
    memcpy(out->id, r->doc_id.data, TK_DOC_ID_LEN);
    out->rev = r->revision;
    memcpy(out->hash, r->content_hash.data, 32);
    out->size = r->size;
    out->cipher_size = r->cipher_size;
}

static void meta_init(Cohort__DocMeta *m, const char *type)
{
    cohort__doc_meta__init(m);
    m->type = (char *)type;
    m->author = "bank";
    m->subject = "statement";
    m->created = FX_NOW;
    m->modified = FX_NOW;
}

static int doc_begin(struct fx_token *t, const uint8_t *id, size_t id_len, uint64_t base,
                     Cohort__DocMeta *meta, uint8_t session[TK_SESSION_ID_LEN])
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__DocBegin b = COHORT__DOC_BEGIN__INIT;
    Cohort__TokenResponse *r;
    int rc;
    b.doc_id = (ProtobufCBinaryData){id_len, (uint8_t *)id};
    b.base_revision = base;
    b.meta = meta;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_DOC_BEGIN;
    req.doc_begin = &b;
    rc = fx_call(t, &req, &r);
    if (rc == TK_OK) {
        assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_DOC_SESSION);
        assert_int_equal(r->doc_session->session.len, TK_SESSION_ID_LEN);
        assert_int_equal(r->doc_session->max_chunk, PIECE);
        memcpy(session, r->doc_session->session.data, TK_SESSION_ID_LEN);
    }
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

static int doc_write(struct fx_token *t, const uint8_t *session, const uint8_t *data, size_t len,
                     bool last, struct fx_buf *f, struct ref *ref)
{
    Cohort__TokenResponse *r;
    int rc = fx_stream_call(t, FX_NOW, 20, session, TK_SESSION_ID_LEN, data, len, last, &r);
    if (rc == TK_OK) {
        assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_DOC_CIPHER);
        fx_buf_put(f, r->doc_cipher->data.data, r->doc_cipher->data.len);
        if (last)
            ref_from(ref, r->doc_cipher->ref);
        else
            assert_null(r->doc_cipher->ref);
    }
    if (r != NULL)
        cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

/* Begin, then write plain in pieces; the file and the ref out. */
static int doc_put(struct fx_token *t, const uint8_t *id, uint64_t base, const char *type,
                   const uint8_t *plain, size_t len, size_t piece, struct fx_buf *f,
                   struct ref *ref)
{
    Cohort__DocMeta meta;
    uint8_t session[TK_SESSION_ID_LEN];
    size_t at = 0;
    int rc;
    meta_init(&meta, type);
    f->len = 0;
    if ((rc = doc_begin(t, id, id ? TK_DOC_ID_LEN : 0, base, &meta, session)) != TK_OK)
        return rc;
    do {
        size_t n = len - at < piece ? len - at : piece;
        if ((rc = doc_write(t, session, plain + at, n, at + n == len, f, ref)) != TK_OK)
            return rc;
        at += n;
    } while (at < len);
    return TK_OK;
}

static int doc_open(struct fx_token *t, const uint8_t *id, size_t id_len, uint64_t rev,
                    uint8_t session[TK_SESSION_ID_LEN], struct ref *ref, char *type)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__DocOpen o = COHORT__DOC_OPEN__INIT;
    Cohort__TokenResponse *r;
    int rc;
    o.doc_id = (ProtobufCBinaryData){id_len, (uint8_t *)id};
    o.revision = rev;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_DOC_OPEN;
    req.doc_open = &o;
    rc = fx_call(t, &req, &r);
    if (rc == TK_OK) {
        assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_DOC_SESSION);
        memcpy(session, r->doc_session->session.data, TK_SESSION_ID_LEN);
        ref_from(ref, r->doc_session->ref);
        assert_non_null(r->doc_session->meta);
        assert_int_equal(r->doc_session->meta->size, ref->size);
        if (type != NULL)
            strcpy(type, r->doc_session->meta->type);
    }
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

/* Open a revision and read file in pieces (last with the final one);
 * returns the first error, or TK_OK with the plaintext in *out. */
static int doc_get(struct fx_token *t, const uint8_t *id, uint64_t rev, const uint8_t *file,
                   size_t len, size_t piece, struct fx_buf *out)
{
    uint8_t session[TK_SESSION_ID_LEN];
    struct ref ref;
    size_t at = 0;
    bool done = false;
    int rc;
    out->len = 0;
    if ((rc = doc_open(t, id, TK_DOC_ID_LEN, rev, session, &ref, NULL)) != TK_OK)
        return rc;
    do {
        Cohort__TokenResponse *r;
        size_t n = len - at < piece ? len - at : piece;
        assert_false(done);
        rc = fx_stream_call(t, FX_NOW, 22, session, TK_SESSION_ID_LEN, file + at, n, at + n == len,
                            &r);
        if (rc != TK_OK) {
            if (r != NULL)
                cohort__token_response__free_unpacked(r, NULL);
            return rc;
        }
        assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_DOC_PLAIN);
        fx_buf_put(out, r->doc_plain->data.data, r->doc_plain->data.len);
        done = r->doc_plain->done;
        cohort__token_response__free_unpacked(r, NULL);
        at += n;
    } while (at < len);
    assert_true(done);
    return TK_OK;
}

static void token_make(struct fx_token *t, struct fx_world *w, size_t arena)
{
    fx_world_init(w);
    fx_token_init(t, arena);
    fx_provision(t, w, "token-doc");
}

static const uint8_t marker[32] = "0123456789abcdef-plaintext-mark!";

/* ------------------------------------------------------------ round trips */

static void documents_of_0_1_4k_and_16m_round_trip_in_the_least_arena(void **state)
{
    static const size_t sizes[] = {0, 1, 4096, BIG};
    struct fx_world w;
    struct fx_token t;
    struct fx_buf f = {0}, back = {0};
    uint8_t *plain = fx_alloc(BIG), key[32], h[32];
    size_t i;
    (void)state;

    token_make(&t, &w, TK_ARENA_MIN);
    for (i = 0; i < BIG; i += 32)
        memcpy(plain + i, marker, 32);
    for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        struct ref ref;
        size_t n = sizes[i], chunks = n ? (n + TK_DOC_CHUNK - 1) / TK_DOC_CHUNK : 1;
        t.max_peak = 0;
        assert_int_equal(doc_put(&t, NULL, 0, "bank.statement", plain, n, PIECE, &f, &ref), TK_OK);
        assert_int_equal(ref.rev, 1);
        assert_int_equal(ref.size, n);
        assert_int_equal(ref.cipher_size, f.len);
        assert_int_equal(f.len, 24 + chunks * (4 + 17) + n);
        crypto_generichash(h, 32, f.p, f.len, NULL, 0);
        assert_memory_equal(h, ref.hash, 32);
        /* Neither the plaintext nor the key is in the file; the key is in
         * the log record, and not in clear on the flash. */
        assert_false(fx_contains(f.p, f.len, marker, 32));
        assert_true(fx_doc_key(&t, ref.id, 1, key));
        assert_false(fx_contains(f.p, f.len, key, 32));
        assert_false(fx_on_flash(&t, key, 32));
        assert_int_equal(doc_get(&t, ref.id, 0, f.p, f.len, PIECE, &back), TK_OK);
        assert_int_equal(back.len, n);
        if (n)
            assert_memory_equal(back.p, plain, n);
        {
            /* Any split of the file reads the same (chunks straddle calls). */
            assert_int_equal(doc_get(&t, ref.id, 1, f.p, f.len, n <= 4096 ? 7 : PIECE - 15, &back),
                             TK_OK);
            assert_int_equal(back.len, n);
            if (n)
                assert_memory_equal(back.p, plain, n);
        }
        /* Within the least arena, with room to spare: the session and one
         * record at a time (8.5 KiB when this was written). */
        assert_true(t.max_peak <= TK_ARENA_MIN);
        if (t.max_peak > 9216)
            fail_msg("arena peak %zu", t.max_peak);
    }
    fx_buf_free(&f);
    fx_buf_free(&back);
    free(plain);
    fx_token_free(&t);
}

/* ------------------------------------------------------------ revisions */

static void an_update_needs_the_current_revision_and_old_ones_stay_readable(void **state)
{
    struct fx_world w;
    struct fx_token t;
    struct fx_snapshot snap;
    struct fx_buf f1 = {0}, f2 = {0}, f3 = {0}, back = {0};
    struct ref r1, r2, r3;
    uint8_t a[5000], b[6000], session[TK_SESSION_ID_LEN], stranger[TK_DOC_ID_LEN] = {1};
    Cohort__DocMeta meta;
    (void)state;

    token_make(&t, &w, TK_ARENA_MIN);
    fx_fill(a, sizeof a, 1);
    fx_fill(b, sizeof b, 2);
    assert_int_equal(doc_put(&t, NULL, 0, "note", a, sizeof a, 1000, &f1, &r1), TK_OK);
    assert_int_equal(r1.rev, 1);
    assert_int_equal(doc_put(&t, r1.id, 1, "note", b, sizeof b, PIECE, &f2, &r2), TK_OK);
    assert_int_equal(r2.rev, 2);
    assert_memory_equal(r2.id, r1.id, TK_DOC_ID_LEN);

    /* A stale base (or a future one) is refused and changes nothing. */
    meta_init(&meta, "note");
    fx_snapshot_take(&snap, &t);
    assert_int_equal(doc_begin(&t, r1.id, TK_DOC_ID_LEN, 1, &meta, session), TK_ERR_CONFLICT);
    assert_int_equal(doc_begin(&t, r1.id, TK_DOC_ID_LEN, 3, &meta, session), TK_ERR_CONFLICT);
    assert_int_equal(doc_begin(&t, stranger, TK_DOC_ID_LEN, 1, &meta, session), TK_ERR_NOT_FOUND);
    assert_int_equal(doc_open(&t, stranger, TK_DOC_ID_LEN, 0, session, &r3, NULL),
                     TK_ERR_NOT_FOUND);
    assert_int_equal(doc_open(&t, r1.id, TK_DOC_ID_LEN, 3, session, &r3, NULL), TK_ERR_NOT_FOUND);
    fx_snapshot_check(&snap, &t, true);
    fx_snapshot_free(&snap);

    /* Both revisions read back; the current one is revision 2. */
    assert_int_equal(doc_get(&t, r1.id, 1, f1.p, f1.len, 999, &back), TK_OK);
    assert_int_equal(back.len, sizeof a);
    assert_memory_equal(back.p, a, sizeof a);
    assert_int_equal(doc_get(&t, r1.id, 0, f2.p, f2.len, PIECE, &back), TK_OK);
    assert_int_equal(back.len, sizeof b);
    assert_memory_equal(back.p, b, sizeof b);
    assert_int_equal(doc_put(&t, r1.id, 2, "note", a, 10, PIECE, &f3, &r3), TK_OK);
    assert_int_equal(r3.rev, 3);
    fx_buf_free(&f1);
    fx_buf_free(&f2);
    fx_buf_free(&f3);
    fx_buf_free(&back);
    fx_token_free(&t);
}

/* ------------------------------------------------------------ tampering */

static int read_all(struct fx_token *t, const struct ref *r, const uint8_t *file, size_t len)
{
    struct fx_buf back = {0};
    int rc = doc_get(t, r->id, r->rev, file, len, PIECE, &back);
    fx_buf_free(&back);
    return rc;
}

static void every_tampered_file_is_refused_with_its_exact_code(void **state)
{
    struct fx_world w;
    struct fx_token t;
    struct fx_buf fa = {0}, fa2 = {0}, fb = {0}, x = {0};
    struct ref ra, ra2, rb;
    uint8_t a[10000], b[10000];
    const size_t frame = 4 + TK_DOC_CHUNK + 17, c0 = 24, c1 = 24 + frame, c2 = 24 + 2 * frame;
    (void)state;

    token_make(&t, &w, TK_ARENA_MIN);
    fx_fill(a, sizeof a, 3);
    fx_fill(b, sizeof b, 4);
    assert_int_equal(doc_put(&t, NULL, 0, "x", a, sizeof a, PIECE, &fa, &ra), TK_OK);
    assert_int_equal(doc_put(&t, NULL, 0, "x", b, sizeof b, PIECE, &fb, &rb), TK_OK);
    assert_int_equal(fa.len, c2 + 4 + (10000 - 2 * TK_DOC_CHUNK) + 17);
    assert_int_equal(read_all(&t, &ra, fa.p, fa.len), TK_OK);

    /* One bit flipped in the header: the first chunk fails. */
    fx_buf_put(&x, fa.p, fa.len);
    x.p[5] ^= 1;
    assert_int_equal(read_all(&t, &ra, x.p, x.len), TK_ERR_DECRYPT);
    /* One bit flipped in a chunk's box. */
    x.p[5] ^= 1;
    x.p[c1 + 100] ^= 0x10;
    assert_int_equal(read_all(&t, &ra, x.p, x.len), TK_ERR_DECRYPT);
    /* A length prefix changed: the framing is refused before decryption. */
    x.p[c1 + 100] ^= 0x10;
    x.p[c1] ^= 1;
    assert_int_equal(read_all(&t, &ra, x.p, x.len), TK_ERR_TAMPERED);
    /* A chunk dropped: the next one is not the one expected. */
    x.len = 0;
    fx_buf_put(&x, fa.p, c0);
    fx_buf_put(&x, fa.p + c1, fa.len - c1);
    assert_int_equal(read_all(&t, &ra, x.p, x.len), TK_ERR_DECRYPT);
    x.len = 0;
    fx_buf_put(&x, fa.p, c1);
    fx_buf_put(&x, fa.p + c2, fa.len - c2);
    assert_int_equal(read_all(&t, &ra, x.p, x.len), TK_ERR_DECRYPT);
    /* Two chunks swapped. */
    x.len = 0;
    fx_buf_put(&x, fa.p, c0);
    fx_buf_put(&x, fa.p + c1, frame);
    fx_buf_put(&x, fa.p + c0, frame);
    fx_buf_put(&x, fa.p + c2, fa.len - c2);
    assert_int_equal(read_all(&t, &ra, x.p, x.len), TK_ERR_DECRYPT);
    /* Truncated: mid-chunk, and at a chunk boundary (the final chunk gone). */
    assert_int_equal(read_all(&t, &ra, fa.p, fa.len - 10), TK_ERR_TAMPERED);
    assert_int_equal(read_all(&t, &ra, fa.p, c2), TK_ERR_TAMPERED);
    assert_int_equal(read_all(&t, &ra, fa.p, 10), TK_ERR_TAMPERED);
    /* Bytes appended after the final chunk. */
    x.len = 0;
    fx_buf_put(&x, fa.p, fa.len);
    fx_buf_put(&x, (const uint8_t *)"more", 4);
    assert_int_equal(read_all(&t, &ra, x.p, x.len), TK_ERR_TAMPERED);
    /* Another document's file, and another revision's. */
    assert_int_equal(read_all(&t, &ra, fb.p, fb.len), TK_ERR_DECRYPT);
    assert_int_equal(doc_put(&t, ra.id, 1, "x", b, sizeof b, PIECE, &fa2, &ra2), TK_OK);
    assert_int_equal(read_all(&t, &ra2, fa.p, fa.len), TK_ERR_DECRYPT);
    assert_int_equal(read_all(&t, &ra, fa2.p, fa2.len), TK_ERR_DECRYPT);
    /* None of it harmed the token: the genuine files still read. */
    assert_int_equal(read_all(&t, &ra, fa.p, fa.len), TK_OK);
    assert_int_equal(read_all(&t, &ra2, fa2.p, fa2.len), TK_OK);
    assert_int_equal(read_all(&t, &rb, fb.p, fb.len), TK_OK);
    fx_buf_free(&fa);
    fx_buf_free(&fa2);
    fx_buf_free(&fb);
    fx_buf_free(&x);
    fx_token_free(&t);
}

/* --------------------------------------------------- reopen, list, delete */

static void documents_survive_a_compaction_and_a_reopen_of_the_token(void **state)
{
    struct fx_world w;
    struct fx_token t;
    struct fx_buf f = {0}, back = {0};
    struct ref r, r2;
    uint8_t a[9000], image[TK_IMAGE_MAX], session[TK_SESSION_ID_LEN];
    char type[TK_DOC_TYPE_MAX + 1];
    size_t image_len;
    (void)state;

    token_make(&t, &w, TK_ARENA_MIN);
    fx_fill(a, sizeof a, 5);
    assert_int_equal(doc_put(&t, NULL, 0, "bank.statement", a, sizeof a, PIECE, &f, &r), TK_OK);
    /* Compaction keeps the record (it drops only rows and old policies). */
    {
        Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
        Cohort__Compact cp = COHORT__COMPACT__INIT;
        req.now = FX_NOW;
        req.body_case = COHORT__TOKEN_REQUEST__BODY_COMPACT;
        req.compact = &cp;
        assert_int_equal(fx_call(&t, &req, NULL), TK_OK);
    }
    assert_int_equal(tk_token_image(&t.tk, image, sizeof image, &image_len), TK_OK);
    fx_token_reopen(&t, image, image_len);
    assert_int_equal(doc_open(&t, r.id, TK_DOC_ID_LEN, 0, session, &r2, type), TK_OK);
    assert_memory_equal(&r2, &r, sizeof r);
    assert_string_equal(type, "bank.statement");
    assert_int_equal(doc_get(&t, r.id, 0, f.p, f.len, PIECE, &back), TK_OK);
    assert_int_equal(back.len, sizeof a);
    assert_memory_equal(back.p, a, sizeof a);
    fx_buf_free(&f);
    fx_buf_free(&back);
    fx_token_free(&t);
}

static int doc_list(struct fx_token *t, uint64_t after, uint32_t max, Cohort__TokenResponse **out)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__DocList l = COHORT__DOC_LIST__INIT;
    l.after = after;
    l.max = max;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_DOC_LIST;
    req.doc_list = &l;
    return fx_call(t, &req, out);
}

static int doc_delete(struct fx_token *t, const uint8_t *id, uint64_t base)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__DocDelete d = COHORT__DOC_DELETE__INIT;
    d.doc_id = (ProtobufCBinaryData){TK_DOC_ID_LEN, (uint8_t *)id};
    d.base_revision = base;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_DOC_DELETE;
    req.doc_delete = &d;
    return fx_call(t, &req, NULL);
}

#define NDOCS 7

/* Every current document once across the pages, at its current revision. */
static void list_all(struct fx_token *t, uint32_t max, const struct ref *refs, const bool *live,
                     size_t n)
{
    Cohort__TokenResponse *r;
    uint64_t after = 0;
    unsigned seen[NDOCS] = {0};
    size_t i, j, pages = 0;
    bool more;
    do {
        assert_int_equal(doc_list(t, after, max, &r), TK_OK);
        assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_DOC_PAGE);
        assert_int_equal(r->doc_page->n_refs, r->doc_page->n_metas);
        assert_true(r->doc_page->n_refs <= max);
        for (i = 0; i < r->doc_page->n_refs; i++) {
            struct ref got;
            ref_from(&got, r->doc_page->refs[i]);
            for (j = 0; j < n; j++)
                if (memcmp(got.id, refs[j].id, TK_DOC_ID_LEN) == 0)
                    break;
            assert_true(j < n);
            assert_memory_equal(&got, &refs[j], sizeof got);
            assert_string_equal(r->doc_page->metas[i]->type, "list.item");
            assert_int_equal(r->doc_page->metas[i]->size, refs[j].size);
            seen[j]++;
        }
        more = r->doc_page->more;
        assert_true(r->doc_page->next >= after);
        after = r->doc_page->next;
        cohort__token_response__free_unpacked(r, NULL);
        assert_true(++pages < 100);
    } while (more);
    for (j = 0; j < n; j++)
        assert_int_equal(seen[j], live[j] ? 1 : 0);
}

static void doc_list_pages_the_current_revisions_and_delete_removes_a_document(void **state)
{
    struct fx_world w;
    struct fx_token t;
    struct fx_snapshot snap;
    struct fx_buf f = {0}, keep = {0};
    struct ref refs[NDOCS], gone;
    bool live[NDOCS];
    uint8_t a[100], key[32], session[TK_SESSION_ID_LEN];
    size_t i, k;
    uint32_t max;
    (void)state;

    token_make(&t, &w, TK_ARENA_MIN);
    for (i = 0; i < NDOCS; i++) {
        fx_fill(a, sizeof a, 10 + (uint32_t)i);
        assert_int_equal(doc_put(&t, NULL, 0, "list.item", a, i * 10, PIECE, &f, &refs[i]), TK_OK);
        live[i] = true;
    }
    /* Two updates: their old records are no longer listed. */
    assert_int_equal(doc_put(&t, refs[1].id, 1, "list.item", a, 50, PIECE, &f, &refs[1]), TK_OK);
    assert_int_equal(doc_put(&t, refs[4].id, 1, "list.item", a, 60, PIECE, &keep, &refs[4]), TK_OK);
    for (max = 1; max <= NDOCS + 1; max++)
        list_all(&t, max, refs, live, NDOCS);

    /* A stale delete changes nothing; the right one removes every
     * revision's record (and key) from the log. */
    fx_snapshot_take(&snap, &t);
    assert_int_equal(doc_delete(&t, refs[1].id, 1), TK_ERR_CONFLICT);
    fx_snapshot_check(&snap, &t, true);
    fx_snapshot_free(&snap);
    assert_true(fx_doc_key(&t, refs[1].id, 1, key));
    assert_int_equal(doc_delete(&t, refs[1].id, 2), TK_OK);
    live[1] = false;
    assert_false(fx_doc_key(&t, refs[1].id, 0, key));
    assert_int_equal(doc_open(&t, refs[1].id, TK_DOC_ID_LEN, 0, session, &gone, NULL),
                     TK_ERR_NOT_FOUND);
    assert_int_equal(doc_open(&t, refs[1].id, TK_DOC_ID_LEN, 1, session, &gone, NULL),
                     TK_ERR_NOT_FOUND);
    assert_int_equal(doc_delete(&t, refs[1].id, 2), TK_ERR_NOT_FOUND);
    for (k = 0, i = 0; k < PT_MEMFLASH_SEGS; k++)
        i += t.flash.s[k].used;
    assert_int_equal(i, 1); /* the old segment, with the old keys, is gone */
    for (max = 1; max <= 3; max++)
        list_all(&t, max, refs, live, NDOCS);
    /* The others are intact. */
    fx_fill(a, sizeof a, 10 + 4);
    {
        struct fx_buf back = {0};
        assert_int_equal(doc_get(&t, refs[4].id, 0, keep.p, keep.len, PIECE, &back), TK_OK);
        assert_int_equal(back.len, 60);
        fx_buf_free(&back);
    }
    fx_buf_free(&f);
    fx_buf_free(&keep);
    fx_token_free(&t);
}

/* --------------------------------------------------------------- hostile */

static char *repeat(char *buf, char ch, size_t n)
{
    memset(buf, ch, n);
    buf[n] = 0;
    return buf;
}

static void hostile_requests_get_their_exact_codes_and_change_nothing(void **state)
{
    struct fx_world w;
    struct fx_token t;
    struct fx_snapshot snap;
    struct fx_buf f = {0};
    struct ref r;
    Cohort__DocMeta meta;
    Cohort__TokenResponse *resp;
    uint8_t session[TK_SESSION_ID_LEN], other[TK_SESSION_ID_LEN], *big = fx_alloc(PIECE + 1);
    char long_text[200], *tags[17];
    size_t i;
    (void)state;

    token_make(&t, &w, TK_ARENA_MIN);
    memset(big, 7, PIECE + 1);
    assert_int_equal(doc_put(&t, NULL, 0, "kept", big, 100, PIECE, &f, &r), TK_OK);
    fx_snapshot_take(&snap, &t);

    /* DocWrite or DocRead without a session. */
    assert_int_equal(fx_stream_call(&t, FX_NOW, 20, session, sizeof session, big, 10, false, NULL),
                     TK_ERR_SESSION);
    assert_int_equal(fx_stream_call(&t, FX_NOW, 22, session, sizeof session, big, 10, false, NULL),
                     TK_ERR_SESSION);
    assert_int_equal(fx_stream_call(&t, FX_NOW, 20, session, 0, big, 10, false, NULL),
                     TK_ERR_SESSION);
    fx_snapshot_check(&snap, &t, true);

    /* Inside a session: another id, oversized data, the wrong kind of
     * request; each error closes the session. */
    meta_init(&meta, "new.doc");
    assert_int_equal(doc_begin(&t, NULL, 0, 0, &meta, session), TK_OK);
    memcpy(other, session, sizeof other);
    other[0] ^= 1;
    assert_int_equal(doc_write(&t, other, big, 10, false, &f, &r), TK_ERR_SESSION);
    assert_int_equal(doc_write(&t, session, big, 10, false, &f, &r), TK_ERR_SESSION);
    assert_int_equal(doc_begin(&t, NULL, 0, 0, &meta, session), TK_OK);
    assert_int_equal(doc_write(&t, session, big, PIECE + 1, false, &f, &r), TK_ERR_TOO_LARGE);
    assert_int_equal(doc_begin(&t, NULL, 0, 0, &meta, session), TK_OK);
    assert_int_equal(fx_stream_call(&t, FX_NOW, 22, session, sizeof session, big, 10, false, NULL),
                     TK_ERR_SESSION);
    assert_int_equal(doc_begin(&t, NULL, 0, 0, &meta, session), TK_OK);
    assert_int_equal(doc_write(&t, session, big, 10, false, &f, &r), TK_OK);
    assert_int_equal(doc_list(&t, 0, 1, &resp), TK_OK); /* any other request closes it */
    cohort__token_response__free_unpacked(resp, NULL);
    assert_int_equal(doc_write(&t, session, big, 10, true, &f, &r), TK_ERR_SESSION);
    fx_snapshot_check(&snap, &t, true);

    /* Metadata over its bounds, bad ids and bases. */
    meta_init(&meta, "");
    assert_int_equal(doc_begin(&t, NULL, 0, 0, &meta, session), TK_ERR_MALFORMED);
    meta_init(&meta, "Bank.Statement");
    assert_int_equal(doc_begin(&t, NULL, 0, 0, &meta, session), TK_ERR_MALFORMED);
    meta_init(&meta, "bank statement");
    assert_int_equal(doc_begin(&t, NULL, 0, 0, &meta, session), TK_ERR_MALFORMED);
    meta_init(&meta, repeat(long_text, 'a', TK_DOC_TYPE_MAX + 1));
    assert_int_equal(doc_begin(&t, NULL, 0, 0, &meta, session), TK_ERR_TOO_LARGE);
    meta_init(&meta, "ok");
    meta.author = repeat(long_text, 'b', TK_DOC_TEXT_MAX + 1);
    assert_int_equal(doc_begin(&t, NULL, 0, 0, &meta, session), TK_ERR_TOO_LARGE);
    meta_init(&meta, "ok");
    meta.subject = repeat(long_text, 'c', TK_DOC_TEXT_MAX + 1);
    assert_int_equal(doc_begin(&t, NULL, 0, 0, &meta, session), TK_ERR_TOO_LARGE);
    meta_init(&meta, "ok");
    for (i = 0; i < 17; i++)
        tags[i] = "t";
    meta.tags = tags;
    meta.n_tags = 17;
    assert_int_equal(doc_begin(&t, NULL, 0, 0, &meta, session), TK_ERR_TOO_LARGE);
    meta.n_tags = 16;
    tags[3] = repeat(long_text, 'd', TK_DOC_TAG_MAX + 1);
    assert_int_equal(doc_begin(&t, NULL, 0, 0, &meta, session), TK_ERR_TOO_LARGE);
    assert_int_equal(doc_begin(&t, NULL, 0, 0, NULL, session), TK_ERR_MALFORMED);
    meta_init(&meta, "ok");
    assert_int_equal(doc_begin(&t, r.id, 15, 1, &meta, session), TK_ERR_MALFORMED);
    assert_int_equal(doc_begin(&t, NULL, 0, 3, &meta, session), TK_ERR_CONFLICT);
    assert_int_equal(doc_open(&t, r.id, 3, 0, session, &r, NULL), TK_ERR_MALFORMED);
    assert_int_equal(doc_list(&t, 0, 0, NULL), TK_ERR_TOO_LARGE);
    assert_int_equal(doc_list(&t, 0, TK_DOC_LIST_MAX + 1, NULL), TK_ERR_TOO_LARGE);
    fx_snapshot_check(&snap, &t, true);

    /* At the bounds exactly, all is accepted. */
    meta_init(&meta, "a-z.0_9");
    meta.author = repeat(long_text, 'b', TK_DOC_TEXT_MAX);
    meta.tags = tags;
    meta.n_tags = 16;
    tags[3] = "t";
    assert_int_equal(doc_begin(&t, NULL, 0, 0, &meta, session), TK_OK);
    fx_snapshot_free(&snap);
    fx_buf_free(&f);
    free(big);
    fx_token_free(&t);
}

/* The two kinds of session share one slot, and neither answers for the
 * other; a response buffer too small for a DocWrite's output ends the
 * session and stores nothing. */
static void sessions_of_the_two_kinds_exclude_each_other(void **state)
{
    struct fx_world w;
    struct fx_token t;
    struct fx_snapshot snap;
    struct fx_buf f = {0};
    struct ref r;
    Cohort__DocMeta meta;
    uint8_t session[TK_SESSION_ID_LEN], data[PIECE];
    (void)state;

    token_make(&t, &w, TK_ARENA_MIN);
    fx_fill(data, sizeof data, 9);
    fx_snapshot_take(&snap, &t);
    meta_init(&meta, "x");
    assert_int_equal(doc_begin(&t, NULL, 0, 0, &meta, session), TK_OK);
    /* AggFeed and AggEnd (fields 8 and 9) naming the document session. */
    assert_int_equal(fx_stream_call(&t, FX_NOW, 8, session, sizeof session, NULL, 0, false, NULL),
                     TK_ERR_SESSION);
    assert_int_equal(doc_write(&t, session, data, 10, true, &f, &r), TK_ERR_SESSION);
    assert_int_equal(doc_begin(&t, NULL, 0, 0, &meta, session), TK_OK);
    assert_int_equal(fx_stream_call(&t, FX_NOW, 9, session, sizeof session, NULL, 0, false, NULL),
                     TK_ERR_SESSION);
    assert_int_equal(doc_write(&t, session, data, 10, true, &f, &r), TK_ERR_SESSION);
    /* A response buffer that cannot take the ciphertext. */
    assert_int_equal(doc_begin(&t, NULL, 0, 0, &meta, session), TK_OK);
    t.resp_cap = 4096;
    assert_int_equal(doc_write(&t, session, data, sizeof data, true, &f, &r),
                     TK_ERR_RESPONSE_SPACE);
    t.resp_cap = FX_RESP_CAP;
    assert_int_equal(doc_write(&t, session, data, sizeof data, true, &f, &r), TK_ERR_SESSION);
    fx_snapshot_check(&snap, &t, true);
    fx_snapshot_free(&snap);
    fx_buf_free(&f);
    fx_token_free(&t);
}

static void the_conflict_code_has_its_name(void **state)
{
    (void)state;
    assert_int_equal(TK_ERR_CONFLICT, -36);
    assert_string_equal(tk_errname(TK_ERR_CONFLICT), "TK_ERR_CONFLICT");
    assert_string_equal(tk_errname(TK_ERR_AUTH), "TK_ERR_AUTH");
    assert_string_equal(tk_errname(TK_ERR_DENIED), "TK_ERR_DENIED");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_conflict_code_has_its_name),
        cmocka_unit_test(documents_of_0_1_4k_and_16m_round_trip_in_the_least_arena),
        cmocka_unit_test(an_update_needs_the_current_revision_and_old_ones_stay_readable),
        cmocka_unit_test(every_tampered_file_is_refused_with_its_exact_code),
        cmocka_unit_test(documents_survive_a_compaction_and_a_reopen_of_the_token),
        cmocka_unit_test(doc_list_pages_the_current_revisions_and_delete_removes_a_document),
        cmocka_unit_test(hostile_requests_get_their_exact_codes_and_change_nothing),
        cmocka_unit_test(sessions_of_the_two_kinds_exclude_each_other),
    };
    if (tk_library_init() != TK_OK)
        return 1;
    return cmocka_run_group_tests_name("documents", tests, NULL, NULL);
}
