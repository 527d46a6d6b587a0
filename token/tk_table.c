/*
 * The owner's tables, in the host's store, as authenticated ciphertext.
 *
 * A record is [length: 4 bytes LE][nonce: 24][XChaCha20-Poly1305 box] whose
 * plaintext is a LoadTable message (the table's schema and a batch of its
 * rows) of at most TK_RECORD_MAX bytes, so that one record always fits in
 * the arena. The associated data is the record's ordinal, so the host cannot
 * reorder records undetected; detecting truncation and rollback needs a
 * counter in secure memory and belongs to the persistent log store, which
 * replaces this module.
 *
 * A table's schema is fixed by its first record; later loads must repeat it
 * exactly. Every row is checked against it before anything is written.
 * Scans decrypt one record at a time, in place, into scratch, whatever the
 * table size, and decode its rows one at a time: decoded rows take many
 * times their bytes, so a record decoded whole could need more RAM than
 * the load that wrote it.
 */
#include "token/tk_int.h"

#define REC_AD "cohort-rec-v1"
#define REC_HDR (4 + TK_NONCE_LEN)

static void rec_ad(uint8_t ad[sizeof(REC_AD) - 1 + 4], uint32_t index)
{
    memcpy(ad, REC_AD, sizeof(REC_AD) - 1);
    ad[sizeof(REC_AD) - 1] = (uint8_t)index;
    ad[sizeof(REC_AD)] = (uint8_t)(index >> 8);
    ad[sizeof(REC_AD) + 1] = (uint8_t)(index >> 16);
    ad[sizeof(REC_AD) + 2] = (uint8_t)(index >> 24);
}

static bool valid_type(int t)
{
    return t == COHORT__VALUE_TYPE__VT_INT || t == COHORT__VALUE_TYPE__VT_DECIMAL ||
           t == COHORT__VALUE_TYPE__VT_TEXT || t == COHORT__VALUE_TYPE__VT_DATE ||
           t == COHORT__VALUE_TYPE__VT_BOOL || t == COHORT__VALUE_TYPE__VT_TIMESTAMP;
}

static int check_schema(const Cohort__TableSchema *s)
{
    size_t i, j, n;
    if (s == NULL || s->name == NULL)
        return TK_ERR_SCHEMA;
    n = strlen(s->name);
    if (n == 0 || n > TK_NAME_MAX || s->n_columns == 0 || s->n_columns > TK_MAX_COLUMNS)
        return TK_ERR_SCHEMA;
    for (i = 0; i < s->n_columns; i++) {
        const Cohort__Column *c = s->columns[i];
        n = c->name ? strlen(c->name) : 0;
        if (n == 0 || n > TK_NAME_MAX || !valid_type(c->type) || c->scale > 18 ||
            (c->scale != 0 && c->type != COHORT__VALUE_TYPE__VT_DECIMAL))
            return TK_ERR_SCHEMA;
        for (j = 0; j < i; j++)
            if (strcmp(s->columns[j]->name, c->name) == 0)
                return TK_ERR_SCHEMA;
    }
    return TK_OK;
}

static bool same_schema(const Cohort__TableSchema *a, const Cohort__TableSchema *b)
{
    size_t i;
    if (a->n_columns != b->n_columns)
        return false;
    for (i = 0; i < a->n_columns; i++)
        if (strcmp(a->columns[i]->name, b->columns[i]->name) != 0 ||
            a->columns[i]->type != b->columns[i]->type ||
            a->columns[i]->scale != b->columns[i]->scale)
            return false;
    return true;
}

static int check_row(const Cohort__TableSchema *s, const Cohort__Row *r)
{
    size_t i;
    if (r->n_values != s->n_columns)
        return TK_ERR_SCHEMA;
    for (i = 0; i < r->n_values; i++) {
        const Cohort__Value *v = r->values[i];
        const Cohort__Column *c = s->columns[i];
        if (v->type == COHORT__VALUE_TYPE__VT_NULL)
            continue;
        if (v->type != c->type)
            return TK_ERR_SCHEMA;
        if (v->type == COHORT__VALUE_TYPE__VT_TEXT && v->s.len > TK_TEXT_MAX)
            return TK_ERR_TOO_LARGE;
        if (v->type == COHORT__VALUE_TYPE__VT_DECIMAL && v->scale != c->scale)
            return TK_ERR_SCHEMA;
        if (v->type == COHORT__VALUE_TYPE__VT_BOOL && v->i != 0 && v->i != 1)
            return TK_ERR_SCHEMA;
    }
    return TK_OK;
}

/*
 * What each_record does with a record: schema() sees the record's schema
 * and says whether row() should see its rows, which it then does one at a
 * time.
 */
struct rec_visit {
    int (*schema)(void *ctx, const Cohort__TableSchema *schema, bool *rows);
    int (*row)(void *ctx, const Cohort__TableSchema *schema, const Cohort__Row *row);
    void *ctx;
};

/*
 * Walk one record's plaintext (a LoadTable message): decode its schema,
 * then, if asked, each row in turn, releasing each before the next. A
 * record's decoded rows take many times its bytes, so they are never all
 * in RAM at once: what the token could load, it can always scan again.
 */
static int visit_record(struct tk_arena *a, const uint8_t *plain, size_t len,
                        const struct rec_visit *v)
{
    Cohort__TableSchema *schema = NULL;
    struct tk_wfield f;
    size_t pos = 0;
    bool rows = false;
    int rc = TK_OK, more;

    while ((more = tk_wire_next(plain, len, &pos, &f)) == 1) {
        if (f.field == 1 && f.wire_type == 2 && schema == NULL) {
            schema = (Cohort__TableSchema *)tk_unpack(a, &cohort__table_schema__descriptor, f.data,
                                                      f.len, &rc);
            if (schema == NULL)
                return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_STORE;
        } else if (f.field != 2 || f.wire_type != 2) {
            return TK_ERR_STORE;
        }
    }
    if (more < 0 || schema == NULL || schema->name == NULL)
        return TK_ERR_STORE;
    if ((rc = v->schema(v->ctx, schema, &rows)) != TK_OK || !rows)
        return rc;
    pos = 0;
    while (rc == TK_OK && tk_wire_next(plain, len, &pos, &f) == 1) {
        size_t mark = tk_arena_mark(a);
        Cohort__Row *row;
        if (f.field != 2)
            continue;
        row = (Cohort__Row *)tk_unpack(a, &cohort__row__descriptor, f.data, f.len, &rc);
        if (row == NULL)
            rc = rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_STORE;
        else
            rc = v->row(v->ctx, schema, row);
        tk_arena_release(a, mark);
    }
    return rc;
}

/* Decrypt each record in turn, in place, and visit it. */
static int each_record(struct tk_token *tk, struct tk_arena *a, const struct rec_visit *v)
{
    const struct tk_store *st = &tk->store;
    uint64_t off = 0, end = st->size(st->ctx);
    uint32_t index;
    int rc = TK_OK;

    for (index = 0; index < tk->store_records; index++) {
        uint8_t hdr[REC_HDR], ad[sizeof(REC_AD) - 1 + 4];
        size_t mark = tk_arena_mark(a), len;
        uint8_t *box;

        if (end - off < REC_HDR || st->read(st->ctx, off, hdr, REC_HDR) != 0)
            return TK_ERR_STORE;
        len = (size_t)hdr[0] | (size_t)hdr[1] << 8 | (size_t)hdr[2] << 16 | (size_t)hdr[3] << 24;
        if (len < TK_TAG_LEN || len > TK_RECORD_MAX + TK_TAG_LEN || end - off - REC_HDR < len)
            return TK_ERR_STORE;
        box = tk_arena_scratch(a, len);
        if (box == NULL)
            return TK_ERR_NO_MEMORY;
        if (st->read(st->ctx, off + REC_HDR, box, len) != 0)
            return TK_ERR_STORE;
        rec_ad(ad, index);
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(box, NULL, NULL, box, len, ad, sizeof ad,
                                                       hdr + 4, tk->storage_key) != 0)
            return TK_ERR_STORE;
        rc = visit_record(a, box, len - TK_TAG_LEN, v);
        sodium_memzero(box, len - TK_TAG_LEN);
        tk_arena_release(a, mark);
        if (rc != TK_OK)
            return rc;
        off += REC_HDR + len;
    }
    return TK_OK;
}

struct find_ctx {
    const Cohort__TableSchema *want;
    int found; /* 0 none, 1 same schema, -1 different */
};

static int find_schema(void *ctx, const Cohort__TableSchema *schema, bool *rows)
{
    struct find_ctx *f = ctx;
    (void)rows;
    if (strcmp(schema->name, f->want->name) == 0 && f->found == 0)
        f->found = same_schema(schema, f->want) ? 1 : -1;
    return TK_OK;
}

static int append_record(struct tk_token *tk, struct tk_arena *a, const Cohort__LoadTable *rec)
{
    size_t n = cohort__load_table__get_packed_size(rec), mark = tk_arena_mark(a);
    uint8_t *buf, ad[sizeof(REC_AD) - 1 + 4];
    int rc = TK_OK;

    if (n > TK_RECORD_MAX)
        return TK_ERR_TOO_LARGE;
    buf = tk_arena_scratch(a, REC_HDR + n + TK_TAG_LEN);
    if (buf == NULL)
        return TK_ERR_NO_MEMORY;
    buf[0] = (uint8_t)(n + TK_TAG_LEN);
    buf[1] = (uint8_t)((n + TK_TAG_LEN) >> 8);
    buf[2] = (uint8_t)((n + TK_TAG_LEN) >> 16);
    buf[3] = 0;
    randombytes_buf(buf + 4, TK_NONCE_LEN);
    cohort__load_table__pack(rec, buf + REC_HDR);
    rec_ad(ad, tk->store_records);
    crypto_aead_xchacha20poly1305_ietf_encrypt(buf + REC_HDR, NULL, buf + REC_HDR, n, ad, sizeof ad,
                                               NULL, buf + 4, tk->storage_key);
    if (tk->store.append(tk->store.ctx, buf, REC_HDR + n + TK_TAG_LEN) != 0)
        rc = TK_ERR_STORE;
    else
        tk->store_records++;
    tk_arena_release(a, mark);
    return rc;
}

int tk_table_load(struct tk_token *tk, struct tk_arena *a, const Cohort__LoadTable *req)
{
    struct find_ctx f = {req->schema, 0};
    const struct rec_visit v = {find_schema, NULL, &f};
    Cohort__LoadTable part;
    size_t i, start, base;
    int rc;

    if ((rc = check_schema(req->schema)) != TK_OK)
        return rc;
    for (i = 0; i < req->n_rows; i++)
        if ((rc = check_row(req->schema, req->rows[i])) != TK_OK)
            return rc;
    if ((rc = each_record(tk, a, &v)) != TK_OK)
        return rc;
    if (f.found < 0)
        return TK_ERR_SCHEMA;

    /* Cut the rows into records that fit; check all sizes before writing. */
    cohort__load_table__init(&part);
    part.schema = req->schema;
    base = cohort__load_table__get_packed_size(&part);
    if (base > TK_RECORD_MAX)
        return TK_ERR_TOO_LARGE;
    for (i = 0; i < req->n_rows; i++)
        if (base + tk_field_len(2, cohort__row__get_packed_size(req->rows[i])) > TK_RECORD_MAX)
            return TK_ERR_TOO_LARGE;
    if (req->n_rows == 0)
        return f.found ? TK_OK : append_record(tk, a, &part);
    for (start = 0; start < req->n_rows;) {
        size_t size = base, end = start;
        while (end < req->n_rows) {
            size_t add = tk_field_len(2, cohort__row__get_packed_size(req->rows[end]));
            if (size + add > TK_RECORD_MAX)
                break;
            size += add;
            end++;
        }
        part.rows = req->rows + start;
        part.n_rows = end - start;
        if ((rc = append_record(tk, a, &part)) != TK_OK)
            return rc;
        start = end;
    }
    return TK_OK;
}

struct scan_ctx {
    const char *table;
    tk_row_fn fn;
    void *ctx;
};

static int scan_schema(void *ctx, const Cohort__TableSchema *schema, bool *rows)
{
    struct scan_ctx *s = ctx;
    *rows = strcmp(schema->name, s->table) == 0;
    return TK_OK;
}

static int scan_row(void *ctx, const Cohort__TableSchema *schema, const Cohort__Row *row)
{
    struct scan_ctx *s = ctx;
    return s->fn(s->ctx, schema, row);
}

int tk_table_scan(struct tk_token *tk, struct tk_arena *a, const char *table, tk_row_fn fn,
                  void *ctx)
{
    struct scan_ctx s = {table, fn, ctx};
    const struct rec_visit v = {scan_schema, scan_row, &s};
    return each_record(tk, a, &v);
}

struct exists_ctx {
    const char *table;
    bool found;
};

static int find_table(void *ctx, const Cohort__TableSchema *schema, bool *rows)
{
    struct exists_ctx *e = ctx;
    (void)rows;
    if (strcmp(schema->name, e->table) == 0)
        e->found = true;
    return TK_OK;
}

int tk_table_exists(struct tk_token *tk, struct tk_arena *a, const char *table, bool *found)
{
    struct exists_ctx e = {table, false};
    const struct rec_visit v = {find_table, NULL, &e};
    int rc = each_record(tk, a, &v);
    *found = e.found;
    return rc;
}

struct names_ctx {
    char **names;
    size_t max, n;
};

static int add_name(void *ctx, const Cohort__TableSchema *schema, bool *rows)
{
    struct names_ctx *c = ctx;
    size_t i;
    (void)rows;
    for (i = 0; i < c->n; i++)
        if (strcmp(c->names[i], schema->name) == 0)
            return TK_OK;
    if (c->n < c->max) {
        size_t len = strlen(schema->name);
        memcpy(c->names[c->n], schema->name, len + 1);
        c->n++;
    }
    return TK_OK;
}

int tk_table_names(struct tk_token *tk, struct tk_arena *a, char **names, size_t max, size_t *n)
{
    struct names_ctx c = {names, max, 0};
    const struct rec_visit v = {add_name, NULL, &c};
    int rc = each_record(tk, a, &v);
    *n = c.n;
    return rc;
}
