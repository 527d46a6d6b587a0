/*
 * The owner's operations on a token, over a token link, and the codec
 * between the token link's messages and the owner's structs (pt_owner.h).
 *
 * Each operation is one request and its response, or a loop of them for
 * anything that comes in pages (rows, audit entries) or goes in batches
 * (rows to load). Pages are read by the last id or sequence number seen,
 * which must grow strictly: a response that would make a loop go round
 * forever is treated as a broken link.
 *
 * A load is one batch: its rows go in LoadTable requests cut to a size the
 * token's RAM can take, every one but the last marked `more`, and the token
 * commits them all with the last. Until then nothing is stored; a batch
 * that fails half-way is dropped by the token (and, if we stop sending, by
 * the next request we send: pt_load_free sends one).
 *
 * Responses are bounded before they are decoded, and every string they
 * carry is copied into a fixed field (cut at a UTF-8 boundary if it is too
 * long); nothing of a decoded message outlives the call that decoded it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "participant/pt_int.h"
#include "participant/pt_owner.h"
#include "proto/cohort.pb-c.h"

#define PLAN_MAX 16384u /* a serialized Plan, as a token takes it (TK_PLAN_MAX) */
#define ANY_BODY (-1)
#define NO_BODY 0

void pt_owner_init(struct pt_owner *o, const struct pt_link *link, int64_t now)
{
    memset(o, 0, sizeof *o);
    o->link = *link;
    o->now = now;
}

/* Copy a string into a fixed field, cut at a UTF-8 character boundary. */
static void copy_text(char *dst, size_t cap, const char *src)
{
    size_t n = src != NULL ? strlen(src) : 0;

    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80)
            n--;
    }
    if (n > 0)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

/*
 * Send a TokenRequest and decode its response (the caller frees it). want
 * is the body the response must carry: a case, NO_BODY (none needed) or
 * ANY_BODY. A refusal is PT_ERR_TOKEN with its status and reason kept.
 */
static int call(struct pt_owner *o, Cohort__TokenRequest *req, int want,
                Cohort__TokenResponse **out)
{
    const uint8_t *resp;
    size_t len, resp_len = 0;
    uint8_t *buf;
    Cohort__TokenResponse *r;
    int rc;

    *out = NULL;
    req->now = o->now;
    len = cohort__token_request__get_packed_size(req);
    if (len > PT_LOAD_REQUEST_MAX)
        return PT_ERR_TOO_LARGE;
    buf = malloc(len ? len : 1);
    if (buf == NULL)
        return PT_ERR_NOMEM;
    cohort__token_request__pack(req, buf);
    rc = o->link.transact(o->link.ctx, buf, len, &resp, &resp_len);
    free(buf);
    o->calls++;
    o->token_status = 0;
    o->reason[0] = '\0';
    if (rc != 0)
        return rc == PT_ERR_NOMEM ? rc : PT_ERR_LINK;
    if (resp_len > PT_RESPONSE_MAX)
        return PT_ERR_TOO_LARGE;
    r = cohort__token_response__unpack(NULL, resp_len, resp);
    if (r == NULL)
        return PT_ERR_LINK;
    o->token_status = r->status;
    copy_text(o->reason, sizeof o->reason, r->reason);
    if (r->status != 0) {
        if (r->status > 0)
            o->token_status = TK_ERR_MALFORMED; /* a token never answers that */
        cohort__token_response__free_unpacked(r, NULL);
        return PT_ERR_TOKEN;
    }
    if (want != ANY_BODY && want != NO_BODY && (int)r->body_case != want) {
        cohort__token_response__free_unpacked(r, NULL);
        return PT_ERR_LINK;
    }
    *out = r;
    return 0;
}

static void request(Cohort__TokenRequest *req, Cohort__TokenRequest__BodyCase body)
{
    cohort__token_request__init(req);
    req->body_case = body;
}

/* --------------------------------------------------------------- codec */

static bool valid_type(int t)
{
    return t == PT_INT || t == PT_DECIMAL || t == PT_TEXT || t == PT_DATE || t == PT_BOOL ||
           t == PT_TIMESTAMP;
}

static int schema_from_pb(struct pt_schema *s, const Cohort__TableSchema *pb)
{
    memset(s, 0, sizeof *s);
    if (pb == NULL || pb->name == NULL || strlen(pb->name) > PT_NAME_MAX ||
        pb->n_columns > PT_COLUMNS_MAX)
        return PT_ERR_LINK;
    copy_text(s->name, sizeof s->name, pb->name);
    for (size_t i = 0; i < pb->n_columns; i++) {
        const Cohort__Column *c = pb->columns[i];
        if (c->name == NULL || strlen(c->name) > PT_NAME_MAX || !valid_type(c->type) ||
            c->scale > PT_SCALE_MAX)
            return PT_ERR_LINK;
        copy_text(s->columns[i].name, sizeof s->columns[i].name, c->name);
        s->columns[i].type = (enum pt_type)c->type;
        s->columns[i].scale = c->type == COHORT__VALUE_TYPE__VT_DECIMAL ? c->scale : 0;
    }
    s->n_columns = pb->n_columns;
    return 0;
}

int pt_schema_decode(struct pt_schema *out, const uint8_t *buf, size_t len)
{
    Cohort__TableSchema *pb;
    struct pt_schema s;
    int rc;

    if (len > PT_SCHEMA_TEXT_MAX)
        return PT_ERR_INPUT;
    pb = cohort__table_schema__unpack(NULL, len, buf);
    if (pb == NULL)
        return PT_ERR_INPUT;
    rc = schema_from_pb(&s, pb);
    cohort__table_schema__free_unpacked(pb, NULL);
    if (rc != 0 || !pt_name_valid(s.name) || s.n_columns == 0)
        return PT_ERR_INPUT;
    for (size_t i = 0; i < s.n_columns; i++)
        if (!pt_name_valid(s.columns[i].name))
            return PT_ERR_INPUT;
    *out = s;
    return 0;
}

/* The schema as a message: cols and ptrs are the caller's, PT_COLUMNS_MAX each. */
static void schema_to_pb(Cohort__TableSchema *pb, Cohort__Column *cols, Cohort__Column **ptrs,
                         const struct pt_schema *s)
{
    cohort__table_schema__init(pb);
    pb->name = (char *)s->name;
    for (size_t i = 0; i < s->n_columns; i++) {
        cohort__column__init(&cols[i]);
        cols[i].name = (char *)s->columns[i].name;
        cols[i].type = (Cohort__ValueType)s->columns[i].type;
        cols[i].scale = s->columns[i].scale;
        ptrs[i] = &cols[i];
    }
    pb->n_columns = s->n_columns;
    pb->columns = ptrs;
}

static int value_from_pb(struct pt_value *v, const Cohort__Value *pb, const struct pt_column *c)
{
    memset(v, 0, offsetof(struct pt_value, s));
    v->s[0] = '\0';
    if (pb == NULL || pb->type == COHORT__VALUE_TYPE__VT_NULL)
        return 0;
    if ((int)pb->type != (int)c->type)
        return PT_ERR_LINK;
    v->type = c->type;
    v->i = pb->i;
    switch (c->type) {
    case PT_DECIMAL:
        if (pb->scale != c->scale)
            return PT_ERR_LINK;
        v->scale = c->scale;
        break;
    case PT_TEXT:
        if (pb->s.len > PT_TEXT_MAX)
            return PT_ERR_LINK;
        if (pb->s.len)
            memcpy(v->s, pb->s.data, pb->s.len);
        v->s[pb->s.len] = '\0';
        v->len = pb->s.len;
        break;
    case PT_BOOL:
        if (pb->i != 0 && pb->i != 1)
            return PT_ERR_LINK;
        break;
    default:
        break;
    }
    return 0;
}

static void value_to_pb(Cohort__Value *pb, const struct pt_value *v)
{
    cohort__value__init(pb);
    pb->type = (Cohort__ValueType)v->type;
    switch (v->type) {
    case PT_NULL:
        break;
    case PT_TEXT:
        pb->s.data = (uint8_t *)(uintptr_t)v->s;
        pb->s.len = v->len;
        break;
    case PT_DECIMAL:
        pb->scale = v->scale;
        pb->i = v->i;
        break;
    default:
        pb->i = v->i;
        break;
    }
}

/* A value fits its column: NULL, or its type, scale and size. */
static bool value_fits(const struct pt_value *v, const struct pt_column *c)
{
    if (v->type == PT_NULL)
        return true;
    if (v->type != c->type)
        return false;
    if (v->type == PT_DECIMAL && v->scale != c->scale)
        return false;
    if (v->type == PT_TEXT &&
        (v->len > PT_TEXT_MAX || !pt_utf8_valid((const uint8_t *)v->s, v->len, NULL)))
        return false;
    if (v->type == PT_BOOL && v->i != 0 && v->i != 1)
        return false;
    return true;
}

/* ---------------------------------------------------------- operations */

int pt_owner_info(struct pt_owner *o, struct pt_token_info *out)
{
    Cohort__TokenRequest req;
    Cohort__GetInfo gi;
    Cohort__TokenResponse *r;
    int rc;

    request(&req, COHORT__TOKEN_REQUEST__BODY_INFO);
    cohort__get_info__init(&gi);
    req.info = &gi;
    if ((rc = call(o, &req, COHORT__TOKEN_RESPONSE__BODY_INFO, &r)) != 0)
        return rc;
    memset(out, 0, sizeof *out);
    out->provisioned = r->info->provisioned;
    out->arena_size = r->info->arena_size;
    if (r->info->sign_pk.len == PT_KEY_LEN) {
        out->has_keys = true;
        memcpy(out->sign_pk, r->info->sign_pk.data, PT_KEY_LEN);
    }
    cohort__token_response__free_unpacked(r, NULL);
    return 0;
}

int pt_owner_provision_begin(struct pt_owner *o, const char *subject, uint8_t **csr,
                             size_t *csr_len, uint8_t sign_pk[static PT_KEY_LEN])
{
    Cohort__TokenRequest req;
    Cohort__ProvisionBegin pb;
    Cohort__TokenResponse *r;
    const Cohort__CertRequest *c;
    uint8_t *buf;
    size_t n;
    int rc;

    if (subject == NULL || strlen(subject) > PT_SUBJECT_MAX)
        return PT_ERR_INPUT;
    request(&req, COHORT__TOKEN_REQUEST__BODY_PROVISION_BEGIN);
    cohort__provision_begin__init(&pb);
    pb.subject = (char *)subject;
    req.provision_begin = &pb;
    if ((rc = call(o, &req, COHORT__TOKEN_RESPONSE__BODY_CERT_REQUEST, &r)) != 0)
        return rc;
    c = r->cert_request;
    if (c->sign_pk.len != PT_KEY_LEN) {
        cohort__token_response__free_unpacked(r, NULL);
        return PT_ERR_LINK;
    }
    /* The request's signature covers its fields, not this encoding. */
    n = cohort__cert_request__get_packed_size(c);
    buf = malloc(n ? n : 1);
    if (buf == NULL) {
        cohort__token_response__free_unpacked(r, NULL);
        return PT_ERR_NOMEM;
    }
    cohort__cert_request__pack(c, buf);
    memcpy(sign_pk, c->sign_pk.data, PT_KEY_LEN);
    cohort__token_response__free_unpacked(r, NULL);
    *csr = buf;
    *csr_len = n;
    return 0;
}

/* A bundle's message, checked for the shape a token takes. NULL when it is not one. */
static Cohort__ProvisionBundle *bundle_unpack(const uint8_t *buf, size_t len, int *rc)
{
    Cohort__ProvisionBundle *b;
    const Cohort__ProvisionFinish *f;
    size_t i;

    *rc = PT_ERR_INPUT;
    if (len > PT_BUNDLE_MAX) {
        *rc = PT_ERR_TOO_LARGE;
        return NULL;
    }
    if (buf == NULL || len == 0 || (b = cohort__provision_bundle__unpack(NULL, len, buf)) == NULL)
        return NULL;
    f = b->finish;
    if (f == NULL || f->device_cert == NULL || f->device_cert->body.len == 0 ||
        f->device_cert->signature.len != crypto_sign_BYTES ||
        f->sealed_group_secret.len != 32 + crypto_box_SEALBYTES || f->n_trusted_authorities == 0 ||
        f->n_trusted_authorities > PT_AUTHORITIES_MAX) {
        cohort__provision_bundle__free_unpacked(b, NULL);
        return NULL;
    }
    for (i = 0; i < f->n_trusted_authorities; i++) {
        if (f->trusted_authorities[i].len != PT_KEY_LEN) {
            cohort__provision_bundle__free_unpacked(b, NULL);
            return NULL;
        }
    }
    *rc = 0;
    return b;
}

int pt_bundle_decode(struct pt_bundle *out, const uint8_t *bundle, size_t len)
{
    Cohort__ProvisionBundle *b;
    Cohort__CertBody *body;
    const Cohort__ProvisionFinish *f;
    int rc;

    if ((b = bundle_unpack(bundle, len, &rc)) == NULL)
        return rc;
    f = b->finish;
    body = cohort__cert_body__unpack(NULL, f->device_cert->body.len, f->device_cert->body.data);
    if (body == NULL || body->role != COHORT__ROLE__ROLE_TOKEN || body->sign_pk.len != PT_KEY_LEN ||
        body->issuer_pk.len != PT_KEY_LEN) {
        cohort__cert_body__free_unpacked(body, NULL);
        cohort__provision_bundle__free_unpacked(b, NULL);
        return PT_ERR_INPUT;
    }
    memset(out, 0, sizeof *out);
    copy_text(out->subject, sizeof out->subject, body->subject);
    memcpy(out->token_pk, body->sign_pk.data, PT_KEY_LEN);
    memcpy(out->issuer_pk, body->issuer_pk.data, PT_KEY_LEN);
    out->not_before = body->not_before;
    out->not_after = body->not_after;
    out->n_authorities = f->n_trusted_authorities;
    for (size_t i = 0; i < f->n_trusted_authorities; i++)
        memcpy(out->authorities[i], f->trusted_authorities[i].data, PT_KEY_LEN);
    cohort__cert_body__free_unpacked(body, NULL);
    cohort__provision_bundle__free_unpacked(b, NULL);
    return 0;
}

int pt_owner_provision_finish(struct pt_owner *o, const uint8_t *bundle, size_t len)
{
    Cohort__TokenRequest req;
    Cohort__ProvisionBundle *b;
    Cohort__TokenResponse *r;
    int rc;

    if ((b = bundle_unpack(bundle, len, &rc)) == NULL)
        return rc;
    request(&req, COHORT__TOKEN_REQUEST__BODY_PROVISION_FINISH);
    req.provision_finish = b->finish;
    rc = call(o, &req, NO_BODY, &r);
    cohort__provision_bundle__free_unpacked(b, NULL);
    if (rc != 0)
        return rc;
    cohort__token_response__free_unpacked(r, NULL);
    return 0;
}

int pt_owner_tables(struct pt_owner *o, struct pt_table_summary **tables, size_t *n)
{
    Cohort__TokenRequest req;
    Cohort__ListTables lt;
    Cohort__TokenResponse *r;
    struct pt_table_summary *t = NULL;
    const Cohort__TableList *list;
    int rc;

    request(&req, COHORT__TOKEN_REQUEST__BODY_LIST_TABLES);
    cohort__list_tables__init(&lt);
    req.list_tables = &lt;
    if ((rc = call(o, &req, COHORT__TOKEN_RESPONSE__BODY_TABLES, &r)) != 0)
        return rc;
    list = r->tables;
    if (list->n_tables > 0) {
        t = calloc(list->n_tables, sizeof *t);
        if (t == NULL) {
            rc = PT_ERR_NOMEM;
            goto out;
        }
    }
    for (size_t i = 0; i < list->n_tables; i++) {
        if ((rc = schema_from_pb(&t[i].schema, list->tables[i]->schema)) != 0) {
            free(t);
            t = NULL;
            goto out;
        }
        t[i].rows = list->tables[i]->rows;
    }
    *tables = t;
    *n = list->n_tables;
out:
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

int pt_owner_table(struct pt_owner *o, const char *name, struct pt_table_summary *out, bool *found)
{
    struct pt_table_summary *t;
    size_t n = 0;
    int rc;

    if ((rc = pt_owner_tables(o, &t, &n)) != 0)
        return rc;
    *found = false;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(t[i].schema.name, name) == 0) {
            *out = t[i];
            *found = true;
            break;
        }
    }
    free(t);
    return 0;
}

int pt_owner_rows(struct pt_owner *o, const char *table, uint64_t limit, pt_row_fn fn, void *ctx,
                  uint64_t *n_rows)
{
    struct pt_schema schema;
    struct pt_value values[PT_COLUMNS_MAX];
    uint64_t after = 0, n = 0;
    int rc = 0;

    for (;;) {
        Cohort__TokenRequest req;
        Cohort__ReadRows rr;
        Cohort__TokenResponse *r;
        const Cohort__RowPage *page;
        uint64_t left = limit ? limit - n : 0;

        request(&req, COHORT__TOKEN_REQUEST__BODY_READ_ROWS);
        cohort__read_rows__init(&rr);
        rr.table = (char *)table;
        rr.after_id = after;
        rr.max_rows = left > UINT32_MAX ? UINT32_MAX : (uint32_t)left;
        req.read_rows = &rr;
        if ((rc = call(o, &req, COHORT__TOKEN_RESPONSE__BODY_ROWS, &r)) != 0)
            return rc;
        page = r->rows;
        if (page->n_ids != page->n_rows || (page->more && page->n_rows == 0) ||
            schema_from_pb(&schema, page->schema) != 0) {
            rc = PT_ERR_LINK;
            goto page_done;
        }
        for (size_t i = 0; i < page->n_rows && rc == 0; i++) {
            const Cohort__Row *row = page->rows[i];
            if (page->ids[i] <= after || row->n_values != schema.n_columns) {
                rc = PT_ERR_LINK;
                break;
            }
            after = page->ids[i];
            for (size_t c = 0; c < schema.n_columns && rc == 0; c++)
                rc = value_from_pb(&values[c], row->values[c], &schema.columns[c]);
            if (rc == 0 && fn != NULL)
                rc = fn(ctx, &schema, after, values);
            if (rc == 0 && ++n == limit)
                break;
        }
    page_done:
        if (rc == 0 && (!page->more || n == limit)) {
            cohort__token_response__free_unpacked(r, NULL);
            break;
        }
        cohort__token_response__free_unpacked(r, NULL);
        if (rc != 0)
            return rc;
    }
    if (n_rows != NULL)
        *n_rows = n;
    return 0;
}

static void changed_from_pb(struct pt_changed *out, const Cohort__TokenResponse *r)
{
    memset(out, 0, sizeof *out);
    if (r->body_case == COHORT__TOKEN_RESPONSE__BODY_CHANGED && r->changed != NULL) {
        out->rows = r->changed->rows;
        out->log_bytes_before = r->changed->log_bytes_before;
        out->log_bytes_after = r->changed->log_bytes_after;
    }
}

int pt_owner_delete(struct pt_owner *o, const char *table, const struct pt_delete *d,
                    struct pt_changed *out)
{
    Cohort__TokenRequest req;
    Cohort__DeleteRows dr;
    Cohort__TokenResponse *r;
    Cohort__Plan *plan = NULL;
    int ways, rc;

    ways = (d->all ? 1 : 0) + (d->n_ids > 0 ? 1 : 0) + (d->where_plan != NULL ? 1 : 0);
    if (ways != 1 || d->n_ids > PT_DELETE_IDS_MAX || table == NULL || !pt_name_valid(table))
        return PT_ERR_INPUT;
    request(&req, COHORT__TOKEN_REQUEST__BODY_DELETE_ROWS);
    cohort__delete_rows__init(&dr);
    dr.table = (char *)table;
    dr.all = d->all;
    dr.n_ids = d->n_ids;
    dr.ids = (uint64_t *)(uintptr_t)d->ids;
    if (d->where_plan != NULL) {
        if (d->where_plan_len > PLAN_MAX)
            return PT_ERR_TOO_LARGE;
        plan = cohort__plan__unpack(NULL, d->where_plan_len, d->where_plan);
        if (plan == NULL)
            return PT_ERR_INPUT;
        if (plan->table == NULL || strcmp(plan->table, table) != 0 || plan->n_where == 0 ||
            plan->n_group_by > 0 || plan->n_having > 0 || plan->limit != 0) {
            cohort__plan__free_unpacked(plan, NULL);
            return PT_ERR_INPUT;
        }
        dr.n_where = plan->n_where;
        dr.where = plan->where;
    }
    req.delete_rows = &dr;
    rc = call(o, &req, ANY_BODY, &r);
    if (plan != NULL)
        cohort__plan__free_unpacked(plan, NULL);
    if (rc != 0)
        return rc;
    changed_from_pb(out, r);
    cohort__token_response__free_unpacked(r, NULL);
    return 0;
}

int pt_owner_compact(struct pt_owner *o, struct pt_changed *out)
{
    Cohort__TokenRequest req;
    Cohort__Compact c;
    Cohort__TokenResponse *r;
    int rc;

    request(&req, COHORT__TOKEN_REQUEST__BODY_COMPACT);
    cohort__compact__init(&c);
    req.compact = &c;
    if ((rc = call(o, &req, ANY_BODY, &r)) != 0)
        return rc;
    changed_from_pb(out, r);
    cohort__token_response__free_unpacked(r, NULL);
    return 0;
}

/* -------------------------------------------------------------- policy */

int pt_policy_from_pb(struct pt_policy *q, const Cohort__ConsentPolicy *p)
{
    memset(q, 0, sizeof *q);
    if (p->n_authorities > PT_POLICY_KEYS_MAX || p->n_researchers > PT_POLICY_KEYS_MAX ||
        p->n_studies > PT_POLICY_NAMES_MAX || p->n_tables > PT_POLICY_NAMES_MAX)
        return PT_ERR_TOO_LARGE;
    for (size_t i = 0; i < p->n_authorities; i++) {
        if (p->authorities[i].len != PT_KEY_LEN)
            return PT_ERR_MALFORMED;
        memcpy(q->authorities[i], p->authorities[i].data, PT_KEY_LEN);
    }
    for (size_t i = 0; i < p->n_researchers; i++) {
        if (p->researchers[i].len != PT_KEY_LEN)
            return PT_ERR_MALFORMED;
        memcpy(q->researchers[i], p->researchers[i].data, PT_KEY_LEN);
    }
    for (size_t i = 0; i < p->n_studies; i++)
        copy_text(q->studies[i], sizeof q->studies[i], p->studies[i]);
    for (size_t i = 0; i < p->n_tables; i++)
        copy_text(q->tables[i], sizeof q->tables[i], p->tables[i]);
    q->n_authorities = p->n_authorities;
    q->n_researchers = p->n_researchers;
    q->n_studies = p->n_studies;
    q->n_tables = p->n_tables;
    q->min_participants = p->min_participants;
    q->min_group_size = p->min_group_size;
    q->require_dp = p->require_dp;
    q->epsilon_per_study = p->epsilon_per_study;
    q->epsilon_total = p->epsilon_total;
    q->set_at = p->set_at;
    return 0;
}

int pt_policy_to_pb(struct pt_policy_pb *pb, const struct pt_policy *p)
{
    Cohort__ConsentPolicy *cp = &pb->cp;

    if (p->n_authorities > PT_POLICY_KEYS_MAX || p->n_researchers > PT_POLICY_KEYS_MAX ||
        p->n_studies > PT_POLICY_NAMES_MAX || p->n_tables > PT_POLICY_NAMES_MAX)
        return PT_ERR_INPUT;
    cohort__consent_policy__init(cp);
    for (size_t i = 0; i < p->n_authorities; i++) {
        pb->auth[i].data = (uint8_t *)(uintptr_t)p->authorities[i];
        pb->auth[i].len = PT_KEY_LEN;
    }
    for (size_t i = 0; i < p->n_researchers; i++) {
        pb->res[i].data = (uint8_t *)(uintptr_t)p->researchers[i];
        pb->res[i].len = PT_KEY_LEN;
    }
    for (size_t i = 0; i < p->n_studies; i++)
        pb->studies[i] = (char *)p->studies[i];
    for (size_t i = 0; i < p->n_tables; i++)
        pb->tables[i] = (char *)p->tables[i];
    cp->n_authorities = p->n_authorities;
    cp->authorities = pb->auth;
    cp->n_researchers = p->n_researchers;
    cp->researchers = pb->res;
    cp->n_studies = p->n_studies;
    cp->studies = pb->studies;
    cp->n_tables = p->n_tables;
    cp->tables = pb->tables;
    cp->min_participants = p->min_participants;
    cp->min_group_size = p->min_group_size;
    cp->require_dp = p->require_dp;
    cp->epsilon_per_study = p->epsilon_per_study;
    cp->epsilon_total = p->epsilon_total;
    cp->set_at = p->set_at;
    return 0;
}

int pt_owner_policy_get(struct pt_owner *o, struct pt_policy *out)
{
    Cohort__TokenRequest req;
    Cohort__GetPolicy gp;
    Cohort__TokenResponse *r;
    struct pt_policy *q;
    int rc;

    request(&req, COHORT__TOKEN_REQUEST__BODY_GET_POLICY);
    cohort__get_policy__init(&gp);
    req.get_policy = &gp;
    if ((rc = call(o, &req, COHORT__TOKEN_RESPONSE__BODY_POLICY, &r)) != 0)
        return rc;
    q = calloc(1, sizeof *q);
    if (q == NULL)
        rc = PT_ERR_NOMEM;
    else if (pt_policy_from_pb(q, r->policy) != 0)
        rc = PT_ERR_LINK; /* the token answered what it would never have stored */
    else
        *out = *q;
    free(q);
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

int pt_owner_policy_set(struct pt_owner *o, const struct pt_policy *p)
{
    struct pt_policy_pb pb;
    struct pt_policy q = *p;
    Cohort__TokenRequest req;
    Cohort__SetPolicy sp;
    Cohort__TokenResponse *r;
    int rc;

    if (!(p->epsilon_per_study >= 0) || !(p->epsilon_total >= 0))
        return PT_ERR_INPUT;
    q.set_at = o->now;
    if ((rc = pt_policy_to_pb(&pb, &q)) != 0)
        return rc;
    request(&req, COHORT__TOKEN_REQUEST__BODY_SET_POLICY);
    cohort__set_policy__init(&sp);
    sp.policy = &pb.cp;
    req.set_policy = &sp;
    if ((rc = call(o, &req, ANY_BODY, &r)) != 0)
        return rc;
    cohort__token_response__free_unpacked(r, NULL);
    return 0;
}

/* --------------------------------------------------------------- audit */

static void audit_from_pb(struct pt_audit_entry *e, const Cohort__AuditEntry *pb)
{
    memset(e, 0, sizeof *e);
    e->seq = pb->seq;
    e->time = pb->time;
    if (pb->query_id.len > 0 && pb->query_id.len <= sizeof e->query_id) {
        memcpy(e->query_id, pb->query_id.data, pb->query_id.len);
        e->query_id_len = pb->query_id.len;
    }
    copy_text(e->study, sizeof e->study, pb->study);
    copy_text(e->researcher, sizeof e->researcher, pb->researcher);
    if (pb->researcher_pk.len == PT_KEY_LEN) {
        memcpy(e->researcher_pk, pb->researcher_pk.data, PT_KEY_LEN);
        e->has_researcher_pk = true;
    }
    copy_text(e->table, sizeof e->table, pb->table);
    e->accepted = pb->accepted;
    e->status = pb->status;
    copy_text(e->reason, sizeof e->reason, pb->reason);
    e->epsilon = pb->epsilon;
    copy_text(e->sql, sizeof e->sql, pb->sql);
    copy_text(e->event, sizeof e->event, pb->event);
    if (pb->doc_id.len == sizeof e->object) {
        memcpy(e->object, pb->doc_id.data, sizeof e->object);
        e->has_object = true;
    }
    if (pb->cred_id.len == sizeof e->cred_id) {
        memcpy(e->cred_id, pb->cred_id.data, sizeof e->cred_id);
        e->has_cred = true;
    }
    copy_text(e->app, sizeof e->app, pb->app);
}

int pt_owner_audit(struct pt_owner *o, uint64_t after, uint64_t limit, pt_audit_fn fn, void *ctx,
                   uint64_t *n_entries)
{
    struct pt_audit_entry *e = malloc(sizeof *e);
    uint64_t n = 0;
    int rc = 0;

    if (e == NULL)
        return PT_ERR_NOMEM;
    for (;;) {
        Cohort__TokenRequest req;
        Cohort__ReadAudit ra;
        Cohort__TokenResponse *r;
        const Cohort__AuditPage *page;
        uint64_t left = limit ? limit - n : 0;
        bool more;

        request(&req, COHORT__TOKEN_REQUEST__BODY_READ_AUDIT);
        cohort__read_audit__init(&ra);
        ra.after = after;
        ra.max_entries = left > UINT32_MAX ? UINT32_MAX : (uint32_t)left;
        req.read_audit = &ra;
        if ((rc = call(o, &req, COHORT__TOKEN_RESPONSE__BODY_AUDIT, &r)) != 0)
            break;
        page = r->audit;
        more = page->more;
        if (more && page->n_entries == 0)
            rc = PT_ERR_LINK;
        for (size_t i = 0; i < page->n_entries && rc == 0; i++) {
            if (page->entries[i]->seq <= after) {
                rc = PT_ERR_LINK;
                break;
            }
            audit_from_pb(e, page->entries[i]);
            after = e->seq;
            if (fn != NULL)
                rc = fn(ctx, e);
            if (rc == 0 && ++n == limit)
                more = false;
            if (n == limit)
                break;
        }
        cohort__token_response__free_unpacked(r, NULL);
        if (rc != 0 || !more)
            break;
    }
    free(e);
    if (rc == 0 && n_entries != NULL)
        *n_entries = n;
    return rc;
}

/* ---------------------------------------------------------------- load */

struct pt_load {
    struct pt_owner *o;
    struct pt_schema schema;
    size_t request_max;
    size_t base;           /* bytes of a LoadTable with the schema and `more`, no rows */
    size_t size;           /* bytes of the LoadTable with the pending rows */
    struct pt_value *rows; /* pending: n_rows * n_columns */
    size_t n_rows, cap_rows;
    uint64_t sent_rows; /* rows sent in earlier requests of the batch */
    bool sent;          /* a request of the batch went to the token */
    bool done;          /* committed, or failed: no more requests */
};

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Bytes of one row as a LoadTable field. */
static size_t row_field_len(const struct pt_schema *s, const struct pt_value *values)
{
    Cohort__Value vals[PT_COLUMNS_MAX], *ptrs[PT_COLUMNS_MAX];
    Cohort__Row row;
    size_t n;

    cohort__row__init(&row);
    for (size_t i = 0; i < s->n_columns; i++) {
        value_to_pb(&vals[i], &values[i]);
        ptrs[i] = &vals[i];
    }
    row.n_values = s->n_columns;
    row.values = ptrs;
    n = cohort__row__get_packed_size(&row);
    return 1 + varint_len(n) + n;
}

/* Send the pending rows; more says whether the batch goes on. */
static int load_send(struct pt_load *l, bool more)
{
    const size_t nc = l->schema.n_columns;
    Cohort__Column cols[PT_COLUMNS_MAX], *col_ptrs[PT_COLUMNS_MAX];
    Cohort__TableSchema schema;
    Cohort__TokenRequest req;
    Cohort__LoadTable lt;
    Cohort__TokenResponse *r;
    Cohort__Row *rows = NULL, **row_ptrs = NULL;
    Cohort__Value *vals = NULL, **val_ptrs = NULL;
    int rc = PT_ERR_NOMEM;

    if (l->n_rows > 0) {
        rows = calloc(l->n_rows, sizeof *rows);
        row_ptrs = calloc(l->n_rows, sizeof *row_ptrs);
        vals = calloc(l->n_rows * nc, sizeof *vals);
        val_ptrs = calloc(l->n_rows * nc, sizeof *val_ptrs);
        if (rows == NULL || row_ptrs == NULL || vals == NULL || val_ptrs == NULL)
            goto out;
    }
    for (size_t i = 0; i < l->n_rows; i++) {
        cohort__row__init(&rows[i]);
        for (size_t c = 0; c < nc; c++) {
            value_to_pb(&vals[i * nc + c], &l->rows[i * nc + c]);
            val_ptrs[i * nc + c] = &vals[i * nc + c];
        }
        rows[i].n_values = nc;
        rows[i].values = &val_ptrs[i * nc];
        row_ptrs[i] = &rows[i];
    }
    schema_to_pb(&schema, cols, col_ptrs, &l->schema);
    cohort__load_table__init(&lt);
    lt.schema = &schema;
    lt.n_rows = l->n_rows;
    lt.rows = row_ptrs;
    lt.more = more;
    request(&req, COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE);
    req.load_table = &lt;
    l->sent = true;
    rc = call(l->o, &req, ANY_BODY, &r);
    if (rc == 0)
        cohort__token_response__free_unpacked(r, NULL);
    else
        l->done = true; /* the token dropped the batch */
    l->sent_rows += l->n_rows;
    l->n_rows = 0;
    l->size = l->base;
out:
    free(val_ptrs);
    free(vals);
    free(row_ptrs);
    free(rows);
    return rc;
}

int pt_load_begin(struct pt_load **out, struct pt_owner *o, const struct pt_schema *schema,
                  size_t request_max)
{
    Cohort__Column cols[PT_COLUMNS_MAX], *col_ptrs[PT_COLUMNS_MAX];
    Cohort__TableSchema pb;
    Cohort__LoadTable lt;
    struct pt_load *l;

    if (schema->n_columns == 0 || schema->n_columns > PT_COLUMNS_MAX ||
        !pt_name_valid(schema->name) || request_max < PT_LOAD_REQUEST_MIN ||
        request_max > PT_LOAD_REQUEST_MAX)
        return PT_ERR_INPUT;
    for (size_t i = 0; i < schema->n_columns; i++)
        if (!pt_name_valid(schema->columns[i].name) || !valid_type(schema->columns[i].type) ||
            schema->columns[i].scale > PT_SCALE_MAX)
            return PT_ERR_INPUT;
    l = calloc(1, sizeof *l);
    if (l == NULL)
        return PT_ERR_NOMEM;
    l->o = o;
    l->schema = *schema;
    l->request_max = request_max;
    schema_to_pb(&pb, cols, col_ptrs, schema);
    cohort__load_table__init(&lt);
    lt.schema = &pb;
    lt.more = true;
    /* The request around it: now (at most 11 bytes), the body's tag and length (6). */
    l->base = cohort__load_table__get_packed_size(&lt) + 11 + 6;
    l->size = l->base;
    *out = l;
    return 0;
}

int pt_load_row(struct pt_load *l, const struct pt_value *values)
{
    const size_t nc = l->schema.n_columns;
    size_t add;
    int rc;

    if (l->done)
        return PT_ERR_INPUT;
    for (size_t c = 0; c < nc; c++)
        if (!value_fits(&values[c], &l->schema.columns[c]))
            return PT_ERR_INPUT;
    add = row_field_len(&l->schema, values);
    if (l->n_rows > 0 && l->size + add > l->request_max)
        if ((rc = load_send(l, true)) != 0)
            return rc;
    if (l->n_rows == l->cap_rows) {
        size_t cap = l->cap_rows ? l->cap_rows * 2 : 64;
        struct pt_value *bigger = realloc(l->rows, cap * nc * sizeof *bigger);
        if (bigger == NULL)
            return PT_ERR_NOMEM;
        l->rows = bigger;
        l->cap_rows = cap;
    }
    memcpy(&l->rows[l->n_rows * nc], values, nc * sizeof *values);
    l->n_rows++;
    l->size += add;
    return 0;
}

int pt_load_commit(struct pt_load *l, uint64_t *rows)
{
    int rc;

    if (l->done)
        return PT_ERR_INPUT;
    rc = load_send(l, false);
    l->done = true;
    if (rc == 0 && rows != NULL)
        *rows = l->sent_rows;
    return rc;
}

void pt_load_free(struct pt_load *l)
{
    if (l == NULL)
        return;
    if (l->sent && !l->done) {
        /* Any other request drops an open batch: make sure it is dropped now. */
        struct pt_token_info info;
        (void)pt_owner_info(l->o, &info);
    }
    free(l->rows);
    free(l);
}
