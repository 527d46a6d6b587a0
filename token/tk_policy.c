/*
 * The owner's consent policy, privacy budget and audit log.
 *
 * A token holds a person's data; a study may only use it within what that
 * person agreed to. The owner's agreement is a ConsentPolicy record in the
 * token's log (the latest one is in force): which root authorities,
 * researchers and studies may ask, which tables and columns they may touch,
 * the floors the plan's own thresholds must meet, whether differential
 * privacy is required, and two epsilon budgets, one per study name and one
 * over all studies.
 *
 * Every plan that reaches a decision is logged: an AuditEntry record says
 * who asked (researcher, root authority, study), for what (table, SQL), the
 * verdict with its reason, and the epsilon debited. The audit log is the
 * budget ledger too: what a study has spent is the sum of its accepted
 * entries, so the two can never disagree. Records are in the hash-chained
 * log, so the host can neither drop an entry (to refill a budget) nor
 * forge one undetected.
 *
 * Decisions, in order:
 * - no policy at all: refused (consent is opt in);
 * - authority, researcher, study not listed (empty lists mean any);
 * - a table or a column the plan reads (grouping, aggregates, WHERE) not
 *   shared: "table" shares every column, "table.column" one;
 * - the plan's min_participants or min_group_size below the owner's floor;
 * - no epsilon while the owner requires differential privacy;
 * - epsilon over what is left of the study's or the total budget
 *   (TK_ERR_BUDGET). A plan accepted before is not charged again: the
 *   service may ask the same plan twice (a lost upload), and each token's
 *   contribution to one query is the same data under the same pseudonym.
 *
 * What is logged and when. Plans whose signature or chain fail are not
 * logged: they come from no one the token trusts, and logging them would
 * let anyone fill the flash. A refusal is logged once per query and status;
 * an acceptance once per query. The entry (and its debit) is committed
 * before the contribution leaves the token: a crash after the commit costs
 * budget without a contribution, never the reverse.
 *
 * Owner requests: SetPolicy replaces the policy (logged as an audit event
 * too), GetPolicy returns it, ReadAudit pages through the log. The host
 * link is the owner's: authenticating the owner to the token (a PIN) is
 * not done here. A request that carries a credential (the agent's HTTP
 * API) reads the audit log only with an owner credential (tk_cred.c).
 *
 * The personal cloud logs here too (tk_audit_append): every document
 * access and every credential issued or revoked (tk_doc.c, tk_cred.c),
 * with the credential that asked; they debit nothing.
 */
#include <math.h>

#include "token/tk_int.h"

#define POLICY_MAX 4096u      /* a packed ConsentPolicy */
#define POLICY_LIST_MAX 32u   /* entries of each list */
#define AUDIT_SQL_MAX 1024u   /* SQL kept in an audit entry */
#define AUDIT_PAGE_MAX 64u    /* entries per ReadAudit page */
#define EPSILON_MAX 1000000.0 /* any budget or plan epsilon above this is nonsense */
#define EPSILON_SLACK 1e-9    /* floating-point slack when comparing budgets */

/* ------------------------------------------------------------ reasons */

struct rbuf {
    char *p;
    size_t cap, len;
};

static void r_str(struct rbuf *r, const char *s)
{
    r->len = tk_text_put(r->p, r->len, r->cap, s);
}

static void r_uint(struct rbuf *r, uint64_t v)
{
    r->len = tk_text_u64(r->p, r->len, r->cap, v);
}

/* A non-negative number with three decimals (budgets, epsilons). */
static void r_eps(struct rbuf *r, double v)
{
    uint64_t m = (uint64_t)(v * 1000.0 + 0.5);
    char frac[4];
    r_uint(r, m / 1000);
    frac[0] = '.';
    frac[1] = (char)('0' + m / 100 % 10);
    frac[2] = (char)('0' + m / 10 % 10);
    frac[3] = (char)('0' + m % 10);
    if (r->len + 4 < r->cap) {
        memcpy(r->p + r->len, frac, 4);
        r->len += 4;
    }
    r->p[r->len] = '\0';
}

static void r_hex8(struct rbuf *r, const uint8_t *k)
{
    static const char hex[] = "0123456789abcdef";
    size_t i;
    for (i = 0; i < 4 && r->len + 3 < r->cap; i++) {
        r->p[r->len++] = hex[k[i] >> 4];
        r->p[r->len++] = hex[k[i] & 15];
    }
    r->p[r->len] = '\0';
}

static struct rbuf reason_of(struct tk_call *c)
{
    struct rbuf r = {c->reason, sizeof c->reason, 0};
    c->reason[0] = '\0';
    return r;
}

/* ------------------------------------------------------ reading the log */

/*
 * What a scan of the log learns. With a plan, each policy record met is
 * judged on the spot (the last one met is the one in force), so that no
 * copy of it needs to stay in RAM; without one, the policy's bytes are
 * kept for GetPolicy.
 */
struct ledger {
    struct tk_call *call;
    const struct tk_plan *plan; /* NULL: only the policy is wanted */
    uint8_t *policy;            /* without a plan: the latest policy's bytes */
    size_t policy_len;
    bool have_policy;
    int verdict;                    /* of the clauses of the policy in force */
    char reason[TK_REASON_MAX + 1]; /* and its reason */
    double per_study, total;        /* the budgets of the policy in force */
    double spent_study, spent_total;
    bool repeat;
    int last_status;
};

static int clauses(struct rbuf *r, const Cohort__ConsentPolicy *p, const struct tk_plan *plan);

static int ledger_record(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len,
                         uint64_t index)
{
    struct ledger *l = ctx;
    const uint8_t *body;
    size_t body_len;
    uint32_t field;
    Cohort__AuditEntry *e;
    int rc;

    (void)index;
    if ((rc = tk_record_body(plain, len, &field, &body, &body_len)) != TK_OK)
        return rc;
    if (field == COHORT__STORE_RECORD__BODY_POLICY) {
        Cohort__ConsentPolicy *p;
        struct rbuf r = {l->reason, sizeof l->reason, 0};
        if (body_len > POLICY_MAX)
            return TK_ERR_STORE;
        l->have_policy = true;
        if (l->plan == NULL) {
            memcpy(l->policy, body, body_len);
            l->policy_len = body_len;
            return TK_OK;
        }
        p = (Cohort__ConsentPolicy *)tk_unpack(a, &cohort__consent_policy__descriptor, body,
                                               body_len, &rc);
        if (p == NULL)
            return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_STORE;
        l->reason[0] = '\0';
        l->verdict = clauses(&r, p, l->plan);
        l->per_study = p->epsilon_per_study;
        l->total = p->epsilon_total;
        return TK_OK;
    }
    if (field != COHORT__STORE_RECORD__BODY_AUDIT || l->plan == NULL)
        return TK_OK;
    e = (Cohort__AuditEntry *)tk_unpack(a, &cohort__audit_entry__descriptor, body, body_len, &rc);
    if (e == NULL)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_STORE;
    if (e->accepted) {
        l->spent_total += e->epsilon;
        if (e->study != NULL && strcmp(e->study, l->plan->study) == 0)
            l->spent_study += e->epsilon;
    }
    if (e->query_id.len == TK_QUERY_ID_LEN &&
        memcmp(e->query_id.data, l->plan->query_id, TK_QUERY_ID_LEN) == 0) {
        l->last_status = e->accepted ? TK_OK : e->status;
        if (e->accepted)
            l->repeat = true;
    }
    return TK_OK;
}

/* Scan the committed log for the policy in force and, given a plan, its
 * verdict and what the plan's study and all studies have spent. */
static int ledger_read(struct tk_call *c, struct ledger *l, const struct tk_plan *plan)
{
    memset(l, 0, sizeof *l);
    l->call = c;
    l->plan = plan;
    l->last_status = 1;
    if (plan == NULL && (l->policy = tk_arena_scratch(c->arena, POLICY_MAX)) == NULL)
        return TK_ERR_NO_MEMORY;
    return tk_log_scan(c->tk, c->arena, false, ledger_record, l);
}

/* ------------------------------------------------------- the decision */

static bool key_listed(const ProtobufCBinaryData *keys, size_t n, const uint8_t k[TK_PK_LEN])
{
    size_t i;
    if (n == 0)
        return true;
    for (i = 0; i < n; i++)
        if (keys[i].len == TK_PK_LEN && sodium_memcmp(keys[i].data, k, TK_PK_LEN) == 0)
            return true;
    return false;
}

/* Whether the policy shares table.col (col NULL: the table at all). */
static bool shared(const Cohort__ConsentPolicy *p, const char *table, const char *col)
{
    size_t i, tl = strlen(table);
    for (i = 0; i < p->n_tables; i++) {
        const char *e = p->tables[i];
        if (e == NULL || strncmp(e, table, tl) != 0)
            continue;
        if (e[tl] == '\0')
            return true;
        if (e[tl] == '.' && (col == NULL || strcmp(e + tl + 1, col) == 0))
            return true;
    }
    return false;
}

/* The first column the plan reads that the policy does not share, or NULL. */
static const char *unshared_column(const Cohort__ConsentPolicy *p, const struct tk_plan *plan)
{
    uint16_t i;
    for (i = 0; i < plan->n_group; i++)
        if (!shared(p, plan->table, plan->columns[plan->group_col[i]].name))
            return plan->columns[plan->group_col[i]].name;
    for (i = 0; i < plan->n_aggs; i++)
        if (plan->aggs[i].col >= 0 &&
            !shared(p, plan->table, plan->columns[plan->aggs[i].col].name))
            return plan->columns[plan->aggs[i].col].name;
    for (i = 0; i < plan->n_where; i++)
        if (plan->where[i].op == COHORT__OP__OP_COLUMN &&
            !shared(p, plan->table, plan->columns[plan->where[i].index].name))
            return plan->columns[plan->where[i].index].name;
    return NULL;
}

static int clauses(struct rbuf *rb, const Cohort__ConsentPolicy *p, const struct tk_plan *plan)
{
    struct rbuf r = *rb;
    const char *col;

    if (!key_listed(p->authorities, p->n_authorities, plan->root_pk)) {
        r_str(&r, "the study's authority ");
        r_hex8(&r, plan->root_pk);
        r_str(&r, "... is not one you accept");
        return TK_ERR_POLICY;
    }
    if (!key_listed(p->researchers, p->n_researchers, plan->researcher_pk)) {
        r_str(&r, "researcher '");
        r_str(&r, plan->researcher);
        r_str(&r, "' (");
        r_hex8(&r, plan->researcher_pk);
        r_str(&r, "...) is not one you accept");
        return TK_ERR_POLICY;
    }
    if (!tk_name_listed(p->studies, p->n_studies, plan->study)) {
        r_str(&r, "study '");
        r_str(&r, plan->study);
        r_str(&r, "' is not one you accept");
        return TK_ERR_POLICY;
    }
    if (!shared(p, plan->table, NULL)) {
        r_str(&r, "table '");
        r_str(&r, plan->table);
        r_str(&r, "' is not shared");
        return TK_ERR_POLICY;
    }
    if ((col = unshared_column(p, plan)) != NULL) {
        r_str(&r, "column ");
        r_str(&r, plan->table);
        r_str(&r, ".");
        r_str(&r, col);
        r_str(&r, " is not shared");
        return TK_ERR_POLICY;
    }
    if (plan->min_participants < p->min_participants) {
        r_str(&r, "the study needs only ");
        r_uint(&r, plan->min_participants);
        r_str(&r, " participants; you require at least ");
        r_uint(&r, p->min_participants);
        return TK_ERR_POLICY;
    }
    if (plan->min_group_size < p->min_group_size) {
        r_str(&r, "the study publishes groups of ");
        r_uint(&r, plan->min_group_size);
        r_str(&r, " participants; you require at least ");
        r_uint(&r, p->min_group_size);
        return TK_ERR_POLICY;
    }
    if (p->require_dp && !(plan->epsilon > 0.0)) {
        r_str(&r, "the study adds no differential-privacy noise; you require it");
        return TK_ERR_POLICY;
    }
    return TK_OK;
}

/* The budgets of the policy in force, against what has been spent. */
static int budget(struct tk_call *c, const struct ledger *l, const struct tk_plan *plan,
                  struct tk_admission *adm)
{
    struct rbuf r = reason_of(c);
    adm->epsilon = adm->repeat ? 0.0 : plan->epsilon;
    if (adm->epsilon > 0.0 && adm->spent_study + adm->epsilon > l->per_study + EPSILON_SLACK) {
        r_str(&r, "study '");
        r_str(&r, plan->study);
        r_str(&r, "' asks epsilon ");
        r_eps(&r, adm->epsilon);
        r_str(&r, " but has ");
        r_eps(&r, l->per_study > adm->spent_study ? l->per_study - adm->spent_study : 0.0);
        r_str(&r, " of its ");
        r_eps(&r, l->per_study);
        r_str(&r, " left");
        return TK_ERR_BUDGET;
    }
    if (adm->epsilon > 0.0 && adm->spent_total + adm->epsilon > l->total + EPSILON_SLACK) {
        r_str(&r, "the study asks epsilon ");
        r_eps(&r, adm->epsilon);
        r_str(&r, " but your total budget has ");
        r_eps(&r, l->total > adm->spent_total ? l->total - adm->spent_total : 0.0);
        r_str(&r, " of ");
        r_eps(&r, l->total);
        r_str(&r, " left");
        return TK_ERR_BUDGET;
    }
    return TK_OK;
}

int tk_policy_check(struct tk_call *c, const struct tk_plan *plan, struct tk_admission *adm)
{
    size_t mark = tk_arena_mark(c->arena);
    struct ledger l;
    int rc;

    memset(adm, 0, sizeof *adm);
    adm->last_status = 1;
    rc = ledger_read(c, &l, plan);
    tk_arena_release(c->arena, mark);
    if (rc != TK_OK)
        return rc;
    adm->spent_study = l.spent_study;
    adm->spent_total = l.spent_total;
    adm->repeat = l.repeat;
    adm->last_status = l.last_status;
    if (!l.have_policy) {
        struct rbuf r = reason_of(c);
        r_str(&r, "no consent policy is set: you have not agreed to any study");
        return TK_ERR_POLICY;
    }
    if (l.verdict != TK_OK) {
        memcpy(c->reason, l.reason, sizeof c->reason);
        return l.verdict;
    }
    return budget(c, &l, plan, adm);
}

/* ------------------------------------------------------- writing entries */

/* At most max bytes of s, not cutting a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    while (max > 0 && ((uint8_t)s[max] & 0xc0) == 0x80)
        max--;
    return max;
}

int tk_audit_append(struct tk_call *c, Cohort__AuditEntry *e)
{
    Cohort__StoreRecord rec;
    int rc;
    cohort__store_record__init(&rec);
    rec.body_case = COHORT__STORE_RECORD__BODY_AUDIT;
    rec.audit = e;
    e->seq = c->tk->audit_seq + 1;
    e->time = c->now;
    if ((rc = tk_log_append(c->tk, c->arena, &rec)) != TK_OK)
        return rc;
    c->tk->audit_seq++;
    return TK_OK;
}

int tk_policy_record(struct tk_call *c, const struct tk_plan *plan, const struct tk_admission *adm,
                     int status)
{
    size_t mark = tk_arena_mark(c->arena);
    bool accepted = status == TK_OK;
    Cohort__AuditEntry e;
    char *sql = NULL;
    size_t sql_len;
    int rc;

    /* Once per query and verdict: a repeat adds nothing to the log. */
    if (accepted ? adm->repeat : adm->last_status == status)
        return TK_OK;
    cohort__audit_entry__init(&e);
    e.query_id.data = (uint8_t *)plan->query_id;
    e.query_id.len = TK_QUERY_ID_LEN;
    e.study = (char *)plan->study;
    e.researcher = (char *)plan->researcher;
    e.researcher_pk.data = (uint8_t *)plan->researcher_pk;
    e.researcher_pk.len = TK_PK_LEN;
    e.table = (char *)plan->table;
    e.accepted = accepted;
    e.status = status;
    e.reason = accepted ? "" : c->reason;
    e.epsilon = accepted ? adm->epsilon : 0.0;
    e.event = "collect";
    sql_len = plan->sql ? utf8_cut(plan->sql, plan->sql_len, AUDIT_SQL_MAX) : 0;
    sql = tk_arena_scratch(c->arena, sql_len + 1);
    if (sql == NULL) {
        rc = TK_ERR_NO_MEMORY;
        goto out;
    }
    if (sql_len > 0)
        memcpy(sql, plan->sql, sql_len);
    sql[sql_len] = '\0';
    e.sql = sql;
    if ((rc = tk_audit_append(c, &e)) != TK_OK)
        goto out;
    rc = tk_log_commit(c->tk, c->arena);
out:
    tk_arena_release(c->arena, mark);
    return rc;
}

/* ---------------------------------------------------------- owner calls */

static bool finite_budget(double v)
{
    return isfinite(v) && v >= 0.0 && v <= EPSILON_MAX;
}

static bool valid_name(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    return n > 0 && n <= max;
}

/* "table" or "table.column", each a valid name. */
static bool valid_table_entry(const char *s)
{
    const char *dot;
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 2 * TK_NAME_MAX + 1)
        return false;
    dot = strchr(s, '.');
    if (dot == NULL)
        return n <= TK_NAME_MAX;
    return dot > s && (size_t)(dot - s) <= TK_NAME_MAX && dot[1] != '\0' &&
           strlen(dot + 1) <= TK_NAME_MAX && strchr(dot + 1, '.') == NULL;
}

static int check_policy(const Cohort__ConsentPolicy *p)
{
    size_t i;
    if (p == NULL)
        return TK_ERR_MALFORMED;
    if (p->n_authorities > POLICY_LIST_MAX || p->n_researchers > POLICY_LIST_MAX ||
        p->n_studies > POLICY_LIST_MAX || p->n_tables > POLICY_LIST_MAX)
        return TK_ERR_TOO_LARGE;
    for (i = 0; i < p->n_authorities; i++)
        if (p->authorities[i].len != TK_PK_LEN)
            return TK_ERR_MALFORMED;
    for (i = 0; i < p->n_researchers; i++)
        if (p->researchers[i].len != TK_PK_LEN)
            return TK_ERR_MALFORMED;
    for (i = 0; i < p->n_studies; i++)
        if (!valid_name(p->studies[i], TK_STUDY_MAX))
            return TK_ERR_MALFORMED;
    for (i = 0; i < p->n_tables; i++)
        if (!valid_table_entry(p->tables[i]))
            return TK_ERR_MALFORMED;
    if (!finite_budget(p->epsilon_per_study) || !finite_budget(p->epsilon_total))
        return TK_ERR_MALFORMED;
    if (cohort__consent_policy__get_packed_size(p) > POLICY_MAX)
        return TK_ERR_TOO_LARGE;
    return TK_OK;
}

int tk_do_set_policy(struct tk_call *c, const Cohort__SetPolicy *req)
{
    Cohort__ConsentPolicy p;
    Cohort__StoreRecord rec;
    Cohort__AuditEntry e;
    int rc;

    if (!tk_has_flag(c->tk, TK_FLAG_KEYS))
        return TK_ERR_NOT_PROVISIONED;
    if (c->tk->tampered)
        return TK_ERR_TAMPERED;
    if ((rc = check_policy(req->policy)) != TK_OK)
        return rc;
    p = *req->policy;
    p.set_at = c->now;
    cohort__store_record__init(&rec);
    rec.body_case = COHORT__STORE_RECORD__BODY_POLICY;
    rec.policy = &p;
    if ((rc = tk_log_append(c->tk, c->arena, &rec)) != TK_OK)
        return rc;
    cohort__audit_entry__init(&e);
    e.accepted = true;
    e.event = "policy";
    if ((rc = tk_audit_append(c, &e)) != TK_OK)
        return rc;
    if ((rc = tk_log_commit(c->tk, c->arena)) != TK_OK)
        return rc;
    tk_w_message(c->out, 13, &p.base);
    return TK_OK;
}

int tk_do_get_policy(struct tk_call *c, const Cohort__GetPolicy *req)
{
    struct ledger l;
    int rc;

    (void)req;
    if (!tk_has_flag(c->tk, TK_FLAG_KEYS))
        return TK_ERR_NOT_PROVISIONED;
    if ((rc = ledger_read(c, &l, NULL)) != TK_OK)
        return rc;
    if (!l.have_policy) {
        struct rbuf r = reason_of(c);
        r_str(&r, "no consent policy is set: no study may use your data");
        return TK_ERR_NOT_FOUND;
    }
    tk_w_bytes(c->out, 13, l.policy, l.policy_len);
    return TK_OK;
}

/* ReadAudit: a first pass sizes the page, a second writes it. */
struct audit_page {
    uint64_t after;
    uint32_t max;
    size_t room;   /* bytes the page may take */
    uint32_t n;    /* entries on the page */
    size_t len;    /* their encoded size, as AuditPage fields */
    uint64_t last; /* seq of the page's last entry */
    bool more;
    struct tk_wbuf *out; /* second pass: where to write */
};

static int audit_entry(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len,
                       uint64_t index)
{
    struct audit_page *pg = ctx;
    const uint8_t *body;
    size_t body_len, add;
    uint32_t field;
    Cohort__AuditEntry *e;
    int rc;

    (void)index;
    if ((rc = tk_record_body(plain, len, &field, &body, &body_len)) != TK_OK)
        return rc;
    if (field != COHORT__STORE_RECORD__BODY_AUDIT)
        return TK_OK;
    e = (Cohort__AuditEntry *)tk_unpack(a, &cohort__audit_entry__descriptor, body, body_len, &rc);
    if (e == NULL)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_STORE;
    if (e->seq <= pg->after)
        return TK_OK;
    if (pg->out != NULL) {
        if (e->seq <= pg->last)
            tk_w_bytes(pg->out, 1, body, body_len);
        return TK_OK;
    }
    add = tk_field_len(1, body_len);
    if (pg->more || pg->n == pg->max || pg->len + add > pg->room) {
        pg->more = true;
        return TK_OK;
    }
    pg->n++;
    pg->len += add;
    pg->last = e->seq;
    return TK_OK;
}

int tk_do_read_audit(struct tk_call *c, const Cohort__ReadAudit *req)
{
    struct audit_page pg;
    int rc;

    if (!tk_has_flag(c->tk, TK_FLAG_KEYS))
        return TK_ERR_NOT_PROVISIONED;
    if ((rc = tk_cred_owner(c)) != TK_OK)
        return rc; /* the audit log is the owner's alone */
    memset(&pg, 0, sizeof pg);
    pg.after = req->after;
    pg.max = req->max_entries == 0 || req->max_entries > AUDIT_PAGE_MAX ? AUDIT_PAGE_MAX
                                                                        : req->max_entries;
    /* Leave room for the page's own framing and the response's status and peak. */
    pg.room = c->out->cap > c->out->len + 64 ? c->out->cap - c->out->len - 64 : 0;
    if ((rc = tk_log_scan(c->tk, c->arena, false, audit_entry, &pg)) != TK_OK)
        return rc;
    if (pg.n == 0 && pg.more)
        return TK_ERR_RESPONSE_SPACE;
    tk_w_open(c->out, 14, pg.len + (pg.more ? 2 : 0));
    pg.out = c->out;
    if ((rc = tk_log_scan(c->tk, c->arena, false, audit_entry, &pg)) != TK_OK)
        return rc;
    if (pg.more)
        tk_w_uint(c->out, 2, 1);
    return TK_OK;
}
