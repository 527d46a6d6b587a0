/*
 * The owner's tables, on the token's log (tk_log.c).
 *
 * Records. A table is declared by a TableSchema record; its rows live in
 * RowBatch records, each naming its table and carrying up to
 * TK_RECORD_FILL bytes of rows with their ids (first_id for a run of
 * consecutive ids, explicit ids otherwise). Ids come from tk->next_row_id:
 * they only grow, and the log keeps rows in id order (appends add higher
 * ids; rewrites keep the order), so a table's rows are read in id order by
 * reading the log from the start. There are no tombstones: a delete or an
 * update rewrites the log (tk_log_rewrite) without the old rows, so they
 * are physically gone from the flash when the request returns. A table's
 * schema record always precedes its rows.
 *
 * Writes. LoadTable checks the schema and every row before it writes
 * anything; the first LoadTable of a table declares it, later ones must
 * repeat its schema exactly (TK_ERR_SCHEMA). A LoadTable with `more` leaves
 * its records appended but not committed (tk->batch_open); the batch
 * commits with the LoadTable that ends it, and any other request or any
 * error drops all of it (the dispatcher aborts the log). DeleteRows and
 * UpdateRows are all or nothing: unknown ids are TK_ERR_NOT_FOUND and
 * nothing changes; a WHERE is checked against the table's columns as a
 * plan's would be (TK_ERR_BAD_PLAN). Compact rewrites the log with only its
 * live records (every schema and row, the latest policy, every audit line),
 * one table per pass so that rows loaded a few at a time end up in full
 * batches. Every write commits before it answers, and answers Changed.
 * The documents table is the token's own (see its section at the end):
 * the owner reads it like any other, but loads, deletes and updates of it
 * are TK_ERR_DENIED.
 *
 * RAM. Every operation streams: one record at a time is decrypted into
 * scratch, and its rows are walked in their wire form and decoded one at a
 * time, since decoded rows take many times their bytes. What must outlive
 * a record during a scan (the table's decoded schema) sits at the arena's
 * low end until the handler returns. A rewrite holds one record read and
 * one row batch being written (TK_RECORD_FILL). Nothing depends on the
 * number of rows.
 *
 * Cost. Each operation reads the whole log once or twice (every read is
 * verified against the chain); a page of ReadRows too, so reading a table
 * in k pages reads the log k times: owners' clients should ask for large
 * pages. Compaction reads it once per table, plus once. A LoadTable that continues a batch, or that
 * follows one of the same table, skips the scan for the schema: the token
 * remembers the digest of the last schema it saw declared
 * (tk->known_schema), forgotten on any abort or rewrite.
 */
#include "token/tk_int.h"

#define W_HEAD 3u /* StoreRecord's tag and a 2-byte length, before a RowBatch */
#define W_BODY_MAX (TK_RECORD_FILL - W_HEAD)
#define W_TRAILER 11u                                              /* RowBatch.first_id, at most */
#define RECORD_COST (TK_REC_HDR + TK_TAG_LEN + W_HEAD + W_TRAILER) /* a batch's own bytes */
#define RESP_TRAILER 16u /* what the dispatcher adds after a handler's body */
#define CHANGED_ROOM (2u + 3u * 11u + RESP_TRAILER)
#define PAGE_TRAILER (2u + RESP_TRAILER)

static int reserved(struct tk_call *c);

/* ------------------------------------------------------ schema checks */

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
    if (strcmp(a->name, b->name) != 0 || a->n_columns != b->n_columns)
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
    if (r == NULL || r->n_values != s->n_columns)
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

/* A row the token could write: it fits in one row batch with its id. */
static int check_row_size(const Cohort__Row *r)
{
    size_t n = tk_field_len(3, cohort__row__get_packed_size(r));
    return tk_field_len(1, TK_NAME_MAX) + 11 + n + W_TRAILER <= W_BODY_MAX ? TK_OK
                                                                           : TK_ERR_TOO_LARGE;
}

static void schema_digest(uint8_t out[32], const Cohort__TableSchema *s)
{
    crypto_generichash_state st;
    size_t i;
    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, (const uint8_t *)s->name, strlen(s->name) + 1);
    for (i = 0; i < s->n_columns; i++) {
        uint8_t ts[2] = {(uint8_t)s->columns[i]->type, (uint8_t)s->columns[i]->scale};
        crypto_generichash_update(&st, (const uint8_t *)s->columns[i]->name,
                                  strlen(s->columns[i]->name) + 1);
        crypto_generichash_update(&st, ts, sizeof ts);
    }
    crypto_generichash_final(&st, out, 32);
}

/* ------------------------------------------------- records, as bytes */

static bool name_is(const uint8_t *name, size_t len, const char *want)
{
    return strlen(want) == len && memcmp(name, want, len) == 0;
}

/* The name in a TableSchema's bytes, without decoding the rest. */
static int schema_name(const uint8_t *p, size_t n, const uint8_t **name, size_t *name_len)
{
    struct tk_wfield f;
    size_t pos = 0;
    int more;
    while ((more = tk_wire_next(p, n, &pos, &f)) == 1)
        if (f.field == 1 && f.wire_type == 2) {
            if (f.len == 0 || f.len > TK_NAME_MAX)
                return TK_ERR_TAMPERED;
            *name = f.data;
            *name_len = f.len;
            return TK_OK;
        }
    return TK_ERR_TAMPERED;
}

static void *keep_alloc(void *data, size_t n)
{
    return tk_arena_keep(data, n);
}

static void keep_free(void *data, void *p)
{
    (void)data;
    (void)p;
}

/* Decode a stored schema at the arena's low end, where it outlives the
 * record it came from. */
static Cohort__TableSchema *schema_decode_low(struct tk_arena *a, const uint8_t *p, size_t n,
                                              int *rc)
{
    ProtobufCAllocator al = {keep_alloc, keep_free, a};
    size_t lo = a->lo;
    bool was = a->exhausted;
    Cohort__TableSchema *s;

    a->exhausted = false;
    s = (Cohort__TableSchema *)protobuf_c_message_unpack(&cohort__table_schema__descriptor, &al, n,
                                                         p);
    if (s == NULL || check_schema(s) != TK_OK) {
        *rc = s == NULL && a->exhausted ? TK_ERR_NO_MEMORY : TK_ERR_TAMPERED;
        a->lo = lo;
        s = NULL;
    }
    a->exhausted = a->exhausted || was;
    return s;
}

/* A RowBatch's bytes, walked without decoding its rows. */
struct batch {
    const uint8_t *p;
    size_t len;
    const uint8_t *table;
    size_t table_len;
    uint64_t first_id, n_rows, n_ids;
};

static int batch_parse(struct batch *b, const uint8_t *p, size_t len)
{
    struct tk_wfield f;
    size_t pos = 0, q;
    uint64_t v;
    int more;

    memset(b, 0, sizeof *b);
    b->p = p;
    b->len = len;
    while ((more = tk_wire_next(p, len, &pos, &f)) == 1) {
        if (f.field == 1 && f.wire_type == 2) {
            b->table = f.data;
            b->table_len = f.len;
        } else if (f.field == 2 && f.wire_type == 0) {
            b->first_id = f.varint;
        } else if (f.field == 3 && f.wire_type == 2) {
            b->n_rows++;
        } else if (f.field == 4 && f.wire_type == 0) {
            b->n_ids++;
        } else if (f.field == 4 && f.wire_type == 2) {
            for (q = 0; q < f.len; b->n_ids++)
                if (tk_wire_varint(f.data, f.len, &q, &v) != 0)
                    return TK_ERR_TAMPERED;
        } else {
            return TK_ERR_TAMPERED;
        }
    }
    if (more < 0 || b->table_len == 0 || b->table_len > TK_NAME_MAX ||
        (b->n_ids != 0 && b->n_ids != b->n_rows))
        return TK_ERR_TAMPERED;
    return TK_OK;
}

struct batch_iter {
    const struct batch *b;
    size_t rpos, ipos;
    const uint8_t *packed;
    size_t plen, ppos;
    uint64_t k;
};

/* The next row of a parsed batch and its id: 1, or 0 at the end. */
static int batch_next(struct batch_iter *it, const uint8_t **row, size_t *row_len, uint64_t *id)
{
    const struct batch *b = it->b;
    struct tk_wfield f;

    do {
        if (tk_wire_next(b->p, b->len, &it->rpos, &f) != 1)
            return 0;
    } while (f.field != 3);
    *row = f.data;
    *row_len = f.len;
    if (b->n_ids == 0) {
        *id = b->first_id + it->k;
    } else {
        for (;;) {
            if (it->packed != NULL && it->ppos < it->plen) {
                if (tk_wire_varint(it->packed, it->plen, &it->ppos, id) != 0)
                    return TK_ERR_TAMPERED;
                break;
            }
            it->packed = NULL;
            if (tk_wire_next(b->p, b->len, &it->ipos, &f) != 1)
                return TK_ERR_TAMPERED;
            if (f.field != 4)
                continue;
            if (f.wire_type == 0) {
                *id = f.varint;
                break;
            }
            it->packed = f.data;
            it->plen = f.len;
            it->ppos = 0;
        }
    }
    it->k++;
    return 1;
}

/* ---------------------------------------------------- row-batch writer */

/*
 * Rows go into one RowBatch at a time, in a buffer laid out for sealing in
 * place; the batch is appended to the log when the next row would not fit,
 * when the table changes, or at flush. Ids are written as first_id while
 * they run consecutively; at the first gap the batch either switches to
 * explicit ids (the run so far is written out as ids then) or, when that
 * would cost more than a record's own bytes, ends, and a new one starts.
 */
struct writer {
    struct tk_token *tk;
    uint8_t *buf; /* TK_REC_HDR + TK_RECORD_FILL + TK_TAG_LEN */
    struct tk_wbuf body;
    char table[TK_NAME_MAX + 1];
    uint64_t first_id, next_id, n;
    bool explicit_ids;
    uint64_t written;
};

static int writer_init(struct writer *w, struct tk_token *tk, struct tk_arena *a)
{
    memset(w, 0, sizeof *w);
    w->tk = tk;
    w->buf = tk_arena_scratch(a, TK_REC_HDR + TK_RECORD_FILL + TK_TAG_LEN);
    if (w->buf == NULL)
        return TK_ERR_NO_MEMORY;
    w->body = (struct tk_wbuf){w->buf + TK_REC_HDR + W_HEAD, W_BODY_MAX, 0, false};
    return TK_OK;
}

static int writer_flush(struct writer *w)
{
    uint8_t *plain;
    struct tk_wbuf h;
    size_t body, hdr;
    int rc;

    if (w->n == 0)
        return TK_OK;
    plain = w->buf + TK_REC_HDR;
    if (!w->explicit_ids)
        tk_w_uint(&w->body, 2, w->first_id);
    if (w->body.overflow)
        return TK_ERR_TOO_LARGE; /* cannot happen: room for it was kept */
    body = w->body.len;
    hdr = 1 + tk_varint_len(body);
    if (hdr < W_HEAD)
        memmove(plain + hdr, plain + W_HEAD, body);
    h = (struct tk_wbuf){plain, hdr, 0, false};
    tk_w_open(&h, TK_REC_ROWS, body);
    rc = tk_log_append_sealed(w->tk, w->buf, hdr + body);
    w->body.len = 0;
    w->body.overflow = false;
    w->n = 0;
    w->explicit_ids = false;
    return rc;
}

/* Room for a row of row_len bytes with id `id` of `table`: *at is where
 * its bytes go. */
static int writer_row(struct writer *w, const char *table, uint64_t id, size_t row_len,
                      uint8_t **at)
{
    size_t need = tk_field_len(3, row_len), tl = strlen(table), extra;
    uint64_t j;
    bool gap;
    int rc, attempt;

    if (w->n > 0 && strcmp(w->table, table) != 0 && (rc = writer_flush(w)) != TK_OK)
        return rc;
    for (attempt = 0; attempt < 2; attempt++) {
        if (w->n == 0) {
            if (tk_field_len(1, tl) + 11 + need + W_TRAILER > W_BODY_MAX)
                return TK_ERR_TOO_LARGE;
            memcpy(w->table, table, tl + 1);
            tk_w_bytes(&w->body, 1, (const uint8_t *)table, tl);
            w->first_id = w->next_id = id;
        }
        gap = !w->explicit_ids && id != w->next_id;
        extra = 0;
        if (gap)
            for (j = w->first_id; j < w->next_id; j++)
                extra += 1 + tk_varint_len(j);
        if (w->explicit_ids || gap)
            extra += 1 + tk_varint_len(id);
        /* A gap after a long run: a new batch costs less than writing
         * out the run's ids. */
        if (gap && extra > RECORD_COST + tk_field_len(1, tl) && attempt == 0) {
            if ((rc = writer_flush(w)) != TK_OK)
                return rc;
            continue;
        }
        if (w->body.len + extra + need + W_TRAILER <= W_BODY_MAX) {
            if (gap) {
                for (j = w->first_id; j < w->next_id; j++)
                    tk_w_uint(&w->body, 4, j);
                w->explicit_ids = true;
            }
            if (w->explicit_ids)
                tk_w_uint(&w->body, 4, id);
            tk_w_open(&w->body, 3, row_len);
            *at = tk_w_reserve(&w->body, row_len);
            w->next_id = id + 1;
            w->n++;
            w->written++;
            return *at != NULL ? TK_OK : TK_ERR_TOO_LARGE;
        }
        if ((rc = writer_flush(w)) != TK_OK)
            return rc;
    }
    return TK_ERR_TOO_LARGE;
}

static int writer_add_raw(struct writer *w, const char *table, uint64_t id, const uint8_t *row,
                          size_t len)
{
    uint8_t *at;
    int rc = writer_row(w, table, id, len, &at);
    if (rc == TK_OK)
        memcpy(at, row, len);
    return rc;
}

static int writer_add_pb(struct writer *w, const char *table, uint64_t id, const Cohort__Row *row)
{
    size_t len = cohort__row__get_packed_size(row);
    uint8_t *at;
    int rc = writer_row(w, table, id, len, &at);
    if (rc == TK_OK)
        cohort__row__pack(row, at);
    return rc;
}

/* ------------------------------------------------------------ catalog */

struct summary {
    char name[TK_NAME_MAX + 1];
    uint64_t rows;
};

/* One pass over the log for what is known of its tables. */
struct catalog {
    const char *want; /* a table to look for, or NULL */
    bool decode;      /* decode want's schema (at the arena's low end) */
    bool stop;        /* stop once want is found */
    bool found;
    Cohort__TableSchema *schema; /* want's, when decode */
    size_t tables;               /* tables declared */
    char **names;                /* their names, in order (up to max) */
    size_t max, n;
    struct summary *sum; /* and their rows (up to TK_MAX_TABLES) */
    size_t n_sum;
    uint64_t policies; /* ConsentPolicy records */
};

static int catalog_record(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len,
                          uint64_t index)
{
    struct catalog *c = ctx;
    const uint8_t *body, *name;
    size_t body_len, name_len, i;
    uint32_t kind;
    int rc;

    (void)index;
    if ((rc = tk_record_body(plain, len, &kind, &body, &body_len)) != TK_OK)
        return rc;
    if (kind == TK_REC_POLICY)
        c->policies++;
    if (kind == TK_REC_ROWS && c->sum != NULL) {
        struct batch b;
        if ((rc = batch_parse(&b, body, body_len)) != TK_OK)
            return rc;
        for (i = 0; i < c->n_sum; i++)
            if (name_is(b.table, b.table_len, c->sum[i].name))
                c->sum[i].rows += b.n_rows;
    }
    if (kind != TK_REC_TABLE)
        return TK_OK;
    if ((rc = schema_name(body, body_len, &name, &name_len)) != TK_OK)
        return rc;
    c->tables++;
    if (c->names != NULL && c->n < c->max) {
        memcpy(c->names[c->n], name, name_len);
        c->names[c->n++][name_len] = 0;
    }
    if (c->sum != NULL && c->n_sum < TK_MAX_TABLES) {
        memcpy(c->sum[c->n_sum].name, name, name_len);
        c->sum[c->n_sum].name[name_len] = 0;
        c->sum[c->n_sum++].rows = 0;
    }
    if (c->want != NULL && !c->found && name_is(name, name_len, c->want)) {
        c->found = true;
        if (c->decode && (c->schema = schema_decode_low(a, body, body_len, &rc)) == NULL)
            return rc;
        if (c->stop)
            return TK_SCAN_STOP;
    }
    return TK_OK;
}

/* Find a table's schema, decoded at the arena's low end. */
static int find_schema(struct tk_token *tk, struct tk_arena *a, const char *table,
                       Cohort__TableSchema **schema)
{
    struct catalog c;
    int rc;
    memset(&c, 0, sizeof c);
    c.want = table;
    c.decode = c.stop = true;
    if ((rc = tk_log_scan(tk, a, false, catalog_record, &c)) != TK_OK)
        return rc;
    if (!c.found)
        return TK_ERR_NOT_FOUND;
    *schema = c.schema;
    return TK_OK;
}

int tk_table_exists(struct tk_token *tk, struct tk_arena *a, const char *table, bool *found)
{
    struct catalog c;
    int rc;
    memset(&c, 0, sizeof c);
    c.want = table;
    c.stop = true;
    rc = tk_log_scan(tk, a, false, catalog_record, &c);
    *found = c.found;
    return rc;
}

int tk_table_names(struct tk_token *tk, struct tk_arena *a, char **names, size_t max, size_t *n)
{
    struct catalog c;
    int rc;
    memset(&c, 0, sizeof c);
    c.names = names;
    c.max = max;
    rc = tk_log_scan(tk, a, false, catalog_record, &c);
    *n = c.n;
    return rc;
}

/* ------------------------------------------------------------- rows */

/*
 * One pass over a table's rows: row() sees each, in id order, as bytes;
 * the table's schema is decoded (low end) when its record goes by.
 */
struct rows_scan {
    const char *table;
    Cohort__TableSchema *schema;
    int (*row)(struct rows_scan *s, struct tk_arena *a, uint64_t id, const uint8_t *bytes,
               size_t len);
};

static int rows_record(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len,
                       uint64_t index)
{
    struct rows_scan *s = ctx;
    const uint8_t *body, *name, *row;
    size_t body_len, name_len, row_len;
    struct batch b;
    struct batch_iter it;
    uint32_t kind;
    uint64_t id;
    int rc, more;

    (void)index;
    if ((rc = tk_record_body(plain, len, &kind, &body, &body_len)) != TK_OK)
        return rc;
    if (kind == TK_REC_TABLE && s->schema == NULL) {
        if ((rc = schema_name(body, body_len, &name, &name_len)) != TK_OK)
            return rc;
        if (name_is(name, name_len, s->table) &&
            (s->schema = schema_decode_low(a, body, body_len, &rc)) == NULL)
            return rc;
        return TK_OK;
    }
    if (kind != TK_REC_ROWS)
        return TK_OK;
    if ((rc = batch_parse(&b, body, body_len)) != TK_OK)
        return rc;
    if (!name_is(b.table, b.table_len, s->table))
        return TK_OK;
    if (s->schema == NULL)
        return TK_ERR_TAMPERED; /* rows before their table */
    memset(&it, 0, sizeof it);
    it.b = &b;
    while ((more = batch_next(&it, &row, &row_len, &id)) == 1)
        if ((rc = s->row(s, a, id, row, row_len)) != TK_OK)
            return rc;
    return more;
}

/* Decode one stored row (scratch); it must match its schema. */
static int row_decode(Cohort__Row **out, struct tk_arena *a, const Cohort__TableSchema *schema,
                      const uint8_t *bytes, size_t len)
{
    int rc = TK_OK;
    *out = (Cohort__Row *)tk_unpack(a, &cohort__row__descriptor, bytes, len, &rc);
    if (*out == NULL)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_TAMPERED;
    return check_row(schema, *out) == TK_OK ? TK_OK : TK_ERR_TAMPERED;
}

struct user_scan {
    struct rows_scan s;
    tk_row_fn fn;
    void *ctx;
};

static int user_row(struct rows_scan *s, struct tk_arena *a, uint64_t id, const uint8_t *bytes,
                    size_t len)
{
    struct user_scan *u = (struct user_scan *)s;
    size_t mark = tk_arena_mark(a);
    Cohort__Row *row;
    int rc;
    (void)id;
    if ((rc = row_decode(&row, a, s->schema, bytes, len)) == TK_OK)
        rc = u->fn(u->ctx, s->schema, row);
    tk_arena_release(a, mark);
    return rc;
}

int tk_table_scan(struct tk_token *tk, struct tk_arena *a, const char *table, tk_row_fn fn,
                  void *ctx)
{
    struct user_scan u = {{table, NULL, user_row}, fn, ctx};
    size_t lo = a->lo;
    int rc = tk_log_scan(tk, a, false, rows_record, &u.s);
    a->lo = lo;
    return rc;
}

/* -------------------------------------------------------------- loads */

int tk_do_load_table(struct tk_call *c, const Cohort__LoadTable *req)
{
    struct tk_token *tk = c->tk;
    struct tk_arena *a = c->arena;
    const Cohort__TableSchema *s = req->schema;
    uint64_t before = tk->log.length;
    uint8_t digest[32];
    struct writer w;
    bool declared = false;
    size_t i;
    int rc;

    if (!tk_has_flag(tk, TK_FLAG_KEYS))
        return TK_ERR_NOT_PROVISIONED;
    if ((rc = check_schema(s)) != TK_OK)
        return rc;
    if (strcmp(s->name, TK_DOCS_TABLE) == 0)
        return reserved(c);
    for (i = 0; i < req->n_rows; i++)
        if ((rc = check_row(s, req->rows[i])) != TK_OK ||
            (rc = check_row_size(req->rows[i])) != TK_OK)
            return rc;
    schema_digest(digest, s);
    if (tk->batch_open) {
        if (memcmp(digest, tk->known_schema, sizeof digest) != 0)
            return TK_ERR_SCHEMA; /* a batch is for one table */
        declared = true;
    } else if (memcmp(digest, tk->known_schema, sizeof digest) == 0) {
        declared = true;
    } else {
        struct catalog cat;
        memset(&cat, 0, sizeof cat);
        cat.want = s->name;
        cat.decode = true;
        if ((rc = tk_log_scan(tk, a, true, catalog_record, &cat)) != TK_OK)
            return rc;
        if (cat.found && !same_schema(cat.schema, s))
            return TK_ERR_SCHEMA;
        if (!cat.found && cat.tables >= TK_MAX_TABLES)
            return TK_ERR_TOO_LARGE;
        declared = cat.found;
    }
    if (tk_w_room(c->out) < CHANGED_ROOM)
        return TK_ERR_RESPONSE_SPACE;

    /* Everything checked: write. */
    if (!tk->batch_open)
        tk->batch_row_id = tk->next_row_id;
    if (!declared) {
        Cohort__StoreRecord rec;
        cohort__store_record__init(&rec);
        rec.body_case = COHORT__STORE_RECORD__BODY_TABLE;
        rec.table = (Cohort__TableSchema *)s;
        if ((rc = tk_log_append(tk, a, &rec)) != TK_OK)
            return rc;
    }
    if ((rc = writer_init(&w, tk, a)) != TK_OK)
        return rc;
    for (i = 0; i < req->n_rows; i++)
        if ((rc = writer_add_pb(&w, s->name, tk->next_row_id++, req->rows[i])) != TK_OK)
            return rc;
    if ((rc = writer_flush(&w)) != TK_OK)
        return rc;
    memcpy(tk->known_schema, digest, sizeof digest);
    if (req->more)
        tk->batch_open = true;
    else if ((rc = tk_log_commit(tk, a)) != TK_OK)
        return rc;
    tk_w_open(c->out, 11,
              1 + tk_varint_len(req->n_rows) + 1 + tk_varint_len(before) + 1 +
                  tk_varint_len(tk->work.length));
    tk_w_uint(c->out, 1, req->n_rows);
    tk_w_uint(c->out, 2, before);
    tk_w_uint(c->out, 3, tk->work.length);
    return TK_OK;
}

static void write_changed(struct tk_wbuf *out, uint64_t rows, uint64_t before, uint64_t after)
{
    tk_w_open(out, 11,
              1 + tk_varint_len(rows) + 1 + tk_varint_len(before) + 1 + tk_varint_len(after));
    tk_w_uint(out, 1, rows);
    tk_w_uint(out, 2, before);
    tk_w_uint(out, 3, after);
}

static int check_table_name(const char *name)
{
    size_t n = name != NULL ? strlen(name) : 0;
    if (n == 0)
        return TK_ERR_MALFORMED;
    return n > TK_NAME_MAX ? TK_ERR_NOT_FOUND : TK_OK;
}

/* -------------------------------------------------------------- reads */

struct page {
    struct rows_scan s;
    struct tk_wbuf *out;
    uint64_t after, max, n;
    size_t schema_room;
    bool more;
};

static int page_row(struct rows_scan *s, struct tk_arena *a, uint64_t id, const uint8_t *bytes,
                    size_t len)
{
    struct page *p = (struct page *)s;
    size_t need;
    (void)a;
    if (id <= p->after)
        return TK_OK;
    if (p->schema_room == 0)
        p->schema_room = tk_field_len(1, cohort__table_schema__get_packed_size(s->schema));
    need = 1 + tk_varint_len(id) + tk_field_len(3, len) + p->schema_room + PAGE_TRAILER;
    if ((p->max != 0 && p->n == p->max) || tk_w_room(p->out) < need) {
        p->more = true;
        return TK_SCAN_STOP;
    }
    tk_w_uint(p->out, 2, id);
    tk_w_bytes(p->out, 3, bytes, len);
    p->n++;
    return TK_OK;
}

int tk_do_read_rows(struct tk_call *c, const Cohort__ReadRows *req)
{
    struct page p;
    size_t start;
    int rc;

    if (!tk_has_flag(c->tk, TK_FLAG_KEYS))
        return TK_ERR_NOT_PROVISIONED;
    if ((rc = check_table_name(req->table)) != TK_OK)
        return rc;
    memset(&p, 0, sizeof p);
    p.s.table = req->table;
    p.s.row = page_row;
    p.out = c->out;
    p.after = req->after_id;
    p.max = req->max_rows;
    start = tk_w_begin(c->out);
    if ((rc = tk_log_scan(c->tk, c->arena, false, rows_record, &p.s)) != TK_OK)
        return rc;
    if (p.s.schema == NULL)
        return TK_ERR_NOT_FOUND;
    if (p.n == 0 && p.more)
        return TK_ERR_RESPONSE_SPACE; /* not even one row fits */
    tk_w_message(c->out, 1, &p.s.schema->base);
    if (p.more)
        tk_w_uint(c->out, 4, 1);
    tk_w_end(c->out, 10, start);
    return TK_OK;
}

struct list_scan {
    struct tk_wbuf *out;
    const struct summary *sum;
    size_t n_sum;
};

static int list_record(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len,
                       uint64_t index)
{
    struct list_scan *l = ctx;
    const uint8_t *body, *name;
    size_t body_len, name_len, i;
    uint64_t rows = 0;
    uint32_t kind;
    int rc;

    (void)a;
    (void)index;
    if ((rc = tk_record_body(plain, len, &kind, &body, &body_len)) != TK_OK)
        return rc;
    if (kind != TK_REC_TABLE)
        return TK_OK;
    if ((rc = schema_name(body, body_len, &name, &name_len)) != TK_OK)
        return rc;
    for (i = 0; i < l->n_sum; i++)
        if (name_is(name, name_len, l->sum[i].name))
            rows = l->sum[i].rows;
    tk_w_open(l->out, 1, tk_field_len(1, body_len) + (rows ? 1 + tk_varint_len(rows) : 0));
    tk_w_bytes(l->out, 1, body, body_len);
    if (rows)
        tk_w_uint(l->out, 2, rows);
    return TK_OK;
}

int tk_do_list_tables(struct tk_call *c, const Cohort__ListTables *req)
{
    struct catalog cat;
    struct list_scan l;
    size_t start;
    int rc;

    (void)req;
    if (!tk_has_flag(c->tk, TK_FLAG_KEYS))
        return TK_ERR_NOT_PROVISIONED;
    memset(&cat, 0, sizeof cat);
    cat.sum = tk_arena_scratch(c->arena, TK_MAX_TABLES * sizeof *cat.sum);
    if (cat.sum == NULL)
        return TK_ERR_NO_MEMORY;
    if ((rc = tk_log_scan(c->tk, c->arena, false, catalog_record, &cat)) != TK_OK)
        return rc;
    l = (struct list_scan){c->out, cat.sum, cat.n_sum};
    start = tk_w_begin(c->out);
    if ((rc = tk_log_scan(c->tk, c->arena, false, list_record, &l)) != TK_OK)
        return rc;
    tk_w_end(c->out, 12, start);
    return TK_OK;
}

/* ---------------------------------------------------- deletes, updates */

/* Request ids, sorted (through an index) for lookups; each found once. */
struct idset {
    const uint64_t *ids;
    size_t n;
    uint32_t *order; /* indexes into ids, by increasing id */
    uint8_t *seen;
    size_t n_seen;
};

static int idset_init(struct idset *s, struct tk_arena *a, const uint64_t *ids, size_t n)
{
    size_t gap, i, j;
    memset(s, 0, sizeof *s);
    s->ids = ids;
    s->n = n;
    if (n == 0)
        return TK_ERR_MALFORMED;
    if (n > UINT32_MAX)
        return TK_ERR_TOO_LARGE;
    s->order = tk_arena_scratch(a, n * sizeof *s->order);
    s->seen = tk_arena_scratch(a, n);
    if (s->order == NULL || s->seen == NULL)
        return TK_ERR_NO_MEMORY;
    memset(s->seen, 0, n);
    for (i = 0; i < n; i++)
        s->order[i] = (uint32_t)i;
    /* Shell sort: no recursion, no extra memory. */
    for (gap = n / 2; gap > 0; gap /= 2)
        for (i = gap; i < n; i++) {
            uint32_t t = s->order[i];
            for (j = i; j >= gap && ids[s->order[j - gap]] > ids[t]; j -= gap)
                s->order[j] = s->order[j - gap];
            s->order[j] = t;
        }
    for (i = 1; i < n; i++)
        if (ids[s->order[i]] == ids[s->order[i - 1]])
            return TK_ERR_MALFORMED; /* an id named twice */
    return TK_OK;
}

/* The request index of id, or -1. */
static long idset_find(const struct idset *s, uint64_t id)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t v = s->ids[s->order[mid]];
        if (v == id)
            return (long)s->order[mid];
        if (v < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

enum { DEL_ALL, DEL_IDS, DEL_WHERE, UPDATE };

/* What DeleteRows or UpdateRows do to a table, pass after pass. */
struct edit {
    struct rows_scan s;
    int mode;
    struct idset ids;
    Cohort__Row **rows;   /* UpdateRows: replacements, by request index */
    struct tk_plan *plan; /* DEL_WHERE: the table's columns and the program */
    uint64_t count;
    struct writer w;
    bool writing;
};

static int edit_match(struct edit *e, struct tk_arena *a, uint64_t id, const uint8_t *bytes,
                      size_t len, long *index)
{
    struct tk_value vals[TK_MAX_COLUMNS];
    struct tk_eval_ctx ev = {vals, NULL, NULL};
    size_t mark, i;
    Cohort__Row *row;
    int rc, keep = 0;

    *index = -1;
    switch (e->mode) {
    case DEL_ALL:
        return 1;
    case DEL_IDS:
    case UPDATE:
        *index = idset_find(&e->ids, id);
        return *index >= 0;
    default:
        break;
    }
    mark = tk_arena_mark(a);
    if ((rc = row_decode(&row, a, e->s.schema, bytes, len)) == TK_OK) {
        for (i = 0; i < row->n_values && rc == TK_OK; i++)
            if (tk_value_from_pb(&vals[i], row->values[i]) != TK_OK)
                rc = TK_ERR_TAMPERED;
        if (rc == TK_OK)
            rc = tk_eval(&keep, e->plan->where, e->plan->n_where, &ev);
    }
    tk_arena_release(a, mark);
    return rc != TK_OK ? rc : keep;
}

/* Pass 1: count, and see that every id named exists. */
static int edit_count_row(struct rows_scan *s, struct tk_arena *a, uint64_t id,
                          const uint8_t *bytes, size_t len)
{
    struct edit *e = (struct edit *)s;
    long index;
    int m = edit_match(e, a, id, bytes, len, &index);
    if (m < 0)
        return m;
    if (m) {
        e->count++;
        if (index >= 0)
            e->ids.seen[index] = 1;
    }
    return TK_OK;
}

/* Pass 2 (the rewrite): rows of the table go through the writer, minus
 * the deleted ones, with the replacements. */
static int edit_write_row(struct rows_scan *s, struct tk_arena *a, uint64_t id,
                          const uint8_t *bytes, size_t len)
{
    struct edit *e = (struct edit *)s;
    long index;
    int m = edit_match(e, a, id, bytes, len, &index);
    if (m < 0)
        return m;
    if (!m)
        return writer_add_raw(&e->w, s->table, id, bytes, len);
    if (e->mode == UPDATE)
        return writer_add_pb(&e->w, s->table, id, e->rows[index]);
    return TK_OK;
}

static int edit_keep(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len, bool *keep)
{
    struct edit *e = ctx;
    const uint8_t *body, *name;
    size_t body_len, name_len;
    uint32_t kind;
    int rc;

    if (plain == NULL)
        return writer_flush(&e->w);
    if ((rc = tk_record_body(plain, len, &kind, &body, &body_len)) != TK_OK)
        return rc;
    if (kind == TK_REC_ROWS) {
        struct batch b;
        if ((rc = batch_parse(&b, body, body_len)) != TK_OK)
            return rc;
        if (name_is(b.table, b.table_len, e->s.table)) {
            *keep = false;
            return e->mode == DEL_ALL ? TK_OK : rows_record(&e->s, a, plain, len, 0);
        }
    }
    if (kind == TK_REC_TABLE && e->mode == DEL_ALL) {
        if ((rc = schema_name(body, body_len, &name, &name_len)) != TK_OK)
            return rc;
        if (name_is(name, name_len, e->s.table)) {
            *keep = false;
            return TK_OK;
        }
    }
    /* Anything else stays as it is, after the rows written before it. */
    *keep = true;
    return writer_flush(&e->w);
}

/* Run an edit whose mode, ids, rows and plan are set: count, check, rewrite. */
static int edit_run(struct tk_call *c, struct edit *e)
{
    struct tk_token *tk = c->tk;
    uint64_t before = tk->log.length;
    size_t i;
    int rc;

    e->s.row = edit_count_row;
    if ((rc = tk_log_scan(tk, c->arena, false, rows_record, &e->s)) != TK_OK)
        return rc;
    for (i = 0; i < e->ids.n; i++)
        if (!e->ids.seen[i])
            return TK_ERR_NOT_FOUND;
    if (e->count == 0 && e->mode != DEL_ALL) {
        write_changed(c->out, 0, before, before);
        return TK_OK;
    }
    if ((rc = writer_init(&e->w, tk, c->arena)) != TK_OK)
        return rc;
    e->s.row = edit_write_row;
    if ((rc = tk_log_rewrite(tk, c->arena, edit_keep, e)) != TK_OK)
        return rc;
    write_changed(c->out, e->count, before, tk->log.length);
    return TK_OK;
}

/* A plan that is just the table's columns, so a WHERE over them checks. */
static void plan_of_schema(struct tk_plan *p, const Cohort__TableSchema *s)
{
    size_t i;
    memset(p, 0, sizeof *p);
    memcpy(p->table, s->name, strlen(s->name) + 1);
    p->n_columns = (uint16_t)s->n_columns;
    for (i = 0; i < s->n_columns; i++) {
        memcpy(p->columns[i].name, s->columns[i]->name, strlen(s->columns[i]->name) + 1);
        p->columns[i].type = (uint8_t)s->columns[i]->type;
        p->columns[i].scale = (uint8_t)s->columns[i]->scale;
    }
}

int tk_do_delete_rows(struct tk_call *c, const Cohort__DeleteRows *req)
{
    struct tk_plan plan;
    struct edit e;
    int rc, ways = 0;

    if (!tk_has_flag(c->tk, TK_FLAG_KEYS))
        return TK_ERR_NOT_PROVISIONED;
    if ((rc = check_table_name(req->table)) != TK_OK)
        return rc;
    if (strcmp(req->table, TK_DOCS_TABLE) == 0)
        return reserved(c);
    ways = (req->all ? 1 : 0) + (req->n_ids > 0 ? 1 : 0) + (req->n_where > 0 ? 1 : 0);
    if (ways != 1)
        return TK_ERR_MALFORMED; /* exactly one way of choosing rows */
    if (tk_w_room(c->out) < CHANGED_ROOM)
        return TK_ERR_RESPONSE_SPACE;
    memset(&e, 0, sizeof e);
    e.s.table = req->table;
    if ((rc = find_schema(c->tk, c->arena, req->table, &e.s.schema)) != TK_OK)
        return rc;
    if (req->all) {
        e.mode = DEL_ALL;
    } else if (req->n_ids > 0) {
        e.mode = DEL_IDS;
        if ((rc = idset_init(&e.ids, c->arena, req->ids, req->n_ids)) != TK_OK)
            return rc;
    } else {
        e.mode = DEL_WHERE;
        plan_of_schema(&plan, e.s.schema);
        if ((rc = tk_program_load(&plan.where, &plan.n_where, c->arena, &plan, req->where,
                                  req->n_where, false)) != TK_OK)
            return rc;
        e.plan = &plan;
    }
    return edit_run(c, &e);
}

int tk_do_update_rows(struct tk_call *c, const Cohort__UpdateRows *req)
{
    struct edit e;
    size_t i;
    int rc;

    if (!tk_has_flag(c->tk, TK_FLAG_KEYS))
        return TK_ERR_NOT_PROVISIONED;
    if ((rc = check_table_name(req->table)) != TK_OK)
        return rc;
    if (strcmp(req->table, TK_DOCS_TABLE) == 0)
        return reserved(c);
    if (req->n_ids != req->n_rows)
        return TK_ERR_MALFORMED;
    if (tk_w_room(c->out) < CHANGED_ROOM)
        return TK_ERR_RESPONSE_SPACE;
    memset(&e, 0, sizeof e);
    e.s.table = req->table;
    e.mode = UPDATE;
    e.rows = req->rows;
    if ((rc = find_schema(c->tk, c->arena, req->table, &e.s.schema)) != TK_OK)
        return rc;
    for (i = 0; i < req->n_rows; i++)
        if ((rc = check_row(e.s.schema, req->rows[i])) != TK_OK ||
            (rc = check_row_size(req->rows[i])) != TK_OK)
            return rc;
    if ((rc = idset_init(&e.ids, c->arena, req->ids, req->n_ids)) != TK_OK)
        return rc;
    return edit_run(c, &e);
}

/* ---------------------------------------------------------- compaction */

/*
 * Compaction writes the log again in passes: the first keeps every record
 * that is not rows (schemas, the latest policy, audit lines) in order; then
 * one pass per table writes its rows into full batches. A table's rows thus
 * stay in id order and after its schema, and rows loaded a few at a time,
 * interleaved with other tables', end up packed together.
 */
struct compact {
    struct writer w;
    uint64_t policies, policy_seen, rows;
    size_t pass, tables, table_seen;
    char table[TK_NAME_MAX + 1]; /* this pass's, once its schema went by */
};

static int compact_keep(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len, bool *keep)
{
    struct compact *k = ctx;
    const uint8_t *body, *row, *name;
    size_t body_len, row_len, name_len;
    struct batch b;
    struct batch_iter it;
    uint32_t kind;
    uint64_t id;
    int rc, more;

    (void)a;
    if (plain == NULL) {
        if ((rc = writer_flush(&k->w)) != TK_OK)
            return rc;
        k->pass++;
        k->table_seen = 0;
        k->table[0] = 0;
        *keep = k->pass <= k->tables;
        return TK_OK;
    }
    *keep = false;
    if ((rc = tk_record_body(plain, len, &kind, &body, &body_len)) != TK_OK)
        return rc;
    if (k->pass == 0) {
        if (kind == TK_REC_ROWS)
            return TK_OK;
        if (kind == TK_REC_POLICY && ++k->policy_seen < k->policies)
            return TK_OK; /* only the latest policy is in force */
        *keep = true;
        return TK_OK;
    }
    if (kind == TK_REC_TABLE) {
        if (++k->table_seen == k->pass) {
            if ((rc = schema_name(body, body_len, &name, &name_len)) != TK_OK)
                return rc;
            memcpy(k->table, name, name_len);
            k->table[name_len] = 0;
        }
        return TK_OK;
    }
    if (kind != TK_REC_ROWS || k->table[0] == 0)
        return TK_OK;
    if ((rc = batch_parse(&b, body, body_len)) != TK_OK)
        return rc;
    if (!name_is(b.table, b.table_len, k->table))
        return TK_OK;
    memset(&it, 0, sizeof it);
    it.b = &b;
    while ((more = batch_next(&it, &row, &row_len, &id)) == 1) {
        if ((rc = writer_add_raw(&k->w, k->table, id, row, row_len)) != TK_OK)
            return rc;
        k->rows++;
    }
    return more;
}

int tk_do_compact(struct tk_call *c, const Cohort__Compact *req)
{
    struct tk_token *tk = c->tk;
    uint64_t before = tk->log.length;
    struct catalog cat;
    struct compact k;
    int rc;

    (void)req;
    if (!tk_has_flag(tk, TK_FLAG_KEYS))
        return TK_ERR_NOT_PROVISIONED;
    if (tk_w_room(c->out) < CHANGED_ROOM)
        return TK_ERR_RESPONSE_SPACE;
    memset(&cat, 0, sizeof cat);
    if ((rc = tk_log_scan(tk, c->arena, false, catalog_record, &cat)) != TK_OK)
        return rc;
    memset(&k, 0, sizeof k);
    k.policies = cat.policies;
    k.tables = cat.tables;
    if ((rc = writer_init(&k.w, tk, c->arena)) != TK_OK)
        return rc;
    if ((rc = tk_log_rewrite(tk, c->arena, compact_keep, &k)) != TK_OK)
        return rc;
    write_changed(c->out, k.rows, before, tk->log.length);
    return TK_OK;
}

/* ------------------------------------------------------ documents table */

/*
 * The documents table (tk_int.h): one row per current document, kept in
 * step by tk_doc.c in the commit that changes the document. A row is
 *   id TEXT (the document's id, 32 hex digits), type TEXT, author TEXT,
 *   subject TEXT, created TIMESTAMP, modified TIMESTAMP, bytes INT,
 *   revision INT,
 * with author and subject cut to TK_TEXT_MAX bytes (at a UTF-8 boundary)
 * and a created or modified time of 0 stored as NULL. Tags are not in it
 * (a row holds no list). The owner's DocDelete removes the row in the
 * rewrite that removes the document; an update replaces it in the rewrite
 * that stores the new revision (the old row goes, the new one is appended
 * with a new id), so the table never shows a document twice.
 */
#define DOCS_COLUMNS 8u
#define DOCS_ID_HEX (2u * TK_DOC_ID_LEN)

static const struct {
    const char *name;
    int type;
} docs_columns[DOCS_COLUMNS] = {
    {"id", COHORT__VALUE_TYPE__VT_TEXT},           {"type", COHORT__VALUE_TYPE__VT_TEXT},
    {"author", COHORT__VALUE_TYPE__VT_TEXT},       {"subject", COHORT__VALUE_TYPE__VT_TEXT},
    {"created", COHORT__VALUE_TYPE__VT_TIMESTAMP}, {"modified", COHORT__VALUE_TYPE__VT_TIMESTAMP},
    {"bytes", COHORT__VALUE_TYPE__VT_INT},         {"revision", COHORT__VALUE_TYPE__VT_INT},
};

struct docs_schema {
    Cohort__TableSchema s;
    Cohort__Column cols[DOCS_COLUMNS];
    Cohort__Column *ptrs[DOCS_COLUMNS];
};

static void docs_schema(struct docs_schema *d)
{
    size_t i;
    cohort__table_schema__init(&d->s);
    d->s.name = TK_DOCS_TABLE;
    for (i = 0; i < DOCS_COLUMNS; i++) {
        cohort__column__init(&d->cols[i]);
        d->cols[i].name = (char *)docs_columns[i].name;
        d->cols[i].type = (Cohort__ValueType)docs_columns[i].type;
        d->ptrs[i] = &d->cols[i];
    }
    d->s.n_columns = DOCS_COLUMNS;
    d->s.columns = d->ptrs;
}

static void docs_hex(char out[DOCS_ID_HEX], const uint8_t *doc_id)
{
    static const char hex[] = "0123456789abcdef";
    size_t i;
    for (i = 0; i < TK_DOC_ID_LEN; i++) {
        out[2 * i] = hex[doc_id[i] >> 4];
        out[2 * i + 1] = hex[doc_id[i] & 15];
    }
}

/* At most TK_TEXT_MAX bytes of s, not cutting a UTF-8 sequence. */
static size_t text_cut(const char *s)
{
    size_t n = strlen(s);
    if (n <= TK_TEXT_MAX)
        return n;
    n = TK_TEXT_MAX;
    while (n > 0 && ((uint8_t)s[n] & 0xc0) == 0x80)
        n--;
    return n;
}

static int reserved(struct tk_call *c)
{
    c->reason[0] = '\0';
    tk_text_put(c->reason, 0, sizeof c->reason,
                "the documents table follows your documents: change the documents instead");
    return TK_ERR_DENIED;
}

int tk_docs_declared(struct tk_token *tk, struct tk_arena *a, bool *declared)
{
    struct docs_schema d;
    struct catalog cat;
    uint8_t digest[32];
    size_t lo = a->lo;
    int rc;

    *declared = false;
    docs_schema(&d);
    schema_digest(digest, &d.s);
    if (memcmp(digest, tk->known_schema, sizeof digest) == 0) {
        *declared = true;
        return TK_OK;
    }
    memset(&cat, 0, sizeof cat);
    cat.want = TK_DOCS_TABLE;
    cat.decode = true;
    rc = tk_log_scan(tk, a, false, catalog_record, &cat);
    if (rc == TK_OK && cat.found && !same_schema(cat.schema, &d.s))
        rc = TK_ERR_SCHEMA; /* a table of that name from before: documents cannot use it */
    else if (rc == TK_OK && !cat.found && cat.tables >= TK_MAX_TABLES)
        rc = TK_ERR_TOO_LARGE;
    a->lo = lo;
    if (rc != TK_OK)
        return rc;
    *declared = cat.found;
    if (cat.found)
        memcpy(tk->known_schema, digest, sizeof digest);
    return TK_OK;
}

int tk_docs_row(struct tk_token *tk, struct tk_arena *a, bool declare, const uint8_t *doc_id,
                uint64_t revision, const Cohort__DocMeta *m)
{
    Cohort__Value v[DOCS_COLUMNS], *vp[DOCS_COLUMNS];
    Cohort__Row row = COHORT__ROW__INIT;
    struct docs_schema d;
    struct writer w;
    char hex[DOCS_ID_HEX];
    size_t i, mark = tk_arena_mark(a);
    int rc = TK_OK;

    docs_schema(&d);
    for (i = 0; i < DOCS_COLUMNS; i++) {
        cohort__value__init(&v[i]);
        v[i].type = (Cohort__ValueType)docs_columns[i].type;
        vp[i] = &v[i];
    }
    docs_hex(hex, doc_id);
    v[0].s = (ProtobufCBinaryData){DOCS_ID_HEX, (uint8_t *)hex};
    v[1].s = (ProtobufCBinaryData){text_cut(m->type), (uint8_t *)m->type};
    v[2].s = (ProtobufCBinaryData){text_cut(m->author), (uint8_t *)m->author};
    v[3].s = (ProtobufCBinaryData){text_cut(m->subject), (uint8_t *)m->subject};
    v[4].i = m->created;
    v[5].i = m->modified;
    for (i = 4; i <= 5; i++)
        if (v[i].i == 0)
            v[i].type = COHORT__VALUE_TYPE__VT_NULL;
    v[6].i = m->size > INT64_MAX ? INT64_MAX : (int64_t)m->size;
    v[7].i = revision > INT64_MAX ? INT64_MAX : (int64_t)revision;
    row.n_values = DOCS_COLUMNS;
    row.values = vp;
    if (declare) {
        Cohort__StoreRecord rec = COHORT__STORE_RECORD__INIT;
        rec.body_case = COHORT__STORE_RECORD__BODY_TABLE;
        rec.table = &d.s;
        if ((rc = tk_log_append(tk, a, &rec)) != TK_OK)
            return rc;
        schema_digest(tk->known_schema, &d.s);
    }
    if ((rc = writer_init(&w, tk, a)) == TK_OK &&
        (rc = writer_add_pb(&w, TK_DOCS_TABLE, tk->next_row_id, &row)) == TK_OK &&
        (rc = writer_flush(&w)) == TK_OK)
        tk->next_row_id++;
    tk_arena_release(a, mark);
    return rc;
}

struct tk_docs_edit {
    struct writer w;
    char hex[DOCS_ID_HEX];
    bool declared;
};

int tk_docs_edit_init(struct tk_docs_edit **out, struct tk_token *tk, struct tk_arena *a,
                      const uint8_t *doc_id)
{
    struct tk_docs_edit *e = tk_arena_scratch(a, sizeof *e);
    int rc;
    *out = NULL;
    if (e == NULL)
        return TK_ERR_NO_MEMORY;
    memset(e, 0, sizeof *e);
    if ((rc = writer_init(&e->w, tk, a)) != TK_OK)
        return rc;
    docs_hex(e->hex, doc_id);
    *out = e;
    return TK_OK;
}

bool tk_docs_edit_declared(const struct tk_docs_edit *e)
{
    return e->declared;
}

/* Whether a stored row of the documents table is the document's. */
static int docs_row_is(const struct tk_docs_edit *e, struct tk_arena *a, const uint8_t *row,
                       size_t len)
{
    size_t mark = tk_arena_mark(a);
    Cohort__Row *r;
    int rc = TK_OK, is = 0;
    r = (Cohort__Row *)tk_unpack(a, &cohort__row__descriptor, row, len, &rc);
    if (r == NULL)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_TAMPERED;
    if (r->n_values < 1)
        rc = TK_ERR_TAMPERED;
    else
        is = r->values[0]->s.len == DOCS_ID_HEX &&
             memcmp(r->values[0]->s.data, e->hex, DOCS_ID_HEX) == 0;
    tk_arena_release(a, mark);
    return rc != TK_OK ? rc : is;
}

int tk_docs_edit_keep(struct tk_docs_edit *e, struct tk_arena *a, const uint8_t *plain, size_t len,
                      bool *keep)
{
    const uint8_t *body, *name, *row;
    size_t body_len, name_len, row_len;
    uint32_t kind;
    int rc, more;

    *keep = false;
    if (plain == NULL)
        return writer_flush(&e->w);
    if ((rc = tk_record_body(plain, len, &kind, &body, &body_len)) != TK_OK)
        return rc;
    if (kind == TK_REC_ROWS) {
        struct batch b;
        struct batch_iter it;
        uint64_t id;
        if ((rc = batch_parse(&b, body, body_len)) != TK_OK)
            return rc;
        if (name_is(b.table, b.table_len, TK_DOCS_TABLE)) {
            memset(&it, 0, sizeof it);
            it.b = &b;
            while ((more = batch_next(&it, &row, &row_len, &id)) == 1) {
                if ((rc = docs_row_is(e, a, row, row_len)) < 0)
                    return rc;
                if (rc == 0 &&
                    (rc = writer_add_raw(&e->w, TK_DOCS_TABLE, id, row, row_len)) != TK_OK)
                    return rc;
            }
            return more;
        }
    }
    if (kind == TK_REC_TABLE) {
        if ((rc = schema_name(body, body_len, &name, &name_len)) != TK_OK)
            return rc;
        if (name_is(name, name_len, TK_DOCS_TABLE))
            e->declared = true;
    }
    /* Anything else stays as it is, after the rows written before it. */
    *keep = true;
    return writer_flush(&e->w);
}
