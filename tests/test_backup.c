/*
 * Backup and recovery in the token (token/tk_backup.c), over memory flash.
 *
 * - A token with documents (one of them in two revisions), a table, a
 *   policy and audit entries (a differentially private study among them)
 *   is backed up and restored into a token provisioned separately: the
 *   documents read back identical from the same ciphertext files, the old
 *   revision too; the rows, the policy and the audit entries are there
 *   (numbered after the new token's own), so is the privacy budget spent;
 *   the new token still has it all once reopened from its image; a token
 *   without the backup cannot open the documents.
 * - The phrase is shown only when drawn: later backups reuse it, a new one
 *   is drawn on request, and a restored token's backups use the phrase it
 *   was restored with. The ways an owner may type it are accepted.
 * - The file, read here with libsodium alone as proto/cohort.proto
 *   describes it: header, chunks, final counts. None of the token's own
 *   secrets (device keys, storage key, group secret, certificate, the
 *   phrase's secret) is in it, encrypted or decrypted; the documents' keys
 *   are, decrypted.
 * - Hostile restores, table-driven, each with its exact code and nothing
 *   changed (fx_snapshot), in both passes: a wrong phrase, every one-symbol
 *   typo and a swap caught by the check symbols, a flipped bit in every
 *   byte of the header and throughout the chunks, truncations (the header
 *   alone among them), reordered, dropped and foreign chunks, trailing
 *   bytes, an oversized feed, a commit into a token that holds documents
 *   or tables, a commit cut off by another request or by a failing last
 *   chunk. Backup sessions refuse what is not theirs.
 * - Backups forged by someone who knows the phrase (sealed here by the
 *   book): final counts or tags that lie, records no token writes, each
 *   refused with its code.
 * - Sizes: the backup of a token with 100 documents, and the arena peaks
 *   of making and restoring it in the least arena.
 */
#include "tk_fixture.h"

#include "token/tk_int.h"

#define PIECE (64u * 1024u)
#define HDR TK_BACKUP_HEADER_LEN
#define CHUNK TK_BACKUP_CHUNK
#define ABYTES crypto_secretstream_xchacha20poly1305_ABYTES
#define FULL_BOX (CHUNK + ABYTES)
/* The token is exactly as the snapshot has it (cmocka names the line). */
#define SAME(snap, t) assert_true(fx_snapshot_same((snap), (t), false))

/* ------------------------------------------------------------- buffers */

/* to holds the n bytes at p, and nothing else. */
static void file_copy(struct fx_buf *to, const uint8_t *p, size_t n)
{
    to->len = 0;
    fx_buf_put(to, p, n);
}

/* ----------------------------------------------------------- documents */

struct ref {
    uint8_t id[TK_DOC_ID_LEN];
    uint64_t rev;
};

static int doc_begin(struct fx_token *t, const uint8_t *id, uint64_t base, const char *type,
                     uint8_t session[TK_SESSION_ID_LEN])
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__DocBegin b = COHORT__DOC_BEGIN__INIT;
    Cohort__DocMeta meta = COHORT__DOC_META__INIT;
    Cohort__TokenResponse *r;
    char *tags[] = {"2026", "bank"};
    int rc;
    meta.type = (char *)type;
    meta.author = "bank";
    meta.subject = "statement";
    meta.created = FX_NOW;
    meta.modified = FX_NOW;
    meta.n_tags = 2;
    meta.tags = tags;
    b.doc_id = (ProtobufCBinaryData){id ? TK_DOC_ID_LEN : 0, (uint8_t *)id};
    b.base_revision = base;
    b.meta = &meta;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_DOC_BEGIN;
    req.doc_begin = &b;
    rc = fx_call(t, &req, &r);
    if (rc == TK_OK)
        memcpy(session, r->doc_session->session.data, TK_SESSION_ID_LEN);
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

/* A document (or a new revision of id) of len bytes; its file in f. */
static void doc_put(struct fx_token *t, const uint8_t *id, uint64_t base, const uint8_t *plain,
                    size_t len, struct fx_buf *f, struct ref *ref)
{
    uint8_t session[TK_SESSION_ID_LEN];
    size_t at = 0;
    f->len = 0;
    assert_int_equal(doc_begin(t, id, base, "bank.statement", session), TK_OK);
    do {
        Cohort__TokenResponse *r;
        size_t n = len - at < PIECE ? len - at : PIECE;
        assert_int_equal(fx_stream_call(t, FX_NOW, 20, session, sizeof session, plain + at, n,
                                        at + n == len, &r),
                         TK_OK);
        fx_buf_put(f, r->doc_cipher->data.data, r->doc_cipher->data.len);
        if (at + n == len) {
            memcpy(ref->id, r->doc_cipher->ref->doc_id.data, TK_DOC_ID_LEN);
            ref->rev = r->doc_cipher->ref->revision;
        }
        cohort__token_response__free_unpacked(r, NULL);
        at += n;
    } while (at < len);
}

/* Open a revision and read its file: the token's status, the plaintext in out. */
static int doc_get(struct fx_token *t, const uint8_t *id, uint64_t rev, const struct fx_buf *f,
                   struct fx_buf *out)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__DocOpen o = COHORT__DOC_OPEN__INIT;
    Cohort__TokenResponse *r;
    uint8_t session[TK_SESSION_ID_LEN];
    size_t at = 0;
    bool done = false;
    int rc;
    out->len = 0;
    o.doc_id = (ProtobufCBinaryData){TK_DOC_ID_LEN, (uint8_t *)id};
    o.revision = rev;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_DOC_OPEN;
    req.doc_open = &o;
    rc = fx_call(t, &req, &r);
    if (rc == TK_OK)
        memcpy(session, r->doc_session->session.data, TK_SESSION_ID_LEN);
    cohort__token_response__free_unpacked(r, NULL);
    if (rc != TK_OK)
        return rc;
    do {
        size_t n = f->len - at < PIECE ? f->len - at : PIECE;
        rc = fx_stream_call(t, FX_NOW, 22, session, sizeof session, f->p + at, n, at + n == f->len,
                            &r);
        if (rc != TK_OK)
            return rc;
        fx_buf_put(out, r->doc_plain->data.data, r->doc_plain->data.len);
        done = r->doc_plain->done;
        cohort__token_response__free_unpacked(r, NULL);
        at += n;
    } while (at < f->len);
    assert_true(done);
    return TK_OK;
}

/* -------------------------------------------------------------- backup */

static int backup_begin(struct fx_token *t, bool new_phrase, uint8_t session[TK_SESSION_ID_LEN],
                        char phrase[64], struct fx_buf *f)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__BackupBegin b = COHORT__BACKUP_BEGIN__INIT;
    Cohort__TokenResponse *r;
    int rc;
    b.new_phrase = new_phrase;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_BACKUP_BEGIN;
    req.backup_begin = &b;
    rc = fx_call(t, &req, &r);
    if (rc == TK_OK) {
        assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_BACKUP_SESSION);
        assert_int_equal(r->backup_session->session.len, TK_SESSION_ID_LEN);
        memcpy(session, r->backup_session->session.data, TK_SESSION_ID_LEN);
        assert_true(strlen(r->backup_session->phrase) < 64);
        strcpy(phrase, r->backup_session->phrase);
        assert_int_equal(r->backup_session->header.len, HDR);
        file_copy(f, r->backup_session->header.data, HDR);
    }
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

static int backup_next(struct fx_token *t, const uint8_t *session, size_t sid_len, struct fx_buf *f,
                       bool *last)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__BackupNext b = COHORT__BACKUP_NEXT__INIT;
    Cohort__TokenResponse *r;
    int rc;
    b.session = (ProtobufCBinaryData){sid_len, (uint8_t *)session};
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_BACKUP_NEXT;
    req.backup_next = &b;
    rc = fx_call(t, &req, &r);
    if (rc == TK_OK) {
        assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_BACKUP_CHUNK);
        assert_true(r->backup_chunk->data.len > 0);
        assert_true(r->backup_chunk->data.len <= TK_BACKUP_DATA_MAX);
        fx_buf_put(f, r->backup_chunk->data.data, r->backup_chunk->data.len);
        *last = r->backup_chunk->last;
    }
    if (r != NULL)
        cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

/* A whole backup into f; the phrase if one was drawn ("" if not). */
static void backup_make(struct fx_token *t, bool new_phrase, struct fx_buf *f, char phrase[64])
{
    uint8_t session[TK_SESSION_ID_LEN];
    bool last = false;
    size_t calls = 0;
    assert_int_equal(backup_begin(t, new_phrase, session, phrase, f), TK_OK);
    while (!last) {
        assert_int_equal(backup_next(t, session, sizeof session, f, &last), TK_OK);
        assert_true(++calls < 100000);
    }
    /* The session is over. */
    assert_int_equal(backup_next(t, session, sizeof session, f, &last), TK_ERR_SESSION);
}

static int restore_begin(struct fx_token *t, const char *phrase, bool commit,
                         uint8_t session[TK_SESSION_ID_LEN])
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__RestoreBegin b = COHORT__RESTORE_BEGIN__INIT;
    Cohort__TokenResponse *r;
    int rc;
    b.phrase = (char *)phrase;
    b.commit = commit;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_RESTORE_BEGIN;
    req.restore_begin = &b;
    rc = fx_call(t, &req, &r);
    if (rc == TK_OK) {
        assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_BACKUP_SESSION);
        assert_int_equal(r->backup_session->session.len, TK_SESSION_ID_LEN);
        assert_string_equal(r->backup_session->phrase, "");
        assert_int_equal(r->backup_session->header.len, 0);
        memcpy(session, r->backup_session->session.data, TK_SESSION_ID_LEN);
    }
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

struct done {
    bool done;
    uint64_t records, documents;
};

static int restore_feed(struct fx_token *t, const uint8_t *session, const uint8_t *data, size_t len,
                        bool last, struct done *d)
{
    Cohort__TokenResponse *r;
    int rc = fx_stream_call(t, FX_NOW, 37, session, TK_SESSION_ID_LEN, data, len, last, &r);
    if (rc == TK_OK) {
        assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_RESTORE_DONE);
        assert_true(r->restore_done->records >= d->records);
        d->done = r->restore_done->done;
        d->records = r->restore_done->records;
        d->documents = r->restore_done->documents;
    }
    if (r != NULL)
        cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

/* A whole restore of f in pieces of `piece` bytes (`last` on the final
 * one); the first error, or TK_OK once the token said done. */
static int restore(struct fx_token *t, const char *phrase, bool commit, const uint8_t *f,
                   size_t len, size_t piece, struct done *d)
{
    uint8_t session[TK_SESSION_ID_LEN];
    size_t at = 0;
    int rc;
    memset(d, 0, sizeof *d);
    if ((rc = restore_begin(t, phrase, commit, session)) != TK_OK)
        return rc;
    do {
        size_t n = len - at < piece ? len - at : piece;
        assert_false(d->done);
        if ((rc = restore_feed(t, session, f + at, n, at + n == len, d)) != TK_OK)
            return rc;
        at += n;
    } while (at < len);
    assert_true(d->done);
    /* The session is over. */
    assert_int_equal(restore_feed(t, session, f, 0, true, d), TK_ERR_SESSION);
    return TK_OK;
}

/* ------------------------------------------- the file, read by the book */

static int crockford(char ch)
{
    static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    const char *p;
    if (ch >= 'a' && ch <= 'z')
        ch = (char)(ch - 'a' + 'A');
    if (ch == 'O')
        return 0;
    if (ch == 'I' || ch == 'L')
        return 1;
    p = strchr(alphabet, ch);
    return p != NULL && ch != '\0' ? (int)(p - alphabet) : -1;
}

/* The phrase's 160 bits: its first 32 symbols. */
static void phrase_bits(uint8_t secret[20], const char *phrase)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t n = 0, sym = 0;
    for (; *phrase != '\0' && sym < 32; phrase++) {
        int v = crockford(*phrase);
        if (*phrase == '-' || *phrase == ' ')
            continue;
        assert_true(v >= 0);
        acc = acc << 5 | (uint32_t)v;
        bits += 5;
        sym++;
        if (bits >= 8) {
            bits -= 8;
            secret[n++] = (uint8_t)(acc >> bits);
        }
    }
    assert_int_equal(n, 20);
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

struct opened {
    uint8_t *stream; /* the framed records */
    uint64_t stream_len, records, documents;
    size_t chunks;
    size_t kinds[16]; /* records of each StoreRecord kind */
};

/* Decrypt a backup as its format says, checking every part of it. */
static void backup_open(struct opened *o, const struct fx_buf *f, const char *phrase)
{
    crypto_secretstream_xchacha20poly1305_state st;
    crypto_generichash_state hs;
    uint8_t secret[20], keys[64], check[32], trailer[24];
    unsigned long long m_len;
    unsigned char tag;
    size_t pos = HDR, done = 0, at;

    memset(o, 0, sizeof *o);
    assert_true(f->len >= HDR);
    assert_memory_equal(f->p, "cohortbk", 8);
    assert_int_equal(le64(f->p + 8) & 0xffffffffu, 1);
    phrase_bits(secret, phrase);
    crypto_generichash_init(&hs, secret, sizeof secret, sizeof keys);
    crypto_generichash_update(&hs, (const uint8_t *)"cohort-backup-v1", 16);
    crypto_generichash_update(&hs, f->p + 12, 32);
    crypto_generichash_final(&hs, keys, sizeof keys);
    crypto_generichash(check, sizeof check, f->p, 76, keys + 32, 32);
    assert_memory_equal(check, f->p + 76, 32);
    o->stream_len = le64(f->p + 68);
    o->stream = fx_alloc(o->stream_len);
    assert_int_equal(crypto_secretstream_xchacha20poly1305_init_pull(&st, f->p + 44, keys), 0);
    while (done < o->stream_len) {
        size_t m = o->stream_len - done < CHUNK ? o->stream_len - done : CHUNK;
        assert_true(pos + m + ABYTES <= f->len);
        assert_int_equal(crypto_secretstream_xchacha20poly1305_pull(
                             &st, o->stream + done, &m_len, &tag, f->p + pos, m + ABYTES, NULL, 0),
                         0);
        assert_int_equal(m_len, m);
        assert_int_equal(tag, crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
        pos += m + ABYTES;
        done += m;
        o->chunks++;
    }
    assert_int_equal(pos + sizeof trailer + ABYTES, f->len);
    assert_int_equal(crypto_secretstream_xchacha20poly1305_pull(&st, trailer, &m_len, &tag,
                                                                f->p + pos, f->len - pos, NULL, 0),
                     0);
    assert_int_equal(tag, crypto_secretstream_xchacha20poly1305_TAG_FINAL);
    o->records = le64(trailer);
    o->documents = le64(trailer + 8);
    assert_int_equal(le64(trailer + 16), o->stream_len);
    /* The stream: framed StoreRecords, as many as the trailer says. */
    for (at = 0; at < o->stream_len;) {
        Cohort__StoreRecord *sr;
        uint32_t n;
        assert_true(o->stream_len - at >= 4);
        n = (uint32_t)o->stream[at] | (uint32_t)o->stream[at + 1] << 8 |
            (uint32_t)o->stream[at + 2] << 16 | (uint32_t)o->stream[at + 3] << 24;
        assert_true(n > 0 && n <= o->stream_len - at - 4);
        sr = cohort__store_record__unpack(NULL, n, o->stream + at + 4);
        assert_non_null(sr);
        assert_true(sr->body_case > 0 && sr->body_case < 16);
        o->kinds[sr->body_case]++;
        cohort__store_record__free_unpacked(sr, NULL);
        at += 4 + n;
    }
    assert_int_equal(at, o->stream_len);
    sodium_memzero(keys, sizeof keys);
    sodium_memzero(secret, sizeof secret);
}

static void opened_free(struct opened *o)
{
    free(o->stream);
    memset(o, 0, sizeof *o);
}

/* ------------------------------------------------- what the token holds */

/* Keys and secrets the token keeps in its log: a document's key (the
 * latest record of id), the phrase's secret. */
struct log_find {
    const uint8_t *id;
    bool found_key, found_secret;
    uint8_t key[32];
    uint8_t secret[20];
};

static int log_fn(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len, uint64_t index)
{
    struct log_find *k = ctx;
    Cohort__StoreRecord *sr;
    (void)a;
    (void)index;
    sr = cohort__store_record__unpack(NULL, len, plain);
    assert_non_null(sr);
    if (sr->body_case == COHORT__STORE_RECORD__BODY_DOC && k->id != NULL &&
        memcmp(sr->doc->doc_id.data, k->id, TK_DOC_ID_LEN) == 0) {
        memcpy(k->key, sr->doc->key.data, 32);
        k->found_key = true;
    }
    if (sr->body_case == COHORT__STORE_RECORD__BODY_BACKUP_KEY) {
        assert_int_equal(sr->backup_key->secret.len, 20);
        memcpy(k->secret, sr->backup_key->secret.data, 20);
        k->found_secret = true;
    }
    cohort__store_record__free_unpacked(sr, NULL);
    return TK_OK;
}

static void log_find(struct fx_token *t, struct log_find *k, const uint8_t *id)
{
    struct tk_arena a;
    memset(k, 0, sizeof *k);
    k->id = id;
    tk_arena_init(&a, t->arena, t->arena_len, 0);
    assert_int_equal(tk_log_scan(&t->tk, &a, false, log_fn, k), TK_OK);
}

static Cohort__TokenResponse *read_rows(struct fx_token *t)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__ReadRows rr = COHORT__READ_ROWS__INIT;
    Cohort__TokenResponse *r;
    rr.table = "health";
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_READ_ROWS;
    req.read_rows = &rr;
    assert_int_equal(fx_call(t, &req, &r), TK_OK);
    assert_false(r->rows->more);
    return r;
}

static Cohort__TokenResponse *read_audit(struct fx_token *t)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__ReadAudit ra = COHORT__READ_AUDIT__INIT;
    Cohort__TokenResponse *r;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_READ_AUDIT;
    req.read_audit = &ra;
    assert_int_equal(fx_call(t, &req, &r), TK_OK);
    assert_false(r->audit->more);
    return r;
}

static void cred_issue(struct fx_token *t, const char *name, uint8_t id[16], uint8_t secret[32])
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__CredIssue ci = COHORT__CRED_ISSUE__INIT;
    Cohort__PermRule rule = COHORT__PERM_RULE__INIT, *rules[1] = {&rule};
    Cohort__TokenResponse *r;
    rule.type = "bank.*";
    rule.verbs = COHORT__VERB__VERB_GET;
    ci.name = (char *)name;
    ci.n_rules = 1;
    ci.rules = rules;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_CRED_ISSUE;
    req.cred_issue = &ci;
    assert_int_equal(fx_call(t, &req, &r), TK_OK);
    assert_int_equal(r->cred_issued->info->id.len, 16);
    memcpy(id, r->cred_issued->info->id.data, 16);
    assert_int_equal(r->cred_issued->secret.len, 32);
    memcpy(secret, r->cred_issued->secret.data, 32);
    cohort__token_response__free_unpacked(r, NULL);
}

/* CredCheck with the credential id/secret: the token's status. */
static int cred_check(struct fx_token *t, const uint8_t id[16], const uint8_t secret[32])
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__CredCheck cc = COHORT__CRED_CHECK__INIT;
    Cohort__AppCredential cred = COHORT__APP_CREDENTIAL__INIT;
    Cohort__TokenResponse *r;
    int rc;
    cred.id = (ProtobufCBinaryData){16, (uint8_t *)id};
    cred.secret = (ProtobufCBinaryData){32, (uint8_t *)secret};
    req.now = FX_NOW;
    req.auth = &cred;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_CRED_CHECK;
    req.cred_check = &cc;
    rc = fx_call(t, &req, &r);
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

static Cohort__TokenResponse *cred_list(struct fx_token *t)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__CredList cl = COHORT__CRED_LIST__INIT;
    Cohort__TokenResponse *r;
    cl.max = 64;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_CRED_LIST;
    req.cred_list = &cl;
    assert_int_equal(fx_call(t, &req, &r), TK_OK);
    return r;
}

static Cohort__TokenResponse *get_policy(struct fx_token *t)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__GetPolicy gp = COHORT__GET_POLICY__INIT;
    Cohort__TokenResponse *r;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_GET_POLICY;
    req.get_policy = &gp;
    assert_int_equal(fx_call(t, &req, &r), TK_OK);
    return r;
}

/* A study of the health table under differential privacy. */
static int dp_collect(struct fx_token *t, const struct fx_world *w, double epsilon, int64_t issued)
{
    struct fx_plan_spec spec;
    struct fx_signed sp;
    int rc;
    fx_plan_default(&spec);
    spec.study = "study-dp";
    spec.epsilon = epsilon;
    spec.max_rows = 1;
    spec.n_aggs = 1;
    spec.issued_at = issued;
    fx_plan_sign(&sp, &spec, &w->researcher);
    rc = fx_collect(t, FX_NOW, sp.sp, NULL);
    fx_signed_free(&sp);
    return rc;
}

/* The owner's policy for the source token: the health table, a budget of 1. */
static void strict_policy(struct fx_token *t)
{
    Cohort__ConsentPolicy p = COHORT__CONSENT_POLICY__INIT;
    char *tables[] = {"health"};
    p.n_tables = 1;
    p.tables = tables;
    p.epsilon_per_study = 1.0;
    p.epsilon_total = 1.0;
    assert_int_equal(fx_set_policy(t, &p, NULL), TK_OK);
}

static void delete_rows(struct fx_token *t, uint64_t id1, uint64_t id2)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__DeleteRows dr = COHORT__DELETE_ROWS__INIT;
    uint64_t ids[2] = {id1, id2};
    dr.table = "health";
    dr.n_ids = 2;
    dr.ids = ids;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_DELETE_ROWS;
    req.delete_rows = &dr;
    assert_int_equal(fx_call(t, &req, NULL), TK_OK);
}

static void image_reopen(struct fx_token *t)
{
    uint8_t image[TK_IMAGE_MAX];
    size_t len;
    assert_int_equal(tk_token_image(&t->tk, image, sizeof image, &len), TK_OK);
    fx_token_reopen(t, image, len);
}

/* A token with n documents (the first in two revisions), the health
 * table, the strict policy and a DP study: the files in files[0..n]
 * (files[n]: the first document's first revision). */
struct source {
    struct fx_token t;
    size_t n;
    struct ref *refs;
    struct fx_buf *files;
    struct fx_buf *plains;
};

static void source_make(struct source *s, struct fx_world *w, size_t n, size_t arena)
{
    struct fx_row rows[64];
    size_t i, nr, sizes[] = {0, 5000, 100 * 1024, 1, 4096};
    fx_token_init(&s->t, arena);
    fx_provision(&s->t, w, "token-a");
    s->n = n;
    s->refs = fx_alloc((n + 1) * sizeof *s->refs);
    s->files = fx_alloc((n + 1) * sizeof *s->files);
    s->plains = fx_alloc((n + 1) * sizeof *s->plains);
    /* 42 rows in 13 batches; two deleted, so that the rest are rewritten
     * with explicit ids. */
    for (i = 1; i <= 13; i++) {
        nr = fx_gen_rows(rows, 64, (unsigned)i);
        if (nr > 0)
            assert_int_equal(fx_load_health(&s->t, rows, nr), TK_OK);
    }
    delete_rows(&s->t, 3, 17);
    strict_policy(&s->t);
    assert_int_equal(dp_collect(&s->t, w, 0.75, FX_NOW - 60), TK_OK);
    for (i = 0; i < n; i++) {
        size_t len = sizes[i % 5];
        uint8_t *p = fx_alloc(len);
        fx_fill(p, len, 100 + (uint32_t)i);
        file_copy(&s->plains[i], p, len);
        doc_put(&s->t, NULL, 0, p, len, &s->files[i], &s->refs[i]);
        free(p);
    }
    /* The first document's second revision; its first stays readable. */
    s->refs[n] = s->refs[0];
    file_copy(&s->files[n], s->files[0].p, s->files[0].len);
    file_copy(&s->plains[n], s->plains[0].p, s->plains[0].len);
    {
        uint8_t p[300];
        fx_fill(p, sizeof p, 99);
        doc_put(&s->t, s->refs[0].id, 1, p, sizeof p, &s->files[0], &s->refs[0]);
        file_copy(&s->plains[0], p, sizeof p);
        assert_int_equal(s->refs[0].rev, 2);
    }
}

static void source_free(struct source *s)
{
    size_t i;
    for (i = 0; i <= s->n; i++) {
        fx_buf_free(&s->files[i]);
        fx_buf_free(&s->plains[i]);
    }
    free(s->refs);
    free(s->files);
    free(s->plains);
    fx_token_free(&s->t);
}

/* Every document of s reads back from t, from the same files. */
static void documents_read_back(struct fx_token *t, const struct source *s)
{
    struct fx_buf back = {0};
    size_t i;
    for (i = 0; i <= s->n; i++) {
        uint64_t rev = i == s->n ? 1 : 0;
        assert_int_equal(doc_get(t, s->refs[i].id, rev, &s->files[i], &back), TK_OK);
        assert_int_equal(back.len, s->plains[i].len);
        if (back.len)
            assert_memory_equal(back.p, s->plains[i].p, back.len);
    }
    fx_buf_free(&back);
}

/* ------------------------------------------------------ a whole recovery */

static void a_backup_restores_into_a_new_token_and_its_documents_read_back_identical(void **state)
{
    struct fx_world w;
    struct source a;
    struct fx_token b, c;
    struct fx_snapshot snap;
    struct fx_buf f = {0}, back = {0};
    struct fx_row rows[3];
    struct opened o;
    struct done d;
    char phrase[64];
    uint8_t cred_id[16], cred_secret[32];
    Cohort__TokenResponse *ra, *rb, *audit_a;
    size_t i, k, total = 0, own;
    (void)state;

    fx_world_init(&w);
    source_make(&a, &w, 5, TK_ARENA_DEFAULT);
    cred_issue(&a.t, "budget-app", cred_id, cred_secret);
    backup_make(&a.t, false, &f, phrase);
    assert_int_equal(strlen(phrase), TK_BACKUP_PHRASE_LEN);

    /* What the file holds: the policy in force only (two were set), every
     * audit entry (the export's last), the tables (health, documents) and
     * their rows, every revision of every document, the credential; no
     * BackupKey. */
    backup_open(&o, &f, phrase);
    audit_a = read_audit(&a.t);
    assert_int_equal(o.kinds[TK_REC_AUDIT], audit_a->audit->n_entries);
    assert_int_equal(o.kinds[TK_REC_POLICY], 1);
    assert_int_equal(o.kinds[TK_REC_TABLE], 2);
    assert_true(o.kinds[TK_REC_ROWS] >= 2);
    assert_int_equal(o.kinds[TK_REC_DOC], 6);
    assert_int_equal(o.kinds[TK_REC_CRED], 1);
    assert_int_equal(o.kinds[TK_REC_BACKUP_KEY], 0);
    for (k = 0; k < 16; k++)
        total += o.kinds[k];
    assert_int_equal(o.records, total);
    assert_int_equal(o.documents, 5);
    assert_int_equal(f.len, HDR + o.chunks * ABYTES + o.stream_len + 24 + ABYTES);

    /* Tokens provisioned apart, with a policy and an audit entry of their own. */
    fx_token_init(&b, TK_ARENA_MIN);
    fx_provision(&b, &w, "token-b");
    fx_token_init(&c, TK_ARENA_MIN);
    fx_provision(&c, &w, "token-c");

    /* Verify: all checked, nothing changed. */
    fx_snapshot_take(&snap, &b);
    assert_int_equal(restore(&b, phrase, false, f.p, f.len, 1000, &d), TK_OK);
    assert_int_equal(d.records, o.records);
    assert_int_equal(d.documents, 5);
    SAME(&snap, &b);
    fx_snapshot_free(&snap);
    assert_int_equal(doc_get(&b, a.refs[1].id, 0, &a.files[1], &back), TK_ERR_NOT_FOUND);

    /* Commit: the documents read back identical from the same files. */
    assert_int_equal(restore(&b, phrase, true, f.p, f.len, PIECE, &d), TK_OK);
    assert_int_equal(d.records, o.records);
    assert_int_equal(d.documents, 5);

    /* The audit log: the token's own entry, the backup's entries numbered
     * on from it, the restore. */
    ra = audit_a;
    rb = read_audit(&b);
    own = 1;
    assert_int_equal(rb->audit->n_entries, own + ra->audit->n_entries + 1);
    for (i = 0; i < rb->audit->n_entries; i++)
        assert_int_equal(rb->audit->entries[i]->seq, i + 1);
    for (i = 0; i < ra->audit->n_entries; i++) {
        const Cohort__AuditEntry *x = ra->audit->entries[i], *y = rb->audit->entries[own + i];
        assert_string_equal(x->event, y->event);
        assert_string_equal(x->study, y->study);
        assert_int_equal(x->time, y->time);
        assert_int_equal(x->accepted, y->accepted);
        assert_true(x->epsilon == y->epsilon);
        assert_int_equal(x->query_id.len, y->query_id.len);
        assert_int_equal(x->doc_id.len, y->doc_id.len);
        if (x->doc_id.len)
            assert_memory_equal(x->doc_id.data, y->doc_id.data, x->doc_id.len);
    }
    assert_string_equal(ra->audit->entries[ra->audit->n_entries - 1]->event, "backup.export");
    assert_string_equal(rb->audit->entries[rb->audit->n_entries - 1]->event, "backup.restore");
    cohort__token_response__free_unpacked(rb, NULL);

    documents_read_back(&b, &a);
    documents_read_back(&a.t, &a);
    /* A token without the backup cannot open them. */
    for (i = 0; i <= a.n; i++)
        assert_int_equal(doc_get(&c, a.refs[i].id, 0, &a.files[i], &back), TK_ERR_NOT_FOUND);

    /* The rows, with their ids. */
    ra = read_rows(&a.t);
    rb = read_rows(&b);
    assert_int_equal(rb->rows->n_rows, ra->rows->n_rows);
    assert_int_equal(rb->rows->n_ids, ra->rows->n_ids);
    for (i = 0; i < ra->rows->n_rows; i++) {
        uint8_t x[1024], y[1024];
        size_t xl = cohort__row__pack(ra->rows->rows[i], x),
               yl = cohort__row__pack(rb->rows->rows[i], y);
        assert_int_equal(ra->rows->ids[i], rb->rows->ids[i]);
        assert_int_equal(xl, yl);
        assert_memory_equal(x, y, xl);
    }
    cohort__token_response__free_unpacked(ra, NULL);
    cohort__token_response__free_unpacked(rb, NULL);

    /* The credential is listed (the documents table's rows are the
     * documents'). */
    rb = cred_list(&b);
    assert_int_equal(rb->cred_page->n_creds, 1);
    assert_string_equal(rb->cred_page->creds[0]->name, "budget-app");
    assert_memory_equal(rb->cred_page->creds[0]->id.data, cred_id, 16);
    cohort__token_response__free_unpacked(rb, NULL);
    /* ... and the app's credential authenticates on the new token, so the
     * owner's apps keep working after a recovery. */
    assert_int_equal(cred_check(&b, cred_id, cred_secret), TK_OK);
    cred_secret[0] ^= 1;
    assert_int_equal(cred_check(&b, cred_id, cred_secret), TK_ERR_AUTH);

    /* The backup's policy is in force. */
    ra = get_policy(&a.t);
    rb = get_policy(&b);
    assert_true(rb->policy->epsilon_total == 1.0);
    assert_true(ra->policy->epsilon_total == 1.0);
    assert_int_equal(rb->policy->set_at, ra->policy->set_at);
    cohort__token_response__free_unpacked(ra, NULL);
    cohort__token_response__free_unpacked(rb, NULL);

    /* The budget spent comes along: 0.75 of 1 is gone. */
    assert_int_equal(dp_collect(&b, &w, 0.5, FX_NOW - 50), TK_ERR_BUDGET);
    assert_int_equal(dp_collect(&b, &w, 0.2, FX_NOW - 40), TK_OK);

    /* Rows loaded afterwards get ids after the restored ones. */
    assert_int_equal(b.tk.next_row_id, a.t.tk.next_row_id);
    memset(rows, 0, sizeof rows);
    k = fx_gen_rows(rows, 3, 7);
    assert_int_equal(fx_load_health(&b, rows, k), TK_OK);
    rb = read_rows(&b);
    for (i = 1; i < rb->rows->n_ids; i++)
        assert_true(rb->rows->ids[i] > rb->rows->ids[i - 1]);
    cohort__token_response__free_unpacked(rb, NULL);

    /* All of it is committed: the token reopened from its image has it. */
    image_reopen(&b);
    documents_read_back(&b, &a);

    /* A second commit is refused now that the token holds documents;
     * the backup can still be verified anywhere, its maker too. */
    fx_snapshot_take(&snap, &b);
    assert_int_equal(restore(&b, phrase, true, f.p, f.len, PIECE, &d), TK_ERR_CONFLICT);
    SAME(&snap, &b);
    fx_snapshot_free(&snap);
    assert_int_equal(restore(&b, phrase, false, f.p, f.len, PIECE, &d), TK_OK);
    assert_int_equal(restore(&a.t, phrase, false, f.p, f.len, PIECE, &d), TK_OK);

    cohort__token_response__free_unpacked(audit_a, NULL);
    opened_free(&o);
    fx_buf_free(&f);
    fx_buf_free(&back);
    fx_token_free(&b);
    fx_token_free(&c);
    source_free(&a);
}

/* --------------------------------------------------------------- phrases */

static bool phrase_well_formed(const char *p)
{
    size_t i;
    if (strlen(p) != TK_BACKUP_PHRASE_LEN)
        return false;
    for (i = 0; i < TK_BACKUP_PHRASE_LEN; i++)
        if ((i % 5 == 4) != (p[i] == '-') || (p[i] != '-' && crockford(p[i]) < 0) ||
            (p[i] >= 'a' && p[i] <= 'z'))
            return false;
    return true;
}

static void the_phrase_is_shown_only_when_drawn_and_later_backups_reuse_it(void **state)
{
    struct fx_world w;
    struct source a;
    struct fx_token b;
    struct fx_buf f1 = {0}, f2 = {0}, f3 = {0}, f4 = {0}, fb = {0};
    char p1[64], p2[64], p3[64], p4[64], pb[64], v[128];
    struct done d;
    size_t i, n;
    (void)state;

    fx_world_init(&w);
    source_make(&a, &w, 2, TK_ARENA_MIN);
    backup_make(&a.t, false, &f1, p1);
    backup_make(&a.t, false, &f2, p2);
    backup_make(&a.t, true, &f3, p3);
    backup_make(&a.t, false, &f4, p4);
    assert_true(phrase_well_formed(p1));
    assert_string_equal(p2, "");
    assert_true(phrase_well_formed(p3));
    assert_string_not_equal(p1, p3);
    assert_string_equal(p4, "");
    /* Every file has its own salt. */
    assert_memory_not_equal(f1.p + 12, f2.p + 12, 32);

    /* Verified on the token that made them, with the phrase of their time. */
    assert_int_equal(restore(&a.t, p1, false, f1.p, f1.len, 333, &d), TK_OK);
    assert_int_equal(restore(&a.t, p1, false, f2.p, f2.len, 333, &d), TK_OK);
    assert_int_equal(restore(&a.t, p3, false, f3.p, f3.len, 333, &d), TK_OK);
    assert_int_equal(restore(&a.t, p3, false, f4.p, f4.len, 333, &d), TK_OK);
    assert_int_equal(restore(&a.t, p1, false, f3.p, f3.len, 333, &d), TK_ERR_AUTH);
    assert_int_equal(restore(&a.t, p1, false, f4.p, f4.len, 333, &d), TK_ERR_AUTH);
    assert_int_equal(restore(&a.t, p3, false, f1.p, f1.len, 333, &d), TK_ERR_AUTH);

    /* The ways an owner may type it: lower case, no dashes, spaces, O for
     * 0 and I or L for 1. */
    for (i = 0; p1[i]; i++)
        v[i] = (char)(p1[i] >= 'A' && p1[i] <= 'Z' ? p1[i] - 'A' + 'a' : p1[i]);
    v[i] = 0;
    assert_int_equal(restore(&a.t, v, false, f1.p, f1.len, PIECE, &d), TK_OK);
    for (i = 0, n = 0; p1[i]; i++)
        if (p1[i] != '-')
            v[n++] = p1[i];
    v[n] = 0;
    assert_int_equal(restore(&a.t, v, false, f1.p, f1.len, PIECE, &d), TK_OK);
    for (i = 0, n = 0; p1[i]; i++) {
        v[n++] = p1[i] == '-'   ? ' '
                 : p1[i] == '0' ? 'O'
                 : p1[i] == '1' ? (i % 2 ? 'I' : 'l')
                                : p1[i];
        if (i % 3 == 0)
            v[n++] = ' ';
    }
    v[n] = 0;
    assert_int_equal(restore(&a.t, v, false, f1.p, f1.len, PIECE, &d), TK_OK);

    /* A restored token's backups use the phrase it was restored with. */
    fx_token_init(&b, TK_ARENA_MIN);
    fx_provision(&b, &w, "token-b");
    assert_int_equal(restore(&b, p3, true, f4.p, f4.len, PIECE, &d), TK_OK);
    backup_make(&b, false, &fb, pb);
    assert_string_equal(pb, "");
    assert_int_equal(restore(&b, p3, false, fb.p, fb.len, PIECE, &d), TK_OK);
    documents_read_back(&b, &a);

    fx_buf_free(&f1);
    fx_buf_free(&f2);
    fx_buf_free(&f3);
    fx_buf_free(&f4);
    fx_buf_free(&fb);
    fx_token_free(&b);
    source_free(&a);
}

/* --------------------------------------------------------------- secrets */

static void no_device_key_certificate_or_group_secret_is_in_a_backup(void **state)
{
    struct fx_world w;
    struct source a;
    struct fx_buf f = {0};
    struct opened o;
    struct log_find k;
    char phrase[64];
    const struct tk_token *tk;
    size_t i, j;
    (void)state;

    fx_world_init(&w);
    source_make(&a, &w, 3, TK_ARENA_MIN);
    backup_make(&a.t, false, &f, phrase);
    backup_open(&o, &f, phrase);
    tk = &a.t.tk;
    assert_true(tk->cert_len > 0);
    {
        const struct {
            const uint8_t *p;
            size_t n;
        } secrets[] = {
            {tk->sign_sk, 64},        {tk->sign_sk, 32},      {tk->sign_pk, 32},
            {tk->box_sk, 32},         {tk->group_secret, 32}, {tk->storage_key, 32},
            {tk->cert, tk->cert_len}, {w.secret, 32},
        };
        for (i = 0; i < sizeof secrets / sizeof secrets[0]; i++) {
            assert_false(fx_contains(f.p, f.len, secrets[i].p, secrets[i].n));
            assert_false(fx_contains(o.stream, o.stream_len, secrets[i].p, secrets[i].n));
        }
        /* Not a 16-byte piece of the certificate either. */
        for (j = 0; j + 16 <= tk->cert_len; j += 8)
            assert_false(fx_contains(o.stream, o.stream_len, tk->cert + j, 16));
    }
    /* Nor the phrase's secret; the documents' keys are there, decrypted
     * only, and the documents' contents are not. */
    for (i = 0; i <= a.n; i++) {
        log_find(&a.t, &k, a.refs[i].id);
        assert_true(k.found_key && k.found_secret);
        assert_false(fx_contains(f.p, f.len, k.secret, 20));
        assert_false(fx_contains(o.stream, o.stream_len, k.secret, 20));
        assert_true(fx_contains(o.stream, o.stream_len, k.key, 32));
        assert_false(fx_contains(f.p, f.len, k.key, 32));
        if (a.plains[i].len >= 32) {
            assert_false(fx_contains(o.stream, o.stream_len, a.plains[i].p, 32));
            assert_false(fx_contains(f.p, f.len, a.plains[i].p, 32));
        }
    }
    opened_free(&o);
    fx_buf_free(&f);
    source_free(&a);
}

/* --------------------------------------------------------------- hostile */

/* Restore `data` into t in both passes: each must end with `code` and
 * leave t exactly as snap has it. */
static void refused_at(struct fx_token *t, const struct fx_snapshot *snap, const char *phrase,
                       const uint8_t *data, size_t len, int code, int line)
{
    struct done d;
    int commit;
    for (commit = 0; commit <= 1; commit++) {
        int rc = restore(t, phrase, commit, data, len, 4096, &d);
        if (rc != code || !fx_snapshot_same(snap, t, false))
            fail_msg("line %d, commit %d: %s, not %s%s", line, commit, tk_errname(rc),
                     tk_errname(code), rc == code ? " (the token changed)" : "");
    }
}
#define refused(t, snap, phrase, data, len, code)                                                  \
    refused_at((t), (snap), (phrase), (data), (len), (code), __LINE__)

/* The symbols of a phrase (dashes left out), and back. */
static size_t phrase_symbols(int *sym, const char *p)
{
    size_t n = 0;
    for (; *p; p++)
        if (*p != '-')
            sym[n++] = crockford(*p);
    return n;
}

static void phrase_of(char *out, const int *sym, size_t n)
{
    static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    size_t i, k = 0;
    for (i = 0; i < n; i++) {
        if (i > 0 && i % 4 == 0)
            out[k++] = '-';
        out[k++] = alphabet[sym[i]];
    }
    out[k] = 0;
}

static void hostile_restores_get_their_exact_codes_and_change_nothing(void **state)
{
    struct fx_world w;
    struct source a;
    struct fx_token b, c, t2;
    struct fx_snapshot snap;
    struct fx_buf f = {0}, f2 = {0}, fc = {0}, m = {0};
    struct fx_row rows[4];
    struct done d;
    char phrase[64], p2[64], pc[64], typo[256];
    uint8_t session[TK_SESSION_ID_LEN], *big;
    int sym[40], save;
    size_t i, n, pos, nchunks;
    (void)state;

    fx_world_init(&w);
    source_make(&a, &w, 30, TK_ARENA_MIN);
    backup_make(&a.t, false, &f, phrase);
    backup_make(&a.t, false, &f2, p2);
    nchunks = (f.len - HDR - 24 - ABYTES + FULL_BOX - 1) / FULL_BOX;
    assert_true(nchunks >= 3);
    fx_token_init(&c, TK_ARENA_MIN);
    fx_provision(&c, &w, "token-c");
    backup_make(&c, false, &fc, pc);
    fx_token_init(&b, TK_ARENA_MIN);
    fx_provision(&b, &w, "token-b");
    fx_snapshot_take(&snap, &b);

    /* Another token's phrase: the header's check fails. */
    refused(&b, &snap, pc, f.p, f.len, TK_ERR_AUTH);
    refused(&b, &snap, phrase, fc.p, fc.len, TK_ERR_AUTH);

    /* Typos: every symbol changed, two ways, and every neighbours' swap;
     * a letter not in the alphabet; too few or too many symbols; a phrase
     * over the bound. All refused by RestoreBegin. */
    n = phrase_symbols(sym, phrase);
    assert_int_equal(n, 36);
    for (pos = 0; pos < n; pos++) {
        save = sym[pos];
        for (i = 1; i < 32; i += 15) {
            sym[pos] = (save + (int)i) % 32;
            phrase_of(typo, sym, n);
            assert_int_equal(restore_begin(&b, typo, false, session), TK_ERR_MALFORMED);
            assert_int_equal(restore_begin(&b, typo, true, session), TK_ERR_MALFORMED);
        }
        sym[pos] = save;
        if (pos + 1 < n && sym[pos] != sym[pos + 1]) {
            sym[pos] = sym[pos + 1];
            sym[pos + 1] = save;
            phrase_of(typo, sym, n);
            assert_int_equal(restore_begin(&b, typo, true, session), TK_ERR_MALFORMED);
            sym[pos + 1] = sym[pos];
            sym[pos] = save;
        }
    }
    phrase_of(typo, sym, n);
    assert_string_equal(typo, phrase);
    strcpy(typo, phrase);
    typo[0] = 'U';
    assert_int_equal(restore_begin(&b, typo, true, session), TK_ERR_MALFORMED);
    phrase_of(typo, sym, n - 1);
    assert_int_equal(restore_begin(&b, typo, true, session), TK_ERR_MALFORMED);
    sym[n] = 0;
    phrase_of(typo, sym, n + 1);
    assert_int_equal(restore_begin(&b, typo, true, session), TK_ERR_MALFORMED);
    assert_int_equal(restore_begin(&b, "", true, session), TK_ERR_MALFORMED);
    memset(typo, '-', TK_BACKUP_PHRASE_MAX + 1);
    typo[TK_BACKUP_PHRASE_MAX + 1] = 0;
    assert_int_equal(restore_begin(&b, typo, true, session), TK_ERR_TOO_LARGE);
    typo[TK_BACKUP_PHRASE_MAX] = 0;
    assert_int_equal(restore_begin(&b, typo, true, session), TK_ERR_MALFORMED);
    SAME(&snap, &b);

    /* A flipped bit in every byte of the header, and all through the
     * chunks (the last byte of the final chunk among them). */
    for (pos = 0; pos < f.len; pos += pos < HDR ? 1 : 61) {
        int code = pos < 8     ? TK_ERR_MALFORMED
                   : pos < 12  ? TK_ERR_UNSUPPORTED
                   : pos < HDR ? TK_ERR_AUTH
                               : TK_ERR_DECRYPT;
        file_copy(&m, f.p, f.len);
        m.p[pos] ^= (uint8_t)(1u << (pos % 8));
        refused(&b, &snap, phrase, m.p, m.len, code);
    }
    file_copy(&m, f.p, f.len);
    m.p[f.len - 1] ^= 0x80;
    refused(&b, &snap, phrase, m.p, m.len, TK_ERR_DECRYPT);

    /* Cut short anywhere: the header alone, a chunk short, all but the
     * final chunk. */
    {
        const size_t cuts[] = {0,
                               1,
                               7,
                               8,
                               50,
                               HDR - 1,
                               HDR,
                               HDR + 1,
                               HDR + 100,
                               HDR + FULL_BOX,
                               HDR + FULL_BOX + 1,
                               f.len - 24 - ABYTES,
                               f.len - 1};
        for (i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
            refused(&b, &snap, phrase, f.p, cuts[i], TK_ERR_TRUNCATED);
    }

    /* Chunks swapped, dropped, repeated, or taken from another backup
     * under the same phrase; headers swapped between two backups. */
    file_copy(&m, f.p, f.len);
    memcpy(m.p + HDR, f.p + HDR + FULL_BOX, FULL_BOX);
    memcpy(m.p + HDR + FULL_BOX, f.p + HDR, FULL_BOX);
    refused(&b, &snap, phrase, m.p, m.len, TK_ERR_DECRYPT);
    file_copy(&m, f.p, HDR);
    fx_buf_put(&m, f.p + HDR + FULL_BOX, f.len - HDR - FULL_BOX);
    refused(&b, &snap, phrase, m.p, m.len, TK_ERR_DECRYPT);
    file_copy(&m, f.p, HDR + FULL_BOX);
    fx_buf_put(&m, f.p + HDR, f.len - HDR);
    refused(&b, &snap, phrase, m.p, m.len, TK_ERR_DECRYPT);
    file_copy(&m, f.p, f.len);
    memcpy(m.p + HDR + FULL_BOX, f2.p + HDR + FULL_BOX, FULL_BOX);
    refused(&b, &snap, phrase, m.p, m.len, TK_ERR_DECRYPT);
    file_copy(&m, f2.p, HDR);
    fx_buf_put(&m, f.p + HDR, f.len - HDR);
    refused(&b, &snap, phrase, m.p, m.len, TK_ERR_DECRYPT);
    /* The final chunk moved before the last data chunk. */
    file_copy(&m, f.p, f.len - 24 - ABYTES);
    {
        size_t last_box = (f.len - HDR - 24 - ABYTES) - (nchunks - 1) * FULL_BOX;
        size_t at = f.len - 24 - ABYTES - last_box;
        m.len = at;
        fx_buf_put(&m, f.p + f.len - 24 - ABYTES, 24 + ABYTES);
        fx_buf_put(&m, f.p + at, last_box);
    }
    assert_int_equal(m.len, f.len);
    refused(&b, &snap, phrase, m.p, m.len, TK_ERR_DECRYPT);

    /* Bytes after the final chunk. */
    file_copy(&m, f.p, f.len);
    fx_buf_put(&m, (const uint8_t *)"x", 1);
    refused(&b, &snap, phrase, m.p, m.len, TK_ERR_MALFORMED);
    file_copy(&m, f.p, f.len);
    fx_buf_put(&m, f.p + f.len - 24 - ABYTES, 24 + ABYTES);
    refused(&b, &snap, phrase, m.p, m.len, TK_ERR_MALFORMED);

    /* A feed over its bound, without a session or naming another. */
    big = fx_alloc(TK_BACKUP_DATA_MAX + 1);
    memcpy(big, f.p, f.len < TK_BACKUP_DATA_MAX ? f.len : TK_BACKUP_DATA_MAX);
    for (i = 0; i < 2; i++) {
        memset(&d, 0, sizeof d);
        assert_int_equal(restore_begin(&b, phrase, i == 1, session), TK_OK);
        assert_int_equal(restore_feed(&b, session, big, TK_BACKUP_DATA_MAX + 1, false, &d),
                         TK_ERR_TOO_LARGE);
        assert_int_equal(restore_feed(&b, session, f.p, f.len, true, &d), TK_ERR_SESSION);
        SAME(&snap, &b);
    }
    /* Fields given twice, or that do not decode. */
    for (i = 0; i < 3; i++) {
        uint8_t body[64], *req;
        size_t bl = 0, rl;
        assert_int_equal(restore_begin(&b, phrase, true, session), TK_OK);
        body[bl++] = 0x0a;
        body[bl++] = TK_SESSION_ID_LEN;
        memcpy(body + bl, session, TK_SESSION_ID_LEN);
        bl += TK_SESSION_ID_LEN;
        if (i == 0) {
            memcpy(body + bl, body, bl);
            bl *= 2;
        } else if (i == 1) {
            memcpy(body + bl, "\x12\x01x\x12\x01y", 6);
            bl += 6;
        } else {
            memcpy(body + bl, "\x12\x05x", 3); /* runs past the end */
            bl += 3;
        }
        req = fx_raw_request(&rl, FX_NOW, 37, body, bl);
        assert_int_equal(fx_call_raw(&b, req, rl, NULL),
                         i < 2 ? TK_ERR_MALFORMED : TK_ERR_TRUNCATED);
        free(req);
        SAME(&snap, &b);
    }
    assert_int_equal(restore_begin(&b, phrase, true, session), TK_OK);
    assert_int_equal(fx_stream_call(&b, FX_NOW, 37, session, 0, f.p, 10, false, NULL),
                     TK_ERR_SESSION);
    assert_int_equal(restore_begin(&b, phrase, true, session), TK_OK);
    session[0] ^= 1;
    assert_int_equal(restore_feed(&b, session, f.p, 10, false, &d), TK_ERR_SESSION);
    session[0] ^= 1;
    assert_int_equal(restore_feed(&b, session, f.p, 10, false, &d), TK_ERR_SESSION);
    SAME(&snap, &b);
    free(big);

    /* A commit cut off halfway by another request, or by a document or
     * backup request naming the session, or with the arena lost: the
     * records it had appended are dropped. */
    for (i = 0; i < 4; i++) {
        bool last;
        memset(&d, 0, sizeof d);
        assert_int_equal(restore_begin(&b, phrase, true, session), TK_OK);
        assert_int_equal(restore_feed(&b, session, f.p, f.len / 2, false, &d), TK_OK);
        assert_false(d.done);
        assert_true(d.records > 0);
        assert_true(b.tk.work.records > b.tk.log.records); /* pending, not committed */
        if (i == 0) {
            assert_int_equal(fx_info(&b, NULL), TK_OK);
        } else if (i == 1) {
            assert_int_equal(
                fx_stream_call(&b, FX_NOW, 20, session, sizeof session, f.p, 10, false, NULL),
                TK_ERR_SESSION);
        } else if (i == 2) {
            assert_int_equal(backup_next(&b, session, sizeof session, &m, &last), TK_ERR_SESSION);
        } else {
            memset(b.arena, 0, b.arena_len);
            assert_int_equal(fx_info(&b, NULL), TK_OK);
        }
        SAME(&snap, &b);
        assert_int_equal(restore_feed(&b, session, f.p + f.len / 2, f.len - f.len / 2, true, &d),
                         TK_ERR_SESSION);
        SAME(&snap, &b);
    }

    /* A commit into a token that holds documents (the backup's maker), or
     * a table alone; verifying there is fine. */
    fx_snapshot_free(&snap);
    fx_snapshot_take(&snap, &a.t);
    assert_int_equal(restore(&a.t, phrase, true, f.p, f.len, PIECE, &d), TK_ERR_CONFLICT);
    SAME(&snap, &a.t);
    fx_snapshot_free(&snap);
    fx_token_init(&t2, TK_ARENA_MIN);
    fx_provision(&t2, &w, "token-t");
    n = fx_gen_rows(rows, 4, 3);
    assert_int_equal(fx_load_health(&t2, rows, n), TK_OK);
    fx_snapshot_take(&snap, &t2);
    assert_int_equal(restore(&t2, phrase, true, f.p, f.len, PIECE, &d), TK_ERR_CONFLICT);
    assert_int_equal(restore(&t2, phrase, false, f.p, f.len, PIECE, &d), TK_OK);
    SAME(&snap, &t2);
    fx_snapshot_free(&snap);

    /* After all that, the real thing. */
    assert_int_equal(restore(&b, phrase, true, f.p, f.len, 4096, &d), TK_OK);
    documents_read_back(&b, &a);

    fx_buf_free(&f);
    fx_buf_free(&f2);
    fx_buf_free(&fc);
    fx_buf_free(&m);
    fx_token_free(&b);
    fx_token_free(&c);
    fx_token_free(&t2);
    source_free(&a);
}

/* -------------------------------------------------------------- forgeries */

struct forgery {
    uint64_t records, documents; /* what the final chunk claims */
    int64_t stream_delta;        /* added to the stream length it claims */
    bool first_final;            /* the first data chunk tagged FINAL */
};

/* A backup of `stream` made by the book, as anyone who knows the phrase
 * can make one. */
static void forge(struct fx_buf *out, const char *phrase, const struct fx_buf *stream,
                  const struct forgery *fg)
{
    crypto_secretstream_xchacha20poly1305_state st;
    crypto_generichash_state hs;
    uint8_t secret[20], keys[64], hdr[HDR], trailer[24], box[FULL_BOX];
    size_t at = 0;
    int i;

    phrase_bits(secret, phrase);
    memcpy(hdr, "cohortbk", 8);
    memset(hdr + 8, 0, 4);
    hdr[8] = 1;
    randombytes_buf(hdr + 12, 32);
    crypto_generichash_init(&hs, secret, sizeof secret, sizeof keys);
    crypto_generichash_update(&hs, (const uint8_t *)"cohort-backup-v1", 16);
    crypto_generichash_update(&hs, hdr + 12, 32);
    crypto_generichash_final(&hs, keys, sizeof keys);
    crypto_secretstream_xchacha20poly1305_init_push(&st, hdr + 44, keys);
    for (i = 0; i < 8; i++)
        hdr[68 + i] = (uint8_t)((uint64_t)stream->len >> (8 * i));
    crypto_generichash(hdr + 76, 32, hdr, 76, keys + 32, 32);
    file_copy(out, hdr, HDR);
    while (at < stream->len) {
        size_t n = stream->len - at < CHUNK ? stream->len - at : CHUNK;
        crypto_secretstream_xchacha20poly1305_push(
            &st, box, NULL, stream->p + at, n, NULL, 0,
            at == 0 && fg->first_final ? crypto_secretstream_xchacha20poly1305_TAG_FINAL
                                       : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
        fx_buf_put(out, box, n + ABYTES);
        at += n;
    }
    for (i = 0; i < 8; i++) {
        trailer[i] = (uint8_t)(fg->records >> (8 * i));
        trailer[8 + i] = (uint8_t)(fg->documents >> (8 * i));
        trailer[16 + i] = (uint8_t)((uint64_t)((int64_t)stream->len + fg->stream_delta) >> (8 * i));
    }
    crypto_secretstream_xchacha20poly1305_push(&st, box, NULL, trailer, sizeof trailer, NULL, 0,
                                               crypto_secretstream_xchacha20poly1305_TAG_FINAL);
    fx_buf_put(out, box, sizeof trailer + ABYTES);
}

/* Append a record to a stream, framed; `len` is what the frame claims. */
static void frame_put(struct fx_buf *stream, const uint8_t *rec, size_t n, uint32_t len)
{
    uint8_t pre[4] = {(uint8_t)len, (uint8_t)(len >> 8), (uint8_t)(len >> 16),
                      (uint8_t)(len >> 24)};
    fx_buf_put(stream, pre, 4);
    fx_buf_put(stream, rec, n);
}

static void record_put(struct fx_buf *stream, const Cohort__StoreRecord *sr)
{
    uint8_t buf[2048];
    size_t n = cohort__store_record__get_packed_size(sr);
    assert_true(n <= sizeof buf);
    cohort__store_record__pack(sr, buf);
    frame_put(stream, buf, n, (uint32_t)n);
}

/* A backup that authenticates (its maker knew the phrase) but says what
 * no token writes is refused where it lies, and changes nothing. */
static void a_backup_forged_with_the_phrase_is_refused_where_it_lies(void **state)
{
    struct fx_world w;
    struct source a;
    struct fx_token b;
    struct fx_snapshot snap;
    struct fx_buf f = {0}, base = {0}, s = {0}, m = {0};
    struct opened o;
    struct forgery fg;
    struct done d;
    char phrase[64];
    Cohort__StoreRecord sr = COHORT__STORE_RECORD__INIT;
    uint8_t zeros[64] = {0}, odd[TK_RECORD_MAX + 1];
    (void)state;

    fx_world_init(&w);
    source_make(&a, &w, 4, TK_ARENA_MIN);
    backup_make(&a.t, false, &f, phrase);
    backup_open(&o, &f, phrase);
    file_copy(&base, o.stream, o.stream_len);
    fx_token_init(&b, TK_ARENA_MIN);
    fx_provision(&b, &w, "token-b");
    fx_snapshot_take(&snap, &b);

    /* Made by the book, it restores: the forger writes the format right. */
    fg = (struct forgery){o.records, o.documents, 0, false};
    forge(&m, phrase, &base, &fg);
    assert_int_equal(m.len, f.len);
    assert_int_equal(restore(&b, phrase, false, m.p, m.len, 999, &d), TK_OK);
    assert_int_equal(d.records, o.records);
    SAME(&snap, &b);

    /* Final counts that disagree; a data chunk tagged final. */
    fg = (struct forgery){o.records + 1, o.documents, 0, false};
    forge(&m, phrase, &base, &fg);
    refused(&b, &snap, phrase, m.p, m.len, TK_ERR_MALFORMED);
    fg = (struct forgery){o.records, o.documents - 1, 0, false};
    forge(&m, phrase, &base, &fg);
    refused(&b, &snap, phrase, m.p, m.len, TK_ERR_MALFORMED);
    fg = (struct forgery){o.records, o.documents, 1, false};
    forge(&m, phrase, &base, &fg);
    refused(&b, &snap, phrase, m.p, m.len, TK_ERR_MALFORMED);
    fg = (struct forgery){o.records, o.documents, 0, true};
    forge(&m, phrase, &base, &fg);
    refused(&b, &snap, phrase, m.p, m.len, TK_ERR_MALFORMED);

    /* Records no token writes, after honest ones (counts to match). */
    fg = (struct forgery){o.records + 1, o.documents, 0, false};
    {
        Cohort__BackupKey k = COHORT__BACKUP_KEY__INIT;
        k.secret = (ProtobufCBinaryData){20, zeros};
        sr.body_case = COHORT__STORE_RECORD__BODY_BACKUP_KEY;
        sr.backup_key = &k;
        file_copy(&s, base.p, base.len);
        record_put(&s, &sr);
        forge(&m, phrase, &s, &fg);
        refused(&b, &snap, phrase, m.p, m.len, TK_ERR_MALFORMED); /* a phrase's secret */
    }
    {
        static const uint8_t unknown[] = {0xa2, 0x01, 0x01, 0x00}; /* field 20 */
        static const uint8_t two[] = {0x0a, 0x00, 0x22, 0x00};     /* a table and an audit */
        static const uint8_t cut[] = {0x2a, 0x05, 0x0a};           /* a doc that runs past */
        file_copy(&s, base.p, base.len);
        frame_put(&s, unknown, sizeof unknown, sizeof unknown);
        forge(&m, phrase, &s, &fg);
        refused(&b, &snap, phrase, m.p, m.len, TK_ERR_UNSUPPORTED);
        file_copy(&s, base.p, base.len);
        frame_put(&s, two, sizeof two, sizeof two);
        forge(&m, phrase, &s, &fg);
        refused(&b, &snap, phrase, m.p, m.len, TK_ERR_MALFORMED);
        file_copy(&s, base.p, base.len);
        frame_put(&s, cut, sizeof cut, sizeof cut);
        forge(&m, phrase, &s, &fg);
        refused(&b, &snap, phrase, m.p, m.len, TK_ERR_MALFORMED);
        file_copy(&s, base.p, base.len);
        frame_put(&s, NULL, 0, 0); /* an empty record */
        forge(&m, phrase, &s, &fg);
        refused(&b, &snap, phrase, m.p, m.len, TK_ERR_MALFORMED);
        memset(odd, 0, sizeof odd);
        file_copy(&s, base.p, base.len);
        frame_put(&s, odd, sizeof odd, sizeof odd); /* over the record bound */
        forge(&m, phrase, &s, &fg);
        refused(&b, &snap, phrase, m.p, m.len, TK_ERR_MALFORMED);
        file_copy(&s, base.p, base.len);
        frame_put(&s, odd, 10, 100); /* the stream ends inside a record */
        fg.records--;
        forge(&m, phrase, &s, &fg);
        refused(&b, &snap, phrase, m.p, m.len, TK_ERR_MALFORMED);
        fg.records++;
    }
    {
        Cohort__DocRecord dr = COHORT__DOC_RECORD__INIT;
        Cohort__DocMeta meta = COHORT__DOC_META__INIT;
        meta.type = "x";
        dr.doc_id = (ProtobufCBinaryData){TK_DOC_ID_LEN, zeros};
        dr.revision = 1;
        dr.key = (ProtobufCBinaryData){31, zeros}; /* a key one byte short */
        dr.content_hash = (ProtobufCBinaryData){32, zeros};
        dr.meta = &meta;
        sr.body_case = COHORT__STORE_RECORD__BODY_DOC;
        sr.doc = &dr;
        file_copy(&s, base.p, base.len);
        record_put(&s, &sr);
        fg.documents++;
        forge(&m, phrase, &s, &fg);
        refused(&b, &snap, phrase, m.p, m.len, TK_ERR_MALFORMED);
        fg.documents--;
    }
    {
        Cohort__RowBatch rb = COHORT__ROW_BATCH__INIT;
        Cohort__Row row = COHORT__ROW__INIT, *rows[2] = {&row, &row};
        uint64_t ids[1] = {5};
        rb.table = "health";
        rb.n_rows = 2;
        rb.rows = rows;
        rb.n_ids = 1; /* fewer ids than rows */
        rb.ids = ids;
        sr.body_case = COHORT__STORE_RECORD__BODY_ROWS;
        sr.rows = &rb;
        file_copy(&s, base.p, base.len);
        record_put(&s, &sr);
        forge(&m, phrase, &s, &fg);
        refused(&b, &snap, phrase, m.p, m.len, TK_ERR_MALFORMED);
    }
    {
        Cohort__AuditEntry e = COHORT__AUDIT_ENTRY__INIT;
        e.event = "no.seq"; /* seq 0: the time comes first */
        e.time = FX_NOW;
        sr.body_case = COHORT__STORE_RECORD__BODY_AUDIT;
        sr.audit = &e;
        file_copy(&s, base.p, base.len);
        record_put(&s, &sr);
        forge(&m, phrase, &s, &fg);
        refused(&b, &snap, phrase, m.p, m.len, TK_ERR_MALFORMED);
    }
    fx_snapshot_free(&snap);
    opened_free(&o);
    fx_buf_free(&f);
    fx_buf_free(&base);
    fx_buf_free(&s);
    fx_buf_free(&m);
    fx_token_free(&b);
    source_free(&a);
}

/* Backup sessions: only the owner, only with room for the phrase, only
 * their own session. */
static void backup_sessions_refuse_what_is_not_theirs(void **state)
{
    struct fx_world w;
    struct source a;
    struct fx_token bare;
    struct fx_snapshot snap;
    struct fx_buf f = {0}, g = {0};
    struct done d;
    char phrase[64], p2[64];
    uint8_t session[TK_SESSION_ID_LEN], id[16] = {1}, secret[32] = {2};
    bool last;
    size_t calls = 0;
    (void)state;

    fx_world_init(&w);
    source_make(&a, &w, 30, TK_ARENA_MIN);
    fx_snapshot_take(&snap, &a.t);

    /* Without a session, or a broken one. */
    assert_int_equal(backup_next(&a.t, session, sizeof session, &f, &last), TK_ERR_SESSION);
    assert_int_equal(backup_next(&a.t, session, 15, &f, &last), TK_ERR_SESSION);

    /* A response buffer that cannot take the phrase: nothing is drawn. */
    a.t.resp_cap = 120;
    assert_int_equal(backup_begin(&a.t, false, session, phrase, &f), TK_ERR_RESPONSE_SPACE);
    a.t.resp_cap = FX_RESP_CAP;
    SAME(&snap, &a.t);

    /* An app's credential may not ask (the owner's link may). */
    {
        Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
        Cohort__BackupBegin bb = COHORT__BACKUP_BEGIN__INIT;
        Cohort__RestoreBegin rb = COHORT__RESTORE_BEGIN__INIT;
        Cohort__AppCredential cred = COHORT__APP_CREDENTIAL__INIT;
        cred.id = (ProtobufCBinaryData){sizeof id, id};
        cred.secret = (ProtobufCBinaryData){sizeof secret, secret};
        req.now = FX_NOW;
        req.auth = &cred;
        req.body_case = COHORT__TOKEN_REQUEST__BODY_BACKUP_BEGIN;
        req.backup_begin = &bb;
        assert_int_equal(fx_call(&a.t, &req, NULL), TK_ERR_AUTH);
        req.body_case = COHORT__TOKEN_REQUEST__BODY_RESTORE_BEGIN;
        req.restore_begin = &rb;
        rb.phrase = "0000-0000-0000-0000-0000-0000-0000-0000-0000";
        assert_int_equal(fx_call(&a.t, &req, NULL), TK_ERR_AUTH);
    }
    SAME(&snap, &a.t);
    fx_snapshot_free(&snap);

    /* The first backup shows the phrase. Any other request ends it. */
    assert_int_equal(backup_begin(&a.t, false, session, phrase, &f), TK_OK);
    assert_true(phrase_well_formed(phrase));
    assert_int_equal(fx_info(&a.t, NULL), TK_OK);
    assert_int_equal(backup_next(&a.t, session, sizeof session, &f, &last), TK_ERR_SESSION);

    /* A restore feed or a document read naming a backup session. */
    assert_int_equal(backup_begin(&a.t, false, session, p2, &f), TK_OK);
    assert_string_equal(p2, "");
    memset(&d, 0, sizeof d);
    assert_int_equal(restore_feed(&a.t, session, f.p, 10, false, &d), TK_ERR_SESSION);
    assert_int_equal(backup_next(&a.t, session, sizeof session, &f, &last), TK_ERR_SESSION);
    assert_int_equal(backup_begin(&a.t, false, session, p2, &f), TK_OK);
    assert_int_equal(
        fx_stream_call(&a.t, FX_NOW, 22, session, sizeof session, f.p, 10, false, NULL),
        TK_ERR_SESSION);
    assert_int_equal(backup_next(&a.t, session, sizeof session, &f, &last), TK_ERR_SESSION);

    /* A response buffer too small for one chunk ends the session; one
     * chunk per call is enough, and gives the same backup's layout. */
    assert_int_equal(backup_begin(&a.t, false, session, p2, &f), TK_OK);
    a.t.resp_cap = FULL_BOX;
    assert_int_equal(backup_next(&a.t, session, sizeof session, &f, &last), TK_ERR_RESPONSE_SPACE);
    a.t.resp_cap = FX_RESP_CAP;
    assert_int_equal(backup_next(&a.t, session, sizeof session, &f, &last), TK_ERR_SESSION);
    assert_int_equal(backup_begin(&a.t, false, session, p2, &g), TK_OK);
    a.t.resp_cap = FULL_BOX + 64;
    last = false;
    while (!last) {
        size_t before = g.len;
        assert_int_equal(backup_next(&a.t, session, sizeof session, &g, &last), TK_OK);
        assert_true(g.len - before <= FULL_BOX);
        calls++;
    }
    a.t.resp_cap = FX_RESP_CAP;
    assert_true(calls >= 3);
    assert_int_equal(restore(&a.t, phrase, false, g.p, g.len, PIECE, &d), TK_OK);

    /* A token without keys has nothing to back up or restore into. */
    fx_token_init(&bare, TK_ARENA_MIN);
    assert_int_equal(backup_begin(&bare, false, session, p2, &f), TK_ERR_NOT_PROVISIONED);
    assert_int_equal(restore_begin(&bare, phrase, false, session), TK_ERR_NOT_PROVISIONED);

    fx_buf_free(&f);
    fx_buf_free(&g);
    fx_token_free(&bare);
    source_free(&a);
}

/* ------------------------------------------------------------------ sizes */

static void a_token_of_100_documents_backs_up_and_restores_in_the_least_arena(void **state)
{
    struct fx_world w;
    struct source a;
    struct fx_token b;
    struct fx_buf f = {0};
    struct opened o;
    struct done d;
    char phrase[64];
    size_t backup_peak, restore_peak, verify_peak, log_len;
    (void)state;

    fx_world_init(&w);
    source_make(&a, &w, 100, TK_ARENA_MIN);
    log_len = a.t.tk.log.length;
    a.t.max_peak = 0;
    backup_make(&a.t, false, &f, phrase);
    backup_peak = a.t.max_peak;
    backup_open(&o, &f, phrase);
    assert_int_equal(o.documents, 100);
    assert_int_equal(o.kinds[TK_REC_DOC], 101);

    fx_token_init(&b, TK_ARENA_MIN);
    fx_provision(&b, &w, "token-b");
    b.max_peak = 0;
    assert_int_equal(restore(&b, phrase, false, f.p, f.len, 7, &d), TK_OK);
    verify_peak = b.max_peak;
    b.max_peak = 0;
    assert_int_equal(restore(&b, phrase, true, f.p, f.len, PIECE, &d), TK_OK);
    restore_peak = b.max_peak;
    assert_int_equal(d.documents, 100);
    documents_read_back(&b, &a);
    assert_true(backup_peak <= TK_ARENA_MIN && restore_peak <= TK_ARENA_MIN);

    print_message("backup of 100 documents: %zu bytes (%llu records, %zu chunks; the log is %zu "
                  "bytes); arena peak: backup %zu, verify %zu, restore %zu (of %u)\n",
                  f.len, (unsigned long long)o.records, o.chunks + 1, log_len, backup_peak,
                  verify_peak, restore_peak, TK_ARENA_MIN);
    opened_free(&o);
    fx_buf_free(&f);
    fx_token_free(&b);
    source_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_backup_restores_into_a_new_token_and_its_documents_read_back_identical),
        cmocka_unit_test(the_phrase_is_shown_only_when_drawn_and_later_backups_reuse_it),
        cmocka_unit_test(no_device_key_certificate_or_group_secret_is_in_a_backup),
        cmocka_unit_test(hostile_restores_get_their_exact_codes_and_change_nothing),
        cmocka_unit_test(a_backup_forged_with_the_phrase_is_refused_where_it_lies),
        cmocka_unit_test(backup_sessions_refuse_what_is_not_theirs),
        cmocka_unit_test(a_token_of_100_documents_backs_up_and_restores_in_the_least_arena),
    };
    if (tk_library_init() != TK_OK)
        return 1;
    return cmocka_run_group_tests_name("backup", tests, NULL, NULL);
}
