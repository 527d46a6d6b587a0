/*
 * A fake token behind a struct pt_link, for tests of the owner's side
 * (pt_owner.c, pt_import.c, the cohort-participant commands) that must not
 * depend on the token core.
 *
 * It keeps what the owner's requests need, in plain memory: tables with
 * their rows (a LoadTable batch with `more` is held apart and committed
 * with its last request; any other request or a failure drops it), a
 * consent policy, an audit log the test fills, and a record of every
 * request it was sent. Knobs make it refuse: requests over a size (as a
 * token short of RAM would: TK_ERR_NO_MEMORY), or the next request with a
 * given status and reason. It checks the messages it gets as strictly as
 * it can, and fails the test on anything a real token would refuse as
 * malformed.
 */
#ifndef COHORT_PT_FAKE_H
#define COHORT_PT_FAKE_H

#include <stdlib.h>
#include <string.h>

#include "participant/pt_int.h"
#include "participant/pt_owner.h"
#include "proto/cohort.pb-c.h"

#define FAKE_TABLES 8
#define FAKE_ROWS 4096
#define FAKE_AUDIT 64
#define FAKE_REQUESTS 1024

struct fake_row {
    uint64_t id;
    struct pt_value v[PT_COLUMNS_MAX];
};

struct fake_table {
    struct pt_schema schema;
    struct fake_row *rows;
    size_t n_rows;
};

struct fake_token {
    struct fake_table tables[FAKE_TABLES];
    size_t n_tables;
    uint64_t next_id;
    /* The open batch: its table's schema and its rows so far. */
    bool batch_open;
    struct pt_schema batch_schema;
    struct fake_row *batch;
    size_t n_batch;
    struct pt_policy policy;
    bool has_policy;
    struct pt_audit_entry audit[FAKE_AUDIT];
    size_t n_audit;
    /* Knobs. */
    size_t refuse_over; /* requests over this many bytes: TK_ERR_NO_MEMORY (0: none) */
    int refuse_status;  /* the next request gets this status (0: none) */
    const char *refuse_reason;
    uint32_t page_rows;  /* rows per ReadRows page at most (0: 3) */
    uint32_t page_audit; /* entries per ReadAudit page at most (0: 2) */
    bool provisioned;
    /* What it was sent. */
    uint32_t bodies[FAKE_REQUESTS];
    size_t sizes[FAKE_REQUESTS];
    bool mores[FAKE_REQUESTS];
    size_t n_requests;
    size_t load_requests;
    size_t largest_load;
    Cohort__DeleteRows *last_delete; /* a copy, for the test to look at */
    uint8_t *resp;
    size_t resp_len;
};

static inline struct fake_token *fake_new(void)
{
    struct fake_token *f = calloc(1, sizeof *f);
    if (f == NULL)
        abort();
    f->batch = calloc(FAKE_ROWS, sizeof *f->batch);
    if (f->batch == NULL)
        abort();
    for (size_t i = 0; i < FAKE_TABLES; i++) {
        f->tables[i].rows = calloc(FAKE_ROWS, sizeof(struct fake_row));
        if (f->tables[i].rows == NULL)
            abort();
    }
    f->next_id = 1;
    return f;
}

static inline void fake_free(struct fake_token *f)
{
    if (f == NULL)
        return;
    for (size_t i = 0; i < FAKE_TABLES; i++)
        free(f->tables[i].rows);
    free(f->batch);
    if (f->last_delete != NULL)
        cohort__delete_rows__free_unpacked(f->last_delete, NULL);
    free(f->resp);
    free(f);
}

static inline struct fake_table *fake_table(struct fake_token *f, const char *name)
{
    for (size_t i = 0; i < f->n_tables; i++)
        if (strcmp(f->tables[i].schema.name, name) == 0)
            return &f->tables[i];
    return NULL;
}

static inline int fake_schema(struct pt_schema *s, const Cohort__TableSchema *pb)
{
    memset(s, 0, sizeof *s);
    if (pb == NULL || pb->name == NULL || strlen(pb->name) == 0 || strlen(pb->name) > PT_NAME_MAX ||
        pb->n_columns == 0 || pb->n_columns > PT_COLUMNS_MAX)
        return TK_ERR_SCHEMA;
    strcpy(s->name, pb->name);
    for (size_t i = 0; i < pb->n_columns; i++) {
        if (strlen(pb->columns[i]->name) == 0 || strlen(pb->columns[i]->name) > PT_NAME_MAX)
            return TK_ERR_SCHEMA;
        strcpy(s->columns[i].name, pb->columns[i]->name);
        s->columns[i].type = (enum pt_type)pb->columns[i]->type;
        s->columns[i].scale = pb->columns[i]->scale;
    }
    s->n_columns = pb->n_columns;
    return 0;
}

static inline int fake_row(struct fake_row *r, const struct pt_schema *s, const Cohort__Row *pb)
{
    if (pb->n_values != s->n_columns)
        return TK_ERR_SCHEMA;
    for (size_t i = 0; i < s->n_columns; i++) {
        const Cohort__Value *v = pb->values[i];
        struct pt_value *o = &r->v[i];
        memset(o, 0, sizeof *o);
        if (v->type == COHORT__VALUE_TYPE__VT_NULL)
            continue;
        if ((int)v->type != (int)s->columns[i].type)
            return TK_ERR_SCHEMA;
        if (v->type == COHORT__VALUE_TYPE__VT_DECIMAL && v->scale != s->columns[i].scale)
            return TK_ERR_SCHEMA;
        if (v->s.len > PT_TEXT_MAX)
            return TK_ERR_TOO_LARGE;
        o->type = (enum pt_type)v->type;
        o->i = v->i;
        o->scale = v->scale;
        o->len = v->s.len;
        if (v->s.len)
            memcpy(o->s, v->s.data, v->s.len);
    }
    return 0;
}

static inline void fake_value_pb(Cohort__Value *pb, const struct pt_value *v)
{
    cohort__value__init(pb);
    pb->type = (Cohort__ValueType)v->type;
    pb->i = v->i;
    pb->scale = v->type == PT_DECIMAL ? v->scale : 0;
    if (v->type == PT_TEXT) {
        pb->s.data = (uint8_t *)v->s;
        pb->s.len = v->len;
    }
}

/* A schema message over caller-provided storage. */
static inline void fake_schema_pb(Cohort__TableSchema *pb, Cohort__Column *cols,
                                  Cohort__Column **ptrs, const struct pt_schema *s)
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

static inline int fake_load(struct fake_token *f, const Cohort__LoadTable *lt)
{
    struct pt_schema s;
    struct fake_table *t;
    int rc;

    if ((rc = fake_schema(&s, lt->schema)) != 0)
        return rc;
    t = fake_table(f, s.name);
    if (t != NULL && memcmp(&t->schema, &s, sizeof s) != 0)
        return TK_ERR_SCHEMA;
    if (f->batch_open && memcmp(&f->batch_schema, &s, sizeof s) != 0)
        return TK_ERR_SCHEMA;
    if (!f->batch_open) {
        f->batch_schema = s;
        f->n_batch = 0;
        f->batch_open = true;
    }
    for (size_t i = 0; i < lt->n_rows; i++) {
        if (f->n_batch == FAKE_ROWS)
            return TK_ERR_NO_MEMORY;
        if ((rc = fake_row(&f->batch[f->n_batch++], &s, lt->rows[i])) != 0)
            return rc;
    }
    if (lt->more)
        return 0;
    /* Commit the batch. */
    if (t == NULL) {
        if (f->n_tables == FAKE_TABLES)
            return TK_ERR_NO_MEMORY;
        t = &f->tables[f->n_tables++];
        t->schema = s;
        t->n_rows = 0;
    }
    if (t->n_rows + f->n_batch > FAKE_ROWS)
        return TK_ERR_NO_MEMORY;
    for (size_t i = 0; i < f->n_batch; i++) {
        t->rows[t->n_rows] = f->batch[i];
        t->rows[t->n_rows++].id = f->next_id++;
    }
    f->batch_open = false;
    return 0;
}

static inline void fake_respond(struct fake_token *f, Cohort__TokenResponse *r)
{
    size_t n = cohort__token_response__get_packed_size(r);
    free(f->resp);
    f->resp = malloc(n ? n : 1);
    if (f->resp == NULL)
        abort();
    cohort__token_response__pack(r, f->resp);
    f->resp_len = n;
}

static inline int fake_transact(void *ctx, const uint8_t *req, size_t req_len, const uint8_t **resp,
                                size_t *resp_len)
{
    struct fake_token *f = ctx;
    Cohort__TokenRequest *q = cohort__token_request__unpack(NULL, req_len, req);
    Cohort__TokenResponse r = COHORT__TOKEN_RESPONSE__INIT;
    /* Response bodies, and what they point to. */
    Cohort__TokenInfo info = COHORT__TOKEN_INFO__INIT;
    Cohort__CertRequest csr = COHORT__CERT_REQUEST__INIT;
    Cohort__TableList list = COHORT__TABLE_LIST__INIT;
    Cohort__TableSummary sums[FAKE_TABLES], *sum_ptrs[FAKE_TABLES];
    Cohort__TableSchema schemas[FAKE_TABLES];
    static Cohort__Column cols[FAKE_TABLES][PT_COLUMNS_MAX];
    static Cohort__Column *col_ptrs[FAKE_TABLES][PT_COLUMNS_MAX];
    Cohort__RowPage page = COHORT__ROW_PAGE__INIT;
    static Cohort__Row rows[FAKE_ROWS];
    static Cohort__Row *row_ptrs[FAKE_ROWS];
    static Cohort__Value vals[FAKE_ROWS][PT_COLUMNS_MAX];
    static Cohort__Value *val_ptrs[FAKE_ROWS][PT_COLUMNS_MAX];
    static uint64_t ids[FAKE_ROWS];
    Cohort__Changed changed = COHORT__CHANGED__INIT;
    struct pt_policy_pb pol;
    Cohort__AuditPage apage = COHORT__AUDIT_PAGE__INIT;
    Cohort__AuditEntry entries[FAKE_AUDIT], *entry_ptrs[FAKE_AUDIT];
    static uint8_t pk[32] = {1, 2, 3}, box[32] = {4, 5, 6}, sig[64];
    int status = 0;
    uint32_t body;

    if (q == NULL)
        abort(); /* the owner's side always sends a decodable request */
    body = (uint32_t)q->body_case;
    if (f->n_requests < FAKE_REQUESTS) {
        f->bodies[f->n_requests] = body;
        f->sizes[f->n_requests] = req_len;
        f->mores[f->n_requests] =
            body == COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE && q->load_table->more;
        f->n_requests++;
    }
    if (body == COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE) {
        f->load_requests++;
        if (req_len > f->largest_load)
            f->largest_load = req_len;
    }
    if (f->refuse_status != 0) {
        status = f->refuse_status;
        r.reason = (char *)(f->refuse_reason ? f->refuse_reason : "");
        f->refuse_status = 0;
        f->batch_open = false;
        goto done;
    }
    if (f->refuse_over != 0 && req_len > f->refuse_over) {
        status = TK_ERR_NO_MEMORY;
        f->batch_open = false;
        goto done;
    }
    if (body != COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE)
        f->batch_open = false; /* any other request drops an open batch */
    switch (q->body_case) {
    case COHORT__TOKEN_REQUEST__BODY_INFO:
        info.provisioned = f->provisioned;
        info.sign_pk.data = pk;
        info.sign_pk.len = 32;
        info.arena_size = 65536;
        r.body_case = COHORT__TOKEN_RESPONSE__BODY_INFO;
        r.info = &info;
        break;
    case COHORT__TOKEN_REQUEST__BODY_PROVISION_BEGIN:
        csr.subject = q->provision_begin->subject;
        csr.sign_pk.data = pk;
        csr.sign_pk.len = 32;
        csr.box_pk.data = box;
        csr.box_pk.len = 32;
        csr.signature.data = sig;
        csr.signature.len = 64;
        r.body_case = COHORT__TOKEN_RESPONSE__BODY_CERT_REQUEST;
        r.cert_request = &csr;
        break;
    case COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE:
        status = fake_load(f, q->load_table);
        if (status != 0)
            f->batch_open = false;
        break;
    case COHORT__TOKEN_REQUEST__BODY_LIST_TABLES:
        for (size_t i = 0; i < f->n_tables; i++) {
            cohort__table_summary__init(&sums[i]);
            fake_schema_pb(&schemas[i], cols[i], col_ptrs[i], &f->tables[i].schema);
            sums[i].schema = &schemas[i];
            sums[i].rows = f->tables[i].n_rows;
            sum_ptrs[i] = &sums[i];
        }
        list.n_tables = f->n_tables;
        list.tables = sum_ptrs;
        r.body_case = COHORT__TOKEN_RESPONSE__BODY_TABLES;
        r.tables = &list;
        break;
    case COHORT__TOKEN_REQUEST__BODY_READ_ROWS: {
        struct fake_table *t = fake_table(f, q->read_rows->table);
        uint32_t max = f->page_rows ? f->page_rows : 3;
        size_t n = 0, i;
        if (t == NULL) {
            status = TK_ERR_NOT_FOUND;
            break;
        }
        if (q->read_rows->max_rows != 0 && q->read_rows->max_rows < max)
            max = q->read_rows->max_rows;
        fake_schema_pb(&schemas[0], cols[0], col_ptrs[0], &t->schema);
        for (i = 0; i < t->n_rows && n < max; i++) {
            if (t->rows[i].id <= q->read_rows->after_id)
                continue;
            cohort__row__init(&rows[n]);
            for (size_t c = 0; c < t->schema.n_columns; c++) {
                fake_value_pb(&vals[n][c], &t->rows[i].v[c]);
                val_ptrs[n][c] = &vals[n][c];
            }
            rows[n].n_values = t->schema.n_columns;
            rows[n].values = val_ptrs[n];
            row_ptrs[n] = &rows[n];
            ids[n++] = t->rows[i].id;
        }
        for (; i < t->n_rows; i++)
            if (t->rows[i].id > q->read_rows->after_id)
                page.more = true;
        page.schema = &schemas[0];
        page.n_ids = page.n_rows = n;
        page.ids = ids;
        page.rows = row_ptrs;
        r.body_case = COHORT__TOKEN_RESPONSE__BODY_ROWS;
        r.rows = &page;
        break;
    }
    case COHORT__TOKEN_REQUEST__BODY_DELETE_ROWS: {
        const Cohort__DeleteRows *d = q->delete_rows;
        struct fake_table *t = fake_table(f, d->table);
        size_t kept = 0, before;
        uint8_t *copy;
        size_t len = cohort__delete_rows__get_packed_size(d);
        if (f->last_delete != NULL)
            cohort__delete_rows__free_unpacked(f->last_delete, NULL);
        copy = malloc(len ? len : 1);
        cohort__delete_rows__pack(d, copy);
        f->last_delete = cohort__delete_rows__unpack(NULL, len, copy);
        free(copy);
        if (t == NULL) {
            status = TK_ERR_NOT_FOUND;
            break;
        }
        for (size_t k = 0; k < d->n_ids && status == 0; k++) {
            bool known = false; /* as a token: an unknown id deletes nothing */
            for (size_t i = 0; i < t->n_rows; i++)
                known |= d->ids[k] == t->rows[i].id;
            if (!known)
                status = TK_ERR_NOT_FOUND;
        }
        if (status != 0)
            break;
        before = t->n_rows;
        for (size_t i = 0; i < t->n_rows; i++) {
            bool del = d->all;
            for (size_t k = 0; k < d->n_ids; k++)
                del |= d->ids[k] == t->rows[i].id;
            if (!del)
                t->rows[kept++] = t->rows[i];
        }
        t->n_rows = kept;
        changed.rows = before - kept;
        changed.log_bytes_before = 1000;
        changed.log_bytes_after = 1000 - 10 * changed.rows;
        if (d->all) {
            size_t k = (size_t)(t - f->tables);
            struct fake_row *keep = t->rows;
            memmove(&f->tables[k], &f->tables[k + 1], (f->n_tables - k - 1) * sizeof *t);
            f->n_tables--;
            f->tables[f->n_tables].rows = keep;
            f->tables[f->n_tables].n_rows = 0;
        }
        r.body_case = COHORT__TOKEN_RESPONSE__BODY_CHANGED;
        r.changed = &changed;
        break;
    }
    case COHORT__TOKEN_REQUEST__BODY_COMPACT:
        changed.log_bytes_before = 1000;
        changed.log_bytes_after = 600;
        r.body_case = COHORT__TOKEN_RESPONSE__BODY_CHANGED;
        r.changed = &changed;
        break;
    case COHORT__TOKEN_REQUEST__BODY_SET_POLICY: {
        const Cohort__ConsentPolicy *p = q->set_policy->policy;
        if (p == NULL || pt_policy_from_pb(&f->policy, p) != 0) {
            memset(&f->policy, 0, sizeof f->policy);
            status = TK_ERR_TOO_LARGE;
            break;
        }
        f->policy.set_at = q->now;
        f->has_policy = true;
        break;
    }
    case COHORT__TOKEN_REQUEST__BODY_GET_POLICY: {
        if (pt_policy_to_pb(&pol, &f->policy) != 0)
            abort(); /* the fake stored only what fits */
        r.body_case = COHORT__TOKEN_RESPONSE__BODY_POLICY;
        r.policy = &pol.cp;
        break;
    }
    case COHORT__TOKEN_REQUEST__BODY_READ_AUDIT: {
        uint32_t max = f->page_audit ? f->page_audit : 2;
        size_t n = 0, i;
        if (q->read_audit->max_entries != 0 && q->read_audit->max_entries < max)
            max = q->read_audit->max_entries;
        for (i = 0; i < f->n_audit && n < max; i++) {
            const struct pt_audit_entry *e = &f->audit[i];
            Cohort__AuditEntry *pb = &entries[n];
            if (e->seq <= q->read_audit->after)
                continue;
            cohort__audit_entry__init(pb);
            pb->seq = e->seq;
            pb->time = e->time;
            pb->query_id.data = (uint8_t *)e->query_id;
            pb->query_id.len = e->query_id_len;
            pb->study = (char *)e->study;
            pb->researcher = (char *)e->researcher;
            if (e->has_researcher_pk) {
                pb->researcher_pk.data = (uint8_t *)e->researcher_pk;
                pb->researcher_pk.len = 32;
            }
            pb->table = (char *)e->table;
            pb->accepted = e->accepted;
            pb->status = e->status;
            pb->reason = (char *)e->reason;
            pb->epsilon = e->epsilon;
            pb->sql = (char *)e->sql;
            pb->event = (char *)e->event;
            entry_ptrs[n++] = pb;
        }
        for (; i < f->n_audit; i++)
            if (f->audit[i].seq > q->read_audit->after)
                apage.more = true;
        apage.n_entries = n;
        apage.entries = entry_ptrs;
        r.body_case = COHORT__TOKEN_RESPONSE__BODY_AUDIT;
        r.audit = &apage;
        break;
    }
    default:
        status = TK_ERR_MALFORMED;
        break;
    }
done:
    r.status = status;
    if (status != 0)
        r.body_case = COHORT__TOKEN_RESPONSE__BODY__NOT_SET;
    fake_respond(f, &r);
    cohort__token_request__free_unpacked(q, NULL);
    *resp = f->resp;
    *resp_len = f->resp_len;
    return 0;
}

static inline struct pt_link fake_link(struct fake_token *f)
{
    struct pt_link l = {f, fake_transact};
    return l;
}

#endif
