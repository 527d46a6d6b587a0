/*
 * App credentials and their permission rules: the token decides which app
 * may do what to the owner's documents.
 *
 * The model follows Cozy's permission documents. A credential is an id (16
 * random bytes) and a secret (32 random bytes) that the token draws and
 * shows once, with a name, 1 to 16 rules, an expiry (0: never), an owner
 * flag and the credential it was delegated from. A rule allows some verbs
 * (GET, POST, PUT, DELETE) on documents whose type matches a pattern ("*",
 * "bank.statement", or "bank.*", which matches "bank.x" and "bank.x.y" but
 * not "bank") and, with a selector, whose author, subject or one of whose
 * tags is among the rule's values. A request is allowed when one rule of
 * the credential allows it; anything else is refused (default deny). An
 * owner credential is allowed everything, and the owner's own requests
 * (the audit log, every credential); the host link (a request without a
 * credential) is the owner's too.
 *
 * Storage. A credential is a CredRecord in the token's log. The secret is
 * never stored: only the BLAKE2b-256 of a domain string, the id and the
 * secret, compared in constant time. The secret is 256 random bits, so the
 * hash cannot be inverted, and neither the log nor a backup of it can be
 * used to present a credential. The hash depends on nothing of the device,
 * so that a token restored from a backup (tk_backup.c) authenticates the
 * same credentials as the token it replaces.
 * Revoking appends a record of the same id with `revoked` set; every scan
 * takes the latest record of an id ("latest wins"), and compaction keeps
 * every record.
 *
 * Delegation. An app may issue a credential within its own rights: every
 * new rule must lie within one of its rules (a narrower or equal type
 * pattern, a subset of its verbs, and if that rule has a selector, one on
 * the same field with a subset of its values), the expiry at most its own
 * (0 becomes its own), never an owner credential, and at most
 * TK_CRED_DEPTH levels below an owner-issued one. Each record names the
 * credential's ancestors (parent first), so that authenticating is one
 * pass over the log: the credential's records come after its ancestors'
 * first records, and the revocation of an ancestor is a record that comes
 * after them too, which the pass sees. Revocation therefore takes effect
 * for a credential and every credential delegated from it on the next
 * request. CredRevoke also appends a revoking record for every descendant
 * (in the same commit; one revoked before may get a second, the latest
 * wins either way), so that CredList shows each credential as it stands;
 * the check down the chain does not rely on it. A credential issued with
 * an owner credential is the owner's own issue: it has no parent and does
 * not fall with that owner credential.
 * An ancestor's expiry needs no check of its own: a delegated credential
 * never outlives its parent.
 *
 * Trust. The request's credential is hostile until it authenticates; a
 * credential that does not (unknown, wrong secret, revoked, expired, or an
 * ancestor revoked) is TK_ERR_AUTH whatever it asked, and is not logged
 * (anyone could fill the log). A credential that authenticates but whose
 * rules do not allow a document request is TK_ERR_DENIED, and the attempt
 * is logged (tk_doc.c). Expiry is judged by the host's clock (c->now): a
 * host that lies about the time can keep an expired credential alive, as
 * it could replay the app's requests itself; revocation does not depend
 * on the clock.
 *
 * Audit. Issuing and revoking append an audit line ("cred.issue",
 * "cred.revoke": the credential concerned, who asked) in the same commit.
 */
#include "token/tk_int.h"

/* ---------------------------------------------------------- secrets */

static void secret_hash(uint8_t out[TK_CRED_HASH_LEN], const uint8_t *id, const uint8_t *secret)
{
    static const char domain[] = "cohort-cred-v1";
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, TK_CRED_HASH_LEN);
    crypto_generichash_update(&st, (const uint8_t *)domain, sizeof domain - 1);
    crypto_generichash_update(&st, id, TK_CRED_ID_LEN);
    crypto_generichash_update(&st, secret, TK_CRED_SECRET_LEN);
    crypto_generichash_final(&st, out, TK_CRED_HASH_LEN);
    sodium_memzero(&st, sizeof st);
}

/* ------------------------------------------------------------- rules */

static bool type_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
           ch == '-';
}

/* "prefix.*" */
static bool is_prefix_pattern(const char *p)
{
    size_t n = strlen(p);
    return n >= 2 && p[n - 2] == '.' && p[n - 1] == '*';
}

/* A type pattern: "*", a document type, or a document type then ".*". */
static int pattern_check(const char *p)
{
    size_t i, n = strlen(p);
    if (n > TK_DOC_TYPE_MAX)
        return TK_ERR_TOO_LARGE;
    if (strcmp(p, "*") == 0)
        return TK_OK;
    if (is_prefix_pattern(p))
        n -= 2;
    if (n == 0)
        return TK_ERR_MALFORMED;
    for (i = 0; i < n; i++)
        if (!type_char(p[i]))
            return TK_ERR_MALFORMED;
    return TK_OK;
}

static bool type_matches(const char *pattern, const char *type)
{
    size_t n;
    if (strcmp(pattern, "*") == 0)
        return true;
    if (!is_prefix_pattern(pattern))
        return strcmp(pattern, type) == 0;
    n = strlen(pattern) - 1; /* "bank." */
    return strncmp(type, pattern, n) == 0 && type[n] != '\0';
}

static bool value_in(const char *v, char *const *values, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (strcmp(values[i], v) == 0)
            return true;
    return false;
}

static bool field_known(const char *f)
{
    return strcmp(f, "author") == 0 || strcmp(f, "subject") == 0 || strcmp(f, "tag") == 0;
}

int tk_rule_check(const Cohort__PermRule *r, bool with_verbs)
{
    size_t i;
    int rc;
    if (r == NULL)
        return TK_ERR_MALFORMED;
    if ((rc = pattern_check(r->type)) != TK_OK)
        return rc;
    if (with_verbs && (r->verbs < 1 || r->verbs > 15))
        return TK_ERR_MALFORMED;
    if (r->field[0] == '\0')
        return r->n_values == 0 ? TK_OK : TK_ERR_MALFORMED;
    if (!field_known(r->field) || r->n_values == 0)
        return TK_ERR_MALFORMED;
    if (r->n_values > TK_CRED_VALUES_MAX)
        return TK_ERR_TOO_LARGE;
    for (i = 0; i < r->n_values; i++)
        if (strlen(r->values[i]) > TK_CRED_VALUE_MAX)
            return TK_ERR_TOO_LARGE;
    return TK_OK;
}

bool tk_rule_matches(const Cohort__PermRule *r, const Cohort__DocMeta *m)
{
    size_t i;
    if (!type_matches(r->type, m->type))
        return false;
    if (r->field[0] == '\0')
        return true;
    if (strcmp(r->field, "author") == 0)
        return value_in(m->author, r->values, r->n_values);
    if (strcmp(r->field, "subject") == 0)
        return value_in(m->subject, r->values, r->n_values);
    if (strcmp(r->field, "tag") == 0)
        for (i = 0; i < m->n_tags; i++)
            if (value_in(m->tags[i], r->values, r->n_values))
                return true;
    return false;
}

int tk_cred_match(const struct tk_cred *cr, uint32_t verb, const Cohort__DocMeta *m)
{
    size_t i;
    if (cr == NULL || cr->info->owner)
        return TK_OK;
    for (i = 0; i < cr->info->n_rules; i++)
        if ((cr->info->rules[i]->verbs & verb) == verb && tk_rule_matches(cr->info->rules[i], m))
            return TK_OK;
    return TK_ERR_DENIED;
}

/* Every document the child pattern matches, the parent pattern matches. */
static bool pattern_within(const char *child, const char *parent)
{
    if (strcmp(parent, "*") == 0)
        return true;
    if (strcmp(child, "*") == 0)
        return false;
    if (!is_prefix_pattern(parent))
        return !is_prefix_pattern(child) && strcmp(child, parent) == 0;
    if (is_prefix_pattern(child)) /* "bank.x.*" within "bank.*" */
        return strncmp(child, parent, strlen(parent) - 1) == 0;
    return type_matches(parent, child);
}

static bool rule_within(const Cohort__PermRule *child, const Cohort__PermRule *parent)
{
    size_t i;
    if (!pattern_within(child->type, parent->type) || (child->verbs & ~parent->verbs) != 0)
        return false;
    if (parent->field[0] == '\0')
        return true;
    if (strcmp(child->field, parent->field) != 0)
        return false;
    for (i = 0; i < child->n_values; i++)
        if (!value_in(child->values[i], parent->values, parent->n_values))
            return false;
    return true;
}

/* ------------------------------------------------------ finding records */

/* The id and revoked flag of a CredRecord, read without decoding it. */
static int record_peek(const uint8_t *body, size_t len, const uint8_t **id, bool *revoked)
{
    struct tk_wfield f, g;
    size_t pos = 0, q;
    int more, in;
    *id = NULL;
    *revoked = false;
    while ((more = tk_wire_next(body, len, &pos, &f)) == 1) {
        if (f.field != 1 || f.wire_type != 2)
            continue;
        q = 0;
        while ((in = tk_wire_next(f.data, f.len, &q, &g)) == 1) {
            if (g.field == 1 && g.wire_type == 2 && g.len == TK_CRED_ID_LEN)
                *id = g.data;
            else if (g.field == 8 && g.wire_type == 0)
                *revoked = g.varint != 0;
        }
        if (in < 0)
            return TK_ERR_TAMPERED;
    }
    if (more < 0 || *id == NULL)
        return TK_ERR_TAMPERED;
    return TK_OK;
}

/*
 * One pass for a credential: its latest record (bytes), its ancestors (from
 * its records) and whether a record revoking one of them follows.
 */
struct lookup {
    const uint8_t *id;
    bool found;
    uint8_t *rec; /* TK_CRED_RECORD_MAX bytes */
    size_t rec_len;
    uint32_t depth;
    uint8_t chain[TK_CRED_DEPTH][TK_CRED_ID_LEN];
    bool ancestor_revoked;
};

static int chain_read(struct lookup *l, const uint8_t *body, size_t len)
{
    struct tk_wfield f;
    size_t pos = 0;
    int more;
    l->depth = 0;
    while ((more = tk_wire_next(body, len, &pos, &f)) == 1) {
        if (f.field != 3)
            continue;
        if (f.wire_type != 2 || f.len != TK_CRED_ID_LEN || l->depth == TK_CRED_DEPTH)
            return TK_ERR_TAMPERED;
        memcpy(l->chain[l->depth++], f.data, TK_CRED_ID_LEN);
    }
    return more < 0 ? TK_ERR_TAMPERED : TK_OK;
}

static int lookup_fn(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len,
                     uint64_t index)
{
    struct lookup *l = ctx;
    const uint8_t *body, *id;
    size_t body_len;
    uint32_t i;
    bool revoked;
    int rc;
    (void)a;
    (void)index;
    if ((rc = tk_record_kind(plain, len, TK_REC_CRED, &body, &body_len)) != 1)
        return rc;
    if ((rc = record_peek(body, body_len, &id, &revoked)) != TK_OK)
        return rc;
    if (memcmp(id, l->id, TK_CRED_ID_LEN) == 0) {
        if (body_len > TK_CRED_RECORD_MAX)
            return TK_ERR_TAMPERED;
        memcpy(l->rec, body, body_len);
        l->rec_len = body_len;
        l->found = true;
        return chain_read(l, body, body_len);
    }
    if (l->found && revoked)
        for (i = 0; i < l->depth; i++)
            if (memcmp(id, l->chain[i], TK_CRED_ID_LEN) == 0)
                l->ancestor_revoked = true;
    return TK_OK;
}

/*
 * The latest record of id, decoded in scratch, and its lookup. The record
 * is found in a buffer of the largest size, then moved up to the top of
 * that buffer's room (which is given back first), so that only its own
 * length stays taken below the decoded record.
 */
static int lookup(struct tk_call *c, struct lookup *l, const uint8_t *id, Cohort__CredRecord **out)
{
    size_t mark = tk_arena_mark(c->arena);
    Cohort__CredRecord *r;
    uint8_t *rec;
    int rc = TK_OK;

    *out = NULL;
    memset(l, 0, sizeof *l);
    l->id = id;
    if ((l->rec = tk_arena_scratch(c->arena, TK_CRED_RECORD_MAX)) == NULL)
        return TK_ERR_NO_MEMORY;
    if ((rc = tk_log_scan(c->tk, c->arena, false, lookup_fn, l)) != TK_OK)
        return rc;
    if (!l->found)
        return TK_ERR_NOT_FOUND;
    tk_arena_release(c->arena, mark);
    rec = tk_arena_scratch(c->arena, l->rec_len); /* at or above l->rec */
    memmove(rec, l->rec, l->rec_len);
    l->rec = rec;
    r = (Cohort__CredRecord *)tk_unpack(c->arena, &cohort__cred_record__descriptor, l->rec,
                                        l->rec_len, &rc);
    if (r == NULL)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_TAMPERED;
    if (r->info == NULL || r->info->id.len != TK_CRED_ID_LEN ||
        r->secret_hash.len != TK_CRED_HASH_LEN)
        return TK_ERR_TAMPERED;
    *out = r;
    return TK_OK;
}

/* ----------------------------------------------------- authenticating */

int tk_cred_load(struct tk_call *c, const struct tk_cred **out)
{
    const Cohort__AppCredential *auth = c->auth;
    uint8_t hash[TK_CRED_HASH_LEN];
    Cohort__CredRecord *r;
    struct tk_cred *cr;
    struct lookup l;
    int rc;

    *out = NULL;
    if (auth == NULL)
        return TK_OK;
    if (auth->id.len != TK_CRED_ID_LEN || auth->secret.len != TK_CRED_SECRET_LEN)
        return TK_ERR_AUTH;
    if ((cr = tk_arena_scratch(c->arena, sizeof *cr)) == NULL)
        return TK_ERR_NO_MEMORY;
    rc = lookup(c, &l, auth->id.data, &r);
    if (rc == TK_ERR_NOT_FOUND)
        return TK_ERR_AUTH;
    if (rc != TK_OK)
        return rc;
    secret_hash(hash, auth->id.data, auth->secret.data);
    rc = sodium_memcmp(hash, r->secret_hash.data, sizeof hash) == 0 ? TK_OK : TK_ERR_AUTH;
    sodium_memzero(hash, sizeof hash);
    if (rc != TK_OK || r->info->revoked || l.ancestor_revoked ||
        (r->info->expires != 0 && c->now >= r->info->expires))
        return TK_ERR_AUTH;
    memcpy(cr->id, auth->id.data, TK_CRED_ID_LEN);
    cr->info = r->info;
    cr->depth = l.depth;
    memcpy(cr->chain, l.chain, sizeof cr->chain);
    *out = cr;
    return TK_OK;
}

int tk_cred_allow(struct tk_call *c, uint32_t verb, const uint8_t *meta, size_t meta_len)
{
    size_t mark = tk_arena_mark(c->arena);
    const struct tk_cred *cr;
    Cohort__DocMeta *m;
    int rc;
    if ((rc = tk_cred_load(c, &cr)) == TK_OK && cr != NULL && !cr->info->owner) {
        m = (Cohort__DocMeta *)tk_unpack(c->arena, &cohort__doc_meta__descriptor, meta, meta_len,
                                         &rc);
        if (m == NULL)
            rc = rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_TAMPERED;
        else
            rc = tk_cred_match(cr, verb, m);
    }
    tk_arena_release(c->arena, mark);
    return rc;
}

int tk_cred_owner(struct tk_call *c)
{
    size_t mark = tk_arena_mark(c->arena);
    const struct tk_cred *cr;
    int rc;
    if ((rc = tk_cred_load(c, &cr)) == TK_OK)
        rc = cr == NULL || cr->info->owner ? TK_OK : TK_ERR_DENIED;
    tk_arena_release(c->arena, mark);
    return rc;
}

/* ------------------------------------------------------------- audit */

int tk_audit_event_by(struct tk_call *c, const char *event, const uint8_t *object,
                      size_t object_len, const uint8_t *cred_id, const char *app, bool allowed)
{
    Cohort__AuditEntry e;
    cohort__audit_entry__init(&e);
    e.event = (char *)event;
    e.accepted = allowed;
    e.status = allowed ? TK_OK : TK_ERR_DENIED;
    if (object != NULL)
        e.doc_id = (ProtobufCBinaryData){object_len, (uint8_t *)object};
    if (cred_id != NULL) {
        e.cred_id = (ProtobufCBinaryData){TK_CRED_ID_LEN, (uint8_t *)cred_id};
        e.app = (char *)app;
    }
    return tk_audit_append(c, &e);
}

int tk_audit_event(struct tk_call *c, const char *event, const uint8_t *object, size_t object_len,
                   const struct tk_cred *cr, bool allowed)
{
    return tk_audit_event_by(c, event, object, object_len, cr ? cr->id : NULL,
                             cr ? cr->info->name : NULL, allowed);
}

/* ----------------------------------------------------------- issuing */

/* 1..64 bytes, no control characters. */
static bool name_ok(const char *s)
{
    size_t i, n = strlen(s);
    if (n < 1 || n > TK_CRED_NAME_MAX)
        return false;
    for (i = 0; i < n; i++)
        if ((uint8_t)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

static int issue_check(const Cohort__CredIssue *req, int64_t now)
{
    size_t i;
    int rc;
    if (!name_ok(req->name))
        return strlen(req->name) > TK_CRED_NAME_MAX ? TK_ERR_TOO_LARGE : TK_ERR_MALFORMED;
    if (req->n_rules > TK_CRED_RULES_MAX)
        return TK_ERR_TOO_LARGE;
    /* An owner credential has no rules; an app's has at least one. */
    if (req->owner ? req->n_rules != 0 : req->n_rules == 0)
        return TK_ERR_MALFORMED;
    for (i = 0; i < req->n_rules; i++)
        if ((rc = tk_rule_check(req->rules[i], true)) != TK_OK)
            return rc;
    if (req->expires < 0 || (req->expires != 0 && req->expires <= now))
        return TK_ERR_MALFORMED; /* already expired */
    return TK_OK;
}

/* Within the delegating credential's rights (TK_ERR_DENIED if not); *expires
 * is then the new credential's expiry. */
static int delegation_check(const struct tk_cred *parent, const Cohort__CredIssue *req,
                            int64_t *expires)
{
    const Cohort__CredInfo *p = parent->info;
    size_t i, j;
    if (req->owner || parent->depth + 1 > TK_CRED_DEPTH)
        return TK_ERR_DENIED;
    for (i = 0; i < req->n_rules; i++) {
        for (j = 0; j < p->n_rules; j++)
            if (rule_within(req->rules[i], p->rules[j]))
                break;
        if (j == p->n_rules)
            return TK_ERR_DENIED;
    }
    *expires = req->expires;
    if (p->expires != 0) {
        if (*expires == 0)
            *expires = p->expires;
        else if (*expires > p->expires)
            return TK_ERR_DENIED;
    }
    return TK_OK;
}

static int append_cred(struct tk_call *c, Cohort__CredRecord *rec)
{
    Cohort__StoreRecord sr = COHORT__STORE_RECORD__INIT;
    if (cohort__cred_record__get_packed_size(rec) > TK_CRED_RECORD_MAX)
        return TK_ERR_TOO_LARGE;
    sr.body_case = COHORT__STORE_RECORD__BODY_CRED;
    sr.cred = rec;
    return tk_log_append(c->tk, c->arena, &sr);
}

int tk_do_cred_issue(struct tk_call *c, const Cohort__CredIssue *req)
{
    Cohort__CredRecord rec = COHORT__CRED_RECORD__INIT;
    Cohort__CredInfo info = COHORT__CRED_INFO__INIT;
    Cohort__CredIssued out = COHORT__CRED_ISSUED__INIT;
    ProtobufCBinaryData chain[TK_CRED_DEPTH];
    uint8_t id[TK_CRED_ID_LEN], secret[TK_CRED_SECRET_LEN], hash[TK_CRED_HASH_LEN];
    const struct tk_cred *who;
    int64_t expires = req->expires;
    bool app;
    uint32_t i;
    int rc;

    if (!tk_has_flag(c->tk, TK_FLAG_KEYS))
        return TK_ERR_NOT_PROVISIONED;
    if ((rc = tk_cred_load(c, &who)) != TK_OK)
        return rc;
    if ((rc = issue_check(req, c->now)) != TK_OK)
        return rc;
    app = who != NULL && !who->info->owner;
    if (app && (rc = delegation_check(who, req, &expires)) != TK_OK)
        return rc;

    randombytes_buf(id, sizeof id);
    randombytes_buf(secret, sizeof secret);
    secret_hash(hash, id, secret);
    info.id = (ProtobufCBinaryData){sizeof id, id};
    info.name = req->name;
    info.n_rules = req->n_rules;
    info.rules = req->rules;
    info.expires = expires;
    info.owner = req->owner;
    info.created = c->now;
    rec.info = &info;
    rec.secret_hash = (ProtobufCBinaryData){sizeof hash, hash};
    if (app) {
        /* The delegator, then its ancestors. */
        info.parent = (ProtobufCBinaryData){TK_CRED_ID_LEN, (uint8_t *)who->id};
        chain[0] = info.parent;
        for (i = 0; i < who->depth; i++)
            chain[i + 1] = (ProtobufCBinaryData){TK_CRED_ID_LEN, (uint8_t *)who->chain[i]};
        rec.n_chain = who->depth + 1;
        rec.chain = chain;
    }
    if ((rc = append_cred(c, &rec)) == TK_OK &&
        (rc = tk_audit_event(c, "cred.issue", id, sizeof id, who, true)) == TK_OK &&
        (rc = tk_log_commit(c->tk, c->arena)) == TK_OK) {
        out.info = &info;
        out.secret = (ProtobufCBinaryData){sizeof secret, secret};
        tk_w_message(c->out, 21, &out.base);
    }
    sodium_memzero(secret, sizeof secret);
    sodium_memzero(hash, sizeof hash);
    return rc;
}

/* ---------------------------------------------------------- revoking */

/* Every credential delegated from `id` and not revoked yet gets a record
 * that revokes it (appended while the committed log is read). */
struct cascade {
    struct tk_call *c;
    const uint8_t *id;
};

static int cascade_fn(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len,
                      uint64_t index)
{
    struct cascade *k = ctx;
    const uint8_t *body, *id;
    Cohort__CredRecord *r;
    struct tk_wfield f;
    size_t body_len, pos = 0;
    bool revoked, below = false;
    int rc, more;
    (void)index;
    if ((rc = tk_record_kind(plain, len, TK_REC_CRED, &body, &body_len)) != 1)
        return rc;
    if ((rc = record_peek(body, body_len, &id, &revoked)) != TK_OK)
        return rc;
    if (revoked)
        return TK_OK;
    while ((more = tk_wire_next(body, body_len, &pos, &f)) == 1)
        if (f.field == 3 && f.wire_type == 2 && f.len == TK_CRED_ID_LEN &&
            memcmp(f.data, k->id, TK_CRED_ID_LEN) == 0)
            below = true;
    if (more < 0)
        return TK_ERR_TAMPERED;
    if (!below)
        return TK_OK;
    r = (Cohort__CredRecord *)tk_unpack(a, &cohort__cred_record__descriptor, body, body_len, &rc);
    if (r == NULL)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_TAMPERED;
    if (r->info == NULL)
        return TK_ERR_TAMPERED;
    r->info->revoked = true;
    return append_cred(k->c, r);
}

int tk_do_cred_revoke(struct tk_call *c, const Cohort__CredRevoke *req)
{
    const struct tk_cred *who;
    Cohort__CredRecord *r;
    struct lookup l;
    uint32_t i;
    bool below = false;
    int rc;

    if (!tk_has_flag(c->tk, TK_FLAG_KEYS))
        return TK_ERR_NOT_PROVISIONED;
    if ((rc = tk_cred_load(c, &who)) != TK_OK)
        return rc;
    if (req->id.len != TK_CRED_ID_LEN)
        return TK_ERR_MALFORMED;
    if ((rc = lookup(c, &l, req->id.data, &r)) != TK_OK)
        return rc;
    /* The owner revokes any credential; an app those delegated from it. */
    for (i = 0; who != NULL && i < l.depth; i++)
        if (sodium_memcmp(l.chain[i], who->id, TK_CRED_ID_LEN) == 0)
            below = true;
    if (who != NULL && !who->info->owner && !below)
        return TK_ERR_DENIED;
    if (!r->info->revoked) {
        struct cascade k = {c, req->id.data};
        r->info->revoked = true;
        if ((rc = tk_log_scan(c->tk, c->arena, false, cascade_fn, &k)) != TK_OK ||
            (rc = append_cred(c, r)) != TK_OK ||
            (rc = tk_audit_event(c, "cred.revoke", req->id.data, TK_CRED_ID_LEN, who, true)) !=
                TK_OK ||
            (rc = tk_log_commit(c->tk, c->arena)) != TK_OK)
            return rc;
    }
    tk_w_message(c->out, 22, &r->info->base);
    return TK_OK;
}

int tk_do_cred_check(struct tk_call *c, const Cohort__CredCheck *req)
{
    const struct tk_cred *who;
    int rc;
    (void)req;
    if (!tk_has_flag(c->tk, TK_FLAG_KEYS))
        return TK_ERR_NOT_PROVISIONED;
    if ((rc = tk_cred_load(c, &who)) != TK_OK)
        return rc;
    if (who == NULL)
        return TK_ERR_AUTH; /* nothing to check: the host link has no credential */
    tk_w_message(c->out, 22, &who->info->base);
    return TK_OK;
}

/* ----------------------------------------------------------- listing */

/*
 * CredList: pass 1 picks the first max + 1 credentials issued after the
 * cursor (a credential's first record is the one not revoked) and sees
 * which of them a later record revokes; pass 2 writes them. The cursor is
 * the position of a credential's first record in the log (its index + 1).
 */
struct lister {
    uint64_t after;
    uint32_t max, n;
    uint64_t index[TK_CRED_LIST_MAX + 1];
    uint8_t id[TK_CRED_LIST_MAX + 1][TK_CRED_ID_LEN];
    bool revoked[TK_CRED_LIST_MAX + 1];
    struct tk_wbuf *out; /* pass 2 */
};

static int list_fn(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len, uint64_t index)
{
    struct lister *l = ctx;
    const uint8_t *body, *id;
    size_t body_len;
    uint32_t i;
    bool revoked;
    int rc;

    if ((rc = tk_record_kind(plain, len, TK_REC_CRED, &body, &body_len)) != 1)
        return rc;
    if ((rc = record_peek(body, body_len, &id, &revoked)) != TK_OK)
        return rc;
    if (l->out == NULL) {
        if (!revoked && index + 1 > l->after && l->n < l->max + 1) {
            l->index[l->n] = index + 1;
            memcpy(l->id[l->n], id, TK_CRED_ID_LEN);
            l->n++;
        } else if (revoked) {
            for (i = 0; i < l->n; i++)
                if (memcmp(l->id[i], id, TK_CRED_ID_LEN) == 0)
                    l->revoked[i] = true;
        }
        return TK_OK;
    }
    for (i = 0; i < l->n && i < l->max; i++)
        if (l->index[i] == index + 1) {
            Cohort__CredRecord *r = (Cohort__CredRecord *)tk_unpack(
                a, &cohort__cred_record__descriptor, body, body_len, &rc);
            if (r == NULL)
                return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_TAMPERED;
            if (r->info == NULL)
                return TK_ERR_TAMPERED;
            r->info->revoked = l->revoked[i];
            tk_w_message(l->out, 1, &r->info->base);
        }
    return TK_OK;
}

int tk_do_cred_list(struct tk_call *c, const Cohort__CredList *req)
{
    struct lister *l;
    size_t start;
    uint64_t next;
    bool more;
    int rc;

    if (!tk_has_flag(c->tk, TK_FLAG_KEYS))
        return TK_ERR_NOT_PROVISIONED;
    if ((rc = tk_cred_owner(c)) != TK_OK)
        return rc;
    if (req->max < 1 || req->max > TK_CRED_LIST_MAX)
        return TK_ERR_TOO_LARGE;
    if ((l = tk_arena_scratch(c->arena, sizeof *l)) == NULL)
        return TK_ERR_NO_MEMORY;
    memset(l, 0, sizeof *l);
    l->after = req->after;
    l->max = req->max;
    if ((rc = tk_log_scan(c->tk, c->arena, false, list_fn, l)) != TK_OK)
        return rc;
    more = l->n > l->max;
    next = l->n == 0 ? l->after : l->index[(more ? l->max : l->n) - 1];
    /* CredPage { creds, more, next }, its length written after it. */
    start = tk_w_begin_wide(c->out);
    if (c->out->overflow)
        return TK_ERR_RESPONSE_SPACE;
    l->out = c->out;
    if (l->n > 0 && (rc = tk_log_scan(c->tk, c->arena, false, list_fn, l)) != TK_OK)
        return rc;
    tk_w_uint(c->out, 2, more);
    tk_w_uint(c->out, 3, next);
    tk_w_end_wide(c->out, 23, start);
    return c->out->overflow ? TK_ERR_RESPONSE_SPACE : TK_OK;
}
