/*
 * Sharing documents between tokens (token/tk_share.c), over memory flash.
 *
 * Alice's, Bob's and Carol's tokens are provisioned by the same
 * manufacturer authority. Alice writes documents and shares them with
 * Bob; Bob's token opens the grant and reads the ciphertext files Alice's
 * token wrote, and enforces the policy: the same plaintext comes out; a
 * received document cannot be written or shared on; expiry (also against
 * a clock turned back), reads per document, revocation. Later grants
 * (ShareSync) carry the owner's updates, deletions and new matches of a
 * selector. Bob's apps read received documents within their rules and
 * never share. Grants of 1 and 32 documents, and one larger than a log
 * record (kept in parts), survive a reopen and a compaction of Bob's
 * token; sharing works in the least arena.
 *
 * Read-write shares: Bob writes a revision of Alice's document on the
 * share's current one, reads it, and his token's return grant brings it
 * to Alice's token, whose next syncs carry it to every share of the
 * document (Carol's read-only one, Bob's own). Carol cannot write; stale
 * bases, the owner's metadata changed, concurrent writes (a lost update
 * is a conflict, and the recipient then follows the owner), writes that
 * wait for a grant (bounded, kept across a reopen and a compaction), and
 * return grants forged, from another token, naming another sender or
 * share or document, replayed, or arriving after the share was revoked,
 * expired or made read-only (ShareUpdate): each refused with its code and
 * nothing changed. Read-write sharing works in the least arena.
 *
 * Hostile packages are built here by hand, with libsodium and protobuf-c
 * (a "mallory" token identity the test holds the keys of, certified by the
 * manufacturer or by a rogue authority): forged signatures, grants sealed
 * to another token or naming another, senders no trusted authority
 * certified, replayed and older grants, truncated and flipped ones, and
 * oversized ones. Each is refused with its exact code and changes nothing
 * (fx_snapshot). The arena peaks of the share requests and the sizes of
 * grants are printed.
 */
/* token/tk_int.h first: tk_fixture.h then has its helpers that read the log. */
#include "token/tk_int.h"

#include "tk_fixture.h"

#define T0 FX_NOW
#define PIECE (64u * 1024u)

/* ------------------------------------------------------------- documents */

struct doc {
    uint8_t id[TK_DOC_ID_LEN];
    uint64_t rev;
    uint8_t hash[32];
    uint8_t *file;
    size_t file_len;
};

static void doc_free(struct doc *d)
{
    free(d->file);
    d->file = NULL;
    d->file_len = 0;
}

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
    uint64_t s = seed * 2654435761u + 7;
    size_t i;
    for (i = 0; i < n; i++)
        p[i] = (uint8_t)(fx_rand(&s) >> 5);
}

static void meta_make(Cohort__DocMeta *m, const char *type, char **tags, size_t n_tags)
{
    cohort__doc_meta__init(m);
    m->type = (char *)type;
    m->author = "bank";
    m->subject = "statement";
    m->created = T0;
    m->modified = T0;
    m->tags = tags;
    m->n_tags = n_tags;
}

/* What a ShareOut said. */
struct sout {
    bool present;
    uint8_t id[TK_SHARE_ID_LEN];
    uint64_t seq;
    uint8_t *sealed;
    size_t sealed_len;
    size_t n_refs;
    uint8_t refs[TK_SHARE_DOCS_MAX][TK_DOC_ID_LEN];
    uint64_t ref_rev[TK_SHARE_DOCS_MAX];
    bool revoked;
};

static void sout_free(struct sout *o)
{
    free(o->sealed);
    memset(o, 0, sizeof *o);
}

static void sout_from(struct sout *o, const Cohort__ShareOut *so)
{
    size_t i;
    memset(o, 0, sizeof *o);
    o->present = true;
    assert_int_equal(so->share_id.len, TK_SHARE_ID_LEN);
    memcpy(o->id, so->share_id.data, TK_SHARE_ID_LEN);
    o->seq = so->seq;
    o->sealed_len = so->sealed.len;
    o->sealed = fx_alloc(o->sealed_len);
    memcpy(o->sealed, so->sealed.data, o->sealed_len);
    assert_true(so->n_refs <= TK_SHARE_DOCS_MAX);
    o->n_refs = so->n_refs;
    for (i = 0; i < o->n_refs; i++) {
        memcpy(o->refs[i], so->refs[i]->doc_id.data, TK_DOC_ID_LEN);
        o->ref_rev[i] = so->refs[i]->revision;
    }
    o->revoked = so->revoked;
    assert_non_null(so->recipient);
}

/* Who asks in the DocBegin, DocOpen and share requests below: NULL, the
 * owner at the host link, or an app's credential. */
static Cohort__AppCredential *who;

/* The clock the puts below give their token. */
static int64_t when = T0;

/* What the last put of a received document said: the share DocBegin named
 * (a write back), and the return grant of its last DocWrite (reply). */
static struct {
    bool shared;
    uint8_t share_id[TK_SHARE_ID_LEN];
    struct sout reply;
} back;

/* Write a document (a new one, or a revision of d when d->rev is set). */
static int put_meta(struct fx_token *t, struct doc *d, const Cohort__DocMeta *meta,
                    const uint8_t *plain, size_t len)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__DocBegin b = COHORT__DOC_BEGIN__INIT;
    Cohort__TokenResponse *r;
    uint8_t session[TK_SESSION_ID_LEN];
    size_t at = 0;
    int rc;

    if (d->rev != 0)
        b.doc_id = (ProtobufCBinaryData){TK_DOC_ID_LEN, d->id};
    b.base_revision = d->rev;
    b.meta = (Cohort__DocMeta *)meta;
    req.now = when;
    req.auth = who;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_DOC_BEGIN;
    req.doc_begin = &b;
    sout_free(&back.reply);
    back.shared = false;
    if ((rc = fx_call(t, &req, &r)) != TK_OK) {
        if (r != NULL)
            cohort__token_response__free_unpacked(r, NULL);
        return rc;
    }
    if (r->doc_session->share_id.len != 0) {
        assert_int_equal(r->doc_session->share_id.len, TK_SHARE_ID_LEN);
        memcpy(back.share_id, r->doc_session->share_id.data, TK_SHARE_ID_LEN);
        back.shared = true;
    }
    memcpy(session, r->doc_session->session.data, TK_SESSION_ID_LEN);
    cohort__token_response__free_unpacked(r, NULL);
    doc_free(d);
    do {
        size_t n = len - at < PIECE ? len - at : PIECE;
        bool last = at + n == len;
        rc = fx_stream_call(t, when, 20, session, TK_SESSION_ID_LEN, plain + at, n, last, &r);
        if (rc != TK_OK) {
            if (r != NULL)
                cohort__token_response__free_unpacked(r, NULL);
            return rc;
        }
        d->file = realloc(d->file, d->file_len + r->doc_cipher->data.len + 1);
        assert_non_null(d->file);
        memcpy(d->file + d->file_len, r->doc_cipher->data.data, r->doc_cipher->data.len);
        d->file_len += r->doc_cipher->data.len;
        if (last) {
            memcpy(d->id, r->doc_cipher->ref->doc_id.data, TK_DOC_ID_LEN);
            d->rev = r->doc_cipher->ref->revision;
            memcpy(d->hash, r->doc_cipher->ref->content_hash.data, 32);
            /* A reply comes with a write back, and only then. */
            assert_int_equal(r->doc_cipher->reply != NULL, back.shared);
            if (r->doc_cipher->reply != NULL) {
                sout_from(&back.reply, r->doc_cipher->reply);
                assert_int_equal(back.reply.n_refs, 1);
                assert_memory_equal(back.reply.refs[0], d->id, TK_DOC_ID_LEN);
                assert_int_equal(back.reply.ref_rev[0], d->rev);
                assert_memory_equal(back.reply.id, back.share_id, TK_SHARE_ID_LEN);
            }
        } else {
            assert_null(r->doc_cipher->reply);
        }
        cohort__token_response__free_unpacked(r, NULL);
        at += n;
    } while (at < len);
    return TK_OK;
}

static int put(struct fx_token *t, struct doc *d, const char *type, const uint8_t *plain,
               size_t len)
{
    Cohort__DocMeta m;
    meta_make(&m, type, NULL, 0);
    return put_meta(t, d, &m, plain, len);
}

/* Open (at `now`) and read a document from a file; the plaintext in *out
 * (malloc'd) when TK_OK. */
static int get(struct fx_token *t, int64_t now, const uint8_t *id, uint64_t rev,
               const uint8_t *file, size_t file_len, uint8_t **out, size_t *out_len)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__DocOpen o = COHORT__DOC_OPEN__INIT;
    Cohort__TokenResponse *r;
    uint8_t session[TK_SESSION_ID_LEN];
    size_t at = 0;
    bool done = false;
    int rc;

    *out = NULL;
    *out_len = 0;
    o.doc_id = (ProtobufCBinaryData){TK_DOC_ID_LEN, (uint8_t *)id};
    o.revision = rev;
    req.now = now;
    req.auth = who;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_DOC_OPEN;
    req.doc_open = &o;
    if ((rc = fx_call(t, &req, &r)) != TK_OK) {
        if (r != NULL)
            cohort__token_response__free_unpacked(r, NULL);
        return rc;
    }
    memcpy(session, r->doc_session->session.data, TK_SESSION_ID_LEN);
    assert_int_equal(r->doc_session->ref->cipher_size, file_len);
    cohort__token_response__free_unpacked(r, NULL);
    *out = fx_alloc(file_len);
    while (at < file_len) {
        size_t n = file_len - at < PIECE ? file_len - at : PIECE;
        rc = fx_stream_call(t, now, 22, session, TK_SESSION_ID_LEN, file + at, n,
                            at + n == file_len, &r);
        if (rc != TK_OK) {
            if (r != NULL)
                cohort__token_response__free_unpacked(r, NULL);
            free(*out);
            *out = NULL;
            return rc;
        }
        memcpy(*out + *out_len, r->doc_plain->data.data, r->doc_plain->data.len);
        *out_len += r->doc_plain->data.len;
        done = r->doc_plain->done;
        cohort__token_response__free_unpacked(r, NULL);
        at += n;
    }
    assert_true(done);
    return TK_OK;
}

/* Read d at t and compare with plain. */
static void expect_read(struct fx_token *t, int64_t now, const struct doc *d, const uint8_t *plain,
                        size_t len)
{
    uint8_t *back;
    size_t back_len;
    assert_int_equal(get(t, now, d->id, 0, d->file, d->file_len, &back, &back_len), TK_OK);
    assert_int_equal(back_len, len);
    if (len)
        assert_memory_equal(back, plain, len);
    free(back);
}

static int try_read(struct fx_token *t, int64_t now, const struct doc *d)
{
    uint8_t *back;
    size_t back_len;
    int rc = get(t, now, d->id, 0, d->file, d->file_len, &back, &back_len);
    free(back);
    return rc;
}

/* ---------------------------------------------------------------- shares */

static void sout_take(struct sout *o, Cohort__TokenResponse *r)
{
    memset(o, 0, sizeof *o);
    if (r->body_case == COHORT__TOKEN_RESPONSE__BODY_SHARE_OUT)
        sout_from(o, r->share_out);
}

static Cohort__SharePolicy policy_of(int64_t expires, uint32_t max_reads)
{
    Cohort__SharePolicy p = COHORT__SHARE_POLICY__INIT;
    p.expires = expires;
    p.max_reads = max_reads;
    return p;
}

static int share_create(struct fx_token *t, int64_t now, const Cohort__Certificate *to,
                        const struct doc *const *docs, size_t n, Cohort__PermRule *selector,
                        Cohort__SharePolicy *policy, struct sout *out)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__ShareCreate sc = COHORT__SHARE_CREATE__INIT;
    Cohort__TokenResponse *r;
    ProtobufCBinaryData ids[TK_SHARE_DOCS_MAX + 2];
    size_t i;
    int rc;
    assert_true(n <= TK_SHARE_DOCS_MAX + 2);
    for (i = 0; i < n; i++)
        ids[i] = (ProtobufCBinaryData){TK_DOC_ID_LEN, (uint8_t *)docs[i]->id};
    sc.recipient = (Cohort__Certificate *)to;
    sc.n_docs = n;
    sc.docs = ids;
    sc.selector = selector;
    sc.policy = policy;
    req.now = now;
    req.auth = who;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_SHARE_CREATE;
    req.share_create = &sc;
    rc = fx_call(t, &req, &r);
    if (out != NULL)
        sout_take(out, r);
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

static int share_sync(struct fx_token *t, int64_t now, struct sout *out)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__ShareSync ss = COHORT__SHARE_SYNC__INIT;
    Cohort__TokenResponse *r;
    int rc;
    req.now = now;
    req.auth = who;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_SHARE_SYNC;
    req.share_sync = &ss;
    rc = fx_call(t, &req, &r);
    sout_take(out, r);
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

static int share_revoke(struct fx_token *t, int64_t now, const uint8_t *id, size_t id_len,
                        struct sout *out)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__ShareRevoke sr = COHORT__SHARE_REVOKE__INIT;
    Cohort__TokenResponse *r;
    int rc;
    sr.share_id = (ProtobufCBinaryData){id_len, (uint8_t *)id};
    req.now = now;
    req.auth = who;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_SHARE_REVOKE;
    req.share_revoke = &sr;
    rc = fx_call(t, &req, &r);
    if (out != NULL)
        sout_take(out, r);
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

/* ShareAccept; the ShareInfo in *out (free it) when out is not NULL. */
static int share_accept(struct fx_token *t, int64_t now, const uint8_t *sealed, size_t len,
                        Cohort__TokenResponse **out)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__ShareAccept sa = COHORT__SHARE_ACCEPT__INIT;
    Cohort__TokenResponse *r;
    int rc;
    sa.sealed = (ProtobufCBinaryData){len, (uint8_t *)sealed};
    req.now = now;
    req.auth = who;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_SHARE_ACCEPT;
    req.share_accept = &sa;
    rc = fx_call(t, &req, &r);
    if (rc == TK_OK)
        assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_SHARE_INFO);
    if (out != NULL)
        *out = r;
    else
        cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

static void accept_ok(struct fx_token *t, int64_t now, const struct sout *o)
{
    assert_true(o->present);
    assert_int_equal(share_accept(t, now, o->sealed, o->sealed_len, NULL), TK_OK);
}

static int share_list(struct fx_token *t, uint64_t after, uint32_t max, Cohort__TokenResponse **out)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__ShareList sl = COHORT__SHARE_LIST__INIT;
    sl.after = after;
    sl.max = max;
    req.now = T0;
    req.auth = who;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_SHARE_LIST;
    req.share_list = &sl;
    return fx_call(t, &req, out);
}

/* ------------------------------------------------------------- the world */

struct world {
    struct fx_world w;
    struct fx_token a, b, c; /* Alice's, Bob's and Carol's tokens */
    Cohort__TokenResponse *info_a, *info_b, *info_c;
    const Cohort__Certificate *cert_a, *cert_b, *cert_c;
};

static const Cohort__Certificate *token_cert(struct fx_token *t, Cohort__TokenResponse **info)
{
    assert_int_equal(fx_info(t, info), TK_OK);
    assert_non_null((*info)->info->device_cert);
    return (*info)->info->device_cert;
}

static void world_make(struct world *s, size_t arena)
{
    memset(s, 0, sizeof *s);
    fx_world_init(&s->w);
    fx_token_init(&s->a, arena);
    fx_token_init(&s->b, arena);
    fx_token_init(&s->c, arena);
    fx_provision(&s->a, &s->w, "alice");
    fx_provision(&s->b, &s->w, "bob");
    fx_provision(&s->c, &s->w, "carol");
    s->cert_a = token_cert(&s->a, &s->info_a);
    s->cert_b = token_cert(&s->b, &s->info_b);
    s->cert_c = token_cert(&s->c, &s->info_c);
}

static void world_free(struct world *s)
{
    cohort__token_response__free_unpacked(s->info_a, NULL);
    cohort__token_response__free_unpacked(s->info_b, NULL);
    cohort__token_response__free_unpacked(s->info_c, NULL);
    fx_token_free(&s->a);
    fx_token_free(&s->b);
    fx_token_free(&s->c);
}

/* The key of a document's latest revision, from the token's log. */
static void record_key(struct fx_token *t, const uint8_t *id, uint8_t key[32])
{
    assert_true(fx_doc_key(t, id, 0, key));
}

/* Whether any record of the token's log holds these bytes in its plaintext. */
struct seek {
    const uint8_t *p;
    size_t n;
    bool found;
};

static int seek_fn(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len, uint64_t index)
{
    struct seek *k = ctx;
    (void)a;
    (void)index;
    if (fx_contains(plain, len, k->p, k->n))
        k->found = true;
    return TK_OK;
}

static bool log_contains(struct fx_token *t, const uint8_t *p, size_t n)
{
    struct seek k = {p, n, false};
    struct tk_arena a;
    tk_arena_init(&a, t->arena, t->arena_len, 0);
    assert_int_equal(tk_log_scan(&t->tk, &a, false, seek_fn, &k), TK_OK);
    return k.found;
}

/* ------------------------------------------------------------- basic use */

/* The token's audit log has a line of `event` about `object` (16 bytes). */
static void expect_audit(struct fx_token *t, const char *event, const uint8_t *object)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__ReadAudit ra = COHORT__READ_AUDIT__INIT;
    Cohort__TokenResponse *r;
    bool found = false;
    size_t i;
    ra.max_entries = 64;
    req.now = T0;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_READ_AUDIT;
    req.read_audit = &ra;
    assert_int_equal(fx_call(t, &req, &r), TK_OK);
    for (i = 0; i < r->audit->n_entries; i++) {
        const Cohort__AuditEntry *e = r->audit->entries[i];
        found |= strcmp(e->event, event) == 0 && e->doc_id.len == 16 &&
                 memcmp(e->doc_id.data, object, 16) == 0 && e->accepted;
    }
    cohort__token_response__free_unpacked(r, NULL);
    if (!found)
        fail_msg("no %s line in the audit log", event);
}

static void a_shared_document_reads_the_same_at_the_recipient(void **state)
{
    struct world s;
    struct doc d = {0};
    const struct doc *docs[1] = {&d};
    struct sout o;
    Cohort__TokenResponse *r;
    Cohort__ShareInfo *in;
    uint8_t plain[9000], key[32];
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    fill(plain, sizeof plain, 1);
    assert_int_equal(put(&s.a, &d, "bank.statement", plain, sizeof plain), TK_OK);
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 1, NULL, NULL, &o), TK_OK);
    assert_true(o.present);
    assert_int_equal(o.seq, 1);
    assert_int_equal(o.n_refs, 1);
    assert_memory_equal(o.refs[0], d.id, TK_DOC_ID_LEN);
    assert_false(o.revoked);
    print_message("grant of 1 document: %zu bytes sealed; ShareCreate arena peak %zu\n",
                  o.sealed_len, s.a.last_peak);

    /* What the agents move holds neither the key nor the plaintext. */
    record_key(&s.a, d.id, key);
    assert_false(fx_contains(o.sealed, o.sealed_len, key, 32));
    assert_false(fx_contains(o.sealed, o.sealed_len, plain, 32));

    /* Bob cannot read it before he accepts the grant; then he can. */
    assert_int_equal(try_read(&s.b, T0, &d), TK_ERR_NOT_FOUND);
    assert_int_equal(share_accept(&s.b, T0, o.sealed, o.sealed_len, &r), TK_OK);
    print_message("ShareAccept arena peak %zu\n", s.b.last_peak);
    in = r->share_info;
    assert_memory_equal(in->share_id.data, o.id, TK_SHARE_ID_LEN);
    assert_true(in->incoming);
    assert_string_equal(in->peer, "alice");
    assert_memory_equal(in->peer_pk.data, s.a.tk.sign_pk, TK_PK_LEN);
    assert_int_equal(in->seq, 1);
    assert_int_equal(in->n_refs, 1);
    assert_memory_equal(in->refs[0]->doc_id.data, d.id, TK_DOC_ID_LEN);
    assert_memory_equal(in->refs[0]->content_hash.data, d.hash, 32);
    assert_int_equal(in->refs[0]->size, sizeof plain);
    assert_int_equal(in->n_metas, 1);
    assert_string_equal(in->metas[0]->type, "bank.statement");
    assert_int_equal(in->n_reads, 1);
    assert_int_equal(in->reads[0], 0);
    assert_false(in->revoked);
    cohort__token_response__free_unpacked(r, NULL);
    s.b.max_peak = 0;
    expect_read(&s.b, T0, &d, plain, sizeof plain);
    print_message("DocOpen and DocRead of a shared document: arena peak %zu\n", s.b.max_peak);

    /* Both audit logs say so: Alice's shared it, Bob's took it and read it. */
    expect_audit(&s.a, "share.create", o.id);
    expect_audit(&s.b, "share.accept", o.id);
    expect_audit(&s.b, "doc.read", d.id);

    /* Carol, whom the grant does not name, cannot open it. */
    assert_int_equal(share_accept(&s.c, T0, o.sealed, o.sealed_len, NULL), TK_ERR_DECRYPT);
    assert_int_equal(try_read(&s.c, T0, &d), TK_ERR_NOT_FOUND);

    /* The key lives in Bob's log only as ciphertext. */
    assert_false(fx_on_flash(&s.b, key, 32));
    sout_free(&o);
    doc_free(&d);
    world_free(&s);
}

static void a_received_document_is_read_only_and_cannot_be_shared_on(void **state)
{
    struct world s;
    struct doc d = {0}, bobs = {0}, forged = {0};
    const struct doc *docs[1] = {&d}, *both[2] = {&bobs, &d};
    struct fx_snapshot snap;
    struct sout o, o2;
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__DocDelete dd = COHORT__DOC_DELETE__INIT;
    Cohort__PermRule sel = COHORT__PERM_RULE__INIT;
    uint8_t plain[100];
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    fill(plain, sizeof plain, 2);
    assert_int_equal(put(&s.a, &d, "note", plain, sizeof plain), TK_OK);
    assert_int_equal(put(&s.b, &bobs, "note", plain, sizeof plain), TK_OK);
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 1, NULL, NULL, &o), TK_OK);
    accept_ok(&s.b, T0, &o);

    fx_snapshot_take(&snap, &s.b);
    /* No revision can be written over it, whatever the base. */
    forged = d;
    forged.file = NULL;
    assert_int_equal(put(&s.b, &forged, "note", plain, sizeof plain), TK_ERR_DENIED);
    forged.rev = 7;
    assert_int_equal(put(&s.b, &forged, "note", plain, sizeof plain), TK_ERR_DENIED);
    /* It is not Bob's to delete. */
    dd.doc_id = (ProtobufCBinaryData){TK_DOC_ID_LEN, d.id};
    dd.base_revision = 1;
    req.now = T0;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_DOC_DELETE;
    req.doc_delete = &dd;
    assert_int_equal(fx_call(&s.b, &req, NULL), TK_ERR_NOT_FOUND);
    /* Nor to share on, alone or with his own; a selector sees only his own. */
    assert_int_equal(share_create(&s.b, T0, s.cert_c, docs, 1, NULL, NULL, NULL), TK_ERR_DENIED);
    assert_int_equal(share_create(&s.b, T0, s.cert_c, both, 2, NULL, NULL, NULL), TK_ERR_DENIED);
    fx_snapshot_check(&snap, &s.b, false);
    fx_snapshot_free(&snap);

    sel.type = "*";
    assert_int_equal(share_create(&s.b, T0, s.cert_c, NULL, 0, &sel, NULL, &o2), TK_OK);
    assert_int_equal(o2.n_refs, 1);
    assert_memory_equal(o2.refs[0], bobs.id, TK_DOC_ID_LEN);
    accept_ok(&s.c, T0, &o2);
    assert_int_equal(try_read(&s.c, T0, &d), TK_ERR_NOT_FOUND);
    expect_read(&s.c, T0, &bobs, plain, sizeof plain);
    /* Bob still reads what he received. */
    expect_read(&s.b, T0, &d, plain, sizeof plain);
    sout_free(&o);
    sout_free(&o2);
    doc_free(&d);
    doc_free(&bobs);
    world_free(&s);
}

/* ------------------------------------------------------------- policies */

static void a_share_expires_and_a_clock_turned_back_does_not_revive_it(void **state)
{
    struct world s;
    struct doc d = {0}, e = {0};
    const struct doc *docs[1] = {&d}, *other[1] = {&e};
    Cohort__SharePolicy p = policy_of(T0 + 100, 0);
    struct fx_snapshot snap;
    struct sout o, o2;
    uint8_t plain[10];
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    fill(plain, sizeof plain, 3);
    assert_int_equal(put(&s.a, &d, "note", plain, sizeof plain), TK_OK);
    assert_int_equal(put(&s.a, &e, "note", plain, sizeof plain), TK_OK);
    /* A policy that has already expired is refused. */
    {
        Cohort__SharePolicy past = policy_of(T0, 0);
        assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 1, NULL, &past, NULL),
                         TK_ERR_EXPIRED);
    }
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 1, NULL, &p, &o), TK_OK);
    accept_ok(&s.b, T0, &o);
    expect_read(&s.b, T0 + 50, &d, plain, sizeof plain);
    expect_read(&s.b, T0 + 99, &d, plain, sizeof plain);

    fx_snapshot_take(&snap, &s.b);
    assert_int_equal(try_read(&s.b, T0 + 100, &d), TK_ERR_EXPIRED);
    assert_int_equal(try_read(&s.b, T0 + 1000, &d), TK_ERR_EXPIRED);
    fx_snapshot_check(&snap, &s.b, false);
    fx_snapshot_free(&snap);

    /* Once the host has told the token a later time (here by accepting
     * another share), turning the clock back does not reopen the share. */
    assert_int_equal(share_create(&s.a, T0, s.cert_b, other, 1, NULL, NULL, &o2), TK_OK);
    accept_ok(&s.b, T0 + 200, &o2);
    assert_int_equal(try_read(&s.b, T0 + 10, &d), TK_ERR_EXPIRED);
    expect_read(&s.b, T0 + 10, &e, plain, sizeof plain);

    /* Alice's token no longer sends grants for the expired share. */
    assert_int_equal(put(&s.a, &d, "note", plain, 3), TK_OK);
    {
        struct sout none;
        assert_int_equal(share_sync(&s.a, T0 + 150, &none), TK_OK);
        assert_false(none.present);
        assert_int_equal(share_sync(&s.a, T0 + 50, &none), TK_OK);
        assert_true(none.present);
        sout_free(&none);
    }
    sout_free(&o);
    sout_free(&o2);
    doc_free(&d);
    doc_free(&e);
    world_free(&s);
}

static void max_reads_limits_the_reads_of_each_document(void **state)
{
    struct world s;
    struct doc d = {0}, e = {0};
    const struct doc *docs[2] = {&d, &e};
    Cohort__SharePolicy p = policy_of(0, 2);
    struct sout o;
    Cohort__TokenResponse *r;
    uint8_t plain[300], image[TK_IMAGE_MAX];
    size_t image_len, i;
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    fill(plain, sizeof plain, 4);
    assert_int_equal(put(&s.a, &d, "note", plain, sizeof plain), TK_OK);
    assert_int_equal(put(&s.a, &e, "note", plain, 7), TK_OK);
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 2, NULL, &p, &o), TK_OK);
    accept_ok(&s.b, T0, &o);
    expect_read(&s.b, T0, &d, plain, sizeof plain);
    expect_read(&s.b, T0, &d, plain, sizeof plain);
    /* A refused read is not counted (the list below shows 2 reads); the
     * document module may log the refusal in the audit log. */
    assert_int_equal(try_read(&s.b, T0, &d), TK_ERR_DENIED);

    /* Each document has its own count, which survives a power cycle. */
    expect_read(&s.b, T0, &e, plain, 7);
    assert_int_equal(tk_token_image(&s.b.tk, image, sizeof image, &image_len), TK_OK);
    fx_token_reopen(&s.b, image, image_len);
    expect_read(&s.b, T0, &e, plain, 7);
    assert_int_equal(try_read(&s.b, T0, &e), TK_ERR_DENIED);
    assert_int_equal(try_read(&s.b, T0, &d), TK_ERR_DENIED);

    /* Bob's list shows the reads. */
    assert_int_equal(share_list(&s.b, 0, 16, &r), TK_OK);
    assert_int_equal(r->share_page->n_shares, 1);
    assert_int_equal(r->share_page->shares[0]->n_reads, 2);
    for (i = 0; i < 2; i++)
        assert_int_equal(r->share_page->shares[0]->reads[i], 2);
    assert_int_equal(r->share_page->shares[0]->policy->max_reads, 2);
    cohort__token_response__free_unpacked(r, NULL);
    sout_free(&o);
    doc_free(&d);
    doc_free(&e);
    world_free(&s);
}

static void a_document_shared_twice_is_read_through_either_share(void **state)
{
    struct world s;
    struct doc d = {0};
    const struct doc *docs[1] = {&d};
    Cohort__SharePolicy once = policy_of(0, 1), soon = policy_of(T0 + 10, 0);
    struct sout o1, o2;
    uint8_t plain[50];
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    fill(plain, sizeof plain, 5);
    assert_int_equal(put(&s.a, &d, "note", plain, sizeof plain), TK_OK);
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 1, NULL, &once, &o1), TK_OK);
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 1, NULL, &soon, &o2), TK_OK);
    accept_ok(&s.b, T0, &o1);
    accept_ok(&s.b, T0, &o2);
    /* The first read goes through the first share, the second through the
     * other; then the second has expired and the first has no read left:
     * the refusal is the first's. */
    expect_read(&s.b, T0, &d, plain, sizeof plain);
    expect_read(&s.b, T0 + 5, &d, plain, sizeof plain);
    assert_int_equal(try_read(&s.b, T0 + 20, &d), TK_ERR_DENIED);
    sout_free(&o1);
    sout_free(&o2);
    doc_free(&d);
    world_free(&s);
}

/* ------------------------------------------------------------ later grants */

static void an_update_reaches_the_recipient_through_share_sync(void **state)
{
    struct world s;
    struct doc d = {0}, e = {0}, d1;
    const struct doc *docs[2] = {&d, &e};
    struct sout o, o2, o3, none;
    uint8_t v1[5000], v2[7000], key[32];
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__DocDelete dd = COHORT__DOC_DELETE__INIT;
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    fill(v1, sizeof v1, 6);
    fill(v2, sizeof v2, 7);
    assert_int_equal(put(&s.a, &d, "note", v1, sizeof v1), TK_OK);
    assert_int_equal(put(&s.a, &e, "note", v1, 10), TK_OK);
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 2, NULL, NULL, &o), TK_OK);
    accept_ok(&s.b, T0, &o);

    /* Nothing changed: nothing to sync. */
    assert_int_equal(share_sync(&s.a, T0, &none), TK_OK);
    assert_false(none.present);

    /* Alice writes revision 2: the next sync carries it. */
    d1 = d;
    d1.file = fx_alloc(d.file_len);
    memcpy(d1.file, d.file, d.file_len);
    assert_int_equal(put(&s.a, &d, "note", v2, sizeof v2), TK_OK);
    assert_int_equal(d.rev, 2);
    assert_int_equal(share_sync(&s.a, T0, &o2), TK_OK);
    print_message("ShareSync arena peak %zu\n", s.a.last_peak);
    assert_true(o2.present);
    assert_memory_equal(o2.id, o.id, TK_SHARE_ID_LEN);
    assert_int_equal(o2.seq, 2);
    assert_int_equal(o2.n_refs, 2);
    assert_int_equal(share_sync(&s.a, T0, &none), TK_OK);
    assert_false(none.present);
    /* Until Bob accepts it he reads revision 1; then revision 2 only. */
    expect_read(&s.b, T0, &d1, v1, sizeof v1);
    accept_ok(&s.b, T0, &o2);
    expect_read(&s.b, T0, &d, v2, sizeof v2);
    {
        uint8_t *back;
        size_t n;
        assert_int_equal(get(&s.b, T0, d.id, 1, d1.file, d1.file_len, &back, &n), TK_ERR_NOT_FOUND);
        free(back);
    }

    /* Alice deletes the other document: it leaves the share, and its key
     * leaves Bob's log. */
    record_key(&s.a, e.id, key);
    assert_true(log_contains(&s.b, key, sizeof key));
    dd.doc_id = (ProtobufCBinaryData){TK_DOC_ID_LEN, e.id};
    dd.base_revision = 1;
    req.now = T0;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_DOC_DELETE;
    req.doc_delete = &dd;
    assert_int_equal(fx_call(&s.a, &req, NULL), TK_OK);
    assert_int_equal(share_sync(&s.a, T0, &o3), TK_OK);
    assert_int_equal(o3.seq, 3);
    assert_int_equal(o3.n_refs, 1);
    expect_read(&s.b, T0, &e, v1, 10);
    accept_ok(&s.b, T0, &o3);
    assert_int_equal(try_read(&s.b, T0, &e), TK_ERR_NOT_FOUND);
    assert_false(log_contains(&s.b, key, sizeof key));
    expect_read(&s.b, T0, &d, v2, sizeof v2);

    /* The older grants are refused now. */
    assert_int_equal(share_accept(&s.b, T0, o2.sealed, o2.sealed_len, NULL), TK_ERR_REPLAY);
    assert_int_equal(share_accept(&s.b, T0, o.sealed, o.sealed_len, NULL), TK_ERR_REPLAY);
    sout_free(&o);
    sout_free(&o2);
    sout_free(&o3);
    doc_free(&d);
    doc_free(&d1);
    doc_free(&e);
    world_free(&s);
}

static void a_selector_share_picks_up_new_matching_documents(void **state)
{
    struct world s;
    struct doc bank1 = {0}, bank2 = {0}, health = {0}, taxed = {0};
    struct sout o, o2, o3, none;
    Cohort__PermRule sel = COHORT__PERM_RULE__INIT, tag = COHORT__PERM_RULE__INIT;
    Cohort__DocMeta m;
    char *tags[] = {"tax", "2026"}, *want[] = {"tax"};
    uint8_t plain[400];
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    fill(plain, sizeof plain, 8);
    assert_int_equal(put(&s.a, &bank1, "bank.statement", plain, 100), TK_OK);
    assert_int_equal(put(&s.a, &health, "health.note", plain, 200), TK_OK);
    sel.type = "bank.*";
    assert_int_equal(share_create(&s.a, T0, s.cert_b, NULL, 0, &sel, NULL, &o), TK_OK);
    assert_int_equal(o.n_refs, 1);
    assert_memory_equal(o.refs[0], bank1.id, TK_DOC_ID_LEN);
    accept_ok(&s.b, T0, &o);
    expect_read(&s.b, T0, &bank1, plain, 100);
    assert_int_equal(try_read(&s.b, T0, &health), TK_ERR_NOT_FOUND);

    /* A new matching document joins at the next sync; others do not. */
    assert_int_equal(put(&s.a, &bank2, "bank.card.visa", plain, 300), TK_OK);
    assert_int_equal(share_sync(&s.a, T0, &o2), TK_OK);
    assert_int_equal(o2.seq, 2);
    assert_int_equal(o2.n_refs, 2);
    assert_int_equal(put(&s.a, &health, "health.note", plain, 50), TK_OK);
    assert_int_equal(share_sync(&s.a, T0, &none), TK_OK);
    assert_false(none.present);
    accept_ok(&s.b, T0, &o2);
    expect_read(&s.b, T0, &bank2, plain, 300);

    /* A document whose new revision no longer matches leaves it. */
    assert_int_equal(put(&s.a, &bank1, "archive", plain, 100), TK_OK);
    assert_int_equal(share_sync(&s.a, T0, &o3), TK_OK);
    assert_int_equal(o3.n_refs, 1);
    assert_memory_equal(o3.refs[0], bank2.id, TK_DOC_ID_LEN);
    accept_ok(&s.b, T0, &o3);
    assert_int_equal(try_read(&s.b, T0, &bank1), TK_ERR_NOT_FOUND);
    sout_free(&o);
    sout_free(&o2);
    sout_free(&o3);

    /* A selector on tags. */
    meta_make(&m, "paper", tags, 2);
    assert_int_equal(put_meta(&s.a, &taxed, &m, plain, 40), TK_OK);
    tag.type = "*";
    tag.field = "tag";
    tag.n_values = 1;
    tag.values = want;
    assert_int_equal(share_create(&s.a, T0, s.cert_c, NULL, 0, &tag, NULL, &o), TK_OK);
    assert_int_equal(o.n_refs, 1);
    assert_memory_equal(o.refs[0], taxed.id, TK_DOC_ID_LEN);
    accept_ok(&s.c, T0, &o);
    expect_read(&s.c, T0, &taxed, plain, 40);
    sout_free(&o);
    doc_free(&bank1);
    doc_free(&bank2);
    doc_free(&health);
    doc_free(&taxed);
    world_free(&s);
}

static void revocation_stops_reads_at_the_recipient(void **state)
{
    struct world s;
    struct doc d = {0};
    const struct doc *docs[1] = {&d};
    struct fx_snapshot snap;
    struct sout o, rv, none;
    Cohort__TokenResponse *r;
    uint8_t plain[64], key[32];
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    fill(plain, sizeof plain, 9);
    assert_int_equal(put(&s.a, &d, "note", plain, sizeof plain), TK_OK);
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 1, NULL, NULL, &o), TK_OK);
    accept_ok(&s.b, T0, &o);
    expect_read(&s.b, T0, &d, plain, sizeof plain);
    record_key(&s.a, d.id, key);
    assert_true(log_contains(&s.b, key, sizeof key));

    assert_int_equal(share_revoke(&s.a, T0, o.id, TK_SHARE_ID_LEN, &rv), TK_OK);
    print_message("ShareRevoke arena peak %zu\n", s.a.last_peak);
    assert_true(rv.revoked);
    assert_int_equal(rv.seq, 2);
    assert_int_equal(rv.n_refs, 0);
    /* A revoked share is never out of date. */
    assert_int_equal(put(&s.a, &d, "note", plain, 10), TK_OK);
    assert_int_equal(share_sync(&s.a, T0, &none), TK_OK);
    assert_false(none.present);

    assert_int_equal(share_accept(&s.b, T0, rv.sealed, rv.sealed_len, &r), TK_OK);
    assert_true(r->share_info->revoked);
    assert_int_equal(r->share_info->n_refs, 0);
    cohort__token_response__free_unpacked(r, NULL);
    assert_int_equal(try_read(&s.b, T0, &d), TK_ERR_DENIED);
    /* The grant before the revocation does not bring it back. */
    fx_snapshot_take(&snap, &s.b);
    assert_int_equal(share_accept(&s.b, T0, o.sealed, o.sealed_len, NULL), TK_ERR_REPLAY);
    assert_int_equal(share_accept(&s.b, T0, rv.sealed, rv.sealed_len, NULL), TK_ERR_REPLAY);
    fx_snapshot_check(&snap, &s.b, false);
    fx_snapshot_free(&snap);

    /* The share grants nothing now, and the key has left Bob's log. */
    assert_int_equal(share_list(&s.b, 0, 16, &r), TK_OK);
    assert_int_equal(r->share_page->n_shares, 1);
    assert_true(r->share_page->shares[0]->revoked);
    assert_int_equal(r->share_page->shares[0]->n_refs, 0);
    assert_int_equal(r->share_page->shares[0]->n_metas, 0);
    cohort__token_response__free_unpacked(r, NULL);
    assert_false(log_contains(&s.b, key, sizeof key));
    assert_int_equal(share_list(&s.a, 0, 16, &r), TK_OK);
    assert_int_equal(r->share_page->n_shares, 1);
    assert_false(r->share_page->shares[0]->incoming);
    assert_true(r->share_page->shares[0]->revoked);
    assert_int_equal(r->share_page->shares[0]->seq, 2);
    assert_string_equal(r->share_page->shares[0]->peer, "bob");
    cohort__token_response__free_unpacked(r, NULL);
    sout_free(&o);
    sout_free(&rv);
    doc_free(&d);
    world_free(&s);
}

/* An app credential of Bob's with one GET rule on a type pattern. */
struct app {
    uint8_t id[16], secret[32];
    Cohort__AppCredential pb;
};

static void app_issue(struct fx_token *t, struct app *a, const char *type)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__CredIssue ci = COHORT__CRED_ISSUE__INIT;
    Cohort__PermRule rule = COHORT__PERM_RULE__INIT, *rules[1] = {&rule};
    Cohort__TokenResponse *r;
    rule.type = (char *)type;
    rule.verbs = COHORT__VERB__VERB_GET;
    ci.name = "reader";
    ci.n_rules = 1;
    ci.rules = rules;
    req.now = T0;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_CRED_ISSUE;
    req.cred_issue = &ci;
    assert_int_equal(fx_call(t, &req, &r), TK_OK);
    memcpy(a->id, r->cred_issued->info->id.data, 16);
    memcpy(a->secret, r->cred_issued->secret.data, 32);
    cohort__token_response__free_unpacked(r, NULL);
    cohort__app_credential__init(&a->pb);
    a->pb.id = (ProtobufCBinaryData){16, a->id};
    a->pb.secret = (ProtobufCBinaryData){32, a->secret};
}

static void apps_read_received_documents_within_their_rules_and_never_share(void **state)
{
    struct world s;
    struct doc d = {0};
    const struct doc *docs[1] = {&d};
    Cohort__SharePolicy once = policy_of(0, 1);
    struct app bank, health;
    struct sout o, none;
    uint8_t plain[70];
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    fill(plain, sizeof plain, 15);
    assert_int_equal(put(&s.a, &d, "bank.statement", plain, sizeof plain), TK_OK);
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 1, NULL, &once, &o), TK_OK);
    app_issue(&s.b, &bank, "bank.*");
    app_issue(&s.b, &health, "health.*");

    /* A package authenticates itself: any caller may hand it in. */
    who = &health.pb;
    accept_ok(&s.b, T0, &o);
    /* An app whose rules do not cover the document is refused, and its
     * attempt does not use the one read; the other app reads it. */
    assert_int_equal(try_read(&s.b, T0, &d), TK_ERR_DENIED);
    who = &bank.pb;
    expect_read(&s.b, T0, &d, plain, sizeof plain);
    assert_int_equal(try_read(&s.b, T0, &d), TK_ERR_DENIED);
    /* Sharing is the owner's. */
    assert_int_equal(share_create(&s.b, T0, s.cert_c, docs, 1, NULL, NULL, NULL), TK_ERR_DENIED);
    assert_int_equal(share_sync(&s.b, T0, &none), TK_ERR_DENIED);
    assert_int_equal(share_revoke(&s.b, T0, o.id, TK_SHARE_ID_LEN, NULL), TK_ERR_DENIED);
    assert_int_equal(share_list(&s.b, 0, 4, NULL), TK_ERR_DENIED);
    who = NULL;
    sout_free(&o);
    doc_free(&d);
    world_free(&s);
}

/* ----------------------------------------------------------------- sizes */

static void grants_of_32_documents_fit_and_33_do_not(void **state)
{
    struct world s;
    struct doc d[TK_SHARE_DOCS_MAX + 1];
    const struct doc *docs[TK_SHARE_DOCS_MAX + 1];
    struct fx_snapshot snap;
    struct sout o;
    Cohort__TokenResponse *r;
    uint8_t plain[32];
    size_t i;
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    memset(d, 0, sizeof d);
    for (i = 0; i <= TK_SHARE_DOCS_MAX; i++) {
        fill(plain, sizeof plain, (uint32_t)(100 + i));
        assert_int_equal(put(&s.a, &d[i], "bank.statement", plain, sizeof plain), TK_OK);
        docs[i] = &d[i];
    }
    fx_snapshot_take(&snap, &s.a);
    assert_int_equal(
        share_create(&s.a, T0, s.cert_b, docs, TK_SHARE_DOCS_MAX + 1, NULL, NULL, NULL),
        TK_ERR_TOO_LARGE);
    fx_snapshot_check(&snap, &s.a, false);
    fx_snapshot_free(&snap);

    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, TK_SHARE_DOCS_MAX, NULL, NULL, &o),
                     TK_OK);
    assert_int_equal(o.n_refs, TK_SHARE_DOCS_MAX);
    print_message("grant of 32 documents: %zu bytes sealed; ShareCreate arena peak %zu\n",
                  o.sealed_len, s.a.last_peak);
    assert_int_equal(share_accept(&s.b, T0, o.sealed, o.sealed_len, &r), TK_OK);
    print_message("ShareAccept of 32 documents: arena peak %zu\n", s.b.last_peak);
    assert_int_equal(r->share_info->n_refs, TK_SHARE_DOCS_MAX);
    cohort__token_response__free_unpacked(r, NULL);
    s.b.max_peak = 0;
    for (i = 0; i < TK_SHARE_DOCS_MAX; i++) {
        fill(plain, sizeof plain, (uint32_t)(100 + i));
        expect_read(&s.b, T0, &d[i], plain, sizeof plain);
    }
    print_message("DocOpen and DocRead of a document among 32 shared: arena peak %zu\n",
                  s.b.max_peak);
    assert_int_equal(share_list(&s.b, 0, 16, &r), TK_OK);
    print_message("ShareList arena peak %zu\n", s.b.last_peak);
    assert_int_equal(r->share_page->shares[0]->n_refs, TK_SHARE_DOCS_MAX);
    cohort__token_response__free_unpacked(r, NULL);
    sout_free(&o);
    for (i = 0; i <= TK_SHARE_DOCS_MAX; i++)
        doc_free(&d[i]);
    world_free(&s);
}

static void a_grant_larger_than_a_log_record_is_kept_in_parts(void **state)
{
    enum { N = 13 };
    struct world s;
    struct doc d[N];
    const struct doc *docs[N];
    struct sout o;
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__Compact cp = COHORT__COMPACT__INIT;
    Cohort__TokenResponse *r;
    Cohort__DocMeta m;
    char tag_text[TK_DOC_TAGS_MAX][TK_DOC_TAG_MAX + 1], *tags[TK_DOC_TAGS_MAX];
    char author[TK_DOC_TEXT_MAX + 1], subject[TK_DOC_TEXT_MAX + 1];
    uint8_t plain[20], image[TK_IMAGE_MAX];
    size_t i, image_len;
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    memset(d, 0, sizeof d);
    for (i = 0; i < TK_DOC_TAGS_MAX; i++) {
        memset(tag_text[i], 'a' + (int)i, TK_DOC_TAG_MAX);
        tag_text[i][TK_DOC_TAG_MAX] = 0;
        tags[i] = tag_text[i];
    }
    memset(author, 'w', TK_DOC_TEXT_MAX);
    author[TK_DOC_TEXT_MAX] = 0;
    memset(subject, 's', TK_DOC_TEXT_MAX);
    subject[TK_DOC_TEXT_MAX] = 0;
    for (i = 0; i < N; i++) {
        meta_make(&m, "bank.statement", tags, TK_DOC_TAGS_MAX);
        m.author = author;
        m.subject = subject;
        fill(plain, sizeof plain, (uint32_t)(200 + i));
        assert_int_equal(put_meta(&s.a, &d[i], &m, plain, sizeof plain), TK_OK);
        docs[i] = &d[i];
    }
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, N, NULL, NULL, &o), TK_OK);
    print_message("grant of %d documents with the largest metadata: %zu bytes sealed\n", N,
                  o.sealed_len);
    assert_true(o.sealed_len > TK_RECORD_MAX);
    assert_int_equal(share_accept(&s.b, T0, o.sealed, o.sealed_len, NULL), TK_OK);
    print_message("ShareAccept of it: arena peak %zu\n", s.b.last_peak);
    fill(plain, sizeof plain, 200 + N - 1);
    expect_read(&s.b, T0, &d[N - 1], plain, sizeof plain);
    /* Bob's token holds it in parts, which survive a reopen and a compaction. */
    assert_int_equal(tk_token_image(&s.b.tk, image, sizeof image, &image_len), TK_OK);
    fx_token_reopen(&s.b, image, image_len);
    expect_read(&s.b, T0, &d[N - 1], plain, sizeof plain);
    req.now = T0;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_COMPACT;
    req.compact = &cp;
    assert_int_equal(fx_call(&s.b, &req, NULL), TK_OK);
    for (i = 0; i < N; i++) {
        fill(plain, sizeof plain, (uint32_t)(200 + i));
        expect_read(&s.b, T0, &d[i], plain, sizeof plain);
    }
    assert_int_equal(share_list(&s.b, 0, 1, &r), TK_OK);
    assert_int_equal(r->share_page->n_shares, 1);
    assert_int_equal(r->share_page->shares[0]->n_refs, N);
    assert_int_equal(r->share_page->shares[0]->n_metas, N);
    assert_string_equal(r->share_page->shares[0]->metas[N - 1]->author, author);
    for (i = 0; i < N; i++)
        assert_int_equal(r->share_page->shares[0]->reads[i], i == N - 1 ? 3 : 1);
    cohort__token_response__free_unpacked(r, NULL);
    sout_free(&o);
    for (i = 0; i < N; i++)
        doc_free(&d[i]);
    world_free(&s);
}

static void share_list_pages_sent_and_received_shares(void **state)
{
    struct world s;
    struct doc d = {0};
    const struct doc *docs[1] = {&d};
    struct sout o[5];
    Cohort__TokenResponse *r;
    uint8_t plain[8];
    uint64_t after = 0;
    size_t i, seen = 0;
    bool more = true;
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    fill(plain, sizeof plain, 10);
    assert_int_equal(put(&s.a, &d, "note", plain, sizeof plain), TK_OK);
    for (i = 0; i < 5; i++)
        assert_int_equal(
            share_create(&s.a, T0, i % 2 ? s.cert_b : s.cert_c, docs, 1, NULL, NULL, &o[i]), TK_OK);
    /* Two of them get new grants: they are listed once, in their latest state. */
    assert_int_equal(put(&s.a, &d, "note", plain, 4), TK_OK);
    for (i = 0; i < 5; i++) {
        struct sout x;
        assert_int_equal(share_sync(&s.a, T0, &x), TK_OK);
        assert_true(x.present);
        assert_int_equal(x.seq, 2);
        sout_free(&x);
    }
    while (more) {
        assert_int_equal(share_list(&s.a, after, 2, &r), TK_OK);
        for (i = 0; i < r->share_page->n_shares; i++) {
            assert_false(r->share_page->shares[i]->incoming);
            assert_int_equal(r->share_page->shares[i]->seq, 2);
            assert_int_equal(r->share_page->shares[i]->n_refs, 1);
            assert_int_equal(r->share_page->shares[i]->refs[0]->revision, 2);
        }
        seen += r->share_page->n_shares;
        more = r->share_page->more;
        assert_true(r->share_page->next >= after);
        after = r->share_page->next;
        cohort__token_response__free_unpacked(r, NULL);
    }
    assert_int_equal(seen, 5);
    for (i = 0; i < 5; i++)
        sout_free(&o[i]);
    doc_free(&d);
    world_free(&s);
}

static void sharing_works_in_the_least_arena(void **state)
{
    struct world s;
    struct doc d = {0};
    const struct doc *docs[1] = {&d};
    Cohort__PermRule sel = COHORT__PERM_RULE__INIT;
    Cohort__TokenResponse *r;
    struct sout o, o2, o3, rv;
    uint8_t plain[5000];
    (void)state;

    world_make(&s, TK_ARENA_MIN);
    fill(plain, sizeof plain, 14);
    assert_int_equal(put(&s.a, &d, "bank.statement", plain, sizeof plain), TK_OK);
    s.a.max_peak = s.b.max_peak = 0;
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 1, NULL, NULL, &o), TK_OK);
    sel.type = "bank.*";
    assert_int_equal(share_create(&s.a, T0, s.cert_c, NULL, 0, &sel, NULL, &o2), TK_OK);
    accept_ok(&s.b, T0, &o);
    expect_read(&s.b, T0, &d, plain, sizeof plain);
    assert_int_equal(put(&s.a, &d, "bank.statement", plain, 100), TK_OK);
    assert_int_equal(share_sync(&s.a, T0, &o3), TK_OK);
    accept_ok(&s.b, T0, &o3);
    sout_free(&o3);
    assert_int_equal(share_sync(&s.a, T0, &o3), TK_OK);
    expect_read(&s.b, T0, &d, plain, 100);
    assert_int_equal(share_revoke(&s.a, T0, o.id, TK_SHARE_ID_LEN, &rv), TK_OK);
    accept_ok(&s.b, T0, &rv);
    assert_int_equal(try_read(&s.b, T0, &d), TK_ERR_DENIED);
    assert_int_equal(share_list(&s.a, 0, TK_SHARE_LIST_MAX, &r), TK_OK);
    cohort__token_response__free_unpacked(r, NULL);
    assert_int_equal(share_list(&s.b, 0, TK_SHARE_LIST_MAX, &r), TK_OK);
    cohort__token_response__free_unpacked(r, NULL);
    print_message("in the least arena (%u): sender's peak %zu, recipient's %zu\n", TK_ARENA_MIN,
                  s.a.max_peak, s.b.max_peak);
    sout_free(&o);
    sout_free(&o2);
    sout_free(&o3);
    sout_free(&rv);
    doc_free(&d);
    world_free(&s);
}

/* --------------------------------------------------------------- forgery */

/* A token identity the test holds the keys of. */
struct mallory {
    struct fx_key sign;
    uint8_t box_pk[32], box_sk[32];
    struct fx_cert cert;
};

static void mallory_make(struct mallory *m, const struct fx_key *issuer, int role, int64_t nb,
                         int64_t na)
{
    fx_key_make(&m->sign);
    crypto_box_keypair(m->box_pk, m->box_sk);
    fx_cert_issue(&m->cert, role, "mallory", m->sign.pk, m->box_pk, issuer, nb, na, NULL);
}

/* A SharedDoc of a document that does not exist anywhere (malloc'd parts). */
struct fake_doc {
    Cohort__SharedDoc pb;
    Cohort__DocMeta meta;
    uint8_t id[TK_DOC_ID_LEN], key[32], hash[32];
};

static void fake_doc_make(struct fake_doc *f, const uint8_t *id)
{
    cohort__shared_doc__init(&f->pb);
    meta_make(&f->meta, "note", NULL, 0);
    f->meta.size = 10;
    if (id != NULL)
        memcpy(f->id, id, TK_DOC_ID_LEN);
    else
        randombytes_buf(f->id, sizeof f->id);
    randombytes_buf(f->key, sizeof f->key);
    randombytes_buf(f->hash, sizeof f->hash);
    f->pb.doc_id = (ProtobufCBinaryData){TK_DOC_ID_LEN, f->id};
    f->pb.revision = 1;
    f->pb.key = (ProtobufCBinaryData){32, f->key};
    f->pb.content_hash = (ProtobufCBinaryData){32, f->hash};
    f->pb.size = 10;
    f->pb.cipher_size = 24 + 21 + 10;
    f->pb.meta = &f->meta;
}

struct forge {
    uint8_t share_id[TK_SHARE_ID_LEN];
    uint64_t seq;
    const struct fx_cert *sender;
    const uint8_t *sign_sk;      /* who signs */
    const uint8_t *recipient_pk; /* whom the grant names */
    const uint8_t *seal_pk;      /* whom it is sealed to */
    Cohort__SharePolicy policy;
    Cohort__SharedDoc *docs[TK_SHARE_DOCS_MAX + 1];
    size_t n_docs;
    bool revoked;
    size_t grant_size; /* when set: an unknown field pads the grant to this size */
    size_t cut;        /* bytes cut off the end of the grant before signing */
    bool double_sig;   /* a SignedGrant with two signatures */
};

static void forge_init(struct forge *g, const struct mallory *m, const struct fx_token *to)
{
    memset(g, 0, sizeof *g);
    randombytes_buf(g->share_id, sizeof g->share_id);
    g->seq = 1;
    g->sender = &m->cert;
    g->sign_sk = m->sign.sk;
    g->recipient_pk = to->tk.sign_pk;
    g->seal_pk = to->tk.box_pk;
    g->policy = policy_of(0, 0);
}

static uint8_t *forge_seal(const struct forge *g, size_t *len)
{
    Cohort__ShareGrant sg = COHORT__SHARE_GRANT__INIT;
    Cohort__SignedGrant s = COHORT__SIGNED_GRANT__INIT;
    Cohort__Certificate cert;
    uint8_t *grant, *signed_grant, *sealed, sig[64];
    size_t grant_len, sg_len;

    fx_cert_pb(&cert, g->sender);
    sg.share_id = (ProtobufCBinaryData){TK_SHARE_ID_LEN, (uint8_t *)g->share_id};
    sg.seq = g->seq;
    sg.sender = &cert;
    sg.recipient_pk = (ProtobufCBinaryData){32, (uint8_t *)g->recipient_pk};
    sg.policy = (Cohort__SharePolicy *)&g->policy;
    sg.n_docs = g->n_docs;
    sg.docs = (Cohort__SharedDoc **)g->docs;
    sg.revoked = g->revoked;
    sg.issued = T0;
    grant_len = cohort__share_grant__get_packed_size(&sg);
    grant = fx_alloc(grant_len + g->grant_size + 8);
    cohort__share_grant__pack(&sg, grant);
    if (g->grant_size > 0) {
        size_t n, pad = g->grant_size - grant_len - 1;
        uint8_t hdr[8];
        assert_true(g->grant_size > grant_len + 4);
        while (1 + fx_put_varint(hdr, pad) + pad > g->grant_size - grant_len)
            pad--;
        n = fx_put_varint(hdr, (15u << 3) | 2u);
        n += fx_put_varint(hdr + n, pad);
        memcpy(grant + grant_len, hdr, n);
        memset(grant + grant_len + n, 0x5a, pad);
        grant_len += n + pad;
        assert_int_equal(grant_len, g->grant_size);
    }
    grant_len -= g->cut;
    fx_sign(sig, TK_SIG_SHARE, grant, grant_len, g->sign_sk);
    s.grant = (ProtobufCBinaryData){grant_len, grant};
    s.signature = (ProtobufCBinaryData){64, sig};
    sg_len = cohort__signed_grant__get_packed_size(&s);
    signed_grant = fx_alloc(sg_len + 66);
    cohort__signed_grant__pack(&s, signed_grant);
    if (g->double_sig) {
        signed_grant[sg_len] = (2 << 3) | 2;
        signed_grant[sg_len + 1] = 64;
        memcpy(signed_grant + sg_len + 2, sig, 64);
        sg_len += 66;
    }
    *len = sg_len + crypto_box_SEALBYTES;
    sealed = fx_alloc(*len);
    crypto_box_seal(sealed, signed_grant, sg_len, g->seal_pk);
    free(grant);
    free(signed_grant);
    return sealed;
}

/* Accept a forged grant at t: its status. */
static int forge_accept(struct fx_token *t, const struct forge *g)
{
    size_t len;
    uint8_t *sealed = forge_seal(g, &len);
    int rc = share_accept(t, T0, sealed, len, NULL);
    free(sealed);
    return rc;
}

static void a_package_from_a_certified_token_the_test_made_is_accepted(void **state)
{
    struct world s;
    struct mallory m;
    struct forge g;
    struct fake_doc f;
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    mallory_make(&m, &s.w.maker, COHORT__ROLE__ROLE_TOKEN, T0 - FX_DAY, T0 + FX_DAY);
    forge_init(&g, &m, &s.b);
    fake_doc_make(&f, NULL);
    g.docs[0] = &f.pb;
    g.n_docs = 1;
    /* The hand-made grant is well formed: the forgeries below differ from
     * it in one way each. One of exactly the largest size is taken too. */
    assert_int_equal(forge_accept(&s.b, &g), TK_OK);
    g.seq = 2;
    g.grant_size = TK_SHARE_GRANT_MAX;
    assert_int_equal(forge_accept(&s.b, &g), TK_OK);
    print_message("ShareAccept of a grant of %u bytes: arena peak %zu\n", TK_SHARE_GRANT_MAX,
                  s.b.last_peak);
    world_free(&s);
}

enum fault {
    F_SIGNED_BY_ANOTHER_KEY,
    F_SEALED_TO_CAROL,
    F_NAMES_CAROL,
    F_ROGUE_AUTHORITY,
    F_SENDER_EXPIRED,
    F_SENDER_NOT_A_TOKEN,
    F_SENDER_CERT_FORGED,
    F_TRUNCATED_SEAL,
    F_FLIPPED_SEAL_BIT,
    F_TRUNCATED_GRANT,
    F_OVERSIZED_SEAL,
    F_OVERSIZED_GRANT,
    F_TOO_MANY_DOCS,
    F_BAD_KEY_LENGTH,
    F_BAD_CIPHER_SIZE,
    F_DUPLICATE_DOC,
    F_REVOKED_WITH_DOCS,
    F_RESHARE,
    F_TWO_SIGNATURES,
    F_EMPTY_SEAL,
    F_NO_SEQ,
    F_SELF,
};

static const struct {
    enum fault fault;
    const char *what;
    int code;
} hostile[] = {
    {F_SIGNED_BY_ANOTHER_KEY, "a signature by another key", TK_ERR_BAD_SIGNATURE},
    {F_SEALED_TO_CAROL, "sealed to another token", TK_ERR_DECRYPT},
    {F_NAMES_CAROL, "sealed to Bob, naming Carol", TK_ERR_DENIED},
    {F_ROGUE_AUTHORITY, "a sender no trusted authority certified", TK_ERR_UNTRUSTED},
    {F_SENDER_EXPIRED, "a sender certificate out of date", TK_ERR_EXPIRED},
    {F_SENDER_NOT_A_TOKEN, "a sender certified as a researcher", TK_ERR_ROLE},
    {F_SENDER_CERT_FORGED, "a sender certificate with a forged issuer signature", TK_ERR_BAD_CERT},
    {F_TRUNCATED_SEAL, "a seal cut short", TK_ERR_DECRYPT},
    {F_FLIPPED_SEAL_BIT, "a bit flipped in the seal", TK_ERR_DECRYPT},
    {F_TRUNCATED_GRANT, "a grant cut short, then signed", TK_ERR_TRUNCATED},
    {F_OVERSIZED_SEAL, "a seal over the limit", TK_ERR_TOO_LARGE},
    {F_OVERSIZED_GRANT, "a signed grant over the limit", TK_ERR_TOO_LARGE},
    {F_TOO_MANY_DOCS, "33 documents", TK_ERR_TOO_LARGE},
    {F_BAD_KEY_LENGTH, "a key of 31 bytes", TK_ERR_MALFORMED},
    {F_BAD_CIPHER_SIZE, "a file size that does not fit the plaintext's", TK_ERR_MALFORMED},
    {F_DUPLICATE_DOC, "a document twice", TK_ERR_MALFORMED},
    {F_REVOKED_WITH_DOCS, "a revocation that holds documents", TK_ERR_MALFORMED},
    {F_RESHARE, "a policy that allows re-sharing", TK_ERR_UNSUPPORTED},
    {F_TWO_SIGNATURES, "a signed grant with two signatures", TK_ERR_MALFORMED},
    {F_EMPTY_SEAL, "an empty seal", TK_ERR_DECRYPT},
    {F_NO_SEQ, "a grant without a sequence number", TK_ERR_MALFORMED},
    {F_SELF, "a grant from Bob's own key", TK_ERR_DENIED},
};

static void hostile_packages_are_refused_with_their_codes_and_change_nothing(void **state)
{
    struct world s;
    struct mallory m, rogue_m, old_m, researcher_m, self_m;
    struct fx_key rogue;
    struct fake_doc f[TK_SHARE_DOCS_MAX + 1];
    struct fx_snapshot snap;
    uint8_t short_key[31];
    size_t i, k;
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    fx_key_make(&rogue);
    mallory_make(&m, &s.w.maker, COHORT__ROLE__ROLE_TOKEN, T0 - FX_DAY, T0 + FX_DAY);
    mallory_make(&rogue_m, &rogue, COHORT__ROLE__ROLE_TOKEN, T0 - FX_DAY, T0 + FX_DAY);
    mallory_make(&old_m, &s.w.maker, COHORT__ROLE__ROLE_TOKEN, T0 - 9 * FX_DAY, T0 - FX_DAY);
    mallory_make(&researcher_m, &s.w.maker, COHORT__ROLE__ROLE_RESEARCHER, T0 - FX_DAY,
                 T0 + FX_DAY);
    /* A certificate for Bob's own key, as if Bob's token had sent it. */
    self_m = m;
    fx_cert_issue(&self_m.cert, COHORT__ROLE__ROLE_TOKEN, "bob", s.b.tk.sign_pk, s.b.tk.box_pk,
                  &s.w.maker, T0 - FX_DAY, T0 + FX_DAY, NULL);
    for (k = 0; k <= TK_SHARE_DOCS_MAX; k++)
        fake_doc_make(&f[k], NULL);

    fx_snapshot_take(&snap, &s.b);
    for (i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        struct forge g;
        uint8_t *sealed = NULL;
        size_t len = 0;
        struct fx_key other;
        int rc;

        forge_init(&g, &m, &s.b);
        g.docs[0] = &f[0].pb;
        g.n_docs = 1;
        f[0].pb.key = (ProtobufCBinaryData){32, f[0].key};
        f[0].pb.cipher_size = 55;
        switch (hostile[i].fault) {
        case F_SIGNED_BY_ANOTHER_KEY:
            fx_key_make(&other);
            g.sign_sk = other.sk;
            break;
        case F_SEALED_TO_CAROL:
            g.seal_pk = s.c.tk.box_pk;
            break;
        case F_NAMES_CAROL:
            g.recipient_pk = s.c.tk.sign_pk;
            break;
        case F_ROGUE_AUTHORITY:
            g.sender = &rogue_m.cert;
            g.sign_sk = rogue_m.sign.sk;
            break;
        case F_SENDER_EXPIRED:
            g.sender = &old_m.cert;
            g.sign_sk = old_m.sign.sk;
            break;
        case F_SENDER_NOT_A_TOKEN:
            g.sender = &researcher_m.cert;
            g.sign_sk = researcher_m.sign.sk;
            break;
        case F_SENDER_CERT_FORGED: {
            static struct fx_cert forged;
            forged = m.cert;
            forged.sig[5] ^= 1;
            g.sender = &forged;
            break;
        }
        case F_TRUNCATED_GRANT:
            g.cut = 3;
            break;
        case F_OVERSIZED_GRANT:
            g.grant_size = TK_SHARE_GRANT_MAX + 1;
            break;
        case F_TOO_MANY_DOCS:
            for (k = 0; k <= TK_SHARE_DOCS_MAX; k++)
                g.docs[k] = &f[k].pb;
            g.n_docs = TK_SHARE_DOCS_MAX + 1;
            break;
        case F_BAD_KEY_LENGTH:
            f[0].pb.key = (ProtobufCBinaryData){sizeof short_key, short_key};
            break;
        case F_BAD_CIPHER_SIZE:
            f[0].pb.cipher_size = 54;
            break;
        case F_DUPLICATE_DOC:
            g.docs[1] = &f[0].pb;
            g.n_docs = 2;
            break;
        case F_REVOKED_WITH_DOCS:
            g.revoked = true;
            break;
        case F_RESHARE:
            g.policy.reshare = true;
            break;
        case F_TWO_SIGNATURES:
            g.double_sig = true;
            break;
        case F_NO_SEQ:
            g.seq = 0;
            break;
        case F_SELF:
            g.sender = &self_m.cert;
            g.sign_sk = s.b.tk.sign_sk;
            break;
        default:
            break;
        }
        sealed = forge_seal(&g, &len);
        if (hostile[i].fault == F_TRUNCATED_SEAL)
            len -= 1;
        if (hostile[i].fault == F_FLIPPED_SEAL_BIT)
            sealed[len / 2] ^= 0x10;
        if (hostile[i].fault == F_EMPTY_SEAL)
            len = 0;
        if (hostile[i].fault == F_OVERSIZED_SEAL) {
            free(sealed);
            len = TK_SHARE_SEALED_MAX + 1;
            sealed = fx_alloc(len);
        }
        rc = share_accept(&s.b, T0, sealed, len, NULL);
        if (rc != hostile[i].code)
            fail_msg("%s: %s, expected %s", hostile[i].what, tk_errname(rc),
                     tk_errname(hostile[i].code));
        fx_snapshot_check(&snap, &s.b, false);
        free(sealed);
    }
    fx_snapshot_free(&snap);
    world_free(&s);
}

static void a_truncated_request_or_an_empty_one_is_refused(void **state)
{
    struct world s;
    struct doc d = {0};
    const struct doc *docs[1] = {&d};
    struct fx_snapshot snap;
    struct sout o;
    Cohort__ShareAccept sa = COHORT__SHARE_ACCEPT__INIT;
    uint8_t *body, *req, plain[4];
    size_t body_len, req_len;
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    fill(plain, sizeof plain, 11);
    assert_int_equal(put(&s.a, &d, "note", plain, sizeof plain), TK_OK);
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 1, NULL, NULL, &o), TK_OK);
    sa.sealed = (ProtobufCBinaryData){o.sealed_len, o.sealed};
    body_len = cohort__share_accept__get_packed_size(&sa);
    body = fx_alloc(body_len);
    cohort__share_accept__pack(&sa, body);
    req = fx_raw_request(&req_len, T0, 32, body, body_len);
    fx_snapshot_take(&snap, &s.b);
    assert_int_equal(fx_call_raw(&s.b, req, req_len - 5, NULL), TK_ERR_TRUNCATED);
    fx_snapshot_check(&snap, &s.b, false);
    fx_snapshot_free(&snap);
    assert_int_equal(fx_call_raw(&s.b, req, req_len, NULL), TK_OK);
    free(req);
    free(body);
    sout_free(&o);
    doc_free(&d);
    world_free(&s);
}

static void replayed_older_and_conflicting_grants_are_refused(void **state)
{
    struct world s;
    struct mallory m, m2;
    struct forge g, g2;
    struct fake_doc f, f2, alices;
    struct doc d = {0}, bobs = {0};
    const struct doc *docs[1] = {&d};
    struct fx_snapshot snap;
    struct sout o;
    uint8_t *sealed1, *sealed2, plain[6];
    size_t len1, len2;
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    mallory_make(&m, &s.w.maker, COHORT__ROLE__ROLE_TOKEN, T0 - FX_DAY, T0 + FX_DAY);
    mallory_make(&m2, &s.w.maker, COHORT__ROLE__ROLE_TOKEN, T0 - FX_DAY, T0 + FX_DAY);
    fake_doc_make(&f, NULL);
    fake_doc_make(&f2, NULL);
    forge_init(&g, &m, &s.b);
    g.docs[0] = &f.pb;
    g.n_docs = 1;
    sealed1 = forge_seal(&g, &len1);
    g.seq = 2;
    sealed2 = forge_seal(&g, &len2);
    assert_int_equal(share_accept(&s.b, T0, sealed2, len2, NULL), TK_OK);

    fx_snapshot_take(&snap, &s.b);
    /* The same grant again, and an older one. */
    assert_int_equal(share_accept(&s.b, T0, sealed2, len2, NULL), TK_ERR_REPLAY);
    assert_int_equal(share_accept(&s.b, T0, sealed1, len1, NULL), TK_ERR_REPLAY);
    /* Another sender cannot take over the share id, nor claim its document. */
    forge_init(&g2, &m2, &s.b);
    memcpy(g2.share_id, g.share_id, TK_SHARE_ID_LEN);
    g2.seq = 3;
    g2.docs[0] = &f2.pb;
    g2.n_docs = 1;
    assert_int_equal(forge_accept(&s.b, &g2), TK_ERR_CONFLICT);
    forge_init(&g2, &m2, &s.b);
    g2.docs[0] = &f.pb;
    g2.n_docs = 1;
    assert_int_equal(forge_accept(&s.b, &g2), TK_ERR_CONFLICT);
    fx_snapshot_check(&snap, &s.b, false);
    fx_snapshot_free(&snap);

    /* Nor claim one of Bob's own documents, or Alice's that Bob holds. */
    fill(plain, sizeof plain, 12);
    assert_int_equal(put(&s.b, &bobs, "note", plain, sizeof plain), TK_OK);
    assert_int_equal(put(&s.a, &d, "note", plain, sizeof plain), TK_OK);
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 1, NULL, NULL, &o), TK_OK);
    accept_ok(&s.b, T0, &o);
    fx_snapshot_take(&snap, &s.b);
    fake_doc_make(&alices, bobs.id);
    forge_init(&g2, &m2, &s.b);
    g2.docs[0] = &alices.pb;
    g2.n_docs = 1;
    assert_int_equal(forge_accept(&s.b, &g2), TK_ERR_CONFLICT);
    fake_doc_make(&alices, d.id);
    forge_init(&g2, &m2, &s.b);
    g2.docs[0] = &alices.pb;
    g2.n_docs = 1;
    assert_int_equal(forge_accept(&s.b, &g2), TK_ERR_CONFLICT);
    /* Nor reuse a share id of a share Bob sent. */
    fx_snapshot_check(&snap, &s.b, false);
    fx_snapshot_free(&snap);
    {
        const struct doc *mine[1] = {&bobs};
        struct sout ob;
        assert_int_equal(share_create(&s.b, T0, s.cert_c, mine, 1, NULL, NULL, &ob), TK_OK);
        forge_init(&g2, &m2, &s.b);
        memcpy(g2.share_id, ob.id, TK_SHARE_ID_LEN);
        g2.docs[0] = &f2.pb;
        g2.n_docs = 1;
        fx_snapshot_take(&snap, &s.b);
        assert_int_equal(forge_accept(&s.b, &g2), TK_ERR_CONFLICT);
        fx_snapshot_check(&snap, &s.b, false);
        fx_snapshot_free(&snap);
        sout_free(&ob);
    }

    /* A revocation is final: a later grant does not reopen the share. */
    g.seq = 5;
    g.revoked = true;
    g.n_docs = 0;
    assert_int_equal(forge_accept(&s.b, &g), TK_OK);
    g.seq = 6;
    g.revoked = false;
    g.n_docs = 1;
    fx_snapshot_take(&snap, &s.b);
    assert_int_equal(forge_accept(&s.b, &g), TK_ERR_REPLAY);
    fx_snapshot_check(&snap, &s.b, false);
    fx_snapshot_free(&snap);
    free(sealed1);
    free(sealed2);
    sout_free(&o);
    doc_free(&d);
    doc_free(&bobs);
    world_free(&s);
}

/* ----------------------------------------------------- hostile requests */

static void hostile_share_requests_are_refused_and_change_nothing(void **state)
{
    struct world s;
    struct doc d = {0};
    struct doc ghost = {{0xee}, 1, {0}, NULL, 0};
    const struct doc *docs[2] = {&d, &d}, *ghosts[1] = {&ghost};
    struct fx_snapshot snap;
    struct fx_key rogue;
    struct mallory other_maker_token;
    Cohort__Certificate rogue_pb;
    Cohort__PermRule sel = COHORT__PERM_RULE__INIT;
    Cohort__SharePolicy reshare = policy_of(0, 0), neg = policy_of(-5, 0);
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__ShareList sl = COHORT__SHARE_LIST__INIT;
    Cohort__AppCredential app = COHORT__APP_CREDENTIAL__INIT;
    uint8_t plain[4], app_id[16] = {1}, app_secret[32] = {2};
    char *values[] = {"x"};
    struct sout o;
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    fill(plain, sizeof plain, 13);
    assert_int_equal(put(&s.a, &d, "note", plain, sizeof plain), TK_OK);
    fx_key_make(&rogue);
    mallory_make(&other_maker_token, &rogue, COHORT__ROLE__ROLE_TOKEN, T0 - FX_DAY, T0 + FX_DAY);
    fx_cert_pb(&rogue_pb, &other_maker_token.cert);
    reshare.reshare = true;

    fx_snapshot_take(&snap, &s.a);
    /* Recipients: untrusted, itself. */
    assert_int_equal(share_create(&s.a, T0, &rogue_pb, docs, 1, NULL, NULL, NULL),
                     TK_ERR_UNTRUSTED);
    assert_int_equal(share_create(&s.a, T0, s.cert_a, docs, 1, NULL, NULL, NULL), TK_ERR_DENIED);
    assert_int_equal(share_create(&s.a, T0, NULL, docs, 1, NULL, NULL, NULL), TK_ERR_BAD_CERT);
    /* Documents: none, twice, unknown; ids and a selector at once. */
    assert_int_equal(share_create(&s.a, T0, s.cert_b, NULL, 0, NULL, NULL, NULL), TK_ERR_MALFORMED);
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 2, NULL, NULL, NULL), TK_ERR_MALFORMED);
    assert_int_equal(share_create(&s.a, T0, s.cert_b, ghosts, 1, NULL, NULL, NULL),
                     TK_ERR_NOT_FOUND);
    sel.type = "*";
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 1, &sel, NULL, NULL), TK_ERR_MALFORMED);
    /* Selectors of a bad shape. */
    sel.type = "Bank";
    assert_int_equal(share_create(&s.a, T0, s.cert_b, NULL, 0, &sel, NULL, NULL), TK_ERR_MALFORMED);
    sel.type = "*";
    sel.field = "colour";
    sel.n_values = 1;
    sel.values = values;
    assert_int_equal(share_create(&s.a, T0, s.cert_b, NULL, 0, &sel, NULL, NULL), TK_ERR_MALFORMED);
    sel.field = "tag";
    sel.n_values = 0;
    assert_int_equal(share_create(&s.a, T0, s.cert_b, NULL, 0, &sel, NULL, NULL), TK_ERR_MALFORMED);
    sel.field = "";
    /* Policies. */
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 1, NULL, &reshare, NULL),
                     TK_ERR_UNSUPPORTED);
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 1, NULL, &neg, NULL), TK_ERR_MALFORMED);
    /* The recipient's certificate out of date. */
    assert_int_equal(share_create(&s.a, T0 + 400 * FX_DAY, s.cert_b, docs, 1, NULL, NULL, NULL),
                     TK_ERR_EXPIRED);
    /* Revoking: a bad id, an unknown one. */
    assert_int_equal(share_revoke(&s.a, T0, plain, 4, NULL), TK_ERR_MALFORMED);
    assert_int_equal(share_revoke(&s.a, T0, ghost.id, TK_SHARE_ID_LEN, NULL), TK_ERR_NOT_FOUND);
    /* Listing: page sizes. */
    assert_int_equal(share_list(&s.a, 0, 0, NULL), TK_ERR_TOO_LARGE);
    assert_int_equal(share_list(&s.a, 0, TK_SHARE_LIST_MAX + 1, NULL), TK_ERR_TOO_LARGE);
    /* An app's credential: only the owner shares (the credential does not
     * authenticate here). */
    app.id = (ProtobufCBinaryData){16, app_id};
    app.secret = (ProtobufCBinaryData){32, app_secret};
    sl.max = 4;
    req.now = T0;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_SHARE_LIST;
    req.share_list = &sl;
    req.auth = &app;
    assert_int_equal(fx_call(&s.a, &req, NULL), TK_ERR_AUTH);
    fx_snapshot_check(&snap, &s.a, false);
    fx_snapshot_free(&snap);

    /* A revoked share can be revoked again (a new grant to deliver), but a
     * received share is not its recipient's to revoke. */
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 1, NULL, NULL, &o), TK_OK);
    accept_ok(&s.b, T0, &o);
    fx_snapshot_take(&snap, &s.b);
    assert_int_equal(share_revoke(&s.b, T0, o.id, TK_SHARE_ID_LEN, NULL), TK_ERR_DENIED);
    fx_snapshot_check(&snap, &s.b, false);
    fx_snapshot_free(&snap);
    sout_free(&o);
    doc_free(&d);
    world_free(&s);
}

/* ------------------------------------------------------------ read-write */

static Cohort__SharePolicy rw_policy(int64_t expires)
{
    Cohort__SharePolicy p = policy_of(expires, 0);
    p.read_write = true;
    return p;
}

static int share_update(struct fx_token *t, int64_t now, const uint8_t *id, size_t id_len,
                        Cohort__SharePolicy *policy, struct sout *out)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__ShareUpdate su = COHORT__SHARE_UPDATE__INIT;
    Cohort__TokenResponse *r;
    int rc;
    su.share_id = (ProtobufCBinaryData){id_len, (uint8_t *)id};
    su.policy = policy;
    req.now = now;
    req.auth = who;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_SHARE_UPDATE;
    req.share_update = &su;
    rc = fx_call(t, &req, &r);
    if (out != NULL)
        sout_take(out, r);
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

/* The recipient's view of a received document: its id and revision. */
static struct doc view_of(const struct doc *d)
{
    struct doc v = {{0}, 0, {0}, NULL, 0};
    memcpy(v.id, d->id, TK_DOC_ID_LEN);
    v.rev = d->rev;
    memcpy(v.hash, d->hash, sizeof v.hash);
    return v;
}

/* Hand the last write back's reply to the sender: its status; *r the
 * ShareInfo when out is given. */
static int take_back(struct fx_token *t, int64_t now, const struct sout *reply,
                     Cohort__TokenResponse **out)
{
    assert_true(reply->present);
    return share_accept(t, now, reply->sealed, reply->sealed_len, out);
}

/* A return grant as its sender's token opens it (the test holds the keys). */
static Cohort__ReturnGrant *reply_open(const struct fx_token *to, const struct sout *o)
{
    uint8_t *plain = fx_alloc(o->sealed_len);
    Cohort__SignedGrant *sg;
    Cohort__ReturnGrant *rg;
    assert_true(o->sealed_len > crypto_box_SEALBYTES);
    assert_int_equal(
        crypto_box_seal_open(plain, o->sealed, o->sealed_len, to->tk.box_pk, to->tk.box_sk), 0);
    sg = cohort__signed_grant__unpack(NULL, o->sealed_len - crypto_box_SEALBYTES, plain);
    assert_non_null(sg);
    assert_int_equal(sg->grant.len, 0);
    rg = cohort__return_grant__unpack(NULL, sg->write.len, sg->write.data);
    assert_non_null(rg);
    cohort__signed_grant__free_unpacked(sg, NULL);
    free(plain);
    return rg;
}

/* A return grant signed with sk and sealed to box_pk (with_grant: the
 * SignedGrant carries a grant as well). */
static uint8_t *reply_seal(const Cohort__ReturnGrant *rg, const uint8_t *sk, const uint8_t *box_pk,
                           bool with_grant, size_t *len)
{
    Cohort__SignedGrant sg = COHORT__SIGNED_GRANT__INIT;
    size_t n = cohort__return_grant__get_packed_size(rg), sg_len;
    uint8_t *w = fx_alloc(n + 1), sig[64], *p, *sealed;
    cohort__return_grant__pack(rg, w);
    fx_sign(sig, TK_SIG_SHARE_WRITE, w, n, sk);
    sg.write = (ProtobufCBinaryData){n, w};
    sg.signature = (ProtobufCBinaryData){64, sig};
    if (with_grant)
        sg.grant = (ProtobufCBinaryData){n, w};
    sg_len = cohort__signed_grant__get_packed_size(&sg);
    p = fx_alloc(sg_len);
    cohort__signed_grant__pack(&sg, p);
    *len = sg_len + crypto_box_SEALBYTES;
    sealed = fx_alloc(*len);
    crypto_box_seal(sealed, p, sg_len, box_pk);
    free(w);
    free(p);
    return sealed;
}

/* The key of the revision a reply brings (the test holds the sender's keys). */
static void reply_key(const struct fx_token *to, const struct sout *o, uint8_t key[32])
{
    Cohort__ReturnGrant *rg = reply_open(to, o);
    assert_int_equal(rg->doc->key.len, 32);
    memcpy(key, rg->doc->key.data, 32);
    cohort__return_grant__free_unpacked(rg, NULL);
}

static void
a_read_write_share_brings_the_recipients_revision_back_and_on_to_every_share(void **state)
{
    struct world s;
    struct doc d = {0}, bd, cd;
    const struct doc *docs[1] = {&d};
    Cohort__SharePolicy rw = rw_policy(0);
    Cohort__TokenResponse *r;
    struct sout ob, oc, sync1, sync2, none;
    uint8_t v1[6000], v2[9000], v3[100], key[32];
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    fill(v1, sizeof v1, 30);
    fill(v2, sizeof v2, 31);
    fill(v3, sizeof v3, 32);
    assert_int_equal(put(&s.a, &d, "note", v1, sizeof v1), TK_OK);
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 1, NULL, &rw, &ob), TK_OK);
    assert_int_equal(share_create(&s.a, T0, s.cert_c, docs, 1, NULL, NULL, &oc), TK_OK);
    assert_int_equal(share_accept(&s.b, T0, ob.sealed, ob.sealed_len, &r), TK_OK);
    assert_true(r->share_info->policy->read_write);
    cohort__token_response__free_unpacked(r, NULL);
    accept_ok(&s.c, T0, &oc);

    /* Bob writes revision 2 on revision 1: his token names the share it
     * goes back through, keeps the revision (he reads his own write) and
     * answers the return grant, sealed to Alice, with the new file's ref. */
    bd = view_of(&d);
    assert_int_equal(put(&s.b, &bd, "note", v2, sizeof v2), TK_OK);
    print_message("the last DocWrite of a write back: arena peak %zu, return grant %zu bytes "
                  "sealed\n",
                  s.b.last_peak, back.reply.sealed_len);
    assert_true(back.shared);
    assert_memory_equal(back.share_id, ob.id, TK_SHARE_ID_LEN);
    assert_int_equal(bd.rev, 2);
    expect_read(&s.b, T0, &bd, v2, sizeof v2);
    {
        uint8_t *old;
        size_t n;
        assert_int_equal(get(&s.b, T0, d.id, 1, d.file, d.file_len, &old, &n), TK_OK);
        assert_int_equal(n, sizeof v1);
        free(old);
    }
    expect_audit(&s.b, "share.write", d.id);
    /* What the agent moves holds neither the key nor the plaintext. */
    reply_key(&s.a, &back.reply, key);
    assert_false(fx_contains(back.reply.sealed, back.reply.sealed_len, key, 32));
    assert_false(fx_contains(back.reply.sealed, back.reply.sealed_len, v2, 32));
    /* Only Alice's token opens it. */
    assert_int_equal(take_back(&s.c, T0, &back.reply, NULL), TK_ERR_DECRYPT);
    assert_int_equal(take_back(&s.b, T0, &back.reply, NULL), TK_ERR_DECRYPT);

    /* Carol, whose share is read-only, reads revision 1 until Alice's
     * token takes Bob's revision as its own document's next. */
    expect_read(&s.c, T0, &d, v1, sizeof v1);
    assert_int_equal(take_back(&s.a, T0, &back.reply, &r), TK_OK);
    print_message("ShareAccept of a return grant: arena peak %zu\n", s.a.last_peak);
    assert_false(r->share_info->incoming);
    assert_memory_equal(r->share_info->share_id.data, ob.id, TK_SHARE_ID_LEN);
    assert_string_equal(r->share_info->peer, "bob");
    assert_int_equal(r->share_info->n_refs, 1);
    assert_int_equal(r->share_info->refs[0]->revision, 2);
    assert_memory_equal(r->share_info->refs[0]->content_hash.data, bd.hash, 32);
    cohort__token_response__free_unpacked(r, NULL);
    expect_read(&s.a, T0, &bd, v2, sizeof v2);
    expect_audit(&s.a, "share.write-back", d.id);
    record_key(&s.a, d.id, key);
    {
        uint8_t bob_key[32];
        reply_key(&s.a, &back.reply, bob_key);
        assert_memory_equal(key, bob_key, 32);
    }

    /* Alice's next syncs carry it to both shares, Bob's included. */
    assert_int_equal(share_sync(&s.a, T0, &sync1), TK_OK);
    assert_int_equal(share_sync(&s.a, T0, &sync2), TK_OK);
    assert_int_equal(share_sync(&s.a, T0, &none), TK_OK);
    assert_false(none.present);
    assert_memory_equal(sync1.id, ob.id, TK_SHARE_ID_LEN);
    assert_memory_equal(sync2.id, oc.id, TK_SHARE_ID_LEN);
    assert_int_equal(sync1.ref_rev[0], 2);
    assert_int_equal(sync2.ref_rev[0], 2);
    accept_ok(&s.c, T0, &sync2);
    expect_read(&s.c, T0, &bd, v2, sizeof v2);
    accept_ok(&s.b, T0, &sync1);
    print_message("ShareAccept of the grant that takes the write back in: arena peak %zu\n",
                  s.b.last_peak);
    expect_read(&s.b, T0, &bd, v2, sizeof v2);

    /* Carol cannot write; Bob goes on from revision 2, and so does Alice. */
    cd = view_of(&bd);
    assert_int_equal(put(&s.c, &cd, "note", v3, sizeof v3), TK_ERR_DENIED);
    assert_int_equal(put(&s.b, &bd, "note", v3, sizeof v3), TK_OK);
    assert_int_equal(bd.rev, 3);
    assert_int_equal(take_back(&s.a, T0, &back.reply, NULL), TK_OK);
    expect_read(&s.a, T0, &bd, v3, sizeof v3);
    sout_free(&back.reply);
    sout_free(&ob);
    sout_free(&oc);
    sout_free(&sync1);
    sout_free(&sync2);
    doc_free(&d);
    doc_free(&bd);
    doc_free(&cd);
    world_free(&s);
}

static void a_read_only_recipient_a_stale_base_and_new_metadata_are_refused(void **state)
{
    struct world s;
    struct doc d = {0}, bd, cd;
    const struct doc *docs[1] = {&d};
    Cohort__SharePolicy rw = rw_policy(0);
    Cohort__DocMeta m;
    char *tags[] = {"x"};
    struct fx_snapshot snap;
    struct sout ob, oc, reply;
    struct app reader;
    uint8_t plain[300];
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    fill(plain, sizeof plain, 33);
    assert_int_equal(put(&s.a, &d, "note", plain, sizeof plain), TK_OK);
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 1, NULL, &rw, &ob), TK_OK);
    assert_int_equal(share_create(&s.a, T0, s.cert_c, docs, 1, NULL, NULL, &oc), TK_OK);
    accept_ok(&s.b, T0, &ob);
    accept_ok(&s.c, T0, &oc);
    app_issue(&s.b, &reader, "*"); /* GET only */

    /* Carol's share is read-only, at any base. */
    fx_snapshot_take(&snap, &s.c);
    cd = view_of(&d);
    assert_int_equal(put(&s.c, &cd, "note", plain, 10), TK_ERR_DENIED);
    cd.rev = 9;
    assert_int_equal(put(&s.c, &cd, "note", plain, 10), TK_ERR_DENIED);
    fx_snapshot_check(&snap, &s.c, false);
    fx_snapshot_free(&snap);

    /* Bob: a base that is not the share's current revision, the owner's
     * metadata changed (type, tags, author): refused, nothing changes. */
    fx_snapshot_take(&snap, &s.b);
    bd = view_of(&d);
    bd.rev = 2;
    assert_int_equal(put(&s.b, &bd, "note", plain, 10), TK_ERR_CONFLICT);
    bd.rev = 1;
    assert_int_equal(put(&s.b, &bd, "memo", plain, 10), TK_ERR_DENIED);
    meta_make(&m, "note", tags, 1);
    assert_int_equal(put_meta(&s.b, &bd, &m, plain, 10), TK_ERR_DENIED);
    meta_make(&m, "note", NULL, 0);
    m.author = "mallory";
    assert_int_equal(put_meta(&s.b, &bd, &m, plain, 10), TK_ERR_DENIED);
    fx_snapshot_check(&snap, &s.b, false);
    fx_snapshot_free(&snap);
    /* An app of Bob's that may only read: refused, and the attempt is on
     * Bob's audit log (the exception to "nothing changes"). */
    who = &reader.pb;
    assert_int_equal(put(&s.b, &bd, "note", plain, 10), TK_ERR_DENIED);
    who = NULL;

    /* A new modified time is his to set; then base 1 is stale. */
    meta_make(&m, "note", NULL, 0);
    m.modified = T0 + 60;
    assert_int_equal(put_meta(&s.b, &bd, &m, plain, 20), TK_OK);
    assert_int_equal(bd.rev, 2);
    reply = back.reply;
    memset(&back.reply, 0, sizeof back.reply);
    fx_snapshot_take(&snap, &s.b);
    bd.rev = 1;
    assert_int_equal(put(&s.b, &bd, "note", plain, 10), TK_ERR_CONFLICT);
    fx_snapshot_check(&snap, &s.b, false);
    fx_snapshot_free(&snap);
    assert_int_equal(take_back(&s.a, T0, &reply, NULL), TK_OK);
    sout_free(&reply);
    sout_free(&ob);
    sout_free(&oc);
    doc_free(&d);
    doc_free(&bd);
    doc_free(&cd);
    world_free(&s);
}

static void concurrent_writes_conflict_and_the_recipient_follows_the_owner(void **state)
{
    struct world s;
    struct doc d = {0}, bd, w1, w2;
    const struct doc *docs[1] = {&d};
    Cohort__SharePolicy rw = rw_policy(0);
    struct fx_snapshot snap;
    struct sout ob, r1, r2, sync;
    uint8_t v1[100], va[200], vb1[300], vb2[400], vb3[500], key[32];
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    fill(v1, sizeof v1, 40);
    fill(va, sizeof va, 41);
    fill(vb1, sizeof vb1, 42);
    fill(vb2, sizeof vb2, 43);
    fill(vb3, sizeof vb3, 44);
    assert_int_equal(put(&s.a, &d, "note", v1, sizeof v1), TK_OK);
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 1, NULL, &rw, &ob), TK_OK);
    accept_ok(&s.b, T0, &ob);

    /* Bob writes 2 on 1 and 3 on his 2; Alice meanwhile writes her own 2. */
    bd = view_of(&d);
    assert_int_equal(put(&s.b, &bd, "note", vb1, sizeof vb1), TK_OK);
    r1 = back.reply;
    memset(&back.reply, 0, sizeof back.reply);
    w1 = bd;
    w1.file = NULL;
    assert_int_equal(put(&s.b, &bd, "note", vb2, sizeof vb2), TK_OK);
    assert_int_equal(bd.rev, 3);
    r2 = back.reply;
    memset(&back.reply, 0, sizeof back.reply);
    expect_read(&s.b, T0, &bd, vb2, sizeof vb2);
    assert_int_equal(put(&s.a, &d, "note", va, sizeof va), TK_OK);
    assert_int_equal(d.rev, 2);

    /* Neither of Bob's applies to Alice's 2: his 3 is on his 2, not hers
     * (the same number, another content). */
    fx_snapshot_take(&snap, &s.a);
    assert_int_equal(take_back(&s.a, T0, &r2, NULL), TK_ERR_CONFLICT);
    assert_int_equal(take_back(&s.a, T0, &r1, NULL), TK_ERR_CONFLICT);
    fx_snapshot_check(&snap, &s.a, false);
    fx_snapshot_free(&snap);
    expect_read(&s.a, T0, &d, va, sizeof va);

    /* Alice's grant moves Bob's share on: his writes are dropped (their
     * keys leave his log) and he reads her revision, then writes on it. */
    reply_key(&s.a, &r2, key);
    assert_true(log_contains(&s.b, key, sizeof key));
    assert_int_equal(share_sync(&s.a, T0, &sync), TK_OK);
    accept_ok(&s.b, T0, &sync);
    assert_false(log_contains(&s.b, key, sizeof key));
    expect_read(&s.b, T0, &d, va, sizeof va);
    doc_free(&bd);
    bd = view_of(&d);
    bd.rev = 3;
    assert_int_equal(put(&s.b, &bd, "note", vb3, sizeof vb3), TK_ERR_CONFLICT);
    bd.rev = 2;
    assert_int_equal(put(&s.b, &bd, "note", vb3, sizeof vb3), TK_OK);
    assert_int_equal(take_back(&s.a, T0, &back.reply, NULL), TK_OK);
    expect_read(&s.a, T0, &bd, vb3, sizeof vb3);
    sout_free(&sync);

    /* Two writes in a row are taken in order; the second first is a
     * conflict, and is taken after the first. */
    w1 = bd;
    w1.file = NULL;
    assert_int_equal(share_sync(&s.a, T0, &sync), TK_OK);
    accept_ok(&s.b, T0, &sync);
    sout_free(&r1);
    sout_free(&r2);
    assert_int_equal(put(&s.b, &w1, "note", vb1, sizeof vb1), TK_OK);
    r1 = back.reply;
    memset(&back.reply, 0, sizeof back.reply);
    w2 = w1;
    w2.file = NULL;
    assert_int_equal(put(&s.b, &w2, "note", vb2, sizeof vb2), TK_OK);
    r2 = back.reply;
    memset(&back.reply, 0, sizeof back.reply);
    assert_int_equal(take_back(&s.a, T0, &r2, NULL), TK_ERR_CONFLICT);
    assert_int_equal(take_back(&s.a, T0, &r1, NULL), TK_OK);
    assert_int_equal(take_back(&s.a, T0, &r2, NULL), TK_OK);
    expect_read(&s.a, T0, &w2, vb2, sizeof vb2);
    assert_int_equal(take_back(&s.a, T0, &r1, NULL), TK_ERR_REPLAY);
    sout_free(&sync);
    assert_int_equal(share_sync(&s.a, T0, &sync), TK_OK);
    assert_int_equal(sync.ref_rev[0], 5);
    accept_ok(&s.b, T0, &sync);
    expect_read(&s.b, T0, &w2, vb2, sizeof vb2);
    sout_free(&sync);
    sout_free(&r1);
    sout_free(&r2);
    sout_free(&ob);
    doc_free(&d);
    doc_free(&bd);
    doc_free(&w1);
    doc_free(&w2);
    world_free(&s);
}

enum rfault {
    R_OTHER_KEY,
    R_CAROLS_TOKEN,
    R_OTHER_SENDER,
    R_UNKNOWN_SHARE,
    R_RECEIVED_SHARE,
    R_OTHER_DOC,
    R_META,
    R_NOT_NEXT,
    R_BASE_HASH,
    R_FLIPPED,
    R_BOTH,
    R_LATE,
    R_TO_CAROL,
};

static const struct {
    enum rfault fault;
    const char *what;
    int code;
} rhostile[] = {
    {R_OTHER_KEY, "Bob named as the writer, another key's signature", TK_ERR_BAD_SIGNATURE},
    {R_CAROLS_TOKEN, "signed by Carol's token, not the share's recipient", TK_ERR_DENIED},
    {R_OTHER_SENDER, "naming Carol as the sender", TK_ERR_DENIED},
    {R_UNKNOWN_SHARE, "a share nobody made", TK_ERR_NOT_FOUND},
    {R_RECEIVED_SHARE, "a share Alice received, not one she made", TK_ERR_DENIED},
    {R_OTHER_DOC, "another of Alice's documents, which the share does not hold", TK_ERR_DENIED},
    {R_META, "the owner's metadata changed", TK_ERR_DENIED},
    {R_NOT_NEXT, "a revision that is not the base's next", TK_ERR_MALFORMED},
    {R_BASE_HASH, "a base of the same number and another content", TK_ERR_CONFLICT},
    {R_FLIPPED, "a bit flipped in the seal", TK_ERR_DECRYPT},
    {R_BOTH, "a grant and a return grant in one", TK_ERR_MALFORMED},
    {R_LATE, "after the recipient's certificate expired", TK_ERR_EXPIRED},
    {R_TO_CAROL, "sealed to Carol", TK_ERR_DECRYPT},
};

static void forged_foreign_and_replayed_return_grants_are_refused_and_change_nothing(void **state)
{
    struct world s;
    struct doc d = {0}, e = {0}, cs = {0}, bd;
    const struct doc *docs[1] = {&d}, *carols[1] = {&cs};
    Cohort__SharePolicy rw = rw_policy(0);
    struct fx_snapshot snap;
    struct fx_key other;
    struct sout ob, oc;
    uint8_t plain[500];
    size_t i;
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    fill(plain, sizeof plain, 50);
    fx_key_make(&other);
    assert_int_equal(put(&s.a, &d, "note", plain, sizeof plain), TK_OK);
    assert_int_equal(put(&s.a, &e, "note", plain, 50), TK_OK);
    assert_int_equal(put(&s.c, &cs, "note", plain, 60), TK_OK);
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 1, NULL, &rw, &ob), TK_OK);
    assert_int_equal(share_create(&s.c, T0, s.cert_a, carols, 1, NULL, &rw, &oc), TK_OK);
    accept_ok(&s.b, T0, &ob);
    accept_ok(&s.a, T0, &oc);
    bd = view_of(&d);
    assert_int_equal(put(&s.b, &bd, "note", plain, 200), TK_OK);

    fx_snapshot_take(&snap, &s.a);
    for (i = 0; i < sizeof rhostile / sizeof rhostile[0]; i++) {
        Cohort__ReturnGrant *rg = reply_open(&s.a, &back.reply);
        const uint8_t *sk = s.b.tk.sign_sk, *box = s.a.tk.box_pk;
        char *author = rg->doc->meta->author;
        int64_t now = T0;
        uint8_t *sealed;
        size_t len;
        int rc;
        switch (rhostile[i].fault) {
        case R_OTHER_KEY:
            sk = other.sk;
            break;
        case R_CAROLS_TOKEN:
            memcpy(rg->writer_pk.data, s.c.tk.sign_pk, TK_PK_LEN);
            sk = s.c.tk.sign_sk;
            break;
        case R_OTHER_SENDER:
            memcpy(rg->sender_pk.data, s.c.tk.sign_pk, TK_PK_LEN);
            break;
        case R_UNKNOWN_SHARE:
            randombytes_buf(rg->share_id.data, TK_SHARE_ID_LEN);
            break;
        case R_RECEIVED_SHARE:
            memcpy(rg->share_id.data, oc.id, TK_SHARE_ID_LEN);
            break;
        case R_OTHER_DOC:
            memcpy(rg->doc->doc_id.data, e.id, TK_DOC_ID_LEN);
            break;
        case R_META:
            rg->doc->meta->author = "mallory";
            break;
        case R_NOT_NEXT:
            rg->doc->revision++;
            break;
        case R_BASE_HASH:
            rg->base_hash.data[0] ^= 1;
            break;
        case R_LATE:
            now = T0 + 400 * FX_DAY;
            break;
        case R_TO_CAROL:
            box = s.c.tk.box_pk;
            break;
        default:
            break;
        }
        sealed = reply_seal(rg, sk, box, rhostile[i].fault == R_BOTH, &len);
        if (rhostile[i].fault == R_FLIPPED)
            sealed[len / 3] ^= 0x20;
        rc = share_accept(&s.a, now, sealed, len, NULL);
        if (rc != rhostile[i].code)
            fail_msg("%s: %s, expected %s", rhostile[i].what, tk_errname(rc),
                     tk_errname(rhostile[i].code));
        fx_snapshot_check(&snap, &s.a, false);
        free(sealed);
        rg->doc->meta->author = author;
        cohort__return_grant__free_unpacked(rg, NULL);
    }
    fx_snapshot_free(&snap);

    /* Resealed as it was, it is taken; once taken, a replay. */
    {
        Cohort__ReturnGrant *rg = reply_open(&s.a, &back.reply);
        uint8_t *sealed;
        size_t len;
        sealed = reply_seal(rg, s.b.tk.sign_sk, s.a.tk.box_pk, false, &len);
        assert_int_equal(share_accept(&s.a, T0, sealed, len, NULL), TK_OK);
        fx_snapshot_take(&snap, &s.a);
        assert_int_equal(share_accept(&s.a, T0, sealed, len, NULL), TK_ERR_REPLAY);
        assert_int_equal(take_back(&s.a, T0, &back.reply, NULL), TK_ERR_REPLAY);
        fx_snapshot_check(&snap, &s.a, false);
        fx_snapshot_free(&snap);
        free(sealed);
        cohort__return_grant__free_unpacked(rg, NULL);
    }
    expect_read(&s.a, T0, &bd, plain, 200);
    sout_free(&back.reply);
    sout_free(&ob);
    sout_free(&oc);
    doc_free(&d);
    doc_free(&e);
    doc_free(&cs);
    doc_free(&bd);
    world_free(&s);
}

static void return_grants_after_revocation_expiry_or_read_only_are_refused(void **state)
{
    struct world s;
    struct doc d[3] = {{{0}, 0, {0}, NULL, 0}}, bd[3];
    const struct doc *one[1];
    Cohort__SharePolicy rw = rw_policy(0), soon = rw_policy(T0 + 100), ro = policy_of(0, 0);
    struct sout o[3], r[3], rv, up;
    struct fx_snapshot snap;
    uint8_t plain[64], key[32];
    size_t i;
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    fill(plain, sizeof plain, 60);
    for (i = 0; i < 3; i++) {
        assert_int_equal(put(&s.a, &d[i], "note", plain, sizeof plain), TK_OK);
        one[0] = &d[i];
        assert_int_equal(
            share_create(&s.a, T0, s.cert_b, one, 1, NULL, i == 1 ? &soon : &rw, &o[i]), TK_OK);
        accept_ok(&s.b, T0, &o[i]);
        bd[i] = view_of(&d[i]);
        assert_int_equal(put(&s.b, &bd[i], "note", plain, 32), TK_OK);
        r[i] = back.reply;
        memset(&back.reply, 0, sizeof back.reply);
    }
    /* Alice revokes the first share and makes the third read-only; the
     * second expires. */
    assert_int_equal(share_revoke(&s.a, T0, o[0].id, TK_SHARE_ID_LEN, &rv), TK_OK);
    assert_int_equal(share_update(&s.a, T0, o[2].id, TK_SHARE_ID_LEN, &ro, &up), TK_OK);
    assert_int_equal(up.seq, 2);
    assert_int_equal(up.n_refs, 1);
    fx_snapshot_take(&snap, &s.a);
    assert_int_equal(take_back(&s.a, T0, &r[0], NULL), TK_ERR_DENIED);
    assert_int_equal(take_back(&s.a, T0 + 100, &r[1], NULL), TK_ERR_EXPIRED);
    assert_int_equal(take_back(&s.a, T0, &r[2], NULL), TK_ERR_DENIED);
    fx_snapshot_check(&snap, &s.a, false);
    fx_snapshot_free(&snap);
    for (i = 0; i < 3; i++)
        expect_read(&s.a, T0, &d[i], plain, sizeof plain);

    /* Bob's side: no more writes through them, and the read-only share's
     * grant drops his write (its key leaves his log): he reads Alice's. */
    accept_ok(&s.b, T0, &rv);
    reply_key(&s.a, &r[2], key);
    assert_true(log_contains(&s.b, key, sizeof key));
    accept_ok(&s.b, T0, &up);
    assert_false(log_contains(&s.b, key, sizeof key));
    expect_read(&s.b, T0, &d[2], plain, sizeof plain);
    fx_snapshot_take(&snap, &s.b);
    for (i = 0; i < 3; i++) {
        static const int want[3] = {TK_ERR_DENIED, TK_ERR_EXPIRED, TK_ERR_DENIED};
        struct doc v = view_of(&bd[i]);
        when = i == 1 ? T0 + 150 : T0; /* past the second's expiry */
        assert_int_equal(put(&s.b, &v, "note", plain, 8), want[i]);
        when = T0;
        doc_free(&v);
    }
    fx_snapshot_check(&snap, &s.b, false);
    fx_snapshot_free(&snap);
    for (i = 0; i < 3; i++) {
        sout_free(&o[i]);
        sout_free(&r[i]);
        doc_free(&d[i]);
        doc_free(&bd[i]);
    }
    sout_free(&rv);
    sout_free(&up);
    world_free(&s);
}

static void
writes_waiting_for_a_grant_are_bounded_and_survive_a_reopen_and_a_compaction(void **state)
{
    struct world s;
    struct doc d = {0}, e = {0}, bd;
    const struct doc *docs[2] = {&d, &e};
    Cohort__SharePolicy rw = rw_policy(0);
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__Compact cp = COHORT__COMPACT__INIT;
    struct sout ob, r[TK_SHARE_WRITES_MAX], sync;
    struct fx_snapshot snap;
    uint8_t plain[TK_SHARE_WRITES_MAX + 1][40], image[TK_IMAGE_MAX];
    size_t i, image_len;
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    for (i = 0; i <= TK_SHARE_WRITES_MAX; i++)
        fill(plain[i], sizeof plain[i], (uint32_t)(70 + i));
    assert_int_equal(put(&s.a, &d, "note", plain[0], sizeof plain[0]), TK_OK);
    assert_int_equal(put(&s.a, &e, "note", plain[1], 9), TK_OK);
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 2, NULL, &rw, &ob), TK_OK);
    accept_ok(&s.b, T0, &ob);
    bd = view_of(&d);
    for (i = 0; i < TK_SHARE_WRITES_MAX; i++) {
        assert_int_equal(put(&s.b, &bd, "note", plain[i + 1], sizeof plain[i + 1]), TK_OK);
        r[i] = back.reply;
        memset(&back.reply, 0, sizeof back.reply);
    }
    assert_int_equal(bd.rev, 1 + TK_SHARE_WRITES_MAX);
    fx_snapshot_take(&snap, &s.b);
    assert_int_equal(put(&s.b, &bd, "note", plain[0], 8), TK_ERR_TOO_LARGE);
    fx_snapshot_check(&snap, &s.b, false);
    fx_snapshot_free(&snap);

    /* Bob's writes survive a power cycle and a compaction of his token. */
    assert_int_equal(tk_token_image(&s.b.tk, image, sizeof image, &image_len), TK_OK);
    fx_token_reopen(&s.b, image, image_len);
    req.now = T0;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_COMPACT;
    req.compact = &cp;
    assert_int_equal(fx_call(&s.b, &req, NULL), TK_OK);
    expect_read(&s.b, T0, &bd, plain[TK_SHARE_WRITES_MAX], sizeof plain[0]);

    /* A grant that moves only the share's other document leaves them be. */
    assert_int_equal(put(&s.a, &e, "note", plain[2], 9), TK_OK);
    assert_int_equal(share_sync(&s.a, T0, &sync), TK_OK);
    accept_ok(&s.b, T0, &sync);
    sout_free(&sync);
    expect_read(&s.b, T0, &bd, plain[TK_SHARE_WRITES_MAX], sizeof plain[0]);
    expect_read(&s.b, T0, &e, plain[2], 9);

    /* Alice takes them in order; her grant frees Bob's room. */
    for (i = 0; i < TK_SHARE_WRITES_MAX; i++)
        assert_int_equal(take_back(&s.a, T0, &r[i], NULL), TK_OK);
    assert_int_equal(share_sync(&s.a, T0, &sync), TK_OK);
    assert_int_equal(sync.ref_rev[0], 1 + TK_SHARE_WRITES_MAX);
    accept_ok(&s.b, T0, &sync);
    expect_read(&s.b, T0, &bd, plain[TK_SHARE_WRITES_MAX], sizeof plain[0]);
    assert_int_equal(put(&s.b, &bd, "note", plain[0], 8), TK_OK);
    doc_free(&e);
    for (i = 0; i < TK_SHARE_WRITES_MAX; i++)
        sout_free(&r[i]);
    sout_free(&back.reply);
    sout_free(&sync);
    sout_free(&ob);
    doc_free(&d);
    doc_free(&bd);
    world_free(&s);
}

static void read_write_sharing_works_in_the_least_arena(void **state)
{
    struct world s;
    struct doc d = {0}, bd;
    const struct doc *docs[1] = {&d};
    Cohort__SharePolicy rw = rw_policy(0);
    struct sout ob, oc, sync;
    uint8_t v1[5000], v2[7000];
    (void)state;

    world_make(&s, TK_ARENA_MIN);
    fill(v1, sizeof v1, 80);
    fill(v2, sizeof v2, 81);
    assert_int_equal(put(&s.a, &d, "bank.statement", v1, sizeof v1), TK_OK);
    s.a.max_peak = s.b.max_peak = 0;
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 1, NULL, &rw, &ob), TK_OK);
    assert_int_equal(share_create(&s.a, T0, s.cert_c, docs, 1, NULL, NULL, &oc), TK_OK);
    accept_ok(&s.b, T0, &ob);
    accept_ok(&s.c, T0, &oc);
    bd = view_of(&d);
    assert_int_equal(put(&s.b, &bd, "bank.statement", v2, sizeof v2), TK_OK);
    expect_read(&s.b, T0, &bd, v2, sizeof v2);
    assert_int_equal(take_back(&s.a, T0, &back.reply, NULL), TK_OK);
    expect_read(&s.a, T0, &bd, v2, sizeof v2);
    assert_int_equal(share_sync(&s.a, T0, &sync), TK_OK);
    accept_ok(&s.b, T0, &sync);
    sout_free(&sync);
    assert_int_equal(share_sync(&s.a, T0, &sync), TK_OK);
    accept_ok(&s.c, T0, &sync);
    expect_read(&s.c, T0, &bd, v2, sizeof v2);
    print_message("read-write in the least arena (%u): sender's peak %zu, writer's %zu\n",
                  TK_ARENA_MIN, s.a.max_peak, s.b.max_peak);
    sout_free(&back.reply);
    sout_free(&sync);
    sout_free(&ob);
    sout_free(&oc);
    doc_free(&d);
    doc_free(&bd);
    world_free(&s);
}

static void hostile_share_updates_are_refused_and_change_nothing(void **state)
{
    struct world s;
    struct doc d = {0};
    const struct doc *docs[1] = {&d};
    Cohort__SharePolicy rw = rw_policy(0), past = policy_of(T0, 0), reshare = policy_of(0, 0),
                        longer = rw_policy(T0 + FX_DAY);
    struct fx_snapshot snap;
    struct sout o, o2, rv, up;
    struct app reader;
    Cohort__TokenResponse *r;
    uint8_t plain[16], ghost[TK_SHARE_ID_LEN] = {7};
    (void)state;

    world_make(&s, TK_ARENA_DEFAULT);
    fill(plain, sizeof plain, 90);
    reshare.reshare = true;
    assert_int_equal(put(&s.a, &d, "note", plain, sizeof plain), TK_OK);
    assert_int_equal(share_create(&s.a, T0, s.cert_b, docs, 1, NULL, &rw, &o), TK_OK);
    assert_int_equal(share_create(&s.a, T0, s.cert_c, docs, 1, NULL, &rw, &o2), TK_OK);
    assert_int_equal(share_revoke(&s.a, T0, o2.id, TK_SHARE_ID_LEN, &rv), TK_OK);
    accept_ok(&s.b, T0, &o);
    app_issue(&s.a, &reader, "*");

    fx_snapshot_take(&snap, &s.a);
    assert_int_equal(share_update(&s.a, T0, ghost, sizeof ghost, &rw, NULL), TK_ERR_NOT_FOUND);
    assert_int_equal(share_update(&s.a, T0, plain, 4, &rw, NULL), TK_ERR_MALFORMED);
    assert_int_equal(share_update(&s.a, T0, o.id, TK_SHARE_ID_LEN, NULL, NULL), TK_ERR_MALFORMED);
    assert_int_equal(share_update(&s.a, T0, o.id, TK_SHARE_ID_LEN, &past, NULL), TK_ERR_EXPIRED);
    assert_int_equal(share_update(&s.a, T0, o.id, TK_SHARE_ID_LEN, &reshare, NULL),
                     TK_ERR_UNSUPPORTED);
    assert_int_equal(share_update(&s.a, T0, o2.id, TK_SHARE_ID_LEN, &rw, NULL), TK_ERR_DENIED);
    who = &reader.pb;
    assert_int_equal(share_update(&s.a, T0, o.id, TK_SHARE_ID_LEN, &rw, NULL), TK_ERR_DENIED);
    who = NULL;
    fx_snapshot_check(&snap, &s.a, false);
    fx_snapshot_free(&snap);
    fx_snapshot_take(&snap, &s.b);
    assert_int_equal(share_update(&s.b, T0, o.id, TK_SHARE_ID_LEN, &rw, NULL), TK_ERR_DENIED);
    fx_snapshot_check(&snap, &s.b, false);
    fx_snapshot_free(&snap);

    /* The same documents, a new policy: a grant is issued all the same,
     * and the recipient's list shows it. */
    assert_int_equal(share_update(&s.a, T0, o.id, TK_SHARE_ID_LEN, &longer, &up), TK_OK);
    assert_int_equal(up.seq, 2);
    expect_audit(&s.a, "share.update", o.id);
    accept_ok(&s.b, T0, &up);
    assert_int_equal(share_list(&s.b, 0, 4, &r), TK_OK);
    assert_int_equal(r->share_page->shares[0]->policy->expires, T0 + FX_DAY);
    assert_true(r->share_page->shares[0]->policy->read_write);
    cohort__token_response__free_unpacked(r, NULL);
    sout_free(&o);
    sout_free(&o2);
    sout_free(&rv);
    sout_free(&up);
    doc_free(&d);
    world_free(&s);
}

static void an_unprovisioned_token_neither_shares_nor_accepts(void **state)
{
    struct fx_token t;
    uint8_t sealed[100] = {0};
    struct sout o;
    (void)state;
    assert_int_equal(tk_library_init(), TK_OK);
    fx_token_init(&t, TK_ARENA_DEFAULT);
    assert_int_equal(share_accept(&t, T0, sealed, sizeof sealed, NULL), TK_ERR_NOT_PROVISIONED);
    assert_int_equal(share_sync(&t, T0, &o), TK_ERR_NOT_PROVISIONED);
    fx_token_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_shared_document_reads_the_same_at_the_recipient),
        cmocka_unit_test(a_received_document_is_read_only_and_cannot_be_shared_on),
        cmocka_unit_test(a_share_expires_and_a_clock_turned_back_does_not_revive_it),
        cmocka_unit_test(max_reads_limits_the_reads_of_each_document),
        cmocka_unit_test(a_document_shared_twice_is_read_through_either_share),
        cmocka_unit_test(an_update_reaches_the_recipient_through_share_sync),
        cmocka_unit_test(a_selector_share_picks_up_new_matching_documents),
        cmocka_unit_test(revocation_stops_reads_at_the_recipient),
        cmocka_unit_test(apps_read_received_documents_within_their_rules_and_never_share),
        cmocka_unit_test(grants_of_32_documents_fit_and_33_do_not),
        cmocka_unit_test(a_grant_larger_than_a_log_record_is_kept_in_parts),
        cmocka_unit_test(share_list_pages_sent_and_received_shares),
        cmocka_unit_test(sharing_works_in_the_least_arena),
        cmocka_unit_test(a_package_from_a_certified_token_the_test_made_is_accepted),
        cmocka_unit_test(hostile_packages_are_refused_with_their_codes_and_change_nothing),
        cmocka_unit_test(a_truncated_request_or_an_empty_one_is_refused),
        cmocka_unit_test(replayed_older_and_conflicting_grants_are_refused),
        cmocka_unit_test(hostile_share_requests_are_refused_and_change_nothing),
        cmocka_unit_test(
            a_read_write_share_brings_the_recipients_revision_back_and_on_to_every_share),
        cmocka_unit_test(a_read_only_recipient_a_stale_base_and_new_metadata_are_refused),
        cmocka_unit_test(concurrent_writes_conflict_and_the_recipient_follows_the_owner),
        cmocka_unit_test(forged_foreign_and_replayed_return_grants_are_refused_and_change_nothing),
        cmocka_unit_test(return_grants_after_revocation_expiry_or_read_only_are_refused),
        cmocka_unit_test(
            writes_waiting_for_a_grant_are_bounded_and_survive_a_reopen_and_a_compaction),
        cmocka_unit_test(read_write_sharing_works_in_the_least_arena),
        cmocka_unit_test(hostile_share_updates_are_refused_and_change_nothing),
        cmocka_unit_test(an_unprovisioned_token_neither_shares_nor_accepts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
