/*
 * The token's one entry point: a TokenRequest in, a TokenResponse out.
 *
 * The dispatcher bounds the request, checks its framing (a field that runs
 * past the end is TK_ERR_TRUNCATED, anything else undecodable is
 * TK_ERR_MALFORMED), decodes it into the arena and calls the handler for
 * its body. Handlers write their part of the response straight into the
 * caller's buffer; the dispatcher then adds the status and the arena's
 * peak. On any error the response is rewritten to carry the status alone,
 * and the reason for the owner when the handler gave one (policy, budget).
 *
 * Persistence. Whatever a request changes in the token's state at rest is
 * committed (tk_log.c) before the request succeeds: handlers that write
 * the log commit themselves; any other change of the saved state (keys,
 * the replay and plan caches) is committed here, after the handler. A
 * LoadTable with `more` is the one exception: its batch stays pending, and
 * any request but the next LoadTable drops it before it runs.
 *
 * Every handler does all of its checks before it changes the token's
 * state, so a refused request leaves the token as it was. Some failures
 * can only come after a change, though: a plan verdict is cached before a
 * collection finds it lacks the table, keys are made before the CSR is
 * found not to fit the response. The dispatcher therefore keeps a copy of
 * the token's state and restores it on any error, then aborts whatever was
 * appended to the log and not committed, so that no handler can leave half
 * a change behind. Not restored: the open session, deliberately (an error
 * inside an aggregation session aborts that session: its partition will
 * be retried from the start); a tampered flash (tk->tampered), which the
 * token refuses to use until it is reopened; and anything a handler
 * committed before it failed (the commit is the truth; handlers commit
 * last, so this is only a failure to remove an old segment).
 */
#include "token/tk_int.h"

bool tk_has_flag(const struct tk_token *tk, uint32_t f)
{
    return (tk->flags & f) == f;
}

int tk_library_init(void)
{
    return sodium_init() < 0 ? TK_ERR_RANDOM : TK_OK;
}

void tk_token_wipe(struct tk_token *tk)
{
    if (tk != NULL)
        sodium_memzero(tk, sizeof *tk);
}

int tk_replay_seen(const struct tk_token *tk, const uint8_t *query, uint32_t level,
                   uint32_t partition)
{
    size_t i;
    for (i = 0; i < TK_REPLAY_SLOTS; i++)
        if (tk->replay[i].level == level && tk->replay[i].partition == partition &&
            memcmp(tk->replay[i].query, query, TK_QUERY_TAG_LEN) == 0)
            return 1;
    return 0;
}

void tk_replay_note(struct tk_token *tk, const uint8_t *query, uint32_t level, uint32_t partition)
{
    struct tk_replay_slot *s = &tk->replay[tk->replay_next++ % TK_REPLAY_SLOTS];
    memcpy(s->query, query, TK_QUERY_TAG_LEN);
    s->level = level;
    s->partition = partition;
}

size_t tk_ciphertext_len(const struct tk_binding *b, size_t plain_len)
{
    return tk_field_len(1, TK_QUERY_TAG_LEN) + 1 + tk_varint_len(b->phase) + 1 +
           tk_varint_len(b->level) + 1 + tk_varint_len(b->partition) + 1 + tk_varint_len(b->chunk) +
           1 + tk_varint_len(b->nchunks) + (b->key_len ? tk_field_len(7, b->key_len) : 0) +
           tk_field_len(8, TK_NONCE_LEN) + tk_field_len(9, plain_len + TK_TAG_LEN) +
           (b->tag ? tk_field_len(10, TK_TAG_BYTES) : 0);
}

void tk_write_ciphertext(struct tk_wbuf *w, uint32_t field, const struct tk_binding *b,
                         const uint8_t *plain, size_t plain_len, const uint8_t key[32])
{
    uint8_t *nonce, *box;
    tk_w_open(w, field, tk_ciphertext_len(b, plain_len));
    tk_w_bytes(w, 1, b->query_id, TK_QUERY_TAG_LEN);
    tk_w_uint(w, 2, b->phase);
    tk_w_uint(w, 3, b->level);
    tk_w_uint(w, 4, b->partition);
    tk_w_uint(w, 5, b->chunk);
    tk_w_uint(w, 6, b->nchunks);
    if (b->key_len)
        tk_w_bytes(w, 7, b->key, b->key_len);
    tk_w_open(w, 8, TK_NONCE_LEN);
    nonce = tk_w_reserve(w, TK_NONCE_LEN);
    tk_w_open(w, 9, plain_len + TK_TAG_LEN);
    box = tk_w_reserve(w, plain_len + TK_TAG_LEN);
    if (b->tag != NULL)
        tk_w_bytes(w, 10, b->tag, TK_TAG_BYTES);
    if (nonce != NULL && box != NULL)
        tk_ndet_seal(box, nonce, plain, plain_len, b, key);
}

int tk_do_info(struct tk_call *c, const Cohort__GetInfo *req)
{
    struct tk_token *tk = c->tk;
    char buf[8][TK_NAME_MAX + 1], *names[8];
    size_t n = 0, i, body;
    int rc = TK_OK;

    (void)req;
    for (i = 0; i < 8; i++)
        names[i] = buf[i];
    if (tk_has_flag(tk, TK_FLAG_KEYS) && (rc = tk_table_names(tk, c->arena, names, 8, &n)) != TK_OK)
        return rc;
    body = 2 + (tk_has_flag(tk, TK_FLAG_KEYS) ? tk_field_len(2, TK_PK_LEN) : 0) +
           (tk->cert_len ? tk_field_len(3, tk->cert_len) : 0) + 1 + tk_varint_len(c->arena->cap);
    for (i = 0; i < n; i++)
        body += tk_field_len(5, strlen(names[i]));
    tk_w_open(c->out, 3, body);
    tk_w_uint(c->out, 1, tk_has_flag(tk, TK_FLAG_PROVISIONED));
    if (tk_has_flag(tk, TK_FLAG_KEYS))
        tk_w_bytes(c->out, 2, tk->sign_pk, TK_PK_LEN);
    if (tk->cert_len)
        tk_w_bytes(c->out, 3, tk->cert, tk->cert_len);
    tk_w_uint(c->out, 4, c->arena->cap);
    for (i = 0; i < n; i++)
        tk_w_bytes(c->out, 5, (const uint8_t *)names[i], strlen(names[i]));
    return TK_OK;
}

#define BODY_LAST COHORT__TOKEN_REQUEST__BODY_SHARE_UPDATE

/* Which body field a request carries, and `now`; the framing is checked. */
static int scan_request(const uint8_t *req, size_t len, uint32_t *body, const uint8_t **data,
                        size_t *data_len, int64_t *now)
{
    struct tk_wfield f;
    size_t pos = 0;
    int rc;
    *body = 0;
    *now = 0;
    while ((rc = tk_wire_next(req, len, &pos, &f)) == 1) {
        if (f.field == 1 && f.wire_type == 0) {
            *now = (int64_t)f.varint;
        } else if (f.field >= 2 && f.field <= BODY_LAST && f.wire_type == 2) {
            if (*body != 0)
                return TK_ERR_MALFORMED;
            *body = f.field;
            *data = f.data;
            *data_len = f.len;
        }
    }
    if (rc < 0)
        return rc;
    return *body == 0 ? TK_ERR_MALFORMED : TK_OK;
}

/* Whether the part of the state that the image saves has changed (the
 * log's position and the row ids are the table module's to commit). */
static bool saved_state_differs(const struct tk_token *a, const struct tk_token *b)
{
    return a->flags != b->flags || memcmp(a->sign_sk, b->sign_sk, sizeof a->sign_sk) != 0 ||
           memcmp(a->box_sk, b->box_sk, sizeof a->box_sk) != 0 ||
           memcmp(a->group_secret, b->group_secret, sizeof a->group_secret) != 0 ||
           a->cert_len != b->cert_len || memcmp(a->cert, b->cert, sizeof a->cert) != 0 ||
           a->n_authorities != b->n_authorities ||
           memcmp(a->authorities, b->authorities, sizeof a->authorities) != 0 ||
           memcmp(a->replay, b->replay, sizeof a->replay) != 0 ||
           a->replay_next != b->replay_next || memcmp(a->plans, b->plans, sizeof a->plans) != 0 ||
           a->plan_next != b->plan_next || a->audit_seq != b->audit_seq;
}

/*
 * Requests that only the owner makes, and whose handlers do not look at a
 * credential yet: with one, it must be an owner credential (an app's is
 * TK_ERR_DENIED, one that does not authenticate TK_ERR_AUTH). Documents,
 * credentials, shares, backups and the audit log judge the credential
 * themselves; GetInfo answers anyone.
 */
static bool owner_only(uint32_t body)
{
    switch (body) {
    case COHORT__TOKEN_REQUEST__BODY_PROVISION_BEGIN:
    case COHORT__TOKEN_REQUEST__BODY_PROVISION_FINISH:
    case COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE:
    case COHORT__TOKEN_REQUEST__BODY_COLLECT:
    case COHORT__TOKEN_REQUEST__BODY_AGG_BEGIN:
    case COHORT__TOKEN_REQUEST__BODY_AGG_END:
    case COHORT__TOKEN_REQUEST__BODY_READ_ROWS:
    case COHORT__TOKEN_REQUEST__BODY_DELETE_ROWS:
    case COHORT__TOKEN_REQUEST__BODY_UPDATE_ROWS:
    case COHORT__TOKEN_REQUEST__BODY_LIST_TABLES:
    case COHORT__TOKEN_REQUEST__BODY_SET_POLICY:
    case COHORT__TOKEN_REQUEST__BODY_GET_POLICY:
    case COHORT__TOKEN_REQUEST__BODY_COMPACT:
    case COHORT__TOKEN_REQUEST__BODY_ATTEST:
        return true;
    default:
        return false;
    }
}

static int run(struct tk_call *c, uint32_t body, const uint8_t *req, size_t req_len,
               const uint8_t *data, size_t data_len)
{
    Cohort__TokenRequest *r;
    int rc = TK_OK;

    if (body == COHORT__TOKEN_REQUEST__BODY_AGG_FEED)
        return tk_do_agg_feed(c, data, data_len);
    if (body == COHORT__TOKEN_REQUEST__BODY_DOC_WRITE)
        return tk_do_doc_write(c, data, data_len);
    if (body == COHORT__TOKEN_REQUEST__BODY_DOC_READ)
        return tk_do_doc_read(c, data, data_len);
    if (body == COHORT__TOKEN_REQUEST__BODY_RESTORE_FEED)
        return tk_do_restore_feed(c, data, data_len);
    r = (Cohort__TokenRequest *)tk_unpack(c->arena, &cohort__token_request__descriptor, req,
                                          req_len, &rc);
    if (r == NULL)
        return rc;
    c->auth = r->auth;
    if (c->auth != NULL && owner_only(r->body_case) && (rc = tk_cred_owner(c)) != TK_OK)
        return rc;
    switch (r->body_case) {
    case COHORT__TOKEN_REQUEST__BODY_INFO:
        return tk_do_info(c, r->info);
    case COHORT__TOKEN_REQUEST__BODY_PROVISION_BEGIN:
        return tk_do_provision_begin(c, r->provision_begin);
    case COHORT__TOKEN_REQUEST__BODY_PROVISION_FINISH:
        return tk_do_provision_finish(c, r->provision_finish);
    case COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE:
        return tk_do_load_table(c, r->load_table);
    case COHORT__TOKEN_REQUEST__BODY_COLLECT:
        return tk_do_collect(c, r->collect);
    case COHORT__TOKEN_REQUEST__BODY_AGG_BEGIN:
        return tk_do_agg_begin(c, r->agg_begin);
    case COHORT__TOKEN_REQUEST__BODY_AGG_END:
        return tk_do_agg_end(c, r->agg_end);
    case COHORT__TOKEN_REQUEST__BODY_READ_ROWS:
        return tk_do_read_rows(c, r->read_rows);
    case COHORT__TOKEN_REQUEST__BODY_DELETE_ROWS:
        return tk_do_delete_rows(c, r->delete_rows);
    case COHORT__TOKEN_REQUEST__BODY_UPDATE_ROWS:
        return tk_do_update_rows(c, r->update_rows);
    case COHORT__TOKEN_REQUEST__BODY_LIST_TABLES:
        return tk_do_list_tables(c, r->list_tables);
    case COHORT__TOKEN_REQUEST__BODY_SET_POLICY:
        return tk_do_set_policy(c, r->set_policy);
    case COHORT__TOKEN_REQUEST__BODY_GET_POLICY:
        return tk_do_get_policy(c, r->get_policy);
    case COHORT__TOKEN_REQUEST__BODY_READ_AUDIT:
        return tk_do_read_audit(c, r->read_audit);
    case COHORT__TOKEN_REQUEST__BODY_COMPACT:
        return tk_do_compact(c, r->compact);
    case COHORT__TOKEN_REQUEST__BODY_ATTEST:
        return tk_do_attest(c, r->attest);
    case COHORT__TOKEN_REQUEST__BODY_DOC_BEGIN:
        return tk_do_doc_begin(c, r->doc_begin);
    case COHORT__TOKEN_REQUEST__BODY_DOC_OPEN:
        return tk_do_doc_open(c, r->doc_open);
    case COHORT__TOKEN_REQUEST__BODY_DOC_LIST:
        return tk_do_doc_list(c, r->doc_list);
    case COHORT__TOKEN_REQUEST__BODY_DOC_DELETE:
        return tk_do_doc_delete(c, r->doc_delete);
    case COHORT__TOKEN_REQUEST__BODY_CRED_ISSUE:
        return tk_do_cred_issue(c, r->cred_issue);
    case COHORT__TOKEN_REQUEST__BODY_CRED_LIST:
        return tk_do_cred_list(c, r->cred_list);
    case COHORT__TOKEN_REQUEST__BODY_CRED_REVOKE:
        return tk_do_cred_revoke(c, r->cred_revoke);
    case COHORT__TOKEN_REQUEST__BODY_CRED_CHECK:
        return tk_do_cred_check(c, r->cred_check);
    case COHORT__TOKEN_REQUEST__BODY_SHARE_CREATE:
        return tk_do_share_create(c, r->share_create);
    case COHORT__TOKEN_REQUEST__BODY_SHARE_SYNC:
        return tk_do_share_sync(c, r->share_sync);
    case COHORT__TOKEN_REQUEST__BODY_SHARE_REVOKE:
        return tk_do_share_revoke(c, r->share_revoke);
    case COHORT__TOKEN_REQUEST__BODY_SHARE_ACCEPT:
        return tk_do_share_accept(c, r->share_accept);
    case COHORT__TOKEN_REQUEST__BODY_SHARE_LIST:
        return tk_do_share_list(c, r->share_list);
    case COHORT__TOKEN_REQUEST__BODY_SHARE_UPDATE:
        return tk_do_share_update(c, r->share_update);
    case COHORT__TOKEN_REQUEST__BODY_BACKUP_BEGIN:
        return tk_do_backup_begin(c, r->backup_begin);
    case COHORT__TOKEN_REQUEST__BODY_BACKUP_NEXT:
        return tk_do_backup_next(c, r->backup_next);
    case COHORT__TOKEN_REQUEST__BODY_RESTORE_BEGIN:
        return tk_do_restore_begin(c, r->restore_begin);
    default:
        return TK_ERR_MALFORMED;
    }
}

int tk_dispatch(struct tk_token *tk, uint8_t *arena, size_t arena_len, const uint8_t *req,
                size_t req_len, uint8_t *resp, size_t resp_cap, size_t *resp_len,
                size_t *arena_peak)
{
    struct tk_wbuf w = {resp, resp_cap, 0, false};
    struct tk_token saved;
    struct tk_arena a;
    struct tk_call c = {0};
    const uint8_t *data = NULL;
    size_t data_len = 0;
    uint32_t body = 0;
    int64_t now = 0;
    bool in_session;
    int rc;

    *resp_len = 0;
    if (arena_peak != NULL)
        *arena_peak = 0;
    tk_arena_init(&a, arena, arena_len, 0);
    if (tk == NULL || tk->magic != TK_MAGIC)
        rc = TK_ERR_NOT_PROVISIONED;
    else if (arena == NULL || arena_len < TK_ARENA_MIN)
        rc = TK_ERR_NO_MEMORY;
    else if (req == NULL || req_len > TK_REQUEST_MAX)
        rc = TK_ERR_TOO_LARGE;
    else if (tk->tampered)
        rc = TK_ERR_TAMPERED; /* until reopened from a sound flash */
    else if (tk->store_failed)
        rc = TK_ERR_STORE; /* until reopened: the last commit's fate is unknown */
    else
        rc = scan_request(req, req_len, &body, &data, &data_len, &now);
    if (rc == TK_OK) {
        in_session = body == COHORT__TOKEN_REQUEST__BODY_AGG_FEED ||
                     body == COHORT__TOKEN_REQUEST__BODY_AGG_END ||
                     body == COHORT__TOKEN_REQUEST__BODY_DOC_WRITE ||
                     body == COHORT__TOKEN_REQUEST__BODY_DOC_READ ||
                     body == COHORT__TOKEN_REQUEST__BODY_BACKUP_NEXT ||
                     body == COHORT__TOKEN_REQUEST__BODY_RESTORE_FEED;
        if (!in_session)
            tk_session_close(tk, arena, arena_len);
        else
            a.lo = tk_session_extent(tk, arena, a.cap); /* decode above the session */
        if (tk->batch_open && body != COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE)
            tk_log_abort(tk); /* any other request drops a pending batch */
        memcpy(&saved, tk, sizeof saved);
        c = (struct tk_call){tk, &a, now, &w, {0}, NULL};
        rc = run(&c, body, req, req_len, data, data_len);
        if (w.overflow && rc == TK_OK)
            rc = TK_ERR_RESPONSE_SPACE;
        if (rc == TK_OK && !tk->batch_open && tk->counter == saved.counter &&
            saved_state_differs(&saved, tk))
            rc = tk_log_commit(tk, &a);
        if (rc != TK_OK) {
            /* Drop what this call appended while the state still knows
             * it (the restored state would not), then restore. */
            tk_log_abort(tk);
            if (tk->counter == saved.counter) {
                bool tampered = tk->tampered, failed = tk->store_failed;
                memcpy(tk, &saved, sizeof saved);
                tk->tampered = tampered;
                tk->store_failed = failed;
            }
            tk_log_abort(tk);
        }
        sodium_memzero(&saved, sizeof saved);
        /* A session ends with AggEnd or with any error, except a response
         * buffer too small for AggEnd's output: that is retried. Closing
         * after a failed AggBegin wipes what it left in the arena. */
        if ((body == COHORT__TOKEN_REQUEST__BODY_AGG_END || rc != TK_OK) &&
            !(body == COHORT__TOKEN_REQUEST__BODY_AGG_END && rc == TK_ERR_RESPONSE_SPACE))
            tk_session_close(tk, arena, arena_len);
    }
    if (rc != TK_OK)
        w = (struct tk_wbuf){resp, resp_cap, 0, false};
    if (rc != TK_OK) {
        tk_w_sint(&w, 1, rc);
        if (c.reason[0] != '\0')
            tk_w_bytes(&w, 8, (const uint8_t *)c.reason, strlen(c.reason));
    }
    if (arena_peak != NULL)
        *arena_peak = a.peak;
    tk_w_uint(&w, 2, a.peak);
    if (w.overflow) {
        *resp_len = 0;
        return TK_ERR_RESPONSE_SPACE;
    }
    *resp_len = w.len;
    return rc;
}

static const struct {
    int code;
    const char *name;
    const char *text;
} errors[] = {
    {TK_OK, "TK_OK", "success"},
    {TK_ERR_MALFORMED, "TK_ERR_MALFORMED", "message does not decode"},
    {TK_ERR_TRUNCATED, "TK_ERR_TRUNCATED", "message is truncated"},
    {TK_ERR_TOO_LARGE, "TK_ERR_TOO_LARGE", "message or field over its size limit"},
    {TK_ERR_NO_MEMORY, "TK_ERR_NO_MEMORY", "token RAM too small for this work"},
    {TK_ERR_RESPONSE_SPACE, "TK_ERR_RESPONSE_SPACE", "response buffer too small"},
    {TK_ERR_NOT_PROVISIONED, "TK_ERR_NOT_PROVISIONED", "token is not provisioned"},
    {TK_ERR_PROVISIONED, "TK_ERR_PROVISIONED", "token is already provisioned"},
    {TK_ERR_BAD_SIGNATURE, "TK_ERR_BAD_SIGNATURE", "plan signature does not verify"},
    {TK_ERR_BAD_CERT, "TK_ERR_BAD_CERT", "certificate does not verify"},
    {TK_ERR_UNTRUSTED, "TK_ERR_UNTRUSTED", "certificate chain ends at an untrusted authority"},
    {TK_ERR_EXPIRED, "TK_ERR_EXPIRED", "certificate or plan outside its validity period"},
    {TK_ERR_SCOPE, "TK_ERR_SCOPE", "plan outside the researcher's certified scope"},
    {TK_ERR_ROLE, "TK_ERR_ROLE", "certificate used for a role it does not have"},
    {TK_ERR_BAD_PLAN, "TK_ERR_BAD_PLAN", "plan is invalid"},
    {TK_ERR_NO_TABLE, "TK_ERR_NO_TABLE", "the plan's table is not on this token"},
    {TK_ERR_WRONG_QUERY, "TK_ERR_WRONG_QUERY", "ciphertext belongs to another query"},
    {TK_ERR_BINDING, "TK_ERR_BINDING", "ciphertext bound to another phase, level or partition"},
    {TK_ERR_DECRYPT, "TK_ERR_DECRYPT", "ciphertext fails authentication"},
    {TK_ERR_DUPLICATE, "TK_ERR_DUPLICATE", "tuple or partial given twice"},
    {TK_ERR_ORDER, "TK_ERR_ORDER", "inputs out of order"},
    {TK_ERR_REPLAY, "TK_ERR_REPLAY", "partition already aggregated by this token"},
    {TK_ERR_SESSION, "TK_ERR_SESSION", "no such aggregation session"},
    {TK_ERR_INCOMPLETE, "TK_ERR_INCOMPLETE", "partial with missing chunks"},
    {TK_ERR_TOO_MANY_GROUPS, "TK_ERR_TOO_MANY_GROUPS", "more groups than the plan allows"},
    {TK_ERR_TOO_FEW, "TK_ERR_TOO_FEW", "fewer participants than the plan requires"},
    {TK_ERR_UNSUPPORTED, "TK_ERR_UNSUPPORTED", "feature not supported by this token"},
    {TK_ERR_OVERFLOW, "TK_ERR_OVERFLOW", "aggregate overflows 64 bits"},
    {TK_ERR_SCHEMA, "TK_ERR_SCHEMA", "rows do not match their table's schema"},
    {TK_ERR_STORE, "TK_ERR_STORE", "the host's flash or secure memory failed (I/O)"},
    {TK_ERR_RANDOM, "TK_ERR_RANDOM", "internal cryptographic failure"},
    {TK_ERR_TAMPERED, "TK_ERR_TAMPERED", "the flash or secure image failed its integrity check"},
    {TK_ERR_ROLLBACK, "TK_ERR_ROLLBACK", "the secure image is older than the monotonic counter"},
    {TK_ERR_POLICY, "TK_ERR_POLICY", "the owner's consent policy refuses the plan"},
    {TK_ERR_BUDGET, "TK_ERR_BUDGET", "the owner's privacy budget would be exceeded"},
    {TK_ERR_NOT_FOUND, "TK_ERR_NOT_FOUND", "no such table, row or document"},
    {TK_ERR_CONFLICT, "TK_ERR_CONFLICT", "the document changed since the revision given"},
    {TK_ERR_AUTH, "TK_ERR_AUTH", "the credential is unknown, wrong, expired or revoked"},
    {TK_ERR_DENIED, "TK_ERR_DENIED", "the credential's rules do not allow this"},
};

const char *tk_strerror(int code)
{
    size_t i;
    for (i = 0; i < sizeof errors / sizeof errors[0]; i++)
        if (errors[i].code == code)
            return errors[i].text;
    return "unknown error";
}

const char *tk_errname(int code)
{
    size_t i;
    for (i = 0; i < sizeof errors / sizeof errors[0]; i++)
        if (errors[i].code == code)
            return errors[i].name;
    return "TK_ERR_UNKNOWN";
}
