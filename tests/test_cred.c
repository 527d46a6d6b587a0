/*
 * App credentials and the owner's documents table in the token
 * (token/tk_cred.c, token/tk_doc.c, token/tk_table.c), over memory flash.
 *
 * - A credential authenticates with its own secret only; a wrong, unknown,
 *   malformed, expired or revoked one is TK_ERR_AUTH whatever it asks, and
 *   changes nothing.
 * - Rules, table-driven: type patterns ("*", exact, "prefix.*"), verbs and
 *   selectors on author, subject and tag, for every verb (GET DocOpen,
 *   POST new DocBegin, PUT update on the old and the new metadata, DELETE);
 *   default deny. DocList shows only what the credential may GET and what
 *   the filter matches.
 * - Delegation, table-driven: a child within its parent's rules, verbs,
 *   selector values and expiry, never an owner, at most 8 levels deep.
 * - Revocation takes effect on the next request, for the credential and
 *   every credential delegated from it; an app may revoke only below it.
 * - The owner's requests (audit log, credential list, tables, policy,
 *   studies) refuse an app credential with TK_ERR_DENIED and accept an
 *   owner credential.
 * - The audit log holds every document access, refusal and credential
 *   event, with the credential and app that asked.
 * - The documents table follows creates, updates and deletes (one row per
 *   current document), survives compaction and a reopen, refuses the
 *   owner's writes, and a study counts documents by type through the
 *   ordinary collection and aggregation, within the owner's policy.
 * - Hostile credential requests get their exact codes and change nothing;
 *   everything runs in the least arena.
 */
#include "tk_fixture.h"

#include <time.h>

#include "token/tk_int.h"

#define G COHORT__VERB__VERB_GET
#define P COHORT__VERB__VERB_POST
#define U COHORT__VERB__VERB_PUT
#define D COHORT__VERB__VERB_DELETE

/* ------------------------------------------------------------- helpers */

struct cred {
    uint8_t id[16];
    uint8_t secret[32];
};

/* A rule as the tests write it. */
struct rule {
    const char *type;
    uint32_t verbs;
    const char *field;
    const char *values[TK_CRED_VALUES_MAX + 2];
};

struct rules_pb {
    Cohort__PermRule r[TK_CRED_RULES_MAX + 1];
    Cohort__PermRule *p[TK_CRED_RULES_MAX + 1];
};

static size_t rules_pb(struct rules_pb *o, const struct rule *rules, size_t n)
{
    size_t i, k;
    for (i = 0; i < n; i++) {
        cohort__perm_rule__init(&o->r[i]);
        o->r[i].type = (char *)rules[i].type;
        o->r[i].verbs = rules[i].verbs;
        o->r[i].field = (char *)(rules[i].field ? rules[i].field : "");
        for (k = 0; rules[i].values[k] != NULL; k++)
            ;
        o->r[i].n_values = k;
        o->r[i].values = (char **)rules[i].values;
        o->p[i] = &o->r[i];
    }
    return n;
}

/* One request as `who` (NULL: the host link) at `now`. */
static int call_as(struct fx_token *t, const struct cred *who, int64_t now,
                   Cohort__TokenRequest *req, Cohort__TokenResponse **out)
{
    Cohort__AppCredential ac = COHORT__APP_CREDENTIAL__INIT;
    req->now = now;
    if (who != NULL) {
        ac.id = (ProtobufCBinaryData){16, (uint8_t *)who->id};
        ac.secret = (ProtobufCBinaryData){32, (uint8_t *)who->secret};
        req->auth = &ac;
    }
    return fx_call(t, req, out);
}

static int issue_at(struct fx_token *t, const struct cred *who, int64_t now, const char *name,
                    const struct rule *rules, size_t n, int64_t expires, bool owner,
                    struct cred *out, Cohort__CredInfo **info)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__CredIssue ci = COHORT__CRED_ISSUE__INIT;
    Cohort__TokenResponse *r;
    struct rules_pb rp;
    int rc;
    ci.name = (char *)name;
    ci.n_rules = rules_pb(&rp, rules, n);
    ci.rules = rp.p;
    ci.expires = expires;
    ci.owner = owner;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_CRED_ISSUE;
    req.cred_issue = &ci;
    rc = call_as(t, who, now, &req, &r);
    if (info != NULL)
        *info = NULL;
    if (rc == TK_OK) {
        assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_CRED_ISSUED);
        assert_int_equal(r->cred_issued->secret.len, 32);
        assert_int_equal(r->cred_issued->info->id.len, 16);
        if (out != NULL) {
            memcpy(out->id, r->cred_issued->info->id.data, 16);
            memcpy(out->secret, r->cred_issued->secret.data, 32);
        }
        if (info != NULL) {
            size_t len = cohort__cred_info__get_packed_size(r->cred_issued->info);
            uint8_t *buf = fx_alloc(len);
            cohort__cred_info__pack(r->cred_issued->info, buf);
            *info = cohort__cred_info__unpack(NULL, len, buf);
            free(buf);
        }
    }
    if (r != NULL)
        cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

static int issue(struct fx_token *t, const struct cred *who, const char *name,
                 const struct rule *rules, size_t n, struct cred *out)
{
    return issue_at(t, who, FX_NOW, name, rules, n, 0, false, out, NULL);
}

static int check_at(struct fx_token *t, const struct cred *who, int64_t now)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__CredCheck cc = COHORT__CRED_CHECK__INIT;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_CRED_CHECK;
    req.cred_check = &cc;
    return call_as(t, who, now, &req, NULL);
}

static int revoke(struct fx_token *t, const struct cred *who, const uint8_t *id, size_t id_len)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__CredRevoke cr = COHORT__CRED_REVOKE__INIT;
    cr.id = (ProtobufCBinaryData){id_len, (uint8_t *)id};
    req.body_case = COHORT__TOKEN_REQUEST__BODY_CRED_REVOKE;
    req.cred_revoke = &cr;
    return call_as(t, who, FX_NOW, &req, NULL);
}

static int cred_list(struct fx_token *t, const struct cred *who, uint64_t after, uint32_t max,
                     Cohort__TokenResponse **out)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__CredList cl = COHORT__CRED_LIST__INIT;
    cl.after = after;
    cl.max = max;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_CRED_LIST;
    req.cred_list = &cl;
    return call_as(t, who, FX_NOW, &req, out);
}

/* ---------------------------------------------------------- documents */

struct doc {
    uint8_t id[TK_DOC_ID_LEN];
    uint64_t rev;
};

struct meta {
    const char *type, *author, *subject;
    const char *tags[4];
};

static void meta_pb(Cohort__DocMeta *m, const struct meta *s)
{
    size_t n = 0;
    cohort__doc_meta__init(m);
    m->type = (char *)s->type;
    m->author = (char *)(s->author ? s->author : "");
    m->subject = (char *)(s->subject ? s->subject : "");
    m->created = FX_NOW - FX_DAY;
    m->modified = FX_NOW;
    while (n < 4 && s->tags[n] != NULL)
        n++;
    m->n_tags = n;
    m->tags = (char **)s->tags;
}

static int doc_begin(struct fx_token *t, const struct cred *who, const uint8_t *id, uint64_t base,
                     const struct meta *s, uint8_t session[TK_SESSION_ID_LEN])
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__DocBegin b = COHORT__DOC_BEGIN__INIT;
    Cohort__DocMeta m;
    Cohort__TokenResponse *r;
    int rc;
    meta_pb(&m, s);
    b.doc_id = (ProtobufCBinaryData){id ? TK_DOC_ID_LEN : 0, (uint8_t *)id};
    b.base_revision = base;
    b.meta = &m;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_DOC_BEGIN;
    req.doc_begin = &b;
    rc = call_as(t, who, FX_NOW, &req, &r);
    if (rc == TK_OK && session != NULL)
        memcpy(session, r->doc_session->session.data, TK_SESSION_ID_LEN);
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

/* The whole document in one DocWrite (streamed: it carries no credential). */
static int doc_write_last(struct fx_token *t, const uint8_t session[TK_SESSION_ID_LEN],
                          const uint8_t *data, size_t len, struct doc *out)
{
    Cohort__DocWrite w = COHORT__DOC_WRITE__INIT;
    Cohort__TokenResponse *r;
    uint8_t *body, *req;
    size_t body_len, req_len;
    int rc;
    w.session = (ProtobufCBinaryData){TK_SESSION_ID_LEN, (uint8_t *)session};
    w.data = (ProtobufCBinaryData){len, (uint8_t *)data};
    w.last = true;
    body_len = cohort__doc_write__get_packed_size(&w);
    body = fx_alloc(body_len);
    cohort__doc_write__pack(&w, body);
    req = fx_raw_request(&req_len, FX_NOW, 20, body, body_len);
    rc = fx_call_raw(t, req, req_len, &r);
    if (rc == TK_OK) {
        assert_non_null(r->doc_cipher->ref);
        memcpy(out->id, r->doc_cipher->ref->doc_id.data, TK_DOC_ID_LEN);
        out->rev = r->doc_cipher->ref->revision;
    }
    if (r != NULL)
        cohort__token_response__free_unpacked(r, NULL);
    free(req);
    free(body);
    return rc;
}

/* A new document (or, with d->rev set, a new revision of d). */
static int doc_put(struct fx_token *t, const struct cred *who, const struct meta *s, size_t size,
                   struct doc *d)
{
    uint8_t session[TK_SESSION_ID_LEN], *data = fx_alloc(size);
    int rc;
    memset(data, 'x', size);
    rc = doc_begin(t, who, d->rev ? d->id : NULL, d->rev, s, session);
    if (rc == TK_OK)
        rc = doc_write_last(t, session, data, size, d);
    free(data);
    return rc;
}

static int doc_open_as(struct fx_token *t, const struct cred *who, const uint8_t *id)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__DocOpen o = COHORT__DOC_OPEN__INIT;
    o.doc_id = (ProtobufCBinaryData){TK_DOC_ID_LEN, (uint8_t *)id};
    req.body_case = COHORT__TOKEN_REQUEST__BODY_DOC_OPEN;
    req.doc_open = &o;
    return call_as(t, who, FX_NOW, &req, NULL);
}

static int doc_delete_as(struct fx_token *t, const struct cred *who, const uint8_t *id,
                         uint64_t base)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__DocDelete d = COHORT__DOC_DELETE__INIT;
    d.doc_id = (ProtobufCBinaryData){TK_DOC_ID_LEN, (uint8_t *)id};
    d.base_revision = base;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_DOC_DELETE;
    req.doc_delete = &d;
    return call_as(t, who, FX_NOW, &req, NULL);
}

/* Every page of DocList as who, with an optional filter: the types seen,
 * joined by ',' in list order, into out. */
static int doc_list_as(struct fx_token *t, const struct cred *who, uint32_t max,
                       const struct rule *filter, char *out, size_t cap)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__DocList l = COHORT__DOC_LIST__INIT;
    Cohort__TokenResponse *r;
    struct rules_pb rp;
    uint64_t after = 0;
    size_t i, pages = 0;
    bool more;
    int rc;
    out[0] = 0;
    if (filter != NULL) {
        rules_pb(&rp, filter, 1);
        l.filter = rp.p[0];
    }
    do {
        l.after = after;
        l.max = max;
        req.body_case = COHORT__TOKEN_REQUEST__BODY_DOC_LIST;
        req.doc_list = &l;
        req.auth = NULL;
        if ((rc = call_as(t, who, FX_NOW, &req, &r)) != TK_OK) {
            cohort__token_response__free_unpacked(r, NULL);
            return rc;
        }
        assert_int_equal(r->doc_page->n_refs, r->doc_page->n_metas);
        for (i = 0; i < r->doc_page->n_metas; i++) {
            if (out[0])
                strncat(out, ",", cap - strlen(out) - 1);
            strncat(out, r->doc_page->metas[i]->type, cap - strlen(out) - 1);
        }
        more = r->doc_page->more;
        after = r->doc_page->next;
        cohort__token_response__free_unpacked(r, NULL);
        assert_true(++pages < 1000);
    } while (more);
    return TK_OK;
}

/* ---------------------------------------------------------------- audit */

/* Every audit entry from the start (the caller frees with audit_free). */
struct audit {
    Cohort__AuditEntry **e;
    size_t n;
    Cohort__TokenResponse **pages;
    size_t n_pages;
};

static int audit_read(struct fx_token *t, const struct cred *who, struct audit *a)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__ReadAudit ra = COHORT__READ_AUDIT__INIT;
    Cohort__TokenResponse *r;
    uint64_t after = 0;
    size_t i;
    int rc;
    memset(a, 0, sizeof *a);
    for (;;) {
        ra.after = after;
        req.body_case = COHORT__TOKEN_REQUEST__BODY_READ_AUDIT;
        req.read_audit = &ra;
        req.auth = NULL;
        if ((rc = call_as(t, who, FX_NOW, &req, &r)) != TK_OK) {
            cohort__token_response__free_unpacked(r, NULL);
            return rc;
        }
        a->pages = realloc(a->pages, (a->n_pages + 1) * sizeof *a->pages);
        a->pages[a->n_pages++] = r;
        a->e = realloc(a->e, (a->n + r->audit->n_entries + 1) * sizeof *a->e);
        for (i = 0; i < r->audit->n_entries; i++) {
            a->e[a->n++] = r->audit->entries[i];
            after = r->audit->entries[i]->seq;
        }
        if (!r->audit->more)
            return TK_OK;
    }
}

static void audit_free(struct audit *a)
{
    size_t i;
    for (i = 0; i < a->n_pages; i++)
        cohort__token_response__free_unpacked(a->pages[i], NULL);
    free(a->pages);
    free(a->e);
    memset(a, 0, sizeof *a);
}

static size_t audit_count(struct fx_token *t, const char *event)
{
    struct audit a;
    size_t i, n = 0;
    assert_int_equal(audit_read(t, NULL, &a), TK_OK);
    for (i = 0; i < a.n; i++)
        if (event == NULL || strcmp(a.e[i]->event, event) == 0)
            n++;
    audit_free(&a);
    return n;
}

/* --------------------------------------------------------------- tokens */

static struct fx_world W;

static void token_make(struct fx_token *t, size_t arena)
{
    fx_token_init(t, arena);
    fx_provision(t, &W, "token-cred");
}

static int setup(void **state)
{
    (void)state;
    fx_world_init(&W);
    return 0;
}

/* ------------------------------------------------------- authentication */

static void a_credential_authenticates_with_its_own_secret_only(void **state)
{
    static const struct rule read_all[] = {{"*", G, NULL, {NULL}}};
    struct fx_token t;
    struct fx_snapshot snap;
    struct cred app, other, bad;
    Cohort__CredInfo *info;
    Cohort__TokenResponse *r;
    (void)state;

    token_make(&t, TK_ARENA_MIN);
    assert_int_equal(
        issue_at(&t, NULL, FX_NOW, "reader", read_all, 1, FX_NOW + 100, false, &app, &info), TK_OK);
    assert_string_equal(info->name, "reader");
    assert_int_equal(info->n_rules, 1);
    assert_string_equal(info->rules[0]->type, "*");
    assert_int_equal(info->rules[0]->verbs, G);
    assert_int_equal(info->expires, FX_NOW + 100);
    assert_int_equal(info->created, FX_NOW);
    assert_int_equal(info->parent.len, 0);
    assert_false(info->owner);
    assert_false(info->revoked);
    cohort__cred_info__free_unpacked(info, NULL);
    assert_int_equal(issue(&t, NULL, "other", read_all, 1, &other), TK_OK);
    assert_memory_not_equal(app.id, other.id, 16);
    /* The secret is nowhere on the flash (the log holds a keyed hash). */
    assert_false(fx_on_flash(&t, app.secret, 32));

    assert_int_equal(check_at(&t, &app, FX_NOW), TK_OK);
    {
        Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
        Cohort__CredCheck cc = COHORT__CRED_CHECK__INIT;
        req.body_case = COHORT__TOKEN_REQUEST__BODY_CRED_CHECK;
        req.cred_check = &cc;
        assert_int_equal(call_as(&t, &app, FX_NOW, &req, &r), TK_OK);
        assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_CRED_INFO);
        assert_memory_equal(r->cred_info->id.data, app.id, 16);
        assert_string_equal(r->cred_info->name, "reader");
        cohort__token_response__free_unpacked(r, NULL);
    }

    /* Whatever is wrong, the answer is TK_ERR_AUTH, and nothing changes. */
    fx_snapshot_take(&snap, &t);
    bad = app;
    bad.secret[31] ^= 1;
    assert_int_equal(check_at(&t, &bad, FX_NOW), TK_ERR_AUTH);
    memcpy(bad.secret, other.secret, 32); /* another credential's secret */
    assert_int_equal(check_at(&t, &bad, FX_NOW), TK_ERR_AUTH);
    bad = app;
    bad.id[0] ^= 1;
    assert_int_equal(check_at(&t, &bad, FX_NOW), TK_ERR_AUTH);
    assert_int_equal(check_at(&t, NULL, FX_NOW), TK_ERR_AUTH);       /* the host link has none */
    assert_int_equal(check_at(&t, &app, FX_NOW + 100), TK_ERR_AUTH); /* expired */
    {
        /* Ids and secrets of the wrong length. */
        static const size_t lens[][2] = {{15, 32}, {17, 32}, {16, 31}, {16, 33}, {0, 0}};
        uint8_t id[17], secret[33];
        size_t i;
        for (i = 0; i < sizeof lens / sizeof lens[0]; i++) {
            Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
            Cohort__CredCheck cc = COHORT__CRED_CHECK__INIT;
            Cohort__AppCredential ac = COHORT__APP_CREDENTIAL__INIT;
            memcpy(id, app.id, 16);
            id[16] = 0;
            memcpy(secret, app.secret, 32);
            secret[32] = 0;
            ac.id = (ProtobufCBinaryData){lens[i][0], id};
            ac.secret = (ProtobufCBinaryData){lens[i][1], secret};
            req.now = FX_NOW;
            req.auth = &ac;
            req.body_case = COHORT__TOKEN_REQUEST__BODY_CRED_CHECK;
            req.cred_check = &cc;
            assert_int_equal(fx_call(&t, &req, NULL), TK_ERR_AUTH);
        }
    }
    /* A bad credential is refused before any request looks further. */
    bad = app;
    bad.secret[0] ^= 0x80;
    {
        struct doc d = {{0}, 0};
        struct meta m = {"note", NULL, NULL, {NULL}};
        char types[64];
        struct audit a;
        assert_int_equal(doc_put(&t, &bad, &m, 10, &d), TK_ERR_AUTH);
        assert_int_equal(doc_open_as(&t, &bad, d.id), TK_ERR_AUTH);
        assert_int_equal(doc_delete_as(&t, &bad, d.id, 1), TK_ERR_AUTH);
        assert_int_equal(doc_list_as(&t, &bad, 8, NULL, types, sizeof types), TK_ERR_AUTH);
        assert_int_equal(issue(&t, &bad, "x", read_all, 1, NULL), TK_ERR_AUTH);
        assert_int_equal(revoke(&t, &bad, app.id, 16), TK_ERR_AUTH);
        assert_int_equal(cred_list(&t, &bad, 0, 8, NULL), TK_ERR_AUTH);
        assert_int_equal(audit_read(&t, &bad, &a), TK_ERR_AUTH);
        audit_free(&a);
    }
    fx_snapshot_check(&snap, &t, true);
    fx_snapshot_free(&snap);
    fx_token_free(&t);
}

/* ---------------------------------------------------------------- rules */

static const struct meta docs6[] = {
    {"bank.statement", "alice", "march", {"tax", NULL}},
    {"bank.card.visa", "bob", "", {NULL}},
    {"bank", "alice", "", {NULL}},
    {"banking.app", "carol", "", {NULL}},
    {"note", "alice", "todo", {"home", "tax", NULL}},
    {"note", "bob", "ideas", {NULL}},
};

/* One credential per rule set. */
static const struct rule rules6[][2] = {
    {{"*", G, NULL, {NULL}}},
    {{"bank.*", G | P, NULL, {NULL}}},
    {{"bank.statement", U | D, NULL, {NULL}}},
    {{"note", G | D, "author", {"alice", NULL}}},
    {{"*", G, "tag", {"tax", NULL}}},
    {{"note", G, "subject", {"ideas", "todo", NULL}}, {"bank", P, NULL, {NULL}}},
};
static const size_t rules6_n[] = {1, 1, 1, 1, 1, 2};

static const struct {
    unsigned cred;
    uint32_t verb;
    unsigned doc;
    bool allowed;
} cases[] = {
    /* GET: DocOpen. */
    {0, G, 0, true},
    {0, G, 3, true},
    {1, G, 0, true},
    {1, G, 1, true},  /* "bank.*" matches deeper types */
    {1, G, 2, false}, /* but not "bank" itself */
    {1, G, 3, false}, /* nor "banking.app" */
    {1, G, 4, false},
    {2, G, 0, false}, /* PUT and DELETE only */
    {3, G, 4, true},
    {3, G, 5, false}, /* author bob */
    {3, G, 0, false},
    {4, G, 0, true},
    {4, G, 4, true}, /* one of its tags */
    {4, G, 1, false},
    {4, G, 5, false},
    {5, G, 5, true},
    {5, G, 4, true},
    {5, G, 0, false},
    /* POST: a new document with that metadata. */
    {1, P, 0, true},
    {1, P, 1, true},
    {1, P, 2, false},
    {0, P, 0, false},
    {5, P, 2, true}, /* its second rule */
    {5, P, 0, false},
    /* PUT and DELETE: checked before the (stale) base revision. */
    {2, U, 0, true},
    {2, U, 1, false},
    {1, U, 0, false},
    {2, D, 0, true},
    {2, D, 1, false},
    {3, D, 4, true},
    {3, D, 5, false},
    {0, D, 0, false},
};

static void rules_allow_by_type_verb_and_selector_and_deny_the_rest(void **state)
{
    struct fx_token t;
    struct cred c[6];
    struct doc d[6];
    size_t i, denied = 0, before;
    char types_before[256], types_after[256];
    (void)state;

    token_make(&t, TK_ARENA_MIN);
    for (i = 0; i < 6; i++) {
        memset(&d[i], 0, sizeof d[i]);
        assert_int_equal(doc_put(&t, NULL, &docs6[i], 100 + i, &d[i]), TK_OK);
        assert_int_equal(issue(&t, NULL, "app", rules6[i], rules6_n[i], &c[i]), TK_OK);
    }
    assert_int_equal(doc_list_as(&t, NULL, 64, NULL, types_before, sizeof types_before), TK_OK);
    before = audit_count(&t, "doc.denied");
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct cred *who = &c[cases[i].cred];
        const struct doc *doc = &d[cases[i].doc];
        int want = cases[i].allowed ? TK_OK : TK_ERR_DENIED, rc = TK_OK;
        switch (cases[i].verb) {
        case G:
            rc = doc_open_as(&t, who, doc->id);
            break;
        case P:
            rc = doc_begin(&t, who, NULL, 0, &docs6[cases[i].doc], NULL);
            break;
        case U:
            /* A stale base: allowed means the conflict is what stops it. */
            rc = doc_begin(&t, who, doc->id, doc->rev + 1, &docs6[cases[i].doc], NULL);
            if (cases[i].allowed)
                want = TK_ERR_CONFLICT;
            break;
        default:
            rc = doc_delete_as(&t, who, doc->id, doc->rev + 1);
            if (cases[i].allowed)
                want = TK_ERR_CONFLICT;
            break;
        }
        if (rc != want)
            fail_msg("case %zu: credential %u, verb %u, document %u: %s, expected %s", i,
                     cases[i].cred, cases[i].verb, cases[i].doc, tk_errname(rc), tk_errname(want));
        denied += !cases[i].allowed;
    }
    /* Every refusal is on record; no document changed. */
    assert_int_equal(audit_count(&t, "doc.denied") - before, denied);
    assert_int_equal(doc_list_as(&t, NULL, 64, NULL, types_after, sizeof types_after), TK_OK);
    assert_string_equal(types_after, types_before);
    fx_token_free(&t);
}

static void an_update_needs_put_on_the_old_and_the_new_metadata(void **state)
{
    static const struct rule statements[] = {{"bank.statement", G | U, NULL, {NULL}}};
    static const struct meta st = {"bank.statement", "alice", "", {NULL}};
    static const struct meta moved = {"bank.other", "alice", "", {NULL}};
    static const struct meta note = {"note", "alice", "", {NULL}};
    struct fx_token t;
    struct cred app;
    struct doc a = {{0}, 0}, n = {{0}, 0};
    (void)state;

    token_make(&t, TK_ARENA_MIN);
    assert_int_equal(doc_put(&t, NULL, &st, 10, &a), TK_OK);
    assert_int_equal(doc_put(&t, NULL, &note, 10, &n), TK_OK);
    assert_int_equal(issue(&t, NULL, "editor", statements, 1, &app), TK_OK);
    assert_int_equal(doc_put(&t, &app, &st, 20, &a), TK_OK);
    assert_int_equal(a.rev, 2);
    /* Into a type it may not write, or from one. */
    assert_int_equal(doc_begin(&t, &app, a.id, 2, &moved, NULL), TK_ERR_DENIED);
    assert_int_equal(doc_begin(&t, &app, n.id, 1, &st, NULL), TK_ERR_DENIED);
    assert_int_equal(doc_put(&t, &app, &st, 30, &a), TK_OK);
    assert_int_equal(a.rev, 3);
    fx_token_free(&t);
}

static void doc_list_shows_what_the_credential_may_get_and_the_filter_matches(void **state)
{
    static const struct rule bank_reader[] = {{"bank.*", G, NULL, {NULL}}};
    static const struct rule poster[] = {{"*", P, NULL, {NULL}}};
    static const struct rule f_note = {"note", 0, NULL, {NULL}};
    static const struct rule f_alice = {"*", 0, "author", {"alice", NULL}};
    static const struct rule f_tax = {"*", 0, "tag", {"tax", NULL}};
    static const struct rule f_bank_bob = {"bank.*", 0, "author", {"bob", NULL}};
    static const struct rule bad_filters[] = {
        {"Note", 0, NULL, {NULL}},
        {"", 0, NULL, {NULL}},
        {"note", 0, "colour", {"red", NULL}},
        {"note", 0, "author", {NULL}},
        {"note", 0, NULL, {"alice", NULL}},
    };
    struct fx_token t;
    struct fx_snapshot snap;
    struct cred reader, writer;
    struct doc d;
    char got[512];
    size_t i;
    uint32_t max;
    (void)state;

    token_make(&t, TK_ARENA_MIN);
    for (i = 0; i < 6; i++) {
        memset(&d, 0, sizeof d);
        assert_int_equal(doc_put(&t, NULL, &docs6[i], 10, &d), TK_OK);
    }
    assert_int_equal(issue(&t, NULL, "bank reader", bank_reader, 1, &reader), TK_OK);
    assert_int_equal(issue(&t, NULL, "poster", poster, 1, &writer), TK_OK);
    for (max = 1; max <= 7; max += 3) {
        assert_int_equal(doc_list_as(&t, NULL, max, NULL, got, sizeof got), TK_OK);
        assert_string_equal(got, "bank.statement,bank.card.visa,bank,banking.app,note,note");
        assert_int_equal(doc_list_as(&t, &reader, max, NULL, got, sizeof got), TK_OK);
        assert_string_equal(got, "bank.statement,bank.card.visa");
        assert_int_equal(doc_list_as(&t, &writer, max, NULL, got, sizeof got), TK_OK);
        assert_string_equal(got, ""); /* POST only: nothing to see */
        assert_int_equal(doc_list_as(&t, NULL, max, &f_note, got, sizeof got), TK_OK);
        assert_string_equal(got, "note,note");
        assert_int_equal(doc_list_as(&t, NULL, max, &f_alice, got, sizeof got), TK_OK);
        assert_string_equal(got, "bank.statement,bank,note");
        assert_int_equal(doc_list_as(&t, NULL, max, &f_tax, got, sizeof got), TK_OK);
        assert_string_equal(got, "bank.statement,note");
        assert_int_equal(doc_list_as(&t, &reader, max, &f_bank_bob, got, sizeof got), TK_OK);
        assert_string_equal(got, "bank.card.visa");
        assert_int_equal(doc_list_as(&t, &reader, max, &f_note, got, sizeof got), TK_OK);
        assert_string_equal(got, "");
    }
    fx_snapshot_take(&snap, &t);
    for (i = 0; i < sizeof bad_filters / sizeof bad_filters[0]; i++)
        assert_int_equal(doc_list_as(&t, NULL, 8, &bad_filters[i], got, sizeof got),
                         TK_ERR_MALFORMED);
    fx_snapshot_check(&snap, &t, true);
    fx_snapshot_free(&snap);
    fx_token_free(&t);
}

/* ----------------------------------------------------------- delegation */

static void delegation_stays_within_the_delegators_rights(void **state)
{
    static const struct rule parent[] = {
        {"bank.*", G | P, NULL, {NULL}},
        {"note", G, "author", {"alice", "bob", NULL}},
    };
    static const struct {
        struct rule r;
        bool ok;
    } children[] = {
        {{"bank.statement", G, NULL, {NULL}}, true},
        {{"bank.*", G | P, NULL, {NULL}}, true},
        {{"bank.card.*", P, NULL, {NULL}}, true},
        {{"note", G, "author", {"alice", NULL}}, true},
        {{"note", G, "author", {"bob", "alice", NULL}}, true},
        {{"*", G, NULL, {NULL}}, false},
        {{"bank", G, NULL, {NULL}}, false},
        {{"banking.*", G, NULL, {NULL}}, false},
        {{"bank.statement", U, NULL, {NULL}}, false},
        {{"bank.statement", G | D, NULL, {NULL}}, false},
        {{"note", G, NULL, {NULL}}, false},
        {{"note.*", G, "author", {"alice", NULL}}, false},
        {{"note", G, "subject", {"alice", NULL}}, false},
        {{"note", G, "author", {"carol", NULL}}, false},
        {{"note", G, "author", {"alice", "carol", NULL}}, false},
    };
    static const struct rule one[] = {{"bank.statement", G, NULL, {NULL}}};
    static const struct meta st = {"bank.statement", "x", "", {NULL}};
    struct fx_token t;
    struct fx_snapshot snap;
    struct cred app, child, chain[9];
    Cohort__CredInfo *info;
    struct doc d = {{0}, 0};
    size_t i;
    (void)state;

    token_make(&t, TK_ARENA_MIN);
    assert_int_equal(doc_put(&t, NULL, &st, 10, &d), TK_OK);
    assert_int_equal(
        issue_at(&t, NULL, FX_NOW, "parent", parent, 2, FX_NOW + 1000, false, &app, NULL), TK_OK);
    fx_snapshot_take(&snap, &t);
    for (i = 0; i < sizeof children / sizeof children[0]; i++) {
        int rc = issue_at(&t, &app, FX_NOW, "child", &children[i].r, 1, 0, false, &child, &info);
        if (rc != (children[i].ok ? TK_OK : TK_ERR_DENIED))
            fail_msg("child rule %zu: %s", i, tk_errname(rc));
        if (rc == TK_OK) {
            /* Its parent is named, and it expires with it. */
            assert_memory_equal(info->parent.data, app.id, 16);
            assert_int_equal(info->expires, FX_NOW + 1000);
            cohort__cred_info__free_unpacked(info, NULL);
        }
    }
    /* Expiry: at most the parent's; never an owner credential. */
    assert_int_equal(issue_at(&t, &app, FX_NOW, "c", one, 1, FX_NOW + 1001, false, NULL, NULL),
                     TK_ERR_DENIED);
    assert_int_equal(issue_at(&t, &app, FX_NOW, "c", NULL, 0, 0, true, NULL, NULL), TK_ERR_DENIED);
    assert_int_equal(issue_at(&t, &app, FX_NOW, "c", one, 1, FX_NOW + 500, false, &child, &info),
                     TK_OK);
    assert_int_equal(info->expires, FX_NOW + 500);
    cohort__cred_info__free_unpacked(info, NULL);
    /* The delegated credential works within its rights. */
    assert_int_equal(doc_open_as(&t, &child, d.id), TK_OK);
    assert_int_equal(doc_begin(&t, &child, NULL, 0, &st, NULL), TK_ERR_DENIED);
    assert_int_equal(check_at(&t, &child, FX_NOW + 500), TK_ERR_AUTH);

    /* Eight levels below an owner-issued credential, and no more. */
    chain[0] = app;
    for (i = 1; i <= 8; i++)
        assert_int_equal(issue(&t, &chain[i - 1], "level", one, 1, &chain[i]), TK_OK);
    assert_int_equal(issue(&t, &chain[8], "level", one, 1, NULL), TK_ERR_DENIED);
    assert_int_equal(doc_open_as(&t, &chain[8], d.id), TK_OK);
    fx_snapshot_free(&snap);
    fx_token_free(&t);
}

/* ----------------------------------------------------------- revocation */

static void revocation_takes_effect_on_the_next_request_down_the_chain(void **state)
{
    static const struct rule all[] = {{"*", G | P | U | D, NULL, {NULL}}};
    static const struct rule some[] = {{"note", G, NULL, {NULL}}};
    static const struct meta note = {"note", "a", "", {NULL}};
    struct fx_token t;
    struct fx_snapshot snap;
    struct cred a, b, c, sib, c2;
    struct doc d = {{0}, 0};
    Cohort__TokenResponse *r;
    uint64_t len;
    size_t i, revoked = 0;
    (void)state;

    token_make(&t, TK_ARENA_MIN);
    assert_int_equal(doc_put(&t, NULL, &note, 10, &d), TK_OK);
    assert_int_equal(issue(&t, NULL, "a", all, 1, &a), TK_OK);
    assert_int_equal(issue(&t, &a, "b", some, 1, &b), TK_OK);
    assert_int_equal(issue(&t, &b, "c", some, 1, &c), TK_OK);
    assert_int_equal(issue(&t, &b, "c2", some, 1, &c2), TK_OK);
    assert_int_equal(issue(&t, NULL, "sibling", all, 1, &sib), TK_OK);
    assert_int_equal(doc_open_as(&t, &c, d.id), TK_OK);

    /* An app revokes only what was delegated from it. */
    fx_snapshot_take(&snap, &t);
    assert_int_equal(revoke(&t, &b, a.id, 16), TK_ERR_DENIED);   /* its parent */
    assert_int_equal(revoke(&t, &sib, b.id, 16), TK_ERR_DENIED); /* not below it */
    assert_int_equal(revoke(&t, &c, c2.id, 16), TK_ERR_DENIED);  /* its sibling */
    assert_int_equal(revoke(&t, &c, c.id, 16), TK_ERR_DENIED);   /* itself */
    assert_int_equal(revoke(&t, NULL, c.id, 15), TK_ERR_MALFORMED);
    {
        uint8_t unknown[16] = {9};
        assert_int_equal(revoke(&t, NULL, unknown, 16), TK_ERR_NOT_FOUND);
    }
    fx_snapshot_check(&snap, &t, true);
    fx_snapshot_free(&snap);
    assert_int_equal(revoke(&t, &a, c2.id, 16), TK_OK); /* two levels below */
    assert_int_equal(check_at(&t, &c2, FX_NOW), TK_ERR_AUTH);
    assert_int_equal(check_at(&t, &c, FX_NOW), TK_OK);

    /* The owner revokes a: a, b and c are refused on their next request. */
    assert_int_equal(revoke(&t, NULL, a.id, 16), TK_OK);
    assert_int_equal(doc_open_as(&t, &a, d.id), TK_ERR_AUTH);
    assert_int_equal(doc_open_as(&t, &b, d.id), TK_ERR_AUTH);
    assert_int_equal(doc_open_as(&t, &c, d.id), TK_ERR_AUTH);
    assert_int_equal(issue(&t, &b, "late", some, 1, NULL), TK_ERR_AUTH);
    assert_int_equal(doc_open_as(&t, &sib, d.id), TK_OK);
    /* Revoking again answers the same and writes nothing. */
    len = t.tk.log.length;
    assert_int_equal(revoke(&t, NULL, a.id, 16), TK_OK);
    assert_int_equal(t.tk.log.length, len);

    /* The list shows them all, the revoked ones marked, and pages. */
    assert_int_equal(cred_list(&t, NULL, 0, 64, &r), TK_OK);
    assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_CRED_PAGE);
    assert_int_equal(r->cred_page->n_creds, 5);
    assert_false(r->cred_page->more);
    for (i = 0; i < 5; i++) {
        const Cohort__CredInfo *ci = r->cred_page->creds[i];
        bool gone = strcmp(ci->name, "sibling") != 0;
        assert_int_equal(ci->revoked, gone);
        revoked += ci->revoked;
    }
    assert_string_equal(r->cred_page->creds[0]->name, "a");
    assert_string_equal(r->cred_page->creds[4]->name, "sibling");
    cohort__token_response__free_unpacked(r, NULL);
    /* Revoking a revoked its descendants b and c too (c2 already was). */
    assert_int_equal(revoked, 4);
    {
        uint64_t after = 0;
        size_t seen = 0;
        bool more;
        do {
            assert_int_equal(cred_list(&t, NULL, after, 2, &r), TK_OK);
            assert_true(r->cred_page->n_creds <= 2);
            seen += r->cred_page->n_creds;
            more = r->cred_page->more;
            after = r->cred_page->next;
            cohort__token_response__free_unpacked(r, NULL);
        } while (more);
        assert_int_equal(seen, 5);
    }
    assert_int_equal(audit_count(&t, "cred.revoke"), 2);
    assert_int_equal(audit_count(&t, "cred.issue"), 5);
    fx_token_free(&t);
}

/* ----------------------------------------------------- owner's requests */

static void the_owners_requests_refuse_an_app_and_accept_an_owner_credential(void **state)
{
    static const struct rule all[] = {{"*", G | P | U | D, NULL, {NULL}}};
    static const struct {
        int body;
    } owner_only[] = {
        {COHORT__TOKEN_REQUEST__BODY_READ_AUDIT},  {COHORT__TOKEN_REQUEST__BODY_CRED_LIST},
        {COHORT__TOKEN_REQUEST__BODY_LIST_TABLES}, {COHORT__TOKEN_REQUEST__BODY_GET_POLICY},
        {COHORT__TOKEN_REQUEST__BODY_SET_POLICY},  {COHORT__TOKEN_REQUEST__BODY_READ_ROWS},
        {COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE},  {COHORT__TOKEN_REQUEST__BODY_DELETE_ROWS},
        {COHORT__TOKEN_REQUEST__BODY_COMPACT},     {COHORT__TOKEN_REQUEST__BODY_COLLECT},
        {COHORT__TOKEN_REQUEST__BODY_ATTEST},      {COHORT__TOKEN_REQUEST__BODY_PROVISION_BEGIN},
    };
    struct fx_token t;
    struct fx_snapshot snap;
    struct cred app, owner, bad;
    struct fx_schema h;
    struct fx_signed plan;
    struct fx_plan_spec spec;
    Cohort__ConsentPolicy pol = COHORT__CONSENT_POLICY__INIT;
    char *tables[] = {"health"};
    Cohort__ReadAudit ra = COHORT__READ_AUDIT__INIT;
    Cohort__CredList cl = COHORT__CRED_LIST__INIT;
    Cohort__ListTables lt = COHORT__LIST_TABLES__INIT;
    Cohort__GetPolicy gp = COHORT__GET_POLICY__INIT;
    Cohort__SetPolicy sp = COHORT__SET_POLICY__INIT;
    Cohort__ReadRows rr = COHORT__READ_ROWS__INIT;
    Cohort__LoadTable ld = COHORT__LOAD_TABLE__INIT;
    Cohort__DeleteRows dr = COHORT__DELETE_ROWS__INIT;
    Cohort__Compact cp = COHORT__COMPACT__INIT;
    Cohort__Collect co = COHORT__COLLECT__INIT;
    Cohort__Attest at = COHORT__ATTEST__INIT;
    Cohort__ProvisionBegin pb = COHORT__PROVISION_BEGIN__INIT;
    uint8_t challenge[32] = {1};
    size_t i;
    (void)state;

    token_make(&t, TK_ARENA_MIN);
    assert_int_equal(fx_load_health(&t, NULL, 0), TK_OK);
    assert_int_equal(issue(&t, NULL, "app", all, 1, &app), TK_OK);
    assert_int_equal(issue_at(&t, NULL, FX_NOW, "owner's browser", NULL, 0, 0, true, &owner, NULL),
                     TK_OK);
    bad = owner;
    bad.secret[3] ^= 4;
    fx_health_schema(&h);
    fx_plan_default(&spec);
    fx_plan_sign(&plan, &spec, &W.researcher);
    pol.n_tables = 1;
    pol.tables = tables;
    pol.epsilon_per_study = 1.0;
    pol.epsilon_total = 1.0;
    ra.max_entries = 4;
    cl.max = 4;
    sp.policy = &pol;
    rr.table = "health";
    ld.schema = &h.s;
    dr.table = "health";
    dr.all = true;
    co.plan = plan.sp;
    at.challenge = (ProtobufCBinaryData){sizeof challenge, challenge};
    pb.subject = "again";

    fx_snapshot_take(&snap, &t);
    for (i = 0; i < sizeof owner_only / sizeof owner_only[0]; i++) {
        Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
        int body = owner_only[i].body;
        req.body_case = (Cohort__TokenRequest__BodyCase)body;
        switch (body) {
        case COHORT__TOKEN_REQUEST__BODY_READ_AUDIT:
            req.read_audit = &ra;
            break;
        case COHORT__TOKEN_REQUEST__BODY_CRED_LIST:
            req.cred_list = &cl;
            break;
        case COHORT__TOKEN_REQUEST__BODY_LIST_TABLES:
            req.list_tables = &lt;
            break;
        case COHORT__TOKEN_REQUEST__BODY_GET_POLICY:
            req.get_policy = &gp;
            break;
        case COHORT__TOKEN_REQUEST__BODY_SET_POLICY:
            req.set_policy = &sp;
            break;
        case COHORT__TOKEN_REQUEST__BODY_READ_ROWS:
            req.read_rows = &rr;
            break;
        case COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE:
            req.load_table = &ld;
            break;
        case COHORT__TOKEN_REQUEST__BODY_DELETE_ROWS:
            req.delete_rows = &dr;
            break;
        case COHORT__TOKEN_REQUEST__BODY_COMPACT:
            req.compact = &cp;
            break;
        case COHORT__TOKEN_REQUEST__BODY_COLLECT:
            req.collect = &co;
            break;
        case COHORT__TOKEN_REQUEST__BODY_ATTEST:
            req.attest = &at;
            break;
        default:
            req.provision_begin = &pb;
            break;
        }
        if (call_as(&t, &app, FX_NOW, &req, NULL) != TK_ERR_DENIED)
            fail_msg("request %d accepted an app credential", body);
        req.auth = NULL;
        if (call_as(&t, &bad, FX_NOW, &req, NULL) != TK_ERR_AUTH)
            fail_msg("request %d accepted a bad credential", body);
    }
    fx_snapshot_check(&snap, &t, true);
    fx_snapshot_free(&snap);

    /* An owner credential may (and GetInfo answers anyone). */
    {
        Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
        Cohort__GetInfo gi = COHORT__GET_INFO__INIT;
        struct audit a;
        req.body_case = COHORT__TOKEN_REQUEST__BODY_LIST_TABLES;
        req.list_tables = &lt;
        assert_int_equal(call_as(&t, &owner, FX_NOW, &req, NULL), TK_OK);
        req = (Cohort__TokenRequest)COHORT__TOKEN_REQUEST__INIT;
        req.body_case = COHORT__TOKEN_REQUEST__BODY_INFO;
        req.info = &gi;
        assert_int_equal(call_as(&t, &app, FX_NOW, &req, NULL), TK_OK);
        assert_int_equal(cred_list(&t, &owner, 0, 8, NULL), TK_OK);
        assert_int_equal(audit_read(&t, &owner, &a), TK_OK);
        assert_true(a.n >= 2);
        audit_free(&a);
        /* It revokes any credential, and issues owner credentials. */
        assert_int_equal(issue_at(&t, &owner, FX_NOW, "o2", NULL, 0, 0, true, NULL, NULL), TK_OK);
        assert_int_equal(revoke(&t, &owner, app.id, 16), TK_OK);
    }
    fx_signed_free(&plan);
    fx_token_free(&t);
}

/* ---------------------------------------------------------------- audit */

static void every_document_access_and_credential_event_is_audited(void **state)
{
    static const struct rule notes[] = {{"note", G | P | U | D, NULL, {NULL}}};
    static const struct meta note = {"note", "a", "", {NULL}};
    static const struct meta bank = {"bank.statement", "a", "", {NULL}};
    static const struct {
        const char *event;
        bool by_app, allowed, has_object;
    } want[] = {
        {"policy", false, true, false},     {"cred.issue", false, true, true},
        {"doc.create", false, true, true},  {"doc.create", true, true, true},
        {"doc.read", true, true, true},     {"doc.update", true, true, true},
        {"doc.denied", true, false, true},  {"doc.read", false, true, true},
        {"doc.denied", true, false, false}, {"doc.delete", true, true, true},
        {"cred.revoke", false, true, true},
    };
    struct fx_token t;
    struct fx_snapshot snap;
    struct cred app, bad;
    struct doc secret = {{0}, 0}, mine = {{0}, 0};
    struct audit a;
    size_t i;
    (void)state;

    token_make(&t, TK_ARENA_MIN);
    assert_int_equal(issue(&t, NULL, "notes app", notes, 1, &app), TK_OK);
    assert_int_equal(doc_put(&t, NULL, &bank, 10, &secret), TK_OK);
    assert_int_equal(doc_put(&t, &app, &note, 10, &mine), TK_OK);
    assert_int_equal(doc_open_as(&t, &app, mine.id), TK_OK);
    assert_int_equal(doc_put(&t, &app, &note, 20, &mine), TK_OK);
    assert_int_equal(doc_open_as(&t, &app, secret.id), TK_ERR_DENIED);
    assert_int_equal(doc_open_as(&t, NULL, secret.id), TK_OK);
    assert_int_equal(doc_begin(&t, &app, NULL, 0, &bank, NULL), TK_ERR_DENIED);
    /* A credential that does not authenticate leaves no trace. */
    bad = app;
    bad.secret[0] ^= 1;
    fx_snapshot_take(&snap, &t);
    assert_int_equal(doc_open_as(&t, &bad, secret.id), TK_ERR_AUTH);
    fx_snapshot_check(&snap, &t, true);
    fx_snapshot_free(&snap);
    assert_int_equal(doc_delete_as(&t, &app, mine.id, 2), TK_OK);
    assert_int_equal(revoke(&t, NULL, app.id, 16), TK_OK);

    assert_int_equal(audit_read(&t, NULL, &a), TK_OK);
    assert_int_equal(a.n, sizeof want / sizeof want[0]);
    for (i = 0; i < a.n; i++) {
        const Cohort__AuditEntry *e = a.e[i];
        assert_int_equal(e->seq, i + 1);
        assert_int_equal(e->time, FX_NOW);
        assert_string_equal(e->event, want[i].event);
        assert_int_equal(e->accepted, want[i].allowed);
        assert_int_equal(e->status, want[i].allowed ? TK_OK : TK_ERR_DENIED);
        assert_int_equal(e->doc_id.len, want[i].has_object ? 16 : 0);
        if (want[i].by_app) {
            assert_int_equal(e->cred_id.len, 16);
            assert_memory_equal(e->cred_id.data, app.id, 16);
            assert_string_equal(e->app, "notes app");
        } else {
            assert_int_equal(e->cred_id.len, 0);
            assert_string_equal(e->app, "");
        }
    }
    assert_memory_equal(a.e[1]->doc_id.data, app.id, 16); /* the credential issued */
    assert_memory_equal(a.e[2]->doc_id.data, secret.id, 16);
    assert_memory_equal(a.e[3]->doc_id.data, mine.id, 16);
    assert_memory_equal(a.e[6]->doc_id.data, secret.id, 16);
    assert_memory_equal(a.e[10]->doc_id.data, app.id, 16);
    audit_free(&a);
    fx_token_free(&t);
}

/* ------------------------------------------------------ documents table */

#define DOCS_NCOLS 8

struct docs_schema {
    Cohort__TableSchema s;
    Cohort__Column cols[DOCS_NCOLS];
    Cohort__Column *ptrs[DOCS_NCOLS];
};

/* The documents table's schema, as the token's contract states it. */
static void docs_schema(struct docs_schema *d)
{
    static const struct {
        const char *name;
        int type;
    } cols[DOCS_NCOLS] = {
        {"id", COHORT__VALUE_TYPE__VT_TEXT},
        {"type", COHORT__VALUE_TYPE__VT_TEXT},
        {"author", COHORT__VALUE_TYPE__VT_TEXT},
        {"subject", COHORT__VALUE_TYPE__VT_TEXT},
        {"created", COHORT__VALUE_TYPE__VT_TIMESTAMP},
        {"modified", COHORT__VALUE_TYPE__VT_TIMESTAMP},
        {"bytes", COHORT__VALUE_TYPE__VT_INT},
        {"revision", COHORT__VALUE_TYPE__VT_INT},
    };
    size_t i;
    cohort__table_schema__init(&d->s);
    d->s.name = "documents";
    for (i = 0; i < DOCS_NCOLS; i++) {
        cohort__column__init(&d->cols[i]);
        d->cols[i].name = (char *)cols[i].name;
        d->cols[i].type = (Cohort__ValueType)cols[i].type;
        d->ptrs[i] = &d->cols[i];
    }
    d->s.n_columns = DOCS_NCOLS;
    d->s.columns = d->ptrs;
}

/* The documents table's rows, as the owner reads them. */
static Cohort__TokenResponse *docs_rows(struct fx_token *t)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__ReadRows rr = COHORT__READ_ROWS__INIT;
    Cohort__TokenResponse *r;
    rr.table = "documents";
    req.body_case = COHORT__TOKEN_REQUEST__BODY_READ_ROWS;
    req.read_rows = &rr;
    assert_int_equal(call_as(t, NULL, FX_NOW, &req, &r), TK_OK);
    assert_false(r->rows->more);
    return r;
}

/* How many rows of the documents table have that type. */
static size_t rows_of_type(const Cohort__RowPage *p, const char *type)
{
    size_t i, n = 0;
    for (i = 0; i < p->n_rows; i++)
        if (p->rows[i]->values[1]->s.len == strlen(type) &&
            memcmp(p->rows[i]->values[1]->s.data, type, strlen(type)) == 0)
            n++;
    return n;
}

static void hex_of(char out[33], const uint8_t *id)
{
    size_t i;
    for (i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", id[i]);
}

static void compact(struct fx_token *t)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__Compact cp = COHORT__COMPACT__INIT;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_COMPACT;
    req.compact = &cp;
    assert_int_equal(call_as(t, NULL, FX_NOW, &req, NULL), TK_OK);
}

static void the_documents_table_follows_creates_updates_and_deletes(void **state)
{
    static const struct meta st = {"bank.statement", "Big Bank", "march", {"tax", NULL}};
    static const struct meta note = {"note", "alice", "", {NULL}};
    struct fx_token t;
    struct fx_snapshot snap;
    struct doc d[5];
    struct docs_schema ds;
    Cohort__TokenResponse *r;
    const Cohort__Row *row = NULL;
    char hex[33], long_author[200];
    uint8_t image[TK_IMAGE_MAX];
    size_t i, image_len;
    struct meta lng = {"note", long_author, "", {NULL}};
    (void)state;

    token_make(&t, TK_ARENA_MIN);
    memset(d, 0, sizeof d);
    for (i = 0; i < 3; i++)
        assert_int_equal(doc_put(&t, NULL, &st, 100 * (i + 1), &d[i]), TK_OK);
    assert_int_equal(doc_put(&t, NULL, &note, 7, &d[3]), TK_OK);
    /* An author longer than a table's text: cut at a character boundary. */
    memset(long_author, 'a', 63);
    strcpy(long_author + 63, "\xc3\xa9tienne and more");
    assert_int_equal(doc_put(&t, NULL, &lng, 1, &d[4]), TK_OK);
    /* An update replaces its row; a delete removes it. */
    assert_int_equal(doc_put(&t, NULL, &note, 70, &d[3]), TK_OK);
    assert_int_equal(doc_put(&t, NULL, &note, 700, &d[3]), TK_OK);
    assert_int_equal(doc_delete_as(&t, NULL, d[1].id, 1), TK_OK);

    r = docs_rows(&t);
    docs_schema(&ds);
    assert_int_equal(r->rows->schema->n_columns, DOCS_NCOLS);
    for (i = 0; i < DOCS_NCOLS; i++) {
        assert_string_equal(r->rows->schema->columns[i]->name, ds.cols[i].name);
        assert_int_equal(r->rows->schema->columns[i]->type, ds.cols[i].type);
    }
    assert_int_equal(r->rows->n_rows, 4);
    assert_int_equal(rows_of_type(r->rows, "bank.statement"), 2);
    assert_int_equal(rows_of_type(r->rows, "note"), 2);
    hex_of(hex, d[3].id);
    for (i = 0; i < r->rows->n_rows; i++)
        if (r->rows->rows[i]->values[0]->s.len == 32 &&
            memcmp(r->rows->rows[i]->values[0]->s.data, hex, 32) == 0)
            row = r->rows->rows[i];
    assert_non_null(row);
    assert_int_equal(row->values[2]->s.len, 5);
    assert_memory_equal(row->values[2]->s.data, "alice", 5);
    assert_int_equal(row->values[3]->type, COHORT__VALUE_TYPE__VT_TEXT); /* "" is a value */
    assert_int_equal(row->values[4]->type, COHORT__VALUE_TYPE__VT_TIMESTAMP);
    assert_int_equal(row->values[4]->i, FX_NOW - FX_DAY);
    assert_int_equal(row->values[5]->i, FX_NOW);
    assert_int_equal(row->values[6]->i, 700);
    assert_int_equal(row->values[7]->i, 3);
    for (i = 0; i < r->rows->n_rows; i++)
        if (r->rows->rows[i]->values[2]->s.len != 5 &&
            r->rows->rows[i]->values[2]->s.len != strlen("Big Bank"))
            row = r->rows->rows[i];
    assert_int_equal(row->values[2]->s.len, 63); /* "aaa...a" and not half of "é" */
    cohort__token_response__free_unpacked(r, NULL);

    /* The owner cannot write the table: only the documents do. */
    fx_snapshot_take(&snap, &t);
    {
        Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
        Cohort__LoadTable lt = COHORT__LOAD_TABLE__INIT;
        Cohort__DeleteRows dr = COHORT__DELETE_ROWS__INIT;
        Cohort__UpdateRows ur = COHORT__UPDATE_ROWS__INIT;
        uint64_t ids[1] = {1};
        lt.schema = &ds.s;
        req.body_case = COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE;
        req.load_table = &lt;
        assert_int_equal(call_as(&t, NULL, FX_NOW, &req, &r), TK_ERR_DENIED);
        assert_non_null(strstr(r->reason, "documents"));
        cohort__token_response__free_unpacked(r, NULL);
        dr.table = "documents";
        dr.all = true;
        req.body_case = COHORT__TOKEN_REQUEST__BODY_DELETE_ROWS;
        req.delete_rows = &dr;
        assert_int_equal(call_as(&t, NULL, FX_NOW, &req, NULL), TK_ERR_DENIED);
        ur.table = "documents";
        ur.n_ids = 1;
        ur.ids = ids;
        req.body_case = COHORT__TOKEN_REQUEST__BODY_UPDATE_ROWS;
        req.update_rows = &ur;
        assert_int_equal(call_as(&t, NULL, FX_NOW, &req, NULL), TK_ERR_DENIED);
    }
    fx_snapshot_check(&snap, &t, true);
    fx_snapshot_free(&snap);

    /* Compaction and a reopen keep it as it was, and it goes on following. */
    compact(&t);
    assert_int_equal(tk_token_image(&t.tk, image, sizeof image, &image_len), TK_OK);
    fx_token_reopen(&t, image, image_len);
    r = docs_rows(&t);
    assert_int_equal(r->rows->n_rows, 4);
    cohort__token_response__free_unpacked(r, NULL);
    assert_int_equal(doc_put(&t, NULL, &note, 5, &d[3]), TK_OK);
    assert_int_equal(doc_delete_as(&t, NULL, d[0].id, 1), TK_OK);
    r = docs_rows(&t);
    assert_int_equal(r->rows->n_rows, 3);
    assert_int_equal(rows_of_type(r->rows, "bank.statement"), 1);
    assert_int_equal(rows_of_type(r->rows, "note"), 2);
    cohort__token_response__free_unpacked(r, NULL);
    /* Every document deleted: the table stays, empty. */
    assert_int_equal(doc_delete_as(&t, NULL, d[2].id, 1), TK_OK);
    assert_int_equal(doc_delete_as(&t, NULL, d[3].id, 4), TK_OK);
    assert_int_equal(doc_delete_as(&t, NULL, d[4].id, 1), TK_OK);
    r = docs_rows(&t);
    assert_int_equal(r->rows->n_rows, 0);
    cohort__token_response__free_unpacked(r, NULL);
    fx_token_free(&t);
}

/* Share the documents table (and health) with any trusted study. */
static void consent_documents(struct fx_token *t)
{
    Cohort__ConsentPolicy p;
    char *tables[] = {"health", "documents.type"};
    cohort__consent_policy__init(&p);
    p.n_tables = 2;
    p.tables = tables;
    p.epsilon_per_study = 1000.0;
    p.epsilon_total = 1000.0;
    assert_int_equal(fx_set_policy(t, &p, NULL), TK_OK);
}

static void a_study_counts_the_documents_by_type_within_the_owners_policy(void **state)
{
    /* Three owners' documents: type counts 3 statements, 4 notes, 1 report. */
    static const char *const owned[3][4] = {
        {"bank.statement", "note", "note", NULL},
        {"bank.statement", "health.report", NULL, NULL},
        {"note", "note", "bank.statement", NULL},
    };
    static const struct {
        const char *type;
        int64_t count;
    } expect[] = {{"bank.statement", 3}, {"note", 4}, {"health.report", 1}};
    struct fx_token t[3];
    struct docs_schema ds;
    struct fx_plan_spec spec;
    struct fx_signed plan;
    struct fx_cts all = {0};
    Cohort__SealedResult *sr = NULL;
    Cohort__ResultTable *rt;
    struct doc d, extra;
    size_t i, k, j;
    (void)state;

    for (i = 0; i < 3; i++) {
        token_make(&t[i], TK_ARENA_DEFAULT);
        for (k = 0; owned[i][k] != NULL; k++) {
            struct meta m = {owned[i][k], "someone", "", {NULL}};
            memset(&d, 0, sizeof d);
            assert_int_equal(doc_put(&t[i], NULL, &m, 10, &d), TK_OK);
        }
    }
    /* Updated and deleted documents count as what they are now. */
    {
        struct meta m = {"note", "x", "", {NULL}};
        memset(&extra, 0, sizeof extra);
        assert_int_equal(doc_put(&t[1], NULL, &m, 1, &extra), TK_OK);
        assert_int_equal(doc_put(&t[1], NULL, &m, 2, &extra), TK_OK);
        assert_int_equal(doc_delete_as(&t[1], NULL, extra.id, 2), TK_OK);
    }
    docs_schema(&ds);
    fx_plan_default(&spec);
    spec.study = "documents-by-type";
    spec.table = "documents";
    spec.schema = &ds.s;
    spec.group_by[0] = "type";
    spec.n_group = 1;
    spec.aggs[0] = (struct fx_agg){COHORT__AGG_FUNC__AGG_COUNT_STAR, NULL};
    spec.n_aggs = 1;
    fx_plan_sign(&plan, &spec, &W.researcher);

    /* Not shared: the owner's policy refuses, as for any table. */
    assert_int_equal(fx_collect_into(&t[0], FX_NOW, plan.sp, &all), TK_ERR_POLICY);
    for (i = 0; i < 3; i++) {
        consent_documents(&t[i]);
        assert_int_equal(fx_collect_into(&t[i], FX_NOW, plan.sp, &all), TK_OK);
    }
    fx_cts_sort(&all);
    assert_int_equal(
        fx_aggregate(&t[0], FX_NOW + 5, plan.sp, 1, 0, true, all.v, all.n, 4, NULL, &sr), TK_OK);
    rt = fx_open_result(sr, &W, plan.query_id);
    assert_int_equal(rt->participants, 3);
    assert_int_equal(rt->n_rows, 3);
    for (j = 0; j < 3; j++) {
        for (i = 0; i < rt->n_rows; i++)
            if (rt->rows[i]->values[0]->s.len == strlen(expect[j].type) &&
                memcmp(rt->rows[i]->values[0]->s.data, expect[j].type, strlen(expect[j].type)) == 0)
                break;
        assert_true(i < rt->n_rows);
        assert_int_equal(rt->rows[i]->values[1]->i, expect[j].count);
    }
    cohort__result_table__free_unpacked(rt, NULL);
    cohort__sealed_result__free_unpacked(sr, NULL);
    fx_cts_free(&all);

    /* A study of a column the owner did not share is refused. */
    {
        struct fx_cts none = {0};
        fx_signed_free(&plan);
        spec.group_by[0] = "author";
        fx_plan_sign(&plan, &spec, &W.researcher);
        assert_int_equal(fx_collect_into(&t[0], FX_NOW, plan.sp, &none), TK_ERR_POLICY);
        fx_cts_free(&none);
    }
    fx_signed_free(&plan);
    for (i = 0; i < 3; i++)
        fx_token_free(&t[i]);
}

/* ------------------------------------------------------------- hostile */

static void hostile_credential_requests_get_their_exact_codes_and_change_nothing(void **state)
{
    static const struct rule ok[] = {{"note", G, NULL, {NULL}}};
    static char long_name[66], long_type[66], long_value[130], big_value[101];
    static struct rule seventeen[17], wide[16];
    static const struct {
        const char *what;
        const char *name;
        struct rule r;
        size_t n; /* rules: 0, 1 (r), or 16/17 of the tables above */
        int64_t expires;
        bool owner;
        int rc;
    } bad[] = {
        {"no name", "", {"note", G, NULL, {NULL}}, 1, 0, false, TK_ERR_MALFORMED},
        {"a long name", long_name, {"note", G, NULL, {NULL}}, 1, 0, false, TK_ERR_TOO_LARGE},
        {"a control character", "a\nb", {"note", G, NULL, {NULL}}, 1, 0, false, TK_ERR_MALFORMED},
        {"no rules", "x", {"note", G, NULL, {NULL}}, 0, 0, false, TK_ERR_MALFORMED},
        {"17 rules", "x", {"note", G, NULL, {NULL}}, 17, 0, false, TK_ERR_TOO_LARGE},
        {"no verbs", "x", {"note", 0, NULL, {NULL}}, 1, 0, false, TK_ERR_MALFORMED},
        {"verb 16", "x", {"note", 16, NULL, {NULL}}, 1, 0, false, TK_ERR_MALFORMED},
        {"upper case type", "x", {"Note", G, NULL, {NULL}}, 1, 0, false, TK_ERR_MALFORMED},
        {"empty type", "x", {"", G, NULL, {NULL}}, 1, 0, false, TK_ERR_MALFORMED},
        {"star inside", "x", {"*.note", G, NULL, {NULL}}, 1, 0, false, TK_ERR_MALFORMED},
        {"bare prefix", "x", {".*", G, NULL, {NULL}}, 1, 0, false, TK_ERR_MALFORMED},
        {"a long type", "x", {long_type, G, NULL, {NULL}}, 1, 0, false, TK_ERR_TOO_LARGE},
        {"unknown field", "x", {"note", G, "colour", {"red", NULL}}, 1, 0, false, TK_ERR_MALFORMED},
        {"field without values", "x", {"note", G, "author", {NULL}}, 1, 0, false, TK_ERR_MALFORMED},
        {"values without field",
         "x",
         {"note", G, NULL, {"a", NULL}},
         1,
         0,
         false,
         TK_ERR_MALFORMED},
        {"a long value",
         "x",
         {"note", G, "tag", {long_value, NULL}},
         1,
         0,
         false,
         TK_ERR_TOO_LARGE},
        {"17 values",
         "x",
         {"note",
          G,
          "tag",
          {"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
           "17"}},
         1,
         0,
         false,
         TK_ERR_TOO_LARGE},
        {"a record over its limit",
         "x",
         {"note", G, NULL, {NULL}},
         16,
         0,
         false,
         TK_ERR_TOO_LARGE}, /* 16 rules of 16 values of 100 bytes */
        {"an owner credential with rules",
         "x",
         {"note", G, NULL, {NULL}},
         1,
         0,
         true,
         TK_ERR_MALFORMED},
        {"already expired", "x", {"note", G, NULL, {NULL}}, 1, FX_NOW, false, TK_ERR_MALFORMED},
        {"a negative expiry", "x", {"note", G, NULL, {NULL}}, 1, -1, false, TK_ERR_MALFORMED},
    };
    struct fx_token t;
    struct fx_snapshot snap;
    struct cred app;
    Cohort__TokenResponse *r;
    size_t i, k;
    (void)state;

    memset(long_name, 'n', 65);
    memset(long_type, 't', 65);
    memset(long_value, 'v', 129);
    memset(big_value, 'b', 100);
    for (i = 0; i < 17; i++)
        seventeen[i] = (struct rule){"note", G, NULL, {NULL}};
    for (i = 0; i < 16; i++) {
        wide[i] = (struct rule){"note", G, "tag", {NULL}};
        for (k = 0; k < 16; k++)
            wide[i].values[k] = big_value;
    }
    token_make(&t, TK_ARENA_DEFAULT); /* room to decode the largest requests */
    assert_int_equal(issue(&t, NULL, "app", ok, 1, &app), TK_OK);
    fx_snapshot_take(&snap, &t);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const struct rule *rules = bad[i].n == 17 ? seventeen : bad[i].n == 16 ? wide : &bad[i].r;
        int rc = issue_at(&t, NULL, FX_NOW, bad[i].name, rules, bad[i].n, bad[i].expires,
                          bad[i].owner, NULL, NULL);
        if (rc != bad[i].rc)
            fail_msg("%s: %s, expected %s", bad[i].what, tk_errname(rc), tk_errname(bad[i].rc));
    }
    assert_int_equal(cred_list(&t, NULL, 0, 0, NULL), TK_ERR_TOO_LARGE);
    assert_int_equal(cred_list(&t, NULL, 0, 65, NULL), TK_ERR_TOO_LARGE);
    t.resp_cap = 40; /* a page that does not fit */
    assert_int_equal(cred_list(&t, NULL, 0, 8, NULL), TK_ERR_RESPONSE_SPACE);
    t.resp_cap = FX_RESP_CAP;
    assert_int_equal(revoke(&t, NULL, app.id, 0), TK_ERR_MALFORMED);
    fx_snapshot_check(&snap, &t, true);
    fx_snapshot_free(&snap);
    /* A record near the limit: 16 rules of 5 values of 16 bytes. */
    for (i = 0; i < 16; i++)
        for (k = 0; k < 16; k++)
            wide[i].values[k] = k < 5 ? "0123456789abcdef" : NULL;
    assert_int_equal(issue(&t, NULL, "wide", wide, 16, &app), TK_OK);
    assert_int_equal(cred_list(&t, NULL, 0, 64, &r), TK_OK);
    assert_int_equal(r->cred_page->n_creds, 2);
    cohort__token_response__free_unpacked(r, NULL);
    fx_token_free(&t);
}

static void a_full_table_list_leaves_no_room_for_the_documents_table(void **state)
{
    static const struct meta note = {"note", "a", "", {NULL}};
    struct fx_token t;
    struct fx_snapshot snap;
    Cohort__TableSchema s;
    Cohort__Column col, *cols[1] = {&col};
    char name[16];
    struct doc d = {{0}, 0};
    size_t i;
    (void)state;

    token_make(&t, TK_ARENA_MIN);
    for (i = 0; i < TK_MAX_TABLES; i++) {
        cohort__table_schema__init(&s);
        cohort__column__init(&col);
        snprintf(name, sizeof name, "t%zu", i);
        s.name = name;
        col.name = "v";
        col.type = COHORT__VALUE_TYPE__VT_INT;
        s.n_columns = 1;
        s.columns = cols;
        assert_int_equal(fx_load_table(&t, &s, NULL, 0), TK_OK);
    }
    fx_snapshot_take(&snap, &t);
    assert_int_equal(doc_begin(&t, NULL, NULL, 0, &note, NULL), TK_ERR_TOO_LARGE);
    fx_snapshot_check(&snap, &t, true);
    fx_snapshot_free(&snap);
    /* Once one table goes, documents can be written again. */
    {
        Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
        Cohort__DeleteRows dr = COHORT__DELETE_ROWS__INIT;
        dr.table = "t0";
        dr.all = true;
        req.body_case = COHORT__TOKEN_REQUEST__BODY_DELETE_ROWS;
        req.delete_rows = &dr;
        assert_int_equal(call_as(&t, NULL, FX_NOW, &req, NULL), TK_OK);
    }
    assert_int_equal(doc_put(&t, NULL, &note, 10, &d), TK_OK);
    fx_token_free(&t);
}

/* ----------------------------------------------------------- the arena */

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * With credentials of the largest size and many documents, every request
 * stays within the least arena. Prints what creates, updates and deletes
 * cost with N documents on the token (an update or a delete rewrites the
 * log: its cost grows with the log, a create's does not).
 */
static void everything_fits_the_least_arena_and_the_costs_are_measured(void **state)
{
    enum { N = 200 };
    static struct rule wide[16];
    static const struct meta note = {"note", "someone", "", {NULL}};
    struct fx_token t;
    struct cred app, child;
    struct doc *d = fx_alloc(N * sizeof *d);
    char got[64];
    double t0, t_create, t_update, t_delete, t_read;
    size_t i, k;
    (void)state;

    for (i = 0; i < 16; i++) {
        wide[i] = (struct rule){"*", G | P | U | D, "tag", {NULL}};
        for (k = 0; k < 5; k++)
            wide[i].values[k] = "0123456789abcdef";
    }
    wide[15] = (struct rule){"*", G | P | U | D, NULL, {NULL}};
    token_make(&t, TK_ARENA_MIN);
    assert_int_equal(issue(&t, NULL, "wide", wide, 16, &app), TK_OK);
    assert_int_equal(issue(&t, &app, "child", wide, 16, &child), TK_OK);
    t.max_peak = 0;
    t0 = seconds();
    for (i = 0; i < N; i++)
        assert_int_equal(doc_put(&t, &child, &note, 4096, &d[i]), TK_OK);
    t_create = seconds() - t0;
    t0 = seconds();
    for (i = 0; i < N; i++)
        assert_int_equal(doc_open_as(&t, &child, d[i].id), TK_OK);
    t_read = seconds() - t0;
    assert_int_equal(doc_list_as(&t, &child, 64, NULL, got, sizeof got), TK_OK);
    t0 = seconds();
    for (i = 0; i < 20; i++)
        assert_int_equal(doc_put(&t, &child, &note, 4096, &d[i]), TK_OK);
    t_update = (seconds() - t0) / 20;
    t0 = seconds();
    for (i = 0; i < 20; i++)
        assert_int_equal(doc_delete_as(&t, &child, d[N - 1 - i].id, 1), TK_OK);
    t_delete = (seconds() - t0) / 20;
    assert_true(t.max_peak <= TK_ARENA_MIN);
    print_message("  least arena: peak %zu of %u bytes; log %llu bytes, %llu records\n", t.max_peak,
                  TK_ARENA_MIN, (unsigned long long)t.tk.log.length,
                  (unsigned long long)t.tk.log.records);
    print_message("  with %d documents, by a delegated credential: create %.0f us, read (open) "
                  "%.0f us, update %.0f us, delete %.0f us\n",
                  N, t_create / N * 1e6, t_read / N * 1e6, t_update * 1e6, t_delete * 1e6);
    free(d);
    fx_token_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_credential_authenticates_with_its_own_secret_only),
        cmocka_unit_test(rules_allow_by_type_verb_and_selector_and_deny_the_rest),
        cmocka_unit_test(an_update_needs_put_on_the_old_and_the_new_metadata),
        cmocka_unit_test(doc_list_shows_what_the_credential_may_get_and_the_filter_matches),
        cmocka_unit_test(delegation_stays_within_the_delegators_rights),
        cmocka_unit_test(revocation_takes_effect_on_the_next_request_down_the_chain),
        cmocka_unit_test(the_owners_requests_refuse_an_app_and_accept_an_owner_credential),
        cmocka_unit_test(every_document_access_and_credential_event_is_audited),
        cmocka_unit_test(the_documents_table_follows_creates_updates_and_deletes),
        cmocka_unit_test(a_study_counts_the_documents_by_type_within_the_owners_policy),
        cmocka_unit_test(hostile_credential_requests_get_their_exact_codes_and_change_nothing),
        cmocka_unit_test(a_full_table_list_leaves_no_room_for_the_documents_table),
        cmocka_unit_test(everything_fits_the_least_arena_and_the_costs_are_measured),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
