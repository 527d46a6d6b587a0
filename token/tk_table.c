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
 * Scans decrypt one record at a time into scratch, whatever the table size.
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

typedef int (*rec_fn)(void *ctx, const Cohort__LoadTable *rec);

/* Decrypt and decode each record in turn. */
static int each_record(struct tk_token *tk, struct tk_arena *a, rec_fn fn, void *ctx)
{
    const struct tk_store *st = &tk->store;
    uint64_t off = 0, end = st->size(st->ctx);
    uint32_t index;
    int rc = TK_OK;

    for (index = 0; index < tk->store_records; index++) {
        uint8_t hdr[REC_HDR], ad[sizeof(REC_AD) - 1 + 4];
        size_t mark = tk_arena_mark(a), len;
        uint8_t *box, *plain;
        Cohort__LoadTable *rec;

        if (end - off < REC_HDR || st->read(st->ctx, off, hdr, REC_HDR) != 0)
            return TK_ERR_STORE;
        len = (size_t)hdr[0] | (size_t)hdr[1] << 8 | (size_t)hdr[2] << 16 | (size_t)hdr[3] << 24;
        if (len < TK_TAG_LEN || len > TK_RECORD_MAX + TK_TAG_LEN || end - off - REC_HDR < len)
            return TK_ERR_STORE;
        box = tk_arena_scratch(a, len);
        plain = tk_arena_scratch(a, len);
        if (box == NULL || plain == NULL)
            return TK_ERR_NO_MEMORY;
        if (st->read(st->ctx, off + REC_HDR, box, len) != 0)
            return TK_ERR_STORE;
        rec_ad(ad, index);
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(plain, NULL, NULL, box, len, ad, sizeof ad,
                                                       hdr + 4, tk->storage_key) != 0)
            return TK_ERR_STORE;
        rec = (Cohort__LoadTable *)tk_unpack(a, &cohort__load_table__descriptor, plain,
                                              len - TK_TAG_LEN, &rc);
        if (rec == NULL || rec->schema == NULL)
            return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_STORE;
        rc = fn(ctx, rec);
        sodium_memzero(plain, len - TK_TAG_LEN);
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

static int find_schema(void *ctx, const Cohort__LoadTable *rec)
{
    struct find_ctx *f = ctx;
    if (strcmp(rec->schema->name, f->want->name) == 0 && f->found == 0)
        f->found = same_schema(rec->schema, f->want) ? 1 : -1;
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
    crypto_aead_xchacha20poly1305_ietf_encrypt(buf + REC_HDR, NULL, buf + REC_HDR, n, ad,
                                               sizeof ad, NULL, buf + 4, tk->storage_key);
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
    Cohort__LoadTable part;
    size_t i, start, base;
    int rc;

    if ((rc = check_schema(req->schema)) != TK_OK)
        return rc;
    for (i = 0; i < req->n_rows; i++)
        if ((rc = check_row(req->schema, req->rows[i])) != TK_OK)
            return rc;
    if ((rc = each_record(tk, a, find_schema, &f)) != TK_OK)
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

static int scan_one(void *ctx, const Cohort__LoadTable *rec)
{
    struct scan_ctx *s = ctx;
    size_t i;
    int rc;
    if (strcmp(rec->schema->name, s->table) != 0)
        return TK_OK;
    for (i = 0; i < rec->n_rows; i++)
        if ((rc = s->fn(s->ctx, rec->schema, rec->rows[i])) != TK_OK)
            return rc;
    return TK_OK;
}

int tk_table_scan(struct tk_token *tk, struct tk_arena *a, const char *table, tk_row_fn fn,
                  void *ctx)
{
    struct scan_ctx s = {table, fn, ctx};
    return each_record(tk, a, scan_one, &s);
}

struct exists_ctx {
    const char *table;
    bool found;
};

static int find_table(void *ctx, const Cohort__LoadTable *rec)
{
    struct exists_ctx *e = ctx;
    if (strcmp(rec->schema->name, e->table) == 0)
        e->found = true;
    return TK_OK;
}

int tk_table_exists(struct tk_token *tk, struct tk_arena *a, const char *table, bool *found)
{
    struct exists_ctx e = {table, false};
    int rc = each_record(tk, a, find_table, &e);
    *found = e.found;
    return rc;
}

struct names_ctx {
    char **names;
    size_t max, n;
};

static int add_name(void *ctx, const Cohort__LoadTable *rec)
{
    struct names_ctx *c = ctx;
    size_t i;
    for (i = 0; i < c->n; i++)
        if (strcmp(c->names[i], rec->schema->name) == 0)
            return TK_OK;
    if (c->n < c->max) {
        size_t len = strlen(rec->schema->name);
        memcpy(c->names[c->n], rec->schema->name, len + 1);
        c->n++;
    }
    return TK_OK;
}

int tk_table_names(struct tk_token *tk, struct tk_arena *a, char **names, size_t max, size_t *n)
{
    struct names_ctx c = {names, max, 0};
    int rc = each_record(tk, a, add_name, &c);
    *n = c.n;
    return rc;
}
