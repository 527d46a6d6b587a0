/*
 * The owner's documents: the token side of the personal cloud.
 *
 * What is stored where. The agent keeps each revision of a document as a
 * ciphertext file it cannot read; the token keeps, in its own log (already
 * encrypted under the storage key and hash-chained, tk_log.c), one
 * DocRecord per revision: the document's id, the revision number, the
 * revision's secretstream key, the BLAKE2b-256 of the whole ciphertext
 * file, the plaintext and ciphertext sizes, and the metadata (DocMeta). The
 * key is drawn at random for every revision and never leaves the token: it
 * exists only in that record and, while a document is being written or
 * read, in the session at the arena's low end (wiped when it closes).
 *
 * The file. A revision's file is
 *   header: the 24-byte crypto_secretstream_xchacha20poly1305 header;
 *   chunks: [length: 4 bytes LE][secretstream chunk of `length` bytes],
 * every chunk but the last holding TK_DOC_CHUNK plaintext bytes under
 * TAG_MESSAGE, the last holding 0 to TK_DOC_CHUNK bytes under TAG_FINAL
 * (an empty document is a header and one empty final chunk). Every chunk
 * is bound (additional data) to the document id and the revision. The
 * length prefix lets a reader cut the file into chunks without trusting
 * it: a length outside [ABYTES, TK_DOC_BOX_MAX], or a chunk that runs past
 * the size the record promises, is refused before anything is decrypted.
 *
 * What the host sees: the ciphertext, the document ids, revisions, sizes
 * and content hashes (DocRef), and the metadata it asks for (DocList,
 * DocOpen: the host link is the owner's). Never a key.
 *
 * Writing. DocBegin checks the metadata's bounds and the revision (a new
 * document: no id and base_revision 0, the token draws the id; an update:
 * base_revision must be the current revision, else TK_ERR_CONFLICT) and
 * opens a write session (see "Who may" for the credential's checks). Each DocWrite encrypts what it
 * carries (at most TK_DOC_DATA_MAX bytes): full chunks go out at once, the rest waits in the
 * session (less than one chunk). The `last` DocWrite emits the final chunk,
 * appends the DocRecord and commits it: the revision exists once that
 * answer is given, not before (a session that is cut off leaves nothing).
 *
 * Reading. DocOpen opens a read session on a revision; DocRead takes the
 * file in pieces of any size and answers the plaintext of the chunks it
 * completed. The token buffers at most one chunk. Every chunk is
 * authenticated before its plaintext leaves (TK_ERR_DECRYPT otherwise: a
 * flipped bit, a dropped, reordered or foreign chunk, another document's
 * or revision's file); what the authentication cannot see is checked
 * against the record and is TK_ERR_TAMPERED: a bad length prefix, bytes
 * beyond the recorded size, a short chunk that is not the last, a final
 * tag anywhere but at the recorded end (or none there), a file that ends
 * early (DocRead with `last`), and at the end the content hash. `done` is
 * set only when all of that held; a host must not use the plaintext of a
 * read that does not end with done. Each DocRead first walks the framing of
 * what it carries without decrypting (so that it knows the length of its
 * answer), then decrypts.
 *
 * Invariants of a session: cipher_bytes <= cipher_size (reading) and
 * buf_len < one frame; a writer's buf holds fewer than TK_DOC_CHUNK bytes,
 * or exactly TK_DOC_CHUNK waiting to learn whether it is the last. The
 * session needs about 6 KiB of the arena; nothing else outlives a call.
 *
 * Revisions. Every revision's record stays in the log, so an old revision
 * remains readable (DocOpen with its number) until the document is deleted.
 *
 * Sessions. One session at a time, of either kind (tk->session): any
 * request that is not a DocWrite or DocRead closes a document session, and
 * any error inside one closes it too, as for aggregation sessions. A
 * DocWrite or DocRead is streamed and carries no credential: the session
 * belongs to whoever opened it, and its random id is what the host must
 * present.
 *
 * Who may. A request with a credential (tk_cred.c) is authenticated first,
 * before anything about the document is looked at (TK_ERR_AUTH). Then:
 * DocBegin of a new document needs POST on its metadata; of a new
 * revision, PUT on the current metadata and on the new one (so that an
 * app cannot move a document into or out of what it may write); DocOpen
 * needs GET; DocDelete needs DELETE on the current metadata; DocList shows
 * only what the credential may GET. Permissions are checked before the
 * revision (a refused app learns nothing of it), after the document is
 * found.
 *
 * Audit. Every revision stored ("doc.create", "doc.update"), every DocOpen
 * ("doc.read") and every delete ("doc.delete") appends an audit line in the
 * same commit, naming the credential and app (none for the host link). A
 * refusal by the rules ("doc.denied") is logged and committed before the
 * request fails: the document is untouched, the attempt is on record.
 *
 * The documents table. Each revision stored also writes the document's row
 * of the token's `documents` table (tk_table.c), in the same commit, so
 * that studies can aggregate over the documents' metadata under the
 * owner's policy like over any table. A new document appends its row; a
 * new revision replaces it, and a delete removes it, in a rewrite of the
 * log. The last DocWrite therefore ends the session before it stores: what
 * the store needs moves to scratch and the session's room is given back,
 * so that a rewrite fits the least arena.
 *
 * Received documents. DocBegin on a document that is not the owner's own
 * is a revision of a document received in a read-write share
 * (tk_share.c decides, and says which share): the session remembers the
 * share and the base's content hash, and the last DocWrite hands the
 * finished revision to tk_share_write_back instead of storing it, so its
 * DocCipher is framed once the return grant (reply) is written. The other
 * way, tk_doc_store stores a revision a recipient wrote back as the
 * owner's own document's next.
 *
 * Deleting. DocDelete rewrites the log without any record of the document
 * (tk_log_rewrite), so that no revision's key remains on the flash once the
 * old segment is removed; the agent's files become noise. It costs a pass
 * over the whole log, and so does an update (its row is replaced): a
 * create costs an append.
 *
 * Listing. DocList's cursor is a position in the log; a page lists the
 * current revisions among the next `max` document records (three scans:
 * pick, drop the superseded, write), so a page may be short while more
 * remain, and shorter still with a filter (DocList.filter: a rule whose
 * verbs are ignored) or a credential that may not GET all of them.
 */
#include "token/tk_int.h"

#define HEADER_LEN crypto_secretstream_xchacha20poly1305_HEADERBYTES
#define ABYTES crypto_secretstream_xchacha20poly1305_ABYTES
#define AD_LEN (TK_DOC_ID_LEN + 8u)
#define FRAME_FULL (TK_DOC_FRAME_LEN + TK_DOC_CHUNK + ABYTES)

/* ------------------------------------------------------------ sessions */

static bool doc_session_at(const uint8_t *arena, size_t arena_len)
{
    const struct tk_doc_session *s = (const struct tk_doc_session *)arena;
    return arena != NULL && arena_len >= sizeof *s && ((uintptr_t)arena % 8) == 0 &&
           s->magic == TK_DOC_MAGIC && s->arena_lo <= arena_len;
}

size_t tk_doc_extent(const uint8_t *arena, size_t arena_len)
{
    return doc_session_at(arena, arena_len) ? ((const struct tk_doc_session *)arena)->arena_lo : 0;
}

void tk_doc_wipe(uint8_t *arena, size_t arena_len)
{
    if (doc_session_at(arena, arena_len))
        sodium_memzero(arena, sizeof(struct tk_doc_session));
}

static crypto_generichash_state *hash_state(struct tk_doc_session *s)
{
    uintptr_t p = ((uintptr_t)s->hash_room + 63u) & ~(uintptr_t)63u;
    return (crypto_generichash_state *)p;
}

static struct tk_doc_session *find_session(struct tk_token *tk, struct tk_arena *a,
                                           const uint8_t *id, size_t id_len, bool writing)
{
    static const uint8_t zero[TK_SESSION_ID_LEN];
    struct tk_doc_session *s = (struct tk_doc_session *)a->base;
    if (sodium_memcmp(tk->session, zero, sizeof zero) == 0 || id_len != TK_SESSION_ID_LEN ||
        !doc_session_at(a->base, a->cap) ||
        sodium_memcmp(s->id, tk->session, TK_SESSION_ID_LEN) != 0 ||
        sodium_memcmp(id, tk->session, TK_SESSION_ID_LEN) != 0 || s->writing != writing ||
        s->finished)
        return NULL;
    a->lo = s->arena_lo;
    return s;
}

static void end_session(struct tk_call *c)
{
    tk_session_close(c->tk, c->arena->base, c->arena->cap);
}

/* A new session at the arena's low end (the dispatcher closed any other). */
static struct tk_doc_session *new_session(struct tk_call *c, bool writing)
{
    struct tk_doc_session *s = tk_arena_keep(c->arena, sizeof *s);
    if (s == NULL || (uint8_t *)s != c->arena->base)
        return NULL;
    memset(s, 0, sizeof *s);
    s->writing = writing;
    crypto_generichash_init(hash_state(s), NULL, 0, TK_DOC_HASH_LEN);
    return s;
}

static void open_session(struct tk_call *c, struct tk_doc_session *s)
{
    randombytes_buf(s->id, sizeof s->id);
    s->magic = TK_DOC_MAGIC;
    s->arena_lo = c->arena->lo;
    memcpy(c->tk->session, s->id, sizeof s->id);
}

static void chunk_ad(uint8_t ad[AD_LEN], const struct tk_doc_session *s)
{
    memcpy(ad, s->doc_id, TK_DOC_ID_LEN);
    tk_put_le64(ad + TK_DOC_ID_LEN, s->revision);
}

/* ------------------------------------------------------------ metadata */

static bool type_ok(const char *t)
{
    size_t i, n = strlen(t);
    if (n < 1 || n > TK_DOC_TYPE_MAX)
        return false;
    for (i = 0; i < n; i++) {
        char ch = t[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
              ch == '-'))
            return false;
    }
    return true;
}

int tk_doc_meta_check(const Cohort__DocMeta *m)
{
    size_t i;
    if (m == NULL)
        return TK_ERR_MALFORMED;
    if (strlen(m->type) > TK_DOC_TYPE_MAX || strlen(m->author) > TK_DOC_TEXT_MAX ||
        strlen(m->subject) > TK_DOC_TEXT_MAX || m->n_tags > TK_DOC_TAGS_MAX)
        return TK_ERR_TOO_LARGE;
    for (i = 0; i < m->n_tags; i++)
        if (strlen(m->tags[i]) > TK_DOC_TAG_MAX)
            return TK_ERR_TOO_LARGE;
    if (cohort__doc_meta__get_packed_size(m) > TK_DOC_META_MAX)
        return TK_ERR_TOO_LARGE;
    return type_ok(m->type) ? TK_OK : TK_ERR_MALFORMED;
}

/* ------------------------------------------------------- finding records */

struct find {
    const uint8_t *doc_id;
    uint64_t want;   /* a revision, or 0 for the latest */
    uint64_t latest; /* the latest revision seen, 0 if none */
    bool found;      /* rec holds the wanted revision's DocRecord */
    uint8_t *rec;    /* TK_DOC_RECORD_MAX bytes */
    size_t rec_len;
};

int tk_doc_ident(const uint8_t *body, size_t len, const uint8_t **id, uint64_t *rev)
{
    struct tk_wfield f;
    size_t pos = 0;
    int more;
    *id = NULL;
    *rev = 0;
    while ((more = tk_wire_next(body, len, &pos, &f)) == 1) {
        if (f.field == 1 && f.wire_type == 2 && f.len == TK_DOC_ID_LEN)
            *id = f.data;
        else if (f.field == 2 && f.wire_type == 0)
            *rev = f.varint;
    }
    if (more < 0 || *id == NULL || *rev == 0)
        return TK_ERR_TAMPERED;
    return TK_OK;
}

static int find_fn(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len, uint64_t index)
{
    struct find *f = ctx;
    const uint8_t *body, *id;
    size_t body_len;
    uint64_t rev;
    int rc;
    (void)a;
    (void)index;
    if ((rc = tk_record_kind(plain, len, TK_REC_DOC, &body, &body_len)) != 1)
        return rc;
    if ((rc = tk_doc_ident(body, body_len, &id, &rev)) != TK_OK)
        return rc;
    if (memcmp(id, f->doc_id, TK_DOC_ID_LEN) != 0)
        return TK_OK;
    f->latest = rev;
    if (f->want == 0 || f->want == rev) {
        if (body_len > TK_DOC_RECORD_MAX)
            return TK_ERR_TAMPERED;
        memcpy(f->rec, body, body_len);
        f->rec_len = body_len;
        f->found = true;
    }
    return TK_OK;
}

static int find_record(struct tk_call *c, struct find *f, const uint8_t *doc_id, uint64_t want)
{
    memset(f, 0, sizeof *f);
    f->doc_id = doc_id;
    f->want = want;
    f->rec = tk_arena_scratch(c->arena, TK_DOC_RECORD_MAX);
    if (f->rec == NULL)
        return TK_ERR_NO_MEMORY;
    return tk_log_scan(c->tk, c->arena, false, find_fn, f);
}

size_t tk_doc_ref_len(uint64_t rev, uint64_t size, uint64_t cipher_size)
{
    return tk_field_len(1, TK_DOC_ID_LEN) + 1 + tk_varint_len(rev) +
           tk_field_len(3, TK_DOC_HASH_LEN) + 1 + tk_varint_len(size) + 1 +
           tk_varint_len(cipher_size);
}

void tk_doc_ref_write(struct tk_wbuf *w, uint32_t field, const uint8_t *doc_id, uint64_t rev,
                      const uint8_t *hash, uint64_t size, uint64_t cipher_size)
{
    tk_w_open(w, field, tk_doc_ref_len(rev, size, cipher_size));
    tk_w_bytes(w, 1, doc_id, TK_DOC_ID_LEN);
    tk_w_uint(w, 2, rev);
    tk_w_bytes(w, 3, hash, TK_DOC_HASH_LEN);
    tk_w_uint(w, 4, size);
    tk_w_uint(w, 5, cipher_size);
}

/* A stored record, decoded into scratch and checked. */
static int record_decode(Cohort__DocRecord **out, struct tk_arena *a, const uint8_t *rec,
                         size_t len)
{
    int rc = TK_OK;
    Cohort__DocRecord *r =
        (Cohort__DocRecord *)tk_unpack(a, &cohort__doc_record__descriptor, rec, len, &rc);
    if (r == NULL)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_TAMPERED;
    if (r->doc_id.len != TK_DOC_ID_LEN ||
        r->key.len != crypto_secretstream_xchacha20poly1305_KEYBYTES ||
        r->content_hash.len != TK_DOC_HASH_LEN || r->meta == NULL || r->revision == 0)
        return TK_ERR_TAMPERED;
    *out = r;
    return TK_OK;
}

/* -------------------------------------------------------------- writing */

/*
 * Whether cr may apply verb to a document of metadata m. A refusal is
 * logged ("doc.denied") and committed before the request fails: the
 * document is untouched, the attempt is on record. A credential that does
 * not authenticate never gets this far (TK_ERR_AUTH, not logged).
 */
static int allow(struct tk_call *c, const struct tk_cred *cr, uint32_t verb,
                 const Cohort__DocMeta *m, const uint8_t *doc_id)
{
    int rc = tk_cred_match(cr, verb, m), lrc;
    if (rc != TK_ERR_DENIED)
        return rc;
    lrc = tk_audit_event(c, "doc.denied", doc_id, doc_id ? TK_DOC_ID_LEN : 0, cr, false);
    if (lrc == TK_OK)
        lrc = tk_log_commit(c->tk, c->arena);
    return lrc != TK_OK ? lrc : rc;
}

/*
 * DocBegin on a document that is not one of the owner's: a revision of a
 * document received in a read-write share (tk_share.c), at the share's
 * current revision, with PUT on what it is and what it becomes and the
 * owner's metadata kept. The scratch it uses is the caller's to release.
 */
static int shared_begin(struct tk_call *c, const struct tk_cred *cr, const Cohort__DocBegin *req,
                        uint8_t share_id[TK_SHARE_ID_LEN], uint8_t base_hash[TK_DOC_HASH_LEN],
                        uint64_t *revision)
{
    struct tk_share_write *w;
    Cohort__DocMeta *m;
    int rc = TK_OK;

    if ((w = tk_arena_scratch(c->arena, sizeof *w)) == NULL)
        return TK_ERR_NO_MEMORY;
    if ((rc = tk_share_write_begin(c, req->doc_id.data, w)) != TK_OK)
        return rc;
    m = (Cohort__DocMeta *)tk_unpack(c->arena, &cohort__doc_meta__descriptor, w->meta, w->meta_len,
                                     &rc);
    if (m == NULL)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_TAMPERED;
    if ((rc = allow(c, cr, COHORT__VERB__VERB_PUT, m, req->doc_id.data)) != TK_OK ||
        (rc = allow(c, cr, COHORT__VERB__VERB_PUT, req->meta, req->doc_id.data)) != TK_OK)
        return rc;
    if (!tk_share_meta_kept(m, req->meta)) {
        tk_text_put(c->reason, 0, sizeof c->reason,
                    "a received document keeps its owner's metadata (but modified)");
        return TK_ERR_DENIED;
    }
    if (w->revision != req->base_revision)
        return TK_ERR_CONFLICT;
    memcpy(share_id, w->share_id, TK_SHARE_ID_LEN);
    memcpy(base_hash, w->hash, TK_DOC_HASH_LEN);
    *revision = w->revision + 1;
    return TK_OK;
}

int tk_do_doc_begin(struct tk_call *c, const Cohort__DocBegin *req)
{
    size_t mark = tk_arena_mark(c->arena);
    struct tk_doc_session *s;
    const struct tk_cred *cr;
    uint8_t doc_id[TK_DOC_ID_LEN], cred_id[TK_CRED_ID_LEN];
    uint8_t share_id[TK_SHARE_ID_LEN], base_hash[TK_DOC_HASH_LEN];
    char app[TK_CRED_NAME_MAX + 1];
    uint64_t revision = 1;
    size_t meta_len, session_len;
    struct find f;
    bool declared = false, by_app, shared = false;
    int rc;

    if (!tk_has_flag(c->tk, TK_FLAG_KEYS))
        return TK_ERR_NOT_PROVISIONED;
    if ((rc = tk_cred_load(c, &cr)) != TK_OK)
        return rc;
    if ((rc = tk_doc_meta_check(req->meta)) != TK_OK)
        return rc;
    meta_len = cohort__doc_meta__get_packed_size(req->meta);
    if (meta_len > TK_DOC_META_MAX)
        return TK_ERR_TOO_LARGE;
    if (req->doc_id.len == 0) {
        if (req->base_revision != 0)
            return TK_ERR_CONFLICT;
        if ((rc = allow(c, cr, COHORT__VERB__VERB_POST, req->meta, NULL)) != TK_OK)
            return rc;
        randombytes_buf(doc_id, sizeof doc_id);
    } else if (req->doc_id.len == TK_DOC_ID_LEN) {
        Cohort__DocRecord *r;
        memcpy(doc_id, req->doc_id.data, sizeof doc_id);
        if ((rc = find_record(c, &f, doc_id, 0)) != TK_OK)
            return rc;
        if (f.latest == 0) {
            if ((rc = shared_begin(c, cr, req, share_id, base_hash, &revision)) != TK_OK)
                return rc;
            shared = true;
        } else {
            if ((rc = record_decode(&r, c->arena, f.rec, f.rec_len)) != TK_OK)
                return rc;
            sodium_memzero(r->key.data, r->key.len);
            sodium_memzero(f.rec, TK_DOC_RECORD_MAX);
            /* PUT on what the document is and on what it becomes. */
            if ((rc = allow(c, cr, COHORT__VERB__VERB_PUT, r->meta, doc_id)) != TK_OK ||
                (rc = allow(c, cr, COHORT__VERB__VERB_PUT, req->meta, doc_id)) != TK_OK)
                return rc;
            if (f.latest != req->base_revision)
                return TK_ERR_CONFLICT;
            revision = f.latest + 1;
        }
    } else {
        return TK_ERR_MALFORMED;
    }
    /* Known now, so that a full table list fails here rather than at the
     * end (a received document has no row here: it is its owner's). */
    if (!shared && (rc = tk_docs_declared(c->tk, c->arena, &declared)) != TK_OK)
        return rc;
    /* Who asks, for the audit line; the rest of the checks' scratch goes. */
    by_app = cr != NULL;
    memset(cred_id, 0, sizeof cred_id);
    app[0] = '\0';
    if (by_app) {
        memcpy(cred_id, cr->id, TK_CRED_ID_LEN);
        tk_text_put(app, 0, sizeof app, cr->info->name);
    }
    tk_arena_release(c->arena, mark);

    if ((s = new_session(c, true)) == NULL)
        return TK_ERR_NO_MEMORY;
    memcpy(s->doc_id, doc_id, sizeof doc_id);
    s->revision = revision;
    crypto_secretstream_xchacha20poly1305_keygen(s->key);
    s->meta_len = cohort__doc_meta__pack(req->meta, s->meta);
    s->docs_declared = declared;
    s->by_app = by_app;
    memcpy(s->cred_id, cred_id, sizeof cred_id);
    memcpy(s->app, app, sizeof app);
    s->shared = shared;
    if (shared) {
        memcpy(s->share_id, share_id, sizeof share_id);
        memcpy(s->base_hash, base_hash, sizeof base_hash);
    }
    open_session(c, s);

    /* DocSession { session, max_chunk, share_id (a write back) } */
    session_len = tk_field_len(1, TK_SESSION_ID_LEN) + 1 + tk_varint_len(TK_DOC_DATA_MAX) +
                  (shared ? tk_field_len(5, TK_SHARE_ID_LEN) : 0);
    tk_w_open(c->out, 16, session_len);
    tk_w_bytes(c->out, 1, s->id, sizeof s->id);
    tk_w_uint(c->out, 2, TK_DOC_DATA_MAX);
    if (shared)
        tk_w_bytes(c->out, 5, s->share_id, TK_SHARE_ID_LEN);
    return TK_OK;
}

/*
 * The session, data and last flag of a streamed request (DocWrite,
 * DocRead, RestoreFeed: { bytes session = 1; bytes data = 2; bool last = 3 }),
 * read without decoding it; data of more than max bytes is TK_ERR_TOO_LARGE.
 */
int tk_stream_parse(const uint8_t *body, size_t len, size_t max, const uint8_t **sid,
                    size_t *sid_len, const uint8_t **data, size_t *data_len, bool *last)
{
    struct tk_wfield f;
    size_t pos = 0;
    bool have_data = false;
    int more;
    *sid = NULL;
    *sid_len = 0;
    *data = NULL;
    *data_len = 0;
    *last = false;
    while ((more = tk_wire_next(body, len, &pos, &f)) == 1) {
        if (f.field == 1 && f.wire_type == 2) {
            if (*sid != NULL)
                return TK_ERR_MALFORMED;
            *sid = f.data;
            *sid_len = f.len;
        } else if (f.field == 2 && f.wire_type == 2) {
            if (have_data)
                return TK_ERR_MALFORMED;
            have_data = true;
            *data = f.data;
            *data_len = f.len;
        } else if (f.field == 3 && f.wire_type == 0) {
            *last = f.varint != 0;
        }
    }
    if (more < 0)
        return more;
    if (*data_len > max)
        return TK_ERR_TOO_LARGE;
    return *sid == NULL ? TK_ERR_SESSION : TK_OK;
}

/* Encrypt one chunk into out (its frame) and hash the frame. */
static void push_chunk(struct tk_doc_session *s, uint8_t *out, const uint8_t *m, size_t m_len,
                       uint8_t tag)
{
    uint8_t ad[AD_LEN];
    chunk_ad(ad, s);
    tk_put_le32(out, (uint32_t)(m_len + ABYTES));
    crypto_secretstream_xchacha20poly1305_push(&s->st, out + TK_DOC_FRAME_LEN, NULL, m, m_len, ad,
                                               sizeof ad, tag);
    crypto_generichash_update(hash_state(s), out, TK_DOC_FRAME_LEN + m_len + ABYTES);
    s->cipher_bytes += TK_DOC_FRAME_LEN + m_len + ABYTES;
}

/* What the last DocWrite stores, copied out of the session so that the
 * session's room is free for the store's scans and rewrite. */
struct revision {
    uint8_t doc_id[TK_DOC_ID_LEN];
    uint64_t revision;
    uint8_t key[crypto_secretstream_xchacha20poly1305_KEYBYTES];
    uint8_t hash[TK_DOC_HASH_LEN];
    uint64_t size, cipher_size;
    bool docs_declared, by_app;
    uint8_t cred_id[TK_CRED_ID_LEN];
    char app[TK_CRED_NAME_MAX + 1];
    Cohort__AuditEntry *audit; /* the audit line, when not doc.create or doc.update */
    size_t meta_len;
    uint8_t meta[TK_DOC_META_MAX];
};

/* Append the revision's record, its row of the documents table and its
 * audit line (not committed). */
static int append_revision(struct tk_call *c, const struct revision *v, bool declare)
{
    Cohort__StoreRecord sr = COHORT__STORE_RECORD__INIT;
    Cohort__DocRecord rec = COHORT__DOC_RECORD__INIT;
    Cohort__DocMeta *meta;
    int rc = TK_OK;

    meta = (Cohort__DocMeta *)tk_unpack(c->arena, &cohort__doc_meta__descriptor, v->meta,
                                        v->meta_len, &rc);
    if (meta == NULL)
        return rc;
    meta->size = v->size;
    rec.doc_id = (ProtobufCBinaryData){TK_DOC_ID_LEN, (uint8_t *)v->doc_id};
    rec.revision = v->revision;
    rec.key = (ProtobufCBinaryData){sizeof v->key, (uint8_t *)v->key};
    rec.content_hash = (ProtobufCBinaryData){TK_DOC_HASH_LEN, (uint8_t *)v->hash};
    rec.size = v->size;
    rec.cipher_size = v->cipher_size;
    rec.meta = meta;
    sr.body_case = COHORT__STORE_RECORD__BODY_DOC;
    sr.doc = &rec;
    if (cohort__doc_record__get_packed_size(&rec) > TK_DOC_RECORD_MAX)
        return TK_ERR_TOO_LARGE;
    if ((rc = tk_log_append(c->tk, c->arena, &sr)) != TK_OK ||
        (rc = tk_docs_row(c->tk, c->arena, declare, v->doc_id, v->revision, meta)) != TK_OK)
        return rc;
    if (v->audit != NULL)
        return tk_audit_append(c, v->audit);
    return tk_audit_event_by(c, v->revision == 1 ? "doc.create" : "doc.update", v->doc_id,
                             TK_DOC_ID_LEN, v->by_app ? v->cred_id : NULL, v->app, true);
}

/*
 * A rewrite of the log for one document (tk_log_rewrite): its row of the
 * documents table goes; on a delete its revisions' records go too. At the
 * end of the pass, `finish` appends what replaces them.
 */
struct eraser {
    struct tk_call *c;
    const uint8_t *doc_id;
    bool drop_records;
    struct tk_docs_edit *docs;
    const struct revision *store; /* an update: the new revision */
    const uint8_t *cred_id;       /* a delete: who asked (NULL: the host link) */
    const char *app;
};

static int erase_keep(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len, bool *keep);

/* Store a finished revision and commit: a new document is appended; a new
 * revision replaces the document's row, which rewrites the log. */
static int store_revision(struct tk_call *c, const struct revision *v)
{
    struct eraser e = {c, v->doc_id, false, NULL, v, NULL, NULL};
    int rc;
    if (v->revision == 1) {
        if ((rc = append_revision(c, v, !v->docs_declared)) != TK_OK)
            return rc;
        return tk_log_commit(c->tk, c->arena);
    }
    if ((rc = tk_docs_edit_init(&e.docs, c->tk, c->arena, v->doc_id)) != TK_OK)
        return rc;
    return tk_log_rewrite(c->tk, c->arena, erase_keep, &e);
}

int tk_doc_store(struct tk_call *c, const struct tk_doc_rev *r, Cohort__AuditEntry *audit)
{
    struct revision *v;
    int rc;
    if (r->revision < 2 || r->meta_len > TK_DOC_META_MAX)
        return TK_ERR_MALFORMED;
    if ((v = tk_arena_scratch(c->arena, sizeof *v)) == NULL)
        return TK_ERR_NO_MEMORY;
    memset(v, 0, sizeof *v);
    memcpy(v->doc_id, r->doc_id, TK_DOC_ID_LEN);
    v->revision = r->revision;
    memcpy(v->key, r->key, sizeof v->key);
    memcpy(v->hash, r->hash, TK_DOC_HASH_LEN);
    v->size = r->size;
    v->cipher_size = r->cipher_size;
    v->audit = audit;
    v->meta_len = r->meta_len;
    memcpy(v->meta, r->meta, r->meta_len);
    rc = store_revision(c, v);
    sodium_memzero(v->key, sizeof v->key);
    return rc;
}

/* A received document's revision goes back to its owner (tk_share.c):
 * the recipient keeps it in its share, and answers the return grant. */
static int write_back(struct tk_call *c, const struct revision *v, const uint8_t *share_id,
                      const uint8_t *base_hash)
{
    struct tk_doc_rev *r;
    Cohort__DocMeta *meta;
    int rc = TK_OK;

    if ((r = tk_arena_scratch(c->arena, sizeof *r)) == NULL)
        return TK_ERR_NO_MEMORY;
    meta = (Cohort__DocMeta *)tk_unpack(c->arena, &cohort__doc_meta__descriptor, v->meta,
                                        v->meta_len, &rc);
    if (meta == NULL)
        return rc;
    meta->size = v->size;
    if (cohort__doc_meta__get_packed_size(meta) > TK_DOC_META_MAX)
        return TK_ERR_TOO_LARGE;
    memcpy(r->doc_id, v->doc_id, TK_DOC_ID_LEN);
    r->revision = v->revision;
    memcpy(r->key, v->key, sizeof r->key);
    memcpy(r->hash, v->hash, TK_DOC_HASH_LEN);
    r->size = v->size;
    r->cipher_size = v->cipher_size;
    r->meta_len = cohort__doc_meta__pack(meta, r->meta);
    rc = tk_share_write_back(c, r, share_id, base_hash, v->by_app ? v->cred_id : NULL, v->app);
    sodium_memzero(r->key, sizeof r->key);
    return rc;
}

int tk_do_doc_write(struct tk_call *c, const uint8_t *body, size_t len)
{
    struct tk_doc_session *s;
    const uint8_t *sid, *data;
    size_t sid_len, data_len, total, n_full, rest, out_len, pos = 0, i, payload, start;
    uint64_t plain_after, cipher_after;
    uint8_t hash[TK_DOC_HASH_LEN], *p;
    struct revision *v;
    bool last, back;
    int rc;

    if ((rc = tk_stream_parse(body, len, TK_DOC_DATA_MAX, &sid, &sid_len, &data, &data_len,
                              &last)) != TK_OK)
        return rc;
    if ((s = find_session(c->tk, c->arena, sid, sid_len, true)) == NULL)
        return TK_ERR_SESSION;

    /* Full chunks go out while more bytes follow them; the rest waits. */
    total = s->buf_len + data_len;
    n_full = total > TK_DOC_CHUNK ? (total - 1) / TK_DOC_CHUNK : 0;
    rest = total - n_full * TK_DOC_CHUNK;
    out_len = (s->started ? 0 : HEADER_LEN) + n_full * FRAME_FULL +
              (last ? TK_DOC_FRAME_LEN + rest + ABYTES : 0);
    plain_after = s->plain_bytes + data_len;
    cipher_after = s->cipher_bytes + out_len;
    payload = tk_field_len(1, out_len) +
              (last ? tk_field_len(2, tk_doc_ref_len(s->revision, plain_after, cipher_after)) : 0);
    back = last && s->shared; /* its length is known at the end */
    start = c->out->len;
    if (back)
        tk_w_begin_wide(c->out); /* room for DocCipher's header, put at the end */
    else
        tk_w_open(c->out, 17, payload);
    tk_w_open(c->out, 1, out_len);
    if ((p = tk_w_reserve(c->out, out_len)) == NULL)
        return TK_ERR_RESPONSE_SPACE;

    if (!s->started) {
        crypto_secretstream_xchacha20poly1305_init_push(&s->st, p, s->key);
        crypto_generichash_update(hash_state(s), p, HEADER_LEN);
        s->cipher_bytes += HEADER_LEN;
        s->started = true;
        p += HEADER_LEN;
    }
    for (i = 0; i < n_full; i++) {
        if (s->buf_len > 0) {
            size_t take = TK_DOC_CHUNK - s->buf_len;
            memcpy(s->buf + s->buf_len, data + pos, take);
            pos += take;
            push_chunk(s, p, s->buf, TK_DOC_CHUNK,
                       crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
            s->buf_len = 0;
        } else {
            push_chunk(s, p, data + pos, TK_DOC_CHUNK,
                       crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
            pos += TK_DOC_CHUNK;
        }
        p += FRAME_FULL;
    }
    if (data_len > pos)
        memcpy(s->buf + s->buf_len, data + pos, data_len - pos);
    s->buf_len += data_len - pos;
    s->plain_bytes = plain_after;
    if (!last)
        return TK_OK;

    push_chunk(s, p, s->buf, s->buf_len, crypto_secretstream_xchacha20poly1305_TAG_FINAL);
    sodium_memzero(s->buf, sizeof s->buf);
    s->buf_len = 0;
    crypto_generichash_final(hash_state(s), hash, sizeof hash);
    /* The session ends here: what the store needs moves to scratch, and
     * the session's room goes back to the arena. */
    if ((v = tk_arena_scratch(c->arena, sizeof *v)) == NULL)
        return TK_ERR_NO_MEMORY;
    memcpy(v->doc_id, s->doc_id, TK_DOC_ID_LEN);
    v->revision = s->revision;
    memcpy(v->key, s->key, sizeof v->key);
    memcpy(v->hash, hash, sizeof hash);
    v->size = s->plain_bytes;
    v->cipher_size = s->cipher_bytes;
    v->docs_declared = s->docs_declared;
    v->by_app = s->by_app;
    memcpy(v->cred_id, s->cred_id, sizeof v->cred_id);
    memcpy(v->app, s->app, sizeof v->app);
    v->audit = NULL;
    v->meta_len = s->meta_len;
    memcpy(v->meta, s->meta, s->meta_len);
    s->finished = true;
    if (back) {
        uint8_t share_id[TK_SHARE_ID_LEN], base_hash[TK_DOC_HASH_LEN];
        memcpy(share_id, s->share_id, sizeof share_id);
        memcpy(base_hash, s->base_hash, sizeof base_hash);
        end_session(c);
        c->arena->lo = 0;
        tk_doc_ref_write(c->out, 2, v->doc_id, v->revision, v->hash, v->size, v->cipher_size);
        rc = write_back(c, v, share_id, base_hash);
        tk_w_end_wide(c->out, 17, start);
        sodium_memzero(v->key, sizeof v->key);
        return rc;
    }
    end_session(c);
    c->arena->lo = 0;
    rc = store_revision(c, v);
    if (rc == TK_OK)
        tk_doc_ref_write(c->out, 2, v->doc_id, v->revision, v->hash, v->size, v->cipher_size);
    sodium_memzero(v->key, sizeof v->key);
    return rc;
}

/* -------------------------------------------------------------- reading */

/* tk_cred_match over packed metadata, for a credential already loaded. */
static int allow_packed(struct tk_call *c, const struct tk_cred *cr, uint32_t verb,
                        const uint8_t *meta, size_t meta_len)
{
    size_t mark = tk_arena_mark(c->arena);
    Cohort__DocMeta *m;
    int rc = TK_OK;
    if (cr == NULL || cr->info->owner)
        return TK_OK;
    m = (Cohort__DocMeta *)tk_unpack(c->arena, &cohort__doc_meta__descriptor, meta, meta_len, &rc);
    if (m == NULL)
        rc = rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_TAMPERED;
    else
        rc = tk_cred_match(cr, verb, m);
    tk_arena_release(c->arena, mark);
    return rc;
}

/* The revision to open: the owner's own record, else a received share's. */
static int open_source(struct tk_call *c, const struct tk_cred *cr, const Cohort__DocOpen *req,
                       struct tk_shared_doc *d)
{
    Cohort__DocRecord *r;
    struct find f;
    int rc;

    if ((rc = find_record(c, &f, req->doc_id.data, req->revision)) != TK_OK)
        return rc;
    if (!f.found) {
        if (f.latest != 0)
            return TK_ERR_NOT_FOUND; /* an own document without that revision */
        if ((rc = tk_share_find_doc(c, req->doc_id.data, req->revision, false, d)) != TK_OK)
            return rc;
        if ((rc = allow_packed(c, cr, COHORT__VERB__VERB_GET, d->meta, d->meta_len)) != TK_OK)
            return rc;
        return tk_share_find_doc(c, req->doc_id.data, req->revision, true, d);
    }
    rc = record_decode(&r, c->arena, f.rec, f.rec_len);
    if (rc == TK_OK) {
        memcpy(d->doc_id, r->doc_id.data, TK_DOC_ID_LEN);
        d->revision = r->revision;
        memcpy(d->key, r->key.data, sizeof d->key);
        memcpy(d->content_hash, r->content_hash.data, TK_DOC_HASH_LEN);
        d->size = r->size;
        d->cipher_size = r->cipher_size;
        d->meta_len = cohort__doc_meta__get_packed_size(r->meta);
        if (d->meta_len > TK_DOC_META_MAX)
            rc = TK_ERR_TAMPERED;
        else
            cohort__doc_meta__pack(r->meta, d->meta);
        sodium_memzero(r->key.data, r->key.len);
    }
    sodium_memzero(f.rec, TK_DOC_RECORD_MAX);
    if (rc == TK_OK)
        rc = allow_packed(c, cr, COHORT__VERB__VERB_GET, d->meta, d->meta_len);
    return rc;
}

int tk_do_doc_open(struct tk_call *c, const Cohort__DocOpen *req)
{
    struct tk_doc_session *s;
    struct tk_shared_doc *d;
    const struct tk_cred *cr;
    size_t ref, mark;
    int rc;

    if (!tk_has_flag(c->tk, TK_FLAG_KEYS))
        return TK_ERR_NOT_PROVISIONED;
    if ((d = tk_arena_scratch(c->arena, sizeof *d)) == NULL)
        return TK_ERR_NO_MEMORY;
    memset(d, 0, sizeof *d);
    mark = tk_arena_mark(c->arena); /* what the checks use goes before the session */
    if ((rc = tk_cred_load(c, &cr)) != TK_OK)
        return rc;
    if (req->doc_id.len != TK_DOC_ID_LEN)
        return TK_ERR_MALFORMED;
    rc = open_source(c, cr, req, d);
    /* Every read is on record, and so is a refusal (not a failure to
     * authenticate: that never reaches here). */
    if (rc == TK_OK || rc == TK_ERR_DENIED) {
        int lrc = tk_audit_event(c, rc == TK_OK ? "doc.read" : "doc.denied", req->doc_id.data,
                                 TK_DOC_ID_LEN, cr, rc == TK_OK);
        if (lrc == TK_OK)
            lrc = tk_log_commit(c->tk, c->arena);
        if (lrc != TK_OK)
            rc = lrc;
    }
    tk_arena_release(c->arena, mark);
    if (rc != TK_OK) {
        sodium_memzero(d, sizeof *d);
        return rc;
    }
    if ((s = new_session(c, false)) == NULL) {
        sodium_memzero(d, sizeof *d);
        return TK_ERR_NO_MEMORY;
    }
    memcpy(s->doc_id, d->doc_id, TK_DOC_ID_LEN);
    s->revision = d->revision;
    memcpy(s->key, d->key, sizeof s->key);
    memcpy(s->content_hash, d->content_hash, TK_DOC_HASH_LEN);
    s->cipher_size = d->cipher_size;
    open_session(c, s);

    /* DocSession { session, max_chunk, ref, meta } */
    ref = tk_doc_ref_len(d->revision, d->size, d->cipher_size);
    tk_w_open(c->out, 16,
              tk_field_len(1, TK_SESSION_ID_LEN) + 1 + tk_varint_len(TK_DOC_DATA_MAX) +
                  tk_field_len(3, ref) + tk_field_len(4, d->meta_len));
    tk_w_bytes(c->out, 1, s->id, sizeof s->id);
    tk_w_uint(c->out, 2, TK_DOC_DATA_MAX);
    tk_doc_ref_write(c->out, 3, d->doc_id, d->revision, d->content_hash, d->size, d->cipher_size);
    tk_w_bytes(c->out, 4, d->meta, d->meta_len);
    sodium_memzero(d, sizeof *d);
    return TK_OK;
}

/*
 * Take n bytes of the file. With dry set nothing changes and nothing is
 * decrypted: the framing is checked and *plain_len is what the real pass
 * will write to out (the two passes agree unless a chunk fails to
 * authenticate or carries the wrong tag, which the real pass refuses).
 */
static int read_feed(struct tk_doc_session *s, const uint8_t *d, size_t n, uint8_t *out,
                     size_t *plain_len, bool dry)
{
    uint64_t pos = s->cipher_bytes;
    size_t bl = s->buf_len, i = 0, o = 0, k;
    uint8_t pre[TK_DOC_FRAME_LEN], ad[AD_LEN], none[1];
    uint32_t flen = 0;

    *plain_len = 0;
    if (out == NULL)
        out = none; /* nothing is written through it: the dry pass, or no plaintext */
    if (n > s->cipher_size - pos)
        return TK_ERR_TAMPERED; /* beyond the recorded size */
    memcpy(pre, s->buf, sizeof pre);
    if (pos >= HEADER_LEN && bl >= TK_DOC_FRAME_LEN)
        flen = tk_get_le32(pre);
    chunk_ad(ad, s);
    while (i < n) {
        size_t need, take;
        bool header = pos < HEADER_LEN;
        if (header)
            need = HEADER_LEN - bl;
        else if (bl < TK_DOC_FRAME_LEN)
            need = TK_DOC_FRAME_LEN - bl;
        else
            need = TK_DOC_FRAME_LEN + flen - bl;
        take = need < n - i ? need : n - i;
        if (!header)
            for (k = 0; k < take && bl + k < TK_DOC_FRAME_LEN; k++)
                pre[bl + k] = d[i + k];
        if (!dry)
            memcpy(s->buf + bl, d + i, take);
        bl += take;
        i += take;
        pos += take;
        if (header) {
            if (bl == HEADER_LEN) {
                if (!dry) {
                    crypto_generichash_update(hash_state(s), s->buf, HEADER_LEN);
                    if (crypto_secretstream_xchacha20poly1305_init_pull(&s->st, s->buf, s->key) !=
                        0)
                        return TK_ERR_DECRYPT;
                }
                bl = 0;
            }
            continue;
        }
        if (bl == TK_DOC_FRAME_LEN && take > 0) {
            flen = tk_get_le32(pre);
            if (flen < ABYTES || flen > TK_DOC_BOX_MAX || flen > s->cipher_size - pos)
                return TK_ERR_TAMPERED;
            continue;
        }
        if (bl > TK_DOC_FRAME_LEN && bl == TK_DOC_FRAME_LEN + flen) {
            size_t m_len = flen - ABYTES;
            bool end = pos == s->cipher_size;
            if (!dry) {
                unsigned char tag = 0;
                unsigned long long got = 0;
                crypto_generichash_update(hash_state(s), s->buf, bl);
                if (crypto_secretstream_xchacha20poly1305_pull(&s->st, out + o, &got, &tag,
                                                               s->buf + TK_DOC_FRAME_LEN, flen, ad,
                                                               sizeof ad) != 0)
                    return TK_ERR_DECRYPT;
                /* Only the last chunk may be short, and it must be final. */
                if ((!end && m_len != TK_DOC_CHUNK) ||
                    end != (tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL) ||
                    (tag != crypto_secretstream_xchacha20poly1305_TAG_FINAL &&
                     tag != crypto_secretstream_xchacha20poly1305_TAG_MESSAGE))
                    return TK_ERR_TAMPERED;
            }
            o += m_len;
            bl = 0;
        }
    }
    if (!dry) {
        s->cipher_bytes = pos;
        s->buf_len = bl;
        s->plain_bytes += o;
    }
    *plain_len = o;
    return TK_OK;
}

int tk_do_doc_read(struct tk_call *c, const uint8_t *body, size_t len)
{
    struct tk_doc_session *s;
    const uint8_t *sid, *data;
    size_t sid_len, data_len, plain_len, got;
    uint8_t hash[TK_DOC_HASH_LEN], *p = NULL;
    bool last, done = false;
    int rc;

    if ((rc = tk_stream_parse(body, len, TK_DOC_DATA_MAX, &sid, &sid_len, &data, &data_len,
                              &last)) != TK_OK)
        return rc;
    if ((s = find_session(c->tk, c->arena, sid, sid_len, false)) == NULL)
        return TK_ERR_SESSION;
    if ((rc = read_feed(s, data, data_len, NULL, &plain_len, true)) != TK_OK)
        return rc;
    tk_w_open(c->out, 18, tk_field_len(1, plain_len) + 2);
    tk_w_open(c->out, 1, plain_len);
    if (plain_len > 0 && (p = tk_w_reserve(c->out, plain_len)) == NULL)
        return TK_ERR_RESPONSE_SPACE;
    if ((rc = read_feed(s, data, data_len, p, &got, false)) != TK_OK)
        return rc;
    if (got != plain_len)
        abort(); /* the dry pass measured the same framing */
    if (s->cipher_bytes == s->cipher_size) {
        crypto_generichash_final(hash_state(s), hash, sizeof hash);
        if (sodium_memcmp(hash, s->content_hash, sizeof hash) != 0)
            return TK_ERR_TAMPERED;
        done = true;
    } else if (last) {
        return TK_ERR_TAMPERED; /* the file ends early */
    }
    tk_w_tag(c->out, 2, 0);
    tk_w_varint(c->out, done);
    if (done) {
        s->finished = true;
        end_session(c);
    }
    return TK_OK;
}

/* ------------------------------------------------------ listing, deleting */

struct lister {
    uint64_t after;
    uint32_t max;
    /* Pass 1: the first max + 1 document records after the cursor. */
    uint32_t n;
    uint64_t index[TK_DOC_LIST_MAX + 1];
    uint8_t id[TK_DOC_LIST_MAX + 1][TK_DOC_ID_LEN];
    bool stale[TK_DOC_LIST_MAX + 1];
    /* Pass 3: writing what the filter and the credential let through. */
    struct tk_wbuf *out;
    const Cohort__PermRule *filter;
    const struct tk_cred *cr;
    int pass;
};

static int list_fn(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len, uint64_t index)
{
    struct lister *l = ctx;
    const uint8_t *body, *id;
    size_t body_len;
    uint32_t i;
    uint64_t rev;
    int rc;

    if ((rc = tk_record_kind(plain, len, TK_REC_DOC, &body, &body_len)) != 1)
        return rc;
    if ((rc = tk_doc_ident(body, body_len, &id, &rev)) != TK_OK)
        return rc;
    if (l->pass == 1) {
        if (index + 1 > l->after && l->n < l->max + 1) {
            l->index[l->n] = index + 1;
            memcpy(l->id[l->n], id, TK_DOC_ID_LEN);
            l->n++;
        }
        return TK_OK;
    }
    if (l->pass == 2) {
        for (i = 0; i < l->n; i++)
            if (l->index[i] < index + 1 && memcmp(l->id[i], id, TK_DOC_ID_LEN) == 0)
                l->stale[i] = true;
        return TK_OK;
    }
    for (i = 0; i < l->n && i < l->max; i++) {
        if (l->index[i] == index + 1 && !l->stale[i]) {
            Cohort__DocRecord *r;
            if ((rc = record_decode(&r, a, body, body_len)) != TK_OK)
                return rc;
            sodium_memzero(r->key.data, r->key.len);
            if ((l->filter != NULL && !tk_rule_matches(l->filter, r->meta)) ||
                tk_cred_match(l->cr, COHORT__VERB__VERB_GET, r->meta) != TK_OK)
                continue;
            tk_doc_ref_write(l->out, 1, r->doc_id.data, r->revision, r->content_hash.data, r->size,
                             r->cipher_size);
            tk_w_message(l->out, 2, &r->meta->base);
        }
    }
    return TK_OK;
}

/*
 * A page of the current revisions. The cursor is a position in the log (a
 * record's index + 1): a page holds the current revisions among the first
 * max document records after the cursor, so it may hold fewer than max
 * while more remain (the others were superseded).
 */
int tk_do_doc_list(struct tk_call *c, const Cohort__DocList *req)
{
    const struct tk_cred *cr;
    struct lister *l;
    size_t start;
    uint64_t next;
    bool more;
    int rc;

    if (!tk_has_flag(c->tk, TK_FLAG_KEYS))
        return TK_ERR_NOT_PROVISIONED;
    if ((rc = tk_cred_load(c, &cr)) != TK_OK)
        return rc;
    if (req->max < 1 || req->max > TK_DOC_LIST_MAX)
        return TK_ERR_TOO_LARGE;
    if (req->filter != NULL && (rc = tk_rule_check(req->filter, false)) != TK_OK)
        return rc;
    if ((l = tk_arena_scratch(c->arena, sizeof *l)) == NULL)
        return TK_ERR_NO_MEMORY;
    memset(l, 0, sizeof *l);
    l->after = req->after;
    l->max = req->max;
    l->filter = req->filter;
    l->cr = cr;
    for (l->pass = 1; l->pass <= 2; l->pass++)
        if ((rc = tk_log_scan(c->tk, c->arena, false, list_fn, l)) != TK_OK)
            return rc;
    more = l->n > l->max;
    next = l->n == 0 ? l->after : l->index[(more ? l->max : l->n) - 1];
    /* DocPage { refs, metas, more, next }, its length written after it. */
    start = tk_w_begin_wide(c->out);
    if (c->out->overflow)
        return TK_ERR_RESPONSE_SPACE;
    l->out = c->out;
    l->pass = 3;
    if (l->n > 0 && (rc = tk_log_scan(c->tk, c->arena, false, list_fn, l)) != TK_OK)
        return rc;
    tk_w_uint(c->out, 3, more);
    tk_w_uint(c->out, 4, next);
    tk_w_end_wide(c->out, 19, start);
    return c->out->overflow ? TK_ERR_RESPONSE_SPACE : TK_OK;
}

static int erase_keep(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len, bool *keep)
{
    struct eraser *e = ctx;
    const uint8_t *body, *id;
    size_t body_len;
    uint32_t kind;
    uint64_t rev;
    int rc;

    if (plain == NULL) {
        if ((rc = tk_docs_edit_keep(e->docs, a, NULL, 0, keep)) != TK_OK)
            return rc;
        *keep = false; /* one pass */
        if (e->store != NULL)
            return append_revision(e->c, e->store, !tk_docs_edit_declared(e->docs));
        return tk_audit_event_by(e->c, "doc.delete", e->doc_id, TK_DOC_ID_LEN, e->cred_id, e->app,
                                 true);
    }
    *keep = false;
    if ((rc = tk_record_body(plain, len, &kind, &body, &body_len)) != TK_OK)
        return rc;
    if (kind == TK_REC_DOC && e->drop_records) {
        if ((rc = tk_doc_ident(body, body_len, &id, &rev)) != TK_OK)
            return rc;
        if (memcmp(id, e->doc_id, TK_DOC_ID_LEN) == 0)
            return TK_OK;
    }
    return tk_docs_edit_keep(e->docs, a, plain, len, keep);
}

int tk_do_doc_delete(struct tk_call *c, const Cohort__DocDelete *req)
{
    size_t mark = tk_arena_mark(c->arena);
    uint8_t hash[TK_DOC_HASH_LEN], cred_id[TK_CRED_ID_LEN];
    char app[TK_CRED_NAME_MAX + 1];
    uint64_t rev, size, cipher_size;
    const struct tk_cred *cr;
    Cohort__DocRecord *r;
    struct eraser e;
    struct find f;
    int rc;

    if (!tk_has_flag(c->tk, TK_FLAG_KEYS))
        return TK_ERR_NOT_PROVISIONED;
    if ((rc = tk_cred_load(c, &cr)) != TK_OK)
        return rc;
    if (req->doc_id.len != TK_DOC_ID_LEN)
        return TK_ERR_MALFORMED;
    if ((rc = find_record(c, &f, req->doc_id.data, 0)) != TK_OK)
        return rc;
    if (!f.found)
        return TK_ERR_NOT_FOUND;
    if ((rc = record_decode(&r, c->arena, f.rec, f.rec_len)) != TK_OK)
        return rc;
    sodium_memzero(r->key.data, r->key.len);
    sodium_memzero(f.rec, TK_DOC_RECORD_MAX);
    if ((rc = allow(c, cr, COHORT__VERB__VERB_DELETE, r->meta, req->doc_id.data)) != TK_OK)
        return rc;
    if (f.latest != req->base_revision)
        return TK_ERR_CONFLICT;
    /* What the answer and the audit line need; the checks' scratch goes
     * before the rewrite. */
    rev = r->revision;
    size = r->size;
    cipher_size = r->cipher_size;
    memcpy(hash, r->content_hash.data, sizeof hash);
    app[0] = '\0';
    if (cr != NULL) {
        memcpy(cred_id, cr->id, sizeof cred_id);
        tk_text_put(app, 0, sizeof app, cr->info->name);
    }
    e = (struct eraser){c, req->doc_id.data, true, NULL, NULL, cr ? cred_id : NULL, app};
    tk_arena_release(c->arena, mark);
    if ((rc = tk_docs_edit_init(&e.docs, c->tk, c->arena, req->doc_id.data)) != TK_OK ||
        (rc = tk_log_rewrite(c->tk, c->arena, erase_keep, &e)) != TK_OK)
        return rc;
    tk_doc_ref_write(c->out, 20, req->doc_id.data, rev, hash, size, cipher_size);
    return TK_OK;
}
